/* The per-record half of the pipeline: compiling stage lists, selecting a
 * partition's records (partition, split, sample), and the fused pass that
 * resizes, cleans and appends each record as the source decodes it. The
 * batch-time half (affine, crop, mirror) is in transform.c and
 * batch.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "runtime/data/dataset_impl.h"

/* Salts keep split and sample draws apart when their seeds are equal. */
#define SALT_SPLIT 0x53504c4954ull  /* "SPLIT" */
#define SALT_SAMPLE 0x53414d504cull /* "SAMPL" */

const char *mdl_drop_reason_name(mdl_drop_reason r) {
  switch (r) {
    case MDL_DROP_SHAPE:
      return "shape";
    case MDL_DROP_LABEL:
      return "label";
    case MDL_DROP_NONFINITE:
      return "nonfinite";
    default:
      return "?";
  }
}

static mdl_status add_filter(mdl_stage_plan *plan, int i, const char *kind, float fraction,
                             uint64_t seed, bool rest, uint64_t salt, mdl_error *err) {
  if (!(fraction >= 0.0f && fraction <= 1.0f))
    return mdl_errorf(err, MDL_ERR_INVALID, "stage %d (%s): fraction %g is not in [0, 1]", i + 1,
                      kind, fraction);
  if (plan->n_filters == MDL_MAX_FILTERS)
    return mdl_errorf(err, MDL_ERR_INVALID, "stage %d (%s): more than %d split/sample stages",
                      i + 1, kind, MDL_MAX_FILTERS);
  plan->filter[plan->n_filters++] =
      (mdl_filter){.seed = seed, .fraction = fraction, .rest = rest, .salt = salt};
  plan->keep_fraction *= rest ? 1.0 - fraction : fraction;
  plan->n_record_stages++;
  return MDL_OK;
}

mdl_status mdl_stages_compile(const Memdl__DataSet *ds, mdl_stage_plan *plan, mdl_error *err) {
  memset(plan, 0, sizeof *plan);
  plan->keep_fraction = 1.0;
  plan->require_shape = true;
  plan->drop_nonfinite = true;
  bool batch_stage_seen = false;
  for (size_t i = 0; i < ds->n_stage; i++) {
    const Memdl__Stage *st = ds->stage[i];
    int n = (int)i;
    mdl_status s;
    switch (st->kind_case) {
      case MEMDL__STAGE__KIND_CLEAN:
        plan->clean = true;
        plan->num_classes = st->clean->num_classes;
        plan->require_shape = st->clean->require_shape;
        plan->drop_nonfinite = st->clean->drop_nonfinite;
        plan->n_record_stages++;
        break;
      case MEMDL__STAGE__KIND_TRANSFORM: {
        const Caffe__TransformationParameter *t = st->transform;
        if (t->crop_size) {
          if (plan->crop && plan->crop != (int)t->crop_size)
            return mdl_errorf(err, MDL_ERR_INVALID,
                              "stage %d (transform): a second crop_size (%u after %d)", n + 1,
                              t->crop_size, plan->crop);
          if (t->crop_size > 1u << 16)
            return mdl_errorf(err, MDL_ERR_INVALID, "stage %d (transform): crop_size %u is too big",
                              n + 1, t->crop_size);
          plan->crop = (int)t->crop_size;
        }
        plan->mirror |= t->mirror;
        if (t->mean_file && t->n_mean_value)
          return mdl_errorf(err, MDL_ERR_INVALID,
                            "stage %d (transform): mean_file and mean_value both set (Caffe "
                            "refuses that too)",
                            n + 1);
        if (t->force_color && t->force_gray)
          return mdl_errorf(err, MDL_ERR_INVALID,
                            "stage %d (transform): force_color and force_gray both set", n + 1);
        if (t->force_color) plan->force_channels = 3;
        if (t->force_gray) plan->force_channels = 1;
        if (t->scale != 1.0f || t->mean_file || t->n_mean_value) plan->affine = true;
        batch_stage_seen = true;
        break;
      }
      case MEMDL__STAGE__KIND_SPLIT:
        s = add_filter(plan, n, "split", st->split->fraction, st->split->seed, st->split->rest,
                       SALT_SPLIT, err);
        if (s) return s;
        break;
      case MEMDL__STAGE__KIND_SAMPLE:
        s = add_filter(plan, n, "sample", st->sample->fraction, st->sample->seed, false,
                       SALT_SAMPLE, err);
        if (s) return s;
        break;
      case MEMDL__STAGE__KIND_RESIZE:
        if (!st->resize->height || !st->resize->width || st->resize->height > 1u << 15 ||
            st->resize->width > 1u << 15)
          return mdl_errorf(err, MDL_ERR_INVALID,
                            "stage %d (resize): height and width must be in [1, 32768]", n + 1);
        if (batch_stage_seen)
          return mdl_errorf(err, MDL_ERR_INVALID,
                            "stage %d (resize): resize must come before transform and normalize "
                            "stages (they run per batch, on the stored records)",
                            n + 1);
        if (plan->resize_h)
          return mdl_errorf(err, MDL_ERR_INVALID, "stage %d (resize): only one resize stage",
                            n + 1);
        plan->resize_h = (int)st->resize->height;
        plan->resize_w = (int)st->resize->width;
        plan->n_record_stages++;
        break;
      case MEMDL__STAGE__KIND_NORMALIZE: {
        const Memdl__NormalizeStage *z = st->normalize;
        for (size_t k = 0; k < z->n_std; k++)
          if (!(z->std[k] != 0.0f) || !isfinite(z->std[k]))
            return mdl_errorf(err, MDL_ERR_INVALID, "stage %d (normalize): std[%zu] is %g", n + 1,
                              k, z->std[k]);
        plan->affine = true;
        batch_stage_seen = true;
        break;
      }
      default:
        return mdl_errorf(err, MDL_ERR_INVALID,
                          "stage %d names no kind (clean, transform, split, "
                          "sample, resize, normalize)",
                          n + 1);
    }
  }
  return MDL_OK;
}

