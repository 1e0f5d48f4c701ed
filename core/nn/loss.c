/* graft nn: losses. cross_entropy and nll_loss share one fused kernel per row (the
 * log-sum-exp of the logits, the target's term, label smoothing, class weights and
 * ignore_index in a single pass) and one fused backward; the pointwise losses (mse, l1,
 * smooth_l1, binary cross-entropy with and without logits) are single iterator passes
 * for the elementwise loss and for each gradient. Weighted means follow PyTorch: the
 * sum of the losses over the sum of the weights of the targets that count. CUDA
 * tensors run the same fused kernels from core/cuda/nn_loss.cu after the same checks.
 * Under autocast the losses of PyTorch's float32 list cast 16-bit inputs to float32
 * (binary_cross_entropy, which PyTorch refuses under autocast, is left out). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/record_nn.h"
#include "cuda/nn_loss.h"
#include "nn/kernels.h"
#include "nn/nn_math.h"
#include "ops/autocast.h"
#include "ops/reduce.h"
#include "tensor/iter.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define SHAPE_BUF GRAFT_NN_SHAPE_BUF

static int ls_threads(int64_t work) {
#ifdef _OPENMP
    return graft_should_parallelize(work) ? omp_get_max_threads() : 1;
#else
    (void)work;
    return 1;
#endif
}

int graft_reduction_from_name(const char *name) {
    if (!strcmp(name, "none")) return GRAFT_REDUCTION_NONE;
    if (!strcmp(name, "mean")) return GRAFT_REDUCTION_MEAN;
    if (!strcmp(name, "sum")) return GRAFT_REDUCTION_SUM;
    return -1;
}

/* ======================================================================== */
/* cross_entropy / nll_loss                                                  */
/* ======================================================================== */

/* x [N, C, inner] (or [C]: N = inner = 1); a row is one (n, k), its classes strided by inner. */
typedef struct {
    int64_t N, C, inner, rows;
} cl_geom;

static void cl_geometry(const graft_tensor *x, cl_geom *g) {
    g->N = x->ndim == 1 ? 1 : x->shape[0];
    g->C = x->ndim == 1 ? x->shape[0] : x->shape[1];
    g->inner = 1;
    for (int d = 2; d < x->ndim; d++) g->inner *= x->shape[d];
    g->rows = g->N * g->inner;
}

graft_status graft_nn_class_loss_prepare(graft_nn_class_loss *a, graft_tensor *x, graft_tensor *target,
                                         graft_tensor *weight, graft_tensor **xc, graft_tensor **tc,
                                         graft_tensor **wc) {
    char s1[SHAPE_BUF], s2[SHAPE_BUF];
    const char *op = a->op;
    *xc = *tc = *wc = NULL;
    graft_tensor *ts[3] = {x, target, weight};
    graft_status st = graft_nn_check_float(x, op, "input");
    if (st || (st = graft_nn_same_device(op, 3, ts))) return st;
    if (x->ndim == 0)
        return graft_error(GRAFT_ESHAPE, "%s: expected an input of shape [N, C, *] or [C], got []", op);
    int64_t C = x->ndim == 1 ? x->shape[0] : x->shape[1];
    a->probs = graft_dtype_is_float(target->dtype);
    if (a->probs && !a->logits)
        return graft_error(GRAFT_ETYPE, "%s: expected class indices (an integer target), got %s", op,
                           graft_dtype_name(target->dtype));
    if (!a->probs && !graft_dtype_is_int(target->dtype))
        return graft_error(GRAFT_ETYPE, "%s: expected class indices (an integer target) or class probabilities, got %s",
                           op, graft_dtype_name(target->dtype));
    bool ok;
    if (a->probs) {
        ok = target->ndim == x->ndim;
        for (int d = 0; ok && d < x->ndim; d++) ok = target->shape[d] == x->shape[d];
        /* a float target shaped like class indices: the dtype is the mistake */
        if (!ok && x->ndim >= 2 && target->ndim == x->ndim - 1)
            return graft_error(GRAFT_ETYPE, "%s: class-index targets must be integers (int64), got %s of shape %s "
                               "(probability targets have the input's shape %s; convert labels with :long())", op,
                               graft_dtype_name(target->dtype), graft_shape_str(target->ndim, target->shape, s1, sizeof s1),
                               graft_shape_str(x->ndim, x->shape, s2, sizeof s2));
    } else {
        /* x's shape without the class dim */
        ok = target->ndim == (x->ndim == 1 ? 0 : x->ndim - 1);
        for (int d = 0, e = 0; ok && d < x->ndim; d++) {
            if (d == (x->ndim == 1 ? 0 : 1)) continue;
            ok = target->shape[e++] == x->shape[d];
        }
    }
    if (!ok)
        return graft_error(GRAFT_ESHAPE, "%s: target %s does not match input %s", op,
                           graft_shape_str(target->ndim, target->shape, s1, sizeof s1),
                           graft_shape_str(x->ndim, x->shape, s2, sizeof s2));
    if (weight && (weight->ndim != 1 || weight->shape[0] != C))
        return graft_error(GRAFT_ESHAPE, "%s: weight should have one element per class (%lld), got shape %s", op,
                           (long long)C, graft_shape_str(weight->ndim, weight->shape, s1, sizeof s1));
    if (weight && !graft_dtype_is_float(weight->dtype))
        return graft_error(GRAFT_ETYPE, "%s: weight must be floating point, got %s", op, graft_dtype_name(weight->dtype));
    if (!(a->label_smoothing >= 0 && a->label_smoothing <= 1))
        return graft_error(GRAFT_EINVAL, "%s: label_smoothing must be between 0.0 and 1.0, got %g", op,
                           a->label_smoothing);
    if ((st = graft_tensor_contiguous(xc, x)) ||
        (st = graft_nn_contig_as(tc, target, a->probs ? x->dtype : GRAFT_I64)) ||
        (st = graft_nn_contig_as(wc, weight, x->dtype))) {
        graft_tensor_release(*xc);
        graft_tensor_release(*tc);
        *xc = *tc = NULL;
        return st;
    }
    return GRAFT_OK;
}

