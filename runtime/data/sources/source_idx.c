/* IDX files (MNIST, Fashion-MNIST): images and labels, gzip-compressed or
 * plain (told apart by the gzip magic; zlib reads both). Streams the images
 * once, decoding only the records the partition keeps, and reads to the end
 * so a truncated or corrupt file is always reported. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "runtime/data/dataset_impl.h"

typedef struct idx_file {
  char *path;
  gzFile f;
  bool gz;
  int type; /* 0x08 ubyte, 0x09 sbyte, 0x0B int16, 0x0C int32, 0x0D float, 0x0E double */
  int esize;
  int ndim;
  int64_t dim[4];
  int64_t count;     /* dim[0] */
  int64_t rec_elems; /* product of dim[1..] */
} idx_file;

static void idx_close(idx_file *x) {
  if (x->f) gzclose(x->f);
  free(x->path);
  memset(x, 0, sizeof *x);
}

/* Reads exactly n bytes; short reads are errors naming the file and what
 * was being read: `what`, or, when unit is not 0, the `what` number first +
 * (bytes read) / unit, the one the file ends in. */
static mdl_status idx_read(idx_file *x, void *buf, size_t n, const char *what, int64_t first,
                           size_t unit, mdl_error *err) {
  size_t got = 0;
  while (got < n) {
    unsigned chunk = n - got > (1u << 30) ? 1u << 30 : (unsigned)(n - got);
    int k = gzread(x->f, (char *)buf + got, chunk);
    if (k <= 0) {
      char item[96];
      if (unit)
        snprintf(item, sizeof item, "%s %lld", what, (long long)(first + (int64_t)(got / unit)));
      else
        snprintf(item, sizeof item, "%s", what);
      what = item;
      int zerr = Z_OK;
      const char *zmsg = gzerror(x->f, &zerr);
      if (x->gz && (k < 0 || zerr != Z_OK))
        return mdl_errorf(err, MDL_ERR_INVALID, "%s: truncated or corrupt gzip data in %s: %s",
                          x->path, what, zmsg && zmsg[0] ? zmsg : "unexpected end of file");
      if (k < 0)
        return mdl_errorf(err, MDL_ERR_INVALID, "%s: read error in %s: %s", x->path, what,
                          zmsg ? zmsg : "?");
      return mdl_errorf(err, MDL_ERR_INVALID, "%s: file ends in %s (truncated)", x->path, what);
    }
    got += (size_t)k;
  }
  return MDL_OK;
}

static mdl_status idx_open(const char *base_dir, const char *name, const char *role, idx_file *x,
                           mdl_error *err) {
  memset(x, 0, sizeof *x);
  if (!name || !name[0])
    return mdl_errorf(err, MDL_ERR_INVALID, "idx source names no %s file", role);
  x->path = mdl_data_path(base_dir, name);
  FILE *raw = fopen(x->path, "rb");
  if (!raw) {
    mdl_status st = mdl_errorf(err, MDL_ERR_INVALID, "%s: cannot open %s file: %s", x->path, role,
                               strerror(errno));
    idx_close(x);
    return st;
  }
  unsigned char m2[2] = {0, 0};
  size_t n2 = fread(m2, 1, 2, raw);
  fclose(raw);
  x->gz = n2 == 2 && m2[0] == 0x1f && m2[1] == 0x8b;
  x->f = gzopen(x->path, "rb");
  if (!x->f) {
    mdl_status st =
        mdl_errorf(err, MDL_ERR_INVALID, "%s: cannot open: %s", x->path, strerror(errno));
    idx_close(x);
    return st;
  }
  gzbuffer(x->f, 1 << 17);
  unsigned char m[4];
  mdl_status st = idx_read(x, m, 4, "the header", 0, 0, err);
  if (!st && (m[0] != 0 || m[1] != 0))
    st = mdl_errorf(err, MDL_ERR_INVALID,
                    "%s: not an IDX file (magic %02x %02x %02x %02x; IDX starts 00 00 type dims)",
                    x->path, m[0], m[1], m[2], m[3]);
  if (!st) {
    x->type = m[2];
    switch (x->type) {
      case 0x08:
      case 0x09:
        x->esize = 1;
        break;
      case 0x0B:
        x->esize = 2;
        break;
      case 0x0C:
      case 0x0D:
        x->esize = 4;
        break;
      case 0x0E:
        x->esize = 8;
        break;
      default:
        st = mdl_errorf(err, MDL_ERR_INVALID, "%s: not an IDX file (unknown element type 0x%02x)",
                        x->path, x->type);
    }
  }
  if (!st && (m[3] < 1 || m[3] > 4))
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: IDX with %d dimensions (1 to 4 supported)", x->path,
                    m[3]);
  if (!st) {
    x->ndim = m[3];
    unsigned char d[16];
    st = idx_read(x, d, 4 * (size_t)x->ndim, "the header", 0, 0, err);
    x->rec_elems = 1;
    double values = 1; /* the record size as the header says, unbounded */
    for (int i = 0; !st && i < x->ndim; i++) {
      x->dim[i] = (int64_t)((uint32_t)d[4 * i] << 24 | (uint32_t)d[4 * i + 1] << 16 |
                            (uint32_t)d[4 * i + 2] << 8 | d[4 * i + 3]);
      if (i > 0) values *= (double)x->dim[i];
    }
    if (!st && (values <= 0 || values > (1 << 28)))
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: IDX records of %.0f values (1 to 2^28 supported)",
                      x->path, values);
    for (int i = 1; !st && i < x->ndim; i++) x->rec_elems *= x->dim[i];
    x->count = x->dim[0];
  }
  if (st) idx_close(x);
  return st;
}

