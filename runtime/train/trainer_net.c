/* The "net" trainer: the real engine behind the distributed runtime. From a
 * Plan (the compiler's resolved nets) and partition lineages it builds the
 * TRAIN net and its TEST nets (sharing parameters, one activation arena),
 * rebuilds its partitions with the data pipeline and feeds them through
 * batchers, and runs Caffe's iteration (iter_size passes, then the
 * solver's update) tau times per round. Mirrors runtime/train/train.c's loop for
 * one worker; owns none of the maths (net.h, solver.h, dataset.h).
 *
 * Batches: batch k of a worker is a function of its partitions and k only
 * (mdl_batcher_seek), k = iteration * iter_size + pass, so a resumed or
 * repeated run sees the same data. A distributed net reads one pipeline
 * data layer per phase (Data, ImageData, MemoryData, HDF5Data): its data
 * set is what gets partitioned. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/pb.h"
#include "runtime/data/dataset.h"
#include "runtime/data/dataset_resolver.h"
#include "runtime/engine/net.h"
#include "runtime/engine/threadpool.h"
#include "runtime/solver/caffemodel.h"
#include "runtime/solver/solver.h"
#include "runtime/train/device.h"
#include "runtime/train/feed.h"
#include "runtime/train/trainer.h"

#define STATE_MAGIC 0x4e455453u /* "NETS" */

typedef struct part_set {
  Memdl__DataSet *set; /* the resolved data set the lineages describe (owned) */
  mdl_partition **part;
  Memdl__PartitionLineage **lin; /* owned copies, parallel to part */
  int n;
  mdl_transform *xf;
  mdl_feed_cursor cur; /* the batcher over the partitions; shared by the nets reading them */
  bool dirty;          /* partitions changed: rebuild the batcher */
} part_set;

typedef struct phase_run {
  mdl_graph *g;
  mdl_net *net;
  int src_layer;   /* the pipeline data layer (-1: none) */
  mdl_feeder feed; /* its tops (bound when src_layer >= 0) */
  bool shuffle;
  uint64_t shuffle_seed;
  part_set *ps; /* the partitions feeding it */
} phase_run;

typedef struct netr {
  Memdl__Plan *plan; /* borrowed from the caller, outlives the trainer */
  mdl_trainer_opts o;
  mdl_threadpool *pool;
  const mdl_backend *be; /* from the device the driver named */
  mdl_workspace ws;
  float *arena;
  phase_run train;
  phase_run *tests;
  int n_tests;
  part_set train_ps, test_ps;
  mdl_solver *solver;
  char *base_dir;
  mdl_trainer_stats stats;
} netr;

/* --- the plan's nets and their data sets ---------------------------------- */

static const Memdl__PhaseNet *plan_net(const Memdl__Plan *plan, Caffe__Phase phase, int index) {
  int k = 0;
  for (size_t i = 0; i < plan->n_net; i++)
    if (plan->net[i]->phase == phase && plan->net[i]->net && k++ == index) return plan->net[i];
  return NULL;
}

static int count_nets(const Memdl__Plan *plan, Caffe__Phase phase) {
  int k = 0;
  for (size_t i = 0; i < plan->n_net; i++) k += plan->net[i]->phase == phase && plan->net[i]->net;
  return k;
}

/* The one pipeline data layer of net (NULL with no such layer; an error
 * for several). */
static mdl_status data_layer(const Caffe__NetParameter *net, const Caffe__LayerParameter **out,
                             mdl_error *err) {
  *out = NULL;
  for (size_t i = 0; i < net->n_layer; i++) {
    if (!mdl_data_is_pipeline_layer(net->layer[i])) continue;
    if (*out)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "layers \"%s\" and \"%s\" both read data: a distributed run partitions "
                        "one data layer per net",
                        (*out)->name ? (*out)->name : "", net->layer[i]->name);
    *out = net->layer[i];
  }
  return MDL_OK;
}

/* The resolved data set a phase's net reads, with the layer's batch and
 * shuffle settings. *set NULL when the net reads no pipeline data. */
