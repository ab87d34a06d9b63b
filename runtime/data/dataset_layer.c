/* Caffe's data layers as DataSets: Data (LMDB), ImageData (image list),
 * MemoryData (shape only; records from a job data set), HDF5Data, with
 * transform_param and the legacy per-layer scale/mean_file/crop/mirror
 * folded into one transform stage. A job data set named like the layer's
 * source, or like the layer, takes its place. Input and DummyData are the
 * engine's, not the pipeline's. */
#include <stdlib.h>
#include <string.h>

#include "common/pb.h"
#include "runtime/data/dataset_impl.h"

bool mdl_data_is_pipeline_layer(const Caffe__LayerParameter *layer) {
  const char *t = layer && layer->type ? layer->type : "";
  return !strcmp(t, "Data") || !strcmp(t, "ImageData") || !strcmp(t, "MemoryData") ||
         !strcmp(t, "HDF5Data");
}

void mdl_layer_data_clear(mdl_layer_data *d) {
  if (!d) return;
  mdl_pb_free(d->set);
  memset(d, 0, sizeof *d);
}

static bool same_source(const char *a, const char *b) {
  if (!a || !b || !a[0]) return false;
  size_t na = strlen(a), nb = strlen(b);
  while (na > 1 && a[na - 1] == '/') na--;
  while (nb > 1 && b[nb - 1] == '/') nb--;
  return na == nb && !memcmp(a, b, na);
}

static bool has_transform_stage(const Memdl__DataSet *ds) {
  for (size_t i = 0; i < ds->n_stage; i++)
    if (ds->stage[i]->kind_case == MEMDL__STAGE__KIND_TRANSFORM) return true;
  return false;
}

/* Legacy per-layer transform fields (pre-transform_param Caffe). */
typedef struct legacy_xf {
  bool any;
  float scale;
  bool has_scale;
  const char *mean_file;
  uint32_t crop_size;
  bool mirror;
} legacy_xf;

/* The layer's transform (transform_param with legacy fields folded in),
 * shallow: points into the layer. false when it has none. */
static bool layer_transform(const Caffe__LayerParameter *l, const legacy_xf *lg,
                            Caffe__TransformationParameter *t) {
  Caffe__TransformationParameter init = CAFFE__TRANSFORMATION_PARAMETER__INIT;
  *t = l->transform_param ? *l->transform_param : init;
  if (lg->has_scale && !t->has_scale) {
    t->has_scale = 1;
    t->scale = lg->scale;
  }
  if (lg->mean_file && !t->mean_file) t->mean_file = (char *)lg->mean_file;
  if (lg->crop_size && !t->crop_size) {
    t->has_crop_size = 1;
    t->crop_size = lg->crop_size;
  }
  if (lg->mirror && !t->mirror) {
    t->has_mirror = 1;
    t->mirror = 1;
  }
  return l->transform_param || lg->any;
}

/* What a Caffe data layer reads: its source as a memdl Source, its batch
 * size and shuffle (into out), and its legacy transform fields. The
 * protobuf parts live in ls, which the caller keeps while it uses source. */
typedef struct layer_source {
  const char *src; /* the layer's source string (NULL for MemoryData) */
  legacy_xf lg;
  Memdl__Source source;
  Memdl__LmdbSource lmdb;
  Memdl__ImageListSource il;
  Memdl__MemorySource mem;
  Memdl__Hdf5Source h5;
  uint32_t shape[3];
} layer_source;

