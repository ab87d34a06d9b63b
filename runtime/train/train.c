/* The local trainer: nets, data feeding, Caffe's solve loop, tests,
 * snapshots, metrics and acceptance. See train.h. */
#include "runtime/train/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fileio.h"
#include "common/pb.h"
#include "common/rng.h"
#include "compiler/plan.h"
#include "runtime/data/dataset.h"
#include "runtime/data/dataset_resolver.h"
#include "runtime/engine/threadpool.h"
#include "runtime/solver/caffemodel.h"
#include "runtime/train/accept.h"
#include "runtime/train/device.h"
#include "runtime/train/feed.h"
#include "runtime/train/metrics.h"
#include "runtime/train/progress.h"
#include "runtime/train/report.h"

typedef struct netrun {
  mdl_net *net;
  const mdl_graph *g;
  mdl_feeder *feed;        /* one per pipeline data layer */
  mdl_feed_cursor *cursor; /* each feeder's own batcher (NULL: synthetic) */
  int n_feed;
  bool told_wrap; /* said once that a test pass counts records twice */
} netrun;

typedef struct cached_set {
  uint8_t *key;
  size_t key_len;
  mdl_dataset *ds;
} cached_set;

struct mdl_train {
  const mdl_job *job;
  mdl_train_opts opts;
  FILE *log;
  Caffe__SolverParameter *sp; /* owned copy, defaults filled for time/test */
  mdl_compiled *compiled;
  mdl_threadpool *pool;
  const mdl_backend *be;
  mdl_workspace ws;
  float *arena;
  netrun train;
  netrun *tests;
  int n_tests;
  mdl_solver *solver;
  uint64_t seed;
  cached_set *sets;
  int n_sets;
  char *out_dir;
  char *snapshot_prefix;
  int snapshot_every;
  bool resumed;
  mdl_test_result last_test;
  char **names_store;
  int n_names_store;
  char **sum_name;
  double *sum_value;
  int n_sum;
};

/* ---- data: the compiler's resolver and the batchers ---- */

static mdl_status layer_set(const mdl_train *t, const Caffe__LayerParameter *lp,
                            Memdl__DataSet **out, mdl_layer_data *ld, mdl_error *err) {
  const Memdl__Job *j = t->job->job;
  mdl_status st = mdl_data_for_layer(lp, j->data, j->n_data, ld, err);
  if (st != MDL_OK) return st;
  st = mdl_data_resolve(j->data, j->n_data, ld->set, out, err);
  if (st != MDL_OK) mdl_layer_data_clear(ld);
  return st;
}

static mdl_status get_dataset(mdl_train *t, const Memdl__DataSet *set, mdl_dataset **out,
                              mdl_error *err) {
  size_t n = protobuf_c_message_get_packed_size(&set->base);
  uint8_t *key = mdl_xmalloc(n + 1);
  protobuf_c_message_pack(&set->base, key);
  for (int i = 0; i < t->n_sets; i++)
    if (t->sets[i].key_len == n && memcmp(t->sets[i].key, key, n) == 0) {
      free(key);
      *out = t->sets[i].ds;
      return MDL_OK;
    }
  mdl_build_opts bo = {.memory_budget_bytes = t->job->job->memory_budget_mb << 20};
  mdl_dataset *ds = NULL;
  double t0 = mdl_now();
  mdl_status st = mdl_dataset_build(set, t->job->base_dir, 1, &bo, &ds, err);
  if (st != MDL_OK) {
    free(key);
    return st;
  }
  char *src = mdl_data_source_str(set->source);
  fprintf(t->log, "data %s (%s): %lld records of %dx%dx%d, %.1f MiB, loaded in %.2f s\n",
          set->name ? set->name : "(unnamed)", src, (long long)ds->n, ds->channels, ds->height,
          ds->width, (double)ds->bytes / (1 << 20), mdl_now() - t0);
  free(src);
  t->sets = mdl_xrealloc(t->sets, (size_t)(t->n_sets + 1) * sizeof *t->sets);
  t->sets[t->n_sets++] = (cached_set){key, n, ds};
  *out = ds;
  return MDL_OK;
}

static mdl_status setup_feeders(mdl_train *t, netrun *r, mdl_error *err) {
  mdl_net *net = r->net;
  int n = mdl_net_n_sources(net);
  r->feed = mdl_xcalloc((size_t)n + 1, sizeof *r->feed);
  r->cursor = mdl_xcalloc((size_t)n + 1, sizeof *r->cursor);
  for (int k = 0; k < n; k++) {
    int li = mdl_net_source_layer(net, k);
    const mdl_graph_layer *gl = &r->g->layers[li];
    mdl_feeder *f = &r->feed[r->n_feed];
    mdl_feeder_bind(f, net, li, &r->cursor[r->n_feed]);
    r->n_feed++;
    if (!f->data) continue;
    int64_t batch = f->batch;
    if (t->opts.synthetic) continue;
    mdl_layer_data ld;
    Memdl__DataSet *set;
    mdl_status st = layer_set(t, gl->param, &set, &ld, err);
    if (st != MDL_OK) return st;
    f->set_name = mdl_xstrdup(set->name ? set->name : mdl_net_layer_name(net, li));
    mdl_dataset *ds = NULL;
    st = get_dataset(t, set, &ds, err);
    if (st == MDL_OK) {
      mdl_batch_opts bo = {.batch_size = (int)batch,
                           .train = r->g->phase == CAFFE__PHASE__TRAIN,
                           .shuffle = ld.shuffle,
                           .seed = set->shuffle_seed};
      st = mdl_batcher_new(ds->part, (int)ds->n_parts, ds->transform, &bo, &f->cursor->b, err);
    }
    if (st == MDL_OK) {
      int c, h, w;
      mdl_transform_out_shape(ds->transform, &c, &h, &w);
      st = mdl_feeder_check(f, c, h, w, err);
    }
    mdl_pb_free(set);
    mdl_layer_data_clear(&ld);
    if (st != MDL_OK) return st;
  }
  return MDL_OK;
}

