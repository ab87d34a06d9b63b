/* CI retraining end to end through the built binary: bless, skip with
 * --if-changed (fast, with the stored exit code), fingerprint changes, a
 * worse model failing max_drop and leaving BLESSED alone, the GitHub files
 * and annotations, a data check that exits 4 before training, a budget
 * that exits 5 with a snapshot and every report, and the reports checked
 * by real tools (xmllint, rsvg-convert) and libpng. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <png.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/clitest.h"
#include "tests/testutil.h"

TestSuite(ci_run, .init = tu_dir_setup, .fini = tu_dir_teardown, .timeout = 600);

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static bool exists(const char *dir, const char *name) {
  char p[2048];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  return access(p, R_OK) == 0;
}

static char *slurp(const char *dir, const char *name) {
  char p[2048];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  size_t len;
  return tu_read(p, &len);
}

/* A job over the example's net and solver, with our own data, accept and
 * ci blocks. */
static const char *write_job(const char *data, const char *accept, const char *ci) {
  char cwd[1024];
  cr_assert(getcwd(cwd, sizeof cwd));
  char *text = NULL;
  cr_assert(asprintf(&text,
                     "name: \"ci\"\n"
                     "net: \"%s/jobs/fashion_mnist/lenet_train_test.prototxt\"\n"
                     "solver: \"%s/jobs/fashion_mnist/lenet_solver.prototxt\"\n"
                     "%s\n"
                     "# the gates\n"
                     "%s\n"
                     "%s\n",
                     cwd, cwd, data, accept, ci) > 0);
  const char *p = tu_dir_write("job.prototxt", text);
  free(text);
  return p;
}

static const char REAL_DATA[] =
    "data { name: \"fashion_mnist_train\" source { idx {\n"
    "  images: \"/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz\"\n"
    "  labels: \"/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz\" } } }\n"
    "data { name: \"fashion_mnist_test\" source { idx {\n"
    "  images: \"/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz\"\n"
    "  labels: \"/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz\" } } }\n";

/* Non-white pixels of a PNG, and those drawn in the accuracy curve's green. */
static void png_pixels(const char *path, long *ink, long *green) {
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  cr_assert(png_image_begin_read_from_file(&img, path), "%s: %s", path, img.message);
  img.format = PNG_FORMAT_RGB;
  uint8_t *px = malloc(PNG_IMAGE_SIZE(img));
  cr_assert(png_image_finish_read(&img, NULL, px, 0, NULL), "%s", img.message);
  *ink = *green = 0;
  for (size_t i = 0; i < (size_t)img.width * img.height; i++) {
    uint8_t r = px[3 * i], g = px[3 * i + 1], b = px[3 * i + 2];
    if (r < 200 || g < 200 || b < 200) (*ink)++;
    if (g > 120 && r < 90 && b < 90) (*green)++; /* #2ca02c */
  }
  free(px);
}

static void check_reports(const char *out) {
  const char *names[] = {"run.json", "junit.xml", "metrics.txt", "report.md", "curves.svg"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    cr_assert(exists(out, names[i]), "%s/%s", out, names[i]);
  char cmd[4096];
  /* against a JUnit schema (tests/fixtures/junit.xsd, written for these
   * tests: Debian packages none), else for well-formedness */
  const char *xsd = getenv("JUNIT_XSD"); /* another schema to check against */
  if (!xsd) xsd = "tests/fixtures/junit.xsd";
  if (xsd && access(xsd, R_OK) == 0)
    snprintf(cmd, sizeof cmd, "xmllint --noout --schema '%s' '%s/junit.xml' 2>&1", xsd, out);
  else
    snprintf(cmd, sizeof cmd, "xmllint --noout '%s/junit.xml' 2>&1", out);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  char *om = slurp(out, "metrics.txt");
  size_t n = strlen(om);
  cr_assert(n > 6 && !strcmp(om + n - 6, "# EOF\n"), "OpenMetrics ends with # EOF: %s", om);
  free(om);
}

static void check_svg_renders(const char *out) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "rsvg-convert -o '%s/curves.png' '%s/curves.svg'", out, out);
  cr_assert_eq(system(cmd), 0, "rsvg-convert (scripts/setup.sh installs librsvg2-bin): %s", cmd);
  char png[2048];
  snprintf(png, sizeof png, "%s/curves.png", out);
  long ink, green;
  png_pixels(png, &ink, &green);
  cr_assert(ink > 5000, "curves.png is nearly blank: %ld pixels drawn", ink);
  cr_assert(green > 100, "no accuracy curve in curves.png: %ld green pixels", green);
}

