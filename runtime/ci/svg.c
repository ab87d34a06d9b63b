/* curves.svg: two stacked panels (loss; accuracy or the first other TEST
 * metric) against iterations, in plain SVG 1.1 that any renderer draws the
 * same way. */
#include "runtime/ci/svg.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "runtime/ci/strbuf.h"

static bool json_get(const char *line, const char *key, double *v) {
  char k[96];
  snprintf(k, sizeof k, "\"%s\": ", key);
  const char *p = strstr(line, k);
  if (!p) return false;
  char *end;
  *v = strtod(p + strlen(k), &end);
  return end != p + strlen(k);
}

mdl_ci_series mdl_ci_series_read(const char *jsonl, const char *event, const char *key) {
  mdl_ci_series s = {0};
  char ev[64];
  snprintf(ev, sizeof ev, "\"event\": \"%s\"", event);
  bool test = !strcmp(event, "test");
  for (const char *p = jsonl; p && *p;) {
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    char *line = mdl_xmalloc(n + 1);
    memcpy(line, p, n);
    line[n] = 0;
    double it, v, net = 0;
    if (strstr(line, ev) && json_get(line, "iter", &it) && json_get(line, key, &v) &&
        (!test || (json_get(line, "net", &net) && net == 0))) {
      s.iter = mdl_xrealloc(s.iter, (size_t)(s.n + 1) * sizeof *s.iter);
      s.value = mdl_xrealloc(s.value, (size_t)(s.n + 1) * sizeof *s.value);
      s.iter[s.n] = it;
      s.value[s.n] = v;
      s.n++;
    }
    free(line);
    p += n + (nl ? 1 : 0);
  }
  return s;
}

void mdl_ci_series_free(mdl_ci_series *s) {
  free(s->iter);
  free(s->value);
  memset(s, 0, sizeof *s);
}

enum { W = 720, PANEL_H = 200, LEFT = 70, RIGHT = 20, TOP = 56, GAP = 50 };

typedef struct panel {
  double x0, x1, y0, y1; /* data ranges */
  int top;               /* pixel top of the plot area */
} panel;

static double px(const panel *p, double x) {
  return LEFT + (x - p->x0) / (p->x1 - p->x0) * (W - LEFT - RIGHT);
}
static double py(const panel *p, double y) {
  return p->top + PANEL_H - (y - p->y0) / (p->y1 - p->y0) * PANEL_H;
}

static void widen(double *lo, double *hi, double v) {
  if (!isfinite(v)) return;
  if (v < *lo) *lo = v;
  if (v > *hi) *hi = v;
}

static void polyline(mdl_strbuf *b, const panel *p, const mdl_ci_series *s, const char *color,
                     double width) {
  if (s->n < 1) return;
  mdl_strbuf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%g\" points=\"", color,
                    width);
  for (int i = 0; i < s->n; i++)
    if (isfinite(s->value[i]))
      mdl_strbuf_printf(b, "%.1f,%.1f ", px(p, s->iter[i]), py(p, s->value[i]));
  mdl_strbuf_printf(b, "\"/>\n");
}

static void points(mdl_strbuf *b, const panel *p, const mdl_ci_series *s, const char *color) {
  for (int i = 0; i < s->n; i++)
    if (isfinite(s->value[i]))
      mdl_strbuf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n",
                        px(p, s->iter[i]), py(p, s->value[i]), color);
}

/* A horizontal mark across the panel, labelled at the right above it, or
 * (left) at the left below it, so an accept bound and a baseline close
 * together stay readable. */
static void hline(mdl_strbuf *b, const panel *p, double y, const char *color, const char *dash,
                  const char *label, bool left) {
  if (!isfinite(y)) return;
  double yy = py(p, y);
  mdl_strbuf_printf(b,
                    "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" "
                    "stroke-width=\"1.5\" stroke-dasharray=\"%s\"/>\n",
                    LEFT, yy, W - RIGHT, yy, color, dash);
  mdl_strbuf_printf(b, "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" fill=\"%s\" text-anchor=\"%s\">",
                    left ? LEFT + 4 : W - RIGHT - 4, left ? yy + 12 : yy - 4, color,
                    left ? "start" : "end");
  mdl_strbuf_xml(b, label);
  mdl_strbuf_printf(b, "</text>\n");
}

static void frame(mdl_strbuf *b, const panel *p, const char *title) {
  mdl_strbuf_printf(b,
                    "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fafafa\" "
                    "stroke=\"#888\"/>\n",
                    LEFT, p->top, W - LEFT - RIGHT, PANEL_H);
  mdl_strbuf_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"13\" font-weight=\"bold\">", LEFT,
                    p->top - 8);
  mdl_strbuf_xml(b, title);
  mdl_strbuf_printf(b, "</text>\n");
  for (int k = 0; k <= 4; k++) {
    double y = p->y0 + (p->y1 - p->y0) * k / 4;
    mdl_strbuf_printf(b,
                      "<text x=\"%d\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%.3g</text>\n"
                      "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                      LEFT - 4, py(p, y) + 3, y, LEFT, py(p, y), W - RIGHT, py(p, y));
  }
  for (int k = 0; k <= 4; k++) {
    double x = p->x0 + (p->x1 - p->x0) * k / 4;
    mdl_strbuf_printf(
        b, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%.0f</text>\n",
        px(p, x), p->top + PANEL_H + 14, x);
  }
}

