/* The driver's files (see driver_impl.h): the plan's hash, the snapshot
 * written and loaded (and where partitions start on resume), model files.
 * Not the rounds or the workers. */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fileio.h"
#include "common/pb.h"
#include "runtime/dist/driver_impl.h"
#include "runtime/solver/caffemodel.h"

static uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

/* --- snapshots --------------------------------------------------------------- */

/* path's folder, created with its parents (an --output that does not
 * exist yet). */
static mdl_status make_parent(const char *path, mdl_error *err) {
  char *dir = mdl_path_dir(path);
  mdl_status st = dir && dir[0] ? mdl_mkdirs(dir, err) : MDL_OK;
  free(dir);
  return st;
}

mdl_status mdl_driver_snapshot_write(driver *d, mdl_error *err) {
  bool written;
  return mdl_driver_state_write(d, d->snapshot_path, &written, err);
}

mdl_status mdl_driver_gather_states(driver *d, Memdl__WorkerSnapshot *ws, mdl_rpc_call **calls,
                                    int *n_calls, bool *complete, mdl_error *err) {
  slot **act = mdl_xcalloc((size_t)d->k, sizeof *act);
  int n = 0;
  for (int i = 0; i < d->k; i++)
    if (d->s[i].alive) act[n++] = &d->s[i];
  Memdl__StateRequest req = MEMDL__STATE_REQUEST__INIT;
  req.has_session = 1;
  req.session = d->session;
  *calls = mdl_xcalloc((size_t)(n ? n : 1), sizeof **calls);
  *n_calls = n;
  for (int i = 0; i < n; i++)
    call_init(d, &(*calls)[i], act[i], MDL_WORKER_STATE, &req.base,
              &memdl__state_reply__descriptor);
  /* req lives on this frame: every call ends inside mdl_rpc_call_all */
  mdl_status st = mdl_rpc_call_all(*calls, n, d->round_timeout_ms, d->abort, err);
  *complete = true;
  for (int i = 0; i < d->k; i++) {
    memdl__worker_snapshot__init(&ws[i]);
    ws[i].n_train_partition = d->s[i].n_train;
    ws[i].train_partition = d->s[i].train;
    ws[i].n_test_partition = d->s[i].n_test;
    ws[i].test_partition = d->s[i].test;
    ws[i].has_batch = d->s[i].batch > 0;
    ws[i].batch = (uint32_t)d->s[i].batch;
  }
  for (int i = 0; st == MDL_OK && i < n; i++) {
    mdl_rpc_call *c = &(*calls)[i];
    if (c->code != MDL_RPC_OK) {
      dlog(d, "worker %d (%s): State failed: %s %s", act[i]->index, act[i]->addr,
           mdl_rpc_code_name(c->code), c->detail);
      *complete = false;
      continue;
    }
    const Memdl__StateReply *r = (const Memdl__StateReply *)c->reply;
    ws[act[i]->index].has_state = 1;
    ws[act[i]->index].state = r->state;
  }
  free(act);
  return st;
}

