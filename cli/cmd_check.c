/* memdl check: everything `run` would reject, without loading records or
 * training: parse nets, solvers and jobs, check every layer type, the
 * solver's settings, every data set's source and stages, which data sets
 * the nets read, and compile every phase's net (shapes, label classes).
 * Reports every error it can find in a file, not only the first. Valid Caffe
 * layers no backend runs (Python, WindowData) get a warning with the reason. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "common/fileio.h"
#include "common/pb.h"
#include "common/suggest.h"
#include "compiler/job.h"
#include "compiler/layers.h"
#include "compiler/plan.h"
#include "runtime/data/dataset.h"
#include "runtime/data/dataset_resolver.h"
#include "runtime/engine/layer.h"
#include "runtime/solver/solver.h"
#include "runtime/train/device.h"

static const char USAGE[] =
    "usage: memdl check [--as net|solver|job] [--strict] [--set FIELD=VALUE]... FILE...\n"
    "\n"
    "Checks each file (the kind is detected from its fields unless --as says)\n"
    "as `memdl run` would, without loading records: the text, every layer type,\n"
    "the solver's settings, each data set's source and stages, that every data\n"
    "layer reads a data set and every data set is read, and every phase's\n"
    "shapes and label classes. Prints `FILE: ok (KIND)` per valid file; every\n"
    "error goes to stderr as `file:line:col: message` or `file: message`.\n"
    "Layers that are valid Caffe but that no memdl backend runs (Python,\n"
    "WindowData) get a warning on stderr saying why; they do not fail the check.\n"
    "  --as KIND    read the files as net, solver or job\n"
    "  --strict     warnings (overlapping data sets, unused data sets) are errors\n"
    "  --set F=V    override a solver or job field first, as run does (repeatable)\n"
    "exit status: 0 all valid, 2 any invalid\n";

typedef struct checker {
  const char *path;
  bool strict;
  int errors, warnings;
  char *text; /* the file, for line numbers */
  size_t len;
  char *net_text; /* the net's file when it is another one */
  size_t net_len;
  const char *net_file;
  bool cannot_run; /* a layer memdl has no kernel for: shapes are not checked */
} checker;

static void report(checker *c, bool warning, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report(checker *c, bool warning, const char *fmt, ...) {
  bool error = !warning || c->strict;
  va_list ap;
  va_start(ap, fmt);
  char msg[MDL_ERROR_MSG_MAX];
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s%s\n",
          error && warning ? "error (--strict): "
          : warning        ? "warning: "
                           : "",
          msg);
  if (error)
    c->errors++;
  else
    c->warnings++;
}

/* Where `type: "T"` first appears after the n-th `name: "L"` in text: the
 * parser keeps no positions, so find it again. 0 when not found. */
static void find_pos(const char *text, size_t len, const char *layer, const char *type, int *line,
                     int *col) {
  *line = *col = 0;
  if (!text || !type) return;
  char want[300];
  const char *from = text;
  if (layer) {
    snprintf(want, sizeof want, "\"%s\"", layer);
    const char *p = strstr(text, want);
    if (p) from = p;
  }
  snprintf(want, sizeof want, "\"%s\"", type);
  const char *p = strstr(from, want);
  if (!p) {
    snprintf(want, sizeof want, "'%s'", type);
    p = strstr(from, want);
  }
  if (!p || (size_t)(p - text) >= len) return;
  /* back to the field name `type` */
  const char *q = p;
  while (q > text && q[-1] != '\n' && (q[-1] == ' ' || q[-1] == ':' || q[-1] == '\t')) q--;
  while (q > text && (isalnum((unsigned char)q[-1]) || q[-1] == '_')) q--;
  *line = 1;
  const char *bol = text;
  for (const char *s = text; s < q; s++)
    if (*s == '\n') (*line)++, bol = s + 1;
  *col = (int)(q - bol) + 1;
}

