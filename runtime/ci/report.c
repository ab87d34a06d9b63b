/* The CI reports' formats: JSON, JUnit XML, OpenMetrics, Markdown, and the
 * GitHub Actions files and annotations. See report.h. */
#include "runtime/ci/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/fileio.h"
#include "runtime/ci/png.h"
#include "runtime/ci/strbuf.h"
#include "runtime/ci/svg.h"

static const char *kind_name(mdl_ci_gate_kind k) {
  switch (k) {
    case MDL_CI_GATE_ACCEPT:
      return "accept";
    case MDL_CI_GATE_BASELINE:
      return "baseline";
    case MDL_CI_GATE_DATA:
      return "data";
    case MDL_CI_GATE_BUDGET:
      return "budget";
    case MDL_CI_GATE_SIGNAL:
      return "signal";
  }
  return "gate";
}

static int n_failed(const mdl_ci_result *r) {
  int n = 0;
  for (int i = 0; i < r->n_gates; i++) n += !r->gates[i].passed;
  return n;
}

/* ---- run.json ---- */

static void json_lines(mdl_strbuf *b, const char *text) {
  mdl_strbuf_printf(b, "[");
  int k = 0;
  char *item = NULL;
  for (const char *p = text; mdl_line_next(&p, &item);) {
    mdl_strbuf_printf(b, "%s", k++ ? ", " : "");
    mdl_strbuf_json(b, item);
  }
  mdl_strbuf_printf(b, "]");
}

