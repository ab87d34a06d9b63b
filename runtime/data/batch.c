/* Batch assembly for the trainer: gathers records in a per-epoch order,
 * converts uint8 or float storage to float through the transform's affine
 * map, and crops and mirrors, in one pass over each output element. Batch k
 * is a pure function of (records, transform, options, k): any batch can be
 * recomputed, and a resumed run sees the same batches. Owns no threads. */
#include <stdlib.h>
#include <string.h>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "common/rng.h"
#include "runtime/data/dataset_impl.h"

struct mdl_batcher {
  mdl_batch_opts o;
  const mdl_transform *xf;
  mdl_transform *own_xf; /* identity when the caller gave none */
  mdl_dtype dtype;
  int c, h, w; /* stored */
  int oh, ow;  /* output (cropped) */
  size_t rec_bytes;
  int64_t n;
  const uint8_t **rec; /* each record's first byte */
  float *label;
  mdl_partition **parts; /* the caller's, to name a record in errors */
  int n_parts;
  uint32_t *order;
  uint64_t order_epoch; /* epoch `order` holds; UINT64_MAX: none yet */
  uint64_t next;        /* index of the next batch */
};

/* ---- conversion kernels: dst[i] = src[i] * a + b over one row ---- */

static void cvt_u8(const uint8_t *s, float *d, size_t n, float a, float b) {
  size_t i = 0;
#ifdef __AVX2__
  __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  for (; i + 16 <= n; i += 16) {
    __m128i x = _mm_loadu_si128((const __m128i *)(s + i));
    __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(x));
    __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(x, 8)));
    _mm256_storeu_ps(d + i, _mm256_fmadd_ps(f0, va, vb));
    _mm256_storeu_ps(d + i + 8, _mm256_fmadd_ps(f1, va, vb));
  }
  for (; i + 8 <= n; i += 8) {
    __m128i x = _mm_loadl_epi64((const __m128i *)(s + i));
    _mm256_storeu_ps(d + i, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(x)), va, vb));
  }
#endif
  for (; i < n; i++) d[i] = __builtin_fmaf((float)s[i], a, b);
}

static void cvt_f32(const float *s, float *d, size_t n, float a, float b) {
  size_t i = 0;
#ifdef __AVX2__
  __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(d + i, _mm256_fmadd_ps(_mm256_loadu_ps(s + i), va, vb));
#endif
  for (; i < n; i++) d[i] = __builtin_fmaf(s[i], a, b);
}

