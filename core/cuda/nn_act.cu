/* graft CUDA kernels: softmax / log_softmax (one pass for the online max and sum of
 * exponentials, one for the output; a warp per row up to 1024 elements, a block per
 * row beyond, a thread per column when the softmax dim is not the innermost) and the
 * fused activations of core/nn with their backward maps. Formulas as activation.c. */
#include "kernel.cuh"
#include "cuda/nn_act.h"

/* x, y [outer, D, inner]; row r = (o, k) starts at o D inner + k, its D elements
 * `inner` apart.
 *   softmax:     y = e^(x - m) / s        log_softmax: y = (x - m) - log s
 * with m the row max and s = sum e^(x - m), both from one online pass. */
template <int DT, class G>
__global__ void sm_forward_kernel(typename gk_type<DT>::S *y, const typename gk_type<DT>::S *x, int64_t rows,
                                  int64_t D, int64_t inner, bool lg) {
    typedef gk_type<DT> T;
    typedef typename nk_acc<DT>::A A;
    G grp;
    for (int64_t r = nk_first(grp); r < rows; r += nk_step(grp)) {
        int64_t o = r / inner, base = o * D * inner + (r - o * inner);
        const typename T::S *xr = x + base;
        typename T::S *yr = y + base;
        A m = -nk_inf<A>(), s = 0;
        for (int64_t c = grp.rank(); c < D; c += grp.size()) nk_online_add(m, s, (A)T::ld(xr[c * inner]));
        grp.online(m, s);
        if (lg) {
            A ls = nk_log(s);
            for (int64_t c = grp.rank(); c < D; c += grp.size()) yr[c * inner] = T::st(((A)T::ld(xr[c * inner]) - m) - ls);
        } else {
            A inv = (A)1 / s;
            for (int64_t c = grp.rank(); c < D; c += grp.size())
                yr[c * inner] = T::st(nk_exp((A)T::ld(xr[c * inner]) - m) * inv);
        }
    }
}

/*   softmax:     dx = y (g - sum(g y))
 *   log_softmax: dx = g - e^y sum(g)                                                  */
template <int DT, class G>
__global__ void sm_backward_kernel(typename gk_type<DT>::S *dx, const typename gk_type<DT>::S *g,
                                   const typename gk_type<DT>::S *y, int64_t rows, int64_t D, int64_t inner, bool lg) {
    typedef gk_type<DT> T;
    typedef typename nk_acc<DT>::A A;
    G grp;
    for (int64_t r = nk_first(grp); r < rows; r += nk_step(grp)) {
        int64_t o = r / inner, base = o * D * inner + (r - o * inner);
        A s = 0;
        for (int64_t c = grp.rank(); c < D; c += grp.size()) {
            int64_t k = base + c * inner;
            s += lg ? (A)T::ld(g[k]) : (A)T::ld(g[k]) * (A)T::ld(y[k]);
        }
        s = grp.sum(s);
        for (int64_t c = grp.rank(); c < D; c += grp.size()) {
            int64_t k = base + c * inner;
            A gv = T::ld(g[k]), yv = T::ld(y[k]);
            dx[k] = T::st(lg ? gv - nk_exp(yv) * s : yv * (gv - s));
        }
    }
}

static graft_status nk_unsupported(const char *op, graft_dtype d) {
    return graft_error(GRAFT_ETYPE, "%s: %s is not supported on CUDA", op, graft_dtype_name(d));
}

template <int DT>
static void sm_forward_launch(graft_tensor *y, graft_tensor *x, int64_t rows, int64_t D, int64_t inner, bool log) {
    typedef typename gk_type<DT>::S S;
    NK_ROW_LAUNCH(sm_forward_kernel, DT, rows, D, inner, (S *)graft_tensor_data(y), (const S *)graft_tensor_data(x),
                  rows, D, inner, log);
}

template <int DT>
static void sm_backward_launch(graft_tensor *dx, graft_tensor *g, graft_tensor *y, int64_t rows, int64_t D,
                               int64_t inner, bool log) {
    typedef typename gk_type<DT>::S S;
    NK_ROW_LAUNCH(sm_backward_kernel, DT, rows, D, inner, (S *)graft_tensor_data(dx), (const S *)graft_tensor_data(g),
                  (const S *)graft_tensor_data(y), rows, D, inner, log);
}

