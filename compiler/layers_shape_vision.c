/* Shape rules of the spatial layers: Convolution, Deconvolution, Im2col
 * (Caffe's BaseConvolutionLayer geometry: N-d kernel/stride/pad/dilation or
 * the 2-D kernel_h/kernel_w style forms), Pooling (Caffe's ceil rounding and last-window
 * clip) and SPP. LRN is with the normalisation rules (layers_shape_common.c),
 * Crop with the structural ones (layers_shape_axes.c), as in runtime/cpu/. */
#include <math.h>
#include <stdio.h>

#include "compiler/layers_internal.h"

typedef struct conv_geom {
  int axis; /* channel axis */
  int nsp;  /* spatial axes after it */
  int64_t kernel[MDL_MAX_AXES], stride[MDL_MAX_AXES], pad[MDL_MAX_AXES], dil[MDL_MAX_AXES];
} conv_geom;

/* One repeated field (kernel_size, stride, pad, dilation): given 0 times
 * (default def; def < 0 means required), once, or once per spatial axis. */
static mdl_status conv_dims(mdl_shape_args *a, const char *field, size_t n, const uint32_t *v,
                            int64_t def, int nsp, int64_t *out, mdl_error *err) {
  if (n == 0 && def < 0) return mdl_lfail(a, err, "convolution_param.%s is missing", field);
  if (n > 1 && n != (size_t)nsp)
    return mdl_lfail(a, err,
                     "convolution_param.%s is given %zu times for %d spatial axes; give "
                     "it once or once per spatial axis",
                     field, n, nsp);
  for (int i = 0; i < nsp; i++) out[i] = n == 0 ? def : v[n == 1 ? 0 : i];
  return MDL_OK;
}

/* The 2-D field_h/field_w pair of a field, for 2-D only and not with the repeated form. */
static mdl_status conv_hw(mdl_shape_args *a, const char *field, const char *rep, size_t n_rep,
                          int nsp, int64_t h, int64_t w, int64_t *out, mdl_error *err) {
  if (nsp != 2)
    return mdl_lfail(a, err,
                     "convolution_param.%s_h/%s_w need 2 spatial axes, but bottom \"%s\" "
                     "(%s) has %d after the channel axis",
                     field, field, mdl_lbottom(a, 0), mdl_lstr(&a->bottom[0]), nsp);
  if (n_rep)
    return mdl_lfail(a, err, "convolution_param gives both %s and %s_h/%s_w; give one form", rep,
                     field, field);
  out[0] = h, out[1] = w;
  return MDL_OK;
}

static mdl_status conv_geometry(mdl_shape_args *a, const Caffe__ConvolutionParameter *p,
                                conv_geom *g, mdl_error *err) {
  mdl_status st = mdl_laxis(a, 0, p->axis, "convolution_param.axis", &g->axis, err);
  if (st != MDL_OK) return st;
  int nsp = g->nsp = a->bottom[0].n - g->axis - 1;
  if (p->has_kernel_h || p->has_kernel_w)
    st = conv_hw(a, "kernel", "kernel_size", p->n_kernel_size, nsp, p->kernel_h, p->kernel_w,
                 g->kernel, err);
  else
    st = conv_dims(a, "kernel_size", p->n_kernel_size, p->kernel_size, -1, nsp, g->kernel, err);
  if (st != MDL_OK) return st;
  if (p->has_stride_h || p->has_stride_w)
    st = conv_hw(a, "stride", "stride", p->n_stride, nsp, p->stride_h, p->stride_w, g->stride, err);
  else
    st = conv_dims(a, "stride", p->n_stride, p->stride, 1, nsp, g->stride, err);
  if (st != MDL_OK) return st;
  if (p->has_pad_h || p->has_pad_w)
    st = conv_hw(a, "pad", "pad", p->n_pad, nsp, p->pad_h, p->pad_w, g->pad, err);
  else
    st = conv_dims(a, "pad", p->n_pad, p->pad, 0, nsp, g->pad, err);
  if (st != MDL_OK) return st;
  st = conv_dims(a, "dilation", p->n_dilation, p->dilation, 1, nsp, g->dil, err);
  if (st != MDL_OK) return st;
  for (int i = 0; i < nsp; i++) {
    if (g->kernel[i] <= 0)
      return mdl_lfail(a, err,
                       "convolution_param kernel size must be > 0 (spatial axis %d is "
                       "%lld)",
                       i, (long long)g->kernel[i]);
    if (g->stride[i] <= 0)
      return mdl_lfail(a, err, "convolution_param stride must be > 0 (spatial axis %d is %lld)", i,
                       (long long)g->stride[i]);
    if (g->dil[i] <= 0)
      return mdl_lfail(a, err, "convolution_param dilation must be > 0 (spatial axis %d is %lld)",
                       i, (long long)g->dil[i]);
  }
  return MDL_OK;
}

