/* Shared argument handling for run, test and time; see args.h. */
#include "cli/args.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/suggest.h"
#include "runtime/train/device.h"

void mdl_cli_args_init(mdl_cli_args *a, const char *cmd, const char *usage, int argc) {
  memset(a, 0, sizeof *a);
  a->cmd = cmd;
  a->usage = usage;
  a->sets = mdl_xcalloc((size_t)argc + 1, sizeof *a->sets);
}

void mdl_cli_args_free(mdl_cli_args *a) {
  free(a->sets);
  a->sets = NULL;
}

bool mdl_cli_int(const char *cmd, const char *flag, const char *value, long min, long max,
                 int *out) {
  char *end;
  long v = strtol(value, &end, 10);
  if (!*value || *end || v < min || v > max) {
    fprintf(stderr, "memdl %s: %s takes a whole number from %ld to %ld, not \"%s\"\n", cmd, flag,
            min, max, value);
    return false;
  }
  *out = (int)v;
  return true;
}

static void print_synopsis(const char *cmd, const char *usage) {
  const char *end = strstr(usage, "\n\n");
  size_t n = end ? (size_t)(end - usage) + 1 : strlen(usage);
  fprintf(stderr, "%.*s`memdl %s --help` says more\n", (int)n, usage, cmd);
}

int mdl_cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "memdl %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  print_synopsis(cmd, usage);
  return 2;
}

int mdl_cli_unknown_option(const char *cmd, const char *usage, const char *arg,
                           const char *const *opts, size_t n_opts) {
  char name[128];
  snprintf(name, sizeof name, "%s", arg);
  char *eq = strchr(name, '=');
  if (eq) *eq = 0;
  const char *near = mdl_suggest_nearest(name, opts, n_opts);
  if (near && strcmp(near, name) == 0)
    return mdl_cli_usage_error(cmd, usage, "%s needs a value", name);
  if (near)
    return mdl_cli_usage_error(cmd, usage, "unknown option %s; did you mean %s?", name, near);
  return mdl_cli_usage_error(cmd, usage, "unknown option %s", name);
}

/* Caffe's command-line flags and what they are here. */
typedef struct caffe_flag {
  const char *caffe;
  const char *memdl; /* NULL: the value is the positional FILE; "": dropped */
  bool takes_value;
} caffe_flag;

static const caffe_flag CAFFE_FLAGS[] = {
    {"-solver", NULL, true},
    {"-model", NULL, true},
    {"-weights", "--weights", true},
    {"-snapshot", "--resume", true},
    {"-iterations", "--iterations", true},
    {"-gpu", "--device", true}, /* the value becomes cuda:N (gpu_device) */
    {"-sigint_effect", "--sigint-effect", true},
    {"-sighup_effect", "--sighup-effect", true},
    {"-stage", "--stage", true},
    {"-level", "", true},
};

/* Caffe's -gpu value as a --device: N -> cuda:N, all -> cuda (memdl runs
 * one GPU per process; several are --workers local:K), "0,1" -> cuda:0;
 * anything else is left for --device to refuse. Written into text (at
 * least 16 bytes) unless returned as is. */
static char *gpu_device(char *v, char *text) {
  if (!strcmp(v, "all")) return strcpy(text, "cuda");
  size_t digits = strspn(v, "0123456789");
  if (digits == 0 || digits > 9 || (v[digits] && v[digits] != ',')) return v;
  snprintf(text, 16, "cuda:%.*s", (int)digits, v);
  return text;
}

