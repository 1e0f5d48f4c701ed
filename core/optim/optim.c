/* graft core: fused optimizer updates (see optim.h). Each update is one pass over the
 * parameter through the strided iterator (OpenMP-split when large); the contiguous path
 * is vectorised by hand (AVX + FMA) because it needs a vector square root, which GCC
 * will not emit for sqrtf under -fmath-errno.
 *
 * Bit-exactness with PyTorch's CPU kernels rests on the evaluation order below: each
 * element formula is written once, with explicit fma() where PyTorch's kernels fuse and
 * separate roundings everywhere else; contraction is switched off for this file so the
 * compiler cannot fuse a multiply and an add that PyTorch rounds apart.
 *
 * float16 and bfloat16 parameters take scalar loops that repeat PyTorch's op sequence on
 * 16-bit tensors, rounding after every op (see "16-bit parameters" below).
 */
#pragma GCC optimize("fp-contract=off")

#include "optim/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/iter.h"
#include "cuda/optim.h"

#ifdef __F16C__
#include <immintrin.h>
#endif

#if defined(__AVX__) && defined(__FMA__)
#define OPT_VEC 1
#include <immintrin.h>
#define OPT_IF_VEC(...) __VA_ARGS__
typedef float opt_v32 __attribute__((vector_size(32)));
typedef double opt_v64 __attribute__((vector_size(32)));
#else
#define OPT_IF_VEC(...)
#endif

/* ---- one vocabulary of operations per element type ----
 * s32/s64: one float/double; v32/v64: 8 floats / 4 doubles. `+ - * /` and unary minus
 * are the C operators (one rounding each); fma rounds once. */
static inline float s32_ld(const float *p) { return *p; }
static inline void s32_st(float *p, float x) { *p = x; }
static inline float s32_set(float x) { return x; }
static inline float s32_fma(float a, float b, float c) { return fmaf(a, b, c); }
static inline float s32_sqrt(float a) { return sqrtf(a); }
/* torch.maximum: NaN wins from either side. */
static inline float s32_max(float a, float b) { return a != a ? a : (a > b ? a : b); }

static inline double s64_ld(const double *p) { return *p; }
static inline void s64_st(double *p, double x) { *p = x; }
static inline double s64_set(double x) { return x; }
static inline double s64_fma(double a, double b, double c) { return fma(a, b, c); }
static inline double s64_sqrt(double a) { return sqrt(a); }
static inline double s64_max(double a, double b) { return a != a ? a : (a > b ? a : b); }

#ifdef OPT_VEC
static inline opt_v32 v32_ld(const float *p) {
    opt_v32 x;
    memcpy(&x, p, sizeof x);
    return x;
}
static inline void v32_st(float *p, opt_v32 x) { memcpy(p, &x, sizeof x); }
static inline opt_v32 v32_set(float x) { return (opt_v32)_mm256_set1_ps(x); }
static inline opt_v32 v32_fma(opt_v32 a, opt_v32 b, opt_v32 c) {
    return (opt_v32)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
}
static inline opt_v32 v32_sqrt(opt_v32 a) { return (opt_v32)_mm256_sqrt_ps((__m256)a); }
/* max_ps returns its second operand when either is NaN; a NaN first operand is put back. */
static inline opt_v32 v32_max(opt_v32 a, opt_v32 b) {
    __m256 A = (__m256)a, r = _mm256_max_ps(A, (__m256)b);
    return (opt_v32)_mm256_blendv_ps(r, A, _mm256_cmp_ps(A, A, _CMP_UNORD_Q));
}

static inline opt_v64 v64_ld(const double *p) {
    opt_v64 x;
    memcpy(&x, p, sizeof x);
    return x;
}
static inline void v64_st(double *p, opt_v64 x) { memcpy(p, &x, sizeof x); }
static inline opt_v64 v64_set(double x) { return (opt_v64)_mm256_set1_pd(x); }
static inline opt_v64 v64_fma(opt_v64 a, opt_v64 b, opt_v64 c) {
    return (opt_v64)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
}
static inline opt_v64 v64_sqrt(opt_v64 a) { return (opt_v64)_mm256_sqrt_pd((__m256d)a); }
static inline opt_v64 v64_max(opt_v64 a, opt_v64 b) {
    __m256d A = (__m256d)a, r = _mm256_max_pd(A, (__m256d)b);
    return (opt_v64)_mm256_blendv_pd(r, A, _mm256_cmp_pd(A, A, _CMP_UNORD_Q));
}
#endif

/* Operand k of the current element: contiguous, or through its byte stride. */
#define OPT_CP(ST, k) ((ST *)d[k] + i)
#define OPT_SP(ST, k) ((ST *)(d[k] + i * s[k]))

static bool opt_contig(const int64_t *s, int nops, int64_t esize) {
    for (int k = 0; k < nops; k++)
        if (s[k] != esize) return false;
    return true;
}

/* One loop function per (kernel K, dtype): the vector body over whole vectors of a
 * contiguous run, then the scalar body for the tail and for strided runs. K##_CONSTS
 * declares the rounded scalars as element-type constants; K##_ELEM updates element i. */
#define OPT_KERNEL(K, SUF, ST, VT, W)                                                              \
    static void K##_##SUF##_loop(char **d, const int64_t *s, int64_t n, void *vc) {                \
        const K##_ctx *c = vc;                                                                     \
        int64_t i = 0;                                                                             \
        if (opt_contig(s, c->nops, (int64_t)sizeof(ST))) {                                         \
            OPT_IF_VEC({                                                                           \
                K##_CONSTS(v##SUF, VT, ST)                                                         \
                for (; i + W <= n; i += W) K##_ELEM(v##SUF, VT, ST, OPT_CP);                       \
            })                                                                                     \
            K##_CONSTS(s##SUF, ST, ST)                                                             \
            for (; i < n; i++) K##_ELEM(s##SUF, ST, ST, OPT_CP);                                   \
        } else {                                                                                   \
            K##_CONSTS(s##SUF, ST, ST)                                                             \
            for (; i < n; i++) K##_ELEM(s##SUF, ST, ST, OPT_SP);                                   \
        }                                                                                          \
    }