static mdl_status phase_set(const Memdl__Plan *plan, Caffe__Phase phase, int index,
                            Memdl__DataSet **set, mdl_layer_data *ld, mdl_error *err) {
  *set = NULL;
  memset(ld, 0, sizeof *ld);
  const Memdl__PhaseNet *pn = plan_net(plan, phase, index);
  if (!pn) return MDL_OK;
  const Caffe__LayerParameter *lp;
  mdl_status st = data_layer(pn->net, &lp, err);
  if (st != MDL_OK || !lp) return st;
  st = mdl_data_for_layer(lp, plan->data, plan->n_data, ld, err);
  if (st != MDL_OK) return st;
  st = mdl_data_resolve(plan->data, plan->n_data, ld->set, set, err);
  if (st != MDL_OK) mdl_layer_data_clear(ld);
  return st;
}

static mdl_status net_lineages(const Memdl__Plan *plan, const char *base_dir, int num_workers,
                               Caffe__Phase phase, Memdl__PartitionLineage ***out, size_t *n,
                               mdl_error *err) {
  *out = NULL;
  *n = 0;
  Memdl__DataSet *set;
  mdl_layer_data ld;
  mdl_status st = phase_set(plan, phase, 0, &set, &ld, err);
  if (st != MDL_OK || !set) return st;
  /* TEST nets beyond the first must read the same data to be spread */
  for (int i = 1; phase == CAFFE__PHASE__TEST && st == MDL_OK && i < count_nets(plan, phase); i++) {
    Memdl__DataSet *other;
    mdl_layer_data ld2;
    st = phase_set(plan, phase, i, &other, &ld2, err);
    if (st == MDL_OK && other && (!other->name || !set->name || strcmp(other->name, set->name)))
      st = mdl_errorf(err, MDL_ERR_INVALID,
                      "TEST nets 0 and %d read different data sets (\"%s\", \"%s\"): a "
                      "distributed run spreads one test data set",
                      i, set->name ? set->name : "", other->name ? other->name : "");
    mdl_pb_free(other);
    mdl_layer_data_clear(&ld2);
  }
  uint32_t p = set->partitions ? set->partitions : (uint32_t)(num_workers > 0 ? num_workers : 1);
  if (st == MDL_OK) {
    Memdl__PartitionLineage **l = mdl_xcalloc(p, sizeof *l);
    for (uint32_t i = 0; i < p; i++) l[i] = mdl_lineage_new(set, i, p, base_dir);
    *out = l;
    *n = p;
  }
  mdl_pb_free(set);
  mdl_layer_data_clear(&ld);
  return st;
}

/* --- construction ----------------------------------------------------------- */

static void ps_clear(part_set *ps) {
  for (int i = 0; i < ps->n; i++) {
    mdl_partition_free(ps->part[i]);
    mdl_pb_free(ps->lin[i]);
  }
  free(ps->part);
  free(ps->lin);
  mdl_batcher_free(ps->cur.b);
  mdl_transform_free(ps->xf);
  mdl_pb_free(ps->set);
  memset(ps, 0, sizeof *ps);
}

static void run_free(phase_run *r) {
  mdl_feeder_release(&r->feed);
  mdl_net_free(r->net);
  mdl_graph_free(r->g);
  memset(r, 0, sizeof *r);
}

static void net_destroy(void *ctx) {
  netr *t = ctx;
  if (!t) return;
  for (int i = 0; i < t->n_tests; i++) run_free(&t->tests[i]);
  free(t->tests);
  run_free(&t->train);
  ps_clear(&t->train_ps);
  ps_clear(&t->test_ps);
  if (t->arena) mdl_backend_free(t->be, t->arena);
  mdl_workspace_release(&t->ws);
  mdl_solver_free(t->solver);
  mdl_threadpool_free(t->pool);
  mdl_trainer_stats_clear(&t->stats);
  free(t->base_dir);
  free(t);
}

