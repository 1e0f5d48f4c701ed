/* graft autograd: recording and gradient rules of the reductions and scans. The
 * output gradient is brought back to the input's shape (unsqueezed where keepdim was
 * false, then expanded); amax/amin and max/min over everything share it evenly among
 * ties, max/min along a dim send it to the returned index, prod is exact with zeros
 * (products of the other elements from exclusive cumulative products), as PyTorch. */
#include "autograd/internal.h"
#include "ops/sort.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ia[0] kind, ia[1] mask of reduced dims, ia[2] keepdim; fa[0] correction or p.
 * saved: 0 the input, 2 the output. */
static graft_status rd_apply(ag_node *n, graft_tensor *g, graft_tensor **gin);

#define RD_KIND(var, name) static const ag_kind var = {name, rd_apply};
RD_KIND(k_sum0, "SumBackward0")
RD_KIND(k_sum1, "SumBackward1")
RD_KIND(k_mean0, "MeanBackward0")
RD_KIND(k_mean1, "MeanBackward1")
RD_KIND(k_prod0, "ProdBackward0")
RD_KIND(k_prod1, "ProdBackward1")
RD_KIND(k_amax, "AmaxBackward0")
RD_KIND(k_amin, "AminBackward0")
RD_KIND(k_max1, "MaxBackward1")
RD_KIND(k_min1, "MinBackward1")
RD_KIND(k_var, "VarBackward0")
RD_KIND(k_std, "StdBackward0")
RD_KIND(k_norm0, "NormBackward1")
RD_KIND(k_norm1, "NormBackward1")
RD_KIND(k_lse, "LogsumexpBackward0")
#undef RD_KIND

static const ag_kind *rd_kind(graft_ag_reduce_kind k, bool all) {
    switch (k) {
    case GRAFT_AG_SUM: return all ? &k_sum0 : &k_sum1;
    case GRAFT_AG_MEAN: return all ? &k_mean0 : &k_mean1;
    case GRAFT_AG_PROD: return all ? &k_prod0 : &k_prod1;
    case GRAFT_AG_AMAX: return &k_amax;
    case GRAFT_AG_AMIN: return &k_amin;
    case GRAFT_AG_MAX_ALL: return &k_max1;
    case GRAFT_AG_MIN_ALL: return &k_min1;
    case GRAFT_AG_VAR: return &k_var;
    case GRAFT_AG_STD: return &k_std;
    case GRAFT_AG_NORM: return all ? &k_norm0 : &k_norm1;
    case GRAFT_AG_LOGSUMEXP: return &k_lse;
    }
    return NULL;
}

static graft_status rd_forward(graft_tensor **out, graft_ag_reduce_kind k, graft_tensor *t, const int *dims, int ndims,
                               bool keepdim, int dtype, double param) {
    switch (k) {
    case GRAFT_AG_SUM: return graft_reduce_sum(out, t, dims, ndims, keepdim, dtype);
    case GRAFT_AG_MEAN: return graft_reduce_mean(out, t, dims, ndims, keepdim, dtype);
    case GRAFT_AG_PROD: return graft_reduce_prod(out, t, dims, ndims, keepdim, dtype);
    case GRAFT_AG_AMAX: return graft_reduce_amax(out, t, dims, ndims, keepdim);
    case GRAFT_AG_AMIN: return graft_reduce_amin(out, t, dims, ndims, keepdim);
    case GRAFT_AG_MAX_ALL: return graft_reduce_max_all(out, t);
    case GRAFT_AG_MIN_ALL: return graft_reduce_min_all(out, t);
    case GRAFT_AG_VAR: return graft_reduce_var(out, t, dims, ndims, param, keepdim);
    case GRAFT_AG_STD: return graft_reduce_std(out, t, dims, ndims, param, keepdim);
    case GRAFT_AG_NORM: return graft_reduce_norm(out, t, param, dims, ndims, keepdim);
    case GRAFT_AG_LOGSUMEXP: return graft_reduce_logsumexp(out, t, dims, ndims, keepdim);
    }
    return graft_error(GRAFT_EINTERNAL, "reduce: unknown kind %d", (int)k);
}

