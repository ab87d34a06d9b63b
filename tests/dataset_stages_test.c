/* Stages: clean (drops by reason), transform (scale, mean_value, mean_file,
 * crop, mirror), normalize, resize, split, sample; fusion into one pass,
 * lineage rebuild bit-identity (in this process and in others), `from`
 * resolution and stage errors. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "common/pb.h"
#include "runtime/data/dataset.h"
#include "tests/dataset_test_util.h"

TestSuite(stages, .init = tu_dir_setup, .fini = tu_dir_teardown);

/* n records of C x H x W uint8 in an IDX file: value (r*13 + i) % 251. */
static void make_chw(const char *name, int n, int c, int h, int w) {
  size_t e = (size_t)c * h * w;
  uint8_t *px = malloc(n * e), *lb = malloc((size_t)n);
  for (int r = 0; r < n; r++) {
    for (size_t i = 0; i < e; i++) px[r * e + i] = (uint8_t)((r * 13 + i) % 251);
    lb[r] = (uint8_t)(r % 5);
  }
  uint32_t d4[4] = {(uint32_t)n, (uint32_t)c, (uint32_t)h, (uint32_t)w}, d1[1] = {(uint32_t)n};
  char *pi = NULL, *pl = NULL;
  cr_assert(asprintf(&pi, "%s/%s-img", tu_dir, name) > 0 &&
            asprintf(&pl, "%s/%s-lab", tu_dir, name) > 0);
  uint32_t d3[3] = {(uint32_t)n, (uint32_t)h, (uint32_t)w};
  if (c == 1)
    tu_write_idx(pi, false, 0x08, 3, d3, px);
  else
    tu_write_idx(pi, false, 0x08, 4, d4, px);
  tu_write_idx(pl, false, 0x08, 1, d1, lb);
  free(pi);
  free(pl);
  free(px);
  free(lb);
}

static Memdl__DataSet *chw_set(const char *name, const char *stages) {
  char *t = NULL;
  cr_assert(asprintf(&t, "name: \"%s\" source { idx { images: \"%s-img\" labels: \"%s-lab\" } } %s",
                     name, name, name, stages) > 0);
  Memdl__DataSet *ds = tu_dataset(t);
  free(t);
  return ds;
}

static uint8_t stored(int r, size_t i) {
  return (uint8_t)((r * 13 + i) % 251);
}

/* One sequential batch of all n records (no shuffle) through d's transform. */
static float *batch_all(mdl_dataset *d, bool train, uint64_t seed, int *oc, int *oh, int *ow) {
  mdl_transform_out_shape(d->transform, oc, oh, ow);
  mdl_batch_opts o = {.batch_size = (int)d->n, .train = train, .shuffle = false, .seed = seed};
  mdl_batcher *b = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_batcher_new(d->part, (int)d->n_parts, d->transform, &o, &b, &err), MDL_OK, "%s",
               err.msg);
  float *out = malloc(sizeof(float) * (size_t)d->n * *oc * *oh * *ow);
  float *lab = malloc(sizeof(float) * (size_t)d->n);
  cr_assert_eq(mdl_batcher_next(b, out, lab, &err), MDL_OK);
  for (int64_t r = 0; r < d->n; r++) cr_assert_float_eq(lab[r], (float)(r % 5), 0);
  free(lab);
  mdl_batcher_free(b);
  return out;
}

Test(stages, clean_counts_drops_by_reason) {
  const char *csv = "1,2,0\nnan,2,1\n1,2,5\n1,2,-1\ninf,0,2\n3,4,2\n";
  char *p = tu_path(tu_dir, "c.csv");
  tu_write(p, csv, strlen(csv));
  Memdl__DataSet *ds =
      tu_dataset("source { csv { path: \"c.csv\" } } stage { clean { num_classes: 3 } }");
  mdl_dataset *d = tu_build(ds, tu_dir, 1);
  cr_assert_eq(d->n, 2);
  cr_assert_eq(d->dropped[MDL_DROP_NONFINITE], 2);
  cr_assert_eq(d->dropped[MDL_DROP_LABEL], 2);
  cr_assert_eq(d->dropped[MDL_DROP_SHAPE], 0);
  cr_assert_eq(d->num_classes, 3);
  cr_assert_eq(d->part[0]->record[1], 5);
  cr_assert_str_eq(mdl_drop_reason_name(MDL_DROP_NONFINITE), "nonfinite");
  mdl_dataset_free(d);
  mdl_pb_free(ds);
  /* Without clean, everything stays (NaN included). */
  ds = tu_dataset("source { csv { path: \"c.csv\" } }");
  d = tu_build(ds, tu_dir, 1);
  cr_assert_eq(d->n, 6);
  cr_assert(isnan(((float *)d->part[0]->data)[2]));
  mdl_dataset_free(d);
  mdl_pb_free(ds);
  free(p);
}

