/* Pooling (MAX with argmax mask, AVE with Caffe's padding-aware divisor,
 * global) over NCHW planes, threaded over (n, c) planes. Windows inside the
 * input run branch-free passes the compiler vectorises over output columns;
 * only border windows take the per-output path. Output
 * sizes come from the shape rule (Caffe's ceil rounding). STOCHASTIC is
 * rejected at setup (Caffe has no CPU version either). */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu/layers_cpu.h"

typedef mdl_cpu_pool pool_priv;

static mdl_status pool_setup(mdl_layer *l, mdl_error *err) {
  mdl_pool_geom g;
  mdl_status st = mdl_geom_pool(l, &g, err);
  if (st) return st;
  if (g.method == CAFFE__POOLING_PARAMETER__POOL_METHOD__STOCHASTIC)
    return MDL_LAYER_ERR(l, err, "STOCHASTIC pooling is not implemented");
  pool_priv *pp = mdl_xcalloc(1, sizeof *pp);
  l->priv = pp;
  pp->g = g;
  pp->out_count = g.planes * g.PH * g.PW;
  if (g.method == CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX) {
    pp->mask = malloc((size_t)(pp->out_count ? pp->out_count : 1) * sizeof(int32_t));
    if (!pp->mask) return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": pooling mask", l->name);
  }
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
  const int32_t *col; /* AVE backward: per output column w0, w1, padded width */
} pool_args;

/* One output by the plain definition (used at the borders). */
static void pool_one(const pool_priv *pp, const float *x, int64_t oh, int64_t ow, float *y,
                     int32_t *mask) {
  int64_t hs = oh * pp->g.sh - pp->g.ph, he = hs + pp->g.kh;
  int64_t ws = ow * pp->g.sw - pp->g.pw, we = ws + pp->g.kw;
  int64_t h0 = hs > 0 ? hs : 0, h1 = he < pp->g.H ? he : pp->g.H;
  int64_t w0 = ws > 0 ? ws : 0, w1 = we < pp->g.W ? we : pp->g.W;
  if (mask) {
    float m = -FLT_MAX;
    int32_t mi = -1;
    for (int64_t h = h0; h < h1; h++)
      for (int64_t w = w0; w < w1; w++)
        if (x[h * pp->g.W + w] > m) {
          m = x[h * pp->g.W + w];
          mi = (int32_t)(h * pp->g.W + w);
        }
    *y = m;
    *mask = mi;
  } else {
    /* the divisor counts padding but not what lies past it (Caffe) */
    int64_t h1p = he < pp->g.H + pp->g.ph ? he : pp->g.H + pp->g.ph;
    int64_t w1p = we < pp->g.W + pp->g.pw ? we : pp->g.W + pp->g.pw;
    float sum = 0;
    for (int64_t h = h0; h < h1; h++)
      for (int64_t w = w0; w < w1; w++) sum += x[h * pp->g.W + w];
    *y = sum / (float)((h1p - hs) * (w1p - ws));
  }
}

