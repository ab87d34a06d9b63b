/* A growing string for the CI reports, with JSON and XML escaping, and the
 * one walk over a text's lines they all read metrics.jsonl and lists with.
 * Small bookkeeping: allocation failure aborts (tier 1). */
#ifndef MDL_RUNTIME_CI_STRBUF_H
#define MDL_RUNTIME_CI_STRBUF_H

#include <stdbool.h>
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

/* The next line of the text at *p: *line a NUL-terminated copy without its
 * '\n' (freed by the next call, or by the last one, which returns false),
 * *p moved past it. A last line without '\n' counts; an empty text has none.
 *   char *line = NULL;
 *   for (const char *p = text; mdl_line_next(&p, &line);) use(line); */
bool mdl_line_next(const char **p, char **line);

#endif
