/* graft autograd: the scratch pool and the forward-op helpers rules are written with.
 * Every helper returns a pool-owned tensor, or NULL after recording the first error;
 * a NULL argument gives NULL without a new error, so a rule reads as one expression
 * and checks once. The engine unwinds the pool after each rule. */
#include "autograd/internal.h"

#include <stdlib.h>
#include <string.h>

#define SHAPE_BUF (GRAFT_MAX_DIMS * 24 + 3)

static _Thread_local graft_tensor **pool_v;
static _Thread_local int pool_n, pool_cap;
static _Thread_local graft_status pool_err;

int ag_pool_mark(void) { return pool_n; }

graft_status ag_pool_unwind(int mark) {
    while (pool_n > mark) graft_tensor_release(pool_v[--pool_n]);
    graft_status st = pool_err;
    pool_err = GRAFT_OK;
    return st;
}

bool ag_pool_failed(void) { return pool_err != GRAFT_OK; }

graft_tensor *ag_fail(graft_status st) {
    if (!pool_err) pool_err = st ? st : GRAFT_EINTERNAL;
    return NULL;
}

graft_tensor *ag_pool(graft_tensor *t) {
    if (!t) return NULL;
    if (pool_n == pool_cap) {
        int cap = pool_cap ? pool_cap * 2 : 64;
        graft_tensor **p = realloc(pool_v, sizeof *p * (size_t)cap);
        if (!p) {
            graft_tensor_release(t);
            return ag_fail(graft_error(GRAFT_ENOMEM, "backward: out of memory"));
        }
        pool_v = p;
        pool_cap = cap;
    }
    pool_v[pool_n++] = t;
    return t;
}

graft_tensor *ag_keep(graft_tensor *t) {
    graft_tensor_retain(t);
    return t;
}

/* The result of a +1 core call, pooled, or NULL after recording its error. */
static graft_tensor *ag_take(graft_status st, graft_tensor *r) {
    if (st) return ag_fail(st);
    return ag_pool(r);
}

graft_tensor *ag_bin(graft_binary_op op, graft_tensor *a, graft_tensor *b) {
    if (!a || !b) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_binary(&r, op, graft_operand_tensor(a), graft_operand_tensor(b), NULL);
    return ag_take(st, r);
}

graft_tensor *ag_bins(graft_binary_op op, graft_tensor *a, double s) {
    if (!a) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_binary(&r, op, graft_operand_tensor(a), graft_operand_float(s), NULL);
    return ag_take(st, r);
}

graft_tensor *ag_sbin(graft_binary_op op, double s, graft_tensor *b) {
    if (!b) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_binary(&r, op, graft_operand_float(s), graft_operand_tensor(b), NULL);
    return ag_take(st, r);
}

graft_tensor *ag_un(graft_unary_op op, graft_tensor *a) {
    if (!a) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_unary(&r, op, a);
    return ag_take(st, r);
}

graft_tensor *ag_neg(graft_tensor *a) { return ag_un(GRAFT_EW_NEG, a); }

graft_tensor *ag_where(graft_tensor *cond, graft_tensor *a, graft_tensor *b) {
    if (!cond || !a || !b) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_where(&r, cond, graft_operand_tensor(a), graft_operand_tensor(b));
    return ag_take(st, r);
}

graft_tensor *ag_where0(graft_tensor *cond, graft_tensor *a) {
    if (!cond || !a) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_where(&r, cond, graft_operand_tensor(a), graft_operand_int(0));
    return ag_take(st, r);
}

graft_tensor *ag_where0_not(graft_tensor *cond, graft_tensor *a) {
    if (!cond || !a) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_where(&r, cond, graft_operand_int(0), graft_operand_tensor(a));
    return ag_take(st, r);
}

_Thread_local graft_device ag_device = {GRAFT_CPU, 0};

graft_tensor *ag_zeros_on(int ndim, const int64_t *shape, graft_dtype dtype, graft_device dev) {
    graft_tensor *r = NULL;
    graft_status st = graft_tensor_empty(&r, ndim, shape, dtype, dev);
    if (!st && (st = graft_tensor_fill_int_(r, 0))) {
        graft_tensor_release(r);
        r = NULL;
    }
    return ag_take(st, r);
}

graft_tensor *ag_zeros(int ndim, const int64_t *shape, graft_dtype dtype) {
    return ag_zeros_on(ndim, shape, dtype, ag_device);
}

graft_tensor *ag_zeros_in(ag_node *n, int i, graft_dtype d) {
    return ag_zeros_on(n->in[i].ndim, n->in[i].shape, d, n->in[i].device);
}

graft_tensor *ag_sum(graft_tensor *a, const int *dims, int ndims, bool keepdim) {
    if (!a) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_reduce_sum(&r, a, dims, ndims, keepdim, -1);
    return ag_take(st, r);
}

graft_tensor *ag_reshape(graft_tensor *a, int ndim, const int64_t *shape) {
    if (!a) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_reshape(&r, a, ndim, shape);
    return ag_take(st, r);
}

graft_tensor *ag_reshape_in(graft_tensor *a, ag_node *n, int i) { return ag_reshape(a, n->in[i].ndim, n->in[i].shape); }

