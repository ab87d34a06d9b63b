/* The peer-to-peer exchange (see exchange.h): the inbox that deliveries fill
 * from the transport's threads, and the run that sends, waits and averages.
 * One mutex guards the inbox; the run holds it only to read or average it,
 * never while sending or waiting. */
#define _GNU_SOURCE
#include "runtime/dist/exchange.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "runtime/dist/average.h"

struct mdl_exchange {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  size_t max_n;
  /* the inbox's shape: epoch 0 is none */
  uint64_t epoch;
  int k, rank;
  size_t n, piece;
  /* REDUCE pieces of our chunk: member j's contribution at red + j * own_len */
  float *red;
  size_t red_cap;
  uint64_t *samples;
  uint8_t *samples_set;
  uint8_t *red_seen; /* k * own_pieces */
  size_t red_got, red_want;
  /* GATHER pieces: the whole averaged vector */
  float *gat;
  size_t gat_cap;
  size_t *gat_base; /* GATHER piece p of chunk c: seen at gat_seen(x)[gat_base[c] + p] */
  size_t gat_got, gat_want;
  int cap_k;
  size_t seen_cap;
  /* a run is at work on `epoch`; a newer epoch waits for it to end */
  bool running, superseded;
  /* a member gave up on `epoch` (ABORT): who, and whom it blamed */
  int aborted_by, culprit;
  /* the members' samples summed: from our own chunk's contributions, or
   * (when that chunk is empty) from a GATHER piece */
  uint64_t total;
  bool total_set;
};

size_t mdl_exchange_chunk_lo(size_t n, int k, int c) {
  return (size_t)(((unsigned __int128)n * (unsigned)c) / (unsigned)k);
}

size_t mdl_exchange_chunk_len(size_t n, int k, int c) {
  return mdl_exchange_chunk_lo(n, k, c + 1) - mdl_exchange_chunk_lo(n, k, c);
}

static size_t pieces_of(size_t len, size_t piece) {
  return (len + piece - 1) / piece;
}

mdl_exchange *mdl_exchange_new(size_t max_n) {
  mdl_exchange *x = mdl_xcalloc(1, sizeof *x);
  pthread_mutex_init(&x->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&x->cv, &ca);
  pthread_condattr_destroy(&ca);
  x->max_n = max_n;
  return x;
}

void mdl_exchange_free(mdl_exchange *x) {
  if (!x) return;
  free(x->red);
  free(x->gat);
  free(x->samples);
  free(x->samples_set);
  free(x->red_seen);
  free(x->gat_base);
  pthread_cond_destroy(&x->cv);
  pthread_mutex_destroy(&x->mu);
  free(x);
}

/* Gives the inbox a new shape, empty (mu held). Bookkeeping aborts on OOM
 * (STYLE.md #10); the float buffers report it. */
static mdl_status reshape(mdl_exchange *x, uint64_t epoch, int k, int rank, size_t n, size_t piece,
                          mdl_error *err) {
  size_t own = mdl_exchange_chunk_len(n, k, rank);
  size_t own_pieces = pieces_of(own, piece);
  if ((size_t)k * own > x->red_cap) {
    free(x->red);
    x->red_cap = 0;
    x->red = malloc((size_t)k * own * sizeof(float));
    if (!x->red) return mdl_errorf(err, MDL_ERR_NOMEM, "exchange: inbox of %zu floats", k * own);
    x->red_cap = (size_t)k * own;
  }
  if (n > x->gat_cap) {
    free(x->gat);
    x->gat_cap = 0;
    x->gat = malloc(n * sizeof(float));
    if (!x->gat) return mdl_errorf(err, MDL_ERR_NOMEM, "exchange: inbox of %zu floats", n);
    x->gat_cap = n;
  }
  if (k > x->cap_k) {
    x->samples = mdl_xrealloc(x->samples, (size_t)k * sizeof *x->samples);
    x->samples_set = mdl_xrealloc(x->samples_set, (size_t)k);
    x->gat_base = mdl_xrealloc(x->gat_base, ((size_t)k + 1) * sizeof *x->gat_base);
    x->cap_k = k;
  }
  x->gat_base[0] = 0;
  for (int c = 0; c < k; c++)
    x->gat_base[c + 1] = x->gat_base[c] + pieces_of(mdl_exchange_chunk_len(n, k, c), piece);
  size_t seen = (size_t)k * own_pieces + x->gat_base[k];
  if (seen > x->seen_cap) {
    free(x->red_seen);
    x->red_seen = mdl_xmalloc(seen ? seen : 1);
    x->seen_cap = seen;
  }
  memset(x->red_seen, 0, seen);
  memset(x->samples_set, 0, (size_t)k);
  x->epoch = epoch;
  x->k = k;
  x->rank = rank;
  x->n = n;
  x->piece = piece;
  x->red_got = x->gat_got = 0;
  x->red_want = (size_t)(k - 1) * own_pieces;
  x->gat_want = x->gat_base[k] - (x->gat_base[rank + 1] - x->gat_base[rank]);
  x->superseded = false;
  x->aborted_by = x->culprit = -1;
  x->total_set = false;
  return MDL_OK;
}

