/* The layer table and the helpers every shape rule shares (axis handling,
 * count checks, messages). The rules themselves live in layers_shape_*.c;
 * nothing here knows a particular layer's parameters. */
#include "compiler/layers.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "compiler/layers_internal.h"

#define V1(x) CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__##x
#define LABEL (1u << 1)

/* Counts follow Caffe 1.0's Exact/Min/MaxNum{Bottom,Top}Blobs; where they
 * depend on parameters (Convolution's equal counts, Pooling's mask top,
 * Filter, RNN/LSTM) the rule checks the rest. Alphabetical by type. */
static const mdl_layer_def k_layers[] = {
    /* type, v1, min_b, max_b, min_t, max_t, loss, in_place, no_grad, shape */
    {"AbsVal", V1(ABSVAL), 1, 1, 1, 1, false, true, 0, mdl_shape_neuron},
    {"Accuracy", V1(ACCURACY), 2, 2, 1, 2, false, false, 3u, mdl_shape_accuracy},
    {"ArgMax", V1(ARGMAX), 1, 1, 1, 1, false, false, 1u, mdl_shape_argmax},
    {"BNLL", V1(BNLL), 1, 1, 1, 1, false, true, 0, mdl_shape_neuron},
    {"BatchNorm", -1, 1, 1, 1, 1, false, true, 0, mdl_shape_batch_norm},
    {"BatchReindex", -1, 2, 2, 1, 1, false, false, LABEL, mdl_shape_batch_reindex},
    {"Bias", -1, 1, 2, 1, 1, false, true, 0, mdl_shape_bias},
    {"Clip", -1, 1, 1, 1, 1, false, true, 0, mdl_shape_neuron},
    {"Concat", V1(CONCAT), 1, -1, 1, 1, false, false, 0, mdl_shape_concat},
    {"ContrastiveLoss", V1(CONTRASTIVE_LOSS), 3, 3, 1, 1, true, false, 1u << 2,
     mdl_shape_contrastive_loss},
    {"Convolution", V1(CONVOLUTION), 1, -1, 1, -1, false, false, 0, mdl_shape_convolution},
    {"Crop", -1, 2, 2, 1, 1, false, false, LABEL, mdl_shape_crop},
    {"Data", V1(DATA), 0, 0, 1, 2, false, false, 0, mdl_shape_data},
    {"Deconvolution", V1(DECONVOLUTION), 1, -1, 1, -1, false, false, 0, mdl_shape_deconvolution},
    {"Dropout", V1(DROPOUT), 1, 1, 1, 1, false, true, 0, mdl_shape_dropout},
    {"DummyData", V1(DUMMY_DATA), 0, 0, 1, -1, false, false, 0, mdl_shape_dummy_data},
    {"ELU", -1, 1, 1, 1, 1, false, true, 0, mdl_shape_neuron},
    {"Eltwise", V1(ELTWISE), 2, -1, 1, 1, false, false, 0, mdl_shape_eltwise},
    {"Embed", -1, 1, 1, 1, 1, false, false, 1u, mdl_shape_embed},
    {"EuclideanLoss", V1(EUCLIDEAN_LOSS), 2, 2, 1, 1, true, false, 0, mdl_shape_euclidean_loss},
    {"Exp", V1(EXP), 1, 1, 1, 1, false, true, 0, mdl_shape_exp_log},
    {"Filter", -1, 2, -1, 1, -1, false, false, 0, mdl_shape_filter},
    {"Flatten", V1(FLATTEN), 1, 1, 1, 1, false, false, 0, mdl_shape_flatten},
    {"HDF5Data", V1(HDF5_DATA), 0, 0, 1, -1, false, false, 0, mdl_shape_hdf5_data},
    {"HDF5Output", V1(HDF5_OUTPUT), 2, 2, 0, 0, false, false, 0, mdl_shape_hdf5_output},
    {"HingeLoss", V1(HINGE_LOSS), 2, 2, 1, 1, true, false, LABEL, mdl_shape_hinge_loss},
    {"Im2col", V1(IM2COL), 1, 1, 1, 1, false, false, 0, mdl_shape_im2col},
    {"ImageData", V1(IMAGE_DATA), 0, 0, 2, 2, false, false, 0, mdl_shape_image_data},
    {"InfogainLoss", V1(INFOGAIN_LOSS), 2, 3, 1, 2, true, false, LABEL | (1u << 2),
     mdl_shape_infogain_loss},
    {"InnerProduct", V1(INNER_PRODUCT), 1, 1, 1, 1, false, false, 0, mdl_shape_inner_product},
    {"Input", -1, 0, 0, 1, -1, false, false, 0, mdl_shape_input},
    {"LRN", V1(LRN), 1, 1, 1, 1, false, false, 0, mdl_shape_lrn},
    {"LSTM", -1, 2, 5, 1, 3, false, false, 1u << 1, mdl_shape_lstm},
    {"LSTMUnit", -1, 3, 3, 2, 2, false, false, 1u << 2, mdl_shape_lstm_unit},
    {"Log", -1, 1, 1, 1, 1, false, true, 0, mdl_shape_exp_log},
    {"MVN", V1(MVN), 1, 1, 1, 1, false, true, 0, mdl_shape_mvn},
    {"MemoryData", V1(MEMORY_DATA), 0, 0, 2, 2, false, false, 0, mdl_shape_memory_data},
    {"MultinomialLogisticLoss", V1(MULTINOMIAL_LOGISTIC_LOSS), 2, 2, 1, 1, true, false, LABEL,
     mdl_shape_multinomial_loss},
    {"PReLU", -1, 1, 1, 1, 1, false, true, 0, mdl_shape_prelu},
    {"Parameter", -1, 0, 0, 1, 1, false, false, 0, mdl_shape_parameter},
    {"Pooling", V1(POOLING), 1, 1, 1, 2, false, false, 0, mdl_shape_pooling},
    {"Power", V1(POWER), 1, 1, 1, 1, false, true, 0, mdl_shape_neuron},
    {"Python", -1, 0, -1, 0, -1, false, false, 0, mdl_shape_python},
    {"RNN", -1, 2, 4, 1, 2, false, false, 1u << 1, mdl_shape_rnn},
    {"ReLU", V1(RELU), 1, 1, 1, 1, false, true, 0, mdl_shape_neuron},
    {"Reduction", -1, 1, 1, 1, 1, false, false, 0, mdl_shape_reduction},
    {"Reshape", -1, 1, 1, 1, 1, false, false, 0, mdl_shape_reshape},
    {"SPP", -1, 1, 1, 1, 1, false, false, 0, mdl_shape_spp},
    {"Scale", -1, 1, 2, 1, 1, false, true, 0, mdl_shape_scale},
    {"Sigmoid", V1(SIGMOID), 1, 1, 1, 1, false, true, 0, mdl_shape_neuron},
    {"SigmoidCrossEntropyLoss", V1(SIGMOID_CROSS_ENTROPY_LOSS), 2, 2, 1, 1, true, false, LABEL,
     mdl_shape_sigmoid_ce_loss},
    {"Silence", V1(SILENCE), 1, -1, 0, 0, false, false, 0, mdl_shape_silence},
    {"Slice", V1(SLICE), 1, 1, 1, -1, false, false, 0, mdl_shape_slice},
    {"Softmax", V1(SOFTMAX), 1, 1, 1, 1, false, true, 0, mdl_shape_softmax},
    {"SoftmaxWithLoss", V1(SOFTMAX_LOSS), 2, 2, 1, 2, true, false, LABEL, mdl_shape_softmax_loss},
    {"Split", V1(SPLIT), 1, 1, 1, -1, false, false, 0, mdl_shape_split},
    {"Swish", -1, 1, 1, 1, 1, false, true, 0, mdl_shape_neuron},
    {"TanH", V1(TANH), 1, 1, 1, 1, false, true, 0, mdl_shape_neuron},
    {"Threshold", V1(THRESHOLD), 1, 1, 1, 1, false, true, 0, mdl_shape_neuron},
    {"Tile", -1, 1, 1, 1, 1, false, false, 0, mdl_shape_tile},
    {"WindowData", V1(WINDOW_DATA), 0, 0, 2, 2, false, false, 0, mdl_shape_window_data},
};

