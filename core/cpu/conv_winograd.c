/* graft CPU convolutions: Winograd F(2x2, 3x3) for 3x3, stride 1, dilation 1, float32
 * (Lavin & Gray 2015). A 2x2 output tile is A^T [(G g G^T) . (B^T d B)] A for its 4x4
 * input patch d, so the 9 multiply-adds per output and input channel of im2col + GEMM
 * become 4, as 16 GEMMs [O, C] x [C, tiles] on transformed data. The same algebra
 * gives both gradients exactly (as the gradients of that forward):
 *
 *     forward      M_k  = U_k V_k                    y  = A^T M A      (U = G g G^T, V = B^T d B)
 *     d input      dV_k = U_k^T dM_k                 dd = B dV B^T     (dM = A dy A^T), overlap-added
 *     d weight     dU_k = sum over tiles dM_k V_k^T  dg = G^T dU G
 *
 * The transforms run 16 tiles at a time along a tile row in AVX-512 registers (the
 * stride-2 patch columns gathered with one two-register permute); tiles are processed
 * in blocks (possibly spanning images) whose transformed data stays near the L2 size.
 * Threads split the tiles as the im2col path splits columns (whole images for the
 * input gradient, whose tiles overlap). Without AVX-512 this file offers nothing and
 * the im2col path runs.
 */
#include "cpu/conv_cpu.h"

#include <string.h>

#if defined(__AVX512F__)
#include <cblas.h>
#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "tensor/alloc.h"
#include "tensor/iter.h"

/* transformed-data budget per thread (V and M of one block) */
#define WG_BLOCK_BYTES (1 << 20)

/* Also wanted: enough tiles for the channel counts. With few tiles (small images, many
 * channels: resnet's last stages at 64x64 or 7x7) the 16 transformed weight matrices
 * cost more than the multiply-adds saved: measured 1.5x slower at 8 x [256, 4, 4] and
 * 4 x [512, 7, 7], 1.2x faster at 4 x [256, 14, 14] and 8 x [128, 8, 8]. */
bool graft_cpu_winograd_ok(const graft_conv_geom *g) {
    int64_t Cg = g->C / g->G, Og = g->O / g->G;
    int64_t tiles = g->N * ((g->OH + 1) / 2) * ((g->OW + 1) / 2);
    return g->dtype == GRAFT_F32 && g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 && g->dh == 1 &&
           g->dw == 1 && Cg >= 8 && Og >= 8 && g->OH >= 4 && g->OW >= 4 && 2 * tiles >= (Cg > Og ? Cg : Og);
}

typedef struct {
    const graft_conv_geom *g;
    int64_t Cg, Og, TH, TW, TT, NT;  /* tiles per row, per column, per image, in all */
    int64_t Tb;                      /* tiles per block */
    int64_t ld;                      /* row stride of V and M: Tb plus a vector of slack, so
                                      * transforms store whole vectors (masked stores are slow) */
    int T;
} wg_plan;

