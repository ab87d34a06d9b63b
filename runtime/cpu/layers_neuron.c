/* Element-wise layers (Caffe's "neuron" layers): ReLU, PReLU, ELU, Sigmoid,
 * TanH, Power, Exp, Log, AbsVal, BNLL, Threshold, Dropout. Every kernel works
 * on flat arrays of `count` floats (top shape == bottom shape), threaded in
 * contiguous chunks; all may run in place (top == bottom). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu/layers_cpu.h"

/* ---- generic element-wise driver ---------------------------------------- */

typedef struct ew_args {
  const float *x, *y, *dy;
  float *out;
  float p0, p1, p2, p3; /* per-type constants */
  const float *slope;   /* PReLU */
  int64_t dim, channels;
  uint8_t *mask;      /* Dropout */
  uint64_t seed, ctr; /* Dropout */
  uint32_t thresh;
} ew_args;

static void run_ew(const mdl_layer *l, int64_t n, mdl_task_fn fn, ew_args *a) {
  mdl_parallel_for(l->ctx.pool, n, EW_GRAIN, fn, a);
}

/* ---- ReLU --------------------------------------------------------------- */

static void relu_f(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  const float *restrict x = a->x;
  float *restrict y = a->out;
  const float s = a->p0;
  (void)t;
  if (s == 0.f)
    for (int64_t i = lo; i < hi; i++) y[i] = x[i] > 0.f ? x[i] : 0.f;
  else
    for (int64_t i = lo; i < hi; i++) y[i] = x[i] > 0.f ? x[i] : s * x[i];
}
static void relu_b(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  const float *restrict x = a->x, *restrict dy = a->dy;
  float *restrict dx = a->out;
  const float s = a->p0;
  (void)t;
  for (int64_t i = lo; i < hi; i++) dx[i] = x[i] > 0.f ? dy[i] : s * dy[i];
}

static void relu_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  ew_args a = {.x = bottom[0]->data, .out = top[0]->data, .p0 = mdl_geom_relu_slope(l)};
  run_ew(l, top[0]->count, relu_f, &a);
}
/* In place, x is the output: its sign is the input's for slope >= 0, as in
 * Caffe, which also reads the (overwritten) bottom. */
static void relu_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  ew_args a = {.x = bottom[0]->data,
               .dy = top[0]->diff,
               .out = bottom[0]->diff,
               .p0 = mdl_geom_relu_slope(l)};
  run_ew(l, top[0]->count, relu_b, &a);
}

const mdl_layer_impl mdl_cpu_relu_layer = {"ReLU", NULL, NULL, relu_forward, relu_backward, NULL};

/* ---- PReLU: y = max(x, 0) + a_c min(x, 0), channel axis 1 --------------- */

typedef struct prelu_priv {
  int64_t channels, dim; /* dim = count of axes 2.. */
  bool shared;
  float *saved_x; /* input copy for in-place use */
  int64_t count;
} prelu_priv;

