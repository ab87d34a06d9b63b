/* curves.svg: the chart (chart.h) as plain SVG 1.1, drawn here so the
 * picture never depends on a plotting library's version. Owns the markup;
 * not the layout. */
#ifndef MDL_RUNTIME_CI_SVG_H
#define MDL_RUNTIME_CI_SVG_H

#include "job.pb-c.h"
#include "runtime/ci/chart.h"
#include "runtime/ci/result.h"

/* The SVG text for r's run with its metrics.jsonl text; accept bounds
 * come from accept (may be NULL). Caller frees. */
char *mdl_ci_svg(const mdl_ci_result *r, const char *jsonl, Memdl__Acceptance *const *accept,
                 int n_accept);

#endif
