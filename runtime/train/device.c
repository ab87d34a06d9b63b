/* Device names to backends (see device.h), and the GPU plugin's loading:
 * found next to the executable (or at $MDL_CUDA_PLUGIN), opened with
 * dlopen, its entry points checked against gpu/plugin.h's ABI number. */
#include "runtime/train/device.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu/plugin.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/engine/layer.h"

bool mdl_device_valid(const char *d) {
  if (!d || !d[0] || !strcmp(d, "cpu") || !strcmp(d, "cuda") || !strcmp(d, "auto")) return true;
  if (strncmp(d, "cuda:", 5) || !d[5]) return false;
  for (const char *p = d + 5; *p; p++)
    if (*p < '0' || *p > '9') return false;
  return strlen(d + 5) <= 3;
}

/* ---- the plugin ------------------------------------------------------------ */

static struct {
  bool tried, loaded;
  char path[PATH_MAX];
  char why[1024];
  mdl_cuda_plugin_probe_fn probe;
  mdl_cuda_plugin_open_fn open;
} plug;

static void *try_open(const char *path, char *errs, size_t errs_size) {
  /* a build without CUDA leaves a one-line text file in the plugin's place */
  FILE *f = fopen(path, "rb");
  if (f) {
    char head[512] = "";
    size_t n = fread(head, 1, sizeof head - 1, f);
    fclose(f);
    head[n] = 0;
    if (!strncmp(head, "memdl: ", 7)) {
      head[strcspn(head, "\n")] = 0;
      snprintf(errs, errs_size, "%s", head + 7);
      return NULL;
    }
  }
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    size_t used = strlen(errs);
    const char *e = dlerror();
    if (used < errs_size)
      snprintf(errs + used, errs_size - used, "%s%.400s", used ? "; " : "", e ? e : path);
  }
  return h;
}

static void plugin_load(void) {
  if (plug.tried) return;
  plug.tried = true;
  char errs[1024] = "";
  void *h = NULL;
  const char *env = getenv("MDL_CUDA_PLUGIN");
  if (env && env[0]) {
    snprintf(plug.path, sizeof plug.path, "%s", env);
    h = try_open(plug.path, errs, sizeof errs);
  } else {
    /* beside the executable: an install, bazel-bin/ (gpu/ under it), a test
     * binary in bazel-bin/tests/ */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
      exe[n] = 0;
      char *slash = strrchr(exe, '/');
      if (slash) *slash = 0;
      static const char *const rel[] = {"/libmemdl_cuda.so", "/gpu/libmemdl_cuda.so",
                                        "/../gpu/libmemdl_cuda.so", "/../lib/libmemdl_cuda.so"};
      for (size_t i = 0; !h && i < sizeof rel / sizeof *rel; i++) {
        snprintf(plug.path, sizeof plug.path, "%s%s", exe, rel[i]);
        if (access(plug.path, F_OK) == 0) h = try_open(plug.path, errs, sizeof errs);
      }
    }
    if (!h) { /* the loader's own search (LD_LIBRARY_PATH, ...) */
      snprintf(plug.path, sizeof plug.path, "libmemdl_cuda.so");
      size_t before = strlen(errs);
      h = try_open(plug.path, errs, sizeof errs);
      /* "not found" on the search path says nothing when a real file failed */
      if (!h && before) errs[before] = 0;
    }
  }
  if (!h) {
    snprintf(plug.why, sizeof plug.why, "the CUDA plugin does not load (%s)",
             errs[0] ? errs : "libmemdl_cuda.so not found");
    return;
  }
  mdl_cuda_plugin_abi_fn abi = (mdl_cuda_plugin_abi_fn)dlsym(h, "mdl_cuda_plugin_abi");
  plug.probe = (mdl_cuda_plugin_probe_fn)dlsym(h, "mdl_cuda_plugin_probe");
  plug.open = (mdl_cuda_plugin_open_fn)dlsym(h, "mdl_cuda_plugin_open");
  if (!abi || !plug.probe || !plug.open || abi() != MDL_CUDA_PLUGIN_ABI) {
    snprintf(plug.why, sizeof plug.why, "%.600s: not a memdl CUDA plugin of ABI %d", plug.path,
             MDL_CUDA_PLUGIN_ABI);
    dlclose(h);
    return;
  }
  /* kept open for the life of the process: its backends are */
  plug.loaded = true;
  snprintf(plug.why, sizeof plug.why, "%.1000s", plug.path);
}

bool mdl_device_gpu_built(void) {
  plugin_load();
  return plug.loaded;
}

const char *mdl_device_gpu_plugin(void) {
  plugin_load();
  return plug.why;
}

/* Whether the NVIDIA driver's library is there: without it no GPU is
 * usable, and the plugin (with cuDNN and cuBLAS, hundreds of MiB to map)
 * is not worth loading. */
static bool driver_present(char *why, size_t why_size) {
  void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();
    snprintf(why, why_size, "no NVIDIA driver (%.300s)", e ? e : "libcuda.so.1 not found");
    return false;
  }
  return true; /* kept: the CUDA runtime loads it again */
}

/* The number of usable GPUs, 0 with why filled. */
static int gpu_count(char *why, size_t why_size) {
  if (!driver_present(why, why_size)) return 0;
  if (!mdl_device_gpu_built()) {
    snprintf(why, why_size, "%s", plug.why);
    return 0;
  }
  return plug.probe(why, why_size);
}

