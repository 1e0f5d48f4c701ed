/* graft nn: softmax and log_softmax (fused, numerically stable: max, then the sum of
 * exponentials, in one kernel per row), the activations that are not core unary ops
 * (leaky_relu, elu, gelu exact and tanh, silu) with fused backward loops, and dropout
 * (mask and scaling in one pass over graft's Philox stream). CUDA tensors go to
 * core/cuda/nn_act.cu after the same checks. Activations also take float16 / bfloat16
 * (computed in float32); under autocast softmax and log_softmax run in float32, as on
 * PyTorch's float32 list. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/record_nn.h"
#include "cuda/nn_act.h"
#include "cuda/random.h"
#include "nn/kernels.h"
#include "nn/nn_math.h"
#include "ops/autocast.h"
#include "ops/elementwise.h"
#include "tensor/iter.h"
#include "tensor/rng.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define SHAPE_BUF GRAFT_NN_SHAPE_BUF

static int ac_threads(int64_t work) {
#ifdef _OPENMP
    return graft_should_parallelize(work) ? omp_get_max_threads() : 1;
#else
    (void)work;
    return 1;
#endif
}

/* ======================================================================== */
/* softmax / log_softmax                                                     */
/* ======================================================================== */

/* Tile of the inner dim processed at once when softmax runs along a non-last dim. */
#define SM_TILE 256

/* x viewed as [outer, D, inner] (contiguous), softmax along D.
 *   softmax:     y = e^(x - max) / sum e^(x - max)
 *   log_softmax: y = (x - max) - log(sum e^(x - max))                              */
#define SM_FORWARD(T, SUF)                                                                           \
    static void sm_forward_##SUF(T *y, const T *x, int64_t outer, int64_t D, int64_t inner, bool lg) { \
        int nt = ac_threads(outer * D * inner);                                                      \
        if (inner == 1) {                                                                            \
            _Pragma("omp parallel for num_threads(nt) if (nt > 1) schedule(static)")                 \
            for (int64_t r = 0; r < outer; r++) {                                                    \
                const T *xr = x + r * D;                                                             \
                T *yr = y + r * D;                                                                   \
                T m = -INFINITY, s = 0;                                                              \
                _Pragma("omp simd reduction(max : m)") for (int64_t d = 0; d < D; d++) m = xr[d] > m ? xr[d] : m; \
                _Pragma("omp simd reduction(+ : s)") for (int64_t d = 0; d < D; d++) {               \
                    T e = NN_EXP(xr[d] - m);                                                         \
                    if (!lg) yr[d] = e;                                                             \
                    s += e;                                                                          \
                }                                                                                    \
                if (lg) {                                                                           \
                    T ls = NN_LOG(s);                                                                \
                    _Pragma("omp simd") for (int64_t d = 0; d < D; d++) yr[d] = (xr[d] - m) - ls;    \
                } else {                                                                             \
                    T inv = (T)1 / s;                                                                \
                    _Pragma("omp simd") for (int64_t d = 0; d < D; d++) yr[d] *= inv;                \
                }                                                                                    \
            }                                                                                        \
            return;                                                                                  \
        }                                                                                            \
        int64_t tiles = (inner + SM_TILE - 1) / SM_TILE;                                             \
        _Pragma("omp parallel for num_threads(nt) if (nt > 1) schedule(static)")                     \
        for (int64_t ot = 0; ot < outer * tiles; ot++) {                                             \
            int64_t o = ot / tiles, i0 = (ot % tiles) * SM_TILE;                                     \
            int64_t w = inner - i0 < SM_TILE ? inner - i0 : SM_TILE;                                 \
            const T *xo = x + o * D * inner + i0;                                                    \
            T *yo = y + o * D * inner + i0;                                                          \
            T m[SM_TILE], s[SM_TILE];                                                                \
            for (int64_t i = 0; i < w; i++) { m[i] = -INFINITY; s[i] = 0; }                          \
            for (int64_t d = 0; d < D; d++)                                                          \
                for (int64_t i = 0; i < w; i++) m[i] = xo[d * inner + i] > m[i] ? xo[d * inner + i] : m[i]; \
            for (int64_t d = 0; d < D; d++)                                                          \
                _Pragma("omp simd") for (int64_t i = 0; i < w; i++) {                                \
                    T e = NN_EXP(xo[d * inner + i] - m[i]);                                          \
                    if (!lg) yo[d * inner + i] = e;                                                 \
                    s[i] += e;                                                                       \
                }                                                                                    \
            for (int64_t i = 0; i < w; i++) s[i] = lg ? NN_LOG(s[i]) : (T)1 / s[i];                 \
            for (int64_t d = 0; d < D; d++)                                                          \
                _Pragma("omp simd") for (int64_t i = 0; i < w; i++) {                                \
                    if (lg) yo[d * inner + i] = (xo[d * inner + i] - m[i]) - s[i];                  \
                    else yo[d * inner + i] *= s[i];                                                  \
                }                                                                                    \
        }                                                                                            \
    }

