/* graft CUDA kernels: reductions (sum, mean, prod, amax/amin, argmax/argmin, var/std,
 * norm, logsumexp, any/all) and scans (cumsum, cumprod).
 *
 * The input is made contiguous and seen as (outer, R, inner) with the reduced dims in the
 * middle. inner == 1 ("rows"): a group of lanes per output row, folded with warp
 * shuffles (and shared memory across warps). inner > 1 ("columns"): lanes over adjacent
 * outputs read coalesced, and the reduced dim is split over the block's y threads,
 * merged in shared memory. Few outputs with long reductions split R into chunks over
 * blockIdx.y; the partial states go to a workspace and a second kernel merges them in
 * a fixed order, so every result is deterministic (no atomics). Accumulators: float for
 * float32 and 16-bit floats, double for float64, wrapping int64 for ints and bool. */
#include "kernel.cuh"
#include "cuda/reduce.h"

#define RED_THREADS 256       /* threads per reduction block */
#define RED_TARGET_BLOCKS 512 /* enough blocks to fill a GPU: below it, R is split in chunks */
#define RED_GRID_CAP (65535 * 8)

__host__ __device__ constexpr bool red_is_float(int d) {
    return d == GRAFT_F32 || d == GRAFT_F64 || d == GRAFT_F16 || d == GRAFT_BF16;
}

/* ---- arithmetic on the accumulator types (ints wrap, as the CPU does) ---- */

__device__ __forceinline__ float red_add(float a, float b) { return a + b; }
__device__ __forceinline__ double red_add(double a, double b) { return a + b; }
__device__ __forceinline__ int64_t red_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
__device__ __forceinline__ float red_mul(float a, float b) { return a * b; }
__device__ __forceinline__ double red_mul(double a, double b) { return a * b; }
__device__ __forceinline__ int64_t red_mul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }
__device__ __forceinline__ float red_sqrt(float a) { return sqrtf(a); }
__device__ __forceinline__ double red_sqrt(double a) { return sqrt(a); }
__device__ __forceinline__ float red_pow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double red_pow(double a, double b) { return pow(a, b); }
__device__ __forceinline__ float red_exp(float a) { return expf(a); }
__device__ __forceinline__ double red_exp(double a) { return exp(a); }
__device__ __forceinline__ float red_log(float a) { return logf(a); }
__device__ __forceinline__ double red_log(double a) { return log(a); }
template <typename A> __device__ __forceinline__ A red_abs(A v) { return v < 0 ? -v : v; }
template <typename A> __device__ __forceinline__ bool red_nan(A v) { return v != v; }
template <typename A> __device__ __forceinline__ A red_lowest();
template <> __device__ __forceinline__ float red_lowest<float>() { return -INFINITY; }
template <> __device__ __forceinline__ double red_lowest<double>() { return -INFINITY; }
template <> __device__ __forceinline__ int64_t red_lowest<int64_t>() { return INT64_MIN; }
template <typename A> __device__ __forceinline__ A red_highest();
template <> __device__ __forceinline__ float red_highest<float>() { return INFINITY; }
template <> __device__ __forceinline__ double red_highest<double>() { return INFINITY; }
template <> __device__ __forceinline__ int64_t red_highest<int64_t>() { return INT64_MAX; }

template <typename T> __device__ __forceinline__ T red_shfl(T v, int d, int width) {
    return __shfl_down_sync(0xffffffffu, v, d, width);
}

/* ---- the ops: a state St with init / fold / merge / finish ----
 * fold(s, v, r, sh): v is an element (in the accumulator type A), r its index along the
 * reduced dims, sh the output's shift (logsumexp; 0 otherwise). merge(a, b) must be
 * associative and commutative: argmax breaks ties by index, so any merge order gives
 * PyTorch's first occurrence. finish writes output o (count = elements reduced). */

#define RED_TYPES(DT)                                       \
    static constexpr int D = DT;                            \
    typedef typename gk_type<DT>::S In;                     \
    typedef typename gk_type<DT>::C A;                      \
    typedef typename gk_type<OD>::S Out;                    \
    __device__ A shift(int64_t) const { return 0; }

/* sum (and mean: divided by count) */
template <int DT> struct red_sum {
    static constexpr int OD = red_is_float(DT) ? DT : GRAFT_I64;
    RED_TYPES(DT)
    typedef A St;
    bool mean;
    __device__ St init() const { return 0; }
    __device__ void fold(St &s, A v, int64_t, A) const { s = red_add(s, v); }
    __device__ St merge(St a, St b) const { return red_add(a, b); }
    __device__ static St shfl(St s, int d, int w) { return red_shfl(s, d, w); }
    __device__ void finish(St s, int64_t count, int64_t o, Out *out, int64_t *) const {
        if (mean) s = (A)((double)s / (double)count);
        out[o] = gk_type<OD>::st(s);
    }
};

