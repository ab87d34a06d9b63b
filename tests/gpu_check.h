/* The cross-backend layer check: each layer type the GPU runs, created on
 * two backends from the same LayerParameter, fed the same seeded inputs
 * and top gradients, its parameters filled from the same stream; tops,
 * bottom gradients and parameter gradients compared element by element.
 * Used by tests/gpu_test.c (GPU against CPU where a GPU is usable, CPU
 * against itself everywhere, to keep the harness honest). */
#ifndef MDL_TESTS_GPU_CHECK_H
#define MDL_TESTS_GPU_CHECK_H

#include <stdio.h>

#include "runtime/engine/backend.h"

typedef struct mdl_gpu_case_result {
  const char *name;
  double worst; /* largest |b - a| / max(1, |a|) over every compared tensor */
  double tol;
  int compared;   /* floats compared */
  int bad_values; /* NaN or Inf on b */
  char why[512];  /* set when the layer could not be built on a backend */
} mdl_gpu_case_result;

/* Runs every case on a (reference) and b; fills results (n_cases of them,
 * see mdl_gpu_check_n_cases) and prints one line per case to log (may be
 * NULL). Returns the number of cases over their tolerance or failing. */
int mdl_gpu_check_layers(const mdl_backend *a, const mdl_backend *b, mdl_gpu_case_result *results,
                         FILE *log);
int mdl_gpu_check_n_cases(void);

#endif
