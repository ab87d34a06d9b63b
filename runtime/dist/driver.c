/* The driver's rounds, averaging, faults and snapshots (see driver.h). The
 * driver is single-threaded: gRPC completions are consumed inside
 * mdl_rpc_call_all, so nothing here needs a lock. */
#define _GNU_SOURCE
#include "runtime/dist/driver.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/log.h"
#include "common/pb.h"
#include "rpc.pb-c.h"
#include "runtime/train/accept.h"
#include "runtime/dist/launcher.h"
#include "runtime/rpc/rpc.h"
#include "runtime/dist/worker.h"

#define SNAPSHOT_VERSION 1

typedef struct slot {
  int index;
  char addr[300];
  char device[64];
  mdl_rpc_channel *ch;
  bool alive;
  Memdl__PartitionLineage **train, **test; /* borrowed from the driver's lists */
  size_t n_train, n_test;
  float *recv; /* reply weights, reused */
  uint64_t samples;
  double compute_s, rtt_s;
  mdl_driver_worker_stats total;
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
  char snapshot_path[1024];
  volatile sig_atomic_t *abort;
  mdl_driver_result *res;
} driver;

static void dlog(driver *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dlog(driver *d, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  mdl_vlogf(d->log, "memdl driver: ", fmt, ap);
  va_end(ap);
}

/* --- averaging ------------------------------------------------------------ */

typedef struct avg_job {
  float *out;
  const float *const *w;
  const float *c;
  int k;
  size_t begin, end;
} avg_job;

static void average_range(float *out, const float *const *w, const float *c, int k, size_t b,
                          size_t e) {
  const float *w0 = w[0];
  float c0 = c[0];
  for (size_t j = b; j < e; j++) out[j] = c0 * w0[j];
  for (int i = 1; i < k; i++) {
    const float *wi = w[i];
    float ci = c[i];
    for (size_t j = b; j < e; j++) out[j] += ci * wi[j];
  }
}

static void *average_thread(void *arg) {
  avg_job *j = arg;
  /* blocks of 16K floats keep out[] in cache across the k passes */
  for (size_t b = j->begin; b < j->end; b += 16384) {
    size_t e = b + 16384 < j->end ? b + 16384 : j->end;
    average_range(j->out, j->w, j->c, j->k, b, e);
  }
  return NULL;
}

void mdl_driver_average(float *out, const float *const *w, const uint64_t *samples, int k,
                        size_t n) {
  const float *ws[k > 0 ? k : 1];
  float c[k > 0 ? k : 1];
  double total = 0;
  int m = 0;
  for (int i = 0; i < k; i++) total += (double)samples[i];
  for (int i = 0; i < k; i++)
    if (samples[i] > 0) {
      ws[m] = w[i];
      c[m] = (float)((double)samples[i] / total);
      m++;
    }
  if (m == 0) return;
  /* the element-wise order (worker 0, then 1, ...) never depends on the
   * split, so any thread count gives the same bits */
  int nt = n >= ((size_t)1 << 17) ? 4 : 1;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus > 0 && nt > cpus) nt = (int)cpus;
  avg_job jobs[4];
  pthread_t th[4];
  bool started[4] = {false};
  size_t chunk = (n / (size_t)nt + 4095) & ~(size_t)4095;
  for (int t = 0; t < nt; t++) {
    size_t b = (size_t)t * chunk, e = b + chunk;
    if (b > n) b = n;
    if (e > n || t == nt - 1) e = n;
    jobs[t] = (avg_job){out, ws, c, m, b, e};
    if (t > 0 && pthread_create(&th[t], NULL, average_thread, &jobs[t]) == 0) started[t] = true;
  }
  average_thread(&jobs[0]);
  for (int t = 1; t < nt; t++) {
    if (started[t])
      pthread_join(th[t], NULL);
    else
      average_thread(&jobs[t]);
  }
}

/* --- files ----------------------------------------------------------------- */

static char *resolve_path(const char *base, const char *p) {
  if (!p) return NULL;
  if (p[0] == '/' || !base || !base[0]) return mdl_xstrdup(p);
  size_t n = strlen(base) + strlen(p) + 2;
  char *r = mdl_xmalloc(n);
  snprintf(r, n, "%s/%s", base, p);
  return r;
}

static uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

/* --- RPC plumbing ------------------------------------------------------------ */

/* Reply weights go straight into the slot's buffer once their size is right. */
typedef struct recv_ctx {
  slot *s;
  size_t bytes;
} recv_ctx;

static void *recv_dest(void *ctx, size_t len, mdl_error *err) {
  recv_ctx *r = ctx;
  if (len != r->bytes) {
    mdl_errorf(err, MDL_ERR_INVALID, "weights of %zu bytes, expected %zu", len, r->bytes);
    return NULL;
  }
  return r->s->recv;
}

static void call_init(driver *d, mdl_rpc_call *c, slot *s, const char *method,
                      const ProtobufCMessage *req, const ProtobufCMessageDescriptor *reply) {
  memset(c, 0, sizeof *c);
  c->ch = s->ch;
  c->method = method;
  c->req.msg = req;
  c->reply_spec.desc = reply;
  c->reply_spec.max_bytes = MDL_WORKER_MAX_SETUP_BYTES;
}

static mdl_status open_channel(driver *d, slot *s, mdl_error *err) {
  mdl_rpc_channel_free(s->ch);
  s->ch = NULL;
  mdl_status st = mdl_rpc_channel_new(s->addr, &d->chopts, &s->ch, err);
  if (st != MDL_OK) mdl_error_prefix(err, "worker %d (%s): ", s->index, s->addr);
  return st;
}

/* --- setup ----------------------------------------------------------------- */

/* Sets up the given slots (in parallel) with their partitions and, when
 * states is not NULL, their optimiser state. Slots whose Setup fails are
 * marked dead; returns an error only for local failures or a model that
 * does not match. */
static mdl_status setup_slots(driver *d, slot **which, int n, Memdl__WorkerSnapshot **states,
                              int *ok_count, mdl_error *err) {
  *ok_count = 0;
  if (n == 0) return MDL_OK;
  Memdl__SetupRequest *req = mdl_xcalloc((size_t)n, sizeof *req);
  mdl_rpc_call *calls = mdl_xcalloc((size_t)n, sizeof *calls);
  for (int i = 0; i < n; i++) {
    slot *s = which[i];
    memdl__setup_request__init(&req[i]);
    req[i].has_plan = 1;
    req[i].plan.data = d->plan_bytes;
    req[i].plan.len = d->plan_len;
    req[i].has_worker_index = req[i].has_num_workers = req[i].has_seed = req[i].has_session = 1;
    req[i].worker_index = (uint32_t)s->index;
    req[i].num_workers = (uint32_t)d->k;
    req[i].seed = d->seed;
    req[i].session = d->session;
    req[i].trainer = (char *)d->trainer_name;
    req[i].n_train_partition = s->n_train;
    req[i].train_partition = s->train;
    req[i].n_test_partition = s->n_test;
    req[i].test_partition = s->test;
    if (s->device[0]) req[i].device = s->device;
    if (d->shm) {
      req[i].shm_path = d->shm_path;
      req[i].has_shm_stride = 1;
      req[i].shm_stride = d->shm_stride;
    }
    if (states && states[i] && states[i]->has_state && states[i]->state.len) {
      req[i].has_state = 1;
      req[i].state = states[i]->state;
    }
    call_init(d, &calls[i], s, MDL_WORKER_SETUP, &req[i].base, &memdl__setup_reply__descriptor);
    calls[i].wait_for_ready = true;
  }
  mdl_status st = mdl_rpc_call_all(calls, n, d->setup_timeout_ms, d->abort, err);
  for (int i = 0; st == MDL_OK && i < n; i++) {
    slot *s = which[i];
    if (calls[i].code != MDL_RPC_OK) {
      dlog(d, "worker %d (%s): Setup failed: %s %s", s->index, s->addr,
           mdl_rpc_code_name(calls[i].code), calls[i].detail);
      s->alive = false;
      continue;
    }
    const Memdl__SetupReply *r = (const Memdl__SetupReply *)calls[i].reply;
    if (r->param_count != d->n_params) {
      st = mdl_errorf(err, MDL_ERR_INVALID,
                      "worker %d (%s) built a model of %llu parameters; the driver's has %zu",
                      s->index, s->addr, (unsigned long long)r->param_count, d->n_params);
      break;
    }
    s->alive = true;
    snprintf(s->total.address, sizeof s->total.address, "%s", s->addr);
    dlog(d, "worker %d at %s (%s on %s): %zu train / %zu test partitions, %llu / %llu samples",
         s->index, s->addr, r->device ? r->device : "?", r->host ? r->host : "?", s->n_train,
         s->n_test, (unsigned long long)r->train_samples, (unsigned long long)r->test_samples);
    (*ok_count)++;
  }
  mdl_rpc_calls_clear(calls, n);
  free(calls);
  free(req);
  return st;
}

