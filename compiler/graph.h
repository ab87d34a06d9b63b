/* The net graph for one phase: Caffe's NetParameter filtered by phase and
 * stage, V1 layers upgraded, Split layers inserted, every blob named and
 * shaped. Describes only; computes nothing (runtime/ executes it). */
#ifndef MDL_COMPILER_GRAPH_H
#define MDL_COMPILER_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "caffe.pb-c.h"
#include "common/error.h"

#define MDL_MAX_AXES 8
#define MDL_MAX_LAYER_PARAMS 8

typedef struct mdl_shape {
  int n;                     /* number of axes, 0..MDL_MAX_AXES */
  int64_t d[MDL_MAX_AXES];
} mdl_shape;

/* Shapes a data set promises to the net: what a Data/ImageData/... layer
 * produces per record. Filled by the data pipeline; the compiler asks it for
 * a layer's source. */
typedef struct mdl_source_info {
  mdl_shape record;     /* one record, e.g. 1x28x28 (C,H,W) */
  int64_t num_records;
  int num_classes;      /* 0 when unknown */
} mdl_source_info;

/* Looks up the records a data layer reads (by data_param.source or the
 * layer's name). Returns MDL_OK and fills *info, or an error naming the
 * source. NULL resolver: data layers without an explicit shape are errors. */
typedef mdl_status (*mdl_source_resolver)(void *ctx, const Caffe__LayerParameter *layer,
                                          mdl_source_info *info, mdl_error *err);

typedef struct mdl_graph_layer {
  const Caffe__LayerParameter *param; /* points into the graph's own net */
  const struct mdl_layer_def *def;    /* from the layer table (compiler/layers.h) */
  int n_bottom, n_top;
  int *bottom, *top;                  /* blob indices */
  int n_param;                        /* learnable blobs (weights, bias, ...) */
  mdl_shape param_shape[MDL_MAX_LAYER_PARAMS];
  float *loss_weight;                 /* per top; 0 = not a loss */
  bool *propagate_down;               /* per bottom: does it need a gradient */
  bool needs_backward;                /* any learnable or any bottom needs a gradient */
} mdl_graph_layer;

typedef struct mdl_graph {
  Caffe__Phase phase;
  Caffe__NetParameter *net; /* owned: the resolved net, V2 layers, splits inserted */
  int n_layers;
  mdl_graph_layer *layers;
  int n_blobs;
  char **blob_name;
  mdl_shape *blob_shape;
  int *blob_producer;       /* layer index, -1 for net-level inputs */
  int n_inputs;             /* net-level inputs (input/input_shape/input_dim) */
  int *input_blob;
} mdl_graph;

/* Builds the graph of net for state (phase, level, stages). filename is for
 * errors. resolver may be NULL. On success *out is owned by the caller
 * (mdl_graph_free); on failure *out is NULL and err names the layer, the
 * blob and both shapes where shapes disagree. net is not modified. */
mdl_status mdl_graph_build(const Caffe__NetParameter *net, const Caffe__NetState *state,
                           const char *filename, mdl_source_resolver resolver, void *resolver_ctx,
                           mdl_graph **out, mdl_error *err);

void mdl_graph_free(mdl_graph *g);

/* Writes "2x3x4" (or "scalar" for 0 axes) into buf. Returns buf. */
char *mdl_shape_str(const mdl_shape *s, char *buf, size_t size);

int64_t mdl_shape_count(const mdl_shape *s); /* product of all axes (1 for 0 axes) */

#endif
