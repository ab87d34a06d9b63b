/* Internal to the GPU backend: the layer implementations cuda_layers.c
 * lists in its table (one file per family, as runtime/cpu/ has them), and
 * the helpers those files share. Not a public API.
 * Convolution, LRN and Softmax run through cuDNN, InnerProduct through
 * cuBLAS, our own kernels (kernels_*.cu) where Caffe's semantics differ
 * from cuDNN's (pooling's ceil rounding and AVE divisor, ReLU's negative
 * slope, Dropout's counter-based draws, BatchNorm's three blobs) and for
 * the rest. Shapes come from the compiler's rules (l->top_shape);
 * parameters are checked here as runtime/cpu/ checks them. forward and
 * backward cannot fail: a failing call is recorded in the device context
 * and reported by the backend's sync. */
#ifndef MDL_GPU_LAYERS_GPU_H
#define MDL_GPU_LAYERS_GPU_H

#include <limits.h>
#include <stdint.h>

#include "gpu/gpu_internal.h"
#include "gpu/kernels.h"

/* A type's parameter message, or the schema's defaults. */
#define PARAM(l, field, Type, INIT)                                       \
  ({                                                                      \
    static const Type mdl_default_##field = INIT;                         \
    (l)->lp->field ? (const Type *)(l)->lp->field : &mdl_default_##field; \
  })

#define LAYER_ERR(l, err, ...)                      \
  (mdl_errorf((err), MDL_ERR_INVALID, __VA_ARGS__), \
   mdl_error_prefix((err), "layer \"%s\" (%s): ", (l)->name, (l)->impl->type), MDL_ERR_INVALID)

#define G(l) mdl_gpu_of(l)
#define S(l) (mdl_gpu_of(l)->stream)

static const float ONE = 1.f, ZERO = 0.f;

static inline int64_t shape_count(const mdl_shape *s, int a, int b) {
  int64_t c = 1;
  if (a < 0) a = 0;
  if (b > s->n) b = s->n;
  for (int i = a; i < b; i++) c *= s->d[i];
  return c;
}

static inline int shape_axis(const mdl_shape *s, int axis) {
  if (axis < -s->n || axis >= s->n) return -1;
  return axis < 0 ? axis + s->n : axis;
}

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
  return shape_count(s, 0, s->n) < INT_MAX;
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
