/* The memdl command: finds the sub-command and hands it the arguments.
 * Argument parsing of each command lives in its own cli/cmd_*.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "common/suggest.h"
#include "common/version.h"
#include "runtime/train/device.h"

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} command;

static const command COMMANDS[] = {
    {"certs", mdl_cmd_certs, "make a cluster's TLS folder: a CA, node certificates, a token"},
    {"check", mdl_cmd_check, "parse nets, solvers and jobs; report every error"},
    {"compile", mdl_cmd_compile, "check a job and print its plan (--shapes: blob shapes)"},
    {"data", mdl_cmd_data, "load a job's data set and describe it"},
    {"fingerprint", mdl_cmd_fingerprint,
     "a job's run fingerprint and what changed since the blessed run"},
    {"run", mdl_cmd_run, "train a job or a Caffe solver, on one worker or several"},
    {"test", mdl_cmd_test, "evaluate weights on the TEST phase"},
    {"time", mdl_cmd_time, "time each layer's forward and backward pass"},
    {"worker", mdl_cmd_worker, "serve a driver: memdl worker --listen HOST:PORT"},
};

static void usage(FILE *out) {
  fprintf(out,
          "usage: memdl COMMAND [ARGS...]\n"
          "\n"
          "Trains Caffe-style networks on data held in memory, on one CPU worker or\n"
          "several that average their weights, on CPUs or CUDA GPUs (`memdl --version`\n"
          "says which backends this binary can reach).\n"
          "\n"
          "commands:\n");
  for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
    fprintf(out, "  %-12s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
  fprintf(out,
          "\n"
          "`memdl COMMAND --help` describes one command.\n"
          "exit status: 0 ok, 1 runtime failure, 2 invalid input or usage, 3 acceptance not met,\n"
          "4 a data check failed (CI mode), 5 stopped at --max-seconds\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *name = argv[1];
  if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(name, "--version") || !strcmp(name, "version")) {
    char backends[2048];
    mdl_device_describe(backends, sizeof backends);
    printf("memdl %s\nbackends: %s\n", MDL_VERSION, backends);
    return 0;
  }
  int n;
  char **args = mdl_cli_normalize(argc - 1, argv + 1, &n);
  name = args[0];
  for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
    if (!strcmp(name, COMMANDS[i].name)) {
      int code = COMMANDS[i].run(n, args);
      free(args);
      return code;
    }
  free(args);
  const char *names[sizeof COMMANDS / sizeof *COMMANDS];
  for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++) names[i] = COMMANDS[i].name;
  const char *near = mdl_suggest_nearest(name, names, sizeof names / sizeof *names);
  if (near)
    fprintf(stderr, "memdl: unknown command \"%s\"; did you mean \"%s\"?\n", name, near);
  else
    fprintf(stderr, "memdl: unknown command \"%s\"\n", name);
  fprintf(stderr, "usage: memdl COMMAND [ARGS...]; `memdl --help` lists the commands\n");
  return 2;
}