template <int DT> struct red_prod {
    static constexpr int OD = red_is_float(DT) ? DT : GRAFT_I64;
    RED_TYPES(DT)
    typedef A St;
    __device__ St init() const { return 1; }
    __device__ void fold(St &s, A v, int64_t, A) const { s = red_mul(s, v); }
    __device__ St merge(St a, St b) const { return red_mul(a, b); }
    __device__ static St shfl(St s, int d, int w) { return red_shfl(s, d, w); }
    __device__ void finish(St s, int64_t, int64_t o, Out *out, int64_t *) const { out[o] = gk_type<OD>::st(s); }
};

/* amax / amin: a NaN anywhere gives NaN */
template <int DT, bool MAX> struct red_ext {
    static constexpr int OD = DT;
    RED_TYPES(DT)
    typedef A St;
    __device__ St init() const { return MAX ? red_lowest<A>() : red_highest<A>(); }
    __device__ St merge(St a, St b) const {
        if (red_nan(a)) return a;
        if (red_nan(b)) return b;
        return (MAX ? b > a : b < a) ? b : a;
    }
    __device__ void fold(St &s, A v, int64_t, A) const { s = merge(s, v); }
    __device__ static St shfl(St s, int d, int w) { return red_shfl(s, d, w); }
    __device__ void finish(St s, int64_t, int64_t o, Out *out, int64_t *) const { out[o] = gk_type<OD>::st(s); }
};

/* argmax / argmin (and max/min along a dim): the first index of the extreme; the first
 * NaN wins over everything (PyTorch on CPU). i < 0: nothing seen yet. */
template <typename A> struct red_vi {
    A v;
    int64_t i;
};
template <int DT, bool MAX> struct red_arg {
    static constexpr int OD = DT;
    RED_TYPES(DT)
    typedef red_vi<A> St;
    __device__ St init() const { return St{0, -1}; }
    __device__ St merge(St a, St b) const {
        if (b.i < 0) return a;
        if (a.i < 0) return b;
        bool an = red_nan(a.v), bn = red_nan(b.v);
        if (an || bn) {
            if (an && bn) return a.i <= b.i ? a : b;
            return an ? a : b;
        }
        if (MAX ? b.v > a.v : b.v < a.v) return b;
        if (MAX ? a.v > b.v : a.v < b.v) return a;
        return a.i <= b.i ? a : b;
    }
    __device__ void fold(St &s, A v, int64_t r, A) const { s = merge(s, St{v, r}); }
    __device__ static St shfl(St s, int d, int w) { return St{red_shfl(s.v, d, w), red_shfl(s.i, d, w)}; }
    __device__ void finish(St s, int64_t, int64_t o, Out *out, int64_t *idx) const {
        if (out) out[o] = gk_type<OD>::st(s.v);
        if (idx) idx[o] = s.i;
    }
};

/* var / std: Welford per thread, Chan et al.'s merge; divisor max(0, n - correction) */
template <typename A> struct red_welford {
    A mean, m2;
    int64_t n;
};
template <int DT> struct red_var {
    static constexpr int OD = DT;
    RED_TYPES(DT)
    typedef red_welford<A> St;
    double correction;
    bool take_sqrt;
    __device__ St init() const { return St{0, 0, 0}; }
    __device__ void fold(St &s, A v, int64_t, A) const {
        s.n++;
        A d = v - s.mean;
        s.mean += d / (A)s.n;
        s.m2 += d * (v - s.mean);
    }
    __device__ St merge(St a, St b) const {
        if (b.n == 0) return a;
        if (a.n == 0) return b;
        int64_t n = a.n + b.n;
        A delta = b.mean - a.mean, wb = (A)b.n / (A)n;
        return St{a.mean + delta * wb, a.m2 + b.m2 + delta * delta * (A)a.n * wb, n};
    }
    __device__ static St shfl(St s, int d, int w) {
        return St{red_shfl(s.mean, d, w), red_shfl(s.m2, d, w), red_shfl(s.n, d, w)};
    }
    __device__ void finish(St s, int64_t, int64_t o, Out *out, int64_t *) const {
        double div = (double)s.n - correction;
        if (div < 0) div = 0;
        A v = s.m2 / (A)div;
        if (take_sqrt) v = red_sqrt(v);
        out[o] = gk_type<OD>::st(v);
    }
};

