/* Loss and metric layers: strict gradient checks of every loss layer over
 * normalisation modes, ignore_label and variants, both with an upstream
 * diff equal to the normaliser (so gradients are O(1) and a backward off by
 * 10% fails) and through the net's loss_weight path; hand-computed losses;
 * Accuracy (top-k, ignore_label, per-class); the generic loss_weight
 * helpers. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "tests/gradcheck.h"

#define GRAD_OK(r)                                                              \
  cr_assert((r).failed == 0 && (r).checked > 0, "checked %lld failed %lld: %s", \
            (long long)(r).checked, (long long)(r).failed, (r).first_failure)

/* A loss check that bites: no failure, and gradients large enough that an
 * error of a few percent is far above the threshold (the float loss top
 * leaves ~1e-3 of noise in the finite differences). */
#define LOSS_GRAD_OK(r, what)                                                               \
  do {                                                                                      \
    cr_assert((r).failed == 0 && (r).checked > 0, "%s: checked %lld failed %lld: %s", what, \
              (long long)(r).checked, (long long)(r).failed, (r).first_failure);            \
    cr_assert((r).scale > 0.2, "%s: largest gradient %g is not O(1)", what, (r).scale);     \
  } while (0)

/* Loss options: the loss top's upstream diff is `upstream` (the
 * normaliser), or, with loss_weights, the layer text's loss_weight through
 * mdl_layer_loss / mdl_layer_seed_loss_diff. */
static gc_opts loss_opts(double upstream, bool loss_weights, unsigned skip_bottoms) {
  gc_opts o = gc_default_opts();
  o.threshold = 5e-3;
  o.upstream = upstream;
  o.loss_weights = loss_weights;
  o.skip_bottoms = skip_bottoms;
  return o;
}

static mdl_shape S4(int64_t a, int64_t b, int64_t c, int64_t d) {
  return gc_shape(4, (int64_t[]){a, b, c, d});
}

/* labels in [0, classes) on bottom 1, with some set to 3 (an ignore label in
 * the tests that set one) */
typedef struct label_spec {
  int classes;
  bool mark_some;
} label_spec;

static void labels_prep(gc_layer *f, void *arg) {
  const label_spec *ls = arg;
  gc_fill_labels(f->bottom[1].data, f->bottom[1].count, ls->classes, 21);
  if (ls->mark_some) f->bottom[1].data[0] = 3, f->bottom[1].data[2] = 3;
}

/* upstream 0: the text's loss_weight path */
static void check_labels(const char *text, double upstream, mdl_shape x, mdl_shape lab,
                         int classes) {
  mdl_shape s[2] = {x, lab};
  gc_opts o = loss_opts(upstream, upstream == 0, 2);
  label_spec ls = {classes, true};
  gc_result r = gc_run(text, CAFFE__PHASE__TRAIN, 2, s, false, &o, labels_prep, &ls, NULL);
  LOSS_GRAD_OK(r, text);
}

