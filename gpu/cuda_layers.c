/* The GPU's layers: Convolution, LRN and Softmax through cuDNN,
 * InnerProduct through cuBLAS, our own kernels (kernels_*.cu) where Caffe's
 * semantics differ from cuDNN's (pooling's ceil rounding and AVE divisor,
 * ReLU's negative slope, Dropout's counter-based draws, BatchNorm's three
 * blobs) and for the rest.
 * Shapes come from the compiler's rules (l->top_shape); parameters are
 * checked here as runtime/cpu/ checks them. What this table lacks (or a
 * parameter it does not run) is said by mdl_gpu_supports_layer, so device
 * resolution can name it. forward/backward cannot fail: a failing call is
 * recorded in the device context and reported by the backend's sync. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu_internal.h"
#include "gpu/kernels.h"

/* A type's parameter message, or the schema's defaults. */
#define PARAM(l, field, Type, INIT)                                       \
  ({                                                                      \
    static const Type mdl_default_##field = INIT;                         \
    (l)->lp->field ? (const Type *)(l)->lp->field : &mdl_default_##field; \
  })

#define LAYER_ERR(l, err, ...)                      \
  (mdl_errorf((err), MDL_ERR_INVALID, __VA_ARGS__), \
   mdl_error_prefix((err), "layer \"%s\" (%s): ", (l)->name, (l)->impl->type), MDL_ERR_INVALID)

#define G(l) mdl_gpu_of(l)
#define S(l) (mdl_gpu_of(l)->stream)

static const float ONE = 1.f, ZERO = 0.f;

static int64_t shape_count(const mdl_shape *s, int a, int b) {
  int64_t c = 1;
  if (a < 0) a = 0;
  if (b > s->n) b = s->n;
  for (int i = a; i < b; i++) c *= s->d[i];
  return c;
}

static int shape_axis(const mdl_shape *s, int axis) {
  if (axis < -s->n || axis >= s->n) return -1;
  return axis < 0 ? axis + s->n : axis;
}

static void copy_d2d(mdl_layer *l, float *dst, const float *src, int64_t n) {
  if (dst != src && n > 0)
    MDL_CUDA_TRY(
        G(l), cudaMemcpyAsync(dst, src, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice, S(l)));
}

/* An NCHW float descriptor (cuDNN takes int dimensions). */
static bool tensor_desc(mdl_gpu *g, cudnnTensorDescriptor_t *d, int64_t n, int64_t c, int64_t h,
                        int64_t w) {
  return MDL_CUDNN_TRY(g, cudnnCreateTensorDescriptor(d)) &&
         MDL_CUDNN_TRY(g, cudnnSetTensor4dDescriptor(*d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                                     (int)n, (int)c, (int)h, (int)w));
}

static bool fits_int(const mdl_shape *s) {
  return shape_count(s, 0, s->n) < INT_MAX;
}

/* ---- Input: the net writes the tops --------------------------------------- */

static void input_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  (void)l, (void)bottom, (void)top;
}
static const mdl_layer_impl gpu_input = {"Input", NULL, NULL, input_forward, NULL, NULL};

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

static const mdl_layer_impl gpu_deconv = {"Deconvolution", conv_setup,    conv_init,
                                          conv_forward,    conv_backward, conv_free};
static const mdl_layer_impl gpu_conv = {"Convolution", conv_setup,    conv_init,
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

static const mdl_layer_impl gpu_ip = {"InnerProduct", ip_setup,    ip_init,
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

static const mdl_layer_impl gpu_pool = {"Pooling",    pool_setup,    NULL,
                                        pool_forward, pool_backward, pool_free};

/* ---- ReLU (negative slope), Sigmoid, TanH --------------------------------- */

static float relu_slope(const mdl_layer *l) {
  return l->lp->relu_param ? l->lp->relu_param->negative_slope : 0.f;
}
static void relu_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  MDL_CUDA_TRY(G(l),
               mdl_gk_relu_fwd(S(l), bottom[0]->data, top[0]->data, top[0]->count, relu_slope(l)));
}
/* In place, x is the output: its sign is the input's for slope >= 0 (Caffe). */
static void relu_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  if (pd[0])
    MDL_CUDA_TRY(G(l), mdl_gk_relu_bwd(S(l), bottom[0]->data, top[0]->diff, bottom[0]->diff,
                                       top[0]->count, relu_slope(l)));
}
static const mdl_layer_impl gpu_relu = {"ReLU", NULL, NULL, relu_forward, relu_backward, NULL};

