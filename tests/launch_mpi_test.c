/* `mpirun -np K memdl run JOB` with Debian's OpenMPI, for real: rank 0
 * drives, the others serve on Unix sockets in the launch's private folder,
 * in the clear and over TLS from a `memdl certs` folder. Skipped, saying
 * so, where mpirun is not installed (scripts/setup.sh installs it). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/clitest.h"
#include "tests/launch_util.h"
#include "tests/testutil.h"

TestSuite(launch_mpi, .init = tu_dir_setup, .fini = tu_dir_teardown, .timeout = 240);

static void need_mpirun(void) {
  if (system("command -v mpirun >/dev/null 2>&1") != 0)
    cr_skip_test("mpirun is not installed (scripts/setup.sh installs Debian's openmpi-bin)");
}

/* mpirun's own flags: root needs leave, two cores take more ranks only
 * when told, and no rank may wait for a network interface it lacks. */
static int mpirun_argv(const char **argv, int np) {
  static char npbuf[16];
  snprintf(npbuf, sizeof npbuf, "%d", np);
  int n = 0;
  argv[n++] = "mpirun";
  if (geteuid() == 0) argv[n++] = "--allow-run-as-root";
  argv[n++] = "--oversubscribe";
  argv[n++] = "-np";
  argv[n++] = npbuf;
  return n;
}

Test(launch_mpi, three_ranks_train_with_rank_0_alone_reporting) {
  need_mpirun();
  const char *argv[64];
  int n = mpirun_argv(argv, 3);
  const char *out = tu_dir_path("out");
  launch_job_argv(argv, &n, out, NULL);
  mdl_run_result r = mdl_run_program(argv, 180);
  launch_check_trained(&r, 3, "launch (MPI, 3 ranks): rank 0 drives", out);
  cr_assert(strstr(r.err, "ranks 1-2 serve on Unix sockets in ") && strstr(r.err, "(no network)"),
            "%s", r.err);
  mdl_run_result_free(&r);
  /* one behaviour whatever starts the workers: the bits of --workers local:2 */
  const char *out2 = tu_dir_path("out2");
  const char *local[] = {"run",       "jobs/fashion_mnist/job.prototxt",
                         "--set",     "max_iter=20",
                         "--set",     "sync.tau=10",
                         "--set",     "snapshot=0",
                         "--set",     "test_interval=1000",
                         "--threads", "1",
                         "--output",  out2,
                         "--workers", "local:2",
                         NULL};
  r = mdl_run_memdl(local, 180);
  cr_assert_eq(r.exit_code, 3, "%s", r.err);
  mdl_run_result_free(&r);
  char pa[1024], pb[1024];
  snprintf(pa, sizeof pa, "%s/lenet_iter_20.caffemodel", out);
  snprintf(pb, sizeof pb, "%s/lenet_iter_20.caffemodel", out2);
  size_t la, lb;
  char *a = tu_read(pa, &la), *b = tu_read(pb, &lb);
  cr_assert(la == lb && !memcmp(a, b, la), "mpirun -np 3 and --workers local:2 differ");
  free(a);
  free(b);
}

Test(launch_mpi, a_certs_folder_makes_the_launch_tls) {
  need_mpirun();
  const char *certs = tu_dir_path("certs");
  const char *mk[] = {"certs", certs, NULL};
  mdl_run_result c = mdl_run_memdl(mk, 30);
  cr_assert_eq(c.exit_code, 0, "%s", c.err);
  mdl_run_result_free(&c);
  const char *argv[64];
  int n = mpirun_argv(argv, 2);
  const char *out = tu_dir_path("out");
  const char *extra[] = {"--tls-dir", certs, NULL};
  launch_job_argv(argv, &n, out, extra);
  mdl_run_result r = mdl_run_program(argv, 180);
  launch_check_trained(&r, 2, "rank 1 serves on Unix sockets in ", out);
  cr_assert(strstr(r.err, " with TLS"), "%s", r.err);
  mdl_run_result_free(&r);
}