static int wg_thread(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline __mmask16 wg_mask(int64_t n) {
    return n <= 0 ? 0 : n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
}

/* Lanes m of a 16-wide load at column base that fall inside [lo, hi). */
static inline __mmask16 wg_range(int64_t base, int64_t lo, int64_t hi) {
    return (__mmask16)(wg_mask(hi - base) & ~wg_mask(lo - base));
}

static void wg_plan_make(wg_plan *p, const graft_conv_geom *g) {
    memset(p, 0, sizeof *p);
    p->g = g;
    p->Cg = g->C / g->G;
    p->Og = g->O / g->G;
    p->TH = (g->OH + 1) / 2;
    p->TW = (g->OW + 1) / 2;
    p->TT = p->TH * p->TW;
    p->NT = g->N * p->TT;
    int64_t tb = WG_BLOCK_BYTES / (16 * 4 * (p->Cg + p->Og));
    tb = tb < 32 ? 32 : tb & ~(int64_t)15; /* whole chunks: aligned stores */
    p->Tb = tb < p->NT ? tb : p->NT;
    p->ld = (p->Tb + 31) & ~(int64_t)15;
    double flops = 2.0 * 16 * (double)p->NT * (double)g->O * (double)p->Cg;
    p->T = graft_should_parallelize((int64_t)(flops / 64)) ? graft_get_num_threads() : 1;
}

/* Per-thread scratch: V [16][Cg][ld] and M [16][Og][ld]. */
static size_t wg_scratch_floats(const wg_plan *p) {
    size_t n = (size_t)16 * (size_t)(p->Cg + p->Og) * (size_t)p->ld;
    return (n + 15) & ~(size_t)15;
}

/* 16 consecutive tiles (global ids t .. t+cnt-1) as runs along tile rows: lanes
 * l0 .. l0+nl-1 hold tiles tx0 .. of tile row ty of image img. Narrow images put
 * several tile rows (and images) in one register, so every lane works and the
 * transformed data is stored as whole, aligned vectors. */
typedef struct {
    int n;
    int l0[16], nl[16];
    int64_t img[16], ty[16], tx0[16];
} wg_chunk;

static void wg_chunk_at(const wg_plan *p, int64_t t, int64_t cnt, wg_chunk *ch) {
    ch->n = 0;
    for (int64_t u = t; u < t + cnt;) {
        int64_t r = u % p->TT, tx = r % p->TW, len = p->TW - tx < t + cnt - u ? p->TW - tx : t + cnt - u;
        int s = ch->n++;
        ch->l0[s] = (int)(u - t);
        ch->nl[s] = (int)len;
        ch->img[s] = u / p->TT;
        ch->ty[s] = r / p->TW;
        ch->tx0[s] = tx;
        u += len;
    }
}

/* Runs BODY for each chunk of the tiles [b0, b1) of a block; col is its first column. */
#define WG_CHUNKS(p, b0, b1, BODY)                                              \
    for (int64_t t_ = (b0); t_ < (b1); t_ += 16) {                              \
        wg_chunk ch;                                                            \
        wg_chunk_at((p), t_, (b1) - t_ < 16 ? (b1) - t_ : 16, &ch);             \
        int64_t col = t_ - (b0);                                                \
        BODY;                                                                   \
    }

static const int32_t wg_even_idx[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
static const int32_t wg_odd_idx[16] = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
static const int32_t wg_lo_idx[16] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
static const int32_t wg_hi_idx[16] = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
static const int32_t wg_shift_idx[16] = {0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};

static inline __mmask16 wg_lanes(const wg_chunk *ch, int s) {
    return (__mmask16)(wg_mask(ch->l0[s] + ch->nl[s]) & ~wg_mask(ch->l0[s]));
}

/* ---- the four data transforms, 16 tiles per register ---- */

/* V[k][c][col + l] <- (B^T d B)[k] for the chunk's tiles; x is [N, xs] images of
 * [Cg, H, W] (the group's channels). */
static void wg_in(const wg_plan *p, const float *x, int64_t xs, const wg_chunk *ch, float *V, int64_t col) {
    const graft_conv_geom *g = p->g;
    const int64_t H = g->H, W = g->W, Cg = p->Cg, ld = p->ld;
    const __m512i even = _mm512_loadu_si512(wg_even_idx);
    __mmask16 m0[16][4], m1[16][4], lane[16];
    __m512i idx[16][4];
    int64_t sb[16];
    bool one[16]; /* the run's 4 taps all lie in one 32-column window: one pair of loads */
    for (int s = 0; s < ch->n; s++) { /* lane l reads source column sb + k + 2 (l - l0) */
        int64_t need = 2 * ch->nl[s] - 1;
        sb[s] = 2 * ch->tx0[s] - g->pw;
        lane[s] = wg_lanes(ch, s);
        one[s] = need + 3 <= 32;
        for (int k = 0; k < 4; k++) {
            int64_t base = one[s] ? sb[s] : sb[s] + k, n = one[s] ? need + 3 : need;
            idx[s][k] = _mm512_sub_epi32(even, _mm512_set1_epi32(2 * ch->l0[s] - (one[s] ? k : 0)));
            m0[s][k] = (__mmask16)(wg_range(base, 0, W) & wg_mask(n));
            m1[s][k] = (__mmask16)(wg_range(base + 16, 0, W) & wg_mask(n - 16));
        }
    }
    for (int64_t c = 0; c < Cg; c++) {
        __m512 w[4][4];
        for (int r = 0; r < 4; r++) {
            __m512 d[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
            for (int s = 0; s < ch->n; s++) {
                int64_t ih = 2 * ch->ty[s] - g->ph + r;
                if (ih < 0 || ih >= H) continue;
                const float *row = x + ch->img[s] * xs + (c * H + ih) * W + sb[s];
                if (one[s]) {
                    __m512 lo = _mm512_maskz_loadu_ps(m0[s][0], row), hi = _mm512_maskz_loadu_ps(m1[s][0], row + 16);
                    for (int k = 0; k < 4; k++)
                        d[k] = _mm512_mask_mov_ps(d[k], lane[s], _mm512_permutex2var_ps(lo, idx[s][k], hi));
                } else {
                    for (int k = 0; k < 4; k++) {
                        __m512 lo = _mm512_maskz_loadu_ps(m0[s][k], row + k);
                        __m512 hi = _mm512_maskz_loadu_ps(m1[s][k], row + k + 16);
                        d[k] = _mm512_mask_mov_ps(d[k], lane[s], _mm512_permutex2var_ps(lo, idx[s][k], hi));
                    }
                }
            }
            /* along the row: w[r] = d B */
            w[r][0] = _mm512_sub_ps(d[0], d[2]);
            w[r][1] = _mm512_add_ps(d[1], d[2]);
            w[r][2] = _mm512_sub_ps(d[2], d[1]);
            w[r][3] = _mm512_sub_ps(d[1], d[3]);
        }
        for (int b = 0; b < 4; b++) { /* down the column: B^T w */
            __m512 v[4] = {_mm512_sub_ps(w[0][b], w[2][b]), _mm512_add_ps(w[1][b], w[2][b]),
                           _mm512_sub_ps(w[2][b], w[1][b]), _mm512_sub_ps(w[1][b], w[3][b])};
            for (int a = 0; a < 4; a++) _mm512_storeu_ps(V + ((a * 4 + b) * Cg + c) * ld + col, v[a]);
        }
    }
}

/* y[o, 2ty + i, 2tx + j] <- (A^T M A)[i][j] (+ bias[o]) for the chunk's tiles; y is
 * [N, ys] images of [Og, OH, OW]. */
static void wg_out(const wg_plan *p, const float *M, int64_t col, const wg_chunk *ch, const float *bias, float *y,
                   int64_t ys) {
    const graft_conv_geom *g = p->g;
    const int64_t OH = g->OH, OW = g->OW, Og = p->Og, ld = p->ld;
    const __m512i ilo = _mm512_loadu_si512(wg_lo_idx), ihi = _mm512_loadu_si512(wg_hi_idx);
    __m512i slo[16], shi[16];
    __mmask16 mlo[16], mhi[16];
    for (int s = 0; s < ch->n; s++) { /* interleave lanes l0 .. of the two columns into 2 nl outputs */
        int64_t c0 = 2 * ch->tx0[s], cend = c0 + 2 * ch->nl[s] < OW ? c0 + 2 * ch->nl[s] : OW;
        slo[s] = _mm512_add_epi32(ilo, _mm512_set1_epi32(ch->l0[s]));
        shi[s] = _mm512_add_epi32(ihi, _mm512_set1_epi32(ch->l0[s]));
        mlo[s] = wg_range(c0, 0, cend);
        mhi[s] = wg_range(c0 + 16, 0, cend);
    }
    for (int64_t o = 0; o < Og; o++) {
        __m512 z[4][2];
        for (int a = 0; a < 4; a++) {
            const float *m = M + (a * 4 * Og + o) * ld + col;
            __m512 m0 = _mm512_loadu_ps(m), m1 = _mm512_loadu_ps(m + Og * ld);
            __m512 m2 = _mm512_loadu_ps(m + 2 * Og * ld), m3 = _mm512_loadu_ps(m + 3 * Og * ld);
            z[a][0] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
            z[a][1] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
        }
        __m512 bv = bias ? _mm512_set1_ps(bias[o]) : _mm512_setzero_ps();
        __m512 y0[2], y1[2];
        y0[0] = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(z[0][0], z[1][0]), z[2][0]), bv);
        y1[0] = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(z[0][1], z[1][1]), z[2][1]), bv);
        y0[1] = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(z[1][0], z[2][0]), z[3][0]), bv);
        y1[1] = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(z[1][1], z[2][1]), z[3][1]), bv);
        for (int s = 0; s < ch->n; s++)
            for (int i = 0; i < 2; i++) {
                int64_t oh = 2 * ch->ty[s] + i;
                if (oh >= OH) break;
                float *row = y + ch->img[s] * ys + (o * OH + oh) * OW + 2 * ch->tx0[s];
                _mm512_mask_storeu_ps(row, mlo[s], _mm512_permutex2var_ps(y0[i], slo[s], y1[i]));
                _mm512_mask_storeu_ps(row + 16, mhi[s], _mm512_permutex2var_ps(y0[i], shi[s], y1[i]));
            }
    }
}

