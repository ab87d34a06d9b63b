/* What `memdl compile` shows about a plan: --explain (the passes and what
 * they changed, a per-layer table, the memory planner's figures, the
 * calibration and the tuner's arithmetic), --dot (the DAG as Graphviz) and
 * --json (the same for tools). Reads the compiled plan; runs nothing but
 * the memory planner's sizing. */
#ifndef MDL_CLI_COMPILE_REPORT_H
#define MDL_CLI_COMPILE_REPORT_H

#include <stdbool.h>
#include <stdio.h>

#include "compiler/job.h"
#include "compiler/plan.h"
#include "runtime/dist/calibrate.h"

typedef struct mdl_compile_report_in {
  const mdl_job *job;
  const mdl_compiled *c;
  int workers; /* the run's worker count (--workers, else the job's cluster) */
  bool remote; /* workers over gRPC rather than shared memory */
  /* --calibrate's figures (NULL: the tuner uses the assumed ones) */
  const mdl_calibration *calibration;
} mdl_compile_report_in;

/* --explain, to f. Fails only when the memory planner cannot size a net
 * (err names the layer). */
mdl_status mdl_compile_explain(FILE *f, const mdl_compile_report_in *in, mdl_error *err);

/* --dot: data stages -> per-worker blocks -> batch -> layers -> loss, one
 * cluster per net; Split layers the compiler inserted dotted, in-place
 * layers dashed, losses double octagons. */
void mdl_compile_dot(FILE *f, const mdl_compile_report_in *in);

/* --json: the plan for tools (one JSON object). */
mdl_status mdl_compile_json(FILE *f, const mdl_compile_report_in *in, mdl_error *err);

#endif
