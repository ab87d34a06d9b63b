/* The driver's measurements of its workers and what follows from them: the
 * calibration Round before the first round and its cache, the shares of
 * the batch and the partitions that follow speed (at the start and, from
 * windows of rounds, during the run), and re-tuning tau when the measured
 * share of communication leaves the job's bound. Owns no figures
 * (calibrate.h) and no tuning arithmetic (compiler/tuner.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/clock.h"
#include "common/sha256.h"
#include "runtime/dist/calibrate.h"
#include "runtime/dist/driver_impl.h"

/* A calibration times CALIBRATE_ROUNDS rounds of CALIBRATE_ITERS
 * iterations and keeps each worker's fastest. */
#define CALIBRATE_ITERS 3
#define CALIBRATE_ROUNDS 2
/* Shares by speed are measured again at CALIBRATE_FIT_ITERS iterations
 * (their figures decide the run), up to CALIBRATE_FIT_STEPS times. */
#define CALIBRATE_FIT_ITERS 8
#define CALIBRATE_FIT_STEPS 2

static double mean(const double *v, int n) {
  double sum = 0;
  for (int i = 0; i < n; i++) sum += v[i];
  return n ? sum / n : 0;
}

/* The standard error of v's mean (0 for fewer than two values). */
static double std_error(const double *v, int n, double m) {
  if (n < 2) return 0;
  double ss = 0;
  for (int i = 0; i < n; i++) ss += (v[i] - m) * (v[i] - m);
  return sqrt(ss / (n - 1) / n);
}

static double comm_bound(const driver *d) {
  return mdl_tune_comm_bound(d->plan->sync ? d->plan->sync->max_comm_fraction : 0);
}

/* One calibration Round of tau iterations to the n slots act; fills c's
 * rows, and iter_s[] (n entries; NULL: not wanted) with each worker's mean
 * iteration in it. false (with why) when a worker did not answer as asked:
 * the run then goes on without figures and its rounds deal with the
 * worker. */
static bool measure(driver *d, slot *const *act, int n, int tau, mdl_calibration *c, double *iter_s,
                    char *why, size_t cap) {
  Memdl__RoundRequest req;
  mdl_driver_round_request(d, tau, &req);
  req.has_calibrate = req.calibrate = 1;
  mdl_rpc_call *calls = mdl_xcalloc((size_t)n, sizeof *calls);
  recv_ctx *rc = mdl_xcalloc((size_t)n, sizeof *rc);
  mdl_driver_round_calls(d, act, n, &req, NULL, true, calls, rc);
  mdl_error err = {0};
  mdl_status st = mdl_rpc_call_all(calls, n, d->round_timeout_ms, d->abort, &err);
  mdl_rpc_pin_wait(d->w_pin);
  bool ok = st == MDL_OK;
  if (!ok) snprintf(why, cap, "%.600s", err.msg);
  for (int i = 0; ok && i < n; i++) {
    const Memdl__RoundReply *r = (const Memdl__RoundReply *)calls[i].reply;
    if (calls[i].code != MDL_RPC_OK || !r || r->samples == 0 || r->iterations != (uint32_t)tau) {
      snprintf(why, cap, "worker %d: %s %s", act[i]->index, mdl_rpc_code_name(calls[i].code),
               calls[i].detail);
      ok = false;
      break;
    }
    mdl_calib_worker *w = &c->worker[i];
    /* the least of the calls' figures: the rest was the machine busy with
     * something else (on a shared machine, often) */
    double comm = calls[i].seconds > r->compute_seconds ? calls[i].seconds - r->compute_seconds : 0;
    double per = r->compute_seconds / (double)r->samples;
    if (!(per > 0)) per = 1e-9; /* a clock too coarse for a tiny net */
    bool first = w->iterations == 0;
    w->comm_s = !first && w->comm_s < comm ? w->comm_s : comm;
    w->sample_s = !first && w->sample_s < per ? w->sample_s : per;
    w->samples += r->samples;
    w->iterations += (int)r->iterations;
    if (iter_s) iter_s[i] = r->compute_seconds / (double)r->iterations;
  }
  mdl_rpc_calls_clear(calls, n);
  free(calls);
  free(rc);
  return ok;
}

static void hash_message(mdl_sha256 *h, const ProtobufCMessage *m) {
  if (!m) return;
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *b = mdl_xmalloc(n + 1);
  protobuf_c_message_pack(m, b);
  mdl_sha256_update(h, b, n);
  free(b);
}

/* The plan part of the cache key: what a training iteration's time depends
 * on -- the TRAIN net, the data sets, the solver's type, the trainer -- and
 * not max_iter, test settings or the job's name. */
