/* memdl worker: its flags and process life (signals, exit codes); the
 * serving itself is runtime/dist/worker.c. Tests run this very function from
 * their own binaries with a trainer table of their own. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "cli/cmd_worker.h"
#include "cli/commands.h"
#include "cli/signals.h"
#include "runtime/dist/worker.h"
#include "runtime/rpc/rpc.h"
#include "runtime/train/device.h"

static const char USAGE[] =
    "usage: memdl worker --listen ADDR [--device cpu|auto|cuda[:N]] [--threads T]\n"
    "                    [--token-file FILE] [--tls-cert FILE --tls-key FILE [--tls-ca FILE\n"
    "                    [--require-client-cert]]] [--insecure] [--driver-timeout-ms MS]\n"
    "\n"
    "Serves a memdl driver: receives the compiled plan and its partitions (as\n"
    "lineages, rebuilt here), runs tau solver iterations per round and returns\n"
    "the weights. Exits when the driver shuts it down, on SIGINT/SIGTERM, or\n"
    "when no driver has called for --driver-timeout-ms (default 600000; counted\n"
    "from the start, so a worker nobody drives exits too).\n"
    "  --listen ADDR       host:port (host:0 picks a free port) or unix:/path\n"
    "  --device D          cpu (default), auto, cuda or cuda:N (with a GPU backend)\n"
    "  --threads T         CPU threads (default: one per core)\n"
    "  --token-file FILE   shared token every call must carry (file mode 600)\n"
    "  --tls-cert/--tls-key  serve TLS with this certificate and key (PEM)\n"
    "  --tls-ca FILE       CA for client certificates (with --require-client-cert)\n"
    "  --require-client-cert  refuse drivers without a certificate from --tls-ca\n"
    "  --insecure          serve without a token or client certificates on TCP or\n"
    "                      unix-abstract addresses, and plain TCP on a non-loopback\n"
    "                      address (warns); without it such a worker refuses to start\n"
    "  --shm-dir DIR       (set by the local launcher) its private folder, the only\n"
    "                      place shared weights may be mapped from\n"
    "  --driver-timeout-ms MS  exit when the driver has been silent this long\n"
    "exit status: 0 ok, 1 runtime failure, 2 invalid usage\n";

/* The worker the signal thread stops, set once it exists; a signal before
 * that is remembered in g_stop_asked and acted on then (a driver that died
 * while we started must not leave us serving nobody). */
static mdl_worker *volatile g_worker;
static volatile sig_atomic_t g_stop_asked;

/* On the signal thread of cli/signals.h: only sets flags. */
static void on_signal(int sig, void *ctx) {
  (void)sig;
  (void)ctx;
  g_stop_asked = 1;
  mdl_worker_stop(g_worker);
}

static bool parse_int(const char *s, long lo, long hi, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (end == s || *end || v < lo || v > hi) return false;
  *out = (int)v;
  return true;
}

int mdl_cmd_worker_with(int argc, char **argv, const mdl_trainer_table *trainers) {
  mdl_worker_opts o = {.device = "cpu", .trainers = trainers};
  const char *token_file = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(USAGE, stdout);
      return 0;
    } else if (!strcmp(a, "--insecure")) {
      o.sec.insecure = true;
    } else if (!strcmp(a, "--require-client-cert")) {
      o.sec.require_client_cert = true;
    } else if (!v) {
      fprintf(stderr, "memdl worker: unknown flag or missing value: %s\n\n%s", a, USAGE);
      return 2;
    } else if (!strcmp(a, "--listen")) {
      o.listen = v, i++;
    } else if (!strcmp(a, "--device")) {
      /* say so now, not when the driver's plan arrives */
      const mdl_backend *be;
      mdl_error derr;
      if (mdl_device_backend(v, &be, &derr) != MDL_OK) {
        fprintf(stderr, "memdl worker: --device: %s\n", derr.msg);
        return 2;
      }
      o.device = v, i++;
    } else if (!strcmp(a, "--threads")) {
      if (!parse_int(v, 0, 4096, &o.threads)) {
        fprintf(stderr, "memdl worker: --threads takes 0..4096, not \"%s\"\n", v);
        return 2;
      }
      i++;
    } else if (!strcmp(a, "--driver-timeout-ms")) {
      if (!parse_int(v, 1, 86400000, &o.driver_timeout_ms)) {
        fprintf(stderr, "memdl worker: --driver-timeout-ms takes 1..86400000, not \"%s\"\n", v);
        return 2;
      }
      i++;
    } else if (!strcmp(a, "--token-file")) {
      token_file = v, i++;
    } else if (!strcmp(a, "--shm-dir")) {
      o.shm_dir = v, i++;
    } else if (!strcmp(a, "--tls-cert")) {
      o.sec.tls_cert = v, i++;
    } else if (!strcmp(a, "--tls-key")) {
      o.sec.tls_key = v, i++;
    } else if (!strcmp(a, "--tls-ca")) {
      o.sec.tls_ca = v, i++;
    } else {
      fprintf(stderr, "memdl worker: unknown flag %s\n\n%s", a, USAGE);
      return 2;
    }
  }
  if (!o.listen) {
    fprintf(stderr, "memdl worker: --listen ADDR is required\n\n%s", USAGE);
    return 2;
  }
  if (!!o.sec.tls_cert != !!o.sec.tls_key) {
    fprintf(stderr, "memdl worker: --tls-cert and --tls-key go together\n");
    return 2;
  }
  mdl_error err;
  mdl_error_clear(&err);
  char *token = NULL;
  if (token_file && mdl_rpc_token_read(token_file, &token, &o.sec.token_len, &err) != MDL_OK) {
    fprintf(stderr, "memdl worker: %s\n", err.msg);
    return 2;
  }
  o.sec.token = token;
  signal(SIGPIPE, SIG_IGN);
  /* `ps` shows "memdl worker" (the launcher sets argv[0]; this is the
   * thread name top and pkill see) */
  prctl(PR_SET_NAME, "memdl worker", 0, 0, 0);
  /* before gRPC's and the trainer's threads start, so none of them is
   * interrupted by a handler */
  static const int sigs[] = {SIGINT, SIGTERM};
  mdl_cli_signals_start(sigs, 2, on_signal, NULL);
  mdl_worker *w;
  mdl_status st = mdl_worker_new(&o, &w, &err);
  if (st != MDL_OK) {
    fprintf(stderr, "memdl worker: %s\n", err.msg);
    free(token);
    return st == MDL_ERR_INVALID ? 2 : 1;
  }
  g_worker = w;
  if (g_stop_asked) mdl_worker_stop(w); /* a signal came while it started */
  int port = mdl_worker_port(w);
  if (port)
    fprintf(stderr, "memdl worker: listening on %s (port %d)\n", o.listen, port);
  else
    fprintf(stderr, "memdl worker: listening on %s\n", o.listen);
  const char *reason = "";
  st = mdl_worker_run(w, &reason, &err);
  fprintf(stderr, "memdl worker: exiting (%s)\n", reason);
  g_worker = NULL;
  mdl_worker_free(w);
  free(token);
  if (st != MDL_OK) {
    fprintf(stderr, "memdl worker: %s\n", err.msg);
    return 1;
  }
  return 0;
}

int mdl_cmd_worker(int argc, char **argv) {
  return mdl_cmd_worker_with(argc, argv, mdl_trainer_table_default());
}
