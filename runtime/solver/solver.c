/* Caffe's solvers: configuration, learning-rate schedule, optimiser
 * history and position. The per-element rules run on the backend
 * (mdl_backend_i.update; the CPU's are in runtime/cpu/solver_cpu.c). */
#include "runtime/solver/solver.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/suggest.h"

struct mdl_solver {
  const mdl_backend *be; /* where the history lives and updates run */
  mdl_solver_config cfg;
  int n_blobs;
  mdl_solver_blob *blobs;
  size_t total;
  int iter;
  int current_step;
  int n_hist;
  float *hist[2];
};

static const char *const kind_names[] = {"SGD",     "Nesterov", "AdaGrad",
                                         "RMSProp", "AdaDelta", "Adam"};

const char *mdl_solver_kind_name(mdl_solver_kind kind) {
  return (unsigned)kind < 6 ? kind_names[kind] : "?";
}

static const char *const policy_names[] = {"fixed",     "step", "exp",    "inv",
                                           "multistep", "poly", "sigmoid"};

/* protobuf-c points unset string fields with a default at the default. */
static bool type_is_set(const Caffe__SolverParameter *sp) {
  return sp->type && sp->type != caffe__solver_parameter__type__default_value;
}

/* Every problem goes to the collector; the first is the error returned. */
typedef struct config_errors {
  mdl_error *err;
  int n;
  void (*report)(void *ctx, const char *msg);
  void *ctx;
} config_errors;

