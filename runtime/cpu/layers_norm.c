/* Normalising and broadcasting layers: LRN (both regions), BatchNorm (with
 * Caffe's three statistics blobs), MVN, Scale, Bias, Softmax. Tensors are
 * viewed as outer x channels x inner (NCHW: N x C x HW); kernels loop over
 * planes of `inner` contiguous floats. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu/layers_cpu.h"

/* ---- LRN ---------------------------------------------------------------- */
/* ACROSS_CHANNELS: s = k + alpha/size * sum of x^2 over `size` channels
 * centred on c (zero padded); y = x s^-beta.
 * WITHIN_CHANNEL (Caffe's split/square/pool/power/product net): s = 1 +
 * alpha/size^2 * sum of x^2 over a size x size window (zero padded). */

typedef struct lrn_priv {
  mdl_lrn_geom g;
  float *scale; /* s, count floats, kept for backward */
  int64_t count;
} lrn_priv;

static mdl_status lrn_setup(mdl_layer *l, mdl_error *err) {
  const mdl_shape *b = &l->bottom_shape[0];
  lrn_priv *lp = mdl_xcalloc(1, sizeof *lp);
  l->priv = lp;
  mdl_status st = mdl_geom_lrn(l, &lp->g, err);
  if (st) return st;
  lp->count = mdl_shape_count_axes(b, 0, 4);
  lp->scale = mdl_falloc(lp->count);
  if (!lp->scale) return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": LRN scale", l->name);
  /* backward scratch: one plane-sized ring (across) or two planes (within)
   * per thread */
  int nt = mdl_threadpool_slots(l->ctx.pool);
  mdl_workspace_reserve(
      l->ctx.ws, (size_t)nt * ws_round((size_t)(2 * lp->g.C * lp->g.H * lp->g.W)) * sizeof(float));
  return MDL_OK;
}

static void lrn_free(mdl_layer *l) {
  lrn_priv *lp = l->priv;
  mdl_ffree(lp->scale);
  free(lp);
}

typedef struct lrn_args {
  const mdl_layer *l;
  const float *x, *y, *dy;
  float *out;
} lrn_args;

/* y^-beta fast paths for Caffe's common beta 0.75 */
static inline float pow_neg_beta(float s, float beta) {
  if (beta == 0.75f) {
    float r = 1.f / sqrtf(s); /* s^-0.5 */
    return r * sqrtf(r);      /* s^-0.75 */
  }
  return powf(s, -beta);
}

static void lrn_fwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const lrn_args *a = arg;
  const lrn_priv *lp = a->l->priv;
  const int64_t HW = lp->g.H * lp->g.W, CHW = lp->g.C * HW;
  (void)thread;
  for (int64_t n = lo; n < hi; n++) {
    const float *x = a->x + n * CHW;
    float *s = lp->scale + n * CHW, *y = a->out + n * CHW;
    if (lp->g.across) {
      /* sliding window of squared planes over channels */
      const float a_n = lp->g.alpha / (float)lp->g.size;
      for (int64_t c = 0; c < lp->g.C; c++) {
        float *sc = s + c * HW;
        if (c == 0) {
          for (int64_t i = 0; i < HW; i++) sc[i] = 0.f;
          for (int64_t cc = 0; cc <= lp->g.size - 1 - lp->g.pre && cc < lp->g.C; cc++)
            for (int64_t i = 0; i < HW; i++) sc[i] += x[cc * HW + i] * x[cc * HW + i];
        } else {
          const float *prev = s + (c - 1) * HW;
          int64_t add = c + lp->g.size - 1 - lp->g.pre, sub = c - 1 - lp->g.pre;
          for (int64_t i = 0; i < HW; i++) sc[i] = prev[i];
          if (add < lp->g.C)
            for (int64_t i = 0; i < HW; i++) sc[i] += x[add * HW + i] * x[add * HW + i];
          if (sub >= 0)
            for (int64_t i = 0; i < HW; i++) sc[i] -= x[sub * HW + i] * x[sub * HW + i];
        }
      }
      /* s held raw sums (kept exact-ish by subtracting what was added) */
      for (int64_t i = 0; i < CHW; i++) {
        float sum = s[i] < 0.f ? 0.f : s[i];
        s[i] = lp->g.k + a_n * sum;
        y[i] = x[i] * pow_neg_beta(s[i], lp->g.beta);
      }
    } else {
      const float a_n = lp->g.alpha / (float)(lp->g.size * lp->g.size);
      for (int64_t c = 0; c < lp->g.C; c++) {
        const float *xc = x + c * HW;
        float *sc = s + c * HW, *yc = y + c * HW;
        for (int64_t h = 0; h < lp->g.H; h++)
          for (int64_t w = 0; w < lp->g.W; w++) {
            float sum = 0;
            for (int64_t hh = h - lp->g.pre; hh <= h + lp->g.pre; hh++) {
              if (hh < 0 || hh >= lp->g.H) continue;
              for (int64_t ww = w - lp->g.pre; ww <= w + lp->g.pre; ww++) {
                if (ww < 0 || ww >= lp->g.W) continue;
                float v = xc[hh * lp->g.W + ww];
                sum += v * v;
              }
            }
            float sv = 1.f + a_n * sum;
            sc[h * lp->g.W + w] = sv;
            yc[h * lp->g.W + w] = xc[h * lp->g.W + w] * pow_neg_beta(sv, lp->g.beta);
          }
      }
    }
  }
}

