/* The driver's entry from a loaded job: the Slurm/MPI role decision
 * (rank 0 drives, the others serve), compiling the job into its Plan, and
 * where the snapshot lives. Kept apart from driver.c so the round machinery
 * does not depend on the compiler. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fileio.h"
#include "common/pb.h"
#include "compiler/plan.h"
#include "compiler/tuner.h"
#include "runtime/data/dataset_resolver.h"
#include "runtime/dist/cluster_env.h"
#include "runtime/dist/driver.h"
#include "runtime/dist/worker.h"
#include "runtime/rpc/rpc.h"

static bool names_workers(const mdl_job *job, const mdl_driver_opts *opts) {
  const Memdl__Cluster *cl = job->job ? job->job->cluster : NULL;
  return (opts && opts->workers) || (cl && cl->n_worker > 0);
}

bool mdl_driver_wanted(const mdl_job *job, const mdl_driver_opts *opts) {
  const Memdl__Cluster *cl = job->job ? job->job->cluster : NULL;
  if (names_workers(job, opts) || (cl && cl->workers > 1)) return true;
  if (opts && opts->use_cluster_env) {
    mdl_cluster_env env;
    mdl_error err;
    if (mdl_cluster_env_detect(NULL, NULL, 0, &env, &err) == MDL_OK) {
      bool yes = env.kind != MDL_LAUNCH_NONE;
      mdl_cluster_env_free(&env);
      return yes;
    }
    return true; /* a launcher is there but misconfigured: let the run say so */
  }
  return false;
}

int mdl_driver_count_workers(const mdl_job *job, const char *spec, bool *remote) {
  const Memdl__Cluster *cl = job->job ? job->job->cluster : NULL;
  *remote = false;
  if (spec && !strncmp(spec, "local:", 6)) return atoi(spec + 6) > 0 ? atoi(spec + 6) : 1;
  if (spec && *spec) {
    int n = 1;
    for (const char *p = spec; *p; p++) n += *p == ',';
    *remote = true;
    return n;
  }
  if (cl && cl->n_worker) {
    *remote = true;
    return (int)cl->n_worker;
  }
  return cl && cl->workers ? (int)cl->workers : 1;
}

/* sync.tau 0 means "choose": the tuner's smallest tau that keeps a round's
 * communication under sync.max_comm_fraction (compiler/tuner.h). */
static void tune_tau(const mdl_job *job, const mdl_compiled *c, mdl_driver_opts *o) {
  if (c->n_nets == 0 || c->nets[0].phase != CAFFE__PHASE__TRAIN) return;
  bool remote;
  int k = mdl_driver_count_workers(job, o->workers, &remote);
  const Memdl__Sync *sync = job->job ? job->job->sync : NULL;
  mdl_cost cost;
  mdl_cost_of(c->nets[0].graph, &cost);
  mdl_tune_input in = mdl_tune_defaults(k, remote, sync ? sync->max_comm_fraction : 0.1);
  mdl_tune_result r = mdl_tune_tau(&cost, &in);
  o->tau = r.tau;
  o->tau_tuned = true;
  fprintf(o->log ? o->log : stderr,
          "memdl: tau %d (tuned on assumed figures until calibrated: %.2f ms per iteration, "
          "%.2f ms per %s round of %d workers, %.0f%% communication; sync.tau sets it)\n",
          r.tau, r.iter_s * 1e3, r.comm_s * 1e3, remote ? "gRPC" : "shared-memory", k,
          100 * r.comm_fraction);
}

