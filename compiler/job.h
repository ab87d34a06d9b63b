/* Loading what the user wrote: a memdl job file, a Caffe solver or a Caffe
 * net, with their referenced files resolved into one mdl_job. Owns kind
 * detection, path resolution and --set overrides; not graph building. */
#ifndef MDL_COMPILER_JOB_H
#define MDL_COMPILER_JOB_H

#include "caffe.pb-c.h"
#include "common/error.h"
#include "job.pb-c.h"

typedef enum mdl_file_kind {
  MDL_KIND_AUTO = 0,
  MDL_KIND_NET,
  MDL_KIND_SOLVER,
  MDL_KIND_JOB,
} mdl_file_kind;

typedef struct mdl_job {
  char *path;     /* the file the user named */
  char *base_dir; /* where a job's relative paths resolve ("." for Caffe files) */
  mdl_file_kind kind;
  Memdl__Job *job; /* owned; synthesised from defaults for Caffe files */
  /* The solver (defaults when the user gave only a net). Its net fields are
   * resolved: net_param holds the net every phase is built from, unless the
   * solver names separate train/test nets, in which case train_net_param and
   * test_net_param hold them. */
  Caffe__SolverParameter *solver;
  char *net_path; /* file the train net came from (for error messages), or NULL */
} mdl_job;

/* Reads path as kind (MDL_KIND_AUTO: detected from its top-level fields),
 * loads the net and solver it refers to and embeds them. On success *out is
 * owned by the caller (mdl_job_free); on failure *out is NULL and err says
 * which file, line and column. */
mdl_status mdl_job_load(const char *path, mdl_file_kind kind, mdl_job **out, mdl_error *err);

/* Applies "field=value" (text-format value) to the solver when it has such a
 * field, else to the job. Nested fields use dots: "sync.tau=4". */
mdl_status mdl_job_set(mdl_job *job, const char *assignment, mdl_error *err);

/* The net for `phase`: the solver's train or test net (test_index selects
 * among several test nets). Returned pointer is owned by job. NULL with an
 * error when the solver has none for that phase. */
const Caffe__NetParameter *mdl_job_net(const mdl_job *job, Caffe__Phase phase, int test_index,
                                       mdl_error *err);

void mdl_job_free(mdl_job *job);

/* Detects what a text file holds from its top-level field names. */
mdl_file_kind mdl_detect_kind(const char *text, size_t len);

const char *mdl_kind_name(mdl_file_kind kind);

/* "net", "solver" or "job" to a kind; MDL_ERR_INVALID for anything else. */
mdl_status mdl_kind_parse(const char *name, mdl_file_kind *kind);

#endif
