/* graft ops: matrix-product front ends. They check shapes, dtypes and devices with
 * PyTorch's rules, describe both operands as strided [batch..., rows, cols] views
 * (broadcast batch dims get stride 0), copy an operand only when BLAS cannot read its
 * layout, and hand the batch to core/cpu/gemm_cpu.c or, for CUDA tensors, to cuBLAS
 * (core/cuda/blas.c). Under autocast the products cast their inputs first (autocast.h). */
#include "ops/linalg.h"

#include <stdlib.h>
#include <string.h>

#include "autograd/record.h"
#include "cpu/gemm_cpu.h"
#include "cuda/linalg.h"
#include "ops/autocast.h"
#include "ops/elementwise.h"
#include "ops/view.h"
#include "tensor/iter.h"

#define SHAPE_BUF (GRAFT_MAX_DIMS * 24 + 3)

/* ---- settings ---- */

static bool la_tf32; /* PyTorch's torch.backends.cuda.matmul.allow_tf32: off by default */

void graft_linalg_set_allow_tf32(bool on) { la_tf32 = on; }
bool graft_linalg_allow_tf32(void) { return la_tf32; }

/* ---- checks ---- */

/* Every operand on one device (PyTorch's message). */
static graft_status la_check_devices(const graft_tensor *a, const graft_tensor *b, const graft_tensor *c,
                                     const char *op) {
    graft_device da = graft_tensor_device(a), db = graft_tensor_device(b);
    if (graft_device_eq(da, db) && (!c || graft_device_eq(da, graft_tensor_device(c)))) return GRAFT_OK;
    graft_device other = graft_device_eq(da, db) ? graft_tensor_device(c) : db;
    char x[16], y[16];
    return graft_error(GRAFT_EDEVICE, "%s: expected all tensors to be on the same device, but found %s and %s", op,
                       graft_device_str(da, x), graft_device_str(other, y));
}

/* Same dtype for every operand (PyTorch does not promote in matrix products), and
 * not bool. */
static graft_status la_check_dtypes(const graft_tensor *a, const graft_tensor *b, const graft_tensor *c,
                                    const char *op) {
    graft_status st = la_check_devices(a, b, c, op);
    if (st) return st;
    if (a->dtype != b->dtype)
        return graft_error(GRAFT_ETYPE, "%s: expected scalar type %s but found %s (both operands must have one dtype)",
                           op, graft_dtype_name(a->dtype), graft_dtype_name(b->dtype));
    if (c && c->dtype != a->dtype)
        return graft_error(GRAFT_ETYPE, "%s: expected scalar type %s but found %s (input must match the matrices)",
                           op, graft_dtype_name(a->dtype), graft_dtype_name(c->dtype));
    if (a->dtype == GRAFT_BOOL) return graft_error(GRAFT_ETYPE, "%s: not implemented for bool tensors", op);
    return GRAFT_OK;
}

static graft_status la_inner_error(const graft_tensor *a, const graft_tensor *b, int64_t ka, int64_t kb,
                                   const char *op) {
    char x[SHAPE_BUF], y[SHAPE_BUF];
    return graft_error(GRAFT_ESHAPE, "%s: a is %s, b is %s: inner dimensions %lld and %lld differ", op,
                       graft_shape_str(a->ndim, a->shape, x, sizeof x), graft_shape_str(b->ndim, b->shape, y, sizeof y),
                       (long long)ka, (long long)kb);
}

/* The dtype the engine computes in. */
static graft_dtype la_compute(graft_dtype d) {
    if (d == GRAFT_F32 || d == GRAFT_F64) return d;
    if (graft_dtype_is_float(d)) return GRAFT_F32;
    return GRAFT_I64;
}

/* ---- the shared driver ---- */

/* Whether BLAS (cuBLAS alike) reads a rows x cols operand with element strides (rs, cs)
 * as stored or as the transpose of a stored matrix (graft_cpu_blas_layout). */
static bool la_readable(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
    bool trans;
    int64_t ld;
    return graft_cpu_blas_layout(rows, cols, rs, cs, &trans, &ld);
}