/* --- faults ------------------------------------------------------------------ */

static void lineage_push(Memdl__PartitionLineage ***arr, size_t *n, Memdl__PartitionLineage *l) {
  *arr = mdl_xrealloc(*arr, (*n + 1) * sizeof **arr);
  (*arr)[(*n)++] = l;
}

static void lineage_remove(Memdl__PartitionLineage **arr, size_t *n, Memdl__PartitionLineage *l) {
  for (size_t i = 0; i < *n; i++)
    if (arr[i] == l) {
      memmove(arr + i, arr + i + 1, (*n - i - 1) * sizeof *arr);
      (*n)--;
      return;
    }
}

static int alive_count(driver *d) {
  int n = 0;
  for (int i = 0; i < d->k; i++) n += d->s[i].alive;
  return n;
}

static mdl_status kill_slot(driver *d, slot *dead, const char *why, mdl_error *err);

/* Moves the partitions of `from` to the survivors (round-robin in slot
 * order) with Reassign calls; survivors that fail are removed in turn. */
static mdl_status move_partitions(driver *d, slot *from, mdl_error *err) {
  if (from->n_train == 0 && from->n_test == 0) return MDL_OK;
  int n_alive = alive_count(d);
  if (n_alive == 0) return mdl_errorf(err, MDL_ERR_INTERNAL, "no workers left");
  slot **surv = mdl_xcalloc((size_t)n_alive, sizeof *surv);
  int m = 0;
  for (int i = 0; i < d->k; i++)
    if (d->s[i].alive) surv[m++] = &d->s[i];
  Memdl__ReassignRequest *req = mdl_xcalloc((size_t)m, sizeof *req);
  for (int i = 0; i < m; i++) {
    memdl__reassign_request__init(&req[i]);
    req[i].has_session = 1;
    req[i].session = d->session;
  }
  for (size_t p = 0; p < from->n_train; p++)
    lineage_push(&req[p % (size_t)m].add_train, &req[p % (size_t)m].n_add_train, from->train[p]);
  for (size_t p = 0; p < from->n_test; p++)
    lineage_push(&req[p % (size_t)m].add_test, &req[p % (size_t)m].n_add_test, from->test[p]);
  mdl_rpc_call *calls = mdl_xcalloc((size_t)m, sizeof *calls);
  for (int i = 0; i < m; i++)
    call_init(d, &calls[i], surv[i], MDL_WORKER_REASSIGN, &req[i].base,
              &memdl__reassign_reply__descriptor);
  mdl_status st = mdl_rpc_call_all(calls, m, d->setup_timeout_ms, d->abort, err);
  free(from->train);
  free(from->test);
  from->train = from->test = NULL;
  from->n_train = from->n_test = 0;
  slot **failed = mdl_xcalloc((size_t)m, sizeof *failed);
  int n_failed = 0;
  for (int i = 0; st == MDL_OK && i < m; i++) {
    slot *s = surv[i];
    /* the partitions are the survivor's now, whether it took them or not:
     * if it failed, they move on with its own */
    for (size_t p = 0; p < req[i].n_add_train; p++)
      lineage_push(&s->train, &s->n_train, req[i].add_train[p]);
    for (size_t p = 0; p < req[i].n_add_test; p++)
      lineage_push(&s->test, &s->n_test, req[i].add_test[p]);
    if (calls[i].code != MDL_RPC_OK) {
      dlog(d, "worker %d (%s): Reassign failed: %s %s", s->index, s->addr,
           mdl_rpc_code_name(calls[i].code), calls[i].detail);
      failed[n_failed++] = s;
    } else {
      dlog(d, "worker %d (%s) took %zu train and %zu test partitions (rebuilt from lineage)",
           s->index, s->addr, req[i].n_add_train, req[i].n_add_test);
    }
  }
  mdl_rpc_calls_clear(calls, m);
  for (int i = 0; i < m; i++) {
    free(req[i].add_train);
    free(req[i].add_test);
  }
  free(req);
  free(calls);
  free(surv);
  for (int i = 0; st == MDL_OK && i < n_failed; i++)
    st = kill_slot(d, failed[i], "failed to take partitions", err);
  free(failed);
  return st;
}

/* Local mode: a new process for a dead slot, which takes its partitions
 * back from the survivors. Failure leaves the slot dead (not an error). */
static mdl_status replace_slot(driver *d, slot *s, Memdl__PartitionLineage **train, size_t n_train,
                               Memdl__PartitionLineage **test, size_t n_test, mdl_error *err) {
  mdl_error e2;
  mdl_error_clear(&e2);
  if (mdl_local_workers_restart(d->lw, s->index, &e2) != MDL_OK) {
    dlog(d, "worker %d: cannot start a replacement: %s", s->index, e2.msg);
    return MDL_OK;
  }
  snprintf(s->addr, sizeof s->addr, "%s", mdl_local_workers_address(d->lw, s->index));
  if (open_channel(d, s, &e2) != MDL_OK) {
    dlog(d, "%s", e2.msg);
    return MDL_OK;
  }
  /* take the partitions back from whoever holds them now */
  Memdl__ReassignRequest *req = mdl_xcalloc((size_t)d->k, sizeof *req);
  Memdl__PartitionRef *refs = mdl_xcalloc(n_train + n_test + 1, sizeof *refs);
  size_t nr = 0;
  for (int i = 0; i < d->k; i++) {
    memdl__reassign_request__init(&req[i]);
    req[i].has_session = 1;
    req[i].session = d->session;
  }
  Memdl__PartitionLineage ***lists[2] = {&train, &test};
  size_t counts[2] = {n_train, n_test};
  for (int ph = 0; ph < 2; ph++)
    for (size_t p = 0; p < counts[ph]; p++) {
      Memdl__PartitionLineage *l = (*lists[ph])[p];
      for (int i = 0; i < d->k; i++) {
        slot *o = &d->s[i];
        if (o == s || !o->alive) continue;
        Memdl__PartitionLineage **arr = ph == 0 ? o->train : o->test;
        size_t n = ph == 0 ? o->n_train : o->n_test;
        for (size_t q = 0; q < n; q++)
          if (arr[q] == l) {
            memdl__partition_ref__init(&refs[nr]);
            refs[nr].data = l->data->name;
            refs[nr].has_index = 1;
            refs[nr].index = l->index;
            Memdl__PartitionRef *r = &refs[nr++];
            if (ph == 0) {
              req[i].remove_train =
                  mdl_xrealloc(req[i].remove_train, (req[i].n_remove_train + 1) * sizeof(void *));
              req[i].remove_train[req[i].n_remove_train++] = r;
            } else {
              req[i].remove_test =
                  mdl_xrealloc(req[i].remove_test, (req[i].n_remove_test + 1) * sizeof(void *));
              req[i].remove_test[req[i].n_remove_test++] = r;
            }
          }
      }
    }
  /* Set the replacement up first: if it fails, nobody gives anything up. */
  s->train = NULL;
  s->test = NULL;
  s->n_train = s->n_test = 0;
  for (size_t p = 0; p < n_train; p++) lineage_push(&s->train, &s->n_train, train[p]);
  for (size_t p = 0; p < n_test; p++) lineage_push(&s->test, &s->n_test, test[p]);
  slot *one[1] = {s};
  int ok = 0;
  mdl_status st = setup_slots(d, one, 1, NULL, &ok, err);
  if (st == MDL_OK && ok == 1) {
    d->res->replacements++;
    dlog(d, "worker %d replaced: pid %d at %s, taking back its %zu train / %zu test partitions",
         s->index, (int)mdl_local_workers_pid(d->lw, s->index), s->addr, n_train, n_test);
    int m = 0;
    slot **owners = mdl_xcalloc((size_t)d->k, sizeof *owners);
    mdl_rpc_call *calls = mdl_xcalloc((size_t)d->k, sizeof *calls);
    Memdl__ReassignRequest **rq = mdl_xcalloc((size_t)d->k, sizeof *rq);
    for (int i = 0; i < d->k; i++)
      if (req[i].n_remove_train || req[i].n_remove_test) {
        owners[m] = &d->s[i];
        rq[m] = &req[i];
        call_init(d, &calls[m], &d->s[i], MDL_WORKER_REASSIGN, &req[i].base,
                  &memdl__reassign_reply__descriptor);
        m++;
      }
    st = mdl_rpc_call_all(calls, m, d->setup_timeout_ms, d->abort, err);
    for (int i = 0; st == MDL_OK && i < m; i++) {
      slot *o = owners[i];
      for (size_t p = 0; p < n_train; p++) lineage_remove(o->train, &o->n_train, train[p]);
      for (size_t p = 0; p < n_test; p++) lineage_remove(o->test, &o->n_test, test[p]);
      if (calls[i].code != MDL_RPC_OK) {
        /* it may still hold them: drop it rather than train twice on them */
        dlog(d, "worker %d (%s): giving partitions back failed: %s %s", o->index, o->addr,
             mdl_rpc_code_name(calls[i].code), calls[i].detail);
        o->alive = false;
        d->res->faults++;
        free(o->train);
        free(o->test);
        o->train = o->test = NULL;
        o->n_train = o->n_test = 0;
      }
    }
    mdl_rpc_calls_clear(calls, m);
    free(calls);
    free(owners);
    free(rq);
  } else if (st == MDL_OK) {
    free(s->train);
    free(s->test);
    s->train = s->test = NULL;
    s->n_train = s->n_test = 0;
    s->alive = false;
  }
  for (int i = 0; i < d->k; i++) {
    free(req[i].remove_train);
    free(req[i].remove_test);
  }
  free(req);
  free(refs);
  return st;
}

