/* Where local workers come from: worker processes forked and exec'ed
 * (`memdl worker`, Unix sockets in a private 0700 directory, killed with the
 * driver). Owns processes and addresses; not RPC, not the Slurm/MPI
 * environment (cluster_env.h). */
#ifndef MDL_RUNTIME_LAUNCHER_H
#define MDL_RUNTIME_LAUNCHER_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "common/error.h"

typedef struct mdl_launch_opts {
  /* The worker program and the arguments before its flags: NULL means
   * /proc/self/exe and {"worker"} (the memdl binary itself). */
  const char *exe;
  const char *const *argv_prefix;
  int n_prefix;
  const char *device;    /* passed as --device when set */
  int threads;           /* passed as --threads when > 0 */
  int driver_timeout_ms; /* passed as --driver-timeout-ms when > 0 */
  FILE *log;             /* NULL: stderr */
  /* Environment variables the workers must not inherit (e.g. a test
   * harness's own), NULL-terminated; NULL: inherit everything. */
  const char *const *unset_env;
} mdl_launch_opts;

typedef struct mdl_local_workers mdl_local_workers;

/* Creates a private directory (mkdtemp, mode 0700; in /dev/shm when it is a
 * writable tmpfs, so shared-memory files there never touch a disk; else in
 * $TMPDIR or /tmp) holding the driver's pid and a fresh random
 * token file and starts k worker processes listening on Unix sockets in it.
 * Each child gets PR_SET_PDEATHSIG(SIGKILL) and its own process group (so a
 * terminal's Ctrl-C reaches only the driver, which stops them). On success
 * *out is the caller's (mdl_local_workers_free); on failure nothing is left
 * running and *out is NULL. Directories of earlier drivers that died
 * without cleaning up (their pid is gone) are removed first. */
mdl_status mdl_local_workers_start(int k, const mdl_launch_opts *o, mdl_local_workers **out,
                                   mdl_error *err);

int mdl_local_workers_count(const mdl_local_workers *lw);
/* "unix:/tmp/memdl-XXXXXX/w<i>-<generation>.sock"; owned by lw, valid until
 * the worker is restarted. */
const char *mdl_local_workers_address(const mdl_local_workers *lw, int i);
pid_t mdl_local_workers_pid(const mdl_local_workers *lw, int i);
/* The token every local worker expects (owned by lw). */
const char *mdl_local_workers_token(const mdl_local_workers *lw, size_t *len);
const char *mdl_local_workers_dir(const mdl_local_workers *lw);

/* Kills worker i if it still runs (SIGKILL), reaps it and starts a
 * replacement on a new socket. */
mdl_status mdl_local_workers_restart(mdl_local_workers *lw, int i, mdl_error *err);

/* Kills worker i (SIGKILL) and reaps it; it stays down. */
void mdl_local_workers_kill(mdl_local_workers *lw, int i);

/* Whether worker i's process still runs (reaps it when it has exited). */
bool mdl_local_workers_alive(mdl_local_workers *lw, int i);

/* Stops every worker (SIGTERM, then SIGKILL after grace_ms), reaps them and
 * removes the directory. Idempotent. */
void mdl_local_workers_stop(mdl_local_workers *lw, int grace_ms);

/* Stops (grace 1000 ms) and frees. NULL is safe. */
void mdl_local_workers_free(mdl_local_workers *lw);

#endif