graft_tensor *ag_expand(graft_tensor *a, int ndim, const int64_t *shape) {
    if (!a) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_expand(&r, a, ndim, shape);
    return ag_take(st, r);
}

graft_tensor *ag_transpose(graft_tensor *a, int d0, int d1) {
    if (!a) return NULL;
    if (d0 < 0) d0 += a->ndim;
    if (d1 < 0) d1 += a->ndim;
    graft_tensor *r = NULL;
    graft_status st = graft_transpose(&r, a, d0, d1);
    return ag_take(st, r);
}

graft_tensor *ag_unsqueeze(graft_tensor *a, int dim) {
    if (!a) return NULL;
    if (dim < 0) dim += a->ndim + 1;
    graft_tensor *r = NULL;
    graft_status st = graft_unsqueeze(&r, a, dim);
    return ag_take(st, r);
}

graft_tensor *ag_squeeze(graft_tensor *a, int dim) {
    if (!a) return NULL;
    if (dim < 0) dim += a->ndim;
    graft_tensor *r = NULL;
    graft_status st = graft_squeeze(&r, a, dim);
    return ag_take(st, r);
}

graft_tensor *ag_narrow(graft_tensor *a, int dim, int64_t start, int64_t len) {
    if (!a) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_narrow(&r, a, dim, start, len);
    return ag_take(st, r);
}

graft_tensor *ag_contig(graft_tensor *a) {
    if (!a) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_tensor_contiguous(&r, a);
    return ag_take(st, r);
}

graft_tensor *ag_clone(graft_tensor *a) {
    if (!a) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_tensor_clone(&r, a);
    return ag_take(st, r);
}

graft_tensor *ag_to(graft_tensor *a, graft_dtype d) {
    if (!a) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_tensor_to_dtype(&r, a, d);
    return ag_take(st, r);
}

graft_tensor *ag_to_dev(graft_tensor *a, graft_device dev) {
    if (!a) return NULL;
    if (graft_device_eq(graft_tensor_device(a), dev)) return a;
    graft_tensor *r = NULL;
    graft_status st = graft_tensor_empty(&r, a->ndim, a->shape, a->dtype, dev);
    if (!st && (st = graft_tensor_copy_(r, a))) {
        graft_tensor_release(r);
        r = NULL;
    }
    return ag_take(st, r);
}

graft_tensor *ag_mm(graft_tensor *a, graft_tensor *b) {
    if (!a || !b) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_linalg_mm(&r, a, b);
    return ag_take(st, r);
}

graft_tensor *ag_matmul(graft_tensor *a, graft_tensor *b) {
    if (!a || !b) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_linalg_matmul(&r, a, b);
    return ag_take(st, r);
}

graft_tensor *ag_copy_into(graft_tensor *dst, graft_tensor *src) {
    if (!dst || !src) return NULL;
    graft_status st = graft_tensor_copy_(dst, src);
    return st ? ag_fail(st) : dst;
}

graft_tensor *ag_expand_back(graft_tensor *g, ag_node *n, int i, uint32_t mask, bool keepdim) {
    if (!g) return NULL;
    const ag_input *in = &n->in[i];
    if (!keepdim) {
        int64_t shape[GRAFT_MAX_DIMS];
        for (int d = 0; d < in->ndim; d++) shape[d] = (mask >> d) & 1u ? 1 : in->shape[d];
        g = ag_reshape(g, in->ndim, shape);
    }
    return ag_expand(g, in->ndim, in->shape);
}

graft_tensor *ag_sum_to(graft_tensor *g, int ndim, const int64_t *shape) {
    if (!g) return NULL;
    int lead = g->ndim - ndim;
    int64_t want = 1;
    for (int d = 0; d < ndim; d++) want *= shape[d];
    bool ok = lead >= 0;
    int dims[GRAFT_MAX_DIMS], nd = 0;
    for (int d = 0; d < lead; d++) dims[nd++] = d;
    for (int d = 0; ok && d < ndim; d++) {
        int64_t gs = g->shape[lead + d];
        if (gs == shape[d]) continue;
        if (shape[d] == 1) dims[nd++] = lead + d;
        else ok = false;
    }
    if (!ok) {
        if (graft_tensor_numel(g) == want && lead < 0) return ag_reshape(g, ndim, shape);
        char a[SHAPE_BUF], b[SHAPE_BUF];
        return ag_fail(graft_error(GRAFT_EINTERNAL, "autograd: a gradient of shape %s cannot be summed to shape %s",
                                   graft_shape_str(g->ndim, g->shape, a, sizeof a),
                                   graft_shape_str(ndim, shape, b, sizeof b)));
    }
    graft_tensor *r = nd ? ag_sum(g, dims, nd, true) : g;
    return ag_reshape(r, ndim, shape);
}

uint32_t ag_dims_mask(const int *dims, int ndims, int ndim) {
    if (ndims == 0) return ndim >= 32 ? 0xffffffffu : (1u << ndim) - 1u;
    uint32_t mask = 0;
    for (int i = 0; i < ndims; i++) {
        int d = dims[i] < 0 ? dims[i] + ndim : dims[i];
        if (d >= 0 && d < ndim) mask |= 1u << d;
    }
    return mask;
}
