/* Which nets a job runs, and the Plan message built from their graphs. */
#include "compiler/plan.h"

#include <stdlib.h>
#include <string.h>

#include "common/pb.h"

const char *mdl_phase_name(Caffe__Phase phase) {
  return phase == CAFFE__PHASE__TRAIN ? "TRAIN" : "TEST";
}

static mdl_status add_net(const mdl_job *job, mdl_compiled *c, Caffe__Phase phase, int test_index,
                          const Caffe__NetState *state, const mdl_compile_opts *opts,
                          mdl_source_resolver resolver, void *ctx, mdl_error *err) {
  if (opts->phase >= 0 && opts->phase != (int)phase) return MDL_OK;
  const Caffe__NetParameter *net = mdl_job_net(job, phase, test_index, err);
  if (!net) return err ? err->code : MDL_ERR_INVALID;
  Caffe__NetState def = CAFFE__NET_STATE__INIT;
  if (!state) state = &def;
  Caffe__NetState st = *state; /* the phase is the net's role; a state's phase cannot override */
  st.has_phase = 1;
  st.phase = phase;
  char **stages = NULL;
  if (opts->n_stage) { /* the solver's stages, then the caller's */
    stages = mdl_xcalloc(st.n_stage + (size_t)opts->n_stage, sizeof *stages);
    if (st.n_stage) memcpy(stages, st.stage, st.n_stage * sizeof *stages);
    memcpy(stages + st.n_stage, opts->stage, (size_t)opts->n_stage * sizeof *stages);
    st.stage = stages;
    st.n_stage += (size_t)opts->n_stage;
  }
  mdl_graph *g = NULL;
  const char *file = job->net_path ? job->net_path : job->path;
  mdl_status s = mdl_graph_build(net, &st, file, resolver, ctx, &g, err);
  free(stages);
  if (s) {
    if (err) mdl_error_prefix(err, "%s net: ", mdl_phase_name(phase));
    return s;
  }
  c->nets = mdl_xrealloc(c->nets, (size_t)(c->n_nets + 1) * sizeof *c->nets);
  c->nets[c->n_nets++] = (mdl_phase_net){phase, test_index, g};
  return MDL_OK;
}

mdl_status mdl_compile_job(const mdl_job *job, mdl_source_resolver resolver, void *ctx,
                           mdl_compiled **out, mdl_error *err) {
  return mdl_compile_job_opts(job, resolver, ctx, NULL, out, err);
}

mdl_status mdl_compile_job_opts(const mdl_job *job, mdl_source_resolver resolver, void *ctx,
                                const mdl_compile_opts *opts, mdl_compiled **out, mdl_error *err) {
  *out = NULL;
  mdl_compile_opts defaults = MDL_COMPILE_OPTS_DEFAULT;
  if (!opts) opts = &defaults;
  const Caffe__SolverParameter *s = job->solver;
  mdl_compiled *c = mdl_xcalloc(1, sizeof *c);
  mdl_status st = add_net(job, c, CAFFE__PHASE__TRAIN, 0, s->train_state, opts, resolver, ctx, err);
  /* Test nets as Caffe counts them: each test_net_param, then the generic
   * net once more for every test_iter entry beyond those. */
  size_t n_test = s->n_test_net_param;
  if (s->net_param && s->n_test_iter > n_test) n_test = s->n_test_iter;
  if (job->kind == MDL_KIND_NET && n_test == 0) n_test = 1;
  for (size_t i = 0; st == MDL_OK && i < n_test; i++) {
    const Caffe__NetState *state = i < s->n_test_state ? s->test_state[i] : NULL;
    st = add_net(job, c, CAFFE__PHASE__TEST, (int)i, state, opts, resolver, ctx, err);
  }
  if (st) {
    mdl_compiled_free(c);
    return st;
  }
  *out = c;
  return MDL_OK;
}

void mdl_compiled_free(mdl_compiled *c) {
  if (!c) return;
  for (int i = 0; i < c->n_nets; i++) mdl_graph_free(c->nets[i].graph);
  free(c->nets);
  free(c);
}

static Memdl__PhaseNet *phase_net(const mdl_phase_net *pn) {
  Memdl__PhaseNet *p = mdl_xmalloc(sizeof *p);
  memdl__phase_net__init(p);
  p->has_phase = 1;
  p->phase = pn->phase;
  p->net = mdl_pb_dup(pn->graph->net);
  const mdl_graph *g = pn->graph;
  p->n_blob = (size_t)g->n_blobs;
  p->blob = mdl_xcalloc(p->n_blob ? p->n_blob : 1, sizeof *p->blob);
  for (int i = 0; i < g->n_blobs; i++) {
    Memdl__BlobInfo *b = mdl_xmalloc(sizeof *b);
    memdl__blob_info__init(b);
    b->name = mdl_xstrdup(g->blob_name[i]);
    b->n_shape = (size_t)g->blob_shape[i].n;
    b->shape = mdl_xcalloc(b->n_shape ? b->n_shape : 1, sizeof *b->shape);
    for (int k = 0; k < g->blob_shape[i].n; k++) b->shape[k] = g->blob_shape[i].d[k];
    p->blob[i] = b;
  }
  return p;
}

