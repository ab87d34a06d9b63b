/* memdl fingerprint: a job's run fingerprint and what changed against the
 * blessed run, without training. */
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "common/version.h"
#include "runtime/ci/ci.h"
#include "runtime/dist/driver.h"

static const char USAGE[] =
    "usage: memdl fingerprint JOB [--json] [--set FIELD=VALUE]... [--device D]\n"
    "                         [--workers SPEC] [--weights FILE | --warm-start]\n"
    "                         [--registry DIR]\n"
    "\n"
    "Prints the SHA-256 that `memdl run JOB --if-changed` would look for: over the\n"
    "canonical net, solver and job (with the --set values), the bytes of every data\n"
    "file (digests cached in the registry by inode, size and mtime), the starting\n"
    "weights, memdl's version, the device kind (cpu or cuda: CPU results do not\n"
    "depend on the thread count) and the worker count; then each part's digest and\n"
    "what changed against the blessed run in the registry.\n"
    "\n"
    "  --json           one JSON object instead\n"
    "  --workers SPEC   as `memdl run` (local:K or HOST:PORT,...; default: the job's)\n"
    "  --registry DIR   default: the job's ci.registry, else registry/ beside the job\n"
    "\n"
    "exit status: 0 printed, 1 a file could not be read, 2 invalid input\n";

int mdl_cmd_fingerprint(int argc, char **argv) {
  mdl_cli_args args;
  mdl_cli_args_init(&args, "fingerprint", USAGE, argc);
  const char *weights = NULL, *registry = NULL, *workers = NULL;
  bool json = false, warm = false;
  int code = -1;
  for (int i = 1; i < argc && code < 0; i++) {
    const char *a = argv[i];
    bool has_next = i + 1 < argc;
    if (!strcmp(a, "--json"))
      json = true;
    else if (!strcmp(a, "--warm-start"))
      warm = true;
    else if (!strcmp(a, "--weights") && has_next)
      weights = argv[++i];
    else if (!strcmp(a, "--registry") && has_next)
      registry = argv[++i];
    else if (!strcmp(a, "--workers") && has_next)
      workers = argv[++i];
    else
      mdl_cli_args_take(&args, argc, argv, &i, &code);
  }
  if (code < 0 && !mdl_cli_args_have_path(&args)) code = 2;
  if (code >= 0) {
    mdl_cli_args_free(&args);
    return code;
  }
  mdl_error err;
  mdl_error_clear(&err);
  mdl_job *job = NULL;
  mdl_status st = mdl_cli_load_job(&args, &job, &err);
  if (st == MDL_OK) {
    mdl_driver_opts dopts = {.workers = workers, .use_cluster_env = true};
    mdl_ci_opts o = {.weights = weights,
                     .warm_start = warm,
                     .threads = args.threads,
                     .device = args.device,
                     .registry = registry,
                     .version = MDL_VERSION,
                     .dist = mdl_driver_wanted(job, &dopts) ? &dopts : NULL};
    st = mdl_ci_print_fingerprint(job, &o, json, stdout, &err);
  }
  if (st != MDL_OK) fprintf(stderr, "memdl fingerprint: %s\n", err.msg);
  mdl_job_free(job);
  mdl_cli_args_free(&args);
  return mdl_exit_code(st);
}
