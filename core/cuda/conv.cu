/* graft CUDA kernels: convolutions as im2col / col2im around cuBLAS products.
 *
 * For a chunk of nb images the column matrix col [G][K][nb * P] (K = C/G * kh * kw rows
 * per group, one column per output position of every image of the chunk, P = OH * OW)
 * turns each primitive into one strided-batched GEMM over the groups:
 *
 *     forward   small_g [O/G, nb*P] = W_g [O/G, K] col_g              (then to [nb, O, P])
 *     input     col_g = W_g^T small_g, then col2im gathers into big   (conv^T)
 *     weight    dW_g [O/G, K] += small_g col_g^T
 *
 * Folding the batch into the GEMM's n keeps the products large for small feature maps
 * (7x7 at the end of a ResNet); the price is one [O, nb, P] <-> [nb, O, P] transposition
 * (swap_kernel), skipped for a chunk of one image. 1x1 convolutions with stride 1 and no
 * padding need no columns: one product per image (batched, the weight shared).
 * Chunks keep the workspace under a cap (GRAFT_CUDA_CONV_WORKSPACE by default). 16-bit operands go to cuBLAS
 * as 16-bit with float32 accumulation; sums that leave cuBLAS (the columns of col2im,
 * the transposed forward result) stay in float32 until the single final rounding.
 */
#include "kernel.cuh"
#include "cuda/conv.h"
#include "cuda/linalg.h"

#include <string.h>

/* ---- kernels ---- */

/* col[(c * kh + i) * kw + j][n * P + oh * OW + ow] = big[n][c][oh*sh - ph + i*dh][ow*sw - pw + j*dw]
 * (0 in the padding). big: the chunk [nb, C, H, W]; S copied bit for bit. I: the index
 * type, 32-bit whenever every index fits (integer division is much cheaper). */
template <typename S, typename I>
__global__ void im2col_kernel(const S *big, S *col, I nb, I C, I H, I W, I OH, I OW, I kh, I kw, I sh, I sw, I ph,
                              I pw, I dh, I dw) {
    I P = OH * OW, cols = nb * P;
    int64_t total = (int64_t)C * kh * kw * cols;
    GK_FOR(idx64, total) {
        I idx = (I)idx64;
        I q = idx % cols, r = idx / cols;
        I n = q / P, p = q - n * P;
        I oh = p / OW, ow = p - oh * OW;
        I j = r % kw, t = r / kw;
        I i = t % kh, c = t / kh;
        I h = oh * sh - ph + i * dh, w = ow * sw - pw + j * dw;
        S v = 0;
        if (h >= 0 && h < H && w >= 0 && w < W) v = big[((n * C + c) * H + h) * W + w];
        col[idx] = v;
    }
}

/* big[n][c][h][w] = bias[c] + the sum of the columns whose window covers (h, w): the
 * adjoint of im2col as a gather (one thread per output element, no atomics, a fixed
 * order). col in the compute type [C * kh * kw][nb * P]. */
template <int D, typename I>
__global__ void col2im_kernel(const typename gk_type<D>::C *col, typename gk_type<D>::S *big,
                              const typename gk_type<D>::S *bias, I nb, I C, I H, I W, I OH, I OW, I kh, I kw, I sh,
                              I sw, I ph, I pw, I dh, I dw) {
    typedef gk_type<D> T;
    I P = OH * OW, cols = nb * P;
    int64_t total = (int64_t)nb * C * H * W;
    GK_FOR(idx64, total) {
        I idx = (I)idx64;
        I w = idx % W, t = idx / W;
        I h = t % H;
        t /= H;
        I c = t % C, n = t / C;
        typename T::C acc = bias ? T::ld(bias[c]) : (typename T::C)0;
        for (I i = 0; i < kh; i++) {
            I hh = h + ph - i * dh;
            if (hh < 0 || hh % sh) continue;
            I oh = hh / sh;
            if (oh >= OH) continue;
            for (I j = 0; j < kw; j++) {
                I ww = w + pw - j * dw;
                if (ww < 0 || ww % sw) continue;
                I ow = ww / sw;
                if (ow >= OW) continue;
                acc += col[((c * kh + i) * kw + j) * cols + n * P + oh * OW + ow];
            }
        }
        big[idx] = T::st(acc);
    }
}