/* ---- selection ---- */

void mdl_select_init(mdl_select *s, const mdl_stage_plan *plan, uint32_t index, uint32_t count,
                     int scheme, int64_t total) {
  memset(s, 0, sizeof *s);
  s->index = index;
  s->count = count ? count : 1;
  s->scheme = scheme;
  s->total = total;
  s->plan = plan;
  s->lo = (int64_t)((__int128)total * index / s->count);
  s->hi = (int64_t)((__int128)total * (index + 1) / s->count);
}

mdl_sel mdl_select_test(const mdl_select *s, int64_t r) {
  if (s->scheme == MEMDL__DATA_SET__PARTITION_SCHEME__RANGE) {
    if (r < s->lo || r >= s->hi) return MDL_SEL_OTHER;
  } else if ((uint64_t)r % s->count != s->index) {
    return MDL_SEL_OTHER;
  }
  for (int i = 0; i < s->plan->n_filters; i++) {
    const mdl_filter *f = &s->plan->filter[i];
    bool in = mdl_hash_unit(mdl_hash2(f->seed ^ f->salt, (uint64_t)r)) < f->fraction;
    if (in == f->rest) return MDL_SEL_FILTERED;
  }
  return MDL_SEL_KEEP;
}

int64_t mdl_select_count(const mdl_select *s) {
  if (s->scheme == MEMDL__DATA_SET__PARTITION_SCHEME__RANGE) return s->hi - s->lo;
  if (s->total <= (int64_t)s->index) return 0;
  return (s->total - s->index + s->count - 1) / s->count;
}

bool mdl_select_done(const mdl_select *s, int64_t r) {
  if (s->scheme == MEMDL__DATA_SET__PARTITION_SCHEME__RANGE) return r >= s->hi;
  return s->total > 0 && r >= s->total;
}

/* ---- the fused pass ---- */

bool mdl_sink_want(mdl_sink *s, int64_t r) {
  mdl_sel k = mdl_select_test(&s->sel, r);
  if (k == MDL_SEL_OTHER) return false;
  s->p->scanned++;
  if (k == MDL_SEL_FILTERED) {
    s->p->filtered++;
    return false;
  }
  return true;
}

