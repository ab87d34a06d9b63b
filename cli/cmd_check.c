/* memdl check: parse nets, solvers and jobs, load what they refer to, and
 * check that every layer type is one memdl knows; warn, with the reason,
 * about valid Caffe layers no backend runs (Python, WindowData). */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "compiler/job.h"
#include "compiler/layers.h"
#include "runtime/data/dataset.h"
#include "runtime/engine/layer.h"
#include "runtime/train/device.h"

static const char USAGE[] =
    "usage: memdl check [--as net|solver|job] FILE...\n"
    "\n"
    "Parses each file (the kind is detected from its fields unless --as says),\n"
    "loads the nets and solvers it names and checks every layer type.\n"
    "Layers that are valid Caffe but that no memdl backend runs (Python,\n"
    "WindowData) get a warning on stderr saying why; they do not fail the check.\n"
    "Prints `FILE: ok (KIND)` per valid file; errors go to stderr as\n"
    "file:line:col: message.\n"
    "exit status: 0 all valid, 2 any invalid\n";

static mdl_status check_layer_types(const Caffe__NetParameter *net, const char *file,
                                    mdl_error *err) {
  if (!net) return MDL_OK;
  const mdl_backend *be;
  mdl_status st = mdl_device_backend("cpu", &be, err);
  if (st != MDL_OK) return st;
  for (size_t i = 0; i < net->n_layer; i++) {
    const Caffe__LayerParameter *l = net->layer[i];
    if (!l->type || !mdl_layer_find(l->type))
      return mdl_errorf(err, MDL_ERR_INVALID, "%s: layer \"%s\": unknown type \"%s\"", file,
                        l->name ? l->name : "", l->type ? l->type : "");
    /* Valid Caffe, but no backend can run it: say so now, and why, not at
     * run time. The CPU backend runs every type any backend runs. */
    char why[1700];
    if (mdl_data_is_pipeline_layer(l) || mdl_backend_supports_layer(be, l, why, sizeof why))
      continue;
    const char *reason = mdl_layer_unsupported_reason(l->type);
    fprintf(stderr,
            "%s: warning: layer \"%s\" (%s) is valid Caffe but no memdl backend runs it: %s\n",
            file, l->name ? l->name : "", l->type, reason ? reason : why);
  }
  for (size_t i = 0; i < net->n_layers; i++) {
    const Caffe__V1LayerParameter *l = net->layers[i];
    if (l->has_type && !mdl_layer_find_v1(l->type))
      return mdl_errorf(err, MDL_ERR_INVALID, "%s: layers \"%s\": unsupported V1 type %d", file,
                        l->name ? l->name : "", (int)l->type);
  }
  return MDL_OK;
}

static mdl_status check_file(const char *path, mdl_file_kind kind, mdl_error *err,
                             mdl_file_kind *found) {
  mdl_job *job = NULL;
  mdl_status st = mdl_job_load(path, kind, &job, err);
  if (st) return st;
  *found = job->kind;
  const Caffe__SolverParameter *s = job->solver;
  const char *net_file = job->net_path ? job->net_path : path;
  st = check_layer_types(s->net_param, net_file, err);
  if (!st) st = check_layer_types(s->train_net_param, net_file, err);
  for (size_t i = 0; !st && i < s->n_test_net_param; i++)
    st = check_layer_types(s->test_net_param[i], net_file, err);
  mdl_job_free(job);
  return st;
}

int mdl_cmd_check(int argc, char **argv) {
  mdl_file_kind kind = MDL_KIND_AUTO;
  int n_files = 0, n_bad = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(USAGE, stdout);
      return 0;
    }
    if (!strcmp(argv[i], "--as")) {
      if (i + 1 >= argc || mdl_kind_parse(argv[i + 1], &kind)) {
        fprintf(stderr, "memdl check: --as takes net, solver or job\n");
        return 2;
      }
      i++;
      continue;
    }
    if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "memdl check: unknown option %s\n%s", argv[i], USAGE);
      return 2;
    }
    n_files++;
    mdl_error err = {0};
    mdl_file_kind found = kind;
    if (check_file(argv[i], kind, &err, &found)) {
      fprintf(stderr, "%s\n", err.msg);
      n_bad++;
    } else {
      printf("%s: ok (%s)\n", argv[i], mdl_kind_name(found));
    }
  }
  if (n_files == 0) {
    fputs(USAGE, stderr);
    return 2;
  }
  return n_bad ? 2 : 0;
}
