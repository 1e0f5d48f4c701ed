/* graft nn: 2-D pooling front ends and their CPU loops. Each op checks its arguments
 * with PyTorch's rules, runs one direct loop per H x W plane (planes in parallel) in
 * float32 or float64 (float16/bfloat16 through float32), and records for autograd.
 * Windows, divisors and NaN handling follow PyTorch 1.13's CPU kernels line by line
 * so values and indices match exactly. CUDA tensors take the same checks and geometry
 * to core/cuda/pool.cu.
 */
#include "nn/pool.h"

#include <math.h>
#include <string.h>

#include "cuda/pool.h"
#include "nn/spatial_record.h"
#include "tensor/iter.h"

#define SHAPE_BUF (GRAFT_MAX_DIMS * 24 + 3)

graft_pool_opts graft_pool_defaults(int64_t kh, int64_t kw) {
    graft_pool_opts o;
    memset(&o, 0, sizeof o);
    o.kernel[0] = o.stride[0] = kh;
    o.kernel[1] = o.stride[1] = kw;
    o.dilation[0] = o.dilation[1] = 1;
    o.count_include_pad = true;
    return o;
}

/* ---- geometry ---- */

typedef struct {
    int64_t planes, H, W, OH, OW;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    bool count_include_pad;
    int64_t divisor;                /* 0: none */
    int out_ndim;
    int64_t out_shape[4];
} pl_geom;

static graft_status pl_check_input(const graft_tensor *t, const char *op) {
    char a[SHAPE_BUF];
    if (!graft_dtype_is_float(t->dtype))
        return graft_error(GRAFT_ETYPE, "%s: expected a floating point input, got %s", op, graft_dtype_name(t->dtype));
    bool ok = t->ndim == 3 || t->ndim == 4;
    for (int d = t->ndim - 3; ok && d < t->ndim; d++) ok = t->shape[d] > 0;
    if (!ok)
        return graft_error(GRAFT_ESHAPE,
                           "%s: expected a 3-D (unbatched) or 4-D (batched) input with non-zero sizes for the "
                           "non-batch dims, got %s",
                           op, graft_shape_str(t->ndim, t->shape, a, sizeof a));
    return GRAFT_OK;
}

/* Planes and spatial sizes of an input shape, the output shape from (OH, OW). */
static void pl_geom_init(pl_geom *g, int ndim, const int64_t *shape, int64_t OH, int64_t OW) {
    memset(g, 0, sizeof *g);
    g->H = shape[ndim - 2];
    g->W = shape[ndim - 1];
    g->planes = 1;
    for (int d = 0; d < ndim - 2; d++) g->planes *= shape[d];
    g->OH = OH;
    g->OW = OW;
    g->out_ndim = ndim;
    for (int d = 0; d < ndim - 2; d++) g->out_shape[d] = shape[d];
    g->out_shape[ndim - 2] = OH;
    g->out_shape[ndim - 1] = OW;
}

/* PyTorch's pooling_output_shape. */
static int64_t pl_out_size(int64_t in, int64_t k, int64_t p, int64_t s, int64_t d, bool ceil_mode) {
    int64_t num = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    int64_t o = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
    if (ceil_mode && (o - 1) * s >= in + p) o--;
    return o;
}

static graft_status pl_geom_window(pl_geom *g, const graft_tensor *t, const graft_pool_opts *o, bool dilated,
                                   const char *op) {
    char a[SHAPE_BUF], b[SHAPE_BUF];
    graft_status st = pl_check_input(t, op);
    if (st) return st;
    for (int d = 0; d < 2; d++) {
        if (o->kernel[d] < 1)
            return graft_error(GRAFT_EINVAL, "%s: kernel_size must be positive, got %s", op,
                               graft_shape_str(2, o->kernel, a, sizeof a));
        if (o->stride[d] < 1)
            return graft_error(GRAFT_EINVAL, "%s: stride must be positive, got %s", op,
                               graft_shape_str(2, o->stride, a, sizeof a));
        if (dilated && o->dilation[d] < 1)
            return graft_error(GRAFT_EINVAL, "%s: dilation must be positive, got %s", op,
                               graft_shape_str(2, o->dilation, a, sizeof a));
        if (o->padding[d] < 0)
            return graft_error(GRAFT_EINVAL, "%s: padding must be non-negative, got %s", op,
                               graft_shape_str(2, o->padding, a, sizeof a));
    }
    for (int d = 0; d < 2; d++)
        if (o->padding[d] > o->kernel[d] / 2)
            return graft_error(GRAFT_EINVAL, "%s: padding %s should be at most half of the kernel %s", op,
                               graft_shape_str(2, o->padding, a, sizeof a), graft_shape_str(2, o->kernel, b, sizeof b));
    if (!dilated && o->divisor_override < 0)
        return graft_error(GRAFT_EINVAL, "%s: divisor_override must be positive, got %lld", op,
                           (long long)o->divisor_override);
    int64_t os[2], dil[2] = {dilated ? o->dilation[0] : 1, dilated ? o->dilation[1] : 1};
    for (int d = 0; d < 2; d++) {
        int64_t in = t->shape[t->ndim - 2 + d];
        os[d] = pl_out_size(in, o->kernel[d], o->padding[d], o->stride[d], dil[d], o->ceil_mode);
        if (os[d] < 1)
            return graft_error(GRAFT_ESHAPE, "%s: kernel %lld is larger than the padded input %lld (input %s)", op,
                               (long long)(dil[d] * (o->kernel[d] - 1) + 1), (long long)(in + 2 * o->padding[d]),
                               graft_shape_str(t->ndim, t->shape, a, sizeof a));
    }
    pl_geom_init(g, t->ndim, t->shape, os[0], os[1]);
    g->kh = o->kernel[0];
    g->kw = o->kernel[1];
    g->sh = o->stride[0];
    g->sw = o->stride[1];
    g->ph = o->padding[0];
    g->pw = o->padding[1];
    g->dh = dil[0];
    g->dw = dil[1];
    g->count_include_pad = o->count_include_pad;
    g->divisor = dilated ? 0 : o->divisor_override;
    return GRAFT_OK;
}