static void lrn_bwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const lrn_args *a = arg;
  const lrn_priv *lp = a->l->priv;
  const int64_t HW = lp->g.H * lp->g.W, CHW = lp->g.C * HW;
  float *ratio = ws_floats(a->l, (size_t)thread * ws_round((size_t)(2 * CHW)));
  for (int64_t n = lo; n < hi; n++) {
    const float *x = a->x + n * CHW, *y = a->y + n * CHW, *dy = a->dy + n * CHW;
    const float *s = lp->scale + n * CHW;
    float *dx = a->out + n * CHW;
    /* ratio_j = dy_j y_j / s_j */
    for (int64_t i = 0; i < CHW; i++) ratio[i] = dy[i] * y[i] / s[i];
    if (lp->g.across) {
      const float f = 2.f * lp->g.alpha * lp->g.beta / (float)lp->g.size;
      /* dx_i = dy_i s_i^-beta - f x_i sum_{j in [i-post, i+pre]} ratio_j */
      const int64_t post = lp->g.size - 1 - lp->g.pre;
      float *acc = ratio + CHW; /* running window sum, one plane */
      for (int64_t i = 0; i < HW; i++) acc[i] = 0.f;
      for (int64_t cc = 0; cc <= lp->g.pre && cc < lp->g.C; cc++)
        for (int64_t i = 0; i < HW; i++) acc[i] += ratio[cc * HW + i];
      for (int64_t c = 0; c < lp->g.C; c++) {
        if (c > 0) {
          int64_t add = c + lp->g.pre, sub = c - 1 - post;
          if (add < lp->g.C)
            for (int64_t i = 0; i < HW; i++) acc[i] += ratio[add * HW + i];
          if (sub >= 0)
            for (int64_t i = 0; i < HW; i++) acc[i] -= ratio[sub * HW + i];
        }
        for (int64_t i = 0; i < HW; i++) {
          int64_t k = c * HW + i;
          dx[k] = dy[k] * pow_neg_beta(s[k], lp->g.beta) - f * x[k] * acc[i];
        }
      }
    } else {
      const float f = 2.f * lp->g.alpha * lp->g.beta / (float)(lp->g.size * lp->g.size);
      for (int64_t c = 0; c < lp->g.C; c++) {
        const float *rc = ratio + c * HW;
        for (int64_t h = 0; h < lp->g.H; h++)
          for (int64_t w = 0; w < lp->g.W; w++) {
            float sum = 0;
            for (int64_t hh = h - lp->g.pre; hh <= h + lp->g.pre; hh++) {
              if (hh < 0 || hh >= lp->g.H) continue;
              for (int64_t ww = w - lp->g.pre; ww <= w + lp->g.pre; ww++)
                if (ww >= 0 && ww < lp->g.W) sum += rc[hh * lp->g.W + ww];
            }
            int64_t k = c * HW + h * lp->g.W + w;
            dx[k] = dy[k] * pow_neg_beta(s[k], lp->g.beta) - f * x[k] * sum;
          }
      }
    }
  }
}

