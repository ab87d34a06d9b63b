/* The worker's request handlers: validate, then hand the work to the
 * trainer. The RPC layer runs one handler at a time (its serial section)
 * and encodes each reply inside it, so the state below needs no lock of its
 * own and replies may point into it. */
#define _GNU_SOURCE
#include "runtime/dist/worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/pb.h"
#include "plan.pb-c.h"
#include "rpc.pb-c.h"
#include "runtime/dist/peer_net.h"
#include "runtime/train/trainer.h"

struct mdl_worker {
  mdl_worker_opts o;
  mdl_rpc_server *srv;
  FILE *log;
  bool shutdown_seen;

  /* the run this worker is set up for (session 0: none) */
  uint64_t session;
  uint32_t index, num_workers;
  Memdl__Plan *plan;
  mdl_trainer *trainer;
  size_t n_params;
  /* n_params * sizeof(float), read outside the serial section when a
   * streamed request declares its size */
  _Atomic size_t weights_bytes;
  float *w_in, *w_out;  /* rpc buffers, reused across rounds */
  mdl_rpc_pin *out_pin; /* w_out is sent without a copy */
  uint8_t *state;       /* the last State reply's bytes */
  /* local runs: the driver's shared-memory file (weights in, our result out) */
  uint8_t *shm;
  size_t shm_len;
  float *shm_in, *shm_out;
  int shm_dirfd;       /* the launcher's private folder (-1: shared memory refused) */
  pid_t ppid;          /* our parent at start (the driver, for launched workers) */
  mdl_peer_net *peers; /* peer-to-peer averaging (issue 13); lives as long as w */

  /* reply storage, valid until the next reply */
  Memdl__SetupReply setup_reply;
  Memdl__RoundReply round_reply;
  Memdl__TestReply test_reply;
  Memdl__ReassignReply reassign_reply;
  Memdl__StateReply state_reply;
  Memdl__ShutdownReply shutdown_reply;
  Memdl__OutputSum *outs;
  Memdl__OutputSum **out_ptrs;
  int n_outs_cap;
  char host[256];
  char host_id[320]; /* SetupReply.host_id */
  char device[64];
};

static void wlog(mdl_worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wlog(mdl_worker *w, const char *fmt, ...) {
  char prefix[300];
  snprintf(prefix, sizeof prefix, "memdl worker %s: ", w->o.listen);
  va_list ap;
  va_start(ap, fmt);
  mdl_vlogf(w->log, prefix, fmt, ap);
  va_end(ap);
}

static void teardown(mdl_worker *w) {
  mdl_rpc_pin_wait(w->out_pin);
  mdl_trainer_free(w->trainer);
  w->trainer = NULL;
  mdl_pb_free(w->plan);
  w->plan = NULL;
  mdl_rpc_buffer_free(w->w_in, w->n_params * sizeof(float));
  mdl_rpc_buffer_free(w->w_out, w->n_params * sizeof(float));
  w->w_in = w->w_out = NULL;
  w->n_params = 0;
  w->weights_bytes = 0;
  free(w->state);
  w->state = NULL;
  if (w->shm) munmap(w->shm, w->shm_len);
  w->shm = NULL;
  w->shm_in = w->shm_out = NULL;
  w->session = 0;
  mdl_peer_net_setup(w->peers, 0, 0, NULL, 0, 0, NULL); /* no peers: cannot fail */
}

/* Opens the driver's weights file for a Setup that arrived on call: only
 * for a worker the local launcher started, only over its Unix socket, and
 * only a file directly inside the launcher's private folder, opened
 * through that folder's descriptor without following links. Anything else
 * could make this worker map and overwrite a file of the caller's
 * choosing with this process's rights. */
static mdl_status open_shm(mdl_worker *w, mdl_rpc_call_ctx *call, const char *path, int *fd_out,
                           mdl_error *err) {
  *fd_out = -1;
  if (w->shm_dirfd < 0)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "shared weights refused: this worker was not started by the local "
                      "launcher (weights must travel in the messages)");
  const char *peer = mdl_rpc_call_peer(call);
  if (strncmp(peer, "unix:", 5))
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "shared weights refused over %s: only for calls on the launcher's Unix "
                      "socket",
                      peer);
  size_t dl = strlen(w->o.shm_dir);
  const char *name = path + dl + 1;
  if (strncmp(path, w->o.shm_dir, dl) || path[dl] != '/' || !name[0] || strchr(name, '/') ||
      !strcmp(name, ".") || !strcmp(name, ".."))
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "shared weights %s: not a file directly in the launcher's folder %s", path,
                      w->o.shm_dir);
  struct stat ds;
  if (fstat(w->shm_dirfd, &ds) != 0 || ds.st_uid != geteuid() || (ds.st_mode & 077))
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "shared weights: the folder %s is no longer ours with mode 0700",
                      w->o.shm_dir);
  int fd = openat(w->shm_dirfd, name, O_RDWR | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "shared weights %s: %s", path, strerror(errno));
  *fd_out = fd;
  return MDL_OK;
}

