/* Peer-to-peer averaging among K workers (issue 13): each worker's weights
 * are cut into K chunks; the owner of chunk c (member c) gathers the K
 * contributions of its chunk and averages them in member order 0..K-1 with
 * mdl_driver_average (a direct reduce-scatter), then sends the result to
 * every other member (all-gather). Same arithmetic per element as the
 * driver's star, hence the same bits. Messages travel as pieces of at most
 * piece_floats floats, in any order; stale, foreign, malformed and
 * duplicate pieces are refused.
 *
 * Owns the exchange's logic and inbox; not the transport (a small vtable:
 * memory in tests, gRPC in runtime/dist/worker.c), not membership (the
 * driver names the members and an epoch per round attempt).
 *
 * Schedules, both with the same bits (only the order of sends differs):
 *   DIRECT: each phase sends every piece to every member at once;
 *   RING:   phase step s = 1..K-1 sends to member (rank + s) % K only, so
 *           no member receives from more than one sender at a time.
 * mdl_exchange_choose picks one with the alpha-beta model below.
 *
 * Hosts (mdl_exchange_run_hosts): members grouped by host average in
 * three stages, each an exchange as above within a group, with its own
 * inbox (a message's `stage` picks it):
 *   1 local:  a host's members average among themselves (weights: their
 *             samples), each ending with its host's average a_h and total S_h;
 *   2 across: one leader per host (its first member) averages the a_h,
 *             weighted by S_h: the result;
 *   3 local:  each leader hands the result to its host's members (an
 *             exchange in which only the leader has samples: out = 1.0f * w).
 * Summation order, fixed by (host group, rank): an element's stage-1 sum
 * runs over its host's members in member order, the stage-2 sum over hosts
 * in the order of their first members; the same members and grouping give
 * the same bits. With one member per host, stage 1 gives a_h = 1.0f * w
 * = w and S_h = samples, so stage 2 is exactly the flat exchange (the
 * star's bits); with one host it is the flat exchange. Only stage 2 leaves
 * a host: its link carries one host's share, not L members' shares. */
#ifndef MDL_RUNTIME_EXCHANGE_H
#define MDL_RUNTIME_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define MDL_EXCHANGE_MAX_MEMBERS 4096
/* Default piece: 1 Mi floats (4 MiB), gRPC's comfortable unary size. */
#define MDL_EXCHANGE_PIECE_FLOATS ((size_t)1 << 20)
/* Starts the detail of every failure caused by a peer (not by this worker),
 * so a driver can tell "my peer died" from "I died". */
#define MDL_EXCHANGE_PEER_FAILED "peer exchange failed"

typedef enum mdl_xchg_kind {
  MDL_XCHG_REDUCE = 1, /* a member's contribution to the owner's chunk */
  MDL_XCHG_GATHER = 2, /* the owner's averaged chunk */
  MDL_XCHG_ABORT = 3,  /* the sender gave up on the epoch; chunk names the culprit */
} mdl_xchg_kind;

typedef enum mdl_xchg_schedule {
  MDL_XCHG_AUTO = 0,
  MDL_XCHG_DIRECT = 1,
  MDL_XCHG_RING = 2,
} mdl_xchg_schedule;

/* One piece on the wire. Positions are member positions (0..k-1), not
 * worker indices. */
typedef struct mdl_xchg_msg {
  uint64_t epoch; /* the round attempt; larger ones supersede */
  uint32_t stage; /* which inbox: 0 flat, 1..3 mdl_exchange_run_hosts' stages */
  uint32_t route; /* the receiver's member number for the transport (not sent) */
  uint32_t k, from, to;
  uint32_t kind;     /* mdl_xchg_kind */
  uint64_t n;        /* floats in the whole weight vector */
  uint64_t piece;    /* floats per piece (the last of a chunk may be shorter) */
  uint32_t chunk;    /* whose chunk: the owner's position */
  uint64_t offset;   /* floats from the chunk's start, a multiple of piece */
  uint64_t samples;  /* REDUCE: the sender's samples; GATHER: the members' total */
  const float *data; /* len floats, borrowed */
  uint64_t len;
} mdl_xchg_msg;

/* How pieces leave this worker. send delivers n messages (each to its
 * member `route`, positions within the stage's group being `to`) and returns once each was accepted
 * by its receiver, or an error naming the first peer that failed (within timeout_ms; *failed is
 * then that member, -1 when none is to blame). alive (may be
 * NULL) says whether a member still looks reachable; name (may be NULL)
 * names it in errors. */
typedef struct mdl_xchg_transport_i {
  mdl_status (*send)(void *ctx, const mdl_xchg_msg *msgs, int n, int timeout_ms, int *failed,
                     mdl_error *err);
  bool (*alive)(void *ctx, int member);
  const char *(*name)(void *ctx, int member);
} mdl_xchg_transport_i;

typedef struct mdl_xchg_transport {
  const mdl_xchg_transport_i *iface;
  void *ctx;
} mdl_xchg_transport;

typedef struct mdl_exchange mdl_exchange;

/* An exchange for vectors of up to max_n floats; _free(NULL) is safe. */
mdl_exchange *mdl_exchange_new(size_t max_n);
void mdl_exchange_free(mdl_exchange *x);

