/* libFuzzer targets for the binary readers of user files, one per -DTARGET:
 *   TARGET_WEIGHTS  .caffemodel and .solverstate: each input is written to a
 *                   file and read both ways; blob shapes are extracted and
 *                   checked, and weights are copied into a small stand-in net
 *                   (the real net needs the whole layer library) and solver.
 *   TARGET_IDX      IDX images + labels files through the data set API
 *                   (probe, then build); byte 0 picks gzip and partitions,
 *                   bytes 1-2 the length of the label file that follows.
 *   TARGET_DATUM    byte 0 picks the channels; the rest is decoded as a
 *                   caffe.Datum and as PNG/JPEG bytes (decode and probe).
 * Any input must fail with a message or succeed with consistent results.
 * Built by run_readers_fuzz.sh; seeds from readers_seeds.c. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"

static void die(const char *what, const char *detail) {
  fprintf(stderr, "readers_fuzz: %s: %s\n", what, detail ? detail : "");
  abort();
}

/* A private folder for the files the readers open (one per process). */
static const char *work_dir(void) {
  static char dir[64];
  if (!dir[0]) {
    snprintf(dir, sizeof dir, "/tmp/memdl_readers_fuzz.XXXXXX");
    if (!mkdtemp(dir)) die("mkdtemp", dir);
  }
  return dir;
}

static void write_file(const char *path, const uint8_t *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) die("cannot write", path);
}

static void check_message(mdl_status st, const mdl_error *err, const char *must_name) {
  if (st == MDL_OK) return;
  if (!err->msg[0]) die("error without a message", "");
  if (must_name && st == MDL_ERR_INVALID && !strstr(err->msg, must_name))
    die("error does not name the file", err->msg);
}

#if defined(TARGET_WEIGHTS)
#include "runtime/solver/caffemodel.h"

/* A stand-in backend: host memory, no layers; the solver is only read and
 * written here, never stepped (the real CPU backend needs every kernel). */
static float *host_alloc(void *ctx, int64_t n) {
  (void)ctx;
  return mdl_falloc(n);
}
static void host_free(void *ctx, float *p) {
  (void)ctx;
  mdl_ffree(p);
}
static void host_zero(void *ctx, float *p, int64_t n) {
  (void)ctx;
  memset(p, 0, (size_t)n * sizeof *p);
}
static void host_copy(void *ctx, float *dst, const float *src, int64_t n) {
  (void)ctx;
  memcpy(dst, src, (size_t)n * sizeof *dst);
}
static const mdl_backend_i host_iface = {.name = "host",
                                         .host_visible = true,
                                         .alloc = host_alloc,
                                         .free = host_free,
                                         .zero = host_zero,
                                         .to_device = host_copy,
                                         .to_host = host_copy};
static const mdl_backend host_backend = {&host_iface, NULL};

/* ---- a stand-in net: the accessors caffemodel.c uses ---- */
struct mdl_net {
  int n;
  mdl_layer layer[4];
};

const mdl_graph *mdl_net_graph(const mdl_net *net) {
  (void)net;
  return NULL;
}
int mdl_net_n_layers(const mdl_net *net) {
  return net->n;
}
const char *mdl_net_layer_name(const mdl_net *net, int i) {
  return net->layer[i].name;
}
const mdl_backend *mdl_net_backend(const mdl_net *net) {
  (void)net;
  return &host_backend;
}
mdl_layer *mdl_net_layer(const mdl_net *net, int i) {
  return (mdl_layer *)&net->layer[i];
}

typedef struct spec {
  const char *name;
  int n_param;
  int n[3];
  int64_t d[3][4];
} spec;

/* conv1: 4x3x2x2 + 4; ip: 10x6 (also a legacy 1x1x10x6 fits); bn: 3, 3, 1. */
static const spec specs[] = {
    {"conv1", 2, {4, 1}, {{4, 3, 2, 2}, {4}}},
    {"ip", 1, {2}, {{10, 6}}},
    {"bn", 3, {1, 1, 1}, {{3}, {3}, {1}}},
    {"relu", 0, {0}, {{0}}},
};

static mdl_net net;
static float *params;
static mdl_solver *solver;
static mdl_solver_blob blobs[8];
static int n_blobs;
static size_t total;

