/* graft CUDA kernels: batch, layer and group normalisation, forward and backward.
 * Statistics are two-pass (the mean, then the centred squares) and every reduction runs
 * in a fixed order (per-thread partials, warp shuffles, shared memory), so results are
 * deterministic; sums are in float (double for float64). Batch norm reduces one channel
 * per block, then applies per-channel coefficients in one elementwise pass; layer norm
 * gives each row a warp (short rows) or a block; group norm gives each group a block.
 * The formulas are those of core/nn/norm.c (the CPU reference). */
#include "kernel.cuh"
#include "cuda/norm.h"

#define NM_THREADS 256

/* The accumulation type of a dtype: float, double for float64. */
template <int D> struct nm_acc { typedef float A; };
template <> struct nm_acc<GRAFT_F64> { typedef double A; };

/* Butterfly sum: every lane ends with the same total (the same additions, commuted). */
template <typename A> __device__ __forceinline__ A nm_warp_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over a 1-D block (blockDim.x a multiple of 32), returned to every thread. Every
 * thread of the block must call it; sh holds 32 values. */
template <typename A> __device__ __forceinline__ A nm_block_sum(A v, A *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = nm_warp_sum(v);
    __syncthreads(); /* the previous call may still be reading sh */
    if (lane == 0) sh[w] = v;
    __syncthreads();
    A t = lane < nw ? sh[lane] : (A)0;
    return nm_warp_sum(t); /* each warp sums the partials itself: no broadcast needed */
}

/* A 1-D vector of any float dtype and stride (weight, bias, running statistics). */
struct nm_vec {
    char *p;
    int dt;
    int64_t sb; /* stride in bytes */
};

static nm_vec nm_vec_of(const graft_tensor *t) {
    nm_vec v = {NULL, GRAFT_F32, 0};
    if (!t) return v;
    v.p = (char *)graft_tensor_data(t);
    v.dt = t->dtype;
    v.sb = t->stride[0] * (int64_t)graft_dtype_size(t->dtype);
    return v;
}

__device__ __forceinline__ double nm_get(const nm_vec &v, int64_t i, double dflt) {
    return v.p ? gk_load_f64(v.p + i * v.sb, v.dt) : dflt;
}

__device__ __forceinline__ void nm_put(const nm_vec &v, int64_t i, double x) { gk_store_f64(v.p + i * v.sb, v.dt, x); }

/* ======================================================================== */
/* batch_norm                                                                */
/* ======================================================================== */

/* Everything the per-channel finishing step needs, forward and backward. coef [4, C]
 * holds (a, b, m, d) per channel for the elementwise pass out = a u + b (v - m) + d. */
template <int D> struct bn_args {
    typedef typename gk_type<D>::S S;
    typedef typename nm_acc<D>::A A;
    S *save_mean, *save_invstd;       /* forward outputs */
    const S *mean_in, *invstd_in;     /* backward inputs */
    S *dw, *db;                       /* backward outputs (may be NULL) */
    A *coef;
    nm_vec w, b, rm, rv;
    const char *nbt;                  /* device integer scalar or NULL */
    int nbt_dt;
    int64_t C;
    double M, momentum, eps;
    bool cumulative, training;
};

enum { BN_STATS = 0, BN_GRAD = 1 };

/* Forward, channel c: invstd = 1 / sqrt(var + eps), y = x scale + shift with
 * scale = invstd w, shift = b - mean scale; with batch statistics the running stats take
 * (1 - f) r + f s (the variance unbiased by M / (M - 1)). */
template <int D>
__device__ void bn_finish_fwd(const bn_args<D> &a, int64_t c, double mean, double var, bool batch) {
    typedef gk_type<D> T;
    typedef typename nm_acc<D>::A A;
    double invstd = 1.0 / sqrt(var + a.eps);
    a.save_mean[c] = T::st((A)mean);
    a.save_invstd[c] = T::st((A)invstd);
    double sc = invstd * nm_get(a.w, c, 1.0);
    a.coef[c] = (A)sc;
    a.coef[a.C + c] = 0;
    a.coef[2 * a.C + c] = 0;
    a.coef[3 * a.C + c] = (A)(nm_get(a.b, c, 0.0) - mean * sc);
    if (batch && a.rm.p) {
        double f = a.momentum;
        if (a.cumulative) f = 1.0 / (double)(gk_load_i64(a.nbt, a.nbt_dt) + 1);
        double unbias = a.M / (a.M - 1);
        nm_put(a.rm, c, (1 - f) * nm_get(a.rm, c, 0.0) + f * mean);
        nm_put(a.rv, c, (1 - f) * nm_get(a.rv, c, 0.0) + f * var * unbias);
    }
}

/* Backward, channel c, from sg = sum(g) and sgc = sum(g (x - mean)); k = invstd w:
 *   training: dx = k g - k invstd^2 sgc / M (x - mean) - k sg / M;  eval: dx = k g
 *   dw = sgc invstd, db = sg. */
template <int D> __device__ void bn_finish_bwd(const bn_args<D> &a, int64_t c, double sg, double sgc) {
    typedef gk_type<D> T;
    typedef typename nm_acc<D>::A A;
    double is = T::ld(a.invstd_in[c]), k = is * nm_get(a.w, c, 1.0);
    if (a.dw) a.dw[c] = T::st((A)(sgc * is));
    if (a.db) a.db[c] = T::st((A)sg);
    a.coef[c] = (A)k;
    a.coef[a.C + c] = a.training ? (A)(-k * is * is * sgc / a.M) : (A)0;
    a.coef[2 * a.C + c] = T::ld(a.mean_in[c]);
    a.coef[3 * a.C + c] = a.training ? (A)(-k * sg / a.M) : (A)0;
}