/* Removes a worker: its partitions go to the survivors; in local mode a
 * replacement starts and takes them back. */
static mdl_status kill_slot(driver *d, slot *dead, const char *why, mdl_error *err) {
  if (!dead->alive) return MDL_OK;
  dead->alive = false;
  d->res->faults++;
  /* a local worker that is dropped must not wake up and write its region */
  if (d->lw) mdl_local_workers_kill(d->lw, dead->index);
  dlog(d, "worker %d (%s) removed: %s; moving its %zu train / %zu test partitions", dead->index,
       dead->addr, why, dead->n_train, dead->n_test);
  Memdl__PartitionLineage **train = NULL, **test = NULL;
  size_t n_train = dead->n_train, n_test = dead->n_test;
  if (n_train) train = mdl_xmalloc(n_train * sizeof *train);
  if (n_test) test = mdl_xmalloc(n_test * sizeof *test);
  if (n_train) memcpy(train, dead->train, n_train * sizeof *train);
  if (n_test) memcpy(test, dead->test, n_test * sizeof *test);
  mdl_status st = MDL_OK;
  if (alive_count(d) > 0) st = move_partitions(d, dead, err);
  if (st == MDL_OK && d->lw && !d->o.no_replace)
    st = replace_slot(d, dead, train, n_train, test, n_test, err);
  else if (st == MDL_OK && alive_count(d) == 0 && !dead->alive) {
    /* nobody took them: keep them with the dead slot for the error message */
    st = mdl_errorf(err, MDL_ERR_INTERNAL, "every worker failed (last: worker %d, %s: %s)",
                    dead->index, dead->addr, why);
  }
  free(train);
  free(test);
  if (st == MDL_OK && alive_count(d) == 0)
    st = mdl_errorf(err, MDL_ERR_INTERNAL, "every worker failed (last: worker %d, %s: %s)",
                    dead->index, dead->addr, why);
  return st;
}

/* --- rounds ------------------------------------------------------------------- */

static void print_round(driver *d, int tau, double wall, double avg_s, slot **done, int n,
                        double loss) {
  if (d->o.quiet) return;
  /* one line per `display` iterations, as Caffe's loop prints (every round
   * when the solver does not say) */
  int disp = d->plan->solver->display;
  if (disp > 0 && d->iter / disp == (d->iter - tau) / disp && d->iter < d->max_iter) return;
  double comp = 0, comm = 0, wait = 0;
  uint64_t total = 0;
  for (int i = 0; i < n; i++) total += done[i]->samples;
  char per[1024];
  size_t off = 0;
  per[0] = 0;
  for (int i = 0; i < n; i++) {
    slot *s = done[i];
    double c = s->compute_s, m = s->rtt_s - s->compute_s, w = wall - s->rtt_s;
    if (m < 0) m = 0;
    comp += c;
    comm += m;
    wait += w;
    if (off < sizeof per - 64)
      off += (size_t)snprintf(per + off, sizeof per - off, " w%d %.0f%% %.3f/%.3f/%.3f", s->index,
                              total ? 100.0 * (double)s->samples / (double)total : 0.0, c, m, w);
  }
  comp /= n;
  comm /= n;
  wait /= n;
  fprintf(d->log,
          "round %d iter %d-%d (tau %d, %d workers) %.3f s: compute %.3f, communication %.3f, "
          "waiting %.3f, averaging %.3f; loss %.6g; share compute/comm/wait:%s\n",
          d->round, d->iter - tau, d->iter, tau, n, wall, comp, comm, wait, avg_s, loss, per);
  fflush(d->log);
}

