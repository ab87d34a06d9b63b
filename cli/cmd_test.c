/* memdl test: runs a job's (or a net's) TEST phase on given weights and
 * prints its scalar outputs as one JSON line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "compiler/job.h"
#include "runtime/train/metrics.h"
#include "runtime/train/train.h"

static const char USAGE[] =
    "usage: memdl test JOB|SOLVER|NET --weights FILE.caffemodel [--iterations N]\n"
    "                  [--set FIELD=VALUE]... [--threads T] [--device D]\n"
    "\n"
    "Runs the TEST phase (the first test net) for N batches (default: the\n"
    "solver's test_iter, else 50) on the weights in FILE. Each scalar output\n"
    "goes to stderr; the last stdout line is JSON with every scalar output by\n"
    "top name plus the number of samples, e.g.\n"
    "  {\"accuracy\": 0.8874, \"loss\": 0.3121, \"samples\": 10000}\n"
    "  --device D       auto (default: a usable GPU that runs every layer, else\n"
    "                   the CPU, saying why), cpu, cuda or cuda:N (exit 2 when\n"
    "                   that GPU is not usable or lacks a layer); without it a\n"
    "                   Caffe solver's solver_mode/device_id decide\n"
    "exit status: 0 ok, 1 runtime failure, 2 invalid input\n";

int mdl_cmd_test(int argc, char **argv) {
  mdl_cli_args args;
  mdl_cli_args_init(&args, "test", USAGE, argc);
  static const char *const OPTS[] = {"--weights", "--iterations"};
  args.opts = OPTS;
  args.n_opts = sizeof OPTS / sizeof *OPTS;
  const char *weights = NULL;
  int iterations = 0, code = -1; /* -1: go on; else the exit code */
  for (int i = 1; i < argc && code < 0; i++) {
    if (!strcmp(argv[i], "--weights") && i + 1 < argc) {
      weights = argv[++i];
    } else if (!strcmp(argv[i], "--iterations") && i + 1 < argc) {
      if (!mdl_cli_int("test", "--iterations", argv[++i], 1, 1000000000, &iterations)) code = 2;
    } else {
      mdl_cli_args_take(&args, argc, argv, &i, &code);
    }
  }
  if (code < 0 && (!args.path || !weights)) {
    fprintf(stderr, "memdl test: %s\n\n%s",
            args.path ? "--weights FILE is required" : "no JOB or NET", USAGE);
    code = 2;
  }
  if (code >= 0) {
    mdl_cli_args_free(&args);
    return code;
  }
  const char *path = args.path;
  int threads = args.threads;
  mdl_error err;
  mdl_error_clear(&err);
  mdl_job *job = NULL;
  mdl_train *t = NULL;
  mdl_status st = mdl_cli_load_job(&args, &job, &err);
  mdl_train_opts o = {.threads = threads, .no_train = true, .device = args.device};
  if (st == MDL_OK) st = mdl_train_new(job, &o, &t, &err);
  if (st == MDL_OK && mdl_train_n_test_nets(t) == 0)
    st = mdl_errorf(&err, MDL_ERR_INVALID, "%s has no TEST net", path);
  if (st == MDL_OK) st = mdl_train_load_weights(t, weights, &err);
  mdl_test_result r;
  if (st == MDL_OK) st = mdl_train_test(t, 0, iterations, &r, &err);
  if (st == MDL_OK) {
    mdl_json j = {0};
    mdl_json_begin(&j);
    for (int k = 0; k < r.n; k++) {
      if (r.weight[k] != 0)
        fprintf(stderr, "%s = %.6g (* %g = %.6g loss)\n", r.name[k], r.value[k], r.weight[k],
                r.value[k] * r.weight[k]);
      else
        fprintf(stderr, "%s = %.6g\n", r.name[k], r.value[k]);
      mdl_json_num(&j, r.name[k], r.value[k]);
    }
    mdl_json_int(&j, "samples", r.samples);
    printf("%s\n", mdl_json_end(&j));
    mdl_json_free(&j);
  } else {
    fprintf(stderr, "memdl test: %s\n", err.msg);
  }
  mdl_train_free(t);
  mdl_job_free(job);
  mdl_cli_args_free(&args);
  return st == MDL_OK ? 0 : st == MDL_ERR_INVALID ? 2 : 1;
}
