/* Shape rules of the layers that start a net: Input, DummyData, MemoryData,
 * Parameter, and the source readers (Data, ImageData, HDF5Data, WindowData),
 * whose record shape comes from the caller's source resolver. Reads no data
 * itself. */
#include <stdio.h>
#include <string.h>

#include "compiler/layers_internal.h"

mdl_status mdl_shape_input(mdl_shape_args *a, mdl_error *err) {
  const Caffe__InputParameter *p = a->lp->input_param;
  size_t ns = p ? p->n_shape : 0;
  if (ns == 0)
    return mdl_lfail(a, err, "input_param.shape is missing; the shape of top \"%s\" must be given",
                     a->lp->n_top ? a->lp->top[0] : "?");
  if (ns != 1 && ns != (size_t)a->n_top)
    return mdl_lfail(a, err, "input_param has %zu shapes for %d tops; give one, or one per top", ns,
                     a->n_top);
  for (int i = 0; i < a->n_top; i++) {
    mdl_status st =
        mdl_lblobshape(a, p->shape[ns == 1 ? 0 : i], "input_param.shape", &a->top[i], err);
    if (st != MDL_OK) return st;
  }
  return MDL_OK;
}

/* One legacy dim list of DummyDataParameter: given once or once per top. */
static mdl_status legacy_dims(mdl_shape_args *a, const char *field, size_t n, const uint32_t *v,
                              int axis, mdl_error *err) {
  if (n != 1 && n != (size_t)a->n_top)
    return mdl_lfail(a, err,
                     "dummy_data_param.%s is given %zu times for %d tops; give it once or "
                     "once per top",
                     field, n, a->n_top);
  for (int i = 0; i < a->n_top; i++) a->top[i].d[axis] = v[n == 1 ? 0 : i];
  return MDL_OK;
}

mdl_status mdl_shape_dummy_data(mdl_shape_args *a, mdl_error *err) {
  const Caffe__DummyDataParameter *p = a->lp->dummy_data_param;
  if (!p) return mdl_lfail(a, err, "dummy_data_param.shape is missing");
  if (p->n_data_filler > 1 && p->n_data_filler != (size_t)a->n_top)
    return mdl_lfail(a, err,
                     "dummy_data_param has %zu data_filler for %d tops; give none, one, "
                     "or one per top",
                     p->n_data_filler, a->n_top);
  bool legacy = p->n_num || p->n_channels || p->n_height || p->n_width;
  if (legacy) {
    if (p->n_shape)
      return mdl_lfail(a, err,
                       "dummy_data_param gives both shape and the legacy num/channels/"
                       "height/width; give one form");
    for (int i = 0; i < a->n_top; i++) a->top[i].n = 4;
    mdl_status st = legacy_dims(a, "num", p->n_num, p->num, 0, err);
    if (st == MDL_OK) st = legacy_dims(a, "channels", p->n_channels, p->channels, 1, err);
    if (st == MDL_OK) st = legacy_dims(a, "height", p->n_height, p->height, 2, err);
    if (st == MDL_OK) st = legacy_dims(a, "width", p->n_width, p->width, 3, err);
    return st;
  }
  if (p->n_shape != 1 && p->n_shape != (size_t)a->n_top)
    return mdl_lfail(a, err,
                     "dummy_data_param has %zu shapes for %d tops; give one, or one per "
                     "top",
                     p->n_shape, a->n_top);
  for (int i = 0; i < a->n_top; i++) {
    mdl_status st = mdl_lblobshape(a, p->shape[p->n_shape == 1 ? 0 : i], "dummy_data_param.shape",
                                   &a->top[i], err);
    if (st != MDL_OK) return st;
  }
  return MDL_OK;
}

mdl_status mdl_shape_memory_data(mdl_shape_args *a, mdl_error *err) {
  const Caffe__MemoryDataParameter *p = a->lp->memory_data_param;
  if (!p || !p->batch_size || !p->channels || !p->height || !p->width)
    return mdl_lfail(a, err,
                     "memory_data_param.batch_size, channels, height and width must all be "
                     "set and positive (got %u, %u, %u, %u)",
                     p ? p->batch_size : 0, p ? p->channels : 0, p ? p->height : 0,
                     p ? p->width : 0);
  int64_t d[4] = {p->batch_size, p->channels, p->height, p->width};
  mdl_shape_set(&a->top[0], 4, d);
  mdl_shape_set(&a->top[1], 1, d);
  return MDL_OK;
}

