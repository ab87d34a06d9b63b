/* Caffe's solvers (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) and
 * learning-rate policies over one contiguous parameter buffer and its
 * gradient buffer, split into per-blob ranges. Owns the update arithmetic,
 * the schedule and the optimiser history; not the forward/backward pass, the
 * training loop or file I/O (runtime/solver/caffemodel.h writes .solverstate). */
#ifndef MDL_RUNTIME_SOLVER_H
#define MDL_RUNTIME_SOLVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caffe.pb-c.h"
#include "common/error.h"
#include "runtime/engine/backend.h"

typedef enum mdl_solver_kind {
  MDL_SOLVER_SGD = 0, /* values equal Caffe's SolverParameter.SolverType */
  MDL_SOLVER_NESTEROV,
  MDL_SOLVER_ADAGRAD,
  MDL_SOLVER_RMSPROP,
  MDL_SOLVER_ADADELTA,
  MDL_SOLVER_ADAM,
} mdl_solver_kind;

typedef enum mdl_lr_policy {
  MDL_LR_FIXED = 0,
  MDL_LR_STEP,
  MDL_LR_EXP,
  MDL_LR_INV,
  MDL_LR_MULTISTEP,
  MDL_LR_POLY,
  MDL_LR_SIGMOID,
} mdl_lr_policy;

/* The solver fields that drive updates, validated (see mdl_solver_config_get). */
typedef struct mdl_solver_config {
  mdl_solver_kind kind;
  mdl_lr_policy policy;
  float base_lr, gamma, power;
  float momentum, momentum2, delta, rms_decay;
  float weight_decay;
  bool l1; /* regularization_type "L1" (else L2) */
  int stepsize;
  int n_stepvalue;
  int stepvalue[64];
  int max_iter;
  float clip_gradients; /* < 0: off */
  int iter_size;
} mdl_solver_config;

/* One learnable blob: a range of the parameter/gradient buffers. */
typedef mdl_param_blob mdl_solver_blob;

typedef struct mdl_solver mdl_solver;

/* Reads and checks the update-related fields of sp as Caffe does (type or the
 * deprecated solver_type enum, lr_policy and the fields it needs, momentum
 * limits per solver, regularization_type). On failure *cfg is unspecified and
 * err names the field and what was expected. */
mdl_status mdl_solver_config_get(const Caffe__SolverParameter *sp, mdl_solver_config *cfg,
                                 mdl_error *err);

/* The same checks, reporting every problem (not only the first) to report;
 * returns how many there were. For `memdl check`. */
int mdl_solver_config_check(const Caffe__SolverParameter *sp,
                            void (*report)(void *ctx, const char *msg), void *ctx);

/* A solver over n_blobs ranges of buffers `total` floats long, on backend
 * be (borrowed; it holds the history and runs the updates). blobs is
 * copied. History starts at zero, iter and current_step at 0. On success
 * *out is owned by the caller (mdl_solver_free); on failure *out is NULL. */
mdl_status mdl_solver_new(const mdl_backend *be, const Caffe__SolverParameter *sp,
                          const mdl_solver_blob *blobs, int n_blobs, size_t total, mdl_solver **out,
                          mdl_error *err);

void mdl_solver_free(mdl_solver *s);

/* The learning rate the next mdl_solver_update will use (Caffe's
 * GetLearningRate at the current iteration). No side effects. */
float mdl_solver_rate(const mdl_solver *s);

/* The same for iteration iter of a run with config c, without a solver
 * (the distributed driver's progress lines: its workers hold the solvers). */
float mdl_solver_rate_at(const mdl_solver_config *c, int iter);

/* One update, as Caffe's ApplyUpdate followed by Net::Update: clips the
 * gradient's global L2 norm, divides by iter_size, adds weight decay, turns
 * the gradient into a step with the solver's rule and history, subtracts it
 * from data, then advances iter. data and diff are the backend's buffers.
 * diff is used as scratch (its contents afterwards are unspecified; the
 * caller clears it before the next pass). */
void mdl_solver_update(mdl_solver *s, float *data, float *diff);

int mdl_solver_iter(const mdl_solver *s);
int mdl_solver_current_step(const mdl_solver *s);
const mdl_solver_config *mdl_solver_cfg(const mdl_solver *s);

/* Sets iter and current_step (restoring a .solverstate). */
void mdl_solver_set_position(mdl_solver *s, int iter, int current_step);

/* Number of history buffers: 1 for SGD, Nesterov, AdaGrad, RMSProp; 2 for
 * AdaDelta and Adam (Caffe stores them as 2 x n_blobs history blobs, the
 * first set first). Each buffer is `total` floats, laid out as the params. */
int mdl_solver_history_sets(const mdl_solver *s);
float *mdl_solver_history(mdl_solver *s, int set); /* owned by s; backend memory */
/* The backend the solver was made for. */
const mdl_backend *mdl_solver_backend(const mdl_solver *s);

/* History set `set` copied to / from total host floats. */
void mdl_solver_history_get(const mdl_solver *s, int set, float *host);
void mdl_solver_history_put(mdl_solver *s, int set, const float *host);

int mdl_solver_n_blobs(const mdl_solver *s);
const mdl_solver_blob *mdl_solver_blobs(const mdl_solver *s); /* owned by s */
size_t mdl_solver_total(const mdl_solver *s);

const char *mdl_solver_kind_name(mdl_solver_kind kind);

#endif
