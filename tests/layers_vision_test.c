/* Convolution, Deconvolution, Pooling, InnerProduct, Embed: gradient checks
 * over parameter combinations, forward values against naive loops and hand
 * computed numbers, single- and multi-threaded. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tests/gradcheck.h"

#define GRAD_OK(r)                                                              \
  cr_assert((r).failed == 0 && (r).checked > 0, "checked %lld failed %lld: %s", \
            (long long)(r).checked, (long long)(r).failed, (r).first_failure)

static mdl_shape S4(int64_t a, int64_t b, int64_t c, int64_t d) {
  return gc_shape(4, (int64_t[]){a, b, c, d});
}

static void check(const char *text, mdl_shape s, mdl_threadpool *pool) {
  gc_opts o = gc_default_opts();
  gc_result r = gc_run(text, CAFFE__PHASE__TRAIN, 1, &s, false, &o, NULL, NULL, pool);
  GRAD_OK(r);
}

/* ---- Convolution ---------------------------------------------------------- */

#define CONV(extra)                                                                      \
  "type: 'Convolution' convolution_param { weight_filler { type: 'gaussian' std: 0.3 } " \
  "bias_filler { type: 'gaussian' std: 0.3 } " extra " }"

Test(conv, grad_basic) {
  check(CONV("num_output: 4 kernel_size: 3"), S4(2, 3, 6, 5), NULL);
}
Test(conv, grad_stride_pad) {
  check(CONV("num_output: 3 kernel_size: 3 stride: 2 pad: 1"), S4(2, 2, 7, 6), NULL);
}
Test(conv, grad_rect_kernel_hw) {
  check(CONV("num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0"),
        S4(2, 2, 6, 5), NULL);
}
Test(conv, grad_dilation) {
  check(CONV("num_output: 2 kernel_size: 3 dilation: 2 pad: 2"), S4(1, 2, 7, 7), NULL);
}
Test(conv, grad_groups) {
  check(CONV("num_output: 4 kernel_size: 3 group: 2 pad: 1"), S4(2, 4, 5, 5), NULL);
}
Test(conv, grad_depthwise) {
  check(CONV("num_output: 3 kernel_size: 3 group: 3 pad: 1 stride: 2"), S4(2, 3, 6, 6), NULL);
}
Test(conv, grad_1x1_no_bias) {
  check(CONV("num_output: 3 kernel_size: 1 bias_term: false"), S4(2, 4, 3, 3), NULL);
}
Test(conv, grad_threads) {
  mdl_threadpool *pool;
  cr_assert_eq(mdl_threadpool_new(2, &pool, NULL), MDL_OK);
  check(CONV("num_output: 4 kernel_size: 3 group: 2 pad: 1 stride: 2"), S4(5, 4, 6, 6), pool);
  check(CONV("num_output: 3 kernel_size: 3 group: 3 pad: 1"), S4(3, 3, 5, 5), pool);
  mdl_threadpool_free(pool);
}

/* Naive Caffe convolution: groups, pad, stride, dilation. */
static void naive_conv(const float *x, const float *w, const float *b, float *y, int N, int C,
                       int H, int W, int M, int G, int kh, int kw, int sh, int sw, int ph, int pw,
                       int dh, int dw, int OH, int OW) {
  int cg = C / G, mg = M / G;
  for (int n = 0; n < N; n++)
    for (int m = 0; m < M; m++)
      for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
          int g = m / mg;
          double acc = b ? b[m] : 0;
          for (int c = 0; c < cg; c++)
            for (int i = 0; i < kh; i++)
              for (int j = 0; j < kw; j++) {
                int ih = oh * sh - ph + i * dh, iw = ow * sw - pw + j * dw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += (double)w[((m * cg + c) * kh + i) * kw + j] *
                       x[((n * C + g * cg + c) * H + ih) * W + iw];
              }
          y[((n * M + m) * OH + oh) * OW + ow] = (float)acc;
        }
}

