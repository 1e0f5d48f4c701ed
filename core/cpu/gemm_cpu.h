/* graft CPU matrix products: the engine behind core/ops/linalg.c (internal header).
 *
 * One batched call covers mm, bmm, matmul, mv, dot and addmm: float32/float64 go to
 * OpenBLAS (gemm, or gemv/dot when a side is a vector) unless one side is 16 or less
 * and the product large enough (cpu/gemm_small.h: register-blocked loops that beat
 * OpenBLAS on classifier heads), int64 to a blocked loop.
 * Operands are strided views; BLAS gets transposed layouts directly (see
 * graft_cpu_blas_layout), and the front end copies only what BLAS cannot read.
 */
#ifndef GRAFT_GEMM_CPU_H
#define GRAFT_GEMM_CPU_H

#include "tensor/tensor.h"

typedef struct {
    graft_dtype dtype;              /* F32, F64 (BLAS) or I64 (loops) */
    int64_t m, n, k, nbatch;
    const char *a;                  /* A[b] (m x k) at a + a_off[b] elements, strides a_rs, a_cs */
    int64_t a_rs, a_cs;
    const int64_t *a_off;           /* per batch, in elements; NULL = all 0 */
    const char *b;                  /* B[b] (k x n) likewise */
    int64_t b_rs, b_cs;
    const int64_t *b_off;
    char *c;                        /* C: contiguous [nbatch, m, n] */
    double alpha, beta;             /* C = alpha A B + beta C; beta == 0 never reads C */
} graft_gemm_args;

/* Whether a rows x cols matrix with element strides (rs, cs) is a BLAS row-major
 * operand: as stored (*trans false) or as the transpose of a stored matrix (*trans
 * true), with leading dimension *ld. */
bool graft_cpu_blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, bool *trans, int64_t *ld);

/* Runs the batched product. Float operands must pass graft_cpu_blas_layout and every
 * size must fit BLAS's int (checked: GRAFT_EINVAL). */
graft_status graft_cpu_gemm(const graft_gemm_args *g, const char *op);

#endif
