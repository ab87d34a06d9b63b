/* The "linear" trainer: least squares y ~ w.x + b trained by Caffe's solvers
 * (runtime/solver/solver.h) on synthetic records that the plan describes. Small and
 * exact, so the distributed runtime's tests can check its maths (K workers
 * after one SGD step equal one worker on a K-times batch) without the net
 * engine. Not a model anyone trains for its own sake.
 *
 * Plan contract: data sets named "train" (required) and "test" (optional),
 * each with source.synthetic {shape (product D, the same for both), records
 * N, seed}, partitions P (0: one per worker), batch_size B (0: 1) and
 * partition_scheme. Record r of a data set with seed s has features
 * x[j] = 2u(s, r*D+j) - 1 and target y = t.x + t_D + 0.01(2u'(s, r) - 1),
 * where t[j] = 2u''(j) - 1 is the same for every data set and u are the
 * stateless hashes of common/rng.h. INTERLEAVE puts record r in partition
 * r % P; RANGE puts [p N / P, (p+1) N / P) in partition p. A worker's records
 * are its partitions' records, partitions sorted by index; the batch of
 * iteration i is records (i B + b) mod n, b < B, so the batches depend only on
 * the partitions and the iteration, never on the history of the process.
 *
 * With MDL_LINEAR_TRACE=path in its environment, each round appends one
 * line per record trained on to path: "worker iteration record partition"
 * (one write per round, O_APPEND, so worker processes may share the file):
 * what the fault tests compare to show that no partition's samples were
 * lost. */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/pb.h"
#include "common/rng.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/solver/solver.h"
#include "runtime/train/trainer.h"

#define STATE_MAGIC 0x4c4e5354u /* "LNST" */

typedef struct lin_set {
  char *name;
  uint64_t seed, records;
  uint32_t partitions, batch;
  int scheme;
  uint32_t *parts; /* partition indices held, sorted */
  int n_parts;
  uint64_t *ids; /* record ids, partition by partition */
  uint64_t n_ids;
  float *x, *y; /* features [n_ids x D] and targets, rebuilt from lineage */
} lin_set;

typedef struct lin {
  int worker; /* index in the run (-1 on the driver) */
  uint64_t d; /* features */
  uint64_t seed;
  lin_set train, test;
  bool has_test;
  mdl_solver *solver;
  float *grad;
  mdl_trainer_stats stats;
} lin;

static float unit2(uint64_t a, uint64_t b) {
  return 2.0f * mdl_hash_unit(mdl_hash2(a, b)) - 1.0f;
}

static const Memdl__DataSet *find_set(const Memdl__Plan *plan, const char *name) {
  for (size_t i = 0; i < plan->n_data; i++)
    if (plan->data[i]->name && !strcmp(plan->data[i]->name, name)) return plan->data[i];
  return NULL;
}

static mdl_status set_dims(const Memdl__DataSet *ds, uint64_t *d, mdl_error *err) {
  const Memdl__SyntheticSource *syn = ds->source ? ds->source->synthetic : NULL;
  if (!syn || syn->n_shape == 0)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "linear trainer: data set \"%s\" needs a synthetic source with a shape",
                      ds->name);
  uint64_t n = 1;
  for (size_t i = 0; i < syn->n_shape; i++) {
    if (syn->shape[i] == 0 || n > (UINT64_C(1) << 32) / syn->shape[i])
      return mdl_errorf(err, MDL_ERR_INVALID, "linear trainer: data set \"%s\": bad shape",
                        ds->name);
    n *= syn->shape[i];
  }
  if (syn->records == 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "linear trainer: data set \"%s\" has no records",
                      ds->name);
  *d = n;
  return MDL_OK;
}

static uint32_t set_partitions(const Memdl__DataSet *ds, int num_workers) {
  uint32_t p = ds->partitions ? ds->partitions : (uint32_t)(num_workers > 0 ? num_workers : 1);
  const Memdl__SyntheticSource *syn = ds->source->synthetic;
  if (p > syn->records) p = (uint32_t)syn->records;
  return p;
}

