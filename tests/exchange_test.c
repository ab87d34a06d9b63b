/* runtime/dist/exchange: K in-process members over a memory transport whose
 * one delivery thread picks the next message at random (every arrival
 * order, seeded), checked bit for bit against the driver's star
 * (mdl_driver_average); a member dying after each of its sends; and
 * malformed, stale and duplicate pieces refused. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "runtime/dist/average.h"
#include "runtime/dist/exchange.h"

#define MAXK 8

/* One pending message: its sender waits until the delivery thread has
 * handed it over (or refused it). */
typedef struct pend {
  const mdl_xchg_msg *m;
  bool done;
  mdl_status st;
  char why[300];
} pend;

typedef struct net {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int k;
  mdl_exchange *x[MAXK][MDL_XCHG_STAGES]; /* each member's inbox of each stage */
  bool dead[MAXK];
  int die_after[MAXK]; /* sends a member makes before it dies (-1: never) */
  int sent[MAXK];
  pend *q[4 * MAXK * MAXK];
  int nq;
  uint64_t rng;
  bool stop;
  pthread_t th;
} net;

typedef struct peer {
  net *n;
  int me;
} peer;

static uint64_t next_rand(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void *deliverer(void *arg) {
  net *n = arg;
  pthread_mutex_lock(&n->mu);
  for (;;) {
    while (!n->stop && n->nq == 0) pthread_cond_wait(&n->cv, &n->mu);
    if (n->stop) break;
    int i = (int)(next_rand(&n->rng) % (uint64_t)n->nq);
    pend *p = n->q[i];
    n->q[i] = n->q[--n->nq];
    int to = (int)p->m->route; /* `to` is a position within the stage's group */
    bool dead = n->dead[to];
    pthread_mutex_unlock(&n->mu);
    mdl_error e;
    mdl_error_clear(&e);
    if (dead)
      p->st = mdl_errorf(&e, MDL_ERR_INTERNAL, "connection refused");
    else
      p->st = p->m->stage < MDL_XCHG_STAGES
                  ? mdl_exchange_deliver(n->x[to][p->m->stage], p->m, &e)
                  : mdl_errorf(&e, MDL_ERR_INVALID, "stage %u", p->m->stage);
    snprintf(p->why, sizeof p->why, "%s", e.msg);
    pthread_mutex_lock(&n->mu);
    p->done = true;
    pthread_cond_broadcast(&n->cv);
  }
  pthread_mutex_unlock(&n->mu);
  return NULL;
}

static mdl_status mem_send(void *ctx, const mdl_xchg_msg *msgs, int nm, int timeout_ms, int *failed,
                           mdl_error *err) {
  peer *pe = ctx;
  net *n = pe->n;
  *failed = -1;
  pend ps[4 * MAXK];
  cr_assert(nm <= 4 * MAXK);
  pthread_mutex_lock(&n->mu);
  int allowed = nm;
  if (n->die_after[pe->me] >= 0 && n->sent[pe->me] + nm > n->die_after[pe->me])
    allowed = n->die_after[pe->me] - n->sent[pe->me];
  if (allowed < 0) allowed = 0;
  if (n->dead[pe->me]) allowed = 0;
  for (int i = 0; i < allowed; i++) {
    ps[i] = (pend){.m = &msgs[i]};
    n->q[n->nq++] = &ps[i];
  }
  n->sent[pe->me] += allowed;
  pthread_cond_broadcast(&n->cv);
  for (int i = 0; i < allowed; i++)
    while (!ps[i].done) pthread_cond_wait(&n->cv, &n->mu);
  if (allowed < nm) n->dead[pe->me] = true;
  pthread_mutex_unlock(&n->mu);
  for (int i = 0; i < allowed; i++)
    if (ps[i].st != MDL_OK) {
      *failed = (int)msgs[i].route;
      return mdl_errorf(err, MDL_ERR_INTERNAL, "%s", ps[i].why);
    }
  if (allowed < nm) return mdl_errorf(err, MDL_ERR_INTERNAL, "this member was killed");
  return MDL_OK;
}

static bool mem_alive(void *ctx, int j) {
  peer *pe = ctx;
  pthread_mutex_lock(&pe->n->mu);
  bool a = !pe->n->dead[j];
  pthread_mutex_unlock(&pe->n->mu);
  return a;
}

static const char *NAMES[MAXK] = {"peer-0", "peer-1", "peer-2", "peer-3",
                                  "peer-4", "peer-5", "peer-6", "peer-7"};
static const char *mem_name(void *ctx, int j) {
  return j >= 0 && j < MAXK ? NAMES[j] : "?";
}

static const mdl_xchg_transport_i MEM = {mem_send, mem_alive, mem_name};

typedef struct member {
  peer pe;
  mdl_xchg_round r;
  const uint32_t *host; /* NULL: the flat exchange */
  mdl_status st;
  mdl_error err;
  double seconds;
  pthread_t th;
} member;

static void *member_main(void *arg) {
  member *m = arg;
  mdl_xchg_transport t = {&MEM, &m->pe};
  double t0 = mdl_now();
  mdl_error_clear(&m->err);
  mdl_exchange *const *x = m->pe.n->x[m->pe.me];
  m->st = m->host ? mdl_exchange_run_hosts(x, &m->r, m->host, &t, &m->err)
                  : mdl_exchange_run(x[0], &m->r, &t, &m->err);
  m->seconds = mdl_now() - t0;
  return NULL;
}

typedef struct scenario {
  int k;
  size_t n, piece;
  mdl_xchg_schedule schedule;
  uint64_t seed;
  int victim, die_after; /* die_after -1: nobody dies */
  int timeout_ms;
  bool zero_samples;    /* member 1 processed no sample */
  const uint32_t *host; /* each member's host (mdl_exchange_run_hosts); NULL: flat */
  uint64_t wseed;       /* the weights' and samples' seed (0: seed's) */
} scenario;

typedef struct outcome {
  float *w[MAXK], *out[MAXK], *star;
  uint64_t samples[MAXK];
  member mem[MAXK];
} outcome;

/* What the stages of exchange.h compute, written out in their order (into
 * o->star): each host's members averaged in member order, then the hosts'
 * averages weighted by their samples in the order of their first members. */
static void hosts_reference(const scenario *sc, outcome *o) {
  int k = sc->k;
  float *part[MAXK];
  uint64_t hs[MAXK];
  int nh = 0;
  for (int p = 0; p < k; p++) {
    int q = 0;
    while (sc->host[q] != sc->host[p]) q++;
    if (q != p) continue;
    const float *ws[MAXK];
    uint64_t ss[MAXK];
    int nl = 0;
    hs[nh] = 0;
    for (int j = 0; j < k; j++)
      if (sc->host[j] == sc->host[p]) {
        ws[nl] = o->w[j];
        ss[nl++] = o->samples[j];
        hs[nh] += o->samples[j];
      }
    part[nh] = calloc(sc->n, sizeof(float));
    mdl_driver_average(part[nh], ws, ss, nl, sc->n);
    nh++;
  }
  if (nh > 1 && nh < k) mdl_driver_average(o->star, (const float *const *)part, hs, nh, sc->n);
  for (int h = 0; h < nh; h++) free(part[h]);
}

static void run_scenario(const scenario *sc, outcome *o) {
  net n = {.k = sc->k, .rng = sc->seed * 2654435761u + 1};
  pthread_mutex_init(&n.mu, NULL);
  pthread_cond_init(&n.cv, NULL);
  uint64_t s = (sc->wseed ? sc->wseed : sc->seed) + 7;
  for (int i = 0; i < sc->k; i++) {
    for (int s = 0; s < MDL_XCHG_STAGES; s++) n.x[i][s] = mdl_exchange_new(sc->n);
    n.die_after[i] = i == sc->victim ? sc->die_after : -1;
    o->w[i] = malloc(sc->n * sizeof(float));
    o->out[i] = calloc(sc->n, sizeof(float));
    for (size_t j = 0; j < sc->n; j++)
      o->w[i][j] = (float)((double)(next_rand(&s) % 2000001) / 1e6 - 1.0) * 3.7f;
    o->samples[i] = sc->zero_samples && i == 1 ? 0 : 1 + next_rand(&s) % 97;
  }
  o->star = malloc(sc->n * sizeof(float));
  mdl_driver_average(o->star, (const float *const *)o->w, o->samples, sc->k, sc->n);
  if (sc->host) hosts_reference(sc, o);
  cr_assert_eq(pthread_create(&n.th, NULL, deliverer, &n), 0);
  for (int i = 0; i < sc->k; i++) {
    member *m = &o->mem[i];
    m->pe = (peer){&n, i};
    m->host = sc->host;
    m->r = (mdl_xchg_round){.epoch = 5,
                            .rank = i,
                            .k = sc->k,
                            .n = sc->n,
                            .samples = o->samples[i],
                            .w = o->w[i],
                            .out = o->out[i],
                            .timeout_ms = sc->timeout_ms ? sc->timeout_ms : 10000,
                            .schedule = sc->schedule,
                            .piece_floats = sc->piece};
    cr_assert_eq(pthread_create(&m->th, NULL, member_main, m), 0);
  }
  for (int i = 0; i < sc->k; i++) pthread_join(o->mem[i].th, NULL);
  pthread_mutex_lock(&n.mu);
  n.stop = true;
  pthread_cond_broadcast(&n.cv);
  pthread_mutex_unlock(&n.mu);
  pthread_join(n.th, NULL);
  for (int i = 0; i < sc->k; i++)
    for (int s = 0; s < MDL_XCHG_STAGES; s++) mdl_exchange_free(n.x[i][s]);
  pthread_cond_destroy(&n.cv);
  pthread_mutex_destroy(&n.mu);
}

static void outcome_free(const scenario *sc, outcome *o) {
  for (int i = 0; i < sc->k; i++) {
    free(o->w[i]);
    free(o->out[i]);
  }
  free(o->star);
}

static void check_equal_star(const scenario *sc, const outcome *o, int i) {
  for (size_t j = 0; j < sc->n; j++)
    if (memcmp(&o->out[i][j], &o->star[j], sizeof(float)))
      cr_assert_fail(
          "k %d n %zu piece %zu schedule %d seed %llu: member %d element %zu: %a, star %a", sc->k,
          sc->n, sc->piece, sc->schedule, (unsigned long long)sc->seed, i, j, o->out[i][j],
          o->star[j]);
}

Test(exchange, equals_the_star_bitwise_for_every_k_size_and_arrival_order) {
  const size_t sizes[] = {1, 2, 3, 5, 7, 13, 64, 1001};
  const size_t pieces[] = {1, 3, 0};
  int runs = 0;
  for (int k = 1; k <= MAXK; k++)
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
      for (size_t pi = 0; pi < sizeof pieces / sizeof *pieces; pi++)
        for (int sched = MDL_XCHG_DIRECT; sched <= MDL_XCHG_RING; sched++) {
          if (pieces[pi] == 1 && sizes[si] > 64) continue; /* thousands of messages */
          scenario sc = {.k = k,
                         .n = sizes[si],
                         .piece = pieces[pi],
                         .schedule = (mdl_xchg_schedule)sched,
                         .seed = (uint64_t)(k * 1000 + si * 10 + pi) + 17 * (uint64_t)sched,
                         .victim = -1,
                         .die_after = -1,
                         .zero_samples = k > 2 && si % 2};
          outcome o = {0};
          run_scenario(&sc, &o);
          for (int i = 0; i < k; i++) {
            cr_assert_eq(o.mem[i].st, MDL_OK, "k %d n %zu: member %d: %s", k, sc.n, i,
                         o.mem[i].err.msg);
            check_equal_star(&sc, &o, i);
          }
          outcome_free(&sc, &o);
          runs++;
        }
  cr_assert_gt(runs, 300);
}

Test(exchange, many_arrival_orders_of_one_shape) {
  for (uint64_t seed = 1; seed <= 60; seed++) {
    scenario sc = {.k = 4, .n = 23, .piece = 2, .seed = seed, .victim = -1, .die_after = -1};
    outcome o = {0};
    run_scenario(&sc, &o);
    for (int i = 0; i < sc.k; i++) {
      cr_assert_eq(o.mem[i].st, MDL_OK, "seed %llu member %d: %s", (unsigned long long)seed, i,
                   o.mem[i].err.msg);
      check_equal_star(&sc, &o, i);
    }
    outcome_free(&sc, &o);
  }
}

/* Messages member `victim` sends in a whole exchange (pieces of both phases;
 * an exchange that fails adds ABORTs, which come after). */
static int sends_of(int k, size_t n, size_t piece, int victim) {
  int c = 0;
  for (int j = 0; j < k; j++) {
    if (j == victim) continue;
    size_t len = mdl_exchange_chunk_len(n, k, j);
    c += (int)((len + piece - 1) / piece);
  }
  size_t own = mdl_exchange_chunk_len(n, k, victim);
  return c + (k - 1) * (int)((own + piece - 1) / piece);
}

Test(exchange, a_member_dying_at_each_step_fails_the_others_naming_it_without_hanging) {
  const int ks[] = {2, 3, 5};
  for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
    int k = ks[ki];
    for (int victim = 0; victim < k; victim++) {
      int total = sends_of(k, 37, 4, victim);
      for (int die = 0; die <= total; die++)
        for (int sched = MDL_XCHG_DIRECT; sched <= MDL_XCHG_RING; sched++) {
          scenario sc = {.k = k,
                         .n = 37,
                         .piece = 4,
                         .schedule = (mdl_xchg_schedule)sched,
                         .seed = (uint64_t)(die * 31 + victim),
                         .victim = victim,
                         .die_after = die,
                         .timeout_ms = 5000};
          outcome o = {0};
          run_scenario(&sc, &o);
          char name[32];
          snprintf(name, sizeof name, "(peer-%d)", victim);
          int failed = 0;
          for (int i = 0; i < k; i++) {
            const member *m = &o.mem[i];
            /* the alive probe and the ABORTs end it long before the deadline */
            cr_assert_lt(m->seconds, 4.0, "k %d victim %d die %d: member %d took %.1f s", k, victim,
                         die, i, m->seconds);
            if (i == victim) continue;
            if (m->st == MDL_OK) {
              check_equal_star(&sc, &o, i);
              continue;
            }
            failed++;
            cr_assert(strstr(m->err.msg, MDL_EXCHANGE_PEER_FAILED) && strstr(m->err.msg, name),
                      "k %d victim %d die %d: member %d: %s", k, victim, die, i, m->err.msg);
          }
          /* dead before its first piece: nobody can have its contribution */
          if (die == 0) cr_assert_eq(failed, k - 1, "k %d victim %d", k, victim);
          if (die == total) cr_assert_eq(o.mem[victim].st, MDL_OK);
          outcome_free(&sc, &o);
        }
    }
  }
}

