/* `srun -n 3 memdl run JOB` for real, in a private single-node Slurm
 * cluster that tests/launch_slurm.sh starts (munged, slurmctld, slurmd, as
 * root) and stops, also when this test is stopped or killed. Skipped,
 * saying why, without Slurm or root (scripts/setup.sh installs slurm-wlm
 * and munge). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/clitest.h"
#include "tests/launch_util.h"
#include "tests/testutil.h"

TestSuite(launch_slurm, .init = tu_dir_setup, .fini = tu_dir_teardown, .timeout = 300);

/* Processes whose command line names one of the script's temp folders
 * (its daemons all do), Slurm's step daemons, or the killed test's task
 * (sleep 9871): none may outlive the script. */
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
    bool ours = strstr(cmd, "/tmp/memdl-slurm.") || strstr(cmd, "slurmstepd: [") ||
                !strcmp(cmd, "sleep 9871 ") || strstr(cmd, "/sleep 9871 ");
    if (ours && !strstr(cmd, "while kill -0")) {
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
  argv[n++] = "srun";
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

/* The README's batch script, on this one node: two tasks instead of two
 * nodes of two, TLS and the token from `memdl certs`. */
Test(launch_slurm, the_sbatch_example_trains_over_tls) {
  const char *certs = tu_dir_path("certs");
  const char *mk[] = {"certs", certs, NULL};
  mdl_run_result c = mdl_run_memdl(mk, 30);
  cr_assert_eq(c.exit_code, 0, "%s", c.err);
  mdl_run_result_free(&c);
  char cwd[1024], path[4096];
  cr_assert_not_null(getcwd(cwd, sizeof cwd));
  snprintf(path, sizeof path, "%s:%s", cwd, getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
  setenv("PATH", path, 1); /* the script runs `memdl` */
  setenv("MEMDL_CERTS", certs, 1);
  setenv("MEMDL_OUT", tu_dir_path("out"), 1);
  setenv("MEMDL_ARGS",
         "--set max_iter=20 --set sync.tau=10 --set snapshot=0 --set test_interval=1000", 1);
  const char *log = tu_dir_path("sbatch.log");
  char out_flag[1200];
  snprintf(out_flag, sizeof out_flag, "--output=%s", log);
  const char *argv[] = {"tests/launch_slurm.sh",
                        "sbatch",
                        "--wait",
                        "--nodes=1",
                        "--ntasks-per-node=2",
                        "--cpus-per-task=1",
                        out_flag,
                        "jobs/fashion_mnist/slurm.sbatch",
                        NULL};
  mdl_run_result r = mdl_run_program(argv, 240);
  if (r.exit_code == 77) {
    char why[512];
    mdl_last_line(r.out, why, sizeof why);
    mdl_run_result_free(&r);
    cr_skip_test("%s", why);
  }
  size_t len;
  char *text = access(log, R_OK) == 0 ? tu_read(log, &len) : strdup("(no log)");
  cr_assert_eq(r.exit_code, 3, "sbatch --wait: exit %d (3: the job's own)\n%s\n%s", r.exit_code,
               r.err, text);
  mdl_run_result fake = {.exit_code = 3, .out = "", .err = text};
  launch_check_trained(&fake, 2, "rank 1 serves on Unix sockets in ", tu_dir_path("out"));
  cr_assert(strstr(text, " with TLS"), "%s", text);
  free(text);
  mdl_run_result_free(&r);
  char which[4096];
  cr_assert_eq(leftover_daemons(which, sizeof which), 0, "left running:\n%s", which);
}

/* Waits up to timeout_s for no leftover process; fails the test naming
 * them. */
static void expect_nothing_left(int timeout_s) {
  char which[4096];
  for (time_t end = time(NULL) + timeout_s; time(NULL) < end; sleep(1))
    if (leftover_daemons(which, sizeof which) == 0) return;
  cr_assert_eq(leftover_daemons(which, sizeof which), 0, "left running:\n%s", which);
}

/* What a test runner's timeout does: SIGKILL to the script's whole process
 * group while a job runs. The daemons live in sessions of their own and
 * the watchdog cancels the job and stops them. */
Test(launch_slurm, a_killed_run_leaves_no_daemon_behind) {
  const char *log = tu_dir_path("killed.log");
  tu_write(log, "", 0); /* read below before the script writes */
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    setpgid(0, 0);
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl("tests/launch_slurm.sh", "tests/launch_slurm.sh", "srun", "-n", "1", "sleep", "9871",
          (char *)NULL);
    _exit(127);
  }
  setpgid(pid, pid);
  bool up = false;
  int status = 0;
  for (time_t end = time(NULL) + 120; !up && time(NULL) < end; usleep(200000)) {
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    size_t len;
    char *text = tu_read(log, &len);
    up = strstr(text, "is up") != NULL;
    free(text);
  }
  if (!up) {
    kill(-pid, SIGKILL);
    waitpid(pid, &status, 0);
    size_t len;
    char *text = tu_read(log, &len);
    char why[512];
    mdl_last_line(text, why, sizeof why);
    free(text);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) cr_skip_test("%s", why);
    cr_assert_fail("the private cluster did not come up: %s", why);
  }
  sleep(2); /* the step starts */
  kill(-pid, SIGKILL);
  waitpid(pid, &status, 0);
  expect_nothing_left(40);
}
