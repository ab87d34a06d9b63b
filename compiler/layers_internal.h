/* Helpers shared by the shape rules in layers_shape_*.c, and the rules'
 * declarations for the table in layers.c. Not a public interface. */
#ifndef MDL_COMPILER_LAYERS_INTERNAL_H
#define MDL_COMPILER_LAYERS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "compiler/layers.h"

/* Records `layer "name" (Type): <fmt>` as MDL_ERR_INVALID. */
mdl_status mdl_lfail(const mdl_shape_args *a, mdl_error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The user's name of bottom i, for messages. */
const char *mdl_lbottom(const mdl_shape_args *a, int i);

/* Shape as text in a rotating static buffer (valid for a few calls; for
 * building one message). */
const char *mdl_lstr(const mdl_shape *s);

/* Caffe's Blob::CanonicalAxisIndex on bottom b: axis in [-n, n) made
 * non-negative; otherwise an error naming field and the bottom's shape. */
mdl_status mdl_laxis(const mdl_shape_args *a, int b, int32_t axis, const char *field, int *out,
                     mdl_error *err);

/* Product of axes [start, end) of s (1 when empty). */
int64_t mdl_lcount(const mdl_shape *s, int start, int end);

/* Caffe's Blob::LegacyShape: for blobs of at most 4 axes, axis index (may be
 * negative) or 1 when it does not exist; error when s has more than 4 axes. */
mdl_status mdl_llegacy(const mdl_shape_args *a, int b, int index, int64_t *out, mdl_error *err);

/* Error unless bottom b has between min and max axes (max -1: no limit). */
mdl_status mdl_laxes(const mdl_shape_args *a, int b, int min, int max, mdl_error *err);

/* Error unless bottoms i and j have the same shape. */
mdl_status mdl_lsame(const mdl_shape_args *a, int i, int j, mdl_error *err);

/* Appends one axis; error when MDL_MAX_AXES would be exceeded. */
mdl_status mdl_lpush(const mdl_shape_args *a, mdl_shape *s, int64_t d, mdl_error *err);

/* Converts a BlobShape (field names it in messages); error on negative dims
 * or too many axes. NULL bs is the empty shape. */
mdl_status mdl_lblobshape(const mdl_shape_args *a, const Caffe__BlobShape *bs, const char *field,
                          mdl_shape *out, mdl_error *err);

/* Shape rules, one per layer family (see the table in layers.c). */
/* layers_shape_data.c */
mdl_status mdl_shape_input(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_dummy_data(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_memory_data(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_data(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_image_data(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_hdf5_data(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_window_data(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_parameter(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_python(mdl_shape_args *a, mdl_error *err);
/* layers_shape_vision.c */
mdl_status mdl_shape_convolution(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_deconvolution(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_im2col(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_pooling(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_spp(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_lrn(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_crop(mdl_shape_args *a, mdl_error *err);
/* layers_shape_common.c */
mdl_status mdl_shape_neuron(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_dropout(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_exp_log(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_prelu(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_inner_product(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_embed(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_batch_norm(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_scale(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_bias(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_eltwise(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_softmax(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_mvn(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_argmax(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_silence(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_hdf5_output(mdl_shape_args *a, mdl_error *err);
/* layers_shape_axes.c */
mdl_status mdl_shape_concat(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_slice(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_split(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_flatten(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_reshape(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_tile(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_reduction(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_filter(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_batch_reindex(mdl_shape_args *a, mdl_error *err);
/* layers_shape_loss.c */
mdl_status mdl_shape_softmax_loss(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_euclidean_loss(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_sigmoid_ce_loss(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_contrastive_loss(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_hinge_loss(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_infogain_loss(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_multinomial_loss(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_accuracy(mdl_shape_args *a, mdl_error *err);
/* layers_shape_recurrent.c */
mdl_status mdl_shape_rnn(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_lstm(mdl_shape_args *a, mdl_error *err);
mdl_status mdl_shape_lstm_unit(mdl_shape_args *a, mdl_error *err);

#endif
