/* LRN, BatchNorm, MVN, Scale, Bias, Softmax: gradient checks and forward
 * values against direct formulas. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "tests/gradcheck.h"

#define GRAD_OK(r)                                                              \
  cr_assert((r).failed == 0 && (r).checked > 0, "checked %lld failed %lld: %s", \
            (long long)(r).checked, (long long)(r).failed, (r).first_failure)

static mdl_shape S4(int64_t a, int64_t b, int64_t c, int64_t d) {
  return gc_shape(4, (int64_t[]){a, b, c, d});
}

static void check(const char *text, int nb, const mdl_shape *s, bool in_place, Caffe__Phase ph) {
  gc_opts o = gc_default_opts();
  gc_result r = gc_run(text, ph, nb, s, in_place, &o, NULL, NULL, NULL);
  GRAD_OK(r);
}

/* ---- LRN ------------------------------------------------------------------- */

Test(lrn, grad_across) {
  mdl_shape s = S4(2, 7, 3, 3);
  check("type: 'LRN' lrn_param { local_size: 5 alpha: 1 beta: 0.75 }", 1, &s, false,
        CAFFE__PHASE__TRAIN);
  check("type: 'LRN' lrn_param { local_size: 3 alpha: 0.5 beta: 0.6 k: 2 }", 1, &s, false,
        CAFFE__PHASE__TRAIN);
}

Test(lrn, grad_within) {
  mdl_shape s = S4(2, 2, 5, 4);
  check("type: 'LRN' lrn_param { local_size: 3 alpha: 1 beta: 0.75 norm_region: WITHIN_CHANNEL }",
        1, &s, false, CAFFE__PHASE__TRAIN);
}

/* Caffe's formula, evaluated directly */
Test(lrn, forward_values) {
  mdl_shape s = S4(2, 7, 3, 3);
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, "type: 'LRN' lrn_param { local_size: 5 alpha: 0.7 beta: 0.75 }",
                             CAFFE__PHASE__TEST, 1, &s, false, NULL, 2, &err),
               MDL_OK, "%s", err.msg);
  gc_forward(&f);
  const float *x = f.bottom[0].data, *y = f.tp[0]->data;
  for (int n = 0; n < 2; n++)
    for (int c = 0; c < 7; c++)
      for (int i = 0; i < 9; i++) {
        double sum = 0;
        for (int cc = c - 2; cc <= c + 2; cc++)
          if (cc >= 0 && cc < 7) sum += (double)x[(n * 7 + cc) * 9 + i] * x[(n * 7 + cc) * 9 + i];
        double scale = 1 + 0.7 / 5 * sum;
        double want = x[(n * 7 + c) * 9 + i] * pow(scale, -0.75);
        cr_assert(fabs(want - y[(n * 7 + c) * 9 + i]) < 1e-5, "%g vs %g", want,
                  y[(n * 7 + c) * 9 + i]);
      }
  gc_layer_free(&f);
}

/* ---- BatchNorm ----------------------------------------------------------------- */

Test(batchnorm, grad_train) {
  mdl_shape s = S4(3, 2, 3, 2);
  gc_opts o = gc_default_opts();
  o.skip_params = true; /* statistics, not learnable */
  gc_result r =
      gc_run("type: 'BatchNorm'", CAFFE__PHASE__TRAIN, 1, &s, false, &o, NULL, NULL, NULL);
  GRAD_OK(r);
  r = gc_run("type: 'BatchNorm' batch_norm_param { eps: 0.01 }", CAFFE__PHASE__TRAIN, 1, &s, true,
             &o, NULL, NULL, NULL);
  GRAD_OK(r);
  mdl_shape s2 = gc_shape(2, (int64_t[]){5, 3});
  r = gc_run("type: 'BatchNorm'", CAFFE__PHASE__TRAIN, 1, &s2, false, &o, NULL, NULL, NULL);
  GRAD_OK(r);
}

Test(batchnorm, grad_global) {
  mdl_shape s = S4(2, 3, 2, 2);
  gc_opts o = gc_default_opts();
  o.skip_params = true;
  gc_result r = gc_run("type: 'BatchNorm' batch_norm_param { use_global_stats: true }",
                       CAFFE__PHASE__TRAIN, 1, &s, false, &o, NULL, NULL, NULL);
  GRAD_OK(r);
}

