/* Shape rules of the layers that rearrange axes without weights: Concat,
 * Slice, Split, Flatten, Reshape (0 copies, -1 infers), Tile, Reduction,
 * Filter, BatchReindex and Crop (the runtime's layers_struct.c family). */
#include <stdio.h>

#include "compiler/layers_internal.h"

mdl_status mdl_shape_concat(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__ConcatParameter k_default = CAFFE__CONCAT_PARAMETER__INIT;
  const Caffe__ConcatParameter *p = a->lp->concat_param;
  if (!p) p = &k_default;
  const mdl_shape *b0 = &a->bottom[0];
  if (p->has_axis && p->has_concat_dim)
    return mdl_lfail(a, err, "concat_param gives both axis and concat_dim; give one");
  int axis;
  if (p->has_concat_dim) {
    if (p->concat_dim >= (uint32_t)b0->n)
      return mdl_lfail(a, err,
                       "concat_param.concat_dim %u is out of range for bottom \"%s\" (%s, "
                       "%d axes)",
                       p->concat_dim, mdl_lbottom(a, 0), mdl_lstr(b0), b0->n);
    axis = (int)p->concat_dim;
  } else {
    mdl_status st = mdl_laxis(a, 0, p->axis, "concat_param.axis", &axis, err);
    if (st != MDL_OK) return st;
  }
  mdl_shape top = *b0;
  for (int i = 1; i < a->n_bottom; i++) {
    const mdl_shape *bi = &a->bottom[i];
    if (bi->n != b0->n)
      return mdl_lfail(a, err,
                       "bottom \"%s\" is %s but bottom \"%s\" is %s: inputs need the same "
                       "number of axes",
                       mdl_lbottom(a, 0), mdl_lstr(b0), mdl_lbottom(a, i), mdl_lstr(bi));
    for (int j = 0; j < b0->n; j++)
      if (j != axis && bi->d[j] != b0->d[j])
        return mdl_lfail(a, err,
                         "bottom \"%s\" is %s but bottom \"%s\" is %s: all axes but the "
                         "concat axis %d must match",
                         mdl_lbottom(a, 0), mdl_lstr(b0), mdl_lbottom(a, i), mdl_lstr(bi), axis);
    top.d[axis] += bi->d[axis];
  }
  a->top[0] = top;
  return MDL_OK;
}

mdl_status mdl_shape_slice(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__SliceParameter k_default = CAFFE__SLICE_PARAMETER__INIT;
  const Caffe__SliceParameter *p = a->lp->slice_param;
  if (!p) p = &k_default;
  const mdl_shape *b = &a->bottom[0];
  int axis;
  if (p->has_slice_dim) {
    if (p->slice_dim >= (uint32_t)b->n)
      return mdl_lfail(a, err,
                       "slice_param.slice_dim %u is out of range for bottom \"%s\" (%s, "
                       "%d axes)",
                       p->slice_dim, mdl_lbottom(a, 0), mdl_lstr(b), b->n);
    axis = (int)p->slice_dim;
  } else {
    mdl_status st = mdl_laxis(a, 0, p->axis, "slice_param.axis", &axis, err);
    if (st != MDL_OK) return st;
  }
  int64_t dim = b->d[axis];
  if (p->n_slice_point) {
    if (p->n_slice_point != (size_t)a->n_top - 1)
      return mdl_lfail(a, err,
                       "slice_param has %zu slice_point values for %d tops; give one fewer "
                       "than the tops",
                       p->n_slice_point, a->n_top);
    int64_t prev = 0;
    for (int t = 0; t < a->n_top; t++) {
      int64_t end = t + 1 < a->n_top ? (int64_t)p->slice_point[t] : dim;
      if (end <= prev || end > dim)
        return mdl_lfail(a, err,
                         "slice_param.slice_point %lld does not fit axis %d of bottom "
                         "\"%s\" (%s): points must increase and stay inside (0, %lld)",
                         (long long)(t + 1 < a->n_top ? end : prev), axis, mdl_lbottom(a, 0),
                         mdl_lstr(b), (long long)dim);
      a->top[t] = *b;
      a->top[t].d[axis] = end - prev;
      prev = end;
    }
    return MDL_OK;
  }
  if (dim % a->n_top)
    return mdl_lfail(a, err,
                     "%d tops do not evenly divide axis %d (size %lld) of bottom \"%s\" "
                     "(%s)",
                     a->n_top, axis, (long long)dim, mdl_lbottom(a, 0), mdl_lstr(b));
  for (int t = 0; t < a->n_top; t++) {
    a->top[t] = *b;
    a->top[t].d[axis] = dim / a->n_top;
  }
  return MDL_OK;
}

mdl_status mdl_shape_split(mdl_shape_args *a, mdl_error *err) {
  for (int t = 0; t < a->n_top; t++) a->top[t] = a->bottom[0];
  return MDL_OK;
}