/* --- pieces refused ----------------------------------------------------------- */

static mdl_xchg_msg good_piece(const float *data) {
  /* member 1 of 3 sends its contribution to member 0's chunk of 10 floats
   * (chunk 0 holds 3), pieces of 2 */
  return (mdl_xchg_msg){.epoch = 9,
                        .k = 3,
                        .from = 1,
                        .to = 0,
                        .kind = MDL_XCHG_REDUCE,
                        .n = 10,
                        .piece = 2,
                        .chunk = 0,
                        .offset = 0,
                        .samples = 4,
                        .data = data,
                        .len = 2};
}

static void refused(mdl_exchange *x, mdl_xchg_msg m, const char *why) {
  mdl_error e;
  mdl_error_clear(&e);
  cr_assert_neq(mdl_exchange_deliver(x, &m, &e), MDL_OK, "accepted: %s", why);
  cr_assert(strstr(e.msg, why), "wanted \"%s\" in: %s", why, e.msg);
  cr_assert(strstr(e.msg, "from member"), "no sender named in: %s", e.msg);
}

Test(exchange, refuses_malformed_stale_foreign_and_duplicate_pieces) {
  float d[4] = {1, 2, 3, 4};
  mdl_exchange *x = mdl_exchange_new(100);
  mdl_error e;
  mdl_error_clear(&e);
  mdl_xchg_msg m = good_piece(d);
  cr_assert_eq(mdl_exchange_deliver(x, &m, &e), MDL_OK, "%s", e.msg);
  refused(x, m, "duplicate");
  m.samples = 5;
  m.offset = 2;
  m.len = 1;
  refused(x, m, "samples 5");
  m = good_piece(d), m.offset = 1;
  refused(x, m, "offset 1");
  m = good_piece(d), m.len = 3;
  refused(x, m, "3 floats at offset 0");
  m = good_piece(d), m.offset = 2, m.len = 2; /* the chunk's last piece holds 1 */
  refused(x, m, "expected 1");
  m = good_piece(d), m.chunk = 2;
  refused(x, m, "contribution to chunk 2 sent to member 0");
  m = good_piece(d), m.kind = MDL_XCHG_GATHER, m.chunk = 2;
  refused(x, m, "sent chunk 2, not its own");
  m = good_piece(d), m.from = 0;
  refused(x, m, "from 0 to 0");
  m = good_piece(d), m.from = 3;
  refused(x, m, "from 3 to 0");
  m = good_piece(d), m.n = 101;
  refused(x, m, "101 floats");
  m = good_piece(d), m.epoch = 0;
  refused(x, m, "epoch 0");
  m = good_piece(d), m.kind = 9;
  refused(x, m, "kind 9");
  m = good_piece(d), m.data = NULL;
  refused(x, m, "expected 2");
  m = good_piece(d), m.piece = 0;
  refused(x, m, "piece of 0");
  /* same epoch, another shape: a confused or foreign sender */
  m = good_piece(d), m.k = 4, m.offset = 0, m.len = 2;
  refused(x, m, "4 members");
  /* a newer epoch replaces the inbox; the old one is then stale */
  m = good_piece(d), m.epoch = 10;
  cr_assert_eq(mdl_exchange_deliver(x, &m, &e), MDL_OK, "%s", e.msg);
  m = good_piece(d), m.offset = 2, m.len = 1;
  refused(x, m, "stale epoch 9");
  mdl_exchange_free(x);
}