static mdl_status lin_lineages(const Memdl__Plan *plan, const char *base_dir, int num_workers,
                               Caffe__Phase phase, Memdl__PartitionLineage ***out, size_t *n,
                               mdl_error *err) {
  *out = NULL;
  *n = 0;
  const Memdl__DataSet *ds = find_set(plan, phase == CAFFE__PHASE__TRAIN ? "train" : "test");
  if (!ds) {
    if (phase == CAFFE__PHASE__TEST) return MDL_OK;
    return mdl_errorf(err, MDL_ERR_INVALID, "linear trainer: the plan has no \"train\" data set");
  }
  uint64_t d;
  mdl_status st = set_dims(ds, &d, err);
  if (st != MDL_OK) return st;
  uint32_t p = set_partitions(ds, num_workers);
  Memdl__PartitionLineage **l = mdl_xcalloc(p, sizeof *l);
  for (uint32_t i = 0; i < p; i++) {
    Memdl__PartitionLineage tmp = MEMDL__PARTITION_LINEAGE__INIT;
    tmp.data = (Memdl__DataSet *)ds;
    tmp.has_index = tmp.has_count = 1;
    tmp.index = i;
    tmp.count = p;
    tmp.base_dir = (char *)(base_dir ? base_dir : ".");
    l[i] = mdl_pb_dup(&tmp);
  }
  *out = l;
  *n = p;
  return MDL_OK;
}

static void set_free(lin_set *s) {
  free(s->name);
  free(s->parts);
  free(s->ids);
  free(s->x);
  free(s->y);
  memset(s, 0, sizeof *s);
}

static mdl_status set_init(lin_set *s, const Memdl__DataSet *ds, uint64_t d, int num_workers,
                           mdl_error *err) {
  uint64_t dd;
  mdl_status st = set_dims(ds, &dd, err);
  if (st != MDL_OK) return st;
  if (dd != d)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "linear trainer: data set \"%s\" has %llu features, \"train\" %llu", ds->name,
                      (unsigned long long)dd, (unsigned long long)d);
  s->name = mdl_xstrdup(ds->name);
  s->seed = ds->source->synthetic->seed;
  s->records = ds->source->synthetic->records;
  s->partitions = set_partitions(ds, num_workers);
  s->batch = ds->batch_size ? ds->batch_size : 1;
  s->scheme = ds->partition_scheme;
  return MDL_OK;
}

/* The target's true weights: the same for every data set. */
static float truth(uint64_t j) {
  return unit2(0x7a12c0ffee, j);
}

static mdl_status set_rebuild(lin_set *s, uint64_t d, mdl_error *err) {
  uint64_t n = 0;
  for (int k = 0; k < s->n_parts; k++) {
    uint32_t p = s->parts[k];
    if (s->scheme == MEMDL__DATA_SET__PARTITION_SCHEME__RANGE)
      n += s->records * (p + 1) / s->partitions - s->records * p / s->partitions;
    else
      n += s->records / s->partitions + (p < s->records % s->partitions ? 1 : 0);
  }
  free(s->ids);
  free(s->x);
  free(s->y);
  s->ids = NULL;
  s->x = s->y = NULL;
  s->n_ids = 0;
  if (n == 0) return MDL_OK;
  s->ids = malloc(n * sizeof *s->ids);
  s->x = malloc(n * d * sizeof *s->x);
  s->y = malloc(n * sizeof *s->y);
  if (!s->ids || !s->x || !s->y)
    return mdl_errorf(err, MDL_ERR_NOMEM, "linear trainer: %llu records of %llu features",
                      (unsigned long long)n, (unsigned long long)d);
  uint64_t k = 0;
  for (int q = 0; q < s->n_parts; q++) {
    uint32_t p = s->parts[q];
    if (s->scheme == MEMDL__DATA_SET__PARTITION_SCHEME__RANGE) {
      for (uint64_t r = s->records * p / s->partitions; r < s->records * (p + 1) / s->partitions;
           r++)
        s->ids[k++] = r;
    } else {
      for (uint64_t r = p; r < s->records; r += s->partitions) s->ids[k++] = r;
    }
  }
  for (uint64_t i = 0; i < n; i++) {
    uint64_t r = s->ids[i];
    float *x = s->x + i * d;
    double y = truth(d);
    for (uint64_t j = 0; j < d; j++) {
      x[j] = unit2(s->seed, r * d + j);
      y += (double)truth(j) * x[j];
    }
    s->y[i] = (float)(y + 0.01 * unit2(s->seed ^ 0x5eed, r));
  }
  s->n_ids = n;
  return MDL_OK;
}

static lin_set *phase_set(lin *l, Caffe__Phase phase) {
  if (phase == CAFFE__PHASE__TRAIN) return &l->train;
  return l->has_test ? &l->test : NULL;
}

static void lin_destroy(void *ctx) {
  lin *l = ctx;
  if (!l) return;
  set_free(&l->train);
  set_free(&l->test);
  mdl_solver_free(l->solver);
  free(l->grad);
  mdl_trainer_stats_clear(&l->stats);
  free(l);
}

