/* The registry of CI runs, a folder (default registry/ beside the job):
 *   runs/<fingerprint>/  model.caffemodel, run.json, fingerprint.txt,
 *                        profile.txt (data profile), summary.txt (exit code
 *                        and the closing lines)
 *   BLESSED              the blessed run's fingerprint, replaced atomically
 *   history.jsonl        one line per CI run and per blessing, append-only
 *   hashes.tsv           the data file digest cache (fingerprint.h)
 * Owns the layout and its writes; not deciding what to bless (ci.h). */
#ifndef MDL_RUNTIME_CI_REGISTRY_H
#define MDL_RUNTIME_CI_REGISTRY_H

#include <stdbool.h>

#include "common/error.h"
#include "compiler/job.h"

/* The job's registry folder (ci.registry relative to the job file, else
 * "registry" beside it), or override when not NULL. Caller frees. */
char *mdl_registry_dir(const mdl_job *job, const char *override);

/* dir/runs/<fp>[/name]; name may be NULL. Caller frees. */
char *mdl_registry_run_path(const char *dir, const char *fp, const char *name);

/* The blessed fingerprint into fp[65]: false when there is none (no
 * BLESSED file, or not a fingerprint in it). */
bool mdl_registry_blessed(const char *dir, char fp[65]);

/* Replaces BLESSED with fp atomically (creating dir). */
mdl_status mdl_registry_bless(const char *dir, const char *fp, mdl_error *err);

/* Appends one line (a JSON object without the newline) to history.jsonl
 * with O_APPEND and fsync, creating it. */
mdl_status mdl_registry_append_history(const char *dir, const char *json_line, mdl_error *err);

/* Writes text to dir/runs/<fp>/name atomically, creating the folders. */
mdl_status mdl_registry_put(const char *dir, const char *fp, const char *name, const void *data,
                            size_t len, mdl_error *err);

/* Reads dir/runs/<fp>/name; MDL_ERR_INVALID when it is not there. The
 * caller frees *text (NUL-terminated). */
mdl_status mdl_registry_get(const char *dir, const char *fp, const char *name, char **text,
                            mdl_error *err);

/* Copies the file src to dir/runs/<fp>/name atomically. */
mdl_status mdl_registry_copy_in(const char *dir, const char *fp, const char *name, const char *src,
                                mdl_error *err);

/* mkdir -p; MDL_ERR_INTERNAL naming the folder on failure. */
mdl_status mdl_registry_mkdirs(const char *path, mdl_error *err);

#endif
