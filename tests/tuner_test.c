/* The cost model against the published FLOP counts of LeNet and
 * CIFAR-10-quick, and the tuner's choice of tau: minimal, within the limit,
 * and moving the right way with its inputs. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

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

/* --- the tuner over tables of measured timings --- */

static mdl_tune_table table_of(const mdl_tune_worker *w, int k, int64_t global) {
  return (mdl_tune_table){.n_workers = k,
                          .worker = w,
                          .global_batch = global,
                          .weight_bytes = 1.7e6,
                          .max_comm_fraction = 0.1};
}

static int64_t sum_of(const int64_t *v, int k) {
  int64_t s = 0;
  for (int i = 0; i < k; i++) s += v[i];
  return s;
}

Test(tuner, a_one_to_five_speed_mismatch_gets_a_sixth_and_five_sixths) {
  /* worker 0 takes 5 ms per sample, worker 1 1 ms: 5 times faster */
  mdl_tune_worker w[2] = {{5e-3, 1e-3, 5e9}, {1e-3, 1e-3, 5e9}};
  mdl_tune_table t = table_of(w, 2, 128);
  int64_t share[2];
  mdl_tune_plan p;
  mdl_tune(&t, share, &p);
  cr_assert(p.balanced);
  cr_assert_eq(sum_of(share, 2), 128, "the global batch is kept exactly");
  /* 128 / 6 = 21.33 and 106.67: floors 21 and 106, the leftover to the
   * larger fraction */
  cr_assert_eq(share[0], 21, "%lld", (long long)share[0]);
  cr_assert_eq(share[1], 107, "%lld", (long long)share[1]);
  cr_assert_float_eq(p.iter_s, 107 * 1e-3, 1e-12, "the slower of 21 x 5 and 107 x 1 ms");
  cr_assert_float_eq(p.iter_equal_s, 64 * 5e-3, 1e-12);
  cr_assert_lt(p.round_s, 0.5 * p.round_equal_s);
  cr_assert_leq(p.wait_fraction, 0.10, "%f", p.wait_fraction);
}

Test(tuner, shares_sum_to_the_global_batch_for_any_speeds) {
  mdl_tune_worker w[7];
  for (int64_t g = 7; g < 300; g += 13) {
    for (int i = 0; i < 7; i++) w[i] = (mdl_tune_worker){(1 + (i * 37 + g) % 11) * 1e-4, 1e-3, 1e9};
    mdl_tune_table t = table_of(w, 7, g);
    int64_t share[7];
    mdl_tune_plan p;
    mdl_tune(&t, share, &p);
    cr_assert_eq(sum_of(share, 7), g);
    for (int i = 0; i < 7; i++)
      cr_assert_geq(share[i], 1, "worker %d of batch %lld", i, (long long)g);
  }
  /* a far slower worker still gets one sample */
  mdl_tune_worker lop[3] = {{1.0, 0, 1e9}, {1e-6, 0, 1e9}, {1e-6, 0, 1e9}};
  mdl_tune_table t = table_of(lop, 3, 10);
  int64_t share[3];
  mdl_tune_plan p;
  mdl_tune(&t, share, &p);
  cr_assert_eq(share[0], 1);
  cr_assert_eq(sum_of(share, 3), 10);
}

Test(tuner, speeds_within_ten_percent_keep_equal_shares) {
  /* 8% apart: balancing would save under 10% of a round */
  mdl_tune_worker w[2] = {{1.08e-3, 1e-3, 5e9}, {1.0e-3, 1e-3, 5e9}};
  mdl_tune_table t = table_of(w, 2, 128);
  int64_t share[2];
  mdl_tune_plan p;
  mdl_tune(&t, share, &p);
  cr_assert_not(p.balanced);
  cr_assert_eq(share[0], 64);
  cr_assert_eq(share[1], 64);
  /* 30% apart: it would save more, so it balances */
  w[0].sample_s = 1.3e-3;
  mdl_tune(&t, share, &p);
  cr_assert(p.balanced);
  cr_assert_lt(share[0], share[1]);
  /* an odd batch: the remainder goes to the first worker */
  w[0].sample_s = 1e-3;
  t.global_batch = 129;
  mdl_tune(&t, share, &p);
  cr_assert_eq(share[0], 65);
  cr_assert_eq(share[1], 64);
}