extern "C" graft_status graft_cuda_nn_softmax_forward(graft_tensor *y, graft_tensor *x, int64_t outer, int64_t D,
                                                      int64_t inner, bool log) {
    GK_ON_DEVICE(y);
    const char *op = log ? "log_softmax" : "softmax";
    int64_t rows = outer * inner;
    if (rows == 0 || D == 0) return GRAFT_OK;
    switch (x->dtype) {
    case GRAFT_F32: sm_forward_launch<GRAFT_F32>(y, x, rows, D, inner, log); break;
    case GRAFT_F64: sm_forward_launch<GRAFT_F64>(y, x, rows, D, inner, log); break;
    default: return nk_unsupported(op, x->dtype);
    }
    return gk_launched(op);
}

extern "C" graft_status graft_cuda_nn_softmax_backward(graft_tensor *dx, graft_tensor *g, graft_tensor *y,
                                                       int64_t outer, int64_t D, int64_t inner, bool log) {
    GK_ON_DEVICE(dx);
    const char *op = log ? "log_softmax backward" : "softmax backward";
    int64_t rows = outer * inner;
    if (rows == 0 || D == 0) return GRAFT_OK;
    switch (y->dtype) {
    case GRAFT_F32: sm_backward_launch<GRAFT_F32>(dx, g, y, rows, D, inner, log); break;
    case GRAFT_F64: sm_backward_launch<GRAFT_F64>(dx, g, y, rows, D, inner, log); break;
    default: return nk_unsupported(op, y->dtype);
    }
    return gk_launched(op);
}

/* ======================================================================== */
/* activations                                                               */
/* ======================================================================== */

/* sqrt(2 / pi), the cubic coefficient of gelu's tanh form, 1 / sqrt(2), 1 / sqrt(2 pi) */
#define AK_BETA 0.7978845608028654
#define AK_KAPPA 0.044715
#define AK_SQRT1_2 0.7071067811865476
#define AK_INV_SQRT_2PI 0.3989422804014327

/*   relu: x < 0 ? 0 : x (NaN stays NaN)
 *   leaky_relu: x > 0 ? x : p x            elu: x > 0 ? x : p (e^x - 1)
 *   gelu: x (1 + erf(x / sqrt 2)) / 2      gelu tanh: x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2
 *   silu: x / (1 + e^-x)                                                              */
template <class A> __device__ __forceinline__ A ak_forward(int act, A x, A p) {
    switch (act) {
    case GRAFT_NN_RELU: return x < 0 ? (A)0 : x;
    case GRAFT_NN_LEAKY_RELU: return x > 0 ? x : x * p;
    case GRAFT_NN_ELU: return x > 0 ? x : p * nk_expm1(x);
    case GRAFT_NN_GELU: return (A)0.5 * x * ((A)1 + nk_erf(x * (A)AK_SQRT1_2));
    case GRAFT_NN_GELU_TANH: return (A)0.5 * x * ((A)1 + nk_tanh((A)AK_BETA * (x + (A)AK_KAPPA * x * x * x)));
    default: return x / ((A)1 + nk_exp(-x));
    }
}

/* dx = g f'(x); relu reads its output (y > 0 iff x > 0):
 *   gelu: Phi(x) + x phi(x)                silu: s (1 + x (1 - s)), s = sigmoid(x)
 *   gelu tanh: (1 + t) / 2 + x (1 - t^2) sqrt(2/pi) (1 + 3 0.044715 x^2) / 2            */
