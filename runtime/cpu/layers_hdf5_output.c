/* HDF5Output: writes its two bottoms to hdf5_output_param.file_name as
 * Caffe's HDF5OutputLayer does, float32 datasets "data" and "label", each
 * N x C x H x W (Caffe's legacy 4-axis view of the blob). Atomic: rows go to
 * <file_name>.tmp.<pid>.<k> and the file appears under its name, complete,
 * when the layer is freed. Every forward appends its rows (Caffe can write
 * only one forward; a second fails on the existing dataset names). A layer
 * freed without any forward leaves file_name as it was. No gradient.
 *
 * forward cannot fail by contract: a write error is printed once on stderr,
 * later rows are dropped and the temporary file is removed at free, so a
 * partial file never appears under file_name. */
#include <hdf5.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/h5lock.h"
#include "runtime/cpu/layers_cpu.h"

typedef struct h5out_priv {
  char *path, *tmp;
  hid_t file, ds[2]; /* "data", "label" */
  hsize_t dims[2][4];
  int64_t rows; /* written so far */
  bool failed;
} h5out_priv;

static const char *const k_names[2] = {"data", "label"};

/* Call with the lock held; HDF5's own error printing is off meanwhile. */
static void h5out_close(h5out_priv *p) {
  for (int i = 0; i < 2; i++)
    if (p->ds[i] >= 0) H5Dclose(p->ds[i]);
  if (p->file >= 0) H5Fclose(p->file);
  p->ds[0] = p->ds[1] = p->file = H5I_INVALID_HID;
}

/* An empty, extendible, chunked N x C x H x W float dataset. */
static hid_t make_dataset(hid_t file, const char *name, const hsize_t dims[4]) {
  hsize_t zero[4] = {0, dims[1], dims[2], dims[3]};
  hsize_t max[4] = {H5S_UNLIMITED, dims[1], dims[2], dims[3]};
  hsize_t chunk[4] = {dims[0] ? dims[0] : 1, dims[1] ? dims[1] : 1, dims[2] ? dims[2] : 1,
                      dims[3] ? dims[3] : 1};
  hid_t space = H5Screate_simple(4, zero, max);
  hid_t plist = H5Pcreate(H5P_DATASET_CREATE);
  hid_t ds = H5I_INVALID_HID;
  if (space >= 0 && plist >= 0 && H5Pset_chunk(plist, 4, chunk) >= 0)
    ds = H5Dcreate2(file, name, H5T_NATIVE_FLOAT, space, H5P_DEFAULT, plist, H5P_DEFAULT);
  if (plist >= 0) H5Pclose(plist);
  if (space >= 0) H5Sclose(space);
  return ds;
}

static mdl_status h5out_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__HDF5OutputParameter *hp = l->lp->hdf5_output_param;
  if (!hp || !hp->file_name || !hp->file_name[0])
    return MDL_LAYER_ERR(l, err, "hdf5_output_param.file_name is missing");
  h5out_priv *p = mdl_xcalloc(1, sizeof *p);
  l->priv = p;
  p->file = p->ds[0] = p->ds[1] = H5I_INVALID_HID;
  p->path = mdl_xstrdup(hp->file_name);
  static atomic_int serial;
  size_t n = strlen(p->path) + 64;
  p->tmp = mdl_xmalloc(n);
  snprintf(p->tmp, n, "%s.tmp.%ld.%d", p->path, (long)getpid(), atomic_fetch_add(&serial, 1));
  for (int b = 0; b < 2; b++) {
    mdl_tensor t;
    mdl_tensor_from_shape(&t, &l->bottom_shape[b]);
    for (int i = 0; i < 4; i++) p->dims[b][i] = (hsize_t)mdl_tensor_legacy_dim(&t, i);
  }
  mdl_h5_lock();
  H5E_auto2_t old_fn = NULL;
  void *old_data = NULL;
  H5Eget_auto2(H5E_DEFAULT, &old_fn, &old_data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  p->file = H5Fcreate(p->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  for (int b = 0; b < 2 && p->file >= 0; b++)
    p->ds[b] = make_dataset(p->file, k_names[b], p->dims[b]);
  bool ok = p->file >= 0 && p->ds[0] >= 0 && p->ds[1] >= 0;
  if (!ok) {
    h5out_close(p);
    unlink(p->tmp);
  }
  H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
  mdl_h5_unlock();
  if (!ok)
    return mdl_errorf(err, MDL_ERR_INVALID, "layer \"%s\" (HDF5Output): cannot create %s (for %s)",
                      l->name, p->tmp, p->path);
  return MDL_OK;
}

/* Appends N rows of x to dataset ds (dims: one forward's shape). */
static bool append(hid_t ds, const hsize_t dims[4], int64_t rows, const float *x) {
  hsize_t size[4] = {(hsize_t)rows + dims[0], dims[1], dims[2], dims[3]};
  hsize_t start[4] = {(hsize_t)rows, 0, 0, 0};
  if (H5Dset_extent(ds, size) < 0) return false;
  hid_t fspace = H5Dget_space(ds), mspace = H5Screate_simple(4, dims, NULL);
  bool ok = fspace >= 0 && mspace >= 0 &&
            H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, dims, NULL) >= 0 &&
            H5Dwrite(ds, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, x) >= 0;
  if (mspace >= 0) H5Sclose(mspace);
  if (fspace >= 0) H5Sclose(fspace);
  return ok;
}

static void h5out_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  (void)top;
  h5out_priv *p = l->priv;
  if (p->failed) return;
  mdl_h5_lock();
  H5E_auto2_t old_fn = NULL;
  void *old_data = NULL;
  H5Eget_auto2(H5E_DEFAULT, &old_fn, &old_data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  bool ok = append(p->ds[0], p->dims[0], p->rows, bottom[0]->data) &&
            append(p->ds[1], p->dims[1], p->rows, bottom[1]->data) &&
            H5Fflush(p->file, H5F_SCOPE_LOCAL) >= 0;
  H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
  mdl_h5_unlock();
  if (ok) {
    p->rows += (int64_t)p->dims[0][0];
  } else {
    p->failed = true;
    fprintf(stderr, "memdl: layer \"%s\" (HDF5Output): writing %s failed; %s will not be written\n",
            l->name, p->tmp, p->path);
  }
}

static void h5out_free(mdl_layer *l) {
  h5out_priv *p = l->priv;
  mdl_h5_lock();
  H5E_auto2_t old_fn = NULL;
  void *old_data = NULL;
  H5Eget_auto2(H5E_DEFAULT, &old_fn, &old_data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  bool had_file = p->file >= 0, closed = true;
  for (int i = 0; i < 2; i++)
    if (p->ds[i] >= 0 && H5Dclose(p->ds[i]) < 0) closed = false;
  if (had_file && H5Fclose(p->file) < 0) closed = false; /* last: flushes everything */
  H5Eset_auto2(H5E_DEFAULT, old_fn, old_data);
  mdl_h5_unlock();
  if (had_file) {
    if (closed && !p->failed && p->rows > 0) {
      if (rename(p->tmp, p->path) != 0) {
        fprintf(stderr, "memdl: layer \"%s\" (HDF5Output): cannot rename %s to %s\n", l->name,
                p->tmp, p->path);
        unlink(p->tmp);
      }
    } else {
      unlink(p->tmp);
    }
  }
  free(p->path);
  free(p->tmp);
  free(p);
}

const mdl_layer_impl mdl_cpu_hdf5_output_layer = {"HDF5Output",  h5out_setup, NULL,
                                                  h5out_forward, NULL,        h5out_free};