/* vector norms: sum |x|^p, or max / min |x| for p = +-inf, the nonzero count for p = 0 */
enum { RED_P2, RED_P1, RED_PINF, RED_PNINF, RED_P0, RED_PGEN };
template <int DT> struct red_norm {
    static constexpr int OD = DT;
    RED_TYPES(DT)
    typedef A St;
    int mode;
    A p;
    __device__ St init() const { return mode == RED_PNINF ? red_highest<A>() : (A)0; }
    __device__ void fold(St &s, A v, int64_t, A) const {
        A x = red_abs(v);
        switch (mode) {
        case RED_P2: s += v * v; break;
        case RED_P1: s += x; break;
        case RED_PINF: s = (x > s || red_nan(x)) ? x : s; break;
        case RED_PNINF: s = (x < s || red_nan(x)) ? x : s; break;
        case RED_P0: s += v != 0 ? (A)1 : (A)0; break;
        default: s += red_pow(x, p); break;
        }
    }
    __device__ St merge(St a, St b) const {
        if (mode == RED_PINF) return (b > a || red_nan(b)) ? b : a;
        if (mode == RED_PNINF) return (b < a || red_nan(b)) ? b : a;
        return a + b;
    }
    __device__ static St shfl(St s, int d, int w) { return red_shfl(s, d, w); }
    __device__ void finish(St s, int64_t, int64_t o, Out *out, int64_t *) const {
        if (mode == RED_P2) s = red_sqrt(s);
        else if (mode == RED_PGEN) s = red_pow(s, (A)1 / p);
        out[o] = gk_type<OD>::st(s);
    }
};

/* logsumexp: sum exp(x - sh) with sh the output's max (0 where infinite), then log + sh */
template <int DT> struct red_lse {
    static constexpr int OD = DT;
    static constexpr int D = DT;
    typedef typename gk_type<DT>::S In;
    typedef typename gk_type<DT>::C A;
    typedef typename gk_type<OD>::S Out;
    typedef A St;
    const In *aux;
    __device__ A shift(int64_t o) const {
        if (!aux) return 0;
        A m = gk_type<DT>::ld(aux[o]);
        return (m == red_highest<A>() || m == red_lowest<A>()) ? (A)0 : m;
    }
    __device__ St init() const { return 0; }
    __device__ void fold(St &s, A v, int64_t, A sh) const { s += red_exp(v - sh); }
    __device__ St merge(St a, St b) const { return a + b; }
    __device__ static St shfl(St s, int d, int w) { return red_shfl(s, d, w); }
    __device__ void finish(St s, int64_t, int64_t o, Out *out, int64_t *) const {
        out[o] = gk_type<OD>::st(red_log(s) + shift(o));
    }
};

/* any / all over bool bytes */
template <bool ANY> struct red_logic {
    static constexpr int OD = GRAFT_BOOL;
    RED_TYPES(GRAFT_BOOL)
    typedef int St;
    __device__ St init() const { return ANY ? 0 : 1; }
    __device__ void fold(St &s, A v, int64_t, A) const { s = ANY ? (s | (v != 0)) : (s & (v != 0)); }
    __device__ St merge(St a, St b) const { return ANY ? (a | b) : (a & b); }
    __device__ static St shfl(St s, int d, int w) { return red_shfl(s, d, w); }
    __device__ void finish(St s, int64_t, int64_t o, Out *out, int64_t *) const { out[o] = gk_type<OD>::st(s); }
};

/* ---- the reduction kernels ---- */

/* Folds s over the lanes of each group of `width` lanes (a power of two <= 32). */
template <class Op> __device__ __forceinline__ typename Op::St red_warp(const Op &op, typename Op::St s, int width) {
    for (int d = width / 2; d > 0; d >>= 1) s = op.merge(s, Op::shfl(s, d, width));
    return s;
}

/* Rows: x (nout, R), reduced along R. Block (bx, by), bx * by == RED_THREADS: bx lanes
 * per row, by rows per block; row block rb covers rows rb*by ... Chunk blockIdx.y covers
 * [y*chunk, (y+1)*chunk) of R; with several chunks the states go to ws (chunk, row). */
