/* FLOPs from the graph's shapes; tau and the batch shares from a two-term
 * round model over the workers' table:
 *   iter_s = max_i fixed_i + share_i * sample_s_i   (the slowest worker sets the pace)
 *   comm_s = max_i latency_i + sum_i 2 * bytes / bw_i
 *   round  = tau * iter_s + comm_s
 * (the driver sends K copies and receives K through its own link). */
#include "compiler/tuner.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void mdl_cost_of_layer(const mdl_graph *g, int layer, double *forward, double *train) {
  const mdl_graph_layer *l = &g->layers[layer];
  *forward = *train = 0;
  const char *type = l->param->type ? l->param->type : "";
  bool conv = !strcmp(type, "Convolution"), deconv = !strcmp(type, "Deconvolution");
  bool ip = !strcmp(type, "InnerProduct");
  if (!(conv || deconv || ip) || l->n_param == 0 || l->n_top == 0) return;
  /* each output (conv) or input (deconv) value takes one multiply-add per
   * weight feeding it: weights / out-channels of them */
  const mdl_shape *w = &l->param_shape[0];
  double per = w->n && w->d[0] ? (double)mdl_shape_count(w) / (double)w->d[0] : 0;
  const mdl_shape *y = &g->blob_shape[deconv ? l->bottom[0] : l->top[0]];
  *forward = 2.0 * per * (double)mdl_shape_count(y);
  bool bottom_grad = l->n_bottom > 0 && l->propagate_down && l->propagate_down[0];
  *train = *forward * (bottom_grad ? 3.0 : 2.0);
}

void mdl_cost_of(const mdl_graph *g, mdl_cost *out) {
  memset(out, 0, sizeof *out);
  for (int i = 0; i < g->n_layers; i++) {
    const mdl_graph_layer *l = &g->layers[i];
    for (int k = 0; k < l->n_param; k++) out->param_values += mdl_shape_count(&l->param_shape[k]);
    if (!out->batch && l->n_top > 0 && !strcmp(l->param->type ? l->param->type : "", "Input"))
      out->batch = g->blob_shape[l->top[0]].n ? g->blob_shape[l->top[0]].d[0] : 1;
    double fwd, train;
    mdl_cost_of_layer(g, i, &fwd, &train);
    out->forward_flops += fwd;
    out->train_flops += train;
  }
  if (!out->batch && g->n_blobs) out->batch = g->blob_shape[0].n ? g->blob_shape[0].d[0] : 1;
}

double mdl_tune_comm_bound(double max_comm_fraction) {
  return max_comm_fraction > 0 && max_comm_fraction < 1 ? max_comm_fraction
                                                        : MDL_TUNE_COMM_FRACTION;
}

mdl_tune_input mdl_tune_defaults(int workers, bool remote, double max_comm_fraction) {
  /* Measured on the 2-core development VM: training sustains ~100 GFLOP/s
   * per worker (bench/run.sh); moving weights costs 10 GB/s through shared
   * memory and 2.5 GB/s over gRPC (bench/bench_allreduce.sh); and a round
   * has a fixed cost beyond the transfer -- waking the workers, waiting for
   * the slowest -- of ~2 ms locally, ~3 ms over gRPC (the "waiting" and
   * "communication" of memdl run's round lines for LeNet). Used only when
   * nothing was calibrated. */
  mdl_tune_input in = {
      .workers = workers > 0 ? workers : 1,
      .remote = remote,
      .max_comm_fraction = mdl_tune_comm_bound(max_comm_fraction),
      .worker_gflops = 100,
      .bandwidth_gbs = remote ? 2.5 : 10,
      .latency_s = remote ? 3e-3 : 2e-3,
  };
  return in;
}

