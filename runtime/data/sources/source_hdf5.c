/* Caffe's HDF5Data sources: a text file listing .h5 files, one a line, each
 * holding a records dataset (N, N x D, N x H x W or N x C x H x W; float,
 * double or integer, stored as float) and a labels dataset (N or N x 1,
 * integer-valued), records concatenated across files in list order. Paths in
 * the list are used as written (relative to base_dir, as Caffe takes them
 * relative to its working directory), not relative to the list file. Only
 * this file includes <hdf5.h>. It does not read other tops than the two. */
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/h5lock.h"
#include "runtime/data/dataset_impl.h"

/* Records read per H5Dread while scanning (bounds the buffer, not I/O). */
#define H5_CHUNK_BYTES (64u << 20)

/* The Debian library is built without thread safety: every HDF5 call of a
 * probe or scan runs under the process-wide lock (partitions may build
 * concurrently, and the HDF5Output layer writes files). */

typedef struct h5_entry {
  char *path; /* joined to base_dir */
  int line;   /* in the list */
  int64_t n;  /* records */
} h5_entry;

typedef struct h5_list {
  char *list_path;
  h5_entry *e;
  size_t n;
  int64_t records;
  int rank;        /* of the records dataset, N included */
  int64_t dims[3]; /* per record, as the first file has them */
  int c, h, w;     /* dims padded with trailing 1s: D -> D x 1 x 1 */
  int64_t max_label;
} h5_list;

/* One open file and its two datasets. */
typedef struct h5_file {
  hid_t file, data, label;
  int64_t n;
  int rank;
  int64_t dims[3];
} h5_file;

static const char *data_name(const mdl_src_ctx *c) {
  const char *s = c->src->hdf5->data;
  return s && s[0] ? s : "data";
}

static const char *label_name(const mdl_src_ctx *c) {
  const char *s = c->src->hdf5->label;
  return s && s[0] ? s : "label";
}

static void list_free(h5_list *l) {
  for (size_t i = 0; i < l->n; i++) free(l->e[i].path);
  free(l->e);
  free(l->list_path);
  memset(l, 0, sizeof *l);
}

static void h5_close(h5_file *f) {
  if (f->label >= 0) H5Dclose(f->label);
  if (f->data >= 0) H5Dclose(f->data);
  if (f->file >= 0) H5Fclose(f->file);
  f->file = f->data = f->label = H5I_INVALID_HID;
}

static herr_t first_error(unsigned n, const H5E_error2_t *e, void *out) {
  if (n == 0 && e->desc && e->desc[0]) snprintf(out, 256, "%s", e->desc);
  return 0;
}

/* The most specific message on HDF5's error stack ("" when none), cleared. */
static const char *h5_why(char buf[256]) {
  buf[0] = 0;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, first_error, buf);
  H5Eclear2(H5E_DEFAULT);
  return buf;
}

static const char *class_name(H5T_class_t k) {
  switch (k) {
    case H5T_INTEGER:
      return "integer";
    case H5T_FLOAT:
      return "float";
    case H5T_STRING:
      return "string";
    case H5T_COMPOUND:
      return "compound";
    case H5T_ENUM:
      return "enum";
    case H5T_ARRAY:
      return "array";
    default:
      return "non-numeric";
  }
}

/* Opens dataset name of f as a numeric dataset; dims[0..*rank). */
static mdl_status open_dataset(hid_t file, const char *path, const char *name, hid_t *ds, int *rank,
                               hsize_t dims[H5S_MAX_RANK], mdl_error *err) {
  char why[256];
  htri_t ok = H5Lexists(file, name, H5P_DEFAULT);
  if (ok <= 0) {
    h5_why(why);
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: no dataset \"%s\" (HDF5Data reads the datasets its tops name)", path,
                      name);
  }
  *ds = H5Dopen2(file, name, H5P_DEFAULT);
  if (*ds < 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: dataset \"%s\" cannot be opened: %s", path, name,
                      h5_why(why));
  hid_t type = H5Dget_type(*ds), space = H5Dget_space(*ds);
  H5T_class_t k = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
  *rank = space >= 0 ? H5Sget_simple_extent_dims(space, dims, NULL) : -1;
  if (type >= 0) H5Tclose(type);
  if (space >= 0) H5Sclose(space);
  if (k != H5T_FLOAT && k != H5T_INTEGER)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: dataset \"%s\" holds %s values; expected float, double or integer", path,
                      name, class_name(k));
  if (*rank < 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: dataset \"%s\": unreadable shape: %s", path, name,
                      h5_why(why));
  return MDL_OK;
}