static mdl_status feed(netrun *r, uint64_t k, mdl_error *err) {
  for (int i = 0; i < r->n_feed; i++) {
    mdl_status st = mdl_feeder_fill(&r->feed[i], k, err);
    if (st != MDL_OK) return st;
  }
  /* The arena is shared between nets, so inputs are refilled every batch. */
  mdl_feed_inputs(r->net, k);
  return MDL_OK;
}

static mdl_status feed_train(void *r, uint64_t k, mdl_error *err) {
  return feed(r, k, err);
}

/* After a layer's fault (mdl_net_check_fault): adds which source record
 * sat at the faulty batch item, from the net's labelled data layer. */
static void name_fault_record(netrun *r, mdl_error *err) {
  int64_t item = mdl_net_fault_item(r->net);
  if (item < 0 || !err) return;
  for (int i = 0; i < r->n_feed; i++) {
    const mdl_feeder *f = &r->feed[i];
    const mdl_feed_cursor *c = f->cursor;
    if (!c || !c->b || !f->label || c->next == 0) continue;
    int64_t rec = mdl_batcher_record(c->b, c->next - 1, (int)item);
    if (rec < 0) continue;
    size_t used = strlen(err->msg);
    snprintf(err->msg + used, sizeof err->msg - used,
             " (record %lld of data set \"%s\", counting from 0)", (long long)rec, f->set_name);
    return;
  }
}

/* NaN or infinity in the weights: MDL_ERR_INVALID naming the blob, with
 * `what` saying where they come from. */
static mdl_status check_weights(mdl_net *net, const char *what, mdl_error *err) {
  char where[400];
  if (!net || !mdl_net_find_nonfinite_param(net, where, sizeof where)) return MDL_OK;
  return mdl_errorf(err, MDL_ERR_INVALID, "%s: non-finite weights: %s", what, where);
}

static void free_netrun(netrun *r) {
  for (int i = 0; i < r->n_feed; i++) {
    mdl_batcher_free(r->cursor[i].b);
    mdl_feeder_release(&r->feed[i]);
  }
  free(r->feed);
  free(r->cursor);
  mdl_net_free(r->net);
  memset(r, 0, sizeof *r);
}

/* ---- construction ---- */

static char *stem(const char *path) {
  const char *b = strrchr(path, '/');
  b = b ? b + 1 : path;
  char *s = mdl_xstrdup(b);
  char *dot = strrchr(s, '.');
  if (dot && dot != s) *dot = 0;
  return s;
}

void mdl_train_output_paths(const mdl_job *job, const Caffe__SolverParameter *sp,
                            const char *out_opt, char **out_dir, char **prefix,
                            int *snapshot_every) {
  const Memdl__Job *j = job->job;
  if (out_opt)
    *out_dir = mdl_xstrdup(out_opt);
  else
    *out_dir = mdl_path_join(job->base_dir, j->output && j->output->dir ? j->output->dir : "out");
  const char *pre = sp->snapshot_prefix;
  if (pre && *pre) {
    if (job->kind == MDL_KIND_JOB || out_opt) {
      const char *b = strrchr(pre, '/');
      b = b && b[1] ? b + 1 : pre;
      *prefix = mdl_path_join(*out_dir, b);
    } else {
      *prefix = mdl_xstrdup(pre);
    }
  } else {
    char *s = stem(j->name && *j->name ? j->name : job->path);
    *prefix = mdl_path_join(*out_dir, s);
    free(s);
  }
  *snapshot_every = sp->snapshot;
  if (j->output && j->output->snapshot) *snapshot_every = (int)j->output->snapshot;
}

static void setup_output(mdl_train *t) {
  mdl_train_output_paths(t->job, t->sp, t->opts.out_dir, &t->out_dir, &t->snapshot_prefix,
                         &t->snapshot_every);
}

/* The device: --device, else Caffe's solver_mode and device_id, else auto;
 * the nets this run builds must run whole on it (device.h). The choice is
 * said in the log unless the CPU was asked for. */
static mdl_status choose_device(mdl_train *t, mdl_error *err) {
  const char *spec = t->opts.device;
  char from_solver[32];
  bool solver_gpu = false;
  if (!spec && t->sp->has_solver_mode) {
    solver_gpu = t->sp->solver_mode == CAFFE__SOLVER_PARAMETER__SOLVER_MODE__GPU;
    snprintf(from_solver, sizeof from_solver, "cuda:%d",
             t->sp->device_id >= 0 && t->sp->device_id <= 999 ? (int)t->sp->device_id : 0);
    spec = solver_gpu ? from_solver : "cpu";
  }
  if (!spec) spec = "auto";
  const Caffe__NetParameter **nets = mdl_xcalloc((size_t)t->compiled->n_nets + 1, sizeof *nets);
  int n = 0;
  for (int i = 0; i < t->compiled->n_nets; i++) {
    const mdl_phase_net *pn = &t->compiled->nets[i];
    if (pn->phase == CAFFE__PHASE__TRAIN ? t->opts.no_train : t->opts.no_test) continue;
    nets[n++] = pn->graph->net;
  }
  char note[4096];
  mdl_status st =
      mdl_device_resolve(solver_gpu ? "auto" : spec, nets, n, &t->be, note, sizeof note, err);
  /* solver_mode: GPU asks for device_id; auto's checks decide whether the
   * GPU can take the nets, then the id picks which */
  if (st == MDL_OK && solver_gpu && t->be != mdl_device_cpu())
    st = mdl_device_resolve(spec, nets, n, &t->be, note, sizeof note, err);
  free(nets);
  if (st != MDL_OK) return st;
  if (solver_gpu && t->be == mdl_device_cpu())
    fprintf(t->log, "solver_mode: GPU, but %s\n", note[0] ? note : "no GPU; running on the CPU");
  else if (note[0])
    fprintf(t->log, "%s\n", note);
  return MDL_OK;
}

