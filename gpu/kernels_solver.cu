// Caffe's update rules over one parameter blob of n floats, fused in one
// pass; arithmetic order follows runtime/cpu/solver_cpu.c so the GPU's
// weights track the CPU's within rounding. The rule numbers are
// mdl_update_rule's (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam).
#include <math.h>

#include "gpu/kernels.h"

namespace {

__global__ void update_k(mdl_gk_update u, int64_t n, float *w, const float *d, float *h1, float *h2,
                         const float *dscale) {
  const float sc = dscale ? *dscale : 1.f;
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n;
       j += (int64_t)blockDim.x * gridDim.x) {
    float dj = dscale ? d[j] * sc : d[j];
    float g = dj * u.norm;
    float wj = w[j];
    g += u.decay * (u.l1 ? (float)((wj > 0) - (wj < 0)) : wj);
    switch (u.rule) {
      case 0: {  // SGD with momentum
        float hv = u.lr * g + u.momentum * h1[j];
        h1[j] = hv;
        w[j] = wj - hv;
        break;
      }
      case 1: {  // Nesterov
        float prev = h1[j];
        float hv = u.lr * g + u.momentum * prev;
        h1[j] = hv;
        w[j] = wj - ((1.0f + u.momentum) * hv - u.momentum * prev);
        break;
      }
      case 2: {  // AdaGrad
        float hv = h1[j] + g * g;
        h1[j] = hv;
        w[j] = wj - u.lr * (g / (sqrtf(hv) + u.delta));
        break;
      }
      case 3: {  // RMSProp
        float hv = (1.0f - u.rms_decay) * (g * g) + u.rms_decay * h1[j];
        h1[j] = hv;
        w[j] = wj - u.lr * (g / (sqrtf(hv) + u.delta));
        break;
      }
      case 4: {  // AdaDelta
        float a = (1.0f - u.momentum) * (g * g) + u.momentum * h1[j];
        h1[j] = a;
        float up = g * sqrtf((h2[j] + u.delta) / (a + u.delta));
        h2[j] = (1.0f - u.momentum) * (up * up) + u.momentum * h2[j];
        w[j] = wj - u.lr * up;
        break;
      }
      default: {  // Adam: lr already carries the bias correction
        float mv = (1.0f - u.momentum) * g + u.momentum * h1[j];
        float vv = (1.0f - u.momentum2) * (g * g) + u.momentum2 * h2[j];
        h1[j] = mv;
        h2[j] = vv;
        w[j] = wj - u.lr * (mv / (sqrtf(vv) + u.delta));
      }
    }
  }
}

__global__ void clip_scale_k(const double *acc, float clip, float *scale) {
  float l2 = (float)sqrt(*acc);
  *scale = l2 > clip ? clip / l2 : 1.f;
}

}  // namespace

extern "C" {

cudaError_t mdl_gk_update_blob(cudaStream_t s, const mdl_gk_update *u, int64_t n, float *w,
                               const float *d, float *h1, float *h2, const float *dscale) {
  if (n <= 0) return cudaSuccess;
  int64_t b = (n + 255) / 256;
  update_k<<<(unsigned)(b > 262140 ? 262140 : b), 256, 0, s>>>(*u, n, w, d, h1, h2, dscale);
  return cudaGetLastError();
}

cudaError_t mdl_gk_clip_scale(cudaStream_t s, const double *acc, float clip, float *scale) {
  clip_scale_k<<<1, 1, 0, s>>>(acc, clip, scale);
  return cudaGetLastError();
}

}  // extern "C"
