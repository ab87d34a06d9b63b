/* What the job-running commands (run, test, time) parse alike: the one
 * FILE, --set FIELD=VALUE..., --threads T, --device D, --help; and loading the job with
 * the overrides applied. Each command handles its own flags first. */
#ifndef MDL_CLI_ARGS_H
#define MDL_CLI_ARGS_H

#include <stdbool.h>

#include "compiler/job.h"

typedef struct mdl_cli_args {
  const char *cmd;   /* "run", for messages: "memdl run: ..." */
  const char *usage; /* printed for --help (stdout) and usage errors (stderr) */
  const char *path;
  const char **sets; /* argv pointers, the caller's argv keeps them alive */
  int n_sets;
  int threads; /* 0: the default */
  /* The command's own options, for "did you mean" on a typo (the shared
   * --set, --threads, --help are added). NULL: none. */
  const char *const *opts;
  size_t n_opts;
  const char *device; /* --device: cpu, cuda, cuda:N, auto; NULL: the job's or solver's */
} mdl_cli_args;

typedef enum mdl_cli_arg_result {
  MDL_ARG_TAKEN,   /* consumed (with its value: *i advanced) */
  MDL_ARG_UNKNOWN, /* not a shared one: the command may know it */
  MDL_ARG_EXIT,    /* --help printed (exit 0) or an error printed (exit 2): see *code */
} mdl_cli_arg_result;

/* Prepares a for argc arguments. Release with mdl_cli_args_free. */
void mdl_cli_args_init(mdl_cli_args *a, const char *cmd, const char *usage, int argc);
void mdl_cli_args_free(mdl_cli_args *a);

/* Looks at argv[*i]: --help, --set, --threads, --device, or the positional FILE (one
 * only); anything else starting with '-' is an unknown option. */
mdl_cli_arg_result mdl_cli_args_take(mdl_cli_args *a, int argc, char **argv, int *i, int *code);

/* Parses an integer flag value in [min, max]; prints the error and returns
 * false when it is not one. */
bool mdl_cli_int(const char *cmd, const char *flag, const char *value, long min, long max,
                 int *out);

/* Prints "memdl CMD: MESSAGE", the usage's synopsis (its first lines, up
 * to the first blank one) and where the rest is; returns 2. */
int mdl_cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* An unknown option arg (a trailing "=VALUE" ignored): names it, suggests
 * the nearest of opts, prints the synopsis; returns 2. */
int mdl_cli_unknown_option(const char *cmd, const char *usage, const char *arg,
                           const char *const *opts, size_t n_opts);

/* Rewrites a command line the way users type it into the one the commands
 * parse: "--opt=value" becomes "--opt" "value", and Caffe's flags become
 * memdl's with a note on stderr (-weights, -snapshot -> --resume,
 * -iterations, -model and -solver -> the FILE, -gpu N -> --device cuda:N,
 * -sigint_effect/-sighup_effect). argv[0] is the command name (Caffe's
 * `train` becomes `run`). Returns a new argv (the strings are argv's,
 * "--opt=value" cut in two in place, static, or inside the array's own
 * block); the caller frees the array. */
char **mdl_cli_normalize(int argc, char **argv, int *out_argc);

/* After the loop: false (and the usage on stderr) when no FILE was given. */
bool mdl_cli_args_have_path(const mdl_cli_args *a);

/* Loads a->path (kind detected) and applies every --set in order. */
mdl_status mdl_cli_load_job(const mdl_cli_args *a, mdl_job **job, mdl_error *err);

#endif
