/* Layers that move, copy, combine or reduce values without learning:
 * Input, DummyData, Eltwise, Concat, Slice, Split, Flatten, Reshape, Silence,
 * Crop, Tile, Reduction, ArgMax. Top shapes come from the shape rule; where
 * the net aliases a top to its bottom (Flatten, Reshape, Split) the copies
 * are skipped. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu/layers_cpu.h"

static void copy_if_distinct(mdl_threadpool *pool, int64_t n, const float *src, float *dst) {
  if (src != dst) mdl_vcopy(pool, n, src, dst);
}

/* ---- Input: the net writes the tops; nothing to compute ----------------- */

static void input_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  (void)l, (void)bottom, (void)top;
}
const mdl_layer_impl mdl_cpu_input_layer = {"Input", NULL, NULL, input_forward, NULL, NULL};

/* ---- DummyData: tops refilled by their fillers on every forward --------- */

static mdl_status dummy_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__DummyDataParameter *p = MDL_LAYER_PARAM(
      l, dummy_data_param, Caffe__DummyDataParameter, CAFFE__DUMMY_DATA_PARAMETER__INIT);
  if (p->n_data_filler != 0 && p->n_data_filler != 1 && p->n_data_filler != (size_t)l->n_top)
    return MDL_LAYER_ERR(l, err, "%zu data_filler entries for %d tops (give 0, 1 or one per top)",
                         p->n_data_filler, l->n_top);
  for (size_t i = 0; i < p->n_data_filler; i++) {
    /* validate each filler against its top once, on a scratch tensor */
    mdl_tensor t;
    mdl_tensor_init(&t);
    const mdl_shape *s = &l->top_shape[p->n_data_filler == 1 ? 0 : i];
    mdl_status st = mdl_tensor_alloc(&t, s->n, s->d, false, err);
    if (st) return st;
    mdl_rng r;
    mdl_rng_init(&r, 0);
    st = mdl_filler_fill(p->data_filler[i], &t, &r, err);
    mdl_tensor_release(&t);
    if (st) {
      mdl_error_prefix(err, "layer \"%s\" (DummyData): ", l->name);
      return st;
    }
  }
  return MDL_OK;
}

static void dummy_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  const Caffe__DummyDataParameter *p = MDL_LAYER_PARAM(
      l, dummy_data_param, Caffe__DummyDataParameter, CAFFE__DUMMY_DATA_PARAMETER__INIT);
  mdl_rng fallback = {0, 0};
  mdl_rng *rng = l->ctx.rng ? l->ctx.rng : &fallback;
  (void)bottom;
  for (int i = 0; i < l->n_top; i++) {
    const Caffe__FillerParameter *f = p->n_data_filler == 0   ? NULL
                                      : p->n_data_filler == 1 ? p->data_filler[0]
                                                              : p->data_filler[i];
    mdl_filler_fill(f, top[i], rng, NULL); /* validated at setup */
  }
}
const mdl_layer_impl mdl_cpu_dummy_data_layer = {"DummyData",   dummy_setup, NULL,
                                                 dummy_forward, NULL,        NULL};

/* ---- Eltwise: PROD, SUM (coeff), MAX (argmax mask) ---------------------- */

typedef struct eltwise_priv {
  int op;
  int64_t count;
  float *coeff;
  int32_t *mask;
} eltwise_priv;

static mdl_status eltwise_setup(mdl_layer *l, mdl_error *err) {
  eltwise_priv *ep = mdl_xcalloc(1, sizeof *ep);
  l->priv = ep;
  ep->coeff = mdl_xcalloc((size_t)l->n_bottom, sizeof(float));
  mdl_eltwise_geom g;
  mdl_status st = mdl_geom_eltwise(l, &g, ep->coeff, err);
  if (st) return st;
  ep->op = g.op;
  ep->count = g.count;
  if (ep->op == CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__MAX) {
    ep->mask = malloc((size_t)(ep->count ? ep->count : 1) * sizeof(int32_t));
    if (!ep->mask) return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": eltwise mask", l->name);
  }
  return MDL_OK;
}