typedef struct mdl_xchg_round {
  uint64_t epoch;
  int rank, k;                /* this worker's position among k members */
  size_t n;                   /* floats */
  uint64_t samples;           /* this worker's weight in the average */
  const float *w;             /* this worker's weights (n floats), read only */
  float *out;                 /* the average (n floats); may be w */
  int timeout_ms;             /* the whole exchange */
  const volatile int *cancel; /* nonzero: give up (may be NULL) */
  mdl_xchg_schedule schedule;
  size_t piece_floats; /* 0: MDL_EXCHANGE_PIECE_FLOATS */
  /* a group within the transport's members (mdl_exchange_run_hosts' stages;
   * zero and NULL for a flat exchange): the inbox stage its messages name,
   * and each position's member number for the transport (route[rank] is
   * this worker's) */
  uint32_t stage;
  const int *route;
  uint64_t *total_samples; /* out (may be NULL): the members' samples summed */
} mdl_xchg_round;

/* Inboxes of mdl_exchange_run_hosts, one per stage (0: flat). */
#define MDL_XCHG_STAGES 4

/* Runs one exchange; blocks until out holds the average of all members or
 * the exchange failed. Failures caused by a peer (it failed to accept, sent
 * nothing before the deadline, looks dead, or a newer epoch superseded this
 * one) start with MDL_EXCHANGE_PEER_FAILED and name the peer; the other
 * members are then told (an ABORT naming it, best effort), so they fail
 * at once instead of at their deadline. out is
 * unspecified on failure. Pieces for this epoch delivered before the call
 * are kept. */
mdl_status mdl_exchange_run(mdl_exchange *x, const mdl_xchg_round *r, const mdl_xchg_transport *t,
                            mdl_error *err);

/* Averages among r->k members grouped by host (host[p]: member p's host,
 * any numbering) in the stages above, each in its inbox x[stage]: flat (in
 * x[0]) when there is one host or one member per host. r->stage and
 * r->route must be 0 and NULL. Failures as mdl_exchange_run; a stage that
 * fails tells the members of the stages this worker has still to run (an
 * ABORT naming itself), so none waits for its deadline. */
mdl_status mdl_exchange_run_hosts(mdl_exchange *const x[MDL_XCHG_STAGES], const mdl_xchg_round *r,
                                  const uint32_t *host, const mdl_xchg_transport *t,
                                  mdl_error *err);

/* The number of hosts among k members (host[p] as above). */
int mdl_exchange_hosts(const uint32_t *host, int k);

/* Hands an incoming piece to the exchange (any thread, any time): copied
 * into the inbox, or refused with err saying why (stale epoch, wrong shape,
 * not ours, duplicate, overlapping). A larger epoch drops what the inbox
 * held. */
mdl_status mdl_exchange_deliver(mdl_exchange *x, const mdl_xchg_msg *m, mdl_error *err);

/* Floats in member `c`'s chunk of an n-float vector over k members, and
 * where it starts (balanced: sizes differ by at most one). */
size_t mdl_exchange_chunk_lo(size_t n, int k, int c);
size_t mdl_exchange_chunk_len(size_t n, int k, int c);

/* The alpha-beta model: alpha seconds per message, beta seconds per byte on
 * one worker's link (full duplex, switched). Predicted seconds for one
 * averaging of B bytes among k members:
 *   star   (the driver sends and receives k copies): 2 (alpha + k B beta)
 *   direct (each phase one burst of k - 1 sends):     2 (alpha + (k-1)/k B beta)
 *   ring   (each phase k - 1 steps of one send):      2 (k-1) (alpha + B/k beta)
 * Direct and ring move the same bytes; the pure model always favours
 * direct (fewer latencies). What it leaves out is incast: k - 1 senders
 * into one receiver at once fill its queues and memory. So
 * mdl_exchange_choose takes DIRECT while a step's transfer (B/k beta) is
 * under 64 alpha, else RING (the extra latencies then cost < 2%). */
typedef struct mdl_xchg_model {
  double star_s, direct_s, ring_s;
} mdl_xchg_model;
mdl_xchg_model mdl_exchange_model(int k, double bytes, double alpha_s, double beta_s_per_byte);
mdl_xchg_schedule mdl_exchange_choose(int k, double bytes, double alpha_s, double beta_s_per_byte);

/* The same model for k members on `hosts` hosts of k / hosts members each
 * (L), where a host's members share one link to the others (alpha, beta)
 * and reach each other over a local one (alpha_l, beta_l: loopback or
 * shared memory). With flat averaging each phase puts L members' traffic
 * to the other hosts on that link; hierarchical (stages above) puts one
 * host's share on it and adds two local exchanges:
 *   flat  : 2 (alpha + L (k-L)/k B beta)               (the shared link)
 *   hosts : 2 (alpha + (H-1)/H B beta)                 (stage 2)
 *           + 2 x 2 (alpha_l + (L-1)/L B beta_l)       (stages 1 and 3)
 * The local figure of flat averaging (its on-host traffic) overlaps with
 * the link's and is left out. mdl_exchange_choose_hosts says whether the
 * hierarchical schedule is predicted faster (never with 1 host, nor with
 * one member per host, where it is the flat exchange). */
typedef struct mdl_xchg_host_model {
  double flat_s, hosts_s;
} mdl_xchg_host_model;
mdl_xchg_host_model mdl_exchange_model_hosts(int k, int hosts, double bytes, double alpha_s,
                                             double beta_s_per_byte, double alpha_l_s,
                                             double beta_l_s_per_byte);
bool mdl_exchange_choose_hosts(int k, int hosts, double bytes, double alpha_s,
                               double beta_s_per_byte, double alpha_l_s, double beta_l_s_per_byte);

#endif