static mdl_status rec_error(const mdl_sink *s, const mdl_rec *rec, mdl_error *err,
                            const char *what) {
  if (rec->name)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: record %lld (%s): %s", s->src_name,
                      (long long)rec->index, rec->name, what);
  return mdl_errorf(err, MDL_ERR_INVALID, "%s: record %lld: %s", s->src_name, (long long)rec->index,
                    what);
}

static int ensure_tmp(mdl_sink *s, size_t need) {
  if (s->tmp_cap >= need) return 0;
  void *q = realloc(s->tmp, need);
  if (!q) return -1;
  s->tmp = q;
  s->tmp_cap = need;
  return 0;
}

static mdl_status grow_storage(mdl_sink *s, mdl_error *err) {
  mdl_partition *p = s->p;
  int64_t cap = s->cap ? s->cap * 2 : 64;
  size_t esz = p->dtype == MDL_DTYPE_U8 ? 1 : sizeof(float);
  void *d = realloc(p->data, (size_t)cap * s->elems * esz);
  if (d) p->data = d;
  int32_t *l = d ? realloc(p->label, (size_t)cap * sizeof *l) : NULL;
  if (l) p->label = l;
  int64_t *r = l ? realloc(p->record, (size_t)cap * sizeof *r) : NULL;
  if (r) p->record = r;
  if (!d || !l || !r)
    return mdl_errorf(err, MDL_ERR_NOMEM, "%s: out of memory growing partition %u to %lld records",
                      s->src_name, p->index, (long long)cap);
  s->cap = cap;
  return MDL_OK;
}

mdl_status mdl_sink_put(mdl_sink *s, const mdl_rec *rec, mdl_error *err) {
  const mdl_stage_plan *pl = s->plan;
  mdl_partition *p = s->p;
  const void *px = rec->px;
  int c = rec->c, h = rec->h, w = rec->w;
  char msg[160];
  if (rec->dtype == MDL_DTYPE_F32 && p->dtype == MDL_DTYPE_U8)
    return rec_error(s, rec, err,
                     "float values in a uint8 data set (the source's first record was uint8)");
  if (pl->resize_h && (h != pl->resize_h || w != pl->resize_w) && h > 0 && w > 0) {
    size_t esz = rec->dtype == MDL_DTYPE_U8 ? 1 : sizeof(float);
    if (ensure_tmp(s, (size_t)c * pl->resize_h * pl->resize_w * esz))
      return mdl_errorf(err, MDL_ERR_NOMEM, "%s: out of memory resizing", s->src_name);
    if (rec->dtype == MDL_DTYPE_U8)
      mdl_resize_u8(px, c, h, w, s->tmp, pl->resize_h, pl->resize_w);
    else
      mdl_resize_f32(px, c, h, w, s->tmp, pl->resize_h, pl->resize_w);
    px = s->tmp;
    h = pl->resize_h;
    w = pl->resize_w;
  }
  if (c != p->channels || h != p->height || w != p->width) {
    if (pl->clean && pl->require_shape) {
      p->dropped[MDL_DROP_SHAPE]++;
      return MDL_OK;
    }
    snprintf(msg, sizeof msg, "record is %dx%dx%d, the data set's records are %dx%dx%d", c, h, w,
             p->channels, p->height, p->width);
    return rec_error(s, rec, err, msg);
  }
  if (pl->clean &&
      (rec->label < 0 || (pl->num_classes && (uint32_t)rec->label >= pl->num_classes))) {
    p->dropped[MDL_DROP_LABEL]++;
    return MDL_OK;
  }
  size_t n = s->elems;
  if (rec->dtype == MDL_DTYPE_F32 && pl->clean && pl->drop_nonfinite) {
    const float *f = px;
    for (size_t i = 0; i < n; i++)
      if (!isfinite(f[i])) {
        p->dropped[MDL_DROP_NONFINITE]++;
        return MDL_OK;
      }
  }
  if (p->n == s->cap) {
    mdl_status st = grow_storage(s, err);
    if (st) return st;
  }
  float lo, hi;
  if (p->dtype == MDL_DTYPE_U8) {
    const uint8_t *u = px;
    uint8_t *dst = (uint8_t *)p->data + (size_t)p->n * n;
    uint8_t mn = 255, mx = 0;
    for (size_t i = 0; i < n; i++) {
      uint8_t v = u[i];
      dst[i] = v;
      mn = v < mn ? v : mn;
      mx = v > mx ? v : mx;
    }
    lo = mn;
    hi = mx;
  } else {
    float *dst = (float *)p->data + (size_t)p->n * n;
    lo = INFINITY;
    hi = -INFINITY;
    if (rec->dtype == MDL_DTYPE_U8) {
      const uint8_t *u = px;
      for (size_t i = 0; i < n; i++) dst[i] = u[i];
    } else {
      memcpy(dst, px, n * sizeof(float));
    }
    for (size_t i = 0; i < n; i++) {
      lo = fminf(lo, dst[i]);
      hi = fmaxf(hi, dst[i]);
    }
  }
  if (p->n == 0) {
    p->vmin = lo;
    p->vmax = hi;
  } else {
    p->vmin = fminf(p->vmin, lo);
    p->vmax = fmaxf(p->vmax, hi);
  }
  p->label[p->n] = rec->label;
  p->record[p->n] = rec->index;
  if (rec->label > s->max_label) s->max_label = rec->label;
  p->n++;
  return MDL_OK;
}