/* Maps the driver's weights file: our own user's private regular file of
 * exactly (workers + 1) regions, each large enough for the weights. */
static mdl_status map_shm(mdl_worker *w, mdl_rpc_call_ctx *call, const char *path, uint64_t stride,
                          uint32_t workers, uint32_t index, size_t n_params, mdl_error *err) {
  if (stride < n_params * sizeof(float) || stride % 64 || stride > ((uint64_t)1 << 40))
    return mdl_errorf(err, MDL_ERR_INVALID, "shared weights: region of %llu bytes for %zu floats",
                      (unsigned long long)stride, n_params);
  int fd;
  mdl_status s = open_shm(w, call, path, &fd, err);
  if (s != MDL_OK) return s;
  struct stat st;
  uint64_t want = stride * ((uint64_t)workers + 1);
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) ||
      st.st_nlink != 1 || (uint64_t)st.st_size != want) {
    close(fd);
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "shared weights %s: not our own private regular file of %llu bytes", path,
                      (unsigned long long)want);
  }
  void *p = mmap(NULL, (size_t)want, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED)
    return mdl_errorf(err, MDL_ERR_NOMEM, "shared weights %s: mmap: %s", path, strerror(errno));
  w->shm = p;
  w->shm_len = (size_t)want;
  w->shm_in = (float *)p;
  w->shm_out = (float *)((uint8_t *)p + stride * ((uint64_t)index + 1));
  return MDL_OK;
}

static mdl_status check_session(mdl_worker *w, uint64_t session, mdl_error *err) {
  if (!w->session) return mdl_errorf(err, MDL_ERR_INVALID, "not set up: call Setup first");
  if (session != w->session)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "session %016llx is not this worker's run (%016llx): a stale driver?",
                      (unsigned long long)session, (unsigned long long)w->session);
  return MDL_OK;
}

/* Where a Round's or Test's weights are decoded: straight into w_in, once
 * their size matches the model. */
static void *weights_dest(void *ctx, size_t len, mdl_error *err) {
  mdl_worker *w = ctx;
  if (!w->trainer) {
    mdl_errorf(err, MDL_ERR_INVALID, "weights before Setup");
    return NULL;
  }
  if (len != w->n_params * sizeof(float)) {
    mdl_errorf(err, MDL_ERR_INVALID,
               "weights of %zu bytes; the model has %zu parameters (%zu bytes)", len, w->n_params,
               w->n_params * sizeof(float));
    return NULL;
  }
  return w->w_in;
}

/* weights_dest's size check, without the buffer (outside the serial
 * section, for a streamed request's declared size). */
static bool weights_check(void *ctx, size_t len, mdl_error *err) {
  mdl_worker *w = ctx;
  size_t want = w->weights_bytes;
  if (!want) {
    mdl_errorf(err, MDL_ERR_INVALID, "weights before Setup");
    return false;
  }
  if (len != want) {
    mdl_errorf(err, MDL_ERR_INVALID, "weights of %zu bytes; the model has %zu bytes", len, want);
    return false;
  }
  return true;
}

static mdl_status check_lineages(Memdl__PartitionLineage **l, size_t n, mdl_error *err) {
  if (n > MDL_WORKER_MAX_PARTITIONS)
    return mdl_errorf(err, MDL_ERR_INVALID, "%zu partitions: more than %d", n,
                      MDL_WORKER_MAX_PARTITIONS);
  for (size_t i = 0; i < n; i++)
    if (!l[i]->data || !l[i]->data->name || !l[i]->has_index || !l[i]->has_count ||
        l[i]->count == 0 || l[i]->index >= l[i]->count)
      return mdl_errorf(err, MDL_ERR_INVALID, "partition %zu: incomplete lineage", i);
  return MDL_OK;
}

