/* The numeric plumbing under the layers: GEMM (every transpose, strides,
 * threads, both libraries), GEMM and reductions independent of thread count,
 * im2col/col2im adjointness, the thread pool, tensors. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu/cpu_math.h"
#include "runtime/engine/filler.h"
#include "runtime/engine/tensor.h"
#include "runtime/engine/threadpool.h"

static void fill(float *x, int64_t n, uint64_t seed) {
  mdl_rng r;
  mdl_rng_init(&r, seed);
  for (int64_t i = 0; i < n; i++) x[i] = mdl_rng_uniform(&r, -1.f, 1.f);
}

static void naive_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, const float *B, float beta, float *C) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double s = 0;
      for (int64_t k = 0; k < K; k++)
        s += (double)(ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
      C[i * N + j] = (float)(alpha * s + (beta == 0 ? 0 : beta * C[i * N + j]));
    }
}

static void gemm_case(mdl_threadpool *pool, int64_t M, int64_t N, int64_t K) {
  for (int t = 0; t < 4; t++) {
    bool ta = t & 1, tb = t & 2;
    float *A = malloc((size_t)(M * K) * 4), *B = malloc((size_t)(K * N) * 4);
    float *C = malloc((size_t)(M * N) * 4), *R = malloc((size_t)(M * N) * 4);
    fill(A, M * K, 1), fill(B, K * N, 2), fill(C, M * N, 3);
    memcpy(R, C, (size_t)(M * N) * 4);
    naive_gemm(ta, tb, M, N, K, 0.7f, A, B, 0.3f, R);
    mdl_gemm(pool, ta, tb, M, N, K, 0.7f, A, B, 0.3f, C);
    for (int64_t i = 0; i < M * N; i++)
      cr_assert(fabsf(C[i] - R[i]) < 1e-4f * (1 + sqrtf((float)K)),
                "%s M%lld N%lld K%lld t%d [%lld] %g vs %g", mdl_gemm_backend_name(), (long long)M,
                (long long)N, (long long)K, t, (long long)i, C[i], R[i]);
    /* beta 0 ignores NaN in C */
    for (int64_t i = 0; i < M * N; i++) C[i] = NAN;
    mdl_gemm(pool, ta, tb, M, N, K, 1.f, A, B, 0.f, C);
    for (int64_t i = 0; i < M * N; i++) cr_assert(!isnan(C[i]));
    free(A), free(B), free(C), free(R);
  }
}

Test(gemm, matches_naive_single_and_threaded) {
  mdl_threadpool *pool;
  cr_assert_eq(mdl_threadpool_new(3, &pool, NULL), MDL_OK);
  int64_t shapes[][3] = {{1, 1, 1},     {7, 5, 3},     {20, 576, 25},
                         {50, 300, 70}, {130, 40, 33}, {3, 200, 0}};
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    gemm_case(NULL, shapes[i][0], shapes[i][1], shapes[i][2]);
    gemm_case(pool, shapes[i][0], shapes[i][1], shapes[i][2]);
  }
  mdl_threadpool_free(pool);
}

/* Split GEMMs (over 4 MFLOP, wide in N or in M) give the same bits with no
 * pool and on 2, 3, 4 and 9 threads: the split depends on the shape only. */
Test(gemm, same_bits_for_any_thread_count) {
  int64_t shapes[][3] = {{50, 4096, 500}, {500, 200, 64}, {64, 500, 800}, {37, 1000, 77}};
  int counts[] = {2, 3, 4, 9};
  mdl_threadpool *pools[4];
  for (int p = 0; p < 4; p++) cr_assert_eq(mdl_threadpool_new(counts[p], &pools[p], NULL), MDL_OK);
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    int64_t M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
    float *A = malloc((size_t)(M * K) * 4), *B = malloc((size_t)(K * N) * 4);
    float *C1 = malloc((size_t)(M * N) * 4), *C = malloc((size_t)(M * N) * 4);
    fill(A, M * K, 4), fill(B, K * N, 5), fill(C1, M * N, 6);
    memcpy(C, C1, (size_t)(M * N) * 4);
    mdl_gemm(NULL, false, true, M, N, K, 0.5f, A, B, 1.f, C1);
    for (int p = 0; p < 4; p++) {
      fill(C, M * N, 6);
      mdl_gemm(pools[p], false, true, M, N, K, 0.5f, A, B, 1.f, C);
      cr_assert(memcmp(C, C1, (size_t)(M * N) * 4) == 0, "M%lld N%lld K%lld on %d threads",
                (long long)M, (long long)N, (long long)K, counts[p]);
    }
    free(A), free(B), free(C1), free(C);
  }
  for (int p = 0; p < 4; p++) mdl_threadpool_free(pools[p]);
}

Test(gemm, openblas_backend) {
  setenv("MDL_GEMM", "openblas", 1); /* read once per process (tests fork) */
  gemm_case(NULL, 20, 64, 50);
  cr_assert_str_eq(mdl_gemm_backend_name(), "openblas");
}

