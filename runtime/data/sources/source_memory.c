/* Records written inline in the DataSet message (small data, tests, and
 * the shape of Caffe's MemoryData layers, whose records a job data set
 * supplies). Stored as float. */
#include <stdlib.h>

#include "runtime/data/dataset_impl.h"

static mdl_status mem_probe(const mdl_src_ctx *c, mdl_data_info *info, mdl_error *err) {
  const Memdl__MemorySource *s = c->src->memory;
  mdl_status st = mdl_shape_from_dims("memory", s->shape, s->n_shape, &info->channels,
                                      &info->height, &info->width, err);
  if (st) return st;
  size_t n = (size_t)info->channels * info->height * info->width;
  if (s->n_data != s->n_label * n)
    return mdl_errorf(err, MDL_ERR_INVALID, "memory: %zu values for %zu labels of %zu values each",
                      s->n_data, s->n_label, n);
  info->dtype = MDL_DTYPE_F32;
  info->records = (int64_t)s->n_label;
  int32_t mx = -1;
  for (size_t i = 0; i < s->n_label; i++) mx = s->label[i] > mx ? s->label[i] : mx;
  info->num_classes = mx + 1;
  return MDL_OK;
}

static mdl_status mem_scan(const mdl_src_ctx *c, const mdl_data_info *info, mdl_sink *sink,
                           mdl_error *err) {
  const Memdl__MemorySource *s = c->src->memory;
  if (s->n_label == 0)
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "memory source holds no records (a Caffe MemoryData layer takes its "
                      "records from a job data set named like the layer)");
  size_t n = (size_t)info->channels * info->height * info->width;
  mdl_status st = MDL_OK;
  const char *saved_name = sink->src_name;
  sink->src_name = "memory";
  for (int64_t r = 0; r < info->records && !st; r++) {
    if (!mdl_sink_want(sink, r)) continue;
    mdl_rec rec = {.index = r,
                   .label = s->label[r],
                   .dtype = MDL_DTYPE_F32,
                   .c = info->channels,
                   .h = info->height,
                   .w = info->width,
                   .px = s->data + (size_t)r * n};
    st = mdl_sink_put(sink, &rec, err);
  }
  sink->src_name = saved_name;
  return st;
}

const mdl_source_iface mdl_source_memory = {"memory", mem_probe, mem_scan};