static mdl_status lin_create(const Memdl__Plan *plan, const mdl_trainer_opts *o, void **out,
                             mdl_error *err) {
  *out = NULL;
  if (o->device && strcmp(o->device, "cpu"))
    return mdl_errorf(err, MDL_ERR_INVALID, "linear trainer: runs on cpu only, not %s", o->device);
  if (!plan->solver) return mdl_errorf(err, MDL_ERR_INVALID, "linear trainer: plan has no solver");
  const Memdl__DataSet *tr = find_set(plan, "train");
  if (!tr)
    return mdl_errorf(err, MDL_ERR_INVALID, "linear trainer: the plan has no \"train\" data set");
  lin *l = mdl_xcalloc(1, sizeof *l);
  l->worker = o->worker_index;
  l->seed = o->seed;
  mdl_status st = set_dims(tr, &l->d, err);
  if (st == MDL_OK) st = set_init(&l->train, tr, l->d, o->num_workers, err);
  const Memdl__DataSet *te = find_set(plan, "test");
  if (st == MDL_OK && te) {
    l->has_test = true;
    st = set_init(&l->test, te, l->d, o->num_workers, err);
  }
  if (st == MDL_OK) {
    mdl_solver_blob blobs[2] = {
        {.offset = 0,
         .count = l->d,
         .lr_mult = 1,
         .decay_mult = 1,
         .n_axes = 2,
         .dim = {1, (int64_t)l->d}},
        {.offset = l->d, .count = 1, .lr_mult = 1, .decay_mult = 1, .n_axes = 1, .dim = {1}},
    };
    st = mdl_solver_new(mdl_cpu_backend(), plan->solver, blobs, 2, l->d + 1, &l->solver, err);
  }
  if (st == MDL_OK) {
    l->grad = malloc((l->d + 1) * sizeof *l->grad);
    if (!l->grad) st = mdl_errorf(err, MDL_ERR_NOMEM, "linear trainer: gradient buffer");
  }
  if (st != MDL_OK) {
    lin_destroy(l);
    return st;
  }
  *out = l;
  return MDL_OK;
}

static size_t lin_param_count(void *ctx) {
  return ((lin *)ctx)->d + 1;
}

static mdl_status lin_init_weights(void *ctx, float *w, mdl_error *err) {
  lin *l = ctx;
  for (uint64_t j = 0; j < l->d; j++) w[j] = 0.1f * unit2(l->seed, j);
  w[l->d] = 0;
  return MDL_OK;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static mdl_status lin_add(void *ctx, Caffe__Phase phase, Memdl__PartitionLineage *const *parts,
                          size_t n, mdl_error *err) {
  lin *l = ctx;
  lin_set *s = phase_set(l, phase);
  if (!s && n) return mdl_errorf(err, MDL_ERR_INVALID, "linear trainer: no test data set");
  if (!n) return MDL_OK;
  for (size_t i = 0; i < n; i++) {
    const Memdl__PartitionLineage *p = parts[i];
    if (!p->data || !p->data->name || strcmp(p->data->name, s->name))
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "linear trainer: partition of data set \"%s\", "
                        "expected \"%s\"",
                        p->data && p->data->name ? p->data->name : "", s->name);
    if (p->index >= s->partitions || p->count != s->partitions)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "linear trainer: partition %u of %u, the data set has %u", p->index,
                        p->count, s->partitions);
    for (int k = 0; k < s->n_parts; k++)
      if (s->parts[k] == p->index)
        return mdl_errorf(err, MDL_ERR_INVALID, "linear trainer: partition %u held twice",
                          p->index);
    s->parts = mdl_xrealloc(s->parts, (size_t)(s->n_parts + 1) * sizeof *s->parts);
    s->parts[s->n_parts++] = p->index;
  }
  qsort(s->parts, (size_t)s->n_parts, sizeof *s->parts, cmp_u32);
  return set_rebuild(s, l->d, err);
}

static mdl_status lin_remove(void *ctx, Caffe__Phase phase, const char *data, uint32_t index,
                             mdl_error *err) {
  lin *l = ctx;
  lin_set *s = phase_set(l, phase);
  if (s)
    for (int k = 0; k < s->n_parts; k++)
      if (s->parts[k] == index && !strcmp(data, s->name)) {
        memmove(s->parts + k, s->parts + k + 1, (size_t)(s->n_parts - k - 1) * sizeof *s->parts);
        s->n_parts--;
        return set_rebuild(s, l->d, err);
      }
  return mdl_errorf(err, MDL_ERR_INVALID, "linear trainer: partition %s/%u is not held", data,
                    index);
}

