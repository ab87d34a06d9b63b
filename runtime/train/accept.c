/* Acceptance criteria: the comparison and the message that says by how much. */
#include "runtime/train/accept.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

bool mdl_accept_check(Memdl__Acceptance *const *accept, size_t n_accept, const char *const *names,
                      const double *values, int n_values, char *msg, size_t msg_size) {
  bool ok = true;
  size_t used = 0;
  if (msg_size) msg[0] = '\0';
  for (size_t a = 0; a < n_accept; a++) {
    const Memdl__Acceptance *ac = accept[a];
    const char *metric = ac->metric ? ac->metric : "";
    double v = NAN;
    for (int k = 0; k < n_values; k++)
      if (!strcmp(names[k], metric)) v = values[k];
    const char *fail = NULL;
    double bound = 0, by = 0;
    if (isnan(v)) {
      fail = "is missing";
    } else if (ac->has_at_least && v < ac->at_least) {
      fail = "is below";
      bound = ac->at_least;
      by = ac->at_least - v;
    } else if (ac->has_at_most && v > ac->at_most) {
      fail = "is above";
      bound = ac->at_most;
      by = v - ac->at_most;
    }
    if (!fail) continue;
    ok = false;
    if (used >= msg_size) continue;
    if (isnan(v))
      used += (size_t)snprintf(msg + used, msg_size - used, "%s%s is missing from the TEST outputs",
                               used ? "; " : "", metric);
    else
      used += (size_t)snprintf(msg + used, msg_size - used, "%s%s %.4f %s %g by %.4f",
                               used ? "; " : "", metric, v, fail, bound, by);
  }
  return ok;
}
