/* Protobuf text format for protobuf-c messages, the reading half: a lexer
 * and a parser that fills messages through their descriptors (the printer
 * is textformat_print.c). No extensions, no Any, no required-field checks
 * (caffe.proto and memdl's schemas have none). */
#include "compiler/textformat.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/pb.h"
#include "common/suggest.h"

/* ---------------------------------------------------------------- lexer -- */

typedef enum tok_kind { TOK_EOF, TOK_IDENT, TOK_NUMBER, TOK_STRING, TOK_SYMBOL } tok_kind;

/* A token points into the input; line and col are 1-based, col in bytes. */
typedef struct token {
  tok_kind kind;
  const char *text;
  size_t len;
  size_t line, col;
} token;

typedef struct parser {
  const char *filename;
  const char *pos, *end;
  const char *line_start;
  size_t line;
  token tok; /* the one token of lookahead */
  mdl_error *err;
  char *scratch; /* decoded string literals */
  size_t scratch_len, scratch_cap;
} parser;

#define TRY(expr)                          \
  do {                                     \
    mdl_status try_st_ = (expr);           \
    if (try_st_ != MDL_OK) return try_st_; \
  } while (0)

static mdl_status fail_at(parser *p, size_t line, size_t col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static mdl_status fail_at(parser *p, size_t line, size_t col, const char *fmt, ...) {
  char msg[MDL_ERROR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return mdl_errorf(p->err, MDL_ERR_INVALID, "%s:%zu:%zu: %s", p->filename, line, col, msg);
}

#define FAIL(p, t, ...) fail_at((p), (t)->line, (t)->col, __VA_ARGS__)

static mdl_status out_of_memory(parser *p, size_t bytes) {
  return mdl_errorf(p->err, MDL_ERR_NOMEM, "%s:%zu:%zu: out of memory (%zu bytes) while parsing",
                    p->filename, p->tok.line, p->tok.col, bytes);
}

static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

static int is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_hex(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int hex_value(char c) {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Writes a short, printable rendering of s (at most ~40 bytes of it). */
static void render(char *out, size_t cap, const char *s, size_t n) {
  size_t o = 0;
  size_t shown = n > 40 ? 40 : n;
  for (size_t i = 0; i < shown && o + 8 < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c < 0x20 || c >= 0x7f) {
      o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    } else {
      out[o++] = (char)c;
    }
  }
  if (shown < n && o + 4 < cap) {
    memcpy(out + o, "...", 3);
    o += 3;
  }
  out[o] = '\0';
}

/* "end of file", "a string literal" or the token's text in quotes. */
static const char *describe(const token *t, char *buf, size_t cap) {
  if (t->kind == TOK_EOF) return "end of file";
  if (t->kind == TOK_STRING) return "a string literal";
  char inner[200];
  render(inner, sizeof inner, t->text, t->len);
  snprintf(buf, cap, "\"%s\"", inner);
  return buf;
}

#define FOUND(t) describe((t), (char[256]){0}, 256)

static mdl_status lex_string(parser *p, token *t) {
  char quote = *p->pos++;
  for (;;) {
    if (p->pos == p->end || *p->pos == '\n') return FAIL(p, t, "unterminated string");
    char c = *p->pos++;
    if (c == quote) break;
    if (c == '\\') {
      if (p->pos == p->end || *p->pos == '\n') return FAIL(p, t, "unterminated string");
      p->pos++;
    }
  }
  t->kind = TOK_STRING;
  t->len = (size_t)(p->pos - t->text);
  return MDL_OK;
}

/* Numbers are lexed loosely (digits, letters, dots, exponent signs) and
 * checked against the field's type by the parser, which can then say
 * "expected integer for int32 field" instead of a generic lexer error. */
static void lex_number(parser *p, token *t) {
  int hex = p->pos + 1 < p->end && p->pos[0] == '0' && (p->pos[1] == 'x' || p->pos[1] == 'X');
  p->pos++;
  while (p->pos < p->end) {
    char c = *p->pos;
    if (is_alpha(c) || is_digit(c) || c == '.') {
      p->pos++;
    } else if ((c == '+' || c == '-') && !hex && (p->pos[-1] == 'e' || p->pos[-1] == 'E')) {
      p->pos++;
    } else {
      break;
    }
  }
  t->kind = TOK_NUMBER;
  t->len = (size_t)(p->pos - t->text);
}

/* Advances p->tok to the next token. */
static mdl_status lex(parser *p) {
  while (p->pos < p->end) {
    char c = *p->pos;
    if (c == '\n') {
      p->pos++;
      p->line++;
      p->line_start = p->pos;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f') {
      p->pos++;
    } else if (c == '#') {
      while (p->pos < p->end && *p->pos != '\n') p->pos++;
    } else {
      break;
    }
  }
  token *t = &p->tok;
  t->text = p->pos;
  t->len = 0;
  t->line = p->line;
  t->col = (size_t)(p->pos - p->line_start) + 1;
  if (p->pos == p->end) {
    t->kind = TOK_EOF;
    return MDL_OK;
  }
  char c = *p->pos;
  if (is_alpha(c)) {
    while (p->pos < p->end && (is_alpha(*p->pos) || is_digit(*p->pos))) p->pos++;
    t->kind = TOK_IDENT;
    t->len = (size_t)(p->pos - t->text);
    return MDL_OK;
  }
  if (is_digit(c) || (c == '.' && p->pos + 1 < p->end && is_digit(p->pos[1]))) {
    lex_number(p, t);
    return MDL_OK;
  }
  if (c == '"' || c == '\'') return lex_string(p, t);
  if (c != '\0' && strchr("{}<>[]:,;-", c)) {
    p->pos++;
    t->kind = TOK_SYMBOL;
    t->len = 1;
    return MDL_OK;
  }
  unsigned char u = (unsigned char)c;
  if (u > 0x20 && u < 0x7f) return FAIL(p, t, "unexpected character '%c'", c);
  return FAIL(p, t, "unexpected byte 0x%02x", u);
}

static int is_sym(const token *t, char c) {
  return t->kind == TOK_SYMBOL && t->text[0] == c;
}

static int ident_is(const token *t, const char *word) {
  size_t n = strlen(word);
  return t->kind == TOK_IDENT && t->len == n && memcmp(t->text, word, n) == 0;
}

static int ident_is_nocase(const token *t, const char *word) {
  size_t n = strlen(word);
  if (t->kind != TOK_IDENT || t->len != n) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = t->text[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (c != word[i]) return 0;
  }
  return 1;
}

/* ---------------------------------------------------- message storage -- */

static const char *type_name(ProtobufCType type) {
  switch (type) {
    case PROTOBUF_C_TYPE_INT32:
      return "int32";
    case PROTOBUF_C_TYPE_SINT32:
      return "sint32";
    case PROTOBUF_C_TYPE_SFIXED32:
      return "sfixed32";
    case PROTOBUF_C_TYPE_INT64:
      return "int64";
    case PROTOBUF_C_TYPE_SINT64:
      return "sint64";
    case PROTOBUF_C_TYPE_SFIXED64:
      return "sfixed64";
    case PROTOBUF_C_TYPE_UINT32:
      return "uint32";
    case PROTOBUF_C_TYPE_FIXED32:
      return "fixed32";
    case PROTOBUF_C_TYPE_UINT64:
      return "uint64";
    case PROTOBUF_C_TYPE_FIXED64:
      return "fixed64";
    case PROTOBUF_C_TYPE_FLOAT:
      return "float";
    case PROTOBUF_C_TYPE_DOUBLE:
      return "double";
    case PROTOBUF_C_TYPE_BOOL:
      return "bool";
    case PROTOBUF_C_TYPE_ENUM:
      return "enum";
    case PROTOBUF_C_TYPE_STRING:
      return "string";
    case PROTOBUF_C_TYPE_BYTES:
      return "bytes";
    case PROTOBUF_C_TYPE_MESSAGE:
      return "message";
  }
  return "unknown";
}

/* One parsed scalar; string and bytes values own their malloc'd data. */
typedef union value {
  int32_t i32;
  int64_t i64;
  uint32_t u32;
  uint64_t u64;
  float f;
  double d;
  protobuf_c_boolean b;
  char *str;
  ProtobufCBinaryData bytes;
} value;

static void value_free(const ProtobufCFieldDescriptor *fd, value *v) {
  if (fd->type == PROTOBUF_C_TYPE_STRING) free(v->str);
  if (fd->type == PROTOBUF_C_TYPE_BYTES) free(v->bytes.data);
}

static void *member_at(ProtobufCMessage *msg, unsigned offset) {
  return (char *)msg + offset;
}

/* Frees what a singular string, bytes or message member owns (never the
 * descriptor's default) and leaves the member empty. */
static void release_member(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *fd) {
  void *member = member_at(msg, fd->offset);
  if (fd->type == PROTOBUF_C_TYPE_STRING) {
    char **s = member;
    if (*s && *s != fd->default_value) free(*s);
    *s = NULL;
  } else if (fd->type == PROTOBUF_C_TYPE_BYTES) {
    ProtobufCBinaryData *bd = member;
    const ProtobufCBinaryData *def = fd->default_value;
    if (bd->data && (!def || bd->data != def->data)) free(bd->data);
    bd->data = NULL;
    bd->len = 0;
  } else if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
    ProtobufCMessage **m = member;
    if (*m && *m != fd->default_value) protobuf_c_message_free_unpacked(*m, NULL);
    *m = NULL;
  }
}

/* Clears whichever member of fd's oneof is set, unless it is fd itself. */
static void clear_other_oneof_member(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *fd) {
  uint32_t *oneof_case = member_at(msg, fd->quantifier_offset);
  if (*oneof_case == 0 || *oneof_case == fd->id) return;
  const ProtobufCFieldDescriptor *other =
      protobuf_c_message_descriptor_get_field(msg->descriptor, *oneof_case);
  if (other) {
    release_member(msg, other);
    memset(member_at(msg, other->offset), 0, mdl_pb_value_size(other->type));
  }
  *oneof_case = 0;
}

static mdl_status new_message(parser *p, const ProtobufCMessageDescriptor *desc,
                              ProtobufCMessage **out) {
  ProtobufCMessage *m = malloc(desc->sizeof_message);
  if (!m) return out_of_memory(p, desc->sizeof_message);
  desc->message_init(m);
  *out = m;
  return MDL_OK;
}

/* Appends one element (value_size bytes at elem) to a repeated field. The
 * parser is the only writer of arrays it creates, so their capacity is the
 * next power of two of the count and needs no storage of its own. */
static mdl_status append_repeated(parser *p, ProtobufCMessage *msg,
                                  const ProtobufCFieldDescriptor *fd, const void *elem) {
  size_t *count = member_at(msg, fd->quantifier_offset);
  char **array = member_at(msg, fd->offset);
  size_t size = mdl_pb_value_size(fd->type);
  size_t n = *count;
  if (n == 0 || (n & (n - 1)) == 0) {
    size_t cap = n ? n * 2 : 1;
    if (cap > SIZE_MAX / size) return out_of_memory(p, SIZE_MAX);
    char *grown = realloc(*array, cap * size);
    if (!grown) return out_of_memory(p, cap * size);
    *array = grown;
  }
  memcpy(*array + n * size, elem, size);
  *count = n + 1;
  return MDL_OK;
}

/* Stores v in a non-message field: last value wins, oneof siblings go. On
 * success the field owns v's data. */
static mdl_status store_value(parser *p, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *fd,
                              value *v) {
  if (fd->label == PROTOBUF_C_LABEL_REPEATED) return append_repeated(p, msg, fd, v);
  if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
    clear_other_oneof_member(msg, fd);
    release_member(msg, fd);
    memcpy(member_at(msg, fd->offset), v, mdl_pb_value_size(fd->type));
    *(uint32_t *)member_at(msg, fd->quantifier_offset) = fd->id;
    return MDL_OK;
  }
  release_member(msg, fd);
  memcpy(member_at(msg, fd->offset), v, mdl_pb_value_size(fd->type));
  if (fd->label == PROTOBUF_C_LABEL_OPTIONAL && !mdl_pb_is_pointer(fd->type))
    *(protobuf_c_boolean *)member_at(msg, fd->quantifier_offset) = 1;
  return MDL_OK;
}

/* The message a "field { ... }" block fills: a new element of a repeated
 * field, or the existing singular message (blocks merge, as protobuf's
 * parser does), or a new one. */
static mdl_status target_message(parser *p, ProtobufCMessage *msg,
                                 const ProtobufCFieldDescriptor *fd, ProtobufCMessage **out) {
  const ProtobufCMessageDescriptor *sub_desc = fd->descriptor;
  ProtobufCMessage *sub;
  if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
    TRY(new_message(p, sub_desc, &sub));
    mdl_status st = append_repeated(p, msg, fd, &sub);
    if (st != MDL_OK) {
      protobuf_c_message_free_unpacked(sub, NULL);
      return st;
    }
    *out = sub;
    return MDL_OK;
  }
  ProtobufCMessage **slot = member_at(msg, fd->offset);
  if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
    uint32_t *oneof_case = member_at(msg, fd->quantifier_offset);
    if (*oneof_case == fd->id && *slot) {
      *out = *slot;
      return MDL_OK;
    }
    clear_other_oneof_member(msg, fd);
    *slot = NULL;
    TRY(new_message(p, sub_desc, &sub));
    *slot = sub;
    *oneof_case = fd->id;
    *out = sub;
    return MDL_OK;
  }
  if (*slot && *slot != fd->default_value) {
    *out = *slot;
    return MDL_OK;
  }
  TRY(new_message(p, sub_desc, &sub));
  *slot = sub;
  *out = sub;
  return MDL_OK;
}

