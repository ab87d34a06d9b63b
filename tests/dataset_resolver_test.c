/* mdl_data_source_info as the compiler calls it: a data layer's per-record
 * shape (after crop), record count and classes, from headers only. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/pb.h"
#include "compiler/textformat.h"
#include "runtime/data/dataset_resolver.h"

static void *parse(const char *text, const ProtobufCMessageDescriptor *d) {
  ProtobufCMessage *m = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_text_parse(text, strlen(text), "t", d, &m, &err), MDL_OK, "%s", err.msg);
  return m;
}

Test(resolver, data_layer_shape_from_job_data_set) {
  Caffe__LayerParameter *l = parse(
      "name: \"data\" type: \"Data\" top: \"data\" top: \"label\" transform_param { crop_size: 24 "
      "} data_param { source: \"train_lmdb\" batch_size: 32 backend: LMDB }",
      &caffe__layer_parameter__descriptor);
  Memdl__DataSet *set = parse(
      "name: \"train_lmdb\" source { synthetic { shape: [3, 32, 32] "
      "classes: 7 records: 900 } } stage { split { fraction: 0.5 } }",
      &memdl__data_set__descriptor);
  mdl_data_catalog cat = {.sets = &set, .n_sets = 1};
  mdl_source_info info;
  mdl_error err = {0};
  mdl_source_resolver fn = mdl_data_source_info; /* the compiler's signature */
  cr_assert_eq(fn(&cat, l, &info, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(info.record.n, 3);
  cr_assert_eq(info.record.d[0], 3);
  cr_assert_eq(info.record.d[1], 24);
  cr_assert_eq(info.record.d[2], 24);
  cr_assert_eq(info.num_records, 450);
  cr_assert_eq(info.num_classes, 7);
  /* Without the job's set, the LMDB it names is missing: the error says so. */
  cat.n_sets = 0;
  cr_assert_eq(fn(&cat, l, &info, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "layer \"data\""), "%s", err.msg);
  cr_assert(strstr(err.msg, "train_lmdb"), "%s", err.msg);
  mdl_pb_free(set);
  mdl_pb_free(l);
}
