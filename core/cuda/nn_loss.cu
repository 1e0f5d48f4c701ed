/* graft CUDA kernels: cross_entropy / nll_loss (log-softmax, the target's term, label
 * smoothing, class weights and ignore_index fused in one row kernel, and one fused
 * backward), the pointwise losses (the elementwise loss and its reduction in one
 * pass), embedding and one_hot. Sums over rows or elements are deterministic: each
 * block reduces a fixed slice into a partial, one block folds the partials. Formulas
 * as core/nn/loss.c. */
#include <limits.h>

#include "kernel.cuh"
#include "cuda/nn_act.h"
#include "cuda/nn_loss.h"

/* What a kernel reports back to the host (32 bytes of device memory, zeroed first). */
struct nk_status {
    unsigned long long flag; /* an error was seen */
    long long value;         /* the offending index */
    double total;            /* the mean's divisor */
    double pad;
};

/* Records the first bad index (any one of them when several threads see one). */
__device__ __forceinline__ void nk_report(nk_status *s, long long v) {
    if (atomicCAS(&s->flag, 0ull, 1ull) == 0ull) s->value = v;
}

/* +1: a zeroed status block on dev. */
static graft_status nk_status_new(graft_tensor **t, graft_device dev) {
    int64_t n = 4;
    graft_status st = graft_tensor_empty(t, 1, &n, GRAFT_I64, dev);
    if (!st && (st = graft_tensor_fill_int_(*t, 0))) {
        graft_tensor_release(*t);
        *t = NULL;
    }
    return st;
}

/* Copies the status back (waits for the kernels before it). */
static graft_status nk_status_read(graft_tensor *t, nk_status *out) {
    return graft_cuda_memcpy_d2h(out, graft_tensor_data(t), sizeof *out);
}

static graft_status nk_unsupported(const char *op, graft_dtype d) {
    return graft_error(GRAFT_ETYPE, "%s: %s is not supported on CUDA", op, graft_dtype_name(d));
}

/* ======================================================================== */
/* deterministic sums                                                        */
/* ======================================================================== */

#define NK_PARTIALS 1024 /* blocks of a first pass at most (one block folds them) */

/* Blocks of a first pass over n items: a function of n only, so every run splits the
 * sum the same way. */
static unsigned nk_sum_blocks(int64_t n) {
    unsigned b = gk_blocks(n, GK_THREADS);
    return b > NK_PARTIALS ? NK_PARTIALS : b;
}

/* pl[b], pw[b] <- the sums of l and w (w may be NULL) over block b's slice. */
template <class A>
__global__ void nk_partials_kernel(const A *l, const A *w, int64_t n, A *pl, A *pw) {
    nk_block_group grp;
    A sl = 0, sw = 0;
    GK_FOR(i, n) {
        sl += l[i];
        if (w) sw += w[i];
    }
    sl = grp.sum(sl);
    if (w) sw = grp.sum(sw);
    if (threadIdx.x == 0) {
        pl[blockIdx.x] = sl;
        if (w) pw[blockIdx.x] = sw;
    }
}

/* out <- L = sum(pl), or L / W for the mean with W = sum(pw) (or `count` without pw);
 * status->total <- W. One block. */
template <int DT>
__global__ void nk_finish_kernel(const typename nk_acc<DT>::A *pl, const typename nk_acc<DT>::A *pw, int nb,
                                 double count, bool mean, typename gk_type<DT>::S *out, nk_status *status) {
    typedef typename nk_acc<DT>::A A;
    nk_block_group grp;
    A sl = 0, sw = 0;
    for (int i = threadIdx.x; i < nb; i += blockDim.x) {
        sl += pl[i];
        if (pw) sw += pw[i];
    }
    sl = grp.sum(sl);
    if (pw) sw = grp.sum(sw);
    if (threadIdx.x == 0) {
        double W = pw ? (double)sw : count;
        out[0] = gk_type<DT>::st(mean ? (A)((double)sl / W) : sl);
        status->total = W;
    }
}

/* ======================================================================== */
/* cross_entropy / nll_loss                                                  */
/* ======================================================================== */

struct cl_params {
    bool logits, probs;
    long long ignore;
    double ls; /* label smoothing */
    int64_t rows, C, inner;
};

/* One row r = (n, k) of x [N, C, inner]: its classes start at n C inner + k, `inner`
 * apart. loss = -w_t (x_t - lse), with smoothing (1-ls) loss - ls/C sum_c w_c (x_c - lse);
 * probabilities: -sum_c w_c tt_c (x_c - lse), tt = (1-ls) p + ls/C; lse = 0 for
 * nll_loss. Writes the row's loss to rows_out (reduction none) or lrow / wrow (the loss
 * and the weight it counts with), and lse. */