mdl_status mdl_shape_parameter(mdl_shape_args *a, mdl_error *err) {
  const Caffe__ParameterParameter *p = a->lp->parameter_param;
  if (!p || !p->shape) return mdl_lfail(a, err, "parameter_param.shape is missing");
  mdl_status st = mdl_lblobshape(a, p->shape, "parameter_param.shape", &a->top[0], err);
  if (st != MDL_OK) return st;
  a->param[0] = a->top[0];
  a->n_param = 1;
  return MDL_OK;
}

mdl_status mdl_shape_python(mdl_shape_args *a, mdl_error *err) {
  const Caffe__PythonParameter *p = a->lp->python_param;
  return mdl_lfail(a, err,
                   "Python layers are not supported (python_param module \"%s\", layer "
                   "\"%s\")",
                   p && p->module ? p->module : "", p && p->layer ? p->layer : "");
}

/* Asks the resolver for one record of the layer's source. */
static mdl_status resolve(mdl_shape_args *a, const char *source, mdl_shape *rec, mdl_error *err) {
  if (!source || !*source) source = a->lp->name ? a->lp->name : "";
  if (!a->resolver)
    return mdl_lfail(a, err,
                     "the shape of source \"%s\" is unknown without its data (no data "
                     "source was given to the compiler)",
                     source);
  mdl_source_info info;
  memset(&info, 0, sizeof info);
  mdl_error inner;
  mdl_error_clear(&inner);
  mdl_status st = a->resolver(a->resolver_ctx, a->lp, &info, &inner);
  if (st != MDL_OK) {
    /* A resolver that already names the layer is passed through as is. */
    char own[300];
    snprintf(own, sizeof own, "layer \"%s\"", a->lp->name ? a->lp->name : "");
    if (strncmp(inner.msg, own, strlen(own)) == 0)
      mdl_errorf(err, st, "%s", inner.msg);
    else
      mdl_lfail(a, err, "source \"%s\": %s", source, inner.msg);
    if (err) err->code = st;
    return st;
  }
  if (info.record.n < 0 || info.record.n > MDL_MAX_AXES - 1)
    return mdl_lfail(a, err, "source \"%s\" gives records with %d axes", source, info.record.n);
  for (int i = 0; i < info.record.n; i++)
    if (info.record.d[i] <= 0)
      return mdl_lfail(a, err, "source \"%s\" gives records of shape %s", source,
                       mdl_lstr(&info.record));
  *rec = info.record;
  a->label_classes = info.num_classes;
  return MDL_OK;
}

/* A record as a Datum's C,H,W (see mdl_source_info). */
static mdl_status record_chw(mdl_shape_args *a, const char *source, int64_t chw[3],
                             mdl_error *err) {
  mdl_shape r;
  mdl_status st = resolve(a, source, &r, err);
  if (st != MDL_OK) return st;
  if (r.n == 3) {
    chw[0] = r.d[0], chw[1] = r.d[1], chw[2] = r.d[2];
  } else if (r.n == 2) {
    chw[0] = 1, chw[1] = r.d[0], chw[2] = r.d[1];
  } else if (r.n == 1) {
    chw[0] = r.d[0], chw[1] = 1, chw[2] = 1;
  } else {
    return mdl_lfail(a, err,
                     "source \"%s\" gives records of shape %s; expected channels x height "
                     "x width",
                     source ? source : "", mdl_lstr(&r));
  }
  return MDL_OK;
}

/* Caffe's DataTransformer::InferBlobShape: [batch, C, crop or H, crop or W]
 * and labels [batch]. */
static mdl_status image_tops(mdl_shape_args *a, const char *source, uint32_t batch,
                             const int64_t chw[3], mdl_error *err) {
  uint32_t crop = a->lp->transform_param ? a->lp->transform_param->crop_size : 0;
  if (crop && (chw[1] < crop || chw[2] < crop))
    return mdl_lfail(a, err,
                     "transform_param.crop_size %u is larger than the %lldx%lld images of "
                     "source \"%s\"",
                     crop, (long long)chw[1], (long long)chw[2], source ? source : "");
  int64_t d[4] = {batch, chw[0], crop ? crop : chw[1], crop ? crop : chw[2]};
  mdl_shape_set(&a->top[0], 4, d);
  if (a->n_top > 1) mdl_shape_set(&a->top[1], 1, d);
  return MDL_OK;
}

/* The pre-2015 transform fields of a data layer's own *_param: the V1
 * upgrade moves them to transform_param; in a `layer` net Caffe 1.0 ignores
 * them silently, which would change the data, so they are rejected. */
