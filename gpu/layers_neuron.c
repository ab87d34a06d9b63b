/* The GPU's ReLU, Sigmoid, TanH and Dropout: see layers_gpu.h. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/layers_gpu.h"

/* ---- ReLU (negative slope), Sigmoid, TanH --------------------------------- */

static void relu_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  MDL_CUDA_TRY(G(l), mdl_gk_relu_fwd(S(l), bottom[0]->data, top[0]->data, top[0]->count,
                                     mdl_geom_relu_slope(l)));
}
/* In place, x is the output: its sign is the input's for slope >= 0 (Caffe). */
static void relu_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  if (pd[0])
    MDL_CUDA_TRY(G(l), mdl_gk_relu_bwd(S(l), bottom[0]->data, top[0]->diff, bottom[0]->diff,
                                       top[0]->count, mdl_geom_relu_slope(l)));
}
const mdl_layer_impl mdl_gpu_relu_layer = {"ReLU", NULL, NULL, relu_forward, relu_backward, NULL};

static int act_kind(const mdl_layer *l) {
  return strcmp(l->impl->type, "Sigmoid") == 0 ? 0 : 1;
}
static void act_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  MDL_CUDA_TRY(G(l),
               mdl_gk_act_fwd(S(l), act_kind(l), bottom[0]->data, top[0]->data, top[0]->count));
}
static void act_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  if (pd[0])
    MDL_CUDA_TRY(G(l), mdl_gk_act_bwd(S(l), act_kind(l), top[0]->data, top[0]->diff,
                                      bottom[0]->diff, top[0]->count));
}
const mdl_layer_impl mdl_gpu_sigmoid_layer = {"Sigmoid",   NULL,         NULL,
                                              act_forward, act_backward, NULL};
const mdl_layer_impl mdl_gpu_tanh_layer = {"TanH", NULL, NULL, act_forward, act_backward, NULL};

/* ---- Dropout: the CPU's counter-based draws, recomputed for backward ----- */

typedef struct dropout_priv {
  mdl_dropout_geom g;
  uint64_t seed, ctr; /* the draws of the last TRAIN forward */
} dropout_priv;

static mdl_status dropout_setup(mdl_layer *l, mdl_error *err) {
  dropout_priv *dp = mdl_xcalloc(1, sizeof *dp);
  l->priv = dp;
  return mdl_geom_dropout(l, &dp->g, err);
}

static void dropout_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  dropout_priv *dp = l->priv;
  if (l->phase != CAFFE__PHASE__TRAIN) {
    copy_d2d(l, top[0]->data, bottom[0]->data, dp->g.count);
    return;
  }
  mdl_rng fallback = {0, 0};
  mdl_rng *rng = l->ctx.rng ? l->ctx.rng : &fallback;
  dp->seed = rng->seed;
  dp->ctr = rng->counter;
  rng->counter += (uint64_t)dp->g.count;
  MDL_CUDA_TRY(G(l), mdl_gk_dropout(S(l), bottom[0]->data, top[0]->data, dp->g.count, dp->seed,
                                    dp->ctr, dp->g.thresh, dp->g.scale));
}

/* dx = dy * mask * scale: the same draws select the same units. */
static void dropout_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                             mdl_tensor *const *bottom) {
  dropout_priv *dp = l->priv;
  if (!pd[0]) return;
  if (l->phase != CAFFE__PHASE__TRAIN) {
    copy_d2d(l, bottom[0]->diff, top[0]->diff, dp->g.count);
    return;
  }
  MDL_CUDA_TRY(G(l), mdl_gk_dropout(S(l), top[0]->diff, bottom[0]->diff, dp->g.count, dp->seed,
                                    dp->ctr, dp->g.thresh, dp->g.scale));
}

const mdl_layer_impl mdl_gpu_dropout_layer = {"Dropout",       dropout_setup,    NULL,
                                              dropout_forward, dropout_backward, NULL};
