/* Shared argument handling for run, test and time; see args.h. */
#include "cli/args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/train/device.h"

void mdl_cli_args_init(mdl_cli_args *a, const char *cmd, const char *usage, int argc) {
  memset(a, 0, sizeof *a);
  a->cmd = cmd;
  a->usage = usage;
  a->sets = mdl_xcalloc((size_t)argc + 1, sizeof *a->sets);
}

void mdl_cli_args_free(mdl_cli_args *a) {
  free(a->sets);
  a->sets = NULL;
}

bool mdl_cli_int(const char *cmd, const char *flag, const char *value, long min, long max,
                 int *out) {
  char *end;
  long v = strtol(value, &end, 10);
  if (!*value || *end || v < min || v > max) {
    fprintf(stderr, "memdl %s: %s takes a whole number from %ld to %ld, not \"%s\"\n", cmd, flag,
            min, max, value);
    return false;
  }
  *out = (int)v;
  return true;
}

mdl_cli_arg_result mdl_cli_args_take(mdl_cli_args *a, int argc, char **argv, int *i, int *code) {
  /* *code is written only with MDL_ARG_EXIT */
  const char *arg = argv[*i];
  bool has_next = *i + 1 < argc;
  if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
    fputs(a->usage, stdout);
    *code = 0;
    return MDL_ARG_EXIT;
  }
  if (!strcmp(arg, "--set") && has_next) {
    a->sets[a->n_sets++] = argv[++*i];
    return MDL_ARG_TAKEN;
  }
  if (!strcmp(arg, "--threads") && has_next) {
    if (!mdl_cli_int(a->cmd, arg, argv[++*i], 1, 4096, &a->threads)) {
      *code = 2;
      return MDL_ARG_EXIT;
    }
    return MDL_ARG_TAKEN;
  }
  if (!strcmp(arg, "--device") && has_next) {
    a->device = argv[++*i];
    if (!mdl_device_valid(a->device)) {
      fprintf(stderr, "memdl %s: --device takes cpu, cuda, cuda:N or auto, not \"%s\"\n", a->cmd,
              a->device);
      *code = 2;
      return MDL_ARG_EXIT;
    }
    return MDL_ARG_TAKEN;
  }
  if (arg[0] == '-' && arg[1]) {
    fprintf(stderr, "memdl %s: unknown option or missing value: %s\n\n%s", a->cmd, arg, a->usage);
    *code = 2;
    return MDL_ARG_EXIT;
  }
  if (a->path) {
    fprintf(stderr, "memdl %s: one file at a time (got \"%s\" and \"%s\")\n", a->cmd, a->path, arg);
    *code = 2;
    return MDL_ARG_EXIT;
  }
  a->path = arg;
  return MDL_ARG_TAKEN;
}

bool mdl_cli_args_have_path(const mdl_cli_args *a) {
  if (a->path) return true;
  fputs(a->usage, stderr);
  return false;
}

mdl_status mdl_cli_load_job(const mdl_cli_args *a, mdl_job **job, mdl_error *err) {
  mdl_status st = mdl_job_load(a->path, MDL_KIND_AUTO, job, err);
  for (int i = 0; st == MDL_OK && i < a->n_sets; i++) st = mdl_job_set(*job, a->sets[i], err);
  if (st != MDL_OK) {
    mdl_job_free(*job);
    *job = NULL;
  }
  return st;
}
