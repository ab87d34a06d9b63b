/* The backend seam: a second backend that wraps the CPU's and counts every
 * call proves the engine and the solvers reach the device only through
 * runtime/engine/backend.h. The same net and solver step on it give the
 * CPU's bits, and each kind of call is seen. Device names resolve in one
 * place (runtime/train/device.h). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/graph.h"
#include "compiler/textformat.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/engine/net.h"
#include "runtime/solver/caffemodel.h"
#include "runtime/solver/solver.h"
#include "runtime/train/device.h"
#include "tests/graph_test_util.h"

static const char NET[] =
    "layer { name: 'in' type: 'Input' top: 'data' top: 'label'\n"
    "        input_param { shape { dim: 4 dim: 2 dim: 6 dim: 6 } shape { dim: 4 } } }\n"
    "layer { name: 'conv' type: 'Convolution' bottom: 'data' top: 'conv'\n"
    "        convolution_param { num_output: 3 kernel_size: 3\n"
    "          weight_filler { type: 'xavier' } bias_filler { type: 'constant' value: 0.1 } } }\n"
    "layer { name: 'relu' type: 'ReLU' bottom: 'conv' top: 'conv' }\n"
    "layer { name: 'pool' type: 'Pooling' bottom: 'conv' top: 'pool'\n"
    "        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
    "layer { name: 'ip' type: 'InnerProduct' bottom: 'pool' top: 'ip'\n"
    "        inner_product_param { num_output: 3 weight_filler { type: 'gaussian' std: 0.2 } } }\n"
    "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'ip' bottom: 'label' top: 'loss' }\n";

/* ---- the counting backend ---------------------------------------------- */

enum { C_ALLOC, C_FREE, C_ZERO, C_TO_DEV, C_TO_HOST, C_SUM, C_FILL, C_UPDATE, C_FWD, C_BWD, C_N };

typedef struct counting {
  const mdl_backend_i *cpu;
  long calls[C_N];
  long live; /* buffers allocated and not yet freed */
} counting;

static float *c_alloc(void *ctx, int64_t n) {
  counting *c = ctx;
  c->calls[C_ALLOC]++;
  c->live++;
  return c->cpu->alloc(NULL, n);
}
static void c_free(void *ctx, float *p) {
  counting *c = ctx;
  c->calls[C_FREE]++;
  c->live--;
  c->cpu->free(NULL, p);
}
static void c_zero(void *ctx, float *p, int64_t n) {
  counting *c = ctx;
  c->calls[C_ZERO]++;
  c->cpu->zero(NULL, p, n);
}
static void c_to_dev(void *ctx, float *d, const float *s, int64_t n) {
  counting *c = ctx;
  c->calls[C_TO_DEV]++;
  c->cpu->to_device(NULL, d, s, n);
}
static void c_to_host(void *ctx, float *d, const float *s, int64_t n) {
  counting *c = ctx;
  c->calls[C_TO_HOST]++;
  c->cpu->to_host(NULL, d, s, n);
}
static double c_sum(void *ctx, mdl_threadpool *pool, const float *x, int64_t n) {
  counting *c = ctx;
  c->calls[C_SUM]++;
  return c->cpu->sum(NULL, pool, x, n);
}
static void c_fill(void *ctx, mdl_threadpool *pool, float *x, int64_t n, float v) {
  counting *c = ctx;
  c->calls[C_FILL]++;
  c->cpu->fill(NULL, pool, x, n, v);
}
static void c_update(void *ctx, const mdl_update *u, float *w, float *d, float *const *h) {
  counting *c = ctx;
  c->calls[C_UPDATE]++;
  c->cpu->update(NULL, u, w, d, h);
}

/* Layers: each CPU implementation behind a wrapper that counts and calls
 * it; the wrapper finds the CPU's by type through the layer's backend. */
