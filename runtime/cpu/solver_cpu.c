/* Caffe's update rules on host buffers, one fused pass per parameter blob;
 * arithmetic order follows Caffe's sgd_solver.cpp and solvers/, so results
 * are the bits the solver gave before it moved behind the backend seam. */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>

#include "runtime/cpu/cpu_backend.h"

/* The per-element rules. g is the gradient after normalisation and
 * regularisation; each returns the step subtracted from the weight. Kept as
 * separate loops per rule so the compiler vectorises each. */
static void update_sgd(size_t n, float *restrict w, const float *restrict d, float *restrict h,
                       float norm, float decay, bool l1, float lr, float mom) {
  for (size_t j = 0; j < n; j++) {
    float g = d[j] * norm;
    g += decay * (l1 ? (float)((w[j] > 0) - (w[j] < 0)) : w[j]);
    float hv = lr * g + mom * h[j];
    h[j] = hv;
    w[j] -= hv;
  }
}

static void update_nesterov(size_t n, float *restrict w, const float *restrict d, float *restrict h,
                            float norm, float decay, bool l1, float lr, float mom) {
  for (size_t j = 0; j < n; j++) {
    float g = d[j] * norm;
    g += decay * (l1 ? (float)((w[j] > 0) - (w[j] < 0)) : w[j]);
    float prev = h[j];
    float hv = lr * g + mom * prev;
    h[j] = hv;
    w[j] -= (1.0f + mom) * hv - mom * prev;
  }
}

static void update_adagrad(size_t n, float *restrict w, const float *restrict d, float *restrict h,
                           float norm, float decay, bool l1, float lr, float delta) {
  for (size_t j = 0; j < n; j++) {
    float g = d[j] * norm;
    g += decay * (l1 ? (float)((w[j] > 0) - (w[j] < 0)) : w[j]);
    float hv = h[j] + g * g;
    h[j] = hv;
    w[j] -= lr * (g / (sqrtf(hv) + delta));
  }
}

static void update_rmsprop(size_t n, float *restrict w, const float *restrict d, float *restrict h,
                           float norm, float decay, bool l1, float lr, float delta, float rd) {
  for (size_t j = 0; j < n; j++) {
    float g = d[j] * norm;
    g += decay * (l1 ? (float)((w[j] > 0) - (w[j] < 0)) : w[j]);
    float hv = (1.0f - rd) * (g * g) + rd * h[j];
    h[j] = hv;
    w[j] -= lr * (g / (sqrtf(hv) + delta));
  }
}

static void update_adadelta(size_t n, float *restrict w, const float *restrict d,
                            float *restrict h1, float *restrict h2, float norm, float decay,
                            bool l1, float lr, float delta, float mom) {
  for (size_t j = 0; j < n; j++) {
    float g = d[j] * norm;
    g += decay * (l1 ? (float)((w[j] > 0) - (w[j] < 0)) : w[j]);
    float a = (1.0f - mom) * (g * g) + mom * h1[j];
    h1[j] = a;
    float u = g * sqrtf((h2[j] + delta) / (a + delta));
    h2[j] = (1.0f - mom) * (u * u) + mom * h2[j];
    w[j] -= lr * u;
  }
}

static void update_adam(size_t n, float *restrict w, const float *restrict d, float *restrict m,
                        float *restrict v, float norm, float decay, bool l1, float step, float eps,
                        float b1, float b2) {
  for (size_t j = 0; j < n; j++) {
    float g = d[j] * norm;
    g += decay * (l1 ? (float)((w[j] > 0) - (w[j] < 0)) : w[j]);
    float mv = (1.0f - b1) * g + b1 * m[j];
    float vv = (1.0f - b2) * (g * g) + b2 * v[j];
    m[j] = mv;
    v[j] = vv;
    w[j] -= step * (mv / (sqrtf(vv) + eps));
  }
}

void mdl_cpu_update(void *ctx, const mdl_update *u, float *data, float *diff, float *const *hist) {
  (void)ctx;
  /* Caffe clips before normalising by iter_size; a double sum in blob order
   * keeps the result independent of threads. */
  if (u->clip >= 0) {
    double sumsq = 0;
    for (int i = 0; i < u->n_blobs; i++) {
      const float *d = diff + u->blobs[i].offset;
      for (size_t j = 0; j < u->blobs[i].count; j++) sumsq += (double)d[j] * d[j];
    }
    float l2 = (float)sqrt(sumsq);
    if (l2 > u->clip) {
      float f = u->clip / l2;
      for (int i = 0; i < u->n_blobs; i++) {
        float *d = diff + u->blobs[i].offset;
        for (size_t j = 0; j < u->blobs[i].count; j++) d[j] *= f;
      }
    }
  }
  const float norm = u->norm;
  for (int i = 0; i < u->n_blobs; i++) {
    const mdl_param_blob *b = &u->blobs[i];
    size_t n = b->count;
    float *w = data + b->offset;
    float *d = diff + b->offset;
    float *h = hist[0] + b->offset;
    float lr = u->rate * b->lr_mult;
    float decay = u->weight_decay * b->decay_mult;
    switch (u->rule) {
      case MDL_UPDATE_SGD:
        update_sgd(n, w, d, h, norm, decay, u->l1, lr, u->momentum);
        break;
      case MDL_UPDATE_NESTEROV:
        update_nesterov(n, w, d, h, norm, decay, u->l1, lr, u->momentum);
        break;
      case MDL_UPDATE_ADAGRAD:
        update_adagrad(n, w, d, h, norm, decay, u->l1, lr, u->delta);
        break;
      case MDL_UPDATE_RMSPROP:
        update_rmsprop(n, w, d, h, norm, decay, u->l1, lr, u->delta, u->rms_decay);
        break;
      case MDL_UPDATE_ADADELTA:
        update_adadelta(n, w, d, h, hist[1] + b->offset, norm, decay, u->l1, lr, u->delta,
                        u->momentum);
        break;
      case MDL_UPDATE_ADAM:
        update_adam(n, w, d, h, hist[1] + b->offset, norm, decay, u->l1, lr * u->adam_correction,
                    u->delta, u->momentum, u->momentum2);
        break;
    }
  }
}
