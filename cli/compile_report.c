/* memdl compile's views of a plan: one set of facts per layer, net and
 * tuner decision (the helpers at the top), printed three ways. */
#include "cli/compile_report.h"

#include <stdlib.h>
#include <string.h>

#include "common/pb.h"
#include "compiler/tuner.h"
#include "runtime/data/dataset.h"
#include "runtime/engine/net.h"
#include "runtime/train/device.h"

/* --- the facts ------------------------------------------------------------ */

typedef struct layer_row {
  double fwd_flops, train_flops;
  int64_t param_bytes, top_bytes;
  bool in_place, split, loss;
} layer_row;

static const char *type_of(const mdl_graph_layer *l) {
  return l->param->type ? l->param->type : "";
}

static layer_row row_of(const mdl_graph *g, int i) {
  const mdl_graph_layer *l = &g->layers[i];
  layer_row r = {0};
  mdl_cost_of_layer(g, i, &r.fwd_flops, &r.train_flops);
  for (int k = 0; k < l->n_param; k++) r.param_bytes += 4 * mdl_shape_count(&l->param_shape[k]);
  for (int t = 0; t < l->n_top; t++) {
    bool same = false;
    for (int b = 0; b < l->n_bottom; b++) same = same || l->bottom[b] == l->top[t];
    r.in_place = r.in_place || same;
    if (!same) r.top_bytes += 4 * mdl_shape_count(&g->blob_shape[l->top[t]]);
    if (l->loss_weight && l->loss_weight[t] != 0) r.loss = true;
  }
  r.split = !strcmp(type_of(l), "Split");
  return r;
}

static const char *net_label(const mdl_phase_net *pn, char *buf, size_t len) {
  if (pn->phase == CAFFE__PHASE__TEST && pn->test_index > 0)
    snprintf(buf, len, "TEST%d", pn->test_index);
  else
    snprintf(buf, len, "%s", mdl_phase_name(pn->phase));
  return buf;
}

/* Seconds per FLOP of training: measured when calibrated (the slowest
 * worker's time per sample over the TRAIN net's FLOPs per sample), else
 * the tuner's assumed throughput. */
static double seconds_per_flop(const mdl_compile_report_in *in, const mdl_cost *cost,
                               bool *measured) {
  *measured = false;
  const mdl_calibration *cal = in->calibration;
  if (cal && cal->n_workers > 0 && cost->train_flops > 0 && cost->batch > 0) {
    double slow = 0;
    for (int i = 0; i < cal->n_workers; i++)
      if (cal->worker[i].sample_s > slow) slow = cal->worker[i].sample_s;
    *measured = true;
    return slow / (cost->train_flops / (double)cost->batch);
  }
  mdl_tune_input a = mdl_tune_defaults(1, false, MDL_TUNE_COMM_FRACTION);
  return 1.0 / (a.worker_gflops * 1e9);
}

/* The tuner's decision for this compile: on the calibration when there is
 * one, else on the assumed figures for the run's workers. */
typedef struct tune_view {
  mdl_tune_worker rows[MDL_TUNE_MAX_WORKERS];
  int64_t share[MDL_TUNE_MAX_WORKERS];
  mdl_tune_table t;
  mdl_tune_plan p;
  bool measured;
} tune_view;

static bool tune_view_of(const mdl_compile_report_in *in, tune_view *v) {
  const mdl_compiled *c = in->c;
  if (c->n_nets == 0 || c->nets[0].phase != CAFFE__PHASE__TRAIN) return false;
  const Memdl__Sync *sync = in->job->job->sync;
  double f = mdl_tune_comm_bound(sync ? sync->max_comm_fraction : 0);
  int fixed = sync && sync->tau ? (int)sync->tau : 0;
  mdl_cost cost;
  mdl_cost_of(c->nets[0].graph, &cost);
  v->measured = in->calibration && in->calibration->n_workers > 0;
  if (v->measured) {
    v->t = mdl_calibration_table(in->calibration, f, fixed, v->rows);
  } else {
    mdl_tune_input a = mdl_tune_defaults(in->workers, in->remote, f);
    v->t = mdl_tune_table_assumed(&cost, &a, v->rows);
    v->t.fixed_tau = fixed;
  }
  mdl_tune(&v->t, v->share, &v->p);
  return true;
}

