/* Faults in distributed runs, over real worker processes: a worker killed
 * with SIGKILL while a round is in flight, a worker stopped (SIGSTOP) and
 * noticed by keepalive or by the round's deadline, a worker lost without a
 * replacement (its partitions move to the survivors), and the driver itself
 * killed with SIGKILL and resumed from its snapshot, ending with the same
 * bits as a run that was never interrupted. This binary is also the worker
 * (main() is in driver_test_util.c). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/pb.h"
#include "plan.pb-c.h"
#include "runtime/dist/driver.h"
#include "runtime/rpc/rpc.h"
#include "tests/driver_test_util.h"
#include "tests/testutil.h"

/* The "linear" trainer's plan (see tests/trainer_linear.c), with seeds
 * 21/22 and 3 test partitions: one per worker of a 3-worker run. */
static Memdl__Plan *linear_plan(const dt_lin_spec *s) {
  return dt_linear_plan(s, "linear-faults", 21, 3);
}

/* A job with a few rounds of real work: 6 workers' worth of partitions. */
static const dt_lin_spec SPEC = {.d = 32,
                                 .parts = 6,
                                 .batch = 16,
                                 .max_iter = 120,
                                 .tau = 10,
                                 .test_interval = 60,
                                 .records = 3000,
                                 .test_records = 600,
                                 .lr = 0.02f,
                                 .momentum = 0.9f};

static FILE *g_log;

static void setup(void) {
  tu_dir_setup();
  g_log = tmpfile();
}

static void teardown(void) {
  tu_dir_teardown();
  if (g_log && getenv("MDL_SHOW_LOG")) { /* the driver's log, for a human */
    rewind(g_log);
    char line[2048];
    while (fgets(line, sizeof line, g_log)) fputs(line, stderr);
  }
  if (g_log) fclose(g_log);
}

/* Not quiet: the per-round lines go to g_log too. */
static mdl_driver_opts opts(const char *workers) {
  mdl_driver_opts o = dt_opts(workers, "linear", g_log);
  o.quiet = false;
  return o;
}

static bool log_contains(const char *needle) {
  fflush(g_log);
  rewind(g_log);
  char line[2048];
  bool found = false;
  while (fgets(line, sizeof line, g_log))
    if (strstr(line, needle)) found = true;
  fseek(g_log, 0, SEEK_END);
  return found;
}

static double final_loss(const mdl_driver_result *r) {
  cr_assert_eq(r->n_test, 1);
  return r->test[0].sum[0];
}

/* The fault-free result every faulty run is compared with; trace: where
 * its workers record what they train on (NULL: nowhere). */
static double clean_loss(const char *workers, const char *trace) {
  Memdl__Plan *p = linear_plan(&SPEC);
  mdl_driver_opts o = opts(workers);
  o.quiet = true;
  mdl_driver_result r;
  mdl_error err;
  if (trace) setenv("MDL_LINEAR_TRACE", trace, 1);
  cr_assert_eq(mdl_driver_run_plan(p, tu_dir, &o, &r, &err), MDL_OK, "%s", err.msg);
  unsetenv("MDL_LINEAR_TRACE");
  double loss = final_loss(&r);
  mdl_driver_result_free(&r);
  mdl_pb_free(p);
  return loss;
}

/* A line of the linear trainer's trace (MDL_LINEAR_TRACE, see
 * tests/trainer_linear.c): worker `worker` trained on record `id` of
 * partition `part` at iteration `iter`. */
typedef struct trace_rec {
  int worker, iter;
  unsigned long long id;
  unsigned part;
} trace_rec;

static int trace_cmp(const void *a, const void *b) {
  const trace_rec *x = a, *y = b;
  if (x->iter != y->iter) return x->iter < y->iter ? -1 : 1;
  if (x->worker != y->worker) return x->worker < y->worker ? -1 : 1;
  if (x->id != y->id) return x->id < y->id ? -1 : 1;
  return 0;
}

/* The trace, sorted. */
static trace_rec *read_trace(const char *path, size_t *n) {
  FILE *f = fopen(path, "r");
  cr_assert(f, "no trace at %s: the workers trained on nothing?", path);
  size_t cap = 1024;
  trace_rec *r = malloc(cap * sizeof *r);
  *n = 0;
  trace_rec t;
  while (fscanf(f, "%d %d %llu %u", &t.worker, &t.iter, &t.id, &t.part) == 4) {
    if (*n == cap) r = realloc(r, (cap *= 2) * sizeof *r);
    r[(*n)++] = t;
  }
  fclose(f);
  qsort(r, *n, sizeof *r, trace_cmp);
  return r;
}

