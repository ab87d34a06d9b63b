/* Convolution on oneDNN's direct (JIT, AVX-512) convolution primitives, for
 * layers_conv.c. oneDNN threads with OpenMP, whose idle threads spin; here
 * every primitive is created and run single-threaded, one per slot on a
 * contiguous slice of the batch, so memdl's pool does all the threading. The
 * slices depend on the batch size only (MDL_PAR_CHUNKS of them at most), so
 * the results are the same bits for any thread count.
 * Activations stay NCHW for the rest of the net: each slot reorders its
 * slice into the blocked layout oneDNN chose and back. Weight and bias
 * gradients are per-slot partials, reordered and summed in slot order.
 * Measured one thread (bench_layers --cpu-time), CIFAR-10-quick batch 100,
 * forward + backward ms, im2col + sgemm against this: conv1 8.4 + 8.6 vs
 * 4.9 + 6.1, conv2 16.2 + 30.3 vs 7.8 + 15.7, conv3 9.8 + 13.2 vs 3.9 + 7.2;
 * the whole iteration 101 ms vs 59 ms. MDL_CONV=im2col or =onednn overrides
 * the choice made by worth_it(). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "runtime/cpu/layers_cpu.h"

/* A oneDNN call that must not fail once setup succeeded: failure is an
 * internal error (out of memory inside the library), reported and fatal. */
#define DNNL_RUN(x)                                                                               \
  do {                                                                                            \
    dnnl_status_t st_ = (x);                                                                      \
    if (st_ != dnnl_success) {                                                                    \
      fprintf(stderr, "memdl: internal error: %s failed (%d) at %s:%d\n", #x, (int)st_, __FILE__, \
              __LINE__);                                                                          \
      abort();                                                                                    \
    }                                                                                             \
  } while (0)

/* Setup-time calls: failure means oneDNN cannot do this convolution. */
#define DNNL_TRY(x)                            \
  do {                                         \
    if ((x) != dnnl_success) goto unsupported; \
  } while (0)

static _Thread_local int omp_pinned;
static void pin_omp(void) {
  if (!omp_pinned) {
    omp_set_num_threads(1);
    omp_pinned = 1;
  }
}

/* MDL_DNNL_VERBOSE=1 prints each primitive's implementation at setup. */
/* Returns false for oneDNN's reference (plain C loop) implementations, which
 * are far slower than im2col + GEMM: the layer then takes that path. */
static bool note_impl(const char *what, const_dnnl_primitive_desc_t pd) {
  const char *e = getenv("MDL_DNNL_VERBOSE"), *impl = NULL;
  dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
  if (e && *e && *e != '0') fprintf(stderr, "memdl: oneDNN %s: %s\n", what, impl ? impl : "?");
  return impl && strncmp(impl, "ref", 3) != 0;
}

/* Primitives for one slice size (all slots but the last share one). */
typedef struct size_class {
  int64_t n;
  dnnl_memory_desc_t p_src, p_dst; /* plain NCHW slices */
  dnnl_memory_desc_t b_src, b_dst; /* oneDNN's chosen layouts */
  dnnl_memory_desc_t b_dsrc;       /* backward data's diff_src (may differ from b_src) */
  bool src_re, dst_re, dsrc_re;    /* layouts differ: reorders needed */
  dnnl_primitive_t fwd, bwd_d, bwd_w;
  dnnl_primitive_t src_in, dst_out, ddst_in, dsrc_out; /* reorders, NULL when not needed */
  size_t scratch;                                      /* largest scratchpad, bytes */
} size_class;

/* Every buffer below lives in the net's shared workspace (carved at setup,
 * pointed at by bind_ws on each call), not in the layer: nothing survives
 * from forward to backward, so the workspace holds one layer's need at a
 * time instead of every layer keeping blocked copies of its activations. */
typedef struct slot {
  int cls;
  int64_t n0;
  dnnl_stream_t stream;
  float *src_blk;  /* input in b_src (for the weight gradient); reused for diff_src */
  float *dst_blk;  /* forward output in b_dst; reused for diff_dst */
  float *dsrc_blk; /* diff_src in b_dsrc when it is neither plain nor b_src */
  float *dw_blk;   /* weight gradient partial in b_ww */
  float *db;       /* bias gradient partial */
  void *scratch;
  size_t o_src, o_dst, o_dsrc, o_dw, o_db, o_scratch; /* workspace offsets; NO_WS: none */
} slot;