const mdl_layer_def *mdl_layer_table(size_t *n) {
  if (n) *n = sizeof k_layers / sizeof k_layers[0];
  return k_layers;
}

const mdl_layer_def *mdl_layer_find(const char *type) {
  if (!type) return NULL;
  for (size_t i = 0; i < sizeof k_layers / sizeof k_layers[0]; i++)
    if (strcmp(k_layers[i].type, type) == 0) return &k_layers[i];
  return NULL;
}

const mdl_layer_def *mdl_layer_find_v1(int v1_type) {
  if (v1_type < 0) return NULL;
  for (size_t i = 0; i < sizeof k_layers / sizeof k_layers[0]; i++)
    if (k_layers[i].v1_type == v1_type) return &k_layers[i];
  return NULL;
}

const char *mdl_layer_unsupported_reason(const char *type) {
  static const struct {
    const char *type, *why;
  } k_unsupported[] = {
      {"Python",
       "it runs user Python code (python_param) and memdl embeds no Python interpreter; port the "
       "layer to C, or compute its output beforehand and read it with HDF5Data"},
      {"WindowData",
       "R-CNN window files are not a memdl data source; crop the windows into an image list "
       "(ImageData) or an LMDB (Data) beforehand"},
  };
  for (size_t i = 0; type && i < sizeof k_unsupported / sizeof *k_unsupported; i++)
    if (!strcmp(type, k_unsupported[i].type)) return k_unsupported[i].why;
  return NULL;
}