/* Whether a batched product of a [batch..., m, k] and b [batch..., k, n] (nd dims) is
 * one product [nbatch * m, k] x [k, n], as PyTorch folds matmul([.., m, k], [k, n]): b
 * shared by every batch, a's batches stacked row after row (readable as one matrix). */
static bool la_folds(const graft_tensor *a, const graft_tensor *b, int nd, int64_t nbatch) {
    int64_t m = a->shape[nd - 2], k = a->shape[nd - 1];
    bool b_shared = true, a_folds = a->stride[nd - 1] == 1 || k <= 1;
    int64_t need = a->stride[nd - 2] * m;
    for (int d = nd - 3; d >= 0; d--) {
        if (b->stride[d] != 0 && b->shape[d] != 1) b_shared = false;
        if (a->shape[d] == 1) continue;
        if (a->stride[d] != need) a_folds = false;
        need = a->stride[d] * a->shape[d];
    }
    return b_shared && a_folds && m > 0 && la_readable(nbatch * m, k, a->stride[nd - 2], a->stride[nd - 1]);
}

/* Whether the batch dims [0, nb) of t step by one stride (*bs elements per batch, the
 * batches in row-major order): contiguous batches, or a fully broadcast operand (0). */
static bool la_uniform_batches(const graft_tensor *t, int nb, int64_t *bs) {
    int64_t s = 0, expect = -1;
    for (int d = nb - 1; d >= 0; d--) {
        if (t->shape[d] == 1) continue;
        if (expect < 0) {
            s = t->stride[d];
            expect = s * t->shape[d];
        } else if (t->stride[d] != expect) {
            return false;
        } else {
            expect *= t->shape[d];
        }
    }
    *bs = s;
    return true;
}

/* la_gemm on CUDA: one cuBLAS call (strided batched) reading both operands where they
 * are. An operand is copied only when cuBLAS cannot read its matrix layout or when its
 * batches do not step by one stride (a broadcast over some batch dims but not others). */
static graft_status la_gemm_cuda(graft_tensor *c, graft_tensor *a, graft_tensor *b, double alpha, double beta,
                                 const char *op) {
    graft_tensor *ac = NULL, *bc = NULL;
    graft_status st = GRAFT_OK;
    int nd = a->ndim, nb = nd - 2;
    if (!graft_dtype_is_float(a->dtype))
        return graft_error(GRAFT_ETYPE, "%s: not implemented for %s tensors on CUDA (integer matrix products run on the "
                           "CPU only, as in PyTorch)", op, graft_dtype_name(a->dtype));
    int64_t m = a->shape[nd - 2], k = a->shape[nd - 1], n = b->shape[nd - 1], nbatch = 1;
    for (int d = 0; d < nb; d++) nbatch *= a->shape[d];
    if (!la_readable(m, k, a->stride[nd - 2], a->stride[nd - 1])) st = graft_tensor_contiguous(&ac, a);
    else graft_tensor_retain(ac = a);
    if (st) goto done;
    if (!la_readable(k, n, b->stride[nd - 2], b->stride[nd - 1])) st = graft_tensor_contiguous(&bc, b);
    else graft_tensor_retain(bc = b);
    if (st) goto done;
    graft_cuda_gemm_args g = {
        .ab_dtype = a->dtype, .c_dtype = c->dtype, .device = graft_tensor_device(c).index,
        .m = m, .n = n, .k = k, .nbatch = nbatch,
        .a_rs = ac->stride[nd - 2], .a_cs = ac->stride[nd - 1],
        .b_rs = bc->stride[nd - 2], .b_cs = bc->stride[nd - 1],
        .c = graft_tensor_data(c), .c_rs = n, .c_bs = m * n,
        .alpha = alpha, .beta = beta, .tf32 = la_tf32,
    };
    if (nbatch > 1) {
        if (la_folds(ac, bc, nd, nbatch)) {
            g.m = nbatch * m;
            g.nbatch = 1;
            g.c_bs = g.m * n;
        } else {
            graft_tensor *t;
            if (!la_uniform_batches(ac, nb, &g.a_bs)) {
                if ((st = graft_tensor_contiguous(&t, ac))) goto done;
                graft_tensor_release(ac);
                ac = t;
                g.a_rs = k, g.a_cs = 1, g.a_bs = m * k;
            }
            if (!la_uniform_batches(bc, nb, &g.b_bs)) {
                if ((st = graft_tensor_contiguous(&t, bc))) goto done;
                graft_tensor_release(bc);
                bc = t;
                g.b_rs = n, g.b_cs = 1, g.b_bs = k * n;
            }
        }
    }
    g.a = graft_tensor_data(ac);
    g.b = graft_tensor_data(bc);
    st = graft_cuda_gemm(&g, op);
done:
    graft_tensor_release(ac);
    graft_tensor_release(bc);
    return st;
}

