/* The data pipeline as the compiler's mdl_source_resolver: tells a data
 * layer's per-record shape, record count and class count from source
 * headers, without loading the records. Kept apart from dataset.h so the
 * data module does not depend on the compiler. */
#ifndef MDL_RUNTIME_DATASET_RESOLVER_H
#define MDL_RUNTIME_DATASET_RESOLVER_H

#include <stddef.h>

#include "compiler/graph.h"
#include "data.pb-c.h"

/* What the resolver looks names up in; the caller keeps it alive. */
typedef struct mdl_data_catalog {
  Memdl__DataSet *const *sets; /* the job's data sets (may be NULL) */
  size_t n_sets;
  const char *base_dir; /* relative paths resolve here; NULL: working directory */
} mdl_data_catalog;

/* An mdl_source_resolver: ctx is a const mdl_data_catalog *. Fills info
 * with the record shape after crop (C x crop x crop), the records expected
 * after split/sample, and the class count when headers tell it (0
 * otherwise). Errors name the layer and the file: MDL_ERR_INVALID. */
mdl_status mdl_data_source_info(void *ctx, const Caffe__LayerParameter *layer,
                                mdl_source_info *info, mdl_error *err);

#endif
