/* curves: the layout of the two panels and their marks, drawn through a
 * canvas (svg.c, png.c). See chart.h. */
#include "runtime/ci/chart.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "runtime/ci/strbuf.h"

/* ---- reading metrics.jsonl ---- */

static bool json_get(const char *line, const char *key, double *v) {
  char k[96];
  snprintf(k, sizeof k, "\"%s\": ", key);
  const char *p = strstr(line, k);
  if (!p) return false;
  char *end;
  *v = strtod(p + strlen(k), &end);
  return end != p + strlen(k);
}

static bool has_event(const char *line, const char *event) {
  char ev[64];
  snprintf(ev, sizeof ev, "\"event\": \"%s\"", event);
  return strstr(line, ev) != NULL;
}

/* A fresh run (a start record that is not a resume) begins a new history:
 * metrics.jsonl keeps earlier runs' records, the picture shows the last
 * run and the runs that resumed it. */
static bool fresh_start(const char *line) {
  return has_event(line, "start") && strstr(line, "\"resumed\": false");
}

static void push(mdl_ci_series *s, double it, double v) {
  s->iter = mdl_xrealloc(s->iter, (size_t)(s->n + 1) * sizeof *s->iter);
  s->value = mdl_xrealloc(s->value, (size_t)(s->n + 1) * sizeof *s->value);
  s->iter[s->n] = it;
  s->value[s->n] = v;
  s->n++;
}

/* Calls fn on each line of jsonl. */
static void each_line(const char *jsonl, void (*fn)(const char *line, void *arg), void *arg) {
  char *line = NULL;
  for (const char *p = jsonl; mdl_line_next(&p, &line);) fn(line, arg);
}

typedef struct series_query {
  const char *event, *key;
  mdl_ci_series s;
} series_query;

static void series_line(const char *line, void *arg) {
  series_query *q = arg;
  if (fresh_start(line)) q->s.n = 0;
  double it, v, net = 0;
  bool test = !strcmp(q->event, "test");
  if (has_event(line, q->event) && json_get(line, "iter", &it) && json_get(line, q->key, &v) &&
      (!test || (json_get(line, "net", &net) && net == 0)))
    push(&q->s, it, v);
}

mdl_ci_series mdl_ci_series_read(const char *jsonl, const char *event, const char *key) {
  series_query q = {event, key, {0}};
  each_line(jsonl, series_line, &q);
  return q.s;
}

void mdl_ci_series_free(mdl_ci_series *s) {
  free(s->iter);
  free(s->value);
  memset(s, 0, sizeof *s);
}

/* Vertical marks: where the run stopped (budget, signal) and resumed. */
typedef struct marks {
  int n;
  double iter[16];
  const char *label[16];
} marks;

static void mark_line(const char *line, void *arg) {
  marks *m = arg;
  if (fresh_start(line)) m->n = 0;
  double it;
  const char *label = NULL;
  if (has_event(line, "start") && strstr(line, "\"resumed\": true"))
    label = "resumed";
  else if (has_event(line, "stopped"))
    label = "stopped (signal)";
  else if (has_event(line, "done") && strstr(line, "\"stopped\": \"budget\""))
    label = "budget stop";
  if (!label || !json_get(line, "iter", &it)) return;
  if (m->n == 16) { /* keep the latest ones */
    memmove(m->iter, m->iter + 1, 15 * sizeof *m->iter);
    memmove(m->label, m->label + 1, 15 * sizeof *m->label);
    m->n--;
  }
  m->iter[m->n] = it;
  m->label[m->n] = label;
  m->n++;
}

/* ---- layout ---- */

enum { W = MDL_CI_CHART_W, PANEL_H = 200, LEFT = 70, RIGHT = 20, TOP = 56, GAP = 50 };

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

static void curve(const mdl_ci_canvas *c, const panel *p, const mdl_ci_series *s, unsigned color,
                  double width) {
  double *xy = mdl_xmalloc((size_t)(2 * s->n + 1) * sizeof *xy);
  int n = 0;
  for (int i = 0; i < s->n; i++)
    if (isfinite(s->value[i])) {
      xy[2 * n] = px(p, s->iter[i]);
      xy[2 * n + 1] = py(p, s->value[i]);
      n++;
    }
  if (n) c->polyline(c->ctx, xy, n, color, width);
  free(xy);
}

