/* Tests for compiler/graph and compiler/layers: the reference nets in
 * tests/nets (published blob and weight shapes), phase filtering, Split
 * insertion names, the V1 and net-input upgrades, the backward analysis,
 * every layer type's shape rule, and the error messages (layer, blob and
 * both shapes named). */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caffe.pb-c.h"
#include "compiler/graph.h"
#include "compiler/layers.h"
#include "compiler/textformat.h"

/* Criterion passes a test whose process reports leaks at exit, so tests end
 * by asking LeakSanitizer (when linked in) themselves. */
int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static void check_leaks(void) {
  if (__lsan_do_recoverable_leak_check)
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (report above)");
}

/* ---- helpers ---- */

static Caffe__NetParameter *parse_net(const char *text) {
  mdl_error err = {0};
  ProtobufCMessage *m = NULL;
  mdl_status st =
      mdl_text_parse(text, strlen(text), "t.prototxt", &caffe__net_parameter__descriptor, &m, &err);
  cr_assert_eq(st, MDL_OK, "parse failed: %s\n%s", err.msg, text);
  return (Caffe__NetParameter *)m;
}

static Caffe__NetParameter *load_net(const char *name) {
  char path[256];
  snprintf(path, sizeof path, "tests/nets/%s", name);
  mdl_error err = {0};
  ProtobufCMessage *m = NULL;
  mdl_status st = mdl_text_parse_file(path, &caffe__net_parameter__descriptor, &m, &err);
  cr_assert_eq(st, MDL_OK, "cannot load %s: %s", path, err.msg);
  return (Caffe__NetParameter *)m;
}

static void free_net(Caffe__NetParameter *n) {
  protobuf_c_message_free_unpacked(&n->base, NULL);
}

/* A record shape for Data-like layers; sources containing "missing" fail. */
typedef struct test_source {
  mdl_shape rec;
  int calls;
} test_source;

static mdl_status test_resolver(void *ctx, const Caffe__LayerParameter *l, mdl_source_info *info,
                                mdl_error *err) {
  test_source *s = ctx;
  s->calls++;
  const char *src = l->data_param ? l->data_param->source : NULL;
  if (src && strstr(src, "named"))
    return mdl_errorf(err, MDL_ERR_INVALID, "layer \"%s\": %s: no such file", l->name, src);
  if (src && strstr(src, "missing")) return mdl_errorf(err, MDL_ERR_INVALID, "no such database");
  info->record = s->rec;
  return MDL_OK;
}

typedef struct build_opts {
  Caffe__Phase phase;
  int level;
  const char *stages[4];
  test_source *src;
  bool use_net_state; /* pass state NULL */
} build_opts;

static mdl_status try_build_net(const Caffe__NetParameter *net, const build_opts *o, mdl_graph **g,
                                mdl_error *err) {
  Caffe__NetState st = CAFFE__NET_STATE__INIT;
  char *stages[4];
  st.has_phase = 1;
  st.phase = o ? o->phase : CAFFE__PHASE__TEST;
  st.level = o ? o->level : 0;
  for (int i = 0; o && i < 4 && o->stages[i]; i++) stages[st.n_stage++] = (char *)o->stages[i];
  st.stage = stages;
  *g = (mdl_graph *)0x1; /* must be reset */
  mdl_status s = mdl_graph_build(net, o && o->use_net_state ? NULL : &st, "t.prototxt",
                                 o && o->src ? test_resolver : NULL, o ? o->src : NULL, g, err);
  if (s != MDL_OK) cr_assert_null(*g, "*out must be NULL on failure");
  return s;
}

static mdl_graph *build_net(const Caffe__NetParameter *net, const build_opts *o) {
  mdl_error err = {0};
  mdl_graph *g = NULL;
  mdl_status s = try_build_net(net, o, &g, &err);
  cr_assert_eq(s, MDL_OK, "build failed: %s", err.msg);
  cr_assert_not_null(g);
  return g;
}

static mdl_graph *build_file(const char *name, const build_opts *o) {
  Caffe__NetParameter *n = load_net(name);
  mdl_graph *g = build_net(n, o);
  free_net(n);
  return g;
}

static mdl_graph *build_text(const char *text, const build_opts *o) {
  Caffe__NetParameter *n = parse_net(text);
  mdl_graph *g = build_net(n, o);
  free_net(n);
  return g;
}

