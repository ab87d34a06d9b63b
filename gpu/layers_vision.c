/* The GPU's Convolution and Deconvolution (cuDNN), InnerProduct (cuBLAS), Pooling and
 * LRN: see layers_gpu.h. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/layers_gpu.h"

/* ---- Convolution (cuDNN): groups, dilation, algorithms chosen at setup --- */

typedef struct conv_priv {
  cudnnTensorDescriptor_t x, y;
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t conv;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd_data;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter;
  size_t ws_bytes;
  int64_t N, M, P; /* batch, top channels, top plane (the bias's shape) */
  bool bias, deconv;
} conv_priv;

static mdl_status conv_hw(mdl_layer *l, const char *what, size_t n, const uint32_t *v, bool has_h,
                          uint32_t h, bool has_w, uint32_t w, int dflt, int *oh, int *ow,
                          mdl_error *err) {
  if (has_h || has_w) {
    if (n) return LAYER_ERR(l, err, "%s given both as %s and as %s_h/%s_w", what, what, what, what);
    if (!(has_h && has_w))
      return LAYER_ERR(l, err, "%s_h and %s_w must be given together", what, what);
    *oh = (int)h, *ow = (int)w;
  } else if (n == 0) {
    *oh = *ow = dflt;
  } else if (n <= 2) {
    *oh = (int)v[0], *ow = (int)v[n - 1];
  } else {
    return LAYER_ERR(l, err, "%s has %zu values; 2-D convolution takes 1 or 2", what, n);
  }
  return MDL_OK;
}

static void conv_free(mdl_layer *l) {
  conv_priv *cp = l->priv;
  if (cp->x) cudnnDestroyTensorDescriptor(cp->x);
  if (cp->y) cudnnDestroyTensorDescriptor(cp->y);
  if (cp->w) cudnnDestroyFilterDescriptor(cp->w);
  if (cp->conv) cudnnDestroyConvolutionDescriptor(cp->conv);
  free(cp);
}

static size_t conv_ws_limit(void) {
  const char *e = getenv("MDL_CUDNN_WS_MB");
  double mb = e ? atof(e) : 1024;
  return (size_t)(mb * 1048576.0);
}

