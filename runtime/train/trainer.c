/* The trainer seam: backend lookup by name and thin dispatch (see
 * trainer.h). Backends live in trainer_<name>.c. */
#include "runtime/train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pb.h"
#include "runtime/data/dataset.h"

/* An explicit table, not weak or self-registering symbols: those vanish
 * from static links (the "net" backend did, from the memdl binary). The
 * product offers only "net"; test binaries pass tables of their own. */
static const mdl_trainer_i *const product_trainers[] = {&mdl_trainer_net};
static const mdl_trainer_table product_table = {product_trainers, 1};

const mdl_trainer_table *mdl_trainer_table_default(void) {
  return &product_table;
}

const mdl_trainer_i *mdl_trainer_find(const mdl_trainer_table *table, const char *name,
                                      mdl_error *err) {
  if (!table) table = &product_table;
  char known[128] = "";
  for (size_t i = 0; i < table->n; i++) {
    const mdl_trainer_i *b = table->v[i];
    if (name && !strcmp(name, b->name)) return b;
    size_t n = strlen(known);
    snprintf(known + n, sizeof known - n, "%s%s", n ? ", " : "", b->name);
  }
  mdl_errorf(err, MDL_ERR_INVALID, "unknown trainer \"%s\" (known: %s)", name ? name : "", known);
  return NULL;
}

mdl_status mdl_trainer_new(const mdl_trainer_table *table, const char *name,
                           const Memdl__Plan *plan, const mdl_trainer_opts *o, mdl_trainer **out,
                           mdl_error *err) {
  *out = NULL;
  const mdl_trainer_i *b = mdl_trainer_find(table, name, err);
  if (!b) return MDL_ERR_INVALID;
  void *ctx = NULL;
  mdl_status st = b->create(plan, o, &ctx, err);
  if (st != MDL_OK) return st;
  mdl_trainer *t = mdl_xcalloc(1, sizeof *t);
  t->iface = b;
  t->ctx = ctx;
  *out = t;
  return MDL_OK;
}

void mdl_trainer_free(mdl_trainer *t) {
  if (!t) return;
  t->iface->destroy(t->ctx);
  free(t);
}

size_t mdl_trainer_param_count(const mdl_trainer *t) {
  return t->iface->param_count(t->ctx);
}

mdl_status mdl_trainer_init_weights(mdl_trainer *t, float *w, mdl_error *err) {
  return t->iface->init_weights(t->ctx, w, err);
}

mdl_status mdl_trainer_add_partitions(mdl_trainer *t, Caffe__Phase phase,
                                      Memdl__PartitionLineage *const *parts, size_t n,
                                      mdl_error *err) {
  return t->iface->add_partitions(t->ctx, phase, parts, n, err);
}

mdl_status mdl_trainer_remove_partition(mdl_trainer *t, Caffe__Phase phase, const char *data,
                                        uint32_t index, mdl_error *err) {
  return t->iface->remove_partition(t->ctx, phase, data, index, err);
}

uint64_t mdl_trainer_samples(const mdl_trainer *t, Caffe__Phase phase) {
  return t->iface->samples(t->ctx, phase);
}

mdl_status mdl_trainer_run(mdl_trainer *t, int tau, int iter_start, const float *w_in, float *w_out,
                           const volatile int *cancel, mdl_trainer_stats *stats, mdl_error *err) {
  return t->iface->run(t->ctx, tau, iter_start, w_in, w_out, cancel, stats, err);
}

mdl_status mdl_trainer_test(mdl_trainer *t, int test_net, int batches, const float *w,
                            mdl_trainer_stats *stats, mdl_error *err) {
  return t->iface->test(t->ctx, test_net, batches, w, stats, err);
}

mdl_status mdl_trainer_get_state(mdl_trainer *t, uint8_t **buf, size_t *len, mdl_error *err) {
  return t->iface->get_state(t->ctx, buf, len, err);
}

mdl_status mdl_trainer_set_state(mdl_trainer *t, const uint8_t *buf, size_t len, mdl_error *err) {
  return t->iface->set_state(t->ctx, buf, len, err);
}