template <int DT, class G>
__global__ void cl_forward_kernel(cl_params p, const typename gk_type<DT>::S *x, const int64_t *tgt,
                                  const typename gk_type<DT>::S *pt, const typename gk_type<DT>::S *w,
                                  typename gk_type<DT>::S *rows_out, typename nk_acc<DT>::A *lrow,
                                  typename nk_acc<DT>::A *wrow, typename gk_type<DT>::S *lse_out, nk_status *status) {
    typedef gk_type<DT> T;
    typedef typename nk_acc<DT>::A A;
    G grp;
    const int64_t C = p.C, in = p.inner;
    const A ls = (A)p.ls, lsc = (A)(p.ls / (double)p.C);
    for (int64_t r = nk_first(grp); r < p.rows; r += nk_step(grp)) {
        int64_t n = r / in, base = n * C * in + (r - n * in);
        const typename T::S *xr = x + base;
        A lse = 0;
        if (p.logits) {
            A m = -nk_inf<A>(), s = 0;
            for (int64_t c = grp.rank(); c < C; c += grp.size()) nk_online_add(m, s, (A)T::ld(xr[c * in]));
            grp.online(m, s);
            lse = m + nk_log(s);
        }
        A l = 0, wr = 0;
        if (p.probs) {
            A acc = 0;
            for (int64_t c = grp.rank(); c < C; c += grp.size()) {
                A tt = (A)T::ld(pt[base + c * in]) * ((A)1 - ls) + lsc;
                acc += (w ? (A)T::ld(w[c]) : (A)1) * tt * ((A)T::ld(xr[c * in]) - lse);
            }
            l = -grp.sum(acc);
            wr = 1;
        } else {
            A sm = 0;
            if (p.ls > 0) {
                for (int64_t c = grp.rank(); c < C; c += grp.size())
                    sm += (w ? (A)T::ld(w[c]) : (A)1) * ((A)T::ld(xr[c * in]) - lse);
                sm = grp.sum(sm);
            }
            long long t = tgt[r];
            if (t != p.ignore) {
                if (t < 0 || t >= C) {
                    if (grp.rank() == 0) nk_report(status, t);
                } else {
                    A wt = w ? (A)T::ld(w[t]) : (A)1;
                    l = -wt * ((A)T::ld(xr[t * in]) - lse);
                    if (p.ls > 0) l = ((A)1 - ls) * l - lsc * sm;
                    wr = wt;
                }
            }
        }
        if (grp.rank() == 0) {
            if (rows_out) {
                rows_out[r] = T::st(l);
            } else {
                lrow[r] = l;
                wrow[r] = wr;
            }
            if (lse_out) lse_out[r] = T::st(lse);
        }
    }
}

/* d loss / d x of row r, times its output gradient gr:
 *   indices, logits: p_c ((1-ls) w_t + ls/C sum(w)) - (1-ls) w_t [c = t] - ls/C w_c
 *   indices, log-probs: -w_t [c = t]
 *   probabilities: p_c sum_c(w_c tt_c) - w_c tt_c
 * with p_c = e^(x_c - lse); for probabilities also d loss / d target_c = -(1-ls) w_c (x_c - lse).
 * Ignored rows get zeros. */
