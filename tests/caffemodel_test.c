/* .caffemodel and .solverstate: blob shapes (legacy 4-D and `shape`),
 * float and double values, round trips through a net and a solver, and
 * clear errors for the wrong kind of file. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compiler/graph.h"
#include "compiler/textformat.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/engine/net.h"
#include "runtime/solver/caffemodel.h"
#include "tests/graph_test_util.h"
#include "tests/testutil.h"

Test(blob_proto, legacy_shape_matches_with_leading_ones) {
  Caffe__BlobProto b = CAFFE__BLOB_PROTO__INIT;
  b.has_num = b.has_channels = b.has_height = b.has_width = 1;
  b.num = 1;
  b.channels = 1;
  b.height = 500;
  b.width = 800;
  mdl_tensor t;
  mdl_tensor_init(&t);
  int64_t d2[2] = {500, 800};
  mdl_tensor_view(&t, 2, d2, NULL, NULL);
  cr_assert(mdl_blob_proto_fits(&b, &t));
  int64_t d2b[2] = {800, 500};
  mdl_tensor_view(&t, 2, d2b, NULL, NULL);
  cr_assert(!mdl_blob_proto_fits(&b, &t));
  int n;
  int64_t dim[8];
  cr_assert_eq(mdl_blob_proto_shape(&b, &n, dim), 400000);
  cr_assert_eq(n, 4);
}

Test(blob_proto, shape_field_must_match_exactly) {
  int64_t dims[2] = {20, 25};
  Caffe__BlobShape s = CAFFE__BLOB_SHAPE__INIT;
  s.n_dim = 2;
  s.dim = dims;
  Caffe__BlobProto b = CAFFE__BLOB_PROTO__INIT;
  b.shape = &s;
  mdl_tensor t;
  mdl_tensor_init(&t);
  int64_t d[2] = {20, 25};
  mdl_tensor_view(&t, 2, d, NULL, NULL);
  cr_assert(mdl_blob_proto_fits(&b, &t));
  int64_t d4[4] = {1, 1, 20, 25};
  mdl_tensor_view(&t, 4, d4, NULL, NULL);
  cr_assert(!mdl_blob_proto_fits(&b, &t));
}

Test(blob_proto, double_data_and_count_errors) {
  double dd[3] = {0.5, -1.25, 3};
  Caffe__BlobProto b = CAFFE__BLOB_PROTO__INIT;
  b.n_double_data = 3;
  b.double_data = dd;
  float out[3];
  mdl_error err;
  cr_assert_eq(mdl_blob_proto_values(&b, out, 3, "x", &err), MDL_OK);
  cr_assert(out[0] == 0.5f && out[1] == -1.25f && out[2] == 3.0f);
  cr_assert_eq(mdl_blob_proto_values(&b, out, 2, "blob x", &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "blob x"), "%s", err.msg);
}

/* ---- solver state ---- */

static mdl_solver *adam_max(int max_iter) {
  Caffe__SolverParameter sp = CAFFE__SOLVER_PARAMETER__INIT;
  if (max_iter > 0) {
    sp.has_max_iter = 1;
    sp.max_iter = max_iter;
  }
  sp.type = "Adam";
  sp.lr_policy = "multistep";
  int steps[1] = {1};
  sp.stepvalue = steps;
  sp.n_stepvalue = 1;
  sp.gamma = 0.5f;
  sp.base_lr = 0.01f;
  sp.momentum = 0.9f;
  mdl_solver_blob b[2] = {
      {.offset = 0, .count = 6, .lr_mult = 1, .decay_mult = 1, .n_axes = 2, .dim = {2, 3}},
      {.offset = 6, .count = 2, .lr_mult = 2, .decay_mult = 0, .n_axes = 1, .dim = {2}}};
  mdl_solver *s;
  mdl_error err;
  cr_assert_eq(mdl_solver_new(mdl_cpu_backend(), &sp, b, 2, 8, &s, &err), MDL_OK, "%s", err.msg);
  return s;
}

static mdl_solver *adam(void) {
  return adam_max(0);
}

