/* memdl compile: load a job (or a Caffe solver or net), build every phase's
 * graph and print the plan: a summary, blob shapes, or the Plan message. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/compile_report.h"
#include "common/pb.h"
#include "compiler/plan.h"
#include "compiler/textformat.h"
#include "runtime/data/dataset.h"
#include "runtime/data/dataset_resolver.h"
#include "runtime/dist/driver.h"
#include "runtime/train/device.h"

static const char USAGE[] =
    "usage: memdl compile FILE [--shapes] [--phase train|test] [--stage S]... [--plan] "
    "[--explain]\n"
    "                          [--dot FILE] [--json FILE|-] [--workers SPEC] [--calibrate]\n"
    "                          [--output DIR] [--threads T] [--as net|solver|job]\n"
    "                          [--set FIELD=VALUE]... [--device D]\n"
    "\n"
    "Checks FILE (a job, a Caffe solver or a Caffe net), resolves each phase's\n"
    "net (include/exclude rules, stages, V1 layers, splits) and infers shapes.\n"
    "  --shapes        print every blob's shape: `<phase> <blob> <d0>x<d1>x...`\n"
    "  --phase P       only the train or the test nets\n"
    "  --stage S       add S to every net's stages, for include/exclude rules\n"
    "  --plan          print the Plan message the workers receive (text format)\n"
    "  --explain       print each pass and what it changed, a per-layer table (top\n"
    "                  shape, FLOPs, bytes, time), the memory planner's figures,\n"
    "                  the calibration and the tuner's choice with its arithmetic\n"
    "  --dot FILE      write the plan's DAG as Graphviz (data stages, per-worker\n"
    "                  blocks, batch, layers, loss); - for stdout\n"
    "  --json FILE     write the plan for tools as JSON; - for stdout\n"
    "  --workers SPEC  the run's workers, as memdl run takes them (local:K or\n"
    "                  HOST:PORT,...): the tuner plans for them\n"
    "  --calibrate     start those workers and measure them as memdl run does\n"
    "                  before its first round (cached in the output folder, where\n"
    "                  memdl run reuses it); the tuner then uses the figures\n"
    "  --output DIR    the run's output folder (default: the job's)\n"
    "  --threads T     threads per worker, as memdl run takes them\n"
    "  --as KIND       read FILE as a net, solver or job instead of detecting it\n"
    "  --set F=V       override a solver or job field (repeatable)\n"
    "  --device D      say where the nets would run: auto, cpu, cuda or cuda:N\n"
    "                  (exit 2 when that GPU is not usable or lacks a layer)\n"
    "exit status: 0 ok, 1 runtime failure (calibration), 2 invalid input\n";

/* Naive (every buffer its own) against planned bytes, from compiler/plan.h. */
static void print_memory(const mdl_compiled *c, int i, const Caffe__SolverParameter *solver) {
  mdl_mem_figures f;
  mdl_plan_memory(c, i, solver, &f);
  const double M = 1024.0 * 1024.0;
  size_t naive = f.arena_naive + f.workspace_naive + f.params + f.solver_state;
  size_t planned = f.arena + f.workspace + f.params + f.solver_state;
  printf(
      "  memory MiB, naive -> planned: data %.1f -> %.1f, diffs %.1f -> %.1f (shared arena "
      "%.1f), im2col workspace %.1f -> %.1f, params+grads %.1f, solver state %.1f; total %.1f -> "
      "%.1f\n",
      f.data_naive / M, f.data_planned / M, f.diff_naive / M, f.diff_planned / M, f.arena / M,
      f.workspace_naive / M, f.workspace / M, f.params / M, f.solver_state / M, naive / M,
      planned / M);
}

static void print_summary(const mdl_job *job, const mdl_compiled *c) {
  printf("job %s (%s)\n", job->job->name ? job->job->name : job->path, mdl_kind_name(job->kind));
  for (int i = 0; i < c->n_nets; i++) {
    const mdl_graph *g = c->nets[i].graph;
    int64_t params = 0, acts = 0;
    for (int l = 0; l < g->n_layers; l++)
      for (int k = 0; k < g->layers[l].n_param; k++)
        params += mdl_shape_count(&g->layers[l].param_shape[k]);
    for (int b = 0; b < g->n_blobs; b++) acts += mdl_shape_count(&g->blob_shape[b]);
    printf("%s net %d: %d layers, %d blobs, %lld learnable values (%.2f MB), %.2f MB of blobs\n",
           mdl_phase_name(c->nets[i].phase), c->nets[i].test_index, g->n_layers, g->n_blobs,
           (long long)params, params * 4.0 / 1e6, acts * 4.0 / 1e6);
    print_memory(c, i, job->solver);
  }
}

/* Workers the job runs on: the data sets' default partition count, one
 * partition per worker so that each rebuilds only its own. */
static uint32_t job_workers(const Memdl__Job *j) {
  if (j->cluster && j->cluster->n_worker) return (uint32_t)j->cluster->n_worker;
  if (j->cluster && j->cluster->workers) return j->cluster->workers;
  return 1;
}