static void dots(const mdl_ci_canvas *c, const panel *p, const mdl_ci_series *s, unsigned color) {
  for (int i = 0; i < s->n; i++)
    if (isfinite(s->value[i])) c->circle(c->ctx, px(p, s->iter[i]), py(p, s->value[i]), 3.5, color);
}

/* A horizontal mark across the panel, labelled at the right above it, or
 * (left) at the left below it, so an accept bound and a baseline close
 * together stay readable. */
static void hline(const mdl_ci_canvas *c, const panel *p, double y, unsigned color,
                  const double *dash, const char *label, bool left) {
  if (!isfinite(y)) return;
  double yy = py(p, y);
  c->line(c->ctx, LEFT, yy, W - RIGHT, yy, color, 1.5, dash);
  c->text(c->ctx, left ? LEFT + 4 : W - RIGHT - 4, left ? yy + 12 : yy - 4, 11, false,
          left ? MDL_CI_START : MDL_CI_END, color, label);
}

static void frame(const mdl_ci_canvas *c, const panel *p, const char *title) {
  c->rect(c->ctx, LEFT, p->top, W - LEFT - RIGHT, PANEL_H, 0xfafafa, 0x888888);
  c->text(c->ctx, LEFT, p->top - 8, 13, true, MDL_CI_START, 0x000000, title);
  char t[32];
  for (int k = 0; k <= 4; k++) {
    double y = p->y0 + (p->y1 - p->y0) * k / 4;
    snprintf(t, sizeof t, "%.3g", y);
    c->text(c->ctx, LEFT - 4, py(p, y) + 3, 10, false, MDL_CI_END, 0x000000, t);
    c->line(c->ctx, LEFT, py(p, y), W - RIGHT, py(p, y), 0xdddddd, 1, NULL);
  }
  for (int k = 0; k <= 4; k++) {
    double x = p->x0 + (p->x1 - p->x0) * k / 4;
    snprintf(t, sizeof t, "%.0f", x);
    c->text(c->ctx, px(p, x), p->top + PANEL_H + 14, 10, false, MDL_CI_MIDDLE, 0x000000, t);
  }
}

/* The panel a criterion's metric is drawn in, or NULL. */
static panel *panel_of(const Memdl__Acceptance *ac, const char *metric, panel *pl, panel *pa) {
  if (!ac->metric) return NULL;
  if (!strcmp(ac->metric, "loss")) return pl;
  if (!strcmp(ac->metric, metric)) return pa;
  return NULL;
}

static void bounds(const mdl_ci_canvas *c, Memdl__Acceptance *const *accept, int n_accept,
                   const char *metric, panel *pl, panel *pa) {
  static const double dash[2] = {6, 4};
  for (int a = 0; a < n_accept; a++) {
    const Memdl__Acceptance *ac = accept[a];
    panel *p = panel_of(ac, metric, pl, pa);
    char label[96];
    if (p && ac->has_at_least) {
      snprintf(label, sizeof label, "accept: at least %g", (double)ac->at_least);
      hline(c, p, ac->at_least, 0xd62728, dash, label, false);
    }
    if (p && ac->has_at_most) {
      snprintf(label, sizeof label, "accept: at most %g", (double)ac->at_most);
      hline(c, p, ac->at_most, 0xd62728, dash, label, false);
    }
  }
}

static void vmarks(const mdl_ci_canvas *c, const marks *m, panel *const ps[2]) {
  static const double dash[2] = {4, 3};
  for (int i = 0; i < m->n; i++)
    for (int k = 0; k < 2; k++) {
      double x = px(ps[k], m->iter[i]);
      c->line(c->ctx, x, ps[k]->top, x, ps[k]->top + PANEL_H, 0x9467bd, 1.5, dash);
      c->text(c->ctx, x + 3, ps[k]->top + 12 + 11 * (i % 2), 10, false, MDL_CI_START, 0x9467bd,
              m->label[i]);
    }
}