static void check_layer_types(checker *c, const Caffe__NetParameter *net) {
  if (!net) return;
  const mdl_backend *be;
  mdl_error err;
  if (mdl_device_backend("cpu", &be, &err) != MDL_OK) {
    report(c, false, "%s: %s", c->path, err.msg);
    return;
  }
  const char *file = c->net_text ? c->net_file : c->path;
  const char *text = c->net_text ? c->net_text : c->text;
  size_t len = c->net_text ? c->net_len : c->len;
  size_t n_known;
  const mdl_layer_def *table = mdl_layer_table(&n_known);
  const char **known = mdl_xcalloc(n_known + 1, sizeof *known);
  for (size_t i = 0; i < n_known; i++) known[i] = table[i].type;
  for (size_t i = 0; i < net->n_layer; i++) {
    const Caffe__LayerParameter *l = net->layer[i];
    const char *name = l->name ? l->name : "";
    if (!l->type || !mdl_layer_find(l->type)) {
      int line, col;
      find_pos(text, len, l->name, l->type, &line, &col);
      char where[600];
      if (line)
        snprintf(where, sizeof where, "%s:%d:%d", file, line, col);
      else
        snprintf(where, sizeof where, "%s", file);
      const char *near = l->type ? mdl_suggest_nearest(l->type, known, n_known) : NULL;
      if (near)
        report(c, false, "%s: layer \"%s\": unknown type \"%s\"; did you mean \"%s\"?", where, name,
               l->type ? l->type : "", near);
      else
        report(c, false,
               "%s: layer \"%s\": unknown type \"%s\" (`memdl check --help` lists none; see "
               "compiler/layers.c for the known ones)",
               where, name, l->type ? l->type : "");
      continue;
    }
    /* Valid Caffe, but no backend can run it: say so now, and why, not at
     * run time. The CPU backend runs every type any backend runs. */
    char why[1700];
    if (!mdl_data_is_pipeline_layer(l) && !mdl_backend_supports_layer(be, l, why, sizeof why)) {
      const char *reason = mdl_layer_unsupported_reason(l->type);
      fprintf(stderr,
              "%s: warning: layer \"%s\" (%s) is valid Caffe but no memdl backend runs it: %s\n",
              file, name, l->type, reason ? reason : why);
      c->cannot_run = true;
    }
  }
  free(known);
  for (size_t i = 0; i < net->n_layers; i++) {
    const Caffe__V1LayerParameter *l = net->layers[i];
    if (l->has_type && !mdl_layer_find_v1(l->type))
      report(c, false, "%s: layers \"%s\": unsupported V1 type %d", file, l->name ? l->name : "",
             (int)l->type);
  }
}

static bool net_empty(const Caffe__NetParameter *n) {
  return !n || (n->n_layer == 0 && n->n_layers == 0 && n->n_input == 0);
}

/* Every data set of the job: its `from` chain, source headers, stages. */
static void check_data_sets(checker *c, const mdl_job *job, Memdl__DataSet **resolved) {
  const Memdl__Job *j = job->job;
  for (size_t i = 0; i < j->n_data; i++) {
    mdl_error err;
    mdl_error_clear(&err);
    mdl_status st = mdl_data_resolve(j->data, j->n_data, j->data[i], &resolved[i], &err);
    mdl_data_info info;
    if (st == MDL_OK) st = mdl_data_probe(resolved[i], job->base_dir, &info, &err);
    if (st != MDL_OK) {
      report(c, false, "%s: %s", c->path, err.msg);
      mdl_pb_free(resolved[i]);
      resolved[i] = NULL;
    }
  }
}

/* Which data sets the nets' data layers read; a set nothing reads (not even
 * through another set's `from`) is most likely a misspelt source. */
