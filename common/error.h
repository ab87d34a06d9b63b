/* Status codes and the caller-owned error record every fallible memdl
 * function fills. Owns formatting of error context; not logging. */
#ifndef MDL_COMMON_ERROR_H
#define MDL_COMMON_ERROR_H

#include <stddef.h>

/* Values double as the process exit codes the CLI documents. */
typedef enum mdl_status {
  MDL_OK = 0,
  MDL_ERR_INTERNAL = 1,   /* a bug or a runtime failure (I/O, RPC, device) */
  MDL_ERR_INVALID = 2,    /* bad input: file, flag, shape, message */
  MDL_ERR_ACCEPT = 3,     /* training finished but missed the job's acceptance */
  MDL_ERR_NOMEM = 4,      /* a tensor, data set or buffer did not fit */
  MDL_ERR_DATA_CHECK = 5, /* a job's data_check failed before training: exit 4 */
  MDL_ERR_BUDGET = 6,     /* stopped at --max-seconds, model saved: exit 5 */
  /* the loss or the weights became NaN or infinite: the job's settings, not
   * the machine, so a distributed run stops instead of replacing the worker
   * (exit 1, as INTERNAL) */
  MDL_ERR_DIVERGED = 7,
  MDL_ERR_STOPPED = 8, /* stopped by a signal after a snapshot: the caller, which
                        * knows the signal, exits 128 + signal */
} mdl_status;

#define MDL_ERROR_MSG_MAX 2048

/* Filled by the callee on failure; the caller owns the storage (usually on
 * its stack). msg is always NUL-terminated. */
typedef struct mdl_error {
  mdl_status code;
  char msg[MDL_ERROR_MSG_MAX];
} mdl_error;

/* Records code and a printf-style message in err (which may be NULL) and
 * returns code, so callers can write `return mdl_errorf(err, ...)`. */
mdl_status mdl_errorf(mdl_error *err, mdl_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends context ("while loading x: ") to an error already recorded.
 * Leaves code unchanged. err may be NULL. */
void mdl_error_prefix(mdl_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The process exit code for a status: the documented 0-5 (NOMEM and
 * DIVERGED are 1, DATA_CHECK 4, BUDGET 5). */
int mdl_exit_code(mdl_status st);

/* Clears err to MDL_OK and an empty message. */
void mdl_error_clear(mdl_error *err);

/* Small bookkeeping allocations abort on exhaustion (tier 1 in STYLE.md);
 * tensors and data sets use plain malloc and report MDL_ERR_NOMEM. */
void *mdl_xmalloc(size_t n);
void *mdl_xcalloc(size_t n, size_t size);
void *mdl_xrealloc(void *p, size_t n);
char *mdl_xstrdup(const char *s);

#endif