TestSuite(fault, .init = setup, .fini = teardown, .timeout = 60);

/* Stops worker `victim` right after round `at` and kills it once the next
 * round's request is on its way: the call is in flight when it dies. */
typedef struct killer {
  int at, victim, sig_now, sig_later, later_ms;
  pid_t pid;
  pthread_t th;
  bool started;
} killer;

static void *kill_later(void *arg) {
  killer *k = arg;
  usleep((useconds_t)k->later_ms * 1000);
  kill(k->pid, k->sig_later);
  return NULL;
}

static void on_round(void *ctx, const mdl_driver_progress *p) {
  killer *k = ctx;
  if (p->round != k->at || k->started || !p->pids) return;
  k->pid = p->pids[k->victim];
  k->started = true;
  if (k->sig_now) kill(k->pid, k->sig_now);
  if (k->sig_later) pthread_create(&k->th, NULL, kill_later, k);
}

static void killer_join(killer *k) {
  if (k->started && k->sig_later) pthread_join(k->th, NULL);
}

/* "Nothing is lost": the round in flight when worker 1 dies is averaged
 * over the survivors (its samples for that round are gone, by design); from
 * the next round on, every partition is trained on exactly as in the run
 * without a fault: the same records at the same iterations, on the same
 * worker slot (the replacement takes its partitions back). Compared record
 * by record through the linear trainer's trace. */
Test(fault, a_worker_killed_mid_round_is_replaced_and_nothing_is_lost) {
  const char *clean_trace = tu_dir_path("clean.trace"), *fault_trace = tu_dir_path("fault.trace");
  double clean = clean_loss("local:3", clean_trace);
  Memdl__Plan *p = linear_plan(&SPEC);
  mdl_driver_opts o = opts("local:3");
  killer k = {.at = 3, .victim = 1, .sig_now = SIGSTOP, .sig_later = SIGKILL, .later_ms = 100};
  o.on_round = on_round;
  o.on_round_ctx = &k;
  mdl_driver_result r;
  mdl_error err;
  setenv("MDL_LINEAR_TRACE", fault_trace, 1);
  cr_assert_eq(mdl_driver_run_plan(p, tu_dir, &o, &r, &err), MDL_OK, "%s", err.msg);
  unsetenv("MDL_LINEAR_TRACE");
  killer_join(&k);
  cr_assert_eq(r.iter, SPEC.max_iter);
  cr_assert_eq(r.faults, 1);
  cr_assert_eq(r.replacements, 1);
  cr_assert(r.workers[1].alive);
  cr_assert(log_contains("worker 1 (unix:"), "the log does not name the worker");
  cr_assert(log_contains("removed: round 4: UNAVAILABLE"));
  cr_assert(log_contains("(rebuilt from lineage)"));
  cr_assert(log_contains("worker 1 replaced: pid"));
  double loss = final_loss(&r);
  cr_assert(loss < clean * 1.5 + 1e-4, "with a fault %g, without %g", loss, clean);

  /* round 4 is iterations [30, 40): worker 1's share of it is the only
   * difference */
  int lost_from = 3 * SPEC.tau, lost_to = 4 * SPEC.tau;
  size_t nc, nf;
  trace_rec *c = read_trace(clean_trace, &nc), *f = read_trace(fault_trace, &nf);
  long long per_part_clean[16] = {0}, per_part_fault[16] = {0}, lost = 0;
  size_t m = 0;
  for (size_t i = 0; i < nc; i++) {
    cr_assert_lt(c[i].part, 16u);
    if (c[i].worker == 1 && c[i].iter >= lost_from && c[i].iter < lost_to) {
      lost++;
      continue;
    }
    per_part_clean[c[i].part]++;
    c[m++] = c[i];
  }
  cr_assert_eq(lost, (long long)SPEC.tau * SPEC.batch, "worker 1 trained %lld records in round 4",
               lost);
  for (size_t i = 0; i < nf; i++) {
    cr_assert_lt(f[i].part, 16u);
    per_part_fault[f[i].part]++;
  }
  for (unsigned q = 0; q < (unsigned)SPEC.parts; q++) {
    cr_assert_gt(per_part_clean[q], 0, "partition %u was never trained on", q);
    cr_assert_eq(per_part_fault[q], per_part_clean[q],
                 "partition %u: %lld samples trained with the fault, %lld without it (less the "
                 "killed worker's round)",
                 q, per_part_fault[q], per_part_clean[q]);
  }
  cr_assert_eq(nf, m, "%zu records trained with the fault, %zu expected", nf, m);
  for (size_t i = 0; i < m; i++)
    cr_assert(!trace_cmp(&c[i], &f[i]) && c[i].part == f[i].part,
              "record %zu of the trace: worker %d iteration %d record %llu with the fault, "
              "worker %d iteration %d record %llu without",
              i, f[i].worker, f[i].iter, f[i].id, c[i].worker, c[i].iter, c[i].id);
  free(c);
  free(f);
  mdl_driver_result_free(&r);
  mdl_pb_free(p);
}