static mdl_status build_net(mdl_train *t, const mdl_graph *g, const mdl_net *share, netrun *r,
                            mdl_error *err) {
  mdl_net_options no = {.backend = t->be,
                        .pool = t->pool,
                        .ws = &t->ws,
                        .seed = t->seed,
                        .share_from = share,
                        .defer_arena = true};
  r->g = g;
  mdl_status st = mdl_net_new(g, &no, &r->net, err);
  if (st != MDL_OK) return st;
  return setup_feeders(t, r, err);
}

static mdl_status check_acceptance_metrics(mdl_train *t, mdl_error *err) {
  const Memdl__Job *j = t->job->job;
  for (size_t a = 0; a < j->n_accept; a++) {
    const char *m = j->accept[a]->metric;
    bool found = false;
    char known[512] = "";
    size_t used = 0;
    for (int k = 0; k < t->n_tests; k++) {
      mdl_net *net = t->tests[k].net;
      for (int o = 0; o < mdl_net_n_outputs(net); o++) {
        const char *name = mdl_net_blob_name(net, mdl_net_output_blob(net, o));
        if (m && strcmp(name, m) == 0) found = true;
        if (used < sizeof known)
          used +=
              (size_t)snprintf(known + used, sizeof known - used, "%s%s", used ? ", " : "", name);
      }
    }
    if (!found)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "%s: accept metric \"%s\" is not an output of any TEST net (outputs: %s)",
                        t->job->path, m ? m : "", used ? known : "none");
  }
  return MDL_OK;
}

mdl_status mdl_train_new(const mdl_job *job, const mdl_train_opts *opts, mdl_train **out,
                         mdl_error *err) {
  *out = NULL;
  mdl_train *t = mdl_xcalloc(1, sizeof *t);
  t->job = job;
  if (opts) t->opts = *opts;
  t->log = t->opts.log ? t->opts.log : stderr;
  mdl_workspace_init(&t->ws);
  t->sp = mdl_pb_dup(job->solver);
  if ((!t->sp->lr_policy || !*t->sp->lr_policy) &&
      (job->kind == MDL_KIND_NET || t->opts.synthetic || t->opts.no_train)) {
    /* A bare net has no solver: time and test still need one to exist. */
    free(t->sp->lr_policy);
    t->sp->lr_policy = mdl_xstrdup("fixed");
    if (!t->sp->has_base_lr) t->sp->base_lr = 0.01f;
  }
  if (t->sp->random_seed >= 0)
    t->seed = (uint64_t)t->sp->random_seed;
  else
    /* below 2^63, so the seed printed can be given back as random_seed */
    t->seed = mdl_mix64((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32)) >> 1;
  setup_output(t);

  mdl_status st = MDL_OK;
  if (!t->opts.no_train) {
    mdl_solver_config cfg;
    st = mdl_solver_config_get(t->sp, &cfg, err);
    if (st != MDL_OK) mdl_error_prefix(err, "%s: ", job->path);
  }
  int threads = t->opts.threads > 0 ? t->opts.threads : (int)job->job->threads;
  if (st == MDL_OK) st = mdl_threadpool_new(threads, &t->pool, err);
  mdl_data_catalog cat = {job->job->data, job->job->n_data, job->base_dir};
  if (st == MDL_OK) st = mdl_compile_job(job, mdl_data_source_info, &cat, &t->compiled, err);
  if (st == MDL_OK) st = choose_device(t, err);

  const mdl_net *share = NULL;
  for (int i = 0; st == MDL_OK && i < t->compiled->n_nets; i++) {
    const mdl_phase_net *pn = &t->compiled->nets[i];
    if (pn->phase == CAFFE__PHASE__TRAIN) {
      if (t->opts.no_train || t->train.net) continue;
      st = build_net(t, pn->graph, NULL, &t->train, err);
      share = t->train.net;
    } else {
      if (t->opts.no_test) continue;
      t->tests = mdl_xrealloc(t->tests, (size_t)(t->n_tests + 1) * sizeof *t->tests);
      memset(&t->tests[t->n_tests], 0, sizeof *t->tests);
      st = build_net(t, pn->graph, share, &t->tests[t->n_tests++], err);
    }
    if (st != MDL_OK) mdl_error_prefix(err, "%s net: ", mdl_phase_name(pn->phase));
  }
  if (st == MDL_OK) {
    size_t need = t->train.net ? mdl_net_arena_floats(t->train.net) : 0;
    for (int i = 0; i < t->n_tests; i++)
      if (mdl_net_arena_floats(t->tests[i].net) > need)
        need = mdl_net_arena_floats(t->tests[i].net);
    t->arena = mdl_backend_alloc(t->be, (int64_t)need);
    if (!t->arena)
      st = mdl_errorf(err, MDL_ERR_NOMEM, "activations of %zu MiB do not fit",
                      need * sizeof(float) >> 20);
  }
  if (st == MDL_OK) {
    if (t->train.net) mdl_net_bind_arena(t->train.net, t->arena);
    for (int i = 0; i < t->n_tests; i++) mdl_net_bind_arena(t->tests[i].net, t->arena);
  }
  if (st == MDL_OK && t->train.net) {
    int nl;
    const mdl_solver_blob *bl = mdl_net_learnable(t->train.net, &nl);
    st = mdl_solver_new(t->be, t->sp, bl, nl, mdl_net_param_count(t->train.net), &t->solver, err);
  }
  if (st == MDL_OK && !t->opts.no_train && !t->opts.synthetic)
    st = check_acceptance_metrics(t, err);
  if (st != MDL_OK) {
    mdl_train_free(t);
    return st;
  }
  *out = t;
  return MDL_OK;
}

