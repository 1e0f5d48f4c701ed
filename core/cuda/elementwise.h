/* graft CUDA backend: the elementwise launchers behind core/ops/elementwise.c (binary
 * ops with alpha, unary ops, clamp with scalar bounds, where).
 *
 * The front end has done everything PyTorch decides on the host: result and compute
 * dtypes, broadcast shape, casting checks. Tensor operands arrive on the output's
 * device already in the compute dtype (any strides, broadcast to the output's shape);
 * scalar operands (Lua numbers, 0-dim CPU tensors) arrive by value, already rounded to
 * the compute dtype. Op codes are graft_binary_op / graft_unary_op.
 *
 *     graft_cuda_operand a = {x, 0, 0}, b = {NULL, 2.0, 2};   // x * 2
 *     graft_cuda_binary(out, GRAFT_EW_MUL, GRAFT_F32, &a, &b, 1.0, 1, NULL);
 */
#ifndef GRAFT_CUDA_ELEMENTWISE_H
#define GRAFT_CUDA_ELEMENTWISE_H

#include "cuda/cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A device tensor (t != NULL, borrowed) or a scalar: f for floating compute dtypes,
 * i for integer and bool ones (0 or 1). */
typedef struct {
    graft_tensor *t;
    double f;
    int64_t i;
} graft_cuda_operand;

/* out <- a op b over out's shape; out is bool for comparisons and logical ops, else the
 * compute dtype cd. add/sub: a + alpha * b (alpha_f for floating cd, alpha_i otherwise;
 * sub arrives with alpha negated). zero_div (may be NULL when no integer division can
 * divide by zero) is set to 1 when an integer division met a zero divisor: that check
 * waits for the kernel. */
GRAFT_CUDA_API(graft_cuda_binary, (graft_tensor *out, int op, graft_dtype cd, const graft_cuda_operand *a,
                                   const graft_cuda_operand *b, double alpha_f, int64_t alpha_i, int *zero_div))
/* out <- op(a); a holds the compute dtype, out is bool for isnan/isinf/isfinite/
 * logical_not, else a's dtype. */
GRAFT_CUDA_API(graft_cuda_unary, (graft_tensor *out, int op, graft_tensor *a))
/* out <- min(max(a, lo), hi), lo/hi scalars (t == NULL) or NULL when absent; a and
 * out share a dtype. NaN stays NaN. */
GRAFT_CUDA_API(graft_cuda_clamp, (graft_tensor *out, graft_tensor *a, const graft_cuda_operand *lo,
                                  const graft_cuda_operand *hi))
/* out <- cond ? a : b; cond is bool/uint8 (a tensor, or a scalar in cond->i); a and b
 * hold out's dtype (scalars: f or i as for binary). */
GRAFT_CUDA_API(graft_cuda_where, (graft_tensor *out, const graft_cuda_operand *cond, const graft_cuda_operand *a,
                                  const graft_cuda_operand *b))

#ifdef __cplusplus
}
#endif
#endif
