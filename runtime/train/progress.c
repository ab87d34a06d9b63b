/* Progress lines; see progress.h. */
#include "runtime/train/progress.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"

void mdl_progress_init(mdl_progress *p, FILE *f, int start_iter, int max_iter,
                       double images_per_iter) {
  memset(p, 0, sizeof *p);
  p->f = f;
  const char *term = getenv("TERM");
  p->tty = isatty(fileno(f)) && !(term && strcmp(term, "dumb") == 0);
  p->t_start = p->t_mark = mdl_now();
  p->iter_mark = start_iter;
  p->max_iter = max_iter;
  p->images_per_iter = images_per_iter;
}

void mdl_progress_rate(const mdl_progress *p, int iter, double *ips, double *eta) {
  double dt = mdl_now() - p->t_mark - p->excluded;
  int di = iter - p->iter_mark;
  double it_s = dt > 0 && di > 0 ? di / dt : 0;
  if (ips) *ips = it_s * p->images_per_iter;
  if (eta) *eta = it_s > 0 ? (p->max_iter - iter) / it_s : 0;
}

void mdl_progress_mark(mdl_progress *p, int iter) {
  p->t_mark = mdl_now();
  p->iter_mark = iter;
  p->excluded = 0;
}

void mdl_progress_exclude(mdl_progress *p, double s) {
  p->excluded += s;
}

char *mdl_fmt_duration(double s, char *buf, size_t n) {
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else if (t >= 60)
    snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
  else
    snprintf(buf, n, "%lds", t);
  return buf;
}

static void clear_live(mdl_progress *p) {
  if (p->live_shown) {
    fputs("\r\033[K", p->f);
    p->live_shown = false;
  }
}

void mdl_progress_live(mdl_progress *p, int iter, float loss, float lr) {
  if (!p->tty) return;
  double now = mdl_now();
  if (now - p->t_last_live < 0.1) return;
  p->t_last_live = now;
  double ips, eta;
  mdl_progress_rate(p, iter, &ips, &eta);
  char e[32];
  fprintf(p->f, "\r\033[Kiter %d/%d  loss %.4f  lr %.6g  %.0f img/s  ETA %s", iter, p->max_iter,
          loss, lr, ips, mdl_fmt_duration(eta, e, sizeof e));
  fflush(p->f);
  p->live_shown = true;
}

void mdl_progress_line(mdl_progress *p, const char *fmt, ...) {
  clear_live(p);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(p->f, fmt, ap);
  va_end(ap);
  fputc('\n', p->f);
  fflush(p->f);
}
