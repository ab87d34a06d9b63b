/* Shape rules of the loss layers and Accuracy. A loss top is a scalar (0
 * axes, count 1) as in Caffe; the checks are Caffe's LossLayer::Reshape
 * (same batch) plus each layer's own label/prediction agreement. */
#include <stdio.h>

#include "compiler/layers_internal.h"

static mdl_status loss_common(mdl_shape_args *a, mdl_error *err) {
  mdl_status st = mdl_laxes(a, 0, 1, -1, err);
  if (st == MDL_OK) st = mdl_laxes(a, 1, 1, -1, err);
  if (st != MDL_OK) return st;
  if (a->bottom[0].d[0] != a->bottom[1].d[0])
    return mdl_lfail(a, err,
                     "bottom \"%s\" is %s but bottom \"%s\" is %s: the data and the label "
                     "need the same first axis",
                     mdl_lbottom(a, 0), mdl_lstr(&a->bottom[0]), mdl_lbottom(a, 1),
                     mdl_lstr(&a->bottom[1]));
  a->top[0].n = 0;
  return MDL_OK;
}

/* One label per position outside the class axis: outer * inner labels. */
static mdl_status labels_match(mdl_shape_args *a, int axis, const char *what, mdl_error *err) {
  const mdl_shape *b0 = &a->bottom[0], *b1 = &a->bottom[1];
  int64_t want = mdl_lcount(b0, 0, axis) * mdl_lcount(b0, axis + 1, b0->n);
  int64_t got = mdl_lcount(b1, 0, b1->n);
  if (want != got)
    return mdl_lfail(a, err,
                     "bottom \"%s\" is %s (%lld labels) but bottom \"%s\" is %s: with %s "
                     "axis %d it needs %lld labels, one per position outside that axis",
                     mdl_lbottom(a, 1), mdl_lstr(b1), (long long)got, mdl_lbottom(a, 0),
                     mdl_lstr(b0), what, axis, (long long)want);
  return MDL_OK;
}

mdl_status mdl_shape_softmax_loss(mdl_shape_args *a, mdl_error *err) {
  mdl_status st = loss_common(a, err);
  if (st != MDL_OK) return st;
  int32_t axis_in = a->lp->softmax_param ? a->lp->softmax_param->axis : 1;
  int axis;
  if ((st = mdl_laxis(a, 0, axis_in, "softmax_param.axis", &axis, err)) != MDL_OK) return st;
  if ((st = labels_match(a, axis, "softmax", err)) != MDL_OK) return st;
  if (a->n_top > 1) a->top[1] = a->bottom[0]; /* the probabilities */
  return MDL_OK;
}

mdl_status mdl_shape_euclidean_loss(mdl_shape_args *a, mdl_error *err) {
  mdl_status st = loss_common(a, err);
  if (st != MDL_OK) return st;
  const mdl_shape *b0 = &a->bottom[0], *b1 = &a->bottom[1];
  if (mdl_lcount(b0, 1, b0->n) != mdl_lcount(b1, 1, b1->n))
    return mdl_lfail(a, err,
                     "bottom \"%s\" is %s but bottom \"%s\" is %s: they need the same "
                     "count per item",
                     mdl_lbottom(a, 0), mdl_lstr(b0), mdl_lbottom(a, 1), mdl_lstr(b1));
  return MDL_OK;
}

mdl_status mdl_shape_sigmoid_ce_loss(mdl_shape_args *a, mdl_error *err) {
  mdl_status st = loss_common(a, err);
  if (st != MDL_OK) return st;
  const mdl_shape *b0 = &a->bottom[0], *b1 = &a->bottom[1];
  if (mdl_lcount(b0, 0, b0->n) != mdl_lcount(b1, 0, b1->n))
    return mdl_lfail(a, err,
                     "bottom \"%s\" is %s but bottom \"%s\" is %s: they need the same "
                     "count",
                     mdl_lbottom(a, 0), mdl_lstr(b0), mdl_lbottom(a, 1), mdl_lstr(b1));
  return MDL_OK;
}

/* Caffe reads these through the legacy N,C,H,W accessors: axes beyond a
 * blob's last count as 1. */
static mdl_status legacy_chw(mdl_shape_args *a, int b, int64_t chw[3], mdl_error *err) {
  for (int i = 0; i < 3; i++) {
    mdl_status st = mdl_llegacy(a, b, i + 1, &chw[i], err);
    if (st != MDL_OK) return st;
  }
  return MDL_OK;
}