mdl_tune_table mdl_tune_table_assumed(const mdl_cost *cost, const mdl_tune_input *in,
                                      mdl_tune_worker *rows) {
  int k = in->workers < 1                      ? 1
          : in->workers > MDL_TUNE_MAX_WORKERS ? MDL_TUNE_MAX_WORKERS
                                               : in->workers;
  int64_t batch = cost->batch > 0 ? cost->batch : 1;
  for (int i = 0; i < k; i++)
    rows[i] =
        (mdl_tune_worker){.sample_s = cost->train_flops / (double)batch / (in->worker_gflops * 1e9),
                          .latency_s = in->latency_s,
                          .bandwidth_bps = in->bandwidth_gbs * 1e9};
  return (mdl_tune_table){.n_workers = k,
                          .worker = rows,
                          .global_batch = batch * k,
                          .weight_bytes = 4.0 * (double)cost->param_values,
                          .max_comm_fraction = in->max_comm_fraction};
}

mdl_tune_result mdl_tune_tau(const mdl_cost *cost, const mdl_tune_input *in) {
  mdl_tune_worker rows[MDL_TUNE_MAX_WORKERS];
  int64_t share[MDL_TUNE_MAX_WORKERS];
  mdl_tune_table t = mdl_tune_table_assumed(cost, in, rows);
  mdl_tune_plan p;
  mdl_tune(&t, share, &p);
  return (mdl_tune_result){p.tau, p.iter_s, p.comm_s, p.comm_fraction};
}

/* Equal shares; the remainder goes to the first workers. */
static void equal_shares(int k, int64_t g, int64_t *share) {
  for (int i = 0; i < k; i++) share[i] = g / k + (i < g % k);
}

/* Shares that make every worker's iteration equally long, T = fixed_i +
 * share_i sample_i, summing to g: T = (g + sum fixed_i / sample_i) /
 * sum 1 / sample_i (without fixed costs: shares proportional to speed).
 * Each at least 1; floors first, then the leftover samples one by one to
 * the largest fractional parts (ties to the lower index, so the result is
 * a function of the table alone). */
static void speed_shares(const mdl_tune_table *t, int64_t *share) {
  int k = t->n_workers;
  int64_t g = t->global_batch;
  double speed_sum = 0, fixed_sum = 0, frac[MDL_TUNE_MAX_WORKERS];
  for (int i = 0; i < k; i++) {
    speed_sum += 1.0 / t->worker[i].sample_s;
    fixed_sum += t->worker[i].fixed_s / t->worker[i].sample_s;
  }
  double T = ((double)g + fixed_sum) / speed_sum;
  int64_t sum = 0;
  for (int i = 0; i < k; i++) {
    double ideal = (T - t->worker[i].fixed_s) / t->worker[i].sample_s;
    if (ideal > (double)g) ideal = (double)g;
    share[i] = (int64_t)floor(ideal);
    frac[i] = ideal - (double)share[i];
    if (share[i] < 1) {
      share[i] = 1;
      frac[i] = -1;
    }
    sum += share[i];
  }
  for (; sum < g; sum++) {
    int best = 0;
    for (int i = 1; i < k; i++)
      if (frac[i] > frac[best]) best = i;
    share[best]++;
    frac[best] = -1;
  }
  for (; sum > g; sum--) { /* minimums of 1 overshot: take from the largest */
    int big = 0;
    for (int i = 1; i < k; i++)
      if (share[i] > share[big]) big = i;
    share[big]--;
  }
}

/* A worker's iteration at a share of b samples. */
static double iter_at(const mdl_tune_worker *w, int64_t b) {
  return w->fixed_s + (double)b * w->sample_s;
}

static double slowest_iter(const mdl_tune_table *t, const int64_t *share) {
  double m = 0;
  for (int i = 0; i < t->n_workers; i++) {
    double s = iter_at(&t->worker[i], share[i]);
    if (s > m) m = s;
  }
  return m;
}

/* comm / (tau * iter + comm) <= f  <=>  tau >= comm (1 - f) / (f iter) */
static int choose_tau(const mdl_tune_table *t, double iter_s, double comm_s, double *need) {
  double f = mdl_tune_comm_bound(t->max_comm_fraction);
  *need = iter_s > 0 ? comm_s * (1 - f) / (f * iter_s) : 1000;
  if (t->fixed_tau > 0) return t->fixed_tau;
  return *need <= 1 ? 1 : *need >= 1000 ? 1000 : (int)ceil(*need);
}

/* Whether the slowest and the fastest worker's iterations at cur[] are
 * within MDL_TUNE_REBALANCE_SIGMAS combined standard errors. */