Test(stages, transform_scale_and_mean_value) {
  make_chw("m", 6, 3, 4, 5);
  Memdl__DataSet *ds = chw_set("m", "stage { transform { scale: 0.5 mean_value: [10, 20, 30] } }");
  mdl_dataset *d = tu_build(ds, tu_dir, 1);
  cr_assert_eq(d->dtype, MDL_DTYPE_U8); /* stored compact, converted per batch */
  int c, h, w;
  float *out = batch_all(d, false, 1, &c, &h, &w);
  cr_assert_eq(c * h * w, 60);
  for (int r = 0; r < 6; r++)
    for (int i = 0; i < 60; i++) {
      float want = ((float)stored(r, (size_t)i) - 10.0f * (float)(i / 20 + 1)) * 0.5f;
      cr_assert_float_eq(out[r * 60 + i], want, 1e-5, "r %d i %d", r, i);
    }
  float lo, hi;
  mdl_transform_range(d->transform, 0, 255, &lo, &hi);
  cr_assert_float_eq(lo, -15.0f, 1e-5);
  cr_assert_float_eq(hi, 122.5f, 1e-5);
  free(out);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
}

Test(stages, transform_mean_file_and_normalize) {
  make_chw("mf", 4, 2, 3, 3);
  float mean[18];
  for (int i = 0; i < 18; i++) mean[i] = (float)i * 1.5f;
  char *mp = tu_path(tu_dir, "mean.binaryproto");
  tu_write_mean(mp, 2, 3, 3, mean);
  Memdl__DataSet *ds =
      chw_set("mf",
              "stage { transform { scale: 0.25 mean_file: \"mean.binaryproto\" } } "
              "stage { normalize { mean: [1, 2] std: [2, 4] } }");
  mdl_dataset *d = tu_build(ds, tu_dir, 1);
  int c, h, w;
  float *out = batch_all(d, false, 1, &c, &h, &w);
  for (int r = 0; r < 4; r++)
    for (int i = 0; i < 18; i++) {
      int k = i / 9;
      float y = ((float)stored(r, (size_t)i) - mean[i]) * 0.25f;
      float want = (y - (k ? 2.0f : 1.0f)) / (k ? 4.0f : 2.0f);
      cr_assert_float_eq(out[r * 18 + i], want, 1e-4, "r %d i %d", r, i);
    }
  free(out);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
  /* A mean of the wrong shape is an error naming the file. */
  tu_write_mean(mp, 2, 3, 2, mean);
  ds = chw_set("mf", "stage { transform { mean_file: \"mean.binaryproto\" } }");
  const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
  cr_assert(strstr(m, "mean.binaryproto"), "%s", m);
  mdl_pb_free(ds);
  free(mp);
}