char **mdl_cli_normalize(int argc, char **argv, int *out_argc) {
  /* one block: the new argv, then room for the texts made here (freed
   * with the array) */
  size_t n_ptr = (size_t)argc * 2 + 1;
  char **out = mdl_xcalloc(1, n_ptr * sizeof *out + (size_t)argc * 16 + 1);
  char *text = (char *)(out + n_ptr);
  int n = 0;
  for (int i = 0; i < argc; i++) {
    char *a = argv[i];
    if (i == 0) {
      if (!strcmp(a, "train")) {
        fprintf(stderr, "memdl: `caffe train` is `memdl run` here\n");
        a = "run";
      }
      out[n++] = a;
      continue;
    }
    if (!strcmp(a, "--")) { /* everything after is positional */
      while (i < argc) out[n++] = argv[i++];
      break;
    }
    /* Caffe's single-dash flags (gflags also takes them with two dashes
     * and with =) */
    const caffe_flag *cf = NULL;
    size_t flen = strcspn(a, "=");
    if (a[0] == '-' && a[1] != '-') /* memdl's own options all have two dashes */
      for (size_t k = 0; k < sizeof CAFFE_FLAGS / sizeof *CAFFE_FLAGS; k++)
        if (flen == strlen(CAFFE_FLAGS[k].caffe) && !strncmp(a, CAFFE_FLAGS[k].caffe, flen))
          cf = &CAFFE_FLAGS[k];
    if (cf) {
      char *value = a[flen] == '=' ? a + flen + 1 : i + 1 < argc ? argv[++i] : NULL;
      if (!cf->memdl) {
        fprintf(stderr, "memdl: note: %s is Caffe's flag; memdl takes the file as it is: %s\n",
                cf->caffe, value ? value : "");
        if (value) out[n++] = value;
      } else if (!*cf->memdl) {
        fprintf(stderr, "memdl: note: %s is Caffe's flag; memdl ignores it\n", cf->caffe);
      } else if (!strcmp(cf->caffe, "-gpu") && value) {
        char *dev = gpu_device(value, text);
        if (dev == text) text += 16;
        fprintf(
            stderr,
            "memdl: note: -gpu is Caffe's flag; memdl's is --device cuda:N (here --device %s%s)\n",
            dev,
            strchr(value, ',') || !strcmp(value, "all")
                ? "; one GPU per process, --workers local:K for several"
                : "");
        out[n++] = (char *)cf->memdl;
        out[n++] = dev;
      } else {
        fprintf(stderr, "memdl: note: %s is Caffe's flag; memdl's is %s\n", cf->caffe, cf->memdl);
        out[n++] = (char *)cf->memdl;
        if (value) out[n++] = value;
      }
      continue;
    }
    if (a[0] == '-' && a[1] == '-' && a[flen] == '=') {
      /* --opt=value: cut the word in two in place (argv's strings are the
       * program's to modify) */
      a[flen] = 0;
      out[n++] = a;
      out[n++] = a + flen + 1;
      continue;
    }
    out[n++] = a;
  }
  out[n] = NULL;
  *out_argc = n;
  return out;
}

mdl_cli_arg_result mdl_cli_args_take(mdl_cli_args *a, int argc, char **argv, int *i, int *code) {
  /* *code is written only with MDL_ARG_EXIT */
  const char *arg = argv[*i];
  bool has_next = *i + 1 < argc;
  if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
    fputs(a->usage, stdout);
    *code = 0;
    return MDL_ARG_EXIT;
  }
  if (!strcmp(arg, "--set") && has_next) {
    a->sets[a->n_sets++] = argv[++*i];
    return MDL_ARG_TAKEN;
  }
  if (!strcmp(arg, "--threads") && has_next) {
    if (!mdl_cli_int(a->cmd, arg, argv[++*i], 1, 4096, &a->threads)) {
      *code = 2;
      return MDL_ARG_EXIT;
    }
    return MDL_ARG_TAKEN;
  }
  if (!strcmp(arg, "--device") && has_next) {
    a->device = argv[++*i];
    if (!mdl_device_valid(a->device)) {
      fprintf(stderr, "memdl %s: --device takes cpu, cuda, cuda:N or auto, not \"%s\"\n", a->cmd,
              a->device);
      *code = 2;
      return MDL_ARG_EXIT;
    }
    return MDL_ARG_TAKEN;
  }
  if (arg[0] == '-' && arg[1]) {
    const char **all = mdl_xcalloc(a->n_opts + 5, sizeof *all);
    size_t n = 0;
    for (size_t k = 0; k < a->n_opts; k++) all[n++] = a->opts[k];
    all[n++] = "--set";
    all[n++] = "--threads";
    all[n++] = "--device";
    all[n++] = "--help";
    *code = mdl_cli_unknown_option(a->cmd, a->usage, arg, all, n);
    free(all);
    return MDL_ARG_EXIT;
  }
  if (a->path) {
    *code = mdl_cli_usage_error(a->cmd, a->usage, "one file at a time (got \"%s\" and \"%s\")",
                                a->path, arg);
    return MDL_ARG_EXIT;
  }
  a->path = arg;
  return MDL_ARG_TAKEN;
}

bool mdl_cli_args_have_path(const mdl_cli_args *a) {
  if (a->path) return true;
  mdl_cli_usage_error(a->cmd, a->usage, "no JOB file given");
  return false;
}

mdl_status mdl_cli_load_job(const mdl_cli_args *a, mdl_job **job, mdl_error *err) {
  mdl_status st = mdl_job_load(a->path, MDL_KIND_AUTO, job, err);
  for (int i = 0; st == MDL_OK && i < a->n_sets; i++) st = mdl_job_set(*job, a->sets[i], err);
  if (st != MDL_OK) {
    mdl_job_free(*job);
    *job = NULL;
  }
  return st;
}
