/* LSTMUnit, LSTM and RNN: finite-difference gradient checks (cont resets,
 * static input, expose_hidden), the state carried between forwards, and
 * outputs and gradients against PyTorch in float64 on Caffe-layout weights
 * (tests/fixtures/recurrent_fixture.txt, made by make_recurrent_fixture.py,
 * whose input formula and cases this file repeats). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileio.h"
#include "tests/gradcheck.h"

#define GRAD_OK(r)                                                              \
  cr_assert((r).failed == 0 && (r).checked > 0, "checked %lld failed %lld: %s", \
            (long long)(r).checked, (long long)(r).failed, (r).first_failure)

#define FILLERS                                           \
  "weight_filler { type: 'uniform' min: -0.6 max: 0.6 } " \
  "bias_filler { type: 'uniform' min: -0.3 max: 0.3 } "

/* cont for a T x N bottom: 0 at t = 0 unless keep_first (exposed h_0), and a
 * reset of the last stream halfway through. */
typedef struct cont_spec {
  int bottom; /* index of cont */
  int T, N;
  bool keep_first;
} cont_spec;

static void cont_prep(gc_layer *f, void *arg) {
  const cont_spec *c = arg;
  float *v = f->bottom[c->bottom].data;
  for (int t = 0; t < c->T; t++)
    for (int n = 0; n < c->N; n++) v[t * c->N + n] = 1.f;
  for (int n = 0; n < c->N; n++) v[n] = c->keep_first && n == 0 ? 1.f : 0.f;
  v[(c->T / 2) * c->N + c->N - 1] = 0.f;
}

/* ---- LSTMUnit ---------------------------------------------------------------- */

Test(recurrent, lstm_unit_grad) {
  mdl_shape s[3] = {gc_shape(3, (int64_t[]){1, 3, 4}), gc_shape(3, (int64_t[]){1, 3, 16}),
                    gc_shape(2, (int64_t[]){1, 3})};
  cont_spec c = {2, 1, 3, true}; /* item 0 continues, 1 and 2... */
  gc_opts o = gc_default_opts();
  o.skip_bottoms = 4;
  GRAD_OK(gc_run("type: 'LSTMUnit' top: 'c' top: 'h'", CAFFE__PHASE__TRAIN, 3, s, false, &o,
                 cont_prep, &c, NULL));
}

Test(recurrent, lstm_unit_values) {
  mdl_shape s[3] = {gc_shape(3, (int64_t[]){1, 2, 1}), gc_shape(3, (int64_t[]){1, 2, 4}),
                    gc_shape(2, (int64_t[]){1, 2})};
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, "type: 'LSTMUnit' top: 'c' top: 'h'", CAFFE__PHASE__TRAIN, 3, s,
                             false, NULL, 7, &err),
               MDL_OK, "%s", err.msg);
  const float cp[2] = {0.7f, -0.4f}, X[8] = {0.1f, 0.2f, 0.3f, 0.4f, -0.5f, 0.6f, -0.7f, 0.8f},
              cont[2] = {1.f, 0.f};
  memcpy(f.bottom[0].data, cp, sizeof cp);
  memcpy(f.bottom[1].data, X, sizeof X);
  memcpy(f.bottom[2].data, cont, sizeof cont);
  gc_forward(&f);
  for (int n = 0; n < 2; n++) {
    const float *x = X + 4 * n; /* Caffe's order: i f o g */
    double i = 1 / (1 + exp(-x[0])), fg = 1 / (1 + exp(-x[1])), o = 1 / (1 + exp(-x[2])),
           g = tanh(x[3]);
    double c = cont[n] * fg * cp[n] + i * g, h = o * tanh(c);
    cr_assert_float_eq(f.top[0].data[n], c, 1e-6, "c[%d] %g want %g", n, f.top[0].data[n], c);
    cr_assert_float_eq(f.top[1].data[n], h, 1e-6, "h[%d] %g want %g", n, f.top[1].data[n], h);
  }
  gc_layer_free(&f);
}

/* ---- LSTM and RNN gradient checks ---------------------------------------------- */

