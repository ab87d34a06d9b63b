/* The CI sequence: fingerprint, skip, data checks, training within a
 * budget, baseline re-evaluation, gates, blessing, reports. See ci.h. */
#include "runtime/ci/ci.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fileio.h"
#include "common/sha256.h"
#include "runtime/ci/fingerprint.h"
#include "runtime/ci/registry.h"
#include "runtime/ci/report.h"
#include "runtime/ci/result.h"
#include "runtime/ci/strbuf.h"
#include "runtime/data/dataset.h"
#include "runtime/dist/driver.h"
#include "runtime/engine/backend.h"
#include "runtime/engine/layer.h"
#include "runtime/engine/threadpool.h"
#include "runtime/solver/caffemodel.h"
#include "runtime/train/accept.h"
#include "runtime/train/device.h"
#include "runtime/train/metrics.h"
#include "runtime/train/train.h"

/* The backend kind a run of o computes on, for the fingerprint: "cpu" or
 * "cuda" (which GPU of one kind does not change the bits). */
static mdl_status device_kind(const mdl_ci_opts *o, char *kind, size_t size, mdl_error *err) {
  const mdl_backend *b = NULL;
  mdl_status st = mdl_device_backend(o->device ? o->device : "auto", &b, err);
  if (st != MDL_OK) return st;
  snprintf(kind, size, "%s", mdl_backend_name(b));
  kind[strcspn(kind, ":")] = 0;
  return MDL_OK;
}

static mdl_status status_of_exit(int code) {
  switch (code) {
    case 0:
      return MDL_OK;
    case 2:
      return MDL_ERR_INVALID;
    case 3:
      return MDL_ERR_ACCEPT;
    case 4:
      return MDL_ERR_DATA_CHECK;
    case 5:
      return MDL_ERR_BUDGET;
    default:
      return code > 128 ? MDL_ERR_STOPPED : MDL_ERR_INTERNAL;
  }
}

/* ---- fingerprint and what changed ---- */

/* The workers a run of job averages over (the bits depend on it). */
static int dist_workers(const mdl_job *job, const mdl_driver_opts *d) {
  bool remote;
  return d ? mdl_driver_count_workers(job, d->workers, &remote) : 1;
}

static mdl_status compute_fp(const mdl_job *job, const mdl_ci_opts *o, const char *reg,
                             const char *weights, mdl_fingerprint *fp, mdl_error *err) {
  char device[64];
  mdl_status st = device_kind(o, device, sizeof device, err);
  if (st != MDL_OK) return st;
  char *cache = mdl_path_join(reg, "hashes.tsv");
  mdl_fp_inputs in = {.weights = weights,
                      .version = o->version ? o->version : "",
                      .device = device,
                      .workers = dist_workers(job, o->dist),
                      .cache = cache};
  st = mdl_fingerprint_compute(job, &in, fp, err);
  free(cache);
  return st;
}

/* What changed since the blessed run, one a line; NULL when none blessed. */
static char *changes_since(const char *reg, const char *blessed, const mdl_fingerprint *cur) {
  char *text = NULL;
  mdl_error e;
  if (mdl_registry_get(reg, blessed, "fingerprint.txt", &text, &e) != MDL_OK)
    return mdl_xstrdup("the blessed run's fingerprint.txt is missing\n");
  mdl_fingerprint old;
  char *diff;
  if (mdl_fingerprint_parse(text, &old, &e) == MDL_OK) {
    diff = mdl_fingerprint_diff(&old, cur);
    mdl_fingerprint_free(&old);
  } else {
    diff = mdl_xstrdup("the blessed run's fingerprint.txt is unreadable\n");
  }
  free(text);
  return diff;
}

/* The starting weights: --weights, or the blessed model for --warm-start. */
static mdl_status start_weights(const mdl_ci_opts *o, const char *reg, bool has_blessed,
                                const char *blessed, char **weights, FILE *log, mdl_error *err) {
  *weights = NULL;
  if (o->warm_start && o->weights)
    return mdl_errorf(err, MDL_ERR_INVALID, "give --warm-start or --weights, not both");
  if (o->weights) *weights = mdl_xstrdup(o->weights);
  if (o->warm_start) {
    if (has_blessed)
      *weights = mdl_registry_run_path(reg, blessed, "model.caffemodel");
    else
      fprintf(log, "warm start: no blessed model in %s yet; training from scratch\n", reg);
  }
  return MDL_OK;
}

