/* Worker main, driver options and "linear" plans for the distributed
 * runtime tests (see driver_test_util.h). */
#include "tests/driver_test_util.h"

#include <criterion/criterion.h>
#include <string.h>

#include "cli/cmd_worker.h"
#include "common/pb.h"
#include "runtime/dist/worker.h"

const char *const DT_WORKER_ARGV[1] = {"--mdl-worker"};
const char *const DT_UNSET_ENV[2] = {"BXFI_MAP", NULL};

/* `--mdl-worker ...` runs a worker, anything else the Criterion tests. This
 * main is linked into the test binary itself (linkstatic in tests/BUILD) and
 * is a full function: Criterion's sandbox (BoxFort) patches a 16-byte jump
 * over the start of the executable's main in every test process. */
static const mdl_trainer_i *const test_trainers[] = {&mdl_trainer_net, &mdl_trainer_linear,
                                                     &mdl_trainer_liar, &mdl_trainer_slow};
const mdl_trainer_table DT_TRAINERS = {test_trainers, 4};

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--mdl-worker"))
    return mdl_cmd_worker_with(argc - 1, argv + 1, &DT_TRAINERS);
  struct criterion_test_set *tests = criterion_initialize();
  int result = 0;
  if (criterion_handle_args(argc, argv, true)) result = !criterion_run_all_tests(tests);
  criterion_finalize(tests);
  return result;
}

mdl_driver_opts dt_opts(const char *workers, const char *trainer, FILE *log) {
  mdl_driver_opts o = {.workers = workers,
                       .trainer = trainer,
                       .trainers = &DT_TRAINERS,
                       .snapshot_rounds = -1,
                       .worker_argv = DT_WORKER_ARGV,
                       .n_worker_argv = 1,
                       .worker_unset_env = DT_UNSET_ENV,
                       .round_timeout_ms = 20000,
                       .setup_timeout_ms = 20000,
                       .log = log,
                       .quiet = true};
  return o;
}

Memdl__Plan *dt_linear_plan(const dt_lin_spec *s, const char *job_name, uint64_t seed,
                            uint32_t test_parts) {
  Caffe__SolverParameter sp = CAFFE__SOLVER_PARAMETER__INIT;
  sp.has_base_lr = sp.has_momentum = sp.has_max_iter = sp.has_test_interval = 1;
  sp.base_lr = s->lr;
  sp.momentum = s->momentum;
  sp.max_iter = s->max_iter;
  sp.test_interval = s->test_interval;
  sp.lr_policy = "fixed";
  sp.type = "SGD";
  uint32_t shape[1] = {(uint32_t)s->d};
  Memdl__SyntheticSource syn[2] = {MEMDL__SYNTHETIC_SOURCE__INIT, MEMDL__SYNTHETIC_SOURCE__INIT};
  Memdl__Source src[2] = {MEMDL__SOURCE__INIT, MEMDL__SOURCE__INIT};
  Memdl__DataSet ds[2] = {MEMDL__DATA_SET__INIT, MEMDL__DATA_SET__INIT};
  Memdl__DataSet *dsp[2] = {&ds[0], &ds[1]};
  const char *names[2] = {"train", "test"};
  uint64_t recs[2] = {s->records, s->test_records};
  for (int i = 0; i < 2; i++) {
    syn[i].n_shape = 1;
    syn[i].shape = shape;
    syn[i].has_records = syn[i].has_seed = 1;
    syn[i].records = recs[i];
    syn[i].seed = seed + (uint64_t)i;
    src[i].kind_case = MEMDL__SOURCE__KIND_SYNTHETIC;
    src[i].synthetic = &syn[i];
    ds[i].name = (char *)names[i];
    ds[i].source = &src[i];
    ds[i].has_partitions = ds[i].has_batch_size = 1;
    ds[i].partitions = i == 0 ? (uint32_t)s->parts : test_parts;
    ds[i].batch_size = (uint32_t)s->batch;
  }
  Memdl__Sync sync = MEMDL__SYNC__INIT;
  sync.has_tau = 1;
  sync.tau = (uint32_t)s->tau;
  Memdl__Plan plan = MEMDL__PLAN__INIT;
  plan.job_name = (char *)job_name;
  plan.solver = &sp;
  plan.n_data = s->test_records ? 2 : 1;
  plan.data = dsp;
  plan.sync = &sync;
  return mdl_pb_dup(&plan);
}