static void grad_case(const char *type, bool with_static, bool expose) {
  const int T = 3, N = 2, I = 3, H = 2;
  char text[512];
  snprintf(text, sizeof text, "type: '%s' top: 'y' %s recurrent_param { num_output: %d %s %s }",
           type, expose ? (strcmp(type, "LSTM") ? "top: 'hT'" : "top: 'hT' top: 'cT'") : "", H,
           FILLERS, expose ? "expose_hidden: true" : "");
  mdl_shape s[5];
  int nb = 0;
  s[nb++] = gc_shape(3, (int64_t[]){T, N, I});
  s[nb++] = gc_shape(2, (int64_t[]){T, N});
  if (with_static) s[nb++] = gc_shape(2, (int64_t[]){N, 2});
  if (expose) {
    s[nb++] = gc_shape(3, (int64_t[]){1, N, H});
    if (!strcmp(type, "LSTM")) s[nb++] = gc_shape(3, (int64_t[]){1, N, H});
  }
  cont_spec c = {1, T, N, expose};
  gc_opts o = gc_default_opts();
  o.skip_bottoms = 2;
  gc_result r = gc_run(text, CAFFE__PHASE__TRAIN, nb, s, false, &o, cont_prep, &c, NULL);
  cr_assert(r.failed == 0 && r.checked > 0, "%s static %d expose %d: checked %lld failed %lld: %s",
            type, with_static, expose, (long long)r.checked, (long long)r.failed, r.first_failure);
}

Test(recurrent, lstm_grad) {
  for (int k = 0; k < 4; k++) grad_case("LSTM", k & 1, k & 2);
}

Test(recurrent, rnn_grad) {
  for (int k = 0; k < 4; k++) grad_case("RNN", k & 1, k & 2);
}

/* Caffe's blob order and shapes, which .caffemodel files rely on. */
Test(recurrent, blob_layout) {
  mdl_shape s[3] = {gc_shape(4, (int64_t[]){5, 2, 3, 2}), gc_shape(2, (int64_t[]){5, 2}),
                    gc_shape(3, (int64_t[]){2, 7, 1})};
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, "type: 'LSTM' recurrent_param { num_output: 4 }",
                             CAFFE__PHASE__TRAIN, 3, s, false, NULL, 7, &err),
               MDL_OK, "%s", err.msg);
  const int64_t lstm[4][2] = {{16, 6}, {16, 0}, {16, 7}, {16, 4}}; /* W_xc b_c W_xc_static W_hc */
  cr_assert_eq(f.l->n_param, 4);
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(f.l->param[i].d[0], lstm[i][0], "blob %d", i);
    if (lstm[i][1]) cr_assert_eq(f.l->param[i].d[1], lstm[i][1], "blob %d", i);
  }
  gc_layer_free(&f);
  cr_assert_eq(gc_layer_make(&f, "type: 'RNN' recurrent_param { num_output: 4 }",
                             CAFFE__PHASE__TRAIN, 2, s, false, NULL, 7, &err),
               MDL_OK, "%s", err.msg);
  const int64_t rnn[5][2] = {{4, 6}, {4, 0}, {4, 4}, {4, 4}, {4, 0}}; /* W_xh b_h W_hh W_ho b_o */
  cr_assert_eq(f.l->n_param, 5);
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(f.l->param[i].n, rnn[i][1] ? 2 : 1, "blob %d", i);
    cr_assert_eq(f.l->param[i].d[0], rnn[i][0], "blob %d", i);
    if (rnn[i][1]) cr_assert_eq(f.l->param[i].d[1], rnn[i][1], "blob %d", i);
  }
  gc_layer_free(&f);
}

/* Without expose_hidden the state carries over: two forwards of T steps
 * (the second's cont starting at 1) equal one forward of 2T steps. */
static void carry_case(const char *type) {
  const int T = 3, N = 2, I = 2, H = 3;
  char text[256];
  snprintf(text, sizeof text, "type: '%s' recurrent_param { num_output: %d %s }", type, H, FILLERS);
  mdl_shape l2[2] = {gc_shape(3, (int64_t[]){2 * T, N, I}), gc_shape(2, (int64_t[]){2 * T, N})};
  mdl_shape l1[2] = {gc_shape(3, (int64_t[]){T, N, I}), gc_shape(2, (int64_t[]){T, N})};
  gc_layer whole, half;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&whole, text, CAFFE__PHASE__TEST, 2, l2, false, NULL, 7, &err), MDL_OK,
               "%s", err.msg);
  cr_assert_eq(gc_layer_make(&half, text, CAFFE__PHASE__TEST, 2, l1, false, NULL, 7, &err), MDL_OK,
               "%s", err.msg);
  cr_assert_eq(whole.n_params, half.n_params);
  memcpy(half.params, whole.params, (size_t)whole.n_params * sizeof(float));
  for (int i = 0; i < 2 * T * N; i++) whole.bottom[1].data[i] = i < N ? 0.f : 1.f;
  gc_forward(&whole);
  for (int part = 0; part < 2; part++) {
    memcpy(half.bottom[0].data, whole.bottom[0].data + part * T * N * I,
           (size_t)(T * N * I) * sizeof(float));
    memcpy(half.bottom[1].data, whole.bottom[1].data + part * T * N,
           (size_t)(T * N) * sizeof(float));
    gc_forward(&half);
    for (int i = 0; i < T * N * H; i++)
      cr_assert_float_eq(half.top[0].data[i], whole.top[0].data[part * T * N * H + i], 1e-6,
                         "%s part %d element %d: %g vs %g", type, part, i, half.top[0].data[i],
                         whole.top[0].data[part * T * N * H + i]);
  }
  /* cont = 0 everywhere at t = 0 forgets the carried state again */
  memcpy(half.bottom[0].data, whole.bottom[0].data, (size_t)(T * N * I) * sizeof(float));
  memcpy(half.bottom[1].data, whole.bottom[1].data, (size_t)(T * N) * sizeof(float));
  gc_forward(&half);
  for (int i = 0; i < T * N * H; i++)
    cr_assert_float_eq(half.top[0].data[i], whole.top[0].data[i], 1e-6, "%s reset %d", type, i);
  gc_layer_free(&whole);
  gc_layer_free(&half);
}

