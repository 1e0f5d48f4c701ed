/* graft CPU convolutions: im2col / col2im + BLAS GEMM in column blocks (see conv_cpu.h),
 * with two special kernels: Winograd F(2x2, 3x3) for 3x3 stride-1 float32 convs
 * (conv_winograd.c) and direct loops for depthwise convs.
 *
 * The output columns of the whole batch (N images x OH*OW pixels) are cut into blocks:
 * whole output rows of one image when images are large, several whole images when they
 * are small (so a GEMM is never too narrow). Threads take contiguous runs of blocks,
 * each with its own im2col buffer; BLAS runs single-threaded inside the parallel
 * region. The weight gradient sums into one partial per thread, added up at the end.
 * Col2im writes whole images per thread, so no two threads ever add into one pixel.
 */
#include "cpu/conv_cpu.h"

#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "tensor/alloc.h"
#include "tensor/iter.h"

/* im2col block target (bytes) and the narrowest GEMM worth making from one image. */
#define CV_COL_BYTES (1 << 20)
#define CV_MIN_COLS 96

static int cv_thread(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* ---- im2col / col2im, per dtype ---- */

/* The q in [0, cnt) with 0 <= i0 + q * s < n: [*lo, *hi). */
static inline void cv_range(int64_t i0, int64_t s, int64_t n, int64_t cnt, int64_t *lo, int64_t *hi) {
    int64_t a = i0 >= 0 ? 0 : (-i0 + s - 1) / s;
    int64_t b = n - i0 > 0 ? (n - i0 + s - 1) / s : 0;
    if (a > cnt) a = cnt;
    if (b > cnt) b = cnt;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* ---- short strided row copies: the inner loops of im2col / col2im ----
 * Rows are short (often 7 to 56 elements), so a loop the compiler vectorises spends
 * most of its time in the scalar remainder: with AVX-512, one masked load and store per
 * 16 floats instead; stride 2 (strided convs) gathers with one two-register permute. */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline __mmask16 cv_mask16(int64_t n) { return (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1); }
#endif

/* d[q] = 0 for q < n */
static inline void cv_zero_f32(float *d, int64_t n) {
#if defined(__AVX512F__)
    for (int64_t q = 0; q < n; q += 16) _mm512_mask_storeu_ps(d + q, cv_mask16(n - q), _mm512_setzero_ps());
#else
    for (int64_t q = 0; q < n; q++) d[q] = 0;
#endif
}

/* d[q] = s[q * st] for q < n */
static inline void cv_copy_f32(float *d, const float *s, int64_t n, int64_t st) {
#if defined(__AVX512F__)
    if (st == 1) {
        int64_t q = 0;
        for (; q + 16 <= n; q += 16) _mm512_storeu_ps(d + q, _mm512_loadu_ps(s + q));
        if (q < n) {
            __mmask16 m = cv_mask16(n - q);
            _mm512_mask_storeu_ps(d + q, m, _mm512_maskz_loadu_ps(m, s + q));
        }
        return;
    }
    if (st == 2) {
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        for (int64_t q = 0; q < n; q += 16) {
            int64_t k = n - q < 16 ? n - q : 16, span = 2 * k - 1; /* source elements read: s[2q .. 2q+span) */
            __m512 lo = _mm512_maskz_loadu_ps(cv_mask16(span), s + 2 * q);
            __m512 hi = _mm512_maskz_loadu_ps(cv_mask16(span > 16 ? span - 16 : 0), s + 2 * q + 16);
            _mm512_mask_storeu_ps(d + q, cv_mask16(k), _mm512_permutex2var_ps(lo, even, hi));
        }
        return;
    }
#endif
    for (int64_t q = 0; q < n; q++) d[q] = s[q * st];
}

/* d[q * st] += s[q] for q < n. Neighbouring taps add into overlapping stretches of
 * one row a few rows apart, and a load that overlaps a pending masked store stalls
 * (measured 3x slower): unmasked 8- and 4-wide steps and a scalar tail instead. */
static inline void cv_addto_f32(float *d, const float *s, int64_t n, int64_t st) {
#if defined(__AVX512F__)
    if (st == 1) {
        int64_t q = 0;
        for (; q + 8 <= n; q += 8) _mm256_storeu_ps(d + q, _mm256_add_ps(_mm256_loadu_ps(d + q), _mm256_loadu_ps(s + q)));
        if (q + 4 <= n) {
            _mm_storeu_ps(d + q, _mm_add_ps(_mm_loadu_ps(d + q), _mm_loadu_ps(s + q)));
            q += 4;
        }
        for (; q < n; q++) d[q] += s[q];
        return;
    }
#endif
    for (int64_t q = 0; q < n; q++) d[q * st] += s[q];
}

static inline void cv_zero_f64(double *d, int64_t n) {
    for (int64_t q = 0; q < n; q++) d[q] = 0;
}
static inline void cv_copy_f64(double *d, const double *s, int64_t n, int64_t st) {
    if (st == 1) memcpy(d, s, sizeof(double) * (size_t)n);
    else
        for (int64_t q = 0; q < n; q++) d[q] = s[q * st];
}
static inline void cv_addto_f64(double *d, const double *s, int64_t n, int64_t st) {
    for (int64_t q = 0; q < n; q++) d[q * st] += s[q];
}

/* col[(c, i, j), q] (row stride ld) <- x[c, oh*sh - ph + i*dh, ow*sw - pw + j*dw] for the
 * output pixels p0 .. p0+pn-1 (q = p - p0), zero where the window leaves the image.
 * x is [Cg, H, W]. The columns ow whose tap j lands inside the image are one range
 * [lo, hi) for every row, found once per (c, i, j): the row loop has no division.
 * col2im is the adjoint: x[...] += col[...]. */
#define CV_COLS(SUF, T)                                                                             \
    static void im2col_##SUF(const graft_conv_geom *g, int64_t Cg, const T *x, int64_t p0, int64_t pn, \
                             T *col, int64_t ld) {                                                  \
        const int64_t H = g->H, W = g->W, OW = g->OW, sw = g->sw;                                   \
        for (int64_t c = 0; c < Cg; c++)                                                            \
            for (int64_t i = 0; i < g->kh; i++)                                                     \
                for (int64_t j = 0; j < g->kw; j++) {                                               \
                    T *dst = col + ((c * g->kh + i) * g->kw + j) * ld;                              \
                    const T *xc = x + c * H * W;                                                    \
                    int64_t lo, hi, off = j * g->dw - g->pw;                                        \
                    cv_range(off, sw, W, OW, &lo, &hi);                                             \
                    int64_t oh = p0 / OW, ow = p0 % OW, left = pn;                                  \
                    while (left > 0) {                                                              \
                        int64_t cnt = OW - ow < left ? OW - ow : left;                              \
                        int64_t ih = oh * g->sh - g->ph + i * g->dh;                                \
                        if (ih < 0 || ih >= H) {                                                    \
                            cv_zero_##SUF(dst, cnt);                                                \
                        } else {                                                                    \
                            int64_t a = lo - ow, b = hi - ow;                                       \
                            a = a < 0 ? 0 : a > cnt ? cnt : a;                                      \
                            b = b < a ? a : b > cnt ? cnt : b;                                      \
                            if (a > 0) cv_zero_##SUF(dst, a);                                       \
                            if (b > a)                                                              \
                                cv_copy_##SUF(dst + a, xc + ih * W + (ow + a) * sw + off, b - a, sw);  \
                            if (cnt > b) cv_zero_##SUF(dst + b, cnt - b);                           \
                        }                                                                           \
                        dst += cnt;                                                                 \
                        left -= cnt;                                                                \
                        ow = 0;                                                                     \
                        oh++;                                                                       \
                    }                                                                               \
                }                                                                                   \
    }                                                                                               \
    static void col2im_##SUF(const graft_conv_geom *g, int64_t Cg, T *x, int64_t p0, int64_t pn,   \
                             const T *col, int64_t ld) {                                            \
        const int64_t H = g->H, W = g->W, OW = g->OW, sw = g->sw;                                   \
        /* taps outermost: the next add into a row comes Cg*OH rows later, not OH */               \
        for (int64_t i = 0; i < g->kh; i++)                                                         \
            for (int64_t j = 0; j < g->kw; j++)                                                     \
                for (int64_t c = 0; c < Cg; c++) {                                                  \
                    const T *src = col + ((c * g->kh + i) * g->kw + j) * ld;                        \
                    T *xc = x + c * H * W;                                                          \
                    int64_t lo, hi, off = j * g->dw - g->pw;                                        \
                    cv_range(off, sw, W, OW, &lo, &hi);                                             \
                    int64_t oh = p0 / OW, ow = p0 % OW, left = pn;                                  \
                    while (left > 0) {                                                              \
                        int64_t cnt = OW - ow < left ? OW - ow : left;                              \
                        int64_t ih = oh * g->sh - g->ph + i * g->dh;                                \
                        if (ih >= 0 && ih < H) {                                                    \
                            int64_t a = lo - ow, b = hi - ow;                                       \
                            a = a < 0 ? 0 : a > cnt ? cnt : a;                                      \
                            b = b < a ? a : b > cnt ? cnt : b;                                      \
                            if (b > a)                                                              \
                                cv_addto_##SUF(xc + ih * W + (ow + a) * sw + off, src + a, b - a, sw); \
                        }                                                                           \
                        src += cnt;                                                                 \
                        left -= cnt;                                                                \
                        ow = 0;                                                                     \
                        oh++;                                                                       \
                    }                                                                               \
                }                                                                                   \
    }                                                                                               \
    /* rows [m, n] with row stride ld: r[o, q] += b[o] */                                           \
    static void addbias_##SUF(T *r, const T *b, int64_t m, int64_t n, int64_t ld) {                 \
        for (int64_t o = 0; o < m; o++) {                                                           \
            T v = b[o], *x = r + o * ld;                                                            \
            _Pragma("omp simd") for (int64_t q = 0; q < n; q++) x[q] += v;                          \
        }                                                                                           \
    }

