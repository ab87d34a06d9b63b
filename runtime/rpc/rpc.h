/* memdl's RPC layer, the only module that includes <grpc/grpc.h>: servers
 * that dispatch calls by method name to handlers running on their own
 * threads, channels with keepalive, calls with deadlines, K calls in flight
 * at once, the shared token, TLS, and messages whose big `bytes` field (the
 * weights) travels outside protobuf-c, straight between the caller's buffers
 * and gRPC's slices: in the message itself (unary) or, when it is big, as a
 * stream of chunks on the same call (memdl.BulkChunk, see rpc_codec.c for
 * the rule
 * and its figures). Handlers see the same request either way. Knows nothing
 * of training. */
#ifndef MDL_RUNTIME_RPC_H
#define MDL_RUNTIME_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"

/* gRPC's status codes, same values, without its header. */
typedef enum mdl_rpc_code {
  MDL_RPC_OK = 0,
  MDL_RPC_CANCELLED = 1,
  MDL_RPC_UNKNOWN = 2,
  MDL_RPC_INVALID_ARGUMENT = 3,
  MDL_RPC_DEADLINE_EXCEEDED = 4,
  MDL_RPC_NOT_FOUND = 5,
  MDL_RPC_PERMISSION_DENIED = 7,
  MDL_RPC_RESOURCE_EXHAUSTED = 8,
  MDL_RPC_FAILED_PRECONDITION = 9,
  MDL_RPC_UNIMPLEMENTED = 12,
  MDL_RPC_INTERNAL = 13,
  MDL_RPC_UNAVAILABLE = 14,
  MDL_RPC_DATA_LOSS = 15,
  MDL_RPC_UNAUTHENTICATED = 16,
} mdl_rpc_code;

const char *mdl_rpc_code_name(mdl_rpc_code c);

/* The status a handler's failure travels as (INVALID -> INVALID_ARGUMENT,
 * NOMEM -> RESOURCE_EXHAUSTED, DIVERGED -> FAILED_PRECONDITION, else
 * INTERNAL). */
mdl_rpc_code mdl_rpc_code_for(mdl_status st);

/* Reference-counted grpc_init/grpc_shutdown. Call from the thread (or the
 * forked test) that uses RPC, never from a constructor (STYLE.md #15). The
 * first call also tunes malloc for big messages (M_MMAP_THRESHOLD 32 MiB,
 * M_TRIM_THRESHOLD 1 GiB), process-wide, and reads MDL_RPC_STREAM_MIN (bulk
 * bytes from which calls stream, for measuring; 0: never) and MDL_RPC_CHUNK
 * (chunk bytes) from the environment. */
void mdl_rpc_init(void);
void mdl_rpc_shutdown(void);

/* Who may talk and how. All strings are borrowed for the call that takes
 * the struct; files are read then. */
typedef struct mdl_rpc_security {
  const char *token; /* shared secret sent/expected as "memdl-token" metadata; NULL: none */
  size_t token_len;
  const char *tls_ca;   /* PEM file: client: the CA that signed servers; server: of client certs */
  const char *tls_cert; /* PEM file: this side's certificate (server: required for TLS) */
  const char *tls_key;  /* PEM file: this side's private key */
  bool require_client_cert; /* server: clients must present a certificate signed by tls_ca */
  bool insecure; /* plain TCP to or on a non-loopback address is allowed (with a warning) */
} mdl_rpc_security;

/* `memdl certs`: in dir (created mode 0700 when absent) a CA (ca.pem,
 * ca.key; an existing pair is reused, so hosts can be added later), for
 * each host <host>.pem and <host>.key signed by it (serving and client use;
 * names: the host, localhost, 127.0.0.1, ::1; replaced when present), and
 * a random token file "token" (kept when present). Keys and the token are
 * mode 0600. Says what it made on log. On failure err says which file or
 * step; files already written stay. */
mdl_status mdl_rpc_certs_make(const char *dir, const char *const *hosts, int n_hosts, int days,
                              FILE *log, mdl_error *err);

/* Reads a token file: its contents without trailing whitespace, at least 16
 * bytes, not readable by group or others. *out is the caller's (free). */
mdl_status mdl_rpc_token_read(const char *path, char **out, size_t *len, mdl_error *err);

/* True for "unix:..." and for host parts that are loopback (127.0.0.0/8,
 * ::1, localhost, or a name resolving only to loopback). */
bool mdl_rpc_addr_is_loopback(const char *addr);

/* Checks that plain TCP to/on addr is allowed: loopback, TLS configured, or
 * insecure set (then warns on log). MDL_ERR_INVALID otherwise. */
