/* graft CPU kernels: binary elementwise loops (arithmetic, rounding divisions, pow,
 * maximum/minimum, remainder/fmod, comparisons, logical ops) and where.
 * Formulas follow PyTorch 1.13's CPU kernels (aten/src/ATen/native/cpu/BinaryOpsKernel.cpp)
 * so that float results agree bit for bit where PyTorch's are exactly rounded. */
#include <tgmath.h>

#include "cpu/elementwise_loops.h"

/* ---- integer helpers (int64 covers every narrower type; the store truncates) ---- */

/* Division by zero sets *zf and gives 0 (the front end raises); INT64_MIN / -1 wraps
 * instead of trapping. */
static inline int64_t ew_divtrunc_i64(int64_t a, int64_t b, int *zf) {
    if (b == 0) { *zf = 1; return 0; }
    if (b == -1) return (int64_t)(0 - (uint64_t)a);
    return a / b;
}
/* Python's a // b: the quotient rounded toward minus infinity. */
static inline int64_t ew_floordiv_i64(int64_t a, int64_t b, int *zf) {
    if (b == 0) { *zf = 1; return 0; }
    if (b == -1) return (int64_t)(0 - (uint64_t)a);
    int64_t q = a / b, r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? q - 1 : q;
}
/* Python's a % b: the sign of the divisor. */
static inline int64_t ew_rem_i64(int64_t a, int64_t b, int *zf) {
    if (b == 0) { *zf = 1; return 0; }
    if (b == -1) return 0;
    int64_t r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
/* C's a % b: the sign of the dividend. */
static inline int64_t ew_fmod_i64(int64_t a, int64_t b, int *zf) {
    if (b == 0) { *zf = 1; return 0; }
    if (b == -1) return 0;
    return a % b;
}
/* Integer power by squaring, wrapping; negative exponents give 0 except for bases 1
 * and -1 (PyTorch's powi). */
static inline int64_t ew_pow_i64(int64_t a, int64_t b) {
    if (b < 0) {
        if (a == 1) return 1;
        if (a == -1) return (b & 1) ? -1 : 1;
        return 0;
    }
    uint64_t base = (uint64_t)a, r = 1;
    while (b) {
        if (b & 1) r *= base;
        base *= base;
        b >>= 1;
    }
    return (int64_t)r;
}

/* ---- float helpers (float and double) ---- */
#define EW_FLOAT_HELPERS(T, SUF)                                                            \
    /* PyTorch's div_floor_floating: floor((a - fmod(a, b)) / b), corrected to be exact. */ \
    static inline T ew_floordiv_##SUF(T a, T b) {                                             \
        if (b == 0) return a / b;                                                             \
        T mod = fmod(a, b);                                                                   \
        T div = (a - mod) / b;                                                                \
        if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1;                                     \
        if (div == 0) return copysign((T)0, a / b);                                           \
        T fl = floor(div);                                                                    \
        if (div - fl > (T)0.5) fl += 1;                                                       \
        return fl;                                                                            \
    }                                                                                         \
    static inline T ew_rem_##SUF(T a, T b) {                                                  \
        T mod = fmod(a, b);                                                                   \
        if (mod != 0 && ((b < 0) != (mod < 0))) mod += b;                                     \
        return mod;                                                                           \
    }
EW_FLOAT_HELPERS(float, f32)
EW_FLOAT_HELPERS(double, f64)
#define EW_FLOORDIV_F(a, b) _Generic((a), float: ew_floordiv_f32, default: ew_floordiv_f64)(a, b)
#define EW_REM_F(a, b) _Generic((a), float: ew_rem_f32, default: ew_rem_f64)(a, b)

