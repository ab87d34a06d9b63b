/* The launch through the memdl binary, without a real launcher: a refused
 * launch fails at once on every rank with one line saying why (rank 0 does
 * not wait for ranks that will never come up), and `memdl certs`. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tests/clitest.h"
#include "tests/launch_util.h"
#include "tests/testutil.h"

TestSuite(launch_cli, .init = tu_dir_setup, .fini = tu_dir_teardown, .timeout = 120);

/* Slurm's variables for `rank` of a two-node launch (nodea, nodeb). */
static void fake_slurm(const char *rank) {
  setenv("SLURM_PROCID", rank, 1);
  setenv("SLURM_NTASKS", "2", 1);
  setenv("SLURM_LOCALID", "0", 1);
  setenv("SLURM_JOB_ID", "4242", 1);
  setenv("SLURM_STEP_ID", "0", 1);
  setenv("SLURM_STEP_NODELIST", "nodea,nodeb", 1);
  setenv("SLURM_STEP_TASKS_PER_NODE", "1(x2)", 1);
}

static int lines(const char *s) {
  int n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

Test(launch_cli, a_refused_launch_fails_at_once_on_every_rank) {
  const char *rank_text[] = {"0", "1"};
  for (int rank = 0; rank < 2; rank++) {
    fake_slurm(rank_text[rank]);
    const char *argv[40];
    int n = 0;
    launch_job_argv(argv, &n, tu_dir_path("out"), NULL);
    time_t t0 = time(NULL);
    mdl_run_result r = mdl_run_memdl(argv + 1, 60); /* ./memdl is implied */
    cr_assert_eq(r.exit_code, 2, "rank %d: exit %d\n%s", rank, r.exit_code, r.err);
    cr_assert_lt(time(NULL) - t0, 20, "rank %d waited:\n%s", rank, r.err);
    cr_assert(strstr(r.err, "would send weights in clear over the network: give --tls-dir DIR"),
              "rank %d:\n%s", rank, r.err);
    cr_assert(strstr(r.err, "rank(s) 1 on nodeb"), "%s", r.err);
    if (rank == 1)
      cr_assert(strstr(r.err, "memdl run: rank 1 of 2 on nodeb: launch: "), "%s", r.err);
    cr_assert_eq(lines(r.err), 1, "one line, not:\n%s", r.err);
    mdl_run_result_free(&r);
  }
}

Test(launch_cli, certs_makes_a_private_folder_and_checks_its_input) {
  const char *dir = tu_dir_path("c");
  const char *ok[] = {"certs", dir, "--hosts", "n[1-2]", "--days", "2", NULL};
  mdl_run_result r = mdl_run_memdl(ok, 30);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.err, "a new CA, 2 host certificate(s) (2 days), a new token"), "%s", r.err);
  mdl_run_result_free(&r);
  const char *files[] = {"c/ca.pem", "c/ca.key", "c/n1.pem", "c/n1.key",
                         "c/n2.pem", "c/n2.key", "c/token"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    struct stat st;
    cr_assert_eq(stat(tu_dir_path(files[i]), &st), 0, "no %s", files[i]);
    bool secret = strstr(files[i], ".key") || strstr(files[i], "token");
    if (secret) cr_assert_eq(st.st_mode & 077, 0, "%s is mode %o", files[i], st.st_mode & 0777);
  }
  const char *days[] = {"certs", dir, "--days", "0", NULL};
  r = mdl_run_memdl(days, 30);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  mdl_run_result_free(&r);
  const char *host[] = {"certs", dir, "--hosts", "a/b", NULL};
  r = mdl_run_memdl(host, 30);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  cr_assert(strstr(r.err, "\"a/b\" is not a host name"), "%s", r.err);
  mdl_run_result_free(&r);
}