mdl_status mdl_rpc_check_transport(const char *addr, const mdl_rpc_security *sec, FILE *log,
                                   mdl_error *err);

/* Whether addr can be reached by other users of the machine whatever the
 * file modes say: TCP (loopback included) and "unix-abstract:"; not
 * "unix:/path". */
bool mdl_rpc_addr_is_shared(const char *addr);

/* Checks that a server on addr authenticates its callers: a path socket
 * (its folder's mode does), a token, or TLS requiring client certificates;
 * else only with sec.insecure (then warns on log, saying there is no
 * authentication). MDL_ERR_INVALID otherwise, saying what to give. */
mdl_status mdl_rpc_check_server_auth(const char *addr, const mdl_rpc_security *sec, FILE *log,
                                     mdl_error *err);

/* --- messages ------------------------------------------------------------ */

/* Keeps a zero-copy bulk buffer alive: gRPC may still hold slices of it
 * after a call completed. The owner waits before overwriting the buffer. */
typedef struct mdl_rpc_pin mdl_rpc_pin;
mdl_rpc_pin *mdl_rpc_pin_new(void);
void mdl_rpc_pin_free(mdl_rpc_pin *p); /* waits for outstanding references first */
/* Blocks until no gRPC slice refers to the pinned buffer. */
void mdl_rpc_pin_wait(mdl_rpc_pin *p);

/* A message to send: msg (may be NULL: empty) plus, when bulk_field is not
 * 0, that `bytes` field's contents taken from bulk (msg must leave the field
 * unset). With a pin the bulk is sent without a copy and must stay unchanged
 * until mdl_rpc_pin_wait returns; without one it is copied. */
typedef struct mdl_rpc_out {
  const ProtobufCMessage *msg;
  uint32_t bulk_field;
  const void *bulk;
  size_t bulk_len;
  mdl_rpc_pin *pin;
  /* When set, these bytes are sent as they are and the fields above are
   * ignored (tests send malformed messages this way). */
  const uint8_t *raw;
  size_t raw_len;
  /* Streamed calls only: when set, these messages follow the message
   * instead of the bulk's chunks (tests send malformed chunk sequences). */
  const struct mdl_rpc_raw *raw_chunks;
  int n_raw_chunks;
} mdl_rpc_out;

typedef struct mdl_rpc_raw {
  const uint8_t *p;
  size_t len;
} mdl_rpc_raw;

/* One chunk of a streamed bulk field as it goes on the wire (a
 * memdl.BulkChunk): bytes [offset, offset + len) of total. Tests build
 * malformed sequences with it. *out is the caller's (free). */
void mdl_rpc_encode_chunk(uint64_t offset, uint64_t total, const void *data, size_t len,
                          uint8_t **out, size_t *out_len);

/* Where a received message's bulk field goes: returns a buffer of len bytes,
 * or NULL with err filled to reject the message (wrong size). */
typedef void *(*mdl_rpc_bulk_fn)(void *ctx, size_t len, mdl_error *err);

/* How to decode a received message. Messages larger than max_bytes (without
 * the bulk field) are rejected before protobuf-c sees them. */
typedef struct mdl_rpc_in_spec {
  const ProtobufCMessageDescriptor *desc;
  uint32_t bulk_field; /* 0: none, the field is decoded by protobuf-c */
  mdl_rpc_bulk_fn bulk_dest;
  void *bulk_ctx;
  size_t max_bytes;
} mdl_rpc_in_spec;

/* Encodes m into a flat buffer exactly as it goes on the wire (tests use it
 * to build malformed messages). *out is the caller's (free). */
mdl_status mdl_rpc_encode_flat(const mdl_rpc_out *m, uint8_t **out, size_t *len, mdl_error *err);

/* Decodes data (wire format) per spec. On success *msg is the caller's
 * (protobuf_c_message_free_unpacked) and *bulk_len the bulk field's length
 * (0 when absent); on failure *msg is NULL and err says why. */
mdl_status mdl_rpc_decode_flat(const uint8_t *data, size_t len, const mdl_rpc_in_spec *spec,
                               ProtobufCMessage **msg, size_t *bulk_len, mdl_error *err);

/* --- server -------------------------------------------------------------- */

typedef struct mdl_rpc_server mdl_rpc_server;
typedef struct mdl_rpc_call_ctx mdl_rpc_call_ctx;

/* Handles one decoded request. Fills *reply (whose msg and bulk must stay
 * valid until the handler's serial section ends: the server encodes the
 * reply before releasing it). Returns MDL_OK or a failure whose err.msg
 * becomes the status details. Runs on its own thread. */
