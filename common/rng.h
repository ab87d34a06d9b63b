/* Every random stream memdl draws from, seeded and reproducible, no global
 * state (each stream is a value its caller owns and can copy):
 *   - mdl_rng: counter-based (draw i is a hash of seed and i), so a state is
 *     two integers a snapshot saves and a block of draws is the same bits on
 *     any thread count. Fillers, Dropout and DummyData draw from it.
 *   - mdl_prng: xoshiro256** seeded by splitmix64, and stateless 64-bit
 *     hashes, for the data path: shuffles, augmentation, record selection.
 * Their bits are fixed: changing either changes every trained model. */
#ifndef MDL_COMMON_RNG_H
#define MDL_COMMON_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct mdl_prng {
  uint64_t s[4];
} mdl_prng;

/* splitmix64's output function without its increment: a bijective mix. */
static inline uint64_t mdl_mix64_fin(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* splitmix64's step and finaliser: a bijective mix of x. */
static inline uint64_t mdl_mix64(uint64_t x) {
  return mdl_mix64_fin(x + 0x9e3779b97f4a7c15ull);
}

/* ---- mdl_rng: counter-based --------------------------------------------- */

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

/* ---- mdl_prng: xoshiro256** and hashes ---------------------------------- */

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
