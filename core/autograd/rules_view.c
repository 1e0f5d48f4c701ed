/* graft autograd: recording and gradient rules of the views (view, reshape, flatten,
 * squeeze, unsqueeze, transpose, permute, expand, narrow, slice, select, diagonal) and
 * of the conversions the bindings make differentiable (clone, contiguous, to(dtype),
 * copy_, select and t). A view's output is recorded as a
 * view of its input's base, for the in-place rules; the gradient of a view that picks
 * elements is zeros of the input's shape with the output gradient written through the
 * same view. */
#include "autograd/internal.h"

typedef enum { VW_RESHAPE, VW_TRANSPOSE, VW_PERMUTE, VW_EXPAND, VW_NARROW, VW_SLICE, VW_SELECT, VW_DIAGONAL,
               VW_IDENTITY } vw_op;

/* ia[0] the op; ia[1..] its arguments */
static graft_status vw_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    const int64_t *a = n->ia + 1;
    graft_tensor *r = NULL;
    switch ((vw_op)n->ia[0]) {
    case VW_RESHAPE: r = ag_reshape_in(g, n, 0); break;
    case VW_TRANSPOSE: r = ag_transpose(g, (int)a[0], (int)a[1]); break;
    case VW_PERMUTE: {
        int inv[GRAFT_MAX_DIMS], nd = (int)a[0];
        for (int i = 0; i < nd; i++) inv[a[1 + i]] = i;
        graft_tensor *p = NULL;
        graft_status st = graft_permute(&p, g, inv, nd);
        r = st ? ag_fail(st) : ag_pool(p);
        break;
    }
    case VW_EXPAND: r = ag_sum_to(g, n->in[0].ndim, n->in[0].shape); break;
    case VW_NARROW: case VW_SLICE: case VW_SELECT: case VW_DIAGONAL: {
        graft_tensor *z = ag_zeros_in(n, 0, g->dtype), *v = NULL;
        if (!z) break;
        graft_status st;
        switch ((vw_op)n->ia[0]) {
        case VW_NARROW: st = graft_narrow(&v, z, (int)a[0], a[1], a[2]); break;
        case VW_SLICE: st = graft_slice(&v, z, (int)a[0], a[1], a[2], a[3]); break;
        case VW_SELECT: st = graft_tensor_select(&v, z, (int)a[0], a[1]); break;
        default: st = graft_diagonal(&v, z, a[0], (int)a[1], (int)a[2]); break;
        }
        if (st) return st;
        ag_pool(v);
        if (ag_copy_into(v, g)) r = z;
        break;
    }
    case VW_IDENTITY: r = g; break;
    }
    gin[0] = ag_keep(r);
    return GRAFT_OK;
}

#define VW_KIND(var, name) static const ag_kind var = {name, vw_apply};
VW_KIND(k_view, "ViewBackward0")
VW_KIND(k_unsafe_view, "UnsafeViewBackward0")
VW_KIND(k_reshape_alias, "ReshapeAliasBackward0")
VW_KIND(k_squeeze0, "SqueezeBackward0")
VW_KIND(k_squeeze1, "SqueezeBackward1")
VW_KIND(k_unsqueeze, "UnsqueezeBackward0")
VW_KIND(k_transpose, "TransposeBackward0")
VW_KIND(k_permute, "PermuteBackward0")
VW_KIND(k_expand, "ExpandBackward0")
VW_KIND(k_slice, "SliceBackward0")
VW_KIND(k_select, "SelectBackward0")
VW_KIND(k_diagonal, "DiagonalBackward0")
VW_KIND(k_t, "TBackward0")
VW_KIND(k_clone, "CloneBackward0")
VW_KIND(k_to_copy, "ToCopyBackward0")
#undef VW_KIND

/* Records *out = op(t) (st is the forward's status); args go to ia[1..]. A result
 * sharing t's storage is recorded as a view of t. */
static graft_status vw_record(graft_status st, graft_tensor **out, graft_tensor *t, const ag_kind *k, vw_op op,
                              const int64_t *args, int nargs) {
    if (st || !ag_should_record(*out, &t, 1)) return st;
    ag_node *n = ag_node_new(k, 1, &t);
    if (n) {
        n->ia[0] = op;
        for (int i = 0; i < nargs; i++) n->ia[1 + i] = args[i];
    }
    return ag_finish(GRAFT_OK, n, out, (*out)->storage == t->storage ? t : NULL);
}