static mdl_status check_count(const mdl_shape_args *a, const char *what, int got, int min, int max,
                              mdl_error *err) {
  if (got >= min && (max < 0 || got <= max)) return MDL_OK;
  if (min == max && min == 0) return mdl_lfail(a, err, "takes no %ss, got %d", what, got);
  if (min == max)
    return mdl_lfail(a, err, "takes exactly %d %s%s, got %d", min, what, min == 1 ? "" : "s", got);
  if (max < 0)
    return mdl_lfail(a, err, "takes at least %d %s%s, got %d", min, what, min == 1 ? "" : "s", got);
  return mdl_lfail(a, err, "takes %d to %d %ss, got %d", min, max, what, got);
}

mdl_status mdl_layer_shape(const mdl_layer_def *def, mdl_shape_args *a, mdl_error *err) {
  mdl_status st = check_count(a, "bottom", a->n_bottom, def->min_bottom, def->max_bottom, err);
  if (st != MDL_OK) return st;
  st = check_count(a, "top", a->n_top, def->min_top, def->max_top, err);
  if (st != MDL_OK) return st;
  a->n_param = 0;
  for (int i = 0; i < a->n_top; i++) a->top[i].n = 0;
  return def->shape(a, err);
}

/* ---- helpers shared by the rules ---- */

