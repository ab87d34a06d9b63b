/* CPU numerics: GEMM on oneDNN's single-threaded sgemm (AVX-512 JIT), spread
 * over memdl's own thread pool so no OpenMP or OpenBLAS thread ever spins;
 * vector helpers with fixed reduction order; batched im2col/col2im. Every
 * split here depends on the problem's shape, never on the thread count, so
 * results are the same bits on any number of cores.
 *
 * Why oneDNN: OpenBLAS 0.3.21 is pinned to its AVX2 kernels here
 * (OPENBLAS_CORETYPE=Haswell must stay set). Measured on the 2-core Zen 5 VM,
 * one thread, thread CPU time, GFLOP/s (bench_layers --gemm --cpu-time):
 *                                      oneDNN  OpenBLAS
 *   LeNet conv2 fwd, 1 image  50x64x500    143      59
 *   LeNet conv2 fwd, batch   50x4096x500   142      64
 *   LeNet conv2 dW          50x500x4096    100      58
 *   LeNet conv2 dX        500x4096x50 (T)  147      73
 *   LeNet ip1 fwd          64x500x800 (T)  133      68
 *   CIFAR conv2, 1 image    32x256x800     171      68
 *   CIFAR conv2, batch    32x25600x800      72      59
 *   square 1024                            148      83
 * Whole-batch column matrices that overflow L2 halve oneDNN's rate (the
 * CIFAR row), which is why convolution tiles the batch (layers_conv.c).
 * Own AVX-512 kernels were not written: oneDNN already reaches 65-80% of the
 * 221 GFLOP/s per-core FMA peak on these shapes. MDL_GEMM=openblas switches. */
#include "runtime/cpu/cpu_math.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>

/* ---- GEMM backend choice ------------------------------------------------ */

enum { GEMM_DNNL, GEMM_OPENBLAS };
static int gemm_backend = -1;

extern void openblas_set_num_threads(int);

static int backend(void) {
  int b = __atomic_load_n(&gemm_backend, __ATOMIC_RELAXED);
  if (b >= 0) return b;
  const char *env = getenv("MDL_GEMM");
  b = env && strcmp(env, "openblas") == 0 ? GEMM_OPENBLAS : GEMM_DNNL;
  if (b == GEMM_OPENBLAS) openblas_set_num_threads(1);
  __atomic_store_n(&gemm_backend, b, __ATOMIC_RELAXED);
  return b;
}

bool mdl_gemm_select(const char *name) {
  int b;
  if (!strcmp(name, "onednn"))
    b = GEMM_DNNL;
  else if (!strcmp(name, "openblas"))
    b = GEMM_OPENBLAS;
  else
    return false;
  if (b == GEMM_OPENBLAS) openblas_set_num_threads(1);
  __atomic_store_n(&gemm_backend, b, __ATOMIC_RELAXED);
  return true;
}

const char *mdl_gemm_backend_name(void) {
  return backend() == GEMM_DNNL ? "onednn-sgemm" : "openblas";
}

/* oneDNN runs OpenMP inside each call; one thread per call from each of our
 * pool threads keeps libgomp from starting (spinning) teams of its own. */
static _Thread_local int omp_pinned;

void mdl_gemm_single(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t i = 0; i < M; i++) {
      float *c = C + i * ldc;
      if (beta == 0.f)
        memset(c, 0, (size_t)N * sizeof(float));
      else
        for (int64_t j = 0; j < N; j++) c[j] *= beta;
    }
    return;
  }
  if (backend() == GEMM_DNNL) {
    if (!omp_pinned) {
      omp_set_num_threads(1);
      omp_pinned = 1;
    }
    dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  } else {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
  }
}

typedef struct gemm_job {
  bool ta, tb, split_n;
  int64_t M, N, K, lda, ldb, ldc, chunk;
  float alpha, beta;
  const float *A, *B;
  float *C;
} gemm_job;

