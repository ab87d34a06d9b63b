/* memdl run: trains a job (or a Caffe solver file) on one local worker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "compiler/job.h"
#include "runtime/train.h"

static const char USAGE[] =
    "usage: memdl run JOB [--weights FILE.caffemodel] [--resume FILE.solverstate]\n"
    "                     [--set FIELD=VALUE]... [--threads T] [--output DIR]\n"
    "\n"
    "Trains JOB (a memdl job file or a Caffe solver file) on this machine.\n"
    "Progress goes to stderr (a live line on a terminal, a line every `display`\n"
    "iterations otherwise); metrics go to DIR/metrics.jsonl as JSON lines;\n"
    "snapshots are written as <prefix>_iter_N.caffemodel / .solverstate.\n"
    "\n"
    "  --weights FILE   start from these weights (fine-tuning; layers missing\n"
    "                   from FILE keep their fillers)\n"
    "  --resume FILE    continue a run from its .solverstate, bit for bit\n"
    "  --set F=V        override a solver or job field, e.g. --set max_iter=2000\n"
    "  --threads T      CPU threads (default: the job's, else one per core)\n"
    "  --output DIR     where metrics.jsonl and snapshots go (default: a job's\n"
    "                   output.dir; for a Caffe solver, metrics go to ./out and\n"
    "                   snapshots where its snapshot_prefix says)\n"
    "\n"
    "exit status: 0 trained and acceptance met, 1 runtime failure, 2 invalid input,\n"
    "3 trained but acceptance not met\n";

static int exit_code(mdl_status st) {
  switch (st) {
    case MDL_OK:
      return 0;
    case MDL_ERR_INVALID:
      return 2;
    case MDL_ERR_ACCEPT:
      return 3;
    default:
      return 1;
  }
}

int mdl_cmd_run(int argc, char **argv) {
  const char *path = NULL, *weights = NULL, *resume = NULL, *out = NULL;
  int threads = 0;
  const char **sets = calloc((size_t)argc + 1, sizeof *sets);
  int n_sets = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    bool has_next = i + 1 < argc;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(USAGE, stdout);
      free(sets);
      return 0;
    } else if (!strcmp(a, "--weights") && has_next) {
      weights = argv[++i];
    } else if (!strcmp(a, "--resume") && has_next) {
      resume = argv[++i];
    } else if (!strcmp(a, "--set") && has_next) {
      sets[n_sets++] = argv[++i];
    } else if (!strcmp(a, "--threads") && has_next) {
      char *end;
      threads = (int)strtol(argv[++i], &end, 10);
      if (*end || threads < 1) {
        fprintf(stderr, "memdl run: --threads wants a positive number, got \"%s\"\n", argv[i]);
        free(sets);
        return 2;
      }
    } else if (!strcmp(a, "--output") && has_next) {
      out = argv[++i];
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "memdl run: unknown option or missing value: %s\n\n%s", a, USAGE);
      free(sets);
      return 2;
    } else if (!path) {
      path = a;
    } else {
      fprintf(stderr, "memdl run: one JOB at a time (got \"%s\" and \"%s\")\n", path, a);
      free(sets);
      return 2;
    }
  }
  if (!path) {
    fputs(USAGE, stderr);
    free(sets);
    return 2;
  }
  if (weights && resume) {
    fprintf(stderr,
            "memdl run: give --resume to continue a run or --weights to fine-tune, not both\n");
    free(sets);
    return 2;
  }
  mdl_error err;
  mdl_error_clear(&err);
  mdl_job *job = NULL;
  mdl_train *t = NULL;
  mdl_status st = mdl_job_load(path, MDL_KIND_AUTO, &job, &err);
  for (int i = 0; st == MDL_OK && i < n_sets; i++) st = mdl_job_set(job, sets[i], &err);
  if (st == MDL_OK && job->kind == MDL_KIND_NET)
    st = mdl_errorf(&err, MDL_ERR_INVALID,
                    "%s is a net, not a job or solver: memdl run needs a solver (lr_policy, "
                    "max_iter, ...); memdl test and memdl time take nets",
                    path);
  mdl_train_opts o = {.threads = threads, .out_dir = out};
  if (st == MDL_OK) st = mdl_train_new(job, &o, &t, &err);
  if (st == MDL_OK && weights) st = mdl_train_load_weights(t, weights, &err);
  if (st == MDL_OK && resume) st = mdl_train_restore(t, resume, &err);
  mdl_train_summary sum;
  if (st == MDL_OK) st = mdl_train_run(t, 0, &sum, &err);
  if (st != MDL_OK && st != MDL_ERR_ACCEPT) fprintf(stderr, "memdl run: %s\n", err.msg);
  mdl_train_free(t);
  mdl_job_free(job);
  free(sets);
  return exit_code(st);
}