/* Output columns [lo, hi) whose windows lie inside [0, W). */
static void interior_cols(const pool_priv *pp, int64_t *lo, int64_t *hi) {
  int64_t l = (pp->g.pw + pp->g.sw - 1) / pp->g.sw;
  int64_t last = pp->g.W - pp->g.kw + pp->g.pw; /* ws + kw <= W */
  int64_t h = last >= 0 ? last / pp->g.sw + 1 : 0;
  if (h > pp->g.PW) h = pp->g.PW;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

/* Interior windows of one output row, vectorisable over ow: each (h, kj)
 * pass updates all n outputs; visiting (h, kj) in raster order with a
 * strict > keeps Caffe's first maximum. */
#define MAX_PASS(SW)                                \
  for (int64_t o = 0; o < n; o++) {                 \
    float v = row[o * (SW)];                        \
    bool c = v > m[o];                              \
    m[o] = c ? v : m[o];                            \
    mi[o] = c ? base + (int32_t)(o * (SW)) : mi[o]; \
  }
#define SUM_PASS(SW) \
  for (int64_t o = 0; o < n; o++) acc[o] += row[o * (SW)];

static void max_interior(const pool_priv *pp, const float *restrict x, int64_t h0, int64_t h1,
                         int64_t ws0, int64_t n, float *restrict m, int32_t *restrict mi) {
  for (int64_t o = 0; o < n; o++) m[o] = -FLT_MAX, mi[o] = -1;
  for (int64_t h = h0; h < h1; h++)
    for (int64_t kj = 0; kj < pp->g.kw; kj++) {
      const float *restrict row = x + h * pp->g.W + ws0 + kj;
      const int32_t base = (int32_t)(h * pp->g.W + ws0 + kj);
      if (pp->g.sw == 1) {
        MAX_PASS(1)
      } else if (pp->g.sw == 2) {
        MAX_PASS(2)
      } else {
        MAX_PASS(pp->g.sw)
      }
    }
}

static void ave_interior(const pool_priv *pp, const float *restrict x, int64_t h0, int64_t h1,
                         int64_t ws0, int64_t n, float size, float *restrict acc) {
  for (int64_t o = 0; o < n; o++) acc[o] = 0.f;
  for (int64_t h = h0; h < h1; h++)
    for (int64_t kj = 0; kj < pp->g.kw; kj++) {
      const float *restrict row = x + h * pp->g.W + ws0 + kj;
      if (pp->g.sw == 1) {
        SUM_PASS(1)
      } else if (pp->g.sw == 2) {
        SUM_PASS(2)
      } else {
        SUM_PASS(pp->g.sw)
      }
    }
  for (int64_t o = 0; o < n; o++) acc[o] /= size;
}

/* Windows fully inside the input in both axes, for common fixed sizes: the
 * window loops unroll and the output loop vectorises. */
#define DEFINE_FIXED(KH, KW, SW)                                                            \
  static void max_##KH##KW##SW(const float *restrict x, int64_t W, int64_t hs, int64_t ws0, \
                               int64_t n, float *restrict y, int32_t *restrict mi) {        \
    for (int64_t o = 0; o < n; o++) {                                                       \
      const int64_t base = hs * W + ws0 + o * (SW);                                         \
      float m = -FLT_MAX;                                                                   \
      int32_t idx = -1;                                                                     \
      for (int i = 0; i < (KH); i++)                                                        \
        for (int j = 0; j < (KW); j++) {                                                    \
          float v = x[base + i * W + j];                                                    \
          bool c = v > m;                                                                   \
          m = c ? v : m;                                                                    \
          idx = c ? (int32_t)(base + i * W + j) : idx;                                      \
        }                                                                                   \
      y[o] = m;                                                                             \
      mi[o] = idx;                                                                          \
    }                                                                                       \
  }                                                                                         \
  static void ave_##KH##KW##SW(const float *restrict x, int64_t W, int64_t hs, int64_t ws0, \
                               int64_t n, float size, float *restrict y) {                  \
    for (int64_t o = 0; o < n; o++) {                                                       \
      const int64_t base = hs * W + ws0 + o * (SW);                                         \
      float acc = 0.f;                                                                      \
      for (int i = 0; i < (KH); i++)                                                        \
        for (int j = 0; j < (KW); j++) acc += x[base + i * W + j];                          \
      y[o] = acc / size;                                                                    \
    }                                                                                       \
  }

DEFINE_FIXED(2, 2, 2)
DEFINE_FIXED(3, 3, 2)
DEFINE_FIXED(3, 3, 1)

typedef void (*max_fixed_fn)(const float *, int64_t, int64_t, int64_t, int64_t, float *, int32_t *);
typedef void (*ave_fixed_fn)(const float *, int64_t, int64_t, int64_t, int64_t, float, float *);

static void fixed_kernels(const pool_priv *pp, max_fixed_fn *mf, ave_fixed_fn *af) {
  *mf = NULL;
  *af = NULL;
  if (pp->g.kh == 2 && pp->g.kw == 2 && pp->g.sw == 2) *mf = max_222, *af = ave_222;
  if (pp->g.kh == 3 && pp->g.kw == 3 && pp->g.sw == 2) *mf = max_332, *af = ave_332;
  if (pp->g.kh == 3 && pp->g.kw == 3 && pp->g.sw == 1) *mf = max_331, *af = ave_331;
}

static void pool_fwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const pool_args *a = arg;
  const pool_priv *pp = a->pp;
  (void)thread;
  const int64_t in_plane = pp->g.H * pp->g.W, out_plane = pp->g.PH * pp->g.PW;
  const bool is_max = pp->g.method == CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX;
  int64_t owa, owb;
  interior_cols(pp, &owa, &owb);
  max_fixed_fn mf;
  ave_fixed_fn af;
  fixed_kernels(pp, &mf, &af);
  for (int64_t pl = lo; pl < hi; pl++) {
    const float *x = a->x + pl * in_plane;
    float *y = a->y + pl * out_plane;
    int32_t *mask = is_max ? pp->mask + pl * out_plane : NULL;
    for (int64_t oh = 0; oh < pp->g.PH; oh++) {
      int64_t hs = oh * pp->g.sh - pp->g.ph, he = hs + pp->g.kh;
      int64_t h0 = hs > 0 ? hs : 0, h1 = he < pp->g.H ? he : pp->g.H;
      float *yr = y + oh * pp->g.PW;
      int32_t *mr = mask ? mask + oh * pp->g.PW : NULL;
      for (int64_t ow = 0; ow < owa; ow++) pool_one(pp, x, oh, ow, yr + ow, mr ? mr + ow : NULL);
      if (owb > owa) {
        int64_t ws0 = owa * pp->g.sw - pp->g.pw;
        bool full_rows = hs >= 0 && he <= pp->g.H;
        if (full_rows && is_max && mf) {
          mf(x, pp->g.W, hs, ws0, owb - owa, yr + owa, mr + owa);
        } else if (full_rows && !is_max && af) {
          af(x, pp->g.W, hs, ws0, owb - owa, (float)(pp->g.kh * pp->g.kw), yr + owa);
        } else if (is_max) {
          max_interior(pp, x, h0, h1, ws0, owb - owa, yr + owa, mr + owa);
        } else {
          int64_t h1p = he < pp->g.H + pp->g.ph ? he : pp->g.H + pp->g.ph;
          ave_interior(pp, x, h0, h1, ws0, owb - owa, (float)((h1p - hs) * pp->g.kw), yr + owa);
        }
      }
      for (int64_t ow = owb > owa ? owb : owa; ow < pp->g.PW; ow++)
        pool_one(pp, x, oh, ow, yr + ow, mr ? mr + ow : NULL);
    }
    if (a->mask_top)
      for (int64_t i = 0; i < out_plane; i++) a->mask_top[pl * out_plane + i] = (float)mask[i];
  }
}

