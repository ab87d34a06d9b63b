/* The layers of issue 16 outside the recurrent family: gradient checks and
 * hand-computed values for Swish, Clip, Parameter, BatchReindex, Filter,
 * Im2col, SPP (MAX and AVE), MultinomialLogisticLoss and InfogainLoss (H
 * from a BlobProto file and as a third bottom), and what HDF5Output writes. */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/fileio.h"
#include "tests/gradcheck.h"
#include "tests/testutil.h"

TestSuite(misc, .init = tu_dir_setup, .fini = tu_dir_teardown);

#define GRAD_OK(r)                                                              \
  cr_assert((r).failed == 0 && (r).checked > 0, "checked %lld failed %lld: %s", \
            (long long)(r).checked, (long long)(r).failed, (r).first_failure)

static mdl_shape S4(int64_t a, int64_t b, int64_t c, int64_t d) {
  return gc_shape(4, (int64_t[]){a, b, c, d});
}

/* Makes a layer, runs forward on the given bottom values, returns it. */
static void make(gc_layer *f, const char *text, int nb, const mdl_shape *s) {
  mdl_error err;
  mdl_error_clear(&err);
  mdl_status st = gc_layer_make(f, text, CAFFE__PHASE__TRAIN, nb, s, false, NULL, 7, &err);
  cr_assert_eq(st, MDL_OK, "%s", err.msg);
}

/* ---- Swish, Clip ---------------------------------------------------------- */

Test(misc, swish_grad_and_values) {
  mdl_shape s = S4(2, 3, 4, 5);
  gc_opts o = gc_default_opts();
  const char *cases[] = {"type: 'Swish'", "type: 'Swish' swish_param { beta: 1.7 }"};
  for (int i = 0; i < 2; i++) {
    GRAD_OK(gc_run(cases[i], CAFFE__PHASE__TRAIN, 1, &s, false, &o, NULL, NULL, NULL));
    GRAD_OK(gc_run(cases[i], CAFFE__PHASE__TRAIN, 1, &s, true, &o, NULL, NULL, NULL));
  }
  gc_layer f;
  mdl_shape one = gc_shape(1, (int64_t[]){3});
  make(&f, "type: 'Swish' swish_param { beta: 2 }", 1, &one);
  float x[3] = {-1.f, 0.f, 0.5f};
  memcpy(f.bottom[0].data, x, sizeof x);
  gc_forward(&f);
  for (int i = 0; i < 3; i++) {
    double want = x[i] / (1 + exp(-2.0 * x[i]));
    cr_assert_float_eq(f.top[0].data[i], want, 1e-6, "swish(%g) = %g, want %g", x[i],
                       f.top[0].data[i], want);
  }
  gc_layer_free(&f);
}

static void spread(gc_layer *f, void *arg) {
  (void)arg;
  gc_fill_uniform(f->bottom[0].data, f->bottom[0].count, -2.f, 2.f, 3);
}

