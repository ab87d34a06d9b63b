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
  mdl_gpu *g = G(l);
  mdl_convolution_geom cg;
  mdl_status st = mdl_geom_conv(l, &cg, err);
  if (st) return st;
  if (l->n_bottom != 1)
    return MDL_LAYER_ERR(l, err, "only 2-D convolution of one 4-axis bottom over axis 1 runs on %s",
                         g->name);
  const mdl_shape *b = &l->bottom_shape[0], *t = &l->top_shape[0];
  if (!fits_int(b) || !fits_int(t)) return MDL_LAYER_ERR(l, err, "blobs too large for cuDNN");
  conv_priv *cp = mdl_xcalloc(1, sizeof *cp);
  l->priv = cp;
  /* cuDNN's x is the image side, y the column side: a Deconvolution is a
   * Convolution from its top to its bottom run backwards */
  cp->deconv = cg.deconv;
  cp->N = cg.num;
  cp->M = t->d[1];
  cp->P = t->d[2] * t->d[3];
  cp->bias = cg.bias;
  const int group = (int)cg.group, C = (int)cg.im_ch, M = (int)cg.col_ch;
  const mdl_window_geom *w = &cg.win;
  cudnnMathType_t math = g->exact ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
  bool ok =
      tensor_desc(g, &cp->x, cg.num, C, cg.im_h, cg.im_w) &&
      tensor_desc(g, &cp->y, cg.num, M, cg.col_h, cg.col_w) &&
      MDL_CUDNN_TRY(g, cudnnCreateFilterDescriptor(&cp->w)) &&
      MDL_CUDNN_TRY(g, cudnnSetFilter4dDescriptor(cp->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, M,
                                                  C / group, (int)w->kh, (int)w->kw)) &&
      MDL_CUDNN_TRY(g, cudnnCreateConvolutionDescriptor(&cp->conv)) &&
      MDL_CUDNN_TRY(g, cudnnSetConvolution2dDescriptor(
                           cp->conv, (int)w->ph, (int)w->pw, (int)w->sh, (int)w->sw, (int)w->dh,
                           (int)w->dw, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT)) &&
      MDL_CUDNN_TRY(g, cudnnSetConvolutionGroupCount(cp->conv, group)) &&
      MDL_CUDNN_TRY(g, cudnnSetConvolutionMathType(cp->conv, math));
  if (!ok) return mdl_gpu_take_error(g, err);
  int on, oc, oh, ow;
  if (!MDL_CUDNN_TRY(
          g, cudnnGetConvolution2dForwardOutputDim(cp->conv, cp->x, cp->w, &on, &oc, &oh, &ow)))
    return mdl_gpu_take_error(g, err);
  if (on != cg.num || oc != M || oh != cg.col_h || ow != cg.col_w)
    return MDL_LAYER_ERR(l, err, "cuDNN's output %dx%dx%dx%d differs from the shape rule's", on, oc,
                         oh, ow);
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
      return MDL_LAYER_ERR(l, err, "cuDNN offers no forward algorithm within %zu bytes", limit);
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
      return MDL_LAYER_ERR(l, err, "cuDNN offers no backward algorithm within %zu bytes", limit);
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
  const Caffe__ConvolutionParameter *p = MDL_LAYER_PARAM(
      l, convolution_param, Caffe__ConvolutionParameter, CAFFE__CONVOLUTION_PARAMETER__INIT);
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
  mdl_ip_geom g;
  mdl_status st = mdl_geom_ip(l, &g, err);
  if (st) return st;
  if (!fits_int(&l->bottom_shape[0])) return MDL_LAYER_ERR(l, err, "input too large for cuBLAS");
  ip_priv *ip = mdl_xcalloc(1, sizeof *ip);
  l->priv = ip;
  *ip = (ip_priv){(int)g.M, (int)g.K, (int)g.N, g.transpose, g.bias};
  return MDL_OK;
}

static mdl_status ip_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  const Caffe__InnerProductParameter *p = MDL_LAYER_PARAM(
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
  mdl_pool_geom g;
  mdl_status st = mdl_geom_pool(l, &g, err);
  if (st) return st;
  if (g.method == CAFFE__POOLING_PARAMETER__POOL_METHOD__STOCHASTIC || l->n_top > 1)
    return MDL_LAYER_ERR(l, err, "STOCHASTIC pooling and the mask top do not run on the GPU");
  pool_priv *pp = mdl_xcalloc(1, sizeof *pp);
  l->priv = pp;
  /* the kernels' own struct (kernels.h is C++ too): windows as ints */
  pp->k = (mdl_gk_pool){.planes = g.planes,
                        .H = g.H,
                        .W = g.W,
                        .PH = g.PH,
                        .PW = g.PW,
                        .kh = (int)g.kh,
                        .kw = (int)g.kw,
                        .sh = (int)g.sh,
                        .sw = (int)g.sw,
                        .ph = (int)g.ph,
                        .pw = (int)g.pw,
                        .max = g.method == CAFFE__POOLING_PARAMETER__POOL_METHOD__MAX};
  if (pp->k.max) {
    pp->mask = mdl_gpu_alloc_bytes(G(l), (size_t)(g.planes * g.PH * g.PW) * sizeof(int32_t),
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
  const mdl_shape *b = &l->bottom_shape[0];
  mdl_gpu *g = G(l);
  mdl_lrn_geom lg;
  mdl_status st = mdl_geom_lrn(l, &lg, err);
  if (st) return st;
  if (!fits_int(b)) return MDL_LAYER_ERR(l, err, "input too large for cuDNN");
  lrn_priv *lp = mdl_xcalloc(1, sizeof *lp);
  l->priv = lp;
  bool ok = MDL_CUDNN_TRY(g, cudnnCreateLRNDescriptor(&lp->desc)) &&
            MDL_CUDNN_TRY(
                g, cudnnSetLRNDescriptor(lp->desc, (unsigned)lg.size, lg.alpha, lg.beta, lg.k)) &&
            tensor_desc(g, &lp->t, lg.num, lg.C, lg.H, lg.W);
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