char *mdl_ci_run_json(const mdl_ci_result *r) {
  mdl_strbuf b = {0};
  mdl_strbuf_printf(&b, "{\n  \"job\": ");
  mdl_strbuf_json(&b, r->job_path);
  mdl_strbuf_printf(&b, ",\n  \"name\": ");
  mdl_strbuf_json(&b, r->job_name);
  mdl_strbuf_printf(&b, ",\n  \"verdict\": ");
  mdl_strbuf_json(&b, r->verdict);
  mdl_strbuf_printf(
      &b, ",\n  \"exit_code\": %d,\n  \"fingerprint\": \"%s\",\n  \"fingerprint_parts\": {",
      r->exit_code, r->fp.hex);
  for (int i = 0; i < r->fp.n_parts; i++) {
    mdl_strbuf_printf(&b, "%s", i ? ", " : "");
    mdl_strbuf_json(&b, r->fp.parts[i].name);
    mdl_strbuf_printf(&b, ": \"%s\"", r->fp.parts[i].sha);
  }
  mdl_strbuf_printf(&b, "},\n  \"sets\": [");
  for (int i = 0; i < r->n_sets; i++) {
    mdl_strbuf_printf(&b, "%s", i ? ", " : "");
    mdl_strbuf_json(&b, r->sets[i]);
  }
  mdl_strbuf_printf(&b, "],\n  \"registry\": ");
  mdl_strbuf_json(&b, r->registry);
  mdl_strbuf_printf(&b, ",\n  \"blessed_before\": ");
  if (r->has_blessed)
    mdl_strbuf_printf(&b, "\"%s\"", r->blessed);
  else
    mdl_strbuf_printf(&b, "null");
  mdl_strbuf_printf(&b, ",\n  \"changes\": ");
  json_lines(&b, r->changes);
  mdl_strbuf_printf(&b, ",\n  \"data\": [");
  for (int i = 0; i < r->n_profiles; i++) {
    const mdl_ci_profile *p = &r->profiles[i];
    mdl_strbuf_printf(&b, "%s\n    {\"name\": ", i ? "," : "");
    mdl_strbuf_json(&b, p->name);
    mdl_strbuf_printf(
        &b, ", \"records\": %lld, \"scanned\": %lld, \"dropped\": %lld, \"class_counts\": [",
        (long long)p->records, (long long)p->scanned, (long long)p->dropped);
    for (int k = 0; k < p->num_classes; k++)
      mdl_strbuf_printf(&b, "%s%lld", k ? ", " : "", (long long)p->class_count[k]);
    mdl_strbuf_printf(&b, "]}");
  }
  mdl_strbuf_printf(&b,
                    "],\n  \"trained\": %s, \"iterations\": %d, \"max_iter\": %d, \"seconds\": ",
                    r->trained ? "true" : "false", r->iter, r->max_iter);
  mdl_strbuf_jnum(&b, r->seconds);
  mdl_strbuf_printf(&b, ", \"max_seconds\": ");
  mdl_strbuf_jnum(&b, r->max_seconds);
  mdl_strbuf_printf(&b,
                    ", \"budget_stopped\": %s, \"stop_signal\": %d, \"tested\": %s,\n  "
                    "\"metrics\": {",
                    r->budget_stopped ? "true" : "false", r->stop_signal,
                    r->tested ? "true" : "false");
  for (int pass = 0; pass < 3; pass++) {
    if (pass) mdl_strbuf_printf(&b, "},\n  \"%s\": {", pass == 1 ? "baseline" : "deltas");
    for (int k = 0; k < r->n_metrics; k++) {
      mdl_strbuf_printf(&b, "%s", k ? ", " : "");
      mdl_strbuf_json(&b, r->metric_name[k]);
      mdl_strbuf_printf(&b, ": ");
      double v = pass == 0   ? r->metric_value[k]
                 : pass == 1 ? r->baseline_value[k]
                             : r->metric_value[k] - r->baseline_value[k];
      mdl_strbuf_jnum(&b, v);
    }
  }
  mdl_strbuf_printf(&b, "},\n  \"per_class_accuracy\": [");
  for (int k = 0; k < r->n_classes; k++) {
    mdl_strbuf_printf(&b, "%s", k ? ", " : "");
    mdl_strbuf_jnum(&b, r->class_accuracy[k]);
  }
  mdl_strbuf_printf(&b, "],\n  \"per_class_samples\": [");
  for (int k = 0; k < r->n_classes; k++)
    mdl_strbuf_printf(&b, "%s%lld", k ? ", " : "", (long long)r->class_samples[k]);
  mdl_strbuf_printf(&b, "],\n  \"gates\": [");
  for (int i = 0; i < r->n_gates; i++) {
    const mdl_ci_gate *g = &r->gates[i];
    mdl_strbuf_printf(&b, "%s\n    {\"name\": ", i ? "," : "");
    mdl_strbuf_json(&b, g->name);
    mdl_strbuf_printf(
        &b, ", \"kind\": \"%s\", \"passed\": %s, \"skipped\": %s, \"value\": ", kind_name(g->kind),
        g->passed ? "true" : "false", g->skipped ? "true" : "false");
    mdl_strbuf_jnum(&b, g->value);
    mdl_strbuf_printf(&b, ", \"bound\": ");
    mdl_strbuf_jnum(&b, g->bound);
    mdl_strbuf_printf(&b, ", \"message\": ");
    mdl_strbuf_json(&b, g->msg);
    mdl_strbuf_printf(&b, "}");
  }
  mdl_strbuf_printf(&b, "],\n  \"artifacts\": {");
  if (r->model[0]) {
    mdl_strbuf_printf(&b, "\"model\": {\"path\": ");
    mdl_strbuf_json(&b, r->model);
    mdl_strbuf_printf(&b, ", \"sha256\": \"%s\"}", r->model_sha);
  }
  mdl_strbuf_printf(
      &b, "},\n  \"blessed\": %s,\n  \"bless_note\": ", r->blessed_now ? "true" : "false");
  mdl_strbuf_json(&b, r->bless_note);
  mdl_strbuf_printf(&b, "\n}\n");
  return mdl_strbuf_take(&b);
}

/* ---- junit.xml ---- */