Test(stages, crop_centred_in_test_random_in_train_and_mirror) {
  make_chw("cr", 8, 1, 6, 7);
  Memdl__DataSet *ds = chw_set("cr", "stage { transform { crop_size: 3 } }");
  mdl_dataset *d = tu_build(ds, tu_dir, 1);
  int c, h, w;
  float *out = batch_all(d, false, 1, &c, &h, &w);
  cr_assert_eq(h, 3);
  cr_assert_eq(w, 3);
  /* Centre: offsets ((6-3)/2, (7-3)/2) = (1, 2). */
  for (int r = 0; r < 8; r++)
    for (int y = 0; y < 3; y++)
      for (int x = 0; x < 3; x++)
        cr_assert_float_eq(out[r * 9 + y * 3 + x], stored(r, (size_t)(y + 1) * 7 + x + 2), 0);
  free(out);
  /* Random crops in TRAIN: each output is some window; several offsets occur. */
  bool seen[4][5] = {{false}};
  for (uint64_t seed = 1; seed <= 8; seed++) {
    out = batch_all(d, true, seed, &c, &h, &w);
    for (int r = 0; r < 8; r++) {
      bool found = false;
      for (int y0 = 0; y0 <= 3 && !found; y0++)
        for (int x0 = 0; x0 <= 4 && !found; x0++) {
          bool ok = true;
          for (int k = 0; k < 9 && ok; k++)
            ok = out[r * 9 + k] == stored(r, (size_t)(y0 + k / 3) * 7 + x0 + k % 3);
          if (ok) found = seen[y0][x0] = true;
        }
      cr_assert(found, "record %d is no window", r);
    }
    free(out);
  }
  int kinds = 0;
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 5; x++) kinds += seen[y][x];
  cr_assert(kinds >= 6, "only %d crop offsets seen", kinds);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
  /* Mirror: each record comes out as is or flipped left-right; both occur. */
  ds = chw_set("cr", "stage { transform { mirror: true } }");
  d = tu_build(ds, tu_dir, 1);
  out = batch_all(d, true, 3, &c, &h, &w);
  int flipped = 0, plain = 0;
  for (int r = 0; r < 8; r++) {
    bool is_plain = true, is_flip = true;
    for (int y = 0; y < 6; y++)
      for (int x = 0; x < 7; x++) {
        float v = out[r * 42 + y * 7 + x];
        is_plain &= v == stored(r, (size_t)y * 7 + x);
        is_flip &= v == stored(r, (size_t)y * 7 + 6 - x);
      }
    cr_assert(is_plain || is_flip, "record %d", r);
    plain += is_plain;
    flipped += is_flip;
  }
  cr_assert(plain > 0 && flipped > 0, "plain %d flipped %d", plain, flipped);
  free(out);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
}

Test(stages, resize_stage) {
  make_chw("rs", 3, 1, 4, 4);
  Memdl__DataSet *ds = chw_set("rs", "stage { resize { height: 2 width: 2 } }");
  mdl_dataset *d = tu_build(ds, tu_dir, 1);
  cr_assert_eq(d->height, 2);
  cr_assert_eq(d->width, 2);
  cr_assert_eq(d->dtype, MDL_DTYPE_U8);
  /* Halving with half-pixel centres averages 2x2 blocks. */
  const uint8_t *p = d->part[0]->data;
  for (int r = 0; r < 3; r++)
    for (int y = 0; y < 2; y++)
      for (int x = 0; x < 2; x++) {
        int s = 0;
        for (int dy = 0; dy < 2; dy++)
          for (int dx = 0; dx < 2; dx++) s += stored(r, (size_t)(2 * y + dy) * 4 + 2 * x + dx);
        cr_assert(abs(p[r * 4 + y * 2 + x] - (int)lrintf(s / 4.0f)) <= 1, "r %d", r);
      }
  mdl_dataset_free(d);
  mdl_pb_free(ds);
}

/* Source record indices held by d, as a bitmap over [0, n). */
static bool *held(const mdl_dataset *d, int n) {
  bool *m = calloc((size_t)n, 1);
  for (uint32_t i = 0; i < d->n_parts; i++)
    for (int64_t k = 0; k < d->part[i]->n; k++) {
      int64_t r = d->part[i]->record[k];
      cr_assert(!m[r], "record %lld twice", (long long)r);
      m[r] = true;
    }
  return m;
}

