/* The small layers that fit no family: Swish and Clip (element-wise),
 * Parameter (a learnable blob as a top), BatchReindex and Filter (row
 * gathers along axis 0), Im2col (2-D). Single-threaded: they are cheap next
 * to the layers around them. Filter's kept count varies with the data but
 * the plan is static; see filter_forward for what its tops hold. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu/layers_cpu.h"

/* ---- Swish: y = x * sigmoid(beta x) --------------------------------------- */

typedef struct swish_priv {
  float beta;
  float *sig; /* sigmoid(beta x) of the last forward: backward may run in place */
} swish_priv;

static mdl_status swish_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__SwishParameter *p =
      MDL_LAYER_PARAM(l, swish_param, Caffe__SwishParameter, CAFFE__SWISH_PARAMETER__INIT);
  swish_priv *sp = mdl_xcalloc(1, sizeof *sp);
  l->priv = sp;
  sp->beta = p->beta;
  sp->sig = mdl_falloc(mdl_shape_count_axes(&l->bottom_shape[0], 0, l->bottom_shape[0].n));
  if (!sp->sig) return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": swish buffer", l->name);
  return MDL_OK;
}

static void swish_free(mdl_layer *l) {
  swish_priv *sp = l->priv;
  mdl_ffree(sp->sig);
  free(sp);
}

static void swish_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  swish_priv *sp = l->priv;
  const float *x = bottom[0]->data;
  float *y = top[0]->data;
  for (int64_t i = 0; i < bottom[0]->count; i++) {
    float s = 1.f / (1.f + expf(-sp->beta * x[i]));
    sp->sig[i] = s;
    y[i] = x[i] * s;
  }
}

/* dy/dx = s + beta x s (1 - s) = beta y + s (1 - beta y), from y and s only. */
static void swish_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                           mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  swish_priv *sp = l->priv;
  const float *y = top[0]->data, *dy = top[0]->diff;
  float *dx = bottom[0]->diff;
  for (int64_t i = 0; i < top[0]->count; i++) {
    float by = sp->beta * y[i];
    dx[i] = dy[i] * (by + sp->sig[i] * (1.f - by));
  }
}

const mdl_layer_impl mdl_cpu_swish_layer = {"Swish",       swish_setup,    NULL,
                                            swish_forward, swish_backward, swish_free};

/* ---- Clip: y = min(max(x, min), max) -------------------------------------- */

typedef struct clip_priv {
  float lo, hi;
  unsigned char *pass; /* x within [lo, hi] at the last forward (in place loses x) */
} clip_priv;

static mdl_status clip_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__ClipParameter *p = l->lp->clip_param;
  if (!p || !p->has_min || !p->has_max)
    return MDL_LAYER_ERR(l, err, "clip_param.min and clip_param.max must both be given");
  if (!(p->min <= p->max))
    return MDL_LAYER_ERR(l, err, "clip_param.min %g is above clip_param.max %g", p->min, p->max);
  clip_priv *cp = mdl_xcalloc(1, sizeof *cp);
  l->priv = cp;
  cp->lo = p->min;
  cp->hi = p->max;
  int64_t n = mdl_shape_count_axes(&l->bottom_shape[0], 0, l->bottom_shape[0].n);
  cp->pass = mdl_xmalloc((size_t)(n ? n : 1));
  return MDL_OK;
}

static void clip_free(mdl_layer *l) {
  clip_priv *cp = l->priv;
  free(cp->pass);
  free(cp);
}

static void clip_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  clip_priv *cp = l->priv;
  const float *x = bottom[0]->data;
  float *y = top[0]->data;
  for (int64_t i = 0; i < bottom[0]->count; i++) {
    float v = x[i];
    cp->pass[i] = v >= cp->lo && v <= cp->hi; /* Caffe passes the gradient at the bounds */
    y[i] = v < cp->lo ? cp->lo : v > cp->hi ? cp->hi : v;
  }
}

