/* Synthetic records from a seed: class k has a fixed random prototype image,
 * record r is its class's prototype blended with per-record noise (uint8).
 * Learnable, cheap, and record r is the same in every partitioning. */
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "runtime/data/dataset_impl.h"

static mdl_status syn_probe(const mdl_src_ctx *c, mdl_data_info *info, mdl_error *err) {
  const Memdl__SyntheticSource *s = c->src->synthetic;
  mdl_status st = mdl_shape_from_dims("synthetic", s->shape, s->n_shape, &info->channels,
                                      &info->height, &info->width, err);
  if (st) return st;
  if (s->classes == 0 || s->classes > (1u << 20))
    return mdl_errorf(err, MDL_ERR_INVALID, "synthetic: classes must be in [1, 2^20], not %u",
                      s->classes);
  if (s->records > (1ull << 40))
    return mdl_errorf(err, MDL_ERR_INVALID, "synthetic: %llu records",
                      (unsigned long long)s->records);
  info->dtype = MDL_DTYPE_U8;
  info->records = (int64_t)s->records;
  info->num_classes = (int)s->classes;
  return MDL_OK;
}

static mdl_status syn_scan(const mdl_src_ctx *c, const mdl_data_info *info, mdl_sink *sink,
                           mdl_error *err) {
  const Memdl__SyntheticSource *s = c->src->synthetic;
  size_t n = (size_t)info->channels * info->height * info->width;
  uint8_t *proto = malloc(n * s->classes), *px = malloc(n);
  if (!proto || !px) {
    free(proto);
    free(px);
    return mdl_errorf(err, MDL_ERR_NOMEM, "synthetic: out of memory for %u prototypes", s->classes);
  }
  for (uint32_t k = 0; k < s->classes; k++) {
    mdl_prng g;
    mdl_prng_seed(&g, mdl_hash2(s->seed, 0x70726f746full + k)); /* "proto" + k */
    for (size_t i = 0; i < n; i++) proto[k * n + i] = (uint8_t)(mdl_prng_next(&g) >> 56);
  }
  mdl_status st = MDL_OK;
  for (int64_t r = 0; r < info->records && !st; r++) {
    if (mdl_select_done(&sink->sel, r)) break;
    if (!mdl_sink_want(sink, r)) continue;
    uint64_t h = mdl_hash2(s->seed, (uint64_t)r);
    int32_t label = (int32_t)(h % s->classes);
    mdl_prng g;
    mdl_prng_seed(&g, h);
    const uint8_t *p = proto + (size_t)label * n;
    for (size_t i = 0; i < n; i++) {
      unsigned noise = (unsigned)(mdl_prng_next(&g) >> 56);
      px[i] = (uint8_t)((3u * p[i] + noise) / 4u);
    }
    mdl_rec rec = {.index = r,
                   .label = label,
                   .dtype = MDL_DTYPE_U8,
                   .c = info->channels,
                   .h = info->height,
                   .w = info->width,
                   .px = px};
    st = mdl_sink_put(sink, &rec, err);
  }
  free(proto);
  free(px);
  return st;
}

const mdl_source_iface mdl_source_synthetic = {"synthetic", syn_probe, syn_scan};