/* Per-row kernels, stamped out per type. xr points at class 0 of the row, classes are
 * `st` elements apart. */
#define CL_KERNELS(T, SUF)                                                                           \
    static T cl_lse_##SUF(const T *xr, int64_t C, int64_t st) {                                      \
        T m = -INFINITY, s = 0;                                                                      \
        if (st == 1) {                                                                               \
            _Pragma("omp simd reduction(max : m)") for (int64_t c = 0; c < C; c++) m = xr[c] > m ? xr[c] : m; \
            _Pragma("omp simd reduction(+ : s)") for (int64_t c = 0; c < C; c++) s += NN_EXP(xr[c] - m); \
        } else {                                                                                     \
            for (int64_t c = 0; c < C; c++) m = xr[c * st] > m ? xr[c * st] : m;                     \
            for (int64_t c = 0; c < C; c++) s += NN_EXP(xr[c * st] - m);                             \
        }                                                                                            \
        return m + NN_LOG(s);                                                                        \
    }                                                                                                \
    /* The loss of one row and the weight it counts with. */                                       \
    static double cl_row_##SUF(const graft_nn_class_loss *a, const T *xr, const int64_t *tgt, const T *pr, \
                               const T *w, int64_t C, int64_t st, T lse, double *wr, int64_t *bad) { \
        double ls = a->label_smoothing;                                                              \
        if (a->probs) {                                                                              \
            double l = 0;                                                                            \
            for (int64_t c = 0; c < C; c++) {                                                        \
                double tt = (double)pr[c * st] * (1 - ls) + ls / (double)C;                          \
                l -= (w ? (double)w[c] : 1.0) * tt * ((double)xr[c * st] - (double)lse);             \
            }                                                                                        \
            *wr = 1;                                                                                 \
            return l;                                                                                \
        }                                                                                            \
        int64_t t = *tgt;                                                                            \
        *wr = 0;                                                                                     \
        if (t == a->ignore_index) return 0;                                                          \
        if (t < 0 || t >= C) {                                                                       \
            *bad = t;                                                                                \
            return 0;                                                                                \
        }                                                                                            \
        double wt = w ? (double)w[t] : 1.0;                                                          \
        double l = -wt * ((double)xr[t * st] - (double)lse);                                         \
        if (ls > 0) {                                                                                \
            double sm = 0;                                                                           \
            for (int64_t c = 0; c < C; c++) sm -= (w ? (double)w[c] : 1.0) * ((double)xr[c * st] - (double)lse); \
            l = (1 - ls) * l + ls / (double)C * sm;                                                  \
        }                                                                                            \
        *wr = wt;                                                                                    \
        return l;                                                                                    \
    }                                                                                                \
    static int64_t cl_forward_##SUF(const graft_nn_class_loss *a, const cl_geom *gm, const T *x,     \
                                    const int64_t *t, const T *pt, const T *w, T *rows_out, T *lse_out, \
                                    double *Lsum, double *Wsum) {                                   \
        int64_t C = gm->C, in = gm->inner, bad = INT64_MIN;                                          \
        double L = 0, W = 0;                                                                         \
        int nt = ls_threads(gm->rows * C);                                                           \
        _Pragma("omp parallel for num_threads(nt) if (nt > 1) schedule(static) reduction(+ : L, W)") \
        for (int64_t r = 0; r < gm->rows; r++) {                                                     \
            int64_t n = r / in, k = r % in, off = n * C * in + k;                                    \
            const T *xr = x + off;                                                                   \
            T lse = a->logits ? cl_lse_##SUF(xr, C, in) : (T)0;                                      \
            double wr;                                                                               \
            int64_t b = INT64_MIN;                                                                   \
            double l = cl_row_##SUF(a, xr, t ? t + r : NULL, pt ? pt + off : NULL, w, C, in, lse, &wr, &b); \
            if (b != INT64_MIN) {                                                                    \
                _Pragma("omp atomic write") bad = b;                                                 \
            }                                                                                        \
            if (rows_out) rows_out[r] = (T)l;                                                        \
            if (lse_out) lse_out[r] = lse;                                                           \
            L += l;                                                                                  \
            W += wr;                                                                                 \
        }                                                                                            \
        *Lsum = L;                                                                                   \
        *Wsum = W;                                                                                   \
        return bad;                                                                                  \
    }                                                                                                \
    /* d loss / d x of each row, scaled by the row's output gradient gr:                          \
     *   indices, logits: p_c ((1-ls) w_t + ls/C sum(w)) - (1-ls) w_t [c = t] - ls/C w_c           \
     *   indices, log-probs: -w_t [c = t]                                                           \
     *   probabilities: p_c sum_c(w_c tt_c) - w_c tt_c,  tt = (1-ls) target + ls/C                  \
     * and, for probabilities, d loss / d target_c = -(1-ls) w_c (x_c - lse). */                  \
    static void cl_backward_##SUF(const graft_nn_class_loss *a, const cl_geom *gm, T *dx, T *dt,     \
                                  const T *g, double gscale, const T *x, const int64_t *t, const T *pt, \
                                  const T *w, const T *lse) {                                        \
        int64_t C = gm->C, in = gm->inner;                                                           \
        double ls = a->label_smoothing, sumw = 0;                                                    \
        for (int64_t c = 0; c < C; c++) sumw += w ? (double)w[c] : 1.0;                              \
        int nt = ls_threads(gm->rows * C);                                                           \
        _Pragma("omp parallel for num_threads(nt) if (nt > 1) schedule(static)")                     \
        for (int64_t r = 0; r < gm->rows; r++) {                                                     \
            int64_t n = r / in, k = r % in, off = n * C * in + k;                                    \
            const T *xr = x + off;                                                                   \
            T *o = dx ? dx + off : NULL, *ot = dt ? dt + off : NULL;                                 \
            double gr = (a->reduction == GRAFT_REDUCTION_NONE ? (double)g[r] : (double)g[0]) * gscale; \
            double l = a->logits ? (double)lse[r] : 0.0;                                             \
            if (a->probs) {                                                                          \
                double S = 0;                                                                        \
                for (int64_t c = 0; c < C; c++)                                                      \
                    S += (w ? (double)w[c] : 1.0) * ((double)pt[off + c * in] * (1 - ls) + ls / (double)C); \
                for (int64_t c = 0; c < C; c++) {                                                    \
                    double wc = w ? (double)w[c] : 1.0, xv = (double)xr[c * in];                     \
                    double tt = (double)pt[off + c * in] * (1 - ls) + ls / (double)C;                \
                    if (o) o[c * in] = (T)(gr * (exp(xv - l) * S - wc * tt));                        \
                    if (ot) ot[c * in] = (T)(-gr * (1 - ls) * wc * (xv - l));                        \
                }                                                                                    \
                continue;                                                                            \
            }                                                                                        \
            if (!o) continue;                                                                        \
            int64_t tg = t[r];                                                                       \
            if (tg == a->ignore_index || tg < 0 || tg >= C) {                                        \
                for (int64_t c = 0; c < C; c++) o[c * in] = 0;                                       \
                continue;                                                                            \
            }                                                                                        \
            double wt = w ? (double)w[tg] : 1.0;                                                     \
            if (!a->logits) {                                                                        \
                for (int64_t c = 0; c < C; c++) o[c * in] = 0;                                       \
                o[tg * in] = (T)(-gr * wt);                                                          \
                continue;                                                                            \
            }                                                                                        \
            const T pc = (T)(gr * ((1 - ls) * wt + ls / (double)C * sumw)), lc = (T)(gr * ls / (double)C); \
            const T lt = (T)l;                                                                       \
            if (in == 1 && !w) {                                                                     \
                _Pragma("omp simd") for (int64_t c = 0; c < C; c++) o[c] = NN_EXP(xr[c] - lt) * pc - lc; \
            } else {                                                                                 \
                for (int64_t c = 0; c < C; c++)                                                      \
                    o[c * in] = NN_EXP(xr[c * in] - lt) * pc - lc * (w ? w[c] : (T)1);               \
            }                                                                                        \
            o[tg * in] = (T)((double)o[tg * in] - gr * (1 - ls) * wt);                               \
        }                                                                                            \
    }

