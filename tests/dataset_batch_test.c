/* The batcher: epoch coverage, shuffle determinism by seed, reshuffling per
 * epoch, wrap-around, seeking, several partitions. Records carry their own
 * index in their pixels so the order can be read back from a batch. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common/pb.h"
#include "runtime/data/dataset.h"
#include "tests/dataset_test_util.h"

/* n records of 1 x 1 x 2 float: (r, -r), label r % 10. */
static Memdl__DataSet *indexed(int n) {
  Memdl__DataSet *ds = tu_dataset("source { memory { shape: [2] } }");
  Memdl__MemorySource *m = ds->source->memory;
  m->n_data = (size_t)n * 2;
  m->data = realloc(m->data, sizeof(float) * m->n_data);
  m->n_label = (size_t)n;
  m->label = realloc(m->label, sizeof(int32_t) * m->n_label);
  for (int r = 0; r < n; r++) {
    m->data[2 * r] = (float)r;
    m->data[2 * r + 1] = (float)-r;
    m->label[r] = r % 10;
  }
  return ds;
}

static mdl_batcher *batcher(mdl_dataset *d, int bs, bool shuffle, uint64_t seed) {
  mdl_batch_opts o = {.batch_size = bs, .train = true, .shuffle = shuffle, .seed = seed};
  mdl_batcher *b = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_batcher_new(d->part, (int)d->n_parts, d->transform, &o, &b, &err), MDL_OK, "%s",
               err.msg);
  return b;
}

/* Next batch's record indices into ids. */
static void next_ids(mdl_batcher *b, int bs, int *ids) {
  float data[2 * 64], lab[64];
  mdl_error err = {0};
  cr_assert(bs <= 64);
  cr_assert_eq(mdl_batcher_next(b, data, lab, &err), MDL_OK);
  for (int i = 0; i < bs; i++) {
    ids[i] = (int)data[2 * i];
    cr_assert_float_eq(data[2 * i + 1], (float)-ids[i], 0);
    cr_assert_float_eq(lab[i], (float)(ids[i] % 10), 0);
  }
}

Test(batch, epoch_covers_every_record_once_and_reshuffles) {
  Memdl__DataSet *ds = indexed(100);
  mdl_dataset *d = tu_build(ds, NULL, 3);
  mdl_batcher *b = batcher(d, 10, true, 42);
  cr_assert_eq(mdl_batcher_records(b), 100);
  int e0[100], e1[100];
  for (int k = 0; k < 10; k++) next_ids(b, 10, e0 + 10 * k);
  cr_assert_eq(mdl_batcher_epoch(b), 1);
  for (int k = 0; k < 10; k++) next_ids(b, 10, e1 + 10 * k);
  bool seen0[100] = {false}, seen1[100] = {false};
  int same = 0, in_order = 0;
  for (int i = 0; i < 100; i++) {
    cr_assert(!seen0[e0[i]]);
    seen0[e0[i]] = true;
    cr_assert(!seen1[e1[i]]);
    seen1[e1[i]] = true;
    same += e0[i] == e1[i];
    in_order += e0[i] == i;
  }
  cr_assert(same < 20, "epochs share %d positions", same);
  cr_assert(in_order < 20, "epoch 0 barely shuffled");
  mdl_batcher_free(b);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
}

Test(batch, same_seed_same_batches_other_seed_differs) {
  Memdl__DataSet *ds = indexed(64);
  mdl_dataset *d = tu_build(ds, NULL, 1);
  mdl_batcher *a = batcher(d, 16, true, 7), *a2 = batcher(d, 16, true, 7),
              *c = batcher(d, 16, true, 8);
  int x[16], y[16], z[16];
  int differ = 0;
  for (int k = 0; k < 12; k++) {
    next_ids(a, 16, x);
    next_ids(a2, 16, y);
    next_ids(c, 16, z);
    cr_assert_eq(memcmp(x, y, sizeof x), 0, "batch %d", k);
    differ += memcmp(x, z, sizeof x) != 0;
  }
  cr_assert(differ >= 10);
  mdl_batcher_free(a);
  mdl_batcher_free(a2);
  mdl_batcher_free(c);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
}

Test(batch, wraps_across_epochs_and_seeks) {
  Memdl__DataSet *ds = indexed(10);
  mdl_dataset *d = tu_build(ds, NULL, 1);
  mdl_batcher *b = batcher(d, 4, false, 1);
  int ids[4];
  next_ids(b, 4, ids);
  next_ids(b, 4, ids);
  next_ids(b, 4, ids); /* positions 8, 9 | 0, 1 of the next epoch */
  int want[4] = {8, 9, 0, 1};
  cr_assert_eq(memcmp(ids, want, sizeof ids), 0);
  mdl_batcher_free(b);
  /* Shuffled: batch k after seek equals batch k of a fresh run. */
  b = batcher(d, 4, true, 99);
  int seq[7][4];
  for (int k = 0; k < 7; k++) next_ids(b, 4, seq[k]);
  mdl_batcher *s = batcher(d, 4, true, 99);
  mdl_batcher_seek(s, 5);
  next_ids(s, 4, ids);
  cr_assert_eq(memcmp(ids, seq[5], sizeof ids), 0);
  mdl_batcher_seek(s, 2);
  next_ids(s, 4, ids);
  cr_assert_eq(memcmp(ids, seq[2], sizeof ids), 0);
  mdl_batcher_free(s);
  mdl_batcher_free(b);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
}

Test(batch, errors) {
  Memdl__DataSet *ds = indexed(4);
  mdl_dataset *d = tu_build(ds, NULL, 1);
  mdl_batch_opts o = {.batch_size = 0};
  mdl_batcher *b = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_batcher_new(d->part, 1, d->transform, &o, &b, &err), MDL_ERR_INVALID);
  cr_assert_null(b);
  o.batch_size = 2;
  cr_assert_eq(mdl_batcher_new(d->part, 0, NULL, &o, &b, &err), MDL_ERR_INVALID);
  /* NULL transform: identity. */
  cr_assert_eq(mdl_batcher_new(d->part, 1, NULL, &o, &b, &err), MDL_OK);
  float x[4], l[2];
  cr_assert_eq(mdl_batcher_next(b, x, l, &err), MDL_OK);
  cr_assert_float_eq(x[0], 0.0f, 0);
  cr_assert_float_eq(x[2], 1.0f, 0);
  mdl_batcher_free(b);
  mdl_batcher_free(NULL);
  mdl_dataset_free(d);
  mdl_dataset_free(NULL);
  mdl_partition_free(NULL);
  mdl_transform_free(NULL);
  mdl_pb_free(ds);
}