static mdl_status on_setup(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                           size_t bulk_len, mdl_rpc_out *reply, mdl_error *err) {
  mdl_worker *w = ctx;
  const Memdl__SetupRequest *r = (const Memdl__SetupRequest *)m;
  double t0 = mdl_now();
  if (!r->session) return mdl_errorf(err, MDL_ERR_INVALID, "Setup: session 0");
  if (r->num_workers == 0 || r->num_workers > MDL_WORKER_MAX_WORKERS ||
      r->worker_index >= r->num_workers)
    return mdl_errorf(err, MDL_ERR_INVALID, "Setup: worker %u of %u", r->worker_index,
                      r->num_workers);
  if (!r->has_plan || r->plan.len == 0) return mdl_errorf(err, MDL_ERR_INVALID, "Setup: no plan");
  mdl_status st = check_lineages(r->train_partition, r->n_train_partition, err);
  if (st == MDL_OK) st = check_lineages(r->test_partition, r->n_test_partition, err);
  if (st != MDL_OK) return st;
  Memdl__Plan *plan = (Memdl__Plan *)protobuf_c_message_unpack(&memdl__plan__descriptor, NULL,
                                                               r->plan.len, r->plan.data);
  if (!plan) return mdl_errorf(err, MDL_ERR_INVALID, "Setup: malformed plan");
  if (!plan->solver) {
    mdl_pb_free(plan);
    return mdl_errorf(err, MDL_ERR_INVALID, "Setup: the plan has no solver");
  }
  if (r->train_batch && (st = mdl_plan_set_train_batch(plan, r->train_batch, err)) != MDL_OK) {
    mdl_pb_free(plan);
    mdl_error_prefix(err, "Setup: ");
    return st;
  }
  uint64_t replaced = w->session;
  if (replaced && replaced != r->session)
    wlog(w, "taken over by another driver (%s): run %016llx replaces run %016llx, which ends here",
         mdl_rpc_call_peer(call), (unsigned long long)r->session, (unsigned long long)replaced);
  else if (replaced)
    wlog(w, "set up again for run %016llx by %s", (unsigned long long)r->session,
         mdl_rpc_call_peer(call));
  teardown(w);

  const char *device = r->device && r->device[0] ? r->device : w->o.device;
  snprintf(w->device, sizeof w->device, "%s", device ? device : "cpu");
  mdl_trainer_opts to = {.device = w->device,
                         .threads = r->threads ? (int)r->threads : w->o.threads,
                         .seed = r->seed,
                         .worker_index = (int)r->worker_index,
                         .num_workers = (int)r->num_workers,
                         .base_dir = r->n_train_partition && r->train_partition[0]->base_dir
                                         ? r->train_partition[0]->base_dir
                                         : NULL};
  mdl_trainer *t = NULL;
  st = mdl_trainer_new(w->o.trainers, r->trainer, plan, &to, &t, err);
  if (st == MDL_OK)
    st = mdl_trainer_add_partitions(t, CAFFE__PHASE__TRAIN, r->train_partition,
                                    r->n_train_partition, err);
  if (st == MDL_OK)
    st = mdl_trainer_add_partitions(t, CAFFE__PHASE__TEST, r->test_partition, r->n_test_partition,
                                    err);
  if (st == MDL_OK && r->has_state && r->state.len)
    st = mdl_trainer_set_state(t, r->state.data, r->state.len, err);
  size_t n = st == MDL_OK ? mdl_trainer_param_count(t) : 0;
  float *a = NULL, *b = NULL;
  if (st == MDL_OK) {
    a = mdl_rpc_buffer_alloc(n * sizeof(float));
    b = mdl_rpc_buffer_alloc(n * sizeof(float));
    if (!a || !b) st = mdl_errorf(err, MDL_ERR_NOMEM, "weights: %zu floats do not fit", n);
  }
  if (st == MDL_OK && r->shm_path && r->shm_path[0])
    st = map_shm(w, call, r->shm_path, r->shm_stride, r->num_workers, r->worker_index, n, err);
  if (st == MDL_OK && r->n_peer && r->n_peer != r->num_workers)
    st = mdl_errorf(err, MDL_ERR_INVALID, "%zu peer addresses for %u workers", r->n_peer,
                    r->num_workers);
  if (st == MDL_OK)
    st = mdl_peer_net_setup(w->peers, r->session, (int)r->worker_index, r->peer, (int)r->n_peer, n,
                            err);
  if (st != MDL_OK) {
    if (w->shm) munmap(w->shm, w->shm_len);
    w->shm = NULL;
    mdl_rpc_buffer_free(a, n * sizeof(float));
    mdl_rpc_buffer_free(b, n * sizeof(float));
    mdl_trainer_free(t);
    mdl_pb_free(plan);
    mdl_error_prefix(err, "Setup: ");
    return st;
  }
  w->plan = plan;
  w->trainer = t;
  w->n_params = n;
  w->weights_bytes = n * sizeof(float);
  w->w_in = a;
  w->w_out = b;
  w->session = r->session;
  w->index = r->worker_index;
  w->num_workers = r->num_workers;
  wlog(w, "worker %u of %u: %zu parameters%s, %llu train / %llu test samples, %s (driver %s)",
       w->index, w->num_workers, n, w->shm ? " (weights in shared memory)" : "",
       (unsigned long long)mdl_trainer_samples(t, CAFFE__PHASE__TRAIN),
       (unsigned long long)mdl_trainer_samples(t, CAFFE__PHASE__TEST), w->device,
       mdl_rpc_call_peer(call));

  Memdl__SetupReply *rep = &w->setup_reply;
  memdl__setup_reply__init(rep);
  rep->has_param_count = rep->has_train_samples = rep->has_test_samples = 1;
  rep->param_count = n;
  rep->train_samples = mdl_trainer_samples(t, CAFFE__PHASE__TRAIN);
  rep->test_samples = mdl_trainer_samples(t, CAFFE__PHASE__TEST);
  rep->device = w->device;
  rep->host = w->host;
  rep->host_id = w->host_id;
  rep->has_replaced_session = replaced != 0;
  rep->replaced_session = replaced;
  rep->has_setup_seconds = 1;
  rep->setup_seconds = mdl_now() - t0;
  reply->msg = &rep->base;
  return MDL_OK;
}