CL_KERNELS(float, f32)
CL_KERNELS(double, f64)

graft_status graft_nn_class_loss_forward(graft_tensor **out, graft_tensor **lse, double *total_weight,
                                         const graft_nn_class_loss *a, graft_tensor *x, graft_tensor *target,
                                         graft_tensor *weight) {
    cl_geom gm;
    cl_geometry(x, &gm);
    graft_tensor *rows = NULL, *lt = NULL;
    graft_status st = GRAFT_OK;
    *out = NULL;
    if (lse) *lse = NULL;
    /* rows: the per-row losses in the output's shape for "none" (target's shape, or x's
     * without the class dim) */
    int64_t rshape[GRAFT_MAX_DIMS] = {0};
    int rnd = 0;
    for (int d = 0; d < x->ndim; d++)
        if (d != (x->ndim == 1 ? 0 : 1)) rshape[rnd++] = x->shape[d];
    graft_device dev = graft_tensor_device(x);
    if (a->reduction == GRAFT_REDUCTION_NONE && (st = graft_tensor_empty(&rows, rnd, rshape, x->dtype, dev)))
        return st;
    if (lse && a->logits && (st = graft_tensor_empty(&lt, 1, &gm.rows, x->dtype, dev))) goto done;
    double L = 0, W = 0;
    int64_t bad = INT64_MIN;
    if (dev.type == GRAFT_CUDA) {
        if (!rows && (st = graft_tensor_empty(out, 0, rshape, x->dtype, dev))) goto done;
        if ((st = graft_cuda_nn_class_loss_forward(rows ? rows : *out, lt, &W, &bad, a, x, target, weight, gm.N, gm.C,
                                                   gm.inner)))
            goto done;
        if (bad != INT64_MIN) {
            st = graft_error(GRAFT_EINDEX, "%s: target %lld is out of bounds for %lld classes", a->op, (long long)bad,
                             (long long)gm.C);
            goto done;
        }
        if (total_weight) *total_weight = W;
        if (rows) {
            *out = rows;
            rows = NULL;
        }
        if (lse) {
            *lse = lt;
            lt = NULL;
        }
        goto done;
    }
    const void *tp = a->probs ? NULL : graft_tensor_data(target), *pp = a->probs ? graft_tensor_data(target) : NULL;
    const void *wp = weight ? graft_tensor_data(weight) : NULL;
    if (x->dtype == GRAFT_F64)
        bad = cl_forward_f64(a, &gm, graft_tensor_data(x), tp, pp, wp, rows ? graft_tensor_data(rows) : NULL,
                             lt ? graft_tensor_data(lt) : NULL, &L, &W);
    else
        bad = cl_forward_f32(a, &gm, graft_tensor_data(x), tp, pp, wp, rows ? graft_tensor_data(rows) : NULL,
                             lt ? graft_tensor_data(lt) : NULL, &L, &W);
    if (bad != INT64_MIN) {
        st = graft_error(GRAFT_EINDEX, "%s: target %lld is out of bounds for %lld classes", a->op, (long long)bad,
                         (long long)gm.C);
        goto done;
    }
    if (a->probs) W = (double)gm.rows;
    if (total_weight) *total_weight = W;
    if (rows) {
        *out = rows;
        rows = NULL;
    } else {
        if ((st = graft_tensor_empty(out, 0, rshape, x->dtype, graft_cpu))) goto done;
        graft_store_f64(graft_tensor_data(*out), x->dtype, a->reduction == GRAFT_REDUCTION_MEAN ? L / W : L);
    }
    if (lse) {
        *lse = lt;
        lt = NULL;
    }
done:
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    graft_tensor_release(rows);
    graft_tensor_release(lt);
    return st;
}

