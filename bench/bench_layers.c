/* Micro-benchmark of the CPU layers on LeNet's (batch 64) and
 * CIFAR-10-quick's (batch 100) shapes: per-layer forward/backward
 * milliseconds (medians), convolution and inner-product GFLOP/s against the
 * measured sgemm peak of the same thread count, and the oneDNN vs OpenBLAS
 * sgemm figures behind the GEMM choice. Drives layers directly (no net, no
 * data pipeline): `bench_layers [--threads T] [--iterations N] [--gemm]`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compiler/textformat.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/cpu/cpu_math.h"
#include "runtime/engine/layer.h"

#define MAX_BLOBS 32
#define MAX_LAYERS 32

typedef struct bench_layer {
  const char *text; /* LayerParameter; bottoms/tops by blob index below */
  int bottom[2], n_bottom;
  int top; /* -1: in place on bottom[0] */
  bool needs_bottom_grad;
} bench_layer;

typedef struct bench_net {
  const char *name;
  int batch;
  mdl_shape input; /* blob 0; blob 1 holds labels */
  int classes;
  bench_layer layers[MAX_LAYERS];
  int n_layers;
} bench_net;

#define W " weight_filler { type: 'xavier' } bias_filler { type: 'constant' } "

static const bench_net lenet = {
    "LeNet",
    64,
    {4, {64, 1, 28, 28}},
    10,
    {
        {"name: 'conv1' type: 'Convolution' convolution_param { num_output: 20 kernel_size: 5" W
         "}",
         {0},
         1,
         2,
         false},
        {"name: 'pool1' type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 }",
         {2},
         1,
         3,
         true},
        {"name: 'conv2' type: 'Convolution' convolution_param { num_output: 50 kernel_size: 5" W
         "}",
         {3},
         1,
         4,
         true},
        {"name: 'pool2' type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 }",
         {4},
         1,
         5,
         true},
        {"name: 'ip1' type: 'InnerProduct' inner_product_param { num_output: 500" W "}",
         {5},
         1,
         6,
         true},
        {"name: 'relu1' type: 'ReLU'", {6}, 1, -1, true},
        {"name: 'ip2' type: 'InnerProduct' inner_product_param { num_output: 10" W "}",
         {6},
         1,
         7,
         true},
        {"name: 'loss' type: 'SoftmaxWithLoss'", {7, 1}, 2, 8, true},
    },
    8,
};

static const bench_net cifar_quick = {
    "CIFAR-10-quick",
    100,
    {4, {100, 3, 32, 32}},
    10,
    {
        {"name: 'conv1' type: 'Convolution' convolution_param { num_output: 32 pad: 2 kernel_size: "
         "5" W "}",
         {0},
         1,
         2,
         false},
        {"name: 'pool1' type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 2 }",
         {2},
         1,
         3,
         true},
        {"name: 'relu1' type: 'ReLU'", {3}, 1, -1, true},
        {"name: 'conv2' type: 'Convolution' convolution_param { num_output: 32 pad: 2 kernel_size: "
         "5" W "}",
         {3},
         1,
         4,
         true},
        {"name: 'relu2' type: 'ReLU'", {4}, 1, -1, true},
        {"name: 'pool2' type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 stride: 2 }",
         {4},
         1,
         5,
         true},
        {"name: 'conv3' type: 'Convolution' convolution_param { num_output: 64 pad: 2 kernel_size: "
         "5" W "}",
         {5},
         1,
         6,
         true},
        {"name: 'relu3' type: 'ReLU'", {6}, 1, -1, true},
        {"name: 'pool3' type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 stride: 2 }",
         {6},
         1,
         7,
         true},
        {"name: 'ip1' type: 'InnerProduct' inner_product_param { num_output: 64" W "}",
         {7},
         1,
         8,
         true},
        {"name: 'ip2' type: 'InnerProduct' inner_product_param { num_output: 10" W "}",
         {8},
         1,
         9,
         true},
        {"name: 'loss' type: 'SoftmaxWithLoss'", {9, 1}, 2, 10, true},
    },
    12,
};