static mdl_status run_round(driver *d, int tau, mdl_error *err) {
  for (int attempt = 0; attempt <= d->k; attempt++) {
    slot **act = mdl_xcalloc((size_t)d->k, sizeof *act);
    int n = 0;
    for (int i = 0; i < d->k; i++)
      if (d->s[i].alive && d->s[i].n_train > 0) act[n++] = &d->s[i];
    if (n == 0) {
      free(act);
      return mdl_errorf(err, MDL_ERR_INTERNAL, "no live worker holds training data");
    }
    Memdl__RoundRequest req = MEMDL__ROUND_REQUEST__INIT;
    req.has_session = req.has_round = req.has_iter_start = req.has_tau = 1;
    req.session = d->session;
    req.round = (uint32_t)d->round;
    req.iter_start = (uint32_t)d->iter;
    req.tau = (uint32_t)tau;
    req.has_weights_in_shm = req.weights_in_shm = d->shm;
    mdl_rpc_call *calls = mdl_xcalloc((size_t)n, sizeof *calls);
    recv_ctx *rc = mdl_xcalloc((size_t)n, sizeof *rc);
    for (int i = 0; i < n; i++) {
      call_init(d, &calls[i], act[i], MDL_WORKER_ROUND, &req.base, &memdl__round_reply__descriptor);
      calls[i].reply_spec.max_bytes = MDL_WORKER_MAX_SMALL_BYTES;
      calls[i].reply_spec.bulk_field = 1; /* RoundReply.weights */
      if (d->shm) continue;               /* weights stay in shared memory */
      calls[i].req.bulk_field = 5;        /* RoundRequest.weights */
      calls[i].req.bulk = d->w;
      calls[i].req.bulk_len = d->n_params * sizeof(float);
      calls[i].req.pin = d->w_pin;
      rc[i] = (recv_ctx){act[i], d->n_params * sizeof(float)};
      calls[i].reply_spec.bulk_dest = recv_dest;
      calls[i].reply_spec.bulk_ctx = &rc[i];
    }
    double t0 = mdl_rpc_now();
    mdl_status st = mdl_rpc_call_all(calls, n, d->round_timeout_ms, d->abort, err);
    double wall = mdl_rpc_now() - t0;
    mdl_rpc_pin_wait(d->w_pin); /* gRPC may still hold slices of d->w */
    slot **done = mdl_xcalloc((size_t)n, sizeof *done);
    const float **ws = mdl_xcalloc((size_t)n, sizeof *ws);
    uint64_t *samples = mdl_xcalloc((size_t)n, sizeof *samples);
    int m = 0;
    double loss = 0;
    uint64_t iters = 0;
    slot **failed = mdl_xcalloc((size_t)n, sizeof *failed);
    char(*why)[600] = mdl_xcalloc((size_t)n, sizeof *why);
    int n_failed = 0;
    for (int i = 0; st == MDL_OK && i < n; i++) {
      slot *s = act[i];
      const Memdl__RoundReply *r = (const Memdl__RoundReply *)calls[i].reply;
      bool weights_ok = d->shm ? r && r->weights_in_shm && calls[i].bulk_len == 0
                               : calls[i].bulk_len == d->n_params * sizeof(float);
      if (calls[i].code == MDL_RPC_OK &&
          (!weights_ok || r->samples == 0 || r->iterations != (uint32_t)tau)) {
        calls[i].code = MDL_RPC_DATA_LOSS;
        snprintf(calls[i].detail, sizeof calls[i].detail,
                 "reply without weights, samples or all %d iterations", tau);
      }
      if (calls[i].code != MDL_RPC_OK) {
        snprintf(why[n_failed], sizeof why[n_failed], "round %d: %s %s", d->round + 1,
                 mdl_rpc_code_name(calls[i].code), calls[i].detail);
        failed[n_failed++] = s;
        continue;
      }
      s->samples = r->samples;
      s->compute_s = r->compute_seconds;
      s->rtt_s = calls[i].seconds;
      s->total.compute_s += s->compute_s;
      s->total.comm_s += s->rtt_s > s->compute_s ? s->rtt_s - s->compute_s : 0;
      s->total.wait_s += wall - s->rtt_s;
      s->total.samples += r->samples;
      s->total.rounds++;
      loss += r->loss_sum;
      iters += r->iterations;
      done[m] = s;
      ws[m] = s->recv;
      samples[m] = r->samples;
      m++;
    }
    mdl_rpc_calls_clear(calls, n);
    free(calls);
    free(rc);
    for (int i = 0; st == MDL_OK && i < n_failed; i++) st = kill_slot(d, failed[i], why[i], err);
    if (st == MDL_OK && m > 0) {
      double a0 = mdl_rpc_now();
      mdl_driver_average(d->w, ws, samples, m, d->n_params);
      double avg_s = mdl_rpc_now() - a0;
      d->iter += tau;
      d->round++;
      d->rounds_here++;
      d->res->rounds++;
      d->res->average_s += avg_s;
      for (int i = 0; i < m; i++) {
        slot *s = done[i];
        d->res->compute_s += s->compute_s / m;
        d->res->comm_s += (s->rtt_s > s->compute_s ? s->rtt_s - s->compute_s : 0) / m;
        d->res->wait_s += (wall - s->rtt_s) / m;
      }
      print_round(d, tau, wall, avg_s, done, m, iters ? loss / (double)iters : 0);
      if (d->o.on_round) {
        int pids[d->k];
        for (int i = 0; i < d->k; i++)
          pids[i] = d->lw && d->s[i].alive ? (int)mdl_local_workers_pid(d->lw, i) : 0;
        mdl_driver_progress p = {d->round, d->iter, d->k, d->lw ? pids : NULL,
                                 iters ? loss / (double)iters : 0};
        d->o.on_round(d->o.on_round_ctx, &p);
      }
    }
    free(done);
    free(ws);
    free(samples);
    free(failed);
    free(why);
    free(act);
    if (st != MDL_OK || m > 0) return st;
    dlog(d, "round %d: no worker finished; retrying with the survivors", d->round + 1);
  }
  return mdl_errorf(err, MDL_ERR_INTERNAL, "round %d: workers keep failing", d->round + 1);
}

/* --- test ------------------------------------------------------------------- */

static mdl_status run_test(driver *d, int net, mdl_error *err) {
  int batches = (size_t)net < d->plan->solver->n_test_iter ? d->plan->solver->test_iter[net] : 0;
  slot **act = mdl_xcalloc((size_t)d->k, sizeof *act);
  int n = 0;
  for (int i = 0; i < d->k; i++)
    if (d->s[i].alive && d->s[i].n_test > 0) act[n++] = &d->s[i];
  if (n == 0) {
    free(act);
    return MDL_OK;
  }
  Memdl__TestRequest *req = mdl_xcalloc((size_t)n, sizeof *req);
  mdl_rpc_call *calls = mdl_xcalloc((size_t)n, sizeof *calls);
  for (int i = 0; i < n; i++) {
    memdl__test_request__init(&req[i]);
    req[i].has_session = req[i].has_iter = req[i].has_test_net = req[i].has_batches = 1;
    req[i].session = d->session;
    req[i].iter = (uint32_t)d->iter;
    req[i].test_net = (uint32_t)net;
    /* test_iter batches spread over the workers holding test data */
    req[i].batches = batches > 0 ? (uint32_t)(batches / n + (i < batches % n)) : 0;
    call_init(d, &calls[i], act[i], MDL_WORKER_TEST, &req[i].base, &memdl__test_reply__descriptor);
    if (d->shm) {
      req[i].has_weights_in_shm = req[i].weights_in_shm = 1;
    } else {
      calls[i].req.bulk_field = 5;
      calls[i].req.bulk = d->w;
      calls[i].req.bulk_len = d->n_params * sizeof(float);
      calls[i].req.pin = d->w_pin;
    }
    if (batches > 0 && req[i].batches == 0) calls[i].ch = NULL;
  }
  /* drop workers that have no batch to run */
  int m = 0;
  for (int i = 0; i < n; i++)
    if (calls[i].ch) {
      calls[m] = calls[i];
      act[m] = act[i];
      m++;
    }
  mdl_status st = mdl_rpc_call_all(calls, m, d->round_timeout_ms, d->abort, err);
  mdl_rpc_pin_wait(d->w_pin);
  /* sums per output name, in worker order */
  int n_out = 0;
  mdl_trainer_output *out = NULL;
  uint64_t total_batches = 0, samples = 0;
  slot **failed = mdl_xcalloc((size_t)(m ? m : 1), sizeof *failed);
  int n_failed = 0;
  for (int i = 0; st == MDL_OK && i < m; i++) {
    if (calls[i].code != MDL_RPC_OK) {
      dlog(d, "worker %d (%s): Test failed: %s %s", act[i]->index, act[i]->addr,
           mdl_rpc_code_name(calls[i].code), calls[i].detail);
      failed[n_failed++] = act[i];
      continue;
    }
    const Memdl__TestReply *r = (const Memdl__TestReply *)calls[i].reply;
    total_batches += r->batches;
    samples += r->samples;
    for (size_t o = 0; o < r->n_output; o++) {
      const Memdl__OutputSum *os = r->output[o];
      int k = 0;
      while (k < n_out && strcmp(out[k].name, os->name ? os->name : "")) k++;
      if (k == n_out) {
        out = mdl_xrealloc(out, (size_t)(n_out + 1) * sizeof *out);
        out[k].name = mdl_xstrdup(os->name ? os->name : "");
        out[k].n = (int)os->n_sum;
        out[k].sum = mdl_xcalloc(os->n_sum ? os->n_sum : 1, sizeof(double));
        n_out++;
      }
      for (size_t e = 0; e < os->n_sum && e < (size_t)out[k].n; e++) out[k].sum[e] += os->sum[e];
    }
  }
  mdl_rpc_calls_clear(calls, m);
  free(calls);
  free(req);
  free(act);
  for (int i = 0; st == MDL_OK && i < n_failed; i++)
    st = kill_slot(d, failed[i], "failed the TEST phase", err);
  free(failed);
  if (st != MDL_OK || total_batches == 0) {
    for (int k = 0; k < n_out; k++) {
      free(out[k].name);
      free(out[k].sum);
    }
    free(out);
    return st;
  }
  char line[1024];
  size_t used = 0;
  line[0] = 0;
  for (int k = 0; k < n_out; k++)
    for (int e = 0; e < out[k].n; e++) {
      out[k].sum[e] /= (double)total_batches;
      if (used < sizeof line)
        used += (size_t)snprintf(line + used, sizeof line - used, "%s%s%s %.4f", k || e ? ", " : "",
                                 out[k].name, out[k].n > 1 ? "[]" : "", out[k].sum[e]);
    }
  fprintf(d->log, "test net %d iter %d: %s (%llu batches, %llu samples%s)\n", net, d->iter, line,
          (unsigned long long)total_batches, (unsigned long long)samples,
          n_failed ? ", partial: a worker failed" : "");
  fflush(d->log);
  if (net == 0) {
    for (int k = 0; k < d->res->n_test; k++) {
      free(d->res->test[k].name);
      free(d->res->test[k].sum);
    }
    free(d->res->test);
    d->res->test = out;
    d->res->n_test = n_out;
  } else {
    for (int k = 0; k < n_out; k++) {
      free(out[k].name);
      free(out[k].sum);
    }
    free(out);
  }
  return MDL_OK;
}

