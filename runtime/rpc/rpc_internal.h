/* Private to runtime/rpc: what its pieces share (rpc_security.c: token and
 * transport checks; rpc_codec.c: pins, message and chunk encoding, decoding
 * over gRPC's buffers (rpc_wire.c holds the decoders themselves), the
 * streaming rule, init; rpc_server.c; rpc_client.c). Nothing outside
 * runtime/rpc includes it; rpc.h is the public header. */
#ifndef MDL_RUNTIME_RPC_INTERNAL_H
#define MDL_RUNTIME_RPC_INTERNAL_H

#include <grpc/grpc.h>
#include <grpc/support/time.h>

#include "runtime/rpc/rpc.h"
#include "runtime/rpc/rpc_wire.h"

#define TOKEN_KEY "memdl-token"
#define STREAM_KEY "memdl-stream"
#define POLL_MS 100
/* Bounds on the chunk size (MDL_RPC_CHUNK, a client's "memdl-stream"). */
#define CHUNK_MIN ((size_t)1 << 10)
#define CHUNK_MAX ((size_t)64 << 20)

static inline gpr_timespec deadline_in(int ms) {
  if (ms <= 0) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* --- security (rpc_security.c) ------------------------------------------- */

/* Reads a whole (small, at most 16 MiB) file as a NUL-terminated string;
 * *out is the caller's (free). */
mdl_status mdl_rpc_read_text(const char *what, const char *path, char **out, size_t *len,
                             mdl_error *err);

/* Compares a received token with the expected one in time that depends on
 * the expected token's length only. */
bool mdl_rpc_token_equal(const char *want, size_t want_len, const unsigned char *got,
                         size_t got_len);

/* --- codec (rpc_codec.c) -------------------------------------------------- */

/* Whether a bulk of bulk_len bytes streams in chunks (force: a call's
 * `stream`), and the figures of the rule (from the environment at init). */
bool mdl_rpc_stream_bulk(int force, size_t bulk_len);
size_t mdl_rpc_stream_min(void);
size_t mdl_rpc_chunk_bytes(void);

/* m as one gRPC message (without a copy of the bulk when m has a pin);
 * the caller's (grpc_byte_buffer_destroy). */
grpc_byte_buffer *mdl_rpc_encode_bb(const mdl_rpc_out *m);

/* The messages that follow the head of a streamed m: chunks of `chunk`
 * bytes (or m's raw_chunks). *n is their count; the array is the caller's,
 * and so are the buffers until sent (then grpc_byte_buffer_destroy). */
grpc_byte_buffer **mdl_rpc_encode_chunks(const mdl_rpc_out *m, size_t chunk, int *n);

/* Decodes a received message per spec (as mdl_rpc_decode_flat). */
mdl_status mdl_rpc_decode_bb(grpc_byte_buffer *bb, const mdl_rpc_in_spec *spec,
                             ProtobufCMessage **msg, size_t *bulk_len, mdl_error *err);

/* Takes one chunk message into b's destination, checking it against what
 * came before. */
mdl_status mdl_rpc_chunk_take(mdl_rpc_bulk_rx *b, grpc_byte_buffer *bb, mdl_error *err);

/* --- channel arguments (server and client) -------------------------------- */

typedef struct argv_builder {
  grpc_arg a[24];
  int n;
} argv_builder;

static inline void arg_int(argv_builder *b, const char *key, int v) {
  b->a[b->n].type = GRPC_ARG_INTEGER;
  b->a[b->n].key = (char *)key;
  b->a[b->n].value.integer = v;
  b->n++;
}

static inline void arg_str(argv_builder *b, const char *key, const char *v) {
  b->a[b->n].type = GRPC_ARG_STRING;
  b->a[b->n].key = (char *)key;
  b->a[b->n].value.string = (char *)v;
  b->n++;
}

static inline int msg_limit(size_t max) {
  if (max == 0 || max > (size_t)INT32_MAX) return INT32_MAX;
  return (int)max;
}

#endif
