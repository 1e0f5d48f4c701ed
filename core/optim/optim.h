/* graft core: fused optimizer updates. One call updates one parameter tensor in a single
 * pass that reads and writes the parameter, its gradient and each state tensor once.
 *
 * The bookkeeping (groups, which parameters have a gradient, lazily created state, step
 * counters, state dicts) lives in Lua (lua/graft/optim); these functions are the
 * arithmetic. float32 follows PyTorch 1.13's single-tensor CPU kernels operation by
 * operation (which steps are fused multiply-adds, which round twice), so float32 results
 * are bit-identical to PyTorch on x86-64; float64 uses the same evaluation order.
 * float16 and bfloat16 parameters (state in the same dtype) repeat PyTorch's 16-bit op
 * sequence, each op computed in float and rounded to the 16-bit dtype, scalars rounded
 * where PyTorch rounds them (optim.c, "16-bit parameters"): bfloat16 is bit-identical to
 * PyTorch 1.13 on x86-64 (AVX2 kernels, tensors under 32768 elements or one thread),
 * float16 SGD too; 1.13 has no float16 Adam, RMSprop or Adagrad on the CPU, and graft
 * gives those the same op sequence with float16 rounding (add_ in the two-rounding form
 * of 1.13's float16 kernels).
 *
 *     graft_optim_sgd_args a = {.lr = 0.1, .momentum = 0.9};
 *     if (graft_optim_sgd(p, p_grad, buf, first_step, &a)) puts(graft_last_error());
 *
 * Tensors are borrowed. p, grad and the state tensors must share p's shape, dtype
 * (float32, float64, float16 or bfloat16) and device (CPU or CUDA); any strides are
 * accepted. Each written tensor's version is bumped. Scalars are doubles, as PyTorch's
 * Python floats, rounded to the tensor's dtype where PyTorch rounds them. CUDA tensors
 * get the same arithmetic (core/cuda/optim.cu), so a step on the GPU gives the CPU's
 * bits.
 *
 * The *_multi forms update a list of parameters (PyTorch's foreach): every parameter on
 * one device; on CUDA the whole list is one kernel launch, on the CPU a loop over the
 * single-tensor form. State lists are indexed like p (NULL where the single form takes
 * NULL). All tensors are checked before any is written; on an error *bad is the index
 * of the parameter at fault (-1 when none is).
 */
#ifndef GRAFT_OPTIM_H
#define GRAFT_OPTIM_H

#include "tensor/tensor.h"

/* PyTorch's bfloat16 add_(y, alpha) rounds differently in its vector body (one fused
 * multiply-add) and its scalar tail (alpha·y rounded first); the body of a contiguous
 * innermost row is its whole blocks of this many elements (two AVX2 vectors). Shared by
 * the CPU and CUDA updates so both pick the same form for each element. */
#define GRAFT_OPTIM_BF16_BLOCK 32

/* ---- SGD ----
 * d = ±grad (+ weight_decay·p); with momentum: buf = d on the first step, else
 * buf = momentum·buf + (1 − dampening)·d, then d = d + momentum·buf (nesterov) or buf;
 * p = p − lr·d. */
typedef struct {
    double lr, momentum, dampening, weight_decay;
    bool nesterov, maximize;
} graft_optim_sgd_args;

/* buf: the momentum buffer (NULL when momentum is 0). first: buf holds nothing yet and is
 * written with d (PyTorch's clone of the first gradient), never read. */
graft_status graft_optim_sgd(graft_tensor *p, graft_tensor *grad, graft_tensor *buf, bool first,
                             const graft_optim_sgd_args *a);
/* buf: NULL when momentum is 0; first[i] as `first` above (first NULL: all false). */
graft_status graft_optim_sgd_multi(int n, graft_tensor *const *p, graft_tensor *const *grad, graft_tensor *const *buf,
                                   const bool *first, const graft_optim_sgd_args *a, int *bad);

/* ---- Adam / AdamW ----
 * g = ±grad; Adam: g += weight_decay·p; AdamW: p *= 1 − lr·weight_decay first.
 * m = β1·m + (1 − β1)·g (or PyTorch 2.x's lerp of m towards g by 1 − β1);
 * v = β2·v + (1 − β2)·g²; amsgrad: vmax = max(vmax, v), used instead of v;
 * p = p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + eps). */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    double step;     /* t: the step count including this step (1 on the first) */
    bool amsgrad, maximize;
    bool decoupled;  /* AdamW */
    bool lerp;       /* m (and nothing else) by PyTorch 2.x's lerp; bits differ from 1.13 after step 1 */
} graft_optim_adam_args;

/* vmax: NULL unless amsgrad. */
graft_status graft_optim_adam(graft_tensor *p, graft_tensor *grad, graft_tensor *m, graft_tensor *v,
                              graft_tensor *vmax, const graft_optim_adam_args *a);
/* step[i]: t of parameter i (a->step is not read). vmax: NULL unless amsgrad. */
graft_status graft_optim_adam_multi(int n, graft_tensor *const *p, graft_tensor *const *grad, graft_tensor *const *m,
                                    graft_tensor *const *v, graft_tensor *const *vmax, const double *step,
                                    const graft_optim_adam_args *a, int *bad);

/* ---- RMSprop ----
 * g = ±grad (+ weight_decay·p); s = α·s + (1 − α)·g²; centered: a = α·a + (1 − α)·g
 * (or the 2.x lerp) and avg = √(s − a²), else avg = √s; avg += eps;
 * momentum: buf = momentum·buf + g/avg, p = p − lr·buf; else p = p − lr·g/avg. */
typedef struct {
    double lr, alpha, eps, weight_decay, momentum;
    bool centered, maximize, lerp;
} graft_optim_rmsprop_args;

/* grad_avg: NULL unless centered; buf: NULL unless momentum > 0 (zeros on the first step). */
graft_status graft_optim_rmsprop(graft_tensor *p, graft_tensor *grad, graft_tensor *square_avg,
                                 graft_tensor *grad_avg, graft_tensor *buf, const graft_optim_rmsprop_args *a);
graft_status graft_optim_rmsprop_multi(int n, graft_tensor *const *p, graft_tensor *const *grad,
                                       graft_tensor *const *square_avg, graft_tensor *const *grad_avg,
                                       graft_tensor *const *buf, const graft_optim_rmsprop_args *a, int *bad);

/* ---- Adagrad ----
 * g = ±grad (+ weight_decay·p); clr = lr / (1 + (t − 1)·lr_decay); sum += g²;
 * p = p − clr · g / (√sum + eps). */
typedef struct {
    double lr, lr_decay, eps, weight_decay;
    double step;     /* t, including this step */
    bool maximize;
} graft_optim_adagrad_args;

graft_status graft_optim_adagrad(graft_tensor *p, graft_tensor *grad, graft_tensor *sum,
                                 const graft_optim_adagrad_args *a);
/* step[i]: t of parameter i (a->step is not read). */
graft_status graft_optim_adagrad_multi(int n, graft_tensor *const *p, graft_tensor *const *grad,
                                       graft_tensor *const *sum, const double *step,
                                       const graft_optim_adagrad_args *a, int *bad);

#endif
