/* The table of layer types memdl knows: Caffe type names, legacy V1 enum
 * values, how many bottoms and tops each takes, and each type's shape rule
 * (top shapes and learnable-blob shapes from bottom shapes and parameters).
 * The single place shape rules live: the compiler's shape pass and the
 * runtime's layer setup both call these. Kernels live in runtime/. */
#ifndef MDL_COMPILER_LAYERS_H
#define MDL_COMPILER_LAYERS_H

#include "compiler/shape.h"

typedef struct mdl_shape_args {
  const Caffe__LayerParameter *lp;
  Caffe__Phase phase;
  int n_bottom;
  const mdl_shape *bottom;
  /* Names used in error messages, one per bottom; NULL: lp->bottom. The graph
   * passes the user's names here (not the names of inserted Split tops). */
  const char *const *bottom_name;
  int n_top;
  mdl_shape *top;                        /* out */
  int n_param;                           /* out: learnable blobs */
  mdl_shape param[MDL_MAX_LAYER_PARAMS]; /* out */
  mdl_source_resolver resolver;          /* for data layers; may be NULL */
  void *resolver_ctx;
  int label_classes; /* out, data layers: classes of the label top (0: unknown) */
} mdl_shape_args;

typedef struct mdl_layer_def {
  const char *type;           /* Caffe's type string, e.g. "Convolution" */
  int v1_type;                /* CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__..., -1 if none */
  int min_bottom, max_bottom; /* -1 max = any number */
  int min_top, max_top;       /* -1 max = any number */
  /* A Caffe LossLayer: its first top defaults to loss_weight 1 and, like
   * Caffe's AutoTopBlobs, a missing top is created anonymously. */
  bool is_loss;
  bool in_place_ok; /* may run with top == bottom */
  /* Bitmask of bottoms that never receive a gradient (labels, indices,
   * selectors): force_backward leaves them alone, as Caffe's
   * AllowForceBackward does. */
  unsigned no_grad_bottoms;
  /* Fills a->top[0..n_top) and a->param / a->n_param; on error names the
   * layer and the shapes involved. Reads a->lp, a->bottom, a->n_bottom,
   * a->n_top; the counts are already checked against min/max. a->top and
   * a->param may be left partly written on failure. */
  mdl_status (*shape)(mdl_shape_args *a, mdl_error *err);
} mdl_layer_def;

/* The layer with Caffe type name `type`, or NULL. */
const mdl_layer_def *mdl_layer_find(const char *type);

/* The layer for a V1 LayerType enum value, or NULL. */
const mdl_layer_def *mdl_layer_find_v1(int v1_type);

/* All known layers, for error messages listing them. The table is static. */
const mdl_layer_def *mdl_layer_table(size_t *n);

/* Why memdl runs no layer of this Caffe type on any backend (one sentence
 * with what to do instead), or NULL for the types it runs. Today: Python and
 * WindowData. */
const char *mdl_layer_unsupported_reason(const char *type);

/* Checks a->n_bottom / a->n_top against def's counts, then runs def->shape.
 * The one entry point both the compiler and the runtime call. On failure err
 * names the layer ("layer \"conv1\" (Convolution): ..."). */
mdl_status mdl_layer_shape(const mdl_layer_def *def, mdl_shape_args *a, mdl_error *err);

#endif
