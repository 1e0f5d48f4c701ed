/* graft CUDA backend: softmax, log_softmax and the fused activations of core/nn
 * (activation.c dispatches here for CUDA tensors). Operands are on one CUDA device,
 * float32 or float64 (activations also float16 / bfloat16); outputs are allocated by
 * the caller.
 *
 * When included from a .cu file (after kernel.cuh) this header also defines the
 * device-side row helpers that nn_act.cu and nn_loss.cu share: thread, warp and block
 * groups with deterministic sum / max / online log-sum-exp reductions.
 */
#ifndef GRAFT_CUDA_NN_ACT_H
#define GRAFT_CUDA_NN_ACT_H

#include "cuda/cuda.h"

#ifdef __cplusplus
extern "C" {
#endif
#include "nn/functional.h"

/* y <- softmax (or log_softmax) of x viewed as [outer, D, inner] along D; x and y
 * contiguous, same dtype. */
GRAFT_CUDA_API(graft_cuda_nn_softmax_forward,
               (graft_tensor *y, graft_tensor *x, int64_t outer, int64_t D, int64_t inner, bool log))
/* dx <- y (g - sum(g y)) (softmax) or g - e^y sum(g) (log_softmax); all contiguous. */
GRAFT_CUDA_API(graft_cuda_nn_softmax_backward, (graft_tensor *dx, graft_tensor *g, graft_tensor *y, int64_t outer,
                                                int64_t D, int64_t inner, bool log))
/* y <- act(x); y contiguous, x any layout of y's shape and dtype (any floating dtype:
 * 16-bit ones are computed in float). */
GRAFT_CUDA_API(graft_cuda_nn_activation_forward, (graft_tensor *y, graft_tensor *x, graft_nn_act act, double param))
/* dx <- g act'(x); g and x any layout of dx's shape and dtype. */
GRAFT_CUDA_API(graft_cuda_nn_activation_backward,
               (graft_tensor *dx, graft_tensor *g, graft_tensor *x, graft_nn_act act, double param))

#ifdef __cplusplus
}
#endif

#ifdef GRAFT_CUDA_KERNEL_CUH
/* ---- device helpers for the nn kernels (.cu files only) ---- */

/* Accumulation type: float for float32 and the 16-bit types, double for float64. */
template <int DT> struct nk_acc { typedef float A; };
template <> struct nk_acc<GRAFT_F64> { typedef double A; };

/* Math on the accumulation type (the float overloads are the accurate CUDA ones). */
__device__ __forceinline__ float nk_exp(float x) { return expf(x); }
__device__ __forceinline__ double nk_exp(double x) { return exp(x); }
__device__ __forceinline__ float nk_log(float x) { return logf(x); }
__device__ __forceinline__ double nk_log(double x) { return log(x); }
__device__ __forceinline__ float nk_expm1(float x) { return expm1f(x); }
__device__ __forceinline__ double nk_expm1(double x) { return expm1(x); }
__device__ __forceinline__ float nk_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double nk_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float nk_erf(float x) { return erff(x); }
__device__ __forceinline__ double nk_erf(double x) { return erf(x); }
__device__ __forceinline__ float nk_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double nk_abs(double x) { return fabs(x); }
template <class A> __device__ __forceinline__ A nk_inf(void) { return (A)INFINITY; }

/* One element folded into a running (max m, sum s of e^(x - m)): the online
 * log-sum-exp. -inf elements add nothing (unless every element is -inf); NaN
 * propagates into s. */
template <class A> __device__ __forceinline__ void nk_online_add(A &m, A &s, A x) {
    if (x > m) {
        s = s * nk_exp(m - x) + (A)1;
        m = x;
    } else if (x != -nk_inf<A>()) {
        s += nk_exp(x - m);
    }
}
/* (m, s) <- (m, s) combined with (m2, s2). */
template <class A> __device__ __forceinline__ void nk_online_merge(A &m, A &s, A m2, A s2) {
    A mm = m > m2 ? m : m2;
    A a = s == (A)0 ? (A)0 : s * nk_exp(m - mm), b = s2 == (A)0 ? (A)0 : s2 * nk_exp(m2 - mm);
    m = mm;
    s = a + b;
}

/* The threads that process one row together. rank()/size() split the row's elements
 * (element c goes to rank c % size); sum, max and online reductions return the
 * result to every member, always combining in the same order (deterministic). A
 * group's members must all call each reduction (warp and block groups synchronise). */
struct nk_thread_group {
    __device__ __forceinline__ int rank() const { return 0; }
    __device__ __forceinline__ int size() const { return 1; }
    template <class A> __device__ __forceinline__ A sum(A v) const { return v; }
    template <class A> __device__ __forceinline__ A max(A v) const { return v; }
    template <class A> __device__ __forceinline__ void online(A &m, A &s) const { (void)m; (void)s; }
};

