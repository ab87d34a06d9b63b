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

/* Caffe's FilterNet: keeps in net->layer the layers state selects and moves
 * the others to *dropped (grown with realloc; the caller frees them), for
 * messages about blobs they would have made. A layer with both include and
 * exclude rules is an error; every layer is then still owned once. */
mdl_status mdl_graph_filter(Caffe__NetParameter *net, const Caffe__NetState *state,
                            Caffe__LayerParameter ***dropped, size_t *n_dropped, mdl_error *err);

/* Caffe's InsertSplits on net->layer: a top read by several bottoms (or read
 * and weighted as a loss) gets a Split layer "<blob>_<layer>_<i>_split" with
 * tops "<blob>_<layer>_<i>_split_<k>". A bottom no earlier layer makes is an
 * error explaining why (dropped by the rules, made later, or a typo). */
mdl_status mdl_graph_insert_splits(Caffe__NetParameter *net, Caffe__LayerParameter *const *dropped,
                                   size_t n_dropped, const Caffe__NetState *state, mdl_error *err);

/* A string -> int map; keys are not copied and must outlive it. */
typedef struct mdl_strmap {
  size_t cap, len;
  const char **key;
  int *val;
} mdl_strmap;

void mdl_strmap_put(mdl_strmap *m, const char *k, int v);
int mdl_strmap_get(const mdl_strmap *m, const char *k); /* -1 when absent */
void mdl_strmap_free(mdl_strmap *m);                    /* leaves m empty and usable */

/* s, or "" for NULL. */
const char *mdl_gname(const char *s);

/* Records `layer "name" (Type): <fmt>` as MDL_ERR_INVALID. */
mdl_status mdl_graph_layer_fail(const Caffe__LayerParameter *lp, mdl_error *err, const char *fmt,
                                ...) __attribute__((format(printf, 3, 4)));

/* Appends a copy of s to a protobuf-c string array. */
void mdl_push_str(char ***arr, size_t *n, const char *s);

#endif
