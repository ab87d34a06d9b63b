/* memdl data: load and describe the data sets of a job (or the data layers
 * of a Caffe solver or net) without training: records, classes, shape,
 * value range, dropped records, bytes, build time; --head prints the first
 * records. Argument parsing and printing only; the pipeline is runtime/. */
#define _GNU_SOURCE /* vasprintf */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "common/fileio.h"
#include "common/pb.h"
#include "compiler/job.h"
#include "compiler/textformat.h"
#include "runtime/data/dataset.h"

static const char USAGE[] =
    "usage: memdl data FILE [--name NAME] [--head N] [--partitions P]\n"
    "                       [--memory-budget MB] [--as net|solver|job]\n"
    "\n"
    "Builds the data sets FILE describes (a job's named data sets, and the\n"
    "Data, ImageData, MemoryData and HDF5Data layers of its nets; or those\n"
    "of a Caffe solver or net) and describes them: records, classes and\n"
    "per-class counts, shape, value range, dropped records by reason, bytes\n"
    "and build time.\n"
    "  --name NAME       only the data set (or data layer, or layer source) NAME\n"
    "  --head N          also print the first N records' labels and statistics\n"
    "  --partitions P    build P partitions (default: the data set's, else 1)\n"
    "  --memory-budget MB  refuse to load more than MB MiB (default: the job's)\n"
    "  --as KIND         read FILE as a net, solver or job instead of detecting it\n"
    "exit status: 0 ok, 1 runtime failure (also: over the memory budget), 2 invalid input\n";

/* One data set to describe: a job's, or a data layer's own. */
typedef struct entry {
  Memdl__DataSet *set; /* owned, `from` resolved */
  char *label;         /* "data set \"train\"" or "layer \"mnist\" (TRAIN)" */
  char *users;         /* data layers that read a job data set, or NULL */
  const char *layer;   /* layer name for layer entries */
  const char *source;  /* the layer's source string, for --name */
} entry;

typedef struct entries {
  entry *e;
  size_t n, cap;
} entries;

static entry *add_entry(entries *es) {
  if (es->n == es->cap) {
    es->cap = es->cap ? es->cap * 2 : 8;
    es->e = mdl_xrealloc(es->e, es->cap * sizeof *es->e);
  }
  memset(&es->e[es->n], 0, sizeof *es->e);
  return &es->e[es->n++];
}

static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  if (!s) abort();
  return s;
}

static void append_user(entry *e, const char *who) {
  char *u = e->users ? str_printf("%s, %s", e->users, who) : mdl_xstrdup(who);
  free(e->users);
  e->users = u;
}

static const char *phase_of(const Caffe__LayerParameter *l, Caffe__Phase net_phase) {
  if (l->has_phase) return l->phase == CAFFE__PHASE__TRAIN ? "TRAIN" : "TEST";
  for (size_t i = 0; i < l->n_include; i++)
    if (l->include[i]->has_phase)
      return l->include[i]->phase == CAFFE__PHASE__TRAIN ? "TRAIN" : "TEST";
  return net_phase == CAFFE__PHASE__TRAIN ? "TRAIN" : "TEST";
}

static const char *layer_source(const Caffe__LayerParameter *l) {
  if (l->data_param && l->data_param->source) return l->data_param->source;
  if (l->image_data_param && l->image_data_param->source) return l->image_data_param->source;
  if (l->hdf5_data_param && l->hdf5_data_param->source) return l->hdf5_data_param->source;
  return NULL;
}

/* Adds the data layers of net (once per layer). */
static mdl_status add_layers(entries *es, size_t n_job, Memdl__DataSet *const *sets, size_t n_sets,
                             const Caffe__NetParameter *net, Caffe__Phase phase,
                             const Caffe__LayerParameter ***seen, size_t *n_seen, mdl_error *err) {
  for (size_t i = 0; i < net->n_layer; i++) {
    const Caffe__LayerParameter *l = net->layer[i];
    if (!mdl_data_is_pipeline_layer(l)) continue;
    bool dup = false;
    for (size_t k = 0; k < *n_seen && !dup; k++) dup = (*seen)[k] == l;
    if (dup) continue;
    *seen = mdl_xrealloc(*seen, (*n_seen + 1) * sizeof **seen);
    (*seen)[(*n_seen)++] = l;
    const char *name = l->name ? l->name : "(unnamed)";
    char *who = str_printf("layer \"%s\" (%s)", name, phase_of(l, phase));
    mdl_layer_data ld;
    mdl_status st = mdl_data_for_layer(l, sets, n_sets, &ld, err);
    if (st) {
      free(who);
      return st;
    }
    if (ld.replaced) {
      /* Describe the set as the first layer reading it sees it: with the
       * layer's transform_param when the set has no transform of its own. */
      for (size_t k = 0; k < n_job; k++) {
        entry *e = &es->e[k];
        if (!ld.set->name || !e->set->name || strcmp(ld.set->name, e->set->name)) continue;
        if (!e->users) {
          Memdl__DataSet *r = NULL;
          if (mdl_data_resolve(sets, n_sets, ld.set, &r, err) == MDL_OK) {
            mdl_pb_free(e->set);
            e->set = r;
          }
        }
        append_user(e, who);
      }
      free(who);
      mdl_layer_data_clear(&ld);
      continue;
    }
    entry *e = add_entry(es);
    e->set = ld.set;
    e->label = who;
    e->layer = l->name;
    e->source = layer_source(l);
  }
  return MDL_OK;
}

