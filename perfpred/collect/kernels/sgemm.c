/* Blocked single-precision GEMM on the CPU: C = A * B (row-major, float32).
 *
 *   A is M x K, B is K x N, C is M x N; N must be a multiple of 8 (the widest vector).
 *
 * Tunable parameters (injected above this file as #defines by Kernel Tuner or perfpred):
 *   block_m, block_n, block_k  tile sizes of the i / j / k loops (block_n a multiple of 8)
 *   loop_order                 0..5: order of the i, j, k loops inside a tile:
 *                              0 ijk, 1 ikj, 2 jik, 3 jki, 4 kij, 5 kji
 *   unroll                     unroll factor of the innermost loop (1, 2, 4, 8)
 *   isa                        sse2 (128-bit mul + add) or avx2 (256-bit FMA); chosen here with
 *                              `#pragma GCC target`, so every config compiles with the same flags
 *   threads                    OpenMP threads sharing the (i, j) tiles
 *
 * The inner loops move along j in whole vectors, so all six loop orders are legal and each
 * touches memory differently: orders with k innermost keep a C vector in a register but
 * stride through B; orders with j innermost stream rows of B and C. That is why this small
 * space spans two orders of magnitude.
 *
 * Like every Kernel Tuner C kernel, it returns its own run time in milliseconds.
 * Valid C11 and C++ (the extern "C" guard below also stops Kernel Tuner from adding one).
 */
#define sse2 1
#define avx2 2

#if isa == avx2
#pragma GCC target("avx2,fma")
#endif

#include <immintrin.h>
#include <omp.h>
#include <stddef.h>

#ifdef __cplusplus
#define RESTRICT __restrict__
extern "C" {
#else
#define RESTRICT restrict
#endif

#if isa == avx2
#define VW 8
typedef __m256 vec_t;
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VSET1(x) _mm256_set1_ps(x)
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#elif isa == sse2
#define VW 4
typedef __m128 vec_t;
#define VLOAD(p) _mm_loadu_ps(p)
#define VSTORE(p, v) _mm_storeu_ps((p), (v))
#define VSET1(x) _mm_set1_ps(x)
#define VFMA(a, b, c) _mm_add_ps(_mm_mul_ps((a), (b)), (c))
#else
#error "isa must be sse2 or avx2"
#endif

#if !(loop_order >= 0 && loop_order <= 5)
#error "loop_order must be 0..5"
#endif
#if block_n % 8 != 0
#error "block_n must be a multiple of 8"
#endif

#define PRAGMA(x) _Pragma(#x)
#define UNROLL_PRAGMA(n) PRAGMA(GCC unroll n)

#define LOOP_I for (int i = i0; i < i1; ++i)
#define LOOP_J for (int j = j0; j < j1; j += VW)
#define LOOP_K for (int k = k0; k < k1; ++k)

#if loop_order == 0
#define LOOP_1 LOOP_I
#define LOOP_2 LOOP_J
#define LOOP_3 LOOP_K
#elif loop_order == 1
#define LOOP_1 LOOP_I
#define LOOP_2 LOOP_K
#define LOOP_3 LOOP_J
#elif loop_order == 2
#define LOOP_1 LOOP_J
#define LOOP_2 LOOP_I
#define LOOP_3 LOOP_K
#elif loop_order == 3
#define LOOP_1 LOOP_J
#define LOOP_2 LOOP_K
#define LOOP_3 LOOP_I
#elif loop_order == 4
#define LOOP_1 LOOP_K
#define LOOP_2 LOOP_I
#define LOOP_3 LOOP_J
#else
#define LOOP_1 LOOP_K
#define LOOP_2 LOOP_J
#define LOOP_3 LOOP_I
#endif

static inline int min_int(int a, int b) { return a < b ? a : b; }

/* One (i, j, k) tile. It lives in its own function because GCC drops `#pragma GCC unroll`
 * on loops written directly inside an OpenMP region (the outlined body loses the annotation). */
static inline void tile(float *RESTRICT C, const float *RESTRICT A, const float *RESTRICT B, size_t lda, size_t ldb,
                        size_t ldc, int i0, int i1, int j0, int j1, int k0, int k1) {
    LOOP_1 {
        LOOP_2 {
            UNROLL_PRAGMA(unroll)
            LOOP_3 {
                float *c = C + (size_t)i * ldc + j;
                VSTORE(c, VFMA(VSET1(A[(size_t)i * lda + k]), VLOAD(B + (size_t)k * ldb + j), VLOAD(c)));
            }
        }
    }
}

float sgemm(float *RESTRICT C, const float *RESTRICT A, const float *RESTRICT B, int M, int N, int K) {
    const double start = omp_get_wtime();
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (long idx = 0; idx < (long)M * N; ++idx) C[idx] = 0.0f;

#pragma omp for collapse(2) schedule(static)
        for (int i0 = 0; i0 < M; i0 += block_m) {
            for (int j0 = 0; j0 < N; j0 += block_n) {
                const int i1 = min_int(i0 + block_m, M);
                const int j1 = min_int(j0 + block_n, N);
                for (int k0 = 0; k0 < K; k0 += block_k)
                    tile(C, A, B, (size_t)K, (size_t)N, (size_t)N, i0, i1, j0, j1, k0, min_int(k0 + block_k, K));
            }
        }
    }
    return (float)((omp_get_wtime() - start) * 1e3);
}

#ifdef __cplusplus
}
#endif
