/* Nothing silently wrong (issue 9), through the built binary: a diverged
 * run stops, non-finite weights are refused, labels out of range are caught
 * at compile time where the classes are known and at run time where they
 * are not, and `check` rejects what `run` would. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caffe.pb-c.h"
#include "tests/clitest.h"
#include "tests/testutil.h"

#define RUN(...) mdl_run_memdl((const char *const[]){__VA_ARGS__, NULL}, 120)

static const char FASHION[] = "jobs/fashion_mnist/job.prototxt";

TestSuite(cli_checks, .init = tu_dir_setup, .fini = tu_dir_teardown);

/* Two classes predicted; the data sets decide how many labels there are. */
static const char NET[] =
    "name: \"small\"\n"
    "layer { name: \"data\" type: \"Data\" top: \"data\" top: \"label\" include { phase: TRAIN }\n"
    "  data_param { source: \"train\" batch_size: 2 } }\n"
    "layer { name: \"data\" type: \"Data\" top: \"data\" top: \"label\" include { phase: TEST }\n"
    "  data_param { source: \"test\" batch_size: 2 } }\n"
    "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"data\" top: \"ip\"\n"
    "  inner_product_param { num_output: 2 weight_filler { type: \"xavier\" } } }\n"
    "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"ip\" bottom: \"label\" top: "
    "\"loss\" }\n"
    "layer { name: \"accuracy\" type: \"Accuracy\" bottom: \"ip\" bottom: \"label\" top: "
    "\"accuracy\" include { phase: TEST } }\n";

static const char SOLVER[] =
    "solver_param { base_lr: 0.01 lr_policy: \"fixed\" max_iter: 20 test_iter: 1\n"
    "  test_interval: 10 random_seed: 1 snapshot: 0 }\n"
    "output { dir: \"out\" }\n";

static const char *write_job(const char *name, const char *data) {
  tu_dir_write("net.prototxt", NET);
  char text[4096];
  snprintf(text, sizeof text, "name: \"labels\"\nnet: \"net.prototxt\"\n%s%s", SOLVER, data);
  return tu_dir_write(name, text);
}

Test(cli_checks, labels_beyond_num_output_fail_compile_and_check) {
  const char *job = write_job(
      "job.prototxt",
      "data { name: \"train\" source { synthetic { shape: [1, 4, 4] classes: 3 records: 60 } }\n"
      "  stage { clean { num_classes: 3 } } }\n"
      "data { name: \"test\" source { synthetic { shape: [1, 4, 4] classes: 3 records: 30 } }\n"
      "  stage { clean { num_classes: 3 } } }\n");
  const char *cmds[] = {"compile", "check"};
  for (int i = 0; i < 2; i++) {
    mdl_run_result r = RUN(cmds[i], job);
    cr_assert_eq(r.exit_code, 2, "%s: %s%s", cmds[i], r.out, r.err);
    cr_assert(strstr(r.err, "layer \"loss\" (SoftmaxWithLoss): predicts 2 classes"), "%s",
              r.err);
    cr_assert(strstr(r.err, "has 3 classes"), "%s", r.err);
    mdl_run_result_free(&r);
  }
}

Test(cli_checks, label_out_of_range_at_run_time_names_layer_label_record) {
  /* CSV headers do not tell the classes: only running finds label 2. */
  tu_dir_write("train.csv", "1,2,0\n3,4,1\n5,6,2\n7,8,1\n");
  tu_dir_write("test.csv", "1,2,0\n3,4,1\n");
  const char *job = write_job("job.prototxt",
                              "data { name: \"train\" source { csv { path: \"train.csv\" } } }\n"
                              "data { name: \"test\" source { csv { path: \"test.csv\" } } }\n");
  mdl_run_result r = RUN("run", job);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  cr_assert(strstr(r.err, "layer \"loss\" (SoftmaxWithLoss)"), "%s", r.err);
  cr_assert(strstr(r.err, "label 2 is out of range"), "%s", r.err);
  cr_assert(strstr(r.err, "record 2 of data set \"train\""), "%s", r.err);
  cr_assert(!strstr(r.err, "done:"), "%s", r.err);
  mdl_run_result_free(&r);
}

Test(cli_checks, diverged_run_stops_and_never_passes) {
  const char *out = tu_dir_path("div");
  mdl_run_result r = RUN("run", FASHION, "--set", "base_lr=1000", "--set", "max_iter=60",
                         "--output", out, "--threads", "2");
  cr_assert_eq(r.exit_code, 1, "%s", r.err);
  cr_assert(strstr(r.err, "training diverged at iteration"), "%s", r.err);
  cr_assert(strstr(r.err, "first non-finite value"), "%s", r.err);
  cr_assert(!strstr(r.err, "acceptance met"), "%s", r.err);
  mdl_run_result_free(&r);
}

/* A .caffemodel with NaN weights for layer "ip". */
static const char *nan_caffemodel(void) {
  float w[4] = {NAN, 1, 2, 3}, b[2] = {0, 0};
  int64_t wd[2] = {2, 2}, bd[1] = {2};
  Caffe__BlobShape ws = CAFFE__BLOB_SHAPE__INIT, bs = CAFFE__BLOB_SHAPE__INIT;
  ws.n_dim = 2, ws.dim = wd;
  bs.n_dim = 1, bs.dim = bd;
  Caffe__BlobProto wb = CAFFE__BLOB_PROTO__INIT, bb = CAFFE__BLOB_PROTO__INIT;
  wb.shape = &ws, wb.n_data = 4, wb.data = w;
  bb.shape = &bs, bb.n_data = 2, bb.data = b;
  Caffe__BlobProto *blobs[2] = {&wb, &bb};
  Caffe__LayerParameter lp = CAFFE__LAYER_PARAMETER__INIT;
  lp.name = "ip";
  lp.type = "InnerProduct";
  lp.n_blobs = 2, lp.blobs = blobs;
  Caffe__LayerParameter *layers[1] = {&lp};
  Caffe__NetParameter np = CAFFE__NET_PARAMETER__INIT;
  np.n_layer = 1, np.layer = layers;
  size_t n = caffe__net_parameter__get_packed_size(&np);
  uint8_t *buf = malloc(n);
  caffe__net_parameter__pack(&np, buf);
  const char *path = tu_dir_path("nan.caffemodel");
  tu_write(path, buf, n);
  free(buf);
  return path;
}

Test(cli_checks, test_refuses_nonfinite_weights) {
  tu_dir_write("test.csv", "1,2,0\n3,4,1\n");
  tu_dir_write("train.csv", "1,2,0\n3,4,1\n");
  const char *job = write_job("job.prototxt",
                              "data { name: \"train\" source { csv { path: \"train.csv\" } } }\n"
                              "data { name: \"test\" source { csv { path: \"test.csv\" } } }\n");
  const char *w = nan_caffemodel();
  mdl_run_result r = RUN("test", job, "--weights", w);
  cr_assert_eq(r.exit_code, 2, "%s%s", r.out, r.err);
  cr_assert(strstr(r.err, "non-finite weights: layer \"ip\" learnable blob 0"), "%s", r.err);
  cr_assert(!strstr(r.out, "accuracy"), "%s", r.out);
  mdl_run_result_free(&r);
  r = RUN("run", job, "--weights", w);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  cr_assert(strstr(r.err, "non-finite weights"), "%s", r.err);
  mdl_run_result_free(&r);
}