/* Which machine this is, for grouping workers by host: the kernel's boot id
 * (one per boot of one machine, also inside containers, which share it)
 * with the host name (told apart where a boot id is not readable). For
 * tests only: MDL_TEST_HOST_ID pretends workers on one machine run on
 * different hosts. */
static void host_identity(mdl_worker *w) {
  const char *fake = getenv("MDL_TEST_HOST_ID");
  if (fake && fake[0]) {
    snprintf(w->host_id, sizeof w->host_id, "test:%s", fake);
    return;
  }
  char boot[64] = "";
  FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
  if (f) {
    if (!fgets(boot, sizeof boot, f)) boot[0] = 0;
    fclose(f);
    boot[strcspn(boot, "\n")] = 0;
  }
  snprintf(w->host_id, sizeof w->host_id, "%s/%s", boot, w->host);
}

/* Outputs of a trainer pass as reply fields pointing into the stats. */
static void fill_outputs(mdl_worker *w, const mdl_trainer_stats *s, size_t *n_out,
                         Memdl__OutputSum ***out) {
  if (s->n_outputs > w->n_outs_cap) {
    w->n_outs_cap = s->n_outputs;
    w->outs = mdl_xrealloc(w->outs, (size_t)w->n_outs_cap * sizeof *w->outs);
    w->out_ptrs = mdl_xrealloc(w->out_ptrs, (size_t)w->n_outs_cap * sizeof *w->out_ptrs);
  }
  for (int i = 0; i < s->n_outputs; i++) {
    memdl__output_sum__init(&w->outs[i]);
    w->outs[i].name = s->outputs[i].name;
    w->outs[i].n_sum = (size_t)s->outputs[i].n;
    w->outs[i].sum = s->outputs[i].sum;
    w->out_ptrs[i] = &w->outs[i];
  }
  *n_out = (size_t)s->n_outputs;
  *out = w->out_ptrs;
}

static mdl_status check_weights(mdl_worker *w, size_t bulk_len, mdl_error *err) {
  if (bulk_len != w->n_params * sizeof(float))
    return mdl_errorf(err, MDL_ERR_INVALID, "no weights (%zu parameters expected)", w->n_params);
  return MDL_OK;
}

