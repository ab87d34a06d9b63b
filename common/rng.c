/* The non-inline half of common/rng.h: seeding, bounded draws, shuffles. */
#include "common/rng.h"

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
