/* graft CUDA: 2-D pooling kernels (core/cuda/pool.cu) for the front ends in
 * core/nn/pool.c. One thread per output (forward) or per input element (backward): the
 * backward gathers from the outputs whose window holds the element, in the CPU's order,
 * so gradients are deterministic and bitwise those of the CPU loops (no atomics).
 *
 * Tensors are contiguous on one device, viewed as [planes, H, W] -> [planes, OH, OW].
 * Forward: x and y share any float dtype (float16/bfloat16 computed in float); indices
 * int64 (flat in the plane) or NULL. Backward: gy and gx float32 or float64 (same dtype).
 */
#ifndef GRAFT_CUDA_POOL_H
#define GRAFT_CUDA_POOL_H

#include "cuda/cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { GRAFT_CUDA_POOL_MAX, GRAFT_CUDA_POOL_AVG, GRAFT_CUDA_POOL_ADAPTIVE_AVG, GRAFT_CUDA_POOL_ADAPTIVE_MAX } graft_cuda_pool_kind;

typedef struct {
    int64_t planes, H, W, OH, OW;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw; /* windows (max, avg): kernel, stride, padding, dilation */
    int64_t divisor;                        /* avg: divisor_override, 0 = none */
    bool count_include_pad;                 /* avg */
} graft_cuda_pool_geom;

GRAFT_CUDA_API(graft_cuda_pool_forward, (graft_tensor *y, graft_tensor *indices, graft_tensor *x,
                                         const graft_cuda_pool_geom *g, graft_cuda_pool_kind kind))
/* gx <- the gradient of the pooling from gy (and the forward's indices for max kinds). */
GRAFT_CUDA_API(graft_cuda_pool_backward, (graft_tensor *gx, graft_tensor *gy, graft_tensor *indices,
                                          const graft_cuda_pool_geom *g, graft_cuda_pool_kind kind))

#ifdef __cplusplus
}
#endif
#endif