Test(exchange, a_run_against_a_foreign_shape_or_an_old_epoch_fails) {
  float d[10] = {0};
  mdl_exchange *x = mdl_exchange_new(10);
  mdl_error e;
  mdl_error_clear(&e);
  mdl_xchg_msg m = good_piece(d);
  cr_assert_eq(mdl_exchange_deliver(x, &m, &e), MDL_OK, "%s", e.msg);
  mdl_xchg_transport t = {&MEM, NULL};
  mdl_xchg_round r = {
      .epoch = 9, .rank = 0, .k = 2, .n = 10, .samples = 1, .w = d, .out = d, .piece_floats = 2};
  cr_assert_neq(mdl_exchange_run(x, &r, &t, &e), MDL_OK);
  cr_assert(strstr(e.msg, "peers sent pieces for 3 members"), "%s", e.msg);
  r.epoch = 8, r.k = 3;
  cr_assert_neq(mdl_exchange_run(x, &r, &t, &e), MDL_OK);
  cr_assert(strstr(e.msg, "superseded by 9"), "%s", e.msg);
  r.epoch = 9, r.rank = 3;
  cr_assert_neq(mdl_exchange_run(x, &r, &t, &e), MDL_OK);
  cr_assert(strstr(e.msg, "member 3 of 3"), "%s", e.msg);
  mdl_exchange_free(x);
}

