/* The GPU backend where there may be no GPU: the plugin is built exactly
 * when the build found CUDA (gpu/cuda_status.txt); `cpu` never loads it;
 * without a usable GPU `cuda` is refused naming why and `auto` falls back
 * saying why; with one, every GPU layer matches the CPU's (gpu_check.c) and
 * a layer the GPU lacks sends `auto` to the CPU and `cuda` to an error that
 * names it. GPU-only checks skip with the reason where there is no GPU. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/textformat.h"
#include "runtime/train/device.h"
#include "tests/clitest.h"
#include "tests/gpu_check.h"

/* The GPU backend, or NULL with why filled. */
static const mdl_backend *usable_gpu(char *why, size_t size) {
  const mdl_backend *be;
  mdl_error err;
  if (mdl_device_backend("cuda", &be, &err) == MDL_OK) return be;
  snprintf(why, size, "%s", err.msg);
  return NULL;
}

Test(gpu, the_plugin_is_built_exactly_when_cuda_was_found) {
  FILE *f = fopen("gpu/cuda_status.txt", "r");
  cr_assert(f, "gpu/cuda_status.txt is missing from the runfiles");
  char line[1024] = "";
  cr_assert(fgets(line, sizeof line, f));
  fclose(f);
  bool found = strncmp(line, "found", 5) == 0;
  cr_assert_eq(mdl_device_gpu_built(), found, "build says \"%.200s\", loading says \"%s\"", line,
               mdl_device_gpu_plugin());
  cr_log_info("CUDA at build: %s", line);
}

Test(gpu, cpu_never_loads_the_plugin) {
  const mdl_backend *be;
  mdl_error err;
  cr_assert_eq(mdl_device_backend("cpu", &be, &err), MDL_OK);
  cr_assert_eq(be, mdl_device_cpu());
  FILE *f = fopen("/proc/self/maps", "r");
  cr_assert(f);
  char line[4096];
  while (fgets(line, sizeof line, f))
    cr_assert(!strstr(line, "libmemdl_cuda") && !strstr(line, "libcudnn"),
              "mapped after --device cpu: %s", line);
  fclose(f);
}

Test(gpu, cuda_without_a_usable_gpu_is_refused_saying_why) {
  char why[2048];
  if (usable_gpu(why, sizeof why)) cr_skip_test("a GPU is usable here");
  const mdl_backend *be = (const mdl_backend *)1;
  mdl_error err;
  cr_assert_eq(mdl_device_backend("cuda:0", &be, &err), MDL_ERR_INVALID);
  cr_assert_null(be);
  cr_assert(strstr(err.msg, "device cuda:0: no usable GPU: "), "%s", err.msg);
  cr_assert(strstr(err.msg, "use --device cpu or auto"), "%s", err.msg);
}

Test(gpu, auto_says_which_device_and_why) {
  char why[2048], note[4096];
  const mdl_backend *gpu = usable_gpu(why, sizeof why);
  const mdl_backend *be;
  mdl_error err;
  cr_assert_eq(mdl_device_resolve("auto", NULL, 0, &be, note, sizeof note, &err), MDL_OK);
  if (gpu) {
    cr_assert_eq(be, gpu);
    cr_assert(strstr(note, "device auto: cuda:0 ("), "%s", note);
  } else {
    cr_assert_eq(be, mdl_device_cpu());
    cr_assert(strstr(note, "device auto: cpu (no usable GPU: "), "%s", note);
  }
}

static const char NET_WITH_ELU[] =
    "layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 3 } } }\n"
    "layer { name: 'act' type: 'ELU' bottom: 'x' top: 'y' }\n"
    "layer { name: 'ip' type: 'InnerProduct' bottom: 'y' top: 'z' "
    "inner_product_param { num_output: 2 } }\n";

Test(gpu, a_layer_the_gpu_lacks_keeps_auto_on_the_cpu_and_fails_cuda) {
  char why[2048], note[4096];
  if (!usable_gpu(why, sizeof why)) cr_skip_test("no usable GPU: %s", why);
  Caffe__NetParameter *np;
  mdl_error err;
  cr_assert_eq(mdl_text_parse(NET_WITH_ELU, strlen(NET_WITH_ELU), "net",
                              &caffe__net_parameter__descriptor, (ProtobufCMessage **)&np, &err),
               MDL_OK, "%s", err.msg);
  const Caffe__NetParameter *nets[] = {np};
  const mdl_backend *be;
  cr_assert_eq(mdl_device_resolve("auto", nets, 1, &be, note, sizeof note, &err), MDL_OK);
  cr_assert_eq(be, mdl_device_cpu());
  cr_assert(strstr(note, "\"act\" (no ELU implementation)"), "%s", note);
  cr_assert_eq(mdl_device_resolve("cuda", nets, 1, &be, note, sizeof note, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "\"act\""), "%s", err.msg);
  caffe__net_parameter__free_unpacked(np, NULL);
}

