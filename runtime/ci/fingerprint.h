/* A run's fingerprint: one SHA-256 over named parts (the canonical plan's
 * net, solver and job after --set, each data set's file contents, the
 * starting weights, memdl's version, the thread and worker counts the bits
 * depend on), and the flat solver and job settings that say what changed.
 * Owns hashing and the comparison; not where fingerprints are kept
 * (registry.h). */
#ifndef MDL_RUNTIME_CI_FINGERPRINT_H
#define MDL_RUNTIME_CI_FINGERPRINT_H

#include <stdbool.h>

#include "common/error.h"
#include "compiler/job.h"

typedef struct mdl_fp_part {
  char *name; /* "net", "solver", "job", "data NAME", "weights", "version", "device", "workers" */
  char sha[65];
} mdl_fp_part;

typedef struct mdl_fp_field {
  char *name; /* "base_lr", "accept[0].at_least", ... */
  char *value;
} mdl_fp_field;

typedef struct mdl_fingerprint {
  char hex[65]; /* SHA-256 of the parts' "name sha" lines */
  mdl_fp_part *parts;
  int n_parts;
  mdl_fp_field *fields;
  int n_fields;
  int files_hashed; /* data files read this time (the others came from the cache) */
  int files_cached;
} mdl_fingerprint;

typedef struct mdl_fp_inputs {
  const char *weights; /* starting weights (--weights or the blessed model), or NULL */
  const char *version; /* memdl's version string */
  /* the backend kind the run computes on ("cpu", "cuda"): CPU results do
   * not depend on the thread count, a GPU's differ from them */
  const char *device;
  int workers;       /* worker processes (1: single) */
  const char *cache; /* hash cache file (inode, size, mtime -> SHA-256), or NULL */
} mdl_fp_inputs;

/* Computes job's fingerprint. Data files whose inode, size and mtime match
 * an entry of in->cache are not read; new digests are written back to it
 * atomically (its folder is created). On success *fp is the caller's
 * (mdl_fingerprint_free); on failure it is empty and err names the file. */
mdl_status mdl_fingerprint_compute(const mdl_job *job, const mdl_fp_inputs *in, mdl_fingerprint *fp,
                                   mdl_error *err);

void mdl_fingerprint_free(mdl_fingerprint *fp); /* leaves *fp empty; NULL-safe */

/* As lines "fingerprint HEX", "part SHA NAME", "field NAME\tVALUE". The
 * caller frees the string. */
char *mdl_fingerprint_format(const mdl_fingerprint *fp);

/* Parses what mdl_fingerprint_format wrote. MDL_ERR_INVALID when it is
 * not one. */
mdl_status mdl_fingerprint_parse(const char *text, mdl_fingerprint *fp, mdl_error *err);

/* What changed from old to cur, one item a line ("data fashion_mnist_train
 * changed", "base_lr 0.01 -> 0.02"), each line ending in '\n'; "" when
 * nothing. The caller frees the string. */
char *mdl_fingerprint_diff(const mdl_fingerprint *old, const mdl_fingerprint *cur);

#endif
