/* The layer interface every backend implements: a layer object created from
 * a Caffe type name through an explicit table, set up from its
 * LayerParameter and bottom shapes (shape rules come from compiler/layers.h,
 * never re-derived here), then run forward and backward on tensors the net
 * owns. Owns the contract and its generic half; not the net, not the
 * solvers, not data layers (Data/ImageData/HDF5Data/MemoryData are pipeline
 * sources: the net fills their tops), and no kernels: those live in a
 * backend's table (runtime/cpu/, gpu/), reached through backend.h.
 *
 * The calling sequence, as the net uses it:
 *   mdl_layer_new(backend, lp, phase, n_bottom, bottom_shapes, &ctx, &l, err)
 *       -> l->n_top, l->top_shape[], l->n_param, l->param[i] shapes known;
 *          private state allocated; scratch reserved in ctx.ws.
 *   (net sums mdl_layer_param_count over layers, allocates ONE data and ONE
 *    diff buffer for all parameters, then for each layer:)
 *   mdl_layer_bind_params(l, data + off, diff + off)   views, blob order
 *   mdl_layer_init_params(l, rng, err)                  fillers (skip when
 *                                                       loading weights)
 *   mdl_workspace_commit(ctx.ws, err)                   once, after all setups
 *   loop: mdl_layer_forward(l, bottom, top)
 *         loss += mdl_layer_loss(l, loss_weight, top)   (tops with weights)
 *         mdl_layer_seed_loss_diff(l, loss_weight, top) (before backward)
 *         mdl_layer_backward(l, top, propagate_down, bottom)
 *
 * Contract for kernels:
 *   - forward writes every top's data; backward writes (overwrites) the diff
 *     of each bottom i with propagate_down[i] and leaves the others alone;
 *     parameter gradients are ACCUMULATED into param[i].diff (the net zeroes
 *     the one diff buffer per iteration; iter_size accumulation is free).
 *   - top[i] may be the same tensor as bottom[i] (in place) for types whose
 *     compiler def says in_place_ok.
 *   - Bottoms that are labels or indices (SoftmaxWithLoss's, Accuracy's,
 *     Embed's ...) never receive a gradient, whatever propagate_down says.
 *   - BatchNorm's three blobs (mean, variance, scale factor, as Caffe) are
 *     statistics, not learnable: forward in TRAIN updates them; they never
 *     get a gradient; the solver must use lr_mult 0 for them (as Caffe's
 *     BatchNormLayer forces).
 *   - Nothing here asserts on user input: setup reports bad parameters as
 *     MDL_ERR_INVALID naming the layer. forward/backward return nothing;
 *     a kernel that meets bad DATA (a label out of range) records it with
 *     mdl_layer_fault and still writes its tops; the net checks every
 *     layer's fault after forward (mdl_net_fault) and the caller stops.
 *     A flag rather than a status from every kernel: only a handful of
 *     kernels read data that can be wrong, and a GPU kernel cannot return
 *     a status synchronously either: it would set a device flag the host
 *     reads after the pass, which is the same contract. */
#ifndef MDL_RUNTIME_LAYER_H
#define MDL_RUNTIME_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caffe.pb-c.h"
#include "common/error.h"
#include "compiler/layers.h" /* mdl_shape, mdl_layer_def: the shape rules */
#include "runtime/engine/backend.h"
#include "runtime/engine/filler.h" /* mdl_rng */
#include "runtime/engine/tensor.h"
#include "runtime/engine/threadpool.h"

/* Scratch memory shared by all layers of one net (im2col columns, ...): a
 * layer reserves its need at setup and reads ws->data when it runs, never
 * keeping the pointer. Contents do not survive from one layer call to the
 * next. */
typedef struct mdl_workspace {
  void *data;            /* backend memory, 64-byte aligned, `size` bytes; NULL before commit */
  const mdl_backend *be; /* where data lives (set by commit) */
  size_t size;           /* bytes allocated */
  size_t need;           /* largest reservation so far */
} mdl_workspace;

