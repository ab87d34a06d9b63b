/* runtime/rpc: calls with deadlines, dispatch by method name, the bulk
 * field's decoding and its validation, malformed and oversized messages,
 * the shared token, TLS with a CA made here by openssl, plain TCP on a
 * non-loopback address, K calls at once, and keepalive noticing a stopped
 * peer. Servers run in-process on threads (or in a forked child where the
 * test stops the process). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "rpc.pb-c.h"
#include "runtime/rpc/rpc.h"
#include "tests/testutil.h"

#define ECHO "/memdl.Test/Echo"
#define SLEEP "/memdl.Test/Sleep"

typedef struct fx {
  mdl_rpc_server *srv;
  pthread_t th;
  bool running;
  int port;
  char addr[128];
  uint8_t *buf;
  size_t cap, expect;
  atomic_int saw_cancel;
  Memdl__RoundReply reply;
  bool idle;
} fx;

static void *echo_dest(void *ctx, size_t len, mdl_error *err) {
  fx *f = ctx;
  if (f->expect && len != f->expect) {
    mdl_errorf(err, MDL_ERR_INVALID, "weights of %zu bytes, expected %zu", len, f->expect);
    return NULL;
  }
  if (len > f->cap) {
    mdl_errorf(err, MDL_ERR_INVALID, "weights of %zu bytes, at most %zu", len, f->cap);
    return NULL;
  }
  return f->buf;
}

static mdl_status on_echo(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                          size_t bulk_len, mdl_rpc_out *out, mdl_error *err) {
  fx *f = ctx;
  const Memdl__RoundRequest *r = (const Memdl__RoundRequest *)m;
  if (r->tau > 1000) return mdl_errorf(err, MDL_ERR_INVALID, "tau %u too large", r->tau);
  memdl__round_reply__init(&f->reply);
  f->reply.has_samples = 1;
  f->reply.samples = r->tau;
  out->msg = &f->reply.base;
  out->bulk_field = 1;
  out->bulk = f->buf;
  out->bulk_len = bulk_len;
  return MDL_OK;
}

static mdl_status on_sleep(void *ctx, mdl_rpc_call_ctx *call, const ProtobufCMessage *m,
                           size_t bulk_len, mdl_rpc_out *out, mdl_error *err) {
  fx *f = ctx;
  const Memdl__RoundRequest *r = (const Memdl__RoundRequest *)m;
  for (uint32_t t = 0; t < r->tau; t += 10) {
    if (mdl_rpc_call_cancelled(call)) {
      atomic_store(&f->saw_cancel, 1);
      return mdl_errorf(err, MDL_ERR_INTERNAL, "cancelled");
    }
    usleep(10000);
  }
  memdl__round_reply__init(&f->reply);
  f->reply.has_samples = 1;
  f->reply.samples = r->tau;
  out->msg = &f->reply.base;
  return MDL_OK;
}

static const mdl_rpc_method METHODS[] = {
    {ECHO, &memdl__round_request__descriptor, 5, echo_dest, 1024, on_echo},
    {SLEEP, &memdl__round_request__descriptor, 5, echo_dest, 1024, on_sleep},
};

static void *serve(void *arg) {
  fx *f = arg;
  mdl_error err;
  mdl_rpc_server_run(f->srv, &f->idle, &err);
  return NULL;
}

static FILE *g_log;

static mdl_status fx_start_opts(fx *f, const char *addr, const mdl_rpc_security *sec,
                                size_t max_msg, int idle_ms, mdl_error *err) {
  memset(f, 0, sizeof *f);
  f->cap = 1 << 22;
  f->buf = calloc(1, f->cap);
  mdl_rpc_server_opts o = {.methods = METHODS,
                           .n_methods = 2,
                           .ctx = f,
                           .max_message_bytes = max_msg,
                           .idle_timeout_ms = idle_ms,
                           .log = g_log};
  if (sec) o.sec = *sec;
  mdl_status st = mdl_rpc_server_new(addr, &o, &f->srv, err);
  if (st != MDL_OK) {
    free(f->buf);
    f->buf = NULL;
    return st;
  }
  f->port = mdl_rpc_server_port(f->srv);
  if (f->port)
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", f->port);
  else
    snprintf(f->addr, sizeof f->addr, "%s", addr);
  pthread_create(&f->th, NULL, serve, f);
  f->running = true;
  return MDL_OK;
}

static void fx_start(fx *f) {
  mdl_error err;
  cr_assert_eq(fx_start_opts(f, "127.0.0.1:0", NULL, 0, 0, &err), MDL_OK, "%s", err.msg);
}

static void fx_stop(fx *f) {
  if (f->running) {
    mdl_rpc_server_stop(f->srv);
    pthread_join(f->th, NULL);
  }
  mdl_rpc_server_free(f->srv);
  free(f->buf);
}

static mdl_rpc_channel *chan(const char *addr, const mdl_rpc_security *sec) {
  mdl_rpc_channel_opts o = {.keepalive_ms = 500};
  if (sec) o.sec = *sec;
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

/* One call of method with tau and n_floats of bulk (value i at i). */
static mdl_rpc_call call1(mdl_rpc_channel *ch, const char *method, uint32_t tau, size_t n_floats,
                          int deadline_ms, sink *out) {
  Memdl__RoundRequest req = MEMDL__ROUND_REQUEST__INIT;
  req.has_tau = 1;
  req.tau = tau;
  float *w = malloc(n_floats * sizeof(float) + 1);
  for (size_t i = 0; i < n_floats; i++) w[i] = (float)i;
  mdl_rpc_call c;
  memset(&c, 0, sizeof c);
  c.ch = ch;
  c.method = method;
  c.req.msg = &req.base;
  c.req.bulk_field = 5;
  c.req.bulk = w;
  c.req.bulk_len = n_floats * sizeof(float);
  c.reply_spec.desc = &memdl__round_reply__descriptor;
  c.reply_spec.bulk_field = 1;
  c.reply_spec.bulk_dest = sink_dest;
  c.reply_spec.bulk_ctx = out;
  c.reply_spec.max_bytes = 1024;
  c.wait_for_ready = true;
  mdl_error err;
  cr_assert_eq(mdl_rpc_call_all(&c, 1, deadline_ms, NULL, &err), MDL_OK, "%s", err.msg);
  free(w);
  return c;
}