/* ------------------------------------------------------------- values -- */

enum { NUM_OK, NUM_SYNTAX, NUM_OVERFLOW };

/* Parses an unsigned integer literal: 0x hex, leading-0 octal or decimal. */
static int parse_uint_text(const char *s, size_t n, uint64_t *out) {
  unsigned base = 10;
  size_t i = 0;
  if (n >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    i = 2;
    if (n == 2) return NUM_SYNTAX;
  } else if (n >= 2 && s[0] == '0') {
    base = 8;
    i = 1;
  }
  uint64_t v = 0;
  int overflow = 0;
  for (; i < n; i++) {
    int d = hex_value(s[i]);
    if (d < 0 || (unsigned)d >= base) return NUM_SYNTAX;
    if (v > (UINT64_MAX - (unsigned)d) / base)
      overflow = 1;
    else
      v = v * base + (unsigned)d;
  }
  *out = v;
  return overflow ? NUM_OVERFLOW : NUM_OK;
}

/* Consumes an optional '-' (protobuf allows space after it). */
static mdl_status take_sign(parser *p, int *negative) {
  *negative = 0;
  if (is_sym(&p->tok, '-')) {
    *negative = 1;
    TRY(lex(p));
  }
  return MDL_OK;
}

static mdl_status out_of_range(parser *p, const token *start, const token *num, int negative,
                               const ProtobufCFieldDescriptor *fd) {
  char shown[200];
  render(shown, sizeof shown, num->text, num->len);
  return FAIL(p, start, "value %s%s out of range for %s field \"%s\"", negative ? "-" : "", shown,
              type_name(fd->type), fd->name);
}