mdl_status mdl_shape_flatten(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__FlattenParameter k_default = CAFFE__FLATTEN_PARAMETER__INIT;
  const Caffe__FlattenParameter *p = a->lp->flatten_param;
  if (!p) p = &k_default;
  const mdl_shape *b = &a->bottom[0];
  int start, end;
  mdl_status st = mdl_laxis(a, 0, p->axis, "flatten_param.axis", &start, err);
  if (st == MDL_OK) st = mdl_laxis(a, 0, p->end_axis, "flatten_param.end_axis", &end, err);
  if (st != MDL_OK) return st;
  if (end + 1 < start)
    return mdl_lfail(a, err,
                     "flatten_param.end_axis %d comes before axis %d (bottom \"%s\" is "
                     "%s)",
                     end, start, mdl_lbottom(a, 0), mdl_lstr(b));
  mdl_shape top = {0};
  for (int i = 0; i < start; i++) top.d[top.n++] = b->d[i];
  top.d[top.n++] = mdl_lcount(b, start, end + 1);
  for (int i = end + 1; i < b->n; i++) top.d[top.n++] = b->d[i];
  a->top[0] = top;
  return MDL_OK;
}

mdl_status mdl_shape_reshape(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__ReshapeParameter k_default = CAFFE__RESHAPE_PARAMETER__INIT;
  const Caffe__ReshapeParameter *p = a->lp->reshape_param;
  if (!p) p = &k_default;
  const mdl_shape *b = &a->bottom[0];
  size_t nnew = p->shape ? p->shape->n_dim : 0;
  const int64_t *dims = p->shape ? p->shape->dim : NULL;
  int inferred = -1;
  int64_t constant = 1;
  for (size_t i = 0; i < nnew; i++) {
    if (dims[i] == -1) {
      if (inferred >= 0) return mdl_lfail(a, err, "reshape_param.shape has more than one -1 dim");
      inferred = (int)i;
    } else if (dims[i] < -1) {
      return mdl_lfail(a, err,
                       "reshape_param.shape dim %zu is %lld (0 copies, -1 infers, others "
                       "must be positive)",
                       i, (long long)dims[i]);
    } else if (dims[i] > 0) {
      constant *= dims[i];
    }
  }
  int start = p->axis >= 0 ? p->axis : b->n + p->axis + 1;
  if (start < 0 || start > b->n)
    return mdl_lfail(a, err,
                     "reshape_param.axis %d is out of range for bottom \"%s\" (%s, %d "
                     "axes)",
                     (int)p->axis, mdl_lbottom(a, 0), mdl_lstr(b), b->n);
  if (p->num_axes < -1)
    return mdl_lfail(a, err, "reshape_param.num_axes %d must be >= 0, or -1 for all",
                     (int)p->num_axes);
  int end = p->num_axes == -1 ? b->n : start + p->num_axes;
  if (end > b->n)
    return mdl_lfail(a, err,
                     "reshape_param.axis %d + num_axes %d is out of range for bottom "
                     "\"%s\" (%s, %d axes)",
                     (int)p->axis, (int)p->num_axes, mdl_lbottom(a, 0), mdl_lstr(b), b->n);
  int n_out = b->n - (end - start) + (int)nnew;
  if (n_out > MDL_MAX_AXES)
    return mdl_lfail(a, err, "the reshaped top would have %d axes; at most %d are supported", n_out,
                     MDL_MAX_AXES);
  mdl_shape top = {0};
  for (int i = 0; i < start; i++) top.d[top.n++] = b->d[i];
  for (size_t i = 0; i < nnew; i++) {
    int64_t d = dims[i];
    if (d == 0) {
      if (start + (int)i >= b->n)
        return mdl_lfail(a, err,
                         "reshape_param.shape dim %zu is 0 but bottom \"%s\" (%s) has no "
                         "axis %d to copy",
                         i, mdl_lbottom(a, 0), mdl_lstr(b), start + (int)i);
      d = b->d[start + i];
    }
    top.d[top.n++] = d;
  }
  for (int i = end; i < b->n; i++) top.d[top.n++] = b->d[i];
  int64_t count = mdl_lcount(b, 0, b->n);
  if (inferred >= 0) {
    int64_t known = constant * mdl_lcount(b, 0, start) * mdl_lcount(b, end, b->n);
    for (size_t i = 0; i < nnew; i++)
      if (dims[i] == 0) known *= top.d[start + i];
    if (known == 0 || count % known)
      return mdl_lfail(a, err,
                       "bottom \"%s\" (%s, count %lld) is not divisible by the product "
                       "%lld of the other dims of reshape_param.shape",
                       mdl_lbottom(a, 0), mdl_lstr(b), (long long)count, (long long)known);
    top.d[start + inferred] = count / known;
  }
  if (mdl_lcount(&top, 0, top.n) != count)
    return mdl_lfail(a, err,
                     "reshaping bottom \"%s\" (%s, count %lld) to %s (count %lld) changes "
                     "the count",
                     mdl_lbottom(a, 0), mdl_lstr(b), (long long)count, mdl_lstr(&top),
                     (long long)mdl_lcount(&top, 0, top.n));
  a->top[0] = top;
  return MDL_OK;
}