static void setup(void) {
  g_log = tmpfile();
  mdl_rpc_init();
}

static void teardown(void) {
  mdl_rpc_shutdown();
  if (g_log) fclose(g_log);
}

static bool log_contains(const char *needle) {
  fflush(g_log);
  rewind(g_log);
  char line[1024];
  bool found = false;
  while (fgets(line, sizeof line, g_log))
    if (strstr(line, needle)) found = true;
  fseek(g_log, 0, SEEK_END);
  return found;
}

TestSuite(rpc, .init = setup, .fini = teardown, .timeout = 20);

Test(rpc, unary_call_carries_bulk_both_ways) {
  fx f;
  fx_start(&f);
  mdl_rpc_channel *ch = chan(f.addr, NULL);
  sink out = {calloc(1, 1 << 20), 1 << 20};
  mdl_rpc_call c = call1(ch, ECHO, 7, 100000, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_OK, "%s %s", mdl_rpc_code_name(c.code), c.detail);
  cr_assert_eq(((Memdl__RoundReply *)c.reply)->samples, 7);
  cr_assert_eq(c.bulk_len, 400000);
  const float *w = (const float *)out.buf;
  for (int i = 0; i < 100000; i++) cr_assert_eq(w[i], (float)i);
  mdl_rpc_calls_clear(&c, 1);
  mdl_rpc_channel_free(ch);
  free(out.buf);
  fx_stop(&f);
}

Test(rpc, dispatches_by_method_name_and_refuses_unknown_methods) {
  fx f;
  fx_start(&f);
  mdl_rpc_channel *ch = chan(f.addr, NULL);
  sink out = {calloc(1, 64), 64};
  mdl_rpc_call c = call1(ch, SLEEP, 0, 0, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_OK, "%s", c.detail);
  cr_assert_eq(c.bulk_len, 0);
  mdl_rpc_calls_clear(&c, 1);
  c = call1(ch, "/memdl.Test/Nope", 1, 0, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_UNIMPLEMENTED, "%s", mdl_rpc_code_name(c.code));
  cr_assert(strstr(c.detail, "unknown method"), "%s", c.detail);
  cr_assert(log_contains("unknown method"));
  mdl_rpc_channel_free(ch);
  free(out.buf);
  fx_stop(&f);
}