static int count(const char *s, const char *what) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
  return n;
}

#define SETS                                                                             \
  "--set", "max_iter=60", "--set", "test_iter=10", "--set", "test_interval=30", "--set", \
      "snapshot=0", "--threads", "2"

Test(ci_run, bless_skip_change_regress) {
  const char *job =
      write_job(REAL_DATA, "accept { metric: \"accuracy\" at_least: 0.05 max_drop: 0.02 }",
                "ci { registry: \"reg\" }");
  const char *out = tu_dir_path("out");
  const char *reg = tu_dir_path("reg");
  /* 1: trains, passes, is blessed (no baseline yet: if_missing PASS) */
  const char *a1[] = {"run", job, SETS, "--output", out, "--bless", NULL};
  mdl_run_result r = mdl_run_memdl(a1, 300);
  cr_assert_eq(r.exit_code, 0, "%s\n%s", r.out, r.err);
  cr_assert(strstr(r.out, "blessed: every gate passed"), "%s", r.out);
  mdl_run_result_free(&r);
  char *blessed = slurp(reg, "BLESSED");
  cr_assert_eq(strlen(blessed), 65, "%s", blessed);
  check_reports(out);
  check_svg_renders(out);

  /* 2: nothing changed: up to date in well under a second, exit 0 */
  const char *a2[] = {"run", job, SETS, "--output", out, "--if-changed", NULL};
  double t0 = now_s();
  r = mdl_run_memdl(a2, 60);
  double took = now_s() - t0;
  cr_assert_eq(r.exit_code, 0, "%s\n%s", r.out, r.err);
  cr_assert(strstr(r.out, "up to date"), "%s", r.out);
  cr_assert(took < 1.0, "the skip took %.2f s", took);
  mdl_run_result_free(&r);

  /* 3: one solver field changes the fingerprint, and it says which */
  const char *f1[] = {"fingerprint", job, SETS, NULL};
  r = mdl_run_memdl(f1, 60);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(!strncmp(r.out, blessed, 64), "same inputs, the blessed fingerprint: %s", r.out);
  cr_assert(strstr(r.out, "same as the blessed run"), "%s", r.out);
  mdl_run_result_free(&r);
  const char *f2[] = {"fingerprint", job, SETS, "--set", "base_lr=0", "--json", NULL};
  r = mdl_run_memdl(f2, 60);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.out, "\"base_lr 0.01 \xe2\x86\x92 0\""), "%s", r.out);
  cr_assert(strstr(r.out, "\"same_as_blessed\": false"), "%s", r.out);
  mdl_run_result_free(&r);
  /* the thread count does not change the bits, so not the fingerprint; the
   * worker count does */
  const char *f3[] = {"fingerprint", job, SETS, "--threads", "1", NULL};
  r = mdl_run_memdl(f3, 60);
  cr_assert(r.exit_code == 0 && !strncmp(r.out, blessed, 64), "--threads 1: %s %s", r.out, r.err);
  mdl_run_result_free(&r);
  const char *f4[] = {"fingerprint", job, SETS, "--workers", "local:2", NULL};
  r = mdl_run_memdl(f4, 60);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strncmp(r.out, blessed, 64) && strstr(r.out, "workers"), "local:2: %s", r.out);
  mdl_run_result_free(&r);

  /* 4: a worse model (it never learns) fails max_drop against the blessed
   * one, re-evaluated on this run's TEST data, and BLESSED stays; under
   * GitHub Actions the summary, outputs and annotations are written */
  const char *summary = tu_dir_write("summary.md", "earlier step\n");
  const char *outputs = tu_dir_write("outputs.txt", "");
  setenv("GITHUB_ACTIONS", "true", 1);
  setenv("GITHUB_STEP_SUMMARY", summary, 1);
  setenv("GITHUB_OUTPUT", outputs, 1);
  const char *out2 = tu_dir_path("out2");
  const char *a4[] = {"run", job, SETS, "--set", "base_lr=0", "--output", out2, "--bless", NULL};
  r = mdl_run_memdl(a4, 300);
  unsetenv("GITHUB_ACTIONS");
  cr_assert_eq(r.exit_code, 3, "%s\n%s", r.out, r.err);
  cr_assert(strstr(r.out, "FAIL accuracy max_drop 0.02: accuracy"), "%s", r.out);
  cr_assert(strstr(r.out, "against the blessed model's"), "%s", r.out);
  cr_assert(strstr(r.out, "PASS accuracy at_least 0.05"), "%s", r.out);
  cr_assert(strstr(r.out, "not blessed: failed"), "%s", r.out);
  /* the annotation points at the job's accept line (line 12 here) */
  char want[2048];
  snprintf(want, sizeof want,
           "::error file=%s,line=12,title=memdl gate accuracy max_drop 0.02::", job);
  cr_assert(strstr(r.out, want), "want %s in\n%s", want, r.out);
  mdl_run_result_free(&r);
  char *now = slurp(reg, "BLESSED");
  cr_assert_str_eq(now, blessed, "BLESSED changed after a failed run");
  free(now);
  size_t len;
  char *sum = tu_read(summary, &len);
  cr_assert(!strncmp(sum, "earlier step\n# ", 15), "appended to the summary: %s", sum);
  cr_assert(strstr(sum, "memdl ci: failed (exit 3)"), "%s", sum);
  free(sum);
  char *outs = tu_read(outputs, &len);
  cr_assert(strstr(outs, "verdict=failed\n"), "%s", outs);
  cr_assert(strstr(outs, "fingerprint="), "%s", outs);
  cr_assert(strstr(outs, "model="), "%s", outs);
  free(outs);
  char *run = slurp(out2, "run.json");
  cr_assert(strstr(run, "\"baseline\": {\"accuracy\": 0."), "%s", run);
  free(run);
  check_reports(out2);

  /* 5: the failed run is skipped too, and stays a failure */
  const char *a5[] = {"run",      job,  SETS,           "--set", "base_lr=0",
                      "--output", out2, "--if-changed", NULL};
  r = mdl_run_memdl(a5, 60);
  cr_assert_eq(r.exit_code, 3, "%s\n%s", r.out, r.err);
  cr_assert(strstr(r.out, "up to date"), "%s", r.out);
  mdl_run_result_free(&r);
  char *hist = slurp(reg, "history.jsonl");
  cr_assert_eq(count(hist, "\"event\": \"bless\""), 1, "%s", hist);
  cr_assert_eq(count(hist, "\"event\": \"run\""), 1, "%s", hist);
  free(hist);
  free(blessed);
}