#define OPT_KERNELS(K) OPT_KERNEL(K, 32, float, opt_v32, 8) OPT_KERNEL(K, 64, double, opt_v64, 4)

/* ---- checks shared by every update ---- */

static graft_status opt_check(const char *op, const graft_tensor *p, graft_tensor *const *t,
                              const char *const *names, int n) {
    char b1[GRAFT_MAX_DIMS * 24 + 3], b2[GRAFT_MAX_DIMS * 24 + 3];
    if (!graft_dtype_is_float(p->dtype))
        return graft_error(GRAFT_ETYPE, "%s: parameters of dtype %s are not supported (float32, float64, float16 "
                           "and bfloat16 are)", op, graft_dtype_name(p->dtype));
    for (int k = 0; k < n; k++) {
        const graft_tensor *x = t[k];
        if (!x) return graft_error(GRAFT_EINVAL, "%s: %s is missing", op, names[k]);
        if (x->dtype != p->dtype)
            return graft_error(GRAFT_ETYPE, "%s: %s is %s, the parameter is %s", op, names[k],
                               graft_dtype_name(x->dtype), graft_dtype_name(p->dtype));
        if (!graft_device_eq(graft_tensor_device(x), graft_tensor_device(p))) {
            char d1[32], d2[32];
            return graft_error(GRAFT_EDEVICE, "%s: expected all tensors to be on the same device, but found %s and %s "
                               "(the parameter and its %s)", op, graft_device_str(graft_tensor_device(p), d1),
                               graft_device_str(graft_tensor_device(x), d2), names[k]);
        }
        bool same = x->ndim == p->ndim;
        for (int dd = 0; same && dd < p->ndim; dd++) same = x->shape[dd] == p->shape[dd];
        if (!same)
            return graft_error(GRAFT_ESHAPE, "%s: %s is %s, the parameter is %s", op, names[k],
                               graft_shape_str(x->ndim, x->shape, b1, sizeof b1),
                               graft_shape_str(p->ndim, p->shape, b2, sizeof b2));
    }
    return GRAFT_OK;
}

static bool opt_on_cuda(const graft_tensor *p) { return graft_tensor_device(p).type == GRAFT_CUDA; }

/* Every parameter of a list on the first one's device (PyTorch's foreach rule). */
static graft_status opt_check_list(const char *op, int n, graft_tensor *const *p, int *bad) {
    for (int i = 0; i < n; i++) {
        if (!p[i]) {
            *bad = i;
            return graft_error(GRAFT_EINVAL, "%s: parameter %d is missing", op, i + 1);
        }
        if (!graft_device_eq(graft_tensor_device(p[i]), graft_tensor_device(p[0]))) {
            char d1[32], d2[32];
            *bad = i;
            return graft_error(GRAFT_EDEVICE, "%s: expected all tensors to be on the same device, but found %s and %s",
                               op, graft_device_str(graft_tensor_device(p[0]), d1),
                               graft_device_str(graft_tensor_device(p[i]), d2));
        }
    }
    return GRAFT_OK;
}

/* Bumps the version of every tensor of a list (NULL list: nothing). */
static void opt_bump_list(int n, graft_tensor *const *t) {
    if (!t) return;
    for (int i = 0; i < n; i++) graft_tensor_bump(t[i]);
}

/* PyTorch's lerp weight test |w| < 0.5 in the parameter's compute type (float for
 * float32 and the 16-bit dtypes, whose lerp takes a float weight). */
static bool opt_lerp_small(graft_dtype d, double one_minus_beta) {
    return d == GRAFT_F64 ? fabs(one_minus_beta) < 0.5 : fabsf((float)one_minus_beta) < 0.5f;
}

/* Runs fn over the operands (all of p's shape; unused slots hold p itself and are never
 * touched by the loop). */
static graft_status opt_run(graft_tensor **ops, int nops, const graft_tensor *p, graft_loop_fn fn, void *ctx) {
    graft_iter it;
    graft_status st = graft_iter_init(&it, nops, ops, p->ndim, p->shape);
    if (st) return st;
    graft_iter_run(&it, fn, ctx);
    return GRAFT_OK;
}

/* ---- 16-bit parameters ----
 * PyTorch updates a float16 or bfloat16 parameter with the same tensor ops as a float32
 * one, each op computing in float and rounding its result to the 16-bit dtype (round to
 * nearest even), so every intermediate it materialises is 16-bit. Measured against
 * torch 1.13 on x86-64 (spec/fixtures/optim_half/gen.py), op by op, with R the rounding:
 *   mul_(s), div_(s), add_(s) (a Python float s): s is rounded to 16 bits first
 *     (Scalar.to<scalar_t>(): double to float to 16 bits), then R(x·s), R(x / s), R(x + s);
 *   add_(y, alpha=a): a rounded to 16 bits likewise; on bfloat16 the vectorised body is
 *     R(fma(a, y, x)) and the scalar tail R(R(a·y) + x); float16 (no vector kernel in
 *     1.13) always takes the tail's form;
 *   addcmul_(t1, t2, value=c): R(fma(c·t1, t2, x)), c a float (c·t1 rounded to float);
 *   addcdiv_(t1, t2, value=c): R(x + (c·t1) / t2), c a float, three float roundings;
 *   sqrt, maximum, negation: as in float, then R (exact for the last two);
 *   lerp_(g, w) (2.x numerics): the float32 lerp with a float weight, then R once.
 * The body/tail split is PyTorch's: the vector loop of an innermost row that is contiguous
 * for every operand covers whole blocks of 32 elements (2 AVX2 vectors of 16 bfloat16),
 * the last (row length mod 32) elements run the scalar code, and a non-contiguous row runs
 * all of it. Rows are those of the coalesced iteration (graft's and PyTorch's coalescing
 * agree for tensors of one layout); PyTorch's AVX-512 build (64-element blocks) and its
 * splitting of tensors of 32768 elements or more across threads move the tail; float32
 * and float64 are unaffected. Scalar code: one element at a time, as PyTorch's tail. */

