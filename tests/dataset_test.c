/* The real example data: Debian's dataset-fashion-mnist files, as the
 * example job reads them (60000 + 10000 records, 10 balanced classes). The
 * sources, stages, batches and Caffe mapping are tested in the other
 * dataset_*_test.c files of this binary. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/pb.h"
#include "runtime/data/dataset.h"
#include "tests/dataset_test_util.h"

#define FMNIST "/usr/share/datasets/fashion-mnist/"

static void check_split(const char *which, int64_t n, int64_t per_class) {
  char text[512];
  snprintf(text, sizeof text,
           "name: \"%s\" source { idx { images: \"%s-images-idx3-ubyte.gz\" "
           "labels: \"%s-labels-idx1-ubyte.gz\" } } stage { clean { num_classes: 10 } } "
           "stage { transform { scale: 0.00390625 } }",
           which, which, which);
  Memdl__DataSet *ds = tu_dataset(text);
  mdl_data_info info;
  mdl_error err = {0};
  cr_assert_eq(mdl_data_probe(ds, FMNIST, &info, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(info.records, n);
  cr_assert_eq(info.num_classes, 10);
  cr_assert_eq(info.bytes, (uint64_t)n * (784 + 12));
  mdl_dataset *d = tu_build(ds, FMNIST, 2);
  cr_assert_eq(d->n, n);
  cr_assert_eq(d->dtype, MDL_DTYPE_U8);
  cr_assert_eq(d->channels, 1);
  cr_assert_eq(d->height, 28);
  cr_assert_eq(d->width, 28);
  cr_assert_eq(d->num_classes, 10);
  for (int k = 0; k < 10; k++) cr_assert_eq(d->class_count[k], per_class, "class %d", k);
  for (int r = 0; r < MDL_DROP_COUNT; r++) cr_assert_eq(d->dropped[r], 0);
  cr_assert_float_eq(d->vmin, 0.0f, 0);
  cr_assert_float_eq(d->vmax, 255.0f, 0);
  cr_assert_eq(d->bytes, (uint64_t)n * (784 + 12));
  /* One LeNet batch from both partitions, values in [0, 1). */
  mdl_batch_opts o = {.batch_size = 64, .train = true, .shuffle = true, .seed = 7};
  mdl_batcher *b = NULL;
  cr_assert_eq(mdl_batcher_new(d->part, 2, d->transform, &o, &b, &err), MDL_OK, "%s", err.msg);
  float *x = malloc(sizeof(float) * 64 * 784), lab[64];
  cr_assert_eq(mdl_batcher_next(b, x, lab, &err), MDL_OK);
  for (int i = 0; i < 64 * 784; i++) cr_assert(x[i] >= 0.0f && x[i] <= 1.0f);
  for (int i = 0; i < 64; i++) cr_assert(lab[i] >= 0 && lab[i] <= 9);
  free(x);
  mdl_batcher_free(b);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
}

Test(fashion_mnist, train_and_test_counts, .timeout = 60) {
  if (access(FMNIST "train-images-idx3-ubyte.gz", R_OK) != 0)
    cr_skip_test("Debian's dataset-fashion-mnist is not installed (scripts/setup.sh installs it)");
  check_split("train", 60000, 6000);
  check_split("t10k", 10000, 1000);
}