static const mdl_layer_impl *cpu_impl(const mdl_layer *l) {
  const counting *c = l->be->ctx;
  for (size_t i = 0; i < c->cpu->n_impls; i++)
    if (!strcmp(c->cpu->impls[i]->type, l->impl->type)) return c->cpu->impls[i];
  return NULL;
}
static mdl_status w_setup(mdl_layer *l, mdl_error *err) {
  const mdl_layer_impl *ci = cpu_impl(l);
  return ci->setup ? ci->setup(l, err) : MDL_OK;
}
static mdl_status w_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  const mdl_layer_impl *ci = cpu_impl(l);
  return ci->init_params ? ci->init_params(l, rng, err) : MDL_OK;
}
static void w_forward(mdl_layer *l, mdl_tensor *const *b, mdl_tensor *const *t) {
  ((counting *)l->be->ctx)->calls[C_FWD]++;
  cpu_impl(l)->forward(l, b, t);
}
static void w_backward(mdl_layer *l, mdl_tensor *const *t, const bool *pd, mdl_tensor *const *b) {
  ((counting *)l->be->ctx)->calls[C_BWD]++;
  cpu_impl(l)->backward(l, t, pd, b);
}
static void w_free(mdl_layer *l) {
  const mdl_layer_impl *ci = cpu_impl(l);
  if (ci->free_priv)
    ci->free_priv(l);
  else
    free(l->priv);
}

#define MAX_IMPLS 128

typedef struct counting_backend {
  counting c;
  mdl_layer_impl impls[MAX_IMPLS];
  const mdl_layer_impl *table[MAX_IMPLS];
  mdl_backend_i iface;
  mdl_backend be;
} counting_backend;

static void counting_init(counting_backend *cb) {
  memset(cb, 0, sizeof *cb);
  const mdl_backend_i *cpu = mdl_cpu_backend()->iface;
  cb->c.cpu = cpu;
  cr_assert(cpu->n_impls <= MAX_IMPLS);
  for (size_t i = 0; i < cpu->n_impls; i++) {
    const mdl_layer_impl *ci = cpu->impls[i];
    cb->impls[i] = (mdl_layer_impl){.type = ci->type,
                                    .setup = w_setup,
                                    .init_params = w_init,
                                    .forward = w_forward,
                                    .backward = ci->backward ? w_backward : NULL,
                                    .free_priv = w_free};
    cb->table[i] = &cb->impls[i];
  }
  cb->iface = (mdl_backend_i){.name = "counting",
                              .host_visible = true,
                              .alloc = c_alloc,
                              .free = c_free,
                              .zero = c_zero,
                              .to_device = c_to_dev,
                              .to_host = c_to_host,
                              .impls = cb->table,
                              .n_impls = cpu->n_impls,
                              .sum = c_sum,
                              .fill = c_fill,
                              .update = c_update};
  cb->be = (mdl_backend){&cb->iface, &cb->c};
}

/* ---- one training step on a backend ------------------------------------ */

static mdl_graph *graph(void) {
  return build_text(NET, &(build_opts){.phase = CAFFE__PHASE__TRAIN});
}

/* Three SGD+momentum steps; returns the weights (caller frees) and *loss.
 * With save_prefix, also writes PREFIX.caffemodel and PREFIX.solverstate. */