static mdl_status build_run(netr *t, const Memdl__PhaseNet *pn, Caffe__Phase phase, int index,
                            const mdl_net *share, phase_run *r, mdl_error *err) {
  Caffe__NetState state = CAFFE__NET_STATE__INIT;
  state.has_phase = 1;
  state.phase = phase;
  mdl_data_catalog cat = {t->plan->data, t->plan->n_data, t->base_dir};
  mdl_status st = mdl_graph_build(pn->net, &state, NULL, mdl_data_source_info, &cat, &r->g, err);
  if (st != MDL_OK) return st;
  mdl_net_options no = {.backend = t->be,
                        .pool = t->pool,
                        .ws = &t->ws,
                        .seed = t->o.seed,
                        .share_from = share,
                        .defer_arena = true};
  st = mdl_net_new(r->g, &no, &r->net, err);
  if (st != MDL_OK) return st;
  r->src_layer = -1;
  if (mdl_net_n_sources(r->net) > 1)
    return mdl_errorf(
        err, MDL_ERR_INVALID, "%s net %d has %d data layers: a distributed run partitions one",
        phase == CAFFE__PHASE__TRAIN ? "TRAIN" : "TEST", index, mdl_net_n_sources(r->net));
  if (mdl_net_n_sources(r->net) == 1) {
    r->src_layer = mdl_net_source_layer(r->net, 0);
    mdl_feeder_bind(&r->feed, r->net, r->src_layer,
                    phase == CAFFE__PHASE__TRAIN ? &t->train_ps.cur : &t->test_ps.cur);
    Memdl__DataSet *set;
    mdl_layer_data ld;
    st = phase_set(t->plan, phase, index, &set, &ld, err);
    if (st != MDL_OK) return st;
    r->shuffle = ld.shuffle;
    r->shuffle_seed = set ? set->shuffle_seed : 1;
    mdl_pb_free(set);
    mdl_layer_data_clear(&ld);
  }
  return MDL_OK;
}

static mdl_status net_create(const Memdl__Plan *plan, const mdl_trainer_opts *o, void **out,
                             mdl_error *err) {
  *out = NULL;
  const mdl_backend *be;
  /* the nets run whole on one device: auto falls back to the CPU when the
   * GPU lacks a layer, cuda refuses naming them */
  const Caffe__NetParameter **nets = mdl_xcalloc(plan->n_net + 1, sizeof *nets);
  for (size_t i = 0; i < plan->n_net; i++) nets[i] = plan->net[i]->net;
  char note[4096];
  mdl_status st =
      mdl_device_resolve(o->device, nets, (int)plan->n_net, &be, note, sizeof note, err);
  free(nets);
  if (st != MDL_OK) return st;
  if (note[0]) fprintf(stderr, "%s\n", note);
  if (!plan->solver) return mdl_errorf(err, MDL_ERR_INVALID, "the plan has no solver");
  const Memdl__PhaseNet *tn = plan_net(plan, CAFFE__PHASE__TRAIN, 0);
  if (!tn) return mdl_errorf(err, MDL_ERR_INVALID, "the plan has no TRAIN net");
  netr *t = mdl_xcalloc(1, sizeof *t);
  t->plan = (Memdl__Plan *)plan;
  t->o = *o;
  t->be = be;
  t->base_dir = mdl_xstrdup(o->base_dir ? o->base_dir : ".");
  mdl_workspace_init(&t->ws);
  st = mdl_threadpool_new(o->threads, &t->pool, err);
  if (st == MDL_OK) st = build_run(t, tn, CAFFE__PHASE__TRAIN, 0, NULL, &t->train, err);
  int n_tests = count_nets(plan, CAFFE__PHASE__TEST);
  if (st == MDL_OK && n_tests) t->tests = mdl_xcalloc((size_t)n_tests, sizeof *t->tests);
  for (int i = 0; st == MDL_OK && i < n_tests; i++) {
    st = build_run(t, plan_net(plan, CAFFE__PHASE__TEST, i), CAFFE__PHASE__TEST, i, t->train.net,
                   &t->tests[i], err);
    t->n_tests++;
  }
  if (st == MDL_OK) {
    int nl;
    const mdl_solver_blob *bl = mdl_net_learnable(t->train.net, &nl);
    st = mdl_solver_new(t->be, plan->solver, bl, nl, mdl_net_param_count(t->train.net), &t->solver,
                        err);
  }
  if (st != MDL_OK) {
    net_destroy(t);
    return st;
  }
  *out = t;
  return MDL_OK;
}

