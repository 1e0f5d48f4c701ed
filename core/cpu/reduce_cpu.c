/* graft CPU reductions: one traversal engine plus per-(op, dtype) kernels.
 *
 * The engine drops size-1 dims, splits the rest into kept (K) and reduced (R) dims,
 * coalesces each group, and picks one of two layouts:
 *   A ("rows"):  the innermost input dim is reduced: every output folds whole rows of
 *                R with a row kernel (a vectorised contiguous loop when stride is 1);
 *   B ("lanes"): the innermost input dim is kept: a tile of up to RED_TILE adjacent
 *                outputs is folded at once, one input row of lanes per R element.
 * Rows shorter than 16 with many outputs go to B (strided lanes beat a call per tiny
 * row), and tiny lanes with long rows go to A.
 * Accumulators live in "lanes" (structure of arrays, so lane loops vectorise). Large
 * work runs on the OpenMP pool, either over outputs or, when there are few outputs,
 * by splitting R across threads and combining the partial lanes in thread order (so
 * results are deterministic for a given thread count).
 */
#include "cpu/reduce_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "tensor/iter.h"

#define RED_TILE 1024
#define RED_MAX_THREADS 64

/* ---- lanes: the accumulators ---- */

typedef struct {
    double *d0, *d1, *aux;
    int64_t *i0, *i1;
} red_lanes;

typedef struct {
    double d0[RED_TILE], d1[RED_TILE], aux[RED_TILE];
    int64_t i0[RED_TILE], i1[RED_TILE];
} red_store;

static red_lanes red_bind(red_store *s) {
    red_lanes L = {s->d0, s->d1, s->aux, s->i0, s->i1};
    return L;
}

typedef void (*red_init_fn)(red_lanes *L, int64_t j, int64_t n);
/* Folds n elements at p (byte stride st) into lane j; r0 is the index of the first one
 * along the innermost reduced dim (argmax). */
typedef void (*red_row_fn)(red_lanes *L, int64_t j, const char *p, int64_t st, int64_t n, int64_t r0,
                           const graft_reduce_cfg *c);
/* Folds element j of the row at p (byte stride st between lanes) into lane j, j < nl;
 * r is the index of this row along the innermost reduced dim. */
typedef void (*red_lanes_fn)(red_lanes *L, const char *p, int64_t st, int64_t nl, int64_t r,
                             const graft_reduce_cfg *c);
/* Lane j of D (covering earlier elements) absorbs lane k of S (covering later ones). */
typedef void (*red_combine_fn)(red_lanes *D, int64_t j, const red_lanes *S, int64_t k,
                               const graft_reduce_cfg *c);
typedef void (*red_finish_fn)(const red_lanes *L, int64_t j, char *out, int64_t *idx, int64_t count,
                              const graft_reduce_cfg *c);

typedef struct {
    red_init_fn init;
    red_row_fn row;
    red_lanes_fn lanes;
    red_combine_fn combine;
    red_finish_fn finish;
} red_ops;

/* ---- contiguous row folds ----
 * Sums over a contiguous row are latency-bound with one accumulator, and GCC keeps a
 * vectorised accumulator array in memory, so with AVX the row folds use intrinsics and
 * eight register accumulators (other targets: the scalar loop). Float rows accumulate in
 * double, far below PyTorch's cascade error. */

#define S_ADD(a, b) ((a) + (b))
#define S_MUL(a, b) ((a) * (b))

/* NAME(x, n, mb): the fold (SOP from IDENT) of an expression over x[0..n): VEXPR on a
 * 4-lane vector v, SEXPR on one element e; mb is a shift (the variance's block mean).
 * Eight independent accumulators cover the add latency on two ports. */
#if defined(__AVX__)
#include <immintrin.h>
static inline __m256d red_load_f32(const float *x) { return _mm256_cvtps_pd(_mm_loadu_ps(x)); }
static inline __m256d red_load_f64(const double *x) { return _mm256_loadu_pd(x); }
#define V_ADD(a, b) _mm256_add_pd(a, b)
#define V_MUL(a, b) _mm256_mul_pd(a, b)
#define V_SQ(v) _mm256_mul_pd(_mm256_sub_pd(v, mbv), _mm256_sub_pd(v, mbv))
#define V_ABS(v) _mm256_and_pd(v, absm)
#define DEF_ROW_VEC(T, LOAD, VOP, SOP, IDENT, VEXPR)                                                   \
    const __m256d mbv = _mm256_set1_pd(mb);                                                            \
    const __m256d absm = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));                \
    __m256d a0 = _mm256_set1_pd(IDENT), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0; \
    __m256d v;                                                                                         \
    (void)mbv;                                                                                         \
    (void)absm;                                                                                        \
    for (; i + 32 <= n; i += 32) {                                                                     \
        v = LOAD(x + i);      a0 = VOP(a0, VEXPR);                                                     \
        v = LOAD(x + i + 4);  a1 = VOP(a1, VEXPR);                                                     \
        v = LOAD(x + i + 8);  a2 = VOP(a2, VEXPR);                                                     \
        v = LOAD(x + i + 12); a3 = VOP(a3, VEXPR);                                                     \
        v = LOAD(x + i + 16); a4 = VOP(a4, VEXPR);                                                     \
        v = LOAD(x + i + 20); a5 = VOP(a5, VEXPR);                                                     \
        v = LOAD(x + i + 24); a6 = VOP(a6, VEXPR);                                                     \
        v = LOAD(x + i + 28); a7 = VOP(a7, VEXPR);                                                     \
    }                                                                                                  \
    for (; i + 4 <= n; i += 4) {                                                                       \
        v = LOAD(x + i);                                                                               \
        a0 = VOP(a0, VEXPR);                                                                           \
    }                                                                                                  \
    a0 = VOP(VOP(VOP(a0, a1), VOP(a2, a3)), VOP(VOP(a4, a5), VOP(a6, a7)));                            \
    double t[4];                                                                                       \
    _mm256_storeu_pd(t, a0);                                                                           \
    s = SOP(SOP(t[0], t[1]), SOP(t[2], t[3]));
#else
#define DEF_ROW_VEC(T, LOAD, VOP, SOP, IDENT, VEXPR)
#endif

#define DEF_ROW_ACC(NAME, T, LOAD, VOP, SOP, IDENT, VEXPR, SEXPR)                                      \
    static inline double NAME(const T *x, int64_t n, double mb) {                                      \
        int64_t i = 0;                                                                                 \
        double s = IDENT;                                                                              \
        DEF_ROW_VEC(T, LOAD, VOP, SOP, IDENT, VEXPR)                                                   \
        for (; i < n; i++) {                                                                           \
            double e = (double)x[i];                                                                   \
            s = SOP(s, SEXPR);                                                                         \
        }                                                                                              \
        (void)mb;                                                                                      \
        return s;                                                                                      \
    }

DEF_ROW_ACC(row_sum_f32_d, float, red_load_f32, V_ADD, S_ADD, 0.0, v, e)
DEF_ROW_ACC(row_sum_f64, double, red_load_f64, V_ADD, S_ADD, 0.0, v, e)
DEF_ROW_ACC(row_prod_f32, float, red_load_f32, V_MUL, S_MUL, 1.0, v, e)
DEF_ROW_ACC(row_prod_f64, double, red_load_f64, V_MUL, S_MUL, 1.0, v, e)
DEF_ROW_ACC(row_sq_f32, float, red_load_f32, V_ADD, S_ADD, 0.0, V_SQ(v), (e - mb) * (e - mb))
DEF_ROW_ACC(row_sq_f64, double, red_load_f64, V_ADD, S_ADD, 0.0, V_SQ(v), (e - mb) * (e - mb))
DEF_ROW_ACC(row_abs_f32, float, red_load_f32, V_ADD, S_ADD, 0.0, V_ABS(v), fabs(e))
DEF_ROW_ACC(row_abs_f64, double, red_load_f64, V_ADD, S_ADD, 0.0, V_ABS(v), fabs(e))

