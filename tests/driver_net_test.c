/* The distributed runtime on the real engine (the "net" trainer): LeNet on
 * Fashion-MNIST (jobs/fashion_mnist) through real worker processes. One
 * worker through the driver reproduces the single-machine trainer
 * (runtime/train/train.h) bit for bit; K workers with tau 1 equal one
 * worker on a K-times batch of the same records (SGD and Nesterov, both
 * with momentum); two workers averaging every 10 iterations reach the
 * single worker's accuracy within 1 point at the same number of samples
 * seen; runs repeat to the bit. The full-length comparison (10000
 * iterations, 1 vs 2 vs 3 workers, within 1 point; several minutes on 2 cores)
 * runs when MDL_LONG=1. The driver's check of averaged weights names the
 * layer and blob of a NaN. This binary is also the worker (main() is in
 * driver_test_util.c). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/pb.h"
#include "compiler/job.h"
#include "compiler/plan.h"
#include "runtime/data/dataset.h"
#include "runtime/data/dataset_resolver.h"
#include "runtime/dist/driver.h"
#include "runtime/engine/net.h"
#include "runtime/rpc/rpc.h"
#include "runtime/train/train.h"
#include "runtime/train/trainer.h"
#include "tests/driver_test_util.h"
#include "tests/testutil.h"

#define JOB "jobs/fashion_mnist/job.prototxt"

static bool have_data(void) {
  return access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) == 0;
}

/* The example job with overrides ("max_iter=300", ...). */
static mdl_job *load_job(const char *const *sets) {
  mdl_job *job;
  mdl_error err;
  cr_assert_eq(mdl_job_load(JOB, MDL_KIND_AUTO, &job, &err), MDL_OK, "%s", err.msg);
  for (const char *const *s = sets; s && *s; s++)
    cr_assert_eq(mdl_job_set(job, *s, &err), MDL_OK, "%s: %s", *s, err.msg);
  return job;
}

/* The "net" trainer (NULL), one thread per worker, long timeouts. */
static mdl_driver_opts opts(const char *workers, int tau, FILE *log) {
  mdl_driver_opts o = dt_opts(workers, NULL, log);
  o.tau = tau;
  o.snapshot_path = tu_dir_path("driver.snapshot");
  o.out_dir = tu_dir;
  o.round_timeout_ms = 120000;
  o.setup_timeout_ms = 60000;
  o.threads = 1;
  return o;
}

static double accuracy(const mdl_driver_result *r) {
  for (int k = 0; k < r->n_test; k++)
    if (!strcmp(r->test[k].name, "accuracy")) return r->test[k].sum[0];
  return NAN;
}

static double run(const char *workers, int tau, const char *const *sets, mdl_driver_result *out) {
  mdl_job *job = load_job(sets);
  mdl_driver_opts o = opts(workers, tau, stderr);
  mdl_driver_result r;
  mdl_error err;
  double t0 = mdl_now();
  /* short runs miss the job's accuracy bar: MDL_ERR_ACCEPT, result filled */
  mdl_status st = mdl_driver_run(job, &o, &r, &err);
  cr_assert(st == MDL_OK || st == MDL_ERR_ACCEPT, "%s", err.msg);
  cr_assert_eq(r.accepted, st == MDL_OK);
  cr_assert_neq(r.weights_file[0], 0, "no model file written");
  double acc = accuracy(&r);
  fprintf(stderr, "%s tau %d: accuracy %.4f after %d iterations in %.1f s\n", workers, tau, acc,
          r.iter, mdl_now() - t0);
  mdl_job_free(job);
  if (out)
    *out = r;
  else
    mdl_driver_result_free(&r);
  return acc;
}

TestSuite(driver_net, .init = tu_dir_setup, .fini = tu_dir_teardown);

Test(driver_net, one_worker_through_the_driver_is_the_local_trainer_bit_for_bit) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  const char *sets[] = {"max_iter=60", "test_interval=30", "test_iter=5", NULL};
  mdl_driver_result r;
  run("local:1", 7, sets, &r);
  mdl_job *job = load_job(sets);
  mdl_train_opts to = {.threads = 1, .out_dir = tu_dir, .log = fopen("/dev/null", "w")};
  mdl_train *t;
  mdl_error err;
  cr_assert_eq(mdl_train_new(job, &to, &t, &err), MDL_OK, "%s", err.msg);
  mdl_train_summary sum;
  mdl_status st = mdl_train_run(t, 0, &sum, &err);
  cr_assert(st == MDL_OK || st == MDL_ERR_ACCEPT, "%s", err.msg);
  mdl_net *net = mdl_train_train_net(t);
  cr_assert_eq(mdl_net_param_count(net), r.n_params);
  cr_assert_eq(memcmp(mdl_net_params(net), r.weights, r.n_params * sizeof(float)), 0,
               "the driver with one worker and the local trainer disagree");
  fclose(to.log);
  mdl_train_free(t);
  mdl_job_free(job);
  mdl_driver_result_free(&r);
}

/* The full-length comparison below, shortened to fit the suite but as
 * strict: one worker and two workers averaging every 10 iterations, both
 * seeing the same samples (1200 batches of 64 in all, ~1.3 epochs), tested
 * on all 10000 test images, within 1 point (0.8665 and 0.8591 here). Three
 * workers need the full length for that (0.8487 at this point), so they
 * stay in the MDL_LONG test. */
