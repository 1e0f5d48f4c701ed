/* graft CUDA kernels: interpolate (nearest, linear, bilinear) and non-constant pad
 * (reflect, replicate, circular), forward and backward. Forwards read each output's
 * sources from tables the host built with the CPU's code (core/nn/resize.c); backwards
 * gather, each input element adding its outputs in increasing order, the order of the
 * CPU's scatter loops (deterministic, no atomics). Constant padding needs no kernel:
 * it is a fill and a copy of the overlap. */
#include "kernel.cuh"
#include "cuda/resize.h"

/* The accumulation type of a dtype: float, double for float64. */
template <int D> struct rk_acc { typedef float A; };
template <> struct rk_acc<GRAFT_F64> { typedef double A; };

/* ---- interpolate ---- */

template <int D>
__global__ void interp_nearest_fwd(graft_cuda_interp_geom g, const typename gk_type<D>::S *x,
                                   typename gk_type<D>::S *y, const int64_t *idx) {
    const int64_t n = g.planes * g.OH * g.OW;
    GK_FOR(i, n) {
        int64_t ow = i % g.OW, t = i / g.OW, oh = t % g.OH, pc = t / g.OH;
        y[i] = x[(pc * g.H + idx[oh]) * g.W + idx[g.OH + ow]];
    }
}

/* y = (r0[j0] m0 + r0[j1] m1) l0 + (r1[j0] m0 + r1[j1] m1) l1, r0, r1 the rows i0, i1. */
template <int D>
__global__ void interp_linear_fwd(graft_cuda_interp_geom g, const typename gk_type<D>::S *x, typename gk_type<D>::S *y,
                                  const int64_t *idx, const typename rk_acc<D>::A *lam) {
    typedef gk_type<D> T;
    typedef typename rk_acc<D>::A A;
    const int64_t n = g.planes * g.OH * g.OW, OH = g.OH, OW = g.OW;
    GK_FOR(i, n) {
        int64_t ow = i % OW, t = i / OW, oh = t % OH, pc = t / OH;
        int64_t w0 = idx[2 * OH + ow], w1 = idx[2 * OH + OW + ow];
        A b0 = lam[2 * OH + ow], b1 = lam[2 * OH + OW + ow];
        const typename T::S *r0 = x + (pc * g.H + idx[oh]) * g.W, *r1 = x + (pc * g.H + idx[OH + oh]) * g.W;
        A t0 = T::ld(r0[w0]) * b0 + T::ld(r0[w1]) * b1;
        A t1 = T::ld(r1[w0]) * b0 + T::ld(r1[w1]) * b1;
        y[i] = T::st(t0 * lam[oh] + t1 * lam[OH + oh]);
    }
}

/* One thread per input element: the sum over the outputs [rng] that read it, each term
 * as the CPU's scatter computes it (weights a b v, in the order r0 j0, r0 j1, r1 j0,
 * r1 j1 per output). */
template <typename F, bool LINEAR>
__global__ void interp_bwd(graft_cuda_interp_geom g, const F *gy, F *gx, const int64_t *idx, const F *lam,
                           const int64_t *rng) {
    const int64_t n = g.planes * g.H * g.W, H = g.H, W = g.W, OH = g.OH, OW = g.OW;
    GK_FOR(i, n) {
        int64_t iw = i % W, t = i / W, ih = t % H, pc = t / H;
        int64_t oh0 = rng[ih], oh1 = rng[H + ih], ow0 = rng[2 * H + iw], ow1 = rng[2 * H + W + iw];
        const F *gp = gy + pc * OH * OW;
        F s = 0;
        for (int64_t oh = oh0; oh < oh1; oh++) {
            if (!LINEAR) {
                if (idx[oh] != ih) continue;
                for (int64_t ow = ow0; ow < ow1; ow++)
                    if (idx[OH + ow] == iw) s += gp[oh * OW + ow];
                continue;
            }
            bool h0 = idx[oh] == ih, h1 = idx[OH + oh] == ih;
            F a0 = lam[oh], a1 = lam[OH + oh];
            for (int64_t ow = ow0; ow < ow1; ow++) {
                bool w0 = idx[2 * OH + ow] == iw, w1 = idx[2 * OH + OW + ow] == iw;
                F b0 = lam[2 * OH + ow], b1 = lam[2 * OH + OW + ow], v = gp[oh * OW + ow];
                if (h0 && w0) s += a0 * b0 * v;
                if (h0 && w1) s += a0 * b1 * v;
                if (h1 && w0) s += a1 * b0 * v;
                if (h1 && w1) s += a1 * b1 * v;
            }
        }
        gx[i] = s;
    }
}