static void dims_str(const int64_t *d, int n, char *buf, size_t size) {
  int k = snprintf(buf, size, "%s", n ? "" : "scalar");
  for (int i = 0; i < n && k >= 0 && (size_t)k < size; i++)
    k += snprintf(buf + k, size - (size_t)k, "%s%lld", i ? " x " : "", (long long)d[i]);
}

/* Opens path and checks its datasets: ranks, per-record dims, equal N. */
static mdl_status h5_open(const mdl_src_ctx *c, const char *path, h5_file *f, mdl_error *err) {
  memset(f, 0, sizeof *f);
  f->file = f->data = f->label = H5I_INVALID_HID;
  char why[256];
  FILE *probe = fopen(path, "rb");
  if (!probe) return mdl_errorf(err, MDL_ERR_INVALID, "%s: %s", path, strerror(errno));
  fclose(probe);
  htri_t is = H5Fis_hdf5(path);
  if (is <= 0) {
    h5_why(why);
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: not an HDF5 file", path);
  }
  f->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f->file < 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: corrupt HDF5 file: %s", path, h5_why(why));
  const char *dn = data_name(c), *ln = label_name(c);
  hsize_t dd[H5S_MAX_RANK], ld[H5S_MAX_RANK];
  int drank, lrank;
  mdl_status st = open_dataset(f->file, path, dn, &f->data, &drank, dd, err);
  if (!st) st = open_dataset(f->file, path, ln, &f->label, &lrank, ld, err);
  if (st) return st;
  int64_t d64[H5S_MAX_RANK];
  for (int i = 0; i < drank; i++) d64[i] = (int64_t)dd[i];
  char s1[128], s2[128];
  if (drank < 1 || drank > 4) {
    dims_str(d64, drank, s1, sizeof s1);
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: dataset \"%s\" is %s; expected N, N x D, N x H x W or N x C x H x W",
                      path, dn, s1);
  }
  if (lrank < 1 || lrank > 2 || (lrank == 2 && ld[1] != 1)) {
    int64_t l64[H5S_MAX_RANK];
    for (int i = 0; i < lrank; i++) l64[i] = (int64_t)ld[i];
    dims_str(l64, lrank, s1, sizeof s1);
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: dataset \"%s\" is %s; expected N or N x 1 (one integer label a record)",
                      path, ln, s1);
  }
  if (ld[0] != dd[0])
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: dataset \"%s\" has %llu records but \"%s\" has %llu labels", path, dn,
                      (unsigned long long)dd[0], ln, (unsigned long long)ld[0]);
  if (dd[0] == 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: dataset \"%s\" holds no records", path, dn);
  f->n = (int64_t)dd[0];
  f->rank = drank;
  uint64_t elems = 1;
  for (int i = 0; i < 3; i++) {
    f->dims[i] = i + 1 < drank ? (int64_t)dd[i + 1] : 1;
    if (f->dims[i] < 1 || f->dims[i] > (1 << 20) || (elems *= (uint64_t)f->dims[i]) > (1u << 30)) {
      dims_str(d64, drank, s2, sizeof s2);
      return mdl_errorf(err, MDL_ERR_INVALID, "%s: dataset \"%s\" is %s: records too large", path,
                        dn, s2);
    }
  }
  return MDL_OK;
}

/* All of f's labels, checked integer-valued; *out malloc'd (caller frees). */
static mdl_status read_labels(const mdl_src_ctx *c, const char *path, const h5_file *f,
                              int32_t **out, mdl_error *err) {
  char why[256];
  const char *ln = label_name(c);
  double *v = malloc((size_t)f->n * sizeof *v);
  int32_t *lab = malloc((size_t)f->n * sizeof *lab);
  mdl_status st = MDL_OK;
  if (!v || !lab) {
    st = mdl_errorf(err, MDL_ERR_NOMEM, "%s: dataset \"%s\": %lld labels do not fit in memory",
                    path, ln, (long long)f->n);
  } else if (H5Dread(f->label, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: dataset \"%s\" cannot be read (corrupt?): %s", path,
                    ln, h5_why(why));
  }
  for (int64_t i = 0; !st && i < f->n; i++) {
    if (!(v[i] == floor(v[i])) || fabs(v[i]) > 2147483647.0) {
      st = mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: dataset \"%s\": record %lld: label %g is not an integer", path, ln,
                      (long long)i, v[i]);
      break;
    }
    lab[i] = (int32_t)v[i];
  }
  free(v);
  if (st) {
    free(lab);
    lab = NULL;
  }
  *out = lab;
  return st;
}