/* float32 row sums, the most common reduction, run at float speed: each block of 128
 * floats is summed as eight lanes of a pairwise tree of depth 4 in float (error a few
 * ulps of the block's partial sums, like PyTorch's cascade), and the block results are
 * accumulated in double. */
static inline double row_sum_f32(const float *x, int64_t n, double mb) {
    int64_t i = 0;
    double s = 0;
#if defined(__AVX__)
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 128 <= n; i += 128) {
        __m256 q[2];
        for (int h = 0; h < 2; h++) {
            const float *y = x + i + 64 * h;
            __m256 p0 = _mm256_add_ps(_mm256_loadu_ps(y), _mm256_loadu_ps(y + 8));
            __m256 p1 = _mm256_add_ps(_mm256_loadu_ps(y + 16), _mm256_loadu_ps(y + 24));
            __m256 p2 = _mm256_add_ps(_mm256_loadu_ps(y + 32), _mm256_loadu_ps(y + 40));
            __m256 p3 = _mm256_add_ps(_mm256_loadu_ps(y + 48), _mm256_loadu_ps(y + 56));
            q[h] = _mm256_add_ps(_mm256_add_ps(p0, p1), _mm256_add_ps(p2, p3));
        }
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(q[0])));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(q[0], 1)));
        a2 = _mm256_add_pd(a2, _mm256_cvtps_pd(_mm256_castps256_ps128(q[1])));
        a3 = _mm256_add_pd(a3, _mm256_cvtps_pd(_mm256_extractf128_ps(q[1], 1)));
    }
    a0 = _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3));
    double t[4];
    _mm256_storeu_pd(t, a0);
    s = (t[0] + t[1]) + (t[2] + t[3]);
#endif
    return s + row_sum_f32_d(x + i, n - i, mb);
}

/* The extreme of a contiguous row and whether it holds a NaN. */
#define DEF_ROW_EXT(NAME, T, CMP, IDENT, SIMD)                                                          \
    static inline T NAME(const T *x, int64_t n, int *has_nan) {                                        \
        T m = IDENT;                                                                                   \
        int nan = 0;                                                                                   \
        _Pragma(SIMD) for (int64_t i = 0; i < n; i++) {                                            \
            T v = x[i];                                                                                \
            m = v CMP m ? v : m;                                                                       \
            nan |= v != v;                                                                             \
        }                                                                                              \
        *has_nan = nan;                                                                                \
        return m;                                                                                      \
    }

DEF_ROW_EXT(row_max_f32, float, >, -INFINITY, "omp simd reduction(max:m) reduction(|:nan)")
DEF_ROW_EXT(row_max_f64, double, >, -INFINITY, "omp simd reduction(max:m) reduction(|:nan)")
DEF_ROW_EXT(row_min_f32, float, <, INFINITY, "omp simd reduction(min:m) reduction(|:nan)")
DEF_ROW_EXT(row_min_f64, double, <, INFINITY, "omp simd reduction(min:m) reduction(|:nan)")

/* ---- sum and product: f32/f64 with a double accumulator, i64 wrapping ---- */

#define RED_FLOAT_ARITH(NAME, T, OP, IDENT, ROWFN)                                                      \
    static void NAME##_init(red_lanes *L, int64_t j, int64_t n) {                                      \
        for (int64_t k = 0; k < n; k++) L->d0[j + k] = IDENT;                                         \
    }                                                                                                  \
    static void NAME##_row(red_lanes *L, int64_t j, const char *p, int64_t st, int64_t n, int64_t r0,  \
                           const graft_reduce_cfg *c) {                                                \
        double s = IDENT;                                                                              \
        if (st == (int64_t)sizeof(T)) {                                                                \
            s = ROWFN((const T *)p, n, 0);                                                             \
        } else {                                                                                       \
            for (int64_t i = 0; i < n; i++) s = s OP (double)*(const T *)(p + i * st);                 \
        }                                                                                              \
        L->d0[j] = L->d0[j] OP s;                                                                      \
    }                                                                                                  \
    static void NAME##_lanes(red_lanes *L, const char *p, int64_t st, int64_t nl, int64_t r,           \
                             const graft_reduce_cfg *c) {                                              \
        double *a = L->d0;                                                                             \
        if (st == (int64_t)sizeof(T)) {                                                                \
            const T *x = (const T *)p;                                                                 \
            _Pragma("omp simd") for (int64_t j = 0; j < nl; j++) a[j] = a[j] OP (double)x[j];                              \
        } else {                                                                                       \
            _Pragma("omp simd") for (int64_t j = 0; j < nl; j++) a[j] = a[j] OP (double)*(const T *)(p + j * st);          \
        }                                                                                              \
    }                                                                                                  \
    static void NAME##_combine(red_lanes *D, int64_t j, const red_lanes *S, int64_t k,                 \
                               const graft_reduce_cfg *c) {                                            \
        D->d0[j] = D->d0[j] OP S->d0[k];                                                               \
    }                                                                                                  \
    static void NAME##_finish(const red_lanes *L, int64_t j, char *out, int64_t *idx, int64_t count,   \
                              const graft_reduce_cfg *c) {                                             \
        double v = L->d0[j];                                                                           \
        if (c->mean) v /= (double)count;                                                               \
        *(T *)out = (T)v;                                                                              \
    }

RED_FLOAT_ARITH(sum_f32, float, +, 0.0, row_sum_f32)
RED_FLOAT_ARITH(sum_f64, double, +, 0.0, row_sum_f64)
RED_FLOAT_ARITH(prod_f32, float, *, 1.0, row_prod_f32)
RED_FLOAT_ARITH(prod_f64, double, *, 1.0, row_prod_f64)

/* int64 in unsigned arithmetic: wraps like PyTorch, and no undefined overflow. */
#define RED_INT_ARITH(NAME, OP, IDENT, SIMD)                                                           \
    static void NAME##_init(red_lanes *L, int64_t j, int64_t n) {                                      \
        for (int64_t k = 0; k < n; k++) L->i0[j + k] = IDENT;                                         \
    }                                                                                                  \
    static void NAME##_row(red_lanes *L, int64_t j, const char *p, int64_t st, int64_t n, int64_t r0,  \
                           const graft_reduce_cfg *c) {                                                \
        uint64_t s = IDENT;                                                                            \
        if (st == 8) {                                                                                 \
            const uint64_t *x = (const uint64_t *)p;                                                   \
            _Pragma(SIMD) for (int64_t i = 0; i < n; i++) s = s OP x[i];                               \
        } else {                                                                                       \
            for (int64_t i = 0; i < n; i++) s = s OP *(const uint64_t *)(p + i * st);                  \
        }                                                                                              \
        L->i0[j] = (int64_t)((uint64_t)L->i0[j] OP s);                                                 \
    }                                                                                                  \
    static void NAME##_lanes(red_lanes *L, const char *p, int64_t st, int64_t nl, int64_t r,           \
                             const graft_reduce_cfg *c) {                                              \
        uint64_t *a = (uint64_t *)L->i0;                                                               \
        _Pragma("omp simd") for (int64_t j = 0; j < nl; j++) a[j] = a[j] OP *(const uint64_t *)(p + j * st);               \
    }                                                                                                  \
    static void NAME##_combine(red_lanes *D, int64_t j, const red_lanes *S, int64_t k,                 \
                               const graft_reduce_cfg *c) {                                            \
        D->i0[j] = (int64_t)((uint64_t)D->i0[j] OP (uint64_t)S->i0[k]);                                \
    }                                                                                                  \
    static void NAME##_finish(const red_lanes *L, int64_t j, char *out, int64_t *idx, int64_t count,   \
                              const graft_reduce_cfg *c) {                                             \
        *(int64_t *)out = L->i0[j];                                                                    \
    }