static uint8_t *gat_seen(mdl_exchange *x) {
  return x->red_seen +
         (size_t)x->k * pieces_of(mdl_exchange_chunk_len(x->n, x->k, x->rank), x->piece);
}

/* The message's own consistency, before the inbox is looked at. */
static mdl_status check_msg(const mdl_exchange *x, const mdl_xchg_msg *m, mdl_error *err) {
  if (m->epoch == 0) return mdl_errorf(err, MDL_ERR_INVALID, "epoch 0");
  if (m->k < 1 || m->k > MDL_EXCHANGE_MAX_MEMBERS || m->from >= m->k || m->to >= m->k ||
      m->from == m->to || m->chunk >= m->k)
    return mdl_errorf(err, MDL_ERR_INVALID, "from %u to %u, chunk %u of %u members", m->from, m->to,
                      m->chunk, m->k);
  if (m->n == 0 || m->n > x->max_n)
    return mdl_errorf(err, MDL_ERR_INVALID, "a vector of %llu floats (this model: up to %zu)",
                      (unsigned long long)m->n, x->max_n);
  if (m->piece == 0 || m->piece > ((uint64_t)1 << 30))
    return mdl_errorf(err, MDL_ERR_INVALID, "piece of %llu floats", (unsigned long long)m->piece);
  if (m->kind == MDL_XCHG_REDUCE && m->chunk != m->to)
    return mdl_errorf(err, MDL_ERR_INVALID, "a contribution to chunk %u sent to member %u",
                      m->chunk, m->to);
  if (m->kind == MDL_XCHG_GATHER && m->chunk != m->from)
    return mdl_errorf(err, MDL_ERR_INVALID, "member %u sent chunk %u, not its own", m->from,
                      m->chunk);
  if (m->kind != MDL_XCHG_REDUCE && m->kind != MDL_XCHG_GATHER && m->kind != MDL_XCHG_ABORT)
    return mdl_errorf(err, MDL_ERR_INVALID, "kind %u", m->kind);
  if (m->kind == MDL_XCHG_ABORT) {
    if (m->offset || m->len)
      return mdl_errorf(err, MDL_ERR_INVALID, "an ABORT with %llu floats",
                        (unsigned long long)m->len);
    return MDL_OK;
  }
  size_t len = mdl_exchange_chunk_len(m->n, (int)m->k, (int)m->chunk);
  if (m->offset % m->piece || m->offset >= len)
    return mdl_errorf(err, MDL_ERR_INVALID, "offset %llu in a chunk of %zu floats (pieces of %llu)",
                      (unsigned long long)m->offset, len, (unsigned long long)m->piece);
  uint64_t want = len - m->offset < m->piece ? len - m->offset : m->piece;
  if (m->len != want || !m->data)
    return mdl_errorf(err, MDL_ERR_INVALID, "%llu floats at offset %llu, expected %llu",
                      (unsigned long long)m->len, (unsigned long long)m->offset,
                      (unsigned long long)want);
  return MDL_OK;
}

/* Makes the inbox's shape the message's (mu held): a newer epoch replaces
 * the inbox once no run works on the old one. */
