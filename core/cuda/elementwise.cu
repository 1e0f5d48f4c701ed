/* graft CUDA kernels: elementwise binary ops, unary ops, clamp and where (see
 * cuda/elementwise.h). One kernel per compute dtype and layout switches on the op code
 * (uniform across the grid, so the branch costs no divergence): the formulas are those
 * of core/cpu/elementwise_*.c, so results agree with the CPU bit for bit wherever the
 * CPU's are exactly rounded (+ - * /, sqrt, comparisons, rounding, integer ops).
 * Layouts: contiguous operands take 16-byte vector loads and stores (when aligned),
 * anything else (strides, broadcasts, misalignment) a geometry kernel. */
#include "kernel.cuh"
#include "cuda/elementwise.h"

extern "C" {
#include "ops/elementwise.h"
}

/* ---- types ---- */

template <int D> struct ew_traits {
    static constexpr bool flt = D == GRAFT_F32 || D == GRAFT_F64 || D == GRAFT_F16 || D == GRAFT_BF16;
};
/* The stored result: bool (uint8) for predicates, else the compute dtype's storage. */
template <int D, bool PRED> struct ew_out { typedef typename gk_type<D>::S T; };
template <int D> struct ew_out<D, true> { typedef uint8_t T; };

template <int D, bool PRED>
__device__ __forceinline__ typename ew_out<D, PRED>::T ew_store(typename gk_type<D>::C v) {
    if constexpr (PRED) return (uint8_t)(v != 0);
    else return gk_type<D>::st(v);
}

/* N elements of T as one aligned (vector) access. */
template <typename T, int N> struct alignas(sizeof(T) * N) ew_vec { T v[N]; };

/* Byte offsets of element i for N operands: 32-bit index arithmetic when the iteration
 * allows it (64-bit division is several times slower), no division for the outermost dim. */
template <int N> __device__ __forceinline__ void ew_offsets(const gk_geom<N> &g, int64_t i, int64_t *off) {
    for (int k = 0; k < N; k++) off[k] = 0;
    int last = g.ndim - 1;
    if (g.numel <= (int64_t)UINT32_MAX) {
        uint32_t r = (uint32_t)i;
        for (int d = 0; d < last; d++) {
            uint32_t s = (uint32_t)g.shape[d], q = r / s;
            for (int k = 0; k < N; k++) off[k] += (int64_t)(r - q * s) * g.strides[d][k];
            r = q;
        }
        for (int k = 0; k < N; k++) off[k] += (int64_t)r * g.strides[last][k];
    } else {
        for (int d = 0; d < last; d++) {
            int64_t s = g.shape[d], q = i / s;
            for (int k = 0; k < N; k++) off[k] += (i - q * s) * g.strides[d][k];
            i = q;
        }
        for (int k = 0; k < N; k++) off[k] += i * g.strides[last][k];
    }
}

/* ---- binary formulas (core/cpu/elementwise_binary.c) ---- */

/* PyTorch's div_floor_floating: floor((a - fmod(a, b)) / b), corrected to be exact. */
template <typename T> __device__ __forceinline__ T ew_floordiv_f(T a, T b) {
    if (b == 0) return a / b;
    T mod = fmod(a, b);
    T div = (a - mod) / b;
    if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1;
    if (div == 0) return copysign((T)0, a / b);
    T fl = floor(div);
    if (div - fl > (T)0.5) fl += 1;
    return fl;
}
/* Python's a % b: the sign of the divisor. */
template <typename T> __device__ __forceinline__ T ew_rem_f(T a, T b) {
    T mod = fmod(a, b);
    if (mod != 0 && ((b < 0) != (mod < 0))) mod += b;
    return mod;
}
/* Integer power by squaring, wrapping; negative exponents give 0 but for bases +-1. */
__device__ __forceinline__ int64_t ew_pow_i(int64_t a, int64_t b) {
    if (b < 0) return a == 1 ? 1 : a == -1 ? ((b & 1) ? -1 : 1) : 0;
    uint64_t base = (uint64_t)a, r = 1;
    while (b) {
        if (b & 1) r *= base;
        base *= base;
        b >>= 1;
    }
    return (int64_t)r;
}