static void eltwise_free(mdl_layer *l) {
  eltwise_priv *ep = l->priv;
  free(ep->coeff);
  free(ep->mask);
  free(ep);
}

typedef struct elt_args {
  const mdl_layer *l;
  mdl_tensor *const *bottom;
  mdl_tensor *const *top;
  const bool *pd;
} elt_args;

static void eltwise_fwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const elt_args *a = arg;
  const eltwise_priv *ep = a->l->priv;
  const int nb = a->l->n_bottom;
  float *y = a->top[0]->data;
  (void)thread;
  switch (ep->op) {
    case CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__PROD:
      for (int64_t i = lo; i < hi; i++) {
        float v = a->bottom[0]->data[i];
        for (int b = 1; b < nb; b++) v *= a->bottom[b]->data[i];
        y[i] = v;
      }
      break;
    case CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__SUM:
      for (int64_t i = lo; i < hi; i++) {
        float v = ep->coeff[0] * a->bottom[0]->data[i];
        for (int b = 1; b < nb; b++) v += ep->coeff[b] * a->bottom[b]->data[i];
        y[i] = v;
      }
      break;
    default: /* MAX: ties between the first two go to bottom 1, later ties keep the earlier */
      for (int64_t i = lo; i < hi; i++) {
        float x0 = a->bottom[0]->data[i], x1 = a->bottom[1]->data[i];
        float v = x0 > x1 ? x0 : x1;
        int32_t m = x0 > x1 ? 0 : 1;
        for (int b = 2; b < nb; b++)
          if (a->bottom[b]->data[i] > v) {
            v = a->bottom[b]->data[i];
            m = b;
          }
        y[i] = v;
        ep->mask[i] = m;
      }
  }
}

static void eltwise_bwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const elt_args *a = arg;
  const eltwise_priv *ep = a->l->priv;
  const int nb = a->l->n_bottom;
  const float *dy = a->top[0]->diff;
  (void)thread;
  /* bottom diffs may alias the top diff (in place on bottom 0): read dy
   * first, write each bottom's diff from values taken before */
  for (int64_t i = lo; i < hi; i++) {
    const float g = dy[i];
    for (int b = 0; b < nb; b++) {
      if (!a->pd[b]) continue;
      float v;
      switch (ep->op) {
        case CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__PROD: {
          v = g;
          for (int o = 0; o < nb; o++)
            if (o != b) v *= a->bottom[o]->data[i];
          break;
        }
        case CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__SUM:
          v = ep->coeff[b] * g;
          break;
        default:
          v = ep->mask[i] == b ? g : 0.f;
      }
      a->bottom[b]->diff[i] = v;
    }
  }
}

static void eltwise_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  eltwise_priv *ep = l->priv;
  elt_args a = {l, bottom, top, NULL};
  mdl_parallel_for(l->ctx.pool, ep->count, EW_GRAIN, eltwise_fwd_task, &a);
}

static void eltwise_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                             mdl_tensor *const *bottom) {
  eltwise_priv *ep = l->priv;
  elt_args a = {l, bottom, top, pd};
  mdl_parallel_for(l->ctx.pool, ep->count, EW_GRAIN, eltwise_bwd_task, &a);
}

const mdl_layer_impl mdl_cpu_eltwise_layer = {"Eltwise",       eltwise_setup,    NULL,
                                              eltwise_forward, eltwise_backward, eltwise_free};

/* ---- Concat and Slice: outer x (sum of parts along axis) x inner --------- */

typedef struct cat_priv {
  int64_t outer, inner, total; /* total = big axis size */
  int64_t *part;               /* per small blob: its axis size */
  int n;
} cat_priv;