graft_status graft_ag_view(graft_tensor **out, graft_tensor *t, int ndim, const int64_t *shape, bool reshape) {
    graft_status st;
    AG_NOGRAD(st = (reshape ? graft_reshape : graft_view)(out, t, ndim, shape));
    bool copied = !st && (*out)->storage != t->storage;
    const ag_kind *k = copied ? &k_unsafe_view : reshape ? &k_reshape_alias : &k_view;
    return vw_record(st, out, t, k, VW_RESHAPE, NULL, 0);
}

graft_status graft_ag_flatten(graft_tensor **out, graft_tensor *t, int start, int end) {
    graft_status st;
    AG_NOGRAD(st = graft_flatten(out, t, start, end));
    bool copied = !st && (*out)->storage != t->storage;
    return vw_record(st, out, t, copied ? &k_unsafe_view : &k_reshape_alias, VW_RESHAPE, NULL, 0);
}

graft_status graft_ag_squeeze(graft_tensor **out, graft_tensor *t, int dim) {
    graft_status st;
    AG_NOGRAD(st = graft_squeeze(out, t, dim));
    return vw_record(st, out, t, dim < 0 ? &k_squeeze0 : &k_squeeze1, VW_RESHAPE, NULL, 0);
}

graft_status graft_ag_unsqueeze(graft_tensor **out, graft_tensor *t, int dim) {
    graft_status st;
    AG_NOGRAD(st = graft_unsqueeze(out, t, dim));
    return vw_record(st, out, t, &k_unsqueeze, VW_RESHAPE, NULL, 0);
}

graft_status graft_ag_transpose(graft_tensor **out, graft_tensor *t, int d0, int d1) {
    graft_status st;
    AG_NOGRAD(st = graft_transpose(out, t, d0, d1));
    int64_t args[2] = {d0, d1};
    if (t->ndim == 0) return vw_record(st, out, t, &k_transpose, VW_IDENTITY, NULL, 0);
    return vw_record(st, out, t, &k_transpose, VW_TRANSPOSE, args, 2);
}

graft_status graft_ag_permute(graft_tensor **out, graft_tensor *t, const int *perm, int n) {
    graft_status st;
    AG_NOGRAD(st = graft_permute(out, t, perm, n));
    int64_t args[GRAFT_MAX_DIMS + 1];
    args[0] = n;
    for (int i = 0; i < n && i < GRAFT_MAX_DIMS; i++) args[1 + i] = perm[i] < 0 ? perm[i] + n : perm[i];
    return vw_record(st, out, t, &k_permute, VW_PERMUTE, args, n + 1);
}

graft_status graft_ag_expand(graft_tensor **out, graft_tensor *t, int ndim, const int64_t *sizes) {
    graft_status st;
    AG_NOGRAD(st = graft_expand(out, t, ndim, sizes));
    return vw_record(st, out, t, &k_expand, VW_EXPAND, NULL, 0);
}

graft_status graft_ag_narrow(graft_tensor **out, graft_tensor *t, int dim, int64_t start, int64_t length) {
    graft_status st;
    AG_NOGRAD(st = graft_narrow(out, t, dim, start, length));
    int64_t args[3] = {dim, start, length};
    return vw_record(st, out, t, &k_slice, VW_NARROW, args, 3);
}

graft_status graft_ag_slice(graft_tensor **out, graft_tensor *t, int dim, int64_t start, int64_t stop,
                            int64_t step) {
    graft_status st;
    AG_NOGRAD(st = graft_slice(out, t, dim, start, stop, step));
    int64_t args[4] = {dim, start, stop, step};
    return vw_record(st, out, t, &k_slice, VW_SLICE, args, 4);
}

graft_status graft_ag_diagonal(graft_tensor **out, graft_tensor *t, int64_t offset, int d1, int d2) {
    graft_status st;
    AG_NOGRAD(st = graft_diagonal(out, t, offset, d1, d2));
    int64_t args[3] = {offset, d1, d2};
    return vw_record(st, out, t, &k_diagonal, VW_DIAGONAL, args, 3);
}