/* PyTorch's adaptive window bounds. */
static inline int64_t pl_start(int64_t a, int64_t b, int64_t c) { return (a / b) * c + ((a % b) * c) / b; }
static inline int64_t pl_end(int64_t a, int64_t b, int64_t c) { return 1 + ((a + 1) * c - 1) / b; }

static bool pl_par(const pl_geom *g, int64_t per_out) {
    return g->planes > 1 && graft_should_parallelize(g->planes * g->OH * g->OW * per_out);
}

/* ---- max pooling 2x2, stride 2 (the common case), 16 outputs per AVX-512 register ----
 * The four taps of each window are the even and odd columns of two rows; the running
 * maximum takes a tap when it is larger or NaN, in PyTorch's scan order, so values and
 * indices match its loop exactly. */
#if defined(__AVX512F__)
#include <immintrin.h>

static bool maxpool2_ok(const pl_geom *g) {
    return g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0 && g->dh == 1 &&
           g->dw == 1 && 2 * g->OH <= g->H && 2 * g->OW <= g->W;
}

static void maxpool2_f32(const pl_geom *g, const float *x, float *y, int64_t *ix) {
    static const int32_t ev[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    const __m512i even = _mm512_loadu_si512(ev), odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i lane2 = _mm512_slli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 1);
    bool par = pl_par(g, 4);
    (void)par;
    #pragma omp parallel for schedule(static) if(par)
    for (int64_t pc = 0; pc < g->planes; pc++) {
        const int64_t W = g->W;
        const float *xp = x + pc * g->H * W;
        float *yp = y + pc * g->OH * g->OW;
        int64_t *ip = ix ? ix + pc * g->OH * g->OW : NULL;
        for (int64_t oh = 0; oh < g->OH; oh++) {
            const float *r0 = xp + 2 * oh * W, *r1 = r0 + W;
            for (int64_t ow = 0; ow < g->OW; ow += 16) {
                int64_t n = g->OW - ow < 16 ? g->OW - ow : 16;
                __mmask16 m = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1);
                __mmask16 lo = (__mmask16)(2 * n >= 16 ? 0xFFFF : (1u << (2 * n)) - 1);
                __mmask16 hi = (__mmask16)(2 * n <= 16 ? 0 : (1u << (2 * n - 16)) - 1);
                __m512 a0 = _mm512_maskz_loadu_ps(lo, r0 + 2 * ow), a1 = _mm512_maskz_loadu_ps(hi, r0 + 2 * ow + 16);
                __m512 b0 = _mm512_maskz_loadu_ps(lo, r1 + 2 * ow), b1 = _mm512_maskz_loadu_ps(hi, r1 + 2 * ow + 16);
                __m512 t[4] = {_mm512_permutex2var_ps(a0, even, a1), _mm512_permutex2var_ps(a0, odd, a1),
                               _mm512_permutex2var_ps(b0, even, b1), _mm512_permutex2var_ps(b0, odd, b1)};
                __m512 mv = t[0];
                __m512i which = _mm512_setzero_si512();   /* tap 0..3: +1 a column, +W a row */
                for (int k = 1; k < 4; k++) {
                    __mmask16 take = (__mmask16)(_mm512_cmp_ps_mask(t[k], mv, _CMP_GT_OQ) |
                                                 _mm512_cmp_ps_mask(t[k], t[k], _CMP_UNORD_Q));
                    mv = _mm512_mask_mov_ps(mv, take, t[k]);
                    which = _mm512_mask_mov_epi32(which, take, _mm512_set1_epi32(k));
                }
                _mm512_mask_storeu_ps(yp + oh * g->OW + ow, m, mv);
                if (ip) {
                    /* index = 2oh W + 2(ow + l) + (k & 1) + (k >> 1) W */
                    __m512i base = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(2 * ow)), lane2);
                    __m512i col = _mm512_add_epi32(base, _mm512_and_si512(which, _mm512_set1_epi32(1)));
                    __m512i row = _mm512_srli_epi32(which, 1);
                    __m512i lo64 = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(col));
                    __m512i hi64 = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(col, 1));
                    __m512i rlo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(row));
                    __m512i rhi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(row, 1));
                    __m512i Wv = _mm512_set1_epi64(W), r2 = _mm512_set1_epi64(2 * oh);
                    lo64 = _mm512_add_epi64(lo64, _mm512_mullo_epi64(_mm512_add_epi64(rlo, r2), Wv));
                    hi64 = _mm512_add_epi64(hi64, _mm512_mullo_epi64(_mm512_add_epi64(rhi, r2), Wv));
                    int64_t *dst = ip + oh * g->OW + ow;
                    _mm512_mask_storeu_epi64(dst, (__mmask8)(m & 0xFF), lo64);
                    _mm512_mask_storeu_epi64(dst + 8, (__mmask8)(m >> 8), hi64);
                }
            }
        }
    }
}

/* The gradient of maxpool2_f32: windows do not overlap, so each input pixel gets its
 * window's gradient or zero, written once (no zeroing pass, no scatter). ix must come
 * from maxpool2_f32. */
