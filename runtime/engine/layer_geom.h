/* What a layer's parameters and bottom shapes mean, once for every backend:
 * one function per layer family reads the LayerParameter and the shapes the
 * compiler's rule gave (l->bottom_shape, l->top_shape, l->param shapes),
 * checks them and fills a small struct of sizes and settings, reporting bad
 * input as MDL_ERR_INVALID naming the layer. Also the MDL_LAYER_PARAM/MDL_LAYER_ERR
 * macros and the shape helpers the backends' layers share.
 * Deliberately allocates nothing and knows no backend: descriptors, kernels,
 * workspace and buffers stay in runtime/cpu/ and gpu/, and so do the checks
 * that say what one backend does not run. */
#ifndef MDL_RUNTIME_ENGINE_LAYER_GEOM_H
#define MDL_RUNTIME_ENGINE_LAYER_GEOM_H

#include <stdbool.h>
#include <stdint.h>

#include "caffe.pb-c.h"
#include "common/error.h"
#include "runtime/engine/layer.h"

/* A type's parameter message, or a static one holding the schema's defaults
 * when the layer does not set it: MDL_LAYER_PARAM(l, relu_param, Caffe__ReLUParameter,
 * CAFFE__RE_LUPARAMETER__INIT). */
#define MDL_LAYER_PARAM(l, field, Type, INIT)                             \
  ({                                                                      \
    static const Type mdl_default_##field = INIT;                         \
    (l)->lp->field ? (const Type *)(l)->lp->field : &mdl_default_##field; \
  })

/* Reports bad layer parameters with the layer's name and type. */
#define MDL_LAYER_ERR(l, err, ...)                  \
  (mdl_errorf((err), MDL_ERR_INVALID, __VA_ARGS__), \
   mdl_error_prefix((err), "layer \"%s\" (%s): ", (l)->name, (l)->impl->type), MDL_ERR_INVALID)

/* Product of shape axes [a, b) (clamped). */
static inline int64_t mdl_shape_count_axes(const mdl_shape *s, int a, int b) {
  int64_t c = 1;
  if (a < 0) a = 0;
  if (b > s->n) b = s->n;
  for (int i = a; i < b; i++) c *= s->d[i];
  return c;
}

/* Caffe's CanonicalAxisIndex over a shape; -1 when out of range. */
static inline int mdl_shape_axis(const mdl_shape *s, int axis) {
  if (axis < -s->n || axis >= s->n) return -1;
  return axis < 0 ? axis + s->n : axis;
}

/* Every function below reads l and fills *g; on failure it returns
 * MDL_ERR_INVALID with err naming the layer, and *g is partly filled (the
 * caller must not use it). Nothing is allocated. */

/* ---- vision ---------------------------------------------------------------- */

/* Kernel, stride, pad and dilation of a 2-D window (h, w pairs). */
typedef struct mdl_window_geom {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
} mdl_window_geom;

/* Caffe's repeated-or-_h/_w fields of a ConvolutionParameter (Convolution,
 * Deconvolution, Im2col): all positive but pad. */
mdl_status mdl_geom_conv_window(const mdl_layer *l, const Caffe__ConvolutionParameter *p,
                                mdl_window_geom *g, mdl_error *err);

/* Convolution and Deconvolution (l->impl->type says which) over axis 1 of
 * 4-axis blobs. The image side is what im2col reads (a Convolution's bottom,
 * a Deconvolution's top), the column side the other; the weights are
 * (col_ch, im_ch / group, kh, kw) as Caffe, the bias has bcount values (the
 * top's channels; 0 without bias_term). */
typedef struct mdl_convolution_geom {
  bool deconv, bias;
  int64_t num, group;
  mdl_window_geom win;
  int64_t im_ch, im_h, im_w;    /* image side */
  int64_t col_ch, col_h, col_w; /* column side */
  int64_t wcount, bcount;
} mdl_convolution_geom;
mdl_status mdl_geom_conv(const mdl_layer *l, mdl_convolution_geom *g, mdl_error *err);

/* InnerProduct: top (M x N) = bottom (M x K) W^T (+ b); W is N x K, or K x N
 * with transpose. */
typedef struct mdl_ip_geom {
  int64_t M, K, N;
  bool transpose, bias;
} mdl_ip_geom;
mdl_status mdl_geom_ip(const mdl_layer *l, mdl_ip_geom *g, mdl_error *err);

/* Pooling over NCHW planes: the window (global_pooling covers the plane) and
 * the output plane from the shape rule (Caffe's ceil rounding). method is a
 * CAFFE__POOLING_PARAMETER__POOL_METHOD__ value; STOCHASTIC passes here and
 * is the backends' to refuse. */
typedef struct mdl_pool_geom {
  int method;
  int64_t planes, H, W, PH, PW, kh, kw, sh, sw, ph, pw;
} mdl_pool_geom;
mdl_status mdl_geom_pool(const mdl_layer *l, mdl_pool_geom *g, mdl_error *err);

/* LRN over 4-axis input: an odd window of size, pre = (size - 1) / 2 before
 * the centre. */
