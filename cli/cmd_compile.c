/* memdl compile: load a job (or a Caffe solver or net), build every phase's
 * graph and print the plan: a summary, blob shapes, or the Plan message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "common/pb.h"
#include "compiler/plan.h"
#include "compiler/textformat.h"
#include "compiler/tuner.h"
#include "runtime/data/dataset.h"
#include "runtime/data/dataset_resolver.h"
#include "runtime/train/device.h"

static const char USAGE[] =
    "usage: memdl compile FILE [--shapes] [--phase train|test] [--stage S]... [--plan] "
    "[--explain]\n"
    "                          [--as net|solver|job] [--set FIELD=VALUE]... [--device D]\n"
    "\n"
    "Checks FILE (a job, a Caffe solver or a Caffe net), resolves each phase's\n"
    "net (include/exclude rules, stages, V1 layers, splits) and infers shapes.\n"
    "  --shapes        print every blob's shape: `<phase> <blob> <d0>x<d1>x...`\n"
    "  --phase P       only the train or the test nets\n"
    "  --stage S       add S to every net's stages, for include/exclude rules\n"
    "  --plan          print the Plan message the workers receive (text format)\n"
    "  --explain       print the cost model and the tau the tuner would choose\n"
    "  --as KIND       read FILE as a net, solver or job instead of detecting it\n"
    "  --set F=V       override a solver or job field (repeatable)\n"
    "  --device D      say where the nets would run: auto, cpu, cuda or cuda:N\n"
    "                  (exit 2 when that GPU is not usable or lacks a layer)\n"
    "exit status: 0 ok, 2 invalid input\n";

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

/* The numbers behind tau: the cost model of the TRAIN net and the tuner's
 * choice for 2, 4 and the job's own worker count, local and remote. */