Test(solverstate, round_trip_with_seed) {
  mdl_solver *s = adam();
  float w[8] = {1, 2, 3, 4, 5, 6, 7, 8}, d[8];
  for (int it = 0; it < 3; it++) {
    for (int i = 0; i < 8; i++) d[i] = 0.1f * (float)(i + it);
    mdl_solver_update(s, w, d);
  }
  mdl_error err;
  const char *path = tu_scratch_path("state.solverstate");
  cr_assert_eq(
      mdl_solverstate_save(s, "model_iter_3.caffemodel", 0xfeedbeef12345678ull, path, &err), MDL_OK,
      "%s", err.msg);
  mdl_solver *r = adam();
  char *learned = NULL;
  uint64_t seed = 0;
  bool has_seed = false;
  cr_assert_eq(mdl_solverstate_load(path, r, &learned, &seed, &has_seed, &err), MDL_OK, "%s",
               err.msg);
  cr_assert_eq(mdl_solver_iter(r), 3);
  cr_assert_eq(mdl_solver_current_step(r), 1);
  cr_assert(has_seed);
  cr_assert_eq(seed, 0xfeedbeef12345678ull);
  cr_assert(learned && strstr(learned, "model_iter_3.caffemodel"), "%s", learned);
  for (int k = 0; k < 2; k++)
    cr_assert(memcmp(mdl_solver_history(s, k), mdl_solver_history(r, k), 8 * sizeof(float)) == 0);
  /* Both continue identically. */
  float w2[8];
  memcpy(w2, w, sizeof w);
  for (int i = 0; i < 8; i++) d[i] = 0.3f;
  mdl_solver_update(s, w, d);
  for (int i = 0; i < 8; i++) d[i] = 0.3f;
  mdl_solver_update(r, w2, d);
  cr_assert(memcmp(w, w2, sizeof w) == 0);
  free(learned);
  mdl_solver_free(s);
  mdl_solver_free(r);
  unlink(path);
}

Test(solverstate, rejects_mismatched_history) {
  mdl_solver *s = adam();
  mdl_error err;
  const char *path = tu_scratch_path("state2.solverstate");
  cr_assert_eq(mdl_solverstate_save(s, "m.caffemodel", 1, path, &err), MDL_OK);
  Caffe__SolverParameter sp = CAFFE__SOLVER_PARAMETER__INIT;
  sp.lr_policy = "fixed";
  mdl_solver_blob b = {.offset = 0, .count = 8, .lr_mult = 1, .decay_mult = 1};
  mdl_solver *sgd;
  cr_assert_eq(mdl_solver_new(mdl_cpu_backend(), &sp, &b, 1, 8, &sgd, &err), MDL_OK);
  cr_assert_eq(mdl_solverstate_load(path, sgd, NULL, NULL, NULL, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "history"), "%s", err.msg);
  cr_assert_eq(mdl_solver_iter(sgd), 0);
  mdl_solver_free(s);
  mdl_solver_free(sgd);
  unlink(path);
}

Test(solverstate, caffemodel_given_as_state_is_a_clear_error) {
  /* A minimal .caffemodel: a named net with one layer holding one blob. */
  float v[2] = {1, 2};
  Caffe__BlobProto b = CAFFE__BLOB_PROTO__INIT;
  b.n_data = 2;
  b.data = v;
  Caffe__BlobProto *bp = &b;
  Caffe__LayerParameter l = CAFFE__LAYER_PARAMETER__INIT;
  l.name = "ip";
  l.type = "InnerProduct";
  l.n_blobs = 1;
  l.blobs = &bp;
  Caffe__LayerParameter *lp = &l;
  Caffe__NetParameter np = CAFFE__NET_PARAMETER__INIT;
  np.name = "net";
  np.n_layer = 1;
  np.layer = &lp;
  size_t n = protobuf_c_message_get_packed_size(&np.base);
  uint8_t *buf = malloc(n);
  protobuf_c_message_pack(&np.base, buf);
  const char *path = tu_scratch_path("weights.caffemodel");
  mdl_error err;
  cr_assert_eq(mdl_file_write_atomic(path, buf, n, &err), MDL_OK);
  free(buf);
  mdl_solver *s = adam();
  cr_assert_eq(mdl_solverstate_load(path, s, NULL, NULL, NULL, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "is a .caffemodel"), "%s", err.msg);
  cr_assert(strstr(err.msg, "--weights"), "%s", err.msg);
  /* and the other way round */
  const char *state = tu_scratch_path("x.solverstate");
  cr_assert_eq(mdl_solverstate_save(s, "m.caffemodel", 1, state, &err), MDL_OK);
  Caffe__NetParameter *got;
  cr_assert_eq(mdl_caffemodel_read(state, &got, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "is a .solverstate"), "%s", err.msg);
  /* a text file */
  FILE *f = fopen(path, "w");
  fputs("name: \"LeNet\"\nlayer { name: \"x\" }\n", f);
  fclose(f);
  cr_assert_eq(mdl_caffemodel_read(path, &got, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "text"), "%s", err.msg);
  mdl_solver_free(s);
  unlink(path);
  unlink(state);
}