/* Activations only when something runs (the driver never does). */
static mdl_status ensure_arena(netr *t, mdl_error *err) {
  if (t->arena) return MDL_OK;
  size_t need = mdl_net_arena_floats(t->train.net);
  for (int i = 0; i < t->n_tests; i++)
    if (mdl_net_arena_floats(t->tests[i].net) > need) need = mdl_net_arena_floats(t->tests[i].net);
  t->arena = mdl_backend_alloc(t->be, (int64_t)(need ? need : 1));
  if (!t->arena)
    return mdl_errorf(err, MDL_ERR_NOMEM, "activations of %zu MiB do not fit",
                      need * sizeof(float) >> 20);
  mdl_net_bind_arena(t->train.net, t->arena);
  for (int i = 0; i < t->n_tests; i++) mdl_net_bind_arena(t->tests[i].net, t->arena);
  return MDL_OK;
}

static size_t net_param_count(void *ctx) {
  return mdl_net_param_count(((netr *)ctx)->train.net);
}

static mdl_status net_init_weights(void *ctx, float *w, mdl_error *err) {
  netr *t = ctx;
  mdl_net_params_get(t->train.net, w);
  return MDL_OK;
}

/* --- partitions ------------------------------------------------------------- */

static part_set *phase_ps(netr *t, Caffe__Phase phase) {
  return phase == CAFFE__PHASE__TRAIN ? &t->train_ps : &t->test_ps;
}

static mdl_status net_add(void *ctx, Caffe__Phase phase, Memdl__PartitionLineage *const *parts,
                          size_t n, mdl_error *err) {
  netr *t = ctx;
  part_set *ps = phase_ps(t, phase);
  for (size_t i = 0; i < n; i++) {
    const Memdl__PartitionLineage *l = parts[i];
    for (int k = 0; k < ps->n; k++)
      if (ps->lin[k]->index == l->index &&
          !strcmp(ps->lin[k]->data->name ? ps->lin[k]->data->name : "",
                  l->data->name ? l->data->name : ""))
        return mdl_errorf(err, MDL_ERR_INVALID, "partition %s/%u held twice",
                          l->data->name ? l->data->name : "", l->index);
    if (l->base_dir && strcmp(t->base_dir, l->base_dir)) {
      free(t->base_dir);
      t->base_dir = mdl_xstrdup(l->base_dir);
    }
    mdl_partition *p = NULL;
    mdl_build_opts bo = {.memory_budget_bytes = 0};
    mdl_status st = mdl_partition_build(l, &bo, &p, err);
    if (st != MDL_OK) return st;
    if (ps->n && (p->channels != ps->part[0]->channels || p->height != ps->part[0]->height ||
                  p->width != ps->part[0]->width || p->dtype != ps->part[0]->dtype)) {
      mdl_partition_free(p);
      return mdl_errorf(err, MDL_ERR_INVALID, "partition %u: records differ from the others'",
                        l->index);
    }
    ps->part = mdl_xrealloc(ps->part, (size_t)(ps->n + 1) * sizeof *ps->part);
    ps->lin = mdl_xrealloc(ps->lin, (size_t)(ps->n + 1) * sizeof *ps->lin);
    ps->part[ps->n] = p;
    ps->lin[ps->n] = mdl_pb_dup(l);
    ps->n++;
    ps->dirty = true;
  }
  /* partitions in index order, whatever order they came in */
  for (int i = 1; i < ps->n; i++)
    for (int k = i; k > 0 && ps->lin[k]->index < ps->lin[k - 1]->index; k--) {
      mdl_partition *tp = ps->part[k];
      ps->part[k] = ps->part[k - 1];
      ps->part[k - 1] = tp;
      Memdl__PartitionLineage *tl = ps->lin[k];
      ps->lin[k] = ps->lin[k - 1];
      ps->lin[k - 1] = tl;
    }
  return MDL_OK;
}

static mdl_status net_remove(void *ctx, Caffe__Phase phase, const char *data, uint32_t index,
                             mdl_error *err) {
  netr *t = ctx;
  part_set *ps = phase_ps(t, phase);
  for (int k = 0; k < ps->n; k++)
    if (ps->lin[k]->index == index &&
        !strcmp(ps->lin[k]->data->name ? ps->lin[k]->data->name : "", data)) {
      mdl_partition_free(ps->part[k]);
      mdl_pb_free(ps->lin[k]);
      memmove(ps->part + k, ps->part + k + 1, (size_t)(ps->n - k - 1) * sizeof *ps->part);
      memmove(ps->lin + k, ps->lin + k + 1, (size_t)(ps->n - k - 1) * sizeof *ps->lin);
      ps->n--;
      ps->dirty = true;
      return MDL_OK;
    }
  return mdl_errorf(err, MDL_ERR_INVALID, "partition %s/%u is not held", data, index);
}

