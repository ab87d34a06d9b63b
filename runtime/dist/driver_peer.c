/* The driver's part in peer-to-peer averaging (issue 13; the exchange is
 * runtime/dist/exchange.h, run by the workers): whether a run uses it, the
 * peer list each Setup carries, each round attempt's epoch and members,
 * whether the members still hold the last average so the weights need not
 * travel, and fetching that average when the driver needs it. The driver
 * stays the coordinator and leaves the data path: a round's average comes
 * back (from one member) only when the driver will read it after the round
 * (snapshot points, the end; driver.c decides), a TEST pass and a redo
 * among survivors run on the average the members kept, and a need nobody
 * foresaw (a stop mid-round, a worker coming back, a TEST worker that was
 * not a member) fetches it with a State call. Also which members share a
 * machine, and whether they average on each host first (exchange.h). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/dist/driver_impl.h"
#include "runtime/dist/exchange.h"

void mdl_driver_peer_init(driver *d) {
  const Memdl__Cluster *cl = d->plan->cluster;
  bool star = cl && cl->averaging == MEMDL__CLUSTER__AVERAGING__STAR;
  d->peer_forced = cl && cl->averaging == MEMDL__CLUSTER__AVERAGING__PEER;
  /* local workers share memory with the driver: the star costs no network */
  d->peer = !d->lw && d->k > 1 && !star;
  if (!d->peer) return;
  d->peer_addrs = mdl_xcalloc((size_t)d->k, sizeof *d->peer_addrs);
  for (int i = 0; i < d->k; i++) d->peer_addrs[i] = d->s[i].addr;
  d->peer_members = mdl_xcalloc((size_t)d->k, sizeof *d->peer_members);
  d->kept_members = mdl_xcalloc((size_t)d->k, sizeof *d->kept_members);
  d->peer_hosts = mdl_xcalloc((size_t)d->k, sizeof *d->peer_hosts);
  dlog(d, "averaging peer-to-peer among the workers (cluster { averaging: STAR } for the star)");
}

void mdl_driver_peer_free(driver *d) {
  free(d->peer_addrs);
  free(d->peer_members);
  free(d->kept_members);
  free(d->peer_hosts);
  d->peer_addrs = NULL;
  d->peer_members = d->kept_members = d->peer_hosts = NULL;
}

bool mdl_driver_peer_from_kept(const driver *d, slot *const *act, int n) {
  if (!d->kept_epoch) return false;
  for (int i = 0; i < n; i++) {
    bool kept = false;
    for (int j = 0; j < d->n_kept && !kept; j++)
      kept = d->kept_members[j] == (uint32_t)act[i]->index;
    if (!kept) return false;
  }
  return true;
}

/* The cost model's figures for averaging by host (exchange.h): between
 * hosts a 1 Gbit/s link, the common case past one machine (a faster one
 * makes the model keep the flat exchange longer); on a host, loopback gRPC
 * (notes/grpc-c-core.md: ~100 us a call, ~1 GB/s). */
#define HOSTS_ALPHA_S 100e-6
#define HOSTS_BETA_S_PER_BYTE (1.0 / 125e6)
#define LOCAL_ALPHA_S 100e-6
#define LOCAL_BETA_S_PER_BYTE (1.0 / 1e9)

/* Groups the n members act by the machine they said they run on (into
 * d->peer_hosts: each member's first member on its host) and says whether
 * they average on each host first: the model's choice, or
 * MDL_EXCHANGE_HOSTS=on|off (for measuring and tests). Said in the log
 * when the host count changes. */
static bool by_hosts(driver *d, slot *const *act, int n) {
  for (int i = 0; i < n; i++) {
    int q = 0;
    while (strcmp(act[q]->host_id, act[i]->host_id)) q++;
    d->peer_hosts[i] = (uint32_t)q;
  }
  int hosts = mdl_exchange_hosts(d->peer_hosts, n);
  double bytes = (double)d->n_params * sizeof(float);
  mdl_xchg_host_model m = mdl_exchange_model_hosts(
      n, hosts, bytes, HOSTS_ALPHA_S, HOSTS_BETA_S_PER_BYTE, LOCAL_ALPHA_S, LOCAL_BETA_S_PER_BYTE);
  bool on = mdl_exchange_choose_hosts(n, hosts, bytes, HOSTS_ALPHA_S, HOSTS_BETA_S_PER_BYTE,
                                      LOCAL_ALPHA_S, LOCAL_BETA_S_PER_BYTE);
  const char *e = getenv("MDL_EXCHANGE_HOSTS");
  if (e && !strcmp(e, "on")) on = hosts > 1 && hosts < n;
  if (e && !strcmp(e, "off")) on = false;
  if (hosts != d->hosts_said && hosts > 1 && hosts < n) {
    dlog(d,
         "%d workers on %d hosts: averaging %s (model: flat %.1f ms, on each host first %.1f "
         "ms%s)",
         n, hosts, on ? "on each host first, then across hosts" : "flat", m.flat_s * 1e3,
         m.hosts_s * 1e3,
         e && (!strcmp(e, "on") || !strcmp(e, "off")) ? "; MDL_EXCHANGE_HOSTS" : "");
    d->hosts_said = hosts;
  }
  return on;
}

uint64_t mdl_driver_peer_held_by(const driver *d, const slot *s) {
  /* after a fall back to the star (d->peer cleared) rounds move on from
   * d->w, so the kept average is no longer d->iter's */
  if (!d->peer || !d->kept_epoch) return 0;
  for (int j = 0; j < d->n_kept; j++)
    if (d->kept_members[j] == (uint32_t)s->index) return d->kept_epoch;
  return 0;
}