/* ---- expressions: EXPR(a, b, CT, UT) per kind (F float, I integer, B bool, X any) ---- */
#define ADD_F(a, b, CT, UT) ((a) + (CT)alpha_f * (b))
#define ADD_I(a, b, CT, UT) ((CT)((UT)(a) + (UT)alpha_i * (UT)(b)))
#define ADD_B(a, b, CT, UT) ((a) | (alpha_i & (b)))
#define MUL_F(a, b, CT, UT) ((a) * (b))
#define MUL_I(a, b, CT, UT) ((CT)((UT)(a) * (UT)(b)))
#define MUL_B(a, b, CT, UT) ((a) & (b))
#define DIV_F(a, b, CT, UT) ((a) / (b))
#define DIVT_F(a, b, CT, UT) trunc((a) / (b))
#define DIVT_I(a, b, CT, UT) ((CT)ew_divtrunc_i64((a), (b), &zf))
#define FDIV_F(a, b, CT, UT) EW_FLOORDIV_F(a, b)
#define FDIV_I(a, b, CT, UT) ((CT)ew_floordiv_i64((a), (b), &zf))
#define POW_F(a, b, CT, UT) pow((a), (b))
#define POW_I(a, b, CT, UT) ((CT)ew_pow_i64((a), (b)))
/* maximum/minimum propagate NaN from either side */
#define MAX_F(a, b, CT, UT) (((a) > (b) || (a) != (a)) ? (a) : (b))
#define MIN_F(a, b, CT, UT) (((a) < (b) || (a) != (a)) ? (a) : (b))
#define MAX_I(a, b, CT, UT) ((a) > (b) ? (a) : (b))
#define MIN_I(a, b, CT, UT) ((a) < (b) ? (a) : (b))
#define REM_F(a, b, CT, UT) EW_REM_F(a, b)
#define REM_I(a, b, CT, UT) ((CT)ew_rem_i64((a), (b), &zf))
#define FMOD_F(a, b, CT, UT) fmod((a), (b))
#define FMOD_I(a, b, CT, UT) ((CT)ew_fmod_i64((a), (b), &zf))
#define EQ_X(a, b, CT, UT) ((a) == (b))
#define NE_X(a, b, CT, UT) ((a) != (b))
#define LT_X(a, b, CT, UT) ((a) < (b))
#define LE_X(a, b, CT, UT) ((a) <= (b))
#define GT_X(a, b, CT, UT) ((a) > (b))
#define GE_X(a, b, CT, UT) ((a) >= (b))
#define LAND_X(a, b, CT, UT) (((a) != 0) & ((b) != 0))
#define LOR_X(a, b, CT, UT) (((a) != 0) | ((b) != 0))
#define LXOR_X(a, b, CT, UT) (((a) != 0) ^ ((b) != 0))

/* pow with a scalar exponent: PyTorch's special cases for 2, 3, 0.5, -0.5, -1, -2. */
#define EW_POW_CASE(CT, LD, STO, VAL, FORMULA)                                    \
    if (b == (CT)(VAL)) {                                            \
        _Pragma("omp simd")                                          \
        for (int64_t k = 0; k < n; k++) {                            \
            CT a = LD(x[k]);                                         \
            o[k] = STO(FORMULA);                                     \
        }                                                            \
        return;                                                      \
    }
#define EW_POW_HOOK(ST, CT, OT, LD, STO)                             \
    EW_POW_CASE(CT, LD, STO, 2, a * a)                                            \
    EW_POW_CASE(CT, LD, STO, 3, a * a * a)                                        \
    EW_POW_CASE(CT, LD, STO, 0.5, sqrt(a))                                        \
    EW_POW_CASE(CT, LD, STO, -0.5, (CT)1 / sqrt(a))                               \
    EW_POW_CASE(CT, LD, STO, -1, (CT)1 / a)                                       \
    EW_POW_CASE(CT, LD, STO, -2, (CT)1 / (a * a))

