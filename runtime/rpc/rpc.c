/* gRPC C core behind memdl's own small API (see rpc.h). Facts this code
 * relies on are in shared/notes/grpc-c-core.md: raised message limits on
 * both sides, SO_REUSEPORT off, keepalive settings that detect a stopped
 * peer, handlers off the polling thread, gRPC's shutdown order. */
#define _GNU_SOURCE
#include "runtime/rpc/rpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <malloc.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include "common/log.h"

#define TOKEN_KEY "memdl-token"
#define STREAM_KEY "memdl-stream"
#define DEFAULT_MAX_MESSAGE ((size_t)INT32_MAX)
#define POLL_MS 100

/* --- small helpers ------------------------------------------------------- */

double mdl_rpc_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void *mdl_rpc_buffer_alloc(size_t bytes) {
  if (bytes == 0) bytes = 1;
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  if (bytes >= (2u << 20)) madvise(p, bytes, MADV_HUGEPAGE);
  return p;
}

void mdl_rpc_buffer_free(void *p, size_t bytes) {
  if (p) munmap(p, bytes ? bytes : 1);
}

static gpr_timespec deadline_in(int ms) {
  if (ms <= 0) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

const char *mdl_rpc_code_name(mdl_rpc_code c) {
  switch (c) {
    case MDL_RPC_OK:
      return "OK";
    case MDL_RPC_CANCELLED:
      return "CANCELLED";
    case MDL_RPC_UNKNOWN:
      return "UNKNOWN";
    case MDL_RPC_INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case MDL_RPC_DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case MDL_RPC_NOT_FOUND:
      return "NOT_FOUND";
    case MDL_RPC_PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case MDL_RPC_RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case MDL_RPC_FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case MDL_RPC_UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case MDL_RPC_INTERNAL:
      return "INTERNAL";
    case MDL_RPC_UNAVAILABLE:
      return "UNAVAILABLE";
    case MDL_RPC_DATA_LOSS:
      return "DATA_LOSS";
    case MDL_RPC_UNAUTHENTICATED:
      return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}

mdl_rpc_code mdl_rpc_code_for(mdl_status st) {
  switch (st) {
    case MDL_OK:
      return MDL_RPC_OK;
    case MDL_ERR_INVALID:
      return MDL_RPC_INVALID_ARGUMENT;
    case MDL_ERR_NOMEM:
      return MDL_RPC_RESOURCE_EXHAUSTED;
    default:
      return MDL_RPC_INTERNAL;
  }
}

static pthread_mutex_t g_init_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_init_count;

/* When a bulk field streams in chunks instead of travelling inside one
 * message: the one place that decides (the client; the server follows what
 * the client's "memdl-stream" metadata asks). From bench/bench_allreduce
 * (grpc mode, Unix sockets, 2 CPUs at load 4-7; medians of 3 runs of the
 * per-round median, ms, broadcast + gather + average; MDL_RPC_STREAM_MIN and
 * MDL_RPC_CHUNK chose the mode):
 *
 *   bytes  K  unary  stream 4 MiB  stream 1 MiB  MPI_Allreduce
 *   1.7 MB 2    3.6           3.1           4.1            0.4
 *   60 MB  2  154.8         144.8         122.7          126.8
 *   240 MB 2  712.0         462.9         471.1          680.1
 *   1.7 MB 4    6.3           7.8           6.3            3.9
 *   60 MB  4  256.3         234.3         198.5          112.7
 *   240 MB 4 1030.2         880.2        1057.2         1123.9
 *
 * Streaming wins from 60 MB on (a chunk is decoded into the destination
 * while the next is in flight; one 240 MB message is reassembled first);
 * at 1.7 MB the two are within noise, so small fields stay unary (one
 * batch, fewer completions). 4 MiB chunks: best at 240 MB, 1 MiB best at
 * 60 MB, 4 MiB better in total. The crossover between 1.7 and 60 MB was not
 * measured: 8 MiB sits between. */
#define STREAM_MIN_BYTES (8 << 20)
#define STREAM_MIN_DEFAULT ((size_t)STREAM_MIN_BYTES)
#define CHUNK_DEFAULT ((size_t)4 << 20)
#define CHUNK_MIN ((size_t)1 << 10)
#define CHUNK_MAX ((size_t)64 << 20)
static size_t g_stream_min = STREAM_MIN_DEFAULT; /* 0: never */
static size_t g_chunk = CHUNK_DEFAULT;

static bool stream_bulk(int force, size_t bulk_len) {
  if (force) return force > 0;
  return g_stream_min > 0 && bulk_len >= g_stream_min;
}

static void read_stream_env(void) {
  const char *v = getenv("MDL_RPC_STREAM_MIN");
  if (v && *v) g_stream_min = (size_t)strtoull(v, NULL, 10);
  v = getenv("MDL_RPC_CHUNK");
  if (v && *v) {
    size_t c = (size_t)strtoull(v, NULL, 10);
    g_chunk = c < CHUNK_MIN ? CHUNK_MIN : c > CHUNK_MAX ? CHUNK_MAX : c;
  }
}

void mdl_rpc_init(void) {
  pthread_mutex_lock(&g_init_mu);
  if (g_init_count++ == 0) {
    /* gRPC receives big messages into many fresh chunks: keep chunks up to
     * 32 MiB on the heap and the heap from shrinking, so the next round
     * reuses warm pages instead of faulting new ones in (measured: 60 MB
     * rounds ~20% faster on these VMs). Process-wide, set once. */
    static bool tuned;
    if (!tuned) {
      mallopt(M_MMAP_THRESHOLD, 32 << 20);
      mallopt(M_TRIM_THRESHOLD, 1 << 30);
      tuned = true;
    }
    read_stream_env();
    grpc_init();
  }
  pthread_mutex_unlock(&g_init_mu);
}

void mdl_rpc_shutdown(void) {
  pthread_mutex_lock(&g_init_mu);
  if (g_init_count > 0 && --g_init_count == 0) grpc_shutdown();
  pthread_mutex_unlock(&g_init_mu);
}

/* Reads a whole (small) file as a NUL-terminated string. */
static mdl_status read_text(const char *what, const char *path, char **out, size_t *len,
                            mdl_error *err) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return mdl_errorf(err, MDL_ERR_INVALID, "%s %s: %s", what, path, strerror(errno));
  size_t cap = 4096, n = 0;
  char *buf = mdl_xmalloc(cap);
  for (;;) {
    if (n + 1 >= cap) {
      if (cap >= (1u << 24)) {
        fclose(f);
        free(buf);
        return mdl_errorf(err, MDL_ERR_INVALID, "%s %s: larger than 16 MiB", what, path);
      }
      cap *= 2;
      buf = mdl_xrealloc(buf, cap);
    }
    size_t r = fread(buf + n, 1, cap - n - 1, f);
    if (r == 0) break;
    n += r;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return mdl_errorf(err, MDL_ERR_INVALID, "%s %s: read error", what, path);
  }
  buf[n] = 0;
  *out = buf;
  if (len) *len = n;
  return MDL_OK;
}

mdl_status mdl_rpc_token_read(const char *path, char **out, size_t *len, mdl_error *err) {
  *out = NULL;
  *len = 0;
  struct stat st;
  if (stat(path, &st) != 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "token file %s: %s", path, strerror(errno));
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "token file %s: readable by group or others (mode %03o); chmod 600 it", path,
                      (unsigned)(st.st_mode & 0777));
  char *buf;
  size_t n;
  mdl_status s = read_text("token file", path, &buf, &n, err);
  if (s != MDL_OK) return s;
  while (n > 0 &&
         (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
    buf[--n] = 0;
  if (n < 16) {
    free(buf);
    return mdl_errorf(err, MDL_ERR_INVALID, "token file %s: token shorter than 16 bytes", path);
  }
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] > 0x7e) {
      free(buf);
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "token file %s: token must be printable ASCII (it is sent as metadata)",
                        path);
    }
  *out = buf;
  *len = n;
  return MDL_OK;
}

/* Time depends on the expected token's length only. */
static bool token_equal(const char *want, size_t want_len, const unsigned char *got,
                        size_t got_len) {
  unsigned diff = (unsigned)(want_len != got_len);
  for (size_t i = 0; i < want_len; i++) {
    unsigned char g = i < got_len ? got[i] : 0;
    diff |= (unsigned)((unsigned char)want[i] ^ g);
  }
  return diff == 0;
}

/* Splits "host:port" / "[v6]:port" into host. */
static bool addr_host(const char *addr, char *host, size_t cap) {
  if (addr[0] == '[') {
    const char *end = strchr(addr, ']');
    if (!end || (size_t)(end - addr - 1) >= cap) return false;
    memcpy(host, addr + 1, (size_t)(end - addr - 1));
    host[end - addr - 1] = 0;
    return true;
  }
  const char *colon = strrchr(addr, ':');
  size_t n = colon ? (size_t)(colon - addr) : strlen(addr);
  if (n >= cap) return false;
  memcpy(host, addr, n);
  host[n] = 0;
  return true;
}

