/* mdl_net: layers, parameter views, the activation plan and the passes.
 * See net.h. */
#include "runtime/engine/net.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE MDL_MEM_NONE

typedef struct net_layer {
  mdl_layer *l; /* NULL: a pipeline data layer (the caller fills its tops) */
  const mdl_graph_layer *gl;
  mdl_tensor **bottom, **top;
  bool runs_backward;
  bool has_loss;
  bool *zero_top_diff; /* per top: no later layer writes its diff, so clear it */
  bool shared_params;  /* parameters live in opt.share_from's buffers */
} net_layer;

struct mdl_net {
  const mdl_graph *g;
  mdl_net_options opt;
  int n_layers;
  net_layer *L;
  int n_blobs;
  mdl_tensor *blob;
  mdl_mem_plan *plan; /* where each blob's data and diff live in the arena */
  size_t allocated;   /* bytes this net took from its backend (arena, parameters, own scratch) */
  float *keeps;       /* the layers' kept copies (mdl_layer_keep), one buffer */
  size_t keep_floats, keep_naive_floats;
  float *arena;
  bool own_arena;
  float *params, *pdiff;
  size_t n_params;
  mdl_param_blob *learn;
  int n_learn;
  mdl_workspace own_ws;
  mdl_rng fill_root, iter_root, iter_rng;
  int *outputs;
  int n_outputs;
  float *output_weight;
  int *sources;
  int n_sources;
};

static const char *layer_name(const mdl_graph_layer *gl) {
  return gl->param->name ? gl->param->name : "(unnamed)";
}

/* ---- construction ---- */

static const net_layer *find_layer(const mdl_net *net, const char *name) {
  if (!net || !name) return NULL;
  for (int i = 0; i < net->n_layers; i++)
    if (net->L[i].l && net->L[i].gl->param->name && strcmp(net->L[i].gl->param->name, name) == 0)
      return &net->L[i];
  return NULL;
}

static void shape_str(const mdl_tensor *t, char *buf, size_t n) {
  mdl_tensor_shape_str(t, buf, n);
}

/* Layers the net does not create itself but whose shape rule the compiler
 * knows: the pipeline serves them. */
static mdl_status create_layers(mdl_net *net, mdl_error *err) {
  const mdl_graph *g = net->g;
  mdl_exec_ctx ctx = {
      .pool = net->opt.pool, .ws = net->opt.ws, .rng = &net->iter_rng, .net_keeps = true};
  const mdl_backend *be = net->opt.backend;
  net->sources = mdl_xmalloc((size_t)(g->n_layers + 1) * sizeof(int));
  for (int i = 0; i < g->n_layers; i++) {
    const mdl_graph_layer *gl = &g->layers[i];
    net_layer *L = &net->L[i];
    L->gl = gl;
    L->bottom = mdl_xcalloc((size_t)gl->n_bottom + 1, sizeof *L->bottom);
    L->top = mdl_xcalloc((size_t)gl->n_top + 1, sizeof *L->top);
    L->zero_top_diff = mdl_xcalloc((size_t)gl->n_top + 1, sizeof(bool));
    for (int k = 0; k < gl->n_bottom; k++) L->bottom[k] = &net->blob[gl->bottom[k]];
    for (int k = 0; k < gl->n_top; k++) L->top[k] = &net->blob[gl->top[k]];
    const char *type = gl->param->type;
    if (mdl_mem_source_type(type) && !mdl_backend_layer(be, type)) {
      net->sources[net->n_sources++] = i;
      continue;
    }
    mdl_shape *bs = mdl_xcalloc((size_t)gl->n_bottom + 1, sizeof *bs);
    for (int k = 0; k < gl->n_bottom; k++) bs[k] = g->blob_shape[gl->bottom[k]];
    mdl_status st = mdl_layer_new(be, gl->param, g->phase, gl->n_bottom, bs, &ctx, &L->l, err);
    free(bs);
    if (st != MDL_OK) return st;
    if (L->l->n_top != gl->n_top)
      return mdl_errorf(err, MDL_ERR_INTERNAL, "layer \"%s\": %d tops at setup, %d in the graph",
                        layer_name(gl), L->l->n_top, gl->n_top);
    for (int k = 0; k < gl->n_top; k++) {
      const mdl_shape *a = &L->l->top_shape[k], *b = &g->blob_shape[gl->top[k]];
      if (mdl_shape_count(a) != mdl_shape_count(b)) {
        char sa[64], sb[64];
        return mdl_errorf(err, MDL_ERR_INTERNAL,
                          "layer \"%s\" top %d: setup says %s, the graph says %s", layer_name(gl),
                          k, mdl_shape_str(a, sa, sizeof sa), mdl_shape_str(b, sb, sizeof sb));
      }
    }
    for (int k = 0; k < gl->n_top; k++)
      if (gl->loss_weight && gl->loss_weight[k] != 0) L->has_loss = true;
  }
  return MDL_OK;
}

