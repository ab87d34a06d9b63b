/* Graph building as Caffe's Net::Init does it: blob wiring with in-place
 * tops, shapes from the layer table, loss weights, weight sharing and the
 * backward analysis, after the upgrades (graph_upgrade.c), phase filtering
 * and Split insertion (graph_passes.c). Shape rules live in layers*.c.
 * Computes no tensor values. */
#include "compiler/graph.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pb.h"
#include "common/suggest.h"
#include "compiler/graph_internal.h"
#include "compiler/layers.h"
#include "compiler/layers_internal.h"

#define AUTO_TOP "(automatic)"

/* ---- shapes ---- */

/* ---- the graph ---- */

void mdl_graph_free(mdl_graph *g) {
  if (!g) return;
  for (int i = 0; i < g->n_layers; i++) {
    mdl_graph_layer *l = &g->layers[i];
    free(l->bottom);
    free(l->top);
    free(l->loss_weight);
    free(l->propagate_down);
  }
  free(g->layers);
  for (int i = 0; i < g->n_blobs; i++) free(g->blob_name[i]);
  free(g->blob_name);
  free(g->blob_shape);
  free(g->blob_producer);
  free(g->blob_classes);
  free(g->input_blob);
  free(g->output_blob);
  mdl_pb_free(g->net);
  free(g);
}

int mdl_graph_find_blob(const mdl_graph *g, const char *name) {
  for (int i = 0; i < g->n_blobs; i++)
    if (strcmp(g->blob_name[i], name) == 0) return i;
  return -1;
}

int mdl_graph_find_layer(const mdl_graph *g, const char *name) {
  for (int i = 0; i < g->n_layers; i++)
    if (strcmp(mdl_gname(g->layers[i].param->name), name) == 0) return i;
  return -1;
}

/* Build-time state beside the graph. */
typedef struct builder {
  mdl_graph *g;
  int cap;
  mdl_strmap blobs;  /* name -> blob, for wiring */
  mdl_strmap params; /* ParamSpec name -> layer * MDL_MAX_LAYER_PARAMS + index */
  char **user_name;  /* per blob: the name the user wrote (Split tops map back) */
  bool *need_backward, *available;
  bool *owner_has_lr, *owner_has_decay; /* per layer * MDL_MAX_LAYER_PARAMS */
} builder;

/* A new blob; user is the blob whose name messages should use for it (a
 * Split's bottom), or -1. */
static int add_blob(builder *b, const char *name, int user, int producer) {
  mdl_graph *g = b->g;
  if (g->n_blobs == b->cap) {
    b->cap = b->cap ? 2 * b->cap : 64;
    size_t c = (size_t)b->cap;
    g->blob_name = mdl_xrealloc(g->blob_name, c * sizeof *g->blob_name);
    g->blob_shape = mdl_xrealloc(g->blob_shape, c * sizeof *g->blob_shape);
    g->blob_producer = mdl_xrealloc(g->blob_producer, c * sizeof *g->blob_producer);
    g->blob_classes = mdl_xrealloc(g->blob_classes, c * sizeof *g->blob_classes);
    b->user_name = mdl_xrealloc(b->user_name, c * sizeof *b->user_name);
    b->need_backward = mdl_xrealloc(b->need_backward, c * sizeof *b->need_backward);
    b->available = mdl_xrealloc(b->available, c * sizeof *b->available);
  }
  int id = g->n_blobs++;
  g->blob_name[id] = mdl_xstrdup(name);
  memset(&g->blob_shape[id], 0, sizeof g->blob_shape[id]);
  g->blob_producer[id] = producer;
  g->blob_classes[id] = 0;
  b->user_name[id] = user >= 0 ? b->user_name[user] : g->blob_name[id];
  b->need_backward[id] = false;
  b->available[id] = true;
  return id;
}

static const char *known_types(char *buf, size_t size) {
  size_t n, off = 0;
  const mdl_layer_def *t = mdl_layer_table(&n);
  buf[0] = '\0';
  for (size_t i = 0; i < n && off < size; i++) {
    int w = snprintf(buf + off, size - off, "%s%s", i ? ", " : "", t[i].type);
    if (w < 0) break;
    off += (size_t)w;
  }
  return buf;
}

