/* The GPU's layer table (the layers are in layers_*.c, see layers_gpu.h)
 * and the parameters it does not run, said by mdl_gpu_supports_layer so
 * device resolution can name them. */
#include <stdio.h>
#include <string.h>

#include "gpu/layers_gpu.h"

/* ---- the table and what it does not run ------------------------------------ */

const mdl_layer_impl *const mdl_gpu_impls[] = {
    &mdl_gpu_input_layer,   &mdl_gpu_conv_layer,    &mdl_gpu_pool_layer,    &mdl_gpu_ip_layer,
    &mdl_gpu_relu_layer,    &mdl_gpu_sigmoid_layer, &mdl_gpu_tanh_layer,    &mdl_gpu_dropout_layer,
    &mdl_gpu_lrn_layer,     &mdl_gpu_softmax_layer, &mdl_gpu_swl_layer,     &mdl_gpu_accuracy_layer,
    &mdl_gpu_split_layer,   &mdl_gpu_flatten_layer, &mdl_gpu_reshape_layer, &mdl_gpu_silence_layer,
    &mdl_gpu_eltwise_layer, &mdl_gpu_concat_layer,  &mdl_gpu_bn_layer,      &mdl_gpu_scale_layer,
    &mdl_gpu_deconv_layer,
};
const size_t mdl_gpu_n_impls = sizeof mdl_gpu_impls / sizeof mdl_gpu_impls[0];

static bool is(const Caffe__LayerParameter *lp, const char *type) {
  return lp->type && strcmp(lp->type, type) == 0;
}

/* Called after the type was found in the table: parameters this backend
 * does not run. */
bool mdl_gpu_supports_layer(void *ctx, const Caffe__LayerParameter *lp, char *why,
                            size_t why_size) {
  (void)ctx;
  const char *no = NULL;
  if (is(lp, "Pooling") && lp->pooling_param &&
      lp->pooling_param->pool == CAFFE__POOLING_PARAMETER__POOL_METHOD__STOCHASTIC)
    no = "STOCHASTIC pooling";
  else if (is(lp, "Pooling") && lp->n_top > 1)
    no = "Pooling's mask top";
  else if (is(lp, "LRN") && lp->lrn_param &&
           lp->lrn_param->norm_region == CAFFE__LRNPARAMETER__NORM_REGION__WITHIN_CHANNEL)
    no = "LRN WITHIN_CHANNEL";
  else if (is(lp, "LRN") && lp->lrn_param &&
           (lp->lrn_param->local_size < 1 || lp->lrn_param->local_size > 16))
    no = "LRN local_size outside cuDNN's 1..16";
  else if (is(lp, "LRN") && lp->n_top && lp->n_bottom && lp->top[0] && lp->bottom[0] &&
           strcmp(lp->top[0], lp->bottom[0]) == 0)
    no = "LRN in place (backward needs its input)";
  else if ((is(lp, "Convolution") || is(lp, "Deconvolution")) && lp->n_bottom != 1)
    no = "Convolution with several bottoms";
  else if (is(lp, "Scale") && lp->n_bottom > 1)
    no = "Scale with a second bottom";
  else if (is(lp, "Accuracy") && lp->n_top > 1)
    no = "Accuracy's per-class top";
  else if (is(lp, "Eltwise") && lp->n_bottom > MDL_GK_MAX_ELT)
    no = "Eltwise with more than 8 bottoms";
  if (!no) return true;
  snprintf(why, why_size, "%s does not run on the GPU", no);
  return false;
}