static int act_kind(const mdl_layer *l) {
  return strcmp(l->impl->type, "Sigmoid") == 0 ? 0 : 1;
}
static void act_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  MDL_CUDA_TRY(G(l),
               mdl_gk_act_fwd(S(l), act_kind(l), bottom[0]->data, top[0]->data, top[0]->count));
}
static void act_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  if (pd[0])
    MDL_CUDA_TRY(G(l), mdl_gk_act_bwd(S(l), act_kind(l), top[0]->data, top[0]->diff,
                                      bottom[0]->diff, top[0]->count));
}
static const mdl_layer_impl gpu_sigmoid = {"Sigmoid", NULL, NULL, act_forward, act_backward, NULL};
static const mdl_layer_impl gpu_tanh = {"TanH", NULL, NULL, act_forward, act_backward, NULL};

/* ---- Dropout: the CPU's counter-based draws, recomputed for backward ----- */

typedef struct dropout_priv {
  int64_t count;
  float scale;
  uint32_t thresh;
  uint64_t seed, ctr; /* the draws of the last TRAIN forward */
} dropout_priv;

static mdl_status dropout_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__DropoutParameter *p =
      PARAM(l, dropout_param, Caffe__DropoutParameter, CAFFE__DROPOUT_PARAMETER__INIT);
  if (!(p->dropout_ratio >= 0.f && p->dropout_ratio < 1.f))
    return LAYER_ERR(l, err, "dropout_ratio must be in [0, 1), got %g", p->dropout_ratio);
  dropout_priv *dp = mdl_xcalloc(1, sizeof *dp);
  l->priv = dp;
  dp->count = shape_count(&l->bottom_shape[0], 0, l->bottom_shape[0].n);
  dp->scale = 1.f / (1.f - p->dropout_ratio);
  dp->thresh = (uint32_t)((double)UINT32_MAX * p->dropout_ratio);
  return MDL_OK;
}

static void dropout_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  dropout_priv *dp = l->priv;
  if (l->phase != CAFFE__PHASE__TRAIN) {
    copy_d2d(l, top[0]->data, bottom[0]->data, dp->count);
    return;
  }
  mdl_rng fallback = {0, 0};
  mdl_rng *rng = l->ctx.rng ? l->ctx.rng : &fallback;
  dp->seed = rng->seed;
  dp->ctr = rng->counter;
  rng->counter += (uint64_t)dp->count;
  MDL_CUDA_TRY(G(l), mdl_gk_dropout(S(l), bottom[0]->data, top[0]->data, dp->count, dp->seed,
                                    dp->ctr, dp->thresh, dp->scale));
}

/* dx = dy * mask * scale: the same draws select the same units. */
static void dropout_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                             mdl_tensor *const *bottom) {
  dropout_priv *dp = l->priv;
  if (!pd[0]) return;
  if (l->phase != CAFFE__PHASE__TRAIN) {
    copy_d2d(l, bottom[0]->diff, top[0]->diff, dp->count);
    return;
  }
  MDL_CUDA_TRY(G(l), mdl_gk_dropout(S(l), top[0]->diff, bottom[0]->diff, dp->count, dp->seed,
                                    dp->ctr, dp->thresh, dp->scale));
}

static const mdl_layer_impl gpu_dropout = {"Dropout",       dropout_setup,    NULL,
                                           dropout_forward, dropout_backward, NULL};

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

