/* The compiler's driver: from a loaded job to the graphs of every phase and
 * the serialisable Plan that workers receive. Owns which nets exist (train,
 * each test net) and their NetStates; the passes themselves live in graph.c
 * and the modules it calls. */
#ifndef MDL_COMPILER_PLAN_H
#define MDL_COMPILER_PLAN_H

#include "compiler/graph.h"
#include "compiler/job.h"
#include "compiler/memplan.h"
#include "plan.pb-c.h"

typedef struct mdl_phase_net {
  Caffe__Phase phase;
  int test_index; /* which test net (0 for TRAIN) */
  mdl_graph *graph;
} mdl_phase_net;

typedef struct mdl_compiled {
  int n_nets;
  mdl_phase_net *nets; /* TRAIN first (when the job trains), then each test net */
} mdl_compiled;

typedef struct mdl_compile_opts {
  int phase;                /* -1: every net; else only nets of this Caffe__Phase */
  const char *const *stage; /* extra NetState stages for every net (as `caffe -stage`) */
  int n_stage;
} mdl_compile_opts;

#define MDL_COMPILE_OPTS_DEFAULT ((mdl_compile_opts){.phase = -1})

/* Builds the graph of every net the job runs (those opts select). A plain net file gets a TRAIN
 * and a TEST graph. resolver tells data layers' record shapes (may be NULL).
 * On success *out is the caller's (mdl_compiled_free); on failure NULL. */
mdl_status mdl_compile_job(const mdl_job *job, mdl_source_resolver resolver, void *ctx,
                           mdl_compiled **out, mdl_error *err);

/* mdl_compile_job with options; opts may be NULL for the defaults. */
mdl_status mdl_compile_job_opts(const mdl_job *job, mdl_source_resolver resolver, void *ctx,
                                const mdl_compile_opts *opts, mdl_compiled **out, mdl_error *err);

void mdl_compiled_free(mdl_compiled *c);

/* The Plan message for a compiled job: resolved nets per phase with blob
 * shapes, solver, data sets, sync, cluster, acceptance. Caller owns it
 * (mdl_pb_free). */
Memdl__Plan *mdl_plan_new(const mdl_job *job, const mdl_compiled *c);

const char *mdl_phase_name(Caffe__Phase phase);

/* The memory figures of net i of c (bytes), for `memdl compile`: activations
 * and gradients naive and planned (mdl_mem_plan_new on the compiler's view of
 * the layers); workspace as one im2col column buffer per convolution against
 * one shared (the largest); parameters this net owns (a TEST net shares the
 * TRAIN net's by layer name) with their gradients when it trains; solver
 * history for the TRAIN net. The runtime adds backend scratch to the
 * workspace (mdl_net_mem_figures). */
void mdl_plan_memory(const mdl_compiled *c, int i, const Caffe__SolverParameter *solver,
                     mdl_mem_figures *out);

#endif
