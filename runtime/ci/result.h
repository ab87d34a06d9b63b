/* What a CI run found, as the reports read it: fingerprint and changes,
 * data profiles, final and baseline metrics, every gate's verdict, the
 * model, the exit code. Plain data shared by ci.c (fills it) and report.c,
 * svg.c (write it); no behaviour. */
#ifndef MDL_RUNTIME_CI_RESULT_H
#define MDL_RUNTIME_CI_RESULT_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/ci/fingerprint.h"

typedef enum mdl_ci_gate_kind {
  MDL_CI_GATE_ACCEPT,   /* accept at_least / at_most */
  MDL_CI_GATE_BASELINE, /* accept max_drop / max_relative_drop */
  MDL_CI_GATE_DATA,     /* a data_check */
  MDL_CI_GATE_BUDGET,   /* the run finished within --max-seconds */
  MDL_CI_GATE_SIGNAL,   /* the run was not stopped by SIGINT/SIGTERM */
} mdl_ci_gate_kind;

typedef struct mdl_ci_gate {
  mdl_ci_gate_kind kind;
  char name[256]; /* "accuracy at_least 0.89", "fashion_mnist_train min_records 1000" */
  bool passed;
  bool skipped; /* not evaluated (no final TEST, no baseline profile); counts as passed */
  double value, bound;
  char msg[512];    /* what was measured, and by how much it missed */
  int accept_index; /* which accept block (-1: none), for annotations */
} mdl_ci_gate;

typedef struct mdl_ci_profile {
  char name[128];
  int64_t records, scanned, dropped;
  int num_classes;
  int64_t *class_count; /* num_classes entries, owned */
} mdl_ci_profile;

typedef struct mdl_ci_result {
  const char *job_path;
  const char *job_name;
  mdl_fingerprint fp;
  bool has_blessed;
  char blessed[65];
  char *changes; /* against the blessed run, one a line; NULL when none blessed */
  mdl_ci_profile *profiles;
  int n_profiles;
  int n_metrics; /* final TEST outputs of test net 0 */
  char **metric_name;
  double *metric_value;
  double *baseline_value; /* the blessed model on this run's TEST data; NaN: none */
  /* Top-1 accuracy of each class over the final TEST pass of test net 0,
   * from its Accuracy layer's bottoms (0 classes: no Accuracy layer). */
  int n_classes;
  double *class_accuracy; /* n_classes */
  int64_t *class_samples; /* n_classes: TEST samples of each class */
  mdl_ci_gate *gates;
  int n_gates;
  int iter, max_iter;
  double seconds, max_seconds;
  bool trained;        /* false: stopped before training (data check) */
  bool budget_stopped; /* --max-seconds ran out */
  int stop_signal;     /* SIGINT or SIGTERM stopped it (after a snapshot); 0: none */
  bool tested;         /* a final TEST pass ran */
  char model[1024];    /* the model file in the output folder ("" when none) */
  char model_sha[65];
  char registry[1024];
  bool blessed_now;
  char bless_note[512];    /* "all gates passed", "--force: REASON", or why not blessed */
  const char *const *sets; /* --set values */
  int n_sets;
  int exit_code;
  const char *verdict; /* "passed", "failed", "data check failed", "budget exceeded",
                        * "interrupted" */
} mdl_ci_result;

#endif