/* IDX files of n random 28x28 images with labels i % classes, skipping
 * the class `drop` (-1: none). */
static void write_idx(const char *images, const char *labels, int n, int classes, int drop) {
  int m = 0;
  for (int i = 0; i < n; i++) m += (i % classes) != drop;
  FILE *fi = fopen(images, "wb"), *fl = fopen(labels, "wb");
  cr_assert(fi && fl);
  uint8_t hi[16] = {0, 0, 8, 3, m >> 24, m >> 16, m >> 8, m, 0, 0, 0, 28, 0, 0, 0, 28};
  uint8_t hl[8] = {0, 0, 8, 1, m >> 24, m >> 16, m >> 8, m};
  fwrite(hi, 1, 16, fi);
  fwrite(hl, 1, 8, fl);
  uint32_t x = 12345;
  for (int i = 0; i < n; i++) {
    if (i % classes == drop) continue;
    uint8_t img[28 * 28];
    for (int k = 0; k < 28 * 28; k++) {
      x = x * 1664525u + 1013904223u;
      img[k] = (uint8_t)(x >> 24);
    }
    fwrite(img, 1, sizeof img, fi);
    uint8_t l = (uint8_t)(i % classes);
    fwrite(&l, 1, 1, fl);
  }
  fclose(fi);
  fclose(fl);
}

static const char *small_data(void) {
  static char text[2048];
  snprintf(text, sizeof text,
           "data { name: \"fashion_mnist_train\" source { idx { images: \"train-i\" labels: "
           "\"train-l\" } } stage { clean { num_classes: 10 } } }\n"
           "data { name: \"fashion_mnist_test\" source { idx { images: \"test-i\" labels: "
           "\"test-l\" } } }\n");
  return text;
}

