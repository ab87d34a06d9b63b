/* Internal to the GPU backend: the layer implementations cuda_layers.c
 * lists in its table (one file per family, as runtime/cpu/ has them), and
 * the helpers those files share. Not a public API.
 * Convolution, LRN and Softmax run through cuDNN, InnerProduct through
 * cuBLAS, our own kernels (kernels_*.cu) where Caffe's semantics differ
 * from cuDNN's (pooling's ceil rounding and AVE divisor, ReLU's negative
 * slope, Dropout's counter-based draws, BatchNorm's three blobs) and for
 * the rest. Shapes come from the compiler's rules (l->top_shape); what the
 * parameters mean, and their checks, from runtime/engine/layer_geom.h as
 * runtime/cpu/ has them, so only what the GPU does not run is refused
 * here. forward and
 * backward cannot fail: a failing call is recorded in the device context
 * and reported by the backend's sync. */
#ifndef MDL_GPU_LAYERS_GPU_H
#define MDL_GPU_LAYERS_GPU_H

#include <limits.h>
#include <stdint.h>

#include "gpu/gpu_internal.h"
#include "gpu/kernels.h"
#include "runtime/engine/layer_geom.h" /* MDL_LAYER_PARAM, MDL_LAYER_ERR, mdl_shape_count_axes, the checks */

#define G(l) mdl_gpu_of(l)
#define S(l) (mdl_gpu_of(l)->stream)

static const float ONE = 1.f, ZERO = 0.f;

static inline void copy_d2d(mdl_layer *l, float *dst, const float *src, int64_t n) {
  if (dst != src && n > 0)
    MDL_CUDA_TRY(
        G(l), cudaMemcpyAsync(dst, src, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice, S(l)));
}

/* An NCHW float descriptor (cuDNN takes int dimensions). */
static inline bool tensor_desc(mdl_gpu *g, cudnnTensorDescriptor_t *d, int64_t n, int64_t c,
                               int64_t h, int64_t w) {
  return MDL_CUDNN_TRY(g, cudnnCreateTensorDescriptor(d)) &&
         MDL_CUDNN_TRY(g, cudnnSetTensor4dDescriptor(*d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                                     (int)n, (int)c, (int)h, (int)w));
}

static inline bool fits_int(const mdl_shape *s) {
  return mdl_shape_count_axes(s, 0, s->n) < INT_MAX;
}

/* layers_vision.c */
extern const mdl_layer_impl mdl_gpu_deconv_layer, mdl_gpu_conv_layer, mdl_gpu_ip_layer,
    mdl_gpu_pool_layer, mdl_gpu_lrn_layer;
/* layers_neuron.c */
extern const mdl_layer_impl mdl_gpu_relu_layer, mdl_gpu_sigmoid_layer, mdl_gpu_tanh_layer,
    mdl_gpu_dropout_layer;
/* layers_loss.c */
extern const mdl_layer_impl mdl_gpu_softmax_layer, mdl_gpu_swl_layer, mdl_gpu_accuracy_layer;
/* layers_struct.c */
extern const mdl_layer_impl mdl_gpu_input_layer, mdl_gpu_split_layer, mdl_gpu_flatten_layer,
    mdl_gpu_reshape_layer, mdl_gpu_silence_layer, mdl_gpu_eltwise_layer, mdl_gpu_concat_layer;
/* layers_norm.c */
extern const mdl_layer_impl mdl_gpu_bn_layer, mdl_gpu_scale_layer;

#endif