/* columns [b, e) of op(B) and C, or rows [b, e) of op(A) and C */
static void gemm_piece(const gemm_job *j, int64_t b, int64_t e) {
  if (j->split_n) {
    const float *B = j->tb ? j->B + b * j->ldb : j->B + b;
    mdl_gemm_single(j->ta, j->tb, j->M, e - b, j->K, j->alpha, j->A, j->lda, B, j->ldb, j->beta,
                    j->C + b, j->ldc);
  } else {
    const float *A = j->ta ? j->A + b : j->A + b * j->lda;
    mdl_gemm_single(j->ta, j->tb, e - b, j->N, j->K, j->alpha, A, j->lda, j->B, j->ldb, j->beta,
                    j->C + b * j->ldc, j->ldc);
  }
}

/* a chunk may hold several pieces (one thread, or a nested call): each is
 * still its own library call, so C's bits never depend on the chunking */
static void gemm_task(void *arg, int64_t b, int64_t e, int slot) {
  const gemm_job *j = arg;
  (void)slot;
  for (int64_t s = b; s < e; s += j->chunk) gemm_piece(j, s, s + j->chunk < e ? s + j->chunk : e);
}

/* The split depends on the shape only, so the bits of C are the same for any
 * thread count (the library's own blocking follows the piece's shape): the
 * larger of M and N is cut into GEMM_PIECES pieces, multiples of 16 (one
 * AVX-512 vector of C), at least 64 columns or 16 rows wide. 4 pieces keep
 * both threads of a 2-core machine busy with one piece of slack each
 * (narrower GEMMs lose efficiency faster than finer load balance gains); one
 * thread runs the same pieces in turn. Small products are one call. */
#define GEMM_PIECES 4
#define GEMM_MIN_FLOPS 4e6

