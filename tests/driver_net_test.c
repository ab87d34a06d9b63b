/* The distributed runtime on the real engine (the "net" trainer): LeNet on
 * Fashion-MNIST (jobs/fashion_mnist) through real worker processes. One
 * worker through the driver reproduces the single-machine trainer
 * (runtime/train/train.h) bit for bit; two workers averaging every tau
 * iterations reach the single worker's accuracy at the same number of
 * samples seen; runs repeat to the bit. The full-length comparison the
 * issue asks for (10000 iterations, 1 vs 2 vs 3 workers, within 1 point)
 * runs when MDL_LONG=1. This binary is also the worker (main() is in
 * driver_test_util.c). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compiler/job.h"
#include "runtime/dist/driver.h"
#include "runtime/engine/net.h"
#include "runtime/rpc/rpc.h"
#include "runtime/train/train.h"
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
  double t0 = mdl_rpc_now();
  /* short runs miss the job's accuracy bar: MDL_ERR_ACCEPT, result filled */
  mdl_status st = mdl_driver_run(job, &o, &r, &err);
  cr_assert(st == MDL_OK || st == MDL_ERR_ACCEPT, "%s", err.msg);
  cr_assert_eq(r.accepted, st == MDL_OK);
  cr_assert_neq(r.weights_file[0], 0, "no model file written");
  double acc = accuracy(&r);
  fprintf(stderr, "%s tau %d: accuracy %.4f after %d iterations in %.1f s\n", workers, tau, acc,
          r.iter, mdl_rpc_now() - t0);
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

Test(driver_net, two_workers_learn_like_one_at_the_same_samples_and_repeat_to_the_bit) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  const char *one[] = {"max_iter=600", "test_interval=600", "test_iter=20", NULL};
  const char *two[] = {"max_iter=300", "test_interval=300", "test_iter=20", NULL};
  double a1 = run("local:1", 10, one, NULL);
  mdl_driver_result r2, r2b;
  double a2 = run("local:2", 10, two, &r2);
  cr_assert_gt(a2, 0.70, "two workers reached only %.4f", a2);
  /* accuracy still climbs fast here; the full-length run checks 1 point */
  cr_assert_gt(a2, a1 - 0.04, "two workers %.4f, one worker %.4f at the same samples", a2, a1);
  const char *again[] = {"max_iter=20", "test_interval=0", NULL};
  run("local:2", 10, again, &r2b);
  mdl_driver_result r2c;
  run("local:2", 10, again, &r2c);
  cr_assert_eq(memcmp(r2b.weights, r2c.weights, r2b.n_params * sizeof(float)), 0,
               "two runs of the same job on 2 workers differ");
  mdl_driver_result_free(&r2);
  mdl_driver_result_free(&r2b);
  mdl_driver_result_free(&r2c);
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