/* Per-element tables (mean_file). */
static void cvt_u8_tab(const uint8_t *s, float *d, size_t n, const float *a, const float *b) {
  size_t i = 0;
#ifdef __AVX2__
  for (; i + 8 <= n; i += 8) {
    __m128i x = _mm_loadl_epi64((const __m128i *)(s + i));
    __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(x));
    _mm256_storeu_ps(d + i, _mm256_fmadd_ps(f, _mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  }
#endif
  for (; i < n; i++) d[i] = __builtin_fmaf((float)s[i], a[i], b[i]);
}

static void cvt_f32_tab(const float *s, float *d, size_t n, const float *a, const float *b) {
  size_t i = 0;
#ifdef __AVX2__
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(d + i, _mm256_fmadd_ps(_mm256_loadu_ps(s + i), _mm256_loadu_ps(a + i),
                                            _mm256_loadu_ps(b + i)));
#endif
  for (; i < n; i++) d[i] = __builtin_fmaf(s[i], a[i], b[i]);
}

/* Mirrored rows: dst[x] = f(src[n-1-x]). Rare enough to stay scalar. */
static void cvt_mirror(const void *src, bool u8, float *d, size_t n, const float *a, const float *b,
                       bool tab) {
  for (size_t x = 0; x < n; x++) {
    size_t j = n - 1 - x;
    float v = u8 ? (float)((const uint8_t *)src)[j] : ((const float *)src)[j];
    d[x] = __builtin_fmaf(v, tab ? a[j] : a[0], tab ? b[j] : b[0]);
  }
}

/* One record into dst (C x oh x ow), window at (y0, x0). */
static void convert_record(const mdl_batcher *b, const uint8_t *rec, float *dst, int y0, int x0,
                           bool mirror) {
  const mdl_transform *t = b->xf;
  bool u8 = b->dtype == MDL_DTYPE_U8;
  size_t esz = u8 ? 1 : sizeof(float);
  size_t plane = (size_t)b->h * b->w;
  bool whole = !mirror && b->oh == b->h && b->ow == b->w;
  for (int k = 0; k < b->c; k++) {
    const uint8_t *src = rec + (size_t)k * plane * esz;
    float *out = dst + (size_t)k * b->oh * b->ow;
    const float *ta = t->per_element ? t->mul + (size_t)k * plane : t->mul + k;
    const float *tb = t->per_element ? t->add + (size_t)k * plane : t->add + k;
    if (whole) {
      if (t->per_element) {
        if (u8)
          cvt_u8_tab(src, out, plane, ta, tb);
        else
          cvt_f32_tab((const float *)src, out, plane, ta, tb);
      } else {
        if (u8)
          cvt_u8(src, out, plane, *ta, *tb);
        else
          cvt_f32((const float *)src, out, plane, *ta, *tb);
      }
      continue;
    }
    for (int y = 0; y < b->oh; y++) {
      size_t off = (size_t)(y + y0) * b->w + x0;
      const uint8_t *row = src + off * esz;
      float *o = out + (size_t)y * b->ow;
      const float *ra = t->per_element ? ta + off : ta, *rb = t->per_element ? tb + off : tb;
      if (mirror)
        cvt_mirror(row, u8, o, b->ow, ra, rb, t->per_element);
      else if (t->per_element)
        u8 ? cvt_u8_tab(row, o, b->ow, ra, rb) : cvt_f32_tab((const float *)row, o, b->ow, ra, rb);
      else
        u8 ? cvt_u8(row, o, b->ow, *ra, *rb) : cvt_f32((const float *)row, o, b->ow, *ra, *rb);
    }
  }
}

/* ---- the batcher ---- */

mdl_status mdl_batcher_new(mdl_partition *const *parts, int n_parts, const mdl_transform *xf,
                           const mdl_batch_opts *opts, mdl_batcher **out, mdl_error *err) {
  *out = NULL;
  if (!opts || opts->batch_size <= 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "batch size must be positive");
  if (n_parts <= 0) return mdl_errorf(err, MDL_ERR_INVALID, "a batcher needs partitions");
  const mdl_partition *p0 = parts[0];
  int64_t n = 0;
  for (int i = 0; i < n_parts; i++) {
    const mdl_partition *p = parts[i];
    if (p->dtype != p0->dtype || p->channels != p0->channels || p->height != p0->height ||
        p->width != p0->width)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "partition %u holds %dx%dx%d records, partition %u %dx%dx%d", p0->index,
                        p0->channels, p0->height, p0->width, p->index, p->channels, p->height,
                        p->width);
    n += p->n;
  }
  if (n == 0) return mdl_errorf(err, MDL_ERR_INVALID, "the partitions hold no records to batch");
  if (n > UINT32_MAX)
    return mdl_errorf(err, MDL_ERR_INVALID, "%lld records is too many for one batcher",
                      (long long)n);
  if (xf && (xf->c != p0->channels || xf->h != p0->height || xf->w != p0->width))
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "the transform is for %dx%dx%d records, the data is %dx%dx%d", xf->c, xf->h,
                      xf->w, p0->channels, p0->height, p0->width);
  mdl_batcher *b = mdl_xcalloc(1, sizeof *b);
  b->o = *opts;
  b->dtype = p0->dtype;
  b->c = p0->channels;
  b->h = p0->height;
  b->w = p0->width;
  if (!xf) {
    Memdl__DataSet empty = MEMDL__DATA_SET__INIT;
    mdl_status st = mdl_transform_new(&empty, NULL, b->c, b->h, b->w, &b->own_xf, err);
    if (st) {
      free(b);
      return st;
    }
    xf = b->own_xf;
  }
  b->xf = xf;
  b->oh = xf->crop ? xf->crop : b->h;
  b->ow = xf->crop ? xf->crop : b->w;
  b->rec_bytes = (size_t)b->c * b->h * b->w * (b->dtype == MDL_DTYPE_U8 ? 1 : sizeof(float));
  b->n = n;
  b->rec = malloc((size_t)n * sizeof *b->rec);
  b->label = malloc((size_t)n * sizeof *b->label);
  b->order = malloc((size_t)n * sizeof *b->order);
  if (!b->rec || !b->label || !b->order) {
    mdl_batcher_free(b);
    return mdl_errorf(err, MDL_ERR_NOMEM, "out of memory indexing %lld records", (long long)n);
  }
  int64_t j = 0;
  for (int i = 0; i < n_parts; i++)
    for (int64_t r = 0; r < parts[i]->n; r++, j++) {
      b->rec[j] = (const uint8_t *)parts[i]->data + (size_t)r * b->rec_bytes;
      b->label[j] = (float)parts[i]->label[r];
    }
  b->parts = mdl_xmalloc((size_t)n_parts * sizeof *b->parts);
  memcpy(b->parts, parts, (size_t)n_parts * sizeof *b->parts);
  b->n_parts = n_parts;
  b->order_epoch = UINT64_MAX;
  *out = b;
  return MDL_OK;
}

