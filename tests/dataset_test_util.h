/* Helpers for the data set tests: generators of IDX, LMDB (caffe.Datum),
 * PNG, JPEG, CSV and binaryproto files. Directories and plain files come
 * from tests/testutil.h. */
#ifndef MDL_TESTS_DATASET_TEST_UTIL_H
#define MDL_TESTS_DATASET_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data.pb-c.h"
#include "runtime/data/dataset.h"
#include "tests/testutil.h"

/* An IDX file: type 0x08 (ubyte) or 0x0D (float, values given as float in
 * host order); dims[0] is the record count. gz: gzip-compressed. */
void tu_write_idx(const char *path, bool gz, int type, int ndim, const uint32_t *dims,
                  const void *data);

/* A caffe.Datum serialised; caller frees *out. */
void tu_datum_raw(int c, int h, int w, const uint8_t *chw, int label, uint8_t **out, size_t *len);
void tu_datum_float(int c, int h, int w, const float *chw, int label, uint8_t **out, size_t *len);
void tu_datum_encoded(const uint8_t *img, size_t img_len, int label, uint8_t **out, size_t *len);

/* An LMDB directory of n values with keys "%08d"; values[i]/lens[i]. */
void tu_write_lmdb(const char *dir, int n, uint8_t *const *values, const size_t *lens);

/* PNG / JPEG of a c x h x w image given as CHW planes (BGR for c == 3). */
void tu_png(int c, int h, int w, const uint8_t *chw, uint8_t **out, size_t *len);
void tu_jpeg(int c, int h, int w, const uint8_t *chw, int quality, uint8_t **out, size_t *len);

/* A binaryproto mean (caffe.BlobProto 1 x c x h x w). */
void tu_write_mean(const char *path, int c, int h, int w, const float *mean);

/* Parses a DataSet in text format (asserts success); free with mdl_pb_free. */
Memdl__DataSet *tu_dataset(const char *text);

/* Builds a whole data set with one or `parts` partitions (asserts success). */
mdl_dataset *tu_build(const Memdl__DataSet *ds, const char *base, uint32_t parts);

/* Builds and expects failure with code; returns the error message
 * (static buffer). */
const char *tu_build_fails(const Memdl__DataSet *ds, const char *base, mdl_status code);

#endif
