/* The generic half of every layer: lookup in a backend's explicit table, the
 * shape rule from compiler/layers.h, parameter views, loss weights through
 * the backend's reductions. The type-specific halves are a backend's. */
#include "runtime/engine/layer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a backend's layer table ------------------------------------------- */

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

/* ---- workspace ---------------------------------------------------------- */

void mdl_workspace_init(mdl_workspace *ws) {
  memset(ws, 0, sizeof *ws);
}

void mdl_workspace_reserve(mdl_workspace *ws, size_t bytes) {
  if (bytes > ws->need) ws->need = bytes;
}

mdl_status mdl_workspace_commit(mdl_workspace *ws, const mdl_backend *be, mdl_error *err) {
  if (ws->need <= ws->size && ws->data) return MDL_OK;
  if (ws->be && ws->be != be)
    return mdl_errorf(err, MDL_ERR_INTERNAL, "layer scratch shared between backends %s and %s",
                      mdl_backend_name(ws->be), mdl_backend_name(be));
  float *p = mdl_backend_alloc(be, (int64_t)((ws->need + sizeof(float) - 1) / sizeof(float)));
  if (!p)
    return mdl_errorf(err, MDL_ERR_NOMEM, "cannot allocate %zu bytes of layer scratch on %s",
                      ws->need, mdl_backend_name(be));
  if (ws->data) mdl_backend_free(be, ws->data);
  ws->be = be;
  ws->data = p;
  ws->size = ws->need;
  return MDL_OK;
}

void mdl_workspace_release(mdl_workspace *ws) {
  if (!ws) return;
  if (ws->data) mdl_backend_free(ws->be, ws->data);
  mdl_workspace_init(ws);
}

/* ---- layer lifecycle ---------------------------------------------------- */

void mdl_tensor_from_shape(mdl_tensor *t, const mdl_shape *s) {
  mdl_tensor_init(t);
  mdl_tensor_view(t, s->n, s->d, NULL, NULL);
}

mdl_status mdl_layer_new(const mdl_backend *be, const Caffe__LayerParameter *lp, Caffe__Phase phase,
                         int n_bottom, const mdl_shape *bottom_shape, const mdl_exec_ctx *ctx,
                         mdl_layer **out, mdl_error *err) {
  *out = NULL;
  const char *name = lp->name && lp->name[0] ? lp->name : "(unnamed)";
  const char *type = lp->type ? lp->type : "";
  char why[1700];
  if (!mdl_backend_supports_layer(be, lp, why, sizeof why))
    return mdl_errorf(err, MDL_ERR_INVALID, "layer \"%s\": %s", name, why);
  const mdl_layer_impl *impl = mdl_backend_layer(be, type);
  const mdl_layer_def *def = mdl_layer_find(type);
  if (!def)
    return mdl_errorf(err, MDL_ERR_INVALID, "layer \"%s\": type \"%s\" has no shape rule", name,
                      type);
  /* A loss layer without tops gets anonymous ones, as Caffe's AutoTopBlobs
   * (the compiler's graph does the same). */
  int n_top = (int)lp->n_top;
  if (def->is_loss && n_top < def->min_top) n_top = def->min_top;
  mdl_layer *l = mdl_xcalloc(1, sizeof *l);
  l->impl = impl;
  l->be = be;
  l->def = def;
  l->lp = lp;
  l->name = name;
  l->phase = phase;
  if (ctx) l->ctx = *ctx;
  l->n_bottom = n_bottom;
  l->n_top = n_top;
  l->bottom_shape = mdl_xcalloc((size_t)(n_bottom ? n_bottom : 1), sizeof(mdl_shape));
  l->top_shape = mdl_xcalloc((size_t)(n_top ? n_top : 1), sizeof(mdl_shape));
  for (int i = 0; i < n_bottom; i++) l->bottom_shape[i] = bottom_shape[i];
  for (int i = 0; i < MDL_MAX_LAYER_PARAMS; i++) mdl_tensor_init(&l->param[i]);

  mdl_shape_args a;
  memset(&a, 0, sizeof a);
  a.lp = lp;
  a.phase = phase;
  a.n_bottom = n_bottom;
  a.bottom = l->bottom_shape;
  a.n_top = n_top;
  a.top = l->top_shape;
  mdl_status st = mdl_layer_shape(def, &a, err);
  if (st) {
    mdl_layer_free(l);
    return st;
  }
  l->n_param = a.n_param;
  for (int i = 0; i < a.n_param; i++) mdl_tensor_from_shape(&l->param[i], &a.param[i]);
  if (impl->setup) {
    st = impl->setup(l, err);
    if (st) {
      mdl_layer_free(l);
      return st;
    }
  }
  if (l->keep.count && !l->ctx.net_keeps) {
    l->keep.data = mdl_backend_alloc(be, l->keep.count);
    l->keep.owned = true;
    if (!l->keep.data) {
      long long n = (long long)l->keep.count;
      mdl_layer_free(l);
      return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": a kept copy of %lld values", name, n);
    }
  }
  *out = l;
  return MDL_OK;
}