/* Record shape from IDX dimensions: N | NxD | NxHxW | NxCxHxW. */
static void idx_shape(const idx_file *x, int *c, int *h, int *w) {
  *c = *h = 1;
  *w = 1;
  if (x->ndim == 2) *w = (int)x->dim[1];
  if (x->ndim == 3) {
    *h = (int)x->dim[1];
    *w = (int)x->dim[2];
  }
  if (x->ndim == 4) {
    *c = (int)x->dim[1];
    *h = (int)x->dim[2];
    *w = (int)x->dim[3];
  }
}

static double idx_value(const idx_file *x, const unsigned char *p) {
  switch (x->type) {
    case 0x08:
      return p[0];
    case 0x09:
      return (signed char)p[0];
    case 0x0B:
      return (int16_t)((uint16_t)p[0] << 8 | p[1]);
    case 0x0C:
      return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
    case 0x0D: {
      uint32_t u = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
      float f;
      memcpy(&f, &u, 4);
      return f;
    }
    default: {
      uint64_t u = 0;
      for (int i = 0; i < 8; i++) u = u << 8 | p[i];
      double d;
      memcpy(&d, &u, 8);
      return d;
    }
  }
}

/* After the last record: reading on makes zlib check the gzip trailer. */
static mdl_status idx_finish(idx_file *x, mdl_error *err) {
  if (!x->gz) return MDL_OK;
  char b[64];
  int k = gzread(x->f, b, sizeof b);
  int zerr = Z_OK;
  const char *zmsg = gzerror(x->f, &zerr);
  if (k < 0 || (zerr != Z_OK && zerr != Z_STREAM_END))
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "%s: truncated or corrupt gzip data after the last record: %s", x->path,
                      zmsg && zmsg[0] ? zmsg : "?");
  return MDL_OK;
}

/* Reads the whole label file into *labels (count entries). */
static mdl_status read_labels(const mdl_src_ctx *c, int64_t *count, int32_t **labels,
                              int32_t *max_label, mdl_error *err) {
  *labels = NULL;
  idx_file x;
  mdl_status st = idx_open(c->base_dir, c->src->idx->labels, "labels", &x, err);
  if (st) return st;
  if (x.ndim != 1 && !(x.ndim == 2 && x.dim[1] == 1)) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: labels must be a 1-D IDX file, it has %d dimensions",
                    x.path, x.ndim);
    idx_close(&x);
    return st;
  }
  /* In chunks, growing as labels arrive: the header's count is not trusted
   * with memory before the file shows it holds that many. */
  enum { CHUNK = 1 << 16 };
  unsigned char *raw = malloc((size_t)CHUNK * x.esize);
  int32_t *l = NULL;
  int32_t mx = -1;
  for (int64_t i0 = 0; !st && i0 < x.count; i0 += CHUNK) {
    int64_t k = x.count - i0 < CHUNK ? x.count - i0 : CHUNK;
    int32_t *nl = raw ? realloc(l, (size_t)(i0 + k) * sizeof *l) : NULL;
    if (!nl) {
      st = mdl_errorf(err, MDL_ERR_NOMEM, "%s: out of memory reading labels", x.path);
      break;
    }
    l = nl;
    st = idx_read(&x, raw, (size_t)k * x.esize, "label", i0, x.esize, err);
    for (int64_t j = 0; !st && j < k; j++) {
      double v = idx_value(&x, raw + (size_t)j * x.esize);
      if (v != (double)(int32_t)v) {
        st = mdl_errorf(err, MDL_ERR_INVALID, "%s: label %lld is %g, not an integer", x.path,
                        (long long)(i0 + j), v);
        break;
      }
      l[i0 + j] = (int32_t)v;
      if (l[i0 + j] > mx) mx = l[i0 + j];
    }
  }
  if (!st) st = idx_finish(&x, err);
  if (!st && !l) l = malloc(sizeof *l);
  if (!st && !l) st = mdl_errorf(err, MDL_ERR_NOMEM, "%s: out of memory reading labels", x.path);
  free(raw);
  *count = x.count;
  idx_close(&x);
  if (st) {
    free(l);
    return st;
  }
  *labels = l;
  *max_label = mx;
  return MDL_OK;
}

