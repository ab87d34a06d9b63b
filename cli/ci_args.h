/* The CI flags of `memdl run` (--if-changed, --bless, --force REASON,
 * --warm-start, --max-seconds N, --registry DIR, --ci) and handing such a
 * run to runtime/ci. Kept apart from cmd_run.c so that file changes little. */
#ifndef MDL_CLI_CI_ARGS_H
#define MDL_CLI_CI_ARGS_H

#include <signal.h>
#include <stdbool.h>

#include "cli/args.h"
#include "compiler/job.h"

struct mdl_driver_opts; /* runtime/dist/driver.h */

typedef struct mdl_cli_ci {
  bool any; /* a CI flag was given */
  bool if_changed, bless, warm_start, curves_png;
  const char *force_reason;
  const char *registry;
  int max_seconds;
  /* cmd_run.c's signal flags (see mdl_ci_opts); NULL: none */
  volatile sig_atomic_t *stop, *snapshot, *stop_signal;
} mdl_cli_ci;

/* The usage lines of the CI flags, for `memdl run --help`. */
#define MDL_CLI_CI_USAGE                                                               \
  "CI retraining (any of these, or a `ci` block in the job, selects CI mode: a\n"      \
  "registry of runs by fingerprint, gates against the blessed model, and\n"            \
  "run.json, junit.xml, metrics.txt, report.md, curves.svg in DIR):\n"                 \
  "  --if-changed     print \"up to date\" and exit with the stored run's code when\n" \
  "                   a run with the same fingerprint is in the registry\n"            \
  "  --bless          record the model as BLESSED when every gate passes\n"            \
  "  --force REASON   with --bless: bless despite failed gates, recording REASON\n"    \
  "  --warm-start     start from the blessed model\n"                                  \
  "  --max-seconds N  stop cleanly after N s (snapshot, TEST if time is left,\n"       \
  "                   reports), exit 5 with the model saved and not blessed\n"         \
  "  --registry DIR   the registry (default: the job's ci.registry, else\n"            \
  "                   registry/ beside the job)\n"                                     \
  "  --curves-png     also draw curves.png (memdl rasterises it itself)\n"             \
  "  --ci             CI mode with none of the above\n"

/* When argv[*i] is a CI flag: takes it and its value and returns true
 * (*code = 2 after printing the error when its value is bad). */
bool mdl_cli_ci_take(mdl_cli_ci *c, int argc, char **argv, int *i, int *code);

/* CI mode: a CI flag was given, or the job has a `ci` block. */
bool mdl_cli_ci_wanted(const mdl_cli_ci *c, const mdl_job *job);

/* Runs job in CI mode, on one worker or (dist not NULL) through the driver
 * with these options; returns the exit code (0-5, or 128 + signal when
 * SIGINT/SIGTERM stopped it). resume: --resume was given, with resume_path
 * or (NULL) the newest snapshot. */
int mdl_cli_ci_run(const mdl_cli_ci *c, const mdl_cli_args *a, const mdl_job *job,
                   const char *weights, bool resume, const char *resume_path,
                   const struct mdl_driver_opts *dist, const char *out_dir);

#endif