static uint64_t timing_fingerprint(const driver *d) {
  mdl_sha256 h;
  mdl_sha256_init(&h);
  for (size_t i = 0; i < d->plan->n_net; i++)
    if (d->plan->net[i]->phase == CAFFE__PHASE__TRAIN) hash_message(&h, &d->plan->net[i]->base);
  for (size_t i = 0; i < d->plan->n_data; i++) hash_message(&h, &d->plan->data[i]->base);
  const char *type = d->plan->solver->type ? d->plan->solver->type : "SGD";
  mdl_sha256_update(&h, type, strlen(type) + 1);
  mdl_sha256_update(&h, d->trainer_name, strlen(d->trainer_name) + 1);
  uint8_t digest[32];
  mdl_sha256_final(&h, digest);
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | digest[i];
  return v;
}

/* The cluster part of the cache key: what --workers said, else the kind
 * and count (local workers' socket paths change every run). */
static void cluster_spec(const driver *d, char *buf, size_t len) {
  if (d->o.workers && *d->o.workers)
    snprintf(buf, len, "%s", d->o.workers);
  else
    snprintf(buf, len, "%s:%d", d->lw ? "local" : "cluster", d->k);
}

/* A warm-up iteration (it builds the workers' arenas and batchers), then
 * CALIBRATE_ROUNDS timed calls of iters iterations, into c's rows (cleared
 * first), each worker's iterations' scatter over the calls with them: on
 * a machine shared with other work it can exceed the difference between
 * the workers, which then says nothing about their speeds. */
static bool measure_all(driver *d, slot *const *act, int n, int iters, mdl_calibration *c,
                        char *why, size_t cap) {
  int left = d->max_iter - d->iter;
  int tau = left < iters ? left : iters;
  bool ok = measure(d, act, n, 1, c, NULL, why, cap);
  memset(c->worker, 0, (size_t)n * sizeof *c->worker);
  double *it = mdl_xcalloc((size_t)n * CALIBRATE_ROUNDS, sizeof *it);
  for (int r = 0; ok && r < CALIBRATE_ROUNDS; r++)
    ok = measure(d, act, n, tau, c, it + (size_t)r * n, why, cap);
  for (int i = 0; ok && i < n; i++) {
    double v[CALIBRATE_ROUNDS];
    for (int r = 0; r < CALIBRATE_ROUNDS; r++) v[r] = it[(size_t)r * n + i];
    c->worker[i].iter_se_s = std_error(v, CALIBRATE_ROUNDS, mean(v, CALIBRATE_ROUNDS));
  }
  free(it);
  return ok;
}

/* The tuner on c: tau (when the tuner's) and the shares, into share[]. */
static mdl_tune_plan tune(const driver *d, const mdl_calibration *c, int64_t *share) {
  mdl_tune_worker rows[MDL_TUNE_MAX_WORKERS];
  mdl_tune_table t = mdl_calibration_table(c, comm_bound(d), d->o.tau_tuned ? 0 : d->tau, rows);
  mdl_tune_plan p;
  mdl_tune(&t, share, &p);
  return p;
}

/* Moves whole train partitions among the n slots act so each one's part
 * of the data follows its share (0: the net's batch), by
 * mdl_tune_partitions: partitions are dealt in equal sizes, so counts
 * stand for samples. What moved goes into what ("" when nothing did). */
static void follow_shares(driver *d, slot *const *act, int n, const int64_t *share, char *what,
                          size_t cap) {
  int64_t sh[MDL_TUNE_MAX_WORKERS] = {0}, held[MDL_TUNE_MAX_WORKERS] = {0};
  int64_t target[MDL_TUNE_MAX_WORKERS];
  size_t parts = 0;
  what[0] = 0;
  for (int i = 0; i < n; i++) {
    sh[i] = share[i] > 0 ? share[i] : (int64_t)d->train_batch;
    held[i] = (int64_t)act[i]->n_train;
    parts += act[i]->n_train;
  }
  if (mdl_tune_partitions(n, sh, held, target) == 0) {
    bool unequal = false;
    for (int i = 1; i < n; i++) unequal = unequal || sh[i] != sh[0];
    if (unequal && parts < (size_t)n * 4)
      dlog(d,
           "partitions: %zu train partitions for %d workers are too few to follow the shares "
           "(set the data set's `partitions`, e.g. %d)",
           parts, n, n * 8);
    return;
  }
  Memdl__PartitionLineage **pool = mdl_xcalloc(parts + 1, sizeof *pool);
  size_t np = 0, off = 0;
  for (int i = 0; i < n; i++) /* the last ones each donor holds */
    while ((int64_t)act[i]->n_train > target[i]) pool[np++] = act[i]->train[--act[i]->n_train];
  size_t moved = np;
  for (int i = 0; i < n; i++)
    while ((int64_t)act[i]->n_train < target[i] && np > 0)
      lineage_push(&act[i]->train, &act[i]->n_train, pool[--np]);
  free(pool);
  for (int i = 0; i < n && off < cap; i++)
    off += (size_t)snprintf(what + off, cap - off, "%sworker %d %lld -> %lld", i ? ", " : "",
                            act[i]->index, (long long)held[i], (long long)target[i]);
  if (off < cap) snprintf(what + off, cap - off, " (%zu of %zu moved)", moved, parts);
}

