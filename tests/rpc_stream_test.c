/* runtime/rpc: the bulk field streamed in chunks. Streamed calls give the
 * same bits as unary ones (with and without zero-copy pins, K at once, the
 * reply streaming or not); chunks whose fields come in any order, or
 * leave out a zero offset, are accepted as protobuf allows; malformed chunk
 * sequences (gap, overlap, overflow, short total, changed total, wrong
 * size, empty, garbled or truncated chunks, chunks after a whole field) are
 * rejected with a status and the server keeps serving. Servers run in-process on a thread. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc.pb-c.h"
#include "runtime/rpc/rpc.h"

#define ECHO "/memdl.Test/Echo"
#define ECHO_PIN "/memdl.Test/EchoPin"
#define NOBULK "/memdl.Test/NoBulk"
#define CAP ((size_t)4 << 20)

typedef struct fx {
  mdl_rpc_server *srv;
  pthread_t th;
  uint8_t *buf;
  size_t expect; /* 0: any size up to CAP */
  mdl_rpc_pin *pin;
  Memdl__RoundReply reply;
} fx;

static bool echo_check(void *ctx, size_t len, mdl_error *err) {
  fx *f = ctx;
  if ((f->expect && len != f->expect) || len > CAP) {
    mdl_errorf(err, MDL_ERR_INVALID, "weights of %zu bytes, expected %zu", len, f->expect);
    return false;
  }
  return true;
}

static void *echo_dest(void *ctx, size_t len, mdl_error *err) {
  fx *f = ctx;
  if (!echo_check(f, len, err)) return NULL;
  mdl_rpc_pin_wait(f->pin); /* the last zero-copy reply may still be leaving */
  return f->buf;
}

/* Replies with tau in samples and the received bytes, each plus one. */
static mdl_status echo_common(fx *f, const ProtobufCMessage *m, size_t bulk_len, mdl_rpc_out *out) {
  const Memdl__RoundRequest *r = (const Memdl__RoundRequest *)m;
  for (size_t i = 0; i < bulk_len; i++) f->buf[i] = (uint8_t)(f->buf[i] + 1);
  memdl__round_reply__init(&f->reply);
  f->reply.has_samples = 1;
  f->reply.samples = r->tau;
  out->msg = &f->reply.base;
  out->bulk_field = 1;
  out->bulk = f->buf;
  out->bulk_len = bulk_len;
  return MDL_OK;
}

static mdl_status on_echo(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                          size_t bulk_len, mdl_rpc_out *out, mdl_error *err) {
  return echo_common(ctx, m, bulk_len, out);
}

static mdl_status on_echo_pin(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                              size_t bulk_len, mdl_rpc_out *out, mdl_error *err) {
  fx *f = ctx;
  echo_common(f, m, bulk_len, out);
  out->pin = f->pin;
  return MDL_OK;
}

static const mdl_rpc_method METHODS[] = {
    {ECHO, &memdl__round_request__descriptor, 5, echo_dest, 1024, on_echo, echo_check},
    {ECHO_PIN, &memdl__round_request__descriptor, 5, echo_dest, 1024, on_echo_pin, echo_check},
    {NOBULK, &memdl__round_request__descriptor, 0, NULL, 1024, on_echo},
};

static void *serve(void *arg) {
  fx *f = arg;
  mdl_error err;
  mdl_rpc_server_run(f->srv, NULL, &err);
  return NULL;
}

static FILE *g_log;

static void fx_start_max(fx *f, size_t max_message_bytes) {
  memset(f, 0, sizeof *f);
  f->buf = calloc(1, CAP);
  f->pin = mdl_rpc_pin_new();
  mdl_rpc_server_opts o = {.methods = METHODS,
                           .n_methods = 3,
                           .ctx = f,
                           .log = g_log,
                           .max_message_bytes = max_message_bytes};
  mdl_error err;
  cr_assert_eq(mdl_rpc_server_new("127.0.0.1:0", &o, &f->srv, &err), MDL_OK, "%s", err.msg);
  pthread_create(&f->th, NULL, serve, f);
}

