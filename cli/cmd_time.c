/* memdl time: per-layer forward/backward milliseconds, the solver update
 * and the whole training iteration, like `caffe time`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "common/clock.h"
#include "compiler/job.h"
#include "runtime/engine/net.h"
#include "runtime/train/metrics.h"
#include "runtime/train/progress.h"
#include "runtime/train/train.h"

static const char USAGE[] =
    "usage: memdl time NET|JOB [--iterations N] [--threads T] [--device D]\n"
    "                          [--set FIELD=VALUE]...\n"
    "\n"
    "Times N training iterations (default 50, after 2 untimed warm-up ones) of\n"
    "the TRAIN net on synthetic data of the right shapes: per-layer forward and\n"
    "backward milliseconds, the solver update, the whole iteration. The last\n"
    "stdout line is JSON:\n"
    "  {\"forward_ms\": 4.1, \"backward_ms\": 6.3, \"update_ms\": 0.4,\n"
    "   \"iteration_ms\": 10.8, \"batch\": 64, \"images_per_s\": 5925, ...}\n"
    "  --device D       auto (default: a usable GPU that runs every layer, else\n"
    "                   the CPU, saying why), cpu, cuda or cuda:N (exit 2 when\n"
    "                   that GPU is not usable or lacks a layer); without it a\n"
    "                   Caffe solver's solver_mode/device_id decide\n"
    "exit status: 0 ok, 1 runtime failure, 2 invalid input\n";

static bool net_has_loss(const Caffe__NetParameter *n) {
  for (size_t i = 0; n && i < n->n_layer; i++) {
    const Caffe__LayerParameter *l = n->layer[i];
    if (l->n_loss_weight || (l->type && strstr(l->type, "Loss"))) return true;
  }
  for (size_t i = 0; n && i < n->n_layers; i++)
    if (n->layers[i]->n_loss_weight) return true;
  return false;
}

/* A deploy net has no loss, so nothing would run backward; caffe time
 * times every layer's backward anyway. force_backward does the same here
 * (the outputs' gradients are zero: the work is the same). */
static void force_backward_without_loss(mdl_job *job) {
  Caffe__NetParameter *nets[2] = {job->solver->train_net_param, job->solver->net_param};
  for (int i = 0; i < 2; i++) {
    if (!nets[i] || net_has_loss(nets[i]) || nets[i]->force_backward) continue;
    nets[i]->has_force_backward = 1;
    nets[i]->force_backward = 1;
    fprintf(stderr,
            "memdl time: the net has no loss; timing backward with force_backward (zero "
            "gradients at the outputs), as caffe time does\n");
  }
}

int mdl_cmd_time(int argc, char **argv) {
  mdl_cli_args args;
  mdl_cli_args_init(&args, "time", USAGE, argc);
  static const char *const OPTS[] = {"--iterations"};
  args.opts = OPTS;
  args.n_opts = sizeof OPTS / sizeof *OPTS;
  int iterations = 50, code = -1; /* -1: go on; else the exit code */
  for (int i = 1; i < argc && code < 0; i++) {
    if (!strcmp(argv[i], "--iterations") && i + 1 < argc) {
      if (!mdl_cli_int("time", "--iterations", argv[++i], 1, 1000000000, &iterations)) code = 2;
    } else {
      mdl_cli_args_take(&args, argc, argv, &i, &code);
    }
  }
  if (code < 0 && !mdl_cli_args_have_path(&args)) code = 2;
  if (code >= 0) {
    mdl_cli_args_free(&args);
    return code;
  }
  mdl_error err;
  mdl_error_clear(&err);
  mdl_job *job = NULL;
  mdl_train *t = NULL;
  mdl_status st = mdl_cli_load_job(&args, &job, &err);
  int threads = args.threads;
  mdl_train_opts o = {
      .threads = threads, .no_test = true, .synthetic = true, .device = args.device};
  if (st == MDL_OK) force_backward_without_loss(job);
  if (st == MDL_OK) st = mdl_train_new(job, &o, &t, &err);
  if (st != MDL_OK) {
    fprintf(stderr, "memdl time: %s\n", err.msg);
    mdl_train_free(t);
    mdl_job_free(job);
    mdl_cli_args_free(&args);
    return st == MDL_ERR_INVALID ? 2 : 1;
  }
  mdl_net *net = mdl_train_train_net(t);
  mdl_solver *s = mdl_train_solver(t);
  int nl = mdl_net_n_layers(net);
  double *fwd = calloc((size_t)nl, sizeof(double)), *bwd = calloc((size_t)nl, sizeof(double));
  double upd = 0, total = 0;
  /* A device queues work: each timed span ends when the device is done
   * (a no-op on the CPU). */
  const mdl_backend *be = mdl_net_backend(net);
  for (int it = -2; it < iterations && st == MDL_OK; it++) {
    st = mdl_train_feed_train(t, (uint64_t)(it + 2), &err);
    if (st == MDL_OK) st = mdl_backend_sync(be, &err);
    double t_it = mdl_now();
    mdl_net_clear_param_diffs(net);
    mdl_net_set_iteration(net, (uint64_t)(it + 2));
    for (int i = 0; i < nl && st == MDL_OK; i++) {
      double t0 = mdl_now();
      mdl_net_forward_layer(net, i);
      st = mdl_backend_sync(be, &err);
      if (it >= 0) fwd[i] += mdl_now() - t0;
    }
    for (int i = nl - 1; i >= 0 && st == MDL_OK; i--) {
      double t0 = mdl_now();
      mdl_net_backward_layer(net, i);
      st = mdl_backend_sync(be, &err);
      if (it >= 0) bwd[i] += mdl_now() - t0;
    }
    double t0 = mdl_now();
    mdl_solver_update(s, mdl_net_params(net), mdl_net_param_diffs(net));
    if (st == MDL_OK) st = mdl_backend_sync(be, &err);
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
  mdl_cli_args_free(&args);
  return st == MDL_OK ? 0 : st == MDL_ERR_INVALID ? 2 : 1;
}
