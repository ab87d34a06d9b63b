/* Issue 9, "the same bits on any core count": training with 1, 2, 3, 4 and 16
 * threads gives bitwise-identical weights, in process on a small net that
 * goes through every threaded CPU kernel with a reduction (im2col and oneDNN
 * convolution, depthwise, PReLU, BatchNorm, LRN, pooling, split GEMMs, the
 * solver), and through the built binary on the Fashion-MNIST LeNet job. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/graph.h"
#include "compiler/textformat.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/cpu/cpu_math.h"
#include "runtime/engine/net.h"
#include "runtime/solver/solver.h"
#include "tests/clitest.h"
#include "tests/graph_test_util.h"
#include "tests/testutil.h"

#define FILL "weight_filler { type: \"xavier\" } bias_filler { type: \"constant\" value: 0.1 }"

/* Batch %d (24: convolution tiles, slices and GEMM pieces split unevenly;
 * 1: a single tile per convolution, on the path that hands its GEMMs to
 * the pool instead of running tiles in parallel):
 * conv1 (3 -> 16) takes oneDNN's direct kernel, conv2 (16 -> 20) im2col +
 * GEMM, conv3 the depthwise kernel; ip1's products are big enough to be
 * split (over 4 MFLOP). */
static const char NET[] =
    "name: \"threads\"\n"
    "layer { name: \"in\" type: \"Input\" top: \"data\" top: \"label\"\n"
    "  input_param { shape { dim: %d dim: 3 dim: 16 dim: 16 } shape { dim: %d } } }\n"
    "layer { name: \"conv1\" type: \"Convolution\" bottom: \"data\" top: \"conv1\"\n"
    "  convolution_param { num_output: 16 kernel_size: 5 pad: 2 " FILL
    " } }\n"
    "layer { name: \"prelu\" type: \"PReLU\" bottom: \"conv1\" top: \"conv1\" }\n"
    "layer { name: \"pool1\" type: \"Pooling\" bottom: \"conv1\" top: \"pool1\"\n"
    "  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
    "layer { name: \"conv2\" type: \"Convolution\" bottom: \"pool1\" top: \"conv2\"\n"
    "  convolution_param { num_output: 20 kernel_size: 3 pad: 1 " FILL
    " } }\n"
    "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"conv2\" top: \"conv2\" }\n"
    "layer { name: \"conv3\" type: \"Convolution\" bottom: \"conv2\" top: \"conv3\"\n"
    "  convolution_param { num_output: 20 group: 20 kernel_size: 3 pad: 1 " FILL
    " } }\n"
    "layer { name: \"lrn\" type: \"LRN\" bottom: \"conv3\" top: \"lrn\" }\n"
    "layer { name: \"pool2\" type: \"Pooling\" bottom: \"lrn\" top: \"pool2\"\n"
    "  pooling_param { pool: AVE kernel_size: 2 stride: 2 } }\n"
    "layer { name: \"ip1\" type: \"InnerProduct\" bottom: \"pool2\" top: \"ip1\"\n"
    "  inner_product_param { num_output: 384 " FILL
    " } }\n"
    "layer { name: \"relu\" type: \"ReLU\" bottom: \"ip1\" top: \"ip1\" }\n"
    "layer { name: \"drop\" type: \"Dropout\" bottom: \"ip1\" top: \"ip1\" }\n"
    "layer { name: \"ip2\" type: \"InnerProduct\" bottom: \"ip1\" top: \"ip2\"\n"
    "  inner_product_param { num_output: 10 " FILL
    " } }\n"
    "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"ip2\" bottom: \"label\" "
    "top: \"loss\" }\n";

#define ITERS 4

static mdl_graph *graph(int batch) {
  char text[sizeof NET + 32];
  snprintf(text, sizeof text, NET, batch, batch);
  return build_text(text, &(build_opts){.phase = CAFFE__PHASE__TRAIN});
}

/* Synthetic batch `iter`: the same values whatever the thread count. */
static void feed(mdl_net *n, int iter) {
  mdl_tensor *data = mdl_net_blob(n, mdl_net_blob_index(n, "data"));
  mdl_tensor *label = mdl_net_blob(n, mdl_net_blob_index(n, "label"));
  for (int64_t i = 0; i < data->count; i++)
    data->data[i] = sinf(0.37f * (float)i + (float)iter) + 0.1f * cosf(0.011f * (float)(i * i));
  for (int64_t i = 0; i < label->count; i++) label->data[i] = (float)((i * 7 + iter) % 10);
}

/* ITERS SGD iterations (momentum, weight decay) on `threads` threads; returns
 * the final weights (caller frees) and their count. */
