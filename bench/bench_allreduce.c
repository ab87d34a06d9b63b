/* The averaging step's communication, measured: per round the driver hands
 * the weights to K local worker processes, each hands back its copy, and the
 * driver averages the K copies (mdl_driver_average). No training in
 * between, so the figure is broadcast + gather + average alone. Two
 * transports, as the driver has them:
 *   grpc: the weights inside the messages (Unix sockets; what remote
 *         workers and `--no-shm` use), decoded straight into reused buffers;
 *         one message per way below 8 MiB, a stream of chunks above
 *         (runtime/rpc/rpc_codec.c; MDL_RPC_STREAM_MIN=0 forces one message,
 *         MDL_RPC_STREAM_MIN=1 streams all, MDL_RPC_CHUNK sets the chunk);
 *   shm:  `--workers local:K`'s default: the messages carry only control,
 *         the weights sit in a shared file in the private directory (region
 *         0 the driver's, region k+1 worker k's); each worker reads region 0
 *         and writes its region, as a real worker does.
 * and, over TCP on 127.0.0.1 as remote workers have it (issue 13):
 *   star:   the driver sends the weights to K workers and averages the K
 *           copies they echo (what `--workers host:port,...` did before);
 *   peer, direct, ring: the driver sends K small Round calls; the workers
 *           average among themselves (runtime/dist/peer_net.h, the exchange
 *           schedule the cost model picks, or the one named) and keep the
 *           average: what a training round costs, since the driver has it
 *           returned only before a TEST pass, a snapshot or the end.
 *   hosts:  peer, with the K workers grouped into --hosts H (default 2)
 *           pretend hosts of consecutive workers: each group averages
 *           first, then one leader per group across, then back (exchange.h,
 *           mdl_exchange_run_hosts). On one machine every link is the same
 *           loopback, so this measures what the two extra stages cost; the
 *           gain (one share per host on a shared link, not L) needs
 *           workers of a group to share a link.
 *   peer+return, direct+return, ring+return (or --return for all three):
 *           member 0 also returns the average to the driver, as the rounds
 *           before a TEST pass or a snapshot do.
 * With --addrs the TCP modes use workers already serving there (each
 * `bench_allreduce --serve-peer ADDR BYTES`, plain TCP with the bench's
 * token: bench/bench_allreduce_netns.sh starts them in network namespaces).
 * Before the TCP modes it measures alpha (half a tiny echo's round trip)
 * and beta (from a 60 MB echo to one worker) and prints, per line, the
 * alpha-beta model's prediction for that mode (exchange.h).
 * bench/bench_allreduce.sh puts them beside OpenMPI's MPI_Allreduce of the
 * same bytes on K ranks.
 *
 *   bench_allreduce [--mb 1.7,60,240] [--workers 2,4] [--rounds N] [--return]
 *                   [--mode grpc,shm,star,peer,direct,ring,hosts,peer+return,...]
 *                   [--hosts H]
 * prints one line per (mode, size, K): median and best round time, GB/s
 * (2 K bytes moved per round / median) and the averaging part; a peer
 * mode's name says whether its rounds returned the average (+return). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "rpc.pb-c.h"
#include "runtime/dist/driver.h"
#include "runtime/dist/exchange.h"
#include "runtime/dist/peer_net.h"
#include "runtime/rpc/rpc.h"

#define ECHO "/memdl.Bench/Echo"
#define ECHO_SHM "/memdl.Bench/EchoShm"
#define PEER_SETUP "/memdl.Bench/PeerSetup"
#define PEER_ROUND "/memdl.Bench/PeerRound"
/* TCP servers must authenticate their callers: a token, as real workers */
static const char TOKEN[] = "bench-allreduce-token-0123456789";

/* --- the worker side: echo the weights back ------------------------------ */

typedef struct echo {
  float *buf;
  size_t cap;
  mdl_rpc_pin *pin;
  Memdl__RoundReply reply;
  uint8_t *shm; /* shm mode: the shared file, and our region */
  size_t stride;
  int index;
} echo;

static void *echo_dest(void *ctx, size_t len, mdl_error *err) {
  echo *e = ctx;
  if (len > e->cap) {
    mdl_errorf(err, MDL_ERR_INVALID, "%zu bytes, at most %zu", len, e->cap);
    return NULL;
  }
  mdl_rpc_pin_wait(e->pin); /* the last reply may still be leaving */
  return e->buf;
}