/* One channel per block (grid-stride), x [N, C, L] read as TY rows of TX lanes (TX a
 * power of two >= L, up to the block), so consecutive lanes read consecutive l. Launched
 * with up to 1024 threads: the bound keeps registers within 64 per thread. */
template <int D>
__global__ void __launch_bounds__(1024)
    bn_reduce_plane(const typename gk_type<D>::S *x, const typename gk_type<D>::S *g, bn_args<D> a, int64_t N,
                    int64_t L, int TX, int mode) {
    typedef gk_type<D> T;
    typedef typename nm_acc<D>::A A;
    __shared__ A sh[32];
    const int64_t C = a.C;
    int tx = threadIdx.x % TX, ty = threadIdx.x / TX, TY = blockDim.x / TX;
    for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
        if (mode == BN_STATS) {
            A s = 0;
            for (int64_t n = ty; n < N; n += TY) {
                const typename T::S *row = x + (n * C + c) * L;
                for (int64_t l = tx; l < L; l += TX) s += T::ld(row[l]);
            }
            A m = nm_block_sum(s, sh) / (A)a.M;
            A q = 0;
            for (int64_t n = ty; n < N; n += TY) {
                const typename T::S *row = x + (n * C + c) * L;
                for (int64_t l = tx; l < L; l += TX) {
                    A d = T::ld(row[l]) - m;
                    q += d * d;
                }
            }
            q = nm_block_sum(q, sh);
            if (threadIdx.x == 0) bn_finish_fwd<D>(a, c, (double)m, (double)q / a.M, true);
        } else {
            A m = T::ld(a.mean_in[c]), sg = 0, sgc = 0;
            for (int64_t n = ty; n < N; n += TY) {
                const typename T::S *xr = x + (n * C + c) * L, *gr = g + (n * C + c) * L;
                for (int64_t l = tx; l < L; l += TX) {
                    A gv = T::ld(gr[l]);
                    sg += gv;
                    sgc += gv * (T::ld(xr[l]) - m);
                }
            }
            sg = nm_block_sum(sg, sh);
            sgc = nm_block_sum(sgc, sh);
            if (threadIdx.x == 0) bn_finish_bwd<D>(a, c, (double)sg, (double)sgc);
        }
    }
}

/* x [N, C] (L = 1): a block of 32 x BN_ROWS threads owns 32 adjacent channels
 * (coalesced rows); the BN_ROWS partial sums of each channel are added in order by its
 * y = 0 thread. */
#define BN_ROWS 16
template <int D>
__global__ void bn_reduce_cols(const typename gk_type<D>::S *x, const typename gk_type<D>::S *g, bn_args<D> a,
                               int64_t N, int mode) {
    typedef gk_type<D> T;
    typedef typename nm_acc<D>::A A;
    __shared__ A sa[BN_ROWS][33], sb[BN_ROWS][33], sm[32];
    const int64_t C = a.C;
    int tx = threadIdx.x, ty = threadIdx.y;
    for (int64_t c0 = (int64_t)blockIdx.x * 32; c0 < C; c0 += (int64_t)gridDim.x * 32) {
        int64_t c = c0 + tx;
        bool ok = c < C;
        A pa = 0, pb = 0;
        if (mode == BN_STATS) {
            if (ok)
                for (int64_t n = ty; n < N; n += BN_ROWS) pa += T::ld(x[n * C + c]);
            sa[ty][tx] = pa;
            __syncthreads();
            if (ty == 0) {
                A s = 0;
                for (int k = 0; k < BN_ROWS; k++) s += sa[k][tx];
                sm[tx] = s / (A)a.M;
            }
            __syncthreads();
            A m = sm[tx];
            if (ok)
                for (int64_t n = ty; n < N; n += BN_ROWS) {
                    A d = T::ld(x[n * C + c]) - m;
                    pb += d * d;
                }
            sb[ty][tx] = pb;
            __syncthreads();
            if (ty == 0 && ok) {
                A q = 0;
                for (int k = 0; k < BN_ROWS; k++) q += sb[k][tx];
                bn_finish_fwd<D>(a, c, (double)m, (double)q / a.M, true);
            }
        } else {
            A m = ok ? T::ld(a.mean_in[c]) : (A)0;
            if (ok)
                for (int64_t n = ty; n < N; n += BN_ROWS) {
                    A gv = T::ld(g[n * C + c]);
                    pa += gv;
                    pb += gv * (T::ld(x[n * C + c]) - m);
                }
            sa[ty][tx] = pa;
            sb[ty][tx] = pb;
            __syncthreads();
            if (ty == 0 && ok) {
                A s = 0, q = 0;
                for (int k = 0; k < BN_ROWS; k++) {
                    s += sa[k][tx];
                    q += sb[k][tx];
                }
                bn_finish_bwd<D>(a, c, (double)s, (double)q);
            }
        }
        __syncthreads(); /* the next tile overwrites the shared sums */
    }
}

/* Coefficients without batch sums: eval forward (running stats) or eval backward. */
template <int D> __global__ void bn_coef_only(bn_args<D> a, bool backward) {
    GK_FOR(c, a.C) {
        if (backward) bn_finish_bwd<D>(a, c, 0.0, 0.0);
        else bn_finish_fwd<D>(a, c, nm_get(a.rm, c, 0.0), nm_get(a.rv, c, 1.0), false);
    }
}