static mdl_status legacy_transform(mdl_shape_args *a, const char *msg, bool scale,
                                   const char *mean_file, bool crop, bool mirror, mdl_error *err) {
  const char *field = scale ? "scale" : mean_file ? "mean_file" : crop ? "crop_size" : "mirror";
  if (!scale && !mean_file && !crop && !mirror) return MDL_OK;
  return mdl_lfail(a, err,
                   "%s.%s is a V1 field that Caffe ignores in `layer` nets; use "
                   "transform_param.%s",
                   msg, field, field);
}

mdl_status mdl_shape_data(mdl_shape_args *a, mdl_error *err) {
  const Caffe__DataParameter *p = a->lp->data_param;
  if (!p || !p->batch_size)
    return mdl_lfail(a, err, "data_param.batch_size must be set and positive");
  mdl_status st = legacy_transform(a, "data_param", p->has_scale, p->mean_file, p->has_crop_size,
                                   p->has_mirror, err);
  if (st != MDL_OK) return st;
  int64_t chw[3];
  st = record_chw(a, p->source, chw, err);
  if (st != MDL_OK) return st;
  return image_tops(a, p->source, p->batch_size, chw, err);
}

mdl_status mdl_shape_image_data(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__ImageDataParameter k_default = CAFFE__IMAGE_DATA_PARAMETER__INIT;
  const Caffe__ImageDataParameter *p = a->lp->image_data_param;
  if (!p) p = &k_default;
  if (!p->batch_size) return mdl_lfail(a, err, "image_data_param.batch_size must be positive");
  mdl_status st = legacy_transform(a, "image_data_param", p->has_scale, p->mean_file,
                                   p->has_crop_size, p->has_mirror, err);
  if (st != MDL_OK) return st;
  if ((p->new_height == 0) != (p->new_width == 0))
    return mdl_lfail(a, err,
                     "image_data_param.new_height and new_width must be set together "
                     "(got %u and %u)",
                     p->new_height, p->new_width);
  /* Images are decoded to 3 or 1 channels by is_color, and resized when
   * new_height/new_width are given: then no data is needed. */
  int64_t chw[3] = {p->is_color ? 3 : 1, p->new_height, p->new_width};
  if (!p->new_height) {
    int64_t rec[3];
    st = record_chw(a, p->source, rec, err);
    if (st != MDL_OK) return st;
    chw[1] = rec[1], chw[2] = rec[2];
  }
  return image_tops(a, p->source, p->batch_size, chw, err);
}

mdl_status mdl_shape_window_data(mdl_shape_args *a, mdl_error *err) {
  const Caffe__WindowDataParameter *p = a->lp->window_data_param;
  if (!p || !p->batch_size)
    return mdl_lfail(a, err, "window_data_param.batch_size must be set and positive");
  mdl_status st = legacy_transform(a, "window_data_param", p->has_scale, p->mean_file,
                                   p->has_crop_size, p->has_mirror, err);
  if (st != MDL_OK) return st;
  uint32_t crop = a->lp->transform_param ? a->lp->transform_param->crop_size : 0;
  if (!crop) return mdl_lfail(a, err, "transform_param.crop_size must be set and positive");
  int64_t chw[3];
  st = record_chw(a, p->source, chw, err);
  if (st != MDL_OK) return st;
  /* Windows are warped to crop_size x crop_size whatever the image size. */
  int64_t d[4] = {p->batch_size, chw[0], crop, crop};
  mdl_shape_set(&a->top[0], 4, d);
  mdl_shape_set(&a->top[1], 1, d);
  return MDL_OK;
}

mdl_status mdl_shape_hdf5_data(mdl_shape_args *a, mdl_error *err) {
  const Caffe__HDF5DataParameter *p = a->lp->hdf5_data_param;
  if (!p || !p->batch_size)
    return mdl_lfail(a, err, "hdf5_data_param.batch_size must be set and positive");
  mdl_shape rec;
  mdl_status st = resolve(a, p->source, &rec, err);
  if (st != MDL_OK) return st;
  a->top[0].n = 1;
  a->top[0].d[0] = p->batch_size;
  for (int i = 0; i < rec.n; i++) a->top[0].d[a->top[0].n++] = rec.d[i];
  for (int t = 1; t < a->n_top; t++) {
    a->top[t].n = 1;
    a->top[t].d[0] = p->batch_size;
  }
  return MDL_OK;
}
