/* A memdl worker: a gRPC server (runtime/rpc/rpc.h) that receives the plan and
 * its partitions (as lineages) from a driver, rebuilds them, and runs tau
 * solver iterations per round through the trainer seam (runtime/train/trainer.h),
 * returning weights and statistics. Every request is validated against the
 * plan before use. Owns no scheduling: the driver decides everything. */
#ifndef MDL_RUNTIME_WORKER_H
#define MDL_RUNTIME_WORKER_H

#include <stdbool.h>
#include <stdio.h>

#include "common/error.h"
#include "runtime/rpc/rpc.h"
#include "runtime/train/trainer.h"

/* Method paths and the limits both sides apply. */
#define MDL_WORKER_SETUP "/memdl.Worker/Setup"
#define MDL_WORKER_ROUND "/memdl.Worker/Round"
#define MDL_WORKER_TEST "/memdl.Worker/Test"
#define MDL_WORKER_REASSIGN "/memdl.Worker/Reassign"
#define MDL_WORKER_STATE "/memdl.Worker/State"
#define MDL_WORKER_SHUTDOWN "/memdl.Worker/Shutdown"
#define MDL_WORKER_MAX_TAU 1000000
#define MDL_WORKER_MAX_WORKERS 4096
#define MDL_WORKER_MAX_PARTITIONS (1 << 20)
#define MDL_WORKER_MAX_SETUP_BYTES ((size_t)1 << 30) /* plan + lineages + state */
#define MDL_WORKER_MAX_SMALL_BYTES ((size_t)1 << 20) /* a request without its weights */

typedef struct mdl_worker_opts {
  const char *listen; /* "unix:/path", "host:port" ("host:0": any free port) */
  const char *device; /* "cpu" (default), "cuda", "cuda:N" */
  int threads;        /* 0: one per core */
  mdl_rpc_security sec;
  /* Exit cleanly after this long without a call from a driver (ms; 0:
   * 600000), counted from the start, whatever calls are pending: a call
   * waiting for its peer does not count, a round at work does. */
  int driver_timeout_ms;
  int min_ping_interval_ms; /* smallest keepalive interval accepted (0: 100) */
  /* A request message (or chunk) overdue this long cancels its call (ms;
   * 0: 30000); the worker's own pings (0: 10000 and 10000). See rpc.h. */
  int stream_timeout_ms;
  int keepalive_ms, keepalive_timeout_ms;
  FILE *log; /* NULL: stderr */
  /* Set by the local launcher only: its private folder (ours, mode 0700),
   * the one place a Setup's shm_path may name a file in. NULL: shared
   * memory is refused. Needs a "unix:/path" listen address. */
  const char *shm_dir;
  /* Trainers a driver may name (NULL: the product's, "net" only). */
  const mdl_trainer_table *trainers;
} mdl_worker_opts;

typedef struct mdl_worker mdl_worker;

/* Binds the listening address. Refuses plain TCP on a non-loopback address
 * without sec.insecure, and a TCP or abstract-socket address without a
 * token or required client certificates unless sec.insecure (then warns):
 * otherwise any local user could drive it. On success *out is the caller's
 * (mdl_worker_free). */
mdl_status mdl_worker_new(const mdl_worker_opts *o, mdl_worker **out, mdl_error *err);

/* The TCP port bound (0 for Unix sockets). */
int mdl_worker_port(const mdl_worker *w);

/* Serves until a driver's Shutdown, mdl_worker_stop, or the driver timeout.
 * *reason (may be NULL) says which ("shutdown", "stopped", "driver gone"). */
mdl_status mdl_worker_run(mdl_worker *w, const char **reason, mdl_error *err);

/* Safe from any thread and from a signal handler. */
void mdl_worker_stop(mdl_worker *w);

void mdl_worker_free(mdl_worker *w);

/* new + run + free, logging what ended it. */
mdl_status mdl_worker_serve(const mdl_worker_opts *o, mdl_error *err);

#endif
