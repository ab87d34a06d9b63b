/* The launch environments of Slurm and MPI (rank 0 drives, the other ranks
 * serve): their variables read into a list of worker addresses, and Slurm's
 * compressed host lists. Owns no process and no socket. */
#ifndef MDL_RUNTIME_CLUSTER_ENV_H
#define MDL_RUNTIME_CLUSTER_ENV_H

#include <stdbool.h>

#include "common/error.h"

typedef enum mdl_launch_kind {
  MDL_LAUNCH_NONE = 0, /* not started by a launcher (or a single task) */
  MDL_LAUNCH_SLURM,
  MDL_LAUNCH_MPI,
} mdl_launch_kind;

typedef struct mdl_cluster_env {
  mdl_launch_kind kind;
  int rank, size, local_rank;
  char *listen;   /* rank > 0: the address to serve on, "0.0.0.0:<port>" */
  int n_workers;  /* size - 1 */
  char **workers; /* rank 0: "host:port" of ranks 1..size-1, in rank order */
} mdl_cluster_env;

/* Environment lookup (getenv when NULL is passed for the function). */
typedef const char *(*mdl_getenv_fn)(void *ctx, const char *name);

/* Reads the launcher's variables: OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK/
 * LOCAL_SIZE (or PMI_RANK/PMI_SIZE), else SLURM_PROCID/SLURM_NTASKS/
 * SLURM_LOCALID with SLURM_STEP_NODELIST and SLURM_STEP_TASKS_PER_NODE
 * (falling back to SLURM_JOB_NODELIST/SLURM_TASKS_PER_NODE). Rank r > 0
 * listens on base_port + its local rank (MEMDL_PORT overrides base_port).
 * MPI runs spanning hosts name them in MEMDL_HOSTS (one per rank, commas);
 * on one host workers are 127.0.0.1. kind NONE when no launcher is seen or
 * size is 1. On success *out is filled (mdl_cluster_env_free). */
mdl_status mdl_cluster_env_detect(mdl_getenv_fn get, void *ctx, int base_port, mdl_cluster_env *out,
                                  mdl_error *err);
void mdl_cluster_env_free(mdl_cluster_env *e);

/* Slurm's compressed host lists: "n[01-03,07],gpu5,x[1-2]-ib" expands to
 * n01 n02 n03 n07 gpu5 x1-ib x2-ib. *hosts is the caller's (free each, then
 * the array). */
mdl_status mdl_slurm_hostlist(const char *list, char ***hosts, int *n, mdl_error *err);

/* Slurm's tasks-per-node: "2(x3),1" -> 2 2 2 1 for n_nodes = 4. *counts is
 * the caller's (free). */
mdl_status mdl_slurm_tasks_per_node(const char *spec, int n_nodes, int **counts, mdl_error *err);

#endif
