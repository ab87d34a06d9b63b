/* Convolution and Deconvolution (2 spatial axes), InnerProduct, Embed.
 *
 * Convolution runs as batched im2col + GEMM over tiles of whole images: the
 * batch is cut into tiles of nb images whose column matrix fits a 512 KiB
 * budget (half the L2); each tile is one im2col and ONE GEMM per group,
 * W_g (Mg x Kg) * col (Kg x nb*P). One GEMM over the whole batch was
 * measured slower: oneDNN sgemm on CIFAR-10-quick's conv2 runs at 171
 * GFLOP/s on a one-image 32x256x800 tile and 72 GFLOP/s on the whole-batch
 * 32x25600x800 product, whose 82 MB column matrix streams from memory.
 * Tiles are spread over the pool's threads, each GEMM single-threaded; a
 * batch that is a single tile has its GEMMs split instead. Tile size, the
 * grouping of tiles into gradient partials and the GEMM splits depend on the
 * shapes only (MDL_PAR_CHUNKS slots), so the weights come out the same bits
 * for any thread count. In TRAIN the columns of the forward pass are kept (up
 * to MDL_CONV_CACHE_MB per layer) for the weight gradient. Depthwise convolution (group == channels
 * == num_output) has a direct kernel. Layouts: NCHW; weights (conv_out, conv_in / group, kh, kw) as
 * Caffe. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu/layers_cpu.h"

/* Column tile budget: the L2 of one core on this kind of machine, halved
 * (the GEMM output tile and packed weights share it). MDL_CONV_TILE_KB
 * overrides, for measuring. */
static size_t tile_budget_bytes(void) {
  static size_t cached;
  if (!cached) {
    const char *e = getenv("MDL_CONV_TILE_KB");
    long kb = e ? atol(e) : 0;
    cached = kb > 0 ? (size_t)kb * 1024 : 512 * 1024;
  }
  return cached;
}

typedef struct conv_priv {
  bool deconv, bias, depthwise, one_by_one;
  int64_t num, group;
  mdl_conv_geom g;       /* geometry of the side im2col reads ("im"): conv bottom, deconv top */
  int64_t im_ch, col_ch; /* channels on the im side / on the column ("out") side */
  int64_t im_dim, out_dim, P; /* per-image floats on each side; P = out_h * out_w */
  int64_t Kg, Mg;             /* (im_ch/group)*kh*kw, col_ch/group */
  int64_t nb, tiles;
  int64_t wcount, bcount;
  size_t ws_thread; /* floats of scratch per slot */
  int nt;           /* MDL_PAR_CHUNKS: scratch sets and gradient partials */
  /* TRAIN convolution: the column matrices of the last forward, kept for the
   * weight gradient so backward does not redo im2col; NULL when over the
   * size cap (MDL_CONV_CACHE_MB, default 32 per layer) */
  float *colcache;
  mdl_dnnl_conv *dnnl; /* oneDNN direct convolution when it can run this one */
} conv_priv;

mdl_conv_geom mdl_cpu_im2col_geom(const mdl_window_geom *w, int64_t ch, int64_t h, int64_t wd,
                                  int64_t out_h, int64_t out_w) {
  return (mdl_conv_geom){.channels = ch,
                         .height = h,
                         .width = wd,
                         .kernel_h = w->kh,
                         .kernel_w = w->kw,
                         .pad_h = w->ph,
                         .pad_w = w->pw,
                         .stride_h = w->sh,
                         .stride_w = w->sw,
                         .dilation_h = w->dh,
                         .dilation_w = w->dw,
                         .out_h = out_h,
                         .out_w = out_w};
}

/* The kernels' layout from the shared geometry: tile size, scratch, the
 * oneDNN primitive when it runs this convolution, the column cache. */