Test(ci_run, data_check_fails_before_training) {
  write_idx(tu_dir_path("train-i"), tu_dir_path("train-l"), 1000, 10, -1);
  write_idx(tu_dir_path("test-i"), tu_dir_path("test-l"), 200, 10, -1);
  const char *job = write_job(small_data(), "accept { metric: \"accuracy\" at_least: 0 }",
                              "ci { data_check { data: \"fashion_mnist_train\" min_records: 500 "
                              "max_class_share_change: 0.05 max_dropped_fraction: 0.01 } }");
  const char *out = tu_dir_path("out");
  const char *a[] = {"run",       job, "--set",    "max_iter=5", "--set",   "test_iter=2",
                     "--threads", "1", "--output", out,          "--bless", NULL};
  mdl_run_result r = mdl_run_memdl(a, 120);
  cr_assert_eq(r.exit_code, 0, "%s\n%s", r.out, r.err);
  cr_assert(strstr(r.out, "PASS fashion_mnist_train min_records 500: 1000 records"), "%s", r.out);
  mdl_run_result_free(&r);
  /* per-class accuracy of the final TEST pass is kept: 200 test records,
   * 20 of each class */
  char *run = slurp(out, "run.json");
  cr_assert(strstr(run, "\"per_class_samples\": [20, 20, 20, 20, 20, 20, 20, 20, 20, 20]"), "%s",
            run);
  cr_assert(strstr(run, "\"per_class_accuracy\": [0"), "%s", run);
  free(run);

  /* class 3 removed: its share moves by 10 points */
  write_idx(tu_dir_path("train-i"), tu_dir_path("train-l"), 1000, 10, 3);
  const char *out2 = tu_dir_path("out2");
  const char *b[] = {"run",       job, "--set",    "max_iter=5", "--set", "test_iter=2",
                     "--threads", "1", "--output", out2,         NULL};
  r = mdl_run_memdl(b, 120);
  cr_assert_eq(r.exit_code, 4, "%s\n%s", r.out, r.err);
  cr_assert(strstr(r.err,
                   "data check failed: fashion_mnist_train max_class_share_change 0.05: "
                   "largest change: class 3 has 0.00% of the records, 10.00% in the "
                   "blessed run"),
            "%s", r.err);
  cr_assert(!strstr(r.err, "training "), "trained after a failed data check: %s", r.err);
  cr_assert(!exists(out2, "metrics.jsonl"), "trained after a failed data check");
  check_reports(out2);
  char *junit = slurp(out2, "junit.xml");
  cr_assert_eq(count(junit, "<testcase "), 3, "one test case per data check: %s", junit);
  cr_assert_eq(count(junit, "<failure "), 1, "%s", junit);
  free(junit);
  mdl_run_result_free(&r);
}

Test(ci_run, budget_stops_cleanly_with_exit_5) {
  write_idx(tu_dir_path("train-i"), tu_dir_path("train-l"), 1000, 10, -1);
  write_idx(tu_dir_path("test-i"), tu_dir_path("test-l"), 200, 10, -1);
  const char *job = write_job(small_data(), "accept { metric: \"accuracy\" at_least: 0 }",
                              "ci { max_seconds: 1 }");
  const char *out = tu_dir_path("out");
  const char *a[] = {"run",      job,           "--set",     "max_iter=1000000",
                     "--set",    "test_iter=2", "--set",     "test_interval=50",
                     "--set",    "snapshot=0",  "--threads", "1",
                     "--output", out,           "--bless",   NULL};
  mdl_run_result r = mdl_run_memdl(a, 120);
  cr_assert_eq(r.exit_code, 5, "%s\n%s", r.out, r.err);
  cr_assert(strstr(r.out, "FAIL max_seconds 1: stopped at iteration"), "%s", r.out);
  cr_assert(strstr(r.out, "not blessed: budget exceeded"), "%s", r.out);
  cr_assert(strstr(r.err, "budget of 1 s spent at iteration"), "%s", r.err);
  int iter = 0;
  const char *p = strstr(r.out, "stopped at iteration ");
  cr_assert(p && sscanf(p, "stopped at iteration %d", &iter) == 1 && iter > 0, "%s", r.out);
  char snap[64];
  snprintf(snap, sizeof snap, "lenet_iter_%d.solverstate", iter);
  cr_assert(exists(out, snap), "no snapshot %s at the stopping iteration", snap);
  cr_assert(exists(out, "model.caffemodel"));
  check_reports(out);
  char *m = slurp(out, "metrics.jsonl");
  cr_assert(strstr(m, "\"stopped\": \"budget\""), "%s", m);
  free(m);
  cr_assert(!exists(tu_dir_path("registry"), "BLESSED"), "a budget-stopped run was blessed");
  mdl_run_result_free(&r);
}

