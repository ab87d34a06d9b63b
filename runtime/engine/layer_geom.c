/* What layer parameters and bottom shapes mean, for every backend: see
 * layer_geom.h. The checks follow Caffe's LayerSetUp/Reshape; the messages
 * are the ones the CPU backend gave before this module held them. */
#include "runtime/engine/layer_geom.h"

#include <string.h>

/* A shape as outer x C x inner around axis (a valid index). */
static void split_at(const mdl_shape *b, int axis, int64_t *outer, int64_t *C, int64_t *inner) {
  *outer = mdl_shape_count_axes(b, 0, axis);
  *C = b->d[axis];
  *inner = mdl_shape_count_axes(b, axis + 1, b->n);
}

/* ---- vision ---------------------------------------------------------------- */

/* Caffe's repeated-or-_h/_w convolution fields. */
static mdl_status conv_hw(const mdl_layer *l, const char *what, size_t n, const uint32_t *v,
                          bool has_h, uint32_t h, bool has_w, uint32_t w, int64_t dflt, int64_t *oh,
                          int64_t *ow, mdl_error *err) {
  if (has_h || has_w) {
    if (n)
      return MDL_LAYER_ERR(l, err, "%s given both as %s and as %s_h/%s_w", what, what, what, what);
    if (!(has_h && has_w))
      return MDL_LAYER_ERR(l, err, "%s_h and %s_w must be given together", what, what);
    *oh = h;
    *ow = w;
  } else if (n == 0) {
    *oh = *ow = dflt;
  } else if (n <= 2) {
    *oh = v[0];
    *ow = v[n - 1];
  } else {
    return MDL_LAYER_ERR(l, err, "%s has %zu values; 2-D convolution takes 1 or 2", what, n);
  }
  return MDL_OK;
}

mdl_status mdl_geom_conv_window(const mdl_layer *l, const Caffe__ConvolutionParameter *p,
                                mdl_window_geom *g, mdl_error *err) {
  mdl_status st;
  if ((st = conv_hw(l, "kernel_size", p->n_kernel_size, p->kernel_size, p->has_kernel_h,
                    p->kernel_h, p->has_kernel_w, p->kernel_w, 0, &g->kh, &g->kw, err)) ||
      (st = conv_hw(l, "stride", p->n_stride, p->stride, p->has_stride_h, p->stride_h,
                    p->has_stride_w, p->stride_w, 1, &g->sh, &g->sw, err)) ||
      (st = conv_hw(l, "pad", p->n_pad, p->pad, p->has_pad_h, p->pad_h, p->has_pad_w, p->pad_w, 0,
                    &g->ph, &g->pw, err)) ||
      (st = conv_hw(l, "dilation", p->n_dilation, p->dilation, false, 0, false, 0, 1, &g->dh,
                    &g->dw, err)))
    return st;
  if (g->kh <= 0 || g->kw <= 0 || g->sh <= 0 || g->sw <= 0 || g->dh <= 0 || g->dw <= 0)
    return MDL_LAYER_ERR(l, err, "kernel, stride and dilation must be positive");
  return MDL_OK;
}

mdl_status mdl_geom_conv(const mdl_layer *l, mdl_convolution_geom *g, mdl_error *err) {
  const Caffe__ConvolutionParameter *p = MDL_LAYER_PARAM(
      l, convolution_param, Caffe__ConvolutionParameter, CAFFE__CONVOLUTION_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0], *t = &l->top_shape[0];
  memset(g, 0, sizeof *g);
  if (mdl_shape_axis(b, p->axis) != 1 || b->n != 4)
    return MDL_LAYER_ERR(l, err, "only 2-D convolution over axis 1 of 4-axis blobs is implemented");
  for (int i = 1; i < l->n_bottom; i++)
    if (memcmp(&l->bottom_shape[i], b, sizeof *b) != 0)
      return MDL_LAYER_ERR(l, err, "all bottoms must have the same shape");
  mdl_status st = mdl_geom_conv_window(l, p, &g->win, err);
  if (st) return st;
  g->deconv = strcmp(l->impl->type, "Deconvolution") == 0;
  g->bias = p->bias_term;
  g->group = p->group ? p->group : 1;
  g->num = b->d[0];
  /* a Deconvolution is a Convolution from its top to its bottom run backwards */
  const mdl_shape *im = g->deconv ? t : b, *col = g->deconv ? b : t;
  g->im_ch = im->d[1], g->im_h = im->d[2], g->im_w = im->d[3];
  g->col_ch = col->d[1], g->col_h = col->d[2], g->col_w = col->d[3];
  if (g->im_ch % g->group || g->col_ch % g->group)
    return MDL_LAYER_ERR(l, err,
                         "channels %lld and num_output %lld must be multiples of group %lld",
                         (long long)b->d[1], (long long)p->num_output, (long long)g->group);
  g->wcount = g->col_ch * (g->im_ch / g->group) * g->win.kh * g->win.kw;
  g->bcount = g->bias ? t->d[1] : 0;
  if (l->n_param < 1 || l->param[0].count != g->wcount ||
      (g->bias && (l->n_param < 2 || l->param[1].count != g->bcount)))
    return MDL_LAYER_ERR(l, err, "weight/bias blob sizes disagree with the convolution geometry");
  return MDL_OK;
}