static mdl_status on_round(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                           size_t bulk_len, mdl_rpc_out *reply, mdl_error *err) {
  mdl_worker *w = ctx;
  const Memdl__RoundRequest *r = (const Memdl__RoundRequest *)m;
  mdl_status st = check_session(w, r->session, err);
  if (st != MDL_OK) return st;
  if (r->tau < 1 || r->tau > MDL_WORKER_MAX_TAU)
    return mdl_errorf(err, MDL_ERR_INVALID, "Round: tau %u outside [1, %d]", r->tau,
                      MDL_WORKER_MAX_TAU);
  int max_iter = w->plan->solver->max_iter;
  if (r->iter_start > (uint32_t)INT32_MAX / 2 ||
      (max_iter > 0 && (uint64_t)r->iter_start + r->tau > (uint64_t)max_iter))
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "Round: iterations %u..%u outside the solver's max_iter %d", r->iter_start,
                      r->iter_start + r->tau, max_iter);
  bool shm = r->weights_in_shm;
  if (shm && (!w->shm || bulk_len))
    return mdl_errorf(err, MDL_ERR_INVALID, "Round: weights_in_shm without shared weights");
  /* peer averaging (issue 13): maybe from our own last average, not the message's */
  bool peer = mdl_peer_net_wanted(r);
  if (peer && (shm || (r->kept_epoch && bulk_len)))
    return mdl_errorf(err, MDL_ERR_INVALID, "Round: peer averaging with weights from elsewhere");
  if (peer && (st = mdl_peer_net_check(w->peers, r, err)) != MDL_OK) return st;
  const float *kept = peer ? mdl_peer_net_kept(w->peers, r) : NULL;
  if (!shm && !kept && (st = check_weights(w, bulk_len, err)) != MDL_OK) return st;
  /* the previous reply may still be on its way out of w_out (or the average) */
  if (!shm) mdl_rpc_pin_wait(w->out_pin);
  uint8_t *saved = NULL;
  size_t saved_len = 0;
  if (r->calibrate && (st = mdl_trainer_get_state(w->trainer, &saved, &saved_len, err)) != MDL_OK)
    return st;
  mdl_trainer_stats s;
  st = mdl_trainer_run(w->trainer, (int)r->tau, (int)r->iter_start,
                       shm    ? w->shm_in
                       : kept ? kept
                              : w->w_in,
                       shm ? w->shm_out : w->w_out, mdl_rpc_call_cancel_flag(call), &s, err);
  if (r->calibrate) {
    mdl_error e2 = {0};
    mdl_status st2 = mdl_trainer_set_state(w->trainer, saved, saved_len, &e2);
    free(saved);
    if (st == MDL_OK && st2 != MDL_OK) {
      *err = e2;
      st = st2;
    }
  }
  const float *avg = NULL;
  if (st == MDL_OK && peer)
    st = mdl_peer_net_average(w->peers, r, w->w_out, s.samples, mdl_rpc_call_cancel_flag(call),
                              &avg, err);
  /* the driver sees the average only at TEST and snapshot points: the
   * members check it for it (every member holds the same bits) */
  if (st == MDL_OK && peer) {
    char when[64];
    snprintf(when, sizeof when, "in round %u", r->round + 1);
    st = mdl_trainer_check_average(w->trainer, avg, when, err);
  }
  if (st != MDL_OK) {
    if (mdl_rpc_call_cancelled(call)) wlog(w, "round %u cancelled by the driver", r->round);
    return st;
  }
  Memdl__RoundReply *rep = &w->round_reply;
  memdl__round_reply__init(rep);
  rep->has_samples = rep->has_iterations = rep->has_loss_sum = rep->has_compute_seconds = 1;
  rep->samples = s.samples;
  rep->iterations = (uint32_t)s.iterations;
  rep->loss_sum = s.loss_sum;
  rep->compute_seconds = s.compute_s;
  fill_outputs(w, &s, &rep->n_output, &rep->output);
  reply->msg = &rep->base;
  if (shm) {
    rep->has_weights_in_shm = rep->weights_in_shm = 1;
    return MDL_OK;
  }
  if (peer && !r->return_weights) return MDL_OK; /* the driver asked another member */
  reply->bulk_field = 1;                         /* RoundReply.weights */
  reply->bulk = peer ? avg : w->w_out;
  reply->bulk_len = w->n_params * sizeof(float);
  reply->pin = w->out_pin;
  return MDL_OK;
}

static mdl_status on_test(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                          size_t bulk_len, mdl_rpc_out *reply, mdl_error *err) {
  mdl_worker *w = ctx;
  const Memdl__TestRequest *r = (const Memdl__TestRequest *)m;
  mdl_status st = check_session(w, r->session, err);
  if (st != MDL_OK) return st;
  if (r->batches > MDL_WORKER_MAX_TAU)
    return mdl_errorf(err, MDL_ERR_INVALID, "Test: %u batches, more than %d", r->batches,
                      MDL_WORKER_MAX_TAU);
  if (r->test_net > 1024) return mdl_errorf(err, MDL_ERR_INVALID, "Test: test net %u", r->test_net);
  bool shm = r->weights_in_shm;
  if (shm && (!w->shm || bulk_len))
    return mdl_errorf(err, MDL_ERR_INVALID, "Test: weights_in_shm without shared weights");
  /* peer averaging: the average this worker kept, not the message's */
  const float *kept = NULL;
  if (r->kept_epoch) {
    if (shm || bulk_len)
      return mdl_errorf(err, MDL_ERR_INVALID, "Test: kept_epoch with weights from elsewhere");
    kept = mdl_peer_net_held(w->peers, r->kept_epoch);
    if (!kept)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "Test: the average of epoch %llu, which this worker does not hold",
                        (unsigned long long)r->kept_epoch);
  }
  if (!shm && !kept && (st = check_weights(w, bulk_len, err)) != MDL_OK) return st;
  mdl_trainer_stats s;
  st = mdl_trainer_test(w->trainer, (int)r->test_net, (int)r->batches,
                        shm    ? w->shm_in
                        : kept ? kept
                               : w->w_in,
                        &s, err);
  if (st != MDL_OK) return st;
  Memdl__TestReply *rep = &w->test_reply;
  memdl__test_reply__init(rep);
  rep->has_batches = rep->has_samples = rep->has_compute_seconds = 1;
  rep->batches = (uint64_t)s.iterations;
  rep->samples = s.samples;
  rep->compute_seconds = s.compute_s;
  fill_outputs(w, &s, &rep->n_output, &rep->output);
  reply->msg = &rep->base;
  return MDL_OK;
}

