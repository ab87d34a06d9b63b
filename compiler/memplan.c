/* Liveness and placement of a net's activations and their gradients. See
 * memplan.h. */
#include "compiler/memplan.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN_FLOATS 16 /* 64 bytes */

static size_t round_up(size_t n) {
  return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) abort(); /* bookkeeping tier */
  return p;
}

static bool type_in(const char *t, const char *const *list) {
  for (; t && *list; list++)
    if (strcmp(t, *list) == 0) return true;
  return false;
}

static bool eltwise_sum(const Caffe__LayerParameter *lp) {
  return !lp->eltwise_param || !lp->eltwise_param->has_operation ||
         lp->eltwise_param->operation == CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__SUM;
}

/* Caffe lets a layer's backward read its bottom data, top data and top diff.
 * These say which layers, on every backend here, read none of a kind, so the
 * buffer may be released after its last forward use. Anything not listed
 * keeps the default: it reads. (Pooling keeps its argmax, BatchNorm its
 * normalised output, Dropout its mask, an in-place Scale its input: in
 * their own state.) */
static bool backward_reads_bottom(const mdl_graph_layer *gl) {
  static const char *const none[] = {"Split",   "Concat",  "Slice",   "Flatten",   "Reshape",
                                     "Pooling", "Dropout", "Silence", "BatchNorm", NULL};
  const char *t = gl->param->type;
  if (type_in(t, none)) return false;
  if (t && !strcmp(t, "Eltwise")) return !eltwise_sum(gl->param);
  if (t && !strcmp(t, "Scale"))
    return !(gl->n_bottom == 1 && gl->n_top == 1 && gl->top[0] == gl->bottom[0]);
  return true;
}

static bool backward_reads_top(const mdl_graph_layer *gl) {
  static const char *const none[] = {"Convolution", "InnerProduct",    "Pooling",       "BatchNorm",
                                     "Scale",       "Split",           "Concat",        "Slice",
                                     "Flatten",     "Reshape",         "Dropout",       "Silence",
                                     "Accuracy",    "SoftmaxWithLoss", "EuclideanLoss", NULL};
  const char *t = gl->param->type;
  if (type_in(t, none)) return false;
  if (t && !strcmp(t, "Eltwise")) return !eltwise_sum(gl->param);
  return true;
}

bool mdl_mem_source_type(const char *type) {
  static const char *const types[] = {"Data",     "ImageData",  "MemoryData",
                                      "HDF5Data", "WindowData", NULL};
  return type_in(type, types);
}

mdl_mem_layer *mdl_mem_layers_of(const mdl_graph *g) {
  bool force = g->net && g->net->force_backward;
  bool allowed = g->phase == CAFFE__PHASE__TRAIN || force;
  mdl_mem_layer *ml = xcalloc((size_t)g->n_layers, sizeof *ml);
  for (int i = 0; i < g->n_layers; i++) {
    const mdl_graph_layer *gl = &g->layers[i];
    ml[i].source = mdl_mem_source_type(gl->param->type);
    ml[i].backward = allowed && !ml[i].source && (gl->needs_backward || force);
  }
  return ml;
}

/* ---- placement ---- */

typedef struct item {
  size_t size; /* floats, rounded */
  int lo, hi;  /* inclusive live steps */
  size_t *off;
} item;

static int cmp_item(const void *a, const void *b) {
  const item *x = a, *y = b;
  if (x->size != y->size) return x->size < y->size ? 1 : -1;
  return x->lo - y->lo;
}

