/* graft CPU matrix products with one small side (internal header, used by gemm_cpu.c).
 *
 * A classifier head's forward (n small), input gradient (k small) and weight gradient
 * (m small) are products OpenBLAS runs far below peak once they are large enough to
 * matter. graft_cpu_gemm offers each float32/float64 product of a batch to these kernels
 * first and calls BLAS when they decline:
 *
 *     if (!graft_cpu_gemm_small_f32(g, A, B, C)) cblas_sgemm(...);
 *
 * They decline vectors (m or n of 1, gemv's), products with no side of 16 or less, and
 * products too small to beat OpenBLAS's own small-matrix kernels: under about 2^17
 * multiply-adds when the OpenMP pool can split them, 2^20 on one thread (gemm_small.c
 * has the measured bounds).
 */
#ifndef GRAFT_GEMM_SMALL_H
#define GRAFT_GEMM_SMALL_H

#include "cpu/gemm_cpu.h"

/* C (g->m x g->n, contiguous) = alpha A B + beta C for one product of g, A and B read
 * through g's element strides; beta == 0 never reads C. True when done; false, with C
 * untouched, when declined or when a packing buffer could not be allocated. Splits the
 * work across the OpenMP pool when not already inside a parallel region. */
bool graft_cpu_gemm_small_f32(const graft_gemm_args *g, const float *A, const float *B, float *C);
bool graft_cpu_gemm_small_f64(const graft_gemm_args *g, const double *A, const double *B, double *C);

#endif