/* out = a[c] u + b[c] (v - m[c]) + d[c] over [N, C, L] (v may be NULL). The channel of
 * each element is tracked by counters advanced with the grid stride: no division per
 * element. */
template <int D>
__global__ void bn_apply(typename gk_type<D>::S *out, const typename gk_type<D>::S *u, const typename gk_type<D>::S *v,
                         const typename nm_acc<D>::A *co, int64_t n, int64_t C, int64_t L) {
    typedef gk_type<D> T;
    typedef typename nm_acc<D>::A A;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, step = (int64_t)blockDim.x * gridDim.x;
    if (i >= n) return;
    int64_t p = i / L, l = i - p * L, c = p % C;
    const int64_t sl = step % L, sc = (step / L) % C;
    for (; i < n; i += step) {
        A r = co[c] * T::ld(u[i]) + co[3 * C + c];
        if (v) r += co[C + c] * (T::ld(v[i]) - co[2 * C + c]);
        out[i] = T::st(r);
        l += sl;
        c += sc;
        if (l >= L) {
            l -= L;
            c++;
        }
        if (c >= C) c -= C;
    }
}

__global__ void bn_count_kernel(char *nbt, int dt) { gk_store_i64(nbt, dt, gk_load_i64(nbt, dt) + 1); }

static void bn_shape(const graft_tensor *x, int64_t *N, int64_t *C, int64_t *L) {
    *N = x->shape[0];
    *C = x->shape[1];
    *L = 1;
    for (int d = 2; d < x->ndim; d++) *L *= x->shape[d];
}

/* The channel reduction of mode over x (and g). */
template <int D>
static void bn_reduce(const bn_args<D> &a, const graft_tensor *x, const graft_tensor *g, int64_t N, int64_t L,
                      int mode) {
    typedef typename gk_type<D>::S S;
    const S *xp = (const S *)graft_tensor_data(x), *gp = g ? (const S *)graft_tensor_data(g) : NULL;
    if (L == 1) {
        GK_LAUNCH(bn_reduce_cols<D>, gk_blocks(a.C, 32), dim3(32, BN_ROWS), 0, xp, gp, a, N, mode);
    } else {
        /* one block per channel: few channels get big blocks to keep the device busy */
        int threads = a.C <= 128 ? 1024 : NM_THREADS, TX = 1;
        while (TX < L && TX < threads) TX <<= 1;
        GK_LAUNCH(bn_reduce_plane<D>, gk_blocks(a.C, 1), threads, 0, xp, gp, a, N, L, TX, mode);
    }
}

template <int D>
static graft_status bn_apply_run(graft_tensor *out, const graft_tensor *u, const graft_tensor *v, graft_tensor *coef,
                                 int64_t N, int64_t C, int64_t L) {
    typedef typename gk_type<D>::S S;
    int64_t n = N * C * L;
    if (n == 0) return GRAFT_OK;
    GK_LAUNCH_FLAT(bn_apply<D>, gk_blocks(n, NM_THREADS), NM_THREADS, 0, (S *)graft_tensor_data(out),
                   (const S *)graft_tensor_data(u), v ? (const S *)graft_tensor_data(v) : (const S *)NULL,
                   (const typename nm_acc<D>::A *)graft_tensor_data(coef), n, C, L);
    return gk_launched("batch_norm");
}

template <int D>
static graft_status bn_forward_run(graft_tensor *y, graft_tensor *sm, graft_tensor *si, graft_tensor *x, graft_tensor *rm,
                                   graft_tensor *rv, graft_tensor *w, graft_tensor *b, graft_tensor *nbt, bool training,
                                   double momentum, bool cumulative, double eps, graft_tensor *coef) {
    typedef typename gk_type<D>::S S;
    int64_t N, C, L;
    bn_shape(x, &N, &C, &L);
    bn_args<D> a;
    memset(&a, 0, sizeof a);
    a.save_mean = (S *)graft_tensor_data(sm);
    a.save_invstd = (S *)graft_tensor_data(si);
    a.coef = (typename nm_acc<D>::A *)graft_tensor_data(coef);
    a.w = nm_vec_of(w);
    a.b = nm_vec_of(b);
    a.rm = nm_vec_of(rm);
    a.rv = nm_vec_of(rv);
    a.nbt = nbt ? (const char *)graft_tensor_data(nbt) : NULL;
    a.nbt_dt = nbt ? (int)nbt->dtype : 0;
    a.C = C;
    a.M = (double)(N * L);
    a.momentum = momentum;
    a.eps = eps;
    a.cumulative = cumulative && nbt;
    a.training = training;
    graft_status st;
    if (C == 0) return GRAFT_OK;
    if (training) {
        bn_reduce<D>(a, x, NULL, N, L, BN_STATS);
        if ((st = gk_launched("batch_norm"))) return st;
        if (nbt && rm) {
            GK_LAUNCH_FLAT(bn_count_kernel, 1, 1, 0, (char *)graft_tensor_data(nbt), (int)nbt->dtype);
            if ((st = gk_launched("batch_norm"))) return st;
        }
    } else {
        GK_LAUNCH_FLAT(bn_coef_only<D>, gk_blocks(C, NM_THREADS), NM_THREADS, 0, a, false);
        if ((st = gk_launched("batch_norm"))) return st;
    }
    return bn_apply_run<D>(y, x, NULL, coef, N, C, L);
}