static void setup(void) {
  if (params) return;
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < specs[i].n_param; j++) {
      int64_t c = 1;
      for (int k = 0; k < specs[i].n[j]; k++) c *= specs[i].d[j][k];
      mdl_solver_blob *b = &blobs[n_blobs++];
      memset(b, 0, sizeof *b);
      b->offset = total;
      b->count = (size_t)c;
      b->lr_mult = b->decay_mult = 1;
      b->n_axes = specs[i].n[j];
      memcpy(b->dim, specs[i].d[j], sizeof specs[i].d[j]);
      total += (size_t)c;
    }
  params = calloc(total, sizeof *params);
  net.n = 4;
  for (int i = 0, m = 0; i < 4; i++) {
    mdl_layer *l = &net.layer[i];
    for (int j = 0; j < MDL_MAX_LAYER_PARAMS; j++) mdl_tensor_init(&l->param[j]);
    l->name = specs[i].name;
    l->n_param = specs[i].n_param;
    for (int j = 0; j < specs[i].n_param; j++, m++)
      mdl_tensor_view(&l->param[j], specs[i].n[j], specs[i].d[j], params + blobs[m].offset, NULL);
  }
  Caffe__SolverParameter sp = CAFFE__SOLVER_PARAMETER__INIT;
  sp.type = "Adam"; /* two history sets */
  sp.has_base_lr = 1;
  sp.base_lr = 0.01f;
  sp.lr_policy = "fixed";
  mdl_error err = {0};
  if (mdl_solver_new(&host_backend, &sp, blobs, n_blobs, total, &solver, &err) != MDL_OK)
    die("mdl_solver_new", err.msg);
}

static void check_blob(const Caffe__BlobProto *b) {
  int n_axes = -1;
  int64_t dim[8];
  int64_t count = mdl_blob_proto_shape(b, &n_axes, dim);
  if (n_axes < 0 || n_axes > 8) die("mdl_blob_proto_shape", "axis count out of range");
  for (int i = 0; i < n_blobs; i++) {
    mdl_tensor t;
    mdl_tensor_init(&t);
    mdl_tensor_view(&t, blobs[i].n_axes, blobs[i].dim, params + blobs[i].offset, NULL);
    if (mdl_blob_proto_fits(b, &t) && count >= 0 && count != t.count && b->shape)
      die("blob fits a tensor of another size", "");
  }
}