Test(rpc, deadline_ends_the_call_and_the_handler_sees_the_cancellation) {
  fx f;
  fx_start(&f);
  mdl_rpc_channel *ch = chan(f.addr, NULL);
  sink out = {calloc(1, 64), 64};
  /* warm the connection so the deadline measures the call only */
  mdl_rpc_call c = call1(ch, SLEEP, 0, 0, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_OK);
  mdl_rpc_calls_clear(&c, 1);
  double t0 = mdl_now();
  c = call1(ch, SLEEP, 5000, 0, 200, &out);
  double dt = mdl_now() - t0;
  cr_assert_eq(c.code, MDL_RPC_DEADLINE_EXCEEDED, "%s", mdl_rpc_code_name(c.code));
  cr_assert(dt >= 0.19 && dt < 1.0, "took %.3f s", dt);
  for (int i = 0; i < 100 && !atomic_load(&f.saw_cancel); i++) usleep(10000);
  cr_assert(atomic_load(&f.saw_cancel), "the handler did not see the cancellation");
  mdl_rpc_channel_free(ch);
  free(out.buf);
  fx_stop(&f);
}

Test(rpc, wrong_bulk_size_is_rejected_and_the_server_keeps_serving) {
  fx f;
  fx_start(&f);
  f.expect = 400;
  mdl_rpc_channel *ch = chan(f.addr, NULL);
  sink out = {calloc(1, 4096), 4096};
  mdl_rpc_call c = call1(ch, ECHO, 1, 99, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_INVALID_ARGUMENT, "%s", mdl_rpc_code_name(c.code));
  cr_assert(strstr(c.detail, "expected 400"), "%s", c.detail);
  c = call1(ch, ECHO, 1, 100, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_OK, "%s", c.detail);
  mdl_rpc_calls_clear(&c, 1);
  /* handler-level validation travels as a status too */
  c = call1(ch, ECHO, 5000, 100, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_INVALID_ARGUMENT);
  cr_assert(strstr(c.detail, "tau 5000"), "%s", c.detail);
  mdl_rpc_channel_free(ch);
  free(out.buf);
  fx_stop(&f);
}

Test(rpc, messages_over_the_size_limit_are_refused) {
  fx f;
  mdl_error err;
  cr_assert_eq(fx_start_opts(&f, "127.0.0.1:0", NULL, 1 << 20, 0, &err), MDL_OK, "%s", err.msg);
  mdl_rpc_channel *ch = chan(f.addr, NULL);
  sink out = {calloc(1, 1 << 21), 1 << 21};
  mdl_rpc_call c = call1(ch, ECHO, 1, (1 << 20) / 4 + 16, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_RESOURCE_EXHAUSTED, "%s %s", mdl_rpc_code_name(c.code), c.detail);
  c = call1(ch, ECHO, 1, 1000, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_OK, "%s", c.detail);
  mdl_rpc_calls_clear(&c, 1);
  mdl_rpc_channel_free(ch);
  free(out.buf);
  fx_stop(&f);
}

/* Raw bytes as a request. */
static mdl_rpc_code send_raw(mdl_rpc_channel *ch, const uint8_t *raw, size_t len, char *detail) {
  mdl_rpc_call c;
  memset(&c, 0, sizeof c);
  c.ch = ch;
  c.method = ECHO;
  c.req.raw = raw;
  c.req.raw_len = len;
  c.reply_spec.desc = &memdl__round_reply__descriptor;
  c.reply_spec.max_bytes = 1 << 20;
  c.wait_for_ready = true;
  mdl_error err;
  cr_assert_eq(mdl_rpc_call_all(&c, 1, 5000, NULL, &err), MDL_OK);
  if (detail) strcpy(detail, c.detail);
  mdl_rpc_calls_clear(&c, 1);
  return c.code;
}

static const struct {
  const char *what;
  uint8_t bytes[16];
  size_t len;
} MALFORMED[] = {
    {"truncated field tag", {0x80}, 1},
    {"invalid field number", {0x00, 0x01}, 2},
    {"field 5 must be length-delimited", {0x28, 0x01}, 2},
    {"truncated field 5", {0x2a, 0x10, 1, 2}, 4},
    {"appears twice", {0x2a, 0x00, 0x2a, 0x00}, 4},
    {"unsupported wire type", {0x1b, 0x01}, 2},
    {"truncated length", {0x12, 0xff}, 2},
    {"truncated varint", {0x20, 0x80, 0x80}, 3},
    {"malformed message", {0x20, 0x01, 0x22, 0x01, 0x00}, 5},
};

