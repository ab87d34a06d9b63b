/* The generic half of every layer: lookup in a backend's explicit table, the
 * shape rule from compiler/layers.h, parameter views, loss weights. The
 * type-specific halves are in layers_*.c. */
#include "runtime/layer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu_math.h"
#include "runtime/layers_cpu.h"

/* ---- the CPU table: explicit, so static links keep every entry --------- */

static const mdl_layer_impl *const cpu_impls[] = {
    /* data-less sources */
    &mdl_cpu_input_layer,
    &mdl_cpu_dummy_data_layer,
    /* vision */
    &mdl_cpu_conv_layer,
    &mdl_cpu_deconv_layer,
    &mdl_cpu_pool_layer,
    &mdl_cpu_inner_product_layer,
    &mdl_cpu_embed_layer,
    /* neurons */
    &mdl_cpu_relu_layer,
    &mdl_cpu_prelu_layer,
    &mdl_cpu_elu_layer,
    &mdl_cpu_sigmoid_layer,
    &mdl_cpu_tanh_layer,
    &mdl_cpu_power_layer,
    &mdl_cpu_exp_layer,
    &mdl_cpu_log_layer,
    &mdl_cpu_absval_layer,
    &mdl_cpu_bnll_layer,
    &mdl_cpu_threshold_layer,
    &mdl_cpu_dropout_layer,
    /* normalisation */
    &mdl_cpu_lrn_layer,
    &mdl_cpu_batch_norm_layer,
    &mdl_cpu_mvn_layer,
    &mdl_cpu_scale_layer,
    &mdl_cpu_bias_layer,
    &mdl_cpu_softmax_layer,
    /* structure */
    &mdl_cpu_eltwise_layer,
    &mdl_cpu_concat_layer,
    &mdl_cpu_slice_layer,
    &mdl_cpu_split_layer,
    &mdl_cpu_flatten_layer,
    &mdl_cpu_reshape_layer,
    &mdl_cpu_silence_layer,
    &mdl_cpu_crop_layer,
    &mdl_cpu_tile_layer,
    &mdl_cpu_reduction_layer,
    &mdl_cpu_argmax_layer,
    /* losses and metrics */
    &mdl_cpu_softmax_loss_layer,
    &mdl_cpu_accuracy_layer,
    &mdl_cpu_euclidean_loss_layer,
    &mdl_cpu_sigmoid_ce_loss_layer,
    &mdl_cpu_contrastive_loss_layer,
    &mdl_cpu_hinge_loss_layer,
};

static const mdl_layer_backend cpu_backend = {
    "cpu",
    cpu_impls,
    sizeof cpu_impls / sizeof cpu_impls[0],
};

const mdl_layer_backend *mdl_cpu_backend(void) {
  return &cpu_backend;
}

const mdl_layer_impl *mdl_layer_impl_find(const mdl_layer_backend *be, const char *type) {
  if (!be) be = &cpu_backend;
  if (!type) return NULL;
  for (size_t i = 0; i < be->n_impls; i++)
    if (strcmp(be->impls[i]->type, type) == 0) return be->impls[i];
  return NULL;
}

/* ---- workspace ---------------------------------------------------------- */

void mdl_workspace_init(mdl_workspace *ws) {
  memset(ws, 0, sizeof *ws);
}

void mdl_workspace_reserve(mdl_workspace *ws, size_t bytes) {
  if (bytes > ws->need) ws->need = bytes;
}

mdl_status mdl_workspace_commit(mdl_workspace *ws, mdl_error *err) {
  if (ws->need <= ws->size && ws->data) return MDL_OK;
  float *p = mdl_falloc((int64_t)((ws->need + sizeof(float) - 1) / sizeof(float)));
  if (!p)
    return mdl_errorf(err, MDL_ERR_NOMEM, "cannot allocate %zu bytes of layer scratch", ws->need);
  mdl_ffree(ws->data);
  ws->data = p;
  ws->size = ws->need;
  return MDL_OK;
}

void mdl_workspace_release(mdl_workspace *ws) {
  if (!ws) return;
  mdl_ffree(ws->data);
  mdl_workspace_init(ws);
}

/* ---- layer lifecycle ---------------------------------------------------- */

static void list_known(const mdl_layer_backend *be, char *buf, size_t size) {
  size_t off = 0;
  buf[0] = 0;
  for (size_t i = 0; i < be->n_impls && off + 1 < size; i++) {
    int k = snprintf(buf + off, size - off, "%s%s", i ? ", " : "", be->impls[i]->type);
    if (k < 0) break;
    off += (size_t)k;
  }
}

void mdl_tensor_from_shape(mdl_tensor *t, const mdl_shape *s) {
  mdl_tensor_init(t);
  mdl_tensor_view(t, s->n, s->d, NULL, NULL);
}

mdl_status mdl_layer_new(const mdl_layer_backend *be, const Caffe__LayerParameter *lp,
                         Caffe__Phase phase, int n_bottom, const mdl_shape *bottom_shape,
                         const mdl_exec_ctx *ctx, mdl_layer **out, mdl_error *err) {
  *out = NULL;
  if (!be) be = &cpu_backend;
  const char *name = lp->name && lp->name[0] ? lp->name : "(unnamed)";
  const char *type = lp->type ? lp->type : "";
  const mdl_layer_impl *impl = mdl_layer_impl_find(be, type);
  if (!impl) {
    char known[1536];
    list_known(be, known, sizeof known);
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "layer \"%s\": type \"%s\" has no %s implementation (known: %s)", name, type,
                      be->name, known);
  }
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
  *out = l;
  return MDL_OK;
}

void mdl_layer_free(mdl_layer *l) {
  if (!l) return;
  if (l->priv) {
    if (l->impl->free_priv)
      l->impl->free_priv(l);
    else
      free(l->priv);
  }
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
  l->impl->forward(l, bottom, top);
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
    loss += loss_weight[i] * mdl_vsum(l->ctx.pool, top[i]->count, top[i]->data);
  }
  return loss;
}

void mdl_layer_seed_loss_diff(const mdl_layer *l, const float *loss_weight,
                              mdl_tensor *const *top) {
  if (!loss_weight) return;
  for (int i = 0; i < l->n_top; i++) {
    if (loss_weight[i] == 0.f || !top[i]->diff) continue;
    mdl_vset(l->ctx.pool, top[i]->count, loss_weight[i], top[i]->diff);
  }
}