static bool in6_loopback(const struct in6_addr *a) {
  if (IN6_IS_ADDR_LOOPBACK(a)) return true;
  if (IN6_IS_ADDR_V4MAPPED(a)) return a->s6_addr[12] == 127;
  return false;
}

static bool sockaddr_loopback(const struct addrinfo *ai) {
  if (ai->ai_family == AF_INET) {
    struct sockaddr_in in;
    memcpy(&in, ai->ai_addr, sizeof in);
    return (ntohl(in.sin_addr.s_addr) >> 24) == 127;
  }
  if (ai->ai_family == AF_INET6) {
    struct sockaddr_in6 in6;
    memcpy(&in6, ai->ai_addr, sizeof in6);
    return in6_loopback(&in6.sin6_addr);
  }
  return false;
}

bool mdl_rpc_addr_is_loopback(const char *addr) {
  if (!strncmp(addr, "unix:", 5) || !strncmp(addr, "unix-abstract:", 14)) return true;
  const char *a = addr;
  if (!strncmp(a, "ipv4:", 5) || !strncmp(a, "ipv6:", 5)) a += 5;
  if (!strncmp(a, "dns:///", 7)) a += 7;
  char host[256];
  if (!addr_host(a, host, sizeof host)) return false;
  if (!strcmp(host, "localhost")) return true;
  if (!host[0]) return false; /* ":port" listens on every interface */
  struct in_addr v4;
  struct in6_addr v6;
  if (inet_pton(AF_INET, host, &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &v6) == 1) return in6_loopback(&v6);
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
  if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) return false;
  bool all = true;
  for (struct addrinfo *p = res; p; p = p->ai_next)
    if (!sockaddr_loopback(p)) all = false;
  freeaddrinfo(res);
  return all;
}

mdl_status mdl_rpc_check_transport(const char *addr, const mdl_rpc_security *sec, FILE *log,
                                   mdl_error *err) {
  if (mdl_rpc_addr_is_loopback(addr)) return MDL_OK;
  if (sec && (sec->tls_cert || sec->tls_ca)) return MDL_OK;
  if (sec && sec->insecure) {
    fprintf(log ? log : stderr,
            "memdl: WARNING: plain TCP on %s, a non-loopback address: weights and the token "
            "travel unencrypted (--insecure)\n",
            addr);
    return MDL_OK;
  }
  return mdl_errorf(err, MDL_ERR_INVALID,
                    "%s is not a loopback address: use TLS (--tls-cert/--tls-key, --tls-ca) or "
                    "pass --insecure to allow plain TCP",
                    addr);
}

/* --- pins (zero-copy bulk lifetimes) ------------------------------------- */

struct mdl_rpc_pin {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int refs;
};

mdl_rpc_pin *mdl_rpc_pin_new(void) {
  mdl_rpc_pin *p = mdl_xcalloc(1, sizeof *p);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  return p;
}

void mdl_rpc_pin_wait(mdl_rpc_pin *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  while (p->refs > 0) pthread_cond_wait(&p->cv, &p->mu);
  pthread_mutex_unlock(&p->mu);
}

void mdl_rpc_pin_free(mdl_rpc_pin *p) {
  if (!p) return;
  mdl_rpc_pin_wait(p);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
}

static void pin_ref(mdl_rpc_pin *p) {
  pthread_mutex_lock(&p->mu);
  p->refs++;
  pthread_mutex_unlock(&p->mu);
}

static void pin_unref(void *arg) {
  mdl_rpc_pin *p = arg;
  pthread_mutex_lock(&p->mu);
  if (--p->refs == 0) pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

/* --- encoding ------------------------------------------------------------ */

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* The message without its bulk, followed by the bulk field's tag and length:
 * concatenated protobuf encodings merge, so this plus the bulk bytes is the
 * whole message. */
static uint8_t *encode_head(const mdl_rpc_out *m, size_t *len) {
  size_t body = m->msg ? protobuf_c_message_get_packed_size(m->msg) : 0;
  uint8_t *buf = mdl_xmalloc(body + 24);
  if (m->msg) protobuf_c_message_pack(m->msg, buf);
  size_t n = body;
  if (m->bulk_field) {
    n += put_varint(buf + n, ((uint64_t)m->bulk_field << 3) | 2);
    n += put_varint(buf + n, m->bulk_len);
  }
  *len = n;
  return buf;
}

mdl_status mdl_rpc_encode_flat(const mdl_rpc_out *m, uint8_t **out, size_t *len, mdl_error *err) {
  size_t n;
  uint8_t *head = encode_head(m, &n);
  size_t bulk = m->bulk_field ? m->bulk_len : 0;
  uint8_t *buf = malloc(n + bulk + 1);
  if (!buf) {
    free(head);
    return mdl_errorf(err, MDL_ERR_NOMEM, "rpc: %zu bytes do not fit", n + bulk);
  }
  memcpy(buf, head, n);
  if (bulk) memcpy(buf + n, m->bulk, bulk);
  free(head);
  *out = buf;
  *len = n + bulk;
  return MDL_OK;
}

static grpc_byte_buffer *encode_bb(const mdl_rpc_out *m) {
  if (m->raw) {
    grpc_slice raw = grpc_slice_from_copied_buffer((const char *)m->raw, m->raw_len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&raw, 1);
    grpc_slice_unref(raw);
    return bb;
  }
  size_t n;
  uint8_t *head = encode_head(m, &n);
  grpc_slice s[2];
  s[0] = grpc_slice_from_copied_buffer((const char *)head, n);
  free(head);
  int ns = 1;
  if (m->bulk_field && m->bulk_len) {
    if (m->pin) {
      pin_ref(m->pin);
      s[1] = grpc_slice_new_with_user_data((void *)m->bulk, m->bulk_len, pin_unref, m->pin);
    } else {
      s[1] = grpc_slice_from_copied_buffer(m->bulk, m->bulk_len);
    }
    ns = 2;
  }
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(s, (size_t)ns);
  for (int i = 0; i < ns; i++) grpc_slice_unref(s[i]);
  return bb;
}

/* A memdl.BulkChunk's fields before its data: offset, total, data's tag and
 * length. */
static size_t chunk_head(uint8_t *p, uint64_t offset, uint64_t total, size_t len) {
  size_t n = 0;
  p[n++] = (1 << 3) | 0;
  n += put_varint(p + n, offset);
  p[n++] = (2 << 3) | 0;
  n += put_varint(p + n, total);
  p[n++] = (3 << 3) | 2;
  n += put_varint(p + n, len);
  return n;
}

void mdl_rpc_encode_chunk(uint64_t offset, uint64_t total, const void *data, size_t len,
                          uint8_t **out, size_t *out_len) {
  uint8_t *buf = mdl_xmalloc(40 + len);
  size_t n = chunk_head(buf, offset, total, len);
  if (len) memcpy(buf + n, data, len);
  *out = buf;
  *out_len = n + len;
}

/* Bytes [off, off + len) of m's bulk as one chunk message: without a copy
 * when m has a pin (the same contract as encode_bb). */
static grpc_byte_buffer *encode_chunk_bb(const mdl_rpc_out *m, size_t off, size_t len) {
  uint8_t head[40];
  size_t n = chunk_head(head, off, m->bulk_len, len);
  grpc_slice s[2];
  s[0] = grpc_slice_from_copied_buffer((const char *)head, n);
  const char *p = (const char *)m->bulk + off;
  if (m->pin) {
    pin_ref(m->pin);
    s[1] = grpc_slice_new_with_user_data((void *)p, len, pin_unref, m->pin);
  } else {
    s[1] = grpc_slice_from_copied_buffer(p, len);
  }
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(s, 2);
  grpc_slice_unref(s[0]);
  grpc_slice_unref(s[1]);
  return bb;
}

static grpc_byte_buffer *raw_bb(const uint8_t *p, size_t len) {
  grpc_slice raw = grpc_slice_from_copied_buffer((const char *)p, len);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&raw, 1);
  grpc_slice_unref(raw);
  return bb;
}

/* The messages that follow the head of a streamed m: chunks of `chunk`
 * bytes (or m's raw_chunks). *n is their count; the array is the caller's,
 * and so are the buffers until sent (then grpc_byte_buffer_destroy). */
