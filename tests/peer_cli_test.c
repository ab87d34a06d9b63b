/* Peer-to-peer averaging end to end through the built binary (issue 13):
 * `memdl worker --listen 127.0.0.1:0` processes and a driver given their
 * addresses give the same model file, byte for byte, averaging among
 * themselves as through the driver's star (cluster { averaging: STAR }),
 * and a worker killed mid-run fails the round for its peers, which the
 * driver redoes without it. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/clitest.h"
#include "tests/testutil.h"

static const char JOB[] = "jobs/fashion_mnist/job.prototxt";

TestSuite(peer_cli, .init = tu_dir_setup, .fini = tu_dir_teardown, .timeout = 240);

typedef struct worker {
  pid_t pid;
  char log[700];
  char addr[64];
} worker;

/* Starts `memdl worker` on a free loopback port with the token file and
 * waits for the port it prints; host (may be NULL) is the machine it
 * pretends to run on (MDL_TEST_HOST_ID). */
static void start_worker_on(worker *w, const char *token_file, int i, const char *host) {
  snprintf(w->log, sizeof w->log, "%s/worker%d.log", tu_dir, i);
  tu_write(w->log, "", 0); /* there before the child writes into it */
  w->pid = fork();
  cr_assert_neq(w->pid, -1);
  if (w->pid == 0) {
    unsetenv("BXFI_MAP"); /* Criterion's sandbox would take the child over */
    FILE *f = freopen(w->log, "w", stderr);
    if (!f) _exit(127);
    if (host) setenv("MDL_TEST_HOST_ID", host, 1);
    execl("./memdl", "memdl", "worker", "--listen", "127.0.0.1:0", "--token-file", token_file,
          "--threads", "1", "--driver-timeout-ms", "120000", (char *)NULL);
    _exit(127);
  }
  for (int tries = 0; tries < 600; tries++) {
    size_t len;
    char *text = tu_read(w->log, &len);
    const char *p = strstr(text, "(port ");
    if (p) {
      snprintf(w->addr, sizeof w->addr, "127.0.0.1:%d", atoi(p + 6));
      free(text);
      return;
    }
    free(text);
    usleep(20000);
  }
  cr_assert_fail("worker %d printed no port (%s)", i, w->log);
}

static void start_worker(worker *w, const char *token_file, int i) {
  start_worker_on(w, token_file, i, NULL);
}

static const char *start_workers(worker *w, int k, const char *token_file, char *list, size_t cap) {
  list[0] = 0;
  for (int i = 0; i < k; i++) {
    start_worker(&w[i], token_file, i);
    snprintf(list + strlen(list), cap - strlen(list), "%s%s", i ? "," : "", w[i].addr);
  }
  return list;
}

static void reap(worker *w, int k) {
  for (int i = 0; i < k; i++) {
    int status;
    waitpid(w[i].pid, &status, 0);
  }
}

static const char *token_file(void) {
  const char *tf = tu_dir_write("token", "a-shared-token-of-32-characters!");
  chmod(tf, 0600);
  return tf;
}

/* What a run sets beyond the job: iterations, tau, TEST and snapshot
 * intervals (strings, as --set takes them). */
typedef struct run_spec {
  const char *max_iter, *tau, *test_interval, *snapshot;
} run_spec;

static const run_spec PLAIN = {"20", "5", "0", "0"};

static char *model_at(const char *out, const char *iter, size_t *len) {
  char path[800];
  snprintf(path, sizeof path, "%s/lenet_iter_%s.caffemodel", out, iter);
  return tu_read(path, len);
}

/* One driver run over k fresh workers; the model file's bytes at `at`
 * iterations. A peer run's log must contain want_log (when not NULL). */
static char *run_k(int k, const char *out, const char *averaging, const run_spec *rs,
                   const char *at, const char *want_log, size_t *len, char *tests, size_t cap) {
  worker w[4];
  char list[300];
  const char *tf = token_file();
  start_workers(w, k, tf, list, sizeof list);
  char avg[64];
  snprintf(avg, sizeof avg, "cluster.averaging=%s", averaging);
  char iters[64], tau[64], test[64], snap[64];
  snprintf(iters, sizeof iters, "max_iter=%s", rs->max_iter);
  snprintf(tau, sizeof tau, "sync.tau=%s", rs->tau);
  snprintf(test, sizeof test, "test_interval=%s", rs->test_interval);
  snprintf(snap, sizeof snap, "snapshot=%s", rs->snapshot);
  const char *run[] = {"run",   JOB,     "--workers", list,    "--token-file", tf,      "--set",
                       iters,   "--set", tau,         "--set", test,           "--set", snap,
                       "--set", avg,     "--threads", "1",     "--output",     out,     NULL};
  mdl_run_result r = mdl_run_memdl(run, 200);
  cr_assert_eq(r.exit_code, 3, "trains, then misses the acceptance: %s", r.err);
  bool peer = strstr(r.err, "averaging peer-to-peer") != NULL;
  cr_assert_eq(peer, strcmp(averaging, "STAR") != 0, "averaging %s: %s", averaging, r.err);
  if (peer && want_log) cr_assert(strstr(r.err, want_log), "no \"%s\" in: %s", want_log, r.err);
  if (tests) tu_test_lines(r.err, tests, cap);
  mdl_run_result_free(&r);
  reap(w, k);
  return model_at(out, at, len);
}