char *mdl_ci_junit(const mdl_ci_result *r) {
  mdl_strbuf b = {0};
  int skipped = 0;
  for (int i = 0; i < r->n_gates; i++) skipped += r->gates[i].skipped;
  char when[32];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  mdl_strbuf_printf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
  mdl_strbuf_printf(
      &b, "<testsuites name=\"memdl\" tests=\"%d\" failures=\"%d\" errors=\"0\" time=\"%.3f\">\n",
      r->n_gates, n_failed(r), r->seconds);
  mdl_strbuf_printf(&b, "  <testsuite name=\"memdl.");
  mdl_strbuf_xml(&b, r->job_name && *r->job_name ? r->job_name : "job");
  mdl_strbuf_printf(&b,
                    "\" tests=\"%d\" failures=\"%d\" errors=\"0\" skipped=\"%d\" time=\"%.3f\" "
                    "timestamp=\"%s\" hostname=\"localhost\" id=\"0\" package=\"memdl\">\n",
                    r->n_gates, n_failed(r), skipped, r->seconds, when);
  mdl_strbuf_printf(&b, "    <properties>\n      <property name=\"fingerprint\" value=\"%s\"/>\n",
                    r->fp.hex);
  mdl_strbuf_printf(&b, "      <property name=\"verdict\" value=\"");
  mdl_strbuf_xml(&b, r->verdict);
  mdl_strbuf_printf(&b, "\"/>\n    </properties>\n");
  for (int i = 0; i < r->n_gates; i++) {
    const mdl_ci_gate *g = &r->gates[i];
    mdl_strbuf_printf(&b, "    <testcase name=\"");
    mdl_strbuf_xml(&b, g->name);
    mdl_strbuf_printf(&b, "\" classname=\"memdl.%s\" time=\"0\"", kind_name(g->kind));
    if (g->passed && !g->skipped) {
      mdl_strbuf_printf(&b, "/>\n");
      continue;
    }
    mdl_strbuf_printf(&b, ">\n      <%s message=\"", g->skipped ? "skipped" : "failure");
    mdl_strbuf_xml(&b, g->msg);
    if (g->skipped) {
      mdl_strbuf_printf(&b, "\"/>\n");
    } else {
      mdl_strbuf_printf(&b, "\" type=\"%s\">", kind_name(g->kind));
      mdl_strbuf_xml(&b, g->msg);
      mdl_strbuf_printf(&b, "</failure>\n");
    }
    mdl_strbuf_printf(&b, "    </testcase>\n");
  }
  mdl_strbuf_printf(&b, "    <system-out>");
  mdl_strbuf_xml(&b, r->bless_note);
  mdl_strbuf_printf(
      &b, "</system-out>\n    <system-err></system-err>\n  </testsuite>\n</testsuites>\n");
  return mdl_strbuf_take(&b);
}

/* ---- metrics.txt ---- */

static void om_label(mdl_strbuf *b, const char *s) {
  for (const char *p = s; *p; p++) {
    if (*p == '\\' || *p == '"')
      mdl_strbuf_printf(b, "\\%c", *p);
    else if (*p == '\n')
      mdl_strbuf_add(b, "\\n", 2);
    else
      mdl_strbuf_add(b, p, 1);
  }
}

static void om_value(mdl_strbuf *b, double v) {
  if (isnan(v))
    mdl_strbuf_printf(b, "NaN\n");
  else if (isinf(v))
    mdl_strbuf_printf(b, "%s\n", v > 0 ? "+Inf" : "-Inf");
  else
    mdl_strbuf_printf(b, "%.9g\n", v);
}