RED_INT_ARITH(sum_i64, +, 0, "omp simd reduction(+:s)")
RED_INT_ARITH(prod_i64, *, 1, "omp simd reduction(*:s)")

/* ---- max and min: a NaN anywhere makes the result NaN ---- */

#define RED_FLOAT_MINMAX(NAME, T, CMP, IDENT, ROWFN)                                                    \
    static void NAME##_init(red_lanes *L, int64_t j, int64_t n) {                                      \
        for (int64_t k = 0; k < n; k++) L->d0[j + k] = IDENT;                                         \
    }                                                                                                  \
    static void NAME##_row(red_lanes *L, int64_t j, const char *p, int64_t st, int64_t n, int64_t r0,  \
                           const graft_reduce_cfg *c) {                                                \
        T m = (T)IDENT;                                                                                \
        int nan = 0;                                                                                   \
        if (st == (int64_t)sizeof(T)) {                                                                \
            m = ROWFN((const T *)p, n, &nan);                                                          \
        } else {                                                                                       \
            for (int64_t i = 0; i < n; i++) {                                                          \
                T v = *(const T *)(p + i * st);                                                        \
                m = v CMP m ? v : m;                                                                   \
                nan |= v != v;                                                                         \
            }                                                                                          \
        }                                                                                              \
        double cur = L->d0[j];                                                                         \
        if (nan) cur = NAN;                                                                            \
        else if ((double)m CMP cur) cur = m;                                                           \
        L->d0[j] = cur;                                                                                \
    }                                                                                                  \
    static void NAME##_lanes(red_lanes *L, const char *p, int64_t st, int64_t nl, int64_t r,           \
                             const graft_reduce_cfg *c) {                                              \
        double *a = L->d0;                                                                             \
        _Pragma("omp simd") for (int64_t j = 0; j < nl; j++) {                                                             \
            double v = *(const T *)(p + j * st), m = a[j];                                             \
            a[j] = (v CMP m || v != v) ? v : m;                                                        \
        }                                                                                              \
    }                                                                                                  \
    static void NAME##_combine(red_lanes *D, int64_t j, const red_lanes *S, int64_t k,                 \
                               const graft_reduce_cfg *c) {                                            \
        double s = S->d0[k], d = D->d0[j];                                                             \
        D->d0[j] = (s CMP d || s != s) ? s : d;                                                        \
    }                                                                                                  \
    static void NAME##_finish(const red_lanes *L, int64_t j, char *out, int64_t *idx, int64_t count,   \
                              const graft_reduce_cfg *c) {                                             \
        *(T *)out = (T)L->d0[j];                                                                       \
    }

RED_FLOAT_MINMAX(max_f32, float, >, -INFINITY, row_max_f32)
RED_FLOAT_MINMAX(max_f64, double, >, -INFINITY, row_max_f64)
RED_FLOAT_MINMAX(min_f32, float, <, INFINITY, row_min_f32)
RED_FLOAT_MINMAX(min_f64, double, <, INFINITY, row_min_f64)

#define RED_INT_MINMAX(NAME, CMP, IDENT, SIMD)                                                         \
    static void NAME##_init(red_lanes *L, int64_t j, int64_t n) {                                      \
        for (int64_t k = 0; k < n; k++) L->i0[j + k] = IDENT;                                         \
    }                                                                                                  \
    static void NAME##_row(red_lanes *L, int64_t j, const char *p, int64_t st, int64_t n, int64_t r0,  \
                           const graft_reduce_cfg *c) {                                                \
        int64_t m = IDENT;                                                                             \
        if (st == 8) {                                                                                 \
            const int64_t *x = (const int64_t *)p;                                                     \
            _Pragma(SIMD) for (int64_t i = 0; i < n; i++) m = x[i] CMP m ? x[i] : m;                   \
        } else {                                                                                       \
            for (int64_t i = 0; i < n; i++) {                                                          \
                int64_t v = *(const int64_t *)(p + i * st);                                            \
                m = v CMP m ? v : m;                                                                   \
            }                                                                                          \
        }                                                                                              \
        if (m CMP L->i0[j]) L->i0[j] = m;                                                              \
    }                                                                                                  \
    static void NAME##_lanes(red_lanes *L, const char *p, int64_t st, int64_t nl, int64_t r,           \
                             const graft_reduce_cfg *c) {                                              \
        int64_t *a = L->i0;                                                                            \
        _Pragma("omp simd") for (int64_t j = 0; j < nl; j++) {                                                             \
            int64_t v = *(const int64_t *)(p + j * st);                                                \
            a[j] = v CMP a[j] ? v : a[j];                                                              \
        }                                                                                              \
    }                                                                                                  \
    static void NAME##_combine(red_lanes *D, int64_t j, const red_lanes *S, int64_t k,                 \
                               const graft_reduce_cfg *c) {                                            \
        if (S->i0[k] CMP D->i0[j]) D->i0[j] = S->i0[k];                                                \
    }                                                                                                  \
    static void NAME##_finish(const red_lanes *L, int64_t j, char *out, int64_t *idx, int64_t count,   \
                              const graft_reduce_cfg *c) {                                             \
        *(int64_t *)out = L->i0[j];                                                                    \
    }

RED_INT_MINMAX(max_i64, >, INT64_MIN, "omp simd reduction(max:m)")
RED_INT_MINMAX(min_i64, <, INT64_MAX, "omp simd reduction(min:m)")

/* ---- argmax and argmin: value in d0 (floats) or i1 (int64), index in i0 (-1 = none).
 * The first index wins ties; the first NaN wins over everything (PyTorch on CPU). ---- */

#define ARG_TAKE(v, b, bi, CMP) ((bi) < 0 || (v)CMP(b) || ((v) != (v) && (b) == (b)))

