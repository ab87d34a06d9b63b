/* The CI report formats on a made-up result: GitHub's 1 MiB step summary
 * cut with a note, at most 10 annotations and a count of the rest, the
 * outputs file, JSON and OpenMetrics escaping, and the curves' marks. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/ci/png.h"
#include "runtime/ci/report.h"
#include "runtime/ci/strbuf.h"
#include "runtime/ci/svg.h"
#include "tests/testutil.h"

TestSuite(ci_report, .init = tu_dir_setup, .fini = tu_dir_teardown);

static int count(const char *s, const char *what) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
  return n;
}

static mdl_ci_result made_up(int n_gates, mdl_ci_gate *gates) {
  static char *names[] = {"accuracy", "loss"};
  static double values[] = {0.81, 0.52}, base[] = {0.85, NAN};
  mdl_ci_result r = {.job_path = tu_dir_path("job.prototxt"),
                     .job_name = "made \"up\"",
                     .n_metrics = 2,
                     .metric_name = names,
                     .metric_value = values,
                     .baseline_value = base,
                     .gates = gates,
                     .n_gates = n_gates,
                     .iter = 70,
                     .max_iter = 100,
                     .trained = true,
                     .tested = true,
                     .budget_stopped = true,
                     .exit_code = 3,
                     .verdict = "failed"};
  memset(r.fp.hex, 'a', 64);
  for (int i = 0; i < n_gates; i++) {
    memset(&gates[i], 0, sizeof gates[i]);
    gates[i].kind = MDL_CI_GATE_BASELINE;
    gates[i].accept_index = 1;
    snprintf(gates[i].name, sizeof gates[i].name, "gate %d, with: punctuation", i);
    snprintf(gates[i].msg, sizeof gates[i].msg, "100%% worse\nsecond line <&>");
  }
  return r;
}

/* The one line walk the reports read metrics.jsonl with: a last line
 * without '\n' counts, an empty line in between too, a final '\n' makes none. */
Test(ci_report, line_walk) {
  const char *texts[] = {"", "a", "a\n", "a\n\nbc", "a\nbc\n"};
  const char *want[] = {"", "a|", "a|", "a||bc|", "a|bc|"};
  for (int t = 0; t < 5; t++) {
    mdl_strbuf b = {0};
    char *line = NULL;
    for (const char *p = texts[t]; mdl_line_next(&p, &line);) mdl_strbuf_printf(&b, "%s|", line);
    cr_assert_null(line);
    char *got = mdl_strbuf_take(&b);
    cr_assert_str_eq(got, want[t], "text %d", t);
    free(got);
  }
}

Test(ci_report, github_cap_annotations_and_cut) {
  tu_dir_write("job.prototxt",
               "name: \"x\"\naccept { metric: \"loss\" at_most: 1 }\n"
               "# between\n  accept { metric: \"accuracy\" max_drop: 0.01 }\n");
  mdl_ci_gate gates[12];
  mdl_ci_result r = made_up(12, gates);
  /* a summary already near GitHub's 1 MiB cap */
  size_t big = (1 << 20) - 1000;
  char *fill = malloc(big + 1);
  memset(fill, 'x', big);
  fill[big - 1] = '\n';
  fill[big] = 0;
  const char *summary = tu_dir_write("summary.md", fill);
  free(fill);
  const char *outputs = tu_dir_write("outputs", "");
  setenv("GITHUB_ACTIONS", "true", 1);
  setenv("GITHUB_STEP_SUMMARY", summary, 1);
  setenv("GITHUB_OUTPUT", outputs, 1);
  char *md = mdl_ci_report_md(&r, NULL);
  cr_assert(strlen(md) > 1000, "the report is longer than the room left");
  char *ann = NULL;
  size_t ann_len = 0;
  FILE *out = open_memstream(&ann, &ann_len);
  mdl_error err;
  cr_assert_eq(mdl_ci_github(&r, md, out, &err), MDL_OK, "%s", err.msg);
  fclose(out);
  cr_assert_eq(count(ann, "::error "), 10, "%s", ann);
  cr_assert(strstr(ann, "::warning::memdl: 2 more failed gates are not annotated"), "%s", ann);
  cr_assert(strstr(ann, "::warning::memdl: report.md cut from"), "%s", ann);
  /* the second accept (line 4), properties and data escaped */
  cr_assert(
      strstr(ann, ",line=4,title=memdl gate gate 0%2C with%3A punctuation::100%25 worse%0Asecond"),
      "%s", ann);
  size_t len;
  char *s = tu_read(summary, &len);
  cr_assert(len <= 1 << 20, "summary of %zu bytes is over GitHub's cap", len);
  cr_assert(strstr(s, "this report was cut from"), "the cut is said");
  cr_assert(strstr(s, "# \xe2\x9d\x8c memdl made"), "the verdict is kept first");
  free(s);
  char *o = tu_read(outputs, &len);
  cr_assert(strstr(o, "verdict=failed\nexit_code=3\nfingerprint=aaaa"), "%s", o);
  free(o);
  free(ann);
  free(md);
  unsetenv("GITHUB_ACTIONS");
}