static mdl_status conv_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__ConvolutionParameter *p =
      PARAM(l, convolution_param, Caffe__ConvolutionParameter, CAFFE__CONVOLUTION_PARAMETER__INIT);
  mdl_gpu *g = G(l);
  const mdl_shape *b = &l->bottom_shape[0], *t = &l->top_shape[0];
  if (shape_axis(b, p->axis) != 1 || b->n != 4 || l->n_bottom != 1)
    return LAYER_ERR(l, err, "only 2-D convolution of one 4-axis bottom over axis 1 runs on %s",
                     g->name);
  if (!fits_int(b) || !fits_int(t)) return LAYER_ERR(l, err, "blobs too large for cuDNN");
  conv_priv *cp = mdl_xcalloc(1, sizeof *cp);
  l->priv = cp;
  int kh, kw, sh, sw, ph, pw, dh, dw;
  mdl_status st;
  if ((st = conv_hw(l, "kernel_size", p->n_kernel_size, p->kernel_size, p->has_kernel_h,
                    p->kernel_h, p->has_kernel_w, p->kernel_w, 0, &kh, &kw, err)) ||
      (st = conv_hw(l, "stride", p->n_stride, p->stride, p->has_stride_h, p->stride_h,
                    p->has_stride_w, p->stride_w, 1, &sh, &sw, err)) ||
      (st = conv_hw(l, "pad", p->n_pad, p->pad, p->has_pad_h, p->pad_h, p->has_pad_w, p->pad_w, 0,
                    &ph, &pw, err)) ||
      (st = conv_hw(l, "dilation", p->n_dilation, p->dilation, false, 0, false, 0, 1, &dh, &dw,
                    err)))
    return st;
  if (kh <= 0 || kw <= 0 || sh <= 0 || sw <= 0 || dh <= 0 || dw <= 0)
    return LAYER_ERR(l, err, "kernel, stride and dilation must be positive");
  int group = p->group ? (int)p->group : 1;
  /* cuDNN's x is the image side, y the column side: a Deconvolution is a
   * Convolution from its top to its bottom run backwards */
  cp->deconv = strcmp(l->impl->type, "Deconvolution") == 0;
  const mdl_shape *im = cp->deconv ? t : b, *col = cp->deconv ? b : t;
  int64_t C = im->d[1], M = col->d[1];
  if (C % group || M % group)
    return LAYER_ERR(l, err, "channels %lld and %lld must be multiples of group %d", (long long)C,
                     (long long)M, group);
  cp->N = b->d[0];
  cp->M = t->d[1];
  cp->P = t->d[2] * t->d[3];
  cp->bias = p->bias_term;
  if (l->n_param < 1 || l->param[0].count != M * (C / group) * kh * kw ||
      (cp->bias && (l->n_param < 2 || l->param[1].count != cp->M)))
    return LAYER_ERR(l, err, "weight/bias blob sizes disagree with the convolution geometry");
  cudnnMathType_t math = g->exact ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
  bool ok = tensor_desc(g, &cp->x, im->d[0], C, im->d[2], im->d[3]) &&
            tensor_desc(g, &cp->y, col->d[0], M, col->d[2], col->d[3]) &&
            MDL_CUDNN_TRY(g, cudnnCreateFilterDescriptor(&cp->w)) &&
            MDL_CUDNN_TRY(g, cudnnSetFilter4dDescriptor(cp->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                                        (int)M, (int)(C / group), kh, kw)) &&
            MDL_CUDNN_TRY(g, cudnnCreateConvolutionDescriptor(&cp->conv)) &&
            MDL_CUDNN_TRY(
                g, cudnnSetConvolution2dDescriptor(cp->conv, ph, pw, sh, sw, dh, dw,
                                                   CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT)) &&
            MDL_CUDNN_TRY(g, cudnnSetConvolutionGroupCount(cp->conv, group)) &&
            MDL_CUDNN_TRY(g, cudnnSetConvolutionMathType(cp->conv, math));
  if (!ok) return mdl_gpu_take_error(g, err);
  int on, oc, oh, ow;
  if (!MDL_CUDNN_TRY(
          g, cudnnGetConvolution2dForwardOutputDim(cp->conv, cp->x, cp->w, &on, &oc, &oh, &ow)))
    return mdl_gpu_take_error(g, err);
  if (on != col->d[0] || oc != M || oh != col->d[2] || ow != col->d[3])
    return LAYER_ERR(l, err, "cuDNN's output %dx%dx%dx%d differs from the shape rule's", on, oc, oh,
                     ow);
  /* Algorithms: the heuristics' best whose workspace fits the limit. */
  const size_t limit = conv_ws_limit();
  size_t need = 0;
  {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int n = 0;
    if (!MDL_CUDNN_TRY(
            g, cudnnGetConvolutionForwardAlgorithm_v7(g->dnn, cp->x, cp->w, cp->conv, cp->y,
                                                      CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf)))
      return mdl_gpu_take_error(g, err);
    int pick = -1;
    for (int i = 0; i < n && pick < 0; i++)
      if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= limit &&
          (!g->exact || perf[i].mathType == CUDNN_FMA_MATH ||
           perf[i].mathType == CUDNN_DEFAULT_MATH))
        pick = i;
    if (pick < 0)
      return LAYER_ERR(l, err, "cuDNN offers no forward algorithm within %zu bytes", limit);
    cp->fwd = perf[pick].algo;
    if (perf[pick].memory > need) need = perf[pick].memory;
  }
  /* a Deconvolution's forward is the backward-data pass */
  if (l->phase == CAFFE__PHASE__TRAIN || cp->deconv) {
    cudnnConvolutionBwdDataAlgoPerf_t pd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    cudnnConvolutionBwdFilterAlgoPerf_t pf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int nd = 0, nf = 0;
    if (!MDL_CUDNN_TRY(g, cudnnGetConvolutionBackwardDataAlgorithm_v7(
                              g->dnn, cp->w, cp->y, cp->conv, cp->x,
                              CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &nd, pd)) ||
        !MDL_CUDNN_TRY(g, cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                              g->dnn, cp->x, cp->y, cp->conv, cp->w,
                              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &nf, pf)))
      return mdl_gpu_take_error(g, err);
    int a = -1, f = -1;
    for (int i = 0; i < nd && a < 0; i++)
      if (pd[i].status == CUDNN_STATUS_SUCCESS && pd[i].memory <= limit) a = i;
    for (int i = 0; i < nf && f < 0; i++)
      if (pf[i].status == CUDNN_STATUS_SUCCESS && pf[i].memory <= limit) f = i;
    if (a < 0 || f < 0)
      return LAYER_ERR(l, err, "cuDNN offers no backward algorithm within %zu bytes", limit);
    cp->bwd_data = pd[a].algo;
    cp->bwd_filter = pf[f].algo;
    if (pd[a].memory > need) need = pd[a].memory;
    if (pf[f].memory > need) need = pf[f].memory;
  }
  cp->ws_bytes = need;
  mdl_workspace_reserve(l->ctx.ws, need);
  return MDL_OK;
}

