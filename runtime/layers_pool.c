/* Pooling (MAX with argmax mask, AVE with Caffe's padding-aware divisor,
 * global) over NCHW planes, threaded over (n, c) planes; 2x2/stride-2
 * unpadded MAX has a branch-free kernel the compiler vectorises. Output
 * sizes come from the shape rule (Caffe's ceil rounding). STOCHASTIC is
 * rejected at setup (Caffe has no CPU version either). */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/layers_cpu.h"

typedef struct pool_priv {
  int method;
  int64_t planes, H, W, PH, PW, kh, kw, sh, sw, ph, pw;
  int32_t *mask; /* MAX: flat argmax in the input plane, per output */
  int64_t out_count;
} pool_priv;

static mdl_status pool_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__PoolingParameter *p =
      PARAM(l, pooling_param, Caffe__PoolingParameter, CAFFE__POOLING_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0], *t = &l->top_shape[0];
  if (b->n != 4) return LAYER_ERR(l, err, "pooling needs 4-axis input");
  if (p->pool == CAFFE__POOLING_PARAMETER__POOL_METHOD__STOCHASTIC)
    return LAYER_ERR(l, err, "STOCHASTIC pooling is not implemented");
  pool_priv *pp = mdl_xcalloc(1, sizeof *pp);
  l->priv = pp;
  pp->method = p->pool;
  pp->planes = b->d[0] * b->d[1];
  pp->H = b->d[2];
  pp->W = b->d[3];
  pp->PH = t->d[2];
  pp->PW = t->d[3];
  if (p->global_pooling) {
    pp->kh = pp->H;
    pp->kw = pp->W;
    pp->sh = pp->sw = 1;
    pp->ph = pp->pw = 0;
  } else {
    pp->kh = p->has_kernel_h ? p->kernel_h : p->kernel_size;
    pp->kw = p->has_kernel_w ? p->kernel_w : p->kernel_size;
    pp->sh = p->has_stride_h ? p->stride_h : p->stride;
    pp->sw = p->has_stride_w ? p->stride_w : p->stride;
    pp->ph = p->has_pad_h ? p->pad_h : p->pad;
    pp->pw = p->has_pad_w ? p->pad_w : p->pad;
  }
  if (pp->kh <= 0 || pp->kw <= 0 || pp->sh <= 0 || pp->sw <= 0)
    return LAYER_ERR(l, err, "kernel and stride must be positive");
  if (pp->ph >= pp->kh || pp->pw >= pp->kw)
    return LAYER_ERR(l, err, "pad must be smaller than the kernel");
  pp->out_count = pp->planes * pp->PH * pp->PW;
  if (pp->method == CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX) {
    pp->mask = malloc((size_t)(pp->out_count ? pp->out_count : 1) * sizeof(int32_t));
    if (!pp->mask) return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": pooling mask", l->name);
  }
  if (l->n_top > 1 && pp->method != CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX)
    return LAYER_ERR(l, err, "only MAX pooling has a mask top");
  return MDL_OK;
}

static void pool_free(mdl_layer *l) {
  pool_priv *pp = l->priv;
  free(pp->mask);
  free(pp);
}

typedef struct pool_args {
  const pool_priv *pp;
  const float *x, *dy;
  float *y, *dx, *mask_top;
} pool_args;

/* 2x2 stride 2, no padding: y = max of 4 with Caffe's first-maximum index */
static void max22_plane(const pool_priv *pp, const float *restrict x, float *restrict y,
                        int32_t *restrict mask) {
  const int64_t W = pp->W;
  for (int64_t oh = 0; oh < pp->PH; oh++) {
    const float *r0 = x + 2 * oh * W, *r1 = r0 + W;
    const int32_t base = (int32_t)(2 * oh * W);
    /* rows past the input (odd H with ceil rounding) fall to the generic path */
    if (2 * oh + 1 >= pp->H) return;
    int64_t full = pp->W / 2 < pp->PW ? pp->W / 2 : pp->PW;
    for (int64_t ow = 0; ow < full; ow++) {
      float a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
      int32_t i = base + (int32_t)(2 * ow);
      float m = a;
      int32_t mi = i;
      mi = b > m ? i + 1 : mi;
      m = b > m ? b : m;
      mi = c > m ? i + (int32_t)W : mi;
      m = c > m ? c : m;
      mi = d > m ? i + (int32_t)W + 1 : mi;
      m = d > m ? d : m;
      y[oh * pp->PW + ow] = m;
      mask[oh * pp->PW + ow] = mi;
    }
  }
}