static bool within_noise(const mdl_tune_table *t, const int64_t *cur) {
  int slow = 0, fast = 0;
  double it[MDL_TUNE_MAX_WORKERS];
  for (int i = 0; i < t->n_workers; i++) {
    it[i] = iter_at(&t->worker[i], cur[i]);
    if (it[i] > it[slow]) slow = i;
    if (it[i] < it[fast]) fast = i;
  }
  double se_s = t->worker[slow].iter_se_s, se_f = t->worker[fast].iter_se_s;
  return it[slow] - it[fast] <= MDL_TUNE_REBALANCE_SIGMAS * sqrt(se_s * se_s + se_f * se_f);
}

void mdl_tune(const mdl_tune_table *t, int64_t *share, mdl_tune_plan *out) {
  memset(out, 0, sizeof *out);
  int k = t->n_workers;
  if (k < 1) {
    out->tau = t->fixed_tau > 0 ? t->fixed_tau : 1;
    return;
  }
  for (int i = 0; i < k; i++) {
    const mdl_tune_worker *w = &t->worker[i];
    double lat = w->latency_s > 0 ? w->latency_s : 0;
    if (lat > out->comm_s) out->comm_s = lat;
  }
  for (int i = 0; i < k; i++)
    if (t->worker[i].bandwidth_bps > 0)
      out->comm_s += 2.0 * t->weight_bytes / t->worker[i].bandwidth_bps;
  equal_shares(k, t->global_batch, share);
  out->iter_equal_s = slowest_iter(t, share);
  double need;
  int tau_equal = choose_tau(t, out->iter_equal_s, out->comm_s, &need);
  out->round_equal_s = tau_equal * out->iter_equal_s + out->comm_s;
  bool known = t->global_batch >= k;
  for (int i = 0; i < k; i++) known = known && t->worker[i].sample_s > 0;
  if (known && k > 1) {
    int64_t bal[MDL_TUNE_MAX_WORKERS];
    speed_shares(t, bal);
    double iter_bal = slowest_iter(t, bal);
    /* judged at the equal shares' tau: the same number of iterations */
    double round_bal = tau_equal * iter_bal + out->comm_s;
    if (round_bal <= (1 - MDL_TUNE_REBALANCE_GAIN) * out->round_equal_s) {
      out->noise = within_noise(t, share);
      if (!out->noise) {
        memcpy(share, bal, (size_t)k * sizeof *share);
        out->balanced = true;
      }
    }
  }
  out->iter_s = slowest_iter(t, share);
  out->tau = choose_tau(t, out->iter_s, out->comm_s, &out->need_tau);
  out->round_s = out->tau * out->iter_s + out->comm_s;
  out->comm_fraction = out->round_s > 0 ? out->comm_s / out->round_s : 0;
  double wait = 0;
  for (int i = 0; i < k && out->round_s > 0; i++)
    wait += out->tau * (out->iter_s - iter_at(&t->worker[i], share[i])) / out->round_s;
  out->wait_fraction = wait / k;
}

void mdl_tune_rebalance(const mdl_tune_table *t, const int64_t *cur, int64_t *share,
                        mdl_tune_rebalance_result *out) {
  memset(out, 0, sizeof *out);
  int k = t->n_workers;
  mdl_tune_plan p;
  mdl_tune(t, share, &p);
  out->balanced = p.balanced;
  out->round_s = p.round_s;
  /* the current shares at the tau the choice was judged at */
  double iter_cur = k > 0 ? slowest_iter(t, cur) : 0;
  out->round_cur_s = p.tau * iter_cur + p.comm_s;
  bool differ = false;
  for (int i = 0; i < k; i++) differ = differ || share[i] != cur[i];
  out->noise = p.noise || (differ && within_noise(t, cur));
  out->change =
      differ && !out->noise && p.round_s <= (1 - MDL_TUNE_REBALANCE_GAIN) * out->round_cur_s;
  if (!out->change && k > 0) memcpy(share, cur, (size_t)k * sizeof *share);
}

