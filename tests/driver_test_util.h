/* What driver_test, fault_test and driver_net_test share: their main(),
 * which makes each binary also the worker its driver starts
 * (`TEST --mdl-worker --listen ...`), driver options for such workers, and
 * plans for the "linear" trainer. Not the tests' own cases. */
#ifndef MDL_TESTS_DRIVER_TEST_UTIL_H
#define MDL_TESTS_DRIVER_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>

#include "plan.pb-c.h"
#include "runtime/dist/driver.h"

/* The least-squares trainer of tests/trainer_linear.c: test scaffolding,
 * never linked into memdl. */
extern const mdl_trainer_i mdl_trainer_linear;
/* "linear" whose worker 1 misreports what $MDL_TEST_LIE names
 * (tests/trainer_liar.c). */
extern const mdl_trainer_i mdl_trainer_liar;
/* "net" whose worker 1 spends 2 ms more per sample (tests/trainer_slow.c). */
extern const mdl_trainer_i mdl_trainer_slow;
/* The trainers these binaries offer: "net", "linear", "liar" and "slownet". */
extern const mdl_trainer_table DT_TRAINERS;

/* The arguments that make the test binary a worker: {"--mdl-worker"}. */
extern const char *const DT_WORKER_ARGV[1];
/* What a worker must not inherit: Criterion's sandbox takes over any
 * process started with BXFI_MAP set. NULL-terminated. */
extern const char *const DT_UNSET_ENV[2];

/* Driver options for `workers` started from this binary: the given trainer
 * (NULL is "net"), no snapshots, 20 s round and setup timeouts, quiet. */
mdl_driver_opts dt_opts(const char *workers, const char *trainer, FILE *log);

/* A plan for the "linear" trainer: D features, `records` training records
 * in `parts` partitions, batches of `batch`, and a test set when
 * test_records > 0. */
typedef struct dt_lin_spec {
  int d, parts, batch, max_iter, test_interval, tau;
  uint64_t records, test_records;
  float lr, momentum;
} dt_lin_spec;

/* The plan of s named job_name: synthetic data with seed `seed` (the test
 * set seed + 1), test_parts test partitions. Free with mdl_pb_free. */
Memdl__Plan *dt_linear_plan(const dt_lin_spec *s, const char *job_name, uint64_t seed,
                            uint32_t test_parts);

#endif