mdl_status mdl_ci_print_fingerprint(const mdl_job *job, const mdl_ci_opts *o, bool json, FILE *out,
                                    mdl_error *err) {
  char *reg = mdl_registry_dir(job, o->registry);
  char blessed[65];
  bool has_blessed = mdl_registry_blessed(reg, blessed);
  char *weights = NULL;
  mdl_status st = start_weights(o, reg, has_blessed, blessed, &weights, stderr, err);
  mdl_fingerprint fp = {0};
  if (st == MDL_OK) st = compute_fp(job, o, reg, weights, &fp, err);
  free(weights);
  if (st != MDL_OK) {
    free(reg);
    return st;
  }
  char *changes = has_blessed ? changes_since(reg, blessed, &fp) : NULL;
  mdl_strbuf b = {0};
  if (json) {
    mdl_strbuf_printf(&b, "{\"fingerprint\": \"%s\", \"parts\": {", fp.hex);
    for (int i = 0; i < fp.n_parts; i++) {
      mdl_strbuf_printf(&b, "%s", i ? ", " : "");
      mdl_strbuf_json(&b, fp.parts[i].name);
      mdl_strbuf_printf(&b, ": \"%s\"", fp.parts[i].sha);
    }
    mdl_strbuf_printf(&b, "}, \"blessed\": ");
    if (has_blessed)
      mdl_strbuf_printf(&b, "\"%s\"", blessed);
    else
      mdl_strbuf_printf(&b, "null");
    mdl_strbuf_printf(&b, ", \"same_as_blessed\": %s, \"changed\": [",
                      has_blessed && !strcmp(blessed, fp.hex) ? "true" : "false");
    int k = 0;
    for (char *line = changes; line && *line;) {
      char *nl = strchr(line, '\n');
      size_t n = nl ? (size_t)(nl - line) : strlen(line);
      char *item = mdl_xmalloc(n + 1);
      memcpy(item, line, n);
      item[n] = 0;
      mdl_strbuf_printf(&b, "%s", k++ ? ", " : "");
      mdl_strbuf_json(&b, item);
      free(item);
      line = nl ? nl + 1 : line + n;
    }
    mdl_strbuf_printf(&b, "], \"files_hashed\": %d, \"files_cached\": %d}\n", fp.files_hashed,
                      fp.files_cached);
  } else {
    mdl_strbuf_printf(&b, "%s\n", fp.hex);
    for (int i = 0; i < fp.n_parts; i++)
      mdl_strbuf_printf(&b, "  %-24s %s\n", fp.parts[i].name, fp.parts[i].sha);
    if (!has_blessed)
      mdl_strbuf_printf(&b, "no blessed run in %s\n", reg);
    else if (!strcmp(blessed, fp.hex))
      mdl_strbuf_printf(&b, "same as the blessed run\n");
    else
      mdl_strbuf_printf(&b, "changed since the blessed run %.12s:\n%s", blessed,
                        changes && *changes ? changes : "(nothing named; see the parts)\n");
  }
  fputs(b.s, out);
  free(mdl_strbuf_take(&b));
  free(changes);
  mdl_fingerprint_free(&fp);
  free(reg);
  return MDL_OK;
}

/* ---- data profiles and checks ---- */

static void take_profiles(mdl_train *t, mdl_ci_result *r) {
  int n = mdl_train_n_datasets(t);
  r->profiles = mdl_xcalloc((size_t)n + 1, sizeof *r->profiles);
  for (int i = 0; i < n; i++) {
    const mdl_dataset *ds = mdl_train_dataset(t, i);
    mdl_ci_profile *p = &r->profiles[r->n_profiles++];
    snprintf(p->name, sizeof p->name, "%s", ds->name ? ds->name : "");
    p->records = ds->n;
    p->scanned = ds->scanned;
    for (int k = 0; k < MDL_DROP_COUNT; k++) p->dropped += ds->dropped[k];
    p->num_classes = ds->class_count ? ds->num_classes : 0;
    p->class_count = mdl_xcalloc((size_t)p->num_classes + 1, sizeof *p->class_count);
    if (p->num_classes)
      memcpy(p->class_count, ds->class_count, (size_t)p->num_classes * sizeof *p->class_count);
  }
}

static char *format_profiles(const mdl_ci_result *r) {
  mdl_strbuf b = {0};
  for (int i = 0; i < r->n_profiles; i++) {
    const mdl_ci_profile *p = &r->profiles[i];
    mdl_strbuf_printf(&b, "data\t%s\t%lld\t%lld\t%lld\t%d\t", p->name, (long long)p->records,
                      (long long)p->scanned, (long long)p->dropped, p->num_classes);
    for (int k = 0; k < p->num_classes; k++)
      mdl_strbuf_printf(&b, "%s%lld", k ? "," : "", (long long)p->class_count[k]);
    mdl_strbuf_printf(&b, "\n");
  }
  return mdl_strbuf_take(&b);
}

static void free_profiles(mdl_ci_profile *p, int n) {
  for (int i = 0; i < n; i++) free(p[i].class_count);
  free(p);
}

static mdl_ci_profile *parse_profiles(const char *text, int *n) {
  *n = 0;
  mdl_ci_profile *ps = NULL;
  char *copy = mdl_xstrdup(text), *save = NULL;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char *f[7] = {0}, *s2 = NULL;
    int k = 0;
    for (char *tok = strtok_r(line, "\t", &s2); tok && k < 7; tok = strtok_r(NULL, "\t", &s2))
      f[k++] = tok;
    if (k < 6 || strcmp(f[0], "data")) continue;
    ps = mdl_xrealloc(ps, (size_t)(*n + 1) * sizeof *ps);
    mdl_ci_profile *p = &ps[(*n)++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", f[1]);
    p->records = atoll(f[2]);
    p->scanned = atoll(f[3]);
    p->dropped = atoll(f[4]);
    p->num_classes = atoi(f[5]);
    if (p->num_classes < 0 || p->num_classes > 1 << 20) p->num_classes = 0;
    p->class_count = mdl_xcalloc((size_t)p->num_classes + 1, sizeof *p->class_count);
    char *c = k > 6 ? f[6] : NULL;
    for (int j = 0; c && *c && j < p->num_classes; j++) {
      p->class_count[j] = strtoll(c, &c, 10);
      if (*c == ',') c++;
    }
  }
  free(copy);
  return ps;
}

static mdl_ci_gate *new_gate(mdl_ci_result *r, mdl_ci_gate_kind kind) {
  r->gates = mdl_xrealloc(r->gates, (size_t)(r->n_gates + 1) * sizeof *r->gates);
  mdl_ci_gate *g = &r->gates[r->n_gates++];
  memset(g, 0, sizeof *g);
  g->kind = kind;
  g->accept_index = -1;
  g->passed = true;
  return g;
}