Test(snapshot, names_as_caffe) {
  char *s = mdl_snapshot_name("out/lenet", 5000, ".caffemodel");
  cr_assert_str_eq(s, "out/lenet_iter_5000.caffemodel");
  free(s);
}

/* ---- through a net ---- */

static const char NET[] =
    "name: \"tiny\"\n"
    "layer { name: \"in\" type: \"Input\" top: \"data\"\n"
    "        input_param { shape { dim: 2 dim: 1 dim: 4 dim: 4 } } }\n"
    "layer { name: \"conv\" type: \"Convolution\" bottom: \"data\" top: \"conv\"\n"
    "        convolution_param { num_output: 3 kernel_size: 3\n"
    "          weight_filler { type: \"gaussian\" std: 0.1 } bias_filler { type: \"constant\" "
    "value: 0.5 } } }\n"
    "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"conv\" top: \"ip\"\n"
    "        inner_product_param { num_output: 5 weight_filler { type: \"xavier\" } } }\n";

static mdl_graph *graph_of(const char *text) {
  return build_text(text, &(build_opts){.phase = CAFFE__PHASE__TEST});
}

static mdl_net *net_of(mdl_graph *g, uint64_t seed, bool no_fill) {
  mdl_net_options o = {.backend = mdl_cpu_backend(), .seed = seed, .no_fill = no_fill};
  mdl_net *n;
  mdl_error err;
  cr_assert_eq(mdl_net_new(g, &o, &n, &err), MDL_OK, "%s", err.msg);
  return n;
}