/* Both panels' data ranges, padded so no point sits on the frame. */
static void ranges(panel *pl, panel *pa, const mdl_ci_series *train, const mdl_ci_series *tloss,
                   const mdl_ci_series *acc, double lbase, double abase,
                   Memdl__Acceptance *const *accept, int n_accept, const char *metric) {
  for (int i = 0; i < train->n; i++) widen(&pl->y0, &pl->y1, train->value[i]);
  for (int i = 0; i < tloss->n; i++) widen(&pl->y0, &pl->y1, tloss->value[i]);
  for (int i = 0; i < acc->n; i++) widen(&pa->y0, &pa->y1, acc->value[i]);
  widen(&pl->y0, &pl->y1, lbase);
  widen(&pa->y0, &pa->y1, abase);
  for (int a = 0; a < n_accept; a++) {
    panel *p = panel_of(accept[a], metric, pl, pa);
    if (p && accept[a]->has_at_least) widen(&p->y0, &p->y1, accept[a]->at_least);
    if (p && accept[a]->has_at_most) widen(&p->y0, &p->y1, accept[a]->at_most);
  }
  panel *ps[2] = {pl, pa};
  for (int k = 0; k < 2; k++) {
    if (!isfinite(ps[k]->y0)) ps[k]->y0 = 0, ps[k]->y1 = 1;
    double pad = (ps[k]->y1 - ps[k]->y0) * 0.05;
    if (pad <= 0) pad = fabs(ps[k]->y0) * 0.05 + 0.05;
    ps[k]->y0 -= pad;
    ps[k]->y1 += pad;
  }
}

void mdl_ci_chart_draw(const mdl_ci_result *r, const char *jsonl, Memdl__Acceptance *const *accept,
                       int n_accept, const mdl_ci_canvas *c) {
  const char *metric = "accuracy";
  mdl_ci_series train = mdl_ci_series_read(jsonl, "train", "loss");
  mdl_ci_series tloss = mdl_ci_series_read(jsonl, "test", "loss");
  mdl_ci_series acc = mdl_ci_series_read(jsonl, "test", metric);
  for (int k = 0; k < r->n_metrics && !acc.n; k++)
    if (strcmp(r->metric_name[k], "loss")) {
      metric = r->metric_name[k];
      mdl_ci_series_free(&acc);
      acc = mdl_ci_series_read(jsonl, "test", metric);
    }
  marks m = {0};
  each_line(jsonl, mark_line, &m);
  double xmax = r->max_iter > 0 ? r->max_iter : 1;
  const mdl_ci_series *all[3] = {&train, &tloss, &acc};
  for (int k = 0; k < 3; k++)
    for (int i = 0; i < all[k]->n; i++) widen(&xmax, &xmax, all[k]->iter[i]);
  /* bounds and baselines of each panel's metric */
  double lbase = NAN, abase = NAN;
  for (int k = 0; k < r->n_metrics; k++) {
    if (!strcmp(r->metric_name[k], "loss")) lbase = r->baseline_value[k];
    if (!strcmp(r->metric_name[k], metric)) abase = r->baseline_value[k];
  }
  panel pl = {0, xmax, INFINITY, -INFINITY, TOP};
  panel pa = {0, xmax, INFINITY, -INFINITY, TOP + PANEL_H + GAP};
  ranges(&pl, &pa, &train, &tloss, &acc, lbase, abase, accept, n_accept, metric);

  c->rect(c->ctx, 0, 0, W, MDL_CI_CHART_H, 0xffffff, MDL_CI_NONE);
  char title[512];
  snprintf(title, sizeof title, "%s: %s (exit %d), %d of %d iterations",
           r->job_name && *r->job_name ? r->job_name
           : r->job_path               ? r->job_path
                                       : "",
           r->verdict ? r->verdict : "", r->exit_code, r->iter, r->max_iter);
  c->text(c->ctx, LEFT, 22, 15, false, MDL_CI_START, 0x000000, title);
  frame(c, &pl, "loss (line: TRAIN, smoothed; dots: TEST)");
  curve(c, &pl, &train, 0x1f77b4, 1.5);
  curve(c, &pl, &tloss, 0xff7f0e, 1);
  dots(c, &pl, &tloss, 0xff7f0e);
  snprintf(title, sizeof title, "TEST %s (dots: TEST passes)", metric);
  frame(c, &pa, title);
  curve(c, &pa, &acc, 0x2ca02c, 2);
  dots(c, &pa, &acc, 0x2ca02c);
  bounds(c, accept, n_accept, metric, &pl, &pa);
  static const double dotted[2] = {2, 3};
  hline(c, &pl, lbase, 0x555555, dotted, "blessed model", true);
  hline(c, &pa, abase, 0x555555, dotted, "blessed model", true);
  panel *const ps[2] = {&pl, &pa};
  vmarks(c, &m, ps);
  c->text(c->ctx, (W + LEFT) / 2.0, MDL_CI_CHART_H - 10, 11, false, MDL_CI_MIDDLE, 0x000000,
          "iteration");
  mdl_ci_series_free(&train);
  mdl_ci_series_free(&tloss);
  mdl_ci_series_free(&acc);
}