static void lrn_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  lrn_priv *lp = l->priv;
  lrn_args a = {l, bottom[0]->data, NULL, NULL, top[0]->data};
  mdl_parallel_for(l->ctx.pool, lp->g.num, 1, lrn_fwd_task, &a);
}

static void lrn_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  lrn_priv *lp = l->priv;
  if (!pd[0]) return;
  lrn_args a = {l, bottom[0]->data, top[0]->data, top[0]->diff, bottom[0]->diff};
  mdl_parallel_for(l->ctx.pool, lp->g.num, 1, lrn_bwd_task, &a);
}

const mdl_layer_impl mdl_cpu_lrn_layer = {"LRN",       lrn_setup,    NULL,
                                          lrn_forward, lrn_backward, lrn_free};

/* ---- per-channel statistics over outer x C x inner ---------------------- */

/* sums[c] = sum over outer and inner of a (and of a*b when b != NULL into
 * sums2), in double, per channel, fixed order */
static void channel_sums(int64_t outer, int64_t C, int64_t inner, const float *a, const float *b,
                         double *sums, double *sums2) {
  for (int64_t c = 0; c < C; c++) {
    sums[c] = 0;
    if (sums2) sums2[c] = 0;
  }
  for (int64_t o = 0; o < outer; o++)
    for (int64_t c = 0; c < C; c++) {
      const float *pa = a + (o * C + c) * inner;
      double s = 0, s2 = 0;
      if (b) {
        const float *pb = b + (o * C + c) * inner;
        for (int64_t i = 0; i < inner; i++) {
          s += pa[i];
          s2 += (double)pa[i] * pb[i];
        }
      } else {
        for (int64_t i = 0; i < inner; i++) s += pa[i];
      }
      sums[c] += s;
      if (sums2) sums2[c] += s2;
    }
}

/* ---- BatchNorm ----------------------------------------------------------- */

typedef struct bn_priv {
  mdl_bn_geom g;
  float *xnorm;       /* normalised output, kept for backward (also in place) */
  float *mean, *istd; /* per channel: mean used, 1 / sqrt(var + eps) */
  double *s1, *s2;
} bn_priv;

static mdl_status bn_setup(mdl_layer *l, mdl_error *err) {
  bn_priv *bp = mdl_xcalloc(1, sizeof *bp);
  l->priv = bp;
  mdl_status st = mdl_geom_bn(l, &bp->g, err);
  if (st) return st;
  mdl_layer_keep(l, MDL_KEEP_TOP, bp->g.count); /* xnorm: allocated or bound after setup */
  bp->mean = mdl_falloc(bp->g.C);
  bp->istd = mdl_falloc(bp->g.C);
  bp->s1 = mdl_xcalloc((size_t)bp->g.C, sizeof(double));
  bp->s2 = mdl_xcalloc((size_t)bp->g.C, sizeof(double));
  if (!bp->mean || !bp->istd)
    return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": BatchNorm buffers", l->name);
  return MDL_OK;
}

static void bn_free(mdl_layer *l) {
  bn_priv *bp = l->priv;
  mdl_ffree(bp->mean);
  mdl_ffree(bp->istd);
  free(bp->s1);
  free(bp->s2);
  free(bp);
}

static mdl_status bn_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  for (int i = 0; i < 3; i++) mdl_filler_constant(l->param[i].data, l->param[i].count, 0.f);
  (void)rng, (void)err;
  return MDL_OK;
}

typedef struct bn_args {
  const bn_priv *bp;
  const float *x, *dy;
  float *y, *dx;
} bn_args;

static void bn_apply_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const bn_args *a = arg;
  const bn_priv *bp = a->bp;
  (void)thread;
  for (int64_t pl = lo; pl < hi; pl++) {
    int64_t c = pl % bp->g.C;
    const float m = bp->mean[c], is = bp->istd[c];
    const float *x = a->x + pl * bp->g.inner;
    float *y = a->y + pl * bp->g.inner, *xn = bp->xnorm + pl * bp->g.inner;
    for (int64_t i = 0; i < bp->g.inner; i++) {
      float v = (x[i] - m) * is;
      xn[i] = v;
      y[i] = v;
    }
  }
}

