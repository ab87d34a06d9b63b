/* Parameter initialisation as Caffe's fillers (constant, uniform, gaussian
 * incl. sparse, xavier, msra, positive_unitball, bilinear), drawing from the
 * counter-based mdl_rng of common/rng.h. Owns no global state: every draw
 * goes through a caller's mdl_rng. */
#ifndef MDL_RUNTIME_ENGINE_FILLER_H
#define MDL_RUNTIME_ENGINE_FILLER_H

#include <stdint.h>

#include "caffe.pb-c.h"
#include "common/error.h"
#include "common/rng.h"
#include "runtime/engine/tensor.h"

/* Fills t->data (shape as Caffe's blob: fan_in = count / d[0], fan_out =
 * count / d[1]) by fp, as Caffe's GetFiller. fp == NULL means Caffe's
 * default FillerParameter (constant 0). Unknown type or a shape the filler
 * cannot handle (bilinear needs 4-D square kernels, positive_unitball and
 * xavier need at least one axis): MDL_ERR_INVALID naming the filler, t
 * unchanged. */
mdl_status mdl_filler_fill(const Caffe__FillerParameter *fp, mdl_tensor *t, mdl_rng *rng,
                           mdl_error *err);

/* Fills n floats with a constant (convenience for layers' default fillers). */
void mdl_filler_constant(float *x, int64_t n, float value);

#endif
