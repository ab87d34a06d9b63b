/* Losses on class probabilities: MultinomialLogisticLoss (the bottom already
 * holds probabilities) and InfogainLoss (a softmax over its axis, then the
 * log-probabilities weighted by row `label` of an L x L matrix H, from a
 * BlobProto file or a third bottom). Caffe's log floor 1e-20 keeps log(0)
 * finite. Labels are floats holding integers; they and H get no gradient. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileio.h"
#include "runtime/cpu/layers_cpu.h"

#define LOG_FLOOR 1e-20f /* Caffe's kLOG_THRESHOLD */

/* ---- MultinomialLogisticLoss ---------------------------------------------- */

/* bottom 0: N x dim probabilities (legacy num = axis 0), bottom 1: N labels.
 * loss = -(1/N) sum_n log(max(p[n, label_n], floor)). A label outside
 * [0, dim) counts as zero probability mass, not an out-of-bounds read. */
static void mll_dims(const mdl_layer *l, int64_t *num, int64_t *dim) {
  const mdl_shape *b = &l->bottom_shape[0];
  *num = b->n ? b->d[0] : 1;
  *dim = *num ? mdl_shape_count_axes(b, 0, b->n) / *num : 0;
}

static void mll_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  int64_t num, dim;
  mll_dims(l, &num, &dim);
  const float *p = bottom[0]->data, *lab = bottom[1]->data;
  double loss = 0;
  for (int64_t n = 0; n < num; n++) {
    int64_t c = (int64_t)lab[n];
    float v = c >= 0 && c < dim ? p[n * dim + c] : 0.f;
    loss -= log(v > LOG_FLOOR ? v : LOG_FLOOR);
  }
  top[0]->data[0] = (float)(loss / (double)(num ? num : 1));
}

static void mll_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  int64_t num, dim;
  mll_dims(l, &num, &dim);
  const float *p = bottom[0]->data, *lab = bottom[1]->data;
  float *dx = bottom[0]->diff;
  const float scale = -top[0]->diff[0] / (float)(num ? num : 1);
  memset(dx, 0, (size_t)bottom[0]->count * sizeof(float));
  for (int64_t n = 0; n < num; n++) {
    int64_t c = (int64_t)lab[n];
    if (c < 0 || c >= dim) continue;
    float v = p[n * dim + c];
    dx[n * dim + c] = scale / (v > LOG_FLOOR ? v : LOG_FLOOR);
  }
}

const mdl_layer_impl mdl_cpu_multinomial_loss_layer = {
    "MultinomialLogisticLoss", NULL, NULL, mll_forward, mll_backward, NULL};

/* ---- InfogainLoss ---------------------------------------------------------- */

typedef struct infogain_priv {
  int64_t outer, L, inner;
  int mode;
  bool ignore;
  int ignore_label;
  float *H;    /* L x L from the source file; NULL when H is bottom 2 */
  float *prob; /* outer x L x inner */
  double norm; /* normaliser of the last forward */
} infogain_priv;

/* Reads H (caffe.BlobProto, float or double data) of exactly L x L values. */
static mdl_status load_h(mdl_layer *l, const char *path, int64_t L, float **out, mdl_error *err) {
  char *buf;
  size_t len;
  mdl_status st = mdl_file_read(path, &buf, &len, err);
  if (st) {
    mdl_error_prefix(err, "layer \"%s\" (%s): infogain_loss_param.source: ", l->name,
                     l->impl->type);
    return st;
  }
  Caffe__BlobProto *b = caffe__blob_proto__unpack(NULL, len, (const uint8_t *)buf);
  free(buf);
  if (!b)
    return MDL_LAYER_ERR(l, err, "%s is not a binary caffe.BlobProto (the infogain matrix)", path);
  size_t n = b->n_data ? b->n_data : b->n_double_data;
  if ((int64_t)n != L * L) {
    caffe__blob_proto__free_unpacked(b, NULL);
    return MDL_LAYER_ERR(l, err,
                         "%s holds %zu values; the infogain matrix for %lld classes needs %lld",
                         path, n, (long long)L, (long long)(L * L));
  }
  float *h = mdl_xmalloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) h[i] = b->n_data ? b->data[i] : (float)b->double_data[i];
  caffe__blob_proto__free_unpacked(b, NULL);
  *out = h;
  return MDL_OK;
}

