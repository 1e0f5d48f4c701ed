/* graft CUDA kernels: max, average and adaptive 2-D pooling and their gradients. The
 * windows, divisors, NaN rule (a NaN wins the max) and scan order are those of the CPU
 * loops in core/nn/pool.c, so values and indices match exactly. Backward kernels gather:
 * each input element sums, in increasing output order, the outputs whose window holds
 * it, which is the order the CPU's scatter adds them in (deterministic, no atomics). */
#include "kernel.cuh"
#include "cuda/pool.h"

/* PyTorch's adaptive window bounds: [floor(a c / b), ceil((a + 1) c / b)). */
__device__ __forceinline__ int64_t pk_start(int64_t a, int64_t b, int64_t c) { return (a / b) * c + ((a % b) * c) / b; }
__device__ __forceinline__ int64_t pk_end(int64_t a, int64_t b, int64_t c) { return 1 + ((a + 1) * c - 1) / b; }

/* The outputs [lo, hi) of an adaptive pooling from `out` to `in` whose window holds
 * input index i: floor(i out / in) <= o < ceil((i + 1) out / in). */
__device__ __forceinline__ void pk_adaptive_range(int64_t i, int64_t in, int64_t out, int64_t *lo, int64_t *hi) {
    *lo = (i * out) / in;
    int64_t h = ((i + 1) * out + in - 1) / in;
    *hi = h < out ? h : out;
}

/* The clipped average window of output (oh, ow) and its divisor; false when empty. */
__device__ __forceinline__ bool pk_avg_window(const graft_cuda_pool_geom &g, int64_t oh, int64_t ow, int64_t *h0,
                                              int64_t *h1, int64_t *w0, int64_t *w1, int64_t *div) {
    int64_t ih0 = oh * g.sh - g.ph, iw0 = ow * g.sw - g.pw;
    int64_t ih1 = ih0 + g.kh < g.H + g.ph ? ih0 + g.kh : g.H + g.ph;
    int64_t iw1 = iw0 + g.kw < g.W + g.pw ? iw0 + g.kw : g.W + g.pw;
    int64_t pool = (ih1 - ih0) * (iw1 - iw0);
    if (ih0 < 0) ih0 = 0;
    if (iw0 < 0) iw0 = 0;
    if (ih1 > g.H) ih1 = g.H;
    if (iw1 > g.W) iw1 = g.W;
    *h0 = ih0;
    *h1 = ih1;
    *w0 = iw0;
    *w1 = iw1;
    if (ih0 >= ih1 || iw0 >= iw1) return false;
    *div = g.divisor ? g.divisor : g.count_include_pad ? pool : (ih1 - ih0) * (iw1 - iw0);
    return true;
}

/* ---- forward: one thread per output ---- */

template <int D, int KIND>
__global__ void pool_forward_kernel(graft_cuda_pool_geom g, const typename gk_type<D>::S *x, typename gk_type<D>::S *y,
                                    int64_t *ix) {
    typedef gk_type<D> T;
    typedef typename T::C C;
    const int64_t n = g.planes * g.OH * g.OW;
    GK_FOR(i, n) {
        int64_t ow = i % g.OW, t = i / g.OW, oh = t % g.OH, pc = t / g.OH;
        const typename T::S *xp = x + pc * g.H * g.W;
        if (KIND == GRAFT_CUDA_POOL_MAX || KIND == GRAFT_CUDA_POOL_ADAPTIVE_MAX) {
            int64_t h0, h1, w0, w1, dh = 1, dw = 1;
            if (KIND == GRAFT_CUDA_POOL_MAX) {
                dh = g.dh;
                dw = g.dw;
                h0 = oh * g.sh - g.ph;
                h1 = h0 + (g.kh - 1) * dh + 1 < g.H ? h0 + (g.kh - 1) * dh + 1 : g.H;
                while (h0 < 0) h0 += dh;
                w0 = ow * g.sw - g.pw;
                w1 = w0 + (g.kw - 1) * dw + 1 < g.W ? w0 + (g.kw - 1) * dw + 1 : g.W;
                while (w0 < 0) w0 += dw;
            } else {
                h0 = pk_start(oh, g.OH, g.H);
                h1 = pk_end(oh, g.OH, g.H);
                w0 = pk_start(ow, g.OW, g.W);
                w1 = pk_end(ow, g.OW, g.W);
            }
            int64_t mi = h0 * g.W + w0;
            C mv = -(C)INFINITY;
            for (int64_t ih = h0; ih < h1; ih += dh)
                for (int64_t iw = w0; iw < w1; iw += dw) {
                    C v = T::ld(xp[ih * g.W + iw]);
                    if (v > mv || v != v) {
                        mv = v;
                        mi = ih * g.W + iw;
                    }
                }
            y[i] = T::st(mv);
            if (ix) ix[i] = mi;
        } else if (KIND == GRAFT_CUDA_POOL_AVG) {
            int64_t h0, h1, w0, w1, div;
            if (!pk_avg_window(g, oh, ow, &h0, &h1, &w0, &w1, &div)) {
                y[i] = T::st((C)0);
                continue;
            }
            C s = 0;
            for (int64_t ih = h0; ih < h1; ih++)
                for (int64_t iw = w0; iw < w1; iw++) s += T::ld(xp[ih * g.W + iw]);
            y[i] = T::st(s / (C)div);
        } else { /* adaptive average */
            int64_t h0 = pk_start(oh, g.OH, g.H), h1 = pk_end(oh, g.OH, g.H);
            int64_t w0 = pk_start(ow, g.OW, g.W), w1 = pk_end(ow, g.OW, g.W);
            C s = 0;
            for (int64_t ih = h0; ih < h1; ih++)
                for (int64_t iw = w0; iw < w1; iw++) s += T::ld(xp[ih * g.W + iw]);
            y[i] = T::st(s / (C)(h1 - h0) / (C)(w1 - w0));
        }
    }
}