static mdl_status accept_shape(mdl_exchange *x, const mdl_xchg_msg *m, mdl_error *err) {
  if (m->epoch < x->epoch)
    return mdl_errorf(err, MDL_ERR_INVALID, "stale epoch %llu (now %llu)",
                      (unsigned long long)m->epoch, (unsigned long long)x->epoch);
  if (m->epoch > x->epoch) {
    if (x->running) {
      x->superseded = true;
      pthread_cond_broadcast(&x->cv);
      while (x->running) pthread_cond_wait(&x->cv, &x->mu);
    }
    if (m->epoch > x->epoch)
      return reshape(x, m->epoch, (int)m->k, (int)m->to, m->n, m->piece, err);
    if (m->epoch < x->epoch)
      return mdl_errorf(err, MDL_ERR_INVALID, "stale epoch %llu", (unsigned long long)m->epoch);
  }
  if ((int)m->k != x->k || (int)m->to != x->rank || m->n != x->n || m->piece != x->piece)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "epoch %llu: %u members, to %u, %llu floats, pieces of %llu; the exchange "
                      "has %d, %d, %zu, %zu",
                      (unsigned long long)m->epoch, m->k, m->to, (unsigned long long)m->n,
                      (unsigned long long)m->piece, x->k, x->rank, x->n, x->piece);
  return MDL_OK;
}

static mdl_status deliver_locked(mdl_exchange *x, const mdl_xchg_msg *m, mdl_error *err) {
  mdl_status st = accept_shape(x, m, err);
  if (st != MDL_OK) return st;
  size_t p = m->offset / m->piece;
  if (m->kind == MDL_XCHG_ABORT) {
    if (x->aborted_by < 0) {
      x->aborted_by = (int)m->from;
      x->culprit = (int)m->chunk;
    }
  } else if (m->kind == MDL_XCHG_REDUCE) {
    size_t own = mdl_exchange_chunk_len(x->n, x->k, x->rank);
    uint8_t *seen = x->red_seen + (size_t)m->from * pieces_of(own, x->piece) + p;
    if (*seen) return mdl_errorf(err, MDL_ERR_INVALID, "duplicate piece");
    if (x->samples_set[m->from] && x->samples[m->from] != m->samples)
      return mdl_errorf(err, MDL_ERR_INVALID, "samples %llu, earlier pieces said %llu",
                        (unsigned long long)m->samples, (unsigned long long)x->samples[m->from]);
    memcpy(x->red + (size_t)m->from * own + m->offset, m->data, m->len * sizeof(float));
    x->samples[m->from] = m->samples;
    x->samples_set[m->from] = 1;
    *seen = 1;
    x->red_got++;
  } else {
    uint8_t *seen = gat_seen(x) + x->gat_base[m->chunk] + p;
    if (*seen) return mdl_errorf(err, MDL_ERR_INVALID, "duplicate piece");
    if (x->total_set && x->total != m->samples)
      return mdl_errorf(err, MDL_ERR_INVALID, "a total of %llu samples; the exchange has %llu",
                        (unsigned long long)m->samples, (unsigned long long)x->total);
    x->total = m->samples;
    x->total_set = true;
    size_t lo = mdl_exchange_chunk_lo(x->n, x->k, (int)m->chunk);
    memcpy(x->gat + lo + m->offset, m->data, m->len * sizeof(float));
    *seen = 1;
    x->gat_got++;
  }
  pthread_cond_broadcast(&x->cv);
  return MDL_OK;
}

mdl_status mdl_exchange_deliver(mdl_exchange *x, const mdl_xchg_msg *m, mdl_error *err) {
  mdl_status st = check_msg(x, m, err);
  if (st == MDL_OK) {
    pthread_mutex_lock(&x->mu);
    st = deliver_locked(x, m, err);
    pthread_mutex_unlock(&x->mu);
  }
  if (st != MDL_OK)
    mdl_error_prefix(err, "exchange: %s piece from member %u, epoch %llu: ",
                     m->kind == MDL_XCHG_GATHER   ? "GATHER"
                     : m->kind == MDL_XCHG_REDUCE ? "REDUCE"
                                                  : "ABORT",
                     m->from, (unsigned long long)m->epoch);
  return st;
}

/* --- the run ---------------------------------------------------------------- */