CV_COLS(f32, float)
CV_COLS(f64, double)

static void cv_im2col(const graft_conv_geom *g, int64_t Cg, const char *x, int64_t p0, int64_t pn, char *col,
                      int64_t ld) {
    if (g->dtype == GRAFT_F32) im2col_f32(g, Cg, (const float *)x, p0, pn, (float *)col, ld);
    else im2col_f64(g, Cg, (const double *)x, p0, pn, (double *)col, ld);
}

#if defined(__AVX512F__)
/* col2im for stride 1 over whole output rows [oh0, oh1), as a gather: each 16-wide
 * stretch of an image row sums its taps in a register (masked loads of the column
 * rows) and is added to x once, instead of kh*kw read-modify-writes of short stretches
 * (which stall on the loads that overlap the previous stores). */
static void col2im_rows_f32(const graft_conv_geom *g, int64_t Cg, float *x, int64_t oh0, int64_t oh1, const float *col,
                            int64_t ld) {
    const int64_t H = g->H, W = g->W, OW = g->OW, kh = g->kh, kw = g->kw;
    /* image rows the block's output rows reach */
    int64_t r0 = oh0 - g->ph, r1 = oh1 - 1 - g->ph + (kh - 1) * g->dh + 1;
    if (r0 < 0) r0 = 0;
    if (r1 > H) r1 = H;
    for (int64_t c = 0; c < Cg; c++)
        for (int64_t ih = r0; ih < r1; ih++)
            for (int64_t t0 = 0; t0 < W; t0 += 16) {
                int64_t tn = W - t0 < 16 ? W - t0 : 16;
                __m512 acc = _mm512_setzero_ps();
                for (int64_t i = 0; i < kh; i++) {
                    int64_t oh = ih + g->ph - i * g->dh;
                    if (oh < oh0 || oh >= oh1) continue;
                    const float *rowbase = col + ((c * kh + i) * kw) * ld + (oh - oh0) * OW;
                    for (int64_t j = 0; j < kw; j++) {
                        int64_t sh = j * g->dw - g->pw;   /* image column t reads output column t - sh */
                        int64_t lo = sh - t0, hi = OW + sh - t0;
                        if (lo < 0) lo = 0;
                        if (hi > tn) hi = tn;
                        if (hi <= lo) continue;
                        __mmask16 m = (__mmask16)(cv_mask16(hi) & ~cv_mask16(lo));
                        const float *src = rowbase + j * ld + (t0 - sh);
                        acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, src));
                    }
                }
                float *dst = x + (c * H + ih) * W + t0;
                __mmask16 m = cv_mask16(tn);
                _mm512_mask_storeu_ps(dst, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst), acc));
            }
}
#endif