template <int D>
static void interp_forward_as(graft_tensor *y, graft_tensor *x, const graft_cuda_interp_geom *g, bool linear,
                              graft_tensor *idx, graft_tensor *lam) {
    typedef typename gk_type<D>::S S;
    unsigned blocks = gk_blocks(g->planes * g->OH * g->OW, GK_THREADS);
    const S *xp = (const S *)graft_tensor_data(x);
    S *yp = (S *)graft_tensor_data(y);
    const int64_t *ip = (const int64_t *)graft_tensor_data(idx);
    if (linear)
        GK_LAUNCH_FLAT(interp_linear_fwd<D>, blocks, GK_THREADS, 0, *g, xp, yp, ip,
                       (const typename rk_acc<D>::A *)graft_tensor_data(lam));
    else
        GK_LAUNCH_FLAT(interp_nearest_fwd<D>, blocks, GK_THREADS, 0, *g, xp, yp, ip);
}

extern "C" graft_status graft_cuda_interp_forward(graft_tensor *y, graft_tensor *x, const graft_cuda_interp_geom *g,
                                                  bool linear, graft_tensor *idx, graft_tensor *lam) {
    GK_ON_DEVICE(x);
    if (g->planes * g->OH * g->OW == 0) return GRAFT_OK;
    switch (x->dtype) {
    case GRAFT_F32: interp_forward_as<GRAFT_F32>(y, x, g, linear, idx, lam); break;
    case GRAFT_F64: interp_forward_as<GRAFT_F64>(y, x, g, linear, idx, lam); break;
    case GRAFT_F16: interp_forward_as<GRAFT_F16>(y, x, g, linear, idx, lam); break;
    case GRAFT_BF16: interp_forward_as<GRAFT_BF16>(y, x, g, linear, idx, lam); break;
    default:
        return graft_error(GRAFT_ETYPE, "interpolate: expected a floating point input, got %s",
                           graft_dtype_name(x->dtype));
    }
    return gk_launched("interpolate");
}

template <typename F>
static void interp_backward_as(graft_tensor *gx, graft_tensor *gy, const graft_cuda_interp_geom *g, bool linear,
                               graft_tensor *idx, graft_tensor *lam, graft_tensor *rng) {
    unsigned blocks = gk_blocks(g->planes * g->H * g->W, GK_THREADS);
    const F *gp = (const F *)graft_tensor_data(gy), *lp = lam ? (const F *)graft_tensor_data(lam) : (const F *)NULL;
    F *xp = (F *)graft_tensor_data(gx);
    const int64_t *ip = (const int64_t *)graft_tensor_data(idx), *rp = (const int64_t *)graft_tensor_data(rng);
    if (linear) GK_LAUNCH_FLAT((interp_bwd<F, true>), blocks, GK_THREADS, 0, *g, gp, xp, ip, lp, rp);
    else GK_LAUNCH_FLAT((interp_bwd<F, false>), blocks, GK_THREADS, 0, *g, gp, xp, ip, lp, rp);
}

extern "C" graft_status graft_cuda_interp_backward(graft_tensor *gx, graft_tensor *gy, const graft_cuda_interp_geom *g,
                                                   bool linear, graft_tensor *idx, graft_tensor *lam, graft_tensor *rng) {
    GK_ON_DEVICE(gy);
    if (g->planes * g->H * g->W == 0) return GRAFT_OK;
    switch (gy->dtype) {
    case GRAFT_F32: interp_backward_as<float>(gx, gy, g, linear, idx, lam, rng); break;
    case GRAFT_F64: interp_backward_as<double>(gx, gy, g, linear, idx, lam, rng); break;
    default:
        return graft_error(GRAFT_ETYPE, "interpolate backward: expected a float32 or float64 gradient, got %s",
                           graft_dtype_name(gy->dtype));
    }
    return gk_launched("interpolate backward");
}

/* ---- pad ---- */

/* The source index of output index i along a dim of n inputs padded by lo before:
 * core/nn/resize.c's pd_map without the division (|j| stays below 2n). */
__device__ __forceinline__ int64_t pk_map(int64_t i, int64_t lo, int64_t n, int mode) {
    int64_t j = i - lo;
    if (mode == 1) { /* reflect */
        if (j < 0) j = -j;
        if (j >= n) j = 2 * (n - 1) - j;
    } else if (mode == 2) { /* replicate */
        j = j < 0 ? 0 : j >= n ? n - 1 : j;
    } else if (mode == 3) { /* circular */
        if (j < 0) j += n;
        else if (j >= n) j -= n;
    }
    return j;
}