typedef struct run_ctx {
  mdl_exchange *x;
  const mdl_xchg_round *r;
  const mdl_xchg_transport *t;
  size_t piece;
  mdl_xchg_schedule schedule;
  double deadline;
  int culprit; /* the member a failure is blamed on (-1: none) */
} run_ctx;

/* A position's member number for the transport, and back (-1: none). */
static int route_of(const mdl_xchg_round *r, int j) {
  return r->route && j >= 0 ? r->route[j] : j;
}

static int position_of(const mdl_xchg_round *r, int member) {
  for (int j = 0; r->route && j < r->k; j++)
    if (r->route[j] == member) return j;
  return r->route ? -1 : member;
}

static const char *member_name(const run_ctx *c, int j, char *buf, size_t cap) {
  const char *nm =
      c->t->iface->name && j >= 0 ? c->t->iface->name(c->t->ctx, route_of(c->r, j)) : NULL;
  if (nm)
    snprintf(buf, cap, "member %d (%s)", j, nm);
  else
    snprintf(buf, cap, "member %d", j);
  return buf;
}

static int remaining_ms(const run_ctx *c) {
  double left = c->deadline - mdl_now();
  return left <= 0 ? 0 : (int)(left * 1000) + 1;
}

/* Sends this worker's pieces of one phase: REDUCE (its contribution to
 * every other chunk) or GATHER (its averaged chunk to every other member),
 * in batches the schedule decides. */
static mdl_status send_phase(run_ctx *c, mdl_xchg_kind kind, const float *gat_own, mdl_error *err) {
  const mdl_xchg_round *r = c->r;
  int k = r->k;
  size_t max_pieces = pieces_of(mdl_exchange_chunk_len(r->n, k, k - 1), c->piece) + 1;
  mdl_xchg_msg *batch = mdl_xcalloc((size_t)k * max_pieces, sizeof *batch);
  mdl_status st = MDL_OK;
  /* DIRECT: one batch per piece index, to everyone; RING: one batch per
   * step, to one member, all its pieces */
  int steps = c->schedule == MDL_XCHG_RING ? k - 1 : 1;
  for (int s = 1; st == MDL_OK && s <= steps; s++) {
    int nb = 0;
    for (int d = 1; d < k; d++) {
      int to = (r->rank + d) % k;
      if (c->schedule == MDL_XCHG_RING && d != s) continue;
      int chunk = kind == MDL_XCHG_REDUCE ? to : r->rank;
      size_t lo = mdl_exchange_chunk_lo(r->n, k, chunk);
      size_t len = mdl_exchange_chunk_len(r->n, k, chunk);
      for (size_t off = 0; off < len; off += c->piece) {
        mdl_xchg_msg *m = &batch[nb++];
        *m = (mdl_xchg_msg){.epoch = r->epoch,
                            .stage = r->stage,
                            .route = (uint32_t)route_of(r, to),
                            .k = (uint32_t)k,
                            .from = (uint32_t)r->rank,
                            .to = (uint32_t)to,
                            .kind = kind,
                            .n = r->n,
                            .piece = c->piece,
                            .chunk = (uint32_t)chunk,
                            .offset = off,
                            .samples = kind == MDL_XCHG_REDUCE ? r->samples : c->x->total,
                            .data = (kind == MDL_XCHG_REDUCE ? r->w + lo : gat_own) + off,
                            .len = len - off < c->piece ? len - off : c->piece};
      }
    }
    if (nb == 0) continue;
    if (r->cancel && *r->cancel) {
      st = mdl_errorf(err, MDL_ERR_INTERNAL, "exchange: cancelled");
      break;
    }
    int ms = remaining_ms(c);
    if (ms == 0) {
      st = mdl_errorf(err, MDL_ERR_INTERNAL, "%s: deadline passed while sending",
                      MDL_EXCHANGE_PEER_FAILED);
      break;
    }
    /* big phases go in slices of k pieces so the transport's buffers stay small */
    for (int b = 0; st == MDL_OK && b < nb; b += k) {
      int failed = -1;
      st = c->t->iface->send(c->t->ctx, batch + b, nb - b < k ? nb - b : k, remaining_ms(c),
                             &failed, err);
      if (failed >= 0) failed = position_of(r, failed);
      if (st != MDL_OK && failed >= 0) {
        char nm[400];
        c->culprit = failed;
        mdl_error_prefix(err, "%s: %s: ", MDL_EXCHANGE_PEER_FAILED,
                         member_name(c, failed, nm, sizeof nm));
      }
    }
  }
  free(batch);
  return st;
}