void mdl_workspace_init(mdl_workspace *ws);
/* Records that some layer needs `bytes` of scratch. */
void mdl_workspace_reserve(mdl_workspace *ws, size_t bytes);
/* Allocates the largest reservation on be (if larger than what is there).
 * MDL_ERR_NOMEM on failure, ws unchanged. A workspace lives on one backend. */
mdl_status mdl_workspace_commit(mdl_workspace *ws, const mdl_backend *be, mdl_error *err);
void mdl_workspace_release(mdl_workspace *ws); /* frees; NULL safe */

/* What every layer of a net shares; owned by the net, outlives the layers. */
typedef struct mdl_exec_ctx {
  mdl_threadpool *pool; /* NULL: single-threaded */
  mdl_workspace *ws;    /* must not be NULL */
  mdl_rng *rng;         /* draws of Dropout and DummyData; NULL: seed 0 */
  bool net_keeps;       /* the net provides layers' kept copies (mdl_layer_keep) */
} mdl_exec_ctx;

/* A copy of one tensor a layer keeps from forward for its backward, when it
 * cannot read the blob again (in place): BatchNorm's normalised output
 * (MDL_KEEP_TOP), an in-place Scale's input (MDL_KEEP_INPUT). Requested at
 * setup with mdl_layer_keep; mdl_layer_new allocates it unless ctx.net_keeps,
 * in which case the net binds it (one buffer for both when a Scale's input is
 * the output the BatchNorm before it keeps, with `filled` set on the Scale so
 * it skips the copy). */
enum { MDL_KEEP_NONE, MDL_KEEP_TOP, MDL_KEEP_INPUT };
typedef struct mdl_layer_keep_buf {
  int kind;      /* MDL_KEEP_* */
  int64_t count; /* floats */
  float *data;   /* backend memory: NULL until allocated or bound */
  bool owned;    /* allocated by mdl_layer_new (freed with the layer) */
  bool filled;   /* the forward of an earlier layer already wrote these values */
} mdl_layer_keep_buf;

typedef struct mdl_layer mdl_layer;

/* Bad data a kernel met during the last forward: the first one only. */
typedef struct mdl_layer_fault {
  bool set;
  int64_t item;  /* index along the batch axis of the offending value */
  char msg[200]; /* e.g. "label 2 is out of range 0..1 (num_output 2)" */
} mdl_layer_fault;

/* One layer type's implementation on one backend. */
typedef struct mdl_layer_impl {
  const char *type; /* Caffe's type name, e.g. "Convolution" */
  /* Type-specific setup, called by mdl_layer_new after the generic part has
   * filled n_top/top_shape/n_param/param shapes from the shape rule: checks
   * parameters, allocates private state (l->priv), reserves scratch. */
  mdl_status (*setup)(mdl_layer *l, mdl_error *err);
  /* Initialises parameter data with the layer's fillers (NULL: no params). */
  mdl_status (*init_params)(mdl_layer *l, mdl_rng *rng, mdl_error *err);
  void (*forward)(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top);
  /* NULL for layers that never backpropagate (Accuracy, ArgMax, Input). */
  void (*backward)(mdl_layer *l, mdl_tensor *const *top, const bool *propagate_down,
                   mdl_tensor *const *bottom);
  void (*free_priv)(mdl_layer *l); /* NULL: free(l->priv) */
} mdl_layer_impl;

/* The implementation of type in be's table, or NULL. */
const mdl_layer_impl *mdl_backend_layer(const mdl_backend *be, const char *type);

/* Whether be runs lp: false with why filled ("type \"Foo\" has no cuda:0
 * implementation (known: ...)" or the backend's own reason). */
bool mdl_backend_supports_layer(const mdl_backend *be, const Caffe__LayerParameter *lp, char *why,
                                size_t why_size);