/* M[k][o][col + l] <- (A dy A^T)[k] for the chunk's tiles' 2x2 gradients (zero where a
 * tile leaves the output); dy is [N, ys] images of [Og, OH, OW]. */
static void wg_gout(const wg_plan *p, const float *dy, int64_t ys, const wg_chunk *ch, float *M, int64_t col) {
    const graft_conv_geom *g = p->g;
    const int64_t OH = g->OH, OW = g->OW, Og = p->Og, ld = p->ld;
    const __m512i even = _mm512_loadu_si512(wg_even_idx), odd = _mm512_loadu_si512(wg_odd_idx);
    __m512i se[16], so[16];
    __mmask16 mlo[16], mhi[16], lane[16];
    for (int s = 0; s < ch->n; s++) {
        int64_t c0 = 2 * ch->tx0[s], cend = c0 + 2 * ch->nl[s] < OW ? c0 + 2 * ch->nl[s] : OW;
        se[s] = _mm512_sub_epi32(even, _mm512_set1_epi32(2 * ch->l0[s]));
        so[s] = _mm512_sub_epi32(odd, _mm512_set1_epi32(2 * ch->l0[s]));
        mlo[s] = wg_range(c0, 0, cend);
        mhi[s] = wg_range(c0 + 16, 0, cend);
        lane[s] = wg_lanes(ch, s);
    }
    for (int64_t o = 0; o < Og; o++) {
        __m512 e[2][4];
        for (int i = 0; i < 2; i++) {
            __m512 y0 = _mm512_setzero_ps(), y1 = _mm512_setzero_ps();
            for (int s = 0; s < ch->n; s++) {
                int64_t oh = 2 * ch->ty[s] + i;
                if (oh >= OH) continue;
                const float *row = dy + ch->img[s] * ys + (o * OH + oh) * OW + 2 * ch->tx0[s];
                __m512 lo = _mm512_maskz_loadu_ps(mlo[s], row), hi = _mm512_maskz_loadu_ps(mhi[s], row + 16);
                y0 = _mm512_mask_mov_ps(y0, lane[s], _mm512_permutex2var_ps(lo, se[s], hi));
                y1 = _mm512_mask_mov_ps(y1, lane[s], _mm512_permutex2var_ps(lo, so[s], hi));
            }
            /* along the row: e[i] = dy[i] A^T */
            e[i][0] = y0;
            e[i][1] = _mm512_add_ps(y0, y1);
            e[i][2] = _mm512_sub_ps(y0, y1);
            e[i][3] = _mm512_sub_ps(_mm512_setzero_ps(), y1);
        }
        for (int b = 0; b < 4; b++) { /* down the column: A e */
            __m512 v[4] = {e[0][b], _mm512_add_ps(e[0][b], e[1][b]), _mm512_sub_ps(e[0][b], e[1][b]),
                           _mm512_sub_ps(_mm512_setzero_ps(), e[1][b])};
            for (int a = 0; a < 4; a++) _mm512_storeu_ps(M + ((a * 4 + b) * Og + o) * ld + col, v[a]);
        }
    }
}

