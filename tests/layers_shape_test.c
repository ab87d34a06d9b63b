/* Layers that move or combine values: Eltwise, Concat, Slice, Split, Flatten,
 * Reshape, Silence, Crop, Tile, Reduction, ArgMax, DummyData, Input; and the
 * layer table's error for unknown types. */
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

static void check(const char *text, int nb, const mdl_shape *s, gc_prep_fn prep) {
  gc_opts o = gc_default_opts();
  gc_result r = gc_run(text, CAFFE__PHASE__TRAIN, nb, s, false, &o, prep, NULL, NULL);
  GRAD_OK(r);
}

static void distinct3(gc_layer *f, void *arg) {
  (void)arg;
  for (int b = 0; b < f->n_bottom; b++)
    gc_fill_distinct(f->bottom[b].data, f->bottom[b].count, 0.05f, 30 + (uint64_t)b);
  /* make the three bottoms interleave without near-ties across them */
  for (int b = 0; b < f->n_bottom; b++)
    for (int64_t i = 0; i < f->bottom[b].count; i++) f->bottom[b].data[i] += 0.013f * (float)b;
}

Test(eltwise, grad_ops) {
  mdl_shape s[3] = {S4(2, 3, 2, 2), S4(2, 3, 2, 2), S4(2, 3, 2, 2)};
  check("type: 'Eltwise' bottom: 'a' bottom: 'b' bottom: 'c'", 3, s, NULL);
  check(
      "type: 'Eltwise' bottom: 'a' bottom: 'b' bottom: 'c' eltwise_param { operation: SUM "
      "coeff: 1 coeff: -0.5 coeff: 2 }",
      3, s, NULL);
  check("type: 'Eltwise' bottom: 'a' bottom: 'b' bottom: 'c' eltwise_param { operation: PROD }", 3,
        s, NULL);
  check("type: 'Eltwise' bottom: 'a' bottom: 'b' bottom: 'c' eltwise_param { operation: MAX }", 3,
        s, distinct3);
}

Test(eltwise, max_ties_as_caffe) {
  mdl_shape s[2] = {gc_shape(1, (int64_t[]){2}), gc_shape(1, (int64_t[]){2})};
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f,
                             "type: 'Eltwise' bottom: 'a' bottom: 'b' eltwise_param { operation: "
                             "MAX }",
                             CAFFE__PHASE__TRAIN, 2, s, false, NULL, 1, &err),
               MDL_OK, "%s", err.msg);
  f.bottom[0].data[0] = 1, f.bottom[1].data[0] = 1; /* tie: bottom 1 wins */
  f.bottom[0].data[1] = 2, f.bottom[1].data[1] = 1;
  gc_forward(&f);
  f.tp[0]->diff[0] = 1, f.tp[0]->diff[1] = 1;
  gc_backward(&f, NULL);
  cr_assert_eq(f.bottom[0].diff[0], 0.f);
  cr_assert_eq(f.bottom[1].diff[0], 1.f);
  cr_assert_eq(f.bottom[0].diff[1], 1.f);
  gc_layer_free(&f);
}

Test(concat_slice, grad_and_roundtrip) {
  mdl_shape c[2] = {S4(2, 3, 2, 2), S4(2, 2, 2, 2)};
  check("type: 'Concat' bottom: 'a' bottom: 'b'", 2, c, NULL);
  mdl_shape c0[2] = {S4(1, 3, 2, 2), S4(2, 3, 2, 2)};
  check("type: 'Concat' bottom: 'a' bottom: 'b' concat_param { axis: 0 }", 2, c0, NULL);
  mdl_shape s = S4(2, 5, 2, 2);
  check("type: 'Slice' top: 'a' top: 'b' top: 'c' slice_param { slice_point: 1 slice_point: 3 }", 1,
        &s, NULL);
  check("type: 'Slice' top: 'a' top: 'b' slice_param { axis: 2 }", 1, &s, NULL);

  /* slice then concat gives the input back */
  gc_layer sl, ca;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&sl, "type: 'Slice' top: 'a' top: 'b' slice_param { slice_point: 2 }",
                             CAFFE__PHASE__TEST, 1, &s, false, NULL, 1, &err),
               MDL_OK, "%s", err.msg);
  gc_forward(&sl);
  mdl_shape parts[2] = {S4(2, 2, 2, 2), S4(2, 3, 2, 2)};
  cr_assert_eq(gc_layer_make(&ca, "type: 'Concat' bottom: 'a' bottom: 'b'", CAFFE__PHASE__TEST, 2,
                             parts, false, NULL, 1, &err),
               MDL_OK, "%s", err.msg);
  memcpy(ca.bottom[0].data, sl.tp[0]->data, (size_t)sl.tp[0]->count * 4);
  memcpy(ca.bottom[1].data, sl.tp[1]->data, (size_t)sl.tp[1]->count * 4);
  gc_forward(&ca);
  cr_assert_eq(memcmp(ca.tp[0]->data, sl.bottom[0].data, (size_t)sl.bottom[0].count * 4), 0);
  gc_layer_free(&sl);
  gc_layer_free(&ca);
}