Test(stages, split_is_disjoint_covers_and_ignores_partitioning) {
  Memdl__DataSet *tr = tu_dataset(
      "source { synthetic { shape: [4] records: 5000 } } "
      "stage { split { fraction: 0.7 seed: 5 } }");
  Memdl__DataSet *va = tu_dataset(
      "source { synthetic { shape: [4] records: 5000 } } "
      "stage { split { fraction: 0.7 seed: 5 rest: true } }");
  mdl_dataset *a = tu_build(tr, NULL, 1), *b = tu_build(va, NULL, 3), *a3 = tu_build(tr, NULL, 4);
  cr_assert_eq(a->n + b->n, 5000);
  cr_assert(a->n > 3300 && a->n < 3700, "train %lld", (long long)a->n);
  cr_assert_eq(a->filtered, b->n);
  bool *ma = held(a, 5000), *mb = held(b, 5000), *ma3 = held(a3, 5000);
  for (int r = 0; r < 5000; r++) {
    cr_assert(ma[r] != mb[r], "record %d in both or neither", r);
    cr_assert_eq(ma[r], ma3[r], "record %d depends on partitioning", r);
  }
  /* the seed chooses the split: another one holds other records */
  Memdl__DataSet *tr6 = tu_dataset(
      "source { synthetic { shape: [4] records: 5000 } } "
      "stage { split { fraction: 0.7 seed: 6 } }");
  mdl_dataset *a6 = tu_build(tr6, NULL, 1);
  bool *ma6 = held(a6, 5000);
  int moved = 0;
  for (int r = 0; r < 5000; r++) moved += ma[r] != ma6[r];
  /* independent 70% draws disagree on 2 x 0.7 x 0.3 = 42% of records */
  cr_assert(moved > 1800 && moved < 2400, "seeds 5 and 6 split %d of 5000 records differently",
            moved);
  free(ma6);
  mdl_dataset_free(a6);
  mdl_pb_free(tr6);
  free(ma);
  free(mb);
  free(ma3);
  mdl_dataset_free(a);
  mdl_dataset_free(b);
  mdl_dataset_free(a3);
  mdl_pb_free(tr);
  mdl_pb_free(va);
}

Test(stages, sample_fraction_and_seed) {
  Memdl__DataSet *s1 = tu_dataset(
      "source { synthetic { shape: [2] records: 4000 } } "
      "stage { sample { fraction: 0.25 seed: 1 } }");
  Memdl__DataSet *s2 = tu_dataset(
      "source { synthetic { shape: [2] records: 4000 } } "
      "stage { sample { fraction: 0.25 seed: 2 } }");
  mdl_dataset *a = tu_build(s1, NULL, 1), *a2 = tu_build(s1, NULL, 1), *b = tu_build(s2, NULL, 1);
  cr_assert(a->n > 880 && a->n < 1120, "%lld", (long long)a->n);
  cr_assert_eq(a->n, a2->n);
  cr_assert_eq(memcmp(a->part[0]->record, a2->part[0]->record, (size_t)a->n * 8), 0);
  bool differ =
      a->n != b->n || memcmp(a->part[0]->record, b->part[0]->record, (size_t)a->n * 8) != 0;
  cr_assert(differ);
  mdl_dataset_free(a);
  mdl_dataset_free(a2);
  mdl_dataset_free(b);
  mdl_pb_free(s1);
  mdl_pb_free(s2);
}

Test(stages, per_record_stages_fuse_into_one_pass) {
  make_chw("fu", 50, 1, 8, 8);
  Memdl__DataSet *ds =
      chw_set("fu",
              "stage { sample { fraction: 0.9 } } stage { clean { num_classes: 4 } } "
              "stage { resize { height: 4 width: 4 } } "
              "stage { split { fraction: 0.8 } } "
              "stage { transform { scale: 0.1 crop_size: 3 mirror: true } } "
              "stage { normalize { mean: 0.5 std: 2 } }");
  mdl_dataset *d = tu_build(ds, tu_dir, 2);
  for (uint32_t i = 0; i < d->n_parts; i++) cr_assert_eq(d->part[i]->passes, 1);
  cr_assert(d->dropped[MDL_DROP_LABEL] > 0); /* label 4 is out of range */
  cr_assert_eq(d->height, 4);
  char *desc = mdl_data_describe(ds);
  cr_assert(strstr(desc, "1 fused pass"), "%s", desc);
  cr_assert(strstr(desc, "resize 4x4"), "%s", desc);
  cr_assert(strstr(desc, "crop 3"), "%s", desc);
  free(desc);
  mdl_dataset_free(d);
  mdl_pb_free(ds);
}

