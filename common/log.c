/* One write per line; see log.h. */
#include "common/log.h"

#include <string.h>

void mdl_vlogf(FILE *f, const char *prefix, const char *fmt, va_list ap) {
  char line[2048];
  int n = snprintf(line, sizeof line - 1, "%s", prefix);
  if (n < 0) return;
  if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
  int m = vsnprintf(line + n, sizeof line - 1 - (size_t)n, fmt, ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  fwrite(line, 1, len, f);
  fflush(f);
}