static uint64_t lin_samples(void *ctx, Caffe__Phase phase) {
  lin_set *s = phase_set(ctx, phase);
  return s ? s->n_ids : 0;
}

static void stats_loss(mdl_trainer_stats *st, double loss) {
  if (!st->n_outputs) {
    st->outputs = mdl_xcalloc(1, sizeof *st->outputs);
    st->outputs[0].name = mdl_xstrdup("loss");
    st->outputs[0].n = 1;
    st->outputs[0].sum = mdl_xcalloc(1, sizeof(double));
    st->n_outputs = 1;
  }
  st->outputs[0].sum[0] += loss;
}

/* Mean squared half-error of a batch; with grad, its gradient too. */
static double batch_pass(const lin *l, const lin_set *s, uint64_t first, uint32_t count,
                         const float *w, float *grad) {
  uint64_t d = l->d;
  if (grad) memset(grad, 0, (d + 1) * sizeof *grad);
  double loss = 0;
  for (uint32_t b = 0; b < count; b++) {
    uint64_t i = (first + b) % s->n_ids;
    const float *x = s->x + i * d;
    float pred = w[d];
    for (uint64_t j = 0; j < d; j++) pred += w[j] * x[j];
    float e = pred - s->y[i];
    loss += 0.5 * (double)e * e;
    if (grad) {
      float g = e / (float)count;
      for (uint64_t j = 0; j < d; j++) grad[j] += g * x[j];
      grad[d] += g;
    }
  }
  return loss / count;
}

/* The partition record id belongs to. */
static uint32_t partition_of(const lin_set *s, uint64_t id) {
  if (s->scheme != MEMDL__DATA_SET__PARTITION_SCHEME__RANGE) return (uint32_t)(id % s->partitions);
  uint32_t p = (uint32_t)(id * s->partitions / s->records);
  while (p > 0 && id < s->records * p / s->partitions) p--;
  while (p + 1 < s->partitions && id >= s->records * (p + 1) / s->partitions) p++;
  return p;
}

/* Appends the records of iterations [iter_start, iter_start + tau) to the
 * MDL_LINEAR_TRACE file, if any. */
static void trace_round(const lin *l, int iter_start, int tau) {
  const char *path = getenv("MDL_LINEAR_TRACE");
  if (!path || !*path) return;
  const lin_set *s = &l->train;
  size_t cap = (size_t)tau * s->batch * 64 + 1, len = 0;
  char *buf = mdl_xmalloc(cap);
  for (int it = 0; it < tau; it++) {
    uint64_t first = ((uint64_t)(iter_start + it) * s->batch) % s->n_ids;
    for (uint32_t b = 0; b < s->batch; b++) {
      uint64_t id = s->ids[(first + b) % s->n_ids];
      len += (size_t)snprintf(buf + len, cap - len, "%d %d %llu %u\n", l->worker, iter_start + it,
                              (unsigned long long)id, partition_of(s, id));
    }
  }
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (fd >= 0) {
    if (write(fd, buf, len) != (ssize_t)len) abort(); /* test scaffolding: a short trace lies */
    close(fd);
  }
  free(buf);
}

static mdl_status lin_run(void *ctx, int tau, int iter_start, const float *w_in, float *w_out,
                          const volatile int *cancel, mdl_trainer_stats *stats, mdl_error *err) {
  lin *l = ctx;
  double t0 = mdl_now();
  mdl_trainer_stats_clear(&l->stats);
  if (l->train.n_ids == 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "linear trainer: no training partitions");
  if (w_out != w_in) memcpy(w_out, w_in, (l->d + 1) * sizeof *w_out);
  /* Caffe's multistep position at iter_start: stepvalues already passed */
  const mdl_solver_config *cfg = mdl_solver_cfg(l->solver);
  int step = 0;
  if (cfg->policy == MDL_LR_MULTISTEP)
    while (step < cfg->n_stepvalue && cfg->stepvalue[step] < iter_start) step++;
  mdl_solver_set_position(l->solver, iter_start, step);
  uint32_t bsz = l->train.batch;
  for (int it = 0; it < tau; it++) {
    if (cancel && *cancel) return mdl_errorf(err, MDL_ERR_INTERNAL, "cancelled");
    uint64_t first = ((uint64_t)(iter_start + it) * bsz) % l->train.n_ids;
    double loss = batch_pass(l, &l->train, first, bsz, w_out, l->grad);
    mdl_solver_update(l->solver, w_out, l->grad);
    l->stats.loss_sum += loss;
    l->stats.samples += bsz;
    l->stats.iterations++;
    stats_loss(&l->stats, loss);
  }
  trace_round(l, iter_start, tau);
  l->stats.compute_s = mdl_now() - t0;
  *stats = l->stats;
  return MDL_OK;
}

