/* graft CUDA backend: the cuBLAS loader and graft_cuda_gemm, the one entry point every
 * matrix product on the GPU goes through (matmul and its family, linear, conv).
 * libcublas is dlopen'ed at first use (see blas.h), so graft starts without it; in the
 * emulated build the table is filled by emu/emu_blas.cpp instead. Host-side C: device
 * pointers are passed to cuBLAS, never dereferenced. */
#include "cpu/gemm_cpu.h"
#include "cuda/blas.h"
#include "cuda/internal.h"
#include "cuda/linalg.h"

#include <cuda_runtime_api.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef GRAFT_CUDA_EMU
#include <dlfcn.h>
#endif

cudaStream_t graft_cuda_stream(void);

#define BL_MAX_DEVICES 16

static graft_cublas_api bl_api;
static int bl_state;                 /* 0 not tried, 1 loaded, -1 failed */
static char bl_why[1024];            /* why loading failed (repeated to every later call) */
static cublasHandle_t bl_handles[BL_MAX_DEVICES];

/* ---- loading ---- */

#ifndef GRAFT_CUDA_EMU
/* The library from the loader's path, then $CUDA_HOME/lib64, then GRAFT_CUBLAS_PATH. */
static void *bl_open(void) {
    static const char *const names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so", NULL};
    return gk_dlopen(names, "GRAFT_CUBLAS_PATH", bl_why, sizeof bl_why);
}

/* One symbol into *slot; false (and bl_why set) when the library lacks it. */
static bool bl_sym(void *h, void **slot, const char *name, bool required) {
    *slot = dlsym(h, name);
    if (*slot || !required) return true;
    snprintf(bl_why, sizeof bl_why, "libcublas has no %s (cuBLAS 11.4 or newer is needed)", name);
    return false;
}
#endif

static void bl_load(void) {
#ifdef GRAFT_CUDA_EMU
    graft_emu_blas_fill(&bl_api);
    bl_state = 1;
#else
    void *h = bl_open();
    if (!h) {
        char tmp[sizeof bl_why];
        memcpy(tmp, bl_why, sizeof tmp);
        snprintf(bl_why, sizeof bl_why,
                 "cannot load libcublas (%.800s); install cuBLAS or point GRAFT_CUBLAS_PATH at the folder holding "
                 "libcublas.so",
                 tmp);
        bl_state = -1;
        return;
    }
    bool ok = bl_sym(h, (void **)&bl_api.create, "cublasCreate_v2", true) &&
              bl_sym(h, (void **)&bl_api.destroy, "cublasDestroy_v2", true) &&
              bl_sym(h, (void **)&bl_api.set_stream, "cublasSetStream_v2", true) &&
              bl_sym(h, (void **)&bl_api.set_math_mode, "cublasSetMathMode", true) &&
              bl_sym(h, (void **)&bl_api.gemm_ex, "cublasGemmEx", true) &&
              bl_sym(h, (void **)&bl_api.gemm_strided_batched_ex, "cublasGemmStridedBatchedEx", true) &&
              bl_sym(h, (void **)&bl_api.status_name, "cublasGetStatusName", false) &&
              bl_sym(h, (void **)&bl_api.status_string, "cublasGetStatusString", false);
    bl_state = ok ? 1 : -1;
#endif
}

graft_status graft_cublas_api_get(const graft_cublas_api **out, const char *op) {
    *out = NULL;
    if (bl_state == 0) bl_load();
    if (bl_state < 0) return graft_error(GRAFT_EDEVICE, "%s: %s", op, bl_why);
    *out = &bl_api;
    return GRAFT_OK;
}

/* cuBLAS's own names for the statuses (when the library predates cublasGetStatusName). */
static const char *bl_status_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

graft_status graft_cublas_check(cublasStatus_t s, const char *call, const char *op) {
    if (s == CUBLAS_STATUS_SUCCESS) return GRAFT_OK;
    const char *name = bl_api.status_name ? bl_api.status_name(s) : bl_status_name(s);
    const char *why = bl_api.status_string ? bl_api.status_string(s) : "see the cuBLAS documentation";
    return graft_error(s == CUBLAS_STATUS_ALLOC_FAILED ? GRAFT_ENOMEM : GRAFT_EDEVICE, "%s: %s: %s (%s)", op, call,
                       name ? name : bl_status_name(s), why ? why : "");
}

/* The handle is created with `device` current (cuBLAS binds it to that device), which
 * stays selected: every gemm on the device runs with it current. */
graft_status graft_cublas_handle(cublasHandle_t *out, int device, const char *op) {
    const graft_cublas_api *api;
    graft_status st;
    *out = NULL;
    if (device < 0 || device >= BL_MAX_DEVICES) return graft_error(GRAFT_EDEVICE, "%s: no CUDA device %d", op, device);
    if ((st = graft_cublas_api_get(&api, op))) return st;
    if ((st = gk_use_device(device))) return st;
    if (!bl_handles[device]) {
        cublasHandle_t h = NULL;
        st = graft_cublas_check(api->create(&h), "cublasCreate_v2", op);
        /* 16-bit products reduce in float32 only (no split-K partial sums rounded to the
         * 16-bit output type): one rounding into C, as the CPU and the emulator do
         * (PyTorch's allow_fp16/bf16_reduced_precision_reduction = False) */
        cublasMath_t mode = (cublasMath_t)(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
        if (!st && ((st = graft_cublas_check(api->set_stream(h, graft_cuda_stream()), "cublasSetStream_v2", op)) ||
                    (st = graft_cublas_check(api->set_math_mode(h, mode), "cublasSetMathMode", op))))
            api->destroy(h);
        if (st) return st;
        bl_handles[device] = h;
    }
    *out = bl_handles[device];
    return GRAFT_OK;
}

/* ---- graft_cuda_gemm ---- */

/* How cuBLAS reads a rows x cols row-major operand with element strides (rs, cs): the
 * layouts BLAS reads (graft_cpu_blas_layout), as a column-major cols x rows matrix (its
 * transpose: op N) with leading dimension *ld, or, when stored transposed, as a
 * column-major rows x cols matrix (op T). False when it is neither (the front end
 * checked first). */
static bool bl_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, cublasOperation_t *op, int64_t *ld) {
    bool trans;
    if (!graft_cpu_blas_layout(rows, cols, rs, cs, &trans, ld)) return false;
    *op = trans ? CUBLAS_OP_T : CUBLAS_OP_N;
    return true;
}

