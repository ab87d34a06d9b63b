/* Runs the built memdl binary from a test and captures what it printed.
 * Tests that use it list "//:memdl" in data; Bazel runs them from the
 * runfiles root, where the binary is ./memdl. */
#ifndef MDL_TESTS_CLITEST_H
#define MDL_TESTS_CLITEST_H

#include <stddef.h>

typedef struct mdl_run_result {
  int exit_code; /* -signal when killed by a signal */
  char *out;     /* stdout, NUL-terminated, malloc'd */
  char *err;     /* stderr, NUL-terminated, malloc'd */
} mdl_run_result;

/* Runs ./memdl with argv (NULL-terminated, without the program name),
 * waiting at most timeout_s seconds (then kills it: exit_code -9). */
mdl_run_result mdl_run_memdl(const char *const *argv, int timeout_s);

/* A signal to send once stderr contains `after` (times: how many in a row,
 * 0 meaning 1). A list ends with after == NULL. */
typedef struct mdl_signal_step {
  const char *after;
  int sig;
  int times;
} mdl_signal_step;

/* mdl_run_memdl, sending steps' signals in order as their text appears. */
mdl_run_result mdl_run_memdl_signals(const char *const *argv, int timeout_s,
                                     const mdl_signal_step *steps);

/* Runs argv[0] (looked up in PATH: mpirun, a script) with argv, in a
 * process group of its own; on timeout SIGTERM to it, and SIGKILL to its
 * group 15 s later (exit_code then -15 or -9). */
mdl_run_result mdl_run_program(const char *const *argv, int timeout_s);

void mdl_run_result_free(mdl_run_result *r);

/* The last non-empty line of s, copied into buf. */
const char *mdl_last_line(const char *s, char *buf, size_t size);

#endif
