/* The driver's entry from a loaded job: the Slurm/MPI role decision
 * (rank 0 drives, the others serve), compiling the job into its Plan, and
 * where the snapshot lives. Kept apart from driver.c so the round machinery
 * does not depend on the compiler. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/pb.h"
#include "compiler/plan.h"
#include "compiler/tuner.h"
#include "runtime/data/dataset_resolver.h"
#include "runtime/dist/cluster_env.h"
#include "runtime/dist/driver.h"
#include "runtime/dist/worker.h"
#include "runtime/rpc/rpc.h"
#include "runtime/train/metrics.h"
#include "runtime/train/train.h"

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
  mdl_tune_input in = mdl_tune_defaults(k, remote, sync ? sync->max_comm_fraction : 0);
  mdl_tune_result r = mdl_tune_tau(&cost, &in);
  o->tau = r.tau;
  o->tau_tuned = true;
  fprintf(o->log ? o->log : stderr,
          "memdl: tau %d (tuned on assumed figures until calibrated: %.2f ms per iteration, "
          "%.2f ms per %s round of %d workers, %.0f%% communication; sync.tau sets it)\n",
          r.tau, r.iter_s * 1e3, r.comm_s * 1e3, remote ? "gRPC" : "shared-memory", k,
          100 * r.comm_fraction);
}

/* The launch's security as paths: the flags first, then the job's cluster
 * block (relative to the job file), then the certificate folder for host. */
static void launch_sec(const mdl_job *job, const mdl_driver_opts *opts, const char *host,
                       bool serving, mdl_launch_sec *s) {
  const Memdl__Cluster *cl = job->job ? job->job->cluster : NULL;
  const Memdl__Tls *tls = cl ? cl->tls : NULL;
  const char *b = job->base_dir;
  memset(s, 0, sizeof *s);
  s->token_file = opts->token_file ? mdl_xstrdup(opts->token_file)
                                   : mdl_path_join(b, cl ? cl->token_file : NULL);
  s->cert = opts->tls_cert ? mdl_xstrdup(opts->tls_cert) : mdl_path_join(b, tls ? tls->cert : NULL);
  s->key = opts->tls_key ? mdl_xstrdup(opts->tls_key) : mdl_path_join(b, tls ? tls->key : NULL);
  s->ca = opts->tls_ca ? mdl_xstrdup(opts->tls_ca) : mdl_path_join(b, tls ? tls->ca : NULL);
  s->tls_dir = opts->tls_dir ? mdl_xstrdup(opts->tls_dir) : mdl_path_join(b, tls ? tls->dir : NULL);
  s->require_client_cert = tls && tls->require_client_cert;
  s->insecure = opts->insecure || (cl && cl->insecure);
  mdl_launch_sec_from_dir(s, host, serving);
}

/* The driver's side of s: the CA, the token, and its own certificate only
 * where the flags named one or the workers require client certificates
 * (as the driver decides for a job's files). */
static void launch_sec_to_driver(const mdl_launch_sec *s, const mdl_driver_opts *opts,
                                 mdl_driver_opts *o) {
  bool client_cert = s->require_client_cert || opts->tls_cert;
  o->token_file = s->token_file;
  o->tls_ca = s->ca;
  o->tls_cert = client_cert ? s->cert : NULL;
  o->tls_key = client_cert ? s->key : NULL;
}

/* A Slurm/MPI rank other than 0: serve the driver until it shuts us down,
 * on a Unix socket in the launch's private folder when on rank 0's node. */
static mdl_status serve_rank(const mdl_driver_opts *opts, const mdl_cluster_env *env,
                             const mdl_launch_sec *s, mdl_error *err) {
  char *token = NULL;
  size_t token_len = 0;
  mdl_status st = MDL_OK;
  if (s->token_file) st = mdl_rpc_token_read(s->token_file, &token, &token_len, err);
  bool unix_sock = !strncmp(env->listen, "unix:", 5);
  if (st == MDL_OK && unix_sock) st = mdl_cluster_env_make_sock_dir(env, err);
  if (st == MDL_OK && unix_sock) unlink(env->listen + 5); /* a killed launch's, in our folder */
  if (st == MDL_OK) {
    mdl_worker_opts wo = {.listen = env->listen,
                          .device = opts->device,
                          .threads = opts->threads,
                          .sec = {.token = token,
                                  .token_len = token_len,
                                  .tls_ca = s->ca,
                                  .tls_cert = s->cert,
                                  .tls_key = s->key,
                                  .require_client_cert = s->require_client_cert,
                                  .insecure = s->insecure},
                          .log = opts->log};
    fprintf(opts->log ? opts->log : stderr, "memdl: rank %d of %d serves as a worker on %s\n",
            env->rank, env->size, env->listen);
    st = mdl_worker_serve(&wo, err);
  }
  if (unix_sock) {
    unlink(env->listen + 5);
    rmdir(env->sock_dir); /* the last rank out removes it */
  }
  free(token);
  return st;
}

