/* Each data source on files the test writes: IDX (plain and gzip, ubyte and
 * float), LMDB of Datums (raw, float_data, encoded PNG and JPEG), image
 * lists, CSV, synthetic and inline memory; and every source error. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/pb.h"
#include "runtime/data/dataset.h"
#include "runtime/data/sources/datum.h"
#include "tests/dataset_test_util.h"

TestSuite(sources, .init = tu_dir_setup, .fini = tu_dir_teardown);
TestSuite(source_errors, .init = tu_dir_setup, .fini = tu_dir_teardown);

/* n records of 1 x h x w: pixel (r, i) = (r * 7 + i * 3) % 256, label r % k. */
static void make_idx(bool gz, int n, int h, int w, int k, const char *img, const char *lab) {
  uint8_t *px = malloc((size_t)n * h * w), *lb = malloc((size_t)n);
  for (int r = 0; r < n; r++) {
    for (int i = 0; i < h * w; i++) px[(size_t)r * h * w + i] = (uint8_t)((r * 7 + i * 3) % 256);
    lb[r] = (uint8_t)(r % k);
  }
  uint32_t d3[3] = {(uint32_t)n, (uint32_t)h, (uint32_t)w}, d1[1] = {(uint32_t)n};
  char *pi = tu_path(tu_dir, img), *pl = tu_path(tu_dir, lab);
  tu_write_idx(pi, gz, 0x08, 3, d3, px);
  tu_write_idx(pl, gz, 0x08, 1, d1, lb);
  free(pi);
  free(pl);
  free(px);
  free(lb);
}

static Memdl__DataSet *idx_set(const char *img, const char *lab, const char *extra) {
  char *t = NULL;
  cr_assert(asprintf(&t, "name: \"t\" source { idx { images: \"%s\" labels: \"%s\" } } %s", img,
                     lab, extra ? extra : "") > 0);
  Memdl__DataSet *ds = tu_dataset(t);
  free(t);
  return ds;
}

static void check_idx_records(const mdl_dataset *d, int n, int h, int w, int k) {
  cr_assert_eq(d->n, n);
  cr_assert_eq(d->dtype, MDL_DTYPE_U8);
  cr_assert_eq(d->channels, 1);
  cr_assert_eq(d->height, h);
  cr_assert_eq(d->width, w);
  cr_assert_eq(d->num_classes, k);
  const mdl_partition *p = d->part[0];
  for (int r = 0; r < n; r++) {
    cr_assert_eq(p->label[r], r % k);
    cr_assert_eq(p->record[r], r);
    const uint8_t *px = (const uint8_t *)p->data + (size_t)r * h * w;
    for (int i = 0; i < h * w; i++) cr_assert_eq(px[i], (r * 7 + i * 3) % 256, "r %d i %d", r, i);
  }
}