template <class Op>
__global__ void __launch_bounds__(RED_THREADS)
    red_rows_kernel(Op op, const typename Op::In *x, int64_t nout, int64_t R, int64_t chunk, int64_t nrb,
                    typename Op::Out *out, int64_t *idx, typename Op::St *ws) {
    typedef typename Op::St St;
    typedef typename Op::A A;
    __shared__ St part[RED_THREADS / 32];
    const int bx = blockDim.x, tx = threadIdx.x, ty = threadIdx.y;
    const int64_t r0 = (int64_t)blockIdx.y * chunk, r1 = r0 + chunk < R ? r0 + chunk : R;
    for (int64_t rb = blockIdx.x; rb < nrb; rb += gridDim.x) {
        int64_t row = rb * blockDim.y + ty;
        bool live = row < nout;
        St s = op.init();
        if (live) {
            A sh = op.shift(row);
            const typename Op::In *p = x + row * R;
            for (int64_t r = r0 + tx; r < r1; r += bx) op.fold(s, (A)gk_type<Op::D>::ld(p[r]), r, sh);
        }
        s = red_warp(op, s, bx < 32 ? bx : 32);
        if (bx > 32) { /* uniform over the block */
            int nw = bx / 32;
            if ((tx & 31) == 0) part[ty * nw + tx / 32] = s;
            __syncthreads();
            if (tx == 0)
                for (int k = 1; k < nw; k++) s = op.merge(s, part[ty * nw + k]);
            __syncthreads();
        }
        if (tx == 0 && live) {
            if (gridDim.y == 1) op.finish(s, R, row, out, idx);
            else ws[(int64_t)blockIdx.y * nout + row] = s;
        }
    }
}

/* Columns: x (outer, R, inner), reduced along R, inner > 1. Block (bx, by): bx adjacent
 * outputs (coalesced reads), by threads splitting R, merged by a tree in shared memory.
 * Block b covers outer index b / tiles and outputs (b % tiles) * bx ... of it. */
template <class Op>
__global__ void __launch_bounds__(RED_THREADS)
    red_cols_kernel(Op op, const typename Op::In *x, int64_t outer, int64_t R, int64_t inner, int64_t tiles,
                    int64_t chunk, typename Op::Out *out, int64_t *idx, typename Op::St *ws) {
    typedef typename Op::St St;
    typedef typename Op::A A;
    __shared__ St sm[RED_THREADS];
    const int bx = blockDim.x, by = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
    const int64_t r0 = (int64_t)blockIdx.y * chunk, r1 = r0 + chunk < R ? r0 + chunk : R;
    const int64_t nblk = outer * tiles, nout = outer * inner;
    for (int64_t b = blockIdx.x; b < nblk; b += gridDim.x) {
        int64_t o = b / tiles, j = (b - o * tiles) * bx + tx, oid = o * inner + j;
        bool live = j < inner;
        St s = op.init();
        if (live) {
            A sh = op.shift(oid);
            const typename Op::In *p = x + o * R * inner + j;
            for (int64_t r = r0 + ty; r < r1; r += by) op.fold(s, (A)gk_type<Op::D>::ld(p[r * inner]), r, sh);
        }
        sm[ty * bx + tx] = s;
        __syncthreads();
        for (int h = by / 2; h > 0; h >>= 1) {
            if (ty < h) sm[ty * bx + tx] = op.merge(sm[ty * bx + tx], sm[(ty + h) * bx + tx]);
            __syncthreads();
        }
        if (ty == 0 && live) {
            s = sm[tx];
            if (gridDim.y == 1) op.finish(s, R, oid, out, idx);
            else ws[(int64_t)blockIdx.y * nout + oid] = s;
        }
        __syncthreads();
    }
}

/* Second pass over chunked states ws (nch, nout): a warp per output (block (32, 8)). */
template <class Op>
__global__ void __launch_bounds__(RED_THREADS)
    red_final_kernel(Op op, const typename Op::St *ws, int64_t nch, int64_t nout, int64_t count, int64_t nrb,
                     typename Op::Out *out, int64_t *idx) {
    typedef typename Op::St St;
    for (int64_t rb = blockIdx.x; rb < nrb; rb += gridDim.x) {
        int64_t o = rb * blockDim.y + threadIdx.y;
        St s = op.init();
        if (o < nout)
            for (int64_t c = threadIdx.x; c < nch; c += 32) s = op.merge(s, ws[c * nout + o]);
        s = red_warp(op, s, 32);
        if (threadIdx.x == 0 && o < nout) op.finish(s, count, o, out, idx);
    }
}

/* ---- the reduction launcher ---- */

static int red_pow2_at_least(int64_t n, int cap) {
    int p = 1;
    while (p < cap && p < n) p <<= 1;
    return p;
}

static int64_t red_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Chunks over R so that about RED_TARGET_BLOCKS blocks run, each thread folding at
 * least ~16 elements; 1 when the outputs alone fill the GPU. */
static int64_t red_chunks(int64_t blocks, int64_t R, int64_t per_block) {
    if (blocks >= RED_TARGET_BLOCKS / 2 || R < per_block * 32) return 1;
    int64_t n = red_cdiv(R, per_block * 16), fill = red_cdiv(RED_TARGET_BLOCKS, blocks);
    if (n > fill) n = fill;
    if (n > 65535) n = 65535;
    return n < 1 ? 1 : n;
}

