/* The GPU's Softmax, SoftmaxWithLoss and Accuracy: see layers_gpu.h. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/layers_gpu.h"

/* ---- Softmax (cuDNN, over one axis as outer x C x inner x 1) -------------- */

typedef struct softmax_priv {
  cudnnTensorDescriptor_t t;
  int64_t outer, C, inner;
  /* SoftmaxWithLoss only */
  float *prob, *norm; /* device */
  int mode, ignore_label;
  bool ignore;
} softmax_priv;

static mdl_status softmax_common(mdl_layer *l, const Caffe__SoftmaxParameter *sp, mdl_error *err) {
  const mdl_shape *b = &l->bottom_shape[0];
  int axis = shape_axis(b, sp->axis);
  if (axis < 0) return LAYER_ERR(l, err, "softmax axis %d out of range", sp->axis);
  if (!fits_int(b)) return LAYER_ERR(l, err, "input too large for cuDNN");
  softmax_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  p->outer = shape_count(b, 0, axis);
  p->C = b->d[axis];
  p->inner = shape_count(b, axis + 1, b->n);
  if (!tensor_desc(G(l), &p->t, p->outer, p->C, p->inner, 1)) return mdl_gpu_take_error(G(l), err);
  return MDL_OK;
}

static mdl_status softmax_setup(mdl_layer *l, mdl_error *err) {
  return softmax_common(
      l, PARAM(l, softmax_param, Caffe__SoftmaxParameter, CAFFE__SOFTMAX_PARAMETER__INIT), err);
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

static int loss_norm_mode(const mdl_layer *l) {
  const Caffe__LossParameter *p = l->lp->loss_param;
  if (!p) return CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID;
  if (p->has_normalization) return p->normalization;
  if (p->has_normalize)
    return p->normalize ? CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID
                        : CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__BATCH_SIZE;
  return CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID;
}

static mdl_status swl_setup(mdl_layer *l, mdl_error *err) {
  mdl_status st = softmax_setup(l, err);
  if (st) return st;
  softmax_priv *p = l->priv;
  int64_t nlab = shape_count(&l->bottom_shape[1], 0, l->bottom_shape[1].n);
  if (nlab != p->outer * p->inner)
    return LAYER_ERR(l, err, "%lld labels for %lld predictions", (long long)nlab,
                     (long long)(p->outer * p->inner));
  p->mode = loss_norm_mode(l);
  const Caffe__LossParameter *lp = l->lp->loss_param;
  p->ignore = lp && lp->has_ignore_label;
  p->ignore_label = p->ignore ? lp->ignore_label : 0;
  p->prob = mdl_gpu_alloc_bytes(G(l), (size_t)(p->outer * p->C * p->inner) * sizeof(float),
                                "the softmax probabilities", err);
  if (!p->prob) return MDL_ERR_NOMEM;
  p->norm = mdl_gpu_alloc_bytes(G(l), sizeof(float), "the loss normaliser", err);
  return p->norm ? MDL_OK : MDL_ERR_NOMEM;
}

static void swl_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  softmax_priv *p = l->priv;
  softmax_run(l, bottom[0]->data, p->prob);
  MDL_CUDA_TRY(G(l),
               mdl_gk_softmax_loss_fwd(S(l), p->prob, bottom[1]->data, p->outer, p->C, p->inner,
                                       p->mode, p->ignore, p->ignore_label, top[0]->data, p->norm));
  if (l->n_top > 1) copy_d2d(l, top[1]->data, p->prob, p->outer * p->C * p->inner);
}

static void swl_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  softmax_priv *p = l->priv;
  if (!pd[0]) return;
  MDL_CUDA_TRY(G(l), mdl_gk_softmax_loss_bwd(S(l), p->prob, bottom[1]->data, p->outer, p->C,
                                             p->inner, p->ignore, p->ignore_label, top[0]->diff,
                                             p->norm, bottom[0]->diff));
}

const mdl_layer_impl mdl_gpu_swl_layer = {"SoftmaxWithLoss", swl_setup,    NULL,
                                          swl_forward,       swl_backward, softmax_free};

/* ---- Accuracy: top-k, ignore_label ----------------------------------------- */

typedef struct acc_priv {
  int64_t outer, C, inner, k;
  bool ignore;
  int ignore_label;
} acc_priv;

static mdl_status acc_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__AccuracyParameter *ap =
      PARAM(l, accuracy_param, Caffe__AccuracyParameter, CAFFE__ACCURACY_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  int axis = shape_axis(b, ap->axis);
  if (axis < 0) return LAYER_ERR(l, err, "axis %d out of range", ap->axis);
  if (l->n_top > 1) return LAYER_ERR(l, err, "the per-class top does not run on the GPU");
  acc_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  p->outer = shape_count(b, 0, axis);
  p->C = b->d[axis];
  p->inner = shape_count(b, axis + 1, b->n);
  p->k = ap->top_k;
  p->ignore = ap->has_ignore_label;
  p->ignore_label = ap->ignore_label;
  if (p->k < 1 || p->k > p->C)
    return LAYER_ERR(l, err, "top_k %lld must be in 1..%lld", (long long)p->k, (long long)p->C);
  if (shape_count(&l->bottom_shape[1], 0, l->bottom_shape[1].n) != p->outer * p->inner)
    return LAYER_ERR(l, err, "label count does not match the predictions");
  return MDL_OK;
}

static void acc_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  acc_priv *p = l->priv;
  MDL_CUDA_TRY(G(l), mdl_gk_accuracy(S(l), bottom[0]->data, bottom[1]->data, p->outer, p->C,
                                     p->inner, p->k, p->ignore, p->ignore_label, top[0]->data));
}

const mdl_layer_impl mdl_gpu_accuracy_layer = {"Accuracy",  acc_setup, NULL,
                                               acc_forward, NULL,      NULL};