/* The memory planner's figures for g: activations as planned (bytes) and
 * as a net keeping every blob apart would need. */
static mdl_status memory_of(const mdl_graph *g, size_t *planned, size_t *naive, mdl_error *err) {
  mdl_net_options o = {.backend = mdl_device_cpu(), .no_fill = true, .defer_arena = true};
  mdl_net *net = NULL;
  mdl_status st = mdl_net_new(g, &o, &net, err);
  if (st != MDL_OK) return st;
  *planned = mdl_net_arena_floats(net) * sizeof(float);
  *naive = mdl_net_naive_bytes(net);
  mdl_net_free(net);
  return MDL_OK;
}

/* What the compiler's passes changed in net i, one sentence each, into
 * lines[] (at most 6). Judged by comparing the job's net with the graph. */
static int passes_of(const mdl_compile_report_in *in, int i, char lines[6][600]) {
  const mdl_phase_net *pn = &in->c->nets[i];
  const mdl_graph *g = pn->graph;
  int n = 0;
  const Caffe__NetParameter *src = mdl_job_net(in->job, pn->phase, pn->test_index, NULL);
  size_t v1 = src ? src->n_layers : 0, v2 = src ? src->n_layer : 0;
  bool inputs = src && (src->n_input > 0);
  snprintf(lines[n++], 600, "upgrade: %zu V1 layer%s upgraded%s", v1, v1 == 1 ? "" : "s",
           inputs ? "; net-level inputs became an Input layer" : "");
  int splits = 0, in_place = 0, backward = 0, kept = 0;
  for (int l = 0; l < g->n_layers; l++) {
    layer_row r = row_of(g, l);
    splits += r.split;
    in_place += r.in_place;
    backward += g->layers[l].needs_backward;
    kept += !r.split;
  }
  size_t total = v1 + v2 + (inputs ? 1 : 0);
  char dropped[400] = "";
  size_t dl = 0;
  for (size_t k = 0; src && k < src->n_layer && dl < sizeof dropped - 40; k++) {
    const char *name = src->layer[k]->name ? src->layer[k]->name : "";
    if (mdl_graph_find_layer(g, name) < 0)
      dl += (size_t)snprintf(dropped + dl, sizeof dropped - dl, "%s%s", dl ? ", " : "", name);
  }
  snprintf(lines[n++], 600, "filter (phase %s, include/exclude rules): %d of %zu layers kept%s%s",
           mdl_phase_name(pn->phase), kept, total, dl ? "; dropped: " : "", dropped);
  snprintf(lines[n++], 600, "splits: %d Split layer%s inserted where a blob feeds several layers",
           splits, splits == 1 ? "" : "s");
  snprintf(lines[n++], 600, "shapes: %d blobs inferred; %d layer%s compute in place (top = bottom)",
           g->n_blobs, in_place, in_place == 1 ? " computes" : "s compute");
  snprintf(lines[n++], 600, "backward: %d of %d layers need a gradient", backward, g->n_layers);
  snprintf(lines[n++], 600, "fusion: none (the compiler fuses no layers)");
  return n;
}

/* --- --explain ------------------------------------------------------------ */

