/* Tests for the shape rules in compiler/layers*.c, one layer family at a
 * time: convolution geometry, pooling rounding, dense and per-channel
 * layers, axis layers, recurrent layers; each with its error messages
 * (layer, blob and both shapes named). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/graph_test_util.h"

/* ---- shape rules: convolution family ---- */

#define CONV(extra)                                                                           \
  "layer { name: 'L' type: 'Convolution' bottom: 'in0' top: 'out' convolution_param { " extra \
  " }"                                                                                        \
  " }"

Test(rules, convolution) {
  cr_assert_str_eq(out_of("2x3x10x10", CONV("num_output: 4 kernel_size: 3")), "2x4x8x8");
  cr_assert_str_eq(params_of("2x3x10x10", CONV("num_output: 4 kernel_size: 3")), "4x3x3x3 4");
  cr_assert_str_eq(out_of("2x3x10x10", CONV("num_output: 4 kernel_size: 3 pad: 1 stride: 2")),
                   "2x4x5x5");
  cr_assert_str_eq(out_of("2x3x10x10", CONV("num_output: 4 kernel_size: 3 dilation: 2")),
                   "2x4x6x6");
  cr_assert_str_eq(out_of("2x3x11x11", CONV("num_output: 4 kernel_size: 3 dilation: 2 pad: 2 "
                                            "stride: 3")),
                   "2x4x4x4");
  cr_assert_str_eq(params_of("2x3x10x10", CONV("num_output: 4 kernel_size: 3 bias_term: false")),
                   "4x3x3x3");
  check_leaks();
}

Test(rules, convolution_rectangular) {
  const char *c = CONV(
      "num_output: 4 kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 0 stride_h: 2 "
      "stride_w: 1");
  cr_assert_str_eq(out_of("2x3x10x10", c), "2x4x5x6");
  cr_assert_str_eq(params_of("2x3x10x10", c), "4x3x3x5 4");
  /* Per-axis repeated values do the same. */
  cr_assert_str_eq(out_of("2x3x10x10", CONV("num_output: 4 kernel_size: 3 kernel_size: 5 pad: 1 "
                                            "pad: 0 stride: 2 stride: 1")),
                   "2x4x5x6");
  check_leaks();
}

Test(rules, convolution_nd_axis_group) {
  /* 3-D: kernel given per spatial axis. */
  const char *c3 = CONV(
      "num_output: 4 kernel_size: 3 kernel_size: 3 kernel_size: 5 pad: 1 "
      "pad: 0 pad: 2");
  cr_assert_str_eq(out_of("2x3x6x8x10", c3), "2x4x6x6x10");
  cr_assert_str_eq(params_of("2x3x6x8x10", c3), "4x3x3x3x5 4");
  /* axis 2: axes before it are batch-like, one spatial axis after it. */
  cr_assert_str_eq(out_of("5x2x3x10", CONV("num_output: 4 kernel_size: 3 axis: 2")), "5x2x4x8");
  cr_assert_str_eq(params_of("5x2x3x10", CONV("num_output: 4 kernel_size: 3 axis: 2")), "4x3x3 4");
  cr_assert_str_eq(params_of("2x4x5x5", CONV("num_output: 6 kernel_size: 1 group: 2")),
                   "6x2x1x1 6");
  /* Depthwise: group = channels. */
  cr_assert_str_eq(params_of("1x32x8x8", CONV("num_output: 32 kernel_size: 3 group: 32")),
                   "32x1x3x3 32");
  /* One top per bottom, all the same shape. */
  mdl_graph *g =
      build_with("2x3x6x6 2x3x6x6",
                 "layer { name: 'L' type: 'Convolution' bottom: 'in0' bottom: 'in1'\n"
                 "  top: 'o0' top: 'o1' convolution_param { num_output: 2 kernel_size: 3 } }",
                 NULL);
  expect_shape(g, "o1", "2x2x4x4");
  mdl_graph_free(g);
  check_leaks();
}

Test(rules, convolution_errors) {
  const char *m = fail_with("2x3x10x10", CONV("num_output: 4"), NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Convolution): convolution_param.kernel_size is "
                   "missing");
  m = fail_with("2x3x10x10", CONV("num_output: 4 kernel_size: 3 stride: 0"), NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Convolution): convolution_param stride must be > 0 "
                   "(spatial axis 0 is 0)");
  m = fail_with("2x3x10x10", CONV("kernel_size: 3"), NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Convolution): convolution_param.num_output must be "
                   "set and > 0");
  m = fail_with("2x3x10x10", CONV("num_output: 4 kernel_size: 3 group: 2"), NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Convolution): convolution_param.group 2 does not "
                   "divide the 3 channels of bottom \"in0\" (2x3x10x10)");
  m = fail_with("2x4x10x10", CONV("num_output: 3 kernel_size: 3 group: 2"), NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Convolution): convolution_param.num_output 3 is "
                   "not a multiple of group 2");
  m = fail_with("2x3x6x8x10", CONV("num_output: 4 kernel_size: 3 kernel_size: 3"), NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Convolution): convolution_param.kernel_size is "
                   "given 2 times for 3 spatial axes; give it once or once per spatial axis");
  m = fail_with("2x3x6x8x10", CONV("num_output: 4 kernel_h: 3 kernel_w: 3"), NULL);
  expect_contains(m, "kernel_h/kernel_w need 2 spatial axes", "bottom \"in0\" (2x3x6x8x10) has 3",
                  NULL);
  m = fail_with("2x3x10x10", CONV("num_output: 4 kernel_size: 3 kernel_h: 3 kernel_w: 3"), NULL);
  expect_contains(m, "gives both kernel_size and kernel_h/kernel_w", NULL);
  m = fail_with("2x3x4x4", CONV("num_output: 4 kernel_size: 5"), NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Convolution): the kernel (extent 5 on spatial axis "
                   "0) is larger than bottom \"in0\" (2x3x4x4) plus padding 0");
  m = fail_with("2x3x6x6 2x3x5x5",
                "layer { name: 'L' type: 'Convolution' bottom: 'in0' bottom: 'in1'\n"
                "  top: 'o0' top: 'o1' convolution_param { num_output: 2 kernel_size: 3 } }",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Convolution): bottom \"in0\" is 2x3x6x6 but bottom "
                   "\"in1\" is 2x3x5x5");
  m = fail_with("2x3x6x6",
                "layer { name: 'L' type: 'Convolution' bottom: 'in0' top: 'o0' top: 'o1'\n"
                "  convolution_param { num_output: 2 kernel_size: 3 } }",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Convolution): takes one top per bottom (1 bottoms, "
                   "2 tops)");
  m = fail_with("2x3x6x6", CONV("num_output: 2 kernel_size: 3 axis: 4"), NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Convolution): convolution_param.axis 4 is out of "
                   "range for bottom \"in0\" (2x3x6x6, 4 axes)");
  check_leaks();
}