Test(ci_run, force_and_warm_start) {
  write_idx(tu_dir_path("train-i"), tu_dir_path("train-l"), 1000, 10, -1);
  write_idx(tu_dir_path("test-i"), tu_dir_path("test-l"), 200, 10, -1);
  const char *job = write_job(small_data(), "accept { metric: \"accuracy\" at_least: 0 }", "");
  const char *out = tu_dir_path("out");
  const char *reg = tu_dir_path("reg");
  const char *a[] = {"run",         job,          "--set", "max_iter=5", "--set",
                     "test_iter=2", "--threads",  "1",     "--output",   out,
                     "--bless",     "--registry", reg,     NULL};
  mdl_run_result r = mdl_run_memdl(a, 120);
  cr_assert_eq(r.exit_code, 0, "%s\n%s", r.out, r.err);
  mdl_run_result_free(&r);
  char *first = slurp(reg, "BLESSED");

  /* a gate no model meets: --bless alone leaves BLESSED, --force blesses
   * and records why; the gates' verdict stands (exit 3) */
  job = write_job(small_data(), "accept { metric: \"accuracy\" at_least: 0.99 }", "");
  r = mdl_run_memdl(a, 120);
  cr_assert_eq(r.exit_code, 3, "%s\n%s", r.out, r.err);
  mdl_run_result_free(&r);
  char *now = slurp(reg, "BLESSED");
  cr_assert_str_eq(now, first);
  free(now);
  const char *f[] = {"run",
                     job,
                     "--set",
                     "max_iter=5",
                     "--set",
                     "test_iter=2",
                     "--threads",
                     "1",
                     "--output",
                     out,
                     "--bless",
                     "--force",
                     "accepting a known regression",
                     "--registry",
                     reg,
                     NULL};
  r = mdl_run_memdl(f, 120);
  cr_assert_eq(r.exit_code, 3, "%s\n%s", r.out, r.err);
  cr_assert(
      strstr(r.out, "blessed with --force despite failed gates: accepting a known regression"),
      "%s", r.out);
  mdl_run_result_free(&r);
  now = slurp(reg, "BLESSED");
  cr_assert_str_neq(now, first, "--force did not bless");
  char *hist = slurp(reg, "history.jsonl");
  cr_assert(strstr(hist, "accepting a known regression"), "%s", hist);
  free(hist);

  /* --warm-start: the blessed model is the starting point, and part of the
   * fingerprint */
  const char *w[] = {"run",          job,          "--set", "max_iter=5", "--set",
                     "test_iter=2",  "--threads",  "1",     "--output",   out,
                     "--warm-start", "--registry", reg,     NULL};
  r = mdl_run_memdl(w, 120);
  cr_assert_eq(r.exit_code, 3, "%s\n%s", r.out, r.err);
  char want[2048];
  snprintf(want, sizeof want, "weights: %s/runs/%.64s/model.caffemodel", reg, now);
  cr_assert(strstr(r.err, want), "want %s in %s", want, r.err);
  cr_assert(strstr(r.err, "weights is new"), "%s", r.err);
  mdl_run_result_free(&r);
  free(now);
  free(first);
}

/* A budget stop leaves a snapshot that --resume continues to the same bits
 * as a run never stopped. */