Test(exchange, cost_model_prefers_one_burst_for_small_and_steps_for_big) {
  double alpha = 100e-6, beta = 1.0 / 125e6; /* 100 us, 1 Gbit/s */
  mdl_xchg_model m = mdl_exchange_model(4, 240e6, alpha, beta);
  cr_assert_gt(m.star_s, 2 * m.direct_s); /* the driver's link carries 2K copies */
  cr_assert_gt(m.ring_s, m.direct_s);
  cr_assert_eq(mdl_exchange_choose(4, 1.7e6, alpha, beta), MDL_XCHG_DIRECT);
  cr_assert_eq(mdl_exchange_choose(4, 240e6, alpha, beta), MDL_XCHG_RING);
  cr_assert_eq(mdl_exchange_choose(2, 240e6, alpha, beta), MDL_XCHG_DIRECT);
}

/* --- members grouped by host (mdl_exchange_run_hosts) ---------------------- */

/* Host layouts of k members: one host; one each; halves; interleaved by 2
 * and by 3; the first alone and the rest together. */
#define LAYOUTS 6
static void layout(int k, int which, uint32_t *host) {
  for (int p = 0; p < k; p++) {
    const uint32_t h[LAYOUTS] = {7,
                                 (uint32_t)p,
                                 (uint32_t)(p < (k + 1) / 2),
                                 (uint32_t)(p % 2),
                                 (uint32_t)(p % 3),
                                 (uint32_t)(p > 0)};
    host[p] = h[which] * 3 + 11; /* any numbering */
  }
}

