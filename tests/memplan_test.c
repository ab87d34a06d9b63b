/* The memory plan: on every net in tests/nets and the jobs' nets, both
 * phases, no two buffers live at a common step share a byte (checked pair by
 * pair); the brute-force check itself catches a planted overlap; a planned
 * net's forward outputs and gradients equal the plan-off run's (MDL_MEMPLAN=off,
 * every buffer its own) bit for bit, layer by layer; the net allocates
 * exactly the plan's figures; ResNet-50 training plans under half of naive. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/memplan.h"
#include "compiler/textformat.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/engine/net.h"
#include "tests/graph_test_util.h"

static mdl_graph *graph_of(const char *path, Caffe__Phase phase) {
  mdl_error err = {0};
  ProtobufCMessage *m = NULL;
  cr_assert_eq(mdl_text_parse_file(path, &caffe__net_parameter__descriptor, &m, &err), MDL_OK,
               "%s: %s", path, err.msg);
  test_source src = {.rec = {3, {1, 28, 28}}};
  build_opts o = {.phase = phase, .src = &src};
  mdl_graph *g = build_net((Caffe__NetParameter *)m, &o);
  free_net((Caffe__NetParameter *)m);
  return g;
}

static const char *const NETS[] = {
    "tests/nets/caffenet.prototxt",
    "tests/nets/cifar10_full.prototxt",
    "tests/nets/cifar10_quick.prototxt",
    "tests/nets/googlenet.prototxt",
    "tests/nets/lenet.prototxt",
    "tests/nets/lenet_train_test.prototxt",
    "tests/nets/lenet_v1.prototxt",
    "tests/nets/mobilenet_v1.prototxt",
    "tests/nets/resnet50.prototxt",
    "tests/nets/squeezenet1_1.prototxt",
    "tests/nets/vgg16.prototxt",
    "jobs/fashion_mnist/lenet_train_test.prototxt",
    "jobs/fashion_mnist_lstm/lstm_train_test.prototxt",
};

static void check_plan(const char *path, const mdl_graph *g, const mdl_mem_plan *p) {
  int a, ka, b, kb;
  bool hit = mdl_mem_plan_find_overlap(p, &a, &ka, &b, &kb);
  cr_assert_not(hit, "%s (%s): %s of \"%s\" and %s of \"%s\" are live at once and overlap", path,
                g->phase == CAFFE__PHASE__TRAIN ? "TRAIN" : "TEST", ka ? "diff" : "data",
                g->blob_name[a], kb ? "diff" : "data", g->blob_name[b]);
  for (int i = 0; i < p->n_blobs; i++) {
    cr_assert_leq(p->data_off[i] + p->size[i], p->arena_floats, "%s: data of %s", path,
                  g->blob_name[i]);
    if (p->diff_off[i] != MDL_MEM_NONE) cr_assert_leq(p->diff_off[i] + p->size[i], p->arena_floats);
  }
}

Test(memplan, no_two_live_buffers_overlap_on_any_net) {
  for (size_t n = 0; n < sizeof NETS / sizeof *NETS; n++)
    for (int ph = 0; ph < 2; ph++) {
      mdl_graph *g = graph_of(NETS[n], ph ? CAFFE__PHASE__TEST : CAFFE__PHASE__TRAIN);
      mdl_mem_layer *ml = mdl_mem_layers_of(g);
      mdl_mem_plan *p = mdl_mem_plan_new(g, ml, true);
      check_plan(NETS[n], g, p);
      cr_assert_leq(p->fig.arena, p->fig.arena_naive, "%s", NETS[n]);
      mdl_mem_plan_free(p);
      free(ml);
      mdl_graph_free(g);
    }
}

Test(memplan, the_overlap_check_catches_a_planted_overlap) {
  mdl_graph *g = graph_of("tests/nets/googlenet.prototxt", CAFFE__PHASE__TRAIN);
  mdl_mem_layer *ml = mdl_mem_layers_of(g);
  mdl_mem_plan *p = mdl_mem_plan_new(g, ml, true);
  /* the net's input lives throughout the forward: put the first conv's
   * output on top of it */
  int in = g->layers[0].top[0], conv = g->layers[1].top[0];
  p->data_off[conv] = p->data_off[in];
  int a, ka, b, kb;
  cr_assert(mdl_mem_plan_find_overlap(p, &a, &ka, &b, &kb));
  mdl_mem_plan_free(p);
  free(ml);
  mdl_graph_free(g);
}