Test(sources, idx_plain_and_gzip) {
  make_idx(false, 50, 4, 5, 3, "a-img", "a-lab");
  make_idx(true, 50, 4, 5, 3, "b-img.gz", "b-lab.gz");
  Memdl__DataSet *a = idx_set("a-img", "a-lab", NULL), *b = idx_set("b-img.gz", "b-lab.gz", NULL);
  mdl_dataset *da = tu_build(a, tu_dir, 1), *db = tu_build(b, tu_dir, 1);
  check_idx_records(da, 50, 4, 5, 3);
  check_idx_records(db, 50, 4, 5, 3);
  cr_assert_eq(da->class_count[0], 17);
  cr_assert_eq(da->class_count[2], 16);
  cr_assert_eq(da->bytes, 50u * (20 + 4 + 8));
  cr_assert_float_eq(da->vmin, 0.0f, 0);
  mdl_data_info info;
  mdl_error err = {0};
  cr_assert_eq(mdl_data_probe(b, tu_dir, &info, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(info.records, 50);
  cr_assert_eq(info.num_classes, 3);
  cr_assert_eq(info.height * info.width, 20);
  mdl_dataset_free(da);
  mdl_dataset_free(db);
  mdl_pb_free(a);
  mdl_pb_free(b);
}

Test(sources, idx_float_elements) {
  float v[6] = {0.5f, -1.25f, 3.0f, 1e-3f, 7.0f, -0.0f};
  uint32_t d[2] = {3, 2}, dl[1] = {3};
  uint8_t lab[3] = {2, 0, 1};
  char *pi = tu_path(tu_dir, "f-img"), *pl = tu_path(tu_dir, "f-lab");
  tu_write_idx(pi, false, 0x0D, 2, d, v);
  tu_write_idx(pl, true, 0x08, 1, dl, lab);
  Memdl__DataSet *ds = idx_set("f-img", "f-lab", NULL);
  mdl_dataset *dd = tu_build(ds, tu_dir, 1);
  cr_assert_eq(dd->dtype, MDL_DTYPE_F32);
  cr_assert_eq(dd->width, 2);
  cr_assert_eq(memcmp(dd->part[0]->data, v, sizeof v), 0);
  cr_assert_eq(dd->part[0]->label[0], 2);
  mdl_dataset_free(dd);
  mdl_pb_free(ds);
  free(pi);
  free(pl);
}

static Memdl__DataSet *lmdb_set(const char *name, const char *extra) {
  char *t = NULL;
  cr_assert(asprintf(&t, "name: \"l\" source { lmdb { path: \"%s\" } } %s", name,
                     extra ? extra : "") > 0);
  Memdl__DataSet *ds = tu_dataset(t);
  free(t);
  return ds;
}

static void free_values(int n, uint8_t **v) {
  for (int i = 0; i < n; i++) free(v[i]);
}

Test(sources, lmdb_raw_datums) {
  enum { N = 30, C = 3, H = 4, W = 5 };
  uint8_t *vals[N];
  size_t lens[N];
  uint8_t px[N][C * H * W];
  for (int r = 0; r < N; r++) {
    for (int i = 0; i < C * H * W; i++) px[r][i] = (uint8_t)(r * 11 + i);
    tu_datum_raw(C, H, W, px[r], r % 4, &vals[r], &lens[r]);
  }
  char *db = tu_path(tu_dir, "raw_lmdb");
  tu_write_lmdb(db, N, vals, lens);
  free_values(N, vals);
  Memdl__DataSet *ds = lmdb_set("raw_lmdb", NULL);
  mdl_dataset *d = tu_build(ds, tu_dir, 1);
  cr_assert_eq(d->n, N);
  cr_assert_eq(d->dtype, MDL_DTYPE_U8);
  cr_assert_eq(d->channels, C);
  cr_assert_eq(d->height, H);
  cr_assert_eq(d->width, W);
  cr_assert_eq(d->num_classes, 4);
  for (int r = 0; r < N; r++) {
    cr_assert_eq(memcmp((uint8_t *)d->part[0]->data + r * C * H * W, px[r], C * H * W), 0);
    cr_assert_eq(d->part[0]->label[r], r % 4);
  }
  /* Partitions of an LMDB: interleaved and ranges both cover it. */
  mdl_dataset *d3 = tu_build(ds, tu_dir, 3);
  cr_assert_eq(d3->n, N);
  cr_assert_eq(d3->part[1]->record[0], 1);
  cr_assert_eq(d3->part[1]->record[1], 4);
  ds->has_partition_scheme = 1;
  ds->partition_scheme = MEMDL__DATA_SET__PARTITION_SCHEME__RANGE;
  mdl_dataset *r3 = tu_build(ds, tu_dir, 3);
  cr_assert_eq(r3->n, N);
  cr_assert_eq(r3->part[1]->record[0], 10);
  cr_assert_eq(r3->part[2]->n, 10);
  mdl_dataset_free(d);
  mdl_dataset_free(d3);
  mdl_dataset_free(r3);
  mdl_pb_free(ds);
  free(db);
}

Test(sources, lmdb_float_datums) {
  enum { N = 5, D = 6 };
  uint8_t *vals[N];
  size_t lens[N];
  float f[N][D];
  for (int r = 0; r < N; r++) {
    for (int i = 0; i < D; i++) f[r][i] = (float)r - 0.25f * (float)i;
    tu_datum_float(1, 2, 3, f[r], r, &vals[r], &lens[r]);
  }
  char *db = tu_path(tu_dir, "float_lmdb");
  tu_write_lmdb(db, N, vals, lens);
  free_values(N, vals);
  Memdl__DataSet *ds = lmdb_set("float_lmdb", NULL);
  mdl_dataset *d = tu_build(ds, tu_dir, 1);
  cr_assert_eq(d->dtype, MDL_DTYPE_F32);
  cr_assert_eq(memcmp(d->part[0]->data, f, sizeof f), 0);
  cr_assert_float_eq(d->vmin, -1.25f, 0);
  cr_assert_float_eq(d->vmax, 4.0f, 0);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
  free(db);
}

Test(sources, lmdb_encoded_png_gray_and_colour) {
  enum { N = 6, H = 7, W = 9 };
  uint8_t *vals[N];
  size_t lens[N];
  uint8_t bgr[N][3 * H * W];
  for (int r = 0; r < N; r++) {
    for (int i = 0; i < 3 * H * W; i++) bgr[r][i] = (uint8_t)(r * 40 + i * 5);
    uint8_t *png;
    size_t n;
    tu_png(3, H, W, bgr[r], &png, &n);
    tu_datum_encoded(png, n, r, &vals[r], &lens[r]);
    free(png);
  }
  char *db = tu_path(tu_dir, "png_lmdb");
  tu_write_lmdb(db, N, vals, lens);
  free_values(N, vals);
  Memdl__DataSet *ds = lmdb_set("png_lmdb", NULL);
  mdl_dataset *d = tu_build(ds, tu_dir, 1);
  cr_assert_eq(d->channels, 3);
  cr_assert_eq(d->height, H);
  cr_assert_eq(d->width, W);
  /* PNG is lossless: the planes come back exactly, in BGR order. */
  for (int r = 0; r < N; r++)
    cr_assert_eq(memcmp((uint8_t *)d->part[0]->data + r * 3 * H * W, bgr[r], 3 * H * W), 0, "r %d",
                 r);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
  /* force_gray decodes to one channel with OpenCV's weights. */
  ds = lmdb_set("png_lmdb", "stage { transform { force_gray: true } }");
  d = tu_build(ds, tu_dir, 1);
  cr_assert_eq(d->channels, 1);
  const uint8_t *g = d->part[0]->data;
  int b = bgr[0][0], gg = bgr[0][H * W], rr = bgr[0][2 * H * W];
  cr_assert_eq(g[0], (b * 1868 + gg * 9617 + rr * 4899 + 8192) >> 14);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
  free(db);
}

Test(sources, lmdb_encoded_jpeg) {
  enum { N = 4, H = 16, W = 16 };
  uint8_t *vals[N];
  size_t lens[N];
  uint8_t px[N][H * W];
  for (int r = 0; r < N; r++) {
    for (int i = 0; i < H * W; i++) px[r][i] = (uint8_t)(60 + r * 20 + (i % W) * 4);
    uint8_t *jpg;
    size_t n;
    tu_jpeg(1, H, W, px[r], 100, &jpg, &n);
    tu_datum_encoded(jpg, n, r, &vals[r], &lens[r]);
    free(jpg);
  }
  char *db = tu_path(tu_dir, "jpg_lmdb");
  tu_write_lmdb(db, N, vals, lens);
  free_values(N, vals);
  Memdl__DataSet *ds = lmdb_set("jpg_lmdb", NULL);
  mdl_dataset *d = tu_build(ds, tu_dir, 1);
  cr_assert_eq(d->channels, 1);
  cr_assert_eq(d->height, H);
  for (int r = 0; r < N; r++)
    for (int i = 0; i < H * W; i++) {
      int got = ((uint8_t *)d->part[0]->data)[r * H * W + i];
      cr_assert(abs(got - px[r][i]) <= 4, "jpeg r %d i %d: %d vs %d", r, i, got, px[r][i]);
    }
  cr_assert_eq(d->part[0]->label[3], 3);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
  free(db);
}

/* Writes tu_dir/img<i>.png (gray 1 x h x w, value v + i) and a list file. */
static void make_image_list(int n, int h, int w, const char *list_name) {
  char *lp = tu_path(tu_dir, list_name);
  FILE *f = fopen(lp, "w");
  char *imgs = tu_path(tu_dir, "imgs");
  mkdir(imgs, 0755);
  free(imgs);
  for (int i = 0; i < n; i++) {
    uint8_t *px = malloc((size_t)h * w), *png;
    size_t len;
    for (int k = 0; k < h * w; k++) px[k] = (uint8_t)(10 * i + k);
    tu_png(1, h, w, px, &png, &len);
    char name[64];
    snprintf(name, sizeof name, "imgs/img %d.png", i); /* a space in the path, as Caffe allows */
    char *p = tu_path(tu_dir, name);
    tu_write(p, png, len);
    fprintf(f, "%s %d\n", name + 5, i % 2);
    free(p);
    free(px);
    free(png);
  }
  fclose(f);
  free(lp);
}

Test(sources, image_list_gray_colour_resize) {
  make_image_list(5, 6, 8, "list.txt");
  Memdl__DataSet *ds =
      tu_dataset("source { image_list { list: \"list.txt\" root: \"imgs/\" is_color: false } }");
  mdl_dataset *d = tu_build(ds, tu_dir, 1);
  cr_assert_eq(d->n, 5);
  cr_assert_eq(d->channels, 1);
  cr_assert_eq(d->height, 6);
  cr_assert_eq(d->width, 8);
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(d->part[0]->label[i], i % 2);
    cr_assert_eq(((uint8_t *)d->part[0]->data)[i * 48 + 3], 10 * i + 3);
  }
  mdl_dataset_free(d);
  mdl_pb_free(ds);
  /* is_color (the default) replicates gray into three planes; resizing a
   * constant-per-row image keeps the rows' values. */
  ds = tu_dataset(
      "source { image_list { list: \"list.txt\" root: \"imgs/\" new_height: 3 "
      "new_width: 4 } }");
  d = tu_build(ds, tu_dir, 1);
  cr_assert_eq(d->channels, 3);
  cr_assert_eq(d->height, 3);
  cr_assert_eq(d->width, 4);
  const uint8_t *p = d->part[0]->data;
  cr_assert_eq(memcmp(p, p + 12, 12), 0);
  mdl_data_info info;
  mdl_error err = {0};
  cr_assert_eq(mdl_data_probe(ds, tu_dir, &info, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(info.records, 5);
  cr_assert_eq(info.num_classes, 2);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
}

Test(sources, csv_header_label_column_delimiter) {
  const char *csv = "label;a;b;c\n1;0.5;2;3\n\n0;-1;1e3;4.25\r\n2;7;8;9\n";
  char *p = tu_path(tu_dir, "x.csv");
  tu_write(p, csv, strlen(csv));
  Memdl__DataSet *ds = tu_dataset(
      "source { csv { path: \"x.csv\" header: true label_column: 0 delimiter: \";\" } }");
  mdl_dataset *d = tu_build(ds, tu_dir, 1);
  cr_assert_eq(d->n, 3);
  cr_assert_eq(d->dtype, MDL_DTYPE_F32);
  cr_assert_eq(d->width, 3);
  const float *v = d->part[0]->data;
  float want[9] = {0.5f, 2, 3, -1, 1e3f, 4.25f, 7, 8, 9};
  cr_assert_eq(memcmp(v, want, sizeof want), 0);
  cr_assert_eq(d->part[0]->label[1], 0);
  cr_assert_eq(d->part[0]->label[2], 2);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
  free(p);
}

Test(sources, synthetic_is_deterministic_and_partition_independent) {
  Memdl__DataSet *ds =
      tu_dataset("source { synthetic { shape: [1, 6, 6] classes: 4 records: 400 seed: 9 } }");
  mdl_dataset *a = tu_build(ds, NULL, 1), *b = tu_build(ds, NULL, 4);
  cr_assert_eq(a->n, 400);
  cr_assert_eq(b->n, 400);
  cr_assert_eq(a->num_classes, 4);
  for (int k = 0; k < 4; k++)
    cr_assert(a->class_count[k] > 60, "class %d: %lld", k, (long long)a->class_count[k]);
  /* Record r is the same bytes whichever partition holds it. */
  const mdl_partition *p = b->part[2];
  for (int64_t i = 0; i < p->n; i++) {
    int64_t r = p->record[i];
    cr_assert_eq(memcmp((uint8_t *)p->data + i * 36, (uint8_t *)a->part[0]->data + r * 36, 36), 0);
    cr_assert_eq(p->label[i], a->part[0]->label[r]);
  }
  mdl_dataset_free(a);
  mdl_dataset_free(b);
  mdl_pb_free(ds);
}

Test(sources, memory_inline) {
  Memdl__DataSet *ds =
      tu_dataset("source { memory { shape: [2] data: [1, 2, 3, 4, 5, 6] label: [0, 1, 1] } }");
  mdl_dataset *d = tu_build(ds, NULL, 1);
  cr_assert_eq(d->n, 3);
  cr_assert_eq(d->width, 2);
  cr_assert_float_eq(((float *)d->part[0]->data)[5], 6.0f, 0);
  cr_assert_eq(d->class_count[1], 2);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
}

/* ---- errors: each names the file, exit status 2, nothing kept ---- */

static void expect_msg(const char *msg, const char *part) {
  cr_assert(strstr(msg, part), "message \"%s\" lacks \"%s\"", msg, part);
}

Test(source_errors, missing_file) {
  make_idx(true, 10, 2, 2, 2, "i.gz", "l.gz");
  Memdl__DataSet *ds = idx_set("nope.gz", "l.gz", NULL);
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, "nope.gz");
  expect_msg(m, "No such file");
  mdl_pb_free(ds);
  ds = idx_set("i.gz", "missing-labels.gz", NULL);
  expect_msg(tu_build_fails(ds, tu_dir, MDL_ERR_INVALID), "missing-labels.gz");
  mdl_pb_free(ds);
}

Test(source_errors, wrong_idx_magic) {
  make_idx(false, 10, 2, 2, 2, "i", "l");
  char *p = tu_path(tu_dir, "i");
  size_t n;
  uint8_t *b = tu_read(p, &n);
  b[0] = 0x12;
  tu_write(p, b, n);
  Memdl__DataSet *ds = idx_set("i", "l", NULL);
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, p);
  expect_msg(m, "not an IDX file");
  mdl_pb_free(ds);
  free(b);
  free(p);
}

Test(source_errors, image_label_count_mismatch) {
  make_idx(true, 10, 2, 2, 2, "i.gz", "l.gz");
  make_idx(true, 9, 2, 2, 2, "i9.gz", "l9.gz");
  Memdl__DataSet *ds = idx_set("i.gz", "l9.gz", NULL);
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, "10 images");
  expect_msg(m, "9 labels");
  mdl_pb_free(ds);
}

