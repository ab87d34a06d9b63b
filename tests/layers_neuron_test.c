/* Element-wise layers: gradient checks (in place too), hand-computed values,
 * Dropout's train/test behaviour and determinism. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "tests/gradcheck.h"

#define GRAD_OK(r)                                                              \
  cr_assert((r).failed == 0 && (r).checked > 0, "checked %lld failed %lld: %s", \
            (long long)(r).checked, (long long)(r).failed, (r).first_failure)

static const int64_t D[] = {2, 3, 4, 5};

static void check(const char *text, bool in_place, double kink_range, gc_prep_fn prep) {
  mdl_shape s = gc_shape(4, D);
  gc_opts o = gc_default_opts();
  o.kink_range = kink_range;
  gc_result r = gc_run(text, CAFFE__PHASE__TRAIN, 1, &s, in_place, &o, prep, NULL, NULL);
  GRAD_OK(r);
}

static void positive(gc_layer *f, void *arg) {
  (void)arg;
  gc_fill_uniform(f->bottom[0].data, f->bottom[0].count, 0.5f, 2.f, 4);
}

Test(neuron, relu) {
  check("type: 'ReLU'", false, 0.02, NULL);
  check("type: 'ReLU'", true, 0.02, NULL);
  check("type: 'ReLU' relu_param { negative_slope: 0.1 }", false, 0.02, NULL);
  check("type: 'ReLU' relu_param { negative_slope: 0.1 }", true, 0.02, NULL);
}

Test(neuron, prelu) {
  check("type: 'PReLU'", false, 0.02, NULL);
  check("type: 'PReLU' prelu_param { filler { type: 'uniform' min: 0.1 max: 0.5 } }", true, 0.02,
        NULL);
  check("type: 'PReLU' prelu_param { channel_shared: true }", false, 0.02, NULL);
}

Test(neuron, elu) {
  check("type: 'ELU'", false, 0.02, NULL);
  check("type: 'ELU' elu_param { alpha: 0.5 }", true, 0.02, NULL);
}

Test(neuron, sigmoid_tanh) {
  check("type: 'Sigmoid'", false, -1, NULL);
  check("type: 'Sigmoid'", true, -1, NULL);
  check("type: 'TanH'", false, -1, NULL);
  check("type: 'TanH'", true, -1, NULL);
}

Test(neuron, power) {
  check("type: 'Power' power_param { power: 2 scale: 0.5 shift: 1 }", false, -1, NULL);
  check("type: 'Power' power_param { power: 3 scale: 1.5 shift: 0.2 }", true, -1, NULL);
  check("type: 'Power' power_param { power: 0.37 scale: 0.83 shift: -2.4 }", false, -1, positive);
  check("type: 'Power' power_param { power: 1 scale: 2 shift: 1 }", false, -1, NULL);
}

Test(neuron, exp_log) {
  check("type: 'Exp'", false, -1, NULL);
  check("type: 'Exp' exp_param { base: 2 scale: 0.5 shift: 1 }", true, -1, NULL);
  check("type: 'Log'", false, -1, positive);
  check("type: 'Log' log_param { base: 2 scale: 0.5 shift: 1 }", true, -1, positive);
}

Test(neuron, absval_bnll) {
  check("type: 'AbsVal'", false, 0.02, NULL);
  check("type: 'AbsVal'", true, 0.02, NULL);
  check("type: 'BNLL'", false, -1, NULL);
  check("type: 'BNLL'", true, -1, NULL);
}

Test(neuron, threshold_zero_gradient) {
  check("type: 'Threshold' threshold_param { threshold: 0.3 }", false, 0.3 + 0.02, NULL);
}

/* Dropout in TRAIN: the checker restores the layer's RNG before each
 * evaluation, so the mask is fixed and the layer is linear. */
Test(neuron, dropout_grad) {
  check("type: 'Dropout' dropout_param { dropout_ratio: 0.3 }", false, -1, NULL);
  check("type: 'Dropout' dropout_param { dropout_ratio: 0.5 }", true, -1, NULL);
}

static gc_layer one(const char *text, Caffe__Phase phase, int64_t n, const float *x,
                    mdl_threadpool *pool) {
  mdl_shape s = gc_shape(1, (int64_t[]){n});
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, text, phase, 1, &s, false, pool, 1, &err), MDL_OK, "%s", err.msg);
  if (x) memcpy(f.bottom[0].data, x, (size_t)n * sizeof(float));
  gc_forward(&f);
  return f;
}

