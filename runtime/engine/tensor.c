/* Tensor shapes, views and aligned host buffers. No kernels here. */
#include "runtime/engine/tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

float *mdl_falloc(int64_t n) {
  if (n < 0 || (uint64_t)n > SIZE_MAX / sizeof(float) - MDL_TENSOR_ALIGN) return NULL;
  size_t bytes = (size_t)n * sizeof(float);
  bytes = (bytes + MDL_TENSOR_ALIGN - 1) / MDL_TENSOR_ALIGN * MDL_TENSOR_ALIGN;
  if (bytes == 0) bytes = MDL_TENSOR_ALIGN;
  float *p = aligned_alloc(MDL_TENSOR_ALIGN, bytes);
  if (p) memset(p, 0, bytes);
  return p;
}

void mdl_ffree(float *p) {
  free(p);
}

static void set_shape(mdl_tensor *t, int n, const int64_t *d) {
  t->n = n;
  t->count = 1;
  for (int i = 0; i < MDL_TENSOR_MAX_AXES; i++) {
    t->d[i] = i < n ? d[i] : 0;
    if (i < n) t->count *= d[i];
  }
}

static mdl_status check_shape(int n, const int64_t *d, mdl_error *err) {
  if (n < 0 || n > MDL_TENSOR_MAX_AXES)
    return mdl_errorf(err, MDL_ERR_INVALID, "tensor with %d axes (at most %d)", n,
                      MDL_TENSOR_MAX_AXES);
  int64_t count = 1;
  for (int i = 0; i < n; i++) {
    if (d[i] < 0) return mdl_errorf(err, MDL_ERR_INVALID, "negative tensor axis %d", i);
    if (d[i] > 0 && count > INT64_MAX / 4 / d[i])
      return mdl_errorf(err, MDL_ERR_INVALID, "tensor too large");
    count *= d[i];
  }
  return MDL_OK;
}

void mdl_tensor_init(mdl_tensor *t) {
  memset(t, 0, sizeof *t);
  t->count = 1;
}

void mdl_tensor_release(mdl_tensor *t) {
  if (!t) return;
  if (t->owns) {
    mdl_ffree(t->data);
    mdl_ffree(t->diff);
  }
  mdl_tensor_init(t);
}

mdl_status mdl_tensor_alloc(mdl_tensor *t, int n, const int64_t *d, bool with_diff,
                            mdl_error *err) {
  mdl_tensor_release(t);
  mdl_status st = check_shape(n, d, err);
  if (st) return st;
  mdl_tensor tmp;
  mdl_tensor_init(&tmp);
  set_shape(&tmp, n, d);
  tmp.data = mdl_falloc(tmp.count);
  tmp.diff = with_diff ? mdl_falloc(tmp.count) : NULL;
  if (!tmp.data || (with_diff && !tmp.diff)) {
    mdl_ffree(tmp.data);
    mdl_ffree(tmp.diff);
    char buf[128];
    return mdl_errorf(err, MDL_ERR_NOMEM, "cannot allocate a %s tensor (%lld bytes)",
                      mdl_tensor_shape_str(&tmp, buf, sizeof buf),
                      (long long)tmp.count * (with_diff ? 8 : 4));
  }
  tmp.owns = true;
  *t = tmp;
  return MDL_OK;
}

void mdl_tensor_view(mdl_tensor *t, int n, const int64_t *d, float *data, float *diff) {
  mdl_tensor_release(t);
  if (n > MDL_TENSOR_MAX_AXES) n = MDL_TENSOR_MAX_AXES; /* callers pass checked shapes */
  set_shape(t, n, d);
  t->data = data;
  t->diff = diff;
  t->owns = false;
}

mdl_status mdl_tensor_reshape(mdl_tensor *t, int n, const int64_t *d, mdl_error *err) {
  mdl_status st = check_shape(n, d, err);
  if (st) return st;
  int64_t count = 1;
  for (int i = 0; i < n; i++) count *= d[i];
  if (count != t->count) {
    char buf[128];
    return mdl_errorf(err, MDL_ERR_INVALID, "cannot reshape a %s tensor to %lld elements",
                      mdl_tensor_shape_str(t, buf, sizeof buf), (long long)count);
  }
  set_shape(t, n, d);
  return MDL_OK;
}

int mdl_tensor_axis(const mdl_tensor *t, int axis) {
  if (axis < -t->n || axis >= t->n) return -1;
  return axis < 0 ? axis + t->n : axis;
}

int64_t mdl_tensor_count_range(const mdl_tensor *t, int start, int end) {
  int64_t c = 1;
  if (start < 0) start = 0;
  if (end > t->n) end = t->n;
  for (int i = start; i < end; i++) c *= t->d[i];
  return c;
}

int64_t mdl_tensor_legacy_dim(const mdl_tensor *t, int i) {
  return i < t->n ? t->d[i] : 1;
}

bool mdl_tensor_same_shape(const mdl_tensor *a, const mdl_tensor *b) {
  if (a->n != b->n) return false;
  for (int i = 0; i < a->n; i++)
    if (a->d[i] != b->d[i]) return false;
  return true;
}

char *mdl_tensor_shape_str(const mdl_tensor *t, char *buf, size_t size) {
  if (size == 0) return buf;
  if (t->n == 0) {
    snprintf(buf, size, "scalar");
    return buf;
  }
  size_t off = 0;
  buf[0] = 0;
  for (int i = 0; i < t->n && off < size; i++) {
    int k = snprintf(buf + off, size - off, i ? "x%lld" : "%lld", (long long)t->d[i]);
    if (k < 0) break;
    off += (size_t)k;
  }
  return buf;
}