char *mdl_ci_svg(const mdl_ci_result *r, const char *jsonl, Memdl__Acceptance *const *accept,
                 int n_accept) {
  const char *metric = "accuracy";
  mdl_ci_series train = mdl_ci_series_read(jsonl, "train", "loss");
  mdl_ci_series tloss = mdl_ci_series_read(jsonl, "test", "loss");
  mdl_ci_series acc = mdl_ci_series_read(jsonl, "test", metric);
  if (!acc.n)
    for (int k = 0; k < r->n_metrics && !acc.n; k++)
      if (strcmp(r->metric_name[k], "loss")) {
        metric = r->metric_name[k];
        mdl_ci_series_free(&acc);
        acc = mdl_ci_series_read(jsonl, "test", metric);
      }
  double xmax = r->max_iter > 0 ? r->max_iter : 1;
  const mdl_ci_series *all[3] = {&train, &tloss, &acc};
  for (int k = 0; k < 3; k++)
    for (int i = 0; i < all[k]->n; i++) widen(&xmax, &xmax, all[k]->iter[i]);
  panel pl = {0, xmax, INFINITY, -INFINITY, TOP};
  panel pa = {0, xmax, INFINITY, -INFINITY, TOP + PANEL_H + GAP};
  for (int i = 0; i < train.n; i++) widen(&pl.y0, &pl.y1, train.value[i]);
  for (int i = 0; i < tloss.n; i++) widen(&pl.y0, &pl.y1, tloss.value[i]);
  for (int i = 0; i < acc.n; i++) widen(&pa.y0, &pa.y1, acc.value[i]);
  /* bounds and baselines of each panel's metric */
  double lbase = NAN, abase = NAN;
  for (int k = 0; k < r->n_metrics; k++) {
    if (!strcmp(r->metric_name[k], "loss")) lbase = r->baseline_value[k];
    if (!strcmp(r->metric_name[k], metric)) abase = r->baseline_value[k];
  }
  widen(&pl.y0, &pl.y1, lbase);
  widen(&pa.y0, &pa.y1, abase);
  for (int a = 0; a < n_accept; a++) {
    const Memdl__Acceptance *ac = accept[a];
    panel *p = !ac->metric                   ? NULL
               : !strcmp(ac->metric, "loss") ? &pl
               : !strcmp(ac->metric, metric) ? &pa
                                             : NULL;
    if (!p) continue;
    if (ac->has_at_least) widen(&p->y0, &p->y1, ac->at_least);
    if (ac->has_at_most) widen(&p->y0, &p->y1, ac->at_most);
  }
  panel *ps[2] = {&pl, &pa};
  for (int k = 0; k < 2; k++) {
    if (!isfinite(ps[k]->y0)) ps[k]->y0 = 0, ps[k]->y1 = 1;
    double pad = (ps[k]->y1 - ps[k]->y0) * 0.05;
    if (pad <= 0) pad = fabs(ps[k]->y0) * 0.05 + 0.05;
    ps[k]->y0 -= pad;
    ps[k]->y1 += pad;
  }
  int H = TOP + 2 * PANEL_H + GAP + 50;
  mdl_strbuf b = {0};
  mdl_strbuf_printf(&b,
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" "
                    "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n"
                    "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                    W, H, W, H);
  mdl_strbuf_printf(&b, "<text x=\"%d\" y=\"22\" font-size=\"15\">", LEFT);
  mdl_strbuf_xml(&b, r->job_name && *r->job_name ? r->job_name : r->job_path);
  mdl_strbuf_printf(&b, ": %s (exit %d), %d of %d iterations</text>\n",
                    r->verdict ? r->verdict : "", r->exit_code, r->iter, r->max_iter);
  frame(&b, &pl, "loss (line: TRAIN, smoothed; dots: TEST)");
  polyline(&b, &pl, &train, "#1f77b4", 1.5);
  polyline(&b, &pl, &tloss, "#ff7f0e", 1);
  points(&b, &pl, &tloss, "#ff7f0e");
  char title[160];
  snprintf(title, sizeof title, "TEST %s (dots: TEST passes)", metric);
  frame(&b, &pa, title);
  polyline(&b, &pa, &acc, "#2ca02c", 2);
  points(&b, &pa, &acc, "#2ca02c");
  for (int a = 0; a < n_accept; a++) {
    const Memdl__Acceptance *ac = accept[a];
    panel *p = !ac->metric                   ? NULL
               : !strcmp(ac->metric, "loss") ? &pl
               : !strcmp(ac->metric, metric) ? &pa
                                             : NULL;
    char label[96];
    if (p && ac->has_at_least) {
      snprintf(label, sizeof label, "accept: at least %g", (double)ac->at_least);
      hline(&b, p, ac->at_least, "#d62728", "6,4", label, false);
    }
    if (p && ac->has_at_most) {
      snprintf(label, sizeof label, "accept: at most %g", (double)ac->at_most);
      hline(&b, p, ac->at_most, "#d62728", "6,4", label, false);
    }
  }
  hline(&b, &pl, lbase, "#555", "2,3", "blessed model", true);
  hline(&b, &pa, abase, "#555", "2,3", "blessed model", true);
  if (r->budget_stopped)
    for (int k = 0; k < 2; k++) {
      double x = px(ps[k], r->iter);
      mdl_strbuf_printf(&b,
                        "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#9467bd\" "
                        "stroke-width=\"1.5\" stroke-dasharray=\"4,3\"/>\n"
                        "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" fill=\"#9467bd\">budget "
                        "stop</text>\n",
                        x, ps[k]->top, x, ps[k]->top + PANEL_H, x + 3, ps[k]->top + 12);
    }
  mdl_strbuf_printf(
      &b, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">iteration</text>\n",
      (W + LEFT) / 2, H - 10);
  mdl_strbuf_printf(&b, "</svg>\n");
  mdl_ci_series_free(&train);
  mdl_ci_series_free(&tloss);
  mdl_ci_series_free(&acc);
  return mdl_strbuf_take(&b);
}
