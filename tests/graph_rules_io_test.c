/* Tests for the shape rules of the layers at a net's ends: data layers
 * (Input, DummyData, MemoryData and the source readers through a resolver)
 * and the losses and Accuracy, with their error messages. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/graph_test_util.h"

/* ---- shape rules: data layers ---- */

Test(rules, input_dummy_memory) {
  mdl_graph *g = build_text(
      "layer { name: 'L' type: 'Input' top: 'a' top: 'b'\n"
      "  input_param { shape { dim: 2 dim: 3 } } }",
      NULL);
  expect_shape(g, "a", "2x3");
  expect_shape(g, "b", "2x3");
  cr_assert_eq(g->n_inputs, 2);
  mdl_graph_free(g);
  const char *m = fail_text(
      "layer { name: 'L' type: 'Input' top: 'a' top: 'b' top: 'c'\n"
      "  input_param { shape { dim: 2 } shape { dim: 3 } } }",
      NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Input): input_param has 2 shapes for 3 tops; give "
                   "one, or one per top");
  m = fail_text("layer { name: 'L' type: 'Input' top: 'a' }", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Input): input_param.shape is missing; the shape of "
                   "top \"a\" must be given");
  g = build_text(
      "layer { name: 'L' type: 'DummyData' top: 'a' top: 'b'\n"
      "  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 4 } } }\n"
      "layer { name: 'M' type: 'DummyData' top: 'c'\n"
      "  dummy_data_param { num: 2 channels: 3 height: 4 width: 5 } }\n"
      "layer { name: 'N' type: 'MemoryData' top: 'd' top: 'e'\n"
      "  memory_data_param { batch_size: 4 channels: 1 height: 2 width: 3 } }\n",
      NULL);
  expect_shape(g, "a", "2x3");
  expect_shape(g, "b", "4");
  expect_shape(g, "c", "2x3x4x5");
  expect_shape(g, "d", "4x1x2x3");
  expect_shape(g, "e", "4");
  mdl_graph_free(g);
  m = fail_text(
      "layer { name: 'M' type: 'DummyData' top: 'c'\n"
      "  dummy_data_param { num: 2 channels: 3 height: 4 width: 5 shape { dim: 1 } } }",
      NULL);
  expect_contains(m, "dummy_data_param gives both shape and the legacy", NULL);
  m = fail_text(
      "layer { name: 'N' type: 'MemoryData' top: 'd' top: 'e'\n"
      "  memory_data_param { batch_size: 4 channels: 1 } }",
      NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"N\" (MemoryData): memory_data_param.batch_size, channels, "
                   "height and width must all be set and positive (got 4, 1, 0, 0)");
  check_leaks();
}