Test(rpc, malformed_requests_are_rejected_with_a_status_never_a_crash) {
  fx f;
  fx_start(&f);
  mdl_rpc_channel *ch = chan(f.addr, NULL);
  char detail[512];
  for (size_t i = 0; i < sizeof MALFORMED / sizeof *MALFORMED; i++) {
    mdl_rpc_code code = send_raw(ch, MALFORMED[i].bytes, MALFORMED[i].len, detail);
    cr_assert_eq(code, MDL_RPC_INVALID_ARGUMENT, "%s: got %s", MALFORMED[i].what,
                 mdl_rpc_code_name(code));
  }
  /* random garbage, many times: statuses, no crash, still serving */
  srand(7);
  uint8_t junk[256];
  for (int t = 0; t < 200; t++) {
    size_t n = 1 + (size_t)(rand() % 255);
    for (size_t i = 0; i < n; i++) junk[i] = (uint8_t)rand();
    mdl_rpc_code code = send_raw(ch, junk, n, NULL);
    cr_assert(code == MDL_RPC_OK || code == MDL_RPC_INVALID_ARGUMENT, "%s",
              mdl_rpc_code_name(code));
  }
  sink out = {calloc(1, 4096), 4096};
  mdl_rpc_call c = call1(ch, ECHO, 3, 10, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_OK);
  mdl_rpc_calls_clear(&c, 1);
  mdl_rpc_channel_free(ch);
  free(out.buf);
  fx_stop(&f);
}

Test(rpc, decoder_checks_each_case_without_the_network) {
  uint8_t buf[1 << 12];
  fx f = {.cap = sizeof buf, .buf = buf};
  mdl_rpc_in_spec spec = {.desc = &memdl__round_request__descriptor,
                          .bulk_field = 5,
                          .bulk_dest = echo_dest,
                          .bulk_ctx = &f,
                          .max_bytes = 1024};
  for (size_t i = 0; i < sizeof MALFORMED / sizeof *MALFORMED; i++) {
    ProtobufCMessage *m = NULL;
    size_t bl;
    mdl_error err;
    mdl_error_clear(&err);
    mdl_status st = mdl_rpc_decode_flat(MALFORMED[i].bytes, MALFORMED[i].len, &spec, &m, &bl, &err);
    cr_assert_eq(st, MDL_ERR_INVALID, "%s", MALFORMED[i].what);
    cr_assert_null(m);
    cr_assert(strstr(err.msg, MALFORMED[i].what), "%s: %s", MALFORMED[i].what, err.msg);
  }
  /* a good message round-trips, the bulk field landing in our buffer */
  Memdl__RoundRequest req = MEMDL__ROUND_REQUEST__INIT;
  req.has_tau = req.has_iter_start = 1;
  req.tau = 4;
  req.iter_start = 300;
  float w[3] = {1.5f, -2.0f, 3.25f};
  mdl_rpc_out out = {.msg = &req.base, .bulk_field = 5, .bulk = w, .bulk_len = sizeof w};
  uint8_t *flat;
  size_t len, bl;
  mdl_error err;
  cr_assert_eq(mdl_rpc_encode_flat(&out, &flat, &len, &err), MDL_OK);
  /* the encoding is what protobuf-c itself would produce */
  Memdl__RoundRequest *pc = (Memdl__RoundRequest *)protobuf_c_message_unpack(
      &memdl__round_request__descriptor, NULL, len, flat);
  cr_assert_not_null(pc);
  cr_assert_eq(pc->weights.len, sizeof w);
  cr_assert_eq(memcmp(pc->weights.data, w, sizeof w), 0);
  protobuf_c_message_free_unpacked(&pc->base, NULL);
  ProtobufCMessage *m;
  cr_assert_eq(mdl_rpc_decode_flat(flat, len, &spec, &m, &bl, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(bl, sizeof w);
  cr_assert_eq(memcmp(buf, w, sizeof w), 0);
  cr_assert_eq(((Memdl__RoundRequest *)m)->tau, 4);
  cr_assert_eq(((Memdl__RoundRequest *)m)->iter_start, 300);
  cr_assert_eq(((Memdl__RoundRequest *)m)->weights.len, 0);
  protobuf_c_message_free_unpacked(m, NULL);
  /* a message over the limit (an unknown field of 1500 bytes) */
  uint8_t big[1504] = {0xa2, 0x06, 0xdc, 0x0b};
  cr_assert_eq(mdl_rpc_decode_flat(big, sizeof big, &spec, &m, &bl, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "more than the limit"), "%s", err.msg);
  /* the size check sees the length before anything is copied */
  f.expect = 8;
  cr_assert_eq(mdl_rpc_decode_flat(flat, len, &spec, &m, &bl, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "expected 8"), "%s", err.msg);
  free(flat);
}

static void write_file(const char *path, const char *text, mode_t mode) {
  FILE *fp = fopen(path, "w");
  cr_assert_not_null(fp);
  fputs(text, fp);
  fclose(fp);
  chmod(path, mode);
}

Test(rpc, token_is_required_and_compared_and_refusals_are_logged) {
  char *dir = tu_tmpdir();
  char *path = tu_path(dir, "token");
  write_file(path, "0123456789abcdef-secret\n", 0600);
  char *tok;
  size_t tok_len;
  mdl_error err;
  cr_assert_eq(mdl_rpc_token_read(path, &tok, &tok_len, &err), MDL_OK, "%s", err.msg);
  cr_assert_str_eq(tok, "0123456789abcdef-secret");
  chmod(path, 0644);
  char *t2;
  size_t l2;
  cr_assert_eq(mdl_rpc_token_read(path, &t2, &l2, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "chmod 600"), "%s", err.msg);
  write_file(path, "short", 0600);
  cr_assert_eq(mdl_rpc_token_read(path, &t2, &l2, &err), MDL_ERR_INVALID);

  mdl_rpc_security sec = {.token = tok, .token_len = tok_len};
  fx f;
  cr_assert_eq(fx_start_opts(&f, "127.0.0.1:0", &sec, 0, 0, &err), MDL_OK);
  sink out = {calloc(1, 4096), 4096};
  mdl_rpc_channel *none = chan(f.addr, NULL);
  mdl_rpc_call c = call1(none, ECHO, 1, 4, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_UNAUTHENTICATED, "%s", mdl_rpc_code_name(c.code));
  cr_assert(log_contains("no token"));
  mdl_rpc_security wrong = {.token = "0123456789abcdef-secreT", .token_len = tok_len};
  mdl_rpc_channel *bad = chan(f.addr, &wrong);
  c = call1(bad, ECHO, 1, 4, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_UNAUTHENTICATED);
  cr_assert(log_contains("wrong token"));
  mdl_rpc_security longer = {.token = "0123456789abcdef-secret!", .token_len = tok_len + 1};
  mdl_rpc_channel *lng = chan(f.addr, &longer);
  c = call1(lng, ECHO, 1, 4, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_UNAUTHENTICATED);
  mdl_rpc_channel *good = chan(f.addr, &sec);
  c = call1(good, ECHO, 1, 4, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_OK, "%s", c.detail);
  mdl_rpc_calls_clear(&c, 1);
  mdl_rpc_channel_free(none);
  mdl_rpc_channel_free(bad);
  mdl_rpc_channel_free(lng);
  mdl_rpc_channel_free(good);
  fx_stop(&f);
  free(out.buf);
  free(tok);
  tu_rm_rf(dir);
  free(path);
  free(dir);
}

static bool have_openssl(void) {
  return system("openssl version >/dev/null 2>&1") == 0;
}

/* A CA and a server certificate for localhost/127.0.0.1 signed by it, plus
 * an unrelated CA. */
static void make_certs(const char *dir) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "cd %s && "
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout ca.key -out ca.pem -days 1 -subj /CN=memdl-test-ca && "
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout other.key -out other.pem -days 1 -subj /CN=memdl-other-ca && "
           "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout srv.key -out srv.csr -subj /CN=memdl-worker && "
           "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext && "
           "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
           "-out srv.pem -days 1 -extfile ext",
           dir);
  cr_assert_eq(system(cmd), 0, "openssl failed");
}

