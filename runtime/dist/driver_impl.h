/* Private to the driver (driver.c, driver_workers.c, driver_snapshot.c,
 * driver_report.c): the run's state and the steps the files share. Not for
 * use outside runtime/dist; driver.h is the public header. */
#ifndef MDL_RUNTIME_DRIVER_IMPL_H
#define MDL_RUNTIME_DRIVER_IMPL_H

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "rpc.pb-c.h"
#include "runtime/dist/driver.h"
#include "runtime/dist/launcher.h"
#include "runtime/dist/worker.h"
#include "runtime/rpc/rpc.h"
#include "runtime/solver/solver.h"
#include "runtime/train/metrics.h"
#include "runtime/train/progress.h"

#define SNAPSHOT_VERSION 1

/* Rounds a re-tuning of tau or a rebalancing of shares judges at once: one
 * slow round is noise. */
#define MDL_DRIVER_WINDOW 5

/* A window of rounds as mdl_driver_retune sees it: iterations a round,
 * compute seconds an iteration, communication and straggling seconds a
 * round. */
typedef struct retune_window {
  double t, iter_s, comm, straggle;
} retune_window;

typedef struct slot {
  int index;
  char addr[300];
  char device[64];
  char host_id[320]; /* SetupReply.host_id: slots that share it share a machine */
  mdl_rpc_channel *ch;
  bool alive;
  Memdl__PartitionLineage **train, **test; /* borrowed from the driver's lists */
  size_t n_train, n_test;
  float *recv; /* reply weights, reused */
  uint64_t samples;
  uint64_t batch; /* its share of the global batch when balanced by speed; 0: the net's */
  double compute_s, rtt_s;
  uint64_t train_samples; /* its partitions' records, as its last Setup said */
  double setup_s;         /* the seconds its last Setup took it, as it said (0: not said) */
  mdl_driver_worker_stats total;
  /* rebalancing (driver_calibrate.c): its model, fixed + batch x per-sample
   * seconds an iteration (from the calibration, rescaled by what the rounds
   * measure; 0: none yet), and the window's per-round figures */
  double model_fixed_s, model_sample_s;
  double win_iter_s[MDL_DRIVER_WINDOW], win_comm_s[MDL_DRIVER_WINDOW];
  int win_n, win_seen; /* figures in the window; total.rounds when last taken */
  int win_dir;         /* the last window's proposal for its share: -1, 0, +1 */
  /* mdl_driver_retune's window: its round times summed, how many, and
   * total.rounds when last taken */
  double retune_rtt;
  int retune_n, retune_seen;
  /* remote mode: a dead worker's partitions, taken back when it answers
   * again (its channel connected; after a failed try, not before retry_at) */
  bool lost;
  Memdl__PartitionLineage **lost_train, **lost_test;
  size_t n_lost_train, n_lost_test;
  double retry_at, retry_gap;
} slot;