Test(ci_run, budget_snapshot_resumes_to_the_same_bits) {
  write_idx(tu_dir_path("train-i"), tu_dir_path("train-l"), 1000, 10, -1);
  write_idx(tu_dir_path("test-i"), tu_dir_path("test-l"), 200, 10, -1);
  const char *job = write_job(small_data(), "", "");
  const char *out = tu_dir_path("out");
  const char *a[] = {
      "run",        job,         "--set", "max_iter=400", "--set", "test_interval=0", "--set",
      "snapshot=0", "--threads", "1",     "--output",     out,     "--max-seconds",   "1",
      NULL};
  mdl_run_result r = mdl_run_memdl(a, 120);
  cr_assert_eq(r.exit_code, 5, "%s\n%s", r.out, r.err);
  int iter = 0;
  const char *p = strstr(r.out, "stopped at iteration ");
  cr_assert(p && sscanf(p, "stopped at iteration %d", &iter) == 1 && iter > 0, "%s", r.out);
  mdl_run_result_free(&r);
  char state[2048];
  snprintf(state, sizeof state, "%s/lenet_iter_%d.solverstate", out, iter);
  const char *b[] = {
      "run",        job,         "--set", "max_iter=400", "--set", "test_interval=0", "--set",
      "snapshot=0", "--threads", "1",     "--output",     out,     "--resume",        state,
      NULL};
  r = mdl_run_memdl(b, 300);
  cr_assert_eq(r.exit_code, 0, "%s\n%s", r.out, r.err);
  mdl_run_result_free(&r);
  const char *out2 = tu_dir_path("out2");
  const char *c[] = {"run",       job,
                     "--set",     "max_iter=400",
                     "--set",     "test_interval=0",
                     "--set",     "snapshot=0",
                     "--threads", "1",
                     "--output",  out2,
                     NULL};
  r = mdl_run_memdl(c, 300);
  cr_assert_eq(r.exit_code, 0, "%s\n%s", r.out, r.err);
  mdl_run_result_free(&r);
  size_t n1, n2;
  char p1[2048], p2[2048];
  snprintf(p1, sizeof p1, "%s/lenet_iter_400.caffemodel", out);
  snprintf(p2, sizeof p2, "%s/lenet_iter_400.caffemodel", out2);
  char *m1 = tu_read(p1, &n1), *m2 = tu_read(p2, &n2);
  cr_assert(n1 == n2 && !memcmp(m1, m2, n1), "resumed from iteration %d, not the same bits", iter);
  free(m1);
  free(m2);
}

/* SIGTERM to a CI run (as CI does at its time limit): the iteration
 * finishes, a snapshot is taken, every report is written with the verdict
 * "interrupted", exit 143, nothing is blessed or stored for --if-changed;
 * `--ci --resume` then reaches the bits of a run never stopped. */
Test(ci_run, sigterm_writes_reports_and_resumes_to_the_same_bits) {
  write_idx(tu_dir_path("train-i"), tu_dir_path("train-l"), 1000, 10, -1);
  write_idx(tu_dir_path("test-i"), tu_dir_path("test-l"), 200, 10, -1);
  const char *job = write_job(small_data(), "accept { metric: \"accuracy\" at_least: 0 }",
                              "ci { registry: \"reg\" }");
  const char *out = tu_dir_path("out"), *out2 = tu_dir_path("out2");
#define SIG_SETS                                                                        \
  "--set", "max_iter=300", "--set", "test_iter=2", "--set", "test_interval=0", "--set", \
      "snapshot=0", "--set", "display=20", "--threads", "1"
  const char *a[] = {"run", job, SIG_SETS, "--output", out, "--bless", NULL};
  mdl_signal_step steps[] = {{"iter 100/", SIGTERM, 1}, {NULL, 0, 0}};
  mdl_run_result r = mdl_run_memdl_signals(a, 120, steps);
  cr_assert_eq(r.exit_code, 128 + SIGTERM, "%s\n%s", r.out, r.err);
  cr_assert(strstr(r.out, "not blessed: interrupted"), "%s", r.out);
  int iter = 0;
  const char *p = strstr(r.out, "stopped by SIGTERM at iteration ");
  cr_assert(p && sscanf(p, "stopped by SIGTERM at iteration %d", &iter) == 1, "%s", r.out);
  cr_assert(iter > 100 && iter < 300, "stopped at %d: %s", iter, r.out);
  mdl_run_result_free(&r);
  char snap[64];
  snprintf(snap, sizeof snap, "lenet_iter_%d.solverstate", iter);
  cr_assert(exists(out, snap), "no snapshot %s at the stopping iteration", snap);
  check_reports(out);
  char *run = slurp(out, "run.json");
  cr_assert(strstr(run, "\"verdict\": \"interrupted\"") && strstr(run, "\"exit_code\": 143"), "%s",
            run);
  free(run);
  char *junit = slurp(out, "junit.xml");
  cr_assert(strstr(junit, "not interrupted") && strstr(junit, "<failure "), "%s", junit);
  free(junit);
  cr_assert(!exists(tu_dir_path("reg"), "BLESSED"), "an interrupted run was blessed");

  const char *b[] = {"run", job, SIG_SETS, "--output", out, "--resume", "--curves-png", NULL};
  r = mdl_run_memdl(b, 300);
  cr_assert_eq(r.exit_code, 0, "%s\n%s", r.out, r.err);
  cr_assert(strstr(r.err, "resuming from "), "%s", r.err);
  mdl_run_result_free(&r);
  char *svg = slurp(out, "curves.svg");
  cr_assert(strstr(svg, ">stopped (signal)</text>") && strstr(svg, ">resumed</text>"), "%s", svg);
  free(svg);
  long ink, green;
  char png[2048];
  snprintf(png, sizeof png, "%s/curves.png", out);
  png_pixels(png, &ink, &green); /* memdl's own PNG */
  cr_assert(ink > 5000 && green > 20, "curves.png: %ld drawn, %ld green (the final TEST dot)", ink,
            green);
  const char *c[] = {"run", job, SIG_SETS, "--output", out2, NULL};
  r = mdl_run_memdl(c, 300);
  cr_assert_eq(r.exit_code, 0, "%s\n%s", r.out, r.err);
  mdl_run_result_free(&r);
#undef SIG_SETS
  size_t n1, n2;
  char p1[2048], p2[2048];
  snprintf(p1, sizeof p1, "%s/model.caffemodel", out);
  snprintf(p2, sizeof p2, "%s/model.caffemodel", out2);
  char *m1 = tu_read(p1, &n1), *m2 = tu_read(p2, &n2);
  cr_assert(n1 == n2 && !memcmp(m1, m2, n1), "resumed from iteration %d, not the same bits", iter);
  free(m1);
  free(m2);
}