Test(rpc, tls_with_a_test_ca) {
  if (!have_openssl()) cr_skip_test("openssl is not installed");
  char *dir = tu_tmpdir();
  make_certs(dir);
  char *ca = tu_path(dir, "ca.pem"), *other = tu_path(dir, "other.pem");
  char *cert = tu_path(dir, "srv.pem"), *key = tu_path(dir, "srv.key");
  mdl_rpc_security ssec = {.tls_cert = cert, .tls_key = key};
  fx f;
  mdl_error err;
  cr_assert_eq(fx_start_opts(&f, "127.0.0.1:0", &ssec, 0, 0, &err), MDL_OK, "%s", err.msg);
  sink out = {calloc(1, 4096), 4096};
  /* the right CA: works, by IP and by name */
  mdl_rpc_security csec = {.tls_ca = ca};
  mdl_rpc_channel *ok = chan(f.addr, &csec);
  mdl_rpc_call c = call1(ok, ECHO, 2, 16, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_OK, "%s %s", mdl_rpc_code_name(c.code), c.detail);
  mdl_rpc_calls_clear(&c, 1);
  char byname[64];
  snprintf(byname, sizeof byname, "localhost:%d", f.port);
  mdl_rpc_channel *ok2 = chan(byname, &csec);
  c = call1(ok2, ECHO, 2, 16, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_OK, "%s %s", mdl_rpc_code_name(c.code), c.detail);
  mdl_rpc_calls_clear(&c, 1);
  /* another CA: the handshake fails */
  mdl_rpc_security osec = {.tls_ca = other};
  mdl_rpc_channel *bad = chan(f.addr, &osec);
  c = call1(bad, ECHO, 2, 16, 1500, &out);
  cr_assert_neq(c.code, MDL_RPC_OK);
  /* plain text to a TLS server: no call gets through */
  mdl_rpc_channel *plain = chan(f.addr, NULL);
  c = call1(plain, ECHO, 2, 16, 1500, &out);
  cr_assert_neq(c.code, MDL_RPC_OK);
  mdl_rpc_channel_free(ok);
  mdl_rpc_channel_free(ok2);
  mdl_rpc_channel_free(bad);
  mdl_rpc_channel_free(plain);
  fx_stop(&f);
  free(out.buf);
  tu_rm_rf(dir);
  free(ca);
  free(other);
  free(cert);
  free(key);
  free(dir);
}

