/* The cost model and the tuner: FLOPs and parameter bytes of a net, and,
 * from a table of per-worker timings (measured by calibration, or the
 * assumed figures below when there are none), the smallest tau that keeps
 * communication under the job's limit and each worker's share of the
 * global batch (SparkNet's trade-off). Pure functions: nothing here runs
 * the net or reads a clock. */
#ifndef MDL_COMPILER_TUNER_H
#define MDL_COMPILER_TUNER_H

#include <stdbool.h>
#include <stddef.h>
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

/* FLOPs of one layer of g (forward, and forward + backward as counted by
 * mdl_cost_of); 0 for layers the model does not count. */
void mdl_cost_of_layer(const mdl_graph *g, int layer, double *forward, double *train);

/* One worker's row of the tuner's table. */
typedef struct mdl_tune_worker {
  double sample_s;      /* seconds per training sample (forward + backward) */
  double latency_s;     /* fixed cost of one round with this worker */
  double bandwidth_bps; /* weight bytes per second on its link, per direction */
  double fixed_s;       /* seconds per iteration whatever the batch (solver update, overheads) */
  double iter_se_s;     /* standard error of a measured mean iteration (0: exact); see below */
} mdl_tune_worker;

#define MDL_TUNE_MAX_WORKERS 256

/* What the tuner decides from: the workers' timings and the job's figures. */
typedef struct mdl_tune_table {
  int n_workers; /* rows of worker[], 1..MDL_TUNE_MAX_WORKERS */
  const mdl_tune_worker *worker;
  int64_t global_batch;     /* samples of one iteration over all workers (kept exactly) */
  double weight_bytes;      /* one copy of the weights */
  double max_comm_fraction; /* of a round; the job's sync.max_comm_fraction */
  int fixed_tau;            /* > 0: the job fixes tau; only the shares are chosen */
} mdl_tune_table;

/* The largest share of a round the tuner lets communication take when the
 * job does not say (sync.max_comm_fraction). */
#define MDL_TUNE_COMM_FRACTION 0.05

/* The job's bound on a round's communication share when it is one (in
 * (0, 1)), else MDL_TUNE_COMM_FRACTION. */
double mdl_tune_comm_bound(double max_comm_fraction);

/* The improvement of the predicted round time below which workers keep
 * equal shares: measured speeds jitter by a few percent, and equal shares
 * keep a run's bits independent of the measurement. */
#define MDL_TUNE_REBALANCE_GAIN 0.10

/* How many combined standard errors apart the slowest and the fastest
 * worker's iterations (at equal shares, or at the current ones during a
 * run) must be before the shares move: balanced shares make the iterations
 * equal, and a difference the rounds' own scatter explains (workers slow
 * in turn, an odd window giving one of them three slow rounds of five) is
 * no reason to set them up again. */
#define MDL_TUNE_REBALANCE_SIGMAS 2.0

typedef struct mdl_tune_plan {
  int tau;
  bool balanced;        /* shares follow speed; false: equal shares */
  bool noise;           /* equal kept: shares by speed would gain, within the errors */
  double iter_equal_s;  /* slowest worker's iteration with equal shares */
  double iter_s;        /* slowest worker's iteration with the chosen shares */
  double comm_s;        /* one broadcast and gather: max latency + sum of transfers */
  double round_equal_s; /* tau * iter_equal_s + comm_s */
  double round_s;       /* tau * iter_s + comm_s */
  double comm_fraction; /* comm_s / round_s */
  double wait_fraction; /* mean idle share of a worker's round while the slowest computes */
  double need_tau;      /* comm (1 - f) / (f iter): the bound tau must reach */
} mdl_tune_plan;

/* Chooses tau and the shares. share[] (n_workers entries, caller's) gets
 * each worker's samples per iteration: equal (the remainder to the first
 * workers) unless shares proportional to speed predict a round at least
 * MDL_TUNE_REBALANCE_GAIN shorter and the iterations at equal shares differ
 * by more than MDL_TUNE_REBALANCE_SIGMAS combined iter_se_s; either way
 * they sum to global_batch exactly and each is at least 1 (global_batch >=
 * n_workers assumed; when it is smaller, the first global_batch workers get
 * 1 and the rest 0). tau is the smallest in [1, 1000] whose round spends at
 * most max_comm_fraction communicating, or fixed_tau. */
