/* Training throughput of Caffe nets on the CPU engine: per-layer forward
 * and backward times, the GFLOP/s of convolution and inner-product layers
 * as a fraction of this machine's measured sgemm peak, the solver update,
 * and images/s (median of several rounds). Synthetic data, SGD with
 * momentum as in Caffe's solvers. The last line per net is JSON. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compiler/graph.h"
#include "compiler/textformat.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/cpu/cpu_math.h"
#include "runtime/engine/net.h"
#include "runtime/engine/tensor.h"
#include "runtime/engine/threadpool.h"
#include "runtime/solver/solver.h"

static double mdl_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process, all threads: on a shared machine it moves
 * far less with other processes' load than wall-clock images/s does. */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct gemm_job {
  int64_t n;
  float *a[64], *b[64], *c[64];
} gemm_job;

static void one_gemm(void *arg, int64_t begin, int64_t end, int slot) {
  gemm_job *g = arg;
  for (int64_t i = begin; i < end; i++)
    mdl_gemm(NULL, false, false, g->n, g->n, g->n, 1.0f, g->a[i], g->b[i], 0.0f, g->c[i]);
}

/* The machine's sgemm throughput: the better of one GEMM split over the pool
 * (1024^3) and one single-threaded GEMM per thread side by side (512^3, the
 * way memdl's layers mostly call it). Best of 6 runs each, first discarded:
 * a shared machine only ever makes a run slower. */
static double sgemm_peak(mdl_threadpool *pool, int threads) {
  double best = 0;
  const int64_t n = 1024;
  float *a = mdl_falloc(n * n), *b = mdl_falloc(n * n), *c = mdl_falloc(n * n);
  for (int64_t i = 0; i < n * n; i++) a[i] = b[i] = (float)(i % 13) * 0.01f;
  for (int r = 0; r < 6; r++) {
    double t0 = mdl_now();
    mdl_gemm(pool, false, false, n, n, n, 1.0f, a, b, 0.0f, c);
    double dt = mdl_now() - t0;
    if (r > 0 && 2.0 * n * n * n / dt > best) best = 2.0 * n * n * n / dt;
  }
  mdl_ffree(a);
  mdl_ffree(b);
  mdl_ffree(c);
  gemm_job g = {.n = 512};
  if (threads > 64) threads = 64;
  for (int t = 0; t < threads; t++) {
    g.a[t] = mdl_falloc(g.n * g.n), g.b[t] = mdl_falloc(g.n * g.n), g.c[t] = mdl_falloc(g.n * g.n);
    for (int64_t i = 0; i < g.n * g.n; i++) g.a[t][i] = g.b[t][i] = (float)(i % 13) * 0.01f;
  }
  for (int r = 0; r < 6; r++) {
    double t0 = mdl_now();
    mdl_parallel_tasks(pool, threads, one_gemm, &g);
    double dt = mdl_now() - t0;
    double rate = threads * 2.0 * g.n * g.n * g.n / dt;
    if (r > 0 && rate > best) best = rate;
  }
  for (int t = 0; t < threads; t++) mdl_ffree(g.a[t]), mdl_ffree(g.b[t]), mdl_ffree(g.c[t]);
  return best / 1e9;
}

/* Forward and backward FLOPs of a Convolution or InnerProduct layer (the
 * multiply-adds of its GEMMs), 0 for others. */
static void layer_flops(const mdl_net *net, int i, double *fwd, double *bwd) {
  *fwd = *bwd = 0;
  mdl_layer *l = mdl_net_layer(net, i);
  const char *type = mdl_net_layer_type(net, i);
  if (!l || !l->n_param) return;
  const mdl_graph_layer *gl = &mdl_net_graph(net)->layers[i];
  const mdl_tensor *top = mdl_net_blob(net, gl->top[0]);
  const mdl_tensor *w = &l->param[0];
  double per_out;
  if (!strcmp(type, "Convolution"))
    per_out = (double)w->count / (double)w->d[0];
  else if (!strcmp(type, "InnerProduct"))
    per_out = (double)w->count / (double)w->d[0];
  else
    return;
  *fwd = 2.0 * (double)top->count * per_out;
  bool bottom_grad = gl->propagate_down && gl->propagate_down[0];
  *bwd = *fwd * (bottom_grad ? 2 : 1);
}

