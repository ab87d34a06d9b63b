/* Private to runtime/rpc (and its fuzz targets): memdl's wire decoding
 * without gRPC (rpc_wire.c). rpc_internal.h adds the gRPC side. */
#ifndef MDL_RUNTIME_RPC_WIRE_H
#define MDL_RUNTIME_RPC_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/rpc/rpc.h"

#define DEFAULT_MAX_MESSAGE ((size_t)INT32_MAX)

/* Writes v as a protobuf varint (at most 10 bytes); returns its length. */
size_t mdl_rpc_put_varint(uint8_t *p, uint64_t v);

/* A message as a list of byte ranges (gRPC's slices, or one flat buffer). */
typedef struct mdl_rpc_segs {
  const uint8_t **p;
  size_t *n;
  int count;
  int i;       /* current segment */
  size_t off;  /* offset in it */
  size_t left; /* bytes left in the whole message */
} mdl_rpc_segs;

/* Decodes s per spec (as mdl_rpc_decode_flat). */
mdl_status mdl_rpc_decode_segs(mdl_rpc_segs *s, const mdl_rpc_in_spec *spec, ProtobufCMessage **msg,
                               size_t *bulk_len, mdl_error *err);

/* A bulk field arriving as chunks: each one is checked against what came
 * before (same total, offset exactly where the last ended, inside the
 * total) and copied straight into spec's destination, asked for once, with
 * the total, at the first chunk. */
typedef struct mdl_rpc_bulk_rx {
  const mdl_rpc_in_spec *spec;
  size_t limit; /* the total may not exceed it (the transport's message limit) */
  uint8_t *dst;
  uint64_t total, got;
  int chunks;
  bool head_bulk; /* the message itself carried the field: no chunks may follow */
} mdl_rpc_bulk_rx;

/* Takes one chunk message (consumed from s) into b's destination, checking
 * it against what came before. */
mdl_status mdl_rpc_chunk_take_segs(mdl_rpc_bulk_rx *b, mdl_rpc_segs *s, mdl_error *err);
mdl_status mdl_rpc_chunk_take_flat(mdl_rpc_bulk_rx *b, const uint8_t *data, size_t len,
                                   mdl_error *err);

/* After the last message: a chunked field must be complete. */
mdl_status mdl_rpc_chunks_end(const mdl_rpc_bulk_rx *b, size_t *bulk_len, mdl_error *err);

#endif