/* A 32 x 8 block: y rows of the output (planes x OD x OH), x along the row. */
template <typename W> __global__ void pad_fwd(graft_cuda_pad_geom g, const W *x, W *y) {
    const int64_t rows = g.planes * g.out[0] * g.out[1], OW = g.out[2];
    for (int64_t r = (int64_t)blockIdx.x * blockDim.y + threadIdx.y; r < rows; r += (int64_t)gridDim.x * blockDim.y) {
        int64_t h = r % g.out[1], t = r / g.out[1], d = t % g.out[0], pc = t / g.out[0];
        int64_t sd = pk_map(d, g.lo[0], g.in[0], g.mode), sh = pk_map(h, g.lo[1], g.in[1], g.mode);
        const W *src = x + ((pc * g.in[0] + sd) * g.in[1] + sh) * g.in[2];
        W *dst = y + r * OW;
        for (int64_t w = threadIdx.x; w < OW; w += blockDim.x) dst[w] = src[pk_map(w, g.lo[2], g.in[2], g.mode)];
    }
}

/* One thread per input element: the sum of the outputs that read it (inv lists). */
template <typename F>
__global__ void pad_bwd(graft_cuda_pad_geom g, const F *gy, F *gx, const int64_t *inv, int64_t b0, int64_t b1,
                        int64_t b2) {
    const int64_t n = g.planes * g.in[0] * g.in[1] * g.in[2];
    const int64_t *o0 = inv + b0, *o1 = inv + b1, *o2 = inv + b2;
    const int64_t *l0 = o0 + g.in[0] + 1, *l1 = o1 + g.in[1] + 1, *l2 = o2 + g.in[2] + 1;
    GK_FOR(i, n) {
        int64_t w = i % g.in[2], t = i / g.in[2], h = t % g.in[1];
        t /= g.in[1];
        int64_t d = t % g.in[0], pc = t / g.in[0];
        const F *gp = gy + pc * g.out[0] * g.out[1] * g.out[2];
        F s = 0;
        for (int64_t a = o0[d]; a < o0[d + 1]; a++)
            for (int64_t b = o1[h]; b < o1[h + 1]; b++) {
                const F *row = gp + (l0[a] * g.out[1] + l1[b]) * g.out[2];
                for (int64_t c = o2[w]; c < o2[w + 1]; c++) s += row[l2[c]];
            }
        gx[i] = s;
    }
}

template <typename W> static void pad_forward_as(graft_tensor *y, graft_tensor *x, const graft_cuda_pad_geom *g) {
    int64_t rows = g->planes * g->out[0] * g->out[1];
    GK_LAUNCH_FLAT(pad_fwd<W>, gk_blocks(rows, 8), dim3(32, 8), 0, *g, (const W *)graft_tensor_data(x),
                   (W *)graft_tensor_data(y));
}

extern "C" graft_status graft_cuda_pad_forward(graft_tensor *y, graft_tensor *x, const graft_cuda_pad_geom *g) {
    GK_ON_DEVICE(x);
    if (g->planes * g->out[0] * g->out[1] * g->out[2] == 0) return GRAFT_OK;
    switch (graft_dtype_size(x->dtype)) {
    case 1: pad_forward_as<uint8_t>(y, x, g); break;
    case 2: pad_forward_as<uint16_t>(y, x, g); break;
    case 4: pad_forward_as<uint32_t>(y, x, g); break;
    default: pad_forward_as<uint64_t>(y, x, g); break;
    }
    return gk_launched("pad");
}

extern "C" graft_status graft_cuda_pad_backward(graft_tensor *gx, graft_tensor *gy, const graft_cuda_pad_geom *g,
                                                graft_tensor *inv, const int64_t base[3]) {
    GK_ON_DEVICE(gy);
    int64_t n = g->planes * g->in[0] * g->in[1] * g->in[2];
    if (n == 0) return GRAFT_OK;
    const int64_t *ip = (const int64_t *)graft_tensor_data(inv);
    switch (gy->dtype) {
    case GRAFT_F32:
        GK_LAUNCH_FLAT(pad_bwd<float>, gk_blocks(n, GK_THREADS), GK_THREADS, 0, *g, (const float *)graft_tensor_data(gy),
                       (float *)graft_tensor_data(gx), ip, base[0], base[1], base[2]);
        break;
    case GRAFT_F64:
        GK_LAUNCH_FLAT(pad_bwd<double>, gk_blocks(n, GK_THREADS), GK_THREADS, 0, *g,
                       (const double *)graft_tensor_data(gy), (double *)graft_tensor_data(gx), ip, base[0], base[1],
                       base[2]);
        break;
    default:
        return graft_error(GRAFT_ETYPE, "pad backward: expected a float32 or float64 gradient, got %s",
                           graft_dtype_name(gy->dtype));
    }
    return gk_launched("pad backward");
}
