/* A runnable net for one phase, built from the compiler's mdl_graph: layers
 * from the backend's table, ONE contiguous parameter buffer and gradient
 * buffer with per-layer views, activations placed by a liveness plan,
 * forward/backward with loss weights, fillers from a seed, weights shared
 * with another net by layer name (TEST nets share the TRAIN net's). Owns
 * execution and memory of one net; not data loading (the caller fills the
 * tops of data layers and net inputs), not solvers, not files. */
#ifndef MDL_RUNTIME_NET_H
#define MDL_RUNTIME_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "compiler/graph.h"
#include "compiler/memplan.h"
#include "runtime/engine/backend.h"
#include "runtime/engine/layer.h"
#include "runtime/engine/tensor.h"
#include "runtime/engine/threadpool.h"

typedef struct mdl_net mdl_net;

typedef struct mdl_net_options {
  const mdl_backend *backend; /* required; borrowed, must outlive the net */
  mdl_threadpool *pool;       /* NULL: one thread; borrowed */
  mdl_workspace *ws;          /* NULL: the net's own; borrowed (nets may share one) */
  uint64_t seed;              /* fillers and Dropout draws */
  /* Take the parameters of layers with the same name from this net (Caffe's
   * ShareTrainedLayersWith): same memory, so updates are seen at once.
   * Layers it lacks get their own parameters. Borrowed; must outlive. */
  const mdl_net *share_from;
  bool no_fill;     /* leave parameters at zero (weights loaded next) */
  bool defer_arena; /* do not allocate activations: see mdl_net_bind_arena */
} mdl_net_options;

/* Builds the net of graph g (borrowed: g must outlive the net) on
 * opt->backend. On success *out is owned by the caller (mdl_net_free);
 * on failure *out is NULL and err names the layer. */
mdl_status mdl_net_new(const mdl_graph *g, const mdl_net_options *opt, mdl_net **out,
                       mdl_error *err);

/* NULL-safe. Frees layers, parameters it owns and its arena. */
void mdl_net_free(mdl_net *net);

/* ---- running ---- */

/* Forward through every layer; returns the weighted loss (sum of
 * loss_weight * top over loss tops). The tops of data layers and net inputs
 * must have been filled. */
float mdl_net_forward(mdl_net *net);

/* Backward through every layer that needs it, seeding loss tops with their
 * weights. Parameter gradients ACCUMULATE into the gradient buffer. */
void mdl_net_backward(mdl_net *net);

/* Zeroes the gradient buffer (once per iteration, before the first pass). */
void mdl_net_clear_param_diffs(mdl_net *net);

/* Fills the net's data inputs with batch k (see mdl_net_accumulate). */
typedef mdl_status (*mdl_net_feed_fn)(void *ctx, uint64_t k, mdl_error *err);

/* The gradient of solver iteration `iter`, as single-worker training and
 * distributed workers both compute it: clears the gradient buffer, then runs
 * iter_size forward/backward passes on batches k = iter * iter_size + i
 * (feed fills the inputs), accumulating. *loss is their mean. A failed feed
 * is returned as is; bad data a layer met (mdl_net_check_fault) is
 * MDL_ERR_INVALID naming iter and the layer; a non-finite loss is
 * MDL_ERR_DIVERGED naming iter and the first non-finite weight or top. */
mdl_status mdl_net_accumulate(mdl_net *net, int iter, int iter_size, mdl_net_feed_fn feed,
                              void *ctx, double *loss, mdl_error *err);

/* After a forward: MDL_ERR_INVALID naming the first layer whose kernel met
 * bad data (a label or index out of range, see mdl_layer_fault), its batch
 * item and what was wrong; MDL_OK when none did. */
mdl_status mdl_net_check_fault(const mdl_net *net, mdl_error *err);
/* The batch item of that fault, or -1 when there is none. */
int64_t mdl_net_fault_item(const mdl_net *net);

/* Looks for NaN or infinity in the learnable blobs (layer order), or in the
 * tops of the last forward (layer order); on a hit writes where, e.g.
 * `layer "conv1" learnable blob 0, value 12 of 500 is nan`, into where (n
 * bytes) and returns true. */
bool mdl_net_find_nonfinite_param(const mdl_net *net, char *where, size_t n);
bool mdl_net_find_nonfinite_blob(const mdl_net *net, char *where, size_t n);

/* Single-layer steps for timing (memdl time). forward_layer returns that
 * layer's weighted loss. backward_layer does nothing for layers that do not
 * need backward. Run layers in order (forward) and reverse order (backward). */