/* Concat and Slice: the shared geometry, each part's size kept. */
static mdl_status cat_setup(mdl_layer *l, mdl_error *err) {
  cat_priv *cp = mdl_xcalloc(1, sizeof *cp);
  l->priv = cp;
  int n = l->n_bottom > l->n_top ? l->n_bottom : l->n_top;
  cp->part = mdl_xcalloc((size_t)(n ? n : 1), sizeof(int64_t));
  mdl_concat_geom g;
  mdl_status st = mdl_geom_concat(l, &g, cp->part, err);
  if (st) return st;
  cp->n = g.n;
  cp->outer = g.outer;
  cp->inner = g.inner;
  cp->total = g.total;
  return MDL_OK;
}

static void cat_free(mdl_layer *l) {
  cat_priv *cp = l->priv;
  free(cp->part);
  free(cp);
}

/* to_big: copy small blobs into the big one; else the reverse. use_diff
 * selects the diff arrays. */
static void cat_move(const cat_priv *cp, mdl_tensor *const *small, const bool *pd, mdl_tensor *big,
                     bool to_big, bool use_diff) {
  int64_t off = 0;
  for (int i = 0; i < cp->n; i++) {
    int64_t w = cp->part[i] * cp->inner;
    if (pd && !pd[i]) {
      off += w;
      continue;
    }
    float *s = use_diff ? small[i]->diff : small[i]->data;
    float *b = use_diff ? big->diff : big->data;
    for (int64_t o = 0; o < cp->outer; o++) {
      float *bp = b + o * cp->total * cp->inner + off;
      float *sp = s + o * w;
      if (to_big)
        memcpy(bp, sp, (size_t)w * sizeof(float));
      else
        memcpy(sp, bp, (size_t)w * sizeof(float));
    }
    off += w;
  }
}

static void concat_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  cat_move(l->priv, bottom, NULL, top[0], true, false);
}
static void concat_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                            mdl_tensor *const *bottom) {
  cat_move(l->priv, bottom, pd, top[0], false, true);
}
const mdl_layer_impl mdl_cpu_concat_layer = {"Concat",       cat_setup,       NULL,
                                             concat_forward, concat_backward, cat_free};

static void slice_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  cat_move(l->priv, top, NULL, bottom[0], false, false);
}
static void slice_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                           mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  cat_move(l->priv, top, NULL, bottom[0], true, true);
}
const mdl_layer_impl mdl_cpu_slice_layer = {"Slice",       cat_setup,      NULL,
                                            slice_forward, slice_backward, cat_free};

/* ---- Split: tops copy the bottom; its gradient is the sum of theirs ----- */

static void split_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  for (int i = 0; i < l->n_top; i++)
    copy_if_distinct(l->ctx.pool, bottom[0]->count, bottom[0]->data, top[i]->data);
}
static void split_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                           mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  int64_t n = bottom[0]->count;
  float *dx = bottom[0]->diff;
  if (l->n_top == 0) {
    mdl_vset(l->ctx.pool, n, 0.f, dx);
    return;
  }
  /* dx may alias top 0's diff */
  copy_if_distinct(l->ctx.pool, n, top[0]->diff, dx);
  for (int i = 1; i < l->n_top; i++) mdl_vaxpy(l->ctx.pool, n, 1.f, top[i]->diff, dx);
}
const mdl_layer_impl mdl_cpu_split_layer = {"Split",       NULL,           NULL,
                                            split_forward, split_backward, NULL};

/* ---- Flatten, Reshape: same values, new shape ----------------------------- */

static void same_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  copy_if_distinct(l->ctx.pool, bottom[0]->count, bottom[0]->data, top[0]->data);
}
static void same_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  if (pd[0]) copy_if_distinct(l->ctx.pool, bottom[0]->count, top[0]->diff, bottom[0]->diff);
}
const mdl_layer_impl mdl_cpu_flatten_layer = {"Flatten",    NULL,          NULL,
                                              same_forward, same_backward, NULL};
const mdl_layer_impl mdl_cpu_reshape_layer = {"Reshape",    NULL,          NULL,
                                              same_forward, same_backward, NULL};

/* ---- Silence: consumes bottoms; their gradient is zero ------------------- */