Test(driver_net, one_and_two_workers_within_one_point_at_the_same_samples) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  const char *one[] = {"max_iter=1200", "test_interval=1200", NULL};
  const char *two[] = {"max_iter=600", "test_interval=600", NULL};
  double a1 = run("local:1", 10, one, NULL);
  double a2 = run("local:2", 10, two, NULL);
  cr_assert_gt(a1, 0.80, "one worker reached only %.4f", a1);
  cr_assert(fabs(a2 - a1) <= 0.01, "2 workers %.4f vs 1 worker %.4f", a2, a1);
}

Test(driver_net, two_workers_repeat_to_the_bit) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  const char *again[] = {"max_iter=20", "test_interval=0", NULL};
  mdl_driver_result r2b, r2c;
  run("local:2", 10, again, &r2b);
  run("local:2", 10, again, &r2c);
  cr_assert_eq(memcmp(r2b.weights, r2c.weights, r2b.n_params * sizeof(float)), 0,
               "two runs of the same job on 2 workers differ");
  mdl_driver_result_free(&r2b);
  mdl_driver_result_free(&r2c);
}

/* The calibration Round runs iterations on every worker and undoes them:
 * a run that calibrates first ends on the same bits, and it leaves its
 * figures in the output folder. One worker: with two, a loaded machine can
 * measure them apart by more than 10%, and then their shares of the batch
 * rightly change the bits. */
Test(driver_net, calibrating_first_changes_no_bit) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  const char *sets[] = {"max_iter=20", "test_interval=0", NULL};
  mdl_driver_result plain, calibrated;
  run("local:1", 5, sets, &plain);
  mdl_job *job = load_job(sets);
  mdl_driver_opts o = opts("local:1", 5, stderr);
  o.calibrate = true;
  mdl_error err;
  mdl_status st = mdl_driver_run(job, &o, &calibrated, &err);
  cr_assert(st == MDL_OK || st == MDL_ERR_ACCEPT, "%s", err.msg);
  cr_assert_eq(calibrated.n_params, plain.n_params);
  cr_assert_eq(memcmp(plain.weights, calibrated.weights, plain.n_params * sizeof(float)), 0,
               "calibrating changed the run's weights");
  cr_assert_eq(calibrated.iter, 20);
  cr_assert_eq(access(tu_dir_path("calibration.txt"), R_OK), 0, "no calibration cache written");
  mdl_job_free(job);
  mdl_driver_result_free(&plain);
  mdl_driver_result_free(&calibrated);
}

/* --- speed-balanced blocks ------------------------------------------------ */

/* The mean over rounds, after the first (it builds the workers' arenas for
 * their new batches), of the largest share of a round any worker spent
 * waiting, from the driver's round lines ("... 0.174 s: ... share
 * compute/comm/wait: w0 83% 0.169/0.000/0.004 w1 17% ..."); worker 0's
 * share of the samples in *share0. */
static double mean_wait(const char *log, double *share0) {
  double sum = 0;
  int rounds = 0;
  for (const char *p = strstr(log, "round "); p; p = strstr(p + 1, "\nround ")) {
    if (*p == '\n') p++;
    const char *wl = strstr(p, "workers) ");
    const char *sh = strstr(p, "share compute/comm/wait:");
    const char *eol = strchr(p, '\n');
    if (!wl || !sh || (eol && sh > eol)) continue;
    double wall = atof(wl + 9), worst = 0;
    rounds++;
    for (const char *w = strstr(sh, " w"); w && (!eol || w < eol); w = strstr(w + 1, " w")) {
      int idx;
      double pct, c, m, wait;
      if (sscanf(w, " w%d %lf%% %lf/%lf/%lf", &idx, &pct, &c, &m, &wait) != 5) continue;
      if (idx == 0) *share0 = pct / 100;
      if (wall > 0 && wait / wall > worst) worst = wait / wall;
    }
    if (rounds > 1) sum += worst;
  }
  cr_assert_geq(rounds, 3, "too few round lines in the log:\n%s", log);
  return sum / (rounds - 1);
}

/* One run of the job on two local workers with the given trainer, tau (0:
 * the tuner's) and calibration, metrics.jsonl in the test folder: the
 * result into *out (NULL: freed), the driver's log returned (the caller's). */
static char *logged_run(const char *const *sets, const char *trainer, int tau, bool calibrate,
                        mdl_driver_result *out) {
  mdl_job *job = load_job(sets);
  char *log = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&log, &len);
  mdl_driver_opts o = opts("local:2", tau, f);
  o.trainer = trainer;
  o.quiet = false;
  o.calibrate = calibrate;
  o.job_path = JOB;
  mdl_driver_result r;
  mdl_error err;
  mdl_status st = mdl_driver_run(job, &o, &r, &err);
  fclose(f);
  cr_assert(st == MDL_OK || st == MDL_ERR_ACCEPT, "%s\n%s", err.msg, log);
  if (getenv("MDL_TEST_SHOW_LOG")) fputs(log, stderr);
  if (out)
    *out = r;
  else
    mdl_driver_result_free(&r);
  mdl_job_free(job);
  return log;
}

/* One run of the "slownet" trainer (worker 1 five times slower), its round
 * lines read back: the worst waiting share, and the accuracy. */
static double slow_run(const char *const *sets, bool calibrate, double *share0, double *acc) {
  mdl_driver_result r;
  char *log = logged_run(sets, "slownet", 10, calibrate, &r);
  *acc = accuracy(&r);
  double worst = mean_wait(log, share0);
  fprintf(stderr, "slownet, %s blocks: mean waiting share %.3f, worker 0 takes %.2f, acc %.4f\n",
          calibrate ? "balanced" : "equal", worst, *share0, *acc);
  if (calibrate)
    cr_assert(strstr(log, "blocks by measured speed: worker 0 "), "no rebalancing:\n%s", log);
  free(log);
  mdl_driver_result_free(&r);
  return worst;
}