static void conv_vs_naive(const char *text, mdl_shape s, int M, int G, int kh, int kw, int sh,
                          int sw, int ph, int pw, int dh, int dw, int threads) {
  mdl_threadpool *pool = NULL;
  if (threads > 1) cr_assert_eq(mdl_threadpool_new(threads, &pool, NULL), MDL_OK);
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, text, CAFFE__PHASE__TRAIN, 1, &s, false, pool, 3, &err), MDL_OK,
               "%s", err.msg);
  gc_forward(&f);
  const mdl_tensor *t = f.tp[0];
  int OH = (int)t->d[2], OW = (int)t->d[3];
  float *ref = calloc((size_t)t->count, sizeof(float));
  naive_conv(f.bottom[0].data, f.l->param[0].data, f.l->n_param > 1 ? f.l->param[1].data : NULL,
             ref, (int)s.d[0], (int)s.d[1], (int)s.d[2], (int)s.d[3], M, G, kh, kw, sh, sw, ph, pw,
             dh, dw, OH, OW);
  for (int64_t i = 0; i < t->count; i++)
    cr_assert(fabsf(ref[i] - t->data[i]) <= 1e-4f * (1 + fabsf(ref[i])), "at %lld: %g vs %g",
              (long long)i, ref[i], t->data[i]);
  free(ref);
  gc_layer_free(&f);
  mdl_threadpool_free(pool);
}

Test(conv, forward_matches_naive) {
  conv_vs_naive(CONV("num_output: 5 kernel_size: 3 stride: 2 pad: 1"), S4(3, 4, 9, 8), 5, 1, 3, 3,
                2, 2, 1, 1, 1, 1, 1);
  conv_vs_naive(CONV("num_output: 6 kernel_size: 3 group: 2 dilation: 2 pad: 2"), S4(2, 4, 8, 8), 6,
                2, 3, 3, 1, 1, 2, 2, 2, 2, 1);
  conv_vs_naive(CONV("num_output: 4 kernel_size: 5"), S4(16, 1, 12, 12), 4, 1, 5, 5, 1, 1, 0, 0, 1,
                1, 2);
  conv_vs_naive(CONV("num_output: 4 kernel_size: 3 group: 4 pad: 1"), S4(3, 4, 6, 6), 4, 4, 3, 3, 1,
                1, 1, 1, 1, 1, 2);
  conv_vs_naive(CONV("num_output: 3 kernel_size: 1"), S4(2, 5, 4, 4), 3, 1, 1, 1, 1, 1, 0, 0, 1, 1,
                2);
}

/* A batch large enough for several image tiles per thread. */
Test(conv, forward_tiles_match_naive) {
  setenv("MDL_CONV", "im2col", 1);
  setenv("MDL_CONV_TILE_KB", "4", 1); /* read once per process: tiny tiles */
  conv_vs_naive(CONV("num_output: 3 kernel_size: 3 pad: 1"), S4(9, 2, 6, 6), 3, 1, 3, 3, 1, 1, 1, 1,
                1, 1, 2);
}

Test(conv, bad_group_is_an_error) {
  mdl_shape s = S4(1, 3, 5, 5);
  gc_opts o = gc_default_opts();
  gc_result r = gc_run(CONV("num_output: 4 kernel_size: 3 group: 2"), CAFFE__PHASE__TRAIN, 1, &s,
                       false, &o, NULL, NULL, NULL);
  cr_assert_eq(r.failed, -1);
  cr_assert(strstr(r.first_failure, "test") != NULL, "%s", r.first_failure);
}

/* ---- Deconvolution ---------------------------------------------------------- */

#define DECONV(extra)                                                                      \
  "type: 'Deconvolution' convolution_param { weight_filler { type: 'gaussian' std: 0.3 } " \
  "bias_filler { type: 'gaussian' std: 0.3 } " extra " }"

Test(deconv, grad_basic) {
  check(DECONV("num_output: 3 kernel_size: 3 stride: 2 pad: 1"), S4(2, 2, 4, 3), NULL);
}
Test(deconv, grad_groups_dilation) {
  check(DECONV("num_output: 4 kernel_size: 2 stride: 2 group: 2 dilation: 2"), S4(2, 2, 3, 3),
        NULL);
}

/* Deconvolution is the adjoint of convolution: <conv(x), y> = <x, deconv(y)>
 * for shared weights and no bias. Checked by a naive scatter instead. */
