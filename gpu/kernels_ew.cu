// Element-wise kernels, reductions in a fixed order, Dropout's counter-based
// draws, Eltwise and bias. Flat arrays of n floats unless said otherwise;
// grid-stride loops so any n fits one launch.
#include <stdint.h>

#include "gpu/kernels.h"

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  if (b < 1) b = 1;
  return b > 65535 * 4 ? 65535 * 4 : (int)b;
}

#define GRID_STRIDE(i, n)                                                   \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); \
       i += (int64_t)blockDim.x * gridDim.x)

__global__ void fill_k(float *x, int64_t n, float v) {
  GRID_STRIDE(i, n) x[i] = v;
}

// One block of 1024 threads: thread t sums t, t+1024, ... in double, then a
// tree; the order depends only on n.
__global__ void sum_k(const float *x, int64_t n, double *out, int square, int accumulate) {
  __shared__ double part[1024];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    double v = x[i];
    acc += square ? v * v : v;
  }
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = accumulate ? *out + part[0] : part[0];
}

__global__ void relu_fwd_k(const float *x, float *y, int64_t n, float slope) {
  GRID_STRIDE(i, n) {
    float v = x[i];
    y[i] = v > 0 ? v : slope * v;
  }
}

__global__ void relu_bwd_k(const float *x, const float *dy, float *dx, int64_t n, float slope) {
  GRID_STRIDE(i, n) dx[i] = dy[i] * (x[i] > 0 ? 1.f : slope);
}

__global__ void act_fwd_k(int kind, const float *x, float *y, int64_t n) {
  GRID_STRIDE(i, n) {
    float v = x[i];
    y[i] = kind == 0 ? 1.f / (1.f + expf(-v)) : tanhf(v);
  }
}

__global__ void act_bwd_k(int kind, const float *y, const float *dy, float *dx, int64_t n) {
  GRID_STRIDE(i, n) {
    float v = y[i];
    dx[i] = kind == 0 ? dy[i] * v * (1.f - v) : dy[i] * (1.f - v * v);
  }
}

// common/rng.h's mdl_rng_bits_at, on the device: the same bits.
__device__ uint64_t mix64_fin(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__device__ uint32_t rng_bits_at(uint64_t seed, uint64_t i) {
  return (uint32_t)(mix64_fin(mix64_fin(seed) + (i + 1) * 0x9e3779b97f4a7c15ull) >> 32);
}

__global__ void dropout_k(const float *x, float *y, int64_t n, uint64_t seed, uint64_t ctr,
                          uint32_t thresh, float scale) {
  GRID_STRIDE(i, n) {
    bool keep = rng_bits_at(seed, ctr + (uint64_t)i) > thresh;
    y[i] = keep ? x[i] * scale : 0.f;
  }
}

// Eltwise; MAX ties between the first two go to bottom 1, later ties keep
// the earlier (as the CPU).
__global__ void eltwise_fwd_k(mdl_gk_elt e, float *y, int32_t *mask, int64_t n) {
  GRID_STRIDE(i, n) {
    float v;
    if (e.op == 0) {
      v = e.x[0][i];
      for (int b = 1; b < e.n; b++) v *= e.x[b][i];
    } else if (e.op == 1) {
      v = e.coeff[0] * e.x[0][i];
      for (int b = 1; b < e.n; b++) v += e.coeff[b] * e.x[b][i];
    } else {
      float x0 = e.x[0][i], x1 = e.x[1][i];
      v = x0 > x1 ? x0 : x1;
      int32_t m = x0 > x1 ? 0 : 1;
      for (int b = 2; b < e.n; b++)
        if (e.x[b][i] > v) {
          v = e.x[b][i];
          m = b;
        }
      mask[i] = m;
    }
    y[i] = v;
  }
}

// dy is read before any dx is written: a bottom diff may alias it.
__global__ void eltwise_bwd_k(mdl_gk_elt e, const float *dy, const int32_t *mask, int64_t n) {
  GRID_STRIDE(i, n) {
    const float g = dy[i];
    float out[MDL_GK_MAX_ELT];
    for (int b = 0; b < e.n; b++) {
      float v;
      if (e.op == 0) {
        v = g;
        for (int o = 0; o < e.n; o++)
          if (o != b) v *= e.x[o][i];
      } else if (e.op == 1) {
        v = e.coeff[b] * g;
      } else {
        v = mask[i] == b ? g : 0.f;
      }
      out[b] = v;
    }
    for (int b = 0; b < e.n; b++)
      if (e.dx[b]) e.dx[b][i] = out[b];
  }
}

__global__ void add_bias_k(float *y, const float *b, int64_t outer, int64_t C, int64_t inner) {
  GRID_STRIDE(i, outer * C * inner) y[i] += b[(i / inner) % C];
}

// One block per channel c, fixed order.
__global__ void bias_grad_k(const float *dy, float *db, int64_t outer, int64_t C, int64_t inner) {
  __shared__ float part[kThreads];
  const int64_t c = blockIdx.x;
  float acc = 0;
  const int64_t total = outer * inner;
  for (int64_t j = threadIdx.x; j < total; j += blockDim.x) {
    int64_t o = j / inner, i = j % inner;
    acc += dy[(o * C + c) * inner + i];
  }
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) db[c] += part[0];
}