Test(source_errors, truncated_and_corrupt_gzip) {
  make_idx(true, 400, 16, 16, 2, "i.gz", "l.gz");
  char *p = tu_path(tu_dir, "i.gz");
  size_t n;
  uint8_t *b = tu_read(p, &n);
  char *t = tu_path(tu_dir, "t.gz");
  tu_write(t, b, n / 2);
  Memdl__DataSet *ds = idx_set("t.gz", "l.gz", NULL);
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, "t.gz");
  expect_msg(m, "truncated or corrupt gzip");
  mdl_pb_free(ds);
  /* Cut only the trailer: the data decodes but the CRC cannot be checked. */
  tu_write(t, b, n - 4);
  ds = idx_set("t.gz", "l.gz", NULL);
  expect_msg(tu_build_fails(ds, tu_dir, MDL_ERR_INVALID), "gzip");
  mdl_pb_free(ds);
  /* Flip bytes in the middle of the compressed stream. */
  for (size_t i = n / 3; i < n / 3 + 16; i++) b[i] ^= 0x5a;
  tu_write(t, b, n);
  ds = idx_set("t.gz", "l.gz", NULL);
  expect_msg(tu_build_fails(ds, tu_dir, MDL_ERR_INVALID), "gzip");
  mdl_pb_free(ds);
  free(b);
  free(p);
  free(t);
}