static mdl_status on_echo(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                          size_t bulk_len, mdl_rpc_out *out, mdl_error *err) {
  echo *e = ctx;
  memdl__round_reply__init(&e->reply);
  e->reply.has_samples = 1;
  e->reply.samples = 1;
  out->msg = &e->reply.base;
  out->bulk_field = 1;
  out->bulk = e->buf;
  out->bulk_len = bulk_len;
  out->pin = e->pin;
  return MDL_OK;
}

/* shm mode: round number = bytes to copy (tau), region 0 -> our region */
static mdl_status on_echo_shm(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                              size_t bulk_len, mdl_rpc_out *out, mdl_error *err) {
  echo *e = ctx;
  const Memdl__RoundRequest *r = (const Memdl__RoundRequest *)m;
  size_t bytes = (size_t)r->iter_start * 4;
  if (!e->shm || bytes > e->stride) return mdl_errorf(err, MDL_ERR_INVALID, "bad size");
  memcpy(e->shm + e->stride * ((size_t)e->index + 1), e->shm, bytes);
  memdl__round_reply__init(&e->reply);
  e->reply.has_samples = e->reply.has_weights_in_shm = e->reply.weights_in_shm = 1;
  e->reply.samples = 1;
  out->msg = &e->reply.base;
  return MDL_OK;
}

