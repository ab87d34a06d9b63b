/* The memdl command as a user meets it: help, version, exit codes, and
 * check/compile on files written by the test. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/clitest.h"
#include "tests/testutil.h"

#define RUN(...) mdl_run_memdl((const char *const[]){__VA_ARGS__, NULL}, 60)

TestSuite(cli, .init = tu_dir_setup, .fini = tu_dir_teardown);

static const char NET[] =
    "name: \"tiny\"\n"
    "layer { name: \"data\" type: \"Input\" top: \"data\"\n"
    "        input_param { shape { dim: 8 dim: 1 dim: 28 dim: 28 } } }\n"
    "layer { name: \"conv1\" type: \"Convolution\" bottom: \"data\" top: \"conv1\"\n"
    "        convolution_param { num_output: 20 kernel_size: 5 } }\n"
    "layer { name: \"pool1\" type: \"Pooling\" bottom: \"conv1\" top: \"pool1\"\n"
    "        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
    "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"pool1\" top: \"ip\"\n"
    "        inner_product_param { num_output: 10 } }\n";

Test(cli, help_version_and_usage_errors) {
  mdl_run_result r = RUN("--help");
  cr_assert_eq(r.exit_code, 0);
  cr_assert(strstr(r.out, "usage: memdl COMMAND"), "%s", r.out);
  cr_assert(strstr(r.out, "compile"));
  mdl_run_result_free(&r);

  r = RUN("--version");
  cr_assert_eq(r.exit_code, 0);
  cr_assert(strncmp(r.out, "memdl ", 6) == 0, "%s", r.out);
  mdl_run_result_free(&r);

  r = RUN("frobnicate");
  cr_assert_eq(r.exit_code, 2);
  cr_assert(strstr(r.err, "unknown command \"frobnicate\""), "%s", r.err);
  mdl_run_result_free(&r);

  r = RUN("check", "--help");
  cr_assert_eq(r.exit_code, 0);
  cr_assert(strstr(r.out, "usage: memdl check"), "%s", r.out);
  mdl_run_result_free(&r);

  r = RUN("check");
  cr_assert_eq(r.exit_code, 2, "no file is a usage error");
  mdl_run_result_free(&r);

  r = RUN("compile", "--bogus");
  cr_assert_eq(r.exit_code, 2);
  cr_assert(strstr(r.err, "--bogus"), "%s", r.err);
  mdl_run_result_free(&r);
}

Test(cli, check_reports_each_file) {
  const char *good = tu_dir_write("good.prototxt", NET);
  const char *bad =
      tu_dir_write("bad.prototxt", "name: \"x\"\nlayer {\n  name: \"a\"\n  typo: 1\n}\n");
  mdl_run_result r = RUN("check", good);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.out, "good.prototxt: ok (net)"), "%s", r.out);
  mdl_run_result_free(&r);

  r = RUN("check", good, bad);
  cr_assert_eq(r.exit_code, 2);
  cr_assert(strstr(r.out, "good.prototxt: ok"), "valid files are still reported: %s", r.out);
  char want[300];
  snprintf(want, sizeof want, "%s:4:3:", bad);
  cr_assert(strstr(r.err, want), "want %s in: %s", want, r.err);
  cr_assert(strstr(r.err, "typo"), "%s", r.err);
  mdl_run_result_free(&r);

  r = RUN("check", "--as", "solver", good);
  cr_assert_eq(r.exit_code, 2, "a net read as a solver has unknown fields: %s", r.out);
  mdl_run_result_free(&r);

  const char *unknown =
      tu_dir_write("unknown.prototxt", "layer { name: \"l\" type: \"Convolutoin\" top: \"t\" }\n");
  r = RUN("check", unknown);
  cr_assert_eq(r.exit_code, 2);
  cr_assert(strstr(r.err, "Convolutoin"), "%s", r.err);
  mdl_run_result_free(&r);
}

Test(cli, compile_prints_shapes) {
  const char *net = tu_dir_write("net.prototxt", NET);
  mdl_run_result r = RUN("compile", net, "--shapes", "--phase", "test");
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.out, "TEST data 8x1x28x28\n"), "%s", r.out);
  cr_assert(strstr(r.out, "TEST conv1 8x20x24x24\n"), "%s", r.out);
  cr_assert(strstr(r.out, "TEST pool1 8x20x12x12\n"), "%s", r.out);
  cr_assert(strstr(r.out, "TEST ip 8x10\n"), "%s", r.out);
  cr_assert_null(strstr(r.out, "TRAIN"), "--phase test prints only TEST");
  mdl_run_result_free(&r);

  r = RUN("compile", net);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.out, "TRAIN net 0: 4 layers"), "%s", r.out);
  mdl_run_result_free(&r);
}

Test(cli, compile_shape_error_names_layer_and_shapes) {
  const char *net =
      tu_dir_write("mismatch.prototxt",
                   "layer { name: \"a\" type: \"Input\" top: \"a\"\n"
                   "  input_param { shape { dim: 2 dim: 3 } } }\n"
                   "layer { name: \"b\" type: \"Input\" top: \"b\"\n"
                   "  input_param { shape { dim: 2 dim: 4 } } }\n"
                   "layer { name: \"sum\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\"\n"
                   "  top: \"s\" }\n");
  mdl_run_result r = RUN("compile", net, "--shapes");
  cr_assert_eq(r.exit_code, 2);
  cr_assert(strstr(r.err, "sum"), "%s", r.err);
  cr_assert(strstr(r.err, "2x3"), "%s", r.err);
  cr_assert(strstr(r.err, "2x4"), "%s", r.err);
  cr_assert_str_eq(r.out, "", "nothing on stdout on failure");
  mdl_run_result_free(&r);
}

Test(cli, compile_phase_and_stage_select_nets) {
  /* the TEST net is invalid without the stage: its data layer needs one */
  const char *net = tu_dir_write("staged.prototxt",
                                 "layer { name: 'd' type: 'Input' top: 'x'\n"
                                 "  include { phase: TRAIN }\n"
                                 "  input_param { shape { dim: 4 dim: 3 } } }\n"
                                 "layer { name: 'dt' type: 'Input' top: 'x'\n"
                                 "  include { phase: TEST stage: 'val' }\n"
                                 "  input_param { shape { dim: 2 dim: 3 } } }\n"
                                 "layer { name: 'r' type: 'ReLU' bottom: 'x' top: 'y' }\n");
  mdl_run_result r = RUN("compile", net, "--shapes", "--phase", "train");
  cr_assert_eq(r.exit_code, 0, "the TRAIN net alone is valid: %s", r.err);
  cr_assert(strstr(r.out, "TRAIN y 4x3\n"), "%s", r.out);
  mdl_run_result_free(&r);

  r = RUN("compile", net, "--shapes");
  cr_assert_eq(r.exit_code, 2, "the TEST net has no producer of x without the stage");
  cr_assert(strstr(r.err, "TEST net"), "%s", r.err);
  mdl_run_result_free(&r);

  r = RUN("compile", net, "--shapes", "--stage", "val");
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.out, "TEST y 2x3\n"), "%s", r.out);
  mdl_run_result_free(&r);
}

