/* HDF5Data sources on .h5 files the test writes with the HDF5 C API (float
 * and double records, two files in one list), read through a Caffe net's
 * HDF5Data layer; every error it names; and `memdl compile --shapes` and
 * `memdl data` on a net with such a layer. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
/* The test has no -I for Debian's serial HDF5; its headers include each
 * other with quotes, so this path is enough. */
#include <hdf5/serial/hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/pb.h"
#include "compiler/textformat.h"
#include "runtime/data/dataset.h"
#include "tests/clitest.h"
#include "tests/testutil.h"

TestSuite(hdf5, .init = tu_dir_setup, .fini = tu_dir_teardown);
TestSuite(hdf5_errors, .init = tu_dir_setup, .fini = tu_dir_teardown);
TestSuite(hdf5_cmd, .init = tu_dir_setup, .fini = tu_dir_teardown);

/* One dataset in an open file; values given as double, stored as type. */
static void put(hid_t file, const char *name, hid_t type, int rank, const hsize_t *dims,
                const double *v) {
  size_t n = 1;
  for (int i = 0; i < rank; i++) n *= dims[i];
  hid_t space = H5Screate_simple(rank, dims, NULL);
  hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  cr_assert(space >= 0 && ds >= 0, "cannot create dataset %s", name);
  if (n) cr_assert(H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
  H5Dclose(ds);
  H5Sclose(space);
}

/* Value i of the record at global ordinal r: distinct across records. */
static double value(int r, int i) {
  return r * 100.0 + i * 0.25 - 7.0;
}

/* tu_dir/name with datasets dname (n x c x h x w of type, values from first)
 * and lname (n labels, (first + r) % 3, as n or n x 1). */
static void write_h5(const char *name, hid_t type, int first, int n, int c, int h, int w,
                     const char *dname, const char *lname, bool label_n1) {
  hid_t f = H5Fcreate(tu_dir_path(name), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  cr_assert(f >= 0, "cannot create %s", tu_dir_path(name));
  int e = c * h * w;
  double *v = malloc(sizeof *v * (size_t)(n * e + 1)), *l = malloc(sizeof *l * (size_t)(n + 1));
  for (int r = 0; r < n; r++) {
    for (int i = 0; i < e; i++) v[r * e + i] = value(first + r, i);
    l[r] = (first + r) % 3;
  }
  hsize_t d4[4] = {(hsize_t)n, (hsize_t)c, (hsize_t)h, (hsize_t)w}, dl[2] = {(hsize_t)n, 1};
  put(f, dname, type, 4, d4, v);
  put(f, lname, H5T_IEEE_F32LE, label_n1 ? 2 : 1, dl, l);
  free(v);
  free(l);
  H5Fclose(f);
}

static Caffe__LayerParameter *layer(const char *text) {
  ProtobufCMessage *m = NULL;
  mdl_error err = {0};
  cr_assert_eq(
      mdl_text_parse(text, strlen(text), "layer", &caffe__layer_parameter__descriptor, &m, &err),
      MDL_OK, "%s", err.msg);
  return (Caffe__LayerParameter *)m;
}

/* The data set an HDF5Data layer with these tops and list maps to. */
static Memdl__DataSet *layer_set(const char *tops, const char *list, bool shuffle) {
  char text[512];
  snprintf(text, sizeof text,
           "name: \"h5\" type: \"HDF5Data\" %s "
           "hdf5_data_param { source: \"%s\" batch_size: 2 shuffle: %s }",
           tops, list, shuffle ? "true" : "false");
  Caffe__LayerParameter *l = layer(text);
  mdl_layer_data ld;
  mdl_error err = {0};
  cr_assert_eq(mdl_data_for_layer(l, NULL, 0, &ld, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(ld.batch_size, 2);
  cr_assert_eq(ld.shuffle, shuffle);
  cr_assert_eq(ld.set->source->kind_case, MEMDL__SOURCE__KIND_HDF5);
  Memdl__DataSet *ds = ld.set;
  ld.set = NULL;
  mdl_layer_data_clear(&ld);
  mdl_pb_free(l);
  return ds;
}

static const char *TOPS = "top: \"data\" top: \"label\"";

/* a.h5: 3 float records, labels N x 1; b.h5: 2 double records, labels N. */
static void two_files(void) {
  write_h5("a.h5", H5T_IEEE_F32LE, 0, 3, 2, 2, 3, "data", "label", true);
  write_h5("b.h5", H5T_IEEE_F64LE, 3, 2, 2, 2, 3, "data", "label", false);
  tu_dir_write("list.txt", "a.h5\n\n  b.h5  \n");
}

static void check_records(const mdl_dataset *d, int n) {
  cr_assert_eq(d->n, n);
  cr_assert_eq(d->dtype, MDL_DTYPE_F32);
  cr_assert_eq(d->channels, 2);
  cr_assert_eq(d->height, 2);
  cr_assert_eq(d->width, 3);
  cr_assert_eq(d->num_classes, 3);
  int64_t seen = 0;
  for (uint32_t k = 0; k < d->n_parts; k++) {
    const mdl_partition *p = d->part[k];
    for (int64_t j = 0; j < p->n; j++) {
      int r = (int)p->record[j];
      seen |= 1 << r;
      cr_assert_eq(p->label[j], r % 3, "record %d", r);
      const float *px = (const float *)p->data + j * 12;
      for (int i = 0; i < 12; i++)
        cr_assert_float_eq(px[i], (float)value(r, i), 1e-4, "record %d value %d", r, i);
    }
  }
  cr_assert_eq(seen, (1 << n) - 1, "every record once");
}

Test(hdf5, two_files_float_and_double_through_a_caffe_layer) {
  two_files();
  Memdl__DataSet *ds = layer_set(TOPS, "list.txt", false);
  mdl_data_info info;
  mdl_error err = {0};
  cr_assert_eq(mdl_data_probe(ds, tu_dir, &info, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(info.records, 5);
  cr_assert_eq(info.num_classes, 3);
  cr_assert_eq(info.dtype, MDL_DTYPE_F32);
  cr_assert_eq(info.channels, 2);
  cr_assert_eq(info.height, 2);
  cr_assert_eq(info.width, 3);
  for (uint32_t parts = 1; parts <= 2; parts++) {
    mdl_dataset *d = NULL;
    cr_assert_eq(mdl_dataset_build(ds, tu_dir, parts, NULL, &d, &err), MDL_OK, "%s", err.msg);
    cr_assert_eq(d->n_parts, parts);
    check_records(d, 5);
    if (parts == 1)
      for (int r = 0; r < 5; r++) cr_assert_eq(d->part[0]->record[r], r, "list order");
    mdl_dataset_free(d);
  }
  mdl_pb_free(ds);
}

Test(hdf5, tops_name_the_datasets_and_ranks_pad_to_chw) {
  /* Records N x D (2-d): stored as D x 1 x 1, like a Datum's float_data. */
  hid_t f = H5Fcreate(tu_dir_path("x.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  double x[4 * 5], y[4] = {1, 0, 2, 1};
  for (int i = 0; i < 20; i++) x[i] = i;
  hsize_t dx[2] = {4, 5}, dy[1] = {4};
  put(f, "X", H5T_NATIVE_DOUBLE, 2, dx, x);
  put(f, "y", H5T_NATIVE_INT, 1, dy, y);
  H5Fclose(f);
  tu_dir_write("l.txt", "x.h5");
  Memdl__DataSet *ds = layer_set("top: \"X\" top: \"y\"", "l.txt", true);
  mdl_dataset *d = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_dataset_build(ds, tu_dir, 1, NULL, &d, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(d->n, 4);
  cr_assert_eq(d->channels, 5);
  cr_assert_eq(d->height, 1);
  cr_assert_eq(d->width, 1);
  cr_assert_eq(d->num_classes, 3);
  for (int r = 0; r < 4; r++) {
    cr_assert_eq(d->part[0]->label[r], (int)y[r]);
    for (int i = 0; i < 5; i++)
      cr_assert_float_eq(((float *)d->part[0]->data)[r * 5 + i], r * 5 + i, 0);
  }
  mdl_dataset_free(d);
  mdl_pb_free(ds);
}

Test(hdf5, shuffle_flag_and_a_job_set_replacing_the_list) {
  two_files();
  Memdl__DataSet *ds = layer_set(TOPS, "list.txt", true);
  mdl_dataset *d = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_dataset_build(ds, tu_dir, 1, NULL, &d, &err), MDL_OK, "%s", err.msg);
  mdl_pb_free(ds);
  /* A job data set named like the list replaces it, as for the other layers. */
  Memdl__DataSet *repl = NULL;
  const char *t = "name: \"list.txt\" source { synthetic { shape: [1, 2, 2] records: 7 } }";
  cr_assert_eq(mdl_text_parse(t, strlen(t), "set", &memdl__data_set__descriptor,
                              (ProtobufCMessage **)&repl, &err),
               MDL_OK, "%s", err.msg);
  Caffe__LayerParameter *l = layer(
      "name: \"h5\" type: \"HDF5Data\" top: \"data\" top: \"label\" "
      "hdf5_data_param { source: \"list.txt\" batch_size: 2 }");
  mdl_layer_data ld;
  cr_assert_eq(mdl_data_for_layer(l, &repl, 1, &ld, &err), MDL_OK, "%s", err.msg);
  cr_assert(ld.replaced);
  cr_assert_eq(ld.set->source->kind_case, MEMDL__SOURCE__KIND_SYNTHETIC);
  mdl_layer_data_clear(&ld);
  mdl_pb_free(l);
  mdl_pb_free(repl);
  mdl_dataset_free(d);
}

/* The error building the layer's data set (tops and list as given). */
static const char *fails(const char *tops, const char *list) {
  static char msg[MDL_ERROR_MSG_MAX];
  Memdl__DataSet *ds = layer_set(tops, list, false);
  mdl_data_info info;
  mdl_error err = {0};
  mdl_status st = mdl_data_probe(ds, tu_dir, &info, &err);
  if (st == MDL_OK) {
    mdl_dataset *d = NULL;
    st = mdl_dataset_build(ds, tu_dir, 1, NULL, &d, &err);
    mdl_dataset_free(d);
  }
  cr_assert_eq(st, MDL_ERR_INVALID, "expected an error, got %d: %s", st, err.msg);
  mdl_pb_free(ds);
  snprintf(msg, sizeof msg, "%s", err.msg);
  return msg;
}

static void has(const char *text, const char *part) {
  cr_assert(strstr(text, part), "\"%s\" lacks \"%s\"", text, part);
}

Test(hdf5_errors, tops_other_than_two) {
  const char *three[] = {"top: \"data\" top: \"label\" top: \"w\"", "top: \"data\""};
  for (int i = 0; i < 2; i++) {
    Caffe__LayerParameter *l = NULL;
    char text[256];
    snprintf(text, sizeof text,
             "name: \"h5\" type: \"HDF5Data\" %s hdf5_data_param { source: \"l\" batch_size: 1 }",
             three[i]);
    l = layer(text);
    mdl_layer_data ld;
    mdl_error err = {0};
    cr_assert_eq(mdl_data_for_layer(l, NULL, 0, &ld, &err), MDL_ERR_INVALID);
    has(err.msg, "layer \"h5\" (HDF5Data)");
    has(err.msg, i == 0 ? "has 3 tops" : "has 1 tops");
    mdl_pb_free(l);
  }
}

Test(hdf5_errors, non_integer_label) {
  hid_t f = H5Fcreate(tu_dir_path("bad.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  double x[3] = {1, 2, 3}, y[3] = {0, 1.5, 2};
  hsize_t d[1] = {3};
  put(f, "data", H5T_NATIVE_FLOAT, 1, d, x);
  put(f, "label", H5T_NATIVE_FLOAT, 1, d, y);
  H5Fclose(f);
  tu_dir_write("l.txt", "bad.h5\n");
  const char *m = fails(TOPS, "l.txt");
  has(m, "l.txt:1: ");
  has(m, "bad.h5: dataset \"label\": record 1: label 1.5 is not an integer");
}

Test(hdf5_errors, mismatched_counts) {
  write_h5("a.h5", H5T_IEEE_F32LE, 0, 3, 1, 1, 2, "data", "label", false);
  hid_t f = H5Fopen(tu_dir_path("a.h5"), H5F_ACC_RDWR, H5P_DEFAULT);
  H5Ldelete(f, "label", H5P_DEFAULT);
  double y[2] = {0, 1};
  hsize_t d[1] = {2};
  put(f, "label", H5T_NATIVE_FLOAT, 1, d, y);
  H5Fclose(f);
  tu_dir_write("l.txt", "a.h5\n");
  has(fails(TOPS, "l.txt"), "a.h5: dataset \"data\" has 3 records but \"label\" has 2 labels");
}

Test(hdf5_errors, wrong_ranks) {
  hid_t f = H5Fcreate(tu_dir_path("r5.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  double v[32] = {0};
  hsize_t d5[5] = {2, 2, 2, 2, 1}, d1[1] = {2};
  put(f, "data", H5T_NATIVE_FLOAT, 5, d5, v);
  put(f, "label", H5T_NATIVE_FLOAT, 1, d1, v);
  H5Fclose(f);
  f = H5Fcreate(tu_dir_path("l2.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t d2[2] = {2, 3};
  put(f, "data", H5T_NATIVE_FLOAT, 2, d2, v);
  put(f, "label", H5T_NATIVE_FLOAT, 2, d2, v);
  H5Fclose(f);
  tu_dir_write("a.txt", "r5.h5\n");
  tu_dir_write("b.txt", "l2.h5\n");
  has(fails(TOPS, "a.txt"), "r5.h5: dataset \"data\" is 2 x 2 x 2 x 2 x 1; expected N, N x D");
  has(fails(TOPS, "b.txt"), "l2.h5: dataset \"label\" is 2 x 3; expected N or N x 1");
}

Test(hdf5_errors, shapes_differ_between_files) {
  write_h5("a.h5", H5T_IEEE_F32LE, 0, 2, 2, 2, 3, "data", "label", false);
  write_h5("b.h5", H5T_IEEE_F32LE, 2, 2, 2, 3, 2, "data", "label", false);
  tu_dir_write("l.txt", "a.h5\nb.h5\n");
  const char *m = fails(TOPS, "l.txt");
  has(m, "l.txt:2: ");
  has(m, "b.h5: dataset \"data\" has records of 2 x 3 x 2, but ");
}

Test(hdf5_errors, missing_dataset_file_and_list) {
  write_h5("a.h5", H5T_IEEE_F32LE, 0, 2, 1, 1, 2, "data", "label", false);
  tu_dir_write("l.txt", "a.h5\nnope.h5\n");
  const char *m = fails(TOPS, "l.txt");
  has(m, "l.txt:2: ");
  has(m, "nope.h5: No such file or directory");
  tu_dir_write("one.txt", "a.h5\n");
  has(fails("top: \"data\" top: \"y\"", "one.txt"), "a.h5: no dataset \"y\"");
  has(fails(TOPS, "absent.txt"), "absent.txt");
  tu_dir_write("empty.txt", "\n  \n");
  has(fails(TOPS, "empty.txt"), "empty.txt: the list names no HDF5 files");
}

Test(hdf5_errors, not_hdf5_and_truncated) {
  tu_dir_write("junk.h5", "this is not HDF5 at all, just some text\n");
  tu_dir_write("a.txt", "junk.h5\n");
  has(fails(TOPS, "a.txt"), "junk.h5: not an HDF5 file");
  /* A real file cut short: its signature survives, its datasets do not. */
  write_h5("big.h5", H5T_IEEE_F64LE, 0, 200, 3, 8, 8, "data", "label", false);
  FILE *f = fopen(tu_dir_path("big.h5"), "rb");
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fclose(f);
  cr_assert_eq(truncate(tu_dir_path("big.h5"), n / 2), 0);
  tu_dir_write("b.txt", "big.h5\n");
  const char *m = fails(TOPS, "b.txt");
  has(m, "b.txt:1: ");
  has(m, "big.h5: ");
  cr_assert(strstr(m, "corrupt"), "%s", m);
}

/* ---- the commands, through ./memdl ---- */

static const char *NET =
    "name: \"h5net\"\n"
    "layer { name: \"d\" type: \"HDF5Data\" top: \"data\" top: \"label\"\n"
    "  hdf5_data_param { source: \"%s\" batch_size: 2 } }\n"
    "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"data\" top: \"ip\"\n"
    "  inner_product_param { num_output: 3 } }\n"
    "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"ip\" bottom: \"label\"\n"
    "  top: \"loss\" }\n";

/* The net's list and its entries are absolute: memdl, like Caffe, takes a
 * net's paths relative to the working directory (here the runfiles). */
Test(hdf5_cmd, compile_shapes_and_data) {
  two_files();
  char *list = NULL, *net = NULL;
  cr_assert(asprintf(&list, "%s\n%s\n", tu_dir_path("a.h5"), tu_dir_path("b.h5")) > 0);
  tu_dir_write("list.txt", list);
  cr_assert(asprintf(&net, NET, tu_dir_path("list.txt")) > 0);
  tu_dir_write("net.prototxt", net);
  free(list);
  free(net);
  const char *compile[] = {"compile", tu_dir_path("net.prototxt"), "--shapes", NULL};
  mdl_run_result r = mdl_run_memdl(compile, 60);
  cr_assert_eq(r.exit_code, 0, "%s%s", r.out, r.err);
  has(r.out, "data 2x2x2x3");
  has(r.out, "label 2");
  mdl_run_result_free(&r);
  const char *data[] = {"data", tu_dir_path("net.prototxt"), "--head", "2", NULL};
  r = mdl_run_memdl(data, 60);
  cr_assert_eq(r.exit_code, 0, "%s%s", r.out, r.err);
  has(r.out, "source:     hdf5 ");
  has(r.out, "records:    5 (of 5 read");
  has(r.out, "shape:      2x2x3 float per record");
  has(r.out, "classes:    3");
  has(r.out, "source record 1        label 1");
  mdl_run_result_free(&r);
  /* A bad file: exit 2, named. */
  tu_dir_write("list.txt", tu_dir_path("missing.h5"));
  r = mdl_run_memdl(data, 60);
  cr_assert_eq(r.exit_code, 2, "%s%s", r.out, r.err);
  has(r.err, "missing.h5");
  mdl_run_result_free(&r);
}
