/* The table of layer types memdl knows: Caffe type names, legacy V1 enum
 * values, how many bottoms and tops each takes, and each type's shape rule
 * (top shapes and learnable-blob shapes from bottom shapes and parameters).
 * The single place shape rules live: the compiler's shape pass and the
 * runtime's layer setup both call these. Kernels live in runtime/. */
#ifndef MDL_COMPILER_LAYERS_H
#define MDL_COMPILER_LAYERS_H

#include "compiler/graph.h"

typedef struct mdl_shape_args {
  const Caffe__LayerParameter *lp;
  Caffe__Phase phase;
  int n_bottom;
  const mdl_shape *bottom;
  int n_top;
  mdl_shape *top;                                /* out */
  int n_param;                                   /* out: learnable blobs */
  mdl_shape param[MDL_MAX_LAYER_PARAMS];         /* out */
  mdl_source_resolver resolver;                  /* for data layers; may be NULL */
  void *resolver_ctx;
} mdl_shape_args;

typedef struct mdl_layer_def {
  const char *type;         /* Caffe's type string, e.g. "Convolution" */
  int v1_type;              /* CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__..., -1 if none */
  int min_bottom, max_bottom; /* -1 max = any number */
  int min_top, max_top;
  bool is_loss;             /* tops default to loss_weight 1 */
  bool in_place_ok;         /* may run with top == bottom */
  /* Fills a->top[0..n_top) and a->param / a->n_param; on error names the
   * layer and the shapes involved. */
  mdl_status (*shape)(mdl_shape_args *a, mdl_error *err);
} mdl_layer_def;

/* The layer with Caffe type name `type`, or NULL. */
const mdl_layer_def *mdl_layer_find(const char *type);

/* The layer for a V1 LayerType enum value, or NULL. */
const mdl_layer_def *mdl_layer_find_v1(int v1_type);

/* All known layers, for error messages listing them. */
const mdl_layer_def *mdl_layer_table(size_t *n);

#endif
