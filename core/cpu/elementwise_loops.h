/* graft CPU kernels: the macros that stamp out one elementwise loop per (op, dtype).
 * Private to core/cpu/elementwise_*.c.
 *
 * A dtype row X(DN, ST, CT, UT, LD, STO, ...) names the storage type ST, the type the
 * math is done in CT (float for float16/bfloat16), an unsigned type UT for integer
 * arithmetic that wraps around like PyTorch's (signed overflow is undefined in C), and
 * the load/store conversions. Contiguous paths carry `omp simd` because GCC's -O2 cost
 * model alone declines most of them.
 */
#ifndef GRAFT_CPU_ELEMENTWISE_LOOPS_H
#define GRAFT_CPU_ELEMENTWISE_LOOPS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu/elementwise_kernels.h"

/* ---- float16 / bfloat16 <-> float32, round to nearest even (inlined for the loops) ---- */
#if defined(__FLT16_MAX__)
static inline float ew_f16_to_f32(uint16_t h) {
    _Float16 f;
    memcpy(&f, &h, 2);
    return (float)f;
}
static inline uint16_t ew_f32_to_f16(float v) {
    _Float16 f = (_Float16)v;
    uint16_t h;
    memcpy(&h, &f, 2);
    return h;
}
#else
static inline float ew_f16_to_f32(uint16_t h) { return graft_f16_to_f32(h); }
static inline uint16_t ew_f32_to_f16(float v) { return graft_f32_to_f16(v); }
#endif

static inline float ew_bf16_to_f32(uint16_t h) {
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}
/* Same rounding and NaN quieting as graft_f32_to_bf16, written branch-free. */
static inline uint16_t ew_f32_to_bf16(float v) {
    uint32_t x;
    memcpy(&x, &v, 4);
    uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    return (uint16_t)(((x & 0x7fffffffu) > 0x7f800000u) ? ((x >> 16) | 0x40u) : r);
}

#define EW_LD(x) (x)
#define EW_ST(v) (v)
#define EW_LD_F16(x) ew_f16_to_f32(x)
#define EW_ST_F16(v) ew_f32_to_f16(v)
#define EW_LD_BF16(x) ew_bf16_to_f32(x)
#define EW_ST_BF16(v) ew_f32_to_bf16(v)
#define EW_ST_BOOL(v) ((uint8_t)((v) != 0))

/* ---- dtype rows ---- */
#define EW_FLOAT_ROWS(X, ...)                                               \
    X(F32, float, float, float, EW_LD, EW_ST, __VA_ARGS__)                  \
    X(F64, double, double, double, EW_LD, EW_ST, __VA_ARGS__)               \
    X(F16, uint16_t, float, float, EW_LD_F16, EW_ST_F16, __VA_ARGS__)       \
    X(BF16, uint16_t, float, float, EW_LD_BF16, EW_ST_BF16, __VA_ARGS__)
/* Narrow integers wrap through `unsigned` (32 bits), so products cannot overflow int. */
#define EW_INT_ROWS(X, ...)                                                 \
    X(I64, int64_t, int64_t, uint64_t, EW_LD, EW_ST, __VA_ARGS__)           \
    X(I32, int32_t, int32_t, uint32_t, EW_LD, EW_ST, __VA_ARGS__)           \
    X(I16, int16_t, int16_t, unsigned, EW_LD, EW_ST, __VA_ARGS__)           \
    X(I8, int8_t, int8_t, unsigned, EW_LD, EW_ST, __VA_ARGS__)              \
    X(U8, uint8_t, uint8_t, unsigned, EW_LD, EW_ST, __VA_ARGS__)
#define EW_BOOL_ROW(X, ...) X(BOOL, uint8_t, uint8_t, unsigned, EW_LD, EW_ST_BOOL, __VA_ARGS__)

/* ---- e^x in float32, vectorisable ----
 * e^x = 2^n e^r with n = round(x / ln2) and r = x - n ln2 (ln2 split in two so r is
 * exact), |r| <= ln2/2; e^r by Cephes' degree-6 polynomial (about 1 ulp). 2^n is built
 * in two halves so results in the subnormal range and up to FLT_MAX stay exact. */
static inline float ew_expf(float x) {
    float xc = x < -104.0f ? -104.0f : x;
    xc = xc > 89.0f ? 89.0f : xc;
    xc = x != x ? 0.0f : xc;
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round via 1.5 * 2^23 */
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t ni = (int32_t)n;
    int32_t n1 = ni >> 1, n2 = ni - n1;
    uint32_t b1 = (uint32_t)(n1 + 127) << 23, b2 = (uint32_t)(n2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, 4);
    memcpy(&s2, &b2, 4);
    float res = p * s1 * s2;
    return x != x ? x : res;
}
#define EW_EXP(a) _Generic((a), float: ew_expf, default: exp)(a)

/* ---- tanh in float32, vectorisable (about 1.3 ulp) ----
 * |x| < 0.625: Cephes' odd polynomial x + x^3 P(x^2); otherwise 1 - 2 / (e^2|x| + 1)
 * with the sign of x (|x| is capped at 9, where tanh is 1 in float32). */
