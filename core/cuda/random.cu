/* graft CUDA kernels: random fills (uniform, normal, randint) and dropout on the
 * device, from the same Philox4x32-10 stream as the CPU (core/tensor/rng.c,
 * core/nn/activation.c): one thread per 128-bit block, elements mapped to words exactly
 * as on the CPU, and the same arithmetic (tensor/philox.h, shared with the CPU), so a
 * seed gives the same tensor on both devices. */
#include "kernel.cuh"
#include "cuda/random.h"
#include "tensor/philox.h"

/* Block blk of the stream feeds 4 / WPE consecutive elements. D: the output dtype
 * (float16/bfloat16 take the float32 stream, rounded). (n) */
template <int D, int KIND, int WPE>
__global__ void rng_fill_kernel(int64_t n, typename gk_type<D>::S *out, double a, double b, uint64_t seed,
                                uint64_t base) {
    typedef typename gk_type<D>::C C;
    constexpr int EPB = 4 / WPE;
    int64_t nblocks = (n + EPB - 1) / EPB;
    GK_FOR(blk, nblocks) {
        uint32_t w[4];
        graft_philox(seed, base + (uint64_t)blk, w);
        for (int e = 0; e < EPB; e++) {
            int64_t i = blk * EPB + e;
            if (i >= n) break;
            const uint32_t *x = w + e * WPE;
            double v;
            if (KIND == GRAFT_RNG_UNIFORM) {
                v = graft_philox_uniform(WPE == 2 ? graft_philox_u53(x[0], x[1]) : graft_philox_u24(x[0]), a, b);
            } else {
                double u1 = WPE == 4 ? graft_philox_u53(x[0], x[1]) : graft_philox_u24(x[0]);
                double u2 = WPE == 4 ? graft_philox_u53(x[2], x[3]) : graft_philox_u24(x[1]);
                v = graft_philox_normal(u1, u2, a, b);
            }
            if (D == GRAFT_F64) out[i] = gk_type<D>::st((C)v);
            else out[i] = gk_type<D>::st((float)v);
        }
    }
}

/* Integers in [lo, lo + range): two words as a 64-bit draw, modulo the range. (n) */
__global__ void rng_randint_kernel(int64_t n, int64_t *out, int64_t lo, uint64_t range, uint64_t seed,
                                   uint64_t base) {
    int64_t nblocks = (n + 1) / 2;
    GK_FOR(blk, nblocks) {
        uint32_t w[4];
        graft_philox(seed, base + (uint64_t)blk, w);
        for (int e = 0; e < 2; e++) {
            int64_t i = blk * 2 + e;
            if (i >= n) break;
            out[i] = graft_philox_int(w[2 * e], w[2 * e + 1], lo, range);
        }
    }
}

template <int D, int KIND> static void rng_launch(graft_tensor *t, int64_t n, double a, double b, uint64_t seed,
                                                  uint64_t base) {
    typedef typename gk_type<D>::S S;
    S *out = (S *)graft_tensor_data(t);
    if (KIND == GRAFT_RNG_UNIFORM && D == GRAFT_F64) {
        GK_LAUNCH_FLAT((rng_fill_kernel<D, KIND, 2>), gk_blocks((n + 1) / 2, GK_THREADS), GK_THREADS, 0, n, out, a, b,
                       seed, base);
    } else if (KIND == GRAFT_RNG_UNIFORM) {
        GK_LAUNCH_FLAT((rng_fill_kernel<D, KIND, 1>), gk_blocks((n + 3) / 4, GK_THREADS), GK_THREADS, 0, n, out, a, b,
                       seed, base);
    } else if (D == GRAFT_F64) {
        GK_LAUNCH_FLAT((rng_fill_kernel<D, KIND, 4>), gk_blocks(n, GK_THREADS), GK_THREADS, 0, n, out, a, b, seed,
                       base);
    } else {
        GK_LAUNCH_FLAT((rng_fill_kernel<D, KIND, 2>), gk_blocks((n + 1) / 2, GK_THREADS), GK_THREADS, 0, n, out, a, b,
                       seed, base);
    }
}

extern "C" graft_status graft_cuda_rng_fill(graft_tensor *t, int kind, double a, double b, int64_t ia, int64_t ib,
                                            uint64_t seed, uint64_t base) {
    GK_ON_DEVICE(t);
    int64_t n = graft_tensor_numel(t);
    if (!graft_tensor_is_contiguous(t))
        return graft_error(GRAFT_EINTERNAL, "random: cuda fill expects a contiguous tensor");
    if (n == 0) return GRAFT_OK;
    if (kind == GRAFT_RNG_RANDINT) {
        if (t->dtype != GRAFT_I64) return graft_error(GRAFT_EINTERNAL, "random: cuda randint fills int64 only");
        GK_LAUNCH_FLAT(rng_randint_kernel, gk_blocks((n + 1) / 2, GK_THREADS), GK_THREADS, 0, n,
                       (int64_t *)graft_tensor_data(t), ia, (uint64_t)(ib - ia), seed, base);
        return gk_launched("random_");
    }
    if (!graft_dtype_is_float(t->dtype))
        return graft_error(GRAFT_EINTERNAL, "random: cuda fill of %s", graft_dtype_name(t->dtype));
    if (kind == GRAFT_RNG_UNIFORM) {
        GK_DISPATCH_FLOAT(t->dtype, rng_launch<D, GRAFT_RNG_UNIFORM>(t, n, a, b, seed, base));
        return gk_launched("uniform_");
    }
    GK_DISPATCH_FLOAT(t->dtype, rng_launch<D, GRAFT_RNG_NORMAL>(t, n, a, b, seed, base));
    return gk_launched("normal_");
}