static mdl_status parse_integer(parser *p, const ProtobufCFieldDescriptor *fd, value *v) {
  token start = p->tok;
  int negative;
  TRY(take_sign(p, &negative));
  token num = p->tok;
  uint64_t mag = 0;
  int r = num.kind == TOK_NUMBER ? parse_uint_text(num.text, num.len, &mag) : NUM_SYNTAX;
  if (r == NUM_SYNTAX)
    return FAIL(p, &num, "expected integer for %s field \"%s\", found %s", type_name(fd->type),
                fd->name, FOUND(&num));
  if (negative && mag == 0) negative = 0;
  int ok = r == NUM_OK;
  switch (fd->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
      ok = ok && mag <= (negative ? (uint64_t)INT32_MAX + 1 : (uint64_t)INT32_MAX);
      if (ok) v->i32 = negative ? (int32_t)(0 - (int64_t)mag) : (int32_t)mag;
      break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
      ok = ok && mag <= (negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX);
      if (ok)
        v->i64 =
            negative ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
      break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
      ok = ok && !negative && mag <= UINT32_MAX;
      if (ok) v->u32 = (uint32_t)mag;
      break;
    default: /* uint64, fixed64 */
      ok = ok && !negative;
      if (ok) v->u64 = mag;
      break;
  }
  if (!ok) return out_of_range(p, &start, &num, negative, fd);
  return lex(p);
}