template <int D>
static graft_status bn_backward_run(graft_tensor *dx, graft_tensor *dw, graft_tensor *db, graft_tensor *g, graft_tensor *x,
                                    graft_tensor *w, graft_tensor *mean, graft_tensor *invstd, bool training,
                                    graft_tensor *coef) {
    typedef typename gk_type<D>::S S;
    int64_t N, C, L;
    bn_shape(x, &N, &C, &L);
    bn_args<D> a;
    memset(&a, 0, sizeof a);
    a.mean_in = (const S *)graft_tensor_data(mean);
    a.invstd_in = (const S *)graft_tensor_data(invstd);
    a.dw = dw ? (S *)graft_tensor_data(dw) : NULL;
    a.db = db ? (S *)graft_tensor_data(db) : NULL;
    a.coef = (typename nm_acc<D>::A *)graft_tensor_data(coef);
    a.w = nm_vec_of(w);
    a.C = C;
    a.M = (double)(N * L);
    a.training = training;
    graft_status st;
    if (C == 0) return GRAFT_OK;
    if (dw || db || (dx && training)) bn_reduce<D>(a, x, g, N, L, BN_GRAD);
    else GK_LAUNCH_FLAT(bn_coef_only<D>, gk_blocks(C, NM_THREADS), NM_THREADS, 0, a, true);
    if ((st = gk_launched("batch_norm backward"))) return st;
    if (!dx) return GRAFT_OK;
    return bn_apply_run<D>(dx, g, training ? x : NULL, coef, N, C, L);
}

/* +1: a scratch vector of n accumulators (float, double for float64) on x's device. */
static graft_status nm_scratch(graft_tensor **out, const graft_tensor *x, int64_t n) {
    graft_dtype d = x->dtype == GRAFT_F64 ? GRAFT_F64 : GRAFT_F32;
    if (n < 1) n = 1;
    return graft_tensor_empty(out, 1, &n, d, graft_tensor_device(x));
}

static graft_status nm_bad_dtype(const graft_tensor *x, const char *op) {
    return graft_error(GRAFT_ETYPE, "%s: expected a float32 or float64 input on cuda, got %s", op,
                       graft_dtype_name(x->dtype));
}

extern "C" graft_status graft_cuda_batch_norm_forward(graft_tensor *y, graft_tensor *save_mean, graft_tensor *save_invstd,
                                                      graft_tensor *x, graft_tensor *rm, graft_tensor *rv, graft_tensor *w,
                                                      graft_tensor *b, graft_tensor *nbt, bool training, double momentum,
                                                      bool cumulative, double eps) {
    GK_ON_DEVICE(x);
    graft_tensor *coef = NULL;
    graft_status st = nm_scratch(&coef, x, 4 * x->shape[1]);
    if (st) return st;
    switch (x->dtype) {
    case GRAFT_F32:
        st = bn_forward_run<GRAFT_F32>(y, save_mean, save_invstd, x, rm, rv, w, b, nbt, training, momentum, cumulative,
                                       eps, coef);
        break;
    case GRAFT_F64:
        st = bn_forward_run<GRAFT_F64>(y, save_mean, save_invstd, x, rm, rv, w, b, nbt, training, momentum, cumulative,
                                       eps, coef);
        break;
    default: st = nm_bad_dtype(x, "batch_norm"); break;
    }
    graft_tensor_release(coef);
    return st;
}

extern "C" graft_status graft_cuda_batch_norm_backward(graft_tensor *dx, graft_tensor *dw, graft_tensor *db,
                                                       graft_tensor *g, graft_tensor *x, graft_tensor *w,
                                                       graft_tensor *mean, graft_tensor *invstd, bool training) {
    GK_ON_DEVICE(x);
    graft_tensor *coef = NULL;
    graft_status st = nm_scratch(&coef, x, 4 * x->shape[1]);
    if (st) return st;
    switch (x->dtype) {
    case GRAFT_F32: st = bn_backward_run<GRAFT_F32>(dx, dw, db, g, x, w, mean, invstd, training, coef); break;
    case GRAFT_F64: st = bn_backward_run<GRAFT_F64>(dx, dw, db, g, x, w, mean, invstd, training, coef); break;
    default: st = nm_bad_dtype(x, "batch_norm backward"); break;
    }
    graft_tensor_release(coef);
    return st;
}

/* ======================================================================== */
/* layer_norm                                                                */
/* ======================================================================== */

/* Rows of Dn <= 1024 elements get a warp each (8 per block); longer rows a block. */
#define LN_WARP_MAX 1024

/* The rows this thread's warp or block handles, and its lane among the row's threads. */
struct ln_lanes {
    int64_t r0, rstep;
    int tid, per;
};

template <bool WARP> __device__ __forceinline__ ln_lanes ln_lanes_of(void) {
    ln_lanes s;
    if (WARP) {
        int wpb = blockDim.x >> 5;
        s.r0 = (int64_t)blockIdx.x * wpb + (threadIdx.x >> 5);
        s.rstep = (int64_t)gridDim.x * wpb;
        s.tid = threadIdx.x & 31;
        s.per = 32;
    } else {
        s.r0 = blockIdx.x;
        s.rstep = gridDim.x;
        s.tid = threadIdx.x;
        s.per = blockDim.x;
    }
    return s;
}

template <bool WARP, typename A> __device__ __forceinline__ A ln_sum(A v, A *sh) {
    return WARP ? nm_warp_sum(v) : nm_block_sum(v, sh);
}