/* A Slurm/MPI rank other than 0: serve the driver until it shuts us down. */
static mdl_status serve_rank(const mdl_job *job, const mdl_driver_opts *opts,
                             const mdl_cluster_env *env, mdl_error *err) {
  const Memdl__Cluster *cl = job->job ? job->job->cluster : NULL;
  const Memdl__Tls *tls = cl ? cl->tls : NULL;
  char *token_file = opts->token_file ? mdl_xstrdup(opts->token_file)
                                      : mdl_path_join(job->base_dir, cl ? cl->token_file : NULL);
  char *cert = opts->tls_cert ? mdl_xstrdup(opts->tls_cert)
                              : mdl_path_join(job->base_dir, tls ? tls->cert : NULL);
  char *key = opts->tls_key ? mdl_xstrdup(opts->tls_key)
                            : mdl_path_join(job->base_dir, tls ? tls->key : NULL);
  char *ca =
      opts->tls_ca ? mdl_xstrdup(opts->tls_ca) : mdl_path_join(job->base_dir, tls ? tls->ca : NULL);
  char *token = NULL;
  size_t token_len = 0;
  mdl_status st = MDL_OK;
  if (token_file) st = mdl_rpc_token_read(token_file, &token, &token_len, err);
  if (st == MDL_OK) {
    mdl_worker_opts wo = {.listen = env->listen,
                          .device = opts->device,
                          .threads = opts->threads,
                          .sec = {.token = token,
                                  .token_len = token_len,
                                  .tls_ca = ca,
                                  .tls_cert = cert,
                                  .tls_key = key,
                                  .require_client_cert = tls && tls->require_client_cert,
                                  .insecure = opts->insecure || (cl && cl->insecure)},
                          .log = opts->log};
    fprintf(opts->log ? opts->log : stderr, "memdl: rank %d of %d serves as a worker on %s\n",
            env->rank, env->size, env->listen);
    st = mdl_worker_serve(&wo, err);
  }
  free(token);
  free(token_file);
  free(cert);
  free(key);
  free(ca);
  return st;
}

mdl_status mdl_driver_run(const mdl_job *job, const mdl_driver_opts *opts, mdl_driver_result *res,
                          mdl_error *err) {
  if (res) memset(res, 0, sizeof *res);
  mdl_driver_opts o = *opts;
  mdl_cluster_env env;
  memset(&env, 0, sizeof env);
  char *workers = NULL;
  mdl_status st = MDL_OK;
  if (opts->use_cluster_env && !names_workers(job, opts)) {
    st = mdl_cluster_env_detect(NULL, NULL, 0, &env, err);
    if (st != MDL_OK) return st;
    if (env.kind != MDL_LAUNCH_NONE && env.rank > 0) {
      st = serve_rank(job, opts, &env, err);
      mdl_cluster_env_free(&env);
      return st;
    }
    if (env.kind != MDL_LAUNCH_NONE) {
      size_t n = 1;
      for (int i = 0; i < env.n_workers; i++) n += strlen(env.workers[i]) + 1;
      workers = mdl_xcalloc(n, 1);
      for (int i = 0; i < env.n_workers; i++) {
        if (i) strcat(workers, ",");
        strcat(workers, env.workers[i]);
      }
      o.workers = workers;
      fprintf(opts->log ? opts->log : stderr, "memdl: rank 0 of %d drives; workers %s\n", env.size,
              workers);
    }
    mdl_cluster_env_free(&env);
  }

  mdl_data_catalog cat = {job->job->data, job->job->n_data, job->base_dir};
  mdl_compiled *c = NULL;
  st = mdl_compile_job(job, mdl_data_source_info, &cat, &c, err);
  Memdl__Plan *plan = NULL;
  if (st == MDL_OK) plan = mdl_plan_new(job, c);
  if (st == MDL_OK && o.tau <= 0 && !(plan->sync && plan->sync->tau)) tune_tau(job, c, &o);
  char snap[1024];
  const char *dir = job->job->output && job->job->output->dir ? job->job->output->dir : "out";
  char *full = mdl_path_join(job->base_dir, dir);
  if (st == MDL_OK && !o.out_dir) {
    mkdir(full, 0755);
    o.out_dir = full;
  }
  if (st == MDL_OK && !o.snapshot_path) {
    snprintf(snap, sizeof snap, "%s/driver.snapshot", o.out_dir);
    o.snapshot_path = snap;
  }
  if (st == MDL_OK) st = mdl_driver_run_plan(plan, job->base_dir, &o, res, err);
  mdl_pb_free(plan);
  mdl_compiled_free(c);
  free(workers);
  free(full);
  return st;
}