/* Gives the workers these shares of the global batch (0: the net's) and
 * sets them up again: a Setup rebuilds a worker's net at its batch. Before
 * the first round nothing has trained, so nothing is lost; during the run
 * states carries every worker's optimiser state (NULL: none). With
 * partitions, whole train partitions move first so each worker's data
 * follows its share, and the move is printed. */
static mdl_status set_shares(driver *d, slot *const *act, int n, const int64_t *share,
                             bool partitions, const Memdl__DriverSnapshot *states, mdl_error *err) {
  char what[1024] = "";
  if (partitions) follow_shares(d, act, n, share, what, sizeof what);
  bool same = !what[0];
  for (int i = 0; i < n; i++) same = same && act[i]->batch == (uint64_t)share[i];
  if (same) return MDL_OK;
  for (int i = 0; i < n; i++) act[i]->batch = (uint64_t)share[i];
  mdl_status st = mdl_driver_setup_workers(d, states, err);
  if (st != MDL_OK || !what[0]) return st;
  uint64_t total = 0, batch = 0;
  for (int i = 0; i < n; i++) {
    total += act[i]->train_samples;
    batch += act[i]->batch ? act[i]->batch : d->train_batch;
  }
  char line[1024];
  size_t off = 0;
  for (int i = 0; i < n && off < sizeof line; i++) {
    uint64_t b = act[i]->batch ? act[i]->batch : d->train_batch;
    off +=
        (size_t)snprintf(line + off, sizeof line - off, "%sworker %d %llu (%.1f%%; share %.1f%%)",
                         i ? ", " : "", act[i]->index, (unsigned long long)act[i]->train_samples,
                         total ? 100.0 * (double)act[i]->train_samples / (double)total : 0.0,
                         batch ? 100.0 * (double)b / (double)batch : 0.0);
  }
  dlog(d, "partitions follow the shares: %s; train samples now %s", what, line);
  return MDL_OK;
}

/* One measurement (at the net's batch) cannot tell a worker's per-sample
 * time from its per-iteration costs (the solver's update over every
 * weight, launch overheads), and shares from per-sample times alone leave
 * a slow worker with a small batch still slow. So once shares differ, the
 * workers are measured again at them, longer, and each worker's last two
 * points give its fixed and per-sample times (a secant step; per-sample
 * alone at the new share when the two points disagree with that model,
 * e.g. under noise). At most CALIBRATE_FIT_STEPS such steps, fewer when
 * the shares settle. */
static mdl_status fit(driver *d, slot *const *act, int n, mdl_calibration *c, char *why, size_t cap,
                      bool *ok, mdl_error *err) {
  double prev_b[MDL_TUNE_MAX_WORKERS], prev_t[MDL_TUNE_MAX_WORKERS];
  for (int i = 0; i < n; i++) {
    prev_b[i] = (double)c->worker_batch;
    prev_t[i] = prev_b[i] * c->worker[i].sample_s;
  }
  mdl_calibration at = *c;
  at.worker = mdl_xcalloc((size_t)n, sizeof *at.worker);
  mdl_status st = MDL_OK;
  for (int step = 0; st == MDL_OK && *ok && step < CALIBRATE_FIT_STEPS; step++) {
    int64_t share[MDL_TUNE_MAX_WORKERS], next[MDL_TUNE_MAX_WORKERS];
    if (!tune(d, c, share).balanced) break;
    st = set_shares(d, act, n, share, false, NULL, err);
    if (st == MDL_OK) *ok = measure_all(d, act, n, CALIBRATE_FIT_ITERS, &at, why, cap);
    for (int i = 0; st == MDL_OK && *ok && i < n; i++) {
      mdl_calib_worker *w = &c->worker[i];
      double b1 = (double)share[i], t1 = b1 * at.worker[i].sample_s;
      double per = b1 != prev_b[i] ? (prev_t[i] - t1) / (prev_b[i] - b1) : t1 / b1;
      double fixed = t1 - b1 * per;
      bool model = per > 0 && fixed >= 0;
      w->sample_s = model ? per : t1 / b1;
      w->fixed_s = model ? fixed : 0;
      if (at.worker[i].comm_s < w->comm_s) w->comm_s = at.worker[i].comm_s;
      w->iter_se_s = at.worker[i].iter_se_s; /* the scatter at the shares to run with */
      w->samples += at.worker[i].samples;
      w->iterations += at.worker[i].iterations;
      prev_b[i] = b1;
      prev_t[i] = t1;
    }
    if (st != MDL_OK || !*ok) break;
    tune(d, c, next);
    bool settled = true;
    for (int i = 0; i < n; i++) settled = settled && llabs(next[i] - share[i]) <= 1;
    if (settled) break;
  }
  free(at.worker);
  return st;
}

