/* Fork-join thread pool on Linux futexes. Workers sleep in the kernel between
 * loops (after a short bounded spin, MDL_SPIN_US microseconds, default 0), so
 * they cost nothing while another process uses the cores. Chunks are claimed
 * from a shared counter by whichever thread is running: when another process
 * holds a core, the caller does the chunks a descheduled worker has not
 * started instead of waiting a time slice for it. How a loop is chunked
 * depends on its length only, never on the thread count (threadpool.h).
 * Not a task queue.
 *
 * Claiming is a seqlock on one 64-bit word (generation << 32 | next chunk):
 * a thread reads the word, then the loop's descriptor (double-buffered by
 * generation parity), then claims with a compare-and-swap that also checks
 * the generation; a successful claim proves the descriptor it read belongs
 * to the running loop, and the caller cannot start another loop before every
 * claimed chunk has completed. */
#define _GNU_SOURCE
#include "runtime/engine/threadpool.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"

#define MAX_THREADS 256

typedef struct loop_desc {
  mdl_task_fn fn;
  void *arg;
  int64_t n_chunks; /* tasks to hand out */
  int64_t n, chunk; /* chunked mode: range and chunk length; chunk 0: one task per index */
} loop_desc;

struct mdl_threadpool {
  int size;
  pthread_t *threads;
  pthread_mutex_t call_lock; /* one loop at a time */
  int spin_ns;
  uint32_t gen; /* generation of the last loop started (caller only) */

  loop_desc desc[2];           /* by generation parity */
  _Atomic uint64_t word;       /* generation << 32 | next chunk */
  _Atomic uint32_t generation; /* futex: bumped to start a loop, or to stop */
  _Atomic uint32_t completed;  /* futex: chunks of the current loop finished */
  _Atomic int stop;
};

static _Thread_local mdl_threadpool *tls_in_pool;

