/* The memory plan of one net: where every blob's value ("data") and gradient
 * ("diff") lives in one arena, placed by liveness over the steps of an
 * iteration (forward of layer i is step i, its backward step 2n-1-i), so that
 * buffers never live at the same time may share bytes; and the naive/planned
 * figures `memdl compile` prints. Owns liveness and placement; not
 * allocation (runtime/engine/net.c allocates exactly arena_floats) and not
 * what a backend keeps inside its layers. */
#ifndef MDL_COMPILER_MEMPLAN_H
#define MDL_COMPILER_MEMPLAN_H

#include <stdbool.h>
#include <stddef.h>

#include "compiler/graph.h"

#define MDL_MEM_NONE ((size_t)-1)

/* What the runtime decided about layer i that the graph alone does not say. */
typedef struct mdl_mem_layer {
  bool source;   /* a pipeline data layer: its tops are filled before the forward */
  bool backward; /* runs backward */
} mdl_mem_layer;

/* Bytes. "naive" keeps every blob's data and diff in its own buffer for the
 * whole iteration; "planned" is what the placement needs. Data and diffs
 * share one arena, so arena <= data_planned + diff_planned. */
typedef struct mdl_mem_figures {
  size_t data_naive, data_planned;   /* planned: peak of live data alone */
  size_t diff_naive, diff_planned;   /* planned: peak of live diffs alone */
  size_t arena_naive, arena;         /* data + diffs */
  size_t workspace_naive, workspace; /* scratch: one per layer / one shared (max) */
  size_t params;                     /* learnable values and their gradients */
  size_t solver_state;               /* solver history (momentum, ...) */
  size_t kept_naive, kept; /* copies layers keep for backward (runtime only; 0 at compile) */
} mdl_mem_figures;

typedef struct mdl_mem_plan {
  int n_blobs, n_steps;
  size_t *size;                /* floats of blob b's data (and diff), rounded to 64 bytes */
  size_t *data_off, *diff_off; /* floats into the arena; MDL_MEM_NONE: no buffer */
  int *data_lo, *data_hi;      /* steps during which it is live, inclusive (-1: filled before) */
  int *diff_lo, *diff_hi;
  /* Blobs whose data is another's: a Split, Flatten or Reshape top nobody
   * writes in place shares its bottom's bytes (as Caffe's Split shares data;
   * the layers skip the copy onto itself). alias[b] is the blob whose buffer
   * b uses (b itself when none); data_lo/hi of that blob span the group. */
  int *alias;
  size_t arena_floats;
  mdl_mem_figures fig; /* data/diff/arena only; the caller fills the rest */
} mdl_mem_plan;

/* Whether layers of this type are pipeline sources (Data, ImageData, ...)
 * whose tops the caller fills, where a backend has no layer of its own. */
bool mdl_mem_source_type(const char *type);

/* The layers of g as the compiler alone sees them: sources by type, backward
 * where the graph says it is needed (TRAIN, or force_backward). Caller frees. */
mdl_mem_layer *mdl_mem_layers_of(const mdl_graph *g);

/* Plans the blobs of g. layers (g->n_layers entries) says which layers are
 * sources and which run backward. reuse false gives every buffer its own
 * bytes (the plan-off reference). Returns the caller's (mdl_mem_plan_free). */
mdl_mem_plan *mdl_mem_plan_new(const mdl_graph *g, const mdl_mem_layer *layers, bool reuse);
void mdl_mem_plan_free(mdl_mem_plan *p); /* NULL safe */

/* Whether MDL_MEMPLAN=off asks for the plan-off reference (tests compare
 * the two bit for bit). */
bool mdl_mem_plan_reuse_default(void);

/* Brute force: the first pair of buffers live at a common step whose bytes
 * overlap, as blob indices and kinds (0 data, 1 diff), leaving out the data
 * of blobs that alias one another on purpose; false when none. */
bool mdl_mem_plan_find_overlap(const mdl_mem_plan *p, int *a, int *ka, int *b, int *kb);

#endif