Test(tuner, tau_from_the_table_and_a_fixed_tau) {
  /* comm = 1 ms + 2 x 2 x 1.7 MB / 5 GB/s = 2.36 ms; iteration 64 x 0.05 ms
   * = 3.2 ms; tau >= 2.36 x 0.9 / (0.1 x 3.2) = 6.6 -> 7 */
  mdl_tune_worker w[2] = {{5e-5, 1e-3, 5e9}, {5e-5, 0.5e-3, 5e9}};
  mdl_tune_table t = table_of(w, 2, 128);
  int64_t share[2];
  mdl_tune_plan p;
  mdl_tune(&t, share, &p);
  cr_assert_float_eq(p.comm_s, 1e-3 + 4 * 1.7e6 / 5e9, 1e-12);
  cr_assert_eq(p.tau, 7, "%d (need %f)", p.tau, p.need_tau);
  cr_assert_leq(p.comm_fraction, 0.1);
  t.fixed_tau = 3;
  mdl_tune(&t, share, &p);
  cr_assert_eq(p.tau, 3, "the job's tau stands");
  cr_assert_gt(p.comm_fraction, 0.1);
  char buf[2048];
  size_t n = mdl_tune_explain(&t, share, &p, buf, sizeof buf);
  cr_assert_lt(n, sizeof buf);
  cr_assert(strstr(buf, "fixed by the job"), "%s", buf);
  cr_assert(strstr(buf, "2.36 ms"), "the comm arithmetic is shown: %s", buf);
  /* a short buffer is cut, terminated, and the needed length told */
  char small[16];
  cr_assert_eq(mdl_tune_explain(&t, share, &p, small, sizeof small), n);
  cr_assert_eq(strlen(small), sizeof small - 1);
}

Test(tuner, per_iteration_costs_move_samples_to_the_worker_without_them) {
  /* equal per-sample speed, but worker 1 pays 50 ms per iteration: both
   * take T = (128 + 50) / 2 = 89 ms with 89 and 39 samples */
  mdl_tune_worker w[2] = {{.sample_s = 1e-3, .fixed_s = 0, .latency_s = 1e-3},
                          {.sample_s = 1e-3, .fixed_s = 50e-3, .latency_s = 1e-3}};
  mdl_tune_table t = table_of(w, 2, 128);
  int64_t share[2];
  mdl_tune_plan p;
  mdl_tune(&t, share, &p);
  cr_assert(p.balanced);
  cr_assert_eq(share[0], 89, "%lld", (long long)share[0]);
  cr_assert_eq(share[1], 39, "%lld", (long long)share[1]);
  cr_assert_float_eq(p.iter_s, 89e-3, 1e-12);
  cr_assert_float_eq(p.iter_equal_s, 114e-3, 1e-12, "50 + 64 x 1 ms");
}

/* --- during the run: current shares + measured times -> new shares or keep --- */

typedef struct rebalance_case {
  const char *what;
  double sample_s[2], fixed_s[2]; /* what the last rounds measured */
  int64_t cur[2];                 /* the shares the workers run at */
  bool change;                    /* the tuner's decision */
  int64_t want[2];                /* the shares to run with afterwards */
} rebalance_case;

