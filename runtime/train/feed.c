/* The one feeder (see feed.h). Synthetic values are a hash of (batch,
 * index), so any process produces the same ones. */
#include "runtime/train/feed.h"

#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

void mdl_feeder_bind(mdl_feeder *f, const mdl_net *net, int layer, mdl_feed_cursor *cursor) {
  memset(f, 0, sizeof *f);
  f->net = net;
  f->layer = layer;
  f->cursor = cursor;
  const mdl_graph_layer *gl = &mdl_net_graph(net)->layers[layer];
  f->data = gl->n_top > 0 ? mdl_net_blob(net, gl->top[0]) : NULL;
  f->label = gl->n_top > 1 ? mdl_net_blob(net, gl->top[1]) : NULL;
  f->batch = f->data && f->data->n ? f->data->d[0] : 1;
  if (f->data && !f->label) f->label_scratch = mdl_xcalloc((size_t)f->batch + 1, sizeof(float));
  if (f->data && !mdl_net_backend(net)->iface->host_visible) {
    f->staging = mdl_xcalloc((size_t)f->data->count + 1, sizeof(float));
    if (f->label) f->staging_label = mdl_xcalloc((size_t)f->label->count + 1, sizeof(float));
  }
}

void mdl_feeder_release(mdl_feeder *f) {
  if (!f) return;
  free(f->label_scratch);
  free(f->staging);
  free(f->staging_label);
  free(f->set_name);
  memset(f, 0, sizeof *f);
}

mdl_status mdl_feeder_check(const mdl_feeder *f, int c, int h, int w, mdl_error *err) {
  if (!f->data || (int64_t)c * h * w * f->batch == f->data->count) return MDL_OK;
  char s[64];
  return mdl_errorf(err, MDL_ERR_INVALID,
                    "layer \"%s\": top %s holds %lld values but batches of %lld records of "
                    "%dx%dx%d hold %lld",
                    mdl_net_layer_name(f->net, f->layer),
                    mdl_tensor_shape_str(f->data, s, sizeof s), (long long)f->data->count,
                    (long long)f->batch, c, h, w, (long long)((int64_t)c * h * w * f->batch));
}

static void synthetic_fill(float *x, int64_t n, uint64_t k, float lo, float hi) {
  for (int64_t i = 0; i < n; i++)
    x[i] = lo + (hi - lo) * mdl_hash_unit(mdl_hash2(k * 1315423911u + 17, (uint64_t)i));
}

mdl_status mdl_feeder_fill(mdl_feeder *f, uint64_t k, mdl_error *err) {
  if (!f->data) return MDL_OK;
  /* Host-visible backends get the batch written in place; others through
   * a host staging buffer and one upload per top. */
  float *data = f->staging ? f->staging : f->data->data;
  float *label = !f->label          ? f->label_scratch
                 : f->staging_label ? f->staging_label
                                    : f->label->data;
  if (!f->cursor || !f->cursor->b) {
    synthetic_fill(data, f->data->count, k, 0, 1);
    if (f->label) memset(label, 0, (size_t)f->label->count * sizeof(float));
  } else {
    mdl_feed_cursor *c = f->cursor;
    if (c->next != k) mdl_batcher_seek(c->b, k);
    mdl_status st = mdl_batcher_next(c->b, data, label, err);
    c->next = k + 1;
    if (st != MDL_OK) return st;
  }
  const mdl_backend *be = mdl_net_backend(f->net);
  if (f->staging) mdl_backend_to_device(be, f->data->data, f->staging, f->data->count);
  if (f->staging_label)
    mdl_backend_to_device(be, f->label->data, f->staging_label, f->label->count);
  return MDL_OK;
}

void mdl_feed_inputs(mdl_net *net, uint64_t k) {
  const mdl_backend *be = mdl_net_backend(net);
  for (int i = 0; i < mdl_net_n_inputs(net); i++) {
    mdl_tensor *x = mdl_net_blob(net, mdl_net_input_blob(net, i));
    if (be->iface->host_visible) {
      synthetic_fill(x->data, x->count, k + (uint64_t)i, 0, 1);
    } else {
      float *h = mdl_xcalloc((size_t)x->count + 1, sizeof(float));
      synthetic_fill(h, x->count, k + (uint64_t)i, 0, 1);
      mdl_backend_to_device(be, x->data, h, x->count);
      free(h);
    }
  }
}
