/* runtime/driver, worker, launcher and trainer seam over the real gRPC path:
 * averaging (weights, fixed order, same bits), SparkNet's maths as an
 * equivalence (K workers after one SGD step = one worker on a K-times
 * batch, STYLE.md #14), determinism of whole runs, remote workers with a
 * token, validation of every request, no orphan processes, Slurm/MPI
 * environments (faked), and workers in network namespaces where allowed.
 * This binary is also the worker: `driver_test --mdl-worker --listen ...`
 * (main() is in driver_test_util.c). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/pb.h"
#include "plan.pb-c.h"
#include "rpc.pb-c.h"
#include "runtime/dist/driver.h"
#include "runtime/dist/launcher.h"
#include "runtime/dist/worker.h"
#include "runtime/rpc/rpc.h"
#include "runtime/train/trainer.h"
#include "tests/driver_test_util.h"
#include "tests/testutil.h"

/* Seeds 11/12 and 2 test partitions: the numbers these tests were tuned on. */
static Memdl__Plan *linear_plan(const dt_lin_spec *s) {
  return dt_linear_plan(s, "linear", 11, 2);
}

static mdl_driver_opts local_opts(const char *workers, FILE *log) {
  return dt_opts(workers, "linear", log);
}

TestSuite(driver, .init = tu_dir_setup, .fini = tu_dir_teardown, .timeout = 60);

Test(driver, average_is_weighted_in_a_fixed_order_and_repeatable) {
  enum { N = (1 << 21) + 7 };
  float *w[3], *a = malloc(N * sizeof(float)), *b = malloc(N * sizeof(float));
  for (int k = 0; k < 3; k++) {
    w[k] = malloc(N * sizeof(float));
    for (size_t j = 0; j < N; j++) w[k][j] = sinf((float)(j * (k + 1))) * (float)(k + 1);
  }
  uint64_t samples[3] = {64, 0, 192};
  mdl_driver_average(a, (const float *const *)w, samples, 3, N);
  mdl_driver_average(b, (const float *const *)w, samples, 3, N);
  cr_assert_eq(memcmp(a, b, N * sizeof(float)), 0, "not repeatable");
  for (size_t j = 0; j < N; j += 4099) {
    float want = 0.25f * w[0][j] + 0.75f * w[2][j];
    cr_assert_float_eq(a[j], want, 1e-5, "element %zu", j);
  }
  /* the same elements with a small n (one thread) give the same bits */
  float small[1000];
  const float *ws[3] = {w[0] + 5000, w[1] + 5000, w[2] + 5000};
  mdl_driver_average(small, ws, samples, 3, 1000);
  cr_assert_eq(memcmp(small, a + 5000, sizeof small), 0, "threads changed the bits");
  for (int k = 0; k < 3; k++) free(w[k]);
  free(a);
  free(b);
}

