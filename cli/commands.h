/* The memdl sub-commands. Each parses its own arguments (including --help)
 * and returns the process exit code: 0 ok, 1 runtime failure, 2 invalid
 * input or usage, 3 acceptance not met, 4 a data check failed, 5 the
 * time budget ran out (CI mode, runtime/ci/ci.h). */
#ifndef MDL_CLI_COMMANDS_H
#define MDL_CLI_COMMANDS_H

int mdl_cmd_certs(int argc, char **argv);
int mdl_cmd_check(int argc, char **argv);
int mdl_cmd_compile(int argc, char **argv);
int mdl_cmd_data(int argc, char **argv);
int mdl_cmd_fingerprint(int argc, char **argv);
int mdl_cmd_run(int argc, char **argv);
int mdl_cmd_test(int argc, char **argv);
int mdl_cmd_time(int argc, char **argv);
int mdl_cmd_worker(int argc, char **argv);

#endif