static mdl_status lin_test(void *ctx, int test_net, int batches, const float *w,
                           mdl_trainer_stats *stats, mdl_error *err) {
  lin *l = ctx;
  double t0 = mdl_now();
  mdl_trainer_stats_clear(&l->stats);
  if (test_net != 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "linear trainer: one test net, not %d", test_net + 1);
  const lin_set *s = l->has_test ? &l->test : NULL;
  if (s && s->n_ids) {
    uint32_t bsz = s->batch;
    uint64_t nb = batches > 0 ? (uint64_t)batches : (s->n_ids + bsz - 1) / bsz;
    for (uint64_t k = 0; k < nb; k++) {
      uint64_t first = k * bsz;
      uint32_t count = bsz;
      if (batches <= 0 && first + count > s->n_ids) count = (uint32_t)(s->n_ids - first);
      stats_loss(&l->stats, batch_pass(l, s, first % s->n_ids, count, w, NULL));
      l->stats.samples += count;
      l->stats.iterations++;
    }
  }
  l->stats.compute_s = mdl_now() - t0;
  *stats = l->stats;
  return MDL_OK;
}

static mdl_status lin_get_state(void *ctx, uint8_t **buf, size_t *len, mdl_error *err) {
  lin *l = ctx;
  int sets = mdl_solver_history_sets(l->solver);
  size_t total = mdl_solver_total(l->solver);
  size_t n = 12 + (size_t)sets * total * sizeof(float);
  uint8_t *b = malloc(n);
  if (!b) return mdl_errorf(err, MDL_ERR_NOMEM, "linear trainer: state of %zu bytes", n);
  uint32_t hdr[3] = {STATE_MAGIC, (uint32_t)sets, (uint32_t)total};
  memcpy(b, hdr, 12);
  for (int k = 0; k < sets; k++)
    memcpy(b + 12 + (size_t)k * total * sizeof(float), mdl_solver_history(l->solver, k),
           total * sizeof(float));
  *buf = b;
  *len = n;
  return MDL_OK;
}

static mdl_status lin_set_state(void *ctx, const uint8_t *buf, size_t len, mdl_error *err) {
  lin *l = ctx;
  int sets = mdl_solver_history_sets(l->solver);
  size_t total = mdl_solver_total(l->solver);
  uint32_t hdr[3];
  if (len < 12) return mdl_errorf(err, MDL_ERR_INVALID, "linear trainer: state too short");
  memcpy(hdr, buf, 12);
  if (hdr[0] != STATE_MAGIC || hdr[1] != (uint32_t)sets || hdr[2] != total ||
      len != 12 + (size_t)sets * total * sizeof(float))
    return mdl_errorf(err, MDL_ERR_INVALID, "linear trainer: state does not match the model");
  for (int k = 0; k < sets; k++)
    memcpy(mdl_solver_history(l->solver, k), buf + 12 + (size_t)k * total * sizeof(float),
           total * sizeof(float));
  return MDL_OK;
}

static uint64_t lin_batch_samples(void *ctx, Caffe__Phase phase) {
  lin_set *s = phase_set(ctx, phase);
  return s ? s->batch : 0;
}

/* The loss is a mean squared half-error: never negative. */
static bool lin_output_range(void *ctx, Caffe__Phase phase, const char *name, double *lo,
                             double *hi) {
  if (strcmp(name, "loss")) return false;
  *lo = 0;
  *hi = INFINITY;
  return true;
}

const mdl_trainer_i mdl_trainer_linear = {
    .name = "linear",
    .lineages = lin_lineages,
    .create = lin_create,
    .destroy = lin_destroy,
    .param_count = lin_param_count,
    .init_weights = lin_init_weights,
    .add_partitions = lin_add,
    .remove_partition = lin_remove,
    .samples = lin_samples,
    .run = lin_run,
    .test = lin_test,
    .get_state = lin_get_state,
    .set_state = lin_set_state,
    .batch_samples = lin_batch_samples,
    .output_range = lin_output_range,
};