Test(gemm, strided_and_gemv) {
  /* C (2x3) in a 2x5 buffer, A rows with stride 4 */
  float A[8] = {1, 2, 9, 9, 3, 4, 9, 9}, B[6] = {1, 0, 1, 0, 1, 1};
  float C[10] = {0};
  mdl_gemm_ex(NULL, false, false, 2, 3, 2, 1.f, A, 4, B, 3, 0.f, C, 5);
  float want[] = {1, 2, 3, 0, 0, 3, 4, 7};
  cr_assert_eq(C[0], want[0]);
  cr_assert_eq(C[2], want[2]);
  cr_assert_eq(C[5], 3.f);
  cr_assert_eq(C[7], 7.f);
  cr_assert_eq(C[3], 0.f);
  float M[6] = {1, 2, 3, 4, 5, 6}, x[3] = {1, 1, 1}, y[2];
  mdl_gemv(NULL, false, 2, 3, 1.f, M, x, 0.f, y);
  cr_assert_eq(y[0], 6.f);
  cr_assert_eq(y[1], 15.f);
  float z[3], u[2] = {1, 2};
  mdl_gemv(NULL, true, 2, 3, 1.f, M, u, 0.f, z);
  cr_assert_eq(z[0], 9.f);
  cr_assert_eq(z[2], 15.f);
}

Test(vector, reductions_same_for_any_thread_count) {
  const int64_t n = 100003;
  float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
  fill(x, n, 5), fill(y, n, 6);
  mdl_threadpool *p2, *p3;
  cr_assert_eq(mdl_threadpool_new(2, &p2, NULL), MDL_OK);
  cr_assert_eq(mdl_threadpool_new(3, &p3, NULL), MDL_OK);
  double d1 = mdl_vdot(NULL, n, x, y), d2 = mdl_vdot(p2, n, x, y), d3 = mdl_vdot(p3, n, x, y);
  cr_assert(d1 == d2 && d2 == d3);
  double ref = 0;
  for (int64_t i = 0; i < n; i++) ref += (double)x[i] * y[i];
  cr_assert(fabs(ref - d1) < 1e-3);
  cr_assert(mdl_vasum(p2, n, x) == mdl_vasum(NULL, n, x));
  cr_assert(mdl_vsumsq(p3, n, x) == mdl_vsumsq(NULL, n, x));
  cr_assert(mdl_vsum(p3, n, x) == mdl_vsum(p2, n, x));
  mdl_vaxpby(p2, n, 2.f, x, 0.5f, y);
  mdl_vscale(p3, n, 2.f, y);
  mdl_vset(p2, 10, 4.f, y);
  cr_assert_eq(y[9], 4.f);
  mdl_vadd(p2, n, x, x, y);
  cr_assert_eq(y[n - 1], 2 * x[n - 1]);
  mdl_vmul(NULL, n, x, x, y);
  cr_assert_eq(y[7], x[7] * x[7]);
  mdl_threadpool_free(p2);
  mdl_threadpool_free(p3);
  free(x), free(y);
}

/* <im2col(x), c> == <x, col2im(c)>: col2im is im2col's adjoint, over padding,
 * stride, dilation and a channel range. */
Test(im2col, adjoint) {
  mdl_conv_geom g = {3, 7, 6, 3, 2, 1, 1, 2, 1, 2, 1, 0, 0};
  g.out_h = (g.height + 2 * g.pad_h - (g.dilation_h * (g.kernel_h - 1) + 1)) / g.stride_h + 1;
  g.out_w = (g.width + 2 * g.pad_w - (g.dilation_w * (g.kernel_w - 1) + 1)) / g.stride_w + 1;
  const int64_t num = 2, img = 4 * 7 * 6, c0 = 1, nc = 3;
  const int64_t rows = nc * 3 * 2, cols = num * g.out_h * g.out_w;
  float *x = malloc((size_t)(num * img) * 4), *c = malloc((size_t)(rows * cols) * 4);
  float *col = malloc((size_t)(rows * cols) * 4), *xb = calloc((size_t)(num * img), 4);
  fill(x, num * img, 7), fill(c, rows * cols, 8);
  mdl_threadpool *pool;
  cr_assert_eq(mdl_threadpool_new(2, &pool, NULL), MDL_OK);
  mdl_im2col_batch(pool, &g, num, x, img, c0, nc, col);
  mdl_col2im_batch(pool, &g, num, c, c0, nc, xb, img);
  double a = 0, b = 0;
  for (int64_t i = 0; i < rows * cols; i++) a += (double)col[i] * c[i];
  for (int64_t i = 0; i < num * img; i++) b += (double)x[i] * xb[i];
  cr_assert(fabs(a - b) < 1e-3, "%g vs %g", a, b);
  /* channel 0 is outside the range: untouched */
  for (int64_t i = 0; i < 7 * 6; i++) cr_assert_eq(xb[i], 0.f);
  mdl_threadpool_free(pool);
  free(x), free(c), free(col), free(xb);
}

static void count_task(void *arg, int64_t b, int64_t e, int thread) {
  _Atomic int64_t *sum = arg;
  (void)thread;
  for (int64_t i = b; i < e; i++) atomic_fetch_add(sum, i);
}