/* c (contiguous, nbatch * m * n elements of c's dtype) = alpha * a @ b + beta * c, where
 * a is [batch..., m, k] and b is [batch..., k, n] with identical batch shapes (stride 0
 * where broadcast). a, b and c share a dtype. */
static graft_status la_gemm(graft_tensor *c, graft_tensor *a, graft_tensor *b, double alpha, double beta,
                            const char *op) {
    if (graft_tensor_device(c).type == GRAFT_CUDA) return la_gemm_cuda(c, a, b, alpha, beta, op);
    graft_tensor *ac = NULL, *bc = NULL, *cc = NULL;
    int64_t *offs = NULL;
    graft_status st = GRAFT_OK;
    int nd = a->ndim, nb = nd - 2;
    graft_dtype cdt = la_compute(a->dtype);
    int64_t m = a->shape[nd - 2], k = a->shape[nd - 1], n = b->shape[nd - 1];

    /* operands in the compute dtype, copied only when BLAS cannot read the layout */
    if (cdt != a->dtype) {
        if ((st = graft_tensor_to_dtype(&ac, a, cdt)) || (st = graft_tensor_to_dtype(&bc, b, cdt))) goto done;
    } else {
        if (cdt != GRAFT_I64 && !la_readable(m, k, a->stride[nd - 2], a->stride[nd - 1]))
            st = graft_tensor_contiguous(&ac, a);
        else
            graft_tensor_retain(ac = a);
        if (st) goto done;
        if (cdt != GRAFT_I64 && !la_readable(k, n, b->stride[nd - 2], b->stride[nd - 1]))
            st = graft_tensor_contiguous(&bc, b);
        else
            graft_tensor_retain(bc = b);
        if (st) goto done;
    }
    /* the output in the compute dtype (holding c's values when beta reads them) */
    if (cdt != c->dtype) {
        if (beta != 0) st = graft_tensor_to_dtype(&cc, c, cdt);
        else st = graft_tensor_empty(&cc, c->ndim, c->shape, cdt, graft_tensor_device(c));
        if (st) goto done;
    } else {
        graft_tensor_retain(cc = c);
    }

    int64_t nbatch = 1;
    for (int d = 0; d < nb; d++) nbatch *= ac->shape[d];
    graft_gemm_args g = {
        .dtype = cdt, .m = m, .n = n, .k = k, .nbatch = nbatch,
        .a = graft_tensor_data(ac), .a_rs = ac->stride[nd - 2], .a_cs = ac->stride[nd - 1],
        .b = graft_tensor_data(bc), .b_rs = bc->stride[nd - 2], .b_cs = bc->stride[nd - 1],
        .c = graft_tensor_data(cc), .alpha = alpha, .beta = beta,
    };
    if (nbatch > 1) {
        if (la_folds(ac, bc, nd, nbatch)) {
            g.m = nbatch * m;
            g.nbatch = 1;
        } else {
            offs = malloc(sizeof(int64_t) * 2 * (size_t)nbatch);
            if (!offs) {
                st = graft_error(GRAFT_ENOMEM, "%s: out of memory", op);
                goto done;
            }
            int64_t idx[GRAFT_MAX_DIMS] = {0}, ao = 0, bo = 0;
            for (int64_t i = 0; i < nbatch; i++) {
                offs[i] = ao;
                offs[nbatch + i] = bo;
                for (int d = nb - 1; d >= 0; d--) {
                    if (++idx[d] < ac->shape[d]) {
                        ao += ac->stride[d];
                        bo += bc->stride[d];
                        break;
                    }
                    idx[d] = 0;
                    ao -= (ac->shape[d] - 1) * ac->stride[d];
                    bo -= (bc->shape[d] - 1) * bc->stride[d];
                }
            }
            g.a_off = offs;
            g.b_off = offs + nbatch;
        }
    }
    if ((st = graft_cpu_gemm(&g, op))) goto done;
    if (cc != c) st = graft_tensor_copy_(c, cc);
done:
    free(offs);
    graft_tensor_release(ac);
    graft_tensor_release(bc);
    graft_tensor_release(cc);
    return st;
}