static void data_checks(const mdl_job *job, mdl_ci_result *r, const mdl_ci_profile *base,
                        int n_base) {
  const Memdl__Ci *ci = job->job->ci;
  for (size_t c = 0; ci && c < ci->n_data_check; c++) {
    const Memdl__DataCheck *dc = ci->data_check[c];
    bool any = false;
    for (int i = 0; i < r->n_profiles; i++) {
      const mdl_ci_profile *p = &r->profiles[i];
      if (dc->data && *dc->data && strcmp(dc->data, p->name)) continue;
      any = true;
      if (dc->min_records) {
        mdl_ci_gate *g = new_gate(r, MDL_CI_GATE_DATA);
        snprintf(g->name, sizeof g->name, "%s min_records %llu", p->name,
                 (unsigned long long)dc->min_records);
        g->value = (double)p->records;
        g->bound = (double)dc->min_records;
        g->passed = (uint64_t)p->records >= dc->min_records;
        snprintf(g->msg, sizeof g->msg, "%lld records%s%llu", (long long)p->records,
                 g->passed ? ", at least " : ", fewer than the required ",
                 (unsigned long long)dc->min_records);
      }
      if (dc->max_dropped_fraction > 0) {
        mdl_ci_gate *g = new_gate(r, MDL_CI_GATE_DATA);
        snprintf(g->name, sizeof g->name, "%s max_dropped_fraction %g", p->name,
                 (double)dc->max_dropped_fraction);
        g->value = p->scanned ? (double)p->dropped / (double)p->scanned : 0;
        g->bound = dc->max_dropped_fraction;
        g->passed = g->value <= g->bound;
        snprintf(g->msg, sizeof g->msg, "clean dropped %lld of %lld records (%.4f)%s%g",
                 (long long)p->dropped, (long long)p->scanned, g->value,
                 g->passed ? ", within " : ", more than ", g->bound);
      }
      if (dc->max_class_share_change > 0) {
        mdl_ci_gate *g = new_gate(r, MDL_CI_GATE_DATA);
        snprintf(g->name, sizeof g->name, "%s max_class_share_change %g", p->name,
                 (double)dc->max_class_share_change);
        g->bound = dc->max_class_share_change;
        const mdl_ci_profile *b = NULL;
        for (int j = 0; j < n_base; j++)
          if (!strcmp(base[j].name, p->name)) b = &base[j];
        if (!b) {
          g->skipped = true;
          snprintf(g->msg, sizeof g->msg, "no blessed data profile of %s to compare with", p->name);
          continue;
        }
        int nc = p->num_classes > b->num_classes ? p->num_classes : b->num_classes;
        int worst = -1;
        double worst_d = 0, now_s = 0, was_s = 0;
        for (int k = 0; k < nc; k++) {
          double now =
              k < p->num_classes && p->records ? (double)p->class_count[k] / (double)p->records : 0;
          double was =
              k < b->num_classes && b->records ? (double)b->class_count[k] / (double)b->records : 0;
          if (fabs(now - was) > worst_d || worst < 0) {
            worst_d = fabs(now - was);
            worst = k;
            now_s = now;
            was_s = was;
          }
        }
        g->value = worst_d;
        g->passed = worst_d <= g->bound;
        snprintf(g->msg, sizeof g->msg,
                 "largest change: class %d has %.2f%% of the records, %.2f%% in the blessed run "
                 "(%.4f%s%g)",
                 worst, 100 * now_s, 100 * was_s, worst_d, g->passed ? " within " : " exceeds ",
                 g->bound);
      }
    }
    if (!any) {
      mdl_ci_gate *g = new_gate(r, MDL_CI_GATE_DATA);
      snprintf(g->name, sizeof g->name, "data_check %s", dc->data ? dc->data : "");
      g->passed = false;
      snprintf(g->msg, sizeof g->msg, "no data set named \"%s\" is loaded by the nets",
               dc->data ? dc->data : "");
    }
  }
}

/* ---- metric gates ---- */

static double metric_of(const mdl_ci_result *r, const char *name, bool baseline) {
  for (int k = 0; k < r->n_metrics; k++)
    if (name && !strcmp(r->metric_name[k], name))
      return baseline ? r->baseline_value[k] : r->metric_value[k];
  return NAN;
}

static bool wants_baseline(const mdl_job *job) {
  for (size_t a = 0; a < job->job->n_accept; a++)
    if (job->job->accept[a]->has_max_drop || job->job->accept[a]->has_max_relative_drop)
      return true;
  return false;
}

