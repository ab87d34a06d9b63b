/* In-memory data sets: immutable partitions built from a lineage (a DataSet
 * message, a partition index and count), the batch-time transform, and the
 * batcher that feeds a trainer. Also maps Caffe's data layers onto DataSets.
 * Owns reading sources, cleaning and transforming records; not training, not
 * moving partitions between workers (they rebuild from lineage instead).
 *
 * Build order for one partition, in a single fused pass over the source:
 *   select (partition, split, sample: by a hash of the record index, before
 *   decoding) -> decode -> resize -> clean -> append to compact storage.
 * Scale, mean and normalize are affine and fold into one multiply-add that
 * the batcher applies while converting to float; crop and mirror are applied
 * per batch (random in TRAIN, centred crop in TEST, as Caffe). */
#ifndef MDL_RUNTIME_DATASET_H
#define MDL_RUNTIME_DATASET_H

#include <stdbool.h>
#include <stdint.h>

#include "caffe.pb-c.h"
#include "common/error.h"
#include "data.pb-c.h"

typedef enum mdl_dtype {
  MDL_DTYPE_U8 = 1,  /* stored as the source gave it (IDX ubyte, Datum data, images) */
  MDL_DTYPE_F32 = 2, /* everything else (CSV, float_data, IDX of other types) */
} mdl_dtype;

typedef enum mdl_drop_reason {
  MDL_DROP_SHAPE = 0, /* shape differs from the data set's */
  MDL_DROP_LABEL,     /* negative, or not below clean.num_classes */
  MDL_DROP_NONFINITE, /* NaN or infinity among the values */
  MDL_DROP_COUNT
} mdl_drop_reason;

/* "shape", "label", "nonfinite". */
const char *mdl_drop_reason_name(mdl_drop_reason r);

/* What the source's headers say, read without loading the records. */
typedef struct mdl_data_info {
  mdl_dtype dtype;
  int channels, height, width; /* per stored record: after decode and resize */
  int64_t records;             /* in the source, before split/sample/clean */
  int64_t selected;            /* expected after split/sample (an estimate) */
  int num_classes;             /* 0 when only reading every record would tell */
  uint64_t bytes;              /* expected storage of the whole data set */
  int crop;                    /* transform crop_size (0: none): batches are C x crop x crop */
} mdl_data_info;

/* Probes ds's source (relative paths against base_dir, which may be NULL for
 * the working directory) and checks its stages. Reads headers (an IDX header
 * and its label file, LMDB statistics and first record, list and CSV line
 * counts), never every record. Errors name the file: MDL_ERR_INVALID. */
mdl_status mdl_data_probe(const Memdl__DataSet *ds, const char *base_dir, mdl_data_info *info,
                          mdl_error *err);

/* One immutable partition. Read-only for users; built and freed here. */
typedef struct mdl_partition {
  uint32_t index, count; /* which partition of how many */
  mdl_dtype dtype;
  int channels, height, width;
  int64_t n;                       /* records held */
  void *data;                      /* n x C x H x W, uint8_t or float as dtype says */
  int32_t *label;                  /* n */
  int64_t *record;                 /* n: each record's index in the source */
  int num_classes;                 /* clean.num_classes when set, else max label + 1 */
  int64_t *class_count;            /* num_classes entries */
  int64_t scanned;                 /* source records dealt to this partition */
  int64_t filtered;                /* of those, left out by split/sample */
  int64_t dropped[MDL_DROP_COUNT]; /* of those, dropped by clean, by reason */
  float vmin, vmax;                /* range of stored values (0, 0 when empty) */
  uint64_t bytes;                  /* data + labels + record indices */
  int passes;                      /* passes over the source during build: 1 when fused */
  double build_ms;
} mdl_partition;

typedef struct mdl_build_opts {
  uint64_t memory_budget_bytes; /* 0 = no limit; checked before loading */
} mdl_build_opts;

/* Builds partition lineage->index of lineage->count (count 0 means 1) from
 * the lineage alone: same lineage, same bits, on any machine. opts may be
 * NULL. On success *out is owned by the caller (mdl_partition_free). On
 * failure *out is NULL, nothing is kept, and err names the file and record:
 * MDL_ERR_INVALID for bad input, MDL_ERR_NOMEM when the estimate exceeds the
 * budget (before anything is loaded) or memory runs out. */
mdl_status mdl_partition_build(const Memdl__PartitionLineage *lineage, const mdl_build_opts *opts,
                               mdl_partition **out, mdl_error *err);

/* NULL-safe. */
void mdl_partition_free(mdl_partition *p);

/* A new lineage (deep copy of ds) for partition index of count, owned by
 * the caller (free with mdl_pb_free or protobuf_c_message_free_unpacked). */
Memdl__PartitionLineage *mdl_lineage_new(const Memdl__DataSet *ds, uint32_t index, uint32_t count,
                                         const char *base_dir);

/* The batch-time transform: the affine map folded from transform
 * (scale, mean_value, mean_file) and normalize stages, plus crop and
 * mirror. Opaque; immutable once built, so batchers may share it. */
typedef struct mdl_transform mdl_transform;

/* Compiles ds's stages for records of C x H x W (as stored). mean_file is
 * read relative to base_dir and must match C x H x W. On success *out is
 * owned by the caller (mdl_transform_free); on failure *out is NULL. */
mdl_status mdl_transform_new(const Memdl__DataSet *ds, const char *base_dir, int channels,
                             int height, int width, mdl_transform **out, mdl_error *err);

void mdl_transform_free(mdl_transform *t);

/* Shape of one transformed record (C x crop x crop when cropping). */
void mdl_transform_out_shape(const mdl_transform *t, int *channels, int *height, int *width);

