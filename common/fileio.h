/* Whole-file reads and atomic writes: the one place memdl touches files as
 * blobs of bytes (weights, snapshots, text). Parsing is elsewhere. */
#ifndef MDL_COMMON_FILEIO_H
#define MDL_COMMON_FILEIO_H

#include <stddef.h>

#include "common/error.h"

/* Reads all of path (a regular file or a pipe). On success *data is
 * malloc'd, the caller's, and NUL-terminated after its *len bytes, so text
 * callers may use it as a string; on failure *data is NULL and err names
 * the file. */
mdl_status mdl_file_read(const char *path, char **data, size_t *len, mdl_error *err);

/* Writes len bytes to path atomically: path.tmp.<pid>, fsync, rename, then
 * fsync of the folder. On failure path is left as it was and no temporary
 * file remains. */
mdl_status mdl_file_write_atomic(const char *path, const void *buf, size_t len, mdl_error *err);

/* The folder part of path: "." when it has none, "/" for a file in the
 * root. The caller frees it. */
char *mdl_path_dir(const char *path);

/* rel resolved against dir: a copy of rel when it is absolute or dir is
 * NULL, "" or "."; NULL when rel is NULL. The caller frees it. */
char *mdl_path_join(const char *dir, const char *rel);

#endif