static int bench(const char *path, int threads, int iters, int rounds, mdl_threadpool *pool,
                 double peak) {
  Caffe__NetParameter *np;
  mdl_error err;
  if (mdl_text_parse_file(path, &caffe__net_parameter__descriptor, (ProtobufCMessage **)&np,
                          &err) != MDL_OK) {
    fprintf(stderr, "%s\n", err.msg);
    return 2;
  }
  Caffe__NetState state = CAFFE__NET_STATE__INIT;
  state.has_phase = 1;
  state.phase = CAFFE__PHASE__TRAIN;
  mdl_graph *g;
  if (mdl_graph_build(np, &state, path, NULL, NULL, &g, &err) != MDL_OK) {
    fprintf(stderr, "%s\n", err.msg);
    return 2;
  }
  mdl_net_options o = {.backend = mdl_cpu_backend(), .pool = pool, .seed = 1};
  mdl_net *net;
  if (mdl_net_new(g, &o, &net, &err) != MDL_OK) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  Caffe__SolverParameter sp = CAFFE__SOLVER_PARAMETER__INIT;
  sp.lr_policy = "inv";
  sp.base_lr = 0.01f;
  sp.momentum = 0.9f;
  sp.weight_decay = 5e-4f;
  sp.gamma = 1e-4f;
  sp.power = 0.75f;
  int nl;
  const mdl_solver_blob *bl = mdl_net_learnable(net, &nl);
  mdl_solver *s;
  if (mdl_solver_new(mdl_cpu_backend(), &sp, bl, nl, mdl_net_param_count(net), &s, &err) !=
      MDL_OK) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  /* Synthetic batch: data in [0, 1), labels 0..9. */
  mdl_tensor *data = mdl_net_blob(net, mdl_net_blob_index(net, "data"));
  mdl_tensor *label = mdl_net_blob(net, mdl_net_blob_index(net, "label"));
  int n = mdl_net_n_layers(net);
  double *fwd = calloc((size_t)n, sizeof(double)), *bwd = calloc((size_t)n, sizeof(double));
  double upd = 0;
  double *ips = calloc((size_t)rounds, sizeof(double));
  double cpu = 0;
  int64_t batch = data->d[0];
  for (int r = -1; r < rounds; r++) { /* round -1 warms up */
    double t_round = mdl_now(), c_round = cpu_now();
    for (int it = 0; it < iters; it++) {
      for (int64_t i = 0; i < data->count; i++)
        data->data[i] = (float)((i * 2654435761u + (uint64_t)it) % 1000) * 1e-3f;
      for (int64_t i = 0; i < label->count; i++) label->data[i] = (float)((i + it) % 10);
      mdl_net_clear_param_diffs(net);
      for (int i = 0; i < n; i++) {
        double t0 = mdl_now();
        mdl_net_forward_layer(net, i);
        if (r >= 0) fwd[i] += mdl_now() - t0;
      }
      for (int i = n - 1; i >= 0; i--) {
        double t0 = mdl_now();
        mdl_net_backward_layer(net, i);
        if (r >= 0) bwd[i] += mdl_now() - t0;
      }
      double t0 = mdl_now();
      mdl_solver_update(s, mdl_net_params(net), mdl_net_param_diffs(net));
      if (r >= 0) upd += mdl_now() - t0;
    }
    if (r >= 0) ips[r] = (double)batch * iters / (mdl_now() - t_round);
    if (r >= 0) cpu += cpu_now() - c_round;
  }
  qsort(ips, (size_t)rounds, sizeof(double), cmp_double);
  double med = ips[rounds / 2];
  int total_iters = iters * rounds;
  printf("== %s: batch %lld, %d threads, %d x %d iterations ==\n", g->net->name, (long long)batch,
         threads, rounds, iters);
  printf("%-8s %-18s %10s %10s %10s %8s\n", "layer", "type", "fwd ms", "bwd ms", "GFLOP/s",
         "of peak");
  double f_sum = 0, b_sum = 0, gemm_flops = 0, gemm_time = 0;
  for (int i = 0; i < n; i++) {
    double f = fwd[i] * 1e3 / total_iters, b = bwd[i] * 1e3 / total_iters;
    f_sum += f;
    b_sum += b;
    double ff, fb;
    layer_flops(net, i, &ff, &fb);
    char gf[32] = "", pk[32] = "";
    if (ff > 0) {
      double gflops = (ff + fb) / ((f + b) * 1e-3) / 1e9;
      snprintf(gf, sizeof gf, "%.1f", gflops);
      snprintf(pk, sizeof pk, "%.0f%%", 100 * gflops / peak);
      gemm_flops += ff + fb;
      gemm_time += (f + b) * 1e-3;
    }
    printf("%-8s %-18s %10.3f %10.3f %10s %8s\n", mdl_net_layer_name(net, i),
           mdl_net_layer_type(net, i), f, b, gf, pk);
  }
  double u = upd * 1e3 / total_iters;
  mdl_mem_figures mf;
  mdl_net_mem_figures(net, &mf);
  printf(
      "memory: activations+gradients %.1f MiB (%.1f without reuse), workspace %.1f MiB, "
      "parameters+gradients %.1f MiB, layers' kept copies %.1f MiB (%.1f unshared)\n",
      mf.arena / 1048576.0, mf.arena_naive / 1048576.0, mf.workspace / 1048576.0,
      mf.params / 1048576.0, mf.kept / 1048576.0, mf.kept_naive / 1048576.0);
  printf("forward %.3f ms, backward %.3f ms, update %.3f ms; %.0f images/s (median of %d)\n", f_sum,
         b_sum, u, med, rounds);
  printf("conv+ip: %.1f GFLOP/s = %.0f%% of the measured sgemm peak %.1f GFLOP/s\n",
         gemm_flops / gemm_time / 1e9, 100 * gemm_flops / gemm_time / 1e9 / peak, peak);
  printf(
      "{\"net\": \"%s\", \"batch\": %lld, \"threads\": %d, \"images_per_s\": %.1f, "
      "\"forward_ms\": %.3f, \"backward_ms\": %.3f, \"update_ms\": %.3f, "
      "\"conv_ip_gflops\": %.1f, \"sgemm_peak_gflops\": %.1f, \"cpu_ms_per_iter\": %.3f}\n",
      g->net->name, (long long)batch, threads, med, f_sum, b_sum, u, gemm_flops / gemm_time / 1e9,
      peak, cpu * 1e3 / total_iters);
  fflush(stdout);
  free(fwd);
  free(bwd);
  free(ips);
  mdl_solver_free(s);
  mdl_net_free(net);
  mdl_graph_free(g);
  caffe__net_parameter__free_unpacked(np, NULL);
  return 0;
}

int main(int argc, char **argv) {
  int threads = 0, iters = 20, rounds = 5;
  const char *nets[16];
  int n_nets = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--iterations") && i + 1 < argc)
      iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (argv[i][0] != '-' && n_nets < 16)
      nets[n_nets++] = argv[i];
    else {
      fprintf(stderr,
              "usage: bench_train [--threads T] [--iterations N] [--rounds R] NET.prototxt...\n");
      return 2;
    }
  }
  if (rounds < 1) rounds = 1;
  if (iters < 1) iters = 1;
  mdl_threadpool *pool;
  mdl_error err;
  if (mdl_threadpool_new(threads, &pool, &err) != MDL_OK) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  threads = mdl_threadpool_size(pool);
  double peak = sgemm_peak(pool, threads);
  printf(
      "sgemm peak (%s, %d threads, best of one split 1024^3 GEMM and one 512^3 GEMM per "
      "thread): %.1f GFLOP/s\n",
      mdl_gemm_backend_name(), threads, peak);
  int rc = 0;
  for (int i = 0; i < n_nets && rc == 0; i++)
    rc = bench(nets[i], threads, iters, rounds, pool, peak);
  mdl_threadpool_free(pool);
  return rc;
}