/* a op b in the compute type. bsc: b is a host scalar (pow's special exponents, as the
 * CPU's tensor-with-scalar loop). zf: set by an integer division by zero. */
template <int D>
__device__ __forceinline__ typename gk_type<D>::C ew_bin(int op, typename gk_type<D>::C a, typename gk_type<D>::C b,
                                                         typename gk_type<D>::C alpha, bool bsc, int &zf) {
    typedef typename gk_type<D>::C C;
    switch (op) {
    case GRAFT_EW_EQ: return a == b;
    case GRAFT_EW_NE: return a != b;
    case GRAFT_EW_LT: return a < b;
    case GRAFT_EW_LE: return a <= b;
    case GRAFT_EW_GT: return a > b;
    case GRAFT_EW_GE: return a >= b;
    case GRAFT_EW_LOGICAL_AND: return (a != 0) & (b != 0);
    case GRAFT_EW_LOGICAL_OR: return (a != 0) | (b != 0);
    case GRAFT_EW_LOGICAL_XOR: return (a != 0) ^ (b != 0);
    default: break;
    }
    if constexpr (ew_traits<D>::flt) {
        switch (op) {
        case GRAFT_EW_ADD: case GRAFT_EW_SUB: return a + alpha * b;
        case GRAFT_EW_MUL: return a * b;
        case GRAFT_EW_DIV: return a / b;
        case GRAFT_EW_DIV_TRUNC: return trunc(a / b);
        case GRAFT_EW_FLOOR_DIVIDE: return ew_floordiv_f<C>(a, b);
        case GRAFT_EW_POW:
            if (bsc) {
                if (b == (C)2) return a * a;
                if (b == (C)3) return a * a * a;
                if (b == (C)0.5) return sqrt(a);
                if (b == (C)-0.5) return (C)1 / sqrt(a);
                if (b == (C)-1) return (C)1 / a;
                if (b == (C)-2) return (C)1 / (a * a);
            }
            return pow(a, b);
        /* maximum/minimum propagate NaN from either side */
        case GRAFT_EW_MAXIMUM: return (a > b || a != a) ? a : b;
        case GRAFT_EW_MINIMUM: return (a < b || a != a) ? a : b;
        case GRAFT_EW_REMAINDER: return ew_rem_f<C>(a, b);
        case GRAFT_EW_FMOD: return fmod(a, b);
        default: return 0;
        }
    } else if constexpr (D == GRAFT_BOOL) {
        switch (op) {
        case GRAFT_EW_ADD: case GRAFT_EW_SUB: return a | (alpha & b);
        case GRAFT_EW_MUL: return a & b;
        case GRAFT_EW_MAXIMUM: return a > b ? a : b;
        case GRAFT_EW_MINIMUM: return a < b ? a : b;
        default: return 0;
        }
    } else {
        /* integers wrap: unsigned arithmetic, truncated by the store */
        switch (op) {
        case GRAFT_EW_ADD: case GRAFT_EW_SUB: return (C)((uint64_t)a + (uint64_t)alpha * (uint64_t)b);
        case GRAFT_EW_MUL: return (C)((uint64_t)a * (uint64_t)b);
        case GRAFT_EW_MAXIMUM: return a > b ? a : b;
        case GRAFT_EW_MINIMUM: return a < b ? a : b;
        case GRAFT_EW_POW: return ew_pow_i(a, b);
        default: break;
        }
        if (b == 0) {
            zf = 1;
            return 0;
        }
        if (b == -1) /* INT64_MIN / -1 wraps instead of trapping */
            return (op == GRAFT_EW_DIV_TRUNC || op == GRAFT_EW_FLOOR_DIVIDE) ? (C)(0 - (uint64_t)a) : 0;
        C q = a / b, r = a % b;
        bool fix = r != 0 && ((r < 0) != (b < 0));
        switch (op) {
        case GRAFT_EW_DIV_TRUNC: return q;
        case GRAFT_EW_FLOOR_DIVIDE: return fix ? q - 1 : q;
        case GRAFT_EW_REMAINDER: return fix ? r + b : r;
        case GRAFT_EW_FMOD: return r;
        default: return 0;
        }
    }
}

