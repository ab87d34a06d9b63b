/* See gpu_check.h. Tolerances: 1e-4 element-wise, 1e-3 for Convolution
 * and InnerProduct (different summation orders, cuDNN algorithms), Dropout
 * exact (the same counter-based draws). Error of one element: |b - a| /
 * max(1, |a|), relative above 1 and absolute below. */
#include "tests/gpu_check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "compiler/textformat.h"
#include "runtime/engine/layer.h"

typedef struct gcase {
  const char *name;
  const char *layer; /* one LayerParameter in text format */
  int n_bottom;
  int64_t shape[4][4]; /* per bottom, 4 axes (0: fewer) */
  int label;           /* bottom index holding class labels, or -1 */
  int classes;
  double tol;
  bool loss; /* top 0 is a loss: its diff is 1 */
} gcase;

#define S4(a, b, c, d) \
  { a, b, c, d }

static const gcase CASES[] = {
    {"conv",
     "type: 'Convolution' convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 "
     "weight_filler { type: 'xavier' } bias_filler { type: 'constant' value: 0.1 } }",
     1,
     {S4(2, 3, 9, 9)},
     -1,
     0,
     1e-3,
     false},
    {"conv_group_dilation",
     "type: 'Convolution' convolution_param { num_output: 6 kernel_size: 3 group: 2 dilation: 2 "
     "weight_filler { type: 'gaussian' std: 0.3 } bias_filler { type: 'gaussian' std: 0.1 } }",
     1,
     {S4(2, 4, 10, 10)},
     -1,
     0,
     1e-3,
     false},
    {"pool_max_ceil",
     "type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 2 }",
     1,
     {S4(2, 3, 10, 10)},
     -1,
     0,
     1e-4,
     false},
    {"pool_ave_pad",
     "type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }",
     1,
     {S4(2, 3, 9, 9)},
     -1,
     0,
     1e-4,
     false},
    {"pool_global",
     "type: 'Pooling' pooling_param { pool: AVE global_pooling: true }",
     1,
     {S4(2, 3, 5, 5)},
     -1,
     0,
     1e-4,
     false},
    {"ip",
     "type: 'InnerProduct' inner_product_param { num_output: 7 "
     "weight_filler { type: 'xavier' } bias_filler { type: 'constant' value: 0.2 } }",
     1,
     {S4(4, 3, 5, 5)},
     -1,
     0,
     1e-3,
     false},
    {"ip_transpose",
     "type: 'InnerProduct' inner_product_param { num_output: 5 transpose: true "
     "weight_filler { type: 'gaussian' std: 0.2 } }",
     1,
     {S4(3, 11, 0, 0)},
     -1,
     0,
     1e-3,
     false},
    {"relu", "type: 'ReLU'", 1, {S4(2, 3, 4, 5)}, -1, 0, 1e-4, false},
    {"relu_slope",
     "type: 'ReLU' relu_param { negative_slope: 0.1 }",
     1,
     {S4(2, 3, 4, 5)},
     -1,
     0,
     1e-4,
     false},
    {"sigmoid", "type: 'Sigmoid'", 1, {S4(2, 3, 4, 5)}, -1, 0, 1e-4, false},
    {"tanh", "type: 'TanH'", 1, {S4(2, 3, 4, 5)}, -1, 0, 1e-4, false},
    {"dropout",
     "type: 'Dropout' dropout_param { dropout_ratio: 0.3 }",
     1,
     {S4(2, 3, 4, 5)},
     -1,
     0,
     0,
     false},
    {"lrn",
     "type: 'LRN' lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 1 }",
     1,
     {S4(2, 7, 4, 4)},
     -1,
     0,
     1e-4,
     false},
    {"softmax", "type: 'Softmax'", 1, {S4(3, 5, 2, 2)}, -1, 0, 1e-4, false},
    {"softmax_loss",
     "type: 'SoftmaxWithLoss'",
     2,
     {S4(6, 5, 0, 0), S4(6, 0, 0, 0)},
     1,
     5,
     1e-4,
     true},
    {"softmax_loss_ignore",
     "type: 'SoftmaxWithLoss' loss_param { ignore_label: 2 normalization: BATCH_SIZE }",
     2,
     {S4(4, 3, 2, 2), S4(4, 1, 2, 2)},
     1,
     3,
     1e-4,
     true},
    {"accuracy",
     "type: 'Accuracy' accuracy_param { top_k: 2 }",
     2,
     {S4(8, 5, 0, 0), S4(8, 0, 0, 0)},
     1,
     5,
     1e-4,
     false},
    {"split", "type: 'Split'", 1, {S4(2, 3, 4, 4)}, -1, 0, 1e-4, false},
    {"flatten", "type: 'Flatten'", 1, {S4(2, 3, 4, 4)}, -1, 0, 1e-4, false},
    {"reshape",
     "type: 'Reshape' reshape_param { shape { dim: 0 dim: -1 } }",
     1,
     {S4(2, 3, 4, 4)},
     -1,
     0,
     1e-4,
     false},
    {"eltwise_sum",
     "type: 'Eltwise' eltwise_param { operation: SUM coeff: 0.5 coeff: -2 }",
     2,
     {S4(2, 3, 4, 4), S4(2, 3, 4, 4)},
     -1,
     0,
     1e-4,
     false},
    {"eltwise_prod",
     "type: 'Eltwise' eltwise_param { operation: PROD }",
     3,
     {S4(2, 3, 4, 4), S4(2, 3, 4, 4), S4(2, 3, 4, 4)},
     -1,
     0,
     1e-4,
     false},
    {"eltwise_max",
     "type: 'Eltwise' eltwise_param { operation: MAX }",
     3,
     {S4(2, 3, 4, 4), S4(2, 3, 4, 4), S4(2, 3, 4, 4)},
     -1,
     0,
     1e-4,
     false},
    {"concat",
     "type: 'Concat' concat_param { axis: 1 }",
     2,
     {S4(2, 3, 4, 4), S4(2, 5, 4, 4)},
     -1,
     0,
     1e-4,
     false},
};

