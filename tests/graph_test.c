/* Tests for compiler/graph: the reference nets in tests/nets (published
 * blob and weight shapes), phase filtering, Split insertion names, the V1
 * and net-input upgrades, the backward analysis, weight sharing and the
 * graph's error messages. Shape rules: graph_rules*_test.c. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/graph_test_util.h"

/* ---- shapes ---- */

Test(shape, str_and_count) {
  mdl_shape s = {.n = 4, .d = {64, 128, 28, 28}};
  char buf[64];
  cr_assert_str_eq(mdl_shape_str(&s, buf, sizeof buf), "64x128x28x28");
  cr_assert_eq(mdl_shape_count(&s), 64 * 128 * 28 * 28);
  mdl_shape scalar = {0};
  cr_assert_str_eq(mdl_shape_str(&scalar, buf, sizeof buf), "scalar");
  cr_assert_eq(mdl_shape_count(&scalar), 1);
  cr_assert_str_eq(mdl_shape_str(&s, buf, 6), "64x12");
}

Test(layers, table_lookup) {
  size_t n;
  const mdl_layer_def *t = mdl_layer_table(&n);
  cr_assert_gt(n, 55);
  for (size_t i = 0; i < n; i++) {
    cr_assert_eq(mdl_layer_find(t[i].type), &t[i], "%s", t[i].type);
    cr_assert_not_null(t[i].shape, "%s", t[i].type);
    if (t[i].v1_type >= 0) cr_assert_eq(mdl_layer_find_v1(t[i].v1_type), &t[i]);
  }
  cr_assert_null(mdl_layer_find("Normalize"));
  cr_assert_null(mdl_layer_find(NULL));
  cr_assert_str_eq(mdl_layer_find_v1(CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__SOFTMAX_LOSS)->type,
                   "SoftmaxWithLoss");
  cr_assert(mdl_layer_find("SoftmaxWithLoss")->is_loss);
  cr_assert(!mdl_layer_find("Accuracy")->is_loss);
  cr_assert(mdl_layer_find("ReLU")->in_place_ok);
  cr_assert(!mdl_layer_find("Flatten")->in_place_ok);
  check_leaks();
}

/* The runtime calls the rules directly: counts are checked by
 * mdl_layer_shape, and messages use lp->bottom when no names are given. */
Test(layers, shape_entry_point) {
  Caffe__LayerParameter lp = CAFFE__LAYER_PARAMETER__INIT;
  char *bottoms[] = {"a", "b"};
  lp.name = "fuse";
  lp.type = "Eltwise";
  lp.n_bottom = 2;
  lp.bottom = bottoms;
  mdl_shape in[2] = {{.n = 2, .d = {2, 3}}, {.n = 2, .d = {2, 4}}}, top[1];
  mdl_shape_args a = {.lp = &lp, .n_bottom = 2, .bottom = in, .n_top = 1, .top = top};
  mdl_error err = {0};
  cr_assert_eq(mdl_layer_shape(mdl_layer_find("Eltwise"), &a, &err), MDL_ERR_INVALID);
  cr_assert_str_eq(err.msg,
                   "layer \"fuse\" (Eltwise): bottom \"a\" is 2x3 but bottom \"b\" is 2x4");
  a.n_bottom = 1;
  cr_assert_eq(mdl_layer_shape(mdl_layer_find("Eltwise"), &a, &err), MDL_ERR_INVALID);
  cr_assert_str_eq(err.msg, "layer \"fuse\" (Eltwise): takes at least 2 bottoms, got 1");
  in[1] = in[0];
  a.n_bottom = 2;
  cr_assert_eq(mdl_layer_shape(mdl_layer_find("Eltwise"), &a, &err), MDL_OK);
  cr_assert_eq(top[0].n, 2);
  cr_assert_eq(top[0].d[1], 3);
}

/* ---- reference nets ---- */

Test(nets, lenet) {
  mdl_graph *g = build_file("lenet.prototxt", NULL);
  expect_shape(g, "data", "64x1x28x28");
  expect_shape(g, "conv1", "64x20x24x24");
  expect_shape(g, "pool1", "64x20x12x12");
  expect_shape(g, "conv2", "64x50x8x8");
  expect_shape(g, "pool2", "64x50x4x4");
  expect_shape(g, "ip1", "64x500");
  expect_shape(g, "ip2", "64x10");
  expect_shape(g, "prob", "64x10");
  expect_params(g, "conv1", "20x1x5x5 20");
  expect_params(g, "conv2", "50x20x5x5 50");
  expect_params(g, "ip1", "500x800 500");
  expect_params(g, "ip2", "10x500 10");
  expect_params(g, "relu1", "");
  const mdl_graph_layer *c1 = layer(g, "conv1");
  cr_assert_float_eq(c1->param_lr_mult[0], 1, 0);
  cr_assert_float_eq(c1->param_lr_mult[1], 2, 0);
  cr_assert_float_eq(c1->param_decay_mult[1], 1, 0);
  cr_assert_eq(g->n_layers, 9);
  cr_assert_eq(g->n_inputs, 1);
  cr_assert_str_eq(g->blob_name[g->input_blob[0]], "data");
  cr_assert_eq(g->n_outputs, 1);
  cr_assert_str_eq(g->blob_name[g->output_blob[0]], "prob");
  cr_assert_eq(g->phase, CAFFE__PHASE__TEST);
  /* relu1 runs in place: same blob, created by ip1. */
  const mdl_graph_layer *r = layer(g, "relu1");
  cr_assert_eq(r->top[0], r->bottom[0]);
  cr_assert_eq(g->blob_producer[r->top[0]], mdl_graph_find_layer(g, "ip1"));
  /* No loss: nothing runs backward. */
  for (int i = 0; i < g->n_layers; i++) cr_assert(!g->layers[i].needs_backward);
  mdl_graph_free(g);
  check_leaks();
}

/* The V1 file (input_dim, `layers { type: ENUM }`, blobs_lr) gives the
 * same net as the current format. */
Test(nets, lenet_v1_matches_lenet) {
  mdl_graph *a = build_file("lenet.prototxt", NULL);
  mdl_graph *b = build_file("lenet_v1.prototxt", NULL);
  cr_assert_eq(a->n_layers, b->n_layers);
  cr_assert_eq(a->n_blobs, b->n_blobs);
  for (int i = 0; i < a->n_blobs; i++) {
    char s[128];
    expect_shape(b, a->blob_name[i], mdl_shape_str(&a->blob_shape[i], s, sizeof s));
  }
  for (int i = 1; i < a->n_layers; i++) {
    const mdl_graph_layer *la = &a->layers[i], *lb = layer(b, a->layers[i].param->name);
    cr_assert_str_eq(la->param->type, lb->param->type);
    cr_assert_eq(la->n_param, lb->n_param, "%s", la->param->name);
    for (int k = 0; k < la->n_param; k++) {
      cr_assert_eq(la->param_shape[k].n, lb->param_shape[k].n);
      cr_assert_arr_eq(la->param_shape[k].d, lb->param_shape[k].d,
                       sizeof(int64_t) * (size_t)la->param_shape[k].n);
      cr_assert_float_eq(la->param_lr_mult[k], lb->param_lr_mult[k], 0);
    }
  }
  /* The net-level input became Caffe 1.0's Input layer named "input". */
  cr_assert_str_eq(b->layers[0].param->name, "input");
  cr_assert_str_eq(b->layers[0].param->type, "Input");
  cr_assert_eq(b->n_inputs, 1);
  cr_assert_eq(b->net->n_layers, 0);
  cr_assert_eq(b->net->n_input, 0);
  const mdl_graph_layer *c1 = layer(b, "conv1");
  cr_assert_float_eq(c1->param_decay_mult[0], 1, 0);
  cr_assert_float_eq(c1->param_decay_mult[1], 0, 0);
  cr_assert_str_eq(layer(b, "ip2")->param->param[0]->name, "ip2_w");
  cr_assert_str_eq(layer(b, "ip2")->param->param[1]->name, "ip2_b");
  mdl_graph_free(a);
  mdl_graph_free(b);
  check_leaks();
}