/* The harness itself: the CPU against itself gives the same bits. */
Test(gpu, the_layer_check_compares_cpu_with_itself_exactly) {
  int n = mdl_gpu_check_n_cases();
  mdl_gpu_case_result *r = calloc((size_t)n, sizeof *r);
  int failed = mdl_gpu_check_layers(mdl_device_cpu(), mdl_device_cpu(), r, NULL);
  for (int i = 0; i < n; i++) {
    cr_expect(!r[i].why[0], "%s: %s", r[i].name, r[i].why);
    cr_expect_eq(r[i].worst, 0.0, "%s: %g", r[i].name, r[i].worst);
    cr_expect_gt(r[i].compared, 0, "%s compared nothing", r[i].name);
  }
  cr_assert_eq(failed, 0);
  free(r);
}

Test(gpu, every_gpu_layer_matches_the_cpu, .timeout = 120) {
  char why[2048];
  const mdl_backend *gpu = usable_gpu(why, sizeof why);
  if (!gpu) cr_skip_test("no usable GPU: %s", why);
  int n = mdl_gpu_check_n_cases();
  mdl_gpu_case_result *r = calloc((size_t)n, sizeof *r);
  int failed = mdl_gpu_check_layers(mdl_device_cpu(), gpu, r, stderr);
  for (int i = 0; i < n; i++)
    cr_expect(!r[i].why[0] && !r[i].bad_values && r[i].worst <= r[i].tol,
              "%s: worst %g (tol %g), %d NaN/Inf %s", r[i].name, r[i].worst, r[i].tol,
              r[i].bad_values, r[i].why);
  cr_assert_eq(failed, 0);
  free(r);
}

/* ---- the command line ------------------------------------------------------ */

Test(gpu_cli, version_lists_the_backends) {
  const char *argv[] = {"--version", NULL};
  mdl_run_result r = mdl_run_memdl(argv, 60);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.out, "backends: cpu"), "%s", r.out);
  cr_assert(strstr(r.out, mdl_device_gpu_built() ? "cuda (plugin " : "(no cuda: "), "%s", r.out);
  mdl_run_result_free(&r);
}

Test(gpu_cli, device_cuda_without_a_gpu_exits_2_saying_why) {
  char why[2048];
  if (usable_gpu(why, sizeof why)) cr_skip_test("a GPU is usable here");
  const char *argv[] = {
      "time", "tests/nets/lenet.prototxt", "--iterations", "1", "--device", "cuda", NULL};
  mdl_run_result r = mdl_run_memdl(argv, 120);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  cr_assert(strstr(r.err, "device cuda: no usable GPU: "), "%s", r.err);
  mdl_run_result_free(&r);
}

Test(gpu_cli, device_auto_without_a_gpu_runs_on_the_cpu_saying_why) {
  char why[2048];
  if (usable_gpu(why, sizeof why)) cr_skip_test("a GPU is usable here");
  const char *argv[] = {"time",
                        "tests/nets/lenet.prototxt",
                        "--iterations",
                        "1",
                        "--device",
                        "auto",
                        "--threads",
                        "1",
                        NULL};
  mdl_run_result r = mdl_run_memdl(argv, 120);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.err, "device auto: cpu (no usable GPU: "), "%s", r.err);
  mdl_run_result_free(&r);
}

Test(gpu_cli, a_bad_device_name_is_refused) {
  const char *argv[] = {"time", "tests/nets/lenet.prototxt", "--device", "gpu0", NULL};
  mdl_run_result r = mdl_run_memdl(argv, 60);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  cr_assert(strstr(r.err, "--device takes cpu, cuda, cuda:N or auto"), "%s", r.err);
  mdl_run_result_free(&r);
}

Test(gpu_cli, compile_says_where_the_nets_would_run) {
  char why[2048];
  bool gpu = usable_gpu(why, sizeof why) != NULL;
  const char *argv[] = {"compile", "tests/nets/lenet.prototxt", "--device", "auto", NULL};
  mdl_run_result r = mdl_run_memdl(argv, 60);
  cr_assert_eq(r.exit_code, 0, "%s", r.err);
  cr_assert(strstr(r.out, gpu ? "device auto: cuda:0 (" : "device auto: cpu ("), "%s", r.out);
  mdl_run_result_free(&r);
  const char *argv2[] = {"compile", "tests/nets/lenet.prototxt", "--device", "cuda", NULL};
  r = mdl_run_memdl(argv2, 60);
  cr_assert_eq(r.exit_code, gpu ? 0 : 2, "%s", r.err);
  mdl_run_result_free(&r);
}

Test(gpu_cli, a_worker_asked_for_a_gpu_it_lacks_exits_2) {
  char why[2048];
  if (usable_gpu(why, sizeof why)) cr_skip_test("a GPU is usable here");
  const char *argv[] = {"worker", "--listen", "127.0.0.1:0", "--device", "cuda:1", NULL};
  mdl_run_result r = mdl_run_memdl(argv, 60);
  cr_assert_eq(r.exit_code, 2, "%s", r.err);
  cr_assert(strstr(r.err, "device cuda:1: no usable GPU: "), "%s", r.err);
  mdl_run_result_free(&r);
}
