/* Internal to the data set module: the source interface, record selection,
 * the fused per-record pass ("sink") and the compiled stage plan. Not for use
 * outside runtime/dataset*.c, source_*.c, stages*.c, batch*.c. */
#ifndef MDL_RUNTIME_DATASET_IMPL_H
#define MDL_RUNTIME_DATASET_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/fileio.h"
#include "runtime/data/dataset.h"

#define MDL_MAX_FILTERS 16

/* One decoded record, as a source hands it to the fused pass. */
typedef struct mdl_rec {
  int64_t index; /* ordinal in the source */
  int32_t label;
  mdl_dtype dtype;
  int c, h, w;
  const void *px;   /* c*h*w values, CHW (BGR for colour, as Caffe) */
  const char *name; /* e.g. the image file or LMDB key; may be NULL */
} mdl_rec;

typedef struct mdl_filter {
  uint64_t seed;
  float fraction;
  bool rest;     /* keep the complement */
  uint64_t salt; /* split and sample with equal seeds still draw differently */
} mdl_filter;

/* The stages compiled: what the build pass does and what batches do. */
typedef struct mdl_stage_plan {
  int n_filters;
  mdl_filter filter[MDL_MAX_FILTERS];
  double keep_fraction; /* product of the filters' fractions, for estimates */
  bool clean;
  uint32_t num_classes;
  bool require_shape, drop_nonfinite;
  int resize_h, resize_w; /* 0: none */
  int force_channels;     /* 0: as encoded, 1: gray, 3: colour (encoded images) */
  int crop;               /* 0: none */
  bool mirror;
  bool affine;         /* any scale/mean/normalize */
  int n_record_stages; /* stages run in the fused build pass */
} mdl_stage_plan;

/* Validates and compiles ds's stages. Errors name the stage by position. */
mdl_status mdl_stages_compile(const Memdl__DataSet *ds, mdl_stage_plan *plan, mdl_error *err);

/* Whether record r belongs to the partition, and if so whether a filter
 * leaves it out. */
typedef enum mdl_sel {
  MDL_SEL_OTHER = 0, /* another partition's */
  MDL_SEL_FILTERED,  /* ours, left out by split/sample */
  MDL_SEL_KEEP,
} mdl_sel;

typedef struct mdl_select {
  uint32_t index, count;
  int scheme; /* MEMDL__DATA_SET__PARTITION_SCHEME__* */
  int64_t total;
  int64_t lo, hi; /* RANGE: [lo, hi) */
  const mdl_stage_plan *plan;
} mdl_select;

void mdl_select_init(mdl_select *s, const mdl_stage_plan *plan, uint32_t index, uint32_t count,
                     int scheme, int64_t total);
mdl_sel mdl_select_test(const mdl_select *s, int64_t r);
/* Records of [0,total) dealt to the partition, before filters. */
int64_t mdl_select_count(const mdl_select *s);
/* True when the partition holds nothing at or after r (scans may stop). */
bool mdl_select_done(const mdl_select *s, int64_t r);

/* The fused per-record pass: selection, resize, clean, append. */
typedef struct mdl_sink {
  mdl_select sel;
  const mdl_stage_plan *plan;
  const char *src_name; /* file named in errors */
  int in_c, in_h, in_w; /* the data set's record shape before resize */
  mdl_partition *p;
  int64_t cap;
  int64_t max_label;
  uint64_t elems; /* per stored record */
  void *tmp;
  size_t tmp_cap;
  int32_t *class_tmp;
} mdl_sink;

/* Asks whether the source should decode record r (counts the selection). */
bool mdl_sink_want(mdl_sink *s, int64_t r);

/* Runs the per-record stages on rec and appends it. A bad record is an error
 * naming the file and record unless a clean stage drops it. */
mdl_status mdl_sink_put(mdl_sink *s, const mdl_rec *rec, mdl_error *err);

/* Where a source finds its files and how it decodes. */
typedef struct mdl_src_ctx {
  const Memdl__Source *src;
  const char *base_dir;
  const mdl_stage_plan *plan;
} mdl_src_ctx;

/* A source kind: probe reads headers (fills dtype, shape as decoded before
 * the resize stage, records, num_classes where cheap); scan decodes the
 * records the sink wants, in source order, and hands them to it. */
typedef struct mdl_source_iface {
  const char *name;
  mdl_status (*probe)(const mdl_src_ctx *c, mdl_data_info *info, mdl_error *err);
  mdl_status (*scan)(const mdl_src_ctx *c, const mdl_data_info *info, mdl_sink *sink,
                     mdl_error *err);
} mdl_source_iface;

extern const mdl_source_iface mdl_source_idx;
extern const mdl_source_iface mdl_source_lmdb;
extern const mdl_source_iface mdl_source_image_list;
extern const mdl_source_iface mdl_source_csv;
extern const mdl_source_iface mdl_source_synthetic;
extern const mdl_source_iface mdl_source_memory;
extern const mdl_source_iface mdl_source_hdf5;

/* The interface for src's kind, or NULL with an error when none is set. */
const mdl_source_iface *mdl_source_for(const Memdl__Source *src, mdl_error *err);

/* Record shape from [C, H, W], [H, W] or [D] (missing leading axes are 1).
 * what names the source in errors. */
mdl_status mdl_shape_from_dims(const char *what, const uint32_t *shape, size_t n, int *c, int *h,
                               int *w, mdl_error *err);

/* p joined to base_dir unless p is absolute or base_dir is NULL/empty/".".
 * Caller frees. */
char *mdl_data_path(const char *base_dir, const char *p);

/* The batch-time transform (see mdl_transform_new). y = mul * x + add, with
 * mul/add per channel (c entries) or, once a mean_file is involved, per
 * element of the stored record (c*h*w entries, uncropped coordinates as
 * Caffe indexes its mean). */
struct mdl_transform {
  int c, h, w;
  int crop; /* 0: none */
  bool mirror;
  bool per_element;
  float *mul, *add;
};

/* Bilinear resize of one CHW record, half-pixel centres (OpenCV INTER_LINEAR
 * geometry); uint8 rounds to nearest. */
void mdl_resize_u8(const uint8_t *src, int c, int h, int w, uint8_t *dst, int oh, int ow);
void mdl_resize_f32(const float *src, int c, int h, int w, float *dst, int oh, int ow);

#endif