static void pool_bwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const pool_args *a = arg;
  const pool_priv *pp = a->pp;
  (void)thread;
  const int64_t in_plane = pp->g.H * pp->g.W, out_plane = pp->g.PH * pp->g.PW;
  for (int64_t pl = lo; pl < hi; pl++) {
    float *dx = a->dx + pl * in_plane;
    const float *dy = a->dy + pl * out_plane;
    memset(dx, 0, (size_t)in_plane * sizeof(float));
    if (pp->g.method == CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX) {
      const int32_t *mask = pp->mask + pl * out_plane;
      for (int64_t i = 0; i < out_plane; i++)
        if (mask[i] >= 0) dx[mask[i]] += dy[i];
      continue;
    }
    /* AVE: column bounds come precomputed (a->col); per row, only the row
     * bounds and the divisor's height part change */
    const int32_t *col = a->col;
    for (int64_t oh = 0; oh < pp->g.PH; oh++) {
      const int64_t hs = oh * pp->g.sh - pp->g.ph, he = hs + pp->g.kh;
      const int64_t hsz = (he < pp->g.H + pp->g.ph ? he : pp->g.H + pp->g.ph) - hs;
      const int64_t h0 = hs > 0 ? hs : 0, h1 = he < pp->g.H ? he : pp->g.H;
      const float *dyr = dy + oh * pp->g.PW;
      for (int64_t ow = 0; ow < pp->g.PW; ow++) {
        const int64_t w0 = col[3 * ow], w1 = col[3 * ow + 1];
        const float g = dyr[ow] / (float)(hsz * col[3 * ow + 2]);
        for (int64_t h = h0; h < h1; h++) {
          float *r = dx + h * pp->g.W;
          for (int64_t w = w0; w < w1; w++) r[w] += g;
        }
      }
    }
  }
}

static int64_t pool_grain(const pool_priv *pp) {
  int64_t work = pp->g.H * pp->g.W;
  return work >= 8192 ? 1 : 8192 / (work ? work : 1);
}

void mdl_cpu_pool_forward(mdl_threadpool *pool, mdl_cpu_pool *pp, const float *x, float *y,
                          float *mask_top) {
  pool_args a = {pp, x, NULL, y, NULL, mask_top, NULL};
  mdl_parallel_for(pool, pp->g.planes, pool_grain(pp), pool_fwd_task, &a);
}

static void pool_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  mdl_cpu_pool_forward(l->ctx.pool, l->priv, bottom[0]->data, top[0]->data,
                       l->n_top > 1 ? top[1]->data : NULL);
}

static void pool_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  mdl_cpu_pool_backward(l->ctx.pool, l->priv, top[0]->diff, bottom[0]->diff);
}

void mdl_cpu_pool_backward(mdl_threadpool *pool, const mdl_cpu_pool *pp, const float *dy,
                           float *dx) {
  int32_t *col = NULL;
  if (pp->g.method != CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX) {
    col = mdl_xmalloc((size_t)(3 * pp->g.PW + 1) * sizeof(int32_t));
    for (int64_t ow = 0; ow < pp->g.PW; ow++) {
      int64_t ws = ow * pp->g.sw - pp->g.pw, we = ws + pp->g.kw;
      col[3 * ow] = (int32_t)(ws > 0 ? ws : 0);
      col[3 * ow + 1] = (int32_t)(we < pp->g.W ? we : pp->g.W);
      col[3 * ow + 2] = (int32_t)((we < pp->g.W + pp->g.pw ? we : pp->g.W + pp->g.pw) - ws);
    }
  }
  pool_args a = {pp, NULL, dy, NULL, dx, NULL, col};
  mdl_parallel_for(pool, pp->g.planes, pool_grain(pp), pool_bwd_task, &a);
  free(col);
}

const mdl_layer_impl mdl_cpu_pool_layer = {"Pooling",    pool_setup,    NULL,
                                           pool_forward, pool_backward, pool_free};
