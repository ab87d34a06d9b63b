/* Shape rules of the element-wise and per-channel layers (neurons, PReLU,
 * BatchNorm, LRN, Scale, Bias, Eltwise, Softmax, MVN), the dense layers with
 * weights (InnerProduct, Embed), ArgMax, and the sinks (Silence,
 * HDF5Output). */
#include <stdio.h>

#include "compiler/layers_internal.h"

mdl_status mdl_shape_neuron(mdl_shape_args *a, mdl_error *err) {
  a->top[0] = a->bottom[0];
  return MDL_OK;
}

mdl_status mdl_shape_dropout(mdl_shape_args *a, mdl_error *err) {
  const Caffe__DropoutParameter *p = a->lp->dropout_param;
  if (p && (p->dropout_ratio < 0 || p->dropout_ratio >= 1))
    return mdl_lfail(a, err, "dropout_param.dropout_ratio %g must be in [0, 1)",
                     (double)p->dropout_ratio);
  a->top[0] = a->bottom[0];
  return MDL_OK;
}

mdl_status mdl_shape_exp_log(mdl_shape_args *a, mdl_error *err) {
  float base = -1;
  const char *field = "exp_param.base";
  if (a->lp->exp_param) {
    base = a->lp->exp_param->base_;
  } else if (a->lp->log_param) {
    base = a->lp->log_param->base_;
    field = "log_param.base";
  }
  if (base != -1 && !(base > 0))
    return mdl_lfail(a, err, "%s %g must be > 0 (or -1 for e)", field, (double)base);
  a->top[0] = a->bottom[0];
  return MDL_OK;
}

mdl_status mdl_shape_prelu(mdl_shape_args *a, mdl_error *err) {
  mdl_status st = mdl_laxes(a, 0, 2, -1, err);
  if (st != MDL_OK) return st;
  a->top[0] = a->bottom[0];
  /* Caffe: one slope per channel, or a 0-axis blob when shared. */
  bool shared = a->lp->prelu_param && a->lp->prelu_param->channel_shared;
  a->param[0].n = shared ? 0 : 1;
  a->param[0].d[0] = a->bottom[0].d[1];
  a->n_param = 1;
  return MDL_OK;
}

mdl_status mdl_shape_inner_product(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__InnerProductParameter k_default = CAFFE__INNER_PRODUCT_PARAMETER__INIT;
  const Caffe__InnerProductParameter *p = a->lp->inner_product_param;
  if (!p) p = &k_default;
  if (!p->num_output)
    return mdl_lfail(a, err, "inner_product_param.num_output must be set and > 0");
  int axis;
  mdl_status st = mdl_laxis(a, 0, p->axis, "inner_product_param.axis", &axis, err);
  if (st != MDL_OK) return st;
  int64_t n = p->num_output, k = mdl_lcount(&a->bottom[0], axis, a->bottom[0].n);
  mdl_shape top = a->bottom[0];
  top.n = axis + 1;
  top.d[axis] = n;
  a->top[0] = top;
  int64_t w[2] = {p->transpose ? k : n, p->transpose ? n : k};
  mdl_shape_set(&a->param[0], 2, w);
  a->n_param = 1;
  if (p->bias_term) mdl_shape_set(&a->param[a->n_param++], 1, &n);
  return MDL_OK;
}

mdl_status mdl_shape_embed(mdl_shape_args *a, mdl_error *err) {
  const Caffe__EmbedParameter *p = a->lp->embed_param;
  if (!p || !p->num_output) return mdl_lfail(a, err, "embed_param.num_output must be set and > 0");
  if (!p->input_dim) return mdl_lfail(a, err, "embed_param.input_dim must be set and > 0");
  a->top[0] = a->bottom[0];
  mdl_status st = mdl_lpush(a, &a->top[0], p->num_output, err);
  if (st != MDL_OK) return st;
  int64_t w[2] = {p->input_dim, p->num_output};
  mdl_shape_set(&a->param[0], 2, w);
  a->n_param = 1;
  if (p->bias_term) mdl_shape_set(&a->param[a->n_param++], 1, &w[1]);
  return MDL_OK;
}

mdl_status mdl_shape_batch_norm(mdl_shape_args *a, mdl_error *err) {
  mdl_status st = mdl_laxes(a, 0, 1, -1, err);
  if (st != MDL_OK) return st;
  int64_t c = a->bottom[0].n == 1 ? 1 : a->bottom[0].d[1];
  int64_t one = 1;
  /* mean, variance, and the moving-average scale factor. */
  mdl_shape_set(&a->param[0], 1, &c);
  mdl_shape_set(&a->param[1], 1, &c);
  mdl_shape_set(&a->param[2], 1, &one);
  a->n_param = 3;
  a->top[0] = a->bottom[0];
  return MDL_OK;
}