static mdl_status print_pipeline(const mdl_job *job, mdl_error *err) {
  const Memdl__Job *j = job->job;
  for (size_t i = 0; i < j->n_data; i++) {
    Memdl__DataSet *ds = NULL;
    mdl_status st = mdl_data_resolve(j->data, j->n_data, j->data[i], &ds, err);
    mdl_data_info info;
    if (!st) st = mdl_data_probe(ds, job->base_dir, &info, err);
    if (st) {
      mdl_pb_free(ds);
      return st;
    }
    char *plan = mdl_data_describe(ds);
    uint32_t parts = ds->partitions ? ds->partitions : job_workers(j);
    printf(
        "data %s: %s\n  %u partition%s, %lld records (%lld after split/sample), %dx%dx%d, "
        "%.1f MiB\n",
        ds->name ? ds->name : "?", plan, parts, parts == 1 ? "" : "s", (long long)info.records,
        (long long)info.selected, info.channels, info.height, info.width,
        info.bytes / (1024.0 * 1024.0));
    free(plan);
    mdl_pb_free(ds);
  }
  return MDL_OK;
}

static void print_shapes(const mdl_compiled *c) {
  char buf[256];
  for (int i = 0; i < c->n_nets; i++) {
    const mdl_phase_net *pn = &c->nets[i];
    /* a second test net is labelled TEST1, TEST2, ... */
    char label[32];
    if (pn->phase == CAFFE__PHASE__TEST && pn->test_index > 0)
      snprintf(label, sizeof label, "TEST%d", pn->test_index);
    else
      snprintf(label, sizeof label, "%s", mdl_phase_name(pn->phase));
    const mdl_graph *g = pn->graph;
    for (int b = 0; b < g->n_blobs; b++)
      printf("%s %s %s\n", label, g->blob_name[b],
             mdl_shape_str(&g->blob_shape[b], buf, sizeof buf));
  }
}

typedef struct compile_opts {
  const char *file;
  mdl_file_kind kind;
  int shapes, plan, explain, calibrate, phase, threads;
  const char *sets[64], *stages[64], *device, *dot, *json, *workers, *output;
  int n_sets, n_stages;
} compile_opts;

/* A repeatable option's value into list (64 at most). */
static bool push(const char *flag, const char **list, int *n, const char *v) {
  if (*n == 64) {
    fprintf(stderr, "memdl compile: too many %s options\n", flag);
    return false;
  }
  list[(*n)++] = v;
  return true;
}

/* Reads argv into o; -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, compile_opts *o) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    bool next = i + 1 < argc;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(USAGE, stdout);
      return 0;
    } else if (!strcmp(a, "--shapes")) {
      o->shapes = 1;
    } else if (!strcmp(a, "--plan")) {
      o->plan = 1;
    } else if (!strcmp(a, "--explain")) {
      o->explain = 1;
    } else if (!strcmp(a, "--calibrate")) {
      o->calibrate = 1;
    } else if (!strcmp(a, "--dot") && next) {
      o->dot = argv[++i];
    } else if (!strcmp(a, "--json") && next) {
      o->json = argv[++i];
    } else if (!strcmp(a, "--workers") && next) {
      o->workers = argv[++i];
    } else if (!strcmp(a, "--output") && next) {
      o->output = argv[++i];
    } else if (!strcmp(a, "--threads") && next) {
      if (!mdl_cli_int("compile", "--threads", argv[++i], 0, 4096, &o->threads)) return 2;
    } else if (!strcmp(a, "--phase") && next) {
      const char *p = argv[++i];
      if (!strcmp(p, "train") || !strcmp(p, "test")) {
        o->phase = !strcmp(p, "train") ? CAFFE__PHASE__TRAIN : CAFFE__PHASE__TEST;
      } else {
        fprintf(stderr, "memdl compile: --phase takes train or test, not \"%s\"\n", p);
        return 2;
      }
    } else if (!strcmp(a, "--as") && next) {
      if (mdl_kind_parse(argv[++i], &o->kind)) {
        fprintf(stderr, "memdl compile: --as takes net, solver or job\n");
        return 2;
      }
    } else if (!strcmp(a, "--device") && next) {
      o->device = argv[++i];
      if (!mdl_device_valid(o->device)) {
        fprintf(stderr, "memdl compile: --device takes cpu, cuda, cuda:N or auto, not \"%s\"\n",
                o->device);
        return 2;
      }
    } else if (!strcmp(a, "--stage") && next) {
      if (!push("--stage", o->stages, &o->n_stages, argv[++i])) return 2;
    } else if (!strcmp(a, "--set") && next) {
      if (!push("--set", o->sets, &o->n_sets, argv[++i])) return 2;
    } else if (a[0] == '-' && a[1]) {
      static const char *const opts[] = {"--shapes", "--plan",    "--explain", "--phase",
                                         "--as",     "--stage",   "--set",     "--help",
                                         "--dot",    "--json",    "--workers", "--calibrate",
                                         "--output", "--threads", "--device"};
      return mdl_cli_unknown_option("compile", USAGE, a, opts, sizeof opts / sizeof *opts);
    } else if (o->file) {
      fprintf(stderr, "memdl compile: one file at a time (got %s and %s)\n", o->file, a);
      return 2;
    } else {
      o->file = a;
    }
  }
  if (!o->file) {
    fputs(USAGE, stderr);
    return 2;
  }
  if (o->calibrate && !(o->explain || o->json || o->dot))
    o->explain = 1; /* else it shows nothing */
  return -1;
}

