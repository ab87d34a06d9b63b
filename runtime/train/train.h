/* Training and evaluation of one job on one local worker: the TRAIN net and
 * its TEST nets (sharing weights and one activation arena), their data fed
 * from the pipeline's batchers, the solver, and Caffe's loop (tests at
 * test_interval, display, snapshots, iter_size, average_loss, max_iter),
 * metrics as JSON lines, acceptance criteria. Owns the loop and its
 * bookkeeping; not the maths (net.h, solver.h) or the file formats
 * (caffemodel.h). */
#ifndef MDL_RUNTIME_TRAIN_H
#define MDL_RUNTIME_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "compiler/job.h"
#include "runtime/engine/net.h"
#include "runtime/solver/solver.h"

typedef struct mdl_train mdl_train;

typedef struct mdl_train_opts {
  int threads;         /* 0: the job's, else one per core */
  bool no_train;       /* build no TRAIN net and no solver (memdl test) */
  bool no_test;        /* build no TEST nets (memdl time) */
  bool synthetic;      /* no data sets: data layers get random values (memdl time) */
  const char *out_dir; /* NULL: the job's output dir */
  FILE *log;           /* progress and messages; NULL: stderr */
  /* Set asynchronously (signal handlers) and read between iterations:
   * stop: finish this iteration, snapshot, write the closing record and
   * return (summary.stopped); snapshot: snapshot after this iteration and
   * go on (cleared when done). NULL: never. */
  volatile sig_atomic_t *stop, *snapshot;
  /* For the metrics' start record: the --set overrides and the version. */
  const char *const *overrides;
  int n_overrides;
  const char *version;
  /* cpu, cuda, cuda:N or auto (runtime/train/device.h); NULL: the solver's
   * solver_mode and device_id (GPU: that GPU when usable, else the CPU,
   * said in the log; CPU: the CPU), auto when it names none. */
  const char *device;
  /* ci budget: after this many seconds of the loop, finish the iteration,
   * snapshot, and test only when the last TEST pass's time is left (0: no
   * limit). */
  double max_seconds;
} mdl_train_opts;

/* Compiles the job, loads its data sets and builds the nets (fillers from
 * the solver's random_seed, or a clock seed when it is negative) and the
 * solver. job is borrowed and must outlive the trainer. On success *out is
 * the caller's (mdl_train_free); on failure *out is NULL. */
mdl_status mdl_train_new(const mdl_job *job, const mdl_train_opts *opts, mdl_train **out,
                         mdl_error *err);

void mdl_train_free(mdl_train *t);

/* Where a run of job writes (single-worker and distributed alike):
 * *out_dir (metrics.jsonl; out_opt, else the job's output.dir), *prefix
 * (<prefix>_iter_N.caffemodel/.solverstate: in *out_dir for a job file or
 * with out_opt, else where a Caffe solver's snapshot_prefix says) and the
 * iterations between snapshots (output.snapshot, else sp's). *out_dir and
 * *prefix are the caller's (free). */
void mdl_train_output_paths(const mdl_job *job, const Caffe__SolverParameter *sp,
                            const char *out_opt, char **out_dir, char **prefix,
                            int *snapshot_every);

/* Initialises weights from a .caffemodel by layer name (fine-tuning). */
mdl_status mdl_train_load_weights(mdl_train *t, const char *path, mdl_error *err);

/* Continues from a .solverstate: its iteration, history, RNG seed and the
 * weights file it names. */
mdl_status mdl_train_restore(mdl_train *t, const char *path, mdl_error *err);

typedef struct mdl_train_summary {
  int iter;            /* iteration reached */
  double seconds;      /* wall time of the loop */
  double images_per_s; /* training throughput (tests excluded) */
  int n_outputs;       /* final TEST outputs of test net 0 */
  char **output_name;  /* owned by the trainer */
  double *output_value;
  bool accepted;        /* every acceptance criterion held (true when none) */
  char accept_msg[512]; /* what failed and by how much */
  char last_snapshot[512];
  bool stopped;        /* opts.stop ended the run early (after a snapshot) */
  bool budget_stopped; /* ci budget: max_seconds ran out before max_iter */
  bool budget_tested;  /* ... and the final TEST pass still ran */
} mdl_train_summary;

/* Runs Caffe's training loop from the current iteration to max_iter (or
 * only `iters` more iterations when iters > 0, for tests). MDL_ERR_ACCEPT
 * when training finished but an acceptance criterion failed (summary says
 * by how much); other errors for I/O failures. A stop request (opts.stop)
 * ends it early with MDL_OK and summary->stopped, after a snapshot and a
 * closing "stopped" metrics record; no final test, no acceptance. */
mdl_status mdl_train_run(mdl_train *t, int iters, mdl_train_summary *summary, mdl_error *err);

typedef struct mdl_test_result {
  int n;           /* scalar outputs */
  char **name;     /* owned by the trainer, valid until the next call */
  double *value;   /* mean over iterations */
  double *weight;  /* loss weight of each output (0: not a loss) */
  int64_t samples; /* iterations x batch */
} mdl_test_result;

/* The newest <snapshot_prefix>_iter_N.solverstate (largest N), for
 * `--resume` without a file. *path is the caller's; MDL_ERR_INVALID naming
 * the folder and prefix when there is none. */
mdl_status mdl_train_newest_snapshot(const mdl_train *t, char **path, mdl_error *err);

/* One pass of test net `index` over `iterations` batches (0: the solver's
 * test_iter, else 50 as `caffe test`), data from the start of its set. */
mdl_status mdl_train_test(mdl_train *t, int index, int iterations, mdl_test_result *res,
                          mdl_error *err);

/* mdl_train_test calling each(ctx, net) after every batch's forward pass,
 * for callers that read more than the scalar outputs (per-class accuracy
 * in runtime/ci). */
mdl_status mdl_train_test_each(mdl_train *t, int index, int iterations,
                               void (*each)(void *ctx, const mdl_net *net), void *ctx,
                               mdl_test_result *res, mdl_error *err);

/* Fills every data layer's tops of the TRAIN net with batch `k` (real data
 * or synthetic). */
mdl_status mdl_train_feed_train(mdl_train *t, uint64_t k, mdl_error *err);

mdl_net *mdl_train_train_net(const mdl_train *t); /* NULL with no_train */
mdl_net *mdl_train_test_net(const mdl_train *t, int index);
int mdl_train_n_test_nets(const mdl_train *t);
mdl_solver *mdl_train_solver(const mdl_train *t);
int mdl_train_threads(const mdl_train *t);
uint64_t mdl_train_seed(const mdl_train *t);
const char *mdl_train_out_dir(const mdl_train *t);
/* Bytes of activation memory planned, and what keeping every blob apart
 * would take. */
void mdl_train_memory(const mdl_train *t, size_t *planned, size_t *naive);

/* The data sets loaded for the nets (for data checks before training),
 * owned by the trainer; i from 0 to mdl_train_n_datasets - 1. */
struct mdl_dataset;
int mdl_train_n_datasets(const mdl_train *t);
const struct mdl_dataset *mdl_train_dataset(const mdl_train *t, int i);

#endif