Test(tuner, rebalancing_follows_a_speed_change_and_ignores_jitter) {
  /* tau 5, 1 ms of communication a round, global batch 128 */
  static const rebalance_case cases[] = {
      {"equal speeds at equal shares: keep", {1e-3, 1e-3}, {0, 0}, {64, 64}, false, {64, 64}},
      {"worker 1 slowed 5x at equal shares: by speed",
       {1e-3, 5e-3},
       {0, 0},
       {64, 64},
       true,
       {107, 21}},
      {"8% jitter at equal shares: keep", {1e-3, 1.08e-3}, {0, 0}, {64, 64}, false, {64, 64}},
      {"worker 1 recovered at shares by speed: back to equal",
       {1e-3, 1e-3},
       {0, 0},
       {107, 21},
       true,
       {64, 64}},
      /* 5.5x: shares by speed 108/20 would save only ~5% over 107/21 */
      {"a small drift at shares by speed: keep",
       {1e-3, 5.5e-3},
       {0, 0},
       {107, 21},
       false,
       {107, 21}},
      {"worker 0 slowed now: the other way round",
       {4e-3, 1e-3},
       {0, 0},
       {107, 21},
       true,
       {26, 102}},
      /* per-iteration costs: worker 1 pays 50 ms whatever its batch */
      {"a fixed cost per iteration", {1e-3, 1e-3}, {0, 50e-3}, {64, 64}, true, {89, 39}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    const rebalance_case *k = &cases[c];
    mdl_tune_worker w[2];
    for (int i = 0; i < 2; i++)
      w[i] = (mdl_tune_worker){
          .sample_s = k->sample_s[i], .fixed_s = k->fixed_s[i], .latency_s = 1e-3};
    mdl_tune_table t = table_of(w, 2, 128);
    t.fixed_tau = 5;
    int64_t share[2];
    mdl_tune_rebalance_result r;
    mdl_tune_rebalance(&t, k->cur, share, &r);
    cr_assert_eq(r.change, k->change, "%s: change %d (round %.1f ms now, %.1f ms after)", k->what,
                 r.change, r.round_cur_s * 1e3, r.round_s * 1e3);
    cr_assert_eq(share[0], k->want[0], "%s: %lld", k->what, (long long)share[0]);
    cr_assert_eq(share[1], k->want[1], "%s: %lld", k->what, (long long)share[1]);
    cr_assert_eq(sum_of(share, 2), 128, "%s", k->what);
    if (r.change)
      cr_assert_leq(r.round_s, 0.9 * r.round_cur_s, "%s: a change must gain 10%%", k->what);
    /* the round at the current shares: tau x their slowest iteration + comm */
    double slow = 0;
    for (int i = 0; i < 2; i++) {
      double it = k->fixed_s[i] + (double)k->cur[i] * k->sample_s[i];
      if (it > slow) slow = it;
    }
    cr_assert_float_eq(r.round_cur_s, 5 * slow + 1e-3, 1e-12, "%s", k->what);
  }
}

/* Two workers slow in turn: worker 1 computed 264 ms in three rounds of a
 * window of five and 64 ms in two, worker 0 the other way round; the means
 * (184 and 144 ms) would move the shares by 12%, yet the rounds' scatter
 * explains the difference. The same means measured steadily move them. */
Test(tuner, differences_within_the_windows_scatter_keep_the_shares) {
  const double slow[5] = {264e-3, 64e-3, 264e-3, 64e-3, 264e-3};
  double m = 0, ss = 0;
  for (int i = 0; i < 5; i++) m += slow[i] / 5;
  for (int i = 0; i < 5; i++) ss += (slow[i] - m) * (slow[i] - m);
  double se = sqrt(ss / 4 / 5); /* 49 ms, the same for both workers */
  int64_t cur[2] = {64, 64}, share[2];
  for (int steady = 0; steady < 2; steady++) {
    mdl_tune_worker w[2] = {
        {.sample_s = 144e-3 / 64, .latency_s = 1e-3, .iter_se_s = steady ? 1e-3 : se},
        {.sample_s = 184e-3 / 64, .latency_s = 1e-3, .iter_se_s = steady ? 1e-3 : se}};
    mdl_tune_table t = table_of(w, 2, 128);
    t.fixed_tau = 1;
    mdl_tune_rebalance_result r;
    mdl_tune_rebalance(&t, cur, share, &r);
    cr_assert_eq(r.change, steady, "steady %d: change %d (round %.1f ms now, %.1f after)", steady,
                 r.change, r.round_cur_s * 1e3, r.round_s * 1e3);
    cr_assert_eq(r.noise, !steady, "steady %d", steady);
    if (!steady) cr_assert(share[0] == 64 && share[1] == 64);
    if (steady)
      cr_assert_gt(share[0], share[1], "%lld %lld", (long long)share[0], (long long)share[1]);
  }
}

typedef struct partition_case {
  const char *what;
  int k;
  int64_t share[3], held[3];
  int moved;
  int64_t want[3];
} partition_case;

Test(tuner, partitions_follow_the_shares_with_the_fewest_moves) {
  static const partition_case cases[] = {
      {"equal shares, round-robin deal: nothing moves", 2, {64, 64}, {8, 8}, 0, {8, 8}},
      {"equal shares, odd count: nothing moves", 2, {64, 64}, {9, 8}, 0, {9, 8}},
      {"equal shares of 3, 7 partitions", 3, {10, 10, 10}, {3, 2, 2}, 0, {3, 2, 2}},
      /* 107/128 of 16 = 13.4 */
      {"shares 107/21 over 16", 2, {107, 21}, {8, 8}, 5, {13, 3}},
      {"as many partitions as workers: each keeps one", 2, {107, 21}, {1, 1}, 0, {1, 1}},
      {"a far slower worker keeps one", 2, {127, 1}, {4, 4}, 3, {7, 1}},
      {"back to equal from a skewed deal", 2, {64, 64}, {13, 3}, 5, {8, 8}},
      {"three workers 2:1:1 over 12", 3, {64, 32, 32}, {4, 4, 4}, 2, {6, 3, 3}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    const partition_case *p = &cases[c];
    int64_t target[3];
    int moved = mdl_tune_partitions(p->k, p->share, p->held, target);
    cr_assert_eq(moved, p->moved, "%s: %d moved", p->what, moved);
    int64_t before = 0, after = 0;
    for (int i = 0; i < p->k; i++) {
      cr_assert_eq(target[i], p->want[i], "%s: worker %d holds %lld", p->what, i,
                   (long long)target[i]);
      cr_assert_geq(target[i], 1, "%s", p->what);
      before += p->held[i];
      after += target[i];
    }
    cr_assert_eq(after, before, "%s: partitions kept", p->what);
  }
}
