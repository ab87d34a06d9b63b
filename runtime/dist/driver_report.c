/* What a distributed run reports (see driver_impl.h): metrics.jsonl with
 * the single-worker run's records (runtime/train/report.h) plus a "round"
 * record per average, and the single-worker progress lines at display
 * points. Not the rounds' own detail line (driver.c's print_round). */
#include <stdio.h>

#include "common/clock.h"
#include "runtime/dist/driver_impl.h"
#include "runtime/train/report.h"

static uint64_t plan_fingerprint(const driver *d) {
  /* FNV-1a of the packed plan, as train.c's: the same job, the same value */
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < d->plan_len; i++) h = (h ^ d->plan_bytes[i]) * 0x100000001b3ull;
  return h;
}

mdl_status mdl_driver_report_open(driver *d, mdl_error *err) {
  mdl_error serr;
  d->have_scfg = mdl_solver_config_get(d->plan->solver, &d->scfg, &serr) == MDL_OK;
  d->start_iter = d->iter;
  d->snap_iter = -1;
  int iter_size = d->plan->solver->iter_size > 0 ? d->plan->solver->iter_size : 1;
  /* an iteration is one step on every worker: K batches of images */
  mdl_progress_init(&d->prog, d->log, d->iter, d->max_iter,
                    (double)d->train_batch * (double)d->k * (double)iter_size);
  if (!d->o.job_path) return MDL_OK;
  char dir[1100];
  snprintf(dir, sizeof dir, "%s", d->prefix);
  const char *slash = strrchr(d->prefix, '/');
  if (d->o.out_dir)
    snprintf(dir, sizeof dir, "%s", d->o.out_dir);
  else if (slash)
    dir[slash - d->prefix] = 0;
  else
    snprintf(dir, sizeof dir, ".");
  bool existed = false;
  mdl_status st = mdl_metrics_open(dir, &existed, &d->metrics, err);
  if (st != MDL_OK) return st;
  if (existed && !d->res->resumed)
    dlog(d, "metrics: appending to %s (it holds an earlier run's records)",
         mdl_metrics_path(d->metrics));
  mdl_report_start rs = {.version = d->o.version,
                         .job = d->o.job_path,
                         .plan_fingerprint = plan_fingerprint(d),
                         .seed = d->seed,
                         .threads = d->o.threads,
                         .workers = d->k,
                         .iter = d->iter,
                         .max_iter = d->max_iter,
                         .resumed = d->res->resumed,
                         .overrides = d->o.overrides,
                         .n_overrides = d->o.n_overrides};
  mdl_report_start_record(d->metrics, &rs);
  /* the shares calibration chose (set before the file was open) */
  bool by_speed = false;
  for (int i = 0; i < d->k; i++) by_speed = by_speed || d->s[i].batch > 0;
  if (by_speed && !d->res->resumed)
    mdl_driver_report_rebalance(d, "calibration before the first round", 0, 0);
  return MDL_OK;
}

static void round_record(driver *d, int tau, slot *const *done, int n, double wall) {
  if (!d->metrics) return;
  size_t cap = 64 + (size_t)n * 160, used = 0;
  char *w = mdl_xmalloc(cap);
  used += (size_t)snprintf(w, cap, "[");
  for (int i = 0; i < n && used < cap; i++) {
    const slot *s = done[i];
    double comm = s->rtt_s > s->compute_s ? s->rtt_s - s->compute_s : 0;
    used += (size_t)snprintf(w + used, cap - used,
                             "%s{\"rank\": %d, \"samples\": %llu, \"compute_s\": %.6g, "
                             "\"comm_s\": %.6g, \"wait_s\": %.6g}",
                             i ? ", " : "", s->index, (unsigned long long)s->samples, s->compute_s,
                             comm, wall - s->rtt_s);
  }
  if (used < cap) snprintf(w + used, cap - used, "]");
  mdl_json j = {0};
  mdl_json_begin(&j);
  mdl_json_str(&j, "event", "round");
  mdl_json_int(&j, "round", d->round);
  mdl_json_int(&j, "iter", d->iter);
  mdl_json_int(&j, "tau", tau);
  mdl_json_raw(&j, "workers", w);
  mdl_json_end(&j);
  mdl_metrics_write(d->metrics, &j);
  mdl_json_free(&j);
  free(w);
}

void mdl_driver_report_round(driver *d, int tau, slot *const *done, int n, double wall,
                             double loss) {
  round_record(d, tau, done, n, wall);
  if (d->o.quiet) return;
  /* Caffe prints every `display` iterations; a round that crosses one
   * (or ends the run) shows its end, with the round's mean loss and the
   * rate of the last iteration's schedule */
  int disp = d->plan->solver->display;
  if (disp <= 0 || (d->iter / disp == (d->iter - tau) / disp && d->iter < d->max_iter)) return;
  float lr = d->have_scfg ? mdl_solver_rate_at(&d->scfg, d->iter - 1) : 0;
  mdl_report_train(&d->prog, d->metrics, d->iter, d->start_iter, loss, lr);
  mdl_progress_mark(&d->prog, d->iter);
}

