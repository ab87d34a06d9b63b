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

/* Chunks a parallel loop is cut into at most: 4 per thread (1 for NULL or a
 * one-thread pool), so that when another process takes a core, the running
 * threads pick up the descheduled one's remaining chunks. Per-slot scratch
 * and partial results are sized by this. */
int mdl_threadpool_slots(const mdl_threadpool *p);

/* fn(arg, begin, end, slot) over disjoint chunks covering [0, n): at most
 * mdl_threadpool_slots chunks, contiguous, each a multiple of grain (except
 * the last), so the chunking never depends on timing. slot is the chunk's
 * index, in [0, slots):
 * whichever thread runs a chunk, the chunk keeps its slot, so per-slot
 * scratch is private and per-slot partial results reduced in slot order give
 * the same bits on every run. Chunks go to whichever thread is free (a
 * descheduled worker's share is done by the others). Returns when every chunk
 * is done. p == NULL, size 1 or one chunk runs fn(arg, 0, n, 0) inline. Not
 * reentrant: a call from inside a chunk runs inline. */
typedef void (*mdl_task_fn)(void *arg, int64_t begin, int64_t end, int slot);
void mdl_parallel_for(mdl_threadpool *p, int64_t n, int64_t grain, mdl_task_fn fn, void *arg);

/* n_tasks tasks fn(arg, i, i + 1, thread) handed out dynamically, for uneven
 * work; thread is the running thread's index in [0, size). */
void mdl_parallel_tasks(mdl_threadpool *p, int64_t n_tasks, mdl_task_fn fn, void *arg);

#endif