Test(exchange, hosts_reduce_locally_then_across_in_a_fixed_order_for_every_layout) {
  const size_t sizes[] = {1, 3, 7, 64, 1001};
  const size_t pieces[] = {1, 5, 0};
  int runs = 0, stars = 0;
  for (int k = 1; k <= MAXK; k++)
    for (int lay = 0; lay < LAYOUTS; lay++)
      for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
        for (size_t pi = 0; pi < sizeof pieces / sizeof *pieces; pi++) {
          if (pieces[pi] == 1 && sizes[si] > 64) continue;
          uint32_t host[MAXK];
          layout(k, lay, host);
          scenario sc = {.k = k,
                         .n = sizes[si],
                         .piece = pieces[pi],
                         .schedule = (mdl_xchg_schedule)(MDL_XCHG_DIRECT + (si + pi) % 2),
                         .seed = (uint64_t)(k * 977 + lay * 131 + si * 13 + pi),
                         .victim = -1,
                         .die_after = -1,
                         .zero_samples = k > 2 && (si + lay) % 3 == 0,
                         .host = host};
          outcome o = {0};
          run_scenario(&sc, &o);
          int hosts = mdl_exchange_hosts(host, k);
          for (int i = 0; i < k; i++) {
            cr_assert_eq(o.mem[i].st, MDL_OK, "k %d layout %d n %zu: member %d: %s", k, lay, sc.n,
                         i, o.mem[i].err.msg);
            check_equal_star(&sc, &o, i);
          }
          /* one member per host (or one host): the star's bits, as flat */
          if (hosts == k || hosts == 1) {
            float *star = malloc(sc.n * sizeof(float));
            mdl_driver_average(star, (const float *const *)o.w, o.samples, k, sc.n);
            cr_assert(!memcmp(star, o.out[0], sc.n * sizeof(float)), "k %d layout %d", k, lay);
            free(star);
            stars++;
          }
          outcome_free(&sc, &o);
          runs++;
        }
  cr_assert_gt(runs, 500);
  cr_assert_gt(stars, 100);
}

