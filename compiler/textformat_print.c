/* Protobuf text format for protobuf-c messages, the writing half: the
 * printer behind mdl_text_print (textformat.h), whose output the parser in
 * textformat.c reads back to a message that packs to the same bytes. */
#include "compiler/textformat.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/pb.h"

/* ------------------------------------------------------------ printer -- */

typedef struct sbuf {
  char *s;
  size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->cap - b->len <= n) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= n) cap *= 2;
    b->s = mdl_xrealloc(b->s, cap);
    b->cap = cap;
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) {
  sb_add(b, s, strlen(s));
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf *b, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0) sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sb_indent(sbuf *b, int level) {
  for (int i = 0; i < level; i++) sb_add(b, "  ", 2);
}

/* Quoted with C escapes; bytes fields also escape non-ASCII, strings keep
 * UTF-8 as it is. Octal escapes are always three digits so that a digit
 * after them is not swallowed on reading. */
static void print_quoted(sbuf *b, const uint8_t *s, size_t n, int escape_high) {
  sb_add(b, "\"", 1);
  size_t run = 0; /* bytes copied through unchanged, flushed in one go */
  for (size_t i = 0; i < n; i++) {
    uint8_t c = s[i];
    const char *esc = NULL;
    char oct[8];
    switch (c) {
      case '\n':
        esc = "\\n";
        break;
      case '\r':
        esc = "\\r";
        break;
      case '\t':
        esc = "\\t";
        break;
      case '"':
        esc = "\\\"";
        break;
      case '\'':
        esc = "\\'";
        break;
      case '\\':
        esc = "\\\\";
        break;
      default:
        if (c < 0x20 || c == 0x7f || (escape_high && c >= 0x80)) {
          snprintf(oct, sizeof oct, "\\%03o", c);
          esc = oct;
        }
    }
    if (!esc) {
      run++;
      continue;
    }
    sb_add(b, (const char *)s + i - run, run);
    run = 0;
    sb_str(b, esc);
  }
  sb_add(b, (const char *)s + n - run, run);
  sb_add(b, "\"", 1);
}

/* The fewest significant digits that read back to the same value (float
 * or double, by is_float), written like "%g" except that integers below
 * 10^9 (float) or 10^16 (double) are written out in full: "100", not
 * "1e+02". */
static void format_shortest(char *buf, size_t cap, double v, int is_float) {
  int max_prec = is_float ? 9 : 17;
  int prec = 1;
  for (; prec <= max_prec; prec++) {
    snprintf(buf, cap, "%.*g", prec, v);
    if (is_float ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) break;
  }
  const char *e = strchr(buf, 'e');
  if (e) {
    long exp10 = strtol(e + 1, NULL, 10);
    if (exp10 >= prec && exp10 < (is_float ? 9 : 16)) snprintf(buf, cap, "%.*g", (int)exp10 + 1, v);
  }
}

static void print_floating(sbuf *b, double v, int is_float) {
  if (isnan(v) || isinf(v)) {
    sb_str(b, isnan(v) ? "nan" : v < 0 ? "-inf" : "inf");
    return;
  }
  char tmp[48];
  format_shortest(tmp, sizeof tmp, v, is_float);
  sb_str(b, tmp);
}

static void print_message(sbuf *b, const ProtobufCMessage *msg, int indent);

/* One "name: value" line or "name { ... }" block; member points at the
 * value as stored (in the struct or in a repeated array). */