static grpc_byte_buffer **encode_chunks(const mdl_rpc_out *m, size_t chunk, int *n) {
  if (m->raw_chunks) {
    grpc_byte_buffer **v = mdl_xcalloc((size_t)(m->n_raw_chunks ? m->n_raw_chunks : 1), sizeof *v);
    for (int i = 0; i < m->n_raw_chunks; i++)
      v[i] = raw_bb(m->raw_chunks[i].p, m->raw_chunks[i].len);
    *n = m->n_raw_chunks;
    return v;
  }
  size_t len = m->bulk_field ? m->bulk_len : 0;
  size_t count = (len + chunk - 1) / chunk;
  grpc_byte_buffer **v = mdl_xcalloc(count ? count : 1, sizeof *v);
  for (size_t i = 0; i < count; i++) {
    size_t off = i * chunk;
    v[i] = encode_chunk_bb(m, off, len - off < chunk ? len - off : chunk);
  }
  *n = (int)count;
  return v;
}

/* --- decoding ------------------------------------------------------------ */

/* A message as a list of byte ranges (gRPC's slices, or one flat buffer). */
typedef struct segs {
  const uint8_t **p;
  size_t *n;
  int count;
  int i;       /* current segment */
  size_t off;  /* offset in it */
  size_t left; /* bytes left in the whole message */
} segs;

static bool seg_byte(segs *s, uint8_t *b) {
  while (s->i < s->count && s->off >= s->n[s->i]) {
    s->i++;
    s->off = 0;
  }
  if (s->i >= s->count) return false;
  *b = s->p[s->i][s->off++];
  s->left--;
  return true;
}

static void seg_copy(segs *s, uint8_t *dst, size_t n) {
  while (n > 0) {
    while (s->off >= s->n[s->i]) {
      s->i++;
      s->off = 0;
    }
    size_t k = s->n[s->i] - s->off;
    if (k > n) k = n;
    if (dst) {
      memcpy(dst, s->p[s->i] + s->off, k);
      dst += k;
    }
    s->off += k;
    s->left -= k;
    n -= k;
  }
}

static bool seg_varint(segs *s, uint64_t *v) {
  uint64_t r = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    uint8_t b;
    if (!seg_byte(s, &b)) return false;
    r |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = r;
      return true;
    }
  }
  return false;
}

typedef struct bytebuf {
  uint8_t *p;
  size_t n, cap;
} bytebuf;

static void bb_reserve(bytebuf *b, size_t more) {
  if (b->n + more <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->n + more) cap *= 2;
  b->p = mdl_xrealloc(b->p, cap);
  b->cap = cap;
}

static mdl_status decode_segs(segs *s, const mdl_rpc_in_spec *spec, ProtobufCMessage **msg,
                              size_t *bulk_len, mdl_error *err) {
  *msg = NULL;
  if (bulk_len) *bulk_len = 0;
  const char *what = spec->desc->name;
  size_t max = spec->max_bytes ? spec->max_bytes : DEFAULT_MAX_MESSAGE;
  bytebuf rest = {0};
  bool seen_bulk = false;
  mdl_status st = MDL_OK;
  if (!spec->bulk_field && s->left > max) {
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: %zu bytes exceed the limit of %zu", what, s->left,
                      max);
  }
  while (s->left > 0) {
    uint64_t tag, len;
    if (!seg_varint(s, &tag)) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: truncated field tag", what);
      goto out;
    }
    uint64_t field = tag >> 3;
    unsigned wt = (unsigned)(tag & 7);
    if (field == 0 || field > 536870911u) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: invalid field number", what);
      goto out;
    }
    if (spec->bulk_field && field == spec->bulk_field) {
      if (wt != 2) {
        st = mdl_errorf(err, MDL_ERR_INVALID, "%s: field %u must be length-delimited", what,
                        spec->bulk_field);
        goto out;
      }
      if (!seg_varint(s, &len) || len > s->left) {
        st = mdl_errorf(err, MDL_ERR_INVALID, "%s: truncated field %u", what, spec->bulk_field);
        goto out;
      }
      if (seen_bulk) {
        st = mdl_errorf(err, MDL_ERR_INVALID, "%s: field %u appears twice", what, spec->bulk_field);
        goto out;
      }
      seen_bulk = true;
      void *dst = NULL;
      if (len > 0) {
        if (!spec->bulk_dest) {
          st = mdl_errorf(err, MDL_ERR_INVALID, "%s: unexpected field %u", what, spec->bulk_field);
          goto out;
        }
        mdl_error e2;
        mdl_error_clear(&e2);
        dst = spec->bulk_dest(spec->bulk_ctx, (size_t)len, &e2);
        if (!dst) {
          st = mdl_errorf(err, e2.code != MDL_OK ? e2.code : MDL_ERR_INVALID, "%s: %s", what,
                          e2.msg[0] ? e2.msg : "bulk field rejected");
          goto out;
        }
        seg_copy(s, dst, (size_t)len);
      }
      if (bulk_len) *bulk_len = (size_t)len;
      continue;
    }
    uint8_t hdr[20];
    size_t h = put_varint(hdr, tag);
    uint64_t payload;
    switch (wt) {
      case 0: { /* varint: copy it re-encoded */
        uint64_t v;
        if (!seg_varint(s, &v)) {
          st = mdl_errorf(err, MDL_ERR_INVALID, "%s: truncated varint", what);
          goto out;
        }
        h += put_varint(hdr + h, v);
        payload = 0;
        break;
      }
      case 1:
        payload = 8;
        break;
      case 5:
        payload = 4;
        break;
      case 2:
        if (!seg_varint(s, &len)) {
          st = mdl_errorf(err, MDL_ERR_INVALID, "%s: truncated length", what);
          goto out;
        }
        h += put_varint(hdr + h, len);
        payload = len;
        break;
      default:
        st = mdl_errorf(err, MDL_ERR_INVALID, "%s: unsupported wire type %u", what, wt);
        goto out;
    }
    if (payload > s->left) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: truncated field %llu", what,
                      (unsigned long long)field);
      goto out;
    }
    if (rest.n + h + payload > max) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: more than the limit of %zu bytes", what, max);
      goto out;
    }
    bb_reserve(&rest, h + (size_t)payload);
    memcpy(rest.p + rest.n, hdr, h);
    rest.n += h;
    seg_copy(s, rest.p + rest.n, (size_t)payload);
    rest.n += (size_t)payload;
  }
  *msg = protobuf_c_message_unpack(spec->desc, NULL, rest.n, rest.p ? rest.p : (uint8_t *)"");
  if (!*msg) st = mdl_errorf(err, MDL_ERR_INVALID, "%s: malformed message", what);
out:
  free(rest.p);
  return st;
}

mdl_status mdl_rpc_decode_flat(const uint8_t *data, size_t len, const mdl_rpc_in_spec *spec,
                               ProtobufCMessage **msg, size_t *bulk_len, mdl_error *err) {
  const uint8_t *p[1] = {data};
  size_t n[1] = {len};
  segs s = {.p = p, .n = n, .count = 1, .left = len};
  return decode_segs(&s, spec, msg, bulk_len, err);
}

/* A received message's slices (refs, released by bb_view_free). */
typedef struct bb_view {
  grpc_slice *sl;
  const uint8_t **p;
  size_t *n;
  int count;
  size_t total;
} bb_view;

static bool bb_view_init(bb_view *v, grpc_byte_buffer *bb) {
  memset(v, 0, sizeof *v);
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, bb)) return false;
  int cap = 16;
  v->sl = mdl_xmalloc((size_t)cap * sizeof *v->sl);
  grpc_slice one;
  while (grpc_byte_buffer_reader_next(&r, &one)) {
    if (v->count == cap) {
      cap *= 2;
      v->sl = mdl_xrealloc(v->sl, (size_t)cap * sizeof *v->sl);
    }
    v->sl[v->count++] = one;
    v->total += GRPC_SLICE_LENGTH(one);
  }
  grpc_byte_buffer_reader_destroy(&r);
  v->p = mdl_xmalloc((size_t)(v->count ? v->count : 1) * sizeof *v->p);
  v->n = mdl_xmalloc((size_t)(v->count ? v->count : 1) * sizeof *v->n);
  for (int i = 0; i < v->count; i++) {
    v->p[i] = GRPC_SLICE_START_PTR(v->sl[i]);
    v->n[i] = GRPC_SLICE_LENGTH(v->sl[i]);
  }
  return true;
}

static void bb_view_free(bb_view *v) {
  for (int i = 0; i < v->count; i++) grpc_slice_unref(v->sl[i]);
  free(v->sl);
  free(v->p);
  free(v->n);
}

static mdl_status decode_bb(grpc_byte_buffer *bb, const mdl_rpc_in_spec *spec,
                            ProtobufCMessage **msg, size_t *bulk_len, mdl_error *err) {
  *msg = NULL;
  bb_view v;
  if (!bb_view_init(&v, bb))
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: unreadable message", spec->desc->name);
  segs s = {.p = v.p, .n = v.n, .count = v.count, .left = v.total};
  mdl_status st = decode_segs(&s, spec, msg, bulk_len, err);
  bb_view_free(&v);
  return st;
}

/* A bulk field arriving as chunks: each one is checked against what came
 * before (same total, offset exactly where the last ended, inside the
 * total) and copied from gRPC's slices straight into spec's destination,
 * asked for once, with the total, at the first chunk. */