static mdl_status run_tests(driver *d, mdl_error *err) {
  int nets = (int)d->plan->solver->n_test_iter;
  if (nets == 0 && d->n_all_test > 0) nets = 1;
  for (int i = 0; i < nets; i++) {
    mdl_status st = run_test(d, i, err);
    if (st != MDL_OK) return st;
  }
  return MDL_OK;
}

/* --- snapshots --------------------------------------------------------------- */

static mdl_status snapshot(driver *d, mdl_error *err) {
  double t0 = mdl_rpc_now();
  slot **act = mdl_xcalloc((size_t)d->k, sizeof *act);
  int n = 0;
  for (int i = 0; i < d->k; i++)
    if (d->s[i].alive) act[n++] = &d->s[i];
  Memdl__StateRequest req = MEMDL__STATE_REQUEST__INIT;
  req.has_session = 1;
  req.session = d->session;
  mdl_rpc_call *calls = mdl_xcalloc((size_t)(n ? n : 1), sizeof *calls);
  for (int i = 0; i < n; i++) {
    call_init(d, &calls[i], act[i], MDL_WORKER_STATE, &req.base, &memdl__state_reply__descriptor);
  }
  mdl_status st = mdl_rpc_call_all(calls, n, d->round_timeout_ms, d->abort, err);
  Memdl__DriverSnapshot snap = MEMDL__DRIVER_SNAPSHOT__INIT;
  Memdl__WorkerSnapshot *ws = mdl_xcalloc((size_t)d->k, sizeof *ws);
  Memdl__WorkerSnapshot **wp = mdl_xcalloc((size_t)d->k, sizeof *wp);
  bool complete = true;
  for (int i = 0; i < d->k; i++) {
    memdl__worker_snapshot__init(&ws[i]);
    ws[i].n_train_partition = d->s[i].n_train;
    ws[i].train_partition = d->s[i].train;
    ws[i].n_test_partition = d->s[i].n_test;
    ws[i].test_partition = d->s[i].test;
    wp[i] = &ws[i];
  }
  for (int i = 0; st == MDL_OK && i < n; i++) {
    if (calls[i].code != MDL_RPC_OK) {
      dlog(d, "worker %d (%s): State failed: %s %s; snapshot skipped", act[i]->index, act[i]->addr,
           mdl_rpc_code_name(calls[i].code), calls[i].detail);
      complete = false;
      continue;
    }
    const Memdl__StateReply *r = (const Memdl__StateReply *)calls[i].reply;
    ws[act[i]->index].has_state = 1;
    ws[act[i]->index].state = r->state;
  }
  if (st == MDL_OK && complete) {
    snap.has_version = snap.has_plan_hash = snap.has_num_workers = snap.has_seed = 1;
    snap.has_round = snap.has_iter = snap.has_weights = 1;
    snap.version = SNAPSHOT_VERSION;
    snap.plan_hash = d->plan_hash;
    snap.num_workers = (uint32_t)d->k;
    snap.seed = d->seed;
    snap.round = (uint32_t)d->round;
    snap.iter = (uint32_t)d->iter;
    snap.weights.data = (uint8_t *)d->w;
    snap.weights.len = d->n_params * sizeof(float);
    snap.n_worker = (size_t)d->k;
    snap.worker = wp;
    size_t len = protobuf_c_message_get_packed_size(&snap.base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
      st = mdl_errorf(err, MDL_ERR_NOMEM, "snapshot of %zu bytes", len);
    } else {
      protobuf_c_message_pack(&snap.base, buf);
      st = mdl_file_write_atomic(d->snapshot_path, buf, len, err);
      free(buf);
      if (st == MDL_OK)
        dlog(d, "snapshot at iteration %d (round %d): %s, %.1f MB in %.3f s", d->iter, d->round,
             d->snapshot_path, len / 1e6, mdl_rpc_now() - t0);
    }
  }
  mdl_rpc_calls_clear(calls, n);
  free(calls);
  free(ws);
  free(wp);
  free(act);
  return st;
}

/* Reads the snapshot; *snap NULL when there is none. */
static mdl_status load_snapshot(driver *d, Memdl__DriverSnapshot **snap, mdl_error *err) {
  *snap = NULL;
  if (access(d->snapshot_path, F_OK) != 0) return MDL_OK;
  char *buf = NULL;
  size_t len = 0;
  mdl_status st = mdl_file_read(d->snapshot_path, &buf, &len, err);
  if (st != MDL_OK) return st;
  Memdl__DriverSnapshot *s = (Memdl__DriverSnapshot *)protobuf_c_message_unpack(
      &memdl__driver_snapshot__descriptor, NULL, len, (const uint8_t *)buf);
  free(buf);
  if (!s) return mdl_errorf(err, MDL_ERR_INVALID, "%s: not a driver snapshot", d->snapshot_path);
  if (s->version != SNAPSHOT_VERSION || s->plan_hash != d->plan_hash) {
    mdl_pb_free(s);
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s was written for another job (or another version of it); move it away "
                      "to start over",
                      d->snapshot_path);
  }
  if (s->num_workers != (uint32_t)d->k || s->seed != d->seed) {
    uint32_t k = s->num_workers;
    uint64_t seed = s->seed;
    mdl_pb_free(s);
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s was written by a run on %u workers with seed %llu; this run has %d "
                      "workers and seed %llu",
                      d->snapshot_path, k, (unsigned long long)seed, d->k,
                      (unsigned long long)d->seed);
  }
  if (s->weights.len != d->n_params * sizeof(float) || s->n_worker != (size_t)d->k ||
      (int)s->iter > d->max_iter) {
    mdl_pb_free(s);
    return mdl_errorf(err, MDL_ERR_INVALID, "%s does not match the model", d->snapshot_path);
  }
  *snap = s;
  return MDL_OK;
}

/* --- model files and acceptance ---------------------------------------------- */

static mdl_status save_model(driver *d, mdl_error *err) {
  if (!d->model || !mdl_trainer_can_save(d->model)) return MDL_OK;
  char path[1200];
  snprintf(path, sizeof path, "%s_iter_%d.caffemodel", d->prefix, d->iter);
  char dir[1200];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash) {
    *slash = 0;
    mkdir(dir, 0755);
  }
  mdl_status st = mdl_trainer_save(d->model, d->w, path, err);
  if (st != MDL_OK) return st;
  snprintf(d->res->weights_file, sizeof d->res->weights_file, "%s", path);
  dlog(d, "weights at iteration %d: %s", d->iter, path);
  return MDL_OK;
}