template <class A> __device__ __forceinline__ A ak_backward(int act, A g, A x, A p) {
    switch (act) {
    case GRAFT_NN_RELU: return x > 0 ? g : (A)0;
    case GRAFT_NN_LEAKY_RELU: return x > 0 ? g : g * p;
    case GRAFT_NN_ELU: return x > 0 ? g : g * p * nk_exp(x);
    case GRAFT_NN_GELU:
        return g * ((A)0.5 * ((A)1 + nk_erf(x * (A)AK_SQRT1_2)) + x * (A)AK_INV_SQRT_2PI * nk_exp((A)-0.5 * x * x));
    case GRAFT_NN_GELU_TANH: {
        A t = nk_tanh((A)AK_BETA * (x + (A)AK_KAPPA * x * x * x));
        return g * ((A)0.5 * ((A)1 + t) +
                    (A)0.5 * x * ((A)1 - t * t) * (A)AK_BETA * ((A)1 + (A)3 * (A)AK_KAPPA * x * x));
    }
    default: {
        A sg = (A)1 / ((A)1 + nk_exp(-x));
        return g * sg * ((A)1 + x * ((A)1 - sg));
    }
    }
}

/* operands {y, x} */
template <int DT>
__global__ void ak_forward_kernel(gk_geom<2> geo, char *y, const char *x, int act, typename nk_acc<DT>::A p) {
    typedef gk_type<DT> T;
    typedef typename nk_acc<DT>::A A;
    int64_t off[2];
    GK_FOR(i, geo.numel) {
        nk_offsets<2>(geo, i, off);
        A v = T::ld(*(const typename T::S *)(x + off[1]));
        *(typename T::S *)(y + off[0]) = T::st(ak_forward<A>(act, v, p));
    }
}

/* operands {dx, g, x} */
template <int DT>
__global__ void ak_backward_kernel(gk_geom<3> geo, char *dx, const char *g, const char *x, int act,
                                   typename nk_acc<DT>::A p) {
    typedef gk_type<DT> T;
    typedef typename nk_acc<DT>::A A;
    int64_t off[3];
    GK_FOR(i, geo.numel) {
        nk_offsets<3>(geo, i, off);
        A gv = T::ld(*(const typename T::S *)(g + off[1])), xv = T::ld(*(const typename T::S *)(x + off[2]));
        *(typename T::S *)(dx + off[0]) = T::st(ak_backward<A>(act, gv, xv, p));
    }
}

/* float32 and float64, and float16 / bfloat16 read and written as 16 bits, computed in float. */
extern "C" graft_status graft_cuda_nn_activation_forward(graft_tensor *y, graft_tensor *x, graft_nn_act act,
                                                         double param) {
    GK_ON_DEVICE(y);
    graft_iter it;
    graft_tensor *ops[2] = {y, x};
    graft_status st = graft_iter_init(&it, 2, ops, y->ndim, y->shape);
    if (st) return st;
    if (it.numel == 0) return GRAFT_OK;
    if (!graft_dtype_is_float(x->dtype)) return nk_unsupported("activation", x->dtype);
    gk_geom<2> geo = gk_geom_of<2>(&it);
    unsigned nb = gk_blocks(geo.numel, GK_THREADS);
    GK_DISPATCH_FLOAT(x->dtype, GK_LAUNCH_FLAT(ak_forward_kernel<D>, nb, GK_THREADS, 0, geo, it.data[0],
                                               (const char *)it.data[1], (int)act, (typename nk_acc<D>::A)param));
    return gk_launched("activation");
}

extern "C" graft_status graft_cuda_nn_activation_backward(graft_tensor *dx, graft_tensor *g, graft_tensor *x,
                                                          graft_nn_act act, double param) {
    GK_ON_DEVICE(dx);
    graft_iter it;
    graft_tensor *ops[3] = {dx, g, x};
    graft_status st = graft_iter_init(&it, 3, ops, dx->ndim, dx->shape);
    if (st) return st;
    if (it.numel == 0) return GRAFT_OK;
    if (!graft_dtype_is_float(x->dtype)) return nk_unsupported("activation backward", x->dtype);
    gk_geom<3> geo = gk_geom_of<3>(&it);
    unsigned nb = gk_blocks(geo.numel, GK_THREADS);
    GK_DISPATCH_FLOAT(x->dtype, GK_LAUNCH_FLAT(ak_backward_kernel<D>, nb, GK_THREADS, 0, geo, it.data[0],
                                               (const char *)it.data[1], (const char *)it.data[2], (int)act,
                                               (typename nk_acc<D>::A)param));
    return gk_launched("activation backward");
}
