/* The driver of a distributed run (SparkNet's scheme): ships the plan and
 * partition lineages to K workers, then runs rounds: current weights out,
 * tau solver iterations on every worker, weights and sample counts back,
 * averaged weighted by samples in worker order (the same bits for the same
 * job, seed and K). An iteration is one step on every worker (Caffe's
 * multi-GPU convention), so max_iter, test_interval and snapshots keep their
 * meaning. Survives workers that die, hang or disconnect (their partitions
 * move to the others; local workers are replaced), snapshots atomically and
 * resumes, stops cleanly on request, and reports as a single-worker run
 * does (metrics.jsonl, progress lines; driver_report.c). Owns scheduling,
 * averaging and fault handling; not the transport (rpc.h), the processes
 * (launcher.h) or the maths (trainer.h).
 *
 * Optimiser history (momentum, AdaGrad/RMSProp/Adam moments) stays on each
 * worker and is never averaged or sent: every round a worker starts from
 * the averaged weights with its own history, as SparkNet does. For SGD and
 * Nesterov that loses nothing at tau = 1: momentum is linear, so the mean
 * of the K buffers evolves exactly as one buffer over the mean gradient and
 * K workers track one worker on a K-times batch (tested). With tau > 1 each
 * history follows its worker's own local trajectory between averages. A
 * replacement worker starts with zero history; snapshots keep every
 * worker's history, so a resumed run continues bit for bit.
 *
 * Transport: remote workers receive and return the weights inside the
 * messages (rpc.h decodes them straight into reused buffers). Local workers
 * (`local:K`) get only control messages over their Unix sockets; the
 * weights sit in a shared-memory file in the run's private directory
 * (region 0 the driver's weights, region i + 1 worker i's result), so a
 * round costs the workers' own reads and writes plus the driver's average.
 * Remote workers average peer-to-peer by default (driver_peer.c): the
 * driver sends each round's control only, and has the average returned
 * (by one member) only for a round after which it reads it: a TEST pass, a
 * snapshot point, the end. Otherwise the members keep it; a redo after a
 * fault starts from it, and a need nobody foresaw (a stop mid-round, a
 * worker coming back) fetches it from a member.
 */
#ifndef MDL_RUNTIME_DRIVER_H
#define MDL_RUNTIME_DRIVER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "plan.pb-c.h"
#include "runtime/dist/average.h" /* mdl_driver_average */
#include "runtime/dist/calibrate.h"
#include "runtime/train/trainer.h"

struct mdl_job; /* compiler/job.h */

/* What the driver reports after each round (for progress displays and
 * tests that inject faults at a known point). */
typedef struct mdl_driver_progress {
  int round, iter, n_workers;
  const int *pids; /* local mode: each slot's worker process (0 when dead); else NULL */
  double loss;     /* mean training loss of the round */
} mdl_driver_progress;

typedef struct mdl_driver_opts {
  /* "local:K", "host:port,host:port,...", or NULL: the job's cluster block
   * (then the Slurm/MPI environment when use_cluster_env, else local:1). */
  const char *workers;
  bool use_cluster_env;                    /* srun/mpirun: rank 0 drives, the others serve */
  const char *token_file;                  /* overrides the job's cluster.token_file */
  const char *tls_ca, *tls_cert, *tls_key; /* override the job's cluster.tls */
  const char *tls_dir; /* `memdl certs` folder; overrides the job's cluster.tls.dir */
  bool insecure;       /* allow plain TCP to non-loopback workers */
  /* resume: continue from resume_file, or (NULL) from the newest of
   * snapshot_path and <prefix>_iter_N.solverstate (MDL_ERR_INVALID when
   * there is none, as a single-worker --resume). Resume points are round
   * boundaries; a resumed run cuts the same rounds as the uninterrupted
   * one while tau, test_interval and the snapshot interval are kept. */
  bool resume;
  const char *resume_file;
  const char *snapshot_path; /* every snapshot_rounds; NULL: <job output dir>/driver.snapshot */
  /* Where metrics.jsonl and model files go: <out_dir>/<snapshot_prefix>_iter_<N>.caffemodel
   * and .solverstate (the driver's state) at the solver's snapshot interval,
   * on a signal's request and at the end. NULL: <base_dir>/out. */
  const char *out_dir;
  /* fine-tuning (--weights): the run starts from this model file, read
   * layer by name; parameters it does not name keep their fillers' values */
  const char *weights;
  const char *snapshot_prefix; /* the full prefix as single-worker runs name it; NULL: as above */
  int snapshot_every;          /* iterations between snapshot points; 0: the solver's */
  /* For metrics.jsonl's start record (as mdl_train_opts); job_path NULL:
   * no metrics.jsonl (tests that drive plans) */
  const char *job_path, *version;
  const char *const *overrides;
  int n_overrides;
  int snapshot_rounds;               /* rounds between snapshots; 0: the job's; -1: never */
  const char *trainer;               /* backend: NULL is "net" */
  const mdl_trainer_table *trainers; /* where it is looked up; NULL: the product's */
  uint64_t seed;                     /* 0: the solver's random_seed when >= 0, else 1 */
  int tau;                           /* 0: the job's sync.tau, else the tuner's/10 */
  int round_timeout_ms;              /* 0: the job's cluster.round_timeout_ms */
  int setup_timeout_ms;              /* 0: 60000 (workers rebuilding partitions) */
  /* Pings to workers every keepalive_ms: set, a stopped worker is noticed in
   * ~2.5x this; 0: every 2000 ms, answered within MDL_RPC_KEEPALIVE_TIMEOUT_MS
   * (busy slow links), the round deadline noticing a stopped worker. */
  int keepalive_ms;
  int max_rounds;  /* stop after this many rounds of this process (0: no limit) */
  bool no_replace; /* local mode: do not start replacement workers */
  bool no_shm;     /* local mode: weights in messages, not through shared memory */
  /* tau is the tuner's: calibration and each round's measured share of
   * communication may change it (see driver_impl.h) */
  bool tau_tuned;
  /* measure the workers before the first round even when tau is fixed */
  bool calibrate;
  /* set the workers up, calibrate, stop: no rounds, no model file */
  bool calibrate_only;
  /* local workers: the program to start (see launcher.h) */
  const char *worker_exe;
  const char *const *worker_argv;
  int n_worker_argv;
  const char *const *worker_unset_env; /* see mdl_launch_opts.unset_env */
  const char *device;                  /* for local workers */
  int threads;                         /* per local worker; 0: the cores divided among them */
  FILE *log;                           /* progress and events; NULL: stderr */
  bool quiet;                          /* no per-round lines */
  /* Set to nonzero to stop at once, mid-round (e.g. from a signal handler);
   * NULL: the driver installs SIGINT/SIGTERM handlers of its own for the
   * run unless stop is given. */
  volatile sig_atomic_t *abort;
  /* Read between rounds, set asynchronously (memdl run's signal thread), as
   * mdl_train_opts: stop: finish the round, snapshot, write the closing
   * record, shut the workers down and return MDL_OK with res->stopped;
   * snapshot: snapshot after the round and go on (cleared when done). */
  volatile sig_atomic_t *stop, *snapshot;
  void (*on_round)(void *ctx, const mdl_driver_progress *p);
  void *on_round_ctx;
} mdl_driver_opts;