/* mean = sum(x) / D, rstd = 1 / sqrt(sum((x - mean)^2) / D + eps),
 * y = (x - mean) rstd w + b per row. */
template <int D, bool WARP>
__global__ void ln_forward(typename gk_type<D>::S *y, typename gk_type<D>::S *mean, typename gk_type<D>::S *rstd,
                           const typename gk_type<D>::S *x, const typename gk_type<D>::S *w,
                           const typename gk_type<D>::S *b, int64_t R, int64_t Dn, double eps) {
    typedef gk_type<D> T;
    typedef typename nm_acc<D>::A A;
    __shared__ A sh[32];
    ln_lanes s = ln_lanes_of<WARP>();
    for (int64_t r = s.r0; r < R; r += s.rstep) {
        const typename T::S *xr = x + r * Dn;
        typename T::S *yr = y + r * Dn;
        A t = 0;
        for (int64_t e = s.tid; e < Dn; e += s.per) t += T::ld(xr[e]);
        A m = ln_sum<WARP>(t, sh) / (A)Dn;
        A q = 0;
        for (int64_t e = s.tid; e < Dn; e += s.per) {
            A d = T::ld(xr[e]) - m;
            q += d * d;
        }
        q = ln_sum<WARP>(q, sh);
        A rs = (A)(1.0 / sqrt((double)(q / (A)Dn) + eps));
        for (int64_t e = s.tid; e < Dn; e += s.per) {
            A v = (T::ld(xr[e]) - m) * rs;
            if (w) v *= T::ld(w[e]);
            if (b) v += T::ld(b[e]);
            yr[e] = T::st(v);
        }
        if (s.tid == 0) {
            mean[r] = T::st(m);
            rstd[r] = T::st(rs);
        }
    }
}

/* Per row, xhat = (x - mean) rstd, gw = g w:
 *   dx = rstd (gw - sum(gw) / D - xhat sum(gw xhat) / D) */
template <int D, bool WARP>
__global__ void ln_backward_dx(typename gk_type<D>::S *dx, const typename gk_type<D>::S *g,
                               const typename gk_type<D>::S *x, const typename gk_type<D>::S *w,
                               const typename gk_type<D>::S *mean, const typename gk_type<D>::S *rstd, int64_t R,
                               int64_t Dn) {
    typedef gk_type<D> T;
    typedef typename nm_acc<D>::A A;
    __shared__ A sh[32];
    ln_lanes s = ln_lanes_of<WARP>();
    for (int64_t r = s.r0; r < R; r += s.rstep) {
        const typename T::S *xr = x + r * Dn, *gr = g + r * Dn;
        A m = T::ld(mean[r]), rs = T::ld(rstd[r]), a = 0, bsum = 0;
        for (int64_t e = s.tid; e < Dn; e += s.per) {
            A gw = T::ld(gr[e]) * (w ? T::ld(w[e]) : (A)1);
            a += gw;
            bsum += gw * (T::ld(xr[e]) - m) * rs;
        }
        a = ln_sum<WARP>(a, sh) / (A)Dn;
        bsum = ln_sum<WARP>(bsum, sh) / (A)Dn;
        for (int64_t e = s.tid; e < Dn; e += s.per) {
            A gw = T::ld(gr[e]) * (w ? T::ld(w[e]) : (A)1);
            A xh = (T::ld(xr[e]) - m) * rs;
            dx[r * Dn + e] = T::st(rs * (gw - a - xh * bsum));
        }
    }
}

/* dw = sum over rows of g xhat, db = sum of g; stage 1: blockIdx.y takes rows
 * [k RC, (k + 1) RC), a 32 x 8 block 32 columns; part [K, 2, Dn]. */
template <int D>
__global__ void ln_colsum_partial(typename nm_acc<D>::A *part, const typename gk_type<D>::S *g,
                                  const typename gk_type<D>::S *x, const typename gk_type<D>::S *mean,
                                  const typename gk_type<D>::S *rstd, int64_t R, int64_t Dn, int64_t RC) {
    typedef gk_type<D> T;
    typedef typename nm_acc<D>::A A;
    __shared__ A sw[8][33], sb[8][33];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t k = blockIdx.y, r0 = k * RC, r1 = r0 + RC < R ? r0 + RC : R;
    for (int64_t j0 = (int64_t)blockIdx.x * 32; j0 < Dn; j0 += (int64_t)gridDim.x * 32) {
        int64_t j = j0 + tx;
        A pw = 0, pb = 0;
        if (j < Dn)
            for (int64_t r = r0 + ty; r < r1; r += 8) {
                A gv = T::ld(g[r * Dn + j]);
                pb += gv;
                pw += gv * ((T::ld(x[r * Dn + j]) - T::ld(mean[r])) * T::ld(rstd[r]));
            }
        sw[ty][tx] = pw;
        sb[ty][tx] = pb;
        __syncthreads();
        if (ty == 0 && j < Dn) {
            A a = 0, c = 0;
            for (int q = 0; q < 8; q++) {
                a += sw[q][tx];
                c += sb[q][tx];
            }
            part[(k * 2) * Dn + j] = a;
            part[(k * 2 + 1) * Dn + j] = c;
        }
        __syncthreads();
    }
}