Test(memplan, resnet50_training_plans_under_half_of_naive) {
  mdl_graph *g = graph_of("tests/nets/resnet50.prototxt", CAFFE__PHASE__TRAIN);
  mdl_mem_layer *ml = mdl_mem_layers_of(g);
  mdl_mem_plan *p = mdl_mem_plan_new(g, ml, true);
  cr_assert_lt(2 * p->fig.arena, p->fig.arena_naive, "planned %zu, naive %zu", p->fig.arena,
               p->fig.arena_naive);
  mdl_mem_plan *off = mdl_mem_plan_new(g, ml, false);
  cr_assert_eq(off->fig.arena, off->fig.arena_naive);
  mdl_mem_plan_free(off);
  mdl_mem_plan_free(p);
  free(ml);
  mdl_graph_free(g);
}

/* A small residual net with everything the plan's tables name: in-place
 * BatchNorm, Scale, ReLU and Dropout, Eltwise SUM, MAX pooling, Concat, an
 * inserted Split, two losses. */
static const char RES[] =
    "name: \"res\"\n"
    "layer { name: \"in\" type: \"Input\" top: \"data\" top: \"label\"\n"
    "  input_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 } } }\n"
    "layer { name: \"c1\" type: \"Convolution\" bottom: \"data\" top: \"c1\"\n"
    "  convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: "
    "\"gaussian\" std: 0.2 } } }\n"
    "layer { name: \"bn1\" type: \"BatchNorm\" bottom: \"c1\" top: \"c1\" }\n"
    "layer { name: \"s1\" type: \"Scale\" bottom: \"c1\" top: \"c1\" scale_param { bias_term: true "
    "} }\n"
    "layer { name: \"r1\" type: \"ReLU\" bottom: \"c1\" top: \"c1\" }\n"
    "layer { name: \"c2\" type: \"Convolution\" bottom: \"c1\" top: \"c2\"\n"
    "  convolution_param { num_output: 16 kernel_size: 3 pad: 1 bias_term: false weight_filler { "
    "type: \"gaussian\" std: 0.2 } } }\n"
    "layer { name: \"bn2\" type: \"BatchNorm\" bottom: \"c2\" top: \"c2\" }\n"
    "layer { name: \"s2\" type: \"Scale\" bottom: \"c2\" top: \"c2\" }\n"
    "layer { name: \"sum\" type: \"Eltwise\" bottom: \"c1\" bottom: \"c2\" top: \"sum\" }\n"
    "layer { name: \"r2\" type: \"ReLU\" bottom: \"sum\" top: \"sum\" }\n"
    "layer { name: \"pool\" type: \"Pooling\" bottom: \"sum\" top: \"pool\"\n"
    "  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
    "layer { name: \"drop\" type: \"Dropout\" bottom: \"pool\" top: \"pool\" }\n"
    "layer { name: \"c3\" type: \"Convolution\" bottom: \"pool\" top: \"c3\"\n"
    "  convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: \"gaussian\" std: "
    "0.2 } } }\n"
    "layer { name: \"cat\" type: \"Concat\" bottom: \"pool\" bottom: \"c3\" top: \"cat\" }\n"
    "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"cat\" top: \"ip\"\n"
    "  inner_product_param { num_output: 5 weight_filler { type: \"gaussian\" std: 0.1 } } }\n"
    "layer { name: \"sig\" type: \"Sigmoid\" bottom: \"ip\" top: \"sig\" }\n"
    "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"ip\" bottom: \"label\" top: "
    "\"loss\" }\n"
    "layer { name: \"l2\" type: \"EuclideanLoss\" bottom: \"sig\" bottom: \"ip\" top: \"l2\" "
    "loss_weight: 0.3 }\n";

/* Every top after its layer's forward, then every bottom diff after its
 * layer's backward, then the parameter gradients, appended to one array. */
