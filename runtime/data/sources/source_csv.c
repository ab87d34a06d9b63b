/* CSV files of numbers: one record a row, one column the label (negative
 * counts from the end), the rest the features (stored as float, shape
 * 1 x 1 x D). Every row must have the first row's width. Quoting is not
 * supported: the files are numeric. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/data/dataset_impl.h"

typedef struct csv_file {
  char *path;
  char *text;
  char delim;
  int label_col; /* resolved, 0-based */
  int width;     /* fields per row */
  int64_t rows;
} csv_file;

static void csv_free(csv_file *f) {
  free(f->path);
  free(f->text);
  memset(f, 0, sizeof *f);
}

/* Next non-empty line at *p (modified in place: NUL-terminated), its number
 * in *line. NULL at the end. */
static char *next_line(char **p, int *line) {
  while (*p && **p) {
    char *s = *p;
    char *nl = strchr(s, '\n');
    if (nl) {
      *nl = 0;
      *p = nl + 1;
    } else {
      *p = s + strlen(s);
    }
    (*line)++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\r' || isspace((unsigned char)s[n - 1]))) s[--n] = 0;
    while (*s && isspace((unsigned char)*s)) s++;
    if (*s) return s;
  }
  return NULL;
}

static int count_fields(const char *s, char delim) {
  int n = 1;
  for (; *s; s++) n += *s == delim;
  return n;
}

/* Opens and scans the file once for its width and row count. The text is
 * re-read by callers that parse it (next_line cuts it up). */
static mdl_status csv_open(const mdl_src_ctx *c, csv_file *f, mdl_error *err) {
  memset(f, 0, sizeof *f);
  const Memdl__CsvSource *s = c->src->csv;
  if (!s->path || !s->path[0]) return mdl_errorf(err, MDL_ERR_INVALID, "csv source names no path");
  const char *d = s->delimiter ? s->delimiter : ",";
  if (!strcmp(d, "\\t") || !strcmp(d, "tab")) d = "\t";
  if (strlen(d) != 1)
    return mdl_errorf(err, MDL_ERR_INVALID, "csv: delimiter \"%s\" must be one character", d);
  f->delim = d[0];
  f->path = mdl_data_path(c->base_dir, s->path);
  size_t len;
  mdl_status st = mdl_file_read(f->path, &f->text, &len, err);
  if (st) {
    csv_free(f);
    return st;
  }
  char *copy = mdl_xstrdup(f->text), *p = copy;
  int line = 0;
  char *row;
  if (s->header) next_line(&p, &line);
  while ((row = next_line(&p, &line))) {
    if (f->rows == 0) f->width = count_fields(row, f->delim);
    f->rows++;
  }
  free(copy);
  if (f->rows == 0) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: no data rows", f->path);
  } else if (f->width < 2) {
    st = mdl_errorf(err, MDL_ERR_INVALID,
                    "%s: rows need a label and at least one feature (%d field)", f->path, f->width);
  } else {
    int lc = s->label_column < 0 ? f->width + s->label_column : s->label_column;
    if (lc < 0 || lc >= f->width)
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: label_column %d is outside the %d columns",
                      f->path, s->label_column, f->width);
    f->label_col = lc;
  }
  if (st) csv_free(f);
  return st;
}

static mdl_status csv_probe(const mdl_src_ctx *c, mdl_data_info *info, mdl_error *err) {
  csv_file f;
  mdl_status st = csv_open(c, &f, err);
  if (st) return st;
  info->dtype = MDL_DTYPE_F32;
  info->channels = info->height = 1;
  info->width = f.width - 1;
  info->records = f.rows;
  csv_free(&f);
  return MDL_OK;
}

static mdl_status csv_scan(const mdl_src_ctx *c, const mdl_data_info *info, mdl_sink *sink,
                           mdl_error *err) {
  (void)info;
  csv_file f;
  mdl_status st = csv_open(c, &f, err);
  if (st) return st;
  const char *saved_name = sink->src_name;
  sink->src_name = f.path;
  float *vals = mdl_xmalloc((size_t)f.width * sizeof *vals);
  char *p = f.text, *row;
  int line = 0;
  int64_t r = 0;
  if (c->src->csv->header) next_line(&p, &line);
  for (; !st && (row = next_line(&p, &line)); r++) {
    int nf = count_fields(row, f.delim);
    if (nf != f.width) {
      st = mdl_errorf(err, MDL_ERR_INVALID,
                      "%s:%d: record %lld: %d fields, expected %d (as the first row)", f.path, line,
                      (long long)r, nf, f.width);
      break;
    }
    if (mdl_select_done(&sink->sel, r)) break;
    if (!mdl_sink_want(sink, r)) continue;
    float label = 0;
    int k = 0;
    char *field = row;
    for (int i = 0; i < f.width; i++) {
      char *end = strchr(field, f.delim);
      if (end) *end = 0;
      char *e;
      while (isspace((unsigned char)*field)) field++;
      float v = strtof(field, &e);
      while (isspace((unsigned char)*e)) e++;
      if (e == field || *e) {
        st = mdl_errorf(err, MDL_ERR_INVALID, "%s:%d: record %lld: field %d \"%s\" is not a number",
                        f.path, line, (long long)r, i + 1, field);
        break;
      }
      if (i == f.label_col)
        label = v;
      else
        vals[k++] = v;
      field = end ? end + 1 : field + strlen(field);
    }
    if (st) break;
    if (!(label == floorf(label)) || fabsf(label) > 2e9f) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s:%d: record %lld: label %g is not an integer",
                      f.path, line, (long long)r, label);
      break;
    }
    mdl_rec rec = {.index = r,
                   .label = (int32_t)label,
                   .dtype = MDL_DTYPE_F32,
                   .c = 1,
                   .h = 1,
                   .w = f.width - 1,
                   .px = vals};
    st = mdl_sink_put(sink, &rec, err);
  }
  free(vals);
  sink->src_name = saved_name;
  csv_free(&f);
  return st;
}

const mdl_source_iface mdl_source_csv = {"csv", csv_probe, csv_scan};