Test(deconv, forward_matches_naive_scatter) {
  mdl_shape s = S4(2, 2, 3, 4);
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, DECONV("num_output: 3 kernel_size: 3 stride: 2 pad: 1"),
                             CAFFE__PHASE__TRAIN, 1, &s, false, NULL, 5, &err),
               MDL_OK, "%s", err.msg);
  gc_forward(&f);
  const mdl_tensor *t = f.tp[0];
  int OH = (int)t->d[2], OW = (int)t->d[3], M = 3, C = 2, H = 3, W = 4, k = 3;
  cr_assert_eq(OH, (H - 1) * 2 - 2 + 3);
  float *ref = calloc((size_t)t->count, sizeof(float));
  const float *w = f.l->param[0].data, *b = f.l->param[1].data, *x = f.bottom[0].data;
  for (int n = 0; n < 2; n++) {
    for (int m = 0; m < M; m++)
      for (int i = 0; i < OH * OW; i++) ref[(n * M + m) * OH * OW + i] = b[m];
    for (int c = 0; c < C; c++)
      for (int h = 0; h < H; h++)
        for (int ww = 0; ww < W; ww++)
          for (int m = 0; m < M; m++)
            for (int i = 0; i < k; i++)
              for (int j = 0; j < k; j++) {
                int oh = h * 2 - 1 + i, ow = ww * 2 - 1 + j;
                if (oh < 0 || oh >= OH || ow < 0 || ow >= OW) continue;
                ref[((n * M + m) * OH + oh) * OW + ow] +=
                    w[((c * M + m) * k + i) * k + j] * x[((n * C + c) * H + h) * W + ww];
              }
  }
  for (int64_t i = 0; i < t->count; i++)
    cr_assert(fabsf(ref[i] - t->data[i]) < 1e-4f, "at %lld: %g vs %g", (long long)i, ref[i],
              t->data[i]);
  free(ref);
  gc_layer_free(&f);
}

/* ---- Pooling ------------------------------------------------------------------ */

static void distinct_prep(gc_layer *f, void *arg) {
  (void)arg;
  gc_fill_distinct(f->bottom[0].data, f->bottom[0].count, 0.05f, 11);
}

Test(pool, grad_max) {
  gc_opts o = gc_default_opts();
  const char *cases[] = {
      "type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 }",
      "type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 2 }",
      "type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }",
      "type: 'Pooling' pooling_param { pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 }",
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    mdl_shape s = S4(2, 2, 7, 6);
    gc_result r =
        gc_run(cases[i], CAFFE__PHASE__TRAIN, 1, &s, false, &o, distinct_prep, NULL, NULL);
    GRAD_OK(r);
  }
}

Test(pool, grad_ave_and_global) {
  gc_opts o = gc_default_opts();
  const char *cases[] = {
      "type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 stride: 2 }",
      "type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }",
      "type: 'Pooling' pooling_param { pool: AVE kernel_size: 2 stride: 1 pad: 1 }",
      "type: 'Pooling' pooling_param { pool: AVE global_pooling: true }",
      "type: 'Pooling' pooling_param { pool: MAX global_pooling: true }",
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    mdl_shape s = S4(2, 3, 5, 6);
    gc_result r =
        gc_run(cases[i], CAFFE__PHASE__TRAIN, 1, &s, false, &o, distinct_prep, NULL, NULL);
    GRAD_OK(r);
  }
}

static void pool_values(const char *text, const float *expect, int n_expect, int PH, int PW) {
  mdl_shape s = S4(1, 1, 4, 4);
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, text, CAFFE__PHASE__TEST, 1, &s, false, NULL, 1, &err), MDL_OK,
               "%s", err.msg);
  for (int i = 0; i < 16; i++) f.bottom[0].data[i] = (float)i;
  gc_forward(&f);
  cr_assert_eq(f.tp[0]->d[2], PH);
  cr_assert_eq(f.tp[0]->d[3], PW);
  for (int i = 0; i < n_expect; i++)
    cr_assert(fabsf(f.tp[0]->data[i] - expect[i]) < 1e-6f, "%d: %g vs %g", i, f.tp[0]->data[i],
              expect[i]);
  gc_layer_free(&f);
}

Test(pool, hand_values) {
  pool_values("type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 }",
              (float[]){5, 7, 13, 15}, 4, 2, 2);
  /* Caffe's ceil rounding gives 3x3; the divisor counts padding up to
   * H + pad: corner (0,0) sums 0+1+4+5 over 9, corner (2,2) holds 15 over 4 */
  pool_values("type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }",
              (float[]){10.f / 9, 24.f / 9, 10.f / 6, 51.f / 9, 90.f / 9, 33.f / 6, 25.f / 6,
                        42.f / 6, 15.f / 4},
              9, 3, 3);
  pool_values("type: 'Pooling' pooling_param { pool: AVE global_pooling: true }", (float[]){7.5f},
              1, 1, 1);
  /* ceil rounding without padding: 3x3 kernel stride 2 on 4 gives 2 */
  pool_values("type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 2 }",
              (float[]){10, 11, 14, 15}, 4, 2, 2);
}

