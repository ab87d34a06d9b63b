/* memdl's wire decoding without gRPC (see rpc.h): a message as a list of
 * byte ranges decoded with its bulk field kept out of protobuf-c, and the
 * chunks of a streamed bulk checked one by one. Separate from rpc_codec.c
 * so the decoders can be fuzzed (tests/fuzz/rpc_fuzz.c) without gRPC. */
#include "runtime/rpc/rpc_wire.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

size_t mdl_rpc_put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

static bool seg_byte(mdl_rpc_segs *s, uint8_t *b) {
  while (s->i < s->count && s->off >= s->n[s->i]) {
    s->i++;
    s->off = 0;
  }
  if (s->i >= s->count) return false;
  *b = s->p[s->i][s->off++];
  s->left--;
  return true;
}

static void seg_copy(mdl_rpc_segs *s, uint8_t *dst, size_t n) {
  while (n > 0) {
    while (s->off >= s->n[s->i]) {
      s->i++;
      s->off = 0;
    }
    size_t k = s->n[s->i] - s->off;
    if (k > n) k = n;
    if (dst) {
      memcpy(dst, s->p[s->i] + s->off, k);
      dst += k;
    }
    s->off += k;
    s->left -= k;
    n -= k;
  }
}

static bool seg_varint(mdl_rpc_segs *s, uint64_t *v) {
  uint64_t r = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    uint8_t b;
    if (!seg_byte(s, &b)) return false;
    r |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = r;
      return true;
    }
  }
  return false;
}

typedef struct bytebuf {
  uint8_t *p;
  size_t n, cap;
} bytebuf;

static void bb_reserve(bytebuf *b, size_t more) {
  if (b->n + more <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->n + more) cap *= 2;
  b->p = mdl_xrealloc(b->p, cap);
  b->cap = cap;
}

mdl_status mdl_rpc_decode_segs(mdl_rpc_segs *s, const mdl_rpc_in_spec *spec, ProtobufCMessage **msg,
                               size_t *bulk_len, mdl_error *err) {
  *msg = NULL;
  if (bulk_len) *bulk_len = 0;
  const char *what = spec->desc->name;
  size_t max = spec->max_bytes ? spec->max_bytes : DEFAULT_MAX_MESSAGE;
  bytebuf rest = {0};
  bool seen_bulk = false;
  mdl_status st = MDL_OK;
  if (!spec->bulk_field && s->left > max) {
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: %zu bytes exceed the limit of %zu", what, s->left,
                      max);
  }
  while (s->left > 0) {
    uint64_t tag, len;
    if (!seg_varint(s, &tag)) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: truncated field tag", what);
      goto out;
    }
    uint64_t field = tag >> 3;
    unsigned wt = (unsigned)(tag & 7);
    if (field == 0 || field > 536870911u) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: invalid field number", what);
      goto out;
    }
    if (spec->bulk_field && field == spec->bulk_field) {
      if (wt != 2) {
        st = mdl_errorf(err, MDL_ERR_INVALID, "%s: field %u must be length-delimited", what,
                        spec->bulk_field);
        goto out;
      }
      if (!seg_varint(s, &len) || len > s->left) {
        st = mdl_errorf(err, MDL_ERR_INVALID, "%s: truncated field %u", what, spec->bulk_field);
        goto out;
      }
      if (seen_bulk) {
        st = mdl_errorf(err, MDL_ERR_INVALID, "%s: field %u appears twice", what, spec->bulk_field);
        goto out;
      }
      seen_bulk = true;
      void *dst = NULL;
      if (len > 0) {
        if (!spec->bulk_dest) {
          st = mdl_errorf(err, MDL_ERR_INVALID, "%s: unexpected field %u", what, spec->bulk_field);
          goto out;
        }
        mdl_error e2;
        mdl_error_clear(&e2);
        dst = spec->bulk_dest(spec->bulk_ctx, (size_t)len, &e2);
        if (!dst) {
          st = mdl_errorf(err, e2.code != MDL_OK ? e2.code : MDL_ERR_INVALID, "%s: %s", what,
                          e2.msg[0] ? e2.msg : "bulk field rejected");
          goto out;
        }
        seg_copy(s, dst, (size_t)len);
      }
      if (bulk_len) *bulk_len = (size_t)len;
      continue;
    }
    uint8_t hdr[20];
    size_t h = mdl_rpc_put_varint(hdr, tag);
    uint64_t payload;
    switch (wt) {
      case 0: { /* varint: copy it re-encoded */
        uint64_t v;
        if (!seg_varint(s, &v)) {
          st = mdl_errorf(err, MDL_ERR_INVALID, "%s: truncated varint", what);
          goto out;
        }
        h += mdl_rpc_put_varint(hdr + h, v);
        payload = 0;
        break;
      }
      case 1:
        payload = 8;
        break;
      case 5:
        payload = 4;
        break;
      case 2:
        if (!seg_varint(s, &len)) {
          st = mdl_errorf(err, MDL_ERR_INVALID, "%s: truncated length", what);
          goto out;
        }
        h += mdl_rpc_put_varint(hdr + h, len);
        payload = len;
        break;
      default:
        st = mdl_errorf(err, MDL_ERR_INVALID, "%s: unsupported wire type %u", what, wt);
        goto out;
    }
    if (payload > s->left) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: truncated field %llu", what,
                      (unsigned long long)field);
      goto out;
    }
    if (rest.n + h + payload > max) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: more than the limit of %zu bytes", what, max);
      goto out;
    }
    bb_reserve(&rest, h + (size_t)payload);
    memcpy(rest.p + rest.n, hdr, h);
    rest.n += h;
    seg_copy(s, rest.p + rest.n, (size_t)payload);
    rest.n += (size_t)payload;
  }
  *msg = protobuf_c_message_unpack(spec->desc, NULL, rest.n, rest.p ? rest.p : (uint8_t *)"");
  if (!*msg) st = mdl_errorf(err, MDL_ERR_INVALID, "%s: malformed message", what);