static mdl_status on_reassign(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                              size_t bulk_len, mdl_rpc_out *reply, mdl_error *err) {
  mdl_worker *w = ctx;
  const Memdl__ReassignRequest *r = (const Memdl__ReassignRequest *)m;
  mdl_status st = check_session(w, r->session, err);
  if (st == MDL_OK) st = check_lineages(r->add_train, r->n_add_train, err);
  if (st == MDL_OK) st = check_lineages(r->add_test, r->n_add_test, err);
  for (size_t i = 0; st == MDL_OK && i < r->n_remove_train; i++)
    st = mdl_trainer_remove_partition(w->trainer, CAFFE__PHASE__TRAIN,
                                      r->remove_train[i]->data ? r->remove_train[i]->data : "",
                                      r->remove_train[i]->index, err);
  for (size_t i = 0; st == MDL_OK && i < r->n_remove_test; i++)
    st = mdl_trainer_remove_partition(w->trainer, CAFFE__PHASE__TEST,
                                      r->remove_test[i]->data ? r->remove_test[i]->data : "",
                                      r->remove_test[i]->index, err);
  if (st == MDL_OK)
    st = mdl_trainer_add_partitions(w->trainer, CAFFE__PHASE__TRAIN, r->add_train, r->n_add_train,
                                    err);
  if (st == MDL_OK)
    st =
        mdl_trainer_add_partitions(w->trainer, CAFFE__PHASE__TEST, r->add_test, r->n_add_test, err);
  if (st != MDL_OK) return st;
  wlog(w, "partitions reassigned: +%zu -%zu train, +%zu -%zu test; now %llu train samples",
       r->n_add_train, r->n_remove_train, r->n_add_test, r->n_remove_test,
       (unsigned long long)mdl_trainer_samples(w->trainer, CAFFE__PHASE__TRAIN));
  Memdl__ReassignReply *rep = &w->reassign_reply;
  memdl__reassign_reply__init(rep);
  rep->has_train_samples = rep->has_test_samples = 1;
  rep->train_samples = mdl_trainer_samples(w->trainer, CAFFE__PHASE__TRAIN);
  rep->test_samples = mdl_trainer_samples(w->trainer, CAFFE__PHASE__TEST);
  reply->msg = &rep->base;
  return MDL_OK;
}

/* A State call asking for the peer average of `epoch` (the driver's fetch
 * when no round returned it): sent from where the peer net holds it, pinned
 * like a Round reply (the next round waits for it before an exchange can
 * overwrite it). */
static mdl_status reply_average(mdl_worker *w, uint64_t epoch, mdl_rpc_out *reply, mdl_error *err) {
  const float *avg = mdl_peer_net_held(w->peers, epoch);
  if (!avg)
    return mdl_errorf(err, MDL_ERR_INVALID, "State: no average of epoch %llu here",
                      (unsigned long long)epoch);
  mdl_rpc_pin_wait(w->out_pin);
  Memdl__StateReply *rep = &w->state_reply;
  memdl__state_reply__init(rep);
  rep->has_average_epoch = 1;
  rep->average_epoch = epoch;
  reply->msg = &rep->base;
  reply->bulk_field = 2; /* StateReply.average */
  reply->bulk = avg;
  reply->bulk_len = w->n_params * sizeof(float);
  reply->pin = w->out_pin;
  return MDL_OK;
}