template <int DT, class G>
__global__ void cl_backward_kernel(cl_params p, typename gk_type<DT>::S *dx, typename gk_type<DT>::S *dt,
                                   const typename gk_type<DT>::S *g, bool g_rows, typename nk_acc<DT>::A gscale,
                                   const typename gk_type<DT>::S *x, const int64_t *tgt,
                                   const typename gk_type<DT>::S *pt, const typename gk_type<DT>::S *w,
                                   const typename gk_type<DT>::S *lse) {
    typedef gk_type<DT> T;
    typedef typename nk_acc<DT>::A A;
    G grp;
    const int64_t C = p.C, in = p.inner;
    const A ls = (A)p.ls, lsc = (A)(p.ls / (double)p.C);
    for (int64_t r = nk_first(grp); r < p.rows; r += nk_step(grp)) {
        int64_t n = r / in, base = n * C * in + (r - n * in);
        const typename T::S *xr = x + base;
        A gr = (A)T::ld(g[g_rows ? r : 0]) * gscale;
        A l = p.logits ? (A)T::ld(lse[r]) : (A)0;
        if (p.probs) {
            A S = 0;
            for (int64_t c = grp.rank(); c < C; c += grp.size())
                S += (w ? (A)T::ld(w[c]) : (A)1) * ((A)T::ld(pt[base + c * in]) * ((A)1 - ls) + lsc);
            S = grp.sum(S);
            for (int64_t c = grp.rank(); c < C; c += grp.size()) {
                A wc = w ? (A)T::ld(w[c]) : (A)1, xv = T::ld(xr[c * in]);
                A tt = (A)T::ld(pt[base + c * in]) * ((A)1 - ls) + lsc;
                if (dx) dx[base + c * in] = T::st(gr * (nk_exp(xv - l) * S - wc * tt));
                if (dt) dt[base + c * in] = T::st(-gr * ((A)1 - ls) * wc * (xv - l));
            }
            continue;
        }
        long long t = tgt[r];
        bool skip = t == p.ignore || t < 0 || t >= C;
        A sumw = (A)C;
        if (p.logits && p.ls > 0 && w) {
            A s = 0;
            for (int64_t c = grp.rank(); c < C; c += grp.size()) s += (A)T::ld(w[c]);
            sumw = grp.sum(s);
        }
        if (!dx) continue;
        if (skip) {
            for (int64_t c = grp.rank(); c < C; c += grp.size()) dx[base + c * in] = T::st((A)0);
            continue;
        }
        A wt = w ? (A)T::ld(w[t]) : (A)1;
        if (!p.logits) {
            for (int64_t c = grp.rank(); c < C; c += grp.size()) dx[base + c * in] = T::st(c == t ? -gr * wt : (A)0);
            continue;
        }
        A pc = gr * (((A)1 - ls) * wt + lsc * sumw), lc = gr * lsc, hit = gr * ((A)1 - ls) * wt;
        for (int64_t c = grp.rank(); c < C; c += grp.size()) {
            A v = nk_exp((A)T::ld(xr[c * in]) - l) * pc - lc * (w ? (A)T::ld(w[c]) : (A)1);
            dx[base + c * in] = T::st(c == t ? v - hit : v);
        }
    }
}

/* +1: n elements of the accumulation type of dtype d on dev. */
static graft_status nk_acc_buffer(graft_tensor **t, int64_t n, graft_dtype d, graft_device dev) {
    return graft_tensor_empty(t, 1, &n, d == GRAFT_F64 ? GRAFT_F64 : GRAFT_F32, dev);
}

template <int DT>
static graft_status cl_forward(graft_tensor *out, graft_tensor *lse, nk_status *hs, const graft_nn_class_loss *a,
                               graft_tensor *x, graft_tensor *target, graft_tensor *weight, const cl_params &p) {
    typedef typename gk_type<DT>::S S;
    typedef typename nk_acc<DT>::A A;
    graft_device dev = graft_tensor_device(x);
    graft_tensor *status = NULL, *lrow = NULL, *wrow = NULL, *part = NULL;
    bool reduce = a->reduction != GRAFT_REDUCTION_NONE;
    unsigned nb = nk_sum_blocks(p.rows);
    int64_t two_nb = 2 * (int64_t)nb;
    graft_status st = nk_status_new(&status, dev);
    if (!st && reduce &&
        ((st = nk_acc_buffer(&lrow, p.rows, x->dtype, dev)) || (st = nk_acc_buffer(&wrow, p.rows, x->dtype, dev)) ||
         (st = nk_acc_buffer(&part, two_nb, x->dtype, dev))))
        goto done;
    if (st) goto done;
    {
        const S *xp = (const S *)graft_tensor_data(x), *wp = weight ? (const S *)graft_tensor_data(weight) : NULL;
        const int64_t *tp = a->probs ? NULL : (const int64_t *)graft_tensor_data(target);
        const S *pp = a->probs ? (const S *)graft_tensor_data(target) : NULL;
        S *ro = reduce ? NULL : (S *)graft_tensor_data(out), *lo = lse ? (S *)graft_tensor_data(lse) : NULL;
        A *lr = reduce ? (A *)graft_tensor_data(lrow) : NULL, *wr = reduce ? (A *)graft_tensor_data(wrow) : NULL;
        nk_status *sp = (nk_status *)graft_tensor_data(status);
        if (p.rows > 0) {
            NK_ROW_LAUNCH(cl_forward_kernel, DT, p.rows, p.C, p.inner, p, xp, tp, pp, wp, ro, lr, wr, lo, sp);
            if ((st = gk_launched(a->op))) goto done;
        }
        if (reduce) {
            A *pl = (A *)graft_tensor_data(part), *pw = pl + nb;
            GK_LAUNCH(nk_partials_kernel<A>, nb, GK_THREADS, 0, (const A *)lr, a->probs ? (const A *)NULL : (const A *)wr,
                      p.rows, pl, pw);
            if ((st = gk_launched(a->op))) goto done;
            GK_LAUNCH(nk_finish_kernel<DT>, 1, GK_THREADS, 0, (const A *)pl, a->probs ? (const A *)NULL : (const A *)pw,
                      (int)nb, (double)p.rows, a->reduction == GRAFT_REDUCTION_MEAN, (S *)graft_tensor_data(out), sp);
            if ((st = gk_launched(a->op))) goto done;
        }
        st = nk_status_read(status, hs);
    }
done:
    graft_tensor_release(status);
    graft_tensor_release(lrow);
    graft_tensor_release(wrow);
    graft_tensor_release(part);
    return st;
}