/* Stage 2: each column adds its K partial sums in order. */
template <int D>
__global__ void ln_colsum_final(typename gk_type<D>::S *dw, typename gk_type<D>::S *db,
                                const typename nm_acc<D>::A *part, int64_t K, int64_t Dn) {
    typedef gk_type<D> T;
    typedef typename nm_acc<D>::A A;
    GK_FOR(j, Dn) {
        A a = 0, c = 0;
        for (int64_t k = 0; k < K; k++) {
            a += part[(k * 2) * Dn + j];
            c += part[(k * 2 + 1) * Dn + j];
        }
        if (dw) dw[j] = T::st(a);
        if (db) db[j] = T::st(c);
    }
}

template <typename S> static S *nm_ptr(graft_tensor *t) { return t ? (S *)graft_tensor_data(t) : (S *)NULL; }

template <int D>
static graft_status ln_forward_run(graft_tensor *y, graft_tensor *mean, graft_tensor *rstd, graft_tensor *x,
                                   graft_tensor *w, graft_tensor *b, int64_t R, int64_t Dn, double eps) {
    typedef typename gk_type<D>::S S;
    if (R == 0) return GRAFT_OK;
    if (Dn <= LN_WARP_MAX)
        GK_LAUNCH((ln_forward<D, true>), gk_blocks(R, NM_THREADS / 32), NM_THREADS, 0, nm_ptr<S>(y), nm_ptr<S>(mean),
                  nm_ptr<S>(rstd), nm_ptr<S>(x), nm_ptr<S>(w), nm_ptr<S>(b), R, Dn, eps);
    else
        GK_LAUNCH((ln_forward<D, false>), gk_blocks(R, 1), NM_THREADS, 0, nm_ptr<S>(y), nm_ptr<S>(mean), nm_ptr<S>(rstd),
                  nm_ptr<S>(x), nm_ptr<S>(w), nm_ptr<S>(b), R, Dn, eps);
    return gk_launched("layer_norm");
}

template <int D>
static graft_status ln_backward_run(graft_tensor *dx, graft_tensor *dw, graft_tensor *db, graft_tensor *g,
                                    graft_tensor *x, graft_tensor *w, graft_tensor *mean, graft_tensor *rstd, int64_t R,
                                    int64_t Dn) {
    typedef typename gk_type<D>::S S;
    typedef typename nm_acc<D>::A A;
    graft_status st;
    if (dx && R > 0 && Dn > 0) {
        if (Dn <= LN_WARP_MAX)
            GK_LAUNCH((ln_backward_dx<D, true>), gk_blocks(R, NM_THREADS / 32), NM_THREADS, 0, nm_ptr<S>(dx),
                      nm_ptr<S>(g), nm_ptr<S>(x), nm_ptr<S>(w), nm_ptr<S>(mean), nm_ptr<S>(rstd), R, Dn);
        else
            GK_LAUNCH((ln_backward_dx<D, false>), gk_blocks(R, 1), NM_THREADS, 0, nm_ptr<S>(dx), nm_ptr<S>(g),
                      nm_ptr<S>(x), nm_ptr<S>(w), nm_ptr<S>(mean), nm_ptr<S>(rstd), R, Dn);
        if ((st = gk_launched("layer_norm backward"))) return st;
    }
    if ((!dw && !db) || Dn == 0) return GRAFT_OK;
    /* K row chunks of RC rows: enough blocks to fill the device, few partial rows */
    int64_t K = (R + 63) / 64;
    if (K > 128) K = 128;
    if (K < 1) K = 1;
    int64_t RC = (R + K - 1) / K;
    if (RC < 1) RC = 1;
    graft_tensor *part = NULL;
    if ((st = nm_scratch(&part, x, K * 2 * Dn))) return st;
    A *pp = (A *)graft_tensor_data(part);
    unsigned gx = gk_blocks(Dn, 32);
    if (gx > 65535) gx = 65535;
    GK_LAUNCH(ln_colsum_partial<D>, dim3(gx, (unsigned)K), dim3(32, 8), 0, pp, nm_ptr<S>(g), nm_ptr<S>(x),
              nm_ptr<S>(mean), nm_ptr<S>(rstd), R, Dn, RC);
    if (!(st = gk_launched("layer_norm backward"))) {
        GK_LAUNCH_FLAT(ln_colsum_final<D>, gk_blocks(Dn, NM_THREADS), NM_THREADS, 0, nm_ptr<S>(dw), nm_ptr<S>(db),
                       (const A *)pp, K, Dn);
        st = gk_launched("layer_norm backward");
    }
    graft_tensor_release(part);
    return st;
}

extern "C" graft_status graft_cuda_layer_norm_forward(graft_tensor *y, graft_tensor *mean, graft_tensor *rstd,
                                                      graft_tensor *x, graft_tensor *w, graft_tensor *b, int64_t R,
                                                      int64_t Dn, double eps) {
    GK_ON_DEVICE(x);
    switch (x->dtype) {
    case GRAFT_F32: return ln_forward_run<GRAFT_F32>(y, mean, rstd, x, w, b, R, Dn, eps);
    case GRAFT_F64: return ln_forward_run<GRAFT_F64>(y, mean, rstd, x, w, b, R, Dn, eps);
    default: return nm_bad_dtype(x, "layer_norm");
    }
}

