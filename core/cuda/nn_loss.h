/* graft CUDA backend: the losses of core/nn/loss.c (cross_entropy / nll_loss, the
 * pointwise losses) and the index lookups of core/nn/functional.c (embedding,
 * one_hot). Operands are on one CUDA device and already checked and converted by the
 * front ends; outputs are allocated by the caller. Reductions are deterministic (a
 * fixed two-level tree, no float atomics); the embedding backward adds rows with
 * atomics. Index errors come back as values (read from the device, one small copy)
 * and the front end words them as on the CPU.
 */
#ifndef GRAFT_CUDA_NN_LOSS_H
#define GRAFT_CUDA_NN_LOSS_H

#include "cuda/cuda.h"

#ifdef __cplusplus
extern "C" {
#endif
#include "nn/kernels.h"

/* x [N, C, inner] contiguous; target int64 [rows] contiguous, or probabilities of x's
 * shape and dtype (contiguous); weight [C] in x's dtype or NULL. out: the rows' losses
 * (reduction none, rows elements) or a 0-dim tensor; lse [rows] or NULL (logits only).
 * *total_weight: the mean's divisor; *bad: an out-of-range target, or INT64_MIN. */
GRAFT_CUDA_API(graft_cuda_nn_class_loss_forward,
               (graft_tensor *out, graft_tensor *lse, double *total_weight, int64_t *bad, const graft_nn_class_loss *a,
                graft_tensor *x, graft_tensor *target, graft_tensor *weight, int64_t N, int64_t C, int64_t inner))
/* dx and/or dtarget (x's shape, either NULL to skip); g contiguous in x's dtype (rows
 * elements for reduction none, else one), scaled by gscale. */
GRAFT_CUDA_API(graft_cuda_nn_class_loss_backward,
               (graft_tensor *dx, graft_tensor *dtarget, const graft_nn_class_loss *a, graft_tensor *g, double gscale,
                graft_tensor *x, graft_tensor *target, graft_tensor *weight, graft_tensor *lse, int64_t N, int64_t C,
                int64_t inner))

/* The elementwise loss of x, y, w, pw (all broadcast to out_shape, x's dtype), then
 * the reduction into out (out_shape for none, 0-dim otherwise). *bad: BCE saw an
 * input outside [0, 1]. */
GRAFT_CUDA_API(graft_cuda_nn_pointwise_loss_forward,
               (graft_tensor *out, bool *bad, graft_nn_loss kind, graft_tensor *x, graft_tensor *y, graft_tensor *w,
                graft_tensor *pw, graft_reduction reduction, double beta, int ndim, const int64_t *shape))
/* res <- g scale dl/dx (or dl/dy when target), res contiguous of the broadcast shape. */
GRAFT_CUDA_API(graft_cuda_nn_pointwise_loss_backward,
               (graft_tensor *res, bool target, graft_nn_loss kind, graft_tensor *g, double scale, graft_tensor *x,
                graft_tensor *y, graft_tensor *w, graft_tensor *pw, double beta))

/* out [n, D] <- the rows of weight [num, D] (contiguous, any dtype) at idx (int64 [n],
 * contiguous); *bad: an index outside [0, num), or INT64_MIN. */
GRAFT_CUDA_API(graft_cuda_nn_embedding_forward, (graft_tensor *out, int64_t *bad, graft_tensor *weight, graft_tensor *idx))
/* dw [num, D] (zeroed by the caller) += the rows of g [n, D] at idx, padding_idx skipped. */
GRAFT_CUDA_API(graft_cuda_nn_embedding_backward, (graft_tensor *dw, graft_tensor *g, graft_tensor *idx, int64_t padding_idx))
/* The smallest and largest value of idx (int64, contiguous); INT64_MAX / -1 when empty. */
GRAFT_CUDA_API(graft_cuda_nn_index_range, (int64_t *lo, int64_t *hi, graft_tensor *idx))
/* out [n, classes] (zeroed by the caller) gets a 1 at each idx (checked in range). */
GRAFT_CUDA_API(graft_cuda_nn_one_hot, (graft_tensor *out, graft_tensor *idx, int64_t classes))

#ifdef __cplusplus
}
#endif
#endif
