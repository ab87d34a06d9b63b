/* The cost model and the tau tuner: FLOPs and parameter bytes of a net,
 * estimated seconds per iteration and per averaging round, and the smallest
 * tau that keeps communication under the job's limit (SparkNet's trade-off).
 * Estimates only: nothing here runs the net. */
#ifndef MDL_COMPILER_TUNER_H
#define MDL_COMPILER_TUNER_H

#include <stdbool.h>
#include <stdint.h>

#include "compiler/graph.h"

typedef struct mdl_cost {
  double forward_flops; /* multiply-adds x 2 of Convolution, Deconvolution, InnerProduct */
  double train_flops;   /* forward + backward (weights and, where needed, bottoms) */
  int64_t param_values; /* learnable values in the net */
  int64_t batch;        /* first axis of the first input/data blob */
} mdl_cost;

/* FLOPs and parameter counts of g, layer by layer. */
void mdl_cost_of(const mdl_graph *g, mdl_cost *out);

typedef struct mdl_tune_input {
  int workers;
  bool remote;              /* weights over the network, not shared memory */
  double max_comm_fraction; /* of a round; the job's sync.max_comm_fraction */
  double worker_gflops;     /* sustained training throughput of one worker */
  double bandwidth_gbs;     /* weights moved per second, GB/s, per direction */
  double latency_s;         /* fixed cost of one round trip */
} mdl_tune_input;

typedef struct mdl_tune_result {
  int tau;
  double iter_s;        /* estimated seconds per iteration on one worker */
  double comm_s;        /* estimated seconds to broadcast and gather once */
  double comm_fraction; /* of a round, at the chosen tau */
} mdl_tune_result;

/* The defaults for this kind of machine: a worker's CPU throughput, and the
 * transfer costs bench/bench_allreduce.sh measured for shared memory
 * (local workers) and gRPC (remote ones). */
mdl_tune_input mdl_tune_defaults(int workers, bool remote, double max_comm_fraction);

/* The smallest tau in [1, 1000] whose round spends at most
 * max_comm_fraction communicating. */
mdl_tune_result mdl_tune_tau(const mdl_cost *cost, const mdl_tune_input *in);

#endif