Test(nets, cifar10_quick) {
  mdl_graph *g = build_file("cifar10_quick.prototxt", NULL);
  cr_assert_str_eq(g->layers[0].param->name, "input");
  cr_assert_eq(g->blob_producer[mdl_graph_find_blob(g, "data")], 0);
  expect_shape(g, "data", "1x3x32x32");
  expect_shape(g, "conv1", "1x32x32x32");
  expect_shape(g, "pool1", "1x32x16x16");
  expect_shape(g, "conv2", "1x32x16x16");
  expect_shape(g, "pool2", "1x32x8x8");
  expect_shape(g, "conv3", "1x64x8x8");
  expect_shape(g, "pool3", "1x64x4x4");
  expect_shape(g, "ip1", "1x64");
  expect_shape(g, "prob", "1x10");
  expect_params(g, "conv1", "32x3x5x5 32");
  expect_params(g, "conv3", "64x32x5x5 64");
  expect_params(g, "ip1", "64x1024 64");
  mdl_graph_free(g);
  check_leaks();
}

Test(nets, cifar10_full) {
  mdl_graph *g = build_file("cifar10_full.prototxt", NULL);
  expect_shape(g, "norm1", "1x32x16x16");
  expect_shape(g, "norm2", "1x32x8x8");
  expect_shape(g, "pool3", "1x64x4x4");
  expect_shape(g, "ip1", "1x10");
  expect_params(g, "ip1", "10x1024 10");
  expect_params(g, "norm1", "");
  cr_assert_float_eq(layer(g, "ip1")->param_decay_mult[0], 250, 0);
  cr_assert_float_eq(layer(g, "ip1")->param_decay_mult[1], 0, 0);
  mdl_graph_free(g);
  check_leaks();
}

Test(nets, caffenet) {
  mdl_graph *g = build_file("caffenet.prototxt", NULL);
  expect_shape(g, "conv1", "10x96x55x55");
  expect_shape(g, "pool1", "10x96x27x27");
  expect_shape(g, "conv2", "10x256x27x27");
  expect_shape(g, "pool2", "10x256x13x13");
  expect_shape(g, "conv3", "10x384x13x13");
  expect_shape(g, "conv5", "10x256x13x13");
  expect_shape(g, "pool5", "10x256x6x6");
  expect_shape(g, "fc6", "10x4096");
  expect_shape(g, "fc7", "10x4096");
  expect_shape(g, "prob", "10x1000");
  expect_params(g, "conv1", "96x3x11x11 96");
  expect_params(g, "conv2", "256x48x5x5 256");
  expect_params(g, "conv3", "384x256x3x3 384");
  expect_params(g, "conv4", "384x192x3x3 384");
  expect_params(g, "conv5", "256x192x3x3 256");
  expect_params(g, "fc6", "4096x9216 4096");
  expect_params(g, "fc8", "1000x4096 1000");
  mdl_graph_free(g);
  check_leaks();
}

Test(nets, googlenet_test_phase) {
  mdl_graph *g = build_file("googlenet.prototxt", NULL);
  expect_shape(g, "conv1/7x7_s2", "1x64x112x112");
  expect_shape(g, "pool1/3x3_s2", "1x64x56x56");
  expect_shape(g, "pool2/3x3_s2", "1x192x28x28");
  expect_shape(g, "inception_3a/output", "1x256x28x28");
  expect_shape(g, "inception_3b/output", "1x480x28x28");
  expect_shape(g, "pool3/3x3_s2", "1x480x14x14");
  expect_shape(g, "inception_4a/output", "1x512x14x14");
  expect_shape(g, "inception_4d/output", "1x528x14x14");
  expect_shape(g, "inception_4e/output", "1x832x14x14");
  expect_shape(g, "pool4/3x3_s2", "1x832x7x7");
  expect_shape(g, "inception_5b/output", "1x1024x7x7");
  expect_shape(g, "pool5/7x7_s1", "1x1024x1x1");
  expect_shape(g, "loss3/classifier", "1x1000");
  expect_shape(g, "prob", "1x1000");
  expect_params(g, "inception_3a/3x3", "128x96x3x3 128");
  expect_params(g, "inception_3a/5x5", "32x16x5x5 32");
  expect_params(g, "loss3/classifier", "1000x1024 1000");
  cr_assert_lt(mdl_graph_find_layer(g, "loss1/fc"), 0);
  cr_assert_lt(mdl_graph_find_layer(g, "loss3/loss3"), 0);
  cr_assert_lt(mdl_graph_find_blob(g, "label"), 0);
  /* Four branches read inception_4a/output in TEST. */
  const mdl_graph_layer *sp = layer(g, "inception_4a/output_inception_4a/output_0_split");
  cr_assert_str_eq(sp->param->type, "Split");
  cr_assert_eq(sp->n_top, 4);
  expect_shape(g, "inception_4a/output_inception_4a/output_0_split_3", "1x512x14x14");
  cr_assert_str_eq(layer(g, "inception_4b/1x1")->param->bottom[0],
                   "inception_4a/output_inception_4a/output_0_split_0");
  mdl_graph_free(g);
  check_leaks();
}

Test(nets, googlenet_train_phase) {
  build_opts o = {.phase = CAFFE__PHASE__TRAIN};
  mdl_graph *g = build_file("googlenet.prototxt", &o);
  cr_assert_eq(g->phase, CAFFE__PHASE__TRAIN);
  expect_shape(g, "loss1/ave_pool", "1x512x4x4");
  expect_shape(g, "loss1/conv", "1x128x4x4");
  expect_shape(g, "loss1/fc", "1x1024");
  expect_shape(g, "loss1/loss1", "scalar");
  expect_shape(g, "loss2/ave_pool", "1x528x4x4");
  expect_shape(g, "loss3/loss3", "scalar");
  expect_params(g, "loss1/conv", "128x512x1x1 128");
  expect_params(g, "loss2/conv", "128x528x1x1 128");
  expect_params(g, "loss1/fc", "1024x2048 1024");
  cr_assert_float_eq(layer(g, "loss1/loss")->loss_weight[0], 0.3f, 1e-7);
  cr_assert_float_eq(layer(g, "loss3/loss3")->loss_weight[0], 1, 0);
  cr_assert_lt(mdl_graph_find_layer(g, "prob"), 0);
  /* The auxiliary head is a fifth reader of inception_4a/output, the label
   * is read by three losses. */
  cr_assert_eq(layer(g, "inception_4a/output_inception_4a/output_0_split")->n_top, 5);
  cr_assert_eq(layer(g, "label_label_0_split")->n_top, 3);
  cr_assert_eq(g->n_inputs, 2);
  cr_assert(layer(g, "conv1/7x7_s2")->needs_backward);
  cr_assert(!layer(g, "conv1/7x7_s2")->propagate_down[0]);
  mdl_graph_free(g);
  check_leaks();
}