struct mdl_dnnl_conv {
  mdl_dnnl_conv_spec s;
  dnnl_engine_t eng;
  dnnl_memory_desc_t p_w, bias_md;
  dnnl_memory_desc_t b_w, b_wd, b_ww; /* weights for forward, backward data; weight gradient */
  bool w_re, wd_re, ww_re;
  dnnl_primitive_t w_in, wd_in, dw_out; /* plain -> chosen layouts, gradient -> plain */
  float *w_blk;                         /* weights in b_w, refreshed by every forward */
  float *wd_blk;                        /* weights in b_wd, refreshed by every backward */
  float *dw_plain;                      /* one slot's gradient back in the plain layout */
  size_t o_w, o_wd, o_dwp;              /* workspace offsets of the three */
  size_t ws_bytes;                      /* workspace this convolution needs */
  size_class cls[2];
  int n_cls;
  slot slots[64];
  int n_slots;
  int64_t per;
};

static dnnl_memory_t mem(const mdl_dnnl_conv *c, const dnnl_memory_desc_t *md, const void *p) {
  dnnl_memory_t m;
  DNNL_RUN(dnnl_memory_create(&m, md, c->eng, (void *)p));
  return m;
}

static void exec(dnnl_primitive_t p, dnnl_stream_t st, int n, const dnnl_exec_arg_t *args) {
  DNNL_RUN(dnnl_primitive_execute(p, st, n, args));
}

/* Runs reorder r from src to dst on st. */
static void reorder(const mdl_dnnl_conv *c, dnnl_primitive_t r, dnnl_stream_t st,
                    const dnnl_memory_desc_t *smd, const void *src, const dnnl_memory_desc_t *dmd,
                    void *dst) {
  dnnl_memory_t a = mem(c, smd, src), b = mem(c, dmd, dst);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, a}, {DNNL_ARG_TO, b}};
  exec(r, st, 2, args);
  dnnl_memory_destroy(a);
  dnnl_memory_destroy(b);
}

static dnnl_status_t make_reorder(const mdl_dnnl_conv *c, const dnnl_memory_desc_t *from,
                                  const dnnl_memory_desc_t *to, dnnl_primitive_t *out) {
  dnnl_primitive_desc_t pd;
  dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, from, c->eng, to, c->eng, NULL);
  if (st != dnnl_success) return st;
  (void)note_impl("reorder", pd);
  st = dnnl_primitive_create(out, pd);
  dnnl_primitive_desc_destroy(pd);
  return st;
}

static size_t scratch_of(const_dnnl_primitive_desc_t pd) {
  const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  return md ? dnnl_memory_desc_get_size(md) : 0;
}

static const dnnl_memory_desc_t *query(const_dnnl_primitive_desc_t pd, dnnl_query_t what) {
  return dnnl_primitive_desc_query_md(pd, what, 0);
}

static bool same_md(const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b) {
  return dnnl_memory_desc_equal(a, b) != 0;
}

