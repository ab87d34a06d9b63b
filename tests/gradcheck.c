/* Layer fixture and central-difference gradient checker (see gradcheck.h). */
#include "tests/gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/textformat.h"

mdl_shape gc_shape(int n, const int64_t *d) {
  mdl_shape s;
  memset(&s, 0, sizeof s);
  s.n = n;
  for (int i = 0; i < n; i++) s.d[i] = d[i];
  return s;
}

void gc_fill_uniform(float *x, int64_t n, float lo, float hi, uint64_t seed) {
  mdl_rng r;
  mdl_rng_init(&r, seed);
  for (int64_t i = 0; i < n; i++) x[i] = mdl_rng_uniform(&r, lo, hi);
}

void gc_fill_labels(float *x, int64_t n, int k, uint64_t seed) {
  mdl_rng r;
  mdl_rng_init(&r, seed);
  for (int64_t i = 0; i < n; i++) x[i] = (float)(mdl_rng_u32(&r) % (uint32_t)k);
}

void gc_fill_distinct(float *x, int64_t n, float gap, uint64_t seed) {
  mdl_rng r;
  mdl_rng_init(&r, seed);
  for (int64_t i = 0; i < n; i++) x[i] = ((float)i - (float)(n - 1) / 2) * gap;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)(mdl_rng_u32(&r) % (uint32_t)(i + 1));
    float t = x[i];
    x[i] = x[j];
    x[j] = t;
  }
}

mdl_status gc_layer_make(gc_layer *f, const char *layer_text, Caffe__Phase phase, int n_bottom,
                         const mdl_shape *bottom_shape, bool in_place, mdl_threadpool *pool,
                         uint64_t seed, mdl_error *err) {
  return gc_layer_make_on(mdl_cpu_backend(), f, layer_text, phase, n_bottom, bottom_shape, in_place,
                          pool, seed, err);
}

mdl_status gc_layer_make_on(const mdl_backend *be, gc_layer *f, const char *layer_text,
                            Caffe__Phase phase, int n_bottom, const mdl_shape *bottom_shape,
                            bool in_place, mdl_threadpool *pool, uint64_t seed, mdl_error *err) {
  memset(f, 0, sizeof *f);
  ProtobufCMessage *msg = NULL;
  mdl_status st = mdl_text_parse(layer_text, strlen(layer_text), "<test>",
                                 &caffe__layer_parameter__descriptor, &msg, err);
  if (st) return st;
  f->lp = (Caffe__LayerParameter *)msg;
  if (!f->lp->name) f->lp->name = strdup("test");
  /* tests may leave out blob names: one top unless the type is a loss */
  const mdl_layer_def *def = mdl_layer_find(f->lp->type ? f->lp->type : "");
  if (f->lp->n_top == 0 && def && !def->is_loss && def->min_top > 0) {
    f->lp->top = malloc(sizeof(char *));
    f->lp->top[0] = strdup("t0");
    f->lp->n_top = 1;
  }
  /* An in-place run names top 0 as bottom 0, as a net's would: layers
   * decide at setup from the names whether to keep a copy of the input. */
  if (in_place && n_bottom > 0 && f->lp->n_top > 0 && f->lp->n_bottom == 0) {
    f->lp->bottom = calloc((size_t)n_bottom, sizeof(char *));
    for (int i = 0; i < n_bottom; i++) {
      char name[16];
      snprintf(name, sizeof name, "b%d", i);
      f->lp->bottom[i] = strdup(i == 0 ? f->lp->top[0] : name);
    }
    f->lp->n_bottom = (size_t)n_bottom;
  }
  mdl_workspace_init(&f->ws);
  mdl_rng_init(&f->rng, seed ^ 0x5bd1e995u);
  f->in_place = in_place;
  f->n_bottom = n_bottom;
  mdl_exec_ctx ctx = {pool, &f->ws, &f->rng};
  st = mdl_layer_new(be, f->lp, phase, n_bottom, bottom_shape, &ctx, &f->l, err);
  if (st) {
    protobuf_c_message_free_unpacked(msg, NULL);
    memset(f, 0, sizeof *f);
    return st;
  }
  f->n_top = f->l->n_top;
  for (int i = 0; i < n_bottom; i++) {
    mdl_tensor_init(&f->bottom[i]);
    st = mdl_tensor_alloc(&f->bottom[i], bottom_shape[i].n, bottom_shape[i].d, true, err);
    if (st) goto fail;
    gc_fill_uniform(f->bottom[i].data, f->bottom[i].count, -1.f, 1.f, seed + 17 * (uint64_t)i);
    f->bp[i] = &f->bottom[i];
  }
  for (int i = 0; i < f->n_top; i++) {
    mdl_tensor_init(&f->top[i]);
    if (in_place && i == 0) {
      f->tp[0] = &f->bottom[0];
      continue;
    }
    const mdl_shape *s = &f->l->top_shape[i];
    st = mdl_tensor_alloc(&f->top[i], s->n, s->d, true, err);
    if (st) goto fail;
    f->tp[i] = &f->top[i];
  }
  f->n_params = mdl_layer_param_count(f->l);
  f->params = mdl_falloc(f->n_params);
  f->pdiff = mdl_falloc(f->n_params);
  mdl_layer_bind_params(f->l, f->params, f->pdiff);
  mdl_rng fill;
  mdl_rng_init(&fill, seed + 1);
  st = mdl_layer_init_params(f->l, &fill, err);
  if (!st) st = mdl_workspace_commit(&f->ws, be, err);
  if (st) goto fail;
  return MDL_OK;
fail:
  gc_layer_free(f);
  return st;
}