static void maxpool2_bwd_f32(const pl_geom *g, const float *gy, const int64_t *ix, float *gx) {
    static const int32_t lo_i[16] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
    const __m512i ilo = _mm512_loadu_si512(lo_i), ihi = _mm512_add_epi32(ilo, _mm512_set1_epi32(8));
    const __m512i lane2 = _mm512_slli_epi64(_mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7), 1);
    bool par = pl_par(g, 4);
    (void)par;
    #pragma omp parallel for schedule(static) if(par)
    for (int64_t pc = 0; pc < g->planes; pc++) {
        const int64_t W = g->W, H = g->H;
        float *xp = gx + pc * H * W;
        const float *yp = gy + pc * g->OH * g->OW;
        const int64_t *ip = ix + pc * g->OH * g->OW;
        for (int64_t oh = 0; oh < g->OH; oh++) {
            float *r0 = xp + 2 * oh * W, *r1 = r0 + W;
            for (int64_t ow = 0; ow < g->OW; ow += 16) {
                int64_t n = g->OW - ow < 16 ? g->OW - ow : 16;
                __mmask16 m = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1);
                __mmask16 lo = (__mmask16)(2 * n >= 16 ? 0xFFFF : (1u << (2 * n)) - 1);
                __mmask16 hi = (__mmask16)(2 * n <= 16 ? 0 : (1u << (2 * n - 16)) - 1);
                __m512 v = _mm512_maskz_loadu_ps(m, yp + oh * g->OW + ow);
                /* tap of each window: its index minus the window's first pixel (0, 1, W, W + 1) */
                __m512i b = _mm512_add_epi64(_mm512_set1_epi64(2 * oh * W + 2 * ow), lane2);
                __m512i d0 = _mm512_sub_epi64(_mm512_maskz_loadu_epi64((__mmask8)(m & 0xFF), ip + oh * g->OW + ow), b);
                __m512i d1 = _mm512_sub_epi64(_mm512_maskz_loadu_epi64((__mmask8)(m >> 8), ip + oh * g->OW + ow + 8),
                                              _mm512_add_epi64(b, _mm512_set1_epi64(16)));
                __m256i k0 = _mm512_cvtepi64_epi32(d0), k1 = _mm512_cvtepi64_epi32(d1);
                __m512i k = _mm512_inserti64x4(_mm512_castsi256_si512(k0), k1, 1);
                __m512i wv = _mm512_set1_epi32((int32_t)W);
                __mmask16 row1 = _mm512_cmp_epi32_mask(k, wv, _MM_CMPINT_NLT);
                __m512i col = _mm512_mask_sub_epi32(k, row1, k, wv); /* 0 or 1 */
                __mmask16 odd = _mm512_test_epi32_mask(col, _mm512_set1_epi32(1));
                __m512 t0 = _mm512_maskz_mov_ps((__mmask16)(~row1 & ~odd), v), t1 = _mm512_maskz_mov_ps((__mmask16)(~row1 & odd), v);
                __m512 t2 = _mm512_maskz_mov_ps((__mmask16)(row1 & ~odd), v), t3 = _mm512_maskz_mov_ps((__mmask16)(row1 & odd), v);
                _mm512_mask_storeu_ps(r0 + 2 * ow, lo, _mm512_permutex2var_ps(t0, ilo, t1));
                _mm512_mask_storeu_ps(r0 + 2 * ow + 16, hi, _mm512_permutex2var_ps(t0, ihi, t1));
                _mm512_mask_storeu_ps(r1 + 2 * ow, lo, _mm512_permutex2var_ps(t2, ilo, t3));
                _mm512_mask_storeu_ps(r1 + 2 * ow + 16, hi, _mm512_permutex2var_ps(t2, ihi, t3));
            }
            /* an odd width leaves a last column no window reads */
            for (int64_t c = 2 * g->OW; c < W; c++) r0[c] = r1[c] = 0;
        }
        /* and an odd height a last row */
        for (int64_t r = 2 * g->OH; r < H; r++) memset(xp + r * W, 0, sizeof(float) * (size_t)W);
    }
}

/* ---- max pooling, any window with stride 1 or 2 and no dilation (ResNet's 3x3 stride 2
 * padding 1 among them), 16 outputs of a row per AVX-512 register ----
 * Taps are visited in the scalar loop's order (window rows, then columns) with its rule
 * (take a larger value or a NaN), and taps outside the image are -inf in lanes that never
 * take them, so values and indices are those of maxpool_f32. Stride 2 gathers the even
 * lanes of two loads with one permute. Indices within a plane fit in 32 bits. */
static bool maxpool_vec_ok(const pl_geom *g) {
    return (g->sw == 1 || g->sw == 2) && g->dh == 1 && g->dw == 1 && g->H * g->W < ((int64_t)1 << 31) &&
           g->OW >= 8;
}

/* Lanes k of a 16-wide load at position base that fall in [0, n). */
static inline __mmask16 mp_valid(int64_t base, int64_t n) {
    int64_t lo = -base, hi = n - base; /* lanes [lo, hi) */
    if (lo < 0) lo = 0;
    if (hi > 16) hi = 16;
    if (hi <= lo) return 0;
    return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}

