/* What a training run reports, single-worker (train.c) or distributed
 * (runtime/dist/driver.c): the same progress lines and the same
 * metrics.jsonl records with the same keys, written by one set of functions
 * so the two cannot drift apart. Owns the wording and the keys; not when a
 * record is due (the loops decide) nor the file (metrics.h). */
#ifndef MDL_RUNTIME_REPORT_H
#define MDL_RUNTIME_REPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/train/metrics.h"
#include "runtime/train/progress.h"

/* The "start" record: what runs, from where, with what. */
typedef struct mdl_report_start {
  const char *version, *job;
  uint64_t plan_fingerprint, seed;
  int threads, workers, iter, max_iter;
  bool resumed;
  const char *const *overrides;
  int n_overrides;
} mdl_report_start;
void mdl_report_start_record(mdl_metrics *m, const mdl_report_start *s);

/* A display point: "iter I/N  loss L  lr R  X img/s  ETA T" (rate and ETA
 * from p, left out at the run's first iteration `start`) and its "train"
 * record. */
void mdl_report_train(mdl_progress *p, mdl_metrics *m, int iter, int start, double loss, float lr);

/* The "test" record of one TEST pass of test net `net`: scalar outputs,
 * and the pass's wall seconds (so that tools can tell training time from
 * testing time). */
void mdl_report_test_record(mdl_metrics *m, int iter, int net, const char *const *names,
                            const double *values, int n, int64_t samples, double seconds);

/* "snapshot MODEL, STATE" and its record. */
void mdl_report_snapshot(mdl_progress *p, mdl_metrics *m, int iter, const char *model,
                         const char *state);

/* A run stopped on request after its snapshot: the closing line (saying
 * how to continue: `memdl run JOB --resume [--output DIR] [extra]`) and the
 * "stopped" record. */
void mdl_report_stopped(mdl_progress *p, mdl_metrics *m, int iter, int max_iter, double seconds,
                        const char *snapshot, const char *job, const char *out_dir,
                        const char *extra);

/* The "done" record: final TEST outputs of test net 0, acceptance, and for
 * distributed runs the share of worker time spent waiting (< 0: none). */
typedef struct mdl_report_done {
  int iter;
  double seconds, images_per_s;
  const char *const *names;
  const double *values;
  int n;
  bool accepted;
  const char *stopped; /* NULL, or why the run ended early ("budget") */
  double wait_share;
} mdl_report_done;
void mdl_report_done_record(mdl_metrics *m, const mdl_report_done *d);

#endif