void mdl_tune(const mdl_tune_table *t, int64_t *share, mdl_tune_plan *out);

/* The decision during a run, on a table t of what the last rounds
 * measured (t->fixed_tau: the run's tau, at which both shares are judged;
 * t->global_batch: the sum of cur[]). */
typedef struct mdl_tune_rebalance_result {
  bool change;        /* share[] differs from cur[] */
  bool noise;         /* kept: what would gain is within the measurements' errors */
  bool balanced;      /* the tuner's choice follows speed (false: equal shares) */
  double round_cur_s; /* tau x slowest iteration at cur[] + comm */
  double round_s;     /* the same at the tuner's choice */
} mdl_tune_rebalance_result;

/* The shares to run with from now on: the tuner's choice on t (mdl_tune:
 * equal unless shares by speed shorten the round by the gain) replaces the
 * current shares cur[] only when the workers' iterations at cur[] (fixed_s
 * + cur sample_s) differ by more than MDL_TUNE_REBALANCE_SIGMAS times
 * their combined iter_se_s, and the choice predicts a round at least
 * MDL_TUNE_REBALANCE_GAIN shorter than cur[]'s (hysteresis: measurements
 * jitter, and every change costs a Setup and changes the run's path);
 * otherwise share[] = cur[]. share[] and cur[] hold n_workers entries, the
 * caller's; they may not overlap. */
void mdl_tune_rebalance(const mdl_tune_table *t, const int64_t *cur, int64_t *share,
                        mdl_tune_rebalance_result *out);

/* How many of n_parts equal-sized data partitions each of k workers holds
 * so that its part of the data follows its share of the batch (every
 * worker then goes through its data at the same epoch rate): from held[]
 * (summing to n_parts), one partition at a time from the worker furthest
 * above its ideal n_parts share_i / sum(share) to the one furthest below,
 * while that brings the two closer; a worker keeps at least one. So few
 * partitions move, and held[] as close to the ideal as whole partitions
 * allow (equal shares over a round-robin deal) moves none. target[] (k
 * entries, the caller's) gets the counts; returns how many moved. */
int mdl_tune_partitions(int k, const int64_t *share, const int64_t *held, int64_t *target);

/* The tuner's arithmetic for t, share and p, as lines of text into buf
 * (always terminated; cut at len). Returns the length it needed. */
size_t mdl_tune_explain(const mdl_tune_table *t, const int64_t *share, const mdl_tune_plan *p,
                        char *buf, size_t len);

/* The figures assumed when nothing has been measured: a worker's CPU
 * throughput and the transfer costs bench/bench_allreduce.sh measured for
 * shared memory (local workers) and gRPC (remote ones). */
typedef struct mdl_tune_input {
  int workers;
  bool remote;              /* weights over the network, not shared memory */
  double max_comm_fraction; /* of a round; the job's sync.max_comm_fraction */
  double worker_gflops;     /* sustained training throughput of one worker */
  double bandwidth_gbs;     /* weights moved per second, GB/s, per direction */
  double latency_s;         /* fixed cost of one round trip */
} mdl_tune_input;

mdl_tune_input mdl_tune_defaults(int workers, bool remote, double max_comm_fraction);

/* The table of in's assumed figures for cost, every worker alike, each
 * running cost->batch samples per iteration (Caffe's multi-GPU convention:
 * the global batch is workers x the net's batch). rows has in->workers
 * entries (at most MDL_TUNE_MAX_WORKERS), the caller's. */
mdl_tune_table mdl_tune_table_assumed(const mdl_cost *cost, const mdl_tune_input *in,
                                      mdl_tune_worker *rows);

/* The tuner on the assumed figures (equal workers, so equal shares). */
typedef struct mdl_tune_result {
  int tau;
  double iter_s;        /* estimated seconds per iteration on one worker */
  double comm_s;        /* estimated seconds to broadcast and gather once */
  double comm_fraction; /* of a round, at the chosen tau */
} mdl_tune_result;

mdl_tune_result mdl_tune_tau(const mdl_cost *cost, const mdl_tune_input *in);

#endif