Test(softmax_loss, grad_normalizations) {
  /* 3 x 2 x 2 = 12 positions (2 of them ignored where ignore_label is 3) */
  mdl_shape x = S4(3, 5, 2, 2), lab = gc_shape(3, (int64_t[]){3, 2, 2});
  struct {
    const char *text;
    double upstream;
  } cases[] = {
      {"type: 'SoftmaxWithLoss'", 12},
      {"type: 'SoftmaxWithLoss' loss_param { normalization: FULL }", 12},
      {"type: 'SoftmaxWithLoss' loss_param { normalization: BATCH_SIZE }", 3},
      {"type: 'SoftmaxWithLoss' loss_param { normalization: NONE }", 1},
      {"type: 'SoftmaxWithLoss' loss_param { ignore_label: 3 }", 10},
      {"type: 'SoftmaxWithLoss' loss_param { ignore_label: 3 normalization: FULL }", 12},
      {"type: 'SoftmaxWithLoss' loss_param { normalize: false }", 3},
      {"type: 'SoftmaxWithLoss' loss_param { normalize: true ignore_label: 3 }", 10},
      /* the net's path: loss_weight seeds the top diff, backward scales by it */
      {"type: 'SoftmaxWithLoss' softmax_param { axis: 1 } loss_weight: 12", 0},
      {"type: 'SoftmaxWithLoss' loss_param { ignore_label: 3 } loss_weight: 10", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    check_labels(cases[i].text, cases[i].upstream, x, lab, 5);
}

/* The loss_weight case really goes through the weight: the same layer with
 * weight 2.5 has 2.5 times the gradient of weight 1. */
Test(softmax_loss, loss_weight_scales_the_gradient) {
  mdl_shape s[2] = {gc_shape(2, (int64_t[]){4, 3}), gc_shape(1, (int64_t[]){4})};
  float g[2][12];
  const char *text[2] = {"type: 'SoftmaxWithLoss'", "type: 'SoftmaxWithLoss' loss_weight: 2.5"};
  float w[2] = {1.f, 2.5f};
  for (int k = 0; k < 2; k++) {
    gc_layer f;
    mdl_error err;
    cr_assert_eq(gc_layer_make(&f, text[k], CAFFE__PHASE__TRAIN, 2, s, false, NULL, 3, &err),
                 MDL_OK, "%s", err.msg);
    gc_fill_labels(f.bottom[1].data, 4, 3, 5);
    gc_forward(&f);
    double loss = f.tp[0]->data[0];
    cr_assert_float_eq(mdl_layer_loss(f.l, &w[k], f.tp), w[k] * loss, 1e-6);
    mdl_layer_seed_loss_diff(f.l, &w[k], f.tp);
    cr_assert_eq(f.tp[0]->diff[0], w[k]);
    gc_backward(&f, (bool[]){true, false});
    memcpy(g[k], f.bottom[0].diff, sizeof g[k]);
    gc_layer_free(&f);
  }
  for (int i = 0; i < 12; i++) cr_assert_float_eq(g[1][i], 2.5f * g[0][i], 1e-6, "element %d", i);
}

static float forward_loss(const char *text, mdl_shape x, mdl_shape lab, const float *xv,
                          const float *lv, int n_top) {
  mdl_shape s[2] = {x, lab};
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, text, CAFFE__PHASE__TRAIN, 2, s, false, NULL, 1, &err), MDL_OK,
               "%s", err.msg);
  cr_assert_eq(f.n_top, n_top);
  memcpy(f.bottom[0].data, xv, (size_t)f.bottom[0].count * sizeof(float));
  memcpy(f.bottom[1].data, lv, (size_t)f.bottom[1].count * sizeof(float));
  gc_forward(&f);
  float v = f.tp[0]->data[0];
  gc_layer_free(&f);
  return v;
}

Test(softmax_loss, hand_values) {
  /* two samples, three classes; labels 0 and 2 */
  mdl_shape x = gc_shape(2, (int64_t[]){2, 3}), lab = gc_shape(1, (int64_t[]){2});
  float xv[] = {1, 2, 3, 0, 0, 0}, lv[] = {0, 2};
  double p0 = exp(1) / (exp(1) + exp(2) + exp(3)), p1 = 1.0 / 3;
  double sum = -log(p0) - log(p1);
  cr_assert(fabs(forward_loss("type: 'SoftmaxWithLoss'", x, lab, xv, lv, 1) - sum / 2) < 1e-5);
  cr_assert(fabs(forward_loss("type: 'SoftmaxWithLoss' loss_param { normalization: NONE }", x, lab,
                              xv, lv, 1) -
                 sum) < 1e-5);
  cr_assert(fabs(forward_loss("type: 'SoftmaxWithLoss' loss_param { ignore_label: 2 }", x, lab, xv,
                              lv, 1) +
                 log(p0)) < 1e-5);
  /* ignore with FULL still divides by all positions */
  cr_assert(fabs(forward_loss("type: 'SoftmaxWithLoss' loss_param { ignore_label: 2 "
                              "normalization: FULL }",
                              x, lab, xv, lv, 1) +
                 log(p0) / 2) < 1e-5);
  /* a second top holds the probabilities */
  mdl_shape s[2] = {x, lab};
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, "type: 'SoftmaxWithLoss' top: 'loss' top: 'prob'",
                             CAFFE__PHASE__TRAIN, 2, s, false, NULL, 1, &err),
               MDL_OK, "%s", err.msg);
  memcpy(f.bottom[0].data, xv, sizeof xv);
  memcpy(f.bottom[1].data, lv, sizeof lv);
  gc_forward(&f);
  cr_assert(fabs(f.tp[1]->data[0] - p0) < 1e-6);
  gc_layer_free(&f);
}

