/* `memdl run`'s CI flags and the hand-over to runtime/ci. See ci_args.h. */
#include "cli/ci_args.h"

#include <stdio.h>
#include <string.h>

#include "common/version.h"
#include "runtime/ci/ci.h"

bool mdl_cli_ci_take(mdl_cli_ci *c, int argc, char **argv, int *i, int *code) {
  const char *a = argv[*i];
  bool has_next = *i + 1 < argc;
  if (!strcmp(a, "--if-changed")) {
    c->if_changed = true;
  } else if (!strcmp(a, "--bless")) {
    c->bless = true;
  } else if (!strcmp(a, "--warm-start")) {
    c->warm_start = true;
  } else if (!strcmp(a, "--curves-png")) {
    c->curves_png = true;
  } else if (!strcmp(a, "--ci")) {
  } else if (!strcmp(a, "--force") && has_next) {
    c->force_reason = argv[++*i];
  } else if (!strcmp(a, "--registry") && has_next) {
    c->registry = argv[++*i];
  } else if (!strcmp(a, "--max-seconds") && has_next) {
    if (!mdl_cli_int("run", a, argv[++*i], 1, 1 << 30, &c->max_seconds)) *code = 2;
  } else {
    return false;
  }
  c->any = true;
  return true;
}

bool mdl_cli_ci_wanted(const mdl_cli_ci *c, const mdl_job *job) {
  return c->any || job->job->ci != NULL;
}

int mdl_cli_ci_run(const mdl_cli_ci *c, const mdl_cli_args *a, const mdl_job *job,
                   const char *weights, bool resume, const char *resume_path,
                   const struct mdl_driver_opts *dist, const char *out_dir) {
  const char *why = NULL;
  if (resume && (weights || c->warm_start))
    why = "--resume continues a run from its snapshot: drop --weights and --warm-start";
  else if (c->force_reason && !c->bless)
    why = "--force REASON goes with --bless";
  if (why) {
    fprintf(stderr, "memdl run: %s\n", why);
    return 2;
  }
  mdl_ci_opts o = {.weights = weights,
                   .if_changed = c->if_changed,
                   .bless = c->bless,
                   .force_reason = c->force_reason,
                   .warm_start = c->warm_start,
                   .curves_png = c->curves_png,
                   .resume = resume,
                   .resume_path = resume_path,
                   .dist = dist,
                   .max_seconds = c->max_seconds,
                   .threads = a->threads,
                   .device = a->device,
                   .out_dir = out_dir,
                   .registry = c->registry,
                   .version = MDL_VERSION,
                   .sets = a->sets,
                   .n_sets = a->n_sets,
                   .stop = c->stop,
                   .snapshot = c->snapshot,
                   .stop_signal = c->stop_signal};
  mdl_error err;
  mdl_error_clear(&err);
  mdl_status st = mdl_ci_run(job, &o, &err);
  /* gate, data check and budget verdicts were printed with the results */
  if (st == MDL_ERR_STOPPED) return 128 + (c->stop_signal ? *c->stop_signal : SIGTERM);
  if (st != MDL_OK && st != MDL_ERR_ACCEPT && st != MDL_ERR_DATA_CHECK && st != MDL_ERR_BUDGET)
    fprintf(stderr, "memdl run: %s\n", err.msg);
  return mdl_exit_code(st);
}
