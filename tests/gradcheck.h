/* Test fixture for one layer and a finite-difference gradient checker, as
 * Caffe's GradientChecker: central differences with a fixed seed, a "kink"
 * window where the function is not smooth. Unlike Caffe's (which divides by
 * max(|a|, |n|, 1), an absolute check for small gradients), each element's
 * error is relative to the larger of the two values, floored at a fraction
 * of the largest gradient of its blob: a backward that is off by a constant
 * factor fails at any gradient scale. Checks bottom and parameter gradients.
 * Test-only. */
#ifndef MDL_TESTS_GRADCHECK_H
#define MDL_TESTS_GRADCHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/cpu/cpu_backend.h"
#include "runtime/engine/layer.h"

/* One layer with its own bottoms, tops, parameter buffers and scratch. */
typedef struct gc_layer {
  Caffe__LayerParameter *lp; /* parsed from text, owned */
  mdl_layer *l;
  int n_bottom, n_top;
  mdl_tensor bottom[8], top[8]; /* owned (tops alias bottoms when in place) */
  mdl_tensor *bp[8], *tp[8];
  float *params, *pdiff; /* one buffer each for all parameters */
  int64_t n_params;
  mdl_workspace ws;
  mdl_rng rng; /* the layer's run-time stream (Dropout, DummyData) */
  bool in_place;
} gc_layer;

/* Parses layer_text (a LayerParameter in text format, e.g. "type:
 * 'ReLU' relu_param { negative_slope: 0.1 }"), creates the layer for phase
 * with the given bottom shapes, allocates everything, fills parameters with
 * the layer's fillers and bottoms with N(0, 1) draws (seeded). in_place runs
 * top 0 on bottom 0's tensor. pool may be NULL. Returns MDL_OK or the
 * layer's error (then *f holds nothing to free). */
mdl_status gc_layer_make(gc_layer *f, const char *layer_text, Caffe__Phase phase, int n_bottom,
                         const mdl_shape *bottom_shape, bool in_place, mdl_threadpool *pool,
                         uint64_t seed, mdl_error *err);
/* The same on backend be (gc_layer_make uses the CPU's). */
mdl_status gc_layer_make_on(const mdl_backend *be, gc_layer *f, const char *layer_text,
                            Caffe__Phase phase, int n_bottom, const mdl_shape *bottom_shape,
                            bool in_place, mdl_threadpool *pool, uint64_t seed, mdl_error *err);
void gc_layer_free(gc_layer *f);

void gc_forward(gc_layer *f);
/* Zeroes parameter diffs, runs backward with the given top diffs already
 * set; propagate_down NULL: all bottoms. */
void gc_backward(gc_layer *f, const bool *propagate_down);

typedef struct gc_opts {
  double step;           /* 1e-2 */
  double threshold;      /* 1e-3 */
  double floor;          /* 0.1: errors are relative to max(|a|, |n|, floor x blob scale) */
  double kink;           /* centre of the non-smooth window (0) */
  double kink_range;     /* half width; < 0 disables (default -1) */
  unsigned skip_bottoms; /* bit i: do not check bottom i (labels) */
  bool skip_params;
  uint64_t seed; /* objective coefficients */
  /* Non-zero: every top element's coefficient (its upstream diff) is this
   * value instead of a random draw in [-1, 1]. Loss tests pass the
   * normaliser (batch size ...) so that gradients are O(1). */
  double upstream;
  /* The net's loss path instead of coefficients: the objective is
   * mdl_layer_loss with the layer text's loss_weight (Caffe's default: 1 on
   * a loss layer's first top), and top diffs are seeded by
   * mdl_layer_seed_loss_diff, never written by the checker. */
  bool loss_weights;
} gc_opts;

gc_opts gc_default_opts(void);

typedef struct gc_result {
  int64_t checked, skipped, failed;
  double worst; /* largest |analytic - numeric| / max(|a|, |n|, floor x scale) */
  double scale; /* largest |gradient| over the checked elements */
  char first_failure[256];
} gc_result;

/* Objective L = sum over tops of c . top, c fixed random in [-1, 1] (seeded;
 * see upstream and loss_weights for the alternatives); compares dL/dx from
 * backward with central differences for every element of every checked
 * bottom and parameter. An element fails when |a - n| > threshold x
 * max(|a|, |n|, floor x s), s the largest |a| or |n| of its blob. Forward
 * is deterministic between evaluations: bottoms, parameters and the layer's
 * RNG are restored before each one. */
gc_result gc_check(gc_layer *f, const gc_opts *o);

/* Convenience for table-driven tests: make the layer (TRAIN unless phase
 * says otherwise), let prep adjust inputs (labels ...; may be NULL), check,
 * free. A layer that cannot be made reports failed = -1 and its error in
 * first_failure. */
typedef void (*gc_prep_fn)(gc_layer *f, void *arg);
gc_result gc_run(const char *layer_text, Caffe__Phase phase, int n_bottom,
                 const mdl_shape *bottom_shape, bool in_place, const gc_opts *o, gc_prep_fn prep,
                 void *prep_arg, mdl_threadpool *pool);

/* Fills n floats with uniform draws in [lo, hi) / integers in [0, k). */
void gc_fill_uniform(float *x, int64_t n, float lo, float hi, uint64_t seed);
void gc_fill_labels(float *x, int64_t n, int k, uint64_t seed);
/* A shuffled ramp: n distinct values spaced `gap` apart, centred on 0, so
 * max-type layers have no near-ties within a finite-difference step. */
void gc_fill_distinct(float *x, int64_t n, float gap, uint64_t seed);

/* Shape helper: gc_shape(4, (int64_t[]){2, 3, 5, 5}). */
mdl_shape gc_shape(int n, const int64_t *d);

#endif