/* Worker 1 slower by 2 ms a sample (several times slower than worker 0):
 * equal blocks leave worker 0 waiting most of each round; blocks by
 * measured speed at least halve the mean waiting share. On a quiet machine
 * it falls to ~0.10 (0.097 against 0.51 with equal blocks); on the shared
 * 2-core machine other processes move a worker's speed by a third after
 * the calibration, so the test asks only for the halving. */
Test(driver_net, balanced_blocks_stop_the_fast_worker_waiting) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  const char *sets[] = {"max_iter=60", "test_interval=0", "display=10", "test_iter=5", NULL};
  double s_eq = 0, s_bal = 0, a;
  double equal = slow_run(sets, false, &s_eq, &a);
  double balanced = slow_run(sets, true, &s_bal, &a);
  cr_assert_float_eq(s_eq, 0.5, 1e-9, "equal blocks: half the samples each");
  cr_assert_gt(equal, 0.3, "equal blocks: the fast worker waits %.2f of a round", equal);
  cr_assert_gt(s_bal, 0.6, "worker 0, the faster, takes only %.2f of the samples", s_bal);
  cr_assert_leq(balanced, 0.5 * equal, "balanced blocks still wait %.2f of a round (equal %.2f)",
                balanced, equal);
}

/* Balanced blocks stay synchronous SGD on the global batch (averaging is
 * weighted by samples): no worse than equal blocks by more than half a
 * point at the same samples seen. About 10 minutes on 2 cores: MDL_LONG=1. */
Test(driver_net, balanced_blocks_keep_the_accuracy_of_equal_blocks) {
  if (!getenv("MDL_LONG")) cr_skip_test("several minutes; set MDL_LONG=1");
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  const char *sets[] = {"max_iter=1500", "test_interval=1500", "display=100", NULL};
  double s, a_eq, a_bal;
  slow_run(sets, false, &s, &a_eq);
  slow_run(sets, true, &s, &a_bal);
  /* one-sided: different shares take different local steps between
   * averages, so the two runs differ by run-to-run noise (0.8851 balanced,
   * 0.8773 equal here); balancing must not cost more than half a point */
  cr_assert_geq(a_bal, a_eq - 0.005, "balanced %.4f vs equal %.4f", a_bal, a_eq);
}

/* --- shares that follow speed during the run, and tau re-tuned ----------- */

/* A round line's figures: its number, first iteration, worker 0's share of
 * the round spent waiting, the workers' mean share (the run's waiting
 * share), and worker 1's share of the samples. */
typedef struct round_line {
  int round, iter;
  double wait0, mean_wait, share1;
} round_line;

/* The round lines of log, in order, into v (cap); returns how many. */
static int round_lines(const char *log, round_line *v, int cap) {
  int n = 0;
  for (const char *p = log; p && *p && n < cap; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    round_line r = {0};
    double wall;
    if (sscanf(p, "round %d iter %d-", &r.round, &r.iter) != 2) continue;
    const char *wl = strstr(p, "workers) "), *sh = strstr(p, "share compute/comm/wait:");
    const char *eol = strchr(p, '\n');
    if (!wl || !sh || (eol && sh > eol)) continue;
    wall = atof(wl + 9);
    int k = 0;
    for (const char *w = strstr(sh, " w"); w && (!eol || w < eol); w = strstr(w + 1, " w")) {
      int idx;
      double pct, c, m, wait;
      if (sscanf(w, " w%d %lf%% %lf/%lf/%lf", &idx, &pct, &c, &m, &wait) != 5 || wall <= 0)
        continue;
      if (idx == 0) r.wait0 = wait / wall;
      if (idx == 1) r.share1 = pct / 100;
      r.mean_wait += wait / wall;
      k++;
    }
    if (k) r.mean_wait /= k;
    v[n++] = r;
  }
  return n;
}

/* Both workers take 1 ms a sample ("steady": the real compute, padded)
 * until iteration 30, when worker 1 slows down by 4 ms a sample (another
 * process on its cores, as it were). The driver notices over a window of
 * rounds, gives it a smaller share of the global batch (told with its
 * reason, recorded in metrics.jsonl), moves whole train partitions so each
 * worker's data follows its share; the fast worker stops waiting for the
 * slow one, and the run's waiting share falls. The padding keeps the
 * machine's load out of what the driver measures (with the real compute
 * alone, a worker computes faster while the other sleeps than when both
 * compute, and a loaded 2-core machine moved the shares by a third). */