static void bn_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  bn_priv *bp = l->priv;
  bp->xnorm = l->keep.data;
  const float *x = bottom[0]->data;
  const int64_t C = bp->g.C;
  if (bp->g.global) {
    float f = l->param[2].data[0];
    float sf = f == 0.f ? 0.f : 1.f / f;
    for (int64_t c = 0; c < C; c++) {
      bp->mean[c] = sf * l->param[0].data[c];
      bp->istd[c] = 1.f / sqrtf(sf * l->param[1].data[c] + bp->g.eps);
    }
  } else {
    const double m = (double)bp->g.num * (double)bp->g.inner;
    channel_sums(bp->g.num, C, bp->g.inner, x, x, bp->s1, bp->s2);
    for (int64_t c = 0; c < C; c++) {
      double mean = bp->s1[c] / m;
      double var = bp->s2[c] / m - mean * mean;
      if (var < 0) var = 0;
      bp->mean[c] = (float)mean;
      bp->istd[c] = (float)(1.0 / sqrt(var + bp->g.eps));
      /* moving averages as Caffe: unnormalised sums with a scale factor */
      double corr = m > 1 ? m / (m - 1) : 1;
      l->param[0].data[c] = (float)(mean + bp->g.maf * l->param[0].data[c]);
      l->param[1].data[c] = (float)(corr * var + bp->g.maf * l->param[1].data[c]);
    }
    l->param[2].data[0] = l->param[2].data[0] * bp->g.maf + 1.f;
  }
  bn_args a = {bp, x, NULL, top[0]->data, NULL};
  mdl_parallel_for(l->ctx.pool, bp->g.num * C, 4, bn_apply_task, &a);
}

/* global: dx = dy / std; batch: dx = (dy - mean(dy) - y mean(dy y)) / std */
static void bn_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                        mdl_tensor *const *bottom) {
  bn_priv *bp = l->priv;
  if (!pd[0]) return;
  const float *dy = top[0]->diff, *y = l->keep.data;
  float *dx = bottom[0]->diff;
  const int64_t C = bp->g.C, inner = bp->g.inner;
  const double m = (double)bp->g.num * (double)inner;
  if (!bp->g.global) channel_sums(bp->g.num, C, inner, dy, y, bp->s1, bp->s2);
  for (int64_t o = 0; o < bp->g.num; o++)
    for (int64_t c = 0; c < C; c++) {
      const float is = bp->istd[c];
      const float md = bp->g.global ? 0.f : (float)(bp->s1[c] / m);
      const float mdy = bp->g.global ? 0.f : (float)(bp->s2[c] / m);
      const int64_t off = (o * C + c) * inner;
      for (int64_t i = 0; i < inner; i++) dx[off + i] = (dy[off + i] - md - y[off + i] * mdy) * is;
    }
}

const mdl_layer_impl mdl_cpu_batch_norm_layer = {"BatchNorm", bn_setup,    bn_init,
                                                 bn_forward,  bn_backward, bn_free};

/* ---- MVN ------------------------------------------------------------------ */
/* Per (n, c) (or per n across channels): y = (x - mean) [/ (std + eps)]. */

typedef struct mvn_priv {
  bool norm_var;
  float eps;
  int64_t groups, dim;
  float *y, *sd; /* output copy (for in place) and per-group std + eps */
} mvn_priv;

static mdl_status mvn_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__MVNParameter *p =
      MDL_LAYER_PARAM(l, mvn_param, Caffe__MVNParameter, CAFFE__MVNPARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  mvn_priv *mp = mdl_xcalloc(1, sizeof *mp);
  l->priv = mp;
  mp->norm_var = p->normalize_variance;
  mp->eps = p->eps;
  int64_t count = mdl_shape_count_axes(b, 0, b->n);
  mp->groups = p->across_channels ? b->d[0] : b->d[0] * (b->n > 1 ? b->d[1] : 1);
  mp->dim = count / (mp->groups ? mp->groups : 1);
  mp->y = mdl_falloc(count);
  mp->sd = mdl_falloc(mp->groups);
  if (!mp->y || !mp->sd)
    return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": MVN buffers", l->name);
  return MDL_OK;
}

