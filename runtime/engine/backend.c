/* Thin dispatch over a backend's interface (see backend.h); the lookup of a
 * layer type in its explicit table. */
#include "runtime/engine/backend.h"

#include <stdio.h>
#include <string.h>

#include "runtime/engine/layer.h"

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

const mdl_layer_impl *mdl_backend_layer(const mdl_backend *be, const char *type) {
  if (!type) return NULL;
  for (size_t i = 0; i < be->iface->n_impls; i++)
    if (strcmp(be->iface->impls[i]->type, type) == 0) return be->iface->impls[i];
  return NULL;
}

static void list_known(const mdl_backend *be, char *buf, size_t size) {
  size_t off = 0;
  buf[0] = 0;
  for (size_t i = 0; i < be->iface->n_impls && off + 1 < size; i++) {
    int k = snprintf(buf + off, size - off, "%s%s", i ? ", " : "", be->iface->impls[i]->type);
    if (k < 0) break;
    off += (size_t)k;
  }
}

bool mdl_backend_supports_layer(const mdl_backend *be, const Caffe__LayerParameter *lp, char *why,
                                size_t why_size) {
  const char *type = lp->type ? lp->type : "";
  if (!mdl_backend_layer(be, type)) {
    const char *reason = mdl_layer_unsupported_reason(type);
    if (reason) {
      snprintf(why, why_size, "type \"%s\" runs on no memdl backend: %s", type, reason);
      return false;
    }
    char known[1536];
    list_known(be, known, sizeof known);
    snprintf(why, why_size, "type \"%s\" has no %s implementation (known: %s)", type,
             be->iface->name, known);
    return false;
  }
  if (be->iface->supports_layer) return be->iface->supports_layer(be->ctx, lp, why, why_size);
  return true;
}
