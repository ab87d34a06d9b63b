/* Loss and metric layers: SoftmaxWithLoss, Accuracy, EuclideanLoss,
 * SigmoidCrossEntropyLoss, ContrastiveLoss, HingeLoss. A loss top is one
 * scalar; backward scales by that top's diff (the loss weight the net seeds,
 * see mdl_layer_seed_loss_diff), as Caffe does. Label bottoms never receive a
 * gradient. Labels are floats holding integers, as in Caffe's blobs. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu/layers_cpu.h"

/* ---- SoftmaxWithLoss ------------------------------------------------------ */

typedef struct swl_priv {
  mdl_softmax_loss_geom g;
  float *prob; /* outer x C x inner */
  double norm; /* normaliser of the last forward */
} swl_priv;

static mdl_status swl_setup(mdl_layer *l, mdl_error *err) {
  swl_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  mdl_status st = mdl_geom_softmax_loss(l, &p->g, err);
  if (st) return st;
  p->prob = mdl_falloc(p->g.outer * p->g.C * p->g.inner);
  if (!p->prob) return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": softmax buffer", l->name);
  return MDL_OK;
}

static void swl_free(mdl_layer *l) {
  swl_priv *p = l->priv;
  mdl_ffree(p->prob);
  free(p);
}

/* The label at k as a class index, or -1 when ignored or out of range.
 * Out-of-range labels are bad data: Caffe stops on them. label_check
 * records the first as the layer's fault (the net stops the run after this
 * forward) and counts it as ignored, so nothing reads out of bounds;
 * label_at (backward) only maps. `item` is the position along the batch
 * axis, for the message. */
static int64_t label_at(const float *lab, int64_t k, int64_t C, bool ignore, int ignore_label) {
  float f = lab[k];
  if (ignore && f == (float)ignore_label) return -1;
  if (!(f >= 0 && f < (float)C)) return -1; /* NaN too */
  return (int64_t)f;
}

static int64_t label_check(mdl_layer *l, const float *lab, int64_t k, int64_t item, int64_t C,
                           bool ignore, int ignore_label) {
  int64_t c = label_at(lab, k, C, ignore, ignore_label);
  if (c < 0 && !(ignore && lab[k] == (float)ignore_label))
    mdl_layer_fault_set(l, item,
                        "label %g is out of range: the bottom \"%s\" has %lld classes (0..%lld)%s",
                        (double)lab[k], l->lp->n_bottom ? l->lp->bottom[0] : "?", (long long)C,
                        (long long)(C - 1), ignore ? "" : " and no ignore_label is set");
  return c;
}

static void swl_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  swl_priv *p = l->priv;
  mdl_cpu_softmax(p->g.outer, p->g.C, p->g.inner, bottom[0]->data, p->prob);
  const float *lab = bottom[1]->data;
  double loss = 0;
  int64_t valid = 0;
  for (int64_t o = 0; o < p->g.outer; o++)
    for (int64_t i = 0; i < p->g.inner; i++) {
      int64_t c =
          label_check(l, lab, o * p->g.inner + i, o, p->g.C, p->g.ignore, p->g.ignore_label);
      if (c < 0) continue;
      float pr = p->prob[(o * p->g.C + c) * p->g.inner + i];
      /* Caffe's max(pr, FLT_MIN): a NaN probability stays NaN (a diverged
       * net must show a non-finite loss, not -log(FLT_MIN) = 87.3365) */
      loss -= log(pr < FLT_MIN ? FLT_MIN : pr);
      valid++;
    }
  p->norm = mdl_geom_loss_normalizer(p->g.mode, p->g.outer, p->g.inner, p->g.ignore ? valid : -1);
  top[0]->data[0] = (float)(loss / p->norm);
  if (l->n_top > 1)
    memcpy(top[1]->data, p->prob, (size_t)(p->g.outer * p->g.C * p->g.inner) * sizeof(float));
}

static void swl_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  swl_priv *p = l->priv;
  if (!pd[0]) return;
  const float *lab = bottom[1]->data;
  float *dx = bottom[0]->diff;
  const float scale = (float)(top[0]->diff[0] / p->norm);
  for (int64_t o = 0; o < p->g.outer; o++)
    for (int64_t i = 0; i < p->g.inner; i++) {
      int64_t c = label_at(lab, o * p->g.inner + i, p->g.C, p->g.ignore, p->g.ignore_label);
      for (int64_t k = 0; k < p->g.C; k++) {
        int64_t idx = (o * p->g.C + k) * p->g.inner + i;
        dx[idx] = c < 0 ? 0.f : (p->prob[idx] - (k == c ? 1.f : 0.f)) * scale;
      }
    }
}