static const mdl_layer_impl gpu_lrn = {"LRN", lrn_setup, NULL, lrn_forward, lrn_backward, lrn_free};

/* ---- Softmax (cuDNN, over one axis as outer x C x inner x 1) -------------- */

typedef struct softmax_priv {
  cudnnTensorDescriptor_t t;
  int64_t outer, C, inner;
  /* SoftmaxWithLoss only */
  float *prob, *norm; /* device */
  int mode, ignore_label;
  bool ignore;
} softmax_priv;

static mdl_status softmax_common(mdl_layer *l, const Caffe__SoftmaxParameter *sp, mdl_error *err) {
  const mdl_shape *b = &l->bottom_shape[0];
  int axis = shape_axis(b, sp->axis);
  if (axis < 0) return LAYER_ERR(l, err, "softmax axis %d out of range", sp->axis);
  if (!fits_int(b)) return LAYER_ERR(l, err, "input too large for cuDNN");
  softmax_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  p->outer = shape_count(b, 0, axis);
  p->C = b->d[axis];
  p->inner = shape_count(b, axis + 1, b->n);
  if (!tensor_desc(G(l), &p->t, p->outer, p->C, p->inner, 1)) return mdl_gpu_take_error(G(l), err);
  return MDL_OK;
}

static mdl_status softmax_setup(mdl_layer *l, mdl_error *err) {
  return softmax_common(
      l, PARAM(l, softmax_param, Caffe__SoftmaxParameter, CAFFE__SOFTMAX_PARAMETER__INIT), err);
}

static void softmax_free(mdl_layer *l) {
  softmax_priv *p = l->priv;
  if (p->t) cudnnDestroyTensorDescriptor(p->t);
  mdl_gpu_free_bytes(p->prob);
  mdl_gpu_free_bytes(p->norm);
  free(p);
}

static void softmax_run(mdl_layer *l, const float *x, float *y) {
  softmax_priv *p = l->priv;
  mdl_gpu *g = G(l);
  MDL_CUDNN_TRY(g, cudnnSoftmaxForward(g->dnn, CUDNN_SOFTMAX_ACCURATE, CUDNN_SOFTMAX_MODE_CHANNEL,
                                       &ONE, p->t, x, &ZERO, p->t, y));
}

static void softmax_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  softmax_run(l, bottom[0]->data, top[0]->data);
}

static void softmax_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                             mdl_tensor *const *bottom) {
  softmax_priv *p = l->priv;
  mdl_gpu *g = G(l);
  if (pd[0])
    MDL_CUDNN_TRY(g, cudnnSoftmaxBackward(g->dnn, CUDNN_SOFTMAX_ACCURATE,
                                          CUDNN_SOFTMAX_MODE_CHANNEL, &ONE, p->t, top[0]->data,
                                          p->t, top[0]->diff, &ZERO, p->t, bottom[0]->diff));
}

static const mdl_layer_impl gpu_softmax = {"Softmax",       softmax_setup,    NULL,
                                           softmax_forward, softmax_backward, softmax_free};

/* ---- SoftmaxWithLoss: cuDNN's softmax, then our loss kernels ------------- */

static int loss_norm_mode(const mdl_layer *l) {
  const Caffe__LossParameter *p = l->lp->loss_param;
  if (!p) return CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID;
  if (p->has_normalization) return p->normalization;
  if (p->has_normalize)
    return p->normalize ? CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID
                        : CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__BATCH_SIZE;
  return CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID;
}