/* Builds the primitives of one slice size; false when oneDNN cannot. */
static bool make_class(mdl_dnnl_conv *c, size_class *k, int64_t n, dnnl_primitive_attr_t attr,
                       bool first) {
  const mdl_dnnl_conv_spec *s = &c->s;
  memset(k, 0, sizeof *k);
  k->n = n;
  dnnl_dims_t sd = {n, s->C, s->H, s->W}, dd = {n, s->M, s->OH, s->OW};
  dnnl_dims_t strides = {s->sh, s->sw}, dil = {s->dh - 1, s->dw - 1};
  dnnl_dims_t pl = {s->ph, s->pw}, pr = {s->ph, s->pw};
  dnnl_memory_desc_t any_src, any_dst, any_w;
  dnnl_primitive_desc_t fpd = NULL, dpd = NULL, wpd = NULL;
  bool ok = false;
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&k->p_src, 4, sd, dnnl_f32, dnnl_nchw));
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&k->p_dst, 4, dd, dnnl_f32, dnnl_nchw));
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&any_src, 4, sd, dnnl_f32, dnnl_format_tag_any));
  DNNL_TRY(dnnl_memory_desc_init_by_tag(&any_dst, 4, dd, dnnl_f32, dnnl_format_tag_any));
  if (s->G > 1) {
    dnnl_dims_t wd = {s->G, s->M / s->G, s->C / s->G, s->kh, s->kw};
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&any_w, 5, wd, dnnl_f32, dnnl_format_tag_any));
  } else {
    dnnl_dims_t wd = {s->M, s->C, s->kh, s->kw};
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&any_w, 4, wd, dnnl_f32, dnnl_format_tag_any));
  }
  const dnnl_memory_desc_t *bias = s->bias ? &c->bias_md : NULL;
  dnnl_convolution_desc_t fd, bdd, bwd;
  DNNL_TRY(dnnl_dilated_convolution_forward_desc_init(
      &fd, s->training ? dnnl_forward_training : dnnl_forward_inference, dnnl_convolution_direct,
      &any_src, &any_w, bias, &any_dst, strides, dil, pl, pr));
  DNNL_TRY(dnnl_primitive_desc_create(&fpd, &fd, attr, c->eng, NULL));
  if (!note_impl("conv forward", fpd)) goto unsupported;
  k->b_src = *query(fpd, dnnl_query_src_md);
  k->b_dst = *query(fpd, dnnl_query_dst_md);
  const dnnl_memory_desc_t *bw = query(fpd, dnnl_query_weights_md);
  if (first)
    c->b_w = *bw;
  else if (!same_md(&c->b_w, bw))
    goto unsupported;
  k->scratch = scratch_of(fpd);
  DNNL_TRY(dnnl_primitive_create(&k->fwd, fpd));
  if (s->training) {
    /* backward with the forward pass's activation layouts (weights may
     * differ), or not at all */
    DNNL_TRY(dnnl_dilated_convolution_backward_data_desc_init(
        &bdd, dnnl_convolution_direct, &any_src, &any_w, &any_dst, strides, dil, pl, pr));
    DNNL_TRY(dnnl_primitive_desc_create(&dpd, &bdd, attr, c->eng, fpd));
    if (!note_impl("conv backward data", dpd)) goto unsupported;
    DNNL_TRY(dnnl_dilated_convolution_backward_weights_desc_init(
        &bwd, dnnl_convolution_direct, &any_src, &any_w, bias, &any_dst, strides, dil, pl, pr));
    DNNL_TRY(dnnl_primitive_desc_create(&wpd, &bwd, attr, c->eng, fpd));
    if (!note_impl("conv backward weights", wpd)) goto unsupported;
    k->b_dsrc = *query(dpd, dnnl_query_diff_src_md);
    if (!same_md(query(dpd, dnnl_query_diff_dst_md), &k->b_dst) ||
        !same_md(query(wpd, dnnl_query_src_md), &k->b_src) ||
        !same_md(query(wpd, dnnl_query_diff_dst_md), &k->b_dst))
      goto unsupported;
    const dnnl_memory_desc_t *wd = query(dpd, dnnl_query_weights_md);
    const dnnl_memory_desc_t *ww = query(wpd, dnnl_query_diff_weights_md);
    if (first) {
      c->b_wd = *wd;
      c->b_ww = *ww;
    } else if (!same_md(&c->b_wd, wd) || !same_md(&c->b_ww, ww)) {
      goto unsupported;
    }
    if (scratch_of(dpd) > k->scratch) k->scratch = scratch_of(dpd);
    if (scratch_of(wpd) > k->scratch) k->scratch = scratch_of(wpd);
    DNNL_TRY(dnnl_primitive_create(&k->bwd_d, dpd));
    DNNL_TRY(dnnl_primitive_create(&k->bwd_w, wpd));
  }
  k->src_re = !same_md(&k->p_src, &k->b_src);
  k->dst_re = !same_md(&k->p_dst, &k->b_dst);
  if (k->src_re) DNNL_TRY(make_reorder(c, &k->p_src, &k->b_src, &k->src_in));
  k->dsrc_re = s->training && !same_md(&k->p_src, &k->b_dsrc);
  if (k->dsrc_re) DNNL_TRY(make_reorder(c, &k->b_dsrc, &k->p_src, &k->dsrc_out));
  if (k->dst_re) {
    DNNL_TRY(make_reorder(c, &k->b_dst, &k->p_dst, &k->dst_out));
    if (s->training) DNNL_TRY(make_reorder(c, &k->p_dst, &k->b_dst, &k->ddst_in));
  }
  ok = true;