/* x rounded to bfloat16 (nearest even; NaN made quiet), as a float. */
static inline float h_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) u |= 0x00400000u;
    else u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* float16 bits <-> float: the F16C instructions where the build has them (the same IEEE
 * conversions as dtype.c's, round to nearest even, subnormals and NaN included), else
 * dtype.c's functions. */
#ifdef __F16C__
static inline uint16_t h_f2h(float x) { return (uint16_t)_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT); }
static inline float h_h2f(uint16_t u) { return _cvtsh_ss(u); }
#else
static inline uint16_t h_f2h(float x) { return graft_f32_to_f16(x); }
static inline float h_h2f(uint16_t u) { return graft_f16_to_f32(u); }
#endif

/* R: x rounded to the parameter's 16-bit dtype (bf: bfloat16, else float16), as a float. */
static inline float h_rnd(float x, bool bf) { return bf ? h_bf16(x) : h_h2f(h_f2h(x)); }

static inline float h_ld(const char *p, bool bf) {
    uint16_t u;
    memcpy(&u, p, 2);
    if (!bf) return h_h2f(u);
    uint32_t w = (uint32_t)u << 16;
    float x;
    memcpy(&x, &w, 4);
    return x;
}

/* Stores x, already rounded (so the conversion is exact: a bfloat16 is the top half). */
static inline void h_st(char *p, float x, bool bf) {
    uint16_t u;
    if (bf) {
        uint32_t w;
        memcpy(&w, &x, 4);
        u = (uint16_t)(w >> 16);
    } else {
        u = h_f2h(x);
    }
    memcpy(p, &u, 2);
}

/* A Python float scalar as PyTorch hands it to a 16-bit kernel: double to float to 16 bits. */
static inline float h_scalar(double v, bool bf) { return h_rnd((float)v, bf); }

/* x.add_(y, alpha=a), a already 16-bit; vec: the element is in PyTorch's vector body. */
static inline float h_add(float x, float y, float a, bool vec, bool bf) {
    return vec ? h_rnd(fmaf(a, y, x), bf) : h_rnd(h_rnd(a * y, bf) + x, bf);
}

/* x.addcmul_(t1, t2, value=c) */
static inline float h_addcmul(float x, float t1, float t2, float c, bool bf) { return h_rnd(fmaf(c * t1, t2, x), bf); }

/* x.addcdiv_(t1, t2, value=c) */
static inline float h_addcdiv(float x, float t1, float t2, float c, bool bf) { return h_rnd(x + (c * t1) / t2, bf); }

/* m.lerp_(g, w): w the float weight, lw = w (small) or w - 1 (the float32 formula). */
static inline float h_lerp(float m, float g, float lw, bool small, bool bf) {
    return h_rnd(fmaf(lw, g - m, small ? m : g), bf);
}

/* A 16-bit loop: elements [0, nvec) of the run are in PyTorch's vector body, the rest in
 * its scalar tail; otherwise as graft_loop_fn. */
typedef void (*opt_loop16_fn)(char **d, const int64_t *s, int64_t n, int64_t nvec, const void *ctx);

/* The vector body of each innermost row of a bfloat16 iteration (0: all scalar tail). */
static int64_t opt_bf16_body(const graft_iter *it) {
    for (int k = 0; k < it->nops; k++)
        if (it->strides[0][k] != 2) return 0;
    return it->shape[0] - it->shape[0] % GRAFT_OPTIM_BF16_BLOCK;
}

typedef struct {
    opt_loop16_fn fn;
    const void *ctx;
    int64_t body;
} opt_rows16;

/* One run of graft_iter_run_rows: how much of it lies in its row's first `body` elements. */
static void opt_row16(char **d, const int64_t *s, int64_t n, int64_t row_pos, void *vc) {
    const opt_rows16 *r = vc;
    int64_t nvec = r->body - row_pos;
    r->fn(d, s, n, nvec < 0 ? 0 : (nvec > n ? n : nvec), r->ctx);
}

/* opt_run for 16-bit parameters (graft_iter_run's split across threads; the split does
 * not change any element's arithmetic). */
static graft_status opt_run16(graft_tensor **ops, int nops, const graft_tensor *p, opt_loop16_fn fn, const void *ctx) {
    graft_iter it;
    graft_status st = graft_iter_init(&it, nops, ops, p->ndim, p->shape);
    if (st) return st;
    opt_rows16 r = {fn, ctx, p->dtype == GRAFT_BF16 && it.numel > 0 ? opt_bf16_body(&it) : 0};
    graft_iter_run_rows(&it, opt_row16, &r);
    return GRAFT_OK;
}

/* Operand k of element i of a 16-bit run. */
#define OPT_HP(k) (d[k] + i * s[k])

/* ---- SGD ----
 * PyTorch: d_p = d_p.add(param, alpha=wd); buf.mul_(mu).add_(d_p, alpha=1-dampening);
 * d_p = d_p.add(buf, alpha=mu) (nesterov); param.add_(d_p, alpha=-lr). `x.add(y, alpha=a)`
 * is fma(a, y, x); mul_ rounds on its own. */
typedef struct {
    graft_optim_sgd_args a;
    int nops;
    bool has_wd, has_mom, first;
} sgd_ctx;

#define sgd_CONSTS(F, T, ST)                                                                       \
    const T k_wd = F##_set((ST)c->a.weight_decay), k_mu = F##_set((ST)c->a.momentum),               \
            k_omd = F##_set((ST)(1.0 - c->a.dampening)), k_nlr = F##_set((ST)(-c->a.lr));
#define sgd_ELEM(F, T, ST, PTR)                                                                    \
    do {                                                                                           \
        T p_ = F##_ld(PTR(ST, 0)), d_ = F##_ld(PTR(ST, 1));                                        \
        if (c->a.maximize) d_ = -d_;                                                               \
        if (c->has_wd) d_ = F##_fma(k_wd, p_, d_);                                                 \
        if (c->has_mom) {                                                                          \
            T b_ = d_;                                                                             \
            if (!c->first) b_ = F##_fma(k_omd, d_, F##_ld(PTR(ST, 2)) * k_mu);                     \
            F##_st(PTR(ST, 2), b_);                                                                \
            if (c->a.nesterov) d_ = F##_fma(k_mu, b_, d_);                                         \
            else d_ = b_;                                                                          \
        }                                                                                          \
        F##_st(PTR(ST, 0), F##_fma(k_nlr, d_, p_));                                                \
    } while (0)