/*   softmax:     dx = y (g - sum(g y))
 *   log_softmax: dx = g - e^y sum(g)                                                  */
#define SM_BACKWARD(T, SUF)                                                                          \
    static void sm_backward_##SUF(T *dx, const T *g, const T *y, int64_t outer, int64_t D, int64_t inner, \
                                  bool lg) {                                                        \
        int nt = ac_threads(outer * D * inner);                                                      \
        if (inner == 1) {                                                                            \
            _Pragma("omp parallel for num_threads(nt) if (nt > 1) schedule(static)")                 \
            for (int64_t r = 0; r < outer; r++) {                                                    \
                const T *gr = g + r * D, *yr = y + r * D;                                            \
                T *o = dx + r * D;                                                                   \
                T s = 0;                                                                             \
                if (lg) {                                                                           \
                    _Pragma("omp simd reduction(+ : s)") for (int64_t d = 0; d < D; d++) s += gr[d]; \
                    _Pragma("omp simd") for (int64_t d = 0; d < D; d++) o[d] = gr[d] - NN_EXP(yr[d]) * s; \
                } else {                                                                             \
                    _Pragma("omp simd reduction(+ : s)") for (int64_t d = 0; d < D; d++) s += gr[d] * yr[d]; \
                    _Pragma("omp simd") for (int64_t d = 0; d < D; d++) o[d] = yr[d] * (gr[d] - s);  \
                }                                                                                    \
            }                                                                                        \
            return;                                                                                  \
        }                                                                                            \
        int64_t tiles = (inner + SM_TILE - 1) / SM_TILE;                                             \
        _Pragma("omp parallel for num_threads(nt) if (nt > 1) schedule(static)")                     \
        for (int64_t ot = 0; ot < outer * tiles; ot++) {                                             \
            int64_t o = ot / tiles, i0 = (ot % tiles) * SM_TILE;                                     \
            int64_t w = inner - i0 < SM_TILE ? inner - i0 : SM_TILE;                                 \
            int64_t base = o * D * inner + i0;                                                       \
            T s[SM_TILE];                                                                            \
            for (int64_t i = 0; i < w; i++) s[i] = 0;                                                \
            for (int64_t d = 0; d < D; d++)                                                          \
                _Pragma("omp simd") for (int64_t i = 0; i < w; i++) {                                \
                    int64_t k = base + d * inner + i;                                                \
                    s[i] += lg ? g[k] : g[k] * y[k];                                                \
                }                                                                                    \
            for (int64_t d = 0; d < D; d++)                                                          \
                _Pragma("omp simd") for (int64_t i = 0; i < w; i++) {                                \
                    int64_t k = base + d * inner + i;                                                \
                    dx[k] = lg ? g[k] - NN_EXP(y[k]) * s[i] : y[k] * (g[k] - s[i]);                 \
                }                                                                                    \
        }                                                                                            \
    }

SM_FORWARD(float, f32)
SM_FORWARD(double, f64)
SM_BACKWARD(float, f32)
SM_BACKWARD(double, f64)

/* [outer, D, inner] around dim (a 0-dim tensor is one row of one). */
static void sm_geometry(const graft_tensor *t, int dim, int64_t *outer, int64_t *D, int64_t *inner) {
    *outer = 1;
    *inner = 1;
    *D = t->ndim ? t->shape[dim] : 1;
    for (int d = 0; d < dim && d < t->ndim; d++) *outer *= t->shape[d];
    for (int d = dim + 1; d < t->ndim; d++) *inner *= t->shape[d];
}