extern "C" graft_status graft_cuda_layer_norm_backward(graft_tensor *dx, graft_tensor *dw, graft_tensor *db,
                                                       graft_tensor *g, graft_tensor *x, graft_tensor *w,
                                                       graft_tensor *mean, graft_tensor *rstd, int64_t R, int64_t Dn) {
    GK_ON_DEVICE(x);
    switch (x->dtype) {
    case GRAFT_F32: return ln_backward_run<GRAFT_F32>(dx, dw, db, g, x, w, mean, rstd, R, Dn);
    case GRAFT_F64: return ln_backward_run<GRAFT_F64>(dx, dw, db, g, x, w, mean, rstd, R, Dn);
    default: return nm_bad_dtype(x, "layer_norm backward");
    }
}

/* ======================================================================== */
/* group_norm                                                                */
/* ======================================================================== */

/* One group (Cg channels of L elements, contiguous) per block: mean, rstd, then
 * y = x sc + (b[c] - mean sc) with sc = rstd w[c]. The channel of element e is tracked
 * by counters (j, l) advanced by the block stride. */
template <int D>
__global__ void gn_forward(typename gk_type<D>::S *y, typename gk_type<D>::S *mean, typename gk_type<D>::S *rstd,
                           const typename gk_type<D>::S *x, const typename gk_type<D>::S *w,
                           const typename gk_type<D>::S *b, int64_t NG, int64_t G, int64_t Cg, int64_t L,
                           double eps) {
    typedef gk_type<D> T;
    typedef typename nm_acc<D>::A A;
    __shared__ A sh[32];
    const int64_t Dg = Cg * L;
    for (int64_t ng = blockIdx.x; ng < NG; ng += gridDim.x) {
        const typename T::S *xs = x + ng * Dg;
        typename T::S *ys = y + ng * Dg;
        A t = 0;
        for (int64_t e = threadIdx.x; e < Dg; e += blockDim.x) t += T::ld(xs[e]);
        t = nm_block_sum(t, sh);
        A m = Dg ? t / (A)Dg : (A)0;
        A q = 0;
        for (int64_t e = threadIdx.x; e < Dg; e += blockDim.x) {
            A d = T::ld(xs[e]) - m;
            q += d * d;
        }
        q = nm_block_sum(q, sh);
        A rs = (A)(1.0 / sqrt((Dg ? (double)(q / (A)Dg) : 0.0) + eps));
        int64_t c0 = (ng % G) * Cg;
        if (Dg > 0) {
            int64_t e = threadIdx.x, j = e / L, l = e - j * L;
            const int64_t sj = blockDim.x / L, sl = blockDim.x % L;
            for (; e < Dg; e += blockDim.x) {
                A sc = rs * (w ? T::ld(w[c0 + j]) : (A)1);
                A sf = (b ? T::ld(b[c0 + j]) : (A)0) - m * sc;
                ys[e] = T::st(T::ld(xs[e]) * sc + sf);
                l += sl;
                j += sj;
                if (l >= L) {
                    l -= L;
                    j++;
                }
            }
        }
        if (threadIdx.x == 0) {
            mean[ng] = T::st(m);
            rstd[ng] = T::st(rs);
        }
    }
}

/* One group per block. Warps first reduce each channel plane p = n C + c of the group:
 * psum[2p] = sum(g), psum[2p + 1] = sum(g (x - mean)); then with
 * A = sum_c w[c] psum[2p], B = rstd sum_c w[c] psum[2p + 1] (= sum(g w xhat)):
 *   dx = rstd w[c] g - rstd^2 B / Dg (x - mean) - rstd A / Dg */
template <int D>
__global__ void gn_backward(typename gk_type<D>::S *dx, typename nm_acc<D>::A *psum, const typename gk_type<D>::S *g,
                            const typename gk_type<D>::S *x, const typename gk_type<D>::S *w,
                            const typename gk_type<D>::S *mean, const typename gk_type<D>::S *rstd, int64_t NG,
                            int64_t G, int64_t Cg, int64_t L) {
    typedef gk_type<D> T;
    typedef typename nm_acc<D>::A A;
    __shared__ A sAB[2];
    const int64_t Dg = Cg * L;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int64_t ng = blockIdx.x; ng < NG; ng += gridDim.x) {
        A m = T::ld(mean[ng]), rs = T::ld(rstd[ng]);
        int64_t c0 = (ng % G) * Cg, base = ng * Dg;
        for (int64_t j = warp; j < Cg; j += nw) {
            const typename T::S *gp = g + base + j * L, *xp = x + base + j * L;
            A a = 0, bb = 0;
            for (int64_t l = lane; l < L; l += 32) {
                A gv = T::ld(gp[l]);
                a += gv;
                bb += gv * (T::ld(xp[l]) - m);
            }
            a = nm_warp_sum(a);
            bb = nm_warp_sum(bb);
            if (lane == 0) {
                psum[2 * (ng * Cg + j)] = a;
                psum[2 * (ng * Cg + j) + 1] = bb;
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            A sa = 0, sb = 0;
            for (int64_t j = 0; j < Cg; j++) {
                A wc = w ? T::ld(w[c0 + j]) : (A)1;
                sa += wc * psum[2 * (ng * Cg + j)];
                sb += wc * psum[2 * (ng * Cg + j) + 1];
            }
            sAB[0] = sa;
            sAB[1] = sb * rs;
        }
        __syncthreads();
        if (dx && Dg > 0) {
            A bc = -rs * rs * sAB[1] / (A)Dg, c1 = -rs * sAB[0] / (A)Dg;
            int64_t e = threadIdx.x, j = e / L, l = e - j * L;
            const int64_t sj = blockDim.x / L, sl = blockDim.x % L;
            for (; e < Dg; e += blockDim.x) {
                A k = rs * (w ? T::ld(w[c0 + j]) : (A)1);
                dx[base + e] = T::st(k * T::ld(g[base + e]) + bc * (T::ld(x[base + e]) - m) + c1);
                l += sl;
                j += sj;
                if (l >= L) {
                    l -= L;
                    j++;
                }
            }
        }
        __syncthreads(); /* sAB and psum are rewritten by the next group */
    }
}