typedef mdl_status (*mdl_rpc_handler)(void *ctx, mdl_rpc_call_ctx *call,
                                      const ProtobufCMessage *req, size_t bulk_len,
                                      mdl_rpc_out *reply, mdl_error *err);

typedef struct mdl_rpc_method {
  const char *name; /* full path, "/memdl.Worker/Round" */
  const ProtobufCMessageDescriptor *req_desc;
  uint32_t req_bulk_field;
  mdl_rpc_bulk_fn req_bulk_dest; /* called with the server's ctx */
  size_t req_max_bytes;          /* bound on the request without its bulk */
  mdl_rpc_handler handler;
  /* Whether req_bulk_dest would accept len bytes now (false: err says why),
   * asked outside the serial section when a streamed request declares its
   * size, so a wrong size is refused before it is received. NULL: only
   * req_bulk_dest judges, once the stream has arrived. */
  bool (*req_bulk_check)(void *ctx, size_t len, mdl_error *err);
  /* One call of this method at a time: another is refused
   * (RESOURCE_EXHAUSTED) before its message is received. */
  bool exclusive;
  /* The handler (and req_bulk_dest) runs outside the serial section, at the
   * same time as any other handler, so it must guard what it touches
   * itself: for peers' messages that arrive while a long handler (a round)
   * holds the section and waits for them. Streamed requests are refused. */
  bool concurrent;
} mdl_rpc_method;

typedef struct mdl_rpc_server_opts {
  const mdl_rpc_method *methods;
  int n_methods;
  void *ctx; /* handed to handlers and bulk_dest */
  mdl_rpc_security sec;
  size_t max_message_bytes; /* 0: 2 GiB - 1 */
  /* Smallest client ping interval tolerated (ms); <= the clients' keepalive. */
  int min_ping_interval_ms;
  /* mdl_rpc_server_run returns after this long (from the start, or the
   * last call that passed the token check, or the last moment a handler was
   * at work; 0: never), whatever its calls are waiting for: a worker whose
   * driver is gone exits, whoever else keeps knocking or stalls a call. */
  int idle_timeout_ms;
  /* A call whose next request message (the request, or a chunk of a
   * streamed one) takes longer than this is cancelled (0: 30000). Streamed
   * requests are received outside the handlers' serial section, one at a
   * time, so a stalled one delays other streamed requests by at most this
   * and rounds not at all. */
  int stream_timeout_ms;
  /* The server's own pings on every connection (0: 10000 and
   * MDL_RPC_KEEPALIVE_TIMEOUT_MS): a peer that vanished without closing its
   * connection has its calls cancelled. */
  int keepalive_ms;
  int keepalive_timeout_ms;
  FILE *log; /* refusals and warnings; NULL: stderr */
} mdl_rpc_server_opts;

/* Binds addr ("unix:/path", "host:port", "host:0" for any port), applies
 * TLS/token settings and starts serving. Refuses plain TCP on a non-loopback
 * address unless sec.insecure (then warns). On success *out is the caller's
 * (mdl_rpc_server_free); on failure *out is NULL. opts->methods must outlive
 * the server. */
mdl_status mdl_rpc_server_new(const char *addr, const mdl_rpc_server_opts *opts,
                              mdl_rpc_server **out, mdl_error *err);

/* The TCP port bound (useful with port 0); 0 for Unix sockets. */
int mdl_rpc_server_port(const mdl_rpc_server *s);

/* Polls and dispatches until mdl_rpc_server_stop, a handler's
 * mdl_rpc_call_stop_server (after its reply is sent), or the idle timeout;
 * then shuts down in gRPC's order (cancel calls, join handlers). *idle is
 * set when the idle timeout ended it (may be NULL). */
mdl_status mdl_rpc_server_run(mdl_rpc_server *s, bool *idle, mdl_error *err);

/* Asks a running server loop to return; safe from any thread and from a
 * signal handler. */
void mdl_rpc_server_stop(mdl_rpc_server *s);

/* Shuts down if still serving and frees. NULL is safe. */
void mdl_rpc_server_free(mdl_rpc_server *s);

/* Inside a handler: the client gave up (deadline, cancel, disconnect). */
bool mdl_rpc_call_cancelled(const mdl_rpc_call_ctx *call);
/* The cancellation flag itself, for loops that poll it. */
const volatile int *mdl_rpc_call_cancel_flag(const mdl_rpc_call_ctx *call);
/* Inside a handler: stop the server once this call's reply is sent. */
void mdl_rpc_call_stop_server(mdl_rpc_call_ctx *call);
/* The peer's address as gRPC names it ("ipv4:127.0.0.1:4242", "unix:..."). */
const char *mdl_rpc_call_peer(const mdl_rpc_call_ctx *call);

