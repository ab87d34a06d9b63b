/* Data into a net: fills a pipeline data layer's tops (data, and label or a
 * scratch label) with batch k from a batcher, or with synthetic values when
 * there is none (`memdl time` on bare nets), and the net's Input blobs with
 * synthetic values. The one feeder of single-worker training (train.c) and
 * of distributed workers (trainer_net.c). Owns the cursor arithmetic and
 * the upload through the backend; not the batchers' construction. */
#ifndef MDL_RUNTIME_TRAIN_FEED_H
#define MDL_RUNTIME_TRAIN_FEED_H

#include <stdint.h>

#include "common/error.h"
#include "runtime/data/dataset.h"
#include "runtime/engine/net.h"

/* A batcher and the batch it hands out next: seeking is only needed when a
 * caller asks for another batch than the next one. Several feeders may
 * share one cursor (the TEST nets of a worker read one test set). */
typedef struct mdl_feed_cursor {
  mdl_batcher *b; /* owned by whoever set it; NULL: synthetic values */
  uint64_t next;
} mdl_feed_cursor;

typedef struct mdl_feeder {
  const mdl_net *net;
  int layer;                /* the data layer's index in net */
  mdl_tensor *data, *label; /* its tops (label NULL when it has none) */
  float *label_scratch;     /* labels nobody reads, when label is NULL (owned) */
  float *staging;           /* host batch for backends whose memory is not host's (owned) */
  float *staging_label;     /* the same for labels */
  int64_t batch;            /* records per batch: data's axis 0 */
  char *set_name;           /* the data set behind it, for messages (owned; may be NULL) */
  mdl_feed_cursor *cursor;  /* borrowed; NULL: synthetic values */
} mdl_feeder;

/* Binds f to data layer `layer` of net (tops, batch size, scratch), reading
 * from cursor (may be NULL, or set later). Release with mdl_feeder_release. */
void mdl_feeder_bind(mdl_feeder *f, const mdl_net *net, int layer, mdl_feed_cursor *cursor);
void mdl_feeder_release(mdl_feeder *f);

/* MDL_ERR_INVALID naming the layer when records of c x h x w (after the
 * transform) do not fill the data top of batch records. */
mdl_status mdl_feeder_check(const mdl_feeder *f, int c, int h, int w, mdl_error *err);

/* Fills the layer's tops with batch k (the batcher's error as is). */
mdl_status mdl_feeder_fill(mdl_feeder *f, uint64_t k, mdl_error *err);

/* The net's Input blobs get synthetic values in [0, 1) for batch k, so time
 * and test runs of deploy-style nets do something sensible. */
void mdl_feed_inputs(mdl_net *net, uint64_t k);

#endif
