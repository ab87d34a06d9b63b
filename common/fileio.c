/* Whole-file reads and atomic writes; see fileio.h. */
#include "common/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

mdl_status mdl_file_read(const char *path, char **data, size_t *len, mdl_error *err) {
  *data = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return mdl_errorf(err, MDL_ERR_INVALID, "%s: cannot open: %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (!buf) {
      fclose(f);
      return mdl_errorf(err, MDL_ERR_NOMEM, "%s: out of memory reading it", path);
    }
    n += fread(buf + n, 1, cap - n - 1, f);
    if (n < cap - 1) break;
    cap *= 2;
    char *q = realloc(buf, cap);
    if (!q) free(buf);
    buf = q;
  }
  if (ferror(f)) {
    int e = errno;
    fclose(f);
    free(buf);
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: read error: %s", path, strerror(e));
  }
  fclose(f);
  buf[n] = 0;
  *data = buf;
  *len = n;
  return MDL_OK;
}

char *mdl_path_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return mdl_xstrdup(".");
  if (slash == path) return mdl_xstrdup("/");
  char *d = mdl_xmalloc((size_t)(slash - path) + 1);
  memcpy(d, path, (size_t)(slash - path));
  d[slash - path] = 0;
  return d;
}

mdl_status mdl_file_write_atomic(const char *path, const void *buf, size_t len, mdl_error *err) {
  size_t n = strlen(path) + 32;
  char *tmp = mdl_xmalloc(n);
  snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    mdl_status st =
        mdl_errorf(err, MDL_ERR_INTERNAL, "%s: cannot create: %s", tmp, strerror(errno));
    free(tmp);
    return st;
  }
  const uint8_t *p = buf;
  size_t done = 0;
  while (done < len) {
    ssize_t w = write(fd, p + done, len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int e = errno;
      close(fd);
      unlink(tmp);
      free(tmp);
      return mdl_errorf(err, MDL_ERR_INTERNAL, "%s: write failed: %s", path, strerror(e));
    }
    done += (size_t)w;
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    int e = errno;
    unlink(tmp);
    free(tmp);
    return mdl_errorf(err, MDL_ERR_INTERNAL, "%s: fsync failed: %s", path, strerror(e));
  }
  if (rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    free(tmp);
    return mdl_errorf(err, MDL_ERR_INTERNAL, "%s: rename failed: %s", path, strerror(e));
  }
  free(tmp);
  char *dir = mdl_path_dir(path);
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd); /* best effort: the rename is durable once the directory is */
    close(dfd);
  }
  free(dir);
  return MDL_OK;
}

char *mdl_path_join(const char *dir, const char *rel) {
  if (!rel) return NULL;
  if (rel[0] == '/' || !dir || !dir[0] || !strcmp(dir, ".")) return mdl_xstrdup(rel);
  size_t nd = strlen(dir), nr = strlen(rel);
  char *p = mdl_xmalloc(nd + nr + 2);
  memcpy(p, dir, nd);
  if (dir[nd - 1] != '/') p[nd++] = '/';
  memcpy(p + nd, rel, nr + 1);
  return p;
}