typedef struct driver {
  const Memdl__Plan *plan;
  const char *base_dir;
  mdl_driver_opts o;
  FILE *log;
  const char *trainer_name;
  const mdl_trainer_table *trainers; /* NULL: the product's */
  uint8_t *plan_bytes;
  size_t plan_len;
  uint8_t *key_bytes; /* the plan as the resume check sees it (driver_snapshot.c) */
  size_t key_len;
  uint64_t plan_hash, session, seed;
  int k;
  slot *s;
  mdl_local_workers *lw;
  mdl_rpc_channel_opts chopts;
  char *token;
  size_t token_len;
  size_t n_params;
  float *w; /* the authoritative weights: region 0 of the shared file when shm */
  mdl_rpc_pin *w_pin;
  /* local runs: weights through a shared-memory file instead of messages */
  bool shm;
  uint8_t *shm_base;
  size_t shm_len, shm_stride;
  char shm_path[600];
  float *w_heap;      /* d->w before it moved into shared memory */
  mdl_trainer *model; /* the driver's own instance: initial weights, model files */
  char prefix[1100];  /* model files: <prefix>_iter_<N>.caffemodel */
  int snapshot_iters; /* the solver's snapshot interval (0: only at the end) */
  Memdl__PartitionLineage **all_train, **all_test;
  size_t n_all_train, n_all_test;
  int iter, round, max_iter, tau, test_interval, snapshot_rounds, rounds_here;
  int round_timeout_ms, setup_timeout_ms;
  /* samples one iteration / one test batch takes on a worker (0: unknown) */
  uint64_t train_batch, test_batch;
  char snapshot_path[1024];
  volatile sig_atomic_t *abort;
  mdl_driver_result *res;
  /* what the run reports (driver_report.c), as a single-worker run does */
  mdl_metrics *metrics; /* NULL: no metrics.jsonl */
  mdl_progress prog;
  mdl_solver_config scfg; /* for the learning rate of progress lines */
  bool have_scfg;
  int start_iter; /* where this process's rounds began (after resume) */
  int snap_iter;  /* iteration of the last snapshot point written (-1: none) */
  double aside_s; /* seconds of TEST passes and snapshots: not training */
  /* peer-to-peer averaging (driver_peer.c): the workers average among
   * themselves; kept_epoch (0: none) is the last committed exchange, whose
   * n_kept members (kept_members, worker indices) still hold its average.
   * peer_members are the attempt in flight's. w_behind: d->w is older than
   * that average (no round returned it since), so whatever reads d->w
   * calls mdl_driver_weights first. */
  bool peer, peer_forced; /* forced: cluster { averaging: PEER }, no fallback */
  char **peer_addrs;
  uint32_t *peer_members, *kept_members;
  uint32_t *peer_hosts; /* the attempt's members' host groups (RoundRequest.member_host) */
  int hosts_said;       /* the host count last said in the log (0: none yet) */
  int n_members, n_kept;
  uint64_t peer_epoch, kept_epoch;
  bool w_behind;
  /* mdl_driver_retune's window: rounds, iterations and seconds summed
   * (wall: the rounds' time; comm: the workers' mean communication) */
  int retune_rounds, retune_iters;
  int retune_floor; /* the largest tau a measured excess asked for: never gone below */
  double retune_wall, retune_comm;
  /* straggling is taken for a fixed cost per round until a rise for it is
   * judged (mdl_driver_retune): retune_grows, when it grew with the round
   * then, which no tau amortizes; the rise waiting to be judged (to 0:
   * none) and the window that asked for it */
  bool retune_grows;
  int retune_raised_to;
  retune_window retune_raised;
  /* mdl_driver_rebalance's window: rounds in it, and the last round of
   * this process it ignores (the first after a Setup builds the arenas);
   * the first round of the last window when it proposed a change (0: it
   * did not) */
  int rebalance_rounds, rebalance_skip, rebalance_proposed;
  bool rebalance_kept_said; /* "blocks: kept" printed for the proposal standing */
  /* how long setting every worker up took the last time: a change of
   * shares, or until one is timed, the run's first Setup as the slowest
   * worker timed it (a change costs a Setup with the same data to load,
   * plus the optimiser states) */
  double setup_s;
} driver;

