/* memdl run: trains a job (or a Caffe solver file) on one local worker, or
 * hands it to the driver when the job or the flags ask for several. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/ci_args.h"
#include "cli/commands.h"
#include "cli/signals.h"
#include "common/version.h"
#include "compiler/job.h"
#include "runtime/dist/driver.h"
#include "runtime/train/train.h"

static const char USAGE[] =
    "usage: memdl run JOB [--weights FILE.caffemodel] [--resume [FILE]]\n"
    "                     [--set FIELD=VALUE]... [--threads T] [--output DIR]\n"
    "                     [--device auto|cpu|cuda|cuda:N]\n"
    "                     [--workers local:K|HOST:PORT,...] [--token-file F]\n"
    "                     [--tls-dir DIR] [--tls-ca F] [--tls-cert F] [--tls-key F]\n"
    "                     [--insecure] [--calibrate]\n"
    "                     [--sigint-effect stop|snapshot|none] [--sighup-effect E]\n"
    "\n"
    "Trains JOB (a memdl job file or a Caffe solver file): on this machine, or on\n"
    "K workers that average their weights every tau iterations when --workers or\n"
    "the job's cluster block asks for more than one (under srun or mpirun, rank 0\n"
    "drives and reports, the other ranks serve and say nothing of the results;\n"
    "ranks on rank 0's node use Unix sockets, the others TCP on MEMDL_PORT\n"
    "(default 7070) plus their local rank).\n"
    "Progress goes to stderr (a live line on a terminal, a line every `display`\n"
    "iterations otherwise); metrics go to DIR/metrics.jsonl as JSON lines;\n"
    "snapshots are written as <prefix>_iter_N.caffemodel / .solverstate.\n"
    "\n"
    "  --weights FILE   start from these weights (fine-tuning; layers missing\n"
    "                   from FILE keep their fillers), with --workers too\n"
    "  --resume [FILE]  continue a run bit for bit from FILE.solverstate (default:\n"
    "                   the newest <snapshot_prefix>_iter_N.solverstate; with\n"
    "                   --workers, or OUTPUT/driver.snapshot when that is newer);\n"
    "                   a distributed run's snapshots need the same worker count\n"
    "  --set F=V        override a solver or job field, e.g. --set max_iter=2000\n"
    "  --threads T      CPU threads (default: the job's, else one per core)\n"
    "  --device D       auto (default: a usable GPU that runs every layer, else\n"
    "                   the CPU, saying why), cpu, cuda or cuda:N (exit 2 when\n"
    "                   that GPU is not usable or lacks a layer); without it a\n"
    "                   Caffe solver's solver_mode/device_id decide\n"
    "                   (with --workers local:K: each local worker's device)\n"
    "  --output DIR     where metrics.jsonl and snapshots go (default: a job's\n"
    "                   output.dir; for a Caffe solver, metrics go to ./out and\n"
    "                   snapshots where its snapshot_prefix says)\n"
    "  --workers SPEC   local:K worker processes, or remote HOST:PORT,... workers\n"
    "                   (each started with `memdl worker --listen HOST:PORT`)\n"
    "  --token-file F   shared token sent to remote workers (default: the job's)\n"
    "  --tls-dir DIR    TLS and the token from a folder made by `memdl certs DIR`\n"
    "                   (ca.pem, <host>.pem/.key, token), seen by every node\n"
    "  --tls-ca/--tls-cert/--tls-key F   TLS for remote workers (PEM files)\n"
    "  --insecure       allow plain TCP to non-loopback workers\n"
    "  --calibrate      measure the workers before the first round even when the\n"
    "                   job fixes sync.tau (always done when the tuner picks tau):\n"
    "                   one line per worker; shares of the batch, and whole\n"
    "                   data partitions, follow speed, also during the run\n"
    "  --sigint-effect stop|snapshot|none   on SIGINT or SIGTERM (default stop: finish\n"
    "                   the iteration, snapshot, write the closing metrics record,\n"
    "                   exit 130 or 143; a second signal stops at once)\n"
    "  --sighup-effect stop|snapshot|none   on SIGHUP (default snapshot: snapshot\n"
    "                   after the iteration and carry on); with --workers both act\n"
    "                   after the current round\n"
    "\n" MDL_CLI_CI_USAGE
    "\n"
    "exit status: 0 trained and acceptance met, 1 runtime failure, 2 invalid input,\n"
    "3 trained but acceptance (or a CI gate) not met, 4 a data check failed,\n"
    "5 stopped at --max-seconds, 130/143 stopped by SIGINT/SIGTERM (resumable)\n";

/* Caffe's -sigint_effect / -sighup_effect. */
typedef enum signal_effect { EFFECT_STOP, EFFECT_SNAPSHOT, EFFECT_NONE } signal_effect;

static volatile sig_atomic_t g_stop, g_snapshot, g_stop_signal;
static signal_effect g_int_effect = EFFECT_STOP, g_hup_effect = EFFECT_SNAPSHOT;