static mdl_status prelu_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__PReLUParameter *p =
      MDL_LAYER_PARAM(l, prelu_param, Caffe__PReLUParameter, CAFFE__PRE_LUPARAMETER__INIT);
  const mdl_shape *s = &l->bottom_shape[0];
  if (s->n < 2) return MDL_LAYER_ERR(l, err, "PReLU needs at least 2 axes");
  prelu_priv *pp = mdl_xcalloc(1, sizeof *pp);
  l->priv = pp;
  pp->shared = p->channel_shared;
  pp->channels = s->d[1];
  pp->dim = mdl_shape_count_axes(s, 2, s->n);
  pp->count = mdl_shape_count_axes(s, 0, s->n);
  pp->saved_x = mdl_falloc(pp->count);
  if (!pp->saved_x) return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": PReLU buffer", l->name);
  if (l->n_param != 1 || l->param[0].count != (pp->shared ? 1 : pp->channels))
    return MDL_LAYER_ERR(l, err, "PReLU slope blob has %lld values, expected %lld",
                         (long long)l->param[0].count, (long long)(pp->shared ? 1 : pp->channels));
  return MDL_OK;
}
static void prelu_free(mdl_layer *l) {
  prelu_priv *pp = l->priv;
  mdl_ffree(pp->saved_x);
  free(pp);
}
static mdl_status prelu_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  const Caffe__PReLUParameter *p =
      MDL_LAYER_PARAM(l, prelu_param, Caffe__PReLUParameter, CAFFE__PRE_LUPARAMETER__INIT);
  if (!p->filler) {
    mdl_filler_constant(l->param[0].data, l->param[0].count, 0.25f);
    return MDL_OK;
  }
  return mdl_filler_fill(p->filler, &l->param[0], rng, err);
}
static void prelu_f(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) {
    int64_t c = a->channels == 1 ? 0 : (i / a->dim) % a->channels;
    float x = a->x[i];
    a->out[i] = x > 0.f ? x : a->slope[c] * x;
  }
}
static void prelu_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  prelu_priv *pp = l->priv;
  const float *x = bottom[0]->data;
  if (top[0] == bottom[0]) {
    mdl_vcopy(l->ctx.pool, pp->count, x, pp->saved_x);
    x = pp->saved_x;
  }
  ew_args a = {.x = x,
               .out = top[0]->data,
               .slope = l->param[0].data,
               .dim = pp->dim,
               .channels = pp->shared ? 1 : pp->channels};
  run_ew(l, pp->count, prelu_f, &a);
}
/* tasks over (num, channel) planes: slope gradients per slot (chunks fixed
 * by the plane count, not the threads), summed in slot order after */
typedef struct prelu_bargs {
  const float *x, *dy, *slope;
  float *dx;
  double *part; /* [slots][channels] */
  int64_t channels, dim, planes;
  bool shared, want_dx;
} prelu_bargs;
static void prelu_b(void *arg, int64_t lo, int64_t hi, int t) {
  const prelu_bargs *a = arg;
  double *part = a->part + (size_t)t * a->channels;
  for (int64_t pl = lo; pl < hi; pl++) {
    int64_t c = pl % a->channels, sc = a->shared ? 0 : c;
    const float *x = a->x + pl * a->dim, *dy = a->dy + pl * a->dim;
    float s = a->slope[sc];
    double acc = 0;
    for (int64_t j = 0; j < a->dim; j++)
      if (x[j] <= 0.f) acc += (double)dy[j] * x[j];
    part[c] += acc;
    if (a->want_dx) {
      float *dx = a->dx + pl * a->dim;
      for (int64_t j = 0; j < a->dim; j++) dx[j] = x[j] > 0.f ? dy[j] : s * dy[j];
    }
  }
}
static void prelu_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                           mdl_tensor *const *bottom) {
  prelu_priv *pp = l->priv;
  const float *x = top[0] == bottom[0] ? pp->saved_x : bottom[0]->data;
  int nt = mdl_threadpool_slots(l->ctx.pool);
  double *part = mdl_xcalloc((size_t)nt * (size_t)pp->channels, sizeof(double));
  prelu_bargs a = {x,          top[0]->diff, l->param[0].data, bottom[0]->diff,
                   part,       pp->channels, pp->dim,          pp->count / (pp->dim ? pp->dim : 1),
                   pp->shared, pd[0]};
  int64_t grain = pp->dim >= 4096 ? 1 : 4096 / (pp->dim ? pp->dim : 1);
  mdl_parallel_for(l->ctx.pool, a.planes, grain, prelu_b, &a);
  if (l->param[0].diff) {
    double tot = 0;
    for (int64_t c = 0; c < pp->channels; c++) {
      double s = 0;
      for (int t = 0; t < nt; t++) s += part[(size_t)t * pp->channels + c];
      if (pp->shared)
        tot += s;
      else
        l->param[0].diff[c] += (float)s;
    }
    if (pp->shared) l->param[0].diff[0] += (float)tot;
  }
  free(part);
}

const mdl_layer_impl mdl_cpu_prelu_layer = {"PReLU",       prelu_setup,    prelu_init,
                                            prelu_forward, prelu_backward, prelu_free};