/* Digits with an optional fraction and exponent and an optional f suffix;
 * *num_len excludes the suffix. */
static int is_float_text(const char *s, size_t n, size_t *num_len) {
  size_t i = 0, digits = 0;
  while (i < n && is_digit(s[i])) i++, digits++;
  if (i < n && s[i] == '.') {
    i++;
    while (i < n && is_digit(s[i])) i++, digits++;
  }
  if (digits == 0) return 0;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    size_t exp_digits = 0;
    while (i < n && is_digit(s[i])) i++, exp_digits++;
    if (exp_digits == 0) return 0;
  }
  *num_len = i;
  if (i < n && (s[i] == 'f' || s[i] == 'F')) i++;
  return i == n;
}

static mdl_status parse_floating(parser *p, const ProtobufCFieldDescriptor *fd, value *v) {
  int is_float = fd->type == PROTOBUF_C_TYPE_FLOAT;
  token start = p->tok;
  int negative;
  TRY(take_sign(p, &negative));
  token num = p->tok;
  double d = 0;
  float f = 0;
  size_t num_len;
  uint64_t mag;
  int int_syntax = num.kind == TOK_NUMBER ? parse_uint_text(num.text, num.len, &mag) : NUM_SYNTAX;
  int decimal = !(num.len >= 2 && num.text[0] == '0' && is_alpha(num.text[1])) &&
                !(num.len >= 2 && num.text[0] == '0' && is_digit(num.text[1]));
  if (ident_is_nocase(&num, "inf") || ident_is_nocase(&num, "infinity")) {
    d = INFINITY;
    f = INFINITY;
  } else if (ident_is_nocase(&num, "nan")) {
    d = NAN;
    f = NAN;
  } else if (int_syntax != NUM_SYNTAX && !decimal) {
    /* hex and octal integers, as protobuf accepts them for floats */
    if (int_syntax == NUM_OVERFLOW) return out_of_range(p, &start, &num, negative, fd);
    d = (double)mag;
    f = (float)mag;
  } else if (num.kind == TOK_NUMBER && is_float_text(num.text, num.len, &num_len)) {
    char small[64];
    char *text = num_len < sizeof small ? small : malloc(num_len + 1);
    if (!text) return out_of_memory(p, num_len + 1);
    memcpy(text, num.text, num_len);
    text[num_len] = '\0';
    errno = 0;
    if (is_float)
      f = strtof(text, NULL);
    else
      d = strtod(text, NULL);
    int range_error = errno == ERANGE && (is_float ? isinf(f) : isinf(d));
    if (text != small) free(text);
    if (range_error) return out_of_range(p, &start, &num, negative, fd);
  } else {
    return FAIL(p, &num, "expected number for %s field \"%s\", found %s", type_name(fd->type),
                fd->name, FOUND(&num));
  }
  if (negative) {
    d = -d;
    f = -f;
  }
  /* One NaN bit pattern, so a printed and re-read message packs the same. */
  if (is_float)
    v->f = isnan(f) ? NAN : f;
  else
    v->d = isnan(d) ? NAN : d;
  return lex(p);
}

static mdl_status parse_bool(parser *p, const ProtobufCFieldDescriptor *fd, value *v) {
  token *t = &p->tok;
  uint64_t mag;
  if (ident_is(t, "true") || ident_is(t, "True") || ident_is(t, "t")) {
    v->b = 1;
  } else if (ident_is(t, "false") || ident_is(t, "False") || ident_is(t, "f")) {
    v->b = 0;
  } else if (t->kind == TOK_NUMBER && parse_uint_text(t->text, t->len, &mag) == NUM_OK &&
             mag <= 1) {
    v->b = (protobuf_c_boolean)mag;
  } else {
    return FAIL(p, t, "expected true or false for bool field \"%s\", found %s", fd->name, FOUND(t));
  }
  return lex(p);
}