Test(driver_net, a_worker_slowed_mid_run_is_rebalanced_and_its_partitions_follow) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  setenv("MDL_TEST_SLOW", "from:30:4", 1);
  const char *sets[] = {"max_iter=175", "test_interval=0", "display=5", "data.partitions=16", NULL};
  char *log = logged_run(sets, "slownet", 5, true, NULL);
  /* the change: "blocks by measured speed: worker 0 A, worker 1 B samples per
   * iteration (global batch 128 kept; were ...): rounds F-L took ... (rounds
   * P-Q pointed the same way)", a window after one proposing the same
   * (rounds 7 on are slowed: iteration 30; windows of 5 from round 2, so
   * rounds 12-16 after 7-11, about 1 s a round saved against the first
   * Setup's 5 s; or a window later where a loaded machine's first Setup
   * took 8.6 s, which the 35 rounds leave time to pay); the machine's
   * noise may move the shares a little before that */
  const char *ch = log;
  int first = 0, last = 0, p_first = 0, p_last = 0;
  while ((ch = strstr(ch + 1, "kept; were ")) != NULL) {
    const char *why = strstr(ch, "): rounds ");
    cr_assert(why && sscanf(why, "): rounds %d-%d took", &first, &last) == 2, "%s", ch);
    if (last >= 9) break;
  }
  cr_assert(ch, "no rebalancing after the slowdown:\n%s", log);
  const char *before = strstr(ch, "(rounds ");
  cr_assert(before && sscanf(before, "(rounds %d-%d pointed the same way)", &p_first, &p_last) == 2,
            "%.600s", ch);
  cr_assert_eq(p_last + 1, first, "the window before: rounds %d-%d, this one %d-%d", p_first,
               p_last, first, last);
  round_line v[64];
  int n = round_lines(log, v, 64);
  /* [0]: slowed rounds at the old shares; [1]: after the change (its first
   * round, which builds the arenas, left out) */
  double wait0[2] = {0}, mean[2] = {0}, share1[2] = {0};
  int cnt[2] = {0};
  for (int i = 0; i < n; i++) {
    int a = v[i].iter >= 30 && v[i].round <= last ? 0 : v[i].round > last + 1 ? 1 : -1;
    if (a < 0) continue;
    wait0[a] += v[i].wait0;
    mean[a] += v[i].mean_wait;
    share1[a] += v[i].share1;
    cnt[a]++;
  }
  cr_assert(cnt[0] >= 3 && cnt[1] >= 3, "%d rounds slowed before, %d after:\n%s", cnt[0], cnt[1],
            log);
  for (int a = 0; a < 2; a++) {
    wait0[a] /= cnt[a];
    mean[a] /= cnt[a];
    share1[a] /= cnt[a];
  }
  fprintf(stderr,
          "slowed at iteration 30, rebalanced after round %d: worker 1's share %.2f -> %.2f, "
          "worker 0 waits %.3f -> %.3f, the workers' mean waiting share %.3f -> %.3f\n",
          last, share1[0], share1[1], wait0[0], wait0[1], mean[0], mean[1]);
  cr_assert_lt(share1[1], share1[0] - 0.25, "worker 1's share %.2f -> %.2f", share1[0], share1[1]);
  /* 107 / 21 samples: worker 0 waited 0.80 of a round, then none; the
   * mean 0.40 -> 0.01 (looser: under a heavy load worker 0's real compute
   * may outgrow its 1 ms a sample, and worker 1 wait for it a little) */
  cr_assert_leq(wait0[1], 0.3 * wait0[0],
                "the fast worker waits %.3f of a round before, %.3f after", wait0[0], wait0[1]);
  cr_assert_leq(mean[1], 0.5 * mean[0], "the mean waiting share %.3f before, %.3f after", mean[0],
                mean[1]);

  /* partitions follow: "train samples now worker 0 S0 (P0%; share Q0%), ..."
   * after the change, each within one partition (1/16) of its share */
  const char *ps = strstr(ch, "partitions follow the shares: ");
  cr_assert(ps, "no partition moved:\n%s", ch);
  ps = strstr(ps, "train samples now ");
  unsigned long long s0, s1;
  double p0, q0, p1, q1;
  cr_assert(ps && sscanf(ps,
                         "train samples now worker 0 %llu (%lf%%; share %lf%%), worker 1 "
                         "%llu (%lf%%; share %lf%%)",
                         &s0, &p0, &q0, &s1, &p1, &q1) == 6,
            "%s", ps);
  cr_assert_eq(s0 + s1, 60000, "%llu + %llu train samples", s0, s1);
  cr_assert_gt(s0, s1, "the fast worker holds less data (%llu, %llu)", s0, s1);
  cr_assert_leq(fabs(p0 - q0), 100.0 / 16 + 1e-9, "worker 0: %.1f%% of the data, share %.1f%%", p0,
                q0);
  cr_assert_leq(fabs(p1 - q1), 100.0 / 16 + 1e-9, "worker 1: %.1f%% of the data, share %.1f%%", p1,
                q1);
  size_t len;
  char *m = tu_read(tu_dir_path("metrics.jsonl"), &len);
  const char *rec = strstr(m, "\"event\": \"rebalance\"");
  cr_assert(rec, "no rebalance record:\n%s", m);
  char want[120];
  snprintf(want, sizeof want, "\"rank\": 1, \"batch\": ");
  cr_assert(strstr(rec, want) && strstr(rec, "\"train_samples\": "), "%.400s", rec);
  free(m);
  free(log);
}

/* A change of shares must pay back its Setup over as many rounds as the
 * difference has lasted. Every Setup here takes 1.5 s more (":setup:"),
 * the run's first too, which stands for a change's cost until one is
 * timed; from iteration 30 worker 1 takes 2 ms a sample, worker 0 1 ms.
 * Balanced shares (85 / 43) would save about 2 x 64 x (2 - 4/3) ms = 85
 * ms a round of tau 2: 0.85 s over the 10 rounds of the first two windows
 * that propose them, under the 1.5 s Setup, so the change is kept back and
 * stays proposed; it pays once the difference has lasted 20 to 40 rounds,
 * depending on what the real Setup adds (when it is first kept, some 70
 * of the run's 100 rounds are left: counting them, it would have changed
 * at once). */