static mdl_status conv_setup(mdl_layer *l, mdl_error *err) {
  mdl_convolution_geom cg;
  mdl_status st = mdl_geom_conv(l, &cg, err);
  if (st) return st;
  conv_priv *cp = mdl_xcalloc(1, sizeof *cp);
  l->priv = cp;
  const bool deconv = cg.deconv;
  cp->deconv = deconv;
  cp->bias = cg.bias;
  cp->group = cg.group;
  cp->num = cg.num;
  mdl_conv_geom *g = &cp->g;
  *g = mdl_cpu_im2col_geom(&cg.win, cg.im_ch, cg.im_h, cg.im_w, cg.col_h, cg.col_w);
  cp->im_ch = cg.im_ch;
  cp->col_ch = cg.col_ch;
  cp->P = g->out_h * g->out_w;
  cp->im_dim = cp->im_ch * g->height * g->width;
  cp->out_dim = cp->col_ch * cp->P;
  cp->Kg = cp->im_ch / cp->group * g->kernel_h * g->kernel_w;
  cp->Mg = cp->col_ch / cp->group;
  cp->wcount = cg.wcount;
  cp->bcount = cg.bcount;
  cp->depthwise = !deconv && cp->group == cp->im_ch && cp->col_ch == cp->im_ch && cp->group > 1;
  cp->one_by_one = g->kernel_h == 1 && g->kernel_w == 1 && g->stride_h == 1 && g->stride_w == 1 &&
                   g->pad_h == 0 && g->pad_w == 0;
  cp->nt = mdl_threadpool_slots(l->ctx.pool); /* a constant: scratch and partials per slot */
  /* tile: whole images whose Kg x nb*P column matrix fits the budget */
  size_t per_img = (size_t)cp->Kg * (size_t)cp->P * sizeof(float);
  int64_t nb = per_img ? (int64_t)(tile_budget_bytes() / per_img) : cp->num;
  if (nb < 1) nb = 1;
  int64_t fair = (cp->num + cp->nt - 1) / cp->nt; /* a tile for every slot */
  if (nb > fair) nb = fair;
  if (nb > cp->num) nb = cp->num;
  if (nb < 1) nb = 1;
  cp->nb = nb;
  cp->tiles = (cp->num + nb - 1) / nb;
  /* per thread: col tile, out tile, weight and bias gradient partials */
  cp->ws_thread = ws_round((size_t)(cp->Kg * nb * cp->P)) +
                  ws_round((size_t)(cp->Mg * nb * cp->P)) + ws_round((size_t)cp->wcount) +
                  ws_round((size_t)cp->bcount + 1);
  if (cp->depthwise)
    cp->ws_thread = ws_round((size_t)cp->wcount) + ws_round((size_t)cp->bcount + 1);
  mdl_workspace_reserve(l->ctx.ws, cp->ws_thread * (size_t)cp->nt * sizeof(float));
  if (!deconv && l->n_bottom == 1) {
    mdl_dnnl_conv_spec ds = {cp->num,       cp->im_ch,   g->height,
                             g->width,      cp->col_ch,  g->out_h,
                             g->out_w,      cp->group,   g->kernel_h,
                             g->kernel_w,   g->stride_h, g->stride_w,
                             g->pad_h,      g->pad_w,    g->dilation_h,
                             g->dilation_w, cp->bias,    l->phase == CAFFE__PHASE__TRAIN,
                             cp->nt};
    cp->dnnl = mdl_dnnl_conv_new(&ds);
    if (cp->dnnl) mdl_workspace_reserve(l->ctx.ws, mdl_dnnl_conv_ws_bytes(cp->dnnl));
  }
  if (!cp->dnnl && !deconv && !cp->depthwise && !cp->one_by_one && l->n_bottom == 1 &&
      l->phase == CAFFE__PHASE__TRAIN) {
    const char *e = getenv("MDL_CONV_CACHE_MB");
    double cap_mb = e ? atof(e) : 32;
    int64_t n = cp->group * cp->Kg * cp->num * cp->P;
    if ((double)n * sizeof(float) <= cap_mb * 1048576.0) cp->colcache = mdl_falloc(n);
  }
  return MDL_OK;
}

static void conv_free(mdl_layer *l) {
  conv_priv *cp = l->priv;
  mdl_dnnl_conv_free(cp->dnnl);
  mdl_ffree(cp->colcache);
  free(cp);
}

static mdl_status conv_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  const Caffe__ConvolutionParameter *p = MDL_LAYER_PARAM(
      l, convolution_param, Caffe__ConvolutionParameter, CAFFE__CONVOLUTION_PARAMETER__INIT);
  mdl_status st = mdl_filler_fill(p->weight_filler, &l->param[0], rng, err);
  if (!st && l->n_param > 1) st = mdl_filler_fill(p->bias_filler, &l->param[1], rng, err);
  return st;
}

/* Per-thread scratch of one conv layer. */
typedef struct conv_scratch {
  float *col, *tile, *dw, *db;
} conv_scratch;