static float *trace(const mdl_graph *g, bool reuse, int64_t *n_out, size_t *alloc,
                    mdl_mem_figures *fig) {
  if (!reuse) setenv("MDL_MEMPLAN", "off", 1);
  mdl_net_options o = {.backend = mdl_cpu_backend(), .seed = 7};
  mdl_net *net;
  mdl_error err;
  cr_assert_eq(mdl_net_new(g, &o, &net, &err), MDL_OK, "%s", err.msg);
  unsetenv("MDL_MEMPLAN");
  *alloc = mdl_net_allocated_bytes(net);
  mdl_net_mem_figures(net, fig);
  float *out = NULL;
  int64_t n = 0;
#define KEEP(t, field)                                               \
  do {                                                               \
    out = realloc(out, (size_t)(n + (t)->count) * sizeof(float));    \
    memcpy(out + n, (t)->field, (size_t)(t)->count * sizeof(float)); \
    n += (t)->count;                                                 \
  } while (0)
  for (int it = 0; it < 2; it++) {
    mdl_tensor *x = mdl_net_blob(net, mdl_net_blob_index(net, "data"));
    mdl_tensor *y = mdl_net_blob(net, mdl_net_blob_index(net, "label"));
    for (int64_t i = 0; i < x->count; i++) x->data[i] = sinf((float)(i + it) * 0.37f);
    for (int64_t i = 0; i < y->count; i++) y->data[i] = (float)((i + it) % 5);
    mdl_net_set_iteration(net, (uint64_t)it);
    mdl_net_clear_param_diffs(net);
    for (int i = 0; i < g->n_layers; i++) {
      mdl_net_forward_layer(net, i);
      for (int k = 0; k < g->layers[i].n_top; k++)
        KEEP(mdl_net_blob(net, g->layers[i].top[k]), data);
    }
    for (int i = g->n_layers - 1; i >= 0; i--) {
      mdl_net_backward_layer(net, i);
      for (int k = 0; mdl_net_layer_runs_backward(net, i) && k < g->layers[i].n_bottom; k++) {
        const mdl_tensor *b = mdl_net_blob(net, g->layers[i].bottom[k]);
        if (b->diff && (!g->layers[i].propagate_down || g->layers[i].propagate_down[k]))
          KEEP(b, diff);
      }
    }
    mdl_tensor pd = {.count = (int64_t)mdl_net_param_count(net), .diff = mdl_net_param_diffs(net)};
    KEEP(&pd, diff);
  }
#undef KEEP
  mdl_net_free(net);
  *n_out = n;
  return out;
}

static void planned_equals_unplanned(const char *text) {
  Caffe__NetParameter *np = parse_net(text);
  mdl_graph *g = build_net(np, &(build_opts){.phase = CAFFE__PHASE__TRAIN});
  free_net(np);
  int64_t na, nb;
  size_t alloc_a, alloc_b;
  mdl_mem_figures fa, fb;
  float *a = trace(g, true, &na, &alloc_a, &fa), *b = trace(g, false, &nb, &alloc_b, &fb);
  cr_assert_eq(na, nb);
  cr_assert_gt(na, 1000);
  for (int64_t i = 0; i < na; i++)
    cr_assert(memcmp(&a[i], &b[i], sizeof(float)) == 0, "value %lld: planned %.9g, plan off %.9g",
              (long long)i, a[i], b[i]);
  /* the plan did reuse, and the net allocated what the plan says */
  cr_assert_lt(fa.arena, fb.arena);
  /* an in-place Scale after an in-place BatchNorm keeps no second copy */
  if (strstr(text, "BatchNorm")) cr_assert_lt(fa.kept, fb.kept);
  cr_assert_eq(fa.kept_naive, fb.kept);
  cr_assert_eq(alloc_a, fa.arena + fa.params + fa.workspace + fa.kept);
  cr_assert_eq(alloc_b, fb.arena + fb.params + fb.workspace + fb.kept);
  free(a);
  free(b);
  mdl_graph_free(g);
}

Test(memplan, residual_net_planned_equals_plan_off_bit_for_bit) {
  planned_equals_unplanned(RES);
}

Test(memplan, lenet_planned_equals_plan_off_bit_for_bit) {
  char *text = NULL;
  size_t n = 0;
  FILE *f = fopen("bench/lenet.prototxt", "rb");
  cr_assert_not_null(f);
  text = calloc(1, 1 << 16);
  n = fread(text, 1, (1 << 16) - 1, f);
  fclose(f);
  cr_assert_gt(n, 100);
  planned_equals_unplanned(text);
  free(text);
}
