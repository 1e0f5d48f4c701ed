/* graft nn: the span loops of the normalisation kernels (see span.h), stamped out for
 * float32 and float64. Sums carry `omp simd reduction` so they vectorise without
 * -ffast-math; the reductions accumulate in double. */
#include "nn/span.h"

#define NN_SPAN_DEFINE(T, SUF)                                                                       \
    static double sum_##SUF(const void *pv, int64_t n) {                                            \
        const T *p = pv;                                                                             \
        double s = 0;                                                                                \
        _Pragma("omp simd reduction(+ : s)") for (int64_t i = 0; i < n; i++) s += p[i];             \
        return s;                                                                                    \
    }                                                                                                \
    static double sqdev_##SUF(const void *pv, int64_t n, double mean) {                             \
        const T *p = pv;                                                                             \
        double s = 0;                                                                                \
        _Pragma("omp simd reduction(+ : s)") for (int64_t i = 0; i < n; i++) {                      \
            double d = (double)p[i] - mean;                                                          \
            s += d * d;                                                                              \
        }                                                                                            \
        return s;                                                                                    \
    }                                                                                                \
    static void affine_##SUF(void *yv, const void *xv, int64_t n, double scale, double shift) {     \
        T *y = yv;                                                                                   \
        const T *x = xv;                                                                             \
        const T a = (T)scale, b = (T)shift;                                                          \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = x[i] * a + b;                    \
    }                                                                                                \
    static void affine_w_##SUF(void *yv, const void *xv, const void *wv, const void *bv, int64_t n, \
                               double mean, double rstd) {                                          \
        T *y = yv;                                                                                   \
        const T *x = xv, *w = wv, *b = bv;                                                           \
        const T m = (T)mean, r = (T)rstd;                                                            \
        if (w && b) {                                                                                \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = (x[i] - m) * r * w[i] + b[i]; \
        } else if (w) {                                                                              \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = (x[i] - m) * r * w[i];        \
        } else if (b) {                                                                              \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = (x[i] - m) * r + b[i];        \
        } else {                                                                                     \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = (x[i] - m) * r;               \
        }                                                                                            \
    }                                                                                                \
    static void dot_##SUF(const void *gv, const void *xv, const void *wv, int64_t n, double *sg,    \
                          double *sgx) {                                                             \
        const T *g = gv, *x = xv, *w = wv;                                                           \
        double a = 0, b = 0;                                                                         \
        if (w) {                                                                                     \
            _Pragma("omp simd reduction(+ : a, b)") for (int64_t i = 0; i < n; i++) {               \
                double gw = (double)g[i] * (double)w[i];                                             \
                a += gw;                                                                             \
                b += gw * (double)x[i];                                                              \
            }                                                                                        \
        } else {                                                                                     \
            _Pragma("omp simd reduction(+ : a, b)") for (int64_t i = 0; i < n; i++) {               \
                a += (double)g[i];                                                                   \
                b += (double)g[i] * (double)x[i];                                                    \
            }                                                                                        \
        }                                                                                            \
        *sg = a;                                                                                     \
        *sgx = b;                                                                                    \
    }                                                                                                \
    static void dx_##SUF(void *dxv, const void *gv, const void *xv, const void *wv, int64_t n,      \
                         double s, double b, double c) {                                             \
        T *dx = dxv;                                                                                 \
        const T *g = gv, *x = xv, *w = wv;                                                           \
        const T ts = (T)s, tb = (T)b, tc = (T)c;                                                     \
        if (w) {                                                                                     \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) dx[i] = ts * w[i] * g[i] + tb * x[i] + tc; \
        } else {                                                                                     \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) dx[i] = ts * g[i] + tb * x[i] + tc;  \
        }                                                                                            \
    }                                                                                                \
    static void accum_##SUF(double *dw, double *db, const void *gv, const void *xv, int64_t n,      \
                            double mean, double rstd) {                                              \
        const T *g = gv, *x = xv;                                                                    \
        if (dw) {                                                                                    \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) dw[i] += (double)g[i] * (((double)x[i] - mean) * rstd); \
        }                                                                                            \
        if (db) {                                                                                    \
            _Pragma("omp simd") for (int64_t i = 0; i < n; i++) db[i] += (double)g[i];               \
        }                                                                                            \
    }                                                                                                \
    static void col_sum_##SUF(double *acc, const void *pv, int64_t n) {                             \
        const T *p = pv;                                                                             \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) acc[i] += (double)p[i];                 \
    }                                                                                                \
    static void col_sqdev_##SUF(double *acc, const void *pv, const double *mean, int64_t n) {       \
        const T *p = pv;                                                                             \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                       \
            double d = (double)p[i] - mean[i];                                                       \
            acc[i] += d * d;                                                                         \
        }                                                                                            \
    }                                                                                                \
    static void col_affine_##SUF(void *yv, const void *xv, const void *av, const void *bv, int64_t n) { \
        T *y = yv;                                                                                   \
        const T *x = xv, *a = av, *b = bv;                                                           \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = x[i] * a[i] + b[i];              \
    }                                                                                                \
    static void col_dot_##SUF(double *sg, double *sgx, const void *gv, const void *xv, int64_t n) { \
        const T *g = gv, *x = xv;                                                                    \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) {                                       \
            sg[i] += (double)g[i];                                                                   \
            sgx[i] += (double)g[i] * (double)x[i];                                                   \
        }                                                                                            \
    }                                                                                                \
    static void col_dx_##SUF(void *dxv, const void *gv, const void *xv, const void *sv, const void *bv, \
                             const void *cv, int64_t n) {                                            \
        T *dx = dxv;                                                                                 \
        const T *g = gv, *x = xv, *s = sv, *b = bv, *c = cv;                                         \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) dx[i] = s[i] * g[i] + b[i] * x[i] + c[i]; \
    }                                                                                                \
    const nn_span_ops nn_span_##SUF = {sizeof(T),     sum_##SUF,     sqdev_##SUF,     affine_##SUF,     \
                                       affine_w_##SUF, dot_##SUF,    dx_##SUF,        accum_##SUF,      \
                                       col_sum_##SUF, col_sqdev_##SUF, col_affine_##SUF, col_dot_##SUF, \
                                       col_dx_##SUF};

NN_SPAN_DEFINE(float, f32)
NN_SPAN_DEFINE(double, f64)
