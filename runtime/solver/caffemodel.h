/* Weights and solver state files as Caffe writes them: .caffemodel (a binary
 * NetParameter whose layers carry BlobProto blobs) loaded into and saved
 * from a net by layer name, and .solverstate (iter, learned_net, history,
 * current_step). Writes are atomic (temp file, fsync, rename). Owns the
 * file formats and snapshot naming; not when to snapshot (runtime/train/train.h). */
#ifndef MDL_RUNTIME_CAFFEMODEL_H
#define MDL_RUNTIME_CAFFEMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caffe.pb-c.h"
#include "common/error.h"
#include "common/fileio.h"
#include "runtime/engine/net.h"
#include "runtime/solver/solver.h"

/* The shape a BlobProto describes: `shape` when present, else Caffe's legacy
 * num/channels/height/width (4 axes). Returns the element count, or -1 when
 * the blob carries no shape at all (*n_axes 0), or more than 8 axes, a
 * negative axis or a count beyond int64 (the axes are still filled in). */
int64_t mdl_blob_proto_shape(const Caffe__BlobProto *b, int *n_axes, int64_t dim[8]);

/* Copies the values of b (float `data` or `double_data`) into dst, which
 * holds `count` floats. MDL_ERR_INVALID when b holds a different number of
 * values; `what` names the blob in the message. */
mdl_status mdl_blob_proto_values(const Caffe__BlobProto *b, float *dst, int64_t count,
                                 const char *what, mdl_error *err);

/* Does a BlobProto fit a tensor of shape t? As Caffe's Blob::ShapeEquals: a
 * legacy 4-D blob matches when t, padded with leading 1s to 4 axes, equals
 * it; a `shape` blob must match exactly. */
bool mdl_blob_proto_fits(const Caffe__BlobProto *b, const mdl_tensor *t);

/* Reads a .caffemodel (binary NetParameter). On success *out is the
 * caller's (mdl_pb_free / protobuf_c_message_free_unpacked). A file that is
 * not a NetParameter (a .solverstate, a text .prototxt, garbage) is
 * MDL_ERR_INVALID saying what it looks like. */
mdl_status mdl_caffemodel_read(const char *path, Caffe__NetParameter **out, mdl_error *err);

/* Copies weights from the file into net by layer name (V2 `layer` and V1
 * `layers` entries both count), as Caffe's CopyTrainedLayersFrom: layers of
 * the net missing from the file keep what they have (their fillers); file
 * layers missing from the net are ignored; a blob count or shape mismatch
 * is MDL_ERR_INVALID naming the layer and both shapes (then some layers may
 * already hold the file's weights). *n_loaded (may be NULL) gets the number
 * of layers copied. */
mdl_status mdl_caffemodel_load(mdl_net *net, const char *path, int *n_loaded, mdl_error *err);

/* The same from a NetParameter already in memory; `what` names it in errors. */
mdl_status mdl_caffemodel_copy(mdl_net *net, const Caffe__NetParameter *np, const char *what,
                               int *n_loaded, mdl_error *err);

/* Writes net's layers (their LayerParameter as given, plus blobs with
 * `shape` and float `data`, as Caffe 1.0) to path atomically. */
mdl_status mdl_caffemodel_save(const mdl_net *net, const char *path, mdl_error *err);

/* Snapshot file name: "<prefix>_iter_<iter><ext>" (Caffe's SnapshotFilename),
 * ext e.g. ".caffemodel". Caller frees. */
char *mdl_snapshot_name(const char *prefix, int iter, const char *ext);

/* The largest N of the <prefix>_iter_N.solverstate files in prefix's
 * folder (what `--resume` without a file continues), or -1 when none. */
int mdl_snapshot_newest(const char *prefix);

/* Writes s's iter, current_step and history (Caffe's order: the first set
 * for every blob, then the second) plus learned_net to path atomically. The
 * RNG seed of the run is stored as field 1000 (fixed64), which Caffe skips
 * as unknown, so a resumed run draws as the original did. */
mdl_status mdl_solverstate_save(mdl_solver *s, const char *learned_net, uint64_t seed,
                                const char *path, mdl_error *err);

/* Restores iter, current_step and history into s (whose blobs must match the
 * file's history in number and size). *learned_net (may be NULL) gets the
 * weights file the state names, resolved: as written when it exists, else
 * beside the .solverstate (caller frees; NULL when the file names none).
 * seed and has_seed (may be NULL) get the stored seed. A .caffemodel or other
 * file is MDL_ERR_INVALID with a message saying what to pass instead. On
 * failure s is unchanged. */
mdl_status mdl_solverstate_load(const char *path, mdl_solver *s, char **learned_net, uint64_t *seed,
                                bool *has_seed, mdl_error *err);

#endif