unsupported:
  if (fpd) dnnl_primitive_desc_destroy(fpd);
  if (dpd) dnnl_primitive_desc_destroy(dpd);
  if (wpd) dnnl_primitive_desc_destroy(wpd);
  return ok;
}

static void free_class(size_class *k) {
  dnnl_primitive_t ps[] = {k->fwd,     k->bwd_d,   k->bwd_w,   k->src_in,
                           k->dst_out, k->ddst_in, k->dsrc_out};
  for (size_t i = 0; i < sizeof ps / sizeof *ps; i++)
    if (ps[i]) dnnl_primitive_destroy(ps[i]);
}

void mdl_dnnl_conv_free(mdl_dnnl_conv *c) {
  if (!c) return;
  for (int i = 0; i < c->n_slots; i++) {
    slot *sl = &c->slots[i];
    if (sl->stream) dnnl_stream_destroy(sl->stream);
  }
  for (int i = 0; i < c->n_cls; i++) free_class(&c->cls[i]);
  if (c->w_in) dnnl_primitive_destroy(c->w_in);
  if (c->wd_in) dnnl_primitive_destroy(c->wd_in);
  if (c->dw_out) dnnl_primitive_destroy(c->dw_out);
  if (c->eng) dnnl_engine_destroy(c->eng);
  free(c);
}

/* oneDNN's direct kernels block channels by 16: with 20 or 50 channels
 * (LeNet) a third of the work is padding and im2col + GEMM wins (measured:
 * LeNet conv2 3.0 + 6.0 ms against 2.6 + 4.1 ms per batch of 64). Inputs of
 * at most 4 channels stay unblocked (first layers). Depthwise has its own
 * kernel. Deterministic, so the same net always takes the same path. */
static bool worth_it(const mdl_dnnl_conv_spec *s) {
  int64_t cg = s->C / s->G, mg = s->M / s->G;
  if (s->G > 1) return (cg == 1 && mg == 1) || (cg % 16 == 0 && mg % 16 == 0);
  double cw = s->C <= 4 ? 1.0 : (double)((s->C + 15) / 16 * 16) / (double)s->C;
  double mw = (double)((s->M + 15) / 16 * 16) / (double)s->M;
  return cw * mw <= 1.15;
}

#define NO_WS ((size_t)-1)

/* Reserves bytes (64-byte aligned) at the end of c's workspace layout. */
static size_t carve(mdl_dnnl_conv *c, size_t bytes) {
  size_t at = c->ws_bytes;
  c->ws_bytes += (bytes + 63) / 64 * 64;
  return at;
}

static void *at_ws(void *ws, size_t off) {
  return off == NO_WS ? NULL : (char *)ws + off;
}

/* Points every buffer at its place in this call's workspace. */
static void bind_ws(mdl_dnnl_conv *c, void *ws) {
  c->w_blk = at_ws(ws, c->o_w);
  c->wd_blk = at_ws(ws, c->o_wd);
  c->dw_plain = at_ws(ws, c->o_dwp);
  for (int i = 0; i < c->n_slots; i++) {
    slot *sl = &c->slots[i];
    sl->src_blk = at_ws(ws, sl->o_src);
    sl->dst_blk = at_ws(ws, sl->o_dst);
    sl->dsrc_blk = at_ws(ws, sl->o_dsrc);
    sl->dw_blk = at_ws(ws, sl->o_dw);
    sl->db = at_ws(ws, sl->o_db);
    sl->scratch = at_ws(ws, sl->o_scratch);
  }
}

size_t mdl_dnnl_conv_ws_bytes(const mdl_dnnl_conv *c) {
  return c->ws_bytes;
}

