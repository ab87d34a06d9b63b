/* Float32 tensors as Caffe's blobs: up to MDL_TENSOR_MAX_AXES axes, row-major
 * (NCHW for images), a value ("data") and a gradient ("diff") of one shape.
 * Owns shape arithmetic and host allocation; not kernels (cpu_math.h) and not
 * device memory (a backend's tensors are views onto its own buffers). */
#ifndef MDL_RUNTIME_TENSOR_H
#define MDL_RUNTIME_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "compiler/shape.h"

#define MDL_TENSOR_MAX_AXES MDL_MAX_AXES /* a tensor holds any shape the compiler infers */
#define MDL_TENSOR_ALIGN 64              /* bytes; owned buffers are aligned for AVX-512 */

/* A tensor is a small value type: the struct is the caller's (stack, array,
 * layer state); the buffers are either owned (allocated by mdl_tensor_alloc,
 * released by mdl_tensor_release) or a view onto someone else's memory
 * (mdl_tensor_view: the net's activation and parameter buffers). */
typedef struct mdl_tensor {
  int n;                          /* number of axes, 0..MDL_TENSOR_MAX_AXES */
  int64_t d[MDL_TENSOR_MAX_AXES]; /* axis sizes; d[n..] are 0 */
  int64_t count;                  /* product of d[0..n) (1 for 0 axes) */
  float *data;                    /* count floats, or NULL */
  float *diff;                    /* count floats, or NULL (no gradient kept) */
  bool owns;                      /* data and diff were allocated here */
} mdl_tensor;

/* An empty tensor: 0 axes, count 1, no buffers, owns nothing. */
void mdl_tensor_init(mdl_tensor *t);

/* Allocates zeroed data (and diff when with_diff) of the given shape into t,
 * releasing what t owned before. On failure (bad shape: MDL_ERR_INVALID;
 * allocation: MDL_ERR_NOMEM) t is left empty. */
mdl_status mdl_tensor_alloc(mdl_tensor *t, int n, const int64_t *d, bool with_diff, mdl_error *err);

/* Makes t a view of the given shape onto data/diff (either may be NULL),
 * releasing what t owned before. t never frees data or diff. */
void mdl_tensor_view(mdl_tensor *t, int n, const int64_t *d, float *data, float *diff);

/* Changes only the shape of t (views and owned tensors alike). The new
 * count must equal the old one: MDL_ERR_INVALID otherwise, t unchanged. */
mdl_status mdl_tensor_reshape(mdl_tensor *t, int n, const int64_t *d, mdl_error *err);

/* Frees owned buffers and leaves t empty. t == NULL is safe. */
void mdl_tensor_release(mdl_tensor *t);

/* Caffe's CanonicalAxisIndex: axis in [-n, n) mapped to [0, n); -1 when out
 * of range (callers turn that into an error naming the layer). */
int mdl_tensor_axis(const mdl_tensor *t, int axis);

/* Product of d[start..end) (1 for an empty range). */
int64_t mdl_tensor_count_range(const mdl_tensor *t, int start, int end);

/* Caffe's LegacyShape: axis i of a tensor seen as 4-D num/channels/height/
 * width (1 for missing trailing axes). */
int64_t mdl_tensor_legacy_dim(const mdl_tensor *t, int i);

bool mdl_tensor_same_shape(const mdl_tensor *a, const mdl_tensor *b);

/* Writes "2x3x4" ("scalar" for 0 axes) into buf and returns buf. */
char *mdl_tensor_shape_str(const mdl_tensor *t, char *buf, size_t size);

/* 64-byte aligned allocation for float buffers (and its free). Returns NULL
 * on exhaustion; the caller reports MDL_ERR_NOMEM. n == 0 returns a valid
 * pointer. Memory is zeroed. */
float *mdl_falloc(int64_t n);
void mdl_ffree(float *p);

#endif