Test(rules, source_layers) {
  test_source src = {.rec = {.n = 3, .d = {3, 50, 60}}};
  build_opts o = {.phase = CAFFE__PHASE__TEST, .src = &src};
  mdl_graph *g = build_text(
      "layer { name: 'D' type: 'Data' top: 'a' top: 'al' data_param { source: 'db' batch_size: 16 "
      "}\n"
      "  transform_param { crop_size: 32 } }\n"
      "layer { name: 'I' type: 'ImageData' top: 'b' top: 'bl'\n"
      "  image_data_param { source: 'list.txt' batch_size: 8 is_color: false } }\n"
      "layer { name: 'J' type: 'ImageData' top: 'c' top: 'cl'\n"
      "  image_data_param { source: 'list.txt' batch_size: 8 new_height: 32 new_width: 40 } }\n"
      "layer { name: 'W' type: 'WindowData' top: 'w' top: 'wl'\n"
      "  window_data_param { source: 'win.txt' batch_size: 128 }\n"
      "  transform_param { crop_size: 227 } }\n"
      "layer { name: 'H' type: 'HDF5Data' top: 'h' top: 'hl' top: 'hm'\n"
      "  hdf5_data_param { source: 'files.txt' batch_size: 10 } }\n"
      "layer { name: 'O' type: 'HDF5Output' bottom: 'h' bottom: 'hl'\n"
      "  hdf5_output_param { file_name: 'out.h5' } }\n",
      &o);
  expect_shape(g, "a", "16x3x32x32");
  expect_shape(g, "al", "16");
  expect_shape(g, "b", "8x1x50x60");
  expect_shape(g, "c", "8x3x32x40");
  expect_shape(g, "w", "128x3x227x227");
  expect_shape(g, "wl", "128");
  expect_shape(g, "h", "10x3x50x60");
  expect_shape(g, "hm", "10");
  cr_assert_eq(src.calls, 4, "ImageData with new_height/new_width needs no data");
  mdl_graph_free(g);

  /* Datum-like records: D means Dx1x1, HxW means 1xHxW. */
  test_source flat = {.rec = {.n = 1, .d = {5}}};
  build_opts of = {.src = &flat};
  g = build_text(
      "layer { name: 'D' type: 'Data' top: 'a' data_param { source: 'db' batch_size: 4 } }", &of);
  expect_shape(g, "a", "4x5x1x1");
  mdl_graph_free(g);
  test_source hw = {.rec = {.n = 2, .d = {28, 28}}};
  build_opts oh = {.src = &hw};
  g = build_text(
      "layer { name: 'D' type: 'Data' top: 'a' data_param { source: 'db' batch_size: 4 } }", &oh);
  expect_shape(g, "a", "4x1x28x28");
  mdl_graph_free(g);

  const char *m = fail_text(
      "layer { name: 'D' type: 'Data' top: 'a' data_param { source: 'missing_db' batch_size: 4 } }",
      &o);
  cr_assert_str_eq(m, "t.prototxt: layer \"D\" (Data): source \"missing_db\": no such database");
  test_source named = {.rec = {.n = 3, .d = {1, 2, 2}}};
  build_opts on = {.src = &named};
  m = fail_text(
      "layer { name: 'D' type: 'Data' top: 'a'\n"
      "  data_param { source: 'missing_named' batch_size: 4 } }",
      &on);
  cr_assert_str_eq(m, "t.prototxt: layer \"D\": missing_named: no such file");
  m = fail_text("layer { name: 'D' type: 'Data' top: 'a' data_param { source: 'db' } }", &o);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"D\" (Data): data_param.batch_size must be set and "
                   "positive");
  m = fail_text(
      "layer { name: 'D' type: 'Data' top: 'a' data_param { source: 'db' batch_size: 4 }\n"
      "  transform_param { crop_size: 64 } }",
      &o);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"D\" (Data): transform_param.crop_size 64 is larger than "
                   "the 50x60 images of source \"db\"");
  m = fail_text(
      "layer { name: 'I' type: 'ImageData' top: 'b' top: 'bl'\n"
      "  image_data_param { source: 'list.txt' } }",
      NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"I\" (ImageData): the shape of source \"list.txt\" is "
                   "unknown without its data (no data source was given to the compiler)");
  m = fail_text(
      "layer { name: 'W' type: 'WindowData' top: 'w' top: 'wl'\n"
      "  window_data_param { source: 'win.txt' batch_size: 128 } }",
      &o);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"W\" (WindowData): transform_param.crop_size must be set "
                   "and positive");
  m = fail_text(
      "layer { name: 'D' type: 'Data' top: 'a'\n"
      "  data_param { source: 'db' batch_size: 4 crop_size: 24 } }",
      &o);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"D\" (Data): data_param.crop_size is a V1 field that "
                   "Caffe ignores in `layer` nets; use transform_param.crop_size");
  m = fail_text(
      "layer { name: 'D' type: 'Data' top: 'a' top: 'b' top: 'c'\n"
      "  data_param { source: 'db' batch_size: 4 } }",
      &o);
  cr_assert_str_eq(m, "t.prototxt: layer \"D\" (Data): takes 1 to 2 tops, got 3");
  check_leaks();
}

Test(rules, python_not_supported) {
  const char *m = fail_with("2x3",
                            "layer { name: 'py' type: 'Python' bottom: 'in0' top: 'out'\n"
                            "  python_param { module: 'my_layers' layer: 'Custom' } }",
                            NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"py\" (Python): Python layers are not supported "
                   "(python_param module \"my_layers\", layer \"Custom\")");
  check_leaks();
}

