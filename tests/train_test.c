/* The training loop on the real example job (Fashion-MNIST LeNet): a short
 * run must learn, runs are repeatable bit for bit, --resume continues
 * exactly, and acceptance failures say by how much. */
#include <criterion/criterion.h>
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

static float *train_weights(const char *const *sets, const char *dir, const char *resume,
                            size_t *n) {
  mdl_job *job = load(sets);
  mdl_train *t = trainer(job, dir);
  mdl_error err;
  if (resume) cr_assert_eq(mdl_train_restore(t, resume, &err), MDL_OK, "%s", err.msg);
  mdl_train_summary sum;
  mdl_status st = mdl_train_run(t, 0, &sum, &err);
  cr_assert(st == MDL_OK || st == MDL_ERR_ACCEPT, "%s", err.msg);
  mdl_net *net = mdl_train_train_net(t);
  *n = mdl_net_param_count(net);
  float *w = malloc(*n * sizeof(float));
  memcpy(w, mdl_net_params(net), *n * sizeof(float));
  mdl_train_free(t);
  mdl_job_free(job);
  return w;
}

Test(train, resume_gives_the_same_bits) {
  const char *sets[] = {"max_iter=40",
                        "snapshot=20",
                        "test_interval=0",
                        "display=0",
                        "snapshot_after_train=false",
                        "type=\"Nesterov\"",
                        NULL};
  size_t n1, n2, n3;
  const char *dir = tu_scratch_path("train_resume");
  float *full = train_weights(sets, dir, NULL, &n1);
  char state[600];
  snprintf(state, sizeof state, "%s/lenet_iter_20.solverstate", dir);
  cr_assert(access(state, R_OK) == 0, "snapshot %s was written", state);
  float *resumed = train_weights(sets, tu_scratch_path("train_resume2"), state, &n2);
  cr_assert_eq(n1, n2);
  cr_assert(memcmp(full, resumed, n1 * sizeof(float)) == 0,
            "weights after 40 iterations differ between an uninterrupted and a resumed run");
  /* and the same job run again gives the same bits */
  float *again = train_weights(sets, tu_scratch_path("train_again"), NULL, &n3);
  cr_assert(memcmp(full, again, n1 * sizeof(float)) == 0);
  free(full);
  free(resumed);
  free(again);
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
