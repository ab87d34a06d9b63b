/* The net graph for one phase: Caffe's NetParameter filtered by phase and
 * stage, V1 layers upgraded, Split layers inserted, every blob named and
 * shaped. Describes only; computes nothing (runtime/ executes it). */
#ifndef MDL_COMPILER_GRAPH_H
#define MDL_COMPILER_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "caffe.pb-c.h"
#include "common/error.h"
#include "compiler/shape.h"

typedef struct mdl_graph_layer {
  const Caffe__LayerParameter *param; /* points into the graph's own net */
  const struct mdl_layer_def *def;    /* from the layer table (compiler/layers.h) */
  /* Equal to param->n_bottom / n_top. A loss layer given no top gets one
   * named "(automatic)", as Caffe's AutoTopBlobs does; it is written into
   * the graph's net, and such tops are never wired to any bottom. */
  int n_bottom, n_top;
  int *bottom, *top; /* blob indices */
  int n_param;       /* learnable blobs (weights, bias, ...) */
  mdl_shape param_shape[MDL_MAX_LAYER_PARAMS];
  /* Effective ParamSpec values per learnable blob (defaults 1, 1; BatchNorm's
   * statistics are always 0 as Caffe forces them). */
  float param_lr_mult[MDL_MAX_LAYER_PARAMS];
  float param_decay_mult[MDL_MAX_LAYER_PARAMS];
  /* Weight sharing by ParamSpec.name: the layer and blob index that own the
   * storage; (this layer, i) when the blob is its own. */
  int param_owner_layer[MDL_MAX_LAYER_PARAMS];
  int param_owner_index[MDL_MAX_LAYER_PARAMS];
  bool param_propagate_down[MDL_MAX_LAYER_PARAMS]; /* lr_mult != 0 or force_backward */
  float *loss_weight;                              /* per top; 0 = not a loss */
  bool *propagate_down;                            /* per bottom: does it need a gradient */
  /* Caffe's Net::Init analysis: false when no top feeds a loss (whatever
   * its parameters), and force_backward makes it true everywhere. */
  bool needs_backward;
} mdl_graph_layer;

typedef struct mdl_graph {
  Caffe__Phase phase;
  Caffe__NetParameter *net; /* owned: the resolved net, V2 layers, splits inserted */
  int n_layers;
  mdl_graph_layer *layers;
  int n_blobs;
  char **blob_name;
  mdl_shape *blob_shape;
  /* The layer that creates the blob (in-place layers write it again later).
   * Net-level inputs (input/input_shape/input_dim) are upgraded, as Caffe
   * 1.0 does, into an Input layer named "input" placed first, so every blob
   * has a producer; -1 never occurs for a built graph. */
  int *blob_producer;
  /* Blobs the caller feeds: the tops of every Input layer (net-level inputs
   * included), in layer order. */
  int n_inputs;
  int *input_blob;
  /* Blobs no layer consumes (Caffe's net outputs), in creation order. */
  int n_outputs;
  int *output_blob;
  /* Per blob: how many classes its labels may take, when a data layer's
   * source says (clean { num_classes }), through Splits; 0: unknown. */
  int *blob_classes;
} mdl_graph;

/* Builds the graph of net for state (phase, level, stages), as Caffe's
 * upgrade + Net::Init do: net-level inputs and V1 `layers` upgraded, layers
 * filtered by include/exclude, Split layers inserted, blobs wired and shaped,
 * loss weights and backward needs computed. Where a data set's classes
 * are known, a SoftmaxWithLoss, Accuracy or HingeLoss predicting fewer
 * classes is an error (labels would fall out of range). state NULL: net->state, or TEST
 * at level 0 with no stages. filename (may be NULL) prefixes errors.
 * resolver may be NULL: data layers reading a source are then errors. On
 * success *out is owned by the caller (mdl_graph_free); on failure *out is
 * NULL and err names the layer, the blob and both shapes where shapes
 * disagree. net is not modified. */
mdl_status mdl_graph_build(const Caffe__NetParameter *net, const Caffe__NetState *state,
                           const char *filename, mdl_source_resolver resolver, void *resolver_ctx,
                           mdl_graph **out, mdl_error *err);

/* Frees g and everything it owns; NULL is fine. */
void mdl_graph_free(mdl_graph *g);

/* Index of the blob or layer with that name, or -1. Layer names need not be
 * unique (Caffe allows it); the first match is returned. */
int mdl_graph_find_blob(const mdl_graph *g, const char *name);
int mdl_graph_find_layer(const mdl_graph *g, const char *name);

#endif