/* The script both example CI files run, as written, on the example job
 * (fewer iterations): a failed gate, then the same verdict skipped. */
Test(ci_run, example_ci_script_as_written) {
  const char *reg = tu_dir_path("reg");
  const char *outputs = tu_dir_write("outputs", "");
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "MEMDL=./memdl OUT='%s' GITHUB_ACTIONS=true GITHUB_OUTPUT='%s' "
           "jobs/fashion_mnist/ci/retrain.sh --set max_iter=60 --set test_iter=10 "
           "--set test_interval=30 --threads 2 --registry '%s' > '%s' 2>&1",
           tu_dir_path("out"), outputs, reg, tu_dir_path("log"));
  int rc = system(cmd);
  size_t len;
  char *log = tu_read(tu_dir_path("log"), &len);
  cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 3, "exit %d: %s", WEXITSTATUS(rc), log);
  /* the annotation points at the example job's accept line */
  char *job = tu_read("jobs/fashion_mnist/job.prototxt", &len);
  int line = 1;
  for (const char *p = job; strncmp(p, "accept", 6); p = strchr(p, '\n') + 1) line++;
  char want[256];
  snprintf(want, sizeof want, "::error file=jobs/fashion_mnist/job.prototxt,line=%d,", line);
  cr_assert(strstr(log, want), "want %s in %s", want, log);
  cr_assert(strstr(log, "SKIP accuracy max_drop 0.005: no blessed model yet (if_missing: PASS)"),
            "%s", log);
  free(job);
  free(log);
  char *o = tu_read(outputs, &len);
  cr_assert(strstr(o, "verdict=failed\n"), "%s", o);
  free(o);
  rc = system(cmd);
  log = tu_read(tu_dir_path("log"), &len);
  cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 3, "exit %d: %s", WEXITSTATUS(rc), log);
  cr_assert(strstr(log, "up to date"), "%s", log);
  free(log);
  /* the skipped run still gives the workflow its outputs */
  o = tu_read(outputs, &len);
  cr_assert_eq(count(o, "verdict=failed\n"), 2, "%s", o);
  cr_assert_eq(count(o, "exit_code=3\n"), 2, "%s", o);
  free(o);
}

/* CI mode through the driver (--workers local:2): the same reports and
 * gates; the worker count is part of the fingerprint; --warm-start starts
 * every worker from the blessed model (at lr 0 the model comes back bit for
 * bit); --max-seconds stops after a round with a snapshot and exit 5. */