static void chunk_task(void *arg, int64_t b, int64_t e, int thread) {
  int64_t *first = arg;
  first[thread] = b;
  (void)e;
}

Test(threadpool, covers_range_and_chunks_are_fixed) {
  mdl_threadpool *pool;
  cr_assert_eq(mdl_threadpool_new(4, &pool, NULL), MDL_OK);
  cr_assert_eq(mdl_threadpool_size(pool), 4);
  for (int rep = 0; rep < 200; rep++) {
    _Atomic int64_t sum = 0;
    mdl_parallel_for(pool, 1000, 7, count_task, &sum);
    cr_assert_eq(sum, 999 * 1000 / 2);
    sum = 0;
    mdl_parallel_tasks(pool, 37, count_task, &sum);
    cr_assert_eq(sum, 36 * 37 / 2);
  }
  /* any pool: up to 8 chunks; 100 in grains of 10 gives 10 blocks, 2 per
   * chunk: 5 chunks of 20, chunk k in slot k */
  cr_assert_eq(mdl_threadpool_slots(pool), MDL_PAR_CHUNKS);
  cr_assert_eq(MDL_PAR_CHUNKS, 8);
  int64_t first[MDL_PAR_CHUNKS];
  for (int i = 0; i < MDL_PAR_CHUNKS; i++) first[i] = -1;
  mdl_parallel_for(pool, 100, 10, chunk_task, first);
  for (int i = 0; i < 5; i++) cr_assert_eq(first[i], 20 * i);
  for (int i = 5; i < MDL_PAR_CHUNKS; i++) cr_assert_eq(first[i], -1);
  /* 1000 in grains of 7: 143 blocks over 8 chunks of 18 blocks */
  for (int i = 0; i < MDL_PAR_CHUNKS; i++) first[i] = -1;
  mdl_parallel_for(pool, 1000, 7, chunk_task, first);
  for (int i = 0; i < MDL_PAR_CHUNKS; i++) cr_assert_eq(first[i], 126 * i);
  /* the same chunks, each in its own call, with no pool and on one thread */
  mdl_threadpool *one;
  cr_assert_eq(mdl_threadpool_new(1, &one, NULL), MDL_OK);
  mdl_threadpool *pools[2] = {NULL, one};
  for (int k = 0; k < 2; k++) {
    for (int i = 0; i < MDL_PAR_CHUNKS; i++) first[i] = -1;
    mdl_parallel_for(pools[k], 1000, 7, chunk_task, first);
    for (int i = 0; i < MDL_PAR_CHUNKS; i++) cr_assert_eq(first[i], 126 * i);
  }
  mdl_threadpool_free(one);
  mdl_threadpool_free(pool);
  mdl_threadpool_free(NULL);
  cr_assert_eq(mdl_threadpool_size(NULL), 1);
  cr_assert_eq(mdl_threadpool_slots(NULL), MDL_PAR_CHUNKS);
  cr_assert(mdl_cpu_count() >= 1);
}

Test(threadpool, default_size_from_env) {
  setenv("MDL_NUM_THREADS", "3", 1);
  mdl_threadpool *pool;
  cr_assert_eq(mdl_threadpool_new(0, &pool, NULL), MDL_OK);
  cr_assert_eq(mdl_threadpool_size(pool), 3);
  mdl_threadpool_free(pool);
}

Test(tensor, alloc_view_reshape) {
  mdl_tensor t;
  mdl_tensor_init(&t);
  cr_assert_eq(t.count, 1);
  mdl_error err;
  cr_assert_eq(mdl_tensor_alloc(&t, 3, (int64_t[]){2, 3, 4}, true, &err), MDL_OK);
  cr_assert_eq(t.count, 24);
  cr_assert_eq((uintptr_t)t.data % MDL_TENSOR_ALIGN, 0);
  cr_assert_eq(t.diff[23], 0.f);
  cr_assert_eq(mdl_tensor_axis(&t, -1), 2);
  cr_assert_eq(mdl_tensor_axis(&t, 3), -1);
  cr_assert_eq(mdl_tensor_count_range(&t, 1, 3), 12);
  cr_assert_eq(mdl_tensor_legacy_dim(&t, 3), 1);
  char buf[32];
  cr_assert_str_eq(mdl_tensor_shape_str(&t, buf, sizeof buf), "2x3x4");
  cr_assert_eq(mdl_tensor_reshape(&t, 2, (int64_t[]){6, 4}, &err), MDL_OK);
  cr_assert_eq(mdl_tensor_reshape(&t, 2, (int64_t[]){5, 4}, &err), MDL_ERR_INVALID);
  cr_assert_eq(mdl_tensor_alloc(&t, 1, (int64_t[]){-1}, false, &err), MDL_ERR_INVALID);
  float buf2[6];
  mdl_tensor_view(&t, 2, (int64_t[]){2, 3}, buf2, NULL);
  cr_assert(!t.owns);
  mdl_tensor_release(&t);
  mdl_tensor_release(NULL);
}