static bool writes_blob(const mdl_graph_layer *gl, int b) {
  for (int k = 0; k < gl->n_top; k++)
    if (gl->top[k] == b) return true;
  return false;
}

/* The layers' kept copies (mdl_layer_keep) in one buffer. An in-place
 * layer's kept input is the kept output of the last layer that wrote that
 * blob before it, when that layer keeps its top (BatchNorm then an in-place
 * Scale, as ResNet has 53 times): one copy serves both and the later layer
 * skips writing it. share false gives each its own (MDL_MEMPLAN=off). */
static mdl_status bind_keeps(mdl_net *net, bool share, mdl_error *err) {
  size_t *off = mdl_xcalloc((size_t)net->n_layers + 1, sizeof(size_t));
  for (int i = 0; i < net->n_layers; i++) {
    mdl_layer *l = net->L[i].l;
    const mdl_graph_layer *gl = net->L[i].gl;
    off[i] = NONE;
    if (!l || !l->keep.count) continue;
    size_t count = ((size_t)l->keep.count + 15) / 16 * 16; /* 64-byte aligned */
    net->keep_naive_floats += count;
    int j = i - 1;
    if (share && l->keep.kind == MDL_KEEP_INPUT && gl->n_bottom > 0) {
      while (j >= 0 && !writes_blob(net->L[j].gl, gl->bottom[0])) j--;
      const mdl_layer *w = j >= 0 ? net->L[j].l : NULL;
      if (w && w->keep.kind == MDL_KEEP_TOP && net->L[j].gl->top[0] == gl->bottom[0] &&
          w->keep.count == l->keep.count) {
        off[i] = off[j];
        l->keep.filled = true;
        continue;
      }
    }
    off[i] = net->keep_floats;
    net->keep_floats += count;
  }
  mdl_status st = MDL_OK;
  if (net->keep_floats) {
    net->keeps = mdl_backend_alloc(net->opt.backend, (int64_t)net->keep_floats);
    if (!net->keeps)
      st = mdl_errorf(err, MDL_ERR_NOMEM, "layers' kept copies of %zu MiB do not fit",
                      net->keep_floats * sizeof(float) >> 20);
    else
      net->allocated += net->keep_floats * sizeof(float);
  }
  for (int i = 0; st == MDL_OK && i < net->n_layers; i++)
    if (off[i] != NONE) net->L[i].l->keep.data = net->keeps + off[i];
  free(off);
  return st;
}

static void decide_backward(mdl_net *net) {
  const mdl_graph *g = net->g;
  bool force = g->net && g->net->force_backward;
  bool allowed = g->phase == CAFFE__PHASE__TRAIN || force;
  for (int i = 0; i < net->n_layers; i++) {
    net_layer *L = &net->L[i];
    L->runs_backward =
        allowed && L->l && (L->gl->needs_backward || force) && mdl_layer_has_backward(L->l);
  }
  /* A top whose diff no later layer writes (e.g. a Split branch feeding
   * Accuracy) must read as zero, as in Caffe where such diffs stay zero. */
  for (int i = 0; i < net->n_layers; i++) {
    net_layer *L = &net->L[i];
    if (!L->runs_backward) continue;
    for (int k = 0; k < L->gl->n_top; k++) {
      int b = L->gl->top[k];
      bool written = L->gl->loss_weight && L->gl->loss_weight[k] != 0;
      for (int j = i + 1; j < net->n_layers && !written; j++) {
        const net_layer *C = &net->L[j];
        if (!C->runs_backward) continue;
        for (int m = 0; m < C->gl->n_bottom; m++)
          if (C->gl->bottom[m] == b && (!C->gl->propagate_down || C->gl->propagate_down[m]))
            written = true;
      }
      L->zero_top_diff[k] = !written;
    }
  }
}

