/* FLOPs from the graph's shapes; tau from a two-term round model:
 *   round = tau * iter_s + comm_s,   comm_s = latency + 2 * K * bytes / bw
 * (the driver sends K copies and receives K). */
#include "compiler/tuner.h"

#include <math.h>
#include <string.h>

void mdl_cost_of(const mdl_graph *g, mdl_cost *out) {
  memset(out, 0, sizeof *out);
  for (int i = 0; i < g->n_layers; i++) {
    const mdl_graph_layer *l = &g->layers[i];
    for (int k = 0; k < l->n_param; k++) out->param_values += mdl_shape_count(&l->param_shape[k]);
    if (!out->batch && l->n_top > 0 && !strcmp(l->param->type ? l->param->type : "", "Input"))
      out->batch = g->blob_shape[l->top[0]].n ? g->blob_shape[l->top[0]].d[0] : 1;
    const char *type = l->param->type ? l->param->type : "";
    bool conv = !strcmp(type, "Convolution"), deconv = !strcmp(type, "Deconvolution");
    bool ip = !strcmp(type, "InnerProduct");
    if (!(conv || deconv || ip) || l->n_param == 0 || l->n_top == 0) continue;
    /* each output (conv) or input (deconv) value takes one multiply-add per
     * weight feeding it: weights / out-channels of them */
    const mdl_shape *w = &l->param_shape[0];
    double per = w->n && w->d[0] ? (double)mdl_shape_count(w) / (double)w->d[0] : 0;
    const mdl_shape *y = &g->blob_shape[deconv ? l->bottom[0] : l->top[0]];
    double fwd = 2.0 * per * (double)mdl_shape_count(y);
    out->forward_flops += fwd;
    bool bottom_grad = l->n_bottom > 0 && l->propagate_down && l->propagate_down[0];
    out->train_flops += fwd * (bottom_grad ? 3.0 : 2.0);
  }
  if (!out->batch && g->n_blobs) out->batch = g->blob_shape[0].n ? g->blob_shape[0].d[0] : 1;
}

mdl_tune_input mdl_tune_defaults(int workers, bool remote, double max_comm_fraction) {
  /* Measured on the 2-core development VM: training sustains ~100 GFLOP/s
   * per worker (bench/run.sh); moving weights costs 10 GB/s through shared
   * memory and 2.5 GB/s over gRPC (bench/bench_allreduce.sh); and a round
   * has a fixed cost beyond the transfer -- waking the workers, waiting for
   * the slowest -- of ~2 ms locally, ~3 ms over gRPC (the "waiting" and
   * "communication" of memdl run's round lines for LeNet). */
  mdl_tune_input in = {
      .workers = workers > 0 ? workers : 1,
      .remote = remote,
      .max_comm_fraction = max_comm_fraction > 0 && max_comm_fraction < 1 ? max_comm_fraction : 0.1,
      .worker_gflops = 100,
      .bandwidth_gbs = remote ? 2.5 : 10,
      .latency_s = remote ? 3e-3 : 2e-3,
  };
  return in;
}

mdl_tune_result mdl_tune_tau(const mdl_cost *cost, const mdl_tune_input *in) {
  mdl_tune_result r = {0};
  r.iter_s = cost->train_flops / (in->worker_gflops * 1e9);
  double bytes = 4.0 * (double)cost->param_values;
  r.comm_s = in->latency_s + 2.0 * in->workers * bytes / (in->bandwidth_gbs * 1e9);
  /* comm / (tau * iter + comm) <= f  <=>  tau >= comm (1 - f) / (f iter) */
  double f = in->max_comm_fraction;
  double need = r.iter_s > 0 ? r.comm_s * (1 - f) / (f * r.iter_s) : 1000;
  r.tau = need <= 1 ? 1 : need >= 1000 ? 1000 : (int)ceil(need);
  r.comm_fraction = r.comm_s / (r.tau * r.iter_s + r.comm_s);
  return r;
}