Test(ci_run, distributed_bless_warm_start_and_budget) {
  write_idx(tu_dir_path("train-i"), tu_dir_path("train-l"), 1000, 10, -1);
  write_idx(tu_dir_path("test-i"), tu_dir_path("test-l"), 200, 10, -1);
  const char *job = write_job(small_data(), "accept { metric: \"accuracy\" at_least: 0 }",
                              "ci { registry: \"reg\" }");
  const char *out = tu_dir_path("out"), *warm = tu_dir_path("warm"), *one = tu_dir_path("one"),
             *budget = tu_dir_path("budget");
#define DIST_SETS                                                                                \
  "--workers", "local:2", "--set", "sync.tau=5", "--set", "max_iter=40", "--set", "test_iter=2", \
      "--set", "test_interval=20", "--set", "snapshot=0", "--set", "display=5", "--threads", "1"
  const char *a[] = {"run", job, DIST_SETS, "--output", out, "--bless", NULL};
  mdl_run_result r = mdl_run_memdl(a, 300);
  cr_assert_eq(r.exit_code, 0, "%s\n%s", r.out, r.err);
  cr_assert(strstr(r.err, "memdl driver: "), "trained through the driver: %s", r.err);
  cr_assert(strstr(r.out, "blessed: every gate passed"), "%s", r.out);
  mdl_run_result_free(&r);
  check_reports(out);
  char *run = slurp(out, "run.json"), fp2[65] = "";
  const char *p = strstr(run, "\"fingerprint\": \"");
  cr_assert(p && sscanf(p, "\"fingerprint\": \"%64[0-9a-f]", fp2) == 1, "%s", run);
  cr_assert(strstr(run, "\"per_class_accuracy\": ["), "%s", run);
  free(run);

  /* one worker: another fingerprint (the bits depend on the worker count) */
  const char *b[] = {"run",         job,     "--set",      "max_iter=5", "--set",
                     "test_iter=2", "--set", "snapshot=0", "--threads",  "1",
                     "--output",    one,     NULL};
  r = mdl_run_memdl(b, 300);
  cr_assert_eq(r.exit_code, 0, "%s\n%s", r.out, r.err);
  mdl_run_result_free(&r);
  run = slurp(one, "run.json");
  char fp1[65] = "";
  p = strstr(run, "\"fingerprint\": \"");
  cr_assert(p && sscanf(p, "\"fingerprint\": \"%64[0-9a-f]", fp1) == 1, "%s", run);
  cr_assert(strcmp(fp1, fp2), "one worker and two share fingerprint %s", fp2);
  free(run);

  const char *c[] = {
      "run",        job,     "--warm-start",   DIST_SETS,  "--set", "base_lr=0", "--set",
      "momentum=0", "--set", "weight_decay=0", "--output", warm,    NULL};
  r = mdl_run_memdl(c, 300);
  cr_assert_eq(r.exit_code, 0, "%s\n%s", r.out, r.err);
  mdl_run_result_free(&r);
  char *blessed = slurp(tu_dir_path("reg"), "BLESSED");
  blessed[strcspn(blessed, "\n")] = 0;
  char bpath[2048], wpath[2048];
  snprintf(bpath, sizeof bpath, "%s/runs/%s/model.caffemodel", tu_dir_path("reg"), blessed);
  snprintf(wpath, sizeof wpath, "%s/model.caffemodel", warm);
  free(blessed);
  size_t n1, n2;
  char *m1 = tu_read(bpath, &n1), *m2 = tu_read(wpath, &n2);
  cr_assert(n1 == n2 && !memcmp(m1, m2, n1), "a warm start at lr 0 changed the blessed weights");
  free(m1);
  free(m2);

  const char *d[] = {"run",      job,    DIST_SETS, "--set",         "max_iter=1000000",
                     "--output", budget, "--bless", "--max-seconds", "2",
                     NULL};
  r = mdl_run_memdl(d, 300);
  cr_assert_eq(r.exit_code, 5, "%s\n%s", r.out, r.err);
  cr_assert(strstr(r.out, "not blessed: budget exceeded"), "%s", r.out);
  int iter = 0;
  p = strstr(r.out, "stopped at iteration ");
  cr_assert(p && sscanf(p, "stopped at iteration %d", &iter) == 1 && iter > 0 && iter % 5 == 0,
            "%s", r.out);
  mdl_run_result_free(&r);
  char snap[64];
  snprintf(snap, sizeof snap, "lenet_iter_%d.solverstate", iter);
  cr_assert(exists(budget, snap), "no snapshot %s at the stopping round", snap);
  check_reports(budget);
#undef DIST_SETS
}