/* TRAIN normalises by batch statistics and accumulates Caffe's three blobs;
 * TEST (use_global_stats by default) reads them back. */
Test(batchnorm, statistics_blobs) {
  mdl_shape s = S4(4, 2, 1, 3);
  gc_layer f;
  mdl_error err;
  cr_assert_eq(
      gc_layer_make(&f, "type: 'BatchNorm' batch_norm_param { moving_average_fraction: 0.5 }",
                    CAFFE__PHASE__TRAIN, 1, &s, false, NULL, 2, &err),
      MDL_OK, "%s", err.msg);
  gc_forward(&f);
  const float *x = f.bottom[0].data, *y = f.tp[0]->data;
  for (int c = 0; c < 2; c++) {
    double m = 0, v = 0;
    for (int n = 0; n < 4; n++)
      for (int i = 0; i < 3; i++) m += x[(n * 2 + c) * 3 + i];
    m /= 12;
    for (int n = 0; n < 4; n++)
      for (int i = 0; i < 3; i++) v += pow(x[(n * 2 + c) * 3 + i] - m, 2);
    v /= 12;
    for (int n = 0; n < 4; n++)
      for (int i = 0; i < 3; i++) {
        double want = (x[(n * 2 + c) * 3 + i] - m) / sqrt(v + 1e-5);
        cr_assert(fabs(want - y[(n * 2 + c) * 3 + i]) < 1e-4);
      }
    cr_assert(fabs(f.l->param[0].data[c] - m) < 1e-5);
    cr_assert(fabs(f.l->param[1].data[c] - v * 12 / 11) < 1e-4); /* unbiased */
  }
  cr_assert_float_eq(f.l->param[2].data[0], 1.f, 1e-7);
  gc_forward(&f); /* second batch: blob = mean + 0.5 * blob, factor = 0.5 * 1 + 1 */
  cr_assert_float_eq(f.l->param[2].data[0], 1.5f, 1e-7);
  float mean0 = f.l->param[0].data[0] / 1.5f, var0 = f.l->param[1].data[0] / 1.5f;
  /* TEST on the same data with those statistics */
  Caffe__LayerParameter *lp = f.lp;
  (void)lp;
  gc_layer t;
  cr_assert_eq(
      gc_layer_make(&t, "type: 'BatchNorm'", CAFFE__PHASE__TEST, 1, &s, false, NULL, 2, &err),
      MDL_OK);
  memcpy(t.params, f.params, (size_t)f.n_params * sizeof(float));
  memcpy(t.bottom[0].data, x, (size_t)f.bottom[0].count * sizeof(float));
  gc_forward(&t);
  float want = (x[0] - mean0) / sqrtf(var0 + 1e-5f);
  cr_assert(fabsf(want - t.tp[0]->data[0]) < 1e-4f, "%g vs %g", want, t.tp[0]->data[0]);
  gc_layer_free(&t);
  gc_layer_free(&f);
}

/* ---- MVN ----------------------------------------------------------------------- */

Test(mvn, grad) {
  mdl_shape s = S4(2, 3, 3, 2);
  check("type: 'MVN'", 1, &s, false, CAFFE__PHASE__TRAIN);
  check("type: 'MVN' mvn_param { normalize_variance: false }", 1, &s, false, CAFFE__PHASE__TRAIN);
  check("type: 'MVN' mvn_param { across_channels: true }", 1, &s, true, CAFFE__PHASE__TRAIN);
}

/* ---- Scale, Bias ------------------------------------------------------------- */

Test(scale, grad_learned) {
  mdl_shape s = S4(2, 3, 4, 2);
  check("type: 'Scale' scale_param { filler { type: 'uniform' min: 0.5 max: 1.5 } }", 1, &s, false,
        CAFFE__PHASE__TRAIN);
  check(
      "type: 'Scale' scale_param { filler { type: 'uniform' } bias_term: true bias_filler { "
      "type: 'uniform' } }",
      1, &s, true, CAFFE__PHASE__TRAIN);
  check("type: 'Scale' scale_param { axis: 1 num_axes: 2 filler { type: 'uniform' } }", 1, &s,
        false, CAFFE__PHASE__TRAIN);
  check("type: 'Scale' scale_param { axis: 0 num_axes: 0 filler { type: 'uniform' } }", 1, &s,
        false, CAFFE__PHASE__TRAIN);
  check("type: 'Scale' scale_param { axis: -1 num_axes: -1 filler { type: 'uniform' } }", 1, &s,
        false, CAFFE__PHASE__TRAIN);
}

