/* memdl run / test / time end to end through the built binary: exit codes,
 * the JSON last lines, snapshots, and the errors a user meets first. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/clitest.h"
#include "tests/testutil.h"

static const char JOB[] = "jobs/fashion_mnist/job.prototxt";

static double json_num(const char *line, const char *key) {
  char k[128];
  snprintf(k, sizeof k, "\"%s\": ", key);
  const char *p = strstr(line, k);
  cr_assert(p, "no %s in %s", key, line);
  return strtod(p + strlen(k), NULL);
}

Test(cli_run, run_test_time_exit_codes_and_json) {
  const char *out = tu_scratch_path("cli_run");
  /* 200 iterations miss the 0.89 acceptance: exit 3, saying by how much. */
  const char *run[] = {"run",       JOB,
                       "--set",     "max_iter=200",
                       "--set",     "test_interval=100",
                       "--set",     "snapshot=0",
                       "--output",  out,
                       "--threads", "2",
                       NULL};
  mdl_run_result r = mdl_run_memdl(run, 200);
  cr_assert_eq(r.exit_code, 3, "stderr: %s", r.err);
  cr_assert(strstr(r.err, "acceptance not met: accuracy"), "%s", r.err);
  cr_assert(strstr(r.err, "below 0.89 by"), "%s", r.err);
  cr_assert(strstr(r.err, "test iter 100: accuracy"), "%s", r.err);
  mdl_run_result_free(&r);
  char path[700];
  snprintf(path, sizeof path, "%s/lenet_iter_200.caffemodel", out);
  cr_assert(access(path, R_OK) == 0, "final snapshot %s", path);
  char metrics[700];
  snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", out);
  FILE *f = fopen(metrics, "r");
  cr_assert(f, "metrics file %s", metrics);
  char line[4096];
  int tests = 0, done = 0;
  while (fgets(line, sizeof line, f)) {
    if (strstr(line, "\"event\": \"test\"")) {
      /* each TEST pass says how long it took, so tools can leave it out */
      double s = json_num(line, "seconds");
      cr_assert(s > 0 && s < 120, "%s", line);
      tests++;
    }
    if (strstr(line, "\"event\": \"done\"")) done++;
  }
  fclose(f);
  cr_assert(tests >= 2 && done == 1, "%d test lines, %d done lines", tests, done);

  /* memdl test on those weights: JSON last line with accuracy, loss, samples. */
  const char *test[] = {"test", JOB, "--weights", path, "--iterations", "20", NULL};
  r = mdl_run_memdl(test, 120);
  cr_assert_eq(r.exit_code, 0, "stderr: %s", r.err);
  mdl_last_line(r.out, line, sizeof line);
  cr_assert(line[0] == '{', "%s", line);
  double acc = json_num(line, "accuracy");
  cr_assert(acc > 0.6 && acc <= 1, "%s", line);
  json_num(line, "loss");
  cr_assert_eq(json_num(line, "samples"), 2000);
  mdl_run_result_free(&r);

  /* A .caffemodel given to --resume: a clear error, exit 2. */
  const char *resume[] = {"run", JOB, "--resume", path, "--output", out, NULL};
  r = mdl_run_memdl(resume, 60);
  cr_assert_eq(r.exit_code, 2, "stderr: %s", r.err);
  cr_assert(strstr(r.err, "not a .solverstate"), "%s", r.err);
  mdl_run_result_free(&r);

  /* memdl time: the JSON last line. */
  const char *time[] = {"time", JOB, "--iterations", "3", "--threads", "1", NULL};
  r = mdl_run_memdl(time, 120);
  cr_assert_eq(r.exit_code, 0, "stderr: %s", r.err);
  mdl_last_line(r.out, line, sizeof line);
  cr_assert(json_num(line, "forward_ms") > 0, "%s", line);
  cr_assert(json_num(line, "backward_ms") > 0, "%s", line);
  json_num(line, "update_ms");
  cr_assert(json_num(line, "iteration_ms") > 0, "%s", line);
  cr_assert_eq(json_num(line, "batch"), 64);
  cr_assert(json_num(line, "images_per_s") > 0, "%s", line);
  cr_assert(strstr(r.out, "conv1"), "%s", r.out);
  mdl_run_result_free(&r);
}

Test(cli_run, usage_errors_exit_2) {
  const char *a[] = {"run", NULL};
  mdl_run_result r = mdl_run_memdl(a, 30);
  cr_assert_eq(r.exit_code, 2);
  mdl_run_result_free(&r);
  const char *b[] = {"run", "no/such/job.prototxt", NULL};
  r = mdl_run_memdl(b, 30);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  mdl_run_result_free(&r);
  const char *c[] = {"run", JOB, "--weights", "a", "--resume", "b", NULL};
  r = mdl_run_memdl(c, 30);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  mdl_run_result_free(&r);
  const char *d[] = {"test", JOB, NULL};
  r = mdl_run_memdl(d, 30);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  cr_assert(strstr(r.err, "--weights"), "%s", r.err);
  mdl_run_result_free(&r);
  /* A worker list that is neither local:K nor host:port names the entry
   * (it once printed freed memory: the message quoted the parser's copy). */
  const char *bad[] = {"2", "foo", "local:2,foo"};
  for (int i = 0; i < 3; i++) {
    const char *e[] = {"run", JOB, "--workers", bad[i], NULL};
    r = mdl_run_memdl(e, 30);
    cr_assert_eq(r.exit_code, 2, "%s: %s", bad[i], r.err);
    cr_assert(strstr(r.err, "is not host:port or local:K") || strstr(r.err, "local:K"), "%s",
              r.err);
    mdl_run_result_free(&r);
  }
  const char *f[] = {"run", JOB, "--workers", "foo", NULL};
  r = mdl_run_memdl(f, 30);
  cr_assert(strstr(r.err, "\"foo\" is not host:port or local:K"), "%s", r.err);
  mdl_run_result_free(&r);
}

/* The same job on two local worker processes: the driver path end to end. */
Test(cli_run, two_local_workers_average) {
  const char *out = tu_scratch_path("cli_workers");
  const char *run[] = {"run",       JOB,
                       "--workers", "local:2",
                       "--set",     "max_iter=100",
                       "--set",     "test_interval=0",
                       "--set",     "sync.tau=10",
                       "--output",  out,
                       NULL};
  mdl_run_result r = mdl_run_memdl(run, 280);
  cr_assert_eq(r.exit_code, 3, "trains, then misses the 0.89 acceptance: %s", r.err);
  cr_assert(strstr(r.err, "round 10 iter 90-100 (tau 10, 2 workers)"), "%s", r.err);
  cr_assert(strstr(r.err, "on 2 workers"), "%s", r.err);
  cr_assert(strstr(r.err, "acceptance not met: accuracy"), "%s", r.err);
  cr_assert(strstr(r.err, "below 0.89 by"), "%s", r.err);
  mdl_run_result_free(&r);
  char path[700];
  snprintf(path, sizeof path, "%s/lenet_iter_100.caffemodel", out);
  cr_assert(access(path, R_OK) == 0, "final weights %s", path);
}