/* Output size of a convolution window sliding along one spatial axis. */
static mdl_status conv_out(mdl_shape_args *a, const conv_geom *g, int i, int64_t *out,
                           mdl_error *err) {
  int64_t in = a->bottom[0].d[g->axis + 1 + i];
  int64_t ext = g->dil[i] * (g->kernel[i] - 1) + 1;
  if (in + 2 * g->pad[i] < ext)
    return mdl_lfail(a, err,
                     "the kernel (extent %lld on spatial axis %d) is larger than bottom "
                     "\"%s\" (%s) plus padding %lld",
                     (long long)ext, i, mdl_lbottom(a, 0), mdl_lstr(&a->bottom[0]),
                     (long long)g->pad[i]);
  *out = (in + 2 * g->pad[i] - ext) / g->stride[i] + 1;
  return MDL_OK;
}

static mdl_status conv_common(mdl_shape_args *a, bool deconv, mdl_error *err) {
  static const Caffe__ConvolutionParameter k_default = CAFFE__CONVOLUTION_PARAMETER__INIT;
  const Caffe__ConvolutionParameter *p = a->lp->convolution_param;
  if (!p) p = &k_default;
  if (a->n_top != a->n_bottom)
    return mdl_lfail(a, err, "takes one top per bottom (%d bottoms, %d tops)", a->n_bottom,
                     a->n_top);
  conv_geom g;
  mdl_status st = conv_geometry(a, p, &g, err);
  if (st != MDL_OK) return st;
  if (!p->num_output) return mdl_lfail(a, err, "convolution_param.num_output must be set and > 0");
  if (!p->group) return mdl_lfail(a, err, "convolution_param.group must be > 0");
  int64_t channels = a->bottom[0].d[g.axis];
  if (channels % p->group)
    return mdl_lfail(a, err,
                     "convolution_param.group %u does not divide the %lld channels of "
                     "bottom \"%s\" (%s)",
                     p->group, (long long)channels, mdl_lbottom(a, 0), mdl_lstr(&a->bottom[0]));
  if (p->num_output % p->group)
    return mdl_lfail(a, err, "convolution_param.num_output %u is not a multiple of group %u",
                     p->num_output, p->group);
  for (int b = 1; b < a->n_bottom; b++)
    if ((st = mdl_lsame(a, 0, b, err)) != MDL_OK) return st;

  mdl_shape top = {0};
  for (int i = 0; i < g.axis; i++) top.d[top.n++] = a->bottom[0].d[i];
  top.d[top.n++] = p->num_output;
  for (int i = 0; i < g.nsp; i++) {
    int64_t in = a->bottom[0].d[g.axis + 1 + i];
    if (deconv) {
      int64_t ext = g.dil[i] * (g.kernel[i] - 1) + 1;
      int64_t o = g.stride[i] * (in - 1) + ext - 2 * g.pad[i];
      if (o <= 0)
        return mdl_lfail(a, err,
                         "the padding %lld leaves no output on spatial axis %d of bottom "
                         "\"%s\" (%s)",
                         (long long)g.pad[i], i, mdl_lbottom(a, 0), mdl_lstr(&a->bottom[0]));
      top.d[top.n++] = o;
    } else {
      if ((st = conv_out(a, &g, i, &top.d[top.n++], err)) != MDL_OK) return st;
    }
  }
  for (int t = 0; t < a->n_top; t++) a->top[t] = top;

  /* Caffe's weight: [conv_out, conv_in / group, kernel...]; deconvolution
   * swaps in and out. */
  mdl_shape *w = &a->param[0];
  w->n = 2 + g.nsp;
  w->d[0] = deconv ? channels : p->num_output;
  w->d[1] = (deconv ? p->num_output : channels) / p->group;
  for (int i = 0; i < g.nsp; i++) w->d[2 + i] = g.kernel[i];
  a->n_param = 1;
  if (p->bias_term) {
    a->param[1].n = 1;
    a->param[1].d[0] = p->num_output;
    a->n_param = 2;
  }
  return MDL_OK;
}

