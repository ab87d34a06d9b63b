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
 * bench/bench_allreduce.sh puts both beside OpenMPI's MPI_Allreduce of the
 * same bytes on K ranks.
 *
 *   bench_allreduce [--mb 1.7,60,240] [--workers 2,4] [--rounds N] [--mode grpc,shm]
 * prints one line per (mode, size, K): median and best round time, GB/s
 * (2 K bytes moved per round / median) and the averaging part. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "rpc.pb-c.h"
#include "runtime/dist/driver.h"
#include "runtime/rpc/rpc.h"

#define ECHO "/memdl.Bench/Echo"
#define ECHO_SHM "/memdl.Bench/EchoShm"

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
  mdl_rpc_server_opts o = {.methods = methods, .n_methods = 2, .ctx = &e};
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

int main(int argc, char **argv) {
  if (argc == 7 && !strcmp(argv[1], "--serve"))
    return serve(argv[2], strtoull(argv[3], NULL, 10), strcmp(argv[4], "-") ? argv[4] : NULL,
                 atoi(argv[5]), atoi(argv[6]));
  double mb[8] = {1.7, 60, 240}, ks[8] = {2, 4};
  int n_mb = 3, n_k = 2, rounds = 0;
  bool modes[2] = {true, true}; /* grpc, shm */
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--mb"))
      parse_list(argv[i + 1], mb, &n_mb, 8);
    else if (!strcmp(argv[i], "--workers"))
      parse_list(argv[i + 1], ks, &n_k, 8);
    else if (!strcmp(argv[i], "--rounds"))
      rounds = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--mode")) {
      modes[0] = strstr(argv[i + 1], "grpc") != NULL;
      modes[1] = strstr(argv[i + 1], "shm") != NULL;
    } else {
      fprintf(stderr,
              "usage: %s [--mb 1.7,60,240] [--workers 2,4] [--rounds N] [--mode grpc,shm]\n",
              argv[0]);
      return 2;
    }
  }
  char dir[] = "/dev/shm/mdl_bench_XXXXXX";
  if (!mkdtemp(dir)) return 1;
  size_t max_bytes = 0;
  for (int i = 0; i < n_mb; i++)
    if ((size_t)(mb[i] * 1e6) > max_bytes) max_bytes = (size_t)(mb[i] * 1e6);
  size_t huge = (size_t)2 << 20, stride = (max_bytes + huge - 1) / huge * huge;
  printf(
      "# mode  bytes  workers  rounds  round_ms(median)  round_ms(best)  "
      "GB/s(2*K*bytes/median)  average_ms\n");
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
    mdl_rpc_channel_opts co = {0};
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
