/* One-line log messages with a prefix ("memdl driver: ..."), written in a
 * single call so that lines from several processes sharing a terminal do
 * not interleave. Owns formatting; where lines go is the caller's. */
#ifndef MDL_COMMON_LOG_H
#define MDL_COMMON_LOG_H

#include <stdarg.h>
#include <stdio.h>

/* Writes "<prefix><message>\n" to f and flushes it. Messages are cut at
 * about 2 KiB. */
void mdl_vlogf(FILE *f, const char *prefix, const char *fmt, va_list ap);

#endif