/* Appends "A, B, C" (or "A (0), B (1)" with numbers) to buf, bounded. */
static void list_enum_values(const ProtobufCEnumDescriptor *ed, int with_numbers, char *buf,
                             size_t cap) {
  size_t o = strlen(buf);
  for (unsigned i = 0; i < ed->n_values && o + 1 < cap; i++) {
    int room = (int)(cap - o);
    int n = with_numbers
                ? snprintf(buf + o, (size_t)room, "%s%s (%d)", i ? ", " : "", ed->values[i].name,
                           ed->values[i].value)
                : snprintf(buf + o, (size_t)room, "%s%s", i ? ", " : "", ed->values[i].name);
    if (n < 0 || n >= room || o + (size_t)n > 600) {
      snprintf(buf + o, (size_t)room, ", ...");
      return;
    }
    o += (size_t)n;
  }
}

/* The candidate closest to the token's text, for "did you mean"; NULL when
 * none is close or the token is too long to be a misspelt name. */
static const char *nearest_name(const token *t, const char **names, size_t n) {
  char word[256];
  if (t->len >= sizeof word || n == 0) return NULL;
  memcpy(word, t->text, t->len);
  word[t->len] = '\0';
  return mdl_suggest_nearest(word, names, n);
}

static mdl_status unknown_enum_name(parser *p, const token *t, const ProtobufCEnumDescriptor *ed) {
  char shown[200];
  render(shown, sizeof shown, t->text, t->len);
  const char **names = mdl_xcalloc(ed->n_values, sizeof *names);
  for (unsigned i = 0; i < ed->n_values; i++) names[i] = ed->values[i].name;
  const char *suggestion = nearest_name(t, names, ed->n_values);
  free(names);
  if (suggestion)
    return FAIL(p, t, "unknown enum value \"%s\" for %s; did you mean \"%s\"?", shown, ed->name,
                suggestion);
  char valid[1024] = "";
  list_enum_values(ed, 0, valid, sizeof valid);
  return FAIL(p, t, "unknown enum value \"%s\" for %s; valid values: %s", shown, ed->name, valid);
}

static mdl_status parse_enum(parser *p, const ProtobufCFieldDescriptor *fd, value *v) {
  const ProtobufCEnumDescriptor *ed = fd->descriptor;
  token start = p->tok;
  if (start.kind == TOK_IDENT) {
    for (unsigned i = 0; i < ed->n_values; i++) {
      const char *name = ed->values[i].name;
      if (strlen(name) == start.len && memcmp(name, start.text, start.len) == 0) {
        v->i32 = ed->values[i].value;
        return lex(p);
      }
    }
    return unknown_enum_name(p, &start, ed);
  }
  int negative;
  TRY(take_sign(p, &negative));
  token num = p->tok;
  uint64_t mag = 0;
  int r = num.kind == TOK_NUMBER ? parse_uint_text(num.text, num.len, &mag) : NUM_SYNTAX;
  if (r == NUM_SYNTAX)
    return FAIL(p, &num, "expected enum value name or number for field \"%s\", found %s", fd->name,
                FOUND(&num));
  int64_t n = 0;
  int in_range = r == NUM_OK && mag <= (uint64_t)INT32_MAX + (negative ? 1 : 0);
  if (in_range) n = negative ? -(int64_t)mag : (int64_t)mag;
  const ProtobufCEnumValue *ev = in_range ? protobuf_c_enum_descriptor_get_value(ed, (int)n) : NULL;
  if (!ev) {
    char shown[200], valid[1024] = "";
    render(shown, sizeof shown, num.text, num.len);
    list_enum_values(ed, 1, valid, sizeof valid);
    return FAIL(p, &start, "unknown enum number %s%s for %s; valid values: %s", negative ? "-" : "",
                shown, ed->name, valid);
  }
  v->i32 = ev->value;
  return lex(p);
}

static mdl_status scratch_reserve(parser *p, size_t extra) {
  if (p->scratch_cap - p->scratch_len >= extra) return MDL_OK;
  if (extra > SIZE_MAX / 2 - p->scratch_len) return out_of_memory(p, SIZE_MAX);
  size_t cap = p->scratch_cap ? p->scratch_cap : 256;
  while (cap - p->scratch_len < extra) cap *= 2;
  char *grown = realloc(p->scratch, cap);
  if (!grown) return out_of_memory(p, cap);
  p->scratch = grown;
  p->scratch_cap = cap;
  return MDL_OK;
}