/* ---- backward: one thread per input element, gathering ---- */

template <typename F, int KIND>
__global__ void pool_backward_kernel(graft_cuda_pool_geom g, const F *gy, const int64_t *ix, F *gx) {
    const int64_t n = g.planes * g.H * g.W, OP = g.OH * g.OW;
    GK_FOR(i, n) {
        int64_t iw = i % g.W, t = i / g.W, ih = t % g.H, pc = t / g.H;
        const F *gp = gy + pc * OP;
        int64_t oh0, oh1, ow0, ow1; /* the candidate outputs [oh0, oh1) x [ow0, ow1) */
        if (KIND == GRAFT_CUDA_POOL_MAX) {
            int64_t eh = (g.kh - 1) * g.dh + 1, ew = (g.kw - 1) * g.dw + 1;
            oh0 = ih + g.ph < eh ? 0 : (ih + g.ph - eh) / g.sh + 1;
            oh1 = (ih + g.ph) / g.sh + 1;
            ow0 = iw + g.pw < ew ? 0 : (iw + g.pw - ew) / g.sw + 1;
            ow1 = (iw + g.pw) / g.sw + 1;
        } else if (KIND == GRAFT_CUDA_POOL_AVG) {
            oh0 = ih + g.ph - g.kh + 1 <= 0 ? 0 : (ih + g.ph - g.kh) / g.sh + 1;
            oh1 = (ih + g.ph) / g.sh + 1;
            ow0 = iw + g.pw - g.kw + 1 <= 0 ? 0 : (iw + g.pw - g.kw) / g.sw + 1;
            ow1 = (iw + g.pw) / g.sw + 1;
        } else {
            pk_adaptive_range(ih, g.H, g.OH, &oh0, &oh1);
            pk_adaptive_range(iw, g.W, g.OW, &ow0, &ow1);
        }
        if (oh1 > g.OH) oh1 = g.OH;
        if (ow1 > g.OW) ow1 = g.OW;
        F s = 0;
        for (int64_t oh = oh0; oh < oh1; oh++)
            for (int64_t ow = ow0; ow < ow1; ow++) {
                int64_t p = oh * g.OW + ow;
                if (KIND == GRAFT_CUDA_POOL_MAX || KIND == GRAFT_CUDA_POOL_ADAPTIVE_MAX) {
                    if (ix[pc * OP + p] == ih * g.W + iw) s += gp[p];
                } else if (KIND == GRAFT_CUDA_POOL_AVG) {
                    int64_t h0, h1, w0, w1, div;
                    if (pk_avg_window(g, oh, ow, &h0, &h1, &w0, &w1, &div) && ih >= h0 && ih < h1 && iw >= w0 &&
                        iw < w1)
                        s += gp[p] / (F)div;
                } else {
                    int64_t h0 = pk_start(oh, g.OH, g.H), h1 = pk_end(oh, g.OH, g.H);
                    int64_t w0 = pk_start(ow, g.OW, g.W), w1 = pk_end(ow, g.OW, g.W);
                    if (ih >= h0 && ih < h1 && iw >= w0 && iw < w1) s += gp[p] / (F)(h1 - h0) / (F)(w1 - w0);
                }
            }
        gx[i] = s;
    }
}

/* ---- launchers ---- */

