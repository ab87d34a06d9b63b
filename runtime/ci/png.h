/* curves.png: the chart (chart.h) rasterised by memdl itself, with a
 * public-domain bitmap font, and written with libpng: the same picture as
 * curves.svg wherever no SVG renderer is at hand. Owns the pixels; not the
 * layout. */
#ifndef MDL_RUNTIME_CI_PNG_H
#define MDL_RUNTIME_CI_PNG_H

#include "common/error.h"
#include "job.pb-c.h"
#include "runtime/ci/result.h"

/* Draws r's run with its metrics.jsonl text and writes it to path as an
 * RGB PNG, atomically. */
mdl_status mdl_ci_png(const mdl_ci_result *r, const char *jsonl, Memdl__Acceptance *const *accept,
                      int n_accept, const char *path, mdl_error *err);

#endif