static uint64_t net_samples(void *ctx, Caffe__Phase phase) {
  part_set *ps = phase_ps(ctx, phase);
  uint64_t n = 0;
  for (int i = 0; i < ps->n; i++) n += (uint64_t)ps->part[i]->n;
  return n;
}

/* A batcher over the phase's partitions for run r (rebuilt when they
 * changed). */
static mdl_status ensure_batcher(netr *t, part_set *ps, const phase_run *r, mdl_error *err) {
  if (ps->cur.b && !ps->dirty) return MDL_OK;
  mdl_batcher_free(ps->cur.b);
  ps->cur.b = NULL;
  mdl_transform_free(ps->xf);
  ps->xf = NULL;
  if (ps->n == 0) return mdl_errorf(err, MDL_ERR_INVALID, "no partitions to read");
  const mdl_partition *p0 = ps->part[0];
  mdl_status st = mdl_transform_new(ps->lin[0]->data, t->base_dir, p0->channels, p0->height,
                                    p0->width, &ps->xf, err);
  if (st != MDL_OK) return st;
  int c, h, w;
  mdl_transform_out_shape(ps->xf, &c, &h, &w);
  st = mdl_feeder_check(&r->feed, c, h, w, err);
  if (st != MDL_OK) return st;
  mdl_batch_opts bo = {.batch_size = (int)r->feed.batch,
                       .train = r->g->phase == CAFFE__PHASE__TRAIN,
                       .shuffle = r->shuffle,
                       .seed = r->shuffle_seed};
  st = mdl_batcher_new(ps->part, ps->n, ps->xf, &bo, &ps->cur.b, err);
  if (st == MDL_OK) {
    ps->cur.next = 0;
    ps->dirty = false;
  }
  return st;
}

static mdl_status feed(phase_run *r, uint64_t k, mdl_error *err) {
  return r->src_layer < 0 ? MDL_OK : mdl_feeder_fill(&r->feed, k, err);
}

/* --- running ---------------------------------------------------------------- */

static mdl_status feed_train(void *ctx, uint64_t k, mdl_error *err) {
  netr *t = ctx;
  return feed(&t->train, k, err);
}

static void add_output(mdl_trainer_stats *s, const char *name, double v) {
  int k = 0;
  while (k < s->n_outputs && strcmp(s->outputs[k].name, name)) k++;
  if (k == s->n_outputs) {
    s->outputs = mdl_xrealloc(s->outputs, (size_t)(k + 1) * sizeof *s->outputs);
    s->outputs[k].name = mdl_xstrdup(name);
    s->outputs[k].n = 1;
    s->outputs[k].sum = mdl_xcalloc(1, sizeof(double));
    s->n_outputs++;
  }
  s->outputs[k].sum[0] += v;
}

static mdl_status net_run(void *ctx, int tau, int iter_start, const float *w_in, float *w_out,
                          const volatile int *cancel, mdl_trainer_stats *stats, mdl_error *err) {
  netr *t = ctx;
  double t0 = mdl_now();
  mdl_trainer_stats_clear(&t->stats);
  mdl_status st = ensure_arena(t, err);
  if (st == MDL_OK) st = ensure_batcher(t, &t->train_ps, &t->train, err);
  if (st != MDL_OK) return st;
  mdl_net *net = t->train.net;
  mdl_net_params_put(net, w_in);
  const mdl_solver_config *cfg = mdl_solver_cfg(t->solver);
  int step = 0;
  if (cfg->policy == MDL_LR_MULTISTEP)
    while (step < cfg->n_stepvalue && cfg->stepvalue[step] < iter_start) step++;
  mdl_solver_set_position(t->solver, iter_start, step);
  int iter_size = cfg->iter_size > 0 ? cfg->iter_size : 1;
  for (int it = 0; it < tau && st == MDL_OK; it++) {
    if (cancel && *cancel) return mdl_errorf(err, MDL_ERR_INTERNAL, "cancelled");
    int iter = iter_start + it;
    double loss = 0;
    st = mdl_net_accumulate(net, iter, iter_size, feed_train, t, &loss, err);
    if (st != MDL_OK) break;
    mdl_solver_update(t->solver, mdl_net_params(net), mdl_net_param_diffs(net));
    /* a device reports a failed kernel or library call only here */
    if ((st = mdl_backend_sync(t->be, err)) != MDL_OK) break;
    t->stats.loss_sum += loss;
    t->stats.samples += (uint64_t)(t->train.feed.batch * iter_size);
    t->stats.iterations++;
    add_output(&t->stats, "loss", loss);
  }
  if (st != MDL_OK) return st;
  mdl_net_params_get(net, w_out);
  t->stats.compute_s = mdl_now() - t0;
  *stats = t->stats;
  return MDL_OK;
}