void gc_layer_free(gc_layer *f) {
  if (!f->l && !f->lp) return;
  mdl_layer_free(f->l);
  for (int i = 0; i < 8; i++) {
    mdl_tensor_release(&f->bottom[i]);
    mdl_tensor_release(&f->top[i]);
  }
  mdl_ffree(f->params);
  mdl_ffree(f->pdiff);
  mdl_workspace_release(&f->ws);
  if (f->lp) protobuf_c_message_free_unpacked(&f->lp->base, NULL);
  memset(f, 0, sizeof *f);
}

void gc_forward(gc_layer *f) {
  mdl_layer_forward(f->l, f->bp, f->tp);
}

void gc_backward(gc_layer *f, const bool *propagate_down) {
  if (f->pdiff) memset(f->pdiff, 0, (size_t)f->n_params * sizeof(float));
  mdl_layer_backward(f->l, f->tp, propagate_down, f->bp);
}

gc_opts gc_default_opts(void) {
  gc_opts o = {.step = 1e-2, .threshold = 1e-3, .floor = 0.1, .kink_range = -1, .seed = 12345};
  return o;
}

typedef struct snapshot {
  float *bottom[8];
  float *params;
  mdl_rng rng;
} snapshot;

static void snap_take(gc_layer *f, snapshot *s) {
  for (int i = 0; i < f->n_bottom; i++) {
    s->bottom[i] = malloc((size_t)f->bottom[i].count * sizeof(float) + 4);
    memcpy(s->bottom[i], f->bottom[i].data, (size_t)f->bottom[i].count * sizeof(float));
  }
  s->params = malloc((size_t)f->n_params * sizeof(float) + 4);
  memcpy(s->params, f->params, (size_t)f->n_params * sizeof(float));
  s->rng = f->rng;
}

static void snap_restore(gc_layer *f, const snapshot *s) {
  for (int i = 0; i < f->n_bottom; i++)
    memcpy(f->bottom[i].data, s->bottom[i], (size_t)f->bottom[i].count * sizeof(float));
  memcpy(f->params, s->params, (size_t)f->n_params * sizeof(float));
  f->rng = s->rng;
}

static void snap_free(gc_layer *f, snapshot *s) {
  for (int i = 0; i < f->n_bottom; i++) free(s->bottom[i]);
  free(s->params);
}

/* The loss weights the net would give the layer's tops: the text's
 * loss_weight entries, else 1 on a loss layer's first top. */
static void layer_loss_weights(const gc_layer *f, float *w) {
  for (int t = 0; t < f->n_top; t++) {
    if ((size_t)t < f->lp->n_loss_weight)
      w[t] = f->lp->loss_weight[t];
    else
      w[t] = t == 0 && f->l->def && f->l->def->is_loss ? 1.f : 0.f;
  }
}

/* L = sum_t c_t . top_t (double), or the net's weighted loss */
static double objective(gc_layer *f, float *const *coef, const float *lw) {
  if (lw) return mdl_layer_loss(f->l, lw, f->tp);
  double L = 0;
  for (int t = 0; t < f->n_top; t++)
    for (int64_t i = 0; i < f->tp[t]->count; i++) L += (double)coef[t][i] * f->tp[t]->data[i];
  return L;
}

/* One checked blob: analytic and numeric gradients side by side. */
typedef struct blob_grads {
  bool is_param;
  int index;
  int64_t n;
  float *ana;
  double *num;
  bool *skip; /* in the kink window */
} blob_grads;

static void judge(const blob_grads *g, const float *x0, const gc_opts *o, gc_result *r) {
  double scale = 0;
  for (int64_t j = 0; j < g->n; j++) {
    if (g->skip[j]) continue;
    scale = fmax(scale, fmax(fabs(g->ana[j]), fabs(g->num[j])));
  }
  if (scale > r->scale) r->scale = scale;
  double floor = o->floor * scale;
  for (int64_t j = 0; j < g->n; j++) {
    if (g->skip[j]) {
      r->skipped++;
      continue;
    }
    double a = g->ana[j], n = g->num[j];
    double den = fmax(fmax(fabs(a), fabs(n)), floor);
    double e = den > 0 ? fabs(a - n) / den : 0;
    r->checked++;
    if (e > r->worst) r->worst = e;
    if (e > o->threshold) {
      if (!r->failed)
        snprintf(r->first_failure, sizeof r->first_failure,
                 "%s %d element %lld: analytic %.6g numeric %.6g (x = %.6g; error %.3g of "
                 "max(|a|, |n|, %.3g))",
                 g->is_param ? "params" : "bottom", g->is_param ? 0 : g->index, (long long)j, a, n,
                 x0[j], e, floor);
      r->failed++;
    }
  }
}