/* ---- ELU ---------------------------------------------------------------- */

static void elu_f(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) {
    float x = a->x[i];
    a->out[i] = x > 0.f ? x : a->p0 * expm1f(x);
  }
}
/* Caffe's form: dx = dy * (x > 0 ? 1 : alpha + y), valid in place */
static void elu_b(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) {
    float y = a->y[i];
    a->out[i] = y > 0.f ? a->dy[i] : a->dy[i] * (a->p0 + y);
  }
}
static float elu_alpha(const mdl_layer *l) {
  return MDL_LAYER_PARAM(l, elu_param, Caffe__ELUParameter, CAFFE__ELUPARAMETER__INIT)->alpha;
}
static void elu_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  ew_args a = {.x = bottom[0]->data, .out = top[0]->data, .p0 = elu_alpha(l)};
  run_ew(l, top[0]->count, elu_f, &a);
}
static void elu_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  ew_args a = {.y = top[0]->data, .dy = top[0]->diff, .out = bottom[0]->diff, .p0 = elu_alpha(l)};
  run_ew(l, top[0]->count, elu_b, &a);
}
const mdl_layer_impl mdl_cpu_elu_layer = {"ELU", NULL, NULL, elu_forward, elu_backward, NULL};

/* ---- Sigmoid, TanH (backward from the output, so in place works) ------- */

static void sigmoid_f(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) a->out[i] = 0.5f * tanhf(0.5f * a->x[i]) + 0.5f;
}
static void sigmoid_b(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) a->out[i] = a->dy[i] * a->y[i] * (1.f - a->y[i]);
}
static void tanh_f(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) a->out[i] = tanhf(a->x[i]);
}
static void tanh_b(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) a->out[i] = a->dy[i] * (1.f - a->y[i] * a->y[i]);
}
static void sigmoid_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  ew_args a = {.x = bottom[0]->data, .out = top[0]->data};
  run_ew(l, top[0]->count, sigmoid_f, &a);
}
static void sigmoid_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                             mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  ew_args a = {.y = top[0]->data, .dy = top[0]->diff, .out = bottom[0]->diff};
  run_ew(l, top[0]->count, sigmoid_b, &a);
}
static void tanh_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  ew_args a = {.x = bottom[0]->data, .out = top[0]->data};
  run_ew(l, top[0]->count, tanh_f, &a);
}
static void tanh_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  ew_args a = {.y = top[0]->data, .dy = top[0]->diff, .out = bottom[0]->diff};
  run_ew(l, top[0]->count, tanh_b, &a);
}
const mdl_layer_impl mdl_cpu_sigmoid_layer = {"Sigmoid",        NULL, NULL, sigmoid_forward,
                                              sigmoid_backward, NULL};
const mdl_layer_impl mdl_cpu_tanh_layer = {"TanH", NULL, NULL, tanh_forward, tanh_backward, NULL};

/* ---- Power: y = (shift + scale x)^power --------------------------------- */
/* The input is needed in backward; in place it is recovered from y only when
 * power == 1, so in place keeps a copy (as Caffe's in-place layers do). */

typedef struct saved_priv {
  float *saved_x;
  int64_t count;
} saved_priv;

static mdl_status saved_setup(mdl_layer *l, mdl_error *err) {
  saved_priv *sp = mdl_xcalloc(1, sizeof *sp);
  l->priv = sp;
  sp->count = mdl_shape_count_axes(&l->bottom_shape[0], 0, l->bottom_shape[0].n);
  if (mdl_layer_in_place(l) && !(sp->saved_x = mdl_falloc(sp->count)))
    return mdl_errorf(err, MDL_ERR_NOMEM,
                      "layer \"%s\": a copy of its in-place input (%lld floats)", l->name,
                      (long long)sp->count);
  return MDL_OK;
}
static void saved_free(mdl_layer *l) {
  saved_priv *sp = l->priv;
  mdl_ffree(sp->saved_x);
  free(sp);
}
/* The input as backward will need it: a copy when running in place. */
static const float *saved_input(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  saved_priv *sp = l->priv;
  if (top[0] != bottom[0]) return bottom[0]->data;
  if (!sp->saved_x) abort(); /* a bug: run in place though its blob names said not (layer.h) */
  mdl_vcopy(l->ctx.pool, sp->count, bottom[0]->data, sp->saved_x);
  return sp->saved_x;
}
static const float *backward_input(mdl_layer *l, mdl_tensor *const *top,
                                   mdl_tensor *const *bottom) {
  saved_priv *sp = l->priv;
  return top[0] == bottom[0] ? sp->saved_x : bottom[0]->data;
}

