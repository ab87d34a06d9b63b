/* Pieces of graph building shared between graph.c and graph_upgrade.c. Not
 * a public interface. */
#ifndef MDL_COMPILER_GRAPH_INTERNAL_H
#define MDL_COMPILER_GRAPH_INTERNAL_H

#include "compiler/graph.h"

/* Caffe's UpgradeNetAsNeeded on a net the caller owns, changed in place:
 * legacy data-layer transform fields moved to transform_param, V1 `layers`
 * turned into `layer`, net-level input/input_shape/input_dim turned into an
 * Input layer named "input" placed first, and old BatchNorm param specs
 * frozen. A net with both `layer` and `layers`, a V0 layer, or inputs
 * without shapes is an error; net is then partly upgraded (the caller frees
 * it). */
mdl_status mdl_graph_upgrade(Caffe__NetParameter *net, mdl_error *err);

#endif