int mdl_gpu_check_n_cases(void) {
  return (int)(sizeof CASES / sizeof *CASES);
}

/* What one backend produced for a case, on the host. */
typedef struct outputs {
  int n;
  float *v[32];
  int64_t count[32];
} outputs;

static void outputs_free(outputs *o) {
  for (int i = 0; i < o->n; i++) free(o->v[i]);
  memset(o, 0, sizeof *o);
}

static void keep(outputs *o, const mdl_backend *be, const float *dev, int64_t n) {
  if (o->n >= 32) return;
  float *h = malloc((size_t)(n ? n : 1) * sizeof *h);
  mdl_backend_to_host(be, h, dev, n);
  o->v[o->n] = h;
  o->count[o->n++] = n;
}

static void fill_host(float *h, int64_t n, uint64_t seed, int classes) {
  mdl_prng r;
  mdl_prng_seed(&r, seed);
  for (int64_t i = 0; i < n; i++)
    h[i] = classes ? (float)mdl_prng_below(&r, (uint32_t)classes) : 2.f * mdl_prng_unit(&r) - 1.f;
}

/* Builds and runs c on be; outputs: tops, then bottom diffs, then param
 * diffs (and param data, as initialised). */
static mdl_status run_case(const gcase *c, const Caffe__LayerParameter *lp, const mdl_backend *be,
                           outputs *o, char *why, size_t why_size) {
  mdl_error err;
  mdl_workspace ws;
  mdl_workspace_init(&ws);
  mdl_rng rng = {11, 0};
  mdl_exec_ctx ctx = {.pool = NULL, .ws = &ws, .rng = &rng};
  mdl_shape bs[4];
  memset(bs, 0, sizeof bs);
  for (int i = 0; i < c->n_bottom; i++) {
    for (int k = 0; k < 4 && c->shape[i][k]; k++) bs[i].d[bs[i].n++] = c->shape[i][k];
  }
  mdl_layer *l = NULL;
  mdl_status st = mdl_layer_new(be, lp, CAFFE__PHASE__TRAIN, c->n_bottom, bs, &ctx, &l, &err);
  if (st) {
    snprintf(why, why_size, "%.500s", err.msg);
    return st;
  }
  int64_t np = mdl_layer_param_count(l);
  float *pdata = mdl_backend_alloc(be, np), *pdiff = mdl_backend_alloc(be, np);
  mdl_layer_bind_params(l, pdata, pdiff);
  mdl_rng init;
  mdl_rng_init(&init, 7);
  st = mdl_layer_init_params(l, &init, &err);
  if (!st) st = mdl_workspace_commit(&ws, be, &err);
  mdl_tensor bt[4], tt[4];
  mdl_tensor *bp[4], *tp[4];
  bool pd[4];
  for (int i = 0; i < c->n_bottom; i++) {
    mdl_tensor_from_shape(&bt[i], &bs[i]);
    bt[i].data = mdl_backend_alloc(be, bt[i].count);
    bt[i].diff = mdl_backend_alloc(be, bt[i].count);
    float *h = malloc((size_t)bt[i].count * sizeof *h);
    fill_host(h, bt[i].count, 100 + (uint64_t)i, i == c->label ? c->classes : 0);
    mdl_backend_to_device(be, bt[i].data, h, bt[i].count);
    free(h);
    bp[i] = &bt[i];
    pd[i] = i != c->label;
  }
  for (int i = 0; i < l->n_top; i++) {
    mdl_tensor_from_shape(&tt[i], &l->top_shape[i]);
    tt[i].data = mdl_backend_alloc(be, tt[i].count);
    tt[i].diff = mdl_backend_alloc(be, tt[i].count);
    tp[i] = &tt[i];
  }
  if (!st) {
    mdl_layer_forward(l, bp, tp);
    for (int i = 0; i < l->n_top; i++) keep(o, be, tt[i].data, tt[i].count);
    if (mdl_layer_has_backward(l)) {
      for (int i = 0; i < l->n_top; i++) {
        float *h = malloc((size_t)tt[i].count * sizeof *h);
        if (c->loss && i == 0)
          for (int64_t k = 0; k < tt[i].count; k++) h[k] = 1.f;
        else
          fill_host(h, tt[i].count, 200 + (uint64_t)i, 0);
        mdl_backend_to_device(be, tt[i].diff, h, tt[i].count);
        free(h);
      }
      mdl_layer_backward(l, tp, pd, bp);
      for (int i = 0; i < c->n_bottom; i++)
        if (pd[i]) keep(o, be, bt[i].diff, bt[i].count);
      if (np) keep(o, be, pdiff, np);
    }
    if (np) keep(o, be, pdata, np);
    st = mdl_backend_sync(be, &err);
    if (st) snprintf(why, why_size, "%.500s", err.msg);
  } else {
    snprintf(why, why_size, "%.500s", err.msg);
  }
  for (int i = 0; i < c->n_bottom; i++) {
    mdl_backend_free(be, bt[i].data);
    mdl_backend_free(be, bt[i].diff);
  }
  for (int i = 0; l && i < l->n_top; i++) {
    mdl_backend_free(be, tt[i].data);
    mdl_backend_free(be, tt[i].diff);
  }
  mdl_backend_free(be, pdata);
  mdl_backend_free(be, pdiff);
  mdl_layer_free(l);
  mdl_workspace_release(&ws);
  return st;
}