/* "worker 0 92, worker 1 36": the n shares, into buf. */
static void shares_text(slot *const *act, int n, const int64_t *share, char *buf, size_t cap) {
  size_t off = 0;
  buf[0] = 0;
  for (int i = 0; i < n && off < cap; i++)
    off += (size_t)snprintf(buf + off, cap - off, "%sworker %d %lld", i ? ", " : "", act[i]->index,
                            (long long)share[i]);
}

/* The tuner on the figures: a tuned tau is chosen again, and on a fresh run
 * each worker's share of the global batch follows its speed when that
 * shortens the predicted round by MDL_TUNE_REBALANCE_GAIN. Equal speeds
 * keep equal shares, so such a run's bits do not depend on the
 * measurement. */
static mdl_status apply(driver *d, const mdl_calibration *c, slot *const *act, mdl_error *err) {
  int64_t share[MDL_TUNE_MAX_WORKERS];
  mdl_tune_plan p = tune(d, c, share);
  for (int i = 0; i < c->n_workers; i++) { /* what rebalancing rescales */
    act[i]->model_fixed_s = c->worker[i].fixed_s;
    act[i]->model_sample_s = c->worker[i].sample_s;
  }
  if (d->o.tau_tuned) {
    int tau = p.tau > MDL_WORKER_MAX_TAU ? MDL_WORKER_MAX_TAU : p.tau;
    dlog(d,
         "tau %d (calibrated: %.2f ms per iteration, %.2f ms per round, %.0f%% communication; "
         "was %d from assumed figures)",
         tau, p.iter_s * 1e3, p.comm_s * 1e3, 100 * p.comm_fraction, d->tau);
    d->tau = tau;
  }
  if (p.balanced && (d->iter > 0 || d->res->resumed)) {
    dlog(d, "blocks: equal on a resumed run (the rounds' measurements move them from here)");
    return MDL_OK;
  }
  if (!p.balanced) {
    if (p.noise)
      dlog(d,
           "blocks: equal, %lld samples per worker per iteration (the workers' measured "
           "iterations differ by less than %.0f standard errors of their scatter over the "
           "calibration's rounds)",
           (long long)c->worker_batch, MDL_TUNE_REBALANCE_SIGMAS);
    else
      dlog(d,
           "blocks: equal, %lld samples per worker per iteration (shares by speed would shorten "
           "the predicted round by under %.0f%%)",
           (long long)c->worker_batch, 100 * MDL_TUNE_REBALANCE_GAIN);
    for (int i = 0; i < c->n_workers; i++) share[i] = 0; /* the net's own */
    return set_shares(d, act, c->n_workers, share, true, NULL, err);
  }
  char line[1024];
  shares_text(act, c->n_workers, share, line, sizeof line);
  dlog(d,
       "blocks by measured speed: %s samples per iteration (global batch %lld kept); predicted "
       "round %.1f ms, %.1f ms with equal blocks",
       line, (long long)c->worker_batch * c->n_workers, p.round_s * 1e3, p.round_equal_s * 1e3);
  return set_shares(d, act, c->n_workers, share, true, NULL, err);
}