Test(misc, clip_grad_and_values) {
  mdl_shape s = S4(2, 3, 4, 5);
  gc_opts o = gc_default_opts();
  /* kinks at both bounds: a window around each (the checker takes one
   * centre, so the two are checked in two runs with the other skipped) */
  const char *text = "type: 'Clip' clip_param { min: -0.6 max: 0.8 }";
  o.kink = -0.6, o.kink_range = 0.02;
  gc_result r = gc_run(text, CAFFE__PHASE__TRAIN, 1, &s, false, &o, spread, NULL, NULL);
  GRAD_OK(r);
  o.kink = 0.8;
  GRAD_OK(gc_run(text, CAFFE__PHASE__TRAIN, 1, &s, true, &o, spread, NULL, NULL));

  gc_layer f;
  mdl_shape one = gc_shape(1, (int64_t[]){4});
  make(&f, text, 1, &one);
  float x[4] = {-2.f, -0.6f, 0.3f, 5.f}, want[4] = {-0.6f, -0.6f, 0.3f, 0.8f};
  memcpy(f.bottom[0].data, x, sizeof x);
  gc_forward(&f);
  for (int i = 0; i < 4; i++) cr_assert_eq(f.top[0].data[i], want[i]);
  for (int i = 0; i < 4; i++) f.top[0].diff[i] = 1.f;
  gc_backward(&f, NULL);
  float dwant[4] = {0, 1, 1, 0}; /* Caffe passes the gradient at x == min */
  for (int i = 0; i < 4; i++) cr_assert_eq(f.bottom[0].diff[i], dwant[i], "dx[%d]", i);
  gc_layer_free(&f);

  mdl_error err;
  cr_assert_neq(gc_layer_make(&f, "type: 'Clip' clip_param { min: 1 }", CAFFE__PHASE__TRAIN, 1,
                              &one, false, NULL, 7, &err),
                MDL_OK);
  cr_assert(strstr(err.msg, "clip_param.min and clip_param.max"), "%s", err.msg);
}

/* ---- Parameter -------------------------------------------------------------- */

Test(misc, parameter_blob_is_top) {
  gc_opts o = gc_default_opts();
  GRAD_OK(gc_run("type: 'Parameter' parameter_param { shape { dim: 2 dim: 3 } }",
                 CAFFE__PHASE__TRAIN, 0, NULL, false, &o, NULL, NULL, NULL));
  gc_layer f;
  make(&f, "type: 'Parameter' parameter_param { shape { dim: 2 dim: 3 } }", 0, NULL);
  cr_assert_eq(f.l->n_param, 1);
  for (int i = 0; i < 6; i++) cr_assert_eq(f.params[i], 0.f); /* Caffe fills nothing */
  for (int i = 0; i < 6; i++) f.params[i] = (float)i;
  gc_forward(&f);
  for (int i = 0; i < 6; i++) cr_assert_eq(f.top[0].data[i], (float)i);
  for (int i = 0; i < 6; i++) f.top[0].diff[i] = 0.5f * (float)i;
  gc_backward(&f, NULL);
  for (int i = 0; i < 6; i++) cr_assert_eq(f.pdiff[i], 0.5f * (float)i);
  gc_layer_free(&f);
}

/* ---- BatchReindex, Filter ---------------------------------------------------- */

static void reindex_prep(gc_layer *f, void *arg) {
  (void)arg;
  const float idx[5] = {2, 0, 2, 3, 1}; /* repeats, so the gradient sums */
  memcpy(f->bottom[1].data, idx, sizeof idx);
}

Test(misc, batch_reindex) {
  mdl_shape s[2] = {S4(4, 2, 3, 1), gc_shape(1, (int64_t[]){5})};
  gc_opts o = gc_default_opts();
  o.skip_bottoms = 2;
  GRAD_OK(gc_run("type: 'BatchReindex'", CAFFE__PHASE__TRAIN, 2, s, false, &o, reindex_prep, NULL,
                 NULL));
  gc_layer f;
  make(&f, "type: 'BatchReindex'", 2, s);
  reindex_prep(&f, NULL);
  gc_forward(&f);
  cr_assert_eq(f.top[0].d[0], 5);
  for (int k = 0; k < 6; k++) {
    cr_assert_eq(f.top[0].data[0 * 6 + k], f.bottom[0].data[2 * 6 + k]);
    cr_assert_eq(f.top[0].data[4 * 6 + k], f.bottom[0].data[1 * 6 + k]);
  }
  gc_layer_free(&f);
}

static void filter_prep(gc_layer *f, void *arg) {
  (void)arg;
  const float sel[4] = {1, 0, 0, 1};
  memcpy(f->bottom[2].data, sel, sizeof sel);
}