/* Reads the list, then opens every file once: shapes must agree across
 * files; labels are read and checked when labels_too. Under the HDF5 lock. */
static mdl_status list_read(const mdl_src_ctx *c, h5_list *l, bool labels_too, mdl_error *err) {
  memset(l, 0, sizeof *l);
  const Memdl__Hdf5Source *s = c->src->hdf5;
  if (!s->source || !s->source[0])
    return mdl_errorf(err, MDL_ERR_INVALID, "hdf5 source names no list file");
  l->list_path = mdl_data_path(c->base_dir, s->source);
  char *text;
  size_t len, cap = 0;
  mdl_status st = mdl_file_read(l->list_path, &text, &len, err);
  if (st) {
    list_free(l);
    return st;
  }
  int line = 0;
  for (char *p = text; p && *p;) {
    char *nl = strchr(p, '\n');
    if (nl) *nl = 0;
    line++;
    char *end = p + strlen(p);
    while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) *--end = 0;
    while (*p == ' ' || *p == '\t') p++;
    if (*p) {
      if (l->n == cap) {
        cap = cap ? cap * 2 : 16;
        l->e = mdl_xrealloc(l->e, cap * sizeof *l->e);
      }
      l->e[l->n++] = (h5_entry){mdl_data_path(c->base_dir, p), line, 0};
    }
    p = nl ? nl + 1 : NULL;
  }
  free(text);
  if (l->n == 0) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: the list names no HDF5 files", l->list_path);
    list_free(l);
    return st;
  }
  l->max_label = -1;
  for (size_t i = 0; i < l->n && !st; i++) {
    h5_entry *e = &l->e[i];
    h5_file f;
    st = h5_open(c, e->path, &f, err);
    if (!st && i == 0) {
      l->rank = f.rank;
      memcpy(l->dims, f.dims, sizeof l->dims);
    } else if (!st && (f.rank != l->rank || memcmp(f.dims, l->dims, sizeof l->dims))) {
      char a[128], b[128];
      dims_str(f.dims, f.rank - 1, a, sizeof a);
      dims_str(l->dims, l->rank - 1, b, sizeof b);
      st = mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: dataset \"%s\" has records of %s, but %s's are %s (every file's "
                      "records must have one shape)",
                      e->path, data_name(c), a[0] ? a : "1", l->e[0].path, b[0] ? b : "1");
    }
    if (!st && labels_too) {
      int32_t *lab;
      st = read_labels(c, e->path, &f, &lab, err);
      for (int64_t r = 0; !st && r < f.n; r++)
        if (lab[r] > l->max_label) l->max_label = lab[r];
      if (!st) free(lab);
    }
    e->n = f.n;
    l->records += f.n;
    h5_close(&f);
    if (st) mdl_error_prefix(err, "%s:%d: ", l->list_path, e->line);
  }
  if (st) {
    list_free(l);
    return st;
  }
  l->c = (int)l->dims[0];
  l->h = (int)l->dims[1];
  l->w = (int)l->dims[2];
  return MDL_OK;
}

/* Runs fn under the HDF5 lock with HDF5's own error printing off (errors are
 * reported through err instead). */
typedef struct h5_call {
  const mdl_src_ctx *c;
  mdl_data_info *info;
  mdl_sink *sink;
} h5_call;