Test(source_errors, truncated_plain_idx) {
  make_idx(false, 40, 8, 8, 2, "i", "l");
  char *p = tu_path(tu_dir, "i");
  size_t n;
  uint8_t *b = tu_read(p, &n);
  tu_write(p, b, n - 10);
  Memdl__DataSet *ds = idx_set("i", "l", NULL);
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, "truncated");
  expect_msg(m, p);
  mdl_pb_free(ds);
  free(b);
  free(p);
}

Test(source_errors, not_an_lmdb) {
  char *db = tu_path(tu_dir, "bad_lmdb");
  mkdir(db, 0755);
  char *f = tu_path(db, "data.mdb");
  char junk[8192];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)(i * 31);
  tu_write(f, junk, sizeof junk);
  Memdl__DataSet *ds = lmdb_set("bad_lmdb", NULL);
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, "bad_lmdb");
  expect_msg(m, "not an LMDB");
  mdl_pb_free(ds);
  /* An empty directory (no data.mdb) and a LevelDB-looking one. */
  char *e = tu_path(tu_dir, "empty_dir");
  mkdir(e, 0755);
  ds = lmdb_set("empty_dir", NULL);
  expect_msg(tu_build_fails(ds, tu_dir, MDL_ERR_INVALID), "not an LMDB");
  mdl_pb_free(ds);
  char *cur = tu_path(e, "CURRENT");
  tu_write(cur, "x", 1);
  ds = lmdb_set("empty_dir", NULL);
  expect_msg(tu_build_fails(ds, tu_dir, MDL_ERR_INVALID), "LevelDB");
  mdl_pb_free(ds);
  free(cur);
  free(e);
  free(f);
  free(db);
}

