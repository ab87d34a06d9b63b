/* The GPU backend's interface: device buffers, one context per device
 * (stream, cuBLAS and cuDNN handles), reductions and every solver rule as
 * kernels, and the plugin's entry points. Layers live in cuda_layers.c,
 * kernels in the .cu files. Does not choose devices (runtime/train/device.c
 * does) and never falls back to the CPU by itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu_internal.h"
#include "gpu/kernels.h"
#include "gpu/plugin.h"

#define EXPORT __attribute__((visibility("default")))

/* ---- status checks ------------------------------------------------------- */

static bool record(mdl_gpu *g, const char *lib, int code, const char *what, const char *call,
                   const char *file, int line) {
  if (g && !g->failed)
    snprintf(g->failure, sizeof g->failure, "%s:%d: %s failed: %s error %d (%s)", file, line, call,
             lib, code, what),
        g->failed = MDL_ERR_INTERNAL;
  if (!g)
    fprintf(stderr, "memdl: %s:%d: %s failed: %s error %d (%s)\n", file, line, call, lib, code,
            what);
  return false;
}

bool mdl_gpu_cuda_ok(mdl_gpu *g, cudaError_t code, const char *call, const char *file, int line) {
  if (code == cudaSuccess) return true;
  (void)cudaGetLastError(); /* clear a non-sticky error so the next check is its own */
  return record(g, "CUDA", (int)code, cudaGetErrorString(code), call, file, line);
}

bool mdl_gpu_cudnn_ok(mdl_gpu *g, cudnnStatus_t code, const char *call, const char *file,
                      int line) {
  if (code == CUDNN_STATUS_SUCCESS) return true;
  return record(g, "cuDNN", (int)code, cudnnGetErrorString(code), call, file, line);
}

static const char *cublas_str(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "alloc failed";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "arch mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "not supported";
    default:
      return "see cublas_api.h";
  }
}

bool mdl_gpu_cublas_ok(mdl_gpu *g, cublasStatus_t code, const char *call, const char *file,
                       int line) {
  if (code == CUBLAS_STATUS_SUCCESS) return true;
  return record(g, "cuBLAS", (int)code, cublas_str(code), call, file, line);
}

mdl_status mdl_gpu_take_error(mdl_gpu *g, mdl_error *err) {
  if (!g->failed) return MDL_OK;
  mdl_status st = g->failed;
  mdl_errorf(err, st, "%s: %s", g->name, g->failure);
  g->failed = MDL_OK;
  g->failure[0] = 0;
  return st;
}

/* ---- memory --------------------------------------------------------------- */

/* The current device is per host thread: calls that may come from another
 * thread than the one that opened the device (a worker's RPC threads) make
 * it current first. Kernels and library calls run on the thread that runs
 * the net. */
static bool use(mdl_gpu *g) {
  return MDL_CUDA_TRY(g, cudaSetDevice(g->device));
}

static float *gpu_alloc(void *ctx, int64_t n) {
  mdl_gpu *g = ctx;
  void *p = NULL;
  size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
  if (!use(g)) return NULL;
  /* a failed cudaMalloc is the caller's to report (NOMEM naming the
   * buffer), not a sticky device failure */
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return NULL;
  }
  if (!MDL_CUDA_TRY(g, cudaMemsetAsync(p, 0, bytes, g->stream)) ||
      !MDL_CUDA_TRY(g, cudaStreamSynchronize(g->stream))) {
    cudaFree(p);
    return NULL;
  }
  return p;
}

static void gpu_free(void *ctx, float *p) {
  mdl_gpu *g = ctx;
  if (!p || !use(g)) return;
  /* the stream may still use it */
  MDL_CUDA_TRY(g, cudaStreamSynchronize(g->stream));
  MDL_CUDA_TRY(g, cudaFree(p));
}

static void gpu_zero(void *ctx, float *p, int64_t n) {
  mdl_gpu *g = ctx;
  if (n > 0) MDL_CUDA_TRY(g, cudaMemsetAsync(p, 0, (size_t)n * sizeof(float), g->stream));
}

/* Host memory may be pageable and reused as soon as we return: both
 * directions finish before returning. */
static void gpu_to_device(void *ctx, float *dst, const float *src, int64_t n) {
  mdl_gpu *g = ctx;
  if (n <= 0 || !use(g)) return;
  MDL_CUDA_TRY(
      g, cudaMemcpyAsync(dst, src, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, g->stream));
  MDL_CUDA_TRY(g, cudaStreamSynchronize(g->stream));
}

static void gpu_to_host(void *ctx, float *dst, const float *src, int64_t n) {
  mdl_gpu *g = ctx;
  if (n <= 0 || !use(g)) return;
  MDL_CUDA_TRY(
      g, cudaMemcpyAsync(dst, src, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost, g->stream));
  MDL_CUDA_TRY(g, cudaStreamSynchronize(g->stream));
}

