/* graft CUDA: the fused optimizer updates (core/optim front ends) over a list of
 * parameters in one kernel launch. The launcher writes a table of the list (each
 * tensor's pointers, size and per-tensor scalars, then one row per chunk of up to
 * 16384 elements), uploads it through a pinned buffer without blocking the host, and
 * one kernel walks every chunk of every tensor; tensors with a non-contiguous operand
 * get a strided launch of their own. The arithmetic is the CPU's (optim.c), operation
 * by operation with explicitly rounded operations, so results are bit-identical.
 *
 * Called by core/optim/optim.c after its checks: every tensor of the lists is on one
 * CUDA device, of its parameter's dtype (float32, float64, float16 or bfloat16) and
 * shaped like it. */
#ifndef GRAFT_CUDA_OPTIM_H
#define GRAFT_CUDA_OPTIM_H

#include "cuda/cuda.h"

#ifdef __cplusplus
extern "C" {
#endif
#include "optim/optim.h"

/* The lists of one update: op[0] the parameters, op[1] their gradients, op[2..4] the
 * optimizer's state lists in the order of its graft_optim_* function (NULL: unused).
 * k0/k1: per-tensor scalars, unrounded (Adam: -lr/(1 - β1^t) and √(1 - β2^t);
 * Adagrad: -lr/(1 + (t - 1)·lr_decay)); first: SGD's "buffer not written yet". */
typedef struct {
    int n;
    graft_tensor *const *op[5];
    const double *k0, *k1;
    const bool *first;
} graft_cuda_optim_lists;

GRAFT_CUDA_API(graft_cuda_optim_sgd, (const graft_cuda_optim_lists *l, const graft_optim_sgd_args *a))
/* lerp_small: PyTorch's lerp weight |1 − β1| < 0.5, decided in the parameter's dtype. */
GRAFT_CUDA_API(graft_cuda_optim_adam, (const graft_cuda_optim_lists *l, const graft_optim_adam_args *a, bool lerp_small))
GRAFT_CUDA_API(graft_cuda_optim_rmsprop,
               (const graft_cuda_optim_lists *l, const graft_optim_rmsprop_args *a, bool lerp_small))
GRAFT_CUDA_API(graft_cuda_optim_adagrad, (const graft_cuda_optim_lists *l, const graft_optim_adagrad_args *a))

#ifdef __cplusplus
}
#endif
#endif