static void power_f(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  const float pw = a->p0, sc = a->p1, sh = a->p2;
  for (int64_t i = lo; i < hi; i++) {
    float v = sh + sc * a->x[i];
    a->out[i] = pw == 1.f ? v : pw == 2.f ? v * v : powf(v, pw);
  }
}
static void power_b(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  const float pw = a->p0, sc = a->p1, sh = a->p2;
  const float ds = pw * sc;
  for (int64_t i = lo; i < hi; i++) {
    float g;
    if (ds == 0.f)
      g = 0.f;
    else if (pw == 1.f)
      g = ds;
    else if (pw == 2.f)
      g = ds * (sh + sc * a->x[i]);
    else
      g = ds * powf(sh + sc * a->x[i], pw - 1.f);
    a->out[i] = a->dy[i] * g;
  }
}
static void power_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  const Caffe__PowerParameter *p =
      MDL_LAYER_PARAM(l, power_param, Caffe__PowerParameter, CAFFE__POWER_PARAMETER__INIT);
  ew_args a = {.x = saved_input(l, bottom, top),
               .out = top[0]->data,
               .p0 = p->power,
               .p1 = p->scale,
               .p2 = p->shift};
  run_ew(l, top[0]->count, power_f, &a);
}
static void power_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                           mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  const Caffe__PowerParameter *p =
      MDL_LAYER_PARAM(l, power_param, Caffe__PowerParameter, CAFFE__POWER_PARAMETER__INIT);
  ew_args a = {.x = backward_input(l, top, bottom),
               .dy = top[0]->diff,
               .out = bottom[0]->diff,
               .p0 = p->power,
               .p1 = p->scale,
               .p2 = p->shift};
  run_ew(l, top[0]->count, power_b, &a);
}
const mdl_layer_impl mdl_cpu_power_layer = {"Power",       saved_setup,    NULL,
                                            power_forward, power_backward, saved_free};

/* ---- Exp: y = base^(shift + scale x) = outer * exp(inner x) ------------- */

static void exp_consts(const mdl_layer *l, float *inner, float *outer) {
  const Caffe__ExpParameter *p =
      MDL_LAYER_PARAM(l, exp_param, Caffe__ExpParameter, CAFFE__EXP_PARAMETER__INIT);
  float log_base = p->base_ == -1.f ? 1.f : logf(p->base_);
  *inner = log_base * p->scale;
  *outer = p->shift == 0.f ? 1.f : (p->base_ == -1.f ? expf(p->shift) : powf(p->base_, p->shift));
}
static mdl_status exp_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__ExpParameter *p =
      MDL_LAYER_PARAM(l, exp_param, Caffe__ExpParameter, CAFFE__EXP_PARAMETER__INIT);
  if (!(p->base_ > 0.f || p->base_ == -1.f))
    return MDL_LAYER_ERR(l, err, "exp_param.base must be positive or -1 (e), got %g", p->base_);
  return MDL_OK;
}
static void exp_f(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) a->out[i] = a->p1 * expf(a->p0 * a->x[i]);
}
static void exp_b(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) a->out[i] = a->dy[i] * a->y[i] * a->p0;
}
static void exp_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  ew_args a = {.x = bottom[0]->data, .out = top[0]->data};
  exp_consts(l, &a.p0, &a.p1);
  run_ew(l, top[0]->count, exp_f, &a);
}
static void exp_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  ew_args a = {.y = top[0]->data, .dy = top[0]->diff, .out = bottom[0]->diff};
  exp_consts(l, &a.p0, &a.p1);
  run_ew(l, top[0]->count, exp_b, &a);
}
const mdl_layer_impl mdl_cpu_exp_layer = {"Exp", exp_setup, NULL, exp_forward, exp_backward, NULL};

