/* The gRPC transport of peer-to-peer averaging (see peer_net.h). Setup and
 * rounds run in the worker's serial section; deliveries come from Peer
 * handlers on their own threads at any time, so what they read (session,
 * size) sits under `mu`, and the exchange guards its inbox itself. */
#define _GNU_SOURCE
#include "runtime/dist/peer_net.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "runtime/dist/exchange.h"

/* The cost model's figures (notes/grpc-c-core.md, loopback): a small gRPC
 * call ~100 us; ~1 GB/s of weights. */
#define PEER_ALPHA_S 100e-6
#define PEER_BETA_S_PER_BYTE (1.0 / 1e9)
/* A peer whose connection attempts keep failing this long is taken for
 * dead. A channel still connecting is not: on a busy slow link a handshake
 * waits behind the other transfers (issue 13), and the exchange's deadline
 * bounds that wait. */
#define PEER_DEAD_S 0.5
/* How long Setup waits for the channels to connect, while links are quiet. */
#define PEER_CONNECT_S 5.0

struct mdl_peer_net {
  mdl_rpc_security sec;
  FILE *log;
  pthread_mutex_t mu;
  uint64_t session; /* under mu */
  size_t n;         /* under mu */
  int self, n_peers;
  char **addr;
  mdl_rpc_channel **ch;
  double *down_since; /* when a peer's channel was first seen failing (0: not since connected) */
  mdl_exchange *x[MDL_XCHG_STAGES]; /* an inbox per stage (exchange.h) */
  /* The last two exchanges' results, each with its epoch (0: none). An
   * exchange writes into the one its round did not start from, so the
   * average a round started from survives the round's failure: the
   * driver's redo (and its fetch, StateRequest.average_epoch) can use it. */
  float *avg[2];
  uint64_t avg_epoch[2];
  mdl_rpc_pin *pin;
  /* the round being exchanged: member position -> worker index */
  const uint32_t *member;
};

static char *dup_or_null(const char *s) {
  return s ? mdl_xstrdup(s) : NULL;
}

mdl_peer_net *mdl_peer_net_new(const mdl_rpc_security *sec, FILE *log) {
  mdl_peer_net *p = mdl_xcalloc(1, sizeof *p);
  p->sec = *sec;
  if (sec->token) {
    char *t = mdl_xmalloc(sec->token_len + 1);
    memcpy(t, sec->token, sec->token_len);
    t[sec->token_len] = 0;
    p->sec.token = t;
  }
  p->sec.tls_ca = dup_or_null(sec->tls_ca);
  p->sec.tls_cert = dup_or_null(sec->tls_cert);
  p->sec.tls_key = dup_or_null(sec->tls_key);
  p->log = log ? log : stderr;
  pthread_mutex_init(&p->mu, NULL);
  /* the bound is a sanity limit; deliveries are checked against the run's n */
  for (int s = 0; s < MDL_XCHG_STAGES; s++) p->x[s] = mdl_exchange_new((size_t)1 << 34);
  p->pin = mdl_rpc_pin_new();
  return p;
}

static void close_peers(mdl_peer_net *p) {
  for (int i = 0; i < p->n_peers; i++) {
    mdl_rpc_channel_free(p->ch[i]);
    free(p->addr[i]);
  }
  free(p->ch);
  free(p->addr);
  free(p->down_since);
  p->ch = NULL;
  p->addr = NULL;
  p->down_since = NULL;
  p->n_peers = 0;
  mdl_rpc_pin_wait(p->pin);
  for (int i = 0; i < 2; i++) {
    mdl_rpc_buffer_free(p->avg[i], p->n * sizeof(float));
    p->avg[i] = NULL;
    p->avg_epoch[i] = 0;
  }
}

