/* The curves picture, laid out once for every surface: two stacked panels
 * (loss; accuracy or the first other TEST metric) against iterations from
 * metrics.jsonl, TEST points marked, accept bounds dashed, the blessed
 * model's values dotted, budget and signal stops and resumes marked. Owns
 * the layout and the series; the surfaces own the markup (svg.c) or the
 * pixels (png.c), so both pictures always show the same thing. */
#ifndef MDL_RUNTIME_CI_CHART_H
#define MDL_RUNTIME_CI_CHART_H

#include <stdbool.h>

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

/* Colours are 0xRRGGBB; MDL_CI_NONE draws nothing (an unfilled rect). */
#define MDL_CI_NONE 0xffffffffu

typedef enum mdl_ci_anchor { MDL_CI_START, MDL_CI_MIDDLE, MDL_CI_END } mdl_ci_anchor;

/* A drawing surface, in pixels from the top left. dash is {on, off} in
 * pixels, or NULL for a solid line; text's y is its baseline. */
typedef struct mdl_ci_canvas {
  void *ctx;
  void (*rect)(void *ctx, double x, double y, double w, double h, unsigned fill, unsigned stroke);
  void (*line)(void *ctx, double x1, double y1, double x2, double y2, unsigned color, double width,
               const double *dash);
  void (*polyline)(void *ctx, const double *xy, int n, unsigned color, double width);
  void (*circle)(void *ctx, double x, double y, double r, unsigned fill);
  void (*text)(void *ctx, double x, double y, double size, bool bold, mdl_ci_anchor anchor,
               unsigned color, const char *s);
} mdl_ci_canvas;

enum { MDL_CI_CHART_W = 720, MDL_CI_CHART_H = 556 };

/* Draws r's run with its metrics.jsonl text on c; accept bounds come from
 * accept (may be NULL). */
void mdl_ci_chart_draw(const mdl_ci_result *r, const char *jsonl, Memdl__Acceptance *const *accept,
                       int n_accept, const mdl_ci_canvas *c);

#endif
