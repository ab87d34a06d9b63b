/* The seam between the engine and a device: every buffer, every layer
 * kernel, every reduction and every solver step the engine, the solvers and
 * the training loop run goes through one mdl_backend. Owns the interface
 * and thin dispatch; not any implementation (runtime/cpu/ is the CPU
 * backend, gpu/ the GPU one) and not the choice of device
 * (runtime/train/device.h resolves "cpu", "cuda", "cuda:N", "auto").
 *
 * Buffers are floats in the backend's memory. A host caller touches them
 * only through to_device/to_host (weights at round boundaries, data
 * batches); on the CPU backend both are memcpy and device pointers are host
 * pointers. */
#ifndef MDL_RUNTIME_ENGINE_BACKEND_H
#define MDL_RUNTIME_ENGINE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caffe.pb-c.h"
#include "common/error.h"

struct mdl_layer_impl;
struct mdl_threadpool;

/* One learnable blob of a net: a range of the flat parameter and gradient
 * buffers, with its ParamSpec multipliers and its shape (for .solverstate
 * history blobs). */
typedef struct mdl_param_blob {
  size_t offset; /* in floats */
  size_t count;
  float lr_mult, decay_mult;
  int n_axes;
  int64_t dim[8];
} mdl_param_blob;

/* The per-element update rules; values equal mdl_solver_kind and Caffe's
 * SolverParameter.SolverType. */
typedef enum mdl_update_rule {
  MDL_UPDATE_SGD = 0,
  MDL_UPDATE_NESTEROV,
  MDL_UPDATE_ADAGRAD,
  MDL_UPDATE_RMSPROP,
  MDL_UPDATE_ADADELTA,
  MDL_UPDATE_ADAM,
} mdl_update_rule;

/* One solver step, as the solver computed it from its schedule: a backend
 * applies it to every blob (Caffe's ApplyUpdate + Net::Update). */
typedef struct mdl_update {
  mdl_update_rule rule;
  float rate;            /* the iteration's learning rate; each blob scales it by lr_mult */
  float clip;            /* clip_gradients: global L2 norm limit; < 0 off */
  float norm;            /* gradient scale before the rule: 1 / iter_size */
  float weight_decay;    /* each blob scales it by decay_mult */
  bool l1;               /* L1 regularisation (else L2) */
  float momentum;        /* SGD, Nesterov, AdaDelta; Adam's beta1 */
  float momentum2;       /* Adam's beta2 */
  float delta;           /* AdaGrad, RMSProp, AdaDelta, Adam epsilon */
  float rms_decay;       /* RMSProp */
  float adam_correction; /* Adam's bias correction at this step */
  const mdl_param_blob *blobs;
  int n_blobs;
} mdl_update;

typedef struct mdl_backend_i {
  const char *name; /* "cpu", "cuda:0", ... */
  /* Its buffers are host memory: callers may read and write them in place
   * (the CPU). Otherwise only through to_device/to_host. */
  bool host_visible;

  /* ---- memory: n floats in the backend's memory ---- */
  /* Zeroed, 64-byte aligned; NULL when it does not fit (the caller reports
   * MDL_ERR_NOMEM naming what it was for). n == 0 gives a valid pointer. */
  float *(*alloc)(void *ctx, int64_t n);
  void (*free)(void *ctx, float *p); /* NULL safe */
  void (*zero)(void *ctx, float *p, int64_t n);
  void (*to_device)(void *ctx, float *dst, const float *host_src, int64_t n);
  void (*to_host)(void *ctx, float *host_dst, const float *src, int64_t n);
  /* Waits for queued work; reports a device failure. */
  mdl_status (*sync)(void *ctx, mdl_error *err);

  /* ---- layers ---- */
  const struct mdl_layer_impl *const *impls; /* explicit table, no self-registration */
  size_t n_impls;
  /* Whether this backend runs lp (its type and, where it matters, its
   * parameters). NULL: every type of the table with any parameters. When
   * false, why says what is missing. */
  bool (*supports_layer)(void *ctx, const Caffe__LayerParameter *lp, char *why, size_t why_size);

  /* ---- reductions the engine needs ---- */
  /* Sum of x[0..n) in double (loss tops); pool may be NULL. */
  double (*sum)(void *ctx, struct mdl_threadpool *pool, const float *x, int64_t n);
  /* x[0..n) = v (loss diffs seeded with their loss weight). */
  void (*fill)(void *ctx, struct mdl_threadpool *pool, float *x, int64_t n, float v);

  /* ---- solver ---- */
  /* Applies u to data with gradient diff (used as scratch; unspecified
   * after) and history hist[0], hist[1] (the second only for AdaDelta and
   * Adam), all laid out as the parameter buffer. */
  void (*update)(void *ctx, const mdl_update *u, float *data, float *diff, float *const *hist);
} mdl_backend_i;

/* A backend: its interface and its state (a device's handles and streams;
 * NULL on the CPU). Owned by whoever made it; outlives the nets using it. */
typedef struct mdl_backend {
  const mdl_backend_i *iface;
  void *ctx;
} mdl_backend;

/* Dispatch helpers (be must not be NULL). */
float *mdl_backend_alloc(const mdl_backend *be, int64_t n);
void mdl_backend_free(const mdl_backend *be, float *p);
void mdl_backend_zero(const mdl_backend *be, float *p, int64_t n);
void mdl_backend_to_device(const mdl_backend *be, float *dst, const float *host_src, int64_t n);
void mdl_backend_to_host(const mdl_backend *be, float *host_dst, const float *src, int64_t n);
mdl_status mdl_backend_sync(const mdl_backend *be, mdl_error *err);
const char *mdl_backend_name(const mdl_backend *be);

#endif