mdl_status mdl_driver_state_write(driver *d, const char *path, bool *written, mdl_error *err) {
  double t0 = mdl_now();
  *written = false;
  mdl_status wst = mdl_driver_weights(d, err);
  if (wst != MDL_OK) return wst;
  Memdl__DriverSnapshot snap = MEMDL__DRIVER_SNAPSHOT__INIT;
  Memdl__WorkerSnapshot *ws = mdl_xcalloc((size_t)d->k, sizeof *ws);
  Memdl__WorkerSnapshot **wp = mdl_xcalloc((size_t)d->k, sizeof *wp);
  for (int i = 0; i < d->k; i++) wp[i] = &ws[i];
  mdl_rpc_call *calls = NULL;
  int n = 0;
  bool complete = true;
  mdl_status st = mdl_driver_gather_states(d, ws, &calls, &n, &complete, err);
  if (st == MDL_OK && !complete) dlog(d, "snapshot skipped: a worker did not give its state");
  if (st == MDL_OK && complete) {
    snap.has_version = snap.has_plan_hash = snap.has_num_workers = snap.has_seed = 1;
    snap.has_round = snap.has_iter = snap.has_weights = 1;
    snap.version = SNAPSHOT_VERSION;
    snap.plan_hash = d->plan_hash;
    snap.num_workers = (uint32_t)d->k;
    snap.seed = d->seed;
    snap.round = (uint32_t)d->round;
    snap.iter = (uint32_t)d->iter;
    snap.has_tau = 1;
    snap.tau = (uint32_t)d->tau;
    snap.weights.data = (uint8_t *)d->w;
    snap.weights.len = d->n_params * sizeof(float);
    snap.has_plan = 1;
    snap.plan.data = d->key_bytes;
    snap.plan.len = d->key_len;
    snap.n_worker = (size_t)d->k;
    snap.worker = wp;
    size_t len = protobuf_c_message_get_packed_size(&snap.base);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
      st = mdl_errorf(err, MDL_ERR_NOMEM, "snapshot of %zu bytes", len);
    } else {
      protobuf_c_message_pack(&snap.base, buf);
      st = make_parent(path, err);
      if (st == MDL_OK) st = mdl_file_write_atomic(path, buf, len, err);
      free(buf);
      *written = st == MDL_OK;
      if (st == MDL_OK)
        dlog(d, "snapshot at iteration %d (round %d): %s, %.1f MB in %.3f s", d->iter, d->round,
             path, len / 1e6, mdl_now() - t0);
    }
  }
  mdl_rpc_calls_clear(calls, n);
  free(calls);
  free(ws);
  free(wp);
  return st;
}

/* --- the resume check ------------------------------------------------------ */

/* The plan without what cannot change a run's weights: names, output paths,
 * display and snapshot settings, max_iter (unless the rate is "poly"), the cluster block
 * (addresses, security, timeouts; the worker count is checked on its own), acceptance. A resume
 * with only these changed continues bit for bit (a snapshot interval that
 * is not a multiple of tau does move where rounds end: the run still
 * continues, as a run with the new interval would). */
static Memdl__Plan *resume_key(const Memdl__Plan *plan) {
  Memdl__Plan *k = mdl_pb_dup(plan);
  free(k->job_name);
  k->job_name = NULL;
  mdl_pb_free(k->cluster);
  k->cluster = NULL;
  for (size_t i = 0; i < k->n_accept; i++) mdl_pb_free(k->accept[i]);
  k->n_accept = 0;
  Caffe__SolverParameter *sp = k->solver;
  if (sp) {
    sp->has_display = sp->has_snapshot = sp->has_snapshot_after_train = 0;
    sp->has_snapshot_diff = sp->has_snapshot_format = sp->has_debug_info = 0;
    sp->has_solver_mode = sp->has_device_id = 0;
    sp->display = sp->snapshot = sp->device_id = 0;
    sp->snapshot_after_train = 1;
    sp->snapshot_diff = sp->debug_info = 0;
    sp->solver_mode = CAFFE__SOLVER_PARAMETER__SOLVER_MODE__GPU;
    sp->snapshot_format = CAFFE__SOLVER_PARAMETER__SNAPSHOT_FORMAT__BINARYPROTO;
    if (sp->snapshot_prefix != protobuf_c_empty_string) free(sp->snapshot_prefix);
    sp->snapshot_prefix = NULL;
    /* extending a run (Caffe's habit): max_iter moves only the "poly" rate */
    if (!sp->lr_policy || strcmp(sp->lr_policy, "poly") != 0) {
      sp->has_max_iter = 0;
      sp->max_iter = 0;
    }
  }
  return k;
}

void mdl_driver_hash_plan(driver *d) {
  d->plan_len = protobuf_c_message_get_packed_size(&d->plan->base);
  d->plan_bytes = mdl_xmalloc(d->plan_len + 1);
  protobuf_c_message_pack(&d->plan->base, d->plan_bytes);
  Memdl__Plan *key = resume_key(d->plan);
  d->key_len = protobuf_c_message_get_packed_size(&key->base);
  d->key_bytes = mdl_xmalloc(d->key_len + 1);
  protobuf_c_message_pack(&key->base, d->key_bytes);
  mdl_pb_free(key);
  d->plan_hash = fnv1a(d->key_bytes, d->key_len) ^
                 fnv1a((const uint8_t *)d->trainer_name, strlen(d->trainer_name));
}

