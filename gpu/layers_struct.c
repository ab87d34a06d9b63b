/* The GPU's Input, Split, Flatten, Reshape, Silence, Eltwise and Concat: see layers_gpu.h. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/layers_gpu.h"

/* ---- Input: the net writes the tops --------------------------------------- */

static void input_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  (void)l, (void)bottom, (void)top;
}
const mdl_layer_impl mdl_gpu_input_layer = {"Input", NULL, NULL, input_forward, NULL, NULL};

/* ---- Split, Flatten, Reshape, Silence --------------------------------------- */

static void split_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  for (int i = 0; i < l->n_top; i++) copy_d2d(l, top[i]->data, bottom[0]->data, bottom[0]->count);
}

static void split_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                           mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  int64_t n = bottom[0]->count;
  float *dx = bottom[0]->diff;
  if (l->n_top == 0) {
    MDL_CUDA_TRY(G(l), mdl_gk_fill(S(l), dx, n, 0.f));
    return;
  }
  copy_d2d(l, dx, top[0]->diff, n); /* dx may alias top 0's diff */
  for (int i = 1; i < l->n_top; i++) MDL_CUDA_TRY(G(l), mdl_gk_add(S(l), top[i]->diff, dx, n));
}

const mdl_layer_impl mdl_gpu_split_layer = {"Split",       NULL,           NULL,
                                            split_forward, split_backward, NULL};

static void same_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  copy_d2d(l, top[0]->data, bottom[0]->data, bottom[0]->count);
}
static void same_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  if (pd[0]) copy_d2d(l, bottom[0]->diff, top[0]->diff, bottom[0]->count);
}
const mdl_layer_impl mdl_gpu_flatten_layer = {"Flatten",    NULL,          NULL,
                                              same_forward, same_backward, NULL};
const mdl_layer_impl mdl_gpu_reshape_layer = {"Reshape",    NULL,          NULL,
                                              same_forward, same_backward, NULL};

static void silence_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  (void)l, (void)bottom, (void)top;
}
static void silence_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                             mdl_tensor *const *bottom) {
  (void)top;
  for (int i = 0; i < l->n_bottom; i++)
    if (pd[i] && bottom[i]->diff)
      MDL_CUDA_TRY(G(l), mdl_gk_fill(S(l), bottom[i]->diff, bottom[i]->count, 0.f));
}
const mdl_layer_impl mdl_gpu_silence_layer = {"Silence",        NULL, NULL, silence_forward,
                                              silence_backward, NULL};

/* ---- Eltwise: PROD, SUM (coeff), MAX (argmax mask) ------------------------- */

typedef struct eltwise_priv {
  int op;
  int64_t count;
  float coeff[MDL_GK_MAX_ELT];
  int32_t *mask; /* device, MAX only */
} eltwise_priv;

static mdl_status eltwise_setup(mdl_layer *l, mdl_error *err) {
  if (l->n_bottom > MDL_GK_MAX_ELT)
    return MDL_LAYER_ERR(l, err, "%d bottoms; the GPU's Eltwise takes at most %d", l->n_bottom,
                         MDL_GK_MAX_ELT);
  eltwise_priv *ep = mdl_xcalloc(1, sizeof *ep);
  l->priv = ep;
  mdl_eltwise_geom g;
  mdl_status st = mdl_geom_eltwise(l, &g, ep->coeff, err);
  if (st) return st;
  ep->op = g.op;
  ep->count = g.count;
  if (ep->op == CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__MAX) {
    ep->mask =
        mdl_gpu_alloc_bytes(G(l), (size_t)ep->count * sizeof(int32_t), "the eltwise mask", err);
    if (!ep->mask) return MDL_ERR_NOMEM;
  }
  return MDL_OK;
}

static void eltwise_free(mdl_layer *l) {
  eltwise_priv *ep = l->priv;
  mdl_gpu_free_bytes(ep->mask);
  free(ep);
}

static mdl_gk_elt elt_args(const mdl_layer *l, mdl_tensor *const *bottom, const bool *pd) {
  const eltwise_priv *ep = l->priv;
  mdl_gk_elt e;
  memset(&e, 0, sizeof e);
  e.n = l->n_bottom;
  e.op = ep->op;
  for (int i = 0; i < l->n_bottom; i++) {
    e.x[i] = bottom[i]->data;
    e.dx[i] = pd && pd[i] ? bottom[i]->diff : NULL;
    e.coeff[i] = ep->coeff[i];
  }
  return e;
}

static void eltwise_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  eltwise_priv *ep = l->priv;
  mdl_gk_elt e = elt_args(l, bottom, NULL);
  MDL_CUDA_TRY(G(l), mdl_gk_eltwise_fwd(S(l), &e, top[0]->data, ep->mask, ep->count));
}

static void eltwise_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                             mdl_tensor *const *bottom) {
  eltwise_priv *ep = l->priv;
  mdl_gk_elt e = elt_args(l, bottom, pd);
  MDL_CUDA_TRY(G(l), mdl_gk_eltwise_bwd(S(l), &e, top[0]->diff, ep->mask, ep->count));
}

const mdl_layer_impl mdl_gpu_eltwise_layer = {"Eltwise",       eltwise_setup,    NULL,
                                              eltwise_forward, eltwise_backward, eltwise_free};

/* ---- Concat: outer x (sum of parts along axis) x inner, by 2-D copies ---- */

typedef struct cat_priv {
  mdl_concat_geom g;
  int64_t part[64];
} cat_priv;

static mdl_status concat_setup(mdl_layer *l, mdl_error *err) {
  if (l->n_bottom > 64) return MDL_LAYER_ERR(l, err, "more than 64 bottoms");
  cat_priv *cp = mdl_xcalloc(1, sizeof *cp);
  l->priv = cp;
  return mdl_geom_concat(l, &cp->g, cp->part, err);
}

static void cat_move(mdl_layer *l, mdl_tensor *const *small, const bool *pd, mdl_tensor *big,
                     bool to_big, bool use_diff) {
  const cat_priv *cp = l->priv;
  const size_t pitch = (size_t)(cp->g.total * cp->g.inner) * sizeof(float);
  int64_t off = 0;
  for (int i = 0; i < cp->g.n; i++) {
    int64_t w = cp->part[i] * cp->g.inner;
    if (!(pd && !pd[i]) && w > 0 && cp->g.outer > 0) {
      float *s = use_diff ? small[i]->diff : small[i]->data;
      float *b = (use_diff ? big->diff : big->data) + off;
      size_t wb = (size_t)w * sizeof(float);
      if (to_big)
        MDL_CUDA_TRY(G(l), cudaMemcpy2DAsync(b, pitch, s, wb, wb, (size_t)cp->g.outer,
                                             cudaMemcpyDeviceToDevice, S(l)));
      else
        MDL_CUDA_TRY(G(l), cudaMemcpy2DAsync(s, wb, b, pitch, wb, (size_t)cp->g.outer,
                                             cudaMemcpyDeviceToDevice, S(l)));
    }
    off += w;
  }
}

static void concat_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  cat_move(l, bottom, NULL, top[0], true, false);
}
static void concat_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                            mdl_tensor *const *bottom) {
  cat_move(l, bottom, pd, top[0], false, true);
}

const mdl_layer_impl mdl_gpu_concat_layer = {"Concat",       concat_setup,    NULL,
                                             concat_forward, concat_backward, NULL};