/* dx += the patches B dV B^T of the chunk's tiles, overlap-added (a tile's patch
 * columns 2 and 3 are the next tile's 0 and 1); dx is [N, xs] images of [Cg, H, W]. */
static void wg_gin(const wg_plan *p, const float *dV, int64_t col, const wg_chunk *ch, float *dx, int64_t xs) {
    const graft_conv_geom *g = p->g;
    const int64_t H = g->H, W = g->W, Cg = p->Cg, ld = p->ld;
    const __m512i ilo = _mm512_loadu_si512(wg_lo_idx), ihi = _mm512_loadu_si512(wg_hi_idx);
    const __m512i shift = _mm512_loadu_si512(wg_shift_idx);
    __m512i slo[16], shi[16];
    __mmask16 mlo[16], mhi[16], prev[16];
    int64_t s0[16], send[16];
    for (int s = 0; s < ch->n; s++) {
        s0[s] = 2 * ch->tx0[s] - g->pw;
        send[s] = s0[s] + 2 * ch->nl[s];
        int64_t lim = W < send[s] ? W : send[s];
        slo[s] = _mm512_add_epi32(ilo, _mm512_set1_epi32(ch->l0[s]));
        shi[s] = _mm512_add_epi32(ihi, _mm512_set1_epi32(ch->l0[s]));
        mlo[s] = wg_range(s0[s], 0, lim);
        mhi[s] = wg_range(s0[s] + 16, 0, lim);
        prev[s] = (__mmask16)(wg_lanes(ch, s) & ~(1u << ch->l0[s])); /* lanes whose left neighbour is in the run */
    }
    float tail2[16], tail3[16];
    for (int64_t c = 0; c < Cg; c++) {
        __m512 f[4][4];
        for (int a = 0; a < 4; a++) { /* along the row: f[a] = dV[a] B^T */
            const float *v = dV + ((a * 4) * Cg + c) * ld + col;
            __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + Cg * ld);
            __m512 v2 = _mm512_loadu_ps(v + 2 * Cg * ld), v3 = _mm512_loadu_ps(v + 3 * Cg * ld);
            f[a][0] = v0;
            f[a][1] = _mm512_add_ps(_mm512_sub_ps(v1, v2), v3);
            f[a][2] = _mm512_sub_ps(_mm512_add_ps(v1, v2), v0);
            f[a][3] = _mm512_sub_ps(_mm512_setzero_ps(), v3);
        }
        for (int r = 0; r < 4; r++) {
            __m512 dd[4];
            for (int k = 0; k < 4; k++) { /* down the column: B f */
                if (r == 0) dd[k] = f[0][k];
                else if (r == 1) dd[k] = _mm512_add_ps(_mm512_sub_ps(f[1][k], f[2][k]), f[3][k]);
                else if (r == 2) dd[k] = _mm512_sub_ps(_mm512_add_ps(f[1][k], f[2][k]), f[0][k]);
                else dd[k] = _mm512_sub_ps(_mm512_setzero_ps(), f[3][k]);
            }
            _mm512_storeu_ps(tail2, dd[2]);
            _mm512_storeu_ps(tail3, dd[3]);
            for (int s = 0; s < ch->n; s++) {
                int64_t ih = 2 * ch->ty[s] - g->ph + r;
                if (ih < 0 || ih >= H) continue;
                /* even columns: own tap 0 plus the left neighbour's tap 2; odd: taps 1 and 3 */
                __m512 ev = _mm512_add_ps(dd[0], _mm512_maskz_permutexvar_ps(prev[s], shift, dd[2]));
                __m512 od = _mm512_add_ps(dd[1], _mm512_maskz_permutexvar_ps(prev[s], shift, dd[3]));
                float *row = dx + ch->img[s] * xs + (c * H + ih) * W;
                __m512 lo = _mm512_maskz_loadu_ps(mlo[s], row + s0[s]);
                __m512 hi = _mm512_maskz_loadu_ps(mhi[s], row + s0[s] + 16);
                _mm512_mask_storeu_ps(row + s0[s], mlo[s], _mm512_add_ps(lo, _mm512_permutex2var_ps(ev, slo[s], od)));
                _mm512_mask_storeu_ps(row + s0[s] + 16, mhi[s], _mm512_add_ps(hi, _mm512_permutex2var_ps(ev, shi[s], od)));
                /* the run's last tile's taps 2 and 3 go past its columns */
                int last = ch->l0[s] + ch->nl[s] - 1;
                if (send[s] >= 0 && send[s] < W) row[send[s]] += tail2[last];
                if (send[s] + 1 >= 0 && send[s] + 1 < W) row[send[s] + 1] += tail3[last];
            }
        }
    }
}