static void make_order(mdl_batcher *b, uint64_t epoch) {
  for (int64_t i = 0; i < b->n; i++) b->order[i] = (uint32_t)i;
  if (b->o.shuffle) {
    mdl_prng g;
    mdl_prng_seed(&g, mdl_hash2(b->o.seed, 0x6f72646572ull ^ epoch)); /* "order" */
    mdl_prng_shuffle_u32(&g, b->order, (size_t)b->n);
  }
  b->order_epoch = epoch;
}

mdl_status mdl_batcher_next(mdl_batcher *b, float *data, float *labels, mdl_error *err) {
  (void)err;
  uint64_t k = b->next++;
  size_t out_elems = (size_t)b->c * b->oh * b->ow;
  const mdl_transform *t = b->xf;
  bool rand_crop = t->crop && b->o.train;
  mdl_prng g;
  mdl_prng_seed(&g, mdl_hash2(b->o.seed, 0x6175676dull ^ (k * 0x9e3779b97f4a7c15ull))); /* "augm" */
  uint64_t g0 = k * (uint64_t)b->o.batch_size;
  for (int i = 0; i < b->o.batch_size; i++) {
    uint64_t pos = g0 + (uint64_t)i;
    uint64_t epoch = pos / (uint64_t)b->n;
    if (epoch != b->order_epoch) make_order(b, epoch);
    uint32_t r = b->order[pos % (uint64_t)b->n];
    /* Caffe draws mirror in both phases, crop offsets only in TRAIN. */
    bool mirror = t->mirror && (mdl_prng_next(&g) & 1);
    int y0 = (b->h - b->oh) / 2, x0 = (b->w - b->ow) / 2;
    if (rand_crop) {
      y0 = (int)mdl_prng_below(&g, (uint32_t)(b->h - b->oh + 1));
      x0 = (int)mdl_prng_below(&g, (uint32_t)(b->w - b->ow + 1));
    }
    convert_record(b, b->rec[r], data + (size_t)i * out_elems, y0, x0, mirror);
    if (labels) labels[i] = b->label[r];
  }
  return MDL_OK;
}

int64_t mdl_batcher_record(mdl_batcher *b, uint64_t k, int i) {
  if (i < 0 || i >= b->o.batch_size) return -1;
  uint64_t pos = k * (uint64_t)b->o.batch_size + (uint64_t)i;
  uint64_t epoch = pos / (uint64_t)b->n;
  if (epoch != b->order_epoch) make_order(b, epoch);
  int64_t r = b->order[pos % (uint64_t)b->n];
  for (int p = 0; p < b->n_parts; p++) {
    if (r < b->parts[p]->n) return b->parts[p]->record ? b->parts[p]->record[r] : r;
    r -= b->parts[p]->n;
  }
  return -1;
}

void mdl_batcher_seek(mdl_batcher *b, uint64_t k) {
  b->next = k;
}

uint64_t mdl_batcher_epoch(const mdl_batcher *b) {
  return b->next * (uint64_t)b->o.batch_size / (uint64_t)b->n;
}

int64_t mdl_batcher_records(const mdl_batcher *b) {
  return b->n;
}

void mdl_batcher_free(mdl_batcher *b) {
  if (!b) return;
  mdl_transform_free(b->own_xf);
  free(b->rec);
  free(b->label);
  free(b->order);
  free(b->parts);
  free(b);
}
