/* mdl_net: whole-net gradients against finite differences (through
 * in-place ReLU, inserted Splits and the planned, reused gradient buffers),
 * weight sharing (TRAIN/TEST by layer name, ParamSpec names), gradient
 * accumulation, the memory plan, and per-iteration random streams. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/graph.h"
#include "compiler/textformat.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/engine/net.h"
#include "tests/graph_test_util.h"

static const char NET[] =
    "name: \"small\"\n"
    "layer { name: \"in\" type: \"Input\" top: \"data\" top: \"label\"\n"
    "        input_param { shape { dim: 3 dim: 2 dim: 5 dim: 5 } shape { dim: 3 } } }\n"
    "layer { name: \"conv\" type: \"Convolution\" bottom: \"data\" top: \"conv\"\n"
    "        convolution_param { num_output: 4 kernel_size: 3 pad: 1\n"
    "          weight_filler { type: \"gaussian\" std: 0.3 } bias_filler { type: \"constant\" "
    "value: 0.1 } } }\n"
    "layer { name: \"relu\" type: \"ReLU\" bottom: \"conv\" top: \"conv\" }\n"
    "layer { name: \"pool\" type: \"Pooling\" bottom: \"conv\" top: \"pool\"\n"
    "        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }\n"
    "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"pool\" top: \"ip\"\n"
    "        inner_product_param { num_output: 4 weight_filler { type: \"gaussian\" std: 0.3 } } "
    "}\n"
    "layer { name: \"ip2\" type: \"InnerProduct\" bottom: \"pool\" top: \"ip2\"\n"
    "        inner_product_param { num_output: 4 weight_filler { type: \"gaussian\" std: 0.3 } } "
    "}\n"
    "layer { name: \"acc\" type: \"Accuracy\" bottom: \"ip\" bottom: \"label\" top: \"acc\"\n"
    "        include { phase: TEST } }\n"
    "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"ip\" bottom: \"label\" top: "
    "\"loss\" }\n"
    "layer { name: \"l2\" type: \"EuclideanLoss\" bottom: \"ip\" bottom: \"ip2\" top: \"l2\"\n"
    "        loss_weight: 0.5 }\n";

static mdl_graph *graph(const char *text, Caffe__Phase phase) {
  return build_text(text, &(build_opts){.phase = phase});
}

static mdl_net *make(mdl_graph *g, const mdl_net *share) {
  mdl_net_options o = {.backend = mdl_cpu_backend(), .seed = 42, .share_from = share};
  mdl_net *n;
  mdl_error err;
  cr_assert_eq(mdl_net_new(g, &o, &n, &err), MDL_OK, "%s", err.msg);
  return n;
}

static void fill_inputs(mdl_net *n) {
  mdl_tensor *data = mdl_net_blob(n, mdl_net_blob_index(n, "data"));
  mdl_tensor *label = mdl_net_blob(n, mdl_net_blob_index(n, "label"));
  for (int64_t i = 0; i < data->count; i++) data->data[i] = sinf((float)i * 0.7f);
  for (int64_t i = 0; i < label->count; i++) label->data[i] = (float)(i % 4);
}

Test(net, gradients_match_finite_differences) {
  mdl_graph *g = graph(NET, CAFFE__PHASE__TRAIN);
  mdl_net *n = make(g, NULL);
  fill_inputs(n);
  mdl_net_clear_param_diffs(n);
  mdl_net_forward(n);
  mdl_net_backward(n);
  size_t np = mdl_net_param_count(n);
  float *grad = malloc(np * sizeof(float));
  memcpy(grad, mdl_net_param_diffs(n), np * sizeof(float));
  float *w = mdl_net_params(n);
  const float h = 1e-2f;
  int checked = 0;
  for (size_t i = 0; i < np; i += 7) {
    float keep = w[i];
    w[i] = keep + h;
    fill_inputs(n);
    double lp = mdl_net_forward(n);
    w[i] = keep - h;
    fill_inputs(n);
    double lm = mdl_net_forward(n);
    w[i] = keep;
    double fd = (lp - lm) / (2 * h);
    double tol = 2e-2 * fmax(1.0, fmax(fabs(fd), fabs(grad[i])));
    cr_expect(fabs(fd - grad[i]) <= tol, "param %zu: backward %g, finite difference %g", i, grad[i],
              fd);
    checked++;
  }
  cr_assert(checked > 10);
  free(grad);
  mdl_net_free(n);
  mdl_graph_free(g);
}

Test(net, gradients_accumulate_over_passes) {
  mdl_graph *g = graph(NET, CAFFE__PHASE__TRAIN);
  mdl_net *n = make(g, NULL);
  size_t np = mdl_net_param_count(n);
  fill_inputs(n);
  mdl_net_clear_param_diffs(n);
  mdl_net_forward(n);
  mdl_net_backward(n);
  float *once = malloc(np * sizeof(float));
  memcpy(once, mdl_net_param_diffs(n), np * sizeof(float));
  fill_inputs(n);
  mdl_net_forward(n);
  mdl_net_backward(n);
  for (size_t i = 0; i < np; i++)
    cr_assert(fabsf(mdl_net_param_diffs(n)[i] - 2 * once[i]) <= 1e-5f * (1 + fabsf(once[i])));
  free(once);
  mdl_net_free(n);
  mdl_graph_free(g);
}

Test(net, test_net_shares_train_weights_by_name) {
  mdl_graph *gt = graph(NET, CAFFE__PHASE__TRAIN);
  mdl_graph *gs = graph(NET, CAFFE__PHASE__TEST);
  mdl_net *train = make(gt, NULL);
  mdl_net *test = make(gs, train);
  cr_assert_eq(mdl_net_param_count(test), 0, "every test layer with weights is in the train net");
  for (int i = 0; i < mdl_net_n_layers(test); i++) {
    mdl_layer *l = mdl_net_layer(test, i);
    if (!l || !l->n_param) continue;
    int j = -1;
    for (int k = 0; k < mdl_net_n_layers(train); k++)
      if (!strcmp(mdl_net_layer_name(train, k), l->name)) j = k;
    cr_assert(j >= 0);
    cr_assert_eq(l->param[0].data, mdl_net_layer(train, j)->param[0].data);
  }
  /* The test net's outputs: acc, loss, l2 (scalars). */
  cr_assert_eq(mdl_net_n_outputs(test), 3);
  mdl_net_free(test);
  mdl_net_free(train);
  mdl_graph_free(gt);
  mdl_graph_free(gs);
}