void mdl_device_describe(char *buf, size_t size) {
  char why[512] = "";
  if (!mdl_device_gpu_built()) {
    snprintf(buf, size, "cpu (no cuda: %s)", plug.why);
    return;
  }
  int n = plug.probe(why, sizeof why);
  if (n > 0)
    snprintf(buf, size, "cpu, cuda (plugin %s; %d GPU%s usable)", plug.path, n, n == 1 ? "" : "s");
  else
    snprintf(buf, size, "cpu, cuda (plugin %s; no usable GPU here: %s)", plug.path, why);
}

/* ---- resolution -------------------------------------------------------------- */

static bool is_pipeline_type(const char *t) {
  static const char *const types[] = {"Data", "ImageData", "MemoryData", "HDF5Data", "WindowData"};
  for (size_t i = 0; i < sizeof types / sizeof *types; i++)
    if (t && strcmp(t, types[i]) == 0) return true;
  return false;
}

/* Lists the layers of nets be does not run into out; true when none. */
static bool runs_all(const mdl_backend *be, const Caffe__NetParameter *const *nets, int n_nets,
                     char *out, size_t out_size) {
  size_t used = 0;
  int bad = 0;
  out[0] = 0;
  for (int k = 0; k < n_nets; k++) {
    if (!nets[k]) continue;
    for (size_t i = 0; i < nets[k]->n_layer; i++) {
      const Caffe__LayerParameter *lp = nets[k]->layer[i];
      if (is_pipeline_type(lp->type)) continue;
      char why[1800];
      if (mdl_backend_supports_layer(be, lp, why, sizeof why)) continue;
      /* the same layer in TRAIN and TEST nets is named once */
      char name[300];
      snprintf(name, sizeof name, "\"%s\" (", lp->name ? lp->name : "(unnamed)");
      if (strstr(out, name)) continue;
      if (!mdl_backend_layer(be, lp->type ? lp->type : ""))
        snprintf(why, sizeof why, "no %s implementation", lp->type ? lp->type : "?");
      if (used < out_size)
        used +=
            (size_t)snprintf(out + used, out_size - used, "%s%s%s)", bad ? ", " : "", name, why);
      bad++;
    }
  }
  return bad == 0;
}

static void say(char *note, size_t note_size, const char *fmt, const char *a, const char *b) {
  if (note && note_size) snprintf(note, note_size, fmt, a, b);
}

mdl_status mdl_device_resolve(const char *spec, const Caffe__NetParameter *const *nets, int n_nets,
                              const mdl_backend **out, char *note, size_t note_size,
                              mdl_error *err) {
  *out = NULL;
  if (note && note_size) note[0] = 0;
  if (!mdl_device_valid(spec))
    return mdl_errorf(err, MDL_ERR_INVALID, "device \"%s\": expected cpu, cuda, cuda:N or auto",
                      spec);
  if (!spec || !spec[0] || !strcmp(spec, "cpu")) {
    *out = mdl_cpu_backend();
    return MDL_OK;
  }
  bool is_auto = !strcmp(spec, "auto");
  int index = !strncmp(spec, "cuda:", 5) ? atoi(spec + 5) : 0;
  char why[1024] = "";
  int n = gpu_count(why, sizeof why);
  if (n <= 0) {
    if (!is_auto)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "device %s: no usable GPU: %s; use --device cpu or auto", spec, why);
    say(note, note_size, "device auto: cpu (no usable GPU: %s%s)", why, "");
    *out = mdl_cpu_backend();
    return MDL_OK;
  }
  const mdl_backend *gpu = NULL;
  char desc[768] = "";
  mdl_error oerr;
  mdl_error_clear(&oerr);
  if (plug.open(index, &gpu, desc, sizeof desc, &oerr) != MDL_OK) {
    if (!is_auto) {
      mdl_errorf(err, oerr.code == MDL_ERR_INVALID ? MDL_ERR_INVALID : MDL_ERR_INTERNAL,
                 "device %s: %s", spec, oerr.msg);
      return err ? err->code : MDL_ERR_INTERNAL;
    }
    say(note, note_size, "device auto: cpu (the GPU does not start: %s%s)", oerr.msg, "");
    *out = mdl_cpu_backend();
    return MDL_OK;
  }
  char missing[2048];
  if (!runs_all(gpu, nets, n_nets, missing, sizeof missing)) {
    if (!is_auto)
      return mdl_errorf(err, MDL_ERR_INVALID,
                        "device %s does not run these layers: %s; use --device cpu or auto", spec,
                        missing);
    say(note, note_size, "device auto: cpu (the whole net stays on the CPU: %s lacks %s)",
        mdl_backend_name(gpu), missing);
    *out = mdl_cpu_backend();
    return MDL_OK;
  }
  say(note, note_size, "device %s: %s", spec, desc);
  *out = gpu;
  return MDL_OK;
}

const mdl_backend *mdl_device_cpu(void) {
  return mdl_cpu_backend();
}

mdl_status mdl_device_backend(const char *spec, const mdl_backend **out, mdl_error *err) {
  return mdl_device_resolve(spec, NULL, 0, out, NULL, 0, err);
}