mdl_status mdl_lfail(const mdl_shape_args *a, mdl_error *err, const char *fmt, ...) {
  char msg[MDL_ERROR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *name = a->lp && a->lp->name ? a->lp->name : "";
  const char *type = a->lp && a->lp->type ? a->lp->type : "";
  return mdl_errorf(err, MDL_ERR_INVALID, "layer \"%s\" (%s): %s", name, type, msg);
}

const char *mdl_lbottom(const mdl_shape_args *a, int i) {
  if (a->bottom_name && a->bottom_name[i]) return a->bottom_name[i];
  if (a->lp && (size_t)i < a->lp->n_bottom && a->lp->bottom[i]) return a->lp->bottom[i];
  return "?";
}

const char *mdl_lstr(const mdl_shape *s) {
  static _Thread_local char bufs[6][160];
  static _Thread_local int next;
  char *b = bufs[next];
  next = (next + 1) % 6;
  return mdl_shape_str(s, b, sizeof bufs[0]);
}

mdl_status mdl_laxis(const mdl_shape_args *a, int b, int32_t axis, const char *field, int *out,
                     mdl_error *err) {
  const mdl_shape *s = &a->bottom[b];
  if (axis < -s->n || axis >= s->n)
    return mdl_lfail(a, err, "%s %d is out of range for bottom \"%s\" (%s, %d axes)", field,
                     (int)axis, mdl_lbottom(a, b), mdl_lstr(s), s->n);
  *out = axis < 0 ? axis + s->n : axis;
  return MDL_OK;
}

int64_t mdl_lcount(const mdl_shape *s, int start, int end) {
  int64_t c = 1;
  for (int i = start; i < end && i < s->n; i++) c *= s->d[i];
  return c;
}

mdl_status mdl_llegacy(const mdl_shape_args *a, int b, int index, int64_t *out, mdl_error *err) {
  const mdl_shape *s = &a->bottom[b];
  if (s->n > 4)
    return mdl_lfail(a, err, "bottom \"%s\" is %s (%d axes) but this layer takes at most 4 axes",
                     mdl_lbottom(a, b), mdl_lstr(s), s->n);
  if (index >= s->n || index < -s->n) {
    *out = 1;
  } else {
    *out = s->d[index < 0 ? index + s->n : index];
  }
  return MDL_OK;
}

mdl_status mdl_laxes(const mdl_shape_args *a, int b, int min, int max, mdl_error *err) {
  const mdl_shape *s = &a->bottom[b];
  if (s->n >= min && (max < 0 || s->n <= max)) return MDL_OK;
  char want[64];
  if (min == max)
    snprintf(want, sizeof want, "%d", min);
  else if (max < 0)
    snprintf(want, sizeof want, "at least %d", min);
  else
    snprintf(want, sizeof want, "%d to %d", min, max);
  return mdl_lfail(a, err, "bottom \"%s\" has %d axes (%s), expected %s", mdl_lbottom(a, b), s->n,
                   mdl_lstr(s), want);
}

mdl_status mdl_lsame(const mdl_shape_args *a, int i, int j, mdl_error *err) {
  if (mdl_shape_eq(&a->bottom[i], &a->bottom[j])) return MDL_OK;
  return mdl_lfail(a, err, "bottom \"%s\" is %s but bottom \"%s\" is %s", mdl_lbottom(a, i),
                   mdl_lstr(&a->bottom[i]), mdl_lbottom(a, j), mdl_lstr(&a->bottom[j]));
}

mdl_status mdl_lpush(const mdl_shape_args *a, mdl_shape *s, int64_t d, mdl_error *err) {
  if (s->n >= MDL_MAX_AXES)
    return mdl_lfail(a, err, "a top would have more than %d axes", MDL_MAX_AXES);
  s->d[s->n++] = d;
  return MDL_OK;
}

mdl_status mdl_lblobshape(const mdl_shape_args *a, const Caffe__BlobShape *bs, const char *field,
                          mdl_shape *out, mdl_error *err) {
  size_t n = bs ? bs->n_dim : 0;
  if (n > MDL_MAX_AXES)
    return mdl_lfail(a, err, "%s has %zu axes; at most %d are supported", field, n, MDL_MAX_AXES);
  out->n = (int)n;
  for (size_t i = 0; i < n; i++) {
    if (bs->dim[i] < 0)
      return mdl_lfail(a, err, "%s dim %zu is %lld; dims must be >= 0", field, i,
                       (long long)bs->dim[i]);
    out->d[i] = bs->dim[i];
  }
  return MDL_OK;
}