Test(rules, deconvolution_and_im2col) {
  const char *d =
      "layer { name: 'L' type: 'Deconvolution' bottom: 'in0' top: 'out'\n"
      "  convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 } }";
  cr_assert_str_eq(out_of("2x3x5x5", d), "2x4x10x10");
  cr_assert_str_eq(params_of("2x3x5x5", d), "3x4x4x4 4");
  const char *dg =
      "layer { name: 'L' type: 'Deconvolution' bottom: 'in0' top: 'out'\n"
      "  convolution_param { num_output: 6 kernel_size: 2 stride: 2 group: 2 "
      "bias_term: false } }";
  cr_assert_str_eq(out_of("2x4x5x5", dg), "2x6x10x10");
  cr_assert_str_eq(params_of("2x4x5x5", dg), "4x3x2x2");
  const char *im =
      "layer { name: 'L' type: 'Im2col' bottom: 'in0' top: 'out'\n"
      "  convolution_param { kernel_size: 3 stride: 2 } }";
  cr_assert_str_eq(out_of("2x3x7x7", im), "2x27x3x3");
  cr_assert_str_eq(params_of("2x3x7x7", im), "");
  check_leaks();
}

/* ---- shape rules: pooling, SPP, LRN, crop ---- */

#define POOL(extra) \
  "layer { name: 'L' type: 'Pooling' bottom: 'in0' top: 'out' pooling_param { " extra " } }"

Test(rules, pooling_rounding) {
  /* Caffe rounds up: (6 - 3) / 2 = 1.5 -> 2, + 1. */
  cr_assert_str_eq(out_of("2x3x6x6", POOL("pool: MAX kernel_size: 3 stride: 2")), "2x3x3x3");
  cr_assert_str_eq(out_of("2x3x112x112", POOL("pool: MAX kernel_size: 3 stride: 2")), "2x3x56x56");
  cr_assert_str_eq(out_of("2x3x7x7", POOL("pool: AVE kernel_size: 2 stride: 2")), "2x3x4x4");
  /* With padding the last window must start inside the image: 5x5, k2 s2
   * p1 gives ceil(5/2)+1 = 4, then (4-1)*2 = 6 >= 5+1 clips it to 3. */
  cr_assert_str_eq(out_of("2x3x5x5", POOL("pool: MAX kernel_size: 2 stride: 2 pad: 1")), "2x3x3x3");
  /* No clip when the last window starts inside: 6x6 k3 s2 p1 -> 4. */
  cr_assert_str_eq(out_of("2x3x6x6", POOL("pool: AVE kernel_size: 3 stride: 2 pad: 1")), "2x3x4x4");
  /* Inception's same-size pooling. */
  cr_assert_str_eq(out_of("1x8x28x28", POOL("pool: MAX kernel_size: 3 stride: 1 pad: 1")),
                   "1x8x28x28");
  check_leaks();
}

Test(rules, pooling_forms) {
  cr_assert_str_eq(out_of("2x3x7x5", POOL("pool: AVE global_pooling: true")), "2x3x1x1");
  cr_assert_str_eq(out_of("2x3x7x5", POOL("pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 "
                                          "stride_w: 1")),
                   "2x3x3x4");
  cr_assert_str_eq(out_of("2x3x7x5", POOL("pool: MAX kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 "
                                          "stride: 2")),
                   "2x3x4x3");
  cr_assert_str_eq(out_of("2x3x8x8", POOL("pool: STOCHASTIC kernel_size: 2 stride: 2")), "2x3x4x4");
  mdl_graph *g =
      build_with("2x3x8x8",
                 "layer { name: 'L' type: 'Pooling' bottom: 'in0' top: 'out' top: 'mask'\n"
                 "  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }",
                 NULL);
  expect_shape(g, "mask", "2x3x4x4");
  mdl_graph_free(g);
  check_leaks();
}