static void free_names(mdl_train *t) {
  for (int i = 0; i < t->n_names_store; i++) free(t->names_store[i]);
  free(t->names_store);
  t->names_store = NULL;
  t->n_names_store = 0;
}

void mdl_train_free(mdl_train *t) {
  if (!t) return;
  for (int i = 0; i < t->n_tests; i++) free_netrun(&t->tests[i]);
  free(t->tests);
  free_netrun(&t->train);
  if (t->arena) mdl_backend_free(t->be, t->arena);
  mdl_workspace_release(&t->ws);
  mdl_solver_free(t->solver);
  mdl_compiled_free(t->compiled);
  mdl_threadpool_free(t->pool);
  for (int i = 0; i < t->n_sets; i++) {
    free(t->sets[i].key);
    mdl_dataset_free(t->sets[i].ds);
  }
  free(t->sets);
  mdl_pb_free(t->sp);
  free(t->out_dir);
  free(t->snapshot_prefix);
  free(t->last_test.name);
  free(t->last_test.value);
  free(t->last_test.weight);
  free_names(t);
  for (int k = 0; k < t->n_sum; k++) free(t->sum_name[k]);
  free(t->sum_name);
  free(t->sum_value);
  free(t);
}

/* ---- weights and state ---- */

static mdl_net *any_net(const mdl_train *t) {
  return t->train.net ? t->train.net : t->n_tests ? t->tests[0].net : NULL;
}

mdl_status mdl_train_load_weights(mdl_train *t, const char *path, mdl_error *err) {
  Caffe__NetParameter *np;
  mdl_status st = mdl_caffemodel_read(path, &np, err);
  if (st != MDL_OK) return st;
  int loaded = 0, total_loaded = 0;
  /* The TRAIN net first; TEST nets share its weights, and their own layers
   * (if any) are loaded after. */
  if (t->train.net) {
    st = mdl_caffemodel_copy(t->train.net, np, path, &loaded, err);
    total_loaded += loaded;
  }
  for (int i = 0; st == MDL_OK && i < t->n_tests; i++) {
    st = mdl_caffemodel_copy(t->tests[i].net, np, path, &loaded, err);
    total_loaded += loaded;
  }
  /* Weights that are already NaN would "pass" a test (a NaN loss, no
   * hits) or make training start diverged: refuse them. */
  if (st == MDL_OK) st = check_weights(t->train.net, path, err);
  for (int i = 0; st == MDL_OK && i < t->n_tests; i++)
    st = check_weights(t->tests[i].net, path, err);
  if (st == MDL_OK) {
    mdl_net *net = any_net(t);
    for (int i = 0; net && i < mdl_net_n_layers(net); i++) {
      mdl_layer *l = mdl_net_layer(net, i);
      if (!l || !l->n_param) continue;
      bool found = false;
      for (size_t k = 0; k < np->n_layer && !found; k++)
        found = np->layer[k]->name && !strcmp(np->layer[k]->name, l->name) && np->layer[k]->n_blobs;
      for (size_t k = 0; k < np->n_layers && !found; k++)
        found =
            np->layers[k]->name && !strcmp(np->layers[k]->name, l->name) && np->layers[k]->n_blobs;
      if (!found)
        fprintf(t->log, "weights: layer \"%s\" is not in %s; it keeps its initial values\n",
                l->name, path);
    }
    fprintf(t->log, "weights: %s\n", path);
  }
  caffe__net_parameter__free_unpacked(np, NULL);
  return st;
}

mdl_status mdl_train_restore(mdl_train *t, const char *path, mdl_error *err) {
  if (!t->solver) return mdl_errorf(err, MDL_ERR_INVALID, "--resume needs a TRAIN net");
  char *model = NULL;
  uint64_t seed = 0;
  bool has_seed = false;
  mdl_status st = mdl_solverstate_load(path, t->solver, &model, &seed, &has_seed, err);
  if (st != MDL_OK) return st;
  if (!model) {
    return mdl_errorf(err, MDL_ERR_INVALID, "%s names no weights file (learned_net)", path);
  }
  int loaded;
  st = mdl_caffemodel_load(t->train.net, model, &loaded, err);
  if (st == MDL_OK) st = check_weights(t->train.net, model, err);
  if (st != MDL_OK) mdl_error_prefix(err, "resuming from %s: ", path);
  free(model);
  if (st != MDL_OK) return st;
  if (has_seed && seed != t->seed) {
    t->seed = seed;
    mdl_net_set_seed(t->train.net, seed);
    for (int i = 0; i < t->n_tests; i++) mdl_net_set_seed(t->tests[i].net, seed);
  }
  t->resumed = true;
  fprintf(t->log, "resumed from %s at iteration %d\n", path, mdl_solver_iter(t->solver));
  return MDL_OK;
}