Test(split_flatten_reshape, grad) {
  mdl_shape s = S4(2, 3, 2, 2);
  check("type: 'Split' top: 'a' top: 'b' top: 'c'", 1, &s, NULL);
  check("type: 'Flatten'", 1, &s, NULL);
  check("type: 'Flatten' flatten_param { axis: 2 }", 1, &s, NULL);
  check("type: 'Reshape' reshape_param { shape { dim: 0 dim: -1 dim: 2 } }", 1, &s, NULL);
}

Test(silence, zero_gradient) {
  mdl_shape s[2] = {S4(2, 3, 2, 2), S4(1, 2, 1, 1)};
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, "type: 'Silence' bottom: 'a' bottom: 'b'", CAFFE__PHASE__TRAIN, 2,
                             s, false, NULL, 1, &err),
               MDL_OK, "%s", err.msg);
  cr_assert_eq(f.n_top, 0);
  gc_forward(&f);
  f.bottom[0].diff[0] = 5;
  gc_backward(&f, NULL);
  cr_assert_eq(f.bottom[0].diff[0], 0.f);
  gc_layer_free(&f);
}

Test(crop, grad_and_values) {
  mdl_shape s[2] = {S4(2, 3, 5, 6), S4(1, 2, 3, 2)};
  gc_opts o = gc_default_opts();
  o.skip_bottoms = 2;
  gc_result r = gc_run("type: 'Crop' bottom: 'a' bottom: 'ref' crop_param { axis: 2 offset: 1 }",
                       CAFFE__PHASE__TRAIN, 2, s, false, &o, NULL, NULL, NULL);
  GRAD_OK(r);
  r = gc_run(
      "type: 'Crop' bottom: 'a' bottom: 'ref' crop_param { axis: 1 offset: 1 offset: 2 "
      "offset: 3 }",
      CAFFE__PHASE__TRAIN, 2, s, false, &o, NULL, NULL, NULL);
  GRAD_OK(r);
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f,
                             "type: 'Crop' bottom: 'a' bottom: 'ref' crop_param { axis: 2 offset: "
                             "1 offset: 2 }",
                             CAFFE__PHASE__TEST, 2, s, false, NULL, 1, &err),
               MDL_OK, "%s", err.msg);
  for (int64_t i = 0; i < f.bottom[0].count; i++) f.bottom[0].data[i] = (float)i;
  gc_forward(&f);
  cr_assert_eq(f.tp[0]->d[0], 2);
  cr_assert_eq(f.tp[0]->d[1], 3);
  /* top[n][c][h][w] = bottom[n][c][h + 1][w + 2] */
  cr_assert_eq(f.tp[0]->data[0], (float)(1 * 6 + 2));
  cr_assert_eq(f.tp[0]->data[3], (float)(2 * 6 + 3));
  gc_layer_free(&f);
}

Test(tile, grad) {
  mdl_shape s = S4(2, 3, 2, 2);
  check("type: 'Tile' tile_param { axis: 1 tiles: 3 }", 1, &s, NULL);
  check("type: 'Tile' tile_param { axis: -1 tiles: 2 }", 1, &s, NULL);
}

Test(reduction, grad_ops_and_values) {
  mdl_shape s = S4(2, 3, 2, 2);
  check("type: 'Reduction'", 1, &s, NULL);
  check("type: 'Reduction' reduction_param { operation: MEAN axis: 1 coeff: 2 }", 1, &s, NULL);
  check("type: 'Reduction' reduction_param { operation: SUMSQ axis: 2 }", 1, &s, NULL);
  gc_opts o = gc_default_opts();
  o.kink_range = 0.02;
  gc_result r = gc_run("type: 'Reduction' reduction_param { operation: ASUM axis: -1 }",
                       CAFFE__PHASE__TRAIN, 1, &s, false, &o, NULL, NULL, NULL);
  GRAD_OK(r);
  mdl_shape v = gc_shape(2, (int64_t[]){2, 2});
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, "type: 'Reduction' reduction_param { operation: ASUM axis: 1 }",
                             CAFFE__PHASE__TEST, 1, &v, false, NULL, 1, &err),
               MDL_OK, "%s", err.msg);
  float x[] = {1, -2, -3, 4};
  memcpy(f.bottom[0].data, x, sizeof x);
  gc_forward(&f);
  cr_assert_eq(f.tp[0]->data[0], 3.f);
  cr_assert_eq(f.tp[0]->data[1], 7.f);
  gc_layer_free(&f);
}

