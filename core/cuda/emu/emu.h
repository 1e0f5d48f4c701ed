/* graft CUDA emulator: the kernel language on the host.
 *
 * In the emulated build (`make CUDA=emu`, and the copy `make test` builds) every .cu
 * file is compiled by g++ with this header forced in first. Kernels run on the CPU:
 * blocks one after another, the threads of a block as coroutines that switch at
 * __syncthreads and warp shuffles, so the same kernel source is exercised by the
 * specs on a machine without a GPU. Launch mistakes a GPU would reject (too many
 * threads, too much shared memory, a barrier not reached by every thread) abort with a
 * message, and device memory is unreadable outside kernels and copies, so host code
 * that touches device pointers faults here instead of on the GPU.
 */
#ifndef GRAFT_CUDA_EMU_H
#define GRAFT_CUDA_EMU_H

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#undef __shared__
#define __shared__ static   /* one OS thread runs a block at a time: static is per block */
#undef __constant__
#define __constant__ static
#undef __forceinline__
#define __forceinline__ inline
#undef __noinline__
#define __noinline__
#undef __launch_bounds__
#define __launch_bounds__(...)

#define GRAFT_CUDA_EMU_ACTIVE 1

extern thread_local uint3 emu_thread_idx, emu_block_idx;
extern thread_local dim3 emu_block_dim, emu_grid_dim;
#define threadIdx emu_thread_idx
#define blockIdx emu_block_idx
#define blockDim emu_block_dim
#define gridDim emu_grid_dim
#define warpSize 32

void emu_syncthreads(void);
void emu_syncwarp(void);
/* Every lane of the calling warp publishes n bytes of *mine and receives lane src's.
 * Every lane named in mask must take part (aborts when one has exited or does not exist). */
void emu_exchange(const void *mine, void *out, int src_lane, size_t n, unsigned mask);
void *emu_dynamic_smem(void);
/* Runs fn(ctx) once per thread of every block. flat: the kernel never synchronises. */
void emu_launch(const char *name, dim3 grid, dim3 block, size_t smem, int flat,
                void (*fn)(void *), void *ctx);

#define __syncthreads() emu_syncthreads()
#define __syncwarp(...) emu_syncwarp()
#define __threadfence() ((void)0)
#define __activemask() 0xffffffffu

static inline unsigned emu_lane(void) {
    unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    return t % 32u;
}
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    unsigned lane = emu_lane();
    T out;
    emu_exchange(&v, &out, (int)((lane / (unsigned)width) * (unsigned)width + ((unsigned)src % (unsigned)width)), sizeof(T), mask);
    return out;
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
    unsigned lane = emu_lane(), in = lane % (unsigned)width;
    T out;
    emu_exchange(&v, &out, (int)(in + d < (unsigned)width ? lane + d : lane), sizeof(T), mask);
    return out;
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
    unsigned lane = emu_lane(), in = lane % (unsigned)width;
    T out;
    emu_exchange(&v, &out, (int)(in >= d ? lane - d : lane), sizeof(T), mask);
    return out;
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
    unsigned lane = emu_lane();
    unsigned src = lane ^ (unsigned)m;
    if (src / (unsigned)width != lane / (unsigned)width) src = lane;
    T out;
    emu_exchange(&v, &out, (int)src, sizeof(T), mask);
    return out;
}

/* One OS thread runs the whole grid: atomics are plain read-modify-writes. */
template <class T> static inline T atomicAdd(T *p, T v) { T o = *p; *p = o + v; return o; }
template <class T> static inline T atomicMax(T *p, T v) { T o = *p; if (v > o) *p = v; return o; }
template <class T> static inline T atomicMin(T *p, T v) { T o = *p; if (v < o) *p = v; return o; }
template <class T> static inline T atomicExch(T *p, T v) { T o = *p; *p = v; return o; }
template <class T> static inline T atomicCAS(T *p, T cmp, T v) { T o = *p; if (o == cmp) *p = v; return o; }

#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __fdividef(a, b) ((a) / (b))
static inline float emu_rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double emu_rsqrt(double x) { return 1.0 / sqrt(x); }
#define rsqrtf(x) emu_rsqrtf(x)
#define rsqrt(x) emu_rsqrt(x)
template <class T> static inline T __ldg(const T *p) { return *p; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
static inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
static inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }

/* Lambda trampolines for GK_LAUNCH (kernel.cuh). */
template <class F> static void emu_call(void *ctx) { (*(F *)ctx)(); }
template <class F> static inline void emu_launch_lambda(const char *name, dim3 g, dim3 b, size_t smem, int flat, F f) {
    emu_launch(name, g, b, smem, flat, emu_call<F>, &f);
}

#endif
