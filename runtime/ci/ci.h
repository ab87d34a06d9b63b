/* `memdl run` in CI mode, on one worker or through the driver on several:
 * fingerprint the run and skip it
 * when an identical one is in the registry (--if-changed), check the data
 * before training, train within a budget, re-evaluate the blessed model on
 * this run's TEST data, judge every gate, bless when asked and deserved,
 * and write every report. Owns the sequence and the verdict; not the
 * training loop (runtime/train) or the file formats (report.h, svg.h). */
#ifndef MDL_RUNTIME_CI_H
#define MDL_RUNTIME_CI_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/error.h"
#include "compiler/job.h"

struct mdl_driver_opts; /* runtime/dist/driver.h */

typedef struct mdl_ci_opts {
  const char *weights;      /* --weights FILE, or NULL */
  bool if_changed;          /* skip when runs/<fingerprint>/ holds a result */
  bool bless;               /* record the model as BLESSED when every gate passes */
  const char *force_reason; /* with bless: bless despite failed gates, recording this */
  bool warm_start;          /* start from the blessed model */
  bool curves_png;          /* also curves.png (or the job's ci.curves_png) */
  bool resume;              /* --resume: continue a stopped run from a snapshot */
  /* train on the driver's workers (--workers, the job's cluster block or a
   * Slurm/MPI launch) with these options; NULL: one worker, in process */
  const struct mdl_driver_opts *dist;
  const char *resume_path; /* its .solverstate; NULL: the newest of the job's prefix */
  double max_seconds;      /* 0: the job's ci.max_seconds */
  int threads;             /* 0: the job's, else one per core */
  const char *device;      /* --device (cpu, cuda[:N], auto); NULL: auto */
  const char *out_dir;     /* NULL: the job's output dir */
  const char *registry;    /* NULL: the job's ci.registry */
  const char *version;     /* memdl's version, part of the fingerprint */
  const char *const *sets; /* the --set values, for the record */
  int n_sets;
  /* the run's signal flags (cli/cmd_run.c), as mdl_train_opts takes them:
   * a stop finishes the iteration, snapshots and still writes every report;
   * stop_signal is the signal that asked (SIGINT, SIGTERM), for the exit
   * code 128 + signal. NULL: none. */
  volatile sig_atomic_t *stop, *snapshot, *stop_signal;
  FILE *out; /* "up to date" and the closing verdict; NULL: stdout */
  FILE *log; /* progress; NULL: stderr */
} mdl_ci_opts;

/* Runs job (borrowed) in CI mode. Returns MDL_OK (every gate passed),
 * MDL_ERR_ACCEPT (a gate failed), MDL_ERR_DATA_CHECK (before training),
 * MDL_ERR_BUDGET (stopped at the budget, model saved, not blessed),
 * MDL_ERR_STOPPED (stopped by a signal after a snapshot, every report
 * written; the exit code is 128 + *o->stop_signal), the stored run's status
 * when --if-changed finds one, or an error in err. */
mdl_status mdl_ci_run(const mdl_job *job, const mdl_ci_opts *o, mdl_error *err);

/* Prints job's fingerprint, its parts and what changed against the blessed
 * run; as one JSON object when json. */
mdl_status mdl_ci_print_fingerprint(const mdl_job *job, const mdl_ci_opts *o, bool json, FILE *out,
                                    mdl_error *err);

#endif