/* ---- loop definitions ---- */
#define EW_DEF(DN, ST, CT, UT, LD, STO, OP, EXPR, HOOK) \
    EW_BIN_LOOP(ew_##OP##_##DN, ST, CT, UT, ST, LD, STO, EXPR, HOOK)
#define EW_DEF_PRED(DN, ST, CT, UT, LD, STO, OP, EXPR, HOOK) \
    EW_BIN_LOOP(ew_##OP##_##DN, ST, CT, UT, uint8_t, LD, EW_ST_BOOL, EXPR, HOOK)

#define EW_ALL_ROWS(X, OP, EF, EI, EB, HOOK) \
    EW_FLOAT_ROWS(X, OP, EF, HOOK) EW_INT_ROWS(X, OP, EI, EW_NO_HOOK) EW_BOOL_ROW(X, OP, EB, EW_NO_HOOK)
#define EW_NUM_ROWS(X, OP, EF, EI, HOOK) EW_FLOAT_ROWS(X, OP, EF, HOOK) EW_INT_ROWS(X, OP, EI, EW_NO_HOOK)

EW_ALL_ROWS(EW_DEF, add, ADD_F, ADD_I, ADD_B, EW_NO_HOOK)
EW_ALL_ROWS(EW_DEF, mul, MUL_F, MUL_I, MUL_B, EW_NO_HOOK)
EW_FLOAT_ROWS(EW_DEF, div, DIV_F, EW_NO_HOOK)
EW_NUM_ROWS(EW_DEF, divt, DIVT_F, DIVT_I, EW_NO_HOOK)
EW_NUM_ROWS(EW_DEF, fdiv, FDIV_F, FDIV_I, EW_NO_HOOK)
EW_NUM_ROWS(EW_DEF, pow, POW_F, POW_I, EW_POW_HOOK)
EW_ALL_ROWS(EW_DEF, max, MAX_F, MAX_I, MAX_I, EW_NO_HOOK)
EW_ALL_ROWS(EW_DEF, min, MIN_F, MIN_I, MIN_I, EW_NO_HOOK)
EW_NUM_ROWS(EW_DEF, rem, REM_F, REM_I, EW_NO_HOOK)
EW_NUM_ROWS(EW_DEF, fmod, FMOD_F, FMOD_I, EW_NO_HOOK)
EW_ALL_ROWS(EW_DEF_PRED, eq, EQ_X, EQ_X, EQ_X, EW_NO_HOOK)
EW_ALL_ROWS(EW_DEF_PRED, ne, NE_X, NE_X, NE_X, EW_NO_HOOK)
EW_ALL_ROWS(EW_DEF_PRED, lt, LT_X, LT_X, LT_X, EW_NO_HOOK)
EW_ALL_ROWS(EW_DEF_PRED, le, LE_X, LE_X, LE_X, EW_NO_HOOK)
EW_ALL_ROWS(EW_DEF_PRED, gt, GT_X, GT_X, GT_X, EW_NO_HOOK)
EW_ALL_ROWS(EW_DEF_PRED, ge, GE_X, GE_X, GE_X, EW_NO_HOOK)
EW_ALL_ROWS(EW_DEF_PRED, land, LAND_X, LAND_X, LAND_X, EW_NO_HOOK)
EW_ALL_ROWS(EW_DEF_PRED, lor, LOR_X, LOR_X, LOR_X, EW_NO_HOOK)
EW_ALL_ROWS(EW_DEF_PRED, lxor, LXOR_X, LXOR_X, LXOR_X, EW_NO_HOOK)

/* ---- the table, by op and compute dtype ---- */
#define EW_ENTRY(DN, ST, CT, UT, LD, STO, OP) [GRAFT_##DN] = ew_##OP##_##DN,
#define EW_ALL(OP) {EW_FLOAT_ROWS(EW_ENTRY, OP) EW_INT_ROWS(EW_ENTRY, OP) EW_BOOL_ROW(EW_ENTRY, OP)}
#define EW_NUM(OP) {EW_FLOAT_ROWS(EW_ENTRY, OP) EW_INT_ROWS(EW_ENTRY, OP)}

const graft_loop_fn graft_cpu_binary_loops[GRAFT_EW_NBINARY][GRAFT_NDTYPES] = {
    [GRAFT_EW_ADD] = EW_ALL(add),
    [GRAFT_EW_SUB] = EW_ALL(add),
    [GRAFT_EW_MUL] = EW_ALL(mul),
    [GRAFT_EW_DIV] = {EW_FLOAT_ROWS(EW_ENTRY, div)},
    [GRAFT_EW_DIV_TRUNC] = EW_NUM(divt),
    [GRAFT_EW_FLOOR_DIVIDE] = EW_NUM(fdiv),
    [GRAFT_EW_POW] = EW_NUM(pow),
    [GRAFT_EW_MAXIMUM] = EW_ALL(max),
    [GRAFT_EW_MINIMUM] = EW_ALL(min),
    [GRAFT_EW_REMAINDER] = EW_NUM(rem),
    [GRAFT_EW_FMOD] = EW_NUM(fmod),
    [GRAFT_EW_EQ] = EW_ALL(eq),
    [GRAFT_EW_NE] = EW_ALL(ne),
    [GRAFT_EW_LT] = EW_ALL(lt),
    [GRAFT_EW_LE] = EW_ALL(le),
    [GRAFT_EW_GT] = EW_ALL(gt),
    [GRAFT_EW_GE] = EW_ALL(ge),
    [GRAFT_EW_LOGICAL_AND] = EW_ALL(land),
    [GRAFT_EW_LOGICAL_OR] = EW_ALL(lor),
    [GRAFT_EW_LOGICAL_XOR] = EW_ALL(lxor),
};

/* ---- where: out = cond ? a : b, by element size ---- */
#define EW_WHERE_CASE(T)                                                                     \
    {                                                                                        \
        if (s[0] == (int64_t)sizeof(T) && s[1] == 1 && s[2] == (int64_t)sizeof(T) &&         \
            s[3] == (int64_t)sizeof(T)) {                                                    \
            T *o = (T *)d[0];                                                                \
            const uint8_t *c = (const uint8_t *)d[1];                                        \
            const T *x = (const T *)d[2], *y = (const T *)d[3];                              \
            _Pragma("omp simd")                                                              \
            for (int64_t k = 0; k < n; k++) o[k] = c[k] ? x[k] : y[k];                       \
        } else if (s[0] == (int64_t)sizeof(T) && s[1] == 1 && s[2] == (int64_t)sizeof(T) && \
                   s[3] == 0) { /* where(c, x, scalar): relu's backward */                    \
            T *o = (T *)d[0];                                                                \
            const uint8_t *c = (const uint8_t *)d[1];                                        \
            const T *x = (const T *)d[2], y = *(const T *)d[3];                              \
            _Pragma("omp simd")                                                              \
            for (int64_t k = 0; k < n; k++) o[k] = c[k] ? x[k] : y;                          \
        } else if (s[0] == (int64_t)sizeof(T) && s[1] == 1 && s[2] == 0 &&                   \
                   s[3] == (int64_t)sizeof(T)) { /* where(c, scalar, y) */                    \
            T *o = (T *)d[0];                                                                \
            const uint8_t *c = (const uint8_t *)d[1];                                        \
            const T x = *(const T *)d[2], *y = (const T *)d[3];                              \
            _Pragma("omp simd")                                                              \
            for (int64_t k = 0; k < n; k++) o[k] = c[k] ? x : y[k];                          \
        } else {                                                                             \
            for (int64_t k = 0; k < n; k++)                                                  \
                *(T *)(d[0] + k * s[0]) = d[1][k * s[1]] ? *(const T *)(d[2] + k * s[2])     \
                                                         : *(const T *)(d[3] + k * s[3]);    \
        }                                                                                    \
        break;                                                                               \
    }

void graft_cpu_where_loop(char **d, const int64_t *s, int64_t n, void *vctx) {
    const graft_ew_ctx *ctx = vctx;
    switch (ctx->esz) {
    case 1: EW_WHERE_CASE(uint8_t)
    case 2: EW_WHERE_CASE(uint16_t)
    case 4: EW_WHERE_CASE(uint32_t)
    default: EW_WHERE_CASE(uint64_t)
    }
}