/* Under srun or mpirun: checks the launch's transport policy (every rank
 * the same way, so a refusal is seen at once everywhere) and, on a rank
 * other than 0, serves. On rank 0, sets o's workers and security from the
 * launch and reports it; *workers and *s are the caller's to free. */
static mdl_status run_launch(const mdl_job *job, const mdl_driver_opts *opts,
                             const mdl_cluster_env *env, mdl_driver_opts *o, char **workers,
                             mdl_launch_sec *s, bool *served, mdl_error *err) {
  FILE *log = opts->log ? opts->log : stderr;
  launch_sec(job, opts, env->host, env->rank > 0, s);
  char report[1024];
  mdl_status st = mdl_cluster_env_check(env, s, report, sizeof report, err);
  if (env->rank > 0) {
    *served = true;
    if (st == MDL_OK) st = serve_rank(opts, env, s, err);
    if (st != MDL_OK) {
      char msg[sizeof err->msg];
      snprintf(msg, sizeof msg, "%s", err->msg);
      mdl_errorf(err, st, "rank %d of %d on %s: %s", env->rank, env->size, env->host, msg);
    }
    return st;
  }
  if (st != MDL_OK) return st;
  fprintf(log, "%s\n", report);
  size_t n = 1;
  for (int i = 0; i < env->n_workers; i++) n += strlen(env->workers[i]) + 1;
  *workers = mdl_xcalloc(n, 1);
  for (int i = 0; i < env->n_workers; i++) {
    if (i) strcat(*workers, ",");
    strcat(*workers, env->workers[i]);
  }
  o->workers = *workers;
  launch_sec_to_driver(s, opts, o);
  return MDL_OK;
}

mdl_status mdl_driver_run(const mdl_job *job, const mdl_driver_opts *opts, mdl_driver_result *res,
                          mdl_error *err) {
  if (res) memset(res, 0, sizeof *res);
  mdl_driver_opts o = *opts;
  mdl_cluster_env env;
  memset(&env, 0, sizeof env);
  mdl_launch_sec sec;
  memset(&sec, 0, sizeof sec);
  char *workers = NULL;
  mdl_status st = MDL_OK;
  if (opts->use_cluster_env && !names_workers(job, opts)) {
    st = mdl_cluster_env_detect(NULL, NULL, 0, &env, err);
    if (st != MDL_OK) return st;
    bool served = false;
    if (env.kind != MDL_LAUNCH_NONE)
      st = run_launch(job, opts, &env, &o, &workers, &sec, &served, err);
    mdl_cluster_env_free(&env);
    if (res) res->served = served;
    if (served || st != MDL_OK) {
      mdl_launch_sec_free(&sec);
      free(workers);
      return st;
    }
  }
  if (!workers && (opts->tls_dir ||
                   (job->job->cluster && job->job->cluster->tls && job->job->cluster->tls->dir))) {
    /* remote workers named by --workers or the job: the same folder */
    launch_sec(job, opts, NULL, false, &sec);
    launch_sec_to_driver(&sec, opts, &o);
  }

  mdl_data_catalog cat = {job->job->data, job->job->n_data, job->base_dir};
  mdl_compiled *c = NULL;
  st = mdl_compile_job(job, mdl_data_source_info, &cat, &c, err);
  Memdl__Plan *plan = NULL;
  if (st == MDL_OK) plan = mdl_plan_new(job, c);
  if (st == MDL_OK && o.tau <= 0 && !(plan->sync && plan->sync->tau)) tune_tau(job, c, &o);
  /* the files go where a single-worker run of this job puts them */
  char snap[1100];
  char *out_dir = NULL, *prefix = NULL;
  int every = 0;
  mdl_train_output_paths(job, job->solver, o.out_dir, &out_dir, &prefix, &every);
  o.out_dir = out_dir;
  o.snapshot_prefix = prefix;
  o.snapshot_every = every;
  if (st == MDL_OK) st = mdl_mkdirs(out_dir, err);
  if (st == MDL_OK && !o.snapshot_path) {
    snprintf(snap, sizeof snap, "%s/driver.snapshot", o.out_dir);
    o.snapshot_path = snap;
  }
  if (st == MDL_OK) st = mdl_driver_run_plan(plan, job->base_dir, &o, res, err);
  mdl_pb_free(plan);
  mdl_compiled_free(c);
  free(workers);
  free(out_dir);
  free(prefix);
  mdl_launch_sec_free(&sec);
  return st;
}