static void metric_gates(const mdl_job *job, mdl_ci_result *r) {
  const Memdl__Job *j = job->job;
  bool fail_missing = j->ci && j->ci->if_missing == MEMDL__CI__IF_MISSING__FAIL;
  for (size_t a = 0; a < j->n_accept; a++) {
    const Memdl__Acceptance *ac = j->accept[a];
    const char *m = ac->metric ? ac->metric : "";
    double v = metric_of(r, m, false);
    if (ac->has_at_least || ac->has_at_most) {
      mdl_ci_gate *g = new_gate(r, MDL_CI_GATE_ACCEPT);
      g->accept_index = (int)a;
      if (ac->has_at_least)
        snprintf(g->name, sizeof g->name, "%s at_least %g", m, (double)ac->at_least);
      else
        snprintf(g->name, sizeof g->name, "%s at_most %g", m, (double)ac->at_most);
      g->value = v;
      g->bound = ac->has_at_least ? ac->at_least : ac->at_most;
      if (!r->tested) {
        g->skipped = true;
        snprintf(g->msg, sizeof g->msg, "not evaluated: no final TEST pass");
      } else {
        Memdl__Acceptance *one[1] = {(Memdl__Acceptance *)ac};
        g->passed = mdl_accept_check(one, 1, (const char *const *)r->metric_name, r->metric_value,
                                     r->n_metrics, g->msg, sizeof g->msg);
        if (g->passed) snprintf(g->msg, sizeof g->msg, "%s %.4f", m, v);
      }
    }
    if (!ac->has_max_drop && !ac->has_max_relative_drop) continue;
    /* the direction of "worse": up for a metric bounded from above (a loss) */
    bool lower_better = ac->has_at_most && !ac->has_at_least;
    double base = metric_of(r, m, true);
    for (int kind = 0; kind < 2; kind++) {
      if (kind == 0 && !ac->has_max_drop) continue;
      if (kind == 1 && !ac->has_max_relative_drop) continue;
      mdl_ci_gate *g = new_gate(r, MDL_CI_GATE_BASELINE);
      g->accept_index = (int)a;
      double limit = kind == 0 ? ac->max_drop : ac->max_relative_drop;
      snprintf(g->name, sizeof g->name, "%s %s %g", m, kind ? "max_relative_drop" : "max_drop",
               limit);
      g->bound = kind == 0 ? limit : limit * fabs(base);
      if (!r->has_blessed) {
        g->passed = !fail_missing;
        snprintf(g->msg, sizeof g->msg, "no blessed model yet (if_missing: %s)",
                 fail_missing ? "FAIL" : "PASS");
        g->skipped = !fail_missing;
        continue;
      }
      if (!r->tested || isnan(base) || isnan(v)) {
        g->skipped = true;
        snprintf(g->msg, sizeof g->msg, "not evaluated: %s",
                 !r->tested ? "no final TEST pass" : "the metric is missing");
        continue;
      }
      double drop = lower_better ? v - base : base - v;
      g->value = drop;
      g->passed = drop <= g->bound + 1e-12;
      snprintf(g->msg, sizeof g->msg,
               "%s %.4f against the blessed model's %.4f on this run's TEST data: %s by %.4f "
               "(allowed %.4f)",
               m, v, base, drop > 0 ? "worse" : "not worse", fabs(drop), g->bound);
    }
  }
}

/* ---- the stored run ---- */

static char *summary_text(const mdl_ci_result *r) {
  mdl_strbuf b = {0};
  mdl_strbuf_printf(&b, "exit %d\nverdict %s\nfingerprint %s\n", r->exit_code, r->verdict,
                    r->fp.hex);
  if (r->trained)
    mdl_strbuf_printf(&b, "trained %d of %d iterations in %.1f s\n", r->iter, r->max_iter,
                      r->seconds);
  if (r->n_metrics) {
    mdl_strbuf_printf(&b, "test:");
    for (int k = 0; k < r->n_metrics; k++)
      mdl_strbuf_printf(&b, "%s %s %.4f", k ? "," : "", r->metric_name[k], r->metric_value[k]);
    mdl_strbuf_printf(&b, "\n");
  }
  for (int i = 0; i < r->n_gates; i++) {
    const mdl_ci_gate *g = &r->gates[i];
    mdl_strbuf_printf(&b, "%s %s: %s\n",
                      g->skipped  ? "SKIP"
                      : g->passed ? "PASS"
                                  : "FAIL",
                      g->name, g->msg);
  }
  mdl_strbuf_printf(&b, "%s\n", r->bless_note);
  return mdl_strbuf_take(&b);
}

static void history(const char *reg, const char *event, const mdl_ci_result *r, FILE *log) {
  char when[32];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  mdl_json j = {0};
  mdl_json_begin(&j);
  mdl_json_str(&j, "event", event);
  mdl_json_str(&j, "time", when);
  mdl_json_str(&j, "fingerprint", r->fp.hex);
  mdl_json_str(&j, "job", r->job_path);
  mdl_json_str(&j, "verdict", r->verdict);
  mdl_json_int(&j, "exit_code", r->exit_code);
  for (int k = 0; k < r->n_metrics; k++) mdl_json_num(&j, r->metric_name[k], r->metric_value[k]);
  mdl_json_bool(&j, "blessed", r->blessed_now);
  mdl_json_str(&j, "note", r->bless_note);
  if (r->has_blessed) mdl_json_str(&j, "previous_blessed", r->blessed);
  mdl_error e;
  if (mdl_registry_append_history(reg, mdl_json_end(&j), &e) != MDL_OK)
    fprintf(log, "registry: %s\n", e.msg);
  mdl_json_free(&j);
}

static mdl_status store_run(const char *reg, const mdl_ci_result *r, mdl_error *err) {
  char *fp = mdl_fingerprint_format(&r->fp);
  char *prof = format_profiles(r);
  char *sum = summary_text(r);
  char *json = mdl_ci_run_json(r);
  char *md = mdl_ci_report_md(r, NULL);
  const char *fph = r->fp.hex;
  mdl_status st = MDL_OK;
  if (st == MDL_OK && r->model[0])
    st = mdl_registry_copy_in(reg, fph, "model.caffemodel", r->model, err);
  if (st == MDL_OK) st = mdl_registry_put(reg, fph, "fingerprint.txt", fp, strlen(fp), err);
  if (st == MDL_OK) st = mdl_registry_put(reg, fph, "profile.txt", prof, strlen(prof), err);
  if (st == MDL_OK) st = mdl_registry_put(reg, fph, "run.json", json, strlen(json), err);
  if (st == MDL_OK) st = mdl_registry_put(reg, fph, "report.md", md, strlen(md), err);
  /* last: its presence is what --if-changed looks for */
  if (st == MDL_OK) st = mdl_registry_put(reg, fph, "summary.txt", sum, strlen(sum), err);
  free(fp);
  free(prof);
  free(sum);
  free(json);
  free(md);
  return st;
}