graft_status graft_ag_select(graft_tensor **out, graft_tensor *t, int dim, int64_t index) {
    graft_status st = graft_tensor_select(out, t, dim, index);
    if (!graft_grad_enabled()) return st;
    int64_t args[2] = {dim, index};
    return vw_record(st, out, t, &k_select, VW_SELECT, args, 2);
}

graft_status graft_ag_t(graft_tensor **out, graft_tensor *t) {
    graft_status st;
    if (t->ndim < 2) {
        st = graft_tensor_view_of(out, t, t->ndim, t->shape, t->stride, t->offset);
        if (!graft_grad_enabled()) return st;
        return vw_record(st, out, t, &k_t, VW_IDENTITY, NULL, 0);
    }
    AG_NOGRAD(st = graft_transpose(out, t, 0, 1));
    if (!graft_grad_enabled()) return st;
    int64_t args[2] = {0, 1};
    return vw_record(st, out, t, &k_t, VW_TRANSPOSE, args, 2);
}

/* ---- conversions ---- */

graft_status graft_ag_clone(graft_tensor **out, graft_tensor *t) {
    graft_status st = graft_tensor_clone(out, t);
    if (!graft_grad_enabled()) return st;
    return vw_record(st, out, t, &k_clone, VW_IDENTITY, NULL, 0);
}

graft_status graft_ag_contiguous(graft_tensor **out, graft_tensor *t) {
    graft_status st = graft_tensor_contiguous(out, t);
    if (!graft_grad_enabled()) return st;
    return vw_record(st, out, t, &k_clone, VW_IDENTITY, NULL, 0);
}

graft_status graft_ag_to_dtype(graft_tensor **out, graft_tensor *t, graft_dtype dtype) {
    graft_status st = graft_tensor_to_dtype(out, t, dtype);
    if (!graft_grad_enabled()) return st;
    return vw_record(st, out, t, &k_to_copy, VW_IDENTITY, NULL, 0);
}

/* to(device): the gradient goes back to the input's device (and dtype). */
static graft_status vw_to_device_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    if (!ag_needs(n, 0)) return GRAFT_OK;
    graft_tensor *r = NULL;
    graft_status st = graft_tensor_empty(&r, g->ndim, g->shape, n->in[0].dtype, n->in[0].device);
    if (!st && (st = graft_tensor_copy_(r, g))) {
        graft_tensor_release(r);
        r = NULL;
    }
    gin[0] = r;
    return st;
}

static const ag_kind k_to_device = {"ToCopyBackward0", vw_to_device_apply};

graft_status graft_ag_to_device(graft_tensor **out, graft_tensor *t, graft_device dev, graft_dtype dtype) {
    graft_status st = graft_tensor_empty(out, t->ndim, t->shape, dtype, dev);
    if (!st && (st = graft_tensor_copy_(*out, t))) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    if (st || !graft_grad_enabled() || !ag_should_record(*out, &t, 1)) return st;
    return ag_finish(GRAFT_OK, ag_node_new(&k_to_device, 1, &t), out, NULL);
}

/* copy_: the old value of dst gets no gradient; src gets dst's (summed over the dims it
 * was broadcast along, converted to its dtype). */
static graft_status vw_copy_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    if (ag_needs(n, 0)) gin[0] = ag_keep(ag_zeros_in(n, 0, g->dtype));
    if (ag_needs(n, 1)) gin[1] = ag_keep(g);
    return GRAFT_OK;
}

static const ag_kind k_copy = {"CopyBackwards", vw_copy_apply};

graft_status graft_ag_copy_(graft_tensor *dst, graft_tensor *src) {
    if (!graft_grad_enabled() || !(dst->autograd || src->autograd)) return graft_tensor_copy_(dst, src);
    graft_tensor *ins[2] = {dst, src};
    bool rec;
    graft_status st = ag_inplace_begin(dst, ins, 2, "copy_", &rec);
    if (st || (st = graft_tensor_copy_(dst, src)) || !rec) return st;
    return ag_inplace_end(ag_node_new(&k_copy, 2, ins), dst);
}