#define RED_FLOAT_ARG(NAME, T, CMP, ROWFN)                                                              \
    static void NAME##_init(red_lanes *L, int64_t j, int64_t n) {                                      \
        for (int64_t k = 0; k < n; k++) {                                                              \
            L->d0[j + k] = 0;                                                                          \
            L->i0[j + k] = -1;                                                                         \
        }                                                                                              \
    }                                                                                                  \
    static void NAME##_row(red_lanes *L, int64_t j, const char *p, int64_t st, int64_t n, int64_t r0,  \
                           const graft_reduce_cfg *c) {                                                \
        if (n <= 0) return;                                                                            \
        double b = L->d0[j];                                                                           \
        int64_t bi = L->i0[j];                                                                         \
        if (st == (int64_t)sizeof(T)) {                                                                \
            /* two passes: the extreme value (vectorised), then its first position */                  \
            const T *x = (const T *)p;                                                                 \
            int nan = 0;                                                                               \
            T m = ROWFN(x, n, &nan);                                                                   \
            int64_t k = 0;                                                                             \
            if (nan) while (x[k] == x[k]) k++;                                                         \
            else while (x[k] != m) k++;                                                                \
            double v = x[k];                                                                           \
            if (ARG_TAKE(v, b, bi, CMP)) {                                                             \
                b = v;                                                                                 \
                bi = r0 + k;                                                                           \
            }                                                                                          \
        } else {                                                                                       \
            for (int64_t i = 0; i < n; i++) {                                                          \
                double v = *(const T *)(p + i * st);                                                   \
                if (ARG_TAKE(v, b, bi, CMP)) {                                                         \
                    b = v;                                                                             \
                    bi = r0 + i;                                                                       \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
        L->d0[j] = b;                                                                                  \
        L->i0[j] = bi;                                                                                 \
    }                                                                                                  \
    static void NAME##_lanes(red_lanes *L, const char *p, int64_t st, int64_t nl, int64_t r,           \
                             const graft_reduce_cfg *c) {                                              \
        double *b = L->d0;                                                                             \
        int64_t *bi = L->i0;                                                                           \
        _Pragma("omp simd") for (int64_t j = 0; j < nl; j++) {                                                             \
            double v = *(const T *)(p + j * st);                                                       \
            if (ARG_TAKE(v, b[j], bi[j], CMP)) {                                                       \
                b[j] = v;                                                                              \
                bi[j] = r;                                                                             \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    static void NAME##_combine(red_lanes *D, int64_t j, const red_lanes *S, int64_t k,                 \
                               const graft_reduce_cfg *c) {                                            \
        if (S->i0[k] >= 0 && ARG_TAKE(S->d0[k], D->d0[j], D->i0[j], CMP)) {                            \
            D->d0[j] = S->d0[k];                                                                       \
            D->i0[j] = S->i0[k];                                                                       \
        }                                                                                              \
    }                                                                                                  \
    static void NAME##_finish(const red_lanes *L, int64_t j, char *out, int64_t *idx, int64_t count,   \
                              const graft_reduce_cfg *c) {                                             \
        if (out) *(T *)out = (T)L->d0[j];                                                              \
        if (idx) *idx = L->i0[j];                                                                      \
    }

RED_FLOAT_ARG(argmax_f32, float, >, row_max_f32)
RED_FLOAT_ARG(argmax_f64, double, >, row_max_f64)
RED_FLOAT_ARG(argmin_f32, float, <, row_min_f32)
RED_FLOAT_ARG(argmin_f64, double, <, row_min_f64)

#define INT_TAKE(v, b, bi, CMP) ((bi) < 0 || (v)CMP(b))

#define RED_INT_ARG(NAME, CMP, SIMD)                                                                   \
    static void NAME##_init(red_lanes *L, int64_t j, int64_t n) {                                      \
        for (int64_t k = 0; k < n; k++) {                                                              \
            L->i1[j + k] = 0;                                                                          \
            L->i0[j + k] = -1;                                                                         \
        }                                                                                              \
    }                                                                                                  \
    static void NAME##_row(red_lanes *L, int64_t j, const char *p, int64_t st, int64_t n, int64_t r0,  \
                           const graft_reduce_cfg *c) {                                                \
        if (n <= 0) return;                                                                            \
        int64_t b = L->i1[j], bi = L->i0[j];                                                           \
        if (st == 8) {                                                                                 \
            const int64_t *x = (const int64_t *)p;                                                     \
            int64_t m = x[0];                                                                          \
            _Pragma(SIMD) for (int64_t i = 0; i < n; i++) m = x[i] CMP m ? x[i] : m;                   \
            int64_t k = 0;                                                                             \
            while (x[k] != m) k++;                                                                     \
            if (INT_TAKE(m, b, bi, CMP)) {                                                             \
                b = m;                                                                                 \
                bi = r0 + k;                                                                           \
            }                                                                                          \
        } else {                                                                                       \
            for (int64_t i = 0; i < n; i++) {                                                          \
                int64_t v = *(const int64_t *)(p + i * st);                                            \
                if (INT_TAKE(v, b, bi, CMP)) {                                                         \
                    b = v;                                                                             \
                    bi = r0 + i;                                                                       \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
        L->i1[j] = b;                                                                                  \
        L->i0[j] = bi;                                                                                 \
    }                                                                                                  \
    static void NAME##_lanes(red_lanes *L, const char *p, int64_t st, int64_t nl, int64_t r,           \
                             const graft_reduce_cfg *c) {                                              \
        _Pragma("omp simd") for (int64_t j = 0; j < nl; j++) {                                                             \
            int64_t v = *(const int64_t *)(p + j * st);                                                \
            if (INT_TAKE(v, L->i1[j], L->i0[j], CMP)) {                                                \
                L->i1[j] = v;                                                                          \
                L->i0[j] = r;                                                                          \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    static void NAME##_combine(red_lanes *D, int64_t j, const red_lanes *S, int64_t k,                 \
                               const graft_reduce_cfg *c) {                                            \
        if (S->i0[k] >= 0 && INT_TAKE(S->i1[k], D->i1[j], D->i0[j], CMP)) {                            \
            D->i1[j] = S->i1[k];                                                                       \
            D->i0[j] = S->i0[k];                                                                       \
        }                                                                                              \
    }                                                                                                  \
    static void NAME##_finish(const red_lanes *L, int64_t j, char *out, int64_t *idx, int64_t count,   \
                              const graft_reduce_cfg *c) {                                             \
        if (out) *(int64_t *)out = L->i1[j];                                                           \
        if (idx) *idx = L->i0[j];                                                                      \
    }

RED_INT_ARG(argmax_i64, >, "omp simd reduction(max:m)")
RED_INT_ARG(argmin_i64, <, "omp simd reduction(min:m)")

/* ---- variance: lanes hold (mean d0, M2 d1, count i0). Rows are folded in blocks: the
 * block's mean, then its sum of squared deviations (both vectorised), merged with
 * Chan et al.'s formula; lanes use Welford's update. ---- */

static inline void var_merge(red_lanes *L, int64_t j, double mb, double m2b, int64_t nb) {
    int64_t na = L->i0[j];
    if (nb == 0) return;
    if (na == 0) {
        L->d0[j] = mb;
        L->d1[j] = m2b;
        L->i0[j] = nb;
        return;
    }
    double n = (double)(na + nb), delta = mb - L->d0[j];
    L->d0[j] += delta * (double)nb / n;
    L->d1[j] += m2b + delta * delta * (double)na * (double)nb / n;
    L->i0[j] = na + nb;
}

static void var_init(red_lanes *L, int64_t j, int64_t n) {
    for (int64_t k = 0; k < n; k++) {
        L->d0[j + k] = 0;
        L->d1[j + k] = 0;
        L->i0[j + k] = 0;
    }
}

static void var_combine(red_lanes *D, int64_t j, const red_lanes *S, int64_t k, const graft_reduce_cfg *c) {
    var_merge(D, j, S->d0[k], S->d1[k], S->i0[k]);
}

#define VAR_BLOCK 512

#define RED_VAR(NAME, T, SUMFN, SQFN)                                                                             \
    static void NAME##_row(red_lanes *L, int64_t j, const char *p, int64_t st, int64_t n, int64_t r0,  \
                           const graft_reduce_cfg *c) {                                                \
        for (int64_t b0 = 0; b0 < n; b0 += VAR_BLOCK) {                                                \
            int64_t nb = n - b0 < VAR_BLOCK ? n - b0 : VAR_BLOCK;                                      \
            double s = 0, q = 0;                                                                       \
            if (st == (int64_t)sizeof(T)) {                                                            \
                const T *x = (const T *)p + b0;                                                        \
                double mb = SUMFN(x, nb, 0) / (double)nb;                                              \
                var_merge(L, j, mb, SQFN(x, nb, mb), nb);                                              \
            } else {                                                                                   \
                const char *x = p + b0 * st;                                                           \
                for (int64_t i = 0; i < nb; i++) s += *(const T *)(x + i * st);                        \
                double mb = s / (double)nb;                                                            \
                for (int64_t i = 0; i < nb; i++) {                                                     \
                    double d = *(const T *)(x + i * st) - mb;                                          \
                    q += d * d;                                                                        \
                }                                                                                      \
                var_merge(L, j, mb, q, nb);                                                            \
            }                                                                                          \
        }                                                                                              \
    }                                                                                                  \
    static void NAME##_lanes(red_lanes *L, const char *p, int64_t st, int64_t nl, int64_t r,           \
                             const graft_reduce_cfg *c) {                                              \
        _Pragma("omp simd") for (int64_t j = 0; j < nl; j++) {                                                             \
            double v = *(const T *)(p + j * st);                                                       \
            int64_t cnt = ++L->i0[j];                                                                  \
            double d = v - L->d0[j];                                                                   \
            L->d0[j] += d / (double)cnt;                                                               \
            L->d1[j] += d * (v - L->d0[j]);                                                            \
        }                                                                                              \
    }                                                                                                  \
    static void NAME##_finish(const red_lanes *L, int64_t j, char *out, int64_t *idx, int64_t count,   \
                              const graft_reduce_cfg *c) {                                             \
        double div = (double)L->i0[j] - c->correction;                                                 \
        if (div < 0) div = 0;                                                                          \
        double v = L->d1[j] / div;                                                                     \
        if (c->take_sqrt) v = sqrt(v);                                                                 \
        *(T *)out = (T)v;                                                                              \
    }

RED_VAR(var_f32, float, row_sum_f32, row_sq_f32)
RED_VAR(var_f64, double, row_sum_f64, row_sq_f64)
#define var_f32_init var_init
#define var_f64_init var_init
#define var_f32_combine var_combine
#define var_f64_combine var_combine

/* ---- vector norms: d0 accumulates sum |x|^p, or max / min |x| for p = +-inf ---- */

enum { NORM_P2, NORM_P1, NORM_INF, NORM_NINF, NORM_P0, NORM_PGEN };

static int norm_mode(double p) {
    if (p == 2) return NORM_P2;
    if (p == 1) return NORM_P1;
    if (p == INFINITY) return NORM_INF;
    if (p == -INFINITY) return NORM_NINF;
    if (p == 0) return NORM_P0;
    return NORM_PGEN;
}

static void norm_init(red_lanes *L, int64_t j, int64_t n) {
    for (int64_t k = 0; k < n; k++) L->d0[j + k] = 0;
}

/* init for -inf: the identity of min is +inf (the finish step makes an empty norm 0
 * for every p except -inf, where PyTorch also gives inf). */
static void norm_ninf_fix(red_lanes *L, int64_t j, int64_t n, const graft_reduce_cfg *c) {
    if (norm_mode(c->p) == NORM_NINF)
        for (int64_t k = 0; k < n; k++) L->d0[j + k] = INFINITY;
}

static inline double norm_fold(int mode, double a, double v, double p) {
    double x = fabs(v);
    switch (mode) {
    case NORM_P2: return a + v * v;
    case NORM_P1: return a + x;
    case NORM_INF: return (x > a || x != x) ? x : a;
    case NORM_NINF: return (x < a || x != x) ? x : a;
    case NORM_P0: return a + (v != 0);
    default: return a + pow(x, p);
    }
}

static void norm_combine(red_lanes *D, int64_t j, const red_lanes *S, int64_t k, const graft_reduce_cfg *c) {
    int mode = norm_mode(c->p);
    double s = S->d0[k], d = D->d0[j];
    if (mode == NORM_INF) D->d0[j] = (s > d || s != s) ? s : d;
    else if (mode == NORM_NINF) D->d0[j] = (s < d || s != s) ? s : d;
    else D->d0[j] = d + s;
}

#define RED_NORM(NAME, T, SQFN, ABSFN)                                                                            \
    static void NAME##_row(red_lanes *L, int64_t j, const char *p, int64_t st, int64_t n, int64_t r0,  \
                           const graft_reduce_cfg *c) {                                                \
        int mode = norm_mode(c->p);                                                                    \
        double a = L->d0[j], pp = c->p;                                                                \
        if (st == (int64_t)sizeof(T) && (mode == NORM_P2 || mode == NORM_P1)) {                        \
            const T *x = (const T *)p;                                                                 \
            L->d0[j] = a + (mode == NORM_P2 ? SQFN(x, n, 0) : ABSFN(x, n, 0));                         \
            return;                                                                                    \
        }                                                                                              \
        for (int64_t i = 0; i < n; i++) a = norm_fold(mode, a, *(const T *)(p + i * st), pp);          \
        L->d0[j] = a;                                                                                  \
    }                                                                                                  \
    static void NAME##_lanes(red_lanes *L, const char *p, int64_t st, int64_t nl, int64_t r,           \
                             const graft_reduce_cfg *c) {                                              \
        int mode = norm_mode(c->p);                                                                    \
        double *a = L->d0, pp = c->p;                                                                  \
        if (mode == NORM_P2) {                                                                         \
            _Pragma("omp simd") for (int64_t j = 0; j < nl; j++) {                                                         \
                double v = *(const T *)(p + j * st);                                                   \
                a[j] += v * v;                                                                         \
            }                                                                                          \
            return;                                                                                    \
        }                                                                                              \
        for (int64_t j = 0; j < nl; j++) a[j] = norm_fold(mode, a[j], *(const T *)(p + j * st), pp);   \
    }                                                                                                  \
    static void NAME##_finish(const red_lanes *L, int64_t j, char *out, int64_t *idx, int64_t count,   \
                              const graft_reduce_cfg *c) {                                             \
        int mode = norm_mode(c->p);                                                                    \
        double v = L->d0[j];                                                                           \
        if (mode == NORM_P2) v = sqrt(v);                                                              \
        else if (mode == NORM_PGEN) v = pow(v, 1.0 / c->p);                                            \
        *(T *)out = (T)v;                                                                              \
    }

