/* graft CUDA kernels: indexing (see cuda/index.h). Index values are bounds-checked by
 * kernels that raise a device flag; gathers and scatters move elements as 1/2/4/8-byte
 * words; scatter_add/index_add use atomics (float sums land in a nondeterministic order,
 * as PyTorch's); masked_select and nonzero compact in order with a count-scan-write
 * scheme over fixed chunks, so their output order is the CPU's row-major order. */
#include "kernel.cuh"

extern "C" {
#include "cuda/index.h"
}

/* ---- the bounds flag ---- */

/* err[0]: set once by the first thread that sees a bad value; err[1]: that value. */
__device__ __forceinline__ void ix_flag(unsigned long long *err, int64_t v) {
    if (atomicCAS(&err[0], 0ULL, 1ULL) == 0ULL) err[1] = (unsigned long long)v;
}

__device__ __forceinline__ int64_t ix_load_index(const char *p, int idt) {
    return idt == GRAFT_I64 ? *(const int64_t *)p : (int64_t) * (const int32_t *)p;
}

/* (index) -> flag when any value is outside [lo, hi) */
__global__ void ix_check_kernel(gk_geom<1> g, const char *idx, int idt, int64_t lo, int64_t hi,
                                unsigned long long *err) {
    int64_t off[1];
    GK_FOR(i, g.numel) {
        gk_offsets<1>(g, i, off);
        int64_t v = ix_load_index(idx + off[0], idt);
        if (v < lo || v >= hi) ix_flag(err, v);
    }
}

/* offs (B) += wrap(index broadcast to B) * stride */
__global__ void ix_offsets_kernel(gk_geom<2> g, char *offs, const char *idx, int idt, int64_t size, int64_t stride,
                                  bool wrap, unsigned long long *err) {
    int64_t off[2];
    GK_FOR(i, g.numel) {
        gk_offsets<2>(g, i, off);
        int64_t v = ix_load_index(idx + off[1], idt);
        int64_t x = wrap && v < 0 ? v + size : v;
        if (x < 0 || x >= size) {
            ix_flag(err, v);
            continue;
        }
        *(int64_t *)(offs + off[0]) += x * stride;
    }
}

/* ---- the block plan ---- */

/* dense (pre_numel * nb * post_numel) <-> strided side; one element per step, the
 * common dense-post case without the post odometer. */
template <typename W>
__global__ void ix_plan_kernel(graft_ix_plan p, W *dense, bool put, int64_t total) {
    GK_FOR(i, total) {
        int64_t q = i / p.post_numel, r = i - q * p.post_numel;
        int64_t pi = q / p.nb, b = q - pi * p.nb;
        int64_t off = p.offs[b];
        for (int d = p.pre_n - 1; d >= 0; d--) {
            int64_t s = p.pre_shape[d], qq = pi / s;
            off += (pi - qq * s) * p.pre_stride[d];
            pi = qq;
        }
        if (p.post_dense) {
            off += r;
        } else {
            for (int d = p.post_n - 1; d >= 0; d--) {
                int64_t s = p.post_shape[d], rr = r / s;
                off += (r - rr * s) * p.post_stride[d];
                r = rr;
            }
        }
        W *el = (W *)p.base + off;
        if (put) *el = dense[i];
        else dense[i] = *el;
    }
}

/* ---- gather / scatter family ---- */

/* MODE: GATHER {out, index, self}, SCATTER {self, index, src}, SCATTER_VALUE {self, index} */
template <typename W, int MODE>
__global__ void ix_move_kernel(gk_geom<3> g, char *a, const char *idx, const char *c, int64_t ds, W value) {
    int64_t off[3];
    GK_FOR(i, g.numel) {
        gk_offsets<3>(g, i, off);
        int64_t x = *(const int64_t *)(idx + off[1]);
        if (MODE == GRAFT_IX_GATHER) *(W *)(a + off[0]) = *(const W *)(c + off[2] + x * ds);
        else if (MODE == GRAFT_IX_SCATTER) *(W *)(a + off[0] + x * ds) = *(const W *)(c + off[2]);
        else *(W *)(a + off[0] + x * ds) = value;
    }
}

/* *p += v for an element narrower than 4 bytes: a compare-and-swap loop on the aligned
 * 32-bit word holding it (device allocations are 256-byte aligned, so the word is inside
 * the allocation). */