static conv_scratch scratch(const mdl_layer *l, int thread) {
  const conv_priv *cp = l->priv;
  float *base = ws_floats(l, cp->ws_thread * (size_t)thread);
  conv_scratch s;
  if (cp->depthwise) {
    s.col = s.tile = NULL;
    s.dw = base;
    s.db = base + ws_round((size_t)cp->wcount);
    return s;
  }
  s.col = base;
  s.tile = s.col + ws_round((size_t)(cp->Kg * cp->nb * cp->P));
  s.dw = s.tile + ws_round((size_t)(cp->Mg * cp->nb * cp->P));
  s.db = s.dw + ws_round((size_t)cp->wcount);
  return s;
}

/* The GEMM operand for "out" side rows [g*Mg, (g+1)*Mg) of images [n0, n0+nb):
 * a direct view (ld P) when nb == 1, else gathered into tile (ld nb*P). */
static const float *gather_out(const conv_priv *cp, const float *out, int64_t n0, int64_t nb,
                               int64_t g, float *tile, int64_t *ld) {
  if (nb == 1) {
    *ld = cp->P;
    return out + n0 * cp->out_dim + g * cp->Mg * cp->P;
  }
  for (int64_t m = 0; m < cp->Mg; m++)
    for (int64_t n = 0; n < nb; n++)
      memcpy(tile + m * nb * cp->P + n * cp->P,
             out + (n0 + n) * cp->out_dim + (g * cp->Mg + m) * cp->P,
             (size_t)cp->P * sizeof(float));
  *ld = nb * cp->P;
  return tile;
}

/* The im2col'd tile for group g (Kg x nb*P, ld returned), or the input itself
 * for 1x1 stride-1 unpadded kernels on one image. */
/* Where the columns of (tile at n0, group g) live in the cache. */
static float *cache_at(const conv_priv *cp, int64_t n0, int64_t nb, int64_t g) {
  return cp->colcache + (n0 * cp->group + g * nb) * cp->Kg * cp->P;
}

static const float *column(const conv_priv *cp, mdl_threadpool *pool, const float *im, int64_t n0,
                           int64_t nb, int64_t g, float *col, int64_t *ld) {
  int64_t cg = cp->im_ch / cp->group;
  if (cp->one_by_one && nb == 1) {
    *ld = cp->P;
    return im + n0 * cp->im_dim + g * cg * cp->P;
  }
  mdl_im2col_batch(pool, &cp->g, nb, im + n0 * cp->im_dim, cp->im_dim, g * cg, cg, col);
  *ld = nb * cp->P;
  return col;
}

/* How a tile's GEMMs run: split over pool (mdl_gemm_ex) when the tiles run
 * one after another, else one library call each, the tiles themselves in
 * parallel. Which one is chosen from the shapes only (run_tiles): the two
 * give different bits. pool also threads im2col/col2im (no sums across
 * threads there). */
typedef struct tile_gemm {
  mdl_threadpool *pool;
  bool split;
} tile_gemm;

static void conv_gemm(tile_gemm tg, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                      const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                      float *C, int64_t ldc) {
  if (tg.split)
    mdl_gemm_ex(tg.pool, ta, tb, M, N, K, 1.f, A, lda, B, ldb, beta, C, ldc);
  else
    mdl_gemm_single(ta, tb, M, N, K, 1.f, A, lda, B, ldb, beta, C, ldc);
}