/* dst[b][a][p] = src[a][b][p] (+ bias[a]), src and dst each in the storage type S or
 * the compute type C of dtype D (SRC_C, DST_C). */
template <int D, bool SRC_C, bool DST_C, typename I>
__global__ void swap_kernel(const void *src, void *dst, const typename gk_type<D>::S *bias, I A, I B, I P) {
    typedef gk_type<D> T;
    typedef typename T::C Cc;
    int64_t total = (int64_t)A * B * P;
    GK_FOR(idx64, total) {
        I idx = (I)idx64;
        I p = idx % P, t = idx / P;
        I a = t % A, b = t / A;
        I s = (a * B + b) * P + p;
        Cc v = SRC_C ? ((const Cc *)src)[s] : T::ld(((const typename T::S *)src)[s]);
        if (bias) v += T::ld(bias[a]);
        if (DST_C) ((Cc *)dst)[idx] = v;
        else ((typename T::S *)dst)[idx] = T::st(v);
    }
}

/* x[n][c][p] += bias[c] in place, x [nb, C, P]. */
template <int D, typename I>
__global__ void bias_add_kernel(typename gk_type<D>::S *x, const typename gk_type<D>::S *bias, I C, I P,
                                int64_t total) {
    typedef gk_type<D> T;
    GK_FOR(idx, total) {
        I c = ((I)idx / P) % C;
        x[idx] = T::st(T::ld(x[idx]) + T::ld(bias[c]));
    }
}

#define BG_THREADS 256
/* db[c] = sum over n, p of x[n][c][p]: one block per channel, each thread a strided
 * share of every image's row (coalesced), then a tree in shared memory. */
