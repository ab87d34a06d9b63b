// SoftmaxWithLoss's loss and gradient after cuDNN's softmax, and Accuracy.
// prob and x are outer x C x inner; labels are floats holding class indices
// (outer x inner). Reductions run in one block in a fixed order and leave
// their scalars on the device, so nothing waits for the host.
#include <float.h>
#include <math.h>

#include "gpu/kernels.h"

namespace {

constexpr int kThreads = 512;

// Caffe's NormalizationMode: 0 FULL, 1 VALID, 2 BATCH_SIZE, 3 NONE.
__device__ double normalizer(int mode, int64_t outer, int64_t inner, int64_t valid) {
  double n;
  switch (mode) {
    case 0:
      n = (double)outer * (double)inner;
      break;
    case 1:
      n = valid < 0 ? (double)outer * (double)inner : (double)valid;
      break;
    case 2:
      n = (double)outer;
      break;
    default:
      n = 1;
  }
  return n < 1 ? 1 : n;
}

__device__ int64_t label_at(const float *lab, int64_t k, int64_t C, int has_ignore, int ignore) {
  int64_t v = (int64_t)lab[k];
  if (has_ignore && v == ignore) return -1;
  if (v < 0 || v >= C) return -1;
  return v;
}

__global__ void swl_fwd_k(const float *prob, const float *lab, int64_t outer, int64_t C,
                          int64_t inner, int mode, int has_ignore, int ignore, float *top,
                          float *norm) {
  __shared__ double loss[kThreads];
  __shared__ long long valid[kThreads];
  double l = 0;
  long long v = 0;
  for (int64_t k = threadIdx.x; k < outer * inner; k += blockDim.x) {
    int64_t c = label_at(lab, k, C, has_ignore, ignore);
    if (c < 0) continue;
    int64_t o = k / inner, i = k % inner;
    float pr = prob[(o * C + c) * inner + i];
    l -= log((double)(pr > FLT_MIN ? pr : FLT_MIN));
    v++;
  }
  loss[threadIdx.x] = l;
  valid[threadIdx.x] = v;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) {
      loss[threadIdx.x] += loss[threadIdx.x + w];
      valid[threadIdx.x] += valid[threadIdx.x + w];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    double n = normalizer(mode, outer, inner, has_ignore ? valid[0] : -1);
    *top = (float)(loss[0] / n);
    *norm = (float)n;
  }
}

__global__ void swl_bwd_k(const float *prob, const float *lab, int64_t outer, int64_t C,
                          int64_t inner, int has_ignore, int ignore, const float *top_diff,
                          const float *norm, float *dx) {
  const float scale = (float)((double)top_diff[0] / (double)norm[0]);
  const int64_t n = outer * C * inner;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
       idx += (int64_t)blockDim.x * gridDim.x) {
    int64_t i = idx % inner, k = (idx / inner) % C, o = idx / (inner * C);
    int64_t c = label_at(lab, o * inner + i, C, has_ignore, ignore);
    dx[idx] = c < 0 ? 0.f : (prob[idx] - (k == c ? 1.f : 0.f)) * scale;
  }
}

// The true class counts itself as "better or equal" (Caffe).
__global__ void accuracy_k(const float *x, const float *lab, int64_t outer, int64_t C,
                           int64_t inner, int64_t topk, int has_ignore, int ignore, float *top) {
  __shared__ long long hits[kThreads], count[kThreads];
  long long h = 0, n = 0;
  for (int64_t k = threadIdx.x; k < outer * inner; k += blockDim.x) {
    int64_t c = label_at(lab, k, C, has_ignore, ignore);
    if (c < 0) continue;
    n++;
    int64_t o = k / inner, i = k % inner;
    const float truth = x[(o * C + c) * inner + i];
    int64_t better = -1;
    for (int64_t j = 0; j < C && better < topk; j++) better += x[(o * C + j) * inner + i] >= truth;
    if (better < topk) h++;
  }
  hits[threadIdx.x] = h;
  count[threadIdx.x] = n;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) {
      hits[threadIdx.x] += hits[threadIdx.x + w];
      count[threadIdx.x] += count[threadIdx.x + w];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *top = count[0] ? (float)((double)hits[0] / (double)count[0]) : 0.f;
}

}  // namespace

extern "C" {

cudaError_t mdl_gk_softmax_loss_fwd(cudaStream_t s, const float *prob, const float *label,
                                    int64_t outer, int64_t C, int64_t inner, int mode,
                                    int has_ignore, int ignore_label, float *top, float *norm) {
  swl_fwd_k<<<1, kThreads, 0, s>>>(prob, label, outer, C, inner, mode, has_ignore, ignore_label,
                                   top, norm);
  return cudaGetLastError();
}

cudaError_t mdl_gk_softmax_loss_bwd(cudaStream_t s, const float *prob, const float *label,
                                    int64_t outer, int64_t C, int64_t inner, int has_ignore,
                                    int ignore_label, const float *top_diff, const float *norm,
                                    float *dx) {
  int64_t n = outer * C * inner;
  if (n <= 0) return cudaSuccess;
  int64_t b = (n + 255) / 256;
  swl_bwd_k<<<(unsigned)(b > 262140 ? 262140 : b), 256, 0, s>>>(
      prob, label, outer, C, inner, has_ignore, ignore_label, top_diff, norm, dx);
  return cudaGetLastError();
}

cudaError_t mdl_gk_accuracy(cudaStream_t s, const float *x, const float *label, int64_t outer,
                            int64_t C, int64_t inner, int64_t k, int has_ignore, int ignore_label,
                            float *top) {
  accuracy_k<<<1, kThreads, 0, s>>>(x, label, outer, C, inner, k, has_ignore, ignore_label, top);
  return cudaGetLastError();
}

}  // extern "C"