static mdl_status swl_setup(mdl_layer *l, mdl_error *err) {
  mdl_status st = softmax_setup(l, err);
  if (st) return st;
  softmax_priv *p = l->priv;
  int64_t nlab = shape_count(&l->bottom_shape[1], 0, l->bottom_shape[1].n);
  if (nlab != p->outer * p->inner)
    return LAYER_ERR(l, err, "%lld labels for %lld predictions", (long long)nlab,
                     (long long)(p->outer * p->inner));
  p->mode = loss_norm_mode(l);
  const Caffe__LossParameter *lp = l->lp->loss_param;
  p->ignore = lp && lp->has_ignore_label;
  p->ignore_label = p->ignore ? lp->ignore_label : 0;
  p->prob = mdl_gpu_alloc_bytes(G(l), (size_t)(p->outer * p->C * p->inner) * sizeof(float),
                                "the softmax probabilities", err);
  if (!p->prob) return MDL_ERR_NOMEM;
  p->norm = mdl_gpu_alloc_bytes(G(l), sizeof(float), "the loss normaliser", err);
  return p->norm ? MDL_OK : MDL_ERR_NOMEM;
}

static void swl_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  softmax_priv *p = l->priv;
  softmax_run(l, bottom[0]->data, p->prob);
  MDL_CUDA_TRY(G(l),
               mdl_gk_softmax_loss_fwd(S(l), p->prob, bottom[1]->data, p->outer, p->C, p->inner,
                                       p->mode, p->ignore, p->ignore_label, top[0]->data, p->norm));
  if (l->n_top > 1) copy_d2d(l, top[1]->data, p->prob, p->outer * p->C * p->inner);
}

static void swl_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  softmax_priv *p = l->priv;
  if (!pd[0]) return;
  MDL_CUDA_TRY(G(l), mdl_gk_softmax_loss_bwd(S(l), p->prob, bottom[1]->data, p->outer, p->C,
                                             p->inner, p->ignore, p->ignore_label, top[0]->diff,
                                             p->norm, bottom[0]->diff));
}

static const mdl_layer_impl gpu_swl = {"SoftmaxWithLoss", swl_setup,    NULL,
                                       swl_forward,       swl_backward, softmax_free};

/* ---- Accuracy: top-k, ignore_label ----------------------------------------- */

typedef struct acc_priv {
  int64_t outer, C, inner, k;
  bool ignore;
  int ignore_label;
} acc_priv;

static mdl_status acc_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__AccuracyParameter *ap =
      PARAM(l, accuracy_param, Caffe__AccuracyParameter, CAFFE__ACCURACY_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  int axis = shape_axis(b, ap->axis);
  if (axis < 0) return LAYER_ERR(l, err, "axis %d out of range", ap->axis);
  if (l->n_top > 1) return LAYER_ERR(l, err, "the per-class top does not run on the GPU");
  acc_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  p->outer = shape_count(b, 0, axis);
  p->C = b->d[axis];
  p->inner = shape_count(b, axis + 1, b->n);
  p->k = ap->top_k;
  p->ignore = ap->has_ignore_label;
  p->ignore_label = ap->ignore_label;
  if (p->k < 1 || p->k > p->C)
    return LAYER_ERR(l, err, "top_k %lld must be in 1..%lld", (long long)p->k, (long long)p->C);
  if (shape_count(&l->bottom_shape[1], 0, l->bottom_shape[1].n) != p->outer * p->inner)
    return LAYER_ERR(l, err, "label count does not match the predictions");
  return MDL_OK;
}

static void acc_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  acc_priv *p = l->priv;
  MDL_CUDA_TRY(G(l), mdl_gk_accuracy(S(l), bottom[0]->data, bottom[1]->data, p->outer, p->C,
                                     p->inner, p->k, p->ignore, p->ignore_label, top[0]->data));
}

static const mdl_layer_impl gpu_accuracy = {"Accuracy", acc_setup, NULL, acc_forward, NULL, NULL};

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

static const mdl_layer_impl gpu_split = {"Split", NULL, NULL, split_forward, split_backward, NULL};

static void same_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  copy_d2d(l, top[0]->data, bottom[0]->data, bottom[0]->count);
}
static void same_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  if (pd[0]) copy_d2d(l, bottom[0]->diff, top[0]->diff, bottom[0]->count);
}
static const mdl_layer_impl gpu_flatten = {"Flatten",    NULL,          NULL,
                                           same_forward, same_backward, NULL};
