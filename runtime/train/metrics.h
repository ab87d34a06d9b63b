/* Metrics as JSON lines: a small builder for one flat JSON object, and a
 * file in the job's output directory that receives one object per event
 * (train display points, test passes, the final summary). Owns formatting;
 * not deciding what to record (runtime/train/train.c). */
#ifndef MDL_RUNTIME_METRICS_H
#define MDL_RUNTIME_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"

/* One flat JSON object being built. Keys are written as given (callers use
 * plain names); strings are escaped. */
typedef struct mdl_json {
  char *buf;
  size_t len, cap;
  bool first;
} mdl_json;

void mdl_json_begin(mdl_json *j);
/* Numbers with up to 6 significant digits; NaN and infinities as null. */
void mdl_json_num(mdl_json *j, const char *key, double v);
void mdl_json_int(mdl_json *j, const char *key, int64_t v);
void mdl_json_str(mdl_json *j, const char *key, const char *v);
void mdl_json_bool(mdl_json *j, const char *key, bool v);
/* A value already written as JSON (an array of objects), inserted as is. */
void mdl_json_raw(mdl_json *j, const char *key, const char *json);
/* Closes the object; returns the text (owned by j until mdl_json_free). */
const char *mdl_json_end(mdl_json *j);
void mdl_json_free(mdl_json *j);

typedef struct mdl_metrics mdl_metrics;

/* Opens dir/metrics.jsonl (creating dir and its parents) for appending: a
 * new run's records follow a previous run's, never replace them (each run
 * starts with a "start" record). *existed (may be NULL) says whether the
 * file already held records. On success *out is the caller's
 * (mdl_metrics_close). */
mdl_status mdl_metrics_open(const char *dir, bool *existed, mdl_metrics **out, mdl_error *err);

/* Writes the finished object j as one line, with "time" (wall clock, Unix
 * seconds) as its first key, and flushes. NULL m: no-op. */
void mdl_metrics_write(mdl_metrics *m, mdl_json *j);

const char *mdl_metrics_path(const mdl_metrics *m);

void mdl_metrics_close(mdl_metrics *m); /* NULL-safe */

/* mkdir -p. MDL_ERR_INTERNAL naming the directory on failure. */
mdl_status mdl_mkdirs(const char *dir, mdl_error *err);

#endif