extern "C" graft_status graft_cuda_nn_class_loss_forward(graft_tensor *out, graft_tensor *lse, double *total_weight,
                                                         int64_t *bad, const graft_nn_class_loss *a, graft_tensor *x,
                                                         graft_tensor *target, graft_tensor *weight, int64_t N,
                                                         int64_t C, int64_t inner) {
    GK_ON_DEVICE(x);
    cl_params p = {a->logits, a->probs, (long long)a->ignore_index, a->label_smoothing, N * inner, C, inner};
    nk_status hs;
    graft_status st;
    switch (x->dtype) {
    case GRAFT_F32: st = cl_forward<GRAFT_F32>(out, lse, &hs, a, x, target, weight, p); break;
    case GRAFT_F64: st = cl_forward<GRAFT_F64>(out, lse, &hs, a, x, target, weight, p); break;
    default: return nk_unsupported(a->op, x->dtype);
    }
    if (st) return st;
    *bad = hs.flag ? (int64_t)hs.value : INT64_MIN;
    /* reduction none: the divisor is never used (the rule scales by 1) */
    *total_weight = a->reduction == GRAFT_REDUCTION_NONE ? 1.0 : hs.total;
    return GRAFT_OK;
}

template <int DT>
static graft_status cl_backward(graft_tensor *dx, graft_tensor *dt, const graft_nn_class_loss *a, graft_tensor *g,
                                double gscale, graft_tensor *x, graft_tensor *target, graft_tensor *weight,
                                graft_tensor *lse, const cl_params &p) {
    typedef typename gk_type<DT>::S S;
    typedef typename nk_acc<DT>::A A;
    if (p.rows == 0 || (!dx && !dt)) return GRAFT_OK;
    S *dxp = dx ? (S *)graft_tensor_data(dx) : NULL, *dtp = dt ? (S *)graft_tensor_data(dt) : NULL;
    const S *gp = (const S *)graft_tensor_data(g), *xp = (const S *)graft_tensor_data(x);
    const int64_t *tp = a->probs ? NULL : (const int64_t *)graft_tensor_data(target);
    const S *pp = a->probs ? (const S *)graft_tensor_data(target) : NULL;
    const S *wp = weight ? (const S *)graft_tensor_data(weight) : NULL, *lp = lse ? (const S *)graft_tensor_data(lse) : NULL;
    bool g_rows = a->reduction == GRAFT_REDUCTION_NONE;
    NK_ROW_LAUNCH(cl_backward_kernel, DT, p.rows, p.C, p.inner, p, dxp, dtp, gp, g_rows, (A)gscale, xp, tp, pp, wp, lp);
    return gk_launched(a->op);
}

extern "C" graft_status graft_cuda_nn_class_loss_backward(graft_tensor *dx, graft_tensor *dtarget,
                                                          const graft_nn_class_loss *a, graft_tensor *g, double gscale,
                                                          graft_tensor *x, graft_tensor *target, graft_tensor *weight,
                                                          graft_tensor *lse, int64_t N, int64_t C, int64_t inner) {
    GK_ON_DEVICE(x);
    cl_params p = {a->logits, a->probs, (long long)a->ignore_index, a->label_smoothing, N * inner, C, inner};
    switch (x->dtype) {
    case GRAFT_F32: return cl_backward<GRAFT_F32>(dx, dtarget, a, g, gscale, x, target, weight, lse, p);
    case GRAFT_F64: return cl_backward<GRAFT_F64>(dx, dtarget, a, g, gscale, x, target, weight, lse, p);
    default: return nk_unsupported(a->op, x->dtype);
    }
}

/* ======================================================================== */
/* pointwise losses                                                          */
/* ======================================================================== */