Test(rules, pooling_errors) {
  const char *m = fail_with("2x3x5", POOL("pool: MAX kernel_size: 2"), NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Pooling): bottom \"in0\" has 3 axes (2x3x5), "
                   "expected 4");
  m = fail_with("2x3x5x5", POOL("pool: MAX"), NULL);
  cr_assert_str_eq(m, "t.prototxt: layer \"L\" (Pooling): pooling_param.kernel_size is missing");
  m = fail_with("2x3x5x5", POOL("pool: MAX kernel_h: 2"), NULL);
  expect_contains(m, "needs both kernel_h and kernel_w", NULL);
  m = fail_with("2x3x5x5", POOL("pool: AVE global_pooling: true kernel_size: 2"), NULL);
  expect_contains(m, "global_pooling takes the whole input", NULL);
  m = fail_with("2x3x5x5", POOL("pool: STOCHASTIC kernel_size: 3 pad: 1"), NULL);
  expect_contains(m, "padding is implemented only for MAX and AVE", NULL);
  m = fail_with("2x3x5x5", POOL("pool: MAX kernel_size: 2 pad: 2"), NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Pooling): pooling_param pad (2x2) must be smaller "
                   "than the kernel (2x2)");
  m = fail_with("2x3x5x5", POOL("pool: MAX kernel_size: 2 stride: 0"), NULL);
  expect_contains(m, "stride must be > 0", NULL);
  m = fail_with("2x3x5x5", POOL("pool: MAX kernel_size: 2 pad: 1 pad_h: 1"), NULL);
  expect_contains(m, "give pad, or both pad_h and pad_w", NULL);
  m = fail_with("2x3x8x8",
                "layer { name: 'L' type: 'Pooling' bottom: 'in0' top: 'out' top: 'mask'\n"
                "  pooling_param { pool: AVE kernel_size: 2 stride: 2 } }",
                NULL);
  expect_contains(m, "second top (the argmax mask) exists only for MAX", NULL);
  m = fail_with("2x3x2x2", POOL("pool: MAX kernel_size: 4"), NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Pooling): the 4x4 window is larger than bottom "
                   "\"in0\" (2x3x2x2) plus padding");
  check_leaks();
}

Test(rules, spp_lrn) {
  const char *spp =
      "layer { name: 'L' type: 'SPP' bottom: 'in0' top: 'out'\n"
      "  spp_param { pyramid_height: 3 } }";
  /* Caffe: Flatten + Concat of the levels (2 axes); one level is a plain
   * Pooling layer (4 axes). */
  cr_assert_str_eq(out_of("2x8x13x13", spp), "2x168");
  cr_assert_str_eq(out_of("2x8x13x13",
                          "layer { name: 'L' type: 'SPP' bottom: 'in0' top: 'out'\n"
                          "  spp_param { pyramid_height: 1 } }"),
                   "2x8x1x1");
  const char *m = fail_with("2x8x3x3",
                            "layer { name: 'L' type: 'SPP' bottom: 'in0' top: 'out'\n"
                            "  spp_param { pyramid_height: 5 } }",
                            NULL);
  expect_contains(m,
                  "layer \"L\" (SPP): spp_param.pyramid_height 5 is too high for bottom \"in0\" "
                  "(2x8x3x3)",
                  NULL);
  const char *lrn = "layer { name: 'L' type: 'LRN' bottom: 'in0' top: 'out' }";
  cr_assert_str_eq(out_of("2x8x5x5", lrn), "2x8x5x5");
  m = fail_with(
      "2x8x5x5",
      "layer { name: 'L' type: 'LRN' bottom: 'in0' top: 'out' lrn_param { local_size: 4 } }", NULL);
  cr_assert_str_eq(m, "t.prototxt: layer \"L\" (LRN): lrn_param.local_size 4 must be odd");
  m = fail_with("2x8", lrn, NULL);
  cr_assert_str_eq(m, "t.prototxt: layer \"L\" (LRN): bottom \"in0\" has 2 axes (2x8), expected 4");
  check_leaks();
}

Test(rules, crop) {
  const char *c =
      "layer { name: 'L' type: 'Crop' bottom: 'in0' bottom: 'in1' top: 'out'\n"
      "  crop_param { offset: 1 } }";
  cr_assert_str_eq(out_of("2x3x10x10 2x1x6x8", c), "2x3x6x8");
  cr_assert_str_eq(out_of("2x3x10x10 1x1x6x8",
                          "layer { name: 'L' type: 'Crop' bottom: 'in0' bottom: 'in1' top: 'out'\n"
                          "  crop_param { axis: 1 offset: 0 offset: 4 offset: 2 } }"),
                   "2x1x6x8");
  const char *m =
      fail_with("2x3x10x10 2x1x6x8",
                "layer { name: 'L' type: 'Crop' bottom: 'in0' bottom: 'in1' top: 'out'\n"
                "  crop_param { offset: 5 } }",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Crop): crop of axis 2 is out of bounds: bottom "
                   "\"in0\" is 2x3x10x10, bottom \"in1\" is 2x1x6x8, offset 5");
  m = fail_with("2x3x10x10 2x6x8", c, NULL);
  expect_contains(m, "bottom \"in0\" is 2x3x10x10 but bottom \"in1\" is 2x6x8", NULL);
  m = fail_with("2x3x10x10 2x1x6x8",
                "layer { name: 'L' type: 'Crop' bottom: 'in0' bottom: 'in1' top: 'out'\n"
                "  crop_param { offset: 1 offset: 1 offset: 1 } }",
                NULL);
  expect_contains(m, "crop_param has 3 offsets but 2 axes are cropped", NULL);
  check_leaks();
}

/* ---- shape rules: dense and per-channel layers ---- */

Test(rules, inner_product) {
  const char *ip =
      "layer { name: 'L' type: 'InnerProduct' bottom: 'in0' top: 'out'\n"
      "  inner_product_param { num_output: 7 %s } }";
  char t[512];
  snprintf(t, sizeof t, ip, "");
  cr_assert_str_eq(out_of("2x3x4x5", t), "2x7");
  cr_assert_str_eq(params_of("2x3x4x5", t), "7x60 7");
  snprintf(t, sizeof t, ip, "axis: 2");
  cr_assert_str_eq(out_of("2x3x4x5", t), "2x3x7");
  cr_assert_str_eq(params_of("2x3x4x5", t), "7x20 7");
  snprintf(t, sizeof t, ip, "axis: -1 transpose: true bias_term: false");
  cr_assert_str_eq(out_of("2x3x4x5", t), "2x3x4x7");
  cr_assert_str_eq(params_of("2x3x4x5", t), "5x7");
  snprintf(t, sizeof t, ip, "transpose: true");
  cr_assert_str_eq(params_of("2x3x4x5", t), "60x7 7");
  const char *m =
      fail_with("2x3", "layer { name: 'L' type: 'InnerProduct' bottom: 'in0' top: 'out' }", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (InnerProduct): inner_product_param.num_output must "
                   "be set and > 0");
  check_leaks();
}