static mdl_status on_state(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                           size_t bulk_len, mdl_rpc_out *reply, mdl_error *err) {
  mdl_worker *w = ctx;
  const Memdl__StateRequest *r = (const Memdl__StateRequest *)m;
  mdl_status st = check_session(w, r->session, err);
  if (st != MDL_OK) return st;
  if (r->average_epoch) return reply_average(w, r->average_epoch, reply, err);
  free(w->state);
  w->state = NULL;
  size_t len = 0;
  st = mdl_trainer_get_state(w->trainer, &w->state, &len, err);
  if (st != MDL_OK) return st;
  Memdl__StateReply *rep = &w->state_reply;
  memdl__state_reply__init(rep);
  reply->msg = &rep->base;
  reply->bulk_field = 1; /* StateReply.state, copied: it is small next to the weights */
  reply->bulk = w->state;
  reply->bulk_len = len;
  return MDL_OK;
}

/* A peer's piece of an averaging: runs outside the serial section (the
 * round that waits for it holds that), touching only the peer net. */
static mdl_status on_peer(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                          size_t bulk_len, mdl_rpc_out *reply, mdl_error *err) {
  mdl_worker *w = ctx;
  return mdl_peer_net_deliver(w->peers, (const Memdl__PeerPiece *)m, err);
}

static mdl_status on_shutdown(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                              size_t bulk_len, mdl_rpc_out *reply, mdl_error *err) {
  mdl_worker *w = ctx;
  const Memdl__ShutdownRequest *r = (const Memdl__ShutdownRequest *)m;
  mdl_status st = check_session(w, r->session, err);
  if (st != MDL_OK) return st;
  teardown(w);
  if (r->exit) {
    w->shutdown_seen = true;
    mdl_rpc_call_stop_server(call);
  }
  memdl__shutdown_reply__init(&w->shutdown_reply);
  reply->msg = &w->shutdown_reply.base;
  return MDL_OK;
}

/* Setup is exclusive: one plan (up to 1 GiB) in memory at a time. */
static const mdl_rpc_method METHODS[] = {
    {MDL_WORKER_SETUP, &memdl__setup_request__descriptor, 0, NULL, MDL_WORKER_MAX_SETUP_BYTES,
     on_setup, NULL, true},
    {MDL_WORKER_ROUND, &memdl__round_request__descriptor, 5, weights_dest,
     MDL_WORKER_MAX_SMALL_BYTES, on_round, weights_check},
    {MDL_WORKER_TEST, &memdl__test_request__descriptor, 5, weights_dest, MDL_WORKER_MAX_SMALL_BYTES,
     on_test, weights_check},
    {MDL_WORKER_REASSIGN, &memdl__reassign_request__descriptor, 0, NULL, MDL_WORKER_MAX_SETUP_BYTES,
     on_reassign},
    {MDL_WORKER_STATE, &memdl__state_request__descriptor, 0, NULL, MDL_WORKER_MAX_SMALL_BYTES,
     on_state},
    {MDL_WORKER_SHUTDOWN, &memdl__shutdown_request__descriptor, 0, NULL, MDL_WORKER_MAX_SMALL_BYTES,
     on_shutdown},
    {MDL_WORKER_PEER, &memdl__peer_piece__descriptor, 0, NULL, MDL_PEER_MAX_BYTES, on_peer, NULL,
     false, true},
};

/* The launcher's private folder, kept open: shared-memory files are opened
 * relative to it, so renaming or replacing the path later changes nothing. */
static mdl_status open_private_dir(const char *listen, const char *dir, int *fd_out,
                                   mdl_error *err) {
  *fd_out = -1;
  if (strncmp(listen, "unix:", 5))
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "worker: --shm-dir is for workers on the launcher's unix:/path socket, not "
                      "%s",
                      listen);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "worker: --shm-dir %s: %s", dir, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 077)) {
    close(fd);
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "worker: --shm-dir %s must be our own folder with mode 0700", dir);
  }
  *fd_out = fd;
  return MDL_OK;
}