/* Elementwise loss:
 *   mse (x-y)^2; l1 |x-y|; smooth_l1 |d| < beta ? d^2 / (2 beta) : |d| - beta / 2
 *   bce -w (y max(log x, -100) + (1-y) max(log(1-x), -100))  (x outside [0, 1] is an error)
 *   bce_logits w ((1-y) x + (1 + (pw-1) y) (log(1 + e^-|x|) + max(-x, 0)))           */
template <class A>
__device__ __forceinline__ A pl_loss(int kind, A x, A y, A w, A pw, A beta, bool &bad) {
    switch (kind) {
    case GRAFT_NN_MSE: return (x - y) * (x - y);
    case GRAFT_NN_L1: return nk_abs(x - y);
    case GRAFT_NN_SMOOTH_L1: {
        A ad = nk_abs(x - y);
        return ad < beta ? (A)0.5 * ad * ad / beta : ad - (A)0.5 * beta;
    }
    case GRAFT_NN_BCE: {
        if (!(x >= 0 && x <= 1)) bad = true;
        A lx = nk_log(x), l1x = nk_log((A)1 - x);
        lx = lx < (A)-100 ? (A)-100 : lx;
        l1x = l1x < (A)-100 ? (A)-100 : l1x;
        return -w * (y * lx + ((A)1 - y) * l1x);
    }
    default: {
        A m = -x > 0 ? -x : (A)0;
        A sp = nk_log(nk_exp(-m) + nk_exp(-x - m)) + m;
        return w * (((A)1 - y) * x + ((pw - (A)1) * y + (A)1) * sp);
    }
    }
}

/* operands {out, x, y, w, pw}; RED: block b's sum into partials[b] (out unused). */
template <int DT, bool RED>
__global__ void pl_forward_kernel(gk_geom<5> geo, char *out, const char *x, const char *y, const char *w,
                                  const char *pw, int kind, typename nk_acc<DT>::A beta, typename nk_acc<DT>::A *partials,
                                  nk_status *status) {
    typedef gk_type<DT> T;
    typedef typename T::S S;
    typedef typename nk_acc<DT>::A A;
    int64_t off[5];
    A acc = 0;
    bool bad = false;
    GK_FOR(i, geo.numel) {
        nk_offsets<5>(geo, i, off);
        A l = pl_loss<A>(kind, T::ld(*(const S *)(x + off[1])), T::ld(*(const S *)(y + off[2])),
                         T::ld(*(const S *)(w + off[3])), T::ld(*(const S *)(pw + off[4])), beta, bad);
        if (RED) acc += l;
        else *(S *)(out + off[0]) = T::st(l);
    }
    if (bad) nk_report(status, 0);
    if (RED) {
        nk_block_group grp;
        acc = grp.sum(acc);
        if (threadIdx.x == 0) partials[blockIdx.x] = acc;
    }
}

/* d l / d x (or d y with target), times g scale; operands {out, g, x, y, w, pw}:
 *   mse 2 (x-y); l1 sign(x-y); smooth_l1 |d| < beta ? d / beta : sign(d)   (d/dy: negated)
 *   bce w (x-y) / max(x (1-x), 1e-12);  d/dy: w (max(log(1-x), -100) - max(log x, -100))
 *   bce_logits w ((pw y + 1 - y) sigmoid(x) - pw y);  d/dy: w ((pw-1) softplus(-x) - x)   */
template <int DT>
__global__ void pl_backward_kernel(gk_geom<6> geo, char *out, const char *g, const char *x, const char *y,
                                   const char *w, const char *pw, int kind, bool target, typename nk_acc<DT>::A beta,
                                   typename nk_acc<DT>::A scale) {
    typedef gk_type<DT> T;
    typedef typename T::S S;
    typedef typename nk_acc<DT>::A A;
    int64_t off[6];
    GK_FOR(i, geo.numel) {
        nk_offsets<6>(geo, i, off);
        A gv = (A)T::ld(*(const S *)(g + off[1])) * scale;
        A xv = T::ld(*(const S *)(x + off[2])), yv = T::ld(*(const S *)(y + off[3]));
        A wv = T::ld(*(const S *)(w + off[4])), pv = T::ld(*(const S *)(pw + off[5])), r = 0;
        A dd = xv - yv, sg = (A)((dd > 0) - (dd < 0));
        switch (kind) {
        case GRAFT_NN_MSE: r = 2 * dd; break;
        case GRAFT_NN_L1: r = sg; break;
        case GRAFT_NN_SMOOTH_L1: r = nk_abs(dd) < beta ? dd / beta : sg; break;
        case GRAFT_NN_BCE:
            if (target) {
                A lx = nk_log(xv), l1x = nk_log((A)1 - xv);
                lx = lx < (A)-100 ? (A)-100 : lx;
                l1x = l1x < (A)-100 ? (A)-100 : l1x;
                r = wv * (l1x - lx);
            } else {
                A den = xv * ((A)1 - xv);
                r = wv * dd / (den > (A)1e-12 ? den : (A)1e-12);
            }
            break;
        default:
            if (target) {
                A m = -xv > 0 ? -xv : (A)0;
                A sp = nk_log(nk_exp(-m) + nk_exp(-xv - m)) + m;
                r = wv * ((pv - (A)1) * sp - xv);
            } else {
                A sig = (A)1 / ((A)1 + nk_exp(-xv));
                r = wv * ((pv * yv + (A)1 - yv) * sig - pv * yv);
            }
            break;
        }
        if (target && kind != GRAFT_NN_BCE && kind != GRAFT_NN_BCE_LOGITS) r = -r;
        *(S *)(out + off[0]) = T::st(gv * r);
    }
}