static mdl_status find_def(const Caffe__LayerParameter *lp, const mdl_layer_def **out,
                           mdl_error *err) {
  *out = mdl_layer_find(lp->type);
  if (*out) return MDL_OK;
  size_t n;
  const mdl_layer_def *t = mdl_layer_table(&n);
  const char **names = mdl_xcalloc(n, sizeof *names);
  for (size_t i = 0; i < n; i++) names[i] = t[i].type;
  const char *near = mdl_suggest_nearest(mdl_gname(lp->type), names, n);
  free(names);
  if (!lp->type || !lp->type[0]) {
    char known[1024];
    return mdl_graph_layer_fail(lp, err, "the layer has no type; known types: %s",
                                known_types(known, sizeof known));
  }
  if (near)
    return mdl_graph_layer_fail(lp, err, "unknown layer type \"%s\"; did you mean \"%s\"?",
                                lp->type, near);
  char known[1024];
  return mdl_graph_layer_fail(lp, err, "unknown layer type \"%s\"; known types: %s", lp->type,
                              known_types(known, sizeof known));
}

/* Shape of a BlobProto stored in the net (explicit shape or legacy 4-D). */
static bool blob_proto_matches(const Caffe__BlobProto *bp, const mdl_shape *want) {
  if (bp->shape) {
    if ((int)bp->shape->n_dim != want->n) return false;
    for (int i = 0; i < want->n; i++)
      if (bp->shape->dim[i] != want->d[i]) return false;
    return true;
  }
  /* Caffe's Blob::ShapeEquals for legacy protos: compare as N,C,H,W. */
  if (want->n > 4) return false;
  int64_t legacy[4] = {bp->num, bp->channels, bp->height, bp->width};
  for (int i = 0; i < 4; i++) {
    int idx = want->n - 4 + i;
    int64_t d = idx >= 0 ? want->d[idx] : 1;
    if (legacy[i] != d) return false;
  }
  return true;
}

static void blob_proto_str(const Caffe__BlobProto *bp, char *buf, size_t size) {
  mdl_shape s = {0};
  if (bp->shape) {
    s.n = bp->shape->n_dim > MDL_MAX_AXES ? MDL_MAX_AXES : (int)bp->shape->n_dim;
    for (int i = 0; i < s.n; i++) s.d[i] = bp->shape->dim[i];
  } else {
    int64_t d[4] = {bp->num, bp->channels, bp->height, bp->width};
    s.n = 4;
    memcpy(s.d, d, sizeof d);
  }
  mdl_shape_str(&s, buf, size);
}

/* Learnable blobs: ParamSpecs, stored blobs, BatchNorm's frozen statistics,
 * sharing by name (Caffe's Net::AppendParam). */