/* What a signal does. Runs on the signal thread of cli/signals.h (or, for a
 * signal the kernel hands to a library's own idle thread, as a handler
 * there); only sets flags and writes, both async-signal-safe. */
static void on_signal(int sig, void *ctx) {
  (void)ctx;
  signal_effect e = sig == SIGHUP ? g_hup_effect : g_int_effect;
  if (e == EFFECT_NONE) return;
  if (e == EFFECT_SNAPSHOT) {
    g_snapshot = 1;
    return;
  }
  if (g_stop) { /* the second one: stop at once, killed by that signal */
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    signal(sig, SIG_DFL);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    raise(sig);
    return;
  }
  g_stop_signal = sig;
  g_stop = 1;
  static const char msg[] =
      "\nmemdl run: stopping after this iteration (with --workers: this round), with a "
      "snapshot (a second signal stops at once)\n";
  ssize_t w = write(2, msg, sizeof msg - 1); /* async-signal-safe, unlike stdio */
  (void)w;
}

static bool parse_effect(const char *flag, const char *v, signal_effect *out) {
  static const char *const names[] = {"stop", "snapshot", "none"};
  for (int i = 0; i < 3; i++)
    if (!strcmp(v, names[i])) {
      *out = (signal_effect)i;
      return true;
    }
  fprintf(stderr, "memdl run: %s takes stop, snapshot or none, not \"%s\"\n", flag, v);
  return false;
}

/* SIGINT, SIGTERM and SIGHUP go to one thread that waits for them
 * (cli/signals.h), before any compute or worker thread starts. */
static void install_handlers(void) {
  static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
  mdl_cli_signals_start(sigs, 3, on_signal, NULL);
}

/* The driver prints rounds as they go; this is the closing summary.
 * *stopped: a signal ended the run after its snapshot. */
static mdl_status drive(const mdl_job *job, const mdl_driver_opts *o, bool *stopped,
                        mdl_error *err) {
  mdl_driver_result res = {0};
  mdl_status st = mdl_driver_run(job, o, &res, err);
  *stopped = res.stopped;
  if (st != MDL_OK && st != MDL_ERR_ACCEPT) return st;
  if (res.stopped || res.served) { /* stopped: the driver said where and how to continue;
                                    * served: a Slurm/MPI rank other than 0, rank 0 reports */
    mdl_driver_result_free(&res);
    return st;
  }
  char line[256];
  mdl_driver_result_summary(&res, line, sizeof line);
  fputs(line, stderr);
  for (int i = 0; i < res.n_test; i++)
    fprintf(stderr, "%s %s %.4f", i ? "," : "; test:", res.test[i].name,
            res.test[i].n == 1 ? res.test[i].sum[0] : 0.0);
  fprintf(stderr, "\n");
  if (res.faults)
    fprintf(stderr, "faults: %d worker(s) lost, %d replaced\n", res.faults, res.replacements);
  if (!res.accepted) fprintf(stderr, "acceptance not met: %s\n", res.accept_msg);
  mdl_driver_result_free(&res);
  return st;
}

/* A run handed to the driver; returns the exit code. Signals as a single
 * worker's: the driver finishes the round, snapshots and shuts its workers
 * down. */
static int run_distributed(const mdl_job *job, mdl_driver_opts *dopts, const char *weights) {
  mdl_error err;
  mdl_error_clear(&err);
  bool stopped = false;
  install_handlers();
  dopts->stop = &g_stop;
  dopts->snapshot = &g_snapshot;
  dopts->weights = weights;
  mdl_status st = drive(job, dopts, &stopped, &err);
  if (st != MDL_OK && st != MDL_ERR_ACCEPT) fprintf(stderr, "memdl run: %s\n", err.msg);
  if (st == MDL_OK && stopped) return 128 + g_stop_signal;
  return mdl_exit_code(st);
}