static size_t put_utf8(char *out, uint32_t cp) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xe0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (char)(0xf0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  out[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* Reads exactly n hex digits at *s (bounded by end); -1 if they are not there. */
static long read_hex(const char **s, const char *end, int n) {
  long v = 0;
  for (int i = 0; i < n; i++) {
    if (*s >= end || !is_hex(**s)) return -1;
    v = v * 16 + hex_value(*(*s)++);
  }
  return v;
}

/* Decodes one string literal token (C escapes) onto the scratch buffer.
 * A literal's decoded length never exceeds its raw length. */
static mdl_status decode_string(parser *p, const token *t) {
  TRY(scratch_reserve(p, t->len));
  char *out = p->scratch + p->scratch_len;
  const char *s = t->text + 1, *end = t->text + t->len - 1;
  while (s < end) {
    if (*s != '\\') {
      *out++ = *s++;
      continue;
    }
    const char *esc = s++;
    size_t col = t->col + (size_t)(esc - t->text);
    char c = *s++;
    switch (c) {
      case 'n':
        *out++ = '\n';
        break;
      case 't':
        *out++ = '\t';
        break;
      case 'r':
        *out++ = '\r';
        break;
      case 'a':
        *out++ = '\a';
        break;
      case 'b':
        *out++ = '\b';
        break;
      case 'f':
        *out++ = '\f';
        break;
      case 'v':
        *out++ = '\v';
        break;
      case '\\':
      case '\'':
      case '"':
      case '?':
        *out++ = c;
        break;
      case 'x':
      case 'X': {
        if (s >= end || !is_hex(*s))
          return fail_at(p, t->line, col, "\\x escape needs one or two hex digits");
        int v = hex_value(*s++);
        if (s < end && is_hex(*s)) v = v * 16 + hex_value(*s++);
        *out++ = (char)v;
        break;
      }
      case 'u':
      case 'U': {
        long cp = read_hex(&s, end, c == 'u' ? 4 : 8);
        if (cp < 0)
          return fail_at(p, t->line, col, "\\%c escape needs %d hex digits", c, c == 'u' ? 4 : 8);
        if (cp >= 0xd800 && cp <= 0xdbff) {
          /* a UTF-16 surrogate pair written as two \u escapes */
          const char *lo_at = s;
          long lo = -1;
          if (end - s >= 2 && s[0] == '\\' && s[1] == 'u') {
            lo_at = s + 2;
            lo = read_hex(&lo_at, end, 4);
          }
          if (lo < 0xdc00 || lo > 0xdfff)
            return fail_at(p, t->line, col, "unpaired UTF-16 surrogate in \\u escape");
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          s = lo_at;
        } else if ((cp >= 0xdc00 && cp <= 0xdfff) || cp > 0x10ffff) {
          return fail_at(p, t->line, col, "invalid Unicode code point in \\%c escape", c);
        }
        out += put_utf8(out, (uint32_t)cp);
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          int v = c - '0';
          for (int k = 0; k < 2 && s < end && *s >= '0' && *s <= '7'; k++) v = v * 8 + (*s++ - '0');
          if (v > 255) return fail_at(p, t->line, col, "octal escape out of range (above \\377)");
          *out++ = (char)v;
          break;
        }
        char shown[16];
        render(shown, sizeof shown, &c, 1);
        return fail_at(p, t->line, col, "unknown escape sequence \\%s", shown);
    }
  }
  p->scratch_len = (size_t)(out - p->scratch);
  return MDL_OK;
}

/* One or more adjacent string literals, concatenated. */
static mdl_status parse_string(parser *p, const ProtobufCFieldDescriptor *fd, value *v) {
  token start = p->tok;
  if (start.kind != TOK_STRING)
    return FAIL(p, &start, "expected string for %s field \"%s\", found %s", type_name(fd->type),
                fd->name, FOUND(&start));
  p->scratch_len = 0;
  while (p->tok.kind == TOK_STRING) {
    TRY(decode_string(p, &p->tok));
    TRY(lex(p));
  }
  size_t n = p->scratch_len;
  if (fd->type == PROTOBUF_C_TYPE_STRING) {
    if (n && memchr(p->scratch, '\0', n))
      return FAIL(p, &start, "string field \"%s\" cannot hold a NUL byte (use a bytes field)",
                  fd->name);
    v->str = malloc(n + 1);
    if (!v->str) return out_of_memory(p, n + 1);
    if (n) memcpy(v->str, p->scratch, n);
    v->str[n] = '\0';
    return MDL_OK;
  }
  v->bytes.len = n;
  v->bytes.data = NULL;
  if (n) {
    v->bytes.data = malloc(n);
    if (!v->bytes.data) return out_of_memory(p, n);
    memcpy(v->bytes.data, p->scratch, n);
  }
  return MDL_OK;
}

static mdl_status parse_value(parser *p, const ProtobufCFieldDescriptor *fd, value *v) {
  memset(v, 0, sizeof *v);
  switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
      return parse_string(p, fd, v);
    case PROTOBUF_C_TYPE_BOOL:
      return parse_bool(p, fd, v);
    case PROTOBUF_C_TYPE_ENUM:
      return parse_enum(p, fd, v);
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
      return parse_floating(p, fd, v);
    case PROTOBUF_C_TYPE_MESSAGE:
      /* callers route message fields to parse_message_value */
      return mdl_errorf(p->err, MDL_ERR_INTERNAL, "textformat: scalar parse of message field %s",
                        fd->name);
    default:
      return parse_integer(p, fd, v);
  }
}

/* ----------------------------------------------------------- messages -- */

static mdl_status parse_fields(parser *p, ProtobufCMessage *msg, int depth, const token *opener,
                               const char *opener_name, char close);

static int name_cmp(const char *text, size_t len, const char *name) {
  size_t i = 0;
  for (; i < len && name[i]; i++) {
    if (text[i] != name[i]) return (unsigned char)text[i] < (unsigned char)name[i] ? -1 : 1;
  }
  if (i == len) return name[i] ? -1 : 0;
  return 1;
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *desc,
                                                  const char *text, size_t len) {
  if (!desc->fields_sorted_by_name) {
    for (unsigned i = 0; i < desc->n_fields; i++)
      if (name_cmp(text, len, desc->fields[i].name) == 0) return &desc->fields[i];
    return NULL;
  }
  unsigned lo = 0, hi = desc->n_fields;
  while (lo < hi) {
    unsigned mid = lo + (hi - lo) / 2;
    const ProtobufCFieldDescriptor *fd = &desc->fields[desc->fields_sorted_by_name[mid]];
    int c = name_cmp(text, len, fd->name);
    if (c == 0) return fd;
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return NULL;
}

/* Field names that collide with protoc-c's generated C (a struct's `base`
 * member, C keywords) are spelled with a trailing '_' in our schemas; the
 * text format keeps the original name, so "base" finds "base_". */
static const ProtobufCFieldDescriptor *lookup_field(const ProtobufCMessageDescriptor *desc,
                                                    const char *text, size_t len) {
  const ProtobufCFieldDescriptor *fd = find_field(desc, text, len);
  char buf[128];
  if (fd || len == 0 || len + 1 >= sizeof buf || text[len - 1] == '_') return fd;
  memcpy(buf, text, len);
  buf[len] = '_';
  return find_field(desc, buf, len + 1);
}

static mdl_status unknown_field(parser *p, const token *t, const ProtobufCMessageDescriptor *desc) {
  char shown[200];
  render(shown, sizeof shown, t->text, t->len);
  const char **names = mdl_xcalloc(desc->n_fields, sizeof *names);
  for (unsigned i = 0; i < desc->n_fields; i++) names[i] = desc->fields[i].name;
  const char *suggestion = nearest_name(t, names, desc->n_fields);
  free(names);
  if (suggestion)
    return FAIL(p, t, "unknown field \"%s\" in %s; did you mean \"%s\"?", shown, desc->name,
                suggestion);
  return FAIL(p, t, "unknown field \"%s\" in %s", shown, desc->name);
}

/* "{ fields }" or "< fields >" for fd, merged into or appended to msg. */
static mdl_status parse_message_value(parser *p, ProtobufCMessage *msg,
                                      const ProtobufCFieldDescriptor *fd, const token *name,
                                      int depth) {
  token open = p->tok;
  char close = is_sym(&open, '{') ? '}' : '>';
  if (depth + 1 > MDL_TEXT_MAX_DEPTH)
    return FAIL(p, &open, "message nesting deeper than %d levels at field \"%s\"",
                MDL_TEXT_MAX_DEPTH, fd->name);
  ProtobufCMessage *sub;
  TRY(target_message(p, msg, fd, &sub));
  TRY(lex(p));
  return parse_fields(p, sub, depth + 1, name, fd->name, close);
}

static int is_message_open(const token *t) {
  return is_sym(t, '{') || is_sym(t, '<');
}

/* "[ v, v, ... ]" for a repeated field; p->tok is the "[". */
static mdl_status parse_list(parser *p, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *fd,
                             const token *name, int depth) {
  token open = p->tok;
  if (fd->label != PROTOBUF_C_LABEL_REPEATED)
    return FAIL(p, &open, "field \"%s\" is not repeated; a [...] list needs a repeated field",
                fd->name);
  TRY(lex(p));
  if (is_sym(&p->tok, ']')) return lex(p);
  for (;;) {
    if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
      if (!is_message_open(&p->tok))
        return FAIL(p, &p->tok,
                    "expected \"{\" or \"<\" in list for message field \"%s\", found %s", fd->name,
                    FOUND(&p->tok));
      TRY(parse_message_value(p, msg, fd, name, depth));
    } else {
      value v;
      TRY(parse_value(p, fd, &v));
      mdl_status st = append_repeated(p, msg, fd, &v);
      if (st != MDL_OK) {
        value_free(fd, &v);
        return st;
      }
    }
    if (is_sym(&p->tok, ',')) {
      TRY(lex(p));
      continue;
    }
    if (is_sym(&p->tok, ']')) return lex(p);
    return FAIL(p, &p->tok,
                "expected \",\" or \"]\" in list for field \"%s\" opened at %zu:%zu, found %s",
                fd->name, open.line, open.col, FOUND(&p->tok));
  }
}

/* One "name: value", "name { ... }" or "name: [ ... ]"; p->tok is the name. */
static mdl_status parse_field(parser *p, ProtobufCMessage *msg, int depth) {
  token name = p->tok;
  const ProtobufCFieldDescriptor *fd = lookup_field(msg->descriptor, name.text, name.len);
  if (!fd) return unknown_field(p, &name, msg->descriptor);
  TRY(lex(p));
  if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
    int colon = is_sym(&p->tok, ':');
    if (colon) TRY(lex(p));
    if (is_sym(&p->tok, '[')) return parse_list(p, msg, fd, &name, depth);
    if (is_message_open(&p->tok)) return parse_message_value(p, msg, fd, &name, depth);
    if (colon)
      return FAIL(p, &p->tok, "expected \"{\" or \"<\" for message field \"%s\", found %s",
                  fd->name, FOUND(&p->tok));
    return FAIL(p, &p->tok, "expected \":\" or \"{\" after field name \"%s\", found %s", fd->name,
                FOUND(&p->tok));
  }
  if (is_message_open(&p->tok))
    return FAIL(p, &p->tok, "field \"%s\" is not a message (it is %s); expected \":\"", fd->name,
                type_name(fd->type));
  if (!is_sym(&p->tok, ':'))
    return FAIL(p, &p->tok, "expected \":\" after field name \"%s\", found %s", fd->name,
                FOUND(&p->tok));
  TRY(lex(p));
  if (is_message_open(&p->tok))
    return FAIL(p, &p->tok, "field \"%s\" is not a message (it is %s)", fd->name,
                type_name(fd->type));
  if (is_sym(&p->tok, '[')) return parse_list(p, msg, fd, &name, depth);
  value v;
  TRY(parse_value(p, fd, &v));
  mdl_status st = store_value(p, msg, fd, &v);
  if (st != MDL_OK) value_free(fd, &v);
  return st;
}