static void view_param(mdl_tensor *t, float *data, float *diff) {
  int64_t d[MDL_TENSOR_MAX_AXES];
  memcpy(d, t->d, sizeof d);
  mdl_tensor_view(t, t->n, d, data, diff);
}

static mdl_status setup_params(mdl_net *net, mdl_error *err) {
  const mdl_net *other = net->opt.share_from;
  size_t total = 0;
  for (int i = 0; i < net->n_layers; i++) {
    net_layer *L = &net->L[i];
    if (!L->l || L->l->n_param == 0) continue;
    const net_layer *src = find_layer(other, L->gl->param->name);
    if (src) {
      if (src->l->n_param != L->l->n_param)
        return mdl_errorf(err, MDL_ERR_INVALID,
                          "layer \"%s\": %d parameter blobs here, %d in the net it shares with",
                          L->l->name, L->l->n_param, src->l->n_param);
      for (int j = 0; j < L->l->n_param; j++)
        if (!mdl_tensor_same_shape(&src->l->param[j], &L->l->param[j])) {
          char a[64], b[64];
          shape_str(&L->l->param[j], a, sizeof a);
          shape_str(&src->l->param[j], b, sizeof b);
          return mdl_errorf(err, MDL_ERR_INVALID,
                            "layer \"%s\" parameter %d: shape %s here but %s in the net it "
                            "shares weights with (layers share by name)",
                            L->l->name, j, a, b);
        }
      L->shared_params = true;
      continue;
    }
    total += (size_t)mdl_layer_param_count(L->l);
  }
  net->n_params = total;
  net->params = mdl_backend_alloc(net->opt.backend, (int64_t)total);
  net->pdiff = mdl_backend_alloc(net->opt.backend, (int64_t)total);
  net->allocated += 2 * total * sizeof(float);
  if (!net->params || !net->pdiff)
    return mdl_errorf(err, MDL_ERR_NOMEM, "parameters of %zu floats do not fit on %s", total,
                      mdl_backend_name(net->opt.backend));

  net->learn = mdl_xcalloc((size_t)total + 1, sizeof *net->learn);
  size_t off = 0;
  mdl_status st = MDL_OK;
  for (int i = 0; i < net->n_layers && st == MDL_OK; i++) {
    net_layer *L = &net->L[i];
    if (!L->l || L->l->n_param == 0) continue;
    if (L->shared_params) {
      const net_layer *src = find_layer(other, L->gl->param->name);
      for (int j = 0; j < L->l->n_param; j++)
        view_param(&L->l->param[j], src->l->param[j].data, NULL);
      continue;
    }
    mdl_layer_bind_params(L->l, net->params + off, net->pdiff + off);
    off += (size_t)mdl_layer_param_count(L->l);
    /* Fill before re-pointing shared blobs: a sharer fills its own (then
     * unused) range, as Caffe's layers fill before ShareData. */
    if (!net->opt.no_fill) {
      mdl_rng r = mdl_rng_stream(&net->fill_root, (uint64_t)i);
      st = mdl_layer_init_params(L->l, &r, err);
      if (st != MDL_OK) break;
    }
    const mdl_graph_layer *gl = L->gl;
    for (int j = 0; j < L->l->n_param; j++) {
      mdl_tensor *t = &L->l->param[j];
      int ol = gl->param_owner_layer[j], oj = gl->param_owner_index[j];
      if ((ol != i || oj != j) && ol >= 0 && ol < net->n_layers && net->L[ol].l &&
          oj < net->L[ol].l->n_param) {
        /* ParamSpec.name sharing inside this net: data and diff both. */
        const mdl_tensor *o = &net->L[ol].l->param[oj];
        if (o->count != t->count)
          return mdl_errorf(err, MDL_ERR_INTERNAL,
                            "layer \"%s\" parameter %d: shared blob of "
                            "%lld values, own %lld",
                            L->l->name, j, (long long)o->count, (long long)t->count);
        view_param(t, o->data, o->diff);
        continue;
      }
      mdl_param_blob *sb = &net->learn[net->n_learn++];
      sb->offset = (size_t)(t->data - net->params);
      sb->count = (size_t)t->count;
      sb->lr_mult = gl->param_lr_mult[j];
      sb->decay_mult = gl->param_decay_mult[j];
      sb->n_axes = t->n;
      for (int k = 0; k < t->n && k < 8; k++) sb->dim[k] = t->d[k];
    }
  }
  return st;
}