static mdl_status net_test(void *ctx, int test_net, int batches, const float *w,
                           mdl_trainer_stats *stats, mdl_error *err) {
  netr *t = ctx;
  double t0 = mdl_now();
  mdl_trainer_stats_clear(&t->stats);
  if (test_net < 0 || test_net >= t->n_tests)
    return mdl_errorf(err, MDL_ERR_INVALID, "no TEST net #%d", test_net);
  phase_run *r = &t->tests[test_net];
  mdl_status st = ensure_arena(t, err);
  if (st == MDL_OK && r->src_layer >= 0) st = ensure_batcher(t, &t->test_ps, r, err);
  if (st != MDL_OK) return st;
  mdl_net_params_put(t->train.net, w);
  uint64_t nb = (uint64_t)batches;
  if (batches <= 0)
    nb = r->src_layer >= 0 ? (net_samples(t, CAFFE__PHASE__TEST) + (uint64_t)r->feed.batch - 1) /
                                 (uint64_t)r->feed.batch
                           : 1;
  mdl_net *net = r->net;
  mdl_net_set_iteration(net, 0);
  for (uint64_t k = 0; k < nb && st == MDL_OK; k++) {
    if (r->src_layer >= 0) st = feed(r, k, err);
    if (st != MDL_OK) break;
    mdl_net_forward(net);
    st = mdl_net_check_fault(net, err);
    if (st != MDL_OK) {
      mdl_error_prefix(err, "TEST net #%d, batch %llu: ", test_net, (unsigned long long)k);
      break;
    }
    for (int o = 0; o < mdl_net_n_outputs(net); o++) {
      int b = mdl_net_output_blob(net, o);
      const mdl_tensor *x = mdl_net_blob(net, b);
      if (x->count == 1)
        add_output(&t->stats, mdl_net_blob_name(net, b), mdl_net_blob_first(net, b));
    }
    t->stats.iterations++;
    t->stats.samples += (uint64_t)r->feed.batch;
  }
  if (st != MDL_OK) return st;
  t->stats.compute_s = mdl_now() - t0;
  *stats = t->stats;
  return MDL_OK;
}

static mdl_status net_get_state(void *ctx, uint8_t **buf, size_t *len, mdl_error *err) {
  netr *t = ctx;
  int sets = mdl_solver_history_sets(t->solver);
  size_t total = mdl_solver_total(t->solver);
  size_t n = 12 + (size_t)sets * total * sizeof(float);
  uint8_t *b = malloc(n);
  if (!b) return mdl_errorf(err, MDL_ERR_NOMEM, "solver state of %zu bytes", n);
  uint32_t hdr[3] = {STATE_MAGIC, (uint32_t)sets, (uint32_t)total};
  memcpy(b, hdr, 12);
  for (int k = 0; k < sets; k++)
    mdl_solver_history_get(t->solver, k, (float *)(b + 12 + (size_t)k * total * sizeof(float)));
  *buf = b;
  *len = n;
  return MDL_OK;
}