/* ---- shape rules: losses and accuracy ---- */

Test(rules, softmax_loss) {
  const char *l =
      "layer { name: 'L' type: 'SoftmaxWithLoss' bottom: 'in0' bottom: 'in1' top: 'out' }";
  cr_assert_str_eq(out_of("2x10 2", l), "scalar");
  cr_assert_str_eq(out_of("2x10x3x3 2x1x3x3", l), "scalar");
  mdl_graph *g = build_with("2x10 2", l, NULL);
  cr_assert_float_eq(layer(g, "L")->loss_weight[0], 1, 0);
  mdl_graph_free(g);
  const char *m = fail_with("2x10x3x3 2x5", l, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (SoftmaxWithLoss): bottom \"in1\" is 2x5 (10 labels) "
                   "but bottom \"in0\" is 2x10x3x3: with softmax axis 1 it needs 18 labels, one "
                   "per position outside that axis");
  m = fail_with("2x10 3", l, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (SoftmaxWithLoss): bottom \"in0\" is 2x10 but bottom "
                   "\"in1\" is 3: the data and the label need the same first axis");
  /* The probabilities as a second top need loss weights for both tops. */
  m = fail_with("2x10 2",
                "layer { name: 'L' type: 'SoftmaxWithLoss' bottom: 'in0' bottom: 'in1' top: 'out'\n"
                "  top: 'prob' }",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (SoftmaxWithLoss): a loss layer's default loss_weight "
                   "covers one top; give loss_weight for each of its 2 tops");
  g = build_with(
      "2x10 2",
      "layer { name: 'L' type: 'SoftmaxWithLoss' bottom: 'in0' bottom: 'in1' top: 'out'\n"
      "  top: 'prob' loss_weight: 1 loss_weight: 0 }",
      NULL);
  expect_shape(g, "prob", "2x10");
  mdl_graph_free(g);
  /* No top: Caffe creates an anonymous one, and so does the graph. */
  g = build_with("2x10 2",
                 "layer { name: 'L' type: 'SoftmaxWithLoss' bottom: 'in0' bottom: 'in1' }\n"
                 "layer { name: 'M' type: 'EuclideanLoss' bottom: 'in0' bottom: 'in0' }\n",
                 NULL);
  cr_assert_eq(layer(g, "L")->n_top, 1);
  cr_assert_eq(layer(g, "L")->param->n_top, 1);
  cr_assert_str_eq(g->blob_name[layer(g, "L")->top[0]], "(automatic)");
  cr_assert_str_eq(g->blob_name[layer(g, "M")->top[0]], "(automatic)");
  cr_assert_neq(layer(g, "L")->top[0], layer(g, "M")->top[0]);
  cr_assert_float_eq(layer(g, "M")->loss_weight[0], 1, 0);
  cr_assert(layer(g, "M")->propagate_down[0] == false);
  mdl_graph_free(g);
  check_leaks();
}