/* Why a snapshot's plan is not this run's: the first field that differs
 * ("solver.base_lr"), or a general word for snapshots without their plan. */
static void plan_change(const driver *d, const Memdl__DriverSnapshot *s, char *why, size_t cap) {
  snprintf(why, cap, "another job (or another version of it)");
  if (!s->has_plan) return;
  Memdl__Plan *old = (Memdl__Plan *)protobuf_c_message_unpack(&memdl__plan__descriptor, NULL,
                                                              s->plan.len, s->plan.data);
  Memdl__Plan *cur = (Memdl__Plan *)protobuf_c_message_unpack(&memdl__plan__descriptor, NULL,
                                                              d->key_len, d->key_bytes);
  char path[400];
  if (old && cur && mdl_pb_diff(&old->base, &cur->base, path, sizeof path))
    snprintf(why, cap, "a job whose %s differs", path);
  else if (old && cur)
    snprintf(why, cap, "another trainer than %s", d->trainer_name);
  mdl_pb_free(old);
  mdl_pb_free(cur);
}

/* Reads the snapshot at path; *snap NULL when there is none. */
static mdl_status load_snapshot(driver *d, const char *path, Memdl__DriverSnapshot **snap,
                                mdl_error *err) {
  *snap = NULL;
  if (access(path, F_OK) != 0) return MDL_OK;
  char *buf = NULL;
  size_t len = 0;
  mdl_status st = mdl_file_read(path, &buf, &len, err);
  if (st != MDL_OK) return st;
  Memdl__DriverSnapshot *s = (Memdl__DriverSnapshot *)protobuf_c_message_unpack(
      &memdl__driver_snapshot__descriptor, NULL, len, (const uint8_t *)buf);
  free(buf);
  if (!s)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: not a distributed run's snapshot (a single-worker .solverstate "
                      "resumes without --workers)",
                      path);
  if (s->version != SNAPSHOT_VERSION || s->plan_hash != d->plan_hash) {
    char why[600];
    plan_change(d, s, why, sizeof why);
    mdl_pb_free(s);
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s was written for %s; resume with the job as it was, or move the "
                      "snapshot away to start over",
                      path, why);
  }
  if (s->num_workers != (uint32_t)d->k || s->seed != d->seed) {
    uint32_t k = s->num_workers;
    uint64_t seed = s->seed;
    mdl_pb_free(s);
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s was written by a run on %u workers with seed %llu; this run has %d "
                      "workers and seed %llu",
                      path, k, (unsigned long long)seed, d->k, (unsigned long long)d->seed);
  }
  /* unsigned in the file: compared unsigned, so 2^31 and above cannot
   * become a negative iteration */
  if (s->weights.len != d->n_params * sizeof(float) || s->n_worker != (size_t)d->k ||
      s->iter > (uint32_t)d->max_iter || s->round > s->iter) {
    mdl_pb_free(s);
    return mdl_errorf(err, MDL_ERR_INVALID, "%s does not match the model", path);
  }
  *snap = s;
  return MDL_OK;
}

/* --- model files ------------------------------------------------------------ */

mdl_status mdl_driver_save_model(driver *d, mdl_error *err) {
  if (!d->model || !mdl_trainer_can_save(d->model)) return MDL_OK;
  mdl_status wst = mdl_driver_weights(d, err);
  if (wst != MDL_OK) return wst;
  char path[1200];
  snprintf(path, sizeof path, "%s_iter_%d.caffemodel", d->prefix, d->iter);
  /* mdl_caffemodel_save writes atomically itself */
  mdl_status st = make_parent(path, err);
  if (st == MDL_OK) st = mdl_trainer_save(d->model, d->w, path, err);
  if (st != MDL_OK) return st;
  snprintf(d->res->weights_file, sizeof d->res->weights_file, "%s", path);
  dlog(d, "weights at iteration %d: %s", d->iter, path);
  return MDL_OK;
}