char *mdl_ci_openmetrics(const mdl_ci_result *r) {
  mdl_strbuf b = {0};
  mdl_strbuf_printf(
      &b, "# TYPE memdl_test gauge\n# HELP memdl_test Final TEST output of test net 0.\n");
  for (int k = 0; k < r->n_metrics; k++) {
    mdl_strbuf_printf(&b, "memdl_test{metric=\"");
    om_label(&b, r->metric_name[k]);
    mdl_strbuf_printf(&b, "\"} ");
    om_value(&b, r->metric_value[k]);
  }
  mdl_strbuf_printf(&b,
                    "# TYPE memdl_baseline gauge\n# HELP memdl_baseline The blessed model on this "
                    "run's TEST data.\n");
  for (int k = 0; k < r->n_metrics; k++) {
    if (isnan(r->baseline_value[k])) continue;
    mdl_strbuf_printf(&b, "memdl_baseline{metric=\"");
    om_label(&b, r->metric_name[k]);
    mdl_strbuf_printf(&b, "\"} ");
    om_value(&b, r->baseline_value[k]);
  }
  mdl_strbuf_printf(&b,
                    "# TYPE memdl_gate_passed gauge\n# HELP memdl_gate_passed 1 when the gate "
                    "passed (or was skipped).\n");
  for (int i = 0; i < r->n_gates; i++) {
    mdl_strbuf_printf(&b, "memdl_gate_passed{gate=\"");
    om_label(&b, r->gates[i].name);
    mdl_strbuf_printf(&b, "\",kind=\"%s\"} %d\n", kind_name(r->gates[i].kind),
                      r->gates[i].passed ? 1 : 0);
  }
  mdl_strbuf_printf(&b, "# TYPE memdl_iterations gauge\nmemdl_iterations %d\n", r->iter);
  mdl_strbuf_printf(
      &b,
      "# TYPE memdl_train_seconds gauge\n# UNIT memdl_train_seconds seconds\nmemdl_train_seconds ");
  om_value(&b, r->seconds);
  mdl_strbuf_printf(&b, "# TYPE memdl_exit_code gauge\nmemdl_exit_code %d\n", r->exit_code);
  mdl_strbuf_printf(&b, "# TYPE memdl_blessed gauge\nmemdl_blessed %d\n# EOF\n", r->blessed_now);
  return mdl_strbuf_take(&b);
}

/* ---- report.md ---- */

static void md_cell(mdl_strbuf *b, const char *s) {
  for (const char *p = s; *p; p++) {
    if (*p == '|')
      mdl_strbuf_add(b, "\\|", 2);
    else if (*p == '\n')
      mdl_strbuf_add(b, " ", 1);
    else
      mdl_strbuf_add(b, p, 1);
  }
}

/* Accuracy (or the first TEST metric) at every TEST pass, as bars. */
static void text_chart(mdl_strbuf *b, const mdl_ci_result *r, const char *jsonl) {
  const char *key = "accuracy";
  mdl_ci_series s = mdl_ci_series_read(jsonl, "test", key);
  if (!s.n && r->n_metrics) {
    key = r->metric_name[0];
    s = mdl_ci_series_read(jsonl, "test", key);
  }
  if (!s.n) {
    mdl_ci_series_free(&s);
    return;
  }
  double lo = s.value[0], hi = s.value[0];
  for (int i = 0; i < s.n; i++) {
    if (s.value[i] < lo) lo = s.value[i];
    if (s.value[i] > hi) hi = s.value[i];
  }
  mdl_strbuf_printf(b, "\n## %s at each TEST pass\n\n```\n", key);
  /* at most 40 rows: every k-th pass, and always the last */
  int step = s.n > 40 ? (s.n + 39) / 40 : 1;
  for (int i = 0; i < s.n; i++) {
    if (i % step && i != s.n - 1) continue;
    int w = hi > lo ? (int)lround(40 * (s.value[i] - lo) / (hi - lo)) : 40;
    char bar[48];
    memset(bar, '#', (size_t)w);
    bar[w] = 0;
    mdl_strbuf_printf(b, "iter %7.0f | %-40s | %.4f\n", s.iter[i], bar, s.value[i]);
  }
  mdl_strbuf_printf(b, "```\n(bars from %.4f to %.4f)\n", lo, hi);
  mdl_ci_series_free(&s);
}

