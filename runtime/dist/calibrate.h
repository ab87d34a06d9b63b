/* Calibration: what a distributed run measured about its workers before
 * the first round -- each worker's seconds per training sample on its own
 * device, and the cost of a weight-sized round to it -- as the tuner's
 * table (compiler/tuner.h), and its cache file in the output folder, reused
 * while the plan, the cluster and the machine stay the same. The measuring
 * itself is the driver's (mdl_driver_calibrate in driver_impl.h); this
 * module owns the figures, not the workers. */
#ifndef MDL_RUNTIME_DIST_CALIBRATE_H
#define MDL_RUNTIME_DIST_CALIBRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "compiler/tuner.h"

typedef struct mdl_calib_worker {
  double sample_s;  /* seconds per training sample */
  double fixed_s;   /* seconds per iteration whatever the batch (0: not separated) */
  double comm_s;    /* a round's time beyond the worker's compute (transfer, waking) */
  double iter_se_s; /* an iteration's scatter over the timed rounds, as a standard error */
  uint64_t samples;
  int iterations;
} mdl_calib_worker;

typedef struct mdl_calibration {
  char key[1024]; /* what the figures hold for: see mdl_calibration_key */
  int n_workers;
  mdl_calib_worker *worker; /* owned */
  double weight_bytes;
  int64_t worker_batch; /* samples of one iteration on one worker */
} mdl_calibration;

/* "plan=<hash> cluster=<spec> host=<hostname> cpu=<model> threads=<n>
 * cores=<n>": any change of these makes the cached figures stale. plan_hash
 * is the caller's fingerprint of what an iteration's time depends on. */
void mdl_calibration_key(uint64_t plan_hash, const char *cluster, int threads, char *buf,
                         size_t len);

/* Reads path into *out when it holds figures for key and n_workers
 * (*found true). A missing file or one for another key is no error: *found
 * false, *out empty. A damaged one is MDL_ERR_INVALID with file:line. */
mdl_status mdl_calibration_load(const char *path, const char *key, int n_workers,
                                mdl_calibration *out, bool *found, mdl_error *err);

/* Writes c to path (through a temporary file and rename). */
mdl_status mdl_calibration_save(const char *path, const mdl_calibration *c, mdl_error *err);

void mdl_calibration_free(mdl_calibration *c);

/* The tuner's table for c: rows (c->n_workers entries, the caller's) get
 * the measured figures, a round's whole measured cost counted as latency
 * (one measurement cannot split latency from bandwidth; the tuner adds no
 * transfer term for a bandwidth of 0). */
mdl_tune_table mdl_calibration_table(const mdl_calibration *c, double max_comm_fraction,
                                     int fixed_tau, mdl_tune_worker *rows);

/* One line per worker, as the run prints it, into buf. */
void mdl_calibration_line(const mdl_calibration *c, int worker, char *buf, size_t len);

#endif