static void explain_layers(FILE *f, const mdl_compile_report_in *in, const mdl_graph *g) {
  mdl_cost cost;
  mdl_cost_of(in->c->nets[0].graph, &cost);
  bool measured;
  double spf = seconds_per_flop(in, &cost, &measured);
  fprintf(f, "  %-16s %-16s %-16s %12s %10s %10s %9s\n", "layer", "type", "top", "MFLOP fw+bw",
          "param KB", "top KB", measured ? "scaled ms" : "est ms");
  for (int l = 0; l < g->n_layers; l++) {
    const mdl_graph_layer *gl = &g->layers[l];
    layer_row r = row_of(g, l);
    char shape[64] = "-";
    if (gl->n_top) mdl_shape_str(&g->blob_shape[gl->top[0]], shape, sizeof shape);
    fprintf(f, "  %-16s %-16s %-16s %12.2f %10.1f %10.1f %9.3f%s\n",
            gl->param->name ? gl->param->name : "?", type_of(gl), shape, r.train_flops / 1e6,
            r.param_bytes / 1024.0, r.top_bytes / 1024.0, r.train_flops * spf * 1e3,
            r.in_place ? " in place"
            : r.split  ? " inserted"
            : r.loss   ? " loss"
                       : "");
  }
  fprintf(f, "  (%s: each layer's FLOPs x %s; layers the cost model does not count show 0)\n",
          measured ? "scaled ms" : "est ms",
          measured ? "the calibrated slowest worker's seconds per FLOP (not measured per layer: "
                     "memdl time does that)"
                   : "the assumed 100 GFLOP/s");
}

mdl_status mdl_compile_explain(FILE *f, const mdl_compile_report_in *in, mdl_error *err) {
  const mdl_compiled *c = in->c;
  for (int i = 0; i < c->n_nets; i++) {
    char label[32], lines[6][600];
    const mdl_graph *g = c->nets[i].graph;
    fprintf(f, "%s net %d: passes\n", net_label(&c->nets[i], label, sizeof label),
            c->nets[i].test_index);
    int n = passes_of(in, i, lines);
    for (int k = 0; k < n; k++) fprintf(f, "  %s\n", lines[k]);
    explain_layers(f, in, g);
    size_t planned, naive;
    mdl_status st = memory_of(g, &planned, &naive, err);
    if (st != MDL_OK) return st;
    fprintf(f, "  memory (the planner's): activations %.2f MB planned, %.2f MB naive\n",
            planned / 1e6, naive / 1e6);
  }
  const mdl_calibration *cal = in->calibration;
  for (int i = 0; cal && i < cal->n_workers; i++) {
    char line[400];
    mdl_calibration_line(cal, i, line, sizeof line);
    fprintf(f, "%s\n", line);
  }
  tune_view *v = mdl_xcalloc(1, sizeof *v);
  if (!tune_view_of(in, v)) {
    fprintf(f, "tuner: no TRAIN net, nothing to tune\n");
  } else {
    fprintf(f, "tuner (%s figures, %d worker%s):\n", v->measured ? "calibrated" : "assumed",
            v->t.n_workers, v->t.n_workers == 1 ? "" : "s");
    char buf[8192];
    mdl_tune_explain(&v->t, v->share, &v->p, buf, sizeof buf);
    fputs(buf, f);
  }
  free(v);
  return MDL_OK;
}

/* --- --dot ------------------------------------------------------------------ */

/* A Graphviz string: quotes and backslashes escaped, newlines as
 * Graphviz's centred line breaks. */
