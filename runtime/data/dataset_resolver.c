/* mdl_data_source_info: a data layer's DataSet (as mdl_data_for_layer maps
 * it, `from` resolved against the catalog), probed from headers only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pb.h"
#include "common/suggest.h"
#include "runtime/data/dataset.h"
#include "runtime/data/dataset_resolver.h"

static const char *layer_source(const Caffe__LayerParameter *l) {
  if (l->data_param && l->data_param->source) return l->data_param->source;
  if (l->image_data_param && l->image_data_param->source) return l->image_data_param->source;
  if (l->hdf5_data_param && l->hdf5_data_param->source) return l->hdf5_data_param->source;
  return NULL;
}

/* A job that defines data sets but whose layer names none of them reads the
 * layer's own source; when that fails too, the name was most likely a typo
 * of a data set's: say which. */
static void suggest_set(Memdl__DataSet *const *sets, size_t n_sets, const char *src,
                        mdl_error *err) {
  if (!src || !n_sets || !err) return;
  const char **names = mdl_xcalloc(n_sets, sizeof *names);
  size_t used = 0;
  char list[512] = "";
  for (size_t i = 0; i < n_sets; i++) {
    names[i] = sets[i]->name;
    if (sets[i]->name && used < sizeof list)
      used += (size_t)snprintf(list + used, sizeof list - used, "%s\"%s\"", used ? ", " : "",
                               sets[i]->name);
  }
  const char *near = mdl_suggest_nearest(src, names, n_sets);
  size_t at = strlen(err->msg);
  snprintf(err->msg + at, sizeof err->msg - at,
           "; source \"%s\" matches none of the job's data sets (%s)%s%s%s", src, list,
           near ? "; did you mean \"" : "", near ? near : "", near ? "\"?" : "");
  free(names);
}

mdl_status mdl_data_source_info(void *ctx, const Caffe__LayerParameter *layer,
                                mdl_source_info *info, mdl_error *err) {
  const mdl_data_catalog *cat = ctx;
  Memdl__DataSet *const *sets = cat ? cat->sets : NULL;
  size_t n_sets = cat ? cat->n_sets : 0;
  const char *base = cat ? cat->base_dir : NULL;
  memset(info, 0, sizeof *info);
  mdl_layer_data ld;
  mdl_status st = mdl_data_for_layer(layer, sets, n_sets, &ld, err);
  if (st) return st;
  Memdl__DataSet *ds = NULL;
  st = mdl_data_resolve(sets, n_sets, ld.set, &ds, err);
  mdl_data_info di;
  if (!st) st = mdl_data_probe(ds, base, &di, err);
  if (st) {
    if (!ld.replaced) suggest_set(sets, n_sets, layer_source(layer), err);
    mdl_error_prefix(err, "layer \"%s\": ", layer->name ? layer->name : "(unnamed)");
  } else {
    info->record.n = 3;
    info->record.d[0] = di.channels;
    info->record.d[1] = di.crop ? di.crop : di.height;
    info->record.d[2] = di.crop ? di.crop : di.width;
    info->num_records = di.selected;
    info->num_classes = di.num_classes;
  }
  mdl_pb_free(ds);
  mdl_layer_data_clear(&ld);
  return st;
}