template <int DT>
static graft_status pl_forward(graft_tensor *out, bool *bad, graft_nn_loss kind, graft_tensor *x, graft_tensor *y,
                               graft_tensor *w, graft_tensor *pw, graft_reduction reduction, double beta, int ndim,
                               const int64_t *shape) {
    typedef typename gk_type<DT>::S S;
    typedef typename nk_acc<DT>::A A;
    const char *op = kind == GRAFT_NN_BCE ? "binary_cross_entropy" : "loss";
    graft_device dev = graft_tensor_device(x);
    bool reduce = reduction != GRAFT_REDUCTION_NONE;
    graft_tensor *status = NULL, *part = NULL;
    graft_tensor *ops[5] = {reduce ? x : out, x, y, w, pw};
    graft_iter it;
    nk_status hs;
    graft_status st = graft_iter_init(&it, 5, ops, ndim, shape);
    if (st || (st = nk_status_new(&status, dev))) goto done;
    {
        gk_geom<5> geo = gk_geom_of<5>(&it);
        nk_status *sp = (nk_status *)graft_tensor_data(status);
        unsigned nb = nk_sum_blocks(geo.numel);
        if (!reduce) {
            if (geo.numel > 0) {
                GK_LAUNCH_FLAT((pl_forward_kernel<DT, false>), gk_blocks(geo.numel, GK_THREADS), GK_THREADS, 0, geo,
                               it.data[0], (const char *)it.data[1], (const char *)it.data[2], (const char *)it.data[3],
                               (const char *)it.data[4], (int)kind, (A)beta, (A *)NULL, sp);
                if ((st = gk_launched(op))) goto done;
            }
        } else {
            if ((st = nk_acc_buffer(&part, nb, x->dtype, dev))) goto done;
            A *pl = (A *)graft_tensor_data(part);
            GK_LAUNCH((pl_forward_kernel<DT, true>), nb, GK_THREADS, 0, geo, it.data[0], (const char *)it.data[1],
                      (const char *)it.data[2], (const char *)it.data[3], (const char *)it.data[4], (int)kind, (A)beta,
                      pl, sp);
            if ((st = gk_launched(op))) goto done;
            GK_LAUNCH(nk_finish_kernel<DT>, 1, GK_THREADS, 0, (const A *)pl, (const A *)NULL, (int)nb,
                      (double)geo.numel, reduction == GRAFT_REDUCTION_MEAN, (S *)graft_tensor_data(out), sp);
            if ((st = gk_launched(op))) goto done;
        }
        /* only BCE can fail: the other losses never wait for the device */
        if (kind == GRAFT_NN_BCE) {
            if ((st = nk_status_read(status, &hs))) goto done;
            *bad = hs.flag != 0;
        }
    }
done:
    graft_tensor_release(status);
    graft_tensor_release(part);
    return st;
}

extern "C" graft_status graft_cuda_nn_pointwise_loss_forward(graft_tensor *out, bool *bad, graft_nn_loss kind,
                                                             graft_tensor *x, graft_tensor *y, graft_tensor *w,
                                                             graft_tensor *pw, graft_reduction reduction, double beta,
                                                             int ndim, const int64_t *shape) {
    GK_ON_DEVICE(x);
    *bad = false;
    switch (x->dtype) {
    case GRAFT_F32: return pl_forward<GRAFT_F32>(out, bad, kind, x, y, w, pw, reduction, beta, ndim, shape);
    case GRAFT_F64: return pl_forward<GRAFT_F64>(out, bad, kind, x, y, w, pw, reduction, beta, ndim, shape);
    default: return nk_unsupported("loss", x->dtype);
    }
}