const mdl_layer_impl mdl_cpu_softmax_loss_layer = {"SoftmaxWithLoss", swl_setup,    NULL,
                                                   swl_forward,       swl_backward, swl_free};

/* ---- Accuracy: top-k, ignore_label, optional per-class accuracy top ---------- */

typedef struct acc_priv {
  mdl_accuracy_geom g;
  int64_t *per_class_count;
} acc_priv;

static mdl_status acc_setup(mdl_layer *l, mdl_error *err) {
  acc_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  mdl_status st = mdl_geom_accuracy(l, &p->g, err);
  if (st) return st;
  p->per_class_count = mdl_xcalloc((size_t)p->g.C, sizeof(int64_t));
  return MDL_OK;
}

static void acc_free(mdl_layer *l) {
  acc_priv *p = l->priv;
  free(p->per_class_count);
  free(p);
}

static void acc_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  acc_priv *p = l->priv;
  const float *x = bottom[0]->data, *lab = bottom[1]->data;
  float *per_class = l->n_top > 1 ? top[1]->data : NULL;
  if (per_class) memset(per_class, 0, (size_t)p->g.C * sizeof(float));
  memset(p->per_class_count, 0, (size_t)p->g.C * sizeof(int64_t));
  int64_t hits = 0, count = 0;
  for (int64_t o = 0; o < p->g.outer; o++)
    for (int64_t i = 0; i < p->g.inner; i++) {
      int64_t c =
          label_check(l, lab, o * p->g.inner + i, o, p->g.C, p->g.ignore, p->g.ignore_label);
      if (c < 0) continue;
      count++;
      p->per_class_count[c]++;
      const float truth = x[(o * p->g.C + c) * p->g.inner + i];
      /* the true class counts itself as "better or equal" (Caffe). A
       * non-finite true score, or a NaN anywhere (which compares false with
       * everything), is never a hit: a diverged net must not score. */
      int64_t better = isfinite(truth) ? -1 : p->g.top_k;
      for (int64_t k = 0; k < p->g.C && better < p->g.top_k; k++) {
        float v = x[(o * p->g.C + k) * p->g.inner + i];
        better += v >= truth;
        if (isnan(v)) better = p->g.top_k;
      }
      if (better < p->g.top_k) {
        hits++;
        if (per_class) per_class[c] += 1.f;
      }
    }
  top[0]->data[0] = count ? (float)((double)hits / (double)count) : 0.f;
  if (per_class)
    for (int64_t c = 0; c < p->g.C; c++)
      per_class[c] = p->per_class_count[c] ? per_class[c] / (float)p->per_class_count[c] : 0.f;
}

const mdl_layer_impl mdl_cpu_accuracy_layer = {"Accuracy",  acc_setup, NULL,
                                               acc_forward, NULL,      acc_free};

/* ---- EuclideanLoss: sum((a - b)^2) / num / 2 ----------------------------- */

typedef struct pair_priv {
  int64_t num, dim, count;
  float *diff; /* a - b */
  float *dist; /* contrastive: squared distances per row */
} pair_priv;

static mdl_status pair_setup(mdl_layer *l, mdl_error *err) {
  const mdl_shape *a = &l->bottom_shape[0], *b = &l->bottom_shape[1];
  pair_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  p->count = mdl_shape_count_axes(a, 0, a->n);
  p->num = a->n ? a->d[0] : 1;
  p->dim = p->count / (p->num ? p->num : 1);
  if (mdl_shape_count_axes(b, 0, b->n) != p->count)
    return MDL_LAYER_ERR(l, err, "the two inputs have %lld and %lld values", (long long)p->count,
                         (long long)mdl_shape_count_axes(b, 0, b->n));
  p->diff = mdl_falloc(p->count);
  p->dist = mdl_falloc(p->num);
  if (!p->diff || !p->dist) return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": buffers", l->name);
  return MDL_OK;
}

static void pair_free(mdl_layer *l) {
  pair_priv *p = l->priv;
  mdl_ffree(p->diff);
  mdl_ffree(p->dist);
  free(p);
}

static void euclid_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  pair_priv *p = l->priv;
  double s = 0;
  for (int64_t i = 0; i < p->count; i++) {
    p->diff[i] = bottom[0]->data[i] - bottom[1]->data[i];
    s += (double)p->diff[i] * p->diff[i];
  }
  top[0]->data[0] = (float)(s / (double)p->num / 2.0);
}