mdl_status mdl_shape_contrastive_loss(mdl_shape_args *a, mdl_error *err) {
  mdl_status st = loss_common(a, err);
  if (st != MDL_OK) return st;
  int64_t c0[3], c1[3], c2[3];
  if ((st = legacy_chw(a, 0, c0, err)) != MDL_OK) return st;
  if ((st = legacy_chw(a, 1, c1, err)) != MDL_OK) return st;
  if ((st = legacy_chw(a, 2, c2, err)) != MDL_OK) return st;
  if (c0[0] != c1[0] || c0[1] != 1 || c0[2] != 1 || c1[1] != 1 || c1[2] != 1)
    return mdl_lfail(a, err,
                     "bottom \"%s\" is %s but bottom \"%s\" is %s: both must be N x C (x 1 "
                     "x 1) with the same C",
                     mdl_lbottom(a, 0), mdl_lstr(&a->bottom[0]), mdl_lbottom(a, 1),
                     mdl_lstr(&a->bottom[1]));
  if (c2[0] != 1 || c2[1] != 1 || c2[2] != 1)
    return mdl_lfail(a, err, "bottom \"%s\" is %s; the similarity labels must be N (x 1 x 1 x 1)",
                     mdl_lbottom(a, 2), mdl_lstr(&a->bottom[2]));
  return MDL_OK;
}

mdl_status mdl_shape_hinge_loss(mdl_shape_args *a, mdl_error *err) {
  return loss_common(a, err);
}

mdl_status mdl_shape_multinomial_loss(mdl_shape_args *a, mdl_error *err) {
  mdl_status st = loss_common(a, err);
  if (st != MDL_OK) return st;
  int64_t c1[3];
  if ((st = legacy_chw(a, 1, c1, err)) != MDL_OK) return st;
  if (c1[0] != 1 || c1[1] != 1 || c1[2] != 1)
    return mdl_lfail(a, err, "bottom \"%s\" is %s; the labels must be N (x 1 x 1 x 1)",
                     mdl_lbottom(a, 1), mdl_lstr(&a->bottom[1]));
  return MDL_OK;
}

mdl_status mdl_shape_infogain_loss(mdl_shape_args *a, mdl_error *err) {
  mdl_status st = loss_common(a, err);
  if (st != MDL_OK) return st;
  int32_t axis_in = a->lp->infogain_loss_param ? a->lp->infogain_loss_param->axis : 1;
  int axis;
  if ((st = mdl_laxis(a, 0, axis_in, "infogain_loss_param.axis", &axis, err)) != MDL_OK) return st;
  if ((st = labels_match(a, axis, "infogain", err)) != MDL_OK) return st;
  int64_t labels = a->bottom[0].d[axis];
  if (a->n_bottom > 2) {
    int64_t c = mdl_lcount(&a->bottom[2], 0, a->bottom[2].n);
    if (c != labels * labels)
      return mdl_lfail(a, err,
                       "bottom \"%s\" is %s but the infogain matrix for the %lld classes "
                       "of bottom \"%s\" (%s) needs %lld x %lld values",
                       mdl_lbottom(a, 2), mdl_lstr(&a->bottom[2]), (long long)labels,
                       mdl_lbottom(a, 0), mdl_lstr(&a->bottom[0]), (long long)labels,
                       (long long)labels);
  } else if (!a->lp->infogain_loss_param || !a->lp->infogain_loss_param->source ||
             !a->lp->infogain_loss_param->source[0]) {
    return mdl_lfail(a, err,
                     "infogain_loss_param.source is missing (or give the matrix as a "
                     "third bottom)");
  }
  if (a->n_top > 1) a->top[1] = a->bottom[0];
  return MDL_OK;
}

mdl_status mdl_shape_accuracy(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__AccuracyParameter k_default = CAFFE__ACCURACY_PARAMETER__INIT;
  const Caffe__AccuracyParameter *p = a->lp->accuracy_param;
  if (!p) p = &k_default;
  const mdl_shape *b0 = &a->bottom[0], *b1 = &a->bottom[1];
  int axis;
  mdl_status st = mdl_laxis(a, 0, p->axis, "accuracy_param.axis", &axis, err);
  if (st != MDL_OK) return st;
  int64_t n1 = mdl_lcount(b1, 0, b1->n);
  if (n1 == 0 || (int64_t)p->top_k > mdl_lcount(b0, 0, b0->n) / n1)
    return mdl_lfail(a, err,
                     "accuracy_param.top_k %u exceeds the number of classes (bottom \"%s\" "
                     "is %s, bottom \"%s\" is %s)",
                     p->top_k, mdl_lbottom(a, 0), mdl_lstr(b0), mdl_lbottom(a, 1), mdl_lstr(b1));
  if ((st = labels_match(a, axis, "accuracy", err)) != MDL_OK) return st;
  a->top[0].n = 0;
  if (a->n_top > 1) { /* per-class accuracy */
    a->top[1].n = 1;
    a->top[1].d[0] = b0->d[axis];
  }
  return MDL_OK;
}