/* ---- weight transforms (scalar: once per call) ---- */

/* U [G][16][Og][Cg] <- G g G^T of each 3x3 kernel of w [O, Cg, 3, 3]. */
static void wg_weights(const wg_plan *p, const float *w, float *U) {
    const graft_conv_geom *g = p->g;
    int64_t n = g->O * p->Cg, Og = p->Og, Cg = p->Cg;
    bool par = graft_should_parallelize(n * 64);
    (void)par;
    #pragma omp parallel for schedule(static) if(par)
    for (int64_t oc = 0; oc < n; oc++) {
        int64_t o = oc / Cg, c = oc % Cg, grp = o / Og, og = o % Og;
        const float *k = w + oc * 9;
        float h[3][4], u[4][4];
        for (int i = 0; i < 3; i++) { /* h = g G^T */
            h[i][0] = k[i * 3];
            h[i][1] = 0.5f * (k[i * 3] + k[i * 3 + 1] + k[i * 3 + 2]);
            h[i][2] = 0.5f * (k[i * 3] - k[i * 3 + 1] + k[i * 3 + 2]);
            h[i][3] = k[i * 3 + 2];
        }
        for (int b = 0; b < 4; b++) { /* u = G h */
            u[0][b] = h[0][b];
            u[1][b] = 0.5f * (h[0][b] + h[1][b] + h[2][b]);
            u[2][b] = 0.5f * (h[0][b] - h[1][b] + h[2][b]);
            u[3][b] = h[2][b];
        }
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) U[((grp * 16 + a * 4 + b) * Og + og) * Cg + c] = u[a][b];
    }
}

