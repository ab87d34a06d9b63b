/* Job loading: kind detection, path resolution, nets embedded in solvers,
 * --set overrides and the errors a user meets first. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/job.h"
#include "tests/testutil.h"

TestSuite(job, .init = tu_dir_setup, .fini = tu_dir_teardown);

static const char NET[] =
    "name: \"tiny\"\n"
    "layer { name: \"in\" type: \"Input\" top: \"x\" input_param { shape { dim: 2 dim: 3 } } }\n"
    "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"x\" top: \"y\"\n"
    "        inner_product_param { num_output: 4 } }\n";

static const char SOLVER[] =
    "net: \"net.prototxt\"\n"
    "base_lr: 0.01  # comment\n"
    "lr_policy: \"inv\" gamma: 0.0001 power: 0.75\n"
    "max_iter: 100 test_iter: 10 test_interval: 50\n"
    "solver_mode: CPU\n";

Test(job, detects_kinds) {
  cr_assert_eq(mdl_detect_kind(NET, strlen(NET)), MDL_KIND_NET);
  cr_assert_eq(mdl_detect_kind(SOLVER, strlen(SOLVER)), MDL_KIND_SOLVER);
  const char *job = "name: \"j\"\nsolver: \"s.prototxt\"\nsync { tau: 4 }\n";
  cr_assert_eq(mdl_detect_kind(job, strlen(job)), MDL_KIND_JOB);
  const char *v1 = "name: \"old\"\nlayers { name: \"c\" type: CONVOLUTION }\n";
  cr_assert_eq(mdl_detect_kind(v1, strlen(v1)), MDL_KIND_NET);
  /* field names inside values and comments do not count */
  const char *tricky = "# base_lr: 1\nname: \"base_lr max_iter\"\nlayer { type: \"ReLU\" }\n";
  cr_assert_eq(mdl_detect_kind(tricky, strlen(tricky)), MDL_KIND_NET);
}

