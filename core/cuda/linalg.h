/* graft CUDA backend: matrix products through cuBLAS, for the front ends in core/ops
 * and core/nn (no CUDA type appears here: core C files include it freely).
 *
 * One call describes a batch of row-major products C[i] = alpha A[i] B[i] + beta C[i]
 * with element strides, as core/ops/linalg.c sees its operands; blas.c maps it onto
 * cublasGemmEx / cublasGemmStridedBatchedEx (column-major: C^T = B^T A^T), so an
 * operand stored transposed (a linear layer's w^T) is read in place.
 *
 *     graft_cuda_gemm_args g = {.ab_dtype = GRAFT_F32, .c_dtype = GRAFT_F32, .m = 64, ...};
 *     if (graft_cuda_gemm(&g, "mm")) puts(graft_last_error());
 */
#ifndef GRAFT_CUDA_LINALG_H
#define GRAFT_CUDA_LINALG_H

#ifdef __cplusplus
extern "C" {
#endif

#include "cuda/cuda.h"

typedef struct {
    graft_dtype ab_dtype;       /* A and B: F32, F64, F16 or BF16 */
    graft_dtype c_dtype;        /* C: ab_dtype, or F32 under 16-bit A and B */
    int device;                 /* the CUDA device every pointer lives on */
    int64_t m, n, k, nbatch;
    const void *a;              /* A[i] (m x k) at a + i * a_bs elements; element (r, c) at r * a_rs + c * a_cs */
    int64_t a_rs, a_cs, a_bs;
    const void *b;              /* B[i] (k x n) likewise */
    int64_t b_rs, b_cs, b_bs;
    void *c;                    /* C[i] (m x n): element (r, c) at i * c_bs + r * c_rs + c */
    int64_t c_rs, c_bs;
    double alpha, beta;         /* beta == 0: C is never read (NaN included) */
    bool tf32;                  /* float32 inputs: allow TF32 tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32) */
} graft_cuda_gemm_args;

/* Runs the batch on the current stream (asynchronous, as every launcher). Errors:
 * GRAFT_EDEVICE naming the cuBLAS call and its status (or the library that could not be
 * loaded), GRAFT_EINVAL for sizes cuBLAS cannot take. */
GRAFT_CUDA_API(graft_cuda_gemm, (const graft_cuda_gemm_args *g, const char *op))

/* c[i] *= beta for the n contiguous elements of dtype d at c (beta == 0 writes zeros):
 * the empty product (k == 0) of addmm and baddbmm. linalg.cu. */
GRAFT_CUDA_API(graft_cuda_scale_, (void *c, graft_dtype d, int64_t n, double beta))

#ifdef __cplusplus
}
#endif
#endif