mdl_dnnl_conv *mdl_dnnl_conv_new(const mdl_dnnl_conv_spec *s) {
  const char *env = getenv("MDL_CONV");
  if (env && strcmp(env, "im2col") == 0) return NULL;
  if (s->N < 1 || s->G < 1 || s->C % s->G || s->M % s->G) return NULL;
  if (!(env && strcmp(env, "onednn") == 0) && !worth_it(s)) return NULL;
  pin_omp(); /* primitives plan their work for the thread count at creation */
  mdl_dnnl_conv *c = mdl_xcalloc(1, sizeof *c);
  c->s = *s;
  dnnl_primitive_attr_t attr = NULL;
  if (dnnl_engine_create(&c->eng, dnnl_cpu, 0) != dnnl_success) {
    c->eng = NULL;
    goto fail;
  }
  if (dnnl_primitive_attr_create(&attr) != dnnl_success) goto fail;
  if (dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) != dnnl_success)
    goto fail;
  dnnl_dims_t bd = {s->M};
  if (dnnl_memory_desc_init_by_tag(&c->bias_md, 1, bd, dnnl_f32, dnnl_x) != dnnl_success) goto fail;
  if (s->G > 1) {
    dnnl_dims_t wd = {s->G, s->M / s->G, s->C / s->G, s->kh, s->kw};
    if (dnnl_memory_desc_init_by_tag(&c->p_w, 5, wd, dnnl_f32, dnnl_goihw) != dnnl_success)
      goto fail;
  } else {
    dnnl_dims_t wd = {s->M, s->C, s->kh, s->kw};
    if (dnnl_memory_desc_init_by_tag(&c->p_w, 4, wd, dnnl_f32, dnnl_oihw) != dnnl_success)
      goto fail;
  }
  /* slots: contiguous slices of per images, a fixed number of them */
  int nt = s->nt < 1 ? 1 : s->nt > 64 ? 64 : s->nt;
  c->per = (s->N + nt - 1) / nt;
  c->n_slots = (int)((s->N + c->per - 1) / c->per);
  int64_t last = s->N - (int64_t)(c->n_slots - 1) * c->per;
  if (!make_class(c, &c->cls[0], c->per, attr, true)) goto fail_cls0;
  c->n_cls = 1;
  if (last != c->per) {
    if (!make_class(c, &c->cls[1], last, attr, false)) {
      free_class(&c->cls[1]);
      goto fail;
    }
    c->n_cls = 2;
  }
  dnnl_primitive_attr_destroy(attr);
  attr = NULL;
  c->w_re = !same_md(&c->p_w, &c->b_w);
  c->o_w = c->o_wd = c->o_dwp = NO_WS;
  if (c->w_re) {
    if (make_reorder(c, &c->p_w, &c->b_w, &c->w_in) != dnnl_success) goto fail;
    c->o_w = carve(c, dnnl_memory_desc_get_size(&c->b_w));
  }
  if (s->training) {
    c->wd_re = !same_md(&c->p_w, &c->b_wd);
    c->ww_re = !same_md(&c->p_w, &c->b_ww);
    if (c->wd_re) {
      if (make_reorder(c, &c->p_w, &c->b_wd, &c->wd_in) != dnnl_success) goto fail;
      c->o_wd = carve(c, dnnl_memory_desc_get_size(&c->b_wd));
    }
    if (c->ww_re) {
      if (make_reorder(c, &c->b_ww, &c->p_w, &c->dw_out) != dnnl_success) goto fail;
      c->o_dwp = carve(c, dnnl_memory_desc_get_size(&c->p_w));
    }
  }
  for (int i = 0; i < c->n_slots; i++) {
    slot *sl = &c->slots[i];
    sl->cls = (i == c->n_slots - 1 && c->n_cls == 2) ? 1 : 0;
    sl->n0 = (int64_t)i * c->per;
    const size_class *k = &c->cls[sl->cls];
    if (dnnl_stream_create(&sl->stream, c->eng, dnnl_stream_default_flags) != dnnl_success) {
      sl->stream = NULL;
      goto fail;
    }
    sl->o_src = k->src_re ? carve(c, dnnl_memory_desc_get_size(&k->b_src)) : NO_WS;
    sl->o_dst = k->dst_re ? carve(c, dnnl_memory_desc_get_size(&k->b_dst)) : NO_WS;
    /* diff_src goes into src_blk (free once dW is done) when it fits the
     * same layout, else into its own buffer */
    sl->o_dsrc = k->dsrc_re && !(k->src_re && same_md(&k->b_src, &k->b_dsrc))
                     ? carve(c, dnnl_memory_desc_get_size(&k->b_dsrc))
                     : NO_WS;
    sl->o_dw = s->training ? carve(c, dnnl_memory_desc_get_size(&c->b_ww)) : NO_WS;
    sl->o_db = s->training && s->bias ? carve(c, (size_t)s->M * sizeof(float)) : NO_WS;
    sl->o_scratch = k->scratch ? carve(c, k->scratch) : NO_WS;
  }
  return c;
