/* Shape helpers (see shape.h). */
#include "compiler/shape.h"

#include <stdio.h>

char *mdl_shape_str(const mdl_shape *s, char *buf, size_t size) {
  if (!size) return buf;
  if (s->n == 0) {
    snprintf(buf, size, "scalar");
    return buf;
  }
  size_t off = 0;
  buf[0] = '\0';
  for (int i = 0; i < s->n && off < size; i++) {
    int w = snprintf(buf + off, size - off, i ? "x%lld" : "%lld", (long long)s->d[i]);
    if (w < 0) break;
    off += (size_t)w;
  }
  return buf;
}

int64_t mdl_shape_count(const mdl_shape *s) {
  int64_t c = 1;
  for (int i = 0; i < s->n; i++) c *= s->d[i];
  return c;
}

bool mdl_shape_eq(const mdl_shape *x, const mdl_shape *y) {
  if (x->n != y->n) return false;
  for (int i = 0; i < x->n; i++)
    if (x->d[i] != y->d[i]) return false;
  return true;
}

void mdl_shape_set(mdl_shape *s, int n, const int64_t *d) {
  s->n = n;
  for (int i = 0; i < n; i++) s->d[i] = d[i];
}
