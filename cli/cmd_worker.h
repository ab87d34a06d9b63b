/* memdl worker with a chosen trainer table: the product passes its own
 * ("net"), test binaries add theirs, so no test trainer ships in memdl. */
#ifndef MDL_CLI_CMD_WORKER_H
#define MDL_CLI_CMD_WORKER_H

#include "runtime/train/trainer.h"

/* `memdl worker`: parses argv (argv[0] is the command's name; --help prints
 * the usage), serves until shut down, SIGINT or SIGTERM, and returns the
 * exit code (0 ok, 1 runtime failure, 2 usage). */
int mdl_cmd_worker_with(int argc, char **argv, const mdl_trainer_table *trainers);

#endif