/* A view of t with the given geometry (+1). */
static graft_status la_view(graft_tensor **out, const graft_tensor *t, int ndim, const int64_t *shape,
                            const int64_t *stride) {
    return graft_tensor_view_of(out, t, ndim, shape, stride, t->offset);
}

/* ---- autocast ---- */

typedef graft_status (*la_fn2)(graft_tensor **, graft_tensor *, graft_tensor *);
typedef graft_status (*la_fn3)(graft_tensor **, graft_tensor *, graft_tensor *, graft_tensor *, double, double);

/* fn(a, b) with the inputs cast by autocast's policy (autocast suspended inside). */
static graft_status la_autocast2(graft_tensor **out, la_fn2 fn, graft_tensor *a, graft_tensor *b,
                                 graft_autocast_policy p) {
    graft_autocast_scope sc;
    graft_tensor *ts[2] = {a, b};
    *out = NULL;
    graft_status st = graft_autocast_begin(&sc, ts, 2, p);
    if (st) return st;
    st = fn(out, ts[0], ts[1]);
    graft_autocast_end(&sc);
    return st;
}

static graft_status la_autocast3(graft_tensor **out, la_fn3 fn, graft_tensor *c, graft_tensor *a, graft_tensor *b,
                                 double beta, double alpha) {
    graft_autocast_scope sc;
    graft_tensor *ts[3] = {c, a, b};
    *out = NULL;
    graft_status st = graft_autocast_begin(&sc, ts, 3, GRAFT_AUTOCAST_LOWER);
    if (st) return st;
    st = fn(out, ts[0], ts[1], ts[2], beta, alpha);
    graft_autocast_end(&sc);
    return st;
}

/* ---- matmul ---- */