graft_status graft_nn_softmax_forward(graft_tensor **y, graft_tensor *x, int dim, bool log) {
    const char *op = log ? "log_softmax" : "softmax";
    *y = NULL;
    graft_status st = graft_nn_check_float(x, op, "input");
    if (st || (st = graft_wrap_dim(&dim, dim, x->ndim ? x->ndim : 1, op))) return st;
    graft_tensor *xc = NULL;
    graft_device dev = graft_tensor_device(x);
    if ((st = graft_tensor_contiguous(&xc, x))) return st;
    if ((st = graft_tensor_empty(y, x->ndim, x->shape, x->dtype, dev))) {
        graft_tensor_release(xc);
        return st;
    }
    int64_t outer, D, inner;
    sm_geometry(x, dim, &outer, &D, &inner);
    if (dev.type == GRAFT_CUDA) {
        st = graft_cuda_nn_softmax_forward(*y, xc, outer, D, inner, log);
        if (st) {
            graft_tensor_release(*y);
            *y = NULL;
        }
    } else if (x->dtype == GRAFT_F64) {
        sm_forward_f64(graft_tensor_data(*y), graft_tensor_data(xc), outer, D, inner, log);
    } else {
        sm_forward_f32(graft_tensor_data(*y), graft_tensor_data(xc), outer, D, inner, log);
    }
    graft_tensor_release(xc);
    return st;
}

graft_status graft_nn_softmax_backward(graft_tensor **dx, graft_tensor *g, graft_tensor *y, int dim, bool log) {
    graft_tensor *gc = NULL, *yc = NULL;
    graft_tensor *ts[2] = {g, y};
    graft_device dev = graft_tensor_device(y);
    graft_status st;
    *dx = NULL;
    if ((st = graft_nn_same_device(log ? "log_softmax backward" : "softmax backward", 2, ts)) ||
        (st = graft_nn_contig_as(&gc, g, y->dtype)) || (st = graft_tensor_contiguous(&yc, y)) ||
        (st = graft_tensor_empty(dx, y->ndim, y->shape, y->dtype, dev)))
        goto done;
    int64_t outer, D, inner;
    sm_geometry(y, dim, &outer, &D, &inner);
    if (dev.type == GRAFT_CUDA) {
        if ((st = graft_cuda_nn_softmax_backward(*dx, gc, yc, outer, D, inner, log))) {
            graft_tensor_release(*dx);
            *dx = NULL;
        }
    } else if (y->dtype == GRAFT_F64)
        sm_backward_f64(graft_tensor_data(*dx), graft_tensor_data(gc), graft_tensor_data(yc), outer, D, inner, log);
    else
        sm_backward_f32(graft_tensor_data(*dx), graft_tensor_data(gc), graft_tensor_data(yc), outer, D, inner, log);
done:
    graft_tensor_release(gc);
    graft_tensor_release(yc);
    return st;
}

/* The dtype argument converts first (recorded, so the gradient flows back through it);
 * without one, autocast computes a 16-bit input in float32. */
static graft_status sm_front(graft_tensor **out, graft_tensor *x, int dim, int dtype, bool log) {
    if (dtype < 0) GRAFT_AUTOCAST_FP32(x, sm_front(out, x, dim, dtype, log));
    if (dtype < 0 && graft_nn_is_half(x)) { /* in float32, rounded back once */
        graft_tensor *t[1] = {x}, *h[1] = {NULL}, *r = NULL;
        graft_status st = graft_nn_half_up(t, 1, h);
        if (!st) st = sm_front(&r, t[0], dim, -1, log);
        graft_nn_half_release(h, 1);
        return st ? st : graft_nn_half_back(out, r, x->dtype);
    }
    if (dtype >= 0 && dtype != (int)x->dtype) {
        if (!graft_dtype_is_float((graft_dtype)dtype))
            return graft_error(GRAFT_ETYPE, "%s: dtype must be floating point, got %s", log ? "log_softmax" : "softmax",
                               graft_dtype_name((graft_dtype)dtype));
        graft_tensor *xc;
        graft_status st = graft_ag_to_dtype(&xc, x, (graft_dtype)dtype);
        if (st) return st;
        st = sm_front(out, xc, dim, -1, log);
        graft_tensor_release(xc);
        return st;
    }
    if (GRAFT_AG_ACTIVE(x->autograd)) return graft_ag_nn_softmax(out, x, dim, log);
    return graft_nn_softmax_forward(out, x, dim, log);
}

graft_status graft_nn_softmax(graft_tensor **out, graft_tensor *x, int dim, int dtype) {
    return sm_front(out, x, dim, dtype, false);
}

