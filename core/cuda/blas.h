/* graft CUDA backend: cuBLAS, loaded at first use (internal header of blas.c and
 * emu/emu_blas.cpp; the front ends use cuda/linalg.h).
 *
 * graft links no cuBLAS: a machine without it (a CI box, no driver) starts and runs on
 * the CPU. The first product on a GPU dlopens libcublas ("libcublas.so.13", then
 * "libcublas.so", then $CUDA_HOME/lib64 and the folders or files listed in
 * GRAFT_CUBLAS_PATH, colon-separated) and fills a table with the few calls graft makes.
 * cublas_api.h is included for its types only. In the emulated build (GRAFT_CUDA_EMU)
 * the table comes from emu_blas.cpp: the same calls on the host, through OpenBLAS.
 */
#ifndef GRAFT_CUDA_BLAS_H
#define GRAFT_CUDA_BLAS_H

#include <cublas_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "tensor/tensor.h"

/* The cuBLAS v2 calls graft uses, with their signatures from cublas_api.h. */
typedef struct {
    cublasStatus_t (*create)(cublasHandle_t *handle);                              /* cublasCreate_v2 */
    cublasStatus_t (*destroy)(cublasHandle_t handle);                              /* cublasDestroy_v2 */
    cublasStatus_t (*set_stream)(cublasHandle_t handle, cudaStream_t stream);      /* cublasSetStream_v2 */
    cublasStatus_t (*set_math_mode)(cublasHandle_t handle, cublasMath_t mode);     /* cublasSetMathMode */
    cublasStatus_t (*gemm_ex)(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                              int n, int k, const void *alpha, const void *A, cudaDataType Atype, int lda,
                              const void *B, cudaDataType Btype, int ldb, const void *beta, void *C,
                              cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                              cublasGemmAlgo_t algo);                               /* cublasGemmEx */
    cublasStatus_t (*gemm_strided_batched_ex)(cublasHandle_t handle, cublasOperation_t transa,
                                              cublasOperation_t transb, int m, int n, int k, const void *alpha,
                                              const void *A, cudaDataType Atype, int lda, long long int strideA,
                                              const void *B, cudaDataType Btype, int ldb, long long int strideB,
                                              const void *beta, void *C, cudaDataType Ctype, int ldc,
                                              long long int strideC, int batchCount,
                                              cublasComputeType_t computeType,
                                              cublasGemmAlgo_t algo);       /* cublasGemmStridedBatchedEx */
    const char *(*status_name)(cublasStatus_t status);                             /* cublasGetStatusName */
    const char *(*status_string)(cublasStatus_t status);                           /* cublasGetStatusString */
} graft_cublas_api;

/* The table, loading the library on the first call. GRAFT_EDEVICE naming `op`, the
 * library and dlerror() when it cannot be loaded (every later call fails the same way). */
graft_status graft_cublas_api_get(const graft_cublas_api **out, const char *op);
/* The handle of CUDA device `device` (made current), created on first use and bound to
 * graft's stream. */
graft_status graft_cublas_handle(cublasHandle_t *out, int device, const char *op);
/* A failed call's status: "op: call: CUBLAS_STATUS_... (reason)"; GRAFT_OK on success. */
graft_status graft_cublas_check(cublasStatus_t s, const char *call, const char *op);

#ifdef GRAFT_CUDA_EMU
/* emu_blas.cpp: fills the table with the host implementations. */
void graft_emu_blas_fill(graft_cublas_api *api);
#endif

#ifdef __cplusplus
}
#endif
#endif
