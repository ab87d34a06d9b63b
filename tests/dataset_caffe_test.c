/* Caffe data layers mapped onto DataSets (Data, ImageData, MemoryData,
 * HDF5Data), job data sets replacing a layer's source, and a Caffe-format
 * LMDB made here round-tripping through a Data layer into batches. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pb.h"
#include "compiler/textformat.h"
#include "runtime/data/dataset.h"
#include "tests/dataset_test_util.h"

static Caffe__LayerParameter *layer(const char *text) {
  ProtobufCMessage *m = NULL;
  mdl_error err = {0};
  cr_assert_eq(
      mdl_text_parse(text, strlen(text), "layer", &caffe__layer_parameter__descriptor, &m, &err),
      MDL_OK, "%s", err.msg);
  return (Caffe__LayerParameter *)m;
}

static const char *DATA_LAYER =
    "name: \"mnist\" type: \"Data\" top: \"data\" top: \"label\" include { phase: TRAIN } "
    "transform_param { scale: 0.00390625 } "
    "data_param { source: \"examples/mnist/mnist_train_lmdb\" batch_size: 64 backend: LMDB }";

Test(caffe, data_layer_maps_to_lmdb_and_transform) {
  Caffe__LayerParameter *l = layer(DATA_LAYER);
  cr_assert(mdl_data_is_pipeline_layer(l));
  mdl_layer_data ld;
  mdl_error err = {0};
  cr_assert_eq(mdl_data_for_layer(l, NULL, 0, &ld, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(ld.batch_size, 64);
  cr_assert(!ld.replaced);
  cr_assert_str_eq(ld.set->name, "mnist");
  cr_assert_eq(ld.set->source->kind_case, MEMDL__SOURCE__KIND_LMDB);
  cr_assert_str_eq(ld.set->source->lmdb->path, "examples/mnist/mnist_train_lmdb");
  cr_assert_eq(ld.set->n_stage, 1);
  cr_assert_float_eq(ld.set->stage[0]->transform->scale, 0.00390625f, 0);
  mdl_layer_data_clear(&ld);
  mdl_layer_data_clear(NULL);
  mdl_pb_free(l);
}

Test(caffe, job_data_set_replaces_source_without_double_scaling) {
  Caffe__LayerParameter *l = layer(DATA_LAYER);
  Memdl__DataSet *plain = tu_dataset(
      "name: \"examples/mnist/mnist_train_lmdb\" source { synthetic { shape: [1, 28, 28] } }");
  Memdl__DataSet *scaled = tu_dataset(
      "name: \"mnist\" source { synthetic { shape: [1, 28, 28] } } "
      "stage { transform { scale: 0.5 } }");
  mdl_layer_data ld;
  mdl_error err = {0};
  /* By source: the layer's transform is kept (the set has none). */
  cr_assert_eq(mdl_data_for_layer(l, &plain, 1, &ld, &err), MDL_OK, "%s", err.msg);
  cr_assert(ld.replaced);
  cr_assert_eq(ld.set->source->kind_case, MEMDL__SOURCE__KIND_SYNTHETIC);
  cr_assert_eq(ld.set->n_stage, 1);
  cr_assert_float_eq(ld.set->stage[0]->transform->scale, 0.00390625f, 0);
  cr_assert_eq(ld.batch_size, 64);
  mdl_layer_data_clear(&ld);
  /* By layer name: the set's own transform wins. */
  cr_assert_eq(mdl_data_for_layer(l, &scaled, 1, &ld, &err), MDL_OK, "%s", err.msg);
  cr_assert(ld.replaced);
  cr_assert_eq(ld.set->n_stage, 1);
  cr_assert_float_eq(ld.set->stage[0]->transform->scale, 0.5f, 0);
  mdl_layer_data_clear(&ld);
  mdl_pb_free(plain);
  mdl_pb_free(scaled);
  mdl_pb_free(l);
}