static void print_field(sbuf *b, const ProtobufCFieldDescriptor *fd, const void *member,
                        int indent) {
  sb_indent(b, indent);
  size_t name_len = strlen(fd->name);
  if (name_len > 1 && fd->name[name_len - 1] == '_') name_len--; /* see lookup_field */
  sb_printf(b, "%.*s", (int)name_len, fd->name);
  if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
    const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)member;
    sb_str(b, " {\n");
    if (sub) print_message(b, sub, indent + 1);
    sb_indent(b, indent);
    sb_str(b, "}\n");
    return;
  }
  sb_str(b, ": ");
  switch (fd->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
      sb_printf(b, "%" PRId32, *(const int32_t *)member);
      break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
      sb_printf(b, "%" PRIu32, *(const uint32_t *)member);
      break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
      sb_printf(b, "%" PRId64, *(const int64_t *)member);
      break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
      sb_printf(b, "%" PRIu64, *(const uint64_t *)member);
      break;
    case PROTOBUF_C_TYPE_FLOAT:
      print_floating(b, *(const float *)member, 1);
      break;
    case PROTOBUF_C_TYPE_DOUBLE:
      print_floating(b, *(const double *)member, 0);
      break;
    case PROTOBUF_C_TYPE_BOOL:
      sb_str(b, *(const protobuf_c_boolean *)member ? "true" : "false");
      break;
    case PROTOBUF_C_TYPE_ENUM: {
      int v = *(const int *)member;
      const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(fd->descriptor, v);
      if (ev)
        sb_str(b, ev->name);
      else
        sb_printf(b, "%d", v);
      break;
    }
    case PROTOBUF_C_TYPE_STRING: {
      const char *s = *(const char *const *)member;
      print_quoted(b, (const uint8_t *)(s ? s : ""), s ? strlen(s) : 0, 0);
      break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
      const ProtobufCBinaryData *bd = member;
      print_quoted(b, bd->data ? bd->data : (const uint8_t *)"", bd->data ? bd->len : 0, 1);
      break;
    }
    default:
      break;
  }
  sb_str(b, "\n");
}

/* Mirrors protobuf_c_message_pack's idea of "present", so that printing and
 * re-parsing gives a message that packs to the same bytes. */
static int is_present(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *fd) {
  const char *base = (const char *)msg;
  const void *member = base + fd->offset;
  const void *quantifier = base + fd->quantifier_offset;
  if (fd->label == PROTOBUF_C_LABEL_REQUIRED) return 1;
  if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
    if (*(const uint32_t *)quantifier != fd->id) return 0;
  } else if (fd->label == PROTOBUF_C_LABEL_OPTIONAL && !mdl_pb_is_pointer(fd->type)) {
    return *(const protobuf_c_boolean *)quantifier != 0;
  }
  if (mdl_pb_is_pointer(fd->type)) {
    const void *ptr = *(const void *const *)member;
    if (!ptr || ptr == fd->default_value) return 0;
    if (fd->label == PROTOBUF_C_LABEL_NONE && fd->type == PROTOBUF_C_TYPE_STRING)
      return *(const char *)ptr != '\0';
    return 1;
  }
  if (fd->label != PROTOBUF_C_LABEL_NONE || (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) return 1;
  /* proto3 singular scalar: present when not zero */
  switch (fd->type) {
    case PROTOBUF_C_TYPE_FLOAT:
      return *(const float *)member != 0;
    case PROTOBUF_C_TYPE_DOUBLE:
      return *(const double *)member != 0;
    case PROTOBUF_C_TYPE_BYTES:
      return ((const ProtobufCBinaryData *)member)->len != 0;
    default:
      return mdl_pb_value_size(fd->type) == 8 ? *(const uint64_t *)member != 0
                                              : *(const uint32_t *)member != 0;
  }
}

/* Recursion follows the message tree, which protobuf-c's own pack and free
 * walk recursively too. */
static void print_message(sbuf *b, const ProtobufCMessage *msg, int indent) {
  const ProtobufCMessageDescriptor *desc = msg->descriptor;
  for (unsigned i = 0; i < desc->n_fields; i++) {
    const ProtobufCFieldDescriptor *fd = &desc->fields[i];
    if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)((const char *)msg + fd->quantifier_offset);
      const char *array = *(const char *const *)((const char *)msg + fd->offset);
      size_t size = mdl_pb_value_size(fd->type);
      for (size_t k = 0; k < n && array; k++) print_field(b, fd, array + k * size, indent);
    } else if (is_present(msg, fd)) {
      print_field(b, fd, (const char *)msg + fd->offset, indent);
    }
  }
}

char *mdl_text_print(const ProtobufCMessage *msg) {
  if (!msg) return NULL;
  sbuf b = {0};
  sb_add(&b, "", 0);
  print_message(&b, msg, 0);
  return b.s;
}