Test(rules, embed) {
  const char *e =
      "layer { name: 'L' type: 'Embed' bottom: 'in0' top: 'out'\n"
      "  embed_param { num_output: 8 input_dim: 100 } }";
  cr_assert_str_eq(out_of("2x3", e), "2x3x8");
  cr_assert_str_eq(params_of("2x3", e), "100x8 8");
  const char *m = fail_with("2x3",
                            "layer { name: 'L' type: 'Embed' bottom: 'in0' top: 'out'\n"
                            "  embed_param { num_output: 8 } }",
                            NULL);
  cr_assert_str_eq(m, "t.prototxt: layer \"L\" (Embed): embed_param.input_dim must be set and > 0");
  check_leaks();
}

Test(rules, elementwise_types) {
  static const char *types[] = {"ReLU",  "ELU",   "Sigmoid", "TanH",    "AbsVal",
                                "BNLL",  "Power", "Exp",     "Log",     "Threshold",
                                "Swish", "Clip",  "Dropout", "Softmax", "BatchNorm",
                                "Scale", "Bias",  "MVN",     "PReLU"};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    char t[256];
    snprintf(t, sizeof t, "layer { name: 'L' type: '%s' bottom: 'in0' top: 'out' }", types[i]);
    cr_assert_str_eq(out_of("2x3x4x5", t), "2x3x4x5", "%s", types[i]);
    /* ... and in place. */
    snprintf(t, sizeof t, "layer { name: 'L' type: '%s' bottom: 'in0' top: 'in0' }", types[i]);
    mdl_graph *g = build_with("2x3x4x5", t, NULL);
    expect_shape(g, "in0", "2x3x4x5");
    mdl_graph_free(g);
  }
  const char *m = fail_with("2x3",
                            "layer { name: 'L' type: 'Dropout' bottom: 'in0' top: 'out'\n"
                            "  dropout_param { dropout_ratio: 1 } }",
                            NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Dropout): dropout_param.dropout_ratio 1 must be in "
                   "[0, 1)");
  /* exp_param.base is spelled base_ in the C struct; set it directly so this
   * test does not depend on the text-format spelling. */
  char *t = with_inputs("2x3", "layer { name: 'L' type: 'Exp' bottom: 'in0' top: 'out' }");
  Caffe__NetParameter *n = parse_net(t);
  free(t);
  Caffe__ExpParameter ep = CAFFE__EXP_PARAMETER__INIT;
  ep.has_base_ = 1;
  ep.base_ = 0;
  n->layer[1]->exp_param = &ep;
  mdl_error err = {0};
  mdl_graph *g = NULL;
  cr_assert_eq(try_build_net(n, NULL, &g, &err), MDL_ERR_INVALID);
  cr_assert_str_eq(err.msg,
                   "t.prototxt: layer \"L\" (Exp): exp_param.base 0 must be > 0 (or -1 for e)");
  ep.base_ = 2;
  g = build_net(n, NULL);
  mdl_graph_free(g);
  n->layer[1]->exp_param = NULL;
  free_net(n);
  check_leaks();
}

Test(rules, prelu_batch_norm) {
  cr_assert_str_eq(
      params_of("2x3x4x5", "layer { name: 'L' type: 'PReLU' bottom: 'in0' top: 'out' }"), "3");
  cr_assert_str_eq(params_of("2x3x4x5",
                             "layer { name: 'L' type: 'PReLU' bottom: 'in0' top: 'out'\n"
                             "  prelu_param { channel_shared: true } }"),
                   "scalar");
  const char *m =
      fail_with("5", "layer { name: 'L' type: 'PReLU' bottom: 'in0' top: 'out' }", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (PReLU): bottom \"in0\" has 1 axes (5), expected at "
                   "least 2");
  cr_assert_str_eq(
      params_of("2x3x4x5", "layer { name: 'L' type: 'BatchNorm' bottom: 'in0' top: 'out' }"),
      "3 3 1");
  cr_assert_str_eq(params_of("5", "layer { name: 'L' type: 'BatchNorm' bottom: 'in0' top: 'out' }"),
                   "1 1 1");
  check_leaks();
}