/* The learned factor (Scale) or bias (Bias) of one bottom: the axes
 * [axis, axis + num_axes) of bottom 0; num_axes -1 means to the end. */
static mdl_status learned_span(mdl_shape_args *a, const char *msg, int32_t axis_in,
                               int32_t num_axes, mdl_shape *out, mdl_error *err) {
  char field[64];
  snprintf(field, sizeof field, "%s.axis", msg);
  int axis;
  mdl_status st = mdl_laxis(a, 0, axis_in, field, &axis, err);
  if (st != MDL_OK) return st;
  const mdl_shape *b = &a->bottom[0];
  if (num_axes < -1)
    return mdl_lfail(a, err, "%s.num_axes %d must be >= 0, or -1 for all remaining axes", msg,
                     (int)num_axes);
  if (num_axes >= 0 && axis + num_axes > b->n)
    return mdl_lfail(a, err,
                     "%s.axis %d + num_axes %d extends past the %d axes of bottom \"%s\" "
                     "(%s)",
                     msg, axis, (int)num_axes, b->n, mdl_lbottom(a, 0), mdl_lstr(b));
  int end = num_axes < 0 ? b->n : axis + num_axes;
  out->n = end - axis;
  for (int i = axis; i < end; i++) out->d[i - axis] = b->d[i];
  return MDL_OK;
}

/* Caffe's Scale/Bias Reshape check: the operand's shape must equal the axes
 * of bottom 0 starting at axis (a 0-axis operand fits anywhere). */
static mdl_status operand_fits(mdl_shape_args *a, const char *msg, int32_t axis_in,
                               const mdl_shape *op, const char *op_desc, mdl_error *err) {
  if (op->n == 0) return MDL_OK;
  char field[64];
  snprintf(field, sizeof field, "%s.axis", msg);
  int axis;
  mdl_status st = mdl_laxis(a, 0, axis_in, field, &axis, err);
  if (st != MDL_OK) return st;
  const mdl_shape *b = &a->bottom[0];
  bool ok = axis + op->n <= b->n;
  for (int i = 0; ok && i < op->n; i++) ok = b->d[axis + i] == op->d[i];
  if (!ok)
    return mdl_lfail(a, err, "%s is %s but bottom \"%s\" is %s: it must equal axes %d..%d of it",
                     op_desc, mdl_lstr(op), mdl_lbottom(a, 0), mdl_lstr(b), axis, axis + op->n - 1);
  return MDL_OK;
}

mdl_status mdl_shape_scale(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__ScaleParameter k_default = CAFFE__SCALE_PARAMETER__INIT;
  const Caffe__ScaleParameter *p = a->lp->scale_param;
  if (!p) p = &k_default;
  mdl_status st;
  mdl_shape factor;
  char desc[300];
  if (a->n_bottom > 1) {
    factor = a->bottom[1];
    snprintf(desc, sizeof desc, "bottom \"%s\"", mdl_lbottom(a, 1));
  } else {
    if ((st = learned_span(a, "scale_param", p->axis, p->num_axes, &factor, err)) != MDL_OK)
      return st;
    a->param[a->n_param++] = factor;
    snprintf(desc, sizeof desc, "the scale");
  }
  if ((st = operand_fits(a, "scale_param", p->axis, &factor, desc, err)) != MDL_OK) return st;
  if (p->bias_term) {
    /* Caffe builds an inner Bias layer on bottom 0 alone, spanning as many
     * axes as the factor. */
    mdl_shape bias;
    int32_t num_axes = a->n_bottom > 1 ? a->bottom[1].n : p->num_axes;
    if ((st = learned_span(a, "scale_param", p->axis, num_axes, &bias, err)) != MDL_OK) return st;
    a->param[a->n_param++] = bias;
  }
  a->top[0] = a->bottom[0];
  return MDL_OK;
}

mdl_status mdl_shape_bias(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__BiasParameter k_default = CAFFE__BIAS_PARAMETER__INIT;
  const Caffe__BiasParameter *p = a->lp->bias_param;
  if (!p) p = &k_default;
  mdl_status st;
  mdl_shape bias;
  char desc[300];
  if (a->n_bottom > 1) {
    bias = a->bottom[1];
    snprintf(desc, sizeof desc, "bottom \"%s\"", mdl_lbottom(a, 1));
  } else {
    if ((st = learned_span(a, "bias_param", p->axis, p->num_axes, &bias, err)) != MDL_OK) return st;
    a->param[a->n_param++] = bias;
    snprintf(desc, sizeof desc, "the bias");
  }
  if ((st = operand_fits(a, "bias_param", p->axis, &bias, desc, err)) != MDL_OK) return st;
  a->top[0] = a->bottom[0];
  return MDL_OK;
}