/* --if-changed found runs/<fp>/summary.txt: print it, bless it when asked
 * and it passed, and return its status. */
static mdl_status up_to_date(const char *reg, const char *fp, const char *summary,
                             const mdl_ci_opts *o, bool has_blessed, const char *blessed, FILE *out,
                             mdl_error *err) {
  int code = 1;
  sscanf(summary, "exit %d", &code);
  fprintf(out, "up to date: fingerprint %s already ran (exit %d); results in %s/runs/%s\n", fp,
          code, reg, fp);
  const char *rest = strchr(summary, '\n');
  fputs(rest ? rest + 1 : "", out);
  char verdict[64] = "";
  const char *v = strstr(summary, "\nverdict ");
  if (v) sscanf(v + 9, "%63[^\n]", verdict);
  bool now_blessed = o->bless && code == 0;
  if (o->bless && code == 0 && !(has_blessed && !strcmp(blessed, fp))) {
    mdl_status st = mdl_registry_bless(reg, fp, err);
    if (st != MDL_OK) return st;
    fprintf(out, "blessed the stored run %s\n", fp);
    mdl_ci_result r = {.verdict = "passed", .exit_code = 0, .blessed_now = true};
    memcpy(r.fp.hex, fp, 65);
    r.job_path = "";
    snprintf(r.bless_note, sizeof r.bless_note, "blessed the stored run (every gate passed)");
    r.has_blessed = has_blessed;
    if (has_blessed) memcpy(r.blessed, blessed, 65);
    history(reg, "bless", &r, stderr);
  }
  /* under GitHub Actions: the stored report and the outputs, as a run would */
  char *md = NULL, *model = mdl_registry_run_path(reg, fp, "model.caffemodel");
  mdl_error e;
  if (mdl_registry_get(reg, fp, "report.md", &md, &e) != MDL_OK) md = NULL;
  mdl_strbuf b = {0};
  mdl_strbuf_printf(&b,
                    "> **memdl:** up to date: fingerprint `%.12s` already ran; its results:\n\n%s",
                    fp, md ? md : "");
  mdl_status st =
      mdl_ci_github_files(b.s, verdict, code, fp, model,
                          now_blessed || (has_blessed && !strcmp(blessed, fp)), out, err);
  free(mdl_strbuf_take(&b));
  free(md);
  free(model);
  if (st != MDL_OK) return st;
  return status_of_exit(code);
}

/* ---- per-class accuracy ---- */

typedef struct per_class {
  int pred, label; /* blobs: the Accuracy layer's bottoms */
  int classes;
  int64_t *hit, *seen;
  float *buf;
  int64_t buf_n;
} per_class;

static void per_class_batch(void *ctx, const mdl_net *net) {
  per_class *pc = ctx;
  const mdl_tensor *pred = mdl_net_blob(net, pc->pred), *label = mdl_net_blob(net, pc->label);
  int64_t n = label->count, c = pc->classes;
  if (n <= 0 || pred->count != n * c) return;
  if (pc->buf_n < n * (c + 1)) {
    pc->buf = mdl_xrealloc(pc->buf, (size_t)(n * (c + 1)) * sizeof(float));
    pc->buf_n = n * (c + 1);
  }
  const mdl_backend *be = mdl_net_backend(net);
  mdl_backend_to_host(be, pc->buf, pred->data, n * c);
  mdl_backend_to_host(be, pc->buf + n * c, label->data, n);
  for (int64_t i = 0; i < n; i++) {
    int l = (int)pc->buf[n * c + i];
    if (l < 0 || l >= c) continue; /* ignore_label and the like */
    const float *p = pc->buf + i * c;
    int best = 0;
    for (int k = 1; k < c; k++)
      if (p[k] > p[best]) best = k;
    pc->seen[l]++;
    pc->hit[l] += best == l;
  }
}

/* One more TEST pass of test net 0 over the trained weights, counting hits
 * per class at its first Accuracy layer (top-1). Nothing when it has none. */
static mdl_status class_accuracy(mdl_train *t, mdl_ci_result *r, mdl_error *err) {
  mdl_net *net = mdl_train_test_net(t, 0);
  per_class pc = {.pred = -1};
  for (int i = 0; net && i < mdl_net_n_layers(net) && pc.pred < 0; i++) {
    mdl_layer *l = mdl_net_layer(net, i);
    if (!l || strcmp(mdl_net_layer_type(net, i), "Accuracy") || l->lp->n_bottom < 2) continue;
    int p = mdl_net_blob_index(net, l->lp->bottom[0]);
    int lb = mdl_net_blob_index(net, l->lp->bottom[1]);
    if (p < 0 || lb < 0 || mdl_net_blob(net, lb)->count <= 0) continue;
    int64_t c = mdl_net_blob(net, p)->count / mdl_net_blob(net, lb)->count;
    if (c < 2 || c > 100000) continue;
    pc.pred = p;
    pc.label = lb;
    pc.classes = (int)c;
  }
  if (pc.pred < 0) return MDL_OK;
  pc.hit = mdl_xcalloc((size_t)pc.classes, sizeof(int64_t));
  pc.seen = mdl_xcalloc((size_t)pc.classes, sizeof(int64_t));
  mdl_status st = mdl_train_test_each(t, 0, 0, per_class_batch, &pc, NULL, err);
  if (st == MDL_OK) {
    r->n_classes = pc.classes;
    r->class_accuracy = mdl_xcalloc((size_t)pc.classes, sizeof(double));
    r->class_samples = pc.seen;
    for (int k = 0; k < pc.classes; k++)
      r->class_accuracy[k] = pc.seen[k] ? (double)pc.hit[k] / (double)pc.seen[k] : NAN;
  } else {
    free(pc.seen);
  }
  free(pc.hit);
  free(pc.buf);
  return st;
}

