/* Decoding one record's pixels: Caffe Datum messages (raw uint8 data,
 * float_data, or encoded PNG/JPEG) and PNG/JPEG image bytes, into CHW planes
 * with colour in BGR order, as Caffe's OpenCV path stores them. Owns image
 * codecs; not files, not batching. Errors do not name the file: callers add
 * the file and record. */
#ifndef MDL_RUNTIME_DATUM_H
#define MDL_RUNTIME_DATUM_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "runtime/data/dataset.h"

/* A decoded record. px and tmp are reused across calls (grown as needed);
 * free with mdl_image_free. Zero-initialise before first use. */
typedef struct mdl_image {
  int c, h, w;
  mdl_dtype dtype;
  int32_t label;
  void *px; /* c*h*w uint8_t or float */
  size_t px_cap;
  uint8_t *tmp; /* interleaved rows while decoding */
  size_t tmp_cap;
} mdl_image;

void mdl_image_free(mdl_image *img);

/* Decodes PNG or JPEG bytes (told apart by magic). channels: 0 keeps the
 * image's own (1 for gray, 3 for colour; alpha dropped), 1 converts to gray
 * (OpenCV's BT.601 weights), 3 to BGR. Unknown format or corrupt data:
 * MDL_ERR_INVALID; img keeps its buffers. */
mdl_status mdl_image_decode(const uint8_t *buf, size_t len, int channels, mdl_image *img,
                            mdl_error *err);

/* Reads only the header: the decoded shape for `channels` as above. */
mdl_status mdl_image_probe(const uint8_t *buf, size_t len, int channels, int *c, int *h, int *w,
                           mdl_error *err);

/* Decodes a serialised caffe.Datum: raw `data` (uint8, c*h*w bytes),
 * `float_data` (c*h*w floats) or `encoded` image bytes (channels as in
 * mdl_image_decode). Sets img->label. A message that does not parse or whose
 * sizes disagree: MDL_ERR_INVALID. */
mdl_status mdl_datum_decode(const uint8_t *buf, size_t len, int channels, mdl_image *img,
                            mdl_error *err);

#endif
