/* graft CPU matrix products with one small side, m, n or k at most 16: a classifier
 * head's weight gradient, forward and input gradient. OpenBLAS runs these far below
 * peak (packing, and its thread split of a thin product). Here register-blocked loops,
 * written with GCC vector extensions so that any target builds them, either broadcast
 * scalars of one operand against vector rows of the other or run dot products along k,
 * and split rows or column strips across the OpenMP pool. Sums run in the operand
 * type, as BLAS's do; only their order differs from BLAS. */
#include "cpu/gemm_small.h"

#include <stdlib.h>
#include <string.h>

#include "tensor/iter.h"

/* Vector width, and how many vector accumulators a block keeps in registers. */
#if defined(__AVX512F__)
#define SK_VBYTES 64
#define SK_ACCS 16
#elif defined(__AVX__)
#define SK_VBYTES 32
#define SK_ACCS 8
#else
#define SK_VBYTES 16
#define SK_ACCS 8
#endif
/* Keeps a vector in a register: without it GCC folds a loaded vector into each of its
 * FMAs as a memory operand, and the loads then bound the loop (measured 1.4x). */
#if defined(__x86_64__) && defined(__GNUC__)
#define SK_IN_REGISTER(x) __asm__("" : "+v"(x))
#else
#define SK_IN_REGISTER(x) ((void)0)
#endif
#define SK_RMAX 8  /* rows of A in one panel */
#define SK_JVMAX 4 /* vectors of a row of C in one panel */

/* The side that counts as small. */
#define SK_SMALL 16
/* Below these many multiply-adds OpenBLAS's own small-matrix kernels are as fast, and
 * the product stays with BLAS (measured on Zen 4). With the pool free to split the
 * product: 2^17 for float32, half that for float64 (twice the cost per multiply-add).
 * On one thread (one thread set, or inside a parallel loop over a batch): 2^20, and
 * 2^21 when k is the small side (OpenBLAS is near peak there up to about 1M). */
#define SK_MIN_WORK_POOL (1 << 17)
#define SK_MIN_WORK_ONE (1 << 20)
#define SK_MIN_WORK_ONE_K (1 << 21)
/* Rows of B a pass over a long product reads at a time, so they stay cached. */
#define SK_KC 128
/* With fewer rows than this, dot products beat packing B for the broadcast loop. */
#define SK_PACK_MIN_M 128
/* Dot products need k to fill a few vectors. */
#define SK_DOT_MIN_K 32

/* Packing buffers, 64-byte aligned; NULL when out of memory. */
static void *sk_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
    return p;
}

/* Whether n columns padded to whole vectors of L lanes keep 85% of the lanes busy:
 * then broadcasting beats dot products, whose final sums cost about 15% (measured). */
static bool sk_lanes_full(int64_t n, int64_t L) { return n * 20 >= (n + L - 1) / L * L * 17; }

/* Whether the pool may split a product: more than one thread, not in a parallel region. */
static bool sk_pool(void) { return graft_should_parallelize(GRAFT_PARALLEL_GRAIN); }

/* Whether `units` of work go to the pool. */
static bool sk_parallel(int64_t units) { return units > 1 && sk_pool(); }

/* Runs the block for i in [0, n), split across the pool when par. The serial loop is
 * a copy of its own: a parallel region with a false if() still costs about 0.3 us. */
#define SK_FOR(par, n, i, ...)                                                                                 \
    do {                                                                                                       \
        if (par) {                                                                                             \
            _Pragma("omp parallel for schedule(static)")                                                       \
            for (int64_t i = 0; i < (n); i++) __VA_ARGS__                                                      \
        } else {                                                                                               \
            for (int64_t i = 0; i < (n); i++) __VA_ARGS__                                                      \
        }                                                                                                      \
    } while (0)

/* ---- broadcasts: a scalar of A times a vector row of B ---- */

/* One function per panel shape (R rows, JV vectors), so each has the registers alone. */
#define SK_PANEL_FN(SFX, T, R, JV)                                                                             \
    static __attribute__((noinline)) void sk_p##R##x##JV##_##SFX(                                              \
        int64_t k, const T *A, int64_t ars, int64_t acs, const T *B, int64_t bld, T *C, int64_t crs,           \
        int64_t ccs, int64_t cols, T alpha, T beta) {                                                          \
        sk_panel_##SFX(R, JV, k, A, ars, acs, B, bld, C, crs, ccs, cols, alpha, beta);                         \
    }

