/* curves.svg, drawn here so the picture never depends on a plotting
 * library's version: loss and accuracy against iterations from
 * metrics.jsonl, TEST points marked, accept bounds dashed, the baseline
 * dotted, a budget stop marked. Owns the drawing; not the data. */
#ifndef MDL_RUNTIME_CI_SVG_H
#define MDL_RUNTIME_CI_SVG_H

#include "job.pb-c.h"
#include "runtime/ci/result.h"

/* One metric series read from metrics.jsonl. */
typedef struct mdl_ci_series {
  int n;
  double *iter, *value;
} mdl_ci_series;

/* The "train" loss points, or the "test" points of test net 0 for key
 * ("accuracy", "loss"), from metrics.jsonl text. Caller frees with
 * mdl_ci_series_free. */
mdl_ci_series mdl_ci_series_read(const char *jsonl, const char *event, const char *key);
void mdl_ci_series_free(mdl_ci_series *s);

/* The SVG text for r's run with its metrics.jsonl text; accept bounds
 * come from job_accept (may be NULL). Caller frees. */
char *mdl_ci_svg(const mdl_ci_result *r, const char *jsonl, Memdl__Acceptance *const *accept,
                 int n_accept);

#endif