typedef struct bulk_rx {
  const mdl_rpc_in_spec *spec;
  size_t limit; /* the total may not exceed it (the transport's message limit) */
  uint8_t *dst;
  uint64_t total, got;
  int chunks;
  bool head_bulk; /* the message itself carried the field: no chunks may follow */
} bulk_rx;

static mdl_status chunk_take(bulk_rx *b, grpc_byte_buffer *bb, mdl_error *err) {
  const mdl_rpc_in_spec *spec = b->spec;
  const char *what = spec->desc->name;
  if (!spec->bulk_field)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: chunks for a message without a bulk field", what);
  if (b->head_bulk)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: chunks after field %u arrived whole", what,
                      spec->bulk_field);
  bb_view v;
  if (!bb_view_init(&v, bb)) return mdl_errorf(err, MDL_ERR_INVALID, "%s: unreadable chunk", what);
  segs s = {.p = v.p, .n = v.n, .count = v.count, .left = v.total};
  mdl_status st = MDL_OK;
  /* offset, total, data: in any order, a repeated field's last value
   * winning and an absent one 0, as protobuf decodes them; nothing else */
  uint64_t f[3] = {0, 0, 0};
  segs data = s;
  while (s.left > 0) {
    uint64_t tag = 0, field;
    bool ok = seg_varint(&s, &tag);
    field = tag >> 3;
    ok = ok && field >= 1 && field <= 3 && (tag & 7) == (field == 3 ? 2u : 0u);
    if (!ok || !seg_varint(&s, &f[field - 1])) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunk %d: malformed (fields 1, 2, 3 expected)",
                      what, b->chunks);
      goto out;
    }
    if (field != 3) continue;
    if (f[2] > s.left) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunk %d: %llu data bytes announced, %zu present",
                      what, b->chunks, (unsigned long long)f[2], s.left);
      goto out;
    }
    data = s;
    seg_copy(&s, NULL, (size_t)f[2]);
  }
  uint64_t off = f[0], total = f[1], len = f[2];
  if (len == 0) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunk %d: empty", what, b->chunks);
    goto out;
  }
  if (b->chunks == 0) {
    if (b->limit && total > b->limit) {
      st =
          mdl_errorf(err, MDL_ERR_NOMEM, "%s: chunked field of %llu bytes exceeds the limit of %zu",
                     what, (unsigned long long)total, b->limit);
      goto out;
    }
    if (total == 0 || total > SIZE_MAX) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunked field of %llu bytes", what,
                      (unsigned long long)total);
      goto out;
    }
    if (!spec->bulk_dest) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: unexpected field %u", what, spec->bulk_field);
      goto out;
    }
    mdl_error e2;
    mdl_error_clear(&e2);
    b->dst = spec->bulk_dest(spec->bulk_ctx, (size_t)total, &e2);
    if (!b->dst) {
      st = mdl_errorf(err, e2.code != MDL_OK ? e2.code : MDL_ERR_INVALID, "%s: %s", what,
                      e2.msg[0] ? e2.msg : "bulk field rejected");
      goto out;
    }
    b->total = total;
  } else if (total != b->total) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunk %d: total %llu, earlier chunks said %llu",
                    what, b->chunks, (unsigned long long)total, (unsigned long long)b->total);
    goto out;
  }
  if (off != b->got) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunk %d: offset %llu, expected %llu (%s)", what,
                    b->chunks, (unsigned long long)off, (unsigned long long)b->got,
                    off < b->got ? "overlap" : "gap");
    goto out;
  }
  if (len > b->total - off) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunk %d: bytes %llu..%llu past the total %llu",
                    what, b->chunks, (unsigned long long)off, (unsigned long long)(off + len),
                    (unsigned long long)b->total);
    goto out;
  }
  seg_copy(&data, b->dst + off, (size_t)len);
  b->got += len;
  b->chunks++;
out:
  bb_view_free(&v);
  return st;
}

/* After the last message: a chunked field must be complete. */
static mdl_status chunks_end(const bulk_rx *b, size_t *bulk_len, mdl_error *err) {
  if (b->chunks == 0) return MDL_OK;
  if (b->got != b->total)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: chunks ended at %llu of %llu bytes",
                      b->spec->desc->name, (unsigned long long)b->got,
                      (unsigned long long)b->total);
  if (bulk_len) *bulk_len = (size_t)b->total;
  return MDL_OK;
}

/* --- channel arguments --------------------------------------------------- */

typedef struct argv_builder {
  grpc_arg a[24];
  int n;
} argv_builder;

static void arg_int(argv_builder *b, const char *key, int v) {
  b->a[b->n].type = GRPC_ARG_INTEGER;
  b->a[b->n].key = (char *)key;
  b->a[b->n].value.integer = v;
  b->n++;
}

static void arg_str(argv_builder *b, const char *key, const char *v) {
  b->a[b->n].type = GRPC_ARG_STRING;
  b->a[b->n].key = (char *)key;
  b->a[b->n].value.string = (char *)v;
  b->n++;
}

static int msg_limit(size_t max) {
  if (max == 0 || max > (size_t)INT32_MAX) return INT32_MAX;
  return (int)max;
}

/* --- server -------------------------------------------------------------- */

enum { TAG_REQUEST, TAG_RECV, TAG_CLOSE, TAG_SENT, TAG_STEP, TAG_SHUTDOWN };

typedef struct srv_tag {
  int kind;
  void *owner;
} srv_tag;

struct mdl_rpc_call_ctx {
  mdl_rpc_server *s;
  grpc_call *call;
  grpc_call_details details;
  grpc_metadata_array md;
  grpc_byte_buffer *req;
  grpc_byte_buffer *reply;
  grpc_slice status_details;
  bool has_status_details;
  int cancelled_recv; /* RECV_CLOSE_ON_SERVER's output */
  volatile int cancelled;
  bool close_started, close_done, sent_done, has_thread, stop_server;
  /* A streamed call ("memdl-stream" metadata): chunks follow the request;
   * the reply's bulk streams too from reply_min bytes, in chunk-byte pieces. */
  bool stream;
  size_t reply_min, chunk;
  /* The handler thread's own ops on a streamed call, one at a time: it
   * starts one, the poller signals its completion (t_step). */
  pthread_mutex_t step_mu;
  pthread_cond_t step_cv;
  bool step_done, step_ok, md_sent;
  grpc_byte_buffer *step_msg;
  mdl_rpc_code code;
  const mdl_rpc_method *m;
  char *peer;
  pthread_t thread;
  srv_tag t_req, t_recv, t_close, t_sent, t_step;
  struct mdl_rpc_call_ctx *next, *prev;
};

struct mdl_rpc_server {
  grpc_server *srv;
  grpc_completion_queue *cq;
  mdl_rpc_server_opts o;
  char *token;
  size_t token_len;
  int port;
  volatile sig_atomic_t stop_flag;
  atomic_int handler_stop;
  bool shut;
  pthread_mutex_t serial;  /* handlers (and the encoding of their replies) one at a time */
  mdl_rpc_call_ctx *calls; /* every call struct alive, requested or active */
  int active;              /* calls between arrival and release */
  bool armed;              /* a call succeeded: the idle timeout counts */
  double last_activity;
  srv_tag t_shutdown;
  bool shutdown_done;
  FILE *log;
};