RED_NORM(norm_f32, float, row_sq_f32, row_abs_f32)
RED_NORM(norm_f64, double, row_sq_f64, row_abs_f64)
#define norm_f32_init norm_init
#define norm_f64_init norm_init
#define norm_f32_combine norm_combine
#define norm_f64_combine norm_combine

/* ---- any and all over bool bytes ---- */

#define RED_BOOL(NAME, OP, IDENT, SIMD)                                                                \
    static void NAME##_init(red_lanes *L, int64_t j, int64_t n) {                                      \
        for (int64_t k = 0; k < n; k++) L->i0[j + k] = IDENT;                                         \
    }                                                                                                  \
    static void NAME##_row(red_lanes *L, int64_t j, const char *p, int64_t st, int64_t n, int64_t r0,  \
                           const graft_reduce_cfg *c) {                                                \
        int s = IDENT;                                                                                 \
        if (st == 1) {                                                                                 \
            const uint8_t *x = (const uint8_t *)p;                                                     \
            _Pragma(SIMD) for (int64_t i = 0; i < n; i++) s = s OP (x[i] != 0);                        \
        } else {                                                                                       \
            for (int64_t i = 0; i < n; i++) s = s OP (*(const uint8_t *)(p + i * st) != 0);            \
        }                                                                                              \
        L->i0[j] = L->i0[j] OP s;                                                                      \
    }                                                                                                  \
    static void NAME##_lanes(red_lanes *L, const char *p, int64_t st, int64_t nl, int64_t r,           \
                             const graft_reduce_cfg *c) {                                              \
        _Pragma("omp simd") for (int64_t j = 0; j < nl; j++) L->i0[j] = L->i0[j] OP (*(const uint8_t *)(p + j * st) != 0); \
    }                                                                                                  \
    static void NAME##_combine(red_lanes *D, int64_t j, const red_lanes *S, int64_t k,                 \
                               const graft_reduce_cfg *c) {                                            \
        D->i0[j] = D->i0[j] OP S->i0[k];                                                               \
    }                                                                                                  \
    static void NAME##_finish(const red_lanes *L, int64_t j, char *out, int64_t *idx, int64_t count,   \
                              const graft_reduce_cfg *c) {                                             \
        *(uint8_t *)out = L->i0[j] != 0;                                                               \
    }

