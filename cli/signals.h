/* Signals for long-running commands (memdl run, memdl worker): the signals
 * are blocked in every thread and taken by one thread that waits for them,
 * so no handler ever interrupts a compute thread. Owns that thread; not what
 * a signal means (the callback decides). */
#ifndef MDL_CLI_SIGNALS_H
#define MDL_CLI_SIGNALS_H

/* Blocks sigs (n of them) in the calling thread, and so in every thread it
 * starts afterwards, and starts a detached thread calling fn(sig, ctx) for
 * each one that arrives; fn runs on that thread, not in a handler. Call it
 * before starting compute or gRPC threads. fn is also installed as a plain
 * handler (flags only) for threads a library started before this call, so
 * fn must stay async-signal-safe. Returns 0, or -1 when the thread could not
 * start (the signals are then left as they were). */
int mdl_cli_signals_start(const int *sigs, int n, void (*fn)(int sig, void *ctx), void *ctx);

#endif