/* out[n0..n0+nb) = W * im2col(im) (+ bias on the out side when add_bias). */
static void tile_fwd(const mdl_layer *l, tile_gemm tg, const float *im, float *out, int64_t n0,
                     int64_t nb, const conv_scratch *s, bool add_bias) {
  const conv_priv *cp = l->priv;
  const float *W = l->param[0].data;
  for (int64_t g = 0; g < cp->group; g++) {
    int64_t ldc;
    float *dest = cp->colcache && !cp->deconv ? cache_at(cp, n0, nb, g) : s->col;
    const float *col = column(cp, tg.pool, im, n0, nb, g, dest, &ldc);
    if (nb == 1) {
      conv_gemm(tg, false, false, cp->Mg, cp->P, cp->Kg, W + g * cp->Mg * cp->Kg, cp->Kg, col, ldc,
                0.f, out + n0 * cp->out_dim + g * cp->Mg * cp->P, cp->P);
    } else {
      conv_gemm(tg, false, false, cp->Mg, nb * cp->P, cp->Kg, W + g * cp->Mg * cp->Kg, cp->Kg, col,
                ldc, 0.f, s->tile, nb * cp->P);
      for (int64_t m = 0; m < cp->Mg; m++)
        for (int64_t n = 0; n < nb; n++)
          memcpy(out + (n0 + n) * cp->out_dim + (g * cp->Mg + m) * cp->P,
                 s->tile + m * nb * cp->P + n * cp->P, (size_t)cp->P * sizeof(float));
    }
  }
  if (add_bias && cp->bias) {
    const float *bias = l->param[1].data;
    for (int64_t n = n0; n < n0 + nb; n++)
      for (int64_t c = 0; c < cp->col_ch; c++) {
        float *o = out + n * cp->out_dim + c * cp->P;
        const float bv = bias[c];
        for (int64_t p = 0; p < cp->P; p++) o[p] += bv;
      }
  }
}

/* im[n0..n0+nb) = col2im(W^T * out) (+ bias on the im side when add_bias). */
static void tile_bwd_data(const mdl_layer *l, tile_gemm tg, const float *out, float *im, int64_t n0,
                          int64_t nb, const conv_scratch *s, bool add_bias) {
  const conv_priv *cp = l->priv;
  const float *W = l->param[0].data;
  int64_t cg = cp->im_ch / cp->group;
  const int64_t hw = cp->g.height * cp->g.width;
  for (int64_t g = 0; g < cp->group; g++) {
    int64_t ldo;
    const float *o = gather_out(cp, out, n0, nb, g, s->tile, &ldo);
    if (cp->one_by_one && nb == 1) {
      conv_gemm(tg, true, false, cp->Kg, cp->P, cp->Mg, W + g * cp->Mg * cp->Kg, cp->Kg, o, ldo,
                0.f, im + n0 * cp->im_dim + g * cg * cp->P, cp->P);
      continue;
    }
    conv_gemm(tg, true, false, cp->Kg, nb * cp->P, cp->Mg, W + g * cp->Mg * cp->Kg, cp->Kg, o, ldo,
              0.f, s->col, nb * cp->P);
    for (int64_t n = n0; n < n0 + nb; n++)
      memset(im + n * cp->im_dim + g * cg * hw, 0, (size_t)(cg * hw) * sizeof(float));
    mdl_col2im_batch(tg.pool, &cp->g, nb, s->col, g * cg, cg, im + n0 * cp->im_dim, cp->im_dim);
  }
  if (add_bias && cp->bias) {
    const float *bias = l->param[1].data;
    for (int64_t n = n0; n < n0 + nb; n++)
      for (int64_t c = 0; c < cp->im_ch; c++) {
        float *o = im + n * cp->im_dim + c * hw;
        for (int64_t p = 0; p < hw; p++) o[p] += bias[c];
      }
  }
}

/* dw (+)= out_diff * im2col(im)^T over images [n0, n0+nb); beta 0 on a
 * thread's first tile. */
static void tile_wgrad(const mdl_layer *l, const float *im, const float *outd, int64_t n0,
                       int64_t nb, const conv_scratch *s, float *dw, float beta, tile_gemm tg) {
  const conv_priv *cp = l->priv;
  for (int64_t g = 0; g < cp->group; g++) {
    int64_t ldc, ldo;
    const float *col;
    if (cp->colcache) { /* filled by the forward pass */
      col = cache_at(cp, n0, nb, g);
      ldc = nb * cp->P;
    } else {
      col = column(cp, tg.pool, im, n0, nb, g, s->col, &ldc);
    }
    const float *o = gather_out(cp, outd, n0, nb, g, s->tile, &ldo);
    /* dW_g^T (Kg x Mg) = col * dY^T: oneDNN runs this orientation 1.2-1.5x
     * faster than dY * col^T on these shapes; the reduction transposes */
    conv_gemm(tg, false, true, cp->Kg, cp->Mg, nb * cp->P, col, ldc, o, ldo, beta,
              dw + g * cp->Mg * cp->Kg, cp->Mg);
  }
}