typedef struct mdl_lrn_geom {
  bool across; /* ACROSS_CHANNELS, else WITHIN_CHANNEL */
  int64_t num, C, H, W, size, pre;
  float alpha, beta, k;
} mdl_lrn_geom;
mdl_status mdl_geom_lrn(const mdl_layer *l, mdl_lrn_geom *g, mdl_error *err);

/* ---- neurons --------------------------------------------------------------- */

/* ReLU's negative slope (0 when relu_param is unset). */
float mdl_geom_relu_slope(const mdl_layer *l);

/* Dropout: unit i is kept when its 32-bit draw is >= thresh, and scaled. */
typedef struct mdl_dropout_geom {
  int64_t count;
  float scale;     /* 1 / (1 - ratio) */
  uint32_t thresh; /* ratio of 2^32 - 1 */
} mdl_dropout_geom;
mdl_status mdl_geom_dropout(const mdl_layer *l, mdl_dropout_geom *g, mdl_error *err);

/* ---- normalisation ------------------------------------------------------- */

/* Softmax (and the softmax of SoftmaxWithLoss): bottom 0 as outer x C x
 * inner around softmax_param.axis. */
typedef struct mdl_softmax_geom {
  int64_t outer, C, inner;
} mdl_softmax_geom;
mdl_status mdl_geom_softmax(const mdl_layer *l, mdl_softmax_geom *g, mdl_error *err);

/* BatchNorm: num x C x inner (C = axis 1, 1 for one-axis input), Caffe's
 * three blobs (mean C, variance C, scale factor 1) checked. global: use the
 * stored statistics (use_global_stats, by default in TEST). */
typedef struct mdl_bn_geom {
  bool global;
  float maf, eps;
  int64_t num, C, inner, count;
} mdl_bn_geom;
mdl_status mdl_geom_bn(const mdl_layer *l, mdl_bn_geom *g, mdl_error *err);

/* Scale (l->impl->type "Scale") and Bias: bottom 0 as outer x D x inner,
 * D the operand's values, the operand being bottom 1 (two_bottom) or the
 * first learned blob. Scale's bias (bias_term) is blob bias_param, -1
 * without. */
typedef struct mdl_scale_geom {
  bool is_scale, two_bottom, bias;
  int bias_param;
  int64_t outer, D, inner, count;
} mdl_scale_geom;
mdl_status mdl_geom_scale(const mdl_layer *l, mdl_scale_geom *g, mdl_error *err);

/* ---- structure ------------------------------------------------------------- */

/* Concat (the big blob is top 0, the parts the bottoms) and Slice (the big
 * blob is bottom 0, the parts the tops): outer x total x inner along the
 * axis (legacy concat_dim/slice_dim honoured). part, when not NULL, gets
 * each part's size along the axis (n entries, the caller's). */
typedef struct mdl_concat_geom {
  int axis, n;
  int64_t outer, inner, total;
} mdl_concat_geom;
mdl_status mdl_geom_concat(const mdl_layer *l, mdl_concat_geom *g, int64_t *part, mdl_error *err);

/* Eltwise: op (a CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__ value) over count
 * floats of equally shaped bottoms; coeff, when not NULL, gets one value per
 * bottom (n_bottom entries, the caller's; 1 unless SUM gives them). */
typedef struct mdl_eltwise_geom {
  int op;
  int64_t count;
} mdl_eltwise_geom;
mdl_status mdl_geom_eltwise(const mdl_layer *l, mdl_eltwise_geom *g, float *coeff, mdl_error *err);

/* ---- losses and metrics ---------------------------------------------------- */

/* Caffe's LossLayer normalisation: the mode from loss_param (legacy
 * `normalize` included; dflt when unset) and the divisor it gives, at least
 * 1; valid < 0 means "no count kept". */
int mdl_geom_loss_norm_mode(const mdl_layer *l, int dflt);
double mdl_geom_loss_normalizer(int mode, int64_t outer, int64_t inner, int64_t valid);
/* loss_param's ignore_label: true with *label set when there is one. */
bool mdl_geom_loss_ignore(const mdl_layer *l, int *label);

/* SoftmaxWithLoss: the softmax's outer x C x inner, one label per outer x
 * inner position, the normalisation (VALID by default) and ignore_label. */
typedef struct mdl_softmax_loss_geom {
  int64_t outer, C, inner;
  int mode;
  bool ignore;
  int ignore_label; /* 0 without ignore */
} mdl_softmax_loss_geom;
mdl_status mdl_geom_softmax_loss(const mdl_layer *l, mdl_softmax_loss_geom *g, mdl_error *err);

/* Accuracy: predictions outer x C x inner around accuracy_param.axis, one
 * label per outer x inner position, 1 <= top_k <= C. */
typedef struct mdl_accuracy_geom {
  int64_t outer, C, inner, top_k;
  bool ignore;
  int ignore_label;
} mdl_accuracy_geom;
mdl_status mdl_geom_accuracy(const mdl_layer *l, mdl_accuracy_geom *g, mdl_error *err);

#endif