int mdl_gpu_check_layers(const mdl_backend *a, const mdl_backend *b, mdl_gpu_case_result *results,
                         FILE *log) {
  int failed = 0;
  for (int k = 0; k < mdl_gpu_check_n_cases(); k++) {
    const gcase *c = &CASES[k];
    mdl_gpu_case_result *r = &results[k];
    memset(r, 0, sizeof *r);
    r->name = c->name;
    r->tol = c->tol;
    /* the layer inside a net of one layer, named with distinct tops so
     * nothing runs in place */
    char text[2048];
    int n = snprintf(text, sizeof text, "layer { name: '%s' %s", c->name, c->layer);
    for (int i = 0; i < c->n_bottom; i++)
      n += snprintf(text + n, sizeof text - (size_t)n, " bottom: 'b%d'", i);
    int tops = strstr(c->layer, "'Split'") ? 2 : 1;
    for (int i = 0; i < tops; i++)
      n += snprintf(text + n, sizeof text - (size_t)n, " top: 't%d'", i);
    snprintf(text + n, sizeof text - (size_t)n, " }");
    Caffe__NetParameter *np = NULL;
    mdl_error err;
    if (mdl_text_parse(text, strlen(text), c->name, &caffe__net_parameter__descriptor,
                       (ProtobufCMessage **)&np, &err) != MDL_OK) {
      snprintf(r->why, sizeof r->why, "%.500s", err.msg);
      failed++;
      continue;
    }
    outputs oa = {0}, ob = {0};
    char why[512] = "";
    mdl_status sa = run_case(c, np->layer[0], a, &oa, why, sizeof why);
    if (sa) snprintf(r->why, sizeof r->why, "%s: %.480s", mdl_backend_name(a), why);
    mdl_status sb = sa ? sa : run_case(c, np->layer[0], b, &ob, why, sizeof why);
    if (!sa && sb) snprintf(r->why, sizeof r->why, "%s: %.480s", mdl_backend_name(b), why);
    if (!sa && !sb && oa.n != ob.n) snprintf(r->why, sizeof r->why, "different output counts");
    for (int t = 0; !r->why[0] && t < oa.n; t++)
      for (int64_t i = 0; i < oa.count[t]; i++) {
        double x = oa.v[t][i], y = ob.v[t][i];
        if (!isfinite(y)) r->bad_values++;
        double e = fabs(y - x) / (fabs(x) > 1 ? fabs(x) : 1);
        if (e > r->worst || e != e) r->worst = e;
        r->compared++;
      }
    bool bad = r->why[0] || r->bad_values || !(r->worst <= r->tol);
    failed += bad;
    if (log)
      fprintf(log, "%-22s %-4s worst %.3g (tol %.0e) over %d values%s%s\n", c->name,
              bad ? "FAIL" : "ok", r->worst, r->tol, r->compared, r->why[0] ? ": " : "", r->why);
    outputs_free(&oa);
    outputs_free(&ob);
    caffe__net_parameter__free_unpacked(np, NULL);
  }
  return failed;
}
