/* Helpers shared by the graph tests (see graph_test_util.h). */
#include "tests/graph_test_util.h"

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler/textformat.h"

int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

void check_leaks(void) {
  if (__lsan_do_recoverable_leak_check)
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (report above)");
}

Caffe__NetParameter *parse_net(const char *text) {
  mdl_error err = {0};
  ProtobufCMessage *m = NULL;
  mdl_status st =
      mdl_text_parse(text, strlen(text), "t.prototxt", &caffe__net_parameter__descriptor, &m, &err);
  cr_assert_eq(st, MDL_OK, "parse failed: %s\n%s", err.msg, text);
  return (Caffe__NetParameter *)m;
}

Caffe__NetParameter *load_net(const char *name) {
  char path[256];
  snprintf(path, sizeof path, "tests/nets/%s", name);
  mdl_error err = {0};
  ProtobufCMessage *m = NULL;
  mdl_status st = mdl_text_parse_file(path, &caffe__net_parameter__descriptor, &m, &err);
  cr_assert_eq(st, MDL_OK, "cannot load %s: %s", path, err.msg);
  return (Caffe__NetParameter *)m;
}

void free_net(Caffe__NetParameter *n) {
  protobuf_c_message_free_unpacked(&n->base, NULL);
}

mdl_status test_resolver(void *ctx, const Caffe__LayerParameter *l, mdl_source_info *info,
                         mdl_error *err) {
  test_source *s = ctx;
  s->calls++;
  const char *src = l->data_param ? l->data_param->source : NULL;
  if (src && strstr(src, "named"))
    return mdl_errorf(err, MDL_ERR_INVALID, "layer \"%s\": %s: no such file", l->name, src);
  if (src && strstr(src, "missing")) return mdl_errorf(err, MDL_ERR_INVALID, "no such database");
  info->record = s->rec;
  return MDL_OK;
}

mdl_status try_build_net(const Caffe__NetParameter *net, const build_opts *o, mdl_graph **g,
                         mdl_error *err) {
  Caffe__NetState st = CAFFE__NET_STATE__INIT;
  char *stages[4];
  st.has_phase = 1;
  st.phase = o ? o->phase : CAFFE__PHASE__TEST;
  st.level = o ? o->level : 0;
  for (int i = 0; o && i < 4 && o->stages[i]; i++) stages[st.n_stage++] = (char *)o->stages[i];
  st.stage = stages;
  *g = (mdl_graph *)0x1; /* must be reset */
  mdl_status s = mdl_graph_build(net, o && o->use_net_state ? NULL : &st, "t.prototxt",
                                 o && o->src ? test_resolver : NULL, o ? o->src : NULL, g, err);
  if (s != MDL_OK) cr_assert_null(*g, "*out must be NULL on failure");
  return s;
}

mdl_graph *build_net(const Caffe__NetParameter *net, const build_opts *o) {
  mdl_error err = {0};
  mdl_graph *g = NULL;
  mdl_status s = try_build_net(net, o, &g, &err);
  cr_assert_eq(s, MDL_OK, "build failed: %s", err.msg);
  cr_assert_not_null(g);
  return g;
}

mdl_graph *build_file(const char *name, const build_opts *o) {
  Caffe__NetParameter *n = load_net(name);
  mdl_graph *g = build_net(n, o);
  free_net(n);
  return g;
}

mdl_graph *build_text(const char *text, const build_opts *o) {
  Caffe__NetParameter *n = parse_net(text);
  mdl_graph *g = build_net(n, o);
  free_net(n);
  return g;
}

/* Builds and expects failure; returns the message (static). */
const char *fail_text(const char *text, const build_opts *o) {
  static char msg[MDL_ERROR_MSG_MAX];
  Caffe__NetParameter *n = parse_net(text);
  mdl_error err = {0};
  mdl_graph *g = NULL;
  mdl_status s = try_build_net(n, o, &g, &err);
  free_net(n);
  cr_assert_neq(s, MDL_OK, "expected the build to fail:\n%s", text);
  cr_assert_eq(err.code, s);
  snprintf(msg, sizeof msg, "%s", err.msg);
  return msg;
}

