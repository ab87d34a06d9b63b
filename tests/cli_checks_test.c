/* Nothing silently wrong (issue 9), through the built binary: a diverged
 * run stops, non-finite weights are refused, labels out of range are caught
 * at compile time where the classes are known and at run time where they
 * are not, and `check` rejects what `run` would. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    cr_assert(strstr(r.err, "layer \"loss\" (SoftmaxWithLoss): predicts 2 classes"), "%s", r.err);
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

/* check catches what run would reject, and all of it at once. */
Test(cli_checks, check_reports_every_solver_error) {
  mdl_run_result r = RUN("check", FASHION, "--set", "max_iter=-5", "--set", "lr_policy=\"stepp\"",
                         "--set", "type=\"Adamm\"");
  cr_assert_eq(r.exit_code, 2, "%s%s", r.out, r.err);
  cr_assert(strstr(r.err, "lr_policy \"stepp\" is unknown; did you mean \"step\"?"), "%s", r.err);
  cr_assert(strstr(r.err, "solver type \"Adamm\" is unknown; did you mean \"Adam\"?"), "%s", r.err);
  cr_assert(strstr(r.err, "max_iter must be >= 0, got -5"), "%s", r.err);
  cr_assert(strstr(r.err, "3 errors"), "%s", r.err);
  cr_assert(!strstr(r.out, "ok"), "%s", r.out);
  mdl_run_result_free(&r);
  /* and run refuses max_iter -5 instead of "training" 0..-5 */
  r = RUN("run", FASHION, "--set", "max_iter=-5", "--output", tu_dir_path("neg"));
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  cr_assert(strstr(r.err, "max_iter must be >= 0"), "%s", r.err);
  mdl_run_result_free(&r);
}

Test(cli_checks, check_unknown_type_typo_source_unused_set_empty_file) {
  size_t len;
  char *net = tu_read("jobs/fashion_mnist/lenet_train_test.prototxt", &len);
  char *relu = strstr(net, "\"ReLU\"");
  cr_assert(relu);
  memcpy(relu, "\"Relu\"", 6);
  char *src = strstr(net, "\"fashion_mnist_train\"");
  cr_assert(src);
  memcpy(src, "\"fashion_mnist_trian\"", 21);
  tu_dir_write("net.prototxt", net);
  int relu_line = 1;
  for (char *p = net; p < relu; p++) relu_line += *p == '\n';
  free(net);
  char cwd[512], text[2048];
  cr_assert(getcwd(cwd, sizeof cwd));
  snprintf(text, sizeof text,
           "name: \"fm\"\nnet: \"net.prototxt\"\n"
           "solver: \"%s/jobs/fashion_mnist/lenet_solver.prototxt\"\n"
           "data { name: \"fashion_mnist_train\" source { idx {\n"
           "  images: \"/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz\"\n"
           "  labels: \"/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz\" } } }\n"
           "data { name: \"fashion_mnist_test\" source { idx {\n"
           "  images: \"/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz\"\n"
           "  labels: \"/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz\" } } }\n",
           cwd);
  const char *path = tu_dir_write("job.prototxt", text);
  mdl_run_result r = RUN("check", path);
  cr_assert_eq(r.exit_code, 2, "%s%s", r.out, r.err);
  char want[600];
  snprintf(want, sizeof want,
           "net.prototxt:%d:3: layer \"relu1\": unknown type \"Relu\"; did you "
           "mean \"ReLU\"?",
           relu_line);
  cr_assert(strstr(r.err, want), "want %s in %s", want, r.err);
  cr_assert(strstr(r.err, "source \"fashion_mnist_trian\" matches none of the job's data sets"),
            "%s", r.err);
  cr_assert(strstr(r.err, "did you mean \"fashion_mnist_train\"?"), "%s", r.err);
  cr_assert(strstr(r.err, "warning: ") && strstr(r.err, "\"fashion_mnist_train\" is read by no"),
            "%s", r.err);
  mdl_run_result_free(&r);

  r = RUN("check", "/dev/null");
  cr_assert_eq(r.exit_code, 2, "%s%s", r.out, r.err);
  cr_assert(!strstr(r.out, "ok"), "%s", r.out);
  cr_assert(strstr(r.err, "empty"), "%s", r.err);
  mdl_run_result_free(&r);
}

/* Two splits that share records warn; --strict makes it an error; a split
 * and its rest are fine. */