Test(pool, mask_top) {
  mdl_shape s = S4(1, 1, 4, 4);
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f,
                             "type: 'Pooling' top: 'p' top: 'mask' pooling_param { pool: MAX "
                             "kernel_size: 2 stride: 2 }",
                             CAFFE__PHASE__TEST, 1, &s, false, NULL, 1, &err),
               MDL_OK, "%s", err.msg);
  for (int i = 0; i < 16; i++) f.bottom[0].data[i] = (float)(16 - i);
  gc_forward(&f);
  float expect[] = {0, 2, 8, 10};
  for (int i = 0; i < 4; i++) cr_assert_eq(f.tp[1]->data[i], expect[i]);
  gc_layer_free(&f);
}

Test(pool, threads_match_single) {
  mdl_threadpool *pool;
  cr_assert_eq(mdl_threadpool_new(2, &pool, NULL), MDL_OK);
  mdl_shape s = S4(4, 3, 9, 9);
  const char *text = "type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 2 }";
  gc_layer a, b;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&a, text, CAFFE__PHASE__TRAIN, 1, &s, false, NULL, 9, &err), MDL_OK);
  cr_assert_eq(gc_layer_make(&b, text, CAFFE__PHASE__TRAIN, 1, &s, false, pool, 9, &err), MDL_OK);
  gc_forward(&a);
  gc_forward(&b);
  cr_assert_eq(memcmp(a.tp[0]->data, b.tp[0]->data, (size_t)a.tp[0]->count * 4), 0);
  gc_layer_free(&a);
  gc_layer_free(&b);
  mdl_threadpool_free(pool);
}

/* ---- InnerProduct ----------------------------------------------------------- */

#define IP(extra)                                                                           \
  "type: 'InnerProduct' inner_product_param { weight_filler { type: 'gaussian' std: 0.3 } " \
  "bias_filler { type: 'gaussian' std: 0.3 } " extra " }"

Test(ip, grad_variants) {
  check(IP("num_output: 5"), S4(3, 2, 2, 2), NULL);
  check(IP("num_output: 4 transpose: true"), S4(3, 2, 2, 2), NULL);
  check(IP("num_output: 3 axis: 2 bias_term: false"), S4(2, 3, 2, 2), NULL);
  mdl_threadpool *pool;
  cr_assert_eq(mdl_threadpool_new(2, &pool, NULL), MDL_OK);
  check(IP("num_output: 40"), S4(9, 4, 3, 3), pool);
  mdl_threadpool_free(pool);
}

Test(ip, hand_values) {
  mdl_shape s = gc_shape(2, (int64_t[]){1, 3});
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f,
                             "type: 'InnerProduct' inner_product_param { num_output: 2 "
                             "weight_filler { type: 'constant' value: 2 } bias_filler { type: "
                             "'constant' value: 1 } }",
                             CAFFE__PHASE__TEST, 1, &s, false, NULL, 1, &err),
               MDL_OK, "%s", err.msg);
  f.bottom[0].data[0] = 1, f.bottom[0].data[1] = 2, f.bottom[0].data[2] = 3;
  f.l->param[0].data[3] = -1; /* W[1][0] */
  gc_forward(&f);
  cr_assert_float_eq(f.tp[0]->data[0], 13.f, 1e-6);
  cr_assert_float_eq(f.tp[0]->data[1], 10.f, 1e-6);
  gc_layer_free(&f);
}

/* ---- Embed ------------------------------------------------------------------- */

static void embed_prep(gc_layer *f, void *arg) {
  (void)arg;
  gc_fill_labels(f->bottom[0].data, f->bottom[0].count, 5, 3);
}

Test(embed, grad_params) {
  mdl_shape s = gc_shape(2, (int64_t[]){2, 3});
  gc_opts o = gc_default_opts();
  o.skip_bottoms = 1;
  gc_result r = gc_run(
      "type: 'Embed' embed_param { num_output: 4 input_dim: 5 weight_filler { type: 'uniform' } "
      "bias_filler { type: 'uniform' } }",
      CAFFE__PHASE__TRAIN, 1, &s, false, &o, embed_prep, NULL, NULL);
  GRAD_OK(r);
}

/* Without the forward column cache the weight gradient redoes im2col. */
Test(conv, grad_without_column_cache) {
  setenv("MDL_CONV", "im2col", 1);
  setenv("MDL_CONV_CACHE_MB", "0", 1);
  check(CONV("num_output: 3 kernel_size: 3 stride: 2 pad: 1 group: 1"), S4(3, 2, 6, 5), NULL);
}