/* --calibrate: the run's own calibration (runtime/dist), workers started
 * and stopped; its figures into *out. */
static mdl_status calibrate(const mdl_job *job, const compile_opts *o, mdl_calibration *out,
                            mdl_error *err) {
  if (job->kind == MDL_KIND_NET)
    return mdl_errorf(err, MDL_ERR_INVALID, "--calibrate needs a job or solver, not a net");
  mdl_driver_opts d = {.workers = o->workers ? o->workers : "local:1",
                       .out_dir = o->output,
                       .threads = o->threads,
                       .device = o->device,
                       .calibrate_only = true,
                       .quiet = true};
  mdl_driver_result res;
  mdl_status st = mdl_driver_run(job, &d, &res, err);
  if (st != MDL_OK) return st;
  *out = res.calibration;
  memset(&res.calibration, 0, sizeof res.calibration);
  mdl_driver_result_free(&res);
  if (out->n_workers == 0)
    return mdl_errorf(err, MDL_ERR_INTERNAL, "calibration measured nothing (see the log above)");
  return MDL_OK;
}

/* --dot and --json to a file or stdout ("-"). */
static mdl_status write_view(const char *path, bool json, const mdl_compile_report_in *in,
                             mdl_error *err) {
  FILE *f = strcmp(path, "-") ? fopen(path, "w") : stdout;
  if (!f) return mdl_errorf(err, MDL_ERR_INVALID, "%s: cannot write: %s", path, strerror(errno));
  mdl_status st = MDL_OK;
  if (json)
    st = mdl_compile_json(f, in, err);
  else
    mdl_compile_dot(f, in);
  if (f != stdout && fclose(f) != 0 && st == MDL_OK)
    st = mdl_errorf(err, MDL_ERR_INTERNAL, "%s: write failed", path);
  return st;
}

/* What the options ask for, from the compiled job. */
static mdl_status report(const mdl_job *job, const mdl_compiled *c, const compile_opts *o,
                         mdl_error *err) {
  if (o->shapes) print_shapes(c);
  if (o->plan) {
    Memdl__Plan *p = mdl_plan_new(job, c);
    char *text = mdl_text_print(&p->base);
    fputs(text, stdout);
    free(text);
    mdl_pb_free(p);
  }
  mdl_calibration cal = {0};
  mdl_status st = MDL_OK;
  if (o->calibrate) st = calibrate(job, o, &cal, err);
  bool remote = false;
  int k = mdl_driver_count_workers(job, o->workers, &remote);
  mdl_compile_report_in in = {job, c, k, remote, cal.n_workers ? &cal : NULL};
  if (st == MDL_OK && o->explain) st = mdl_compile_explain(stdout, &in, err);
  if (st == MDL_OK && o->dot) st = write_view(o->dot, false, &in, err);
  if (st == MDL_OK && o->json) st = write_view(o->json, true, &in, err);
  mdl_calibration_free(&cal);
  if (st == MDL_OK && o->device) {
    const Caffe__NetParameter **nets = calloc((size_t)c->n_nets + 1, sizeof *nets);
    for (int i = 0; i < c->n_nets; i++) nets[i] = c->nets[i].graph->net;
    const mdl_backend *be;
    char note[4096];
    st = mdl_device_resolve(o->device, nets, c->n_nets, &be, note, sizeof note, err);
    free(nets);
    if (st == MDL_OK) printf("%s\n", note[0] ? note : "device cpu");
  }
  if (st == MDL_OK && !o->shapes && !o->plan && !o->explain && !o->dot && !o->json) {
    print_summary(job, c);
    st = print_pipeline(job, err);
  }
  return st;
}

int mdl_cmd_compile(int argc, char **argv) {
  compile_opts o = {.kind = MDL_KIND_AUTO, .phase = -1};
  int code = parse_args(argc, argv, &o);
  if (code >= 0) return code;
  mdl_error err = {0};
  mdl_job *job = NULL;
  mdl_compiled *c = NULL;
  mdl_status st = mdl_job_load(o.file, o.kind, &job, &err);
  for (int i = 0; st == MDL_OK && i < o.n_sets; i++) st = mdl_job_set(job, o.sets[i], &err);
  if (st == MDL_OK) {
    mdl_data_catalog catalog = {job->job->data, job->job->n_data, job->base_dir};
    mdl_compile_opts copts = {.phase = o.phase, .stage = o.stages, .n_stage = o.n_stages};
    st = mdl_compile_job_opts(job, mdl_data_source_info, &catalog, &copts, &c, &err);
  }
  if (st == MDL_OK) st = report(job, c, &o, &err);
  if (st) fprintf(stderr, "%s\n", err.msg);
  mdl_compiled_free(c);
  mdl_job_free(job);
  return mdl_exit_code(st);
}