OPT_KERNELS(sgd)

/* 16-bit SGD: the same ops, PyTorch's 16-bit rounding after each (see "16-bit parameters"). */
typedef struct {
    bool bf, has_wd, has_mom, first, nesterov, maximize;
    float wd, mu, omd, nlr;  /* add_'s alphas and mul_'s scalar, 16-bit */
} sgd_h_ctx;

static void sgd_h_loop(char **d, const int64_t *s, int64_t n, int64_t nvec, const void *vc) {
    const sgd_h_ctx *c = vc;
    const bool bf = c->bf;
    for (int64_t i = 0; i < n; i++) {
        const bool vec = i < nvec;
        float p = h_ld(OPT_HP(0), bf), dp = h_ld(OPT_HP(1), bf);
        if (c->maximize) dp = -dp;
        if (c->has_wd) dp = h_add(dp, p, c->wd, vec, bf);
        if (c->has_mom) {
            float b = dp;
            if (!c->first) b = h_add(h_rnd(h_ld(OPT_HP(2), bf) * c->mu, bf), dp, c->omd, vec, bf);
            h_st(OPT_HP(2), b, bf);
            dp = c->nesterov ? h_add(dp, b, c->mu, vec, bf) : b;
        }
        h_st(OPT_HP(0), h_add(p, dp, c->nlr, vec, bf), bf);
    }
}

graft_status graft_optim_sgd(graft_tensor *p, graft_tensor *grad, graft_tensor *buf, bool first,
                             const graft_optim_sgd_args *a) {
    sgd_ctx c = {.a = *a, .nops = 3, .has_wd = a->weight_decay != 0, .has_mom = a->momentum != 0,
                 .first = first};
    graft_tensor *chk[2] = {grad, buf};
    static const char *const names[2] = {"grad", "momentum_buffer"};
    graft_status st = opt_check("sgd", p, chk, names, c.has_mom ? 2 : 1);
    if (st) return st;
    if (opt_on_cuda(p)) {
        int bad;
        return graft_optim_sgd_multi(1, &p, &grad, c.has_mom ? &buf : NULL, &first, a, &bad);
    }
    graft_tensor *ops[3] = {p, grad, c.has_mom ? buf : p};
    if (p->dtype == GRAFT_F16 || p->dtype == GRAFT_BF16) {
        bool bf = p->dtype == GRAFT_BF16;
        sgd_h_ctx h = {.bf = bf, .has_wd = c.has_wd, .has_mom = c.has_mom, .first = first,
                       .nesterov = a->nesterov, .maximize = a->maximize, .wd = h_scalar(a->weight_decay, bf),
                       .mu = h_scalar(a->momentum, bf), .omd = h_scalar(1.0 - a->dampening, bf),
                       .nlr = h_scalar(-a->lr, bf)};
        st = opt_run16(ops, 3, p, sgd_h_loop, &h);
    } else {
        st = opt_run(ops, 3, p, p->dtype == GRAFT_F32 ? sgd_32_loop : sgd_64_loop, &c);
    }
    if (st) return st;
    graft_tensor_bump(p);
    if (c.has_mom) graft_tensor_bump(buf);
    return GRAFT_OK;
}

graft_status graft_optim_sgd_multi(int n, graft_tensor *const *p, graft_tensor *const *grad, graft_tensor *const *buf,
                                   const bool *first, const graft_optim_sgd_args *a, int *bad) {
    static const char *const names[2] = {"grad", "momentum_buffer"};
    bool mom = a->momentum != 0;
    graft_status st;
    *bad = -1;
    if (n <= 0) return GRAFT_OK;
    if ((st = opt_check_list("sgd", n, p, bad))) return st;
    for (int i = 0; i < n; i++) {
        graft_tensor *chk[2] = {grad[i], mom ? buf[i] : NULL};
        if ((st = opt_check("sgd", p[i], chk, names, mom ? 2 : 1))) {
            *bad = i;
            return st;
        }
    }
    if (!opt_on_cuda(p[0])) {
        for (int i = 0; i < n; i++) {
            if ((st = graft_optim_sgd(p[i], grad[i], mom ? buf[i] : NULL, first && first[i], a))) {
                *bad = i;
                return st;
            }
        }
        return GRAFT_OK;
    }
    graft_cuda_optim_lists l = {.n = n, .op = {p, grad, mom ? buf : NULL, NULL, NULL}, .first = first};
    if ((st = graft_cuda_optim_sgd(&l, a))) return st;
    opt_bump_list(n, p);
    if (mom) opt_bump_list(n, buf);
    return GRAFT_OK;
}

/* ---- Adam / AdamW ----
 * PyTorch 1.13: exp_avg.mul_(b1).add_(g, alpha=1-b1); exp_avg_sq.mul_(b2).addcmul_(g, g,
 * value=1-b2) (addcmul: round(value*g) then one fma); denom = (v.sqrt() / bc2_sqrt).add_(eps);
 * param.addcdiv_(m, denom, value=-step_size) (three roundings: value*m, /denom, +).
 * 2.x: exp_avg.lerp_(g, 1-b1), ATen's lerp: w < 0.5 ? fma(w, g-m, m) : fma(w-1, g-m, g). */
typedef struct {
    graft_optim_adam_args a;
    int nops;
    bool has_wd, decay, lerp_small;
    double step_size, bc2_sqrt;
} adam_ctx;

#define adam_CONSTS(F, T, ST)                                                                      \
    const ST lw_ = (ST)(1.0 - c->a.beta1);                                                         \
    const T k_wd = F##_set((ST)c->a.weight_decay), k_b1 = F##_set((ST)c->a.beta1),                  \
            k_omb1 = F##_set(lw_), k_b2 = F##_set((ST)c->a.beta2),                                  \
            k_omb2 = F##_set((ST)(1.0 - c->a.beta2)), k_bc2 = F##_set((ST)c->bc2_sqrt),             \
            k_eps = F##_set((ST)c->a.eps), k_nss = F##_set((ST)(-c->step_size)),                    \
            k_decay = F##_set((ST)(1.0 - c->a.lr * c->a.weight_decay)),                             \
            k_lw = F##_set(c->lerp_small ? lw_ : lw_ - (ST)1);
