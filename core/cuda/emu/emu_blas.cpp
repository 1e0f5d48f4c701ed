/* graft CUDA emulator: the cuBLAS calls graft makes, on the host.
 *
 * blas.c fills its table from here in the emulated build (GRAFT_CUDA_EMU) instead of
 * dlopen'ing libcublas. The semantics are cuBLAS's: column-major operands, op(A) is A
 * or its transpose, C = alpha op(A) op(B) + beta C with C unread when beta is 0, the
 * same argument checks (leading dimensions, type combinations) and status codes.
 * float32/float64 run on OpenBLAS (cblas_sgemm/dgemm; TF32 is plain float32 here);
 * 16-bit operands are widened to float, multiplied with float accumulation and rounded
 * once into C (16-bit or float32), as cuBLAS's CUBLAS_COMPUTE_32F does. The work runs
 * as a one-thread "kernel" (emu_launch) so that device memory is readable meanwhile.
 */
#include <cublas_api.h>

#include "cuda/blas.h"
#include "cuda/emu/emu.h"

#include <cblas.h>
#include <stdlib.h>
#include <vector>

namespace {

struct emu_blas_handle { cudaStream_t stream; cublasMath_t mode; };

cublasStatus_t eb_create(cublasHandle_t *h) {
    if (!h) return CUBLAS_STATUS_INVALID_VALUE;
    emu_blas_handle *e = (emu_blas_handle *)calloc(1, sizeof *e);
    if (!e) return CUBLAS_STATUS_ALLOC_FAILED;
    *h = (cublasHandle_t)e;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t eb_destroy(cublasHandle_t h) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t eb_set_stream(cublasHandle_t h, cudaStream_t s) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    ((emu_blas_handle *)h)->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t eb_set_math_mode(cublasHandle_t h, cublasMath_t mode) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    ((emu_blas_handle *)h)->mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

/* One element of a real type as float / double, and back (rounded to nearest even). */
float eb_load(const void *p, int64_t i, cudaDataType t) {
    switch (t) {
    case CUDA_R_32F: return ((const float *)p)[i];
    case CUDA_R_64F: return (float)((const double *)p)[i];
    case CUDA_R_16F: return graft_f16_to_f32(((const uint16_t *)p)[i]);
    default: return graft_bf16_to_f32(((const uint16_t *)p)[i]);
    }
}
void eb_store(void *p, int64_t i, cudaDataType t, float v) {
    switch (t) {
    case CUDA_R_32F: ((float *)p)[i] = v; break;
    case CUDA_R_16F: ((uint16_t *)p)[i] = graft_f32_to_f16(v); break;
    default: ((uint16_t *)p)[i] = graft_f32_to_bf16(v); break;
    }
}

/* The combinations of types and compute types graft uses, as cuBLAS accepts them. */
bool eb_supported(cudaDataType ab, cudaDataType c, cublasComputeType_t ct) {
    switch (ab) {
    case CUDA_R_32F: return c == CUDA_R_32F && (ct == CUBLAS_COMPUTE_32F || ct == CUBLAS_COMPUTE_32F_FAST_TF32 ||
                                                 ct == CUBLAS_COMPUTE_32F_PEDANTIC);
    case CUDA_R_64F: return c == CUDA_R_64F && (ct == CUBLAS_COMPUTE_64F || ct == CUBLAS_COMPUTE_64F_PEDANTIC);
    case CUDA_R_16F:
    case CUDA_R_16BF: return (c == ab || c == CUDA_R_32F) && (ct == CUBLAS_COMPUTE_32F || ct == CUBLAS_COMPUTE_32F_PEDANTIC);
    default: return false;
    }
}

size_t eb_size(cudaDataType t) {
    switch (t) {
    case CUDA_R_64F: return 8;
    case CUDA_R_32F: return 4;
    default: return 2;
    }
}

struct eb_gemm {
    cublasOperation_t ta, tb;
    int m, n, k;
    const void *alpha, *beta;
    const void *A; cudaDataType at; int lda;
    const void *B; cudaDataType bt; int ldb;
    void *C; cudaDataType ct; int ldc;
};

CBLAS_TRANSPOSE eb_trans(cublasOperation_t o) { return o == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; }

/* One product, on the host (device memory open). */
void eb_run(const eb_gemm &g) {
    if (g.m == 0 || g.n == 0) return;
    if (g.at == CUDA_R_64F) {
        cblas_dgemm(CblasColMajor, eb_trans(g.ta), eb_trans(g.tb), g.m, g.n, g.k, *(const double *)g.alpha,
                    (const double *)g.A, g.lda, (const double *)g.B, g.ldb, *(const double *)g.beta, (double *)g.C,
                    g.ldc);
        return;
    }
    if (g.at == CUDA_R_32F) {
        cblas_sgemm(CblasColMajor, eb_trans(g.ta), eb_trans(g.tb), g.m, g.n, g.k, *(const float *)g.alpha,
                    (const float *)g.A, g.lda, (const float *)g.B, g.ldb, *(const float *)g.beta, (float *)g.C,
                    g.ldc);
        return;
    }
    /* 16-bit: op(A) [m, k], op(B) [k, n] and C [m, n] widened to dense column-major floats */
    int64_t m = g.m, n = g.n, k = g.k;
    std::vector<float> a((size_t)(m * k)), b((size_t)(k * n)), c((size_t)(m * n), 0.0f);
    for (int64_t j = 0; j < k; j++)
        for (int64_t i = 0; i < m; i++)
            a[(size_t)(i + j * m)] = eb_load(g.A, g.ta == CUBLAS_OP_N ? i + j * g.lda : j + i * g.lda, g.at);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < k; i++)
            b[(size_t)(i + j * k)] = eb_load(g.B, g.tb == CUBLAS_OP_N ? i + j * g.ldb : j + i * g.ldb, g.bt);
    float beta = *(const float *)g.beta;
    if (beta != 0.0f)
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < m; i++) c[(size_t)(i + j * m)] = eb_load(g.C, i + j * g.ldc, g.ct);
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, g.m, g.n, g.k, *(const float *)g.alpha, a.data(), g.m,
                b.data(), g.k, beta, c.data(), g.m);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < m; i++) eb_store(g.C, i + j * g.ldc, g.ct, c[(size_t)(i + j * m)]);
}