Test(caffe, image_memory_hdf5_and_not_pipeline_layers) {
  Caffe__LayerParameter *l = layer(
      "name: \"img\" type: \"ImageData\" top: \"data\" top: \"label\" "
      "image_data_param { source: \"list.txt\" root_folder: \"r/\" new_height: 32 new_width: 30 "
      "is_color: false shuffle: true batch_size: 8 crop_size: 28 mirror: true }");
  mdl_layer_data ld;
  mdl_error err = {0};
  cr_assert_eq(mdl_data_for_layer(l, NULL, 0, &ld, &err), MDL_OK, "%s", err.msg);
  const Memdl__ImageListSource *il = ld.set->source->image_list;
  cr_assert_str_eq(il->list, "list.txt");
  cr_assert_str_eq(il->root, "r/");
  cr_assert_eq(il->new_height, 32);
  cr_assert_eq(il->new_width, 30);
  cr_assert(!il->is_color);
  cr_assert(ld.shuffle);
  cr_assert_eq(ld.batch_size, 8);
  /* Legacy per-layer crop/mirror fold into the transform stage. */
  cr_assert_eq(ld.set->stage[0]->transform->crop_size, 28);
  cr_assert(ld.set->stage[0]->transform->mirror);
  mdl_layer_data_clear(&ld);
  mdl_pb_free(l);

  l = layer(
      "name: \"mem\" type: \"MemoryData\" top: \"data\" top: \"label\" "
      "memory_data_param { batch_size: 4 channels: 2 height: 3 width: 5 }");
  cr_assert_eq(mdl_data_for_layer(l, NULL, 0, &ld, &err), MDL_OK, "%s", err.msg);
  mdl_data_info info;
  cr_assert_eq(mdl_data_probe(ld.set, NULL, &info, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(info.channels, 2);
  cr_assert_eq(info.width, 5);
  cr_assert_eq(info.records, 0);
  cr_assert(strstr(tu_build_fails(ld.set, NULL, MDL_ERR_INVALID), "job data set"));
  mdl_layer_data_clear(&ld);
  mdl_pb_free(l);

  /* HDF5Data reads the datasets its two tops name (dataset_hdf5_test.c
   * reads real files). */
  l = layer(
      "name: \"h\" type: \"HDF5Data\" top: \"X\" top: \"y\" hdf5_data_param { source: "
      "\"h.txt\" batch_size: 2 shuffle: true }");
  cr_assert_eq(mdl_data_for_layer(l, NULL, 0, &ld, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(ld.batch_size, 2);
  cr_assert(ld.shuffle);
  cr_assert_eq(ld.set->source->kind_case, MEMDL__SOURCE__KIND_HDF5);
  cr_assert_str_eq(ld.set->source->hdf5->source, "h.txt");
  cr_assert_str_eq(ld.set->source->hdf5->data, "X");
  cr_assert_str_eq(ld.set->source->hdf5->label, "y");
  cr_assert_eq(mdl_data_probe(ld.set, NULL, &info, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "h.txt"), "%s", err.msg);
  mdl_layer_data_clear(&ld);
  mdl_pb_free(l);

  l = layer("name: \"in\" type: \"Input\" top: \"data\"");
  cr_assert(!mdl_data_is_pipeline_layer(l));
  cr_assert_eq(mdl_data_for_layer(l, NULL, 0, &ld, &err), MDL_ERR_INVALID);
  cr_assert_null(ld.set);
  mdl_pb_free(l);
}

/* An LMDB as convert_mnist_data writes it, read through a Data layer. */
Test(caffe, caffe_lmdb_round_trips_through_a_data_layer) {
  char *dir = tu_tmpdir();
  enum { N = 20, H = 28, W = 28 };
  uint8_t *vals[N];
  size_t lens[N];
  uint8_t *px = malloc(N * H * W);
  for (int r = 0; r < N; r++) {
    for (int i = 0; i < H * W; i++) px[r * H * W + i] = (uint8_t)(r + i);
    tu_datum_raw(1, H, W, px + r * H * W, r % 10, &vals[r], &lens[r]);
  }
  char *db = tu_path(dir, "mnist_train_lmdb");
  tu_write_lmdb(db, N, vals, lens);
  for (int r = 0; r < N; r++) free(vals[r]);
  Caffe__LayerParameter *l = layer(
      "name: \"mnist\" type: \"Data\" top: \"data\" top: \"label\" "
      "transform_param { scale: 0.00390625 } "
      "data_param { source: \"mnist_train_lmdb\" batch_size: 5 backend: LMDB }");
  mdl_layer_data ld;
  mdl_error err = {0};
  cr_assert_eq(mdl_data_for_layer(l, NULL, 0, &ld, &err), MDL_OK, "%s", err.msg);
  mdl_dataset *d = tu_build(ld.set, dir, 2);
  cr_assert_eq(d->n, N);
  cr_assert_eq(d->num_classes, 10);
  mdl_partition *parts[2] = {d->part[0], d->part[1]};
  mdl_batch_opts o = {.batch_size = 5, .train = false, .shuffle = false};
  mdl_batcher *b = NULL;
  cr_assert_eq(mdl_batcher_new(parts, 2, d->transform, &o, &b, &err), MDL_OK, "%s", err.msg);
  float out[5 * H * W], lab[5];
  cr_assert_eq(mdl_batcher_next(b, out, lab, &err), MDL_OK);
  /* Partition 0 holds the even records in order. */
  for (int i = 0; i < 5; i++) {
    int r = 2 * i;
    cr_assert_float_eq(lab[i], (float)(r % 10), 0);
    for (int k = 0; k < H * W; k += 97)
      cr_assert_float_eq(out[i * H * W + k], px[r * H * W + k] * 0.00390625f, 1e-7);
  }
  mdl_batcher_free(b);
  mdl_dataset_free(d);
  mdl_layer_data_clear(&ld);
  mdl_pb_free(l);
  free(px);
  free(db);
  tu_rm_rf(dir);
  free(dir);
}
