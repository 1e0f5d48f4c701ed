/* graft CUDA: interpolate and pad kernels (core/cuda/resize.cu) for the front ends in
 * core/nn/resize.c. Coordinate tables are built on the host by the CPU's own code and
 * passed as small device tensors, so sources and weights are those of the CPU bit for
 * bit. Backward kernels gather (one thread per input element, summing its outputs in
 * the CPU's order): deterministic, no atomics.
 *
 * Tensors are contiguous on one device. Forwards take any float dtype (pad: any dtype)
 * with y in x's dtype; backwards take float32 or float64 gradients.
 */
#ifndef GRAFT_CUDA_RESIZE_H
#define GRAFT_CUDA_RESIZE_H

#include "cuda/cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* [planes, H, W] <-> [planes, OH, OW] (1-D: H = OH = 1). */
typedef struct {
    int64_t planes, H, W, OH, OW;
} graft_cuda_interp_geom;

/* idx (int64): nearest: the source of each output row then column [OH + OW]; linear:
 * i0 [OH], i1 [OH], j0 [OW], j1 [OW]. lam (linear only; float32, float64 for float64
 * data): the matching weights l0 [OH], l1 [OH], m0 [OW], m1 [OW]. */
GRAFT_CUDA_API(graft_cuda_interp_forward, (graft_tensor *y, graft_tensor *x, const graft_cuda_interp_geom *g,
                                           bool linear, graft_tensor *idx, graft_tensor *lam))
/* rng (int64): for each input row then column, the first and one-past-last output whose
 * sources include it [2 H + 2 W] (rows: lo[H], hi[H]; columns: lo[W], hi[W]). */
GRAFT_CUDA_API(graft_cuda_interp_backward, (graft_tensor *gx, graft_tensor *gy, const graft_cuda_interp_geom *g,
                                            bool linear, graft_tensor *idx, graft_tensor *lam, graft_tensor *rng))

/* Non-constant padding as [planes, D, H, W] -> [planes, OD, OH, OW]; lo: the padding
 * before each dim; mode: graft_pad_mode (reflect, replicate, circular). */
typedef struct {
    int64_t planes, in[3], out[3], lo[3];
    int mode;
} graft_cuda_pad_geom;

GRAFT_CUDA_API(graft_cuda_pad_forward, (graft_tensor *y, graft_tensor *x, const graft_cuda_pad_geom *g))
/* inv (int64), per dim k = 0, 1, 2 at offset base[k]: in[k] + 1 offsets then out[k]
 * output indices: the outputs whose source is each input index, ascending. */
GRAFT_CUDA_API(graft_cuda_pad_backward, (graft_tensor *gx, graft_tensor *gy, const graft_cuda_pad_geom *g,
                                         graft_tensor *inv, const int64_t base[3]))

#ifdef __cplusplus
}
#endif
#endif