static void fx_start(fx *f) {
  fx_start_max(f, 0);
}

static void fx_stop(fx *f) {
  mdl_rpc_server_stop(f->srv);
  pthread_join(f->th, NULL);
  mdl_rpc_server_free(f->srv);
  mdl_rpc_pin_free(f->pin);
  free(f->buf);
}

static mdl_rpc_channel *chan(const fx *f) {
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", mdl_rpc_server_port(f->srv));
  mdl_rpc_channel_opts o = {.keepalive_ms = 500};
  mdl_rpc_channel *ch;
  mdl_error err;
  cr_assert_eq(mdl_rpc_channel_new(addr, &o, &ch, &err), MDL_OK, "%s", err.msg);
  return ch;
}

typedef struct sink {
  uint8_t *buf;
  size_t cap;
} sink;

static void *sink_dest(void *ctx, size_t len, mdl_error *err) {
  sink *s = ctx;
  if (len > s->cap) {
    mdl_errorf(err, MDL_ERR_INVALID, "too large");
    return NULL;
  }
  return s->buf;
}

static Memdl__RoundRequest g_req = MEMDL__ROUND_REQUEST__INIT;

static void call_init(mdl_rpc_call *c, mdl_rpc_channel *ch, const char *method, const void *bulk,
                      size_t len, int stream, sink *out) {
  memdl__round_request__init(&g_req);
  g_req.has_tau = 1;
  g_req.tau = 7;
  memset(c, 0, sizeof *c);
  c->ch = ch;
  c->method = method;
  c->req.msg = &g_req.base;
  c->req.bulk_field = 5;
  c->req.bulk = bulk;
  c->req.bulk_len = len;
  c->reply_spec.desc = &memdl__round_reply__descriptor;
  c->reply_spec.bulk_field = 1;
  c->reply_spec.bulk_dest = sink_dest;
  c->reply_spec.bulk_ctx = out;
  c->reply_spec.max_bytes = 1024;
  c->wait_for_ready = true;
  c->stream = stream;
}

static void run(mdl_rpc_call *c, int n) {
  mdl_error err;
  cr_assert_eq(mdl_rpc_call_all(c, n, 10000, NULL, &err), MDL_OK, "%s", err.msg);
}

/* Streams from 64 KiB in chunks of 64 KiB (read once by mdl_rpc_init). */
static void setup(void) {
  setenv("MDL_RPC_STREAM_MIN", "65536", 1);
  setenv("MDL_RPC_CHUNK", "65536", 1);
  g_log = tmpfile();
  mdl_rpc_init();
}

static void teardown(void) {
  mdl_rpc_shutdown();
  if (g_log) fclose(g_log);
}

TestSuite(rpc_stream, .init = setup, .fini = teardown, .timeout = 30);