static mdl_status conv_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  const Caffe__ConvolutionParameter *p =
      PARAM(l, convolution_param, Caffe__ConvolutionParameter, CAFFE__CONVOLUTION_PARAMETER__INIT);
  const Caffe__FillerParameter *f[2] = {p->weight_filler, p->bias_filler};
  return mdl_gpu_fill_params(l, f, rng, err);
}

/* im = conv(col) forward: col from im; backward-data: im from col. */
static void conv_fwd(mdl_layer *l, const float *im, float *col) {
  conv_priv *cp = l->priv;
  mdl_gpu *g = G(l);
  MDL_CUDNN_TRY(g,
                cudnnConvolutionForward(g->dnn, &ONE, cp->x, im, cp->w, l->param[0].data, cp->conv,
                                        cp->fwd, l->ctx.ws->data, cp->ws_bytes, &ZERO, cp->y, col));
}

static void conv_bwd_data(mdl_layer *l, const float *col, float *im) {
  conv_priv *cp = l->priv;
  mdl_gpu *g = G(l);
  MDL_CUDNN_TRY(g, cudnnConvolutionBackwardData(g->dnn, &ONE, cp->w, l->param[0].data, cp->y, col,
                                                cp->conv, cp->bwd_data, l->ctx.ws->data,
                                                cp->ws_bytes, &ZERO, cp->x, im));
}

static void conv_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  conv_priv *cp = l->priv;
  mdl_gpu *g = G(l);
  if (cp->deconv)
    conv_bwd_data(l, bottom[0]->data, top[0]->data);
  else
    conv_fwd(l, bottom[0]->data, top[0]->data);
  if (cp->bias)
    MDL_CUDA_TRY(g,
                 mdl_gk_add_bias(g->stream, top[0]->data, l->param[1].data, cp->N, cp->M, cp->P));
}