graft_status graft_nn_log_softmax(graft_tensor **out, graft_tensor *x, int dim, int dtype) {
    return sm_front(out, x, dim, dtype, true);
}

/* ======================================================================== */
/* activations                                                               */
/* ======================================================================== */

typedef struct {
    graft_nn_act act;
    double param;
} ac_ctx;

/* sqrt(2 / pi) and the cubic coefficient of the tanh approximation of gelu */
#define AC_BETA 0.7978845608028654
#define AC_KAPPA 0.044715
/* 1 / sqrt(2), 1 / sqrt(2 pi) */
#define AC_SQRT1_2 0.7071067811865476
#define AC_INV_SQRT_2PI 0.3989422804014327

/* One map over (out, x) with a contiguous path; EXPR reads x and p. */
#define AC_MAP1(T, EXPR)                                                                             \
    if (s[0] == (int64_t)sizeof(T) && s[1] == (int64_t)sizeof(T)) {                                  \
        T *o_ = (T *)d[0];                                                                           \
        const T *x_ = (const T *)d[1];                                                               \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                        \
            T x = x_[i];                                                                             \
            o_[i] = (EXPR);                                                                          \
        }                                                                                            \
    } else {                                                                                         \
        for (int64_t i = 0; i < n; i++) {                                                            \
            T x = *(const T *)(d[1] + i * s[1]);                                                     \
            *(T *)(d[0] + i * s[0]) = (EXPR);                                                        \
        }                                                                                            \
    }

/* One map over (out, g, x); EXPR reads g, x and p. */
#define AC_MAP2(T, EXPR)                                                                             \
    if (s[0] == (int64_t)sizeof(T) && s[1] == (int64_t)sizeof(T) && s[2] == (int64_t)sizeof(T)) {    \
        T *o_ = (T *)d[0];                                                                           \
        const T *g_ = (const T *)d[1], *x_ = (const T *)d[2];                                        \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                        \
            T g = g_[i], x = x_[i];                                                                  \
            o_[i] = (EXPR);                                                                          \
        }                                                                                            \
    } else {                                                                                         \
        for (int64_t i = 0; i < n; i++) {                                                            \
            T g = *(const T *)(d[1] + i * s[1]), x = *(const T *)(d[2] + i * s[2]);                  \
            *(T *)(d[0] + i * s[0]) = (EXPR);                                                        \
        }                                                                                            \
    }

/* Forward formulas:
 *   relu: x < 0 ? 0 : x (NaN stays NaN)
 *   leaky_relu: x > 0 ? x : p x            elu: x > 0 ? x : p (e^x - 1)
 *   gelu: x Phi(x) = x (1 + erf(x / sqrt 2)) / 2
 *   gelu tanh: x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2
 *   silu: x / (1 + e^-x)                                                              */
#define AC_FORWARD(T, SUF)                                                                           \
    static void ac_forward_##SUF(char **d, const int64_t *s, int64_t n, void *vctx) {               \
        const ac_ctx *c = vctx;                                                                      \
        const T p = (T)c->param;                                                                     \
        (void)p;                                                                                     \
        switch (c->act) {                                                                            \
        case GRAFT_NN_RELU: AC_MAP1(T, x < 0 ? (T)0 : x) break;                                      \
        case GRAFT_NN_LEAKY_RELU: AC_MAP1(T, x > 0 ? x : x * p) break;                               \
        case GRAFT_NN_ELU: AC_MAP1(T, x > 0 ? x : p * NN_EXPM1(x)) break;                            \
        case GRAFT_NN_GELU: AC_MAP1(T, (T)0.5 * x * ((T)1 + NN_ERF(x * (T)AC_SQRT1_2))) break;       \
        case GRAFT_NN_GELU_TANH:                                                                     \
            AC_MAP1(T, (T)0.5 * x * ((T)1 + NN_TANH((T)AC_BETA * (x + (T)AC_KAPPA * x * x * x)))) break; \
        case GRAFT_NN_SILU: AC_MAP1(T, x / ((T)1 + NN_EXP(-x))) break;                               \
        }                                                                                            \
    }

