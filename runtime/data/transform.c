/* Compiles transform (scale, mean_value, mean_file, crop, mirror) and
 * normalize stages into one batch-time affine map plus crop and mirror.
 * Stored records stay compact; the map is applied while batches are
 * converted to float (batch.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "caffe.pb-c.h"
#include "runtime/data/dataset_impl.h"

/* Switches t from per-channel to per-element tables. */
static void expand(mdl_transform *t) {
  size_t hw = (size_t)t->h * t->w, n = (size_t)t->c * hw;
  float *mul = mdl_xmalloc(n * sizeof *mul), *add = mdl_xmalloc(n * sizeof *add);
  for (int k = 0; k < t->c; k++)
    for (size_t i = 0; i < hw; i++) {
      mul[k * hw + i] = t->mul[k];
      add[k * hw + i] = t->add[k];
    }
  free(t->mul);
  free(t->add);
  t->mul = mul;
  t->add = add;
  t->per_element = true;
}

/* Reads a binaryproto mean (caffe.BlobProto) that must be c x h x w. */
static mdl_status load_mean(const char *path, const mdl_transform *t, float **out, mdl_error *err) {
  char *buf;
  size_t len;
  mdl_status st = mdl_file_read(path, &buf, &len, err);
  if (st) return st;
  Caffe__BlobProto *b = caffe__blob_proto__unpack(NULL, len, (const uint8_t *)buf);
  free(buf);
  if (!b)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: not a binaryproto mean (caffe.BlobProto)", path);
  int64_t d[4] = {1, 1, 1, 1};
  if (b->shape && b->shape->n_dim) {
    size_t nd = b->shape->n_dim;
    for (size_t i = 0; i < nd && i < 4; i++) d[4 - (nd < 4 ? nd : 4) + i] = b->shape->dim[i];
    if (nd > 4) d[0] = -1;
  } else {
    d[0] = b->has_num ? b->num : 1;
    d[1] = b->channels;
    d[2] = b->height;
    d[3] = b->width;
  }
  size_t n = (size_t)t->c * t->h * t->w;
  if (d[0] != 1 || d[1] != t->c || d[2] != t->h || d[3] != t->w || b->n_data != n) {
    st = mdl_errorf(err, MDL_ERR_INVALID,
                    "%s: mean is %lldx%lldx%lldx%lld with %zu values, records are 1x%dx%dx%d", path,
                    (long long)d[0], (long long)d[1], (long long)d[2], (long long)d[3], b->n_data,
                    t->c, t->h, t->w);
    caffe__blob_proto__free_unpacked(b, NULL);
    return st;
  }
  *out = mdl_xmalloc(n * sizeof(float));
  memcpy(*out, b->data, n * sizeof(float));
  caffe__blob_proto__free_unpacked(b, NULL);
  return MDL_OK;
}

/* Applies y' = (y - mean) * scale to the map. */
static void apply_shift_scale(mdl_transform *t, int k, size_t i, float mean, float scale) {
  size_t j = t->per_element ? (size_t)k * t->h * t->w + i : (size_t)k;
  t->mul[j] *= scale;
  t->add[j] = (t->add[j] - mean) * scale;
}

