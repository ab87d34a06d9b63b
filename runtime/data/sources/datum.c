/* caffe.Datum records to pixels: raw uint8 `data`, `float_data`, or
 * `encoded` image bytes. Checks every size against channels x height x width
 * so a record that does not decode is reported, never read past. */
#include <stdlib.h>
#include <string.h>

#include "caffe.pb-c.h"
#include "runtime/data/sources/datum.h"

static int grow(void **p, size_t *cap, size_t need) {
  if (*cap >= need) return 0;
  void *q = realloc(*p, need ? need : 1);
  if (!q) return -1;
  *p = q;
  *cap = need;
  return 0;
}

mdl_status mdl_datum_decode(const uint8_t *buf, size_t len, int channels, mdl_image *img,
                            mdl_error *err) {
  Caffe__Datum *d = caffe__datum__unpack(NULL, len, buf);
  if (!d)
    return mdl_errorf(err, MDL_ERR_INVALID, "not a caffe.Datum (%zu bytes do not parse)", len);
  mdl_status st = MDL_OK;
  img->label = d->label;
  if (d->encoded) {
    if (!d->has_data || d->data.len == 0) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "encoded Datum without image bytes");
    } else {
      st = mdl_image_decode(d->data.data, d->data.len, channels, img, err);
      if (st) mdl_error_prefix(err, "encoded Datum: ");
    }
    caffe__datum__free_unpacked(d, NULL);
    return st;
  }
  int64_t c = d->channels, h = d->height, w = d->width;
  if (c <= 0 || h <= 0 || w <= 0 || c * h > (1ll << 30) || c * h * w > (1ll << 30)) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "Datum has shape %lldx%lldx%lld", (long long)c,
                    (long long)h, (long long)w);
    goto done;
  }
  size_t n = (size_t)(c * h * w);
  if (d->has_data && d->data.len > 0) {
    if (d->data.len != n) {
      st = mdl_errorf(err, MDL_ERR_INVALID,
                      "Datum data has %zu bytes, shape %lldx%lldx%lld needs %zu", d->data.len,
                      (long long)c, (long long)h, (long long)w, n);
      goto done;
    }
    if (grow(&img->px, &img->px_cap, n)) {
      st = mdl_errorf(err, MDL_ERR_NOMEM, "out of memory decoding a Datum");
      goto done;
    }
    memcpy(img->px, d->data.data, n);
    img->dtype = MDL_DTYPE_U8;
  } else if (d->n_float_data > 0) {
    if (d->n_float_data != n) {
      st = mdl_errorf(err, MDL_ERR_INVALID,
                      "Datum float_data has %zu values, shape %lldx%lldx%lld needs %zu",
                      d->n_float_data, (long long)c, (long long)h, (long long)w, n);
      goto done;
    }
    if (grow(&img->px, &img->px_cap, n * sizeof(float))) {
      st = mdl_errorf(err, MDL_ERR_NOMEM, "out of memory decoding a Datum");
      goto done;
    }
    memcpy(img->px, d->float_data, n * sizeof(float));
    img->dtype = MDL_DTYPE_F32;
  } else {
    st = mdl_errorf(err, MDL_ERR_INVALID, "Datum has neither data nor float_data");
    goto done;
  }
  img->c = (int)c;
  img->h = (int)h;
  img->w = (int)w;
done:
  caffe__datum__free_unpacked(d, NULL);
  return st;
}