/* Two threads, repeated: the per-slot partial gradients reduce in a fixed
 * order, so the bits are the same on every run. */
Test(conv, backward_bits_repeat_with_threads) {
  setenv("MDL_CONV", "onednn", 1);
  mdl_threadpool *pool;
  cr_assert_eq(mdl_threadpool_new(2, &pool, NULL), MDL_OK);
  mdl_shape s = S4(7, 3, 8, 8);
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, CONV("num_output: 5 kernel_size: 3 pad: 1"), CAFFE__PHASE__TRAIN,
                             1, &s, false, pool, 4, &err),
               MDL_OK, "%s", err.msg);
  float *first = malloc((size_t)f.n_params * sizeof(float));
  for (int rep = 0; rep < 20; rep++) {
    gc_forward(&f);
    gc_fill_uniform(f.tp[0]->diff, f.tp[0]->count, -1.f, 1.f, 99);
    gc_backward(&f, NULL);
    if (rep == 0)
      memcpy(first, f.pdiff, (size_t)f.n_params * sizeof(float));
    else
      cr_assert_eq(memcmp(first, f.pdiff, (size_t)f.n_params * sizeof(float)), 0, "rep %d", rep);
  }
  free(first);
  gc_layer_free(&f);
  mdl_threadpool_free(pool);
}

/* ---- the oneDNN direct path (forced; the default picks it by channel
 * counts, see worth_it in layers_conv_dnnl.c) ------------------------------- */

Test(conv_onednn, grads) {
  setenv("MDL_CONV", "onednn", 1);
  check(CONV("num_output: 4 kernel_size: 3"), S4(2, 3, 6, 5), NULL);
  check(CONV("num_output: 16 kernel_size: 3 stride: 2 pad: 1"), S4(2, 16, 5, 6), NULL);
  check(CONV("num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 "
             "bias_term: false"),
        S4(2, 2, 6, 5), NULL);
  check(CONV("num_output: 2 kernel_size: 3 dilation: 2 pad: 2"), S4(1, 2, 7, 7), NULL);
  check(CONV("num_output: 4 kernel_size: 3 group: 2 pad: 1"), S4(2, 4, 5, 5), NULL);
  check(CONV("num_output: 3 kernel_size: 3 group: 3 pad: 1 stride: 2"), S4(2, 3, 6, 6), NULL);
}

Test(conv_onednn, grads_threads_uneven_slices) {
  setenv("MDL_CONV", "onednn", 1);
  mdl_threadpool *pool;
  cr_assert_eq(mdl_threadpool_new(2, &pool, NULL), MDL_OK);
  check(CONV("num_output: 16 kernel_size: 3 pad: 1"), S4(3, 16, 4, 4), pool); /* slices 2 + 1 */
  mdl_threadpool_free(pool);
}

Test(conv_onednn, forward_matches_naive) {
  setenv("MDL_CONV", "onednn", 1);
  conv_vs_naive(CONV("num_output: 32 kernel_size: 5 pad: 2"), S4(5, 32, 9, 8), 32, 1, 5, 5, 1, 1, 2,
                2, 1, 1, 2);
  conv_vs_naive(CONV("num_output: 16 kernel_size: 3 stride: 2"), S4(3, 3, 11, 11), 16, 1, 3, 3, 2,
                2, 0, 0, 1, 1, 1);
  conv_vs_naive(CONV("num_output: 32 kernel_size: 3 group: 2 dilation: 2 pad: 1"), S4(2, 32, 8, 8),
                32, 2, 3, 3, 1, 1, 1, 1, 2, 2, 2);
  conv_vs_naive(CONV("num_output: 8 kernel_size: 3 group: 8 pad: 1"), S4(4, 8, 6, 6), 8, 8, 3, 3, 1,
                1, 1, 1, 1, 1, 3);
}

/* TEST phase: inference primitives only; a forced backward falls back to
 * im2col (force_backward in a TEST net). */
Test(conv_onednn, test_phase_backward_falls_back) {
  setenv("MDL_CONV", "onednn", 1);
  mdl_shape s = S4(2, 16, 5, 5);
  gc_opts o = gc_default_opts();
  gc_result r = gc_run(CONV("num_output: 16 kernel_size: 3"), CAFFE__PHASE__TEST, 1, &s, false, &o,
                       NULL, NULL, NULL);
  GRAD_OK(r);
}