static void clip_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  clip_priv *cp = l->priv;
  const float *dy = top[0]->diff;
  float *dx = bottom[0]->diff;
  for (int64_t i = 0; i < top[0]->count; i++) dx[i] = cp->pass[i] ? dy[i] : 0.f;
}

const mdl_layer_impl mdl_cpu_clip_layer = {"Clip",       clip_setup,    NULL,
                                           clip_forward, clip_backward, clip_free};

/* ---- Parameter: top = the layer's one blob -------------------------------- */

/* Caffe leaves the blob zero (no filler); weights come from a .caffemodel or
 * from training. */
static mdl_status parameter_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  (void)rng;
  (void)err;
  mdl_filler_constant(l->param[0].data, l->param[0].count, 0.f);
  return MDL_OK;
}

static void parameter_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  (void)bottom;
  memcpy(top[0]->data, l->param[0].data, (size_t)top[0]->count * sizeof(float));
}

static void parameter_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                               mdl_tensor *const *bottom) {
  (void)pd;
  (void)bottom;
  if (!l->param[0].diff) return;
  for (int64_t i = 0; i < top[0]->count; i++) l->param[0].diff[i] += top[0]->diff[i];
}

const mdl_layer_impl mdl_cpu_parameter_layer = {
    "Parameter", NULL, parameter_init, parameter_forward, parameter_backward, NULL};

/* ---- BatchReindex: top[m] = bottom[idx[m]] -------------------------------- */

/* bottom 0: N x inner, bottom 1: M indices (floats holding integers), top:
 * M x inner. An index outside [0, N) gives a zero row (Caffe asserts). */
static int64_t row_index(float v, int64_t n) {
  if (!(v >= 0.f) || v >= (float)n) return -1;
  return (int64_t)v;
}

static void reindex_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  const mdl_shape *b = &l->bottom_shape[0];
  int64_t n = b->d[0], inner = mdl_shape_count_axes(b, 1, b->n), m = l->bottom_shape[1].d[0];
  for (int64_t i = 0; i < m; i++) {
    int64_t r = row_index(bottom[1]->data[i], n);
    float *dst = top[0]->data + i * inner;
    if (r < 0)
      memset(dst, 0, (size_t)inner * sizeof(float));
    else
      memcpy(dst, bottom[0]->data + r * inner, (size_t)inner * sizeof(float));
  }
}

static void reindex_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                             mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  const mdl_shape *b = &l->bottom_shape[0];
  int64_t n = b->d[0], inner = mdl_shape_count_axes(b, 1, b->n), m = l->bottom_shape[1].d[0];
  memset(bottom[0]->diff, 0, (size_t)bottom[0]->count * sizeof(float));
  for (int64_t i = 0; i < m; i++) {
    int64_t r = row_index(bottom[1]->data[i], n);
    if (r < 0) continue;
    float *dst = bottom[0]->diff + r * inner;
    const float *src = top[0]->diff + i * inner;
    for (int64_t k = 0; k < inner; k++) dst[k] += src[k];
  }
}

const mdl_layer_impl mdl_cpu_batch_reindex_layer = {"BatchReindex",   NULL, NULL, reindex_forward,
                                                    reindex_backward, NULL};

/* ---- Filter: keep the items whose selector is non-zero -------------------- */

/* Bottoms 0..K-1: N x ..., bottom K: the selector, N (x 1 ...). Caffe
 * reshapes each top to the kept count k; memdl's plan fixes shapes at
 * compile time, so each top keeps N rows: rows [0, k) are the kept items in
 * order and rows [k, N) are zero, their gradients dropped. The kept count
 * is in the filter_priv for tests and tools. */
typedef struct filter_priv {
  int64_t n, kept;
  int64_t *idx; /* kept item indices, first `kept` valid */
} filter_priv;

static mdl_status filter_setup(mdl_layer *l, mdl_error *err) {
  (void)err;
  filter_priv *fp = mdl_xcalloc(1, sizeof *fp);
  l->priv = fp;
  fp->n = l->bottom_shape[l->n_bottom - 1].d[0];
  fp->idx = mdl_xmalloc((size_t)(fp->n ? fp->n : 1) * sizeof(int64_t));
  return MDL_OK;
}

