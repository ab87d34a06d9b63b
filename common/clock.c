/* CLOCK_MONOTONIC: never steps with the wall clock, so rates, ETAs and
 * deadlines survive NTP adjustments. */
#include "common/clock.h"

#include <time.h>

double mdl_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int64_t mdl_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