static mdl_status setup_params(builder *b, int li, mdl_error *err) {
  mdl_graph_layer *gl = &b->g->layers[li];
  const Caffe__LayerParameter *lp = gl->param;
  char s1[160], s2[160];
  if ((int)lp->n_param > gl->n_param)
    return mdl_graph_layer_fail(lp, err, "has %zu param entries but only %d learnable blob%s",
                                lp->n_param, gl->n_param, gl->n_param == 1 ? "" : "s");
  if (lp->n_blobs) {
    if ((int)lp->n_blobs != gl->n_param)
      return mdl_graph_layer_fail(lp, err, "stores %zu blobs but needs %d", lp->n_blobs,
                                  gl->n_param);
    for (int i = 0; i < gl->n_param; i++)
      if (!blob_proto_matches(lp->blobs[i], &gl->param_shape[i])) {
        blob_proto_str(lp->blobs[i], s1, sizeof s1);
        return mdl_graph_layer_fail(lp, err, "stored blob %d is %s but the layer needs %s", i, s1,
                                    mdl_shape_str(&gl->param_shape[i], s2, sizeof s2));
      }
  }
  bool batch_norm = strcmp(gl->def->type, "BatchNorm") == 0;
  for (int i = 0; i < gl->n_param; i++) {
    const Caffe__ParamSpec *ps = i < (int)lp->n_param ? lp->param[i] : NULL;
    float lr = ps ? ps->lr_mult : 1, decay = ps ? ps->decay_mult : 1;
    if (batch_norm) {
      if (ps && lr != 0)
        return mdl_graph_layer_fail(lp, err,
                                    "param %d has lr_mult %g; BatchNorm's statistics cannot be "
                                    "learned (lr_mult must be 0)",
                                    i, (double)lr);
      if (!ps) lr = 0;
    }
    gl->param_lr_mult[i] = lr;
    gl->param_decay_mult[i] = decay;
    gl->param_owner_layer[i] = li;
    gl->param_owner_index[i] = i;
    /* Caffe decides this from the net's own spec (default lr 1), before a
     * BatchNorm fills in its frozen ones. */
    gl->param_propagate_down[i] = (ps ? ps->lr_mult : 1) != 0;
    const char *pname = ps ? ps->name : NULL;
    if (!pname || !pname[0]) continue;
    int key = mdl_strmap_get(&b->params, pname);
    size_t self = (size_t)li * MDL_MAX_LAYER_PARAMS + (size_t)i;
    if (key < 0) {
      mdl_strmap_put(&b->params, pname, (int)self);
      b->owner_has_lr[self] = ps->has_lr_mult;
      b->owner_has_decay[self] = ps->has_decay_mult;
      continue;
    }
    int ol = key / MDL_MAX_LAYER_PARAMS, oi = key % MDL_MAX_LAYER_PARAMS;
    const mdl_graph_layer *owner = &b->g->layers[ol];
    const mdl_shape *os = &owner->param_shape[oi], *ms = &gl->param_shape[i];
    bool permissive = ps->share_mode == CAFFE__PARAM_SPEC__DIM_CHECK_MODE__PERMISSIVE;
    bool ok = permissive
                  ? mdl_shape_count(os) == mdl_shape_count(ms)
                  : (os->n == ms->n && memcmp(os->d, ms->d, sizeof(int64_t) * (size_t)os->n) == 0);
    if (!ok)
      return mdl_graph_layer_fail(
          lp, err,
          "cannot share param \"%s\" with layer \"%s\": it is %s there and "
          "%s here%s",
          pname, mdl_gname(owner->param->name), mdl_shape_str(os, s1, sizeof s1),
          mdl_shape_str(ms, s2, sizeof s2), permissive ? " (counts differ)" : "");
    size_t okey = (size_t)key;
    if (ps->has_lr_mult) {
      if (b->owner_has_lr[okey] && owner->param_lr_mult[oi] != ps->lr_mult)
        return mdl_graph_layer_fail(
            lp, err, "shared param \"%s\" has lr_mult %g here but %g in layer \"%s\"", pname,
            (double)ps->lr_mult, (double)owner->param_lr_mult[oi], mdl_gname(owner->param->name));
      b->owner_has_lr[okey] = true;
      b->g->layers[ol].param_lr_mult[oi] = ps->lr_mult;
    }
    if (ps->has_decay_mult) {
      if (b->owner_has_decay[okey] && owner->param_decay_mult[oi] != ps->decay_mult)
        return mdl_graph_layer_fail(lp, err,
                                    "shared param \"%s\" has decay_mult %g here but %g in layer "
                                    "\"%s\"",
                                    pname, (double)ps->decay_mult,
                                    (double)owner->param_decay_mult[oi],
                                    mdl_gname(owner->param->name));
      b->owner_has_decay[okey] = true;
      b->g->layers[ol].param_decay_mult[oi] = ps->decay_mult;
    }
    gl->param_owner_layer[i] = ol;
    gl->param_owner_index[i] = oi;
  }
  return MDL_OK;
}

/* Loss weight per top: explicit, or 1 for a loss layer's first top (Caffe's
 * LossLayer::LayerSetUp + Layer::SetLossWeights). */