mdl_status mdl_driver_calibrate(driver *d, mdl_error *err) {
  int n = 0;
  slot **act = mdl_xcalloc((size_t)d->k + 1, sizeof *act);
  for (int i = 0; i < d->k; i++)
    if (d->s[i].alive && d->s[i].n_train > 0) act[n++] = &d->s[i];
  if (n == 0 || n > MDL_TUNE_MAX_WORKERS || d->max_iter - d->iter < 1) {
    free(act);
    return MDL_OK;
  }
  char cluster[512], path[1200], why[700] = "";
  cluster_spec(d, cluster, sizeof cluster);
  char *dir = d->o.out_dir ? mdl_xstrdup(d->o.out_dir) : resolve_path(d->base_dir, "out");
  mkdir(dir, 0755); /* the run makes it later; the cache needs it now */
  snprintf(path, sizeof path, "%s/calibration.txt", dir);
  free(dir);
  char key[sizeof((mdl_calibration *)0)->key];
  mdl_calibration_key(timing_fingerprint(d), cluster, d->o.threads, key, sizeof key);
  mdl_calibration c;
  bool found = false;
  mdl_status st = mdl_calibration_load(path, key, n, &c, &found, err);
  if (st == MDL_OK && found)
    dlog(d, "calibration: reused %s (same plan, cluster and machine)", path);
  if (st == MDL_OK && !found) {
    memset(&c, 0, sizeof c);
    memcpy(c.key, key, sizeof key);
    c.n_workers = n;
    c.worker = mdl_xcalloc((size_t)n, sizeof *c.worker);
    c.weight_bytes = (double)d->n_params * sizeof(float);
    c.worker_batch = (int64_t)d->train_batch;
    double t0 = mdl_now();
    found = measure_all(d, act, n, CALIBRATE_ITERS, &c, why, sizeof why);
    if (found && d->iter == 0 && !d->res->resumed)
      st = fit(d, act, n, &c, why, sizeof why, &found, err);
    if (st == MDL_OK && found) {
      dlog(d, "calibration: measured in %.2f s, cached in %s", mdl_now() - t0, path);
      mdl_error werr = {0};
      if (mdl_calibration_save(path, &c, &werr) != MDL_OK)
        dlog(d, "calibration: not cached: %s", werr.msg);
    } else if (st == MDL_OK) {
      dlog(d, "calibration: skipped (%s); tau stays %d", why, d->tau);
    }
  }
  for (int i = 0; st == MDL_OK && found && i < n; i++) {
    char line[400];
    mdl_calibration_line(&c, i, line, sizeof line);
    dlog(d, "%s (%s)", line, act[i]->addr);
  }
  if (st == MDL_OK && found) st = apply(d, &c, act, err);
  if (found) {
    mdl_calibration_free(&d->res->calibration);
    d->res->calibration = c; /* the result's now */
  } else {
    mdl_calibration_free(&c);
  }
  free(act);
  return st;
}

/* What a round costs beyond its iterations, from a window of rounds: the
 * workers' communication, and straggling: the mean round time over the
 * slowest worker's mean (the price of each round waiting for whichever
 * worker is slow this time, a fixed cost per round that longer rounds
 * amortize unless judge_rise finds it grows with them; a worker slow on
 * average is the shares' business, not tau's, and does not count). */
static double straggling(driver *d, double wall_mean) {
  double slowest = 0;
  for (int i = 0; i < d->k; i++) {
    slot *s = &d->s[i];
    if (s->retune_n > 0 && s->retune_rtt / s->retune_n > slowest)
      slowest = s->retune_rtt / s->retune_n;
    s->retune_rtt = 0;
    s->retune_n = 0;
  }
  return wall_mean > slowest ? wall_mean - slowest : 0;
}

/* Whether worker s finished a round since *seen (its round count when a
 * window last took its figures), moving *seen on: a worker left out of a
 * round keeps the figures of the one before, which must not count twice. */
static bool finished_since(const slot *s, int *seen) {
  if (s->total.rounds == *seen) return false;
  *seen = s->total.rounds;
  return true;
}

/* The part of a window's straggling that grows with the round: all of it
 * once a rise has been judged so, none before. */
static double growing(const driver *d, const retune_window *w) {
  return d->retune_grows ? w->straggle : 0;
}

/* The tau the tuner asks for when a window's communication and its fixed
 * straggling are what a round costs, and straggling that grows with the
 * round a cost of every iteration. */
static int retune_tau(const driver *d, const retune_window *w) {
  double grows = growing(d, w);
  mdl_tune_worker row = {.sample_s = w->iter_s + grows / w->t,
                         .latency_s = w->comm + w->straggle - grows};
  mdl_tune_table t = {
      .n_workers = 1, .worker = &row, .global_batch = 1, .max_comm_fraction = comm_bound(d)};
  int64_t one;
  mdl_tune_plan p;
  mdl_tune(&t, &one, &p);
  return p.tau > MDL_WORKER_MAX_TAU ? MDL_WORKER_MAX_TAU : p.tau;
}

/* A rise must lengthen the round this much to be judged: below it, what a
 * fixed cost would save is lost in a window's noise. */
#define MDL_RETUNE_JUDGE_RATIO 1.5

/* Straggling grows with the round when a rise left its share of the
 * compute at least this much of what it was (a fixed cost per round would
 * have fallen in proportion to the round, by a third or more). */
#define MDL_RETUNE_GROWS 0.9

/* Judges the last rise of tau for straggling by the first window after it
 * (b; a the window that asked for it): a fixed cost per round falls as a
 * share of the round when the round grows; straggling in proportion to the
 * round does not -- as when the workers share the cores they compute on,
 * and a longer round waits just as long in proportion. When it did not
 * fall, straggling counts as compute from then on: tau stops climbing for
 * it (the rise made stays: with more workers than cores straggling may
 * grow with short rounds and still level off with long ones, which a
 * window at a lower tau cannot tell). a was picked for its excess, and the
 * window after it tends to straggle less whatever tau is: the verdict
 * leans to a fixed cost, the rule before any verdict. */
