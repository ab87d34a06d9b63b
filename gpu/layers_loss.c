/* The GPU's Softmax, SoftmaxWithLoss and Accuracy: see layers_gpu.h. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/layers_gpu.h"

/* ---- Softmax (cuDNN, over one axis as outer x C x inner x 1) -------------- */

typedef struct softmax_priv {
  cudnnTensorDescriptor_t t;
  mdl_softmax_loss_geom g; /* Softmax: outer, C and inner only */
  float *prob, *norm;      /* device, SoftmaxWithLoss only */
} softmax_priv;

/* Softmax and SoftmaxWithLoss (loss): the shared geometry, cuDNN's
 * descriptor of outer x C x inner x 1. */
static mdl_status softmax_new(mdl_layer *l, bool loss, mdl_error *err) {
  softmax_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  mdl_softmax_geom s;
  mdl_status st = loss ? mdl_geom_softmax_loss(l, &p->g, err) : mdl_geom_softmax(l, &s, err);
  if (st) return st;
  if (!loss) p->g.outer = s.outer, p->g.C = s.C, p->g.inner = s.inner;
  if (!fits_int(&l->bottom_shape[0])) return MDL_LAYER_ERR(l, err, "input too large for cuDNN");
  if (!tensor_desc(G(l), &p->t, p->g.outer, p->g.C, p->g.inner, 1))
    return mdl_gpu_take_error(G(l), err);
  return MDL_OK;
}

static mdl_status softmax_setup(mdl_layer *l, mdl_error *err) {
  return softmax_new(l, false, err);
}

static void softmax_free(mdl_layer *l) {
  softmax_priv *p = l->priv;
  if (p->t) cudnnDestroyTensorDescriptor(p->t);
  mdl_gpu_free_bytes(p->prob);
  mdl_gpu_free_bytes(p->norm);
  free(p);
}

static void softmax_run(mdl_layer *l, const float *x, float *y) {
  softmax_priv *p = l->priv;
  mdl_gpu *g = G(l);
  MDL_CUDNN_TRY(g, cudnnSoftmaxForward(g->dnn, CUDNN_SOFTMAX_ACCURATE, CUDNN_SOFTMAX_MODE_CHANNEL,
                                       &ONE, p->t, x, &ZERO, p->t, y));
}

static void softmax_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  softmax_run(l, bottom[0]->data, top[0]->data);
}

static void softmax_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                             mdl_tensor *const *bottom) {
  softmax_priv *p = l->priv;
  mdl_gpu *g = G(l);
  if (pd[0])
    MDL_CUDNN_TRY(g, cudnnSoftmaxBackward(g->dnn, CUDNN_SOFTMAX_ACCURATE,
                                          CUDNN_SOFTMAX_MODE_CHANNEL, &ONE, p->t, top[0]->data,
                                          p->t, top[0]->diff, &ZERO, p->t, bottom[0]->diff));
}

const mdl_layer_impl mdl_gpu_softmax_layer = {"Softmax",       softmax_setup,    NULL,
                                              softmax_forward, softmax_backward, softmax_free};

/* ---- SoftmaxWithLoss: cuDNN's softmax, then our loss kernels ------------- */

static mdl_status swl_setup(mdl_layer *l, mdl_error *err) {
  mdl_status st = softmax_new(l, true, err);
  if (st) return st;
  softmax_priv *p = l->priv;
  p->prob = mdl_gpu_alloc_bytes(G(l), (size_t)(p->g.outer * p->g.C * p->g.inner) * sizeof(float),
                                "the softmax probabilities", err);
  if (!p->prob) return MDL_ERR_NOMEM;
  p->norm = mdl_gpu_alloc_bytes(G(l), sizeof(float), "the loss normaliser", err);
  return p->norm ? MDL_OK : MDL_ERR_NOMEM;
}

static void swl_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  softmax_priv *p = l->priv;
  softmax_run(l, bottom[0]->data, p->prob);
  MDL_CUDA_TRY(G(l), mdl_gk_softmax_loss_fwd(S(l), p->prob, bottom[1]->data, p->g.outer, p->g.C,
                                             p->g.inner, p->g.mode, p->g.ignore, p->g.ignore_label,
                                             top[0]->data, p->norm));
  if (l->n_top > 1) copy_d2d(l, top[1]->data, p->prob, p->g.outer * p->g.C * p->g.inner);
}

static void swl_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  softmax_priv *p = l->priv;
  if (!pd[0]) return;
  MDL_CUDA_TRY(G(l), mdl_gk_softmax_loss_bwd(S(l), p->prob, bottom[1]->data, p->g.outer, p->g.C,
                                             p->g.inner, p->g.ignore, p->g.ignore_label,
                                             top[0]->diff, p->norm, bottom[0]->diff));
}

const mdl_layer_impl mdl_gpu_swl_layer = {"SoftmaxWithLoss", swl_setup,    NULL,
                                          swl_forward,       swl_backward, softmax_free};

/* ---- Accuracy: top-k, ignore_label ----------------------------------------- */

typedef mdl_accuracy_geom acc_priv;

static mdl_status acc_setup(mdl_layer *l, mdl_error *err) {
  acc_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  mdl_status st = mdl_geom_accuracy(l, p, err);
  if (st) return st;
  if (l->n_top > 1) return MDL_LAYER_ERR(l, err, "the per-class top does not run on the GPU");
  return MDL_OK;
}

static void acc_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  acc_priv *p = l->priv;
  MDL_CUDA_TRY(G(l), mdl_gk_accuracy(S(l), bottom[0]->data, bottom[1]->data, p->outer, p->C,
                                     p->inner, p->top_k, p->ignore, p->ignore_label, top[0]->data));
}

const mdl_layer_impl mdl_gpu_accuracy_layer = {"Accuracy",  acc_setup, NULL,
                                               acc_forward, NULL,      NULL};
