/* The seam between the distributed runtime and a training engine: what a
 * worker needs to run tau solver iterations on its own partitions and what
 * the driver needs to initialise weights and assign partitions. Backends sit
 * behind a small vtable, chosen by name from a table: the product's has only
 * "net" (the engine of runtime/engine/net.h); test binaries add their own
 * (tests/trainer_linear.c). Owns no transport. */
#ifndef MDL_RUNTIME_TRAINER_H
#define MDL_RUNTIME_TRAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caffe.pb-c.h"
#include "common/error.h"
#include "data.pb-c.h"
#include "plan.pb-c.h"

typedef struct mdl_trainer_opts {
  const char *device; /* "cpu", "cuda", "cuda:N"; NULL: cpu */
  int threads;        /* 0: one per core */
  uint64_t seed;      /* weight initialisation and random stages */
  int worker_index;   /* -1 on the driver */
  int num_workers;
  const char *base_dir; /* where the plan's relative data paths resolve; NULL: "." */
} mdl_trainer_opts;

/* A named output's sums (one per element of the output blob). */
typedef struct mdl_trainer_output {
  char *name;
  int n;
  double *sum;
} mdl_trainer_output;

/* What a round or a test pass produced. Owned by the trainer until its next
 * call of the same kind. */
typedef struct mdl_trainer_stats {
  uint64_t samples; /* samples processed */
  int iterations;   /* train: solver iterations done; test: batches */
  double loss_sum;  /* train: sum over iterations of the loss */
  double compute_s; /* seconds spent computing */
  int n_outputs;
  mdl_trainer_output *outputs; /* train: per iteration, summed; test: per batch, summed */
} mdl_trainer_stats;

typedef struct mdl_trainer_i {
  const char *name;
  /* Every partition (as lineage) of the data the phase reads, in a fixed
   * order, for a run on num_workers workers. *out is an array of
   * mdl_pb_dup'ed lineages, the caller's (mdl_trainer_lineages_free). */
  mdl_status (*lineages)(const Memdl__Plan *plan, const char *base_dir, int num_workers,
                         Caffe__Phase phase, Memdl__PartitionLineage ***out, size_t *n,
                         mdl_error *err);
  mdl_status (*create)(const Memdl__Plan *plan, const mdl_trainer_opts *o, void **ctx,
                       mdl_error *err);
  void (*destroy)(void *ctx);
  size_t (*param_count)(void *ctx);
  mdl_status (*init_weights)(void *ctx, float *w, mdl_error *err);
  mdl_status (*add_partitions)(void *ctx, Caffe__Phase phase, Memdl__PartitionLineage *const *parts,
                               size_t n, mdl_error *err);
  mdl_status (*remove_partition)(void *ctx, Caffe__Phase phase, const char *data, uint32_t index,
                                 mdl_error *err);
  uint64_t (*samples)(void *ctx, Caffe__Phase phase);
  mdl_status (*run)(void *ctx, int tau, int iter_start, const float *w_in, float *w_out,
                    const volatile int *cancel, mdl_trainer_stats *stats, mdl_error *err);
  mdl_status (*test)(void *ctx, int test_net, int batches, const float *w, mdl_trainer_stats *stats,
                     mdl_error *err);
  mdl_status (*get_state)(void *ctx, uint8_t **buf, size_t *len, mdl_error *err);
  mdl_status (*set_state)(void *ctx, const uint8_t *buf, size_t len, mdl_error *err);
  /* Writes weights w as the backend's model file (NULL: it has none). */
  mdl_status (*save)(void *ctx, const float *w, const char *path, mdl_error *err);
  /* Optional: fine-tuning. Reads a model file into w, layer by name; the
   * parameters it does not name keep w's values. Refuses non-finite ones. */
  mdl_status (*load)(void *ctx, float *w, const char *path, mdl_error *err);
  /* Optional (NULL: unknown). The samples one solver iteration (TRAIN) or
   * one test batch (TEST) takes on one worker; 0: unknown. The driver
   * bounds what workers report by it. */
  uint64_t (*batch_samples)(void *ctx, Caffe__Phase phase);
  /* Optional (NULL: none known). Whether the scalar output `name` of the
   * phase lies in [*lo, *hi] for every iteration or batch (an accuracy's
   * [0, 1]), so sums over n of them lie in [n lo, n hi]. */
  bool (*output_range)(void *ctx, Caffe__Phase phase, const char *name, double *lo, double *hi);
  /* Optional (NULL: the flat index is named). Where the first NaN or
   * infinity of weights w lies, in the backend's terms (a layer and blob),
   * written into where; false when w is finite. */
  bool (*find_nonfinite)(void *ctx, const float *w, char *where, size_t n);
} mdl_trainer_i;

typedef struct mdl_trainer {
  const mdl_trainer_i *iface;
  void *ctx;
} mdl_trainer;

/* The trainers a process offers, looked up by name. */
typedef struct mdl_trainer_table {
  const mdl_trainer_i *const *v;
  size_t n;
} mdl_trainer_table;

/* The product's table: "net" only. */
const mdl_trainer_table *mdl_trainer_table_default(void);

/* The backend called name in table (NULL: the product's), or NULL with err
 * listing the known ones. */