Test(rules, scale_bias) {
  const char *s = "layer { name: 'L' type: 'Scale' bottom: 'in0' top: 'out' scale_param { %s } }";
  char t[512];
  snprintf(t, sizeof t, s, "");
  cr_assert_str_eq(params_of("2x3x4x5", t), "3");
  snprintf(t, sizeof t, s, "bias_term: true");
  cr_assert_str_eq(params_of("2x3x4x5", t), "3 3");
  snprintf(t, sizeof t, s, "num_axes: -1 bias_term: true");
  cr_assert_str_eq(params_of("2x3x4x5", t), "3x4x5 3x4x5");
  snprintf(t, sizeof t, s, "num_axes: 0");
  cr_assert_str_eq(params_of("2x3x4x5", t), "scalar");
  snprintf(t, sizeof t, s, "axis: 2 num_axes: 2");
  cr_assert_str_eq(params_of("2x3x4x5", t), "4x5");
  snprintf(t, sizeof t, s, "axis: -2 num_axes: 3");
  const char *m = fail_with("2x3x4x5", t, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Scale): scale_param.axis 2 + num_axes 3 extends past "
                   "the 4 axes of bottom \"in0\" (2x3x4x5)");
  /* Factor from a second bottom: no learned factor, bias spans its axes. */
  const char *two =
      "layer { name: 'L' type: 'Scale' bottom: 'in0' bottom: 'in1' top: 'out'\n"
      "  scale_param { bias_term: true } }";
  cr_assert_str_eq(out_of("2x3x4x5 3x4", two), "2x3x4x5");
  cr_assert_str_eq(params_of("2x3x4x5 3x4", two), "3x4");
  cr_assert_str_eq(
      params_of("2x3x4x5 3x4",
                "layer { name: 'L' type: 'Scale' bottom: 'in0' bottom: 'in1' top: 'out' }"),
      "");
  m = fail_with("2x3x4x5 4", two, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Scale): bottom \"in1\" is 4 but bottom \"in0\" is "
                   "2x3x4x5: it must equal axes 1..1 of it");
  /* Bias: the same spans. */
  cr_assert_str_eq(
      params_of("2x3x4x5", "layer { name: 'L' type: 'Bias' bottom: 'in0' top: 'out' }"), "3");
  cr_assert_str_eq(params_of("2x3x4x5",
                             "layer { name: 'L' type: 'Bias' bottom: 'in0' top: 'out'\n"
                             "  bias_param { axis: 0 num_axes: -1 } }"),
                   "2x3x4x5");
  cr_assert_str_eq(
      params_of("2x3x4x5 3x4",
                "layer { name: 'L' type: 'Bias' bottom: 'in0' bottom: 'in1' top: 'out' }"),
      "");
  m = fail_with("2x3x4x5 3x5",
                "layer { name: 'L' type: 'Bias' bottom: 'in0' bottom: 'in1' top: 'out' }", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Bias): bottom \"in1\" is 3x5 but bottom \"in0\" is "
                   "2x3x4x5: it must equal axes 1..2 of it");
  check_leaks();
}

Test(rules, eltwise) {
  cr_assert_str_eq(
      out_of("2x3 2x3 2x3",
             "layer { name: 'L' type: 'Eltwise' bottom: 'in0' bottom: 'in1'\n"
             "  bottom: 'in2' top: 'out' eltwise_param { coeff: 1 coeff: -1 coeff: 2 } }"),
      "2x3");
  cr_assert_str_eq(
      out_of("2x3 2x3",
             "layer { name: 'L' type: 'Eltwise' bottom: 'in0' bottom: 'in1' top: 'out'\n"
             "  eltwise_param { operation: MAX } }"),
      "2x3");
  const char *m = fail_text(
      "layer { name: 'in' type: 'Input' top: 'a' top: 'b'\n"
      "  input_param { shape { dim: 64 dim: 128 dim: 28 dim: 28 }\n"
      "                shape { dim: 64 dim: 128 dim: 14 dim: 14 } } }\n"
      "layer { name: 'fuse' type: 'Eltwise' bottom: 'a' bottom: 'b' top: 'c' }\n",
      NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"fuse\" (Eltwise): bottom \"a\" is 64x128x28x28 but bottom "
                   "\"b\" is 64x128x14x14");
  m = fail_with("2x3 2x3",
                "layer { name: 'L' type: 'Eltwise' bottom: 'in0' bottom: 'in1' top: 'out'\n"
                "  eltwise_param { coeff: 1 } }",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Eltwise): eltwise_param has 1 coeff for 2 bottoms; "
                   "give one per bottom");
  m = fail_with("2x3 2x3",
                "layer { name: 'L' type: 'Eltwise' bottom: 'in0' bottom: 'in1' top: 'out'\n"
                "  eltwise_param { operation: PROD coeff: 1 coeff: 2 } }",
                NULL);
  expect_contains(m, "eltwise_param.coeff applies only to SUM", NULL);
  check_leaks();
}

/* Split tops in messages carry the user's blob name, not the split's. */
Test(rules, messages_use_user_blob_names) {
  const char *m = fail_text(
      "layer { name: 'in' type: 'Input' top: 'a' top: 'b'\n"
      "  input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 4 } } }\n"
      "layer { name: 'r' type: 'ReLU' bottom: 'a' top: 'r' }\n"
      "layer { name: 'fuse' type: 'Eltwise' bottom: 'a' bottom: 'b' top: 'c' }\n",
      NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"fuse\" (Eltwise): bottom \"a\" is 2x3 but bottom \"b\" is "
                   "2x4");
  check_leaks();
}

/* ---- shape rules: axes ---- */

Test(rules, concat) {
  const char *c = "layer { name: 'L' type: 'Concat' bottom: 'in0' bottom: 'in1' top: 'out' %s }";
  char t[512];
  snprintf(t, sizeof t, c, "");
  cr_assert_str_eq(out_of("2x3x4 2x5x4", t), "2x8x4");
  snprintf(t, sizeof t, c, "concat_param { axis: 0 }");
  cr_assert_str_eq(out_of("2x3x4 5x3x4", t), "7x3x4");
  snprintf(t, sizeof t, c, "concat_param { axis: -1 }");
  cr_assert_str_eq(out_of("2x3x4 2x3x1", t), "2x3x5");
  snprintf(t, sizeof t, c, "concat_param { concat_dim: 2 }");
  cr_assert_str_eq(out_of("2x3x4 2x3x1", t), "2x3x5");
  cr_assert_str_eq(out_of("2x3", "layer { name: 'L' type: 'Concat' bottom: 'in0' top: 'out' }"),
                   "2x3");
  snprintf(t, sizeof t, c, "");
  const char *m = fail_with("2x3x4 2x5x5", t, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Concat): bottom \"in0\" is 2x3x4 but bottom \"in1\" "
                   "is 2x5x5: all axes but the concat axis 1 must match");
  m = fail_with("2x3x4 2x5", t, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Concat): bottom \"in0\" is 2x3x4 but bottom \"in1\" "
                   "is 2x5: inputs need the same number of axes");
  snprintf(t, sizeof t, c, "concat_param { axis: 1 concat_dim: 1 }");
  m = fail_with("2x3 2x3", t, NULL);
  expect_contains(m, "concat_param gives both axis and concat_dim", NULL);
  snprintf(t, sizeof t, c, "concat_param { concat_dim: 3 }");
  m = fail_with("2x3 2x3", t, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Concat): concat_param.concat_dim 3 is out of range "
                   "for bottom \"in0\" (2x3, 2 axes)");
  check_leaks();
}

