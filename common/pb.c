/* Deep copy through the wire format: protobuf-c has no copy function, and
 * pack+unpack is exact for every field type. */
#include "common/pb.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/error.h"

void *mdl_pb_dup(const void *m) {
  if (!m) return NULL;
  const ProtobufCMessage *msg = m;
  size_t n = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = mdl_xmalloc(n);
  protobuf_c_message_pack(msg, buf);
  ProtobufCMessage *copy = protobuf_c_message_unpack(msg->descriptor, NULL, n, buf);
  free(buf);
  if (!copy) { /* unpacking bytes we just packed fails only without memory */
    fputs("memdl: out of memory copying a message\n", stderr);
    abort();
  }
  return copy;
}

void mdl_pb_free(void *m) {
  if (m) protobuf_c_message_free_unpacked((ProtobufCMessage *)m, NULL);
}