/* ---- testing ---- */

static char *keep_name(mdl_train *t, const char *s) {
  t->names_store = mdl_xrealloc(t->names_store, (size_t)(t->n_names_store + 1) * sizeof(char *));
  return t->names_store[t->n_names_store++] = mdl_xstrdup(s);
}

mdl_status mdl_train_test(mdl_train *t, int index, int iterations, mdl_test_result *res,
                          mdl_error *err) {
  return mdl_train_test_each(t, index, iterations, NULL, NULL, res, err);
}

mdl_status mdl_train_test_each(mdl_train *t, int index, int iterations,
                               void (*each)(void *ctx, const mdl_net *net), void *ctx,
                               mdl_test_result *res, mdl_error *err) {
  if (index < 0 || index >= t->n_tests)
    return mdl_errorf(err, MDL_ERR_INVALID, "no TEST net #%d", index);
  netrun *r = &t->tests[index];
  mdl_net *net = r->net;
  if (iterations <= 0)
    iterations = (size_t)index < t->sp->n_test_iter ? t->sp->test_iter[index] : 50;
  int no = mdl_net_n_outputs(net);
  mdl_test_result *lt = &t->last_test;
  free(lt->name);
  free(lt->value);
  free(lt->weight);
  free_names(t);
  lt->name = mdl_xcalloc((size_t)no + 1, sizeof(char *));
  lt->value = mdl_xcalloc((size_t)no + 1, sizeof(double));
  lt->weight = mdl_xcalloc((size_t)no + 1, sizeof(double));
  lt->n = 0;
  int *blob = mdl_xcalloc((size_t)no + 1, sizeof(int));
  for (int o = 0; o < no; o++) {
    int b = mdl_net_output_blob(net, o);
    if (mdl_net_blob(net, b)->count != 1) continue;
    blob[lt->n] = b;
    lt->name[lt->n] = keep_name(t, mdl_net_blob_name(net, b));
    lt->weight[lt->n] = mdl_net_output_weight(net, o);
    lt->n++;
  }
  /* Caffe wraps around a test set smaller than test_iter x batch without a
   * word, counting records twice: say so, once per net. */
  int64_t batch = mdl_net_batch_size(net), samples = (int64_t)iterations * batch;
  for (int i = 0; i < r->n_feed && !r->told_wrap; i++) {
    const mdl_feeder *f = &r->feed[i];
    int64_t n = f->cursor && f->cursor->b ? mdl_batcher_records(f->cursor->b) : 0;
    if (!n || samples <= n) continue;
    fprintf(t->log,
            "note: TEST net #%d: %d iterations x batch %lld = %lld samples, but data set \"%s\" "
            "has %lld records: %lld are counted twice (set test_iter to %lld to count each "
            "once)\n",
            index, iterations, (long long)batch, (long long)samples, f->set_name, (long long)n,
            (long long)(samples - n), (long long)(n / batch ? n / batch : 1));
    r->told_wrap = true;
  }
  mdl_net_set_iteration(net, 0);
  mdl_status st = MDL_OK;
  for (int it = 0; it < iterations && st == MDL_OK; it++) {
    st = feed(r, (uint64_t)it, err);
    if (st != MDL_OK) break;
    mdl_net_forward(net);
    st = mdl_net_check_fault(net, err);
    if (st != MDL_OK) {
      name_fault_record(r, err);
      mdl_error_prefix(err, "TEST net #%d, batch %d: ", index, it);
      break;
    }
    if (each) each(ctx, net);
    for (int k = 0; k < lt->n && st == MDL_OK; k++) {
      float v = mdl_net_blob_first(net, blob[k]);
      if (!isfinite(v)) {
        char where[400] = "";
        if (!mdl_net_find_nonfinite_param(net, where, sizeof where))
          mdl_net_find_nonfinite_blob(net, where, sizeof where);
        st = mdl_errorf(err, MDL_ERR_INTERNAL,
                        "TEST net #%d, batch %d: output \"%s\" is %s; first non-finite value: %s",
                        index, it, lt->name[k],
                        isnan(v) ? "NaN"
                        : v > 0  ? "+inf"
                                 : "-inf",
                        where);
      }
      lt->value[k] += v;
    }
  }
  free(blob);
  for (int k = 0; k < lt->n; k++) lt->value[k] /= iterations;
  lt->samples = samples;
  if (res) *res = *lt;
  return st;
}

/* ---- training ---- */

mdl_status mdl_train_feed_train(mdl_train *t, uint64_t k, mdl_error *err) {
  return feed(&t->train, k, err);
}