static float *train_save(const mdl_backend *be, size_t *n, float *loss, const char *save_prefix) {
  mdl_graph *g = graph();
  mdl_net_options o = {.backend = be, .seed = 7};
  mdl_net *net;
  mdl_error err;
  cr_assert_eq(mdl_net_new(g, &o, &net, &err), MDL_OK, "%s", err.msg);
  Caffe__SolverParameter sp = CAFFE__SOLVER_PARAMETER__INIT;
  sp.has_base_lr = 1, sp.base_lr = 0.1f;
  sp.lr_policy = "fixed";
  sp.has_momentum = 1, sp.momentum = 0.9f;
  sp.has_weight_decay = 1, sp.weight_decay = 0.001f;
  int nl;
  const mdl_param_blob *bl = mdl_net_learnable(net, &nl);
  mdl_solver *s;
  cr_assert_eq(mdl_solver_new(be, &sp, bl, nl, mdl_net_param_count(net), &s, &err), MDL_OK, "%s",
               err.msg);
  mdl_tensor *data = mdl_net_blob(net, mdl_net_blob_index(net, "data"));
  mdl_tensor *label = mdl_net_blob(net, mdl_net_blob_index(net, "label"));
  for (int it = 0; it < 3; it++) {
    for (int64_t i = 0; i < data->count; i++) data->data[i] = sinf((float)(i + it) * 0.37f);
    for (int64_t i = 0; i < label->count; i++) label->data[i] = (float)((i + it) % 3);
    mdl_net_clear_param_diffs(net);
    *loss = mdl_net_forward(net);
    mdl_net_backward(net);
    mdl_solver_update(s, mdl_net_params(net), mdl_net_param_diffs(net));
  }
  *n = mdl_net_param_count(net);
  float *w = malloc(*n * sizeof *w);
  mdl_net_params_get(net, w);
  if (save_prefix) {
    char path[256];
    snprintf(path, sizeof path, "%s.caffemodel", save_prefix);
    cr_assert_eq(mdl_caffemodel_save(net, path, &err), MDL_OK, "%s", err.msg);
    snprintf(path, sizeof path, "%s.solverstate", save_prefix);
    cr_assert_eq(mdl_solverstate_save(s, "x.caffemodel", 7, path, &err), MDL_OK, "%s", err.msg);
  }
  mdl_solver_free(s);
  mdl_net_free(net);
  mdl_graph_free(g);
  return w;
}

static float *train(const mdl_backend *be, size_t *n, float *loss) {
  return train_save(be, n, loss, NULL);
}

Test(backend, the_engine_reaches_a_second_backend_only_through_the_seam) {
  size_t n_cpu, n_cnt;
  float loss_cpu, loss_cnt;
  float *w_cpu = train(mdl_cpu_backend(), &n_cpu, &loss_cpu);
  counting_backend cb;
  counting_init(&cb);
  float *w_cnt = train(&cb.be, &n_cnt, &loss_cnt);
  cr_assert_eq(n_cpu, n_cnt);
  cr_assert(memcmp(w_cpu, w_cnt, n_cpu * sizeof *w_cpu) == 0, "weights differ between backends");
  cr_assert_eq(loss_cpu, loss_cnt);
  const long *c = cb.c.calls;
  /* params, diffs, arena, workspace, one history set */
  cr_assert_geq(c[C_ALLOC], 4, "alloc %ld", c[C_ALLOC]);
  cr_assert_eq(cb.c.live, 0, "%ld buffers leaked", cb.c.live);
  cr_assert_eq(c[C_UPDATE], 3);
  cr_assert_eq(c[C_SUM], 3, "loss sums: one per forward");
  cr_assert_eq(c[C_FILL], 3, "loss diff seeds: one per backward");
  cr_assert_geq(c[C_ZERO], 3, "gradient clears");
  cr_assert_eq(c[C_FWD], 3 * 6, "input, conv, relu, pool, ip, loss per forward: %ld", c[C_FWD]);
  cr_assert_eq(c[C_BWD], 3 * 5, "backward: %ld", c[C_BWD]);
  cr_assert_eq(c[C_TO_HOST], 1, "weights read back once");
  free(w_cpu);
  free(w_cnt);
}

static unsigned char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "%s", path);
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc(*len + 1);
  cr_assert_eq(fread(b, 1, *len, f), *len);
  fclose(f);
  return b;
}

/* A backend whose memory the host may not touch: batches, weights files
 * and solver history must all go through to_device/to_host. Its buffers are
 * host memory underneath, so the bits must equal the CPU's. */
