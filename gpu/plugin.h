/* The GPU plugin's entry points, the only symbols libmemdl_cuda.so exports.
 * runtime/train/device.c finds them with dlsym; nothing else includes this
 * (the plugin is loaded at run time so one memdl binary starts on hosts
 * without CUDA). Bump MDL_CUDA_PLUGIN_ABI when a signature or the layout of
 * backend.h/layer.h changes. */
#ifndef MDL_GPU_PLUGIN_H
#define MDL_GPU_PLUGIN_H

#include <stddef.h>

#include "common/error.h"
#include "runtime/engine/backend.h"

#define MDL_CUDA_PLUGIN_ABI 1

/* "mdl_cuda_plugin_abi": returns MDL_CUDA_PLUGIN_ABI. */
typedef int (*mdl_cuda_plugin_abi_fn)(void);

/* "mdl_cuda_plugin_probe": the number of usable GPUs (0 with the reason in
 * why: no driver, no device, ...). Touches no device memory. */
typedef int (*mdl_cuda_plugin_probe_fn)(char *why, size_t why_size);

/* "mdl_cuda_plugin_open": the backend of GPU `device`, created on first use
 * (stream, cuBLAS and cuDNN handles) and kept for the life of the process;
 * *out is borrowed. On failure *out is NULL and err says which call failed.
 * desc (may be NULL) receives a line naming the GPU and its math mode. */
typedef mdl_status (*mdl_cuda_plugin_open_fn)(int device, const mdl_backend **out, char *desc,
                                              size_t desc_size, mdl_error *err);

#endif