extern "C" graft_status graft_cuda_nn_pointwise_loss_backward(graft_tensor *res, bool target, graft_nn_loss kind,
                                                              graft_tensor *g, double scale, graft_tensor *x,
                                                              graft_tensor *y, graft_tensor *w, graft_tensor *pw,
                                                              double beta) {
    GK_ON_DEVICE(res);
    graft_iter it;
    graft_tensor *ops[6] = {res, g, x, y, w, pw};
    graft_status st = graft_iter_init(&it, 6, ops, res->ndim, res->shape);
    if (st) return st;
    if (it.numel == 0) return GRAFT_OK;
    gk_geom<6> geo = gk_geom_of<6>(&it);
    unsigned nb = gk_blocks(geo.numel, GK_THREADS);
    const char *d1 = it.data[1], *d2 = it.data[2], *d3 = it.data[3], *d4 = it.data[4], *d5 = it.data[5];
    switch (x->dtype) {
    case GRAFT_F32:
        GK_LAUNCH_FLAT(pl_backward_kernel<GRAFT_F32>, nb, GK_THREADS, 0, geo, it.data[0], d1, d2, d3, d4, d5, (int)kind,
                       target, (float)beta, (float)scale);
        break;
    case GRAFT_F64:
        GK_LAUNCH_FLAT(pl_backward_kernel<GRAFT_F64>, nb, GK_THREADS, 0, geo, it.data[0], d1, d2, d3, d4, d5, (int)kind,
                       target, beta, scale);
        break;
    default: return nk_unsupported("loss backward", x->dtype);
    }
    return gk_launched("loss backward");
}

/* ======================================================================== */
/* embedding, one_hot                                                        */
/* ======================================================================== */

/* A warp per looked-up row, its lanes across the row (coalesced): out[r] = weight[idx[r]].
 * W is a word of the element's size. */
template <typename W>
__global__ void em_forward_kernel(W *out, const W *weight, const int64_t *idx, int64_t n, int64_t D, int64_t num,
                                  nk_status *status) {
    int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int lane = (int)(threadIdx.x & 31u);
    for (int64_t r = gid >> 5; r < n; r += ((int64_t)blockDim.x * gridDim.x) >> 5) {
        long long j = idx[r];
        if (j < 0 || j >= num) {
            if (lane == 0) nk_report(status, j);
            continue;
        }
        const W *src = weight + j * D;
        W *dst = out + r * D;
        for (int64_t c = lane; c < D; c += 32) dst[c] = src[c];
    }
}

/* dw[idx[r]] += g[r] for every r whose index is not padding_idx. Rows that share an
 * index add in the order the atomics land: float sums are not bit-reproducible across
 * runs when indices repeat. */
template <typename T>
__global__ void em_backward_kernel(T *dw, const T *g, const int64_t *idx, int64_t n, int64_t D, int64_t num,
                                   int64_t pad) {
    int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int lane = (int)(threadIdx.x & 31u);
    for (int64_t r = gid >> 5; r < n; r += ((int64_t)blockDim.x * gridDim.x) >> 5) {
        int64_t j = idx[r];
        if (j == pad || j < 0 || j >= num) continue;
        T *dst = dw + j * D;
        const T *src = g + r * D;
        for (int64_t c = lane; c < D; c += 32) atomicAdd(dst + c, src[c]);
    }
}

template <typename W>
static void em_forward_launch(graft_tensor *out, graft_tensor *weight, graft_tensor *idx, int64_t n, int64_t D,
                              nk_status *sp) {
    GK_LAUNCH_FLAT(em_forward_kernel<W>, gk_blocks(n * 32, GK_THREADS), GK_THREADS, 0, (W *)graft_tensor_data(out),
                   (const W *)graft_tensor_data(weight), (const int64_t *)graft_tensor_data(idx), n, D,
                   weight->shape[0], sp);
}