/* --- client -------------------------------------------------------------- */

typedef struct mdl_rpc_channel mdl_rpc_channel;

/* The default wait for a ping's answer, client and server. A ping queues
 * behind the data already in the sender's socket buffer, and on a busy slow
 * link that takes seconds: 60 MB to each of 8 workers over one 100 Mbit/s
 * link left pings unanswered for more than 3 s (issue 13). gRPC's own
 * default; a dead peer is still noticed by the call's deadline, and callers
 * that want quick detection set a shorter timeout explicitly. */
#define MDL_RPC_KEEPALIVE_TIMEOUT_MS 20000

typedef struct mdl_rpc_channel_opts {
  mdl_rpc_security sec;
  size_t max_message_bytes; /* 0: 2 GiB - 1 */
  /* Pings every keepalive_ms even when idle; a peer that does not answer
   * within keepalive_timeout_ms (a SIGSTOPped process) fails its calls with
   * UNAVAILABLE. 0: 2000 and MDL_RPC_KEEPALIVE_TIMEOUT_MS. */
  int keepalive_ms;
  int keepalive_timeout_ms;
  const char *tls_server_name; /* override the name checked in the server's certificate */
} mdl_rpc_channel_opts;

/* A channel to target ("unix:/path" or "host:port"); connects lazily.
 * Refuses plain TCP to a non-loopback address unless sec.insecure. On
 * success *out is the caller's (mdl_rpc_channel_free). */
mdl_status mdl_rpc_channel_new(const char *target, const mdl_rpc_channel_opts *opts,
                               mdl_rpc_channel **out, mdl_error *err);
void mdl_rpc_channel_free(mdl_rpc_channel *ch);
const char *mdl_rpc_channel_target(const mdl_rpc_channel *ch);

/* Whether the channel is connected now; if not, asks it to try (a later
 * call may then say yes). Does not wait. */
bool mdl_rpc_channel_connected(mdl_rpc_channel *ch);

/* Whether the channel's last connection attempt failed (refused, reset,
 * handshake timed out) and it waits to retry: a peer that is down. A
 * channel still connecting, or idle, is not. Does not wait. */
bool mdl_rpc_channel_failing(mdl_rpc_channel *ch);

/* One unary call of a batch. Inputs are borrowed until mdl_rpc_call_all
 * returns; outputs are filled by it. */
typedef struct mdl_rpc_call {
  mdl_rpc_channel *ch;
  const char *method;
  mdl_rpc_out req;
  mdl_rpc_in_spec reply_spec;
  bool wait_for_ready; /* wait for a starting server instead of failing at once */
  /* 0: the bulk streams in chunks when it is big (rpc_codec.c's rule), and the
   * reply's too; 1: always stream (both ways); -1: never. */
  int stream;
  /* out */
  mdl_rpc_code code;
  char detail[512];
  ProtobufCMessage *reply; /* the caller's (protobuf_c_message_free_unpacked); NULL on failure */
  size_t bulk_len;
  double seconds; /* from the batch's start to this call's completion */
} mdl_rpc_call;

/* Starts all n calls on one completion queue, each with the same deadline
 * (ms from now), and waits for every one; decodes each reply as it arrives.
 * A call's own failure is reported in its code/detail, not as the return
 * value: MDL_OK unless calls could not be started or *abort became nonzero
 * (then the calls in flight are cancelled and MDL_ERR_INTERNAL returned). */
mdl_status mdl_rpc_call_all(mdl_rpc_call *calls, int n, int deadline_ms,
                            const volatile sig_atomic_t *abort, mdl_error *err);

/* Frees the replies of n calls and clears them. */
void mdl_rpc_calls_clear(mdl_rpc_call *calls, int n);

/* Test only (tests/hostile_test.c plays a stalling peer with it): starts a
 * streamed call of method on ch (with the channel's token), sends the head
 * message and then nothing, not even the half-close, for up to hold_ms; a
 * call still open then is cancelled. Returns the status the server ended
 * the call with (MDL_RPC_CANCELLED when it did not); *seconds (may be
 * NULL) is how long the call lasted. */
mdl_rpc_code mdl_rpc_test_stall_stream(mdl_rpc_channel *ch, const char *method, const uint8_t *head,
                                       size_t head_len, int hold_ms, double *seconds);

/* A buffer for weights that travel often: page-aligned, transparent huge
 * pages requested (page faults are slow on VMs), zero-filled, reused across
 * rounds. NULL when it does not fit. Free with the same size. */
void *mdl_rpc_buffer_alloc(size_t bytes);
void mdl_rpc_buffer_free(void *p, size_t bytes);

#endif