Test(source_errors, datum_that_does_not_decode) {
  enum { N = 4 };
  uint8_t *vals[N];
  size_t lens[N];
  uint8_t px[12] = {0};
  for (int r = 0; r < N; r++) tu_datum_raw(1, 3, 4, px, 0, &vals[r], &lens[r]);
  /* Record 2: bytes that are no protobuf message. */
  free(vals[2]);
  vals[2] = malloc(5);
  memcpy(vals[2], "\xff\xff\xff\xff\xff", 5);
  lens[2] = 5;
  char *db = tu_path(tu_dir, "baddatum");
  tu_write_lmdb(db, N, vals, lens);
  free_values(N, vals);
  Memdl__DataSet *ds = lmdb_set("baddatum", NULL);
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, "record 2");
  expect_msg(m, "00000002");
  expect_msg(m, "Datum");
  mdl_pb_free(ds);
  /* A Datum whose data size disagrees with its shape, and a corrupt PNG. */
  tu_datum_raw(1, 3, 4, px, 0, &vals[0], &lens[0]);
  uint8_t *short_datum;
  size_t sl;
  tu_datum_raw(1, 2, 4, px, 0, &short_datum, &sl);
  Caffe__Datum *d = caffe__datum__unpack(NULL, sl, short_datum);
  d->height = 3; /* claims 12 bytes, holds 8 */
  vals[1] = malloc(caffe__datum__get_packed_size(d));
  lens[1] = caffe__datum__pack(d, vals[1]);
  caffe__datum__free_unpacked(d, NULL);
  free(short_datum);
  uint8_t junk_png[40] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 1, 2, 3};
  tu_datum_encoded(junk_png, sizeof junk_png, 0, &vals[2], &lens[2]);
  char *db2 = tu_path(tu_dir, "baddatum2");
  tu_write_lmdb(db2, 3, vals, lens);
  free_values(3, vals);
  ds = lmdb_set("baddatum2", NULL);
  m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, "record 1");
  expect_msg(m, "8 bytes");
  mdl_pb_free(ds);
  free(db);
  free(db2);
}