/* the same bytes (the same SHA-256) in two model files */
static void same_bytes(const char *p, size_t lp, const char *s, size_t ls, const char *what) {
  cr_assert_eq(lp, ls, "%s", what);
  cr_assert(lp > 1000000, "a LeNet model file is 1.7 MB, not %zu bytes", lp);
  cr_assert(!memcmp(p, s, lp), "%s: the peer average differs from the star's", what);
}

static void same_model_peer_and_star(int k) {
  size_t lp, ls;
  /* 4 rounds without TEST or snapshot: only the last brings the average
   * (431080 floats) to the driver */
  char *p = run_k(k, tu_dir_path("peer"), "AUTO", &PLAIN, "20",
                  "1.7 MB of weights came to the driver (0 fetched) in 4 rounds", &lp, NULL, 0);
  char *s = run_k(k, tu_dir_path("star"), "STAR", &PLAIN, "20", NULL, &ls, NULL, 0);
  same_bytes(p, lp, s, ls, k == 2 ? "2 workers" : "3 workers");
  free(p);
  free(s);
}

Test(peer_cli, two_remote_workers_average_peer_to_peer_to_the_stars_bits) {
  same_model_peer_and_star(2);
}

Test(peer_cli, three_remote_workers_average_peer_to_peer_to_the_stars_bits) {
  same_model_peer_and_star(3);
}

/* TEST passes (at 0, 20 and 40) and snapshots (at 15 and 30) between
 * rounds that keep the average among the workers (5, 10, 25, 35): the
 * driver has each snapshot's average returned (15, 30, 40: 3 x 1.7 MB),
 * the TEST passes run on the average the workers kept (the weights go out
 * only to the first round and the TEST at 0: 4 x 1.7 MB), and every TEST
 * line and model file matches the star's. */
Test(peer_cli, with_test_passes_and_snapshots_between_rounds_the_model_files_are_the_stars) {
  const run_spec rs = {"40", "5", "20", "15"};
  size_t lp, ls;
  char tp[4096] = "", ts[4096] = "";
  char *p = run_k(2, tu_dir_path("peer"), "AUTO", &rs, "40",
                  "5.2 MB of weights came to the driver (0 fetched) in 8 rounds, 6.9 MB went to "
                  "the workers",
                  &lp, tp, sizeof tp);
  char *s = run_k(2, tu_dir_path("star"), "STAR", &rs, "40", NULL, &ls, ts, sizeof ts);
  cr_assert(strstr(tp, "iter 20: ") && strstr(tp, "iter 40: "), "%s", tp);
  cr_assert_str_eq(tp, ts);
  same_bytes(p, lp, s, ls, "iteration 40");
  free(p);
  free(s);
  const char *at[] = {"15", "30"};
  for (int i = 0; i < 2; i++) {
    p = model_at(tu_dir_path("peer"), at[i], &lp);
    s = model_at(tu_dir_path("star"), at[i], &ls);
    same_bytes(p, lp, s, ls, at[i]);
    free(p);
    free(s);
  }
}

typedef struct killer {
  worker *victim;
  useconds_t after_us;
} killer;

static void *kill_later(void *arg) {
  killer *k = arg;
  /* once it is set up (its log says so), then a while into the rounds */
  for (int tries = 0; tries < 3000; tries++) {
    size_t len;
    char *text = tu_read(k->victim->log, &len);
    bool up = strstr(text, "worker 2 of 3") != NULL;
    free(text);
    if (up) break;
    usleep(20000);
  }
  usleep(k->after_us);
  kill(k->victim->pid, SIGKILL);
  return NULL;
}

