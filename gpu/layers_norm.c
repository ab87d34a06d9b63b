/* The GPU's BatchNorm and Scale: see layers_gpu.h. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/layers_gpu.h"

/* ---- BatchNorm: Caffe's three blobs (mean, variance, scale factor) ------- */

typedef struct bn_priv {
  mdl_bn_geom g;
  float *xnorm, *mean, *istd; /* device */
  double *s1, *s2;            /* device, per channel */
} bn_priv;

static mdl_status bn_setup(mdl_layer *l, mdl_error *err) {
  bn_priv *bp = mdl_xcalloc(1, sizeof *bp);
  l->priv = bp;
  mdl_status st = mdl_geom_bn(l, &bp->g, err);
  if (st) return st;
  const int64_t count = bp->g.count;
  mdl_gpu *g = G(l);
  if (!(bp->xnorm = mdl_gpu_alloc_bytes(g, (size_t)count * sizeof(float), "BatchNorm", err)) ||
      !(bp->mean = mdl_gpu_alloc_bytes(g, (size_t)bp->g.C * sizeof(float), "BatchNorm", err)) ||
      !(bp->istd = mdl_gpu_alloc_bytes(g, (size_t)bp->g.C * sizeof(float), "BatchNorm", err)) ||
      !(bp->s1 = mdl_gpu_alloc_bytes(g, (size_t)bp->g.C * sizeof(double), "BatchNorm", err)) ||
      !(bp->s2 = mdl_gpu_alloc_bytes(g, (size_t)bp->g.C * sizeof(double), "BatchNorm", err)))
    return MDL_ERR_NOMEM;
  return MDL_OK;
}

static void bn_free(mdl_layer *l) {
  bn_priv *bp = l->priv;
  mdl_gpu_free_bytes(bp->xnorm);
  mdl_gpu_free_bytes(bp->mean);
  mdl_gpu_free_bytes(bp->istd);
  mdl_gpu_free_bytes(bp->s1);
  mdl_gpu_free_bytes(bp->s2);
  free(bp);
}

static mdl_status bn_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  mdl_gpu *g = G(l);
  (void)rng;
  for (int i = 0; i < 3; i++)
    MDL_CUDA_TRY(g, mdl_gk_fill(g->stream, l->param[i].data, l->param[i].count, 0.f));
  return mdl_gpu_take_error(g, err);
}

static void bn_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  bn_priv *bp = l->priv;
  mdl_gpu *g = G(l);
  const float *x = bottom[0]->data;
  const double m = (double)bp->g.num * (double)bp->g.inner;
  if (!bp->g.global)
    MDL_CUDA_TRY(
        g, mdl_gk_channel_sums(g->stream, x, x, bp->g.num, bp->g.C, bp->g.inner, bp->s1, bp->s2));
  MDL_CUDA_TRY(g, mdl_gk_bn_stats(g->stream, bp->s1, bp->s2, bp->g.C, m, bp->g.eps, bp->g.maf,
                                  l->param[0].data, l->param[1].data, l->param[2].data, bp->mean,
                                  bp->istd, !bp->g.global));
  MDL_CUDA_TRY(g, mdl_gk_bn_apply(g->stream, x, top[0]->data, bp->xnorm, bp->mean, bp->istd,
                                  bp->g.num, bp->g.C, bp->g.inner));
}

static void bn_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                        mdl_tensor *const *bottom) {
  bn_priv *bp = l->priv;
  mdl_gpu *g = G(l);
  if (!pd[0]) return;
  const double m = (double)bp->g.num * (double)bp->g.inner;
  if (!bp->g.global)
    MDL_CUDA_TRY(g, mdl_gk_channel_sums(g->stream, top[0]->diff, bp->xnorm, bp->g.num, bp->g.C,
                                        bp->g.inner, bp->s1, bp->s2));
  MDL_CUDA_TRY(g, mdl_gk_bn_bwd(g->stream, top[0]->diff, bp->xnorm, bp->s1, bp->s2, bp->istd, m,
                                bp->g.global, bottom[0]->diff, bp->g.num, bp->g.C, bp->g.inner));
}

const mdl_layer_impl mdl_gpu_bn_layer = {"BatchNorm", bn_setup,    bn_init,
                                         bn_forward,  bn_backward, bn_free};

/* ---- Scale: one bottom, a learned scale (and bias) over axis..axis+k ----- */

typedef struct scale_priv {
  mdl_scale_geom g;
  float *saved_x; /* device: in place, the input for the scale gradient */
  double *s1, *s2;
} scale_priv;