static mdl_status infogain_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__InfogainLossParameter *ip = MDL_LAYER_PARAM(
      l, infogain_loss_param, Caffe__InfogainLossParameter, CAFFE__INFOGAIN_LOSS_PARAMETER__INIT);
  const mdl_shape *b = &l->bottom_shape[0];
  int axis = mdl_shape_axis(b, ip->axis);
  if (axis < 0) return MDL_LAYER_ERR(l, err, "infogain_loss_param.axis %d out of range", ip->axis);
  const Caffe__LossParameter *lp = l->lp->loss_param;
  if (lp && lp->has_normalize)
    return MDL_LAYER_ERR(l, err,
                         "loss_param.normalize is deprecated for InfogainLoss (as in Caffe); "
                         "use normalization");
  infogain_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  p->outer = mdl_shape_count_axes(b, 0, axis);
  p->L = b->d[axis];
  p->inner = mdl_shape_count_axes(b, axis + 1, b->n);
  p->mode = mdl_geom_loss_norm_mode(l, CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID);
  p->ignore = mdl_geom_loss_ignore(l, &p->ignore_label);
  p->prob = mdl_falloc(p->outer * p->L * p->inner);
  if (!p->prob) return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": softmax buffer", l->name);
  if (l->n_bottom < 3) return load_h(l, ip->source, p->L, &p->H, err);
  return MDL_OK;
}

static void infogain_free(mdl_layer *l) {
  infogain_priv *p = l->priv;
  mdl_ffree(p->prob);
  free(p->H);
  free(p);
}

/* The label at k as a class, or -1 when ignored or out of range. */
static int64_t infogain_label(const infogain_priv *p, const float *lab, int64_t k) {
  int64_t v = (int64_t)lab[k];
  if (p->ignore && v == p->ignore_label) return -1;
  return v >= 0 && v < p->L ? v : -1;
}

static void infogain_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  infogain_priv *p = l->priv;
  const float *H = p->H ? p->H : bottom[2]->data;
  mdl_cpu_softmax(p->outer, p->L, p->inner, bottom[0]->data, p->prob);
  const float *lab = bottom[1]->data;
  double loss = 0;
  int64_t valid = 0;
  for (int64_t o = 0; o < p->outer; o++)
    for (int64_t i = 0; i < p->inner; i++) {
      int64_t c = infogain_label(p, lab, o * p->inner + i);
      if (c < 0) continue;
      for (int64_t k = 0; k < p->L; k++) {
        float pr = p->prob[(o * p->L + k) * p->inner + i];
        loss -= (double)H[c * p->L + k] * log(pr > LOG_FLOOR ? pr : LOG_FLOOR);
      }
      valid++;
    }
  p->norm = mdl_geom_loss_normalizer(p->mode, p->outer, p->inner, valid);
  top[0]->data[0] = (float)(loss / p->norm);
  if (l->n_top > 1)
    memcpy(top[1]->data, p->prob, (size_t)(p->outer * p->L * p->inner) * sizeof(float));
}

/* d loss / d x_k = p_k * sum_j H[c, j] - H[c, k] (softmax folded in; exact
 * where no probability is below the log floor). */
static void infogain_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                              mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  infogain_priv *p = l->priv;
  const float *H = p->H ? p->H : bottom[2]->data;
  const float *lab = bottom[1]->data;
  float *dx = bottom[0]->diff;
  const float scale = (float)(top[0]->diff[0] / p->norm);
  for (int64_t o = 0; o < p->outer; o++)
    for (int64_t i = 0; i < p->inner; i++) {
      int64_t c = infogain_label(p, lab, o * p->inner + i);
      double row = 0;
      if (c >= 0)
        for (int64_t k = 0; k < p->L; k++) row += H[c * p->L + k];
      for (int64_t k = 0; k < p->L; k++) {
        int64_t idx = (o * p->L + k) * p->inner + i;
        dx[idx] = c < 0 ? 0.f : (float)(p->prob[idx] * row - H[c * p->L + k]) * scale;
      }
    }
}

const mdl_layer_impl mdl_cpu_infogain_loss_layer = {
    "InfogainLoss", infogain_setup, NULL, infogain_forward, infogain_backward, infogain_free};
