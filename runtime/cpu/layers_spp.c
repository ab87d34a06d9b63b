/* SPP, spatial pyramid pooling (He et al. 2014) as Caffe's SPPLayer: level l
 * pools the whole N x C x H x W input into 2^l x 2^l bins with the pooling
 * kernels of layers_pool.c (MAX or AVE; Caffe's window and padding per
 * level), and the levels, each flattened per item as C x bins x bins, are
 * concatenated along axis 1. Not STOCHASTIC (no CPU version in Caffe). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu/layers_cpu.h"

typedef struct spp_priv {
  int levels;
  int64_t num, chw;   /* items; floats of one item of the bottom */
  int64_t total;      /* floats of one item of the top: C * sum of bins^2 */
  mdl_cpu_pool *pool; /* one per level */
  float *y, *dx;      /* scratch: one level's pooled output, one level's dx */
} spp_priv;

static mdl_status spp_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__SPPParameter *p =
      MDL_LAYER_PARAM(l, spp_param, Caffe__SPPParameter, CAFFE__SPPPARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  if (p->pool == CAFFE__SPPPARAMETER__POOL_METHOD__STOCHASTIC)
    return MDL_LAYER_ERR(l, err, "STOCHASTIC pyramid pooling is not implemented (MAX and AVE are)");
  spp_priv *sp = mdl_xcalloc(1, sizeof *sp);
  l->priv = sp;
  sp->levels = (int)p->pyramid_height;
  sp->num = b->d[0];
  sp->chw = mdl_shape_count_axes(b, 1, 4);
  sp->pool = mdl_xcalloc((size_t)sp->levels, sizeof *sp->pool);
  int64_t H = b->d[2], W = b->d[3], most = 0;
  for (int lv = 0; lv < sp->levels; lv++) {
    mdl_cpu_pool *pp = &sp->pool[lv];
    int64_t bins = (int64_t)1 << lv;
    /* Caffe's GetPoolingParam: the smallest window that covers the input
     * in `bins` steps, the shortfall split as padding (the odd pixel at the
     * end) */
    pp->g.kh = (H + bins - 1) / bins;
    pp->g.kw = (W + bins - 1) / bins;
    pp->g.ph = (pp->g.kh * bins - H + 1) / 2;
    pp->g.pw = (pp->g.kw * bins - W + 1) / 2;
    pp->g.sh = pp->g.kh;
    pp->g.sw = pp->g.kw;
    if ((pp->g.ph && pp->g.ph >= pp->g.kh) || (pp->g.pw && pp->g.pw >= pp->g.kw))
      return MDL_LAYER_ERR(l, err, "pyramid level %d needs a pad as large as its window", lv);
    pp->g.method = p->pool == CAFFE__SPPPARAMETER__POOL_METHOD__MAX
                       ? CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX
                       : CAFFE__POOLING_PARAMETER__POOL_METHOD__AVE;
    pp->g.planes = b->d[0] * b->d[1];
    pp->g.H = H;
    pp->g.W = W;
    pp->g.PH = pp->g.PW = bins;
    pp->out_count = pp->g.planes * bins * bins;
    if (pp->g.method == CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX)
      pp->mask = mdl_xmalloc((size_t)pp->out_count * sizeof(int32_t));
    sp->total += b->d[1] * bins * bins;
    if (pp->out_count > most) most = pp->out_count;
  }
  if (sp->total != mdl_shape_count_axes(&l->top_shape[0], 1, l->top_shape[0].n))
    return MDL_LAYER_ERR(l, err, "internal: top has %lld floats per item, levels give %lld",
                         (long long)mdl_shape_count_axes(&l->top_shape[0], 1, l->top_shape[0].n),
                         (long long)sp->total);
  sp->y = mdl_falloc(most);
  sp->dx = mdl_falloc(sp->num * sp->chw);
  if (!sp->y || !sp->dx)
    return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": pyramid buffers", l->name);
  return MDL_OK;
}

static void spp_free(mdl_layer *l) {
  spp_priv *sp = l->priv;
  if (sp->pool)
    for (int lv = 0; lv < sp->levels; lv++) free(sp->pool[lv].mask);
  free(sp->pool);
  mdl_ffree(sp->y);
  mdl_ffree(sp->dx);
  free(sp);
}

static void spp_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  spp_priv *sp = l->priv;
  int64_t off = 0; /* floats into an item's top row */
  for (int lv = 0; lv < sp->levels; lv++) {
    mdl_cpu_pool *pp = &sp->pool[lv];
    int64_t per_item = pp->out_count / (sp->num ? sp->num : 1);
    mdl_cpu_pool_forward(l->ctx.pool, pp, bottom[0]->data, sp->y, NULL);
    for (int64_t n = 0; n < sp->num; n++)
      memcpy(top[0]->data + n * sp->total + off, sp->y + n * per_item,
             (size_t)per_item * sizeof(float));
    off += per_item;
  }
}

static void spp_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  spp_priv *sp = l->priv;
  float *dx = bottom[0]->diff;
  int64_t count = sp->num * sp->chw, off = 0;
  memset(dx, 0, (size_t)count * sizeof(float));
  for (int lv = 0; lv < sp->levels; lv++) {
    const mdl_cpu_pool *pp = &sp->pool[lv];
    int64_t per_item = pp->out_count / (sp->num ? sp->num : 1);
    for (int64_t n = 0; n < sp->num; n++)
      memcpy(sp->y + n * per_item, top[0]->diff + n * sp->total + off,
             (size_t)per_item * sizeof(float));
    mdl_cpu_pool_backward(l->ctx.pool, pp, sp->y, sp->dx);
    for (int64_t i = 0; i < count; i++) dx[i] += sp->dx[i];
    off += per_item;
  }
}

const mdl_layer_impl mdl_cpu_spp_layer = {"SPP",       spp_setup,    NULL,
                                          spp_forward, spp_backward, spp_free};
