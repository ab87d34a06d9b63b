/* Writes small valid seed inputs for readers_fuzz.c's targets (binary, so
 * built at fuzz time rather than committed):
 *   readers_seeds OUT_DIR
 * OUT_DIR/weights: .caffemodel and .solverstate files fitting the stand-in
 * net; OUT_DIR/idx: IDX pairs; OUT_DIR/datum: Datums and raw images. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* jpeglib.h needs size_t and FILE declared first. */
#include <jpeglib.h>
#include <png.h>

#include "caffe.pb-c.h"

static void put(const char *dir, const char *name, const void *p, size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
    perror(path);
    exit(1);
  }
}

static void put_msg(const char *dir, const char *name, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *b = malloc(n + 1);
  protobuf_c_message_pack(m, b);
  put(dir, name, b, n);
  free(b);
}

/* A w x h gradient with c channels (1 or 3) as PNG (alpha adds a 4th). */
static uint8_t *make_png(int w, int h, int c, bool alpha, size_t *n) {
  png_image im;
  memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  im.width = (png_uint_32)w, im.height = (png_uint_32)h;
  im.format = c == 1 ? PNG_FORMAT_GRAY : alpha ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB;
  int k = PNG_IMAGE_PIXEL_CHANNELS(im.format);
  uint8_t *px = malloc((size_t)w * h * k);
  for (int i = 0; i < w * h * k; i++) px[i] = (uint8_t)(i * 13);
  png_alloc_size_t size = 0;
  png_image_write_to_memory(&im, NULL, &size, 0, px, 0, NULL);
  uint8_t *out = malloc(size);
  if (!png_image_write_to_memory(&im, out, &size, 0, px, 0, NULL)) exit(1);
  free(px);
  *n = size;
  return out;
}

static uint8_t *make_jpeg(int w, int h, int c, size_t *n) {
  struct jpeg_compress_struct ci;
  struct jpeg_error_mgr je;
  ci.err = jpeg_std_error(&je);
  jpeg_create_compress(&ci);
  unsigned char *out = NULL;
  unsigned long size = 0;
  jpeg_mem_dest(&ci, &out, &size);
  ci.image_width = (JDIMENSION)w, ci.image_height = (JDIMENSION)h;
  ci.input_components = c;
  ci.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&ci);
  jpeg_set_quality(&ci, 90, TRUE);
  jpeg_start_compress(&ci, TRUE);
  uint8_t *row = malloc((size_t)w * c);
  while (ci.next_scanline < ci.image_height) {
    for (int i = 0; i < w * c; i++) row[i] = (uint8_t)(i * 9 + ci.next_scanline * 17);
    JSAMPROW r = row;
    jpeg_write_scanlines(&ci, &r, 1);
  }
  jpeg_finish_compress(&ci);
  jpeg_destroy_compress(&ci);
  free(row);
  *n = size;
  return out;
}

/* A BlobProto with `shape` (n axes) or, when legacy, num/channels/height/width. */
static Caffe__BlobProto *blob(int n, const int64_t *d, bool legacy, bool dbl) {
  Caffe__BlobProto *b = calloc(1, sizeof *b);
  caffe__blob_proto__init(b);
  size_t count = 1;
  for (int i = 0; i < n; i++) count *= (size_t)d[i];
  if (legacy) {
    b->has_num = b->has_channels = b->has_height = b->has_width = 1;
    b->num = (int)d[0], b->channels = (int)d[1], b->height = (int)d[2], b->width = (int)d[3];
  } else {
    Caffe__BlobShape *s = calloc(1, sizeof *s);
    caffe__blob_shape__init(s);
    s->n_dim = (size_t)n;
    s->dim = malloc(sizeof(int64_t) * (n ? n : 1));
    memcpy(s->dim, d, sizeof(int64_t) * n);
    b->shape = s;
  }
  if (dbl) {
    b->n_double_data = count;
    b->double_data = calloc(count, sizeof(double));
    for (size_t i = 0; i < count; i++) b->double_data[i] = 0.5 * (double)i;
  } else {
    b->n_data = count;
    b->data = calloc(count, sizeof(float));
    for (size_t i = 0; i < count; i++) b->data[i] = 0.25f * (float)i;
  }
  return b;
}