/* Runs op over x (contiguous, seen as (outer, R, inner)). */
template <class Op>
static graft_status red_launch(const Op &op, graft_tensor *x, int64_t outer, int64_t R, int64_t inner,
                               graft_tensor *out, graft_tensor *idx, const char *name) {
    typedef typename Op::St St;
    typedef typename Op::In In;
    typedef typename Op::Out Out;
    int64_t nout = outer * inner;
    if (nout == 0) return GRAFT_OK;
    const In *xp = (const In *)graft_tensor_data(x);
    Out *op_out = out ? (Out *)graft_tensor_data(out) : NULL;
    int64_t *ip = idx ? (int64_t *)graft_tensor_data(idx) : NULL;
    graft_tensor *ws = NULL;
    St *wsp = NULL;
    int64_t nch, chunk;
    graft_status st;
    int bx, by;
    int64_t nblk;
    if (inner == 1) {
        bx = red_pow2_at_least(R, RED_THREADS);
        by = RED_THREADS / bx;
        nblk = red_cdiv(nout, by);
        nch = red_chunks(nblk, R, bx);
    } else {
        bx = red_pow2_at_least(inner, 32);
        by = red_pow2_at_least(R, RED_THREADS / bx);
        if (bx * by < RED_THREADS) bx = red_pow2_at_least(inner, RED_THREADS / by);
        nblk = outer * red_cdiv(inner, bx);
        nch = red_chunks(nblk, R, by);
    }
    chunk = red_cdiv(R, nch);
    if (chunk < 1) chunk = 1;
    nch = R > 0 ? red_cdiv(R, chunk) : 1;
    if (nch > 1) {
        int64_t nbytes = nch * nout * (int64_t)sizeof(St);
        if ((st = graft_tensor_empty(&ws, 1, &nbytes, GRAFT_U8, graft_tensor_device(x)))) return st;
        wsp = (St *)graft_tensor_data(ws);
    }
    dim3 grid((unsigned)(nblk < RED_GRID_CAP ? nblk : RED_GRID_CAP), (unsigned)nch);
    if (inner == 1) {
        GK_LAUNCH((red_rows_kernel<Op>), grid, dim3(bx, by), 0, op, xp, nout, R, chunk, nblk, op_out, ip, wsp);
    } else {
        int64_t tiles = red_cdiv(inner, bx);
        GK_LAUNCH((red_cols_kernel<Op>), grid, dim3(bx, by), 0, op, xp, outer, R, inner, tiles, chunk, op_out, ip,
                  wsp);
    }
    st = gk_launched(name);
    if (!st && nch > 1) {
        int64_t frb = red_cdiv(nout, RED_THREADS / 32);
        unsigned fg = (unsigned)(frb < RED_GRID_CAP ? frb : RED_GRID_CAP);
        GK_LAUNCH((red_final_kernel<Op>), fg, dim3(32, RED_THREADS / 32), 0, op, (const St *)wsp, nch, nout, R, frb,
                  op_out, ip);
        st = gk_launched(name);
    }
    /* the workspace returns to the cache; later work on the stream runs after these */
    graft_tensor_release(ws);
    return st;
}

/* The contiguous view of the reduction: (outer, R, inner) when the reduced dims form one
 * block of x, else a copy with the reduced dims moved last (kept dims keep their order,
 * so outputs stay in place). *xc: +1. */
static graft_status red_geometry(graft_tensor **xc, int64_t *outer, int64_t *R, int64_t *inner, graft_tensor *in,
                                 uint32_t rmask) {
    graft_tensor *c = NULL;
    graft_status st = graft_tensor_contiguous(&c, in);
    if (st) return st;
    /* runs of reduced / kept dims, size-1 dims dropped */
    int runs = 0, last = -1;
    for (int d = 0; d < c->ndim; d++) {
        if (c->shape[d] == 1) continue;
        int red = (rmask >> d) & 1u;
        if (red != last) {
            if (red) runs++;
            last = red;
        }
    }
    if (runs > 1) {
        int64_t shape[GRAFT_MAX_DIMS], stride[GRAFT_MAX_DIMS];
        int n = 0, nr = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int d = 0; d < c->ndim; d++)
                if ((int)((rmask >> d) & 1u) == pass) {
                    shape[n] = c->shape[d];
                    stride[n++] = c->stride[d];
                    nr += pass;
                }
        graft_tensor *v = NULL, *p = NULL;
        st = graft_tensor_view_of(&v, c, c->ndim, shape, stride, c->offset);
        if (!st) st = graft_tensor_contiguous(&p, v);
        graft_tensor_release(v);
        graft_tensor_release(c);
        if (st) return st;
        c = p;
        rmask = 0;
        for (int d = c->ndim - nr; d < c->ndim; d++) rmask |= 1u << d;
    }
    /* outer: kept dims before the first reduced one; R: reduced dims; inner: the rest
     * (size-1 dims, reduced or kept, change nothing wherever they are) */
    int64_t o = 1, r = 1, i = 1;
    bool seen = false;
    for (int d = 0; d < c->ndim; d++) {
        if ((rmask >> d) & 1u) {
            r *= c->shape[d];
            if (c->shape[d] != 1) seen = true;
        } else if (seen) {
            i *= c->shape[d];
        } else {
            o *= c->shape[d];
        }
    }
    *xc = c;
    *outer = o;
    *R = r;
    *inner = i;
    return GRAFT_OK;
}

