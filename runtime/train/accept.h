/* A job's acceptance criteria (`accept { metric at_least at_most }`) judged
 * against named TEST outputs. One rule for single-worker and distributed
 * runs; deciding what to do about a failure is the caller's. */
#ifndef MDL_RUNTIME_ACCEPT_H
#define MDL_RUNTIME_ACCEPT_H

#include <stdbool.h>
#include <stddef.h>

#include "job.pb-c.h"

/* True when every criterion holds for the outputs (names[i] = values[i]).
 * Otherwise writes to msg, e.g. "accuracy 0.8260 is below 0.89 by 0.0640"
 * (criteria joined by "; "; a metric no output has "is missing"). */
bool mdl_accept_check(Memdl__Acceptance *const *accept, size_t n_accept, const char *const *names,
                      const double *values, int n_values, char *msg, size_t msg_size);

#endif