float mdl_net_forward_layer(mdl_net *net, int i);
void mdl_net_backward_layer(mdl_net *net, int i);
bool mdl_net_layer_runs_backward(const mdl_net *net, int i);

/* Sets the random stream of Dropout & co. for one iteration: draws derive
 * from (seed, iter) only, so a resumed run draws what an uninterrupted one
 * would. */
void mdl_net_set_iteration(mdl_net *net, uint64_t iter);

/* Replaces the seed future draws derive from (a resumed run takes the
 * original run's seed). Parameters already filled are left alone. */
void mdl_net_set_seed(mdl_net *net, uint64_t seed);

/* ---- structure ---- */

const mdl_graph *mdl_net_graph(const mdl_net *net);
int mdl_net_n_layers(const mdl_net *net);
const char *mdl_net_layer_name(const mdl_net *net, int i);
const char *mdl_net_layer_type(const mdl_net *net, int i);
/* The layer object, or NULL for data layers served by the pipeline. */
mdl_layer *mdl_net_layer(const mdl_net *net, int i);

int mdl_net_n_blobs(const mdl_net *net);
const char *mdl_net_blob_name(const mdl_net *net, int b);
mdl_tensor *mdl_net_blob(const mdl_net *net, int b);          /* owned by net */
int mdl_net_blob_index(const mdl_net *net, const char *name); /* -1 if none */
/* The first value of blob b's data, read through the backend (scalar
 * outputs: losses, accuracies). */
float mdl_net_blob_first(const mdl_net *net, int b);

/* Blobs no layer consumes (Caffe's net outputs: losses, accuracies). */
int mdl_net_n_outputs(const mdl_net *net);
int mdl_net_output_blob(const mdl_net *net, int k);
/* Loss weight of output k (0 when not a loss). */
float mdl_net_output_weight(const mdl_net *net, int k);

/* Layers whose tops the caller fills: pipeline data layers (Data,
 * ImageData, MemoryData, HDF5Data). Returns the layer indices count. */
int mdl_net_n_sources(const mdl_net *net);
int mdl_net_source_layer(const mdl_net *net, int k); /* layer index */
/* Net-level inputs (input/input_shape), filled by the caller too. */
int mdl_net_n_inputs(const mdl_net *net);
int mdl_net_input_blob(const mdl_net *net, int k);

/* Batch size: axis 0 of the first data layer's (or input's) first top; 1 if
 * there is none. */
int64_t mdl_net_batch_size(const mdl_net *net);

/* ---- parameters ---- */

/* The backend the net runs on. */
const mdl_backend *mdl_net_backend(const mdl_net *net);

/* The buffers this net's own parameters live in (shared ones live in the
 * share_from net's): backend memory (host memory on the CPU backend). */
float *mdl_net_params(const mdl_net *net);
float *mdl_net_param_diffs(const mdl_net *net);
size_t mdl_net_param_count(const mdl_net *net);

/* The parameters copied to / from param_count host floats: how weights
 * cross a round boundary or reach a file. */
void mdl_net_params_get(const mdl_net *net, float *host);
void mdl_net_params_put(mdl_net *net, const float *host);

/* The learnable blobs in Caffe's learnable_params order (layer order, blob
 * order, shared blobs once), as ranges of mdl_net_params with lr_mult and
 * decay_mult from each ParamSpec. Owned by net. */
const mdl_param_blob *mdl_net_learnable(const mdl_net *net, int *n);

/* ---- memory ---- */

/* Floats of activation memory the plan needs, and what a net keeping every
 * blob's data and diff apart would need (bytes). MDL_MEMPLAN=off in the
 * environment gives the latter: the reference planned runs are checked
 * against. */
size_t mdl_net_arena_floats(const mdl_net *net);
size_t mdl_net_naive_bytes(const mdl_net *net);
/* The plan behind them (owned by net). */
const mdl_mem_plan *mdl_net_mem_plan(const mdl_net *net);
/* The plan's figures with this net's scratch workspace and parameters
 * (values and gradients) filled in; solver_state is left 0 (the solver's). */
void mdl_net_mem_figures(const mdl_net *net, mdl_mem_figures *fig);
/* Bytes the net itself took from its backend: its arena (unless deferred),
 * its parameters and gradients, its own workspace (unless borrowed). Tests
 * hold it against the plan's figures. */
size_t mdl_net_allocated_bytes(const mdl_net *net);

/* Points the activations at arena (mdl_net_arena_floats(net) floats at
 * least, from the net's backend (mdl_backend_alloc), caller-owned). Nets that never run at the same
 * time (a TRAIN net and its TEST nets) can share one arena. Contents are
 * not preserved. */
void mdl_net_bind_arena(mdl_net *net, float *arena);

#endif