/* SK_DEFINE(SFX, T): the broadcast kernels for element type T.
 *
 * sk_panel: C[r, j] = alpha sum_kk A[r, kk] B[kk, j] + beta C[r, j] for r < R, j < cols,
 *   in R x JV vector accumulators. A is read through any strides (ars, acs); B's rows
 *   are contiguous, bld apart, each readable for JV whole vectors (the callers pad); C
 *   through (crs, ccs), and beta == 0 never reads it. Inlined with constant R and JV.
 * sk_block: any R rows by JV vectors, as panels that fit the registers.
 * sk_pack: rows [k0, k1) of B into bp (k x nb, zero padded past n).
 * sk_rows (n small): B packed to k x NV whole vectors; a block of rows of A keeps its
 *   rows of C in registers, so A, the large operand, is read once. C through (crs, ccs)
 *   so that the transposed product C^T = B^T A^T can run here too.
 * sk_strips (k or m small): C in column strips of whole vectors. B's rows are read in
 *   place when contiguous (the last partial vector packed), else B is packed. */
#define SK_DEFINE(SFX, T)                                                                                      \
    typedef T sk_vec_##SFX __attribute__((vector_size(SK_VBYTES)));                                            \
    typedef T sk_q##SFX __attribute__((vector_size(16)));                                                      \
    enum { SK_L_##SFX = SK_VBYTES / sizeof(T) };                                                               \
                                                                                                               \
    static inline __attribute__((always_inline)) void sk_panel_##SFX(                                          \
        const int R, const int JV, int64_t k, const T *A, int64_t ars, int64_t acs, const T *B, int64_t bld,   \
        T *C, int64_t crs, int64_t ccs, int64_t cols, T alpha, T beta) {                                       \
        typedef sk_vec_##SFX V;                                                                                \
        const int L = SK_L_##SFX;                                                                              \
        V acc[SK_RMAX][SK_JVMAX];                                                                              \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                                    \
            _Pragma("GCC unroll 4") for (int v = 0; v < JV; v++) acc[r][v] = (V){0};                           \
        for (int64_t kk = 0; kk < k; kk++) {                                                                   \
            V b[SK_JVMAX];                                                                                     \
            _Pragma("GCC unroll 4") for (int v = 0; v < JV; v++) {                                             \
                memcpy(&b[v], B + kk * bld + v * L, sizeof(V));                                                \
                SK_IN_REGISTER(b[v]);                                                                          \
            }                                                                                                  \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                              \
                T a = A[r * ars + kk * acs];                                                                   \
                _Pragma("GCC unroll 4") for (int v = 0; v < JV; v++) acc[r][v] += a * b[v];                    \
            }                                                                                                  \
        }                                                                                                      \
        if (ccs == 1 && cols >= (int64_t)JV * L) { /* whole vectors; alpha 1, beta 0 (the usual) apart */      \
            if (alpha == 1 && beta == 0) {                                                                     \
                _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                            \
                    _Pragma("GCC unroll 4") for (int v = 0; v < JV; v++)                                       \
                        memcpy(C + r * crs + v * L, &acc[r][v], sizeof(V));                                    \
                return;                                                                                        \
            }                                                                                                  \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                                \
                _Pragma("GCC unroll 4") for (int v = 0; v < JV; v++) {                                         \
                    T *c = C + r * crs + v * L;                                                                \
                    V x = alpha * acc[r][v];                                                                   \
                    if (beta != 0) {                                                                           \
                        V o;                                                                                   \
                        memcpy(&o, c, sizeof(V));                                                              \
                        x += beta * o;                                                                         \
                    }                                                                                          \
                    memcpy(c, &x, sizeof(V));                                                                  \
                }                                                                                              \
            return;                                                                                            \
        }                                                                                                      \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                                    \
            _Pragma("GCC unroll 4") for (int v = 0; v < JV; v++) {                                             \
                V t = acc[r][v]; /* a copy, so that acc itself stays in registers */                           \
                T x[SK_L_##SFX];                                                                               \
                memcpy(x, &t, sizeof(V));                                                                      \
                for (int l = 0; l < L && (int64_t)v * L + l < cols; l++) {                                     \
                    T *p = C + r * crs + ((int64_t)v * L + l) * ccs;                                           \
                    *p = beta == 0 ? alpha * x[l] : alpha * x[l] + beta * *p;                                  \
                }                                                                                              \
            }                                                                                                  \
    }                                                                                                          \
                                                                                                               \
    SK_PANEL_FN(SFX, T, 1, 1) SK_PANEL_FN(SFX, T, 2, 1) SK_PANEL_FN(SFX, T, 4, 1) SK_PANEL_FN(SFX, T, 8, 1)    \
    SK_PANEL_FN(SFX, T, 1, 2) SK_PANEL_FN(SFX, T, 2, 2) SK_PANEL_FN(SFX, T, 4, 2) SK_PANEL_FN(SFX, T, 8, 2)    \
    SK_PANEL_FN(SFX, T, 1, 4) SK_PANEL_FN(SFX, T, 2, 4) SK_PANEL_FN(SFX, T, 4, 4)                              \
                                                                                                               \
    static void sk_block_##SFX(int R, int JV, int64_t k, const T *A, int64_t ars, int64_t acs, const T *B,     \
                               int64_t bld, T *C, int64_t crs, int64_t ccs, int64_t cols, T alpha, T beta) {   \
        const int L = SK_L_##SFX;                                                                              \
        for (int v0 = 0; v0 < JV;) {                                                                           \
            int jv = JV - v0 >= 4 ? 4 : JV - v0 >= 2 ? 2 : 1, rmax = SK_ACCS / jv;                             \
            int64_t cv = cols - (int64_t)v0 * L;                                                               \
            for (int r0 = 0; r0 < R;) {                                                                        \
                int left = R - r0;                                                                             \
                int r = left >= 8 && rmax >= 8 ? 8 : left >= 4 && rmax >= 4 ? 4 : left >= 2 ? 2 : 1;           \
                const T *a = A + r0 * ars, *b = B + v0 * L;                                                    \
                T *c = C + r0 * crs + (int64_t)v0 * L * ccs;                                                   \
                switch (r * 8 + jv) {                                                                          \
                case 8 + 1: sk_p1x1_##SFX(k, a, ars, acs, b, bld, c, crs, ccs, cv, alpha, beta); break;        \
                case 16 + 1: sk_p2x1_##SFX(k, a, ars, acs, b, bld, c, crs, ccs, cv, alpha, beta); break;       \
                case 32 + 1: sk_p4x1_##SFX(k, a, ars, acs, b, bld, c, crs, ccs, cv, alpha, beta); break;       \
                case 64 + 1: sk_p8x1_##SFX(k, a, ars, acs, b, bld, c, crs, ccs, cv, alpha, beta); break;       \
                case 8 + 2: sk_p1x2_##SFX(k, a, ars, acs, b, bld, c, crs, ccs, cv, alpha, beta); break;        \
                case 16 + 2: sk_p2x2_##SFX(k, a, ars, acs, b, bld, c, crs, ccs, cv, alpha, beta); break;       \
                case 32 + 2: sk_p4x2_##SFX(k, a, ars, acs, b, bld, c, crs, ccs, cv, alpha, beta); break;       \
                case 64 + 2: sk_p8x2_##SFX(k, a, ars, acs, b, bld, c, crs, ccs, cv, alpha, beta); break;       \
                case 8 + 4: sk_p1x4_##SFX(k, a, ars, acs, b, bld, c, crs, ccs, cv, alpha, beta); break;        \
                case 16 + 4: sk_p2x4_##SFX(k, a, ars, acs, b, bld, c, crs, ccs, cv, alpha, beta); break;       \
                default: sk_p4x4_##SFX(k, a, ars, acs, b, bld, c, crs, ccs, cv, alpha, beta); break;           \
                }                                                                                              \
                r0 += r;                                                                                       \
            }                                                                                                  \
            v0 += jv;                                                                                          \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    static void sk_pack_##SFX(T *bp, int64_t nb, const T *B, int64_t brs, int64_t bcs, int64_t n, int64_t k0,  \
                              int64_t k1) {                                                                    \
        for (int64_t kk = k0; kk < k1; kk++) {                                                                 \
            for (int64_t j = 0; j < n; j++) bp[kk * nb + j] = B[kk * brs + j * bcs];                           \
            for (int64_t j = n; j < nb; j++) bp[kk * nb + j] = 0;                                              \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    static bool sk_rows_##SFX(int64_t m, int64_t n, int64_t k, const T *A, int64_t ars, int64_t acs,           \
                              const T *B, int64_t brs, int64_t bcs, T alpha, T beta, T *C, int64_t crs,        \
                              int64_t ccs) {                                                                   \
        const int L = SK_L_##SFX;                                                                              \
        int nv = (int)((n + L - 1) / L), nb = nv * L;                                                          \
        T *bp = sk_alloc(sizeof(T) * (size_t)(k * nb)); /* k x nb */                                           \
        if (!bp) return false;                                                                                 \
        int rb = SK_ACCS / (nv < SK_JVMAX ? nv : SK_JVMAX);                                                    \
        if (rb > SK_RMAX) rb = SK_RMAX;                                                                        \
        int64_t nblk = (m + rb - 1) / rb;                                                                      \
        if (sk_parallel(nblk)) { /* the packing is split too: a strided gather, not cheap */                   \
            _Pragma("omp parallel")                                                                            \
            {                                                                                                  \
                _Pragma("omp for schedule(static)")                                                            \
                for (int64_t k0 = 0; k0 < k; k0 += SK_KC)                                                      \
                    sk_pack_##SFX(bp, nb, B, brs, bcs, n, k0, k - k0 < SK_KC ? k : k0 + SK_KC);                \
                _Pragma("omp for schedule(static)")                                                            \
                for (int64_t bi = 0; bi < nblk; bi++) {                                                        \
                    int64_t i0 = bi * rb;                                                                      \
                    sk_block_##SFX((int)(m - i0 < rb ? m - i0 : rb), nv, k, A + i0 * ars, ars, acs, bp, nb,    \
                                   C + i0 * crs, crs, ccs, n, alpha, beta);                                    \
                }                                                                                              \
            }                                                                                                  \
        } else {                                                                                               \
            sk_pack_##SFX(bp, nb, B, brs, bcs, n, 0, k);                                                       \
            for (int64_t i0 = 0; i0 < m; i0 += rb)                                                             \
                sk_block_##SFX((int)(m - i0 < rb ? m - i0 : rb), nv, k, A + i0 * ars, ars, acs, bp, nb,        \
                               C + i0 * crs, crs, ccs, n, alpha, beta);                                        \
        }                                                                                                      \
        free(bp);                                                                                              \
        return true;                                                                                           \
    }                                                                                                          \
                                                                                                               \
    static bool sk_strips_##SFX(int64_t m, int64_t n, int64_t k, const T *A, int64_t ars, int64_t acs,         \
                                const T *B, int64_t brs, int64_t bcs, T alpha, T beta, T *C) {                 \
        const int L = SK_L_##SFX;                                                                              \
        /* direct: B's whole vectors [0, lim) in place and the last tail < L columns packed k x L;             \
         * otherwise all of B packed k x nb (lim = n) */                                                       \
        bool direct = bcs == 1;                                                                                \
        int64_t nb = (n + L - 1) / L * L, lim = direct ? n / L * L : n, tail = direct ? n - lim : 0;           \
        T *bp = NULL;                                                                                          \
        if (!direct || tail) {                                                                                 \
            int64_t w = direct ? L : nb;                                                                       \
            if (!(bp = sk_alloc(sizeof(T) * (size_t)(k * w)))) return false;                                   \
            sk_pack_##SFX(bp, w, B + (direct ? lim : 0), brs, bcs, direct ? tail : n, 0, k);                   \
        }                                                                                                      \
        const T *bsrc = direct ? B : bp;                                                                       \
        int64_t bld = direct ? brs : nb;                                                                       \
        /* m small: all rows in one pass over a strip, as many vectors as the registers hold */                \
        int rb = SK_ACCS / SK_JVMAX, jv = SK_JVMAX;                                                            \
        if (m <= SK_SMALL) {                                                                                   \
            rb = (int)m;                                                                                       \
            jv = SK_ACCS / (m < SK_RMAX ? (int)m : SK_RMAX);                                                   \
            if (jv > SK_JVMAX) jv = SK_JVMAX;                                                                  \
        }                                                                                                      \
        int64_t sw = (int64_t)jv * L, nsf = (lim + sw - 1) / sw, ns = nsf + (tail ? 1 : 0);                    \
        /* units: one row block by one strip; when k is long (m small), one thread's run of strips             \
         * instead, walked SK_KC rows of B at a time so that those stay in cache and in the TLB */             \
        int64_t nblk = (m + rb - 1) / rb * ns, kc = k, per = 1;                                                \
        if (k > SK_KC) {                                                                                       \
            int64_t t = graft_get_num_threads();                                                               \
            kc = SK_KC;                                                                                        \
            per = (nblk + t - 1) / t;                                                                          \
        }                                                                                                      \
        int64_t units = (nblk + per - 1) / per;                                                                \
        SK_FOR(sk_parallel(units), units, u, {                                                                 \
            int64_t b0 = u * per, b1 = b0 + per < nblk ? b0 + per : nblk;                                      \
            for (int64_t k0 = 0; k0 < k; k0 += kc) {                                                           \
                int64_t kn = k - k0 < kc ? k - k0 : kc;                                                        \
                T bk = k0 == 0 ? beta : 1; /* later chunks add to the first */                                 \
                for (int64_t bi = b0; bi < b1; bi++) {                                                         \
                    int64_t i0 = bi / ns * rb, si = bi % ns;                                                   \
                    int r = (int)(m - i0 < rb ? m - i0 : rb);                                                  \
                    const T *a = A + i0 * ars + k0 * acs;                                                      \
                    T *c = C + i0 * n;                                                                         \
                    if (si == nsf) {                                                                           \
                        sk_block_##SFX(r, 1, kn, a, ars, acs, bp + k0 * L, L, c + lim, n, 1, tail, alpha, bk); \
                    } else {                                                                                   \
                        int64_t j0 = si * sw, cols = lim - j0 < sw ? lim - j0 : sw;                            \
                        sk_block_##SFX(r, (int)((cols + L - 1) / L), kn, a, ars, acs, bsrc + k0 * bld + j0,    \
                                       bld, c + j0, n, 1, cols, alpha, bk);                                    \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
        });                                                                                                    \
        free(bp);                                                                                              \
        return true;                                                                                           \
    }

SK_DEFINE(f32, float)
SK_DEFINE(f64, double)

/* ---- dot products: A's rows and B's columns both contiguous along k ----
 *
 * The forward of a Linear layer (x W^T) reads both operands along k. Each C[i, j] is
 * then a dot product run in vectors along k, a panel of R rows by NC columns keeping
 * R x NC accumulators: every lane does useful work and nothing is packed. The sums are
 * folded to 16-byte vectors, then four at a time transposed and added. */

typedef int32_t sk_qmask_f32 __attribute__((vector_size(16)));
typedef int64_t sk_qmask_f64 __attribute__((vector_size(16)));

/* out[c] = the sum of q[c]'s lanes, c < 4. */
static inline __attribute__((always_inline)) void sk_qsum_f32(const sk_qf32 *q, float *out) {
    const sk_qmask_f32 lo = {0, 4, 1, 5}, hi = {2, 6, 3, 7}, lo2 = {0, 1, 4, 5}, hi2 = {2, 3, 6, 7};
    /* s01 = [q0[0] + q0[2], q1[0] + q1[2], q0[1] + q0[3], q1[1] + q1[3]], s23 likewise */
    sk_qf32 s01 = __builtin_shuffle(q[0], q[1], lo) + __builtin_shuffle(q[0], q[1], hi);
    sk_qf32 s23 = __builtin_shuffle(q[2], q[3], lo) + __builtin_shuffle(q[2], q[3], hi);
    sk_qf32 r = __builtin_shuffle(s01, s23, lo2) + __builtin_shuffle(s01, s23, hi2);
    memcpy(out, &r, sizeof r);
}

static inline __attribute__((always_inline)) void sk_qsum_f64(const sk_qf64 *q, double *out) {
    const sk_qmask_f64 lo = {0, 2}, hi = {1, 3};
    sk_qf64 r01 = __builtin_shuffle(q[0], q[1], lo) + __builtin_shuffle(q[0], q[1], hi);
    sk_qf64 r23 = __builtin_shuffle(q[2], q[3], lo) + __builtin_shuffle(q[2], q[3], hi);
    memcpy(out, &r01, sizeof r01);
    memcpy(out + 2, &r23, sizeof r23);
}

/* x's lanes added down to one 16-byte vector (the body of sk_fold). */
#if SK_VBYTES == 64
#define SK_FOLD(V, T, Q)                                                                                       \
    typedef T H __attribute__((vector_size(32)));                                                              \
    union { V v; H h[2]; } u = {x};                                                                            \
    union { H v; Q q[2]; } w = {u.h[0] + u.h[1]};                                                              \
    return w.q[0] + w.q[1];
#elif SK_VBYTES == 32
#define SK_FOLD(V, T, Q)                                                                                       \
    union { V v; Q q[2]; } u = {x};                                                                            \
    return u.q[0] + u.q[1];
#else
#define SK_FOLD(V, T, Q) return x;
#endif

#define SK_DOT_FN(SFX, T, R, NC)                                                                               \
    static __attribute__((noinline)) void sk_d##R##x##NC##_##SFX(int64_t k, const T *A, int64_t ars,           \
                                                                 const T *B, int64_t bcs, T *C, int64_t crs,   \
                                                                 int64_t ccs, T alpha, T beta) {               \
        sk_dot_panel_##SFX(R, NC, k, A, ars, B, bcs, C, crs, ccs, alpha, beta);                                \
    }
#define SK_DOT_R 8 /* rows of C in a block when n is small */
#define SK_DOT_C 4 /* columns of C in a block when m is small, and in a panel */

/* SK_DEFINE_DOT(SFX, T): the dot-product kernels for T.
 *
 * sk_dot_panel: C[r, c] = alpha sum_kk A[r * ars + kk] B[c * bcs + kk] + beta C[r, c]
 *   for r < R, c < NC (R x NC accumulators; inlined with constant R and NC). The last
 *   k % L terms run as scalars.
 * sk_dot_block: any R x NC as panels that fit the registers.
 * sk_dots: C in blocks of SK_DOT_R rows by all columns (n small) or of all rows by
 *   SK_DOT_C columns (m small). */
#define SK_DEFINE_DOT(SFX, T)                                                                                  \
    static inline __attribute__((always_inline)) sk_q##SFX sk_fold_##SFX(sk_vec_##SFX x) {                     \
        SK_FOLD(sk_vec_##SFX, T, sk_q##SFX)                                                                    \
    }                                                                                                          \
                                                                                                               \
    static inline __attribute__((always_inline)) void sk_dot_panel_##SFX(                                      \
        const int R, const int NC, int64_t k, const T *A, int64_t ars, const T *B, int64_t bcs, T *C,          \
        int64_t crs, int64_t ccs, T alpha, T beta) {                                                           \
        typedef sk_vec_##SFX V;                                                                                \
        const int L = SK_L_##SFX;                                                                              \
        V acc[SK_RMAX * SK_DOT_C]; /* acc[r * NC + c] */                                                       \
        _Pragma("GCC unroll 16") for (int i = 0; i < R * NC; i++) acc[i] = (V){0};                             \
        int64_t kv = k / L * L;                                                                                \
        for (int64_t kk = 0; kk < kv; kk += L) {                                                               \
            V a[SK_RMAX], b[SK_DOT_C];                                                                         \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                              \
                memcpy(&a[r], A + r * ars + kk, sizeof(V));                                                    \
                SK_IN_REGISTER(a[r]);                                                                          \
            }                                                                                                  \
            _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) {                                             \
                memcpy(&b[c], B + c * bcs + kk, sizeof(V));                                                    \
                SK_IN_REGISTER(b[c]);                                                                          \
            }                                                                                                  \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                                \
                _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) acc[r * NC + c] += a[r] * b[c];           \
        }                                                                                                      \
        T s[SK_RMAX * SK_DOT_C + 3]; /* s[r * NC + c] */                                                       \
        _Pragma("GCC unroll 4") for (int g0 = 0; g0 < R * NC; g0 += 4) {                                       \
            sk_q##SFX q[4];                                                                                    \
            _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++)                                                \
                q[i] = g0 + i < R * NC ? sk_fold_##SFX(acc[g0 + i]) : (sk_q##SFX){0};                          \
            sk_qsum_##SFX(q, s + g0);                                                                          \
        }                                                                                                      \
        for (int64_t kk = kv; kk < k; kk++)                                                                    \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                                \
                _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++)                                           \
                    s[r * NC + c] += A[r * ars + kk] * B[c * bcs + kk];                                        \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                                    \
            _Pragma("GCC unroll 4") for (int c = 0; c < NC; c++) {                                             \
                T *p = C + r * crs + c * ccs;                                                                  \
                *p = beta == 0 ? alpha * s[r * NC + c] : alpha * s[r * NC + c] + beta * *p;                    \
            }                                                                                                  \
    }                                                                                                          \
                                                                                                               \
    SK_DOT_FN(SFX, T, 1, 1) SK_DOT_FN(SFX, T, 2, 1) SK_DOT_FN(SFX, T, 4, 1) SK_DOT_FN(SFX, T, 8, 1)            \
    SK_DOT_FN(SFX, T, 1, 2) SK_DOT_FN(SFX, T, 2, 2) SK_DOT_FN(SFX, T, 4, 2) SK_DOT_FN(SFX, T, 8, 2)            \
    SK_DOT_FN(SFX, T, 1, 4) SK_DOT_FN(SFX, T, 2, 4) SK_DOT_FN(SFX, T, 4, 4)                                    \
                                                                                                               \
    static void sk_dot_block_##SFX(int R, int NC, int64_t k, const T *A, int64_t ars, const T *B, int64_t bcs, \
                                   T *C, int64_t crs, int64_t ccs, T alpha, T beta) {                          \
        for (int c0 = 0; c0 < NC;) {                                                                           \
            int nc = NC - c0 >= 4 ? 4 : NC - c0 >= 2 ? 2 : 1, rmax = SK_ACCS / nc;                             \
            for (int r0 = 0; r0 < R;) {                                                                        \
                int left = R - r0;                                                                             \
                int r = left >= 8 && rmax >= 8 ? 8 : left >= 4 && rmax >= 4 ? 4 : left >= 2 ? 2 : 1;           \
                const T *a = A + r0 * ars, *b = B + c0 * bcs;                                                  \
                T *c = C + r0 * crs + c0 * ccs;                                                                \
                switch (r * 8 + nc) {                                                                          \
                case 8 + 1: sk_d1x1_##SFX(k, a, ars, b, bcs, c, crs, ccs, alpha, beta); break;                 \
                case 16 + 1: sk_d2x1_##SFX(k, a, ars, b, bcs, c, crs, ccs, alpha, beta); break;                \
                case 32 + 1: sk_d4x1_##SFX(k, a, ars, b, bcs, c, crs, ccs, alpha, beta); break;                \
                case 64 + 1: sk_d8x1_##SFX(k, a, ars, b, bcs, c, crs, ccs, alpha, beta); break;                \
                case 8 + 2: sk_d1x2_##SFX(k, a, ars, b, bcs, c, crs, ccs, alpha, beta); break;                 \
                case 16 + 2: sk_d2x2_##SFX(k, a, ars, b, bcs, c, crs, ccs, alpha, beta); break;                \
                case 32 + 2: sk_d4x2_##SFX(k, a, ars, b, bcs, c, crs, ccs, alpha, beta); break;                \
                case 64 + 2: sk_d8x2_##SFX(k, a, ars, b, bcs, c, crs, ccs, alpha, beta); break;                \
                case 8 + 4: sk_d1x4_##SFX(k, a, ars, b, bcs, c, crs, ccs, alpha, beta); break;                 \
                case 16 + 4: sk_d2x4_##SFX(k, a, ars, b, bcs, c, crs, ccs, alpha, beta); break;                \
                default: sk_d4x4_##SFX(k, a, ars, b, bcs, c, crs, ccs, alpha, beta); break;                    \
                }                                                                                              \
                r0 += r;                                                                                       \
            }                                                                                                  \
            c0 += nc;                                                                                          \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    static void sk_dots_##SFX(int64_t m, int64_t n, int64_t k, const T *A, int64_t ars, const T *B,            \
                              int64_t bcs, T alpha, T beta, T *C) {                                            \
        bool by_rows = n <= SK_SMALL;                                                                          \
        int64_t step = by_rows ? SK_DOT_R : SK_DOT_C, len = by_rows ? m : n;                                   \
        int64_t nblk = (len + step - 1) / step;                                                                \
        SK_FOR(sk_parallel(nblk), nblk, bi, {                                                                  \
            int64_t x0 = bi * step, cnt = len - x0 < step ? len - x0 : step;                                   \
            if (by_rows)                                                                                       \
                sk_dot_block_##SFX((int)cnt, (int)n, k, A + x0 * ars, ars, B, bcs, C + x0 * n, n, 1, alpha,    \
                                   beta);                                                                      \
            else                                                                                               \
                sk_dot_block_##SFX((int)m, (int)cnt, k, A, ars, B + x0 * bcs, bcs, C + x0, n, 1, alpha, beta); \
        });                                                                                                    \
    }