void mdl_layer_keep(mdl_layer *l, int kind, int64_t count) {
  l->keep.kind = kind;
  l->keep.count = count;
}

void mdl_layer_free(mdl_layer *l) {
  if (!l) return;
  if (l->priv) {
    if (l->impl->free_priv)
      l->impl->free_priv(l);
    else
      free(l->priv);
  }
  if (l->keep.owned) mdl_backend_free(l->be, l->keep.data);
  free(l->bottom_shape);
  free(l->top_shape);
  free(l);
}

int64_t mdl_layer_param_count(const mdl_layer *l) {
  int64_t c = 0;
  for (int i = 0; i < l->n_param; i++) c += l->param[i].count;
  return c;
}

void mdl_layer_bind_params(mdl_layer *l, float *data, float *diff) {
  int64_t off = 0;
  for (int i = 0; i < l->n_param; i++) {
    mdl_tensor *p = &l->param[i];
    int n = p->n;
    int64_t d[MDL_TENSOR_MAX_AXES];
    memcpy(d, p->d, sizeof d);
    mdl_tensor_view(p, n, d, data ? data + off : NULL, diff ? diff + off : NULL);
    off += p->count;
  }
}

mdl_status mdl_layer_init_params(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  if (l->n_param == 0 || !l->impl->init_params) return MDL_OK;
  mdl_rng local;
  if (!rng) {
    mdl_rng_init(&local, 0);
    rng = &local;
  }
  mdl_status st = l->impl->init_params(l, rng, err);
  if (st) mdl_error_prefix(err, "layer \"%s\" (%s): ", l->name, l->impl->type);
  return st;
}

void mdl_layer_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  l->fault.set = false;
  l->impl->forward(l, bottom, top);
}

bool mdl_layer_in_place(const mdl_layer *l) {
  const Caffe__LayerParameter *lp = l->lp;
  return lp->n_top > 0 && lp->n_bottom > 0 && lp->top[0] && lp->bottom[0] &&
         !strcmp(lp->top[0], lp->bottom[0]);
}

void mdl_layer_fault_set(mdl_layer *l, int64_t item, const char *fmt, ...) {
  if (l->fault.set) return;
  l->fault.set = true;
  l->fault.item = item;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(l->fault.msg, sizeof l->fault.msg, fmt, ap);
  va_end(ap);
}

bool mdl_layer_has_backward(const mdl_layer *l) {
  return l->impl->backward != NULL;
}

void mdl_layer_backward(mdl_layer *l, mdl_tensor *const *top, const bool *propagate_down,
                        mdl_tensor *const *bottom) {
  if (!l->impl->backward) return;
  bool stack[16] = {false}, *all = NULL;
  if (!propagate_down) {
    all = l->n_bottom <= 16 ? stack : mdl_xmalloc((size_t)l->n_bottom * sizeof(bool));
    for (int i = 0; i < l->n_bottom; i++) all[i] = true;
    propagate_down = all;
  }
  l->impl->backward(l, top, propagate_down, bottom);
  if (all && all != stack) free(all);
}

double mdl_layer_loss(const mdl_layer *l, const float *loss_weight, mdl_tensor *const *top) {
  double loss = 0;
  if (!loss_weight) return 0;
  for (int i = 0; i < l->n_top; i++) {
    if (loss_weight[i] == 0.f) continue;
    loss +=
        loss_weight[i] * l->be->iface->sum(l->be->ctx, l->ctx.pool, top[i]->data, top[i]->count);
  }
  return loss;
}

void mdl_layer_seed_loss_diff(const mdl_layer *l, const float *loss_weight,
                              mdl_tensor *const *top) {
  if (!loss_weight) return;
  for (int i = 0; i < l->n_top; i++) {
    if (loss_weight[i] == 0.f || !top[i]->diff) continue;
    l->be->iface->fill(l->be->ctx, l->ctx.pool, top[i]->diff, top[i]->count, loss_weight[i]);
  }
}
