// BatchNorm with Caffe's three blobs (running mean and variance as
// unnormalised sums, a scale factor), and Scale. Tensors are outer x C x
// inner (NCHW: N x C x HW); per-channel sums run one block per channel in
// double, in a fixed order, as runtime/cpu/layers_norm.c's channel_sums.
#include <math.h>

#include "gpu/kernels.h"

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  if (b < 1) b = 1;
  return b > 65535 * 4 ? 65535 * 4 : (int)b;
}

__global__ void channel_sums_k(const float *a, const float *b, int64_t outer, int64_t C,
                               int64_t inner, double *s1, double *s2) {
  __shared__ double p1[kThreads], p2[kThreads];
  const int64_t c = blockIdx.x;
  double x1 = 0, x2 = 0;
  for (int64_t j = threadIdx.x; j < outer * inner; j += blockDim.x) {
    int64_t o = j / inner, i = j % inner;
    int64_t k = (o * C + c) * inner + i;
    x1 += a[k];
    if (b) x2 += (double)a[k] * b[k];
  }
  p1[threadIdx.x] = x1;
  p2[threadIdx.x] = x2;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) {
      p1[threadIdx.x] += p1[threadIdx.x + w];
      p2[threadIdx.x] += p2[threadIdx.x + w];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    s1[c] = p1[0];
    if (s2) s2[c] = p2[0];
  }
}

__global__ void bn_stats_k(const double *s1, const double *s2, int64_t C, double m, float eps,
                           float maf, float *pmean, float *pvar, float *pfactor, float *mean,
                           float *istd, int train) {
  int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (!train) {
    if (c >= C) return;
    float f = pfactor[0];
    float sf = f == 0.f ? 0.f : 1.f / f;
    mean[c] = sf * pmean[c];
    istd[c] = 1.f / sqrtf(sf * pvar[c] + eps);
    return;
  }
  if (c < C) {
    double mu = s1[c] / m;
    double var = s2[c] / m - mu * mu;
    if (var < 0) var = 0;
    mean[c] = (float)mu;
    istd[c] = (float)(1.0 / sqrt(var + eps));
    double corr = m > 1 ? m / (m - 1) : 1;
    pmean[c] = (float)(mu + maf * pmean[c]);
    pvar[c] = (float)(corr * var + maf * pvar[c]);
  }
}

__global__ void bn_factor_k(float *pfactor, float maf) {
  pfactor[0] = pfactor[0] * maf + 1.f;
}

__global__ void bn_apply_k(const float *x, float *y, float *xnorm, const float *mean,
                           const float *istd, int64_t C, int64_t inner, int64_t n) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n;
       k += (int64_t)blockDim.x * gridDim.x) {
    int64_t c = (k / inner) % C;
    float v = (x[k] - mean[c]) * istd[c];
    xnorm[k] = v;
    y[k] = v;
  }
}

__global__ void bn_bwd_k(const float *dy, const float *xnorm, const double *s1, const double *s2,
                         const float *istd, double m, int global, float *dx, int64_t C,
                         int64_t inner, int64_t n) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n;
       k += (int64_t)blockDim.x * gridDim.x) {
    int64_t c = (k / inner) % C;
    float md = global ? 0.f : (float)(s1[c] / m);
    float mdy = global ? 0.f : (float)(s2[c] / m);
    dx[k] = (dy[k] - md - xnorm[k] * mdy) * istd[c];
  }
}

__global__ void scale_k(const float *x, const float *sc, const float *bias, float *y, int64_t D,
                        int64_t inner, int64_t n) {
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n;
       k += (int64_t)blockDim.x * gridDim.x) {
    int64_t d = (k / inner) % D;
    y[k] = x[k] * (sc ? sc[d] : 1.f) + (bias ? bias[d] : 0.f);
  }
}

__global__ void add_double_k(float *g, const double *s, int64_t n) {
  int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (d < n) g[d] += (float)s[d];
}

}  // namespace

extern "C" {

cudaError_t mdl_gk_channel_sums(cudaStream_t s, const float *a, const float *b, int64_t outer,
                                int64_t C, int64_t inner, double *s1, double *s2) {
  if (C <= 0) return cudaSuccess;
  channel_sums_k<<<(unsigned)C, kThreads, 0, s>>>(a, b, outer, C, inner, s1, s2);
  return cudaGetLastError();
}

cudaError_t mdl_gk_bn_stats(cudaStream_t s, const double *s1, const double *s2, int64_t C, double m,
                            float eps, float maf, float *pmean, float *pvar, float *pfactor,
                            float *mean, float *istd, int train) {
  if (C <= 0) return cudaSuccess;
  bn_stats_k<<<(unsigned)((C + kThreads - 1) / kThreads), kThreads, 0, s>>>(
      s1, s2, C, m, eps, maf, pmean, pvar, pfactor, mean, istd, train);
  if (train) bn_factor_k<<<1, 1, 0, s>>>(pfactor, maf);
  return cudaGetLastError();
}

cudaError_t mdl_gk_bn_apply(cudaStream_t s, const float *x, float *y, float *xnorm,
                            const float *mean, const float *istd, int64_t outer, int64_t C,
                            int64_t inner) {
  int64_t n = outer * C * inner;
  if (n <= 0) return cudaSuccess;
  bn_apply_k<<<blocks_for(n), kThreads, 0, s>>>(x, y, xnorm, mean, istd, C, inner, n);
  return cudaGetLastError();
}

cudaError_t mdl_gk_bn_bwd(cudaStream_t s, const float *dy, const float *xnorm, const double *s1,
                          const double *s2, const float *istd, double m, int global, float *dx,
                          int64_t outer, int64_t C, int64_t inner) {
  int64_t n = outer * C * inner;
  if (n <= 0) return cudaSuccess;
  bn_bwd_k<<<blocks_for(n), kThreads, 0, s>>>(dy, xnorm, s1, s2, istd, m, global, dx, C, inner, n);
  return cudaGetLastError();
}

cudaError_t mdl_gk_scale(cudaStream_t s, const float *x, const float *sc, const float *bias,
                         float *y, int64_t outer, int64_t D, int64_t inner) {
  int64_t n = outer * D * inner;
  if (n <= 0) return cudaSuccess;
  scale_k<<<blocks_for(n), kThreads, 0, s>>>(x, sc, bias, y, D, inner, n);
  return cudaGetLastError();
}

cudaError_t mdl_gk_add_double(cudaStream_t s, float *g, const double *d, int64_t n) {
  if (n <= 0) return cudaSuccess;
  add_double_k<<<(unsigned)((n + kThreads - 1) / kThreads), kThreads, 0, s>>>(g, d, n);
  return cudaGetLastError();
}

}  // extern "C"