template <class A> __device__ __forceinline__ A nk_warp_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <class A> __device__ __forceinline__ A nk_warp_max(A v) {
    for (int o = 16; o > 0; o >>= 1) {
        A u = __shfl_xor_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    return v;
}
template <class A> __device__ __forceinline__ void nk_warp_online(A &m, A &s) {
    for (int o = 16; o > 0; o >>= 1) {
        A m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        nk_online_merge(m, s, m2, s2);
    }
}

/* A warp per row (all 32 lanes). */
struct nk_warp_group {
    __device__ __forceinline__ int rank() const { return (int)(threadIdx.x & 31u); }
    __device__ __forceinline__ int size() const { return 32; }
    template <class A> __device__ __forceinline__ A sum(A v) const { return nk_warp_sum(v); }
    template <class A> __device__ __forceinline__ A max(A v) const { return nk_warp_max(v); }
    template <class A> __device__ __forceinline__ void online(A &m, A &s) const { nk_warp_online(m, s); }
};

/* A block per row (blockDim.x a multiple of 32, at most 1024). Each warp reduces, the
 * warp results go through shared memory and every warp folds them in the same order.
 * The leading barrier lets one kernel call the reductions back to back. */
struct nk_block_group {
    __device__ __forceinline__ int rank() const { return (int)threadIdx.x; }
    __device__ __forceinline__ int size() const { return (int)blockDim.x; }
    template <class A> __device__ A sum(A v) const {
        __shared__ A buf[32];
        int lane = (int)(threadIdx.x & 31u), w = (int)(threadIdx.x >> 5), nw = (int)(blockDim.x >> 5);
        v = nk_warp_sum(v);
        __syncthreads();
        if (lane == 0) buf[w] = v;
        __syncthreads();
        return nk_warp_sum(lane < nw ? buf[lane] : (A)0);
    }
    template <class A> __device__ A max(A v) const {
        __shared__ A buf[32];
        int lane = (int)(threadIdx.x & 31u), w = (int)(threadIdx.x >> 5), nw = (int)(blockDim.x >> 5);
        v = nk_warp_max(v);
        __syncthreads();
        if (lane == 0) buf[w] = v;
        __syncthreads();
        return nk_warp_max(lane < nw ? buf[lane] : -nk_inf<A>());
    }
    template <class A> __device__ void online(A &m, A &s) const {
        __shared__ A bm[32], bs[32];
        int lane = (int)(threadIdx.x & 31u), w = (int)(threadIdx.x >> 5), nw = (int)(blockDim.x >> 5);
        nk_warp_online(m, s);
        __syncthreads();
        if (lane == 0) {
            bm[w] = m;
            bs[w] = s;
        }
        __syncthreads();
        m = lane < nw ? bm[lane] : -nk_inf<A>();
        s = lane < nw ? bs[lane] : (A)0;
        nk_warp_online(m, s);
    }
};

/* Byte offsets of element i for N operands: one multiply per operand when the
 * iterator coalesced everything into one dim, the general walk otherwise. */
template <int N> __device__ __forceinline__ void nk_offsets(const gk_geom<N> &g, int64_t i, int64_t *off) {
    if (g.ndim == 1) {
        for (int k = 0; k < N; k++) off[k] = i * g.strides[0][k];
    } else {
        gk_offsets<N>(g, i, off);
    }
}

/* Which rows a thread's group starts at, and the step to its next row. */
__device__ __forceinline__ int64_t nk_first(const nk_thread_group &) { return (int64_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t nk_step(const nk_thread_group &) { return (int64_t)blockDim.x * gridDim.x; }
__device__ __forceinline__ int64_t nk_first(const nk_warp_group &) { return ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; }
__device__ __forceinline__ int64_t nk_step(const nk_warp_group &) { return ((int64_t)blockDim.x * gridDim.x) >> 5; }
__device__ __forceinline__ int64_t nk_first(const nk_block_group &) { return blockIdx.x; }
__device__ __forceinline__ int64_t nk_step(const nk_block_group &) { return gridDim.x; }

/* Row kernels' launch shapes: a warp per row up to this many elements, then a block. */
#define NK_WARP_ROW_MAX 1024
#define NK_ROW_THREADS 256

/* Launches row kernel K<DT, group> over `rows` rows of D elements `inner` apart: a
 * thread per row when inner > 1 (neighbouring threads read neighbouring columns, so
 * the loads coalesce), else a warp per row up to NK_WARP_ROW_MAX elements, else a
 * block per row. */
#define NK_ROW_LAUNCH(K, DT, rows, D, inner, ...)                                                       \
    do {                                                                                              \
        if ((inner) > 1) {                                                                            \
            GK_LAUNCH_FLAT((K<DT, nk_thread_group>), gk_blocks(rows, GK_THREADS), GK_THREADS, 0, __VA_ARGS__); \
        } else if ((D) <= NK_WARP_ROW_MAX) {                                                          \
            GK_LAUNCH((K<DT, nk_warp_group>), gk_blocks((rows) * 32, NK_ROW_THREADS), NK_ROW_THREADS, 0, __VA_ARGS__); \
        } else {                                                                                      \
            unsigned nb_ = (rows) < 65535 * 8 ? (unsigned)(rows) : 65535u * 8u;                        \
            GK_LAUNCH((K<DT, nk_block_group>), nb_, NK_ROW_THREADS, 0, __VA_ARGS__);                    \
        }                                                                                             \
    } while (0)

#endif

#endif