graft_status graft_nn_class_loss_backward(graft_tensor **dx, graft_tensor **dtarget, const graft_nn_class_loss *a,
                                          graft_tensor *g, graft_tensor *x, graft_tensor *target,
                                          graft_tensor *weight, graft_tensor *lse, double total_weight) {
    cl_geom gm;
    cl_geometry(x, &gm);
    graft_tensor *gc = NULL;
    graft_tensor *ts[2] = {g, x};
    graft_device dev = graft_tensor_device(x);
    if (dx) *dx = NULL;
    if (dtarget) *dtarget = NULL;
    graft_status st = graft_nn_same_device(a->op, 2, ts);
    if (st || (st = graft_nn_contig_as(&gc, g, x->dtype))) return st;
    if (dx && (st = graft_tensor_empty(dx, x->ndim, x->shape, x->dtype, dev))) goto done;
    if (dtarget && (st = graft_tensor_empty(dtarget, x->ndim, x->shape, x->dtype, dev))) goto done;
    double gscale = a->reduction == GRAFT_REDUCTION_MEAN ? 1.0 / total_weight : 1.0;
    if (dev.type == GRAFT_CUDA) {
        st = graft_cuda_nn_class_loss_backward(dx ? *dx : NULL, dtarget ? *dtarget : NULL, a, gc, gscale, x, target,
                                               weight, lse, gm.N, gm.C, gm.inner);
        goto done;
    }
    const void *tp = a->probs ? NULL : graft_tensor_data(target), *pp = a->probs ? graft_tensor_data(target) : NULL;
    const void *wp = weight ? graft_tensor_data(weight) : NULL, *lp = lse ? graft_tensor_data(lse) : NULL;
    void *dxp = dx ? graft_tensor_data(*dx) : NULL, *dtp = dtarget ? graft_tensor_data(*dtarget) : NULL;
    if (x->dtype == GRAFT_F64)
        cl_backward_f64(a, &gm, dxp, dtp, graft_tensor_data(gc), gscale, graft_tensor_data(x), tp, pp, wp, lp);
    else
        cl_backward_f32(a, &gm, dxp, dtp, graft_tensor_data(gc), gscale, graft_tensor_data(x), tp, pp, wp, lp);
done:
    if (st) {
        if (dx) { graft_tensor_release(*dx); *dx = NULL; }
        if (dtarget) { graft_tensor_release(*dtarget); *dtarget = NULL; }
    }
    graft_tensor_release(gc);
    return st;
}