out:
  free(rest.p);
  return st;
}

mdl_status mdl_rpc_decode_flat(const uint8_t *data, size_t len, const mdl_rpc_in_spec *spec,
                               ProtobufCMessage **msg, size_t *bulk_len, mdl_error *err) {
  const uint8_t *p[1] = {data};
  size_t n[1] = {len};
  mdl_rpc_segs s = {.p = p, .n = n, .count = 1, .left = len};
  return mdl_rpc_decode_segs(&s, spec, msg, bulk_len, err);
}

mdl_status mdl_rpc_chunk_take_segs(mdl_rpc_bulk_rx *b, mdl_rpc_segs *sp, mdl_error *err) {
  const mdl_rpc_in_spec *spec = b->spec;
  const char *what = spec->desc->name;
  if (!spec->bulk_field)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: chunks for a message without a bulk field", what);
  if (b->head_bulk)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: chunks after field %u arrived whole", what,
                      spec->bulk_field);
  mdl_rpc_segs s = *sp;
  mdl_status st = MDL_OK;
  /* offset, total, data: in any order, a repeated field's last value
   * winning and an absent one 0, as protobuf decodes them; nothing else */
  uint64_t f[3] = {0, 0, 0};
  mdl_rpc_segs data = s;
  while (s.left > 0) {
    uint64_t tag = 0, field;
    bool ok = seg_varint(&s, &tag);
    field = tag >> 3;
    ok = ok && field >= 1 && field <= 3 && (tag & 7) == (field == 3 ? 2u : 0u);
    if (!ok || !seg_varint(&s, &f[field - 1])) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunk %d: malformed (fields 1, 2, 3 expected)",
                      what, b->chunks);
      goto out;
    }
    if (field != 3) continue;
    if (f[2] > s.left) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunk %d: %llu data bytes announced, %zu present",
                      what, b->chunks, (unsigned long long)f[2], s.left);
      goto out;
    }
    data = s;
    seg_copy(&s, NULL, (size_t)f[2]);
  }
  uint64_t off = f[0], total = f[1], len = f[2];
  if (len == 0) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunk %d: empty", what, b->chunks);
    goto out;
  }
  if (b->chunks == 0) {
    if (b->limit && total > b->limit) {
      st =
          mdl_errorf(err, MDL_ERR_NOMEM, "%s: chunked field of %llu bytes exceeds the limit of %zu",
                     what, (unsigned long long)total, b->limit);
      goto out;
    }
    if (total == 0 || total > SIZE_MAX) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunked field of %llu bytes", what,
                      (unsigned long long)total);
      goto out;
    }
    if (!spec->bulk_dest) {
      st = mdl_errorf(err, MDL_ERR_INVALID, "%s: unexpected field %u", what, spec->bulk_field);
      goto out;
    }
    mdl_error e2;
    mdl_error_clear(&e2);
    b->dst = spec->bulk_dest(spec->bulk_ctx, (size_t)total, &e2);
    if (!b->dst) {
      st = mdl_errorf(err, e2.code != MDL_OK ? e2.code : MDL_ERR_INVALID, "%s: %s", what,
                      e2.msg[0] ? e2.msg : "bulk field rejected");
      goto out;
    }
    b->total = total;
  } else if (total != b->total) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunk %d: total %llu, earlier chunks said %llu",
                    what, b->chunks, (unsigned long long)total, (unsigned long long)b->total);
    goto out;
  }
  if (off != b->got) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunk %d: offset %llu, expected %llu (%s)", what,
                    b->chunks, (unsigned long long)off, (unsigned long long)b->got,
                    off < b->got ? "overlap" : "gap");
    goto out;
  }
  if (len > b->total - off) {
    st = mdl_errorf(err, MDL_ERR_INVALID, "%s: chunk %d: bytes %llu..%llu past the total %llu",
                    what, b->chunks, (unsigned long long)off, (unsigned long long)(off + len),
                    (unsigned long long)b->total);
    goto out;
  }
  seg_copy(&data, b->dst + off, (size_t)len);
  b->got += len;
  b->chunks++;
out:
  *sp = s;
  return st;
}

mdl_status mdl_rpc_chunk_take_flat(mdl_rpc_bulk_rx *b, const uint8_t *data, size_t len,
                                   mdl_error *err) {
  const uint8_t *p[1] = {data};
  size_t n[1] = {len};
  mdl_rpc_segs s = {.p = p, .n = n, .count = 1, .left = len};
  return mdl_rpc_chunk_take_segs(b, &s, err);
}

mdl_status mdl_rpc_chunks_end(const mdl_rpc_bulk_rx *b, size_t *bulk_len, mdl_error *err) {
  if (b->chunks == 0) return MDL_OK;
  if (b->got != b->total)
    return mdl_errorf(err, MDL_ERR_INVALID, "%s: chunks ended at %llu of %llu bytes",
                      b->spec->desc->name, (unsigned long long)b->got,
                      (unsigned long long)b->total);
  if (bulk_len) *bulk_len = (size_t)b->total;
  return MDL_OK;
}
