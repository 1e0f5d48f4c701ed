/* graft CPU kernels: unary elementwise loops (sign and rounding, exp/log family,
 * trigonometry, sigmoid, relu, NaN/inf tests, logical not) and clamp.
 * float16/bfloat16 are computed in float32 and rounded back, as PyTorch does. */
#include <tgmath.h>

#include "cpu/elementwise_loops.h"

float graft_cpu_expf(float x) { return ew_expf(x); }

/* Sign-dependent integer helpers take int64 so uint8 needs no special case. */
static inline int64_t ew_abs_i64(int64_t a) { return a < 0 ? (int64_t)(0 - (uint64_t)a) : a; }
static inline int64_t ew_sign_i64(int64_t a) { return (a > 0) - (a < 0); }
static inline int64_t ew_relu_i64(int64_t a) { return a < 0 ? 0 : a; }

/* ---- expressions: EXPR(a, CT, UT) per kind ---- */
#define NEG_F(a, CT, UT) (-(a))
#define NEG_I(a, CT, UT) ((CT)(0 - (UT)(a)))
#define ABS_F(a, CT, UT) fabs(a)
#define ABS_I(a, CT, UT) ((CT)ew_abs_i64(a))
#define SIGN_F(a, CT, UT) ((CT)(((a) > 0) - ((a) < 0)))
#define SIGN_I(a, CT, UT) ((CT)ew_sign_i64(a))
#define SIGN_B(a, CT, UT) (a)
#define EXP_F(a, CT, UT) EW_EXP(a)
#define LOG_F(a, CT, UT) log(a)
#define LOG1P_F(a, CT, UT) log1p(a)
#define SQRT_F(a, CT, UT) sqrt(a)
#define RSQRT_F(a, CT, UT) ((CT)1 / sqrt(a))
#define SIN_F(a, CT, UT) sin(a)
#define COS_F(a, CT, UT) cos(a)
#define TANH_F(a, CT, UT) EW_TANH(a)
/* sigmoid(x) = 1 / (1 + e^-x) */
#define SIGMOID_F(a, CT, UT) ((CT)1 / ((CT)1 + EW_EXP(-(a))))
#define RECIP_F(a, CT, UT) ((CT)1 / (a))
#define SQUARE_F(a, CT, UT) ((a) * (a))
#define SQUARE_I(a, CT, UT) ((CT)((UT)(a) * (UT)(a)))
#define FLOOR_F(a, CT, UT) floor(a)
#define CEIL_F(a, CT, UT) ceil(a)
#define ROUND_F(a, CT, UT) nearbyint(a) /* half to even */
#define TRUNC_F(a, CT, UT) trunc(a)
#define IDENT_X(a, CT, UT) (a)
#define EXPM1_F(a, CT, UT) expm1(a)
#define LOG2_F(a, CT, UT) log2(a)
#define LOG10_F(a, CT, UT) log10(a)
/* erf(x) = 2/sqrt(pi) * integral_0^x e^(-t^2) dt; erfc(x) = 1 - erf(x) without the cancellation */
#define ERF_F(a, CT, UT) erf(a)
#define ERFC_F(a, CT, UT) erfc(a)
/* relu keeps NaN and -0.0 as PyTorch's clamp_min(x, 0) */
#define RELU_F(a, CT, UT) ((a) < 0 ? (CT)0 : (a))
#define RELU_I(a, CT, UT) ((CT)ew_relu_i64(a))
#define ISNAN_F(a, CT, UT) ((a) != (a))
#define ISINF_F(a, CT, UT) (fabs(a) == (CT)INFINITY)
#define ISFINITE_F(a, CT, UT) ((a) - (a) == 0)
#define FALSE_X(a, CT, UT) ((void)(a), 0)
#define TRUE_X(a, CT, UT) ((void)(a), 1)
#define LNOT_X(a, CT, UT) ((a) == 0)