char *mdl_ci_report_md(const mdl_ci_result *r, const char *metrics_jsonl) {
  mdl_strbuf b = {0};
  const char *icon = r->exit_code == 0 ? "\xe2\x9c\x85" : "\xe2\x9d\x8c";
  mdl_strbuf_printf(&b, "# %s memdl %s: %s (exit %d)\n\n", icon,
                    r->job_name && *r->job_name ? r->job_name : r->job_path, r->verdict,
                    r->exit_code);
  mdl_strbuf_printf(&b, "%d of %d gates passed. %s.  \nFingerprint `%s`", r->n_gates - n_failed(r),
                    r->n_gates, r->bless_note, r->fp.hex);
  if (r->model[0]) mdl_strbuf_printf(&b, "; model `%s` (sha256 `%.16s…`)", r->model, r->model_sha);
  mdl_strbuf_printf(&b, ".\n\n## Gates\n\n| | gate | detail |\n|---|---|---|\n");
  for (int i = 0; i < r->n_gates; i++) {
    const mdl_ci_gate *g = &r->gates[i];
    mdl_strbuf_printf(&b, "| %s | %s: ",
                      g->skipped  ? "skipped"
                      : g->passed ? "pass"
                                  : "**FAIL**",
                      kind_name(g->kind));
    md_cell(&b, g->name);
    mdl_strbuf_printf(&b, " | ");
    md_cell(&b, g->msg);
    mdl_strbuf_printf(&b, " |\n");
  }
  if (r->n_metrics) {
    mdl_strbuf_printf(&b,
                      "\n## Final TEST metrics\n\n| metric | this run | blessed model | change "
                      "|\n|---|---|---|---|\n");
    for (int k = 0; k < r->n_metrics; k++) {
      mdl_strbuf_printf(&b, "| ");
      md_cell(&b, r->metric_name[k]);
      mdl_strbuf_printf(&b, " | %.4f | ", r->metric_value[k]);
      if (isnan(r->baseline_value[k]))
        mdl_strbuf_printf(&b, "– | – |\n");
      else
        mdl_strbuf_printf(&b, "%.4f | %+.4f |\n", r->baseline_value[k],
                          r->metric_value[k] - r->baseline_value[k]);
    }
  }
  if (r->n_classes) {
    mdl_strbuf_printf(
        &b,
        "\n## Per-class accuracy (TEST, top-1)\n\n| class | accuracy | samples |\n|---|---|---|\n");
    for (int k = 0; k < r->n_classes && k < 1000; k++)
      mdl_strbuf_printf(&b, "| %d | %.4f | %lld |\n", k, r->class_accuracy[k],
                        (long long)r->class_samples[k]);
    if (r->n_classes > 1000)
      mdl_strbuf_printf(&b, "| … | %d classes in all, see run.json | |\n", r->n_classes);
  }
  if (r->trained)
    mdl_strbuf_printf(&b, "\nTrained %d of %d iterations in %.1f s%s.\n", r->iter, r->max_iter,
                      r->seconds,
                      r->budget_stopped ? " (stopped by the time budget)"
                      : r->stop_signal  ? " (stopped by a signal, after a snapshot)"
                                        : "");
  mdl_strbuf_printf(&b,
                    "\n## Data profile\n\n| data set | records | dropped by clean | class shares "
                    "(%%) |\n|---|---|---|---|\n");
  for (int i = 0; i < r->n_profiles; i++) {
    const mdl_ci_profile *p = &r->profiles[i];
    mdl_strbuf_printf(&b, "| ");
    md_cell(&b, p->name);
    mdl_strbuf_printf(&b, " | %lld | %lld | ", (long long)p->records, (long long)p->dropped);
    for (int k = 0; k < p->num_classes && k < 100; k++)
      mdl_strbuf_printf(&b, "%s%.1f", k ? " " : "",
                        p->records ? 100.0 * (double)p->class_count[k] / (double)p->records : 0);
    if (p->num_classes > 100) mdl_strbuf_printf(&b, " … (%d classes)", p->num_classes);
    mdl_strbuf_printf(&b, " |\n");
  }
  mdl_strbuf_printf(&b, "\n## What changed\n\n");
  if (!r->has_blessed) {
    mdl_strbuf_printf(&b, "No blessed run yet in `%s`.\n", r->registry);
  } else if (!r->changes || !*r->changes) {
    mdl_strbuf_printf(&b, "Nothing since the blessed run `%.12s`.\n", r->blessed);
  } else {
    mdl_strbuf_printf(&b, "Since the blessed run `%.12s`:\n\n", r->blessed);
    char *line = NULL;
    for (const char *p = r->changes; mdl_line_next(&p, &line);)
      mdl_strbuf_printf(&b, "- %s\n", line);
  }
  if (metrics_jsonl) text_chart(&b, r, metrics_jsonl);
  mdl_strbuf_printf(&b, "\nCurves: `curves.svg` in the output folder.\n");
  return mdl_strbuf_take(&b);
}