/* db (+)= per-channel sums of a diff over images [n0, n0+nb) */
static void tile_bgrad(const float *d, int64_t n0, int64_t nb, int64_t ch, int64_t plane, float *db,
                       bool first) {
  if (first) memset(db, 0, (size_t)ch * sizeof(float));
  for (int64_t n = n0; n < n0 + nb; n++)
    for (int64_t c = 0; c < ch; c++) {
      const float *x = d + (n * ch + c) * plane;
      float acc = 0;
      for (int64_t p = 0; p < plane; p++) acc += x[p];
      db[c] += acc;
    }
}

/* ---- depthwise direct kernel (conv only): one (n, c) plane per task ----- */

typedef struct dw_args {
  const mdl_layer *l;
  const float *x, *dy;
  float *y, *dx;
  bool want_dx, want_dw;
  bool *touched;
} dw_args;

static void dw_fwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const dw_args *a = arg;
  const conv_priv *cp = a->l->priv;
  const mdl_conv_geom *g = &cp->g;
  const float *W = a->l->param[0].data;
  const float *bias = cp->bias ? a->l->param[1].data : NULL;
  const int64_t kk = g->kernel_h * g->kernel_w, hw = g->height * g->width;
  (void)thread;
  for (int64_t t = lo; t < hi; t++) {
    int64_t c = t % cp->im_ch;
    const float *x = a->x + t * hw, *w = W + c * kk;
    float *y = a->y + t * cp->P;
    const float b0 = bias ? bias[c] : 0.f;
    for (int64_t oh = 0; oh < g->out_h; oh++)
      for (int64_t ow = 0; ow < g->out_w; ow++) {
        float acc = b0;
        for (int64_t ki = 0; ki < g->kernel_h; ki++) {
          int64_t ih = oh * g->stride_h - g->pad_h + ki * g->dilation_h;
          if (ih < 0 || ih >= g->height) continue;
          for (int64_t kj = 0; kj < g->kernel_w; kj++) {
            int64_t iw = ow * g->stride_w - g->pad_w + kj * g->dilation_w;
            if (iw < 0 || iw >= g->width) continue;
            acc += w[ki * g->kernel_w + kj] * x[ih * g->width + iw];
          }
        }
        y[oh * g->out_w + ow] = acc;
      }
  }
}

static void dw_bwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const dw_args *a = arg;
  const conv_priv *cp = a->l->priv;
  const mdl_conv_geom *g = &cp->g;
  const float *W = a->l->param[0].data;
  const int64_t kk = g->kernel_h * g->kernel_w, hw = g->height * g->width;
  conv_scratch s = scratch(a->l, thread);
  if (!a->touched[thread]) {
    memset(s.dw, 0, (size_t)cp->wcount * sizeof(float));
    memset(s.db, 0, (size_t)(cp->bcount + 1) * sizeof(float));
    a->touched[thread] = true;
  }
  for (int64_t t = lo; t < hi; t++) {
    int64_t c = t % cp->im_ch;
    const float *x = a->x + t * hw, *w = W + c * kk, *dy = a->dy + t * cp->P;
    float *dx = a->want_dx ? a->dx + t * hw : NULL;
    float *dw = s.dw + c * kk;
    if (dx) memset(dx, 0, (size_t)hw * sizeof(float));
    float bsum = 0;
    for (int64_t oh = 0; oh < g->out_h; oh++)
      for (int64_t ow = 0; ow < g->out_w; ow++) {
        float d = dy[oh * g->out_w + ow];
        bsum += d;
        for (int64_t ki = 0; ki < g->kernel_h; ki++) {
          int64_t ih = oh * g->stride_h - g->pad_h + ki * g->dilation_h;
          if (ih < 0 || ih >= g->height) continue;
          for (int64_t kj = 0; kj < g->kernel_w; kj++) {
            int64_t iw = ow * g->stride_w - g->pad_w + kj * g->dilation_w;
            if (iw < 0 || iw >= g->width) continue;
            dw[ki * g->kernel_w + kj] += d * x[ih * g->width + iw];
            if (dx) dx[ih * g->width + iw] += d * w[ki * g->kernel_w + kj];
          }
        }
      }
    if (cp->bias) s.db[c] += bsum;
  }
}

/* ---- drivers ------------------------------------------------------------ */

typedef struct conv_args {
  const mdl_layer *l;
  const float *src;
  float *dst;
  const float *src2; /* backward: the "out" side diff */
  float *dst2;       /* backward: im side diff */
  tile_gemm gemm;    /* how the GEMMs inside a tile run */
  bool want_dx, want_w;
  bool *touched;
} conv_args;