static mdl_status net_set_state(void *ctx, const uint8_t *buf, size_t len, mdl_error *err) {
  netr *t = ctx;
  int sets = mdl_solver_history_sets(t->solver);
  size_t total = mdl_solver_total(t->solver);
  uint32_t hdr[3];
  if (len < 12) return mdl_errorf(err, MDL_ERR_INVALID, "solver state too short");
  memcpy(hdr, buf, 12);
  if (hdr[0] != STATE_MAGIC || hdr[1] != (uint32_t)sets || hdr[2] != total ||
      len != 12 + (size_t)sets * total * sizeof(float))
    return mdl_errorf(err, MDL_ERR_INVALID, "solver state does not match the net");
  for (int k = 0; k < sets; k++)
    mdl_solver_history_put(t->solver, k,
                           (const float *)(buf + 12 + (size_t)k * total * sizeof(float)));
  return MDL_OK;
}

/* The single-worker run's checker, on the driver's copy of the net. */
static bool net_find_nonfinite(void *ctx, const float *w, char *where, size_t n) {
  netr *t = ctx;
  mdl_net_params_put(t->train.net, w);
  return mdl_net_find_nonfinite_param(t->train.net, where, n);
}

static mdl_status net_save(void *ctx, const float *w, const char *path, mdl_error *err) {
  netr *t = ctx;
  mdl_net_params_put(t->train.net, w);
  return mdl_caffemodel_save(t->train.net, path, err);
}

static mdl_status net_load(void *ctx, float *w, const char *path, mdl_error *err) {
  netr *t = ctx;
  Caffe__NetParameter *np;
  mdl_status st = mdl_caffemodel_read(path, &np, err);
  if (st != MDL_OK) return st;
  int loaded = 0;
  mdl_net_params_put(t->train.net, w);
  st = mdl_caffemodel_copy(t->train.net, np, path, &loaded, err);
  caffe__net_parameter__free_unpacked(np, NULL);
  char where[400];
  if (st == MDL_OK && loaded == 0)
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: no layer of it is in the TRAIN net", path);
  if (st == MDL_OK && mdl_net_find_nonfinite_param(t->train.net, where, sizeof where))
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: non-finite weights: %s", path, where);
  if (st == MDL_OK) mdl_net_params_get(t->train.net, w);
  return st;
}

static uint64_t net_batch_samples(void *ctx, Caffe__Phase phase) {
  netr *t = ctx;
  if (phase == CAFFE__PHASE__TRAIN) {
    const mdl_solver_config *cfg = mdl_solver_cfg(t->solver);
    int iter_size = cfg->iter_size > 0 ? cfg->iter_size : 1;
    return t->train.src_layer >= 0 ? (uint64_t)t->train.feed.batch * (uint64_t)iter_size : 0;
  }
  uint64_t most = 0;
  for (int i = 0; i < t->n_tests; i++)
    if (t->tests[i].src_layer >= 0 && (uint64_t)t->tests[i].feed.batch > most)
      most = (uint64_t)t->tests[i].feed.batch;
  return most;
}

/* Accuracy layers' first top is a fraction of the batch: [0, 1]. */
static bool net_output_range(void *ctx, Caffe__Phase phase, const char *name, double *lo,
                             double *hi) {
  netr *t = ctx;
  int n = phase == CAFFE__PHASE__TRAIN ? 1 : t->n_tests;
  for (int i = 0; i < n; i++) {
    const phase_run *r = phase == CAFFE__PHASE__TRAIN ? &t->train : &t->tests[i];
    if (!r->g) continue;
    for (int l = 0; l < r->g->n_layers; l++) {
      const mdl_graph_layer *gl = &r->g->layers[l];
      if (gl->n_top < 1 || !gl->param->type || strcmp(gl->param->type, "Accuracy")) continue;
      if (strcmp(mdl_net_blob_name(r->net, gl->top[0]), name)) continue;
      *lo = 0;
      *hi = 1;
      return true;
    }
  }
  return false;
}

const mdl_trainer_i mdl_trainer_net = {
    .name = "net",
    .lineages = net_lineages,
    .create = net_create,
    .destroy = net_destroy,
    .param_count = net_param_count,
    .init_weights = net_init_weights,
    .add_partitions = net_add,
    .remove_partition = net_remove,
    .samples = net_samples,
    .run = net_run,
    .test = net_test,
    .get_state = net_get_state,
    .set_state = net_set_state,
    .save = net_save,
    .load = net_load,
    .batch_samples = net_batch_samples,
    .output_range = net_output_range,
    .find_nonfinite = net_find_nonfinite,
};