Test(nets, vgg16) {
  mdl_graph *g = build_file("vgg16.prototxt", NULL);
  expect_shape(g, "conv1_2", "1x64x224x224");
  expect_shape(g, "pool1", "1x64x112x112");
  expect_shape(g, "conv3_3", "1x256x56x56");
  expect_shape(g, "conv5_3", "1x512x14x14");
  expect_shape(g, "pool5", "1x512x7x7");
  expect_shape(g, "fc7", "1x4096");
  expect_shape(g, "prob", "1x1000");
  expect_params(g, "conv1_1", "64x3x3x3 64");
  expect_params(g, "conv4_1", "512x256x3x3 512");
  expect_params(g, "fc6", "4096x25088 4096");
  mdl_graph_free(g);
  check_leaks();
}

Test(nets, resnet50) {
  mdl_graph *g = build_file("resnet50.prototxt", NULL);
  expect_shape(g, "conv1", "1x64x112x112");
  expect_shape(g, "pool1", "1x64x56x56");
  expect_shape(g, "res2c", "1x256x56x56");
  expect_shape(g, "res3a_branch2a", "1x128x28x28");
  expect_shape(g, "res3d", "1x512x28x28");
  expect_shape(g, "res4f", "1x1024x14x14");
  expect_shape(g, "res5c", "1x2048x7x7");
  expect_shape(g, "pool5", "1x2048x1x1");
  expect_shape(g, "fc1000", "1x1000");
  expect_params(g, "conv1", "64x3x7x7");
  expect_params(g, "bn_conv1", "64 64 1");
  expect_params(g, "scale_conv1", "64 64");
  expect_params(g, "res2a_branch2b", "64x64x3x3");
  expect_params(g, "res5a_branch1", "2048x1024x1x1");
  expect_params(g, "bn5c_branch2c", "2048 2048 1");
  expect_params(g, "fc1000", "1000x2048 1000");
  /* BatchNorm statistics are frozen as Caffe freezes them. */
  for (int k = 0; k < 3; k++) cr_assert_float_eq(layer(g, "bn_conv1")->param_lr_mult[k], 0, 0);
  /* pool1 feeds both branches of res2a. */
  const mdl_graph_layer *sp = layer(g, "pool1_pool1_0_split");
  cr_assert_eq(sp->n_top, 2);
  cr_assert_str_eq(layer(g, "res2a_branch1")->param->bottom[0], "pool1_pool1_0_split_0");
  cr_assert_str_eq(layer(g, "res2a_branch2a")->param->bottom[0], "pool1_pool1_0_split_1");
  /* The identity shortcut of res2b reads res2a after its in-place ReLU. */
  cr_assert_not_null(layer(g, "res2a_res2a_relu_0_split"));
  mdl_graph_free(g);
  check_leaks();
}

Test(nets, squeezenet1_1) {
  mdl_graph *g = build_file("squeezenet1_1.prototxt", NULL);
  expect_shape(g, "conv1", "1x64x111x111");
  expect_shape(g, "pool1", "1x64x55x55");
  expect_shape(g, "fire2/concat", "1x128x55x55");
  expect_shape(g, "pool3", "1x128x27x27");
  expect_shape(g, "pool5", "1x256x13x13");
  expect_shape(g, "fire9/concat", "1x512x13x13");
  expect_shape(g, "conv10", "1x1000x13x13");
  expect_shape(g, "pool10", "1x1000x1x1");
  expect_params(g, "fire2/squeeze1x1", "16x64x1x1 16");
  expect_params(g, "fire2/expand3x3", "64x16x3x3 64");
  expect_params(g, "fire9/expand1x1", "256x64x1x1 256");
  expect_params(g, "conv10", "1000x512x1x1 1000");
  mdl_graph_free(g);
  check_leaks();
}

/* The published 227x227 deploy input gives 14x14 at fire9: Caffe's pooling
 * rounds up (113 -> 56 -> 28 -> 14). */
Test(nets, squeezenet1_1_at_227) {
  Caffe__NetParameter *n = load_net("squeezenet1_1.prototxt");
  n->layer[0]->input_param->shape[0]->dim[2] = 227;
  n->layer[0]->input_param->shape[0]->dim[3] = 227;
  mdl_graph *g = build_net(n, NULL);
  expect_shape(g, "conv1", "1x64x113x113");
  expect_shape(g, "pool1", "1x64x56x56");
  expect_shape(g, "pool3", "1x128x28x28");
  expect_shape(g, "fire9/concat", "1x512x14x14");
  mdl_graph_free(g);
  free_net(n);
  check_leaks();
}

Test(nets, mobilenet_v1) {
  mdl_graph *g = build_file("mobilenet_v1.prototxt", NULL);
  expect_shape(g, "conv1", "1x32x112x112");
  expect_shape(g, "conv2_1/dw", "1x32x112x112");
  expect_shape(g, "conv2_2/dw", "1x64x56x56");
  expect_shape(g, "conv4_2/sep", "1x512x14x14");
  expect_shape(g, "conv5_6/dw", "1x512x7x7");
  expect_shape(g, "conv5_6/sep", "1x1024x7x7");
  expect_shape(g, "conv6/sep", "1x1024x7x7");
  expect_shape(g, "pool6", "1x1024x1x1");
  expect_shape(g, "fc7", "1x1000x1x1");
  expect_params(g, "conv2_1/dw", "32x1x3x3");
  expect_params(g, "conv5_6/dw", "512x1x3x3");
  expect_params(g, "conv5_6/sep", "1024x512x1x1");
  expect_params(g, "conv5_6/sep/bn", "1024 1024 1");
  expect_params(g, "fc7", "1000x1024x1x1 1000");
  mdl_graph_free(g);
  check_leaks();
}