graft_status graft_ag_reduce(graft_tensor **out, graft_ag_reduce_kind kind, graft_tensor *t, const int *dims,
                             int ndims, bool keepdim, int dtype, double param) {
    graft_status st;
    AG_NOGRAD(st = rd_forward(out, kind, t, dims, ndims, keepdim, dtype, param));
    if (st || !ag_should_record(*out, &t, 1)) return st;
    bool all = kind == GRAFT_AG_MAX_ALL || kind == GRAFT_AG_MIN_ALL || ndims == 0;
    ag_node *n = ag_node_new(rd_kind(kind, ndims == 0), 1, &t);
    if (!n) return ag_finish(GRAFT_ENOMEM, NULL, out, NULL);
    n->ia[0] = kind;
    n->ia[1] = all ? ag_dims_mask(NULL, 0, t->ndim) : ag_dims_mask(dims, ndims, t->ndim);
    n->ia[2] = all ? false : keepdim;
    n->fa[0] = param;
    bool save_in = kind != GRAFT_AG_SUM && kind != GRAFT_AG_MEAN;
    bool save_out = save_in && kind != GRAFT_AG_VAR;
    if (save_in) st = ag_save(n, 0, t, false);
    if (!st && save_out) st = ag_save(n, 2, *out, true);
    return ag_finish(st, n, out, NULL);
}

/* The reduced dims of mask as a list; returns how many. */
static int rd_dims(uint32_t mask, int ndim, int *dims) {
    int k = 0;
    for (int d = 0; d < ndim; d++)
        if ((mask >> d) & 1u) dims[k++] = d;
    return k;
}

/* Products of the other elements along the reduced dims, for prod's gradient: the
 * reduced dims are moved last and flattened into K, then left[k] * right[k] with the
 * exclusive cumulative products from each end. */
static graft_tensor *rd_prod_others(ag_node *n, graft_tensor *x, uint32_t mask) {
    const ag_input *in = &n->in[0];
    int perm[GRAFT_MAX_DIMS], inv[GRAFT_MAX_DIMS], np = 0;
    int64_t R = 1, K = 1, pshape[GRAFT_MAX_DIMS];
    for (int d = 0; d < in->ndim; d++)
        if (!((mask >> d) & 1u)) { perm[np++] = d; R *= in->shape[d]; }
    for (int d = 0; d < in->ndim; d++)
        if ((mask >> d) & 1u) { perm[np++] = d; K *= in->shape[d]; }
    for (int i = 0; i < np; i++) {
        inv[perm[i]] = i;
        pshape[i] = in->shape[perm[i]];
    }
    if (K == 0 || R == 0) return ag_zeros(in->ndim, in->shape, x->dtype);
    graft_tensor *xp = NULL;
    graft_status st = graft_permute(&xp, x, perm, np);
    if (st) return ag_fail(st);
    ag_pool(xp);
    int64_t rk[2] = {R, K}, r1[2] = {R, 1};
    graft_tensor *m = ag_reshape(xp, 2, rk);
    graft_tensor *ones = ag_zeros(2, r1, x->dtype);
    if (ones && (st = graft_tensor_fill_int_(ones, 1))) return ag_fail(st);
    graft_tensor *left = ones, *right = ones;
    if (K > 1) {
        graft_tensor *cp = NULL, *parts[2], *l = NULL, *r = NULL, *mf = NULL, *cpf = NULL, *rf = NULL;
        int flipdim = 1;
        if (!m || !ones) return NULL;
        if ((st = graft_reduce_cumprod(&cp, m, 1, -1))) return ag_fail(st);
        ag_pool(cp);
        parts[0] = ones;
        parts[1] = ag_narrow(cp, 1, 0, K - 1);
        if (!parts[1]) return NULL;
        if ((st = graft_cat(&l, parts, 2, 1))) return ag_fail(st);
        left = ag_pool(l);
        if ((st = graft_flip(&mf, m, &flipdim, 1))) return ag_fail(st);
        ag_pool(mf);
        if ((st = graft_reduce_cumprod(&cpf, mf, 1, -1))) return ag_fail(st);
        ag_pool(cpf);
        parts[1] = ag_narrow(cpf, 1, 0, K - 1);
        if (!parts[1]) return NULL;
        if ((st = graft_cat(&rf, parts, 2, 1))) return ag_fail(st);
        ag_pool(rf);
        if ((st = graft_flip(&r, rf, &flipdim, 1))) return ag_fail(st);
        right = ag_pool(r);
    }
    graft_tensor *others = ag_reshape(ag_mul(left, right), np, pshape);
    if (!others) return NULL;
    graft_tensor *back = NULL;
    if ((st = graft_permute(&back, others, inv, np))) return ag_fail(st);
    return ag_pool(back);
}