Test(rules, slice) {
  mdl_graph *g =
      build_with("2x10x4",
                 "layer { name: 'L' type: 'Slice' bottom: 'in0' top: 'a' top: 'b' top: 'c'\n"
                 "  slice_param { slice_point: 3 slice_point: 7 } }",
                 NULL);
  expect_shape(g, "a", "2x3x4");
  expect_shape(g, "b", "2x4x4");
  expect_shape(g, "c", "2x3x4");
  mdl_graph_free(g);
  g = build_with("2x10x4",
                 "layer { name: 'L' type: 'Slice' bottom: 'in0' top: 'a' top: 'b' }\n"
                 "layer { name: 'M' type: 'Slice' bottom: 'a' top: 'c' top: 'd'\n"
                 "  slice_param { slice_dim: 2 } }\n"
                 "layer { name: 'N' type: 'Slice' bottom: 'b' top: 'e' top: 'f'\n"
                 "  slice_param { axis: 0 slice_point: 1 } }",
                 NULL);
  expect_shape(g, "a", "2x5x4");
  expect_shape(g, "d", "2x5x2");
  expect_shape(g, "f", "1x5x4");
  mdl_graph_free(g);
  const char *m = fail_with(
      "2x10x4", "layer { name: 'L' type: 'Slice' bottom: 'in0' top: 'a' top: 'b' top: 'c' }", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Slice): 3 tops do not evenly divide axis 1 (size 10) "
                   "of bottom \"in0\" (2x10x4)");
  m = fail_with("2x10x4",
                "layer { name: 'L' type: 'Slice' bottom: 'in0' top: 'a' top: 'b'\n"
                "  slice_param { slice_point: 3 slice_point: 7 } }",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Slice): slice_param has 2 slice_point values for 2 "
                   "tops; give one fewer than the tops");
  m = fail_with("2x10x4",
                "layer { name: 'L' type: 'Slice' bottom: 'in0' top: 'a' top: 'b' top: 'c'\n"
                "  slice_param { slice_point: 7 slice_point: 3 } }",
                NULL);
  expect_contains(m, "slice_param.slice_point 3 does not fit axis 1 of bottom \"in0\" (2x10x4)",
                  NULL);
  m = fail_with("2x10x4",
                "layer { name: 'L' type: 'Slice' bottom: 'in0' top: 'a' top: 'b'\n"
                "  slice_param { slice_point: 12 } }",
                NULL);
  expect_contains(m, "slice_param.slice_point 12 does not fit axis 1", NULL);
  check_leaks();
}

Test(rules, split_explicit) {
  mdl_graph *g =
      build_with("2x3", "layer { name: 'L' type: 'Split' bottom: 'in0' top: 'a' top: 'b' }", NULL);
  expect_shape(g, "a", "2x3");
  expect_shape(g, "b", "2x3");
  mdl_graph_free(g);
  const char *m =
      fail_with("2x3", "layer { name: 'L' type: 'Split' bottom: 'in0' top: 'in0' }", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Split): cannot run in place (top \"in0\" is also its "
                   "bottom)");
  check_leaks();
}

Test(rules, flatten) {
  const char *f = "layer { name: 'L' type: 'Flatten' bottom: 'in0' top: 'out' %s }";
  char t[512];
  snprintf(t, sizeof t, f, "");
  cr_assert_str_eq(out_of("2x3x4x5", t), "2x60");
  snprintf(t, sizeof t, f, "flatten_param { axis: 2 }");
  cr_assert_str_eq(out_of("2x3x4x5", t), "2x3x20");
  snprintf(t, sizeof t, f, "flatten_param { end_axis: 2 }");
  cr_assert_str_eq(out_of("2x3x4x5", t), "2x12x5");
  snprintf(t, sizeof t, f, "flatten_param { axis: 0 end_axis: -2 }");
  cr_assert_str_eq(out_of("2x3x4x5", t), "24x5");
  snprintf(t, sizeof t, f, "flatten_param { axis: 2 end_axis: 1 }");
  cr_assert_str_eq(out_of("2x3x4x5", t), "2x3x1x4x5");
  snprintf(t, sizeof t, f, "flatten_param { axis: 3 end_axis: 1 }");
  const char *m = fail_with("2x3x4x5", t, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Flatten): flatten_param.end_axis 1 comes before axis "
                   "3 (bottom \"in0\" is 2x3x4x5)");
  m = fail_with("2x3", "layer { name: 'L' type: 'Flatten' bottom: 'in0' top: 'in0' }", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Flatten): cannot run in place (top \"in0\" is also "
                   "its bottom)");
  check_leaks();
}