Test(net, memory_plan_reuses_buffers) {
  mdl_graph *gs = graph(NET, CAFFE__PHASE__TEST);
  mdl_net *test = make(gs, NULL);
  /* naive counts a diff only where a layer needs one: none in TEST */
  cr_assert(mdl_net_arena_floats(test) * sizeof(float) < mdl_net_naive_bytes(test) * 3 / 4,
            "planned %zu floats, naive %zu bytes", mdl_net_arena_floats(test),
            mdl_net_naive_bytes(test));
  mdl_graph *gt = graph(NET, CAFFE__PHASE__TRAIN);
  mdl_net *train = make(gt, NULL);
  cr_assert(mdl_net_arena_floats(train) * sizeof(float) < mdl_net_naive_bytes(train));
  mdl_net_free(test);
  mdl_net_free(train);
  mdl_graph_free(gs);
  mdl_graph_free(gt);
}

Test(net, shared_param_names_share_storage_and_gradients) {
  const char *text =
      "layer { name: \"in\" type: \"Input\" top: \"a\" top: \"b\"\n"
      "        input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 } } }\n"
      "layer { name: \"ipa\" type: \"InnerProduct\" bottom: \"a\" top: \"ya\"\n"
      "        param { name: \"w\" } param { name: \"bias\" }\n"
      "        inner_product_param { num_output: 2 weight_filler { type: \"xavier\" } } }\n"
      "layer { name: \"ipb\" type: \"InnerProduct\" bottom: \"b\" top: \"yb\"\n"
      "        param { name: \"w\" } param { name: \"bias\" }\n"
      "        inner_product_param { num_output: 2 weight_filler { type: \"xavier\" } } }\n"
      "layer { name: \"loss\" type: \"EuclideanLoss\" bottom: \"ya\" bottom: \"yb\" top: \"loss\" "
      "}\n";
  mdl_graph *g = graph(text, CAFFE__PHASE__TRAIN);
  mdl_net *n = make(g, NULL);
  int nl;
  mdl_net_learnable(n, &nl);
  cr_assert_eq(nl, 2, "the sharer's blobs are not learnable on their own");
  mdl_layer *a = mdl_net_layer(n, mdl_graph_find_layer(g, "ipa"));
  mdl_layer *b = mdl_net_layer(n, mdl_graph_find_layer(g, "ipb"));
  cr_assert_eq(a->param[0].data, b->param[0].data);
  cr_assert_eq(a->param[0].diff, b->param[0].diff);
  mdl_net_free(n);
  mdl_graph_free(g);
}

Test(net, iteration_streams_are_reproducible) {
  const char *text =
      "layer { name: \"in\" type: \"Input\" top: \"x\" input_param { shape { dim: 4 dim: 50 } } }\n"
      "layer { name: \"drop\" type: \"Dropout\" bottom: \"x\" top: \"y\" }\n";
  mdl_graph *g = graph(text, CAFFE__PHASE__TRAIN);
  mdl_net *n = make(g, NULL);
  mdl_tensor *x = mdl_net_blob(n, mdl_net_blob_index(n, "x"));
  mdl_tensor *y = mdl_net_blob(n, mdl_net_blob_index(n, "y"));
  float first[200], second[200];
  for (int pass = 0; pass < 3; pass++) {
    for (int64_t i = 0; i < x->count; i++) x->data[i] = 1;
    mdl_net_set_iteration(n, pass == 1 ? 8 : 7);
    mdl_net_forward(n);
    if (pass == 0) memcpy(first, y->data, sizeof first);
    if (pass == 1) memcpy(second, y->data, sizeof second);
  }
  cr_assert(memcmp(first, y->data, sizeof first) == 0, "same iteration, same mask");
  cr_assert(memcmp(first, second, sizeof first) != 0, "another iteration, another mask");
  mdl_net_free(n);
  mdl_graph_free(g);
}
