/* graft CUDA kernels: what every .cu file shares.
 *
 * - GK_LAUNCH(kernel, grid, block, smem, args...) launches on graft's stream;
 *   GK_LAUNCH_FLAT is the same for kernels that never synchronise (no __syncthreads,
 *   no shuffles): on the host emulator they run as plain calls, much faster. Follow a
 *   launch with `return gk_launched("op")`, which turns a launch error into a status.
 *   Template kernels: GK_LAUNCH((name<float, 4>), ...) (parentheses around commas).
 * - gk_check(cudaCall(...), "cudaCall") turns a runtime error into a status naming the call.
 * - Storage types and compute types per graft dtype (gk_type<D>), half and bfloat16 as
 *   uint16_t bits with gk_h2f/gk_f2h/gk_bf2f/gk_f2bf, and dispatch macros.
 * - gk_geom<N>: the coalesced geometry of N operands (from graft_iter_init on the host:
 *   innermost dim first, byte strides), and gk_offsets to turn a linear index into byte
 *   offsets, so one kernel serves every layout and broadcast.
 */
#ifndef GRAFT_CUDA_KERNEL_CUH
#define GRAFT_CUDA_KERNEL_CUH

#ifndef GRAFT_CUDA_EMU_ACTIVE
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#endif
#include <stdint.h>

extern "C" {
#include "tensor/tensor.h"
#include "tensor/iter.h"
#include "cuda/cuda.h"
#include "cuda/internal.h"
}

/* The stream every graft kernel and copy runs on (the legacy default stream). */
extern "C" cudaStream_t graft_cuda_stream(void);
/* A status from a runtime call's result: GRAFT_OK, or an error naming call and reason. */
extern "C" graft_status gk_check(cudaError_t e, const char *call);
/* The status of the last launch (cudaGetLastError), naming op. */
extern "C" graft_status gk_launched(const char *op);

#ifdef GRAFT_CUDA_EMU_ACTIVE
#define GK_LAUNCH(k, grid, block, smem, ...) \
    emu_launch_lambda(#k, dim3(grid), dim3(block), (smem), 0, [&]() { k(__VA_ARGS__); })
#define GK_LAUNCH_FLAT(k, grid, block, smem, ...) \
    emu_launch_lambda(#k, dim3(grid), dim3(block), (smem), 1, [&]() { k(__VA_ARGS__); })
/* extern __shared__ T name[] */
#define GK_DYNAMIC_SMEM(T, name) T *name = (T *)emu_dynamic_smem()
#else
#define GK_LAUNCH(k, grid, block, smem, ...) k<<<(grid), (block), (smem), graft_cuda_stream()>>>(__VA_ARGS__)
#define GK_LAUNCH_FLAT GK_LAUNCH
#define GK_DYNAMIC_SMEM(T, name) extern __shared__ __align__(16) unsigned char gk_smem_raw_[]; T *name = (T *)gk_smem_raw_
#endif

/* PyTorch runs an op on its tensors' device whatever the current device is: every
 * launcher starts with GK_ON_DEVICE(t), t the tensor it writes (all its operands share
 * that device), so its kernels go to t's device (cheap when it is already selected).
 * GK_ON_DEVICE_OF(p) does the same for a launcher handed raw device pointers. */
#define GK_ON_DEVICE(t)                                                                    \
    do {                                                                                   \
        graft_status gk_dev_st_ = gk_use_device(graft_tensor_device(t).index);              \
        if (gk_dev_st_) return gk_dev_st_;                                                 \
    } while (0)
#define GK_ON_DEVICE_OF(p)                                                                 \
    do {                                                                                   \
        graft_status gk_dev_st_ = gk_use_device_of(p);                                     \
        if (gk_dev_st_) return gk_dev_st_;                                                 \
    } while (0)
/* The device that owns device pointer p, selected (one device: no driver query). */
static inline graft_status gk_use_device_of(const void *p) {
    if (graft_cuda_device_count() < 2) return gk_use_device(0);
    cudaPointerAttributes a;
    graft_status st = gk_check(cudaPointerGetAttributes(&a, p), "cudaPointerGetAttributes");
    return st ? st : gk_use_device(a.device);
}

#define GK_THREADS 256
/* Grid-stride loop over [0, n). */
#define GK_FOR(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)blockDim.x * gridDim.x)
/* Blocks for n items at `threads` per block, capped (the loops are grid-stride). */
static inline unsigned gk_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535 * 8) b = 65535 * 8;
    return (unsigned)b;
}

