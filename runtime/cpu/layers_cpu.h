/* Internal to the CPU backend: the layer implementations cpu_backend.c lists
 * in its table, and helpers the layers_*.c files share. Not a public API. */
#ifndef MDL_RUNTIME_CPU_LAYERS_CPU_H
#define MDL_RUNTIME_CPU_LAYERS_CPU_H

#include "runtime/cpu/cpu_math.h"
#include "runtime/engine/layer.h"
#include "runtime/engine/layer_geom.h" /* MDL_LAYER_PARAM, MDL_LAYER_ERR, mdl_shape_count_axes, the checks */

extern const mdl_layer_impl mdl_cpu_input_layer, mdl_cpu_dummy_data_layer;
extern const mdl_layer_impl mdl_cpu_conv_layer, mdl_cpu_deconv_layer, mdl_cpu_pool_layer,
    mdl_cpu_inner_product_layer, mdl_cpu_embed_layer;
extern const mdl_layer_impl mdl_cpu_relu_layer, mdl_cpu_prelu_layer, mdl_cpu_elu_layer,
    mdl_cpu_sigmoid_layer, mdl_cpu_tanh_layer, mdl_cpu_power_layer, mdl_cpu_exp_layer,
    mdl_cpu_log_layer, mdl_cpu_absval_layer, mdl_cpu_bnll_layer, mdl_cpu_threshold_layer,
    mdl_cpu_dropout_layer;
extern const mdl_layer_impl mdl_cpu_lrn_layer, mdl_cpu_batch_norm_layer, mdl_cpu_mvn_layer,
    mdl_cpu_scale_layer, mdl_cpu_bias_layer, mdl_cpu_softmax_layer;
extern const mdl_layer_impl mdl_cpu_eltwise_layer, mdl_cpu_concat_layer, mdl_cpu_slice_layer,
    mdl_cpu_split_layer, mdl_cpu_flatten_layer, mdl_cpu_reshape_layer, mdl_cpu_silence_layer,
    mdl_cpu_crop_layer, mdl_cpu_tile_layer, mdl_cpu_reduction_layer, mdl_cpu_argmax_layer;
extern const mdl_layer_impl mdl_cpu_softmax_loss_layer, mdl_cpu_accuracy_layer,
    mdl_cpu_euclidean_loss_layer, mdl_cpu_sigmoid_ce_loss_layer, mdl_cpu_contrastive_loss_layer,
    mdl_cpu_hinge_loss_layer;
/* layers_misc.c, layers_spp.c, layers_loss_prob.c, layers_recurrent.c,
 * layers_hdf5_output.c */
extern const mdl_layer_impl mdl_cpu_swish_layer, mdl_cpu_clip_layer, mdl_cpu_parameter_layer,
    mdl_cpu_batch_reindex_layer, mdl_cpu_filter_layer, mdl_cpu_im2col_layer, mdl_cpu_spp_layer;
extern const mdl_layer_impl mdl_cpu_multinomial_loss_layer, mdl_cpu_infogain_loss_layer;
extern const mdl_layer_impl mdl_cpu_lstm_unit_layer, mdl_cpu_lstm_layer, mdl_cpu_rnn_layer;
extern const mdl_layer_impl mdl_cpu_hdf5_output_layer;

/* oneDNN direct convolution (layers_conv_dnnl.c): NCHW in and out, weights
 * (M, C/G, kh, kw) as Caffe; dilation as Caffe (1 = dense). */
typedef struct mdl_dnnl_conv_spec {
  int64_t N, C, H, W, M, OH, OW, G, kh, kw, sh, sw, ph, pw, dh, dw;
  bool bias, training; /* training: backward primitives too */
  int nt;              /* slices the batch is cut into (MDL_PAR_CHUNKS, not the pool size) */
} mdl_dnnl_conv_spec;
typedef struct mdl_dnnl_conv mdl_dnnl_conv;
/* NULL when oneDNN cannot run this convolution or MDL_CONV=im2col. Pins
 * OpenMP to one thread on the calling thread (oneDNN plans per thread). */
mdl_dnnl_conv *mdl_dnnl_conv_new(const mdl_dnnl_conv_spec *s);
void mdl_dnnl_conv_free(mdl_dnnl_conv *c);
/* Bytes of scratch forward and backward need in ws (the layer reserves them
 * in the net's shared workspace; contents need not survive between calls). */
size_t mdl_dnnl_conv_ws_bytes(const mdl_dnnl_conv *c);
void mdl_dnnl_conv_forward(mdl_dnnl_conv *c, mdl_threadpool *pool, void *ws, const float *x,
                           const float *w, const float *b, float *y);
/* dx (written), dw and db (accumulated) may be NULL; x is the forward's input. */
void mdl_dnnl_conv_backward(mdl_dnnl_conv *c, mdl_threadpool *pool, void *ws, const float *x,
                            const float *w, const float *dy, float *dx, float *dw, float *db);

/* One pooling over planes of H x W (layers_pool.c), shared with SPP: the
 * geometry (Pooling's from mdl_geom_pool, SPP's per level; g.method MAX or
 * AVE), MAX keeps its argmax in mask (out_count int32s, the owner allocates
 * it), AVE divides by the window clipped to input + pad. */
typedef struct mdl_cpu_pool {
  mdl_pool_geom g;
  int32_t *mask; /* MAX: flat argmax in the input plane, per output */
  int64_t out_count;
} mdl_cpu_pool;
/* x: planes x H x W -> y: planes x PH x PW; mask_top (floats) may be NULL. */
void mdl_cpu_pool_forward(mdl_threadpool *pool, mdl_cpu_pool *pp, const float *x, float *y,
                          float *mask_top);
/* dx (planes x H x W) is overwritten from dy, after a forward (MAX's mask). */
void mdl_cpu_pool_backward(mdl_threadpool *pool, const mdl_cpu_pool *pp, const float *dy,
                           float *dx);

/* im2col's geometry of one image from a convolution's window and its image
 * and column sides (layers_conv.c; Convolution, Deconvolution, Im2col). */
mdl_conv_geom mdl_cpu_im2col_geom(const mdl_window_geom *w, int64_t ch, int64_t h, int64_t wd,
                                  int64_t out_h, int64_t out_w);

/* Softmax over axis C of an outer x C x inner array (layers_norm.c). */
void mdl_cpu_softmax(int64_t outer, int64_t C, int64_t inner, const float *x, float *y);

/* A pointer to the start of a per-thread slice of the workspace. */
static inline float *ws_floats(const mdl_layer *l, size_t float_offset) {
  return (float *)l->ctx.ws->data + float_offset;
}

/* Rounds a float count up to whole 64-byte lines. */
static inline size_t ws_round(size_t floats) {
  return (floats + 15) / 16 * 16;
}

/* Grain (elements per task) for cheap element-wise loops: a fork-join costs
 * ~15 us of wake-up latency, so smaller loops run on the calling thread. */
#define EW_GRAIN 65536

#endif