mdl_status mdl_net_new(const mdl_graph *g, const mdl_net_options *opt, mdl_net **out,
                       mdl_error *err) {
  *out = NULL;
  if (!opt || !opt->backend)
    return mdl_errorf(err, MDL_ERR_INTERNAL, "net: no backend given (see runtime/train/device.h)");
  mdl_net *net = mdl_xcalloc(1, sizeof *net);
  net->opt = *opt;
  net->g = g;
  mdl_workspace_init(&net->own_ws);
  if (!net->opt.ws) net->opt.ws = &net->own_ws;
  mdl_rng_init(&net->fill_root, net->opt.seed);
  net->iter_root = mdl_rng_stream(&net->fill_root, 0x9e3779b97f4a7c15ull);
  net->iter_rng = mdl_rng_stream(&net->iter_root, 0);
  net->n_layers = g->n_layers;
  net->L = mdl_xcalloc((size_t)g->n_layers + 1, sizeof *net->L);
  net->n_blobs = g->n_blobs;
  net->blob = mdl_xcalloc((size_t)g->n_blobs + 1, sizeof *net->blob);
  for (int b = 0; b < g->n_blobs; b++) {
    mdl_tensor_init(&net->blob[b]);
    mdl_tensor_from_shape(&net->blob[b], &g->blob_shape[b]);
  }
  mdl_status st = create_layers(net, err);
  if (st == MDL_OK) {
    decide_backward(net);
    st = setup_params(net, err);
  }
  if (st == MDL_OK) st = bind_keeps(net, mdl_mem_plan_reuse_default(), err);
  if (st == MDL_OK) st = mdl_workspace_commit(net->opt.ws, net->opt.backend, err);
  if (st == MDL_OK && net->opt.ws == &net->own_ws) net->allocated += net->own_ws.size;
  if (st != MDL_OK) {
    mdl_net_free(net);
    return st;
  }
  mdl_mem_layer *ml = mdl_xcalloc((size_t)net->n_layers + 1, sizeof *ml);
  for (int i = 0; i < net->n_layers; i++)
    ml[i] = (mdl_mem_layer){.source = !net->L[i].l, .backward = net->L[i].runs_backward};
  net->plan = mdl_mem_plan_new(g, ml, mdl_mem_plan_reuse_default());
  free(ml);

  /* Outputs: blobs nobody consumes, with their producer's loss weight. */
  net->outputs = mdl_xmalloc((size_t)g->n_outputs * sizeof(int) + 1);
  net->output_weight = mdl_xcalloc((size_t)g->n_outputs + 1, sizeof(float));
  for (int k = 0; k < g->n_outputs; k++) {
    int b = g->output_blob[k];
    net->outputs[net->n_outputs] = b;
    for (int i = 0; i < g->n_layers; i++)
      for (int m = 0; m < g->layers[i].n_top; m++)
        if (g->layers[i].top[m] == b)
          net->output_weight[net->n_outputs] =
              g->layers[i].loss_weight ? g->layers[i].loss_weight[m] : 0;
    net->n_outputs++;
  }

  if (!net->opt.defer_arena) {
    float *arena = mdl_backend_alloc(net->opt.backend, (int64_t)net->plan->arena_floats);
    if (!arena) {
      size_t mib = net->plan->arena_floats * sizeof(float) >> 20;
      mdl_net_free(net);
      return mdl_errorf(err, MDL_ERR_NOMEM, "activations of %zu MiB do not fit", mib);
    }
    mdl_net_bind_arena(net, arena);
    net->own_arena = true;
    net->allocated += net->plan->arena_floats * sizeof(float);
  }
  *out = net;
  return MDL_OK;
}

void mdl_net_bind_arena(mdl_net *net, float *arena) {
  if (net->own_arena && net->arena != arena) mdl_backend_free(net->opt.backend, net->arena);
  net->own_arena = false;
  net->arena = arena;
  for (int b = 0; b < net->n_blobs; b++) {
    mdl_tensor *t = &net->blob[b];
    int64_t d[MDL_TENSOR_MAX_AXES];
    memcpy(d, t->d, sizeof d);
    const size_t *data_off = net->plan->data_off, *diff_off = net->plan->diff_off;
    mdl_tensor_view(t, t->n, d, arena + data_off[b],
                    diff_off[b] == NONE ? NULL : arena + diff_off[b]);
  }
}