/* ---- writing them ---- */

static mdl_status put(const char *dir, const char *name, char *text, mdl_error *err) {
  char *path = mdl_path_join(dir, name);
  mdl_status st = mdl_file_write_atomic(path, text, strlen(text), err);
  free(path);
  free(text);
  return st;
}

mdl_status mdl_ci_write_reports(const mdl_ci_result *r, const mdl_job *job, bool png,
                                const char *dir, mdl_error *err) {
  char *jsonl = NULL;
  size_t len;
  mdl_error e;
  char *mpath = mdl_path_join(dir, "metrics.jsonl");
  if (mdl_file_read(mpath, &jsonl, &len, &e) != MDL_OK) jsonl = NULL;
  free(mpath);
  mdl_status st = put(dir, "run.json", mdl_ci_run_json(r), err);
  if (st == MDL_OK) st = put(dir, "junit.xml", mdl_ci_junit(r), err);
  if (st == MDL_OK) st = put(dir, "metrics.txt", mdl_ci_openmetrics(r), err);
  if (st == MDL_OK) st = put(dir, "report.md", mdl_ci_report_md(r, jsonl), err);
  if (st == MDL_OK)
    st = put(dir, "curves.svg",
             mdl_ci_svg(r, jsonl ? jsonl : "", job->job->accept, (int)job->job->n_accept), err);
  if (st == MDL_OK && png) {
    char *path = mdl_path_join(dir, "curves.png");
    st = mdl_ci_png(r, jsonl ? jsonl : "", job->job->accept, (int)job->job->n_accept, path, err);
    free(path);
  }
  free(jsonl);
  return st;
}

/* ---- GitHub Actions ---- */

enum { GITHUB_SUMMARY_CAP = 1 << 20 };

static mdl_status append_file(const char *path, const char *text, size_t n, mdl_error *err) {
  FILE *f = fopen(path, "ab");
  if (!f) return mdl_errorf(err, MDL_ERR_INTERNAL, "cannot append to %s", path);
  bool ok = fwrite(text, 1, n, f) == n;
  ok = fclose(f) == 0 && ok;
  return ok ? MDL_OK : mdl_errorf(err, MDL_ERR_INTERNAL, "cannot append to %s", path);
}

/* Workflow command data: %, CR and LF escaped; properties also , and :. */
static void gh_escape(mdl_strbuf *b, const char *s, bool property) {
  for (const char *p = s; *p; p++) {
    if (*p == '%')
      mdl_strbuf_add(b, "%25", 3);
    else if (*p == '\r')
      mdl_strbuf_add(b, "%0D", 3);
    else if (*p == '\n')
      mdl_strbuf_add(b, "%0A", 3);
    else if (property && *p == ':')
      mdl_strbuf_add(b, "%3A", 3);
    else if (property && *p == ',')
      mdl_strbuf_add(b, "%2C", 3);
    else
      mdl_strbuf_add(b, p, 1);
  }
}

/* The line of the k-th top-level `accept` (or the first `word`) in the job
 * file; 0 when not found. */
static int field_line(const char *text, const char *word, int k) {
  int line = 1, seen = 0;
  size_t wl = strlen(word);
  for (const char *p = text; p && *p; line++) {
    const char *q = p;
    while (*q == ' ' || *q == '\t') q++;
    if (!strncmp(q, word, wl) && (q[wl] == ' ' || q[wl] == '{' || q[wl] == ':' || q[wl] == '\t')) {
      if (seen++ == k) return line;
    }
    p = strchr(p, '\n');
    if (p) p++;
  }
  return 0;
}