static void weights(const char *dir) {
  static const int64_t conv_w[4] = {4, 3, 2, 2}, conv_b[1] = {4}, ip_legacy[4] = {1, 1, 10, 6},
                       ip[2] = {10, 6}, three[1] = {3}, one[1] = {1};
  Caffe__BlobProto *conv[2] = {blob(4, conv_w, false, false), blob(1, conv_b, false, false)};
  Caffe__BlobProto *ipb[1] = {blob(4, ip_legacy, true, true)};
  Caffe__BlobProto *bn[3] = {blob(1, three, false, false), blob(1, three, false, false),
                             blob(1, one, false, false)};
  Caffe__LayerParameter l[3];
  Caffe__LayerParameter *lp[3] = {&l[0], &l[1], &l[2]};
  const char *names[3] = {"conv1", "ip", "other"};
  for (int i = 0; i < 3; i++) {
    caffe__layer_parameter__init(&l[i]);
    l[i].name = (char *)names[i];
  }
  l[0].type = "Convolution", l[0].n_blobs = 2, l[0].blobs = conv;
  l[1].type = "InnerProduct", l[1].n_blobs = 1, l[1].blobs = ipb;
  l[2].type = "ReLU";
  Caffe__V1LayerParameter v1;
  Caffe__V1LayerParameter *v1p[1] = {&v1};
  caffe__v1_layer_parameter__init(&v1);
  v1.name = "bn";
  v1.n_blobs = 3;
  v1.blobs = bn;
  Caffe__NetParameter np = CAFFE__NET_PARAMETER__INIT;
  np.name = "seed";
  np.n_layer = 3;
  np.layer = lp;
  put_msg(dir, "v2.caffemodel", &np.base);
  np.n_layers = 1;
  np.layers = v1p;
  put_msg(dir, "v2_v1.caffemodel", &np.base);
  np.n_layer = 0;
  put_msg(dir, "v1.caffemodel", &np.base);

  /* Adam: the 6 learnable blobs of the stand-in net, twice, and a seed. */
  Caffe__BlobProto *six[6] = {conv[0], conv[1], blob(2, ip, false, false), bn[0], bn[1], bn[2]};
  Caffe__BlobProto *h[12];
  for (int k = 0; k < 12; k++) h[k] = six[k % 6];
  Caffe__SolverState ss = CAFFE__SOLVER_STATE__INIT;
  ss.has_iter = 1;
  ss.iter = 100;
  ss.has_current_step = 1;
  ss.current_step = 2;
  ss.learned_net = "net_iter_100.caffemodel";
  ss.n_history = 12;
  ss.history = h;
  uint8_t seed[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  ProtobufCMessageUnknownField uf = {
      .tag = 1000, .wire_type = PROTOBUF_C_WIRE_TYPE_64BIT, .len = 8, .data = seed};
  ss.base.n_unknown_fields = 1;
  ss.base.unknown_fields = &uf;
  put_msg(dir, "adam.solverstate", &ss.base);
  ss.n_history = 6;
  ss.base.n_unknown_fields = 0;
  put_msg(dir, "sgd.solverstate", &ss.base);
}

/* flags, label length (2 bytes LE), labels IDX, images IDX. */
static void idx_pair(const char *dir, const char *name, uint8_t flags, uint8_t type, int esize) {
  uint8_t b[512];
  size_t n = 3;
  const int N = 5, H = 2, W = 3;
  uint8_t lab[] = {0, 0, 0x08, 1, 0, 0, 0, N, 0, 1, 2, 1, 0};
  b[0] = flags, b[1] = sizeof lab, b[2] = 0;
  memcpy(b + n, lab, sizeof lab);
  n += sizeof lab;
  uint8_t hdr[] = {0, 0, type, 3, 0, 0, 0, N, 0, 0, 0, H, 0, 0, 0, W};
  memcpy(b + n, hdr, sizeof hdr);
  n += sizeof hdr;
  for (int i = 0; i < N * H * W * esize; i++) b[n++] = (uint8_t)(i * 7 % 64);
  put(dir, name, b, n);
}

static void idx(const char *dir) {
  idx_pair(dir, "ubyte", 0, 0x08, 1);
  idx_pair(dir, "ubyte_gz_2parts", 1 | 2 | 8, 0x08, 1);
  idx_pair(dir, "float_nolabels", 4, 0x0D, 4);
  idx_pair(dir, "int16", 0, 0x0B, 2);
  idx_pair(dir, "double_gz", 1, 0x0E, 8);
}

static void put_datum(const char *dir, const char *name, uint8_t ch, const Caffe__Datum *d) {
  size_t n = caffe__datum__get_packed_size(d);
  uint8_t *b = malloc(n + 1);
  b[0] = ch;
  caffe__datum__pack(d, b + 1);
  put(dir, name, b, n + 1);
  free(b);
}

static void datum(const char *dir) {
  uint8_t px[2 * 3 * 4];
  float fx[2 * 3 * 4];
  for (int i = 0; i < 24; i++) px[i] = (uint8_t)(i * 11), fx[i] = (float)i / 24;
  Caffe__Datum d = CAFFE__DATUM__INIT;
  d.has_channels = d.has_height = d.has_width = d.has_label = 1;
  d.channels = 2, d.height = 3, d.width = 4, d.label = 7;
  d.has_data = 1;
  d.data.len = sizeof px;
  d.data.data = px;
  put_datum(dir, "raw", 0, &d);
  d.has_data = 0;
  d.n_float_data = 24;
  d.float_data = fx;
  put_datum(dir, "float", 0, &d);
  d.n_float_data = 0;
  for (int i = 0; i < 5; i++) {
    size_t n;
    uint8_t *img = i == 0   ? make_png(5, 4, 3, false, &n)
                   : i == 1 ? make_png(6, 3, 1, false, &n)
                   : i == 2 ? make_png(3, 3, 3, true, &n)
                   : i == 3 ? make_jpeg(7, 5, 3, &n)
                            : make_jpeg(4, 4, 1, &n);
    uint8_t *raw = malloc(n + 1);
    raw[0] = (uint8_t)i; /* a different channel choice each */
    memcpy(raw + 1, img, n);
    char name[64];
    snprintf(name, sizeof name, "image%d", i);
    put(dir, name, raw, n + 1);
    free(raw);
    d.encoded = 1, d.has_encoded = 1;
    d.has_data = 1;
    d.data.len = n;
    d.data.data = img;
    snprintf(name, sizeof name, "encoded%d", i);
    put_datum(dir, name, (uint8_t)(i + 1), &d);
    free(img);
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: readers_seeds OUT_DIR\n");
    return 2;
  }
  char sub[3][512];
  const char *names[3] = {"weights", "idx", "datum"};
  for (int i = 0; i < 3; i++) {
    snprintf(sub[i], sizeof sub[i], "%s/%s", argv[1], names[i]);
    mkdir(argv[1], 0755);
    mkdir(sub[i], 0755);
  }
  weights(sub[0]);
  idx(sub[1]);
  datum(sub[2]);
  return 0;
}