void mdl_net_free(mdl_net *net) {
  if (!net) return;
  for (int i = 0; i < net->n_layers; i++) {
    net_layer *L = &net->L[i];
    mdl_layer_free(L->l);
    free(L->bottom);
    free(L->top);
    free(L->zero_top_diff);
  }
  free(net->L);
  for (int b = 0; b < net->n_blobs; b++) mdl_tensor_release(&net->blob[b]);
  free(net->blob);
  mdl_mem_plan_free(net->plan);
  if (net->opt.backend) {
    if (net->own_arena) mdl_backend_free(net->opt.backend, net->arena);
    mdl_backend_free(net->opt.backend, net->keeps);
    mdl_backend_free(net->opt.backend, net->params);
    mdl_backend_free(net->opt.backend, net->pdiff);
  }
  free(net->learn);
  mdl_workspace_release(&net->own_ws);
  free(net->outputs);
  free(net->output_weight);
  free(net->sources);
  free(net);
}

/* ---- running ---- */

float mdl_net_forward_layer(mdl_net *net, int i) {
  net_layer *L = &net->L[i];
  if (!L->l) return 0;
  mdl_layer_forward(L->l, L->bottom, L->top);
  return L->has_loss ? (float)mdl_layer_loss(L->l, L->gl->loss_weight, L->top) : 0.0f;
}

float mdl_net_forward(mdl_net *net) {
  double loss = 0;
  for (int i = 0; i < net->n_layers; i++) loss += mdl_net_forward_layer(net, i);
  return (float)loss;
}

void mdl_net_backward_layer(mdl_net *net, int i) {
  net_layer *L = &net->L[i];
  if (!L->runs_backward) return;
  for (int k = 0; k < L->gl->n_top; k++)
    if (L->zero_top_diff[k] && L->top[k]->diff)
      mdl_backend_zero(net->opt.backend, L->top[k]->diff, L->top[k]->count);
  if (L->has_loss) mdl_layer_seed_loss_diff(L->l, L->gl->loss_weight, L->top);
  mdl_layer_backward(L->l, L->top, L->gl->propagate_down, L->bottom);
}

void mdl_net_backward(mdl_net *net) {
  for (int i = net->n_layers - 1; i >= 0; i--) mdl_net_backward_layer(net, i);
}

bool mdl_net_layer_runs_backward(const mdl_net *net, int i) {
  return net->L[i].runs_backward;
}

void mdl_net_clear_param_diffs(mdl_net *net) {
  if (net->n_params) mdl_backend_zero(net->opt.backend, net->pdiff, (int64_t)net->n_params);
}

void mdl_net_set_iteration(mdl_net *net, uint64_t iter) {
  net->iter_rng = mdl_rng_stream(&net->iter_root, iter);
}

void mdl_net_set_seed(mdl_net *net, uint64_t seed) {
  net->opt.seed = seed;
  mdl_rng_init(&net->fill_root, seed);
  net->iter_root = mdl_rng_stream(&net->fill_root, 0x9e3779b97f4a7c15ull);
  net->iter_rng = mdl_rng_stream(&net->iter_root, 0);
}

/* ---- accessors ---- */

const mdl_graph *mdl_net_graph(const mdl_net *net) {
  return net->g;
}
int mdl_net_n_layers(const mdl_net *net) {
  return net->n_layers;
}
const char *mdl_net_layer_name(const mdl_net *net, int i) {
  return layer_name(net->L[i].gl);
}
const char *mdl_net_layer_type(const mdl_net *net, int i) {
  return net->L[i].gl->param->type ? net->L[i].gl->param->type : "";
}
mdl_layer *mdl_net_layer(const mdl_net *net, int i) {
  return net->L[i].l;
}
int mdl_net_n_blobs(const mdl_net *net) {
  return net->n_blobs;
}
const char *mdl_net_blob_name(const mdl_net *net, int b) {
  return net->g->blob_name[b];
}
mdl_tensor *mdl_net_blob(const mdl_net *net, int b) {
  return &net->blob[b];
}
int mdl_net_blob_index(const mdl_net *net, const char *name) {
  for (int b = 0; b < net->n_blobs; b++)
    if (strcmp(net->g->blob_name[b], name) == 0) return b;
  return -1;
}
int mdl_net_n_outputs(const mdl_net *net) {
  return net->n_outputs;
}
int mdl_net_output_blob(const mdl_net *net, int k) {
  return net->outputs[k];
}
float mdl_net_output_weight(const mdl_net *net, int k) {
  return net->output_weight[k];
}
int mdl_net_n_sources(const mdl_net *net) {
  return net->n_sources;
}
int mdl_net_source_layer(const mdl_net *net, int k) {
  return net->sources[k];
}
int mdl_net_n_inputs(const mdl_net *net) {
  return net->g->n_inputs;
}
int mdl_net_input_blob(const mdl_net *net, int k) {
  return net->g->input_blob[k];
}

