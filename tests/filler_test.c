/* Filler statistics (Caffe's conventions: fan_in = count / shape[0], fan_out =
 * count / shape[1]) and the random stream's determinism. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/textformat.h"
#include "runtime/engine/filler.h"

typedef struct stats {
  double mean, var, min, max;
  int64_t zeros;
} stats;

static stats fill_stats(const char *text, int n, const int64_t *d, mdl_tensor *keep) {
  ProtobufCMessage *msg;
  mdl_error err;
  cr_assert_eq(
      mdl_text_parse(text, strlen(text), "<t>", &caffe__filler_parameter__descriptor, &msg, &err),
      MDL_OK, "%s", err.msg);
  mdl_tensor t;
  mdl_tensor_init(&t);
  cr_assert_eq(mdl_tensor_alloc(&t, n, d, false, &err), MDL_OK);
  mdl_rng r;
  mdl_rng_init(&r, 1701);
  cr_assert_eq(mdl_filler_fill((Caffe__FillerParameter *)msg, &t, &r, &err), MDL_OK, "%s", err.msg);
  stats s = {0, 0, INFINITY, -INFINITY, 0};
  for (int64_t i = 0; i < t.count; i++) {
    s.mean += t.data[i];
    s.min = fmin(s.min, t.data[i]);
    s.max = fmax(s.max, t.data[i]);
    s.zeros += t.data[i] == 0.f;
  }
  s.mean /= (double)t.count;
  for (int64_t i = 0; i < t.count; i++) s.var += pow(t.data[i] - s.mean, 2);
  s.var /= (double)t.count;
  if (keep)
    *keep = t;
  else
    mdl_tensor_release(&t);
  protobuf_c_message_free_unpacked(msg, NULL);
  return s;
}

static const int64_t BIG[] = {100, 50, 3, 3}; /* fan_in 450, fan_out 900 */

Test(filler, constant) {
  stats s = fill_stats("type: 'constant' value: 2.5", 4, BIG, NULL);
  cr_assert_eq(s.min, 2.5);
  cr_assert_eq(s.max, 2.5);
}

Test(filler, uniform) {
  stats s = fill_stats("type: 'uniform' min: -3 max: 1", 4, BIG, NULL);
  cr_assert(s.min >= -3 && s.max < 1);
  cr_assert(fabs(s.mean + 1) < 0.02, "%g", s.mean);
  cr_assert(fabs(s.var - 16.0 / 12) < 0.02, "%g", s.var);
}

Test(filler, gaussian_and_sparse) {
  stats s = fill_stats("type: 'gaussian' mean: 1 std: 0.5", 4, BIG, NULL);
  cr_assert(fabs(s.mean - 1) < 0.01, "%g", s.mean);
  cr_assert(fabs(sqrt(s.var) - 0.5) < 0.01, "%g", sqrt(s.var));
  /* sparse: on average `sparse` non-zeros per output row (p = 10 / 100) */
  stats p = fill_stats("type: 'gaussian' std: 1 sparse: 10", 4, BIG, NULL);
  double nonzero = 1 - (double)p.zeros / (100 * 450);
  cr_assert(fabs(nonzero - 0.1) < 0.01, "%g", nonzero);
}

Test(filler, xavier_fans) {
  /* U(-a, a) with a = sqrt(3 / n): variance a^2 / 3 = 1 / n */
  stats in = fill_stats("type: 'xavier'", 4, BIG, NULL);
  cr_assert(fabs(in.var * 450 - 1) < 0.03, "%g", in.var * 450);
  cr_assert(in.max <= sqrt(3.0 / 450) + 1e-6);
  stats out = fill_stats("type: 'xavier' variance_norm: FAN_OUT", 4, BIG, NULL);
  cr_assert(fabs(out.var * 900 - 1) < 0.03, "%g", out.var * 900);
  stats avg = fill_stats("type: 'xavier' variance_norm: AVERAGE", 4, BIG, NULL);
  cr_assert(fabs(avg.var * 675 - 1) < 0.03, "%g", avg.var * 675);
}

Test(filler, msra_fans) {
  /* N(0, 2 / n) */
  stats in = fill_stats("type: 'msra'", 4, BIG, NULL);
  cr_assert(fabs(in.var * 450 / 2 - 1) < 0.03, "%g", in.var * 450 / 2);
  stats out = fill_stats("type: 'msra' variance_norm: FAN_OUT", 4, BIG, NULL);
  cr_assert(fabs(out.var * 900 / 2 - 1) < 0.03);
  stats avg = fill_stats("type: 'msra' variance_norm: AVERAGE", 4, BIG, NULL);
  cr_assert(fabs(avg.var * 675 / 2 - 1) < 0.03);
  /* an InnerProduct weight (N x K): fan_in = K */
  stats ip = fill_stats("type: 'msra'", 2, (int64_t[]){500, 800}, NULL);
  cr_assert(fabs(ip.var * 800 / 2 - 1) < 0.03);
}