Test(stages, lineage_rebuild_is_bit_identical) {
  make_chw("li", 120, 3, 5, 5);
  Memdl__DataSet *ds = chw_set("li",
                               "stage { clean { } } stage { split { fraction: 0.6 seed: 3 } } "
                               "stage { resize { height: 4 width: 3 } }");
  Memdl__PartitionLineage *lin = mdl_lineage_new(ds, 1, 3, tu_dir);
  mdl_partition *p = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_partition_build(lin, NULL, &p, &err), MDL_OK, "%s", err.msg);
  /* Keep a copy, drop the partition, ship the lineage as bytes, rebuild. */
  size_t bytes = (size_t)p->n * p->channels * p->height * p->width;
  int64_t n = p->n;
  uint8_t *data = malloc(bytes);
  memcpy(data, p->data, bytes);
  int32_t *lab = malloc((size_t)n * 4);
  memcpy(lab, p->label, (size_t)n * 4);
  mdl_partition_free(p);
  size_t wire_len = memdl__partition_lineage__get_packed_size(lin);
  uint8_t *wire = malloc(wire_len);
  memdl__partition_lineage__pack(lin, wire);
  mdl_pb_free(lin);
  mdl_pb_free(ds);
  Memdl__PartitionLineage *back = memdl__partition_lineage__unpack(NULL, wire_len, wire);
  cr_assert(back);
  mdl_partition *q = NULL;
  cr_assert_eq(mdl_partition_build(back, NULL, &q, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(q->n, n);
  cr_assert(n > 10);
  cr_assert_eq(q->index, 1);
  cr_assert_eq(memcmp(q->data, data, bytes), 0);
  cr_assert_eq(memcmp(q->label, lab, (size_t)n * 4), 0);
  mdl_partition_free(q);
  memdl__partition_lineage__free_unpacked(back, NULL);
  free(wire);
  free(data);
  free(lab);
}

/* Runs tests/lineage_dump on lineage file `lin` (see lineage_dump.c) and
 * returns what it wrote (*len bytes). */
static uint8_t *dump_elsewhere(const char *lin, const char *out, size_t *len) {
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    execl("tests/lineage_dump", "lineage_dump", lin, out, (char *)NULL);
    _exit(127);
  }
  int ws;
  cr_assert_eq(waitpid(pid, &ws, 0), pid);
  cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "lineage_dump failed (status %d)", ws);
  FILE *f = fopen(out, "rb");
  cr_assert(f);
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  rewind(f);
  uint8_t *buf = malloc(*len + 1);
  cr_assert_eq(fread(buf, 1, *len, f), *len);
  fclose(f);
  return buf;
}

static const char *write_lineage(const Memdl__PartitionLineage *lin, const char *name) {
  size_t n = memdl__partition_lineage__get_packed_size(lin);
  uint8_t *wire = malloc(n);
  memdl__partition_lineage__pack(lin, wire);
  const char *path = tu_dir_path(name);
  FILE *f = fopen(path, "wb");
  cr_assert(f && fwrite(wire, 1, n, f) == n);
  fclose(f);
  free(wire);
  return path;
}

/* A lineage with seeded random stages (sample, split) and a random batch
 * transform (crop, mirror, shuffled order) rebuilt in two other processes
 * (exec'd: their own address layout, pid and clock) gives the same
 * partition and the same batch, and the partition is the one this process
 * builds; another sample seed gives another partition. */