static void conv_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  conv_priv *cp = l->priv;
  mdl_gpu *g = G(l);
  if (cp->bias && l->param[1].diff)
    MDL_CUDA_TRY(g,
                 mdl_gk_bias_grad(g->stream, top[0]->diff, l->param[1].diff, cp->N, cp->M, cp->P));
  /* filter gradient from the image side and the column side's gradient
   * (conv: bottom data, top diff; deconv: top diff, bottom data),
   * accumulated (beta 1) as the layer contract asks */
  const float *im = cp->deconv ? top[0]->diff : bottom[0]->data;
  const float *dcol = cp->deconv ? bottom[0]->data : top[0]->diff;
  if (l->param[0].diff)
    MDL_CUDNN_TRY(g, cudnnConvolutionBackwardFilter(g->dnn, &ONE, cp->x, im, cp->y, dcol, cp->conv,
                                                    cp->bwd_filter, l->ctx.ws->data, cp->ws_bytes,
                                                    &ONE, cp->w, l->param[0].diff));
  if (pd[0]) {
    if (cp->deconv)
      conv_fwd(l, top[0]->diff, bottom[0]->diff);
    else
      conv_bwd_data(l, top[0]->diff, bottom[0]->diff);
  }
}

const mdl_layer_impl mdl_gpu_deconv_layer = {"Deconvolution", conv_setup,    conv_init,
                                             conv_forward,    conv_backward, conv_free};
const mdl_layer_impl mdl_gpu_conv_layer = {"Convolution", conv_setup,    conv_init,
                                           conv_forward,  conv_backward, conv_free};

/* ---- InnerProduct (cuBLAS): Y (M x N) = X (M x K) W^T + b ----------------- */
/* Row-major products as cuBLAS's column-major ones: C = A B is C^T = B^T A^T. */

typedef struct ip_priv {
  int M, K, N;
  bool transpose, bias;
} ip_priv;

static mdl_status ip_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__InnerProductParameter *p = PARAM(
      l, inner_product_param, Caffe__InnerProductParameter, CAFFE__INNER_PRODUCT_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  int axis = shape_axis(b, p->axis);
  if (axis < 0) return LAYER_ERR(l, err, "axis %d out of range", p->axis);
  if (!fits_int(b)) return LAYER_ERR(l, err, "input too large for cuBLAS");
  ip_priv *ip = mdl_xcalloc(1, sizeof *ip);
  l->priv = ip;
  ip->M = (int)shape_count(b, 0, axis);
  ip->K = (int)shape_count(b, axis, b->n);
  ip->N = (int)p->num_output;
  ip->transpose = p->transpose;
  ip->bias = p->bias_term;
  if (l->n_param < 1 || l->param[0].count != (int64_t)ip->N * ip->K ||
      (ip->bias && (l->n_param < 2 || l->param[1].count != ip->N)))
    return LAYER_ERR(l, err, "weight/bias blob sizes disagree with num_output and the input");
  return MDL_OK;
}

static mdl_status ip_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  const Caffe__InnerProductParameter *p = PARAM(
      l, inner_product_param, Caffe__InnerProductParameter, CAFFE__INNER_PRODUCT_PARAMETER__INIT);
  const Caffe__FillerParameter *f[2] = {p->weight_filler, p->bias_filler};
  return mdl_gpu_fill_params(l, f, rng, err);
}

static void ip_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  ip_priv *ip = l->priv;
  mdl_gpu *g = G(l);
  const float *w = l->param[0].data;
  if (ip->transpose) /* W is K x N */
    MDL_CUBLAS_TRY(g, cublasSgemm(g->blas, CUBLAS_OP_N, CUBLAS_OP_N, ip->N, ip->M, ip->K, &ONE, w,
                                  ip->N, bottom[0]->data, ip->K, &ZERO, top[0]->data, ip->N));
  else /* W is N x K */
    MDL_CUBLAS_TRY(g, cublasSgemm(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, ip->N, ip->M, ip->K, &ONE, w,
                                  ip->K, bottom[0]->data, ip->K, &ZERO, top[0]->data, ip->N));
  if (ip->bias)
    MDL_CUDA_TRY(g, mdl_gk_add_bias(g->stream, top[0]->data, l->param[1].data, ip->M, ip->N, 1));
}