fail_cls0:
  free_class(&c->cls[0]);
fail:
  if (attr) dnnl_primitive_attr_destroy(attr);
  mdl_dnnl_conv_free(c);
  return NULL;
}

/* ---- running ------------------------------------------------------------ */

typedef struct run_args {
  mdl_dnnl_conv *c;
  const float *x, *w, *b, *dy;
  float *y, *dx;
  bool want_dx, want_w;
} run_args;

/* A scratchpad memory object for k on sl (NULL when none is needed). */
static dnnl_memory_t scratch_mem(const mdl_dnnl_conv *c, const size_class *k, const slot *sl) {
  if (!k->scratch) return NULL;
  dnnl_memory_desc_t sd;
  dnnl_dims_t dims = {(dnnl_dim_t)k->scratch};
  DNNL_RUN(dnnl_memory_desc_init_by_tag(&sd, 1, dims, dnnl_u8, dnnl_x));
  return mem(c, &sd, sl->scratch);
}

static void fwd_slot(mdl_dnnl_conv *c, const run_args *a, slot *sl) {
  const mdl_dnnl_conv_spec *s = &c->s;
  const size_class *k = &c->cls[sl->cls];
  const float *x = a->x + sl->n0 * s->C * s->H * s->W;
  float *y = a->y + sl->n0 * s->M * s->OH * s->OW;
  const float *src = x;
  if (k->src_re) {
    reorder(c, k->src_in, sl->stream, &k->p_src, x, &k->b_src, sl->src_blk);
    src = sl->src_blk;
  }
  float *dst = k->dst_re ? sl->dst_blk : y;
  dnnl_memory_t ms = mem(c, &k->b_src, src), mw = mem(c, &c->b_w, a->w);
  dnnl_memory_t mb = s->bias ? mem(c, &c->bias_md, a->b) : NULL;
  dnnl_memory_t md = mem(c, &k->b_dst, dst);
  dnnl_memory_t msp = scratch_mem(c, k, sl);
  dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}};
  int n = 3;
  if (mb) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mb};
  if (msp) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, msp};
  exec(k->fwd, sl->stream, n, args);
  dnnl_memory_destroy(ms);
  dnnl_memory_destroy(mw);
  dnnl_memory_destroy(md);
  if (mb) dnnl_memory_destroy(mb);
  if (msp) dnnl_memory_destroy(msp);
  if (k->dst_re) reorder(c, k->dst_out, sl->stream, &k->b_dst, dst, &k->p_dst, y);
  DNNL_RUN(dnnl_stream_wait(sl->stream));
}

static void bwd_slot(mdl_dnnl_conv *c, const run_args *a, slot *sl) {
  const mdl_dnnl_conv_spec *s = &c->s;
  const size_class *k = &c->cls[sl->cls];
  const float *x = a->x + sl->n0 * s->C * s->H * s->W;
  const float *dy = a->dy + sl->n0 * s->M * s->OH * s->OW;
  const float *src = x;
  if (k->src_re && a->want_w) { /* the workspace kept nothing from forward */
    reorder(c, k->src_in, sl->stream, &k->p_src, x, &k->b_src, sl->src_blk);
    src = sl->src_blk;
  }
  const float *ddst = dy;
  if (k->dst_re) {
    reorder(c, k->ddst_in, sl->stream, &k->p_dst, dy, &k->b_dst, sl->dst_blk);
    ddst = sl->dst_blk;
  }
  dnnl_memory_t mdd = mem(c, &k->b_dst, ddst), msp = scratch_mem(c, k, sl);
  if (a->want_w) {
    dnnl_memory_t ms = mem(c, &k->b_src, src), mdw = mem(c, &c->b_ww, sl->dw_blk);
    dnnl_memory_t mdb = s->bias ? mem(c, &c->bias_md, sl->db) : NULL;
    dnnl_exec_arg_t args[5] = {
        {DNNL_ARG_SRC, ms}, {DNNL_ARG_DIFF_DST, mdd}, {DNNL_ARG_DIFF_WEIGHTS, mdw}};
    int n = 3;
    if (mdb) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_BIAS, mdb};
    if (msp) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, msp};
    exec(k->bwd_w, sl->stream, n, args);
    DNNL_RUN(dnnl_stream_wait(sl->stream));
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(mdw);
    if (mdb) dnnl_memory_destroy(mdb);
  }
  if (a->want_dx) {
    float *dx = a->dx + sl->n0 * s->C * s->H * s->W;
    float *dsrc = !k->dsrc_re ? dx : sl->dsrc_blk ? sl->dsrc_blk : sl->src_blk;
    dnnl_memory_t mw = mem(c, &c->b_wd, a->w), mds = mem(c, &k->b_dsrc, dsrc);
    dnnl_exec_arg_t args[4] = {
        {DNNL_ARG_DIFF_DST, mdd}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DIFF_SRC, mds}};
    int n = 3;
    if (msp) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, msp};
    exec(k->bwd_d, sl->stream, n, args);
    dnnl_memory_destroy(mw);
    dnnl_memory_destroy(mds);
    if (k->dsrc_re) reorder(c, k->dsrc_out, sl->stream, &k->b_dsrc, dsrc, &k->p_src, dx);
    DNNL_RUN(dnnl_stream_wait(sl->stream));
  }
  dnnl_memory_destroy(mdd);
  if (msp) dnnl_memory_destroy(msp);
}