Test(rpc, plain_tcp_on_a_non_loopback_address_needs_insecure) {
  cr_assert(mdl_rpc_addr_is_loopback("127.0.0.1:7070"));
  cr_assert(mdl_rpc_addr_is_loopback("127.3.4.5:1"));
  cr_assert(mdl_rpc_addr_is_loopback("localhost:7070"));
  cr_assert(mdl_rpc_addr_is_loopback("[::1]:7070"));
  cr_assert(mdl_rpc_addr_is_loopback("unix:/tmp/x.sock"));
  cr_assert_not(mdl_rpc_addr_is_loopback("0.0.0.0:7070"));
  cr_assert_not(mdl_rpc_addr_is_loopback("[::]:7070"));
  cr_assert_not(mdl_rpc_addr_is_loopback(":7070"));
  cr_assert_not(mdl_rpc_addr_is_loopback("10.1.2.3:7070"));
  cr_assert_not(mdl_rpc_addr_is_loopback("[::ffff:10.0.0.1]:7070"));
  cr_assert(mdl_rpc_addr_is_loopback("[::ffff:127.0.0.1]:7070"));

  fx f;
  mdl_error err;
  cr_assert_eq(fx_start_opts(&f, "0.0.0.0:0", NULL, 0, 0, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "--insecure"), "%s", err.msg);
  mdl_rpc_security ins = {.insecure = true};
  cr_assert_eq(fx_start_opts(&f, "0.0.0.0:0", &ins, 0, 0, &err), MDL_OK, "%s", err.msg);
  cr_assert(log_contains("WARNING: plain TCP on 0.0.0.0:0"));
  fx_stop(&f);

  mdl_rpc_channel_opts co = {0};
  mdl_rpc_channel *ch;
  cr_assert_eq(mdl_rpc_channel_new("10.1.2.3:7070", &co, &ch, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "not a loopback address"), "%s", err.msg);
  co.sec.insecure = true;
  cr_assert_eq(mdl_rpc_channel_new("10.1.2.3:7070", &co, &ch, &err), MDL_OK);
  mdl_rpc_channel_free(ch);
}

Test(rpc, k_calls_run_at_once_on_one_queue) {
  enum { K = 3 };
  fx f[K];
  mdl_rpc_channel *ch[K];
  for (int i = 0; i < K; i++) {
    fx_start(&f[i]);
    ch[i] = chan(f[i].addr, NULL);
  }
  Memdl__RoundRequest req = MEMDL__ROUND_REQUEST__INIT;
  req.has_tau = 1;
  req.tau = 300; /* each sleeps 300 ms */
  mdl_rpc_call c[K];
  memset(c, 0, sizeof c);
  for (int i = 0; i < K; i++) {
    c[i].ch = ch[i];
    c[i].method = SLEEP;
    c[i].req.msg = &req.base;
    c[i].reply_spec.desc = &memdl__round_reply__descriptor;
    c[i].reply_spec.max_bytes = 1024;
    c[i].wait_for_ready = true;
  }
  mdl_error err;
  double t0 = mdl_now();
  cr_assert_eq(mdl_rpc_call_all(c, K, 5000, NULL, &err), MDL_OK);
  double dt = mdl_now() - t0;
  for (int i = 0; i < K; i++) {
    cr_assert_eq(c[i].code, MDL_RPC_OK, "%s", c[i].detail);
    cr_assert(c[i].seconds >= 0.29);
  }
  cr_assert(dt < 0.8, "3 calls of 300 ms took %.3f s: not concurrent", dt);
  mdl_rpc_calls_clear(c, K);
  for (int i = 0; i < K; i++) {
    mdl_rpc_channel_free(ch[i]);
    fx_stop(&f[i]);
  }
}

