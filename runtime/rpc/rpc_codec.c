/* How memdl's messages travel through gRPC C core (see rpc.h): zero-copy
 * bulk fields and their pins, flat and chunked encoding and decoding over
 * gRPC's slices, when a bulk streams, status codes, init. Facts relied on
 * are in shared/notes/grpc-c-core.md. Opens no connection. */
#define _GNU_SOURCE
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "common/log.h"
#include "runtime/rpc/rpc_internal.h"

/* --- small helpers ------------------------------------------------------- */

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
    case MDL_ERR_DIVERGED: /* any worker would fail so: the driver stops the run */
      return MDL_RPC_FAILED_PRECONDITION;
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
static size_t g_stream_min = STREAM_MIN_DEFAULT; /* 0: never */
static size_t g_chunk = CHUNK_DEFAULT;

bool mdl_rpc_stream_bulk(int force, size_t bulk_len) {
  if (force) return force > 0;
  return g_stream_min > 0 && bulk_len >= g_stream_min;
}

size_t mdl_rpc_stream_min(void) {
  return g_stream_min;
}

size_t mdl_rpc_chunk_bytes(void) {
  return g_chunk;
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

/* The message without its bulk, followed by the bulk field's tag and length:
 * concatenated protobuf encodings merge, so this plus the bulk bytes is the
 * whole message. */
static uint8_t *encode_head(const mdl_rpc_out *m, size_t *len) {
  size_t body = m->msg ? protobuf_c_message_get_packed_size(m->msg) : 0;
  uint8_t *buf = mdl_xmalloc(body + 24);
  if (m->msg) protobuf_c_message_pack(m->msg, buf);
  size_t n = body;
  if (m->bulk_field) {
    n += mdl_rpc_put_varint(buf + n, ((uint64_t)m->bulk_field << 3) | 2);
    n += mdl_rpc_put_varint(buf + n, m->bulk_len);
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

grpc_byte_buffer *mdl_rpc_encode_bb(const mdl_rpc_out *m) {
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
  n += mdl_rpc_put_varint(p + n, offset);
  p[n++] = (2 << 3) | 0;
  n += mdl_rpc_put_varint(p + n, total);
  p[n++] = (3 << 3) | 2;
  n += mdl_rpc_put_varint(p + n, len);
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
 * when m has a pin (the same contract as mdl_rpc_encode_bb). */
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

grpc_byte_buffer **mdl_rpc_encode_chunks(const mdl_rpc_out *m, size_t chunk, int *n) {
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

/* --- decoding (over rpc_wire.c) ------------------------------------------ */

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

mdl_status mdl_rpc_decode_bb(grpc_byte_buffer *bb, const mdl_rpc_in_spec *spec,
                             ProtobufCMessage **msg, size_t *bulk_len, mdl_error *err) {
  *msg = NULL;
  bb_view v;
  if (!bb_view_init(&v, bb))
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: unreadable message", spec->desc->name);
  mdl_rpc_segs s = {.p = v.p, .n = v.n, .count = v.count, .left = v.total};
  mdl_status st = mdl_rpc_decode_segs(&s, spec, msg, bulk_len, err);
  bb_view_free(&v);
  return st;
}

mdl_status mdl_rpc_chunk_take(mdl_rpc_bulk_rx *b, grpc_byte_buffer *bb, mdl_error *err) {
  bb_view v;
  if (!bb_view_init(&v, bb))
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: unreadable chunk", b->spec->desc->name);
  mdl_rpc_segs s = {.p = v.p, .n = v.n, .count = v.count, .left = v.total};
  mdl_status st = mdl_rpc_chunk_take_segs(b, &s, err);
  bb_view_free(&v);
  return st;
}