Test(rules, reshape) {
  const char *r =
      "layer { name: 'L' type: 'Reshape' bottom: 'in0' top: 'out'\n"
      "  reshape_param { %s } }";
  char t[512];
  snprintf(t, sizeof t, r, "shape { dim: 0 dim: -1 }");
  cr_assert_str_eq(out_of("2x3x4x5", t), "2x60");
  snprintf(t, sizeof t, r, "shape { dim: 0 dim: 2 dim: -1 }");
  cr_assert_str_eq(out_of("2x3x4x5", t), "2x2x30");
  snprintf(t, sizeof t, r, "shape { dim: -1 } axis: 1 num_axes: 2");
  cr_assert_str_eq(out_of("2x3x4x5", t), "2x12x5");
  snprintf(t, sizeof t, r, "shape { dim: 1 } axis: -1 num_axes: 0");
  cr_assert_str_eq(out_of("2x3x4x5", t), "2x3x4x5x1");
  snprintf(t, sizeof t, r, "shape { dim: 0 dim: 0 dim: -1 }");
  cr_assert_str_eq(out_of("2x3x4x5", t), "2x3x20");
  snprintf(t, sizeof t, r, "shape { dim: 120 }");
  cr_assert_str_eq(out_of("2x3x4x5", t), "120");
  snprintf(t, sizeof t, r, "shape { dim: -1 dim: -1 }");
  const char *m = fail_with("2x3x4x5", t, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Reshape): reshape_param.shape has more than one -1 "
                   "dim");
  snprintf(t, sizeof t, r, "shape { dim: 7 dim: -1 }");
  m = fail_with("2x3x4x5", t, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Reshape): bottom \"in0\" (2x3x4x5, count 120) is not "
                   "divisible by the product 7 of the other dims of reshape_param.shape");
  snprintf(t, sizeof t, r, "shape { dim: 2 dim: 7 }");
  m = fail_with("2x3x4x5", t, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Reshape): reshaping bottom \"in0\" (2x3x4x5, count "
                   "120) to 2x7 (count 14) changes the count");
  snprintf(t, sizeof t, r, "shape { dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 }");
  m = fail_with("2x3x4x5", t, NULL);
  expect_contains(m, "reshape_param.shape dim 4 is 0 but bottom \"in0\" (2x3x4x5) has no axis 4",
                  NULL);
  snprintf(t, sizeof t, r, "shape { dim: -2 }");
  m = fail_with("2x3x4x5", t, NULL);
  expect_contains(m, "reshape_param.shape dim 0 is -2", NULL);
  snprintf(t, sizeof t, r, "shape { dim: 1 } axis: 5");
  m = fail_with("2x3x4x5", t, NULL);
  expect_contains(m, "reshape_param.axis 5 is out of range for bottom \"in0\" (2x3x4x5, 4 axes)",
                  NULL);
  snprintf(t, sizeof t, r, "shape { dim: 1 } axis: 3 num_axes: 2");
  m = fail_with("2x3x4x5", t, NULL);
  expect_contains(m, "reshape_param.axis 3 + num_axes 2 is out of range", NULL);
  check_leaks();
}

Test(rules, tile_reduction_softmax) {
  cr_assert_str_eq(out_of("2x3",
                          "layer { name: 'L' type: 'Tile' bottom: 'in0' top: 'out'\n"
                          "  tile_param { tiles: 4 } }"),
                   "2x12");
  cr_assert_str_eq(out_of("2x3",
                          "layer { name: 'L' type: 'Tile' bottom: 'in0' top: 'out'\n"
                          "  tile_param { axis: 0 tiles: 2 } }"),
                   "4x3");
  const char *m =
      fail_with("2x3", "layer { name: 'L' type: 'Tile' bottom: 'in0' top: 'out' }", NULL);
  cr_assert_str_eq(m, "t.prototxt: layer \"L\" (Tile): tile_param.tiles is missing");
  cr_assert_str_eq(
      out_of("2x3x4", "layer { name: 'L' type: 'Reduction' bottom: 'in0' top: 'out' }"), "scalar");
  cr_assert_str_eq(out_of("2x3x4",
                          "layer { name: 'L' type: 'Reduction' bottom: 'in0' top: 'out'\n"
                          "  reduction_param { axis: 1 operation: MEAN } }"),
                   "2");
  cr_assert_str_eq(out_of("2x3x4",
                          "layer { name: 'L' type: 'Reduction' bottom: 'in0' top: 'out'\n"
                          "  reduction_param { axis: -1 } }"),
                   "2x3");
  cr_assert_str_eq(out_of("2x3x4",
                          "layer { name: 'L' type: 'Softmax' bottom: 'in0' top: 'out'\n"
                          "  softmax_param { axis: 2 } }"),
                   "2x3x4");
  m = fail_with(
      "2x3x4",
      "layer { name: 'L' type: 'Softmax' bottom: 'in0' top: 'out' softmax_param { axis: 3 } }",
      NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Softmax): softmax_param.axis 3 is out of range for "
                   "bottom \"in0\" (2x3x4, 3 axes)");
  check_leaks();
}

Test(rules, mvn_argmax_silence) {
  /* Caffe's MVN reshapes its top through the 4-axis accessors. */
  cr_assert_str_eq(out_of("2x3", "layer { name: 'L' type: 'MVN' bottom: 'in0' top: 'out' }"),
                   "2x3x1x1");
  const char *m =
      fail_with("2x3", "layer { name: 'L' type: 'MVN' bottom: 'in0' top: 'in0' }", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (MVN): runs in place on \"in0\" but changes its shape "
                   "from 2x3 to 2x3x1x1");
  m = fail_with("1x2x3x4x5", "layer { name: 'L' type: 'MVN' bottom: 'in0' top: 'out' }", NULL);
  expect_contains(m, "bottom \"in0\" is 1x2x3x4x5 (5 axes) but this layer takes at most 4 axes",
                  NULL);
  cr_assert_str_eq(out_of("2x10", "layer { name: 'L' type: 'ArgMax' bottom: 'in0' top: 'out' }"),
                   "2x1x1");
  cr_assert_str_eq(out_of("2x10",
                          "layer { name: 'L' type: 'ArgMax' bottom: 'in0' top: 'out'\n"
                          "  argmax_param { out_max_val: true top_k: 3 } }"),
                   "2x2x3");
  cr_assert_str_eq(out_of("2x10x4",
                          "layer { name: 'L' type: 'ArgMax' bottom: 'in0' top: 'out'\n"
                          "  argmax_param { axis: 1 top_k: 2 } }"),
                   "2x2x4");
  m = fail_with("2x10",
                "layer { name: 'L' type: 'ArgMax' bottom: 'in0' top: 'out'\n"
                "  argmax_param { top_k: 11 } }",
                NULL);
  expect_contains(m, "argmax_param.top_k 11 exceeds the 10 values per item of bottom \"in0\"",
                  NULL);
  mdl_graph *g =
      build_with("2x3 4", "layer { name: 'L' type: 'Silence' bottom: 'in0' bottom: 'in1' }", NULL);
  cr_assert_eq(layer(g, "L")->n_top, 0);
  cr_assert_eq(g->n_outputs, 0);
  mdl_graph_free(g);
  check_leaks();
}