Test(rpc, idle_server_returns_after_its_timeout_with_or_without_calls) {
  fx f;
  mdl_error err;
  /* never called: it returns all the same (a worker nobody drives exits) */
  cr_assert_eq(fx_start_opts(&f, "127.0.0.1:0", NULL, 0, 300, &err), MDL_OK);
  double t_start = mdl_now();
  pthread_join(f.th, NULL);
  f.running = false;
  cr_assert(f.idle);
  cr_assert(mdl_now() - t_start < 2.0);
  fx_stop(&f);
  cr_assert_eq(fx_start_opts(&f, "127.0.0.1:0", NULL, 0, 300, &err), MDL_OK);
  mdl_rpc_channel *ch = chan(f.addr, NULL);
  sink out = {calloc(1, 64), 64};
  mdl_rpc_call c = call1(ch, SLEEP, 0, 0, 5000, &out);
  cr_assert_eq(c.code, MDL_RPC_OK);
  mdl_rpc_calls_clear(&c, 1);
  double t0 = mdl_now();
  pthread_join(f.th, NULL);
  f.running = false;
  cr_assert(f.idle);
  cr_assert(mdl_now() - t0 < 2.0);
  mdl_rpc_channel_free(ch);
  free(out.buf);
  fx_stop(&f);
}

/* The server in a child process, so the test can stop it. */
static pid_t serve_in_child(const char *addr) {
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    fx f;
    mdl_error err;
    g_log = stderr;
    mdl_rpc_init();
    if (fx_start_opts(&f, addr, NULL, 0, 0, &err) != MDL_OK) _exit(3);
    pthread_join(f.th, NULL);
    _exit(0);
  }
  return pid;
}

typedef struct stopper {
  pid_t pid;
  int after_ms;
} stopper;

static void *stop_later(void *arg) {
  stopper *s = arg;
  usleep((useconds_t)s->after_ms * 1000);
  kill(s->pid, SIGSTOP);
  return NULL;
}

Test(rpc_process, keepalive_notices_a_stopped_peer_before_the_deadline, .timeout = 20) {
  g_log = stderr;
  /* not tu_tmpdir: a Unix socket path must stay under 108 bytes */
  char dir[] = "/tmp/mdl_rpc_ka_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  char addr[128];
  snprintf(addr, sizeof addr, "unix:%s/s.sock", dir);
  pid_t child = serve_in_child(addr); /* before gRPC starts in this process */
  mdl_rpc_init();
  mdl_rpc_channel_opts o = {.keepalive_ms = 200, .keepalive_timeout_ms = 300};
  mdl_rpc_channel *ch;
  mdl_error err;
  cr_assert_eq(mdl_rpc_channel_new(addr, &o, &ch, &err), MDL_OK);
  sink out = {calloc(1, 64), 64};
  mdl_rpc_call c = call1(ch, SLEEP, 0, 0, 5000, &out); /* connected */
  cr_assert_eq(c.code, MDL_RPC_OK, "%s", c.detail);
  mdl_rpc_calls_clear(&c, 1);
  stopper s = {child, 300};
  pthread_t th;
  pthread_create(&th, NULL, stop_later, &s);
  double t0 = mdl_now();
  c = call1(ch, SLEEP, 20000, 0, 15000, &out);
  double dt = mdl_now() - t0;
  pthread_join(th, NULL);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  cr_assert_eq(c.code, MDL_RPC_UNAVAILABLE, "%s %s", mdl_rpc_code_name(c.code), c.detail);
  cr_assert(dt < 3.0, "a stopped peer took %.2f s to notice", dt);
  mdl_rpc_channel_free(ch);
  free(out.buf);
  mdl_rpc_shutdown();
  tu_rm_rf(dir);
}

typedef struct pauser {
  pid_t pid;
  int after_ms, for_ms;
} pauser;

static void *pause_later(void *arg) {
  pauser *s = arg;
  usleep((useconds_t)s->after_ms * 1000);
  kill(s->pid, SIGSTOP);
  usleep((useconds_t)s->for_ms * 1000);
  kill(s->pid, SIGCONT);
  return NULL;
}

/* A peer whose answers are late by seconds, as a ping's is behind megabytes
 * queued on a busy slow link (issue 13: 8 workers over 100 Mbit/s), keeps
 * its call with the default keepalive: a pause of 5.5 s leaves a ping sent
 * in its first 2 s (one is, every 2 s) unanswered for over 3 s, the former
 * default timeout. */