Test(ci_report, escaping_and_marks) {
  mdl_ci_gate gates[1];
  mdl_ci_result r = made_up(1, gates);
  char *json = mdl_ci_run_json(&r);
  cr_assert(strstr(json, "\"name\": \"made \\\"up\\\"\""), "%s", json);
  cr_assert(strstr(json, "\"message\": \"100% worse\\nsecond line <&>\""), "%s", json);
  cr_assert(strstr(json, "\"baseline\": {\"accuracy\": 0.85, \"loss\": null}"), "%s", json);
  free(json);
  char *om = mdl_ci_openmetrics(&r);
  cr_assert(strstr(om, "memdl_test{metric=\"accuracy\"} 0.81\n"), "%s", om);
  cr_assert(strstr(om, "memdl_baseline{metric=\"accuracy\"} 0.85\n"), "%s", om);
  cr_assert(!strstr(om, "memdl_baseline{metric=\"loss\"}"), "no NaN baseline: %s", om);
  free(om);
  char *x = mdl_ci_junit(&r);
  cr_assert(strstr(x, "message=\"100% worse&#10;second line &lt;&amp;&gt;\""), "%s", x);
  free(x);
  const char *jsonl =
      "{\"event\": \"train\", \"iter\": 0, \"loss\": 2.3}\n"
      "{\"event\": \"train\", \"iter\": 50, \"loss\": 0.9}\n"
      "{\"event\": \"test\", \"iter\": 50, \"net\": 0, \"accuracy\": 0.7, \"loss\": 0.8}\n"
      "{\"event\": \"test\", \"iter\": 50, \"net\": 1, \"accuracy\": 0.1, \"loss\": 9}\n"
      "{\"event\": \"test\", \"iter\": 70, \"net\": 0, \"accuracy\": 0.81, \"loss\": 0.52}\n"
      "{\"event\": \"done\", \"iter\": 70, \"stopped\": \"budget\"}\n";
  mdl_ci_series s = mdl_ci_series_read(jsonl, "test", "accuracy");
  cr_assert_eq(s.n, 2, "test net 0 only");
  cr_assert_float_eq(s.value[1], 0.81, 1e-9);
  mdl_ci_series_free(&s);
  Memdl__Acceptance ac = MEMDL__ACCEPTANCE__INIT;
  ac.metric = "accuracy";
  ac.has_at_least = true;
  ac.at_least = 0.89f;
  Memdl__Acceptance *acs[1] = {&ac};
  char *svg = mdl_ci_svg(&r, jsonl, acs, 1);
  cr_assert(strstr(svg, "accept: at least 0.89"), "accept bound drawn");
  cr_assert(strstr(svg, "stroke-dasharray=\"6,4\""), "accept bound dashed");
  cr_assert(strstr(svg, "stroke-dasharray=\"2,3\""), "baseline dotted");
  cr_assert(strstr(svg, "budget stop"), "budget stop marked");
  cr_assert_eq(count(svg, "<circle "), 4, "TEST points marked (2 loss, 2 accuracy): %s", svg);
  cr_assert(strstr(svg, "made &quot;up&quot;"), "title escaped");
  free(svg);
  char *md = mdl_ci_report_md(&r, jsonl);
  const char *head = "# \xe2\x9d\x8c memdl made \"up\": failed (exit 3)\n";
  cr_assert(!strncmp(md, head, strlen(head)), "%s", md);
  cr_assert(strstr(md, "| accuracy | 0.8100 | 0.8500 | -0.0400 |"), "%s", md);
  cr_assert(strstr(md, "iter      70 | ######################################## | 0.8100"), "%s",
            md);
  free(md);
}