int64_t mdl_net_batch_size(const mdl_net *net) {
  int b = -1;
  if (net->n_sources && net->L[net->sources[0]].gl->n_top)
    b = net->L[net->sources[0]].gl->top[0];
  else if (net->g->n_inputs)
    b = net->g->input_blob[0];
  else
    for (int i = 0; i < net->n_layers && b < 0; i++) {
      const char *t = net->L[i].gl->param->type;
      if (t && (!strcmp(t, "Input") || !strcmp(t, "DummyData")) && net->L[i].gl->n_top)
        b = net->L[i].gl->top[0];
    }
  if (b < 0 || net->blob[b].n == 0) return 1;
  return net->blob[b].d[0];
}

float mdl_net_blob_first(const mdl_net *net, int b) {
  float v = 0;
  const mdl_tensor *t = &net->blob[b];
  if (t->data && t->count > 0) mdl_backend_to_host(net->opt.backend, &v, t->data, 1);
  return v;
}

void mdl_net_params_get(const mdl_net *net, float *host) {
  mdl_backend_to_host(net->opt.backend, host, net->params, (int64_t)net->n_params);
}

void mdl_net_params_put(mdl_net *net, const float *host) {
  mdl_backend_to_device(net->opt.backend, net->params, host, (int64_t)net->n_params);
}

const mdl_backend *mdl_net_backend(const mdl_net *net) {
  return net->opt.backend;
}

float *mdl_net_params(const mdl_net *net) {
  return net->params;
}
float *mdl_net_param_diffs(const mdl_net *net) {
  return net->pdiff;
}
size_t mdl_net_param_count(const mdl_net *net) {
  return net->n_params;
}
const mdl_param_blob *mdl_net_learnable(const mdl_net *net, int *n) {
  *n = net->n_learn;
  return net->learn;
}
size_t mdl_net_arena_floats(const mdl_net *net) {
  return net->plan->arena_floats;
}
size_t mdl_net_naive_bytes(const mdl_net *net) {
  return net->plan->fig.arena_naive;
}
const mdl_mem_plan *mdl_net_mem_plan(const mdl_net *net) {
  return net->plan;
}
void mdl_net_mem_figures(const mdl_net *net, mdl_mem_figures *fig) {
  *fig = net->plan->fig;
  fig->workspace = net->opt.ws->size;
  fig->params = 2 * net->n_params * sizeof(float);
  fig->kept = net->keep_floats * sizeof(float);
  fig->kept_naive = net->keep_naive_floats * sizeof(float);
}
size_t mdl_net_allocated_bytes(const mdl_net *net) {
  return net->allocated;
}

/* ---- faults and non-finite values ---- */

mdl_status mdl_net_check_fault(const mdl_net *net, mdl_error *err) {
  for (int i = 0; i < net->n_layers; i++) {
    const mdl_layer *l = net->L[i].l;
    if (!l || !l->fault.set) continue;
    return mdl_errorf(err, MDL_ERR_INVALID, "layer \"%s\" (%s), batch item %lld: %s",
                      layer_name(net->L[i].gl), mdl_net_layer_type(net, i),
                      (long long)l->fault.item, l->fault.msg);
  }
  return MDL_OK;
}

int64_t mdl_net_fault_item(const mdl_net *net) {
  for (int i = 0; i < net->n_layers; i++)
    if (net->L[i].l && net->L[i].l->fault.set) return net->L[i].l->fault.item;
  return -1;
}

