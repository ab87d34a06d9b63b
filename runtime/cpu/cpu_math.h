/* CPU numerics used by layers and solvers: GEMM (row-major, as Caffe's
 * caffe_cpu_gemm), vector helpers, im2col/col2im. Owns the choice of GEMM
 * library and its threading (single-threaded library calls spread over the
 * caller's thread pool, so no library thread ever spins); not layers. */
#ifndef MDL_RUNTIME_CPU_MATH_H
#define MDL_RUNTIME_CPU_MATH_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/engine/threadpool.h"

/* C[M x N] = alpha * op(A) * op(B) + beta * C, all row-major; op(A) is M x K
 * (A stored K x M when trans_a), op(B) is K x N (B stored N x K when trans_b).
 * lda/ldb/ldc are row strides. pool may be NULL (one thread). beta == 0
 * ignores C's old contents (NaN included). Large products are split into
 * pieces chosen from the shape alone, so C is the same bits for any pool,
 * NULL included. */
void mdl_gemm_ex(mdl_threadpool *pool, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                 float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                 float *C, int64_t ldc);

/* The same product as one library call on the calling thread, never split:
 * for callers that already run in parallel over a partition of their own
 * fixed by the problem's shape (convolution tiles). Its bits may differ from
 * mdl_gemm_ex's for the same operands. */
void mdl_gemm_single(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                     int64_t ldc);

/* mdl_gemm_ex with packed strides (lda = trans_a ? M : K, and so on). */
void mdl_gemm(mdl_threadpool *pool, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
              float alpha, const float *A, const float *B, float beta, float *C);

/* y = alpha * op(A) * x + beta * y; A is M x N row-major, op(A) = A^T when
 * trans (then x has M entries and y N). */
void mdl_gemv(mdl_threadpool *pool, bool trans, int64_t M, int64_t N, float alpha, const float *A,
              const float *x, float beta, float *y);

/* Which GEMM implementation mdl_gemm uses: "onednn-sgemm" (default) or
 * "openblas" (MDL_GEMM=openblas in the environment). */
const char *mdl_gemm_backend_name(void);

/* Switches the GEMM library for the whole process ("onednn" or "openblas"),
 * for benchmarks. Returns false (and changes nothing) for other names. Not
 * to be called while GEMMs run. */
bool mdl_gemm_select(const char *name);

/* Element-wise helpers; each is threaded over pool for large n. */
void mdl_vset(mdl_threadpool *pool, int64_t n, float value, float *y);
void mdl_vcopy(mdl_threadpool *pool, int64_t n, const float *x, float *y);
void mdl_vaxpy(mdl_threadpool *pool, int64_t n, float alpha, const float *x, float *y);
/* y = alpha * x + beta * y */
void mdl_vaxpby(mdl_threadpool *pool, int64_t n, float alpha, const float *x, float beta, float *y);
void mdl_vscale(mdl_threadpool *pool, int64_t n, float alpha, float *y);
void mdl_vadd(mdl_threadpool *pool, int64_t n, const float *a, const float *b, float *y);
void mdl_vmul(mdl_threadpool *pool, int64_t n, const float *a, const float *b, float *y);
/* Returns sums in double so that results do not depend on thread count
 * beyond rounding of the final conversion: chunks are fixed, not timed. */
double mdl_vdot(mdl_threadpool *pool, int64_t n, const float *x, const float *y);
double mdl_vasum(mdl_threadpool *pool, int64_t n, const float *x);
double mdl_vsum(mdl_threadpool *pool, int64_t n, const float *x);
double mdl_vsumsq(mdl_threadpool *pool, int64_t n, const float *x);

/* Convolution geometry of one image (C x H x W input). */
typedef struct mdl_conv_geom {
  int64_t channels, height, width;
  int64_t kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w;
  int64_t out_h, out_w;
} mdl_conv_geom;

/* Batched im2col: images x[num][C][H][W] (image stride x_stride floats) to
 * col[C*kh*kw][num*out_h*out_w] (row r, column n*out_h*out_w + p), channels
 * [c0, c0 + nc) only (one group). So that one GEMM covers the whole batch. */
void mdl_im2col_batch(mdl_threadpool *pool, const mdl_conv_geom *g, int64_t num, const float *x,
                      int64_t x_stride, int64_t c0, int64_t nc, float *col);

/* The adjoint: accumulates col back into x (x must be zeroed by the caller
 * where it wants a plain sum). */
void mdl_col2im_batch(mdl_threadpool *pool, const mdl_conv_geom *g, int64_t num, const float *col,
                      int64_t c0, int64_t nc, float *x, int64_t x_stride);

#endif