template <int D>
__global__ void bias_grad_kernel(const typename gk_type<D>::S *x, typename gk_type<D>::C *db, int64_t N, int64_t C,
                                 int64_t P) {
    typedef gk_type<D> T;
    typedef typename T::C Cc;
    __shared__ Cc part[BG_THREADS];
    int64_t c = blockIdx.x;
    Cc acc = 0;
    for (int64_t n = 0; n < N; n++) {
        const typename T::S *row = x + (n * C + c) * P;
        for (int64_t p = threadIdx.x; p < P; p += blockDim.x) acc += T::ld(row[p]);
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = BG_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[c] = part[0];
}

/* ---- host side ---- */

namespace {

struct cv_geo {
    int64_t N, G, C, H, W, O, OH, OW, P, K, Og, kh, kw;
    bool pointwise; /* 1x1, stride 1, no padding, one group: no columns */
};

cv_geo cv_geo_of(const graft_conv_geom *g, bool half) {
    cv_geo q;
    q.N = g->N, q.G = g->G, q.C = g->C, q.H = g->H, q.W = g->W, q.O = g->O, q.OH = g->OH, q.OW = g->OW;
    q.kh = g->kh, q.kw = g->kw;
    q.P = g->OH * g->OW;
    q.K = g->C / g->G * g->kh * g->kw;
    q.Og = g->O / g->G;
    q.pointwise = !half && g->G == 1 && g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 &&
                  g->pw == 0 && g->H == g->OH && g->W == g->OW;
    return q;
}

size_t cv_workspace_cap = GRAFT_CUDA_CONV_WORKSPACE;

/* Images per chunk: as many as keep per_image bytes each under the workspace cap. */
int64_t cv_chunk(int64_t N, size_t per_image) {
    int64_t nb = per_image ? (int64_t)(cv_workspace_cap / per_image) : N;
    if (nb < 1) nb = 1;
    return nb < N ? nb : N;
}

graft_dtype cv_compute(graft_dtype d) { return d == GRAFT_F64 ? GRAFT_F64 : GRAFT_F32; }

/* +1: a contiguous workspace of n elements of dtype d on dev. */
graft_status cv_workspace(graft_tensor **out, int64_t n, graft_dtype d, graft_device dev) {
    return graft_tensor_empty(out, 1, &n, d, dev);
}

graft_cuda_gemm_args cv_gemm(graft_dtype ab, graft_dtype c, int device, bool tf32) {
    graft_cuda_gemm_args a;
    memset(&a, 0, sizeof a);
    a.ab_dtype = ab;
    a.c_dtype = c;
    a.device = device;
    a.alpha = 1.0;
    a.tf32 = tf32;
    return a;
}

/* Whether every index of a kernel over `total` elements (and of the tensors it reads,
 * at most `span` elements) fits int32. */
bool cv_small_index(int64_t total, int64_t span) { return total < INT32_MAX && span < INT32_MAX; }

template <int D, typename I>
graft_status cv_im2col_as(const graft_conv_geom *g, const cv_geo &q, const char *big, void *col, int64_t cnt) {
    typedef typename gk_type<D>::S S;
    int64_t total = q.C * q.kh * q.kw * cnt * q.P;
    GK_LAUNCH_FLAT((im2col_kernel<S, I>), gk_blocks(total, GK_THREADS), GK_THREADS, 0, (const S *)big, (S *)col,
                   (I)cnt, (I)q.C, (I)q.H, (I)q.W, (I)q.OH, (I)q.OW, (I)q.kh, (I)q.kw, (I)g->sh, (I)g->sw, (I)g->ph,
                   (I)g->pw, (I)g->dh, (I)g->dw);
    return gk_launched("im2col");
}

template <int D>
graft_status cv_im2col(const graft_conv_geom *g, const cv_geo &q, const char *big, void *col, int64_t cnt) {
    if (cv_small_index(q.C * q.kh * q.kw * cnt * q.P, cnt * q.C * q.H * q.W)) return cv_im2col_as<D, int32_t>(g, q, big, col, cnt);
    return cv_im2col_as<D, int64_t>(g, q, big, col, cnt);
}

template <int D, typename I>
graft_status cv_col2im_as(const graft_conv_geom *g, const cv_geo &q, const void *col, char *big, const void *bias,
                          int64_t cnt) {
    typedef gk_type<D> T;
    int64_t total = cnt * q.C * q.H * q.W;
    GK_LAUNCH_FLAT((col2im_kernel<D, I>), gk_blocks(total, GK_THREADS), GK_THREADS, 0, (const typename T::C *)col,
                   (typename T::S *)big, (const typename T::S *)bias, (I)cnt, (I)q.C, (I)q.H, (I)q.W, (I)q.OH,
                   (I)q.OW, (I)q.kh, (I)q.kw, (I)g->sh, (I)g->sw, (I)g->ph, (I)g->pw, (I)g->dh, (I)g->dw);
    return gk_launched("col2im");
}

template <int D>
graft_status cv_col2im(const graft_conv_geom *g, const cv_geo &q, const void *col, char *big, const void *bias,
                       int64_t cnt) {
    if (cv_small_index(cnt * q.C * q.H * q.W, q.C * q.kh * q.kw * cnt * q.P))
        return cv_col2im_as<D, int32_t>(g, q, col, big, bias, cnt);
    return cv_col2im_as<D, int64_t>(g, q, col, big, bias, cnt);
}

/* dst[b][a][p] = src[a][b][p] (+ bias[a]). */
template <int D, bool SRC_C, bool DST_C>
graft_status cv_swap(const void *src, void *dst, const void *bias, int64_t A, int64_t B, int64_t P) {
    typedef typename gk_type<D>::S S;
    int64_t total = A * B * P;
    if (cv_small_index(total, total))
        GK_LAUNCH_FLAT((swap_kernel<D, SRC_C, DST_C, int32_t>), gk_blocks(total, GK_THREADS), GK_THREADS, 0, src, dst,
                       (const S *)bias, (int32_t)A, (int32_t)B, (int32_t)P);
    else
        GK_LAUNCH_FLAT((swap_kernel<D, SRC_C, DST_C, int64_t>), gk_blocks(total, GK_THREADS), GK_THREADS, 0, src, dst,
                       (const S *)bias, A, B, P);
    return gk_launched("conv (transpose)");
}

template <int D>
graft_status cv_bias_add(void *x, const void *bias, int64_t nb, int64_t C, int64_t P) {
    typedef typename gk_type<D>::S S;
    int64_t total = nb * C * P;
    if (!bias || total == 0) return GRAFT_OK;
    if (cv_small_index(total, total))
        GK_LAUNCH_FLAT((bias_add_kernel<D, int32_t>), gk_blocks(total, GK_THREADS), GK_THREADS, 0, (S *)x,
                       (const S *)bias, (int32_t)C, (int32_t)P, total);
    else
        GK_LAUNCH_FLAT((bias_add_kernel<D, int64_t>), gk_blocks(total, GK_THREADS), GK_THREADS, 0, (S *)x,
                       (const S *)bias, C, P, total);
    return gk_launched("conv (bias)");
}

template <int D>
graft_status cv_small(const graft_conv_geom *g, graft_tensor *big, graft_tensor *w, graft_tensor *bias,
                      graft_tensor *small, bool tf32, const char *op) {
    typedef gk_type<D> T;
    graft_dtype dt = (graft_dtype)D, cdt = cv_compute(dt);
    bool half = dt == GRAFT_F16 || dt == GRAFT_BF16;
    cv_geo q = cv_geo_of(g, half);
    graft_device dev = graft_tensor_device(small);
    size_t esz = sizeof(typename T::S), csz = sizeof(typename T::C);
    const char *bp = (const char *)graft_tensor_data(big);
    char *sp = (char *)graft_tensor_data(small);
    const void *biasp = bias ? graft_tensor_data(bias) : NULL;
    graft_status st = GRAFT_OK;
    if (q.N == 0 || q.P == 0 || q.O == 0) return GRAFT_OK;
    graft_cuda_gemm_args a = cv_gemm(dt, dt, dev.index, tf32);
    if (q.pointwise) {
        /* small_n [O, P] = W [O, C] big_n [C, P], for every n */
        a.m = q.O, a.n = q.P, a.k = q.C, a.nbatch = q.N;
        a.a = graft_tensor_data(w), a.a_rs = q.C, a.a_cs = 1, a.a_bs = 0;
        a.b = bp, a.b_rs = q.P, a.b_cs = 1, a.b_bs = q.C * q.P;
        a.c = sp, a.c_rs = q.P, a.c_bs = q.O * q.P;
        if ((st = graft_cuda_gemm(&a, op))) return st;
        return cv_bias_add<D>(sp, biasp, q.N, q.O, q.P);
    }
    int64_t nb = cv_chunk(q.N, (size_t)(q.G * q.K * q.P) * esz + (size_t)(q.O * q.P) * csz);
    graft_tensor *col = NULL, *tmp = NULL;
    if ((st = cv_workspace(&col, q.G * q.K * nb * q.P, dt, dev))) return st;
    if ((nb > 1 || half) && (st = cv_workspace(&tmp, q.O * nb * q.P, cdt, dev))) goto done;
    for (int64_t n0 = 0; n0 < q.N && !st; n0 += nb) {
        int64_t cnt = q.N - n0 < nb ? q.N - n0 : nb, cols = cnt * q.P;
        char *out = sp + (size_t)(n0 * q.O * q.P) * esz;
        bool direct = cnt == 1 && !half;
        if ((st = cv_im2col<D>(g, q, bp + (size_t)(n0 * q.C * q.H * q.W) * esz, graft_tensor_data(col), cnt))) break;
        a.m = q.Og, a.n = cols, a.k = q.K, a.nbatch = q.G;
        a.a = graft_tensor_data(w), a.a_rs = q.K, a.a_cs = 1, a.a_bs = q.Og * q.K;
        a.b = graft_tensor_data(col), a.b_rs = cols, a.b_cs = 1, a.b_bs = q.K * cols;
        a.c = direct ? (void *)out : graft_tensor_data(tmp), a.c_dtype = direct ? dt : cdt;
        a.c_rs = cols, a.c_bs = q.Og * cols;
        if ((st = graft_cuda_gemm(&a, op))) break;
        if (direct) st = cv_bias_add<D>(out, biasp, 1, q.O, q.P);
        else st = cv_swap<D, true, false>(graft_tensor_data(tmp), out, biasp, q.O, cnt, q.P);
    }
done:
    graft_tensor_release(col);
    graft_tensor_release(tmp);
    return st;
}

template <int D>
graft_status cv_big(const graft_conv_geom *g, graft_tensor *small, graft_tensor *w, graft_tensor *bias,
                    graft_tensor *big, bool tf32, const char *op) {
    typedef gk_type<D> T;
    graft_dtype dt = (graft_dtype)D, cdt = cv_compute(dt);
    bool half = dt == GRAFT_F16 || dt == GRAFT_BF16;
    cv_geo q = cv_geo_of(g, half);
    graft_device dev = graft_tensor_device(big);
    size_t esz = sizeof(typename T::S), csz = sizeof(typename T::C);
    const char *sp = (const char *)graft_tensor_data(small);
    char *bp = (char *)graft_tensor_data(big);
    const void *biasp = bias ? graft_tensor_data(bias) : NULL;
    graft_status st = GRAFT_OK;
    if (q.N == 0 || q.C == 0 || q.H * q.W == 0) return GRAFT_OK;
    graft_cuda_gemm_args a = cv_gemm(dt, dt, dev.index, tf32);
    if (q.pointwise) {
        /* big_n [C, P] = W^T [C, O] small_n [O, P], for every n */
        a.m = q.C, a.n = q.P, a.k = q.O, a.nbatch = q.N;
        a.a = graft_tensor_data(w), a.a_rs = 1, a.a_cs = q.C, a.a_bs = 0;
        a.b = sp, a.b_rs = q.P, a.b_cs = 1, a.b_bs = q.O * q.P;
        a.c = bp, a.c_rs = q.P, a.c_bs = q.C * q.P;
        if ((st = graft_cuda_gemm(&a, op))) return st;
        return cv_bias_add<D>(bp, biasp, q.N, q.C, q.P);
    }
    int64_t nb = cv_chunk(q.N, (size_t)(q.G * q.K * q.P) * csz + (size_t)(q.O * q.P) * esz);
    graft_tensor *col = NULL, *tmp = NULL;
    if ((st = cv_workspace(&col, q.G * q.K * nb * q.P, cdt, dev))) return st;
    if (nb > 1 && (st = cv_workspace(&tmp, q.O * nb * q.P, dt, dev))) goto done;
    for (int64_t n0 = 0; n0 < q.N && !st; n0 += nb) {
        int64_t cnt = q.N - n0 < nb ? q.N - n0 : nb, cols = cnt * q.P;
        const char *in = sp + (size_t)(n0 * q.O * q.P) * esz;
        /* (no output channels: k = 0, cuBLAS's part writes zero columns) */
        if (cnt > 1 && q.O > 0) {
            if ((st = cv_swap<D, false, false>(in, graft_tensor_data(tmp), NULL, cnt, q.O, q.P))) break;
            in = (const char *)graft_tensor_data(tmp);
        }
        a.m = q.K, a.n = cols, a.k = q.Og, a.nbatch = q.G;
        a.a = graft_tensor_data(w), a.a_rs = 1, a.a_cs = q.K, a.a_bs = q.Og * q.K;
        a.b = in, a.b_rs = cols, a.b_cs = 1, a.b_bs = q.Og * cols;
        a.c = graft_tensor_data(col), a.c_dtype = cdt, a.c_rs = cols, a.c_bs = q.K * cols;
        if ((st = graft_cuda_gemm(&a, op))) break;
        st = cv_col2im<D>(g, q, graft_tensor_data(col), bp + (size_t)(n0 * q.C * q.H * q.W) * esz, biasp, cnt);
    }
done:
    graft_tensor_release(col);
    graft_tensor_release(tmp);
    return st;
}

template <int D>
graft_status cv_weight(const graft_conv_geom *g, graft_tensor *small, graft_tensor *big, graft_tensor *dw, bool tf32,
                       const char *op) {
    typedef gk_type<D> T;
    graft_dtype dt = (graft_dtype)D;
    cv_geo q = cv_geo_of(g, true); /* never pointwise: the batch is reduced */
    graft_device dev = graft_tensor_device(dw);
    size_t esz = sizeof(typename T::S);
    const char *sp = (const char *)graft_tensor_data(small), *bp = (const char *)graft_tensor_data(big);
    graft_status st = GRAFT_OK;
    if (q.N == 0 || q.P == 0) return graft_tensor_fill_(dw, 0.0);
    if (q.O == 0) return GRAFT_OK;
    int64_t nb = cv_chunk(q.N, (size_t)(q.G * q.K * q.P) * esz + (size_t)(q.O * q.P) * esz);
    graft_tensor *col = NULL, *tmp = NULL;
    graft_cuda_gemm_args a = cv_gemm(dt, dw->dtype, dev.index, tf32);
    if ((st = cv_workspace(&col, q.G * q.K * nb * q.P, dt, dev))) return st;
    if (nb > 1 && (st = cv_workspace(&tmp, q.O * nb * q.P, dt, dev))) goto done;
    for (int64_t n0 = 0; n0 < q.N && !st; n0 += nb) {
        int64_t cnt = q.N - n0 < nb ? q.N - n0 : nb, cols = cnt * q.P;
        const char *in = sp + (size_t)(n0 * q.O * q.P) * esz;
        if ((st = cv_im2col<D>(g, q, bp + (size_t)(n0 * q.C * q.H * q.W) * esz, graft_tensor_data(col), cnt))) break;
        if (cnt > 1) {
            if ((st = cv_swap<D, false, false>(in, graft_tensor_data(tmp), NULL, cnt, q.O, q.P))) break;
            in = (const char *)graft_tensor_data(tmp);
        }
        a.m = q.Og, a.n = q.K, a.k = cols, a.nbatch = q.G;
        a.a = in, a.a_rs = cols, a.a_cs = 1, a.a_bs = q.Og * cols;
        a.b = graft_tensor_data(col), a.b_rs = 1, a.b_cs = cols, a.b_bs = q.K * cols;
        a.c = graft_tensor_data(dw), a.c_rs = q.K, a.c_bs = q.Og * q.K;
        a.beta = n0 == 0 ? 0.0 : 1.0;
        st = graft_cuda_gemm(&a, op);
    }
done:
    graft_tensor_release(col);
    graft_tensor_release(tmp);
    return st;
}

/* Every operand on dw's device, contiguous, of g->dtype (out may be the accumulation dtype). */
graft_status cv_check(const graft_conv_geom *g, graft_tensor *const *ts, int n, graft_tensor *out, const char *op) {
    graft_dtype dt = g->dtype;
    for (int i = 0; i < n; i++) {
        if (!ts[i]) continue;
        if (ts[i]->dtype != dt || !graft_tensor_is_contiguous(ts[i]) ||
            !graft_device_eq(graft_tensor_device(ts[i]), graft_tensor_device(out)))
            return graft_error(GRAFT_EINTERNAL, "%s: CUDA conv operands must be contiguous %s on one device", op,
                               graft_dtype_name(dt));
    }
    if (!graft_tensor_is_contiguous(out) || !(out->dtype == dt || out->dtype == cv_compute(dt)))
        return graft_error(GRAFT_EINTERNAL, "%s: CUDA conv output must be contiguous", op);
    return GRAFT_OK;
}

/* conv_small (BIG false) and conv_big: the operands checked, the output in their dtype,
 * then the dtype's instance of cv_small or cv_big. */
template <bool BIG>
graft_status cv_forward(const graft_conv_geom *g, graft_tensor *in, graft_tensor *w, graft_tensor *bias,
                        graft_tensor *out, bool tf32, const char *op) {
    graft_tensor *ts[3] = {in, w, bias};
    graft_status st = cv_check(g, ts, 3, out, op);
    if (st) return st;
    if (out->dtype != g->dtype) return graft_error(GRAFT_EINTERNAL, "%s: output dtype", op);
    GK_DISPATCH_FLOAT(g->dtype, {
        if constexpr (BIG) return cv_big<D>(g, in, w, bias, out, tf32, op);
        else return cv_small<D>(g, in, w, bias, out, tf32, op);
    });
    return graft_error(GRAFT_ETYPE, "%s: not implemented for %s on CUDA", op, graft_dtype_name(g->dtype));
}

} // namespace

extern "C" graft_status graft_cuda_conv_set_workspace(size_t bytes) {
    cv_workspace_cap = bytes ? bytes : GRAFT_CUDA_CONV_WORKSPACE;
    return GRAFT_OK;
}

extern "C" graft_status graft_cuda_conv_small(const graft_conv_geom *g, graft_tensor *big, graft_tensor *w,
                                              graft_tensor *bias, graft_tensor *small, bool tf32, const char *op) {
    GK_ON_DEVICE(small);
    return cv_forward<false>(g, big, w, bias, small, tf32, op);
}

extern "C" graft_status graft_cuda_conv_big(const graft_conv_geom *g, graft_tensor *small, graft_tensor *w,
                                            graft_tensor *bias, graft_tensor *big, bool tf32, const char *op) {
    GK_ON_DEVICE(big);
    return cv_forward<true>(g, small, w, bias, big, tf32, op);
}

extern "C" graft_status graft_cuda_conv_weight(const graft_conv_geom *g, graft_tensor *small, graft_tensor *big,
                                               graft_tensor *dw, bool tf32, const char *op) {
    GK_ON_DEVICE(dw);
    graft_tensor *ts[2] = {small, big};
    graft_status st = cv_check(g, ts, 2, dw, op);
    if (st) return st;
    GK_DISPATCH_FLOAT(g->dtype, return cv_weight<D>(g, small, big, dw, tf32, op));
    return graft_error(GRAFT_ETYPE, "%s: not implemented for %s on CUDA", op, graft_dtype_name(g->dtype));
}

extern "C" graft_status graft_cuda_conv_bias_grad(graft_tensor *x, int64_t N, int64_t C, int64_t P, graft_tensor *db,
                                                  const char *op) {
    GK_ON_DEVICE(db);
    if (!graft_tensor_is_contiguous(x) || db->dtype != cv_compute(x->dtype))
        return graft_error(GRAFT_EINTERNAL, "%s: bias gradient operands", op);
    if (C == 0) return GRAFT_OK;
    GK_DISPATCH_FLOAT(x->dtype, {
        typedef gk_type<D> T;
        GK_LAUNCH(bias_grad_kernel<D>, (unsigned)C, BG_THREADS, 0, (const typename T::S *)graft_tensor_data(x),
                  (typename T::C *)graft_tensor_data(db), N, C, P);
        return gk_launched(op);
    })
    return graft_error(GRAFT_ETYPE, "%s: not implemented for %s on CUDA", op, graft_dtype_name(x->dtype));
}