static void dot_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; s && *s; s++) {
    if (*s == '\n') {
      fputs("\\n", f);
      continue;
    }
    if (*s == '"' || *s == '\\') fputc('\\', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

static void dot_data(FILE *f, const mdl_compile_report_in *in, const tune_view *v, bool tuned) {
  const Memdl__Job *j = in->job->job;
  fprintf(f, "  subgraph cluster_data {\n    label=\"data stages\";\n");
  for (size_t i = 0; i < j->n_data; i++) {
    Memdl__DataSet *ds = NULL;
    char *desc = NULL;
    if (mdl_data_resolve(j->data, j->n_data, j->data[i], &ds, NULL) == MDL_OK)
      desc = mdl_data_describe(ds);
    char label[1024];
    snprintf(label, sizeof label, "%s\n%s", j->data[i]->name ? j->data[i]->name : "?",
             desc ? desc : "");
    fprintf(f, "    data%zu [shape=cylinder, label=", i);
    dot_str(f, label);
    fprintf(f, "];\n");
    free(desc);
    mdl_pb_free(ds);
  }
  fprintf(f, "  }\n  subgraph cluster_workers {\n    label=\"per-worker blocks\";\n");
  int k = tuned ? v->t.n_workers : in->workers;
  int64_t global = 0;
  for (int w = 0; w < k; w++) {
    fprintf(f, "    worker%d [shape=component, label=\"worker %d\\npartition %d of %d", w, w, w + 1,
            k);
    if (tuned) fprintf(f, "\\n%lld samples per iteration", (long long)v->share[w]);
    fprintf(f, "\"];\n");
    global += tuned ? v->share[w] : 0;
    for (size_t i = 0; i < j->n_data; i++) fprintf(f, "    data%zu -> worker%d;\n", i, w);
  }
  fprintf(f,
          "  }\n  subgraph cluster_batch {\n    label=\"\";\n    batch [shape=oval, label=\"batch");
  if (tuned) fprintf(f, "\\n%lld per iteration over %d workers", (long long)global, k);
  fprintf(f, "\"];\n  }\n");
  for (int w = 0; w < k; w++) fprintf(f, "  worker%d -> batch;\n", w);
}

static void dot_net(FILE *f, int ni, const mdl_phase_net *pn) {
  const mdl_graph *g = pn->graph;
  char label[32];
  fprintf(f, "  subgraph cluster_net%d {\n    label=\"%s net\";\n", ni,
          net_label(pn, label, sizeof label));
  int *writer = mdl_xcalloc((size_t)g->n_blobs + 1, sizeof *writer);
  for (int b = 0; b < g->n_blobs; b++) writer[b] = -1;
  for (int l = 0; l < g->n_layers; l++) {
    const mdl_graph_layer *gl = &g->layers[l];
    layer_row r = row_of(g, l);
    char text[300];
    snprintf(text, sizeof text, "%s\n%s%s", gl->param->name ? gl->param->name : "?", type_of(gl),
             r.in_place ? " (in place)"
             : r.split  ? " (inserted)"
                        : "");
    fprintf(f, "    n%d_%d [label=", ni, l);
    dot_str(f, text);
    fprintf(f, "%s];\n",
            r.loss       ? ", shape=doubleoctagon"
            : r.split    ? ", style=dotted"
            : r.in_place ? ", style=dashed"
                         : "");
    if (gl->n_bottom == 0 && gl->n_top > 0 && strcmp(type_of(gl), "Input"))
      fprintf(f, "    batch -> n%d_%d;\n", ni, l);
    for (int b = 0; b < gl->n_bottom; b++) {
      int w = writer[gl->bottom[b]];
      if (w < 0) continue;
      char shape[64];
      mdl_shape_str(&g->blob_shape[gl->bottom[b]], shape, sizeof shape);
      snprintf(text, sizeof text, "%s %s", g->blob_name[gl->bottom[b]], shape);
      fprintf(f, "    n%d_%d -> n%d_%d [label=", ni, w, ni, l);
      dot_str(f, text);
      fprintf(f, "];\n");
    }
    for (int t = 0; t < gl->n_top; t++) writer[gl->top[t]] = l;
  }
  free(writer);
  fprintf(f, "  }\n");
}

void mdl_compile_dot(FILE *f, const mdl_compile_report_in *in) {
  tune_view *v = mdl_xcalloc(1, sizeof *v);
  bool tuned = tune_view_of(in, v);
  fprintf(f, "digraph plan {\n  rankdir=TB;\n  node [shape=box, fontsize=10];\n");
  fprintf(f, "  label=");
  dot_str(f, in->job->job->name ? in->job->job->name : in->job->path);
  fprintf(f, ";\n");
  dot_data(f, in, v, tuned);
  for (int i = 0; i < in->c->n_nets; i++) dot_net(f, i, &in->c->nets[i]);
  fprintf(f, "}\n");
  free(v);
}

/* --- --json ----------------------------------------------------------------- */

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; s && *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      fprintf(f, "\\%c", ch);
    else if (ch < 0x20)
      fprintf(f, "\\u%04x", ch);
    else
      fputc(ch, f);
  }
  fputc('"', f);
}

