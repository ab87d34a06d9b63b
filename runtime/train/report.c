/* The shared progress lines and metrics records; see report.h. */
#include "runtime/train/report.h"

#include <stdio.h>

void mdl_report_start_record(mdl_metrics *m, const mdl_report_start *s) {
  mdl_json j = {0};
  mdl_json_begin(&j);
  mdl_json_str(&j, "event", "start");
  mdl_json_str(&j, "version", s->version ? s->version : "");
  mdl_json_str(&j, "job", s->job ? s->job : "");
  char fp[32];
  snprintf(fp, sizeof fp, "%016llx", (unsigned long long)s->plan_fingerprint);
  mdl_json_str(&j, "plan", fp);
  char seed[32];
  snprintf(seed, sizeof seed, "%llu", (unsigned long long)s->seed); /* as a string: > 2^53 */
  mdl_json_str(&j, "seed", seed);
  mdl_json_int(&j, "threads", s->threads);
  mdl_json_int(&j, "workers", s->workers);
  mdl_json_int(&j, "iter", s->iter);
  mdl_json_int(&j, "max_iter", s->max_iter);
  mdl_json_bool(&j, "resumed", s->resumed);
  char over[2048];
  size_t used = 0;
  over[0] = 0;
  for (int i = 0; i < s->n_overrides && used < sizeof over; i++)
    used +=
        (size_t)snprintf(over + used, sizeof over - used, "%s%s", i ? " " : "", s->overrides[i]);
  mdl_json_str(&j, "overrides", over);
  mdl_json_end(&j);
  mdl_metrics_write(m, &j);
  mdl_json_free(&j);
}

void mdl_report_train(mdl_progress *p, mdl_metrics *m, int iter, int start, double loss, float lr) {
  double ips, eta;
  mdl_progress_rate(p, iter, &ips, &eta);
  char e[32];
  int stop = p->max_iter;
  if (iter > start)
    mdl_progress_line(p, "iter %d/%d  loss %.4f  lr %.6g  %.0f img/s  ETA %s", iter, stop, loss, lr,
                      ips, mdl_fmt_duration(eta, e, sizeof e));
  else
    mdl_progress_line(p, "iter %d/%d  loss %.4f  lr %.6g", iter, stop, loss, lr);
  mdl_json j = {0};
  mdl_json_begin(&j);
  mdl_json_str(&j, "event", "train");
  mdl_json_int(&j, "iter", iter);
  mdl_json_num(&j, "loss", loss);
  mdl_json_num(&j, "lr", lr);
  if (iter > start) mdl_json_num(&j, "images_per_s", ips);
  mdl_json_end(&j);
  mdl_metrics_write(m, &j);
  mdl_json_free(&j);
}

void mdl_report_test_record(mdl_metrics *m, int iter, int net, const char *const *names,
                            const double *values, int n, int64_t samples, double seconds) {
  mdl_json j = {0};
  mdl_json_begin(&j);
  mdl_json_str(&j, "event", "test");
  mdl_json_int(&j, "iter", iter);
  mdl_json_int(&j, "net", net);
  for (int k = 0; k < n; k++) mdl_json_num(&j, names[k], values[k]);
  mdl_json_int(&j, "samples", samples);
  mdl_json_num(&j, "seconds", seconds);
  mdl_json_end(&j);
  mdl_metrics_write(m, &j);
  mdl_json_free(&j);
}

void mdl_report_snapshot(mdl_progress *p, mdl_metrics *m, int iter, const char *model,
                         const char *state) {
  mdl_progress_line(p, "snapshot %s, %s", model, state);
  mdl_json j = {0};
  mdl_json_begin(&j);
  mdl_json_str(&j, "event", "snapshot");
  mdl_json_int(&j, "iter", iter);
  mdl_json_str(&j, "caffemodel", model);
  mdl_json_str(&j, "solverstate", state);
  mdl_json_end(&j);
  mdl_metrics_write(m, &j);
  mdl_json_free(&j);
}

void mdl_report_stopped(mdl_progress *p, mdl_metrics *m, int iter, int max_iter, double seconds,
                        const char *snapshot, const char *job, const char *out_dir,
                        const char *extra) {
  mdl_progress_line(p,
                    "stopped at iteration %d of %d on request, after a snapshot; "
                    "`memdl run %s --resume%s%s%s%s` continues it",
                    iter, max_iter, job, out_dir ? " --output " : "", out_dir ? out_dir : "",
                    extra && extra[0] ? " " : "", extra ? extra : "");
  mdl_json j = {0};
  mdl_json_begin(&j);
  mdl_json_str(&j, "event", "stopped");
  mdl_json_int(&j, "iter", iter);
  mdl_json_num(&j, "seconds", seconds);
  mdl_json_str(&j, "snapshot", snapshot ? snapshot : "");
  mdl_json_end(&j);
  mdl_metrics_write(m, &j);
  mdl_json_free(&j);
}

void mdl_report_done_record(mdl_metrics *m, const mdl_report_done *d) {
  mdl_json j = {0};
  mdl_json_begin(&j);
  mdl_json_str(&j, "event", "done");
  mdl_json_int(&j, "iter", d->iter);
  mdl_json_num(&j, "seconds", d->seconds);
  mdl_json_num(&j, "images_per_s", d->images_per_s);
  for (int k = 0; k < d->n; k++) mdl_json_num(&j, d->names[k], d->values[k]);
  mdl_json_bool(&j, "accepted", d->accepted);
  if (d->wait_share >= 0) mdl_json_num(&j, "wait_share", d->wait_share);
  if (d->stopped) mdl_json_str(&j, "stopped", d->stopped); /* ci budget */
  mdl_json_end(&j);
  mdl_metrics_write(m, &j);
  mdl_json_free(&j);
}