Test(rpc_stream, streamed_calls_give_the_same_bits_as_unary) {
  fx f;
  fx_start(&f);
  mdl_rpc_channel *ch = chan(&f);
  /* sizes: below the threshold, one byte short of a chunk multiple, many chunks */
  static const size_t sizes[] = {1000, 65536 * 3 - 1, 3 * 1000 * 1000 + 12};
  uint8_t *in = malloc(CAP), *out[3];
  for (size_t i = 0; i < CAP; i++) in[i] = (uint8_t)(i * 2654435761u >> 13);
  for (int m = 0; m < 2; m++) {
    const char *method = m ? ECHO_PIN : ECHO;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
      size_t len = sizes[si];
      for (int mode = 0; mode < 3; mode++) { /* unary, by the rule, streamed */
        out[mode] = calloc(1, len);
        sink sk = {out[mode], len};
        mdl_rpc_call c;
        call_init(&c, ch, method, in, len, mode - 1, &sk);
        run(&c, 1);
        cr_assert_eq(c.code, MDL_RPC_OK, "%s %zu mode %d: %s %s", method, len, mode,
                     mdl_rpc_code_name(c.code), c.detail);
        cr_assert_eq(c.bulk_len, len);
        cr_assert_eq(((Memdl__RoundReply *)c.reply)->samples, 7);
        mdl_rpc_calls_clear(&c, 1);
      }
      for (size_t i = 0; i < len; i++) cr_assert_eq(out[0][i], (uint8_t)(in[i] + 1));
      cr_assert(!memcmp(out[0], out[1], len), "%s %zu: by the rule differs", method, len);
      cr_assert(!memcmp(out[0], out[2], len), "%s %zu: streamed differs", method, len);
      for (int mode = 0; mode < 3; mode++) free(out[mode]);
    }
  }
  /* K = 3 streamed calls at once, to three servers */
  fx g[3];
  mdl_rpc_channel *gch[3];
  mdl_rpc_call c[3];
  sink sk[3];
  size_t len = 1 << 20;
  for (int k = 0; k < 3; k++) {
    fx_start(&g[k]);
    gch[k] = chan(&g[k]);
    out[k] = calloc(1, len);
    sk[k] = (sink){out[k], len};
    call_init(&c[k], gch[k], ECHO_PIN, in, len, 1, &sk[k]);
  }
  run(c, 3);
  for (int k = 0; k < 3; k++) {
    cr_assert_eq(c[k].code, MDL_RPC_OK, "%d: %s", k, c[k].detail);
    for (size_t i = 0; i < len; i++) cr_assert_eq(out[k][i], (uint8_t)(in[i] + 1));
    mdl_rpc_calls_clear(&c[k], 1);
    mdl_rpc_channel_free(gch[k]);
    fx_stop(&g[k]);
    free(out[k]);
  }
  free(in);
  mdl_rpc_channel_free(ch);
  fx_stop(&f);
}

/* One chunk as the wire has it; kept in a small table for the call. */
typedef struct seq {
  mdl_rpc_raw raw[8];
  uint8_t *own[8];
  int n;
} seq;

static void seq_add(seq *s, uint64_t off, uint64_t total, size_t len) {
  static uint8_t data[8192];
  size_t n;
  mdl_rpc_encode_chunk(off, total, data, len, &s->own[s->n], &n);
  s->raw[s->n] = (mdl_rpc_raw){s->own[s->n], n};
  s->n++;
}

static void seq_add_raw(seq *s, const char *bytes, size_t len) {
  s->own[s->n] = malloc(len);
  memcpy(s->own[s->n], bytes, len);
  s->raw[s->n] = (mdl_rpc_raw){s->own[s->n], len};
  s->n++;
}

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  for (; v >= 0x80; v >>= 7) p[n++] = (uint8_t)(v | 0x80);
  p[n++] = (uint8_t)v;
  return n;
}

/* A BulkChunk written by hand with its fields in the order `order` spells
 * ('o' offset, 't' total, 'd' data; a letter left out: that field absent,
 * which protobuf reads as 0). */
static void seq_add_order(seq *s, const char *order, uint64_t off, uint64_t total,
                          const uint8_t *data, size_t len) {
  uint8_t *p = malloc(len + 40);
  size_t n = 0;
  for (const char *c = order; *c; c++) {
    if (*c == 'o') {
      p[n++] = 1 << 3;
      n += put_varint(p + n, off);
    } else if (*c == 't') {
      p[n++] = 2 << 3;
      n += put_varint(p + n, total);
    } else {
      p[n++] = 3 << 3 | 2;
      n += put_varint(p + n, len);
      memcpy(p + n, data, len);
      n += len;
    }
  }
  s->own[s->n] = p;
  s->raw[s->n] = (mdl_rpc_raw){p, n};
  s->n++;
}