/* ---- half and bfloat16 as bits ---- */
#ifdef GRAFT_CUDA_EMU_ACTIVE
static inline float gk_h2f(uint16_t h) { return graft_f16_to_f32(h); }
static inline uint16_t gk_f2h(float f) { return graft_f32_to_f16(f); }
static inline float gk_bf2f(uint16_t h) { return graft_bf16_to_f32(h); }
static inline uint16_t gk_f2bf(float f) { return graft_f32_to_bf16(f); }
#else
__device__ __forceinline__ float gk_h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ uint16_t gk_f2h(float f) { return __half_as_ushort(__float2half_rn(f)); }
__device__ __forceinline__ float gk_bf2f(uint16_t h) { return __bfloat162float(__ushort_as_bfloat16(h)); }
__device__ __forceinline__ uint16_t gk_f2bf(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
#endif

/* Float to integer as the CPU converts (tensor.c conv_f2i): NaN and out of range give INT64_MIN. */
__host__ __device__ __forceinline__ int64_t gk_f2i(double v) {
    if (!(v == v) || v >= 9223372036854775808.0 || v < -9223372036854775808.0) return INT64_MIN;
    return (int64_t)v;
}

/* ---- per-dtype storage (S) and compute (C) types ---- */
template <int D> struct gk_type;
template <> struct gk_type<GRAFT_F32> {
    typedef float S; typedef float C;
    static __host__ __device__ __forceinline__ C ld(S v) { return v; }
    static __host__ __device__ __forceinline__ S st(C v) { return v; }
};
template <> struct gk_type<GRAFT_F64> {
    typedef double S; typedef double C;
    static __host__ __device__ __forceinline__ C ld(S v) { return v; }
    static __host__ __device__ __forceinline__ S st(C v) { return v; }
};
template <> struct gk_type<GRAFT_F16> {
    typedef uint16_t S; typedef float C;
    static __device__ __forceinline__ C ld(S v) { return gk_h2f(v); }
    static __device__ __forceinline__ S st(C v) { return gk_f2h(v); }
};
template <> struct gk_type<GRAFT_BF16> {
    typedef uint16_t S; typedef float C;
    static __device__ __forceinline__ C ld(S v) { return gk_bf2f(v); }
    static __device__ __forceinline__ S st(C v) { return gk_f2bf(v); }
};
#define GK_INT_TYPE(D, T)                                                                  \
    template <> struct gk_type<D> {                                                        \
        typedef T S; typedef int64_t C;                                                    \
        static __host__ __device__ __forceinline__ C ld(S v) { return (C)v; }              \
        static __host__ __device__ __forceinline__ S st(C v) { return (S)(uint64_t)v; }    \
    };
GK_INT_TYPE(GRAFT_I64, int64_t)
GK_INT_TYPE(GRAFT_I32, int32_t)
GK_INT_TYPE(GRAFT_I16, int16_t)
GK_INT_TYPE(GRAFT_I8, int8_t)
GK_INT_TYPE(GRAFT_U8, uint8_t)
template <> struct gk_type<GRAFT_BOOL> {
    typedef uint8_t S; typedef int64_t C;
    static __host__ __device__ __forceinline__ C ld(S v) { return v != 0; }
    static __host__ __device__ __forceinline__ S st(C v) { return v != 0; }
};

/* Runs BODY with `constexpr int D` set to dtype (one case per dtype of the list). */
#define GK_CASE(DT, ...) case DT: { constexpr int D = DT; __VA_ARGS__; } break;
#define GK_DISPATCH_FLOAT(dtype, ...)                                                      \
    switch (dtype) {                                                                       \
        GK_CASE(GRAFT_F32, __VA_ARGS__) GK_CASE(GRAFT_F64, __VA_ARGS__)                    \
        GK_CASE(GRAFT_F16, __VA_ARGS__) GK_CASE(GRAFT_BF16, __VA_ARGS__)                   \
        default: break;                                                                    \
    }
#define GK_DISPATCH_ALL(dtype, ...)                                                        \
    switch (dtype) {                                                                       \
        GK_CASE(GRAFT_F32, __VA_ARGS__) GK_CASE(GRAFT_F64, __VA_ARGS__)                    \
        GK_CASE(GRAFT_F16, __VA_ARGS__) GK_CASE(GRAFT_BF16, __VA_ARGS__)                   \
        GK_CASE(GRAFT_I64, __VA_ARGS__) GK_CASE(GRAFT_I32, __VA_ARGS__)                    \
        GK_CASE(GRAFT_I16, __VA_ARGS__) GK_CASE(GRAFT_I8, __VA_ARGS__)                     \
        GK_CASE(GRAFT_U8, __VA_ARGS__) GK_CASE(GRAFT_BOOL, __VA_ARGS__)                    \
        default: break;                                                                    \
    }

/* Slow, general element access by runtime dtype (conversions, printing paths). */
__device__ __forceinline__ double gk_load_f64(const char *p, int d) {
    switch (d) {
    case GRAFT_F32: return *(const float *)p;
    case GRAFT_F64: return *(const double *)p;
    case GRAFT_F16: return gk_h2f(*(const uint16_t *)p);
    case GRAFT_BF16: return gk_bf2f(*(const uint16_t *)p);
    case GRAFT_I64: return (double)*(const int64_t *)p;
    case GRAFT_I32: return *(const int32_t *)p;
    case GRAFT_I16: return *(const int16_t *)p;
    case GRAFT_I8: return *(const int8_t *)p;
    case GRAFT_U8: return *(const uint8_t *)p;
    default: return *(const uint8_t *)p != 0;
    }
}
__device__ __forceinline__ int64_t gk_load_i64(const char *p, int d) {
    switch (d) {
    case GRAFT_I64: return *(const int64_t *)p;
    case GRAFT_I32: return *(const int32_t *)p;
    case GRAFT_I16: return *(const int16_t *)p;
    case GRAFT_I8: return *(const int8_t *)p;
    case GRAFT_U8: return *(const uint8_t *)p;
    case GRAFT_BOOL: return *(const uint8_t *)p != 0;
    default: return gk_f2i(gk_load_f64(p, d));
    }
}
__device__ __forceinline__ void gk_store_i64(char *p, int d, int64_t v) {
    switch (d) {
    case GRAFT_F32: *(float *)p = (float)v; break;
    case GRAFT_F64: *(double *)p = (double)v; break;
    case GRAFT_F16: *(uint16_t *)p = gk_f2h((float)v); break;
    case GRAFT_BF16: *(uint16_t *)p = gk_f2bf((float)v); break;
    case GRAFT_I64: *(int64_t *)p = v; break;
    case GRAFT_I32: *(int32_t *)p = (int32_t)(uint32_t)(uint64_t)v; break;
    case GRAFT_I16: *(int16_t *)p = (int16_t)(uint16_t)(uint64_t)v; break;
    case GRAFT_I8: *(int8_t *)p = (int8_t)(uint8_t)(uint64_t)v; break;
    case GRAFT_U8: *(uint8_t *)p = (uint8_t)(uint64_t)v; break;
    default: *(uint8_t *)p = v != 0; break;
    }
}
__device__ __forceinline__ void gk_store_f64(char *p, int d, double v) {
    switch (d) {
    case GRAFT_F32: *(float *)p = (float)v; break;
    case GRAFT_F64: *(double *)p = v; break;
    case GRAFT_F16: *(uint16_t *)p = gk_f2h((float)v); break;
    case GRAFT_BF16: *(uint16_t *)p = gk_f2bf((float)v); break;
    case GRAFT_BOOL: *(uint8_t *)p = v != 0; break;
    default: gk_store_i64(p, d, gk_f2i(v)); break;
    }
}

/* ---- geometry ---- */
template <int N> struct gk_geom {
    int ndim;
    int64_t numel;
    int64_t shape[GRAFT_MAX_DIMS];
    int64_t strides[GRAFT_MAX_DIMS][N]; /* bytes, dim 0 innermost */
};
/* From a host iterator over N operands (pointers come from it->data). */
template <int N> static inline gk_geom<N> gk_geom_of(const graft_iter *it) {
    gk_geom<N> g;
    g.ndim = it->ndim;
    g.numel = it->numel;
    for (int d = 0; d < it->ndim; d++) {
        g.shape[d] = it->shape[d];
        for (int k = 0; k < N; k++) g.strides[d][k] = it->strides[d][k];
    }
    return g;
}
template <int N> __device__ __forceinline__ void gk_offsets(const gk_geom<N> &g, int64_t i, int64_t *off) {
    for (int k = 0; k < N; k++) off[k] = 0;
    for (int d = 0; d < g.ndim; d++) {
        int64_t s = g.shape[d], q = i / s, r = i - q * s;
        for (int k = 0; k < N; k++) off[k] += r * g.strides[d][k];
        i = q;
    }
}

#endif