Test(cli_checks, overlapping_splits_warn_and_fail_strict) {
  tu_dir_write("net.prototxt", NET);
  const char *base =
      "name: \"labels\"\nnet: \"net.prototxt\"\n"
      "solver_param { base_lr: 0.01 lr_policy: \"fixed\" max_iter: 20 test_iter: 1 "
      "test_interval: 10 random_seed: 1 snapshot: 0 }\n"
      "data { name: \"all\" source { synthetic { shape: [1, 4, 4] classes: 2 records: 60 } } }\n"
      "data { name: \"train\" from: \"all\" stage { split { fraction: 0.8 } } }\n"
      "data { name: \"test\" from: \"all\" stage { split { fraction: %s } } }\n";
  char text[2048];
  snprintf(text, sizeof text, base, "0.2");
  const char *bad = tu_dir_write("bad.prototxt", text);
  snprintf(text, sizeof text, base, "0.8 rest: true");
  const char *good = tu_dir_write("good.prototxt", text);
  mdl_run_result r = RUN("check", bad);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.err, "warning: ") && strstr(r.err, "can share records"), "%s", r.err);
  mdl_run_result_free(&r);
  r = RUN("check", "--strict", bad);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  cr_assert(strstr(r.err, "error (--strict): ") && strstr(r.err, "can share records"), "%s", r.err);
  mdl_run_result_free(&r);
  r = RUN("check", "--strict", good);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(!strstr(r.err, "share records"), "%s", r.err);
  mdl_run_result_free(&r);
}

/* Options as users type them: typos, --opt=value, Caffe's flags. */
Test(cli_checks, options_typos_equals_and_caffe_flags) {
  mdl_run_result r = RUN("run", FASHION, "--thread", "2");
  cr_assert_eq(r.exit_code, 2);
  cr_assert(strstr(r.err, "unknown option --thread; did you mean --threads?"), "%s", r.err);
  cr_assert(strstr(r.err, "usage: memdl run"), "%s", r.err);
  cr_assert(strstr(r.err, "`memdl run --help` says more"), "%s", r.err);
  int lines = 0;
  for (const char *p = r.err; *p; p++) lines += *p == '\n';
  cr_assert(lines < 10, "a short usage, not the whole help: %s", r.err);
  mdl_run_result_free(&r);

  r = RUN("compile", FASHION, "--phase=test", "--shapes");
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.out, "TEST "), "%s", r.out);
  cr_assert(!strstr(r.out, "TRAIN "), "%s", r.out);
  mdl_run_result_free(&r);

  r = RUN("time", "-model", FASHION, "-iterations", "1", "--threads=1");
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.err, "-iterations is Caffe's flag; memdl's is --iterations"), "%s", r.err);
  cr_assert(strstr(r.out, "\"iteration_ms\""), "%s", r.out);
  mdl_run_result_free(&r);

  /* Caffe's -gpu N is --device cuda:N (the CUDA plugin's), said so: it runs
   * there, or stops saying why that GPU is not usable; never silently on
   * the CPU */
  r = RUN("time", "-model", FASHION, "-iterations", "1", "-gpu", "0", "--threads=1");
  cr_assert(
      strstr(r.err, "-gpu is Caffe's flag; memdl's is --device cuda:N (here --device cuda:0)"),
      "%s", r.err);
  cr_assert(!strstr(r.err, "no GPU backend"), "%s", r.err);
  if (r.exit_code == 0)
    cr_assert(strstr(r.out, "\"iteration_ms\""), "%s", r.out);
  else
    cr_assert(r.exit_code == 2 && strstr(r.err, "device cuda:0: "), "%d %s", r.exit_code, r.err);
  mdl_run_result_free(&r);
  r = RUN("time", "-model", FASHION, "-iterations", "1", "-gpu", "0,1", "--threads=1");
  cr_assert(strstr(r.err, "(here --device cuda:0; one GPU per process"), "%s", r.err);
  mdl_run_result_free(&r);

  r = RUN("tset");
  cr_assert_eq(r.exit_code, 2);
  cr_assert(strstr(r.err, "did you mean \"test\"?"), "%s", r.err);
  mdl_run_result_free(&r);
}