/* The same members, grouping and weights under many arrival orders: the
 * same bits every time (and they differ from the star's in the last bits
 * at most: a different summation order, not a different average). */
Test(exchange, hosts_give_the_same_bits_under_every_arrival_order) {
  const uint32_t host[5] = {1, 2, 1, 3, 2};
  float *first = NULL;
  for (uint64_t seed = 1; seed <= 40; seed++) {
    scenario sc = {.k = 5,
                   .n = 301,
                   .piece = 16,
                   .schedule = seed % 2 ? MDL_XCHG_RING : MDL_XCHG_DIRECT,
                   .seed = seed,
                   .victim = -1,
                   .die_after = -1,
                   .host = host,
                   .wseed = 99};
    outcome o = {0};
    run_scenario(&sc, &o);
    for (int i = 0; i < sc.k; i++) {
      cr_assert_eq(o.mem[i].st, MDL_OK, "seed %llu member %d: %s", (unsigned long long)seed, i,
                   o.mem[i].err.msg);
      check_equal_star(&sc, &o, i);
      cr_assert(!memcmp(o.out[i], o.out[0], sc.n * sizeof(float)));
    }
    float *star = malloc(sc.n * sizeof(float));
    mdl_driver_average(star, (const float *const *)o.w, o.samples, sc.k, sc.n);
    for (size_t j = 0; j < sc.n; j++)
      cr_assert(fabsf(star[j] - o.out[0][j]) <= 1e-5f * (1 + fabsf(star[j])), "element %zu", j);
    free(star);
    if (!first) {
      first = malloc(sc.n * sizeof(float));
      memcpy(first, o.out[0], sc.n * sizeof(float));
    }
    cr_assert(!memcmp(first, o.out[0], sc.n * sizeof(float)), "seed %llu: other bits",
              (unsigned long long)seed);
    outcome_free(&sc, &o);
  }
  free(first);
}

