/* The training loop on the real example job (Fashion-MNIST LeNet): a short
 * run must learn, runs are repeatable bit for bit, --resume continues
 * exactly (from the snapshot's iteration, with its solver history and
 * learning rate, which a run without them does not reproduce), iter_size 2
 * equals a twice larger batch, and acceptance failures say by how much. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compiler/job.h"
#include "runtime/train/train.h"
#include "tests/testutil.h"

static const char JOB[] = "jobs/fashion_mnist/job.prototxt";

static mdl_job *load(const char *const *sets) {
  mdl_job *job;
  mdl_error err;
  cr_assert_eq(mdl_job_load(JOB, MDL_KIND_AUTO, &job, &err), MDL_OK, "%s", err.msg);
  for (; sets && *sets; sets++)
    cr_assert_eq(mdl_job_set(job, *sets, &err), MDL_OK, "%s: %s", *sets, err.msg);
  return job;
}

static mdl_train *trainer(mdl_job *job, const char *dir) {
  mdl_train_opts o = {.out_dir = dir, .threads = 2};
  mdl_train *t;
  mdl_error err;
  cr_assert_eq(mdl_train_new(job, &o, &t, &err), MDL_OK, "%s", err.msg);
  return t;
}

Test(train, lenet_learns_fashion_mnist_in_300_iterations) {
  const char *sets[] = {"max_iter=300", "test_interval=0",
                        "snapshot=0",   "snapshot_after_train=false",
                        "display=100",  NULL};
  mdl_job *job = load(sets);
  mdl_train *t = trainer(job, tu_scratch_path("train_learn"));
  mdl_train_summary sum;
  mdl_error err;
  mdl_status st = mdl_train_run(t, 0, &sum, &err);
  cr_assert(st == MDL_OK || st == MDL_ERR_ACCEPT, "%s", err.msg);
  cr_assert_eq(sum.iter, 300);
  double acc = -1;
  for (int k = 0; k < sum.n_outputs; k++)
    if (!strcmp(sum.output_name[k], "accuracy")) acc = sum.output_value[k];
  cr_log_info("accuracy after 300 iterations: %.4f (%.0f img/s)", acc, sum.images_per_s);
  cr_assert(acc > 0.70, "test accuracy %.4f after 300 iterations, expected > 0.70", acc);
  /* 300 iterations miss the job's 0.89. */
  cr_assert_eq(st, MDL_ERR_ACCEPT);
  cr_assert(strstr(sum.accept_msg, "accuracy") && strstr(sum.accept_msg, "below 0.89 by"), "%s",
            sum.accept_msg);
  mdl_train_free(t);
  mdl_job_free(job);
}

/* What a trainer holds at one point of a run: the iteration, the rate of
 * the next update, the solver history and the weights. */
typedef struct train_point {
  int iter;
  float lr;
  int n_sets;
  size_t total;
  float *hist[2];
  float *w;
} train_point;

static train_point point_of(mdl_train *t) {
  mdl_solver *s = mdl_train_solver(t);
  mdl_net *net = mdl_train_train_net(t);
  train_point p = {.iter = mdl_solver_iter(s),
                   .lr = mdl_solver_rate(s),
                   .n_sets = mdl_solver_history_sets(s),
                   .total = mdl_solver_total(s)};
  cr_assert_eq(p.total, mdl_net_param_count(net));
  for (int k = 0; k < p.n_sets; k++) {
    p.hist[k] = malloc(p.total * sizeof(float));
    mdl_solver_history_get(s, k, p.hist[k]);
  }
  p.w = malloc(p.total * sizeof(float));
  memcpy(p.w, mdl_net_params(net), p.total * sizeof(float));
  return p;
}

static void point_free(train_point *p) {
  for (int k = 0; k < p->n_sets; k++) free(p->hist[k]);
  free(p->w);
}

static bool all_zero(const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (x[i] != 0.f) return false;
  return true;
}

/* An uninterrupted run of `sets` (snapshot at 20, max_iter 40) in dir:
 * its state at iteration 20 and its final weights. */
static float *run_through_20(const char *const *sets, const char *dir, train_point *at20) {
  mdl_job *job = load(sets);
  mdl_train *t = trainer(job, dir);
  mdl_train_summary sum;
  mdl_error err;
  mdl_status st = mdl_train_run(t, 20, &sum, &err);
  cr_assert(st == MDL_OK || st == MDL_ERR_ACCEPT, "%s", err.msg);
  *at20 = point_of(t);
  cr_assert_eq(at20->iter, 20);
  st = mdl_train_run(t, 0, &sum, &err);
  cr_assert(st == MDL_OK || st == MDL_ERR_ACCEPT, "%s", err.msg);
  cr_assert_eq(sum.iter, 40);
  train_point end = point_of(t);
  mdl_train_free(t);
  mdl_job_free(job);
  free(end.hist[0]);
  if (end.n_sets > 1) free(end.hist[1]);
  return end.w;
}