/* Fields up to close ('}' or '>'), or to end of input when close is 0.
 * Recursion is bounded by MDL_TEXT_MAX_DEPTH (checked by the caller). */
static mdl_status parse_fields(parser *p, ProtobufCMessage *msg, int depth, const token *opener,
                               const char *opener_name, char close) {
  for (;;) {
    const token *t = &p->tok;
    if (t->kind == TOK_EOF && close == 0) return MDL_OK;
    if (close != 0 && is_sym(t, close)) return lex(p);
    if (t->kind != TOK_IDENT) {
      if (close == 0) return FAIL(p, t, "expected field name, found %s", FOUND(t));
      if (t->kind == TOK_EOF || is_sym(t, '}') || is_sym(t, '>') || is_sym(t, ']'))
        return FAIL(p, t, "expected \"%c\" to close \"%s\" opened at %zu:%zu, found %s", close,
                    opener_name, opener->line, opener->col, FOUND(t));
      return FAIL(p, t, "expected field name or \"%c\", found %s", close, FOUND(t));
    }
    TRY(parse_field(p, msg, depth));
    if (is_sym(&p->tok, ';') || is_sym(&p->tok, ',')) TRY(lex(p));
  }
}

mdl_status mdl_text_parse(const char *text, size_t len, const char *filename,
                          const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                          mdl_error *err) {
  if (!out) return mdl_errorf(err, MDL_ERR_INTERNAL, "mdl_text_parse: out is NULL");
  *out = NULL;
  if (!desc || (!text && len))
    return mdl_errorf(err, MDL_ERR_INTERNAL, "mdl_text_parse: no descriptor or no text");
  parser p = {0};
  p.filename = filename ? filename : "<text>";
  p.pos = text ? text : "";
  p.end = p.pos + len;
  p.line_start = p.pos;
  p.line = 1;
  p.err = err;
  p.tok.line = 1;
  p.tok.col = 1;
  ProtobufCMessage *msg = NULL;
  mdl_status st = new_message(&p, desc, &msg);
  if (st != MDL_OK) return st;
  st = lex(&p);
  if (st == MDL_OK) st = parse_fields(&p, msg, 0, NULL, NULL, 0);
  free(p.scratch);
  if (st != MDL_OK) {
    protobuf_c_message_free_unpacked(msg, NULL);
    return st;
  }
  *out = msg;
  return MDL_OK;
}