static void config_fail(config_errors *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void config_fail(config_errors *e, const char *fmt, ...) {
  char msg[MDL_ERROR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (e->n++ == 0) mdl_errorf(e->err, MDL_ERR_INVALID, "%s", msg);
  if (e->report) e->report(e->ctx, msg);
}

#define FAIL(...) config_fail(&col, __VA_ARGS__)

static mdl_status config_get(const Caffe__SolverParameter *sp, mdl_solver_config *c,
                             config_errors col) {
  memset(c, 0, sizeof *c);
  int kind = -1;
  if (sp->has_solver_type) {
    if ((unsigned)sp->solver_type > 5)
      FAIL("solver_type: unknown value %d", sp->solver_type);
    else
      kind = sp->solver_type;
    if (kind >= 0 && type_is_set(sp) && strcasecmp(sp->type, kind_names[kind]) != 0)
      FAIL(
          "solver: both solver_type (%s) and type (\"%s\") are set and disagree; "
          "keep only `type`",
          kind_names[kind], sp->type);
  } else {
    const char *t = sp->type ? sp->type : "SGD";
    for (int i = 0; i < 6; i++)
      if (strcasecmp(t, kind_names[i]) == 0) kind = i;
    if (kind < 0) {
      const char *near = mdl_suggest_nearest(t, kind_names, 6);
      if (near)
        FAIL(
            "solver type \"%s\" is unknown; did you mean \"%s\"? (known: SGD, Nesterov, "
            "AdaGrad, RMSProp, AdaDelta, Adam)",
            t, near);
      else
        FAIL(
            "solver type \"%s\" is unknown; known: SGD, Nesterov, AdaGrad, RMSProp, "
            "AdaDelta, Adam",
            t);
    }
  }
  c->kind = (mdl_solver_kind)kind;

  const char *pol = sp->lr_policy;
  if (!pol || !*pol)
    FAIL(
        "solver: lr_policy is not set; one of fixed, step, exp, inv, multistep, "
        "poly, sigmoid");
  int p = -1;
  for (int i = 0; pol && i < 7; i++)
    if (strcmp(pol, policy_names[i]) == 0) p = i;
  if (p < 0 && pol && *pol) {
    const char *near = mdl_suggest_nearest(pol, policy_names, 7);
    if (near)
      FAIL(
          "solver: lr_policy \"%s\" is unknown; did you mean \"%s\"? (known: fixed, step, exp, "
          "inv, multistep, poly, sigmoid)",
          pol, near);
    else
      FAIL(
          "solver: lr_policy \"%s\" is unknown; known: fixed, step, exp, inv, "
          "multistep, poly, sigmoid",
          pol);
  }
  c->policy = (mdl_lr_policy)p;
  c->base_lr = sp->base_lr;
  c->gamma = sp->gamma;
  c->power = sp->power;
  c->momentum = sp->momentum;
  c->momentum2 = sp->momentum2;
  c->delta = sp->delta;
  c->rms_decay = sp->rms_decay;
  c->weight_decay = sp->weight_decay;
  c->stepsize = sp->stepsize;
  c->max_iter = sp->max_iter;
  c->clip_gradients = sp->clip_gradients;
  c->iter_size = sp->iter_size;

  const char *reg = sp->regularization_type ? sp->regularization_type : "L2";
  if (strcmp(reg, "L2") == 0)
    c->l1 = false;
  else if (strcmp(reg, "L1") == 0)
    c->l1 = true;
  else
    FAIL("solver: regularization_type \"%s\" is unknown; known: L2, L1", reg);

  /* counts Caffe would loop on silently (max_iter -5 "trains" 0..-5) */
  const struct {
    const char *name;
    int64_t v;
  } counts[] = {{"max_iter", sp->max_iter},
                {"display", sp->display},
                {"snapshot", sp->snapshot},
                {"test_interval", sp->test_interval},
                {"average_loss", sp->average_loss}};
  for (size_t i = 0; i < sizeof counts / sizeof *counts; i++)
    if (counts[i].v < 0)
      FAIL("solver: %s must be >= 0, got %lld", counts[i].name, (long long)counts[i].v);
  for (size_t i = 0; i < sp->n_test_iter; i++)
    if (sp->test_iter[i] < 0) FAIL("solver: test_iter must be >= 0, got %d", sp->test_iter[i]);
  if (!(c->base_lr >= 0) || !isfinite(c->base_lr))
    FAIL("solver: base_lr must be finite and >= 0, got %g", c->base_lr);
  if (c->iter_size < 1) FAIL("solver: iter_size must be >= 1, got %d", c->iter_size);
  if ((c->policy == MDL_LR_STEP || c->policy == MDL_LR_SIGMOID) && c->stepsize <= 0)
    FAIL("solver: lr_policy \"%s\" needs stepsize > 0", pol ? pol : "");
  if (c->policy != MDL_LR_FIXED && c->policy != MDL_LR_POLY && c->gamma < 0)
    FAIL("solver: lr_policy \"%s\" needs gamma >= 0, got %g", pol ? pol : "", c->gamma);
  if (c->policy == MDL_LR_POLY && c->max_iter <= 0)
    FAIL("solver: lr_policy \"poly\" needs max_iter > 0");
  if (sp->n_stepvalue > 64) FAIL("solver: at most 64 stepvalue entries, got %zu", sp->n_stepvalue);
  c->n_stepvalue = (int)sp->n_stepvalue;
  for (int i = 0; i < c->n_stepvalue; i++) {
    c->stepvalue[i] = sp->stepvalue[i];
    if (i > 0 && c->stepvalue[i] <= c->stepvalue[i - 1])
      FAIL("solver: stepvalue must increase (entry %d is %d after %d)", i, c->stepvalue[i],
           c->stepvalue[i - 1]);
  }
  /* Caffe's checks: these solvers have no momentum term. */
  if ((c->kind == MDL_SOLVER_ADAGRAD || c->kind == MDL_SOLVER_RMSPROP) && c->momentum != 0)
    FAIL("solver: momentum cannot be used with %s (got %g)", kind_names[c->kind], c->momentum);
  if (c->kind == MDL_SOLVER_RMSPROP && (c->rms_decay < 0 || c->rms_decay >= 1))
    FAIL("solver: rms_decay must be in [0, 1), got %g", c->rms_decay);
  if (c->momentum < 0 || c->momentum > 1)
    FAIL("solver: momentum must be in [0, 1], got %g", c->momentum);
  return col.n ? MDL_ERR_INVALID : MDL_OK;
}
#undef FAIL

mdl_status mdl_solver_config_get(const Caffe__SolverParameter *sp, mdl_solver_config *c,
                                 mdl_error *err) {
  mdl_error scratch;
  config_errors col = {.err = err ? err : &scratch};
  return config_get(sp, c, col);
}

int mdl_solver_config_check(const Caffe__SolverParameter *sp,
                            void (*report)(void *ctx, const char *msg), void *ctx) {
  mdl_error scratch;
  mdl_solver_config c;
  config_errors col = {.err = &scratch, .report = report, .ctx = ctx};
  config_get(sp, &c, col);
  return col.n;
}

mdl_status mdl_solver_new(const mdl_backend *be, const Caffe__SolverParameter *sp,
                          const mdl_solver_blob *blobs, int n_blobs, size_t total, mdl_solver **out,
                          mdl_error *err) {
  *out = NULL;
  mdl_solver_config cfg;
  mdl_status st = mdl_solver_config_get(sp, &cfg, err);
  if (st != MDL_OK) return st;
  for (int i = 0; i < n_blobs; i++)
    if (blobs[i].offset + blobs[i].count > total)
      return mdl_errorf(err, MDL_ERR_INTERNAL, "solver: blob %d lies outside the buffer", i);
  mdl_solver *s = mdl_xcalloc(1, sizeof *s);
  s->be = be;
  s->cfg = cfg;
  s->n_blobs = n_blobs;
  s->blobs = mdl_xmalloc((size_t)(n_blobs ? n_blobs : 1) * sizeof *blobs);
  if (n_blobs) memcpy(s->blobs, blobs, (size_t)n_blobs * sizeof *blobs);
  s->total = total;
  s->n_hist = (cfg.kind == MDL_SOLVER_ADADELTA || cfg.kind == MDL_SOLVER_ADAM) ? 2 : 1;
  for (int k = 0; k < s->n_hist; k++) {
    s->hist[k] = mdl_backend_alloc(be, (int64_t)total);
    if (!s->hist[k]) {
      mdl_solver_free(s);
      return mdl_errorf(err, MDL_ERR_NOMEM, "solver: history of %zu floats does not fit", total);
    }
  }
  *out = s;
  return MDL_OK;
}

void mdl_solver_free(mdl_solver *s) {
  if (!s) return;
  mdl_backend_free(s->be, s->hist[0]);
  mdl_backend_free(s->be, s->hist[1]);
  free(s->blobs);
  free(s);
}

/* Caffe's GetLearningRate at iter from multistep position `step`; returns
 * the position it would use. */
static float rate_of(const mdl_solver_config *c, int iter, int step, int *step_out) {
  float rate = c->base_lr;
  switch (c->policy) {
    case MDL_LR_FIXED:
      break;
    case MDL_LR_STEP:
      step = iter / c->stepsize;
      rate = (float)(c->base_lr * pow(c->gamma, step));
      break;
    case MDL_LR_EXP:
      rate = (float)(c->base_lr * pow(c->gamma, iter));
      break;
    case MDL_LR_INV:
      rate = c->base_lr * powf(1.0f + c->gamma * (float)iter, -c->power);
      break;
    case MDL_LR_MULTISTEP:
      if (step < c->n_stepvalue && iter >= c->stepvalue[step]) step++;
      rate = (float)(c->base_lr * pow(c->gamma, step));
      break;
    case MDL_LR_POLY:
      rate = c->base_lr * powf(1.0f - (float)iter / (float)c->max_iter, c->power);
      break;
    case MDL_LR_SIGMOID:
      rate = c->base_lr * (1.0f / (1.0f + expf(-c->gamma * ((float)iter - (float)c->stepsize))));
      break;
  }
  if (step_out) *step_out = step;
  return rate;
}

static float rate_at(const mdl_solver *s, int *step_out) {
  return rate_of(&s->cfg, s->iter, s->current_step, step_out);
}

float mdl_solver_rate(const mdl_solver *s) {
  return rate_at(s, NULL);
}

float mdl_solver_rate_at(const mdl_solver_config *c, int iter) {
  int step = 0; /* the multistep position a run reaching iter has */
  while (step < c->n_stepvalue && c->stepvalue[step] < iter) step++;
  return rate_of(c, iter, step, NULL);
}

void mdl_solver_update(mdl_solver *s, float *data, float *diff) {
  const mdl_solver_config *c = &s->cfg;
  int step;
  mdl_update u = {
      .rule = (mdl_update_rule)c->kind,
      .rate = rate_at(s, &step),
      .clip = c->clip_gradients,
      .norm = c->iter_size > 1 ? 1.0f / (float)c->iter_size : 1.0f,
      .weight_decay = c->weight_decay,
      .l1 = c->l1,
      .momentum = c->momentum,
      .momentum2 = c->momentum2,
      .delta = c->delta,
      .rms_decay = c->rms_decay,
      .blobs = s->blobs,
      .n_blobs = s->n_blobs,
  };
  if (c->kind == MDL_SOLVER_ADAM) {
    /* Adam's bias correction uses t = iter + 1 (Caffe's adam_solver.cpp). */
    const int t = s->iter + 1;
    u.adam_correction = (float)(sqrt(1.0 - pow(c->momentum2, t)) / (1.0 - pow(c->momentum, t)));
  }
  s->be->iface->update(s->be->ctx, &u, data, diff, s->hist);
  s->current_step = step;
  s->iter++;
}

int mdl_solver_iter(const mdl_solver *s) {
  return s->iter;
}
int mdl_solver_current_step(const mdl_solver *s) {
  return s->current_step;
}
const mdl_solver_config *mdl_solver_cfg(const mdl_solver *s) {
  return &s->cfg;
}

void mdl_solver_set_position(mdl_solver *s, int iter, int current_step) {
  s->iter = iter;
  s->current_step = current_step;
}

int mdl_solver_history_sets(const mdl_solver *s) {
  return s->n_hist;
}
float *mdl_solver_history(mdl_solver *s, int set) {
  return set >= 0 && set < s->n_hist ? s->hist[set] : NULL;
}

const mdl_backend *mdl_solver_backend(const mdl_solver *s) {
  return s->be;
}

void mdl_solver_history_get(const mdl_solver *s, int set, float *host) {
  mdl_backend_to_host(s->be, host, s->hist[set], (int64_t)s->total);
}

void mdl_solver_history_put(mdl_solver *s, int set, const float *host) {
  mdl_backend_to_device(s->be, s->hist[set], host, (int64_t)s->total);
}
int mdl_solver_n_blobs(const mdl_solver *s) {
  return s->n_blobs;
}
const mdl_solver_blob *mdl_solver_blobs(const mdl_solver *s) {
  return s->blobs;
}
size_t mdl_solver_total(const mdl_solver *s) {
  return s->total;
}