#define adam_ELEM(F, T, ST, PTR)                                                                   \
    do {                                                                                           \
        T p_ = F##_ld(PTR(ST, 0)), g_ = F##_ld(PTR(ST, 1));                                        \
        T m_ = F##_ld(PTR(ST, 2)), v_ = F##_ld(PTR(ST, 3));                                        \
        if (c->a.maximize) g_ = -g_;                                                               \
        if (c->a.decoupled) {                                                                      \
            if (c->decay) p_ = p_ * k_decay;                                                       \
        } else if (c->has_wd) {                                                                    \
            g_ = F##_fma(k_wd, p_, g_);                                                            \
        }                                                                                          \
        if (!c->a.lerp) m_ = F##_fma(k_omb1, g_, m_ * k_b1);                                       \
        else if (c->lerp_small) m_ = F##_fma(k_lw, g_ - m_, m_);                                   \
        else m_ = F##_fma(k_lw, g_ - m_, g_);                                                      \
        v_ = F##_fma(k_omb2 * g_, g_, v_ * k_b2);                                                  \
        T vv_ = v_;                                                                                \
        if (c->a.amsgrad) {                                                                        \
            vv_ = F##_max(F##_ld(PTR(ST, 4)), v_);                                                 \
            F##_st(PTR(ST, 4), vv_);                                                               \
        }                                                                                          \
        T den_ = F##_sqrt(vv_) / k_bc2 + k_eps;                                                    \
        F##_st(PTR(ST, 0), p_ + (k_nss * m_) / den_);                                              \
        F##_st(PTR(ST, 2), m_);                                                                    \
        F##_st(PTR(ST, 3), v_);                                                                    \
    } while (0)
OPT_KERNELS(adam)

/* The per-tensor scalars of step t, in double as PyTorch's Python floats:
 * step_size = lr / (1 - beta1 ** t), bc2_sqrt = sqrt(1 - beta2 ** t). */
static void adam_scalars(const graft_optim_adam_args *a, double step, double *step_size, double *bc2_sqrt) {
    double bc1 = 1.0 - pow(a->beta1, step), bc2 = 1.0 - pow(a->beta2, step);
    *step_size = a->lr / bc1;
    *bc2_sqrt = sqrt(bc2);
}

/* 16-bit Adam/AdamW. */
typedef struct {
    bool bf, has_wd, decay, lerp, lerp_small, amsgrad, decoupled, maximize;
    float wd, b1, omb1, b2, bc2, eps, decay_by;  /* 16-bit scalars (add_ alphas, mul_/div_/add_) */
    float omb2, nss, lw;                          /* float: addcmul/addcdiv values, lerp weight */
} adam_h_ctx;

static void adam_h_loop(char **d, const int64_t *s, int64_t n, int64_t nvec, const void *vc) {
    const adam_h_ctx *c = vc;
    const bool bf = c->bf;
    for (int64_t i = 0; i < n; i++) {
        const bool vec = i < nvec;
        float p = h_ld(OPT_HP(0), bf), g = h_ld(OPT_HP(1), bf), m = h_ld(OPT_HP(2), bf), v = h_ld(OPT_HP(3), bf);
        if (c->maximize) g = -g;
        if (c->decoupled) {
            if (c->decay) p = h_rnd(p * c->decay_by, bf);
        } else if (c->has_wd) {
            g = h_add(g, p, c->wd, vec, bf);
        }
        if (c->lerp) m = h_lerp(m, g, c->lw, c->lerp_small, bf);
        else m = h_add(h_rnd(m * c->b1, bf), g, c->omb1, vec, bf);
        v = h_addcmul(h_rnd(v * c->b2, bf), g, g, c->omb2, bf);
        float vv = v;
        if (c->amsgrad) {
            vv = s32_max(h_ld(OPT_HP(4), bf), v);
            h_st(OPT_HP(4), vv, bf);
        }
        float den = h_rnd(h_rnd(h_rnd(sqrtf(vv), bf) / c->bc2, bf) + c->eps, bf);
        h_st(OPT_HP(0), h_addcdiv(p, m, den, c->nss, bf), bf);
        h_st(OPT_HP(2), m, bf);
        h_st(OPT_HP(3), v, bf);
    }
}

