/* The CUDA kernels of the GPU backend, as plain C launchers: the .c files of
 * gpu/ (descriptors, cuDNN, cuBLAS, the layer contract) call these; the .cu
 * files hold nothing but kernels. Every launcher queues on `s` and returns
 * cudaGetLastError() after its launch (0 when fine), so the caller can name
 * what failed. Counts are in floats; all tensors are NCHW row-major. */
#ifndef MDL_GPU_KERNELS_H
#define MDL_GPU_KERNELS_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- element-wise (kernels_ew.cu) ---- */
cudaError_t mdl_gk_fill(cudaStream_t s, float *x, int64_t n, float v);
/* *out (device double) = sum x[0..n) in a fixed order (one block). */
cudaError_t mdl_gk_sum(cudaStream_t s, const float *x, int64_t n, double *out);
/* y = x > 0 ? x : slope * x; dx = dy * (x > 0 ? 1 : slope) (x: the input) */
cudaError_t mdl_gk_relu_fwd(cudaStream_t s, const float *x, float *y, int64_t n, float slope);
cudaError_t mdl_gk_relu_bwd(cudaStream_t s, const float *x, const float *dy, float *dx, int64_t n,
                            float slope);
/* kind 0 sigmoid, 1 tanh; backward from the output y */
cudaError_t mdl_gk_act_fwd(cudaStream_t s, int kind, const float *x, float *y, int64_t n);
cudaError_t mdl_gk_act_bwd(cudaStream_t s, int kind, const float *y, const float *dy, float *dx,
                           int64_t n);
/* Dropout: keep i when mdl_rng_bits_at(seed, ctr + i) > thresh (the CPU's
 * draw, bit for bit); backward draws the same bits again instead of keeping
 * a mask. */
cudaError_t mdl_gk_dropout(cudaStream_t s, const float *x, float *y, int64_t n, uint64_t seed,
                           uint64_t ctr, uint32_t thresh, float scale);
/* Eltwise over up to MDL_GK_MAX_ELT bottoms. op: 0 PROD, 1 SUM, 2 MAX
 * (Caffe's EltwiseOp values). */
#define MDL_GK_MAX_ELT 8
typedef struct mdl_gk_elt {
  const float *x[MDL_GK_MAX_ELT];
  float *dx[MDL_GK_MAX_ELT]; /* NULL: no gradient for that bottom */
  float coeff[MDL_GK_MAX_ELT];
  int n, op;
} mdl_gk_elt;
cudaError_t mdl_gk_eltwise_fwd(cudaStream_t s, const mdl_gk_elt *e, float *y, int32_t *mask,
                               int64_t count);
cudaError_t mdl_gk_eltwise_bwd(cudaStream_t s, const mdl_gk_elt *e, const float *dy,
                               const int32_t *mask, int64_t count);
/* y[(o*C + c)*inner + i] += b[c] */
cudaError_t mdl_gk_add_bias(cudaStream_t s, float *y, const float *b, int64_t outer, int64_t C,
                            int64_t inner);
/* db[c] += sum over o, i of dy[(o*C + c)*inner + i] (fixed order per c) */
cudaError_t mdl_gk_bias_grad(cudaStream_t s, const float *dy, float *db, int64_t outer, int64_t C,
                             int64_t inner);
/* y[i] += x[i] */
cudaError_t mdl_gk_add(cudaStream_t s, const float *x, float *y, int64_t n);

/* ---- pooling with Caffe's semantics (kernels_pool.cu) ---- */
typedef struct mdl_gk_pool {
  int64_t planes, H, W, PH, PW;
  int kh, kw, sh, sw, ph, pw;
  int max; /* 1 MAX (mask kept), 0 AVE (divisor counts padding as Caffe) */
} mdl_gk_pool;
cudaError_t mdl_gk_pool_fwd(cudaStream_t s, const mdl_gk_pool *p, const float *x, float *y,
                            int32_t *mask);
cudaError_t mdl_gk_pool_bwd(cudaStream_t s, const mdl_gk_pool *p, const float *dy,
                            const int32_t *mask, float *dx);

