/* The cost model against the published FLOP counts of LeNet and
 * CIFAR-10-quick, and the tuner's choice of tau: minimal, within the limit,
 * and moving the right way with its inputs. */
#include <criterion/criterion.h>

#include "compiler/graph.h"
#include "compiler/textformat.h"
#include "compiler/tuner.h"

/* LeNet's Data layers read 1x28x28 records. */
static mdl_status mnist_records(void *ctx, const Caffe__LayerParameter *layer,
                                mdl_source_info *info, mdl_error *err) {
  info->record = (mdl_shape){3, {1, 28, 28}};
  info->num_records = 60000;
  info->num_classes = 10;
  return MDL_OK;
}

static mdl_graph *load(const char *path) {
  Caffe__NetParameter *net = NULL;
  mdl_error err = {0};
  cr_assert_eq(
      mdl_text_parse_file(path, &caffe__net_parameter__descriptor, (ProtobufCMessage **)&net, &err),
      MDL_OK, "%s", err.msg);
  Caffe__NetState state = CAFFE__NET_STATE__INIT;
  state.has_phase = 1;
  state.phase = CAFFE__PHASE__TRAIN;
  mdl_graph *g = NULL;
  cr_assert_eq(mdl_graph_build(net, &state, path, mnist_records, NULL, &g, &err), MDL_OK, "%s",
               err.msg);
  protobuf_c_message_free_unpacked(&net->base, NULL);
  return g;
}

Test(tuner, lenet_and_cifar_flops_match_the_published_counts) {
  /* the TRAIN net: with its loss, so backward passes are counted */
  mdl_graph *g = load("tests/nets/lenet_train_test.prototxt");
  mdl_cost c;
  mdl_cost_of(g, &c);
  cr_assert_eq(c.batch, 64);
  cr_assert_eq(c.param_values, 431080, "LeNet's 431,080 weights and biases");
  /* LeNet: 4.59 MFLOP forward and 13.2 MFLOP forward+backward per image
   * (conv1 takes no bottom gradient: it sits on the data) */
  cr_assert_float_eq(c.forward_flops / 64 / 1e6, 4.59, 0.01);
  cr_assert_float_eq(c.train_flops / 64 / 1e6, 13.18, 0.02);
  mdl_graph_free(g);

  /* a deploy net has no loss: nothing runs backward but the weight
   * gradients this model counts for every learnable layer */
  g = load("tests/nets/cifar10_quick.prototxt");
  mdl_cost_of(g, &c);
  cr_assert_float_eq(c.forward_flops / (double)c.batch / 1e6, 24.71, 0.01, "%f",
                     c.forward_flops / (double)c.batch / 1e6);
  mdl_graph_free(g);
}

Test(tuner, tau_is_the_smallest_within_the_limit) {
  mdl_cost c = {.forward_flops = 3e8, .train_flops = 8e8, .param_values = 430000, .batch = 64};
  for (int k = 1; k <= 8; k *= 2)
    for (int remote = 0; remote < 2; remote++)
      for (double f = 0.02; f < 0.5; f *= 2) {
        mdl_tune_input in = mdl_tune_defaults(k, remote, f);
        mdl_tune_result r = mdl_tune_tau(&c, &in);
        cr_assert(r.tau >= 1 && r.tau <= 1000);
        cr_assert_leq(r.comm_fraction, f + 1e-12, "k %d remote %d f %g tau %d", k, remote, f,
                      r.tau);
        if (r.tau > 1) {
          double smaller = r.comm_s / ((r.tau - 1) * r.iter_s + r.comm_s);
          cr_assert_gt(smaller, f, "tau %d is not the smallest for k %d f %g", r.tau, k, f);
        }
      }
}

Test(tuner, tau_grows_with_communication_cost) {
  mdl_cost c = {.forward_flops = 3e8, .train_flops = 8e8, .param_values = 430000, .batch = 64};
  mdl_tune_input local = mdl_tune_defaults(4, false, 0.1), remote = mdl_tune_defaults(4, true, 0.1);
  int t_local = mdl_tune_tau(&c, &local).tau, t_remote = mdl_tune_tau(&c, &remote).tau;
  cr_assert_gt(t_remote, t_local, "slower links average less often");
  mdl_tune_input loose = mdl_tune_defaults(4, true, 0.4);
  cr_assert_lt(mdl_tune_tau(&c, &loose).tau, t_remote, "a looser limit allows a smaller tau");
  mdl_cost big = c;
  big.param_values *= 100; /* a 172 MB model */
  cr_assert_gt(mdl_tune_tau(&big, &remote).tau, t_remote);
  mdl_cost cheap = c;
  cheap.param_values = 0;
  cheap.train_flops = 1e12;
  cr_assert_eq(mdl_tune_tau(&cheap, &remote).tau, 1, "compute-bound nets average every step");
}