gc_result gc_check(gc_layer *f, const gc_opts *o) {
  gc_result r;
  memset(&r, 0, sizeof r);
  float *coef[8] = {0};
  float lw_store[8] = {0};
  const float *lw = NULL;
  if (o->loss_weights) {
    layer_loss_weights(f, lw_store);
    lw = lw_store;
  } else {
    for (int t = 0; t < f->n_top; t++) {
      coef[t] = malloc((size_t)f->tp[t]->count * sizeof(float) + 4);
      if (o->upstream != 0)
        for (int64_t i = 0; i < f->tp[t]->count; i++) coef[t][i] = (float)o->upstream;
      else
        gc_fill_uniform(coef[t], f->tp[t]->count, -1.f, 1.f, o->seed + (uint64_t)t);
    }
  }
  snapshot s;
  snap_take(f, &s);

  /* analytic gradients */
  snap_restore(f, &s);
  gc_forward(f);
  for (int t = 0; t < f->n_top; t++) {
    if (lw) /* the net's path: only weighted tops get a diff, seeded by the layer code */
      memset(f->tp[t]->diff, 0, (size_t)f->tp[t]->count * sizeof(float));
    else
      memcpy(f->tp[t]->diff, coef[t], (size_t)f->tp[t]->count * sizeof(float));
  }
  if (lw) mdl_layer_seed_loss_diff(f->l, lw, f->tp);
  bool pd[8];
  for (int i = 0; i < f->n_bottom; i++) pd[i] = !(o->skip_bottoms & (1u << i));
  gc_backward(f, pd);

  /* copied before any further forward */
  int n_blobs = f->n_bottom + (o->skip_params ? 0 : 1);
  blob_grads g[9];
  int n_g = 0;
  for (int b = 0; b < n_blobs; b++) {
    bool is_param = b == f->n_bottom;
    if (!is_param && (o->skip_bottoms & (1u << b))) continue;
    blob_grads *gb = &g[n_g++];
    gb->is_param = is_param;
    gb->index = b;
    gb->n = is_param ? f->n_params : f->bottom[b].count;
    gb->ana = malloc((size_t)gb->n * sizeof(float) + 4);
    memcpy(gb->ana, is_param ? f->pdiff : f->bottom[b].diff, (size_t)gb->n * sizeof(float));
    gb->num = calloc((size_t)gb->n + 1, sizeof(double));
    gb->skip = calloc((size_t)gb->n + 1, sizeof(bool));
  }

  /* numeric, one input value at a time */
  for (int k = 0; k < n_g; k++) {
    blob_grads *gb = &g[k];
    for (int64_t j = 0; j < gb->n; j++) {
      float *x = gb->is_param ? &f->params[j] : &f->bottom[gb->index].data[j];
      float x0 = gb->is_param ? s.params[j] : s.bottom[gb->index][j];
      if (o->kink_range >= 0 && fabs(x0 - o->kink) <= o->kink_range) {
        gb->skip[j] = true;
        continue;
      }
      snap_restore(f, &s);
      *x = (float)(x0 + o->step);
      gc_forward(f);
      double lp = objective(f, coef, lw);
      snap_restore(f, &s);
      *x = (float)(x0 - o->step);
      gc_forward(f);
      double lm = objective(f, coef, lw);
      gb->num[j] = (lp - lm) / (2 * o->step);
    }
  }
  for (int k = 0; k < n_g; k++) {
    judge(&g[k], g[k].is_param ? s.params : s.bottom[g[k].index], o, &r);
    free(g[k].ana);
    free(g[k].num);
    free(g[k].skip);
  }
  snap_restore(f, &s);
  snap_free(f, &s);
  for (int t = 0; t < f->n_top; t++) free(coef[t]);
  return r;
}

gc_result gc_run(const char *layer_text, Caffe__Phase phase, int n_bottom,
                 const mdl_shape *bottom_shape, bool in_place, const gc_opts *o, gc_prep_fn prep,
                 void *prep_arg, mdl_threadpool *pool) {
  gc_layer f;
  mdl_error err;
  mdl_error_clear(&err);
  gc_result r;
  memset(&r, 0, sizeof r);
  if (gc_layer_make(&f, layer_text, phase, n_bottom, bottom_shape, in_place, pool, 7, &err)) {
    r.failed = -1;
    snprintf(r.first_failure, sizeof r.first_failure, "%.255s", err.msg);
    return r;
  }
  if (prep) prep(&f, prep_arg);
  r = gc_check(&f, o);
  gc_layer_free(&f);
  return r;
}