/* The first member whose pieces of the phase are still missing (mu held);
 * -1 when none is. */
static int first_missing(const mdl_exchange *x, mdl_xchg_kind kind) {
  size_t own_pieces = pieces_of(mdl_exchange_chunk_len(x->n, x->k, x->rank), x->piece);
  const uint8_t *gs = x->red_seen + (size_t)x->k * own_pieces;
  for (int j = 0; j < x->k; j++) {
    if (j == x->rank) continue;
    size_t a = kind == MDL_XCHG_REDUCE ? (size_t)j * own_pieces : x->gat_base[j];
    size_t b = kind == MDL_XCHG_REDUCE ? a + own_pieces : x->gat_base[j + 1];
    const uint8_t *seen = kind == MDL_XCHG_REDUCE ? x->red_seen : gs;
    for (size_t p = a; p < b; p++)
      if (!seen[p]) return j;
  }
  return -1;
}

/* Waits until every piece of the phase has come (mu held on entry and
 * exit), the deadline passes, the run is cancelled or superseded, or a
 * missing member looks dead. */
static mdl_status wait_phase(run_ctx *c, mdl_xchg_kind kind, mdl_error *err) {
  mdl_exchange *x = c->x;
  char nm[400];
  double next_probe = mdl_now() + 0.05;
  for (;;) {
    size_t got = kind == MDL_XCHG_REDUCE ? x->red_got : x->gat_got;
    size_t want = kind == MDL_XCHG_REDUCE ? x->red_want : x->gat_want;
    if (got >= want) return MDL_OK;
    const char *what = kind == MDL_XCHG_REDUCE ? "contribution" : "averaged chunk";
    int j = first_missing(x, kind);
    if (x->aborted_by >= 0) {
      char by[400];
      c->culprit = x->culprit;
      member_name(c, x->aborted_by, by, sizeof by);
      /* blaming itself: another stage it took part in failed (run_hosts) */
      if (x->culprit == x->aborted_by)
        return mdl_errorf(err, MDL_ERR_INTERNAL,
                          "%s: %s gave up on epoch %llu (another stage it took part in failed)",
                          MDL_EXCHANGE_PEER_FAILED, by, (unsigned long long)c->r->epoch);
      return mdl_errorf(err, MDL_ERR_INTERNAL, "%s: %s gave up on epoch %llu because of %s",
                        MDL_EXCHANGE_PEER_FAILED, by, (unsigned long long)c->r->epoch,
                        member_name(c, x->culprit, nm, sizeof nm));
    }
    c->culprit = j;
    if (x->superseded)
      return mdl_errorf(err, MDL_ERR_INTERNAL, "%s: epoch %llu superseded while waiting for %s",
                        MDL_EXCHANGE_PEER_FAILED, (unsigned long long)c->r->epoch,
                        member_name(c, j, nm, sizeof nm));
    if (c->r->cancel && *c->r->cancel) {
      c->culprit = -1;
      return mdl_errorf(err, MDL_ERR_INTERNAL, "exchange: cancelled");
    }
    double now = mdl_now();
    if (now >= c->deadline)
      return mdl_errorf(err, MDL_ERR_INTERNAL, "%s: %s sent no %s within %d ms",
                        MDL_EXCHANGE_PEER_FAILED, member_name(c, j, nm, sizeof nm), what,
                        c->r->timeout_ms);
    if (now >= next_probe && c->t->iface->alive) {
      pthread_mutex_unlock(&x->mu);
      bool ok = c->t->iface->alive(c->t->ctx, route_of(c->r, j));
      pthread_mutex_lock(&x->mu);
      if (!ok)
        return mdl_errorf(err, MDL_ERR_INTERNAL, "%s: %s is unreachable, waiting for its %s",
                          MDL_EXCHANGE_PEER_FAILED, member_name(c, j, nm, sizeof nm), what);
      next_probe = now + 0.05;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += 20 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&x->cv, &x->mu, &ts);
  }
}

