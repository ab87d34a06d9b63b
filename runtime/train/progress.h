/* Training progress on a stream (stderr): a live status line redrawn in
 * place on a terminal, permanent lines for display points and test passes,
 * and rates (images/s, ETA). Owns presentation and timing; not what the
 * numbers are. */
#ifndef MDL_RUNTIME_PROGRESS_H
#define MDL_RUNTIME_PROGRESS_H

#include <stdbool.h>
#include <stdio.h>

typedef struct mdl_progress {
  FILE *f;
  bool tty;        /* live line allowed */
  bool live_shown; /* a live line is on screen now */
  double t_start;  /* seconds, monotonic */
  double t_last_live;
  double t_mark;   /* start of the current rate window */
  int iter_mark;   /* iteration at t_mark */
  double excluded; /* seconds spent testing/snapshotting inside the window */
  int max_iter;
  double images_per_iter;
} mdl_progress;

/* Starts at iteration start_iter; live lines when f is a terminal and the
 * TERM is not "dumb". */
void mdl_progress_init(mdl_progress *p, FILE *f, int start_iter, int max_iter,
                       double images_per_iter);

/* Training throughput since the last mark (time excluded by
 * mdl_progress_exclude not counted), and the ETA in seconds for the
 * remaining iterations at that rate. */
void mdl_progress_rate(const mdl_progress *p, int iter, double *images_per_s, double *eta_s);

/* Starts a new rate window at iter. */
void mdl_progress_mark(mdl_progress *p, int iter);

/* Seconds spent on something other than training (tests, snapshots). */
void mdl_progress_exclude(mdl_progress *p, double seconds);

/* Redraws the live line (at most ~10 times a second); no-op off a tty. */
void mdl_progress_live(mdl_progress *p, int iter, float loss, float lr);

/* Prints a permanent line (printf-style), clearing the live line first. */
void mdl_progress_line(mdl_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "1h02m", "3m05s", "12s" */
char *mdl_fmt_duration(double s, char *buf, size_t n);

#endif