static int serve(const char *addr, size_t cap, const char *shm, int index, int k) {
  static const mdl_rpc_method methods[] = {
      {ECHO, &memdl__round_request__descriptor, 5, echo_dest, 1 << 20, on_echo},
      {ECHO_SHM, &memdl__round_request__descriptor, 0, NULL, 1 << 20, on_echo_shm}};
  echo e = {.cap = cap, .pin = mdl_rpc_pin_new(), .index = index};
  e.buf = mdl_rpc_buffer_alloc(cap);
  if (!e.buf) return 1;
  memset(e.buf, 0, cap); /* fault the pages in before timing starts */
  if (shm) {
    int fd = open(shm, O_RDWR);
    e.stride = cap;
    if (fd < 0) return 1;
    e.shm = mmap(NULL, cap * ((size_t)k + 1), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (e.shm == MAP_FAILED) return 1;
  }
  mdl_rpc_server_opts o = {.methods = methods,
                           .n_methods = 2,
                           .ctx = &e,
                           .sec = {.token = TOKEN, .token_len = sizeof TOKEN - 1}};
  mdl_rpc_server *s;
  mdl_error err;
  if (mdl_rpc_server_new(addr, &o, &s, &err) != MDL_OK) {
    fprintf(stderr, "bench worker: %s\n", err.msg);
    return 1;
  }
  mdl_rpc_server_run(s, NULL, &err);
  mdl_rpc_server_free(s);
  mdl_rpc_pin_free(e.pin);
  mdl_rpc_buffer_free(e.buf, cap);
  return 0;
}

/* --- the driver side ------------------------------------------------------ */

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct sink {
  float *buf;
  size_t want;
} sink;

static void *sink_dest(void *ctx, size_t len, mdl_error *err) {
  sink *s = ctx;
  if (len != s->want) {
    mdl_errorf(err, MDL_ERR_INVALID, "%zu bytes, expected %zu", len, s->want);
    return NULL;
  }
  return s->buf;
}

static void parse_list(const char *s, double *v, int *n, int max) {
  *n = 0;
  char *copy = strdup(s), *save = NULL;
  for (char *t = strtok_r(copy, ",", &save); t && *n < max; t = strtok_r(NULL, ",", &save))
    v[(*n)++] = atof(t);
  free(copy);
}

/* --- the peer worker: averages with the other workers ------------------------ */

typedef struct peer_srv {
  echo e; /* first: the echo methods take the server's context as theirs;
             e.buf holds this worker's "trained" weights */
  mdl_peer_net *pn;
  Memdl__SetupReply setup_reply;
} peer_srv;

/* SetupRequest.seed carries the float count (bench only). */
static mdl_status on_peer_setup(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                                size_t bulk_len, mdl_rpc_out *out, mdl_error *err) {
  peer_srv *p = ctx;
  const Memdl__SetupRequest *r = (const Memdl__SetupRequest *)m;
  size_t n = (size_t)r->seed;
  if (n * 4 > p->e.cap) return mdl_errorf(err, MDL_ERR_INVALID, "%zu floats do not fit", n);
  p->e.index = (int)r->worker_index;
  for (size_t j = 0; j < n; j++) p->e.buf[j] = (float)((j + (size_t)p->e.index * 7) % 1000) * 1e-3f;
  mdl_rpc_pin_wait(p->e.pin);
  mdl_status st =
      mdl_peer_net_setup(p->pn, r->session, (int)r->worker_index, r->peer, (int)r->n_peer, n, err);
  memdl__setup_reply__init(&p->setup_reply);
  out->msg = &p->setup_reply.base;
  return st;
}

/* RoundRequest.round names the schedule (bench only): 0 the cost model's,
 * 1 direct, 2 ring; this process does nothing else meanwhile. */
static mdl_status on_peer_round(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                                size_t bulk_len, mdl_rpc_out *out, mdl_error *err) {
  peer_srv *p = ctx;
  const Memdl__RoundRequest *r = (const Memdl__RoundRequest *)m;
  if (r->round == 0)
    unsetenv("MDL_EXCHANGE_SCHEDULE");
  else
    setenv("MDL_EXCHANGE_SCHEDULE", r->round == 1 ? "direct" : "ring", 1);
  mdl_status st = mdl_peer_net_check(p->pn, r, err);
  mdl_rpc_pin_wait(p->e.pin); /* the last reply may still be leaving the average */
  const float *avg = NULL;
  if (st == MDL_OK)
    st = mdl_peer_net_average(p->pn, r, p->e.buf, 1 + (uint64_t)p->e.index, NULL, &avg, err);
  if (st != MDL_OK) return st;
  memdl__round_reply__init(&p->e.reply);
  p->e.reply.has_samples = 1;
  p->e.reply.samples = 1;
  out->msg = &p->e.reply.base;
  if (r->return_weights) {
    out->bulk_field = 1;
    out->bulk = avg;
    out->bulk_len = r->iter_start * sizeof(float); /* bench: iter_start = floats */
    out->pin = p->e.pin;
  }
  return MDL_OK;
}

static mdl_status on_peer_piece(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                                size_t bulk_len, mdl_rpc_out *out, mdl_error *err) {
  peer_srv *p = ctx;
  return mdl_peer_net_deliver(p->pn, (const Memdl__PeerPiece *)m, err);
}

/* A worker for the TCP modes (all of them), on addr; in its own network
 * namespace when bench/bench_allreduce_netns.sh starts it. */
static int serve_peer(const char *addr, size_t cap) {
  static const mdl_rpc_method methods[] = {
      {ECHO, &memdl__round_request__descriptor, 5, echo_dest, 1 << 20, on_echo},
      {PEER_SETUP, &memdl__setup_request__descriptor, 0, NULL, 1 << 20, on_peer_setup},
      {PEER_ROUND, &memdl__round_request__descriptor, 0, NULL, 1 << 20, on_peer_round},
      {MDL_WORKER_PEER, &memdl__peer_piece__descriptor, 0, NULL, MDL_PEER_MAX_BYTES, on_peer_piece,
       NULL, false, true}};
  mdl_rpc_security sec = {.token = TOKEN, .token_len = sizeof TOKEN - 1, .insecure = true};
  peer_srv p = {.e = {.cap = cap, .pin = mdl_rpc_pin_new()}};
  p.pn = mdl_peer_net_new(&sec, stderr);
  p.e.buf = mdl_rpc_buffer_alloc(cap);
  if (!p.e.buf) return 1;
  memset(p.e.buf, 0, cap);
  mdl_rpc_server_opts o = {.methods = methods, .n_methods = 4, .ctx = &p, .sec = sec};
  mdl_rpc_server *s;
  mdl_error err;
  if (mdl_rpc_server_new(addr, &o, &s, &err) != MDL_OK) {
    fprintf(stderr, "bench peer: %s\n", err.msg);
    return 1;
  }
  mdl_rpc_server_run(s, NULL, &err);
  mdl_rpc_server_free(s);
  mdl_peer_net_free(p.pn);
  mdl_rpc_pin_free(p.e.pin);
  mdl_rpc_buffer_free(p.e.buf, cap);
  return 0;
}

/* --- the TCP modes (star, peer, direct, ring) --------------------------------- */

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int port = 0;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

typedef struct tcp_run {
  const char *mode; /* star, peer, direct, ring, hosts */
  int hosts;        /* hosts mode: how many groups */
  bool ret;         /* peer modes: member 0 returns the average to the driver */
  int k;
  size_t bytes, stride;
  int rounds;
  double alpha, beta; /* for the model column (0: none) */
  const char *exe;
  char *const *addrs; /* workers already serving (--addrs); NULL: start them here */
} tcp_run;

/* K workers of the mode's kind on free loopback ports, with channels. */
static int tcp_spawn(const tcp_run *t, pid_t *pid, char (*addr)[64], mdl_rpc_channel **ch) {
  mdl_rpc_channel_opts co = {
      .sec = {.token = TOKEN, .token_len = sizeof TOKEN - 1, .insecure = true}};
  for (int w = 0; w < t->k; w++) {
    pid[w] = 0;
    if (t->addrs) {
      snprintf(addr[w], sizeof addr[w], "%s", t->addrs[w]);
    } else {
      snprintf(addr[w], sizeof addr[w], "127.0.0.1:%d", free_port());
      pid[w] = fork();
      if (pid[w] == 0) {
        char cap[32];
        snprintf(cap, sizeof cap, "%zu", t->stride);
        execl("/proc/self/exe", t->exe, "--serve-peer", addr[w], cap, (char *)NULL);
        _exit(127);
      }
    }
    mdl_error err;
    if (mdl_rpc_channel_new(addr[w], &co, &ch[w], &err) != MDL_OK) {
      fprintf(stderr, "%s\n", err.msg);
      return 1;
    }
  }
  return 0;
}

/* Sets the peer workers up for vectors of bytes / 4 floats. */
static int peer_setup(const tcp_run *t, char (*addr)[64], mdl_rpc_channel **ch) {
  char *peers[16];
  for (int w = 0; w < t->k; w++) peers[w] = addr[w];
  Memdl__SetupRequest req[16];
  mdl_rpc_call c[16];
  memset(c, 0, sizeof c);
  for (int w = 0; w < t->k; w++) {
    memdl__setup_request__init(&req[w]);
    req[w].has_session = req[w].has_worker_index = req[w].has_seed = 1;
    req[w].session = 77;
    req[w].worker_index = (uint32_t)w;
    req[w].seed = t->bytes / 4;
    req[w].n_peer = (size_t)t->k;
    req[w].peer = peers;
    c[w].ch = ch[w];
    c[w].method = PEER_SETUP;
    c[w].req.msg = &req[w].base;
    c[w].reply_spec.desc = &memdl__setup_reply__descriptor;
    c[w].reply_spec.max_bytes = 1 << 20;
    c[w].wait_for_ready = true;
  }
  mdl_error err;
  if (mdl_rpc_call_all(c, t->k, 60000, NULL, &err) != MDL_OK) return 1;
  for (int w = 0; w < t->k; w++)
    if (c[w].code != MDL_RPC_OK) {
      fprintf(stderr, "peer %d setup: %s\n", w, c[w].detail);
      return 1;
    }
  mdl_rpc_calls_clear(c, t->k);
  return 0;
}

/* One round of the mode; its seconds, or -1. */
static double tcp_round(const tcp_run *t, mdl_rpc_channel **ch, float *wts, float **recv,
                        mdl_rpc_pin *pin, uint64_t epoch) {
  bool peer = strcmp(t->mode, "star") != 0;
  uint32_t member[16], host[16];
  for (int w = 0; w < t->k; w++) member[w] = (uint32_t)w;
  for (int w = 0; w < t->k; w++) host[w] = (uint32_t)(w * t->hosts / t->k);
  Memdl__RoundRequest req = MEMDL__ROUND_REQUEST__INIT, req0;
  req.has_tau = req.has_iter_start = 1;
  req.tau = 1;
  req.iter_start = (uint32_t)(t->bytes / 4);
  req.has_round = 1;
  req.round = !strcmp(t->mode, "direct") ? 1 : !strcmp(t->mode, "ring") ? 2 : 0;
  if (peer) {
    req.has_peer_epoch = 1;
    req.peer_epoch = epoch;
    req.n_member = (size_t)t->k;
    req.member = member;
  }
  if (!strcmp(t->mode, "hosts")) {
    req.n_member_host = (size_t)t->k;
    req.member_host = host;
  }
  req0 = req;
  req0.has_return_weights = req0.return_weights = !peer || t->ret;
  mdl_rpc_call c[16];
  sink sk[16];
  memset(c, 0, sizeof c);
  for (int w = 0; w < t->k; w++) {
    sk[w] = (sink){recv[w], t->bytes};
    c[w].ch = ch[w];
    c[w].method = peer ? PEER_ROUND : ECHO;
    c[w].req.msg = peer && w == 0 ? &req0.base : &req.base;
    c[w].reply_spec.desc = &memdl__round_reply__descriptor;
    c[w].reply_spec.bulk_field = 1;
    c[w].reply_spec.max_bytes = 1 << 20;
    c[w].reply_spec.bulk_dest = sink_dest;
    c[w].reply_spec.bulk_ctx = &sk[w];
    c[w].wait_for_ready = true;
    if (peer) continue;
    c[w].req.bulk_field = 5;
    c[w].req.bulk = wts;
    c[w].req.bulk_len = t->bytes;
    c[w].req.pin = pin;
  }
  mdl_error err;
  double t0 = mdl_now();
  if (mdl_rpc_call_all(c, t->k, 300000, NULL, &err) != MDL_OK) return -1;
  mdl_rpc_pin_wait(pin);
  for (int w = 0; w < t->k; w++)
    if (c[w].code != MDL_RPC_OK) {
      fprintf(stderr, "%s worker %d: %s %s\n", t->mode, w, mdl_rpc_code_name(c[w].code),
              c[w].detail);
      return -1;
    }
  if (!peer) {
    uint64_t samples[16];
    for (int w = 0; w < t->k; w++) samples[w] = 1;
    mdl_driver_average(wts, (const float *const *)recv, samples, t->k, t->bytes / 4);
  } else if (t->ret) {
    if (c[0].bulk_len != t->bytes) {
      fprintf(stderr, "%s worker 0: %zu bytes returned, %zu asked\n", t->mode, c[0].bulk_len,
              t->bytes);
      return -1;
    }
    memcpy(wts, recv[0], t->bytes);
  }
  double dt = mdl_now() - t0;
  mdl_rpc_calls_clear(c, t->k);
  return dt;
}

/* Runs t->rounds rounds (after two warm-ups); the median, or -1. With
 * print, one output line. */
static double tcp_mode(const tcp_run *t, bool print) {
  pid_t pid[16];
  char addr[16][64];
  mdl_rpc_channel *ch[16] = {0};
  double med = -1;
  float *wts = mdl_rpc_buffer_alloc(t->stride), *recv[16] = {0};
  mdl_rpc_pin *pin = mdl_rpc_pin_new();
  for (size_t j = 0; j < t->stride / 4; j++) wts[j] = (float)(j % 1000) * 1e-3f;
  for (int w = 0; w < t->k; w++) {
    recv[w] = mdl_rpc_buffer_alloc(t->stride);
    memset(recv[w], 0, t->stride);
  }
  double *times = calloc((size_t)t->rounds, sizeof *times);
  if (tcp_spawn(t, pid, addr, ch) == 0 && peer_setup(t, addr, ch) == 0) {
    int r;
    for (r = -2; r < t->rounds; r++) {
      /* epochs only grow, across modes too: workers from --addrs persist */
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      double dt = tcp_round(t, ch, wts, recv, pin, (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec);
      if (dt < 0) break;
      if (r >= 0) times[r] = dt;
    }
    if (r == t->rounds) {
      qsort(times, (size_t)t->rounds, sizeof *times, cmp_d);
      med = times[t->rounds / 2];
    }
  }
  if (print && med >= 0) {
    mdl_xchg_model m = mdl_exchange_model(t->k, (double)t->bytes, t->alpha, t->beta);
    /* +return: one copy back to the driver, alpha + B beta */
    double back = t->ret ? t->alpha + (double)t->bytes * t->beta : 0;
    mdl_xchg_host_model mh = mdl_exchange_model_hosts(t->k, t->hosts, (double)t->bytes, t->alpha,
                                                      t->beta, t->alpha, t->beta);
    double model = !strcmp(t->mode, "star")     ? m.star_s
                   : !strcmp(t->mode, "ring")   ? m.ring_s + back
                   : !strcmp(t->mode, "direct") ? m.direct_s + back
                   : !strcmp(t->mode, "hosts")  ? mh.hosts_s + back
                   : mdl_exchange_choose(t->k, (double)t->bytes, 100e-6, 1e-9) == MDL_XCHG_RING
                       ? m.ring_s + back
                       : m.direct_s + back;
    printf("%s%s %zu %d %d %.3f %.3f %.3f %.3f %.3f\n", t->mode,
           t->ret && strcmp(t->mode, "star") ? "+return" : "", t->bytes, t->k, t->rounds, med * 1e3,
           times[0] * 1e3, 2.0 * t->k * (double)t->bytes / med / 1e9, 0.0, model * 1e3);
    fflush(stdout);
  }
  for (int w = 0; w < t->k; w++) {
    mdl_rpc_channel_free(ch[w]);
    if (pid[w] > 0) {
      kill(pid[w], SIGKILL);
      waitpid(pid[w], NULL, 0);
    }
    mdl_rpc_buffer_free(recv[w], t->stride);
  }
  free(times);
  mdl_rpc_pin_free(pin);
  mdl_rpc_buffer_free(wts, t->stride);
  return med;
}

/* alpha: half a 4-byte echo's round trip; beta: a 60 MB echo's rest per
 * byte each way, both to one TCP worker. */
static void calibrate(const char *exe, char *const *addrs, double *alpha, double *beta) {
  size_t big = 60000000;
  tcp_run t = {
      .mode = "star", .k = 1, .bytes = 4, .stride = big, .rounds = 50, .exe = exe, .addrs = addrs};
  double small = tcp_mode(&t, false);
  t.bytes = big;
  t.rounds = 5;
  double large = tcp_mode(&t, false);
  *alpha = small > 0 ? small / 2 : 0;
  *beta = large > small ? (large - small) / (2.0 * (double)big) : 0;
  printf(
      "# alpha-beta model (exchange.h), measured to the first worker: alpha %.1f us, beta %.3f "
      "ns/byte (%.2f GB/s)\n",
      *alpha * 1e6, *beta * 1e9, *beta > 0 ? 1e-9 / *beta : 0);
}

static const char *const TCP_MODES[] = {"star", "peer", "direct", "ring", "hosts"};
#define N_TCP_MODES 5

/* --mode's comma-separated list: grpc and shm into modes[], the TCP modes
 * (a peer one with "+return") into tcp[]'s bits. Returns whether a name is
 * unknown. */
static bool parse_modes(const char *list, bool *modes, int *tcp) {
  char *copy = strdup(list), *save = NULL;
  bool bad = false;
  modes[0] = modes[1] = false;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *plus = strchr(tok, '+');
    bool ret = plus && !strcmp(plus, "+return");
    if (plus) *plus = 0;
    bool known = !plus || ret;
    if (!strcmp(tok, "grpc") && !plus)
      modes[0] = true;
    else if (!strcmp(tok, "shm") && !plus)
      modes[1] = true;
    else {
      int m = 0;
      while (m < N_TCP_MODES && strcmp(tok, TCP_MODES[m])) m++;
      known = known && m < N_TCP_MODES && !(m == 0 && ret);
      if (known) tcp[m] |= ret ? 2 : 1;
    }
    bad = bad || !known;
  }
  free(copy);
  return bad;
}

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "--serve-peer"))
    return serve_peer(argv[2], strtoull(argv[3], NULL, 10));
  if (argc == 7 && !strcmp(argv[1], "--serve"))
    return serve(argv[2], strtoull(argv[3], NULL, 10), strcmp(argv[4], "-") ? argv[4] : NULL,
                 atoi(argv[5]), atoi(argv[6]));
  double mb[8] = {1.7, 60, 240}, ks[8] = {2, 4};
  int n_mb = 3, n_k = 2, rounds = 0;
  bool modes[2] = {true, true}; /* grpc, shm */
  /* the TCP modes, off unless --mode names them */
  char *addrs[16];
  int n_addrs = 0;
  /* per TCP mode: bit 0 without the return, bit 1 with it (peer modes) */
  int tcp[N_TCP_MODES] = {0};
  int hosts = 2;
  bool ret_all = false, bad = false;
  for (int i = 1; i < argc; i += 2) {
    if (!strcmp(argv[i], "--return")) {
      ret_all = true;
      i--;
    } else if (i + 1 >= argc) {
      bad = true;
    } else if (!strcmp(argv[i], "--mb"))
      parse_list(argv[i + 1], mb, &n_mb, 8);
    else if (!strcmp(argv[i], "--workers"))
      parse_list(argv[i + 1], ks, &n_k, 8);
    else if (!strcmp(argv[i], "--rounds"))
      rounds = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--hosts"))
      hosts = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--addrs")) /* TCP modes: workers already serving */
      for (char *save = NULL, *a = strtok_r(argv[i + 1], ",", &save); a && n_addrs < 16;
           a = strtok_r(NULL, ",", &save))
        addrs[n_addrs++] = a;
    else if (!strcmp(argv[i], "--mode"))
      bad = bad || parse_modes(argv[i + 1], modes, tcp);
    else
      bad = true;
  }
  if (bad || hosts < 1) {
    fprintf(stderr,
            "usage: %s [--mb 1.7,60,240] [--workers 2,4] [--rounds N] [--return] "
            "[--mode grpc,shm,star,peer,direct,ring,hosts,peer+return,direct+return,ring+return,"
            "hosts+return] [--addrs host:port,...] [--hosts H]\n",
            argv[0]);
    return 2;
  }
  for (int m = 1; ret_all && m < N_TCP_MODES; m++) /* --return: every peer mode returns */
    tcp[m] = tcp[m] ? 2 : 0;
  char dir[] = "/dev/shm/mdl_bench_XXXXXX";
  if (!mkdtemp(dir)) return 1;
  size_t max_bytes = 0;
  for (int i = 0; i < n_mb; i++)
    if ((size_t)(mb[i] * 1e6) > max_bytes) max_bytes = (size_t)(mb[i] * 1e6);
  size_t huge = (size_t)2 << 20, stride = (max_bytes + huge - 1) / huge * huge;
  printf(
      "# mode  bytes  workers  rounds  round_ms(median)  round_ms(best)  "
      "GB/s(2*K*bytes/median)  average_ms  model_ms(TCP modes)\n");
  if (tcp[0] || tcp[1] || tcp[2] || tcp[3] || tcp[4]) {
    printf(
        "# peer, direct, ring: the average stays with the workers (a training round's cost); "
        "+return: member 0 also returns it to the driver (a round before TEST or a snapshot)\n");
    mdl_rpc_init();
    double alpha, beta;
    calibrate(argv[0], n_addrs ? addrs : NULL, &alpha, &beta);
    for (int ki = 0; ki < n_k; ki++)
      for (int si = 0; si < n_mb; si++)
        for (int mv = 0; mv < 2 * N_TCP_MODES; mv++) {
          int m = mv / 2, ret = mv % 2;
          if (!(tcp[m] & (1 << ret))) continue;
          size_t bytes = ((size_t)(mb[si] * 1e6) + 3) & ~(size_t)3;
          tcp_run t = {.mode = TCP_MODES[m],
                       .hosts = hosts,
                       .ret = ret,
                       .k = (int)ks[ki],
                       .bytes = bytes,
                       .stride = (bytes + 4095) & ~(size_t)4095,
                       .rounds = rounds > 0         ? rounds
                                 : bytes < 10000000 ? 30
                                                    : 5,
                       .alpha = alpha,
                       .beta = beta,
                       .exe = argv[0],
                       .addrs = n_addrs ? addrs : NULL};
          if (t.k < 1 || t.k > 16 || (n_addrs && t.k > n_addrs)) return 2;
          if (tcp_mode(&t, true) < 0) return 1;
        }
    mdl_rpc_shutdown();
  }
  if (!modes[0] && !modes[1]) n_k = 0;
  for (int ki = 0; ki < n_k; ki++) {
    int k = (int)ks[ki];
    if (k < 1 || k > 16) return 2;
    /* the shared file: region 0 the driver's weights, region w+1 worker w's */
    char shm[160];
    snprintf(shm, sizeof shm, "%s/weights", dir);
    int fd = open(shm, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || posix_fallocate(fd, 0, (off_t)(stride * ((size_t)k + 1))) != 0) return 1;
    uint8_t *base = mmap(NULL, stride * ((size_t)k + 1), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) return 1;
    madvise(base, stride * ((size_t)k + 1), MADV_HUGEPAGE);
    pid_t pid[16];
    char addr[16][128];
    for (int w = 0; w < k; w++) {
      snprintf(addr[w], sizeof addr[w], "unix:%s/w%d.sock", dir, w);
      pid[w] = fork();
      if (pid[w] == 0) {
        char cap[32], idx[16], kk[16];
        snprintf(cap, sizeof cap, "%zu", stride);
        snprintf(idx, sizeof idx, "%d", w);
        snprintf(kk, sizeof kk, "%d", k);
        execl("/proc/self/exe", argv[0], "--serve", addr[w], cap, shm, idx, kk, (char *)NULL);
        _exit(127);
      }
    }
    mdl_rpc_init();
    mdl_rpc_channel *ch[16];
    mdl_rpc_channel_opts co = {.sec = {.token = TOKEN, .token_len = sizeof TOKEN - 1}};
    mdl_error err;
    for (int w = 0; w < k; w++)
      if (mdl_rpc_channel_new(addr[w], &co, &ch[w], &err) != MDL_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
      }
    /* grpc mode's buffers: reused, pages touched once */
    float *heap_w = mdl_rpc_buffer_alloc(stride), *heap_recv[16];
    for (size_t j = 0; j < stride / 4; j++) heap_w[j] = (float)(j % 1000) * 1e-3f;
    memcpy(base, heap_w, stride);
    for (int w = 0; w < k; w++) {
      heap_recv[w] = mdl_rpc_buffer_alloc(stride);
      memset(heap_recv[w], 0, stride);
      memset(base + stride * ((size_t)w + 1), 0, stride);
    }
    mdl_rpc_pin *pin = mdl_rpc_pin_new();
    for (int mode = 0; mode < 2; mode++) {
      if (!modes[mode]) continue;
      bool use_shm = mode == 1;
      float *wts = use_shm ? (float *)base : heap_w;
      float *recv[16];
      for (int w = 0; w < k; w++)
        recv[w] = use_shm ? (float *)(base + stride * ((size_t)w + 1)) : heap_recv[w];
      for (int si = 0; si < n_mb; si++) {
        size_t bytes = ((size_t)(mb[si] * 1e6) + 3) & ~(size_t)3;
        int n_rounds = rounds > 0 ? rounds : bytes < 10000000 ? 50 : 8;
        double *t = calloc((size_t)n_rounds, sizeof *t), avg_total = 0;
        for (int r = -2; r < n_rounds; r++) { /* two warm-up rounds */
          Memdl__RoundRequest req = MEMDL__ROUND_REQUEST__INIT;
          req.has_tau = req.has_iter_start = 1;
          req.tau = 1;
          req.iter_start = (uint32_t)(bytes / 4);
          mdl_rpc_call c[16];
          sink sk[16];
          memset(c, 0, sizeof c);
          for (int w = 0; w < k; w++) {
            sk[w] = (sink){recv[w], bytes};
            c[w].ch = ch[w];
            c[w].method = use_shm ? ECHO_SHM : ECHO;
            c[w].req.msg = &req.base;
            c[w].reply_spec.desc = &memdl__round_reply__descriptor;
            c[w].reply_spec.bulk_field = 1;
            c[w].reply_spec.max_bytes = 1 << 20;
            c[w].wait_for_ready = true;
            if (use_shm) continue;
            c[w].req.bulk_field = 5;
            c[w].req.bulk = wts;
            c[w].req.bulk_len = bytes;
            c[w].req.pin = pin;
            c[w].reply_spec.bulk_dest = sink_dest;
            c[w].reply_spec.bulk_ctx = &sk[w];
          }
          double t0 = mdl_now();
          if (mdl_rpc_call_all(c, k, 120000, NULL, &err) != MDL_OK) return 1;
          mdl_rpc_pin_wait(pin);
          for (int w = 0; w < k; w++)
            if (c[w].code != MDL_RPC_OK) {
              fprintf(stderr, "worker %d: %s %s\n", w, mdl_rpc_code_name(c[w].code), c[w].detail);
              return 1;
            }
          double a0 = mdl_now();
          uint64_t samples[16];
          for (int w = 0; w < k; w++) samples[w] = 1;
          mdl_driver_average(wts, (const float *const *)recv, samples, k, bytes / 4);
          double t1 = mdl_now();
          mdl_rpc_calls_clear(c, k);
          if (r >= 0) {
            t[r] = t1 - t0;
            avg_total += t1 - a0;
          }
        }
        qsort(t, (size_t)n_rounds, sizeof *t, cmp_d);
        double med = t[n_rounds / 2];
        printf("%s %zu %d %d %.3f %.3f %.3f %.3f\n", use_shm ? "shm" : "grpc", bytes, k, n_rounds,
               med * 1e3, t[0] * 1e3, 2.0 * k * (double)bytes / med / 1e9,
               avg_total / n_rounds * 1e3);
        fflush(stdout);
        free(t);
      }
    }
    for (int w = 0; w < k; w++) {
      mdl_rpc_channel_free(ch[w]);
      kill(pid[w], SIGKILL);
      waitpid(pid[w], NULL, 0);
      mdl_rpc_buffer_free(heap_recv[w], stride);
    }
    mdl_rpc_pin_free(pin);
    mdl_rpc_buffer_free(heap_w, stride);
    munmap(base, stride * ((size_t)k + 1));
    unlink(shm);
    mdl_rpc_shutdown();
  }
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) return 1;
  return 0;
}