RED_BOOL(any_b, |, 0, "omp simd reduction(|:s)")
RED_BOOL(all_b, &, 1, "omp simd reduction(&:s)")

/* ---- logsumexp: d0 accumulates exp(x - aux), aux the per-output shift (the max) ---- */

static void lse_init(red_lanes *L, int64_t j, int64_t n) {
    for (int64_t k = 0; k < n; k++) L->d0[j + k] = 0;
}
static void lse_combine(red_lanes *D, int64_t j, const red_lanes *S, int64_t k, const graft_reduce_cfg *c) {
    D->d0[j] += S->d0[k];
}

#define RED_LSE(NAME, T)                                                                               \
    static void NAME##_row(red_lanes *L, int64_t j, const char *p, int64_t st, int64_t n, int64_t r0,  \
                           const graft_reduce_cfg *c) {                                                \
        double s = 0, m = L->aux[j];                                                                   \
        for (int64_t i = 0; i < n; i++) s += exp((double)*(const T *)(p + i * st) - m);                \
        L->d0[j] += s;                                                                                 \
    }                                                                                                  \
    static void NAME##_lanes(red_lanes *L, const char *p, int64_t st, int64_t nl, int64_t r,           \
                             const graft_reduce_cfg *c) {                                              \
        for (int64_t j = 0; j < nl; j++) L->d0[j] += exp((double)*(const T *)(p + j * st) - L->aux[j]); \
    }                                                                                                  \
    static void NAME##_finish(const red_lanes *L, int64_t j, char *out, int64_t *idx, int64_t count,   \
                              const graft_reduce_cfg *c) {                                             \
        *(T *)out = (T)(log(L->d0[j]) + L->aux[j]);                                                    \
    }

RED_LSE(lse_f32, float)
RED_LSE(lse_f64, double)
#define lse_f32_init lse_init
#define lse_f64_init lse_init
#define lse_f32_combine lse_combine
#define lse_f64_combine lse_combine

/* ---- the kernel table ---- */

#define OPS(N) {N##_init, N##_row, N##_lanes, N##_combine, N##_finish}

static const red_ops *red_lookup(graft_red_op op, graft_dtype d) {
    static const red_ops sum[3] = {OPS(sum_f32), OPS(sum_f64), OPS(sum_i64)};
    static const red_ops prod[3] = {OPS(prod_f32), OPS(prod_f64), OPS(prod_i64)};
    static const red_ops max[3] = {OPS(max_f32), OPS(max_f64), OPS(max_i64)};
    static const red_ops min[3] = {OPS(min_f32), OPS(min_f64), OPS(min_i64)};
    static const red_ops amx[3] = {OPS(argmax_f32), OPS(argmax_f64), OPS(argmax_i64)};
    static const red_ops amn[3] = {OPS(argmin_f32), OPS(argmin_f64), OPS(argmin_i64)};
    static const red_ops var[2] = {OPS(var_f32), OPS(var_f64)};
    static const red_ops norm[2] = {OPS(norm_f32), OPS(norm_f64)};
    static const red_ops lse[2] = {OPS(lse_f32), OPS(lse_f64)};
    static const red_ops any = OPS(any_b), all = OPS(all_b);
    int k = d == GRAFT_F32 ? 0 : d == GRAFT_F64 ? 1 : d == GRAFT_I64 ? 2 : -1;
    switch (op) {
    case GRAFT_RED_SUM: return k >= 0 ? &sum[k] : NULL;
    case GRAFT_RED_PROD: return k >= 0 ? &prod[k] : NULL;
    case GRAFT_RED_MAX: return k >= 0 ? &max[k] : NULL;
    case GRAFT_RED_MIN: return k >= 0 ? &min[k] : NULL;
    case GRAFT_RED_ARGMAX: return k >= 0 ? &amx[k] : NULL;
    case GRAFT_RED_ARGMIN: return k >= 0 ? &amn[k] : NULL;
    case GRAFT_RED_VAR: return k >= 0 && k < 2 ? &var[k] : NULL;
    case GRAFT_RED_NORM: return k >= 0 && k < 2 ? &norm[k] : NULL;
    case GRAFT_RED_LSE: return k >= 0 && k < 2 ? &lse[k] : NULL;
    case GRAFT_RED_ANY: return d == GRAFT_BOOL ? &any : NULL;
    case GRAFT_RED_ALL: return d == GRAFT_BOOL ? &all : NULL;
    }
    return NULL;
}

/* ---- the plan and its traversals ---- */

typedef struct {
    const red_ops *ops;
    const graft_reduce_cfg *cfg;
    const double *aux;
    const char *in;
    char *out;
    int64_t *idx;
    size_t osz;
    int nk, nr;
    int64_t ks[GRAFT_MAX_DIMS], kis[GRAFT_MAX_DIMS], kos[GRAFT_MAX_DIMS]; /* kept: size, in bytes, out elems */
    int64_t rs[GRAFT_MAX_DIMS], ris[GRAFT_MAX_DIMS];                       /* reduced: size, in bytes */
    int64_t nout, nred;
    int kd;                                                                /* layout B: the lane dim */
} red_plan;

static int red_threads(void) {
#ifdef _OPENMP
    int t = omp_get_max_threads();
    return t > RED_MAX_THREADS ? RED_MAX_THREADS : t;
#else
    return 1;
#endif
}

static void red_init_lanes(const red_plan *P, red_lanes *L, int64_t j, int64_t n, int64_t o, int64_t ostride) {
    for (int64_t k = 0; k < n; k++) L->aux[j + k] = P->aux ? P->aux[o + k * ostride] : 0;
    P->ops->init(L, j, n);
    if (P->cfg->op == GRAFT_RED_NORM) norm_ninf_fix(L, j, n, P->cfg);
}

/* Positions an R odometer at flat index b; returns the byte offset. */
static int64_t red_seek(const red_plan *P, int64_t b, int64_t *ridx) {
    int64_t off = 0;
    for (int d = P->nr - 1; d >= 0; d--) {
        ridx[d] = b % P->rs[d];
        b /= P->rs[d];
        off += ridx[d] * P->ris[d];
    }
    return off;
}

/* Advances the R odometer after its innermost index reached the end; returns the byte
 * delta to apply. */
static int64_t red_carry(const red_plan *P, int64_t *ridx) {
    int64_t delta = 0;
    for (int d = P->nr - 1; d > 0 && ridx[d] == P->rs[d]; d--) {
        delta -= P->rs[d] * P->ris[d];
        ridx[d] = 0;
        ridx[d - 1]++;
        delta += P->ris[d - 1];
    }
    return delta;
}

/* Layout A: folds R elements [b, e) from base into lane j, a row at a time. */
static void red_walk_rows(const red_plan *P, red_lanes *L, int64_t j, const char *base, int64_t b, int64_t e) {
    int64_t ridx[GRAFT_MAX_DIMS];
    int last = P->nr - 1;
    if (b >= e) return;
    const char *p = base + red_seek(P, b, ridx);
    for (int64_t pos = b; pos < e;) {
        int64_t cnt = P->rs[last] - ridx[last];
        if (cnt > e - pos) cnt = e - pos;
        P->ops->row(L, j, p, P->ris[last], cnt, ridx[last], P->cfg);
        pos += cnt;
        if (pos >= e) break;
        p += cnt * P->ris[last];
        ridx[last] += cnt;
        p += red_carry(P, ridx);
    }
}