__global__ void add_k(const float *x, float *y, int64_t n) {
  GRID_STRIDE(i, n) y[i] += x[i];
}

}  // namespace

extern "C" {

cudaError_t mdl_gk_fill(cudaStream_t s, float *x, int64_t n, float v) {
  if (n <= 0) return cudaSuccess;
  fill_k<<<blocks_for(n), kThreads, 0, s>>>(x, n, v);
  return cudaGetLastError();
}

cudaError_t mdl_gk_sum(cudaStream_t s, const float *x, int64_t n, double *out) {
  sum_k<<<1, 1024, 0, s>>>(x, n, out, 0, 0);
  return cudaGetLastError();
}

cudaError_t mdl_gk_sumsq_acc(cudaStream_t s, const float *d, int64_t n, double *acc) {
  sum_k<<<1, 1024, 0, s>>>(d, n, acc, 1, 1);
  return cudaGetLastError();
}

cudaError_t mdl_gk_relu_fwd(cudaStream_t s, const float *x, float *y, int64_t n, float slope) {
  if (n <= 0) return cudaSuccess;
  relu_fwd_k<<<blocks_for(n), kThreads, 0, s>>>(x, y, n, slope);
  return cudaGetLastError();
}

cudaError_t mdl_gk_relu_bwd(cudaStream_t s, const float *x, const float *dy, float *dx, int64_t n,
                            float slope) {
  if (n <= 0) return cudaSuccess;
  relu_bwd_k<<<blocks_for(n), kThreads, 0, s>>>(x, dy, dx, n, slope);
  return cudaGetLastError();
}

cudaError_t mdl_gk_act_fwd(cudaStream_t s, int kind, const float *x, float *y, int64_t n) {
  if (n <= 0) return cudaSuccess;
  act_fwd_k<<<blocks_for(n), kThreads, 0, s>>>(kind, x, y, n);
  return cudaGetLastError();
}

cudaError_t mdl_gk_act_bwd(cudaStream_t s, int kind, const float *y, const float *dy, float *dx,
                           int64_t n) {
  if (n <= 0) return cudaSuccess;
  act_bwd_k<<<blocks_for(n), kThreads, 0, s>>>(kind, y, dy, dx, n);
  return cudaGetLastError();
}

cudaError_t mdl_gk_dropout(cudaStream_t s, const float *x, float *y, int64_t n, uint64_t seed,
                           uint64_t ctr, uint32_t thresh, float scale) {
  if (n <= 0) return cudaSuccess;
  dropout_k<<<blocks_for(n), kThreads, 0, s>>>(x, y, n, seed, ctr, thresh, scale);
  return cudaGetLastError();
}

cudaError_t mdl_gk_eltwise_fwd(cudaStream_t s, const mdl_gk_elt *e, float *y, int32_t *mask,
                               int64_t count) {
  if (count <= 0) return cudaSuccess;
  eltwise_fwd_k<<<blocks_for(count), kThreads, 0, s>>>(*e, y, mask, count);
  return cudaGetLastError();
}

cudaError_t mdl_gk_eltwise_bwd(cudaStream_t s, const mdl_gk_elt *e, const float *dy,
                               const int32_t *mask, int64_t count) {
  if (count <= 0) return cudaSuccess;
  eltwise_bwd_k<<<blocks_for(count), kThreads, 0, s>>>(*e, dy, mask, count);
  return cudaGetLastError();
}

cudaError_t mdl_gk_add_bias(cudaStream_t s, float *y, const float *b, int64_t outer, int64_t C,
                            int64_t inner) {
  int64_t n = outer * C * inner;
  if (n <= 0) return cudaSuccess;
  add_bias_k<<<blocks_for(n), kThreads, 0, s>>>(y, b, outer, C, inner);
  return cudaGetLastError();
}

cudaError_t mdl_gk_bias_grad(cudaStream_t s, const float *dy, float *db, int64_t outer, int64_t C,
                             int64_t inner) {
  if (C <= 0) return cudaSuccess;
  bias_grad_k<<<(unsigned)C, kThreads, 0, s>>>(dy, db, outer, C, inner);
  return cudaGetLastError();
}

cudaError_t mdl_gk_add(cudaStream_t s, const float *x, float *y, int64_t n) {
  if (n <= 0) return cudaSuccess;
  add_k<<<blocks_for(n), kThreads, 0, s>>>(x, y, n);
  return cudaGetLastError();
}

}  // extern "C"