/* The chart shows the last fresh run and the runs that resumed it, with
 * stop and resume marks, in the SVG and in memdl's own PNG alike. */
Test(ci_report, curves_follow_resumes_and_png_draws_them) {
  mdl_ci_gate gates[1];
  mdl_ci_result r = made_up(1, gates);
  const char *jsonl =
      "{\"event\": \"start\", \"iter\": 0, \"resumed\": false}\n"
      "{\"event\": \"test\", \"iter\": 10, \"net\": 0, \"accuracy\": 0.2}\n"
      "{\"event\": \"start\", \"iter\": 0, \"resumed\": false}\n"
      "{\"event\": \"train\", \"iter\": 0, \"loss\": 2.3}\n"
      "{\"event\": \"test\", \"iter\": 20, \"net\": 0, \"accuracy\": 0.5}\n"
      "{\"event\": \"stopped\", \"iter\": 30}\n"
      "{\"event\": \"start\", \"iter\": 30, \"resumed\": true}\n"
      "{\"event\": \"train\", \"iter\": 50, \"loss\": 0.9}\n"
      "{\"event\": \"test\", \"iter\": 70, \"net\": 0, \"accuracy\": 0.81}\n";
  mdl_ci_series s = mdl_ci_series_read(jsonl, "test", "accuracy");
  cr_assert_eq(s.n, 2, "the earlier fresh run is not drawn: %d points", s.n);
  cr_assert_float_eq(s.value[0], 0.5, 1e-9);
  mdl_ci_series_free(&s);
  char *svg = mdl_ci_svg(&r, jsonl, NULL, 0);
  cr_assert(strstr(svg, ">stopped (signal)</text>") && strstr(svg, ">resumed</text>"), "%s", svg);
  free(svg);
  const char *png = tu_dir_path("curves.png");
  mdl_error err;
  cr_assert_eq(mdl_ci_png(&r, jsonl, NULL, 0, png, &err), MDL_OK, "%s", err.msg);
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  cr_assert(png_image_begin_read_from_file(&img, png), "%s", img.message);
  cr_assert(img.width == MDL_CI_CHART_W && img.height == MDL_CI_CHART_H);
  img.format = PNG_FORMAT_RGB;
  unsigned char *px = malloc(PNG_IMAGE_SIZE(img));
  cr_assert(png_image_finish_read(&img, NULL, px, 0, NULL), "%s", img.message);
  long green = 0, purple = 0, dark = 0;
  for (size_t i = 0; i < (size_t)img.width * img.height; i++) {
    unsigned char R = px[3 * i], G = px[3 * i + 1], B = px[3 * i + 2];
    green += R == 0x2c && G == 0xa0 && B == 0x2c;  /* the accuracy curve */
    purple += R == 0x94 && G == 0x67 && B == 0xbd; /* stop and resume marks */
    dark += R == 0 && G == 0 && B == 0;            /* text */
  }
  free(px);
  cr_assert(green > 100, "no accuracy curve: %ld pixels", green);
  cr_assert(purple > 200, "no stop/resume marks: %ld pixels", purple);
  cr_assert(dark > 500, "no text: %ld pixels", dark);
}