static long futex(_Atomic uint32_t *addr, int op, uint32_t val) {
  return syscall(SYS_futex, (uint32_t *)addr, op, val, NULL, NULL, 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Waits until *addr != old: spins at most spin_ns, then sleeps. */
static void wait_change(_Atomic uint32_t *addr, uint32_t old, int spin_ns) {
  if (spin_ns > 0) {
    int64_t end = mdl_now_ns() + spin_ns;
    int k = 0;
    while (atomic_load_explicit(addr, memory_order_acquire) == old) {
      cpu_relax();
      if ((++k & 63) == 0 && mdl_now_ns() > end) break;
    }
  }
  while (atomic_load_explicit(addr, memory_order_acquire) == old)
    futex(addr, FUTEX_WAIT_PRIVATE, old);
}

/* Claims and runs chunks of loop generation g until none are left (or the
 * pool has moved on). tid is the running thread's index. */
static void work(mdl_threadpool *p, uint32_t g, int tid) {
  for (;;) {
    uint64_t v = atomic_load_explicit(&p->word, memory_order_acquire);
    if ((uint32_t)(v >> 32) != g) return;
    const loop_desc *d = &p->desc[g & 1];
    loop_desc local = *d;
    int64_t i = (int64_t)(v & 0xffffffffu);
    if (i >= local.n_chunks) return;
    if (!atomic_compare_exchange_weak_explicit(&p->word, &v, v + 1, memory_order_acq_rel,
                                               memory_order_acquire))
      continue;
    if (local.chunk > 0) {
      int64_t b = i * local.chunk, e = b + local.chunk < local.n ? b + local.chunk : local.n;
      local.fn(local.arg, b, e, (int)i); /* slot = chunk index: fixed per chunk */
    } else {
      local.fn(local.arg, i, i + 1, tid);
    }
    uint32_t done = atomic_fetch_add_explicit(&p->completed, 1, memory_order_acq_rel) + 1;
    if (done == (uint32_t)local.n_chunks) futex(&p->completed, FUTEX_WAKE_PRIVATE, 1);
  }
}

typedef struct worker_arg {
  mdl_threadpool *p;
  int tid;
} worker_arg;

static void *worker_main(void *varg) {
  worker_arg wa = *(worker_arg *)varg;
  free(varg);
  mdl_threadpool *p = wa.p;
  tls_in_pool = p;
  uint32_t seen = 0;
  for (;;) {
    wait_change(&p->generation, seen, p->spin_ns);
    seen = atomic_load_explicit(&p->generation, memory_order_acquire);
    if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
    work(p, seen, wa.tid);
  }
  return NULL;
}

int mdl_cpu_count(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int c = CPU_COUNT(&set);
    if (c > 0) return c;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

mdl_status mdl_threadpool_new(int n_threads, mdl_threadpool **out, mdl_error *err) {
  *out = NULL;
  if (n_threads <= 0) {
    const char *env = getenv("MDL_NUM_THREADS");
    n_threads = env && atoi(env) > 0 ? atoi(env) : mdl_cpu_count();
  }
  if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
  mdl_threadpool *p = mdl_xcalloc(1, sizeof *p);
  p->size = n_threads;
  pthread_mutex_init(&p->call_lock, NULL);
  const char *spin = getenv("MDL_SPIN_US");
  p->spin_ns = spin ? atoi(spin) * 1000 : 0;
  if (p->spin_ns < 0) p->spin_ns = 0;
  p->threads = mdl_xcalloc((size_t)n_threads, sizeof *p->threads);
  for (int i = 1; i < n_threads; i++) {
    worker_arg *wa = mdl_xmalloc(sizeof *wa);
    wa->p = p;
    wa->tid = i;
    int rc = pthread_create(&p->threads[i], NULL, worker_main, wa);
    if (rc != 0) {
      free(wa);
      p->size = i; /* join the ones that started */
      mdl_threadpool_free(p);
      return mdl_errorf(err, MDL_ERR_INTERNAL, "cannot start worker thread %d of %d: %s", i,
                        n_threads, strerror(rc));
    }
  }
  *out = p;
  return MDL_OK;
}

void mdl_threadpool_free(mdl_threadpool *p) {
  if (!p) return;
  atomic_store(&p->stop, 1);
  atomic_fetch_add(&p->generation, 1);
  futex(&p->generation, FUTEX_WAKE_PRIVATE, INT32_MAX);
  for (int i = 1; i < p->size; i++) pthread_join(p->threads[i], NULL);
  pthread_mutex_destroy(&p->call_lock);
  free(p->threads);
  free(p);
}

int mdl_threadpool_size(const mdl_threadpool *p) {
  return p ? p->size : 1;
}

int mdl_threadpool_slots(const mdl_threadpool *p) {
  (void)p;
  return MDL_PAR_CHUNKS;
}

/* Publishes desc as the next loop, works on it, returns when every chunk has
 * completed. Caller holds call_lock. */
static void launch(mdl_threadpool *p, const loop_desc *desc) {
  uint32_t g = ++p->gen;
  if (g == 0) g = ++p->gen; /* generation 0 means "none yet" to workers */
  p->desc[g & 1] = *desc;
  atomic_store_explicit(&p->completed, 0, memory_order_relaxed);
  atomic_store_explicit(&p->word, (uint64_t)g << 32, memory_order_release);
  atomic_store_explicit(&p->generation, g, memory_order_release);
  futex(&p->generation, FUTEX_WAKE_PRIVATE, INT32_MAX);
  tls_in_pool = p;
  work(p, g, 0);
  uint32_t done;
  while ((done = atomic_load_explicit(&p->completed, memory_order_acquire)) <
         (uint32_t)desc->n_chunks)
    wait_change(&p->completed, done, p->spin_ns);
  tls_in_pool = NULL;
}

void mdl_parallel_for(mdl_threadpool *p, int64_t n, int64_t grain, mdl_task_fn fn, void *arg) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  /* the chunking depends on n and grain only (see the header) */
  int64_t blocks = (n + grain - 1) / grain;
  int64_t used = blocks < MDL_PAR_CHUNKS ? blocks : MDL_PAR_CHUNKS;
  int64_t chunk = (blocks + used - 1) / used * grain;
  int64_t n_chunks = (n + chunk - 1) / chunk;
  if (!p || p->size == 1 || n_chunks == 1 || tls_in_pool == p) {
    for (int64_t i = 0; i < n_chunks; i++)
      fn(arg, i * chunk, i * chunk + chunk < n ? i * chunk + chunk : n, (int)i);
    return;
  }
  loop_desc d = {fn, arg, n_chunks, n, chunk};
  pthread_mutex_lock(&p->call_lock);
  launch(p, &d);
  pthread_mutex_unlock(&p->call_lock);
}

void mdl_parallel_tasks(mdl_threadpool *p, int64_t n_tasks, mdl_task_fn fn, void *arg) {
  if (n_tasks <= 0) return;
  if (!p || p->size == 1 || n_tasks == 1 || tls_in_pool == p) {
    for (int64_t i = 0; i < n_tasks; i++) fn(arg, i, i + 1, 0);
    return;
  }
  loop_desc d = {fn, arg, n_tasks, n_tasks, 0};
  pthread_mutex_lock(&p->call_lock);
  launch(p, &d);
  pthread_mutex_unlock(&p->call_lock);
}