/* Per-worker timing of the whole run (seconds). */
typedef struct mdl_driver_worker_stats {
  char address[300];
  double compute_s, comm_s, wait_s;
  uint64_t samples;
  int rounds;
  bool alive;
} mdl_driver_worker_stats;

typedef struct mdl_driver_result {
  float *weights; /* final averaged weights (n_params floats), the caller's (free) */
  size_t n_params;
  int iter, rounds;
  int faults, replacements;
  double seconds;
  double compute_s, comm_s, wait_s, average_s; /* summed over rounds */
  int n_test; /* last TEST pass of test net 0: output means over batches */
  mdl_trainer_output *test;
  int n_workers;
  mdl_driver_worker_stats *workers;
  bool resumed;
  char weights_file[1200]; /* the last model file written ("" when none) */
  char state_file[1200];   /* the last <prefix>_iter_N.solverstate written ("" when none) */
  bool stopped;            /* opts.stop ended the run early, after a snapshot */
  bool accepted;           /* the job's acceptance criteria held (true when none) */
  char accept_msg[512];    /* which did not, and the values */
  /* This process was a Slurm/MPI rank other than 0: it served rank 0, which
   * holds the results; everything above is empty. */
  bool served;
  /* what calibration measured or reused (n_workers 0: none); freed with res */
  mdl_calibration calibration;
  /* Weights the workers sent the driver: training rounds' replies and peer
   * averages fetched, in bytes and times (a peer run receives the average
   * only where it needs it: snapshots, the end). */
  uint64_t weights_received;
  int weights_fetched;
  /* Weights the driver sent the workers (Round and Test requests), bytes:
   * peer rounds among members that kept the average send none, nor do
   * TEST passes on it. */
  uint64_t weights_sent;
} mdl_driver_result;

/* Whether `memdl run` should hand the job to the driver: --workers given,
 * a cluster block asking for more than one worker or naming remote ones,
 * or a Slurm/MPI launch of more than one task. */
bool mdl_driver_wanted(const struct mdl_job *job, const mdl_driver_opts *opts);

/* How many workers a run of job will have, and whether they are remote:
 * from spec (--workers: "local:K" or "host:port,..."), else the job's
 * cluster block; 1 when neither says. */
int mdl_driver_count_workers(const struct mdl_job *job, const char *spec, bool *remote);

/* Compiles job and runs it distributed (or, on a Slurm/MPI rank other than
 * 0, serves as a worker until the driver is done). res may be NULL; when
 * given it is filled on success and on MDL_ERR_ACCEPT (trained, but the
 * job's acceptance criteria failed: res->accept_msg says how), to be freed
 * with mdl_driver_result_free. On other failures every local worker has
 * been stopped, res is empty and err says what failed. */
mdl_status mdl_driver_run(const struct mdl_job *job, const mdl_driver_opts *opts,
                          mdl_driver_result *res, mdl_error *err);

/* The same from a compiled plan; base_dir is where the plan's relative
 * paths resolve and where the output directory lies. */
mdl_status mdl_driver_run_plan(const Memdl__Plan *plan, const char *base_dir,
                               const mdl_driver_opts *opts, mdl_driver_result *res, mdl_error *err);

void mdl_driver_result_free(mdl_driver_result *res);

/* The closing line of a run into buf ("done: I iterations in R rounds on W
 * workers, S s, waiting P%", W being those still alive, with how many
 * started when some were lost; P the share of the workers' round time spent
 * waiting for the slowest). */
void mdl_driver_result_summary(const mdl_driver_result *res, char *buf, size_t len);

#endif
