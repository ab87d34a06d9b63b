/* The CPU backend's interface: host buffers, the explicit layer table,
 * reductions from cpu_math (fixed chunks, so sums do not depend on the
 * thread count) and the solver step. */
#include "runtime/cpu/cpu_backend.h"

#include <string.h>

#include "runtime/cpu/cpu_math.h"
#include "runtime/cpu/layers_cpu.h"

/* ---- the layer table: explicit, so static links keep every entry ------- */

static const mdl_layer_impl *const cpu_impls[] = {
    /* data-less sources */
    &mdl_cpu_input_layer,
    &mdl_cpu_dummy_data_layer,
    /* vision */
    &mdl_cpu_conv_layer,
    &mdl_cpu_deconv_layer,
    &mdl_cpu_pool_layer,
    &mdl_cpu_inner_product_layer,
    &mdl_cpu_embed_layer,
    &mdl_cpu_im2col_layer,
    &mdl_cpu_spp_layer,
    /* neurons */
    &mdl_cpu_relu_layer,
    &mdl_cpu_prelu_layer,
    &mdl_cpu_elu_layer,
    &mdl_cpu_sigmoid_layer,
    &mdl_cpu_tanh_layer,
    &mdl_cpu_power_layer,
    &mdl_cpu_exp_layer,
    &mdl_cpu_log_layer,
    &mdl_cpu_absval_layer,
    &mdl_cpu_bnll_layer,
    &mdl_cpu_threshold_layer,
    &mdl_cpu_dropout_layer,
    &mdl_cpu_swish_layer,
    &mdl_cpu_clip_layer,
    /* normalisation */
    &mdl_cpu_lrn_layer,
    &mdl_cpu_batch_norm_layer,
    &mdl_cpu_mvn_layer,
    &mdl_cpu_scale_layer,
    &mdl_cpu_bias_layer,
    &mdl_cpu_softmax_layer,
    /* structure */
    &mdl_cpu_eltwise_layer,
    &mdl_cpu_concat_layer,
    &mdl_cpu_slice_layer,
    &mdl_cpu_split_layer,
    &mdl_cpu_flatten_layer,
    &mdl_cpu_reshape_layer,
    &mdl_cpu_silence_layer,
    &mdl_cpu_crop_layer,
    &mdl_cpu_tile_layer,
    &mdl_cpu_reduction_layer,
    &mdl_cpu_argmax_layer,
    &mdl_cpu_parameter_layer,
    &mdl_cpu_batch_reindex_layer,
    &mdl_cpu_filter_layer,
    /* recurrent */
    &mdl_cpu_lstm_unit_layer,
    &mdl_cpu_lstm_layer,
    &mdl_cpu_rnn_layer,
    /* losses and metrics */
    &mdl_cpu_softmax_loss_layer,
    &mdl_cpu_accuracy_layer,
    &mdl_cpu_euclidean_loss_layer,
    &mdl_cpu_sigmoid_ce_loss_layer,
    &mdl_cpu_contrastive_loss_layer,
    &mdl_cpu_hinge_loss_layer,
    &mdl_cpu_multinomial_loss_layer,
    &mdl_cpu_infogain_loss_layer,
    /* sinks */
    &mdl_cpu_hdf5_output_layer,
};

/* ---- memory: host, 64-byte aligned ------------------------------------- */

static float *cpu_alloc(void *ctx, int64_t n) {
  (void)ctx;
  return mdl_falloc(n);
}

static void cpu_free(void *ctx, float *p) {
  (void)ctx;
  mdl_ffree(p);
}

static void cpu_zero(void *ctx, float *p, int64_t n) {
  (void)ctx;
  memset(p, 0, (size_t)n * sizeof(float));
}

static void cpu_copy(void *ctx, float *dst, const float *src, int64_t n) {
  (void)ctx;
  if (dst != src) memcpy(dst, src, (size_t)n * sizeof(float));
}

/* ---- reductions --------------------------------------------------------- */

static double cpu_sum(void *ctx, mdl_threadpool *pool, const float *x, int64_t n) {
  (void)ctx;
  return mdl_vsum(pool, n, x);
}

static void cpu_fill(void *ctx, mdl_threadpool *pool, float *x, int64_t n, float v) {
  (void)ctx;
  mdl_vset(pool, n, v, x);
}

static const mdl_backend_i cpu_iface = {
    .name = "cpu",
    .host_visible = true,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .sync = NULL,
    .impls = cpu_impls,
    .n_impls = sizeof cpu_impls / sizeof cpu_impls[0],
    .supports_layer = NULL,
    .sum = cpu_sum,
    .fill = cpu_fill,
    .update = mdl_cpu_update,
};

static const mdl_backend cpu_backend = {&cpu_iface, NULL};

const mdl_backend *mdl_cpu_backend(void) {
  return &cpu_backend;
}

const mdl_backend_i *mdl_cpu_backend_iface(void) {
  return &cpu_iface;
}
