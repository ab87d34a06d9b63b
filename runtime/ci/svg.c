/* curves.svg: a canvas (chart.h) that writes SVG 1.1 elements, which any
 * renderer draws the same way. */
#include "runtime/ci/svg.h"

#include <stdio.h>

#include "runtime/ci/strbuf.h"

static void color(mdl_strbuf *b, const char *attr, unsigned c) {
  if (c == MDL_CI_NONE)
    mdl_strbuf_printf(b, " %s=\"none\"", attr);
  else
    mdl_strbuf_printf(b, " %s=\"#%06x\"", attr, c);
}

static void svg_rect(void *ctx, double x, double y, double w, double h, unsigned fill,
                     unsigned stroke) {
  mdl_strbuf *b = ctx;
  mdl_strbuf_printf(b, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\"", x, y, w, h);
  color(b, "fill", fill);
  if (stroke != MDL_CI_NONE) color(b, "stroke", stroke);
  mdl_strbuf_printf(b, "/>\n");
}

static void svg_line(void *ctx, double x1, double y1, double x2, double y2, unsigned c,
                     double width, const double *dash) {
  mdl_strbuf *b = ctx;
  mdl_strbuf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"", x1, y1, x2, y2);
  color(b, "stroke", c);
  mdl_strbuf_printf(b, " stroke-width=\"%g\"", width);
  if (dash) mdl_strbuf_printf(b, " stroke-dasharray=\"%g,%g\"", dash[0], dash[1]);
  mdl_strbuf_printf(b, "/>\n");
}

static void svg_polyline(void *ctx, const double *xy, int n, unsigned c, double width) {
  mdl_strbuf *b = ctx;
  mdl_strbuf_printf(b, "<polyline fill=\"none\"");
  color(b, "stroke", c);
  mdl_strbuf_printf(b, " stroke-width=\"%g\" points=\"", width);
  for (int i = 0; i < n; i++) mdl_strbuf_printf(b, "%.1f,%.1f ", xy[2 * i], xy[2 * i + 1]);
  mdl_strbuf_printf(b, "\"/>\n");
}

static void svg_circle(void *ctx, double x, double y, double r, unsigned fill) {
  mdl_strbuf *b = ctx;
  mdl_strbuf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%g\"", x, y, r);
  color(b, "fill", fill);
  mdl_strbuf_printf(b, "/>\n");
}

static void svg_text(void *ctx, double x, double y, double size, bool bold, mdl_ci_anchor anchor,
                     unsigned c, const char *s) {
  static const char *const anchors[] = {"start", "middle", "end"};
  mdl_strbuf *b = ctx;
  mdl_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%g\"%s text-anchor=\"%s\"", x, y,
                    size, bold ? " font-weight=\"bold\"" : "", anchors[anchor]);
  color(b, "fill", c);
  mdl_strbuf_printf(b, ">");
  mdl_strbuf_xml(b, s);
  mdl_strbuf_printf(b, "</text>\n");
}

char *mdl_ci_svg(const mdl_ci_result *r, const char *jsonl, Memdl__Acceptance *const *accept,
                 int n_accept) {
  mdl_strbuf b = {0};
  mdl_strbuf_printf(&b,
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" "
                    "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n",
                    MDL_CI_CHART_W, MDL_CI_CHART_H, MDL_CI_CHART_W, MDL_CI_CHART_H);
  mdl_ci_canvas c = {&b, svg_rect, svg_line, svg_polyline, svg_circle, svg_text};
  mdl_ci_chart_draw(r, jsonl, accept, n_accept, &c);
  mdl_strbuf_printf(&b, "</svg>\n");
  return mdl_strbuf_take(&b);
}