/* A run started from the snapshot at iteration 20 of dir: either restored
 * (--resume) or given only the weights file and the position, so that
 * everything but the solver history matches. *at is its state before it
 * trains; returns its final weights. */
static float *run_from_20(const char *const *sets, const char *dir, const char *out, bool restore,
                          train_point *at) {
  mdl_job *job = load(sets);
  mdl_train *t = trainer(job, out);
  mdl_error err;
  char path[600];
  if (restore) {
    snprintf(path, sizeof path, "%s/lenet_iter_20.solverstate", dir);
    cr_assert(access(path, R_OK) == 0, "snapshot %s was written", path);
    cr_assert_eq(mdl_train_restore(t, path, &err), MDL_OK, "%s", err.msg);
  } else {
    snprintf(path, sizeof path, "%s/lenet_iter_20.caffemodel", dir);
    cr_assert_eq(mdl_train_load_weights(t, path, &err), MDL_OK, "%s", err.msg);
    mdl_solver_set_position(mdl_train_solver(t), 20, 0);
  }
  *at = point_of(t);
  mdl_train_summary sum;
  mdl_status st = mdl_train_run(t, 0, &sum, &err);
  cr_assert(st == MDL_OK || st == MDL_ERR_ACCEPT, "%s", err.msg);
  cr_assert_eq(sum.iter, 40);
  cr_assert_eq(sum.iter - at->iter, 20, "the resumed run trained %d iterations, not 20",
               sum.iter - at->iter);
  train_point end = point_of(t);
  mdl_train_free(t);
  mdl_job_free(job);
  for (int k = 0; k < end.n_sets; k++) free(end.hist[k]);
  return end.w;
}

/* The restored state is the uninterrupted run's state at the snapshot. */
static void assert_same_point(const train_point *got, const train_point *want) {
  cr_assert_eq(got->iter, want->iter, "resumed at iteration %d, the snapshot is of %d", got->iter,
               want->iter);
  cr_assert_eq(got->lr, want->lr, "learning rate %g after resuming, %g in the run", got->lr,
               want->lr);
  cr_assert_eq(got->n_sets, want->n_sets);
  for (int k = 0; k < want->n_sets; k++) {
    cr_assert_not(all_zero(want->hist[k], want->total), "history %d of the run is zero", k);
    cr_assert_eq(memcmp(got->hist[k], want->hist[k], want->total * sizeof(float)), 0,
                 "solver history %d was not restored", k);
  }
  cr_assert_eq(memcmp(got->w, want->w, want->total * sizeof(float)), 0,
               "weights were not restored");
}

Test(train, resume_gives_the_same_bits) {
  const char *sets[] = {"max_iter=40",
                        "snapshot=20",
                        "test_interval=0",
                        "display=0",
                        "snapshot_after_train=false",
                        "type=\"Nesterov\"",
                        NULL};
  const char *dir = tu_scratch_path("train_resume");
  train_point at20, resumed_at;
  float *full = run_through_20(sets, dir, &at20);
  float *resumed = run_from_20(sets, dir, tu_scratch_path("train_resume2"), true, &resumed_at);
  assert_same_point(&resumed_at, &at20);
  cr_assert(memcmp(full, resumed, at20.total * sizeof(float)) == 0,
            "weights after 40 iterations differ between an uninterrupted and a resumed run");
  /* and the same job run again gives the same bits */
  train_point again20;
  float *again = run_through_20(sets, tu_scratch_path("train_again"), &again20);
  cr_assert(memcmp(full, again, at20.total * sizeof(float)) == 0);
  point_free(&at20);
  point_free(&resumed_at);
  point_free(&again20);
  free(full);
  free(resumed);
  free(again);
}

/* Adam keeps two moments: restored, the run continues bit for bit; started
 * from the same weights, iteration and rate without them, it ends
 * elsewhere. So the comparison above cannot pass by training from scratch
 * or by dropping the history. */
Test(train, resume_restores_adam_moments_and_without_them_the_run_differs) {
  const char *sets[] = {"max_iter=40",
                        "snapshot=20",
                        "test_interval=0",
                        "display=0",
                        "snapshot_after_train=false",
                        "type=\"Adam\"",
                        "base_lr=0.001",
                        "momentum2=0.999",
                        NULL};
  const char *dir = tu_scratch_path("train_adam");
  train_point at20, resumed_at, fresh_at;
  float *full = run_through_20(sets, dir, &at20);
  cr_assert_eq(at20.n_sets, 2);
  float *resumed = run_from_20(sets, dir, tu_scratch_path("train_adam2"), true, &resumed_at);
  assert_same_point(&resumed_at, &at20);
  cr_assert(memcmp(full, resumed, at20.total * sizeof(float)) == 0,
            "Adam: an uninterrupted and a resumed run differ");
  float *fresh = run_from_20(sets, dir, tu_scratch_path("train_adam3"), false, &fresh_at);
  /* everything but the history is the same ... */
  cr_assert_eq(fresh_at.iter, 20);
  cr_assert_eq(fresh_at.lr, at20.lr);
  cr_assert_eq(memcmp(fresh_at.w, at20.w, at20.total * sizeof(float)), 0);
  for (int k = 0; k < 2; k++) cr_assert(all_zero(fresh_at.hist[k], at20.total));
  /* ... and the history matters */
  size_t differ = 0;
  for (size_t i = 0; i < at20.total; i++) differ += full[i] != fresh[i];
  cr_assert_gt(differ, at20.total / 2,
               "only %zu of %zu weights differ without Adam's moments: the comparison would "
               "not notice a resume that drops them",
               differ, at20.total);
  point_free(&at20);
  point_free(&resumed_at);
  point_free(&fresh_at);
  free(full);
  free(resumed);
  free(fresh);
}