void expect_contains(const char *msg, ...) {
  va_list ap;
  va_start(ap, msg);
  for (const char *want; (want = va_arg(ap, const char *));)
    cr_assert(strstr(msg, want), "message lacks <<%s>>:\n%s", want, msg);
  va_end(ap);
}

/* Input layers in0, in1, ... (tops of the same names) from shapes like
 * "2x3x4 5", then layers. */
char *with_inputs(const char *inputs, const char *layers) {
  size_t cap = strlen(layers) + 4096;
  char *t = malloc(cap);
  size_t off = (size_t)snprintf(t, cap, "name: 'test'\n");
  int k = 0;
  const char *p = inputs;
  while (*p) {
    while (*p == ' ') p++;
    if (!*p) break;
    off += (size_t)snprintf(t + off, cap - off,
                            "layer { name: 'in%d' type: 'Input' top: 'in%d' input_param { shape {",
                            k, k);
    while (*p && *p != ' ') {
      char *end;
      long d = strtol(p, &end, 10);
      off += (size_t)snprintf(t + off, cap - off, " dim: %ld", d);
      p = *end == 'x' ? end + 1 : end;
    }
    off += (size_t)snprintf(t + off, cap - off, " } } }\n");
    k++;
  }
  snprintf(t + off, cap - off, "%s\n", layers);
  return t;
}

mdl_graph *build_with(const char *inputs, const char *layers, const build_opts *o) {
  char *t = with_inputs(inputs, layers);
  mdl_graph *g = build_text(t, o);
  free(t);
  return g;
}

const char *fail_with(const char *inputs, const char *layers, const build_opts *o) {
  char *t = with_inputs(inputs, layers);
  const char *m = fail_text(t, o);
  free(t);
  return m;
}

char *shape_of(const mdl_graph *g, const char *blob) {
  static char buf[8][128];
  static int next;
  int b = mdl_graph_find_blob(g, blob);
  cr_assert_geq(b, 0, "no blob \"%s\"", blob);
  char *s = buf[next++ % 8];
  return mdl_shape_str(&g->blob_shape[b], s, sizeof buf[0]);
}

void expect_shape(const mdl_graph *g, const char *blob, const char *want) {
  cr_assert_str_eq(shape_of(g, blob), want, "blob \"%s\"", blob);
}

const mdl_graph_layer *layer(const mdl_graph *g, const char *name) {
  int i = mdl_graph_find_layer(g, name);
  cr_assert_geq(i, 0, "no layer \"%s\"", name);
  return &g->layers[i];
}

/* want: the layer's learnable blob shapes separated by spaces. */
void expect_params(const mdl_graph *g, const char *name, const char *want) {
  const mdl_graph_layer *l = layer(g, name);
  char got[512] = "", s[128];
  for (int i = 0; i < l->n_param; i++) {
    if (i) strcat(got, " ");
    strcat(got, mdl_shape_str(&l->param_shape[i], s, sizeof s));
  }
  cr_assert_str_eq(got, want, "params of \"%s\"", name);
}

/* The shape of blob "out" after one layer on the given inputs. */
const char *out_of(const char *inputs, const char *layer_text) {
  static char s[128];
  mdl_graph *g = build_with(inputs, layer_text, NULL);
  snprintf(s, sizeof s, "%s", shape_of(g, "out"));
  mdl_graph_free(g);
  return s;
}

/* The learnable blob shapes of layer "L" after one layer. */
const char *params_of(const char *inputs, const char *layer_text) {
  static char got[512];
  mdl_graph *g = build_with(inputs, layer_text, NULL);
  const mdl_graph_layer *l = layer(g, "L");
  char s[128];
  got[0] = '\0';
  for (int i = 0; i < l->n_param; i++) {
    if (i) strcat(got, " ");
    strcat(got, mdl_shape_str(&l->param_shape[i], s, sizeof s));
  }
  mdl_graph_free(g);
  return got;
}
