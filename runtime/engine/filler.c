/* Caffe's fillers over the counter-based random stream of common/rng.h.
 * Bits differ from Caffe's Boost mt19937; distributions and fan conventions
 * are Caffe's. */
#include "runtime/engine/filler.h"

#include <math.h>
#include <string.h>

void mdl_filler_constant(float *x, int64_t n, float value) {
  for (int64_t i = 0; i < n; i++) x[i] = value;
}

static void fans(const mdl_tensor *t, double *fan_in, double *fan_out) {
  *fan_in = (double)t->count / (double)t->d[0];
  *fan_out = t->n > 1 ? (double)t->count / (double)t->d[1] : (double)t->count;
}

static double fan_n(const Caffe__FillerParameter *fp, const mdl_tensor *t) {
  double in, out;
  fans(t, &in, &out);
  switch (fp->variance_norm) {
    case CAFFE__FILLER_PARAMETER__VARIANCE_NORM__FAN_OUT:
      return out;
    case CAFFE__FILLER_PARAMETER__VARIANCE_NORM__AVERAGE:
      return (in + out) / 2.0;
    default:
      return in;
  }
}

mdl_status mdl_filler_fill(const Caffe__FillerParameter *fp, mdl_tensor *t, mdl_rng *rng,
                           mdl_error *err) {
  const char *type = fp && fp->type ? fp->type : "constant";
  float *x = t->data;
  const int64_t n = t->count;
  if (strcmp(type, "constant") == 0) {
    mdl_filler_constant(x, n, fp ? fp->value : 0.f);
    return MDL_OK;
  }
  if (strcmp(type, "uniform") == 0) {
    if (!(fp->max >= fp->min))
      return mdl_errorf(err, MDL_ERR_INVALID, "uniform filler: max %g below min %g", fp->max,
                        fp->min);
    for (int64_t i = 0; i < n; i++)
      x[i] = fp->max > fp->min ? mdl_rng_uniform(rng, fp->min, fp->max) : fp->min;
    return MDL_OK;
  }
  if (strcmp(type, "gaussian") == 0) {
    for (int64_t i = 0; i < n; i++) x[i] = mdl_rng_gaussian(rng, fp->mean, fp->std);
    if (fp->sparse >= 0) {
      if (t->n < 1)
        return mdl_errorf(err, MDL_ERR_INVALID, "sparse gaussian filler needs at least 1 axis");
      double p = (double)fp->sparse / (double)t->d[0];
      for (int64_t i = 0; i < n; i++) {
        double u = (mdl_rng_u32(rng) >> 8) * (1.0 / 16777216.0);
        if (!(u < p)) x[i] = 0.f;
      }
    }
    return MDL_OK;
  }
  if (strcmp(type, "positive_unitball") == 0) {
    if (t->n < 1 || t->d[0] == 0)
      return mdl_errorf(err, MDL_ERR_INVALID, "positive_unitball filler needs a non-empty axis 0");
    for (int64_t i = 0; i < n; i++) x[i] = mdl_rng_uniform(rng, 0.f, 1.f);
    int64_t dim = n / t->d[0];
    for (int64_t i = 0; i < t->d[0]; i++) {
      double s = 0;
      for (int64_t j = 0; j < dim; j++) s += x[i * dim + j];
      for (int64_t j = 0; j < dim; j++) x[i * dim + j] = (float)(x[i * dim + j] / s);
    }
    return MDL_OK;
  }
  if (strcmp(type, "xavier") == 0 || strcmp(type, "msra") == 0) {
    if (t->n < 1 || n == 0 || t->d[0] == 0 || (t->n > 1 && t->d[1] == 0))
      return mdl_errorf(err, MDL_ERR_INVALID, "%s filler needs a non-empty blob", type);
    double fan = fan_n(fp, t);
    if (type[0] == 'x') {
      float scale = (float)sqrt(3.0 / fan);
      for (int64_t i = 0; i < n; i++) x[i] = mdl_rng_uniform(rng, -scale, scale);
    } else {
      float std = (float)sqrt(2.0 / fan);
      for (int64_t i = 0; i < n; i++) x[i] = mdl_rng_gaussian(rng, 0.f, std);
    }
    return MDL_OK;
  }
  if (strcmp(type, "bilinear") == 0) {
    if (t->n != 4 || t->d[2] != t->d[3])
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "bilinear filler needs a 4-axis blob with square kernels");
    const int64_t w = t->d[3], h = t->d[2];
    float f = ceilf((float)w / 2.f);
    float c = (float)(w - 1) / (2.f * f);
    for (int64_t i = 0; i < n; i++) {
      float xx = (float)(i % w), yy = (float)((i / w) % h);
      x[i] = (1 - fabsf(xx / f - c)) * (1 - fabsf(yy / f - c));
    }
    return MDL_OK;
  }
  return mdl_errorf(err, MDL_ERR_INVALID,
                    "unknown filler type \"%s\" (known: constant, uniform, gaussian, "
                    "positive_unitball, xavier, msra, bilinear)",
                    type);
}