static void free_result(mdl_ci_result *r) {
  free(r->class_accuracy);
  free(r->class_samples);
  mdl_fingerprint_free(&r->fp);
  free(r->changes);
  free_profiles(r->profiles, r->n_profiles);
  for (int k = 0; k < r->n_metrics; k++) free(r->metric_name[k]);
  free(r->metric_name);
  free(r->metric_value);
  free(r->baseline_value);
  free(r->gates);
}

/* ---- the run ---- */

static void take_metrics(mdl_ci_result *r, const mdl_train_summary *sum) {
  r->n_metrics = sum->n_outputs;
  r->metric_name = mdl_xcalloc((size_t)r->n_metrics + 1, sizeof(char *));
  r->metric_value = mdl_xcalloc((size_t)r->n_metrics + 1, sizeof(double));
  r->baseline_value = mdl_xcalloc((size_t)r->n_metrics + 1, sizeof(double));
  for (int k = 0; k < r->n_metrics; k++) {
    r->metric_name[k] = mdl_xstrdup(sum->output_name[k]);
    r->metric_value[k] = sum->output_value[k];
    r->baseline_value[k] = NAN;
  }
}

/* The blessed model on this run's TEST data, through memdl test's pass. */
static mdl_status evaluate_baseline(mdl_train *t, const char *reg, mdl_ci_result *r, FILE *log,
                                    mdl_error *err) {
  char *model = mdl_registry_run_path(reg, r->blessed, "model.caffemodel");
  fprintf(log, "baseline: the blessed model %.12s on this run's TEST data\n", r->blessed);
  mdl_status st = mdl_train_load_weights(t, model, err);
  free(model);
  mdl_test_result res;
  if (st == MDL_OK) st = mdl_train_test(t, 0, 0, &res, err);
  if (st != MDL_OK) {
    mdl_error_prefix(err, "evaluating the blessed model: ");
    return st;
  }
  for (int k = 0; k < r->n_metrics; k++)
    for (int i = 0; i < res.n; i++)
      if (!strcmp(res.name[i], r->metric_name[k])) r->baseline_value[k] = res.value[i];
  return MDL_OK;
}

/* ---- training ---- */

/* The driver takes one stop flag: a watcher raises it when a signal asked
 * for a stop or the budget ran out, and remembers which. */
typedef struct stop_watch {
  volatile sig_atomic_t stop;
  volatile sig_atomic_t *signal_stop;
  double deadline; /* mdl_now() seconds; 0: no budget */
  volatile int done;
  bool budget; /* the budget raised it */
} stop_watch;

static void *watch_loop(void *arg) {
  stop_watch *w = arg;
  while (!w->done && !w->stop) {
    if (w->signal_stop && *w->signal_stop) {
      w->stop = 1;
    } else if (w->deadline > 0 && mdl_now() >= w->deadline) {
      w->budget = true;
      w->stop = 1;
    }
    usleep(20000);
  }
  return NULL;
}

/* Trains on the driver's workers, then puts the final weights into t, so
 * the model file, the final TEST pass (here, on this run's TEST data, as
 * for the baseline), per-class accuracy and the gates are a single-worker
 * run's. Fills sum as mdl_train_run would; *served: this process was a
 * Slurm/MPI rank other than 0, which reports nothing. */
static mdl_status train_distributed(const mdl_ci_opts *o, const mdl_job *job, mdl_train *t,
                                    const char *weights, double max_seconds, mdl_train_summary *sum,
                                    mdl_test_result *final, bool *served, mdl_error *err) {
  mdl_driver_opts d = *o->dist;
  d.weights = weights;
  d.out_dir = o->out_dir;
  d.resume = o->resume;
  d.resume_file = o->resume_path;
  stop_watch w = {.signal_stop = o->stop,
                  .deadline = max_seconds > 0 ? mdl_now() + max_seconds : 0};
  d.stop = &w.stop;
  d.snapshot = o->snapshot;
  pthread_t th;
  bool watching = pthread_create(&th, NULL, watch_loop, &w) == 0;
  mdl_driver_result res = {0};
  mdl_status st = mdl_driver_run(job, &d, &res, err);
  w.done = 1;
  if (watching) pthread_join(th, NULL);
  *served = res.served;
  memset(sum, 0, sizeof *sum);
  if (st == MDL_ERR_ACCEPT) st = MDL_OK; /* the gates judge */
  if (st == MDL_OK && !res.served) {
    sum->iter = res.iter;
    sum->seconds = res.seconds;
    sum->stopped = res.stopped && !w.budget;
    sum->budget_stopped = res.stopped && w.budget;
    if (!res.weights_file[0])
      st = mdl_errorf(err, MDL_ERR_INTERNAL, "the driver wrote no model file");
    else
      st = mdl_train_load_weights(t, res.weights_file, err);
  }
  if (st == MDL_OK && !res.served && !sum->stopped && mdl_train_n_test_nets(t) > 0) {
    st = mdl_train_test(t, 0, 0, final, err); /* names owned by t until its next test */
    sum->n_outputs = final->n;
    sum->output_name = final->name;
    sum->output_value = final->value;
    sum->budget_tested = sum->budget_stopped;
  }
  mdl_driver_result_free(&res);
  return st;
}

/* --resume in CI mode: a stopped run (budget or signal) continues from
 * its snapshot; the fingerprint is the run's, since the bits are. */