static void srv_log(mdl_rpc_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void srv_log(mdl_rpc_server *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  mdl_vlogf(s->log, "memdl rpc: ", fmt, ap);
  va_end(ap);
}

static mdl_status server_creds(const mdl_rpc_security *sec, grpc_server_credentials **out,
                               mdl_error *err) {
  *out = NULL;
  if (!sec->tls_cert && !sec->tls_key) {
    if (sec->require_client_cert)
      return mdl_errorf(err, MDL_ERR_INVALID, "client certificates need TLS (--tls-cert)");
    *out = grpc_insecure_server_credentials_create();
    return MDL_OK;
  }
  if (!sec->tls_cert || !sec->tls_key)
    return mdl_errorf(err, MDL_ERR_INVALID, "TLS needs both a certificate and a key");
  char *cert = NULL, *key = NULL, *ca = NULL;
  mdl_status st = read_text("TLS certificate", sec->tls_cert, &cert, NULL, err);
  if (st == MDL_OK) st = read_text("TLS key", sec->tls_key, &key, NULL, err);
  if (st == MDL_OK && sec->tls_ca) st = read_text("TLS CA", sec->tls_ca, &ca, NULL, err);
  if (st == MDL_OK && sec->require_client_cert && !ca)
    st = mdl_errorf(err, MDL_ERR_INVALID, "requiring client certificates needs a CA (--tls-ca)");
  if (st == MDL_OK) {
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    *out = grpc_ssl_server_credentials_create_ex(
        ca, &pair, 1,
        sec->require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                 : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
    if (!*out) st = mdl_errorf(err, MDL_ERR_INVALID, "TLS: the certificate or key is unusable");
  }
  free(cert);
  free(key);
  free(ca);
  return st;
}

static void request_next(mdl_rpc_server *s);

mdl_status mdl_rpc_server_new(const char *addr, const mdl_rpc_server_opts *opts,
                              mdl_rpc_server **out, mdl_error *err) {
  *out = NULL;
  FILE *log = opts->log ? opts->log : stderr;
  mdl_status st = mdl_rpc_check_transport(addr, &opts->sec, log, err);
  if (st != MDL_OK) return st;
  grpc_server_credentials *creds;
  st = server_creds(&opts->sec, &creds, err);
  if (st != MDL_OK) return st;

  mdl_rpc_server *s = mdl_xcalloc(1, sizeof *s);
  s->o = *opts;
  s->log = log;
  if (opts->sec.token) {
    s->token = mdl_xmalloc(opts->sec.token_len + 1);
    memcpy(s->token, opts->sec.token, opts->sec.token_len);
    s->token[opts->sec.token_len] = 0;
    s->token_len = opts->sec.token_len;
  }
  s->o.sec.token = NULL; /* the copy above is the one used */
  pthread_mutex_init(&s->serial, NULL);
  atomic_init(&s->handler_stop, 0);
  s->t_shutdown.kind = TAG_SHUTDOWN;
  s->t_shutdown.owner = s;

  mdl_rpc_init();
  int min_ping = opts->min_ping_interval_ms > 0 ? opts->min_ping_interval_ms : 100;
  argv_builder b = {.n = 0};
  arg_int(&b, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, msg_limit(opts->max_message_bytes));
  arg_int(&b, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, msg_limit(opts->max_message_bytes));
  arg_int(&b, GRPC_ARG_ALLOW_REUSEPORT, 0);
  arg_int(&b, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, min_ping);
  arg_int(&b, GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  arg_int(&b, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  arg_int(&b, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  grpc_channel_args args = {.num_args = (size_t)b.n, .args = b.a};
  s->srv = grpc_server_create(&args, NULL);
  s->cq = grpc_completion_queue_create_for_next(NULL);
  grpc_server_register_completion_queue(s->srv, s->cq, NULL);
  s->port = grpc_server_add_http2_port(s->srv, addr, creds);
  grpc_server_credentials_release(creds);
  if (s->port == 0) {
    /* never started: destroying is allowed after a shutdown of nothing */
    grpc_server_start(s->srv);
    s->shut = false;
    mdl_rpc_server_free(s);
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "cannot listen on %s (address in use, bad address or permissions)", addr);
  }
  grpc_server_start(s->srv);
  request_next(s);
  *out = s;
  return MDL_OK;
}

int mdl_rpc_server_port(const mdl_rpc_server *s) {
  return s->port > 1 ? s->port : 0;
}

static void call_link(mdl_rpc_server *s, mdl_rpc_call_ctx *c) {
  c->next = s->calls;
  if (s->calls) s->calls->prev = c;
  s->calls = c;
}

static void call_unlink(mdl_rpc_server *s, mdl_rpc_call_ctx *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    s->calls = c->next;
  if (c->next) c->next->prev = c->prev;
}

static void request_next(mdl_rpc_server *s) {
  mdl_rpc_call_ctx *c = mdl_xcalloc(1, sizeof *c);
  c->s = s;
  grpc_call_details_init(&c->details);
  grpc_metadata_array_init(&c->md);
  c->t_req = (srv_tag){TAG_REQUEST, c};
  c->t_recv = (srv_tag){TAG_RECV, c};
  c->t_close = (srv_tag){TAG_CLOSE, c};
  c->t_sent = (srv_tag){TAG_SENT, c};
  c->t_step = (srv_tag){TAG_STEP, c};
  pthread_mutex_init(&c->step_mu, NULL);
  pthread_cond_init(&c->step_cv, NULL);
  call_link(s, c);
  grpc_call_error e =
      grpc_server_request_call(s->srv, &c->call, &c->details, &c->md, s->cq, s->cq, &c->t_req);
  if (e != GRPC_CALL_OK) {
    srv_log(s, "cannot request calls (grpc error %d)", (int)e);
    call_unlink(s, c);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    pthread_mutex_destroy(&c->step_mu);
    pthread_cond_destroy(&c->step_cv);
    free(c);
  }
}

static void call_release(mdl_rpc_call_ctx *c) {
  mdl_rpc_server *s = c->s;
  if (c->has_thread) pthread_join(c->thread, NULL);
  if (c->call) {
    s->active--;
    s->last_activity = mdl_rpc_now();
    if (c->code == MDL_RPC_OK && c->m) s->armed = true;
    if (c->stop_server && c->code == MDL_RPC_OK) s->stop_flag = 1;
    grpc_call_unref(c->call);
  }
  if (c->req) grpc_byte_buffer_destroy(c->req);
  if (c->reply) grpc_byte_buffer_destroy(c->reply);
  if (c->step_msg) grpc_byte_buffer_destroy(c->step_msg);
  pthread_mutex_destroy(&c->step_mu);
  pthread_cond_destroy(&c->step_cv);
  if (c->has_status_details) grpc_slice_unref(c->status_details);
  if (c->peer) gpr_free(c->peer);
  grpc_call_details_destroy(&c->details);
  grpc_metadata_array_destroy(&c->md);
  call_unlink(s, c);
  free(c);
}

static void maybe_release(mdl_rpc_call_ctx *c) {
  if (c->sent_done && (c->close_done || !c->close_started)) call_release(c);
}

/* Sends the reply (or only the status) and closes the call. Any thread. */
static void send_final(mdl_rpc_call_ctx *c, mdl_rpc_code code, const char *details,
                       grpc_byte_buffer *reply) {
  c->code = code;
  c->reply = reply;
  c->status_details = grpc_slice_from_copied_string(details ? details : "");
  c->has_status_details = true;
  grpc_op ops[3];
  memset(ops, 0, sizeof ops);
  int n = 0;
  if (!c->md_sent) {
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = 0;
    n++;
  }
  if (reply) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = reply;
    n++;
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.trailing_metadata_count = 0;
  ops[n].data.send_status_from_server.status = (grpc_status_code)code;
  ops[n].data.send_status_from_server.status_details = &c->status_details;
  n++;
  grpc_call_error e = grpc_call_start_batch(c->call, ops, (size_t)n, &c->t_sent, NULL);
  if (e != GRPC_CALL_OK) {
    /* cannot happen with one batch per op type; still, let the poller free */
    e = grpc_call_start_batch(c->call, NULL, 0, &c->t_sent, NULL);
    if (e != GRPC_CALL_OK) {
      fprintf(stderr, "memdl rpc: internal error: cannot complete a call (%d)\n", (int)e);
      abort();
    }
  }
}

/* On the handler thread of a streamed call: runs ops as one batch and waits
 * for the poller to see it complete. False when the call is broken
 * (cancelled, peer gone, or the batch could not start). */
static bool srv_step(mdl_rpc_call_ctx *c, grpc_op *ops, size_t n) {
  pthread_mutex_lock(&c->step_mu);
  c->step_done = false;
  pthread_mutex_unlock(&c->step_mu);
  if (grpc_call_start_batch(c->call, ops, n, &c->t_step, NULL) != GRPC_CALL_OK) return false;
  pthread_mutex_lock(&c->step_mu);
  while (!c->step_done) pthread_cond_wait(&c->step_cv, &c->step_mu);
  bool ok = c->step_ok;
  pthread_mutex_unlock(&c->step_mu);
  return ok;
}

/* The chunks of a streamed request, received one after another into the
 * method's bulk destination (serial section held). */
static mdl_status srv_recv_chunks(mdl_rpc_call_ctx *c, const mdl_rpc_in_spec *spec,
                                  size_t *bulk_len, mdl_error *err) {
  bulk_rx rx = {.spec = spec,
                .limit = (size_t)msg_limit(c->s->o.max_message_bytes),
                .head_bulk = *bulk_len > 0};
  for (;;) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->step_msg;
    if (!srv_step(c, &op, 1))
      return mdl_errorf(err, MDL_ERR_INVALID, "%s: the stream broke after %d chunks",
                        spec->desc->name, rx.chunks);
    if (!c->step_msg) break; /* the client half-closed */
    mdl_status st = chunk_take(&rx, c->step_msg, err);
    grpc_byte_buffer_destroy(c->step_msg);
    c->step_msg = NULL;
    if (st != MDL_OK) return st;
  }
  return chunks_end(&rx, bulk_len, err);
}

/* Sends head then each chunk, one op at a time (one SEND_MESSAGE pending per
 * call), destroying each buffer once sent; the status follows via
 * send_final. False when the client is gone. */
static bool srv_send_stream(mdl_rpc_call_ctx *c, grpc_byte_buffer *head, grpc_byte_buffer **chunks,
                            int n) {
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = head;
  bool ok = srv_step(c, ops, 2);
  c->md_sent = true;
  grpc_byte_buffer_destroy(head);
  for (int i = 0; i < n; i++) {
    if (ok) {
      memset(ops, 0, sizeof ops);
      ops[0].op = GRPC_OP_SEND_MESSAGE;
      ops[0].data.send_message.send_message = chunks[i];
      ok = srv_step(c, ops, 1);
    }
    grpc_byte_buffer_destroy(chunks[i]);
  }
  free(chunks);
  return ok;
}

static void *handler_main(void *arg) {
  mdl_rpc_call_ctx *c = arg;
  mdl_rpc_server *s = c->s;
  const mdl_rpc_method *m = c->m;
  mdl_error err;
  mdl_error_clear(&err);
  pthread_mutex_lock(&s->serial);
  ProtobufCMessage *req = NULL;
  size_t bulk_len = 0;
  mdl_rpc_in_spec spec = {.desc = m->req_desc,
                          .bulk_field = m->req_bulk_field,
                          .bulk_dest = m->req_bulk_dest,
                          .bulk_ctx = s->o.ctx,
                          .max_bytes = m->req_max_bytes};
  mdl_status st = decode_bb(c->req, &spec, &req, &bulk_len, &err);
  grpc_byte_buffer_destroy(c->req);
  c->req = NULL;
  if (st == MDL_OK && c->stream) st = srv_recv_chunks(c, &spec, &bulk_len, &err);
  if (st != MDL_OK) {
    pthread_mutex_unlock(&s->serial);
    if (req) protobuf_c_message_free_unpacked(req, NULL);
    srv_log(s, "rejected %s from %s: %s", m->name, c->peer, err.msg);
    /* as gRPC refuses a unary message over the limit */
    send_final(c, st == MDL_ERR_NOMEM ? MDL_RPC_RESOURCE_EXHAUSTED : MDL_RPC_INVALID_ARGUMENT,
               err.msg, NULL);
    return NULL;
  }
  mdl_rpc_out reply = {0};
  st = m->handler(s->o.ctx, c, req, bulk_len, &reply, &err);
  protobuf_c_message_free_unpacked(req, NULL);
  grpc_byte_buffer *bb = NULL, **chunks = NULL;
  int n_chunks = 0;
  if (st == MDL_OK && c->stream && !reply.raw && reply.bulk_field && reply.bulk_len > 0 &&
      reply.bulk_len >= c->reply_min) {
    mdl_rpc_out head = reply;
    head.bulk_field = 0;
    bb = encode_bb(&head);
    chunks = encode_chunks(&reply, c->chunk, &n_chunks);
  } else if (st == MDL_OK) {
    bb = encode_bb(&reply);
  }
  pthread_mutex_unlock(&s->serial);
  if (st != MDL_OK) {
    if (!c->cancelled) srv_log(s, "%s from %s failed: %s", m->name, c->peer, err.msg);
    send_final(c, mdl_rpc_code_for(st), err.msg, NULL);
  } else if (chunks) {
    bool ok = srv_send_stream(c, bb, chunks, n_chunks);
    send_final(c, ok ? MDL_RPC_OK : MDL_RPC_CANCELLED, ok ? "" : "reply stream broken", NULL);
  } else {
    send_final(c, MDL_RPC_OK, "", bb);
  }
  return NULL;
}

/* "MIN CHUNK" from a streamed call's metadata. */
static bool parse_stream_md(mdl_rpc_call_ctx *c, const grpc_slice *v) {
  char buf[64];
  size_t n = GRPC_SLICE_LENGTH(*v);
  if (n == 0 || n >= sizeof buf) return false;
  memcpy(buf, GRPC_SLICE_START_PTR(*v), n);
  buf[n] = 0;
  char *end;
  errno = 0;
  unsigned long long min = strtoull(buf, &end, 10);
  if (end == buf || *end != ' ' || errno) return false;
  char *p = end + 1;
  unsigned long long chunk = strtoull(p, &end, 10);
  if (end == p || *end || errno || min == 0 || chunk < CHUNK_MIN || chunk > CHUNK_MAX) return false;
  c->stream = true;
  c->reply_min = (size_t)min;
  c->chunk = (size_t)chunk;
  return true;
}

static void on_request(mdl_rpc_server *s, mdl_rpc_call_ctx *c, bool ok) {
  if (!ok) { /* shutting down: the request never got a call */
    c->call = NULL;
    call_release(c);
    return;
  }
  s->active++;
  s->last_activity = mdl_rpc_now();
  if (!s->stop_flag && !atomic_load(&s->handler_stop)) request_next(s);
  c->peer = grpc_call_get_peer(c->call);

  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &c->cancelled_recv;
  if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) == GRPC_CALL_OK)
    c->close_started = true;

  for (int i = 0; i < s->o.n_methods; i++)
    if (!grpc_slice_str_cmp(c->details.method, s->o.methods[i].name)) c->m = &s->o.methods[i];
  if (s->token) {
    const grpc_slice *got = NULL;
    for (size_t i = 0; i < c->md.count; i++)
      if (!grpc_slice_str_cmp(c->md.metadata[i].key, TOKEN_KEY)) got = &c->md.metadata[i].value;
    bool good = got && token_equal(s->token, s->token_len, GRPC_SLICE_START_PTR(*got),
                                   GRPC_SLICE_LENGTH(*got));
    if (!good) {
      char *method = grpc_slice_to_c_string(c->details.method);
      srv_log(s, "refused %s from %s: %s token", method, c->peer, got ? "wrong" : "no");
      gpr_free(method);
      c->m = NULL;
      send_final(c, MDL_RPC_UNAUTHENTICATED, "refused: missing or wrong token", NULL);
      return;
    }
  }
  for (size_t i = 0; i < c->md.count; i++)
    if (!grpc_slice_str_cmp(c->md.metadata[i].key, STREAM_KEY) &&
        !parse_stream_md(c, &c->md.metadata[i].value)) {
      srv_log(s, "refused a call from %s: malformed " STREAM_KEY " metadata", c->peer);
      c->m = NULL;
      send_final(c, MDL_RPC_INVALID_ARGUMENT, "malformed " STREAM_KEY " metadata", NULL);
      return;
    }
  if (!c->m) {
    char *method = grpc_slice_to_c_string(c->details.method);
    char msg[300];
    snprintf(msg, sizeof msg, "unknown method %.250s", method);
    srv_log(s, "refused %s from %s: unknown method", method, c->peer);
    gpr_free(method);
    send_final(c, MDL_RPC_UNIMPLEMENTED, msg, NULL);
    return;
  }
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->req;
  if (grpc_call_start_batch(c->call, &op, 1, &c->t_recv, NULL) != GRPC_CALL_OK)
    send_final(c, MDL_RPC_INTERNAL, "cannot receive the request", NULL);
}

static void on_recv(mdl_rpc_server *s, mdl_rpc_call_ctx *c, bool ok) {
  if (!ok || !c->req) {
    send_final(c, MDL_RPC_INVALID_ARGUMENT, "no request message", NULL);
    return;
  }
  if (pthread_create(&c->thread, NULL, handler_main, c) != 0) {
    send_final(c, MDL_RPC_RESOURCE_EXHAUSTED, "cannot start a handler thread", NULL);
    return;
  }
  c->has_thread = true;
}

static void dispatch(mdl_rpc_server *s, void *tag, bool ok) {
  srv_tag *t = tag;
  if (t->kind == TAG_SHUTDOWN) {
    s->shutdown_done = true;
    return;
  }
  mdl_rpc_call_ctx *c = t->owner;
  switch (t->kind) {
    case TAG_REQUEST:
      on_request(s, c, ok);
      break;
    case TAG_RECV:
      on_recv(s, c, ok);
      break;
    case TAG_CLOSE:
      c->close_done = true;
      if (c->cancelled_recv) c->cancelled = 1;
      maybe_release(c);
      break;
    case TAG_SENT:
      c->sent_done = true;
      maybe_release(c);
      break;
    case TAG_STEP:
      pthread_mutex_lock(&c->step_mu);
      c->step_done = true;
      c->step_ok = ok;
      pthread_cond_signal(&c->step_cv);
      pthread_mutex_unlock(&c->step_mu);
      break;
  }
}

static void server_shutdown(mdl_rpc_server *s) {
  if (s->shut) return;
  s->shut = true;
  grpc_server_shutdown_and_notify(s->srv, s->cq, &s->t_shutdown);
  grpc_server_cancel_all_calls(s->srv);
  while (!s->shutdown_done || s->calls) {
    grpc_event ev = grpc_completion_queue_next(s->cq, deadline_in(POLL_MS), NULL);
    if (ev.type == GRPC_OP_COMPLETE) dispatch(s, ev.tag, ev.success);
  }
  grpc_server_destroy(s->srv);
  s->srv = NULL;
  grpc_completion_queue_shutdown(s->cq);
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
  }
  grpc_completion_queue_destroy(s->cq);
  s->cq = NULL;
}

