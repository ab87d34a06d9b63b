/* Deep copy through the wire format: protobuf-c has no copy function, and
 * pack+unpack is exact for every field type. The diff walks the
 * descriptors: protobuf-c has no comparison either. */
#include "common/pb.h"

#include <stdint.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- mdl_pb_diff ---- */

size_t mdl_pb_value_size(ProtobufCType t) {
  switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
      return sizeof(uint64_t);
    case PROTOBUF_C_TYPE_DOUBLE:
      return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
      return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
      return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
      return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
      return sizeof(ProtobufCMessage *);
    default: /* the int32 and uint32 families, float, enum */
      return sizeof(int32_t);
  }
}

static bool value_differs(const ProtobufCFieldDescriptor *f, const void *a, const void *b,
                          char *path, size_t cap, size_t used);

static bool message_differs(const ProtobufCMessage *a, const ProtobufCMessage *b, char *path,
                            size_t cap, size_t used) {
  if (!a || !b) return a != b;
  const ProtobufCMessageDescriptor *d = a->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const char *pa = (const char *)a + f->offset, *pb = (const char *)b + f->offset;
    size_t at = used;
    if (at < cap) at += (size_t)snprintf(path + at, cap - at, "%s%s", used ? "." : "", f->name);
    if (at >= cap) at = cap - 1;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t na = *(const size_t *)((const char *)a + f->quantifier_offset);
      size_t nb = *(const size_t *)((const char *)b + f->quantifier_offset);
      if (na != nb) return true;
      size_t sz = mdl_pb_value_size(f->type);
      const char *va = *(const char *const *)pa, *vb = *(const char *const *)pb;
      for (size_t k = 0; k < na; k++) {
        size_t at2 = at;
        if (at2 < cap) at2 += (size_t)snprintf(path + at2, cap - at2, "[%zu]", k);
        if (at2 >= cap) at2 = cap - 1;
        if (value_differs(f, va + k * sz, vb + k * sz, path, cap, at2)) return true;
      }
      continue;
    }
    bool has_a = true, has_b = true;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
      has_a = *(const uint32_t *)((const char *)a + f->quantifier_offset) == f->id;
      has_b = *(const uint32_t *)((const char *)b + f->quantifier_offset) == f->id;
    } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
               f->type != PROTOBUF_C_TYPE_STRING) {
      has_a = *(const protobuf_c_boolean *)((const char *)a + f->quantifier_offset);
      has_b = *(const protobuf_c_boolean *)((const char *)b + f->quantifier_offset);
    }
    if (has_a != has_b) return true;
    if (has_a && value_differs(f, pa, pb, path, cap, at)) return true;
  }
  return false;
}

static bool value_differs(const ProtobufCFieldDescriptor *f, const void *a, const void *b,
                          char *path, size_t cap, size_t used) {
  switch (f->type) {
    case PROTOBUF_C_TYPE_MESSAGE:
      return message_differs(*(const ProtobufCMessage *const *)a,
                             *(const ProtobufCMessage *const *)b, path, cap, used);
    case PROTOBUF_C_TYPE_STRING: {
      const char *sa = *(const char *const *)a, *sb = *(const char *const *)b;
      if (!sa || !sb) return sa != sb;
      return strcmp(sa, sb) != 0;
    }
    case PROTOBUF_C_TYPE_BYTES: {
      const ProtobufCBinaryData *da = a, *db = b;
      return da->len != db->len || (da->len && memcmp(da->data, db->data, da->len) != 0);
    }
    default:
      return memcmp(a, b, mdl_pb_value_size(f->type)) != 0;
  }
}

bool mdl_pb_diff(const ProtobufCMessage *a, const ProtobufCMessage *b, char *path, size_t cap) {
  if (cap) path[0] = 0;
  return message_differs(a, b, path, cap, 0);
}