static void json_shape(FILE *f, const mdl_shape *s) {
  fputc('[', f);
  for (int k = 0; k < s->n; k++) fprintf(f, "%s%lld", k ? ", " : "", (long long)s->d[k]);
  fputc(']', f);
}

static void json_layer(FILE *f, const mdl_graph *g, int l, double spf) {
  const mdl_graph_layer *gl = &g->layers[l];
  layer_row r = row_of(g, l);
  fprintf(f, "      {\"name\": ");
  json_str(f, gl->param->name);
  fprintf(f, ", \"type\": ");
  json_str(f, type_of(gl));
  fprintf(f, ", \"bottoms\": [");
  for (int b = 0; b < gl->n_bottom; b++) {
    if (b) fprintf(f, ", ");
    json_str(f, g->blob_name[gl->bottom[b]]);
  }
  fprintf(f, "], \"tops\": [");
  for (int t = 0; t < gl->n_top; t++) {
    if (t) fprintf(f, ", ");
    fprintf(f, "{\"name\": ");
    json_str(f, g->blob_name[gl->top[t]]);
    fprintf(f, ", \"shape\": ");
    json_shape(f, &g->blob_shape[gl->top[t]]);
    fprintf(f, "}");
  }
  fprintf(f,
          "], \"forward_flops\": %.0f, \"train_flops\": %.0f, \"param_bytes\": %lld, "
          "\"top_bytes\": %lld, \"time_ms\": %.6f, \"in_place\": %s, \"inserted\": %s, "
          "\"loss\": %s, \"needs_backward\": %s}",
          r.fwd_flops, r.train_flops, (long long)r.param_bytes, (long long)r.top_bytes,
          r.train_flops * spf * 1e3, r.in_place ? "true" : "false", r.split ? "true" : "false",
          r.loss ? "true" : "false", gl->needs_backward ? "true" : "false");
}

static mdl_status json_net(FILE *f, const mdl_compile_report_in *in, int i, double spf,
                           mdl_error *err) {
  const mdl_phase_net *pn = &in->c->nets[i];
  const mdl_graph *g = pn->graph;
  size_t planned, naive;
  mdl_status st = memory_of(g, &planned, &naive, err);
  if (st != MDL_OK) return st;
  char label[32], lines[6][600];
  fprintf(f, "    {\"net\": ");
  json_str(f, net_label(pn, label, sizeof label));
  fprintf(f, ", \"phase\": \"%s\", \"test_index\": %d,\n     \"passes\": [",
          mdl_phase_name(pn->phase), pn->test_index);
  int n = passes_of(in, i, lines);
  for (int k = 0; k < n; k++) {
    if (k) fprintf(f, ", ");
    json_str(f, lines[k]);
  }
  fprintf(f,
          "],\n     \"memory\": {\"activations_planned_bytes\": %zu, "
          "\"activations_naive_bytes\": %zu},\n     \"layers\": [\n",
          planned, naive);
  for (int l = 0; l < g->n_layers; l++) {
    json_layer(f, g, l, spf);
    fprintf(f, "%s\n", l + 1 < g->n_layers ? "," : "");
  }
  fprintf(f, "    ]}");
  return MDL_OK;
}

