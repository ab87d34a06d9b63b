/* Thin dispatch over a backend's interface (see backend.h). Looking a
 * layer type up in a backend's table is the layer contract's (layer.c). */
#include "runtime/engine/backend.h"

float *mdl_backend_alloc(const mdl_backend *be, int64_t n) {
  return be->iface->alloc(be->ctx, n);
}

void mdl_backend_free(const mdl_backend *be, float *p) {
  if (p) be->iface->free(be->ctx, p);
}

void mdl_backend_zero(const mdl_backend *be, float *p, int64_t n) {
  if (n > 0) be->iface->zero(be->ctx, p, n);
}

void mdl_backend_to_device(const mdl_backend *be, float *dst, const float *host_src, int64_t n) {
  if (n > 0) be->iface->to_device(be->ctx, dst, host_src, n);
}

void mdl_backend_to_host(const mdl_backend *be, float *host_dst, const float *src, int64_t n) {
  if (n > 0) be->iface->to_host(be->ctx, host_dst, src, n);
}

mdl_status mdl_backend_sync(const mdl_backend *be, mdl_error *err) {
  return be->iface->sync ? be->iface->sync(be->ctx, err) : MDL_OK;
}

const char *mdl_backend_name(const mdl_backend *be) {
  return be->iface->name;
}