/* ---- unary formulas (core/cpu/elementwise_unary.c) ---- */

template <int D> __device__ __forceinline__ typename gk_type<D>::C ew_un(int op, typename gk_type<D>::C a) {
    typedef typename gk_type<D>::C C;
    if constexpr (ew_traits<D>::flt) {
        switch (op) {
        case GRAFT_EW_NEG: return -a;
        case GRAFT_EW_ABS: return fabs(a);
        case GRAFT_EW_SIGN: return (C)((a > 0) - (a < 0));
        case GRAFT_EW_EXP: return exp(a);
        case GRAFT_EW_LOG: return log(a);
        case GRAFT_EW_LOG1P: return log1p(a);
        case GRAFT_EW_SQRT: return sqrt(a);
        case GRAFT_EW_RSQRT: return (C)1 / sqrt(a);
        case GRAFT_EW_SIN: return sin(a);
        case GRAFT_EW_COS: return cos(a);
        case GRAFT_EW_TANH: return tanh(a);
        case GRAFT_EW_SIGMOID: return (C)1 / ((C)1 + exp(-a)); /* 1 / (1 + e^-x) */
        case GRAFT_EW_RECIPROCAL: return (C)1 / a;
        case GRAFT_EW_SQUARE: return a * a;
        case GRAFT_EW_FLOOR: return floor(a);
        case GRAFT_EW_CEIL: return ceil(a);
        case GRAFT_EW_ROUND: return rint(a); /* half to even */
        case GRAFT_EW_TRUNC: return trunc(a);
        case GRAFT_EW_EXPM1: return expm1(a);
        case GRAFT_EW_LOG2: return log2(a);
        case GRAFT_EW_LOG10: return log10(a);
        case GRAFT_EW_ERF: return erf(a);
        case GRAFT_EW_ERFC: return erfc(a);
        case GRAFT_EW_RELU: return a < 0 ? (C)0 : a; /* keeps NaN and -0.0 */
        case GRAFT_EW_ISNAN: return a != a;
        case GRAFT_EW_ISINF: return fabs(a) == (C)INFINITY;
        case GRAFT_EW_ISFINITE: return a - a == 0;
        case GRAFT_EW_LOGICAL_NOT: return a == 0;
        default: return 0;
        }
    } else {
        switch (op) {
        case GRAFT_EW_NEG: return (C)(0 - (uint64_t)a);
        case GRAFT_EW_ABS: return a < 0 ? (C)(0 - (uint64_t)a) : a;
        case GRAFT_EW_SIGN: return (a > 0) - (a < 0);
        case GRAFT_EW_SQUARE: return (C)((uint64_t)a * (uint64_t)a);
        case GRAFT_EW_RELU: return a < 0 ? 0 : a;
        case GRAFT_EW_ISNAN: case GRAFT_EW_ISINF: return 0;
        case GRAFT_EW_ISFINITE: return 1;
        case GRAFT_EW_LOGICAL_NOT: return a == 0;
        default: return a; /* floor, ceil, round, trunc */
        }
    }
}

/* ---- kernels ---- */

/* Contiguous operands, 16-byte vectors, then the tail. a or b NULL: the scalar av / bv.
 * (n) -> (n) */