static graft_status cl_front(graft_tensor **out, graft_nn_class_loss *a, graft_tensor *x, graft_tensor *target,
                             graft_tensor *weight) {
    GRAFT_AUTOCAST_FP32_2(x, target, cl_front(out, a, x, target, weight));
    if (graft_nn_is_half(x)) { /* in float32, the loss rounded back once */
        graft_tensor *t[3] = {x, target, weight}, *h[3] = {NULL, NULL, NULL}, *r = NULL;
        graft_status st = graft_nn_half_up(t, 3, h);
        if (!st) st = cl_front(&r, a, t[0], t[1], t[2]);
        graft_nn_half_release(h, 3);
        return st ? st : graft_nn_half_back(out, r, x->dtype);
    }
    if (GRAFT_AG_ACTIVE(x->autograd || target->autograd)) return graft_ag_nn_class_loss(out, a, x, target, weight);
    graft_tensor *xc, *tc, *wc;
    graft_status st = graft_nn_class_loss_prepare(a, x, target, weight, &xc, &tc, &wc);
    if (st) return st;
    st = graft_nn_class_loss_forward(out, NULL, NULL, a, xc, tc, wc);
    graft_tensor_release(xc);
    graft_tensor_release(tc);
    graft_tensor_release(wc);
    return st;
}

graft_status graft_nn_cross_entropy(graft_tensor **out, graft_tensor *x, graft_tensor *target, graft_tensor *weight,
                                    int64_t ignore_index, graft_reduction reduction, double label_smoothing) {
    graft_nn_class_loss a = {true, false, ignore_index, reduction, label_smoothing, "cross_entropy"};
    return cl_front(out, &a, x, target, weight);
}

graft_status graft_nn_nll_loss(graft_tensor **out, graft_tensor *x, graft_tensor *target, graft_tensor *weight,
                               int64_t ignore_index, graft_reduction reduction) {
    graft_nn_class_loss a = {false, false, ignore_index, reduction, 0.0, "nll_loss"};
    return cl_front(out, &a, x, target, weight);
}

/* ======================================================================== */
/* pointwise losses                                                          */
/* ======================================================================== */

typedef struct {
    graft_nn_loss kind;
    double beta;
    double scale;      /* backward: the output gradient's factor (1 / numel for mean) */
    bool target;       /* backward: d/dy instead of d/dx */
    int bad;           /* BCE: an input outside [0, 1] was seen */
} pl_ctx;

static const char *pl_name(graft_nn_loss k) {
    switch (k) {
    case GRAFT_NN_MSE: return "mse_loss";
    case GRAFT_NN_L1: return "l1_loss";
    case GRAFT_NN_SMOOTH_L1: return "smooth_l1_loss";
    case GRAFT_NN_BCE: return "binary_cross_entropy";
    case GRAFT_NN_BCE_LOGITS: return "binary_cross_entropy_with_logits";
    }
    return "loss";
}

/* Elementwise loss l(x, y, w, pw); operands {out, x, y, w, pw}:
 *   mse (x-y)^2; l1 |x-y|; smooth_l1 |d| < beta ? d^2 / (2 beta) : |d| - beta / 2
 *   bce -w (y max(log x, -100) + (1-y) max(log(1-x), -100))
 *   bce_logits w ((1-y) x + (1 + (pw-1) y) (log(1 + e^-|x|) + max(-x, 0)))           */
