// Pooling with Caffe's semantics, NCHW: x is planes x H x W, y planes x PH x
// PW (PH, PW from the shape rule's ceil rounding). MAX keeps the flat argmax
// in the input plane per output; AVE's divisor counts padding but not what
// lies past it. Backward gathers per input element (no atomics, so the
// result does not depend on scheduling).
#include <float.h>

#include "gpu/kernels.h"

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  if (b < 1) b = 1;
  return b > 65535 * 4 ? 65535 * 4 : (int)b;
}

__global__ void pool_fwd_k(mdl_gk_pool p, const float *x, float *y, int32_t *mask) {
  const int64_t n = p.planes * p.PH * p.PW;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const int64_t ow = idx % p.PW, oh = (idx / p.PW) % p.PH, pl = idx / (p.PW * p.PH);
    const int64_t hs = oh * p.sh - p.ph, he = hs + p.kh;
    const int64_t ws = ow * p.sw - p.pw, we = ws + p.kw;
    const int64_t h0 = hs > 0 ? hs : 0, h1 = he < p.H ? he : p.H;
    const int64_t w0 = ws > 0 ? ws : 0, w1 = we < p.W ? we : p.W;
    const float *xp = x + pl * p.H * p.W;
    if (p.max) {
      float m = -FLT_MAX;
      int32_t mi = -1;
      for (int64_t h = h0; h < h1; h++)
        for (int64_t w = w0; w < w1; w++)
          if (xp[h * p.W + w] > m) {
            m = xp[h * p.W + w];
            mi = (int32_t)(h * p.W + w);
          }
      y[idx] = m;
      mask[idx] = mi;
    } else {
      const int64_t h1p = he < p.H + p.ph ? he : p.H + p.ph;
      const int64_t w1p = we < p.W + p.pw ? we : p.W + p.pw;
      float sum = 0;
      for (int64_t h = h0; h < h1; h++)
        for (int64_t w = w0; w < w1; w++) sum += xp[h * p.W + w];
      y[idx] = sum / (float)((h1p - hs) * (w1p - ws));
    }
  }
}

// Input element (h, w) is covered by outputs oh in [ph0, ph1), ow in [pw0, pw1).
__global__ void pool_bwd_k(mdl_gk_pool p, const float *dy, const int32_t *mask, float *dx) {
  const int64_t n = p.planes * p.H * p.W;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const int64_t w = idx % p.W, h = (idx / p.W) % p.H, pl = idx / (p.W * p.H);
    const int64_t hp = h + p.ph, wp = w + p.pw;
    int64_t ph0 = hp < p.kh ? 0 : (hp - p.kh) / p.sh + 1;
    int64_t ph1 = hp / p.sh + 1;
    int64_t pw0 = wp < p.kw ? 0 : (wp - p.kw) / p.sw + 1;
    int64_t pw1 = wp / p.sw + 1;
    if (ph1 > p.PH) ph1 = p.PH;
    if (pw1 > p.PW) pw1 = p.PW;
    const float *dyp = dy + pl * p.PH * p.PW;
    float g = 0;
    if (p.max) {
      const int32_t *mp = mask + pl * p.PH * p.PW;
      const int32_t me = (int32_t)(h * p.W + w);
      for (int64_t oh = ph0; oh < ph1; oh++)
        for (int64_t ow = pw0; ow < pw1; ow++)
          if (mp[oh * p.PW + ow] == me) g += dyp[oh * p.PW + ow];
    } else {
      for (int64_t oh = ph0; oh < ph1; oh++)
        for (int64_t ow = pw0; ow < pw1; ow++) {
          const int64_t hs = oh * p.sh - p.ph, he = hs + p.kh;
          const int64_t ws = ow * p.sw - p.pw, we = ws + p.kw;
          const int64_t h1p = he < p.H + p.ph ? he : p.H + p.ph;
          const int64_t w1p = we < p.W + p.pw ? we : p.W + p.pw;
          g += dyp[oh * p.PW + ow] / (float)((h1p - hs) * (w1p - ws));
        }
    }
    dx[idx] = g;
  }
}

}  // namespace

extern "C" {

cudaError_t mdl_gk_pool_fwd(cudaStream_t s, const mdl_gk_pool *p, const float *x, float *y,
                            int32_t *mask) {
  int64_t n = p->planes * p->PH * p->PW;
  if (n <= 0) return cudaSuccess;
  pool_fwd_k<<<blocks_for(n), kThreads, 0, s>>>(*p, x, y, mask);
  return cudaGetLastError();
}

cudaError_t mdl_gk_pool_bwd(cudaStream_t s, const mdl_gk_pool *p, const float *dy,
                            const int32_t *mask, float *dx) {
  int64_t n = p->planes * p->H * p->W;
  if (n <= 0) return cudaSuccess;
  pool_bwd_k<<<blocks_for(n), kThreads, 0, s>>>(*p, dy, mask, dx);
  return cudaGetLastError();
}

}  // extern "C"