static mdl_status scale_setup(mdl_layer *l, mdl_error *err) {
  if (l->n_bottom != 1 || l->n_param < 1)
    return MDL_LAYER_ERR(l, err, "Scale with a second bottom does not run on the GPU");
  scale_priv *sp = mdl_xcalloc(1, sizeof *sp);
  l->priv = sp;
  mdl_status st = mdl_geom_scale(l, &sp->g, err);
  if (st) return st;
  mdl_gpu *g = G(l);
  if (mdl_layer_in_place(l) &&
      !(sp->saved_x = mdl_gpu_alloc_bytes(g, (size_t)sp->g.count * sizeof(float),
                                          "a copy of its in-place input", err)))
    return MDL_ERR_NOMEM;
  if (!(sp->s1 = mdl_gpu_alloc_bytes(g, (size_t)sp->g.D * sizeof(double), "Scale", err)) ||
      !(sp->s2 = mdl_gpu_alloc_bytes(g, (size_t)sp->g.D * sizeof(double), "Scale", err)))
    return MDL_ERR_NOMEM;
  return MDL_OK;
}

static void scale_free(mdl_layer *l) {
  scale_priv *sp = l->priv;
  mdl_gpu_free_bytes(sp->saved_x);
  mdl_gpu_free_bytes(sp->s1);
  mdl_gpu_free_bytes(sp->s2);
  free(sp);
}

static mdl_status scale_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  const Caffe__ScaleParameter *p =
      MDL_LAYER_PARAM(l, scale_param, Caffe__ScaleParameter, CAFFE__SCALE_PARAMETER__INIT);
  mdl_gpu *g = G(l);
  mdl_status st = MDL_OK;
  /* as the CPU: the scale's filler or ones, then the bias's filler */
  if (p->filler) {
    const Caffe__FillerParameter *f[1] = {p->filler};
    int n = l->n_param;
    l->n_param = 1;
    st = mdl_gpu_fill_params(l, f, rng, err);
    l->n_param = n;
  } else {
    MDL_CUDA_TRY(g, mdl_gk_fill(g->stream, l->param[0].data, l->param[0].count, 1.f));
    st = mdl_gpu_take_error(g, err);
  }
  if (!st && l->n_param > 1) {
    mdl_tensor keep = l->param[0];
    const Caffe__FillerParameter *f[1] = {p->bias_filler};
    l->param[0] = l->param[1];
    int n = l->n_param;
    l->n_param = 1;
    st = mdl_gpu_fill_params(l, f, rng, err);
    l->n_param = n;
    l->param[0] = keep;
  }
  return st;
}

static void scale_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  scale_priv *sp = l->priv;
  if (top[0] == bottom[0] && sp->saved_x) copy_d2d(l, sp->saved_x, bottom[0]->data, sp->g.count);
  MDL_CUDA_TRY(G(l), mdl_gk_scale(S(l), bottom[0]->data, l->param[0].data,
                                  sp->g.bias ? l->param[1].data : NULL, top[0]->data, sp->g.outer,
                                  sp->g.D, sp->g.inner));
}

static void scale_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                           mdl_tensor *const *bottom) {
  scale_priv *sp = l->priv;
  mdl_gpu *g = G(l);
  const float *dy = top[0]->diff;
  const float *x = top[0] == bottom[0] && sp->saved_x ? sp->saved_x : bottom[0]->data;
  /* s1 = sum dy (bias), s2 = sum dy * x (scale), per operand element */
  MDL_CUDA_TRY(
      g, mdl_gk_channel_sums(g->stream, dy, x, sp->g.outer, sp->g.D, sp->g.inner, sp->s1, sp->s2));
  if (sp->g.bias && l->param[1].diff)
    MDL_CUDA_TRY(g, mdl_gk_add_double(g->stream, l->param[1].diff, sp->s1, sp->g.D));
  if (l->param[0].diff)
    MDL_CUDA_TRY(g, mdl_gk_add_double(g->stream, l->param[0].diff, sp->s2, sp->g.D));
  if (pd[0])
    MDL_CUDA_TRY(g, mdl_gk_scale(g->stream, dy, l->param[0].data, NULL, bottom[0]->diff,
                                 sp->g.outer, sp->g.D, sp->g.inner));
}

const mdl_layer_impl mdl_gpu_scale_layer = {"Scale",       scale_setup,    scale_init,
                                            scale_forward, scale_backward, scale_free};