mdl_status mdl_transform_new(const Memdl__DataSet *ds, const char *base_dir, int channels,
                             int height, int width, mdl_transform **out, mdl_error *err) {
  *out = NULL;
  mdl_stage_plan plan;
  mdl_status st = mdl_stages_compile(ds, &plan, err);
  if (st) return st;
  if (channels <= 0 || height <= 0 || width <= 0)
    return mdl_errorf(err, MDL_ERR_INVALID, "transform for records of %dx%dx%d", channels, height,
                      width);
  if (plan.crop && (plan.crop > height || plan.crop > width))
    return mdl_errorf(err, MDL_ERR_INVALID, "crop_size %d is larger than the records (%dx%d)",
                      plan.crop, height, width);
  mdl_transform *t = mdl_xcalloc(1, sizeof *t);
  t->c = channels;
  t->h = height;
  t->w = width;
  t->crop = plan.crop;
  t->mirror = plan.mirror;
  t->mul = mdl_xmalloc((size_t)channels * sizeof(float));
  t->add = mdl_xmalloc((size_t)channels * sizeof(float));
  for (int k = 0; k < channels; k++) {
    t->mul[k] = 1.0f;
    t->add[k] = 0.0f;
  }
  size_t hw = (size_t)height * width;
  for (size_t i = 0; i < ds->n_stage; i++) {
    const Memdl__Stage *s = ds->stage[i];
    if (s->kind_case == MEMDL__STAGE__KIND_TRANSFORM) {
      const Caffe__TransformationParameter *p = s->transform;
      float scale = p->scale;
      if (p->mean_file && p->mean_file[0]) {
        char *path = mdl_path_join(base_dir, p->mean_file ? p->mean_file : "");
        float *mean = NULL;
        st = load_mean(path, t, &mean, err);
        free(path);
        if (st) {
          mdl_error_prefix(err, "stage %zu (transform): ", i + 1);
          mdl_transform_free(t);
          return st;
        }
        if (!t->per_element) expand(t);
        for (int k = 0; k < channels; k++)
          for (size_t e = 0; e < hw; e++) apply_shift_scale(t, k, e, mean[k * hw + e], scale);
        free(mean);
      } else if (p->n_mean_value) {
        if (p->n_mean_value != 1 && p->n_mean_value != (size_t)channels) {
          mdl_transform_free(t);
          return mdl_errorf(err, MDL_ERR_INVALID,
                            "stage %zu (transform): %zu mean_value entries for %d channels "
                            "(give one, or one per channel)",
                            i + 1, p->n_mean_value, channels);
        }
        for (int k = 0; k < channels; k++) {
          float m = p->mean_value[p->n_mean_value == 1 ? 0 : k];
          if (t->per_element)
            for (size_t e = 0; e < hw; e++) apply_shift_scale(t, k, e, m, scale);
          else
            apply_shift_scale(t, k, 0, m, scale);
        }
      } else if (scale != 1.0f) {
        for (int k = 0; k < channels; k++) {
          if (t->per_element)
            for (size_t e = 0; e < hw; e++) apply_shift_scale(t, k, e, 0.0f, scale);
          else
            apply_shift_scale(t, k, 0, 0.0f, scale);
        }
      }
    } else if (s->kind_case == MEMDL__STAGE__KIND_NORMALIZE) {
      const Memdl__NormalizeStage *z = s->normalize;
      if ((z->n_mean > 1 && z->n_mean != (size_t)channels) ||
          (z->n_std > 1 && z->n_std != (size_t)channels)) {
        mdl_transform_free(t);
        return mdl_errorf(err, MDL_ERR_INVALID,
                          "stage %zu (normalize): %zu means and %zu stds for %d channels", i + 1,
                          z->n_mean, z->n_std, channels);
      }
      for (int k = 0; k < channels; k++) {
        float m = z->n_mean ? z->mean[z->n_mean == 1 ? 0 : k] : 0.0f;
        float sd = z->n_std ? z->std[z->n_std == 1 ? 0 : k] : 1.0f;
        if (t->per_element)
          for (size_t e = 0; e < hw; e++) apply_shift_scale(t, k, e, m, 1.0f / sd);
        else
          apply_shift_scale(t, k, 0, m, 1.0f / sd);
      }
    }
  }
  *out = t;
  return MDL_OK;
}

void mdl_transform_free(mdl_transform *t) {
  if (!t) return;
  free(t->mul);
  free(t->add);
  free(t);
}

void mdl_transform_out_shape(const mdl_transform *t, int *channels, int *height, int *width) {
  *channels = t->c;
  *height = t->crop ? t->crop : t->h;
  *width = t->crop ? t->crop : t->w;
}

void mdl_transform_range(const mdl_transform *t, float vmin, float vmax, float *lo, float *hi) {
  size_t n = t->per_element ? (size_t)t->c * t->h * t->w : (size_t)t->c;
  *lo = INFINITY;
  *hi = -INFINITY;
  for (size_t j = 0; j < n; j++) {
    float a = t->mul[j] * vmin + t->add[j], b = t->mul[j] * vmax + t->add[j];
    *lo = fminf(*lo, fminf(a, b));
    *hi = fmaxf(*hi, fmaxf(a, b));
  }
}