uint64_t mdl_trainer_batch_samples(const mdl_trainer *t, Caffe__Phase phase) {
  return t->iface->batch_samples ? t->iface->batch_samples(t->ctx, phase) : 0;
}

bool mdl_trainer_output_range(const mdl_trainer *t, Caffe__Phase phase, const char *name,
                              double *lo, double *hi) {
  return t->iface->output_range && t->iface->output_range(t->ctx, phase, name, lo, hi);
}

bool mdl_trainer_find_nonfinite(const mdl_trainer *t, const float *w, char *where, size_t n) {
  size_t count = mdl_trainer_param_count(t), k = 0;
  while (k < count && isfinite(w[k])) k++; /* the common case: one fast pass, no copy */
  if (k == count) return false;
  if (t->iface->find_nonfinite && t->iface->find_nonfinite(t->ctx, w, where, n)) return true;
  snprintf(where, n, "parameter %zu of %zu is %s", k, count,
           isnan(w[k]) ? "nan"
           : w[k] > 0  ? "+inf"
                       : "-inf");
  return true;
}

mdl_status mdl_trainer_check_average(const mdl_trainer *t, const float *w, const char *when,
                                     mdl_error *err) {
  char where[400];
  if (!mdl_trainer_find_nonfinite(t, w, where, sizeof where)) return MDL_OK;
  return mdl_errorf(err, MDL_ERR_DIVERGED,
                    "training diverged %s: the averaged weights are not finite: %s (try a smaller "
                    "base_lr or clip_gradients)",
                    when, where);
}

mdl_status mdl_trainer_save(mdl_trainer *t, const float *w, const char *path, mdl_error *err) {
  return t->iface->save ? t->iface->save(t->ctx, w, path, err) : MDL_OK;
}

mdl_status mdl_trainer_load(mdl_trainer *t, float *w, const char *path, mdl_error *err) {
  if (!t->iface->load)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: the %s backend reads no model files", path,
                      t->iface->name);
  return t->iface->load(t->ctx, w, path, err);
}

bool mdl_trainer_can_save(const mdl_trainer *t) {
  return t->iface->save != NULL;
}

mdl_status mdl_trainer_lineages(const mdl_trainer_table *table, const char *name,
                                const Memdl__Plan *plan, const char *base_dir, int num_workers,
                                Caffe__Phase phase, Memdl__PartitionLineage ***out, size_t *n,
                                mdl_error *err) {
  *out = NULL;
  *n = 0;
  const mdl_trainer_i *b = mdl_trainer_find(table, name, err);
  if (!b) return MDL_ERR_INVALID;
  return b->lineages(plan, base_dir, num_workers, phase, out, n, err);
}

void mdl_trainer_lineages_free(Memdl__PartitionLineage **l, size_t n) {
  if (!l) return;
  for (size_t i = 0; i < n; i++) mdl_pb_free(l[i]);
  free(l);
}

void mdl_trainer_stats_clear(mdl_trainer_stats *s) {
  for (int i = 0; i < s->n_outputs; i++) {
    free(s->outputs[i].name);
    free(s->outputs[i].sum);
  }
  free(s->outputs);
  memset(s, 0, sizeof *s);
}

mdl_status mdl_plan_set_train_batch(Memdl__Plan *plan, uint32_t batch, mdl_error *err) {
  Caffe__NetParameter *net = NULL;
  for (size_t i = 0; i < plan->n_net && !net; i++)
    if (plan->net[i]->phase == CAFFE__PHASE__TRAIN) net = plan->net[i]->net;
  for (size_t i = 0; net && i < net->n_layer; i++) {
    Caffe__LayerParameter *l = net->layer[i];
    if (!mdl_data_is_pipeline_layer(l)) continue;
    uint32_t *field = l->data_param          ? &l->data_param->batch_size
                      : l->image_data_param  ? &l->image_data_param->batch_size
                      : l->hdf5_data_param   ? &l->hdf5_data_param->batch_size
                      : l->memory_data_param ? &l->memory_data_param->batch_size
                                             : NULL;
    if (!field) break;
    *field = batch;
    return MDL_OK;
  }
  return mdl_errorf(err, MDL_ERR_INVALID,
                    "a batch share of %u: the plan's TRAIN net has no data layer whose batch could "
                    "be set",
                    batch);
}
