/* Helpers shared by the graph tests: parsing nets (inline text or
 * tests/nets files), building them for a phase/level/stages, and asserting
 * blob shapes, learnable-blob shapes and error messages. Test-only. */
#ifndef MDL_TESTS_GRAPH_TEST_UTIL_H
#define MDL_TESTS_GRAPH_TEST_UTIL_H

#include <stdbool.h>

#include "caffe.pb-c.h"
#include "compiler/graph.h"
#include "compiler/layers.h"

/* Asks LeakSanitizer (when linked in) for leaks; Criterion would pass a test
 * whose process reports them only at exit. */
void check_leaks(void);

/* A record shape for Data-like layers. A source containing "named" fails
 * with a message naming the layer, one containing "missing" without. */
typedef struct test_source {
  mdl_shape rec;
  int calls;
} test_source;

mdl_status test_resolver(void *ctx, const Caffe__LayerParameter *l, mdl_source_info *info,
                         mdl_error *err);

typedef struct build_opts {
  Caffe__Phase phase;
  int level;
  const char *stages[4];
  test_source *src;
  bool use_net_state; /* pass state NULL */
} build_opts;

/* Parsing; failures assert. Free with free_net. */
Caffe__NetParameter *parse_net(const char *text);
Caffe__NetParameter *load_net(const char *name); /* tests/nets/<name> */
void free_net(Caffe__NetParameter *n);

/* Building with o (NULL: TEST, level 0, no stages, no resolver); the
 * build_* forms assert success, fail_* assert failure and return the
 * message (static, valid until the next call). */
mdl_status try_build_net(const Caffe__NetParameter *net, const build_opts *o, mdl_graph **g,
                         mdl_error *err);
mdl_graph *build_net(const Caffe__NetParameter *net, const build_opts *o);
mdl_graph *build_file(const char *name, const build_opts *o);
mdl_graph *build_text(const char *text, const build_opts *o);
const char *fail_text(const char *text, const build_opts *o);

/* Input layers in0, in1, ... (tops of the same names) from shapes like
 * "2x3x4 5", then layers; the result is malloc'd. */
char *with_inputs(const char *inputs, const char *layers);
mdl_graph *build_with(const char *inputs, const char *layers, const build_opts *o);
const char *fail_with(const char *inputs, const char *layers, const build_opts *o);

/* Asserts msg contains each string up to a NULL. */
void expect_contains(const char *msg, ...);

char *shape_of(const mdl_graph *g, const char *blob); /* rotating static buffers */
void expect_shape(const mdl_graph *g, const char *blob, const char *want);
const mdl_graph_layer *layer(const mdl_graph *g, const char *name);
/* want: the layer's learnable blob shapes separated by spaces. */
void expect_params(const mdl_graph *g, const char *name, const char *want);

/* One layer "L" (top "out") on the given inputs: the shape of "out", or the
 * learnable blob shapes of L (static buffers). */
const char *out_of(const char *inputs, const char *layer_text);
const char *params_of(const char *inputs, const char *layer_text);

#endif