static void snapshot(mdl_train *t, mdl_metrics *m, mdl_progress *p, mdl_train_summary *sum,
                     mdl_error *err, mdl_status *st) {
  double t0 = mdl_now();
  int iter = mdl_solver_iter(t->solver);
  /* never save (or resume from) weights that diverged */
  char what[64];
  snprintf(what, sizeof what, "training diverged by iteration %d", iter);
  *st = check_weights(t->train.net, what, err);
  if (*st != MDL_OK) {
    err->code = *st = MDL_ERR_INTERNAL;
    return;
  }
  char *model = mdl_snapshot_name(t->snapshot_prefix, iter, ".caffemodel");
  char *state = mdl_snapshot_name(t->snapshot_prefix, iter, ".solverstate");
  char *dir = mdl_xstrdup(model);
  char *slash = strrchr(dir, '/');
  if (slash) {
    *slash = 0;
    *st = mdl_mkdirs(dir, err);
  }
  free(dir);
  if (*st == MDL_OK) *st = mdl_caffemodel_save(t->train.net, model, err);
  if (*st == MDL_OK) *st = mdl_solverstate_save(t->solver, model, t->seed, state, err);
  if (*st == MDL_OK) {
    mdl_report_snapshot(p, m, iter, model, state);
    snprintf(sum->last_snapshot, sizeof sum->last_snapshot, "%s", state);
  }
  free(model);
  free(state);
  mdl_progress_exclude(p, mdl_now() - t0);
}

static mdl_status test_all(mdl_train *t, mdl_metrics *m, mdl_progress *p, mdl_train_summary *sum,
                           mdl_error *err) {
  double t0 = mdl_now();
  int iter = t->solver ? mdl_solver_iter(t->solver) : 0;
  for (int i = 0; i < t->n_tests; i++) {
    mdl_test_result r;
    double t1 = mdl_now();
    mdl_status st = mdl_train_test(t, i, 0, &r, err);
    if (st != MDL_OK) return st;
    char line[1024];
    size_t used = 0;
    for (int k = 0; k < r.n && used < sizeof line; k++)
      used += (size_t)snprintf(line + used, sizeof line - used, "%s%s %.4f", k ? ", " : "",
                               r.name[k], r.value[k]);
    char which[32] = "";
    if (t->n_tests > 1) snprintf(which, sizeof which, " #%d", i);
    double secs = mdl_now() - t1;
    mdl_progress_line(p, "test%s iter %d: %s (%lld samples, %.1f s)", which, iter, line,
                      (long long)r.samples, secs);
    mdl_report_test_record(m, iter, i, (const char *const *)r.name, r.value, r.n, r.samples, secs);
    if (i == 0 && sum) {
      /* test net 0's outputs, for the summary and acceptance; copied, since
       * the next test pass reuses the result storage */
      for (int k = 0; k < t->n_sum; k++) free(t->sum_name[k]);
      t->n_sum = r.n;
      t->sum_name = mdl_xrealloc(t->sum_name, (size_t)(r.n + 1) * sizeof(char *));
      t->sum_value = mdl_xrealloc(t->sum_value, (size_t)(r.n + 1) * sizeof(double));
      for (int k = 0; k < r.n; k++) {
        t->sum_name[k] = mdl_xstrdup(r.name[k]);
        t->sum_value[k] = r.value[k];
      }
      sum->n_outputs = r.n;
      sum->output_name = t->sum_name;
      sum->output_value = t->sum_value;
    }
  }
  mdl_progress_exclude(p, mdl_now() - t0);
  return MDL_OK;
}

/* FNV-1a of the packed plan: the same nets, solver and data, the same
 * fingerprint, so runs in one metrics file can be told apart. */
static uint64_t plan_fingerprint(const mdl_train *t) {
  Memdl__Plan *plan = mdl_plan_new(t->job, t->compiled);
  size_t n = protobuf_c_message_get_packed_size(&plan->base);
  uint8_t *buf = mdl_xmalloc(n + 1);
  protobuf_c_message_pack(&plan->base, buf);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 0x100000001b3ull;
  free(buf);
  mdl_pb_free(plan);
  return h;
}

static void write_start(mdl_train *t, mdl_metrics *m, int start, int stop) {
  mdl_report_start rs = {.version = t->opts.version,
                         .job = t->job->path,
                         .plan_fingerprint = plan_fingerprint(t),
                         .seed = t->seed,
                         .threads = mdl_threadpool_size(t->pool),
                         .workers = 1,
                         .iter = start,
                         .max_iter = stop,
                         .resumed = t->resumed,
                         .overrides = t->opts.overrides,
                         .n_overrides = t->opts.n_overrides};
  mdl_report_start_record(m, &rs);
}

static bool check_accept(mdl_train *t, mdl_train_summary *sum) {
  const Memdl__Job *j = t->job->job;
  sum->accepted =
      mdl_accept_check(j->accept, j->n_accept, (const char *const *)sum->output_name,
                       sum->output_value, sum->n_outputs, sum->accept_msg, sizeof sum->accept_msg);
  return sum->accepted;
}

/* ---- the steps of mdl_train_run ---- */

static void print_banner(mdl_train *t, int start, int stop, double batch, int iter_size) {
  size_t planned, naive;
  mdl_train_memory(t, &planned, &naive);
  fprintf(t->log,
          "training %s: %s solver, iterations %d..%d, batch %.0f x iter_size %d, %d threads, "
          "seed %llu, activations %.1f MiB (%.1f MiB without buffer reuse); metrics in %s, "
          "snapshots %s_iter_N\n",
          t->job->path, mdl_solver_kind_name(mdl_solver_cfg(t->solver)->kind), start, stop, batch,
          iter_size, mdl_threadpool_size(t->pool), (unsigned long long)t->seed,
          (double)planned / (1 << 20), (double)naive / (1 << 20), t->out_dir, t->snapshot_prefix);
}

/* After an update: the snapshot at the solver's interval, and one when a
 * signal asked (SIGHUP, or before stopping). Returns whether a stop was
 * asked; *excluded grows by the time spent writing. */