Test(caffemodel, net_round_trip_same_bits) {
  mdl_graph *g = graph_of(NET);
  mdl_net *a = net_of(g, 7, false), *b = net_of(g, 8, true);
  const char *path = tu_scratch_path("tiny.caffemodel");
  mdl_error err;
  cr_assert_eq(mdl_caffemodel_save(a, path, &err), MDL_OK, "%s", err.msg);
  int loaded = 0;
  cr_assert_eq(mdl_caffemodel_load(b, path, &loaded, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(loaded, 2, "loaded %d", loaded);
  cr_assert_eq(mdl_net_param_count(a), 3 * 9 + 3 + 5 * 12 + 5);
  cr_assert(memcmp(mdl_net_params(a), mdl_net_params(b), mdl_net_param_count(a) * 4) == 0);
  /* The written file is Caffe's layout: layer names, `shape`, float data. */
  Caffe__NetParameter *np;
  cr_assert_eq(mdl_caffemodel_read(path, &np, &err), MDL_OK);
  cr_assert_str_eq(np->name, "tiny");
  int conv = -1;
  for (size_t i = 0; i < np->n_layer; i++)
    if (!strcmp(np->layer[i]->name, "conv")) conv = (int)i;
  cr_assert(conv >= 0);
  cr_assert_eq(np->layer[conv]->n_blobs, 2);
  cr_assert_eq(np->layer[conv]->blobs[0]->shape->n_dim, 4);
  cr_assert_eq(np->layer[conv]->blobs[0]->n_data, 27);
  caffe__net_parameter__free_unpacked(np, NULL);
  mdl_net_free(a);
  mdl_net_free(b);
  mdl_graph_free(g);
  unlink(path);
}

Test(caffemodel, legacy_v1_file_with_double_data_loads) {
  mdl_graph *g = graph_of(NET);
  mdl_net *n = net_of(g, 1, false);
  /* A V1 `layers` entry for "ip" with legacy dims and double values; "conv"
   * is missing and keeps its filler. */
  double w[60], bias[5];
  for (int i = 0; i < 60; i++) w[i] = i * 0.25;
  for (int i = 0; i < 5; i++) bias[i] = -i;
  Caffe__BlobProto b0 = CAFFE__BLOB_PROTO__INIT, b1 = CAFFE__BLOB_PROTO__INIT;
  b0.has_num = b0.has_channels = b0.has_height = b0.has_width = 1;
  b0.num = 1, b0.channels = 1, b0.height = 5, b0.width = 12;
  b0.n_double_data = 60, b0.double_data = w;
  b1.has_num = b1.has_channels = b1.has_height = b1.has_width = 1;
  b1.num = 1, b1.channels = 1, b1.height = 1, b1.width = 5;
  b1.n_double_data = 5, b1.double_data = bias;
  Caffe__BlobProto *bp[2] = {&b0, &b1};
  Caffe__V1LayerParameter v1 = CAFFE__V1_LAYER_PARAMETER__INIT;
  v1.name = "ip";
  v1.n_blobs = 2;
  v1.blobs = bp;
  Caffe__V1LayerParameter *v1p = &v1;
  Caffe__NetParameter np = CAFFE__NET_PARAMETER__INIT;
  np.n_layers = 1;
  np.layers = &v1p;
  float conv_before[30];
  memcpy(conv_before, mdl_net_params(n), sizeof conv_before);
  mdl_error err;
  int loaded;
  cr_assert_eq(mdl_caffemodel_copy(n, &np, "legacy", &loaded, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(loaded, 1);
  cr_assert(memcmp(conv_before, mdl_net_params(n), sizeof conv_before) == 0);
  const float *ip = mdl_net_params(n) + 30;
  cr_assert_eq(ip[7], 1.75f);
  cr_assert_eq(ip[60 + 4], -4.0f);
  /* Shape mismatch names the layer and both shapes. */
  b0.height = 6, b0.width = 10;
  cr_assert_eq(mdl_caffemodel_copy(n, &np, "legacy", &loaded, &err), MDL_ERR_INVALID);
  cr_assert(strstr(err.msg, "\"ip\"") && strstr(err.msg, "1x1x6x10") && strstr(err.msg, "5x12"),
            "%s", err.msg);
  mdl_net_free(n);
  mdl_graph_free(g);
}

/* Found by tests/fuzz/run_readers_fuzz.sh: sizes from the file that overflow
 * int64 when multiplied (UBSan), or are negative, give -1, not a count. */
Test(blob_proto, shape_count_overflow_and_negative_axes) {
  Caffe__BlobProto b = CAFFE__BLOB_PROTO__INIT;
  b.has_num = b.has_channels = b.has_height = b.has_width = 1;
  b.num = b.channels = b.height = b.width = 0x7fffffff;
  int n;
  int64_t dim[8];
  cr_assert_eq(mdl_blob_proto_shape(&b, &n, dim), -1);
  cr_assert_eq(n, 4);
  cr_assert_eq(dim[3], 0x7fffffff);
  int64_t dims[3] = {INT64_MAX, 2, 3};
  Caffe__BlobShape s = CAFFE__BLOB_SHAPE__INIT;
  s.n_dim = 3;
  s.dim = dims;
  b.shape = &s;
  cr_assert_eq(mdl_blob_proto_shape(&b, &n, dim), -1);
  cr_assert_eq(n, 3);
  dims[0] = -4;
  cr_assert_eq(mdl_blob_proto_shape(&b, &n, dim), -1);
  dims[0] = 4;
  cr_assert_eq(mdl_blob_proto_shape(&b, &n, dim), 24);
}

/* A state saved by adam() with its iteration replaced (a forged or damaged
 * file). */
static void write_state_at(const char *path, int iter) {
  mdl_solver *s = adam();
  mdl_error err;
  cr_assert_eq(mdl_solverstate_save(s, "m.caffemodel", 1, path, &err), MDL_OK, "%s", err.msg);
  mdl_solver_free(s);
  size_t len;
  uint8_t *buf = tu_read(path, &len);
  Caffe__SolverState *ss = caffe__solver_state__unpack(NULL, len, buf);
  cr_assert_not_null(ss);
  ss->iter = iter;
  size_t n = caffe__solver_state__get_packed_size(ss);
  uint8_t *out = malloc(n);
  caffe__solver_state__pack(ss, out);
  tu_write(path, out, n);
  free(out);
  free(buf);
  caffe__solver_state__free_unpacked(ss, NULL);
}

Test(solverstate, iteration_outside_the_solvers_schedule_is_refused) {
  const char *path = tu_scratch_path("forged.solverstate");
  int bad[] = {-5, 10, 2147483647};
  const char *says[] = {"not a position", "nothing left to train", "nothing left to train"};
  for (int i = 0; i < 3; i++) {
    write_state_at(path, bad[i]);
    mdl_solver *r = adam_max(10);
    mdl_error err;
    cr_assert_eq(mdl_solverstate_load(path, r, NULL, NULL, NULL, &err), MDL_ERR_INVALID,
                 "iter %d accepted", bad[i]);
    cr_assert(strstr(err.msg, says[i]) && strstr(err.msg, path), "%s", err.msg);
    cr_assert_eq(mdl_solver_iter(r), 0, "the solver moved");
    mdl_solver_free(r);
  }
  write_state_at(path, 9);
  mdl_solver *r = adam_max(10);
  mdl_error err;
  cr_assert_eq(mdl_solverstate_load(path, r, NULL, NULL, NULL, &err), MDL_OK, "%s", err.msg);
  cr_assert_eq(mdl_solver_iter(r), 9);
  mdl_solver_free(r);
  unlink(path);
}