static mdl_status gpu_sync(void *ctx, mdl_error *err) {
  mdl_gpu *g = ctx;
  use(g);
  MDL_CUDA_TRY(g, cudaStreamSynchronize(g->stream));
  return mdl_gpu_take_error(g, err);
}

void *mdl_gpu_alloc_bytes(mdl_gpu *g, size_t n, const char *what, mdl_error *err) {
  void *p = NULL;
  if (cudaMalloc(&p, n ? n : 1) != cudaSuccess) {
    (void)cudaGetLastError();
    mdl_errorf(err, MDL_ERR_NOMEM, "%s: cannot allocate %zu bytes for %s", g->name, n, what);
    return NULL;
  }
  return p;
}

void mdl_gpu_free_bytes(void *p) {
  if (p) cudaFree(p);
}

/* ---- reductions ------------------------------------------------------------ */

static double gpu_sum(void *ctx, mdl_threadpool *pool, const float *x, int64_t n) {
  mdl_gpu *g = ctx;
  (void)pool;
  *g->h_acc = 0;
  if (n <= 0) return 0;
  if (!MDL_CUDA_TRY(g, mdl_gk_sum(g->stream, x, n, g->d_acc)) ||
      !MDL_CUDA_TRY(g, cudaMemcpyAsync(g->h_acc, g->d_acc, sizeof(double), cudaMemcpyDeviceToHost,
                                       g->stream)) ||
      !MDL_CUDA_TRY(g, cudaStreamSynchronize(g->stream)))
    return 0;
  return *g->h_acc;
}

static void gpu_fill(void *ctx, mdl_threadpool *pool, float *x, int64_t n, float v) {
  mdl_gpu *g = ctx;
  (void)pool;
  MDL_CUDA_TRY(g, mdl_gk_fill(g->stream, x, n, v));
}

/* ---- solver: clipping on the device, then one fused kernel per blob ----- */

static void gpu_update(void *ctx, const mdl_update *u, float *data, float *diff,
                       float *const *hist) {
  mdl_gpu *g = ctx;
  const float *scale = NULL;
  if (u->clip >= 0) {
    MDL_CUDA_TRY(g, cudaMemsetAsync(g->d_acc, 0, sizeof(double), g->stream));
    for (int i = 0; i < u->n_blobs; i++)
      MDL_CUDA_TRY(g, mdl_gk_sumsq_acc(g->stream, diff + u->blobs[i].offset,
                                       (int64_t)u->blobs[i].count, g->d_acc));
    MDL_CUDA_TRY(g, mdl_gk_clip_scale(g->stream, g->d_acc, u->clip, g->d_scale));
    scale = g->d_scale;
  }
  for (int i = 0; i < u->n_blobs; i++) {
    const mdl_param_blob *b = &u->blobs[i];
    mdl_gk_update k = {.rule = (int)u->rule,
                       .norm = u->norm,
                       .decay = u->weight_decay * b->decay_mult,
                       .lr = u->rate * b->lr_mult,
                       .momentum = u->momentum,
                       .momentum2 = u->momentum2,
                       .delta = u->delta,
                       .rms_decay = u->rms_decay,
                       .l1 = u->l1};
    if (u->rule == MDL_UPDATE_ADAM) k.lr *= u->adam_correction;
    bool two = u->rule == MDL_UPDATE_ADADELTA || u->rule == MDL_UPDATE_ADAM;
    MDL_CUDA_TRY(
        g, mdl_gk_update_blob(g->stream, &k, (int64_t)b->count, data + b->offset, diff + b->offset,
                              hist[0] + b->offset, two ? hist[1] + b->offset : NULL, scale));
  }
}

/* ---- parameters: the CPU's fillers on the host, then one copy ----------- */

mdl_status mdl_gpu_fill_params(mdl_layer *l, const Caffe__FillerParameter *const *fillers,
                               mdl_rng *rng, mdl_error *err) {
  mdl_gpu *g = mdl_gpu_of(l);
  for (int i = 0; i < l->n_param; i++) {
    mdl_tensor h;
    mdl_tensor_init(&h);
    mdl_status st = mdl_tensor_alloc(&h, l->param[i].n, l->param[i].d, false, err);
    if (st) return st;
    st = mdl_filler_fill(fillers[i], &h, rng, err);
    if (!st) gpu_to_device(g, l->param[i].data, h.data, h.count);
    mdl_tensor_release(&h);
    if (st) return st;
  }
  return mdl_gpu_take_error(g, err);
}

/* ---- contexts, one per device, for the life of the process --------------- */

#define MAX_DEVICES 64
static mdl_gpu *devices[MAX_DEVICES];

static bool no_gpu_code(cudaError_t e) {
  return e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice ||
         e == cudaErrorInitializationError || e == cudaErrorUnknown;
}

EXPORT int mdl_cuda_plugin_abi(void) {
  return MDL_CUDA_PLUGIN_ABI;
}