#define PL_FORWARD(T, SUF)                                                                           \
    static void pl_forward_##SUF(char **d, const int64_t *s, int64_t n, void *vctx) {               \
        pl_ctx *c = vctx;                                                                            \
        const T beta = (T)c->beta;                                                                   \
        int bad = 0;                                                                                 \
        for (int64_t i = 0; i < n; i++) {                                                            \
            T x = *(const T *)(d[1] + i * s[1]), y = *(const T *)(d[2] + i * s[2]);                  \
            T w = *(const T *)(d[3] + i * s[3]), pw = *(const T *)(d[4] + i * s[4]), l = 0;          \
            switch (c->kind) {                                                                       \
            case GRAFT_NN_MSE: l = (x - y) * (x - y); break;                                         \
            case GRAFT_NN_L1: l = fabs(x - y); break;                                                \
            case GRAFT_NN_SMOOTH_L1: {                                                               \
                T ad = fabs(x - y);                                                                  \
                l = ad < beta ? (T)0.5 * ad * ad / beta : ad - (T)0.5 * beta;                        \
                break;                                                                               \
            }                                                                                        \
            case GRAFT_NN_BCE: {                                                                     \
                if (!(x >= 0 && x <= 1)) bad = 1;                                                    \
                T lx = NN_LOG(x), l1x = NN_LOG((T)1 - x);                                            \
                lx = lx < (T)-100 ? (T)-100 : lx;                                                    \
                l1x = l1x < (T)-100 ? (T)-100 : l1x;                                                 \
                l = -w * (y * lx + ((T)1 - y) * l1x);                                                \
                break;                                                                               \
            }                                                                                        \
            case GRAFT_NN_BCE_LOGITS: {                                                              \
                T m = -x > 0 ? -x : (T)0;                                                            \
                T sp = NN_LOG(NN_EXP(-m) + NN_EXP(-x - m)) + m;                                      \
                l = w * (((T)1 - y) * x + ((pw - (T)1) * y + (T)1) * sp);                            \
                break;                                                                               \
            }                                                                                        \
            }                                                                                        \
            *(T *)(d[0] + i * s[0]) = l;                                                             \
        }                                                                                            \
        if (bad) __atomic_store_n(&c->bad, 1, __ATOMIC_RELAXED);                                     \
    }

/* d l / d x (or d y with ctx->target), times the output gradient; operands
 * {out, g, x, y, w, pw}:
 *   mse 2 (x-y); l1 sign(x-y); smooth_l1 |d| < beta ? d / beta : sign(d)
 *   bce w (x-y) / max(x (1-x), 1e-12);  d/dy: w (max(log(1-x), -100) - max(log x, -100))
 *   bce_logits w ((pw y + 1 - y) sigmoid(x) - pw y);  d/dy: w ((pw-1) softplus(-x) - x)   */
#define PL_BACKWARD(T, SUF)                                                                          \
    static void pl_backward_##SUF(char **d, const int64_t *s, int64_t n, void *vctx) {              \
        const pl_ctx *c = vctx;                                                                      \
        const T beta = (T)c->beta, scale = (T)c->scale;                                              \
        for (int64_t i = 0; i < n; i++) {                                                            \
            T g = *(const T *)(d[1] + i * s[1]) * scale;                                             \
            T x = *(const T *)(d[2] + i * s[2]), y = *(const T *)(d[3] + i * s[3]);                  \
            T w = *(const T *)(d[4] + i * s[4]), pw = *(const T *)(d[5] + i * s[5]), r = 0;          \
            T dd = x - y, sg = (T)((dd > 0) - (dd < 0));                                             \
            switch (c->kind) {                                                                       \
            case GRAFT_NN_MSE: r = 2 * dd; break;                                                    \
            case GRAFT_NN_L1: r = sg; break;                                                         \
            case GRAFT_NN_SMOOTH_L1: r = fabs(dd) < beta ? dd / beta : sg; break;                    \
            case GRAFT_NN_BCE:                                                                       \
                if (c->target) {                                                                     \
                    T lx = NN_LOG(x), l1x = NN_LOG((T)1 - x);                                        \
                    lx = lx < (T)-100 ? (T)-100 : lx;                                                \
                    l1x = l1x < (T)-100 ? (T)-100 : l1x;                                             \
                    r = w * (l1x - lx);                                                              \
                } else {                                                                             \
                    T den = x * ((T)1 - x);                                                          \
                    r = w * dd / (den > (T)1e-12 ? den : (T)1e-12);                                  \
                }                                                                                    \
                break;                                                                               \
            case GRAFT_NN_BCE_LOGITS:                                                                \
                if (c->target) {                                                                     \
                    T m = -x > 0 ? -x : (T)0;                                                        \
                    T sp = NN_LOG(NN_EXP(-m) + NN_EXP(-x - m)) + m;                                  \
                    r = w * ((pw - (T)1) * sp - x);                                                  \
                } else {                                                                             \
                    T sig = (T)1 / ((T)1 + NN_EXP(-x));                                              \
                    r = w * ((pw * y + (T)1 - y) * sig - pw * y);                                    \
                }                                                                                    \
                break;                                                                               \
            }                                                                                        \
            if (c->target && c->kind != GRAFT_NN_BCE && c->kind != GRAFT_NN_BCE_LOGITS) r = -r;      \
            *(T *)(d[0] + i * s[0]) = g * r;                                                         \
        }                                                                                            \
    }

PL_FORWARD(float, f32)
PL_FORWARD(double, f64)
PL_BACKWARD(float, f32)
PL_BACKWARD(double, f64)

/* The operands of a pointwise loss in x's dtype, broadcast shape in *shape: y, and w
 * and pw (a 0-dim 1 when absent). */
typedef struct {
    graft_tensor *y, *w, *pw;
    int ndim;
    int64_t shape[GRAFT_MAX_DIMS];
} pl_operands;

static void pl_release(pl_operands *o) {
    graft_tensor_release(o->y);
    graft_tensor_release(o->w);
    graft_tensor_release(o->pw);
    memset(o, 0, sizeof *o);
}