static mdl_status setup_loss(mdl_graph_layer *gl, mdl_error *err) {
  const Caffe__LayerParameter *lp = gl->param;
  size_t n = lp->n_loss_weight;
  if (n == 0 && gl->def->is_loss) {
    if (gl->n_top != 1)
      return mdl_graph_layer_fail(lp, err,
                                  "a loss layer's default loss_weight covers one top; give "
                                  "loss_weight for each of its %d tops",
                                  gl->n_top);
    gl->loss_weight[0] = 1;
    return MDL_OK;
  }
  if (n && n != (size_t)gl->n_top)
    return mdl_graph_layer_fail(lp, err,
                                "loss_weight is given %zu times for %d tops; give it for every top "
                                "or not at all",
                                n, gl->n_top);
  for (size_t i = 0; i < n; i++) gl->loss_weight[i] = lp->loss_weight[i];
  return MDL_OK;
}

/* Wires, shapes and sets up layer li (Caffe's Net::Init loop body). */
static mdl_status add_layer(builder *b, int li, mdl_source_resolver resolver, void *rctx,
                            mdl_error *err) {
  mdl_graph *g = b->g;
  mdl_graph_layer *gl = &g->layers[li];
  Caffe__LayerParameter *lp = g->net->layer[li];
  gl->param = lp;
  mdl_status st = find_def(lp, &gl->def, err);
  if (st != MDL_OK) return st;
  const mdl_layer_def *def = gl->def;
  /* Caffe's AutoTopBlobs: a loss layer without a top gets an anonymous one,
   * written into the net so that the runtime sees the same count. */
  if (def->is_loss && lp->n_top < (size_t)def->min_top)
    while (lp->n_top < (size_t)def->min_top) mdl_push_str(&lp->top, &lp->n_top, AUTO_TOP);
  if (lp->n_propagate_down && lp->n_propagate_down != lp->n_bottom)
    return mdl_graph_layer_fail(lp, err,
                                "propagate_down is given %zu times for %zu bottoms; give it for "
                                "every bottom or not at all",
                                lp->n_propagate_down, lp->n_bottom);
  int nb = gl->n_bottom = (int)lp->n_bottom, nt = gl->n_top = (int)lp->n_top;
  gl->bottom = mdl_xcalloc((size_t)nb + 1, sizeof(int));
  gl->top = mdl_xcalloc((size_t)nt + 1, sizeof(int));
  gl->propagate_down = mdl_xcalloc((size_t)nb + 1, sizeof(bool));
  gl->loss_weight = mdl_xcalloc((size_t)nt + 1, sizeof(float));
  bool need_backward = false;
  for (int j = 0; j < nb; j++) {
    int id = mdl_strmap_get(&b->blobs, mdl_gname(lp->bottom[j]));
    if (id < 0 || !b->available[id])
      return mdl_graph_layer_fail(lp, err,
                                  "bottom \"%s\" is not available (consumed by an earlier layer "
                                  "or never produced)",
                                  mdl_gname(lp->bottom[j]));
    b->available[id] = false;
    gl->bottom[j] = id;
    need_backward |= b->need_backward[id];
    gl->propagate_down[j] =
        lp->n_propagate_down ? (bool)lp->propagate_down[j] : b->need_backward[id];
  }
  bool is_split = strcmp(def->type, "Split") == 0;
  for (int j = 0; j < nt; j++) {
    const char *name = mdl_gname(lp->top[j]);
    if (strcmp(name, AUTO_TOP) == 0) {
      gl->top[j] = add_blob(b, name, -1, li);
      continue;
    }
    if (j < nb && strcmp(name, mdl_gname(lp->bottom[j])) == 0) {
      if (!def->in_place_ok)
        return mdl_graph_layer_fail(lp, err, "cannot run in place (top \"%s\" is also its bottom)",
                                    name);
      gl->top[j] = gl->bottom[j];
      b->available[gl->top[j]] = true;
      continue;
    }
    if (mdl_strmap_get(&b->blobs, name) >= 0)
      return mdl_graph_layer_fail(lp, err,
                                  "top \"%s\" is already produced by an earlier layer; only an "
                                  "in-place layer (top j = bottom j) may write it again",
                                  name);
    gl->top[j] = add_blob(b, name, is_split && nb ? gl->bottom[0] : -1, li);
    mdl_strmap_put(&b->blobs, g->blob_name[gl->top[j]], gl->top[j]);
  }

  mdl_shape_args a;
  memset(&a, 0, sizeof a);
  mdl_shape *bs = mdl_xcalloc((size_t)nb + 1, sizeof *bs),
            *ts = mdl_xcalloc((size_t)nt + 1, sizeof *ts);
  const char **bn = mdl_xcalloc((size_t)nb + 1, sizeof *bn);
  for (int j = 0; j < nb; j++) {
    bs[j] = g->blob_shape[gl->bottom[j]];
    bn[j] = b->user_name[gl->bottom[j]];
  }
  a.lp = lp;
  a.phase = g->phase;
  a.n_bottom = nb;
  a.bottom = bs;
  a.bottom_name = bn;
  a.n_top = nt;
  a.top = ts;
  a.resolver = resolver;
  a.resolver_ctx = rctx;
  st = mdl_layer_shape(def, &a, err);
  for (int j = 0; st == MDL_OK && j < nt; j++) {
    int id = gl->top[j];
    char s1[160], s2[160];
    if (j < nb && id == gl->bottom[j] && !mdl_shape_eq(&ts[j], &bs[j]))
      st = mdl_graph_layer_fail(
          lp, err, "runs in place on \"%s\" but changes its shape from %s to %s", b->user_name[id],
          mdl_shape_str(&bs[j], s1, sizeof s1), mdl_shape_str(&ts[j], s2, sizeof s2));
    else if (mdl_shape_count(&ts[j]) > INT_MAX)
      st = mdl_graph_layer_fail(lp, err, "top \"%s\" would be %s, more than 2^31-1 values",
                                g->blob_name[id], mdl_shape_str(&ts[j], s1, sizeof s1));
    else
      g->blob_shape[id] = ts[j];
  }
  for (int k = 0; st == MDL_OK && k < a.n_param; k++) {
    char s1[160];
    if (mdl_shape_count(&a.param[k]) > INT_MAX)
      st = mdl_graph_layer_fail(lp, err, "learnable blob %d would be %s, more than 2^31-1 values",
                                k, mdl_shape_str(&a.param[k], s1, sizeof s1));
  }
  free(bs);
  free(ts);
  free(bn);
  if (st != MDL_OK) return st;
  gl->n_param = a.n_param;
  memcpy(gl->param_shape, a.param, sizeof a.param);
  if (a.label_classes > 0 && nt > 1) g->blob_classes[gl->top[1]] = a.label_classes;
  if (is_split && nb)
    for (int j = 0; j < nt; j++) g->blob_classes[gl->top[j]] = g->blob_classes[gl->bottom[0]];
  if ((st = setup_loss(gl, err)) != MDL_OK) return st;
  if ((st = setup_params(b, li, err)) != MDL_OK) return st;
  for (int i = 0; i < gl->n_param; i++) need_backward |= gl->param_propagate_down[i];
  gl->needs_backward = need_backward;
  if (need_backward)
    for (int j = 0; j < nt; j++) b->need_backward[gl->top[j]] = true;
  if (strcmp(def->type, "Input") == 0) {
    g->input_blob = mdl_xrealloc(g->input_blob, (size_t)(g->n_inputs + nt) * sizeof(int));
    for (int j = 0; j < nt; j++) g->input_blob[g->n_inputs++] = gl->top[j];
  }
  return MDL_OK;
}