Test(rules, other_losses) {
  cr_assert_str_eq(out_of("2x3 2x3",
                          "layer { name: 'L' type: 'EuclideanLoss' bottom: 'in0'\n"
                          "  bottom: 'in1' top: 'out' }"),
                   "scalar");
  const char *m = fail_with("2x3 2x4",
                            "layer { name: 'L' type: 'EuclideanLoss' bottom: 'in0' bottom: 'in1' "
                            "top: 'out' }",
                            NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (EuclideanLoss): bottom \"in0\" is 2x3 but bottom "
                   "\"in1\" is 2x4: they need the same count per item");
  cr_assert_str_eq(out_of("2x3 2x3",
                          "layer { name: 'L' type: 'SigmoidCrossEntropyLoss'\n"
                          "  bottom: 'in0' bottom: 'in1' top: 'out' }"),
                   "scalar");
  m = fail_with("2x3 2x4",
                "layer { name: 'L' type: 'SigmoidCrossEntropyLoss' bottom: 'in0' bottom: 'in1' "
                "top: 'out' }",
                NULL);
  expect_contains(m, "bottom \"in0\" is 2x3 but bottom \"in1\" is 2x4: they need the same count",
                  NULL);
  const char *c =
      "layer { name: 'L' type: 'ContrastiveLoss' bottom: 'in0' bottom: 'in1'\n"
      "  bottom: 'in2' top: 'out' }";
  cr_assert_str_eq(out_of("2x3 2x3 2", c), "scalar");
  m = fail_with("2x3 2x4 2", c, NULL);
  expect_contains(m, "(ContrastiveLoss): bottom \"in0\" is 2x3 but bottom \"in1\" is 2x4", NULL);
  m = fail_with("2x3 2x3 2x2", c, NULL);
  expect_contains(m, "bottom \"in2\" is 2x2; the similarity labels must be N", NULL);
  cr_assert_str_eq(out_of("2x10 2",
                          "layer { name: 'L' type: 'HingeLoss' bottom: 'in0'\n"
                          "  bottom: 'in1' top: 'out' hinge_loss_param { norm: L2 } }"),
                   "scalar");
  const char *mn =
      "layer { name: 'L' type: 'MultinomialLogisticLoss' bottom: 'in0'\n"
      "  bottom: 'in1' top: 'out' }";
  cr_assert_str_eq(out_of("2x10 2", mn), "scalar");
  m = fail_with("2x10 2x3", mn, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (MultinomialLogisticLoss): bottom \"in1\" is 2x3; the "
                   "labels must be N (x 1 x 1 x 1)");
  const char *ig =
      "layer { name: 'L' type: 'InfogainLoss' bottom: 'in0' bottom: 'in1'\n"
      "  bottom: 'in2' top: 'out' }";
  cr_assert_str_eq(out_of("2x5 2 1x1x5x5", ig), "scalar");
  m = fail_with("2x5 2 1x1x4x4", ig, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (InfogainLoss): bottom \"in2\" is 1x1x4x4 but the "
                   "infogain matrix for the 5 classes of bottom \"in0\" (2x5) needs 5 x 5 values");
  m = fail_with("2x5 2",
                "layer { name: 'L' type: 'InfogainLoss' bottom: 'in0' bottom: 'in1' top: 'out' }",
                NULL);
  expect_contains(m, "infogain_loss_param.source is missing", NULL);
  cr_assert_str_eq(out_of("2x5 2",
                          "layer { name: 'L' type: 'InfogainLoss' bottom: 'in0' bottom: 'in1'\n"
                          "  top: 'out' infogain_loss_param { source: 'h.binaryproto' } }"),
                   "scalar");
  check_leaks();
}

Test(rules, accuracy) {
  const char *a = "layer { name: 'L' type: 'Accuracy' bottom: 'in0' bottom: 'in1' top: 'out' %s }";
  char t[512];
  snprintf(t, sizeof t, a, "accuracy_param { top_k: 5 }");
  cr_assert_str_eq(out_of("2x10 2", t), "scalar");
  mdl_graph *g = build_with("2x10 2",
                            "layer { name: 'L' type: 'Accuracy' bottom: 'in0' bottom: 'in1'\n"
                            "  top: 'out' top: 'per_class' }",
                            NULL);
  expect_shape(g, "per_class", "10");
  cr_assert_float_eq(layer(g, "L")->loss_weight[0], 0, 0);
  mdl_graph_free(g);
  snprintf(t, sizeof t, a, "accuracy_param { top_k: 11 }");
  const char *m = fail_with("2x10 2", t, NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (Accuracy): accuracy_param.top_k 11 exceeds the number "
                   "of classes (bottom \"in0\" is 2x10, bottom \"in1\" is 2)");
  snprintf(t, sizeof t, a, "");
  m = fail_with("2x10 3", t, NULL);
  expect_contains(m,
                  "bottom \"in1\" is 3 (3 labels) but bottom \"in0\" is 2x10: with accuracy axis "
                  "1 it needs 2 labels",
                  NULL);
  check_leaks();
}
