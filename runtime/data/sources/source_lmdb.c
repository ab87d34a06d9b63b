/* LMDB databases of caffe.Datum records, as Caffe's convert_imageset and
 * convert_mnist_data write them (a directory holding data.mdb, or the file
 * itself). Opened read-only without a lock file; records are taken in key
 * order, and only the partition's records are decoded. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/data/dataset_impl.h"
#include "runtime/data/sources/datum.h"

typedef struct lmdb_db {
  char *path;
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_cursor *cur;
} lmdb_db;

static void lmdb_close(lmdb_db *d) {
  if (d->cur) mdb_cursor_close(d->cur);
  if (d->txn) mdb_txn_abort(d->txn);
  if (d->env) mdb_env_close(d->env);
  free(d->path);
  memset(d, 0, sizeof *d);
}

static bool file_exists(const char *dir, const char *name) {
  char *p = mdl_data_path(dir, name);
  struct stat st;
  bool ok = stat(p, &st) == 0;
  free(p);
  return ok;
}

/* liblmdb asserts (abort) or faults on page-level corruption, inside its
 * own code. Before this process walks a database, a child walks every key
 * the same way; a child killed by a signal means the file is corrupt, and
 * that becomes an error naming it (with liblmdb's own message, which the
 * child writes to a pipe). Checked once per file (path, size, mtime) per
 * process. Returns MDL_OK when the walk ended normally, whatever it found
 * (errors that liblmdb returns are reported by the caller's own walk). */
static pthread_mutex_t g_checked_mu = PTHREAD_MUTEX_INITIALIZER;
static struct checked {
  char path[512];
  off_t size;
  struct timespec mtime;
} g_checked[16];
static int g_n_checked, g_next_checked;

static bool already_checked(const char *path, const struct stat *sb, bool add) {
  bool found = false;
  pthread_mutex_lock(&g_checked_mu);
  for (int i = 0; i < g_n_checked && !found; i++)
    found = !strcmp(g_checked[i].path, path) && g_checked[i].size == sb->st_size &&
            g_checked[i].mtime.tv_sec == sb->st_mtim.tv_sec &&
            g_checked[i].mtime.tv_nsec == sb->st_mtim.tv_nsec;
  if (!found && add && strlen(path) < sizeof g_checked[0].path) {
    struct checked *c = &g_checked[g_next_checked];
    g_next_checked = (g_next_checked + 1) % 16;
    if (g_n_checked < 16) g_n_checked++;
    snprintf(c->path, sizeof c->path, "%s", path);
    c->size = sb->st_size;
    c->mtime = sb->st_mtim;
  }
  pthread_mutex_unlock(&g_checked_mu);
  return found;
}

static mdl_status lmdb_check_in_child(const char *path, unsigned flags, mdl_error *err) {
  char data[600];
  snprintf(data, sizeof data, "%s%s", path, (flags & MDB_NOSUBDIR) ? "" : "/data.mdb");
  struct stat sb;
  if (stat(data, &sb) != 0 || already_checked(data, &sb, false)) return MDL_OK;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return MDL_OK; /* cannot check: the walk goes on unchecked */
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return MDL_OK;
  }
  if (pid == 0) {
    dup2(fds[1], 2);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_env_create(&env);
    if (!rc) rc = mdb_env_open(env, path, flags, 0644);
    if (!rc) rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (!rc) rc = mdb_dbi_open(txn, NULL, 0, &dbi);
    if (!rc) rc = mdb_cursor_open(txn, dbi, &cur);
    if (!rc)
      for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
           rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      }
    _exit(0);
  }
  close(fds[1]);
  char msg[300];
  size_t got = 0;
  ssize_t r;
  while (got < sizeof msg - 1 && (r = read(fds[0], msg + got, sizeof msg - 1 - got)) != 0) {
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    got += (size_t)r;
  }
  close(fds[0]);
  msg[got] = 0;
  while (got > 0 && (msg[got - 1] == '\n' || msg[got - 1] == ' ')) msg[--got] = 0;
  int ws;
  while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(ws))
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: corrupt LMDB: liblmdb %s reading it%s%s", data,
                      WTERMSIG(ws) == SIGABRT ? "aborted" : "crashed (a bad page)", got ? ": " : "",
                      msg);
  already_checked(data, &sb, true);
  return MDL_OK;
}