Test(recurrent, state_carries_between_forwards) {
  carry_case("LSTM");
  carry_case("RNN");
}

/* ---- against PyTorch (float64) ---------------------------------------------- */

static const char FIXTURE[] = "tests/fixtures/recurrent_fixture.txt";

/* The generator's value(): exact integer arithmetic, one double division,
 * rounded to float. */
static float value(int64_t k, int64_t salt, double scale) {
  int64_t m = (k * 7919 + salt * 104729) % 2001;
  return (float)(scale * (double)(m - 1000) / 1000.0);
}

static void fill(float *x, int64_t n, int64_t salt, double scale) {
  for (int64_t k = 0; k < n; k++) x[k] = value(k, salt, scale);
}

typedef struct fx_case {
  const char *name;
  bool lstm;
  int T, N, I, H, S;
  bool expose;
  const int (*cont)[2];
} fx_case;

static const int CONT_A[4][2] = {{0, 0}, {1, 1}, {1, 0}, {1, 1}};
static const int CONT_B[4][2] = {{1, 0}, {1, 1}, {0, 1}, {1, 1}};
static const fx_case CASES[] = {
    {"lstm_plain", true, 4, 2, 3, 3, 0, false, CONT_A},
    {"lstm_static_exposed", true, 4, 2, 3, 3, 2, true, CONT_B},
    {"rnn_plain", false, 4, 2, 3, 3, 0, false, CONT_A},
    {"rnn_static_exposed", false, 4, 2, 3, 3, 2, true, CONT_B},
};

/* The array `key` of case `name` in the fixture text; count in *n. */
static double *fx_array(const char *text, const char *name, const char *key, int64_t *n) {
  char head[128];
  snprintf(head, sizeof head, "\ncase %s\n", name);
  const char *p = strstr(text, head);
  cr_assert(p, "case %s missing from %s", name, FIXTURE);
  p += strlen(head);
  const char *end = strstr(p, "\nend");
  size_t klen = strlen(key);
  while (p && p < end) {
    if (!strncmp(p, key, klen) && p[klen] == ' ') {
      char *q;
      *n = strtoll(p + klen, &q, 10);
      double *v = malloc((size_t)*n * sizeof(double));
      for (int64_t i = 0; i < *n; i++) v[i] = strtod(q, &q);
      return v;
    }
    p = strchr(p, '\n');
    if (p) p++;
  }
  cr_assert_fail("%s: no %s in case %s", FIXTURE, key, name);
  return NULL;
}

/* max |got - want| / max |want|: the normalised error of one tensor.
 * Prints the first mismatches over tol. */
static double compare(const char *name, const char *what, const float *got, const double *want,
                      int64_t n, double tol) {
  double ref = 0, err = 0;
  for (int64_t i = 0; i < n; i++) ref = fmax(ref, fabs(want[i]));
  for (int64_t i = 0; i < n; i++) err = fmax(err, fabs(got[i] - want[i]));
  double e = err / fmax(ref, 1e-30);
  int shown = 0;
  for (int64_t i = 0; i < n && e > tol && shown < 5; i++)
    if (fabs(got[i] - want[i]) > tol * ref) {
      fprintf(stderr, "  %s %s[%lld]: memdl %.9g pytorch %.9g\n", name, what, (long long)i, got[i],
              want[i]);
      shown++;
    }
  return e;
}