Test(source_errors, image_of_the_wrong_size) {
  make_image_list(3, 6, 8, "list.txt");
  /* Replace image 1 with a 5 x 8 one. */
  uint8_t px[40] = {0}, *png;
  size_t len;
  tu_png(1, 5, 8, px, &png, &len);
  char *p = tu_path(tu_dir, "imgs/img 1.png");
  tu_write(p, png, len);
  free(png);
  Memdl__DataSet *ds =
      tu_dataset("source { image_list { list: \"list.txt\" root: \"imgs/\" is_color: false } }");
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, "record 1");
  expect_msg(m, "img 1.png");
  expect_msg(m, "1x5x8");
  mdl_pb_free(ds);
  /* A clean stage drops it instead and counts why. */
  ds = tu_dataset(
      "source { image_list { list: \"list.txt\" root: \"imgs/\" is_color: false } } "
      "stage { clean { } }");
  mdl_dataset *d = tu_build(ds, tu_dir, 1);
  cr_assert_eq(d->n, 2);
  cr_assert_eq(d->dropped[MDL_DROP_SHAPE], 1);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
  /* A missing image names the list line and the image. */
  remove(p);
  ds = tu_dataset("source { image_list { list: \"list.txt\" root: \"imgs/\" } }");
  m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, "list.txt:2");
  expect_msg(m, "img 1.png");
  mdl_pb_free(ds);
  free(p);
}

Test(source_errors, csv_row_of_the_wrong_width) {
  const char *csv = "1,2,3\n4,5,6\n7,8\n";
  char *p = tu_path(tu_dir, "w.csv");
  tu_write(p, csv, strlen(csv));
  Memdl__DataSet *ds = tu_dataset("source { csv { path: \"w.csv\" } }");
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, "w.csv:3");
  expect_msg(m, "2 fields, expected 3");
  mdl_pb_free(ds);
  const char *bad = "1,2,3\n4,x,6\n";
  tu_write(p, bad, strlen(bad));
  ds = tu_dataset("source { csv { path: \"w.csv\" } }");
  expect_msg(tu_build_fails(ds, tu_dir, MDL_ERR_INVALID), "not a number");
  mdl_pb_free(ds);
  free(p);
}

/* The HDF5 source's other errors are in dataset_hdf5_test.c. */
Test(source_errors, hdf5_list_missing) {
  Memdl__DataSet *ds = tu_dataset("source { hdf5 { source: \"train.txt\" } }");
  expect_msg(tu_build_fails(ds, tu_dir, MDL_ERR_INVALID), "train.txt: cannot open");
  mdl_pb_free(ds);
}