/* Where a tensor equals the extreme (or both are NaN), as PyTorch's evenly distribute. */
static graft_tensor *rd_tie_mask(graft_tensor *x, graft_tensor *ext) {
    graft_tensor *eq = ag_bin(GRAFT_EW_EQ, x, ext);
    graft_tensor *nan = ag_bin(GRAFT_EW_LOGICAL_AND, ag_un(GRAFT_EW_ISNAN, x), ag_un(GRAFT_EW_ISNAN, ext));
    return ag_bin(GRAFT_EW_LOGICAL_OR, eq, nan);
}

static graft_status rd_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_ag_reduce_kind kind = (graft_ag_reduce_kind)n->ia[0];
    uint32_t mask = (uint32_t)n->ia[1];
    bool keepdim = n->ia[2];
    const ag_input *in = &n->in[0];
    int dims[GRAFT_MAX_DIMS];
    int nd = rd_dims(mask, in->ndim, dims);
    int64_t count = 1;
    for (int i = 0; i < nd; i++) count *= in->shape[dims[i]];
    graft_tensor *eg = ag_expand_back(g, n, 0, mask, keepdim), *r = NULL;
    graft_tensor *x = kind == GRAFT_AG_SUM || kind == GRAFT_AG_MEAN ? NULL : ag_saved_get(n, 0);
    graft_tensor *oe = NULL;
    if (kind != GRAFT_AG_SUM && kind != GRAFT_AG_MEAN && kind != GRAFT_AG_VAR)
        oe = ag_expand_back(ag_saved_get(n, 2), n, 0, mask, keepdim);
    double p = n->fa[0];
    switch (kind) {
    case GRAFT_AG_SUM: r = eg; break;
    case GRAFT_AG_MEAN: r = ag_bins(GRAFT_EW_DIV, eg, (double)count); break;
    case GRAFT_AG_PROD: r = ag_mul(eg, rd_prod_others(n, x, mask)); break;
    case GRAFT_AG_AMAX: case GRAFT_AG_AMIN: case GRAFT_AG_MAX_ALL: case GRAFT_AG_MIN_ALL: {
        graft_tensor *tie = rd_tie_mask(x, oe);
        r = ag_where0(tie, ag_div(eg, ag_sum(tie, dims, nd, true)));
        break;
    }
    case GRAFT_AG_VAR: case GRAFT_AG_STD: {
        graft_tensor *mean = NULL;
        graft_status st = graft_reduce_mean(&mean, x, dims, nd, true, -1);
        if (st) return ag_fail(st), GRAFT_OK;
        graft_tensor *centered = ag_sub(x, ag_pool(mean));
        double denom = (double)count - p;
        if (kind == GRAFT_AG_VAR) {
            r = ag_mul(ag_muls(eg, 2.0 / denom), centered);
        } else {
            /* var's gradient of g / (2 std), 0 where std is 0 */
            graft_tensor *gv = ag_where0_not(ag_bins(GRAFT_EW_EQ, oe, 0.0), ag_div(eg, ag_muls(oe, 2.0)));
            r = ag_mul(ag_muls(gv, 2.0 / denom), centered);
        }
        break;
    }
    case GRAFT_AG_NORM: {
        graft_tensor *sgn = ag_un(GRAFT_EW_SIGN, x);
        if (p == 0) {
            r = ag_zeros(in->ndim, in->shape, g->dtype);
        } else if (p == 1) {
            r = ag_mul(sgn, eg);
        } else if (p == 2) {
            r = ag_mul(x, ag_where0_not(ag_bins(GRAFT_EW_EQ, oe, 0.0), ag_div(eg, oe)));
        } else if (isinf(p)) {
            graft_tensor *ax = ag_un(GRAFT_EW_ABS, x);
            graft_tensor *tie = ag_bin(GRAFT_EW_LOGICAL_OR, ag_bin(GRAFT_EW_EQ, ax, oe), ag_un(GRAFT_EW_ISNAN, ax));
            r = ag_mul(sgn, ag_where0(tie, ag_div(eg, ag_sum(tie, dims, nd, true))));
        } else if (p < 1) {
            graft_tensor *ax = ag_un(GRAFT_EW_ABS, x);
            graft_tensor *scaled = ag_where0_not(ag_bins(GRAFT_EW_EQ, x, 0.0),
                                                 ag_mul(sgn, ag_bins(GRAFT_EW_POW, ax, p - 1)));
            r = ag_mul(ag_mul(scaled, eg), ag_bins(GRAFT_EW_POW, oe, 1 - p));
        } else {
            graft_tensor *ax = ag_un(GRAFT_EW_ABS, x);
            graft_tensor *scaled = p < 2 ? ag_mul(sgn, ag_bins(GRAFT_EW_POW, ax, p - 1))
                                         : ag_mul(x, ag_bins(GRAFT_EW_POW, ax, p - 2));
            graft_tensor *scale = ag_where0_not(ag_bins(GRAFT_EW_EQ, oe, 0.0),
                                                ag_div(eg, ag_bins(GRAFT_EW_POW, oe, p - 1)));
            r = ag_mul(scaled, scale);
        }
        break;
    }
    case GRAFT_AG_LOGSUMEXP: r = ag_mul(eg, ag_un(GRAFT_EW_EXP, ag_sub(x, oe))); break;
    }
    gin[0] = ag_keep(r);
    return GRAFT_OK;
}