static void maxpool_vec_f32(const pl_geom *g, const float *x, float *y, int64_t *ix) {
    static const int32_t ev[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    const __m512i even = _mm512_loadu_si512(ev);
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    bool par = pl_par(g, g->kh * g->kw);
    (void)par;
    #pragma omp parallel for schedule(static) if(par)
    for (int64_t pc = 0; pc < g->planes; pc++) {
        const int64_t W = g->W, H = g->H, sw = g->sw;
        const float *xp = x + pc * H * W;
        float *yp = y + pc * g->OH * g->OW;
        int64_t *ip = ix ? ix + pc * g->OH * g->OW : NULL;
        const __m512i lstep = _mm512_mullo_epi32(lanes, _mm512_set1_epi32((int32_t)sw));
        for (int64_t oh = 0; oh < g->OH; oh++) {
            int64_t ih0 = oh * g->sh - g->ph, ih1 = ih0 + g->kh < H ? ih0 + g->kh : H;
            if (ih0 < 0) ih0 = 0;
            for (int64_t ow = 0; ow < g->OW; ow += 16) {
                int64_t n = g->OW - ow < 16 ? g->OW - ow : 16;
                __mmask16 m = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1);
                int64_t c0 = ow * sw - g->pw; /* first window column of lane 0 */
                /* the scalar loop's starting index: the window's first pixel inside the image */
                __m512i first = _mm512_add_epi32(_mm512_set1_epi32((int32_t)c0), lstep);
                first = _mm512_max_epi32(first, _mm512_setzero_si512());
                __m512i mi = _mm512_add_epi32(first, _mm512_set1_epi32((int32_t)(ih0 * W)));
                __m512 mv = ninf;
                for (int64_t ih = ih0; ih < ih1; ih++) {
                    const float *row = xp + ih * W;
                    for (int64_t j = 0; j < g->kw; j++) {
                        int64_t base = c0 + j;
                        __m512 v;
                        if (sw == 1) {
                            v = _mm512_mask_loadu_ps(ninf, mp_valid(base, W), row + base);
                        } else {
                            __m512 a0 = _mm512_mask_loadu_ps(ninf, mp_valid(base, W), row + base);
                            __m512 a1 = _mm512_mask_loadu_ps(ninf, mp_valid(base + 16, W), row + base + 16);
                            v = _mm512_permutex2var_ps(a0, even, a1);
                        }
                        __mmask16 take = (__mmask16)(_mm512_cmp_ps_mask(v, mv, _CMP_GT_OQ) |
                                                     _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q));
                        mv = _mm512_mask_mov_ps(mv, take, v);
                        __m512i idx = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(ih * W + base)), lstep);
                        mi = _mm512_mask_mov_epi32(mi, take, idx);
                    }
                }
                _mm512_mask_storeu_ps(yp + oh * g->OW + ow, m, mv);
                if (ip) {
                    int64_t *dst = ip + oh * g->OW + ow;
                    _mm512_mask_storeu_epi64(dst, (__mmask8)(m & 0xFF), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(mi)));
                    _mm512_mask_storeu_epi64(dst + 8, (__mmask8)(m >> 8),
                                             _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(mi, 1)));
                }
            }
        }
    }
}
#endif

/* ---- loops, per dtype ---- */