template <class Op>
static graft_status red_run(const Op &op, graft_tensor *out, graft_tensor *idx, graft_tensor *in, uint32_t rmask,
                            const char *name) {
    graft_tensor *x = NULL;
    int64_t outer, R, inner;
    graft_status st = red_geometry(&x, &outer, &R, &inner, in, rmask);
    if (st) return st;
    st = red_launch(op, x, outer, R, inner, out, idx, name);
    graft_tensor_release(x);
    return st;
}

static int red_norm_mode(double p) {
    if (p == 2) return RED_P2;
    if (p == 1) return RED_P1;
    if (p == INFINITY) return RED_PINF;
    if (p == -INFINITY) return RED_PNINF;
    if (p == 0) return RED_P0;
    return RED_PGEN;
}

extern "C" graft_status graft_cuda_reduce(graft_tensor *out, graft_tensor *idx, graft_tensor *in, uint32_t rmask,
                                          const graft_reduce_cfg *cfg, graft_tensor *aux, const char *name) {
    GK_ON_DEVICE(in);
    graft_dtype want = graft_cuda_reduce_dtype(cfg->op, in->dtype);
    if ((out && (out->dtype != want || !graft_tensor_is_contiguous(out))) ||
        (idx && (idx->dtype != GRAFT_I64 || !graft_tensor_is_contiguous(idx))) ||
        (aux && (aux->dtype != in->dtype || !graft_tensor_is_contiguous(aux))))
        return graft_error(GRAFT_EINTERNAL, "%s: cuda reduce: unexpected output layout or dtype", name);
    graft_status st = GRAFT_OK;
    bool ran = false;
#define RED_RUN(...) (st = red_run(__VA_ARGS__, out, idx, in, rmask, name), ran = true)
    switch (cfg->op) {
    case GRAFT_RED_SUM: GK_DISPATCH_ALL(in->dtype, RED_RUN(red_sum<D>{cfg->mean})); break;
    case GRAFT_RED_PROD: GK_DISPATCH_ALL(in->dtype, RED_RUN(red_prod<D>{})); break;
    case GRAFT_RED_MAX: GK_DISPATCH_ALL(in->dtype, RED_RUN(red_ext<D, true>{})); break;
    case GRAFT_RED_MIN: GK_DISPATCH_ALL(in->dtype, RED_RUN(red_ext<D, false>{})); break;
    case GRAFT_RED_ARGMAX: GK_DISPATCH_ALL(in->dtype, RED_RUN(red_arg<D, true>{})); break;
    case GRAFT_RED_ARGMIN: GK_DISPATCH_ALL(in->dtype, RED_RUN(red_arg<D, false>{})); break;
    case GRAFT_RED_VAR:
        GK_DISPATCH_FLOAT(in->dtype, RED_RUN(red_var<D>{cfg->correction, cfg->take_sqrt}));
        break;
    case GRAFT_RED_NORM:
        GK_DISPATCH_FLOAT(in->dtype, {
            red_norm<D> op;
            op.mode = red_norm_mode(cfg->p);
            op.p = (typename gk_type<D>::C)cfg->p;
            RED_RUN(op);
        });
        break;
    case GRAFT_RED_LSE:
        GK_DISPATCH_FLOAT(in->dtype, {
            red_lse<D> op;
            op.aux = aux ? (const typename gk_type<D>::S *)graft_tensor_data(aux) : NULL;
            RED_RUN(op);
        });
        break;
    case GRAFT_RED_ANY:
        if (in->dtype == GRAFT_BOOL) RED_RUN(red_logic<true>{});
        break;
    case GRAFT_RED_ALL:
        if (in->dtype == GRAFT_BOOL) RED_RUN(red_logic<false>{});
        break;
    }
#undef RED_RUN
    if (!ran)
        return graft_error(GRAFT_ETYPE, "%s: not implemented on CUDA for %s", name, graft_dtype_name(in->dtype));
    return st;
}