mdl_status mdl_worker_new(const mdl_worker_opts *o, mdl_worker **out, mdl_error *err) {
  *out = NULL;
  if (!o->listen) return mdl_errorf(err, MDL_ERR_INVALID, "worker: no address to listen on");
  FILE *log = o->log ? o->log : stderr;
  mdl_status st = mdl_rpc_check_server_auth(o->listen, &o->sec, log, err);
  if (st != MDL_OK) {
    mdl_error_prefix(err, "worker: ");
    return st;
  }
  int dirfd = -1;
  if (o->shm_dir) {
    st = open_private_dir(o->listen, o->shm_dir, &dirfd, err);
    if (st != MDL_OK) return st;
  }
  mdl_worker *w = mdl_xcalloc(1, sizeof *w);
  w->o = *o;
  w->o.listen = mdl_xstrdup(o->listen);
  w->o.shm_dir = o->shm_dir ? mdl_xstrdup(o->shm_dir) : NULL;
  w->shm_dirfd = dirfd;
  w->ppid = getppid();
  w->log = log;
  w->out_pin = mdl_rpc_pin_new();
  w->peers = mdl_peer_net_new(&o->sec, log);
  if (gethostname(w->host, sizeof w->host) != 0) snprintf(w->host, sizeof w->host, "?");
  host_identity(w);
  mdl_rpc_server_opts so = {
      .methods = METHODS,
      .n_methods = (int)(sizeof METHODS / sizeof *METHODS),
      .ctx = w,
      .sec = o->sec,
      .max_message_bytes = 0,
      .min_ping_interval_ms = o->min_ping_interval_ms,
      .stream_timeout_ms = o->stream_timeout_ms,
      .keepalive_ms = o->keepalive_ms,
      .keepalive_timeout_ms = o->keepalive_timeout_ms,
      .idle_timeout_ms = o->driver_timeout_ms > 0 ? o->driver_timeout_ms : 600000,
      .log = w->log};
  st = mdl_rpc_server_new(o->listen, &so, &w->srv, err);
  if (st != MDL_OK) {
    mdl_error_prefix(err, "worker: ");
    mdl_worker_free(w);
    return st;
  }
  *out = w;
  return MDL_OK;
}

int mdl_worker_port(const mdl_worker *w) {
  return mdl_rpc_server_port(w->srv);
}

mdl_status mdl_worker_run(mdl_worker *w, const char **reason, mdl_error *err) {
  bool idle = false;
  mdl_status st = mdl_rpc_server_run(w->srv, &idle, err);
  if (reason) *reason = idle ? "driver gone" : w->shutdown_seen ? "shutdown" : "stopped";
  return st;
}

void mdl_worker_stop(mdl_worker *w) {
  if (w) mdl_rpc_server_stop(w->srv);
}

/* A local worker outliving its driver (SIGKILLed: the launcher's
 * PDEATHSIG sends us SIGTERM) removes the driver's private folder, weights
 * included, instead of leaving it until the next local run sweeps it. The
 * driver's pid is in the folder's driver.pid; only a dead one's folder goes,
 * through the descriptor opened at start, without following links. */
static void remove_dead_drivers_dir(mdl_worker *w) {
  if (w->shm_dirfd < 0) return;
  int fd = openat(w->shm_dirfd, "driver.pid", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  char buf[32] = {0};
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
  /* gone: no such process, or our parent that died (not yet reaped) */
  bool gone = pid > 0 && ((kill((pid_t)pid, 0) != 0 && errno == ESRCH) ||
                          (pid == (long)w->ppid && getppid() != w->ppid));
  if (!gone) return;
  int dfd = dup(w->shm_dirfd);
  DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
  if (!d) {
    if (dfd >= 0) close(dfd);
    return;
  }
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlinkat(w->shm_dirfd, e->d_name, 0);
  closedir(d);
  if (rmdir(w->o.shm_dir) == 0 || errno == ENOENT)
    wlog(w, "the driver (pid %ld) is gone: removed its folder %s", pid, w->o.shm_dir);
}

void mdl_worker_free(mdl_worker *w) {
  if (!w) return;
  mdl_rpc_server_free(w->srv); /* joins handlers before their state goes */
  teardown(w);
  mdl_peer_net_free(w->peers);
  remove_dead_drivers_dir(w);
  mdl_rpc_pin_free(w->out_pin);
  free(w->outs);
  free(w->out_ptrs);
  free((char *)w->o.listen);
  free((char *)w->o.shm_dir);
  if (w->shm_dirfd >= 0) close(w->shm_dirfd);
  free(w);
}

mdl_status mdl_worker_serve(const mdl_worker_opts *o, mdl_error *err) {
  mdl_worker *w;
  mdl_status st = mdl_worker_new(o, &w, err);
  if (st != MDL_OK) return st;
  int port = mdl_worker_port(w);
  if (port)
    wlog(w, "listening (port %d)", port);
  else
    wlog(w, "listening");
  const char *reason = "";
  st = mdl_worker_run(w, &reason, err);
  if (!strcmp(reason, "driver gone"))
    wlog(w, "no call from the driver for %d ms: exiting",
         o->driver_timeout_ms > 0 ? o->driver_timeout_ms : 600000);
  else
    wlog(w, "exiting (%s)", reason);
  mdl_worker_free(w);
  return st;
}