Test(nets, train_test_phases) {
  test_source src = {.rec = {.n = 3, .d = {1, 28, 28}}};
  build_opts train = {.phase = CAFFE__PHASE__TRAIN, .src = &src};
  mdl_graph *g = build_file("lenet_train_test.prototxt", &train);
  expect_shape(g, "data", "64x1x28x28");
  expect_shape(g, "label", "64");
  expect_shape(g, "ip2", "64x10");
  expect_shape(g, "loss", "scalar");
  cr_assert_lt(mdl_graph_find_layer(g, "accuracy"), 0);
  cr_assert_eq(src.calls, 1);
  cr_assert_eq(g->n_inputs, 0);
  const mdl_graph_layer *loss = layer(g, "loss");
  cr_assert_float_eq(loss->loss_weight[0], 1, 0);
  cr_assert(loss->needs_backward);
  cr_assert(loss->propagate_down[0]);
  cr_assert(!loss->propagate_down[1]);
  cr_assert(layer(g, "conv1")->needs_backward);
  cr_assert(!layer(g, "conv1")->propagate_down[0]);
  cr_assert(layer(g, "conv2")->propagate_down[0]);
  cr_assert(!layer(g, "mnist")->needs_backward);
  cr_assert_eq(g->layers[0].param->phase, CAFFE__PHASE__TRAIN);
  mdl_graph_free(g);

  build_opts test = {.phase = CAFFE__PHASE__TEST, .src = &src};
  g = build_file("lenet_train_test.prototxt", &test);
  expect_shape(g, "data", "100x1x28x28");
  expect_shape(g, "accuracy", "scalar");
  /* ip2 and label each feed accuracy and loss. */
  cr_assert_str_eq(layer(g, "accuracy")->param->bottom[0], "ip2_ip2_0_split_0");
  cr_assert_str_eq(layer(g, "accuracy")->param->bottom[1], "label_mnist_1_split_0");
  cr_assert_str_eq(layer(g, "loss")->param->bottom[0], "ip2_ip2_0_split_1");
  cr_assert_str_eq(layer(g, "loss")->param->bottom[1], "label_mnist_1_split_1");
  cr_assert(!layer(g, "accuracy")->needs_backward);
  cr_assert_float_eq(layer(g, "accuracy")->loss_weight[0], 0, 0);
  cr_assert_eq(g->n_outputs, 2);
  mdl_graph_free(g);
  check_leaks();
}

Test(nets, data_without_resolver) {
  Caffe__NetParameter *n = load_net("lenet_train_test.prototxt");
  mdl_error err = {0};
  mdl_graph *g = NULL;
  build_opts o = {.phase = CAFFE__PHASE__TRAIN};
  cr_assert_eq(try_build_net(n, &o, &g, &err), MDL_ERR_INVALID);
  cr_assert_str_eq(err.msg,
                   "t.prototxt: layer \"mnist\" (Data): the shape of source "
                   "\"examples/mnist/mnist_train_lmdb\" is unknown without its data (no data "
                   "source was given to the compiler)");
  free_net(n);
  check_leaks();
}

/* ---- phase filtering (Caffe's FilterNet / StateMeetsRule) ---- */

static const char *k_rules =
    "layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 3 } } }\n"
    "layer { name: 'train' type: 'ReLU' bottom: 'x' top: 'a' include { phase: TRAIN } }\n"
    "layer { name: 'test' type: 'ReLU' bottom: 'x' top: 'b' include { phase: TEST } }\n"
    "layer { name: 'not_test' type: 'ReLU' bottom: 'x' top: 'c' exclude { phase: TEST } }\n"
    "layer { name: 'lvl' type: 'ReLU' bottom: 'x' top: 'd' include { min_level: 1 max_level: 2 } "
    "}\n"
    "layer { name: 'lvl_hi' type: 'ReLU' bottom: 'x' top: 'e' include { min_level: 3 } }\n"
    "layer { name: 'stg' type: 'ReLU' bottom: 'x' top: 'f' include { stage: 'deploy' } }\n"
    "layer { name: 'stg2' type: 'ReLU' bottom: 'x' top: 'g'\n"
    "        include { stage: 'deploy' stage: 'fast' } }\n"
    "layer { name: 'nstg' type: 'ReLU' bottom: 'x' top: 'h' include { not_stage: 'deploy' } }\n"
    "layer { name: 'either' type: 'ReLU' bottom: 'x' top: 'i'\n"
    "        include { phase: TRAIN } include { stage: 'fast' } }\n"
    "layer { name: 'ex_lvl' type: 'ReLU' bottom: 'x' top: 'j' exclude { max_level: 0 } }\n"
    "layer { name: 'train_deploy' type: 'ReLU' bottom: 'x' top: 'k'\n"
    "        include { phase: TRAIN stage: 'deploy' } }\n";

/* Which of the rule layers a state keeps, as a space-separated list. */
static const char *kept(const build_opts *o) {
  static char buf[256];
  mdl_graph *g = build_text(k_rules, o);
  buf[0] = '\0';
  for (int i = 0; i < g->n_layers; i++) {
    const char *name = g->layers[i].param->name;
    if (strcmp(g->layers[i].param->type, "ReLU") != 0) continue;
    if (buf[0]) strcat(buf, " ");
    strcat(buf, name);
  }
  mdl_graph_free(g);
  return buf;
}

Test(filter, phase) {
  build_opts train = {.phase = CAFFE__PHASE__TRAIN};
  build_opts test = {.phase = CAFFE__PHASE__TEST};
  cr_assert_str_eq(kept(&train), "train not_test nstg either");
  cr_assert_str_eq(kept(&test), "test nstg");
  check_leaks();
}

Test(filter, levels) {
  build_opts o = {.phase = CAFFE__PHASE__TEST, .level = 1};
  cr_assert_str_eq(kept(&o), "test lvl nstg ex_lvl");
  o.level = 2;
  cr_assert_str_eq(kept(&o), "test lvl nstg ex_lvl");
  o.level = 3;
  cr_assert_str_eq(kept(&o), "test lvl_hi nstg ex_lvl");
  o.level = -1;
  cr_assert_str_eq(kept(&o), "test nstg");
  check_leaks();
}

Test(filter, stages) {
  build_opts o = {.phase = CAFFE__PHASE__TEST, .stages = {"deploy"}};
  cr_assert_str_eq(kept(&o), "test stg");
  build_opts both = {.phase = CAFFE__PHASE__TEST, .stages = {"fast", "deploy"}};
  cr_assert_str_eq(kept(&both), "test stg stg2 either");
  build_opts fast = {.phase = CAFFE__PHASE__TEST, .stages = {"fast"}};
  cr_assert_str_eq(kept(&fast), "test nstg either");
  build_opts train = {.phase = CAFFE__PHASE__TRAIN, .stages = {"deploy"}};
  cr_assert_str_eq(kept(&train), "train not_test stg either train_deploy");
  check_leaks();
}

/* With no state from the caller the net's own `state` applies, else TEST. */
Test(filter, net_state_default) {
  build_opts o = {.use_net_state = true};
  cr_assert_str_eq(kept(&o), "test nstg");
  char *t = malloc(strlen(k_rules) + 100);
  sprintf(t, "state { phase: TRAIN level: 3 }\n%s", k_rules);
  mdl_graph *g = build_text(t, &o);
  free(t);
  cr_assert_eq(g->phase, CAFFE__PHASE__TRAIN);
  cr_assert_geq(mdl_graph_find_layer(g, "lvl_hi"), 0);
  cr_assert_geq(mdl_graph_find_layer(g, "train"), 0);
  cr_assert_lt(mdl_graph_find_layer(g, "test"), 0);
  /* The resolved net records the state it was built for. */
  cr_assert_eq(g->net->state->phase, CAFFE__PHASE__TRAIN);
  cr_assert_eq(g->net->state->level, 3);
  mdl_graph_free(g);
  check_leaks();
}