/* ---- scans: cumsum and cumprod ---- */

template <int DT, bool PROD> struct scan_op {
    typedef typename gk_type<DT>::S S;
    typedef typename gk_type<DT>::C A;
    static __device__ __forceinline__ A ident() { return PROD ? (A)1 : (A)0; }
    static __device__ __forceinline__ A apply(A a, A b) { return PROD ? red_mul(a, b) : red_add(a, b); }
};

/* x, y (outer, n, inner): one thread per (outer, inner) column, sequential along n
 * (adjacent threads read adjacent columns). y[o, r, j] = x[o, 0, j] op ... op x[o, r, j] */
template <int DT, bool PROD>
__global__ void scan_cols_kernel(const typename gk_type<DT>::S *x, typename gk_type<DT>::S *y, int64_t outer,
                                 int64_t n, int64_t inner) {
    typedef scan_op<DT, PROD> Op;
    GK_FOR(i, outer * inner) {
        int64_t o = i / inner, j = i - o * inner, base = o * n * inner + j;
        typename Op::A a = Op::ident();
        for (int64_t r = 0; r < n; r++) {
            a = Op::apply(a, gk_type<DT>::ld(x[base + r * inner]));
            y[base + r * inner] = gk_type<DT>::st(a);
        }
    }
}

/* x, y (rows, n): a block per (row, chunk blockIdx.y of `chunk` elements), tiles of
 * blockDim.x elements scanned with warp shuffles plus the warp totals in shared memory,
 * a running carry between tiles. tot (chunk, row) holds each chunk's total (NULL with
 * one chunk): the block starts from the totals of the chunks before it. */
template <int DT, bool PROD>
__global__ void __launch_bounds__(RED_THREADS)
    scan_rows_kernel(const typename gk_type<DT>::S *x, typename gk_type<DT>::S *y, int64_t rows, int64_t n,
                     int64_t chunk, const typename gk_type<DT>::C *tot) {
    typedef scan_op<DT, PROD> Op;
    typedef typename Op::A A;
    __shared__ A wsum[RED_THREADS / 32];
    const int t = threadIdx.x, lane = t & 31, w = t >> 5, nw = blockDim.x >> 5;
    const int64_t c = blockIdx.y, b0 = c * chunk, b1 = b0 + chunk < n ? b0 + chunk : n;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        A carry = Op::ident();
        if (tot)
            for (int64_t k = 0; k < c; k++) carry = Op::apply(carry, tot[k * rows + row]);
        const typename gk_type<DT>::S *xr = x + row * n;
        typename gk_type<DT>::S *yr = y + row * n;
        for (int64_t base = b0; base < b1; base += blockDim.x) {
            int64_t i = base + t;
            A v = i < b1 ? gk_type<DT>::ld(xr[i]) : Op::ident();
            for (int d = 1; d < 32; d <<= 1) {
                A u = __shfl_up_sync(0xffffffffu, v, d);
                if (lane >= d) v = Op::apply(u, v);
            }
            if (lane == 31) wsum[w] = v;
            __syncthreads();
            A pre = Op::ident(), all = Op::ident();
            for (int k = 0; k < nw; k++) {
                if (k < w) pre = Op::apply(pre, wsum[k]);
                all = Op::apply(all, wsum[k]);
            }
            if (i < b1) yr[i] = gk_type<DT>::st(Op::apply(carry, Op::apply(pre, v)));
            carry = Op::apply(carry, all);
            __syncthreads();
        }
    }
}

/* Scans x (contiguous, rows of n) into y: chunked over n when few long rows would leave
 * the GPU idle (pass 1: every chunk's total with the reduction kernel; pass 2: scans). */