static void euclid_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                            mdl_tensor *const *bottom) {
  pair_priv *p = l->priv;
  for (int b = 0; b < 2; b++) {
    if (!pd[b]) continue;
    const float alpha = (b == 0 ? 1.f : -1.f) * top[0]->diff[0] / (float)p->num;
    for (int64_t i = 0; i < p->count; i++) bottom[b]->diff[i] = alpha * p->diff[i];
  }
}

const mdl_layer_impl mdl_cpu_euclidean_loss_layer = {"EuclideanLoss", pair_setup,      NULL,
                                                     euclid_forward,  euclid_backward, pair_free};

/* ---- SigmoidCrossEntropyLoss --------------------------------------------- */
/* loss = -sum(x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0]))) / norm;
 * norm as Caffe 1.0: BATCH_SIZE unless loss_param says otherwise. */

typedef struct sce_priv {
  int64_t num, count;
  int mode;
  bool ignore;
  int ignore_label;
  double norm;
} sce_priv;

static mdl_status sce_setup(mdl_layer *l, mdl_error *err) {
  const mdl_shape *a = &l->bottom_shape[0];
  sce_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  p->count = mdl_shape_count_axes(a, 0, a->n);
  p->num = a->n ? a->d[0] : 1;
  if (mdl_shape_count_axes(&l->bottom_shape[1], 0, l->bottom_shape[1].n) != p->count)
    return MDL_LAYER_ERR(l, err, "inputs and targets must have the same count");
  p->mode = mdl_geom_loss_norm_mode(l, CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__BATCH_SIZE);
  p->ignore = mdl_geom_loss_ignore(l, &p->ignore_label);
  return MDL_OK;
}

static void sce_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  sce_priv *p = l->priv;
  const float *x = bottom[0]->data, *t = bottom[1]->data;
  double loss = 0;
  int64_t valid = 0;
  for (int64_t i = 0; i < p->count; i++) {
    if (p->ignore && (int)t[i] == p->ignore_label) continue;
    double xi = x[i], pos = xi >= 0 ? 1 : 0;
    loss -= xi * (t[i] - pos) - log1p(exp(xi - 2 * xi * pos));
    valid++;
  }
  int64_t inner = p->count / (p->num ? p->num : 1);
  p->norm = mdl_geom_loss_normalizer(p->mode, p->num, inner, p->ignore ? valid : -1);
  top[0]->data[0] = (float)(loss / p->norm);
}

static void sce_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  sce_priv *p = l->priv;
  if (!pd[0]) return;
  const float *x = bottom[0]->data, *t = bottom[1]->data;
  const float scale = (float)(top[0]->diff[0] / p->norm);
  for (int64_t i = 0; i < p->count; i++) {
    float sig = 1.f / (1.f + expf(-x[i]));
    bool ign = p->ignore && (int)t[i] == p->ignore_label;
    bottom[0]->diff[i] = ign ? 0.f : (sig - t[i]) * scale;
  }
}

const mdl_layer_impl mdl_cpu_sigmoid_ce_loss_layer = {
    "SigmoidCrossEntropyLoss", sce_setup, NULL, sce_forward, sce_backward, NULL};

/* ---- ContrastiveLoss (a, b, similar) ---------------------------------------- */

static void contrastive_params(const mdl_layer *l, float *margin, bool *legacy) {
  const Caffe__ContrastiveLossParameter *p =
      MDL_LAYER_PARAM(l, contrastive_loss_param, Caffe__ContrastiveLossParameter,
                      CAFFE__CONTRASTIVE_LOSS_PARAMETER__INIT);
  *margin = p->margin;
  *legacy = p->legacy_version;
}

static mdl_status contrastive_setup(mdl_layer *l, mdl_error *err) {
  mdl_status st = pair_setup(l, err);
  if (st) return st;
  pair_priv *p = l->priv;
  if (mdl_shape_count_axes(&l->bottom_shape[2], 0, l->bottom_shape[2].n) != p->num)
    return MDL_LAYER_ERR(l, err, "need one similarity label per pair (%lld)", (long long)p->num);
  return MDL_OK;
}

static void contrastive_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  pair_priv *p = l->priv;
  float margin;
  bool legacy;
  contrastive_params(l, &margin, &legacy);
  double loss = 0;
  for (int64_t n = 0; n < p->num; n++) {
    double d2 = 0;
    for (int64_t j = 0; j < p->dim; j++) {
      int64_t i = n * p->dim + j;
      p->diff[i] = bottom[0]->data[i] - bottom[1]->data[i];
      d2 += (double)p->diff[i] * p->diff[i];
    }
    p->dist[n] = (float)d2;
    if ((int)bottom[2]->data[n]) {
      loss += d2;
    } else if (legacy) {
      double m = margin - d2;
      loss += m > 0 ? m : 0;
    } else {
      double m = margin - sqrt(d2);
      m = m > 0 ? m : 0;
      loss += m * m;
    }
  }
  top[0]->data[0] = (float)(loss / (double)p->num / 2.0);
}