Test(argmax, variants) {
  mdl_shape s = gc_shape(2, (int64_t[]){2, 4});
  float x[] = {0.1f, 0.9f, 0.5f, 0.9f, 3, 1, 2, 0};
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, "type: 'ArgMax' argmax_param { top_k: 2 out_max_val: true }",
                             CAFFE__PHASE__TEST, 1, &s, false, NULL, 1, &err),
               MDL_OK, "%s", err.msg);
  memcpy(f.bottom[0].data, x, sizeof x);
  gc_forward(&f);
  /* (N, 2, k): indices then values; tie 0.9 at 1 and 3: larger index first */
  float want[] = {3, 1, 0.9f, 0.9f, 0, 2, 3, 2};
  cr_assert_eq(f.tp[0]->count, 8);
  for (int i = 0; i < 8; i++) cr_assert_float_eq(f.tp[0]->data[i], want[i], 1e-6, "%d", i);
  gc_layer_free(&f);
  cr_assert_eq(gc_layer_make(&f, "type: 'ArgMax' argmax_param { axis: 0 }", CAFFE__PHASE__TEST, 1,
                             &s, false, NULL, 1, &err),
               MDL_OK, "%s", err.msg);
  memcpy(f.bottom[0].data, x, sizeof x);
  gc_forward(&f);
  float want0[] = {1, 1, 1, 0};
  for (int i = 0; i < 4; i++) cr_assert_eq(f.tp[0]->data[i], want0[i]);
  gc_layer_free(&f);
}

Test(dummy_data, fills_tops) {
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f,
                             "type: 'DummyData' top: 'a' top: 'b' dummy_data_param { "
                             "data_filler { type: 'constant' value: 3 } data_filler { type: "
                             "'uniform' min: 1 max: 2 } shape { dim: 2 dim: 3 } shape { dim: 4 } }",
                             CAFFE__PHASE__TRAIN, 0, NULL, false, NULL, 1, &err),
               MDL_OK, "%s", err.msg);
  gc_forward(&f);
  for (int i = 0; i < 6; i++) cr_assert_eq(f.tp[0]->data[i], 3.f);
  for (int i = 0; i < 4; i++) cr_assert(f.tp[1]->data[i] >= 1.f && f.tp[1]->data[i] < 2.f);
  float first = f.tp[1]->data[0];
  gc_forward(&f); /* refilled with new draws */
  cr_assert_neq(first, f.tp[1]->data[0]);
  gc_layer_free(&f);
}

Test(input, shapes_from_param) {
  gc_layer f;
  mdl_error err;
  cr_assert_eq(
      gc_layer_make(&f, "type: 'Input' input_param { shape { dim: 5 dim: 1 dim: 28 dim: 28 } }",
                    CAFFE__PHASE__TEST, 0, NULL, false, NULL, 1, &err),
      MDL_OK, "%s", err.msg);
  cr_assert_eq(f.tp[0]->count, 5 * 28 * 28);
  gc_forward(&f);
  cr_assert(!mdl_layer_has_backward(f.l));
  gc_layer_free(&f);
}

Test(table, unknown_type_lists_known) {
  mdl_shape s = S4(1, 1, 2, 2);
  gc_opts o = gc_default_opts();
  gc_result r =
      gc_run("type: 'Convolutoin'", CAFFE__PHASE__TRAIN, 1, &s, false, &o, NULL, NULL, NULL);
  cr_assert_eq(r.failed, -1);
  cr_assert(strstr(r.first_failure, "Convolutoin") != NULL, "%s", r.first_failure);
  cr_assert(strstr(r.first_failure, "Convolution") != NULL, "%s", r.first_failure);
  cr_assert_not_null(mdl_backend_layer(mdl_cpu_backend(), "SoftmaxWithLoss"));
  cr_assert_null(mdl_backend_layer(mdl_cpu_backend(), "Data"));
}

/* Every type in the CPU table has a compiler shape rule. */
Test(table, every_impl_has_a_shape_rule) {
  const mdl_backend_i *be = mdl_cpu_backend()->iface;
  for (size_t i = 0; i < be->n_impls; i++)
    cr_assert_not_null(mdl_layer_find(be->impls[i]->type), "%s", be->impls[i]->type);
}