static void ip_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                        mdl_tensor *const *bottom) {
  ip_priv *ip = l->priv;
  mdl_gpu *g = G(l);
  const float *dy = top[0]->diff, *x = bottom[0]->data, *w = l->param[0].data;
  if (l->param[0].diff) {
    if (ip->transpose) /* dW (K x N) += X^T dY */
      MDL_CUBLAS_TRY(g, cublasSgemm(g->blas, CUBLAS_OP_N, CUBLAS_OP_T, ip->N, ip->K, ip->M, &ONE,
                                    dy, ip->N, x, ip->K, &ONE, l->param[0].diff, ip->N));
    else /* dW (N x K) += dY^T X */
      MDL_CUBLAS_TRY(g, cublasSgemm(g->blas, CUBLAS_OP_N, CUBLAS_OP_T, ip->K, ip->N, ip->M, &ONE, x,
                                    ip->K, dy, ip->N, &ONE, l->param[0].diff, ip->K));
  }
  if (ip->bias && l->param[1].diff)
    MDL_CUDA_TRY(g, mdl_gk_bias_grad(g->stream, dy, l->param[1].diff, ip->M, ip->N, 1));
  if (pd[0]) {
    if (ip->transpose) /* dX = dY W^T, W K x N */
      MDL_CUBLAS_TRY(g, cublasSgemm(g->blas, CUBLAS_OP_T, CUBLAS_OP_N, ip->K, ip->M, ip->N, &ONE, w,
                                    ip->N, dy, ip->N, &ZERO, bottom[0]->diff, ip->K));
    else /* dX = dY W, W N x K */
      MDL_CUBLAS_TRY(g, cublasSgemm(g->blas, CUBLAS_OP_N, CUBLAS_OP_N, ip->K, ip->M, ip->N, &ONE, w,
                                    ip->K, dy, ip->N, &ZERO, bottom[0]->diff, ip->K));
  }
}

const mdl_layer_impl mdl_gpu_ip_layer = {"InnerProduct", ip_setup,    ip_init,
                                         ip_forward,     ip_backward, NULL};

/* ---- Pooling: our kernels (Caffe's ceil rounding and AVE divisor) -------- */

typedef struct pool_priv {
  mdl_gk_pool k;
  int32_t *mask; /* device, MAX only */
} pool_priv;

static mdl_status pool_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__PoolingParameter *p =
      PARAM(l, pooling_param, Caffe__PoolingParameter, CAFFE__POOLING_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0], *t = &l->top_shape[0];
  if (b->n != 4) return LAYER_ERR(l, err, "pooling needs 4-axis input");
  if (p->pool == CAFFE__POOLING_PARAMETER__POOL_METHOD__STOCHASTIC || l->n_top > 1)
    return LAYER_ERR(l, err, "STOCHASTIC pooling and the mask top do not run on the GPU");
  pool_priv *pp = mdl_xcalloc(1, sizeof *pp);
  l->priv = pp;
  mdl_gk_pool *k = &pp->k;
  k->max = p->pool == CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX;
  k->planes = b->d[0] * b->d[1];
  k->H = b->d[2];
  k->W = b->d[3];
  k->PH = t->d[2];
  k->PW = t->d[3];
  if (p->global_pooling) {
    k->kh = (int)k->H, k->kw = (int)k->W, k->sh = k->sw = 1, k->ph = k->pw = 0;
  } else {
    k->kh = (int)(p->has_kernel_h ? p->kernel_h : p->kernel_size);
    k->kw = (int)(p->has_kernel_w ? p->kernel_w : p->kernel_size);
    k->sh = (int)(p->has_stride_h ? p->stride_h : p->stride);
    k->sw = (int)(p->has_stride_w ? p->stride_w : p->stride);
    k->ph = (int)(p->has_pad_h ? p->pad_h : p->pad);
    k->pw = (int)(p->has_pad_w ? p->pad_w : p->pad);
  }
  if (k->kh <= 0 || k->kw <= 0 || k->sh <= 0 || k->sw <= 0)
    return LAYER_ERR(l, err, "kernel and stride must be positive");
  if (k->ph >= k->kh || k->pw >= k->kw)
    return LAYER_ERR(l, err, "pad must be smaller than the kernel");
  if (k->max) {
    pp->mask = mdl_gpu_alloc_bytes(G(l), (size_t)(k->planes * k->PH * k->PW) * sizeof(int32_t),
                                   "the pooling mask", err);
    if (!pp->mask) return MDL_ERR_NOMEM;
  }
  return MDL_OK;
}