/* x[Cg, H, W] += col2im of the columns p0 .. p0+pn-1 (the gather for narrow images: measured
 * 2x faster at W 13-14, equal at 28, slower from 56 on). */
static void cv_col2im(const graft_conv_geom *g, int64_t Cg, char *x, int64_t p0, int64_t pn, const char *col,
                      int64_t ld) {
#if defined(__AVX512F__)
    if (g->dtype == GRAFT_F32 && g->sh == 1 && g->sw == 1 && p0 % g->OW == 0 && g->W <= 32 &&
        (pn % g->OW == 0 || p0 + pn == g->OH * g->OW)) {
        col2im_rows_f32(g, Cg, (float *)x, p0 / g->OW, (p0 + pn + g->OW - 1) / g->OW, (const float *)col, ld);
        return;
    }
#endif
    if (g->dtype == GRAFT_F32) col2im_f32(g, Cg, (float *)x, p0, pn, (const float *)col, ld);
    else col2im_f64(g, Cg, (double *)x, p0, pn, (const double *)col, ld);
}

static void cv_addbias(graft_dtype dt, char *r, const char *b, int64_t m, int64_t n, int64_t ld) {
    if (dt == GRAFT_F32) addbias_f32((float *)r, (const float *)b, m, n, ld);
    else addbias_f64((double *)r, (const double *)b, m, n, ld);
}

/* C [m, n] (row stride ldc) = op(A) op(B) + beta C, row-major. */
static void cv_gemm(graft_dtype dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const char *a, int64_t lda,
                    const char *b, int64_t ldb, double beta, char *c, int64_t ldc) {
    enum CBLAS_TRANSPOSE A = ta ? CblasTrans : CblasNoTrans, B = tb ? CblasTrans : CblasNoTrans;
    if (dt == GRAFT_F32)
        cblas_sgemm(CblasRowMajor, A, B, (int)m, (int)n, (int)k, 1.0f, (const float *)a, (int)lda,
                    (const float *)b, (int)ldb, (float)beta, (float *)c, (int)ldc);
    else
        cblas_dgemm(CblasRowMajor, A, B, (int)m, (int)n, (int)k, 1.0, (const double *)a, (int)lda,
                    (const double *)b, (int)ldb, beta, (double *)c, (int)ldc);
}

/* ---- the plan: block grid and thread split ---- */

typedef struct {
    const graft_conv_geom *g;
    size_t esz;
    int64_t Cg, Og, K, P, HW;
    bool pointwise;             /* 1x1, stride 1, no padding: the image is its own im2col */
    bool per_image;             /* blocks are slices of one image (else runs of k images) */
    int64_t nb, qb, k, NB;      /* blocks per image, block width, images per block, blocks */
    int T;                      /* threads */
} cv_plan;

typedef struct {
    int64_t n0, nimg;           /* images */
    int64_t p0, pn;             /* columns of each image */
    int64_t width;              /* nimg * pn */
} cv_block;

static void cv_block_at(const cv_plan *pl, int64_t b, cv_block *blk) {
    if (pl->per_image) {
        blk->n0 = b / pl->nb;
        blk->nimg = 1;
        blk->p0 = (b % pl->nb) * pl->qb;
        blk->pn = pl->P - blk->p0 < pl->qb ? pl->P - blk->p0 : pl->qb;
    } else {
        blk->n0 = b * pl->k;
        blk->nimg = pl->g->N - blk->n0 < pl->k ? pl->g->N - blk->n0 : pl->k;
        blk->p0 = 0;
        blk->pn = pl->P;
    }
    blk->width = blk->nimg * blk->pn;
}

/* The block grid. `balance`: cut images further so the blocks split evenly over the
 * threads (for ops whose threads may share an image). */