static void dlog(driver *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void dlog(driver *d, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  mdl_vlogf(d->log, "memdl driver: ", fmt, ap);
  va_end(ap);
}

static inline char *resolve_path(const char *base, const char *p) {
  if (!p) return NULL;
  if (p[0] == '/' || !base || !base[0]) return mdl_xstrdup(p);
  size_t n = strlen(base) + strlen(p) + 2;
  char *r = mdl_xmalloc(n);
  snprintf(r, n, "%s/%s", base, p);
  return r;
}

static inline void call_init(driver *d, mdl_rpc_call *c, slot *s, const char *method,
                             const ProtobufCMessage *req, const ProtobufCMessageDescriptor *reply) {
  memset(c, 0, sizeof *c);
  c->ch = s->ch;
  c->method = method;
  c->req.msg = req;
  c->reply_spec.desc = reply;
  c->reply_spec.max_bytes = MDL_WORKER_MAX_SETUP_BYTES;
}

static inline void lineage_push(Memdl__PartitionLineage ***arr, size_t *n,
                                Memdl__PartitionLineage *l) {
  *arr = mdl_xrealloc(*arr, (*n + 1) * sizeof **arr);
  (*arr)[(*n)++] = l;
}

/* --- driver.c ----------------------------------------------------------------- */

/* Where a Round reply's weights go: the slot's buffer, once the size is right. */
typedef struct recv_ctx {
  slot *s;
  size_t bytes;
} recv_ctx;

/* A reply's bulk destination (mdl_rpc_bulk_fn) for a recv_ctx. */
void *mdl_driver_recv_dest(void *ctx, size_t len, mdl_error *err);

/* The Round request of the next tau iterations from d's position. */
void mdl_driver_round_request(driver *d, int tau, Memdl__RoundRequest *req);

/* The Round calls of req to the n slots act (calls[] and rc[] the caller's,
 * n each; req0, when not NULL, goes to act[0] instead: the peer member that
 * returns the average): weights out of d->w when send_w (or in shared
 * memory), replies into each slot's buffer. */
void mdl_driver_round_calls(driver *d, slot *const *act, int n, const Memdl__RoundRequest *req,
                            const Memdl__RoundRequest *req0, bool send_w, mdl_rpc_call *calls,
                            recv_ctx *rc);

/* --- driver_calibrate.c ------------------------------------------------------ */

/* Before the first round: each worker's time per sample and the cost of a
 * weight-sized round, measured (a calibration Round the workers undo) or
 * read from <out_dir>/calibration.txt when the plan, the cluster and the
 * machine are those it was measured for. One line per worker goes to the
 * log; when tau is the tuner's (opts.tau_tuned), it is chosen again from these figures.
 * Nothing the run computes changes otherwise. */
mdl_status mdl_driver_calibrate(driver *d, mdl_error *err);

/* After a round of tau iterations that took wall seconds, of which comm
 * (mean per worker) communicating: when tau is the tuner's and the share of
 * the last rounds left the job's bound, tau is chosen again from what they
 * measured, and the change and its reason go to the log. */
void mdl_driver_retune(driver *d, int tau, double wall, double comm);

/* After a round of tau iterations, when shares follow speed (the run
 * calibrates): each worker's time per iteration and communication over the
 * last MDL_DRIVER_WINDOW rounds rescale its model, and the tuner's share
 * choice runs again (mdl_tune_rebalance); when it shortens the predicted
 * round by MDL_TUNE_REBALANCE_GAIN the workers are set up again with the
 * new shares, their optimiser states and partitions that follow the
 * shares, and the change, its reason and a "rebalance" record go out. An
 * error only when setting up fails as a run's setup would. */
mdl_status mdl_driver_rebalance(driver *d, int tau, mdl_error *err);

/* The workers a run names, before any is started: local:K (local_k) or
 * addresses (with devices when the job's cluster block names them). */
typedef struct worker_list {
  int local_k, n_addrs;
  char **addrs, **devices;
} worker_list;

/* --- driver_workers.c ------------------------------------------------------ */

/* Which workers: opts->workers, else the job's cluster block, else local:1.
 * On failure wl is empty. */
mdl_status mdl_driver_select_workers(driver *d, worker_list *wl, mdl_error *err);
void mdl_driver_worker_list_free(worker_list *wl);

/* Starts the local workers (and their shared memory) or sets up security
 * for remote ones, then opens a channel to each. */
mdl_status mdl_driver_start_workers(driver *d, const worker_list *wl, mdl_error *err);

/* Sets every slot up (with the snapshot's optimiser states when snap is
 * not NULL); a worker that does not come up is removed like a failed one. */
mdl_status mdl_driver_setup_workers(driver *d, const Memdl__DriverSnapshot *snap, mdl_error *err);

/* Removes a worker: its partitions go to the survivors; in local mode a
 * replacement starts and takes them back. */
mdl_status mdl_driver_kill_slot(driver *d, slot *dead, const char *why, mdl_error *err);

/* Remote mode, before a round: dead workers that answer at their address
 * again (restarted) are set up and take their partitions back. */
mdl_status mdl_driver_retake_workers(driver *d, mdl_error *err);

/* Asks every live worker to exit (best effort, 5 s). */
void mdl_driver_shutdown_workers(driver *d);

/* Frees what d holds (channels, local workers, shared memory, weights);
 * not d itself. */
void mdl_driver_free_state(driver *d);

/* --- driver_peer.c (issue 13) ---------------------------------------------- */

/* After the workers started: whether they average peer-to-peer (remote
 * workers unless the job says STAR); sets d->peer and the peer list. */
void mdl_driver_peer_init(driver *d);
void mdl_driver_peer_free(driver *d);

/* Whether a round attempt among the n slots act can start from the last
 * committed average that its members kept (each of them was a member of
 * that exchange: a redo among the survivors, or the next round), so the
 * driver need not send it (nor hold it). */
bool mdl_driver_peer_from_kept(const driver *d, slot *const *act, int n);

/* Fills a round attempt's peer fields into req (for every member) and
 * req0 (a copy for act[0]; with want_w it returns the average: the
 * driver reads d->w after this round). from_kept: as
 * mdl_driver_peer_from_kept said; else the weights travel in the requests. */
void mdl_driver_peer_round(driver *d, slot **act, int n, bool from_kept, bool want_w,
                           Memdl__RoundRequest *req, Memdl__RoundRequest *req0);

/* Whether a failed Round's detail blames another member (the worker itself
 * is fine). */
bool mdl_driver_peer_blames_another(const char *detail);

/* Every member of the attempt succeeded: they hold its average (d->w is
 * behind it unless the round returned it). */
void mdl_driver_peer_commit(driver *d, bool returned);

/* The epoch of the committed average that slot s holds, which is d->iter's
 * weights, so a TEST pass can run on it without the weights travelling;
 * 0 when s holds none (not a member of that exchange, or not peer). */
uint64_t mdl_driver_peer_held_by(const driver *d, const slot *s);

/* A worker removed, or about to be set up again: a Setup starts it afresh,
 * holding no average. */
void mdl_driver_peer_forget(driver *d, const slot *s);

/* Makes d->w the committed average before anything reads it (TEST,
 * snapshots, model files, the result, a round that sends it): when no
 * round returned it, fetched from a live worker that kept it (a State call
 * for its average, epoch checked, finiteness checked). Fails when none can
 * give it: d->w is then not used. */
mdl_status mdl_driver_weights(driver *d, mdl_error *err);

/* Members failed because of one another while every one of them answered
 * the driver: they cannot reach each other (the driver is their only
 * common route). Unless the job asked for PEER, the run averages through
 * the driver from now on (d->peer cleared, said in the log). */
void mdl_driver_peer_unreachable(driver *d);

/* --- driver_snapshot.c ----------------------------------------------------- */

/* The plan as shipped to workers (d->plan_bytes) and its hash, which
 * guards resumption. */
void mdl_driver_hash_plan(driver *d);

/* Where each partition starts: from the snapshot when resuming and there
 * is one (*snap is then the caller's, mdl_pb_free; it also restores the
 * weights, iteration and round), else round-robin over the slots. */
mdl_status mdl_driver_resume(driver *d, Memdl__DriverSnapshot **snap, mdl_error *err);

/* Every live worker's optimiser state by State calls: ws[i] (d->k entries,
 * the caller's) gets slot i's partitions and share and, when it answered,
 * its state, which points into *calls' replies (the caller's: valid until
 * mdl_rpc_calls_clear(*calls, *n_calls), then free). *complete is false
 * when a live worker did not answer (said in the log). */
mdl_status mdl_driver_gather_states(driver *d, Memdl__WorkerSnapshot *ws, mdl_rpc_call **calls,
                                    int *n_calls, bool *complete, mdl_error *err);

/* Writes the driver snapshot (weights, every worker's state, partitions)
 * atomically; skipped (not an error) when a worker cannot give its state. */
mdl_status mdl_driver_snapshot_write(driver *d, mdl_error *err);

/* Writes <prefix>_iter_<iter>.caffemodel when the trainer can. */
mdl_status mdl_driver_save_model(driver *d, mdl_error *err);

/* A snapshot point (the solver's interval, a signal's request, the end):
 * <prefix>_iter_<iter>.caffemodel and .solverstate (the driver's state,
 * which `--resume` continues from), each written atomically, reported as
 * single-worker runs do. Once per iteration. */
mdl_status mdl_driver_snapshot_point(driver *d, mdl_error *err);

/* Writes the driver's state to path atomically (creating its folder);
 * *written says whether it was (a worker that cannot give its state skips
 * it). mdl_driver_snapshot_write is this to d->snapshot_path. */
mdl_status mdl_driver_state_write(driver *d, const char *path, bool *written, mdl_error *err);

/* --- driver_report.c ------------------------------------------------------- */

/* Opens metrics.jsonl in the output folder (when opts.job_path is set),
 * writes the start record and starts the progress clock. */
mdl_status mdl_driver_report_open(driver *d, mdl_error *err);

/* After a round: its "round" record (each worker's samples and seconds)
 * and, at display points, the single-worker progress line and "train"
 * record. */
void mdl_driver_report_round(driver *d, int tau, slot *const *done, int n, double wall,
                             double loss);

/* A TEST pass's record (scalar outputs of net, the pass's wall seconds). */
void mdl_driver_report_test(driver *d, int net, const mdl_trainer_output *out, int n,
                            uint64_t samples, double seconds);

/* A change of the workers' shares: a "rebalance" record with its reason,
 * the predicted round times and per worker its share, train partitions and
 * samples. Nothing without metrics.jsonl. */
void mdl_driver_report_rebalance(driver *d, const char *reason, double round_was_s, double round_s);

/* A snapshot point's line and record. */
void mdl_driver_report_snapshot(driver *d, const char *model, const char *state);

/* The closing record ("stopped", or "done" with the waiting share) and the
 * stopped line; closes the metrics file. */
void mdl_driver_report_close(driver *d, mdl_status st);

#endif