/* ---- max/min along a dim ---- */

/* ia[0] dim, ia[1] keepdim; saved: 1 the indices */
static graft_status rd_dim_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    int dim = (int)n->ia[0];
    graft_tensor *idx = ag_saved_get(n, 1);
    if (!n->ia[1]) {
        g = ag_unsqueeze(g, dim);
        idx = ag_unsqueeze(idx, dim);
    }
    graft_tensor *z = ag_zeros_in(n, 0, g ? g->dtype : GRAFT_F32);
    if (!z || !g || !idx) return GRAFT_OK;
    graft_tensor *gc = ag_contig(g);
    if (!gc) return GRAFT_OK;
    graft_status st = graft_scatter_(z, dim, idx, gc);
    if (st) return st;
    gin[0] = ag_keep(z);
    return GRAFT_OK;
}

static const ag_kind k_max0 = {"MaxBackward0", rd_dim_apply};
static const ag_kind k_min0 = {"MinBackward0", rd_dim_apply};

graft_status graft_ag_reduce_dim(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int dim,
                                 bool keepdim, bool is_max) {
    graft_status st;
    AG_NOGRAD(st = (is_max ? graft_reduce_max_dim : graft_reduce_min_dim)(values, indices, t, dim, keepdim));
    if (st || !ag_should_record(*values, &t, 1)) return st;
    int d = dim;
    if (t->ndim > 0 && d < 0) d += t->ndim;
    if (t->ndim == 0) d = 0;
    ag_node *n = ag_node_new(is_max ? &k_max0 : &k_min0, 1, &t);
    if (n) {
        n->ia[0] = t->ndim == 0 ? 0 : d;
        n->ia[1] = keepdim || t->ndim == 0;
        st = ag_save(n, 1, *indices, true);
    }
    st = ag_finish(st, n, values, NULL);
    if (st) {
        graft_tensor_release(*indices);
        *indices = NULL;
    }
    return st;
}

/* ---- scans ---- */

/* cumprod's gradient on one row of K (contiguous doubles): before the first zero z the
 * closed form sum_{k>=i} g_k y_k / x_i holds; at z a running product; after z, 0. */
static void rd_cumprod_row(const double *x, const double *g, double *out, int64_t K) {
    int64_t z = K;
    for (int64_t i = 0; i < K; i++)
        if (x[i] == 0) { z = i; break; }
    double y = 1, acc = 0;
    double *ys = out; /* the products y_k for k < z, overwritten below */
    for (int64_t k = 0; k < z; k++) { y *= x[k]; ys[k] = y; }
    for (int64_t i = z - 1; i >= 0; i--) {
        acc += g[i] * ys[i];
        out[i] = acc / x[i];
    }
    if (z < K) {
        double before = 1;
        for (int64_t k = 0; k < z; k++) before *= x[k];
        double run = before, sum = 0;
        for (int64_t k = z; k < K; k++) {
            if (k > z) run *= x[k];
            sum += g[k] * run;
        }
        out[z] = sum;
        for (int64_t k = z + 1; k < K; k++) out[k] = 0;
    }
}