/* dw [O, Cg, 3, 3] <- G^T dU G of dU [G][16][Og][Cg]. */
static void wg_weights_grad(const wg_plan *p, const float *dU, float *dw) {
    const graft_conv_geom *g = p->g;
    int64_t n = g->O * p->Cg, Og = p->Og, Cg = p->Cg;
    for (int64_t oc = 0; oc < n; oc++) {
        int64_t o = oc / Cg, c = oc % Cg, grp = o / Og, og = o % Og;
        float u[4][4], q[4][3];
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) u[a][b] = dU[((grp * 16 + a * 4 + b) * Og + og) * Cg + c];
        for (int a = 0; a < 4; a++) { /* q = u G */
            q[a][0] = u[a][0] + 0.5f * (u[a][1] + u[a][2]);
            q[a][1] = 0.5f * (u[a][1] - u[a][2]);
            q[a][2] = 0.5f * (u[a][1] + u[a][2]) + u[a][3];
        }
        float *k = dw + oc * 9;
        for (int j = 0; j < 3; j++) { /* G^T q */
            k[j] = q[0][j] + 0.5f * (q[1][j] + q[2][j]);
            k[3 + j] = 0.5f * (q[1][j] - q[2][j]);
            k[6 + j] = 0.5f * (q[1][j] + q[2][j]) + q[3][j];
        }
    }
}

/* 16 GEMMs C_k [m, n] = op(A_k) op(B_k) + beta C_k, each operand k at a stride. */
static void wg_gemm16(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *A, int64_t lda, int64_t sa,
                      const float *B, int64_t ldb, int64_t sb, float beta, float *C, int64_t ldc, int64_t sc) {
    for (int x = 0; x < 16; x++)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                    (int)k, 1.0f, A + x * sa, (int)lda, B + x * sb, (int)ldb, beta, C + x * sc, (int)ldc);
}

/* Thread t's tiles [*a, *b): an even split, or one on image boundaries. */
static void wg_split(const wg_plan *p, int t, bool whole_images, int64_t *a, int64_t *b) {
    if (whole_images) {
        int64_t N = p->g->N;
        *a = (t * N / p->T) * p->TT;
        *b = ((t + 1) * N / p->T) * p->TT;
    } else {
        *a = t * p->NT / p->T;
        *b = (t + 1) * p->NT / p->T;
    }
}

/* ---- small = conv(big, w) ---- */

static void wg_small_range(const wg_plan *p, int64_t a, int64_t b, const float *big, const float *U, const float *bias,
                           float *small, float *V) {
    const graft_conv_geom *g = p->g;
    const int64_t Cg = p->Cg, Og = p->Og, Tb = p->Tb, ld = p->ld;
    float *M = V + (size_t)16 * Cg * ld;
    for (int64_t b0 = a; b0 < b; b0 += Tb) {
        int64_t b1 = b0 + Tb < b ? b0 + Tb : b, nt = b1 - b0;
        for (int64_t grp = 0; grp < g->G; grp++) {
            WG_CHUNKS(p, b0, b1, wg_in(p, big + grp * Cg * g->H * g->W, g->C * g->H * g->W, &ch, V, col));
            wg_gemm16(false, false, Og, nt, Cg, U + grp * 16 * Og * Cg, Cg, Og * Cg, V, ld, Cg * ld, 0.0f, M, ld,
                      Og * ld);
            WG_CHUNKS(p, b0, b1,
                      wg_out(p, M, col, &ch, bias ? bias + grp * Og : NULL, small + grp * Og * g->OH * g->OW,
                             g->O * g->OH * g->OW));
        }
    }
}