#define PL_LOOPS(SUF, T)                                                                            \
    /* y = max over the window (NaN wins), ix = its flat index in the plane */                      \
    static void maxpool_##SUF(const pl_geom *g, const T *x, T *y, int64_t *ix) {                    \
        bool par = pl_par(g, g->kh * g->kw);                                                        \
        (void)par;                                                                                  \
        _Pragma("omp parallel for schedule(static) if(par)")                                        \
        for (int64_t pc = 0; pc < g->planes; pc++) {                                                \
            const T *xp = x + pc * g->H * g->W;                                                     \
            T *yp = y + pc * g->OH * g->OW;                                                         \
            int64_t *ip = ix ? ix + pc * g->OH * g->OW : NULL;                                      \
            for (int64_t oh = 0; oh < g->OH; oh++) {                                                \
                int64_t ih0 = oh * g->sh - g->ph;                                                   \
                int64_t ih1 = ih0 + (g->kh - 1) * g->dh + 1 < g->H ? ih0 + (g->kh - 1) * g->dh + 1 : g->H; \
                while (ih0 < 0) ih0 += g->dh;                                                       \
                for (int64_t ow = 0; ow < g->OW; ow++) {                                            \
                    int64_t iw0 = ow * g->sw - g->pw;                                               \
                    int64_t iw1 = iw0 + (g->kw - 1) * g->dw + 1 < g->W ? iw0 + (g->kw - 1) * g->dw + 1 : g->W; \
                    while (iw0 < 0) iw0 += g->dw;                                                   \
                    int64_t mi = ih0 * g->W + iw0;                                                  \
                    T mv = -(T)INFINITY;                                                            \
                    for (int64_t ih = ih0; ih < ih1; ih += g->dh)                                   \
                        for (int64_t iw = iw0; iw < iw1; iw += g->dw) {                             \
                            T v = xp[ih * g->W + iw];                                               \
                            bool take = (v > mv) | (v != v); /* branchless: data-dependent */       \
                            mv = take ? v : mv;                                                     \
                            mi = take ? ih * g->W + iw : mi;                                        \
                        }                                                                           \
                    yp[oh * g->OW + ow] = mv;                                                       \
                    if (ip) ip[oh * g->OW + ow] = mi;                                               \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    /* gx[plane][ix] += gy (gx zeroed here) */                                                      \
    static void maxpool_bwd_##SUF(const pl_geom *g, const T *gy, const int64_t *ix, T *gx) {        \
        bool par = pl_par(g, 1);                                                                    \
        (void)par;                                                                                  \
        int64_t P = g->OH * g->OW, HW = g->H * g->W;                                                \
        _Pragma("omp parallel for schedule(static) if(par)")                                        \
        for (int64_t pc = 0; pc < g->planes; pc++) {                                                \
            T *xp = gx + pc * HW;                                                                   \
            memset(xp, 0, sizeof(T) * (size_t)HW);                                                  \
            for (int64_t p = 0; p < P; p++) xp[ix[pc * P + p]] += gy[pc * P + p];                   \
        }                                                                                           \
    }                                                                                               \
    /* the window of (oh, ow) clipped to the image, and its divisor; false when empty */            \
    static inline bool avg_window_##SUF(const pl_geom *g, int64_t oh, int64_t ow, int64_t *h0, int64_t *h1, \
                                        int64_t *w0, int64_t *w1, T *div) {                         \
        int64_t ih0 = oh * g->sh - g->ph, iw0 = ow * g->sw - g->pw;                                 \
        int64_t ih1 = ih0 + g->kh < g->H + g->ph ? ih0 + g->kh : g->H + g->ph;                      \
        int64_t iw1 = iw0 + g->kw < g->W + g->pw ? iw0 + g->kw : g->W + g->pw;                      \
        int64_t pool = (ih1 - ih0) * (iw1 - iw0);                                                   \
        if (ih0 < 0) ih0 = 0;                                                                       \
        if (iw0 < 0) iw0 = 0;                                                                       \
        if (ih1 > g->H) ih1 = g->H;                                                                 \
        if (iw1 > g->W) iw1 = g->W;                                                                 \
        *h0 = ih0; *h1 = ih1; *w0 = iw0; *w1 = iw1;                                                 \
        if (ih0 >= ih1 || iw0 >= iw1) return false;                                                 \
        int64_t f = g->divisor ? g->divisor : g->count_include_pad ? pool : (ih1 - ih0) * (iw1 - iw0); \
        *div = (T)f;                                                                                \
        return true;                                                                                \
    }                                                                                               \
    static void avgpool_##SUF(const pl_geom *g, const T *x, T *y) {                                 \
        bool par = pl_par(g, g->kh * g->kw);                                                        \
        (void)par;                                                                                  \
        _Pragma("omp parallel for schedule(static) if(par)")                                        \
        for (int64_t pc = 0; pc < g->planes; pc++) {                                                \
            const T *xp = x + pc * g->H * g->W;                                                     \
            T *yp = y + pc * g->OH * g->OW;                                                         \
            for (int64_t oh = 0; oh < g->OH; oh++)                                                  \
                for (int64_t ow = 0; ow < g->OW; ow++) {                                            \
                    int64_t h0, h1, w0, w1;                                                         \
                    T div;                                                                          \
                    if (!avg_window_##SUF(g, oh, ow, &h0, &h1, &w0, &w1, &div)) {                   \
                        yp[oh * g->OW + ow] = 0;                                                    \
                        continue;                                                                   \
                    }                                                                               \
                    T s = 0;                                                                        \
                    for (int64_t ih = h0; ih < h1; ih++)                                            \
                        for (int64_t iw = w0; iw < w1; iw++) s += xp[ih * g->W + iw];               \
                    yp[oh * g->OW + ow] = s / div;                                                  \
                }                                                                                   \
        }                                                                                           \
    }                                                                                               \
    static void avgpool_bwd_##SUF(const pl_geom *g, const T *gy, T *gx) {                           \
        bool par = pl_par(g, g->kh * g->kw);                                                        \
        (void)par;                                                                                  \
        _Pragma("omp parallel for schedule(static) if(par)")                                        \
        for (int64_t pc = 0; pc < g->planes; pc++) {                                                \
            T *xp = gx + pc * g->H * g->W;                                                          \
            const T *yp = gy + pc * g->OH * g->OW;                                                  \
            memset(xp, 0, sizeof(T) * (size_t)(g->H * g->W));                                       \
            for (int64_t oh = 0; oh < g->OH; oh++)                                                  \
                for (int64_t ow = 0; ow < g->OW; ow++) {                                            \
                    int64_t h0, h1, w0, w1;                                                         \
                    T div;                                                                          \
                    if (!avg_window_##SUF(g, oh, ow, &h0, &h1, &w0, &w1, &div)) continue;           \
                    T v = yp[oh * g->OW + ow] / div;                                                \
                    for (int64_t ih = h0; ih < h1; ih++)                                            \
                        for (int64_t iw = w0; iw < w1; iw++) xp[ih * g->W + iw] += v;               \
                }                                                                                   \
        }                                                                                           \
    }                                                                                               \
    static void adaptive_avg_##SUF(const pl_geom *g, const T *x, T *y) {                            \
        bool par = pl_par(g, (g->H / g->OH + 1) * (g->W / g->OW + 1));                              \
        (void)par;                                                                                  \
        _Pragma("omp parallel for schedule(static) if(par)")                                        \
        for (int64_t pc = 0; pc < g->planes; pc++) {                                                \
            const T *xp = x + pc * g->H * g->W;                                                     \
            T *yp = y + pc * g->OH * g->OW;                                                         \
            for (int64_t oh = 0; oh < g->OH; oh++) {                                                \
                int64_t h0 = pl_start(oh, g->OH, g->H), h1 = pl_end(oh, g->OH, g->H);               \
                for (int64_t ow = 0; ow < g->OW; ow++) {                                            \
                    int64_t w0 = pl_start(ow, g->OW, g->W), w1 = pl_end(ow, g->OW, g->W);           \
                    T s = 0;                                                                        \
                    for (int64_t ih = h0; ih < h1; ih++)                                            \
                        for (int64_t iw = w0; iw < w1; iw++) s += xp[ih * g->W + iw];               \
                    yp[oh * g->OW + ow] = s / (T)(h1 - h0) / (T)(w1 - w0);                          \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    static void adaptive_avg_bwd_##SUF(const pl_geom *g, const T *gy, T *gx) {                      \
        bool par = pl_par(g, (g->H / g->OH + 1) * (g->W / g->OW + 1));                              \
        (void)par;                                                                                  \
        _Pragma("omp parallel for schedule(static) if(par)")                                        \
        for (int64_t pc = 0; pc < g->planes; pc++) {                                                \
            T *xp = gx + pc * g->H * g->W;                                                          \
            const T *yp = gy + pc * g->OH * g->OW;                                                  \
            memset(xp, 0, sizeof(T) * (size_t)(g->H * g->W));                                       \
            for (int64_t oh = 0; oh < g->OH; oh++) {                                                \
                int64_t h0 = pl_start(oh, g->OH, g->H), h1 = pl_end(oh, g->OH, g->H);               \
                for (int64_t ow = 0; ow < g->OW; ow++) {                                            \
                    int64_t w0 = pl_start(ow, g->OW, g->W), w1 = pl_end(ow, g->OW, g->W);           \
                    T v = yp[oh * g->OW + ow] / (T)(h1 - h0) / (T)(w1 - w0);                        \
                    for (int64_t ih = h0; ih < h1; ih++)                                            \
                        for (int64_t iw = w0; iw < w1; iw++) xp[ih * g->W + iw] += v;               \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    static void adaptive_max_##SUF(const pl_geom *g, const T *x, T *y, int64_t *ix) {               \
        bool par = pl_par(g, (g->H / g->OH + 1) * (g->W / g->OW + 1));                              \
        (void)par;                                                                                  \
        _Pragma("omp parallel for schedule(static) if(par)")                                        \
        for (int64_t pc = 0; pc < g->planes; pc++) {                                                \
            const T *xp = x + pc * g->H * g->W;                                                     \
            T *yp = y + pc * g->OH * g->OW;                                                         \
            int64_t *ip = ix ? ix + pc * g->OH * g->OW : NULL;                                      \
            for (int64_t oh = 0; oh < g->OH; oh++) {                                                \
                int64_t h0 = pl_start(oh, g->OH, g->H), h1 = pl_end(oh, g->OH, g->H);               \
                for (int64_t ow = 0; ow < g->OW; ow++) {                                            \
                    int64_t w0 = pl_start(ow, g->OW, g->W), w1 = pl_end(ow, g->OW, g->W);           \
                    int64_t mi = h0 * g->W + w0;                                                    \
                    T mv = -(T)INFINITY;                                                            \
                    for (int64_t ih = h0; ih < h1; ih++)                                            \
                        for (int64_t iw = w0; iw < w1; iw++) {                                      \
                            T v = xp[ih * g->W + iw];                                               \
                            bool take = (v > mv) | (v != v); /* branchless: data-dependent */       \
                            mv = take ? v : mv;                                                     \
                            mi = take ? ih * g->W + iw : mi;                                        \
                        }                                                                           \
                    yp[oh * g->OW + ow] = mv;                                                       \
                    if (ip) ip[oh * g->OW + ow] = mi;                                               \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }

PL_LOOPS(f32, float)
PL_LOOPS(f64, double)

/* ---- shared plumbing ---- */

typedef enum { PL_MAX, PL_AVG, PL_ADAPTIVE_AVG, PL_ADAPTIVE_MAX } pl_kind;

static graft_dtype pl_compute(graft_dtype d) { return d == GRAFT_F64 ? GRAFT_F64 : GRAFT_F32; }

/* +1: t in dtype d, contiguous. */
static graft_status pl_ready(graft_tensor **out, graft_tensor *t, graft_dtype d) {
    if (t->dtype != d) return graft_tensor_to_dtype(out, t, d);
    return graft_tensor_contiguous(out, t);
}

/* The device kernels' view of a geometry. */
static graft_cuda_pool_geom pl_cuda_geom(const pl_geom *g) {
    graft_cuda_pool_geom c = {g->planes, g->H, g->W, g->OH, g->OW, g->kh, g->kw, g->sh, g->sw,
                              g->ph, g->pw, g->dh, g->dw, g->divisor, g->count_include_pad};
    return c;
}

static graft_cuda_pool_kind pl_cuda_kind(pl_kind k) {
    switch (k) {
    case PL_MAX: return GRAFT_CUDA_POOL_MAX;
    case PL_AVG: return GRAFT_CUDA_POOL_AVG;
    case PL_ADAPTIVE_AVG: return GRAFT_CUDA_POOL_ADAPTIVE_AVG;
    default: return GRAFT_CUDA_POOL_ADAPTIVE_MAX;
    }
}

/* The CUDA forward: the input as it is (float16/bfloat16 are computed in float by the
 * kernels), contiguous; outputs on its device. */
static graft_status pl_forward_cuda(graft_tensor **out, graft_tensor **indices, graft_tensor *input, const pl_geom *g,
                                    pl_kind kind) {
    graft_device dev = graft_tensor_device(input);
    graft_tensor *x = NULL, *y = NULL, *ix = NULL;
    graft_cuda_pool_geom cg = pl_cuda_geom(g);
    graft_status st;
    if ((st = graft_tensor_contiguous(&x, input)) ||
        (st = graft_tensor_empty(&y, g->out_ndim, g->out_shape, input->dtype, dev)) ||
        (indices && (st = graft_tensor_empty(&ix, g->out_ndim, g->out_shape, GRAFT_I64, dev))) ||
        (st = graft_cuda_pool_forward(y, ix, x, &cg, pl_cuda_kind(kind)))) {
        graft_tensor_release(y);
        graft_tensor_release(ix);
        y = ix = NULL;
    }
    graft_tensor_release(x);
    *out = y;
    if (indices) *indices = ix;
    return st;
}

/* Runs a forward loop: y (and ix) from input under geometry g. */
static graft_status pl_forward(graft_tensor **out, graft_tensor **indices, graft_tensor *input, const pl_geom *g,
                               pl_kind kind) {
    if (graft_tensor_device(input).type == GRAFT_CUDA) return pl_forward_cuda(out, indices, input, g, kind);
    graft_dtype cdt = pl_compute(input->dtype);
    graft_tensor *x = NULL, *y = NULL, *ix = NULL;
    graft_status st;
    if ((st = pl_ready(&x, input, cdt)) || (st = graft_tensor_empty(&y, g->out_ndim, g->out_shape, cdt, graft_cpu)))
        goto done;
    if (indices && (st = graft_tensor_empty(&ix, g->out_ndim, g->out_shape, GRAFT_I64, graft_cpu))) goto done;
    int64_t *ip = ix ? graft_tensor_data(ix) : NULL;
    void *xd = graft_tensor_data(x), *yd = graft_tensor_data(y);
    bool f = cdt == GRAFT_F32;
    switch (kind) {
    case PL_MAX:
#if defined(__AVX512F__)
        if (f && maxpool2_ok(g)) {
            maxpool2_f32(g, xd, yd, ip);
            break;
        }
        if (f && maxpool_vec_ok(g)) {
            maxpool_vec_f32(g, xd, yd, ip);
            break;
        }
#endif
        f ? maxpool_f32(g, xd, yd, ip) : maxpool_f64(g, xd, yd, ip);
        break;
    case PL_AVG: f ? avgpool_f32(g, xd, yd) : avgpool_f64(g, xd, yd); break;
    case PL_ADAPTIVE_AVG: f ? adaptive_avg_f32(g, xd, yd) : adaptive_avg_f64(g, xd, yd); break;
    case PL_ADAPTIVE_MAX: f ? adaptive_max_f32(g, xd, yd, ip) : adaptive_max_f64(g, xd, yd, ip); break;
    }
    if (cdt != input->dtype) {
        graft_tensor *c;
        if ((st = graft_tensor_to_dtype(&c, y, input->dtype))) goto done;
        graft_tensor_release(y);
        y = c;
    }
done:
    graft_tensor_release(x);
    if (st) {
        graft_tensor_release(y);
        graft_tensor_release(ix);
        *out = NULL;
        if (indices) *indices = NULL;
        return st;
    }
    *out = y;
    if (indices) *indices = ix;
    return GRAFT_OK;
}

/* ---- forward front ends ---- */

graft_status graft_nn_max_pool2d(graft_tensor **out, graft_tensor **indices, graft_tensor *input,
                                 const graft_pool_opts *o) {
    if (GRAFT_AG_ACTIVE(input->autograd)) return graft_ag_max_pool2d(out, indices, input, o);
    pl_geom g;
    *out = NULL;
    if (indices) *indices = NULL;
    graft_status st = pl_geom_window(&g, input, o, true, "max_pool2d");
    if (st) return st;
    return pl_forward(out, indices, input, &g, PL_MAX);
}

graft_status graft_nn_avg_pool2d(graft_tensor **out, graft_tensor *input, const graft_pool_opts *o) {
    if (GRAFT_AG_ACTIVE(input->autograd)) return graft_ag_avg_pool2d(out, input, o);
    pl_geom g;
    *out = NULL;
    graft_status st = pl_geom_window(&g, input, o, false, "avg_pool2d");
    if (st) return st;
    return pl_forward(out, NULL, input, &g, PL_AVG);
}

static graft_status pl_geom_adaptive(pl_geom *g, const graft_tensor *t, const int64_t osize[2], const char *op) {
    graft_status st = pl_check_input(t, op);
    if (st) return st;
    if (osize[0] < 1 || osize[1] < 1)
        return graft_error(GRAFT_EINVAL, "%s: output_size must be positive, got [%lld, %lld]", op, (long long)osize[0],
                           (long long)osize[1]);
    pl_geom_init(g, t->ndim, t->shape, osize[0], osize[1]);
    return GRAFT_OK;
}

graft_status graft_nn_adaptive_avg_pool2d(graft_tensor **out, graft_tensor *input, const int64_t osize[2]) {
    if (GRAFT_AG_ACTIVE(input->autograd)) return graft_ag_adaptive_avg_pool2d(out, input, osize);
    pl_geom g;
    *out = NULL;
    graft_status st = pl_geom_adaptive(&g, input, osize, "adaptive_avg_pool2d");
    if (st) return st;
    return pl_forward(out, NULL, input, &g, PL_ADAPTIVE_AVG);
}

graft_status graft_nn_adaptive_max_pool2d(graft_tensor **out, graft_tensor **indices, graft_tensor *input,
                                          const int64_t osize[2]) {
    if (GRAFT_AG_ACTIVE(input->autograd)) return graft_ag_adaptive_max_pool2d(out, indices, input, osize);
    pl_geom g;
    *out = NULL;
    if (indices) *indices = NULL;
    graft_status st = pl_geom_adaptive(&g, input, osize, "adaptive_max_pool2d");
    if (st) return st;
    return pl_forward(out, indices, input, &g, PL_ADAPTIVE_MAX);
}

/* ---- gradients ---- */

/* Runs a backward loop: gin (input's shape, float dtype of grad) from grad. */
static graft_status pl_backward(graft_tensor **gin, graft_tensor *grad, graft_tensor *indices, const pl_geom *g,
                                int in_ndim, const int64_t *in_shape, pl_kind kind, const char *op) {
    char a[SHAPE_BUF], b[SHAPE_BUF];
    *gin = NULL;
    bool same = grad->ndim == g->out_ndim;
    for (int d = 0; same && d < g->out_ndim; d++) same = grad->shape[d] == g->out_shape[d];
    if (!same)
        return graft_error(GRAFT_ESHAPE, "%s backward: expected a gradient of shape %s, got %s", op,
                           graft_shape_str(g->out_ndim, g->out_shape, a, sizeof a),
                           graft_shape_str(grad->ndim, grad->shape, b, sizeof b));
    graft_dtype cdt = pl_compute(grad->dtype);
    graft_device dev = graft_tensor_device(grad);
    graft_tensor *gy = NULL, *ix = NULL, *gx = NULL;
    graft_status st;
    if (indices && !graft_device_eq(dev, graft_tensor_device(indices))) {
        char da[16], db[16];
        return graft_error(GRAFT_EDEVICE, "%s backward: expected all tensors to be on the same device, but found %s and %s",
                           op, graft_device_str(dev, da), graft_device_str(graft_tensor_device(indices), db));
    }
    if ((st = pl_ready(&gy, grad, cdt)) || (st = graft_tensor_empty(&gx, in_ndim, in_shape, cdt, dev))) goto done;
    if (dev.type == GRAFT_CUDA) {
        graft_cuda_pool_geom cg = pl_cuda_geom(g);
        if (!indices || !(st = graft_tensor_contiguous(&ix, indices)))
            st = graft_cuda_pool_backward(gx, gy, ix, &cg, pl_cuda_kind(kind));
        goto done;
    }
    void *gyd = graft_tensor_data(gy), *gxd = graft_tensor_data(gx);
    bool f = cdt == GRAFT_F32;
    switch (kind) {
    case PL_MAX:
    case PL_ADAPTIVE_MAX:
        if ((st = graft_tensor_contiguous(&ix, indices))) goto done;
#if defined(__AVX512F__)
        if (f && kind == PL_MAX && maxpool2_ok(g)) {
            maxpool2_bwd_f32(g, gyd, graft_tensor_data(ix), gxd);
            break;
        }
#endif
        if (f) maxpool_bwd_f32(g, gyd, graft_tensor_data(ix), gxd);
        else maxpool_bwd_f64(g, gyd, graft_tensor_data(ix), gxd);
        break;
    case PL_AVG: f ? avgpool_bwd_f32(g, gyd, gxd) : avgpool_bwd_f64(g, gyd, gxd); break;
    case PL_ADAPTIVE_AVG: f ? adaptive_avg_bwd_f32(g, gyd, gxd) : adaptive_avg_bwd_f64(g, gyd, gxd); break;
    }
done:
    graft_tensor_release(gy);
    graft_tensor_release(ix);
    if (st) graft_tensor_release(gx);
    else *gin = gx;
    return st;
}

graft_status graft_nn_max_pool2d_backward(graft_tensor **gin, graft_tensor *grad, graft_tensor *indices, int in_ndim,
                                          const int64_t *in_shape, const graft_pool_opts *o, const char *op) {
    char a[SHAPE_BUF], b[SHAPE_BUF];
    *gin = NULL;
    if (indices->dtype != GRAFT_I64 || indices->ndim != grad->ndim)
        return graft_error(GRAFT_EINVAL, "%s backward: indices %s %s do not match the gradient %s", op,
                           graft_dtype_name(indices->dtype), graft_shape_str(indices->ndim, indices->shape, a, sizeof a),
                           graft_shape_str(grad->ndim, grad->shape, b, sizeof b));
    pl_geom g;
    pl_geom_init(&g, in_ndim, in_shape, indices->shape[indices->ndim - 2], indices->shape[indices->ndim - 1]);
    if (o) { /* the window, for the fast paths */
        g.kh = o->kernel[0];
        g.kw = o->kernel[1];
        g.sh = o->stride[0];
        g.sw = o->stride[1];
        g.ph = o->padding[0];
        g.pw = o->padding[1];
        g.dh = o->dilation[0];
        g.dw = o->dilation[1];
    }
    return pl_backward(gin, grad, indices, &g, in_ndim, in_shape, o ? PL_MAX : PL_ADAPTIVE_MAX, op);
}

/* The window geometry of an input shape (the forward already checked it). */
static void pl_geom_from_shape(pl_geom *g, int in_ndim, const int64_t *in_shape, const graft_pool_opts *o) {
    int64_t os[2];
    for (int d = 0; d < 2; d++)
        os[d] = pl_out_size(in_shape[in_ndim - 2 + d], o->kernel[d], o->padding[d], o->stride[d], 1, o->ceil_mode);
    pl_geom_init(g, in_ndim, in_shape, os[0], os[1]);
    g->kh = o->kernel[0];
    g->kw = o->kernel[1];
    g->sh = o->stride[0];
    g->sw = o->stride[1];
    g->ph = o->padding[0];
    g->pw = o->padding[1];
    g->dh = g->dw = 1;
    g->count_include_pad = o->count_include_pad;
    g->divisor = o->divisor_override;
}

graft_status graft_nn_avg_pool2d_backward(graft_tensor **gin, graft_tensor *grad, int in_ndim, const int64_t *in_shape,
                                          const graft_pool_opts *o) {
    pl_geom g;
    pl_geom_from_shape(&g, in_ndim, in_shape, o);
    return pl_backward(gin, grad, NULL, &g, in_ndim, in_shape, PL_AVG, "avg_pool2d");
}

graft_status graft_nn_adaptive_avg_pool2d_backward(graft_tensor **gin, graft_tensor *grad, int in_ndim,
                                                   const int64_t *in_shape) {
    pl_geom g;
    *gin = NULL;
    if (grad->ndim != in_ndim)
        return graft_error(GRAFT_ESHAPE, "adaptive_avg_pool2d backward: a %d-D gradient for a %d-D input", grad->ndim,
                           in_ndim);
    pl_geom_init(&g, in_ndim, in_shape, grad->shape[grad->ndim - 2], grad->shape[grad->ndim - 1]);
    return pl_backward(gin, grad, NULL, &g, in_ndim, in_shape, PL_ADAPTIVE_AVG, "adaptive_avg_pool2d");
}