Test(filler, positive_unitball) {
  mdl_tensor t;
  stats s = fill_stats("type: 'positive_unitball'", 2, (int64_t[]){20, 30}, &t);
  cr_assert(s.min >= 0);
  for (int i = 0; i < 20; i++) {
    double sum = 0;
    for (int j = 0; j < 30; j++) sum += t.data[i * 30 + j];
    cr_assert(fabs(sum - 1) < 1e-5);
  }
  mdl_tensor_release(&t);
}

Test(filler, bilinear) {
  mdl_tensor t;
  fill_stats("type: 'bilinear'", 4, (int64_t[]){1, 1, 4, 4}, &t);
  /* kernel 4 (upsampling by 2): f = 2, c = 3/4: weights 1/4 3/4 3/4 1/4 */
  float w1[] = {0.25f, 0.75f, 0.75f, 0.25f};
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 4; x++) cr_assert_float_eq(t.data[y * 4 + x], w1[y] * w1[x], 1e-6);
  mdl_tensor_release(&t);
  fill_stats("type: 'bilinear'", 4, (int64_t[]){1, 1, 3, 3}, &t);
  /* odd kernel: centre 1, edges 1/2 */
  cr_assert_float_eq(t.data[4], 1.f, 1e-6);
  cr_assert_float_eq(t.data[0], 0.25f, 1e-6);
  mdl_tensor_release(&t);
}

Test(filler, errors_name_the_filler) {
  ProtobufCMessage *msg;
  mdl_error err;
  const char *text = "type: 'orthogonal'";
  cr_assert_eq(
      mdl_text_parse(text, strlen(text), "<t>", &caffe__filler_parameter__descriptor, &msg, &err),
      MDL_OK);
  mdl_tensor t;
  mdl_tensor_init(&t);
  cr_assert_eq(mdl_tensor_alloc(&t, 1, (int64_t[]){4}, false, &err), MDL_OK);
  mdl_rng r;
  mdl_rng_init(&r, 1);
  cr_assert_eq(mdl_filler_fill((Caffe__FillerParameter *)msg, &t, &r, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "orthogonal") && strstr(err.msg, "xavier"), "%s", err.msg);
  protobuf_c_message_free_unpacked(msg, NULL);
  text = "type: 'bilinear'";
  cr_assert_eq(
      mdl_text_parse(text, strlen(text), "<t>", &caffe__filler_parameter__descriptor, &msg, &err),
      MDL_OK);
  cr_assert_eq(mdl_filler_fill((Caffe__FillerParameter *)msg, &t, &r, &err), MDL_ERR_INVALID);
  protobuf_c_message_free_unpacked(msg, NULL);
  cr_assert_eq(mdl_filler_fill(NULL, &t, &r, &err), MDL_OK); /* default: constant 0 */
  cr_assert_eq(t.data[3], 0.f);
  mdl_tensor_release(&t);
}

Test(rng, deterministic_streams) {
  mdl_rng a, b;
  mdl_rng_init(&a, 42);
  mdl_rng_init(&b, 42);
  for (int i = 0; i < 100; i++) cr_assert_eq(mdl_rng_u32(&a), mdl_rng_u32(&b));
  cr_assert_eq(a.counter, 100);
  mdl_rng_init(&a, 42);
  cr_assert_eq(mdl_rng_bits_at(42, 5), (mdl_rng_u32(&a), mdl_rng_u32(&a), mdl_rng_u32(&a),
                                        mdl_rng_u32(&a), mdl_rng_u32(&a), mdl_rng_u32(&a)));
  mdl_rng s1 = mdl_rng_stream(&a, 1), s2 = mdl_rng_stream(&a, 2);
  cr_assert_neq(mdl_rng_u32(&s1), mdl_rng_u32(&s2));
  /* uniform(0,1) mean and Box-Muller moments */
  double m = 0, v = 0;
  for (int i = 0; i < 200000; i++) {
    float g = mdl_rng_gaussian(&b, 0, 1);
    m += g;
    v += g * g;
  }
  cr_assert(fabs(m / 200000) < 0.01);
  cr_assert(fabs(v / 200000 - 1) < 0.02);
}