Test(accuracy, top_k_ignore_per_class) {
  mdl_shape x = gc_shape(2, (int64_t[]){4, 3}), lab = gc_shape(1, (int64_t[]){4});
  float xv[] = {
      0.1f, 0.7f, 0.2f, /* label 1: top-1 hit */
      0.5f, 0.3f, 0.2f, /* label 1: top-2 hit */
      0.2f, 0.3f, 0.5f, /* label 0: miss */
      0.3f, 0.3f, 0.4f, /* label 0: tie with 1 at rank 2: top-2 "better or equal" = 2 -> miss */
  };
  float lv[] = {1, 1, 0, 0};
  cr_assert_float_eq(forward_loss("type: 'Accuracy'", x, lab, xv, lv, 1), 0.25f, 1e-6);
  cr_assert_float_eq(
      forward_loss("type: 'Accuracy' accuracy_param { top_k: 2 }", x, lab, xv, lv, 1), 0.5f, 1e-6);
  cr_assert_float_eq(
      forward_loss("type: 'Accuracy' accuracy_param { top_k: 3 }", x, lab, xv, lv, 1), 1.f, 1e-6);
  cr_assert_float_eq(
      forward_loss("type: 'Accuracy' accuracy_param { ignore_label: 0 }", x, lab, xv, lv, 1), 0.5f,
      1e-6);
  /* per-class second top */
  mdl_shape s[2] = {x, lab};
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, "type: 'Accuracy' top: 'acc' top: 'per_class'", CAFFE__PHASE__TEST,
                             2, s, false, NULL, 1, &err),
               MDL_OK, "%s", err.msg);
  memcpy(f.bottom[0].data, xv, sizeof xv);
  memcpy(f.bottom[1].data, lv, sizeof lv);
  gc_forward(&f);
  cr_assert_eq(f.tp[1]->count, 3);
  cr_assert_float_eq(f.tp[1]->data[0], 0.f, 1e-6);
  cr_assert_float_eq(f.tp[1]->data[1], 0.5f, 1e-6);
  cr_assert_float_eq(f.tp[1]->data[2], 0.f, 1e-6);
  gc_layer_free(&f);
}

/* A diverged net: SoftmaxWithLoss must give a non-finite loss (Caffe's
 * max(p, FLT_MIN) keeps NaN), never -log(FLT_MIN) = 87.3365. */
Test(softmax_loss, nan_scores_give_a_nan_loss) {
  mdl_shape x = gc_shape(2, (int64_t[]){2, 3}), lab = gc_shape(1, (int64_t[]){2});
  float xv[] = {NAN, NAN, NAN, 1, 2, 3}, lv[] = {0, 2};
  float loss = forward_loss("type: 'SoftmaxWithLoss'", x, lab, xv, lv, 1);
  cr_assert(isnan(loss), "loss %g", loss);
  float inf[] = {INFINITY, 0, 0, 1, 2, 3};
  loss = forward_loss("type: 'SoftmaxWithLoss'", x, lab, inf, lv, 1);
  cr_assert(!isfinite(loss), "loss %g", loss);
}

/* Accuracy never counts a non-finite score as correct. */
Test(accuracy, nonfinite_scores_never_hit) {
  mdl_shape x = gc_shape(2, (int64_t[]){4, 3}), lab = gc_shape(1, (int64_t[]){4});
  float xv[] = {
      NAN,  NAN,      NAN,  /* label 0: all NaN */
      0.1f, INFINITY, 0.2f, /* label 1: +inf true score */
      0.1f, NAN,      0.2f, /* label 2: a NaN rival */
      0.1f, 0.7f,     0.2f, /* label 1: a real hit */
  };
  float lv[] = {0, 1, 2, 1};
  cr_assert_float_eq(forward_loss("type: 'Accuracy'", x, lab, xv, lv, 1), 0.25f, 1e-6);
  cr_assert_float_eq(
      forward_loss("type: 'Accuracy' accuracy_param { top_k: 3 }", x, lab, xv, lv, 1), 0.25f, 1e-6);
}

/* A label outside 0..C-1 (and not ignore_label) is a fault of the layer,
 * naming the label and the batch item; ignore_label is not. */
static void check_label_fault(const char *text, float bad, bool want_fault, const char *want) {
  mdl_shape x = gc_shape(2, (int64_t[]){3, 2}), lab = gc_shape(1, (int64_t[]){3});
  mdl_shape s[2] = {x, lab};
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, text, CAFFE__PHASE__TRAIN, 2, s, false, NULL, 1, &err), MDL_OK,
               "%s", err.msg);
  float xv[] = {1, 2, 3, 4, 5, 6}, lv[] = {0, 1, bad};
  memcpy(f.bottom[0].data, xv, sizeof xv);
  memcpy(f.bottom[1].data, lv, sizeof lv);
  gc_forward(&f);
  cr_assert_eq(f.l->fault.set, want_fault, "%s label %g: %s", text, bad, f.l->fault.msg);
  if (want_fault) {
    cr_assert_eq(f.l->fault.item, 2);
    cr_assert(strstr(f.l->fault.msg, want), "%s", f.l->fault.msg);
  }
  /* a good batch clears it */
  lv[2] = 1;
  memcpy(f.bottom[1].data, lv, sizeof lv);
  gc_forward(&f);
  cr_assert(!f.l->fault.set);
  gc_layer_free(&f);
}