static void print_bytes(uint64_t b) {
  if (b >= 1ull << 30)
    printf("%.2f GiB", b / 1073741824.0);
  else if (b >= 1u << 20)
    printf("%.1f MiB", b / 1048576.0);
  else if (b >= 1u << 10)
    printf("%.1f KiB", b / 1024.0);
  else
    printf("%llu bytes", (unsigned long long)b);
}

static void print_head(const mdl_dataset *d, int64_t head) {
  printf("  first %lld records:\n", (long long)head);
  int64_t shown = 0;
  size_t elems = (size_t)d->channels * d->height * d->width;
  for (uint32_t pi = 0; pi < d->n_parts && shown < head; pi++) {
    const mdl_partition *p = d->part[pi];
    for (int64_t r = 0; r < p->n && shown < head; r++, shown++) {
      double sum = 0, lo = 0, hi = 0;
      for (size_t i = 0; i < elems; i++) {
        double v = p->dtype == MDL_DTYPE_U8 ? ((const uint8_t *)p->data)[r * elems + i]
                                            : ((const float *)p->data)[r * elems + i];
        sum += v;
        lo = i == 0 || v < lo ? v : lo;
        hi = i == 0 || v > hi ? v : hi;
      }
      printf("    #%-6lld source record %-8lld label %-5d min %-8g max %-8g mean %.4g\n",
             (long long)shown, (long long)p->record[r], p->label[r], lo, hi, sum / (double)elems);
    }
  }
}

static mdl_status describe(const entry *e, const char *base_dir, uint32_t partitions,
                           uint64_t budget, int64_t head, mdl_error *err) {
  mdl_build_opts o = {.memory_budget_bytes = budget};
  mdl_dataset *d = NULL;
  mdl_status st = mdl_dataset_build(e->set, base_dir, partitions, &o, &d, err);
  if (st) return st;
  char *src = mdl_data_source_str(e->set->source);
  char *plan = mdl_data_describe(e->set);
  printf("%s\n", e->label);
  printf("  source:     %s\n", src);
  printf("  pipeline:   %s\n", plan);
  if (e->users) printf("  read by:    %s\n", e->users);
  int64_t dropped = 0;
  for (int r = 0; r < MDL_DROP_COUNT; r++) dropped += d->dropped[r];
  printf("  records:    %lld (of %lld read; %lld left out by split/sample, %lld dropped)\n",
         (long long)d->n, (long long)d->scanned, (long long)d->filtered, (long long)dropped);
  printf("  partitions: %u (", d->n_parts);
  for (uint32_t i = 0; i < d->n_parts && i < 16; i++)
    printf("%s%lld", i ? " " : "", (long long)d->part[i]->n);
  printf("%s)\n", d->n_parts > 16 ? " ..." : "");
  printf("  shape:      %dx%dx%d %s per record", d->channels, d->height, d->width,
         d->dtype == MDL_DTYPE_U8 ? "uint8" : "float");
  if (d->transform) {
    int c, h, w;
    mdl_transform_out_shape(d->transform, &c, &h, &w);
    if (h != d->height || w != d->width) printf(", %dx%dx%d after crop", c, h, w);
  }
  printf("\n  classes:    %d\n", d->num_classes);
  for (int k = 0; k < d->num_classes && k < 1000; k++) {
    bool last = k % 5 == 4 || k + 1 == d->num_classes;
    printf("%s%4d: %lld", k % 5 == 0 ? "   " : "", k, (long long)d->class_count[k]);
    if (last)
      printf("\n");
    else
      printf("%*s", 8 - (int)snprintf(NULL, 0, "%lld", (long long)d->class_count[k]), "");
  }
  if (d->num_classes > 1000) printf("    ... (%d more)\n", d->num_classes - 1000);
  printf("  values:     [%g, %g] stored", d->vmin, d->vmax);
  if (d->transform && d->n) {
    float lo, hi;
    mdl_transform_range(d->transform, d->vmin, d->vmax, &lo, &hi);
    printf(", [%g, %g] after transform", lo, hi);
  }
  printf("\n  dropped:    ");
  if (!dropped) printf("none");
  for (int r = 0, first = 1; r < MDL_DROP_COUNT; r++)
    if (d->dropped[r]) {
      printf("%s%s %lld", first ? "" : ", ", mdl_drop_reason_name((mdl_drop_reason)r),
             (long long)d->dropped[r]);
      first = 0;
    }
  printf("\n  bytes:      ");
  print_bytes(d->bytes);
  printf(" (%llu per record)\n", d->n ? (unsigned long long)(d->bytes / (uint64_t)d->n) : 0ull);
  printf("  build time: %.0f ms\n", d->build_ms);
  if (head > 0) print_head(d, head);
  free(src);
  free(plan);
  mdl_dataset_free(d);
  return MDL_OK;
}

