/* graft ops: matrix products with PyTorch's rules (mm, bmm, matmul, mv, dot, outer,
 * addmm, baddbmm).
 *
 * Operands must share a dtype and a device, as in PyTorch (matmul of float32 and
 * float64 is an error); bool is rejected. On the CPU float32/float64 run on OpenBLAS,
 * transposed views included (no copy); float16/bfloat16 compute in float32 and round
 * back; integer dtypes use an exact int64 loop and wrap like PyTorch. On CUDA every
 * product is one cuBLAS call (float32/float64/float16/bfloat16, 16-bit with float32
 * accumulation; integers are CPU-only, as in PyTorch); float32 may use TF32 tensor
 * cores when graft_linalg_set_allow_tf32 says so. Under autocast (ops/autocast.h) the
 * products cast their inputs first. Results are fresh contiguous tensors (+1).
 *
 *     graft_tensor *c;
 *     if (graft_linalg_matmul(&c, a, b)) puts(graft_last_error());
 */
#ifndef GRAFT_LINALG_H
#define GRAFT_LINALG_H

#include "tensor/tensor.h"

/* torch.matmul: 1-D x 1-D is a dot product (0-dim), 2-D x 1-D a matrix-vector product,
 * 1-D x 2-D a vector-matrix product, and anything with more dims a batched product
 * whose batch dims broadcast ([j, 1, n, m] x [k, m, p] -> [j, k, n, p]). */
graft_status graft_linalg_matmul(graft_tensor **out, graft_tensor *a, graft_tensor *b);
/* [n, m] x [m, p] -> [n, p] */
graft_status graft_linalg_mm(graft_tensor **out, graft_tensor *a, graft_tensor *b);
/* [B, n, m] x [B, m, p] -> [B, n, p] (no broadcasting, as torch.bmm) */
graft_status graft_linalg_bmm(graft_tensor **out, graft_tensor *a, graft_tensor *b);
/* [n, m] x [m] -> [n] */
graft_status graft_linalg_mv(graft_tensor **out, graft_tensor *a, graft_tensor *v);
/* [n] . [n] -> 0-dim */
graft_status graft_linalg_dot(graft_tensor **out, graft_tensor *a, graft_tensor *b);
/* [n] x [m] -> [n, m], dtypes promoted as PyTorch's a[:, None] * b */
graft_status graft_linalg_outer(graft_tensor **out, graft_tensor *a, graft_tensor *b);
/* beta * input + alpha * (m1 @ m2); input broadcasts to [n, p]; beta == 0 ignores
 * input entirely (NaN included), as PyTorch. */
graft_status graft_linalg_addmm(graft_tensor **out, graft_tensor *input, graft_tensor *m1, graft_tensor *m2,
                                double beta, double alpha);
/* beta * input + alpha * bmm(b1, b2); input broadcasts to [B, n, p]. */
graft_status graft_linalg_baddbmm(graft_tensor **out, graft_tensor *input, graft_tensor *b1, graft_tensor *b2,
                                  double beta, double alpha);

/* PyTorch's torch.backends.cuda.matmul.allow_tf32 (off by default): float32 products
 * on CUDA may round their inputs to TF32 (10-bit mantissa) on the tensor cores. */
void graft_linalg_set_allow_tf32(bool on);
bool graft_linalg_allow_tf32(void);

#endif