static mdl_status h5_locked(mdl_status (*fn)(h5_call *, mdl_error *), h5_call *a, mdl_error *err) {
  mdl_h5_lock();
  H5E_auto2_t old_fn = NULL;
  void *old_data = NULL;
  H5Eget_auto2(H5E_DEFAULT, &old_fn, &old_data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  mdl_status st = fn(a, err);
  H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
  mdl_h5_unlock();
  return st;
}

static mdl_status do_probe(h5_call *a, mdl_error *err) {
  h5_list l;
  mdl_status st = list_read(a->c, &l, true, err);
  if (st) return st;
  a->info->dtype = MDL_DTYPE_F32;
  a->info->channels = l.c;
  a->info->height = l.h;
  a->info->width = l.w;
  a->info->records = l.records;
  a->info->num_classes = (int)(l.max_label + 1);
  list_free(&l);
  return MDL_OK;
}

/* Scans one file: rows are read in chunks starting at the first wanted one. */
static mdl_status scan_file(const mdl_src_ctx *c, const h5_list *l, const h5_entry *e, int64_t base,
                            mdl_sink *sink, bool *done, mdl_error *err) {
  char why[256];
  h5_file f;
  mdl_status st = h5_open(c, e->path, &f, err);
  int32_t *lab = NULL;
  float *buf = NULL;
  size_t elems = (size_t)l->c * l->h * l->w;
  int64_t chunk = (int64_t)(H5_CHUNK_BYTES / (elems * sizeof(float)));
  if (chunk < 1) chunk = 1;
  if (chunk > f.n) chunk = f.n;
  int64_t lo = 0, hi = 0; /* rows in buf */
  hid_t fspace = H5I_INVALID_HID, mspace = H5I_INVALID_HID;
  if (!st && f.n != e->n)
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: changed while being read (%lld records, were %lld)",
                    e->path, (long long)f.n, (long long)e->n);
  if (!st) st = read_labels(c, e->path, &f, &lab, err);
  for (int64_t i = 0; !st && i < f.n; i++) {
    int64_t r = base + i;
    if (mdl_select_done(&sink->sel, r)) {
      *done = true;
      break;
    }
    if (!mdl_sink_want(sink, r)) continue;
    if (i >= hi) {
      if (!buf && !(buf = malloc((size_t)chunk * elems * sizeof *buf))) {
        st = mdl_errorf(err, MDL_ERR_NOMEM, "%s: a read buffer of %lld records does not fit",
                        e->path, (long long)chunk);
        break;
      }
      lo = i;
      hi = i + chunk < f.n ? i + chunk : f.n;
      hsize_t start[H5S_MAX_RANK] = {(hsize_t)lo}, count[H5S_MAX_RANK] = {(hsize_t)(hi - lo)};
      for (int k = 1; k < f.rank; k++) count[k] = (hsize_t)f.dims[k - 1];
      if (fspace < 0) fspace = H5Dget_space(f.data);
      if (mspace >= 0) H5Sclose(mspace);
      mspace = H5Screate_simple(f.rank, count, NULL);
      if (fspace < 0 || mspace < 0 ||
          H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
          H5Dread(f.data, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, buf) < 0) {
        st = mdl_errorf(err, MDL_ERR_INVALID,
                        "%s: dataset \"%s\": records %lld..%lld cannot be read (corrupt?): %s",
                        e->path, data_name(c), (long long)lo, (long long)hi - 1, h5_why(why));
        break;
      }
    }
    mdl_rec rec = {.index = r,
                   .label = lab[i],
                   .dtype = MDL_DTYPE_F32,
                   .c = l->c,
                   .h = l->h,
                   .w = l->w,
                   .px = buf + (size_t)(i - lo) * elems};
    st = mdl_sink_put(sink, &rec, err);
  }
  if (mspace >= 0) H5Sclose(mspace);
  if (fspace >= 0) H5Sclose(fspace);
  free(buf);
  free(lab);
  h5_close(&f);
  return st;
}

static mdl_status do_scan(h5_call *a, mdl_error *err) {
  h5_list l;
  mdl_status st = list_read(a->c, &l, false, err);
  if (st) return st;
  const char *saved_name = a->sink->src_name;
  int64_t base = 0;
  bool done = false;
  for (size_t i = 0; i < l.n && !st && !done; i++) {
    a->sink->src_name = l.e[i].path;
    st = scan_file(a->c, &l, &l.e[i], base, a->sink, &done, err);
    if (st) mdl_error_prefix(err, "%s:%d: ", l.list_path, l.e[i].line);
    base += l.e[i].n;
  }
  a->sink->src_name = saved_name;
  list_free(&l);
  return st;
}

static mdl_status hdf5_probe(const mdl_src_ctx *c, mdl_data_info *info, mdl_error *err) {
  h5_call a = {.c = c, .info = info};
  return h5_locked(do_probe, &a, err);
}

static mdl_status hdf5_scan(const mdl_src_ctx *c, const mdl_data_info *info, mdl_sink *sink,
                            mdl_error *err) {
  h5_call a = {.c = c, .info = (mdl_data_info *)info, .sink = sink};
  return h5_locked(do_scan, &a, err);
}

const mdl_source_iface mdl_source_hdf5 = {"hdf5", hdf5_probe, hdf5_scan};