Test(misc, filter_keeps_selected_rows) {
  mdl_shape s[3] = {S4(4, 3, 2, 2), gc_shape(2, (int64_t[]){4, 5}), gc_shape(1, (int64_t[]){4})};
  const char *text = "type: 'Filter' top: 'a' top: 'b'";
  gc_opts o = gc_default_opts();
  o.skip_bottoms = 4;
  GRAD_OK(gc_run(text, CAFFE__PHASE__TRAIN, 3, s, false, &o, filter_prep, NULL, NULL));
  gc_layer f;
  make(&f, text, 3, s);
  filter_prep(&f, NULL);
  gc_forward(&f);
  /* rows 0 and 3 kept, in order; the rest of the plan's N rows are zero */
  for (int k = 0; k < 12; k++) {
    cr_assert_eq(f.top[0].data[k], f.bottom[0].data[k]);
    cr_assert_eq(f.top[0].data[12 + k], f.bottom[0].data[36 + k]);
    cr_assert_eq(f.top[0].data[24 + k], 0.f);
  }
  for (int k = 0; k < 5; k++) cr_assert_eq(f.top[1].data[5 + k], f.bottom[1].data[15 + k]);
  gc_layer_free(&f);
}

/* ---- Im2col ----------------------------------------------------------------- */

Test(misc, im2col) {
  gc_opts o = gc_default_opts();
  mdl_shape s = S4(2, 3, 5, 4);
  const char *cases[] = {
      "type: 'Im2col' convolution_param { kernel_size: 3 }",
      "type: 'Im2col' convolution_param { kernel_size: 2 stride: 2 pad: 1 }",
      "type: 'Im2col' convolution_param { kernel_h: 3 kernel_w: 2 dilation: 2 pad: 1 }",
  };
  for (int i = 0; i < 3; i++)
    GRAD_OK(gc_run(cases[i], CAFFE__PHASE__TRAIN, 1, &s, false, &o, NULL, NULL, NULL));
  /* one 1 x 3 x 3 image, 2 x 2 kernel: row (c, ki, kj), column (oh, ow) */
  gc_layer f;
  mdl_shape one = S4(1, 1, 3, 3);
  make(&f, "type: 'Im2col' convolution_param { kernel_size: 2 }", 1, &one);
  for (int i = 0; i < 9; i++) f.bottom[0].data[i] = (float)i;
  gc_forward(&f);
  const float want[16] = {0, 1, 3, 4, 1, 2, 4, 5, 3, 4, 6, 7, 4, 5, 7, 8};
  cr_assert_eq(f.top[0].count, 16);
  for (int i = 0; i < 16; i++) cr_assert_eq(f.top[0].data[i], want[i], "col[%d]", i);
  gc_layer_free(&f);
}

/* ---- SPP -------------------------------------------------------------------- */

static void distinct(gc_layer *f, void *arg) {
  (void)arg;
  gc_fill_distinct(f->bottom[0].data, f->bottom[0].count, 0.05f, 9);
}

Test(misc, spp_grad) {
  gc_opts o = gc_default_opts();
  const mdl_shape shapes[] = {S4(2, 3, 6, 7), S4(1, 2, 8, 8), S4(2, 2, 9, 4)};
  const char *cases[] = {
      "type: 'SPP' spp_param { pyramid_height: 3 }",
      "type: 'SPP' spp_param { pyramid_height: 3 pool: AVE }",
      "type: 'SPP' spp_param { pyramid_height: 1 }",
  };
  for (int i = 0; i < 3; i++)
    for (int k = 0; k < 3; k++)
      GRAD_OK(
          gc_run(cases[i], CAFFE__PHASE__TRAIN, 1, &shapes[k], false, &o, distinct, NULL, NULL));
}

/* Caffe's levels on a 1 x 1 x 3 x 3 input (0..8): level 0 is the whole
 * image; level 1 has kernel 2, pad 1 (rows/cols -1..0 and 1..2). */
