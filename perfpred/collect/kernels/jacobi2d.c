/* 5-point Jacobi sweeps over a 2D float32 grid: a memory-bound stencil.
 *
 *   u is ny x nx (row-major) with fixed boundary values; v is scratch of the same size.
 *   Each step sets every interior point to the mean of itself and its four neighbours,
 *   ping-ponging between u and v; after `steps` steps the result is in u.
 *
 * Tunable parameters (injected above this file as #defines by Kernel Tuner or perfpred):
 *   tile_x, tile_y  tile of the sweep handed to a thread at once (points along x and y)
 *   unroll          unroll factor of the inner x loop (1, 2, 4, 8)
 *   isa             sse2 or avx2: the vector ISA GCC may use when it vectorises the x loop
 *   threads         OpenMP threads sharing the tiles of each sweep
 *
 * At about one load and one store per point, the sweep runs at memory speed when the grid
 * is larger than the last-level cache; narrow tiles cut the vector loops short and break
 * the streaming of rows, tall tiles keep three input rows in L1/L2 between neighbours.
 *
 * Like every Kernel Tuner C kernel, it returns its own run time in milliseconds.
 * Valid C11 and C++ (the extern "C" guard below also stops Kernel Tuner from adding one).
 */
#define sse2 1
#define avx2 2

#if isa == avx2
#pragma GCC target("avx2,fma")
#elif isa != sse2
#error "isa must be sse2 or avx2"
#endif

#include <omp.h>
#include <stddef.h>
#include <string.h>

#ifdef __cplusplus
#define RESTRICT __restrict__
extern "C" {
#else
#define RESTRICT restrict
#endif

#define PRAGMA(x) _Pragma(#x)
#define UNROLL_PRAGMA(n) PRAGMA(GCC unroll n)

static inline int min_int(int a, int b) { return a < b ? a : b; }

/* One tile of one sweep. It lives in its own function because GCC drops `#pragma GCC unroll`
 * on loops written directly inside an OpenMP region (the outlined body loses the annotation). */
static inline void tile(float *RESTRICT dst, const float *RESTRICT src, int nx, int y0, int y1, int x0, int x1) {
    for (int y = y0; y < y1; ++y) {
        const float *RESTRICT up = src + (size_t)(y - 1) * nx;
        const float *RESTRICT mid = src + (size_t)y * nx;
        const float *RESTRICT down = src + (size_t)(y + 1) * nx;
        float *RESTRICT out = dst + (size_t)y * nx;
        UNROLL_PRAGMA(unroll)
        for (int x = x0; x < x1; ++x)
            out[x] = 0.2f * (mid[x] + mid[x - 1] + mid[x + 1] + up[x] + down[x]);
    }
}

float jacobi2d(float *RESTRICT u, float *RESTRICT v, int nx, int ny, int steps) {
    const double start = omp_get_wtime();
    /* v's boundary must equal u's: the sweeps never write it. */
    memcpy(v, u, sizeof(float) * (size_t)nx);
    memcpy(v + (size_t)(ny - 1) * nx, u + (size_t)(ny - 1) * nx, sizeof(float) * (size_t)nx);
    for (int y = 1; y < ny - 1; ++y) {
        v[(size_t)y * nx] = u[(size_t)y * nx];
        v[(size_t)y * nx + nx - 1] = u[(size_t)y * nx + nx - 1];
    }
#pragma omp parallel num_threads(threads)
    for (int s = 0; s < steps; ++s) {
        const float *src = (s % 2 == 0) ? u : v;
        float *dst = (s % 2 == 0) ? v : u;
#pragma omp for collapse(2) schedule(static)
        for (int y0 = 1; y0 < ny - 1; y0 += tile_y) {
            for (int x0 = 1; x0 < nx - 1; x0 += tile_x)
                tile(dst, src, nx, y0, min_int(y0 + tile_y, ny - 1), x0, min_int(x0 + tile_x, nx - 1));
        }
    }
    if (steps % 2 == 1) memcpy(u, v, sizeof(float) * (size_t)nx * (size_t)ny);
    return (float)((omp_get_wtime() - start) * 1e3);
}

#ifdef __cplusplus
}
#endif
