/* memdl time: per-layer forward/backward milliseconds, the solver update
 * and the whole training iteration, like `caffe time`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "compiler/job.h"
#include "runtime/metrics.h"
#include "runtime/progress.h"
#include "runtime/train.h"

static const char USAGE[] =
    "usage: memdl time NET|JOB [--iterations N] [--threads T] [--set FIELD=VALUE]...\n"
    "\n"
    "Times N training iterations (default 50, after 2 untimed warm-up ones) of\n"
    "the TRAIN net on synthetic data of the right shapes: per-layer forward and\n"
    "backward milliseconds, the solver update, the whole iteration. The last\n"
    "stdout line is JSON:\n"
    "  {\"forward_ms\": 4.1, \"backward_ms\": 6.3, \"update_ms\": 0.4,\n"
    "   \"iteration_ms\": 10.8, \"batch\": 64, \"images_per_s\": 5925, ...}\n"
    "exit status: 0 ok, 1 runtime failure, 2 invalid input\n";

int mdl_cmd_time(int argc, char **argv) {
  const char *path = NULL;
  int iterations = 50, threads = 0;
  const char **sets = calloc((size_t)argc + 1, sizeof *sets);
  int n_sets = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    bool has_next = i + 1 < argc;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(USAGE, stdout);
      free(sets);
      return 0;
    } else if ((!strcmp(a, "--iterations") || !strcmp(a, "--threads")) && has_next) {
      char *end;
      long v = strtol(argv[++i], &end, 10);
      if (*end || v < 1 || v > 1000000000) {
        fprintf(stderr, "memdl time: %s wants a positive number, got \"%s\"\n", a, argv[i]);
        free(sets);
        return 2;
      }
      if (a[2] == 'i')
        iterations = (int)v;
      else
        threads = (int)v;
    } else if (!strcmp(a, "--set") && has_next) {
      sets[n_sets++] = argv[++i];
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "memdl time: unknown option or missing value: %s\n\n%s", a, USAGE);
      free(sets);
      return 2;
    } else if (!path) {
      path = a;
    } else {
      fprintf(stderr, "memdl time: one NET or JOB at a time\n");
      free(sets);
      return 2;
    }
  }
  if (!path) {
    fputs(USAGE, stderr);
    free(sets);
    return 2;
  }
  mdl_error err;
  mdl_error_clear(&err);
  mdl_job *job = NULL;
  mdl_train *t = NULL;
  mdl_status st = mdl_job_load(path, MDL_KIND_AUTO, &job, &err);
  for (int i = 0; st == MDL_OK && i < n_sets; i++) st = mdl_job_set(job, sets[i], &err);
  mdl_train_opts o = {.threads = threads, .no_test = true, .synthetic = true};
  if (st == MDL_OK) st = mdl_train_new(job, &o, &t, &err);
  if (st != MDL_OK) {
    fprintf(stderr, "memdl time: %s\n", err.msg);
    mdl_train_free(t);
    mdl_job_free(job);
    free(sets);
    return st == MDL_ERR_INVALID ? 2 : 1;
  }
  mdl_net *net = mdl_train_train_net(t);
  mdl_solver *s = mdl_train_solver(t);
  int nl = mdl_net_n_layers(net);
  double *fwd = calloc((size_t)nl, sizeof(double)), *bwd = calloc((size_t)nl, sizeof(double));
  double upd = 0, total = 0;
  for (int it = -2; it < iterations && st == MDL_OK; it++) {
    st = mdl_train_feed_train(t, (uint64_t)(it + 2), &err);
    double t_it = mdl_now();
    mdl_net_clear_param_diffs(net);
    mdl_net_set_iteration(net, (uint64_t)(it + 2));
    for (int i = 0; i < nl; i++) {
      double t0 = mdl_now();
      mdl_net_forward_layer(net, i);
      if (it >= 0) fwd[i] += mdl_now() - t0;
    }
    for (int i = nl - 1; i >= 0; i--) {
      double t0 = mdl_now();
      mdl_net_backward_layer(net, i);
      if (it >= 0) bwd[i] += mdl_now() - t0;
    }
    double t0 = mdl_now();
    mdl_solver_update(s, mdl_net_params(net), mdl_net_param_diffs(net));
    if (it >= 0) {
      upd += mdl_now() - t0;
      total += mdl_now() - t_it;
    }
  }
  if (st != MDL_OK) {
    fprintf(stderr, "memdl time: %s\n", err.msg);
  } else {
    double f_sum = 0, b_sum = 0;
    printf("%-16s %-16s %12s %12s\n", "layer", "type", "forward ms", "backward ms");
    for (int i = 0; i < nl; i++) {
      double f = fwd[i] * 1e3 / iterations, b = bwd[i] * 1e3 / iterations;
      f_sum += f;
      b_sum += b;
      if (mdl_net_layer_runs_backward(net, i))
        printf("%-16s %-16s %12.3f %12.3f\n", mdl_net_layer_name(net, i),
               mdl_net_layer_type(net, i), f, b);
      else
        printf("%-16s %-16s %12.3f %12s\n", mdl_net_layer_name(net, i), mdl_net_layer_type(net, i),
               f, "-");
    }
    double u = upd * 1e3 / iterations, it_ms = total * 1e3 / iterations;
    int64_t batch = mdl_net_batch_size(net);
    printf(
        "forward %.3f ms, backward %.3f ms, update %.3f ms, iteration %.3f ms "
        "(%d iterations, %d threads)\n",
        f_sum, b_sum, u, it_ms, iterations, mdl_train_threads(t));
    mdl_json j = {0};
    mdl_json_begin(&j);
    mdl_json_num(&j, "forward_ms", f_sum);
    mdl_json_num(&j, "backward_ms", b_sum);
    mdl_json_num(&j, "update_ms", u);
    mdl_json_num(&j, "iteration_ms", it_ms);
    mdl_json_int(&j, "batch", batch);
    mdl_json_num(&j, "images_per_s", it_ms > 0 ? batch * 1e3 / it_ms : 0);
    mdl_json_int(&j, "threads", mdl_train_threads(t));
    printf("%s\n", mdl_json_end(&j));
    mdl_json_free(&j);
  }
  free(fwd);
  free(bwd);
  mdl_train_free(t);
  mdl_job_free(job);
  free(sets);
  return st == MDL_OK ? 0 : st == MDL_ERR_INVALID ? 2 : 1;
}
