/* graft nn internals: float32 exp and tanh that vectorise inside `omp simd` loops (the
 * libm calls do not), for the softmax, cross-entropy and activation kernels. The same
 * approximations as core/cpu's elementwise loops (about 1 ulp, exact for NaN and
 * infinities), kept here because those loops are private to core/cpu; and the Philox
 * block of the dropout mask. */
#ifndef GRAFT_NN_MATH_H
#define GRAFT_NN_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "tensor/philox.h"

/* e^x: x = n ln2 + r (Cody-Waite), a degree-6 polynomial for e^r, 2^n as two halves
 * so that subnormal results come out right. */
static inline float nn_expf(float x) {
    float xc = x < -104.0f ? -104.0f : x;
    xc = xc > 89.0f ? 89.0f : xc;
    xc = x != x ? 0.0f : xc;
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
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

/* tanh: |x| < 0.625 an odd polynomial (Cephes), else 1 - 2 / (e^2|x| + 1) with x's sign. */
static inline float nn_tanhf(float x) {
    float ax = fabsf(x);
    float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = p * z * x + x;
    float e = nn_expf(2.0f * (ax > 9.0f ? 9.0f : ax));
    float big = copysignf(1.0f - 2.0f / (e + 1.0f), x);
    return ax < 0.625f ? copysignf(fabsf(small), x) : big;
}

/* erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), the formula of
 * PyTorch's vectorised float erf: sign(x) (1 - t P(t) e^(-x^2)), t = 1 / (1 + 0.3275911 |x|). */
static inline float nn_erff(float x) {
    float ax = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float r = 1.061405429f;
    r = r * t - 1.453152027f;
    r = r * t + 1.421413741f;
    r = r * t - 0.284496736f;
    r = r * t + 0.254829592f;
    float y = 1.0f - r * t * nn_expf(-x * x);
    return copysignf(y, x);
}

/* Philox4x32-10 for the dropout loop: graft_philox_block (tensor/philox.h), the one
 * definition the CPU fills and the CUDA kernels use too, inlined so a loop over
 * consecutive counters vectorises. */
#define nn_philox graft_philox_block

#define NN_EXP(a) _Generic((a), float: nn_expf, default: exp)(a)
#define NN_TANH(a) _Generic((a), float: nn_tanhf, default: tanh)(a)
#define NN_LOG(a) _Generic((a), float: logf, default: log)(a)
#define NN_ERF(a) _Generic((a), float: nn_erff, default: erf)(a)
#define NN_EXPM1(a) _Generic((a), float: expm1f, default: expm1)(a)

#endif