SK_DEFINE_DOT(f32, float)
SK_DEFINE_DOT(f64, double)

/* ---- the entry points: which kernel, if any ---- */

#define SK_DEFINE_ENTRY(SFX, T)                                                                                \
    bool graft_cpu_gemm_small_##SFX(const graft_gemm_args *g, const T *A, const T *B, T *C) {                  \
        int64_t m = g->m, n = g->n, k = g->k;                                                                  \
        T alpha = (T)g->alpha, beta = (T)g->beta;                                                              \
        /* vectors stay with gemv; alpha == 0 must not read A or B (0 * inf would be NaN) */                   \
        if (alpha == 0 || m < 2 || n < 2 || k < 1) return false;                                               \
        if (m > SK_SMALL && n > SK_SMALL && k > SK_SMALL) return false;                                        \
        /* two of the sides are those of a matrix in memory and the third is at most 16: no overflow */        \
        int64_t least = sizeof(T) == 4 ? SK_MIN_WORK_POOL : SK_MIN_WORK_POOL / 2;                              \
        if (!sk_pool()) least = m > SK_SMALL && n > SK_SMALL ? SK_MIN_WORK_ONE_K : SK_MIN_WORK_ONE;            \
        if (m * n * k < least) return false;                                                                   \
        bool dots = g->a_cs == 1 && g->b_rs == 1 && k >= SK_DOT_MIN_K;                                         \
        if (n <= SK_SMALL) {                                                                                   \
            /* broadcasting packs B and wastes the lanes past n: it wins with full lanes and rows enough */    \
            if (dots && (!sk_lanes_full(n, SK_L_##SFX) || m < SK_PACK_MIN_M)) {                                \
                sk_dots_##SFX(m, n, k, A, g->a_rs, B, g->b_cs, alpha, beta, C);                                \
                return true;                                                                                   \
            }                                                                                                  \
            return sk_rows_##SFX(m, n, k, A, g->a_rs, g->a_cs, B, g->b_rs, g->b_cs, alpha, beta, C, n, 1);     \
        }                                                                                                      \
        if (k <= SK_SMALL || g->b_cs == 1)                                                                     \
            return sk_strips_##SFX(m, n, k, A, g->a_rs, g->a_cs, B, g->b_rs, g->b_cs, alpha, beta, C);         \
        /* m small, B's rows strided */                                                                        \
        if (dots) {                                                                                            \
            sk_dots_##SFX(m, n, k, A, g->a_rs, B, g->b_cs, alpha, beta, C);                                    \
            return true;                                                                                       \
        }                                                                                                      \
        /* C^T (n x m: C read column-major) = B^T A^T, B^T's rows contiguous */                                \
        return sk_rows_##SFX(n, m, k, B, g->b_cs, g->b_rs, A, g->a_cs, g->a_rs, alpha, beta, C, 1, n);         \
    }

SK_DEFINE_ENTRY(f32, float)
SK_DEFINE_ENTRY(f64, double)