graft_status graft_cpu_winograd_small(const graft_conv_geom *g, const void *big, const void *w, const void *bias,
                                      void *small, const char *op) {
    wg_plan p;
    wg_plan_make(&p, g);
    size_t per = wg_scratch_floats(&p), un = (size_t)16 * (size_t)g->O * (size_t)p.Cg, actual;
    float *buf = graft_alloc(sizeof(float) * (un + per * (size_t)p.T), &actual);
    if (!buf) return graft_error(GRAFT_ENOMEM, "%s: out of memory for the Winograd buffers", op);
    float *U = buf, *scratch = buf + un;
    wg_weights(&p, w, U);
    if (p.T > 1) {
        #pragma omp parallel num_threads(p.T)
        {
            int t = wg_thread();
            int64_t a, b;
            wg_split(&p, t, false, &a, &b);
            wg_small_range(&p, a, b, big, U, bias, small, scratch + per * (size_t)t);
        }
    } else {
        wg_small_range(&p, 0, p.NT, big, U, bias, small, scratch);
    }
    graft_free(buf, actual);
    return GRAFT_OK;
}

/* ---- big = conv^T(small, w) and dw = sum small x col(big)^T, in one pass ---- */

/* Tiles [a, b): the transformed output gradient dM of each block serves both
 * gradients. With U, dbig [N, C, H, W] gets the input gradient (its images zeroed
 * here, then bias added when given); with dU, the weight gradient of x (big) sums into
 * dU [G][16][Og][Cg] (zeroed here). */
static void wg_back_range(const wg_plan *p, int64_t a, int64_t b, const float *dy, const float *x, const float *U,
                          const float *bias, float *dbig, float *dU, float *V) {
    const graft_conv_geom *g = p->g;
    const int64_t Cg = p->Cg, Og = p->Og, Tb = p->Tb, ld = p->ld, HW = g->H * g->W, OHW = g->OH * g->OW;
    float *M = V + (size_t)16 * Cg * ld;
    if (dU) memset(dU, 0, sizeof(float) * (size_t)(16 * g->O * Cg));
    if (a >= b) return;
    int64_t n0 = a / p->TT, n1 = (b + p->TT - 1) / p->TT;
    if (dbig) memset(dbig + n0 * g->C * HW, 0, sizeof(float) * (size_t)((n1 - n0) * g->C * HW));
    for (int64_t b0 = a; b0 < b; b0 += Tb) {
        int64_t b1 = b0 + Tb < b ? b0 + Tb : b, nt = b1 - b0;
        for (int64_t grp = 0; grp < g->G; grp++) {
            WG_CHUNKS(p, b0, b1, wg_gout(p, dy + grp * Og * OHW, g->O * OHW, &ch, M, col));
            if (dbig) {
                wg_gemm16(true, false, Cg, nt, Og, U + grp * 16 * Og * Cg, Cg, Og * Cg, M, ld, Og * ld, 0.0f, V, ld,
                          Cg * ld);
                WG_CHUNKS(p, b0, b1, wg_gin(p, V, col, &ch, dbig + grp * Cg * HW, g->C * HW));
            }
            if (dU) {
                WG_CHUNKS(p, b0, b1, wg_in(p, x + grp * Cg * HW, g->C * HW, &ch, V, col));
                wg_gemm16(false, true, Og, Cg, nt, M, ld, Og * ld, V, ld, Cg * ld, 1.0f, dU + grp * 16 * Og * Cg, Cg,
                          Og * Cg);
            }
        }
    }
    if (dbig && bias)
        for (int64_t n = n0; n < n1; n++)
            for (int64_t c = 0; c < g->C; c++) {
                float v = bias[c], *r = dbig + (n * g->C + c) * HW;
                for (int64_t q = 0; q < HW; q++) r[q] += v;
            }
}