Test(fault, a_stopped_worker_is_noticed_by_keepalive) {
  Memdl__Plan *p = linear_plan(&SPEC);
  mdl_driver_opts o = opts("local:2");
  o.keepalive_ms = 200;
  o.round_timeout_ms = 30000;
  killer k = {.at = 2, .victim = 0, .sig_now = SIGSTOP};
  o.on_round = on_round;
  o.on_round_ctx = &k;
  mdl_driver_result r;
  mdl_error err;
  double t0 = mdl_now();
  cr_assert_eq(mdl_driver_run_plan(p, tu_dir, &o, &r, &err), MDL_OK, "%s", err.msg);
  double dt = mdl_now() - t0;
  cr_assert_eq(r.faults, 1);
  cr_assert_eq(r.replacements, 1);
  cr_assert_eq(r.iter, SPEC.max_iter);
  cr_assert(dt < 10.0, "the run took %.1f s: the stopped worker was noticed late", dt);
  cr_assert(log_contains("removed: round 3: UNAVAILABLE"));
  mdl_driver_result_free(&r);
  mdl_pb_free(p);
}

Test(fault, a_stopped_worker_is_dropped_at_the_round_deadline) {
  Memdl__Plan *p = linear_plan(&SPEC);
  mdl_driver_opts o = opts("local:2");
  o.keepalive_ms = 60000; /* keepalive would not notice in time: the deadline must */
  o.round_timeout_ms = 800;
  killer k = {.at = 2, .victim = 1, .sig_now = SIGSTOP};
  o.on_round = on_round;
  o.on_round_ctx = &k;
  mdl_driver_result r;
  mdl_error err;
  cr_assert_eq(mdl_driver_run_plan(p, tu_dir, &o, &r, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(r.faults, 1);
  cr_assert_eq(r.iter, SPEC.max_iter);
  cr_assert(log_contains("removed: round 3: DEADLINE_EXCEEDED"));
  mdl_driver_result_free(&r);
  mdl_pb_free(p);
}

Test(fault, without_replacements_the_survivors_take_the_partitions) {
  Memdl__Plan *p = linear_plan(&SPEC);
  mdl_driver_opts o = opts("local:3");
  o.no_replace = true;
  killer k = {.at = 2, .victim = 2, .sig_now = SIGKILL};
  o.on_round = on_round;
  o.on_round_ctx = &k;
  mdl_driver_result r;
  mdl_error err;
  cr_assert_eq(mdl_driver_run_plan(p, tu_dir, &o, &r, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(r.faults, 1);
  cr_assert_eq(r.replacements, 0);
  cr_assert_eq(r.iter, SPEC.max_iter);
  cr_assert_not(r.workers[2].alive);
  cr_assert(r.workers[0].alive && r.workers[1].alive);
  /* 2 rounds of 10 iterations on 3 workers, then 10 rounds on 2 */
  cr_assert_eq(r.workers[2].rounds, 2);
  cr_assert_eq(r.workers[0].rounds, 12);
  cr_assert(log_contains("took 1 train and 1 test partitions (rebuilt from lineage)"));
  cr_assert_lt(final_loss(&r), 0.01);
  char line[160];
  mdl_driver_result_summary(&r, line, sizeof line);
  cr_assert(strstr(line, "on 2 workers (of 3 started)"), "%s", line);
  mdl_driver_result_free(&r);
  mdl_pb_free(p);
}

static void die_at(void *ctx, const mdl_driver_progress *p) {
  int *at = ctx;
  if (p->round == *at) raise(SIGKILL);
}

Test(fault, a_killed_driver_resumes_to_the_same_bits) {
  const char *snap = tu_dir_path("driver.snapshot"), *snap2 = tu_dir_path("clean.snapshot");
  dt_lin_spec s = SPEC;
  s.tau = 4; /* 30 rounds; snapshots every 4 */
  Memdl__Plan *p = linear_plan(&s);
  /* the first driver runs in a child, so that SIGKILL takes only it (and,
   * through PDEATHSIG, its workers) */
  pid_t child = fork();
  cr_assert_geq(child, 0);
  if (child == 0) {
    mdl_driver_opts o = opts("local:2");
    o.snapshot_rounds = 4;
    o.snapshot_path = snap;
    int at = 14; /* after the snapshot of round 12, before the one of round 16 */
    o.on_round = die_at;
    o.on_round_ctx = &at;
    mdl_driver_result r;
    mdl_error err;
    mdl_driver_run_plan(p, tu_dir, &o, &r, &err);
    _exit(3); /* not reached */
  }
  int ws;
  waitpid(child, &ws, 0);
  cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "the driver was not killed");
  struct stat st;
  cr_assert_eq(stat(snap, &st), 0, "no snapshot was written");

  mdl_driver_opts o = opts("local:2");
  o.snapshot_rounds = 4;
  o.snapshot_path = snap;
  o.resume = true;
  mdl_driver_result resumed, clean;
  mdl_error err;
  cr_assert_eq(mdl_driver_run_plan(p, tu_dir, &o, &resumed, &err), MDL_OK, "%s", err.msg);
  cr_assert(resumed.resumed);
  cr_assert(log_contains("resuming from"));
  cr_assert(log_contains("iteration 48, round 12"));
  cr_assert_eq(resumed.rounds, 30 - 12);
  /* the killed driver's private directory was swept when the next started */
  char stale[128];
  snprintf(stale, sizeof stale,
           "grep -lx %d /dev/shm/memdl-*/driver.pid /tmp/memdl-*/driver.pid 2>/dev/null",
           (int)child);
  cr_assert_neq(system(stale), 0, "the dead driver's directory is still there");

  o.snapshot_path = snap2;
  o.resume = false;
  cr_assert_eq(mdl_driver_run_plan(p, tu_dir, &o, &clean, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(resumed.iter, clean.iter);
  cr_assert_eq(resumed.n_params, clean.n_params);
  cr_assert_eq(memcmp(resumed.weights, clean.weights, clean.n_params * sizeof(float)), 0,
               "a killed and resumed run ended with other weights than an uninterrupted one");

  /* a snapshot of another job is refused, not half-used */
  dt_lin_spec other = s;
  other.lr = 0.01f;
  Memdl__Plan *p2 = linear_plan(&other);
  o.snapshot_path = snap;
  o.resume = true;
  mdl_driver_result r3;
  cr_assert_eq(mdl_driver_run_plan(p2, tu_dir, &o, &r3, &err), MDL_ERR_INVALID);
  /* naming what changed (the linear trainer's rate is the solver's base_lr) */
  cr_assert(strstr(err.msg, "a job whose solver.base_lr differs"), "%s", err.msg);
  mdl_driver_result_free(&resumed);
  mdl_driver_result_free(&clean);
  mdl_pb_free(p);
  mdl_pb_free(p2);
}

/* A SIGKILLed driver's workers notice (their parent's death signal) and
 * remove its private folder with the weights at once, not at the next run. */
Test(fault, a_killed_drivers_folder_is_removed_by_its_workers) {
  Memdl__Plan *p = linear_plan(&SPEC);
  pid_t child = fork();
  cr_assert_geq(child, 0);
  if (child == 0) {
    mdl_driver_opts o = opts("local:2");
    int at = 2;
    o.on_round = die_at;
    o.on_round_ctx = &at;
    mdl_driver_result r;
    mdl_error err;
    mdl_driver_run_plan(p, tu_dir, &o, &r, &err);
    _exit(3); /* not reached */
  }
  int ws;
  waitpid(child, &ws, 0);
  cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "the driver was not killed");
  char look[160];
  snprintf(look, sizeof look,
           "grep -lx %d /dev/shm/memdl-*/driver.pid /tmp/memdl-*/driver.pid >/dev/null 2>&1",
           (int)child);
  bool there = true;
  double t0 = mdl_now();
  while (there && mdl_now() - t0 < 5.0) {
    there = system(look) == 0;
    if (there) usleep(100000);
  }
  cr_assert_not(there, "the killed driver's folder is still there after 5 s");
  cr_assert_lt(mdl_now() - t0, 3.0);
  mdl_pb_free(p);
}