mdl_status mdl_shape_tile(mdl_shape_args *a, mdl_error *err) {
  const Caffe__TileParameter *p = a->lp->tile_param;
  if (!p || !p->has_tiles) return mdl_lfail(a, err, "tile_param.tiles is missing");
  if (p->tiles <= 0) return mdl_lfail(a, err, "tile_param.tiles %d must be > 0", (int)p->tiles);
  int axis;
  mdl_status st = mdl_laxis(a, 0, p->axis, "tile_param.axis", &axis, err);
  if (st != MDL_OK) return st;
  a->top[0] = a->bottom[0];
  a->top[0].d[axis] *= p->tiles;
  return MDL_OK;
}

mdl_status mdl_shape_reduction(mdl_shape_args *a, mdl_error *err) {
  int32_t axis_in = a->lp->reduction_param ? a->lp->reduction_param->axis : 0;
  int axis;
  mdl_status st = mdl_laxis(a, 0, axis_in, "reduction_param.axis", &axis, err);
  if (st != MDL_OK) return st;
  /* Everything from axis on is reduced; axis 0 gives a scalar. */
  a->top[0] = a->bottom[0];
  a->top[0].n = axis;
  return MDL_OK;
}

mdl_status mdl_shape_filter(mdl_shape_args *a, mdl_error *err) {
  int sel = a->n_bottom - 1;
  if (a->n_top != sel)
    return mdl_lfail(a, err,
                     "takes one top per filtered bottom: %d bottoms (the last is the "
                     "selector) need %d tops, got %d",
                     a->n_bottom, sel, a->n_top);
  const mdl_shape *s = &a->bottom[sel];
  mdl_status st = mdl_laxes(a, sel, 1, -1, err);
  if (st != MDL_OK) return st;
  for (int i = 1; i < s->n; i++)
    if (s->d[i] != 1)
      return mdl_lfail(a, err,
                       "selector bottom \"%s\" is %s; all its axes but the first must be "
                       "1",
                       mdl_lbottom(a, sel), mdl_lstr(s));
  for (int i = 0; i < sel; i++) {
    if ((st = mdl_laxes(a, i, 1, -1, err)) != MDL_OK) return st;
    if (a->bottom[i].d[0] != s->d[0])
      return mdl_lfail(a, err,
                       "bottom \"%s\" is %s but selector bottom \"%s\" is %s: their "
                       "first axes must match",
                       mdl_lbottom(a, i), mdl_lstr(&a->bottom[i]), mdl_lbottom(a, sel),
                       mdl_lstr(s));
    /* The number of items kept depends on the data; the plan reserves the
     * most, which is what Caffe's first Reshape does too. */
    a->top[i] = a->bottom[i];
  }
  return MDL_OK;
}

mdl_status mdl_shape_batch_reindex(mdl_shape_args *a, mdl_error *err) {
  mdl_status st = mdl_laxes(a, 1, 1, 1, err);
  if (st == MDL_OK) st = mdl_laxes(a, 0, 1, -1, err);
  if (st != MDL_OK) return st;
  a->top[0] = a->bottom[0];
  a->top[0].d[0] = a->bottom[1].d[0];
  return MDL_OK;
}

mdl_status mdl_shape_crop(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__CropParameter k_default = CAFFE__CROP_PARAMETER__INIT;
  const Caffe__CropParameter *p = a->lp->crop_param;
  if (!p) p = &k_default;
  const mdl_shape *b0 = &a->bottom[0], *b1 = &a->bottom[1];
  if (b0->n != b1->n)
    return mdl_lfail(a, err,
                     "bottom \"%s\" is %s but bottom \"%s\" is %s; both need the same "
                     "number of axes",
                     mdl_lbottom(a, 0), mdl_lstr(b0), mdl_lbottom(a, 1), mdl_lstr(b1));
  int start;
  mdl_status st = mdl_laxis(a, 0, p->axis, "crop_param.axis", &start, err);
  if (st != MDL_OK) return st;
  if (p->n_offset > 1 && start + (int)p->n_offset != b0->n)
    return mdl_lfail(a, err, "crop_param has %zu offsets but %d axes are cropped (axis %d of %d)",
                     p->n_offset, b0->n - start, start, b0->n);
  mdl_shape top = *b0;
  for (int i = start; i < b0->n; i++) {
    int64_t off = p->n_offset == 0 ? 0 : p->offset[p->n_offset == 1 ? 0 : i - start];
    if (b0->d[i] - off < b1->d[i])
      return mdl_lfail(a, err,
                       "crop of axis %d is out of bounds: bottom \"%s\" is %s, bottom "
                       "\"%s\" is %s, offset %lld",
                       i, mdl_lbottom(a, 0), mdl_lstr(b0), mdl_lbottom(a, 1), mdl_lstr(b1),
                       (long long)off);
    top.d[i] = b1->d[i];
  }
  a->top[0] = top;
  return MDL_OK;
}
