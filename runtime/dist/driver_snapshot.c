/* The driver's files (see driver_impl.h): the plan's hash, the snapshot
 * written and loaded (and where partitions start on resume), model files.
 * Not the rounds or the workers. */
#define _GNU_SOURCE
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fileio.h"
#include "common/pb.h"
#include "runtime/dist/driver_impl.h"

static uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

/* --- snapshots --------------------------------------------------------------- */

mdl_status mdl_driver_snapshot_write(driver *d, mdl_error *err) {
  double t0 = mdl_now();
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
             d->snapshot_path, len / 1e6, mdl_now() - t0);
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
  /* unsigned in the file: compared unsigned, so 2^31 and above cannot
   * become a negative iteration */
  if (s->weights.len != d->n_params * sizeof(float) || s->n_worker != (size_t)d->k ||
      s->iter > (uint32_t)d->max_iter || s->round > s->iter) {
    mdl_pb_free(s);
    return mdl_errorf(err, MDL_ERR_INVALID, "%s does not match the model", d->snapshot_path);
  }
  *snap = s;
  return MDL_OK;
}

/* --- model files ------------------------------------------------------------ */

mdl_status mdl_driver_save_model(driver *d, mdl_error *err) {
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

/* --- where partitions start ----------------------------------------------------- */

void mdl_driver_hash_plan(driver *d) {
  d->plan_len = protobuf_c_message_get_packed_size(&d->plan->base);
  d->plan_bytes = mdl_xmalloc(d->plan_len + 1);
  protobuf_c_message_pack(&d->plan->base, d->plan_bytes);
  d->plan_hash = fnv1a(d->plan_bytes, d->plan_len) ^
                 fnv1a((const uint8_t *)d->trainer_name, strlen(d->trainer_name));
}

/* Gives each slot the partitions it held at the snapshot, matched by
 * (data, index). */
static void restore_partitions(driver *d, const Memdl__DriverSnapshot *snap) {
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
}

mdl_status mdl_driver_resume(driver *d, Memdl__DriverSnapshot **snap, mdl_error *err) {
  *snap = NULL;
  mdl_status st = MDL_OK;
  if (d->o.resume) st = load_snapshot(d, snap, err);
  if (st != MDL_OK) return st;
  if (*snap) {
    memcpy(d->w, (*snap)->weights.data, (*snap)->weights.len);
    d->iter = (int)(*snap)->iter;
    d->round = (int)(*snap)->round;
    d->res->resumed = true;
    restore_partitions(d, *snap);
    dlog(d, "resuming from %s: iteration %d, round %d", d->snapshot_path, d->iter, d->round);
    return MDL_OK;
  }
  if (d->o.resume) dlog(d, "no snapshot at %s: starting at iteration 0", d->snapshot_path);
  for (size_t p = 0; p < d->n_all_train; p++)
    lineage_push(&d->s[p % (size_t)d->k].train, &d->s[p % (size_t)d->k].n_train, d->all_train[p]);
  for (size_t p = 0; p < d->n_all_test; p++)
    lineage_push(&d->s[p % (size_t)d->k].test, &d->s[p % (size_t)d->k].n_test, d->all_test[p]);
  return MDL_OK;
}