static void silence_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  (void)l, (void)bottom, (void)top;
}
static void silence_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                             mdl_tensor *const *bottom) {
  (void)top;
  for (int i = 0; i < l->n_bottom; i++)
    if (pd[i]) mdl_vset(l->ctx.pool, bottom[i]->count, 0.f, bottom[i]->diff);
}
const mdl_layer_impl mdl_cpu_silence_layer = {"Silence",        NULL, NULL, silence_forward,
                                              silence_backward, NULL};

/* ---- Crop: bottom 0 cut to bottom 1's shape from `axis` on, at offsets ---- */

typedef struct crop_priv {
  int n;
  int64_t in[MDL_MAX_AXES], out[MDL_MAX_AXES], off[MDL_MAX_AXES];
} crop_priv;

static mdl_status crop_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__CropParameter *p =
      MDL_LAYER_PARAM(l, crop_param, Caffe__CropParameter, CAFFE__CROP_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0], *t = &l->top_shape[0];
  int axis = mdl_shape_axis(b, p->axis);
  if (axis < 0) return MDL_LAYER_ERR(l, err, "axis %d out of range", p->axis);
  int n_crop = b->n - axis;
  if (p->n_offset > 1 && (int)p->n_offset != n_crop)
    return MDL_LAYER_ERR(l, err, "%zu offsets for %d cropped axes", p->n_offset, n_crop);
  crop_priv *cp = mdl_xcalloc(1, sizeof *cp);
  l->priv = cp;
  cp->n = b->n;
  for (int i = 0; i < b->n; i++) {
    cp->in[i] = b->d[i];
    cp->out[i] = t->d[i];
    int64_t o = 0;
    if (i >= axis && p->n_offset) o = p->n_offset == 1 ? p->offset[0] : p->offset[i - axis];
    cp->off[i] = o;
    if (o + t->d[i] > b->d[i])
      return MDL_LAYER_ERR(l, err, "crop of axis %d (offset %lld, size %lld) exceeds %lld", i,
                           (long long)o, (long long)t->d[i], (long long)b->d[i]);
  }
  return MDL_OK;
}

/* Copies the cropped block between the big (bottom) and small (top) arrays,
 * innermost axis by memcpy. */
static void crop_move(const crop_priv *cp, float *big, float *small, bool to_small) {
  int n = cp->n;
  if (n == 0) {
    if (to_small)
      small[0] = big[0];
    else
      big[0] = small[0];
    return;
  }
  int64_t idx[MDL_MAX_AXES] = {0};
  int64_t rows = 1;
  for (int i = 0; i < n - 1; i++) rows *= cp->out[i];
  const int64_t w = cp->out[n - 1];
  for (int64_t r = 0; r < rows; r++) {
    int64_t bo = 0, so = 0;
    for (int i = 0; i < n; i++) {
      int64_t bi = (i < n - 1 ? idx[i] : 0) + cp->off[i];
      int64_t si = i < n - 1 ? idx[i] : 0;
      bo = bo * cp->in[i] + bi;
      so = so * cp->out[i] + si;
    }
    if (to_small)
      memcpy(small + so, big + bo, (size_t)w * sizeof(float));
    else
      memcpy(big + bo, small + so, (size_t)w * sizeof(float));
    for (int i = n - 2; i >= 0; i--) {
      if (++idx[i] < cp->out[i]) break;
      idx[i] = 0;
    }
  }
}

static void crop_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  crop_move(l->priv, bottom[0]->data, top[0]->data, true);
}
static void crop_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  mdl_vset(l->ctx.pool, bottom[0]->count, 0.f, bottom[0]->diff);
  crop_move(l->priv, bottom[0]->diff, top[0]->diff, false);
}
const mdl_layer_impl mdl_cpu_crop_layer = {"Crop",       crop_setup,    NULL,
                                           crop_forward, crop_backward, NULL};

/* ---- Tile: each outer block of `inner` values repeated `tiles` times ----- */

typedef struct tile_priv {
  int64_t outer, inner, tiles;
} tile_priv;