static void judge_rise(driver *d, const retune_window *b) {
  const retune_window a = d->retune_raised;
  double ca = a.t * a.iter_s, cb = b->t * b->iter_s;
  int to = d->retune_raised_to;
  d->retune_raised_to = 0;
  /* judged before, not a rise for straggling, or too small to tell */
  if (d->retune_grows || to != d->tau || !(a.straggle > a.comm) ||
      !(cb >= MDL_RETUNE_JUDGE_RATIO * ca))
    return;
  double sa = a.straggle / ca, sb = b->straggle / cb;
  d->retune_grows = sb >= MDL_RETUNE_GROWS * sa;
  dlog(d,
       "tau %d judged: straggling was %.1f%% of the compute at %.0f iterations a round, %.1f%% "
       "at %.0f: %s",
       to, 100 * sa, a.t, 100 * sb, b->t,
       d->retune_grows ? "it grows with the round, which no tau amortizes; from now on it "
                         "counts as compute, and tau does not climb for it"
                       : "it fell with the longer round, as a cost per round does");
}

void mdl_driver_retune(driver *d, int tau, double wall, double comm) {
  if (!d->o.tau_tuned) return;
  d->retune_rounds++;
  d->retune_iters += tau;
  d->retune_wall += wall;
  d->retune_comm += comm;
  for (int i = 0; i < d->k; i++) { /* the members of the round just ended */
    slot *s = &d->s[i];
    if (!finished_since(s, &s->retune_seen)) continue;
    s->retune_rtt += s->rtt_s;
    s->retune_n++;
  }
  if (d->retune_rounds < MDL_DRIVER_WINDOW) return;
  int rounds = d->retune_rounds;
  double wall_s = d->retune_wall;
  retune_window w = {.t = (double)d->retune_iters / rounds,
                     .comm = d->retune_comm / rounds,
                     .straggle = straggling(d, wall_s / rounds)};
  w.iter_s = (wall_s - (w.comm + w.straggle) * rounds) / d->retune_iters;
  d->retune_rounds = d->retune_iters = 0;
  d->retune_wall = d->retune_comm = 0;
  if (!(w.iter_s > 0)) return;
  if (d->retune_raised_to) judge_rise(d, &w);
  double f = comm_bound(d), grows = growing(d, &w);
  double share = (w.comm + w.straggle - grows) * rounds / wall_s;
  /* half the bound below it: averaging more often helps convergence, and
   * the gap keeps tau from flapping between two values */
  if ((share <= f && share >= f / 2) || (share < f / 2 && d->tau == 1)) return;
  int next = retune_tau(d, &w);
  /* a share measured too high once is not trusted to have gone: the
   * round's fixed costs vary with the machine's load, and a tau that
   * swings back and forth would change convergence for nothing */
  if (next < d->retune_floor) next = d->retune_floor;
  if (next > d->tau) {
    d->retune_raised_to = next;
    d->retune_raised = w;
    d->retune_floor = next;
  }
  if (next == d->tau) return;
  dlog(d,
       "tau %d -> %d: communication and straggling took %.1f%% of the last %d rounds "
       "(communication %.1f%%, straggling %.1f%%%s; bound %.0f%%; measured %.2f ms per "
       "iteration, %.2f ms per round)",
       d->tau, next, 100 * share, rounds, 100 * w.comm * rounds / wall_s,
       100 * w.straggle * rounds / wall_s, grows > 0 ? " counted as compute" : "", 100 * f,
       (w.iter_s + grows / w.t) * 1e3, (w.comm + w.straggle - grows) * 1e3);
  d->tau = next;
}

/* --- shares that follow speed during the run ------------------------------ */

static double median(const double *v, int n) {
  double a[MDL_DRIVER_WINDOW];
  memcpy(a, v, (size_t)n * sizeof *a);
  for (int i = 1; i < n; i++) /* insertion sort: a handful of values */
    for (int j = i; j > 0 && a[j] < a[j - 1]; j--) {
      double t = a[j];
      a[j] = a[j - 1];
      a[j - 1] = t;
    }
  return n % 2 ? a[n / 2] : 0.5 * (a[n / 2 - 1] + a[n / 2]);
}

/* The round just ended into each worker's window (a worker that did not
 * finish it adds nothing). Returns whether the window is complete. */
static bool window_add(driver *d, int tau) {
  for (int i = 0; i < d->k; i++) {
    slot *s = &d->s[i];
    if (!s->alive || !finished_since(s, &s->win_seen)) continue;
    if (s->win_n >= MDL_DRIVER_WINDOW || tau < 1) continue;
    s->win_iter_s[s->win_n] = s->compute_s / tau;
    s->win_comm_s[s->win_n] = s->rtt_s > s->compute_s ? s->rtt_s - s->compute_s : 0;
    s->win_n++;
  }
  return ++d->rebalance_rounds >= MDL_DRIVER_WINDOW;
}

