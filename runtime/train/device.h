/* Devices by name, resolved in one place: "cpu", "cuda", "cuda:N" and
 * "auto" to a backend (runtime/engine/backend.h). Every command, the
 * trainer and the worker ask here; nothing else compares device strings.
 * Owns the list of backends this binary can reach: the CPU, linked in, and
 * the GPU, a plugin (libmemdl_cuda.so) loaded with dlopen on first need, so
 * one binary runs on hosts with and without CUDA. "cpu" never loads it. */
#ifndef MDL_RUNTIME_TRAIN_DEVICE_H
#define MDL_RUNTIME_TRAIN_DEVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "caffe.pb-c.h"
#include "common/error.h"
#include "runtime/engine/backend.h"

/* Whether spec is a device name at all: cpu, cuda, cuda:N (N 0..999) or
 * auto. NULL and "" mean cpu. */
bool mdl_device_valid(const char *spec);

/* Whether the GPU plugin loads (it may still find no usable GPU). Loads it
 * once; why (may be NULL) says where it was found or why not. */
bool mdl_device_gpu_built(void);
const char *mdl_device_gpu_plugin(void);

/* One line naming the backends this binary has, for `memdl --version`:
 * "cpu, cuda (plugin PATH; no usable GPU: ...)". Loads the plugin. */
void mdl_device_describe(char *buf, size_t size);

/* The CPU's backend (what `cpu` resolves to), for comparisons. */
const mdl_backend *mdl_device_cpu(void);

/* The backend for spec: cpu; auto (a GPU when the plugin loads and a GPU
 * is usable, else the CPU); cuda or cuda:N (MDL_ERR_INVALID when there is
 * no plugin or no such usable GPU, saying why). *out is borrowed and lives
 * as long as the process. */
mdl_status mdl_device_backend(const char *spec, const mdl_backend **out, mdl_error *err);

/* As mdl_device_backend, for nets that must run whole on one backend: with
 * a GPU chosen, every layer of nets[0..n_nets) (data-pipeline sources
 * aside) must run on it. `auto` then falls back to the CPU naming the
 * layers; `cuda` fails with MDL_ERR_INVALID naming them. note (may be NULL)
 * receives one line saying which device was chosen and why, for the log
 * ("" for an explicit cpu). */
mdl_status mdl_device_resolve(const char *spec, const Caffe__NetParameter *const *nets, int n_nets,
                              const mdl_backend **out, char *note, size_t note_size,
                              mdl_error *err);

#endif
