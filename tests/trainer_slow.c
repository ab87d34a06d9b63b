/* A slow worker for the speed-balancing tests (driver_net_test.c): the
 * "net" trainer, except that worker 1 (on workers, never on the driver)
 * spends SLOW_S_PER_SAMPLE more per sample -- it sleeps and reports the
 * sleep as compute, as a slower device would. A fixed cost per sample (not
 * a multiple of the measured compute) keeps the slowdown itself free of the
 * shared machine's noise. $MDL_TEST_SLOW changes what it does:
 *   "steady"     every worker takes STEADY_S_PER_SAMPLE per sample
 *                (sleeping out what its real compute left, and reporting
 *                exactly that): equal speeds, free of the machine's noise
 *                while its real compute stays under that;
 *   "from:N:MS"  steady, and worker 1 takes MS ms more a sample from
 *                iteration N on (slowed mid-run);
 *   "comm:MS:N"  from iteration N every worker sleeps MS ms a round without
 *                counting it as compute: the driver measures it as
 *                communication, as a slow link would;
 *   "straggle:MS:N"  steady, and from iteration N one worker in turn (the
 *                other every round, of two) computes MS ms more a round:
 *                equal speeds on average, yet every round waits for one;
 *   "lag:PCT:N"  as straggle, but the one in turn computes PCT% more than
 *                its round's steady compute: straggling in proportion to
 *                the round, as workers sharing cores see.
 * Any of them may end in ":setup:MS": every Setup of a worker takes MS ms
 * more (a Setup that must be paid back, whatever the machine's load).
 * Test scaffolding, never linked into memdl. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/driver_test_util.h"

#define SLOW_S_PER_SAMPLE 2e-3
#define STEADY_S_PER_SAMPLE 1e-3

typedef struct slow {
  void *in;    /* the net trainer's context */
  bool steady; /* pads its compute to STEADY_S_PER_SAMPLE */
  bool slow;   /* per_s more a sample from iteration `from` */
  bool comm;   /* comm_s a round, not compute, from iteration `from` */
  bool turn;   /* per_s a round every other round, from iteration `from` */
  bool lag;    /* with turn: lag_frac of the round's compute, not per_s */
  int from, rounds;
  double per_s, comm_s, lag_frac;
} slow;

static void sleep_s(double t) {
  if (t <= 0) return;
  struct timespec ts = {(time_t)t, (long)((t - (double)(time_t)t) * 1e9)};
  nanosleep(&ts, NULL);
}

static const mdl_trainer_i *inner(void) {
  return &mdl_trainer_net;
}

static void *in_of(void *ctx) {
  return ((slow *)ctx)->in;
}

static mdl_status slow_lineages(const Memdl__Plan *plan, const char *base_dir, int num_workers,
                                Caffe__Phase phase, Memdl__PartitionLineage ***out, size_t *n,
                                mdl_error *err) {
  return inner()->lineages(plan, base_dir, num_workers, phase, out, n, err);
}

static mdl_status slow_create(const Memdl__Plan *plan, const mdl_trainer_opts *o, void **ctx,
                              mdl_error *err) {
  slow *s = calloc(1, sizeof *s);
  mdl_status st = inner()->create(plan, o, &s->in, err);
  if (st != MDL_OK) {
    free(s);
    return st;
  }
  const char *how = getenv("MDL_TEST_SLOW");
  double ms = 0;
  bool worker = o->worker_index >= 0;
  s->slow = o->worker_index == 1;
  s->per_s = SLOW_S_PER_SAMPLE;
  if (how && sscanf(how, "from:%d:%lf", &s->from, &ms) == 2) {
    s->steady = worker;
    s->per_s = ms * 1e-3;
  } else if (how && sscanf(how, "comm:%lf:%d", &ms, &s->from) == 2) {
    s->slow = false;
    s->comm = worker;
    s->comm_s = ms * 1e-3;
  } else if (how && sscanf(how, "straggle:%lf:%d", &ms, &s->from) == 2) {
    s->slow = false;
    s->steady = s->turn = worker;
    s->per_s = ms * 1e-3;
    s->rounds = o->worker_index; /* the two workers out of step */
  } else if (how && sscanf(how, "lag:%lf:%d", &ms, &s->from) == 2) {
    s->slow = false;
    s->steady = s->turn = s->lag = worker;
    s->lag_frac = ms * 1e-2;
    s->rounds = o->worker_index;
  } else if (how && !strncmp(how, "steady", 6)) {
    s->slow = false;
    s->steady = worker;
  }
  const char *setup = how ? strstr(how, ":setup:") : NULL;
  if (setup && worker) sleep_s(atof(setup + 7) * 1e-3);
  *ctx = s;
  return MDL_OK;
}

