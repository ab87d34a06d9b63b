/* Error records and the aborting allocators for small bookkeeping. */
#include "common/error.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mdl_status mdl_errorf(mdl_error *err, mdl_status code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
  }
  return code;
}

void mdl_error_prefix(mdl_error *err, const char *fmt, ...) {
  if (!err) return;
  char prefix[MDL_ERROR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  if (n <= 0) return;
  size_t plen = strlen(prefix), mlen = strlen(err->msg);
  if (plen >= sizeof err->msg) plen = sizeof err->msg - 1;
  if (plen + mlen >= sizeof err->msg) mlen = sizeof err->msg - 1 - plen; /* keep the start */
  memmove(err->msg + plen, err->msg, mlen);
  memcpy(err->msg, prefix, plen);
  err->msg[plen + mlen] = '\0';
}

int mdl_exit_code(mdl_status st) {
  switch (st) {
    case MDL_OK:
      return 0;
    case MDL_ERR_INVALID:
      return 2;
    case MDL_ERR_ACCEPT:
      return 3;
    case MDL_ERR_DATA_CHECK:
      return 4;
    case MDL_ERR_BUDGET:
      return 5;
    case MDL_ERR_STOPPED:
      return 128 + SIGTERM; /* callers that know the signal exit with it */
    default:                /* INTERNAL, NOMEM: the run failed */
      return 1;
  }
}

void mdl_error_clear(mdl_error *err) {
  if (!err) return;
  err->code = MDL_OK;
  err->msg[0] = '\0';
}

static void *oom(size_t n) {
  fprintf(stderr, "memdl: out of memory allocating %zu bytes\n", n);
  abort();
}

void *mdl_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  return p ? p : oom(n);
}

void *mdl_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  return p ? p : oom(n * size);
}

void *mdl_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  return q ? q : oom(n);
}

char *mdl_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(mdl_xmalloc(n), s, n);
}