Test(filter, include_and_exclude_is_error) {
  const char *m = fail_with("2x3",
                            "layer { name: 'r' type: 'ReLU' bottom: 'in0' top: 'r'\n"
                            "  include { phase: TRAIN } exclude { phase: TEST } }",
                            NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"r\" (ReLU): give include rules or exclude rules, not "
                   "both");
  /* ... also after layers the rules dropped (each freed once). */
  m = fail_with("2x3",
                "layer { name: 'a' type: 'ReLU' bottom: 'in0' top: 'a' include { phase: TRAIN } }\n"
                "layer { name: 'b' type: 'ReLU' bottom: 'in0' top: 'b' }\n"
                "layer { name: 'r' type: 'ReLU' bottom: 'in0' top: 'r'\n"
                "  include { phase: TRAIN } exclude { phase: TEST } }\n"
                "layer { name: 'c' type: 'ReLU' bottom: 'in0' top: 'c' }",
                NULL);
  expect_contains(m, "layer \"r\" (ReLU): give include rules", NULL);
  check_leaks();
}

Test(filter, bottom_of_filtered_layer) {
  const char *m = fail_text(
      "layer { name: 'in' type: 'Input' top: 'x' include { phase: TRAIN }\n"
      "  input_param { shape { dim: 2 } } }\n"
      "layer { name: 'r' type: 'ReLU' bottom: 'x' top: 'y' }\n",
      NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"r\" (ReLU): bottom \"x\" comes from layer \"in\", which "
                   "the include/exclude rules leave out of the TEST net");
  check_leaks();
}

/* ---- Split insertion (Caffe's InsertSplits naming) ---- */

Test(splits, names_and_wiring) {
  mdl_graph *g = build_text(
      "layer { name: 'src' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 3 } } }\n"
      "layer { name: 'a' type: 'ReLU' bottom: 'x' top: 'a' }\n"
      "layer { name: 'b' type: 'TanH' bottom: 'x' top: 'b' }\n"
      "layer { name: 'c' type: 'Eltwise' bottom: 'x' bottom: 'a' top: 'c' }\n",
      NULL);
  cr_assert_eq(g->n_layers, 5);
  const mdl_graph_layer *sp = &g->layers[1];
  cr_assert_str_eq(sp->param->name, "x_src_0_split");
  cr_assert_str_eq(sp->param->type, "Split");
  cr_assert_str_eq(sp->param->bottom[0], "x");
  cr_assert_eq(sp->n_top, 3);
  cr_assert_str_eq(sp->param->top[0], "x_src_0_split_0");
  cr_assert_str_eq(sp->param->top[2], "x_src_0_split_2");
  cr_assert_str_eq(layer(g, "a")->param->bottom[0], "x_src_0_split_0");
  cr_assert_str_eq(layer(g, "b")->param->bottom[0], "x_src_0_split_1");
  cr_assert_str_eq(layer(g, "c")->param->bottom[0], "x_src_0_split_2");
  /* a is read by c only: no split. */
  cr_assert_str_eq(layer(g, "c")->param->bottom[1], "a");
  expect_shape(g, "x_src_0_split_1", "2x3");
  cr_assert_eq(sp->def, mdl_layer_find("Split"));
  cr_assert_eq(g->blob_producer[mdl_graph_find_blob(g, "x_src_0_split_1")], 1);
  mdl_graph_free(g);
  check_leaks();
}

/* After an in-place layer the split is named after it, and a later top
 * index shows in the name. */
Test(splits, in_place_and_top_index) {
  mdl_graph *g = build_text(
      "layer { name: 'src' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 4 } } }\n"
      "layer { name: 'relu' type: 'ReLU' bottom: 'x' top: 'x' }\n"
      "layer { name: 'sl' type: 'Slice' bottom: 'x' top: 'p' top: 'q' }\n"
      "layer { name: 'u' type: 'TanH' bottom: 'q' top: 'u' }\n"
      "layer { name: 'v' type: 'TanH' bottom: 'q' top: 'v' }\n"
      "layer { name: 'w' type: 'TanH' bottom: 'x' top: 'w' }\n",
      NULL);
  cr_assert_str_eq(layer(g, "sl")->param->bottom[0], "x_relu_0_split_0");
  cr_assert_str_eq(layer(g, "w")->param->bottom[0], "x_relu_0_split_1");
  cr_assert_str_eq(layer(g, "u")->param->bottom[0], "q_sl_1_split_0");
  cr_assert_str_eq(layer(g, "v")->param->bottom[0], "q_sl_1_split_1");
  cr_assert_not_null(layer(g, "q_sl_1_split"));
  expect_shape(g, "q_sl_1_split_1", "2x2");
  mdl_graph_free(g);
  check_leaks();
}

/* A top with a loss weight that another layer also reads: the split carries
 * the weight on its first top, the producer's weights are cleared. */
Test(splits, loss_weight_moves_to_split) {
  mdl_graph *g = build_text(
      "layer { name: 'src' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 4 } } }\n"
      "layer { name: 'ip' type: 'InnerProduct' bottom: 'x' top: 'ip' loss_weight: 2\n"
      "  inner_product_param { num_output: 3 } }\n"
      "layer { name: 't' type: 'TanH' bottom: 'ip' top: 't' }\n",
      NULL);
  const mdl_graph_layer *ip = layer(g, "ip"), *sp = layer(g, "ip_ip_0_split");
  cr_assert_eq(ip->param->n_loss_weight, 0);
  cr_assert_float_eq(ip->loss_weight[0], 0, 0);
  cr_assert_eq(sp->n_top, 2);
  cr_assert_float_eq(sp->loss_weight[0], 2, 0);
  cr_assert_float_eq(sp->loss_weight[1], 0, 0);
  cr_assert_str_eq(layer(g, "t")->param->bottom[0], "ip_ip_0_split_1");
  cr_assert(ip->needs_backward);
  mdl_graph_free(g);
  check_leaks();
}

/* The resolved net, built again, gives the same graph (workers rebuild it
 * from the plan). */
Test(splits, rebuild_is_stable) {
  build_opts o = {.phase = CAFFE__PHASE__TRAIN};
  mdl_graph *a = build_file("googlenet.prototxt", &o);
  build_opts again = {.use_net_state = true};
  mdl_graph *b = build_net(a->net, &again);
  cr_assert_eq(a->n_layers, b->n_layers);
  cr_assert_eq(a->n_blobs, b->n_blobs);
  for (int i = 0; i < a->n_blobs; i++) {
    cr_assert_str_eq(a->blob_name[i], b->blob_name[i]);
    cr_assert_eq(mdl_shape_count(&a->blob_shape[i]), mdl_shape_count(&b->blob_shape[i]));
  }
  mdl_graph_free(a);
  mdl_graph_free(b);
  check_leaks();
}

/* ---- upgrades ---- */