mdl_status mdl_shape_convolution(mdl_shape_args *a, mdl_error *err) {
  return conv_common(a, false, err);
}

mdl_status mdl_shape_deconvolution(mdl_shape_args *a, mdl_error *err) {
  return conv_common(a, true, err);
}

mdl_status mdl_shape_im2col(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__ConvolutionParameter k_default = CAFFE__CONVOLUTION_PARAMETER__INIT;
  const Caffe__ConvolutionParameter *p = a->lp->convolution_param;
  if (!p) p = &k_default;
  conv_geom g;
  mdl_status st = conv_geometry(a, p, &g, err);
  if (st != MDL_OK) return st;
  mdl_shape top = a->bottom[0];
  int64_t kernel_dim = 1;
  for (int i = 0; i < g.nsp; i++) kernel_dim *= g.kernel[i];
  top.d[g.axis] *= kernel_dim;
  for (int i = 0; i < g.nsp; i++)
    if ((st = conv_out(a, &g, i, &top.d[g.axis + 1 + i], err)) != MDL_OK) return st;
  a->top[0] = top;
  return MDL_OK;
}

/* Caffe's PoolingLayer::Reshape rounding: ceil, then drop a last window that
 * would start in the padding. */
static int64_t pooled_size(int64_t in, int64_t k, int64_t pad, int64_t stride) {
  int64_t out = (int64_t)ceilf((float)(in + 2 * pad - k) / (float)stride) + 1;
  if (pad && (out - 1) * stride >= in + pad) --out;
  return out;
}

mdl_status mdl_shape_pooling(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__PoolingParameter k_default = CAFFE__POOLING_PARAMETER__INIT;
  const Caffe__PoolingParameter *p = a->lp->pooling_param;
  if (!p) p = &k_default;
  mdl_status st = mdl_laxes(a, 0, 4, 4, err);
  if (st != MDL_OK) return st;
  const mdl_shape *b = &a->bottom[0];
  int64_t kh, kw, ph, pw, sh, sw;
  if (p->global_pooling) {
    if (p->has_kernel_size || p->has_kernel_h || p->has_kernel_w)
      return mdl_lfail(a, err,
                       "pooling_param.global_pooling takes the whole input; kernel_size, "
                       "kernel_h and kernel_w must not be given");
    kh = b->d[2], kw = b->d[3];
  } else if (p->has_kernel_size) {
    if (p->has_kernel_h && p->has_kernel_w)
      return mdl_lfail(a, err,
                       "pooling_param gives both kernel_size and kernel_h/kernel_w; give "
                       "one form");
    kh = kw = p->kernel_size;
  } else if (p->has_kernel_h && p->has_kernel_w) {
    kh = p->kernel_h, kw = p->kernel_w;
  } else if (p->has_kernel_h || p->has_kernel_w) {
    return mdl_lfail(a, err,
                     "pooling_param needs both kernel_h and kernel_w for a non-square "
                     "window");
  } else {
    return mdl_lfail(a, err, "pooling_param.kernel_size is missing");
  }
  if (!((!p->has_pad && p->has_pad_h && p->has_pad_w) || (!p->has_pad_h && !p->has_pad_w)))
    return mdl_lfail(a, err, "pooling_param: give pad, or both pad_h and pad_w");
  if (!((!p->has_stride && p->has_stride_h && p->has_stride_w) ||
        (!p->has_stride_h && !p->has_stride_w)))
    return mdl_lfail(a, err, "pooling_param: give stride, or both stride_h and stride_w");
  if (p->has_pad_h)
    ph = p->pad_h, pw = p->pad_w;
  else
    ph = pw = p->pad;
  if (p->has_stride_h)
    sh = p->stride_h, sw = p->stride_w;
  else
    sh = sw = p->stride;
  if (kh <= 0 || kw <= 0)
    return mdl_lfail(a, err, "pooling_param kernel must be > 0 (got %lldx%lld)", (long long)kh,
                     (long long)kw);
  if (sh <= 0 || sw <= 0)
    return mdl_lfail(a, err, "pooling_param stride must be > 0 (got %lldx%lld)", (long long)sh,
                     (long long)sw);
  if (p->global_pooling && (ph || pw || sh != 1 || sw != 1))
    return mdl_lfail(a, err, "pooling_param.global_pooling needs pad 0 and stride 1");
  if (ph || pw) {
    if (p->pool == CAFFE__POOLING_PARAMETER__POOL_METHOD__STOCHASTIC)
      return mdl_lfail(a, err,
                       "pooling_param: padding is implemented only for MAX and AVE "
                       "pooling");
    if (ph >= kh || pw >= kw)
      return mdl_lfail(a, err,
                       "pooling_param pad (%lldx%lld) must be smaller than the kernel "
                       "(%lldx%lld)",
                       (long long)ph, (long long)pw, (long long)kh, (long long)kw);
  }
  if (a->n_top > 1 && p->pool != CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX)
    return mdl_lfail(a, err, "a second top (the argmax mask) exists only for MAX pooling");
  int64_t oh = pooled_size(b->d[2], kh, ph, sh), ow = pooled_size(b->d[3], kw, pw, sw);
  if (oh <= 0 || ow <= 0)
    return mdl_lfail(a, err, "the %lldx%lld window is larger than bottom \"%s\" (%s) plus padding",
                     (long long)kh, (long long)kw, mdl_lbottom(a, 0), mdl_lstr(b));
  int64_t d[4] = {b->d[0], b->d[1], oh, ow};
  for (int t = 0; t < a->n_top; t++) mdl_shape_set(&a->top[t], 4, d);
  return MDL_OK;
}

