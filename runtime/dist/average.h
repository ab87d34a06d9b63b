/* The weighted average of K weight vectors that both the driver's star
 * (driver.c) and the workers' peer-to-peer exchange (exchange.c) compute:
 * one function, so both give the same bits. Owns nothing else. */
#ifndef MDL_RUNTIME_AVERAGE_H
#define MDL_RUNTIME_AVERAGE_H

#include <stddef.h>
#include <stdint.h>

/* out[j] = sum_k (samples[k] / total) * w[k][j], k in order 0..K-1, in float
 * with the weights computed in double: the same bits on every run. Workers
 * with 0 samples are skipped. n may be large: split across threads in fixed
 * chunks (still deterministic). Each element's arithmetic depends only on
 * its own column, so averaging a slice [a, b) of the vectors gives the
 * same bits as the slice of the whole average. */
void mdl_driver_average(float *out, const float *const *w, const uint64_t *samples, int k,
                        size_t n);

#endif
