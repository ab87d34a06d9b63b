/* The reports' growing string. */
#include "runtime/ci/strbuf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

static void reserve(mdl_strbuf *b, size_t more) {
  if (b->len + more + 1 <= b->cap) return;
  b->cap = (b->len + more + 1) * 2;
  b->s = mdl_xrealloc(b->s, b->cap);
}

void mdl_strbuf_add(mdl_strbuf *b, const char *s, size_t n) {
  reserve(b, n);
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = 0;
}

void mdl_strbuf_printf(mdl_strbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  reserve(b, (size_t)n);
  va_start(ap, fmt);
  vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void mdl_strbuf_json(mdl_strbuf *b, const char *s) {
  mdl_strbuf_add(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    if (*p == '"' || *p == '\\')
      mdl_strbuf_printf(b, "\\%c", *p);
    else if (*p == '\n')
      mdl_strbuf_add(b, "\\n", 2);
    else if (*p < 0x20)
      mdl_strbuf_printf(b, "\\u%04x", *p);
    else
      mdl_strbuf_add(b, (const char *)p, 1);
  }
  mdl_strbuf_add(b, "\"", 1);
}

void mdl_strbuf_xml(mdl_strbuf *b, const char *s) {
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    switch (*p) {
      case '<':
        mdl_strbuf_add(b, "&lt;", 4);
        break;
      case '>':
        mdl_strbuf_add(b, "&gt;", 4);
        break;
      case '&':
        mdl_strbuf_add(b, "&amp;", 5);
        break;
      case '"':
        mdl_strbuf_add(b, "&quot;", 6);
        break;
      case '\n':
        mdl_strbuf_add(b, "&#10;", 5);
        break;
      default:
        /* control characters are not allowed in XML 1.0 */
        if (*p < 0x20 && *p != '\t')
          mdl_strbuf_add(b, " ", 1);
        else
          mdl_strbuf_add(b, (const char *)p, 1);
    }
  }
}

void mdl_strbuf_jnum(mdl_strbuf *b, double v) {
  if (!isfinite(v))
    mdl_strbuf_add(b, "null", 4);
  else
    mdl_strbuf_printf(b, "%.6g", v);
}

char *mdl_strbuf_take(mdl_strbuf *b) {
  if (!b->s) mdl_strbuf_add(b, "", 0);
  char *s = b->s;
  b->s = NULL;
  b->len = b->cap = 0;
  return s;
}

bool mdl_line_next(const char **p, char **line) {
  free(*line);
  *line = NULL;
  if (!*p || !**p) return false;
  const char *nl = strchr(*p, '\n');
  size_t n = nl ? (size_t)(nl - *p) : strlen(*p);
  *line = mdl_xmalloc(n + 1);
  memcpy(*line, *p, n);
  (*line)[n] = 0;
  *p += n + (nl ? 1 : 0);
  return true;
}