/* The data layer a blob's values come from, through Splits; -1 if none. */
static int label_source(const mdl_graph *g, int blob) {
  for (int hops = 0; hops < g->n_layers && blob >= 0; hops++) {
    int li = g->blob_producer[blob];
    if (li < 0) return -1;
    const mdl_graph_layer *gl = &g->layers[li];
    if (strcmp(gl->def->type, "Split") != 0) return li;
    blob = gl->n_bottom ? gl->bottom[0] : -1;
  }
  return -1;
}

/* Labels out of range are caught here where the data set's classes and the
 * predictions' are both known (Caffe only stops at run time). */
static mdl_status check_label_classes(const mdl_graph *g, mdl_error *err) {
  static const char *const types[] = {"SoftmaxWithLoss", "Accuracy", "HingeLoss"};
  for (int li = 0; li < g->n_layers; li++) {
    const mdl_graph_layer *gl = &g->layers[li];
    bool labelled = false;
    for (size_t t = 0; t < sizeof types / sizeof *types; t++)
      labelled |= strcmp(gl->def->type, types[t]) == 0;
    if (!labelled || gl->n_bottom < 2) continue;
    int classes = g->blob_classes[gl->bottom[1]];
    if (classes <= 0) continue;
    const Caffe__LayerParameter *lp = gl->param;
    const mdl_shape *x = &g->blob_shape[gl->bottom[0]];
    int axis = 1;
    if (!strcmp(gl->def->type, "SoftmaxWithLoss") && lp->softmax_param)
      axis = lp->softmax_param->axis;
    if (!strcmp(gl->def->type, "Accuracy") && lp->accuracy_param) axis = lp->accuracy_param->axis;
    if (axis < 0) axis += x->n;
    int64_t C = 0;
    if (!strcmp(gl->def->type, "HingeLoss"))
      C = x->n ? mdl_shape_count(x) / (x->d[0] ? x->d[0] : 1) : 0;
    else if (axis >= 0 && axis < x->n)
      C = x->d[axis];
    if (C <= 0 || classes <= C) continue;
    int src = label_source(g, gl->bottom[1]);
    int pred = label_source(g, gl->bottom[0]);
    const char *src_name =
        src >= 0 && g->layers[src].param->name ? g->layers[src].param->name : "?";
    const char *pred_name =
        pred >= 0 && g->layers[pred].param->name ? g->layers[pred].param->name : "?";
    char range[64];
    if (classes - C > 1)
      snprintf(range, sizeof range, "%lld..%d", (long long)C, classes - 1);
    else
      snprintf(range, sizeof range, "%lld", (long long)C);
    return mdl_graph_layer_fail(
        lp, err,
        "predicts %lld classes (the output of layer \"%s\"%s) but its labels come from data "
        "layer \"%s\", whose data set has %d classes: label%s %s would be out of range",
        (long long)C, pred_name,
        pred >= 0 && g->layers[pred].param->inner_product_param ? ", num_output" : "", src_name,
        classes, classes - C > 1 ? "s" : "", range);
  }
  return MDL_OK;
}