static void check_layers(Caffe__BlobProto **b, size_t n) {
  for (size_t k = 0; k < n; k++) check_blob(b[k]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  char path[128];
  snprintf(path, sizeof path, "%s/input.caffemodel", work_dir());
  write_file(path, data, size);
  mdl_error err = {0};
  Caffe__NetParameter *np = NULL;
  mdl_status st = mdl_caffemodel_read(path, &np, &err);
  check_message(st, &err, path);
  if (st == MDL_OK) {
    if (!np) die("read succeeded without a message", "");
    for (size_t k = 0; k < np->n_layer; k++)
      check_layers(np->layer[k]->blobs, np->layer[k]->n_blobs);
    for (size_t k = 0; k < np->n_layers; k++)
      check_layers(np->layers[k]->blobs, np->layers[k]->n_blobs);
    int loaded = -1;
    st = mdl_caffemodel_copy(&net, np, path, &loaded, &err);
    check_message(st, &err, path);
    if (loaded < 0 || loaded > net.n * (int)(np->n_layer + np->n_layers))
      die("mdl_caffemodel_copy", "bad n_loaded");
    caffe__net_parameter__free_unpacked(np, NULL);
  } else if (np) {
    die("failed read left a message", err.msg);
  }

  snprintf(path, sizeof path, "%s/input.solverstate", work_dir());
  write_file(path, data, size);
  char *learned = NULL;
  uint64_t seed = 0;
  bool has_seed = false;
  memset(&err, 0, sizeof err);
  st = mdl_solverstate_load(path, solver, &learned, &seed, &has_seed, &err);
  check_message(st, &err, path);
  if (st != MDL_OK && learned) die("failed load returned learned_net", err.msg);
  free(learned);
  return 0;
}

#elif defined(TARGET_IDX)
#include <zlib.h>

#include "runtime/data/dataset.h"

static void write_maybe_gz(const char *path, const uint8_t *p, size_t n, bool gz) {
  if (!gz) {
    write_file(path, p, n);
    return;
  }
  gzFile f = gzopen(path, "wb1");
  if (!f || (n && gzwrite(f, p, (unsigned)n) != (int)n) || gzclose(f) != Z_OK)
    die("cannot write", path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  uint8_t flags = data[0];
  size_t lab_len = (size_t)data[1] | (size_t)data[2] << 8;
  data += 3;
  size -= 3;
  if (lab_len > size) lab_len = size;
  bool with_labels = !(flags & 4);
  char img[128], lab[128];
  snprintf(img, sizeof img, "%s/images%s", work_dir(), flags & 1 ? ".gz" : "");
  snprintf(lab, sizeof lab, "%s/labels%s", work_dir(), flags & 2 ? ".gz" : "");
  write_maybe_gz(lab, data, lab_len, flags & 2);
  write_maybe_gz(img, data + lab_len, size - lab_len, flags & 1);

  Memdl__IdxSource idx = MEMDL__IDX_SOURCE__INIT;
  idx.images = img;
  idx.labels = with_labels ? lab : NULL;
  Memdl__Source src = MEMDL__SOURCE__INIT;
  src.kind_case = MEMDL__SOURCE__KIND_IDX;
  src.idx = &idx;
  Memdl__DataSet ds = MEMDL__DATA_SET__INIT;
  ds.name = "fuzz";
  ds.source = &src;
  uint32_t parts = 1 + ((flags >> 3) & 3);

  mdl_error err = {0};
  mdl_data_info info;
  memset(&info, 0, sizeof info);
  mdl_status st = mdl_data_probe(&ds, NULL, &info, &err);
  check_message(st, &err, NULL);
  if (st != MDL_OK) return 0;
  if (info.records < 0 || info.channels <= 0 || info.height <= 0 || info.width <= 0)
    die("probe", "bad shape or record count");
  /* A budget, as memdl sets one from the machine: headers claiming billions
   * of records must fail cleanly, not allocate. */
  mdl_build_opts opts = {.memory_budget_bytes = 64u << 20};
  mdl_dataset *d = NULL;
  memset(&err, 0, sizeof err);
  st = mdl_dataset_build(&ds, NULL, parts, &opts, &d, &err);
  check_message(st, &err, NULL);
  if (st == MDL_OK) {
    if (!d) die("build succeeded without a data set", "");
    if (d->n > info.records) die("more records than the header says", "");
    if (d->channels != info.channels || d->height != info.height || d->width != info.width)
      die("built shape differs from the probed one", "");
    mdl_dataset_free(d);
  } else if (d) {
    die("failed build left a data set", err.msg);
  }
  return 0;
}

#elif defined(TARGET_DATUM)
#include "runtime/data/sources/datum.h"

static size_t elem_size(const mdl_image *img) {
  return img->dtype == MDL_DTYPE_F32 ? sizeof(float) : 1;
}

/* Touches every decoded value so ASan sees reads past what was written. */
static void check_image(const mdl_image *img) {
  if (img->c <= 0 || img->h <= 0 || img->w <= 0) die("decoded image", "bad shape");
  size_t n = (size_t)img->c * img->h * img->w * elem_size(img);
  if (n > img->px_cap) die("decoded image", "larger than its buffer");
  volatile uint8_t sum = 0;
  for (size_t i = 0; i < n; i++) sum += ((const uint8_t *)img->px)[i];
  (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static const int chans[4] = {0, 1, 3, 2};
  int channels = chans[data[0] & 3];
  data++;
  size--;
  mdl_image img = {0};
  mdl_error err = {0};
  mdl_status st = mdl_datum_decode(data, size, channels, &img, &err);
  check_message(st, &err, NULL);
  if (st == MDL_OK) check_image(&img);

  memset(&err, 0, sizeof err);
  st = mdl_image_decode(data, size, channels, &img, &err);
  check_message(st, &err, NULL);
  if (st == MDL_OK) {
    check_image(&img);
    int c, h, w;
    memset(&err, 0, sizeof err);
    if (mdl_image_probe(data, size, channels, &c, &h, &w, &err) != MDL_OK)
      die("decodes but does not probe", err.msg);
    if (c != img.c || h != img.h || w != img.w) die("probe and decode disagree on the shape", "");
  }
  mdl_image_free(&img);
  return 0;
}

#else
#error "build with -DTARGET_WEIGHTS, -DTARGET_IDX or -DTARGET_DATUM"
#endif
