/* The reports of a CI run, each written atomically into the output folder:
 * run.json (machines), junit.xml (one test case per gate and data check),
 * metrics.txt (OpenMetrics), report.md (people: verdict first), curves.svg
 * (svg.h); and, under GitHub Actions, the step summary, step outputs and at
 * most 10 ::error annotations. Owns the formats; not the verdicts. */
#ifndef MDL_RUNTIME_CI_REPORT_H
#define MDL_RUNTIME_CI_REPORT_H

#include <stdbool.h>
#include <stdio.h>

#include "common/error.h"
#include "compiler/job.h"
#include "runtime/ci/result.h"

/* The run.json text. Caller frees. */
char *mdl_ci_run_json(const mdl_ci_result *r);

/* The report.md text; metrics_jsonl (may be NULL) feeds its text chart.
 * Caller frees. */
char *mdl_ci_report_md(const mdl_ci_result *r, const char *metrics_jsonl);

/* The junit.xml text. Caller frees. */
char *mdl_ci_junit(const mdl_ci_result *r);

/* The metrics.txt text (OpenMetrics, ending in "# EOF"). Caller frees. */
char *mdl_ci_openmetrics(const mdl_ci_result *r);

/* Writes run.json, junit.xml, metrics.txt, report.md and curves.svg into
 * dir (reading dir/metrics.jsonl for the curves). Stops at the first
 * failed write. */
mdl_status mdl_ci_write_reports(const mdl_ci_result *r, const mdl_job *job, bool png,
                                const char *dir, mdl_error *err);

/* With GITHUB_ACTIONS set: appends report_md to $GITHUB_STEP_SUMMARY (cut
 * to fit its 1 MiB cap, saying so), writes verdict, model and fingerprint
 * to $GITHUB_OUTPUT, and prints up to 10 ::error lines to out pointing at
 * the job file's accept lines (saying how many more were left out). */
mdl_status mdl_ci_github(const mdl_ci_result *r, const char *report_md, FILE *out, mdl_error *err);

/* The GitHub files alone (no annotations), for a run skipped as up to date:
 * report_md (may be NULL) to the step summary, the rest to the outputs. */
mdl_status mdl_ci_github_files(const char *report_md, const char *verdict, int exit_code,
                               const char *fingerprint, const char *model, bool blessed, FILE *out,
                               mdl_error *err);

#endif