/* This worker's chunk, averaged in member order (mu held). */
static void average_own(mdl_exchange *x, const mdl_xchg_round *r) {
  int k = r->k;
  size_t own = mdl_exchange_chunk_len(r->n, k, r->rank);
  size_t lo = mdl_exchange_chunk_lo(r->n, k, r->rank);
  const float *ws[k];
  for (int j = 0; j < k; j++) ws[j] = j == r->rank ? r->w + lo : x->red + (size_t)j * own;
  x->samples[r->rank] = r->samples;
  mdl_driver_average(x->gat + lo, ws, x->samples, k, own);
  if (own == 0) return; /* no contribution came: the total comes with a GATHER */
  x->total = 0;
  for (int j = 0; j < k; j++) x->total += x->samples[j];
  x->total_set = true;
}

/* Tells the other members (but the culprit) that this worker gave up on the
 * epoch, so they stop waiting for it; best effort, within a second. */
static void broadcast_abort(run_ctx *c) {
  const mdl_xchg_round *r = c->r;
  mdl_xchg_msg *m = mdl_xcalloc((size_t)r->k, sizeof *m);
  int nm = 0;
  for (int j = 0; j < r->k; j++) {
    if (j == r->rank || j == c->culprit) continue;
    m[nm++] = (mdl_xchg_msg){.epoch = r->epoch,
                             .stage = r->stage,
                             .route = (uint32_t)route_of(r, j),
                             .k = (uint32_t)r->k,
                             .from = (uint32_t)r->rank,
                             .to = (uint32_t)j,
                             .kind = MDL_XCHG_ABORT,
                             .n = r->n,
                             .piece = c->piece,
                             .chunk = (uint32_t)(c->culprit >= 0 ? c->culprit : r->rank)};
  }
  mdl_error e;
  mdl_error_clear(&e);
  int failed = -1;
  if (nm > 0) c->t->iface->send(c->t->ctx, m, nm, 1000, &failed, &e);
  free(m);
}

static mdl_status check_round(const mdl_exchange *x, const mdl_xchg_round *r, mdl_error *err) {
  if (r->k < 1 || r->k > MDL_EXCHANGE_MAX_MEMBERS || r->rank < 0 || r->rank >= r->k)
    return mdl_errorf(err, MDL_ERR_INVALID, "exchange: member %d of %d", r->rank, r->k);
  if (r->n == 0 || r->n > x->max_n || r->epoch == 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "exchange: %zu floats (up to %zu), epoch %llu", r->n,
                      x->max_n, (unsigned long long)r->epoch);
  return MDL_OK;
}

/* Shapes the inbox for r (mu held): keeps what arrived for this epoch. */
static mdl_status begin_locked(run_ctx *c, mdl_error *err) {
  mdl_exchange *x = c->x;
  const mdl_xchg_round *r = c->r;
  if (r->epoch < x->epoch)
    return mdl_errorf(err, MDL_ERR_INTERNAL, "%s: epoch %llu already superseded by %llu",
                      MDL_EXCHANGE_PEER_FAILED, (unsigned long long)r->epoch,
                      (unsigned long long)x->epoch);
  if (r->epoch > x->epoch) return reshape(x, r->epoch, r->k, r->rank, r->n, c->piece, err);
  if (x->k != r->k || x->rank != r->rank || x->n != r->n || x->piece != c->piece)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "exchange: epoch %llu: peers sent pieces for %d members, member %d, %zu "
                      "floats, pieces of %zu; this worker has %d, %d, %zu, %zu",
                      (unsigned long long)r->epoch, x->k, x->rank, x->n, x->piece, r->k, r->rank,
                      r->n, c->piece);
  return MDL_OK;
}