static graft_status cv_plan_make(cv_plan *pl, const graft_conv_geom *g, bool balance, const char *op) {
    memset(pl, 0, sizeof *pl);
    pl->g = g;
    pl->esz = graft_dtype_size(g->dtype);
    pl->Cg = g->C / g->G;
    pl->Og = g->O / g->G;
    pl->K = pl->Cg * g->kh * g->kw;
    pl->P = g->OH * g->OW;
    pl->HW = g->H * g->W;
    pl->pointwise = g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0 &&
                    g->OH == g->H && g->OW == g->W;
    if (pl->K > INT_MAX || pl->P > INT_MAX || pl->HW > INT_MAX || pl->Og > INT_MAX || g->N * pl->P > INT_MAX)
        return graft_error(GRAFT_EINVAL, "%s: sizes exceed what BLAS accepts (%d)", op, INT_MAX);
    double flops = 2.0 * (double)g->N * (double)pl->P * (double)g->O * (double)pl->K;
    pl->T = graft_should_parallelize((int64_t)(flops / 64)) ? graft_get_num_threads() : 1;
    int64_t target = CV_COL_BYTES / (pl->K * (int64_t)pl->esz);
    if (target < 32) target = 32;
    if (pl->P >= target || pl->P >= CV_MIN_COLS || g->N == 1) {
        pl->per_image = true;
        pl->nb = (pl->P + target - 1) / target;
        if (balance && pl->T > 1 && g->N * pl->nb < 4 * pl->T && (g->N * pl->nb) % pl->T != 0 &&
            pl->P / (pl->nb * pl->T) >= 32)
            pl->nb *= pl->T;
        /* whole output rows per block when rows are not too long (col2im's gather) */
        pl->qb = (pl->P + pl->nb - 1) / pl->nb;
        if (g->OW <= pl->qb) pl->qb = (pl->qb + g->OW - 1) / g->OW * g->OW;
        pl->nb = (pl->P + pl->qb - 1) / pl->qb;
        pl->NB = g->N * pl->nb;
        pl->k = 1;
    } else {
        int64_t k = (CV_MIN_COLS + pl->P - 1) / pl->P, kmax = target / pl->P, share = (g->N + pl->T - 1) / pl->T;
        if (k > kmax) k = kmax;
        if (k > share) k = share;
        if (k < 1) k = 1;
        pl->k = k;
        pl->qb = k * pl->P;
        pl->NB = (g->N + k - 1) / k;
        pl->nb = 1;
    }
    return GRAFT_OK;
}

/* Thread t's blocks [*b0, *b1): an even split, or (whole_images) one that never
 * splits an image between threads. */
static void cv_split(const cv_plan *pl, int t, bool whole_images, int64_t *b0, int64_t *b1) {
    int64_t T = pl->T;
    if (whole_images && pl->per_image) {
        int64_t N = pl->g->N;
        *b0 = (t * N / T) * pl->nb;
        *b1 = ((t + 1) * N / T) * pl->nb;
    } else {
        *b0 = t * pl->NB / T;
        *b1 = (t + 1) * pl->NB / T;
    }
}

/* small[n, g*Og + o, p] <-> buf[o, off + q] for the block's images (gather: small to buf). */
static void cv_gather(const cv_plan *pl, const cv_block *blk, int64_t grp, char *buf, const char *small, bool gather) {
    const graft_conv_geom *g = pl->g;
    size_t es = pl->esz, row = es * (size_t)blk->pn;
    for (int64_t i = 0; i < blk->nimg; i++) {
        int64_t n = blk->n0 + i;
        for (int64_t o = 0; o < pl->Og; o++) {
            char *b = buf + ((size_t)(o * blk->width + i * blk->pn)) * es;
            char *s = (char *)small + ((size_t)((n * g->O + grp * pl->Og + o) * pl->P + blk->p0)) * es;
            if (gather) memcpy(b, s, row);
            else memcpy(s, b, row);
        }
    }
}

#if defined(__AVX512F__)
/* The block's im2col for float32 images narrower than a register (OW < 16: the late
 * layers of a ResNet on small images), by gathers: a table of every tap's source offset
 * for the block's columns (images and pixels together, -1 outside the image) is made
 * once, then each (channel, tap) row is 16-lane gathers. The row-by-row copy spends
 * most of its time on rows of 2 to 8 elements. false: not applicable (or no memory). */
static bool cv_cols_gather_f32(const cv_plan *pl, const cv_block *blk, int64_t grp, const char *big, float *col) {
    const graft_conv_geom *g = pl->g;
    int64_t taps = g->kh * g->kw, width = blk->width, wpad = (width + 15) & ~(int64_t)15;
    if (blk->nimg * g->C * pl->HW >= INT32_MAX) return false;
    int32_t *tab = malloc(sizeof(int32_t) * (size_t)(taps * wpad));
    if (!tab) return false;
    for (int64_t i = 0; i < g->kh; i++)
        for (int64_t j = 0; j < g->kw; j++) {
            int32_t *t = tab + (i * g->kw + j) * wpad;
            for (int64_t q = 0; q < wpad; q++) {
                int32_t v = -1;
                if (q < width) {
                    int64_t img = q / blk->pn, p = blk->p0 + q % blk->pn;
                    int64_t ih = (p / g->OW) * g->sh - g->ph + i * g->dh, iw = (p % g->OW) * g->sw - g->pw + j * g->dw;
                    if (ih >= 0 && ih < g->H && iw >= 0 && iw < g->W) v = (int32_t)(img * g->C * pl->HW + ih * g->W + iw);
                }
                t[q] = v;
            }
        }
    const float *xb = (const float *)big + (blk->n0 * g->C + grp * pl->Cg) * pl->HW;
    const __m512i zero = _mm512_setzero_si512();
    for (int64_t c = 0; c < pl->Cg; c++) {
        const float *xc = xb + c * pl->HW;
        for (int64_t t = 0; t < taps; t++) {
            const int32_t *tt = tab + t * wpad;
            float *dst = col + (c * taps + t) * width;
            for (int64_t q = 0; q < width; q += 16) {
                __m512i idx = _mm512_loadu_si512(tt + q);
                __mmask16 valid = _mm512_cmpge_epi32_mask(idx, zero);
                __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, idx, xc, 4);
                if (q + 16 <= width) _mm512_storeu_ps(dst + q, v);
                else _mm512_mask_storeu_ps(dst + q, cv_mask16(width - q), v);
            }
        }
    }
    free(tab);
    return true;
}
#endif