int mdl_cmd_run(int argc, char **argv) {
  mdl_cli_args args;
  mdl_cli_args_init(&args, "run", USAGE, argc);
  static const char *const OPTS[] = {
      "--weights",       "--resume",        "--output",   "--workers", "--token-file",
      "--tls-ca",        "--tls-cert",      "--tls-key",  "--tls-dir", "--insecure",
      "--sigint-effect", "--sighup-effect", "--calibrate"};
  args.opts = OPTS;
  args.n_opts = sizeof OPTS / sizeof *OPTS;
  const char *weights = NULL, *resume = NULL, *out = NULL;
  bool resume_flag = false;
  mdl_driver_opts dopts = {.use_cluster_env = true};
  mdl_cli_ci ci = {0}; /* CI mode: cli/ci_args.c */
  int code = -1;       /* -1: go on; else the exit code */
  for (int i = 1; i < argc && code < 0; i++) {
    const char *a = argv[i];
    bool has_next = i + 1 < argc;
    if (!strcmp(a, "--weights") && has_next) {
      weights = argv[++i];
    } else if (!strcmp(a, "--resume")) {
      resume_flag = true;
      if (has_next && argv[i + 1][0] != '-') resume = argv[++i];
    } else if (!strcmp(a, "--output") && has_next) {
      out = argv[++i];
    } else if (!strcmp(a, "--workers") && has_next) {
      dopts.workers = argv[++i];
    } else if (!strcmp(a, "--token-file") && has_next) {
      dopts.token_file = argv[++i];
    } else if (!strcmp(a, "--tls-ca") && has_next) {
      dopts.tls_ca = argv[++i];
    } else if (!strcmp(a, "--tls-cert") && has_next) {
      dopts.tls_cert = argv[++i];
    } else if (!strcmp(a, "--tls-key") && has_next) {
      dopts.tls_key = argv[++i];
    } else if (!strcmp(a, "--tls-dir") && has_next) {
      dopts.tls_dir = argv[++i];
    } else if (!strcmp(a, "--insecure")) {
      dopts.insecure = true;
    } else if (!strcmp(a, "--calibrate")) {
      dopts.calibrate = true;
    } else if (!strcmp(a, "--sigint-effect") && has_next) {
      if (!parse_effect(a, argv[++i], &g_int_effect)) code = 2;
    } else if (!strcmp(a, "--sighup-effect") && has_next) {
      if (!parse_effect(a, argv[++i], &g_hup_effect)) code = 2;
    } else if (mdl_cli_ci_take(&ci, argc, argv, &i, &code)) {
      /* a CI flag (cli/ci_args.c) */
    } else {
      mdl_cli_args_take(&args, argc, argv, &i, &code);
    }
  }
  if (code < 0 && !mdl_cli_args_have_path(&args)) code = 2;
  if (code < 0 && weights && resume_flag) {
    fprintf(stderr,
            "memdl run: give --resume to continue a run or --weights to fine-tune, not both\n");
    code = 2;
  }
  if (code >= 0) {
    mdl_cli_args_free(&args);
    return code;
  }
  const char *path = args.path;
  int threads = args.threads;
  mdl_error err;
  mdl_error_clear(&err);
  mdl_job *job = NULL;
  mdl_train *t = NULL;
  mdl_status st = mdl_cli_load_job(&args, &job, &err);
  if (st == MDL_OK && job->kind == MDL_KIND_NET)
    st = mdl_errorf(&err, MDL_ERR_INVALID,
                    "%s is a net, not a job or solver: memdl run needs a solver (lr_policy, "
                    "max_iter, ...); memdl test and memdl time take nets",
                    path);
  dopts.out_dir = out;
  dopts.threads = threads;
  if (args.device) dopts.device = args.device;
  dopts.resume = resume_flag;
  dopts.resume_file = resume;
  dopts.job_path = path;
  dopts.version = MDL_VERSION;
  dopts.overrides = args.sets;
  dopts.n_overrides = args.n_sets;
  if (st == MDL_OK && mdl_cli_ci_wanted(&ci, job)) { /* CI mode: cli/ci_args.c */
    ci.stop = &g_stop;
    ci.snapshot = &g_snapshot;
    ci.stop_signal = &g_stop_signal;
    install_handlers();
    int rc = mdl_cli_ci_run(&ci, &args, job, weights, resume_flag, resume,
                            mdl_driver_wanted(job, &dopts) ? &dopts : NULL, out);
    mdl_job_free(job);
    mdl_cli_args_free(&args);
    return rc;
  }
  if (st == MDL_OK && mdl_driver_wanted(job, &dopts)) {
    int rc = run_distributed(job, &dopts, weights);
    mdl_job_free(job);
    mdl_cli_args_free(&args);
    return rc;
  }
  mdl_train_opts o = {.threads = threads,
                      .out_dir = out,
                      .stop = &g_stop,
                      .snapshot = &g_snapshot,
                      .overrides = args.sets,
                      .n_overrides = args.n_sets,
                      .version = MDL_VERSION,
                      .device = args.device};
  install_handlers();
  if (st == MDL_OK) st = mdl_train_new(job, &o, &t, &err);
  if (st == MDL_OK && weights) st = mdl_train_load_weights(t, weights, &err);
  char *newest = NULL;
  if (st == MDL_OK && resume_flag && !resume) {
    /* as Caffe users expect: the newest snapshot of this job's prefix */
    st = mdl_train_newest_snapshot(t, &newest, &err);
    resume = newest;
  }
  if (st == MDL_OK && resume) st = mdl_train_restore(t, resume, &err);
  free(newest);
  mdl_train_summary sum = {0};
  if (st == MDL_OK) st = mdl_train_run(t, 0, &sum, &err);
  if (st != MDL_OK && st != MDL_ERR_ACCEPT) fprintf(stderr, "memdl run: %s\n", err.msg);
  mdl_train_free(t);
  mdl_job_free(job);
  mdl_cli_args_free(&args);
  if (st == MDL_OK && sum.stopped) return 128 + g_stop_signal;
  return mdl_exit_code(st);
}