void mdl_peer_net_free(mdl_peer_net *p) {
  if (!p) return;
  close_peers(p);
  for (int s = 0; s < MDL_XCHG_STAGES; s++) mdl_exchange_free(p->x[s]);
  mdl_rpc_pin_free(p->pin);
  free((char *)p->sec.token);
  free((char *)p->sec.tls_ca);
  free((char *)p->sec.tls_cert);
  free((char *)p->sec.tls_key);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

/* Opens the connections to the peers now, before the first round: opened
 * lazily there, a handshake queued behind the other peers' megabytes and
 * missed gRPC's 20 s connect deadline at 100 Mbit/s with 8 workers (issue
 * 13). Waits until each channel is connected or failing, at most
 * PEER_CONNECT_S; a peer not up yet is left to the rounds to judge. */
static void connect_peers(mdl_peer_net *p, int self) {
  double until = mdl_now() + PEER_CONNECT_S;
  for (;;) {
    bool settled = true;
    for (int i = 0; i < p->n_peers; i++)
      if (i != self && !mdl_rpc_channel_connected(p->ch[i]) && !mdl_rpc_channel_failing(p->ch[i]))
        settled = false;
    if (settled || mdl_now() >= until) return;
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
}

mdl_status mdl_peer_net_setup(mdl_peer_net *p, uint64_t session, int self, char *const *peers,
                              int n_peers, size_t n, mdl_error *err) {
  pthread_mutex_lock(&p->mu);
  close_peers(p);
  p->session = 0;
  p->n = 0;
  pthread_mutex_unlock(&p->mu);
  if (n_peers == 0) return MDL_OK;
  if (self < 0 || self >= n_peers)
    return mdl_errorf(err, MDL_ERR_INVALID, "Setup: %d peer addresses for worker %d", n_peers,
                      self);
  float *avg[2] = {mdl_rpc_buffer_alloc(n * sizeof(float)),
                   mdl_rpc_buffer_alloc(n * sizeof(float))};
  if (!avg[0] || !avg[1]) {
    mdl_rpc_buffer_free(avg[0], n * sizeof(float));
    mdl_rpc_buffer_free(avg[1], n * sizeof(float));
    return mdl_errorf(err, MDL_ERR_NOMEM, "Setup: two peer averages of %zu floats", n);
  }
  p->ch = mdl_xcalloc((size_t)n_peers, sizeof *p->ch);
  p->addr = mdl_xcalloc((size_t)n_peers, sizeof *p->addr);
  p->down_since = mdl_xcalloc((size_t)n_peers, sizeof *p->down_since);
  p->n_peers = n_peers;
  p->avg[0] = avg[0];
  p->avg[1] = avg[1];
  p->n = n;
  mdl_rpc_channel_opts co = {.sec = p->sec};
  for (int i = 0; i < n_peers; i++) {
    p->addr[i] = mdl_xstrdup(peers[i] ? peers[i] : "");
    if (i == self) continue;
    mdl_status st = mdl_rpc_channel_new(p->addr[i], &co, &p->ch[i], err);
    if (st != MDL_OK) {
      mdl_error_prefix(err, "Setup: peer %d (%s): ", i, p->addr[i]);
      close_peers(p);
      return st;
    }
  }
  connect_peers(p, self);
  pthread_mutex_lock(&p->mu);
  p->session = session;
  p->self = self;
  pthread_mutex_unlock(&p->mu);
  return MDL_OK;
}

bool mdl_peer_net_wanted(const Memdl__RoundRequest *r) {
  return r->n_member > 0;
}

mdl_status mdl_peer_net_check(const mdl_peer_net *p, const Memdl__RoundRequest *r, mdl_error *err) {
  if (p->n_peers == 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "Round: peer averaging without peer addresses");
  if (r->n_member > (size_t)p->n_peers || !r->peer_epoch)
    return mdl_errorf(err, MDL_ERR_INVALID, "Round: %zu members of %d workers, epoch %llu",
                      r->n_member, p->n_peers, (unsigned long long)r->peer_epoch);
  if (r->piece_floats > MDL_PEER_MAX_PIECE_FLOATS)
    return mdl_errorf(err, MDL_ERR_INVALID, "Round: pieces of %llu floats, at most %llu",
                      (unsigned long long)r->piece_floats,
                      (unsigned long long)MDL_PEER_MAX_PIECE_FLOATS);
  if (r->n_member_host && r->n_member_host != r->n_member)
    return mdl_errorf(err, MDL_ERR_INVALID, "Round: %zu hosts for %zu members", r->n_member_host,
                      r->n_member);
  bool self_in = false;
  for (size_t i = 0; i < r->n_member; i++) {
    if (r->member[i] >= (uint32_t)p->n_peers)
      return mdl_errorf(err, MDL_ERR_INVALID, "Round: member %u of %d workers", r->member[i],
                        p->n_peers);
    for (size_t j = 0; j < i; j++)
      if (r->member[j] == r->member[i])
        return mdl_errorf(err, MDL_ERR_INVALID, "Round: member %u twice", r->member[i]);
    if ((int)r->member[i] == p->self) self_in = true;
  }
  if (!self_in)
    return mdl_errorf(err, MDL_ERR_INVALID, "Round: worker %d is not among the members", p->self);
  if (r->kept_epoch && !mdl_peer_net_held(p, r->kept_epoch))
    return mdl_errorf(
        err, MDL_ERR_INVALID,
        "Round: start from the average of epoch %llu; this worker holds %llu and %llu",
        (unsigned long long)r->kept_epoch, (unsigned long long)p->avg_epoch[0],
        (unsigned long long)p->avg_epoch[1]);
  return MDL_OK;
}

const float *mdl_peer_net_held(const mdl_peer_net *p, uint64_t epoch) {
  for (int i = 0; epoch && i < 2; i++)
    if (p->avg_epoch[i] == epoch) return p->avg[i];
  return NULL;
}

const float *mdl_peer_net_kept(const mdl_peer_net *p, const Memdl__RoundRequest *r) {
  return mdl_peer_net_held(p, r->kept_epoch);
}

/* --- the transport ------------------------------------------------------------ */

static mdl_status peer_send(void *ctx, const mdl_xchg_msg *msgs, int n, int timeout_ms, int *failed,
                            mdl_error *err) {
  mdl_peer_net *p = ctx;
  *failed = -1;
  Memdl__PeerPiece *req = mdl_xcalloc((size_t)n, sizeof *req);
  mdl_rpc_call *calls = mdl_xcalloc((size_t)n, sizeof *calls);
  for (int i = 0; i < n; i++) {
    const mdl_xchg_msg *m = &msgs[i];
    memdl__peer_piece__init(&req[i]);
    req[i].has_session = req[i].has_epoch = req[i].has_k = req[i].has_from = req[i].has_to = 1;
    req[i].has_kind = req[i].has_n = req[i].has_piece = req[i].has_chunk = 1;
    req[i].has_offset = req[i].has_samples = req[i].has_stage = 1;
    req[i].stage = m->stage;
    req[i].session = p->session;
    req[i].epoch = m->epoch;
    req[i].k = m->k;
    req[i].from = m->from;
    req[i].to = m->to;
    req[i].kind = m->kind;
    req[i].n = m->n;
    req[i].piece = m->piece;
    req[i].chunk = m->chunk;
    req[i].offset = m->offset;
    req[i].samples = m->samples;
    calls[i].ch = p->ch[p->member[m->route]];
    calls[i].method = MDL_WORKER_PEER;
    calls[i].req.msg = &req[i].base;
    calls[i].req.bulk_field = 12; /* PeerPiece.data */
    calls[i].req.bulk = m->data;
    calls[i].req.bulk_len = m->len * sizeof(float);
    calls[i].req.pin = m->len ? p->pin : NULL;
    calls[i].reply_spec.desc = &memdl__peer_reply__descriptor;
    calls[i].reply_spec.max_bytes = 4096;
    calls[i].stream = -1; /* Peer handlers run outside the serial section: never streamed */
  }
  mdl_status st = mdl_rpc_call_all(calls, n, timeout_ms, NULL, err);
  for (int i = 0; st == MDL_OK && i < n; i++)
    if (calls[i].code != MDL_RPC_OK) {
      *failed = (int)msgs[i].route;
      st = mdl_errorf(err, MDL_ERR_INTERNAL, "Peer call to %s: %s %s",
                      p->addr[p->member[msgs[i].route]], mdl_rpc_code_name(calls[i].code),
                      calls[i].detail);
    }
  mdl_rpc_calls_clear(calls, n);
  free(calls);
  free(req);
  return st;
}

static bool peer_alive(void *ctx, int member) {
  mdl_peer_net *p = ctx;
  int w = (int)p->member[member];
  if (mdl_rpc_channel_connected(p->ch[w])) {
    p->down_since[w] = 0;
    return true;
  }
  double now = mdl_now();
  /* between failed attempts the channel is seen connecting again: the clock
   * runs from the first failure until a connection succeeds */
  if (p->down_since[w] == 0 && mdl_rpc_channel_failing(p->ch[w])) p->down_since[w] = now;
  return p->down_since[w] == 0 || now - p->down_since[w] < PEER_DEAD_S;
}

static const char *peer_name(void *ctx, int member) {
  mdl_peer_net *p = ctx;
  return p->addr[p->member[member]];
}

static const mdl_xchg_transport_i GRPC_PEERS = {peer_send, peer_alive, peer_name};

/* The cost model's choice; MDL_EXCHANGE_SCHEDULE=direct|ring overrides it
 * (for measuring, as bench/bench_allreduce.sh does). */
static mdl_xchg_schedule schedule_for(int k, size_t n) {
  const char *e = getenv("MDL_EXCHANGE_SCHEDULE");
  if (e && !strcmp(e, "direct")) return MDL_XCHG_DIRECT;
  if (e && !strcmp(e, "ring")) return MDL_XCHG_RING;
  return mdl_exchange_choose(k, (double)n * sizeof(float), PEER_ALPHA_S, PEER_BETA_S_PER_BYTE);
}

mdl_status mdl_peer_net_average(mdl_peer_net *p, const Memdl__RoundRequest *r, const float *trained,
                                uint64_t samples, const volatile int *cancel, const float **out,
                                mdl_error *err) {
  int rank = 0;
  for (size_t i = 0; i < r->n_member; i++)
    if ((int)r->member[i] == p->self) rank = (int)i;
  for (size_t i = 0; i < r->n_member; i++)
    if ((int)r->member[i] != p->self) p->down_since[r->member[i]] = 0;
  p->member = r->member;
  int k = (int)r->n_member;
  /* into the buffer the round did not start from (else the older one) */
  int o = p->avg_epoch[0] <= p->avg_epoch[1] ? 0 : 1;
  if (r->kept_epoch && p->avg_epoch[o] == r->kept_epoch) o = 1 - o;
  mdl_xchg_round xr = {.epoch = r->peer_epoch,
                       .rank = rank,
                       .k = k,
                       .n = p->n,
                       .samples = samples,
                       .w = trained,
                       .out = p->avg[o],
                       .timeout_ms = r->exchange_timeout_ms ? (int)r->exchange_timeout_ms : 60000,
                       .cancel = cancel,
                       .schedule = schedule_for(k, p->n),
                       .piece_floats = r->piece_floats};
  mdl_xchg_transport t = {&GRPC_PEERS, p};
  p->avg_epoch[o] = 0; /* overwritten below, whatever the outcome */
  /* the driver grouped the members by host: average on each host first */
  mdl_status st = r->n_member_host ? mdl_exchange_run_hosts(p->x, &xr, r->member_host, &t, err)
                                   : mdl_exchange_run(p->x[0], &xr, &t, err);
  /* gRPC may still hold slices of what was sent (our weights, our chunk) */
  mdl_rpc_pin_wait(p->pin);
  p->member = NULL;
  if (st != MDL_OK) return st;
  p->avg_epoch[o] = r->peer_epoch;
  *out = p->avg[o];
  return MDL_OK;
}

mdl_status mdl_peer_net_deliver(mdl_peer_net *p, const Memdl__PeerPiece *m, mdl_error *err) {
  pthread_mutex_lock(&p->mu);
  uint64_t session = p->session;
  size_t n = p->n;
  pthread_mutex_unlock(&p->mu);
  if (!session || m->session != session)
    return mdl_errorf(err, MDL_ERR_INVALID, "Peer: session %016llx is not this worker's run",
                      (unsigned long long)m->session);
  if (m->n != n)
    return mdl_errorf(err, MDL_ERR_INVALID, "Peer: %llu floats; this model has %zu",
                      (unsigned long long)m->n, n);
  if (m->data.len % sizeof(float))
    return mdl_errorf(err, MDL_ERR_INVALID, "Peer: %zu bytes of data", m->data.len);
  if (m->stage >= MDL_XCHG_STAGES)
    return mdl_errorf(err, MDL_ERR_INVALID, "Peer: stage %u", m->stage);
  mdl_xchg_msg x = {.epoch = m->epoch,
                    .stage = m->stage,
                    .k = m->k,
                    .from = m->from,
                    .to = m->to,
                    .kind = m->kind,
                    .n = m->n,
                    .piece = m->piece,
                    .chunk = m->chunk,
                    .offset = m->offset,
                    .samples = m->samples,
                    .data = (const float *)m->data.data,
                    .len = m->data.len / sizeof(float)};
  return mdl_exchange_deliver(p->x[m->stage], &x, err);
}
