/* The server side of memdl's RPC layer (see rpc.h): credentials, the
 * polling loop, call contexts, token and method checks, handler threads
 * and streamed requests and replies. Facts relied on (shutdown order,
 * handlers off the polling thread) are in shared/notes/grpc-c-core.md. */
#define _GNU_SOURCE
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "runtime/rpc/rpc_internal.h"

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
  /* passed the token check: only such calls count as activity for the idle
   * timeout, or anyone could keep a worker whose driver is gone alive */
  bool authed;
  /* A streamed call ("memdl-stream" metadata): chunks follow the request;
   * the reply's bulk streams too from reply_min bytes, in chunk-byte pieces. */
  bool stream;
  size_t reply_min, chunk;
  /* The handler thread's own ops on a streamed call, one at a time: it
   * starts one, the poller signals its completion (t_step). */
  pthread_mutex_t step_mu;
  pthread_cond_t step_cv;
  bool step_done, step_ok, md_sent;
  /* when this call began waiting for its next request message (head or
   * chunk; 0: not waiting): the poller cancels it after stream_timeout_ms
   * (under step_mu) */
  double recv_since;
  bool computing; /* the handler proper runs (not a receive): the driver is alive */
  bool exclusive; /* holds the server's one slot for exclusive methods */
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
  pthread_mutex_t serial; /* handlers (and the encoding of their replies) one at a time */
  /* Streamed requests are received outside `serial` (a stalled peer must not
   * hold up rounds) into one staging buffer, one stream at a time, then
   * copied to the method's destination inside it. */
  pthread_mutex_t rx;
  uint8_t *stage;
  size_t stage_len;
  bool exclusive_busy; /* an exclusive method's call is between arrival and release */
  int stream_timeout_ms;
  mdl_rpc_call_ctx *calls; /* every call struct alive, requested or active */
  int active;              /* calls between arrival and release */
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
  mdl_status st = mdl_rpc_read_text("TLS certificate", sec->tls_cert, &cert, NULL, err);
  if (st == MDL_OK) st = mdl_rpc_read_text("TLS key", sec->tls_key, &key, NULL, err);
  if (st == MDL_OK && sec->tls_ca) st = mdl_rpc_read_text("TLS CA", sec->tls_ca, &ca, NULL, err);
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
  pthread_mutex_init(&s->rx, NULL);
  s->stream_timeout_ms = opts->stream_timeout_ms > 0 ? opts->stream_timeout_ms : 30000;
  s->last_activity = mdl_now();
  atomic_init(&s->handler_stop, 0);
  s->t_shutdown.kind = TAG_SHUTDOWN;
  s->t_shutdown.owner = s;

  mdl_rpc_init();
  int min_ping = opts->min_ping_interval_ms > 0 ? opts->min_ping_interval_ms : 100;
  int ka = opts->keepalive_ms > 0 ? opts->keepalive_ms : 10000;
  int kt =
      opts->keepalive_timeout_ms > 0 ? opts->keepalive_timeout_ms : MDL_RPC_KEEPALIVE_TIMEOUT_MS;
  argv_builder b = {.n = 0};
  arg_int(&b, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, msg_limit(opts->max_message_bytes));
  arg_int(&b, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, msg_limit(opts->max_message_bytes));
  arg_int(&b, GRPC_ARG_ALLOW_REUSEPORT, 0);
  arg_int(&b, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, min_ping);
  arg_int(&b, GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  arg_int(&b, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  arg_int(&b, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  /* Our own pings: a peer that vanished (partition, then death) is noticed
   * and its calls cancelled, instead of an ESTABLISHED connection whose
   * stream waits forever. */
  arg_int(&b, GRPC_ARG_KEEPALIVE_TIME_MS, ka);
  arg_int(&b, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kt);
  arg_int(&b, GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, ka);
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
    if (c->authed) s->last_activity = mdl_now();
    if (c->exclusive) s->exclusive_busy = false;
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
static bool srv_step(mdl_rpc_call_ctx *c, grpc_op *ops, size_t n, bool recv) {
  pthread_mutex_lock(&c->step_mu);
  c->step_done = false;
  if (recv) c->recv_since = mdl_now();
  pthread_mutex_unlock(&c->step_mu);
  if (grpc_call_start_batch(c->call, ops, n, &c->t_step, NULL) != GRPC_CALL_OK) return false;
  pthread_mutex_lock(&c->step_mu);
  while (!c->step_done) pthread_cond_wait(&c->step_cv, &c->step_mu);
  bool ok = c->step_ok;
  c->recv_since = 0;
  pthread_mutex_unlock(&c->step_mu);
  return ok;
}

/* A streamed request's bulk goes to the server's staging buffer first (the
 * method's destination belongs to the serial section): its declared size
 * is checked against what the method expects before anything is kept. */
static void *stage_dest(void *ctx, size_t len, mdl_error *err) {
  mdl_rpc_call_ctx *c = ctx;
  mdl_rpc_server *s = c->s;
  if (c->m->req_bulk_check && !c->m->req_bulk_check(s->o.ctx, len, err)) return NULL;
  if (len > s->stage_len) {
    mdl_rpc_buffer_free(s->stage, s->stage_len);
    s->stage_len = 0;
    s->stage = mdl_rpc_buffer_alloc(len);
    if (!s->stage) {
      mdl_errorf(err, MDL_ERR_NOMEM, "%zu bytes do not fit", len);
      return NULL;
    }
    s->stage_len = len;
  }
  return s->stage;
}

/* The chunks of a streamed request, received one after another into spec's
 * destination (the staging buffer; the serial section is not held). */
static mdl_status srv_recv_chunks(mdl_rpc_call_ctx *c, const mdl_rpc_in_spec *spec,
                                  size_t *bulk_len, mdl_error *err) {
  mdl_rpc_bulk_rx rx = {.spec = spec,
                        .limit = (size_t)msg_limit(c->s->o.max_message_bytes),
                        .head_bulk = *bulk_len > 0};
  for (;;) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->step_msg;
    if (!srv_step(c, &op, 1, true))
      return mdl_errorf(err, MDL_ERR_INVALID, "%s: the stream %s after %d chunks", spec->desc->name,
                        c->cancelled ? "was cancelled (peer gone, or no message in time)" : "broke",
                        rx.chunks);
    if (!c->step_msg) { /* the client half-closed, or the call was cancelled */
      if (c->cancelled)
        return mdl_errorf(err, MDL_ERR_INVALID, "%s: the stream was cancelled after %d chunks",
                          spec->desc->name, rx.chunks);
      break;
    }
    mdl_status st = mdl_rpc_chunk_take(&rx, c->step_msg, err);
    grpc_byte_buffer_destroy(c->step_msg);
    c->step_msg = NULL;
    if (st != MDL_OK) return st;
  }
  return mdl_rpc_chunks_end(&rx, bulk_len, err);
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
  bool ok = srv_step(c, ops, 2, false);
  c->md_sent = true;
  grpc_byte_buffer_destroy(head);
  for (int i = 0; i < n; i++) {
    if (ok) {
      memset(ops, 0, sizeof ops);
      ops[0].op = GRPC_OP_SEND_MESSAGE;
      ops[0].data.send_message.send_message = chunks[i];
      ok = srv_step(c, ops, 1, false);
    }
    grpc_byte_buffer_destroy(chunks[i]);
  }
  free(chunks);
  return ok;
}

static void set_computing(mdl_rpc_call_ctx *c, bool on) {
  pthread_mutex_lock(&c->step_mu);
  c->computing = on;
  pthread_mutex_unlock(&c->step_mu);
}

/* A streamed request: head and chunks into the staging buffer without the
 * serial section (rx held), then, inside it, the bulk copied to the
 * method's destination. Returns inside the serial section on success,
 * outside on failure. */
static mdl_status recv_streamed(mdl_rpc_call_ctx *c, ProtobufCMessage **req, size_t *bulk_len,
                                mdl_error *err) {
  mdl_rpc_server *s = c->s;
  const mdl_rpc_method *m = c->m;
  pthread_mutex_lock(&s->rx);
  mdl_rpc_in_spec stage = {.desc = m->req_desc,
                           .bulk_field = m->req_bulk_field,
                           .bulk_dest = m->req_bulk_dest ? stage_dest : NULL,
                           .bulk_ctx = c,
                           .max_bytes = m->req_max_bytes};
  mdl_status st = mdl_rpc_decode_bb(c->req, &stage, req, bulk_len, err);
  grpc_byte_buffer_destroy(c->req);
  c->req = NULL;
  if (st == MDL_OK) st = srv_recv_chunks(c, &stage, bulk_len, err);
  if (st != MDL_OK) {
    pthread_mutex_unlock(&s->rx);
    return st;
  }
  pthread_mutex_lock(&s->serial);
  if (*bulk_len > 0) {
    mdl_error e2;
    mdl_error_clear(&e2);
    void *dst = m->req_bulk_dest(s->o.ctx, *bulk_len, &e2);
    if (!dst) {
      st = mdl_errorf(err, e2.code != MDL_OK ? e2.code : MDL_ERR_INVALID, "%s: %s",
                      m->req_desc->name, e2.msg[0] ? e2.msg : "bulk field rejected");
      pthread_mutex_unlock(&s->serial);
      pthread_mutex_unlock(&s->rx);
      return st;
    }
    memcpy(dst, s->stage, *bulk_len);
  }
  pthread_mutex_unlock(&s->rx);
  return MDL_OK;
}

static void *handler_main(void *arg) {
  mdl_rpc_call_ctx *c = arg;
  mdl_rpc_server *s = c->s;
  const mdl_rpc_method *m = c->m;
  mdl_error err;
  mdl_error_clear(&err);
  ProtobufCMessage *req = NULL;
  size_t bulk_len = 0;
  mdl_status st;
  bool serial = !m->concurrent;
  if (c->stream && !serial) { /* the staging buffer belongs to the serial section */
    st = mdl_errorf(&err, MDL_ERR_INVALID, "%s is never streamed", m->name);
  } else if (c->stream) {
    st = recv_streamed(c, &req, &bulk_len, &err);
  } else { /* all there already: decoded straight into the destination */
    if (serial) pthread_mutex_lock(&s->serial);
    mdl_rpc_in_spec spec = {.desc = m->req_desc,
                            .bulk_field = m->req_bulk_field,
                            .bulk_dest = m->req_bulk_dest,
                            .bulk_ctx = s->o.ctx,
                            .max_bytes = m->req_max_bytes};
    st = mdl_rpc_decode_bb(c->req, &spec, &req, &bulk_len, &err);
    grpc_byte_buffer_destroy(c->req);
    c->req = NULL;
    if (st != MDL_OK && serial) pthread_mutex_unlock(&s->serial);
  }
  if (st != MDL_OK) {
    if (req) protobuf_c_message_free_unpacked(req, NULL);
    srv_log(s, "rejected %s from %s: %s", m->name, c->peer, err.msg);
    /* as gRPC refuses a unary message over the limit */
    send_final(c, st == MDL_ERR_NOMEM ? MDL_RPC_RESOURCE_EXHAUSTED : MDL_RPC_INVALID_ARGUMENT,
               err.msg, NULL);
    return NULL;
  }
  set_computing(c, true);
  mdl_rpc_out reply = {0};
  st = m->handler(s->o.ctx, c, req, bulk_len, &reply, &err);
  protobuf_c_message_free_unpacked(req, NULL);
  grpc_byte_buffer *bb = NULL, **chunks = NULL;
  int n_chunks = 0;
  if (st == MDL_OK && c->stream && !reply.raw && reply.bulk_field && reply.bulk_len > 0 &&
      reply.bulk_len >= c->reply_min) {
    mdl_rpc_out head = reply;
    head.bulk_field = 0;
    bb = mdl_rpc_encode_bb(&head);
    chunks = mdl_rpc_encode_chunks(&reply, c->chunk, &n_chunks);
  } else if (st == MDL_OK) {
    bb = mdl_rpc_encode_bb(&reply);
  }
  if (serial) pthread_mutex_unlock(&s->serial);
  set_computing(c, false);
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
    bool good = got && mdl_rpc_token_equal(s->token, s->token_len, GRPC_SLICE_START_PTR(*got),
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
  c->authed = true;
  s->last_activity = mdl_now();
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
  if (c->m->exclusive) {
    /* before its message is received: a second one would be held in memory */
    if (s->exclusive_busy) {
      srv_log(s, "refused %s from %s: another is in progress", c->m->name, c->peer);
      send_final(c, MDL_RPC_RESOURCE_EXHAUSTED, "refused: another call of this kind is in progress",
                 NULL);
      return;
    }
    s->exclusive_busy = c->exclusive = true;
  }
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->req;
  pthread_mutex_lock(&c->step_mu);
  c->recv_since = mdl_now();
  pthread_mutex_unlock(&c->step_mu);
  if (grpc_call_start_batch(c->call, &op, 1, &c->t_recv, NULL) != GRPC_CALL_OK)
    send_final(c, MDL_RPC_INTERNAL, "cannot receive the request", NULL);
}

static void on_recv(mdl_rpc_server *s, mdl_rpc_call_ctx *c, bool ok) {
  pthread_mutex_lock(&c->step_mu);
  c->recv_since = 0;
  pthread_mutex_unlock(&c->step_mu);
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

/* Once per poll: cancels calls whose next request message is overdue, and
 * counts handlers at work as the driver's activity. */
static void watch_calls(mdl_rpc_server *s) {
  double now = mdl_now();
  for (mdl_rpc_call_ctx *c = s->calls; c; c = c->next) {
    pthread_mutex_lock(&c->step_mu);
    bool late = c->recv_since > 0 && (now - c->recv_since) * 1000.0 > s->stream_timeout_ms;
    if (late) c->recv_since = 0;
    if (c->computing) s->last_activity = now;
    pthread_mutex_unlock(&c->step_mu);
    if (late) {
      srv_log(s, "cancelled %s from %s: no request message for %d ms", c->m ? c->m->name : "a call",
              c->peer ? c->peer : "?", s->stream_timeout_ms);
      c->cancelled = 1;
      grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED,
                                   "no request message in time", NULL);
    }
  }
}

mdl_status mdl_rpc_server_run(mdl_rpc_server *s, bool *idle, mdl_error *err) {
  if (idle) *idle = false;
  if (s->shut) return mdl_errorf(err, MDL_ERR_INTERNAL, "rpc: server already shut down");
  while (!s->stop_flag) {
    grpc_event ev = grpc_completion_queue_next(s->cq, deadline_in(POLL_MS), NULL);
    if (ev.type == GRPC_OP_COMPLETE) dispatch(s, ev.tag, ev.success);
    if (atomic_load(&s->handler_stop) && s->active == 0) break;
    watch_calls(s);
    /* whatever state the calls are in: a handler at work counts as activity
     * (watch_calls), a call waiting for its peer does not */
    if (s->o.idle_timeout_ms > 0 &&
        (mdl_now() - s->last_activity) * 1000.0 > s->o.idle_timeout_ms) {
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
  pthread_mutex_destroy(&s->rx);
  mdl_rpc_buffer_free(s->stage, s->stage_len);
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