/* ia[0] dim, ia[1] prod; saved (cumprod): 0 the input */
static graft_status rd_scan_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    int dim = (int)n->ia[0];
    graft_tensor *r = NULL;
    graft_status st;
    if (n->in[0].ndim == 0) {
        gin[0] = ag_keep(g);
        return GRAFT_OK;
    }
    if (!n->ia[1]) {
        graft_tensor *f = NULL, *c = NULL, *b = NULL;
        if ((st = graft_flip(&f, g, &dim, 1))) return st;
        ag_pool(f);
        if ((st = graft_reduce_cumsum(&c, f, dim, -1))) return st;
        ag_pool(c);
        if ((st = graft_flip(&b, c, &dim, 1))) return st;
        gin[0] = b;
        return GRAFT_OK;
    }
    graft_tensor *x = ag_saved_get(n, 0);
    if (!x) return GRAFT_OK;
    const ag_input *in = &n->in[0];
    int last = in->ndim - 1;
    graft_tensor *xt = ag_transpose(x, dim, last), *gt = ag_transpose(g, dim, last);
    /* the row recurrence runs on the host, in float64 */
    graft_tensor *xc = ag_contig(ag_to(ag_to_dev(xt, graft_cpu), GRAFT_F64));
    graft_tensor *gc = ag_contig(ag_to(ag_to_dev(gt, graft_cpu), GRAFT_F64));
    if (!xc || !gc) return GRAFT_OK;
    r = ag_zeros_on(xc->ndim, xc->shape, GRAFT_F64, graft_cpu);
    if (!r) return GRAFT_OK;
    int64_t K = in->shape[dim], rows = K ? graft_tensor_numel(xc) / K : 0;
    const double *xp = graft_tensor_data(xc), *gp = graft_tensor_data(gc);
    double *op = graft_tensor_data(r);
    for (int64_t i = 0; i < rows; i++) rd_cumprod_row(xp + i * K, gp + i * K, op + i * K, K);
    gin[0] = ag_keep(ag_transpose(ag_to_dev(r, in->device), dim, last));
    return GRAFT_OK;
}

static const ag_kind k_cumsum = {"CumsumBackward0", rd_scan_apply};
static const ag_kind k_cumprod = {"CumprodBackward0", rd_scan_apply};

graft_status graft_ag_scan(graft_tensor **out, graft_tensor *t, int dim, int dtype, bool prod) {
    graft_status st;
    AG_NOGRAD(st = (prod ? graft_reduce_cumprod : graft_reduce_cumsum)(out, t, dim, dtype));
    if (st || !ag_should_record(*out, &t, 1)) return st;
    int d = dim < 0 ? dim + (t->ndim > 0 ? t->ndim : 1) : dim;
    ag_node *n = ag_node_new(prod ? &k_cumprod : &k_cumsum, 1, &t);
    if (n) {
        n->ia[0] = t->ndim > 0 ? d : 0;
        n->ia[1] = prod;
        if (prod) st = ag_save(n, 0, t, false);
    }
    return ag_finish(st, n, out, NULL);
}

/* ---- sort and topk ---- */

/* values = t gathered at indices along dim, so the gradient scatters g back to those
 * positions (zero elsewhere): max(dim)'s rule with keepdim (ia[1] = 1). */
static const ag_kind k_sort = {"SortBackward0", rd_dim_apply};
static const ag_kind k_topk = {"TopkBackward0", rd_dim_apply};

static graft_status rd_sort_record(const ag_kind *kind, graft_status st, graft_tensor **values,
                                   graft_tensor **indices, graft_tensor *t, int dim) {
    if (st || !ag_should_record(*values, &t, 1)) return st;
    int d = dim;
    if (t->ndim > 0 && d < 0) d += t->ndim;
    ag_node *n = ag_node_new(kind, 1, &t);
    if (n) {
        n->ia[0] = t->ndim == 0 ? 0 : d;
        n->ia[1] = 1;
        st = ag_save(n, 1, *indices, true);
    }
    st = ag_finish(st, n, values, NULL);
    if (st) {
        graft_tensor_release(*indices);
        *indices = NULL;
    }
    return st;
}

graft_status graft_ag_sort(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int dim,
                           bool descending, bool stable) {
    graft_status st;
    AG_NOGRAD(st = graft_sort(values, indices, t, dim, descending, stable));
    return rd_sort_record(&k_sort, st, values, indices, t, dim);
}

graft_status graft_ag_topk(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int64_t k, int dim,
                           bool largest, bool sorted) {
    graft_status st;
    AG_NOGRAD(st = graft_topk(values, indices, t, k, dim, largest, sorted));
    return rd_sort_record(&k_topk, st, values, indices, t, dim);
}