static bool snapshot_step(mdl_train *t, mdl_metrics *m, mdl_progress *p, mdl_train_summary *sum,
                          double *excluded, mdl_error *err, mdl_status *st) {
  bool snapped = false;
  if (t->snapshot_every && mdl_solver_iter(t->solver) % t->snapshot_every == 0) {
    double t0 = mdl_now();
    snapshot(t, m, p, sum, err, st);
    *excluded += mdl_now() - t0;
    snapped = true;
  }
  bool stop_now = t->opts.stop && *t->opts.stop;
  if (*st == MDL_OK && (stop_now || (t->opts.snapshot && *t->opts.snapshot))) {
    if (t->opts.snapshot) *t->opts.snapshot = 0;
    if (!snapped) {
      double t0 = mdl_now();
      snapshot(t, m, p, sum, err, st);
      *excluded += mdl_now() - t0;
    }
  }
  return stop_now;
}

/* A run stopped on request (after its snapshot): the closing line and record. */
static void close_stopped(mdl_train *t, mdl_metrics *m, mdl_progress *p, mdl_train_summary *sum,
                          int iter, int stop, double seconds) {
  sum->iter = iter;
  sum->seconds = seconds;
  mdl_report_stopped(p, m, iter, stop, seconds, sum->last_snapshot, t->job->path, t->opts.out_dir,
                     NULL);
}

/* A finished run: acceptance, the "done" line and record. MDL_ERR_ACCEPT
 * when the job's criteria are not met. */
static mdl_status close_done(mdl_train *t, mdl_metrics *m, mdl_progress *p, mdl_train_summary *sum,
                             int iterations, mdl_error *err) {
  check_accept(t, sum);
  char d[32];
  char line[1024];
  size_t used = 0;
  line[0] = 0;
  for (int k = 0; k < sum->n_outputs && used < sizeof line; k++)
    used += (size_t)snprintf(line + used, sizeof line - used, "%s%s %.4f", k ? ", " : "",
                             sum->output_name[k], sum->output_value[k]);
  mdl_progress_line(p, "done: %d iterations in %s (%.0f img/s)%s%s", iterations,
                    mdl_fmt_duration(sum->seconds, d, sizeof d), sum->images_per_s,
                    used ? "; test: " : "", line);
  mdl_report_done rd = {.iter = sum->iter,
                        .seconds = sum->seconds,
                        .images_per_s = sum->images_per_s,
                        .names = (const char *const *)sum->output_name,
                        .values = sum->output_value,
                        .n = sum->n_outputs,
                        .accepted = sum->accepted,
                        .stopped = sum->budget_stopped ? "budget" : NULL, /* ci budget */
                        .wait_share = -1};
  mdl_report_done_record(m, &rd);
  if (!sum->accepted) {
    mdl_progress_line(p, "acceptance not met: %s", sum->accept_msg);
    return mdl_errorf(err, MDL_ERR_ACCEPT, "acceptance not met: %s", sum->accept_msg);
  }
  if (t->job->job->n_accept) mdl_progress_line(p, "acceptance met");
  return MDL_OK;
}