static mdl_status tile_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__TileParameter *p =
      MDL_LAYER_PARAM(l, tile_param, Caffe__TileParameter, CAFFE__TILE_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  int axis = mdl_shape_axis(b, p->axis);
  if (axis < 0) return MDL_LAYER_ERR(l, err, "axis %d out of range", p->axis);
  if (p->tiles < 1) return MDL_LAYER_ERR(l, err, "tiles must be positive");
  tile_priv *tp = mdl_xcalloc(1, sizeof *tp);
  l->priv = tp;
  tp->outer = mdl_shape_count_axes(b, 0, axis);
  tp->inner = mdl_shape_count_axes(b, axis, b->n);
  tp->tiles = p->tiles;
  return MDL_OK;
}
static void tile_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  tile_priv *tp = l->priv;
  for (int64_t o = 0; o < tp->outer; o++)
    for (int64_t t = 0; t < tp->tiles; t++)
      memcpy(top[0]->data + (o * tp->tiles + t) * tp->inner, bottom[0]->data + o * tp->inner,
             (size_t)tp->inner * sizeof(float));
}
static void tile_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  tile_priv *tp = l->priv;
  if (!pd[0]) return;
  for (int64_t o = 0; o < tp->outer; o++) {
    float *dx = bottom[0]->diff + o * tp->inner;
    memcpy(dx, top[0]->diff + o * tp->tiles * tp->inner, (size_t)tp->inner * sizeof(float));
    for (int64_t t = 1; t < tp->tiles; t++) {
      const float *dy = top[0]->diff + (o * tp->tiles + t) * tp->inner;
      for (int64_t i = 0; i < tp->inner; i++) dx[i] += dy[i];
    }
  }
}
const mdl_layer_impl mdl_cpu_tile_layer = {"Tile",       tile_setup,    NULL,
                                           tile_forward, tile_backward, NULL};

/* ---- Reduction: SUM, ASUM, SUMSQ, MEAN over axes [axis, end), times coeff */

typedef struct red_priv {
  int op;
  float coeff;
  int64_t num, dim;
} red_priv;

static mdl_status reduction_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__ReductionParameter *p = MDL_LAYER_PARAM(
      l, reduction_param, Caffe__ReductionParameter, CAFFE__REDUCTION_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  int axis = b->n == 0 && p->axis == 0 ? 0 : mdl_shape_axis(b, p->axis);
  if (axis < 0) return MDL_LAYER_ERR(l, err, "axis %d out of range", p->axis);
  red_priv *rp = mdl_xcalloc(1, sizeof *rp);
  l->priv = rp;
  rp->op = p->operation;
  rp->coeff = p->coeff;
  rp->num = mdl_shape_count_axes(b, 0, axis);
  rp->dim = mdl_shape_count_axes(b, axis, b->n);
  if (rp->op == CAFFE__REDUCTION_PARAMETER__REDUCTION_OP__MEAN && rp->dim)
    rp->coeff /= (float)rp->dim;
  return MDL_OK;
}
static void reduction_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  red_priv *rp = l->priv;
  for (int64_t i = 0; i < rp->num; i++) {
    const float *x = bottom[0]->data + i * rp->dim;
    double s;
    switch (rp->op) {
      case CAFFE__REDUCTION_PARAMETER__REDUCTION_OP__ASUM:
        s = mdl_vasum(NULL, rp->dim, x);
        break;
      case CAFFE__REDUCTION_PARAMETER__REDUCTION_OP__SUMSQ:
        s = mdl_vsumsq(NULL, rp->dim, x);
        break;
      default:
        s = mdl_vsum(NULL, rp->dim, x);
    }
    top[0]->data[i] = (float)(s * rp->coeff);
  }
}
static void reduction_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                               mdl_tensor *const *bottom) {
  red_priv *rp = l->priv;
  if (!pd[0]) return;
  for (int64_t i = 0; i < rp->num; i++) {
    const float *x = bottom[0]->data + i * rp->dim;
    float *dx = bottom[0]->diff + i * rp->dim;
    const float g = top[0]->diff[i] * rp->coeff;
    for (int64_t j = 0; j < rp->dim; j++) {
      switch (rp->op) {
        case CAFFE__REDUCTION_PARAMETER__REDUCTION_OP__ASUM:
          dx[j] = x[j] > 0.f ? g : x[j] < 0.f ? -g : 0.f;
          break;
        case CAFFE__REDUCTION_PARAMETER__REDUCTION_OP__SUMSQ:
          dx[j] = 2.f * x[j] * g;
          break;
        default:
          dx[j] = g;
      }
    }
  }
}
const mdl_layer_impl mdl_cpu_reduction_layer = {"Reduction",       reduction_setup,    NULL,
                                                reduction_forward, reduction_backward, NULL};

