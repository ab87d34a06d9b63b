/* Devices by name, resolved in one place: "cpu", "cuda", "cuda:N" and
 * "auto" to a backend (runtime/engine/backend.h). Every command, the
 * trainer and the worker ask here; nothing else compares device strings.
 * Owns the list of backends built into this binary; not any backend. */
#ifndef MDL_RUNTIME_TRAIN_DEVICE_H
#define MDL_RUNTIME_TRAIN_DEVICE_H

#include <stdbool.h>

#include "common/error.h"
#include "runtime/engine/backend.h"

/* Whether spec is a device name at all: cpu, cuda, cuda:N (N 0..999) or
 * auto. NULL and "" mean cpu. */
bool mdl_device_valid(const char *spec);

/* Whether this binary has a GPU backend. */
bool mdl_device_gpu_built(void);

/* The backend for spec: cpu; auto (a GPU when one is built and usable,
 * else the CPU); cuda or cuda:N (MDL_ERR_INVALID when this binary has no
 * GPU backend or the device is not there, saying which). *out is borrowed
 * and lives as long as the process. */
mdl_status mdl_device_backend(const char *spec, const mdl_backend **out, mdl_error *err);

#endif