static inline float ac_gelu_tanh_grad_f32(float x) {
    float t = nn_tanhf((float)AC_BETA * (x + (float)AC_KAPPA * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * (float)AC_BETA * (1.0f + 3.0f * (float)AC_KAPPA * x * x);
}
static inline double ac_gelu_tanh_grad_f64(double x) {
    double t = tanh(AC_BETA * (x + AC_KAPPA * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * AC_BETA * (1.0 + 3.0 * AC_KAPPA * x * x);
}
static inline float ac_silu_grad_f32(float x) {
    float sg = 1.0f / (1.0f + nn_expf(-x));
    return sg * (1.0f + x * (1.0f - sg));
}
static inline double ac_silu_grad_f64(double x) {
    double sg = 1.0 / (1.0 + exp(-x));
    return sg * (1.0 + x * (1.0 - sg));
}

/* Backward formulas (dx = g f'(x)); relu reads its output (y > 0 iff x > 0):
 *   relu: x > 0 ? 1 : 0
 *   leaky_relu: x > 0 ? 1 : p             elu: x > 0 ? 1 : p e^x
 *   gelu: Phi(x) + x phi(x)               silu: s (1 + x (1 - s)), s = sigmoid(x)
 *   gelu tanh: (1 + t) / 2 + x (1 - t^2) sqrt(2/pi) (1 + 3 0.044715 x^2) / 2            */
#define AC_BACKWARD(T, SUF)                                                                          \
    static void ac_backward_##SUF(char **d, const int64_t *s, int64_t n, void *vctx) {              \
        const ac_ctx *c = vctx;                                                                      \
        const T p = (T)c->param;                                                                     \
        (void)p;                                                                                     \
        switch (c->act) {                                                                            \
        case GRAFT_NN_RELU: AC_MAP2(T, x > 0 ? g : (T)0) break;                                      \
        case GRAFT_NN_LEAKY_RELU: AC_MAP2(T, x > 0 ? g : g * p) break;                               \
        case GRAFT_NN_ELU: AC_MAP2(T, x > 0 ? g : g * p * NN_EXP(x)) break;                          \
        case GRAFT_NN_GELU:                                                                          \
            AC_MAP2(T, g * ((T)0.5 * ((T)1 + NN_ERF(x * (T)AC_SQRT1_2)) +                            \
                            x * (T)AC_INV_SQRT_2PI * NN_EXP((T)-0.5 * x * x))) break;                \
        case GRAFT_NN_GELU_TANH: AC_MAP2(T, g * ac_gelu_tanh_grad_##SUF(x)) break;                   \
        case GRAFT_NN_SILU: AC_MAP2(T, g * ac_silu_grad_##SUF(x)) break;                             \
        }                                                                                            \
    }

AC_FORWARD(float, f32)
AC_FORWARD(double, f64)
AC_BACKWARD(float, f32)
AC_BACKWARD(double, f64)

static const char *ac_name(graft_nn_act act) {
    switch (act) {
    case GRAFT_NN_RELU: return "relu";
    case GRAFT_NN_LEAKY_RELU: return "leaky_relu";
    case GRAFT_NN_ELU: return "elu";
    case GRAFT_NN_GELU:
    case GRAFT_NN_GELU_TANH: return "gelu";
    case GRAFT_NN_SILU: return "silu";
    }
    return "activation";
}

static bool ac_is_16bit(graft_dtype d) { return d == GRAFT_F16 || d == GRAFT_BF16; }

/* Every floating dtype, as PyTorch (autocast hands these float16 / bfloat16 tensors from
 * the layers before). 16-bit inputs compute in float32 and round once: natively on
 * CUDA, through float32 copies on the CPU. */
static graft_status ac_check(const graft_tensor *x, graft_nn_act act) {
    if (graft_dtype_is_float(x->dtype)) return GRAFT_OK;
    return graft_error(GRAFT_ETYPE, "%s: expected a floating point input, got %s", ac_name(act),
                       graft_dtype_name(x->dtype));
}

graft_status graft_nn_activation_forward(graft_tensor **y, graft_nn_act act, graft_tensor *x, double param) {
    *y = NULL;
    graft_status st = ac_check(x, act);
    graft_device dev = graft_tensor_device(x);
    if (st) return st;
    if (dev.type == GRAFT_CPU && ac_is_16bit(x->dtype)) {
        graft_tensor *x32 = NULL, *y32 = NULL;
        if (!(st = graft_tensor_to_dtype(&x32, x, GRAFT_F32)) &&
            !(st = graft_nn_activation_forward(&y32, act, x32, param)))
            st = graft_tensor_to_dtype(y, y32, x->dtype);
        graft_tensor_release(x32);
        graft_tensor_release(y32);
        return st;
    }
    if ((st = graft_tensor_empty(y, x->ndim, x->shape, x->dtype, dev))) return st;
    if (dev.type == GRAFT_CUDA) {
        if ((st = graft_cuda_nn_activation_forward(*y, x, act, param))) {
            graft_tensor_release(*y);
            *y = NULL;
        }
        return st;
    }
    graft_iter it;
    graft_tensor *ops[2] = {*y, x};
    if ((st = graft_iter_init(&it, 2, ops, x->ndim, x->shape))) {
        graft_tensor_release(*y);
        *y = NULL;
        return st;
    }
    ac_ctx c = {act, param};
    graft_iter_run(&it, x->dtype == GRAFT_F64 ? ac_forward_f64 : ac_forward_f32, &c);
    return GRAFT_OK;
}

graft_status graft_nn_activation_backward(graft_tensor **dx, graft_nn_act act, graft_tensor *g, graft_tensor *x,
                                          double param) {
    graft_tensor *gc = NULL;
    graft_tensor *ts[2] = {g, x};
    graft_device dev = graft_tensor_device(x);
    *dx = NULL;
    char op[32];
    snprintf(op, sizeof op, "%s backward", ac_name(act));
    graft_status st = graft_nn_same_device(op, 2, ts);
    if (st || (st = ac_check(x, act))) return st;
    if (dev.type == GRAFT_CPU && ac_is_16bit(x->dtype)) {
        graft_tensor *g32 = NULL, *x32 = NULL, *d32 = NULL;
        if (!(st = graft_tensor_to_dtype(&g32, g, GRAFT_F32)) && !(st = graft_tensor_to_dtype(&x32, x, GRAFT_F32)) &&
            !(st = graft_nn_activation_backward(&d32, act, g32, x32, param)))
            st = graft_tensor_to_dtype(dx, d32, x->dtype);
        graft_tensor_release(g32);
        graft_tensor_release(x32);
        graft_tensor_release(d32);
        return st;
    }
    if ((st = graft_tensor_to_dtype(&gc, g, x->dtype))) return st;
    if ((st = graft_tensor_empty(dx, x->ndim, x->shape, x->dtype, dev))) {
        graft_tensor_release(gc);
        return st;
    }
    if (dev.type == GRAFT_CUDA) {
        if ((st = graft_cuda_nn_activation_backward(*dx, gc, x, act, param))) {
            graft_tensor_release(*dx);
            *dx = NULL;
        }
        graft_tensor_release(gc);
        return st;
    }
    graft_iter it;
    graft_tensor *ops[3] = {*dx, gc, x};
    if ((st = graft_iter_init(&it, 3, ops, x->ndim, x->shape))) {
        graft_tensor_release(*dx);
        *dx = NULL;
    } else {
        ac_ctx c = {act, param};
        graft_iter_run(&it, x->dtype == GRAFT_F64 ? ac_backward_f64 : ac_backward_f32, &c);
    }
    graft_tensor_release(gc);
    return st;
}

graft_status graft_nn_activation(graft_tensor **out, graft_nn_act act, graft_tensor *x, double param) {
    if (GRAFT_AG_ACTIVE(x->autograd)) return graft_ag_nn_activation(out, act, x, param);
    return graft_nn_activation_forward(out, act, x, param);
}

/* ======================================================================== */
/* dropout                                                                   */
/* ======================================================================== */

/* bernoulli(1 - p) from graft's Philox stream: the elements go in chunks of 4 DO_CHUNK,
 * one per 32-bit word of the chunk's DO_CHUNK consecutive blocks (word k of block j
 * serves element k DO_CHUNK + j), kept when the word's top 24 bits, as a uniform in
 * [0, 1), fall below 1 - p; y = keep ? x / (1 - p) : 0. The blocks of a chunk come from
 * one loop over counters that vectorises; the mask depends only on the seed and the
 * stream position, never on the thread count. */
#define DO_CHUNK 64
#define DO_FORWARD(T, SUF)                                                                           \
    static void do_forward_##SUF(T *y, uint8_t *mask, const T *x, int64_t n, double p, uint64_t seed, \
                                 uint64_t base) {                                                    \
        const T scale = p < 1 ? (T)(1.0 / (1.0 - p)) : (T)0;                                         \
        const uint32_t keep = (uint32_t)ceil((1.0 - p) * 16777216.0); /* u < 1 - p, u = k / 2^24 */ \
        int64_t blocks = (n + 3) / 4, chunks = (blocks + DO_CHUNK - 1) / DO_CHUNK;                   \
        int nt = ac_threads(n);                                                                      \
        _Pragma("omp parallel for num_threads(nt) if (nt > 1) schedule(static)")                     \
        for (int64_t ch = 0; ch < chunks; ch++) {                                                    \
            uint32_t w[4][DO_CHUNK];                                                                 \
            int64_t b0 = ch * DO_CHUNK;                                                              \
            _Pragma("omp simd") for (int j = 0; j < DO_CHUNK; j++)                                   \
                nn_philox(seed, base + (uint64_t)(b0 + j), &w[0][j], &w[1][j], &w[2][j], &w[3][j]);  \
            int64_t i0 = b0 * 4, cnt = n - i0 < 4 * DO_CHUNK ? n - i0 : 4 * DO_CHUNK;                \
            const uint32_t *wf = &w[0][0];                                                           \
            _Pragma("omp simd") for (int64_t k = 0; k < cnt; k++) {                                  \
                uint8_t m = (wf[k] >> 8) < keep;                                                     \
                mask[i0 + k] = m;                                                                    \
                y[i0 + k] = m ? x[i0 + k] * scale : (T)0;                                            \
            }                                                                                        \
        }                                                                                            \
    }

DO_FORWARD(float, f32)
DO_FORWARD(double, f64)

graft_status graft_nn_dropout_forward(graft_tensor **y, graft_tensor **mask, graft_tensor *x, double p) {
    *y = NULL;
    *mask = NULL;
    if (!graft_dtype_is_float(x->dtype))
        return graft_error(GRAFT_ETYPE, "dropout: expected a floating point input, got %s", graft_dtype_name(x->dtype));
    if (!(p >= 0 && p <= 1)) return graft_error(GRAFT_EINVAL, "dropout: probability has to be between 0 and 1, but got %g", p);
    graft_status st;
    graft_tensor *xc = NULL, *yc = NULL;
    graft_device dev = graft_tensor_device(x);
    /* float16/bfloat16 on the CPU: computed in float32 and rounded once (the mask does
     * not depend on the dtype); the device kernels read and write 16 bits directly */
    bool half_cpu = dev.type == GRAFT_CPU && x->dtype != GRAFT_F32 && x->dtype != GRAFT_F64;
    if ((st = half_cpu ? graft_nn_contig_as(&xc, x, GRAFT_F32) : graft_tensor_contiguous(&xc, x)) ||
        (st = graft_tensor_empty(y, x->ndim, x->shape, x->dtype, dev)) ||
        (st = graft_tensor_empty(mask, x->ndim, x->shape, GRAFT_U8, dev)) ||
        (half_cpu && (st = graft_tensor_empty(&yc, x->ndim, x->shape, GRAFT_F32, dev)))) {
        graft_tensor_release(*y);
        graft_tensor_release(*mask);
        *y = *mask = NULL;
        graft_tensor_release(xc);
        return st;
    }
    int64_t n = graft_tensor_numel(x);
    graft_rng_state rs;
    graft_rng_get_state(&rs);
    /* the blocks the layout above reads: whole chunks of DO_CHUNK, then the last chunk's
     * first min(DO_CHUNK, elements left) (element k of a chunk uses block k % DO_CHUNK) */
    int64_t last = n > 0 ? (n - 1) / (4 * DO_CHUNK) : 0, left = n - last * 4 * DO_CHUNK;
    uint64_t base = graft_rng_reserve((uint64_t)(last * DO_CHUNK + (left < DO_CHUNK ? left : DO_CHUNK)));
    if (dev.type == GRAFT_CUDA) /* the same mask from the same stream, on the device (core/cuda/random.cu) */
        st = graft_cuda_dropout_forward(*y, *mask, xc, p, rs.seed, base);
    else if (x->dtype == GRAFT_F64)
        do_forward_f64(graft_tensor_data(*y), graft_tensor_data(*mask), graft_tensor_data(xc), n, p, rs.seed, base);
    else if (x->dtype == GRAFT_F32)
        do_forward_f32(graft_tensor_data(*y), graft_tensor_data(*mask), graft_tensor_data(xc), n, p, rs.seed, base);
    else {
        do_forward_f32(graft_tensor_data(yc), graft_tensor_data(*mask), graft_tensor_data(xc), n, p, rs.seed, base);
        st = graft_tensor_copy_(*y, yc);
    }
    graft_tensor_release(yc);
    graft_tensor_release(xc);
    if (st) {
        graft_tensor_release(*y);
        graft_tensor_release(*mask);
        *y = *mask = NULL;
    }
    return st;
}

#define DO_BACKWARD(T, SUF)                                                                          \
    static void do_backward_##SUF(char **d, const int64_t *s, int64_t n, void *vctx) {              \
        const T scale = (T)*(const double *)vctx;                                                    \
        if (s[0] == (int64_t)sizeof(T) && s[1] == (int64_t)sizeof(T) && s[2] == 1) {                 \
            T *o = (T *)d[0];                                                                        \
            const T *g = (const T *)d[1];                                                            \
            const uint8_t *m = (const uint8_t *)d[2];                                                \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) o[i] = m[i] ? g[i] * scale : (T)0;   \
            return;                                                                                  \
        }                                                                                            \
        for (int64_t i = 0; i < n; i++) {                                                            \
            uint8_t m = *(const uint8_t *)(d[2] + i * s[2]);                                         \
            *(T *)(d[0] + i * s[0]) = m ? *(const T *)(d[1] + i * s[1]) * scale : (T)0;              \
        }                                                                                            \
    }

DO_BACKWARD(float, f32)
DO_BACKWARD(double, f64)

graft_status graft_nn_dropout_backward(graft_tensor **dx, graft_tensor *g, graft_tensor *mask, double scale) {
    graft_device dev = graft_tensor_device(g);
    if (!graft_device_eq(dev, graft_tensor_device(mask))) {
        char b1[16], b2[16];
        return graft_error(GRAFT_EDEVICE, "dropout backward: expected all tensors to be on the same device, but found %s and %s",
                           graft_device_str(dev, b1), graft_device_str(graft_tensor_device(mask), b2));
    }
    graft_status st = graft_tensor_empty(dx, mask->ndim, mask->shape, g->dtype, dev);
    if (st) return st;
    if (dev.type == GRAFT_CUDA) {
        if (!graft_dtype_is_float(g->dtype)) st = graft_error(GRAFT_ETYPE, "dropout backward: unexpected %s gradient",
                                                             graft_dtype_name(g->dtype));
        else st = graft_cuda_dropout_backward(*dx, g, mask, scale);
        if (st) {
            graft_tensor_release(*dx);
            *dx = NULL;
        }
        return st;
    }
    graft_iter it;
    graft_tensor *ops[3] = {*dx, g, mask};
    if ((st = graft_iter_init(&it, 3, ops, mask->ndim, mask->shape))) {
        graft_tensor_release(*dx);
        *dx = NULL;
        return st;
    }
    if (g->dtype == GRAFT_F64) graft_iter_run(&it, do_backward_f64, &scale);
    else if (g->dtype == GRAFT_F32) graft_iter_run(&it, do_backward_f32, &scale);
    else if (graft_dtype_is_float(g->dtype)) { /* 16-bit: in float32, rounded once */
        graft_tensor *g32 = NULL, *d32 = NULL;
        if (!(st = graft_tensor_to_dtype(&g32, g, GRAFT_F32)) &&
            !(st = graft_nn_dropout_backward(&d32, g32, mask, scale)))
            st = graft_tensor_copy_(*dx, d32);
        graft_tensor_release(g32);
        graft_tensor_release(d32);
    } else {
        st = graft_error(GRAFT_ETYPE, "dropout backward: unexpected %s gradient", graft_dtype_name(g->dtype));
    }
    if (st) {
        graft_tensor_release(*dx);
        *dx = NULL;
    }
    return st;
}

graft_status graft_nn_dropout(graft_tensor **out, graft_tensor *x, double p, bool training) {
    if (!(p >= 0 && p <= 1)) return graft_error(GRAFT_EINVAL, "dropout: probability has to be between 0 and 1, but got %g", p);
    if (!training) {
        graft_tensor_retain(x);
        *out = x;
        return GRAFT_OK;
    }
    if (GRAFT_AG_ACTIVE(x->autograd)) return graft_ag_nn_dropout(out, x, p);
    graft_tensor *mask = NULL;
    graft_status st = graft_nn_dropout_forward(out, &mask, x, p);
    graft_tensor_release(mask);
    return st;
}