template <int D>
__device__ __forceinline__ void ix_atomic_add_narrow(typename gk_type<D>::S *p, typename gk_type<D>::C v) {
    typedef typename gk_type<D>::S S;
    uintptr_t addr = (uintptr_t)p;
    unsigned int *w = (unsigned int *)(addr & ~(uintptr_t)3);
    unsigned shift = (unsigned)(addr & 3) * 8u;
    unsigned mask = (sizeof(S) == 1 ? 0xffu : 0xffffu) << shift;
    unsigned old = *w, assumed;
    do {
        assumed = old;
        S cur = (S)((assumed & mask) >> shift);
        S nv;
        if constexpr (D == GRAFT_BOOL) nv = (S)(cur != 0 || v != 0);
        else nv = gk_type<D>::st(gk_type<D>::ld(cur) + v);
        unsigned nw = (assumed & ~mask) | (((unsigned)nv << shift) & mask);
        old = atomicCAS(w, assumed, nw);
    } while (old != assumed);
}

template <int D>
__device__ __forceinline__ void ix_atomic_add(typename gk_type<D>::S *p, typename gk_type<D>::C v) {
    if constexpr (D == GRAFT_F32 || D == GRAFT_F64) atomicAdd(p, v);
    else if constexpr (D == GRAFT_I64) atomicAdd((unsigned long long *)p, (unsigned long long)v);
    else if constexpr (D == GRAFT_I32) atomicAdd((unsigned int *)p, (unsigned int)(uint64_t)v);
    else ix_atomic_add_narrow<D>(p, v);
}

/* {self, index, src}: self[index] += alpha * src, alpha in the compute type (floats
 * multiply in their compute precision, integers wrap), as the CPU's ix_add1. */
template <int D>
__global__ void ix_add_kernel(gk_geom<3> g, char *a, const char *idx, const char *c, int64_t ds,
                              typename gk_type<D>::C alpha) {
    typedef gk_type<D> T;
    int64_t off[3];
    GK_FOR(i, g.numel) {
        gk_offsets<3>(g, i, off);
        int64_t x = *(const int64_t *)(idx + off[1]);
        typename T::C s = T::ld(*(const typename T::S *)(c + off[2]));
        typename T::C v;
        if constexpr (D == GRAFT_BOOL) v = s;
        else if constexpr (D == GRAFT_I64 || D == GRAFT_I32 || D == GRAFT_I16 || D == GRAFT_I8 || D == GRAFT_U8)
            v = (typename T::C)((uint64_t)alpha * (uint64_t)s);
        else v = alpha * s;
        ix_atomic_add<D>((typename T::S *)(a + off[0] + x * ds), v);
    }
}

/* ---- masked_fill, take ---- */

/* {t, mask} */
template <typename W>
__global__ void ix_masked_fill_kernel(gk_geom<2> g, char *t, const char *m, W v) {
    int64_t off[2];
    GK_FOR(i, g.numel) {
        gk_offsets<2>(g, i, off);
        if (*(const uint8_t *)(m + off[1])) *(W *)(t + off[0]) = v;
    }
}

/* {out, index} with base contiguous (numel elements) */
template <typename W>
__global__ void ix_take_kernel(gk_geom<2> g, char *out, const char *idx, const W *base, int64_t numel) {
    int64_t off[2];
    GK_FOR(i, g.numel) {
        gk_offsets<2>(g, i, off);
        int64_t x = *(const int64_t *)(idx + off[1]);
        if (x < 0) x += numel;
        *(W *)(out + off[0]) = base[x];
    }
}

/* ---- ordered compaction (masked_select, nonzero) ----
 * The flat range is cut in chunks of CMP_CHUNK = CMP_THREADS * CMP_TILES elements.
 * 1. cmp_count_kernel: set flags per chunk (block reduction) -> counts[c]
 * 2. cmp_scan_kernel:  one block turns counts into exclusive offsets, total at counts[nc]
 * 3. cmp_write_kernel: per chunk, tile by tile, a block scan of the flags gives each set
 *    element its output position: the order is the flat order. */
#define CMP_THREADS 256
#define CMP_TILES 8
#define CMP_CHUNK (CMP_THREADS * CMP_TILES)
#define CMP_WARPS (CMP_THREADS / 32)
#define FULL_MASK 0xffffffffu

