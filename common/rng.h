/* A small seeded pseudo-random generator (xoshiro256** seeded by
 * splitmix64) and stateless 64-bit hashes, for shuffles, augmentation and
 * deterministic record selection. No global state: every stream is a value
 * the caller owns and can copy. (runtime/engine/filler.h has the counter-based
 * generator that fillers and Dropout use; this one is for the data path.) */
#ifndef MDL_RUNTIME_RNG_H
#define MDL_RUNTIME_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct mdl_prng {
  uint64_t s[4];
} mdl_prng;

/* splitmix64's finaliser: a bijective mix of x. */
static inline uint64_t mdl_mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* A hash of two values; mdl_hash2(seed, i) draws "the i-th value of seed". */
static inline uint64_t mdl_hash2(uint64_t a, uint64_t b) {
  return mdl_mix64(mdl_mix64(a) ^ (b + 0x632be59bd9b4e019ull));
}

/* Uniform in [0, 1) from the top 24 bits of a hash (exact in float). */
static inline float mdl_hash_unit(uint64_t h) {
  return (float)(h >> 40) * (1.0f / 16777216.0f);
}

/* Seeds all 256 bits of state from seed (any value, 0 included). */
void mdl_prng_seed(mdl_prng *r, uint64_t seed);

static inline uint64_t mdl_prng_rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

static inline uint64_t mdl_prng_next(mdl_prng *r) {
  uint64_t *s = r->s;
  uint64_t out = mdl_prng_rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = mdl_prng_rotl(s[3], 45);
  return out;
}

/* Uniform integer in [0, n), n > 0, without modulo bias (Lemire's method). */
uint32_t mdl_prng_below(mdl_prng *r, uint32_t n);

/* Uniform float in [0, 1). */
static inline float mdl_prng_unit(mdl_prng *r) {
  return mdl_hash_unit(mdl_prng_next(r));
}

/* Fisher-Yates shuffle of a[0..n). */
void mdl_prng_shuffle_u32(mdl_prng *r, uint32_t *a, size_t n);

#endif