static bool wants(const entry *e, const char *name) {
  if (!name) return true;
  return (e->set->name && !strcmp(e->set->name, name)) || (e->layer && !strcmp(e->layer, name)) ||
         (e->source && !strcmp(e->source, name));
}

static int fail(const mdl_error *err) {
  fprintf(stderr, "memdl data: %s\n", err->msg);
  return err->code ? mdl_exit_code(err->code) : 1;
}

/* memdl data's options. */
typedef struct data_args {
  const char *file, *name;
  int64_t head;
  uint32_t partitions;
  int64_t budget_mb; /* -1: the job's */
  mdl_file_kind kind;
} data_args;

/* Parses argv into *a: -1 to go on, else the exit code (usage printed). */
static int parse_data_args(int argc, char **argv, data_args *a) {
  *a = (data_args){.budget_mb = -1, .kind = MDL_KIND_AUTO};
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    char *end = NULL;
    if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
      fputs(USAGE, stdout);
      return 0;
    } else if (!strcmp(arg, "--name") && i + 1 < argc) {
      a->name = argv[++i];
    } else if (!strcmp(arg, "--head") && i + 1 < argc) {
      a->head = strtoll(argv[++i], &end, 10);
      if (!*argv[i] || *end || a->head < 0) {
        fprintf(stderr, "memdl data: --head takes a count, not \"%s\"\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(arg, "--partitions") && i + 1 < argc) {
      long long p = strtoll(argv[++i], &end, 10);
      if (!*argv[i] || *end || p < 1 || p > 1 << 20) {
        fprintf(stderr, "memdl data: --partitions takes a count from 1, not \"%s\"\n", argv[i]);
        return 2;
      }
      a->partitions = (uint32_t)p;
    } else if (!strcmp(arg, "--memory-budget") && i + 1 < argc) {
      a->budget_mb = strtoll(argv[++i], &end, 10);
      if (!*argv[i] || *end || a->budget_mb < 0) {
        fprintf(stderr, "memdl data: --memory-budget takes MiB, not \"%s\"\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(arg, "--as") && i + 1 < argc) {
      const char *k = argv[++i];
      a->kind = !strcmp(k, "net")      ? MDL_KIND_NET
                : !strcmp(k, "solver") ? MDL_KIND_SOLVER
                : !strcmp(k, "job")    ? MDL_KIND_JOB
                                       : (mdl_file_kind)-1;
      if ((int)a->kind < 0) {
        fprintf(stderr, "memdl data: --as takes net, solver or job, not \"%s\"\n", k);
        return 2;
      }
    } else if (arg[0] == '-' && arg[1]) {
      static const char *const opts[] = {"--name",          "--head", "--partitions",
                                         "--memory-budget", "--as",   "--help"};
      return mdl_cli_unknown_option("data", USAGE, arg, opts, sizeof opts / sizeof *opts);
    } else if (a->file) {
      return mdl_cli_usage_error("data", USAGE, "one file at a time (got %s and %s)", a->file, arg);
    } else {
      a->file = arg;
    }
  }
  if (!a->file) {
    fputs(USAGE, stderr);
    return 2;
  }
  return -1;
}

int mdl_cmd_data(int argc, char **argv) {
  data_args da;
  int code = parse_data_args(argc, argv, &da);
  if (code >= 0) return code;
  const char *file = da.file, *name = da.name;
  int64_t head = da.head, budget_mb = da.budget_mb;
  uint32_t partitions = da.partitions;
  mdl_file_kind kind = da.kind;

  mdl_error err = {0};
  Memdl__Job *jobmsg = NULL; /* a job file parsed on its own (no nets needed) */
  mdl_job *job = NULL;
  char *base_dir = NULL;
  if (kind == MDL_KIND_AUTO || kind == MDL_KIND_JOB) {
    /* read as check/compile/run read it, so a directory, a missing file or
     * an unreadable one gets the same answer everywhere */
    char *text = NULL;
    size_t len = 0;
    if (mdl_file_read(file, &text, &len, &err) != MDL_OK) return fail(&err);
    if (kind == MDL_KIND_AUTO) kind = mdl_detect_kind(text, len);
    free(text);
  }
  if (kind == MDL_KIND_JOB) {
    if (mdl_text_parse_file(file, &memdl__job__descriptor, (ProtobufCMessage **)&jobmsg, &err))
      return fail(&err);
    base_dir = mdl_path_dir(file);
    if (jobmsg->net || jobmsg->net_param || jobmsg->solver || jobmsg->solver_param) {
      mdl_error jerr = {0};
      if (mdl_job_load(file, MDL_KIND_JOB, &job, &jerr))
        fprintf(stderr,
                "memdl data: warning: the job's nets were not read (%s); showing its data "
                "sets only\n",
                jerr.msg);
    }
  } else {
    if (mdl_job_load(file, kind, &job, &err)) return fail(&err);
    base_dir = mdl_xstrdup(job->base_dir ? job->base_dir : ".");
  }
  Memdl__DataSet *const *sets = jobmsg ? jobmsg->data : NULL;
  size_t n_sets = jobmsg ? jobmsg->n_data : 0;

  entries es = {0};
  mdl_status st = MDL_OK;
  for (size_t i = 0; i < n_sets && !st; i++) {
    Memdl__DataSet *r = NULL;
    st = mdl_data_resolve(sets, n_sets, sets[i], &r, &err);
    if (st) break;
    entry *e = add_entry(&es);
    e->set = r;
    e->label = str_printf("data set \"%s\"", r->name ? r->name : "(unnamed)");
  }
  size_t n_job = es.n;
  const Caffe__LayerParameter **seen = NULL;
  size_t n_seen = 0;
  if (!st && job) {
    const Caffe__NetParameter *nets[16];
    Caffe__Phase phases[16];
    int nn = 0;
    mdl_error ignore = {0};
    const Caffe__NetParameter *tn = mdl_job_net(job, CAFFE__PHASE__TRAIN, 0, &ignore);
    if (tn) {
      nets[nn] = tn;
      phases[nn++] = CAFFE__PHASE__TRAIN;
    }
    for (int t = 0; t < 8 && nn < 16; t++) {
      const Caffe__NetParameter *n = mdl_job_net(job, CAFFE__PHASE__TEST, t, &ignore);
      if (!n) break;
      bool dup = false;
      for (int k = 0; k < nn && !dup; k++) dup = nets[k] == n;
      if (dup) break;
      nets[nn] = n;
      phases[nn++] = CAFFE__PHASE__TEST;
    }
    for (int k = 0; k < nn && !st; k++)
      st = add_layers(&es, n_job, sets, n_sets, nets[k], phases[k], &seen, &n_seen, &err);
  }
  uint64_t budget = 0;
  if (budget_mb >= 0)
    budget = (uint64_t)budget_mb << 20;
  else if (jobmsg && jobmsg->memory_budget_mb)
    budget = jobmsg->memory_budget_mb << 20;
  int shown = 0;
  if (!st && es.n == 0)
    st = mdl_errorf(&err, MDL_ERR_INVALID,
                    "%s: no data sets: the job defines none and its nets have no Data, ImageData, "
                    "MemoryData or HDF5Data layer",
                    file);
  for (size_t i = 0; i < es.n && !st; i++) {
    if (!wants(&es.e[i], name)) continue;
    if (shown++) printf("\n");
    st = describe(&es.e[i], base_dir, partitions, budget, head, &err);
  }
  if (!st && name && !shown) {
    char list[1024] = "";
    size_t k = 0;
    for (size_t i = 0; i < es.n && k < sizeof list - 64; i++)
      k += (size_t)snprintf(list + k, sizeof list - k, "%s\"%s\"", i ? ", " : "",
                            es.e[i].set->name ? es.e[i].set->name : "?");
    st = mdl_errorf(&err, MDL_ERR_INVALID,
                    "%s: no data set or data layer named \"%s\" (there are: %s)", file, name, list);
  }
  for (size_t i = 0; i < es.n; i++) {
    mdl_pb_free(es.e[i].set);
    free(es.e[i].label);
    free(es.e[i].users);
  }
  free(es.e);
  free(seen);
  free(base_dir);
  mdl_job_free(job);
  mdl_pb_free(jobmsg);
  if (st) {
    fflush(stdout);
    return fail(&err);
  }
  return 0;
}