mdl_status mdl_geom_ip(const mdl_layer *l, mdl_ip_geom *g, mdl_error *err) {
  const Caffe__InnerProductParameter *p = MDL_LAYER_PARAM(
      l, inner_product_param, Caffe__InnerProductParameter, CAFFE__INNER_PRODUCT_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  int axis = mdl_shape_axis(b, p->axis);
  if (axis < 0) return MDL_LAYER_ERR(l, err, "axis %d out of range", p->axis);
  g->M = mdl_shape_count_axes(b, 0, axis);
  g->K = mdl_shape_count_axes(b, axis, b->n);
  g->N = p->num_output;
  g->transpose = p->transpose;
  g->bias = p->bias_term;
  if (l->n_param < 1 || l->param[0].count != g->N * g->K ||
      (g->bias && (l->n_param < 2 || l->param[1].count != g->N)))
    return MDL_LAYER_ERR(l, err, "weight/bias blob sizes disagree with num_output and the input");
  return MDL_OK;
}

mdl_status mdl_geom_pool(const mdl_layer *l, mdl_pool_geom *g, mdl_error *err) {
  const Caffe__PoolingParameter *p =
      MDL_LAYER_PARAM(l, pooling_param, Caffe__PoolingParameter, CAFFE__POOLING_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0], *t = &l->top_shape[0];
  if (b->n != 4) return MDL_LAYER_ERR(l, err, "pooling needs 4-axis input");
  g->method = p->pool;
  g->planes = b->d[0] * b->d[1];
  g->H = b->d[2];
  g->W = b->d[3];
  g->PH = t->d[2];
  g->PW = t->d[3];
  if (p->global_pooling) {
    g->kh = g->H;
    g->kw = g->W;
    g->sh = g->sw = 1;
    g->ph = g->pw = 0;
  } else {
    g->kh = p->has_kernel_h ? p->kernel_h : p->kernel_size;
    g->kw = p->has_kernel_w ? p->kernel_w : p->kernel_size;
    g->sh = p->has_stride_h ? p->stride_h : p->stride;
    g->sw = p->has_stride_w ? p->stride_w : p->stride;
    g->ph = p->has_pad_h ? p->pad_h : p->pad;
    g->pw = p->has_pad_w ? p->pad_w : p->pad;
  }
  if (g->kh <= 0 || g->kw <= 0 || g->sh <= 0 || g->sw <= 0)
    return MDL_LAYER_ERR(l, err, "kernel and stride must be positive");
  if (g->ph >= g->kh || g->pw >= g->kw)
    return MDL_LAYER_ERR(l, err, "pad must be smaller than the kernel");
  if (l->n_top > 1 && g->method != CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX)
    return MDL_LAYER_ERR(l, err, "only MAX pooling has a mask top");
  return MDL_OK;
}

mdl_status mdl_geom_lrn(const mdl_layer *l, mdl_lrn_geom *g, mdl_error *err) {
  const Caffe__LRNParameter *p =
      MDL_LAYER_PARAM(l, lrn_param, Caffe__LRNParameter, CAFFE__LRNPARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  if (b->n != 4) return MDL_LAYER_ERR(l, err, "LRN needs 4-axis input");
  if (p->local_size % 2 != 1) return MDL_LAYER_ERR(l, err, "LRN local_size must be odd");
  g->across = p->norm_region == CAFFE__LRNPARAMETER__NORM_REGION__ACROSS_CHANNELS;
  g->num = b->d[0];
  g->C = b->d[1];
  g->H = b->d[2];
  g->W = b->d[3];
  g->size = p->local_size;
  g->pre = (p->local_size - 1) / 2;
  g->alpha = p->alpha;
  g->beta = p->beta;
  g->k = p->k;
  return MDL_OK;
}

/* ---- neurons --------------------------------------------------------------- */

float mdl_geom_relu_slope(const mdl_layer *l) {
  return l->lp->relu_param ? l->lp->relu_param->negative_slope : 0.f;
}

mdl_status mdl_geom_dropout(const mdl_layer *l, mdl_dropout_geom *g, mdl_error *err) {
  const Caffe__DropoutParameter *p =
      MDL_LAYER_PARAM(l, dropout_param, Caffe__DropoutParameter, CAFFE__DROPOUT_PARAMETER__INIT);
  if (!(p->dropout_ratio >= 0.f && p->dropout_ratio < 1.f))
    return MDL_LAYER_ERR(l, err, "dropout_ratio must be in [0, 1), got %g", p->dropout_ratio);
  g->count = mdl_shape_count_axes(&l->bottom_shape[0], 0, l->bottom_shape[0].n);
  g->scale = 1.f / (1.f - p->dropout_ratio);
  g->thresh = (uint32_t)((double)UINT32_MAX * p->dropout_ratio);
  return MDL_OK;
}

/* ---- normalisation ------------------------------------------------------- */

mdl_status mdl_geom_softmax(const mdl_layer *l, mdl_softmax_geom *g, mdl_error *err) {
  const Caffe__SoftmaxParameter *p =
      MDL_LAYER_PARAM(l, softmax_param, Caffe__SoftmaxParameter, CAFFE__SOFTMAX_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  int axis = mdl_shape_axis(b, p->axis);
  if (axis < 0) return MDL_LAYER_ERR(l, err, "softmax axis %d out of range", p->axis);
  split_at(b, axis, &g->outer, &g->C, &g->inner);
  return MDL_OK;
}

mdl_status mdl_geom_bn(const mdl_layer *l, mdl_bn_geom *g, mdl_error *err) {
  const Caffe__BatchNormParameter *p = MDL_LAYER_PARAM(
      l, batch_norm_param, Caffe__BatchNormParameter, CAFFE__BATCH_NORM_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  g->global = p->has_use_global_stats ? p->use_global_stats : l->phase == CAFFE__PHASE__TEST;
  g->maf = p->moving_average_fraction;
  g->eps = p->eps;
  g->num = b->n > 0 ? b->d[0] : 1;
  g->C = b->n == 1 ? 1 : b->d[1];
  g->count = mdl_shape_count_axes(b, 0, b->n);
  g->inner = g->count / ((g->num * g->C) != 0 ? g->num * g->C : 1);
  if (l->n_param != 3 || l->param[0].count != g->C || l->param[1].count != g->C ||
      l->param[2].count != 1)
    return MDL_LAYER_ERR(l, err, "BatchNorm needs blobs of %lld, %lld and 1 values",
                         (long long)g->C, (long long)g->C);
  return MDL_OK;
}

mdl_status mdl_geom_scale(const mdl_layer *l, mdl_scale_geom *g, mdl_error *err) {
  int32_t axis_p;
  bool bias_term = false;
  g->is_scale = strcmp(l->impl->type, "Scale") == 0;
  if (g->is_scale) {
    const Caffe__ScaleParameter *p =
        MDL_LAYER_PARAM(l, scale_param, Caffe__ScaleParameter, CAFFE__SCALE_PARAMETER__INIT);
    axis_p = p->axis;
    bias_term = p->bias_term;
  } else {
    const Caffe__BiasParameter *p =
        MDL_LAYER_PARAM(l, bias_param, Caffe__BiasParameter, CAFFE__BIAS_PARAMETER__INIT);
    axis_p = p->axis;
  }
  const mdl_shape *b = &l->bottom_shape[0];
  g->two_bottom = l->n_bottom > 1;
  mdl_shape sshape;
  if (g->two_bottom) {
    sshape = l->bottom_shape[1];
  } else {
    if (l->n_param < 1) return MDL_LAYER_ERR(l, err, "missing the learned blob");
    sshape.n = l->param[0].n;
    for (int i = 0; i < sshape.n; i++) sshape.d[i] = l->param[0].d[i];
  }
  /* Caffe: a scalar operand (0 axes) with axis 0 broadcasts everywhere;
   * num_axes only shaped the learned blob, which the shape rule made */
  int axis = sshape.n == 0 ? 0 : mdl_shape_axis(b, axis_p);
  if (axis < 0 || axis + sshape.n > b->n)
    return MDL_LAYER_ERR(l, err, "axis %d and %d operand axes do not fit the input", axis_p,
                         sshape.n);
  for (int i = 0; i < sshape.n; i++)
    if (sshape.d[i] != b->d[axis + i])
      return MDL_LAYER_ERR(l, err, "operand axis %d is %lld, input axis %d is %lld", i,
                           (long long)sshape.d[i], axis + i, (long long)b->d[axis + i]);
  g->outer = mdl_shape_count_axes(b, 0, axis);
  g->D = mdl_shape_count_axes(&sshape, 0, sshape.n);
  g->inner = mdl_shape_count_axes(b, axis + sshape.n, b->n);
  g->count = mdl_shape_count_axes(b, 0, b->n);
  g->bias = g->is_scale && bias_term;
  g->bias_param = g->bias ? (g->two_bottom ? 0 : 1) : -1;
  if (g->bias && (l->n_param <= g->bias_param || l->param[g->bias_param].count != g->D))
    return MDL_LAYER_ERR(l, err, "bias blob size disagrees with the scale operand");
  return MDL_OK;
}

/* ---- structure ------------------------------------------------------------- */

mdl_status mdl_geom_concat(const mdl_layer *l, mdl_concat_geom *g, int64_t *part, mdl_error *err) {
  const mdl_shape *big, *small;
  int axis_p;
  bool has_legacy;
  uint32_t legacy;
  if (strcmp(l->impl->type, "Slice") == 0) {
    const Caffe__SliceParameter *p =
        MDL_LAYER_PARAM(l, slice_param, Caffe__SliceParameter, CAFFE__SLICE_PARAMETER__INIT);
    big = &l->bottom_shape[0], small = l->top_shape, g->n = l->n_top;
    axis_p = p->axis, has_legacy = p->has_slice_dim, legacy = p->slice_dim;
  } else {
    const Caffe__ConcatParameter *p =
        MDL_LAYER_PARAM(l, concat_param, Caffe__ConcatParameter, CAFFE__CONCAT_PARAMETER__INIT);
    big = &l->top_shape[0], small = l->bottom_shape, g->n = l->n_bottom;
    axis_p = p->axis, has_legacy = p->has_concat_dim, legacy = p->concat_dim;
  }
  int axis = has_legacy ? (int)legacy : mdl_shape_axis(big, axis_p);
  if (axis < 0 || axis >= big->n) return MDL_LAYER_ERR(l, err, "axis %d out of range", axis_p);
  g->axis = axis;
  g->outer = mdl_shape_count_axes(big, 0, axis);
  g->inner = mdl_shape_count_axes(big, axis + 1, big->n);
  g->total = big->d[axis];
  int64_t sum = 0;
  for (int i = 0; i < g->n; i++) {
    if (small[i].n != big->n)
      return MDL_LAYER_ERR(l, err, "blob %d has a different number of axes", i);
    if (part) part[i] = small[i].d[axis];
    sum += small[i].d[axis];
  }
  if (sum != g->total)
    return MDL_LAYER_ERR(l, err, "parts add up to %lld along axis %d, expected %lld",
                         (long long)sum, axis, (long long)g->total);
  return MDL_OK;
}

mdl_status mdl_geom_eltwise(const mdl_layer *l, mdl_eltwise_geom *g, float *coeff, mdl_error *err) {
  const Caffe__EltwiseParameter *p =
      MDL_LAYER_PARAM(l, eltwise_param, Caffe__EltwiseParameter, CAFFE__ELTWISE_PARAMETER__INIT);
  if (p->n_coeff && p->n_coeff != (size_t)l->n_bottom)
    return MDL_LAYER_ERR(l, err, "%zu coeff values for %d bottoms", p->n_coeff, l->n_bottom);
  if (p->n_coeff && p->operation != CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__SUM)
    return MDL_LAYER_ERR(l, err, "coeff is only for the SUM operation");
  const mdl_shape *b0 = &l->bottom_shape[0];
  for (int i = 1; i < l->n_bottom; i++)
    if (mdl_shape_count_axes(&l->bottom_shape[i], 0, MDL_MAX_AXES) !=
            mdl_shape_count_axes(b0, 0, MDL_MAX_AXES) ||
        l->bottom_shape[i].n != b0->n)
      return MDL_LAYER_ERR(l, err, "bottom %d has a different shape from bottom 0", i);
  g->op = p->operation;
  g->count = mdl_shape_count_axes(b0, 0, b0->n);
  if (coeff)
    for (int i = 0; i < l->n_bottom; i++) coeff[i] = p->n_coeff ? p->coeff[i] : 1.f;
  return MDL_OK;
}

/* ---- losses and metrics ---------------------------------------------------- */

int mdl_geom_loss_norm_mode(const mdl_layer *l, int dflt) {
  const Caffe__LossParameter *p = l->lp->loss_param;
  if (!p) return dflt;
  if (p->has_normalization) return p->normalization;
  if (p->has_normalize)
    return p->normalize ? CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID
                        : CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__BATCH_SIZE;
  return dflt;
}

double mdl_geom_loss_normalizer(int mode, int64_t outer, int64_t inner, int64_t valid) {
  double n;
  switch (mode) {
    case CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__FULL:
      n = (double)outer * (double)inner;
      break;
    case CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID:
      n = valid < 0 ? (double)outer * (double)inner : (double)valid;
      break;
    case CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__BATCH_SIZE:
      n = (double)outer;
      break;
    default:
      n = 1;
  }
  return n < 1 ? 1 : n;
}

bool mdl_geom_loss_ignore(const mdl_layer *l, int *label) {
  const Caffe__LossParameter *p = l->lp->loss_param;
  *label = p && p->has_ignore_label ? p->ignore_label : 0;
  return p && p->has_ignore_label;
}

/* The labels (bottom 1) must give one class per outer x inner position. */
static mdl_status check_labels(const mdl_layer *l, int64_t outer, int64_t inner, mdl_error *err) {
  int64_t nlab = mdl_shape_count_axes(&l->bottom_shape[1], 0, l->bottom_shape[1].n);
  if (nlab != outer * inner)
    return MDL_LAYER_ERR(l, err, "%lld labels for %lld predictions (outer %lld x inner %lld)",
                         (long long)nlab, (long long)(outer * inner), (long long)outer,
                         (long long)inner);
  return MDL_OK;
}

mdl_status mdl_geom_softmax_loss(const mdl_layer *l, mdl_softmax_loss_geom *g, mdl_error *err) {
  mdl_softmax_geom s;
  mdl_status st = mdl_geom_softmax(l, &s, err);
  if (st) return st;
  g->outer = s.outer, g->C = s.C, g->inner = s.inner;
  if ((st = check_labels(l, g->outer, g->inner, err))) return st;
  g->mode = mdl_geom_loss_norm_mode(l, CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID);
  g->ignore = mdl_geom_loss_ignore(l, &g->ignore_label);
  return MDL_OK;
}

mdl_status mdl_geom_accuracy(const mdl_layer *l, mdl_accuracy_geom *g, mdl_error *err) {
  const Caffe__AccuracyParameter *ap =
      MDL_LAYER_PARAM(l, accuracy_param, Caffe__AccuracyParameter, CAFFE__ACCURACY_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  int axis = mdl_shape_axis(b, ap->axis);
  if (axis < 0) return MDL_LAYER_ERR(l, err, "axis %d out of range", ap->axis);
  split_at(b, axis, &g->outer, &g->C, &g->inner);
  g->top_k = ap->top_k;
  g->ignore = ap->has_ignore_label;
  g->ignore_label = ap->ignore_label;
  if (g->top_k < 1 || g->top_k > g->C)
    return MDL_LAYER_ERR(l, err, "top_k %lld must be in 1..%lld", (long long)g->top_k,
                         (long long)g->C);
  if (mdl_shape_count_axes(&l->bottom_shape[1], 0, l->bottom_shape[1].n) != g->outer * g->inner)
    return MDL_LAYER_ERR(l, err, "label count does not match the predictions");
  return MDL_OK;
}
