/* Registry folder layout and its atomic and append-only writes. */
#include "runtime/ci/registry.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"

char *mdl_registry_dir(const mdl_job *job, const char *override) {
  if (override) return mdl_xstrdup(override);
  const Memdl__Ci *ci = job->job->ci;
  const char *rel = ci && ci->registry && *ci->registry ? ci->registry : "registry";
  return mdl_path_join(job->base_dir, rel);
}

char *mdl_registry_run_path(const char *dir, const char *fp, const char *name) {
  size_t n = strlen(dir) + strlen(fp) + (name ? strlen(name) : 0) + 16;
  char *p = mdl_xmalloc(n);
  if (name)
    snprintf(p, n, "%s/runs/%s/%s", dir, fp, name);
  else
    snprintf(p, n, "%s/runs/%s", dir, fp);
  return p;
}

mdl_status mdl_registry_mkdirs(const char *path, mdl_error *err) {
  char *p = mdl_xstrdup(path);
  mdl_status st = MDL_OK;
  for (char *c = p + 1;; c++) {
    if (*c && *c != '/') continue;
    char keep = *c;
    *c = 0;
    if (mkdir(p, 0777) != 0 && errno != EEXIST) {
      st = mdl_errorf(err, MDL_ERR_INTERNAL, "cannot create folder %s: %s", p, strerror(errno));
      break;
    }
    *c = keep;
    if (!keep) break;
  }
  free(p);
  return st;
}

bool mdl_registry_blessed(const char *dir, char fp[65]) {
  char *path = mdl_path_join(dir, "BLESSED");
  char *text = NULL;
  size_t len;
  mdl_error e;
  bool ok = mdl_file_read(path, &text, &len, &e) == MDL_OK;
  free(path);
  if (!ok) return false;
  size_t n = strspn(text, "0123456789abcdef");
  ok = n == 64;
  if (ok) {
    memcpy(fp, text, 64);
    fp[64] = 0;
  }
  free(text);
  return ok;
}

mdl_status mdl_registry_bless(const char *dir, const char *fp, mdl_error *err) {
  mdl_status st = mdl_registry_mkdirs(dir, err);
  if (st != MDL_OK) return st;
  char line[80];
  int n = snprintf(line, sizeof line, "%s\n", fp);
  char *path = mdl_path_join(dir, "BLESSED");
  st = mdl_file_write_atomic(path, line, (size_t)n, err);
  free(path);
  return st;
}

mdl_status mdl_registry_append_history(const char *dir, const char *json_line, mdl_error *err) {
  mdl_status st = mdl_registry_mkdirs(dir, err);
  if (st != MDL_OK) return st;
  char *path = mdl_path_join(dir, "history.jsonl");
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd < 0) {
    st = mdl_errorf(err, MDL_ERR_INTERNAL, "%s: %s", path, strerror(errno));
    free(path);
    return st;
  }
  /* one write of the whole line, so concurrent appends do not interleave */
  size_t n = strlen(json_line);
  char *buf = mdl_xmalloc(n + 2);
  memcpy(buf, json_line, n);
  buf[n] = '\n';
  ssize_t w = write(fd, buf, n + 1);
  free(buf);
  if (w != (ssize_t)(n + 1) || fsync(fd) != 0)
    st = mdl_errorf(err, MDL_ERR_INTERNAL, "%s: cannot append: %s", path, strerror(errno));
  close(fd);
  free(path);
  return st;
}

mdl_status mdl_registry_put(const char *dir, const char *fp, const char *name, const void *data,
                            size_t len, mdl_error *err) {
  char *run = mdl_registry_run_path(dir, fp, NULL);
  mdl_status st = mdl_registry_mkdirs(run, err);
  free(run);
  if (st != MDL_OK) return st;
  char *path = mdl_registry_run_path(dir, fp, name);
  st = mdl_file_write_atomic(path, data, len, err);
  free(path);
  return st;
}

mdl_status mdl_registry_get(const char *dir, const char *fp, const char *name, char **text,
                            mdl_error *err) {
  char *path = mdl_registry_run_path(dir, fp, name);
  size_t len;
  struct stat sb;
  mdl_status st;
  if (stat(path, &sb) != 0) {
    *text = NULL;
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s is not there", path);
  } else {
    st = mdl_file_read(path, text, &len, err);
  }
  free(path);
  return st;
}

mdl_status mdl_registry_copy_in(const char *dir, const char *fp, const char *name, const char *src,
                                mdl_error *err) {
  char *data = NULL;
  size_t len;
  mdl_status st = mdl_file_read(src, &data, &len, err);
  if (st == MDL_OK) st = mdl_registry_put(dir, fp, name, data, len, err);
  free(data);
  return st;
}