template <int D>
static void pool_forward_as(graft_tensor *y, graft_tensor *indices, graft_tensor *x, const graft_cuda_pool_geom *g,
                            graft_cuda_pool_kind kind) {
    typedef typename gk_type<D>::S S;
    const S *xp = (const S *)graft_tensor_data(x);
    S *yp = (S *)graft_tensor_data(y);
    int64_t *ip = indices ? (int64_t *)graft_tensor_data(indices) : NULL;
    unsigned blocks = gk_blocks(g->planes * g->OH * g->OW, GK_THREADS);
    switch (kind) {
    case GRAFT_CUDA_POOL_MAX:
        GK_LAUNCH_FLAT((pool_forward_kernel<D, GRAFT_CUDA_POOL_MAX>), blocks, GK_THREADS, 0, *g, xp, yp, ip);
        break;
    case GRAFT_CUDA_POOL_AVG:
        GK_LAUNCH_FLAT((pool_forward_kernel<D, GRAFT_CUDA_POOL_AVG>), blocks, GK_THREADS, 0, *g, xp, yp, ip);
        break;
    case GRAFT_CUDA_POOL_ADAPTIVE_AVG:
        GK_LAUNCH_FLAT((pool_forward_kernel<D, GRAFT_CUDA_POOL_ADAPTIVE_AVG>), blocks, GK_THREADS, 0, *g, xp, yp, ip);
        break;
    case GRAFT_CUDA_POOL_ADAPTIVE_MAX:
        GK_LAUNCH_FLAT((pool_forward_kernel<D, GRAFT_CUDA_POOL_ADAPTIVE_MAX>), blocks, GK_THREADS, 0, *g, xp, yp, ip);
        break;
    }
}

static const char *pool_name(graft_cuda_pool_kind kind) {
    switch (kind) {
    case GRAFT_CUDA_POOL_MAX: return "max_pool2d";
    case GRAFT_CUDA_POOL_AVG: return "avg_pool2d";
    case GRAFT_CUDA_POOL_ADAPTIVE_AVG: return "adaptive_avg_pool2d";
    default: return "adaptive_max_pool2d";
    }
}

extern "C" graft_status graft_cuda_pool_forward(graft_tensor *y, graft_tensor *indices, graft_tensor *x,
                                                const graft_cuda_pool_geom *g, graft_cuda_pool_kind kind) {
    GK_ON_DEVICE(x);
    if (g->planes * g->OH * g->OW == 0) return GRAFT_OK;
    switch (x->dtype) {
    case GRAFT_F32: pool_forward_as<GRAFT_F32>(y, indices, x, g, kind); break;
    case GRAFT_F64: pool_forward_as<GRAFT_F64>(y, indices, x, g, kind); break;
    case GRAFT_F16: pool_forward_as<GRAFT_F16>(y, indices, x, g, kind); break;
    case GRAFT_BF16: pool_forward_as<GRAFT_BF16>(y, indices, x, g, kind); break;
    default:
        return graft_error(GRAFT_ETYPE, "%s: expected a floating point input, got %s", pool_name(kind),
                           graft_dtype_name(x->dtype));
    }
    return gk_launched(pool_name(kind));
}

template <typename F>
static void pool_backward_as(graft_tensor *gx, graft_tensor *gy, graft_tensor *indices, const graft_cuda_pool_geom *g,
                             graft_cuda_pool_kind kind) {
    const F *gp = (const F *)graft_tensor_data(gy);
    F *xp = (F *)graft_tensor_data(gx);
    const int64_t *ip = indices ? (const int64_t *)graft_tensor_data(indices) : NULL;
    unsigned blocks = gk_blocks(g->planes * g->H * g->W, GK_THREADS);
    switch (kind) {
    case GRAFT_CUDA_POOL_MAX:
        GK_LAUNCH_FLAT((pool_backward_kernel<F, GRAFT_CUDA_POOL_MAX>), blocks, GK_THREADS, 0, *g, gp, ip, xp);
        break;
    case GRAFT_CUDA_POOL_AVG:
        GK_LAUNCH_FLAT((pool_backward_kernel<F, GRAFT_CUDA_POOL_AVG>), blocks, GK_THREADS, 0, *g, gp, ip, xp);
        break;
    case GRAFT_CUDA_POOL_ADAPTIVE_AVG:
        GK_LAUNCH_FLAT((pool_backward_kernel<F, GRAFT_CUDA_POOL_ADAPTIVE_AVG>), blocks, GK_THREADS, 0, *g, gp, ip, xp);
        break;
    case GRAFT_CUDA_POOL_ADAPTIVE_MAX:
        GK_LAUNCH_FLAT((pool_backward_kernel<F, GRAFT_CUDA_POOL_ADAPTIVE_MAX>), blocks, GK_THREADS, 0, *g, gp, ip, xp);
        break;
    }
}

extern "C" graft_status graft_cuda_pool_backward(graft_tensor *gx, graft_tensor *gy, graft_tensor *indices,
                                                 const graft_cuda_pool_geom *g, graft_cuda_pool_kind kind) {
    GK_ON_DEVICE(gy);
    if (g->planes * g->H * g->W == 0) return GRAFT_OK;
    switch (gy->dtype) {
    case GRAFT_F32: pool_backward_as<float>(gx, gy, indices, g, kind); break;
    case GRAFT_F64: pool_backward_as<double>(gx, gy, indices, g, kind); break;
    default:
        return graft_error(GRAFT_ETYPE, "%s backward: expected a float32 or float64 gradient, got %s", pool_name(kind),
                           graft_dtype_name(gy->dtype));
    }
    return gk_launched(pool_name(kind));
}