Test(source_errors, memory_budget_checked_before_loading) {
  make_idx(true, 1000, 28, 28, 10, "i.gz", "l.gz");
  Memdl__DataSet *ds = idx_set("i.gz", "l.gz", NULL);
  mdl_build_opts o = {.memory_budget_bytes = 100 * 1000};
  mdl_dataset *d = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_dataset_build(ds, tu_dir, 1, &o, &d, &err), MDL_ERR_NOMEM);
  cr_assert_null(d);
  expect_msg(err.msg, "memory budget");
  expect_msg(err.msg, "1000 records of 1x28x28 uint8");
  /* The same budget per partition of a lineage. */
  Memdl__PartitionLineage *lin = mdl_lineage_new(ds, 0, 2, tu_dir);
  mdl_partition *p = NULL;
  cr_assert_eq(mdl_partition_build(lin, &o, &p, &err), MDL_ERR_NOMEM);
  cr_assert_null(p);
  /* With room it builds. */
  o.memory_budget_bytes = 1 << 20;
  cr_assert_eq(mdl_dataset_build(ds, tu_dir, 1, &o, &d, &err), MDL_OK, "%s", err.msg);
  mdl_dataset_free(d);
  mdl_pb_free(lin);
  mdl_pb_free(ds);
}

/* ---- inputs found by tests/fuzz/run_readers_fuzz.sh ---- */

/* Record dimensions whose product overflows int64 (UBSan) must be an error
 * naming the file. */
Test(source_errors, idx_record_size_overflow) {
  make_idx(false, 5, 2, 3, 2, "i", "l");
  static const uint8_t hdr[] = {0,    0,    0x08, 3,    0,    0,    0,    5,
                                0xf1, 0xf1, 0xf1, 0xf1, 0xf1, 0xf1, 0xf1, 0xf1};
  char *p = tu_path(tu_dir, "big");
  tu_write(p, hdr, sizeof hdr);
  Memdl__DataSet *ds = idx_set("big", "l", NULL);
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, p);
  expect_msg(m, "IDX records of");
  mdl_pb_free(ds);
  free(p);
}

/* A label header claiming 2^32-1 labels in a tiny file: truncated, without
 * first allocating for all of them. */
Test(source_errors, idx_label_count_beyond_the_file) {
  make_idx(false, 5, 2, 3, 2, "i", "l");
  static const uint8_t lab[] = {0, 0, 0x08, 1, 0xff, 0xff, 0xff, 0xff, 0, 1, 0};
  char *p = tu_path(tu_dir, "l");
  tu_write(p, lab, sizeof lab);
  Memdl__DataSet *ds = idx_set("i", "l", NULL);
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, p);
  expect_msg(m, "truncated");
  mdl_pb_free(ds);
  free(p);
}

/* A 64003x64004 JPEG header in 136 bytes: refused before allocating 12 GB. */
Test(source_errors, jpeg_header_too_large) {
  static const uint8_t jpg[] = {
      0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x01, 0x00, 0x46, 0x00, 0x01,
      0x00, 0x01, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x03,
      0x02, 0x02, 0x03, 0x02, 0x02, 0x03, 0x03, 0x03, 0x03, 0x04, 0x03, 0x03, 0x04, 0x05,
      0x08, 0x05, 0x05, 0x04, 0x04, 0x3d, 0x05, 0x0a, 0x07, 0x07, 0x06, 0x08, 0x0c, 0x0a,
      0x0c, 0x14, 0x0b, 0x0a, 0x0b, 0x10, 0x0b, 0x11, 0x0e, 0x0e, 0x12, 0x0d, 0x0d, 0x0e,
      0x0b, 0x0b, 0x10, 0x16, 0x10, 0x11, 0x13, 0x14, 0x15, 0x15, 0x15, 0x0c, 0x0f, 0x17,
      0x18, 0x16, 0x14, 0x18, 0x12, 0x14, 0x15, 0x14, 0xff, 0xc0, 0x00, 0x0b, 0x08, 0xfa,
      0x03, 0xfa, 0x04, 0x01, 0x01, 0x11, 0x00, 0x87, 0x88, 0xf7, 0xff, 0xda, 0x00, 0x08,
      0x01, 0x01, 0x00, 0x00, 0x3f, 0x00, 0xf9, 0x1b, 0xc3, 0xde, 0x01, 0xd1, 0xbf, 0xb2,
      0xe2, 0xff, 0x00, 0x46, 0xfe, 0x5f, 0xe1, 0x5f, 0xff, 0xd9};
  mdl_image img = {0};
  mdl_error err = {0};
  cr_assert_eq(mdl_image_decode(jpg, sizeof jpg, 3, &img, &err), MDL_ERR_INVALID);
  expect_msg(err.msg, "bad image size");
  mdl_image_free(&img);
  uint8_t *vals[1];
  size_t lens[1];
  tu_datum_encoded(jpg, sizeof jpg, 0, &vals[0], &lens[0]);
  char *db = tu_path(tu_dir, "bigjpeg");
  tu_write_lmdb(db, 1, vals, lens);
  free_values(1, vals);
  Memdl__DataSet *ds = lmdb_set("bigjpeg", NULL);
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, "record 0");
  expect_msg(m, "bad image size");
  mdl_pb_free(ds);
  free(db);
}

