/* Shared by the real-launcher tests (see launch_util.h). */
#include "tests/launch_util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void launch_job_argv(const char **argv, int *n, const char *out_dir, const char *const *extra) {
  static const char *const job[] = {"./memdl",
                                    "run",
                                    "jobs/fashion_mnist/job.prototxt",
                                    "--set",
                                    "max_iter=20",
                                    "--set",
                                    "sync.tau=10",
                                    "--set",
                                    "snapshot=0",
                                    "--set",
                                    "test_interval=1000",
                                    "--threads",
                                    "1",
                                    "--output"};
  for (size_t i = 0; i < sizeof job / sizeof *job; i++) argv[(*n)++] = job[i];
  argv[(*n)++] = out_dir;
  for (const char *const *e = extra; e && *e; e++) argv[(*n)++] = *e;
  argv[*n] = NULL;
}

int launch_count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
  return n;
}

void launch_check_trained(const mdl_run_result *r, int ranks, const char *report_part,
                          const char *out_dir) {
  /* a launcher may interleave the ranks' stdout and stderr: look at both */
  size_t lo = strlen(r->out), le = strlen(r->err);
  char *all = malloc(lo + le + 1);
  cr_assert_not_null(all);
  memcpy(all, r->out, lo);
  memcpy(all + lo, r->err, le + 1);
  cr_assert_eq(launch_count(all, "memdl: launch ("), 1, "one report of the launch:\n%s", all);
  cr_assert(strstr(all, report_part), "no \"%s\" in:\n%s", report_part, all);
  cr_assert_eq(launch_count(all, "serves as a worker"), ranks - 1, "%s", all);
  cr_assert_eq(launch_count(all, "\ndone: 20 iterations in 2 rounds"), 1, "%s", all);
  cr_assert_eq(launch_count(all, "acceptance not met"), 1, "only rank 0 reports:\n%s", all);
  cr_assert_eq(launch_count(all, "did not come up"), 0, "%s", all);
  cr_assert_eq(r->exit_code, 3, "exit %d (3: trained, acceptance not met)\n%s", r->exit_code, all);
  char model[1200];
  snprintf(model, sizeof model, "%s/lenet_iter_20.caffemodel", out_dir);
  cr_assert_eq(access(model, R_OK), 0, "no %s", model);
  free(all);
}