Test(upgrade, v1_fields) {
  test_source src = {.rec = {.n = 3, .d = {3, 32, 32}}};
  build_opts o = {.phase = CAFFE__PHASE__TRAIN, .src = &src};
  mdl_graph *g = build_text(
      "layers { name: 'd' type: DATA top: 'data' top: 'label' include { phase: TRAIN }\n"
      "  data_param { source: 'db' batch_size: 8 crop_size: 24 mirror: true scale: 0.5 } }\n"
      "layers { name: 'c' type: CONVOLUTION bottom: 'data' top: 'c' blobs_lr: 1 blobs_lr: 2\n"
      "  weight_decay: 1 weight_decay: 0 param: 'cw' blob_share_mode: PERMISSIVE\n"
      "  convolution_param { num_output: 4 kernel_size: 3 } }\n"
      "layers { name: 'ip' type: INNER_PRODUCT bottom: 'c' top: 'ip'\n"
      "  inner_product_param { num_output: 10 } }\n"
      "layers { name: 'loss' type: SOFTMAX_LOSS bottom: 'ip' bottom: 'label' top: 'loss'\n"
      "  loss_weight: 0.5 }\n"
      "layers { name: 'acc' type: ACCURACY bottom: 'ip' bottom: 'label' top: 'acc'\n"
      "  exclude { phase: TRAIN } }\n",
      &o);
  /* The legacy crop moved to transform_param (Caffe's data upgrade). */
  expect_shape(g, "data", "8x3x24x24");
  const Caffe__LayerParameter *d = layer(g, "d")->param;
  cr_assert_str_eq(d->type, "Data");
  cr_assert_eq(d->transform_param->crop_size, 24);
  cr_assert(d->transform_param->mirror);
  cr_assert_float_eq(d->transform_param->scale, 0.5f, 0);
  cr_assert(!d->data_param->has_crop_size);
  cr_assert_eq(d->n_include, 1);
  const mdl_graph_layer *c = layer(g, "c");
  cr_assert_str_eq(c->param->type, "Convolution");
  cr_assert_eq(c->param->n_param, 2);
  cr_assert_str_eq(c->param->param[0]->name, "cw");
  cr_assert_eq(c->param->param[0]->share_mode, CAFFE__PARAM_SPEC__DIM_CHECK_MODE__PERMISSIVE);
  cr_assert_float_eq(c->param_lr_mult[1], 2, 0);
  cr_assert_float_eq(c->param_decay_mult[1], 0, 0);
  expect_params(g, "c", "4x3x3x3 4");
  cr_assert_str_eq(layer(g, "loss")->param->type, "SoftmaxWithLoss");
  cr_assert_float_eq(layer(g, "loss")->loss_weight[0], 0.5f, 0);
  cr_assert_lt(mdl_graph_find_layer(g, "acc"), 0);
  mdl_graph_free(g);
  check_leaks();
}