/* Caffe's backward analysis at the end of Net::Init: walking from the last
 * layer, a layer needs backward only if some top feeds a loss, and a bottom
 * needs a gradient only if the layer contributes to a loss. */
static void analyse_backward(mdl_graph *g) {
  bool *under_loss = mdl_xcalloc((size_t)g->n_blobs + 1, sizeof(bool));
  bool *skip = mdl_xcalloc((size_t)g->n_blobs + 1, sizeof(bool));
  for (int li = g->n_layers - 1; li >= 0; li--) {
    mdl_graph_layer *gl = &g->layers[li];
    bool contributes = false, skip_all = true;
    for (int j = 0; j < gl->n_top; j++) {
      int id = gl->top[j];
      if (gl->loss_weight[j] != 0 || under_loss[id]) contributes = true;
      if (!skip[id]) skip_all = false;
      if (contributes && !skip_all) break;
    }
    if (gl->needs_backward && skip_all) {
      gl->needs_backward = false;
      for (int j = 0; j < gl->n_bottom; j++) gl->propagate_down[j] = false;
    }
    if (!contributes) gl->needs_backward = false;
    for (int j = 0; j < gl->n_bottom; j++) {
      int id = gl->bottom[j];
      if (contributes)
        under_loss[id] = true;
      else
        gl->propagate_down[j] = false;
      if (!gl->propagate_down[j]) skip[id] = true;
    }
  }
  free(under_loss);
  free(skip);
}

/* NetParameter.force_backward: every layer runs backward, every bottom that
 * can take a gradient gets one, every learnable blob is updated. */