Test(rpc_process, default_keepalive_keeps_a_call_to_a_peer_late_by_seconds, .timeout = 30) {
  g_log = stderr;
  char dir[] = "/tmp/mdl_rpc_kl_XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  char addr[128];
  snprintf(addr, sizeof addr, "unix:%s/s.sock", dir);
  pid_t child = serve_in_child(addr); /* before gRPC starts in this process */
  mdl_rpc_init();
  mdl_rpc_channel_opts o = {0}; /* the default keepalive */
  mdl_rpc_channel *ch;
  mdl_error err;
  cr_assert_eq(mdl_rpc_channel_new(addr, &o, &ch, &err), MDL_OK, "%s", err.msg);
  sink out = {calloc(1, 64), 64};
  mdl_rpc_call c = call1(ch, SLEEP, 0, 0, 5000, &out); /* connected */
  cr_assert_eq(c.code, MDL_RPC_OK, "%s", c.detail);
  mdl_rpc_calls_clear(&c, 1);
  pauser s = {child, 300, 5500};
  pthread_t th;
  pthread_create(&th, NULL, pause_later, &s);
  c = call1(ch, SLEEP, 1000, 0, 15000, &out);
  pthread_join(th, NULL);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  cr_assert_eq(c.code, MDL_RPC_OK, "a peer late by 5.5 s lost its call: %s %s",
               mdl_rpc_code_name(c.code), c.detail);
  cr_assert(c.seconds >= 5.5, "the call took %.2f s: the peer was not paused", c.seconds);
  mdl_rpc_calls_clear(&c, 1);
  mdl_rpc_channel_free(ch);
  free(out.buf);
  mdl_rpc_shutdown();
  tu_rm_rf(dir);
}

/* Each TLS failure ends a waiting call at once, saying why, instead of
 * after its deadline as DEADLINE_EXCEEDED. */
Test(rpc, tls_failures_are_reported_at_once_with_their_cause) {
  if (!have_openssl()) cr_skip_test("openssl is not installed");
  char *dir = tu_tmpdir();
  make_certs(dir);
  char *ca = tu_path(dir, "ca.pem"), *other = tu_path(dir, "other.pem");
  char *cert = tu_path(dir, "srv.pem"), *key = tu_path(dir, "srv.key");
  mdl_rpc_security ssec = {.tls_cert = cert, .tls_key = key};
  fx f, fc;
  mdl_error err;
  cr_assert_eq(fx_start_opts(&f, "127.0.0.1:0", &ssec, 0, 0, &err), MDL_OK, "%s", err.msg);
  mdl_rpc_security rsec = {
      .tls_cert = cert, .tls_key = key, .tls_ca = ca, .require_client_cert = true};
  cr_assert_eq(fx_start_opts(&fc, "127.0.0.1:0", &rsec, 0, 0, &err), MDL_OK, "%s", err.msg);
  sink out = {calloc(1, 4096), 4096};
  struct {
    const char *what;
    const char *addr;
    mdl_rpc_security sec;
    const char *name;
  } cases[] = {
      {"another CA", f.addr, {.tls_ca = other}, NULL},
      {"plain text to TLS", f.addr, {0}, NULL},
      {"hostname mismatch", f.addr, {.tls_ca = ca}, "not-the-worker.example"},
      {"no client certificate", fc.addr, {.tls_ca = ca}, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    mdl_rpc_channel_opts o = {
        .keepalive_ms = 500, .sec = cases[i].sec, .tls_server_name = cases[i].name};
    mdl_rpc_channel *ch;
    cr_assert_eq(mdl_rpc_channel_new(cases[i].addr, &o, &ch, &err), MDL_OK, "%s", err.msg);
    double t0 = mdl_now();
    mdl_rpc_call c = call1(ch, ECHO, 2, 16, 10000, &out);
    double took = mdl_now() - t0;
    fprintf(stderr, "%s: %s after %.2f s: %s\n", cases[i].what, mdl_rpc_code_name(c.code), took,
            c.detail);
    cr_assert_eq(c.code, MDL_RPC_UNAVAILABLE, "%s: %s %s", cases[i].what, mdl_rpc_code_name(c.code),
                 c.detail);
    cr_assert(took < 4.0, "%s: reported after %.1f s", cases[i].what, took);
    cr_assert(strstr(c.detail, "TLS"), "%s: %s", cases[i].what, c.detail);
    mdl_rpc_calls_clear(&c, 1);
    mdl_rpc_channel_free(ch);
  }
  fx_stop(&f);
  fx_stop(&fc);
  free(out.buf);
  tu_rm_rf(dir);
  free(ca);
  free(other);
  free(cert);
  free(key);
  free(dir);
}