template <int DT, bool PROD>
static graft_status scan_rows(graft_tensor *y, graft_tensor *x, int64_t rows, int64_t n, const char *name) {
    typedef typename gk_type<DT>::S S;
    typedef typename gk_type<DT>::C A;
    int64_t nch = 1;
    if (rows < RED_TARGET_BLOCKS / 2 && n >= RED_THREADS * 32) {
        nch = red_cdiv(n, RED_THREADS * 16);
        int64_t fill = red_cdiv(RED_TARGET_BLOCKS, rows);
        if (nch > fill) nch = fill;
        if (nch > 65535) nch = 65535;
    }
    int64_t chunk = red_cdiv(n, nch);
    nch = red_cdiv(n, chunk);
    const S *xp = (const S *)graft_tensor_data(x);
    S *yp = (S *)graft_tensor_data(y);
    graft_tensor *ws = NULL;
    A *tot = NULL;
    graft_status st = GRAFT_OK;
    unsigned gx = (unsigned)(rows < RED_GRID_CAP ? rows : RED_GRID_CAP);
    if (nch > 1) {
        int64_t nbytes = nch * rows * (int64_t)sizeof(A);
        if ((st = graft_tensor_empty(&ws, 1, &nbytes, GRAFT_U8, graft_tensor_device(x)))) return st;
        tot = (A *)graft_tensor_data(ws);
        if (PROD) {
            GK_LAUNCH((red_rows_kernel<red_prod<DT>>), dim3(gx, (unsigned)nch), dim3(RED_THREADS, 1), 0,
                      red_prod<DT>{}, xp, rows, n, chunk, rows, (typename red_prod<DT>::Out *)NULL, (int64_t *)NULL,
                      tot);
        } else {
            GK_LAUNCH((red_rows_kernel<red_sum<DT>>), dim3(gx, (unsigned)nch), dim3(RED_THREADS, 1), 0,
                      red_sum<DT>{false}, xp, rows, n, chunk, rows, (typename red_sum<DT>::Out *)NULL,
                      (int64_t *)NULL, tot);
        }
        st = gk_launched(name);
    }
    if (!st) {
        int nt = red_pow2_at_least(chunk, RED_THREADS);
        if (nt < 32) nt = 32;
        GK_LAUNCH((scan_rows_kernel<DT, PROD>), dim3(gx, (unsigned)nch), nt, 0, xp, yp, rows, n, chunk,
                  (const A *)tot);
        st = gk_launched(name);
    }
    graft_tensor_release(ws);
    return st;
}

template <int DT, bool PROD>
static graft_status scan_run(graft_tensor *out, graft_tensor *x, int64_t outer, int64_t n, int64_t inner,
                             const char *name) {
    typedef typename gk_type<DT>::S S;
    if (inner == 1 && n > 32) return scan_rows<DT, PROD>(out, x, outer, n, name);
    if (inner > 1 && n > 64 && outer * inner < 4096) {
        /* few long columns: scan them as rows of a transposed copy, then copy back */
        int64_t shape[3] = {outer, inner, n}, xs[3] = {n * inner, 1, inner};
        graft_tensor *xv = NULL, *xt = NULL, *yt = NULL, *ov = NULL;
        graft_status st = graft_tensor_view_of(&xv, x, 3, shape, xs, x->offset);
        if (!st) st = graft_tensor_contiguous(&xt, xv);
        if (!st) st = graft_tensor_empty(&yt, 3, shape, (graft_dtype)DT, graft_tensor_device(x));
        if (!st) st = scan_rows<DT, PROD>(yt, xt, outer * inner, n, name);
        if (!st) st = graft_tensor_view_of(&ov, out, 3, shape, xs, out->offset);
        if (!st) st = graft_tensor_copy_(ov, yt);
        graft_tensor_release(ov);
        graft_tensor_release(yt);
        graft_tensor_release(xt);
        graft_tensor_release(xv);
        return st;
    }
    int64_t m = outer * inner;
    GK_LAUNCH_FLAT((scan_cols_kernel<DT, PROD>), gk_blocks(m, GK_THREADS), GK_THREADS, 0,
                   (const S *)graft_tensor_data(x), (S *)graft_tensor_data(out), outer, n, inner);
    return gk_launched(name);
}

extern "C" graft_status graft_cuda_scan(graft_tensor *out, graft_tensor *in, int dim, bool prod, const char *name) {
    GK_ON_DEVICE(in);
    if (out->dtype != in->dtype || !graft_tensor_is_contiguous(out) || out->ndim != in->ndim)
        return graft_error(GRAFT_EINTERNAL, "%s: cuda scan: unexpected output layout or dtype", name);
    if (graft_tensor_numel(in) == 0) return GRAFT_OK;
    int64_t outer = 1, n = in->ndim ? in->shape[dim] : 1, inner = 1;
    for (int d = 0; d < dim; d++) outer *= in->shape[d];
    for (int d = dim + 1; d < in->ndim; d++) inner *= in->shape[d];
    graft_tensor *x = NULL;
    graft_status st = graft_tensor_contiguous(&x, in);
    if (st) return st;
    bool ran = false;
    if (prod) {
        GK_DISPATCH_ALL(in->dtype, (st = scan_run<D, true>(out, x, outer, n, inner, name), ran = true));
    } else {
        GK_DISPATCH_ALL(in->dtype, (st = scan_run<D, false>(out, x, outer, n, inner, name), ran = true));
    }
    graft_tensor_release(x);
    if (!ran)
        return graft_error(GRAFT_ETYPE, "%s: not implemented on CUDA for %s", name, graft_dtype_name(in->dtype));
    return st;
}