static void mvn_free(mdl_layer *l) {
  mvn_priv *mp = l->priv;
  mdl_ffree(mp->y);
  mdl_ffree(mp->sd);
  free(mp);
}

static void mvn_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  mvn_priv *mp = l->priv;
  for (int64_t g = 0; g < mp->groups; g++) {
    const float *x = bottom[0]->data + g * mp->dim;
    float *y = top[0]->data + g * mp->dim, *yc = mp->y + g * mp->dim;
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < mp->dim; i++) {
      s += x[i];
      s2 += (double)x[i] * x[i];
    }
    double mean = s / (double)mp->dim, var = s2 / (double)mp->dim - mean * mean;
    if (var < 0) var = 0;
    float sd = mp->norm_var ? (float)sqrt(var) + mp->eps : 1.f;
    mp->sd[g] = sd;
    for (int64_t i = 0; i < mp->dim; i++) {
      y[i] = (float)((x[i] - mean) / sd);
      yc[i] = y[i];
    }
  }
}

static void mvn_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  mvn_priv *mp = l->priv;
  if (!pd[0]) return;
  for (int64_t g = 0; g < mp->groups; g++) {
    const float *dy = top[0]->diff + g * mp->dim, *y = mp->y + g * mp->dim;
    float *dx = bottom[0]->diff + g * mp->dim;
    double sdy = 0, sdyy = 0;
    for (int64_t i = 0; i < mp->dim; i++) {
      sdy += dy[i];
      sdyy += (double)dy[i] * y[i];
    }
    const double inv = 1.0 / (double)mp->dim;
    for (int64_t i = 0; i < mp->dim; i++) {
      if (mp->norm_var)
        dx[i] = (float)((dy[i] - inv * (sdy + y[i] * sdyy)) / mp->sd[g]);
      else
        dx[i] = (float)(dy[i] - inv * sdy);
    }
  }
}

const mdl_layer_impl mdl_cpu_mvn_layer = {"MVN",       mvn_setup,    NULL,
                                          mvn_forward, mvn_backward, mvn_free};

/* ---- Scale and Bias: y = x * s[d] (+ b[d]) broadcast over outer x D x inner */

typedef struct sb_priv {
  mdl_scale_geom g;
  float *saved_x; /* Bias in place: a copy of its input (an in-place Scale keeps l->keep) */
} sb_priv;

static mdl_status sb_setup(mdl_layer *l, mdl_error *err) {
  sb_priv *sp = mdl_xcalloc(1, sizeof *sp);
  l->priv = sp;
  mdl_status st = mdl_geom_scale(l, &sp->g, err);
  if (st) return st;
  if (sp->g.is_scale && mdl_layer_in_place(l)) /* its input, for the scale gradient */
    mdl_layer_keep(l, MDL_KEEP_INPUT, sp->g.count);
  else if (mdl_layer_in_place(l) && !(sp->saved_x = mdl_falloc(sp->g.count)))
    return mdl_errorf(err, MDL_ERR_NOMEM,
                      "layer \"%s\": a copy of its in-place input (%lld floats)", l->name,
                      (long long)sp->g.count);
  return MDL_OK;
}

static void sb_free(mdl_layer *l) {
  sb_priv *sp = l->priv;
  mdl_ffree(sp->saved_x);
  free(sp);
}

static mdl_status scale_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  const Caffe__ScaleParameter *p =
      MDL_LAYER_PARAM(l, scale_param, Caffe__ScaleParameter, CAFFE__SCALE_PARAMETER__INIT);
  sb_priv *sp = l->priv;
  mdl_status st = MDL_OK;
  if (!sp->g.two_bottom) {
    if (p->filler)
      st = mdl_filler_fill(p->filler, &l->param[0], rng, err);
    else
      mdl_filler_constant(l->param[0].data, l->param[0].count, 1.f);
  }
  if (!st && sp->g.bias)
    st = mdl_filler_fill(p->bias_filler, &l->param[sp->g.bias_param], rng, err);
  return st;
}