mdl_status mdl_shape_spp(mdl_shape_args *a, mdl_error *err) {
  const Caffe__SPPParameter *p = a->lp->spp_param;
  mdl_status st = mdl_laxes(a, 0, 4, 4, err);
  if (st != MDL_OK) return st;
  const mdl_shape *b = &a->bottom[0];
  if (!p || !p->pyramid_height || p->pyramid_height > 16)
    return mdl_lfail(a, err, "spp_param.pyramid_height must be set, between 1 and 16");
  if (b->d[2] <= 0 || b->d[3] <= 0)
    return mdl_lfail(a, err, "bottom \"%s\" (%s) is empty", mdl_lbottom(a, 0), mdl_lstr(b));
  int64_t bins_total = 0;
  for (uint32_t l = 0; l < p->pyramid_height; l++) {
    int64_t bins = (int64_t)1 << l;
    bins_total += bins * bins;
    if (l == 0) continue; /* one global pooling */
    /* Caffe's SPPLayer::GetPoolingParam, then PoolingLayer's pad check. */
    for (int ax = 2; ax <= 3; ax++) {
      int64_t k = (int64_t)ceil(b->d[ax] / (double)bins);
      int64_t pad = (k * bins - b->d[ax] + 1) / 2;
      if (pad && (pad >= k || p->pool == CAFFE__SPPPARAMETER__POOL_METHOD__STOCHASTIC))
        return mdl_lfail(a, err,
                         "spp_param.pyramid_height %u is too high for bottom \"%s\" (%s): "
                         "level %u has %lld bins on an axis of %lld",
                         p->pyramid_height, mdl_lbottom(a, 0), mdl_lstr(b), l, (long long)bins,
                         (long long)b->d[ax]);
    }
  }
  /* One level is Caffe's plain Pooling layer (N x C x 1 x 1); more levels go
   * through Flatten and Concat, which leave two axes. */
  int64_t d[4] = {b->d[0], b->d[1] * bins_total, 1, 1};
  mdl_shape_set(&a->top[0], p->pyramid_height == 1 ? 4 : 2, d);
  return MDL_OK;
}