Test(stages, lineage_rebuild_is_bit_identical_across_processes) {
  make_chw("xp", 300, 3, 6, 6);
  const char *stages =
      "stage { sample { fraction: 0.7 seed: %d } } stage { split { fraction: 0.8 seed: 4 } } "
      "stage { transform { crop_size: 4 mirror: true scale: 0.5 } }";
  char text[300];
  snprintf(text, sizeof text, stages, 9);
  Memdl__DataSet *ds = chw_set("xp", text);
  Memdl__PartitionLineage *lin = mdl_lineage_new(ds, 1, 2, tu_dir);
  const char *path = write_lineage(lin, "xp.lineage");
  size_t la, lb;
  uint8_t *a = dump_elsewhere(path, tu_dir_path("xp.a"), &la);
  uint8_t *b = dump_elsewhere(path, tu_dir_path("xp.b"), &lb);
  cr_assert_eq(la, lb, "two processes rebuilt %zu and %zu bytes", la, lb);
  cr_assert_eq(memcmp(a, b, la), 0, "two processes rebuilt different bits");
  /* the partition they wrote is this process's */
  mdl_partition *p = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_partition_build(lin, NULL, &p, &err), MDL_OK, "%s", err.msg);
  cr_assert(p->n > 50 && p->n < 120, "%lld records", (long long)p->n);
  size_t rec = (size_t)3 * 6 * 6, off = sizeof(int64_t);
  cr_assert_eq(memcmp(a, &p->n, sizeof p->n), 0);
  cr_assert_gt(la, off + (size_t)p->n * (rec + 4 + 8));
  cr_assert_eq(memcmp(a + off, p->data, (size_t)p->n * rec), 0);
  off += (size_t)p->n * rec;
  cr_assert_eq(memcmp(a + off, p->label, (size_t)p->n * 4), 0);
  off += (size_t)p->n * 4;
  cr_assert_eq(memcmp(a + off, p->record, (size_t)p->n * 8), 0);
  mdl_partition_free(p);
  /* the seed is used: another one selects other records */
  snprintf(text, sizeof text, stages, 10);
  Memdl__DataSet *ds2 = chw_set("xp", text);
  Memdl__PartitionLineage *lin2 = mdl_lineage_new(ds2, 1, 2, tu_dir);
  size_t lc;
  uint8_t *c = dump_elsewhere(write_lineage(lin2, "xp2.lineage"), tu_dir_path("xp.c"), &lc);
  cr_assert(lc != la || memcmp(a, c, la) != 0, "sample seeds 9 and 10 rebuilt the same bits");
  free(a);
  free(b);
  free(c);
  mdl_pb_free(lin);
  mdl_pb_free(lin2);
  mdl_pb_free(ds);
  mdl_pb_free(ds2);
}

Test(stages, from_resolves_into_standalone_lineage) {
  Memdl__DataSet *all = tu_dataset(
      "name: \"all\" source { synthetic { shape: [3] records: 300 } } "
      "stage { clean { } }");
  Memdl__DataSet *tr =
      tu_dataset("name: \"train\" from: \"all\" stage { split { fraction: 0.8 } }");
  Memdl__DataSet *va =
      tu_dataset("name: \"val\" from: \"all\" stage { split { fraction: 0.8 rest: true } }");
  Memdl__DataSet *loop = tu_dataset("name: \"loop\" from: \"loop\"");
  Memdl__DataSet *sets[] = {all, tr, va, loop};
  Memdl__DataSet *rt = NULL, *rv = NULL, *rl = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_data_resolve(sets, 4, tr, &rt, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(mdl_data_resolve(sets, 4, va, &rv, &err), MDL_OK, "%s", err.msg);
  cr_assert_str_eq(rt->name, "train");
  cr_assert_null(rt->from);
  cr_assert_eq(rt->n_stage, 2);
  cr_assert_eq(rt->stage[0]->kind_case, MEMDL__STAGE__KIND_CLEAN);
  mdl_dataset *a = tu_build(rt, NULL, 1), *b = tu_build(rv, NULL, 1);
  cr_assert_eq(a->n + b->n, 300);
  cr_assert_eq(mdl_data_resolve(sets, 4, loop, &rl, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "cycle"), "%s", err.msg);
  /* Building an unresolved `from` says what to do. */
  cr_assert(strstr(tu_build_fails(tr, NULL, MDL_ERR_INVALID), "resolved"));
  mdl_dataset_free(a);
  mdl_dataset_free(b);
  mdl_pb_free(rt);
  mdl_pb_free(rv);
  for (int i = 0; i < 4; i++) mdl_pb_free(sets[i]);
}

Test(stages, stage_errors) {
  make_chw("se", 4, 1, 4, 4);
  const char *bad[][2] = {
      {"stage { transform { scale: 2 } } stage { resize { height: 2 width: 2 } }",
       "resize must come before"},
      {"stage { split { fraction: 1.5 } }", "fraction 1.5"},
      {"stage { transform { mean_file: \"m\" mean_value: 1 } }", "both set"},
      {"stage { transform { crop_size: 9 } }", "crop_size 9"},
      {"stage { normalize { std: 0 } }", "std[0]"},
      {"stage { transform { mean_value: [1, 2] } }", "mean_value"},
      {"stage { }", "names no kind"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    Memdl__DataSet *ds = chw_set("se", bad[i][0]);
    const char *m = tu_build_fails(ds, tu_dir, MDL_ERR_INVALID);
    cr_assert(strstr(m, bad[i][1]), "case %zu: \"%s\" lacks \"%s\"", i, m, bad[i][1]);
    mdl_pb_free(ds);
  }
}
