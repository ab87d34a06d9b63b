/* Generators for the data set tests (see dataset_test_util.h). */
#define _GNU_SOURCE
#include "tests/dataset_test_util.h"

#include <criterion/criterion.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <jpeglib.h>
#include <png.h>

#include "caffe.pb-c.h"
#include "common/pb.h"
#include "compiler/textformat.h"

void tu_write_idx(const char *path, bool gz, int type, int ndim, const uint32_t *dims,
                  const void *data) {
  size_t n = 1;
  for (int i = 0; i < ndim; i++) n *= dims[i];
  size_t esz = type == 0x08 ? 1 : 4;
  size_t len = 4 + 4 * (size_t)ndim + n * esz;
  uint8_t *b = malloc(len);
  b[0] = b[1] = 0;
  b[2] = (uint8_t)type;
  b[3] = (uint8_t)ndim;
  for (int i = 0; i < ndim; i++) {
    b[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
    b[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
    b[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
    b[7 + 4 * i] = (uint8_t)dims[i];
  }
  uint8_t *p = b + 4 + 4 * ndim;
  if (esz == 1) {
    memcpy(p, data, n);
  } else {
    for (size_t i = 0; i < n; i++) {
      uint32_t u;
      memcpy(&u, (const float *)data + i, 4);
      p[4 * i] = (uint8_t)(u >> 24);
      p[4 * i + 1] = (uint8_t)(u >> 16);
      p[4 * i + 2] = (uint8_t)(u >> 8);
      p[4 * i + 3] = (uint8_t)u;
    }
  }
  if (gz) {
    gzFile f = gzopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(gzwrite(f, b, (unsigned)len), (int)len);
    gzclose(f);
  } else {
    tu_write(path, b, len);
  }
  free(b);
}

static void pack_datum(const Caffe__Datum *d, uint8_t **out, size_t *len) {
  *len = caffe__datum__get_packed_size(d);
  *out = malloc(*len);
  caffe__datum__pack(d, *out);
}

void tu_datum_raw(int c, int h, int w, const uint8_t *chw, int label, uint8_t **out, size_t *len) {
  Caffe__Datum d = CAFFE__DATUM__INIT;
  d.has_channels = d.has_height = d.has_width = d.has_label = d.has_data = 1;
  d.channels = c;
  d.height = h;
  d.width = w;
  d.label = label;
  d.data.data = (uint8_t *)chw;
  d.data.len = (size_t)c * h * w;
  pack_datum(&d, out, len);
}

void tu_datum_float(int c, int h, int w, const float *chw, int label, uint8_t **out, size_t *len) {
  Caffe__Datum d = CAFFE__DATUM__INIT;
  d.has_channels = d.has_height = d.has_width = d.has_label = 1;
  d.channels = c;
  d.height = h;
  d.width = w;
  d.label = label;
  d.n_float_data = (size_t)c * h * w;
  d.float_data = (float *)chw;
  pack_datum(&d, out, len);
}

void tu_datum_encoded(const uint8_t *img, size_t img_len, int label, uint8_t **out, size_t *len) {
  Caffe__Datum d = CAFFE__DATUM__INIT;
  d.has_label = d.has_data = d.has_encoded = 1;
  d.label = label;
  d.encoded = 1;
  d.data.data = (uint8_t *)img;
  d.data.len = img_len;
  pack_datum(&d, out, len);
}

void tu_write_lmdb(const char *dir, int n, uint8_t *const *values, const size_t *lens) {
  mkdir(dir, 0755);
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  cr_assert_eq(mdb_env_create(&env), 0);
  cr_assert_eq(mdb_env_set_mapsize(env, 64ull << 20), 0);
  cr_assert_eq(mdb_env_open(env, dir, 0, 0664), 0, "mdb_env_open %s", dir);
  cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
  cr_assert_eq(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
  for (int i = 0; i < n; i++) {
    char key[16];
    snprintf(key, sizeof key, "%08d", i);
    MDB_val k = {strlen(key), key}, v = {lens[i], values[i]};
    cr_assert_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
  }
  cr_assert_eq(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

/* CHW (BGR) planes to interleaved RGB or gray rows. */
static uint8_t *interleave_rgb(int c, int h, int w, const uint8_t *chw) {
  size_t hw = (size_t)h * w;
  uint8_t *o = malloc(hw * c);
  for (size_t i = 0; i < hw; i++)
    for (int k = 0; k < c; k++) o[i * c + k] = chw[(size_t)(c == 3 ? 2 - k : k) * hw + i];
  return o;
}

void tu_png(int c, int h, int w, const uint8_t *chw, uint8_t **out, size_t *len) {
  uint8_t *rows = interleave_rgb(c, h, w, chw);
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = (png_uint_32)w;
  img.height = (png_uint_32)h;
  img.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  png_alloc_size_t size = 0;
  cr_assert(png_image_write_to_memory(&img, NULL, &size, 0, rows, 0, NULL));
  *out = malloc(size);
  cr_assert(png_image_write_to_memory(&img, *out, &size, 0, rows, 0, NULL), "%s", img.message);
  *len = size;
  free(rows);
}

void tu_jpeg(int c, int h, int w, const uint8_t *chw, int quality, uint8_t **out, size_t *len) {
  uint8_t *rows = interleave_rgb(c, h, w, chw);
  struct jpeg_compress_struct ci;
  struct jpeg_error_mgr je;
  ci.err = jpeg_std_error(&je);
  jpeg_create_compress(&ci);
  unsigned char *mem = NULL;
  unsigned long mlen = 0;
  jpeg_mem_dest(&ci, &mem, &mlen);
  ci.image_width = (JDIMENSION)w;
  ci.image_height = (JDIMENSION)h;
  ci.input_components = c;
  ci.in_color_space = c == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&ci);
  jpeg_set_quality(&ci, quality, TRUE);
  jpeg_start_compress(&ci, TRUE);
  while (ci.next_scanline < ci.image_height) {
    JSAMPROW r = rows + (size_t)ci.next_scanline * w * c;
    jpeg_write_scanlines(&ci, &r, 1);
  }
  jpeg_finish_compress(&ci);
  jpeg_destroy_compress(&ci);
  *out = malloc(mlen);
  memcpy(*out, mem, mlen);
  *len = mlen;
  free(mem);
  free(rows);
}

void tu_write_mean(const char *path, int c, int h, int w, const float *mean) {
  Caffe__BlobProto b = CAFFE__BLOB_PROTO__INIT;
  b.has_num = b.has_channels = b.has_height = b.has_width = 1;
  b.num = 1;
  b.channels = c;
  b.height = h;
  b.width = w;
  b.n_data = (size_t)c * h * w;
  b.data = (float *)mean;
  size_t n = caffe__blob_proto__get_packed_size(&b);
  uint8_t *buf = malloc(n);
  caffe__blob_proto__pack(&b, buf);
  tu_write(path, buf, n);
  free(buf);
}

Memdl__DataSet *tu_dataset(const char *text) {
  ProtobufCMessage *m = NULL;
  mdl_error err = {0};
  mdl_status st =
      mdl_text_parse(text, strlen(text), "test", &memdl__data_set__descriptor, &m, &err);
  cr_assert_eq(st, MDL_OK, "parse: %s\n%s", err.msg, text);
  return (Memdl__DataSet *)m;
}

mdl_dataset *tu_build(const Memdl__DataSet *ds, const char *base, uint32_t parts) {
  mdl_dataset *d = NULL;
  mdl_error err = {0};
  mdl_status st = mdl_dataset_build(ds, base, parts, NULL, &d, &err);
  cr_assert_eq(st, MDL_OK, "build failed: %s", err.msg);
  cr_assert(d);
  return d;
}

const char *tu_build_fails(const Memdl__DataSet *ds, const char *base, mdl_status code) {
  static mdl_error err;
  memset(&err, 0, sizeof err);
  mdl_dataset *d = NULL;
  mdl_status st = mdl_dataset_build(ds, base, 1, NULL, &d, &err);
  cr_assert_eq(st, code, "expected status %d, got %d: %s", code, st, err.msg);
  cr_assert_null(d);
  cr_assert(err.msg[0]);
  return err.msg;
}