template <int D, bool PRED>
__global__ void ew_binary_flat(int64_t n, int op, typename ew_out<D, PRED>::T *out, const typename gk_type<D>::S *a,
                               typename gk_type<D>::C av, const typename gk_type<D>::S *b, typename gk_type<D>::C bv,
                               typename gk_type<D>::C alpha, int *zf) {
    typedef typename gk_type<D>::S S;
    typedef typename gk_type<D>::C C;
    typedef typename ew_out<D, PRED>::T OT;
    constexpr int V = 16 / sizeof(S);
    const bool bsc = b == NULL;
    int z = 0;
    int64_t nv = n / V;
    GK_FOR(v, nv) {
        ew_vec<S, V> xa = {}, xb = {};
        if (a) xa = ((const ew_vec<S, V> *)a)[v];
        if (b) xb = ((const ew_vec<S, V> *)b)[v];
        ew_vec<OT, V> r;
        for (int k = 0; k < V; k++) {
            C x = a ? gk_type<D>::ld(xa.v[k]) : av, y = b ? gk_type<D>::ld(xb.v[k]) : bv;
            r.v[k] = ew_store<D, PRED>(ew_bin<D>(op, x, y, alpha, bsc, z));
        }
        ((ew_vec<OT, V> *)out)[v] = r;
    }
    GK_FOR(t, n - nv * V) {
        int64_t i = nv * V + t;
        C x = a ? gk_type<D>::ld(a[i]) : av, y = b ? gk_type<D>::ld(b[i]) : bv;
        out[i] = ew_store<D, PRED>(ew_bin<D>(op, x, y, alpha, bsc, z));
    }
    if (z) *zf = 1;
}

/* Any strides and broadcasts. */
template <int D, bool PRED>
__global__ void ew_binary_strided(gk_geom<3> g, int op, char *out, const char *a, typename gk_type<D>::C av,
                                  const char *b, typename gk_type<D>::C bv, typename gk_type<D>::C alpha, int *zf) {
    typedef typename gk_type<D>::S S;
    typedef typename gk_type<D>::C C;
    typedef typename ew_out<D, PRED>::T OT;
    const bool bsc = b == NULL;
    int z = 0;
    int64_t off[3];
    GK_FOR(i, g.numel) {
        ew_offsets<3>(g, i, off);
        C x = a ? gk_type<D>::ld(*(const S *)(a + off[1])) : av;
        C y = b ? gk_type<D>::ld(*(const S *)(b + off[2])) : bv;
        *(OT *)(out + off[0]) = ew_store<D, PRED>(ew_bin<D>(op, x, y, alpha, bsc, z));
    }
    if (z) *zf = 1;
}

/* (n) -> (n) */
template <int D, bool PRED>
__global__ void ew_unary_flat(int64_t n, int op, typename ew_out<D, PRED>::T *out, const typename gk_type<D>::S *a) {
    typedef typename gk_type<D>::S S;
    typedef typename ew_out<D, PRED>::T OT;
    constexpr int V = 16 / sizeof(S);
    int64_t nv = n / V;
    GK_FOR(v, nv) {
        ew_vec<S, V> x = ((const ew_vec<S, V> *)a)[v];
        ew_vec<OT, V> r;
        for (int k = 0; k < V; k++) r.v[k] = ew_store<D, PRED>(ew_un<D>(op, gk_type<D>::ld(x.v[k])));
        ((ew_vec<OT, V> *)out)[v] = r;
    }
    GK_FOR(t, n - nv * V) {
        int64_t i = nv * V + t;
        out[i] = ew_store<D, PRED>(ew_un<D>(op, gk_type<D>::ld(a[i])));
    }
}

template <int D, bool PRED>
__global__ void ew_unary_strided(gk_geom<2> g, int op, char *out, const char *a) {
    typedef typename gk_type<D>::S S;
    typedef typename ew_out<D, PRED>::T OT;
    int64_t off[2];
    GK_FOR(i, g.numel) {
        ew_offsets<2>(g, i, off);
        *(OT *)(out + off[0]) = ew_store<D, PRED>(ew_un<D>(op, gk_type<D>::ld(*(const S *)(a + off[1]))));
    }
}

/* min(max(a, lo), hi) as the CPU writes it: a NaN fails both comparisons and stays. */
template <int D>
__device__ __forceinline__ typename gk_type<D>::C ew_clamp1(typename gk_type<D>::C a, int has, typename gk_type<D>::C lo,
                                                            typename gk_type<D>::C hi) {
    if (has & 1) a = a < lo ? lo : a;
    if (has & 2) a = hi < a ? hi : a;
    return a;
}