Test(loss_labels, out_of_range_is_a_fault) {
  const char *types[] = {"type: 'SoftmaxWithLoss'", "type: 'Accuracy'", "type: 'HingeLoss'"};
  for (size_t i = 0; i < 3; i++) {
    check_label_fault(types[i], 2, true, "label 2 is out of range");
    check_label_fault(types[i], -1, true, "label -1 is out of range");
    check_label_fault(types[i], NAN, true, "label nan is out of range");
    check_label_fault(types[i], 1, false, "");
  }
  check_label_fault("type: 'SoftmaxWithLoss' loss_param { ignore_label: 7 }", 7, false, "");
  check_label_fault("type: 'Accuracy' accuracy_param { ignore_label: -1 }", -1, false, "");
  check_label_fault("type: 'SoftmaxWithLoss' loss_param { ignore_label: 7 }", 5, true, "label 5");
}

Test(euclidean, grad_and_value) {
  mdl_shape s[2] = {gc_shape(2, (int64_t[]){3, 4}), gc_shape(2, (int64_t[]){3, 4})};
  gc_opts o = loss_opts(3, false, 0); /* divides by num = 3 */
  gc_result r =
      gc_run("type: 'EuclideanLoss'", CAFFE__PHASE__TRAIN, 2, s, false, &o, NULL, NULL, NULL);
  LOSS_GRAD_OK(r, "EuclideanLoss");
  o = loss_opts(0, true, 0);
  r = gc_run("type: 'EuclideanLoss' loss_weight: 3", CAFFE__PHASE__TRAIN, 2, s, false, &o, NULL,
             NULL, NULL);
  LOSS_GRAD_OK(r, "EuclideanLoss loss_weight 3");
  float a[12] = {1, 2}, b[12] = {0, 0, 3};
  cr_assert_float_eq(forward_loss("type: 'EuclideanLoss'", s[0], s[1], a, b, 1),
                     (1 + 4 + 9) / 3.f / 2.f, 1e-6);
}

static void targets_prep(gc_layer *f, void *arg) {
  (void)arg;
  gc_fill_uniform(f->bottom[1].data, f->bottom[1].count, 0.f, 1.f, 8);
  f->bottom[1].data[1] = 7; /* ignored where ignore_label is 7 */
}

