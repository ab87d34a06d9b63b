/* libFuzzer targets for the RPC message decoders (runtime/rpc/rpc_wire.c),
 * one per -DTARGET, with the specs the worker uses (runtime/dist/worker.c):
 *   TARGET_SETUP   a memdl.SetupRequest (no bulk field, 1 MiB bound here),
 *                  then its plan bytes as a memdl.Plan, as on_setup does.
 *   TARGET_ROUND   a memdl.RoundRequest whose field 5 (weights) goes to a
 *                  destination of 64 floats; byte 0 picks whether the
 *                  destination accepts any length (then it must be 256).
 *   TARGET_CHUNKS  a sequence of memdl.BulkChunk messages, each prefixed by
 *                  a 2-byte length, into a 1 MiB-limited destination sized by
 *                  the first chunk's total; then the end-of-stream check.
 * Any input must fail with a message or decode to something consistent.
 * Built and run by run_rpc_fuzz.sh (no gRPC needed). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "plan.pb-c.h"
#include "rpc.pb-c.h"
#include "runtime/rpc/rpc_wire.h"

static void die(const char *what) {
  fprintf(stderr, "rpc_fuzz: %s\n", what);
  abort();
}

#if defined(TARGET_SETUP)
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mdl_rpc_in_spec spec = {.desc = &memdl__setup_request__descriptor, .max_bytes = 1 << 20};
  ProtobufCMessage *m = NULL;
  size_t bulk = 7;
  mdl_error err;
  mdl_error_clear(&err);
  if (mdl_rpc_decode_flat(data, size, &spec, &m, &bulk, &err) != MDL_OK) {
    if (m || !err.msg[0]) die("failure without a message, or with one decoded");
    return 0;
  }
  if (!m || bulk != 0) die("success without a message, or with a bulk field");
  const Memdl__SetupRequest *r = (const Memdl__SetupRequest *)m;
  if (r->has_plan && r->plan.len) {
    Memdl__Plan *plan = (Memdl__Plan *)protobuf_c_message_unpack(&memdl__plan__descriptor, NULL,
                                                                 r->plan.len, r->plan.data);
    if (plan) protobuf_c_message_free_unpacked(&plan->base, NULL);
  }
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}
#elif defined(TARGET_ROUND)
static float g_weights[64];
static bool g_any;

static void *dest(void *ctx, size_t len, mdl_error *err) {
  if (!g_any && len != sizeof g_weights) {
    mdl_errorf(err, MDL_ERR_INVALID, "weights of %zu bytes", len);
    return NULL;
  }
  if (len > sizeof g_weights) { /* an accepting destination still has a size */
    mdl_errorf(err, MDL_ERR_INVALID, "weights of %zu bytes do not fit", len);
    return NULL;
  }
  return g_weights;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  g_any = data[0] & 1;
  mdl_rpc_in_spec spec = {.desc = &memdl__round_request__descriptor,
                          .bulk_field = 5,
                          .bulk_dest = dest,
                          .max_bytes = 1 << 20};
  ProtobufCMessage *m = NULL;
  size_t bulk = 0;
  mdl_error err;
  mdl_error_clear(&err);
  if (mdl_rpc_decode_flat(data + 1, size - 1, &spec, &m, &bulk, &err) != MDL_OK) {
    if (m || !err.msg[0]) die("failure without a message, or with one decoded");
    return 0;
  }
  if (!m) die("success without a message");
  if (bulk > sizeof g_weights || (!g_any && bulk && bulk != sizeof g_weights))
    die("bulk field of a size the destination refused");
  const Memdl__RoundRequest *r = (const Memdl__RoundRequest *)m;
  if (r->has_weights && r->weights.len) die("the bulk field reached protobuf-c");
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}
#elif defined(TARGET_CHUNKS)
#define LIMIT ((size_t)1 << 20)
static uint8_t *g_buf;
static size_t g_len;

static void *dest(void *ctx, size_t len, mdl_error *err) {
  if (len > LIMIT) die("destination asked for more than the limit");
  free(g_buf);
  g_buf = malloc(len ? len : 1);
  g_len = len;
  return g_buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mdl_rpc_in_spec spec = {.desc = &memdl__round_request__descriptor,
                          .bulk_field = 5,
                          .bulk_dest = dest,
                          .max_bytes = 1 << 20};
  mdl_rpc_bulk_rx rx = {.spec = &spec, .limit = LIMIT, .head_bulk = size > 0 && (data[0] & 0x80)};
  mdl_error err;
  mdl_error_clear(&err);
  mdl_status st = MDL_OK;
  size_t i = 1;
  while (st == MDL_OK && i + 2 <= size) {
    size_t n = (size_t)data[i] | (size_t)data[i + 1] << 8;
    i += 2;
    if (n > size - i) n = size - i;
    st = mdl_rpc_chunk_take_flat(&rx, data + i, n, &err);
    i += n;
    if (rx.got > rx.total || (rx.chunks && rx.total != g_len)) die("accounting broken");
  }
  size_t bulk = 0;
  if (st == MDL_OK) st = mdl_rpc_chunks_end(&rx, &bulk, &err);
  if (st != MDL_OK && !err.msg[0]) die("failure without a message");
  if (st == MDL_OK && rx.chunks && (bulk != g_len || rx.got != rx.total)) die("incomplete bulk");
  free(g_buf);
  g_buf = NULL;
  g_len = 0;
  return 0;
}
#else
#error "define TARGET_SETUP, TARGET_ROUND or TARGET_CHUNKS"
#endif