/* ---- Log: y = log_base(shift + scale x) --------------------------------- */

static void log_consts(const mdl_layer *l, float *scale, float *shift, float *base_scale) {
  const Caffe__LogParameter *p =
      MDL_LAYER_PARAM(l, log_param, Caffe__LogParameter, CAFFE__LOG_PARAMETER__INIT);
  *scale = p->scale;
  *shift = p->shift;
  *base_scale = p->base_ == -1.f ? 1.f : 1.f / logf(p->base_);
}
static mdl_status log_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__LogParameter *p =
      MDL_LAYER_PARAM(l, log_param, Caffe__LogParameter, CAFFE__LOG_PARAMETER__INIT);
  if (!(p->base_ > 0.f || p->base_ == -1.f))
    return MDL_LAYER_ERR(l, err, "log_param.base must be positive or -1 (e), got %g", p->base_);
  return saved_setup(l, err);
}
static void log_f(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) a->out[i] = logf(a->p1 + a->p0 * a->x[i]) * a->p2;
}
static void log_b(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++)
    a->out[i] = a->dy[i] * a->p0 * a->p2 / (a->p1 + a->p0 * a->x[i]);
}
static void log_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  ew_args a = {.x = saved_input(l, bottom, top), .out = top[0]->data};
  log_consts(l, &a.p0, &a.p1, &a.p2);
  run_ew(l, top[0]->count, log_f, &a);
}
static void log_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  ew_args a = {.x = backward_input(l, top, bottom), .dy = top[0]->diff, .out = bottom[0]->diff};
  log_consts(l, &a.p0, &a.p1, &a.p2);
  run_ew(l, top[0]->count, log_b, &a);
}
const mdl_layer_impl mdl_cpu_log_layer = {"Log",       log_setup,    NULL,
                                          log_forward, log_backward, saved_free};

/* ---- AbsVal, BNLL -------------------------------------------------------- */

static void abs_f(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) a->out[i] = fabsf(a->x[i]);
}
static void abs_b(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) {
    float x = a->x[i];
    a->out[i] = x > 0.f ? a->dy[i] : x < 0.f ? -a->dy[i] : 0.f;
  }
}
static void abs_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  ew_args a = {.x = saved_input(l, bottom, top), .out = top[0]->data};
  run_ew(l, top[0]->count, abs_f, &a);
}
static void abs_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  ew_args a = {.x = backward_input(l, top, bottom), .dy = top[0]->diff, .out = bottom[0]->diff};
  run_ew(l, top[0]->count, abs_b, &a);
}
const mdl_layer_impl mdl_cpu_absval_layer = {"AbsVal",    saved_setup,  NULL,
                                             abs_forward, abs_backward, saved_free};

#define BNLL_THRESHOLD 50.f
static void bnll_f(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) {
    float x = a->x[i];
    a->out[i] = x > 0.f ? x + log1pf(expf(-x)) : log1pf(expf(x));
  }
}
static void bnll_b(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) {
    float e = expf(fminf(a->x[i], BNLL_THRESHOLD));
    a->out[i] = a->dy[i] * e / (e + 1.f);
  }
}
static void bnll_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  ew_args a = {.x = saved_input(l, bottom, top), .out = top[0]->data};
  run_ew(l, top[0]->count, bnll_f, &a);
}
static void bnll_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  if (!pd[0]) return;
  ew_args a = {.x = backward_input(l, top, bottom), .dy = top[0]->diff, .out = bottom[0]->diff};
  run_ew(l, top[0]->count, bnll_b, &a);
}
const mdl_layer_impl mdl_cpu_bnll_layer = {"BNLL",       saved_setup,   NULL,
                                           bnll_forward, bnll_backward, saved_free};

/* ---- Threshold: y = x > t; its gradient is zero almost everywhere ------- */