/* has: 1 lo, 2 hi. Any layout. */
template <int D>
__global__ void ew_clamp_kernel(gk_geom<2> g, char *out, const char *a, int has, typename gk_type<D>::C lo,
                                typename gk_type<D>::C hi) {
    typedef typename gk_type<D>::S S;
    int64_t off[2];
    if (g.ndim == 1 && g.strides[0][0] == (int64_t)sizeof(S) && g.strides[0][1] == (int64_t)sizeof(S)) {
        S *o = (S *)out;
        const S *x = (const S *)a;
        GK_FOR(i, g.numel) o[i] = gk_type<D>::st(ew_clamp1<D>(gk_type<D>::ld(x[i]), has, lo, hi));
        return;
    }
    GK_FOR(i, g.numel) {
        ew_offsets<2>(g, i, off);
        *(S *)(out + off[0]) = gk_type<D>::st(ew_clamp1<D>(gk_type<D>::ld(*(const S *)(a + off[1])), has, lo, hi));
    }
}

/* out = cond ? a : b on W-byte words; NULL pointers are the scalars cv / av / bv. */
template <typename W>
__global__ void ew_where_kernel(gk_geom<4> g, char *out, const uint8_t *cond, int cv, const char *a, W av,
                                const char *b, W bv) {
    int64_t off[4];
    GK_FOR(i, g.numel) {
        ew_offsets<4>(g, i, off);
        bool c = cond ? cond[off[1]] != 0 : cv != 0;
        W v = c ? (a ? *(const W *)(a + off[2]) : av) : (b ? *(const W *)(b + off[3]) : bv);
        *(W *)(out + off[0]) = v;
    }
}

/* ---- launchers ---- */

/* A 0-dim stand-in for a scalar operand, so the iterator sees a stride-0 operand. */
struct ew_placeholder {
    graft_storage s;
    graft_tensor t;
};
static graft_tensor *ew_operand_tensor(ew_placeholder *ph, const graft_cuda_operand *o, graft_dtype d) {
    if (o->t) return o->t;
    memset(ph, 0, sizeof *ph);
    ph->t.storage = &ph->s;
    ph->t.dtype = d;
    return &ph->t;
}

/* True when the iteration is one contiguous run for every tensor operand. */
static bool ew_flat(const graft_iter *it, const size_t *esz, const bool *scalar) {
    if (it->ndim != 1) return false;
    for (int k = 0; k < it->nops; k++)
        if (!scalar[k] && (it->strides[0][k] != (int64_t)esz[k] || (uintptr_t)it->data[k] % 16 != 0)) return false;
    return true;
}

template <int D> static typename gk_type<D>::C ew_value(const graft_cuda_operand *o) {
    typedef typename gk_type<D>::C C;
    if constexpr (ew_traits<D>::flt) return (C)o->f;
    else return (C)o->i;
}

template <int D, bool PRED>
static graft_status ew_binary_launch(const graft_iter *it, int op, const graft_cuda_operand *a,
                                     const graft_cuda_operand *b, double alpha_f, int64_t alpha_i, int *zf) {
    typedef typename gk_type<D>::S S;
    typedef typename gk_type<D>::C C;
    typedef typename ew_out<D, PRED>::T OT;
    constexpr int V = 16 / sizeof(S);
    C av = a->t ? (C)0 : ew_value<D>(a), bv = b->t ? (C)0 : ew_value<D>(b);
    C alpha = ew_traits<D>::flt ? (C)alpha_f : (C)alpha_i;
    size_t esz[3] = {sizeof(OT), sizeof(S), sizeof(S)};
    bool scalar[3] = {false, a->t == NULL, b->t == NULL};
    /* the output's vector is V elements of OT: aligned to V * sizeof(OT) */
    if (ew_flat(it, esz, scalar) && (uintptr_t)it->data[0] % (V * sizeof(OT)) == 0) {
        int64_t n = it->numel;
        GK_LAUNCH_FLAT((ew_binary_flat<D, PRED>), gk_blocks(n / V + 1, GK_THREADS), GK_THREADS, 0, n, op,
                       (OT *)it->data[0], a->t ? (const S *)it->data[1] : (const S *)NULL, av,
                       b->t ? (const S *)it->data[2] : (const S *)NULL, bv, alpha, zf);
    } else {
        gk_geom<3> g = gk_geom_of<3>(it);
        GK_LAUNCH_FLAT((ew_binary_strided<D, PRED>), gk_blocks(g.numel, GK_THREADS), GK_THREADS, 0, g, op,
                       it->data[0], a->t ? (const char *)it->data[1] : (const char *)NULL, av,
                       b->t ? (const char *)it->data[2] : (const char *)NULL, bv, alpha, zf);
    }
    return gk_launched(graft_binary_name((graft_binary_op)op));
}