Test(backend, files_and_history_cross_a_device_boundary_through_the_seam) {
  const char *dir = getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp";
  char a[256], b[256];
  snprintf(a, sizeof a, "%s/cpu", dir);
  snprintf(b, sizeof b, "%s/dev", dir);
  size_t n1, n2;
  float l1, l2;
  float *w1 = train_save(mdl_cpu_backend(), &n1, &l1, a);
  counting_backend cb;
  counting_init(&cb);
  cb.iface.host_visible = false;
  float *w2 = train_save(&cb.be, &n2, &l2, b);
  cr_assert(n1 == n2 && memcmp(w1, w2, n1 * sizeof *w1) == 0);
  cr_assert_geq(cb.c.calls[C_TO_HOST], 1 + 4 + 1, "weights, 4 blobs, 1 history set");
  const char *ext[2] = {".caffemodel", ".solverstate"};
  for (int e = 0; e < 2; e++) {
    char pa[300], pb[300];
    snprintf(pa, sizeof pa, "%s%s", a, ext[e]);
    snprintf(pb, sizeof pb, "%s%s", b, ext[e]);
    size_t la, lb;
    unsigned char *da = slurp(pa, &la), *db = slurp(pb, &lb);
    cr_assert(la == lb && memcmp(da, db, la) == 0, "%s differs between backends", ext[e]);
    free(da);
    free(db);
  }
  /* and back in: weights and history through to_device */
  mdl_graph *g = graph();
  mdl_net_options o = {.backend = &cb.be, .seed = 99};
  mdl_net *net;
  mdl_error err;
  cr_assert_eq(mdl_net_new(g, &o, &net, &err), MDL_OK, "%s", err.msg);
  long before = cb.c.calls[C_TO_DEV];
  char pa[300];
  snprintf(pa, sizeof pa, "%s.caffemodel", b);
  cr_assert_eq(mdl_caffemodel_load(net, pa, NULL, &err), MDL_OK, "%s", err.msg);
  cr_assert_geq(cb.c.calls[C_TO_DEV] - before, 4, "one upload per blob");
  float *w3 = malloc(n1 * sizeof *w3);
  mdl_net_params_get(net, w3);
  cr_assert(memcmp(w1, w3, n1 * sizeof *w1) == 0, "weights read back differ");
  mdl_net_free(net);
  mdl_graph_free(g);
  free(w1);
  free(w2);
  free(w3);
}

Test(backend, a_layer_the_backend_lacks_is_refused_naming_it) {
  counting_backend cb;
  counting_init(&cb);
  cb.iface.n_impls = 0; /* a backend that runs nothing */
  mdl_graph *g = graph();
  mdl_net_options o = {.backend = &cb.be};
  mdl_net *net;
  mdl_error err;
  cr_assert_eq(mdl_net_new(g, &o, &net, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "has no counting implementation"), "%s", err.msg);
  cr_assert_eq(cb.c.live, 0);
  mdl_graph_free(g);
}

Test(backend, devices_resolve_in_one_place) {
  const mdl_backend *be;
  mdl_error err;
  cr_assert_eq(mdl_device_backend(NULL, &be, &err), MDL_OK);
  cr_assert_eq(be, mdl_cpu_backend());
  cr_assert_eq(mdl_device_backend("cpu", &be, &err), MDL_OK);
  cr_assert_eq(mdl_device_backend("auto", &be, &err), MDL_OK);
  cr_assert_str_eq(mdl_backend_name(be), mdl_device_gpu_built() ? mdl_backend_name(be) : "cpu");
  cr_assert(mdl_device_valid("cuda:3"));
  cr_assert(!mdl_device_valid("cuda:"));
  cr_assert(!mdl_device_valid("gpu"));
  cr_assert_eq(mdl_device_backend("tpu", &be, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "expected cpu, cuda, cuda:N or auto"), "%s", err.msg);
  if (!mdl_device_gpu_built()) {
    cr_assert_eq(mdl_device_backend("cuda:0", &be, &err), MDL_ERR_INVALID);
    cr_assert(strstr(err.msg, "no usable GPU"), "%s", err.msg);
  }
}