mdl_status mdl_rpc_server_run(mdl_rpc_server *s, bool *idle, mdl_error *err) {
  if (idle) *idle = false;
  if (s->shut) return mdl_errorf(err, MDL_ERR_INTERNAL, "rpc: server already shut down");
  while (!s->stop_flag) {
    grpc_event ev = grpc_completion_queue_next(s->cq, deadline_in(POLL_MS), NULL);
    if (ev.type == GRPC_OP_COMPLETE) dispatch(s, ev.tag, ev.success);
    if (atomic_load(&s->handler_stop) && s->active == 0) break;
    if (s->o.idle_timeout_ms > 0 && s->armed && s->active == 0 &&
        (mdl_rpc_now() - s->last_activity) * 1000.0 > s->o.idle_timeout_ms) {
      if (idle) *idle = true;
      break;
    }
  }
  server_shutdown(s);
  return MDL_OK;
}

void mdl_rpc_server_stop(mdl_rpc_server *s) {
  if (s) s->stop_flag = 1;
}

void mdl_rpc_server_free(mdl_rpc_server *s) {
  if (!s) return;
  if (s->srv) server_shutdown(s);
  pthread_mutex_destroy(&s->serial);
  free(s->token);
  free(s);
  mdl_rpc_shutdown();
}

bool mdl_rpc_call_cancelled(const mdl_rpc_call_ctx *c) {
  return c->cancelled != 0;
}
const volatile int *mdl_rpc_call_cancel_flag(const mdl_rpc_call_ctx *c) {
  return &c->cancelled;
}
const char *mdl_rpc_call_peer(const mdl_rpc_call_ctx *c) {
  return c->peer ? c->peer : "?";
}

