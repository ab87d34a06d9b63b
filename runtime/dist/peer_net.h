/* A worker's side of peer-to-peer averaging over gRPC: the exchange
 * (exchange.h) with a transport that sends its pieces as
 * "/memdl.Worker/Peer" calls to the other workers, with the same token and
 * TLS as the driver's links, and takes theirs from the worker's Peer
 * handler. Owns the channels to the peers and the exchange's inbox; not the
 * worker's rounds (worker.c) nor who takes part (the driver names the
 * members and the epoch in each RoundRequest). */
#ifndef MDL_RUNTIME_PEER_NET_H
#define MDL_RUNTIME_PEER_NET_H

#include <stdio.h>

#include "common/error.h"
#include "rpc.pb-c.h"
#include "runtime/rpc/rpc.h"

#define MDL_WORKER_PEER "/memdl.Worker/Peer"
/* Largest piece a round may ask for (floats) and a Peer message's bound. */
#define MDL_PEER_MAX_PIECE_FLOATS ((uint64_t)1 << 24)
#define MDL_PEER_MAX_BYTES (MDL_PEER_MAX_PIECE_FLOATS * 4 + 4096)

typedef struct mdl_peer_net mdl_peer_net;

/* sec is copied (its strings too): the peers are called with it. */
mdl_peer_net *mdl_peer_net_new(const mdl_rpc_security *sec, FILE *log);
void mdl_peer_net_free(mdl_peer_net *p);

/* A new run (from Setup): this worker is `self` among the peers' addresses
 * (by worker index; n_peers 0: star only) for vectors of n floats. Closes
 * the previous run's channels. Connects to the peers before returning
 * (waiting at most a few seconds; a peer not up yet is judged by the
 * rounds); an address the security rules refuse fails here. */
mdl_status mdl_peer_net_setup(mdl_peer_net *p, uint64_t session, int self, char *const *peers,
                              int n_peers, size_t n, mdl_error *err);

/* Whether a round asks for peer averaging. */
bool mdl_peer_net_wanted(const Memdl__RoundRequest *r);

/* Checks a peer round's fields before training: members, epoch, piece,
 * and, for kept_epoch, that this worker still holds that average. */
mdl_status mdl_peer_net_check(const mdl_peer_net *p, const Memdl__RoundRequest *r, mdl_error *err);

/* The average of the exchange of `epoch` when this worker still holds it
 * (the last two successful exchanges are held; an exchange overwrites the
 * older one, never the one its round started from), else NULL. Owned by p,
 * valid until the exchange after next or the next Setup. */
const float *mdl_peer_net_held(const mdl_peer_net *p, uint64_t epoch);

/* Where a round that starts from the kept average finds it (NULL: none). */
const float *mdl_peer_net_kept(const mdl_peer_net *p, const Memdl__RoundRequest *r);

/* Averages `trained` (this worker's weights after the round, weighted by
 * samples) with the other members'; on success the result is what
 * mdl_peer_net_held returns for this epoch and *out points to it. The
 * average the round started from (r->kept_epoch) is left as it was, on
 * failure too. Peer-caused failures start with
 * MDL_EXCHANGE_PEER_FAILED and name the peer. */
mdl_status mdl_peer_net_average(mdl_peer_net *p, const Memdl__RoundRequest *r, const float *trained,
                                uint64_t samples, const volatile int *cancel, const float **out,
                                mdl_error *err);

/* The Peer handler's work (any thread): validates the piece against this
 * run and hands it to the exchange. */
mdl_status mdl_peer_net_deliver(mdl_peer_net *p, const Memdl__PeerPiece *m, mdl_error *err);

#endif