static void slow_destroy(void *ctx) {
  inner()->destroy(in_of(ctx));
  free(ctx);
}

static size_t slow_param_count(void *ctx) {
  return inner()->param_count(in_of(ctx));
}

static mdl_status slow_init_weights(void *ctx, float *w, mdl_error *err) {
  return inner()->init_weights(in_of(ctx), w, err);
}

static mdl_status slow_add_partitions(void *ctx, Caffe__Phase phase,
                                      Memdl__PartitionLineage *const *parts, size_t n,
                                      mdl_error *err) {
  return inner()->add_partitions(in_of(ctx), phase, parts, n, err);
}

static mdl_status slow_remove_partition(void *ctx, Caffe__Phase phase, const char *data,
                                        uint32_t index, mdl_error *err) {
  return inner()->remove_partition(in_of(ctx), phase, data, index, err);
}

static uint64_t slow_samples(void *ctx, Caffe__Phase phase) {
  return inner()->samples(in_of(ctx), phase);
}

static mdl_status slow_run(void *ctx, int tau, int iter_start, const float *w_in, float *w_out,
                           const volatile int *cancel, mdl_trainer_stats *stats, mdl_error *err) {
  slow *s = ctx;
  mdl_status st = inner()->run(s->in, tau, iter_start, w_in, w_out, cancel, stats, err);
  if (st != MDL_OK) return st;
  double pause = 0;
  if (s->steady) {
    double want = STEADY_S_PER_SAMPLE * (double)stats->samples;
    pause = want - stats->compute_s;
    stats->compute_s = want;
  }
  if (s->slow && iter_start >= s->from) {
    double extra = s->per_s * (double)stats->samples;
    pause += extra;
    stats->compute_s += extra;
  }
  if (s->comm && iter_start >= s->from) pause += s->comm_s; /* not compute: a slow link */
  if (s->turn && iter_start >= s->from && s->rounds++ % 2 == 0) {
    double extra = s->lag ? s->lag_frac * stats->compute_s : s->per_s;
    pause += extra;
    stats->compute_s += extra;
  }
  sleep_s(pause);
  return MDL_OK;
}

static mdl_status slow_test(void *ctx, int test_net, int batches, const float *w,
                            mdl_trainer_stats *stats, mdl_error *err) {
  return inner()->test(in_of(ctx), test_net, batches, w, stats, err);
}

static mdl_status slow_get_state(void *ctx, uint8_t **buf, size_t *len, mdl_error *err) {
  return inner()->get_state(in_of(ctx), buf, len, err);
}

static mdl_status slow_set_state(void *ctx, const uint8_t *buf, size_t len, mdl_error *err) {
  return inner()->set_state(in_of(ctx), buf, len, err);
}

static mdl_status slow_save(void *ctx, const float *w, const char *path, mdl_error *err) {
  return inner()->save(in_of(ctx), w, path, err);
}

static uint64_t slow_batch_samples(void *ctx, Caffe__Phase phase) {
  return inner()->batch_samples(in_of(ctx), phase);
}

static bool slow_output_range(void *ctx, Caffe__Phase phase, const char *name, double *lo,
                              double *hi) {
  return inner()->output_range(in_of(ctx), phase, name, lo, hi);
}

const mdl_trainer_i mdl_trainer_slow = {
    .name = "slownet",
    .lineages = slow_lineages,
    .create = slow_create,
    .destroy = slow_destroy,
    .param_count = slow_param_count,
    .init_weights = slow_init_weights,
    .add_partitions = slow_add_partitions,
    .remove_partition = slow_remove_partition,
    .samples = slow_samples,
    .run = slow_run,
    .test = slow_test,
    .get_state = slow_get_state,
    .set_state = slow_set_state,
    .save = slow_save,
    .batch_samples = slow_batch_samples,
    .output_range = slow_output_range,
};
