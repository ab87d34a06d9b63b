/* mdl_data_source_info: a data layer's DataSet (as mdl_data_for_layer maps
 * it, `from` resolved against the catalog), probed from headers only. */
#include <string.h>

#include "common/pb.h"
#include "runtime/data/dataset.h"
#include "runtime/data/dataset_resolver.h"

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
