/* The driver's part in peer-to-peer averaging (issue 13; the exchange is
 * runtime/dist/exchange.h, run by the workers): whether a run uses it, the
 * peer list each Setup carries, each round attempt's epoch and members, and
 * whether the members still hold the last average so the weights need not
 * travel. The driver stays the coordinator: it receives the average from
 * one member per round (for TEST, snapshots, model files and the fault
 * path's redo) instead of sending and receiving K copies. */
#define _GNU_SOURCE
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
  dlog(d, "averaging peer-to-peer among the workers (cluster { averaging: STAR } for the star)");
}

void mdl_driver_peer_free(driver *d) {
  free(d->peer_addrs);
  free(d->peer_members);
  d->peer_addrs = NULL;
  d->peer_members = NULL;
}

bool mdl_driver_peer_round(driver *d, slot **act, int n, Memdl__RoundRequest *req,
                           Memdl__RoundRequest *req0) {
  /* larger than any epoch before, across drivers too (workers refuse stale
   * epochs): the wall clock, or one more than the last */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  d->peer_epoch = now > d->peer_epoch ? now : d->peer_epoch + 1;
  bool same = d->kept_epoch && n == d->n_kept;
  for (int i = 0; i < n; i++) {
    same = same && d->peer_members[i] == (uint32_t)act[i]->index;
    d->peer_members[i] = (uint32_t)act[i]->index;
  }
  req->has_peer_epoch = req->has_exchange_timeout_ms = 1;
  req->peer_epoch = d->peer_epoch;
  req->n_member = (size_t)n;
  req->member = d->peer_members;
  req->exchange_timeout_ms = (uint32_t)d->round_timeout_ms;
  req->has_kept_epoch = same;
  req->kept_epoch = same ? d->kept_epoch : 0;
  d->kept_epoch = 0; /* until this attempt commits */
  d->n_kept = n;
  *req0 = *req;
  req0->has_return_weights = req0->return_weights = 1;
  return !same;
}

bool mdl_driver_peer_blames_another(const char *detail) {
  return strstr(detail, MDL_EXCHANGE_PEER_FAILED) != NULL;
}

void mdl_driver_peer_commit(driver *d) {
  d->kept_epoch = d->peer_epoch;
}

void mdl_driver_peer_unreachable(driver *d) {
  if (d->peer_forced) return; /* the round is retried; the job said PEER */
  d->peer = false;
  d->kept_epoch = 0;
  dlog(d,
       "round %d: the workers cannot average among themselves although each answers the driver "
       "(no route between them?): averaging through the driver from now on",
       d->round + 1);
}