Memdl__Plan *mdl_plan_new(const mdl_job *job, const mdl_compiled *c) {
  Memdl__Plan *plan = mdl_xmalloc(sizeof *plan);
  memdl__plan__init(plan);
  const Memdl__Job *j = job->job;
  plan->job_name = mdl_xstrdup(j->name ? j->name : job->path);
  /* The plan's nets are the resolved ones; the solver keeps only its
   * settings so the nets are not shipped twice. */
  Caffe__SolverParameter *s = mdl_pb_dup(job->solver);
  mdl_pb_free(s->net_param);
  mdl_pb_free(s->train_net_param);
  s->net_param = s->train_net_param = NULL;
  for (size_t i = 0; i < s->n_test_net_param; i++) mdl_pb_free(s->test_net_param[i]);
  free(s->test_net_param);
  s->test_net_param = NULL;
  s->n_test_net_param = 0;
  plan->solver = s;
  plan->n_net = (size_t)c->n_nets;
  plan->net = mdl_xcalloc(plan->n_net ? plan->n_net : 1, sizeof *plan->net);
  for (int i = 0; i < c->n_nets; i++) plan->net[i] = phase_net(&c->nets[i]);
  plan->n_data = j->n_data;
  plan->data = mdl_xcalloc(j->n_data ? j->n_data : 1, sizeof *plan->data);
  for (size_t i = 0; i < j->n_data; i++) plan->data[i] = mdl_pb_dup(j->data[i]);
  plan->sync = mdl_pb_dup(j->sync);
  plan->cluster = mdl_pb_dup(j->cluster);
  plan->n_accept = j->n_accept;
  plan->accept = mdl_xcalloc(j->n_accept ? j->n_accept : 1, sizeof *plan->accept);
  for (size_t i = 0; i < j->n_accept; i++) plan->accept[i] = mdl_pb_dup(j->accept[i]);
  return plan;
}

/* Caffe's im2col column buffer of one image for a convolution (0 for other
 * layers): kernel volume x output plane, input and output swapped for
 * Deconvolution. */
static size_t columns_of(const mdl_graph *g, const mdl_graph_layer *gl) {
  const char *t = gl->param->type;
  bool deconv = t && !strcmp(t, "Deconvolution");
  if (!t || (!deconv && strcmp(t, "Convolution")) || gl->n_bottom < 1 || gl->n_top < 1) return 0;
  const mdl_shape *im = &g->blob_shape[gl->bottom[0]], *out = &g->blob_shape[gl->top[0]];
  if (deconv) im = out, out = &g->blob_shape[gl->bottom[0]];
  if (im->n < 2 || out->n < 2 || gl->n_param < 1 || gl->param_shape[0].n < 2) return 0;
  int64_t kernel = 1, plane = 1;
  for (int k = 2; k < gl->param_shape[0].n; k++) kernel *= gl->param_shape[0].d[k];
  for (int k = 2; k < out->n; k++) plane *= out->d[k];
  return (size_t)(im->d[1] * kernel * plane) * sizeof(float);
}

/* History blobs per parameter of the solver (SGD's momentum: one). */
static int solver_histories(const Caffe__SolverParameter *s) {
  if (!s) return 1;
  if (s->type) return !strcmp(s->type, "Adam") || !strcmp(s->type, "AdaDelta") ? 2 : 1;
  return s->solver_type == CAFFE__SOLVER_PARAMETER__SOLVER_TYPE__ADAM ||
                 s->solver_type == CAFFE__SOLVER_PARAMETER__SOLVER_TYPE__ADADELTA
             ? 2
             : 1;
}

static bool train_has_layer(const mdl_compiled *c, const char *name) {
  if (!name || c->n_nets == 0 || c->nets[0].phase != CAFFE__PHASE__TRAIN) return false;
  const mdl_graph *t = c->nets[0].graph;
  for (int i = 0; i < t->n_layers; i++)
    if (t->layers[i].param->name && !strcmp(t->layers[i].param->name, name)) return true;
  return false;
}

void mdl_plan_memory(const mdl_compiled *c, int i, const Caffe__SolverParameter *solver,
                     mdl_mem_figures *out) {
  const mdl_graph *g = c->nets[i].graph;
  bool train = c->nets[i].phase == CAFFE__PHASE__TRAIN;
  mdl_mem_layer *ml = mdl_mem_layers_of(g);
  mdl_mem_plan *p = mdl_mem_plan_new(g, ml, true);
  *out = p->fig;
  bool backward = p->n_steps > g->n_layers;
  mdl_mem_plan_free(p);
  free(ml);
  size_t values = 0;
  for (int l = 0; l < g->n_layers; l++) {
    const mdl_graph_layer *gl = &g->layers[l];
    size_t cols = columns_of(g, gl);
    out->workspace_naive += cols;
    if (cols > out->workspace) out->workspace = cols;
    if (!train && train_has_layer(c, gl->param->name)) continue; /* shared with TRAIN */
    for (int k = 0; k < gl->n_param; k++) values += (size_t)mdl_shape_count(&gl->param_shape[k]);
  }
  /* the runtime keeps a gradient buffer beside every parameter buffer */
  out->params = 2 * values * sizeof(float);
  out->solver_state =
      train && backward ? (size_t)solver_histories(solver) * values * sizeof(float) : 0;
}