static void seq_free(seq *s) {
  for (int i = 0; i < s->n; i++) free(s->own[i]);
}

static mdl_rpc_call send_seq(mdl_rpc_channel *ch, const char *method, seq *s, const uint8_t *head,
                             size_t head_len, sink *out) {
  mdl_rpc_call c;
  call_init(&c, ch, method, NULL, 0, 1, out);
  c.req.bulk_field = 0;
  c.req.raw = head;
  c.req.raw_len = head_len;
  c.req.raw_chunks = s->raw;
  c.req.n_raw_chunks = s->n;
  run(&c, 1);
  return c;
}

Test(rpc_stream, malformed_chunk_sequences_are_rejected_with_a_status) {
  fx f;
  fx_start(&f);
  f.expect = 4096;
  mdl_rpc_channel *ch = chan(&f);
  uint8_t back[8192];
  sink sk = {back, sizeof back};
  enum {
    GAP,
    OVERLAP,
    OVERFLOW,
    SHORT,
    TOTAL_CHANGED,
    WRONG_SIZE,
    EMPTY,
    GARBLED,
    TRUNCATED,
    TRAILING,
    NONE_EXPECTED,
    N_CASES
  };
  static const char *const want[N_CASES] = {"gap",
                                            "overlap",
                                            "past the total",
                                            "ended at 2048 of 4096",
                                            "earlier chunks said",
                                            "expected 4096",
                                            "empty",
                                            "malformed",
                                            "1024 data bytes announced, 1019 present",
                                            "malformed",
                                            "without a bulk field"};
  for (int t = 0; t < N_CASES; t++) {
    seq s = {.n = 0};
    const char *method = ECHO;
    switch (t) {
      case GAP:
        seq_add(&s, 0, 4096, 1024);
        seq_add(&s, 2048, 4096, 2048);
        break;
      case OVERLAP:
        seq_add(&s, 0, 4096, 1024);
        seq_add(&s, 512, 4096, 3584);
        break;
      case OVERFLOW:
        seq_add(&s, 0, 4096, 1024);
        seq_add(&s, 1024, 4096, 4000);
        break;
      case SHORT:
        seq_add(&s, 0, 4096, 1024);
        seq_add(&s, 1024, 4096, 1024);
        break;
      case TOTAL_CHANGED:
        seq_add(&s, 0, 4096, 1024);
        seq_add(&s, 1024, 8192, 1024);
        break;
      case WRONG_SIZE: /* the destination refuses a total the plan does not have */
        seq_add(&s, 0, 8192, 1024);
        break;
      case EMPTY:
        seq_add(&s, 0, 4096, 0);
        break;
      case GARBLED:
        seq_add_raw(&s, "\xff\xff\xff", 3);
        break;
      case TRUNCATED: /* a data length longer than what follows it */
        seq_add(&s, 0, 4096, 1024);
        s.raw[0].len -= 5;
        break;
      case TRAILING: { /* bytes after the data that are no field of a chunk */
        seq_add(&s, 0, 4096, 1024);
        uint8_t *p = s.own[0];
        size_t n = s.raw[0].len;
        s.own[0] = malloc(n + 5);
        memcpy(s.own[0], p, n);
        memcpy(s.own[0] + n, "extra", 5);
        s.raw[0] = (mdl_rpc_raw){s.own[0], n + 5};
        free(p);
        break;
      }
      case NONE_EXPECTED:
        method = NOBULK;
        seq_add(&s, 0, 4096, 1024);
        break;
    }
    mdl_rpc_call c = send_seq(ch, method, &s, NULL, 0, &sk);
    cr_assert_eq(c.code, MDL_RPC_INVALID_ARGUMENT, "case %d: %s %s", t, mdl_rpc_code_name(c.code),
                 c.detail);
    cr_assert(strstr(c.detail, want[t]), "case %d: detail '%s' lacks '%s'", t, c.detail, want[t]);
    seq_free(&s);
  }
  /* chunks after the field arrived whole in the message itself */
  static uint8_t whole[4096];
  Memdl__RoundRequest req = MEMDL__ROUND_REQUEST__INIT;
  mdl_rpc_out m = {.msg = &req.base, .bulk_field = 5, .bulk = whole, .bulk_len = sizeof whole};
  uint8_t *flat;
  size_t flat_len;
  mdl_error err;
  cr_assert_eq(mdl_rpc_encode_flat(&m, &flat, &flat_len, &err), MDL_OK);
  seq s = {.n = 0};
  seq_add(&s, 0, 4096, 1024);
  mdl_rpc_call c = send_seq(ch, ECHO, &s, flat, flat_len, &sk);
  cr_assert_eq(c.code, MDL_RPC_INVALID_ARGUMENT, "%s", c.detail);
  cr_assert(strstr(c.detail, "arrived whole"), "%s", c.detail);
  seq_free(&s);
  free(flat);
  /* a good sequence in uneven chunks still works, and the server kept serving */
  s = (seq){.n = 0};
  seq_add(&s, 0, 4096, 1000);
  seq_add(&s, 1000, 4096, 3000);
  seq_add(&s, 4000, 4096, 96);
  c = send_seq(ch, ECHO, &s, NULL, 0, &sk);
  cr_assert_eq(c.code, MDL_RPC_OK, "%s %s", mdl_rpc_code_name(c.code), c.detail);
  cr_assert_eq(c.bulk_len, 4096);
  for (int i = 0; i < 4096; i++) cr_assert_eq(back[i], 1);
  mdl_rpc_calls_clear(&c, 1);
  seq_free(&s);
  /* and so does one whose chunks put their fields in other orders (the
   * first leaving out its zero offset), which protobuf encoders may do */
  static uint8_t pattern[4096];
  for (int i = 0; i < 4096; i++) pattern[i] = (uint8_t)(i * 7);
  s = (seq){.n = 0};
  seq_add_order(&s, "td", 0, 4096, pattern, 1000);
  seq_add_order(&s, "dot", 1000, 4096, pattern + 1000, 3000);
  seq_add_order(&s, "tod", 4000, 4096, pattern + 4000, 96);
  c = send_seq(ch, ECHO, &s, NULL, 0, &sk);
  cr_assert_eq(c.code, MDL_RPC_OK, "%s %s", mdl_rpc_code_name(c.code), c.detail);
  cr_assert_eq(c.bulk_len, 4096);
  for (int i = 0; i < 4096; i++)
    cr_assert_eq(back[i], (uint8_t)(pattern[i] + 1), "byte %d: %u, sent %u", i, back[i],
                 pattern[i]);
  mdl_rpc_calls_clear(&c, 1);
  seq_free(&s);
  mdl_rpc_channel_free(ch);
  fx_stop(&f);
}

Test(rpc_stream, the_message_limit_bounds_a_streamed_field_too) {
  fx f;
  fx_start_max(&f, 1 << 20);
  mdl_rpc_channel *ch = chan(&f);
  size_t len = (1 << 20) + 1;
  uint8_t *in = calloc(1, len), *back = calloc(1, len);
  sink sk = {back, len};
  mdl_rpc_call c;
  call_init(&c, ch, ECHO, in, len, 1, &sk);
  run(&c, 1);
  cr_assert_eq(c.code, MDL_RPC_RESOURCE_EXHAUSTED, "%s %s", mdl_rpc_code_name(c.code), c.detail);
  call_init(&c, ch, ECHO, in, 1 << 19, 1, &sk);
  run(&c, 1);
  cr_assert_eq(c.code, MDL_RPC_OK, "%s %s", mdl_rpc_code_name(c.code), c.detail);
  mdl_rpc_calls_clear(&c, 1);
  free(in);
  free(back);
  mdl_rpc_channel_free(ch);
  fx_stop(&f);
}