static mdl_status lmdb_open(const mdl_src_ctx *c, lmdb_db *d, mdl_error *err) {
  memset(d, 0, sizeof *d);
  const char *name = c->src->lmdb->path;
  if (!name || !name[0]) return mdl_errorf(err, MDL_ERR_INVALID, "lmdb source names no path");
  d->path = mdl_data_path(c->base_dir, name);
  struct stat sb;
  mdl_status st = MDL_OK;
  if (stat(d->path, &sb) != 0) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: cannot open LMDB: %s", d->path, strerror(errno));
    goto fail;
  }
  unsigned flags = MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS | MDB_NORDAHEAD;
  if (S_ISDIR(sb.st_mode)) {
    if (!file_exists(d->path, "data.mdb")) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: not an LMDB (no data.mdb in the directory%s)",
                      d->path,
                      file_exists(d->path, "CURRENT") ? "; it looks like LevelDB, which memdl does "
                                                        "not read: convert it with --backend lmdb"
                                                      : "");
      goto fail;
    }
  } else {
    flags |= MDB_NOSUBDIR;
  }
  st = lmdb_check_in_child(d->path, flags, err);
  if (st) goto fail;
  int rc = mdb_env_create(&d->env);
  if (!rc) rc = mdb_env_open(d->env, d->path, flags, 0644);
  if (rc) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: not an LMDB: %s", d->path, mdb_strerror(rc));
    goto fail;
  }
  rc = mdb_txn_begin(d->env, NULL, MDB_RDONLY, &d->txn);
  if (!rc) rc = mdb_dbi_open(d->txn, NULL, 0, &d->dbi);
  if (!rc) rc = mdb_cursor_open(d->txn, d->dbi, &d->cur);
  if (rc) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: cannot read LMDB: %s", d->path, mdb_strerror(rc));
    goto fail;
  }
  return MDL_OK;
fail:
  lmdb_close(d);
  return st;
}

/* The key as printable text for error messages. */
static const char *key_str(const MDB_val *k, char *buf, size_t size) {
  size_t n = k->mv_size < size - 1 ? k->mv_size : size - 1;
  for (size_t i = 0; i < n; i++) {
    char ch = ((const char *)k->mv_data)[i];
    buf[i] = ch >= 32 && ch < 127 ? ch : '?';
  }
  buf[n] = 0;
  return buf;
}

static mdl_status lmdb_probe(const mdl_src_ctx *c, mdl_data_info *info, mdl_error *err) {
  lmdb_db d;
  mdl_status st = lmdb_open(c, &d, err);
  if (st) return st;
  MDB_stat ms;
  int rc = mdb_stat(d.txn, d.dbi, &ms);
  if (rc) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: cannot read LMDB: %s", d.path, mdb_strerror(rc));
    goto done;
  }
  info->records = (int64_t)ms.ms_entries;
  MDB_val k, v;
  rc = mdb_cursor_get(d.cur, &k, &v, MDB_FIRST);
  if (rc == MDB_NOTFOUND) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: the LMDB holds no records", d.path);
    goto done;
  }
  if (rc) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: cannot read LMDB: %s", d.path, mdb_strerror(rc));
    goto done;
  }
  mdl_image img = {0};
  st = mdl_datum_decode(v.mv_data, v.mv_size, c->plan->force_channels, &img, err);
  if (st) {
    char kb[64];
    mdl_error_prefix(err, "%s: record 0 (key %s): ", d.path, key_str(&k, kb, sizeof kb));
  } else {
    info->dtype = img.dtype;
    info->channels = img.c;
    info->height = img.h;
    info->width = img.w;
  }
  mdl_image_free(&img);
done:
  lmdb_close(&d);
  return st;
}

static mdl_status lmdb_scan(const mdl_src_ctx *c, const mdl_data_info *info, mdl_sink *sink,
                            mdl_error *err) {
  (void)info;
  lmdb_db d;
  mdl_status st = lmdb_open(c, &d, err);
  if (st) return st;
  const char *saved_name = sink->src_name;
  sink->src_name = d.path;
  mdl_image img = {0};
  MDB_val k, v;
  int64_t r = 0;
  int rc;
  char kb[64];
  for (rc = mdb_cursor_get(d.cur, &k, &v, MDB_FIRST); rc == 0 && !st;
       rc = mdb_cursor_get(d.cur, &k, &v, MDB_NEXT), r++) {
    if (mdl_select_done(&sink->sel, r)) break;
    if (!mdl_sink_want(sink, r)) continue;
    st = mdl_datum_decode(v.mv_data, v.mv_size, c->plan->force_channels, &img, err);
    if (st) {
      mdl_error_prefix(err, "%s: record %lld (key %s): ", d.path, (long long)r,
                       key_str(&k, kb, sizeof kb));
      break;
    }
    mdl_rec rec = {.index = r,
                   .label = img.label,
                   .dtype = img.dtype,
                   .c = img.c,
                   .h = img.h,
                   .w = img.w,
                   .px = img.px,
                   .name = key_str(&k, kb, sizeof kb)};
    st = mdl_sink_put(sink, &rec, err);
  }
  if (!st && rc != 0 && rc != MDB_NOTFOUND)
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: record %lld: %s", d.path, (long long)r,
                    mdb_strerror(rc));
  mdl_image_free(&img);
  sink->src_name = saved_name;
  lmdb_close(&d);
  return st;
}

const mdl_source_iface mdl_source_lmdb = {"lmdb", lmdb_probe, lmdb_scan};