mdl_status mdl_train_run(mdl_train *t, int iters, mdl_train_summary *sum, mdl_error *err) {
  memset(sum, 0, sizeof *sum);
  if (!t->solver) return mdl_errorf(err, MDL_ERR_INVALID, "no TRAIN net to train");
  const Caffe__SolverParameter *sp = t->sp;
  mdl_solver *s = t->solver;
  mdl_net *net = t->train.net;
  int start = mdl_solver_iter(s);
  int stop = iters > 0 ? start + iters : sp->max_iter;
  int iter_size = sp->iter_size > 0 ? sp->iter_size : 1;
  int avg = sp->average_loss > 0 ? sp->average_loss : 1;
  double batch = (double)mdl_net_batch_size(net);

  mdl_metrics *m = NULL;
  bool existed = false;
  mdl_status st = mdl_metrics_open(t->out_dir, &existed, &m, err);
  if (st != MDL_OK) return st;
  if (existed && !t->resumed)
    fprintf(t->log, "metrics: appending to %s (it holds an earlier run's records)\n",
            mdl_metrics_path(m));
  write_start(t, m, start, stop);
  mdl_progress p;
  mdl_progress_init(&p, t->log, start, stop, batch * iter_size);
  print_banner(t, start, stop, batch, iter_size);

  float *losses = mdl_xcalloc((size_t)avg, sizeof(float));
  int n_losses = 0;
  double smoothed = 0;
  double t_begin = mdl_now(), t_excluded = 0;
  bool test_at_end = false;
  double test_cost = 0; /* ci budget: the last TEST pass's seconds */
  while (st == MDL_OK && mdl_solver_iter(s) < stop) {
    int iter = mdl_solver_iter(s);
    if (sp->test_interval && iter % sp->test_interval == 0 &&
        (iter > 0 || sp->test_initialization) && t->n_tests) {
      double t0 = mdl_now();
      st = test_all(t, m, &p, sum, err);
      t_excluded += mdl_now() - t0;
      test_cost = mdl_now() - t0;
      if (st != MDL_OK) break;
    }
    bool display = sp->display && iter % sp->display == 0;
    double loss = 0;
    st = mdl_net_accumulate(net, iter, iter_size, feed_train, &t->train, &loss, err);
    if (st != MDL_OK) {
      if (st == MDL_ERR_INVALID) name_fault_record(&t->train, err);
      break;
    }
    /* Caffe's UpdateSmoothedLoss */
    if (n_losses < avg) {
      losses[n_losses++] = (float)loss;
      smoothed = (smoothed * (n_losses - 1) + loss) / n_losses;
    } else {
      int idx = (iter - start) % avg;
      smoothed += (loss - losses[idx]) / avg;
      losses[idx] = (float)loss;
    }
    float lr = mdl_solver_rate(s);
    if (display) mdl_report_train(&p, m, iter, start, smoothed, lr);
    mdl_solver_update(s, mdl_net_params(net), mdl_net_param_diffs(net));
    /* a device reports a failed kernel or library call only here */
    if ((st = mdl_backend_sync(t->be, err)) != MDL_OK) break;
    /* the rate window restarts once this iteration is wholly done, so the
     * next one measures whole iterations, not this one's update alone */
    if (display && iter > start) mdl_progress_mark(&p, iter + 1);
    mdl_progress_live(&p, mdl_solver_iter(s), (float)smoothed, lr);
    bool stop_now = snapshot_step(t, m, &p, sum, &t_excluded, err, &st);
    if (st == MDL_OK && stop_now) {
      sum->stopped = true;
      break;
    }
    /* ---- ci budget: stop after a whole iteration, keeping time for TEST */
    if (t->opts.max_seconds > 0 && mdl_solver_iter(s) < stop &&
        mdl_now() - t_begin + test_cost >= t->opts.max_seconds) {
      sum->budget_stopped = true;
      mdl_progress_line(&p, "budget of %g s spent at iteration %d: stopping", t->opts.max_seconds,
                        mdl_solver_iter(s));
      break;
    }
    /* ---- end ci budget */
  }
  free(losses);
  int iter = mdl_solver_iter(s);
  double seconds = mdl_now() - t_begin;
  if (st == MDL_OK && sum->stopped) {
    close_stopped(t, m, &p, sum, iter, stop, seconds);
    mdl_metrics_close(m);
    return MDL_OK;
  }
  if (st == MDL_OK) { /* the last update's result has not been through a forward yet */
    char what[64];
    snprintf(what, sizeof what, "training diverged by iteration %d", iter);
    if (check_weights(net, what, err) != MDL_OK) st = err->code = MDL_ERR_INTERNAL;
  }
  if (st == MDL_OK && (sp->snapshot_after_train || sum->budget_stopped) && iter > start &&
      (!t->snapshot_every || iter % t->snapshot_every != 0))
    snapshot(t, m, &p, sum, err, &st);
  test_at_end = t->n_tests > 0;
  /* ci budget: TEST only when its measured time is still left */
  if (sum->budget_stopped)
    test_at_end = test_at_end && test_cost > 0 && mdl_now() - t_begin <= t->opts.max_seconds;
  sum->budget_tested = sum->budget_stopped && test_at_end;
  if (st == MDL_OK && test_at_end) st = test_all(t, m, &p, sum, err);
  if (st == MDL_OK) {
    sum->iter = iter;
    sum->seconds = seconds;
    double train_s = seconds - t_excluded;
    sum->images_per_s = train_s > 0 ? (iter - start) * batch * iter_size / train_s : 0;
    st = close_done(t, m, &p, sum, iter - start, err);
  }
  mdl_metrics_close(m);
  return st;
}

mdl_status mdl_train_newest_snapshot(const mdl_train *t, char **path, mdl_error *err) {
  *path = NULL;
  int best = mdl_snapshot_newest(t->snapshot_prefix);
  if (best >= 0) {
    *path = mdl_snapshot_name(t->snapshot_prefix, best, ".solverstate");
    return MDL_OK;
  }
  char *dir = mdl_path_dir(t->snapshot_prefix);
  const char *base = strrchr(t->snapshot_prefix, '/');
  base = base ? base + 1 : t->snapshot_prefix;
  mdl_status st = mdl_errorf(err, MDL_ERR_INVALID,
                             "--resume: no %s_iter_N.solverstate in %s to resume from", base, dir);
  free(dir);
  return st;
}

/* ---- accessors ---- */

mdl_net *mdl_train_train_net(const mdl_train *t) {
  return t->train.net;
}
mdl_net *mdl_train_test_net(const mdl_train *t, int i) {
  return i >= 0 && i < t->n_tests ? t->tests[i].net : NULL;
}
int mdl_train_n_test_nets(const mdl_train *t) {
  return t->n_tests;
}
mdl_solver *mdl_train_solver(const mdl_train *t) {
  return t->solver;
}
int mdl_train_threads(const mdl_train *t) {
  return mdl_threadpool_size(t->pool);
}
uint64_t mdl_train_seed(const mdl_train *t) {
  return t->seed;
}
const char *mdl_train_out_dir(const mdl_train *t) {
  return t->out_dir;
}

int mdl_train_n_datasets(const mdl_train *t) {
  return t->n_sets;
}
const struct mdl_dataset *mdl_train_dataset(const mdl_train *t, int i) {
  return i >= 0 && i < t->n_sets ? t->sets[i].ds : NULL;
}

void mdl_train_memory(const mdl_train *t, size_t *planned, size_t *naive) {
  size_t need = t->train.net ? mdl_net_arena_floats(t->train.net) : 0, nv = 0;
  if (t->train.net) nv += mdl_net_naive_bytes(t->train.net);
  for (int i = 0; i < t->n_tests; i++) {
    if (mdl_net_arena_floats(t->tests[i].net) > need) need = mdl_net_arena_floats(t->tests[i].net);
    nv += mdl_net_naive_bytes(t->tests[i].net);
  }
  *planned = need * sizeof(float);
  *naive = nv;
}
