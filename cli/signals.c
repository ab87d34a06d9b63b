/* The signal thread of cli/signals.h. A handler run on a compute thread
 * interrupts oneDNN's JIT kernels, and its signal frame corrupted the heap in
 * about one stop in five (their code keeps data below the stack pointer):
 * hence one thread that sigwaits and compute threads that never see one. */
#include "cli/signals.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

typedef struct sig_thread {
  sigset_t set;
  void (*fn)(int sig, void *ctx);
  void *ctx;
} sig_thread;

/* For a signal the kernel hands to a thread started before the mask was
 * set (OpenBLAS's idle server thread, gRPC's): the same callback. One
 * process has one such thread set, so the plain handler needs its context
 * from somewhere fixed; it is written once before the handler is
 * installed and never changed. */
static sig_thread *g_handler_ctx;

static void on_handler(int sig) {
  if (g_handler_ctx) g_handler_ctx->fn(sig, g_handler_ctx->ctx);
}

static void *wait_loop(void *arg) {
  sig_thread *t = arg;
  for (;;) {
    int sig;
    if (sigwait(&t->set, &sig) == 0) t->fn(sig, t->ctx);
  }
  return NULL;
}

int mdl_cli_signals_start(const int *sigs, int n, void (*fn)(int sig, void *ctx), void *ctx) {
  sig_thread *t = calloc(1, sizeof *t); /* lives as long as the process */
  if (!t) return -1;
  sigemptyset(&t->set);
  for (int i = 0; i < n; i++) sigaddset(&t->set, sigs[i]);
  t->fn = fn;
  t->ctx = ctx;
  sigset_t old;
  pthread_sigmask(SIG_BLOCK, &t->set, &old);
  pthread_t th;
  if (pthread_create(&th, NULL, wait_loop, t) != 0) {
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(t);
    return -1;
  }
  pthread_detach(th);
  if (!g_handler_ctx) {
    g_handler_ctx = t;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_handler;
    sa.sa_flags = SA_RESTART; /* the callback only sets flags: reads carry on */
    sa.sa_mask = t->set;
    for (int i = 0; i < n; i++) sigaction(sigs[i], &sa, NULL);
  }
  return 0;
}