static cudaDataType bl_type(graft_dtype d) {
    switch (d) {
    case GRAFT_F64: return CUDA_R_64F;
    case GRAFT_F16: return CUDA_R_16F;
    case GRAFT_BF16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
    }
}

static bool bl_fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* Row-major C = A B is column-major C^T = B^T A^T: cuBLAS gets B's memory as its first
 * operand and A's as its second, m and n swapped; C^T is C's memory with ldc = c_rs. */
graft_status graft_cuda_gemm(const graft_cuda_gemm_args *g, const char *op) {
    const graft_cublas_api *api;
    cublasHandle_t h;
    graft_status st;
    if (g->m == 0 || g->n == 0 || g->nbatch == 0) return GRAFT_OK;
    /* the operands' device, whatever the current one is (as PyTorch) */
    if ((st = gk_use_device(g->device))) return st;
    bool f64 = g->ab_dtype == GRAFT_F64, half = g->ab_dtype == GRAFT_F16 || g->ab_dtype == GRAFT_BF16;
    if (!(f64 || half || g->ab_dtype == GRAFT_F32) ||
        !(g->c_dtype == g->ab_dtype || (half && g->c_dtype == GRAFT_F32)))
        return graft_error(GRAFT_EINTERNAL, "%s: no cuBLAS product for %s x %s -> %s", op,
                           graft_dtype_name(g->ab_dtype), graft_dtype_name(g->ab_dtype), graft_dtype_name(g->c_dtype));
    if (g->k == 0) {
        /* the empty sum: C = beta C (cuBLAS's handling of k = 0 is not relied upon) */
        if (g->c_rs != g->n || (g->nbatch > 1 && g->c_bs != g->m * g->n))
            return graft_error(GRAFT_EINTERNAL, "%s: an empty product needs a contiguous output", op);
        return graft_cuda_scale_(g->c, g->c_dtype, g->nbatch * g->m * g->n, g->beta);
    }
    cublasOperation_t opa, opb;
    int64_t lda, ldb;
    if (!bl_layout(g->k, g->n, g->b_rs, g->b_cs, &opa, &lda) || !bl_layout(g->m, g->k, g->a_rs, g->a_cs, &opb, &ldb))
        return graft_error(GRAFT_EINTERNAL, "%s: operand layout is not one cuBLAS reads", op);
    if (!bl_fits_int(g->m) || !bl_fits_int(g->n) || !bl_fits_int(g->k) || !bl_fits_int(lda) || !bl_fits_int(ldb) ||
        !bl_fits_int(g->c_rs) || g->c_rs < g->n)
        return graft_error(GRAFT_EINVAL, "%s: matrix dimensions exceed what cuBLAS accepts (%d)", op, INT_MAX);
    if ((st = graft_cublas_handle(&h, g->device, op)) || (st = graft_cublas_api_get(&api, op))) return st;

    cublasComputeType_t ct = f64 ? CUBLAS_COMPUTE_64F
                             : (g->tf32 && g->ab_dtype == GRAFT_F32) ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                     : CUBLAS_COMPUTE_32F;
    float af = (float)g->alpha, bf = (float)g->beta;
    double ad = g->alpha, bd = g->beta;
    const void *alpha = f64 ? (const void *)&ad : (const void *)&af;
    const void *beta = f64 ? (const void *)&bd : (const void *)&bf;
    cudaDataType tab = bl_type(g->ab_dtype), tc = bl_type(g->c_dtype);
    size_t esz = graft_dtype_size(g->ab_dtype), csz = graft_dtype_size(g->c_dtype);
    int m = (int)g->n, n = (int)g->m, k = (int)g->k; /* cuBLAS's m, n: C^T is n x m */
    if (g->nbatch == 1) {
        st = graft_cublas_check(api->gemm_ex(h, opa, opb, m, n, k, alpha, g->b, tab, (int)lda, g->a, tab, (int)ldb,
                                             beta, g->c, tc, (int)g->c_rs, ct, CUBLAS_GEMM_DEFAULT),
                                "cublasGemmEx", op);
        return st;
    }
    /* batches of at most INT_MAX at a time */
    for (int64_t b0 = 0; b0 < g->nbatch && !st; b0 += INT_MAX) {
        int cnt = (int)(g->nbatch - b0 < INT_MAX ? g->nbatch - b0 : INT_MAX);
        const char *A = (const char *)g->b + (size_t)(b0 * g->b_bs) * esz;
        const char *B = (const char *)g->a + (size_t)(b0 * g->a_bs) * esz;
        char *C = (char *)g->c + (size_t)(b0 * g->c_bs) * csz;
        st = graft_cublas_check(api->gemm_strided_batched_ex(h, opa, opb, m, n, k, alpha, A, tab, (int)lda, g->b_bs, B,
                                                             tab, (int)ldb, g->a_bs, beta, C, tc, (int)g->c_rs,
                                                             g->c_bs, cnt, ct, CUBLAS_GEMM_DEFAULT),
                                "cublasGemmStridedBatchedEx", op);
    }
    return st;
}
