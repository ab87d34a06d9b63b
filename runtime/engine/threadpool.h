/* A fixed pool of worker threads running parallel-for loops. Waiting is
 * passive (futex sleep; an optional bounded spin, MDL_SPIN_US, is off by
 * default), so a pool never burns a core another process needs. Owns
 * threads; not work scheduling across nets (one pool per engine; concurrent
 * callers are serialised). */
#ifndef MDL_RUNTIME_THREADPOOL_H
#define MDL_RUNTIME_THREADPOOL_H

#include <stdint.h>

#include "common/error.h"

typedef struct mdl_threadpool mdl_threadpool_t;
typedef mdl_threadpool_t mdl_threadpool;

/* Number of CPUs this process may run on (sched_getaffinity), at least 1. */
int mdl_cpu_count(void);

/* Starts a pool of n_threads workers in total, the calling thread included
 * (so n_threads - 1 are created). n_threads <= 0 means mdl_cpu_count(), or
 * the MDL_NUM_THREADS environment variable when set. On success *out is the
 * caller's (mdl_threadpool_free); on failure *out is NULL. */
mdl_status mdl_threadpool_new(int n_threads, mdl_threadpool **out, mdl_error *err);

/* Joins the workers and frees the pool. NULL is safe. */
void mdl_threadpool_free(mdl_threadpool *p);

/* Threads the pool runs with (1 for NULL). */
int mdl_threadpool_size(const mdl_threadpool *p);

/* Chunks a parallel loop is cut into at most, on every pool: a constant, so
 * that per-chunk partial results (and the problem splits sized by it) are
 * the same for any thread count, and a run resumed on a machine with another
 * number of cores continues with the same bits. 8 is 4 chunks per thread on
 * the 2-core machines this runs on (a descheduled thread's chunks are picked
 * up by the others); more threads than 8 sit idle in a parallel loop. */
#define MDL_PAR_CHUNKS 8

/* MDL_PAR_CHUNKS, whatever p is (NULL included): per-slot scratch and partial
 * results are sized by this. */
int mdl_threadpool_slots(const mdl_threadpool *p);

/* fn(arg, begin, end, slot) over disjoint chunks covering [0, n): at most
 * MDL_PAR_CHUNKS chunks, contiguous, each a multiple of grain (except the
 * last). The chunks depend on n and grain only, never on the pool's size or
 * on timing; slot is the chunk's index, in [0, MDL_PAR_CHUNKS). Whichever
 * thread runs a chunk, the chunk keeps its slot, so per-slot scratch is
 * private and per-slot partial results reduced in slot order give the same
 * bits on every run and every thread count. Chunks go to whichever thread is
 * free (a descheduled worker's share is done by the others). Returns when
 * every chunk is done. p == NULL, size 1, or a call from inside a chunk (not
 * reentrant) runs the same chunks in order on the calling thread. */
typedef void (*mdl_task_fn)(void *arg, int64_t begin, int64_t end, int slot);
void mdl_parallel_for(mdl_threadpool *p, int64_t n, int64_t grain, mdl_task_fn fn, void *arg);

/* n_tasks tasks fn(arg, i, i + 1, thread) handed out dynamically, for uneven
 * work; thread is the running thread's index in [0, size), so results must
 * not depend on it (scratch only, never partial sums). */
void mdl_parallel_tasks(mdl_threadpool *p, int64_t n_tasks, mdl_task_fn fn, void *arg);

#endif
