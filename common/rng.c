/* The non-inline half of common/rng.h: the counter-based stream, xoshiro's
 * seeding, bounded draws, shuffles. */
#include "common/rng.h"

#include <math.h>

/* ---- mdl_rng ---- */

void mdl_rng_init(mdl_rng *r, uint64_t seed) {
  r->seed = seed;
  r->counter = 0;
}

mdl_rng mdl_rng_stream(const mdl_rng *r, uint64_t stream) {
  mdl_rng s = {mdl_mix64_fin(r->seed ^ mdl_mix64_fin(stream + 0x632be59bd9b4e019ULL)), 0};
  return s;
}

uint32_t mdl_rng_bits_at(uint64_t seed, uint64_t i) {
  return (uint32_t)(mdl_mix64_fin(mdl_mix64_fin(seed) + (i + 1) * 0x9e3779b97f4a7c15ULL) >> 32);
}

uint32_t mdl_rng_u32(mdl_rng *r) {
  return mdl_rng_bits_at(r->seed, r->counter++);
}

static float unit(uint32_t bits) { /* [0, 1) with 24 bits */
  return (float)(bits >> 8) * (1.0f / 16777216.0f);
}

float mdl_rng_uniform(mdl_rng *r, float a, float b) {
  float u = unit(mdl_rng_u32(r));
  float v = a + (b - a) * u;
  return v < b ? v : a; /* rounding could reach b */
}

float mdl_rng_gaussian(mdl_rng *r, float mean, float std) {
  double u1 = ((mdl_rng_u32(r) >> 8) + 1) * (1.0 / 16777216.0); /* (0, 1] */
  double u2 = (mdl_rng_u32(r) >> 8) * (1.0 / 16777216.0);
  double z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
  return (float)(mean + std * z);
}

/* ---- mdl_prng ---- */

void mdl_prng_seed(mdl_prng *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) {
    x += 0x9e3779b97f4a7c15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    r->s[i] = z ^ (z >> 31);
  }
}

uint32_t mdl_prng_below(mdl_prng *r, uint32_t n) {
  uint64_t m = (uint64_t)(uint32_t)(mdl_prng_next(r) >> 32) * n;
  uint32_t low = (uint32_t)m;
  if (low < n) {
    uint32_t threshold = (uint32_t)-n % n;
    while (low < threshold) {
      m = (uint64_t)(uint32_t)(mdl_prng_next(r) >> 32) * n;
      low = (uint32_t)m;
    }
  }
  return (uint32_t)(m >> 32);
}

void mdl_prng_shuffle_u32(mdl_prng *r, uint32_t *a, size_t n) {
  for (size_t i = n; i > 1; i--) {
    size_t j = mdl_prng_below(r, (uint32_t)i);
    uint32_t t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
  }
}