/* Sets the batch size of the TRAIN data layer. */
static void set_train_batch(mdl_job *job, int batch) {
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
  cr_assert_gt(changed, 0);
}

/* Weights after a run of job (and the initial ones in *w0 when asked). */
static float *trained(mdl_job *job, const char *dir, float **w0, size_t *n) {
  mdl_train *t = trainer(job, dir);
  mdl_net *net = mdl_train_train_net(t);
  *n = mdl_net_param_count(net);
  if (w0) {
    *w0 = malloc(*n * sizeof(float));
    memcpy(*w0, mdl_net_params(net), *n * sizeof(float));
  }
  mdl_train_summary sum;
  mdl_error err;
  mdl_status st = mdl_train_run(t, 0, &sum, &err);
  cr_assert(st == MDL_OK || st == MDL_ERR_ACCEPT, "%s", err.msg);
  float *w = malloc(*n * sizeof(float));
  memcpy(w, mdl_net_params(net), *n * sizeof(float));
  mdl_train_free(t);
  return w;
}

/* Caffe's iter_size through LeNet: two passes of 64 per iteration (batch k
 * = 2 iter + pass, so the passes read the records a batch of 128 holds),
 * gradients accumulated and divided by 2, equal one pass of 128 up to float
 * rounding; one pass of 64 does not. */
Test(train, iter_size_2_equals_a_twice_larger_batch_on_lenet) {
  const char *common[] = {"max_iter=10", "test_interval=0", "display=0",
                          "snapshot=0",  "type=\"SGD\"",    "snapshot_after_train=false",
                          NULL};
  mdl_job *acc = load(common), *big = load(common), *one = load(common);
  mdl_error err;
  cr_assert_eq(mdl_job_set(acc, "iter_size=2", &err), MDL_OK, "%s", err.msg);
  set_train_batch(big, 128);
  size_t n, n2, n3;
  float *w0;
  float *wa = trained(acc, tu_scratch_path("iter_size_2"), &w0, &n);
  float *wb = trained(big, tu_scratch_path("batch_128"), NULL, &n2);
  float *wc = trained(one, tu_scratch_path("batch_64"), NULL, &n3);
  cr_assert(n == n2 && n == n3);
  double moved = 0, off = 0, single = 0;
  for (size_t j = 0; j < n; j++) {
    moved += ((double)wb[j] - w0[j]) * ((double)wb[j] - w0[j]);
    off += ((double)wa[j] - wb[j]) * ((double)wa[j] - wb[j]);
    single += ((double)wc[j] - wb[j]) * ((double)wc[j] - wb[j]);
  }
  double rel = sqrt(off / moved), rel1 = sqrt(single / moved);
  cr_log_info("iter_size 2 vs batch 128: %.3g; batch 64 vs batch 128: %.3g", rel, rel1);
  cr_assert_lt(rel, 5e-4, "iter_size 2 is %.3g off a batch of 128", rel);
  cr_assert_gt(rel1, 100 * 5e-4, "a batch of 64 is only %.3g off a batch of 128", rel1);
  free(w0);
  free(wa);
  free(wb);
  free(wc);
  mdl_job_free(acc);
  mdl_job_free(big);
  mdl_job_free(one);
}

Test(train, caffemodel_is_not_a_solverstate) {
  const char *sets[] = {"max_iter=2", "snapshot=0", "test_interval=0", "display=0", NULL};
  const char *dir = tu_scratch_path("train_wrongfile");
  mdl_job *job = load(sets);
  mdl_train *t = trainer(job, dir);
  mdl_train_summary sum;
  mdl_error err;
  mdl_train_run(t, 0, &sum, &err);
  char model[600];
  snprintf(model, sizeof model, "%s/lenet_iter_2.caffemodel", dir);
  cr_assert_eq(mdl_train_restore(t, model, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "not a .solverstate"), "%s", err.msg);
  /* but it is fine as --weights */
  cr_assert_eq(mdl_train_load_weights(t, model, &err), MDL_OK, "%s", err.msg);
  mdl_train_free(t);
  mdl_job_free(job);
}