/* Layout B: folds R elements [b, e) into lanes [0, nl), one lane row per element. */
static void red_walk_lanes(const red_plan *P, red_lanes *L, const char *base, int64_t ls, int64_t nl, int64_t b,
                           int64_t e) {
    int64_t ridx[GRAFT_MAX_DIMS];
    int last = P->nr - 1;
    if (b >= e) return;
    const char *p = base + red_seek(P, b, ridx);
    int64_t rst = P->ris[last];
    for (int64_t pos = b; pos < e;) {
        int64_t cnt = P->rs[last] - ridx[last];
        if (cnt > e - pos) cnt = e - pos;
        for (int64_t i = 0; i < cnt; i++) P->ops->lanes(L, p + i * rst, ls, nl, ridx[last] + i, P->cfg);
        pos += cnt;
        if (pos >= e) break;
        p += cnt * rst;
        ridx[last] += cnt;
        p += red_carry(P, ridx);
    }
}

/* Layout A: input byte offset of output o (kept dims in order, innermost last). */
static int64_t red_kseek(const red_plan *P, int64_t o, int64_t *kidx) {
    int64_t off = 0;
    for (int d = P->nk - 1; d >= 0; d--) {
        kidx[d] = o % P->ks[d];
        o /= P->ks[d];
        off += kidx[d] * P->kis[d];
    }
    return off;
}

/* Layout A over outputs [ob, oe), each on one lane. */
static void red_a_range(const red_plan *P, int64_t ob, int64_t oe) {
    double d0, d1, aux;
    int64_t i0, i1;
    red_lanes L = {&d0, &d1, &aux, &i0, &i1};
    int64_t kidx[GRAFT_MAX_DIMS];
    int64_t off = red_kseek(P, ob, kidx);
    for (int64_t o = ob; o < oe; o++) {
        red_init_lanes(P, &L, 0, 1, o, 1);
        red_walk_rows(P, &L, 0, P->in + off, 0, P->nred);
        P->ops->finish(&L, 0, P->out ? P->out + o * (int64_t)P->osz : NULL, P->idx ? P->idx + o : NULL, P->nred,
                       P->cfg);
        /* next output: odometer over the kept dims */
        for (int d = P->nk - 1; d >= 0; d--) {
            if (++kidx[d] < P->ks[d]) {
                off += P->kis[d];
                break;
            }
            kidx[d] = 0;
            off -= (P->ks[d] - 1) * P->kis[d];
        }
    }
}

/* Layout B: group g = (outer kept index, lane tile). Returns the input byte offset of
 * lane 0, the output element offset of lane 0, and the lane count. */
static void red_b_locate(const red_plan *P, int64_t g, int64_t *in_off, int64_t *out_off, int64_t *nl) {
    int64_t n0 = P->ks[P->kd];
    int64_t tiles = (n0 + RED_TILE - 1) / RED_TILE;
    int64_t outer = g / tiles, j0 = (g % tiles) * RED_TILE;
    int64_t io = j0 * P->kis[P->kd], oo = j0 * P->kos[P->kd];
    for (int d = P->nk - 1; d >= 0; d--) {
        if (d == P->kd) continue;
        int64_t i = outer % P->ks[d];
        outer /= P->ks[d];
        io += i * P->kis[d];
        oo += i * P->kos[d];
    }
    *in_off = io;
    *out_off = oo;
    *nl = n0 - j0 < RED_TILE ? n0 - j0 : RED_TILE;
}

static void red_b_finish(const red_plan *P, red_lanes *L, int64_t oo, int64_t nl) {
    int64_t los = P->kos[P->kd];
    for (int64_t j = 0; j < nl; j++) {
        int64_t o = oo + j * los;
        P->ops->finish(L, j, P->out ? P->out + o * (int64_t)P->osz : NULL, P->idx ? P->idx + o : NULL, P->nred,
                       P->cfg);
    }
}

static void red_b_range(const red_plan *P, red_store *st, int64_t gb, int64_t ge) {
    red_lanes L = red_bind(st);
    for (int64_t g = gb; g < ge; g++) {
        int64_t io, oo, nl;
        red_b_locate(P, g, &io, &oo, &nl);
        red_init_lanes(P, &L, 0, nl, oo, P->kos[P->kd]);
        red_walk_lanes(P, &L, P->in + io, P->kis[P->kd], nl, 0, P->nred);
        red_b_finish(P, &L, oo, nl);
    }
}

/* Splits [0, n) into T nearly equal parts; part t is [*b, *e). */
static void red_split(int64_t n, int T, int t, int64_t *b, int64_t *e) {
    int64_t q = n / T, r = n % T;
    *b = t * q + (t < r ? t : r);
    *e = *b + q + (t < r ? 1 : 0);
}

/* Few outputs, long reductions: every unit is split across the threads, and the
 * partial lanes are combined in thread order. */
static void red_split_reduction(const red_plan *P, red_store *parts, bool layout_b, int64_t nunits, int T) {
    for (int64_t u = 0; u < nunits; u++) {
        int64_t io = 0, oo = u, nl = 1, ostride = 1;
        if (layout_b) {
            red_b_locate(P, u, &io, &oo, &nl);
            ostride = P->kos[P->kd];
        } else {
            int64_t kidx[GRAFT_MAX_DIMS];
            io = red_kseek(P, u, kidx);
        }
        /* every part starts as the identity, in case the pool gives fewer threads */
        for (int t = 0; t < T; t++) {
            red_lanes L = red_bind(&parts[t]);
            red_init_lanes(P, &L, 0, nl, oo, ostride);
        }
#ifdef _OPENMP
        #pragma omp parallel num_threads(T)
#endif
        {
#ifdef _OPENMP
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
            int t = 0, nt = 1;
#endif
            red_lanes L = red_bind(&parts[t]);
            int64_t b, e;
            red_split(P->nred, nt, t, &b, &e);
            if (layout_b) red_walk_lanes(P, &L, P->in + io, P->kis[P->kd], nl, b, e);
            else red_walk_rows(P, &L, 0, P->in + io, b, e);
        }
        red_lanes L0 = red_bind(&parts[0]);
        for (int t = 1; t < T; t++) {
            red_lanes Lt = red_bind(&parts[t]);
            for (int64_t j = 0; j < nl; j++) P->ops->combine(&L0, j, &Lt, j, P->cfg);
        }
        if (layout_b) {
            red_b_finish(P, &L0, oo, nl);
        } else {
            P->ops->finish(&L0, 0, P->out ? P->out + u * (int64_t)P->osz : NULL, P->idx ? P->idx + u : NULL,
                           P->nred, P->cfg);
        }
    }
}

/* Runs layout A or B over all units, in parallel when the work is large. Lane storage
 * (one red_store per thread) is allocated here, so failure is a status, not a crash. */
static graft_status red_run(const red_plan *P, bool layout_b) {
    int64_t nunits = P->nout;
    if (layout_b) {
        int64_t n0 = P->ks[P->kd];
        nunits = P->nout / n0 * ((n0 + RED_TILE - 1) / RED_TILE);
    }
    int T = red_threads();
    bool par = T > 1 && P->nred > 0 && graft_should_parallelize(P->nout * P->nred);
    if (!par) T = 1;
    red_store *stores = NULL;
    if (layout_b || (par && nunits < 2 * T)) {
        stores = malloc(sizeof(red_store) * (size_t)T);
        if (!stores) return graft_error(GRAFT_ENOMEM, "reduce: out of memory for %d accumulator tiles", T);
    }
    if (!par) {
        if (layout_b) red_b_range(P, stores, 0, nunits);
        else red_a_range(P, 0, nunits);
    } else if (nunits >= 2 * T) {
#ifdef _OPENMP
        #pragma omp parallel num_threads(T)
#endif
        {
#ifdef _OPENMP
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
            int t = 0, nt = 1;
#endif
            int64_t b, e;
            red_split(nunits, nt, t, &b, &e);
            if (layout_b) red_b_range(P, stores + t, b, e);
            else red_a_range(P, b, e);
        }
    } else {
        red_split_reduction(P, stores, layout_b, nunits, T);
    }
    free(stores);
    return GRAFT_OK;
}

