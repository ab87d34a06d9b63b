/* The CPU backend: host memory, the CPU layer kernels (layers_*.c) in one
 * explicit table, cpu_math's reductions and the solver rules of
 * solver_cpu.c, behind the engine's seam (runtime/engine/backend.h). Owns
 * nothing else: choosing it is runtime/train/device.h's job. */
#ifndef MDL_RUNTIME_CPU_CPU_BACKEND_H
#define MDL_RUNTIME_CPU_CPU_BACKEND_H

#include "runtime/engine/backend.h"

/* The CPU backend: static, stateless (threads come with each net's pool). */
const mdl_backend *mdl_cpu_backend(void);

/* Its interface, for backends that wrap it (tests' counting backend). */
const mdl_backend_i *mdl_cpu_backend_iface(void);

/* The solver step on host buffers (solver_cpu.c). */
void mdl_cpu_update(void *ctx, const mdl_update *u, float *data, float *diff, float *const *hist);

#endif