/* dw[c] = sum_n psum[2p + 1] rstd[n, group], db[c] = sum_n psum[2p], p = n C + c. */
template <int D>
__global__ void gn_dwdb(typename gk_type<D>::S *dw, typename gk_type<D>::S *db, const typename nm_acc<D>::A *psum,
                        const typename gk_type<D>::S *rstd, int64_t N, int64_t C, int64_t G, int64_t Cg) {
    typedef gk_type<D> T;
    typedef typename nm_acc<D>::A A;
    GK_FOR(c, C) {
        A a = 0, s = 0;
        for (int64_t n = 0; n < N; n++) {
            int64_t p = n * C + c;
            a += psum[2 * p + 1] * T::ld(rstd[n * G + c / Cg]);
            s += psum[2 * p];
        }
        if (dw) dw[c] = T::st(a);
        if (db) db[c] = T::st(s);
    }
}

template <int D>
static graft_status gn_forward_run(graft_tensor *y, graft_tensor *mean, graft_tensor *rstd, graft_tensor *x,
                                   graft_tensor *w, graft_tensor *b, int64_t N, int64_t C, int64_t L, int64_t G,
                                   double eps) {
    typedef typename gk_type<D>::S S;
    int64_t NG = N * G;
    if (NG == 0) return GRAFT_OK;
    GK_LAUNCH(gn_forward<D>, gk_blocks(NG, 1), NM_THREADS, 0, nm_ptr<S>(y), nm_ptr<S>(mean), nm_ptr<S>(rstd),
              nm_ptr<S>(x), nm_ptr<S>(w), nm_ptr<S>(b), NG, G, C / G, L, eps);
    return gk_launched("group_norm");
}

template <int D>
static graft_status gn_backward_run(graft_tensor *dx, graft_tensor *dw, graft_tensor *db, graft_tensor *g,
                                    graft_tensor *x, graft_tensor *w, graft_tensor *mean, graft_tensor *rstd, int64_t N,
                                    int64_t C, int64_t L, int64_t G) {
    typedef typename gk_type<D>::S S;
    typedef typename nm_acc<D>::A A;
    int64_t NG = N * G, Cg = C / G;
    graft_tensor *psum = NULL;
    graft_status st;
    if (dw && N == 0) { /* no samples: the sums are zeros */
        if ((st = graft_tensor_fill_(dw, 0))) return st;
        dw = NULL;
    }
    if (db && N == 0) {
        if ((st = graft_tensor_fill_(db, 0))) return st;
        db = NULL;
    }
    if (NG == 0 || C == 0) return GRAFT_OK;
    if ((st = nm_scratch(&psum, x, 2 * N * C))) return st;
    A *pp = (A *)graft_tensor_data(psum);
    GK_LAUNCH(gn_backward<D>, gk_blocks(NG, 1), NM_THREADS, 0, nm_ptr<S>(dx), pp, nm_ptr<S>(g), nm_ptr<S>(x),
              nm_ptr<S>(w), nm_ptr<S>(mean), nm_ptr<S>(rstd), NG, G, Cg, L);
    st = gk_launched("group_norm backward");
    if (!st && (dw || db)) {
        GK_LAUNCH_FLAT(gn_dwdb<D>, gk_blocks(C, NM_THREADS), NM_THREADS, 0, nm_ptr<S>(dw), nm_ptr<S>(db), (const A *)pp,
                       nm_ptr<S>(rstd), N, C, G, Cg);
        st = gk_launched("group_norm backward");
    }
    graft_tensor_release(psum);
    return st;
}

extern "C" graft_status graft_cuda_group_norm_forward(graft_tensor *y, graft_tensor *mean, graft_tensor *rstd,
                                                      graft_tensor *x, graft_tensor *w, graft_tensor *b, int64_t N,
                                                      int64_t C, int64_t L, int64_t G, double eps) {
    GK_ON_DEVICE(x);
    switch (x->dtype) {
    case GRAFT_F32: return gn_forward_run<GRAFT_F32>(y, mean, rstd, x, w, b, N, C, L, G, eps);
    case GRAFT_F64: return gn_forward_run<GRAFT_F64>(y, mean, rstd, x, w, b, N, C, L, G, eps);
    default: return nm_bad_dtype(x, "group_norm");
    }
}

extern "C" graft_status graft_cuda_group_norm_backward(graft_tensor *dx, graft_tensor *dw, graft_tensor *db,
                                                       graft_tensor *g, graft_tensor *x, graft_tensor *w,
                                                       graft_tensor *mean, graft_tensor *rstd, int64_t N, int64_t C,
                                                       int64_t L, int64_t G) {
    GK_ON_DEVICE(x);
    switch (x->dtype) {
    case GRAFT_F32: return gn_backward_run<GRAFT_F32>(dx, dw, db, g, x, w, mean, rstd, N, C, L, G);
    case GRAFT_F64: return gn_backward_run<GRAFT_F64>(dx, dw, db, g, x, w, mean, rstd, N, C, L, G);
    default: return nm_bad_dtype(x, "group_norm backward");
    }
}