/* ---- losses and metrics (kernels_loss.cu) ---- */
/* SoftmaxWithLoss after the softmax: prob (outer x C x inner), labels as
 * floats. Writes loss = -sum log(max(p, FLT_MIN)) / norm to *top and norm
 * to *norm (device). mode: Caffe's NormalizationMode; ignore < 0: none. */
cudaError_t mdl_gk_softmax_loss_fwd(cudaStream_t s, const float *prob, const float *label,
                                    int64_t outer, int64_t C, int64_t inner, int mode,
                                    int has_ignore, int ignore_label, float *top, float *norm);
/* dx = (prob - onehot) * top_diff[0] / norm[0]; ignored positions 0 */
cudaError_t mdl_gk_softmax_loss_bwd(cudaStream_t s, const float *prob, const float *label,
                                    int64_t outer, int64_t C, int64_t inner, int has_ignore,
                                    int ignore_label, const float *top_diff, const float *norm,
                                    float *dx);
/* Caffe's top-k accuracy into *top (device) */
cudaError_t mdl_gk_accuracy(cudaStream_t s, const float *x, const float *label, int64_t outer,
                            int64_t C, int64_t inner, int64_t k, int has_ignore, int ignore_label,
                            float *top);

/* ---- BatchNorm and Scale (kernels_norm.cu) ---- */
/* s1[c] = sum of a, s2[c] = sum of a*b (b may be NULL: s2 untouched, may
 * be NULL), over outer and inner, in double, fixed order */
cudaError_t mdl_gk_channel_sums(cudaStream_t s, const float *a, const float *b, int64_t outer,
                                int64_t C, int64_t inner, double *s1, double *s2);
/* train: mean/istd from the sums over m values, running blobs updated as
 * Caffe (pmean, pvar unnormalised, *pfactor = *pfactor * maf + 1); else
 * mean/istd from the running blobs and their factor */
cudaError_t mdl_gk_bn_stats(cudaStream_t s, const double *s1, const double *s2, int64_t C, double m,
                            float eps, float maf, float *pmean, float *pvar, float *pfactor,
                            float *mean, float *istd, int train);
/* y = xnorm = (x - mean[c]) * istd[c] */
cudaError_t mdl_gk_bn_apply(cudaStream_t s, const float *x, float *y, float *xnorm,
                            const float *mean, const float *istd, int64_t outer, int64_t C,
                            int64_t inner);
/* global: dx = dy * istd; else dx = (dy - s1/m - xnorm * s2/m) * istd with
 * s1 = sum dy, s2 = sum dy * xnorm per channel */
cudaError_t mdl_gk_bn_bwd(cudaStream_t s, const float *dy, const float *xnorm, const double *s1,
                          const double *s2, const float *istd, double m, int global, float *dx,
                          int64_t outer, int64_t C, int64_t inner);
/* y = x * sc[d] + bias[d] (sc NULL: 1; bias NULL: 0), x outer x D x inner */
cudaError_t mdl_gk_scale(cudaStream_t s, const float *x, const float *sc, const float *bias,
                         float *y, int64_t outer, int64_t D, int64_t inner);
/* g[d] += (float)d[d] */
cudaError_t mdl_gk_add_double(cudaStream_t s, float *g, const double *d, int64_t n);

/* ---- solver (kernels_solver.cu) ---- */
typedef struct mdl_gk_update {
  int rule; /* mdl_update_rule */
  float norm, decay, lr, momentum, momentum2, delta, rms_decay;
  int l1;
} mdl_gk_update;
/* One blob: w, d, h1, h2 (h2 for AdaDelta and Adam) of n floats. A scale
 * read from *dscale (device; NULL: 1) multiplies d first (clipping). */
cudaError_t mdl_gk_update_blob(cudaStream_t s, const mdl_gk_update *u, int64_t n, float *w,
                               const float *d, float *h1, float *h2, const float *dscale);
/* *acc (device double) += sum d[i]^2 (fixed order) */
cudaError_t mdl_gk_sumsq_acc(cudaStream_t s, const float *d, int64_t n, double *acc);
/* *scale = sqrt(*acc) > clip ? clip / sqrt(*acc) : 1 */
cudaError_t mdl_gk_clip_scale(cudaStream_t s, const double *acc, float clip, float *scale);

#ifdef __cplusplus
}
#endif

#endif