static mdl_status idx_probe(const mdl_src_ctx *c, mdl_data_info *info, mdl_error *err) {
  idx_file x;
  mdl_status st = idx_open(c->base_dir, c->src->idx->images, "images", &x, err);
  if (st) return st;
  idx_shape(&x, &info->channels, &info->height, &info->width);
  info->dtype = x.type == 0x08 ? MDL_DTYPE_U8 : MDL_DTYPE_F32;
  info->records = x.count;
  char *img_path = mdl_xstrdup(x.path);
  idx_close(&x);
  if (c->src->idx->labels && c->src->idx->labels[0]) {
    int64_t n;
    int32_t *labels, mx;
    st = read_labels(c, &n, &labels, &mx, err);
    if (!st) {
      free(labels);
      if (n != info->records) {
        char *lp = mdl_data_path(c->base_dir, c->src->idx->labels);
        st = mdl_errorf(err, MDL_ERR_INVALID, "%s has %lld images but %s has %lld labels", img_path,
                        (long long)info->records, lp, (long long)n);
        free(lp);
      }
      info->num_classes = mx + 1;
    }
  }
  free(img_path);
  return st;
}

static mdl_status idx_scan(const mdl_src_ctx *c, const mdl_data_info *info, mdl_sink *sink,
                           mdl_error *err) {
  int32_t *labels = NULL;
  if (c->src->idx->labels && c->src->idx->labels[0]) {
    int64_t n;
    int32_t mx;
    mdl_status st = read_labels(c, &n, &labels, &mx, err);
    if (st) return st;
    if (n != info->records) {
      free(labels);
      return mdl_errorf(err, MDL_ERR_INVALID, "image and label files changed while reading");
    }
  }
  idx_file x;
  mdl_status st = idx_open(c->base_dir, c->src->idx->images, "images", &x, err);
  if (st) {
    free(labels);
    return st;
  }
  const char *saved_name = sink->src_name;
  sink->src_name = x.path;
  int cc, hh, ww;
  idx_shape(&x, &cc, &hh, &ww);
  size_t rec_bytes = (size_t)x.rec_elems * x.esize;
  /* Read many records per gzread; decode only the kept ones. */
  int64_t per_chunk = (int64_t)((1u << 20) / rec_bytes);
  if (per_chunk < 1) per_chunk = 1;
  unsigned char *buf = malloc((size_t)per_chunk * rec_bytes);
  float *fbuf = x.type == 0x08 ? NULL : malloc((size_t)x.rec_elems * sizeof(float));
  if (!buf || (x.type != 0x08 && !fbuf)) {
    st = mdl_errorf(err, MDL_ERR_NOMEM, "out of memory reading %s", x.path);
    goto done;
  }
  for (int64_t r0 = 0; r0 < x.count && !st; r0 += per_chunk) {
    int64_t k = x.count - r0 < per_chunk ? x.count - r0 : per_chunk;
    st = idx_read(&x, buf, (size_t)k * rec_bytes, "record", r0, rec_bytes, err);
    for (int64_t j = 0; !st && j < k; j++) {
      int64_t r = r0 + j;
      if (!mdl_sink_want(sink, r)) continue;
      const unsigned char *p = buf + (size_t)j * rec_bytes;
      mdl_rec rec = {.index = r, .label = labels ? labels[r] : 0, .c = cc, .h = hh, .w = ww};
      if (x.type == 0x08) {
        rec.dtype = MDL_DTYPE_U8;
        rec.px = p;
      } else {
        for (int64_t e = 0; e < x.rec_elems; e++) fbuf[e] = (float)idx_value(&x, p + e * x.esize);
        rec.dtype = MDL_DTYPE_F32;
        rec.px = fbuf;
      }
      st = mdl_sink_put(sink, &rec, err);
    }
  }
  if (!st) st = idx_finish(&x, err);
done:
  free(buf);
  free(fbuf);
  sink->src_name = saved_name;
  idx_close(&x);
  free(labels);
  return st;
}

const mdl_source_iface mdl_source_idx = {"idx", idx_probe, idx_scan};
