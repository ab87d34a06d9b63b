/* A lying worker for the driver's checks (tests/hostile_test.c): the
 * "linear" trainer, except that worker 1 (on workers, never on the driver)
 * misreports what MDL_TEST_LIE names: "samples" (2^64 - 1 of them), "nan"
 * (a NaN loss), "accuracy" (a test accuracy of 10^6 per batch). Every
 * worker adds an "accuracy" test output of 0.5 per batch, declared in
 * [0, 1]. Test scaffolding, never linked into memdl. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/driver_test_util.h"

typedef struct liar {
  void *in; /* the linear trainer's context */
  bool lies;
  char what[16];
  double acc;
  mdl_trainer_output outs[8];
} liar;

static const mdl_trainer_i *inner(void) {
  return &mdl_trainer_linear;
}

static mdl_status liar_lineages(const Memdl__Plan *plan, const char *base_dir, int num_workers,
                                Caffe__Phase phase, Memdl__PartitionLineage ***out, size_t *n,
                                mdl_error *err) {
  return inner()->lineages(plan, base_dir, num_workers, phase, out, n, err);
}

static mdl_status liar_create(const Memdl__Plan *plan, const mdl_trainer_opts *o, void **ctx,
                              mdl_error *err) {
  liar *l = calloc(1, sizeof *l);
  mdl_status st = inner()->create(plan, o, &l->in, err);
  if (st != MDL_OK) {
    free(l);
    return st;
  }
  const char *what = getenv("MDL_TEST_LIE");
  l->lies = o->worker_index == 1 && what;
  if (what) strncpy(l->what, what, sizeof l->what - 1);
  *ctx = l;
  return MDL_OK;
}

static void liar_destroy(void *ctx) {
  liar *l = ctx;
  inner()->destroy(l->in);
  free(l);
}

static size_t liar_param_count(void *ctx) {
  return inner()->param_count(((liar *)ctx)->in);
}

static mdl_status liar_init_weights(void *ctx, float *w, mdl_error *err) {
  return inner()->init_weights(((liar *)ctx)->in, w, err);
}

static mdl_status liar_add(void *ctx, Caffe__Phase phase, Memdl__PartitionLineage *const *parts,
                           size_t n, mdl_error *err) {
  return inner()->add_partitions(((liar *)ctx)->in, phase, parts, n, err);
}

static mdl_status liar_remove(void *ctx, Caffe__Phase phase, const char *data, uint32_t index,
                              mdl_error *err) {
  return inner()->remove_partition(((liar *)ctx)->in, phase, data, index, err);
}

static uint64_t liar_samples(void *ctx, Caffe__Phase phase) {
  return inner()->samples(((liar *)ctx)->in, phase);
}

static mdl_status liar_run(void *ctx, int tau, int iter_start, const float *w_in, float *w_out,
                           const volatile int *cancel, mdl_trainer_stats *stats, mdl_error *err) {
  liar *l = ctx;
  mdl_status st = inner()->run(l->in, tau, iter_start, w_in, w_out, cancel, stats, err);
  if (st != MDL_OK || !l->lies) return st;
  if (!strcmp(l->what, "samples")) stats->samples = UINT64_MAX;
  if (!strcmp(l->what, "nan")) stats->loss_sum = NAN;
  return MDL_OK;
}

static mdl_status liar_test(void *ctx, int test_net, int batches, const float *w,
                            mdl_trainer_stats *stats, mdl_error *err) {
  liar *l = ctx;
  mdl_status st = inner()->test(l->in, test_net, batches, w, stats, err);
  if (st != MDL_OK) return st;
  int n = stats->n_outputs < 7 ? stats->n_outputs : 7;
  memcpy(l->outs, stats->outputs, (size_t)n * sizeof *l->outs);
  bool lie = l->lies && !strcmp(l->what, "accuracy");
  l->acc = (lie ? 1e6 : 0.5) * stats->iterations;
  l->outs[n] = (mdl_trainer_output){(char *)"accuracy", 1, &l->acc};
  stats->outputs = l->outs;
  stats->n_outputs = n + 1;
  return MDL_OK;
}

static mdl_status liar_get_state(void *ctx, uint8_t **buf, size_t *len, mdl_error *err) {
  return inner()->get_state(((liar *)ctx)->in, buf, len, err);
}

static mdl_status liar_set_state(void *ctx, const uint8_t *buf, size_t len, mdl_error *err) {
  return inner()->set_state(((liar *)ctx)->in, buf, len, err);
}

static uint64_t liar_batch_samples(void *ctx, Caffe__Phase phase) {
  return inner()->batch_samples(((liar *)ctx)->in, phase);
}

static bool liar_output_range(void *ctx, Caffe__Phase phase, const char *name, double *lo,
                              double *hi) {
  if (!strcmp(name, "accuracy")) {
    *lo = 0;
    *hi = 1;
    return true;
  }
  return inner()->output_range(((liar *)ctx)->in, phase, name, lo, hi);
}

const mdl_trainer_i mdl_trainer_liar = {
    .name = "liar",
    .lineages = liar_lineages,
    .create = liar_create,
    .destroy = liar_destroy,
    .param_count = liar_param_count,
    .init_weights = liar_init_weights,
    .add_partitions = liar_add,
    .remove_partition = liar_remove,
    .samples = liar_samples,
    .run = liar_run,
    .test = liar_test,
    .get_state = liar_get_state,
    .set_state = liar_set_state,
    .batch_samples = liar_batch_samples,
    .output_range = liar_output_range,
};