void mdl_rpc_call_stop_server(mdl_rpc_call_ctx *c) {
  c->stop_server = true;
  atomic_store(&c->s->handler_stop, 1);
}

/* --- client -------------------------------------------------------------- */

struct mdl_rpc_channel {
  grpc_channel *ch;
  char *target;
  char *token;
  size_t token_len;
};

mdl_status mdl_rpc_channel_new(const char *target, const mdl_rpc_channel_opts *opts,
                               mdl_rpc_channel **out, mdl_error *err) {
  *out = NULL;
  const mdl_rpc_security *sec = &opts->sec;
  mdl_status st = mdl_rpc_check_transport(target, sec, stderr, err);
  if (st != MDL_OK) return st;
  grpc_channel_credentials *creds = NULL;
  if (sec->tls_ca || sec->tls_cert) {
    char *ca = NULL, *cert = NULL, *key = NULL;
    if (!sec->tls_ca) return mdl_errorf(err, MDL_ERR_INVALID, "TLS needs the CA (--tls-ca)");
    st = read_text("TLS CA", sec->tls_ca, &ca, NULL, err);
    if (st == MDL_OK && sec->tls_cert) {
      if (!sec->tls_key)
        st = mdl_errorf(err, MDL_ERR_INVALID, "a client certificate needs its key (--tls-key)");
      if (st == MDL_OK) st = read_text("TLS certificate", sec->tls_cert, &cert, NULL, err);
      if (st == MDL_OK) st = read_text("TLS key", sec->tls_key, &key, NULL, err);
    }
    if (st == MDL_OK) {
      grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
      creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
      if (!creds) st = mdl_errorf(err, MDL_ERR_INVALID, "TLS: unusable CA or certificate");
    }
    free(ca);
    free(cert);
    free(key);
    if (st != MDL_OK) return st;
  }
  mdl_rpc_init();
  if (!creds) creds = grpc_insecure_credentials_create();
  int ka = opts->keepalive_ms > 0 ? opts->keepalive_ms : 2000;
  int kt = opts->keepalive_timeout_ms > 0 ? opts->keepalive_timeout_ms : 3000;
  argv_builder b = {.n = 0};
  arg_int(&b, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, msg_limit(opts->max_message_bytes));
  arg_int(&b, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, msg_limit(opts->max_message_bytes));
  arg_int(&b, GRPC_ARG_KEEPALIVE_TIME_MS, ka);
  arg_int(&b, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kt);
  arg_int(&b, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  arg_int(&b, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  arg_int(&b, GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, ka);
  arg_int(&b, GRPC_ARG_ENABLE_RETRIES, 0);
  arg_int(&b, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  /* workers start while the driver connects: retry soon, not after 1 s */
  arg_int(&b, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  arg_int(&b, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  arg_int(&b, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  if (opts->tls_server_name) arg_str(&b, GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, opts->tls_server_name);
  grpc_channel_args args = {.num_args = (size_t)b.n, .args = b.a};
  mdl_rpc_channel *c = mdl_xcalloc(1, sizeof *c);
  c->ch = grpc_channel_create(target, creds, &args);
  grpc_channel_credentials_release(creds);
  c->target = mdl_xstrdup(target);
  if (sec->token) {
    c->token = mdl_xmalloc(sec->token_len + 1);
    memcpy(c->token, sec->token, sec->token_len);
    c->token[sec->token_len] = 0;
    c->token_len = sec->token_len;
  }
  *out = c;
  return MDL_OK;
}

void mdl_rpc_channel_free(mdl_rpc_channel *c) {
  if (!c) return;
  grpc_channel_destroy(c->ch);
  free(c->target);
  free(c->token);
  free(c);
  mdl_rpc_shutdown();
}

const char *mdl_rpc_channel_target(const mdl_rpc_channel *c) {
  return c->target;
}

enum { CLI_ALL, CLI_SEND, CLI_RECV, CLI_STATUS };

typedef struct cli_call cli_call;
typedef struct cli_tag {
  int kind;
  cli_call *k;
} cli_tag;

/* A unary call is one batch (CLI_ALL). A streamed one runs three chains:
 * sends (head, then each chunk, the last with the half-close), receives
 * (head, then chunks until the stream ends) and the status; each chain has
 * at most one op pending and starts the next from its completion. */
struct cli_call {
  grpc_call *call;
  grpc_byte_buffer *send;
  grpc_byte_buffer *recv;
  grpc_metadata_array initial_md, trailing_md;
  grpc_status_code status;
  grpc_slice details;
  grpc_metadata md[2];
  int n_md;
  bool started, done;
  bool stream;
  grpc_byte_buffer **chunks;
  int n_chunks, next_chunk;
  bool send_busy, recv_busy, status_busy, closed;
  int msgs;
  bulk_rx rx;
  bool failed; /* a reply message was malformed: detail says why */
  char fail[480];
  cli_tag t_all, t_send, t_recv, t_status;
};

void mdl_rpc_calls_clear(mdl_rpc_call *calls, int n) {
  for (int i = 0; i < n; i++) {
    if (calls[i].reply) protobuf_c_message_free_unpacked(calls[i].reply, NULL);
    calls[i].reply = NULL;
    calls[i].bulk_len = 0;
  }
}

static void finish_call(mdl_rpc_call *c, cli_call *cc, double t0) {
  c->seconds = mdl_rpc_now() - t0;
  c->code = (mdl_rpc_code)cc->status;
  char *d = grpc_slice_to_c_string(cc->details);
  snprintf(c->detail, sizeof c->detail, "%s", d);
  gpr_free(d);
  if (cc->stream) {
    if (cc->failed) {
      mdl_rpc_calls_clear(c, 1);
      c->code = MDL_RPC_DATA_LOSS;
      snprintf(c->detail, sizeof c->detail, "malformed reply: %s", cc->fail);
      return;
    }
    if (c->code != MDL_RPC_OK) {
      mdl_rpc_calls_clear(c, 1);
      return;
    }
    if (!c->reply) {
      c->code = MDL_RPC_DATA_LOSS;
      snprintf(c->detail, sizeof c->detail, "no reply message");
    }
    return;
  }
  if (c->code != MDL_RPC_OK) return;
  if (!cc->recv) {
    c->code = MDL_RPC_DATA_LOSS;
    snprintf(c->detail, sizeof c->detail, "no reply message");
    return;
  }
  mdl_error err;
  mdl_error_clear(&err);
  if (decode_bb(cc->recv, &c->reply_spec, &c->reply, &c->bulk_len, &err) != MDL_OK) {
    c->code = MDL_RPC_DATA_LOSS;
    snprintf(c->detail, sizeof c->detail, "malformed reply: %.480s", err.msg);
  }
}

/* Sends the next chunk of a streamed call (the last with the half-close). */
static void cli_send_next(cli_call *k) {
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  int n = 0;
  if (k->next_chunk < k->n_chunks) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = k->chunks[k->next_chunk++];
    n++;
  }
  if (k->next_chunk == k->n_chunks) {
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    k->closed = true;
  }
  k->send_busy = grpc_call_start_batch(k->call, ops, (size_t)n, &k->t_send, NULL) == GRPC_CALL_OK;
}

static void cli_recv_next(cli_call *k) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &k->recv;
  k->recv_busy = grpc_call_start_batch(k->call, &op, 1, &k->t_recv, NULL) == GRPC_CALL_OK;
}

static void cli_fail(cli_call *k, const mdl_error *err) {
  k->failed = true;
  snprintf(k->fail, sizeof k->fail, "%.470s", err->msg);
  grpc_call_cancel(k->call, NULL);
}

/* One completion of a streamed call; true when the call is over. */
static bool cli_stream_event(mdl_rpc_call *c, cli_call *k, int kind, bool ok) {
  switch (kind) {
    case CLI_SEND:
      k->send_busy = false;
      if (ok && !k->failed && !k->closed) cli_send_next(k);
      break;
    case CLI_RECV: {
      k->recv_busy = false;
      if (!ok || !k->recv || k->failed) {
        if (!k->failed && c->reply) {
          mdl_error err;
          mdl_error_clear(&err);
          if (chunks_end(&k->rx, &c->bulk_len, &err) != MDL_OK) cli_fail(k, &err);
        }
        break;
      }
      mdl_error err;
      mdl_error_clear(&err);
      mdl_status st;
      if (k->msgs++ == 0) {
        st = decode_bb(k->recv, &c->reply_spec, &c->reply, &c->bulk_len, &err);
        k->rx.head_bulk = c->bulk_len > 0;
      } else {
        st = chunk_take(&k->rx, k->recv, &err);
      }
      grpc_byte_buffer_destroy(k->recv);
      k->recv = NULL;
      if (st != MDL_OK)
        cli_fail(k, &err);
      else
        cli_recv_next(k);
      break;
    }
    case CLI_STATUS:
      k->status_busy = false;
      break;
  }
  return !k->send_busy && !k->recv_busy && !k->status_busy;
}

/* Starts a streamed call's three chains. False if gRPC refused them. */
static bool cli_stream_start(mdl_rpc_call *c, cli_call *k) {
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = (size_t)k->n_md;
  ops[0].data.send_initial_metadata.metadata = k->md;
  if (c->wait_for_ready) ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = k->send;
  if (grpc_call_start_batch(k->call, ops, 2, &k->t_send, NULL) != GRPC_CALL_OK) return false;
  k->send_busy = true;
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[0].data.recv_status_on_client.trailing_metadata = &k->trailing_md;
  ops[0].data.recv_status_on_client.status = &k->status;
  ops[0].data.recv_status_on_client.status_details = &k->details;
  if (grpc_call_start_batch(k->call, ops, 1, &k->t_status, NULL) != GRPC_CALL_OK) {
    grpc_call_cancel(k->call, NULL);
    return true; /* the send completes (failed); no status: reported below */
  }
  k->status_busy = true;
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[0].data.recv_initial_metadata.recv_initial_metadata = &k->initial_md;
  ops[1].op = GRPC_OP_RECV_MESSAGE;
  ops[1].data.recv_message.recv_message = &k->recv;
  if (grpc_call_start_batch(k->call, ops, 2, &k->t_recv, NULL) == GRPC_CALL_OK)
    k->recv_busy = true;
  else
    grpc_call_cancel(k->call, NULL);
  return true;
}

mdl_status mdl_rpc_call_all(mdl_rpc_call *calls, int n, int deadline_ms,
                            const volatile sig_atomic_t *abort_flag, mdl_error *err) {
  if (n <= 0) return MDL_OK;
  double t0 = mdl_rpc_now();
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  gpr_timespec deadline = deadline_in(deadline_ms);
  cli_call *cc = mdl_xcalloc((size_t)n, sizeof *cc);
  int pending = 0;
  mdl_status st = MDL_OK;
  for (int i = 0; i < n; i++) {
    mdl_rpc_call *c = &calls[i];
    cli_call *k = &cc[i];
    c->reply = NULL;
    c->bulk_len = 0;
    c->detail[0] = 0;
    c->code = MDL_RPC_UNKNOWN;
    grpc_metadata_array_init(&k->initial_md);
    grpc_metadata_array_init(&k->trailing_md);
    k->details = grpc_empty_slice();
    k->status = GRPC_STATUS_UNKNOWN;
    k->t_all = (cli_tag){CLI_ALL, k};
    k->t_send = (cli_tag){CLI_SEND, k};
    k->t_recv = (cli_tag){CLI_RECV, k};
    k->t_status = (cli_tag){CLI_STATUS, k};
    k->rx.spec = &c->reply_spec;
    k->call =
        grpc_channel_create_call(c->ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                 grpc_slice_from_static_string(c->method), NULL, deadline, NULL);
    if (!k->call) {
      c->code = MDL_RPC_INTERNAL;
      snprintf(c->detail, sizeof c->detail, "cannot create the call");
      continue;
    }
    size_t bulk = c->req.bulk_field && !c->req.raw ? c->req.bulk_len : 0;
    k->stream = c->req.raw_chunks || stream_bulk(c->stream, bulk);
    if (c->ch->token) {
      k->md[k->n_md].key = grpc_slice_from_static_string(TOKEN_KEY);
      k->md[k->n_md].value = grpc_slice_from_copied_buffer(c->ch->token, c->ch->token_len);
      k->n_md++;
    }
    if (k->stream) {
      char v[64];
      /* the reply streams by the same rule as the request */
      size_t reply_min = c->stream > 0 ? 1 : g_stream_min;
      snprintf(v, sizeof v, "%zu %zu", reply_min, g_chunk);
      k->md[k->n_md].key = grpc_slice_from_static_string(STREAM_KEY);
      k->md[k->n_md].value = grpc_slice_from_copied_string(v);
      k->n_md++;
      mdl_rpc_out head = c->req;
      head.bulk_field = 0;
      k->send = encode_bb(&head);
      k->chunks = encode_chunks(&c->req, g_chunk, &k->n_chunks);
      if (!cli_stream_start(c, k)) {
        c->code = MDL_RPC_INTERNAL;
        snprintf(c->detail, sizeof c->detail, "cannot start the call");
        continue;
      }
      k->started = true;
      pending++;
      continue;
    }
    k->send = encode_bb(&c->req);
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = (size_t)k->n_md;
    ops[0].data.send_initial_metadata.metadata = k->md;
    if (c->wait_for_ready) ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = k->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &k->initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &k->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &k->trailing_md;
    ops[5].data.recv_status_on_client.status = &k->status;
    ops[5].data.recv_status_on_client.status_details = &k->details;
    grpc_call_error e = grpc_call_start_batch(k->call, ops, 6, &k->t_all, NULL);
    if (e != GRPC_CALL_OK) {
      c->code = MDL_RPC_INTERNAL;
      snprintf(c->detail, sizeof c->detail, "cannot start the call (grpc error %d)", (int)e);
      continue;
    }
    k->started = true;
    pending++;
  }
  bool aborted = false;
  while (pending > 0) {
    grpc_event ev = grpc_completion_queue_next(cq, deadline_in(POLL_MS), NULL);
    if (ev.type == GRPC_OP_COMPLETE) {
      cli_tag *t = ev.tag;
      cli_call *k = t->k;
      int i = (int)(k - cc);
      bool over = t->kind == CLI_ALL || cli_stream_event(&calls[i], k, t->kind, ev.success != 0);
      if (over) {
        k->done = true;
        pending--;
        finish_call(&calls[i], k, t0);
      }
    }
    if (!aborted && abort_flag && *abort_flag) {
      aborted = true;
      for (int i = 0; i < n; i++)
        if (cc[i].started && !cc[i].done) grpc_call_cancel(cc[i].call, NULL);
    }
  }
  for (int i = 0; i < n; i++) {
    cli_call *k = &cc[i];
    if (k->call) grpc_call_unref(k->call);
    if (k->send) grpc_byte_buffer_destroy(k->send);
    if (k->recv) grpc_byte_buffer_destroy(k->recv);
    for (int j = 0; j < k->n_chunks; j++) grpc_byte_buffer_destroy(k->chunks[j]);
    free(k->chunks);
    for (int j = 0; j < k->n_md; j++) grpc_slice_unref(k->md[j].value);
    grpc_metadata_array_destroy(&k->initial_md);
    grpc_metadata_array_destroy(&k->trailing_md);
    grpc_slice_unref(k->details);
  }
  free(cc);
  grpc_completion_queue_shutdown(cq);
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
  }
  grpc_completion_queue_destroy(cq);
  if (aborted) {
    mdl_rpc_calls_clear(calls, n);
    st = mdl_errorf(err, MDL_ERR_INTERNAL, "interrupted");
  }
  return st;
}