static inline float ew_tanhf(float x) {
    float ax = fabsf(x);
    float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = p * z * x + x;
    float e = ew_expf(2.0f * (ax > 9.0f ? 9.0f : ax));
    float big = copysignf(1.0f - 2.0f / (e + 1.0f), x);
    return ax < 0.625f ? copysignf(fabsf(small), x) : big;
}
#define EW_TANH(a) _Generic((a), float: ew_tanhf, default: tanh)(a)

#define EW_NO_HOOK(ST, CT, OT, LD, STO)

/* ---- binary loop: data = {out, a, b} ----
 * In the bodies, EXPR(a, b, CT, UT) may use alpha_f / alpha_i and set zf (integer
 * division by zero), which is reported through ctx->zero_div. HOOK runs first on the
 * tensor-with-scalar path (pow's special exponents). */
#define EW_BIN_LOOP(FN, ST, CT, UT, OT, LD, STO, EXPR, HOOK)                                  \
    static void FN(char **d, const int64_t *s, int64_t n, void *vctx) {                       \
        graft_ew_ctx *ctx = vctx;                                                             \
        const double alpha_f = ctx->alpha_f;                                                  \
        const int64_t alpha_i = ctx->alpha_i;                                                 \
        int zf = 0;                                                                           \
        (void)alpha_f;                                                                        \
        (void)alpha_i;                                                                        \
        const int64_t es = (int64_t)sizeof(ST), eo = (int64_t)sizeof(OT);                     \
        if (s[0] == eo && s[1] == es && s[2] == es) {                                         \
            OT *o = (OT *)d[0];                                                               \
            const ST *x = (const ST *)d[1], *y = (const ST *)d[2];                            \
            _Pragma("omp simd reduction(|:zf)")                                               \
            for (int64_t k = 0; k < n; k++) {                                                 \
                CT a = LD(x[k]), b = LD(y[k]);                                                \
                o[k] = STO(EXPR(a, b, CT, UT));                                               \
            }                                                                                 \
        } else if (s[0] == eo && s[1] == es && s[2] == 0) {                                   \
            OT *o = (OT *)d[0];                                                               \
            const ST *x = (const ST *)d[1];                                                   \
            const CT b = LD(*(const ST *)d[2]);                                               \
            HOOK(ST, CT, OT, LD, STO)                                                         \
            _Pragma("omp simd reduction(|:zf)")                                               \
            for (int64_t k = 0; k < n; k++) {                                                 \
                CT a = LD(x[k]);                                                              \
                o[k] = STO(EXPR(a, b, CT, UT));                                               \
            }                                                                                 \
        } else if (s[0] == eo && s[1] == 0 && s[2] == es) {                                   \
            OT *o = (OT *)d[0];                                                               \
            const ST *y = (const ST *)d[2];                                                   \
            const CT a = LD(*(const ST *)d[1]);                                               \
            _Pragma("omp simd reduction(|:zf)")                                               \
            for (int64_t k = 0; k < n; k++) {                                                 \
                CT b = LD(y[k]);                                                              \
                o[k] = STO(EXPR(a, b, CT, UT));                                               \
            }                                                                                 \
        } else {                                                                              \
            char *o = d[0];                                                                   \
            const char *x = d[1], *y = d[2];                                                  \
            for (int64_t k = 0; k < n; k++) {                                                 \
                CT a = LD(*(const ST *)(x + k * s[1])), b = LD(*(const ST *)(y + k * s[2]));  \
                *(OT *)(o + k * s[0]) = STO(EXPR(a, b, CT, UT));                              \
            }                                                                                 \
        }                                                                                     \
        if (zf) __atomic_store_n(&ctx->zero_div, 1, __ATOMIC_RELAXED);                        \
    }

/* ---- unary loop: data = {out, a} ---- */
#define EW_UN_LOOP(FN, ST, CT, UT, OT, LD, STO, EXPR)                                         \
    static void FN(char **d, const int64_t *s, int64_t n, void *vctx) {                       \
        (void)vctx;                                                                           \
        if (s[0] == (int64_t)sizeof(OT) && s[1] == (int64_t)sizeof(ST)) {                     \
            OT *o = (OT *)d[0];                                                               \
            const ST *x = (const ST *)d[1];                                                   \
            _Pragma("omp simd")                                                               \
            for (int64_t k = 0; k < n; k++) {                                                 \
                CT a = LD(x[k]);                                                              \
                o[k] = STO(EXPR(a, CT, UT));                                                  \
            }                                                                                 \
        } else {                                                                              \
            for (int64_t k = 0; k < n; k++) {                                                 \
                CT a = LD(*(const ST *)(d[1] + k * s[1]));                                    \
                *(OT *)(d[0] + k * s[0]) = STO(EXPR(a, CT, UT));                              \
            }                                                                                 \
        }                                                                                     \
    }

#endif