Test(cli, check_warns_about_layers_it_cannot_run) {
  const char *net = tu_dir_write("py.prototxt",
                                 "layer { name: 'in' type: 'Input' top: 'x'\n"
                                 "  input_param { shape { dim: 1 } } }\n"
                                 "layer { name: 'py' type: 'Python' bottom: 'x' top: 'y'\n"
                                 "  python_param { module: 'm' layer: 'L' } }\n");
  mdl_run_result r = RUN("check", net);
  cr_assert_eq(r.exit_code, 0, "valid Caffe passes check: %s", r.err);
  cr_assert(strstr(r.err,
                   "warning: layer \"py\" (Python) is valid Caffe but no memdl backend "
                   "runs it: it runs user Python code"),
            "%s", r.err);
  mdl_run_result_free(&r);
}

/* Every Caffe type but Python and WindowData runs: check is quiet about the
 * layers of issue 16 and names the two that remain, with why. */
Test(cli, check_names_only_python_and_window_data) {
  const char *net =
      tu_dir_write("all.prototxt",
                   "layer { name: 'in' type: 'Input' top: 'x' top: 'c'\n"
                   "  input_param { shape { dim: 3 dim: 2 dim: 4 } shape { dim: 3 dim: 2 } } }\n"
                   "layer { name: 'lstm' type: 'LSTM' bottom: 'x' bottom: 'c' top: 'h'\n"
                   "  recurrent_param { num_output: 5 } }\n"
                   "layer { name: 'rnn' type: 'RNN' bottom: 'x' bottom: 'c' top: 'o'\n"
                   "  recurrent_param { num_output: 5 } }\n"
                   "layer { name: 'sw' type: 'Swish' bottom: 'h' top: 's' }\n"
                   "layer { name: 'win' type: 'WindowData' top: 'd' top: 'l'\n"
                   "  window_data_param { source: 'w.txt' batch_size: 1 } }\n");
  mdl_run_result r = RUN("check", net);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.err,
                   "layer \"win\" (WindowData) is valid Caffe but no memdl backend runs "
                   "it: R-CNN window files"),
            "%s", r.err);
  cr_assert_not(strstr(r.err, "\"lstm\""), "%s", r.err);
  cr_assert_not(strstr(r.err, "\"rnn\""), "%s", r.err);
  cr_assert_not(strstr(r.err, "\"sw\""), "%s", r.err);
  mdl_run_result_free(&r);
}