static void check_data_use(checker *c, const mdl_job *job, const Caffe__NetParameter *const *nets,
                           size_t n_nets, Memdl__DataSet *const *resolved) {
  const Memdl__Job *j = job->job;
  if (!j->n_data) return;
  bool *used = mdl_xcalloc(j->n_data, sizeof(bool));
  for (size_t n = 0; n < n_nets; n++) {
    for (size_t li = 0; li < nets[n]->n_layer; li++) {
      const Caffe__LayerParameter *lp = nets[n]->layer[li];
      if (!mdl_data_is_pipeline_layer(lp)) continue;
      mdl_layer_data ld;
      mdl_error err;
      if (mdl_data_for_layer(lp, j->data, j->n_data, &ld, &err) != MDL_OK) continue;
      for (size_t i = 0; ld.replaced && i < j->n_data; i++)
        if (j->data[i]->name && ld.set->name && !strcmp(j->data[i]->name, ld.set->name))
          used[i] = true;
      mdl_layer_data_clear(&ld);
    }
  }
  /* Two sets the layers read, drawn from one source, that can share
   * records: test data leaking into training. */
  for (size_t a = 0; a < j->n_data; a++)
    for (size_t b = a + 1; b < j->n_data; b++) {
      char why[1024];
      if (used[a] && used[b] && resolved[a] && resolved[b] &&
          mdl_data_overlap(resolved[a], resolved[b], why, sizeof why))
        report(c, true, "%s: %s", c->path, why);
    }
  /* a set another used set is built `from` counts as used */
  for (bool more = true; more;) {
    more = false;
    for (size_t i = 0; i < j->n_data; i++)
      if (used[i] && j->data[i]->from)
        for (size_t k = 0; k < j->n_data; k++)
          if (!used[k] && j->data[k]->name && !strcmp(j->data[k]->name, j->data[i]->from))
            used[k] = more = true;
  }
  for (size_t i = 0; i < j->n_data; i++)
    if (!used[i])
      report(c, true,
             "%s: data set \"%s\" is read by no data layer (a layer reads the set named like "
             "its source or like itself)",
             c->path, j->data[i]->name ? j->data[i]->name : "(unnamed)");
  free(used);
}

static void solver_problem(void *ctx, const char *msg) {
  checker *c = ctx;
  report(c, false, "%s: %s", c->path, msg);
}

static void check_file(checker *c, mdl_file_kind kind, const char *const *sets, int n_sets,
                       mdl_file_kind *found) {
  mdl_error err;
  mdl_error_clear(&err);
  if (mdl_file_read(c->path, &c->text, &c->len, &err) != MDL_OK) {
    report(c, false, "%s", err.msg);
    return;
  }
  mdl_job *job = NULL;
  if (mdl_job_load(c->path, kind, &job, &err) != MDL_OK) {
    report(c, false, "%s", err.msg);
    return;
  }
  *found = job->kind;
  for (int i = 0; i < n_sets; i++)
    if (mdl_job_set(job, sets[i], &err) != MDL_OK) report(c, false, "%s", err.msg);
  const Caffe__SolverParameter *s = job->solver;
  if (job->net_path && strcmp(job->net_path, c->path) != 0) {
    c->net_file = job->net_path;
    mdl_error e2;
    if (mdl_file_read(job->net_path, &c->net_text, &c->net_len, &e2) != MDL_OK) c->net_text = NULL;
  }
  if (net_empty(s->net_param) && net_empty(s->train_net_param) && s->n_test_net_param == 0) {
    report(c, false, "%s: empty: no layers, and no net, solver or job fields", c->path);
    mdl_job_free(job);
    return;
  }
  int before = c->errors;
  check_layer_types(c, s->net_param);
  check_layer_types(c, s->train_net_param);
  for (size_t i = 0; i < s->n_test_net_param; i++) check_layer_types(c, s->test_net_param[i]);
  bool types_ok = c->errors == before;

  if (job->kind != MDL_KIND_NET) mdl_solver_config_check(s, solver_problem, c);
  const Memdl__Job *j = job->job;
  Memdl__DataSet **resolved = mdl_xcalloc(j->n_data + 1, sizeof *resolved);
  check_data_sets(c, job, resolved);

  /* every data layer of every net: its data set, source and record shape */
  const Caffe__NetParameter *nets[64];
  size_t n_nets = 0;
  if (s->net_param) nets[n_nets++] = s->net_param;
  if (s->train_net_param) nets[n_nets++] = s->train_net_param;
  for (size_t i = 0; i < s->n_test_net_param && n_nets < 64; i++)
    nets[n_nets++] = s->test_net_param[i];
  mdl_data_catalog cat = {j->data, j->n_data, job->base_dir};
  int data_before = c->errors;
  for (size_t n = 0; n < n_nets; n++)
    for (size_t i = 0; i < nets[n]->n_layer; i++) {
      const Caffe__LayerParameter *lp = nets[n]->layer[i];
      if (!mdl_data_is_pipeline_layer(lp)) continue;
      mdl_source_info info;
      if (mdl_data_source_info(&cat, lp, &info, &err) != MDL_OK)
        report(c, false, "%s: %s", c->net_text ? c->net_file : c->path, err.msg);
    }
  bool data_ok = c->errors == data_before;

  mdl_compiled *comp = NULL;
  if (c->cannot_run)
    fprintf(stderr, "%s: note: shapes not checked, since memdl cannot run every layer\n", c->path);
  else if (types_ok && data_ok) {
    if (mdl_compile_job(job, mdl_data_source_info, &cat, &comp, &err) != MDL_OK)
      report(c, false, "%s", err.msg);
  }
  check_data_use(c, job, nets, n_nets, resolved);
  /* acceptance metrics must be outputs of a TEST net */
  for (size_t a = 0; comp && a < j->n_accept; a++) {
    const char *m = j->accept[a]->metric ? j->accept[a]->metric : "";
    bool hit = false;
    for (int n = 0; n < comp->n_nets && !hit; n++) {
      const mdl_graph *g = comp->nets[n].graph;
      if (comp->nets[n].phase != CAFFE__PHASE__TEST) continue;
      for (int o = 0; o < g->n_outputs && !hit; o++)
        hit = !strcmp(g->blob_name[g->output_blob[o]], m);
    }
    if (!hit)
      report(c, false, "%s: accept metric \"%s\" is not an output of any TEST net", c->path, m);
  }
  mdl_compiled_free(comp);
  for (size_t i = 0; i < j->n_data; i++) mdl_pb_free(resolved[i]);
  free(resolved);
  mdl_job_free(job);
}

