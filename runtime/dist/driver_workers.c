/* The driver's workers (see driver_impl.h): which they are, starting them
 * or reaching them (security, shared memory), setting them up, and what
 * happens when one fails: its partitions move to the survivors and a local
 * one is replaced. Not the rounds (driver.c) or snapshots. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/clock.h"
#include "runtime/dist/driver_impl.h"

/* --- RPC plumbing ------------------------------------------------------------ */

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
  /* a Setup drops the average a peer kept: the driver holds it first, and
   * the slots set up hold it no longer */
  bool held = false;
  for (int i = 0; i < n; i++) held = held || mdl_driver_peer_held_by(d, which[i]);
  mdl_status wst = held ? mdl_driver_weights(d, err) : MDL_OK;
  if (wst != MDL_OK) return wst;
  for (int i = 0; i < n; i++) mdl_driver_peer_forget(d, which[i]);
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
    if (d->peer) { /* peer averaging: every worker's address */
      req[i].n_peer = (size_t)d->k;
      req[i].peer = d->peer_addrs;
    }
    if (s->batch) {
      req[i].has_train_batch = 1;
      req[i].train_batch = (uint32_t)s->batch;
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
    snprintf(s->host_id, sizeof s->host_id, "%s", r->host_id ? r->host_id : "");
    s->train_samples = r->train_samples;
    s->setup_s = r->has_setup_seconds && r->setup_seconds > 0 ? r->setup_seconds : 0;
    if (r->replaced_session && r->replaced_session != d->session)
      dlog(d,
           "worker %d (%s) was still serving run %016llx of another driver: taken over (that "
           "run can no longer use it)",
           s->index, s->addr, (unsigned long long)r->replaced_session);
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
    st = mdl_driver_kill_slot(d, failed[i], "failed to take partitions", err);
  free(failed);
  return st;
}

/* A dead slot's worker, running again (a local replacement, or a remote
 * worker back at its address), is set up and takes the slot's partitions
 * back from the survivors. Failure leaves the slot dead (not an error). */
static mdl_status take_back(driver *d, slot *s, Memdl__PartitionLineage **train, size_t n_train,
                            Memdl__PartitionLineage **test, size_t n_test, mdl_error *err) {
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
    if (d->lw)
      dlog(d, "worker %d replaced: pid %d at %s, taking back its %zu train / %zu test partitions",
           s->index, (int)mdl_local_workers_pid(d->lw, s->index), s->addr, n_train, n_test);
    else
      dlog(d, "worker %d (%s) is back: taking back its %zu train / %zu test partitions", s->index,
           s->addr, n_train, n_test);
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

/* Local mode: a new process for a dead slot, which takes its partitions
 * back. Failure leaves the slot dead (not an error). */
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
  return take_back(d, s, train, n_train, test, n_test, err);
}

static void forget_lost(slot *s) {
  free(s->lost_train);
  free(s->lost_test);
  s->lost_train = s->lost_test = NULL;
  s->n_lost_train = s->n_lost_test = 0;
}

mdl_status mdl_driver_retake_workers(driver *d, mdl_error *err) {
  if (d->lw || d->o.no_replace) return MDL_OK;
  double now = mdl_now();
  mdl_status st = MDL_OK;
  for (int i = 0; st == MDL_OK && i < d->k; i++) {
    slot *s = &d->s[i];
    if (s->alive || !s->lost || now < s->retry_at) continue;
    if (!mdl_rpc_channel_connected(s->ch)) continue; /* cheap: asked every round */
    /* connected but failing (hung, or refusing): try again ever later */
    s->retry_gap = s->retry_gap > 0 ? (s->retry_gap < 60 ? s->retry_gap * 2 : 60) : 2;
    s->retry_at = now + s->retry_gap;
    st = take_back(d, s, s->lost_train, s->n_lost_train, s->lost_test, s->n_lost_test, err);
    if (s->alive) {
      s->lost = false;
      forget_lost(s);
    }
  }
  return st;
}

/* Removes a worker: its partitions go to the survivors; in local mode a
 * replacement starts and takes them back, in remote mode the worker takes
 * them back once it answers at its address again (a restart), at the start
 * of a later round (mdl_driver_retake_workers). */