mdl_status mdl_driver_snapshot_point(driver *d, mdl_error *err) {
  if (d->snap_iter == d->iter) return MDL_OK; /* already written at this iteration */
  double t0 = mdl_now();
  mdl_status st = mdl_driver_save_model(d, err);
  char state[1200];
  snprintf(state, sizeof state, "%s_iter_%d.solverstate", d->prefix, d->iter);
  bool written = false;
  if (st == MDL_OK) st = mdl_driver_state_write(d, state, &written, err);
  if (st == MDL_OK) {
    d->snap_iter = d->iter;
    if (written) snprintf(d->res->state_file, sizeof d->res->state_file, "%s", state);
    mdl_driver_report_snapshot(d, d->res->weights_file, written ? state : "");
  }
  mdl_progress_exclude(&d->prog, mdl_now() - t0);
  d->aside_s += mdl_now() - t0;
  return st;
}

/* --- where partitions start ----------------------------------------------------- */

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

/* --resume without a file: the newest (by the iteration inside) of the
 * snapshot_rounds file and the <prefix>_iter_N.solverstate of largest N. */
static mdl_status load_newest(driver *d, Memdl__DriverSnapshot **snap, char *used, size_t cap,
                              mdl_error *err) {
  mdl_status st = load_snapshot(d, d->snapshot_path, snap, err);
  if (st != MDL_OK) return st;
  snprintf(used, cap, "%s", d->snapshot_path);
  int n = mdl_snapshot_newest(d->prefix);
  if (n < 0) return MDL_OK;
  char *path = mdl_snapshot_name(d->prefix, n, ".solverstate");
  Memdl__DriverSnapshot *other = NULL;
  st = load_snapshot(d, path, &other, err);
  if (st == MDL_OK && other && (!*snap || other->iter > (*snap)->iter)) {
    mdl_pb_free(*snap);
    *snap = other;
    other = NULL;
    snprintf(used, cap, "%s", path);
  }
  mdl_pb_free(other);
  free(path);
  return st;
}

mdl_status mdl_driver_resume(driver *d, Memdl__DriverSnapshot **snap, mdl_error *err) {
  *snap = NULL;
  mdl_status st = MDL_OK;
  char used[1200];
  snprintf(used, sizeof used, "%s", d->o.resume_file ? d->o.resume_file : d->snapshot_path);
  if (d->o.resume_file) {
    st = load_snapshot(d, d->o.resume_file, snap, err);
    if (st == MDL_OK && !*snap)
      st = mdl_errorf(err, MDL_ERR_INVALID, "--resume %s: no such file", d->o.resume_file);
  } else if (d->o.resume) {
    st = load_newest(d, snap, used, sizeof used, err);
  }
  if (st != MDL_OK) return st;
  if (*snap) {
    memcpy(d->w, (*snap)->weights.data, (*snap)->weights.len);
    d->iter = (int)(*snap)->iter;
    d->round = (int)(*snap)->round;
    d->res->resumed = true;
    restore_partitions(d, *snap);
    /* the shares and tau the run had: the resumed run computes its bits */
    if ((*snap)->has_tau && (*snap)->tau > 0) d->tau = (int)(*snap)->tau;
    for (int i = 0; i < d->k; i++) d->s[i].batch = (*snap)->worker[i]->batch;
    dlog(d, "resuming from %s at iteration %d, round %d", used, d->iter, d->round);
    return MDL_OK;
  }
  if (d->o.resume) /* as a single-worker --resume: nothing to continue is an error */
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "--resume: no %s_iter_N.solverstate or %s to resume from", d->prefix,
                      d->snapshot_path);
  for (size_t p = 0; p < d->n_all_train; p++)
    lineage_push(&d->s[p % (size_t)d->k].train, &d->s[p % (size_t)d->k].n_train, d->all_train[p]);
  for (size_t p = 0; p < d->n_all_test; p++)
    lineage_push(&d->s[p % (size_t)d->k].test, &d->s[p % (size_t)d->k].n_test, d->all_test[p]);
  return MDL_OK;
}