graft_status graft_cpu_winograd_backward(const graft_conv_geom *g, const void *small, const void *big, const void *w,
                                         const void *bias, void *dbig, void *dw, const char *op) {
    wg_plan p;
    wg_plan_make(&p, g);
    if (dbig && g->N < p.T) p.T = 1; /* threads own whole images; BLAS threads otherwise */
    int64_t blocks = (p.NT + p.Tb - 1) / p.Tb;
    if (blocks < p.T) p.T = (int)blocks;
    size_t per = wg_scratch_floats(&p), un = ((size_t)16 * (size_t)g->O * (size_t)p.Cg + 15) & ~(size_t)15, actual;
    size_t nparts = dw ? (size_t)p.T : 0, total = (dbig ? un : 0) + un * nparts + per * (size_t)p.T;
    float *buf = graft_alloc(sizeof(float) * total, &actual);
    if (!buf) return graft_error(GRAFT_ENOMEM, "%s: out of memory for the Winograd buffers", op);
    float *U = dbig ? buf : NULL, *parts = dw ? buf + (dbig ? un : 0) : NULL;
    float *scratch = buf + (dbig ? un : 0) + un * nparts;
    if (U) wg_weights(&p, w, U);
    if (p.T > 1) {
        #pragma omp parallel num_threads(p.T)
        {
            int t = wg_thread();
            int64_t a, b;
            wg_split(&p, t, dbig != NULL, &a, &b);
            wg_back_range(&p, a, b, small, big, U, bias, dbig, parts ? parts + un * (size_t)t : NULL,
                          scratch + per * (size_t)t);
            if (parts) {
                /* every thread adds up its slice of the partials */
                #pragma omp barrier
                size_t i0 = (size_t)t * un / (size_t)p.T, i1 = (size_t)(t + 1) * un / (size_t)p.T;
                for (int u = 1; u < p.T; u++)
                    for (size_t i = i0; i < i1; i++) parts[i] += parts[un * (size_t)u + i];
            }
        }
    } else {
        wg_back_range(&p, 0, p.NT, small, big, U, bias, dbig, parts, scratch);
    }
    if (parts) wg_weights_grad(&p, parts, dw);
    graft_free(buf, actual);
    return GRAFT_OK;
}

graft_status graft_cpu_winograd_big(const graft_conv_geom *g, const void *small, const void *w, const void *bias,
                                    void *big, const char *op) {
    return graft_cpu_winograd_backward(g, small, NULL, w, bias, big, NULL, op);
}

graft_status graft_cpu_winograd_weight(const graft_conv_geom *g, const void *small, const void *big, void *dw,
                                       const char *op) {
    return graft_cpu_winograd_backward(g, small, big, NULL, NULL, NULL, dw, op);
}

#else /* no AVX-512: the im2col path does everything */

bool graft_cpu_winograd_ok(const graft_conv_geom *g) {
    (void)g;
    return false;
}
graft_status graft_cpu_winograd_small(const graft_conv_geom *g, const void *big, const void *w, const void *bias,
                                      void *small, const char *op) {
    (void)g, (void)big, (void)w, (void)bias, (void)small;
    return graft_error(GRAFT_EINTERNAL, "%s: Winograd kernels need AVX-512", op);
}
graft_status graft_cpu_winograd_big(const graft_conv_geom *g, const void *small, const void *w, const void *bias,
                                    void *big, const char *op) {
    (void)g, (void)small, (void)w, (void)bias, (void)big;
    return graft_error(GRAFT_EINTERNAL, "%s: Winograd kernels need AVX-512", op);
}
graft_status graft_cpu_winograd_weight(const graft_conv_geom *g, const void *small, const void *big, void *dw,
                                       const char *op) {
    (void)g, (void)small, (void)big, (void)dw;
    return graft_error(GRAFT_EINTERNAL, "%s: Winograd kernels need AVX-512", op);
}
graft_status graft_cpu_winograd_backward(const graft_conv_geom *g, const void *small, const void *big, const void *w,
                                         const void *bias, void *dbig, void *dw, const char *op) {
    (void)g, (void)small, (void)big, (void)w, (void)bias, (void)dbig, (void)dw;
    return graft_error(GRAFT_EINTERNAL, "%s: Winograd kernels need AVX-512", op);
}

#endif