void mdl_driver_peer_round(driver *d, slot **act, int n, bool from_kept, bool want_w,
                           Memdl__RoundRequest *req, Memdl__RoundRequest *req0) {
  /* larger than any epoch before, across drivers too (workers refuse stale
   * epochs): the wall clock, or one more than the last */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  d->peer_epoch = now > d->peer_epoch ? now : d->peer_epoch + 1;
  for (int i = 0; i < n; i++) d->peer_members[i] = (uint32_t)act[i]->index;
  d->n_members = n;
  req->has_peer_epoch = req->has_exchange_timeout_ms = 1;
  req->peer_epoch = d->peer_epoch;
  req->n_member = (size_t)n;
  req->member = d->peer_members;
  req->exchange_timeout_ms = (uint32_t)d->round_timeout_ms;
  /* the members keep the committed average while this attempt runs, so a
   * redo after it fails can start from it again */
  req->has_kept_epoch = from_kept;
  req->kept_epoch = from_kept ? d->kept_epoch : 0;
  if (by_hosts(d, act, n)) {
    req->n_member_host = (size_t)n;
    req->member_host = d->peer_hosts;
  }
  *req0 = *req;
  req0->has_return_weights = req0->return_weights = want_w;
}

bool mdl_driver_peer_blames_another(const char *detail) {
  return strstr(detail, MDL_EXCHANGE_PEER_FAILED) != NULL;
}

void mdl_driver_peer_commit(driver *d, bool returned) {
  d->kept_epoch = d->peer_epoch;
  d->n_kept = d->n_members;
  memcpy(d->kept_members, d->peer_members, (size_t)d->n_members * sizeof *d->kept_members);
  d->w_behind = !returned;
}

void mdl_driver_peer_forget(driver *d, const slot *s) {
  for (int j = 0; j < d->n_kept; j++)
    if (d->kept_members[j] == (uint32_t)s->index) {
      memmove(&d->kept_members[j], &d->kept_members[j + 1],
              (size_t)(d->n_kept - j - 1) * sizeof *d->kept_members);
      d->n_kept--;
      return;
    }
}

/* One State call to s for the average of the kept epoch, into s->recv;
 * false (with why) when s did not give it as asked. */
static bool fetch_from(driver *d, slot *s, char *why, size_t cap, mdl_status *st, mdl_error *err) {
  Memdl__StateRequest req = MEMDL__STATE_REQUEST__INIT;
  req.has_session = req.has_average_epoch = 1;
  req.session = d->session;
  req.average_epoch = d->kept_epoch;
  mdl_rpc_call c;
  call_init(d, &c, s, MDL_WORKER_STATE, &req.base, &memdl__state_reply__descriptor);
  c.reply_spec.max_bytes = MDL_WORKER_MAX_SMALL_BYTES;
  c.reply_spec.bulk_field = 2; /* StateReply.average */
  recv_ctx rc = {s, d->n_params * sizeof(float)};
  c.reply_spec.bulk_dest = mdl_driver_recv_dest;
  c.reply_spec.bulk_ctx = &rc;
  *st = mdl_rpc_call_all(&c, 1, d->round_timeout_ms, d->abort, err);
  const Memdl__StateReply *r = (const Memdl__StateReply *)c.reply;
  bool ok = *st == MDL_OK && c.code == MDL_RPC_OK;
  if (*st == MDL_OK && c.code != MDL_RPC_OK)
    snprintf(why, cap, "%s %s", mdl_rpc_code_name(c.code), c.detail);
  else if (ok && (r->average_epoch != d->kept_epoch || c.bulk_len != rc.bytes)) {
    snprintf(why, cap, "gave %zu bytes of epoch %llu", c.bulk_len,
             (unsigned long long)r->average_epoch);
    ok = false;
  }
  if (ok) d->res->weights_received += c.bulk_len;
  mdl_rpc_calls_clear(&c, 1);
  return ok;
}

mdl_status mdl_driver_weights(driver *d, mdl_error *err) {
  if (!d->w_behind) return MDL_OK;
  char why[700] = "";
  for (int j = 0; j < d->n_kept; j++) {
    slot *s = &d->s[d->kept_members[j]];
    if (!s->alive) continue;
    mdl_status st;
    if (!fetch_from(d, s, why, sizeof why, &st, err)) {
      if (st != MDL_OK) return st;
      dlog(d, "worker %d (%s): the average of iteration %d not fetched: %s", s->index, s->addr,
           d->iter, why);
      continue;
    }
    char when[64];
    snprintf(when, sizeof when, "by iteration %d", d->iter);
    if (d->model && (st = mdl_trainer_check_average(d->model, s->recv, when, err)) != MDL_OK)
      return st;
    memcpy(d->w, s->recv, d->n_params * sizeof(float));
    d->w_behind = false;
    d->res->weights_fetched++;
    return MDL_OK;
  }
  return mdl_errorf(err, MDL_ERR_INTERNAL,
                    "iteration %d: the averaged weights are held by no live worker (the %d that "
                    "kept them failed%s%s)",
                    d->iter, d->n_kept, why[0] ? "; last: " : "", why);
}

void mdl_driver_peer_unreachable(driver *d) {
  if (d->peer_forced) return; /* the round is retried; the job said PEER */
  /* kept_epoch stays: the star's first round fetches d->w when behind */
  d->peer = false;
  dlog(d,
       "round %d: the workers cannot average among themselves although each answers the driver "
       "(no route between them?): averaging through the driver from now on",
       d->round + 1);
}