static mdl_status resume(mdl_train *t, const mdl_ci_opts *o, FILE *log, mdl_error *err) {
  char *newest = NULL;
  const char *path = o->resume_path;
  mdl_status st = MDL_OK;
  if (!path) {
    st = mdl_train_newest_snapshot(t, &newest, err);
    path = newest;
  }
  if (st == MDL_OK) {
    fprintf(log, "resuming from %s\n", path);
    st = mdl_train_restore(t, path, err);
  }
  free(newest);
  return st;
}

static void verdict(mdl_ci_result *r) {
  bool data_ok = true, gates_ok = true;
  for (int i = 0; i < r->n_gates; i++) {
    if (r->gates[i].passed) continue;
    if (r->gates[i].kind == MDL_CI_GATE_DATA)
      data_ok = false;
    else
      gates_ok = false;
  }
  if (!data_ok) {
    r->exit_code = 4;
    r->verdict = "data check failed";
  } else if (r->stop_signal) {
    r->exit_code = 128 + r->stop_signal;
    r->verdict = "interrupted";
  } else if (r->budget_stopped) {
    r->exit_code = 5;
    r->verdict = "budget exceeded";
  } else if (!gates_ok) {
    r->exit_code = 3;
    r->verdict = "failed";
  } else {
    r->exit_code = 0;
    r->verdict = "passed";
  }
}

static mdl_status bless(const char *reg, const mdl_ci_opts *o, mdl_ci_result *r, FILE *log,
                        mdl_error *err) {
  if (!o->bless) {
    snprintf(r->bless_note, sizeof r->bless_note, "not blessed: --bless not given");
    return MDL_OK;
  }
  if (r->exit_code == 0) {
    snprintf(r->bless_note, sizeof r->bless_note, "blessed: every gate passed");
  } else if (r->exit_code == 3 && o->force_reason) {
    snprintf(r->bless_note, sizeof r->bless_note, "blessed with --force despite failed gates: %s",
             o->force_reason);
  } else {
    snprintf(r->bless_note, sizeof r->bless_note, "not blessed: %s%s", r->verdict,
             r->exit_code == 3 ? " (--force REASON overrides failed gates)" : "");
    return MDL_OK;
  }
  r->blessed_now = true;
  mdl_status st = store_run(reg, r, err);
  if (st == MDL_OK) st = mdl_registry_bless(reg, r->fp.hex, err);
  if (st != MDL_OK) {
    r->blessed_now = false;
    return st;
  }
  fprintf(log, "%s; BLESSED is now %s\n", r->bless_note, r->fp.hex);
  history(reg, "bless", r, log);
  return MDL_OK;
}

/* The data profiles and the data checks against the blessed run's
 * profiles; false when a check failed (each printed). */
static bool check_data(const mdl_job *job, mdl_train *t, const char *reg, mdl_ci_result *r,
                       FILE *log) {
  take_profiles(t, r);
  int n_base = 0;
  mdl_ci_profile *base = NULL;
  char *text = NULL;
  mdl_error e;
  if (r->has_blessed && mdl_registry_get(reg, r->blessed, "profile.txt", &text, &e) == MDL_OK)
    base = parse_profiles(text, &n_base);
  free(text);
  data_checks(job, r, base, n_base);
  free_profiles(base, n_base);
  bool ok = true;
  for (int i = 0; i < r->n_gates; i++)
    if (!r->gates[i].passed) {
      fprintf(log, "data check failed: %s: %s\n", r->gates[i].name, r->gates[i].msg);
      ok = false;
    }
  return ok;
}

/* The gates a stopped run fails: the budget, or the signal. */
static void stop_gates(mdl_ci_result *r) {
  if (r->budget_stopped) {
    mdl_ci_gate *g = new_gate(r, MDL_CI_GATE_BUDGET);
    snprintf(g->name, sizeof g->name, "max_seconds %g", r->max_seconds);
    g->passed = false;
    g->value = r->seconds;
    g->bound = r->max_seconds;
    snprintf(g->msg, sizeof g->msg,
             "stopped at iteration %d of %d after %.1f s; model saved, not blessed%s", r->iter,
             r->max_iter, r->seconds, r->tested ? "" : "; no time left for the final TEST");
  }
  if (r->stop_signal) {
    mdl_ci_gate *g = new_gate(r, MDL_CI_GATE_SIGNAL);
    snprintf(g->name, sizeof g->name, "not interrupted");
    g->passed = false;
    g->value = r->iter;
    g->bound = r->max_iter;
    snprintf(g->msg, sizeof g->msg,
             "stopped by %s at iteration %d of %d after a snapshot; model saved, not "
             "blessed; `--resume` continues it",
             r->stop_signal == SIGINT ? "SIGINT" : "SIGTERM", r->iter, r->max_iter);
  }
}

/* Trains (here or through the driver), saves the model, measures it on
 * this run's TEST data (per class, and the blessed model beside it) and
 * judges every gate. *served: a Slurm/MPI rank other than 0, nothing to
 * report. */
