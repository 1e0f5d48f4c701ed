/* graft CUDA backend: random fills and dropout generated on the device from graft's
 * Philox4x32-10 stream (core/tensor/rng.h). The caller reserves the stream's blocks on
 * the host (graft_rng_reserve) and passes the seed and the first block: element i reads
 * the same words as on the CPU, so a seed gives the same numbers on either device (to
 * the last bit, but for float64 normals, whose log and cos may differ by an ulp).
 *
 *     uint64_t base = graft_rng_reserve(nblocks);
 *     graft_cuda_rng_fill(t, GRAFT_RNG_UNIFORM, 0, 1, 0, 0, seed, base);
 */
#ifndef GRAFT_CUDA_RANDOM_H
#define GRAFT_CUDA_RANDOM_H

#include "cuda/cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { GRAFT_RNG_UNIFORM = 0, GRAFT_RNG_NORMAL = 1, GRAFT_RNG_RANDINT = 2 };

/* t (contiguous, on the device) <- the stream's values for kind: uniform in [a, b)
 * (float32/float64/float16/bfloat16), normal with mean a and std b (same dtypes),
 * integers in [ia, ib) (int64 only). Words per element as rng.c: uniform 1 (float64 2),
 * normal 2 (float64 4), randint 2. */
GRAFT_CUDA_API(graft_cuda_rng_fill, (graft_tensor *t, int kind, double a, double b, int64_t ia, int64_t ib,
                                     uint64_t seed, uint64_t base))
/* y, mask (uint8), x: contiguous, x's shape, on the device. The CPU's mapping
 * (core/nn/activation.c): element c*256 + k*64 + j keeps when word k of block
 * base + c*64 + j, as a 24-bit uniform, is below 1 - p; y = x / (1 - p) or 0. */
GRAFT_CUDA_API(graft_cuda_dropout_forward, (graft_tensor *y, graft_tensor *mask, graft_tensor *x, double p,
                                            uint64_t seed, uint64_t base))
/* dx <- mask ? g * scale : 0 (dx contiguous with mask's shape; g any layout). */
GRAFT_CUDA_API(graft_cuda_dropout_backward, (graft_tensor *dx, graft_tensor *g, graft_tensor *mask, double scale))

#ifdef __cplusplus
}
#endif
#endif