Test(driver_net, a_change_waits_until_the_difference_has_lasted_long_enough_to_pay_its_setup) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  setenv("MDL_TEST_SLOW", "from:30:1:setup:1500", 1);
  const char *sets[] = {"max_iter=200", "test_interval=0", "display=2", NULL};
  char *log = logged_run(sets, "slownet", 2, true, NULL);
  /* "blocks: kept (worker 0 A, worker 1 B would save X s over H rounds, as
   * long as the difference has lasted or the run has left; setting the
   * workers up last took Y s): rounds F-L took ... (rounds P-Q pointed the
   * same way)" */
  const char *kept = strstr(log, "blocks: kept (worker 0 ");
  cr_assert(kept, "the change was made at once:\n%s", log);
  const char *w = strstr(kept, " would save ");
  double saves = 0, setup = 0;
  int horizon = 0, first = 0, last = 0, p_first = 0, p_last = 0;
  cr_assert(w && sscanf(w, " would save %lf s over %d rounds", &saves, &horizon) == 2, "%s", kept);
  const char *took = strstr(kept, "workers up last took ");
  cr_assert(took && sscanf(took, "workers up last took %lf s): rounds %d-%d took", &setup, &first,
                           &last) == 3,
            "%.600s", kept);
  const char *before = strstr(took, "(rounds ");
  cr_assert(before && sscanf(before, "(rounds %d-%d pointed the same way)", &p_first, &p_last) == 2,
            "%.600s", kept);
  cr_assert_lt(saves, setup, "%.600s", kept);
  cr_assert_geq(setup, 1.5, "the run's first Setup stands for a change's: %.600s", kept);
  /* the horizon: the rounds since the first window proposing it, fewer
   * than the rounds left (100 of tau 2 in all) */
  cr_assert_eq(horizon, last - p_first + 1, "%.600s", kept);
  cr_assert_lt(horizon, 100 - last, "%.600s", kept);
  /* then made, for the same standing proposal, a window or more later;
   * "kept" said once meanwhile */
  const char *ch = strstr(kept, "blocks by measured speed: worker 0 ");
  cr_assert(ch, "never made:\n%s", log);
  const char *again = strstr(kept + 1, "blocks: kept (");
  cr_assert(!again || again > ch, "%s", log);
  int c_first = 0, c_last = 0, cp_first = 0, cp_last = 0;
  const char *why = strstr(ch, "): rounds ");
  cr_assert(why && sscanf(why, "): rounds %d-%d took", &c_first, &c_last) == 2, "%.600s", ch);
  before = strstr(why, "(rounds ");
  cr_assert(
      before && sscanf(before, "(rounds %d-%d pointed the same way)", &cp_first, &cp_last) == 2,
      "%.600s", ch);
  cr_assert_eq(cp_first, p_first, "the proposal kept standing: %.600s", ch);
  cr_assert_gt(c_first, last, "%.600s", ch);
  cr_assert_eq(cp_last + 1, c_first, "%.600s", ch);
  free(log);
}

/* Equal speeds keep equal shares all run long, and the run's bits: the
 * "steady" workers report exactly 1 ms a sample (sleeping out the rest), so
 * neither the calibration nor the windows during the run can measure them
 * apart, and the calibrated run ends on the plain run's bits. */
Test(driver_net, equal_speeds_keep_equal_shares_and_the_bits) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  setenv("MDL_TEST_SLOW", "steady", 1);
  const char *sets[] = {"max_iter=60", "test_interval=0", "display=5", NULL};
  mdl_driver_result plain, steady;
  free(logged_run(sets, NULL, 5, false, &plain));
  char *log = logged_run(sets, "slownet", 5, true, &steady);
  cr_assert(strstr(log, "blocks: equal, 64 samples per worker"), "%s", log);
  cr_assert_null(strstr(log, "blocks by measured speed"), "%s", log);
  cr_assert_null(strstr(log, "partitions follow the shares"), "%s", log);
  round_line v[64];
  int n = round_lines(log, v, 64);
  cr_assert_eq(n, 12, "%d round lines", n);
  for (int i = 0; i < n; i++) cr_assert_float_eq(v[i].share1, 0.5, 1e-9, "round %d", v[i].round);
  cr_assert_eq(memcmp(plain.weights, steady.weights, plain.n_params * sizeof(float)), 0,
               "equal shares changed the run's bits");
  free(log);
  mdl_driver_result_free(&plain);
  mdl_driver_result_free(&steady);
}

/* tau re-tuned during the run: from iteration 20 each round costs the
 * workers 150 ms that they do not count as compute (a slow link, to the
 * driver), far over the job's 10% bound at the calibrated tau; after a
 * window of such rounds tau goes up, the log says why, and the round
 * records carry the new tau. 150 ms stays over the bound up to tau 20
 * (64 ms an iteration): a loaded machine's noise may have raised tau to 5
 * or more before the link slows. */
Test(driver_net, a_slow_link_mid_run_raises_a_tuned_tau) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  setenv("MDL_TEST_SLOW", "comm:150:20", 1);
  const char *sets[] = {"max_iter=160", "test_interval=0", "sync.max_comm_fraction=0.1", NULL};
  char *log = logged_run(sets, "slownet", 0, false, NULL);
  const char *ch = strstr(log, "memdl driver: tau ");
  int from = 0, to = 0;
  double share = 0, comm = 0;
  /* the first rise for communication (a quiet start may lower a tau the
   * calibration chose; two workers on a loaded machine may straggle over
   * the bound before the link slows) */
  for (; ch; ch = strstr(ch + 1, "memdl driver: tau "))
    if (sscanf(
            ch,
            "memdl driver: tau %d -> %d: communication and straggling took %lf%% of the last %*d "
            "rounds (communication %lf%%",
            &from, &to, &share, &comm) == 4 &&
        to > from && comm > 10)
      break;
  cr_assert(ch, "tau never raised for communication:\n%s", log);
  cr_assert_gt(to, from, "tau %d -> %d", from, to);
  cr_assert_geq(share, comm, "%.300s", ch);
  cr_assert(strstr(ch, "; bound 10%;"), "%.300s", ch);
  size_t len;
  char *m = tu_read(tu_dir_path("metrics.jsonl"), &len);
  /* a record at the old tau, then one at the new (or, on a machine fast
   * enough for a tau that outruns the run, the last round, cut short at
   * iteration 160) */
  char old_tau[64];
  snprintf(old_tau, sizeof old_tau, "\"tau\": %d, \"workers\"", from);
  const char *o = strstr(m, old_tau), *r = o;
  int iter = 0, tau = 0;
  while (r && (r = strstr(r + 1, "\"event\": \"round\"")) != NULL)
    if (sscanf(r, "\"event\": \"round\", \"round\": %*d, \"iter\": %d, \"tau\": %d", &iter, &tau) ==
            2 &&
        tau != from)
      break;
  cr_assert(o && r && (tau == to || (tau > from && iter == 160)),
            "round records do not go from tau %d to %d:\n%s", from, to, m);
  free(m);
  free(log);
}

