/* What the real-launcher tests (launch_mpi_test, launch_slurm_test) share:
 * the tiny job every rank runs and the check that rank 0 alone drove and
 * reported it. */
#ifndef MDL_TESTS_LAUNCH_UTIL_H
#define MDL_TESTS_LAUNCH_UTIL_H

#include "tests/clitest.h"

/* Appends to argv (at *n) the arguments after the launcher's own: ./memdl
 * run on the Fashion-MNIST job, 20 iterations in rounds of 10, output to
 * out_dir, then extra (NULL-terminated, may be NULL), then NULL. */
void launch_job_argv(const char **argv, int *n, const char *out_dir, const char *const *extra);

/* How often needle occurs in hay. */
int launch_count(const char *hay, const char *needle);

/* Fails the test unless the launch of `ranks` ranks trained: rank 0 said
 * once how the launch talks (report_part in that line), every other rank
 * served, only rank 0 reported results (one "done:", one "acceptance not
 * met", exit 3 as a single-worker run of 20 iterations gives) and the
 * model is in out_dir. */
void launch_check_trained(const mdl_run_result *r, int ranks, const char *report_part,
                          const char *out_dir);

#endif