static const mdl_layer_impl gpu_reshape = {"Reshape",    NULL,          NULL,
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
static const mdl_layer_impl gpu_silence = {"Silence",        NULL, NULL, silence_forward,
                                           silence_backward, NULL};

/* ---- Eltwise: PROD, SUM (coeff), MAX (argmax mask) ------------------------- */

typedef struct eltwise_priv {
  int op;
  int64_t count;
  float coeff[MDL_GK_MAX_ELT];
  int32_t *mask; /* device, MAX only */
} eltwise_priv;

static mdl_status eltwise_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__EltwiseParameter *p =
      PARAM(l, eltwise_param, Caffe__EltwiseParameter, CAFFE__ELTWISE_PARAMETER__INIT);
  if (l->n_bottom > MDL_GK_MAX_ELT)
    return LAYER_ERR(l, err, "%d bottoms; the GPU's Eltwise takes at most %d", l->n_bottom,
                     MDL_GK_MAX_ELT);
  if (p->n_coeff && p->n_coeff != (size_t)l->n_bottom)
    return LAYER_ERR(l, err, "%zu coeff values for %d bottoms", p->n_coeff, l->n_bottom);
  if (p->n_coeff && p->operation != CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__SUM)
    return LAYER_ERR(l, err, "coeff is only for the SUM operation");
  for (int i = 1; i < l->n_bottom; i++)
    if (shape_count(&l->bottom_shape[i], 0, MDL_MAX_AXES) !=
            shape_count(&l->bottom_shape[0], 0, MDL_MAX_AXES) ||
        l->bottom_shape[i].n != l->bottom_shape[0].n)
      return LAYER_ERR(l, err, "bottom %d has a different shape from bottom 0", i);
  eltwise_priv *ep = mdl_xcalloc(1, sizeof *ep);
  l->priv = ep;
  ep->op = p->operation;
  ep->count = shape_count(&l->bottom_shape[0], 0, l->bottom_shape[0].n);
  for (int i = 0; i < l->n_bottom; i++) ep->coeff[i] = p->n_coeff ? p->coeff[i] : 1.f;
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

static const mdl_layer_impl gpu_eltwise = {"Eltwise",       eltwise_setup,    NULL,
                                           eltwise_forward, eltwise_backward, eltwise_free};

/* ---- Concat: outer x (sum of parts along axis) x inner, by 2-D copies ---- */

typedef struct cat_priv {
  int64_t outer, inner, total;
  int64_t part[64];
  int n;
} cat_priv;

static mdl_status concat_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__ConcatParameter *p =
      PARAM(l, concat_param, Caffe__ConcatParameter, CAFFE__CONCAT_PARAMETER__INIT);
  const mdl_shape *big = &l->top_shape[0];
  int axis = p->has_concat_dim ? (int)p->concat_dim : shape_axis(big, p->axis);
  if (axis < 0 || axis >= big->n) return LAYER_ERR(l, err, "axis %d out of range", p->axis);
  if (l->n_bottom > 64) return LAYER_ERR(l, err, "more than 64 bottoms");
  cat_priv *cp = mdl_xcalloc(1, sizeof *cp);
  l->priv = cp;
  cp->n = l->n_bottom;
  cp->outer = shape_count(big, 0, axis);
  cp->inner = shape_count(big, axis + 1, big->n);
  cp->total = big->d[axis];
  int64_t sum = 0;
  for (int i = 0; i < cp->n; i++) {
    if (l->bottom_shape[i].n != big->n)
      return LAYER_ERR(l, err, "blob %d has a different number of axes", i);
    cp->part[i] = l->bottom_shape[i].d[axis];
    sum += cp->part[i];
  }
  if (sum != cp->total)
    return LAYER_ERR(l, err, "parts add up to %lld along axis %d, expected %lld", (long long)sum,
                     axis, (long long)cp->total);
  return MDL_OK;
}