static mdl_status train_and_judge(const mdl_job *job, const mdl_ci_opts *o, mdl_train *t,
                                  const char *reg, const char *weights, mdl_ci_result *r,
                                  bool *served, FILE *log, mdl_error *err) {
  mdl_train_summary sum;
  mdl_test_result final;
  mdl_status st = MDL_OK;
  if (o->dist) {
    st = train_distributed(o, job, t, weights, r->max_seconds, &sum, &final, served, err);
  } else {
    if (weights) st = mdl_train_load_weights(t, weights, err);
    if (st == MDL_OK && o->resume) st = resume(t, o, log, err);
    if (st == MDL_OK) st = mdl_train_run(t, 0, &sum, err);
  }
  if (*served || (st != MDL_OK && st != MDL_ERR_ACCEPT)) return st;
  r->trained = true;
  r->iter = sum.iter;
  r->seconds = sum.seconds;
  r->budget_stopped = sum.budget_stopped;
  /* a signal stop skips the final TEST: CI sends SIGKILL soon after */
  if (sum.stopped) r->stop_signal = o->stop_signal && *o->stop_signal ? *o->stop_signal : SIGTERM;
  r->tested =
      mdl_train_n_test_nets(t) > 0 && !sum.stopped && (!sum.budget_stopped || sum.budget_tested);
  take_metrics(r, &sum);
  char *model = mdl_path_join(mdl_train_out_dir(t), "model.caffemodel");
  snprintf(r->model, sizeof r->model, "%s", model);
  free(model);
  st = mdl_caffemodel_save(mdl_train_train_net(t), r->model, err);
  if (st == MDL_OK) st = mdl_sha256_file(r->model, r->model_sha, err);
  if (st == MDL_OK && r->tested) st = class_accuracy(t, r, err);
  if (st == MDL_OK && r->has_blessed && r->tested && wants_baseline(job))
    st = evaluate_baseline(t, reg, r, log, err);
  if (st == MDL_OK) {
    metric_gates(job, r);
    stop_gates(r);
  }
  return st;
}

/* The verdict, the blessing, the registry and every report. */
static mdl_status finish(const mdl_job *job, const mdl_ci_opts *o, const char *reg,
                         const char *out_dir, mdl_ci_result *r, FILE *out, FILE *log,
                         mdl_error *err) {
  verdict(r);
  mdl_status st = bless(reg, o, r, log, err);
  /* a budget or signal stop is not a result to skip to next time */
  if (st == MDL_OK && !r->blessed_now && r->exit_code != 5 && !r->stop_signal)
    st = store_run(reg, r, err);
  if (st == MDL_OK && !r->blessed_now) history(reg, "run", r, log);
  if (st == MDL_OK) st = mdl_registry_mkdirs(out_dir, err); /* not made when nothing trained */
  bool png = o->curves_png || (job->job->ci && job->job->ci->curves_png);
  if (st == MDL_OK) st = mdl_ci_write_reports(r, job, png, out_dir, err);
  if (st == MDL_OK) {
    char *md = NULL;
    char *mpath = mdl_path_join(out_dir, "report.md");
    size_t len;
    mdl_error e;
    if (mdl_file_read(mpath, &md, &len, &e) == MDL_OK) st = mdl_ci_github(r, md, out, err);
    free(md);
    free(mpath);
  }
  if (st != MDL_OK) return st;
  char *sum = summary_text(r);
  fprintf(out, "%s", sum);
  fprintf(out, "reports in %s (run.json, junit.xml, metrics.txt, report.md, curves.svg%s)\n",
          out_dir, png ? ", curves.png" : "");
  free(sum);
  return status_of_exit(r->exit_code);
}

mdl_status mdl_ci_run(const mdl_job *job, const mdl_ci_opts *o, mdl_error *err) {
  FILE *out = o->out ? o->out : stdout;
  FILE *log = o->log ? o->log : stderr;
  mdl_ci_result r = {.job_path = job->path,
                     .job_name = job->job->name ? job->job->name : "",
                     .sets = o->sets,
                     .n_sets = o->n_sets};
  char *reg = mdl_registry_dir(job, o->registry);
  snprintf(r.registry, sizeof r.registry, "%s", reg);
  r.has_blessed = mdl_registry_blessed(reg, r.blessed);
  char *weights = NULL;
  mdl_status st = start_weights(o, reg, r.has_blessed, r.blessed, &weights, log, err);
  if (st == MDL_OK) st = compute_fp(job, o, reg, weights, &r.fp, err);
  char *summary = NULL;
  mdl_error e;
  if (st == MDL_OK && o->if_changed &&
      mdl_registry_get(reg, r.fp.hex, "summary.txt", &summary, &e) == MDL_OK) {
    st = up_to_date(reg, r.fp.hex, summary, o, r.has_blessed, r.blessed, out, err);
    free(summary);
    free(weights);
    free(reg);
    free_result(&r);
    return st;
  }
  mdl_train *t = NULL;
  if (st == MDL_OK) {
    if (r.has_blessed) r.changes = changes_since(reg, r.blessed, &r.fp);
    fprintf(log, "fingerprint %s (%d data files read, %d from the cache)\n", r.fp.hex,
            r.fp.files_hashed, r.fp.files_cached);
    if (r.changes) fprintf(log, "changed since the blessed run %.12s:\n%s", r.blessed, r.changes);
    r.max_seconds = o->max_seconds > 0                          ? o->max_seconds
                    : job->job->ci && job->job->ci->max_seconds ? job->job->ci->max_seconds
                                                                : 0;
    r.max_iter = job->solver->max_iter;
    mdl_train_opts to = {.threads = o->threads,
                         .device = o->device,
                         .out_dir = o->out_dir,
                         .max_seconds = r.max_seconds,
                         .stop = o->stop,
                         .snapshot = o->snapshot};
    st = mdl_train_new(job, &to, &t, err);
  }
  bool served = false;
  if (st == MDL_OK && check_data(job, t, reg, &r, log))
    st = train_and_judge(job, o, t, reg, weights, &r, &served, log, err);
  if (st == MDL_ERR_ACCEPT) st = MDL_OK; /* the gates judge */
  if (st == MDL_OK && !served) st = finish(job, o, reg, mdl_train_out_dir(t), &r, out, log, err);
  mdl_train_free(t);
  free(weights);
  free(reg);
  free_result(&r);
  return st;
}
