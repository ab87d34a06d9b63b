/* Small protobuf-c helpers every module wants: deep copy, free, and the
 * first field in which two messages differ. */
#ifndef MDL_COMMON_PB_H
#define MDL_COMMON_PB_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

/* A deep copy of m (via the wire format), owned by the caller and freed
 * with mdl_pb_free. NULL in, NULL out. Aborts only on memory exhaustion. */
void *mdl_pb_dup(const void *m);

/* protobuf_c_message_free_unpacked, NULL-safe. */
void mdl_pb_free(void *m);

/* Bytes one value of a field of type t takes in a message struct (and in
 * a repeated field's array). */
size_t mdl_pb_value_size(ProtobufCType t);

/* Whether protobuf-c stores values of type t as pointers (strings and
 * messages), whose presence is the pointer rather than a has_ flag. */
static inline bool mdl_pb_is_pointer(ProtobufCType t) {
  return t == PROTOBUF_C_TYPE_STRING || t == PROTOBUF_C_TYPE_MESSAGE;
}

/* Whether a and b (of the same type) differ; when they do, where the first
 * difference is (fields in declaration order, depth first), as a path such
 * as "solver.base_lr" or "net[0].net.layer[2].convolution_param.num_output",
 * written into path (cap bytes). */
bool mdl_pb_diff(const ProtobufCMessage *a, const ProtobufCMessage *b, char *path, size_t cap);

#endif
