/* The client side of memdl's RPC layer (see rpc.h): channels with
 * keepalive and TLS, and K unary or streamed calls in flight on one
 * completion queue. Facts relied on are in shared/notes/grpc-c-core.md. */
#define _GNU_SOURCE
#include <grpc/byte_buffer.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "runtime/rpc/rpc_internal.h"

/* --- client -------------------------------------------------------------- */

struct mdl_rpc_channel {
  grpc_channel *ch;
  char *target;
  char *token;
  size_t token_len;
  bool tls;
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
    st = mdl_rpc_read_text("TLS CA", sec->tls_ca, &ca, NULL, err);
    if (st == MDL_OK && sec->tls_cert) {
      if (!sec->tls_key)
        st = mdl_errorf(err, MDL_ERR_INVALID, "a client certificate needs its key (--tls-key)");
      if (st == MDL_OK) st = mdl_rpc_read_text("TLS certificate", sec->tls_cert, &cert, NULL, err);
      if (st == MDL_OK) st = mdl_rpc_read_text("TLS key", sec->tls_key, &key, NULL, err);
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
  int kt =
      opts->keepalive_timeout_ms > 0 ? opts->keepalive_timeout_ms : MDL_RPC_KEEPALIVE_TIMEOUT_MS;
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
  c->tls = sec->tls_ca || sec->tls_cert;
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

bool mdl_rpc_channel_connected(mdl_rpc_channel *c) {
  return grpc_channel_check_connectivity_state(c->ch, 1) == GRPC_CHANNEL_READY;
}

bool mdl_rpc_channel_failing(mdl_rpc_channel *c) {
  return grpc_channel_check_connectivity_state(c->ch, 0) == GRPC_CHANNEL_TRANSIENT_FAILURE;
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
  mdl_rpc_bulk_rx rx;
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
  c->seconds = mdl_now() - t0;
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
  if (mdl_rpc_decode_bb(cc->recv, &c->reply_spec, &c->reply, &c->bulk_len, &err) != MDL_OK) {
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
          if (mdl_rpc_chunks_end(&k->rx, &c->bulk_len, &err) != MDL_OK) cli_fail(k, &err);
        }
        break;
      }
      mdl_error err;
      mdl_error_clear(&err);
      mdl_status st;
      if (k->msgs++ == 0) {
        st = mdl_rpc_decode_bb(k->recv, &c->reply_spec, &c->reply, &c->bulk_len, &err);
        k->rx.head_bulk = c->bulk_len > 0;
      } else {
        st = mdl_rpc_chunk_take(&k->rx, k->recv, &err);
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

/* Why a channel in TRANSIENT_FAILURE cannot connect: a call that does not
 * wait for readiness fails at once with the last connection error (gRPC
 * 1.51 puts it in the status details). False with no cause when the probe
 * got through or failed otherwise. */
static bool connect_error(mdl_rpc_channel *ch, char *cause, size_t len) {
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  grpc_call *call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                             grpc_slice_from_static_string("/memdl.Probe/Connect"),
                                             NULL, deadline_in(2000), NULL);
  grpc_metadata_array trailing;
  grpc_metadata_array_init(&trailing);
  grpc_status_code status = GRPC_STATUS_OK;
  grpc_slice details = grpc_empty_slice();
  grpc_op ops[3];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[2].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[2].data.recv_status_on_client.trailing_metadata = &trailing;
  ops[2].data.recv_status_on_client.status = &status;
  ops[2].data.recv_status_on_client.status_details = &details;
  bool failed = false;
  if (call && grpc_call_start_batch(call, ops, 3, (void *)1, NULL) == GRPC_CALL_OK) {
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_OP_COMPLETE && status == GRPC_STATUS_UNAVAILABLE) {
      char *d = grpc_slice_to_c_string(details);
      snprintf(cause, len, "%s", d);
      gpr_free(d);
      failed = true;
    }
  }
  grpc_slice_unref(details);
  grpc_metadata_array_destroy(&trailing);
  if (call) grpc_call_unref(call);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  return failed;
}

/* A call waiting for its channel to connect fails at once when the
 * connection is refused by the peer's TLS (wrong CA, no or wrong client
 * certificate, another name, plain text against TLS): waiting cannot help,
 * and the cause is only known here. A peer not listening yet (connection
 * refused) is waited for, as before. */
static void fail_if_refused(mdl_rpc_call *c, cli_call *k) {
  if (!strncmp(c->ch->target, "unix", 4) ||
      grpc_channel_check_connectivity_state(c->ch->ch, 0) != GRPC_CHANNEL_TRANSIENT_FAILURE)
    return;
  char cause[400];
  if (!connect_error(c->ch, cause, sizeof cause)) return;
  /* words of gRPC's handshake errors; "Connection refused" (not up yet) is
   * not among them */
  static const char *const tls_words[] = {
      "SSL",       "ssl",           "andshake",         "ertificate",
      "Peer name", "Socket closed", "Connection reset", NULL};
  bool tls = false;
  for (const char *const *w = tls_words; *w && !tls; w++) tls = strstr(cause, *w) != NULL;
  if (!tls) return;
  char msg[480];
  if (c->ch->tls)
    snprintf(msg, sizeof msg, "TLS handshake with %.60s failed: %.380s", c->ch->target, cause);
  else
    snprintf(msg, sizeof msg,
             "%.60s closed the connection at once (a worker expecting TLS?): %.360s", c->ch->target,
             cause);
  grpc_call_cancel_with_status(k->call, GRPC_STATUS_UNAVAILABLE, msg, NULL);
}

mdl_status mdl_rpc_call_all(mdl_rpc_call *calls, int n, int deadline_ms,
                            const volatile sig_atomic_t *abort_flag, mdl_error *err) {
  if (n <= 0) return MDL_OK;
  double t0 = mdl_now();
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
    k->stream = c->req.raw_chunks || mdl_rpc_stream_bulk(c->stream, bulk);
    if (c->ch->token) {
      k->md[k->n_md].key = grpc_slice_from_static_string(TOKEN_KEY);
      k->md[k->n_md].value = grpc_slice_from_copied_buffer(c->ch->token, c->ch->token_len);
      k->n_md++;
    }
    if (k->stream) {
      char v[64];
      /* the reply streams by the same rule as the request */
      size_t reply_min = c->stream > 0 ? 1 : mdl_rpc_stream_min();
      snprintf(v, sizeof v, "%zu %zu", reply_min, mdl_rpc_chunk_bytes());
      k->md[k->n_md].key = grpc_slice_from_static_string(STREAM_KEY);
      k->md[k->n_md].value = grpc_slice_from_copied_string(v);
      k->n_md++;
      mdl_rpc_out head = c->req;
      head.bulk_field = 0;
      k->send = mdl_rpc_encode_bb(&head);
      k->chunks = mdl_rpc_encode_chunks(&c->req, mdl_rpc_chunk_bytes(), &k->n_chunks);
      if (!cli_stream_start(c, k)) {
        c->code = MDL_RPC_INTERNAL;
        snprintf(c->detail, sizeof c->detail, "cannot start the call");
        continue;
      }
      k->started = true;
      pending++;
      continue;
    }
    k->send = mdl_rpc_encode_bb(&c->req);
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
  double last_check = mdl_now();
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
    if (mdl_now() - last_check > 0.25) {
      last_check = mdl_now();
      for (int i = 0; i < n; i++)
        if (cc[i].started && !cc[i].done && calls[i].wait_for_ready)
          fail_if_refused(&calls[i], &cc[i]);
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

/* --- test only ------------------------------------------------------------ */

mdl_rpc_code mdl_rpc_test_stall_stream(mdl_rpc_channel *ch, const char *method, const uint8_t *head,
                                       size_t head_len, int hold_ms, double *seconds) {
  double t0 = mdl_now();
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  grpc_slice m = grpc_slice_from_copied_string(method);
  grpc_call *call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
                                             gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  grpc_slice_unref(m);
  grpc_metadata md[2];
  memset(md, 0, sizeof md);
  size_t n_md = 0;
  md[n_md].key = grpc_slice_from_static_string(STREAM_KEY);
  md[n_md++].value = grpc_slice_from_static_string("1 1048576");
  if (ch->token) {
    md[n_md].key = grpc_slice_from_static_string(TOKEN_KEY);
    md[n_md++].value = grpc_slice_from_copied_buffer(ch->token, ch->token_len);
  }
  grpc_slice hs = grpc_slice_from_copied_buffer((const char *)head, head_len);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&hs, 1);
  grpc_slice_unref(hs);
  grpc_metadata_array initial, trailing;
  grpc_metadata_array_init(&initial);
  grpc_metadata_array_init(&trailing);
  grpc_status_code status = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();
  grpc_op ops[4];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = n_md;
  ops[0].data.send_initial_metadata.metadata = md;
  ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = bb;
  ops[2].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[2].data.recv_initial_metadata.recv_initial_metadata = &initial;
  ops[3].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[3].data.recv_status_on_client.trailing_metadata = &trailing;
  ops[3].data.recv_status_on_client.status = &status;
  ops[3].data.recv_status_on_client.status_details = &details;
  int pending = 0;
  if (grpc_call_start_batch(call, ops, 2, (void *)1, NULL) == GRPC_CALL_OK) pending++;
  if (grpc_call_start_batch(call, ops + 2, 2, (void *)2, NULL) == GRPC_CALL_OK) pending++;
  bool over = false, cancelled = false;
  while (pending > 0) {
    gpr_timespec until = cancelled ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
                                   : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                                  gpr_time_from_millis(50, GPR_TIMESPAN));
    grpc_event ev = grpc_completion_queue_next(cq, until, NULL);
    if (ev.type == GRPC_OP_COMPLETE) {
      pending--;
      if (ev.tag == (void *)2) over = true;
    } else if (!cancelled && (mdl_now() - t0) * 1000.0 > hold_ms) {
      grpc_call_cancel(call, NULL);
      cancelled = true;
    }
  }
  if (seconds) *seconds = mdl_now() - t0;
  grpc_byte_buffer_destroy(bb);
  for (size_t i = 0; i < n_md; i++) grpc_slice_unref(md[i].value);
  grpc_metadata_array_destroy(&initial);
  grpc_metadata_array_destroy(&trailing);
  grpc_slice_unref(details);
  grpc_call_unref(call);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  return over && !cancelled ? (mdl_rpc_code)status : MDL_RPC_CANCELLED;
}