extern "C" graft_status graft_cuda_binary(graft_tensor *out, int op, graft_dtype cd, const graft_cuda_operand *a,
                                          const graft_cuda_operand *b, double alpha_f, int64_t alpha_i,
                                          int *zero_div) {
    GK_ON_DEVICE(out);
    if ((unsigned)cd >= GRAFT_NDTYPES || (unsigned)op >= GRAFT_EW_NBINARY)
        return graft_error(GRAFT_EINTERNAL, "binary: bad cuda call (op %d, dtype %d)", op, (int)cd);
    ew_placeholder pa, pb;
    graft_tensor *ops[3] = {out, ew_operand_tensor(&pa, a, cd), ew_operand_tensor(&pb, b, cd)};
    graft_iter it;
    graft_status st = graft_iter_init(&it, 3, ops, out->ndim, out->shape);
    if (st || it.numel == 0) return st;
    /* integer division by a zero divisor: a flag on the device, read back after the kernel */
    graft_storage *flag = NULL;
    if (zero_div) {
        *zero_div = 0;
        if ((st = graft_storage_new(&flag, sizeof(int), graft_tensor_device(out)))) return st;
        if ((st = gk_check(cudaMemsetAsync(flag->data, 0, sizeof(int), graft_cuda_stream()), "cudaMemsetAsync"))) {
            graft_storage_release(flag);
            return st;
        }
    }
    int *zf = flag ? (int *)flag->data : NULL;
    bool pred = op >= GRAFT_EW_EQ;
    GK_DISPATCH_ALL(cd, st = pred ? ew_binary_launch<D, true>(&it, op, a, b, alpha_f, alpha_i, zf)
                                  : ew_binary_launch<D, false>(&it, op, a, b, alpha_f, alpha_i, zf));
    if (!st && flag) {
        int h = 0;
        st = graft_cuda_memcpy_d2h(&h, flag->data, sizeof h);
        *zero_div = h != 0;
    }
    graft_storage_release(flag);
    return st;
}

template <int D, bool PRED> static graft_status ew_unary_launch(const graft_iter *it, int op) {
    typedef typename gk_type<D>::S S;
    typedef typename ew_out<D, PRED>::T OT;
    constexpr int V = 16 / sizeof(S);
    size_t esz[2] = {sizeof(OT), sizeof(S)};
    bool scalar[2] = {false, false};
    if (ew_flat(it, esz, scalar) && (uintptr_t)it->data[0] % (V * sizeof(OT)) == 0) {
        int64_t n = it->numel;
        GK_LAUNCH_FLAT((ew_unary_flat<D, PRED>), gk_blocks(n / V + 1, GK_THREADS), GK_THREADS, 0, n, op,
                       (OT *)it->data[0], (const S *)it->data[1]);
    } else {
        gk_geom<2> g = gk_geom_of<2>(it);
        GK_LAUNCH_FLAT((ew_unary_strided<D, PRED>), gk_blocks(g.numel, GK_THREADS), GK_THREADS, 0, g, op,
                       it->data[0], (const char *)it->data[1]);
    }
    return gk_launched(graft_unary_name((graft_unary_op)op));
}

extern "C" graft_status graft_cuda_unary(graft_tensor *out, int op, graft_tensor *a) {
    GK_ON_DEVICE(out);
    if ((unsigned)a->dtype >= GRAFT_NDTYPES || (unsigned)op >= GRAFT_EW_NUNARY)
        return graft_error(GRAFT_EINTERNAL, "unary: bad cuda call (op %d, dtype %d)", op, (int)a->dtype);
    graft_tensor *ops[2] = {out, a};
    graft_iter it;
    graft_status st = graft_iter_init(&it, 2, ops, out->ndim, out->shape);
    if (st || it.numel == 0) return st;
    bool pred = op == GRAFT_EW_ISNAN || op == GRAFT_EW_ISINF || op == GRAFT_EW_ISFINITE || op == GRAFT_EW_LOGICAL_NOT;
    GK_DISPATCH_ALL(a->dtype, st = pred ? ew_unary_launch<D, true>(&it, op) : ew_unary_launch<D, false>(&it, op));
    return st;
}