Test(misc, spp_values) {
  gc_layer f;
  mdl_shape s = S4(1, 1, 3, 3);
  make(&f, "type: 'SPP' spp_param { pyramid_height: 2 }", 1, &s);
  cr_assert_eq(f.top[0].n, 2);
  cr_assert_eq(f.top[0].d[1], 5);
  for (int i = 0; i < 9; i++) f.bottom[0].data[i] = (float)i;
  gc_forward(&f);
  const float mx[5] = {8, 0, 2, 6, 8};
  for (int i = 0; i < 5; i++) cr_assert_eq(f.top[0].data[i], mx[i], "max[%d]", i);
  gc_layer_free(&f);
  make(&f, "type: 'SPP' spp_param { pyramid_height: 2 pool: AVE }", 1, &s);
  for (int i = 0; i < 9; i++) f.bottom[0].data[i] = (float)i;
  gc_forward(&f);
  /* AVE divides by the window inside input + pad: level 1 windows are 2 x 2 */
  const float av[5] = {4, 0 / 4.f, (1 + 2) / 4.f, (3 + 6) / 4.f, (4 + 5 + 7 + 8) / 4.f};
  for (int i = 0; i < 5; i++) cr_assert_float_eq(f.top[0].data[i], av[i], 1e-6, "ave[%d]", i);
  gc_layer_free(&f);
}

/* ---- MultinomialLogisticLoss, InfogainLoss ----------------------------------- */

static void probs_prep(gc_layer *f, void *arg) {
  (void)arg;
  gc_fill_uniform(f->bottom[0].data, f->bottom[0].count, 0.2f, 1.f, 5);
  gc_fill_labels(f->bottom[1].data, f->bottom[1].count, 4, 6);
}

Test(misc, multinomial_logistic_loss) {
  mdl_shape s[2] = {S4(3, 4, 1, 1), S4(3, 1, 1, 1)};
  gc_opts o = gc_default_opts();
  o.skip_bottoms = 2;
  GRAD_OK(gc_run("type: 'MultinomialLogisticLoss'", CAFFE__PHASE__TRAIN, 2, s, false, &o,
                 probs_prep, NULL, NULL));
  GRAD_OK(gc_run("type: 'MultinomialLogisticLoss' loss_weight: 3", CAFFE__PHASE__TRAIN, 2, s, false,
                 &o, probs_prep, NULL, NULL));
  gc_layer f;
  make(&f, "type: 'MultinomialLogisticLoss'", 2, s);
  const float p[12] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.5f, 0, 0, 0, 0, 0, 1};
  const float lab[3] = {3, 0, 2};
  memcpy(f.bottom[0].data, p, sizeof p);
  memcpy(f.bottom[1].data, lab, sizeof lab);
  gc_forward(&f);
  /* the zero probability is floored at 1e-20, as Caffe */
  double want = -(log(0.4) + log(0.5) + log(1e-20)) / 3;
  cr_assert_float_eq(f.top[0].data[0], want, 1e-4 * fabs(want));
  gc_layer_free(&f);
}

static const float k_H[16] = {1, 0.5f, 0, 0, 0.5f, 1, 0.2f, 0, 0, 0.2f, 2, 0.1f, 0, 0, 0.1f, 1};

static void infogain_prep(gc_layer *f, void *arg) {
  (void)arg;
  gc_fill_labels(f->bottom[1].data, f->bottom[1].count, 4, 6);
  f->bottom[1].data[1] = 2; /* the ignore label of one case */
  if (f->n_bottom > 2) memcpy(f->bottom[2].data, k_H, sizeof k_H);
}