static void force_backward(mdl_graph *g) {
  for (int li = 0; li < g->n_layers; li++) {
    mdl_graph_layer *gl = &g->layers[li];
    bool filter = strcmp(gl->def->type, "Filter") == 0; /* its selector is the last bottom */
    gl->needs_backward = true;
    for (int j = 0; j < gl->n_bottom; j++) {
      bool allowed = j >= 32 || !(gl->def->no_grad_bottoms & (1u << j));
      if (filter && j == gl->n_bottom - 1) allowed = false;
      gl->propagate_down[j] = gl->propagate_down[j] || allowed;
    }
    for (int i = 0; i < gl->n_param; i++) gl->param_propagate_down[i] = true;
  }
}

static void builder_free(builder *b) {
  mdl_strmap_free(&b->blobs);
  mdl_strmap_free(&b->params);
  free(b->user_name);
  free(b->need_backward);
  free(b->available);
  free(b->owner_has_lr);
  free(b->owner_has_decay);
}

mdl_status mdl_graph_build(const Caffe__NetParameter *net, const Caffe__NetState *state,
                           const char *filename, mdl_source_resolver resolver, void *resolver_ctx,
                           mdl_graph **out, mdl_error *err) {
  if (out) *out = NULL;
  if (!net || !out) return mdl_errorf(err, MDL_ERR_INTERNAL, "mdl_graph_build: no net or no out");
  static const Caffe__NetState k_default = CAFFE__NET_STATE__INIT;
  const Caffe__NetState *s = state ? state : net->state ? net->state : &k_default;
  Caffe__NetParameter *n = mdl_pb_dup(net);
  Caffe__LayerParameter **dropped = NULL;
  size_t n_dropped = 0;
  mdl_status st = mdl_graph_upgrade(n, err);
  if (st == MDL_OK) st = mdl_graph_filter(n, s, &dropped, &n_dropped, err);
  if (st == MDL_OK) st = mdl_graph_insert_splits(n, dropped, n_dropped, s, err);
  for (size_t i = 0; i < n_dropped; i++) protobuf_c_message_free_unpacked(&dropped[i]->base, NULL);
  free(dropped);
  if (st != MDL_OK) {
    mdl_pb_free(n);
    if (filename) mdl_error_prefix(err, "%s: ", filename);
    return st;
  }
  /* The resolved net records the state it was built for, and each layer its
   * phase (Caffe: "inherit phase from net if unset"). */
  mdl_pb_free(n->state);
  n->state = mdl_pb_dup(s);
  for (size_t i = 0; i < n->n_layer; i++)
    if (!n->layer[i]->has_phase) {
      n->layer[i]->has_phase = 1;
      n->layer[i]->phase = s->phase;
    }

  mdl_graph *g = mdl_xcalloc(1, sizeof *g);
  g->net = n;
  g->phase = s->phase;
  g->layers = mdl_xcalloc(n->n_layer + 1, sizeof *g->layers);
  builder b;
  memset(&b, 0, sizeof b);
  b.g = g;
  b.owner_has_lr = mdl_xcalloc(n->n_layer * MDL_MAX_LAYER_PARAMS + 1, sizeof(bool));
  b.owner_has_decay = mdl_xcalloc(n->n_layer * MDL_MAX_LAYER_PARAMS + 1, sizeof(bool));
  for (size_t i = 0; st == MDL_OK && i < n->n_layer; i++) {
    g->n_layers = (int)i + 1;
    st = add_layer(&b, (int)i, resolver, resolver_ctx, err);
  }
  if (st == MDL_OK) st = check_label_classes(g, err);
  if (st == MDL_OK) {
    analyse_backward(g);
    if (n->force_backward) force_backward(g);
    g->output_blob = mdl_xcalloc((size_t)g->n_blobs + 1, sizeof(int));
    for (int i = 0; i < g->n_blobs; i++)
      if (b.available[i]) g->output_blob[g->n_outputs++] = i;
  }
  builder_free(&b);
  if (st != MDL_OK) {
    mdl_graph_free(g);
    if (filename) mdl_error_prefix(err, "%s: ", filename);
    return st;
  }
  *out = g;
  return MDL_OK;
}
