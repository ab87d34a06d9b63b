/* Times batch assembly (gather, uint8 -> float with scale, crop, mirror,
 * per-epoch shuffle) for LeNet-sized batches, 64 x 1 x 28 x 28 from
 * Fashion-MNIST (synthetic records of the same shape when the Debian
 * package is missing), plus a CIFAR-sized case. Prints ms per batch and
 * images/s. Usage: bench_batch [batches] [data dir]. Not a test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/pb.h"
#include "compiler/textformat.h"
#include "runtime/data/dataset.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int run(const char *label, const char *text, const char *base, int batch, bool train,
               int batches) {
  ProtobufCMessage *m = NULL;
  mdl_error err = {0};
  if (mdl_text_parse(text, strlen(text), label, &memdl__data_set__descriptor, &m, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  Memdl__DataSet *ds = (Memdl__DataSet *)m;
  mdl_dataset *d = NULL;
  if (mdl_dataset_build(ds, base, 1, NULL, &d, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    mdl_pb_free(ds);
    return 1;
  }
  int c, h, w;
  mdl_transform_out_shape(d->transform, &c, &h, &w);
  mdl_batch_opts o = {.batch_size = batch, .train = train, .shuffle = true, .seed = 1};
  mdl_batcher *b = NULL;
  if (mdl_batcher_new(d->part, (int)d->n_parts, d->transform, &o, &b, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  float *x = malloc(sizeof(float) * (size_t)batch * c * h * w), *y = malloc(sizeof(float) * batch);
  for (int i = 0; i < 20; i++) mdl_batcher_next(b, x, y, &err); /* warm caches and pages */
  /* Median over runs of 50 batches: the machine is shared. */
  int runs = batches / 50 > 0 ? batches / 50 : 1;
  double *per = malloc(sizeof(double) * runs);
  for (int r = 0; r < runs; r++) {
    double t0 = now_s();
    for (int i = 0; i < 50; i++) mdl_batcher_next(b, x, y, &err);
    per[r] = (now_s() - t0) / 50;
  }
  qsort(per, runs, sizeof *per, cmp_double);
  double med = per[runs / 2], best = per[0];
  printf(
      "%-44s %lld records, batch %dx%dx%dx%d: %.4f ms/batch (median, best %.4f), %.0f images/s, "
      "build %.0f ms\n",
      label, (long long)d->n, batch, c, h, w, med * 1e3, best * 1e3, batch / med, d->build_ms);
  free(per);
  free(x);
  free(y);
  mdl_batcher_free(b);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
  return 0;
}

int main(int argc, char **argv) {
  int batches = argc > 1 ? atoi(argv[1]) : 2000;
  const char *dir = argc > 2 ? argv[2] : "/usr/share/datasets/fashion-mnist";
  char path[1024];
  snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
  bool real = access(path, R_OK) == 0;
  const char *src = real ? "source { idx { images: \"train-images-idx3-ubyte.gz\" labels: "
                           "\"train-labels-idx1-ubyte.gz\" } }"
                         : "source { synthetic { shape: [1, 28, 28] records: 60000 } }";
  char text[1024];
  int rc = 0;
  printf("batch assembly, %s\n",
         real ? "Fashion-MNIST train" : "synthetic 60000 x 1x28x28 (no Fashion-MNIST)");
  snprintf(text, sizeof text, "%s stage { transform { scale: 0.00390625 } }", src);
  rc |= run("LeNet: scale, shuffle", text, dir, 64, true, batches);
  snprintf(text, sizeof text, "%s stage { transform { scale: 0.00390625 mean_value: 33 } }", src);
  rc |= run("LeNet: scale + mean, shuffle", text, dir, 64, true, batches);
  snprintf(text, sizeof text,
           "%s stage { transform { scale: 0.00390625 crop_size: 24 mirror: true } }", src);
  rc |= run("LeNet: scale, random crop 24, mirror", text, dir, 64, true, batches);
  rc |= run("CIFAR-sized: mean_value x3, crop 28, mirror",
            "source { synthetic { shape: [3, 32, 32] records: 50000 } } stage { transform { "
            "mean_value: [104, 117, 123] crop_size: 28 mirror: true } }",
            NULL, 100, true, batches / 4 > 50 ? batches / 4 : 50);
  return rc;
}