/* Bounds of transformed values for stored values in [vmin, vmax]. */
void mdl_transform_range(const mdl_transform *t, float vmin, float vmax, float *lo, float *hi);

/* A whole data set: its partitions and its transform. */
typedef struct mdl_dataset {
  char *name;
  uint32_t n_parts;
  mdl_partition **part;
  mdl_transform *transform;
  /* Totals over the partitions. */
  mdl_dtype dtype;
  int channels, height, width;
  int64_t n, scanned, filtered;
  int64_t dropped[MDL_DROP_COUNT];
  int num_classes;
  int64_t *class_count;
  float vmin, vmax;
  uint64_t bytes;
  double build_ms;
} mdl_dataset;

/* Builds every partition of ds (partitions: 0 = ds->partitions, and 1 when
 * that is 0 too), checking the whole estimate against the budget first. On
 * success *out is owned by the caller (mdl_dataset_free); on failure *out is
 * NULL and nothing is kept. */
mdl_status mdl_dataset_build(const Memdl__DataSet *ds, const char *base_dir, uint32_t partitions,
                             const mdl_build_opts *opts, mdl_dataset **out, mdl_error *err);

void mdl_dataset_free(mdl_dataset *d);

/* Resolves `from` chains: a new DataSet with the ancestor's source and the
 * ancestors' stages followed by ds's own, so its lineage stands alone. sets
 * are the job's data sets to look names up in. *out is owned by the caller
 * (mdl_pb_free). Unknown name or a cycle: MDL_ERR_INVALID. */
mdl_status mdl_data_resolve(Memdl__DataSet *const *sets, size_t n_sets, const Memdl__DataSet *ds,
                            Memdl__DataSet **out, mdl_error *err);

/* Whether two resolved data sets (mdl_data_resolve) can hold the same
 * records: the same source, and no split stage in one that the other's
 * `rest: true` split (same seed, a fraction at least as large) excludes.
 * Two `split { fraction: 0.8 }` and `split { fraction: 0.2 }` sets overlap;
 * a split and its `rest` do not. On true, why (n bytes) says how. */
bool mdl_data_overlap(const Memdl__DataSet *a, const Memdl__DataSet *b, char *why, size_t n);

/* The pipeline plan in one line for `memdl compile` and `memdl data`, e.g.
 * "idx -> [split, clean] (1 fused pass, cached) -> batch: affine (scale),
 * random crop 24, mirror, shuffle". Caller frees the string. */
char *mdl_data_describe(const Memdl__DataSet *ds);

/* Describes a source in words with its paths ("idx images.gz + labels.gz").
 * Caller frees. */
char *mdl_data_source_str(const Memdl__Source *src);

/* ---- Batches for the trainer ---- */

typedef struct mdl_batch_opts {
  int batch_size;
  bool train;   /* random crop (else centred) */
  bool shuffle; /* a new order every epoch, drawn from seed and the epoch */
  uint64_t seed;
} mdl_batch_opts;

/* Opaque: the record order, the epoch and the position in it. */
typedef struct mdl_batcher mdl_batcher;

/* A batcher over the records of parts[0..n_parts) (all of one shape and
 * dtype; the caller keeps them and xf alive). xf NULL: identity. On
 * success *out is owned by the caller (mdl_batcher_free). */
mdl_status mdl_batcher_new(mdl_partition *const *parts, int n_parts, const mdl_transform *xf,
                           const mdl_batch_opts *opts, mdl_batcher **out, mdl_error *err);

/* Writes the next batch: data N x C x H x W floats (shape from
 * mdl_transform_out_shape), labels N floats. Wraps around epochs,
 * reshuffling. The output of batch k depends only on (parts, xf, opts, k). */
mdl_status mdl_batcher_next(mdl_batcher *b, float *data, float *labels, mdl_error *err);

/* The source record (its index in the data set's source, as
 * mdl_partition.record) at position i of batch k, or -1 when i is outside
 * the batch. For error messages; may recompute the epoch's order. */
int64_t mdl_batcher_record(mdl_batcher *b, uint64_t k, int i);

/* Makes batch k the next one (resuming a run). */
void mdl_batcher_seek(mdl_batcher *b, uint64_t k);

uint64_t mdl_batcher_epoch(const mdl_batcher *b); /* epoch of the next batch */
int64_t mdl_batcher_records(const mdl_batcher *b);

void mdl_batcher_free(mdl_batcher *b);

/* ---- Caffe data layers ---- */

/* True for the layer types the pipeline serves: Data, ImageData,
 * MemoryData, HDF5Data (Input and DummyData belong to the engine). */
bool mdl_data_is_pipeline_layer(const Caffe__LayerParameter *layer);

typedef struct mdl_layer_data {
  Memdl__DataSet *set; /* owned */
  uint32_t batch_size;
  bool shuffle;  /* ImageData's shuffle; Data reads in order */
  bool replaced; /* a job data set took the layer's source */
} mdl_layer_data;

/* The DataSet a Caffe data layer reads. A job data set (sets[0..n_sets))
 * named like the layer's source (data_param.source, image_data_param.source,
 * hdf5_data_param.source) or like the layer replaces the source and stages;
 * the layer's transform_param is appended only when that set has no
 * transform stage, so scaling is never applied twice. On success out->set
 * is owned by the caller (mdl_layer_data_clear). */
mdl_status mdl_data_for_layer(const Caffe__LayerParameter *layer, Memdl__DataSet *const *sets,
                              size_t n_sets, mdl_layer_data *out, mdl_error *err);

void mdl_layer_data_clear(mdl_layer_data *d);

#endif