Test(scale, grad_two_bottoms) {
  mdl_shape s[2] = {S4(2, 3, 4, 2), gc_shape(2, (int64_t[]){3, 4})};
  check("type: 'Scale' bottom: 'x' bottom: 's'", 2, s, false, CAFFE__PHASE__TRAIN);
  check(
      "type: 'Scale' bottom: 'x' bottom: 's' scale_param { bias_term: true bias_filler { type: "
      "'uniform' } }",
      2, s, false, CAFFE__PHASE__TRAIN);
  mdl_shape t[2] = {S4(2, 3, 4, 2), gc_shape(2, (int64_t[]){2, 3})};
  check("type: 'Scale' bottom: 'x' bottom: 's' scale_param { axis: 0 }", 2, t, false,
        CAFFE__PHASE__TRAIN);
}

Test(bias, grad) {
  mdl_shape s = S4(2, 3, 4, 2);
  check("type: 'Bias' bias_param { filler { type: 'uniform' } }", 1, &s, false,
        CAFFE__PHASE__TRAIN);
  check("type: 'Bias' bias_param { axis: 2 num_axes: 1 filler { type: 'uniform' } }", 1, &s, true,
        CAFFE__PHASE__TRAIN);
  mdl_shape t[2] = {S4(2, 3, 4, 2), gc_shape(1, (int64_t[]){3})};
  check("type: 'Bias' bottom: 'x' bottom: 'b'", 2, t, false, CAFFE__PHASE__TRAIN);
}

Test(scale, values) {
  mdl_shape s = gc_shape(2, (int64_t[]){2, 3});
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, "type: 'Scale' scale_param { bias_term: true }",
                             CAFFE__PHASE__TEST, 1, &s, false, NULL, 2, &err),
               MDL_OK, "%s", err.msg);
  /* default fillers: scale 1, bias 0 */
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(f.l->param[0].data[i], 1.f);
    cr_assert_eq(f.l->param[1].data[i], 0.f);
    f.l->param[0].data[i] = (float)(i + 1);
    f.l->param[1].data[i] = 10.f;
  }
  gc_forward(&f);
  for (int n = 0; n < 2; n++)
    for (int i = 0; i < 3; i++)
      cr_assert_float_eq(f.tp[0]->data[n * 3 + i], f.bottom[0].data[n * 3 + i] * (i + 1) + 10.f,
                         1e-5);
  gc_layer_free(&f);
}

/* ---- Softmax ------------------------------------------------------------------- */

Test(softmax, grad_axes) {
  mdl_shape s = S4(2, 4, 3, 2);
  check("type: 'Softmax'", 1, &s, false, CAFFE__PHASE__TRAIN);
  check("type: 'Softmax' softmax_param { axis: 2 }", 1, &s, false, CAFFE__PHASE__TRAIN);
  check("type: 'Softmax' softmax_param { axis: -1 }", 1, &s, true, CAFFE__PHASE__TRAIN);
}

Test(softmax, values_sum_to_one) {
  mdl_shape s = S4(2, 5, 2, 3);
  gc_layer f;
  mdl_error err;
  cr_assert_eq(
      gc_layer_make(&f, "type: 'Softmax'", CAFFE__PHASE__TEST, 1, &s, false, NULL, 3, &err), MDL_OK,
      "%s", err.msg);
  f.bottom[0].data[0] = 1000.f; /* stable for large inputs */
  gc_forward(&f);
  for (int n = 0; n < 2; n++)
    for (int i = 0; i < 6; i++) {
      double sum = 0;
      for (int c = 0; c < 5; c++) sum += f.tp[0]->data[(n * 5 + c) * 6 + i];
      cr_assert(fabs(sum - 1) < 1e-5);
    }
  cr_assert_float_eq(f.tp[0]->data[0], 1.f, 1e-6);
  gc_layer_free(&f);
}