static float *train(int threads, int batch, size_t *count) {
  mdl_error err;
  mdl_threadpool *pool;
  cr_assert_eq(mdl_threadpool_new(threads, &pool, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(mdl_threadpool_size(pool), threads);
  mdl_graph *g = graph(batch);
  mdl_net_options o = {.backend = mdl_cpu_backend(), .pool = pool, .seed = 7};
  mdl_net *n;
  cr_assert_eq(mdl_net_new(g, &o, &n, &err), MDL_OK, "%s", err.msg);
  Caffe__SolverParameter sp = CAFFE__SOLVER_PARAMETER__INIT;
  sp.lr_policy = "fixed";
  sp.base_lr = 0.05f;
  sp.has_momentum = 1;
  sp.momentum = 0.9f;
  sp.has_weight_decay = 1;
  sp.weight_decay = 5e-4f;
  int nl;
  const mdl_solver_blob *bl = mdl_net_learnable(n, &nl);
  mdl_solver *s;
  cr_assert_eq(mdl_solver_new(mdl_cpu_backend(), &sp, bl, nl, mdl_net_param_count(n), &s, &err),
               MDL_OK, "%s", err.msg);
  for (int it = 0; it < ITERS; it++) {
    mdl_net_set_iteration(n, (uint64_t)it);
    mdl_net_clear_param_diffs(n);
    feed(n, it);
    float loss = mdl_net_forward(n);
    cr_assert(isfinite(loss), "loss %g at iteration %d on %d threads", loss, it, threads);
    mdl_net_backward(n);
    mdl_solver_update(s, mdl_net_params(n), mdl_net_param_diffs(n));
  }
  *count = mdl_net_param_count(n);
  float *w = malloc(*count * sizeof(float));
  mdl_net_params_get(n, w);
  mdl_solver_free(s);
  mdl_net_free(n);
  mdl_graph_free(g);
  mdl_threadpool_free(pool);
  return w;
}

/* The first differing weight, or -1. */
static long first_diff(const float *a, const float *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (memcmp(&a[i], &b[i], sizeof(float)) != 0) return (long)i;
  return -1;
}

static void same_bits_on_any_thread_count(int batch) {
  static const int counts[] = {2, 3, 4, 16}; /* 16: more threads than chunks */
  size_t n1;
  float *w1 = train(1, batch, &n1);
  /* training moved the weights from where the same seed starts them */
  mdl_graph *g = graph(batch);
  mdl_net_options o = {.backend = mdl_cpu_backend(), .seed = 7};
  mdl_net *fresh;
  mdl_error err;
  cr_assert_eq(mdl_net_new(g, &o, &fresh, &err), MDL_OK, "%s", err.msg);
  float *w0 = malloc(n1 * sizeof(float));
  mdl_net_params_get(fresh, w0);
  size_t moved = 0;
  for (size_t i = 0; i < n1; i++) {
    cr_assert(isfinite(w1[i]), "weight %zu is %g", i, w1[i]);
    moved += w0[i] != w1[i];
  }
  cr_assert(moved > n1 / 2, "only %zu of %zu weights changed", moved, n1);
  for (size_t k = 0; k < sizeof counts / sizeof *counts; k++) {
    size_t nt;
    float *wt = train(counts[k], batch, &nt);
    cr_assert_eq(nt, n1);
    long d = first_diff(w1, wt, n1);
    cr_assert(d < 0, "%d threads: weight %ld is %.9g, 1 thread gives %.9g", counts[k], d,
              d < 0 ? 0.0 : (double)wt[d], d < 0 ? 0.0 : (double)w1[d]);
    free(wt);
  }
  free(w0);
  free(w1);
  mdl_net_free(fresh);
  mdl_graph_free(g);
}

Test(threads, small_net_same_bits_on_1_to_16_threads) {
  same_bits_on_any_thread_count(24);
}

Test(threads, batch_of_one_same_bits_on_1_to_16_threads) {
  same_bits_on_any_thread_count(1);
}

/* Every convolution on im2col + GEMM (oneDNN's direct kernel off). */
Test(threads, same_bits_with_im2col_convolution) {
  setenv("MDL_CONV", "im2col", 1);
  same_bits_on_any_thread_count(24);
  same_bits_on_any_thread_count(1);
}

/* OpenBLAS instead of oneDNN's sgemm for the split GEMMs. */
Test(threads, same_bits_with_openblas_gemm) {
  cr_assert(mdl_gemm_select("openblas"));
  same_bits_on_any_thread_count(24);
}

/* The end-to-end check: the job's .caffemodel after 50 iterations on
 * 1 and on 2 threads (and 3), byte for byte. */
Test(threads, lenet_job_same_caffemodel_on_1_2_3_threads) {
  const char *threads[] = {"1", "2", "3"};
  char *model[3];
  size_t len[3];
  for (int k = 0; k < 3; k++) {
    char name[32], path[700];
    snprintf(name, sizeof name, "threads_t%s", threads[k]);
    const char *out = tu_scratch_path(name);
    const char *run[] = {"run",       "jobs/fashion_mnist/job.prototxt",
                         "--set",     "max_iter=50",
                         "--set",     "snapshot=0",
                         "--set",     "test_interval=1000",
                         "--output",  out,
                         "--threads", threads[k],
                         NULL};
    mdl_run_result r = mdl_run_memdl(run, 300);
    /* exit 3: 50 iterations do not meet the job's accuracy acceptance */
    cr_assert_eq(r.exit_code, 3, "%s threads, stderr: %s", threads[k], r.err);
    mdl_run_result_free(&r);
    snprintf(path, sizeof path, "%s/lenet_iter_50.caffemodel", out);
    model[k] = tu_read(path, &len[k]);
    cr_assert(len[k] > 100000, "%s: %zu bytes", path, len[k]);
    tu_rm_rf(out);
  }
  for (int k = 1; k < 3; k++) {
    cr_assert_eq(len[k], len[0]);
    cr_assert(memcmp(model[k], model[0], len[0]) == 0,
              "the .caffemodel on %s threads differs from 1 thread's", threads[k]);
  }
  for (int k = 0; k < 3; k++) free(model[k]);
}