const mdl_trainer_i *mdl_trainer_find(const mdl_trainer_table *table, const char *name,
                                      mdl_error *err);

/* A trainer of the named backend for plan (no partitions yet). On success
 * *out is the caller's (mdl_trainer_free); on failure *out is NULL. */
mdl_status mdl_trainer_new(const mdl_trainer_table *table, const char *name,
                           const Memdl__Plan *plan, const mdl_trainer_opts *o, mdl_trainer **out,
                           mdl_error *err);
void mdl_trainer_free(mdl_trainer *t);

/* Makes plan's TRAIN net read batch samples per iteration (its pipeline
 * data layer's batch_size): a worker's share of the global batch when the
 * driver balances shares by speed. Shapes follow when the net is built.
 * Fails (plan unchanged) when the TRAIN net has no pipeline data layer. */
mdl_status mdl_plan_set_train_batch(Memdl__Plan *plan, uint32_t batch, mdl_error *err);

size_t mdl_trainer_param_count(const mdl_trainer *t);

/* The initial weights (fillers, seeded by opts.seed): the same bits on the
 * driver and on every worker. w holds param_count floats. */
mdl_status mdl_trainer_init_weights(mdl_trainer *t, float *w, mdl_error *err);

/* Adds partitions for phase (TRAIN or TEST), rebuilding them from lineage. */
mdl_status mdl_trainer_add_partitions(mdl_trainer *t, Caffe__Phase phase,
                                      Memdl__PartitionLineage *const *parts, size_t n,
                                      mdl_error *err);
mdl_status mdl_trainer_remove_partition(mdl_trainer *t, Caffe__Phase phase, const char *data,
                                        uint32_t index, mdl_error *err);
uint64_t mdl_trainer_samples(const mdl_trainer *t, Caffe__Phase phase);

/* tau solver iterations starting at schedule position iter_start, from
 * w_in; the result goes to w_out (w_in may equal w_out). The optimiser
 * history stays in the trainer across calls. Stops early (MDL_ERR_INTERNAL,
 * "cancelled") when *cancel becomes nonzero. stats is owned by t. */
mdl_status mdl_trainer_run(mdl_trainer *t, int tau, int iter_start, const float *w_in, float *w_out,
                           const volatile int *cancel, mdl_trainer_stats *stats, mdl_error *err);

/* TEST phase of test net test_net on the trainer's test partitions:
 * `batches` batches (0: each partition once), outputs summed over batches. */
mdl_status mdl_trainer_test(mdl_trainer *t, int test_net, int batches, const float *w,
                            mdl_trainer_stats *stats, mdl_error *err);

/* The optimiser state (history), to snapshot and restore. *buf is the
 * caller's (free). */
mdl_status mdl_trainer_get_state(mdl_trainer *t, uint8_t **buf, size_t *len, mdl_error *err);
mdl_status mdl_trainer_set_state(mdl_trainer *t, const uint8_t *buf, size_t len, mdl_error *err);

/* See mdl_trainer_i.batch_samples and output_range: 0 and false when the
 * backend does not say. */
uint64_t mdl_trainer_batch_samples(const mdl_trainer *t, Caffe__Phase phase);
bool mdl_trainer_output_range(const mdl_trainer *t, Caffe__Phase phase, const char *name,
                              double *lo, double *hi);

/* Whether weights w (param_count floats) hold a NaN or infinity: false when
 * they are all finite, else true with where naming the first (the layer and
 * blob when the backend can say, else its index). The driver's check of the
 * averaged weights, with the single-worker run's wording. */
bool mdl_trainer_find_nonfinite(const mdl_trainer *t, const float *w, char *where, size_t n);

/* The check every holder of an averaged w runs (driver, fetch, peer
 * members): MDL_OK when it is finite, else MDL_ERR_DIVERGED, "training
 * diverged <when>: the averaged weights are not finite: <where>" with the
 * single-worker run's advice. when: e.g. "by iteration 40 (round 8)". */
mdl_status mdl_trainer_check_average(const mdl_trainer *t, const float *w, const char *when,
                                     mdl_error *err);

/* Writes w as a model file (.caffemodel for "net"). MDL_OK without writing
 * anything for backends that have no file format. */
mdl_status mdl_trainer_save(mdl_trainer *t, const float *w, const char *path, mdl_error *err);
bool mdl_trainer_can_save(const mdl_trainer *t);
/* Reads a model file into w (see mdl_trainer_i.load); MDL_ERR_INVALID when
 * the backend reads none. */
mdl_status mdl_trainer_load(mdl_trainer *t, float *w, const char *path, mdl_error *err);

mdl_status mdl_trainer_lineages(const mdl_trainer_table *table, const char *name,
                                const Memdl__Plan *plan, const char *base_dir, int num_workers,
                                Caffe__Phase phase, Memdl__PartitionLineage ***out, size_t *n,
                                mdl_error *err);
void mdl_trainer_lineages_free(Memdl__PartitionLineage **l, size_t n);

/* Frees the outputs of stats and zeroes it. */
void mdl_trainer_stats_clear(mdl_trainer_stats *s);

/* The engine's trainer (runtime/train/trainer_net.c). */
extern const mdl_trainer_i mdl_trainer_net;

#endif