/* +1: a 0-dim 1 of dtype d on dev. */
static graft_status pl_one(graft_tensor **out, graft_dtype d, graft_device dev) {
    int64_t none[1] = {1};
    graft_status st = graft_tensor_empty(out, 0, none, d, dev);
    if (!st && (st = graft_tensor_fill_(*out, 1.0))) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

static graft_status pl_prepare(pl_operands *o, graft_nn_loss kind, graft_tensor *x, graft_tensor *y,
                               graft_tensor *w, graft_tensor *pw) {
    char s1[SHAPE_BUF], s2[SHAPE_BUF];
    const char *op = pl_name(kind);
    memset(o, 0, sizeof *o);
    graft_tensor *ts[4] = {x, y, w, pw};
    graft_status st = graft_nn_check_float(x, op, "input");
    if (st || (st = graft_nn_same_device(op, 4, ts))) return st;
    if (!graft_dtype_is_float(y->dtype) && kind != GRAFT_NN_MSE && kind != GRAFT_NN_L1 && kind != GRAFT_NN_SMOOTH_L1)
        return graft_error(GRAFT_ETYPE, "%s: target must be floating point, got %s", op, graft_dtype_name(y->dtype));
    bool same = x->ndim == y->ndim;
    for (int d = 0; same && d < x->ndim; d++) same = x->shape[d] == y->shape[d];
    if (kind == GRAFT_NN_BCE || kind == GRAFT_NN_BCE_LOGITS) {
        if (!same)
            return graft_error(GRAFT_ESHAPE, "%s: target size %s must be the same as input size %s", op,
                               graft_shape_str(y->ndim, y->shape, s1, sizeof s1),
                               graft_shape_str(x->ndim, x->shape, s2, sizeof s2));
        o->ndim = x->ndim;
        memcpy(o->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    } else if ((st = graft_broadcast_shapes(&o->ndim, o->shape, x->ndim, x->shape, y->ndim, y->shape, op))) {
        return st;
    }
    graft_tensor *extra[2] = {w, pw};
    const char *names[2] = {"weight", "pos_weight"};
    for (int k = 0; k < 2; k++) {
        graft_tensor *t = extra[k];
        if (!t) continue;
        int bn;
        int64_t bs[GRAFT_MAX_DIMS];
        bool ok = graft_broadcast_shapes(&bn, bs, o->ndim, o->shape, t->ndim, t->shape, op) == GRAFT_OK && bn == o->ndim;
        for (int d = 0; ok && d < bn; d++) ok = bs[d] == o->shape[d];
        if (!ok)
            return graft_error(GRAFT_ESHAPE, "%s: %s of shape %s does not broadcast to the input's shape %s", op, names[k],
                               graft_shape_str(t->ndim, t->shape, s1, sizeof s1), graft_shape_str(o->ndim, o->shape, s2, sizeof s2));
        if (!graft_dtype_is_float(t->dtype))
            return graft_error(GRAFT_ETYPE, "%s: %s must be floating point, got %s", op, names[k], graft_dtype_name(t->dtype));
    }
    if ((st = graft_tensor_to_dtype(&o->y, y, x->dtype)) ||
        (st = w ? graft_tensor_to_dtype(&o->w, w, x->dtype) : pl_one(&o->w, x->dtype, graft_tensor_device(x))) ||
        (st = pw ? graft_tensor_to_dtype(&o->pw, pw, x->dtype) : pl_one(&o->pw, x->dtype, graft_tensor_device(x)))) {
        pl_release(o);
        return st;
    }
    return GRAFT_OK;
}

graft_status graft_nn_pointwise_loss_forward(graft_tensor **out, graft_nn_loss kind, graft_tensor *x,
                                             graft_tensor *y, graft_tensor *w, graft_tensor *pw,
                                             graft_reduction reduction, double beta) {
    pl_operands o;
    *out = NULL;
    if (kind == GRAFT_NN_SMOOTH_L1 && !(beta >= 0))
        return graft_error(GRAFT_EINVAL, "smooth_l1_loss: beta must be non-negative, got %g", beta);
    graft_status st = pl_prepare(&o, kind, x, y, w, pw);
    if (st) return st;
    graft_tensor *l = NULL;
    graft_iter it;
    pl_ctx c = {kind, beta, 1.0, false, 0};
    graft_device dev = graft_tensor_device(x);
    if (dev.type == GRAFT_CUDA) {
        bool bad = false;
        if (reduction == GRAFT_REDUCTION_NONE ? (st = graft_tensor_empty(out, o.ndim, o.shape, x->dtype, dev))
                                              : (st = graft_tensor_empty(out, 0, o.shape, x->dtype, dev)))
            goto done;
        st = graft_cuda_nn_pointwise_loss_forward(*out, &bad, kind, x, o.y, o.w, o.pw, reduction, beta, o.ndim, o.shape);
        if (!st && bad)
            st = graft_error(GRAFT_EINVAL, "binary_cross_entropy: all elements of input should be between 0 and 1");
        if (st) {
            graft_tensor_release(*out);
            *out = NULL;
        }
        goto done;
    }
    if ((st = graft_tensor_empty(&l, o.ndim, o.shape, x->dtype, graft_cpu))) goto done;
    graft_tensor *ops[5] = {l, x, o.y, o.w, o.pw};
    if ((st = graft_iter_init(&it, 5, ops, o.ndim, o.shape))) goto done;
    graft_iter_run(&it, x->dtype == GRAFT_F64 ? pl_forward_f64 : pl_forward_f32, &c);
    if (c.bad) {
        st = graft_error(GRAFT_EINVAL, "binary_cross_entropy: all elements of input should be between 0 and 1");
        goto done;
    }
    if (reduction == GRAFT_REDUCTION_NONE) {
        *out = l;
        l = NULL;
    } else if (reduction == GRAFT_REDUCTION_MEAN) {
        st = graft_reduce_mean(out, l, NULL, 0, false, -1);
    } else {
        st = graft_reduce_sum(out, l, NULL, 0, false, -1);
    }
done:
    graft_tensor_release(l);
    pl_release(&o);
    return st;
}

graft_status graft_nn_pointwise_loss_backward(graft_tensor **dx, graft_tensor **dy, graft_nn_loss kind,
                                              graft_tensor *g, graft_tensor *x, graft_tensor *y, graft_tensor *w,
                                              graft_tensor *pw, graft_reduction reduction, double beta) {
    pl_operands o;
    if (dx) *dx = NULL;
    if (dy) *dy = NULL;
    graft_status st = pl_prepare(&o, kind, x, y, w, pw);
    if (st) return st;
    graft_tensor *gc = NULL;
    int64_t numel = 1;
    for (int d = 0; d < o.ndim; d++) numel *= o.shape[d];
    pl_ctx c = {kind, beta, reduction == GRAFT_REDUCTION_MEAN ? 1.0 / (double)numel : 1.0, false, 0};
    graft_tensor *ts[2] = {g, x};
    graft_device dev = graft_tensor_device(x);
    if ((st = graft_nn_same_device(pl_name(kind), 2, ts)) || (st = graft_tensor_to_dtype(&gc, g, x->dtype))) goto done;
    for (int pass = 0; pass < 2; pass++) {
        graft_tensor **res = pass ? dy : dx;
        if (!res) continue;
        c.target = pass == 1;
        if ((st = graft_tensor_empty(res, o.ndim, o.shape, x->dtype, dev))) goto done;
        if (dev.type == GRAFT_CUDA) {
            if ((st = graft_cuda_nn_pointwise_loss_backward(*res, c.target, kind, gc, c.scale, x, o.y, o.w, o.pw, beta)))
                goto done;
            continue;
        }
        graft_iter it;
        graft_tensor *ops[6] = {*res, gc, x, o.y, o.w, o.pw};
        if ((st = graft_iter_init(&it, 6, ops, o.ndim, o.shape))) goto done;
        graft_iter_run(&it, x->dtype == GRAFT_F64 ? pl_backward_f64 : pl_backward_f32, &c);
    }
done:
    if (st) {
        if (dx) { graft_tensor_release(*dx); *dx = NULL; }
        if (dy) { graft_tensor_release(*dy); *dy = NULL; }
    }
    graft_tensor_release(gc);
    pl_release(&o);
    return st;
}

graft_status graft_nn_pointwise_loss(graft_tensor **out, graft_nn_loss kind, graft_tensor *x, graft_tensor *y,
                                     graft_tensor *weight, graft_tensor *pos_weight, graft_reduction reduction,
                                     double beta) {
    if (pos_weight && kind != GRAFT_NN_BCE_LOGITS)
        return graft_error(GRAFT_EINVAL, "%s: pos_weight is only for binary_cross_entropy_with_logits", pl_name(kind));
    if (kind != GRAFT_NN_BCE)
        GRAFT_AUTOCAST_FP32_2(x, y, graft_nn_pointwise_loss(out, kind, x, y, weight, pos_weight, reduction, beta));
    if (graft_nn_is_half(x)) { /* in float32, the loss rounded back once */
        graft_tensor *t[4] = {x, y, weight, pos_weight}, *h[4] = {NULL, NULL, NULL, NULL}, *r = NULL;
        graft_status st = graft_nn_half_up(t, 4, h);
        if (!st) st = graft_nn_pointwise_loss(&r, kind, t[0], t[1], t[2], t[3], reduction, beta);
        graft_nn_half_release(h, 4);
        return st ? st : graft_nn_half_back(out, r, x->dtype);
    }
    if (GRAFT_AG_ACTIVE(x->autograd || y->autograd))
        return graft_ag_nn_pointwise_loss(out, kind, x, y, weight, pos_weight, reduction, beta);
    return graft_nn_pointwise_loss_forward(out, kind, x, y, weight, pos_weight, reduction, beta);
}