/* tau re-tuned for straggling: from iteration 20 the two (steady, equally
 * fast) workers take turns computing 400 ms longer, so every round waits
 * for one of them while neither is slower on average. Straggling counts
 * what the round takes over the slowest worker's mean, 200 ms here (the
 * driver measures about 160): over the 10% bound up to tau 28 (23 as
 * measured). A loaded machine's noise may have raised tau
 * before the turns begin: to 5 during the run (60 ms turns failed so on
 * CI), to 12 in the calibration (an 81 ms round trip; 200 ms turns, over
 * the bound up to tau 12, failed so), and 200 iterations leave a window of
 * rounds after iteration 20 even at tau 23. The round's cost is waiting,
 * not the link: tau goes up for straggling, and the shares stay equal (a
 * worker slow on average would have moved them instead). */
Test(driver_net, workers_slow_in_turn_raise_a_tuned_tau_and_keep_equal_shares) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  setenv("MDL_TEST_SLOW", "straggle:400:20", 1);
  const char *sets[] = {"max_iter=200", "test_interval=0", "sync.max_comm_fraction=0.1", NULL};
  char *log = logged_run(sets, "slownet", 0, false, NULL);
  const char *ch = strstr(log, "memdl driver: tau ");
  int from = 0, to = 0;
  double share = 0, comm = 0, straggle = 0;
  for (; ch; ch = strstr(ch + 1, "memdl driver: tau "))
    if (sscanf(
            ch,
            "memdl driver: tau %d -> %d: communication and straggling took %lf%% of the last %*d "
            "rounds (communication %lf%%, straggling %lf%%",
            &from, &to, &share, &comm, &straggle) == 5 &&
        to > from && straggle > 10)
      break;
  cr_assert(ch, "tau never raised for straggling:\n%s", log);
  cr_assert_lt(comm, straggle, "%.300s", ch);
  cr_assert_null(strstr(log, "blocks by measured speed"), "shares moved:\n%s", log);
  cr_assert_null(strstr(log, "it grows with the round"), "a fixed cost taken for growing:\n%s",
                 log);
  free(log);
}

/* The last round record's tau in the test's metrics.jsonl. */
static int last_round_tau(void) {
  size_t len;
  char *m = tu_read(tu_dir_path("metrics.jsonl"), &len);
  int tau = 0;
  for (const char *r = strstr(m, "\"tau\": "); r; r = strstr(r + 1, "\"tau\": "))
    sscanf(r, "\"tau\": %d", &tau);
  free(m);
  return tau;
}

/* Straggling in proportion to the round: from iteration 20 the worker in
 * turn computes 60% more than its round's steady compute, so every round
 * waits about 15% of its time whatever tau is (workers that share cores
 * straggle so). Taken at first for a fixed cost, it raises tau (by about
 * 1.6 times: the judgment comes soon even when a loaded machine's
 * calibration chose tau 12). The first window at the raised tau finds that
 * straggling took the same share of the compute as before, says that it
 * grows with the round, and tau climbs no more for it. The bound is set
 * here, as the arithmetic above needs it. */
Test(driver_net, straggling_that_grows_with_the_round_stops_tau_climbing_for_it) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  setenv("MDL_TEST_SLOW", "lag:60:20", 1);
  const char *sets[] = {"max_iter=300", "test_interval=0", "sync.max_comm_fraction=0.1", NULL};
  char *log = logged_run(sets, "slownet", 0, false, NULL);
  /* the verdict (a noisy first window may call an earlier rise a fixed
   * cost; the next rise is judged again) */
  const char *j = strstr(log, "memdl driver: tau ");
  int to = 0;
  double sa = 0, sb = 0;
  for (; j; j = strstr(j + 1, "memdl driver: tau ")) {
    const char *grows = strstr(j, ": it grows with the round"), *eol = strchr(j, '\n');
    if (sscanf(j,
               "memdl driver: tau %d judged: straggling was %lf%% of the compute at %*f "
               "iterations a round, %lf%% at ",
               &to, &sa, &sb) == 3 &&
        grows && eol && grows < eol)
      break;
  }
  cr_assert(j, "straggling never judged to grow with the round:\n%s", log);
  cr_assert_geq(sb, 0.9 * sa, "%.300s", j);
  /* after it, no rise for straggling, and tau stays where that rise left it */
  const char *ch = j;
  while ((ch = strstr(ch + 1, "memdl driver: tau ")) != NULL) {
    int from = 0, next = 0;
    if (sscanf(ch, "memdl driver: tau %d -> %d:", &from, &next) == 2)
      cr_assert_lt(next, from, "tau climbed again:\n%s", log);
  }
  cr_assert_leq(last_round_tau(), to, "tau climbed again:\n%s", log);
  cr_assert_null(strstr(log, "blocks by measured speed"), "shares moved:\n%s", log);
  free(log);
}

