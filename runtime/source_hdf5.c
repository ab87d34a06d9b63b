/* Caffe's HDF5Data sources. This build has no libhdf5, so both probe and
 * scan report that clearly instead of failing obscurely. */
#include "runtime/dataset_impl.h"

static mdl_status hdf5_missing(const mdl_src_ctx *c, mdl_error *err) {
  return mdl_errorf(err, MDL_ERR_INVALID,
                    "%s: HDF5 sources need libhdf5, and this memdl was built without it; convert "
                    "the data to LMDB, IDX or CSV",
                    c->src->hdf5->source ? c->src->hdf5->source : "hdf5");
}

static mdl_status hdf5_probe(const mdl_src_ctx *c, mdl_data_info *info, mdl_error *err) {
  (void)info;
  return hdf5_missing(c, err);
}

static mdl_status hdf5_scan(const mdl_src_ctx *c, const mdl_data_info *info, mdl_sink *sink,
                            mdl_error *err) {
  (void)info, (void)sink;
  return hdf5_missing(c, err);
}

const mdl_source_iface mdl_source_hdf5 = {"hdf5", hdf5_probe, hdf5_scan};
