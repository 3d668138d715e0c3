/* Shared-memory tiled SGEMM in CUDA: C = A * B for n x n row-major float32 matrices.
 *
 * Kernel Tuner's classic matmul space: a thread block of block_size_x x block_size_y threads
 * computes a (block_size_x * tile_size_x) x (block_size_y * tile_size_y) tile of C, each
 * thread tile_size_x x tile_size_y outputs held in registers; A and B tiles are staged in
 * shared memory, k advancing block_size_x at a time.
 *
 * Tunable parameters (#defines injected by Kernel Tuner): block_size_x, block_size_y,
 * tile_size_x, tile_size_y, with block_size_x == block_size_y * tile_size_y so the staged
 * tile of A is square. The grid is n / (block_size_x * tile_size_x) by
 * n / (block_size_y * tile_size_y) blocks (Kernel Tuner's grid divisors); n must be a
 * multiple of 256, the widest block tile.
 */
#ifndef block_size_z
#define block_size_z 1
#endif

extern "C" __global__ void matmul_kernel(float *C, const float *A, const float *B, int n) {
    __shared__ float sA[block_size_y * tile_size_y][block_size_x];
    __shared__ float sB[block_size_y * tile_size_y][block_size_x * tile_size_x];

    const int tx = threadIdx.x;
    const int ty = threadIdx.y;
    const int x = blockIdx.x * block_size_x * tile_size_x + tx;
    const int y = blockIdx.y * block_size_y * tile_size_y + ty;

    float sum[tile_size_y][tile_size_x];
#pragma unroll
    for (int i = 0; i < tile_size_y; i++) {
#pragma unroll
        for (int j = 0; j < tile_size_x; j++) sum[i][j] = 0.0f;
    }

    for (int k = 0; k < n; k += block_size_x) {
        __syncthreads();
#pragma unroll
        for (int i = 0; i < tile_size_y; i++) {
            sA[ty + block_size_y * i][tx] = A[(size_t)(y + i * block_size_y) * n + k + tx];
#pragma unroll
            for (int j = 0; j < tile_size_x; j++)
                sB[ty + block_size_y * i][tx + j * block_size_x] =
                    B[(size_t)(k + ty + block_size_y * i) * n + x + j * block_size_x];
        }
        __syncthreads();
#pragma unroll
        for (int kb = 0; kb < block_size_x; kb++) {
#pragma unroll
            for (int i = 0; i < tile_size_y; i++) {
#pragma unroll
                for (int j = 0; j < tile_size_x; j++)
                    sum[i][j] += sA[ty + block_size_y * i][kb] * sB[kb][tx + j * block_size_x];
            }
        }
    }

#pragma unroll
    for (int i = 0; i < tile_size_y; i++) {
#pragma unroll
        for (int j = 0; j < tile_size_x; j++)
            C[(size_t)(y + i * block_size_y) * n + x + j * block_size_x] = sum[i][j];
    }
}