static void filter_free(mdl_layer *l) {
  filter_priv *fp = l->priv;
  free(fp->idx);
  free(fp);
}

static void filter_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  filter_priv *fp = l->priv;
  const float *sel = bottom[l->n_bottom - 1]->data;
  fp->kept = 0;
  for (int64_t i = 0; i < fp->n; i++)
    if (sel[i] != 0.f) fp->idx[fp->kept++] = i;
  for (int t = 0; t < l->n_top; t++) {
    int64_t inner = fp->n ? bottom[t]->count / fp->n : 0;
    for (int64_t j = 0; j < fp->kept; j++)
      memcpy(top[t]->data + j * inner, bottom[t]->data + fp->idx[j] * inner,
             (size_t)inner * sizeof(float));
    memset(top[t]->data + fp->kept * inner, 0,
           (size_t)((fp->n - fp->kept) * inner) * sizeof(float));
  }
}

static void filter_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                            mdl_tensor *const *bottom) {
  filter_priv *fp = l->priv;
  for (int t = 0; t < l->n_top; t++) {
    if (!pd[t]) continue;
    int64_t inner = fp->n ? bottom[t]->count / fp->n : 0;
    memset(bottom[t]->diff, 0, (size_t)bottom[t]->count * sizeof(float));
    for (int64_t j = 0; j < fp->kept; j++)
      memcpy(bottom[t]->diff + fp->idx[j] * inner, top[t]->diff + j * inner,
             (size_t)inner * sizeof(float));
  }
}

const mdl_layer_impl mdl_cpu_filter_layer = {"Filter",       filter_setup,    NULL,
                                             filter_forward, filter_backward, filter_free};

/* ---- Im2col: N x C x H x W -> N x (C kh kw) x OH x OW ---------------------- */

typedef struct im2col_priv {
  mdl_conv_geom g;
  int64_t num, im_dim, col_dim;
} im2col_priv;

static mdl_status im2col_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__ConvolutionParameter *p = MDL_LAYER_PARAM(
      l, convolution_param, Caffe__ConvolutionParameter, CAFFE__CONVOLUTION_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0], *t = &l->top_shape[0];
  if (mdl_shape_axis(b, p->axis) != 1 || b->n != 4)
    return MDL_LAYER_ERR(l, err, "only 2-D im2col over axis 1 of 4-axis blobs is implemented");
  im2col_priv *ip = mdl_xcalloc(1, sizeof *ip);
  l->priv = ip;
  mdl_window_geom w;
  mdl_status st = mdl_geom_conv_window(l, p, &w, err);
  if (st) return st;
  ip->g = mdl_cpu_im2col_geom(&w, b->d[1], b->d[2], b->d[3], t->d[2], t->d[3]);
  ip->num = b->d[0];
  ip->im_dim = mdl_shape_count_axes(b, 1, 4);
  ip->col_dim = mdl_shape_count_axes(t, 1, 4);
  return MDL_OK;
}

static void im2col_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  const im2col_priv *ip = l->priv;
  /* one image at a time: the batched form interleaves images in columns */
  for (int64_t n = 0; n < ip->num; n++)
    mdl_im2col_batch(l->ctx.pool, &ip->g, 1, bottom[0]->data + n * ip->im_dim, ip->im_dim, 0,
                     ip->g.channels, top[0]->data + n * ip->col_dim);
}

static void im2col_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                            mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  const im2col_priv *ip = l->priv;
  memset(bottom[0]->diff, 0, (size_t)bottom[0]->count * sizeof(float));
  for (int64_t n = 0; n < ip->num; n++)
    mdl_col2im_batch(l->ctx.pool, &ip->g, 1, top[0]->diff + n * ip->col_dim, 0, ip->g.channels,
                     bottom[0]->diff + n * ip->im_dim, ip->im_dim);
}

const mdl_layer_impl mdl_cpu_im2col_layer = {"Im2col",       im2col_setup,    NULL,
                                             im2col_forward, im2col_backward, NULL};