static mdl_status read_layer_source(const Caffe__LayerParameter *layer, const char *name,
                                    const char *type, layer_source *ls, mdl_layer_data *out,
                                    mdl_error *err) {
  *ls = (layer_source){.source = MEMDL__SOURCE__INIT,
                       .lmdb = MEMDL__LMDB_SOURCE__INIT,
                       .il = MEMDL__IMAGE_LIST_SOURCE__INIT,
                       .mem = MEMDL__MEMORY_SOURCE__INIT,
                       .h5 = MEMDL__HDF5_SOURCE__INIT};
  if (!strcmp(type, "Data")) {
    const Caffe__DataParameter *p = layer->data_param;
    if (!p || !p->source)
      return mdl_errorf(err, MDL_ERR_INVALID, "layer \"%s\" (Data): data_param.source is missing",
                        name);
    ls->src = p->source;
    out->batch_size = p->batch_size;
    ls->lg = (legacy_xf){p->has_scale || p->mean_file || p->crop_size || p->mirror,
                         p->scale,
                         p->has_scale,
                         p->mean_file,
                         p->crop_size,
                         p->mirror};
    ls->lmdb.path = p->source;
    ls->source.kind_case = MEMDL__SOURCE__KIND_LMDB;
    ls->source.lmdb = &ls->lmdb;
  } else if (!strcmp(type, "ImageData")) {
    const Caffe__ImageDataParameter *p = layer->image_data_param;
    if (!p || !p->source)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "layer \"%s\" (ImageData): image_data_param.source is missing", name);
    ls->src = p->source;
    out->batch_size = p->batch_size;
    out->shuffle = p->shuffle;
    ls->lg = (legacy_xf){p->has_scale || p->mean_file || p->crop_size || p->mirror,
                         p->scale,
                         p->has_scale,
                         p->mean_file,
                         p->crop_size,
                         p->mirror};
    ls->il.list = p->source;
    ls->il.root = p->root_folder;
    ls->il.has_is_color = 1;
    ls->il.is_color = p->is_color;
    ls->il.has_new_height = ls->il.has_new_width = 1;
    ls->il.new_height = p->new_height;
    ls->il.new_width = p->new_width;
    ls->source.kind_case = MEMDL__SOURCE__KIND_IMAGE_LIST;
    ls->source.image_list = &ls->il;
  } else if (!strcmp(type, "MemoryData")) {
    const Caffe__MemoryDataParameter *p = layer->memory_data_param;
    if (!p || !p->channels || !p->height || !p->width)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "layer \"%s\" (MemoryData): memory_data_param needs channels, height and "
                        "width",
                        name);
    out->batch_size = p->batch_size;
    ls->shape[0] = p->channels;
    ls->shape[1] = p->height;
    ls->shape[2] = p->width;
    ls->mem.n_shape = 3;
    ls->mem.shape = ls->shape;
    ls->source.kind_case = MEMDL__SOURCE__KIND_MEMORY;
    ls->source.memory = &ls->mem;
  } else if (!strcmp(type, "HDF5Data")) {
    const Caffe__HDF5DataParameter *p = layer->hdf5_data_param;
    if (!p || !p->source)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "layer \"%s\" (HDF5Data): hdf5_data_param.source is missing", name);
    /* Caffe reads one dataset per top, named like it; a data set holds
     * records and one integer label each, so exactly two tops. */
    if (layer->n_top != 2)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "layer \"%s\" (HDF5Data): has %zu tops; memdl reads exactly two (the "
                        "records and their labels, e.g. top: \"data\" top: \"label\")",
                        name, layer->n_top);
    ls->src = p->source;
    out->batch_size = p->batch_size;
    out->shuffle = p->shuffle;
    ls->h5.source = p->source;
    ls->h5.data = layer->top[0];
    ls->h5.label = layer->top[1];
    ls->source.kind_case = MEMDL__SOURCE__KIND_HDF5;
    ls->source.hdf5 = &ls->h5;
  } else {
    return mdl_errorf(err, MDL_ERR_INVALID,
                      "layer \"%s\" of type %s is not a pipeline data layer (Data, ImageData, "
                      "MemoryData, HDF5Data)",
                      name, type[0] ? type : "(none)");
  }

  return MDL_OK;
}

mdl_status mdl_data_for_layer(const Caffe__LayerParameter *layer, Memdl__DataSet *const *sets,
                              size_t n_sets, mdl_layer_data *out, mdl_error *err) {
  memset(out, 0, sizeof *out);
  const char *name = layer->name ? layer->name : "(unnamed)";
  const char *type = layer->type ? layer->type : "";
  layer_source ls;
  mdl_status rs = read_layer_source(layer, name, type, &ls, out, err);
  if (rs != MDL_OK) return rs;
  const char *src = ls.src;
  Caffe__TransformationParameter xf;
  bool has_xf = layer_transform(layer, &ls.lg, &xf);
  Memdl__Stage xf_stage = MEMDL__STAGE__INIT;
  xf_stage.kind_case = MEMDL__STAGE__KIND_TRANSFORM;
  xf_stage.transform = &xf;

  const Memdl__DataSet *job = NULL;
  for (size_t i = 0; i < n_sets && !job; i++)
    if (sets[i]->name && (same_source(sets[i]->name, src) || !strcmp(sets[i]->name, name)))
      job = sets[i];
  if (job) {
    /* The job's stages win; the layer's transform only when it has none. */
    Memdl__Stage **stages = NULL;
    Memdl__DataSet tmp = *job;
    if (has_xf && !has_transform_stage(job)) {
      stages = mdl_xcalloc(job->n_stage + 1, sizeof *stages);
      if (job->n_stage) memcpy(stages, job->stage, job->n_stage * sizeof *stages);
      stages[job->n_stage] = &xf_stage;
      tmp.stage = stages;
      tmp.n_stage = job->n_stage + 1;
    }
    out->set = mdl_pb_dup(&tmp);
    free(stages);
    out->replaced = true;
    if (!out->batch_size) out->batch_size = job->batch_size;
    return MDL_OK;
  }
  Memdl__DataSet ds = MEMDL__DATA_SET__INIT;
  ds.name = (char *)name;
  ds.source = &ls.source;
  Memdl__Stage *stages[1] = {&xf_stage};
  if (has_xf) {
    ds.n_stage = 1;
    ds.stage = stages;
  }
  if (out->batch_size) {
    ds.has_batch_size = 1;
    ds.batch_size = out->batch_size;
  }
  out->set = mdl_pb_dup(&ds);
  return MDL_OK;
}