static void thr_f(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) a->out[i] = a->x[i] > a->p0 ? 1.f : 0.f;
}
static void thr_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  const Caffe__ThresholdParameter *p = MDL_LAYER_PARAM(
      l, threshold_param, Caffe__ThresholdParameter, CAFFE__THRESHOLD_PARAMETER__INIT);
  ew_args a = {.x = bottom[0]->data, .out = top[0]->data, .p0 = p->threshold};
  run_ew(l, top[0]->count, thr_f, &a);
}
static void thr_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                         mdl_tensor *const *bottom) {
  if (pd[0]) mdl_vset(l->ctx.pool, bottom[0]->count, 0.f, bottom[0]->diff);
  (void)top;
}
const mdl_layer_impl mdl_cpu_threshold_layer = {"Threshold", NULL,         NULL,
                                                thr_forward, thr_backward, NULL};

/* ---- Dropout: TRAIN y = x * mask / (1 - ratio); TEST y = x -------------- */
/* Mask bit i of a forward pass is draw (counter + i) of the net's stream, so
 * it is the same for any thread count. */

typedef struct dropout_priv {
  mdl_dropout_geom g;
  uint8_t *mask;
} dropout_priv;

static mdl_status dropout_setup(mdl_layer *l, mdl_error *err) {
  dropout_priv *dp = mdl_xcalloc(1, sizeof *dp);
  l->priv = dp;
  mdl_status st = mdl_geom_dropout(l, &dp->g, err);
  if (st) return st;
  if (l->phase == CAFFE__PHASE__TRAIN) {
    dp->mask = malloc((size_t)(dp->g.count ? dp->g.count : 1));
    if (!dp->mask) return mdl_errorf(err, MDL_ERR_NOMEM, "layer \"%s\": dropout mask", l->name);
  }
  return MDL_OK;
}
static void dropout_free(mdl_layer *l) {
  dropout_priv *dp = l->priv;
  free(dp->mask);
  free(dp);
}
static void dropout_f(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) {
    uint8_t keep = mdl_rng_bits_at(a->seed, a->ctr + (uint64_t)i) > a->thresh;
    a->mask[i] = keep;
    a->out[i] = keep ? a->x[i] * a->p0 : 0.f;
  }
}
static void dropout_b(void *arg, int64_t lo, int64_t hi, int t) {
  const ew_args *a = arg;
  (void)t;
  for (int64_t i = lo; i < hi; i++) a->out[i] = a->mask[i] ? a->dy[i] * a->p0 : 0.f;
}
static void dropout_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  dropout_priv *dp = l->priv;
  if (l->phase != CAFFE__PHASE__TRAIN) {
    mdl_vcopy(l->ctx.pool, dp->g.count, bottom[0]->data, top[0]->data);
    return;
  }
  mdl_rng fallback = {0, 0};
  mdl_rng *rng = l->ctx.rng ? l->ctx.rng : &fallback;
  ew_args a = {.x = bottom[0]->data,
               .out = top[0]->data,
               .p0 = dp->g.scale,
               .mask = dp->mask,
               .seed = rng->seed,
               .ctr = rng->counter,
               .thresh = dp->g.thresh};
  rng->counter += (uint64_t)dp->g.count;
  run_ew(l, dp->g.count, dropout_f, &a);
}
static void dropout_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                             mdl_tensor *const *bottom) {
  dropout_priv *dp = l->priv;
  if (!pd[0]) return;
  if (l->phase != CAFFE__PHASE__TRAIN) {
    mdl_vcopy(l->ctx.pool, dp->g.count, top[0]->diff, bottom[0]->diff);
    return;
  }
  ew_args a = {.dy = top[0]->diff, .out = bottom[0]->diff, .p0 = dp->g.scale, .mask = dp->mask};
  run_ew(l, dp->g.count, dropout_b, &a);
}
const mdl_layer_impl mdl_cpu_dropout_layer = {"Dropout",       dropout_setup,    NULL,
                                              dropout_forward, dropout_backward, dropout_free};