/* Builds and expects failure; returns the message (static). */
static const char *fail_text(const char *text, const build_opts *o) {
  static char msg[MDL_ERROR_MSG_MAX];
  Caffe__NetParameter *n = parse_net(text);
  mdl_error err = {0};
  mdl_graph *g = NULL;
  mdl_status s = try_build_net(n, o, &g, &err);
  free_net(n);
  cr_assert_neq(s, MDL_OK, "expected the build to fail:\n%s", text);
  cr_assert_eq(err.code, s);
  snprintf(msg, sizeof msg, "%s", err.msg);
  return msg;
}

static void expect_contains(const char *msg, ...) {
  va_list ap;
  va_start(ap, msg);
  for (const char *want; (want = va_arg(ap, const char *));)
    cr_assert(strstr(msg, want), "message lacks <<%s>>:\n%s", want, msg);
  va_end(ap);
}

/* Input layers in0, in1, ... (tops of the same names) from shapes like
 * "2x3x4 5", then layers. */
static char *with_inputs(const char *inputs, const char *layers) {
  size_t cap = strlen(layers) + 4096;
  char *t = malloc(cap);
  size_t off = (size_t)snprintf(t, cap, "name: 'test'\n");
  int k = 0;
  const char *p = inputs;
  while (*p) {
    while (*p == ' ') p++;
    if (!*p) break;
    off += (size_t)snprintf(t + off, cap - off,
                            "layer { name: 'in%d' type: 'Input' top: 'in%d' input_param { shape {",
                            k, k);
    while (*p && *p != ' ') {
      char *end;
      long d = strtol(p, &end, 10);
      off += (size_t)snprintf(t + off, cap - off, " dim: %ld", d);
      p = *end == 'x' ? end + 1 : end;
    }
    off += (size_t)snprintf(t + off, cap - off, " } } }\n");
    k++;
  }
  snprintf(t + off, cap - off, "%s\n", layers);
  return t;
}

static mdl_graph *build_with(const char *inputs, const char *layers, const build_opts *o) {
  char *t = with_inputs(inputs, layers);
  mdl_graph *g = build_text(t, o);
  free(t);
  return g;
}

static const char *fail_with(const char *inputs, const char *layers, const build_opts *o) {
  char *t = with_inputs(inputs, layers);
  const char *m = fail_text(t, o);
  free(t);
  return m;
}

static char *shape_of(const mdl_graph *g, const char *blob) {
  static char buf[8][128];
  static int next;
  int b = mdl_graph_find_blob(g, blob);
  cr_assert_geq(b, 0, "no blob \"%s\"", blob);
  char *s = buf[next++ % 8];
  return mdl_shape_str(&g->blob_shape[b], s, sizeof buf[0]);
}

static void expect_shape(const mdl_graph *g, const char *blob, const char *want) {
  cr_assert_str_eq(shape_of(g, blob), want, "blob \"%s\"", blob);
}

static const mdl_graph_layer *layer(const mdl_graph *g, const char *name) {
  int i = mdl_graph_find_layer(g, name);
  cr_assert_geq(i, 0, "no layer \"%s\"", name);
  return &g->layers[i];
}

/* want: the layer's learnable blob shapes separated by spaces. */
static void expect_params(const mdl_graph *g, const char *name, const char *want) {
  const mdl_graph_layer *l = layer(g, name);
  char got[512] = "", s[128];
  for (int i = 0; i < l->n_param; i++) {
    if (i) strcat(got, " ");
    strcat(got, mdl_shape_str(&l->param_shape[i], s, sizeof s));
  }
  cr_assert_str_eq(got, want, "params of \"%s\"", name);
}

/* The shape of blob "out" after one layer on the given inputs. */
static const char *out_of(const char *inputs, const char *layer_text) {
  static char s[128];
  mdl_graph *g = build_with(inputs, layer_text, NULL);
  snprintf(s, sizeof s, "%s", shape_of(g, "out"));
  mdl_graph_free(g);
  return s;
}

/* The learnable blob shapes of layer "L" after one layer. */
static const char *params_of(const char *inputs, const char *layer_text) {
  static char got[512];
  mdl_graph *g = build_with(inputs, layer_text, NULL);
  const mdl_graph_layer *l = layer(g, "L");
  char s[128];
  got[0] = '\0';
  for (int i = 0; i < l->n_param; i++) {
    if (i) strcat(got, " ");
    strcat(got, mdl_shape_str(&l->param_shape[i], s, sizeof s));
  }
  mdl_graph_free(g);
  return got;
}

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
  cr_assert_str_eq(out_of("2x8x13x13", spp), "2x168x1x1");
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
