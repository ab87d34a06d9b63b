/* Parameter initialisation as Caffe's fillers (constant, uniform, gaussian
 * incl. sparse, xavier, msra, positive_unitball, bilinear) and the
 * deterministic random number generator they and Dropout draw from. Owns no
 * global state: every draw goes through a caller's mdl_rng. */
#ifndef MDL_RUNTIME_FILLER_H
#define MDL_RUNTIME_FILLER_H

#include <stdint.h>

#include "caffe.pb-c.h"
#include "common/error.h"
#include "runtime/engine/tensor.h"

/* Counter-based generator: value i of a stream is a hash of (seed, i), so a
 * state is two integers that snapshots can save, and a block of draws can be
 * produced by several threads with the same bits as one thread. */
typedef struct mdl_rng {
  uint64_t seed;
  uint64_t counter; /* draws consumed so far */
} mdl_rng;

void mdl_rng_init(mdl_rng *r, uint64_t seed);

/* An independent stream derived from r's seed and a stream number (e.g. the
 * layer index), so layers do not shift each other's draws. */
mdl_rng mdl_rng_stream(const mdl_rng *r, uint64_t stream);

uint32_t mdl_rng_u32(mdl_rng *r);
/* Uniform in [a, b) as Caffe's caffe_rng_uniform (b > a). */
float mdl_rng_uniform(mdl_rng *r, float a, float b);
/* Normal(mean, std) (Box-Muller on two uniforms). */
float mdl_rng_gaussian(mdl_rng *r, float mean, float std);

/* Stateless form: draw number i of stream seed, as 32 random bits. */
uint32_t mdl_rng_bits_at(uint64_t seed, uint64_t i);

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