static void cat_move(mdl_layer *l, mdl_tensor *const *small, const bool *pd, mdl_tensor *big,
                     bool to_big, bool use_diff) {
  const cat_priv *cp = l->priv;
  const size_t pitch = (size_t)(cp->total * cp->inner) * sizeof(float);
  int64_t off = 0;
  for (int i = 0; i < cp->n; i++) {
    int64_t w = cp->part[i] * cp->inner;
    if (!(pd && !pd[i]) && w > 0 && cp->outer > 0) {
      float *s = use_diff ? small[i]->diff : small[i]->data;
      float *b = (use_diff ? big->diff : big->data) + off;
      size_t wb = (size_t)w * sizeof(float);
      if (to_big)
        MDL_CUDA_TRY(G(l), cudaMemcpy2DAsync(b, pitch, s, wb, wb, (size_t)cp->outer,
                                             cudaMemcpyDeviceToDevice, S(l)));
      else
        MDL_CUDA_TRY(G(l), cudaMemcpy2DAsync(s, wb, b, pitch, wb, (size_t)cp->outer,
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

static const mdl_layer_impl gpu_concat = {"Concat",       concat_setup,    NULL,
                                          concat_forward, concat_backward, NULL};

/* ---- BatchNorm: Caffe's three blobs (mean, variance, scale factor) ------- */

typedef struct bn_priv {
  bool global;
  float maf, eps;
  int64_t num, C, inner;
  float *xnorm, *mean, *istd; /* device */
  double *s1, *s2;            /* device, per channel */
} bn_priv;

static mdl_status bn_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__BatchNormParameter *p =
      PARAM(l, batch_norm_param, Caffe__BatchNormParameter, CAFFE__BATCH_NORM_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  bn_priv *bp = mdl_xcalloc(1, sizeof *bp);
  l->priv = bp;
  bp->global = p->has_use_global_stats ? p->use_global_stats : l->phase == CAFFE__PHASE__TEST;
  bp->maf = p->moving_average_fraction;
  bp->eps = p->eps;
  bp->num = b->n > 0 ? b->d[0] : 1;
  bp->C = b->n == 1 ? 1 : b->d[1];
  int64_t count = shape_count(b, 0, b->n);
  bp->inner = count / ((bp->num * bp->C) != 0 ? bp->num * bp->C : 1);
  if (l->n_param != 3 || l->param[0].count != bp->C || l->param[1].count != bp->C ||
      l->param[2].count != 1)
    return LAYER_ERR(l, err, "BatchNorm needs blobs of %lld, %lld and 1 values", (long long)bp->C,
                     (long long)bp->C);
  mdl_gpu *g = G(l);
  if (!(bp->xnorm = mdl_gpu_alloc_bytes(g, (size_t)count * sizeof(float), "BatchNorm", err)) ||
      !(bp->mean = mdl_gpu_alloc_bytes(g, (size_t)bp->C * sizeof(float), "BatchNorm", err)) ||
      !(bp->istd = mdl_gpu_alloc_bytes(g, (size_t)bp->C * sizeof(float), "BatchNorm", err)) ||
      !(bp->s1 = mdl_gpu_alloc_bytes(g, (size_t)bp->C * sizeof(double), "BatchNorm", err)) ||
      !(bp->s2 = mdl_gpu_alloc_bytes(g, (size_t)bp->C * sizeof(double), "BatchNorm", err)))
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
  const double m = (double)bp->num * (double)bp->inner;
  if (!bp->global)
    MDL_CUDA_TRY(g,
                 mdl_gk_channel_sums(g->stream, x, x, bp->num, bp->C, bp->inner, bp->s1, bp->s2));
  MDL_CUDA_TRY(
      g, mdl_gk_bn_stats(g->stream, bp->s1, bp->s2, bp->C, m, bp->eps, bp->maf, l->param[0].data,
                         l->param[1].data, l->param[2].data, bp->mean, bp->istd, !bp->global));
  MDL_CUDA_TRY(g, mdl_gk_bn_apply(g->stream, x, top[0]->data, bp->xnorm, bp->mean, bp->istd,
                                  bp->num, bp->C, bp->inner));
}

static void bn_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                        mdl_tensor *const *bottom) {
  bn_priv *bp = l->priv;
  mdl_gpu *g = G(l);
  if (!pd[0]) return;
  const double m = (double)bp->num * (double)bp->inner;
  if (!bp->global)
    MDL_CUDA_TRY(g, mdl_gk_channel_sums(g->stream, top[0]->diff, bp->xnorm, bp->num, bp->C,
                                        bp->inner, bp->s1, bp->s2));
  MDL_CUDA_TRY(g, mdl_gk_bn_bwd(g->stream, top[0]->diff, bp->xnorm, bp->s1, bp->s2, bp->istd, m,
                                bp->global, bottom[0]->diff, bp->num, bp->C, bp->inner));
}

static const mdl_layer_impl gpu_bn = {"BatchNorm", bn_setup,    bn_init,
                                      bn_forward,  bn_backward, bn_free};

/* ---- Scale: one bottom, a learned scale (and bias) over axis..axis+k ----- */

typedef struct scale_priv {
  bool bias;
  int64_t outer, D, inner, count;
  float *saved_x; /* device: in place, the input for the scale gradient */
  double *s1, *s2;
} scale_priv;

static mdl_status scale_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__ScaleParameter *p =
      PARAM(l, scale_param, Caffe__ScaleParameter, CAFFE__SCALE_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  if (l->n_bottom != 1 || l->n_param < 1)
    return LAYER_ERR(l, err, "Scale with a second bottom does not run on the GPU");
  scale_priv *sp = mdl_xcalloc(1, sizeof *sp);
  l->priv = sp;
  const mdl_tensor *w = &l->param[0];
  int axis = w->n == 0 ? 0 : shape_axis(b, p->axis);
  if (axis < 0 || axis + w->n > b->n)
    return LAYER_ERR(l, err, "axis %d and %d operand axes do not fit the input", p->axis, w->n);
  for (int i = 0; i < w->n; i++)
    if (w->d[i] != b->d[axis + i])
      return LAYER_ERR(l, err, "operand axis %d is %lld, input axis %d is %lld", i,
                       (long long)w->d[i], axis + i, (long long)b->d[axis + i]);
  sp->outer = shape_count(b, 0, axis);
  sp->D = w->count;
  sp->inner = shape_count(b, axis + w->n, b->n);
  sp->count = shape_count(b, 0, b->n);
  sp->bias = p->bias_term;
  if (sp->bias && (l->n_param < 2 || l->param[1].count != sp->D))
    return LAYER_ERR(l, err, "bias blob size disagrees with the scale operand");
  mdl_gpu *g = G(l);
  if (mdl_layer_in_place(l) &&
      !(sp->saved_x = mdl_gpu_alloc_bytes(g, (size_t)sp->count * sizeof(float),
                                          "a copy of its in-place input", err)))
    return MDL_ERR_NOMEM;
  if (!(sp->s1 = mdl_gpu_alloc_bytes(g, (size_t)sp->D * sizeof(double), "Scale", err)) ||
      !(sp->s2 = mdl_gpu_alloc_bytes(g, (size_t)sp->D * sizeof(double), "Scale", err)))
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
      PARAM(l, scale_param, Caffe__ScaleParameter, CAFFE__SCALE_PARAMETER__INIT);
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
  if (top[0] == bottom[0] && sp->saved_x) copy_d2d(l, sp->saved_x, bottom[0]->data, sp->count);
  MDL_CUDA_TRY(G(l), mdl_gk_scale(S(l), bottom[0]->data, l->param[0].data,
                                  sp->bias ? l->param[1].data : NULL, top[0]->data, sp->outer,
                                  sp->D, sp->inner));
}

static void scale_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                           mdl_tensor *const *bottom) {
  scale_priv *sp = l->priv;
  mdl_gpu *g = G(l);
  const float *dy = top[0]->diff;
  const float *x = top[0] == bottom[0] && sp->saved_x ? sp->saved_x : bottom[0]->data;
  /* s1 = sum dy (bias), s2 = sum dy * x (scale), per operand element */
  MDL_CUDA_TRY(g,
               mdl_gk_channel_sums(g->stream, dy, x, sp->outer, sp->D, sp->inner, sp->s1, sp->s2));
  if (sp->bias && l->param[1].diff)
    MDL_CUDA_TRY(g, mdl_gk_add_double(g->stream, l->param[1].diff, sp->s1, sp->D));
  if (l->param[0].diff)
    MDL_CUDA_TRY(g, mdl_gk_add_double(g->stream, l->param[0].diff, sp->s2, sp->D));
  if (pd[0])
    MDL_CUDA_TRY(g, mdl_gk_scale(g->stream, dy, l->param[0].data, NULL, bottom[0]->diff, sp->outer,
                                 sp->D, sp->inner));
}

static const mdl_layer_impl gpu_scale = {"Scale",       scale_setup,    scale_init,
                                         scale_forward, scale_backward, scale_free};

/* ---- the table and what it does not run ------------------------------------ */

const mdl_layer_impl *const mdl_gpu_impls[] = {
    &gpu_input, &gpu_conv,    &gpu_pool,    &gpu_ip,      &gpu_relu,    &gpu_sigmoid,
    &gpu_tanh,  &gpu_dropout, &gpu_lrn,     &gpu_softmax, &gpu_swl,     &gpu_accuracy,
    &gpu_split, &gpu_flatten, &gpu_reshape, &gpu_silence, &gpu_eltwise, &gpu_concat,
    &gpu_bn,    &gpu_scale,   &gpu_deconv,
};
const size_t mdl_gpu_n_impls = sizeof mdl_gpu_impls / sizeof mdl_gpu_impls[0];

static bool is(const Caffe__LayerParameter *lp, const char *type) {
  return lp->type && strcmp(lp->type, type) == 0;
}

/* Called after the type was found in the table: parameters this backend
 * does not run. */
bool mdl_gpu_supports_layer(void *ctx, const Caffe__LayerParameter *lp, char *why,
                            size_t why_size) {
  (void)ctx;
  const char *no = NULL;
  if (is(lp, "Pooling") && lp->pooling_param &&
      lp->pooling_param->pool == CAFFE__POOLING_PARAMETER__POOL_METHOD__STOCHASTIC)
    no = "STOCHASTIC pooling";
  else if (is(lp, "Pooling") && lp->n_top > 1)
    no = "Pooling's mask top";
  else if (is(lp, "LRN") && lp->lrn_param &&
           lp->lrn_param->norm_region == CAFFE__LRNPARAMETER__NORM_REGION__WITHIN_CHANNEL)
    no = "LRN WITHIN_CHANNEL";
  else if (is(lp, "LRN") && lp->lrn_param &&
           (lp->lrn_param->local_size < 1 || lp->lrn_param->local_size > 16))
    no = "LRN local_size outside cuDNN's 1..16";
  else if (is(lp, "LRN") && lp->n_top && lp->n_bottom && lp->top[0] && lp->bottom[0] &&
           strcmp(lp->top[0], lp->bottom[0]) == 0)
    no = "LRN in place (backward needs its input)";
  else if ((is(lp, "Convolution") || is(lp, "Deconvolution")) && lp->n_bottom != 1)
    no = "Convolution with several bottoms";
  else if (is(lp, "Scale") && lp->n_bottom > 1)
    no = "Scale with a second bottom";
  else if (is(lp, "Accuracy") && lp->n_top > 1)
    no = "Accuracy's per-class top";
  else if (is(lp, "Eltwise") && lp->n_bottom > MDL_GK_MAX_ELT)
    no = "Eltwise with more than 8 bottoms";
  if (!no) return true;
  snprintf(why, why_size, "%s does not run on the GPU", no);
  return false;
}