/* fn over the tiles: in parallel, each GEMM one library call, when there are
 * several tiles; a single tile (a batch of one image, or one that fits the
 * budget whole) runs on this thread with its GEMMs split over the pool. The
 * choice follows the shapes, not the thread count, so the bits do not
 * either; more threads than tiles then idle in this layer. */
static void run_tiles(const conv_priv *cp, mdl_threadpool *pool, mdl_task_fn fn, conv_args *a) {
  a->gemm = (tile_gemm){pool, cp->tiles < 2};
  mdl_parallel_for(a->gemm.split ? NULL : pool, cp->tiles, 1, fn, a);
}

static void fwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const conv_args *a = arg;
  const conv_priv *cp = a->l->priv;
  conv_scratch s = scratch(a->l, thread);
  for (int64_t t = lo; t < hi; t++) {
    int64_t n0 = t * cp->nb, nb = n0 + cp->nb <= cp->num ? cp->nb : cp->num - n0;
    if (cp->deconv)
      tile_bwd_data(a->l, a->gemm, a->src, a->dst, n0, nb, &s, true);
    else
      tile_fwd(a->l, a->gemm, a->src, a->dst, n0, nb, &s, true);
  }
}

static void conv_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  conv_priv *cp = l->priv;
  if (cp->dnnl) {
    mdl_dnnl_conv_forward(cp->dnnl, l->ctx.pool, l->ctx.ws->data, bottom[0]->data, l->param[0].data,
                          cp->bias ? l->param[1].data : NULL, top[0]->data);
    return;
  }
  for (int i = 0; i < l->n_bottom; i++) {
    conv_args a = {l, bottom[i]->data, top[i]->data, NULL, NULL, {0}, false, false, NULL};
    if (cp->depthwise) {
      dw_args d = {l, bottom[i]->data, NULL, top[i]->data, NULL, false, false, NULL};
      mdl_parallel_for(l->ctx.pool, cp->num * cp->im_ch, 1, dw_fwd_task, &d);
    } else {
      run_tiles(cp, l->ctx.pool, fwd_task, &a);
    }
  }
}

/* One tile of backward: weight and bias gradients into the thread's partials
 * (the first tile of a thread overwrites), then the data gradient. */
static void bwd_tile(const conv_args *a, int64_t t, int thread) {
  const mdl_layer *l = a->l;
  const conv_priv *cp = l->priv;
  conv_scratch s = scratch(l, thread);
  int64_t n0 = t * cp->nb, nb = n0 + cp->nb <= cp->num ? cp->nb : cp->num - n0;
  bool first = !a->touched[thread];
  a->touched[thread] = true;
  /* conv: im = bottom data, out diff = top diff; deconv: im = top diff,
   * out = bottom data */
  if (a->want_w) {
    if (cp->deconv)
      tile_wgrad(l, a->src2, a->src, n0, nb, &s, s.dw, first ? 0.f : 1.f, a->gemm);
    else
      tile_wgrad(l, a->src, a->src2, n0, nb, &s, s.dw, first ? 0.f : 1.f, a->gemm);
  }
  if (cp->bias) {
    if (cp->deconv)
      tile_bgrad(a->src2, n0, nb, cp->im_ch, cp->g.height * cp->g.width, s.db, first);
    else
      tile_bgrad(a->src2, n0, nb, cp->col_ch, cp->P, s.db, first);
  }
  if (a->want_dx) {
    if (cp->deconv)
      tile_fwd(l, a->gemm, a->src2, a->dst2, n0, nb, &s, false);
    else
      tile_bwd_data(l, a->gemm, a->src2, a->dst2, n0, nb, &s, false);
  }
}

static void bwd_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const conv_args *a = arg;
  for (int64_t t = lo; t < hi; t++) bwd_tile(a, t, thread);
}