Test(job, solver_embeds_its_net_relative_to_itself) {
  tu_dir_write("net.prototxt", NET);
  const char *solver = tu_dir_write("solver.prototxt", SOLVER);
  mdl_job *job = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_job_load(solver, MDL_KIND_AUTO, &job, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(job->kind, MDL_KIND_SOLVER);
  cr_assert_not_null(job->solver->net_param);
  cr_assert_null(job->solver->net, "the path is replaced by the embedded net");
  cr_assert_str_eq(job->solver->net_param->name, "tiny");
  cr_assert_float_eq(job->solver->base_lr, 0.01f, 1e-9);
  const Caffe__NetParameter *train = mdl_job_net(job, CAFFE__PHASE__TRAIN, 0, &err);
  const Caffe__NetParameter *test = mdl_job_net(job, CAFFE__PHASE__TEST, 0, &err);
  cr_assert_eq(train, test, "a generic net serves both phases");
  mdl_job_free(job);
}

Test(job, job_resolves_paths_against_its_folder_and_overrides_net) {
  tu_dir_write("net.prototxt", NET);
  tu_dir_write("other.prototxt", "name: \"other\"\n");
  tu_dir_write("solver.prototxt", SOLVER);
  const char *path = tu_dir_write("job.prototxt",
                                  "name: \"demo\"\n"
                                  "solver: \"solver.prototxt\"\n"
                                  "net: \"other.prototxt\"\n"
                                  "cluster { workers: 2 }\n"
                                  "accept { metric: \"accuracy\" at_least: 0.5 }\n");
  mdl_job *job = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_job_load(path, MDL_KIND_AUTO, &job, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(job->kind, MDL_KIND_JOB);
  cr_assert_str_eq(job->base_dir, tu_dir);
  cr_assert_str_eq(job->solver->net_param->name, "other", "the job's net wins");
  cr_assert_eq(job->job->cluster->workers, 2);
  cr_assert_eq(job->job->n_accept, 1);
  mdl_job_free(job);
}

/* A dotted path through a repeated message changes the elements there are
 * (the job's one criterion), rather than appending an empty one. */
Test(job, set_changes_the_existing_accept_criterion) {
  tu_dir_write("net.prototxt", NET);
  tu_dir_write("solver.prototxt", SOLVER);
  const char *path = tu_dir_write("job.prototxt",
                                  "solver: \"solver.prototxt\"\nnet: \"net.prototxt\"\n"
                                  "accept { metric: \"accuracy\" at_least: 0.5 }\n");
  mdl_job *job = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_job_load(path, MDL_KIND_AUTO, &job, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(mdl_job_set(job, "accept.at_least=0.9", &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(job->job->n_accept, 1);
  cr_assert_str_eq(job->job->accept[0]->metric, "accuracy");
  cr_assert_float_eq(job->job->accept[0]->at_least, 0.9, 1e-6);
  mdl_job_free(job);
}

Test(job, set_overrides_solver_then_job_fields) {
  tu_dir_write("net.prototxt", NET);
  const char *solver = tu_dir_write("solver.prototxt", SOLVER);
  mdl_job *job = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_job_load(solver, MDL_KIND_AUTO, &job, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(mdl_job_set(job, "max_iter=2000", &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(job->solver->max_iter, 2000);
  cr_assert_eq(mdl_job_set(job, "lr_policy=\"step\"", &err), MDL_OK, "%s", err.msg);
  cr_assert_str_eq(job->solver->lr_policy, "step");
  cr_assert_eq(mdl_job_set(job, "sync.tau=4", &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(job->job->sync->tau, 4);
  cr_assert_not_null(job->solver->net_param, "overrides keep the embedded net");

  cr_assert_eq(job->solver->n_test_iter, 1);
  cr_assert_eq(mdl_job_set(job, "test_iter=5", &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(job->solver->n_test_iter, 1, "a repeated field is replaced, not appended to");
  cr_assert_eq(job->solver->test_iter[0], 5);
  cr_assert_eq(mdl_job_set(job, "test_iter=[3, 4]", &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(job->solver->n_test_iter, 2);

  cr_assert_eq(mdl_job_set(job, "max_itr=5", &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "max_itr"), "%s", err.msg);
  cr_assert_eq(mdl_job_set(job, "max_iter", &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "FIELD=VALUE"), "%s", err.msg);
  cr_assert_eq(mdl_job_set(job, "max_iter=abc", &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "--set max_iter"), "the error names the option: %s", err.msg);
  cr_assert_eq(job->solver->max_iter, 2000, "a failed --set changes nothing");
  /* strings and enums as written, no text-format quoting needed */
  cr_assert_eq(mdl_job_set(job, "snapshot_prefix=/tmp/x/lenet", &err), MDL_OK, "%s", err.msg);
  cr_assert_str_eq(job->solver->snapshot_prefix, "/tmp/x/lenet");
  cr_assert_eq(mdl_job_set(job, "lr_policy=step", &err), MDL_OK, "%s", err.msg);
  cr_assert_str_eq(job->solver->lr_policy, "step");
  cr_assert_eq(mdl_job_set(job, "type=Adam", &err), MDL_OK, "%s", err.msg);
  cr_assert_str_eq(job->solver->type, "Adam");
  cr_assert_eq(mdl_job_set(job, "solver_mode=GPU", &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(mdl_job_set(job, "solver_mode=\"CPU\"", &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(job->solver->solver_mode, CAFFE__SOLVER_PARAMETER__SOLVER_MODE__CPU);
  /* the printed seed's range goes back in */
  cr_assert_eq(mdl_job_set(job, "random_seed=9223372036854775807", &err), MDL_OK, "%s", err.msg);
  /* a field naming a file already loaded is refused, not silently ignored */
  cr_assert_eq(mdl_job_set(job, "net=other.prototxt", &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "read when the file is loaded"), "%s", err.msg);
  mdl_job_free(job);
}

Test(job, errors_name_the_file) {
  mdl_job *job = NULL;
  mdl_error err = {0};
  const char *missing = tu_dir_path("nope.prototxt");
  cr_assert_eq(mdl_job_load(missing, MDL_KIND_AUTO, &job, &err), MDL_ERR_INVALID);
  cr_assert_null(job);
  cr_assert(strstr(err.msg, "nope.prototxt"), "%s", err.msg);

  const char *solver = tu_dir_write("solver.prototxt", SOLVER); /* its net.prototxt is missing */
  cr_assert_eq(mdl_job_load(solver, MDL_KIND_AUTO, &job, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "net.prototxt"), "%s", err.msg);

  const char *both = tu_dir_write("both.prototxt", "solver: \"s\"\nsolver_param { base_lr: 1 }\n");
  cr_assert_eq(mdl_job_load(both, MDL_KIND_JOB, &job, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "not both"), "%s", err.msg);

  const char *nonet = tu_dir_write("nonet.prototxt", "base_lr: 0.1\nmax_iter: 3\n");
  cr_assert_eq(mdl_job_load(nonet, MDL_KIND_AUTO, &job, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "names no net"), "%s", err.msg);

  const char *bad = tu_dir_write("bad.prototxt", "name: \"x\"\nlayer {\n  name: 3\n}\n");
  cr_assert_eq(mdl_job_load(bad, MDL_KIND_NET, &job, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "bad.prototxt:3:"), "position of the bad value: %s", err.msg);
}

Test(job, inline_solver_and_net_in_a_job) {
  const char *path =
      tu_dir_write("inline.prototxt",
                   "solver_param { base_lr: 0.5 max_iter: 7 }\n"
                   "net_param { name: \"inl\" layer { name: \"d\" type: \"Input\" top: \"d\"\n"
                   "  input_param { shape { dim: 1 } } } }\n");
  mdl_job *job = NULL;
  mdl_error err = {0};
  cr_assert_eq(mdl_job_load(path, MDL_KIND_AUTO, &job, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(job->solver->max_iter, 7);
  cr_assert_str_eq(job->solver->net_param->name, "inl");
  mdl_job_free(job);
}