extern "C" graft_status graft_cuda_nn_embedding_forward(graft_tensor *out, int64_t *bad, graft_tensor *weight,
                                                        graft_tensor *idx) {
    GK_ON_DEVICE(out);
    int64_t n = graft_tensor_numel(idx), D = weight->shape[1];
    graft_tensor *status = NULL;
    nk_status hs;
    *bad = INT64_MIN;
    if (n == 0) return GRAFT_OK;
    graft_status st = nk_status_new(&status, graft_tensor_device(weight));
    if (st) return st;
    nk_status *sp = (nk_status *)graft_tensor_data(status);
    switch (graft_dtype_size(weight->dtype)) {
    case 1: em_forward_launch<uint8_t>(out, weight, idx, n, D, sp); break;
    case 2: em_forward_launch<uint16_t>(out, weight, idx, n, D, sp); break;
    case 4: em_forward_launch<uint32_t>(out, weight, idx, n, D, sp); break;
    default: em_forward_launch<uint64_t>(out, weight, idx, n, D, sp); break;
    }
    if (!(st = gk_launched("embedding")) && !(st = nk_status_read(status, &hs)) && hs.flag) *bad = hs.value;
    graft_tensor_release(status);
    return st;
}

extern "C" graft_status graft_cuda_nn_embedding_backward(graft_tensor *dw, graft_tensor *g, graft_tensor *idx,
                                                         int64_t padding_idx) {
    GK_ON_DEVICE(dw);
    int64_t n = graft_tensor_numel(idx), D = dw->shape[1], num = dw->shape[0];
    if (n == 0 || D == 0) return GRAFT_OK;
    unsigned nb = gk_blocks(n * 32, GK_THREADS);
    const int64_t *ip = (const int64_t *)graft_tensor_data(idx);
    switch (dw->dtype) {
    case GRAFT_F32:
        GK_LAUNCH_FLAT(em_backward_kernel<float>, nb, GK_THREADS, 0, (float *)graft_tensor_data(dw),
                       (const float *)graft_tensor_data(g), ip, n, D, num, padding_idx);
        break;
    case GRAFT_F64:
        GK_LAUNCH_FLAT(em_backward_kernel<double>, nb, GK_THREADS, 0, (double *)graft_tensor_data(dw),
                       (const double *)graft_tensor_data(g), ip, n, D, num, padding_idx);
        break;
    default: return nk_unsupported("embedding backward", dw->dtype);
    }
    return gk_launched("embedding backward");
}

/* range[0] = max(v), range[1] = max(-v) (INT64_MIN's negation saturates): one atomic
 * per thread after a grid-stride pass. */
__global__ void nk_range_kernel(const int64_t *v, int64_t n, long long *range) {
    long long hi = LLONG_MIN, nlo = LLONG_MIN;
    GK_FOR(i, n) {
        long long x = v[i], nx = x == LLONG_MIN ? LLONG_MAX : -x;
        hi = x > hi ? x : hi;
        nlo = nx > nlo ? nx : nlo;
    }
    atomicMax(&range[0], hi);
    atomicMax(&range[1], nlo);
}

extern "C" graft_status graft_cuda_nn_index_range(int64_t *lo, int64_t *hi, graft_tensor *idx) {
    GK_ON_DEVICE(idx);
    int64_t n = graft_tensor_numel(idx), two = 2;
    long long h[2];
    *lo = INT64_MAX;
    *hi = -1;
    if (n == 0) return GRAFT_OK;
    graft_tensor *range = NULL;
    graft_status st = graft_tensor_empty(&range, 1, &two, GRAFT_I64, graft_tensor_device(idx));
    if (st || (st = graft_tensor_fill_int_(range, INT64_MIN))) goto done;
    GK_LAUNCH_FLAT(nk_range_kernel, gk_blocks(n, GK_THREADS), GK_THREADS, 0, (const int64_t *)graft_tensor_data(idx), n,
                   (long long *)graft_tensor_data(range));
    if ((st = gk_launched("one_hot")) || (st = graft_cuda_memcpy_d2h(h, graft_tensor_data(range), sizeof h))) goto done;
    *hi = h[0];
    *lo = h[1] == LLONG_MAX ? INT64_MIN : -h[1];
done:
    graft_tensor_release(range);
    return st;
}

__global__ void nk_one_hot_kernel(int64_t *out, const int64_t *idx, int64_t n, int64_t classes) {
    GK_FOR(i, n) out[i * classes + idx[i]] = 1;
}

extern "C" graft_status graft_cuda_nn_one_hot(graft_tensor *out, graft_tensor *idx, int64_t classes) {
    GK_ON_DEVICE(out);
    int64_t n = graft_tensor_numel(idx);
    if (n == 0 || classes == 0) return GRAFT_OK;
    GK_LAUNCH_FLAT(nk_one_hot_kernel, gk_blocks(n, GK_THREADS), GK_THREADS, 0, (int64_t *)graft_tensor_data(out),
                   (const int64_t *)graft_tensor_data(idx), n, classes);
    return gk_launched("one_hot");
}