/* cuBLAS's argument checks, in its order. */
cublasStatus_t eb_check(cublasHandle_t h, const eb_gemm &g, cublasComputeType_t ct, int batch) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    bool ops_ok = (g.ta == CUBLAS_OP_N || g.ta == CUBLAS_OP_T) && (g.tb == CUBLAS_OP_N || g.tb == CUBLAS_OP_T);
    int arows = g.ta == CUBLAS_OP_N ? g.m : g.k, brows = g.tb == CUBLAS_OP_N ? g.k : g.n;
    if (!ops_ok || g.m < 0 || g.n < 0 || g.k < 0 || batch < 0 || g.lda < (arows > 1 ? arows : 1) ||
        g.ldb < (brows > 1 ? brows : 1) || g.ldc < (g.m > 1 ? g.m : 1) || !g.alpha || !g.beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (g.at != g.bt || !eb_supported(g.at, g.ct, ct)) return CUBLAS_STATUS_NOT_SUPPORTED;
    return CUBLAS_STATUS_SUCCESS;
}

struct eb_batch { eb_gemm g; long long sa, sb, sc; int count; };

void eb_run_batch(eb_batch *bt) {
    size_t ea = eb_size(bt->g.at), eb = eb_size(bt->g.bt), ec = eb_size(bt->g.ct);
    for (int i = 0; i < bt->count; i++) {
        eb_gemm g = bt->g;
        g.A = (const char *)g.A + (size_t)((long long)i * bt->sa) * ea;
        g.B = (const char *)g.B + (size_t)((long long)i * bt->sb) * eb;
        g.C = (char *)g.C + (size_t)((long long)i * bt->sc) * ec;
        eb_run(g);
    }
}

void eb_kernel(void *ctx) { eb_run_batch((eb_batch *)ctx); }

cublasStatus_t eb_gemm_strided_batched_ex(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void *alpha, const void *A, cudaDataType at, int lda,
                                          long long sa, const void *B, cudaDataType bt, int ldb, long long sb,
                                          const void *beta, void *C, cudaDataType ct, int ldc, long long sc,
                                          int count, cublasComputeType_t comp, cublasGemmAlgo_t) {
    eb_batch b = {{ta, tb, m, n, k, alpha, beta, A, at, lda, B, bt, ldb, C, ct, ldc}, sa, sb, sc, count};
    cublasStatus_t s = eb_check(h, b.g, comp, count);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (m == 0 || n == 0 || count == 0) return CUBLAS_STATUS_SUCCESS;
    emu_launch("cublasGemm", dim3(1), dim3(1), 0, 1, eb_kernel, &b);
    return cudaGetLastError() == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

cublasStatus_t eb_gemm_ex(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                          const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                          int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t comp,
                          cublasGemmAlgo_t algo) {
    return eb_gemm_strided_batched_ex(h, ta, tb, m, n, k, alpha, A, at, lda, 0, B, bt, ldb, 0, beta, C, ct, ldc, 0, 1,
                                      comp, algo);
}

const char *eb_status_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    default: return "CUBLAS_STATUS_INTERNAL_ERROR";
    }
}

const char *eb_status_string(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    default: return "an internal operation failed";
    }
}

} // namespace

extern "C" void graft_emu_blas_fill(graft_cublas_api *api) {
    api->create = eb_create;
    api->destroy = eb_destroy;
    api->set_stream = eb_set_stream;
    api->set_math_mode = eb_set_math_mode;
    api->gemm_ex = eb_gemm_ex;
    api->gemm_strided_batched_ex = eb_gemm_strided_batched_ex;
    api->status_name = eb_status_name;
    api->status_string = eb_status_string;
}