void mdl_driver_report_test(driver *d, int net, const mdl_trainer_output *out, int n,
                            uint64_t samples, double seconds) {
  if (!d->metrics) return;
  const char **names = mdl_xcalloc((size_t)n + 1, sizeof *names);
  double *values = mdl_xcalloc((size_t)n + 1, sizeof *values);
  int m = 0;
  for (int k = 0; k < n; k++)
    if (out[k].n == 1) { /* scalar outputs, as single-worker records */
      names[m] = out[k].name;
      values[m++] = out[k].sum[0];
    }
  mdl_report_test_record(d->metrics, d->iter, net, names, values, m, (int64_t)samples, seconds);
  free(names);
  free(values);
}

void mdl_driver_report_rebalance(driver *d, const char *reason, double round_was_s,
                                 double round_s) {
  if (!d->metrics) return;
  size_t cap = 64 + (size_t)d->k * 160, used = 0;
  char *w = mdl_xmalloc(cap);
  used += (size_t)snprintf(w, cap, "[");
  for (int i = 0, n = 0; i < d->k && used < cap; i++) {
    const slot *s = &d->s[i];
    if (!s->alive) continue;
    used += (size_t)snprintf(w + used, cap - used,
                             "%s{\"rank\": %d, \"batch\": %llu, \"train_partitions\": %zu, "
                             "\"train_samples\": %llu}",
                             n++ ? ", " : "", s->index,
                             (unsigned long long)(s->batch ? s->batch : d->train_batch), s->n_train,
                             (unsigned long long)s->train_samples);
  }
  if (used < cap) snprintf(w + used, cap - used, "]");
  mdl_json j = {0};
  mdl_json_begin(&j);
  mdl_json_str(&j, "event", "rebalance");
  mdl_json_int(&j, "round", d->round);
  mdl_json_int(&j, "iter", d->iter);
  mdl_json_str(&j, "reason", reason);
  if (round_was_s > 0) mdl_json_num(&j, "predicted_round_was_s", round_was_s);
  if (round_s > 0) mdl_json_num(&j, "predicted_round_s", round_s);
  mdl_json_raw(&j, "workers", w);
  mdl_json_end(&j);
  mdl_metrics_write(d->metrics, &j);
  mdl_json_free(&j);
  free(w);
}

void mdl_driver_report_snapshot(driver *d, const char *model, const char *state) {
  mdl_report_snapshot(&d->prog, d->metrics, d->iter, model, state);
}

void mdl_driver_report_close(driver *d, mdl_status st) {
  mdl_driver_result *res = d->res;
  double seconds = res->seconds;
  if (res->stopped) {
    char extra[400] = "";
    if (d->o.workers) snprintf(extra, sizeof extra, "--workers %s", d->o.workers);
    mdl_report_stopped(&d->prog, d->metrics, d->iter, d->max_iter, seconds, res->state_file,
                       d->o.job_path ? d->o.job_path : "JOB", d->o.out_dir, extra);
  } else if (d->metrics && (st == MDL_OK || st == MDL_ERR_ACCEPT)) {
    const char **names = mdl_xcalloc((size_t)res->n_test + 1, sizeof *names);
    double *values = mdl_xcalloc((size_t)res->n_test + 1, sizeof *values);
    int m = 0;
    for (int k = 0; k < res->n_test; k++)
      if (res->test[k].n == 1) {
        names[m] = res->test[k].name;
        values[m++] = res->test[k].sum[0];
      }
    double busy = res->compute_s + res->comm_s + res->wait_s;
    int iter_size = d->plan->solver->iter_size > 0 ? d->plan->solver->iter_size : 1;
    double images = (double)(d->iter - d->start_iter) * (double)d->train_batch * d->k * iter_size;
    double train_s = seconds - d->aside_s; /* as single-worker: tests and snapshots apart */
    mdl_report_done rd = {.iter = d->iter,
                          .seconds = seconds,
                          .images_per_s = train_s > 0 ? images / train_s : 0,
                          .names = names,
                          .values = values,
                          .n = m,
                          .accepted = res->accepted,
                          .wait_share = busy > 0 ? res->wait_s / busy : 0};
    mdl_report_done_record(d->metrics, &rd);
    free(names);
    free(values);
  }
  mdl_metrics_close(d->metrics);
  d->metrics = NULL;
}