static int cmp_range(const void *a, const void *b) {
  const size_t *x = a, *y = b;
  return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Biggest first, each at the lowest offset clear of the items already
 * placed that are live at a common step. Returns the arena size in floats. */
static size_t place(item *it, int n) {
  qsort(it, (size_t)n, sizeof *it, cmp_item);
  size_t total = 0;
  size_t(*busy)[2] = malloc((size_t)(n ? n : 1) * sizeof *busy);
  if (!busy) abort(); /* bookkeeping tier: a few bytes per blob */
  for (int i = 0; i < n; i++) {
    int nb = 0;
    for (int j = 0; j < i; j++)
      if (it[j].lo <= it[i].hi && it[i].lo <= it[j].hi) {
        busy[nb][0] = *it[j].off;
        busy[nb][1] = *it[j].off + it[j].size;
        nb++;
      }
    qsort(busy, (size_t)nb, sizeof *busy, cmp_range);
    size_t off = 0;
    for (int k = 0; k < nb; k++) {
      if (busy[k][0] >= off + it[i].size) break;
      if (busy[k][1] > off) off = busy[k][1];
    }
    *it[i].off = off;
    if (off + it[i].size > total) total = off + it[i].size;
  }
  free(busy);
  return total;
}

/* Peak over steps of the summed sizes of the live buffers (floats). */
static size_t peak(const mdl_mem_plan *p, const int *lo, const int *hi, const size_t *off,
                   const int *alias) {
  size_t best = 0;
  for (int s = -1; s < p->n_steps; s++) {
    size_t sum = 0;
    for (int b = 0; b < p->n_blobs; b++)
      if (off[b] != MDL_MEM_NONE && (!alias || alias[b] == b) && lo[b] <= s && s <= hi[b])
        sum += p->size[b];
    if (sum > best) best = sum;
  }
  return best;
}

/* Live steps of every blob's data and diff. */
static void liveness(mdl_mem_plan *p, const mdl_graph *g, const mdl_mem_layer *ml, bool backward) {
  const int n = g->n_layers, end = p->n_steps - 1;
  bool *consumed = xcalloc((size_t)p->n_blobs, sizeof(bool));
  bool *need_diff = xcalloc((size_t)p->n_blobs, sizeof(bool));
  for (int b = 0; b < p->n_blobs; b++) {
    p->data_lo[b] = n;
    p->data_hi[b] = -1;
    p->diff_lo[b] = p->n_steps;
    p->diff_hi[b] = -1;
  }
#define WIDEN(lo, hi, s)      \
  do {                        \
    if ((s) < (lo)) lo = (s); \
    if ((s) > (hi)) hi = (s); \
  } while (0)
  for (int i = 0; i < n; i++) {
    const mdl_graph_layer *gl = &g->layers[i];
    const int bstep = 2 * n - 1 - i;
    for (int k = 0; k < gl->n_bottom; k++) {
      int b = gl->bottom[k];
      consumed[b] = true;
      WIDEN(p->data_lo[b], p->data_hi[b], i);
      if (ml[i].backward && backward_reads_bottom(gl)) WIDEN(p->data_lo[b], p->data_hi[b], bstep);
      if (ml[i].backward && (!gl->propagate_down || gl->propagate_down[k])) {
        need_diff[b] = true;
        WIDEN(p->diff_lo[b], p->diff_hi[b], bstep);
      }
    }
    for (int k = 0; k < gl->n_top; k++) {
      int b = gl->top[k];
      WIDEN(p->data_lo[b], p->data_hi[b], ml[i].source ? -1 : i);
      if (ml[i].backward && backward_reads_top(gl)) WIDEN(p->data_lo[b], p->data_hi[b], bstep);
      if (ml[i].backward) {
        need_diff[b] = true;
        WIDEN(p->diff_lo[b], p->diff_hi[b], bstep);
      }
    }
  }
#undef WIDEN
  for (int k = 0; k < g->n_inputs; k++) p->data_lo[g->input_blob[k]] = -1;
  for (int b = 0; b < p->n_blobs; b++) {
    /* Net outputs (losses, accuracies) are read by the caller afterwards. */
    if (!consumed[b]) p->data_hi[b] = end;
    if (p->data_hi[b] < p->data_lo[b]) p->data_hi[b] = p->data_lo[b];
    p->diff_off[b] = backward && need_diff[b] ? 0 : MDL_MEM_NONE;
  }
  free(consumed);
  free(need_diff);
}

static int root_of(const int *alias, int b) {
  while (alias[b] != b) b = alias[b];
  return b;
}

/* Split, Flatten and Reshape tops that no other layer writes share their
 * bottom's data; each group's live steps become the union of its members'. */
static void alias_views(mdl_mem_plan *p, const mdl_graph *g) {
  static const char *const views[] = {"Split", "Flatten", "Reshape", NULL};
  int *writers = xcalloc((size_t)p->n_blobs, sizeof(int));
  for (int b = 0; b < p->n_blobs; b++) p->alias[b] = b;
  for (int i = 0; i < g->n_layers; i++)
    for (int k = 0; k < g->layers[i].n_top; k++) writers[g->layers[i].top[k]]++;
  for (int i = 0; i < g->n_layers; i++) {
    const mdl_graph_layer *gl = &g->layers[i];
    if (!type_in(gl->param->type, views) || gl->n_bottom != 1) continue;
    int r = root_of(p->alias, gl->bottom[0]);
    for (int k = 0; k < gl->n_top; k++) {
      int t = gl->top[k];
      if (t == gl->bottom[0] || writers[t] != 1 || p->size[t] != p->size[r]) continue;
      p->alias[t] = r;
    }
  }
  for (int b = 0; b < p->n_blobs; b++) {
    int r = root_of(p->alias, b);
    p->alias[b] = r;
    if (p->data_lo[b] < p->data_lo[r]) p->data_lo[r] = p->data_lo[b];
    if (p->data_hi[b] > p->data_hi[r]) p->data_hi[r] = p->data_hi[b];
  }
  for (int b = 0; b < p->n_blobs; b++) { /* members report the group's span */
    p->data_lo[b] = p->data_lo[p->alias[b]];
    p->data_hi[b] = p->data_hi[p->alias[b]];
  }
  free(writers);
}

mdl_mem_plan *mdl_mem_plan_new(const mdl_graph *g, const mdl_mem_layer *layers, bool reuse) {
  mdl_mem_plan *p = xcalloc(1, sizeof *p);
  const int nb = g->n_blobs;
  bool backward = false;
  for (int i = 0; i < g->n_layers; i++) backward |= layers[i].backward;
  p->n_blobs = nb;
  p->n_steps = backward ? 2 * g->n_layers : g->n_layers;
  p->size = xcalloc((size_t)nb, sizeof(size_t));
  p->data_off = xcalloc((size_t)nb, sizeof(size_t));
  p->diff_off = xcalloc((size_t)nb, sizeof(size_t));
  p->data_lo = xcalloc((size_t)nb, sizeof(int));
  p->data_hi = xcalloc((size_t)nb, sizeof(int));
  p->diff_lo = xcalloc((size_t)nb, sizeof(int));
  p->diff_hi = xcalloc((size_t)nb, sizeof(int));
  p->alias = xcalloc((size_t)nb, sizeof(int));
  for (int b = 0; b < nb; b++) p->size[b] = round_up((size_t)mdl_shape_count(&g->blob_shape[b]));
  liveness(p, g, layers, backward);
  if (reuse)
    alias_views(p, g);
  else
    for (int b = 0; b < nb; b++) p->alias[b] = b;

  item *items = xcalloc((size_t)(2 * nb), sizeof *items);
  int ni = 0;
  for (int b = 0; b < nb; b++) {
    p->fig.data_naive += p->size[b] * sizeof(float);
    if (p->alias[b] == b)
      items[ni++] = (item){p->size[b], p->data_lo[b], p->data_hi[b], &p->data_off[b]};
    if (p->diff_off[b] == MDL_MEM_NONE) continue;
    items[ni++] = (item){p->size[b], p->diff_lo[b], p->diff_hi[b], &p->diff_off[b]};
    p->fig.diff_naive += p->size[b] * sizeof(float);
  }
  if (reuse) {
    p->arena_floats = place(items, ni);
  } else { /* every buffer its own bytes, live or not */
    for (int i = 0; i < ni; i++) {
      *items[i].off = p->arena_floats;
      p->arena_floats += items[i].size;
    }
  }
  free(items);
  for (int b = 0; b < nb; b++) p->data_off[b] = p->data_off[p->alias[b]];
  p->fig.arena_naive = p->fig.data_naive + p->fig.diff_naive;
  p->fig.arena = p->arena_floats * sizeof(float);
  p->fig.data_planned = peak(p, p->data_lo, p->data_hi, p->data_off, p->alias) * sizeof(float);
  p->fig.diff_planned = peak(p, p->diff_lo, p->diff_hi, p->diff_off, NULL) * sizeof(float);
  if (!reuse) {
    p->fig.data_planned = p->fig.data_naive;
    p->fig.diff_planned = p->fig.diff_naive;
  }
  return p;
}

void mdl_mem_plan_free(mdl_mem_plan *p) {
  if (!p) return;
  free(p->size);
  free(p->data_off);
  free(p->diff_off);
  free(p->data_lo);
  free(p->data_hi);
  free(p->diff_lo);
  free(p->diff_hi);
  free(p->alias);
  free(p);
}

bool mdl_mem_plan_reuse_default(void) {
  const char *e = getenv("MDL_MEMPLAN");
  return !(e && strcmp(e, "off") == 0);
}

bool mdl_mem_plan_find_overlap(const mdl_mem_plan *p, int *a, int *ka, int *b, int *kb) {
  const int n = 2 * p->n_blobs;
  for (int i = 0; i < n; i++) {
    int bi = i / 2, ki = i % 2;
    size_t oi = ki ? p->diff_off[bi] : p->data_off[bi];
    if (oi == MDL_MEM_NONE) continue;
    int li = ki ? p->diff_lo[bi] : p->data_lo[bi], hi = ki ? p->diff_hi[bi] : p->data_hi[bi];
    for (int j = i + 1; j < n; j++) {
      int bj = j / 2, kj = j % 2;
      size_t oj = kj ? p->diff_off[bj] : p->data_off[bj];
      if (oj == MDL_MEM_NONE) continue;
      int lj = kj ? p->diff_lo[bj] : p->data_lo[bj], hj = kj ? p->diff_hi[bj] : p->data_hi[bj];
      if (!ki && !kj && p->alias[bi] == p->alias[bj]) continue; /* shared on purpose */
      bool at_once = li <= hj && lj <= hi;
      bool shared = oi < oj + p->size[bj] && oj < oi + p->size[bi];
      if (at_once && shared) {
        *a = bi, *ka = ki, *b = bj, *kb = kj;
        return true;
      }
    }
  }
  return false;
}