static void pool_free(mdl_layer *l) {
  pool_priv *pp = l->priv;
  mdl_gpu_free_bytes(pp->mask);
  free(pp);
}

static void pool_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  pool_priv *pp = l->priv;
  MDL_CUDA_TRY(G(l), mdl_gk_pool_fwd(S(l), &pp->k, bottom[0]->data, top[0]->data, pp->mask));
}

static void pool_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  pool_priv *pp = l->priv;
  if (pd[0])
    MDL_CUDA_TRY(G(l), mdl_gk_pool_bwd(S(l), &pp->k, top[0]->diff, pp->mask, bottom[0]->diff));
}

const mdl_layer_impl mdl_gpu_pool_layer = {"Pooling",    pool_setup,    NULL,
                                           pool_forward, pool_backward, pool_free};

/* ---- LRN across channels (cuDNN) ------------------------------------------ */

typedef struct lrn_priv {
  cudnnLRNDescriptor_t desc;
  cudnnTensorDescriptor_t t;
} lrn_priv;

static mdl_status lrn_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__LRNParameter *p =
      PARAM(l, lrn_param, Caffe__LRNParameter, CAFFE__LRNPARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  mdl_gpu *g = G(l);
  if (b->n != 4 || !fits_int(b)) return LAYER_ERR(l, err, "LRN needs 4-axis input");
  if (p->local_size % 2 != 1) return LAYER_ERR(l, err, "LRN local_size must be odd");
  lrn_priv *lp = mdl_xcalloc(1, sizeof *lp);
  l->priv = lp;
  bool ok =
      MDL_CUDNN_TRY(g, cudnnCreateLRNDescriptor(&lp->desc)) &&
      MDL_CUDNN_TRY(g, cudnnSetLRNDescriptor(lp->desc, p->local_size, p->alpha, p->beta, p->k)) &&
      tensor_desc(g, &lp->t, b->d[0], b->d[1], b->d[2], b->d[3]);
  return ok ? MDL_OK : mdl_gpu_take_error(g, err);
}

static void lrn_free(mdl_layer *l) {
  lrn_priv *lp = l->priv;
  if (lp->desc) cudnnDestroyLRNDescriptor(lp->desc);
  if (lp->t) cudnnDestroyTensorDescriptor(lp->t);
  free(lp);
}

static void lrn_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  lrn_priv *lp = l->priv;
  mdl_gpu *g = G(l);
  MDL_CUDNN_TRY(g, cudnnLRNCrossChannelForward(g->dnn, lp->desc, CUDNN_LRN_CROSS_CHANNEL_DIM1, &ONE,
                                               lp->t, bottom[0]->data, &ZERO, lp->t, top[0]->data));
}

static void lrn_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  lrn_priv *lp = l->priv;
  mdl_gpu *g = G(l);
  if (pd[0])
    MDL_CUDNN_TRY(
        g, cudnnLRNCrossChannelBackward(g->dnn, lp->desc, CUDNN_LRN_CROSS_CHANNEL_DIM1, &ONE, lp->t,
                                        top[0]->data, lp->t, top[0]->diff, lp->t, bottom[0]->data,
                                        &ZERO, lp->t, bottom[0]->diff));
}

const mdl_layer_impl mdl_gpu_lrn_layer = {"LRN",       lrn_setup,    NULL,
                                          lrn_forward, lrn_backward, lrn_free};
