/* The calibration figures: their key, their cache file and the tuner's
 * table made of them. The file is text, one `worker` line per worker under
 * the `key` line, so a reader can see what was measured:
 *   # memdl calibration (reused while the key matches)
 *   key plan=... cluster=local:2 host=... cpu=... threads=1
 *   weights 1724320 batch 64
 *   worker 0 sample_s 0.00085 fixed_s 0.004 comm_s 0.0012 samples 384 iterations 6 \
 *     iter_se_s 0.0007
 * (one line in the file). */
#define _GNU_SOURCE
#include "runtime/dist/calibrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileio.h"

/* The CPU's model name from /proc/cpuinfo, spaces kept (the key is one
 * line), "unknown" elsewhere. */
static void cpu_model(char *buf, size_t len) {
  snprintf(buf, len, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10)) continue;
    const char *v = strchr(line, ':');
    if (!v) break;
    v++;
    while (*v == ' ' || *v == '\t') v++;
    snprintf(buf, len, "%.*s", (int)strcspn(v, "\n"), v);
    break;
  }
  fclose(f);
}

void mdl_calibration_key(uint64_t plan_hash, const char *cluster, int threads, char *buf,
                         size_t len) {
  char host[256] = "?", cpu[256];
  if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
  host[sizeof host - 1] = 0;
  cpu_model(cpu, sizeof cpu);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  /* threads 0 means "the cores shared out": the core count decides it */
  snprintf(buf, len, "plan=%016llx cluster=%s host=%s cpu=%s threads=%d cores=%ld",
           (unsigned long long)plan_hash, cluster && *cluster ? cluster : "?", host, cpu, threads,
           cores);
}

void mdl_calibration_free(mdl_calibration *c) {
  if (!c) return;
  free(c->worker);
  memset(c, 0, sizeof *c);
}

static mdl_status damaged(const char *path, int line, const char *what, mdl_error *err) {
  return mdl_errorf(err, MDL_ERR_INVALID, "%s:%d: %s (delete the file to calibrate again)", path,
                    line, what);
}

/* Parses text (the file's bytes) into out; *found false when its key is
 * another. */
static mdl_status parse(const char *path, char *text, const char *key, int n_workers,
                        mdl_calibration *out, bool *found, mdl_error *err) {
  int line_no = 0, seen = 0;
  bool keyed = false;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    line_no++;
    if (line[0] == '#' || line[0] == 0) continue;
    if (!strncmp(line, "key ", 4)) {
      if (strcmp(line + 4, key)) return MDL_OK; /* stale: measured for something else */
      keyed = true;
      snprintf(out->key, sizeof out->key, "%s", key);
      continue;
    }
    if (!keyed) return damaged(path, line_no, "no `key` line first", err);
    long long batch;
    if (sscanf(line, "weights %lf batch %lld", &out->weight_bytes, &batch) == 2) {
      out->worker_batch = batch;
      continue;
    }
    int i, it;
    mdl_calib_worker w;
    unsigned long long samples;
    /* iter_se_s came later: a file without it holds figures believed exact */
    w.iter_se_s = 0;
    int got = sscanf(line,
                     "worker %d sample_s %lf fixed_s %lf comm_s %lf samples %llu iterations %d "
                     "iter_se_s %lf",
                     &i, &w.sample_s, &w.fixed_s, &w.comm_s, &samples, &it, &w.iter_se_s);
    if (got != 6 && got != 7)
      return damaged(path, line_no, "not a `weights` or `worker` line", err);
    if (i != seen || i >= n_workers || !(w.sample_s > 0) || !(w.fixed_s >= 0) || !(w.comm_s >= 0) ||
        !(w.iter_se_s >= 0))
      return damaged(path, line_no, "worker out of order, or a time not positive", err);
    w.samples = samples;
    w.iterations = it;
    out->worker[seen++] = w;
  }
  if (!keyed) return MDL_OK;
  if (seen != n_workers) return MDL_OK; /* another worker count: measure again */
  out->n_workers = n_workers;
  *found = true;
  return MDL_OK;
}

mdl_status mdl_calibration_load(const char *path, const char *key, int n_workers,
                                mdl_calibration *out, bool *found, mdl_error *err) {
  memset(out, 0, sizeof *out);
  *found = false;
  if (n_workers < 1 || access(path, F_OK) != 0) return MDL_OK;
  char *text = NULL;
  size_t len = 0;
  mdl_status st = mdl_file_read(path, &text, &len, err);
  if (st != MDL_OK) return st;
  out->worker = mdl_xcalloc((size_t)n_workers, sizeof *out->worker);
  st = parse(path, text, key, n_workers, out, found, err);
  free(text);
  if (st != MDL_OK || !*found) mdl_calibration_free(out);
  return st;
}

mdl_status mdl_calibration_save(const char *path, const mdl_calibration *c, mdl_error *err) {
  size_t cap = 1024 + strlen(c->key) + (size_t)c->n_workers * 160, n = 0;
  char *buf = mdl_xmalloc(cap);
  n += (size_t)snprintf(buf + n, cap - n,
                        "# memdl calibration (reused while the key matches)\nkey %s\n"
                        "weights %.0f batch %lld\n",
                        c->key, c->weight_bytes, (long long)c->worker_batch);
  for (int i = 0; i < c->n_workers && n < cap; i++)
    n += (size_t)snprintf(buf + n, cap - n,
                          "worker %d sample_s %.9g fixed_s %.9g comm_s %.9g samples %llu "
                          "iterations %d iter_se_s %.9g\n",
                          i, c->worker[i].sample_s, c->worker[i].fixed_s, c->worker[i].comm_s,
                          (unsigned long long)c->worker[i].samples, c->worker[i].iterations,
                          c->worker[i].iter_se_s);
  mdl_status st = mdl_file_write_atomic(path, buf, n < cap ? n : cap - 1, err);
  free(buf);
  return st;
}

mdl_tune_table mdl_calibration_table(const mdl_calibration *c, double max_comm_fraction,
                                     int fixed_tau, mdl_tune_worker *rows) {
  for (int i = 0; i < c->n_workers; i++)
    rows[i] = (mdl_tune_worker){.sample_s = c->worker[i].sample_s,
                                .fixed_s = c->worker[i].fixed_s,
                                .latency_s = c->worker[i].comm_s,
                                .bandwidth_bps = 0,
                                .iter_se_s = c->worker[i].iter_se_s};
  return (mdl_tune_table){.n_workers = c->n_workers,
                          .worker = rows,
                          .global_batch = c->worker_batch * c->n_workers,
                          .weight_bytes = c->weight_bytes,
                          .max_comm_fraction = max_comm_fraction,
                          .fixed_tau = fixed_tau};
}

void mdl_calibration_line(const mdl_calibration *c, int i, char *buf, size_t len) {
  const mdl_calib_worker *w = &c->worker[i];
  snprintf(buf, len,
           "calibration: worker %d: %.2f ms per iteration + %.4f ms per sample (%d iterations, "
           "%llu samples; an iteration scatters by %.2f ms), %.2f ms per round beyond compute",
           i, w->fixed_s * 1e3, w->sample_s * 1e3, w->iterations, (unsigned long long)w->samples,
           w->iter_se_s * 1e3, w->comm_s * 1e3);
}