/* Exclusive scan of v over a block of CMP_THREADS threads; *total gets the block sum.
 * Every thread of the block must call it (it synchronises). */
__device__ __forceinline__ int cmp_block_scan(int v, int *total, int *smem) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int x = v;
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(FULL_MASK, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) smem[warp] = x;
    __syncthreads();
    /* every warp scans the warp totals itself: no divergent shuffles */
    int w = lane < CMP_WARPS ? smem[lane] : 0;
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(FULL_MASK, w, o);
        if (lane >= o) w += y;
    }
    int before = __shfl_sync(FULL_MASK, w, warp > 0 ? warp - 1 : 0);
    *total = __shfl_sync(FULL_MASK, w, CMP_WARPS - 1);
    __syncthreads(); /* smem may be reused by the caller's next call */
    return (warp > 0 ? before : 0) + x - v;
}

template <class F>
__global__ void cmp_count_kernel(F f, int64_t n, int64_t nchunks, int64_t *counts) {
    __shared__ int smem[32];
    for (int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
        int mine = 0;
        int64_t base = c * CMP_CHUNK;
        for (int t = 0; t < CMP_TILES; t++) {
            int64_t i = base + (int64_t)t * CMP_THREADS + threadIdx.x;
            if (i < n && f.flag(i)) mine++;
        }
        int total;
        cmp_block_scan(mine, &total, smem);
        if (threadIdx.x == 0) counts[c] = total;
    }
}

