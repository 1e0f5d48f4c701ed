/* graft CUDA backend: convolutions (conv1d/conv2d, conv_transpose, their gradients) as
 * im2col / col2im kernels around cuBLAS products, for core/nn/conv.c: the path when
 * graft.backends.cudnn.enabled is false, libcudnn is missing, or cuDNN declines a shape
 * (cuda/cudnn.h tries first).
 *
 * The geometry is the CPU's (cpu/conv_cpu.h): a "big" side [N, C, H, W], a "small" side
 * [N, O, OH, OW] and a weight [O, C/G, kh, kw]. Every tensor is contiguous on one CUDA
 * device and of g->dtype (float32, float64, float16, bfloat16), except dw, which may
 * be float32 under 16-bit operands (the accumulation dtype). The batch is processed in
 * chunks whose workspace (the column matrix) stays under GRAFT_CUDA_CONV_WORKSPACE
 * (256 MiB; graft_cuda_conv_set_workspace changes it).
 */
#ifndef GRAFT_CUDA_CONV_H
#define GRAFT_CUDA_CONV_H

#ifdef __cplusplus
extern "C" {
#endif

#include "cpu/conv_cpu.h"
#include "cuda/cuda.h"

#define GRAFT_CUDA_CONV_WORKSPACE ((size_t)256 << 20)
/* Sets the workspace cap in bytes (0 restores the default): for specs that exercise
 * the chunking with small batches. */
GRAFT_CUDA_API(graft_cuda_conv_set_workspace, (size_t bytes))

/* small <- conv(big, w) (+ bias[O] when not NULL). */
GRAFT_CUDA_API(graft_cuda_conv_small, (const graft_conv_geom *g, graft_tensor *big, graft_tensor *w,
                                       graft_tensor *bias, graft_tensor *small, bool tf32, const char *op))
/* big <- conv^T(small, w) (+ bias[C] when not NULL); every element written. */
GRAFT_CUDA_API(graft_cuda_conv_big, (const graft_conv_geom *g, graft_tensor *small, graft_tensor *w,
                                     graft_tensor *bias, graft_tensor *big, bool tf32, const char *op))
/* dw [O, C/G, kh, kw] <- sum over the batch of small x im2col(big)^T. */
GRAFT_CUDA_API(graft_cuda_conv_weight, (const graft_conv_geom *g, graft_tensor *small, graft_tensor *big,
                                        graft_tensor *dw, bool tf32, const char *op))
/* db[c] <- sum over n and p of x[n, c, p] for x contiguous [N, C, P]; accumulated in
 * float32 (float64 for float64), deterministic (one block per channel). */
GRAFT_CUDA_API(graft_cuda_conv_bias_grad, (graft_tensor *x, int64_t N, int64_t C, int64_t P, graft_tensor *db,
                                           const char *op))

#ifdef __cplusplus
}
#endif
#endif