static void conv_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                          mdl_tensor *const *bottom) {
  conv_priv *cp = l->priv;
  bool want_w = l->param[0].diff != NULL;
  if (cp->dnnl && l->phase == CAFFE__PHASE__TRAIN) {
    mdl_dnnl_conv_backward(cp->dnnl, l->ctx.pool, l->ctx.ws->data, bottom[0]->data,
                           l->param[0].data, top[0]->diff, pd[0] ? bottom[0]->diff : NULL,
                           l->param[0].diff, cp->bias ? l->param[1].diff : NULL);
    return;
  }
  for (int i = 0; i < l->n_bottom; i++) {
    bool touched[MDL_PAR_CHUNKS] = {false}; /* per slot */
    if (cp->depthwise) {
      dw_args d = {l, bottom[i]->data, top[i]->diff, NULL, bottom[i]->diff, pd[i], want_w, touched};
      mdl_parallel_for(l->ctx.pool, cp->num * cp->im_ch, 1, dw_bwd_task, &d);
    } else {
      conv_args a = {l,   bottom[i]->data, NULL,   top[i]->diff, bottom[i]->diff,
                     {0}, pd[i],           want_w, touched};
      run_tiles(cp, l->ctx.pool, bwd_task, &a);
    }
    /* reduce the per-slot partials in slot order (transposed per group for
     * the GEMM path) */
    for (int t = 0; t < cp->nt; t++) {
      if (!touched[t]) continue;
      conv_scratch s = scratch(l, t);
      if (want_w && cp->depthwise) {
        mdl_vaxpy(NULL, cp->wcount, 1.f, s.dw, l->param[0].diff);
      } else if (want_w) {
        for (int64_t g = 0; g < cp->group; g++) {
          const float *src = s.dw + g * cp->Mg * cp->Kg;
          float *dst = l->param[0].diff + g * cp->Mg * cp->Kg;
          for (int64_t m = 0; m < cp->Mg; m++)
            for (int64_t k = 0; k < cp->Kg; k++) dst[m * cp->Kg + k] += src[k * cp->Mg + m];
        }
      }
      if (cp->bias && l->param[1].diff) mdl_vaxpy(NULL, cp->bcount, 1.f, s.db, l->param[1].diff);
    }
  }
}

const mdl_layer_impl mdl_cpu_conv_layer = {"Convolution", conv_setup,    conv_init,
                                           conv_forward,  conv_backward, conv_free};
const mdl_layer_impl mdl_cpu_deconv_layer = {"Deconvolution", conv_setup,    conv_init,
                                             conv_forward,    conv_backward, conv_free};

/* ---- InnerProduct: top (M x N) = bottom (M x K) * W^T + b --------------- */
/* W is N x K, or K x N with transpose: true. */

typedef mdl_ip_geom ip_priv;

static mdl_status ip_setup(mdl_layer *l, mdl_error *err) {
  ip_priv *ip = mdl_xcalloc(1, sizeof *ip);
  l->priv = ip;
  return mdl_geom_ip(l, ip, err);
}

static mdl_status ip_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  const Caffe__InnerProductParameter *p = MDL_LAYER_PARAM(
      l, inner_product_param, Caffe__InnerProductParameter, CAFFE__INNER_PRODUCT_PARAMETER__INIT);
  mdl_status st = mdl_filler_fill(p->weight_filler, &l->param[0], rng, err);
  if (!st && l->n_param > 1) st = mdl_filler_fill(p->bias_filler, &l->param[1], rng, err);
  return st;
}

static void ip_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  ip_priv *ip = l->priv;
  float *y = top[0]->data;
  mdl_gemm(l->ctx.pool, false, !ip->transpose, ip->M, ip->N, ip->K, 1.f, bottom[0]->data,
           l->param[0].data, 0.f, y);
  if (ip->bias) {
    const float *b = l->param[1].data;
    for (int64_t m = 0; m < ip->M; m++)
      for (int64_t n = 0; n < ip->N; n++) y[m * ip->N + n] += b[n];
  }
}

static void ip_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                        mdl_tensor *const *bottom) {
  ip_priv *ip = l->priv;
  const float *dy = top[0]->diff;
  if (l->param[0].diff) {
    if (ip->transpose) /* dW (K x N) += X^T dY */
      mdl_gemm(l->ctx.pool, true, false, ip->K, ip->N, ip->M, 1.f, bottom[0]->data, dy, 1.f,
               l->param[0].diff);
    else /* dW (N x K) += dY^T X */
      mdl_gemm(l->ctx.pool, true, false, ip->N, ip->K, ip->M, 1.f, dy, bottom[0]->data, 1.f,
               l->param[0].diff);
  }
  if (ip->bias && l->param[1].diff) {
    float *db = l->param[1].diff;
    for (int64_t m = 0; m < ip->M; m++)
      for (int64_t n = 0; n < ip->N; n++) db[n] += dy[m * ip->N + n];
  }
  if (pd[0])
    mdl_gemm(l->ctx.pool, false, ip->transpose, ip->M, ip->K, ip->N, 1.f, dy, l->param[0].data, 0.f,
             bottom[0]->diff);
}