/* --- K workers with tau 1 = one worker on a K-times batch, on LeNet ------- */

static void put_be32(FILE *f, uint32_t v) {
  unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
                        (unsigned char)v};
  cr_assert_eq(fwrite(b, 1, 4, f), 4);
}

static Memdl__DataSet *train_set(mdl_job *job) {
  for (size_t i = 0; i < job->job->n_data; i++)
    if (!strcmp(job->job->data[i]->name, "fashion_mnist_train")) return job->job->data[i];
  cr_assert_fail("the job has no fashion_mnist_train data set");
  return NULL;
}

/* Writes plain IDX files holding, for iterations 0..T-1, the K workers'
 * batches of B one after the other: partition k of K as the workers build
 * it (same lineage), records [t B, (t+1) B) of each. One worker reading
 * these in order with batch K B sees at iteration t exactly the union of
 * what the K workers see at t. */
static void write_union_batches(mdl_job *job, int K, int B, int T, const char *images,
                                const char *labels) {
  mdl_partition *part[8];
  mdl_error err;
  int64_t total = 0;
  for (int k = 0; k < K; k++) {
    Memdl__PartitionLineage *l =
        mdl_lineage_new(train_set(job), (uint32_t)k, (uint32_t)K, job->base_dir);
    cr_assert_eq(mdl_partition_build(l, NULL, &part[k], &err), MDL_OK, "%s", err.msg);
    mdl_pb_free(l);
    cr_assert_eq(part[k]->dtype, MDL_DTYPE_U8);
    cr_assert_geq(part[k]->n, (int64_t)T * B, "partition %d holds %lld records", k,
                  (long long)part[k]->n);
    total += part[k]->n;
  }
  cr_assert_eq(total, 60000, "the partitions hold %lld of the 60000 records", (long long)total);
  size_t rec = (size_t)part[0]->channels * part[0]->height * part[0]->width;
  FILE *fi = fopen(images, "wb"), *fl = fopen(labels, "wb");
  cr_assert(fi && fl);
  uint32_t n = (uint32_t)(K * B * T);
  put_be32(fi, 0x803);
  put_be32(fi, n);
  put_be32(fi, (uint32_t)part[0]->height);
  put_be32(fi, (uint32_t)part[0]->width);
  put_be32(fl, 0x801);
  put_be32(fl, n);
  for (int t = 0; t < T; t++)
    for (int k = 0; k < K; k++)
      for (int b = 0; b < B; b++) {
        int64_t r = (int64_t)t * B + b;
        cr_assert_eq(fwrite((const uint8_t *)part[k]->data + (size_t)r * rec, 1, rec, fi), rec);
        unsigned char lab = (unsigned char)part[k]->label[r];
        cr_assert_eq(fwrite(&lab, 1, 1, fl), 1);
      }
  fclose(fi);
  fclose(fl);
  for (int k = 0; k < K; k++) mdl_partition_free(part[k]);
}

/* The job reading `images`/`labels` as its training set with batch `batch`. */
static void retarget(mdl_job *job, const char *images, const char *labels, int batch) {
  Memdl__IdxSource *idx = train_set(job)->source->idx;
  cr_assert(idx);
  free(idx->images);
  free(idx->labels);
  idx->images = strdup(images);
  idx->labels = strdup(labels);
  Caffe__NetParameter *nets[2] = {job->solver->net_param, job->solver->train_net_param};
  int changed = 0;
  for (int k = 0; k < 2; k++)
    for (size_t i = 0; nets[k] && i < nets[k]->n_layer; i++) {
      Caffe__DataParameter *dp = nets[k]->layer[i]->data_param;
      if (dp && dp->source && !strcmp(dp->source, "fashion_mnist_train")) {
        dp->batch_size = (uint32_t)batch;
        changed++;
      }
    }
  cr_assert_gt(changed, 0, "no Data layer reads fashion_mnist_train");
}

/* K workers, tau 1, T iterations of batch B each (the job's 64) against
 * one worker (the local trainer, which the driver's one worker reproduces
 * bit for bit) on batches of K B holding the same records. Returns
 * |w_K - w_1| / |w_1 - w_0| (L2 norms): float rounding only, ~1e-5 here;
 * averaging off by one sample makes it ~7e-3. */
