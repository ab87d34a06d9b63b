/* memdl test: runs a job's (or a net's) TEST phase on given weights and
 * prints its scalar outputs as one JSON line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "compiler/job.h"
#include "runtime/metrics.h"
#include "runtime/train.h"

static const char USAGE[] =
    "usage: memdl test JOB|SOLVER|NET --weights FILE.caffemodel [--iterations N]\n"
    "                  [--set FIELD=VALUE]... [--threads T]\n"
    "\n"
    "Runs the TEST phase (the first test net) for N batches (default: the\n"
    "solver's test_iter, else 50) on the weights in FILE. Each scalar output\n"
    "goes to stderr; the last stdout line is JSON with every scalar output by\n"
    "top name plus the number of samples, e.g.\n"
    "  {\"accuracy\": 0.8874, \"loss\": 0.3121, \"samples\": 10000}\n"
    "exit status: 0 ok, 1 runtime failure, 2 invalid input\n";

int mdl_cmd_test(int argc, char **argv) {
  const char *path = NULL, *weights = NULL;
  int iterations = 0, threads = 0;
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
    } else if ((!strcmp(a, "--iterations") || !strcmp(a, "--threads")) && has_next) {
      char *end;
      long v = strtol(argv[++i], &end, 10);
      if (*end || v < 1 || v > 1000000000) {
        fprintf(stderr, "memdl test: %s wants a positive number, got \"%s\"\n", a, argv[i]);
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
      fprintf(stderr, "memdl test: unknown option or missing value: %s\n\n%s", a, USAGE);
      free(sets);
      return 2;
    } else if (!path) {
      path = a;
    } else {
      fprintf(stderr, "memdl test: one JOB or NET at a time\n");
      free(sets);
      return 2;
    }
  }
  if (!path || !weights) {
    fprintf(stderr, "memdl test: %s\n\n%s", path ? "--weights FILE is required" : "no JOB or NET",
            USAGE);
    free(sets);
    return 2;
  }
  mdl_error err;
  mdl_error_clear(&err);
  mdl_job *job = NULL;
  mdl_train *t = NULL;
  mdl_status st = mdl_job_load(path, MDL_KIND_AUTO, &job, &err);
  for (int i = 0; st == MDL_OK && i < n_sets; i++) st = mdl_job_set(job, sets[i], &err);
  mdl_train_opts o = {.threads = threads, .no_train = true};
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
  free(sets);
  return st == MDL_OK ? 0 : st == MDL_ERR_INVALID ? 2 : 1;
}