/* ---- resize ---- */

typedef struct lerp {
  int i0, i1;
  float f;
} lerp;

/* OpenCV INTER_LINEAR geometry: centres at +0.5, clamped at the borders. */
static void lerp_table(int in, int out, lerp *t) {
  float scale = (float)in / (float)out;
  for (int o = 0; o < out; o++) {
    float x = ((float)o + 0.5f) * scale - 0.5f;
    int i = (int)floorf(x);
    float f = x - (float)i;
    if (i < 0) {
      i = 0;
      f = 0;
    }
    if (i >= in - 1) {
      i = in - 1;
      f = 0;
    }
    t[o] = (lerp){i, i + 1 < in ? i + 1 : i, f};
  }
}

static inline float load_px(const void *p, bool u8, size_t i) {
  return u8 ? (float)((const uint8_t *)p)[i] : ((const float *)p)[i];
}

static void resize(const void *src, bool u8, int c, int h, int w, void *dst, int oh, int ow) {
  lerp *ty = mdl_xmalloc(sizeof(lerp) * (size_t)(oh + ow));
  lerp *tx = ty + oh;
  lerp_table(h, oh, ty);
  lerp_table(w, ow, tx);
  for (int k = 0; k < c; k++) {
    size_t in_plane = (size_t)k * h * w, out_plane = (size_t)k * oh * ow;
    for (int y = 0; y < oh; y++) {
      size_t r0 = in_plane + (size_t)ty[y].i0 * w, r1 = in_plane + (size_t)ty[y].i1 * w;
      float fy = ty[y].f;
      for (int x = 0; x < ow; x++) {
        float fx = tx[x].f;
        float a0 = load_px(src, u8, r0 + tx[x].i0), a1 = load_px(src, u8, r0 + tx[x].i1);
        float b0 = load_px(src, u8, r1 + tx[x].i0), b1 = load_px(src, u8, r1 + tx[x].i1);
        float a = a0 + (a1 - a0) * fx, b = b0 + (b1 - b0) * fx;
        float v = a + (b - a) * fy;
        size_t o = out_plane + (size_t)y * ow + x;
        if (u8)
          ((uint8_t *)dst)[o] = (uint8_t)lrintf(v < 0 ? 0 : v > 255 ? 255 : v);
        else
          ((float *)dst)[o] = v;
      }
    }
  }
  free(ty);
}

void mdl_resize_u8(const uint8_t *src, int c, int h, int w, uint8_t *dst, int oh, int ow) {
  resize(src, true, c, h, w, dst, oh, ow);
}

void mdl_resize_f32(const float *src, int c, int h, int w, float *dst, int oh, int ow) {
  resize(src, false, c, h, w, dst, oh, ow);
}