/* The block's im2col of group grp into col [K, width]; returns the matrix to use and
 * its row stride (the image itself for a pointwise conv over one image). */
static const char *cv_cols(const cv_plan *pl, const cv_block *blk, int64_t grp, const char *big, char *col,
                           int64_t *ld) {
    const graft_conv_geom *g = pl->g;
    size_t es = pl->esz;
    if (pl->pointwise && blk->nimg == 1) {
        *ld = pl->HW;
        return big + ((size_t)((blk->n0 * g->C + grp * pl->Cg) * pl->HW + blk->p0)) * es;
    }
    *ld = blk->width;
#if defined(__AVX512F__)
    if (g->dtype == GRAFT_F32 && g->OW < 16 && cv_cols_gather_f32(pl, blk, grp, big, (float *)col)) return col;
#endif
    for (int64_t i = 0; i < blk->nimg; i++) {
        const char *x = big + ((size_t)(((blk->n0 + i) * g->C + grp * pl->Cg) * pl->HW)) * es;
        cv_im2col(g, pl->Cg, x, blk->p0, blk->pn, col + (size_t)(i * blk->pn) * es, blk->width);
    }
    *ld = blk->width;
    return col;
}

/* Per-thread scratch: an im2col buffer [K, qb] and a small-side buffer [Og, qb]. */
static size_t cv_scratch_bytes(const cv_plan *pl) {
    size_t b = (size_t)(pl->K + pl->Og) * (size_t)pl->qb * pl->esz;
    return (b + 63) & ~(size_t)63;
}

/* Whether the Winograd kernels take this convolution (GRAFT_CONV_WINOGRAD=0 turns them
 * off, for comparisons). */
static bool cv_winograd(const graft_conv_geom *g) {
    static int enabled = -1;
    if (enabled < 0) {
        const char *e = getenv("GRAFT_CONV_WINOGRAD");
        enabled = !(e && e[0] == '0');
    }
    return enabled && graft_cpu_winograd_ok(g);
}

/* ---- depthwise convolutions (one input and one output channel per group) ----
 * A GEMM per group would have one row: direct loops instead, one image plane per
 * iteration (planes in parallel), each tap a stretch of a row the compiler vectorises
 * when the stride is 1. */