/* Slots [lo, hi) each on its own slice (a chunk holds several on one thread). */
static void fwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const run_args *a = arg;
  (void)thread;
  pin_omp();
  for (int64_t i = lo; i < hi; i++) fwd_slot(a->c, a, &a->c->slots[i]);
}

static void bwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const run_args *a = arg;
  (void)thread;
  pin_omp();
  for (int64_t i = lo; i < hi; i++) bwd_slot(a->c, a, &a->c->slots[i]);
}

/* Weights into the chosen layout, on the calling thread's first stream. */
static const float *prepare_weights(mdl_dnnl_conv *c, const float *w) {
  if (!c->w_re) return w;
  pin_omp();
  reorder(c, c->w_in, c->slots[0].stream, &c->p_w, w, &c->b_w, c->w_blk);
  DNNL_RUN(dnnl_stream_wait(c->slots[0].stream));
  return c->w_blk;
}

void mdl_dnnl_conv_forward(mdl_dnnl_conv *c, mdl_threadpool *pool, void *ws, const float *x,
                           const float *w, const float *b, float *y) {
  bind_ws(c, ws);
  run_args a = {c, x, prepare_weights(c, w), b, NULL, y, NULL, false, false};
  mdl_parallel_for(pool, c->n_slots, 1, fwd_task, &a);
}

void mdl_dnnl_conv_backward(mdl_dnnl_conv *c, mdl_threadpool *pool, void *ws, const float *x,
                            const float *w, const float *dy, float *dx, float *dw, float *db) {
  bind_ws(c, ws);
  const float *wd = w;
  if (dx && c->wd_re) {
    pin_omp();
    reorder(c, c->wd_in, c->slots[0].stream, &c->p_w, w, &c->b_wd, c->wd_blk);
    DNNL_RUN(dnnl_stream_wait(c->slots[0].stream));
    wd = c->wd_blk;
  }
  run_args a = {c, x, wd, NULL, dy, NULL, dx, dx != NULL, dw != NULL || db != NULL};
  mdl_parallel_for(pool, c->n_slots, 1, bwd_task, &a);
  if (!a.want_w) return;
  /* partials in slot order */
  const int64_t wcount = c->s.M * (c->s.C / c->s.G) * c->s.kh * c->s.kw;
  for (int i = 0; i < c->n_slots; i++) {
    slot *sl = &c->slots[i];
    if (dw) {
      const float *p = sl->dw_blk;
      if (c->ww_re) {
        pin_omp();
        reorder(c, c->dw_out, c->slots[0].stream, &c->b_ww, sl->dw_blk, &c->p_w, c->dw_plain);
        DNNL_RUN(dnnl_stream_wait(c->slots[0].stream));
        p = c->dw_plain;
      }
      for (int64_t j = 0; j < wcount; j++) dw[j] += p[j];
    }
    if (db && c->s.bias)
      for (int64_t j = 0; j < c->s.M; j++) db[j] += sl->db[j];
  }
}