Test(sigmoid_ce, grad_modes) {
  mdl_shape s[2] = {S4(2, 3, 2, 1), S4(2, 3, 2, 1)};
  struct {
    const char *text;
    double upstream;
  } cases[] = {
      {"type: 'SigmoidCrossEntropyLoss'", 2}, /* BATCH_SIZE: 2 */
      {"type: 'SigmoidCrossEntropyLoss' loss_param { normalization: VALID ignore_label: 7 }", 11},
      {"type: 'SigmoidCrossEntropyLoss' loss_param { normalization: FULL }", 12},
      {"type: 'SigmoidCrossEntropyLoss' loss_weight: 2", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    gc_opts o = loss_opts(cases[i].upstream, cases[i].upstream == 0, 2);
    gc_result r =
        gc_run(cases[i].text, CAFFE__PHASE__TRAIN, 2, s, false, &o, targets_prep, NULL, NULL);
    LOSS_GRAD_OK(r, cases[i].text);
  }
  float x[12] = {0.5f, -1.f}, t[12] = {1, 0};
  /* default: divide by the batch size (2) */
  double want = (log1p(exp(-0.5)) + log1p(exp(-1.0)) + 10 * log(2.0)) / 2;
  cr_assert(fabs(forward_loss("type: 'SigmoidCrossEntropyLoss'", s[0], s[1], x, t, 1) - want) <
            1e-5);
}

static void pairs_prep(gc_layer *f, void *arg) {
  (void)arg;
  for (int64_t i = 0; i < f->bottom[2].count; i++) f->bottom[2].data[i] = (float)(i % 2);
  /* keep dissimilar pairs away from the margin's kink */
  for (int64_t i = 0; i < f->bottom[0].count; i++) f->bottom[0].data[i] *= 0.3f;
}

Test(contrastive, grad_both_versions) {
  mdl_shape s[3] = {gc_shape(2, (int64_t[]){4, 3}), gc_shape(2, (int64_t[]){4, 3}),
                    gc_shape(1, (int64_t[]){4})};
  const char *cases[] = {
      "type: 'ContrastiveLoss' contrastive_loss_param { margin: 2 }",
      "type: 'ContrastiveLoss' contrastive_loss_param { margin: 2 legacy_version: true }",
      "type: 'ContrastiveLoss' contrastive_loss_param { margin: 2 } loss_weight: 4",
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    bool lw = strstr(cases[i], "loss_weight") != NULL;
    gc_opts o = loss_opts(lw ? 0 : 4, lw, 4); /* divides by num = 4 */
    gc_result r = gc_run(cases[i], CAFFE__PHASE__TRAIN, 3, s, false, &o, pairs_prep, NULL, NULL);
    LOSS_GRAD_OK(r, cases[i]);
  }
}

static void hinge_prep(gc_layer *f, void *arg) {
  (void)arg;
  gc_fill_labels(f->bottom[1].data, f->bottom[1].count, 5, 4);
  /* scores in [-2, 2] but at least 0.2 from the hinges at |s| = 1, so both
   * active and inactive margins are checked */
  for (int64_t i = 0; i < f->bottom[0].count; i++) {
    float v = f->bottom[0].data[i], a = fabsf(v);
    a = a < 0.5f ? a * 1.6f : 1.2f + (a - 0.5f) * 1.6f;
    f->bottom[0].data[i] = v < 0 ? -a : a;
  }
}

Test(hinge, grad_l1_l2) {
  mdl_shape s[2] = {gc_shape(2, (int64_t[]){4, 5}), gc_shape(1, (int64_t[]){4})};
  const char *cases[] = {
      "type: 'HingeLoss'",
      "type: 'HingeLoss' hinge_loss_param { norm: L2 }",
      "type: 'HingeLoss' loss_weight: 4",
      "type: 'HingeLoss' hinge_loss_param { norm: L2 } loss_weight: 4",
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    bool lw = strstr(cases[i], "loss_weight") != NULL;
    gc_opts o = loss_opts(lw ? 0 : 4, lw, 2); /* divides by num = 4 */
    gc_result r = gc_run(cases[i], CAFFE__PHASE__TRAIN, 2, s, false, &o, hinge_prep, NULL, NULL);
    LOSS_GRAD_OK(r, cases[i]);
  }
}

/* loss_weight on any top: the generic helpers weight the loss and seed the
 * top diff, which backward then scales by */
Test(loss_weight, generic_helpers) {
  mdl_shape x = gc_shape(2, (int64_t[]){2, 3});
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, "type: 'TanH'", CAFFE__PHASE__TRAIN, 1, &x, false, NULL, 1, &err),
               MDL_OK);
  gc_forward(&f);
  float w = 0.5f;
  double sum = 0;
  for (int i = 0; i < 6; i++) sum += f.tp[0]->data[i];
  cr_assert(fabs(mdl_layer_loss(f.l, &w, f.tp) - 0.5 * sum) < 1e-6);
  mdl_layer_seed_loss_diff(f.l, &w, f.tp);
  for (int i = 0; i < 6; i++) cr_assert_eq(f.tp[0]->diff[i], 0.5f);
  gc_backward(&f, NULL);
  for (int i = 0; i < 6; i++) {
    float y = f.tp[0]->data[i];
    cr_assert(fabsf(f.bottom[0].diff[i] - 0.5f * (1 - y * y)) < 1e-6f);
  }
  gc_layer_free(&f);
}

/* A loss layer given no top gets one (Caffe's AutoTopBlobs). */
Test(loss_weight, automatic_top) {
  mdl_shape s[2] = {gc_shape(2, (int64_t[]){2, 3}), gc_shape(1, (int64_t[]){2})};
  gc_layer f;
  mdl_error err;
  cr_assert_eq(
      gc_layer_make(&f, "type: 'SoftmaxWithLoss'", CAFFE__PHASE__TRAIN, 2, s, false, NULL, 1, &err),
      MDL_OK, "%s", err.msg);
  cr_assert_eq(f.l->n_top, 1);
  cr_assert_eq(f.tp[0]->count, 1);
  gc_layer_free(&f);
}
