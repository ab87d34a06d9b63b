/* A growing string for the CI reports, with JSON and XML escaping. Small
 * bookkeeping: allocation failure aborts (tier 1). */
#ifndef MDL_RUNTIME_CI_STRBUF_H
#define MDL_RUNTIME_CI_STRBUF_H

#include <stddef.h>

typedef struct mdl_strbuf {
  char *s; /* NUL-terminated once anything was added; NULL before */
  size_t len, cap;
} mdl_strbuf;

void mdl_strbuf_printf(mdl_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mdl_strbuf_add(mdl_strbuf *b, const char *s, size_t n);
/* s as a JSON string with its quotes. */
void mdl_strbuf_json(mdl_strbuf *b, const char *s);
/* s escaped for XML text and attribute values. */
void mdl_strbuf_xml(mdl_strbuf *b, const char *s);
/* A number for JSON: %.6g, null for NaN and infinities. */
void mdl_strbuf_jnum(mdl_strbuf *b, double v);
/* Hands the string to the caller ("" when empty) and empties b. */
char *mdl_strbuf_take(mdl_strbuf *b);

#endif