/* --cpu-time: this thread's CPU time instead of wall time, for 1-thread
 * kernel comparisons on a machine other processes are loading */
static clockid_t bench_clock = CLOCK_MONOTONIC;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(bench_clock, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Multiply-adds x 2 of a convolution or inner product's forward pass. */
static double layer_flops(const mdl_layer *l) {
  const char *t = l->impl->type;
  if (!strcmp(t, "Convolution")) {
    const mdl_shape *o = &l->top_shape[0];
    int64_t wcount = l->param[0].count; /* M * Kg */
    return 2.0 * (double)o->d[0] * (double)(o->d[2] * o->d[3]) * (double)wcount;
  }
  if (!strcmp(t, "InnerProduct")) {
    const mdl_shape *o = &l->top_shape[0];
    return 2.0 * (double)o->d[0] * (double)l->param[0].count;
  }
  return 0;
}

static double gemm_gflops(mdl_threadpool *pool, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
                          int reps) {
  float *A = mdl_falloc(M * K), *B = mdl_falloc(K * N), *C = mdl_falloc(M * N);
  for (int64_t i = 0; i < M * K; i++) A[i] = (float)(i % 7) * 0.1f;
  for (int64_t i = 0; i < K * N; i++) B[i] = (float)(i % 5) * 0.1f;
  double *t = malloc((size_t)reps * sizeof(double));
  mdl_gemm(pool, ta, tb, M, N, K, 1.f, A, B, 0.f, C); /* warm: JIT, pages */
  for (int r = 0; r < reps; r++) {
    double t0 = now_ms();
    mdl_gemm(pool, ta, tb, M, N, K, 1.f, A, B, 0.f, C);
    t[r] = now_ms() - t0;
  }
  double ms = median(t, reps);
  free(t);
  mdl_ffree(A), mdl_ffree(B), mdl_ffree(C);
  return 2.0 * (double)M * (double)N * (double)K / (ms * 1e6);
}

static int run_net(const bench_net *bn, mdl_threadpool *pool, int iters, double peak) {
  Caffe__LayerParameter *lp[MAX_LAYERS] = {0};
  mdl_layer *layer[MAX_LAYERS] = {0};
  mdl_tensor blob[MAX_BLOBS];
  mdl_shape shape[MAX_BLOBS];
  float *params = NULL, *pdiff = NULL;
  mdl_workspace ws;
  mdl_workspace_init(&ws);
  mdl_rng rng;
  mdl_rng_init(&rng, 1);
  mdl_error err;
  int rc = 1;
  for (int i = 0; i < MAX_BLOBS; i++) mdl_tensor_init(&blob[i]);
  shape[0] = bn->input;
  shape[1] = (mdl_shape){1, {bn->batch}};
  mdl_exec_ctx ctx = {pool, &ws, &rng};
  int64_t total_params = 0;
  for (int i = 0; i < bn->n_layers; i++) {
    const bench_layer *bl = &bn->layers[i];
    ProtobufCMessage *m;
    char text[1024];
    snprintf(text, sizeof text, "%s top: 't'", bl->text);
    if (mdl_text_parse(text, strlen(text), bn->name, &caffe__layer_parameter__descriptor, &m, &err))
      goto fail;
    lp[i] = (Caffe__LayerParameter *)m;
    mdl_shape bs[2];
    for (int k = 0; k < bl->n_bottom; k++) bs[k] = shape[bl->bottom[k]];
    if (mdl_layer_new(mdl_cpu_backend(), lp[i], CAFFE__PHASE__TRAIN, bl->n_bottom, bs, &ctx,
                      &layer[i], &err))
      goto fail;
    if (bl->top >= 0) shape[bl->top] = layer[i]->top_shape[0];
    total_params += mdl_layer_param_count(layer[i]);
  }
  params = mdl_falloc(total_params);
  pdiff = mdl_falloc(total_params);
  int64_t off = 0;
  for (int i = 0; i < bn->n_layers; i++) {
    mdl_layer_bind_params(layer[i], params + off, pdiff + off);
    off += mdl_layer_param_count(layer[i]);
    if (mdl_layer_init_params(layer[i], &rng, &err)) goto fail;
  }
  if (mdl_workspace_commit(&ws, mdl_cpu_backend(), &err)) goto fail;
  int n_blobs = 0;
  for (int i = 0; i < bn->n_layers; i++)
    if (bn->layers[i].top + 1 > n_blobs) n_blobs = bn->layers[i].top + 1;
  for (int b = 0; b < n_blobs; b++)
    if (mdl_tensor_alloc(&blob[b], shape[b].n, shape[b].d, true, &err)) goto fail;
  for (int64_t i = 0; i < blob[0].count; i++) blob[0].data[i] = (float)((i * 7919) % 256) / 256.f;
  for (int64_t i = 0; i < blob[1].count; i++) blob[1].data[i] = (float)(i % bn->classes);

  double *tf = calloc((size_t)(bn->n_layers * iters), sizeof(double));
  double *tb = calloc((size_t)(bn->n_layers * iters), sizeof(double));
  double *tot = calloc((size_t)iters, sizeof(double));
  for (int it = -3; it < iters; it++) { /* 3 warm-up iterations */
    double t_it = now_ms();
    for (int i = 0; i < bn->n_layers; i++) {
      const bench_layer *bl = &bn->layers[i];
      mdl_tensor *bt[2] = {&blob[bl->bottom[0]], bl->n_bottom > 1 ? &blob[bl->bottom[1]] : NULL};
      mdl_tensor *tt[1] = {bl->top >= 0 ? &blob[bl->top] : bt[0]};
      double t0 = now_ms();
      mdl_layer_forward(layer[i], bt, tt);
      if (it >= 0) tf[i * iters + it] = now_ms() - t0;
    }
    memset(pdiff, 0, (size_t)total_params * sizeof(float));
    for (int i = bn->n_layers - 1; i >= 0; i--) {
      const bench_layer *bl = &bn->layers[i];
      mdl_tensor *bt[2] = {&blob[bl->bottom[0]], bl->n_bottom > 1 ? &blob[bl->bottom[1]] : NULL};
      mdl_tensor *tt[1] = {bl->top >= 0 ? &blob[bl->top] : bt[0]};
      bool pd[2] = {bl->needs_bottom_grad, false};
      if (i == bn->n_layers - 1) tt[0]->diff[0] = 1.f; /* loss weight */
      double t0 = now_ms();
      mdl_layer_backward(layer[i], tt, pd, bt);
      if (it >= 0) tb[i * iters + it] = now_ms() - t0;
    }
    if (it >= 0) tot[it] = now_ms() - t_it;
  }
  printf("\n%s, batch %d, %d threads, %d iterations (medians)\n", bn->name, bn->batch,
         mdl_threadpool_size(pool), iters);
  printf("  %-8s %-13s %9s %9s %10s %10s\n", "layer", "type", "fwd ms", "bwd ms", "fwd GF/s",
         "bwd GF/s");
  double fsum = 0, bsum = 0, gemm_ms = 0, gemm_flop = 0;
  for (int i = 0; i < bn->n_layers; i++) {
    double f = median(tf + i * iters, iters), b = median(tb + i * iters, iters);
    fsum += f, bsum += b;
    double fl = layer_flops(layer[i]);
    /* backward: weight gradient, plus data gradient unless it is the first */
    double bfl = fl * (bn->layers[i].needs_bottom_grad ? 2 : 1);
    if (fl > 0) {
      printf("  %-8s %-13s %9.3f %9.3f %10.1f %10.1f\n", layer[i]->name, layer[i]->impl->type, f, b,
             fl / (f * 1e6), bfl / (b * 1e6));
      gemm_ms += f + b;
      gemm_flop += fl + bfl;
    } else {
      printf("  %-8s %-13s %9.3f %9.3f\n", layer[i]->name, layer[i]->impl->type, f, b);
    }
  }
  double it_ms = median(tot, iters);
  printf("  forward %.3f ms, backward %.3f ms, iteration %.3f ms: %.0f images/s\n", fsum, bsum,
         it_ms, bn->batch / (it_ms * 1e-3));
  printf("  conv+ip: %.1f GFLOP/s = %.0f%% of the measured sgemm peak (%.1f GFLOP/s)\n",
         gemm_flop / (gemm_ms * 1e6), 100 * gemm_flop / (gemm_ms * 1e6) / peak, peak);
  free(tf), free(tb), free(tot);
  rc = 0;
  goto done;
fail:
  fprintf(stderr, "bench_layers: %s\n", err.msg);
done:
  for (int i = 0; i < bn->n_layers; i++) {
    mdl_layer_free(layer[i]);
    if (lp[i]) protobuf_c_message_free_unpacked(&lp[i]->base, NULL);
  }
  for (int b = 0; b < MAX_BLOBS; b++) mdl_tensor_release(&blob[b]);
  mdl_ffree(params), mdl_ffree(pdiff);
  mdl_workspace_release(&ws);
  return rc;
}

/* The sgemm comparison behind the library choice: conv/IP shapes of both
 * nets (forward, weight gradient, data gradient as one whole-batch GEMM and
 * as per-image tiles) on one thread. */
static void gemm_table(void) {
  static const struct {
    const char *what;
    int64_t M, N, K;
    bool ta, tb;
  } s[] = {
      {"lenet conv1 fwd, 1 image", 20, 576, 25, false, false},
      {"lenet conv2 fwd, 1 image", 50, 64, 500, false, false},
      {"lenet conv2 fwd, batch 64", 50, 4096, 500, false, false},
      {"lenet conv2 dW, batch 64", 50, 500, 4096, false, true},
      {"lenet conv2 dX, batch 64", 500, 4096, 50, true, false},
      {"lenet ip1 fwd", 64, 500, 800, false, true},
      {"cifar conv2 fwd, 1 image", 32, 256, 800, false, false},
      {"cifar conv2 fwd, batch 100", 32, 25600, 800, false, false},
      {"cifar conv3 fwd, 1 image", 64, 64, 800, false, false},
      {"square 1024", 1024, 1024, 1024, false, false},
  };
  const char *names[] = {"onednn", "openblas"};
  printf("\nsgemm, 1 thread, GFLOP/s (OPENBLAS_CORETYPE=%s)\n",
         getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)");
  printf("  %-30s %10s %10s\n", "shape", names[0], names[1]);
  for (size_t i = 0; i < sizeof s / sizeof *s; i++) {
    double g[2];
    for (int b = 0; b < 2; b++) {
      mdl_gemm_select(names[b]);
      g[b] = gemm_gflops(NULL, s[i].M, s[i].N, s[i].K, s[i].ta, s[i].tb, 9);
    }
    printf("  %-30s %10.1f %10.1f\n", s[i].what, g[0], g[1]);
  }
  mdl_gemm_select("onednn");
}

int main(int argc, char **argv) {
  int threads = 0, iters = 30;
  bool table = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--iterations") && i + 1 < argc)
      iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--gemm"))
      table = true;
    else if (!strcmp(argv[i], "--cpu-time"))
      bench_clock = CLOCK_THREAD_CPUTIME_ID;
    else {
      fprintf(stderr, "usage: bench_layers [--threads T] [--iterations N] [--gemm] [--cpu-time]\n");
      return 2;
    }
  }
  if (iters < 1) iters = 1;
  mdl_threadpool *pool;
  mdl_error err;
  if (mdl_threadpool_new(threads, &pool, &err)) {
    fprintf(stderr, "bench_layers: %s\n", err.msg);
    return 1;
  }
  if (table) gemm_table();
  double peak = gemm_gflops(pool, 1024, 1024, 1024, false, false, 9);
  printf("\nGEMM %s; sgemm 1024^3 peak with %d threads: %.1f GFLOP/s\n", mdl_gemm_backend_name(),
         mdl_threadpool_size(pool), peak);
  int rc = run_net(&lenet, pool, iters, peak);
  if (!rc) rc = run_net(&cifar_quick, pool, iters, peak);
  mdl_threadpool_free(pool);
  return rc;
}