mdl_status mdl_driver_kill_slot(driver *d, slot *dead, const char *why, mdl_error *err) {
  if (!dead->alive) return MDL_OK;
  dead->alive = false;
  d->res->faults++;
  mdl_driver_peer_forget(d, dead);
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
  if (st == MDL_OK && !d->lw && !d->o.no_replace && alive_count(d) > 0) {
    forget_lost(dead);
    dead->lost = true;
    dead->retry_at = 0;
    dead->retry_gap = 0;
    dead->lost_train = train;
    dead->n_lost_train = n_train;
    dead->lost_test = test;
    dead->n_lost_test = n_test;
    train = test = NULL;
  } else if (st == MDL_OK && alive_count(d) == 0 && !dead->alive) {
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

/* --- which workers, started how --------------------------------------------- */

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
      /* the message first: t points into copy */
      mdl_status st =
          mdl_errorf(err, MDL_ERR_INVALID, "--workers: \"%s\" is not host:port or local:K", t);
      free(copy);
      for (int i = 0; i < *n; i++) free((*addrs)[i]);
      free(*addrs);
      *addrs = NULL;
      *n = 0;
      return st;
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

void mdl_driver_free_state(driver *d) {
  mdl_driver_peer_free(d);
  for (int i = 0; i < d->k; i++) {
    mdl_rpc_channel_free(d->s[i].ch);
    if (!d->shm) mdl_rpc_buffer_free(d->s[i].recv, d->n_params * sizeof(float));
    free(d->s[i].train);
    free(d->s[i].test);
    forget_lost(&d->s[i]);
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
  free(d->key_bytes);
  free(d->token);
}

void mdl_driver_shutdown_workers(driver *d) {
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

/* --- the run's steps ---------------------------------------------------------- */

mdl_status mdl_driver_select_workers(driver *d, worker_list *wl, mdl_error *err) {
  const Memdl__Cluster *cl = d->plan->cluster;
  memset(wl, 0, sizeof *wl);
  mdl_status st = MDL_OK;
  if (d->o.workers) {
    st = parse_workers(d, d->o.workers, &wl->local_k, &wl->addrs, &wl->n_addrs, err);
  } else if (cl && cl->n_worker > 0) {
    wl->n_addrs = (int)cl->n_worker;
    wl->addrs = mdl_xcalloc((size_t)wl->n_addrs, sizeof *wl->addrs);
    wl->devices = mdl_xcalloc((size_t)wl->n_addrs, sizeof *wl->devices);
    for (int i = 0; i < wl->n_addrs; i++) {
      wl->addrs[i] = mdl_xstrdup(cl->worker[i]->address ? cl->worker[i]->address : "");
      wl->devices[i] = mdl_xstrdup(cl->worker[i]->device ? cl->worker[i]->device : "cpu");
    }
  } else {
    wl->local_k = cl && cl->workers ? (int)cl->workers : 1;
  }
  return st;
}

void mdl_driver_worker_list_free(worker_list *wl) {
  free_strs(wl->addrs, wl->n_addrs);
  free_strs(wl->devices, wl->devices ? wl->n_addrs : 0);
  memset(wl, 0, sizeof *wl);
}

mdl_status mdl_driver_start_workers(driver *d, const worker_list *wl, mdl_error *err) {
  mdl_status st = MDL_OK;
  if (wl->local_k) {
    mdl_launch_opts lo = {.exe = d->o.worker_exe,
                          .argv_prefix = d->o.worker_argv,
                          .n_prefix = d->o.n_worker_argv,
                          .device = d->o.device,
                          .threads = local_threads(d->o.threads, wl->local_k),
                          .driver_timeout_ms = 0,
                          .log = d->log,
                          .unset_env = d->o.worker_unset_env};
    st = mdl_local_workers_start(wl->local_k, &lo, &d->lw, err);
    if (st == MDL_OK) {
      d->token = mdl_xstrdup(mdl_local_workers_token(d->lw, &d->token_len));
      d->chopts.sec.token = d->token;
      d->chopts.sec.token_len = d->token_len;
      for (int i = 0; i < d->k; i++)
        snprintf(d->s[i].addr, sizeof d->s[i].addr, "%s", mdl_local_workers_address(d->lw, i));
      dlog(d, "%d local workers in %s", d->k, mdl_local_workers_dir(d->lw));
      if (!d->o.no_shm) st = shm_create(d, err);
    }
  } else {
    st = driver_setup_security(d, err);
    for (int i = 0; i < d->k; i++) snprintf(d->s[i].addr, sizeof d->s[i].addr, "%s", wl->addrs[i]);
  }
  for (int i = 0; st == MDL_OK && i < d->k; i++) st = open_channel(d, &d->s[i], err);
  return st;
}

mdl_status mdl_driver_setup_workers(driver *d, const Memdl__DriverSnapshot *snap, mdl_error *err) {
  slot **all = mdl_xcalloc((size_t)d->k, sizeof *all);
  for (int i = 0; i < d->k; i++) all[i] = &d->s[i];
  int ok = 0;
  double t0 = mdl_now();
  mdl_status st = setup_slots(d, all, d->k, snap ? snap->worker : NULL, &ok, err);
  /* what a change of shares will cost until one is timed: the slowest
   * worker's own Setup (the wait for its process to start is not paid
   * again), or the whole when a worker did not say */
  d->setup_s = mdl_now() - t0;
  double said = 0;
  for (int i = 0; i < d->k; i++)
    if (d->s[i].alive && d->s[i].setup_s > said) said = d->s[i].setup_s;
  if (said > 0 && said < d->setup_s) d->setup_s = said;
  free(all);
  dlog(d, "plan %s: %zu parameters (%.2f MB), %d workers, tau %d, iterations %d..%d, seed %llu",
       d->plan->job_name ? d->plan->job_name : "", d->n_params, d->n_params * 4.0 / 1e6, d->k,
       d->tau, d->iter, d->max_iter, (unsigned long long)d->seed);
  /* a worker that never came up is handled like one that died */
  for (int i = 0; st == MDL_OK && i < d->k; i++)
    if (!d->s[i].alive) {
      d->s[i].alive = true;
      st = mdl_driver_kill_slot(d, &d->s[i], "did not come up", err);
    }
  return st;
}