static double k_workers_vs_one_big_batch(const char *solver, int K, int T) {
  enum { B = 64 };
  char iters[32], type[64];
  snprintf(iters, sizeof iters, "max_iter=%d", T);
  snprintf(type, sizeof type, "type=\"%s\"", solver);
  const char *sets[] = {iters, type, "test_interval=0", "test_iter=1", "display=0", NULL};
  char workers[32];
  snprintf(workers, sizeof workers, "local:%d", K);
  mdl_driver_result rk;
  run(workers, 1, sets, &rk);
  cr_assert_eq(rk.iter, T);
  cr_assert_eq(rk.rounds, T, "tau 1: one round per iteration");

  mdl_job *job = load_job(sets);
  const char *images = tu_dir_path("union-images-idx3-ubyte"),
             *labels = tu_dir_path("union-labels-idx1-ubyte");
  write_union_batches(job, K, B, T, images, labels);
  retarget(job, images, labels, K * B);
  mdl_train_opts to = {.threads = 1, .out_dir = tu_dir, .log = fopen("/dev/null", "w")};
  mdl_train *t;
  mdl_error err;
  cr_assert_eq(mdl_train_new(job, &to, &t, &err), MDL_OK, "%s", err.msg);
  mdl_net *net = mdl_train_train_net(t);
  size_t n = mdl_net_param_count(net);
  cr_assert_eq(n, rk.n_params);
  float *w0 = malloc(n * sizeof(float));
  memcpy(w0, mdl_net_params(net), n * sizeof(float));
  mdl_train_summary sum;
  mdl_status st = mdl_train_run(t, 0, &sum, &err);
  cr_assert(st == MDL_OK || st == MDL_ERR_ACCEPT, "%s", err.msg);
  cr_assert_eq(sum.iter, T);
  const float *w1 = mdl_net_params(net);
  double moved = 0, off = 0, moved2 = 0, off2 = 0;
  size_t worst = 0;
  for (size_t j = 0; j < n; j++) {
    moved = fmax(moved, fabs((double)w1[j] - w0[j]));
    double e = fabs((double)rk.weights[j] - w1[j]);
    if (e > off) off = e, worst = j;
    moved2 += ((double)w1[j] - w0[j]) * ((double)w1[j] - w0[j]);
    off2 += e * e;
  }

  cr_assert_gt(moved, 1e-3, "%s: %d iterations did not move the weights", solver, T);
  double rel = sqrt(off2 / moved2);
  fprintf(stderr,
          "%s: %d workers vs one on a %d-times batch after %d iterations: |w_K - w_1| is %.3g "
          "of |w_1 - w_0|; largest difference %.3g (weight %zu: %.9g vs %.9g)\n",
          solver, K, K, T, rel, off, worst, rk.weights[worst], w1[worst]);
  fclose(to.log);
  free(w0);
  mdl_train_free(t);
  mdl_job_free(job);
  mdl_driver_result_free(&rk);
  return rel;
}

Test(driver_net, k_workers_with_tau_1_equal_one_worker_on_a_k_times_batch_sgd) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  double rel = k_workers_vs_one_big_batch("SGD", 2, 10);
  cr_assert_lt(rel, 5e-4, "SGD (momentum 0.9): 2 workers are %.3g off one worker", rel);
}

Test(driver_net, k_workers_with_tau_1_equal_one_worker_on_a_k_times_batch_nesterov) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  double rel = k_workers_vs_one_big_batch("Nesterov", 3, 8);
  cr_assert_lt(rel, 5e-4, "Nesterov: 3 workers are %.3g off one worker", rel);
}

/* The acceptance comparison, ~4 minutes on 2 cores: MDL_LONG=1. */
Test(driver_net, full_run_two_and_three_workers_within_one_point_of_one) {
  if (!getenv("MDL_LONG")) cr_skip_test("long comparison: set MDL_LONG=1 to run it");
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  const char *one[] = {"test_interval=10000", NULL};
  const char *two[] = {"max_iter=5000", "test_interval=5000", NULL};
  const char *three[] = {"max_iter=3334", "test_interval=3334", NULL};
  double a1 = run("local:1", 10, one, NULL);
  double a2 = run("local:2", 10, two, NULL);
  double a3 = run("local:3", 10, three, NULL);
  cr_assert(fabs(a2 - a1) <= 0.01, "2 workers %.4f vs 1 worker %.4f", a2, a1);
  cr_assert(fabs(a3 - a1) <= 0.01, "3 workers %.4f vs 1 worker %.4f", a3, a1);
}

/* The driver checks averaged weights with the single-worker run's checker:
 * a NaN or infinity is named by layer and blob, finite weights pass. */
Test(driver_net, non_finite_weights_are_named_by_layer_and_blob) {
  mdl_job *job = load_job((const char *const[]){"max_iter=10", NULL});
  mdl_data_catalog cat = {job->job->data, job->job->n_data, job->base_dir};
  mdl_compiled *c = NULL;
  mdl_error err;
  cr_assert_eq(mdl_compile_job(job, mdl_data_source_info, &cat, &c, &err), MDL_OK, "%s", err.msg);
  Memdl__Plan *plan = mdl_plan_new(job, c);
  mdl_trainer_opts to = {
      .device = "cpu", .seed = 1, .worker_index = -1, .num_workers = 1, .base_dir = job->base_dir};
  mdl_trainer *t;
  cr_assert_eq(mdl_trainer_new(NULL, "net", plan, &to, &t, &err), MDL_OK, "%s", err.msg);
  size_t n = mdl_trainer_param_count(t);
  float *w = malloc(n * sizeof *w);
  cr_assert_eq(mdl_trainer_init_weights(t, w, &err), MDL_OK, "%s", err.msg);
  char where[400] = "";
  cr_assert(!mdl_trainer_find_nonfinite(t, w, where, sizeof where), "finite: %s", where);
  cr_assert_eq(mdl_trainer_check_average(t, w, "by iteration 3", &err), MDL_OK, "%s", err.msg);
  w[n - 1] = INFINITY; /* the last blob: ip2's bias */
  cr_assert(mdl_trainer_find_nonfinite(t, w, where, sizeof where));
  cr_assert(strstr(where, "layer \"ip2\" learnable blob 1, value 9 of 10 is +inf"), "%s", where);
  /* the check every holder of an average runs: the same place, in words */
  cr_assert_eq(mdl_trainer_check_average(t, w, "by iteration 3", &err), MDL_ERR_DIVERGED);
  cr_assert(strstr(err.msg,
                   "training diverged by iteration 3: the averaged weights are not "
                   "finite: layer \"ip2\" learnable blob 1"),
            "%s", err.msg);
  w[0] = NAN;
  cr_assert(mdl_trainer_find_nonfinite(t, w, where, sizeof where));
  cr_assert(strstr(where, "layer \"conv1\" learnable blob 0, value 0 of 500 is NaN"), "%s", where);
  free(w);
  mdl_trainer_free(t);
  mdl_pb_free(plan);
  mdl_compiled_free(c);
  mdl_job_free(job);
}