static void contrastive_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                                 mdl_tensor *const *bottom) {
  pair_priv *p = l->priv;
  float margin;
  bool legacy;
  contrastive_params(l, &margin, &legacy);
  for (int b = 0; b < 2; b++) {
    if (!pd[b]) continue;
    const float alpha = (b == 0 ? 1.f : -1.f) * top[0]->diff[0] / (float)p->num;
    for (int64_t n = 0; n < p->num; n++) {
      float *dx = bottom[b]->diff + n * p->dim;
      const float *df = p->diff + n * p->dim;
      float beta;
      if ((int)bottom[2]->data[n]) {
        beta = alpha;
      } else if (legacy) {
        beta = margin - p->dist[n] > 0.f ? -alpha : 0.f;
      } else {
        float dist = sqrtf(p->dist[n]), m = margin - dist;
        beta = m > 0.f ? -alpha * m / (dist + 1e-4f) : 0.f;
      }
      for (int64_t j = 0; j < p->dim; j++) dx[j] = beta * df[j];
    }
  }
}

const mdl_layer_impl mdl_cpu_contrastive_loss_layer = {
    "ContrastiveLoss",   contrastive_setup,    NULL,
    contrastive_forward, contrastive_backward, pair_free};

/* ---- HingeLoss (L1 or L2) over N x dim scores and N labels -------------- */

typedef struct hinge_priv {
  int64_t num, dim;
  bool l2;
  float *margin; /* max(0, 1 - s_label) / max(0, 1 + s_other) */
} hinge_priv;

static mdl_status hinge_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__HingeLossParameter *hp = MDL_LAYER_PARAM(
      l, hinge_loss_param, Caffe__HingeLossParameter, CAFFE__HINGE_LOSS_PARAMETER__INIT);
  const mdl_shape *a = &l->bottom_shape[0];
  hinge_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  int64_t count = mdl_shape_count_axes(a, 0, a->n);
  p->num = a->n ? a->d[0] : 1;
  p->dim = count / (p->num ? p->num : 1);
  p->l2 = hp->norm == CAFFE__HINGE_LOSS_PARAMETER__NORM__L2;
  if (mdl_shape_count_axes(&l->bottom_shape[1], 0, l->bottom_shape[1].n) != p->num)
    return MDL_LAYER_ERR(l, err, "need one label per row (%lld)", (long long)p->num);
  p->margin = mdl_falloc(count);
  if (!p->margin) return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": buffer", l->name);
  return MDL_OK;
}

static void hinge_free(mdl_layer *l) {
  hinge_priv *p = l->priv;
  mdl_ffree(p->margin);
  free(p);
}

static void hinge_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  hinge_priv *p = l->priv;
  double loss = 0;
  for (int64_t n = 0; n < p->num; n++) {
    int64_t c = label_check(l, bottom[1]->data, n, n, p->dim, false, 0);
    for (int64_t j = 0; j < p->dim; j++) {
      float s = bottom[0]->data[n * p->dim + j];
      float m = 1.f + (j == c ? -s : s);
      m = m > 0.f ? m : 0.f;
      p->margin[n * p->dim + j] = m;
      loss += p->l2 ? (double)m * m : m;
    }
  }
  top[0]->data[0] = (float)(loss / (double)p->num);
}

static void hinge_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                           mdl_tensor *const *bottom) {
  hinge_priv *p = l->priv;
  if (!pd[0]) return;
  const float scale = top[0]->diff[0] / (float)p->num;
  for (int64_t n = 0; n < p->num; n++) {
    int64_t c = label_at(bottom[1]->data, n, p->dim, false, 0);
    for (int64_t j = 0; j < p->dim; j++) {
      float m = p->margin[n * p->dim + j];
      float g = p->l2 ? 2.f * m : (m > 0.f ? 1.f : 0.f);
      bottom[0]->diff[n * p->dim + j] = (j == c ? -g : g) * scale;
    }
  }
}

const mdl_layer_impl mdl_cpu_hinge_loss_layer = {"HingeLoss",   hinge_setup,    NULL,
                                                 hinge_forward, hinge_backward, hinge_free};