/* Writes H as a binary BlobProto (1 x 1 x 4 x 4, as Caffe's tools do). */
static const char *write_h(void) {
  Caffe__BlobProto b = CAFFE__BLOB_PROTO__INIT;
  b.has_num = b.has_channels = b.has_height = b.has_width = true;
  b.num = b.channels = 1;
  b.height = b.width = 4;
  b.n_data = 16;
  b.data = (float *)k_H;
  size_t n = caffe__blob_proto__get_packed_size(&b);
  uint8_t *buf = malloc(n);
  caffe__blob_proto__pack(&b, buf);
  const char *path = tu_dir_path("infogain_H.binaryproto");
  mdl_error err;
  cr_assert_eq(mdl_file_write_atomic(path, buf, n, &err), MDL_OK, "%s", err.msg);
  free(buf);
  return path;
}

Test(misc, infogain_loss) {
  const char *path = write_h();
  char text[512];
  mdl_shape s2[2] = {S4(3, 4, 2, 1), gc_shape(3, (int64_t[]){3, 2, 1})};
  mdl_shape s3[3] = {s2[0], s2[1], S4(1, 1, 4, 4)};
  gc_opts o = gc_default_opts();
  o.skip_bottoms = 2 | 4;
  const char *extra[] = {"", "loss_param { ignore_label: 2 }",
                         "loss_param { normalization: BATCH_SIZE } loss_weight: 2"};
  for (int i = 0; i < 3; i++) {
    snprintf(text, sizeof text, "type: 'InfogainLoss' infogain_loss_param { source: '%s' } %s",
             path, extra[i]);
    GRAD_OK(gc_run(text, CAFFE__PHASE__TRAIN, 2, s2, false, &o, infogain_prep, NULL, NULL));
    snprintf(text, sizeof text, "type: 'InfogainLoss' %s", extra[i]);
    GRAD_OK(gc_run(text, CAFFE__PHASE__TRAIN, 3, s3, false, &o, infogain_prep, NULL, NULL));
  }
  /* with H = identity the loss is SoftmaxWithLoss's */
  gc_layer a, b;
  mdl_shape l2[2] = {S4(3, 4, 1, 1), S4(3, 1, 1, 1)};
  mdl_shape l3[3] = {l2[0], l2[1], S4(1, 1, 4, 4)};
  make(&a, "type: 'InfogainLoss' top: 'loss' top: 'prob'", 3, l3);
  make(&b, "type: 'SoftmaxWithLoss'", 2, l2);
  gc_fill_labels(a.bottom[1].data, 3, 4, 2);
  memcpy(b.bottom[0].data, a.bottom[0].data, 12 * sizeof(float));
  memcpy(b.bottom[1].data, a.bottom[1].data, 3 * sizeof(float));
  memset(a.bottom[2].data, 0, 16 * sizeof(float));
  for (int i = 0; i < 4; i++) a.bottom[2].data[i * 5] = 1.f;
  gc_forward(&a);
  gc_forward(&b);
  cr_assert_float_eq(a.top[0].data[0], b.top[0].data[0], 1e-6);
  for (int n = 0; n < 3; n++) { /* the second top is the softmax */
    double z = 0;
    for (int k = 0; k < 4; k++) z += exp(a.bottom[0].data[n * 4 + k]);
    for (int k = 0; k < 4; k++)
      cr_assert_float_eq(a.top[1].data[n * 4 + k], exp(a.bottom[0].data[n * 4 + k]) / z, 1e-6);
  }
  gc_layer_free(&a);
  gc_layer_free(&b);

  mdl_error err;
  snprintf(text, sizeof text, "type: 'InfogainLoss' infogain_loss_param { source: '%s' }", path);
  mdl_shape bad[2] = {S4(3, 5, 1, 1), S4(3, 1, 1, 1)};
  cr_assert_neq(gc_layer_make(&a, text, CAFFE__PHASE__TRAIN, 2, bad, false, NULL, 7, &err), MDL_OK);
  cr_assert(strstr(err.msg, "holds 16 values"), "%s", err.msg);
}

/* ---- HDF5Output ---------------------------------------------------------------- */