#define EW_UDEF(DN, ST, CT, UT, LD, STO, OP, EXPR) EW_UN_LOOP(ew_##OP##_##DN, ST, CT, UT, ST, LD, STO, EXPR)
#define EW_UDEF_PRED(DN, ST, CT, UT, LD, STO, OP, EXPR) \
    EW_UN_LOOP(ew_##OP##_##DN, ST, CT, UT, uint8_t, LD, EW_ST_BOOL, EXPR)

/* float-only ops: the front end casts integer and bool inputs to float32 */
#define EW_FLOAT_OP(OP, EF) EW_FLOAT_ROWS(EW_UDEF, OP, EF)
/* numeric ops: floats and integers, not bool */
#define EW_NUM_OP(OP, EF, EI) EW_FLOAT_ROWS(EW_UDEF, OP, EF) EW_INT_ROWS(EW_UDEF, OP, EI)

EW_NUM_OP(neg, NEG_F, NEG_I)
EW_NUM_OP(abs, ABS_F, ABS_I)
EW_NUM_OP(sign, SIGN_F, SIGN_I)
EW_BOOL_ROW(EW_UDEF, sign, SIGN_B)
EW_FLOAT_OP(exp, EXP_F)
EW_FLOAT_OP(log, LOG_F)
EW_FLOAT_OP(log1p, LOG1P_F)
EW_FLOAT_OP(sqrt, SQRT_F)
EW_FLOAT_OP(rsqrt, RSQRT_F)
EW_FLOAT_OP(sin, SIN_F)
EW_FLOAT_OP(cos, COS_F)
EW_FLOAT_OP(tanh, TANH_F)
EW_FLOAT_OP(sigmoid, SIGMOID_F)
EW_FLOAT_OP(recip, RECIP_F)
EW_NUM_OP(square, SQUARE_F, SQUARE_I)
EW_NUM_OP(floor, FLOOR_F, IDENT_X)
EW_NUM_OP(ceil, CEIL_F, IDENT_X)
EW_NUM_OP(round, ROUND_F, IDENT_X)
EW_NUM_OP(trunc, TRUNC_F, IDENT_X)
EW_FLOAT_OP(expm1, EXPM1_F)
EW_FLOAT_OP(log2, LOG2_F)
EW_FLOAT_OP(log10, LOG10_F)
EW_FLOAT_OP(erf, ERF_F)
EW_FLOAT_OP(erfc, ERFC_F)
EW_NUM_OP(relu, RELU_F, RELU_I)
EW_FLOAT_ROWS(EW_UDEF_PRED, isnan, ISNAN_F)
EW_INT_ROWS(EW_UDEF_PRED, isnan, FALSE_X)
EW_BOOL_ROW(EW_UDEF_PRED, isnan, FALSE_X)
EW_FLOAT_ROWS(EW_UDEF_PRED, isinf, ISINF_F)
EW_INT_ROWS(EW_UDEF_PRED, isinf, FALSE_X)
EW_BOOL_ROW(EW_UDEF_PRED, isinf, FALSE_X)
EW_FLOAT_ROWS(EW_UDEF_PRED, isfinite, ISFINITE_F)
EW_INT_ROWS(EW_UDEF_PRED, isfinite, TRUE_X)
EW_BOOL_ROW(EW_UDEF_PRED, isfinite, TRUE_X)
EW_FLOAT_ROWS(EW_UDEF_PRED, lnot, LNOT_X)
EW_INT_ROWS(EW_UDEF_PRED, lnot, LNOT_X)
EW_BOOL_ROW(EW_UDEF_PRED, lnot, LNOT_X)

#define EW_ENTRY(DN, ST, CT, UT, LD, STO, OP) [GRAFT_##DN] = ew_##OP##_##DN,
#define EW_F(OP) {EW_FLOAT_ROWS(EW_ENTRY, OP)}
#define EW_N(OP) {EW_FLOAT_ROWS(EW_ENTRY, OP) EW_INT_ROWS(EW_ENTRY, OP)}
#define EW_A(OP) {EW_FLOAT_ROWS(EW_ENTRY, OP) EW_INT_ROWS(EW_ENTRY, OP) EW_BOOL_ROW(EW_ENTRY, OP)}

const graft_loop_fn graft_cpu_unary_loops[GRAFT_EW_NUNARY][GRAFT_NDTYPES] = {
    [GRAFT_EW_NEG] = EW_N(neg),        [GRAFT_EW_ABS] = EW_N(abs),
    [GRAFT_EW_SIGN] = EW_A(sign),      [GRAFT_EW_EXP] = EW_F(exp),
    [GRAFT_EW_LOG] = EW_F(log),        [GRAFT_EW_LOG1P] = EW_F(log1p),
    [GRAFT_EW_SQRT] = EW_F(sqrt),      [GRAFT_EW_RSQRT] = EW_F(rsqrt),
    [GRAFT_EW_SIN] = EW_F(sin),        [GRAFT_EW_COS] = EW_F(cos),
    [GRAFT_EW_TANH] = EW_F(tanh),      [GRAFT_EW_SIGMOID] = EW_F(sigmoid),
    [GRAFT_EW_RECIPROCAL] = EW_F(recip), [GRAFT_EW_SQUARE] = EW_N(square),
    [GRAFT_EW_FLOOR] = EW_N(floor),    [GRAFT_EW_CEIL] = EW_N(ceil),
    [GRAFT_EW_ROUND] = EW_N(round),    [GRAFT_EW_TRUNC] = EW_N(trunc),
    [GRAFT_EW_EXPM1] = EW_F(expm1),    [GRAFT_EW_LOG2] = EW_F(log2),
    [GRAFT_EW_LOG10] = EW_F(log10),    [GRAFT_EW_RELU] = EW_N(relu),
    [GRAFT_EW_ISNAN] = EW_A(isnan),    [GRAFT_EW_ISINF] = EW_A(isinf),
    [GRAFT_EW_ISFINITE] = EW_A(isfinite), [GRAFT_EW_LOGICAL_NOT] = EW_A(lnot),
    [GRAFT_EW_ERF] = EW_F(erf),        [GRAFT_EW_ERFC] = EW_F(erfc),
};

/* ---- clamp: min(max(a, lo), hi); a NaN stays NaN (both comparisons are false) ---- */
#define EW_CLAMP_BODY(ST, CT, LD, STO, F)                                              \
    if (s[0] == (int64_t)sizeof(ST) && s[1] == (int64_t)sizeof(ST)) {                  \
        ST *o = (ST *)d[0];                                                            \
        const ST *x = (const ST *)d[1];                                                \
        _Pragma("omp simd")                                                            \
        for (int64_t k = 0; k < n; k++) {                                              \
            CT a = LD(x[k]);                                                           \
            o[k] = STO(F);                                                             \
        }                                                                              \
    } else {                                                                           \
        for (int64_t k = 0; k < n; k++) {                                              \
            CT a = LD(*(const ST *)(d[1] + k * s[1]));                                 \
            *(ST *)(d[0] + k * s[0]) = STO(F);                                         \
        }                                                                              \
    }

#define EW_CLAMP_LOOP(DN, ST, CT, UT, LD, STO, ...)                                     \
    static void ew_clamp_##DN(char **d, const int64_t *s, int64_t n, void *vctx) {      \
        const graft_ew_ctx *ctx = vctx;                                                 \
        const CT lo = ctx->lo ? LD(*(const ST *)ctx->lo) : (CT)0;                       \
        const CT hi = ctx->hi ? LD(*(const ST *)ctx->hi) : (CT)0;                       \
        if (ctx->lo && ctx->hi) {                                                       \
            EW_CLAMP_BODY(ST, CT, LD, STO, (hi < (a < lo ? lo : a) ? hi : (a < lo ? lo : a))) \
        } else if (ctx->lo) {                                                           \
            EW_CLAMP_BODY(ST, CT, LD, STO, (a < lo ? lo : a))                           \
        } else {                                                                        \
            EW_CLAMP_BODY(ST, CT, LD, STO, (hi < a ? hi : a))                           \
        }                                                                               \
    }
EW_FLOAT_ROWS(EW_CLAMP_LOOP, _)
EW_INT_ROWS(EW_CLAMP_LOOP, _)

const graft_loop_fn graft_cpu_clamp_loops[GRAFT_NDTYPES] = {
    EW_FLOAT_ROWS(EW_ENTRY, clamp) EW_INT_ROWS(EW_ENTRY, clamp)
};
