/* The launch environments of Slurm and MPI (rank 0 drives, the other ranks
 * serve): their variables read into a list of worker addresses, Slurm's
 * compressed host lists, and the transport policy of the whole launch
 * (which every rank checks the same way before anything starts). Owns no
 * process and no socket; creates only the private folder of same-node
 * sockets. */
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
  /* rank > 0: the address to serve on: "unix:<sock_dir>/rank<r>.sock" on
   * rank 0's node (no network, guarded by the folder's mode), else
   * "0.0.0.0:<port>" */
  char *listen;
  char *host;          /* this rank's node, as the launch names it */
  char *sock_dir;      /* the private folder of same-node sockets (see make_sock_dir) */
  int n_workers;       /* size - 1 */
  char **workers;      /* "unix:..." or "host:port" of ranks 1..size-1, in rank order */
  char **worker_hosts; /* the node of each of them */
  bool *same_node;     /* whether each is on rank 0's node */
  int n_same_node;     /* how many are */
} mdl_cluster_env;

/* The security a launch was given, as file paths (each NULL when not
 * given), from the flags, the job's cluster block and a certificate folder
 * made by `memdl certs`. Strings are owned (mdl_launch_sec_free). */
typedef struct mdl_launch_sec {
  char *tls_dir; /* DIR/ca.pem, DIR/<host>.pem and .key, DIR/token */
  char *token_file, *ca, *cert, *key;
  bool require_client_cert, insecure;
} mdl_launch_sec;

/* Environment lookup (getenv when NULL is passed for the function). */
typedef const char *(*mdl_getenv_fn)(void *ctx, const char *name);

/* Reads the launcher's variables: OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK/
 * LOCAL_SIZE (or PMI_RANK/PMI_SIZE), else SLURM_PROCID/SLURM_NTASKS/
 * SLURM_LOCALID with SLURM_STEP_NODELIST and SLURM_STEP_TASKS_PER_NODE
 * (falling back to SLURM_JOB_NODELIST/SLURM_TASKS_PER_NODE). A rank r > 0
 * on rank 0's node listens on a Unix socket in a folder named after the
 * launch (Slurm's job and step, MPI's job id, else the port) under $TMPDIR
 * or /tmp; one on another node on base_port + its local rank (MEMDL_PORT
 * overrides base_port). MPI runs spanning hosts name them in MEMDL_HOSTS
 * (one per rank, commas); without it every rank is on this host. kind NONE
 * when no launcher is seen or size is 1. On success *out is filled
 * (mdl_cluster_env_free). */
mdl_status mdl_cluster_env_detect(mdl_getenv_fn get, void *ctx, int base_port, mdl_cluster_env *out,
                                  mdl_error *err);
void mdl_cluster_env_free(mdl_cluster_env *e);

/* Creates e->sock_dir (mode 0700) or accepts it when it exists as a folder
 * of ours that no one else may enter; refuses anything else (a link, a
 * folder of another user or open to others). Every rank on the node may
 * call it; the first creates it. */
mdl_status mdl_cluster_env_make_sock_dir(const mdl_cluster_env *e, mdl_error *err);

/* Fills what s lacks from s->tls_dir: ca = DIR/ca.pem; cert/key =
 * DIR/<host>.pem/.key (host NULL: this machine's short name) when serving,
 * or when client certificates are required; token_file = DIR/token when it
 * exists. Does nothing without tls_dir. */
void mdl_launch_sec_from_dir(mdl_launch_sec *s, const char *host, bool serving);
void mdl_launch_sec_free(mdl_launch_sec *s);

/* The transport policy of the whole launch, checked the same way on every
 * rank before anything listens or connects: ranks on rank 0's node serve
 * on Unix sockets in a private folder (no TLS or token needed); ranks on
 * other nodes need TLS (a CA for rank 0, a certificate for each of their
 * nodes, present in tls_dir when that is given) and a token or required
 * client certificates, or insecure. On success report (when given) holds
 * one line describing the launch. MDL_ERR_INVALID with the reason when a
 * rank would refuse to serve or rank 0 to connect. */
mdl_status mdl_cluster_env_check(const mdl_cluster_env *e, const mdl_launch_sec *s, char *report,
                                 size_t cap, mdl_error *err);

/* Slurm's compressed host lists: "n[01-03,07],gpu5,x[1-2]-ib" expands to
 * n01 n02 n03 n07 gpu5 x1-ib x2-ib. *hosts is the caller's (free each, then
 * the array). */
mdl_status mdl_slurm_hostlist(const char *list, char ***hosts, int *n, mdl_error *err);

/* Slurm's tasks-per-node: "2(x3),1" -> 2 2 2 1 for n_nodes = 4. *counts is
 * the caller's (free). */
mdl_status mdl_slurm_tasks_per_node(const char *spec, int n_nodes, int **counts, mdl_error *err);

#endif
