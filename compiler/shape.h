/* Blob shapes as the compiler sees them (up to MDL_MAX_AXES axes), what a
 * data source promises per record, and the small helpers every shape rule,
 * graph pass and runtime layer shares. Owns no graph and no layer table:
 * both include this, never each other's internals. */
#ifndef MDL_COMPILER_SHAPE_H
#define MDL_COMPILER_SHAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caffe.pb-c.h"
#include "common/error.h"

#define MDL_MAX_AXES 8
#define MDL_MAX_LAYER_PARAMS 8

typedef struct mdl_shape {
  int n; /* number of axes, 0..MDL_MAX_AXES */
  int64_t d[MDL_MAX_AXES];
} mdl_shape;

/* Shapes a data set promises to the net: what a Data/ImageData/... layer
 * produces per record. Filled by the data pipeline; the compiler asks it for
 * a layer's source. */
typedef struct mdl_source_info {
  /* One record, e.g. 1x28x28 (C,H,W). Data, ImageData and WindowData read
   * it as a Datum: 3 axes C,H,W; 1 axis D means Dx1x1; 2 axes HxW mean
   * 1xHxW. HDF5Data takes it as is for its first top (others get [batch]). */
  mdl_shape record;
  int64_t num_records;
  int num_classes; /* 0 when unknown */
} mdl_source_info;

/* Looks up the records a data layer reads (by data_param.source or the
 * layer's name). Returns MDL_OK and fills *info, or an error naming the
 * source; the compiler prefixes `layer "name" (Type): source "...": ` unless
 * the message already starts with `layer "name"`. NULL resolver: data layers
 * without an explicit shape are errors. A record already cropped is fine:
 * transform_param.crop_size is applied again, which changes nothing then. */
typedef mdl_status (*mdl_source_resolver)(void *ctx, const Caffe__LayerParameter *layer,
                                          mdl_source_info *info, mdl_error *err);

/* Writes "2x3x4" into buf, or "scalar" for 0 axes (Caffe's loss and
 * accuracy tops: count 1, no axes). Truncates to size. Returns buf. */
char *mdl_shape_str(const mdl_shape *s, char *buf, size_t size);

int64_t mdl_shape_count(const mdl_shape *s); /* product of all axes (1 for 0 axes) */

bool mdl_shape_eq(const mdl_shape *x, const mdl_shape *y);

/* s = the n axes d (n <= MDL_MAX_AXES). */
void mdl_shape_set(mdl_shape *s, int n, const int64_t *d);

#endif
