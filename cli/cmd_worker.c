/* memdl worker: serve a driver (flags and serving live in runtime/worker_main.c
 * so tests run the same worker). */
#include "cli/commands.h"
#include "runtime/worker.h"

int mdl_cmd_worker(int argc, char **argv) {
  return mdl_worker_main(argc, argv);
}