Test(upgrade, v1_errors) {
  const char *m = fail_text(
      "layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: 1 } } }\n"
      "layers { name: 'r' type: RELU bottom: 'x' top: 'x' }\n",
      NULL);
  expect_contains(m, "t.prototxt: the net mixes `layer", "legacy `layers", NULL);
  m = fail_text("layers { name: 'old' layer { name: 'old' type: 'conv' } }\n", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layers entry 0 (\"old\") holds a V0 `layer { }` definition; the "
                   "V0 format is not supported (upgrade it with Caffe's upgrade_net_proto_text)");
  m = fail_text("layers { name: 'n' type: NONE }\n", NULL);
  cr_assert_str_eq(m, "t.prototxt: layers entry 0 (\"n\") has no type");
  check_leaks();
}

Test(upgrade, net_inputs) {
  mdl_graph *g = build_text(
      "input: 'a' input_shape { dim: 2 dim: 3 }\n"
      "input: 'b' input_shape { dim: 2 dim: 3 }\n"
      "layer { name: 's' type: 'Eltwise' bottom: 'a' bottom: 'b' bottom: 'a' top: 's' }\n",
      NULL);
  cr_assert_eq(g->n_inputs, 2);
  cr_assert_str_eq(g->blob_name[g->input_blob[1]], "b");
  expect_shape(g, "s", "2x3");
  /* a is read twice: split named after the upgraded layer "input". */
  cr_assert_str_eq(layer(g, "s")->param->bottom[2], "a_input_0_split_1");
  mdl_graph_free(g);

  const char *m = fail_text("input: 'a' input_dim: 1 input_dim: 2 input_dim: 3\n", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: the net has 1 inputs but 3 input_dim values; give 4 (N, C, H, W) "
                   "per input");
  m = fail_text("input: 'a'\n", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: input \"a\" has no shape; give input_shape, or 4 input_dim "
                   "values (N, C, H, W) per input");
  m = fail_text(
      "input: 'a' input_shape { dim: 1 } input_dim: 1 input_dim: 1 input_dim: 1 "
      "input_dim: 1\n",
      NULL);
  cr_assert_str_eq(m, "t.prototxt: the net gives both input_shape and input_dim; give one of them");
  m = fail_text("input: 'a' input: 'b' input_shape { dim: 1 }\n", NULL);
  cr_assert_str_eq(m, "t.prototxt: the net has 2 inputs but 1 input_shape entries");
  check_leaks();
}

/* Old files declare BatchNorm's three blobs with lr_mult 0 and any
 * decay_mult; Caffe's upgrade zeroes both. */
Test(upgrade, batch_norm_param_specs) {
  mdl_graph *g = build_with("2x3x4x4",
                            "layer { name: 'L' type: 'BatchNorm' bottom: 'in0' top: 'out'\n"
                            "  param { lr_mult: 0 decay_mult: 1 } param { lr_mult: 0 }\n"
                            "  param { lr_mult: 0 } }",
                            NULL);
  for (int k = 0; k < 3; k++) cr_assert_float_eq(layer(g, "L")->param_decay_mult[k], 0, 0);
  mdl_graph_free(g);
  const char *m = fail_with("2x3x4x4",
                            "layer { name: 'L' type: 'BatchNorm' bottom: 'in0' top: 'out'\n"
                            "  param { lr_mult: 1 } }",
                            NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"L\" (BatchNorm): param 0 has lr_mult 1; BatchNorm's "
                   "statistics cannot be learned (lr_mult must be 0)");
  check_leaks();
}

/* ---- backward analysis (Caffe's Net::Init) ---- */

static const char *k_small_train =
    "layer { name: 'in' type: 'Input' top: 'x' top: 'y'\n"
    "  input_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 } } }\n"
    "layer { name: 'c1' type: 'Convolution' bottom: 'x' top: 'c1' %s\n"
    "  convolution_param { num_output: 2 kernel_size: 3 } }\n"
    "layer { name: 'p1' type: 'Pooling' bottom: 'c1' top: 'p1'\n"
    "  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
    "layer { name: 'ip' type: 'InnerProduct' bottom: 'p1' top: 'ip' %s\n"
    "  inner_product_param { num_output: 5 } }\n"
    "layer { name: 'acc' type: 'Accuracy' bottom: 'ip' bottom: 'y' top: 'acc' }\n"
    "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'ip' bottom: 'y' top: 'loss' }\n";

static mdl_graph *small_train(const char *c1_extra, const char *ip_extra, const char *prefix) {
  char t[4096];
  int n = snprintf(t, sizeof t, "%s", prefix ? prefix : "");
  snprintf(t + n, sizeof t - (size_t)n, k_small_train, c1_extra, ip_extra);
  build_opts o = {.phase = CAFFE__PHASE__TRAIN};
  return build_text(t, &o);
}

Test(backward, plain) {
  mdl_graph *g = small_train("", "", NULL);
  cr_assert(!layer(g, "in")->needs_backward);
  cr_assert(layer(g, "c1")->needs_backward);
  cr_assert(!layer(g, "c1")->propagate_down[0]);
  cr_assert(layer(g, "p1")->needs_backward);
  cr_assert(layer(g, "p1")->propagate_down[0]);
  cr_assert(layer(g, "ip")->propagate_down[0]);
  cr_assert(layer(g, "ip")->param_propagate_down[0]);
  cr_assert(!layer(g, "acc")->needs_backward);
  cr_assert(!layer(g, "acc")->propagate_down[0]);
  cr_assert(layer(g, "loss")->needs_backward);
  cr_assert(layer(g, "loss")->propagate_down[0]);
  cr_assert(!layer(g, "loss")->propagate_down[1]);
  mdl_graph_free(g);
  check_leaks();
}

/* Frozen first layer: nothing below ip needs a gradient. */
Test(backward, lr_mult_zero) {
  mdl_graph *g = small_train("param { lr_mult: 0 } param { lr_mult: 0 }", "", NULL);
  cr_assert(!layer(g, "c1")->needs_backward);
  cr_assert(!layer(g, "c1")->param_propagate_down[0]);
  cr_assert_float_eq(layer(g, "c1")->param_lr_mult[0], 0, 0);
  cr_assert(!layer(g, "p1")->needs_backward);
  cr_assert(layer(g, "ip")->needs_backward);
  cr_assert(!layer(g, "ip")->propagate_down[0]);
  mdl_graph_free(g);
  check_leaks();
}

/* propagate_down: false on ip's bottom cuts the chain below it. */
Test(backward, propagate_down_false) {
  mdl_graph *g = small_train("", "propagate_down: false", NULL);
  cr_assert(layer(g, "ip")->needs_backward);
  cr_assert(!layer(g, "ip")->propagate_down[0]);
  cr_assert(!layer(g, "p1")->needs_backward);
  cr_assert(!layer(g, "c1")->needs_backward);
  mdl_graph_free(g);
  check_leaks();
}

Test(backward, force_backward) {
  mdl_graph *g =
      small_train("param { lr_mult: 0 } param { lr_mult: 0 }", "", "force_backward: true\n");
  cr_assert(layer(g, "c1")->needs_backward);
  cr_assert(layer(g, "c1")->propagate_down[0]);
  cr_assert(layer(g, "c1")->param_propagate_down[0]);
  cr_assert(layer(g, "loss")->propagate_down[0]);
  cr_assert(!layer(g, "loss")->propagate_down[1], "labels never get a gradient");
  cr_assert(!layer(g, "acc")->propagate_down[0]);
  mdl_graph_free(g);
  check_leaks();
}

Test(backward, test_phase_deploy_has_none) {
  build_opts o = {.phase = CAFFE__PHASE__TEST};
  char t[4096];
  snprintf(t, sizeof t, k_small_train, "", "");
  mdl_graph *g = build_text(t, &o);
  /* The graph does not depend on the phase here: the loss is still there. */
  cr_assert(layer(g, "c1")->needs_backward);
  mdl_graph_free(g);
  g = build_file("resnet50.prototxt", NULL);
  for (int i = 0; i < g->n_layers; i++) cr_assert(!g->layers[i].needs_backward);
  mdl_graph_free(g);
  check_leaks();
}

/* ---- weight sharing ---- */

Test(params, sharing) {
  mdl_graph *g =
      build_with("2x4 2x4",
                 "layer { name: 'a' type: 'InnerProduct' bottom: 'in0' top: 'a'\n"
                 "  param { name: 'w' lr_mult: 3 } inner_product_param { num_output: 5 } }\n"
                 "layer { name: 'b' type: 'InnerProduct' bottom: 'in1' top: 'b'\n"
                 "  param { name: 'w' } inner_product_param { num_output: 5 } }\n",
                 NULL);
  const mdl_graph_layer *b = layer(g, "b");
  cr_assert_eq(b->param_owner_layer[0], mdl_graph_find_layer(g, "a"));
  cr_assert_eq(b->param_owner_index[0], 0);
  cr_assert_eq(b->param_owner_layer[1], mdl_graph_find_layer(g, "b"));
  cr_assert_eq(b->param_owner_index[1], 1);
  mdl_graph_free(g);

  /* PERMISSIVE only needs equal counts. */
  g = build_with("2x4 2x10",
                 "layer { name: 'a' type: 'InnerProduct' bottom: 'in0' top: 'a'\n"
                 "  param { name: 'w' } inner_product_param { num_output: 5 } }\n"
                 "layer { name: 'b' type: 'InnerProduct' bottom: 'in1' top: 'b'\n"
                 "  param { name: 'w' share_mode: PERMISSIVE }\n"
                 "  inner_product_param { num_output: 2 } }\n",
                 NULL);
  cr_assert_eq(layer(g, "b")->param_owner_layer[0], mdl_graph_find_layer(g, "a"));
  mdl_graph_free(g);

  const char *m = fail_with("2x4 2x6",
                            "layer { name: 'a' type: 'InnerProduct' bottom: 'in0' top: 'a'\n"
                            "  param { name: 'w' } inner_product_param { num_output: 5 } }\n"
                            "layer { name: 'b' type: 'InnerProduct' bottom: 'in1' top: 'b'\n"
                            "  param { name: 'w' } inner_product_param { num_output: 5 } }\n",
                            NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"b\" (InnerProduct): cannot share param \"w\" with layer "
                   "\"a\": it is 5x4 there and 5x6 here");
  m = fail_with("2x4 2x4",
                "layer { name: 'a' type: 'InnerProduct' bottom: 'in0' top: 'a'\n"
                "  param { name: 'w' lr_mult: 1 } inner_product_param { num_output: 5 } }\n"
                "layer { name: 'b' type: 'InnerProduct' bottom: 'in1' top: 'b'\n"
                "  param { name: 'w' lr_mult: 2 } inner_product_param { num_output: 5 } }\n",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"b\" (InnerProduct): shared param \"w\" has lr_mult 2 "
                   "here but 1 in layer \"a\"");
  check_leaks();
}

Test(params, counts_and_stored_blobs) {
  const char *m =
      fail_with("2x3", "layer { name: 'r' type: 'ReLU' bottom: 'in0' top: 'r' param { } }", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"r\" (ReLU): has 1 param entries but only 0 learnable "
                   "blobs");
  m = fail_with("2x3",
                "layer { name: 'ip' type: 'InnerProduct' bottom: 'in0' top: 'ip'\n"
                "  blobs { shape { dim: 4 dim: 3 } } blobs { shape { dim: 5 } }\n"
                "  inner_product_param { num_output: 5 } }",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"ip\" (InnerProduct): stored blob 0 is 4x3 but the layer "
                   "needs 5x3");
  /* Legacy 4-axis blobs compare as N, C, H, W. */
  mdl_graph *g = build_with("2x3",
                            "layer { name: 'ip' type: 'InnerProduct' bottom: 'in0' top: 'ip'\n"
                            "  blobs { num: 1 channels: 1 height: 5 width: 3 }\n"
                            "  blobs { num: 1 channels: 1 height: 1 width: 5 }\n"
                            "  inner_product_param { num_output: 5 } }",
                            NULL);
  mdl_graph_free(g);
  m = fail_with("2x3",
                "layer { name: 'ip' type: 'InnerProduct' bottom: 'in0' top: 'ip'\n"
                "  blobs { shape { dim: 5 dim: 3 } } inner_product_param { num_output: 5 } }",
                NULL);
  cr_assert_str_eq(m, "t.prototxt: layer \"ip\" (InnerProduct): stores 1 blobs but needs 2");
  check_leaks();
}

/* ---- graph errors ---- */

Test(errors, unknown_type) {
  const char *m = fail_with("2x3x8x8",
                            "layer { name: 'c' type: 'Convolutoin' bottom: 'in0' top: 'c'\n"
                            "  convolution_param { num_output: 2 kernel_size: 3 } }",
                            NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"c\" (Convolutoin): unknown layer type \"Convolutoin\"; "
                   "did you mean \"Convolution\"?");
  m = fail_with("2x3", "layer { name: 'f' type: 'Frobnicator' bottom: 'in0' top: 'f' }", NULL);
  expect_contains(m,
                  "layer \"f\" (Frobnicator): unknown layer type \"Frobnicator\"; known types: "
                  "AbsVal, Accuracy, ArgMax,",
                  "Convolution", "WindowData", NULL);
  m = fail_with("2x3", "layer { name: 'f' bottom: 'in0' top: 'f' }", NULL);
  expect_contains(m, "layer \"f\" (): the layer has no type; known types: AbsVal", NULL);
  check_leaks();
}

Test(errors, unknown_bottom) {
  const char *m =
      fail_with("2x3x8x8",
                "layer { name: 'pool1' type: 'Pooling' bottom: 'in0' top: 'pool1'\n"
                "  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
                "layer { name: 'conv2' type: 'Convolution' bottom: 'pool' top: 'conv2'\n"
                "  convolution_param { num_output: 2 kernel_size: 3 } }",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"conv2\" (Convolution): bottom \"pool\" is not produced by "
                   "any earlier layer; did you mean \"pool1\"?");
  m = fail_with("2x3", "layer { name: 'r' type: 'ReLU' bottom: 'zzzzzzzz' top: 'r' }", NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"r\" (ReLU): bottom \"zzzzzzzz\" is not produced by any "
                   "earlier layer");
  m = fail_with("2x3",
                "layer { name: 'a' type: 'ReLU' bottom: 'b' top: 'a' }\n"
                "layer { name: 'b' type: 'ReLU' bottom: 'in0' top: 'b' }",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"a\" (ReLU): bottom \"b\" is produced only by a later layer "
                   "(\"b\")");
  check_leaks();
}

Test(errors, wiring) {
  const char *m = fail_with("2x3",
                            "layer { name: 'a' type: 'ReLU' bottom: 'in0' top: 'x' }\n"
                            "layer { name: 'b' type: 'TanH' bottom: 'x' top: 'y' }\n"
                            "layer { name: 'c' type: 'TanH' bottom: 'y' top: 'x' }",
                            NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"c\" (TanH): top \"x\" is already produced by an earlier "
                   "layer; only an in-place layer (top j = bottom j) may write it again");
  m = fail_with("2x3", "layer { name: 'e' type: 'Eltwise' bottom: 'in0' top: 'e' }", NULL);
  cr_assert_str_eq(m, "t.prototxt: layer \"e\" (Eltwise): takes at least 2 bottoms, got 1");
  m = fail_with("2x3",
                "layer { name: 'i' type: 'InnerProduct' bottom: 'in0' top: 'a' top: 'b'\n"
                "  inner_product_param { num_output: 2 } }",
                NULL);
  cr_assert_str_eq(m, "t.prototxt: layer \"i\" (InnerProduct): takes exactly 1 top, got 2");
  m = fail_with("2x3", "layer { name: 'i' type: 'Input' bottom: 'in0' top: 'a' }", NULL);
  cr_assert_str_eq(m, "t.prototxt: layer \"i\" (Input): takes no bottoms, got 1");
  m = fail_with(
      "2x3 2x3",
      "layer { name: 'r' type: 'ReLU' bottom: 'in0' top: 'r' loss_weight: 1 loss_weight: 2 }",
      NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"r\" (ReLU): loss_weight is given 2 times for 1 tops; give "
                   "it for every top or not at all");
  m = fail_with("2x3 2x3",
                "layer { name: 'e' type: 'Eltwise' bottom: 'in0' bottom: 'in1' top: 'e'\n"
                "  propagate_down: true }",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"e\" (Eltwise): propagate_down is given 1 times for 2 "
                   "bottoms; give it for every bottom or not at all");
  check_leaks();
}

Test(errors, graph_out_untouched_and_no_filename) {
  Caffe__NetParameter *n = parse_net("layer { name: 'r' type: 'ReLU' bottom: 'x' top: 'r' }");
  mdl_graph *g = (mdl_graph *)0x1;
  mdl_error err = {0};
  cr_assert_eq(mdl_graph_build(n, NULL, NULL, NULL, NULL, &g, &err), MDL_ERR_INVALID);
  cr_assert_null(g);
  cr_assert_eq(err.code, MDL_ERR_INVALID);
  cr_assert_str_eq(err.msg,
                   "layer \"r\" (ReLU): bottom \"x\" is not produced by any earlier layer");
  free_net(n);
  check_leaks();
}

/* The caller's net is not modified by building. */
Test(errors, net_is_not_modified) {
  Caffe__NetParameter *n = load_net("lenet_v1.prototxt");
  size_t before = protobuf_c_message_get_packed_size(&n->base);
  mdl_graph *g = build_net(n, NULL);
  cr_assert_eq(protobuf_c_message_get_packed_size(&n->base), before);
  cr_assert_eq(n->n_layers, 8);
  cr_assert_eq(n->n_layer, 0);
  mdl_graph_free(g);
  mdl_graph_free(NULL);
  free_net(n);
  check_leaks();
}

/* Caffe's blobs hold at most INT_MAX values; more axes than memdl keeps are
 * refused rather than truncated. */
Test(errors, limits) {
  const char *m = fail_text(
      "layer { name: 'in' type: 'Input' top: 'x'\n"
      "  input_param { shape { dim: 100000 dim: 100000 } } }",
      NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"in\" (Input): top \"x\" would be 100000x100000, more than "
                   "2^31-1 values");
  m = fail_text(
      "layer { name: 'in' type: 'Input' top: 'x' input_param { shape {\n"
      "  dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 dim: 1 } } }",
      NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"in\" (Input): input_param.shape has 9 axes; at most 8 "
                   "are supported");
  m = fail_with("1x1x1x1x1x1x1x1",
                "layer { name: 'e' type: 'Embed' bottom: 'in0' top: 'e'\n"
                "  embed_param { num_output: 2 input_dim: 3 } }",
                NULL);
  cr_assert_str_eq(m, "t.prototxt: layer \"e\" (Embed): a top would have more than 8 axes");
  m = fail_text("layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: -1 } } }",
                NULL);
  cr_assert_str_eq(m,
                   "t.prototxt: layer \"in\" (Input): input_param.shape dim 0 is -1; dims must be "
                   ">= 0");
  check_leaks();
}