static void pool_fwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const pool_args *a = arg;
  const pool_priv *pp = a->pp;
  (void)thread;
  const int64_t in_plane = pp->H * pp->W, out_plane = pp->PH * pp->PW;
  const bool is_max = pp->method == CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX;
  const bool fast22 = is_max && pp->kh == 2 && pp->kw == 2 && pp->sh == 2 && pp->sw == 2 &&
                      pp->ph == 0 && pp->pw == 0;
  for (int64_t pl = lo; pl < hi; pl++) {
    const float *x = a->x + pl * in_plane;
    float *y = a->y + pl * out_plane;
    int32_t *mask = is_max ? pp->mask + pl * out_plane : NULL;
    int64_t fast_rows = 0, fast_cols = 0;
    if (fast22) {
      max22_plane(pp, x, y, mask);
      fast_rows = pp->H / 2 < pp->PH ? pp->H / 2 : pp->PH;
      fast_cols = pp->W / 2 < pp->PW ? pp->W / 2 : pp->PW;
    }
    for (int64_t oh = 0; oh < pp->PH; oh++) {
      int64_t hs = oh * pp->sh - pp->ph, he = hs + pp->kh;
      for (int64_t ow = (oh < fast_rows ? fast_cols : 0); ow < pp->PW; ow++) {
        int64_t ws = ow * pp->sw - pp->pw, we = ws + pp->kw;
        if (is_max) {
          int64_t h0 = hs > 0 ? hs : 0, h1 = he < pp->H ? he : pp->H;
          int64_t w0 = ws > 0 ? ws : 0, w1 = we < pp->W ? we : pp->W;
          float m = -FLT_MAX;
          int32_t mi = -1;
          for (int64_t h = h0; h < h1; h++)
            for (int64_t w = w0; w < w1; w++)
              if (x[h * pp->W + w] > m) {
                m = x[h * pp->W + w];
                mi = (int32_t)(h * pp->W + w);
              }
          y[oh * pp->PW + ow] = m;
          mask[oh * pp->PW + ow] = mi;
        } else {
          /* divisor counts padding but not what lies past it (Caffe) */
          int64_t h1p = he < pp->H + pp->ph ? he : pp->H + pp->ph;
          int64_t w1p = we < pp->W + pp->pw ? we : pp->W + pp->pw;
          int64_t size = (h1p - hs) * (w1p - ws);
          int64_t h0 = hs > 0 ? hs : 0, h1 = he < pp->H ? he : pp->H;
          int64_t w0 = ws > 0 ? ws : 0, w1 = we < pp->W ? we : pp->W;
          float s = 0;
          for (int64_t h = h0; h < h1; h++)
            for (int64_t w = w0; w < w1; w++) s += x[h * pp->W + w];
          y[oh * pp->PW + ow] = s / (float)size;
        }
      }
    }
    if (a->mask_top)
      for (int64_t i = 0; i < out_plane; i++) a->mask_top[pl * out_plane + i] = (float)mask[i];
  }
}

static void pool_bwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const pool_args *a = arg;
  const pool_priv *pp = a->pp;
  (void)thread;
  const int64_t in_plane = pp->H * pp->W, out_plane = pp->PH * pp->PW;
  for (int64_t pl = lo; pl < hi; pl++) {
    float *dx = a->dx + pl * in_plane;
    const float *dy = a->dy + pl * out_plane;
    memset(dx, 0, (size_t)in_plane * sizeof(float));
    if (pp->method == CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX) {
      const int32_t *mask = pp->mask + pl * out_plane;
      for (int64_t i = 0; i < out_plane; i++)
        if (mask[i] >= 0) dx[mask[i]] += dy[i];
      continue;
    }
    for (int64_t oh = 0; oh < pp->PH; oh++) {
      int64_t hs = oh * pp->sh - pp->ph, he = hs + pp->kh;
      for (int64_t ow = 0; ow < pp->PW; ow++) {
        int64_t ws = ow * pp->sw - pp->pw, we = ws + pp->kw;
        int64_t h1p = he < pp->H + pp->ph ? he : pp->H + pp->ph;
        int64_t w1p = we < pp->W + pp->pw ? we : pp->W + pp->pw;
        int64_t size = (h1p - hs) * (w1p - ws);
        int64_t h0 = hs > 0 ? hs : 0, h1 = he < pp->H ? he : pp->H;
        int64_t w0 = ws > 0 ? ws : 0, w1 = we < pp->W ? we : pp->W;
        float g = dy[oh * pp->PW + ow] / (float)size;
        for (int64_t h = h0; h < h1; h++)
          for (int64_t w = w0; w < w1; w++) dx[h * pp->W + w] += g;
      }
    }
  }
}

static int64_t pool_grain(const pool_priv *pp) {
  int64_t work = pp->H * pp->W;
  return work >= 8192 ? 1 : 8192 / (work ? work : 1);
}

static void pool_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  pool_priv *pp = l->priv;
  pool_args a = {pp, bottom[0]->data, NULL, top[0]->data, NULL, l->n_top > 1 ? top[1]->data : NULL};
  mdl_parallel_for(l->ctx.pool, pp->planes, pool_grain(pp), pool_fwd_task, &a);
}

static void pool_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  pool_priv *pp = l->priv;
  if (!pd[0]) return;
  pool_args a = {pp, NULL, top[0]->diff, NULL, bottom[0]->diff, NULL};
  mdl_parallel_for(l->ctx.pool, pp->planes, pool_grain(pp), pool_bwd_task, &a);
}

const mdl_layer_impl mdl_cpu_pool_layer = {"Pooling",    pool_setup,    NULL,
                                           pool_forward, pool_backward, pool_free};