EXPORT int mdl_cuda_plugin_probe(char *why, size_t why_size) {
  int n = 0; /* cudaGetDeviceCount leaves it untouched when it fails */
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    snprintf(why, why_size, "%s (cudaGetDeviceCount: CUDA error %d, %s)",
             e == cudaErrorInsufficientDriver ? "no NVIDIA driver"
             : e == cudaErrorNoDevice         ? "no CUDA device"
             : no_gpu_code(e)                 ? "CUDA cannot start"
                                              : "CUDA failed",
             (int)e, cudaGetErrorString(e));
    return 0;
  }
  if (n <= 0) snprintf(why, why_size, "no CUDA device (cudaGetDeviceCount: 0)");
  return n;
}

static void destroy(mdl_gpu *g) {
  if (!g) return;
  if (g->dnn) cudnnDestroy(g->dnn);
  if (g->blas) cublasDestroy(g->blas);
  if (g->d_acc) cudaFree(g->d_acc);
  if (g->d_scale) cudaFree(g->d_scale);
  if (g->h_acc) cudaFreeHost(g->h_acc);
  if (g->stream) cudaStreamDestroy(g->stream);
  free(g);
}

EXPORT mdl_status mdl_cuda_plugin_open(int device, const mdl_backend **out, char *desc,
                                       size_t desc_size, mdl_error *err) {
  *out = NULL;
  char why[256] = "";
  int n = mdl_cuda_plugin_probe(why, sizeof why);
  if (n <= 0) return mdl_errorf(err, MDL_ERR_INVALID, "cuda:%d: %s", device, why);
  if (device < 0 || device >= n || device >= MAX_DEVICES)
    return mdl_errorf(err, MDL_ERR_INVALID, "cuda:%d: this machine has %d CUDA device%s (0..%d)",
                      device, n, n == 1 ? "" : "s", n - 1);
  if (!devices[device]) {
    mdl_gpu *g = mdl_xcalloc(1, sizeof *g);
    g->device = device;
    snprintf(g->name, sizeof g->name, "cuda:%d", device);
    const char *ex = getenv("MDL_CUDA_EXACT");
    g->exact = ex && ex[0] && strcmp(ex, "0") != 0;
    struct cudaDeviceProp prop;
    bool ok = MDL_CUDA_TRY(g, cudaSetDevice(device)) &&
              MDL_CUDA_TRY(g, cudaGetDeviceProperties(&prop, device)) &&
              MDL_CUDA_TRY(g, cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking)) &&
              MDL_CUBLAS_TRY(g, cublasCreate(&g->blas)) &&
              MDL_CUBLAS_TRY(g, cublasSetStream(g->blas, g->stream)) &&
              MDL_CUBLAS_TRY(g, cublasSetMathMode(g->blas, g->exact ? CUBLAS_PEDANTIC_MATH
                                                                    : CUBLAS_DEFAULT_MATH)) &&
              MDL_CUDNN_TRY(g, cudnnCreate(&g->dnn)) &&
              MDL_CUDNN_TRY(g, cudnnSetStream(g->dnn, g->stream)) &&
              MDL_CUDA_TRY(g, cudaMalloc((void **)&g->d_acc, sizeof(double))) &&
              MDL_CUDA_TRY(g, cudaMalloc((void **)&g->d_scale, sizeof(float))) &&
              MDL_CUDA_TRY(g, cudaMallocHost((void **)&g->h_acc, sizeof(double)));
    if (!ok) {
      mdl_status st = mdl_gpu_take_error(g, err);
      destroy(g);
      return st;
    }
    snprintf(g->desc, sizeof g->desc, "%s (%s, sm_%d%d, %.0f GiB, cuDNN %zu; %s)", g->name,
             prop.name, prop.major, prop.minor, (double)prop.totalGlobalMem / 1073741824.0,
             cudnnGetVersion(),
             g->exact ? "FP32 math: MDL_CUDA_EXACT"
                      : "TF32 convolutions allowed; MDL_CUDA_EXACT=1 for FP32");
    g->iface = (mdl_backend_i){
        .name = g->name,
        .host_visible = false,
        .alloc = gpu_alloc,
        .free = gpu_free,
        .zero = gpu_zero,
        .to_device = gpu_to_device,
        .to_host = gpu_to_host,
        .sync = gpu_sync,
        .impls = mdl_gpu_impls,
        .n_impls = mdl_gpu_n_impls,
        .supports_layer = mdl_gpu_supports_layer,
        .sum = gpu_sum,
        .fill = gpu_fill,
        .update = gpu_update,
    };
    g->be = (mdl_backend){&g->iface, g};
    devices[device] = g;
  }
  MDL_CUDA_TRY(devices[device], cudaSetDevice(device));
  if (desc) snprintf(desc, desc_size, "%s", devices[device]->desc);
  *out = &devices[device]->be;
  return mdl_gpu_take_error(devices[device], err);
}