static void json_tuner(FILE *f, const mdl_compile_report_in *in) {
  tune_view *v = mdl_xcalloc(1, sizeof *v);
  if (!tune_view_of(in, v)) {
    fprintf(f, "null");
    free(v);
    return;
  }
  const mdl_tune_plan *p = &v->p;
  fprintf(f,
          "{\"figures\": \"%s\", \"workers\": %d, \"tau\": %d, \"tau_fixed\": %s, "
          "\"balanced\": %s, \"global_batch\": %lld, \"iteration_s\": %.9g, "
          "\"iteration_equal_s\": %.9g, \"comm_s\": %.9g, \"round_s\": %.9g, "
          "\"comm_fraction\": %.6g, \"wait_fraction\": %.6g, \"need_tau\": %.6g,\n   \"worker\": [",
          v->measured ? "calibrated" : "assumed", v->t.n_workers, p->tau,
          v->t.fixed_tau ? "true" : "false", p->balanced ? "true" : "false",
          (long long)v->t.global_batch, p->iter_s, p->iter_equal_s, p->comm_s, p->round_s,
          p->comm_fraction, p->wait_fraction, p->need_tau);
  for (int i = 0; i < v->t.n_workers; i++)
    fprintf(f,
            "%s{\"share\": %lld, \"sample_s\": %.9g, \"fixed_s\": %.9g, \"latency_s\": %.9g, "
            "\"bandwidth_bps\": %.9g}",
            i ? ", " : "", (long long)v->share[i], v->rows[i].sample_s, v->rows[i].fixed_s,
            v->rows[i].latency_s, v->rows[i].bandwidth_bps);
  fprintf(f, "]}");
  free(v);
}

mdl_status mdl_compile_json(FILE *f, const mdl_compile_report_in *in, mdl_error *err) {
  const mdl_compiled *c = in->c;
  mdl_cost cost = {0};
  if (c->n_nets) mdl_cost_of(c->nets[0].graph, &cost);
  bool measured;
  double spf = seconds_per_flop(in, &cost, &measured);
  fprintf(f, "{\n  \"job\": ");
  json_str(f, in->job->job->name ? in->job->job->name : in->job->path);
  fprintf(f, ",\n  \"time_figures\": \"%s\",\n  \"data\": [", measured ? "calibrated" : "assumed");
  const Memdl__Job *j = in->job->job;
  for (size_t i = 0; i < j->n_data; i++) {
    Memdl__DataSet *ds = NULL;
    char *desc = NULL;
    if (mdl_data_resolve(j->data, j->n_data, j->data[i], &ds, NULL) == MDL_OK)
      desc = mdl_data_describe(ds);
    fprintf(f, "%s{\"name\": ", i ? ", " : "");
    json_str(f, j->data[i]->name);
    fprintf(f, ", \"stages\": ");
    json_str(f, desc ? desc : "");
    fprintf(f, "}");
    free(desc);
    mdl_pb_free(ds);
  }
  fprintf(f, "],\n  \"nets\": [\n");
  for (int i = 0; i < c->n_nets; i++) {
    mdl_status st = json_net(f, in, i, spf, err);
    if (st != MDL_OK) return st;
    fprintf(f, "%s\n", i + 1 < c->n_nets ? "," : "");
  }
  fprintf(f, "  ],\n  \"calibration\": [");
  const mdl_calibration *cal = in->calibration;
  for (int i = 0; cal && i < cal->n_workers; i++)
    fprintf(f,
            "%s{\"sample_s\": %.9g, \"fixed_s\": %.9g, \"comm_s\": %.9g, \"samples\": %llu, "
            "\"iterations\": %d}",
            i ? ", " : "", cal->worker[i].sample_s, cal->worker[i].fixed_s, cal->worker[i].comm_s,
            (unsigned long long)cal->worker[i].samples, cal->worker[i].iterations);
  fprintf(f, "],\n  \"tuner\": ");
  json_tuner(f, in);
  fprintf(f, "\n}\n");
  return MDL_OK;
}
