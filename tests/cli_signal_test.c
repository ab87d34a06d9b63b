/* Signals to a single-worker run, as Caffe's -sigint_effect/-sighup_effect:
 * SIGHUP snapshots and carries on; SIGINT/SIGTERM finish the iteration,
 * snapshot, write the closing metrics record and exit 130/143; `--resume`
 * with no file then continues from the newest snapshot to the same bits as
 * an uninterrupted run; a second signal stops at once; `none` ignores. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/clitest.h"
#include "tests/testutil.h"

static const char JOB[] = "jobs/fashion_mnist/job.prototxt";

TestSuite(cli_signal, .init = tu_dir_setup, .fini = tu_dir_teardown);

#define RUN_ARGS(out, ...)                                                                  \
  (const char *const[]) {                                                                   \
    "run", JOB, "--set", "max_iter=400", "--set", "snapshot=0", "--set", "test_interval=0", \
        "--set", "display=20", "--threads", "2", "--output", out, ##__VA_ARGS__, NULL       \
  }

static char *file(const char *dir, const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  size_t len;
  return tu_read(path, &len);
}

Test(cli_signal, stop_snapshot_resume_same_bits) {
  const char *whole = tu_dir_path("whole"), *cut = tu_dir_path("cut");
  mdl_run_result r = mdl_run_memdl(RUN_ARGS(whole, "--set", "random_seed=7"), 300);
  cr_assert_eq(r.exit_code, 3, "%s", r.err);
  mdl_run_result_free(&r);

  mdl_signal_step steps[] = {{"iter 60/", SIGHUP, 1}, {"iter 140/", SIGINT, 1}, {NULL, 0, 0}};
  r = mdl_run_memdl_signals(RUN_ARGS(cut, "--set", "random_seed=7"), 300, steps);
  cr_assert_eq(r.exit_code, 130, "%s", r.err);
  cr_assert(strstr(r.err, "stopped at iteration"), "%s", r.err);
  cr_assert(!strstr(r.err, "done:"), "%s", r.err);
  int hup = 0, stop = 0;
  const char *s = strstr(r.err, "snapshot ");
  cr_assert(s && sscanf(strstr(s, "_iter_") + 6, "%d", &hup) == 1, "%s", r.err);
  s = strstr(r.err, "stopped at iteration ");
  sscanf(s, "stopped at iteration %d", &stop);
  cr_assert(hup >= 61 && hup < stop && stop >= 141 && stop < 400, "hup %d stop %d: %s", hup, stop,
            r.err);
  mdl_run_result_free(&r);
  char *metrics = file(cut, "metrics.jsonl");
  cr_assert(strstr(metrics, "{\"time\": "), "records carry the wall-clock time: %s", metrics);
  cr_assert(strstr(metrics, "\"event\": \"start\", \"version\": "), "%s", metrics);
  cr_assert(strstr(metrics, "\"seed\": \"7\"") && strstr(metrics, "\"plan\": \""), "%s", metrics);
  cr_assert(strstr(metrics, "\"overrides\": \"max_iter=400 "), "%s", metrics);
  cr_assert(strstr(metrics, "\"event\": \"stopped\""), "the closing record: %s", metrics);
  free(metrics);

  /* --resume with no file: the newest snapshot, then the same bits */
  r = mdl_run_memdl(RUN_ARGS(cut, "--set", "random_seed=7", "--resume"), 300);
  cr_assert_eq(r.exit_code, 3, "%s", r.err);
  char want[64];
  snprintf(want, sizeof want, "lenet_iter_%d.solverstate at iteration %d", stop, stop);
  cr_assert(strstr(r.err, want), "want %s: %s", want, r.err);
  mdl_run_result_free(&r);
  char path[1024];
  size_t la, lb;
  snprintf(path, sizeof path, "%s/lenet_iter_400.caffemodel", whole);
  char *a = tu_read(path, &la);
  snprintf(path, sizeof path, "%s/lenet_iter_400.caffemodel", cut);
  char *b = tu_read(path, &lb);
  cr_assert(la == lb && memcmp(a, b, la) == 0, "resumed weights differ from uninterrupted ones");
  free(a);
  free(b);
  /* the second run appended to the metrics, with its own start record */
  metrics = file(cut, "metrics.jsonl");
  cr_assert(strstr(strstr(metrics, "\"event\": \"stopped\""), "\"event\": \"start\""), "%s",
            metrics);
  free(metrics);
}

Test(cli_signal, second_signal_stops_at_once_and_none_ignores) {
  /* the first during loading, so the second surely comes before the stop */
  mdl_signal_step twice[] = {
      {"data fashion_mnist_train", SIGTERM, 1}, {"stopping after this", SIGTERM, 1}, {NULL, 0, 0}};
  mdl_run_result r = mdl_run_memdl_signals(RUN_ARGS(tu_dir_path("a")), 300, twice);
  cr_assert_eq(r.exit_code, -SIGTERM, "killed by the second signal: %d %s", r.exit_code, r.err);
  mdl_run_result_free(&r);

  mdl_signal_step once[] = {{"iter 40/", SIGTERM, 1}, {NULL, 0, 0}};
  r = mdl_run_memdl_signals(RUN_ARGS(tu_dir_path("b")), 300, once);
  cr_assert_eq(r.exit_code, 143, "%s", r.err);
  mdl_run_result_free(&r);

  r = mdl_run_memdl_signals(
      RUN_ARGS(tu_dir_path("c"), "--sigint-effect", "none", "--set", "max_iter=100"), 300,
      (mdl_signal_step[]){{"iter 40/", SIGINT, 1}, {NULL, 0, 0}});
  cr_assert_eq(r.exit_code, 3, "SIGINT ignored, the run finishes: %s", r.err);
  mdl_run_result_free(&r);

  r = mdl_run_memdl(RUN_ARGS(tu_dir_path("d"), "--sigint-effect", "later"), 30);
  cr_assert_eq(r.exit_code, 2);
  cr_assert(strstr(r.err, "stop, snapshot or none"), "%s", r.err);
  mdl_run_result_free(&r);
}