/* ---- dropout ---- */

/* Thread t serves block base + t (chunk c = t / 64, j = t % 64): its word k decides
 * element c*256 + k*64 + j, so a warp's loads and stores stay contiguous. (n) -> (n) */
template <int D>
__global__ void dropout_forward_kernel(int64_t n, typename gk_type<D>::S *y, uint8_t *mask,
                                       const typename gk_type<D>::S *x, typename gk_type<D>::C scale, uint32_t keep,
                                       uint64_t seed, uint64_t base) {
    typedef typename gk_type<D>::C C;
    int64_t nthreads = (n + 255) / 256 * 64;
    GK_FOR(t, nthreads) {
        int64_t c = t / 64, j = t - c * 64, i0 = c * 256 + j;
        if (i0 >= n) continue;
        uint32_t w[4];
        graft_philox(seed, base + (uint64_t)t, w);
        for (int k = 0; k < 4; k++) {
            int64_t i = i0 + k * 64;
            if (i >= n) break;
            uint8_t m = (w[k] >> 8) < keep;
            mask[i] = m;
            y[i] = m ? gk_type<D>::st(gk_type<D>::ld(x[i]) * scale) : gk_type<D>::st((C)0);
        }
    }
}

template <int D>
__global__ void dropout_backward_kernel(gk_geom<3> g, char *dx, const char *gr, const char *mask,
                                        typename gk_type<D>::C scale) {
    typedef typename gk_type<D>::S S;
    typedef typename gk_type<D>::C C;
    int64_t off[3];
    GK_FOR(i, g.numel) {
        gk_offsets<3>(g, i, off);
        bool m = *(const uint8_t *)(mask + off[2]) != 0;
        *(S *)(dx + off[0]) = gk_type<D>::st(m ? gk_type<D>::ld(*(const S *)(gr + off[1])) * scale : (C)0);
    }
}

extern "C" graft_status graft_cuda_dropout_forward(graft_tensor *y, graft_tensor *mask, graft_tensor *x, double p,
                                                   uint64_t seed, uint64_t base) {
    GK_ON_DEVICE(x);
    int64_t n = graft_tensor_numel(x);
    if (n == 0) return GRAFT_OK;
    uint32_t keep = (uint32_t)ceil((1.0 - p) * 16777216.0); /* u < 1 - p, u = k / 2^24 */
    double scale = p < 1 ? 1.0 / (1.0 - p) : 0.0;
    int64_t nthreads = (n + 255) / 256 * 64;
    GK_DISPATCH_FLOAT(x->dtype, {
        typedef typename gk_type<D>::S S;
        typedef typename gk_type<D>::C C;
        /* the CPU rounds the scale to the tensor's type first */
        C sc = D == GRAFT_F64 ? (C)scale : (C)(float)scale;
        GK_LAUNCH_FLAT(dropout_forward_kernel<D>, gk_blocks(nthreads, GK_THREADS), GK_THREADS, 0, n,
                       (S *)graft_tensor_data(y), (uint8_t *)graft_tensor_data(mask), (const S *)graft_tensor_data(x),
                       sc, keep, seed, base);
    });
    return gk_launched("dropout");
}

extern "C" graft_status graft_cuda_dropout_backward(graft_tensor *dx, graft_tensor *g, graft_tensor *mask,
                                                    double scale) {
    GK_ON_DEVICE(dx);
    graft_tensor *ops[3] = {dx, g, mask};
    graft_iter it;
    graft_status st = graft_iter_init(&it, 3, ops, mask->ndim, mask->shape);
    if (st || it.numel == 0) return st;
    gk_geom<3> geo = gk_geom_of<3>(&it);
    GK_DISPATCH_FLOAT(g->dtype, {
        typedef typename gk_type<D>::C C;
        C sc = D == GRAFT_F64 ? (C)scale : (C)(float)scale;
        GK_LAUNCH_FLAT(dropout_backward_kernel<D>, gk_blocks(geo.numel, GK_THREADS), GK_THREADS, 0, geo, it.data[0],
                       (const char *)it.data[1], (const char *)it.data[2], sc);
    });
    return gk_launched("dropout backward");
}