static void read_ds(const char *path, const char *name, hsize_t dims[4], float *buf) {
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  cr_assert_geq(f, 0, "cannot open %s", path);
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  cr_assert_geq(d, 0, "no dataset %s", name);
  hid_t sp = H5Dget_space(d);
  cr_assert_eq(H5Sget_simple_extent_ndims(sp), 4);
  H5Sget_simple_extent_dims(sp, dims, NULL);
  cr_assert_geq(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
  H5Sclose(sp);
  H5Dclose(d);
  H5Fclose(f);
}

Test(misc, hdf5_output_atomic_and_appending) {
  const char *path = tu_dir_path("out.h5");
  unlink(path);
  char text[512];
  snprintf(text, sizeof text, "type: 'HDF5Output' hdf5_output_param { file_name: '%s' }", path);
  mdl_shape s[2] = {S4(2, 3, 2, 1), gc_shape(1, (int64_t[]){2})};
  gc_layer f;
  make(&f, text, 2, s);
  cr_assert_eq(f.n_top, 0);
  cr_assert_not(mdl_layer_has_backward(f.l));
  float first[12];
  for (int i = 0; i < 12; i++) f.bottom[0].data[i] = first[i] = (float)i;
  f.bottom[1].data[0] = 7, f.bottom[1].data[1] = 8;
  gc_forward(&f);
  for (int i = 0; i < 12; i++) f.bottom[0].data[i] = 100.f + (float)i;
  f.bottom[1].data[0] = 9, f.bottom[1].data[1] = 10;
  gc_forward(&f);
  /* nothing under the name until the layer is done */
  cr_assert_neq(access(path, F_OK), 0, "%s exists before the layer is freed", path);
  gc_layer_free(&f);
  cr_assert_eq(access(path, F_OK), 0, "%s missing after free", path);
  hsize_t dims[4];
  float data[24], label[4];
  read_ds(path, "data", dims, data);
  cr_assert(dims[0] == 4 && dims[1] == 3 && dims[2] == 2 && dims[3] == 1);
  for (int i = 0; i < 12; i++) {
    cr_assert_eq(data[i], first[i]);
    cr_assert_eq(data[12 + i], 100.f + (float)i);
  }
  read_ds(path, "label", dims, label);
  cr_assert(dims[0] == 4 && dims[1] == 1 && dims[2] == 1 && dims[3] == 1);
  for (int i = 0; i < 4; i++) cr_assert_eq(label[i], 7.f + (float)i);

  /* a layer that never ran forward leaves the file as it was */
  make(&f, text, 2, s);
  gc_layer_free(&f);
  read_ds(path, "label", dims, label);
  cr_assert_eq(dims[0], 4);
}

/* ---- coverage: every Caffe type runs somewhere ---------------------------------- */

/* Each type of the compiler's table has a CPU kernel, is one of the data
 * pipeline's sources, or is one of the two types memdl declines, with a
 * reason. */
Test(misc, every_caffe_type_runs_but_python_and_window_data) {
  static const char *const pipeline[] = {"Data", "ImageData", "MemoryData", "HDF5Data"};
  size_t n;
  const mdl_layer_def *defs = mdl_layer_table(&n);
  int declined = 0;
  for (size_t i = 0; i < n; i++) {
    const char *t = defs[i].type;
    bool piped = false;
    for (size_t k = 0; k < sizeof pipeline / sizeof *pipeline; k++)
      piped |= !strcmp(t, pipeline[k]);
    if (piped) continue;
    if (mdl_backend_layer(mdl_cpu_backend(), t)) {
      cr_assert_null(mdl_layer_unsupported_reason(t), "%s runs but has a reason not to", t);
      continue;
    }
    cr_assert(!strcmp(t, "Python") || !strcmp(t, "WindowData"), "%s has no CPU implementation", t);
    cr_assert_not_null(mdl_layer_unsupported_reason(t), "%s: no reason given", t);
    declined++;
  }
  cr_assert_eq(declined, 2);
}