Test(peer_cli, a_worker_killed_mid_run_fails_the_round_which_is_redone_without_it) {
  worker w[3];
  char list[300];
  const char *tf = token_file();
  start_workers(w, 3, tf, list, sizeof list);
  killer k = {&w[2], 1500000};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, kill_later, &k), 0);
  const char *run[] = {"run",
                       JOB,
                       "--workers",
                       list,
                       "--token-file",
                       tf,
                       "--set",
                       "max_iter=200",
                       "--set",
                       "sync.tau=2",
                       "--set",
                       "test_interval=0",
                       "--set",
                       "snapshot=0",
                       "--threads",
                       "1",
                       "--output",
                       tu_dir_path("fault"),
                       NULL};
  mdl_run_result r = mdl_run_memdl(run, 220);
  pthread_join(th, NULL);
  reap(w, 3);
  cr_assert_eq(r.exit_code, 3, "finishes on the survivors: %s", r.err);
  cr_assert(strstr(r.err, "averaging peer-to-peer"), "%s", r.err);
  /* a survivor's round failed naming the dead peer, which alone was removed */
  cr_assert(strstr(r.err, "peer exchange failed") && strstr(r.err, w[2].addr), "%s", r.err);
  cr_assert(strstr(r.err, "worker 2 (") && strstr(r.err, "removed"), "%s", r.err);
  cr_assert(strstr(r.err, " 1 faults"), "%s", r.err);
  /* the redo started from the average the survivors kept: the driver,
   * which had not received it, fetched nothing */
  cr_assert(strstr(r.err, "(0 fetched)"), "%s", r.err);
  cr_assert(strstr(r.err, "on 2 workers (3 started)") || strstr(r.err, "on 2 workers"), "%s",
            r.err);
  mdl_run_result_free(&r);
}

/* Workers grouped by host (MDL_TEST_HOST_ID: workers 0 and 1 pretend to
 * share one machine, 2 and 3 another) average on each host first, then
 * across the two hosts' leaders (MDL_EXCHANGE_HOSTS=on: on loopback the
 * model would keep the flat exchange): the same model file on every run,
 * and close to the star's (another summation order, not another average). */
static char *run_hosts(const char *out, const char *averaging, char *log, size_t cap, size_t *len) {
  const char *hosts[4] = {"machine-a", "machine-a", "machine-b", "machine-b"};
  worker w[4];
  char list[300] = "";
  const char *tf = token_file();
  for (int i = 0; i < 4; i++) {
    start_worker_on(&w[i], tf, i, hosts[i]);
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? "," : "", w[i].addr);
  }
  char avg[64];
  snprintf(avg, sizeof avg, "cluster.averaging=%s", averaging);
  const char *run[] = {
      "run",         JOB,     "--workers",  list,    "--token-file",     tf,      "--set",
      "max_iter=20", "--set", "sync.tau=5", "--set", "test_interval=10", "--set", "snapshot=0",
      "--set",       avg,     "--threads",  "1",     "--output",         out,     NULL};
  mdl_run_result r = mdl_run_memdl(run, 200);
  cr_assert_eq(r.exit_code, 3, "trains, then misses the acceptance: %s", r.err);
  snprintf(log, cap, "%s", r.err);
  mdl_run_result_free(&r);
  reap(w, 4);
  return model_at(out, "20", len);
}

Test(peer_cli, workers_sharing_a_host_reduce_there_first_with_the_same_bits_every_run) {
  setenv("MDL_EXCHANGE_HOSTS", "on", 1);
  static char log[3][1 << 16];
  size_t l1, l2, ls;
  char *a = run_hosts(tu_dir_path("hosts1"), "AUTO", log[0], sizeof log[0], &l1);
  char *b = run_hosts(tu_dir_path("hosts2"), "AUTO", log[1], sizeof log[1], &l2);
  char *s = run_hosts(tu_dir_path("star"), "STAR", log[2], sizeof log[2], &ls);
  for (int i = 0; i < 2; i++) {
    cr_assert(strstr(log[i], "4 workers on 2 hosts: averaging on each host first"), "%s", log[i]);
    /* the TEST passes (10, 20) ran on the kept averages: only the end's
     * average (1.7 MB) came back */
    cr_assert(strstr(log[i], "1.7 MB of weights came to the driver (0 fetched) in 4 rounds"), "%s",
              log[i]);
  }
  same_bytes(a, l1, b, l2, "two runs by host");
  /* the same layout and size as the star's file; the floats agree to
   * rounding */
  cr_assert_eq(l1, ls);
  cr_assert(memcmp(a, s, l1), "by host equals the star bit for bit: were the stages run?");
  free(a);
  free(b);
  free(s);
}