int mdl_tune_partitions(int k, const int64_t *share, const int64_t *held, int64_t *target) {
  int64_t n_parts = 0, total = 0;
  for (int i = 0; i < k; i++) {
    target[i] = held[i];
    n_parts += held[i];
    total += share[i] > 0 ? share[i] : 0;
  }
  if (k < 2 || total <= 0) return 0;
  /* excess over the ideal count; a move from d to r changes the squared
   * error by 2 - 2 (e_d - e_r): it helps only when e_d - e_r > 1 */
  double e[MDL_TUNE_MAX_WORKERS];
  for (int i = 0; i < k && i < MDL_TUNE_MAX_WORKERS; i++)
    e[i] =
        (double)held[i] - (double)n_parts * (double)(share[i] > 0 ? share[i] : 0) / (double)total;
  int moved = 0;
  for (;;) {
    int d = -1, r = 0;
    for (int i = 0; i < k && i < MDL_TUNE_MAX_WORKERS; i++) {
      if (target[i] > 1 && (d < 0 || e[i] > e[d])) d = i;
      if (e[i] < e[r]) r = i;
    }
    if (d < 0 || d == r || e[d] - e[r] <= 1 + 1e-9) return moved;
    target[d]--;
    target[r]++;
    e[d] -= 1;
    e[r] += 1;
    moved++;
  }
}

size_t mdl_tune_explain(const mdl_tune_table *t, const int64_t *share, const mdl_tune_plan *p,
                        char *buf, size_t len) {
  size_t n = 0;
#define EMIT(...)                                                                    \
  do {                                                                               \
    int w_ = snprintf(n < len ? buf + n : NULL, n < len ? len - n : 0, __VA_ARGS__); \
    if (w_ > 0) n += (size_t)w_;                                                     \
  } while (0)
  if (len) buf[0] = 0;
  for (int i = 0; i < t->n_workers; i++) {
    const mdl_tune_worker *w = &t->worker[i];
    char link[96];
    if (w->bandwidth_bps > 0)
      snprintf(link, sizeof link, "%.2f ms + %.2f GB/s", w->latency_s * 1e3,
               w->bandwidth_bps / 1e9);
    else
      snprintf(link, sizeof link, "%.2f ms per round, transfer included", w->latency_s * 1e3);
    EMIT("  worker %d: %.2f ms + %.4f ms/sample x %lld samples = %.2f ms/iteration; link %s\n", i,
         w->fixed_s * 1e3, w->sample_s * 1e3, (long long)share[i], iter_at(w, share[i]) * 1e3,
         link);
  }
  EMIT("  iteration = slowest worker = %.2f ms (equal shares: %.2f ms)\n", p->iter_s * 1e3,
       p->iter_equal_s * 1e3);
  EMIT("  comm = max latency + sum 2 x %.2f MB / bandwidth = %.2f ms\n", t->weight_bytes / 1e6,
       p->comm_s * 1e3);
  double f = mdl_tune_comm_bound(t->max_comm_fraction);
  if (t->fixed_tau > 0)
    EMIT("  tau = %d (fixed by the job; the bound would need %.2f)\n", p->tau, p->need_tau);
  else
    EMIT("  tau >= comm (1 - f) / (f iteration) = %.2f x %.2f / (%.2f x %.2f) = %.2f -> %d\n",
         p->comm_s * 1e3, 1 - f, f, p->iter_s * 1e3, p->need_tau, p->tau);
  EMIT("  round = %d x %.2f + %.2f = %.2f ms; communication %.1f%%, waiting %.1f%%\n", p->tau,
       p->iter_s * 1e3, p->comm_s * 1e3, p->round_s * 1e3, 100 * p->comm_fraction,
       100 * p->wait_fraction);
  if (p->noise)
    EMIT(
        "  shares: equal (the iterations at equal shares differ within %.0f standard errors of "
        "their measurements; global batch %lld)\n",
        MDL_TUNE_REBALANCE_SIGMAS, (long long)t->global_batch);
  else
    EMIT(
        "  shares: %s (speed-proportional shares %s the round by >= %.0f%%; global batch "
        "%lld)\n",
        p->balanced ? "by speed" : "equal", p->balanced ? "shorten" : "would not shorten",
        100 * MDL_TUNE_REBALANCE_GAIN, (long long)t->global_batch);
#undef EMIT
  return n;
}
