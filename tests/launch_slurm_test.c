/* `srun -n 3 memdl run JOB` for real, in a private single-node Slurm
 * cluster that tests/launch_slurm.sh starts (munged, slurmctld, slurmd, as
 * root) and stops, also when this test is stopped or killed. Skipped,
 * saying why, without Slurm or root (scripts/setup.sh installs slurm-wlm
 * and munge). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/clitest.h"
#include "tests/launch_util.h"
#include "tests/testutil.h"

TestSuite(launch_slurm, .init = tu_dir_setup, .fini = tu_dir_teardown, .timeout = 300);

/* Processes whose command line names one of the script's temp folders
 * (its daemons all do): none may outlive it. */
static int leftover_daemons(char *which, size_t cap) {
  int n = 0;
  which[0] = 0;
  DIR *d = opendir("/proc");
  struct dirent *e;
  while (d && (e = readdir(d))) {
    char path[300], cmd[4096];
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t got = fread(cmd, 1, sizeof cmd - 1, f);
    fclose(f);
    for (size_t i = 0; i < got; i++)
      if (!cmd[i]) cmd[i] = ' ';
    cmd[got] = 0;
    if (strstr(cmd, "/tmp/memdl-slurm.") && !strstr(cmd, "while kill -0")) {
      n++;
      size_t l = strlen(which);
      snprintf(which + l, cap - l, "%s: %s\n", e->d_name, cmd);
    }
  }
  if (d) closedir(d);
  return n;
}

Test(launch_slurm, srun_three_ranks_train_with_rank_0_alone_reporting) {
  const char *argv[64];
  int n = 0;
  argv[n++] = "tests/launch_slurm.sh";
  argv[n++] = "-n";
  argv[n++] = "3";
  argv[n++] = "-O"; /* three tasks on however few cores */
  const char *out = tu_dir_path("out");
  launch_job_argv(argv, &n, out, NULL);
  mdl_run_result r = mdl_run_program(argv, 240);
  if (r.exit_code == 77) {
    char why[512];
    mdl_last_line(r.out, why, sizeof why);
    mdl_run_result_free(&r);
    cr_skip_test("%s", why);
  }
  launch_check_trained(&r, 3, "launch (Slurm, 3 ranks): rank 0 drives", out);
  cr_assert(strstr(r.err, "ranks 1-2 serve on Unix sockets in "), "%s", r.err);
  cr_assert(
      strstr(r.err, "srun: error: ") == NULL || strstr(r.err, "task 0: Exited with exit code 3"),
      "%s", r.err);
  mdl_run_result_free(&r);
  char which[4096];
  cr_assert_eq(leftover_daemons(which, sizeof which), 0, "left running:\n%s", which);
}