struct mdl_layer {
  const mdl_layer_impl *impl;
  const mdl_backend *be;           /* where it runs; borrowed */
  const mdl_layer_def *def;        /* the compiler's entry: shape rule, arity */
  const Caffe__LayerParameter *lp; /* borrowed: must outlive the layer */
  const char *name;                /* lp->name or "(unnamed)" */
  Caffe__Phase phase;
  mdl_exec_ctx ctx; /* copy of the net's */
  int n_bottom, n_top;
  mdl_shape *bottom_shape; /* n_bottom, owned */
  mdl_shape *top_shape;    /* n_top, owned */
  int n_param;
  mdl_tensor param[MDL_MAX_LAYER_PARAMS]; /* shapes set at new; views after bind */
  void *priv;                             /* type-specific state */
  mdl_layer_fault fault;                  /* cleared by mdl_layer_forward, set by kernels */
  mdl_layer_keep_buf keep;                /* see mdl_layer_keep */
};

/* Creates the layer lp->type on backend be for the given phase
 * and bottom shapes. ctx is copied; ctx->ws must stay valid. On success *out
 * is the caller's (mdl_layer_free). On failure *out is NULL, nothing leaks,
 * and err names the layer: a type be does not run (listing the known ones), wrong
 * number of bottoms, a shape rule failure, bad parameters, or NOMEM. */
mdl_status mdl_layer_new(const mdl_backend *be, const Caffe__LayerParameter *lp, Caffe__Phase phase,
                         int n_bottom, const mdl_shape *bottom_shape, const mdl_exec_ctx *ctx,
                         mdl_layer **out, mdl_error *err);

/* Frees private state and the layer (not the parameter buffers, which the
 * net owns). NULL is safe. */
void mdl_layer_free(mdl_layer *l);

/* Floats in all learnable blobs of l together. */
int64_t mdl_layer_param_count(const mdl_layer *l);

/* Makes param[0..n_param) views onto consecutive ranges of data and diff
 * (blob order, each blob packed). diff may be NULL for nets that never run
 * backward (TEST). */
void mdl_layer_bind_params(mdl_layer *l, float *data, float *diff);

/* Fills bound parameters with the layer's fillers (weight_filler,
 * bias_filler, PReLU's filler, BatchNorm's zeros ...), drawing from rng. */
mdl_status mdl_layer_init_params(mdl_layer *l, mdl_rng *rng, mdl_error *err);

/* Runs the kernels. bottom/top hold n_bottom/n_top tensors of the shapes
 * given at setup (the net's views). backward requires diffs on tops and on
 * bottoms with propagate_down; propagate_down == NULL means all true. */
void mdl_layer_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top);
void mdl_layer_backward(mdl_layer *l, mdl_tensor *const *top, const bool *propagate_down,
                        mdl_tensor *const *bottom);

/* True when the layer runs in place: its first top has its first bottom's
 * name (Caffe's convention; the net then passes one tensor for both). A
 * kernel that must keep its input for backward allocates that copy at
 * setup when this holds, never while running. */
bool mdl_layer_in_place(const mdl_layer *l);
/* From a layer's setup: it keeps count floats of kind (MDL_KEEP_TOP or
 * MDL_KEEP_INPUT) from forward to backward in l->keep.data. */
void mdl_layer_keep(mdl_layer *l, int kind, int64_t count);
/* Records bad data found by a kernel (only the first per forward is kept).
 * item is the position along the batch axis. */
void mdl_layer_fault_set(mdl_layer *l, int64_t item, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* True when the type has a backward pass. */
bool mdl_layer_has_backward(const mdl_layer *l);

/* loss_weight handling, generic over layer types (Caffe's Layer::Forward and
 * SetLossWeights): after forward, the weighted loss sum_i loss_weight[i] *
 * sum(top[i].data); before backward, top[i].diff filled with loss_weight[i]
 * for every top with a non-zero weight. loss_weight has n_top entries. */
double mdl_layer_loss(const mdl_layer *l, const float *loss_weight, mdl_tensor *const *top);
void mdl_layer_seed_loss_diff(const mdl_layer *l, const float *loss_weight, mdl_tensor *const *top);

/* Sets a tensor's shape from a compiler shape (a view with no buffers). */
void mdl_tensor_from_shape(mdl_tensor *t, const mdl_shape *s);

#endif