static const char *nonfinite_str(float v) {
  return isnan(v) ? "NaN" : v > 0 ? "+inf" : "-inf";
}

/* Index of the first non-finite value among n backend floats, or -1. Reads
 * through to_host in chunks, so it works on any backend. */
static int64_t first_nonfinite(const mdl_backend *be, const float *p, int64_t n) {
  enum { CHUNK = 16384 };
  float buf[CHUNK];
  for (int64_t off = 0; off < n; off += CHUNK) {
    int64_t m = n - off < CHUNK ? n - off : CHUNK;
    mdl_backend_to_host(be, buf, p + off, m);
    for (int64_t i = 0; i < m; i++)
      if (!isfinite(buf[i])) return off + i;
  }
  return -1;
}

bool mdl_net_find_nonfinite_param(const mdl_net *net, char *where, size_t n) {
  for (int i = 0; i < net->n_layers; i++) {
    const mdl_layer *l = net->L[i].l;
    if (!l) continue;
    for (int j = 0; j < l->n_param; j++) {
      if (!l->param[j].data) continue;
      int64_t k = first_nonfinite(net->opt.backend, l->param[j].data, l->param[j].count);
      if (k < 0) continue;
      float v;
      mdl_backend_to_host(net->opt.backend, &v, l->param[j].data + k, 1);
      snprintf(where, n, "layer \"%s\" learnable blob %d, value %lld of %lld is %s",
               layer_name(net->L[i].gl), j, (long long)k, (long long)l->param[j].count,
               nonfinite_str(v));
      return true;
    }
  }
  return false;
}

bool mdl_net_find_nonfinite_blob(const mdl_net *net, char *where, size_t n) {
  for (int i = 0; i < net->n_layers; i++) {
    const net_layer *L = &net->L[i];
    for (int k = 0; k < L->gl->n_top; k++) {
      const mdl_tensor *t = L->top[k];
      /* a top released during the forward holds later blobs' values now */
      if (!t->data || net->plan->data_hi[L->gl->top[k]] < net->n_layers - 1) continue;
      int64_t at = first_nonfinite(net->opt.backend, t->data, t->count);
      if (at < 0) continue;
      float v;
      mdl_backend_to_host(net->opt.backend, &v, t->data + at, 1);
      snprintf(where, n, "top \"%s\" of layer \"%s\" (%s), value %lld of %lld is %s",
               net->g->blob_name[L->gl->top[k]], layer_name(L->gl), mdl_net_layer_type(net, i),
               (long long)at, (long long)t->count, nonfinite_str(v));
      return true;
    }
  }
  return false;
}

mdl_status mdl_net_accumulate(mdl_net *net, int iter, int iter_size, mdl_net_feed_fn feed,
                              void *ctx, double *loss, mdl_error *err) {
  if (iter_size < 1) iter_size = 1;
  mdl_net_clear_param_diffs(net);
  double sum = 0;
  for (int i = 0; i < iter_size; i++) {
    uint64_t k = (uint64_t)iter * (uint64_t)iter_size + (uint64_t)i;
    mdl_status st = feed(ctx, k, err);
    if (st != MDL_OK) return st;
    mdl_net_set_iteration(net, k);
    float l = mdl_net_forward(net);
    st = mdl_net_check_fault(net, err);
    if (st != MDL_OK) {
      mdl_error_prefix(err, "iteration %d: ", iter);
      return st;
    }
    sum += l;
    if (!isfinite(l)) break; /* diagnosed below, with the activations of this pass */
    mdl_net_backward(net);
  }
  *loss = sum / iter_size;
  if (!isfinite(*loss)) {
    /* Name where it starts: weights first (an update made them
     * non-finite), else the first layer whose output is. */
    char where[400] = "";
    if (!mdl_net_find_nonfinite_param(net, where, sizeof where))
      mdl_net_find_nonfinite_blob(net, where, sizeof where);
    return mdl_errorf(err, MDL_ERR_DIVERGED,
                      "training diverged at iteration %d: the loss is %s%s%s (try a smaller "
                      "base_lr or clip_gradients)",
                      iter,
                      isnan(*loss) ? "NaN"
                      : *loss > 0  ? "+inf"
                                   : "-inf",
                      where[0] ? "; first non-finite value: " : "", where);
  }
  return MDL_OK;
}