/* Worker s's row from its window: its model (the calibration's split of
 * an iteration into fixed and per-sample time) rescaled to the mean
 * iteration it measured at its batch b -- a worker whose cores are now
 * shared slows down in both parts -- or, with no model, all per sample.
 * The mean, not the median: shares follow a worker's speed on average, and
 * workers that take turns being slow (a median sees whichever was slow in
 * three rounds of five) are equal, as far as the mean's standard error
 * can tell (mdl_tune_rebalance); the communication's median leaves out a
 * stalled round. */
static mdl_tune_worker window_row(slot *s, int64_t b, double *iter_s) {
  *iter_s = mean(s->win_iter_s, s->win_n);
  double pred = s->model_fixed_s + (double)b * s->model_sample_s;
  if (pred > 0 && s->model_sample_s > 0) {
    double r = *iter_s / pred;
    s->model_fixed_s *= r;
    s->model_sample_s *= r;
  } else {
    s->model_fixed_s = 0;
    s->model_sample_s = *iter_s / (double)b;
  }
  return (mdl_tune_worker){.sample_s = s->model_sample_s,
                           .fixed_s = s->model_fixed_s,
                           .latency_s = median(s->win_comm_s, s->win_n),
                           .iter_se_s = std_error(s->win_iter_s, s->win_n, *iter_s)};
}

/* The new shares (share[], 0: the net's) to the n workers act, with their
 * optimiser states, so training goes on where it was. */
static mdl_status reshare(driver *d, slot *const *act, int n, const int64_t *share,
                          mdl_error *err) {
  Memdl__WorkerSnapshot *ws = mdl_xcalloc((size_t)d->k, sizeof *ws);
  Memdl__WorkerSnapshot **wp = mdl_xcalloc((size_t)d->k, sizeof *wp);
  for (int i = 0; i < d->k; i++) wp[i] = &ws[i];
  mdl_rpc_call *calls = NULL;
  int nc = 0;
  bool complete = true;
  mdl_status st = mdl_driver_gather_states(d, ws, &calls, &nc, &complete, err);
  if (st == MDL_OK && !complete)
    dlog(d, "blocks: kept (a worker did not give its state; its round will deal with it)");
  if (st == MDL_OK && complete) {
    Memdl__DriverSnapshot states = MEMDL__DRIVER_SNAPSHOT__INIT;
    states.n_worker = (size_t)d->k;
    states.worker = wp;
    st = set_shares(d, act, n, share, true, &states, err);
  }
  mdl_rpc_calls_clear(calls, nc);
  free(calls);
  free(ws);
  free(wp);
  return st;
}

/* The table of the window's measurements over the workers act (*n of
 * them; cur[] their shares), what they measured into measured; false (the
 * window dropped) when a worker is dead or did not report, or no
 * iterations are left. Empties every window. */
static bool window_table(driver *d, slot **act, int *n, mdl_tune_worker *rows, int64_t *cur,
                         char *measured, size_t cap) {
  bool all = d->iter < d->max_iter;
  *n = 0;
  for (int i = 0; i < d->k; i++) {
    slot *s = &d->s[i];
    /* Setup goes to every slot: wait until a dead one is back */
    all = all && s->alive && s->win_n > 0;
    if (s->alive && s->n_train > 0) act[(*n)++] = s;
  }
  size_t off = 0;
  measured[0] = 0;
  for (int i = 0; all && i < *n; i++) {
    cur[i] = act[i]->batch ? (int64_t)act[i]->batch : (int64_t)d->train_batch;
    double it;
    rows[i] = window_row(act[i], cur[i], &it);
    if (off < cap)
      off += (size_t)snprintf(measured + off, cap - off, "%sworker %d %.1f ms at %lld",
                              i ? ", " : "", act[i]->index, it * 1e3, (long long)cur[i]);
  }
  for (int i = 0; i < d->k; i++) d->s[i].win_n = 0;
  return all && *n >= 2;
}