static mdl_status bias_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  const Caffe__BiasParameter *p =
      MDL_LAYER_PARAM(l, bias_param, Caffe__BiasParameter, CAFFE__BIAS_PARAMETER__INIT);
  sb_priv *sp = l->priv;
  if (sp->g.two_bottom) return MDL_OK;
  return mdl_filler_fill(p->filler, &l->param[0], rng, err);
}

typedef struct sb_args {
  const sb_priv *sp;
  const float *x, *s, *b;
  float *y;
} sb_args;

static void sb_fwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const sb_args *a = arg;
  const sb_priv *sp = a->sp;
  (void)thread;
  for (int64_t pl = lo; pl < hi; pl++) {
    int64_t d = pl % sp->g.D;
    const float sv = a->s ? a->s[d] : 1.f, bv = a->b ? a->b[d] : 0.f;
    const float *x = a->x + pl * sp->g.inner;
    float *y = a->y + pl * sp->g.inner;
    for (int64_t i = 0; i < sp->g.inner; i++) y[i] = x[i] * sv + bv;
  }
}

static void scale_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  sb_priv *sp = l->priv;
  const float *s = sp->g.two_bottom ? bottom[1]->data : l->param[0].data;
  if (top[0] == bottom[0]) {
    if (!l->keep.data) abort(); /* a bug: run in place though its blob names said not (layer.h) */
    if (!l->keep.filled) mdl_vcopy(l->ctx.pool, sp->g.count, bottom[0]->data, l->keep.data);
  }
  sb_args a = {sp, bottom[0]->data, s, sp->g.bias ? l->param[sp->g.bias_param].data : NULL,
               top[0]->data};
  int64_t grain = sp->g.inner >= 4096 ? 1 : 4096 / sp->g.inner;
  mdl_parallel_for(l->ctx.pool, sp->g.outer * sp->g.D, grain, sb_fwd_task, &a);
}

static void bias_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  sb_priv *sp = l->priv;
  sb_args a = {sp, bottom[0]->data, NULL, sp->g.two_bottom ? bottom[1]->data : l->param[0].data,
               top[0]->data};
  int64_t grain = sp->g.inner >= 4096 ? 1 : 4096 / sp->g.inner;
  mdl_parallel_for(l->ctx.pool, sp->g.outer * sp->g.D, grain, sb_fwd_task, &a);
}

/* g[d] (+)= sum over outer and inner of dy (* x when x) */
static void sb_reduce(const sb_priv *sp, const float *dy, const float *x, float *g, bool acc) {
  for (int64_t d = 0; d < sp->g.D; d++) {
    double s = 0;
    for (int64_t o = 0; o < sp->g.outer; o++) {
      const int64_t off = (o * sp->g.D + d) * sp->g.inner;
      if (x)
        for (int64_t i = 0; i < sp->g.inner; i++) s += (double)dy[off + i] * x[off + i];
      else
        for (int64_t i = 0; i < sp->g.inner; i++) s += dy[off + i];
    }
    g[d] = acc ? g[d] + (float)s : (float)s;
  }
}

static void scale_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                           mdl_tensor *const *bottom) {
  sb_priv *sp = l->priv;
  const float *dy = top[0]->diff;
  const float *x = top[0] == bottom[0] ? l->keep.data : bottom[0]->data;
  if (sp->g.bias && l->param[sp->g.bias_param].diff)
    sb_reduce(sp, dy, NULL, l->param[sp->g.bias_param].diff, true);
  if (sp->g.two_bottom) {
    if (pd[1]) sb_reduce(sp, dy, x, bottom[1]->diff, false);
  } else if (l->param[0].diff) {
    sb_reduce(sp, dy, x, l->param[0].diff, true);
  }
  if (pd[0]) {
    const float *s = sp->g.two_bottom ? bottom[1]->data : l->param[0].data;
    sb_args a = {sp, dy, s, NULL, bottom[0]->diff};
    int64_t grain = sp->g.inner >= 4096 ? 1 : 4096 / sp->g.inner;
    mdl_parallel_for(l->ctx.pool, sp->g.outer * sp->g.D, grain, sb_fwd_task, &a);
  }
}