graft_status graft_cpu_reduce(graft_tensor *out, graft_tensor *idx, graft_tensor *in, uint32_t rmask,
                              const graft_reduce_cfg *cfg, const double *aux) {
    red_plan P;
    memset(&P, 0, sizeof P);
    P.ops = red_lookup(cfg->op, in->dtype);
    if (!P.ops)
        return graft_error(GRAFT_EINTERNAL, "reduce: no kernel for op %d on %s", (int)cfg->op,
                           graft_dtype_name(in->dtype));
    P.cfg = cfg;
    P.aux = aux;
    P.in = graft_tensor_data(in);
    P.out = out ? graft_tensor_data(out) : NULL;
    P.idx = idx ? graft_tensor_data(idx) : NULL;
    P.osz = graft_dtype_size(in->dtype);
    bool ordered = cfg->op == GRAFT_RED_ARGMAX || cfg->op == GRAFT_RED_ARGMIN;
    int64_t esz = (int64_t)graft_dtype_size(in->dtype);
    P.nout = 1;
    P.nred = 1;
    for (int d = 0; d < in->ndim; d++) {
        bool red = (rmask >> d) & 1u;
        if (red) P.nred *= in->shape[d];
        else P.nout *= in->shape[d];
        if (in->shape[d] == 1) continue;
        if (red) {
            P.rs[P.nr] = in->shape[d];
            P.ris[P.nr++] = in->stride[d] * esz;
        } else {
            P.ks[P.nk] = in->shape[d];
            P.kis[P.nk++] = in->stride[d] * esz;
        }
    }
    if (P.nout == 0) return GRAFT_OK;
    /* Reduced dims: innermost (smallest stride) last, unless indices must follow order. */
    if (!ordered) {
        for (int a = 1; a < P.nr; a++)
            for (int b = a; b > 0 && P.ris[b - 1] < P.ris[b]; b--) {
                int64_t s = P.rs[b]; P.rs[b] = P.rs[b - 1]; P.rs[b - 1] = s;
                s = P.ris[b]; P.ris[b] = P.ris[b - 1]; P.ris[b - 1] = s;
            }
    }
    /* Coalesce each group (dim d+1 folds into d when d steps over all of d+1). */
    int m = 0;
    for (int d = 1; d < P.nr; d++) {
        if (P.ris[m] == P.ris[d] * P.rs[d]) {
            P.rs[m] *= P.rs[d];
            P.ris[m] = P.ris[d];
        } else {
            m++;
            P.rs[m] = P.rs[d];
            P.ris[m] = P.ris[d];
        }
    }
    if (P.nr > 0) P.nr = m + 1;
    m = 0;
    for (int d = 1; d < P.nk; d++) {
        if (P.kis[m] == P.kis[d] * P.ks[d]) {
            P.ks[m] *= P.ks[d];
            P.kis[m] = P.kis[d];
        } else {
            m++;
            P.ks[m] = P.ks[d];
            P.kis[m] = P.kis[d];
        }
    }
    if (P.nk > 0) P.nk = m + 1;
    if (P.nr == 0) { /* nothing left to reduce: one element per output */
        P.rs[0] = 1;
        P.ris[0] = 0;
        P.nr = 1;
    }
    int64_t os = 1;
    for (int d = P.nk - 1; d >= 0; d--) {
        P.kos[d] = os;
        os *= P.ks[d];
    }
    /* Layout: rows (A) when the innermost input dim is reduced, lanes (B) when it is
     * kept; short rows with many outputs go to lanes and vice versa. */
    bool layout_b = false;
    if (P.nk > 0) {
        int kd = P.nk - 1;
        for (int d = 0; d < P.nk; d++)
            if (P.kis[d] < P.kis[kd]) kd = d;
        P.kd = kd;
        int64_t rin = P.rs[P.nr - 1], kin = P.ks[kd];
        if (P.ris[P.nr - 1] < P.kis[kd]) layout_b = rin < 16 && kin >= 32;
        else layout_b = !(kin < 8 && rin >= 32);
    }
    return red_run(&P, layout_b);
}

/* ---- cumulative sum and product ---- */

#define SCAN_KERNEL(NAME, T, ACC, CAST)                                                                \
    static void NAME(T *y, const T *x, int64_t outer, int64_t n, int64_t inner, bool prod) {           \
        int64_t tiles = (inner + RED_TILE - 1) / RED_TILE, units = outer * tiles;                      \
        bool par = graft_should_parallelize(outer * n * inner) && units > 1;                           \
        (void)par;                                                                                     \
        _Pragma("omp parallel for schedule(static) if(par)")                                           \
        for (int64_t u = 0; u < units; u++) {                                                          \
            int64_t o = u / tiles, j0 = (u % tiles) * RED_TILE;                                        \
            int64_t nl = inner - j0 < RED_TILE ? inner - j0 : RED_TILE;                                \
            const T *xp = x + o * n * inner + j0;                                                      \
            T *yp = y + o * n * inner + j0;                                                            \
            if (inner == 1) {                                                                          \
                ACC a = prod ? 1 : 0;                                                                  \
                if (prod) for (int64_t r = 0; r < n; r++) { a = a * (ACC)xp[r]; yp[r] = CAST(a); }     \
                else for (int64_t r = 0; r < n; r++) { a = a + (ACC)xp[r]; yp[r] = CAST(a); }          \
                continue;                                                                              \
            }                                                                                          \
            ACC acc[RED_TILE];                                                                         \
            for (int64_t j = 0; j < nl; j++) acc[j] = prod ? 1 : 0;                                    \
            for (int64_t r = 0; r < n; r++) {                                                          \
                const T *xr = xp + r * inner;                                                          \
                T *yr = yp + r * inner;                                                                \
                if (prod) { _Pragma("omp simd") for (int64_t j = 0; j < nl; j++) { acc[j] = acc[j] * (ACC)xr[j]; yr[j] = CAST(acc[j]); } } \
                else { _Pragma("omp simd") for (int64_t j = 0; j < nl; j++) { acc[j] = acc[j] + (ACC)xr[j]; yr[j] = CAST(acc[j]); } }     \
            }                                                                                          \
        }                                                                                              \
    }

#define SCAN_F32(a) ((float)(a))
#define SCAN_F64(a) (a)
#define SCAN_I64(a) ((int64_t)(a))
SCAN_KERNEL(scan_f32, float, double, SCAN_F32)
SCAN_KERNEL(scan_f64, double, double, SCAN_F64)
SCAN_KERNEL(scan_i64, int64_t, uint64_t, SCAN_I64)

graft_status graft_cpu_scan(graft_tensor *out, graft_tensor *in, int dim, bool prod) {
    if (!graft_tensor_is_contiguous(in) || !graft_tensor_is_contiguous(out))
        return graft_error(GRAFT_EINTERNAL, "scan: expected contiguous tensors");
    int64_t outer = 1, inner = 1, n = in->ndim ? in->shape[dim] : 1;
    for (int d = 0; d < dim; d++) outer *= in->shape[d];
    for (int d = dim + 1; d < in->ndim; d++) inner *= in->shape[d];
    if (outer * n * inner == 0) return GRAFT_OK;
    switch (in->dtype) {
    case GRAFT_F32: scan_f32(graft_tensor_data(out), graft_tensor_data(in), outer, n, inner, prod); break;
    case GRAFT_F64: scan_f64(graft_tensor_data(out), graft_tensor_data(in), outer, n, inner, prod); break;
    case GRAFT_I64: scan_i64(graft_tensor_data(out), graft_tensor_data(in), outer, n, inner, prod); break;
    default: return graft_error(GRAFT_EINTERNAL, "scan: no kernel for %s", graft_dtype_name(in->dtype));
    }
    return GRAFT_OK;
}
