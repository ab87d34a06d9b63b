/* JSON lines for metrics; see metrics.h. */
#include "runtime/train/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct mdl_metrics {
  FILE *f;
  char *path;
};

static void put(mdl_json *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(mdl_json *j, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(j->buf + j->len, j->cap - j->len, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < j->cap - j->len) {
      j->len += (size_t)n;
      return;
    }
    j->cap = j->cap * 2 + (size_t)(n > 0 ? n : 64);
    j->buf = mdl_xrealloc(j->buf, j->cap);
  }
}

void mdl_json_begin(mdl_json *j) {
  if (!j->buf) {
    j->cap = 256;
    j->buf = mdl_xmalloc(j->cap);
  }
  j->len = 0;
  j->buf[0] = 0;
  j->first = true;
  put(j, "{");
}

static void key(mdl_json *j, const char *k) {
  put(j, "%s\"%s\": ", j->first ? "" : ", ", k);
  j->first = false;
}

void mdl_json_num(mdl_json *j, const char *k, double v) {
  key(j, k);
  if (!isfinite(v))
    put(j, "null");
  else
    put(j, "%.6g", v);
}

void mdl_json_int(mdl_json *j, const char *k, int64_t v) {
  key(j, k);
  put(j, "%lld", (long long)v);
}

void mdl_json_raw(mdl_json *j, const char *k, const char *json) {
  key(j, k);
  put(j, "%s", json);
}

void mdl_json_bool(mdl_json *j, const char *k, bool v) {
  key(j, k);
  put(j, "%s", v ? "true" : "false");
}

void mdl_json_str(mdl_json *j, const char *k, const char *v) {
  key(j, k);
  put(j, "\"");
  for (const unsigned char *p = (const unsigned char *)(v ? v : ""); *p; p++) {
    if (*p == '"' || *p == '\\')
      put(j, "\\%c", *p);
    else if (*p < 32)
      put(j, "\\u%04x", *p);
    else
      put(j, "%c", *p);
  }
  put(j, "\"");
}

const char *mdl_json_end(mdl_json *j) {
  put(j, "}");
  return j->buf;
}

void mdl_json_free(mdl_json *j) {
  free(j->buf);
  j->buf = NULL;
  j->len = j->cap = 0;
}

mdl_status mdl_mkdirs(const char *dir, mdl_error *err) {
  char *p = mdl_xstrdup(dir);
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
      mdl_status st =
          mdl_errorf(err, MDL_ERR_INTERNAL, "cannot create directory %s: %s", p, strerror(errno));
      free(p);
      return st;
    }
    *s = '/';
  }
  if (*p && mkdir(p, 0755) != 0 && errno != EEXIST) {
    mdl_status st =
        mdl_errorf(err, MDL_ERR_INTERNAL, "cannot create directory %s: %s", p, strerror(errno));
    free(p);
    return st;
  }
  free(p);
  return MDL_OK;
}

mdl_status mdl_metrics_open(const char *dir, bool *existed, mdl_metrics **out, mdl_error *err) {
  *out = NULL;
  mdl_status st = mdl_mkdirs(dir, err);
  if (st != MDL_OK) return st;
  size_t n = strlen(dir) + 32;
  char *path = mdl_xmalloc(n);
  snprintf(path, n, "%s/metrics.jsonl", dir);
  struct stat sb;
  if (existed) *existed = stat(path, &sb) == 0 && sb.st_size > 0;
  FILE *f = fopen(path, "a");
  if (!f) {
    st = mdl_errorf(err, MDL_ERR_INTERNAL, "cannot write %s: %s", path, strerror(errno));
    free(path);
    return st;
  }
  mdl_metrics *m = mdl_xcalloc(1, sizeof *m);
  m->f = f;
  m->path = path;
  *out = m;
  return MDL_OK;
}

void mdl_metrics_write(mdl_metrics *m, mdl_json *j) {
  if (!m) return;
  /* every record carries its wall-clock time (Unix seconds), first */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  fprintf(m->f, "{\"time\": %.3f%s", (double)ts.tv_sec + ts.tv_nsec / 1e9,
          j->buf[1] == '}' ? "" : ", ");
  fputs(j->buf + 1, m->f);
  fputc('\n', m->f);
  fflush(m->f);
}

const char *mdl_metrics_path(const mdl_metrics *m) {
  return m ? m->path : NULL;
}

void mdl_metrics_close(mdl_metrics *m) {
  if (!m) return;
  fclose(m->f);
  free(m->path);
  free(m);
}