static void bias_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  sb_priv *sp = l->priv;
  const float *dy = top[0]->diff;
  if (sp->g.two_bottom) {
    if (pd[1]) sb_reduce(sp, dy, NULL, bottom[1]->diff, false);
  } else if (l->param[0].diff) {
    sb_reduce(sp, dy, NULL, l->param[0].diff, true);
  }
  if (pd[0]) mdl_vcopy(l->ctx.pool, sp->g.count, dy, bottom[0]->diff);
}

const mdl_layer_impl mdl_cpu_scale_layer = {"Scale",       sb_setup,       scale_init,
                                            scale_forward, scale_backward, sb_free};
const mdl_layer_impl mdl_cpu_bias_layer = {"Bias",       sb_setup,      bias_init,
                                           bias_forward, bias_backward, sb_free};

/* ---- Softmax over one axis: outer x C x inner ------------------------------ */

typedef mdl_softmax_geom softmax_priv;

static mdl_status softmax_setup(mdl_layer *l, mdl_error *err) {
  softmax_priv *sp = mdl_xcalloc(1, sizeof *sp);
  l->priv = sp;
  return mdl_geom_softmax(l, sp, err);
}

/* Shared with SoftmaxWithLoss (layers_loss.c). y may alias x. */
void mdl_cpu_softmax(int64_t outer, int64_t C, int64_t inner, const float *x, float *y) {
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      const float *xo = x + o * C * inner + i;
      float *yo = y + o * C * inner + i;
      float m = -FLT_MAX;
      for (int64_t c = 0; c < C; c++) m = xo[c * inner] > m ? xo[c * inner] : m;
      float s = 0;
      for (int64_t c = 0; c < C; c++) {
        float e = expf(xo[c * inner] - m);
        yo[c * inner] = e;
        s += e;
      }
      float inv = 1.f / s;
      for (int64_t c = 0; c < C; c++) yo[c * inner] *= inv;
    }
}

typedef struct softmax_args {
  const softmax_priv *sp;
  const float *x, *y, *dy;
  float *out;
} softmax_args;

static void softmax_fwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const softmax_args *a = arg;
  const softmax_priv *sp = a->sp;
  (void)thread;
  int64_t stride = sp->C * sp->inner;
  mdl_cpu_softmax(hi - lo, sp->C, sp->inner, a->x + lo * stride, a->out + lo * stride);
}

static void softmax_bwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const softmax_args *a = arg;
  const softmax_priv *sp = a->sp;
  (void)thread;
  for (int64_t o = lo; o < hi; o++)
    for (int64_t i = 0; i < sp->inner; i++) {
      const int64_t base = o * sp->C * sp->inner + i;
      float dot = 0;
      for (int64_t c = 0; c < sp->C; c++)
        dot += a->dy[base + c * sp->inner] * a->y[base + c * sp->inner];
      for (int64_t c = 0; c < sp->C; c++) {
        int64_t k = base + c * sp->inner;
        a->out[k] = (a->dy[k] - dot) * a->y[k];
      }
    }
}

static void softmax_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  softmax_priv *sp = l->priv;
  softmax_args a = {sp, bottom[0]->data, NULL, NULL, top[0]->data};
  int64_t per = sp->C * sp->inner;
  mdl_parallel_for(l->ctx.pool, sp->outer, per >= 4096 ? 1 : 4096 / per, softmax_fwd_task, &a);
}

static void softmax_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                             mdl_tensor *const *bottom) {
  softmax_priv *sp = l->priv;
  if (!pd[0]) return;
  softmax_args a = {sp, NULL, top[0]->data, top[0]->diff, bottom[0]->diff};
  int64_t per = sp->C * sp->inner;
  mdl_parallel_for(l->ctx.pool, sp->outer, per >= 4096 ? 1 : 4096 / per, softmax_bwd_task, &a);
}

const mdl_layer_impl mdl_cpu_softmax_layer = {"Softmax",       softmax_setup,    NULL,
                                              softmax_forward, softmax_backward, NULL};