static void check_against_pytorch(const fx_case *c, const char *text, double tol, double *worst_fwd,
                                  double *worst_bwd) {
  char lt[512];
  snprintf(lt, sizeof lt, "type: '%s' top: 'y' %s recurrent_param { num_output: %d %s }",
           c->lstm ? "LSTM" : "RNN",
           c->expose ? (c->lstm ? "top: 'hT' top: 'cT'" : "top: 'hT'") : "", c->H,
           c->expose ? "expose_hidden: true" : "");
  mdl_shape s[5];
  int nb = 0;
  s[nb++] = gc_shape(3, (int64_t[]){c->T, c->N, c->I});
  s[nb++] = gc_shape(2, (int64_t[]){c->T, c->N});
  int b_static = -1, b_h0 = -1;
  if (c->S) b_static = nb, s[nb++] = gc_shape(2, (int64_t[]){c->N, c->S});
  if (c->expose) {
    b_h0 = nb;
    s[nb++] = gc_shape(3, (int64_t[]){1, c->N, c->H});
    if (c->lstm) s[nb++] = gc_shape(3, (int64_t[]){1, c->N, c->H});
  }
  gc_layer f;
  mdl_error err;
  cr_assert_eq(gc_layer_make(&f, lt, CAFFE__PHASE__TRAIN, nb, s, false, NULL, 7, &err), MDL_OK,
               "%s", err.msg);
  fill(f.bottom[0].data, f.bottom[0].count, 1, 1.0);
  for (int t = 0; t < c->T; t++)
    for (int n = 0; n < c->N; n++) f.bottom[1].data[t * c->N + n] = (float)c->cont[t][n];
  if (b_static >= 0) fill(f.bottom[b_static].data, f.bottom[b_static].count, 2, 1.0);
  if (b_h0 >= 0) {
    fill(f.bottom[b_h0].data, f.bottom[b_h0].count, 3, 0.5);
    if (c->lstm) fill(f.bottom[b_h0 + 1].data, f.bottom[b_h0 + 1].count, 4, 0.5);
  }
  for (int i = 0; i < f.l->n_param; i++)
    fill(f.l->param[i].data, f.l->param[i].count, 10 + i, f.l->param[i].n == 1 ? 0.3 : 0.5);
  gc_forward(&f);

  int64_t n;
  double *want = fx_array(text, c->name, "top", &n);
  float *got = malloc((size_t)n * sizeof(float));
  int64_t off = 0;
  for (int t = 0; t < f.n_top; t++) {
    memcpy(got + off, f.top[t].data, (size_t)f.top[t].count * sizeof(float));
    off += f.top[t].count;
  }
  cr_assert_eq(off, n, "%s: %lld top values, fixture has %lld", c->name, (long long)off,
               (long long)n);
  double e = compare(c->name, "top", got, want, n, tol);
  *worst_fwd = fmax(*worst_fwd, e);
  cr_log_info("%s: forward normalised error %.3g", c->name, e);
  cr_assert(e <= tol, "%s: outputs differ from PyTorch by %.3g (normalised), tolerance %g", c->name,
            e, tol);
  free(want);
  free(got);

  for (int t = 0; t < f.n_top; t++) fill(f.top[t].diff, f.top[t].count, 20 + t, 1.0);
  bool pd[5] = {true, false, true, true, true};
  gc_backward(&f, pd);
  struct {
    const char *key;
    const float *v;
  } grads[5];
  int ng = 0;
  grads[ng].key = "dx", grads[ng++].v = f.bottom[0].diff;
  if (b_static >= 0) grads[ng].key = "dxs", grads[ng++].v = f.bottom[b_static].diff;
  if (b_h0 >= 0) {
    grads[ng].key = "dh0", grads[ng++].v = f.bottom[b_h0].diff;
    if (c->lstm) grads[ng].key = "dc0", grads[ng++].v = f.bottom[b_h0 + 1].diff;
  }
  grads[ng].key = "dparams", grads[ng++].v = f.pdiff;
  for (int g = 0; g < ng; g++) {
    want = fx_array(text, c->name, grads[g].key, &n);
    e = compare(c->name, grads[g].key, grads[g].v, want, n, tol);
    *worst_bwd = fmax(*worst_bwd, e);
    cr_log_info("%s: %s normalised error %.3g", c->name, grads[g].key, e);
    cr_assert(e <= tol, "%s: %s differs from PyTorch by %.3g (normalised), tolerance %g", c->name,
              grads[g].key, e, tol);
    free(want);
  }
  gc_layer_free(&f);
}

Test(recurrent, matches_pytorch_float64) {
  char *text;
  size_t len;
  mdl_error err;
  cr_assert_eq(mdl_file_read(FIXTURE, &text, &len, &err), MDL_OK, "%s", err.msg);
  /* float32 against float64: a few ulps of the largest value */
  const double tol = 2e-6;
  double fwd = 0, bwd = 0;
  for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++)
    check_against_pytorch(&CASES[i], text, tol, &fwd, &bwd);
  fprintf(stderr,
          "recurrent vs PyTorch float64: worst normalised error forward %.3g, backward %.3g\n", fwd,
          bwd);
  free(text);
}