Test(neuron, hand_values) {
  const float x[] = {-2, -0.5f, 0, 1.5f};
  struct {
    const char *text;
    float y[4];
  } cases[] = {
      {"type: 'ReLU' relu_param { negative_slope: 0.1 }", {-0.2f, -0.05f, 0, 1.5f}},
      {"type: 'AbsVal'", {2, 0.5f, 0, 1.5f}},
      {"type: 'Threshold' threshold_param { threshold: 0 }", {0, 0, 0, 1}},
      {"type: 'Power' power_param { power: 2 scale: 2 shift: 1 }", {9, 0, 1, 16}},
      {"type: 'ELU' elu_param { alpha: 2 }", {2 * (expf(-2) - 1), 2 * (expf(-0.5f) - 1), 0, 1.5f}},
      {"type: 'Exp' exp_param { base: 2 scale: 1 shift: 1 }", {0.5f, 1.41421356f, 2, 5.65685425f}},
      {"type: 'TanH'", {tanhf(-2), tanhf(-0.5f), 0, tanhf(1.5f)}},
      {"type: 'Sigmoid'", {0.11920292f, 0.37754067f, 0.5f, 0.81757448f}},
      {"type: 'BNLL'", {0.12692801f, 0.47407698f, 0.69314718f, 1.70141328f}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    gc_layer f = one(cases[c].text, CAFFE__PHASE__TEST, 4, x, NULL);
    for (int i = 0; i < 4; i++)
      cr_assert(fabsf(f.tp[0]->data[i] - cases[c].y[i]) < 1e-5f, "%s [%d]: %g vs %g", cases[c].text,
                i, f.tp[0]->data[i], cases[c].y[i]);
    gc_layer_free(&f);
  }
  const float px[] = {1, 2, 4, 8};
  gc_layer f = one("type: 'Log' log_param { base: 2 }", CAFFE__PHASE__TEST, 4, px, NULL);
  for (int i = 0; i < 4; i++) cr_assert_float_eq(f.tp[0]->data[i], (float)i, 1e-6);
  gc_layer_free(&f);
}

Test(neuron, dropout_train_test) {
  const int64_t n = 20000;
  float *x = malloc((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; i++) x[i] = 1.f;
  gc_layer f =
      one("type: 'Dropout' dropout_param { dropout_ratio: 0.25 }", CAFFE__PHASE__TRAIN, n, x, NULL);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; i++) {
    float y = f.tp[0]->data[i];
    cr_assert(y == 0.f || fabsf(y - 1.f / 0.75f) < 1e-6f);
    kept += y != 0.f;
  }
  cr_assert(fabs((double)kept / n - 0.75) < 0.02, "kept %lld of %lld", (long long)kept,
            (long long)n);
  /* the next forward draws a new mask: a fresh 75% kept, mostly elsewhere
   * (two independent masks agree on 0.75^2 + 0.25^2 = 62.5% of positions) */
  float *prev = malloc((size_t)n * sizeof(float));
  memcpy(prev, f.tp[0]->data, (size_t)n * sizeof(float));
  gc_forward(&f);
  int64_t same = 0, kept2 = 0;
  for (int64_t i = 0; i < n; i++) {
    float y = f.tp[0]->data[i];
    cr_assert(y == 0.f || fabsf(y - 1.f / 0.75f) < 1e-6f);
    same += prev[i] == y;
    kept2 += y != 0.f;
  }
  cr_assert(fabs((double)kept2 / n - 0.75) < 0.02, "second mask kept %lld of %lld",
            (long long)kept2, (long long)n);
  cr_assert(fabs((double)same / n - 0.625) < 0.02,
            "masks agree on %lld of %lld positions: not independent draws", (long long)same,
            (long long)n);
  /* backward applies the mask of the last forward, scaled */
  for (int64_t i = 0; i < n; i++) f.tp[0]->diff[i] = 2.f;
  gc_backward(&f, NULL);
  for (int64_t i = 0; i < n; i++)
    cr_assert_float_eq(f.bottom[0].diff[i], f.tp[0]->data[i] == 0.f ? 0.f : 2.f / 0.75f, 1e-6,
                       "element %lld", (long long)i);
  gc_layer_free(&f);
  gc_layer t =
      one("type: 'Dropout' dropout_param { dropout_ratio: 0.25 }", CAFFE__PHASE__TEST, n, x, NULL);
  for (int64_t i = 0; i < n; i++) cr_assert_eq(t.tp[0]->data[i], 1.f);
  gc_layer_free(&t);
  free(prev);
  free(x);
}

Test(neuron, dropout_same_bits_any_thread_count) {
  const int64_t n = 100000;
  mdl_threadpool *pool;
  cr_assert_eq(mdl_threadpool_new(2, &pool, NULL), MDL_OK);
  gc_layer a = one("type: 'Dropout'", CAFFE__PHASE__TRAIN, n, NULL, NULL);
  gc_layer b = one("type: 'Dropout'", CAFFE__PHASE__TRAIN, n, NULL, pool);
  cr_assert_eq(memcmp(a.tp[0]->data, b.tp[0]->data, (size_t)n * sizeof(float)), 0);
  gc_layer_free(&a);
  gc_layer_free(&b);
  mdl_threadpool_free(pool);
}

Test(neuron, threaded_relu_matches) {
  const int64_t n = 200003;
  mdl_threadpool *pool;
  cr_assert_eq(mdl_threadpool_new(2, &pool, NULL), MDL_OK);
  gc_layer a =
      one("type: 'ReLU' relu_param { negative_slope: 0.2 }", CAFFE__PHASE__TRAIN, n, NULL, NULL);
  gc_layer b =
      one("type: 'ReLU' relu_param { negative_slope: 0.2 }", CAFFE__PHASE__TRAIN, n, NULL, pool);
  cr_assert_eq(memcmp(a.tp[0]->data, b.tp[0]->data, (size_t)n * sizeof(float)), 0);
  gc_layer_free(&a);
  gc_layer_free(&b);
  mdl_threadpool_free(pool);
}