/* c x h x w of 2^31-1 each overflows int64 (UBSan) unless checked in steps. */
Test(source_errors, datum_shape_overflow) {
  uint8_t px[4] = {0};
  uint8_t *buf;
  size_t len;
  tu_datum_raw(1, 2, 2, px, 0, &buf, &len);
  Caffe__Datum *d = caffe__datum__unpack(NULL, len, buf);
  d->channels = d->height = d->width = 0x7fffffff;
  uint8_t out[64];
  size_t n = caffe__datum__pack(d, out);
  caffe__datum__free_unpacked(d, NULL);
  free(buf);
  mdl_image img = {0};
  mdl_error err = {0};
  cr_assert_eq(mdl_datum_decode(out, n, 0, &img, &err), MDL_ERR_INVALID);
  expect_msg(err.msg, "Datum has shape");
  mdl_image_free(&img);
}

/* A truncated 2049x65025 JPEG of 98 bytes: libjpeg only warns and pads the
 * image with gray (a fuzz timeout); an error, as a truncated PNG is. */
Test(source_errors, truncated_jpeg_is_an_error) {
  static const uint8_t jpg[] = {
      0xff, 0xd8, 0xff, 0xe0, 0x00, 0x01, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x03, 0x02, 0x02,
      0x02, 0x02, 0x03, 0x03, 0x03, 0x03, 0x04, 0x03, 0x04, 0x2e, 0x29, 0x05, 0x05, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xcc, 0xff, 0xff, 0xff, 0xff, 0xfb, 0xff,
      0xbf, 0xb5, 0x0d, 0x0e, 0xc0, 0xdc, 0x09, 0x61, 0x00, 0x00, 0x10, 0xba, 0xe4, 0x40,
      0xff, 0xff, 0x5f, 0xf7, 0xc7, 0x51, 0x19, 0x00, 0x00, 0x60, 0x40, 0x00, 0x16, 0x14,
      0x18, 0x13, 0x04, 0x15, 0x14, 0xff, 0xc0, 0x00, 0x0b, 0x08, 0x08, 0x01, 0xfe, 0x01,
      0x01, 0x01, 0x11, 0x00, 0xfa, 0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x10, 0x3f};
  mdl_image img = {0};
  mdl_error err = {0};
  cr_assert_eq(mdl_image_decode(jpg, sizeof jpg, 3, &img, &err), MDL_ERR_INVALID);
  expect_msg(err.msg, "Premature end of JPEG file");
  mdl_image_free(&img);
}

Test(source_errors, a_truncated_idx_names_the_record_it_ends_in) {
  make_idx(false, 400, 16, 16, 2, "i", "l");
  char *p = tu_path(tu_dir, "i");
  size_t n;
  uint8_t *b = tu_read(p, &n);
  tu_write(p, b, 16 + 300 * 256 + 10); /* header, 300 records, part of the next */
  Memdl__DataSet *ds = idx_set("i", "l", NULL);
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, p);
  expect_msg(m, "file ends in record 300 ");
  mdl_pb_free(ds);
  free(b);
  free(p);
}

/* Page-level corruption makes liblmdb assert (abort) inside its own code:
 * the build must end with an error naming the database, in this process. */
Test(source_errors, a_corrupt_lmdb_is_an_error_not_an_abort) {
  enum { N = 400, C = 1, H = 8, W = 8 };
  uint8_t *vals[N];
  size_t lens[N];
  uint8_t px[C * H * W] = {0};
  for (int r = 0; r < N; r++) tu_datum_raw(C, H, W, px, r % 4, &vals[r], &lens[r]);
  char *db = tu_path(tu_dir, "bad_lmdb");
  tu_write_lmdb(db, N, vals, lens);
  free_values(N, vals);
  char *file = tu_path(db, "data.mdb");
  size_t n;
  uint8_t *b = tu_read(file, &n);
  cr_assert_gt(n, 6 * 4096);
  /* the last page, a leaf, says it is a branch: mdb_cursor_next asserts */
  size_t last = n / 4096 - 1;
  cr_assert_eq(b[last * 4096 + 10], 0x02, "the last page is not a leaf");
  b[last * 4096 + 10] = 0x01;
  tu_write(file, b, n);
  Memdl__DataSet *ds = lmdb_set("bad_lmdb", NULL);
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  expect_msg(m, "bad_lmdb/data.mdb: corrupt LMDB: liblmdb aborted reading it");
  expect_msg(m, "IS_LEAF");
  mdl_pb_free(ds);
  free(b);
  free(file);
  free(db);
}