Test(rules, filter_batch_reindex_parameter) {
  mdl_graph *g = build_with("4x3 4x5 4x1",
                            "layer { name: 'L' type: 'Filter' bottom: 'in0' bottom: 'in1'\n"
                            "  bottom: 'in2' top: 'a' top: 'b' }",
                            NULL);
  expect_shape(g, "a", "4x3");
  expect_shape(g, "b", "4x5");
  mdl_graph_free(g);
  const char *m = fail_with(
      "4x3 4x2", "layer { name: 'L' type: 'Filter' bottom: 'in0' bottom: 'in1' top: 'a' }", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Filter): selector bottom \"in1\" is 4x2; all its axes "
                   "but the first must be 1");
  m = fail_with("4x3 5", "layer { name: 'L' type: 'Filter' bottom: 'in0' bottom: 'in1' top: 'a' }",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Filter): bottom \"in0\" is 4x3 but selector bottom "
                   "\"in1\" is 5: their first axes must match");
  m = fail_with("4x3 4", "layer { name: 'L' type: 'Filter' bottom: 'in0' bottom: 'in1' }", NULL);
  expect_contains(m, "takes at least 1 top, got 0", NULL);
  cr_assert_str_eq(out_of("5x3x2 4",
                          "layer { name: 'L' type: 'BatchReindex' bottom: 'in0' bottom: 'in1' "
                          "top: 'out' }"),
                   "4x3x2");
  const char *p =
      "layer { name: 'L' type: 'Parameter' top: 'out'\n"
      "  parameter_param { shape { dim: 2 dim: 3 } } }";
  cr_assert_str_eq(out_of("", p), "2x3");
  cr_assert_str_eq(params_of("", p), "2x3");
  check_leaks();
}

/* ---- shape rules: recurrent ---- */

Test(rules, recurrent) {
  const char *rnn =
      "layer { name: 'L' type: 'RNN' bottom: 'in0' bottom: 'in1' top: 'out'\n"
      "  recurrent_param { num_output: 4 } }";
  cr_assert_str_eq(out_of("5x2x3 5x2", rnn), "5x2x4");
  cr_assert_str_eq(params_of("5x2x3 5x2", rnn), "4x3 4 4x4 4x4 4");
  const char *lstm =
      "layer { name: 'L' type: 'LSTM' bottom: 'in0' bottom: 'in1' top: 'out'\n"
      "  recurrent_param { num_output: 4 } }";
  cr_assert_str_eq(out_of("5x2x3x2 5x2", lstm), "5x2x4");
  cr_assert_str_eq(params_of("5x2x3x2 5x2", lstm), "16x6 16 16x4");
  /* A static input adds its transform after the bias, as the unrolled net
   * orders its blobs. */
  cr_assert_str_eq(params_of("5x2x3 5x2 2x7",
                             "layer { name: 'L' type: 'LSTM' bottom: 'in0' bottom: 'in1'\n"
                             "  bottom: 'in2' top: 'out' recurrent_param { num_output: 4 } }"),
                   "16x3 16 16x7 16x4");
  mdl_graph *g = build_with("5x2x3 5x2 1x2x4 1x2x4",
                            "layer { name: 'L' type: 'LSTM' bottom: 'in0' bottom: 'in1'\n"
                            "  bottom: 'in2' bottom: 'in3' top: 'out' top: 'h' top: 'c'\n"
                            "  recurrent_param { num_output: 4 expose_hidden: true } }",
                            NULL);
  expect_shape(g, "h", "1x2x4");
  expect_shape(g, "c", "1x2x4");
  mdl_graph_free(g);
  const char *m = fail_with("5x2x3 5x3", rnn, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (RNN): bottom \"in1\" is 5x3 but bottom \"in0\" is "
                   "5x2x3: the sequence continuation markers must be 5x2 (T x N)");
  m = fail_with("5x2x3 5x2",
                "layer { name: 'L' type: 'RNN' bottom: 'in0' bottom: 'in1' top: 'out' }", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (RNN): recurrent_param.num_output must be set and > 0");
  m = fail_with("5x2x3 5x2 1x2x5",
                "layer { name: 'L' type: 'RNN' bottom: 'in0' bottom: 'in1' bottom: 'in2'\n"
                "  top: 'out' top: 'h' recurrent_param { num_output: 4 expose_hidden: true } }",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (RNN): bottom \"in2\" is 1x2x5 but the hidden state "
                   "must be 1x2x4");
  g = build_with("1x2x4 1x2x16 1x2",
                 "layer { name: 'L' type: 'LSTMUnit' bottom: 'in0' bottom: 'in1' bottom: 'in2'\n"
                 "  top: 'c' top: 'h' }",
                 NULL);
  expect_shape(g, "c", "1x2x4");
  expect_shape(g, "h", "1x2x4");
  mdl_graph_free(g);
  m = fail_with("1x2x4 1x2x12 1x2",
                "layer { name: 'L' type: 'LSTMUnit' bottom: 'in0' bottom: 'in1' bottom: 'in2'\n"
                "  top: 'c' top: 'h' }",
                NULL);
  expect_contains(m,
                  "bottom \"in1\" is 1x2x12 but bottom \"in0\" is 1x2x4: the gate input needs 4 x "
                  "4 = 16",
                  NULL);
  check_leaks();
}