void mdl_gemm_ex(mdl_threadpool *pool, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                 float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                 float *C, int64_t ldc) {
  double flops = 2.0 * (double)M * (double)N * (double)K;
  gemm_job j = {trans_a, trans_b, N >= M, M, N, K, lda, ldb, ldc, 0, alpha, beta, A, B, C};
  int64_t len = j.split_n ? N : M;
  int64_t min_piece = j.split_n ? 64 : 16;
  if (flops < GEMM_MIN_FLOPS || len < 2 * min_piece) {
    mdl_gemm_single(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  int64_t piece = (len + GEMM_PIECES - 1) / GEMM_PIECES;
  piece = (piece + 15) / 16 * 16;
  if (piece < min_piece) piece = min_piece;
  j.chunk = piece;
  mdl_parallel_for(pool, len, piece, gemm_task, &j);
}

void mdl_gemm(mdl_threadpool *pool, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
              float alpha, const float *A, const float *B, float beta, float *C) {
  mdl_gemm_ex(pool, trans_a, trans_b, M, N, K, alpha, A, trans_a ? M : K, B, trans_b ? K : N, beta,
              C, N);
}

void mdl_gemv(mdl_threadpool *pool, bool trans, int64_t M, int64_t N, float alpha, const float *A,
              const float *x, float beta, float *y) {
  /* y (rows of op(A)) as a GEMM with one column: (op(A)) * x */
  int64_t rows = trans ? N : M, cols = trans ? M : N;
  (void)cols;
  if (!trans) {
    mdl_gemm_ex(pool, false, false, M, 1, N, alpha, A, N, x, 1, beta, y, 1);
  } else {
    /* y^T (1 x N) = x^T (1 x M) * A (M x N) */
    mdl_gemm_ex(pool, false, false, 1, N, M, alpha, x, M, A, N, beta, y, N);
  }
  (void)rows;
}

/* ---- element-wise ------------------------------------------------------- */

#define EW_GRAIN 65536 /* below this a fork-join (~15 us) costs more than it saves */

typedef struct ew_job {
  float a, b;
  const float *x, *y2;
  float *y;
} ew_job;

#define EW_TASK(name, body)                                         \
  static void name(void *arg, int64_t lo, int64_t hi, int thread) { \
    const ew_job *j = arg;                                          \
    (void)thread;                                                   \
    const float *restrict x = j->x, *restrict x2 = j->y2;           \
    float *restrict y = j->y;                                       \
    const float a = j->a, b = j->b;                                 \
    (void)x, (void)x2, (void)a, (void)b;                            \
    for (int64_t i = lo; i < hi; i++) body;                         \
  }

EW_TASK(t_set, y[i] = a)
EW_TASK(t_copy, y[i] = x[i])
EW_TASK(t_axpy, y[i] += a * x[i])
EW_TASK(t_axpby, y[i] = a * x[i] + b * y[i])
EW_TASK(t_scale, y[i] *= a)
EW_TASK(t_add, y[i] = x[i] + x2[i])
EW_TASK(t_mul, y[i] = x[i] * x2[i])

void mdl_vset(mdl_threadpool *pool, int64_t n, float value, float *y) {
  ew_job j = {value, 0, NULL, NULL, y};
  mdl_parallel_for(pool, n, EW_GRAIN, t_set, &j);
}
void mdl_vcopy(mdl_threadpool *pool, int64_t n, const float *x, float *y) {
  if (x == y) return;
  ew_job j = {0, 0, x, NULL, y};
  mdl_parallel_for(pool, n, EW_GRAIN, t_copy, &j);
}
void mdl_vaxpy(mdl_threadpool *pool, int64_t n, float alpha, const float *x, float *y) {
  ew_job j = {alpha, 0, x, NULL, y};
  mdl_parallel_for(pool, n, EW_GRAIN, t_axpy, &j);
}
void mdl_vaxpby(mdl_threadpool *pool, int64_t n, float alpha, const float *x, float beta,
                float *y) {
  ew_job j = {alpha, beta, x, NULL, y};
  mdl_parallel_for(pool, n, EW_GRAIN, t_axpby, &j);
}
void mdl_vscale(mdl_threadpool *pool, int64_t n, float alpha, float *y) {
  ew_job j = {alpha, 0, NULL, NULL, y};
  mdl_parallel_for(pool, n, EW_GRAIN, t_scale, &j);
}
void mdl_vadd(mdl_threadpool *pool, int64_t n, const float *a, const float *b, float *y) {
  ew_job j = {0, 0, a, b, y};
  mdl_parallel_for(pool, n, EW_GRAIN, t_add, &j);
}
void mdl_vmul(mdl_threadpool *pool, int64_t n, const float *a, const float *b, float *y) {
  ew_job j = {0, 0, a, b, y};
  mdl_parallel_for(pool, n, EW_GRAIN, t_mul, &j);
}

/* Reductions: fixed blocks of RED_BLOCK elements, each summed in float lanes
 * then in double, block partials added in block order, so the result is the
 * same whatever the thread count. */
#define RED_BLOCK 8192

enum { R_DOT, R_ASUM, R_SUM, R_SUMSQ };
typedef struct red_job {
  int op;
  int64_t n;
  const float *x, *y;
  double *part;
} red_job;

static void red_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const red_job *j = arg;
  (void)thread;
  for (int64_t b = lo; b < hi; b++) {
    int64_t s = b * RED_BLOCK, e = s + RED_BLOCK < j->n ? s + RED_BLOCK : j->n;
    const float *restrict x = j->x, *restrict y = j->y;
    float acc[16] = {0};
    int64_t i = s;
    switch (j->op) {
      case R_DOT:
        for (; i + 16 <= e; i += 16)
          for (int k = 0; k < 16; k++) acc[k] += x[i + k] * y[i + k];
        for (; i < e; i++) acc[0] += x[i] * y[i];
        break;
      case R_ASUM:
        for (; i + 16 <= e; i += 16)
          for (int k = 0; k < 16; k++) acc[k] += fabsf(x[i + k]);
        for (; i < e; i++) acc[0] += fabsf(x[i]);
        break;
      case R_SUM:
        for (; i + 16 <= e; i += 16)
          for (int k = 0; k < 16; k++) acc[k] += x[i + k];
        for (; i < e; i++) acc[0] += x[i];
        break;
      default:
        for (; i + 16 <= e; i += 16)
          for (int k = 0; k < 16; k++) acc[k] += x[i + k] * x[i + k];
        for (; i < e; i++) acc[0] += x[i] * x[i];
        break;
    }
    double t = 0;
    for (int k = 0; k < 16; k++) t += acc[k];
    j->part[b] = t;
  }
}

static double reduce(mdl_threadpool *pool, int op, int64_t n, const float *x, const float *y) {
  if (n <= 0) return 0;
  int64_t nb = (n + RED_BLOCK - 1) / RED_BLOCK;
  double stack[64];
  double *part = nb <= 64 ? stack : mdl_xmalloc((size_t)nb * sizeof(double));
  red_job j = {op, n, x, y, part};
  mdl_parallel_for(pool, nb, 4, red_task, &j);
  double s = 0;
  for (int64_t b = 0; b < nb; b++) s += part[b];
  if (part != stack) free(part);
  return s;
}

double mdl_vdot(mdl_threadpool *pool, int64_t n, const float *x, const float *y) {
  return reduce(pool, R_DOT, n, x, y);
}
double mdl_vasum(mdl_threadpool *pool, int64_t n, const float *x) {
  return reduce(pool, R_ASUM, n, x, NULL);
}
double mdl_vsum(mdl_threadpool *pool, int64_t n, const float *x) {
  return reduce(pool, R_SUM, n, x, NULL);
}
double mdl_vsumsq(mdl_threadpool *pool, int64_t n, const float *x) {
  return reduce(pool, R_SUMSQ, n, x, NULL);
}

/* ---- im2col / col2im ---------------------------------------------------- */

typedef struct col_job {
  const mdl_conv_geom *g;
  int64_t num, c0, nc, x_stride;
  const float *x;
  float *col;
  const float *ccol;
  float *xo;
} col_job;

/* Valid output range [lo, hi) of an output axis for kernel offset k: the
 * positions whose input index o*stride - pad + k*dil lies in [0, size). */
static void valid_range(int64_t out, int64_t size, int64_t stride, int64_t pad, int64_t off,
                        int64_t *lo, int64_t *hi) {
  /* o*stride + (off - pad) >= 0  and  < size */
  int64_t base = off - pad;
  int64_t l = base >= 0 ? 0 : (-base + stride - 1) / stride;
  int64_t h = size - base <= 0 ? 0 : (size - base + stride - 1) / stride;
  if (h > out) h = out;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

/* One output row of a column row: zeros where the window hangs over the
 * padding, the input elsewhere (unit stride). */
static inline void copy_row_s1(float *restrict d, const float *restrict s, int64_t ow0, int64_t ow1,
                               int64_t OW) {
  for (int64_t i = 0; i < ow0; i++) d[i] = 0.f;
  for (int64_t i = ow0; i < ow1; i++) d[i] = s[i];
  for (int64_t i = ow1; i < OW; i++) d[i] = 0.f;
}

static inline void copy_row_strided(float *restrict d, const float *restrict s, int64_t ow0,
                                    int64_t ow1, int64_t OW, int64_t sw) {
  for (int64_t i = 0; i < ow0; i++) d[i] = 0.f;
  for (int64_t i = ow0; i < ow1; i++) d[i] = s[i * sw];
  for (int64_t i = ow1; i < OW; i++) d[i] = 0.f;
}

/* task = one row (c, ki, kj) of col for all images */
static void im2col_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const col_job *j = arg;
  const mdl_conv_geom *g = j->g;
  (void)thread;
  const int64_t kk = g->kernel_h * g->kernel_w, P = g->out_h * g->out_w, OW = g->out_w;
  const int64_t W = g->width, plane = g->height * g->width, hstep = g->stride_h * W;
  const int64_t sw = g->stride_w, num = j->num;
  for (int64_t r = lo; r < hi; r++) {
    const int64_t c = r / kk, ki = (r % kk) / g->kernel_w, kj = r % g->kernel_w;
    int64_t oh0, oh1, ow0, ow1;
    valid_range(g->out_h, g->height, g->stride_h, g->pad_h, ki * g->dilation_h, &oh0, &oh1);
    valid_range(OW, W, sw, g->pad_w, kj * g->dilation_w, &ow0, &ow1);
    /* input offset of output (oh0, 0) of this row within a plane */
    const int64_t off =
        (oh0 * g->stride_h - g->pad_h + ki * g->dilation_h) * W + kj * g->dilation_w - g->pad_w;
    const float *src0 = j->x + (j->c0 + c) * plane + off;
    float *dst0 = j->col + r * (num * P);
    for (int64_t n = 0; n < num; n++) {
      float *restrict d = dst0 + n * P;
      const float *restrict s = src0 + n * j->x_stride;
      for (int64_t i = 0; i < oh0 * OW; i++) d[i] = 0.f;
      d += oh0 * OW;
      if (sw == 1)
        for (int64_t oh = oh0; oh < oh1; oh++, d += OW, s += hstep) copy_row_s1(d, s, ow0, ow1, OW);
      else
        for (int64_t oh = oh0; oh < oh1; oh++, d += OW, s += hstep)
          copy_row_strided(d, s, ow0, ow1, OW, sw);
      for (int64_t i = 0; i < (g->out_h - oh1) * OW; i++) d[i] = 0.f;
    }
  }
}

void mdl_im2col_batch(mdl_threadpool *pool, const mdl_conv_geom *g, int64_t num, const float *x,
                      int64_t x_stride, int64_t c0, int64_t nc, float *col) {
  col_job j = {g, num, c0, nc, x_stride, x, col, NULL, NULL};
  int64_t rows = nc * g->kernel_h * g->kernel_w;
  int64_t per_row = num * g->out_h * g->out_w;
  int64_t grain = per_row >= 4096 ? 1 : (4096 + per_row - 1) / per_row;
  mdl_parallel_for(pool, rows, grain, im2col_task, &j);
}

/* task = one (image, channel) plane of x: the rows of that channel add into
 * it, so tasks never write the same memory */
static void col2im_task(void *arg, int64_t lo, int64_t hi, int thread) {
  const col_job *j = arg;
  const mdl_conv_geom *g = j->g;
  (void)thread;
  const int64_t kk = g->kernel_h * g->kernel_w, P = g->out_h * g->out_w, OW = g->out_w;
  const int64_t W = g->width, hstep = g->stride_h * W, sw = g->stride_w;
  const int64_t row_stride = j->num * P;
  for (int64_t t = lo; t < hi; t++) {
    const int64_t n = t / j->nc, c = t % j->nc;
    float *img = j->xo + n * j->x_stride + (j->c0 + c) * g->height * W;
    const float *col_c = j->ccol + c * kk * row_stride + n * P;
    for (int64_t k = 0; k < kk; k++) {
      const int64_t ki = k / g->kernel_w, kj = k % g->kernel_w;
      int64_t oh0, oh1, ow0, ow1;
      valid_range(g->out_h, g->height, g->stride_h, g->pad_h, ki * g->dilation_h, &oh0, &oh1);
      valid_range(OW, W, sw, g->pad_w, kj * g->dilation_w, &ow0, &ow1);
      float *restrict d = img + (oh0 * g->stride_h - g->pad_h + ki * g->dilation_h) * W +
                          kj * g->dilation_w - g->pad_w;
      const float *restrict s = col_c + k * row_stride + oh0 * OW;
      if (sw == 1)
        for (int64_t oh = oh0; oh < oh1; oh++, d += hstep, s += OW)
          for (int64_t ow = ow0; ow < ow1; ow++) d[ow] += s[ow];
      else
        for (int64_t oh = oh0; oh < oh1; oh++, d += hstep, s += OW)
          for (int64_t ow = ow0; ow < ow1; ow++) d[ow * sw] += s[ow];
    }
  }
}

void mdl_col2im_batch(mdl_threadpool *pool, const mdl_conv_geom *g, int64_t num, const float *col,
                      int64_t c0, int64_t nc, float *x, int64_t x_stride) {
  col_job j = {g, num, c0, nc, x_stride, NULL, NULL, col, x};
  int64_t work = g->kernel_h * g->kernel_w * g->out_h * g->out_w;
  int64_t grain = work >= 4096 ? 1 : (4096 + work - 1) / work;
  mdl_parallel_for(pool, num * nc, grain, col2im_task, &j);
}