/* The job's acceptance criteria against the last TEST pass of test net 0. */
static mdl_status check_accept(driver *d, mdl_driver_result *res, mdl_error *err) {
  const char **names = mdl_xcalloc((size_t)res->n_test + 1, sizeof *names);
  double *values = mdl_xcalloc((size_t)res->n_test + 1, sizeof *values);
  int n = 0;
  for (int k = 0; k < res->n_test; k++)
    if (res->test[k].n == 1) { /* scalar outputs only */
      names[n] = res->test[k].name;
      values[n++] = res->test[k].sum[0];
    }
  res->accepted = mdl_accept_check(d->plan->accept, d->plan->n_accept, names, values, n,
                                   res->accept_msg, sizeof res->accept_msg);
  free(names);
  free(values);
  if (res->accepted) return MDL_OK;
  return mdl_errorf(err, MDL_ERR_ACCEPT, "acceptance not met: %s", res->accept_msg);
}

/* --- shared memory (local workers) ------------------------------------------ */

/* The weights file in the private directory: region 0 holds the driver's
 * weights, region i + 1 worker i's result. d->w and the slots' reply
 * buffers move into it. */
static mdl_status shm_create(driver *d, mdl_error *err) {
  size_t bytes = d->n_params * sizeof(float);
  size_t huge = (size_t)2 << 20;
  d->shm_stride = (bytes + huge - 1) / huge * huge;
  if (!d->shm_stride) d->shm_stride = huge;
  d->shm_len = d->shm_stride * ((size_t)d->k + 1);
  snprintf(d->shm_path, sizeof d->shm_path, "%s/weights", mdl_local_workers_dir(d->lw));
  int fd = open(d->shm_path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return mdl_errorf(err, MDL_ERR_INTERNAL, "%s: %s", d->shm_path, strerror(errno));
  int e = posix_fallocate(fd, 0, (off_t)d->shm_len);
  void *p = e ? MAP_FAILED : mmap(NULL, d->shm_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    unlink(d->shm_path);
    return mdl_errorf(err, MDL_ERR_NOMEM, "shared weights of %zu MiB do not fit in %s",
                      d->shm_len >> 20, d->shm_path);
  }
  madvise(p, d->shm_len, MADV_HUGEPAGE);
  d->shm = true;
  d->shm_base = p;
  memcpy(p, d->w, bytes);
  d->w_heap = d->w;
  d->w = (float *)p;
  for (int i = 0; i < d->k; i++) {
    mdl_rpc_buffer_free(d->s[i].recv, bytes);
    d->s[i].recv = (float *)(d->shm_base + d->shm_stride * ((size_t)i + 1));
  }
  return MDL_OK;
}

/* --- the run ---------------------------------------------------------------- */

static volatile sig_atomic_t g_abort;
static void on_signal(int sig) {
  (void)sig;
  g_abort = 1;
}

/* Threads per local worker: as asked, else the cores shared among them. */
static int local_threads(int asked, int k) {
  if (asked > 0) return asked;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int t = cpus > 0 ? (int)(cpus / (k > 0 ? k : 1)) : 1;
  return t > 0 ? t : 1;
}

static mdl_status parse_workers(driver *d, const char *spec, int *local_k, char ***addrs, int *n,
                                mdl_error *err) {
  *local_k = 0;
  *addrs = NULL;
  *n = 0;
  if (!strncmp(spec, "local:", 6)) {
    char *end;
    long k = strtol(spec + 6, &end, 10);
    if (end == spec + 6 || *end || k < 1 || k > MDL_WORKER_MAX_WORKERS)
      return mdl_errorf(err, MDL_ERR_INVALID, "--workers %s: expected local:K with K in 1..%d",
                        spec, MDL_WORKER_MAX_WORKERS);
    *local_k = (int)k;
    return MDL_OK;
  }
  char *copy = mdl_xstrdup(spec), *save = NULL;
  for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (!*t) continue;
    if (!strchr(t, ':')) {
      free(copy);
      for (int i = 0; i < *n; i++) free((*addrs)[i]);
      free(*addrs);
      *addrs = NULL;
      *n = 0;
      return mdl_errorf(err, MDL_ERR_INVALID, "--workers: \"%s\" is not host:port or local:K", t);
    }
    *addrs = mdl_xrealloc(*addrs, (size_t)(*n + 1) * sizeof **addrs);
    (*addrs)[(*n)++] = mdl_xstrdup(t);
  }
  free(copy);
  if (*n == 0) return mdl_errorf(err, MDL_ERR_INVALID, "--workers: no worker named");
  return MDL_OK;
}

static void free_strs(char **a, int n) {
  for (int i = 0; i < n; i++) free(a[i]);
  free(a);
}

static mdl_status driver_setup_security(driver *d, mdl_error *err) {
  const Memdl__Cluster *cl = d->plan->cluster;
  const Memdl__Tls *tls = cl ? cl->tls : NULL;
  char *token_file = resolve_path(d->base_dir, d->o.token_file        ? d->o.token_file
                                               : cl && cl->token_file ? cl->token_file
                                                                      : NULL);
  if (d->o.token_file) {
    free(token_file);
    token_file = mdl_xstrdup(d->o.token_file);
  }
  mdl_status st = MDL_OK;
  if (token_file) st = mdl_rpc_token_read(token_file, &d->token, &d->token_len, err);
  free(token_file);
  if (st != MDL_OK) return st;
  static char ca[1024], cert[1024], key[1024];
  ca[0] = cert[0] = key[0] = 0;
  const char *pca = d->o.tls_ca ? d->o.tls_ca : tls ? tls->ca : NULL;
  const char *pcert = d->o.tls_cert ? d->o.tls_cert : tls ? tls->cert : NULL;
  const char *pkey = d->o.tls_key ? d->o.tls_key : tls ? tls->key : NULL;
  char *r;
  if (pca) {
    r = d->o.tls_ca ? mdl_xstrdup(pca) : resolve_path(d->base_dir, pca);
    snprintf(ca, sizeof ca, "%s", r);
    free(r);
  }
  if (pcert && pkey && (d->o.tls_cert || (tls && tls->require_client_cert))) {
    r = d->o.tls_cert ? mdl_xstrdup(pcert) : resolve_path(d->base_dir, pcert);
    snprintf(cert, sizeof cert, "%s", r);
    free(r);
    r = d->o.tls_key ? mdl_xstrdup(pkey) : resolve_path(d->base_dir, pkey);
    snprintf(key, sizeof key, "%s", r);
    free(r);
  }
  d->chopts.sec.tls_ca = ca[0] ? ca : NULL;
  d->chopts.sec.tls_cert = cert[0] ? cert : NULL;
  d->chopts.sec.tls_key = key[0] ? key : NULL;
  d->chopts.sec.insecure = d->o.insecure || (cl && cl->insecure);
  d->chopts.sec.token = d->token;
  d->chopts.sec.token_len = d->token_len;
  return MDL_OK;
}

static void driver_free(driver *d) {
  for (int i = 0; i < d->k; i++) {
    mdl_rpc_channel_free(d->s[i].ch);
    if (!d->shm) mdl_rpc_buffer_free(d->s[i].recv, d->n_params * sizeof(float));
    free(d->s[i].train);
    free(d->s[i].test);
  }
  free(d->s);
  mdl_local_workers_free(d->lw);
  mdl_rpc_pin_free(d->w_pin);
  if (d->shm) {
    munmap(d->shm_base, d->shm_len);
    unlink(d->shm_path);
    mdl_rpc_buffer_free(d->w_heap, d->n_params * sizeof(float));
  } else {
    mdl_rpc_buffer_free(d->w, d->n_params * sizeof(float));
  }
  mdl_trainer_free(d->model);
  mdl_trainer_lineages_free(d->all_train, d->n_all_train);
  mdl_trainer_lineages_free(d->all_test, d->n_all_test);
  free(d->plan_bytes);
  free(d->token);
}

static void shutdown_workers(driver *d) {
  int n = 0;
  mdl_rpc_call *calls = mdl_xcalloc((size_t)d->k, sizeof *calls);
  Memdl__ShutdownRequest req = MEMDL__SHUTDOWN_REQUEST__INIT;
  req.has_session = req.has_exit = 1;
  req.session = d->session;
  req.exit = 1;
  for (int i = 0; i < d->k; i++)
    if (d->s[i].alive)
      call_init(d, &calls[n++], &d->s[i], MDL_WORKER_SHUTDOWN, &req.base,
                &memdl__shutdown_reply__descriptor);
  mdl_error e2;
  mdl_rpc_call_all(calls, n, 5000, NULL, &e2);
  mdl_rpc_calls_clear(calls, n);
  free(calls);
}