/* A test pass longer than the test set says so and reports the samples. */
Test(cli_checks, test_pass_longer_than_the_set_says_so) {
  tu_dir_write("train.csv", "1,2,0\n3,4,1\n5,6,1\n7,8,0\n");
  tu_dir_write("test.csv", "1,2,0\n3,4,1\n5,6,0\n");
  const char *job = write_job("job.prototxt",
                              "data { name: \"train\" source { csv { path: \"train.csv\" } } }\n"
                              "data { name: \"test\" source { csv { path: \"test.csv\" } } }\n");
  mdl_run_result r = RUN("run", job, "--set", "test_iter=3", "--set", "max_iter=1");
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.err,
                   "3 iterations x batch 2 = 6 samples, but data set \"test\" has 3 "
                   "records: 3 are counted twice"),
            "%s", r.err);
  cr_assert(strstr(r.err, "(6 samples"), "%s", r.err);
  mdl_run_result_free(&r);
}

/* A deploy net (no loss) is timed backward too, as caffe time does. */
Test(cli_checks, time_deploy_net_times_backward) {
  const char *net =
      tu_dir_write("deploy.prototxt",
                   "name: \"tiny\"\n"
                   "layer { name: \"data\" type: \"Input\" top: \"data\"\n"
                   "        input_param { shape { dim: 8 dim: 1 dim: 28 dim: 28 } } }\n"
                   "layer { name: \"conv1\" type: \"Convolution\" bottom: \"data\" top: \"conv1\"\n"
                   "        convolution_param { num_output: 20 kernel_size: 5 } }\n"
                   "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"conv1\" top: \"ip\"\n"
                   "        inner_product_param { num_output: 10 } }\n"
                   "layer { name: \"prob\" type: \"Softmax\" bottom: \"ip\" top: \"prob\" }\n");
  mdl_run_result r = RUN("time", net, "--iterations", "2", "--threads", "1");
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  char line[1024];
  mdl_last_line(r.out, line, sizeof line);
  const char *b = strstr(line, "\"backward_ms\": ");
  cr_assert(b && strtod(b + 15, NULL) > 0, "%s", line);
  const char *conv = strstr(r.out, "conv1");
  cr_assert(conv && !strstr(conv, "Convolution             -"), "%s", r.out);
  mdl_run_result_free(&r);
}

/* README's synopsis of test, time and worker names every option their
 * --help synopsis does. */
Test(cli_checks, readme_and_help_agree) {
  size_t len;
  char *readme = tu_read("README.md", &len);
  const char *cmds[] = {"test", "time", "worker", "run", "check"};
  for (size_t c = 0; c < sizeof cmds / sizeof *cmds; c++) {
    char head[64];
    snprintf(head, sizeof head, "### memdl %s ", cmds[c]);
    const char *h = strstr(readme, head);
    cr_assert(h, "README has no %s", head);
    const char *eol = strchr(h, '\n');
    mdl_run_result r = RUN(cmds[c], "--help");
    cr_assert_eq(r.exit_code, 0);
    const char *end = strstr(r.out, "\n\n");
    for (const char *p = r.out; (p = strstr(p, "--")) && p < end;) {
      size_t n = 2;
      while (p[n] == '-' || (p[n] >= 'a' && p[n] <= 'z')) n++;
      char opt[64];
      snprintf(opt, sizeof opt, "%.*s", (int)n, p);
      const char *in = strstr(h, opt);
      cr_assert(in && in < eol, "README's `memdl %s` lacks %s", cmds[c], opt);
      p += n;
    }
    mdl_run_result_free(&r);
  }
  free(readme);
}

/* scripts/setup.sh keeps stdout clean when it installs (apt's chatter goes
 * to stderr): fake dpkg-query says everything is missing, fake apt-get and
 * sudo print to stdout. */
Test(cli_checks, setup_script_is_quiet_on_stdout) {
  const char *bin = tu_dir_path("bin");
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "mkdir -p %s && printf '#!/bin/sh\\nexit 1\\n' > %s/dpkg-query && "
           "printf '#!/bin/sh\\necho apt-get says $*\\n' > %s/apt-get && "
           "printf '#!/bin/sh\\necho sudo; exec \"$@\"\\n' > %s/sudo && chmod +x %s/*",
           bin, bin, bin, bin, bin);
  cr_assert_eq(system(cmd), 0);
  snprintf(cmd, sizeof cmd, "PATH=%s:$PATH bash scripts/setup.sh > %s/out 2> %s/err", bin, tu_dir,
           tu_dir);
  cr_assert_eq(system(cmd), 0);
  size_t n;
  char *out = tu_read(tu_dir_path("out"), &n);
  char *err = tu_read(tu_dir_path("err"), &n);
  cr_assert_str_eq(out, "", "stdout: %s", out);
  cr_assert(strstr(err, "apt-get says"), "%s", err);
  free(out);
  free(err);
}