mdl_status mdl_text_parse_file(const char *path, const ProtobufCMessageDescriptor *desc,
                               ProtobufCMessage **out, mdl_error *err) {
  if (!out) return mdl_errorf(err, MDL_ERR_INTERNAL, "mdl_text_parse_file: out is NULL");
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return mdl_errorf(err, MDL_ERR_INVALID, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) &&
      (uint64_t)st.st_size > MDL_TEXT_MAX_FILE_BYTES) {
    fclose(f);
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: file is %jd bytes, over the %zu MiB limit for text files", path,
                      (intmax_t)st.st_size, MDL_TEXT_MAX_FILE_BYTES >> 20);
  }
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  if (!buf) {
    fclose(f);
    return mdl_errorf(err, MDL_ERR_NOMEM, "%s: out of memory reading the file", path);
  }
  for (;;) {
    if (len == cap) {
      /* cap stops at one byte over the limit, so a full buffer means too big */
      if (cap > MDL_TEXT_MAX_FILE_BYTES) {
        free(buf);
        fclose(f);
        return mdl_errorf(err, MDL_ERR_INVALID, "%s: file is over the %zu MiB limit for text files",
                          path, MDL_TEXT_MAX_FILE_BYTES >> 20);
      }
      size_t grown_cap = cap * 2 > MDL_TEXT_MAX_FILE_BYTES ? MDL_TEXT_MAX_FILE_BYTES + 1 : cap * 2;
      char *grown = realloc(buf, grown_cap);
      if (!grown) {
        free(buf);
        fclose(f);
        return mdl_errorf(err, MDL_ERR_NOMEM, "%s: out of memory reading the file", path);
      }
      buf = grown;
      cap = grown_cap;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  if (ferror(f)) {
    int e = errno;
    free(buf);
    fclose(f);
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: cannot read: %s", path, strerror(e));
  }
  fclose(f);
  if (len > MDL_TEXT_MAX_FILE_BYTES) {
    free(buf);
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: file is over the %zu MiB limit for text files",
                      path, MDL_TEXT_MAX_FILE_BYTES >> 20);
  }
  mdl_status s = mdl_text_parse(buf, len, path, desc, out, err);
  free(buf);
  return s;
}