int mdl_cmd_check(int argc, char **argv) {
  mdl_file_kind kind = MDL_KIND_AUTO;
  bool strict = false;
  const char **sets = mdl_xcalloc((size_t)argc + 1, sizeof *sets);
  const char **files = mdl_xcalloc((size_t)argc + 1, sizeof *files);
  int n_sets = 0, n_files = 0, code = -1;
  for (int i = 1; i < argc && code < 0; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(USAGE, stdout);
      code = 0;
    } else if (!strcmp(a, "--as") || !strncmp(a, "--as=", 5)) {
      const char *v = a[4] == '=' ? a + 5 : i + 1 < argc ? argv[++i] : "";
      if (mdl_kind_parse(v, &kind)) {
        fprintf(stderr, "memdl check: --as takes net, solver or job\n");
        code = 2;
      }
    } else if (!strcmp(a, "--strict")) {
      strict = true;
    } else if (!strcmp(a, "--set") || !strncmp(a, "--set=", 6)) {
      if (a[5] == '=')
        sets[n_sets++] = a + 6;
      else if (i + 1 < argc)
        sets[n_sets++] = argv[++i];
      else
        code = mdl_cli_usage_error("check", USAGE, "--set needs FIELD=VALUE");
    } else if (a[0] == '-' && a[1]) {
      static const char *const opts[] = {"--as", "--strict", "--set", "--help"};
      code = mdl_cli_unknown_option("check", USAGE, a, opts, sizeof opts / sizeof *opts);
    } else {
      files[n_files++] = a;
    }
  }
  if (code < 0 && n_files == 0) code = mdl_cli_usage_error("check", USAGE, "no FILE to check");
  int n_bad = 0;
  for (int f = 0; code < 0 && f < n_files; f++) {
    checker c = {.path = files[f], .strict = strict};
    mdl_file_kind found = kind;
    check_file(&c, kind, sets, n_sets, &found);
    if (c.errors) {
      n_bad++;
      if (c.errors > 1) fprintf(stderr, "%s: %d errors\n", c.path, c.errors);
    } else {
      printf("%s: ok (%s)%s\n", c.path, mdl_kind_name(found), c.warnings ? " with warnings" : "");
    }
    free(c.text);
    free(c.net_text);
  }
  free(sets);
  free(files);
  if (code >= 0) return code;
  return n_bad ? 2 : 0;
}
