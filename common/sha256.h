/* SHA-256 (FIPS 180-4) of bytes and files, written here so fingerprints
 * need no crypto library. Owns the digest; not what is hashed or why. */
#ifndef MDL_COMMON_SHA256_H
#define MDL_COMMON_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct mdl_sha256 {
  uint32_t h[8];
  uint64_t len; /* bytes so far */
  uint8_t buf[64];
  size_t used;
} mdl_sha256;

void mdl_sha256_init(mdl_sha256 *s);
void mdl_sha256_update(mdl_sha256 *s, const void *data, size_t n);
/* Finishes s into 32 bytes; s must be initialised again before reuse. */
void mdl_sha256_final(mdl_sha256 *s, uint8_t out[32]);

/* 64 lowercase hex digits and a NUL. */
void mdl_sha256_hex(const uint8_t digest[32], char hex[65]);

/* The digest of len bytes as hex. */
void mdl_sha256_bytes(const void *data, size_t len, char hex[65]);

/* The digest of a file's bytes as hex, read in blocks. On failure hex is
 * left as it was and err names the file. */
mdl_status mdl_sha256_file(const char *path, char hex[65], mdl_error *err);

#endif
