/* graft CUDA: batch, layer and group normalisation kernels (core/cuda/norm.cu), called
 * by the front ends in core/nn/norm.c after their checks, with every tensor on one
 * device. Statistics are two-pass (mean, then centred squares) per channel, row or
 * group, reduced in a fixed order (deterministic), in float (double for float64).
 *
 * Unless a comment says otherwise: x, g, y, dx are contiguous and share x's dtype
 * (float32 or float64); per-channel vectors (weight, bias, running stats) may have any
 * float dtype and stride; outputs are allocated by the caller, NULL when not wanted.
 */
#ifndef GRAFT_CUDA_NORM_H
#define GRAFT_CUDA_NORM_H

#include "cuda/cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x [N, C, L] -> y; save_mean, save_invstd [C] (x's dtype, contiguous): the statistics
 * used. training: batch statistics, and when rm is given the running stats become
 * (1 - f) r + f s (unbiased variance), f = momentum, or 1 / (nbt + 1) when cumulative;
 * nbt (a device integer scalar, may be NULL) is then incremented on the device.
 * Not training: the running statistics rm, rv. */
GRAFT_CUDA_API(graft_cuda_batch_norm_forward,
               (graft_tensor *y, graft_tensor *save_mean, graft_tensor *save_invstd, graft_tensor *x,
                graft_tensor *rm, graft_tensor *rv, graft_tensor *w, graft_tensor *b, graft_tensor *nbt,
                bool training, double momentum, bool cumulative, double eps))
/* dx, dw, db [C] (x's dtype) from g and the forward's mean, invstd [C] (contiguous). */
GRAFT_CUDA_API(graft_cuda_batch_norm_backward,
               (graft_tensor *dx, graft_tensor *dw, graft_tensor *db, graft_tensor *g, graft_tensor *x,
                graft_tensor *w, graft_tensor *mean, graft_tensor *invstd, bool training))

/* Rows of D elements: x [R, D] -> y, mean, rstd [R]. w, b: contiguous [D] in x's dtype
 * or NULL. */
GRAFT_CUDA_API(graft_cuda_layer_norm_forward,
               (graft_tensor *y, graft_tensor *mean, graft_tensor *rstd, graft_tensor *x, graft_tensor *w,
                graft_tensor *b, int64_t R, int64_t D, double eps))
/* dx [R, D]; dw, db [D] (sums over rows, in two fixed-order stages). */
GRAFT_CUDA_API(graft_cuda_layer_norm_backward,
               (graft_tensor *dx, graft_tensor *dw, graft_tensor *db, graft_tensor *g, graft_tensor *x,
                graft_tensor *w, graft_tensor *mean, graft_tensor *rstd, int64_t R, int64_t D))

/* x [N, C, L] in G groups of C / G channels -> y, mean, rstd [N * G]. w, b: contiguous
 * [C] in x's dtype or NULL. */
GRAFT_CUDA_API(graft_cuda_group_norm_forward,
               (graft_tensor *y, graft_tensor *mean, graft_tensor *rstd, graft_tensor *x, graft_tensor *w,
                graft_tensor *b, int64_t N, int64_t C, int64_t L, int64_t G, double eps))
GRAFT_CUDA_API(graft_cuda_group_norm_backward,
               (graft_tensor *dx, graft_tensor *dw, graft_tensor *db, graft_tensor *g, graft_tensor *x,
                graft_tensor *w, graft_tensor *mean, graft_tensor *rstd, int64_t N, int64_t C, int64_t L,
                int64_t G))

#ifdef __cplusplus
}
#endif
#endif