#define CV_DEPTHWISE(SUF, T)                                                                         \
    static void dw_small_##SUF(const graft_conv_geom *g, const T *x, const T *w, const T *bias, T *y) { \
        const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW, C = g->C, sw = g->sw;              \
        bool par = graft_should_parallelize(g->N * C * OH * OW * g->kh * g->kw);                    \
        (void)par;                                                                                   \
        _Pragma("omp parallel for schedule(static) if(par)")                                         \
        for (int64_t pc = 0; pc < g->N * C; pc++) {                                                  \
            int64_t c = pc % C;                                                                      \
            const T *xp = x + pc * H * W, *wc = w + c * g->kh * g->kw;                               \
            T *yp = y + pc * OH * OW;                                                                \
            for (int64_t oh = 0; oh < OH; oh++) {                                                    \
                T *yr = yp + oh * OW;                                                                \
                T b0 = bias ? bias[c] : (T)0;                                                        \
                _Pragma("omp simd") for (int64_t q = 0; q < OW; q++) yr[q] = b0;                     \
                for (int64_t i = 0; i < g->kh; i++) {                                                \
                    int64_t ih = oh * g->sh - g->ph + i * g->dh;                                     \
                    if (ih < 0 || ih >= H) continue;                                                 \
                    const T *xr = xp + ih * W;                                                       \
                    for (int64_t j = 0; j < g->kw; j++) {                                            \
                        int64_t off = j * g->dw - g->pw, lo, hi;                                     \
                        cv_range(off, sw, W, OW, &lo, &hi);                                          \
                        T wv = wc[i * g->kw + j];                                                    \
                        if (sw == 1)                                                                 \
                            _Pragma("omp simd") for (int64_t q = lo; q < hi; q++) yr[q] += wv * xr[q + off]; \
                        else                                                                         \
                            for (int64_t q = lo; q < hi; q++) yr[q] += wv * xr[q * sw + off];        \
                    }                                                                                \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
    }                                                                                                \
    static void dw_big_##SUF(const graft_conv_geom *g, const T *y, const T *w, const T *bias, T *x) { \
        const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW, C = g->C, sw = g->sw;              \
        bool par = graft_should_parallelize(g->N * C * OH * OW * g->kh * g->kw);                    \
        (void)par;                                                                                   \
        _Pragma("omp parallel for schedule(static) if(par)")                                         \
        for (int64_t pc = 0; pc < g->N * C; pc++) {                                                  \
            int64_t c = pc % C;                                                                      \
            const T *yp = y + pc * OH * OW, *wc = w + c * g->kh * g->kw;                             \
            T *xp = x + pc * H * W, b0 = bias ? bias[c] : (T)0;                                      \
            for (int64_t q = 0; q < H * W; q++) xp[q] = b0;                                          \
            for (int64_t oh = 0; oh < OH; oh++) {                                                    \
                const T *yr = yp + oh * OW;                                                          \
                for (int64_t i = 0; i < g->kh; i++) {                                                \
                    int64_t ih = oh * g->sh - g->ph + i * g->dh;                                     \
                    if (ih < 0 || ih >= H) continue;                                                 \
                    T *xr = xp + ih * W;                                                             \
                    for (int64_t j = 0; j < g->kw; j++) {                                            \
                        int64_t off = j * g->dw - g->pw, lo, hi;                                     \
                        cv_range(off, sw, W, OW, &lo, &hi);                                          \
                        T wv = wc[i * g->kw + j];                                                    \
                        if (sw == 1)                                                                 \
                            _Pragma("omp simd") for (int64_t q = lo; q < hi; q++) xr[q + off] += wv * yr[q]; \
                        else                                                                         \
                            for (int64_t q = lo; q < hi; q++) xr[q * sw + off] += wv * yr[q];        \
                    }                                                                                \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
    }                                                                                                \
    static void dw_weight_##SUF(const graft_conv_geom *g, const T *y, const T *x, T *dw) {           \
        const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW, C = g->C, sw = g->sw, KK = g->kh * g->kw; \
        bool par = graft_should_parallelize(g->N * C * OH * OW * KK) && C > 1;                       \
        (void)par;                                                                                   \
        _Pragma("omp parallel for schedule(static) if(par)")                                         \
        for (int64_t c = 0; c < C; c++) {                                                            \
            T *dc = dw + c * KK;                                                                     \
            for (int64_t k = 0; k < KK; k++) dc[k] = 0;                                              \
            for (int64_t n = 0; n < g->N; n++) {                                                     \
                const T *yp = y + (n * C + c) * OH * OW, *xp = x + (n * C + c) * H * W;              \
                for (int64_t oh = 0; oh < OH; oh++) {                                                \
                    const T *yr = yp + oh * OW;                                                      \
                    for (int64_t i = 0; i < g->kh; i++) {                                            \
                        int64_t ih = oh * g->sh - g->ph + i * g->dh;                                 \
                        if (ih < 0 || ih >= H) continue;                                             \
                        const T *xr = xp + ih * W;                                                   \
                        for (int64_t j = 0; j < g->kw; j++) {                                        \
                            int64_t off = j * g->dw - g->pw, lo, hi;                                 \
                            cv_range(off, sw, W, OW, &lo, &hi);                                      \
                            T acc = 0;                                                               \
                            if (sw == 1)                                                             \
                                _Pragma("omp simd reduction(+ : acc)")                               \
                                for (int64_t q = lo; q < hi; q++) acc += yr[q] * xr[q + off];        \
                            else                                                                     \
                                for (int64_t q = lo; q < hi; q++) acc += yr[q] * xr[q * sw + off];   \
                            dc[i * g->kw + j] += acc;                                                \
                        }                                                                            \
                    }                                                                                \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
    }

CV_DEPTHWISE(f32, float)
CV_DEPTHWISE(f64, double)

static bool cv_depthwise(const graft_conv_geom *g) { return g->G == g->C && g->G == g->O && g->G > 1; }

/* ---- small = conv(big, w) ---- */

static void cv_small_blocks(const cv_plan *pl, int64_t b0, int64_t b1, const char *big, const char *w,
                            const char *bias, char *small, char *scratch) {
    const graft_conv_geom *g = pl->g;
    size_t es = pl->esz;
    char *col = scratch, *tmp = scratch + (size_t)(pl->K * pl->qb) * es;
    for (int64_t b = b0; b < b1; b++) {
        cv_block blk;
        cv_block_at(pl, b, &blk);
        for (int64_t grp = 0; grp < g->G; grp++) {
            int64_t ldb;
            const char *B = cv_cols(pl, &blk, grp, big, col, &ldb);
            const char *A = w + (size_t)(grp * pl->Og * pl->K) * es;
            const char *bg = bias ? bias + (size_t)(grp * pl->Og) * es : NULL;
            if (blk.nimg == 1) {
                char *Cm = small + ((size_t)((blk.n0 * g->O + grp * pl->Og) * pl->P + blk.p0)) * es;
                cv_gemm(g->dtype, false, false, pl->Og, blk.width, pl->K, A, pl->K, B, ldb, 0.0, Cm, pl->P);
                if (bg) cv_addbias(g->dtype, Cm, bg, pl->Og, blk.width, pl->P);
            } else {
                cv_gemm(g->dtype, false, false, pl->Og, blk.width, pl->K, A, pl->K, B, ldb, 0.0, tmp, blk.width);
                if (bg) cv_addbias(g->dtype, tmp, bg, pl->Og, blk.width, blk.width);
                cv_gather(pl, &blk, grp, tmp, small, false);
            }
        }
    }
}

graft_status graft_cpu_conv_small(const graft_conv_geom *g, const void *big, const void *w, const void *bias,
                                  void *small, const char *op) {
    cv_plan pl;
    graft_status st = cv_plan_make(&pl, g, true, op);
    if (st || pl.NB == 0 || g->O == 0 || pl.P == 0) return st;
    if (cv_winograd(g)) return graft_cpu_winograd_small(g, big, w, bias, small, op);
    if (cv_depthwise(g)) {
        if (g->dtype == GRAFT_F32) dw_small_f32(g, big, w, bias, small);
        else dw_small_f64(g, big, w, bias, small);
        return GRAFT_OK;
    }
    size_t per = cv_scratch_bytes(&pl), actual;
    char *scratch = graft_alloc(per * (size_t)pl.T, &actual);
    if (!scratch) return graft_error(GRAFT_ENOMEM, "%s: out of memory for the im2col buffer", op);
    if (pl.T > 1) {
        #pragma omp parallel num_threads(pl.T)
        {
            int t = cv_thread();
            int64_t b0, b1;
            cv_split(&pl, t, false, &b0, &b1);
            cv_small_blocks(&pl, b0, b1, big, w, bias, small, scratch + per * (size_t)t);
        }
    } else {
        cv_small_blocks(&pl, 0, pl.NB, big, w, bias, small, scratch);
    }
    graft_free(scratch, actual);
    return GRAFT_OK;
}

/* ---- big = conv^T(small, w) ---- */

static void cv_big_blocks(const cv_plan *pl, int64_t b0, int64_t b1, const char *small, const char *w,
                          const char *bias, char *big, char *scratch) {
    const graft_conv_geom *g = pl->g;
    size_t es = pl->esz;
    char *col = scratch, *tmp = scratch + (size_t)(pl->K * pl->qb) * es;
    if (b0 >= b1) return;
    cv_block first, last;
    cv_block_at(pl, b0, &first);
    cv_block_at(pl, b1 - 1, &last);
    int64_t n0 = first.n0, n1 = last.n0 + last.nimg;
    /* a pointwise conv writes every pixel of its one-image blocks directly */
    bool direct = pl->pointwise && pl->per_image;
    if (!direct) memset(big + (size_t)(n0 * g->C * pl->HW) * es, 0, (size_t)((n1 - n0) * g->C * pl->HW) * es);
    for (int64_t b = b0; b < b1; b++) {
        cv_block blk;
        cv_block_at(pl, b, &blk);
        for (int64_t grp = 0; grp < g->G; grp++) {
            const char *A = w + (size_t)(grp * pl->Og * pl->K) * es;
            const char *B;
            int64_t ldb;
            if (blk.nimg == 1) {
                B = small + ((size_t)((blk.n0 * g->O + grp * pl->Og) * pl->P + blk.p0)) * es;
                ldb = pl->P;
            } else {
                cv_gather(pl, &blk, grp, tmp, small, true);
                B = tmp;
                ldb = blk.width;
            }
            if (direct) {
                char *Cm = big + ((size_t)((blk.n0 * g->C + grp * pl->Cg) * pl->HW + blk.p0)) * es;
                cv_gemm(g->dtype, true, false, pl->K, blk.width, pl->Og, A, pl->K, B, ldb, 0.0, Cm, pl->HW);
                continue;
            }
            cv_gemm(g->dtype, true, false, pl->K, blk.width, pl->Og, A, pl->K, B, ldb, 0.0, col, blk.width);
            for (int64_t i = 0; i < blk.nimg; i++) {
                char *x = big + ((size_t)(((blk.n0 + i) * g->C + grp * pl->Cg) * pl->HW)) * es;
                cv_col2im(g, pl->Cg, x, blk.p0, blk.pn, col + (size_t)(i * blk.pn) * es, blk.width);
            }
        }
    }
    if (bias)
        for (int64_t n = n0; n < n1; n++)
            cv_addbias(g->dtype, big + (size_t)(n * g->C * pl->HW) * es, bias, g->C, pl->HW, pl->HW);
}

graft_status graft_cpu_conv_big(const graft_conv_geom *g, const void *small, const void *w, const void *bias,
                                void *big, const char *op) {
    cv_plan pl;
    graft_status st = cv_plan_make(&pl, g, false, op);
    if (st || g->N == 0 || g->C == 0 || pl.HW == 0) return st;
    if (g->O == 0 || pl.P == 0) {
        /* nothing flows back: zeros (plus the bias) */
        memset(big, 0, (size_t)(g->N * g->C * pl.HW) * pl.esz);
        if (bias)
            for (int64_t n = 0; n < g->N; n++)
                cv_addbias(g->dtype, (char *)big + (size_t)(n * g->C * pl.HW) * pl.esz, bias, g->C, pl.HW, pl.HW);
        return GRAFT_OK;
    }
    if (cv_winograd(g)) return graft_cpu_winograd_big(g, small, w, bias, big, op);
    if (cv_depthwise(g)) {
        if (g->dtype == GRAFT_F32) dw_big_f32(g, small, w, bias, big);
        else dw_big_f64(g, small, w, bias, big);
        return GRAFT_OK;
    }
    /* threads own whole images; with fewer images than threads, BLAS threads instead */
    if (pl.per_image && g->N < pl.T) pl.T = 1;
    size_t per = cv_scratch_bytes(&pl), actual;
    char *scratch = graft_alloc(per * (size_t)pl.T, &actual);
    if (!scratch) return graft_error(GRAFT_ENOMEM, "%s: out of memory for the col2im buffer", op);
    if (pl.T > 1) {
        #pragma omp parallel num_threads(pl.T)
        {
            int t = cv_thread();
            int64_t b0, b1;
            cv_split(&pl, t, true, &b0, &b1);
            cv_big_blocks(&pl, b0, b1, small, w, bias, big, scratch + per * (size_t)t);
        }
    } else {
        cv_big_blocks(&pl, 0, pl.NB, small, w, bias, big, scratch);
    }
    graft_free(scratch, actual);
    return GRAFT_OK;
}

/* ---- dw = sum small x col(big)^T ---- */

static void cv_weight_blocks(const cv_plan *pl, int64_t b0, int64_t b1, const char *small, const char *big, char *dw,
                             char *scratch) {
    const graft_conv_geom *g = pl->g;
    size_t es = pl->esz;
    char *col = scratch, *tmp = scratch + (size_t)(pl->K * pl->qb) * es;
    memset(dw, 0, (size_t)(g->O * pl->K) * es);
    for (int64_t b = b0; b < b1; b++) {
        cv_block blk;
        cv_block_at(pl, b, &blk);
        for (int64_t grp = 0; grp < g->G; grp++) {
            int64_t ldb, lda;
            const char *B = cv_cols(pl, &blk, grp, big, col, &ldb), *A;
            if (blk.nimg == 1) {
                A = small + ((size_t)((blk.n0 * g->O + grp * pl->Og) * pl->P + blk.p0)) * es;
                lda = pl->P;
            } else {
                cv_gather(pl, &blk, grp, tmp, small, true);
                A = tmp;
                lda = blk.width;
            }
            char *Cm = dw + (size_t)(grp * pl->Og * pl->K) * es;
            cv_gemm(g->dtype, false, true, pl->Og, pl->K, blk.width, A, lda, B, ldb, 1.0, Cm, pl->K);
        }
    }
}

graft_status graft_cpu_conv_weight(const graft_conv_geom *g, const void *small, const void *big, void *dw,
                                   const char *op) {
    cv_plan pl;
    graft_status st = cv_plan_make(&pl, g, true, op);
    if (st) return st;
    int64_t wn = g->O * pl.K;
    if (wn == 0) return GRAFT_OK;
    if (pl.NB == 0 || pl.P == 0) {
        memset(dw, 0, (size_t)wn * pl.esz);
        return GRAFT_OK;
    }
    if (cv_winograd(g)) return graft_cpu_winograd_weight(g, small, big, dw, op);
    if (cv_depthwise(g)) {
        if (g->dtype == GRAFT_F32) dw_weight_f32(g, small, big, dw);
        else dw_weight_f64(g, small, big, dw);
        return GRAFT_OK;
    }
    if (pl.NB < pl.T) pl.T = (int)pl.NB;
    size_t per = cv_scratch_bytes(&pl), part = ((size_t)wn * pl.esz + 63) & ~(size_t)63, actual;
    char *scratch = graft_alloc((per + part) * (size_t)pl.T, &actual);
    if (!scratch) return graft_error(GRAFT_ENOMEM, "%s: out of memory for the im2col buffer", op);
    char *parts = scratch + per * (size_t)pl.T;  /* thread t > 0 sums into parts[t - 1] */
    if (pl.T > 1) {
        #pragma omp parallel num_threads(pl.T)
        {
            int t = cv_thread();
            int64_t b0, b1;
            cv_split(&pl, t, false, &b0, &b1);
            char *dst = t == 0 ? (char *)dw : parts + part * (size_t)(t - 1);
            cv_weight_blocks(&pl, b0, b1, small, big, dst, scratch + per * (size_t)t);
            /* then every thread adds up its slice of the partials */
            #pragma omp barrier
            int64_t i0 = t * wn / pl.T, i1 = (t + 1) * wn / pl.T;
            for (int u = 1; u < pl.T; u++) {
                const char *p = parts + part * (size_t)(u - 1);
                if (g->dtype == GRAFT_F32) {
                    float *d = dw;
                    const float *s = (const float *)p;
                    for (int64_t i = i0; i < i1; i++) d[i] += s[i];
                } else {
                    double *d = dw;
                    const double *s = (const double *)p;
                    for (int64_t i = i0; i < i1; i++) d[i] += s[i];
                }
            }
        }
    } else {
        cv_weight_blocks(&pl, 0, pl.NB, small, big, dw, scratch);
    }
    graft_free(scratch, actual);
    return GRAFT_OK;
}

graft_status graft_cpu_conv_backward(const graft_conv_geom *g, const void *small, const void *big, const void *w,
                                     void *dbig, void *dw, const char *op) {
    if (cv_winograd(g) && g->N > 0 && g->C > 0 && g->O > 0)
        return graft_cpu_winograd_backward(g, small, big, w, NULL, dbig, dw, op);
    graft_status st = GRAFT_OK;
    if (dbig) st = graft_cpu_conv_big(g, small, w, NULL, dbig, op);
    if (!st && dw) st = graft_cpu_conv_weight(g, small, big, dw, op);
    return st;
}

/* ---- bias gradient ---- */

void graft_cpu_conv_bias_grad(graft_dtype dt, int64_t N, int64_t C, int64_t P, const void *x, void *db) {
    bool par = graft_should_parallelize(N * C * P) && C > 1;
    (void)par;
    if (dt == GRAFT_F32) {
        const float *s = x;
        float *d = db;
        #pragma omp parallel for schedule(static) if(par)
        for (int64_t c = 0; c < C; c++) {
            double acc = 0;
            for (int64_t n = 0; n < N; n++) {
                const float *r = s + (n * C + c) * P;
                float a = 0;
                #pragma omp simd reduction(+ : a)
                for (int64_t p = 0; p < P; p++) a += r[p];
                acc += a;
            }
            d[c] = (float)acc;
        }
    } else {
        const double *s = x;
        double *d = db;
        #pragma omp parallel for schedule(static) if(par)
        for (int64_t c = 0; c < C; c++) {
            double acc = 0;
            for (int64_t n = 0; n < N; n++) {
                const double *r = s + (n * C + c) * P;
                #pragma omp simd reduction(+ : acc)
                for (int64_t p = 0; p < P; p++) acc += r[p];
            }
            d[c] = acc;
        }
    }
}
