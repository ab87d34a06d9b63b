/* Device names to backends (see device.h). The GPU issue adds gpu/'s
 * backend here; until then cuda is refused with a reason. */
#include "runtime/train/device.h"

#include <string.h>

#include "runtime/cpu/cpu_backend.h"

bool mdl_device_valid(const char *d) {
  if (!d || !d[0] || !strcmp(d, "cpu") || !strcmp(d, "cuda") || !strcmp(d, "auto")) return true;
  if (strncmp(d, "cuda:", 5) || !d[5]) return false;
  for (const char *p = d + 5; *p; p++)
    if (*p < '0' || *p > '9') return false;
  return strlen(d + 5) <= 3;
}

bool mdl_device_gpu_built(void) {
  return false;
}

mdl_status mdl_device_backend(const char *spec, const mdl_backend **out, mdl_error *err) {
  *out = NULL;
  if (!mdl_device_valid(spec))
    return mdl_errorf(err, MDL_ERR_INVALID, "device \"%s\": expected cpu, cuda, cuda:N or auto",
                      spec);
  if (!spec || !spec[0] || !strcmp(spec, "cpu") || !strcmp(spec, "auto")) {
    *out = mdl_cpu_backend();
    return MDL_OK;
  }
  return mdl_errorf(err, MDL_ERR_INVALID,
                    "device %s: this memdl was built without a GPU backend; use --device cpu",
                    spec);
}
