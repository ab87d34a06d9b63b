/* Each solver and lr policy against values worked out by hand (Caffe's
 * formulas written out step by step in double precision). */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "runtime/cpu/cpu_backend.h"
#include "runtime/solver/solver.h"

static Caffe__SolverParameter base_param(const char *type, const char *policy) {
  Caffe__SolverParameter sp = CAFFE__SOLVER_PARAMETER__INIT;
  if (type) sp.type = (char *)type;
  sp.lr_policy = (char *)policy;
  sp.base_lr = 0.1f;
  return sp;
}

static mdl_solver *make(const Caffe__SolverParameter *sp, int n_blobs, const mdl_solver_blob *b,
                        size_t total) {
  mdl_solver *s = NULL;
  mdl_error err;
  mdl_status st = mdl_solver_new(mdl_cpu_backend(), sp, b, n_blobs, total, &s, &err);
  cr_assert_eq(st, MDL_OK, "%s", err.msg);
  return s;
}

static const mdl_solver_blob one_blob = {.offset = 0, .count = 2, .lr_mult = 1, .decay_mult = 1};

#define NEAR(a, b)                                                             \
  cr_assert(fabs((double)(a) - (double)(b)) <= 1e-6 * (1 + fabs((double)(b))), \
            "%s = %.9g, expected %.9g", #a, (double)(a), (double)(b))

Test(lr_policy, all_policies) {
  struct {
    const char *policy;
    int iter;
    double expect;
  } cases[] = {
      {"fixed", 7, 0.1},
      {"step", 25, 0.1 * 0.5 * 0.5}, /* stepsize 10: floor(25/10) = 2 */
      {"exp", 3, 0.1 * 0.125},       /* gamma^3 */
      {"inv", 100, 0.1 * pow(1 + 0.5 * 100, -0.75)},
      {"poly", 25, 0.1 * pow(1 - 25.0 / 100, 0.75)},
      {"sigmoid", 12, 0.1 / (1 + exp(-0.5 * (12 - 10)))},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    Caffe__SolverParameter sp = base_param(NULL, cases[i].policy);
    sp.gamma = 0.5f;
    sp.power = 0.75f;
    sp.stepsize = 10;
    sp.max_iter = 100;
    mdl_solver *s = make(&sp, 1, &one_blob, 2);
    mdl_solver_set_position(s, cases[i].iter, 0);
    NEAR(mdl_solver_rate(s), cases[i].expect);
    mdl_solver_free(s);
  }
}

Test(lr_policy, multistep_advances_once_per_update) {
  Caffe__SolverParameter sp = base_param(NULL, "multistep");
  sp.gamma = 0.1f;
  int steps[] = {2, 4};
  sp.stepvalue = steps;
  sp.n_stepvalue = 2;
  mdl_solver *s = make(&sp, 1, &one_blob, 2);
  float w[2] = {0}, d[2] = {0};
  double expect[] = {0.1, 0.1, 0.01, 0.01, 0.001, 0.001};
  for (int it = 0; it < 6; it++) {
    NEAR(mdl_solver_rate(s), expect[it]);
    mdl_solver_update(s, w, d);
  }
  cr_assert_eq(mdl_solver_current_step(s), 2);
  mdl_solver_free(s);
}

Test(lr_policy, rejects_bad_settings) {
  mdl_error err;
  mdl_solver_config c;
  Caffe__SolverParameter sp = base_param(NULL, "step");
  cr_assert_eq(mdl_solver_config_get(&sp, &c, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "stepsize"), "%s", err.msg);
  sp = base_param(NULL, "cosine");
  cr_assert_eq(mdl_solver_config_get(&sp, &c, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "multistep"), "%s", err.msg);
  sp = base_param(NULL, NULL);
  cr_assert_eq(mdl_solver_config_get(&sp, &c, &err), MDL_ERR_INVALID);
  sp = base_param("Adamax", "fixed");
  cr_assert_eq(mdl_solver_config_get(&sp, &c, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "AdaDelta"), "%s", err.msg);
  sp = base_param("AdaGrad", "fixed");
  sp.momentum = 0.9f;
  cr_assert_eq(mdl_solver_config_get(&sp, &c, &err), MDL_ERR_INVALID);
  sp = base_param(NULL, "fixed");
  sp.regularization_type = "L3";
  cr_assert_eq(mdl_solver_config_get(&sp, &c, &err), MDL_ERR_INVALID);
}

Test(solver, deprecated_solver_type_enum) {
  mdl_error err;
  mdl_solver_config c;
  Caffe__SolverParameter sp = base_param(NULL, "fixed");
  sp.has_solver_type = 1;
  sp.solver_type = CAFFE__SOLVER_PARAMETER__SOLVER_TYPE__NESTEROV;
  cr_assert_eq(mdl_solver_config_get(&sp, &c, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(c.kind, MDL_SOLVER_NESTEROV);
  sp.type = "Adam";
  cr_assert_eq(mdl_solver_config_get(&sp, &c, &err), MDL_ERR_INVALID);
}

/* Runs `steps` updates on w = {1, -2} with gradients g(t) = {0.5, 0.25} * (t + 1). */
static void run_steps(mdl_solver *s, float *w, int steps) {
  for (int t = 0; t < steps; t++) {
    float d[2] = {0.5f * (t + 1), 0.25f * (t + 1)};
    mdl_solver_update(s, w, d);
  }
}

static void expect_w(const float *w, const double *e) {
  NEAR(w[0], e[0]);
  NEAR(w[1], e[1]);
}

Test(solver, sgd_momentum_weight_decay) {
  Caffe__SolverParameter sp = base_param("SGD", "fixed");
  sp.momentum = 0.9f;
  sp.weight_decay = 0.01f;
  mdl_solver *s = make(&sp, 1, &one_blob, 2);
  float w[2] = {1, -2};
  run_steps(s, w, 3);
  double e[2] = {1, -2}, h[2] = {0, 0}, g0[2] = {0.5, 0.25};
  for (int t = 0; t < 3; t++)
    for (int j = 0; j < 2; j++) {
      double g = g0[j] * (t + 1) + 0.01 * e[j];
      h[j] = 0.1 * g + 0.9 * h[j];
      e[j] -= h[j];
    }
  expect_w(w, e);
  NEAR(mdl_solver_history(s, 0)[0], h[0]);
  cr_assert_eq(mdl_solver_iter(s), 3);
  mdl_solver_free(s);
}

Test(solver, sgd_l1_and_multipliers) {
  Caffe__SolverParameter sp = base_param("SGD", "fixed");
  sp.weight_decay = 0.1f;
  sp.regularization_type = "L1";
  mdl_solver_blob b[2] = {{.offset = 0, .count = 1, .lr_mult = 2, .decay_mult = 0},
                          {.offset = 1, .count = 1, .lr_mult = 1, .decay_mult = 3}};
  mdl_solver *s = make(&sp, 2, b, 2);
  float w[2] = {1, -2};
  float d[2] = {0.5f, 0.25f};
  mdl_solver_update(s, w, d);
  /* blob 0: lr 0.2, no decay; blob 1: lr 0.1, decay 0.3 * sign(-2) = -0.3 */
  double e[2] = {1 - 0.2 * 0.5, -2 - 0.1 * (0.25 - 0.3)};
  expect_w(w, e);
  mdl_solver_free(s);
}

Test(solver, nesterov) {
  Caffe__SolverParameter sp = base_param("Nesterov", "fixed");
  sp.momentum = 0.9f;
  mdl_solver *s = make(&sp, 1, &one_blob, 2);
  float w[2] = {1, -2};
  run_steps(s, w, 3);
  double e[2] = {1, -2}, h[2] = {0, 0}, g0[2] = {0.5, 0.25};
  for (int t = 0; t < 3; t++)
    for (int j = 0; j < 2; j++) {
      double prev = h[j];
      h[j] = 0.1 * g0[j] * (t + 1) + 0.9 * prev;
      e[j] -= 1.9 * h[j] - 0.9 * prev;
    }
  expect_w(w, e);
  mdl_solver_free(s);
}

Test(solver, adagrad) {
  Caffe__SolverParameter sp = base_param("AdaGrad", "fixed");
  sp.delta = 1e-6f;
  mdl_solver *s = make(&sp, 1, &one_blob, 2);
  float w[2] = {1, -2};
  run_steps(s, w, 3);
  double e[2] = {1, -2}, h[2] = {0, 0}, g0[2] = {0.5, 0.25};
  for (int t = 0; t < 3; t++)
    for (int j = 0; j < 2; j++) {
      double g = g0[j] * (t + 1);
      h[j] += g * g;
      e[j] -= 0.1 * g / (sqrt(h[j]) + 1e-6);
    }
  expect_w(w, e);
  mdl_solver_free(s);
}

Test(solver, rmsprop) {
  Caffe__SolverParameter sp = base_param("RMSProp", "fixed");
  sp.rms_decay = 0.9f;
  sp.delta = 1e-6f;
  mdl_solver *s = make(&sp, 1, &one_blob, 2);
  float w[2] = {1, -2};
  run_steps(s, w, 3);
  double e[2] = {1, -2}, h[2] = {0, 0}, g0[2] = {0.5, 0.25};
  for (int t = 0; t < 3; t++)
    for (int j = 0; j < 2; j++) {
      double g = g0[j] * (t + 1);
      h[j] = 0.1 * g * g + 0.9 * h[j];
      e[j] -= 0.1 * g / (sqrt(h[j]) + 1e-6);
    }
  expect_w(w, e);
  mdl_solver_free(s);
}

Test(solver, adadelta) {
  Caffe__SolverParameter sp = base_param("AdaDelta", "fixed");
  sp.base_lr = 1.0f;
  sp.momentum = 0.95f;
  sp.delta = 1e-6f;
  mdl_solver *s = make(&sp, 1, &one_blob, 2);
  cr_assert_eq(mdl_solver_history_sets(s), 2);
  float w[2] = {1, -2};
  run_steps(s, w, 3);
  double e[2] = {1, -2}, h1[2] = {0, 0}, h2[2] = {0, 0}, g0[2] = {0.5, 0.25};
  for (int t = 0; t < 3; t++)
    for (int j = 0; j < 2; j++) {
      double g = g0[j] * (t + 1);
      h1[j] = 0.05 * g * g + 0.95 * h1[j];
      double u = g * sqrt((h2[j] + 1e-6) / (h1[j] + 1e-6));
      h2[j] = 0.05 * u * u + 0.95 * h2[j];
      e[j] -= u;
    }
  expect_w(w, e);
  NEAR(mdl_solver_history(s, 1)[1], h2[1]);
  mdl_solver_free(s);
}

Test(solver, adam) {
  Caffe__SolverParameter sp = base_param("Adam", "fixed");
  sp.base_lr = 0.001f;
  sp.momentum = 0.9f; /* momentum2 0.999 and delta 1e-8 by default */
  mdl_solver *s = make(&sp, 1, &one_blob, 2);
  float w[2] = {1, -2};
  run_steps(s, w, 3);
  double e[2] = {1, -2}, m[2] = {0, 0}, v[2] = {0, 0}, g0[2] = {0.5, 0.25};
  for (int t = 0; t < 3; t++) {
    double corr = sqrt(1 - pow(0.999, t + 1)) / (1 - pow(0.9, t + 1));
    for (int j = 0; j < 2; j++) {
      double g = g0[j] * (t + 1);
      m[j] = 0.1 * g + 0.9 * m[j];
      v[j] = 0.001 * g * g + 0.999 * v[j];
      e[j] -= 0.001 * corr * m[j] / (sqrt(v[j]) + 1e-8);
    }
  }
  expect_w(w, e);
  mdl_solver_free(s);
}

Test(solver, clip_gradients_and_iter_size) {
  Caffe__SolverParameter sp = base_param("SGD", "fixed");
  sp.clip_gradients = 1.0f;
  sp.iter_size = 2;
  mdl_solver *s = make(&sp, 1, &one_blob, 2);
  float w[2] = {0, 0};
  float d[2] = {3, 4}; /* norm 5 -> scaled to {0.6, 0.8}, then halved */
  mdl_solver_update(s, w, d);
  double e[2] = {-0.1 * 0.3, -0.1 * 0.4};
  expect_w(w, e);
  mdl_solver_free(s);
}

Test(solver, same_inputs_same_bits) {
  Caffe__SolverParameter sp = base_param("Adam", "inv");
  sp.gamma = 1e-4f;
  sp.power = 0.75f;
  sp.momentum = 0.9f;
  enum { N = 1000 };
  mdl_solver_blob b = {.offset = 0, .count = N, .lr_mult = 1, .decay_mult = 1};
  float w1[N], w2[N];
  for (int k = 0; k < 2; k++) {
    float *w = k ? w2 : w1;
    mdl_solver *s = make(&sp, 1, &b, N);
    for (int j = 0; j < N; j++) w[j] = sinf((float)j);
    for (int t = 0; t < 5; t++) {
      float d[N];
      for (int j = 0; j < N; j++) d[j] = cosf((float)(j * (t + 1)));
      mdl_solver_update(s, w, d);
    }
    mdl_solver_free(s);
  }
  cr_assert(memcmp(w1, w2, sizeof w1) == 0);
}
