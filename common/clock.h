/* The one monotonic clock: seconds for timings and rates, nanoseconds for
 * deadlines. Owns nothing else. */
#ifndef MDL_COMMON_CLOCK_H
#define MDL_COMMON_CLOCK_H

#include <stdint.h>

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double mdl_now(void);

/* The same clock in nanoseconds. */
int64_t mdl_now_ns(void);

#endif