graft_status graft_optim_adam(graft_tensor *p, graft_tensor *grad, graft_tensor *m, graft_tensor *v,
                              graft_tensor *vmax, const graft_optim_adam_args *a) {
    const char *op = a->decoupled ? "adamw" : "adam";
    graft_tensor *chk[4] = {grad, m, v, vmax};
    static const char *const names[4] = {"grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    graft_status st = opt_check(op, p, chk, names, a->amsgrad ? 4 : 3);
    if (st) return st;
    if (opt_on_cuda(p)) {
        int bad;
        return graft_optim_adam_multi(1, &p, &grad, &m, &v, a->amsgrad ? &vmax : NULL, &a->step, a, &bad);
    }
    double step_size, bc2_sqrt;
    adam_scalars(a, a->step, &step_size, &bc2_sqrt);
    adam_ctx c = {.a = *a, .nops = 5, .has_wd = a->weight_decay != 0,
                  .decay = 1.0 - a->lr * a->weight_decay != 1.0,
                  .lerp_small = opt_lerp_small(p->dtype, 1.0 - a->beta1),
                  .step_size = step_size, .bc2_sqrt = bc2_sqrt};
    graft_tensor *ops[5] = {p, grad, m, v, a->amsgrad ? vmax : p};
    if (p->dtype == GRAFT_F16 || p->dtype == GRAFT_BF16) {
        bool bf = p->dtype == GRAFT_BF16;
        float lw = (float)(1.0 - a->beta1);
        adam_h_ctx h = {.bf = bf, .has_wd = c.has_wd, .decay = c.decay, .lerp = a->lerp, .lerp_small = c.lerp_small,
                        .amsgrad = a->amsgrad, .decoupled = a->decoupled, .maximize = a->maximize,
                        .wd = h_scalar(a->weight_decay, bf), .b1 = h_scalar(a->beta1, bf),
                        .omb1 = h_scalar(1.0 - a->beta1, bf), .b2 = h_scalar(a->beta2, bf),
                        .bc2 = h_scalar(bc2_sqrt, bf), .eps = h_scalar(a->eps, bf),
                        .decay_by = h_scalar(1.0 - a->lr * a->weight_decay, bf), .omb2 = (float)(1.0 - a->beta2),
                        .nss = (float)(-step_size), .lw = c.lerp_small ? lw : lw - 1.0f};
        st = opt_run16(ops, 5, p, adam_h_loop, &h);
    } else {
        st = opt_run(ops, 5, p, p->dtype == GRAFT_F32 ? adam_32_loop : adam_64_loop, &c);
    }
    if (st) return st;
    graft_tensor_bump(p);
    graft_tensor_bump(m);
    graft_tensor_bump(v);
    if (a->amsgrad) graft_tensor_bump(vmax);
    return GRAFT_OK;
}

graft_status graft_optim_adam_multi(int n, graft_tensor *const *p, graft_tensor *const *grad, graft_tensor *const *m,
                                    graft_tensor *const *v, graft_tensor *const *vmax, const double *step,
                                    const graft_optim_adam_args *a, int *bad) {
    const char *op = a->decoupled ? "adamw" : "adam";
    static const char *const names[4] = {"grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    graft_status st;
    *bad = -1;
    if (n <= 0) return GRAFT_OK;
    if ((st = opt_check_list(op, n, p, bad))) return st;
    for (int i = 0; i < n; i++) {
        graft_tensor *chk[4] = {grad[i], m[i], v[i], a->amsgrad ? vmax[i] : NULL};
        if ((st = opt_check(op, p[i], chk, names, a->amsgrad ? 4 : 3))) {
            *bad = i;
            return st;
        }
    }
    if (!opt_on_cuda(p[0])) {
        graft_optim_adam_args ai = *a;
        for (int i = 0; i < n; i++) {
            ai.step = step[i];
            if ((st = graft_optim_adam(p[i], grad[i], m[i], v[i], a->amsgrad ? vmax[i] : NULL, &ai))) {
                *bad = i;
                return st;
            }
        }
        return GRAFT_OK;
    }
    double *k = malloc(2 * (size_t)n * sizeof *k);
    if (!k) return graft_error(GRAFT_ENOMEM, "%s: out of memory", op);
    for (int i = 0; i < n; i++) {
        adam_scalars(a, step[i], &k[i], &k[n + i]);
        k[i] = -k[i];
    }
    graft_cuda_optim_lists l = {.n = n, .op = {p, grad, m, v, a->amsgrad ? vmax : NULL}, .k0 = k, .k1 = k + n};
    st = graft_cuda_optim_adam(&l, a, opt_lerp_small(p[0]->dtype, 1.0 - a->beta1));
    free(k);
    if (st) return st;
    opt_bump_list(n, p);
    opt_bump_list(n, m);
    opt_bump_list(n, v);
    if (a->amsgrad) opt_bump_list(n, vmax);
    return GRAFT_OK;
}

/* ---- RMSprop ----
 * PyTorch: square_avg.mul_(alpha).addcmul_(g, g, value=1-alpha); centered:
 * grad_avg.mul_(alpha).add_(g, alpha=1-alpha) (2.x: lerp_), avg = square_avg.addcmul(
 * grad_avg, grad_avg, value=-1).sqrt_(); avg.add_(eps); momentum: buf.mul_(mu).addcdiv_(g,
 * avg), param.add_(buf, alpha=-lr); else param.addcdiv_(g, avg, value=-lr). */
typedef struct {
    graft_optim_rmsprop_args a;
    int nops;
    bool has_wd, has_mom, lerp_small;
} rmsprop_ctx;

#define rmsprop_CONSTS(F, T, ST)                                                                   \
    const ST lw_ = (ST)(1.0 - c->a.alpha);                                                         \
    const T k_wd = F##_set((ST)c->a.weight_decay), k_al = F##_set((ST)c->a.alpha),                  \
            k_oma = F##_set(lw_), k_eps = F##_set((ST)c->a.eps), k_mu = F##_set((ST)c->a.momentum), \
            k_nlr = F##_set((ST)(-c->a.lr)), k_lw = F##_set(c->lerp_small ? lw_ : lw_ - (ST)1);
#define rmsprop_ELEM(F, T, ST, PTR)                                                                \
    do {                                                                                           \
        T p_ = F##_ld(PTR(ST, 0)), g_ = F##_ld(PTR(ST, 1)), s_ = F##_ld(PTR(ST, 2)), avg_;         \
        if (c->a.maximize) g_ = -g_;                                                               \
        if (c->has_wd) g_ = F##_fma(k_wd, p_, g_);                                                 \
        s_ = F##_fma(k_oma * g_, g_, s_ * k_al);                                                   \
        F##_st(PTR(ST, 2), s_);                                                                    \
        if (c->a.centered) {                                                                       \
            T a_ = F##_ld(PTR(ST, 3));                                                             \
            if (!c->a.lerp) a_ = F##_fma(k_oma, g_, a_ * k_al);                                    \
            else if (c->lerp_small) a_ = F##_fma(k_lw, g_ - a_, a_);                               \
            else a_ = F##_fma(k_lw, g_ - a_, g_);                                                  \
            F##_st(PTR(ST, 3), a_);                                                                \
            avg_ = F##_sqrt(F##_fma(-a_, a_, s_));                                                 \
        } else {                                                                                   \
            avg_ = F##_sqrt(s_);                                                                   \
        }                                                                                          \
        avg_ = avg_ + k_eps;                                                                       \
        if (c->has_mom) {                                                                          \
            T b_ = F##_ld(PTR(ST, 4)) * k_mu + g_ / avg_;                                          \
            F##_st(PTR(ST, 4), b_);                                                                \
            F##_st(PTR(ST, 0), F##_fma(k_nlr, b_, p_));                                            \
        } else {                                                                                   \
            F##_st(PTR(ST, 0), p_ + (k_nlr * g_) / avg_);                                          \
        }                                                                                          \
    } while (0)
OPT_KERNELS(rmsprop)

/* 16-bit RMSprop. */
typedef struct {
    bool bf, has_wd, has_mom, centered, lerp, lerp_small, maximize;
    float wd, al, oma16, eps, mu, nlr16;  /* 16-bit scalars */
    float oma, nlr, lw;                   /* float: addcmul/addcdiv values, lerp weight */
} rmsprop_h_ctx;

static void rmsprop_h_loop(char **d, const int64_t *s, int64_t n, int64_t nvec, const void *vc) {
    const rmsprop_h_ctx *c = vc;
    const bool bf = c->bf;
    for (int64_t i = 0; i < n; i++) {
        const bool vec = i < nvec;
        float p = h_ld(OPT_HP(0), bf), g = h_ld(OPT_HP(1), bf), sq = h_ld(OPT_HP(2), bf), avg;
        if (c->maximize) g = -g;
        if (c->has_wd) g = h_add(g, p, c->wd, vec, bf);
        sq = h_addcmul(h_rnd(sq * c->al, bf), g, g, c->oma, bf);
        h_st(OPT_HP(2), sq, bf);
        if (c->centered) {
            float ga = h_ld(OPT_HP(3), bf);
            if (c->lerp) ga = h_lerp(ga, g, c->lw, c->lerp_small, bf);
            else ga = h_add(h_rnd(ga * c->al, bf), g, c->oma16, vec, bf);
            h_st(OPT_HP(3), ga, bf);
            avg = h_rnd(sqrtf(h_addcmul(sq, ga, ga, -1.0f, bf)), bf);
        } else {
            avg = h_rnd(sqrtf(sq), bf);
        }
        avg = h_rnd(avg + c->eps, bf);
        if (c->has_mom) {
            float b = h_addcdiv(h_rnd(h_ld(OPT_HP(4), bf) * c->mu, bf), g, avg, 1.0f, bf);
            h_st(OPT_HP(4), b, bf);
            h_st(OPT_HP(0), h_add(p, b, c->nlr16, vec, bf), bf);
        } else {
            h_st(OPT_HP(0), h_addcdiv(p, g, avg, c->nlr, bf), bf);
        }
    }
}

graft_status graft_optim_rmsprop(graft_tensor *p, graft_tensor *grad, graft_tensor *square_avg,
                                 graft_tensor *grad_avg, graft_tensor *buf, const graft_optim_rmsprop_args *a) {
    bool mom = a->momentum > 0;
    graft_tensor *chk[4] = {grad, square_avg, a->centered ? grad_avg : buf, buf};
    const char *names[4] = {"grad", "square_avg", a->centered ? "grad_avg" : "momentum_buffer", "momentum_buffer"};
    int n = 2 + (a->centered ? 1 : 0) + (mom ? 1 : 0);
    graft_status st = opt_check("rmsprop", p, chk, names, n);
    if (st) return st;
    if (opt_on_cuda(p)) {
        int bad;
        return graft_optim_rmsprop_multi(1, &p, &grad, &square_avg, a->centered ? &grad_avg : NULL,
                                         mom ? &buf : NULL, a, &bad);
    }
    rmsprop_ctx c = {.a = *a, .nops = 5, .has_wd = a->weight_decay != 0, .has_mom = mom,
                     .lerp_small = opt_lerp_small(p->dtype, 1.0 - a->alpha)};
    graft_tensor *ops[5] = {p, grad, square_avg, a->centered ? grad_avg : p, mom ? buf : p};
    if (p->dtype == GRAFT_F16 || p->dtype == GRAFT_BF16) {
        bool bf = p->dtype == GRAFT_BF16;
        float lw = (float)(1.0 - a->alpha);
        rmsprop_h_ctx h = {.bf = bf, .has_wd = c.has_wd, .has_mom = mom, .centered = a->centered, .lerp = a->lerp,
                           .lerp_small = c.lerp_small, .maximize = a->maximize, .wd = h_scalar(a->weight_decay, bf),
                           .al = h_scalar(a->alpha, bf), .oma16 = h_scalar(1.0 - a->alpha, bf),
                           .eps = h_scalar(a->eps, bf), .mu = h_scalar(a->momentum, bf),
                           .nlr16 = h_scalar(-a->lr, bf), .oma = lw, .nlr = (float)(-a->lr),
                           .lw = c.lerp_small ? lw : lw - 1.0f};
        st = opt_run16(ops, 5, p, rmsprop_h_loop, &h);
    } else {
        st = opt_run(ops, 5, p, p->dtype == GRAFT_F32 ? rmsprop_32_loop : rmsprop_64_loop, &c);
    }
    if (st) return st;
    graft_tensor_bump(p);
    graft_tensor_bump(square_avg);
    if (a->centered) graft_tensor_bump(grad_avg);
    if (mom) graft_tensor_bump(buf);
    return GRAFT_OK;
}

graft_status graft_optim_rmsprop_multi(int n, graft_tensor *const *p, graft_tensor *const *grad,
                                       graft_tensor *const *square_avg, graft_tensor *const *grad_avg,
                                       graft_tensor *const *buf, const graft_optim_rmsprop_args *a, int *bad) {
    bool mom = a->momentum > 0;
    const char *names[4] = {"grad", "square_avg", a->centered ? "grad_avg" : "momentum_buffer", "momentum_buffer"};
    int nchk = 2 + (a->centered ? 1 : 0) + (mom ? 1 : 0);
    graft_status st;
    *bad = -1;
    if (n <= 0) return GRAFT_OK;
    if ((st = opt_check_list("rmsprop", n, p, bad))) return st;
    for (int i = 0; i < n; i++) {
        graft_tensor *ga = a->centered ? grad_avg[i] : NULL, *b = mom ? buf[i] : NULL;
        graft_tensor *chk[4] = {grad[i], square_avg[i], a->centered ? ga : b, b};
        if ((st = opt_check("rmsprop", p[i], chk, names, nchk))) {
            *bad = i;
            return st;
        }
    }
    if (!opt_on_cuda(p[0])) {
        for (int i = 0; i < n; i++) {
            if ((st = graft_optim_rmsprop(p[i], grad[i], square_avg[i], a->centered ? grad_avg[i] : NULL,
                                          mom ? buf[i] : NULL, a))) {
                *bad = i;
                return st;
            }
        }
        return GRAFT_OK;
    }
    graft_cuda_optim_lists l = {.n = n, .op = {p, grad, square_avg, a->centered ? grad_avg : NULL, mom ? buf : NULL}};
    if ((st = graft_cuda_optim_rmsprop(&l, a, opt_lerp_small(p[0]->dtype, 1.0 - a->alpha)))) return st;
    opt_bump_list(n, p);
    opt_bump_list(n, square_avg);
    if (a->centered) opt_bump_list(n, grad_avg);
    if (mom) opt_bump_list(n, buf);
    return GRAFT_OK;
}

/* ---- Adagrad ----
 * PyTorch: state_sum.addcmul_(g, g, value=1); std = state_sum.sqrt().add_(eps);
 * param.addcdiv_(g, std, value=-clr). */
typedef struct {
    graft_optim_adagrad_args a;
    int nops;
    bool has_wd;
    double clr;
} adagrad_ctx;

#define adagrad_CONSTS(F, T, ST)                                                                   \
    const T k_wd = F##_set((ST)c->a.weight_decay), k_eps = F##_set((ST)c->a.eps),                   \
            k_nclr = F##_set((ST)(-c->clr));
#define adagrad_ELEM(F, T, ST, PTR)                                                                \
    do {                                                                                           \
        T p_ = F##_ld(PTR(ST, 0)), g_ = F##_ld(PTR(ST, 1)), s_ = F##_ld(PTR(ST, 2));               \
        if (c->a.maximize) g_ = -g_;                                                               \
        if (c->has_wd) g_ = F##_fma(k_wd, p_, g_);                                                 \
        s_ = F##_fma(g_, g_, s_);                                                                  \
        F##_st(PTR(ST, 2), s_);                                                                    \
        F##_st(PTR(ST, 0), p_ + (k_nclr * g_) / (F##_sqrt(s_) + k_eps));                           \
    } while (0)
OPT_KERNELS(adagrad)

/* 16-bit Adagrad. */
typedef struct {
    bool bf, has_wd, maximize;
    float wd, eps;  /* 16-bit */
    float nclr;     /* float: the addcdiv value */
} adagrad_h_ctx;

static void adagrad_h_loop(char **d, const int64_t *s, int64_t n, int64_t nvec, const void *vc) {
    const adagrad_h_ctx *c = vc;
    const bool bf = c->bf;
    for (int64_t i = 0; i < n; i++) {
        const bool vec = i < nvec;
        float p = h_ld(OPT_HP(0), bf), g = h_ld(OPT_HP(1), bf), sm = h_ld(OPT_HP(2), bf);
        if (c->maximize) g = -g;
        if (c->has_wd) g = h_add(g, p, c->wd, vec, bf);
        sm = h_addcmul(sm, g, g, 1.0f, bf);
        h_st(OPT_HP(2), sm, bf);
        float sd = h_rnd(h_rnd(sqrtf(sm), bf) + c->eps, bf);
        h_st(OPT_HP(0), h_addcdiv(p, g, sd, c->nclr, bf), bf);
    }
}

graft_status graft_optim_adagrad(graft_tensor *p, graft_tensor *grad, graft_tensor *sum,
                                 const graft_optim_adagrad_args *a) {
    graft_tensor *chk[2] = {grad, sum};
    static const char *const names[2] = {"grad", "sum"};
    graft_status st = opt_check("adagrad", p, chk, names, 2);
    if (st) return st;
    if (opt_on_cuda(p)) {
        int bad;
        return graft_optim_adagrad_multi(1, &p, &grad, &sum, &a->step, a, &bad);
    }
    adagrad_ctx c = {.a = *a, .nops = 3, .has_wd = a->weight_decay != 0,
                     .clr = a->lr / (1.0 + (a->step - 1.0) * a->lr_decay)};
    graft_tensor *ops[3] = {p, grad, sum};
    if (p->dtype == GRAFT_F16 || p->dtype == GRAFT_BF16) {
        bool bf = p->dtype == GRAFT_BF16;
        adagrad_h_ctx h = {.bf = bf, .has_wd = c.has_wd, .maximize = a->maximize,
                           .wd = h_scalar(a->weight_decay, bf), .eps = h_scalar(a->eps, bf),
                           .nclr = (float)(-c.clr)};
        st = opt_run16(ops, 3, p, adagrad_h_loop, &h);
    } else {
        st = opt_run(ops, 3, p, p->dtype == GRAFT_F32 ? adagrad_32_loop : adagrad_64_loop, &c);
    }
    if (st) return st;
    graft_tensor_bump(p);
    graft_tensor_bump(sum);
    return GRAFT_OK;
}

graft_status graft_optim_adagrad_multi(int n, graft_tensor *const *p, graft_tensor *const *grad,
                                       graft_tensor *const *sum, const double *step,
                                       const graft_optim_adagrad_args *a, int *bad) {
    static const char *const names[2] = {"grad", "sum"};
    graft_status st;
    *bad = -1;
    if (n <= 0) return GRAFT_OK;
    if ((st = opt_check_list("adagrad", n, p, bad))) return st;
    for (int i = 0; i < n; i++) {
        graft_tensor *chk[2] = {grad[i], sum[i]};
        if ((st = opt_check("adagrad", p[i], chk, names, 2))) {
            *bad = i;
            return st;
        }
    }
    if (!opt_on_cuda(p[0])) {
        graft_optim_adagrad_args ai = *a;
        for (int i = 0; i < n; i++) {
            ai.step = step[i];
            if ((st = graft_optim_adagrad(p[i], grad[i], sum[i], &ai))) {
                *bad = i;
                return st;
            }
        }
        return GRAFT_OK;
    }
    double *k = malloc((size_t)n * sizeof *k);
    if (!k) return graft_error(GRAFT_ENOMEM, "adagrad: out of memory");
    for (int i = 0; i < n; i++) k[i] = -(a->lr / (1.0 + (step[i] - 1.0) * a->lr_decay));
    graft_cuda_optim_lists l = {.n = n, .op = {p, grad, sum, NULL, NULL}, .k0 = k};
    st = graft_cuda_optim_adagrad(&l, a);
    free(k);
    if (st) return st;
    opt_bump_list(n, p);
    opt_bump_list(n, sum);
    return GRAFT_OK;
}
