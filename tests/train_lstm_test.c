/* The recurrent example job (jobs/fashion_mnist_lstm: Caffe's LSTM over the
 * rows of Fashion-MNIST images) trains: a short run must learn well past
 * chance (0.1). */
#include <criterion/criterion.h>
#include <string.h>

#include "compiler/job.h"
#include "runtime/train/train.h"
#include "tests/testutil.h"

Test(train_lstm, row_lstm_learns_fashion_mnist_in_300_iterations, .timeout = 300) {
  const char *sets[] = {"max_iter=300", "test_interval=0",
                        "snapshot=0",   "snapshot_after_train=false",
                        "display=100",  NULL};
  mdl_job *job;
  mdl_error err;
  cr_assert_eq(mdl_job_load("jobs/fashion_mnist_lstm/job.prototxt", MDL_KIND_AUTO, &job, &err),
               MDL_OK, "%s", err.msg);
  for (const char *const *s = sets; *s; s++)
    cr_assert_eq(mdl_job_set(job, *s, &err), MDL_OK, "%s: %s", *s, err.msg);
  mdl_train_opts o = {.out_dir = tu_scratch_path("train_lstm"), .threads = 2};
  mdl_train *t;
  cr_assert_eq(mdl_train_new(job, &o, &t, &err), MDL_OK, "%s", err.msg);
  mdl_train_summary sum;
  mdl_status st = mdl_train_run(t, 0, &sum, &err);
  cr_assert(st == MDL_OK || st == MDL_ERR_ACCEPT, "%s", err.msg);
  cr_assert_eq(sum.iter, 300);
  double acc = -1;
  for (int k = 0; k < sum.n_outputs; k++)
    if (!strcmp(sum.output_name[k], "accuracy")) acc = sum.output_value[k];
  cr_log_info("LSTM accuracy after 300 iterations: %.4f", acc);
  /* 0.726 when written (seed 1701, 2 threads) */
  cr_assert(acc > 0.65, "test accuracy %.4f after 300 iterations, expected > 0.65", acc);
  mdl_train_free(t);
  mdl_job_free(job);
}