mdl_status mdl_driver_rebalance(driver *d, int tau, mdl_error *err) {
  bool follows = (d->o.calibrate || d->o.tau_tuned) && !d->o.calibrate_only;
  if (!follows || d->k < 2 || d->k > MDL_TUNE_MAX_WORKERS || !d->train_batch) return MDL_OK;
  /* the first round of a process or after a Setup builds the arenas */
  if (d->rounds_here <= 1 || d->round <= d->rebalance_skip) return MDL_OK;
  if (!window_add(d, tau)) return MDL_OK;
  int first = d->round - d->rebalance_rounds + 1, n = 0;
  d->rebalance_rounds = 0;
  slot *act[MDL_TUNE_MAX_WORKERS];
  mdl_tune_worker rows[MDL_TUNE_MAX_WORKERS];
  int64_t cur[MDL_TUNE_MAX_WORKERS], share[MDL_TUNE_MAX_WORKERS], global = 0;
  char measured[1024];
  if (!window_table(d, act, &n, rows, cur, measured, sizeof measured)) {
    d->rebalance_proposed = 0; /* the next window has none before it to agree with */
    d->rebalance_kept_said = false;
    return MDL_OK;
  }
  for (int i = 0; i < n; i++) global += cur[i];
  mdl_tune_table t = {.n_workers = n,
                      .worker = rows,
                      .global_batch = global,
                      .weight_bytes = (double)d->n_params * sizeof(float),
                      .max_comm_fraction = comm_bound(d),
                      .fixed_tau = d->tau};
  mdl_tune_rebalance_result r;
  mdl_tune_rebalance(&t, cur, share, &r);
  /* Two windows in a row must propose a change, every share moving the
   * same way in both: on a machine whose cores the workers share with each
   * other or with other work, which worker is slow changes from window to
   * window, and shares that chase it cost a Setup each for nothing.
   * rebalance_proposed holds the first round of the windows that have
   * proposed it so far. */
  bool agree = r.change && d->rebalance_proposed > 0;
  for (int i = 0; i < n; i++) {
    int dir = !r.change ? 0 : share[i] > cur[i] ? 1 : share[i] < cur[i] ? -1 : 0;
    agree = agree && dir == act[i]->win_dir;
    act[i]->win_dir = dir;
  }
  int before = d->rebalance_proposed;
  d->rebalance_proposed = r.change && !agree ? first : 0;
  if (!agree) {
    d->rebalance_kept_said = false;
    return MDL_OK;
  }
  char now[1024], was[1024], reason[1400];
  shares_text(act, n, share, now, sizeof now);
  shares_text(act, n, cur, was, sizeof was);
  snprintf(reason, sizeof reason,
           "rounds %d-%d took %s samples per iteration (rounds %d-%d pointed the same way)", first,
           d->round, measured, before, first - 1);
  /* A change costs a Setup: what it saves must win back what the last one
   * took (the run's first, before any change). The difference is expected
   * to last as long again as it has been seen (a worker slowed for good
   * keeps paying; one that a busy machine slowed for a second does not),
   * and no longer than the run. */
  int left = (d->max_iter - d->iter + d->tau - 1) / d->tau;
  int seen = d->round - before + 1, horizon = seen < left ? seen : left;
  double saves = (r.round_cur_s - r.round_s) * horizon;
  if (saves < d->setup_s) {
    if (!d->rebalance_kept_said) /* once while the same change stands proposed */
      dlog(d,
           "blocks: kept (%s would save %.2f s over %d rounds, as long as the difference has "
           "lasted or the run has left; setting the workers up last took %.2f s): %s",
           now, saves, horizon, d->setup_s, reason);
    d->rebalance_kept_said = true;
    d->rebalance_proposed = before; /* if it lasts, the next window's horizon is longer */
    return MDL_OK;
  }
  bool equal = !r.balanced;
  for (int i = 0; equal && i < n; i++) equal = share[i] == (int64_t)d->train_batch;
  if (equal)
    dlog(d,
         "blocks: equal, %lld samples per worker per iteration (were %s): %s; predicted round "
         "%.1f ms, %.1f ms with the current blocks",
         (long long)d->train_batch, was, reason, r.round_s * 1e3, r.round_cur_s * 1e3);
  else
    dlog(d,
         "blocks by measured speed: %s samples per iteration (global batch %lld kept; were %s): "
         "%s; predicted round %.1f ms, %.1f ms with the current blocks",
         now, (long long)global, was, reason, r.round_s * 1e3, r.round_cur_s * 1e3);
  for (int i = 0; equal && i < n; i++) share[i] = 0; /* the net's own */
  double t0 = mdl_now();
  mdl_status st = reshare(d, act, n, share, err);
  d->setup_s = mdl_now() - t0;
  if (st == MDL_OK)
    dlog(d, "blocks: the workers were set up again in %.2f s (their optimiser states kept)",
         d->setup_s);
  /* setting up is not training: out of images/s and the ETA */
  mdl_progress_exclude(&d->prog, d->setup_s);
  d->aside_s += d->setup_s;
  d->rebalance_skip = d->round + 1;
  d->rebalance_kept_said = false;
  if (st == MDL_OK) mdl_driver_report_rebalance(d, reason, r.round_cur_s, r.round_s);
  return st;
}