/* ---- ArgMax: top_k indices (and/or values) along an axis ----------------- */
/* Without axis: per image over all of axes 1.., top (N, 1 or 2, k) holding
 * indices then values. With axis: top is the bottom with that axis = k,
 * holding values when out_max_val, else indices. Ties: larger index first
 * (Caffe sorts (value, index) pairs descending). */

typedef struct argmax_priv {
  bool has_axis, out_val;
  int64_t k, outer, dim, inner;
} argmax_priv;

static mdl_status argmax_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__ArgMaxParameter *p =
      MDL_LAYER_PARAM(l, argmax_param, Caffe__ArgMaxParameter, CAFFE__ARG_MAX_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  argmax_priv *ap = mdl_xcalloc(1, sizeof *ap);
  l->priv = ap;
  ap->has_axis = p->has_axis;
  ap->out_val = p->out_max_val;
  ap->k = p->top_k;
  if (ap->has_axis) {
    int axis = mdl_shape_axis(b, p->axis);
    if (axis < 0) return MDL_LAYER_ERR(l, err, "axis %d out of range", p->axis);
    ap->outer = mdl_shape_count_axes(b, 0, axis);
    ap->dim = b->d[axis];
    ap->inner = mdl_shape_count_axes(b, axis + 1, b->n);
  } else {
    ap->outer = b->n ? b->d[0] : 1;
    ap->dim = mdl_shape_count_axes(b, 1, b->n);
    ap->inner = 1;
  }
  if (ap->k < 1 || ap->k > ap->dim)
    return MDL_LAYER_ERR(l, err, "top_k %lld must be in 1..%lld", (long long)ap->k,
                         (long long)ap->dim);
  return MDL_OK;
}

static void argmax_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  argmax_priv *ap = l->priv;
  int64_t *best = mdl_xmalloc((size_t)ap->k * sizeof(int64_t));
  for (int64_t o = 0; o < ap->outer; o++)
    for (int64_t i = 0; i < ap->inner; i++) {
      const float *x = bottom[0]->data + o * ap->dim * ap->inner + i;
      /* selection of the k best by (value desc, index desc) */
      int64_t nb = 0;
      for (int64_t j = 0; j < ap->dim; j++) {
        float v = x[j * ap->inner];
        int64_t pos = nb;
        while (pos > 0) {
          float u = x[best[pos - 1] * ap->inner];
          if (v > u || (v == u && j > best[pos - 1]))
            pos--;
          else
            break;
        }
        if (pos >= ap->k) continue;
        int64_t last = nb < ap->k ? nb : ap->k - 1;
        for (int64_t q = last; q > pos; q--) best[q] = best[q - 1];
        best[pos] = j;
        if (nb < ap->k) nb++;
      }
      float *y = top[0]->data;
      for (int64_t q = 0; q < ap->k; q++) {
        float idx = (float)best[q], val = x[best[q] * ap->inner];
        if (ap->has_axis) {
          y[(o * ap->k + q) * ap->inner + i] = ap->out_val ? val : idx;
        } else if (ap->out_val) {
          y[o * 2 * ap->k + q] = idx;
          y[o * 2 * ap->k + ap->k + q] = val;
        } else {
          y[o * ap->k + q] = idx;
        }
      }
    }
  free(best);
}
const mdl_layer_impl mdl_cpu_argmax_layer = {"ArgMax",       argmax_setup, NULL,
                                             argmax_forward, NULL,         NULL};