mdl_status mdl_ci_github_files(const char *report_md, const char *verdict, int exit_code,
                               const char *fingerprint, const char *model, bool blessed, FILE *out,
                               mdl_error *err) {
  const char *gha = getenv("GITHUB_ACTIONS");
  if (!gha || !*gha) return MDL_OK;
  mdl_status st = MDL_OK;
  const char *summary = getenv("GITHUB_STEP_SUMMARY");
  if (summary && *summary && report_md) {
    struct stat sb;
    size_t have = stat(summary, &sb) == 0 ? (size_t)sb.st_size : 0;
    size_t n = strlen(report_md);
    static const char NOTE[] =
        "\n\n> **memdl:** this report was cut from %zu to %zu bytes to fit GitHub's 1 MiB step "
        "summary; the whole report is report.md in the output folder.\n";
    size_t room = have + 512 < GITHUB_SUMMARY_CAP ? GITHUB_SUMMARY_CAP - have - 512 : 0;
    if (n <= room) {
      st = append_file(summary, report_md, n, err);
    } else {
      size_t keep = room;
      while (keep && report_md[keep - 1] != '\n') keep--; /* whole lines only */
      mdl_strbuf b = {0};
      mdl_strbuf_add(&b, report_md, keep);
      mdl_strbuf_printf(&b, NOTE, n, keep);
      st = append_file(summary, b.s, b.len, err);
      free(mdl_strbuf_take(&b));
      fprintf(out, "::warning::memdl: report.md cut from %zu to %zu bytes for the step summary\n",
              n, keep);
    }
  }
  const char *outputs = getenv("GITHUB_OUTPUT");
  if (st == MDL_OK && outputs && *outputs) {
    mdl_strbuf b = {0};
    mdl_strbuf_printf(&b, "verdict=%s\nexit_code=%d\nfingerprint=%s\nmodel=%s\nblessed=%s\n",
                      verdict, exit_code, fingerprint, model, blessed ? "true" : "false");
    st = append_file(outputs, b.s, b.len, err);
    free(mdl_strbuf_take(&b));
  }
  return st;
}

mdl_status mdl_ci_github(const mdl_ci_result *r, const char *report_md, FILE *out, mdl_error *err) {
  const char *gha = getenv("GITHUB_ACTIONS");
  if (!gha || !*gha) return MDL_OK;
  mdl_status st = mdl_ci_github_files(report_md, r->verdict, r->exit_code, r->fp.hex, r->model,
                                      r->blessed_now, out, err);
  /* annotations: GitHub shows at most 10 of a kind per step */
  char *job_text = NULL;
  size_t len;
  mdl_error e;
  if (mdl_file_read(r->job_path, &job_text, &len, &e) != MDL_OK) job_text = NULL;
  int shown = 0, failed = n_failed(r);
  for (int i = 0; i < r->n_gates && shown < 10; i++) {
    const mdl_ci_gate *g = &r->gates[i];
    if (g->passed) continue;
    int line = 0;
    if (job_text && g->accept_index >= 0) line = field_line(job_text, "accept", g->accept_index);
    if (job_text && g->kind == MDL_CI_GATE_DATA) line = field_line(job_text, "data_check", 0);
    mdl_strbuf b = {0};
    mdl_strbuf_printf(&b, "::error file=");
    gh_escape(&b, r->job_path, true);
    if (line) mdl_strbuf_printf(&b, ",line=%d", line);
    mdl_strbuf_printf(&b, ",title=");
    gh_escape(&b, "memdl gate ", true);
    gh_escape(&b, g->name, true);
    mdl_strbuf_printf(&b, "::");
    gh_escape(&b, g->msg, false);
    fprintf(out, "%s\n", b.s);
    free(mdl_strbuf_take(&b));
    shown++;
  }
  if (failed > shown)
    fprintf(out,
            "::warning::memdl: %d more failed gates are not annotated (GitHub shows 10 per "
            "step); every gate is in junit.xml and report.md\n",
            failed - shown);
  free(job_text);
  return st;
}