mdl_status mdl_shape_eltwise(mdl_shape_args *a, mdl_error *err) {
  const Caffe__EltwiseParameter *p = a->lp->eltwise_param;
  if (p && p->n_coeff && p->n_coeff != (size_t)a->n_bottom)
    return mdl_lfail(a, err, "eltwise_param has %zu coeff for %d bottoms; give one per bottom",
                     p->n_coeff, a->n_bottom);
  if (p && p->n_coeff && p->operation == CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__PROD)
    return mdl_lfail(a, err, "eltwise_param.coeff applies only to SUM");
  for (int i = 1; i < a->n_bottom; i++) {
    mdl_status st = mdl_lsame(a, 0, i, err);
    if (st != MDL_OK) return st;
  }
  a->top[0] = a->bottom[0];
  return MDL_OK;
}

mdl_status mdl_shape_softmax(mdl_shape_args *a, mdl_error *err) {
  int32_t axis_in = a->lp->softmax_param ? a->lp->softmax_param->axis : 1;
  int axis;
  mdl_status st = mdl_laxis(a, 0, axis_in, "softmax_param.axis", &axis, err);
  if (st != MDL_OK) return st;
  a->top[0] = a->bottom[0];
  return MDL_OK;
}

mdl_status mdl_shape_mvn(mdl_shape_args *a, mdl_error *err) {
  /* Caffe reshapes the top through the legacy 4-axis accessors. */
  int64_t d[4];
  for (int i = 0; i < 4; i++) {
    mdl_status st = mdl_llegacy(a, 0, i, &d[i], err);
    if (st != MDL_OK) return st;
  }
  mdl_shape_set(&a->top[0], 4, d);
  return MDL_OK;
}

mdl_status mdl_shape_argmax(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__ArgMaxParameter k_default = CAFFE__ARG_MAX_PARAMETER__INIT;
  const Caffe__ArgMaxParameter *p = a->lp->argmax_param;
  if (!p) p = &k_default;
  const mdl_shape *b = &a->bottom[0];
  mdl_status st = mdl_laxes(a, 0, 1, -1, err);
  if (st != MDL_OK) return st;
  if (p->top_k < 1) return mdl_lfail(a, err, "argmax_param.top_k must be >= 1");
  if (p->has_axis) {
    int axis;
    if ((st = mdl_laxis(a, 0, p->axis, "argmax_param.axis", &axis, err)) != MDL_OK) return st;
    if (p->top_k > b->d[axis])
      return mdl_lfail(a, err, "argmax_param.top_k %u exceeds axis %d of bottom \"%s\" (%s)",
                       p->top_k, axis, mdl_lbottom(a, 0), mdl_lstr(b));
    a->top[0] = *b;
    a->top[0].d[axis] = p->top_k;
    return MDL_OK;
  }
  if (p->top_k > mdl_lcount(b, 1, b->n))
    return mdl_lfail(a, err,
                     "argmax_param.top_k %u exceeds the %lld values per item of bottom "
                     "\"%s\" (%s)",
                     p->top_k, (long long)mdl_lcount(b, 1, b->n), mdl_lbottom(a, 0), mdl_lstr(b));
  mdl_shape top = {.n = b->n < 3 ? 3 : b->n};
  for (int i = 0; i < top.n; i++) top.d[i] = 1;
  top.d[0] = b->d[0];
  top.d[2] = p->top_k;
  if (p->out_max_val) top.d[1] = 2;
  a->top[0] = top;
  return MDL_OK;
}

mdl_status mdl_shape_silence(mdl_shape_args *a, mdl_error *err) {
  return MDL_OK;
}

mdl_status mdl_shape_hdf5_output(mdl_shape_args *a, mdl_error *err) {
  mdl_status st = mdl_laxes(a, 0, 1, -1, err);
  if (st == MDL_OK) st = mdl_laxes(a, 1, 1, -1, err);
  if (st != MDL_OK) return st;
  if (a->bottom[0].d[0] != a->bottom[1].d[0])
    return mdl_lfail(a, err,
                     "bottom \"%s\" is %s but bottom \"%s\" is %s; their first axes must "
                     "match",
                     mdl_lbottom(a, 0), mdl_lstr(&a->bottom[0]), mdl_lbottom(a, 1),
                     mdl_lstr(&a->bottom[1]));
  return MDL_OK;
}

mdl_status mdl_shape_lrn(mdl_shape_args *a, mdl_error *err) {
  static const Caffe__LRNParameter k_default = CAFFE__LRNPARAMETER__INIT;
  const Caffe__LRNParameter *p = a->lp->lrn_param;
  if (!p) p = &k_default;
  mdl_status st = mdl_laxes(a, 0, 4, 4, err);
  if (st != MDL_OK) return st;
  if (p->local_size % 2 == 0)
    return mdl_lfail(a, err, "lrn_param.local_size %u must be odd", p->local_size);
  a->top[0] = a->bottom[0];
  return MDL_OK;
}