extern "C" graft_status graft_cuda_clamp(graft_tensor *out, graft_tensor *a, const graft_cuda_operand *lo,
                                         const graft_cuda_operand *hi) {
    GK_ON_DEVICE(out);
    if ((unsigned)a->dtype >= GRAFT_NDTYPES || a->dtype == GRAFT_BOOL)
        return graft_error(GRAFT_EINTERNAL, "clamp: bad cuda call (dtype %d)", (int)a->dtype);
    graft_tensor *ops[2] = {out, a};
    graft_iter it;
    graft_status st = graft_iter_init(&it, 2, ops, out->ndim, out->shape);
    if (st || it.numel == 0) return st;
    int has = (lo ? 1 : 0) | (hi ? 2 : 0);
    gk_geom<2> g = gk_geom_of<2>(&it);
    GK_DISPATCH_ALL(a->dtype, {
        typedef typename gk_type<D>::C C;
        C l = lo ? ew_value<D>(lo) : (C)0, h = hi ? ew_value<D>(hi) : (C)0;
        GK_LAUNCH_FLAT(ew_clamp_kernel<D>, gk_blocks(g.numel, GK_THREADS), GK_THREADS, 0, g, it.data[0],
                       (const char *)it.data[1], has, l, h);
    });
    return gk_launched("clamp");
}

/* A scalar's bits in dtype d. */
template <typename W> static W ew_bits(const graft_cuda_operand *o, graft_dtype d) {
    uint64_t buf = 0;
    if (graft_dtype_is_float(d)) graft_store_f64(&buf, d, o->f);
    else graft_store_i64(&buf, d, o->i);
    W w;
    memcpy(&w, &buf, sizeof w);
    return w;
}

template <typename W>
static graft_status ew_where_launch(const graft_iter *it, const graft_cuda_operand *c, const graft_cuda_operand *a,
                                    const graft_cuda_operand *b, graft_dtype d) {
    gk_geom<4> g = gk_geom_of<4>(it);
    W av = a->t ? (W)0 : ew_bits<W>(a, d), bv = b->t ? (W)0 : ew_bits<W>(b, d);
    GK_LAUNCH_FLAT(ew_where_kernel<W>, gk_blocks(g.numel, GK_THREADS), GK_THREADS, 0, g, it->data[0],
                   c->t ? (const uint8_t *)it->data[1] : (const uint8_t *)NULL, (int)(c->i != 0),
                   a->t ? (const char *)it->data[2] : (const char *)NULL, av,
                   b->t ? (const char *)it->data[3] : (const char *)NULL, bv);
    return gk_launched("where");
}

extern "C" graft_status graft_cuda_where(graft_tensor *out, const graft_cuda_operand *cond,
                                         const graft_cuda_operand *a, const graft_cuda_operand *b) {
    GK_ON_DEVICE(out);
    graft_dtype d = out->dtype;
    ew_placeholder pc, pa, pb;
    graft_tensor *ops[4] = {out, ew_operand_tensor(&pc, cond, GRAFT_BOOL), ew_operand_tensor(&pa, a, d),
                            ew_operand_tensor(&pb, b, d)};
    graft_iter it;
    graft_status st = graft_iter_init(&it, 4, ops, out->ndim, out->shape);
    if (st || it.numel == 0) return st;
    switch (graft_dtype_size(d)) {
    case 1: return ew_where_launch<uint8_t>(&it, cond, a, b, d);
    case 2: return ew_where_launch<uint16_t>(&it, cond, a, b, d);
    case 4: return ew_where_launch<uint32_t>(&it, cond, a, b, d);
    default: return ew_where_launch<uint64_t>(&it, cond, a, b, d);
    }
}