Test(driver, k_workers_after_one_sgd_step_equal_one_worker_on_a_k_times_batch) {
  enum { K = 3, B = 4, D = 16 };
  FILE *log = tmpfile();
  /* K workers, partition k on worker k, batch B each: records 0..KB-1 */
  dt_lin_spec sk = {.d = D,
                    .parts = K,
                    .batch = B,
                    .max_iter = 1,
                    .tau = 1,
                    .records = 300,
                    .lr = 0.1f,
                    .momentum = 0};
  Memdl__Plan *pk = linear_plan(&sk);
  mdl_driver_opts o = local_opts("local:3", log);
  mdl_driver_result rk;
  mdl_error err;
  cr_assert_eq(mdl_driver_run_plan(pk, tu_dir, &o, &rk, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(rk.iter, 1);
  cr_assert_eq(rk.n_params, D + 1);
  /* one worker, one partition, batch KB: the same records 0..KB-1 */
  dt_lin_spec s1 = sk;
  s1.parts = 1;
  s1.batch = K * B;
  Memdl__Plan *p1 = linear_plan(&s1);
  o = local_opts("local:1", log);
  mdl_driver_result r1;
  cr_assert_eq(mdl_driver_run_plan(p1, tu_dir, &o, &r1, &err), MDL_OK, "%s", err.msg);
  /* and the same step computed here, without any RPC */
  mdl_trainer_opts to = {.seed = 1, .worker_index = 0, .num_workers = 1};
  mdl_trainer *t;
  cr_assert_eq(mdl_trainer_new(&DT_TRAINERS, "linear", p1, &to, &t, &err), MDL_OK, "%s", err.msg);
  Memdl__PartitionLineage **l;
  size_t nl;
  cr_assert_eq(
      mdl_trainer_lineages(&DT_TRAINERS, "linear", p1, ".", 1, CAFFE__PHASE__TRAIN, &l, &nl, &err),
      MDL_OK);
  cr_assert_eq(mdl_trainer_add_partitions(t, CAFFE__PHASE__TRAIN, l, nl, &err), MDL_OK);
  float w0[D + 1], w1[D + 1];
  cr_assert_eq(mdl_trainer_init_weights(t, w0, &err), MDL_OK);
  mdl_trainer_stats st;
  cr_assert_eq(mdl_trainer_run(t, 1, 0, w0, w1, NULL, &st, &err), MDL_OK);
  cr_assert_eq(st.samples, K * B);
  double moved = 0;
  for (int j = 0; j <= D; j++) {
    cr_assert_float_eq(rk.weights[j], w1[j], 1e-5, "K workers vs reference at %d: %g vs %g", j,
                       rk.weights[j], w1[j]);
    cr_assert_float_eq(r1.weights[j], w1[j], 1e-6, "1 worker vs reference at %d", j);
    moved += fabs(w1[j] - w0[j]);
  }
  cr_assert(moved > 1e-3, "the step did not move the weights");
  mdl_trainer_lineages_free(l, nl);
  mdl_trainer_free(t);
  mdl_driver_result_free(&rk);
  mdl_driver_result_free(&r1);
  mdl_pb_free(pk);
  mdl_pb_free(p1);
  fclose(log);
}

/* Momentum is linear: with tau 1 the average of K workers' momentum buffers
 * evolves as one buffer over the mean gradient, so K workers each keeping
 * their own history still track one worker on a K-times batch, step after
 * step (documented in driver.h). */
Test(driver, with_tau_1_momentum_kept_per_worker_still_tracks_one_big_batch) {
  enum { K = 2, B = 5, D = 6 };
  FILE *log = tmpfile();
  dt_lin_spec sk = {.d = D,
                    .parts = K,
                    .batch = B,
                    .max_iter = 12,
                    .tau = 1,
                    .records = 200,
                    .lr = 0.05f,
                    .momentum = 0.9f};
  Memdl__Plan *pk = linear_plan(&sk);
  dt_lin_spec s1 = sk;
  s1.parts = 1;
  s1.batch = K * B;
  Memdl__Plan *p1 = linear_plan(&s1);
  mdl_driver_opts o = local_opts("local:2", log);
  mdl_driver_result rk, r1;
  mdl_error err;
  cr_assert_eq(mdl_driver_run_plan(pk, tu_dir, &o, &rk, &err), MDL_OK, "%s", err.msg);
  o = local_opts("local:1", log);
  cr_assert_eq(mdl_driver_run_plan(p1, tu_dir, &o, &r1, &err), MDL_OK, "%s", err.msg);
  for (int j = 0; j <= D; j++)
    cr_assert_float_eq(rk.weights[j], r1.weights[j], 1e-5, "weight %d: %g vs %g", j, rk.weights[j],
                       r1.weights[j]);
  /* with tau > 1 the workers drift apart between averages: not the same */
  o = local_opts("local:2", log);
  o.tau = 4;
  mdl_driver_result r4;
  cr_assert_eq(mdl_driver_run_plan(pk, tu_dir, &o, &r4, &err), MDL_OK, "%s", err.msg);
  double diff = 0;
  for (int j = 0; j <= D; j++) diff += fabs(r4.weights[j] - r1.weights[j]);
  cr_assert(diff > 1e-6, "tau 4 matched the big batch exactly: the test cannot tell");
  mdl_driver_result_free(&rk);
  mdl_driver_result_free(&r1);
  mdl_driver_result_free(&r4);
  mdl_pb_free(pk);
  mdl_pb_free(p1);
  fclose(log);
}

Test(driver, the_same_job_twice_gives_the_same_bits_and_learns) {
  FILE *log = tmpfile();
  dt_lin_spec s = {.d = 8,
                   .parts = 4,
                   .batch = 8,
                   .max_iter = 40,
                   .tau = 3,
                   .test_interval = 20,
                   .records = 400,
                   .test_records = 100,
                   .lr = 0.05f,
                   .momentum = 0.9f};
  Memdl__Plan *p = linear_plan(&s);
  mdl_driver_opts o = local_opts("local:2", log);
  mdl_driver_result a, b;
  mdl_error err;
  cr_assert_eq(mdl_driver_run_plan(p, tu_dir, &o, &a, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(mdl_driver_run_plan(p, tu_dir, &o, &b, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(a.iter, 40);
  /* rounds are cut at test_interval: 3,3,...,2 up to 20, then again */
  cr_assert_eq(a.rounds, 2 * 7);
  cr_assert_eq(memcmp(a.weights, b.weights, a.n_params * sizeof(float)), 0,
               "two runs gave different weights");
  /* weights through messages instead of shared memory: the same bits */
  mdl_driver_result c;
  o.no_shm = true;
  cr_assert_eq(mdl_driver_run_plan(p, tu_dir, &o, &c, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(memcmp(a.weights, c.weights, a.n_params * sizeof(float)), 0,
               "shared memory and messages gave different weights");
  mdl_driver_result_free(&c);
  cr_assert_eq(a.n_test, 1);
  cr_assert_str_eq(a.test[0].name, "loss");
  cr_assert(a.test[0].sum[0] < 0.05, "test loss %g after 40 iterations", a.test[0].sum[0]);
  cr_assert_eq(a.n_workers, 2);
  cr_assert_eq(a.workers[0].rounds, 14);
  cr_assert(a.workers[0].samples == 40 * 8 && a.workers[1].samples == 40 * 8);
  mdl_driver_result_free(&a);
  mdl_driver_result_free(&b);
  mdl_pb_free(p);
  fclose(log);
}

/* --- in-process workers (remote mode) ------------------------------------ */

typedef struct thr_worker {
  mdl_worker *w;
  pthread_t th;
  const char *reason;
  char addr[64];
} thr_worker;

static void *worker_thread(void *arg) {
  thr_worker *t = arg;
  mdl_error err;
  mdl_worker_run(t->w, &t->reason, &err);
  return NULL;
}

static void start_thr_worker(thr_worker *t, const char *token, int driver_timeout_ms) {
  mdl_worker_opts wo = {
      .listen = "127.0.0.1:0",
      .trainers = &DT_TRAINERS,
      .sec = {.token = token, .token_len = token ? strlen(token) : 0, .insecure = !token},
      .driver_timeout_ms = driver_timeout_ms,
      .log = stderr};
  mdl_error err;
  cr_assert_eq(mdl_worker_new(&wo, &t->w, &err), MDL_OK, "%s", err.msg);
  snprintf(t->addr, sizeof t->addr, "127.0.0.1:%d", mdl_worker_port(t->w));
  pthread_create(&t->th, NULL, worker_thread, t);
}

static void join_thr_worker(thr_worker *t) {
  pthread_join(t->th, NULL);
  mdl_worker_free(t->w);
}

Test(driver, remote_workers_by_address_with_a_token) {
  const char *token = "a-shared-token-of-32-characters!";
  const char *tf = tu_dir_write("token", token);
  chmod(tf, 0600);
  mdl_rpc_init();
  thr_worker w[2];
  start_thr_worker(&w[0], token, 0);
  start_thr_worker(&w[1], token, 0);
  char list[160];
  snprintf(list, sizeof list, "%s,%s", w[0].addr, w[1].addr);
  dt_lin_spec s = {
      .d = 4, .parts = 2, .batch = 4, .max_iter = 10, .tau = 5, .records = 64, .lr = 0.05f};
  Memdl__Plan *p = linear_plan(&s);
  FILE *log = tmpfile();
  mdl_driver_opts o = local_opts(list, log);
  mdl_driver_result r;
  mdl_error err;
  /* without the token: every worker refuses, the run fails and says why */
  cr_assert_neq(mdl_driver_run_plan(p, tu_dir, &o, &r, &err), MDL_OK);
  o.token_file = tf;
  cr_assert_eq(mdl_driver_run_plan(p, tu_dir, &o, &r, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(r.iter, 10);
  cr_assert_eq(r.faults, 0);
  for (int i = 0; i < 2; i++) {
    join_thr_worker(&w[i]); /* the driver's Shutdown ends them */
    cr_assert_str_eq(w[i].reason, "shutdown");
  }
  mdl_driver_result_free(&r);
  mdl_pb_free(p);
  fclose(log);
  mdl_rpc_shutdown();
}

/* A call to an in-process worker. */
static mdl_rpc_code wcall(mdl_rpc_channel *ch, const char *method, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *rd, const float *w, size_t nw,
                          char *detail) {
  mdl_rpc_call c;
  memset(&c, 0, sizeof c);
  c.ch = ch;
  c.method = method;
  c.req.msg = req;
  if (w) {
    c.req.bulk_field = 5;
    c.req.bulk = w;
    c.req.bulk_len = nw * sizeof(float);
  }
  c.reply_spec.desc = rd;
  c.reply_spec.max_bytes = 1 << 20;
  c.reply_spec.bulk_field = rd == &memdl__round_reply__descriptor ? 1 : 0;
  c.wait_for_ready = true;
  mdl_error err;
  cr_assert_eq(mdl_rpc_call_all(&c, 1, 10000, NULL, &err), MDL_OK);
  if (detail) snprintf(detail, 512, "%s", c.detail);
  mdl_rpc_calls_clear(&c, 1);
  return c.code;
}

Test(driver, worker_validates_every_request_and_exits_when_its_driver_is_gone) {
  mdl_rpc_init();
  thr_worker tw;
  start_thr_worker(&tw, NULL, 700);
  mdl_rpc_channel_opts co = {0};
  mdl_rpc_channel *ch;
  mdl_error err;
  cr_assert_eq(mdl_rpc_channel_new(tw.addr, &co, &ch, &err), MDL_OK);
  dt_lin_spec s = {
      .d = 4, .parts = 1, .batch = 2, .max_iter = 100, .tau = 5, .records = 16, .lr = 0.1f};
  Memdl__Plan *p = linear_plan(&s);
  char detail[512];
  float w[5] = {0};

  Memdl__RoundRequest rr = MEMDL__ROUND_REQUEST__INIT;
  rr.has_session = rr.has_tau = 1;
  rr.session = 42;
  rr.tau = 1;
  cr_assert_eq(wcall(ch, MDL_WORKER_ROUND, &rr.base, &memdl__round_reply__descriptor, w, 5, detail),
               MDL_RPC_INVALID_ARGUMENT);
  cr_assert(strstr(detail, "before Setup"), "%s", detail);

  size_t plen = protobuf_c_message_get_packed_size(&p->base);
  uint8_t *pbytes = malloc(plen);
  protobuf_c_message_pack(&p->base, pbytes);
  Memdl__PartitionLineage **l;
  size_t nl;
  cr_assert_eq(
      mdl_trainer_lineages(&DT_TRAINERS, "linear", p, ".", 1, CAFFE__PHASE__TRAIN, &l, &nl, &err),
      MDL_OK);
  Memdl__SetupRequest su = MEMDL__SETUP_REQUEST__INIT;
  su.has_plan = su.has_session = su.has_num_workers = su.has_worker_index = 1;
  su.plan.data = pbytes;
  su.plan.len = plen;
  su.session = 42;
  su.num_workers = 1;
  su.worker_index = 1;
  su.trainer = "linear";
  su.n_train_partition = nl;
  su.train_partition = l;
  cr_assert_eq(
      wcall(ch, MDL_WORKER_SETUP, &su.base, &memdl__setup_reply__descriptor, NULL, 0, detail),
      MDL_RPC_INVALID_ARGUMENT);
  cr_assert(strstr(detail, "worker 1 of 1"), "%s", detail);
  su.worker_index = 0;
  su.trainer = "nosuch";
  cr_assert_eq(
      wcall(ch, MDL_WORKER_SETUP, &su.base, &memdl__setup_reply__descriptor, NULL, 0, detail),
      MDL_RPC_INVALID_ARGUMENT);
  cr_assert(strstr(detail, "unknown trainer"), "%s", detail);
  su.trainer = "linear";
  su.plan.len = plen / 2;
  cr_assert_eq(
      wcall(ch, MDL_WORKER_SETUP, &su.base, &memdl__setup_reply__descriptor, NULL, 0, detail),
      MDL_RPC_INVALID_ARGUMENT);
  cr_assert(strstr(detail, "malformed plan"), "%s", detail);
  su.plan.len = plen;
  cr_assert_eq(
      wcall(ch, MDL_WORKER_SETUP, &su.base, &memdl__setup_reply__descriptor, NULL, 0, detail),
      MDL_RPC_OK, "%s", detail);

  cr_assert_eq(wcall(ch, MDL_WORKER_ROUND, &rr.base, &memdl__round_reply__descriptor, w, 4, detail),
               MDL_RPC_INVALID_ARGUMENT);
  cr_assert(strstr(detail, "the model has 5 parameters"), "%s", detail);
  cr_assert_eq(
      wcall(ch, MDL_WORKER_ROUND, &rr.base, &memdl__round_reply__descriptor, NULL, 0, detail),
      MDL_RPC_INVALID_ARGUMENT);
  rr.tau = 0;
  cr_assert_eq(wcall(ch, MDL_WORKER_ROUND, &rr.base, &memdl__round_reply__descriptor, w, 5, detail),
               MDL_RPC_INVALID_ARGUMENT);
  cr_assert(strstr(detail, "tau 0"), "%s", detail);
  rr.tau = 5;
  rr.has_iter_start = 1;
  rr.iter_start = 98;
  cr_assert_eq(wcall(ch, MDL_WORKER_ROUND, &rr.base, &memdl__round_reply__descriptor, w, 5, detail),
               MDL_RPC_INVALID_ARGUMENT);
  cr_assert(strstr(detail, "max_iter 100"), "%s", detail);
  rr.iter_start = 0;
  rr.session = 43;
  cr_assert_eq(wcall(ch, MDL_WORKER_ROUND, &rr.base, &memdl__round_reply__descriptor, w, 5, detail),
               MDL_RPC_INVALID_ARGUMENT);
  cr_assert(strstr(detail, "stale driver"), "%s", detail);
  rr.session = 42;
  Memdl__ReassignRequest ra = MEMDL__REASSIGN_REQUEST__INIT;
  ra.has_session = 1;
  ra.session = 42;
  ra.n_add_train = nl;
  ra.add_train = l;
  cr_assert_eq(
      wcall(ch, MDL_WORKER_REASSIGN, &ra.base, &memdl__reassign_reply__descriptor, NULL, 0, detail),
      MDL_RPC_INVALID_ARGUMENT);
  cr_assert(strstr(detail, "held twice"), "%s", detail);

  /* nothing for 700 ms once set up: the worker decides its driver is gone */
  double t0 = mdl_now();
  pthread_join(tw.th, NULL);
  cr_assert_str_eq(tw.reason, "driver gone");
  cr_assert(mdl_now() - t0 < 3.0);
  mdl_worker_free(tw.w);
  mdl_rpc_channel_free(ch);
  mdl_trainer_lineages_free(l, nl);
  free(pbytes);
  mdl_pb_free(p);
  mdl_rpc_shutdown();
}

/* --- processes ----------------------------------------------------------- */

static bool pid_gone(pid_t pid) {
  for (int i = 0; i < 300; i++) {
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    /* a zombie child of ours counts as gone */
    char path[64], state = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f) {
      if (fscanf(f, "%*d %*s %c", &state) != 1) state = 0;
      fclose(f);
      if (state == 'Z') return true;
    }
    usleep(10000);
  }
  return false;
}

Test(driver, local_workers_live_in_a_private_directory_and_stop_with_their_driver) {
  mdl_launch_opts lo = {.argv_prefix = DT_WORKER_ARGV, .n_prefix = 1, .unset_env = DT_UNSET_ENV};
  mdl_local_workers *lw;
  mdl_error err;
  cr_assert_eq(mdl_local_workers_start(2, &lo, &lw, &err), MDL_OK, "%s", err.msg);
  struct stat st;
  char dir[256];
  snprintf(dir, sizeof dir, "%s", mdl_local_workers_dir(lw));
  cr_assert_eq(stat(dir, &st), 0);
  cr_assert_eq(st.st_mode & 0777, 0700, "mode %o", st.st_mode & 0777);
  cr_assert(!strncmp(mdl_local_workers_address(lw, 1), "unix:", 5));
  pid_t p0 = mdl_local_workers_pid(lw, 0), p1 = mdl_local_workers_pid(lw, 1);
  cr_assert(mdl_local_workers_alive(lw, 0) && mdl_local_workers_alive(lw, 1));
  cr_assert_eq(mdl_local_workers_restart(lw, 1, &err), MDL_OK);
  cr_assert(pid_gone(p1));
  cr_assert_neq(mdl_local_workers_pid(lw, 1), p1);
  p1 = mdl_local_workers_pid(lw, 1);
  mdl_local_workers_free(lw);
  cr_assert(pid_gone(p0) && pid_gone(p1));
  cr_assert_neq(stat(dir, &st), 0, "%s was left behind", dir);

  /* a driver killed with SIGKILL takes its workers along (PDEATHSIG) */
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  pid_t drv = fork();
  if (drv == 0) {
    mdl_local_workers *l2;
    if (mdl_local_workers_start(2, &lo, &l2, &err) != MDL_OK) _exit(1);
    pid_t pids[2] = {mdl_local_workers_pid(l2, 0), mdl_local_workers_pid(l2, 1)};
    if (write(fds[1], pids, sizeof pids) != sizeof pids) _exit(1);
    pause();
    _exit(0);
  }
  pid_t pids[2];
  cr_assert_eq(read(fds[0], pids, sizeof pids), sizeof pids);
  kill(drv, SIGKILL);
  waitpid(drv, NULL, 0);
  cr_assert(pid_gone(pids[0]) && pid_gone(pids[1]), "orphan workers left");
  close(fds[0]);
  close(fds[1]);
}

static volatile sig_atomic_t g_stop;

static void interrupt_at(void *ctx, const mdl_driver_progress *p) {
  pid_t *pids = ctx;
  for (int i = 0; i < p->n_workers; i++) pids[i] = p->pids[i];
  if (p->round == 2) kill(getpid(), SIGINT);
}

Test(driver, ctrl_c_stops_the_run_and_its_workers) {
  dt_lin_spec s = {
      .d = 4, .parts = 2, .batch = 2, .max_iter = 100000, .tau = 1, .records = 16, .lr = 0.01f};
  Memdl__Plan *p = linear_plan(&s);
  FILE *log = tmpfile();
  mdl_driver_opts o = local_opts("local:2", log);
  pid_t pids[2] = {0, 0};
  o.on_round = interrupt_at;
  o.on_round_ctx = pids;
  mdl_error err;
  mdl_driver_result r;
  mdl_status st = mdl_driver_run_plan(p, tu_dir, &o, &r, &err);
  cr_assert_neq(st, MDL_OK);
  cr_assert(strstr(err.msg, "interrupted"), "%s", err.msg);
  cr_assert(pids[0] > 0 && pids[1] > 0);
  cr_assert(pid_gone(pids[0]) && pid_gone(pids[1]), "workers survived Ctrl-C");
  mdl_pb_free(p);
  fclose(log);
}

/* --- hosts: network namespaces ------------------------------------------- */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  char cmd[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  return system(cmd);
}

/* Namespaces of earlier runs of this test that died before cleaning up. */
static void sweep_namespaces(void) {
  FILE *p = popen("ip netns list 2>/dev/null", "r");
  if (!p) return;
  char line[256];
  while (fgets(line, sizeof line, p)) {
    int pid;
    char which;
    if (sscanf(line, "mdl%c%d", &which, &pid) == 2 && (which == 'A' || which == 'B') &&
        kill(pid, 0) != 0 && errno == ESRCH)
      sh("ip netns del mdl%c%d 2>/dev/null", which, pid);
  }
  pclose(p);
}

Test(driver, workers_in_network_namespaces_over_tcp) {
  sweep_namespaces();
  int id = getpid() % 200 + 20;
  char ns[2][32];
  snprintf(ns[0], sizeof ns[0], "mdlA%d", (int)getpid());
  snprintf(ns[1], sizeof ns[1], "mdlB%d", (int)getpid());
  if (sh("ip netns add %s 2>/dev/null", ns[0]) != 0)
    cr_skip_test("cannot create network namespaces here (needs root/CAP_NET_ADMIN and iproute2)");
  if (sh("ip netns add %s", ns[1]) != 0) {
    sh("ip netns del %s", ns[0]);
    cr_skip_test("cannot create a second network namespace");
  }
  /* two veth pairs, one per namespace: 10.<id>.{1,2}.1 here, .2 there */
  int bad = 0;
  for (int i = 0; i < 2; i++) {
    bad |=
        sh("ip link add mdv%d_%d type veth peer name mdp%d_%d", i, (int)getpid(), i, (int)getpid());
    bad |= sh("ip link set mdp%d_%d netns %s", i, (int)getpid(), ns[i]);
    bad |= sh("ip addr add 10.%d.%d.1/24 dev mdv%d_%d", id, i + 1, i, (int)getpid());
    bad |= sh("ip link set mdv%d_%d up", i, (int)getpid());
    bad |= sh("ip netns exec %s ip addr add 10.%d.%d.2/24 dev mdp%d_%d", ns[i], id, i + 1, i,
              (int)getpid());
    bad |= sh("ip netns exec %s ip link set mdp%d_%d up", ns[i], i, (int)getpid());
    bad |= sh("ip netns exec %s ip link set lo up", ns[i]);
  }
  if (bad) {
    for (int i = 0; i < 2; i++) {
      sh("ip link del mdv%d_%d 2>/dev/null", i, (int)getpid());
      sh("ip netns del %s", ns[i]);
    }
    cr_skip_test("cannot set up veth pairs here");
  }
  const char *tf = tu_dir_write("token", "netns-token-0123456789abcdef");
  chmod(tf, 0600);
  char exe[512];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  cr_assert_gt(n, 0);
  exe[n] = 0;
  /* a worker refuses plain TCP on its veth address without --insecure */
  cr_assert_neq(sh("env -u BXFI_MAP ip netns exec %s %s --mdl-worker --listen 10.%d.1.2:7070 "
                   "--token-file %s 2>/dev/null",
                   ns[0], exe, id, tf),
                0);
  pid_t pid[2];
  for (int i = 0; i < 2; i++) {
    pid[i] = fork();
    if (pid[i] == 0) {
      char listen[64], nsname[32];
      snprintf(listen, sizeof listen, "10.%d.%d.2:7070", id, i + 1);
      snprintf(nsname, sizeof nsname, "%s", ns[i]);
      unsetenv("BXFI_MAP");
      execl("/usr/sbin/ip", "ip", "netns", "exec", nsname, exe, "--mdl-worker", "--listen", listen,
            "--token-file", tf, "--insecure", "--driver-timeout-ms", "20000", (char *)NULL);
      execl("/sbin/ip", "ip", "netns", "exec", nsname, exe, "--mdl-worker", "--listen", listen,
            "--token-file", tf, "--insecure", "--driver-timeout-ms", "20000", (char *)NULL);
      _exit(127);
    }
  }
  char list[128];
  snprintf(list, sizeof list, "10.%d.1.2:7070,10.%d.2.2:7070", id, id);
  dt_lin_spec s = {.d = 6,
                   .parts = 4,
                   .batch = 4,
                   .max_iter = 20,
                   .tau = 5,
                   .records = 100,
                   .test_records = 40,
                   .test_interval = 10,
                   .lr = 0.05f};
  Memdl__Plan *p = linear_plan(&s);
  FILE *log = tmpfile();
  mdl_driver_opts o = local_opts(list, log);
  o.token_file = tf;
  mdl_driver_result r;
  mdl_error err;
  /* the driver too refuses plain TCP to a non-loopback address... */
  mdl_status st = mdl_driver_run_plan(p, tu_dir, &o, &r, &err);
  cr_assert_eq(st, MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "--insecure"), "%s", err.msg);
  /* ...unless told */
  o.insecure = true;
  st = mdl_driver_run_plan(p, tu_dir, &o, &r, &err);
  for (int i = 0; i < 2; i++) {
    int ws;
    waitpid(pid[i], &ws, 0);
    sh("ip link del mdv%d_%d 2>/dev/null", i, (int)getpid());
    sh("ip netns del %s", ns[i]);
  }
  cr_assert_eq(st, MDL_OK, "%s", err.msg);
  cr_assert_eq(r.iter, 20);
  cr_assert_eq(r.faults, 0);
  cr_assert(strstr(r.workers[0].address, "10."), "%s", r.workers[0].address);
  /* each veth joins one worker to the driver only: the workers cannot
   * reach each other, so peer averaging gives way to the star, no fault */
  fflush(log);
  rewind(log);
  char text[65536];
  size_t tn = fread(text, 1, sizeof text - 1, log);
  text[tn] = 0;
  cr_assert(strstr(text, "averaging through the driver from now on"), "%s", text);
  mdl_driver_result_free(&r);
  mdl_pb_free(p);
  fclose(log);
}

/* A remote worker killed and started again at its address is taken back at
 * a later round; one still set up by another driver says so in both logs. */
typedef struct restarter {
  thr_worker *w;
  const char *token;
  int port;
  bool done;
} restarter;

static void restart_at_round_2(void *ctx, const mdl_driver_progress *p) {
  restarter *r = ctx;
  if (p->round != 2 || r->done) return;
  r->done = true;
  mdl_worker_stop(r->w->w);
  join_thr_worker(r->w);
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", r->port);
  mdl_worker_opts wo = {.listen = listen,
                        .trainers = &DT_TRAINERS,
                        .sec = {.token = r->token, .token_len = strlen(r->token)},
                        .log = stderr};
  mdl_error err;
  cr_assert_eq(mdl_worker_new(&wo, &r->w->w, &err), MDL_OK, "%s", err.msg);
  pthread_create(&r->w->th, NULL, worker_thread, r->w);
}

Test(driver, a_restarted_remote_worker_is_taken_back) {
  const char *token = "a-shared-token-of-32-characters!";
  const char *tf = tu_dir_write("token", token);
  chmod(tf, 0600);
  mdl_rpc_init();
  thr_worker w[2];
  start_thr_worker(&w[0], token, 0);
  start_thr_worker(&w[1], token, 0);
  char list[160];
  snprintf(list, sizeof list, "%s,%s", w[0].addr, w[1].addr);
  dt_lin_spec s = {
      .d = 4, .parts = 2, .batch = 4, .max_iter = 400, .tau = 2, .records = 64, .lr = 0.05f};
  Memdl__Plan *p = linear_plan(&s);
  FILE *log = tmpfile();
  mdl_driver_opts o = local_opts(list, log);
  o.token_file = tf;
  mdl_driver_result r;
  mdl_error err;
  /* worker 0 is still set up for another driver's run (session 42) */
  mdl_rpc_channel_opts co = {.sec = {.token = token, .token_len = strlen(token)}};
  mdl_rpc_channel *ch;
  cr_assert_eq(mdl_rpc_channel_new(w[0].addr, &co, &ch, &err), MDL_OK, "%s", err.msg);
  size_t plen = protobuf_c_message_get_packed_size(&p->base);
  uint8_t *pbytes = malloc(plen);
  protobuf_c_message_pack(&p->base, pbytes);
  Memdl__PartitionLineage **l;
  size_t nl;
  cr_assert_eq(
      mdl_trainer_lineages(&DT_TRAINERS, "linear", p, ".", 1, CAFFE__PHASE__TRAIN, &l, &nl, &err),
      MDL_OK);
  Memdl__SetupRequest su = MEMDL__SETUP_REQUEST__INIT;
  su.has_plan = su.has_session = su.has_num_workers = su.has_worker_index = 1;
  su.plan.data = pbytes;
  su.plan.len = plen;
  su.session = 42;
  su.num_workers = 1;
  su.trainer = "linear";
  su.n_train_partition = nl;
  su.train_partition = l;
  char detail[512];
  cr_assert_eq(
      wcall(ch, MDL_WORKER_SETUP, &su.base, &memdl__setup_reply__descriptor, NULL, 0, detail),
      MDL_RPC_OK, "%s", detail);
  mdl_trainer_lineages_free(l, nl);
  free(pbytes);
  mdl_rpc_channel_free(ch);
  restarter rs = {.w = &w[1], .token = token, .port = atoi(strrchr(w[1].addr, ':') + 1)};
  o.on_round = restart_at_round_2;
  o.on_round_ctx = &rs;
  cr_assert_eq(mdl_driver_run_plan(p, tu_dir, &o, &r, &err), MDL_OK, "%s", err.msg);
  fflush(log);
  rewind(log);
  char text[65536];
  size_t n = fread(text, 1, sizeof text - 1, log);
  text[n] = 0;
  cr_assert(strstr(text, "of another driver: taken over"), "%s", text);
  cr_assert(strstr(text, "worker 1 (") && strstr(text, "is back"), "%s", text);
  cr_assert_eq(r.faults, 1, "%s", text);
  cr_assert(r.workers[1].alive, "%s", text);
  cr_assert_gt(r.workers[1].rounds, 3, "%s", text);
  for (int i = 0; i < 2; i++) join_thr_worker(&w[i]);
  mdl_driver_result_free(&r);
  mdl_pb_free(p);
  fclose(log);
  mdl_rpc_shutdown();
}

/* Peer averaging leaves the driver's data path (issue 13): a round returns
 * the average only when the driver reads it next (a snapshot, the end), a
 * TEST pass runs on the average the members kept (no weights sent), a stop
 * asked mid-run fetches it from a member, and the bits and TEST outputs
 * are those of the star (cluster { averaging: STAR }), whose rounds and
 * TEST passes each move K copies. */
typedef struct stopper {
  volatile sig_atomic_t *flag;
  int at_round;
} stopper;

static void stop_at_round(void *ctx, const mdl_driver_progress *p) {
  stopper *s = ctx;
  if (p->round == s->at_round) *s->flag = 1;
}

/* A run of p on two fresh in-process workers (averaging STAR when star),
 * stopped after round stop_round when > 0; tests (may be NULL) gets the
 * log's TEST lines. */
static void run_two(const Memdl__Plan *p, bool star, int stop_round, mdl_driver_result *r,
                    char *tests, size_t cap) {
  const char *token = "a-shared-token-of-32-characters!";
  const char *tf = tu_dir_write("token", token);
  chmod(tf, 0600);
  thr_worker w[2];
  start_thr_worker(&w[0], token, 0);
  start_thr_worker(&w[1], token, 0);
  char list[160];
  snprintf(list, sizeof list, "%s,%s", w[0].addr, w[1].addr);
  Memdl__Plan *q = mdl_pb_dup(p);
  Memdl__Cluster cl = MEMDL__CLUSTER__INIT;
  cl.has_averaging = 1;
  cl.averaging = MEMDL__CLUSTER__AVERAGING__STAR;
  if (star) q->cluster = mdl_pb_dup(&cl);
  FILE *log = tmpfile();
  mdl_driver_opts o = local_opts(list, log);
  o.token_file = tf;
  o.out_dir = tu_dir_path(star ? "star" : "peer");
  volatile sig_atomic_t stop = 0;
  stopper sp = {&stop, stop_round};
  if (stop_round > 0) {
    o.stop = &stop;
    o.on_round = stop_at_round;
    o.on_round_ctx = &sp;
  }
  mdl_error err;
  cr_assert_eq(mdl_driver_run_plan(q, tu_dir, &o, r, &err), MDL_OK, "%s", err.msg);
  fflush(log);
  rewind(log);
  char text[65536];
  size_t n = fread(text, 1, sizeof text - 1, log);
  text[n] = 0;
  cr_assert_eq(strstr(text, "averaging peer-to-peer") != NULL, !star, "%s", text);
  cr_assert_eq(r->faults, 0, "%s", text);
  if (tests) tu_test_lines(text, tests, cap);
  for (int i = 0; i < 2; i++) join_thr_worker(&w[i]);
  mdl_pb_free(q);
  fclose(log);
}

Test(driver, peer_rounds_bring_the_average_to_the_driver_only_where_it_reads_it) {
  mdl_rpc_init();
  /* rounds end at 2, 4, 6 (TEST), 8, 10, 12 (TEST), 14, 16, 18 (TEST), 20 */
  dt_lin_spec s = {.d = 6,
                   .parts = 2,
                   .batch = 4,
                   .max_iter = 20,
                   .test_interval = 6,
                   .tau = 2,
                   .records = 96,
                   .test_records = 32,
                   .lr = 0.05f,
                   .momentum = 0.9f};
  Memdl__Plan *p = linear_plan(&s);
  const uint64_t bytes = (uint64_t)(s.d + 1) * sizeof(float);
  mdl_driver_result rp, rs;
  char tp[4096] = "", ts[4096] = "";
  run_two(p, false, 0, &rp, tp, sizeof tp);
  run_two(p, true, 0, &rs, ts, sizeof ts);
  /* every TEST pass (0, 6, 12, 18, 20) gives the star's outputs */
  cr_assert(strstr(tp, "iter 18: "), "%s", tp);
  cr_assert_str_eq(tp, ts);
  cr_assert_eq(rp.rounds, 10);
  cr_assert_eq(rs.rounds, 10);
  /* the star: two copies every round; peers: one at the end, none at TEST */
  cr_assert_eq(rs.weights_received, 10 * 2 * bytes, "%llu",
               (unsigned long long)rs.weights_received);
  cr_assert_eq(rp.weights_received, 1 * bytes, "%llu", (unsigned long long)rp.weights_received);
  cr_assert_eq(rp.weights_fetched, 0);
  /* sent: the star two copies to each round (10) and each TEST pass (at 0,
   * 6, 12, 18 and the final one at 20); peers only to the first round and
   * the TEST at 0, before any exchange */
  cr_assert_eq(rs.weights_sent, (10 + 5) * 2 * bytes, "%llu", (unsigned long long)rs.weights_sent);
  cr_assert_eq(rp.weights_sent, 2 * 2 * bytes, "%llu", (unsigned long long)rp.weights_sent);
  cr_assert_eq(rp.n_params, s.d + 1);
  cr_assert(!memcmp(rp.weights, rs.weights, bytes), "peer and star weights differ");
  cr_assert_eq(rp.n_test, rs.n_test);
  cr_assert(rp.n_test > 0 && rp.test[0].n > 0, "no TEST output");
  for (int t = 0; t < rp.n_test; t++)
    for (int e = 0; e < rp.test[t].n; e++)
      cr_assert(rp.test[t].sum[e] == rs.test[t].sum[e], "the last TEST differs: %s[%d] %a, star %a",
                rp.test[t].name, e, rp.test[t].sum[e], rs.test[t].sum[e]);
  mdl_driver_result_free(&rp);
  mdl_driver_result_free(&rs);

  /* a stop asked by round 4's callback (iteration 8: no TEST, no snapshot
   * foreseen) fetches the average the members kept, for the snapshot point
   * and the result */
  run_two(p, false, 4, &rp, NULL, 0);
  run_two(p, true, 4, &rs, NULL, 0);
  cr_assert(rp.stopped && rs.stopped);
  cr_assert_eq(rp.iter, 8);
  cr_assert_eq(rp.weights_fetched, 1);
  /* TEST at 6 ran on the kept average: the fetch is the only copy */
  cr_assert_eq(rp.weights_received, 1 * bytes, "%llu", (unsigned long long)rp.weights_received);
  cr_assert(!memcmp(rp.weights, rs.weights, bytes), "the fetched weights are not the star's");
  cr_assert(rp.state_file[0], "a snapshot point at the stop");
  mdl_driver_result_free(&rp);
  mdl_driver_result_free(&rs);
  mdl_pb_free(p);
  mdl_rpc_shutdown();
}

/* --- peer averaging on the workers: what a redo and a fetch rely on ------ */

static void *into_floats(void *ctx, size_t len, mdl_error *err) {
  if (len != 5 * sizeof(float)) {
    mdl_errorf(err, MDL_ERR_INVALID, "%zu bytes", len);
    return NULL;
  }
  return ctx;
}

/* Round calls req[i] to ch[i] of n workers at once (w as the weights when
 * not NULL); each reply's code, detail and returned weights (5 floats). */
static void peer_calls(mdl_rpc_channel **ch, int n, const char *method,
                       const ProtobufCMessage **req, const ProtobufCMessageDescriptor *rd,
                       uint32_t bulk, const float *w, float (*out)[5], mdl_rpc_code *code,
                       char (*detail)[512]) {
  mdl_rpc_call c[2];
  memset(c, 0, sizeof c);
  for (int i = 0; i < n; i++) {
    c[i].ch = ch[i];
    c[i].method = method;
    c[i].req.msg = req[i];
    if (w) {
      c[i].req.bulk_field = 5;
      c[i].req.bulk = w;
      c[i].req.bulk_len = 5 * sizeof(float);
    }
    c[i].reply_spec.desc = rd;
    c[i].reply_spec.max_bytes = 1 << 20;
    c[i].reply_spec.bulk_field = bulk;
    c[i].reply_spec.bulk_dest = into_floats;
    c[i].reply_spec.bulk_ctx = out[i];
    c[i].wait_for_ready = true;
  }
  mdl_error err;
  cr_assert_eq(mdl_rpc_call_all(c, n, 10000, NULL, &err), MDL_OK, "%s", err.msg);
  for (int i = 0; i < n; i++) {
    code[i] = c[i].code;
    snprintf(detail[i], 512, "%s", c[i].detail);
  }
  mdl_rpc_calls_clear(c, n);
}

static Memdl__RoundRequest peer_req(uint64_t epoch, uint64_t kept, uint32_t *member, bool ret) {
  Memdl__RoundRequest r = MEMDL__ROUND_REQUEST__INIT;
  r.has_session = r.has_tau = r.has_iter_start = r.has_peer_epoch = 1;
  r.session = 42;
  r.tau = 2;
  r.iter_start = 4;
  r.peer_epoch = epoch;
  r.n_member = 2;
  r.member = member;
  r.has_exchange_timeout_ms = 1;
  r.exchange_timeout_ms = 400;
  r.has_kept_epoch = kept != 0;
  r.kept_epoch = kept;
  r.has_return_weights = r.return_weights = ret;
  return r;
}

Test(driver, a_failed_exchange_leaves_the_kept_average_for_a_redo_and_a_fetch) {
  mdl_rpc_init();
  thr_worker tw[2];
  mdl_rpc_channel *ch[2];
  mdl_error err;
  start_thr_worker(&tw[0], NULL, 0);
  start_thr_worker(&tw[1], NULL, 0);
  mdl_rpc_channel_opts co = {0};
  for (int i = 0; i < 2; i++)
    cr_assert_eq(mdl_rpc_channel_new(tw[i].addr, &co, &ch[i], &err), MDL_OK);
  dt_lin_spec s = {
      .d = 4, .parts = 2, .batch = 2, .max_iter = 100, .tau = 2, .records = 32, .lr = 0.1f};
  Memdl__Plan *p = linear_plan(&s);
  size_t plen = protobuf_c_message_get_packed_size(&p->base);
  uint8_t *pbytes = malloc(plen);
  protobuf_c_message_pack(&p->base, pbytes);
  Memdl__PartitionLineage **l;
  size_t nl;
  cr_assert_eq(
      mdl_trainer_lineages(&DT_TRAINERS, "linear", p, ".", 2, CAFFE__PHASE__TRAIN, &l, &nl, &err),
      MDL_OK);
  cr_assert_eq(nl, 2);
  char *peers[2] = {tw[0].addr, tw[1].addr};
  Memdl__SetupRequest su[2];
  const ProtobufCMessage *req[2];
  for (int i = 0; i < 2; i++) {
    memdl__setup_request__init(&su[i]);
    su[i].has_plan = su[i].has_session = su[i].has_num_workers = su[i].has_worker_index = 1;
    su[i].plan.data = pbytes;
    su[i].plan.len = plen;
    su[i].session = 42;
    su[i].num_workers = 2;
    su[i].worker_index = (uint32_t)i;
    su[i].trainer = "linear";
    su[i].n_train_partition = 1;
    su[i].train_partition = &l[i];
    su[i].n_peer = 2;
    su[i].peer = peers;
    req[i] = &su[i].base;
  }
  float out[2][5], ref[2][5];
  mdl_rpc_code code[2];
  char detail[2][512];
  peer_calls(ch, 2, MDL_WORKER_SETUP, req, &memdl__setup_reply__descriptor, 0, NULL, out, code,
             detail);
  cr_assert(code[0] == MDL_RPC_OK && code[1] == MDL_RPC_OK, "%s / %s", detail[0], detail[1]);

  /* epoch 100 commits on both: its average comes back */
  uint32_t member[2] = {0, 1};
  const float w0[5] = {0.5f, -0.25f, 1, 2, -1};
  Memdl__RoundRequest r[2] = {peer_req(100, 0, member, true), peer_req(100, 0, member, true)};
  req[0] = &r[0].base;
  req[1] = &r[1].base;
  peer_calls(ch, 2, MDL_WORKER_ROUND, req, &memdl__round_reply__descriptor, 1, w0, out, code,
             detail);
  cr_assert(code[0] == MDL_RPC_OK && code[1] == MDL_RPC_OK, "%s / %s", detail[0], detail[1]);
  float avg100[5];
  memcpy(avg100, out[0], sizeof avg100);
  cr_assert(!memcmp(out[0], out[1], sizeof avg100), "the members' averages differ");
  cr_assert(memcmp(avg100, w0, sizeof avg100), "the round did not move the weights");

  /* epoch 200, from the kept 100, fails on worker 0: its peer never runs */
  r[0] = peer_req(200, 100, member, false);
  peer_calls(ch, 1, MDL_WORKER_ROUND, req, &memdl__round_reply__descriptor, 1, NULL, out, code,
             detail);
  cr_assert_neq(code[0], MDL_RPC_OK);
  cr_assert(strstr(detail[0], "peer exchange failed"), "%s", detail[0]);

  /* the average of 100 is still there to fetch; 200 is not */
  Memdl__StateRequest sr = MEMDL__STATE_REQUEST__INIT;
  sr.has_session = sr.has_average_epoch = 1;
  sr.session = 42;
  sr.average_epoch = 100;
  req[0] = &sr.base;
  memset(out, 0, sizeof out);
  peer_calls(ch, 1, MDL_WORKER_STATE, req, &memdl__state_reply__descriptor, 2, NULL, out, code,
             detail);
  cr_assert_eq(code[0], MDL_RPC_OK, "%s", detail[0]);
  cr_assert(!memcmp(out[0], avg100, sizeof avg100), "the fetched average is not epoch 100's");
  sr.average_epoch = 200;
  peer_calls(ch, 1, MDL_WORKER_STATE, req, &memdl__state_reply__descriptor, 2, NULL, out, code,
             detail);
  cr_assert_eq(code[0], MDL_RPC_INVALID_ARGUMENT);
  cr_assert(strstr(detail[0], "no average of epoch 200"), "%s", detail[0]);

  /* a TEST on a kept average: refused for an epoch the worker does not
   * hold, and with weights besides */
  Memdl__TestRequest tq = MEMDL__TEST_REQUEST__INIT;
  tq.has_session = tq.has_kept_epoch = 1;
  tq.session = 42;
  tq.kept_epoch = 200;
  req[0] = &tq.base;
  peer_calls(ch, 1, MDL_WORKER_TEST, req, &memdl__test_reply__descriptor, 0, NULL, out, code,
             detail);
  cr_assert_eq(code[0], MDL_RPC_INVALID_ARGUMENT, "%s", detail[0]);
  cr_assert(strstr(detail[0], "epoch 200, which this worker does not hold"), "%s", detail[0]);
  tq.kept_epoch = 100;
  peer_calls(ch, 1, MDL_WORKER_TEST, req, &memdl__test_reply__descriptor, 0, w0, out, code, detail);
  cr_assert_eq(code[0], MDL_RPC_INVALID_ARGUMENT, "%s", detail[0]);
  cr_assert(strstr(detail[0], "kept_epoch with weights from elsewhere"), "%s", detail[0]);

  /* the redo from the kept 100 on both computes what the same round sent
   * the average of 100 computes */
  r[0] = peer_req(300, 100, member, true);
  r[1] = peer_req(300, 100, member, true);
  req[0] = &r[0].base;
  req[1] = &r[1].base;
  peer_calls(ch, 2, MDL_WORKER_ROUND, req, &memdl__round_reply__descriptor, 1, NULL, ref, code,
             detail);
  cr_assert(code[0] == MDL_RPC_OK && code[1] == MDL_RPC_OK, "%s / %s", detail[0], detail[1]);
  r[0] = peer_req(400, 0, member, true);
  r[1] = peer_req(400, 0, member, true);
  peer_calls(ch, 2, MDL_WORKER_ROUND, req, &memdl__round_reply__descriptor, 1, avg100, out, code,
             detail);
  cr_assert(code[0] == MDL_RPC_OK && code[1] == MDL_RPC_OK, "%s / %s", detail[0], detail[1]);
  cr_assert(!memcmp(out[0], ref[0], sizeof avg100), "the kept average is not what was sent");

  for (int i = 0; i < 2; i++) {
    mdl_worker_stop(tw[i].w);
    join_thr_worker(&tw[i]);
    mdl_rpc_channel_free(ch[i]);
  }
  mdl_trainer_lineages_free(l, nl);
  free(pbytes);
  mdl_pb_free(p);
  mdl_rpc_shutdown();
}