const mdl_layer_impl mdl_cpu_inner_product_layer = {"InnerProduct", ip_setup,    ip_init,
                                                    ip_forward,     ip_backward, NULL};

/* ---- Embed: top[..., :] = W[index] + b; indices get no gradient --------- */

typedef struct embed_priv {
  int64_t count, N, input_dim;
  bool bias;
} embed_priv;

static mdl_status embed_setup(mdl_layer *l, mdl_error *err) {
  const Caffe__EmbedParameter *p =
      MDL_LAYER_PARAM(l, embed_param, Caffe__EmbedParameter, CAFFE__EMBED_PARAMETER__INIT);
  embed_priv *ep = mdl_xcalloc(1, sizeof *ep);
  l->priv = ep;
  ep->count = mdl_shape_count_axes(&l->bottom_shape[0], 0, l->bottom_shape[0].n);
  ep->N = p->num_output;
  ep->input_dim = p->input_dim;
  ep->bias = p->bias_term;
  if (l->n_param < 1 || l->param[0].count != ep->N * ep->input_dim)
    return MDL_LAYER_ERR(l, err, "weight blob size disagrees with input_dim x num_output");
  return MDL_OK;
}

static mdl_status embed_init(mdl_layer *l, mdl_rng *rng, mdl_error *err) {
  const Caffe__EmbedParameter *p =
      MDL_LAYER_PARAM(l, embed_param, Caffe__EmbedParameter, CAFFE__EMBED_PARAMETER__INIT);
  mdl_status st = mdl_filler_fill(p->weight_filler, &l->param[0], rng, err);
  if (!st && l->n_param > 1) st = mdl_filler_fill(p->bias_filler, &l->param[1], rng, err);
  return st;
}

/* Out-of-range indices give zero rows (forward cannot fail; the data
 * pipeline validates labels). */
static int64_t embed_index(const embed_priv *ep, float v) {
  int64_t i = (int64_t)v;
  return (v >= 0.f && i < ep->input_dim && (float)i == v) ? i : -1;
}

static void embed_forward(mdl_layer *l, mdl_tensor *const *bottom, mdl_tensor *const *top) {
  embed_priv *ep = l->priv;
  for (int64_t i = 0; i < ep->count; i++) {
    float *y = top[0]->data + i * ep->N;
    int64_t k = embed_index(ep, bottom[0]->data[i]);
    if (k < 0) {
      /* bad data (Caffe stops): reported by the net after this forward */
      int64_t per_item = l->bottom_shape[0].n && l->bottom_shape[0].d[0] > 0
                             ? ep->count / l->bottom_shape[0].d[0]
                             : 1;
      mdl_layer_fault_set(l, i / (per_item ? per_item : 1),
                          "index %g is not a whole number in 0..%lld (input_dim %lld)",
                          (double)bottom[0]->data[i], (long long)(ep->input_dim - 1),
                          (long long)ep->input_dim);
      memset(y, 0, (size_t)ep->N * sizeof(float));
    } else {
      memcpy(y, l->param[0].data + k * ep->N, (size_t)ep->N * sizeof(float));
    }
    if (ep->bias)
      for (int64_t n = 0; n < ep->N; n++) y[n] += l->param[1].data[n];
  }
}

static void embed_backward(mdl_layer *l, mdl_tensor *const *top, const bool *pd,
                           mdl_tensor *const *bottom) {
  embed_priv *ep = l->priv;
  (void)pd;
  for (int64_t i = 0; i < ep->count; i++) {
    const float *dy = top[0]->diff + i * ep->N;
    int64_t k = embed_index(ep, bottom[0]->data[i]);
    if (k >= 0 && l->param[0].diff)
      for (int64_t n = 0; n < ep->N; n++) l->param[0].diff[k * ep->N + n] += dy[n];
    if (ep->bias && l->param[1].diff)
      for (int64_t n = 0; n < ep->N; n++) l->param[1].diff[n] += dy[n];
  }
}

const mdl_layer_impl mdl_cpu_embed_layer = {"Embed",       embed_setup,    embed_init,
                                            embed_forward, embed_backward, NULL};
