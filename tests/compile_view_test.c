/* memdl compile's views of a plan from the command line: --explain's
 * passes, layer table, memory and tuner arithmetic; --json that parses;
 * --dot that Graphviz renders (LeNet and ResNet-50); --workers and
 * --calibrate feeding the tuner, the figures cached where memdl run
 * reuses them. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/clitest.h"
#include "tests/testutil.h"

#define RUN(...) mdl_run_memdl((const char *const[]){__VA_ARGS__, NULL}, 120)
#define JOB "jobs/fashion_mnist/job.prototxt"

TestSuite(compile_view, .init = tu_dir_setup, .fini = tu_dir_teardown);

static bool have(const char *tool) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "command -v %s > /dev/null 2>&1", tool);
  return system(cmd) == 0;
}

static int count(const char *s, const char *what) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
  return n;
}

Test(compile_view, explain_shows_passes_layers_memory_and_the_tuners_arithmetic) {
  mdl_run_result r = RUN("compile", JOB, "--explain", "--workers", "local:2");
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.out, "TRAIN net 0: passes"), "%s", r.out);
  cr_assert(strstr(r.out, "dropped: accuracy"), "the TRAIN net's filter pass: %s", r.out);
  cr_assert(strstr(r.out, "2 Split layers inserted"), "the TEST net's split pass: %s", r.out);
  /* conv2 of LeNet: 64 x 50 x 8 x 8 outputs x 500 weights x 2 FLOPs x 3 */
  cr_assert(strstr(r.out, "conv2            Convolution      64x50x8x8              614.40"), "%s",
            r.out);
  cr_assert(strstr(r.out, "memory (the planner's): activations"), "%s", r.out);
  cr_assert(strstr(r.out, "tuner (assumed figures, 2 workers)"), "%s", r.out);
  cr_assert(strstr(r.out, "tau >= comm (1 - f) / (f iteration)"), "%s", r.out);
  cr_assert(strstr(r.out, "global batch 128"), "two workers of 64: %s", r.out);
  mdl_run_result_free(&r);
}

Test(compile_view, json_parses_and_holds_the_plan) {
  const char *path = tu_dir_path("plan.json");
  mdl_run_result r = RUN("compile", JOB, "--json", path, "--workers", "local:2");
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  mdl_run_result_free(&r);
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f);
  char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  cr_assert(strstr(buf, "\"name\": \"conv2\""), "%s", buf);
  cr_assert(strstr(buf, "\"activations_planned_bytes\": "), "%s", buf);
  cr_assert(strstr(buf, "\"global_batch\": 128"), "%s", buf);
  cr_assert_eq(count(buf, "\"share\": 64"), 2, "%s", buf);
  if (!have("python3")) cr_skip_test("python3 is not installed: JSON not validated");
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "python3 -m json.tool %s > /dev/null", path);
  cr_assert_eq(system(cmd), 0, "memdl compile --json wrote invalid JSON: %s", buf);
}

/* The DAG for LeNet and ResNet-50: every layer a node, edges along blobs,
 * rendered by Graphviz when it is installed. */
Test(compile_view, dot_draws_the_dag_and_graphviz_renders_it) {
  const char *nets[] = {JOB, "tests/nets/resnet50.prototxt"};
  for (int i = 0; i < 2; i++) {
    const char *path = tu_dir_path(i ? "resnet.dot" : "lenet.dot");
    mdl_run_result r = RUN("compile", nets[i], "--dot", path, "--workers", "local:2");
    cr_assert_eq(r.exit_code, 0, "%s", r.err);
    mdl_run_result_free(&r);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    cr_assert(strstr(buf, "digraph plan {"));
    cr_assert(strstr(buf, "worker1 -> batch"), "per-worker blocks feed the batch");
    if (i == 0) {
      cr_assert(strstr(buf, "relu1\\nReLU (in place)\", style=dashed"), "%s", buf);
      cr_assert(strstr(buf, "Split (inserted)\", style=dotted"), "%s", buf);
      cr_assert(strstr(buf, "shape=doubleoctagon"), "the loss is marked");
    } else {
      /* 16 residual blocks: each adds its shortcut, so the convolutions
       * of ResNet-50 (53) all appear */
      cr_assert_geq(count(buf, "Convolution"), 53, "%d", count(buf, "Convolution"));
    }
    if (!have("dot")) continue;
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "dot -Tsvg %s -o %s.svg", path, path);
    cr_assert_eq(system(cmd), 0, "Graphviz refused %s", path);
  }
  if (!have("dot")) cr_skip_test("Graphviz is not installed: the DOT was not rendered");
}

static bool have_data(void) {
  return access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) == 0;
}

/* --calibrate runs the run's own calibration: the figures drive the tuner
 * and land in the output folder, where a second calibration reuses them. */
Test(compile_view, calibrate_measures_the_workers_and_caches_the_figures) {
  if (!have_data()) cr_skip_test("Fashion-MNIST is not installed (dataset-fashion-mnist)");
  mdl_run_result r = RUN("compile", JOB, "--workers", "local:2", "--threads", "1", "--calibrate",
                         "--output", tu_dir);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.err, "calibration: measured"), "%s", r.err);
  cr_assert(strstr(r.out, "calibration: worker 1: "), "%s", r.out);
  cr_assert(strstr(r.out, "tuner (calibrated figures, 2 workers)"), "%s", r.out);
  cr_assert(strstr(r.out, "transfer included"), "%s", r.out);
  mdl_run_result_free(&r);
  cr_assert_eq(access(tu_dir_path("calibration.txt"), R_OK), 0);
  r = RUN("compile", JOB, "--workers", "local:2", "--threads", "1", "--calibrate", "--output",
          tu_dir, "--set", "max_iter=77");
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.err, "calibration: reused"), "max_iter does not change the timing: %s", r.err);
  mdl_run_result_free(&r);
  r = RUN("compile", JOB, "--workers", "local:2", "--threads", "2", "--calibrate", "--output",
          tu_dir);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.err, "calibration: measured"), "other threads, other figures: %s", r.err);
  mdl_run_result_free(&r);
}