mdl_status mdl_driver_run_plan(const Memdl__Plan *plan, const char *base_dir,
                               const mdl_driver_opts *opts, mdl_driver_result *res_out,
                               mdl_error *err) {
  mdl_driver_result res_local;
  mdl_driver_result *res = res_out ? res_out : &res_local;
  memset(res, 0, sizeof *res);
  if (!plan->solver) return mdl_errorf(err, MDL_ERR_INVALID, "the plan has no solver");
  driver d_ = {0}, *d = &d_;
  d->plan = plan;
  d->base_dir = base_dir ? base_dir : ".";
  d->o = *opts;
  d->log = opts->log ? opts->log : stderr;
  d->res = res;
  d->trainer_name = opts->trainer ? opts->trainer : "net";
  d->trainers = opts->trainers;
  d->max_iter = plan->solver->max_iter;
  if (d->max_iter <= 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "solver max_iter is %d: nothing to train", d->max_iter);
  const Memdl__Cluster *cl = plan->cluster;
  d->tau = opts->tau > 0 ? opts->tau : plan->sync && plan->sync->tau ? (int)plan->sync->tau : 10;
  if (d->tau > MDL_WORKER_MAX_TAU) d->tau = MDL_WORKER_MAX_TAU;
  d->test_interval = plan->solver->test_interval;
  d->snapshot_rounds = opts->snapshot_rounds > 0   ? opts->snapshot_rounds
                       : opts->snapshot_rounds < 0 ? 0
                       : cl                        ? (int)cl->snapshot_rounds
                                                   : 0;
  d->round_timeout_ms = opts->round_timeout_ms > 0   ? opts->round_timeout_ms
                        : cl && cl->round_timeout_ms ? (int)cl->round_timeout_ms
                                                     : 60000;
  d->setup_timeout_ms = opts->setup_timeout_ms > 0 ? opts->setup_timeout_ms : 60000;
  d->snapshot_iters = plan->solver->snapshot > 0 ? plan->solver->snapshot : 0;
  {
    char *od = opts->out_dir ? mdl_xstrdup(opts->out_dir) : resolve_path(d->base_dir, "out");
    const char *pre = plan->solver->snapshot_prefix && plan->solver->snapshot_prefix[0]
                          ? plan->solver->snapshot_prefix
                      : plan->job_name && plan->job_name[0] ? plan->job_name
                                                            : "weights";
    const char *b = strrchr(pre, '/');
    b = b && b[1] ? b + 1 : pre;
    snprintf(d->prefix, sizeof d->prefix, "%s/%s", od, b);
    free(od);
  }
  if (opts->seed)
    d->seed = opts->seed;
  else
    d->seed = plan->solver->has_random_seed && plan->solver->random_seed >= 0
                  ? (uint64_t)plan->solver->random_seed
                  : 1;
  d->abort = opts->abort ? opts->abort : &g_abort;
  d->chopts.keepalive_ms = opts->keepalive_ms > 0 ? opts->keepalive_ms : 2000;
  d->chopts.keepalive_timeout_ms = d->chopts.keepalive_ms * 3 / 2;
  if (opts->snapshot_path) {
    snprintf(d->snapshot_path, sizeof d->snapshot_path, "%s", opts->snapshot_path);
  } else {
    char *dir = resolve_path(d->base_dir, "out");
    mkdir(dir, 0755);
    snprintf(d->snapshot_path, sizeof d->snapshot_path, "%s/driver.snapshot", dir);
    free(dir);
  }

  /* which workers */
  int local_k = 0, n_addrs = 0;
  char **addrs = NULL;
  char **devices = NULL;
  mdl_status st = MDL_OK;
  if (opts->workers) {
    st = parse_workers(d, opts->workers, &local_k, &addrs, &n_addrs, err);
  } else if (cl && cl->n_worker > 0) {
    n_addrs = (int)cl->n_worker;
    addrs = mdl_xcalloc((size_t)n_addrs, sizeof *addrs);
    devices = mdl_xcalloc((size_t)n_addrs, sizeof *devices);
    for (int i = 0; i < n_addrs; i++) {
      addrs[i] = mdl_xstrdup(cl->worker[i]->address ? cl->worker[i]->address : "");
      devices[i] = mdl_xstrdup(cl->worker[i]->device ? cl->worker[i]->device : "cpu");
    }
  } else {
    local_k = cl && cl->workers ? (int)cl->workers : 1;
  }
  if (st != MDL_OK) return st;
  d->k = local_k ? local_k : n_addrs;

  /* the plan as shipped; its hash guards resumption */
  d->plan_len = protobuf_c_message_get_packed_size(&plan->base);
  d->plan_bytes = mdl_xmalloc(d->plan_len + 1);
  protobuf_c_message_pack(&plan->base, d->plan_bytes);
  d->plan_hash = fnv1a(d->plan_bytes, d->plan_len) ^
                 fnv1a((const uint8_t *)d->trainer_name, strlen(d->trainer_name));
  if (getrandom(&d->session, sizeof d->session, 0) != sizeof d->session || !d->session)
    d->session = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull + 1;

  /* the model: initial weights from the trainer's fillers, on the driver */
  mdl_trainer *init = NULL;
  mdl_trainer_opts to = {.device = "cpu",
                         .seed = d->seed,
                         .worker_index = -1,
                         .num_workers = d->k,
                         .base_dir = d->base_dir};
  st = mdl_trainer_new(d->trainers, d->trainer_name, plan, &to, &init, err);
  if (st == MDL_OK) {
    d->n_params = mdl_trainer_param_count(init);
    d->w = mdl_rpc_buffer_alloc(d->n_params * sizeof(float));
    if (!d->w) st = mdl_errorf(err, MDL_ERR_NOMEM, "weights: %zu floats", d->n_params);
  }
  if (st == MDL_OK) st = mdl_trainer_init_weights(init, d->w, err);
  d->model = init;
  if (st == MDL_OK)
    st = mdl_trainer_lineages(d->trainers, d->trainer_name, plan, d->base_dir, d->k, CAFFE__PHASE__TRAIN,
                              &d->all_train, &d->n_all_train, err);
  if (st == MDL_OK)
    st = mdl_trainer_lineages(d->trainers, d->trainer_name, plan, d->base_dir, d->k, CAFFE__PHASE__TEST,
                              &d->all_test, &d->n_all_test, err);
  if (st == MDL_OK && d->n_all_train < (size_t)d->k)
    st = mdl_errorf(err, MDL_ERR_INVALID,
                    "the training data has %zu partitions; %d workers need at least %d "
                    "(set the data set's `partitions`)",
                    d->n_all_train, d->k, d->k);
  d->w_pin = mdl_rpc_pin_new();
  d->s = mdl_xcalloc((size_t)(d->k ? d->k : 1), sizeof *d->s);
  for (int i = 0; i < d->k; i++) {
    d->s[i].index = i;
    if (devices) snprintf(d->s[i].device, sizeof d->s[i].device, "%s", devices[i]);
    if (st == MDL_OK) {
      d->s[i].recv = mdl_rpc_buffer_alloc(d->n_params * sizeof(float));
      if (!d->s[i].recv) st = mdl_errorf(err, MDL_ERR_NOMEM, "reply buffers");
    }
  }

  /* signals: Ctrl-C stops the run and its workers */
  struct sigaction old_int, old_term;
  bool own_signals = !opts->abort;
  if (own_signals) {
    g_abort = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
  }

  /* resume or start */
  Memdl__DriverSnapshot *snap = NULL;
  if (st == MDL_OK && opts->resume) st = load_snapshot(d, &snap, err);
  if (st == MDL_OK && snap) {
    memcpy(d->w, snap->weights.data, snap->weights.len);
    d->iter = (int)snap->iter;
    d->round = (int)snap->round;
    res->resumed = true;
    /* partitions as they were at the snapshot, matched by (data, index) */
    for (int i = 0; i < d->k; i++) {
      Memdl__WorkerSnapshot *ws = snap->worker[i];
      for (int ph = 0; ph < 2; ph++) {
        Memdl__PartitionLineage **src = ph ? ws->test_partition : ws->train_partition;
        size_t ns = ph ? ws->n_test_partition : ws->n_train_partition;
        Memdl__PartitionLineage **all = ph ? d->all_test : d->all_train;
        size_t na = ph ? d->n_all_test : d->n_all_train;
        for (size_t p = 0; p < ns; p++)
          for (size_t q = 0; q < na; q++)
            if (all[q]->index == src[p]->index && src[p]->data && src[p]->data->name &&
                !strcmp(all[q]->data->name, src[p]->data->name)) {
              if (ph)
                lineage_push(&d->s[i].test, &d->s[i].n_test, all[q]);
              else
                lineage_push(&d->s[i].train, &d->s[i].n_train, all[q]);
            }
      }
    }
    dlog(d, "resuming from %s: iteration %d, round %d", d->snapshot_path, d->iter, d->round);
  } else if (st == MDL_OK) {
    if (opts->resume) dlog(d, "no snapshot at %s: starting at iteration 0", d->snapshot_path);
    for (size_t p = 0; p < d->n_all_train; p++)
      lineage_push(&d->s[p % (size_t)d->k].train, &d->s[p % (size_t)d->k].n_train, d->all_train[p]);
    for (size_t p = 0; p < d->n_all_test; p++)
      lineage_push(&d->s[p % (size_t)d->k].test, &d->s[p % (size_t)d->k].n_test, d->all_test[p]);
  }

  /* start local workers or name remote ones */
  if (st == MDL_OK && local_k) {
    mdl_launch_opts lo = {.exe = opts->worker_exe,
                          .argv_prefix = opts->worker_argv,
                          .n_prefix = opts->n_worker_argv,
                          .device = opts->device,
                          .threads = local_threads(opts->threads, local_k),
                          .driver_timeout_ms = 0,
                          .log = d->log,
                          .unset_env = opts->worker_unset_env};
    st = mdl_local_workers_start(local_k, &lo, &d->lw, err);
    if (st == MDL_OK) {
      d->token = mdl_xstrdup(mdl_local_workers_token(d->lw, &d->token_len));
      d->chopts.sec.token = d->token;
      d->chopts.sec.token_len = d->token_len;
      for (int i = 0; i < d->k; i++)
        snprintf(d->s[i].addr, sizeof d->s[i].addr, "%s", mdl_local_workers_address(d->lw, i));
      dlog(d, "%d local workers in %s", d->k, mdl_local_workers_dir(d->lw));
      if (!opts->no_shm) st = shm_create(d, err);
    }
  } else if (st == MDL_OK) {
    st = driver_setup_security(d, err);
    for (int i = 0; i < d->k; i++) snprintf(d->s[i].addr, sizeof d->s[i].addr, "%s", addrs[i]);
  }
  free_strs(addrs, n_addrs);
  free_strs(devices, devices ? n_addrs : 0);
  for (int i = 0; st == MDL_OK && i < d->k; i++) st = open_channel(d, &d->s[i], err);

  double t_start = mdl_rpc_now();
  if (st == MDL_OK) {
    slot **all = mdl_xcalloc((size_t)d->k, sizeof *all);
    for (int i = 0; i < d->k; i++) all[i] = &d->s[i];
    int ok = 0;
    st = setup_slots(d, all, d->k, snap ? snap->worker : NULL, &ok, err);
    free(all);
    dlog(d, "plan %s: %zu parameters (%.2f MB), %d workers, tau %d, iterations %d..%d, seed %llu",
         plan->job_name ? plan->job_name : "", d->n_params, d->n_params * 4.0 / 1e6, d->k, d->tau,
         d->iter, d->max_iter, (unsigned long long)d->seed);
    /* a worker that never came up is handled like one that died */
    for (int i = 0; st == MDL_OK && i < d->k; i++)
      if (!d->s[i].alive) {
        d->s[i].alive = true;
        st = kill_slot(d, &d->s[i], "did not come up", err);
      }
  }
  mdl_pb_free(snap);
  snap = NULL;

  /* the rounds */
  bool test_init = !plan->solver->has_test_initialization || plan->solver->test_initialization;
  if (st == MDL_OK && d->test_interval > 0 && d->iter == 0 && test_init && !res->resumed)
    st = run_tests(d, err);
  while (st == MDL_OK && d->iter < d->max_iter) {
    if (*d->abort) {
      st = mdl_errorf(err, MDL_ERR_INTERNAL, "interrupted at iteration %d", d->iter);
      break;
    }
    if (opts->max_rounds > 0 && d->rounds_here >= opts->max_rounds) break;
    int tau = d->tau;
    if (d->iter + tau > d->max_iter) tau = d->max_iter - d->iter;
    /* rounds end where the solver tests and snapshots, as iterations count */
    int every[2] = {d->test_interval, d->snapshot_iters};
    for (int e = 0; e < 2; e++)
      if (every[e] > 0) {
        int next = (d->iter / every[e] + 1) * every[e];
        if (next - d->iter < tau) tau = next - d->iter;
      }
    st = run_round(d, tau, err);
    if (st == MDL_OK && d->snapshot_iters > 0 && d->iter % d->snapshot_iters == 0)
      st = save_model(d, err);
    if (st == MDL_OK && d->test_interval > 0 && d->iter % d->test_interval == 0)
      st = run_tests(d, err);
    if (st == MDL_OK && d->snapshot_rounds > 0 && d->round % d->snapshot_rounds == 0)
      st = snapshot(d, err);
  }
  /* a final TEST pass whenever the last interval did not end on one, as
   * single-worker runs do: acceptance is judged on it */
  if (st == MDL_OK && d->iter >= d->max_iter &&
      (d->test_interval <= 0 || d->iter % d->test_interval != 0))
    st = run_tests(d, err);

  if (st == MDL_OK && d->iter >= d->max_iter &&
      !(d->snapshot_iters > 0 && d->iter % d->snapshot_iters == 0))
    st = save_model(d, err);
  if (st == MDL_OK) st = check_accept(d, res, err);
  res->seconds = mdl_rpc_now() - t_start;
  res->iter = d->iter;
  if (st == MDL_OK || st == MDL_ERR_ACCEPT) {
    dlog(d,
         "done: iteration %d, %d rounds in %.2f s (compute %.2f, communication %.2f, waiting "
         "%.2f, averaging %.2f), %d faults, %d replacements",
         d->iter, res->rounds, res->seconds, res->compute_s, res->comm_s, res->wait_s,
         res->average_s, res->faults, res->replacements);
    res->weights = malloc(d->n_params * sizeof(float) + 1);
    if (!res->weights) {
      st = mdl_errorf(err, MDL_ERR_NOMEM, "final weights");
    } else {
      memcpy(res->weights, d->w, d->n_params * sizeof(float));
      res->n_params = d->n_params;
    }
    res->n_workers = d->k;
    res->workers = mdl_xcalloc((size_t)d->k, sizeof *res->workers);
    for (int i = 0; i < d->k; i++) {
      res->workers[i] = d->s[i].total;
      res->workers[i].alive = d->s[i].alive;
    }
  }
  if (d->s && d->k) shutdown_workers(d);
  driver_free(d);
  if (own_signals) {
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
  }
  if (st != MDL_OK && st != MDL_ERR_ACCEPT) {
    mdl_driver_result_free(res);
    memset(res, 0, sizeof *res);
  } else if (!res_out) {
    mdl_driver_result_free(res);
  }
  return st;
}

void mdl_driver_result_free(mdl_driver_result *res) {
  if (!res) return;
  free(res->weights);
  for (int k = 0; k < res->n_test; k++) {
    free(res->test[k].name);
    free(res->test[k].sum);
  }
  free(res->test);
  free(res->workers);
  memset(res, 0, sizeof *res);
}
