/* runtime/engine/layer_geom: what each family's parameters and shapes come
 * to, worked out by hand here, and that bad parameters are refused naming
 * the layer. Layers are built by hand (no backend, no shape rule): the
 * geometry reads only the LayerParameter, the shapes and the blob shapes. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "runtime/engine/layer_geom.h"

typedef struct fake {
  Caffe__LayerParameter lp;
  mdl_layer_impl impl;
  mdl_layer l;
  mdl_shape bottom[4], top[4];
  mdl_error err;
} fake;

static mdl_shape S4(int64_t a, int64_t b, int64_t c, int64_t d) {
  return (mdl_shape){4, {a, b, c, d}};
}

/* A layer "L1" of type with the given bottoms and tops, in TRAIN. */
static void fake_init(fake *f, const char *type, int nb, const mdl_shape *b, int nt,
                      const mdl_shape *t) {
  memset(f, 0, sizeof *f);
  caffe__layer_parameter__init(&f->lp);
  f->lp.name = "L1";
  f->lp.type = (char *)type;
  f->impl.type = type;
  f->l.impl = &f->impl;
  f->l.lp = &f->lp;
  f->l.name = "L1";
  f->l.phase = CAFFE__PHASE__TRAIN;
  f->l.n_bottom = nb;
  f->l.n_top = nt;
  for (int i = 0; i < nb; i++) f->bottom[i] = b[i];
  for (int i = 0; i < nt; i++) f->top[i] = t[i];
  f->l.bottom_shape = f->bottom;
  f->l.top_shape = f->top;
}

/* Learned blob i of the given shape. */
static void fake_param(fake *f, int i, int n, const int64_t *d) {
  mdl_tensor *p = &f->l.param[i];
  p->n = n;
  p->count = 1;
  for (int k = 0; k < n; k++) p->count *= (p->d[k] = d[k]);
  if (f->l.n_param < i + 1) f->l.n_param = i + 1;
}

/* st is MDL_ERR_INVALID and the message names the layer and says want. */
static void refused(const fake *f, mdl_status st, const char *want) {
  char who[64];
  snprintf(who, sizeof who, "layer \"L1\" (%s): ", f->impl.type);
  cr_assert_eq(st, MDL_ERR_INVALID, "wanted a refusal saying \"%s\", got %d", want, st);
  cr_assert(strstr(f->err.msg, who) == f->err.msg, "not named: %s", f->err.msg);
  cr_assert(strstr(f->err.msg, want), "wanted \"%s\" in: %s", want, f->err.msg);
}