Test(exchange, hosts_a_member_dying_at_each_step_fails_the_others_without_hanging) {
  const uint32_t h4[4] = {0, 0, 1, 1}, h5[5] = {0, 1, 0, 2, 1};
  const uint32_t *hosts[] = {h4, h5};
  const int ks[] = {4, 5};
  for (int li = 0; li < 2; li++) {
    int k = ks[li];
    for (int victim = 0; victim < k; victim++) {
      bool survived = false;
      for (int die = 0; die < 400 && !survived; die++) {
        scenario sc = {.k = k,
                       .n = 11,
                       .piece = 4,
                       .schedule = (mdl_xchg_schedule)(MDL_XCHG_DIRECT + die % 2),
                       .seed = (uint64_t)(die * 31 + victim),
                       .victim = victim,
                       .die_after = die,
                       .timeout_ms = 5000,
                       .host = hosts[li]};
        outcome o = {0};
        run_scenario(&sc, &o);
        survived = o.mem[victim].st == MDL_OK;
        int failed = 0;
        for (int i = 0; i < k; i++) {
          const member *m = &o.mem[i];
          cr_assert_lt(m->seconds, 4.0, "k %d victim %d die %d: member %d took %.1f s", k, victim,
                       die, i, m->seconds);
          if (i == victim) continue;
          if (m->st == MDL_OK) {
            check_equal_star(&sc, &o, i);
            continue;
          }
          failed++;
          cr_assert(strstr(m->err.msg, MDL_EXCHANGE_PEER_FAILED), "k %d victim %d die %d: %d: %s",
                    k, victim, die, i, m->err.msg);
        }
        /* dead before its first piece: nobody can have the average */
        if (die == 0) cr_assert_eq(failed, k - 1, "k %d victim %d", k, victim);
        outcome_free(&sc, &o);
      }
      cr_assert(survived, "k %d victim %d never got through", k, victim);
    }
  }
}

Test(exchange, cost_model_reduces_on_each_host_first_where_the_shared_link_is_the_bottleneck) {
  double alpha = 100e-6, beta = 1.0 / 125e6;   /* 1 Gbit/s between hosts */
  double alpha_l = 100e-6, beta_l = 1.0 / 1e9; /* loopback gRPC, 1 GB/s */
  mdl_xchg_host_model m = mdl_exchange_model_hosts(8, 2, 60e6, alpha, beta, alpha_l, beta_l);
  /* 4 members per host: the flat exchange puts 4 shares on the link */
  cr_assert_gt(m.flat_s, 2 * m.hosts_s, "flat %g hosts %g", m.flat_s, m.hosts_s);
  cr_assert(mdl_exchange_choose_hosts(8, 2, 60e6, alpha, beta, alpha_l, beta_l));
  /* one host or one member per host: the flat exchange is the same thing */
  cr_assert(!mdl_exchange_choose_hosts(8, 1, 60e6, alpha, beta, alpha_l, beta_l));
  cr_assert(!mdl_exchange_choose_hosts(8, 8, 60e6, alpha, beta, alpha_l, beta_l));
  /* a link as fast as loopback: the two local stages cost more than they save */
  cr_assert(!mdl_exchange_choose_hosts(4, 2, 60e6, alpha, beta_l / 4, alpha_l, beta_l));
  /* tiny models: latencies dominate, three stages lose */
  cr_assert(!mdl_exchange_choose_hosts(4, 2, 1e3, alpha, beta, alpha_l, beta_l));
}
