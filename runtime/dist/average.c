/* The driver's average of the workers' weights (mdl_driver_average, see
 * average.h): deterministic, split across a few threads. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdbool.h>
#include <unistd.h>

#include "runtime/dist/average.h"

typedef struct avg_job {
  float *out;
  const float *const *w;
  const float *c;
  int k;
  size_t begin, end;
} avg_job;

static void average_range(float *out, const float *const *w, const float *c, int k, size_t b,
                          size_t e) {
  const float *w0 = w[0];
  float c0 = c[0];
  for (size_t j = b; j < e; j++) out[j] = c0 * w0[j];
  for (int i = 1; i < k; i++) {
    const float *wi = w[i];
    float ci = c[i];
    for (size_t j = b; j < e; j++) out[j] += ci * wi[j];
  }
}

static void *average_thread(void *arg) {
  avg_job *j = arg;
  /* blocks of 16K floats keep out[] in cache across the k passes */
  for (size_t b = j->begin; b < j->end; b += 16384) {
    size_t e = b + 16384 < j->end ? b + 16384 : j->end;
    average_range(j->out, j->w, j->c, j->k, b, e);
  }
  return NULL;
}

void mdl_driver_average(float *out, const float *const *w, const uint64_t *samples, int k,
                        size_t n) {
  const float *ws[k > 0 ? k : 1];
  float c[k > 0 ? k : 1];
  double total = 0;
  int m = 0;
  for (int i = 0; i < k; i++) total += (double)samples[i];
  for (int i = 0; i < k; i++)
    if (samples[i] > 0) {
      ws[m] = w[i];
      c[m] = (float)((double)samples[i] / total);
      m++;
    }
  if (m == 0) return;
  /* the element-wise order (worker 0, then 1, ...) never depends on the
   * split, so any thread count gives the same bits */
  int nt = n >= ((size_t)1 << 17) ? 4 : 1;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus > 0 && nt > cpus) nt = (int)cpus;
  avg_job jobs[4];
  pthread_t th[4];
  bool started[4] = {false};
  size_t chunk = (n / (size_t)nt + 4095) & ~(size_t)4095;
  for (int t = 0; t < nt; t++) {
    size_t b = (size_t)t * chunk, e = b + chunk;
    if (b > n) b = n;
    if (e > n || t == nt - 1) e = n;
    jobs[t] = (avg_job){out, ws, c, m, b, e};
    if (t > 0 && pthread_create(&th[t], NULL, average_thread, &jobs[t]) == 0) started[t] = true;
  }
  average_thread(&jobs[0]);
  for (int t = 1; t < nt; t++) {
    if (started[t])
      pthread_join(th[t], NULL);
    else
      average_thread(&jobs[t]);
  }
}