graft_status graft_linalg_matmul(graft_tensor **out, graft_tensor *a, graft_tensor *b) {
    if (GRAFT_AUTOCAST_ACTIVE()) return la_autocast2(out, graft_linalg_matmul, a, b, GRAFT_AUTOCAST_LOWER);
    if (GRAFT_AG_ACTIVE(a->autograd || b->autograd)) return graft_ag_product2(out, GRAFT_AG_MATMUL, a, b);
    *out = NULL;
    graft_status st;
    if (a->ndim == 0 || b->ndim == 0)
        return graft_error(GRAFT_ESHAPE, "matmul: both arguments need to be at least 1-D, got %d-D and %d-D", a->ndim,
                           b->ndim);
    if ((st = la_check_dtypes(a, b, NULL, "matmul"))) return st;
    int da = a->ndim, db = b->ndim;
    int64_t ka = a->shape[da - 1], kb = db == 1 ? b->shape[0] : b->shape[db - 2];
    if (ka != kb) return la_inner_error(a, b, ka, kb, "matmul");
    int64_t m = da >= 2 ? a->shape[da - 2] : 1, n = db >= 2 ? b->shape[db - 1] : 1, k = ka;
    int64_t sam = da >= 2 ? a->stride[da - 2] : 0, sak = a->stride[da - 1];
    int64_t sbk = db >= 2 ? b->stride[db - 2] : b->stride[0], sbn = db >= 2 ? b->stride[db - 1] : 0;
    /* batch dims broadcast */
    int nba = da > 2 ? da - 2 : 0, nbb = db > 2 ? db - 2 : 0, nbo;
    int64_t bshape[GRAFT_MAX_DIMS];
    if ((st = graft_broadcast_shapes(&nbo, bshape, nba, a->shape, nbb, b->shape, "matmul (batch dims)"))) return st;
    if (nbo + 2 > GRAFT_MAX_DIMS)
        return graft_error(GRAFT_ESHAPE, "matmul: result would have more than %d dims", GRAFT_MAX_DIMS);
    /* the result: batch + [m if a has rows] + [n if b has columns] */
    int64_t oshape[GRAFT_MAX_DIMS];
    int on = 0;
    for (int d = 0; d < nbo; d++) oshape[on++] = bshape[d];
    if (da >= 2) oshape[on++] = m;
    if (db >= 2) oshape[on++] = n;
    /* both operands as [batch..., rows, cols] views with broadcast strides */
    int64_t ash[GRAFT_MAX_DIMS], ast[GRAFT_MAX_DIMS], bsh[GRAFT_MAX_DIMS], bst[GRAFT_MAX_DIMS];
    for (int d = 0; d < nbo; d++) {
        int ia = d - (nbo - nba), ib = d - (nbo - nbb);
        ash[d] = bsh[d] = bshape[d];
        ast[d] = ia >= 0 && a->shape[ia] == bshape[d] ? a->stride[ia] : 0;
        bst[d] = ib >= 0 && b->shape[ib] == bshape[d] ? b->stride[ib] : 0;
    }
    ash[nbo] = m; ast[nbo] = sam; ash[nbo + 1] = k; ast[nbo + 1] = sak;
    bsh[nbo] = k; bst[nbo] = sbk; bsh[nbo + 1] = n; bst[nbo + 1] = sbn;
    graft_tensor *av = NULL, *bv = NULL;
    if ((st = graft_tensor_empty(out, on, oshape, a->dtype, graft_tensor_device(a)))) return st;
    if (!(st = la_view(&av, a, nbo + 2, ash, ast)) && !(st = la_view(&bv, b, nbo + 2, bsh, bst)))
        st = la_gemm(*out, av, bv, 1.0, 0.0, "matmul");
    graft_tensor_release(av);
    graft_tensor_release(bv);
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

/* ---- the fixed-rank products ---- */

graft_status graft_linalg_mm(graft_tensor **out, graft_tensor *a, graft_tensor *b) {
    if (GRAFT_AUTOCAST_ACTIVE()) return la_autocast2(out, graft_linalg_mm, a, b, GRAFT_AUTOCAST_LOWER);
    if (GRAFT_AG_ACTIVE(a->autograd || b->autograd)) return graft_ag_product2(out, GRAFT_AG_MM, a, b);
    char x[SHAPE_BUF], y[SHAPE_BUF];
    *out = NULL;
    if (a->ndim != 2 || b->ndim != 2)
        return graft_error(GRAFT_ESHAPE, "mm: expected 2-D tensors, got %s and %s",
                           graft_shape_str(a->ndim, a->shape, x, sizeof x), graft_shape_str(b->ndim, b->shape, y, sizeof y));
    graft_status st = la_check_dtypes(a, b, NULL, "mm");
    if (st) return st;
    if (a->shape[1] != b->shape[0]) return la_inner_error(a, b, a->shape[1], b->shape[0], "mm");
    int64_t shape[2] = {a->shape[0], b->shape[1]};
    if ((st = graft_tensor_empty(out, 2, shape, a->dtype, graft_tensor_device(a)))) return st;
    if ((st = la_gemm(*out, a, b, 1.0, 0.0, "mm"))) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

static graft_status la_check_bmm(const graft_tensor *a, const graft_tensor *b, const char *op) {
    char x[SHAPE_BUF], y[SHAPE_BUF];
    if (a->ndim != 3 || b->ndim != 3)
        return graft_error(GRAFT_ESHAPE, "%s: expected 3-D tensors, got %s and %s", op,
                           graft_shape_str(a->ndim, a->shape, x, sizeof x), graft_shape_str(b->ndim, b->shape, y, sizeof y));
    if (a->shape[0] != b->shape[0])
        return graft_error(GRAFT_ESHAPE, "%s: batch sizes %lld and %lld differ (a is %s, b is %s)", op,
                           (long long)a->shape[0], (long long)b->shape[0],
                           graft_shape_str(a->ndim, a->shape, x, sizeof x), graft_shape_str(b->ndim, b->shape, y, sizeof y));
    if (a->shape[2] != b->shape[1]) return la_inner_error(a, b, a->shape[2], b->shape[1], op);
    return GRAFT_OK;
}

graft_status graft_linalg_bmm(graft_tensor **out, graft_tensor *a, graft_tensor *b) {
    if (GRAFT_AUTOCAST_ACTIVE()) return la_autocast2(out, graft_linalg_bmm, a, b, GRAFT_AUTOCAST_LOWER);
    if (GRAFT_AG_ACTIVE(a->autograd || b->autograd)) return graft_ag_product2(out, GRAFT_AG_BMM, a, b);
    *out = NULL;
    graft_status st = la_check_bmm(a, b, "bmm");
    if (st || (st = la_check_dtypes(a, b, NULL, "bmm"))) return st;
    int64_t shape[3] = {a->shape[0], a->shape[1], b->shape[2]};
    if ((st = graft_tensor_empty(out, 3, shape, a->dtype, graft_tensor_device(a)))) return st;
    if ((st = la_gemm(*out, a, b, 1.0, 0.0, "bmm"))) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

graft_status graft_linalg_mv(graft_tensor **out, graft_tensor *a, graft_tensor *v) {
    if (GRAFT_AUTOCAST_ACTIVE()) return la_autocast2(out, graft_linalg_mv, a, v, GRAFT_AUTOCAST_LOWER);
    if (GRAFT_AG_ACTIVE(a->autograd || v->autograd)) return graft_ag_product2(out, GRAFT_AG_MV, a, v);
    char x[SHAPE_BUF], y[SHAPE_BUF];
    *out = NULL;
    if (a->ndim != 2 || v->ndim != 1)
        return graft_error(GRAFT_ESHAPE, "mv: expected a 2-D matrix and a 1-D vector, got %s and %s",
                           graft_shape_str(a->ndim, a->shape, x, sizeof x), graft_shape_str(v->ndim, v->shape, y, sizeof y));
    graft_status st = la_check_dtypes(a, v, NULL, "mv");
    if (st) return st;
    if (a->shape[1] != v->shape[0]) return la_inner_error(a, v, a->shape[1], v->shape[0], "mv");
    return graft_linalg_matmul(out, a, v);
}

graft_status graft_linalg_dot(graft_tensor **out, graft_tensor *a, graft_tensor *b) {
    if (GRAFT_AUTOCAST_ACTIVE()) return la_autocast2(out, graft_linalg_dot, a, b, GRAFT_AUTOCAST_PROMOTE);
    if (GRAFT_AG_ACTIVE(a->autograd || b->autograd)) return graft_ag_product2(out, GRAFT_AG_DOT, a, b);
    char x[SHAPE_BUF], y[SHAPE_BUF];
    *out = NULL;
    if (a->ndim != 1 || b->ndim != 1)
        return graft_error(GRAFT_ESHAPE, "dot: expected 1-D tensors, got %s and %s",
                           graft_shape_str(a->ndim, a->shape, x, sizeof x), graft_shape_str(b->ndim, b->shape, y, sizeof y));
    if (a->dtype != b->dtype)
        return graft_error(GRAFT_ETYPE, "dot: expected both vectors to have the same dtype, got %s and %s",
                           graft_dtype_name(a->dtype), graft_dtype_name(b->dtype));
    graft_status st = la_check_dtypes(a, b, NULL, "dot");
    if (st) return st;
    if (a->shape[0] != b->shape[0])
        return graft_error(GRAFT_ESHAPE, "dot: sizes %lld and %lld differ", (long long)a->shape[0],
                           (long long)b->shape[0]);
    return graft_linalg_matmul(out, a, b);
}

/* ---- outer ---- */

#define OUTER_LOOP(NAME, T)                                                                            \
    static void NAME(T *o, const T *a, const T *b, int64_t n, int64_t m) {                             \
        bool par = graft_should_parallelize(n * m) && n > 1;                                           \
        (void)par;                                                                                     \
        _Pragma("omp parallel for schedule(static) if(par)")                                           \
        for (int64_t i = 0; i < n; i++) {                                                              \
            T ai = a[i];                                                                               \
            T *row = o + i * m;                                                                        \
            _Pragma("omp simd") for (int64_t j = 0; j < m; j++) row[j] = ai * b[j];                    \
        }                                                                                              \
    }
OUTER_LOOP(outer_f32, float)
OUTER_LOOP(outer_f64, double)
OUTER_LOOP(outer_u64, uint64_t)

/* outer on CUDA: a rank-1 product ([n, 1] x [1, m], exact products rounded once, as
 * the CPU's a[:, None] * b) for floating dtypes; integers and bool through the
 * elementwise product of the two broadcast views. */
static graft_status la_outer_cuda(graft_tensor **out, graft_tensor *a, graft_tensor *b) {
    graft_dtype odt = graft_dtype_promote(a->dtype, b->dtype);
    graft_tensor *ac = NULL, *bc = NULL, *a2 = NULL, *b2 = NULL;
    int64_t n = a->shape[0], m = b->shape[0], shape[2] = {n, m};
    graft_status st;
    if (!graft_dtype_is_float(odt)) {
        if (!(st = graft_unsqueeze(&a2, a, 1)) && !(st = graft_unsqueeze(&b2, b, 0))) st = graft_mul(out, a2, b2);
        goto done;
    }
    if ((st = graft_tensor_to_dtype(&a2, a, odt)) || (st = graft_tensor_to_dtype(&b2, b, odt)) ||
        (st = graft_tensor_contiguous(&ac, a2)) || (st = graft_tensor_contiguous(&bc, b2)) ||
        (st = graft_tensor_empty(out, 2, shape, odt, graft_tensor_device(a))))
        goto done;
    graft_cuda_gemm_args g = {
        .ab_dtype = odt, .c_dtype = odt, .device = graft_tensor_device(a).index,
        .m = n, .n = m, .k = 1, .nbatch = 1,
        .a = graft_tensor_data(ac), .a_rs = 1, .a_cs = 1,
        .b = graft_tensor_data(bc), .b_rs = m, .b_cs = 1,
        .c = graft_tensor_data(*out), .c_rs = m, .c_bs = n * m,
        .alpha = 1.0, .beta = 0.0,
    };
    st = graft_cuda_gemm(&g, "outer");
done:
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    graft_tensor_release(ac);
    graft_tensor_release(bc);
    graft_tensor_release(a2);
    graft_tensor_release(b2);
    return st;
}

graft_status graft_linalg_outer(graft_tensor **out, graft_tensor *a, graft_tensor *b) {
    if (GRAFT_AG_ACTIVE(a->autograd || b->autograd)) return graft_ag_product2(out, GRAFT_AG_OUTER, a, b);
    char x[SHAPE_BUF], y[SHAPE_BUF];
    *out = NULL;
    graft_status st = la_check_devices(a, b, NULL, "outer");
    if (st) return st;
    if (a->ndim != 1 || b->ndim != 1)
        return graft_error(GRAFT_ESHAPE, "outer: expected 1-D tensors, got %s and %s",
                           graft_shape_str(a->ndim, a->shape, x, sizeof x), graft_shape_str(b->ndim, b->shape, y, sizeof y));
    if (graft_tensor_device(a).type == GRAFT_CUDA) return la_outer_cuda(out, a, b);
    graft_dtype odt = graft_dtype_promote(a->dtype, b->dtype), cdt = la_compute(odt);
    graft_tensor *ac = NULL, *bc = NULL, *ac2 = NULL, *bc2 = NULL, *o = NULL;
    int64_t shape[2] = {a->shape[0], b->shape[0]};
    if ((st = graft_tensor_to_dtype(&ac, a, cdt)) || (st = graft_tensor_to_dtype(&bc, b, cdt)) ||
        (st = graft_tensor_contiguous(&ac2, ac)) || (st = graft_tensor_contiguous(&bc2, bc)) ||
        (st = graft_tensor_empty(&o, 2, shape, cdt, graft_tensor_device(a))))
        goto done;
    if (cdt == GRAFT_F32) outer_f32(graft_tensor_data(o), graft_tensor_data(ac2), graft_tensor_data(bc2), shape[0], shape[1]);
    else if (cdt == GRAFT_F64) outer_f64(graft_tensor_data(o), graft_tensor_data(ac2), graft_tensor_data(bc2), shape[0], shape[1]);
    else outer_u64(graft_tensor_data(o), graft_tensor_data(ac2), graft_tensor_data(bc2), shape[0], shape[1]);
    st = graft_tensor_to_dtype(out, o, odt);
done:
    graft_tensor_release(ac);
    graft_tensor_release(bc);
    graft_tensor_release(ac2);
    graft_tensor_release(bc2);
    graft_tensor_release(o);
    return st;
}

/* ---- addmm and baddbmm ---- */

/* out = beta * input + alpha * (m1 @ m2) for already-checked operands of rank 2 or 3. */
static graft_status la_addprod(graft_tensor **out, graft_tensor *input, graft_tensor *m1, graft_tensor *m2,
                               double beta, double alpha, const char *op) {
    int nd = m1->ndim;
    int64_t shape[3];
    for (int d = 0; d < nd - 1; d++) shape[d] = m1->shape[d];
    shape[nd - 1] = m2->shape[nd - 1];
    /* input must broadcast to the product's shape */
    bool ok = input->ndim <= nd;
    for (int i = 0; ok && i < input->ndim; i++) {
        int64_t s = input->shape[input->ndim - 1 - i];
        ok = s == 1 || s == shape[nd - 1 - i];
    }
    if (!ok) {
        char x[SHAPE_BUF], y[SHAPE_BUF];
        return graft_error(GRAFT_ESHAPE, "%s: input of shape %s cannot be broadcast to %s", op,
                           graft_shape_str(input->ndim, input->shape, x, sizeof x), graft_shape_str(nd, shape, y, sizeof y));
    }
    graft_status st = graft_tensor_empty(out, nd, shape, m1->dtype, graft_tensor_device(m1));
    if (st) return st;
    if (beta != 0) st = graft_tensor_copy_(*out, input);
    if (!st) st = la_gemm(*out, m1, m2, alpha, beta, op);
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

graft_status graft_linalg_addmm(graft_tensor **out, graft_tensor *input, graft_tensor *m1, graft_tensor *m2,
                                double beta, double alpha) {
    if (GRAFT_AUTOCAST_ACTIVE()) return la_autocast3(out, graft_linalg_addmm, input, m1, m2, beta, alpha);
    if (GRAFT_AG_ACTIVE(input->autograd || m1->autograd || m2->autograd))
        return graft_ag_addprod(out, false, input, m1, m2, beta, alpha);
    char x[SHAPE_BUF], y[SHAPE_BUF];
    *out = NULL;
    if (m1->ndim != 2 || m2->ndim != 2)
        return graft_error(GRAFT_ESHAPE, "addmm: expected 2-D matrices, got %s and %s",
                           graft_shape_str(m1->ndim, m1->shape, x, sizeof x), graft_shape_str(m2->ndim, m2->shape, y, sizeof y));
    graft_status st = la_check_dtypes(m1, m2, input, "addmm");
    if (st) return st;
    if (m1->shape[1] != m2->shape[0]) return la_inner_error(m1, m2, m1->shape[1], m2->shape[0], "addmm");
    return la_addprod(out, input, m1, m2, beta, alpha, "addmm");
}

graft_status graft_linalg_baddbmm(graft_tensor **out, graft_tensor *input, graft_tensor *b1, graft_tensor *b2,
                                  double beta, double alpha) {
    if (GRAFT_AUTOCAST_ACTIVE()) return la_autocast3(out, graft_linalg_baddbmm, input, b1, b2, beta, alpha);
    if (GRAFT_AG_ACTIVE(input->autograd || b1->autograd || b2->autograd))
        return graft_ag_addprod(out, true, input, b1, b2, beta, alpha);
    *out = NULL;
    graft_status st = la_check_bmm(b1, b2, "baddbmm");
    if (st || (st = la_check_dtypes(b1, b2, input, "baddbmm"))) return st;
    return la_addprod(out, input, b1, b2, beta, alpha, "baddbmm");
}