static void print_explain(const mdl_job *job, const mdl_compiled *c) {
  if (c->n_nets == 0 || c->nets[0].phase != CAFFE__PHASE__TRAIN) {
    printf("explain: no TRAIN net, nothing to tune\n");
    return;
  }
  mdl_cost cost;
  mdl_cost_of(c->nets[0].graph, &cost);
  const Memdl__Sync *sync = job->job->sync;
  double f = sync && sync->max_comm_fraction > 0 ? sync->max_comm_fraction : 0.1;
  printf(
      "cost: batch %lld, forward %.2f MFLOP per sample, training %.1f MFLOP per iteration, "
      "%lld learnable values (%.2f MB per copy of the weights)\n",
      (long long)cost.batch, cost.forward_flops / 1e6 / (cost.batch ? cost.batch : 1),
      cost.train_flops / 1e6, (long long)cost.param_values, cost.param_values * 4.0 / 1e6);
  printf(
      "tuner: smallest tau keeping communication <= %.0f%% of a round (sync.max_comm_fraction)"
      "%s\n",
      100 * f, sync && sync->tau ? "; the job fixes sync.tau, so this is for reference" : "");
  printf("  %-8s %-14s %12s %12s %6s %8s\n", "workers", "transport", "iter ms", "round comm ms",
         "tau", "comm %");
  uint32_t own = job_workers(job->job);
  uint32_t ks[] = {2, 4, own};
  for (int i = 0; i < 3; i++) {
    if (i == 2 && (own == 2 || own == 4)) break;
    for (int remote = 0; remote < 2; remote++) {
      mdl_tune_input in = mdl_tune_defaults((int)ks[i], remote, f);
      mdl_tune_result r = mdl_tune_tau(&cost, &in);
      printf("  %-8u %-14s %12.2f %12.2f %6d %7.1f%%\n", ks[i], remote ? "gRPC" : "shared memory",
             r.iter_s * 1e3, r.comm_s * 1e3, r.tau, 100 * r.comm_fraction);
    }
  }
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

int mdl_cmd_compile(int argc, char **argv) {
  const char *file = NULL;
  mdl_file_kind kind = MDL_KIND_AUTO;
  int shapes = 0, plan = 0, explain = 0, phase = -1;
  const char *sets[64], *stages[64], *device = NULL;
  int n_sets = 0, n_stages = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(USAGE, stdout);
      return 0;
    } else if (!strcmp(a, "--shapes")) {
      shapes = 1;
    } else if (!strcmp(a, "--plan")) {
      plan = 1;
    } else if (!strcmp(a, "--explain")) {
      explain = 1;
    } else if (!strcmp(a, "--phase") && i + 1 < argc) {
      const char *p = argv[++i];
      if (!strcmp(p, "train"))
        phase = CAFFE__PHASE__TRAIN;
      else if (!strcmp(p, "test"))
        phase = CAFFE__PHASE__TEST;
      else {
        fprintf(stderr, "memdl compile: --phase takes train or test, not \"%s\"\n", p);
        return 2;
      }
    } else if (!strcmp(a, "--as") && i + 1 < argc) {
      if (mdl_kind_parse(argv[++i], &kind)) {
        fprintf(stderr, "memdl compile: --as takes net, solver or job\n");
        return 2;
      }
    } else if (!strcmp(a, "--device") && i + 1 < argc) {
      device = argv[++i];
      if (!mdl_device_valid(device)) {
        fprintf(stderr, "memdl compile: --device takes cpu, cuda, cuda:N or auto, not \"%s\"\n",
                device);
        return 2;
      }
    } else if (!strcmp(a, "--stage") && i + 1 < argc) {
      if (n_stages == (int)(sizeof stages / sizeof *stages)) {
        fprintf(stderr, "memdl compile: too many --stage options\n");
        return 2;
      }
      stages[n_stages++] = argv[++i];
    } else if (!strcmp(a, "--set") && i + 1 < argc) {
      if (n_sets == (int)(sizeof sets / sizeof *sets)) {
        fprintf(stderr, "memdl compile: too many --set options\n");
        return 2;
      }
      sets[n_sets++] = argv[++i];
    } else if (a[0] == '-' && a[1]) {
      static const char *const opts[] = {"--shapes", "--plan",  "--explain", "--phase",
                                         "--as",     "--stage", "--set",     "--help"};
      return mdl_cli_unknown_option("compile", USAGE, a, opts, sizeof opts / sizeof *opts);
    } else if (file) {
      fprintf(stderr, "memdl compile: one file at a time (got %s and %s)\n", file, a);
      return 2;
    } else {
      file = a;
    }
  }
  if (!file) {
    fputs(USAGE, stderr);
    return 2;
  }
  mdl_error err = {0};
  mdl_job *job = NULL;
  mdl_compiled *c = NULL;
  mdl_status st = mdl_job_load(file, kind, &job, &err);
  for (int i = 0; st == MDL_OK && i < n_sets; i++) st = mdl_job_set(job, sets[i], &err);
  mdl_data_catalog catalog = {0};
  if (st == MDL_OK) {
    catalog.sets = job->job->data;
    catalog.n_sets = job->job->n_data;
    catalog.base_dir = job->base_dir;
    mdl_compile_opts opts = {.phase = phase, .stage = stages, .n_stage = n_stages};
    st = mdl_compile_job_opts(job, mdl_data_source_info, &catalog, &opts, &c, &err);
  }
  if (st == MDL_OK) {
    if (shapes) print_shapes(c);
    if (plan) {
      Memdl__Plan *p = mdl_plan_new(job, c);
      char *text = mdl_text_print(&p->base);
      fputs(text, stdout);
      free(text);
      mdl_pb_free(p);
    }
    if (explain) print_explain(job, c);
    if (device) {
      const Caffe__NetParameter **nets = calloc((size_t)c->n_nets + 1, sizeof *nets);
      for (int i = 0; i < c->n_nets; i++) nets[i] = c->nets[i].graph->net;
      const mdl_backend *be;
      char note[4096];
      st = mdl_device_resolve(device, nets, c->n_nets, &be, note, sizeof note, &err);
      free(nets);
      if (st == MDL_OK) printf("%s\n", note[0] ? note : "device cpu");
    }
    if (st == MDL_OK && !shapes && !plan && !explain) {
      print_summary(job, c);
      st = print_pipeline(job, &err);
    }
  }
  if (st) {
    fprintf(stderr, "%s\n", err.msg);
  }
  mdl_compiled_free(c);
  mdl_job_free(job);
  return mdl_exit_code(st);
}