/* counts[0..n) -> exclusive prefix sums; counts[n] = the total. One block of 1024. */
__global__ void __launch_bounds__(1024) cmp_scan_kernel(int64_t *counts, int64_t n) {
    __shared__ long long smem[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    long long carry = 0;
    for (int64_t base = 0; base < n; base += blockDim.x) {
        int64_t i = base + threadIdx.x;
        long long v = i < n ? (long long)counts[i] : 0, x = v;
        for (int o = 1; o < 32; o <<= 1) {
            long long y = __shfl_up_sync(FULL_MASK, x, o);
            if (lane >= o) x += y;
        }
        if (lane == 31) smem[warp] = x;
        __syncthreads();
        long long w = lane < nwarps ? smem[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            long long y = __shfl_up_sync(FULL_MASK, w, o);
            if (lane >= o) w += y;
        }
        long long before = __shfl_sync(FULL_MASK, w, warp > 0 ? warp - 1 : 0);
        long long tile = __shfl_sync(FULL_MASK, w, nwarps - 1);
        if (i < n) counts[i] = carry + (warp > 0 ? before : 0) + x - v;
        carry += tile;
        __syncthreads();
    }
    if (threadIdx.x == 0) counts[n] = carry;
}

template <class F>
__global__ void cmp_write_kernel(F f, int64_t n, int64_t nchunks, const int64_t *offsets) {
    __shared__ int smem[32];
    for (int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
        int64_t pos = offsets[c], base = c * CMP_CHUNK;
        for (int t = 0; t < CMP_TILES; t++) {
            int64_t i = base + (int64_t)t * CMP_THREADS + threadIdx.x;
            int set = i < n && f.flag(i) ? 1 : 0;
            int total, excl = cmp_block_scan(set, &total, smem);
            if (set) f.write(i, pos + excl);
            pos += total;
        }
    }
}

/* masked_select: {t, mask} broadcast to one shape, walked in row-major order. */
template <typename W>
struct cmp_masked {
    gk_geom<2> g;
    const char *t, *m;
    W *out;
    __device__ __forceinline__ bool flag(int64_t i) const {
        int64_t off[2];
        gk_offsets<2>(g, i, off);
        return *(const uint8_t *)(m + off[1]) != 0;
    }
    __device__ __forceinline__ void write(int64_t i, int64_t pos) const {
        int64_t off[2];
        gk_offsets<2>(g, i, off);
        out[pos] = *(const W *)(t + off[0]);
    }
};

/* nonzero as the CPU counts it: -0.0 is zero, NaN is not. */
template <int D>
struct cmp_nonzero {
    const typename gk_type<D>::S *p;
    int nd;
    int64_t shape[GRAFT_MAX_DIMS];
    int64_t *out;
    __device__ __forceinline__ bool flag(int64_t i) const {
        if (D == GRAFT_F16 || D == GRAFT_BF16) return ((uint16_t)p[i] & 0x7fffu) != 0;
        return p[i] != 0;
    }
    __device__ __forceinline__ void write(int64_t i, int64_t pos) const {
        int64_t *o = out + pos * nd;
        for (int d = nd - 1; d >= 0; d--) {
            int64_t q = i / shape[d];
            o[d] = i - q * shape[d];
            i = q;
        }
    }
};

/* ---- tril / triu ---- */

/* Zeroes j > i + k (lower) or j < i + k (upper) in every [rows, cols] matrix; batch dims
 * outermost first. */
template <typename W>
__global__ void ix_tri_kernel(W *base, int64_t numel, int64_t rows, int64_t cols, int64_t rs, int64_t cs,
                              gk_geom<1> batch, int64_t k, bool lower) {
    GK_FOR(i, numel) {
        int64_t j = i % cols, rest = i / cols, r = rest % rows, b = rest / rows;
        bool zero = lower ? j > r + k : j < r + k;
        if (!zero) continue;
        int64_t off = r * rs + j * cs;
        for (int d = 0; d < batch.ndim; d++) {
            int64_t s = batch.shape[d], q = b / s;
            off += (b - q * s) * batch.strides[d][0];
            b = q;
        }
        base[off] = (W)0;
    }
}

/* ---- launchers ---- */

/* A zeroed 2-word flag on dev: +1. */
static graft_status ix_err_new(graft_tensor **err, graft_device dev) {
    int64_t two = 2;
    graft_status st = graft_tensor_empty(err, 1, &two, GRAFT_I64, dev);
    if (st) return st;
    if ((st = gk_check(cudaMemsetAsync(graft_tensor_data(*err), 0, 16, graft_cuda_stream()), "cudaMemsetAsync"))) {
        graft_tensor_release(*err);
        *err = NULL;
    }
    return st;
}

/* Reads the flag back (waits for the kernels before it) and releases it. */
static graft_status ix_err_read(graft_tensor *err, bool *bad, int64_t *badval) {
    int64_t h[2] = {0, 0};
    graft_status st = graft_cuda_memcpy_d2h(h, graft_tensor_data(err), sizeof h);
    graft_tensor_release(err);
    *bad = !st && h[0] != 0;
    *badval = h[1];
    return st;
}

extern "C" graft_status graft_cuda_ix_check(graft_tensor *index, int64_t lo, int64_t hi, bool *bad, int64_t *badval) {
    GK_ON_DEVICE(index);
    graft_iter it;
    graft_tensor *err = NULL;
    *bad = false;
    graft_status st = graft_iter_init(&it, 1, &index, index->ndim, index->shape);
    if (st || it.numel == 0) return st;
    if ((st = ix_err_new(&err, graft_tensor_device(index)))) return st;
    gk_geom<1> g = gk_geom_of<1>(&it);
    GK_LAUNCH_FLAT(ix_check_kernel, gk_blocks(g.numel, GK_THREADS), GK_THREADS, 0, g, (const char *)it.data[0],
                   (int)index->dtype, lo, hi, (unsigned long long *)graft_tensor_data(err));
    if ((st = gk_launched("index bounds check"))) {
        graft_tensor_release(err);
        return st;
    }
    return ix_err_read(err, bad, badval);
}

extern "C" graft_status graft_cuda_ix_offsets(graft_tensor *offs, graft_tensor *index, int64_t size, int64_t stride,
                                              bool wrap, bool *bad, int64_t *badval) {
    GK_ON_DEVICE(offs);
    graft_iter it;
    graft_tensor *err = NULL, *ops[2] = {offs, index};
    *bad = false;
    graft_status st = graft_iter_init(&it, 2, ops, offs->ndim, offs->shape);
    if (st || it.numel == 0) return st;
    if ((st = ix_err_new(&err, graft_tensor_device(offs)))) return st;
    gk_geom<2> g = gk_geom_of<2>(&it);
    GK_LAUNCH_FLAT(ix_offsets_kernel, gk_blocks(g.numel, GK_THREADS), GK_THREADS, 0, g, it.data[0],
                   (const char *)it.data[1], (int)index->dtype, size, stride, wrap,
                   (unsigned long long *)graft_tensor_data(err));
    if ((st = gk_launched("index offsets"))) {
        graft_tensor_release(err);
        return st;
    }
    return ix_err_read(err, bad, badval);
}

template <typename W>
static graft_status ix_plan_as(const graft_ix_plan *p, graft_tensor *dense, bool put, int64_t total) {
    GK_LAUNCH_FLAT(ix_plan_kernel<W>, gk_blocks(total, GK_THREADS), GK_THREADS, 0, *p, (W *)graft_tensor_data(dense),
                   put, total);
    return gk_launched(put ? "index_put_" : "index");
}

extern "C" graft_status graft_cuda_ix_plan_run(const graft_ix_plan *p, graft_tensor *dense, bool put) {
    GK_ON_DEVICE(dense);
    int64_t total = p->pre_numel * p->nb * p->post_numel;
    if (total == 0) return GRAFT_OK;
    switch (p->esz) {
    case 1: return ix_plan_as<uint8_t>(p, dense, put, total);
    case 2: return ix_plan_as<uint16_t>(p, dense, put, total);
    case 4: return ix_plan_as<uint32_t>(p, dense, put, total);
    default: return ix_plan_as<uint64_t>(p, dense, put, total);
    }
}

template <typename W>
static graft_status ix_move_as(const graft_iter *it, graft_ix_mode mode, int64_t ds, const void *value) {
    gk_geom<3> g = gk_geom_of<3>(it);
    W v = 0;
    if (value) memcpy(&v, value, sizeof v);
    unsigned blocks = gk_blocks(g.numel, GK_THREADS);
    const char *c = it->nops > 2 ? (const char *)it->data[2] : nullptr;
    if (mode == GRAFT_IX_GATHER)
        GK_LAUNCH_FLAT((ix_move_kernel<W, GRAFT_IX_GATHER>), blocks, GK_THREADS, 0, g, it->data[0],
                       (const char *)it->data[1], c, ds, v);
    else if (mode == GRAFT_IX_SCATTER)
        GK_LAUNCH_FLAT((ix_move_kernel<W, GRAFT_IX_SCATTER>), blocks, GK_THREADS, 0, g, it->data[0],
                       (const char *)it->data[1], c, ds, v);
    else
        GK_LAUNCH_FLAT((ix_move_kernel<W, GRAFT_IX_SCATTER_VALUE>), blocks, GK_THREADS, 0, g, it->data[0],
                       (const char *)it->data[1], c, ds, v);
    return gk_launched(mode == GRAFT_IX_GATHER ? "gather" : "scatter");
}

extern "C" graft_status graft_cuda_ix_scatter(const graft_iter *it, graft_ix_mode mode, int64_t dim_stride,
                                              graft_dtype dtype, const void *value, double fa, int64_t ia) {
    if (it->numel == 0) return GRAFT_OK;
    GK_ON_DEVICE_OF(it->data[0]);
    if (mode == GRAFT_IX_SCATTER_ADD) {
        gk_geom<3> g = gk_geom_of<3>(it);
        unsigned blocks = gk_blocks(g.numel, GK_THREADS);
        GK_DISPATCH_ALL(dtype, {
            typedef gk_type<D>::C Cx;
            Cx alpha = graft_dtype_is_float((graft_dtype)D) ? (Cx)fa : (Cx)ia;
            GK_LAUNCH_FLAT(ix_add_kernel<D>, blocks, GK_THREADS, 0, g, it->data[0], (const char *)it->data[1],
                           (const char *)it->data[2], dim_stride, alpha);
        })
        return gk_launched("scatter_add");
    }
    switch (graft_dtype_size(dtype)) {
    case 1: return ix_move_as<uint8_t>(it, mode, dim_stride, value);
    case 2: return ix_move_as<uint16_t>(it, mode, dim_stride, value);
    case 4: return ix_move_as<uint32_t>(it, mode, dim_stride, value);
    default: return ix_move_as<uint64_t>(it, mode, dim_stride, value);
    }
}

template <typename W>
static graft_status ix_masked_fill_as(const graft_iter *it, const void *value) {
    W v;
    memcpy(&v, value, sizeof v);
    gk_geom<2> g = gk_geom_of<2>(it);
    GK_LAUNCH_FLAT(ix_masked_fill_kernel<W>, gk_blocks(g.numel, GK_THREADS), GK_THREADS, 0, g, it->data[0],
                   (const char *)it->data[1], v);
    return gk_launched("masked_fill_");
}

extern "C" graft_status graft_cuda_masked_fill(const graft_iter *it, size_t esz, const void *value) {
    if (it->numel == 0) return GRAFT_OK;
    GK_ON_DEVICE_OF(it->data[0]);
    switch (esz) {
    case 1: return ix_masked_fill_as<uint8_t>(it, value);
    case 2: return ix_masked_fill_as<uint16_t>(it, value);
    case 4: return ix_masked_fill_as<uint32_t>(it, value);
    default: return ix_masked_fill_as<uint64_t>(it, value);
    }
}

template <typename W>
static graft_status ix_take_as(const graft_iter *it, const void *base, int64_t numel) {
    gk_geom<2> g = gk_geom_of<2>(it);
    GK_LAUNCH_FLAT(ix_take_kernel<W>, gk_blocks(g.numel, GK_THREADS), GK_THREADS, 0, g, it->data[0],
                   (const char *)it->data[1], (const W *)base, numel);
    return gk_launched("take");
}

extern "C" graft_status graft_cuda_take(const graft_iter *it, const void *base, int64_t numel, size_t esz) {
    if (it->numel == 0) return GRAFT_OK;
    GK_ON_DEVICE_OF(it->data[0]);
    switch (esz) {
    case 1: return ix_take_as<uint8_t>(it, base, numel);
    case 2: return ix_take_as<uint16_t>(it, base, numel);
    case 4: return ix_take_as<uint32_t>(it, base, numel);
    default: return ix_take_as<uint64_t>(it, base, numel);
    }
}

/* Counts (one block per chunk, grid-stride), scans and reads the total back. counts
 * (nchunks + 1 int64 on dev) is +1 on success. */
template <class F>
static graft_status cmp_count(const F &f, int64_t n, graft_device dev, graft_tensor **counts, int64_t *total) {
    int64_t nchunks = (n + CMP_CHUNK - 1) / CMP_CHUNK, nc1 = nchunks + 1;
    graft_status st = graft_tensor_empty(counts, 1, &nc1, GRAFT_I64, dev);
    if (st) return st;
    int64_t *c = (int64_t *)graft_tensor_data(*counts);
    unsigned blocks = nchunks < 65535 ? (unsigned)nchunks : 65535u;
    GK_LAUNCH(cmp_count_kernel<F>, blocks, CMP_THREADS, 0, f, n, nchunks, c);
    if (!(st = gk_launched("count"))) {
        GK_LAUNCH(cmp_scan_kernel, 1, 1024, 0, c, nchunks);
        if (!(st = gk_launched("count")))
            st = graft_cuda_memcpy_d2h(total, c + nchunks, sizeof *total);
    }
    if (st) {
        graft_tensor_release(*counts);
        *counts = NULL;
    }
    return st;
}

template <class F>
static graft_status cmp_write(const F &f, int64_t n, graft_tensor *counts, const char *op) {
    int64_t nchunks = (n + CMP_CHUNK - 1) / CMP_CHUNK;
    unsigned blocks = nchunks < 65535 ? (unsigned)nchunks : 65535u;
    GK_LAUNCH(cmp_write_kernel<F>, blocks, CMP_THREADS, 0, f, n, nchunks, (const int64_t *)graft_tensor_data(counts));
    return gk_launched(op);
}

template <typename W>
static graft_status ix_masked_select_as(graft_tensor **out, graft_tensor *t, const graft_iter *it) {
    cmp_masked<W> f;
    f.g = gk_geom_of<2>(it);
    f.t = (const char *)it->data[0];
    f.m = (const char *)it->data[1];
    f.out = nullptr;
    int64_t n = it->numel, cnt = 0;
    graft_tensor *counts = NULL;
    graft_status st = cmp_count(f, n, graft_tensor_device(t), &counts, &cnt);
    if (st) return st;
    if (!(st = graft_tensor_empty(out, 1, &cnt, t->dtype, graft_tensor_device(t))) && cnt > 0) {
        f.out = (W *)graft_tensor_data(*out);
        if ((st = cmp_write(f, n, counts, "masked_select"))) {
            graft_tensor_release(*out);
            *out = NULL;
        }
    }
    graft_tensor_release(counts);
    return st;
}

extern "C" graft_status graft_cuda_masked_select(graft_tensor **out, graft_tensor *t, graft_tensor *mask, int ndim,
                                                 const int64_t *shape) {
    GK_ON_DEVICE(t);
    graft_iter it;
    graft_tensor *ops[2] = {t, mask};
    *out = NULL;
    graft_status st = graft_iter_init(&it, 2, ops, ndim, shape);
    if (st) return st;
    if (it.numel == 0) {
        int64_t zero = 0;
        return graft_tensor_empty(out, 1, &zero, t->dtype, graft_tensor_device(t));
    }
    switch (graft_dtype_size(t->dtype)) {
    case 1: return ix_masked_select_as<uint8_t>(out, t, &it);
    case 2: return ix_masked_select_as<uint16_t>(out, t, &it);
    case 4: return ix_masked_select_as<uint32_t>(out, t, &it);
    default: return ix_masked_select_as<uint64_t>(out, t, &it);
    }
}

template <int D>
static graft_status ix_nonzero_as(graft_tensor **out, graft_tensor *t) {
    cmp_nonzero<D> f;
    f.p = (const typename gk_type<D>::S *)graft_tensor_data(t);
    f.nd = t->ndim;
    for (int d = 0; d < t->ndim; d++) f.shape[d] = t->shape[d];
    f.out = nullptr;
    int64_t n = graft_tensor_numel(t), cnt = 0;
    graft_tensor *counts = NULL;
    graft_status st = GRAFT_OK;
    if (n > 0 && (st = cmp_count(f, n, graft_tensor_device(t), &counts, &cnt))) return st;
    int64_t oshape[2] = {cnt, t->ndim};
    if (!(st = graft_tensor_empty(out, 2, oshape, GRAFT_I64, graft_tensor_device(t))) && cnt > 0 && t->ndim > 0) {
        f.out = (int64_t *)graft_tensor_data(*out);
        if ((st = cmp_write(f, n, counts, "nonzero"))) {
            graft_tensor_release(*out);
            *out = NULL;
        }
    }
    graft_tensor_release(counts);
    return st;
}

extern "C" graft_status graft_cuda_nonzero(graft_tensor **out, graft_tensor *t) {
    GK_ON_DEVICE(t);
    *out = NULL;
    if (!graft_tensor_is_contiguous(t))
        return graft_error(GRAFT_EINTERNAL, "nonzero: the CUDA kernel expects a contiguous tensor");
    graft_status st = graft_error(GRAFT_ETYPE, "nonzero: unsupported dtype %s", graft_dtype_name(t->dtype));
    GK_DISPATCH_ALL(t->dtype, st = ix_nonzero_as<D>(out, t))
    return st;
}

template <typename W>
static graft_status ix_tri_as(graft_tensor *t, int64_t k, bool lower) {
    int nb = t->ndim - 2;
    int64_t numel = graft_tensor_numel(t);
    gk_geom<1> batch;
    batch.ndim = nb;
    batch.numel = 1;
    for (int d = 0; d < nb; d++) { /* innermost first */
        batch.shape[d] = t->shape[nb - 1 - d];
        batch.strides[d][0] = t->stride[nb - 1 - d];
        batch.numel *= batch.shape[d];
    }
    GK_LAUNCH_FLAT(ix_tri_kernel<W>, gk_blocks(numel, GK_THREADS), GK_THREADS, 0, (W *)graft_tensor_data(t), numel,
                   t->shape[nb], t->shape[nb + 1], t->stride[nb], t->stride[nb + 1], batch, k, lower);
    return gk_launched(lower ? "tril" : "triu");
}

extern "C" graft_status graft_cuda_tri_(graft_tensor *t, int64_t k, bool lower) {
    GK_ON_DEVICE(t);
    if (t->ndim < 2 || graft_tensor_numel(t) == 0) return GRAFT_OK;
    switch (graft_dtype_size(t->dtype)) {
    case 1: return ix_tri_as<uint8_t>(t, k, lower);
    case 2: return ix_tri_as<uint16_t>(t, k, lower);
    case 4: return ix_tri_as<uint32_t>(t, k, lower);
    default: return ix_tri_as<uint64_t>(t, k, lower);
    }
}
