/* graft CUDA kernels: the strided, broadcasting, dtype-converting copy and the fill,
 * which every device transfer, clone, contiguous and dtype conversion goes through.
 * Conversions follow the CPU's (tensor.c): float to int truncates, NaN and out of range
 * give INT64_MIN's low bits, anything to bool is `!= 0`. */
#include "kernel.cuh"
#include "cuda/internal.h"

/* Same dtype: move ESZ-byte words. (N) -> (N) */
template <typename W>
__global__ void copy_same_kernel(gk_geom<2> g, char *dst, const char *src) {
    int64_t off[2];
    GK_FOR(i, g.numel) {
        gk_offsets<2>(g, i, off);
        *(W *)(dst + off[0]) = *(const W *)(src + off[1]);
    }
}

/* Contiguous same-dtype fast path: no index arithmetic. */
template <typename W>
__global__ void copy_flat_kernel(int64_t n, W *dst, const W *src) {
    GK_FOR(i, n) dst[i] = src[i];
}

/* Any dtype pair, by runtime dtype codes (conversion paths are not hot). */
__global__ void copy_convert_kernel(gk_geom<2> g, char *dst, int ddt, const char *src, int sdt) {
    int64_t off[2];
    bool dst_float = ddt == GRAFT_F32 || ddt == GRAFT_F64 || ddt == GRAFT_F16 || ddt == GRAFT_BF16;
    GK_FOR(i, g.numel) {
        gk_offsets<2>(g, i, off);
        const char *s = src + off[1];
        char *d = dst + off[0];
        if (ddt == GRAFT_BOOL) *(uint8_t *)d = gk_load_f64(s, sdt) != 0;
        else if (dst_float) gk_store_f64(d, ddt, gk_load_f64(s, sdt));
        else gk_store_i64(d, ddt, gk_load_i64(s, sdt));
    }
}

template <typename W>
__global__ void fill_kernel(gk_geom<1> g, char *dst, W v) {
    int64_t off[1];
    GK_FOR(i, g.numel) {
        gk_offsets<1>(g, i, off);
        *(W *)(dst + off[0]) = v;
    }
}

template <typename W>
static graft_status copy_same(const graft_iter *it, bool flat) {
    if (flat) {
        int64_t n = it->numel;
        GK_LAUNCH_FLAT(copy_flat_kernel<W>, gk_blocks(n, GK_THREADS), GK_THREADS, 0, n, (W *)it->data[0],
                       (const W *)it->data[1]);
    } else {
        gk_geom<2> g = gk_geom_of<2>(it);
        GK_LAUNCH_FLAT(copy_same_kernel<W>, gk_blocks(g.numel, GK_THREADS), GK_THREADS, 0, g, it->data[0],
                       (const char *)it->data[1]);
    }
    return gk_launched("copy_");
}

extern "C" graft_status gk_copy_device(graft_tensor *dst, graft_tensor *src) {
    GK_ON_DEVICE(dst);
    graft_iter it;
    graft_tensor *ops[2] = {dst, src};
    graft_status st = graft_iter_init(&it, 2, ops, dst->ndim, dst->shape);
    if (st) return st;
    if (it.numel == 0) return GRAFT_OK;
    if (dst->dtype != src->dtype) {
        gk_geom<2> g = gk_geom_of<2>(&it);
        GK_LAUNCH_FLAT(copy_convert_kernel, gk_blocks(g.numel, GK_THREADS), GK_THREADS, 0, g, it.data[0],
                       (int)dst->dtype, (const char *)it.data[1], (int)src->dtype);
        return gk_launched("copy_");
    }
    size_t esz = graft_dtype_size(dst->dtype);
    bool flat = it.ndim == 1 && it.strides[0][0] == (int64_t)esz && it.strides[0][1] == (int64_t)esz;
    switch (esz) {
    case 1: return copy_same<uint8_t>(&it, flat);
    case 2: return copy_same<uint16_t>(&it, flat);
    case 4: return copy_same<uint32_t>(&it, flat);
    default: return copy_same<uint64_t>(&it, flat);
    }
}

template <typename W>
static graft_status fill_as(const graft_iter *it, const void *bytes) {
    W v;
    memcpy(&v, bytes, sizeof v);
    gk_geom<1> g = gk_geom_of<1>(it);
    GK_LAUNCH_FLAT(fill_kernel<W>, gk_blocks(g.numel, GK_THREADS), GK_THREADS, 0, g, it->data[0], v);
    return gk_launched("fill_");
}

extern "C" graft_status gk_fill_device(graft_tensor *dst, const void *bytes, size_t esz) {
    GK_ON_DEVICE(dst);
    graft_iter it;
    graft_tensor *ops[1] = {dst};
    graft_status st = graft_iter_init(&it, 1, ops, dst->ndim, dst->shape);
    if (st) return st;
    if (it.numel == 0) return GRAFT_OK;
    switch (esz) {
    case 1: return fill_as<uint8_t>(&it, bytes);
    case 2: return fill_as<uint16_t>(&it, bytes);
    case 4: return fill_as<uint32_t>(&it, bytes);
    default: return fill_as<uint64_t>(&it, bytes);
    }
}