mdl_status mdl_exchange_run(mdl_exchange *x, const mdl_xchg_round *r, const mdl_xchg_transport *t,
                            mdl_error *err) {
  mdl_status st = check_round(x, r, err);
  if (st != MDL_OK) return st;
  if (r->k == 1) {
    if (r->out != r->w) memcpy(r->out, r->w, r->n * sizeof(float));
    if (r->total_samples) *r->total_samples = r->samples;
    return MDL_OK;
  }
  run_ctx c = {.x = x,
               .r = r,
               .t = t,
               .piece = r->piece_floats ? r->piece_floats : MDL_EXCHANGE_PIECE_FLOATS,
               .schedule = r->schedule == MDL_XCHG_RING ? MDL_XCHG_RING : MDL_XCHG_DIRECT,
               .deadline = mdl_now() + (r->timeout_ms > 0 ? r->timeout_ms : 60000) / 1000.0,
               .culprit = -1};
  pthread_mutex_lock(&x->mu);
  st = begin_locked(&c, err);
  if (st == MDL_OK) x->running = true;
  pthread_mutex_unlock(&x->mu);
  if (st != MDL_OK) return st;
  size_t lo = mdl_exchange_chunk_lo(r->n, r->k, r->rank);
  st = send_phase(&c, MDL_XCHG_REDUCE, NULL, err);
  pthread_mutex_lock(&x->mu);
  if (st == MDL_OK) st = wait_phase(&c, MDL_XCHG_REDUCE, err);
  if (st == MDL_OK) average_own(x, r);
  pthread_mutex_unlock(&x->mu);
  /* our averaged chunk stays put while it is sent: a newer epoch waits for
   * `running` to drop before it reshapes the inbox */
  if (st == MDL_OK) st = send_phase(&c, MDL_XCHG_GATHER, x->gat + lo, err);
  pthread_mutex_lock(&x->mu);
  if (st == MDL_OK) st = wait_phase(&c, MDL_XCHG_GATHER, err);
  if (st == MDL_OK) memcpy(r->out, x->gat, r->n * sizeof(float));
  if (st == MDL_OK && r->total_samples) *r->total_samples = x->total;
  bool told = x->aborted_by >= 0; /* the others heard it from who gave up first */
  x->running = false;
  pthread_cond_broadcast(&x->cv);
  pthread_mutex_unlock(&x->mu);
  if (st != MDL_OK && !told) broadcast_abort(&c);
  return st;
}

/* --- hosts: three stages (exchange.h) ----------------------------------------- */

int mdl_exchange_hosts(const uint32_t *host, int k) {
  int hosts = 0;
  for (int p = 0; p < k; p++) {
    int q = 0;
    while (host[q] != host[p]) q++;
    hosts += q == p; /* p is its host's first member */
  }
  return hosts;
}

/* Tells a stage's group that this worker gave up on it (an ABORT naming
 * itself): its members then fail at once. */
static void abort_stage(const mdl_xchg_round *r, const mdl_xchg_transport *t) {
  run_ctx c = {.r = r,
               .t = t,
               .piece = r->piece_floats ? r->piece_floats : MDL_EXCHANGE_PIECE_FLOATS,
               .culprit = -1};
  broadcast_abort(&c);
}

static int stage_ms(double deadline) {
  double left = deadline - mdl_now();
  return left <= 0 ? 1 : (int)(left * 1000) + 1;
}

