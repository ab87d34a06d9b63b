/* Internal to the GPU backend: one device's context, the status checks
 * every CUDA, cuDNN and cuBLAS call goes through, and the layer table
 * cuda_backend.c lists. Not a public API: the rest of memdl sees only
 * plugin.h's entry points, through runtime/train/device.c's dlopen. */
#ifndef MDL_GPU_GPU_INTERNAL_H
#define MDL_GPU_GPU_INTERNAL_H

#include <stdbool.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "runtime/engine/layer.h"

/* One device: its stream (every kernel, copy, cuBLAS and cuDNN call is
 * queued on it), handles, scratch scalars and the first failure seen where
 * nothing can return a status (forward, backward, update), which sync
 * reports. */
typedef struct mdl_gpu {
  int device;
  char name[16]; /* "cuda:N" */
  char desc[768];
  cudaStream_t stream;
  cublasHandle_t blas;
  cudnnHandle_t dnn;
  bool exact;     /* MDL_CUDA_EXACT=1: FP32 FMA math in cuDNN and cuBLAS (no TF32) */
  double *d_acc;  /* device: sum and clipping accumulator */
  float *d_scale; /* device: clipping factor */
  double *h_acc;  /* pinned host: a sum's result */
  mdl_status failed;
  char failure[512];
  mdl_backend_i iface;
  mdl_backend be;
} mdl_gpu;

/* Records the first failure (later ones are dropped: the first is the cause)
 * and returns false when code is not success. */
bool mdl_gpu_cuda_ok(mdl_gpu *g, cudaError_t code, const char *call, const char *file, int line);
bool mdl_gpu_cudnn_ok(mdl_gpu *g, cudnnStatus_t code, const char *call, const char *file, int line);
bool mdl_gpu_cublas_ok(mdl_gpu *g, cublasStatus_t code, const char *call, const char *file,
                       int line);

/* Each names the statement and where it is; false when it failed (also
 * recorded in g). Kernel launchers return cudaGetLastError(), so
 * MDL_CUDA_TRY(g, mdl_gk_...) checks a launch. */
#define MDL_CUDA_TRY(g, call) mdl_gpu_cuda_ok((g), (call), #call, __FILE__, __LINE__)
#define MDL_CUDNN_TRY(g, call) mdl_gpu_cudnn_ok((g), (call), #call, __FILE__, __LINE__)
#define MDL_CUBLAS_TRY(g, call) mdl_gpu_cublas_ok((g), (call), #call, __FILE__, __LINE__)

/* In setup: on failure, moves g's recorded failure into err (clearing it in
 * g) and returns its status. */
mdl_status mdl_gpu_take_error(mdl_gpu *g, mdl_error *err);

static inline mdl_gpu *mdl_gpu_of(const mdl_layer *l) {
  return (mdl_gpu *)l->be->ctx;
}

/* Device memory for a layer's private state (masks, probabilities): n bytes,
 * NULL with err set when it does not fit. */
void *mdl_gpu_alloc_bytes(mdl_gpu *g, size_t n, const char *what, mdl_error *err);
void mdl_gpu_free_bytes(void *p);

/* Fills l's parameter blobs on the host with the CPU's fillers (same draws)
 * and copies them to the device. fillers[i] for blob i (NULL: constant 0). */
mdl_status mdl_gpu_fill_params(mdl_layer *l, const Caffe__FillerParameter *const *fillers,
                               mdl_rng *rng, mdl_error *err);

/* Whether this backend runs lp, why not otherwise (cuda_layers.c). */
bool mdl_gpu_supports_layer(void *ctx, const Caffe__LayerParameter *lp, char *why, size_t why_size);

extern const mdl_layer_impl *const mdl_gpu_impls[];
extern const size_t mdl_gpu_n_impls;

#endif