Test(layer_geom, convolution_and_deconvolution_sides) {
  Caffe__ConvolutionParameter cp = CAFFE__CONVOLUTION_PARAMETER__INIT;
  uint32_t k[] = {3}, s[] = {2}, p[] = {1};
  cp.n_kernel_size = 1, cp.kernel_size = k;
  cp.n_stride = 1, cp.stride = s;
  cp.n_pad = 1, cp.pad = p;
  cp.group = 2;
  cp.num_output = 6;
  fake f;
  mdl_shape b = S4(2, 4, 9, 9), t = S4(2, 6, 5, 5);
  fake_init(&f, "Convolution", 1, &b, 1, &t);
  f.lp.convolution_param = &cp;
  fake_param(&f, 0, 4, (int64_t[]){6, 2, 3, 3});
  fake_param(&f, 1, 1, (int64_t[]){6});
  mdl_convolution_geom g;
  cr_assert_eq(mdl_geom_conv(&f.l, &g, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(!g.deconv && g.bias && g.group == 2 && g.num == 2);
  cr_assert(g.win.kh == 3 && g.win.kw == 3 && g.win.sh == 2 && g.win.sw == 2);
  cr_assert(g.win.ph == 1 && g.win.pw == 1 && g.win.dh == 1 && g.win.dw == 1);
  cr_assert(g.im_ch == 4 && g.im_h == 9 && g.im_w == 9);
  cr_assert(g.col_ch == 6 && g.col_h == 5 && g.col_w == 5);
  cr_assert_eq(g.wcount, 6 * 2 * 3 * 3);
  cr_assert_eq(g.bcount, 6);

  /* the same window run backwards: the image side is the top */
  cp.num_output = 4;
  fake_init(&f, "Deconvolution", 1, &t, 1, &b);
  f.lp.convolution_param = &cp;
  fake_param(&f, 0, 4, (int64_t[]){6, 2, 3, 3});
  fake_param(&f, 1, 1, (int64_t[]){4});
  cr_assert_eq(mdl_geom_conv(&f.l, &g, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(g.deconv && g.im_ch == 4 && g.im_h == 9 && g.col_ch == 6 && g.col_h == 5);
  cr_assert_eq(g.wcount, 6 * 2 * 3 * 3);
  cr_assert_eq(g.bcount, 4, "a Deconvolution's bias is per top channel");
}

Test(layer_geom, convolution_refusals) {
  Caffe__ConvolutionParameter cp = CAFFE__CONVOLUTION_PARAMETER__INIT;
  uint32_t k[] = {3}, three[] = {1, 1, 1};
  cp.n_kernel_size = 1, cp.kernel_size = k;
  cp.num_output = 6;
  fake f;
  mdl_shape b = S4(2, 4, 9, 9), t = S4(2, 6, 7, 7);
  fake_init(&f, "Convolution", 1, &b, 1, &t);
  f.lp.convolution_param = &cp;
  fake_param(&f, 0, 4, (int64_t[]){6, 4, 3, 3});
  fake_param(&f, 1, 1, (int64_t[]){6});
  mdl_convolution_geom g;
  cr_assert_eq(mdl_geom_conv(&f.l, &g, &f.err), MDL_OK, "%s", f.err.msg);

  cp.has_kernel_h = true, cp.kernel_h = 3;
  refused(&f, mdl_geom_conv(&f.l, &g, &f.err), "kernel_size given both as kernel_size");
  cp.n_kernel_size = 0;
  refused(&f, mdl_geom_conv(&f.l, &g, &f.err), "kernel_size_h and kernel_size_w must be given");
  cp.has_kernel_w = true, cp.kernel_w = 3;
  cr_assert_eq(mdl_geom_conv(&f.l, &g, &f.err), MDL_OK, "%s", f.err.msg);
  cp.n_stride = 3, cp.stride = three;
  refused(&f, mdl_geom_conv(&f.l, &g, &f.err), "stride has 3 values");
  cp.n_stride = 0;
  cp.group = 3;
  refused(&f, mdl_geom_conv(&f.l, &g, &f.err), "must be multiples of group 3");
  cp.group = 1;
  cp.bias_term = true;
  fake_param(&f, 1, 1, (int64_t[]){5});
  refused(&f, mdl_geom_conv(&f.l, &g, &f.err), "weight/bias blob sizes disagree");
  mdl_shape flat = {2, {2, 324}};
  fake_init(&f, "Convolution", 1, &flat, 1, &t);
  f.lp.convolution_param = &cp;
  refused(&f, mdl_geom_conv(&f.l, &g, &f.err), "only 2-D convolution over axis 1");
}

Test(layer_geom, pooling_windows) {
  Caffe__PoolingParameter pp = CAFFE__POOLING_PARAMETER__INIT;
  pp.kernel_size = 3, pp.stride = 2, pp.has_pad_h = true, pp.pad_h = 1;
  pp.pool = CAFFE__POOLING_PARAMETER__POOL_METHOD__AVE;
  fake f;
  mdl_shape b = S4(2, 3, 8, 6), t = S4(2, 3, 5, 3);
  fake_init(&f, "Pooling", 1, &b, 1, &t);
  f.lp.pooling_param = &pp;
  mdl_pool_geom g;
  cr_assert_eq(mdl_geom_pool(&f.l, &g, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(g.planes == 6 && g.H == 8 && g.W == 6 && g.PH == 5 && g.PW == 3);
  cr_assert(g.kh == 3 && g.kw == 3 && g.sh == 2 && g.sw == 2 && g.ph == 1 && g.pw == 0);
  pp.global_pooling = true;
  cr_assert_eq(mdl_geom_pool(&f.l, &g, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(g.kh == 8 && g.kw == 6 && g.sh == 1 && g.ph == 0, "global: the whole plane");
  pp.global_pooling = false;
  pp.pad_h = 3;
  refused(&f, mdl_geom_pool(&f.l, &g, &f.err), "pad must be smaller than the kernel");
  pp.pad_h = 0, pp.stride = 0;
  refused(&f, mdl_geom_pool(&f.l, &g, &f.err), "kernel and stride must be positive");
  pp.stride = 1;
  mdl_shape tops[2] = {t, t};
  fake_init(&f, "Pooling", 1, &b, 2, tops);
  f.lp.pooling_param = &pp;
  refused(&f, mdl_geom_pool(&f.l, &g, &f.err), "only MAX pooling has a mask top");
}

Test(layer_geom, softmax_loss_and_accuracy) {
  Caffe__SoftmaxParameter sp = CAFFE__SOFTMAX_PARAMETER__INIT;
  Caffe__LossParameter lossp = CAFFE__LOSS_PARAMETER__INIT;
  fake f;
  mdl_shape b[2] = {S4(2, 5, 3, 4), {3, {2, 3, 4}}}, scalar = {0, {0}};
  fake_init(&f, "SoftmaxWithLoss", 2, b, 1, &scalar);
  f.lp.softmax_param = &sp;
  f.lp.loss_param = &lossp;
  lossp.has_ignore_label = true, lossp.ignore_label = 255;
  lossp.has_normalize = true, lossp.normalize = false;
  mdl_softmax_loss_geom g;
  cr_assert_eq(mdl_geom_softmax_loss(&f.l, &g, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(g.outer == 2 && g.C == 5 && g.inner == 12);
  cr_assert(g.ignore && g.ignore_label == 255);
  cr_assert_eq(g.mode, CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__BATCH_SIZE,
               "legacy normalize: false is BATCH_SIZE");
  sp.axis = -1; /* over the last axis: 30 positions of 4 classes, but 24 labels */
  refused(&f, mdl_geom_softmax_loss(&f.l, &g, &f.err),
          "24 labels for 30 predictions (outer 30 x inner 1)");
  sp.axis = 4;
  refused(&f, mdl_geom_softmax_loss(&f.l, &g, &f.err), "softmax axis 4 out of range");

  Caffe__AccuracyParameter ap = CAFFE__ACCURACY_PARAMETER__INIT;
  fake_init(&f, "Accuracy", 2, b, 1, &scalar);
  f.lp.accuracy_param = &ap;
  ap.top_k = 5;
  mdl_accuracy_geom a;
  cr_assert_eq(mdl_geom_accuracy(&f.l, &a, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(a.outer == 2 && a.C == 5 && a.inner == 12 && a.top_k == 5 && !a.ignore);
  ap.top_k = 6;
  refused(&f, mdl_geom_accuracy(&f.l, &a, &f.err), "top_k 6 must be in 1..5");
  ap.top_k = 1, ap.axis = 2;
  refused(&f, mdl_geom_accuracy(&f.l, &a, &f.err), "label count does not match");
}

Test(layer_geom, loss_normalizer) {
  const int FULL = CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__FULL,
            VALID = CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID,
            BATCH = CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__BATCH_SIZE,
            NONE = CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__NONE;
  cr_assert_eq(mdl_geom_loss_normalizer(FULL, 4, 6, 10), 24.0);
  cr_assert_eq(mdl_geom_loss_normalizer(VALID, 4, 6, 10), 10.0);
  cr_assert_eq(mdl_geom_loss_normalizer(VALID, 4, 6, -1), 24.0, "no count kept: all");
  cr_assert_eq(mdl_geom_loss_normalizer(VALID, 4, 6, 0), 1.0, "never below 1");
  cr_assert_eq(mdl_geom_loss_normalizer(BATCH, 4, 6, 10), 4.0);
  cr_assert_eq(mdl_geom_loss_normalizer(NONE, 4, 6, 10), 1.0);
}

Test(layer_geom, batch_norm_and_scale) {
  Caffe__BatchNormParameter bp = CAFFE__BATCH_NORM_PARAMETER__INIT;
  fake f;
  mdl_shape b = S4(2, 3, 4, 5);
  fake_init(&f, "BatchNorm", 1, &b, 1, &b);
  f.lp.batch_norm_param = &bp;
  fake_param(&f, 0, 1, (int64_t[]){3});
  fake_param(&f, 1, 1, (int64_t[]){3});
  fake_param(&f, 2, 1, (int64_t[]){1});
  mdl_bn_geom g;
  cr_assert_eq(mdl_geom_bn(&f.l, &g, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(g.num == 2 && g.C == 3 && g.inner == 20 && g.count == 120);
  cr_assert(!g.global, "TRAIN computes its statistics");
  f.l.phase = CAFFE__PHASE__TEST;
  cr_assert_eq(mdl_geom_bn(&f.l, &g, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(g.global, "TEST uses the stored ones");
  fake_param(&f, 2, 1, (int64_t[]){3});
  refused(&f, mdl_geom_bn(&f.l, &g, &f.err), "BatchNorm needs blobs of 3, 3 and 1 values");

  Caffe__ScaleParameter sp = CAFFE__SCALE_PARAMETER__INIT;
  sp.axis = 1, sp.bias_term = true;
  fake_init(&f, "Scale", 1, &b, 1, &b);
  f.lp.scale_param = &sp;
  fake_param(&f, 0, 2, (int64_t[]){3, 4});
  fake_param(&f, 1, 2, (int64_t[]){3, 4});
  mdl_scale_geom s;
  cr_assert_eq(mdl_geom_scale(&f.l, &s, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(s.is_scale && !s.two_bottom && s.bias && s.bias_param == 1);
  cr_assert(s.outer == 2 && s.D == 12 && s.inner == 5 && s.count == 120);
  fake_param(&f, 0, 2, (int64_t[]){3, 5});
  refused(&f, mdl_geom_scale(&f.l, &s, &f.err), "operand axis 1 is 5, input axis 2 is 4");
}

Test(layer_geom, concat_slice_eltwise) {
  Caffe__ConcatParameter cp = CAFFE__CONCAT_PARAMETER__INIT;
  fake f;
  mdl_shape parts[3] = {S4(2, 1, 3, 3), S4(2, 4, 3, 3), S4(2, 2, 3, 3)}, big = S4(2, 7, 3, 3);
  fake_init(&f, "Concat", 3, parts, 1, &big);
  f.lp.concat_param = &cp;
  mdl_concat_geom g;
  int64_t part[3] = {0};
  cr_assert_eq(mdl_geom_concat(&f.l, &g, part, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(g.axis == 1 && g.n == 3 && g.outer == 2 && g.inner == 9 && g.total == 7);
  cr_assert(part[0] == 1 && part[1] == 4 && part[2] == 2);
  big.d[1] = 8;
  fake_init(&f, "Concat", 3, parts, 1, &big);
  f.lp.concat_param = &cp;
  refused(&f, mdl_geom_concat(&f.l, &g, part, &f.err),
          "parts add up to 7 along axis 1, expected 8");

  Caffe__SliceParameter slp = CAFFE__SLICE_PARAMETER__INIT;
  slp.has_slice_dim = true, slp.slice_dim = 1; /* legacy spelling */
  big.d[1] = 7;
  fake_init(&f, "Slice", 1, &big, 3, parts);
  f.lp.slice_param = &slp;
  cr_assert_eq(mdl_geom_concat(&f.l, &g, NULL, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(g.axis == 1 && g.n == 3 && g.total == 7);

  Caffe__EltwiseParameter ep = CAFFE__ELTWISE_PARAMETER__INIT;
  mdl_shape same[2] = {S4(2, 3, 2, 2), S4(2, 3, 2, 2)};
  fake_init(&f, "Eltwise", 2, same, 1, same);
  f.lp.eltwise_param = &ep;
  mdl_eltwise_geom e;
  float coeff[2] = {0, 0};
  cr_assert_eq(mdl_geom_eltwise(&f.l, &e, coeff, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(e.op == CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__SUM && e.count == 24);
  cr_assert(coeff[0] == 1.f && coeff[1] == 1.f, "SUM without coeff adds");
  float given[] = {0.5f, -2.f};
  ep.n_coeff = 2, ep.coeff = given;
  cr_assert_eq(mdl_geom_eltwise(&f.l, &e, coeff, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(coeff[0] == 0.5f && coeff[1] == -2.f);
  ep.operation = CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__PROD;
  refused(&f, mdl_geom_eltwise(&f.l, &e, coeff, &f.err), "coeff is only for the SUM operation");
}

Test(layer_geom, inner_product_lrn_dropout) {
  Caffe__InnerProductParameter ip = CAFFE__INNER_PRODUCT_PARAMETER__INIT;
  ip.num_output = 10;
  fake f;
  mdl_shape b = S4(4, 3, 2, 2);
  fake_init(&f, "InnerProduct", 1, &b, 0, NULL);
  f.lp.inner_product_param = &ip;
  fake_param(&f, 0, 2, (int64_t[]){10, 12});
  fake_param(&f, 1, 1, (int64_t[]){10});
  mdl_ip_geom g;
  cr_assert_eq(mdl_geom_ip(&f.l, &g, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(g.M == 4 && g.K == 12 && g.N == 10 && g.bias && !g.transpose);
  ip.axis = 2;
  refused(&f, mdl_geom_ip(&f.l, &g, &f.err), "weight/bias blob sizes disagree");

  Caffe__LRNParameter lp = CAFFE__LRNPARAMETER__INIT;
  fake_init(&f, "LRN", 1, &b, 1, &b);
  f.lp.lrn_param = &lp;
  mdl_lrn_geom l;
  cr_assert_eq(mdl_geom_lrn(&f.l, &l, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(l.across && l.size == 5 && l.pre == 2 && l.C == 3 && l.alpha == 1.f);
  lp.local_size = 4;
  refused(&f, mdl_geom_lrn(&f.l, &l, &f.err), "LRN local_size must be odd");

  Caffe__DropoutParameter dp = CAFFE__DROPOUT_PARAMETER__INIT;
  dp.dropout_ratio = 0.25f;
  fake_init(&f, "Dropout", 1, &b, 1, &b);
  f.lp.dropout_param = &dp;
  mdl_dropout_geom d;
  cr_assert_eq(mdl_geom_dropout(&f.l, &d, &f.err), MDL_OK, "%s", f.err.msg);
  cr_assert(d.count == 48 && d.scale == 1.f / 0.75f && d.thresh == UINT32_MAX / 4);
  dp.dropout_ratio = 1.f;
  refused(&f, mdl_geom_dropout(&f.l, &d, &f.err), "dropout_ratio must be in [0, 1), got 1");
  cr_assert_eq(mdl_geom_relu_slope(&f.l), 0.f);
  Caffe__ReLUParameter rp = CAFFE__RE_LUPARAMETER__INIT;
  rp.negative_slope = 0.1f;
  f.lp.relu_param = &rp;
  cr_assert_eq(mdl_geom_relu_slope(&f.l), 0.1f);
}