mdl_status mdl_exchange_run_hosts(mdl_exchange *const x[MDL_XCHG_STAGES], const mdl_xchg_round *r,
                                  const uint32_t *host, const mdl_xchg_transport *t,
                                  mdl_error *err) {
  mdl_status st = check_round(x[0], r, err);
  if (st != MDL_OK) return st;
  int k = r->k, hosts = mdl_exchange_hosts(host, k);
  if (hosts == 1 || hosts == k || r->stage || r->route) return mdl_exchange_run(x[0], r, t, err);
  /* the groups, in member order: local[] this host's members (leader
   * first), leaders[] each host's first member */
  int *local = mdl_xcalloc((size_t)k, sizeof *local);
  int *leaders = mdl_xcalloc((size_t)k, sizeof *leaders);
  int nl = 0, nh = 0, lr = 0, hi = 0;
  for (int p = 0; p < k; p++) {
    if (host[p] == host[r->rank]) {
      if (p == r->rank) lr = nl;
      local[nl++] = p;
    }
    int q = 0;
    while (host[q] != host[p]) q++;
    if (q == p) {
      if (host[p] == host[r->rank]) hi = nh;
      leaders[nh++] = p;
    }
  }
  float *part = malloc(r->n * sizeof(float));
  if (!part) {
    free(local);
    free(leaders);
    return mdl_errorf(err, MDL_ERR_NOMEM, "exchange: a host's average of %zu floats", r->n);
  }
  double deadline = mdl_now() + (r->timeout_ms > 0 ? r->timeout_ms : 60000) / 1000.0;
  /* 1: this host's average and samples */
  uint64_t host_samples = 0;
  mdl_xchg_round s1 = *r;
  s1.stage = 1, s1.k = nl, s1.rank = lr, s1.route = local, s1.out = part;
  s1.total_samples = &host_samples, s1.timeout_ms = stage_ms(deadline);
  mdl_xchg_round s2 = *r;
  s2.stage = 2, s2.k = nh, s2.rank = hi, s2.route = leaders, s2.w = part;
  s2.samples = 0, s2.total_samples = NULL;
  mdl_xchg_round s3 = s1;
  s3.stage = 3, s3.w = lr == 0 ? r->out : part, s3.samples = lr == 0, s3.out = r->out;
  s3.total_samples = NULL;
  st = mdl_exchange_run(x[1], &s1, t, err);
  if (st != MDL_OK) {
    mdl_error_prefix(err, "on this host: ");
    if (lr == 0) abort_stage(&s2, t);
  }
  /* 2: the leaders average the hosts' averages */
  if (st == MDL_OK && lr == 0) {
    s2.samples = host_samples;
    s2.timeout_ms = stage_ms(deadline);
    st = mdl_exchange_run(x[2], &s2, t, err);
    if (st != MDL_OK) {
      mdl_error_prefix(err, "across hosts: ");
      if (nl > 1) abort_stage(&s3, t);
    }
  }
  /* 3: the leader hands the result to its host */
  if (st == MDL_OK && nl > 1) {
    s3.timeout_ms = stage_ms(deadline);
    st = mdl_exchange_run(x[3], &s3, t, err);
    if (st != MDL_OK) mdl_error_prefix(err, "from this host's leader: ");
  }
  free(part);
  free(local);
  free(leaders);
  return st;
}

/* --- the cost model ------------------------------------------------------------ */

mdl_xchg_model mdl_exchange_model(int k, double bytes, double alpha_s, double beta_s_per_byte) {
  mdl_xchg_model m;
  m.star_s = 2 * (alpha_s + k * bytes * beta_s_per_byte);
  m.direct_s = k > 1 ? 2 * (alpha_s + (k - 1) * bytes / k * beta_s_per_byte) : 0;
  m.ring_s = k > 1 ? 2 * (k - 1) * (alpha_s + bytes / k * beta_s_per_byte) : 0;
  return m;
}

mdl_xchg_schedule mdl_exchange_choose(int k, double bytes, double alpha_s, double beta_s_per_byte) {
  if (k <= 2) return MDL_XCHG_DIRECT; /* the same sends either way */
  return bytes / k * beta_s_per_byte < 64 * alpha_s ? MDL_XCHG_DIRECT : MDL_XCHG_RING;
}

mdl_xchg_host_model mdl_exchange_model_hosts(int k, int hosts, double bytes, double alpha_s,
                                             double beta_s_per_byte, double alpha_l_s,
                                             double beta_l_s_per_byte) {
  mdl_xchg_host_model m = {0, 0};
  if (k < 2 || hosts < 1) return m;
  double l = (double)k / hosts;
  m.flat_s = 2 * (alpha_s + l * (k - l) / k * bytes * beta_s_per_byte);
  m.hosts_s = (hosts > 1 ? 2 * (alpha_s + (hosts - 1.0) / hosts * bytes * beta_s_per_byte) : 0) +
              (l > 1 ? 4 * (alpha_l_s + (l - 1) / l * bytes * beta_l_s_per_byte) : 0);
  return m;
}

bool mdl_exchange_choose_hosts(int k, int hosts, double bytes, double alpha_s,
                               double beta_s_per_byte, double alpha_l_s, double beta_l_s_per_byte) {
  if (hosts <= 1 || hosts >= k) return false; /* the flat exchange either way */
  mdl_xchg_host_model m = mdl_exchange_model_hosts(k, hosts, bytes, alpha_s, beta_s_per_byte,
                                                   alpha_l_s, beta_l_s_per_byte);
  return m.hosts_s < m.flat_s;
}
