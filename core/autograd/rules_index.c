/* graft autograd: recording and gradient rules of indexing (t[{...}], index_put_,
 * index_select, gather, scatter/scatter_add, index_add, masked_fill, masked_select,
 * take) and joining (cat, stack, flip, roll, repeat/tile, tril/triu, diag). Gradients
 * of the gathering ops are scattered back with index_add_/scatter_add_, so repeated
 * indices accumulate; advanced indexing finds where each output element came from by
 * indexing a tensor of flat positions the same way. */
#include "autograd/internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- saved index entries ---- */

typedef struct {
    int n;
    graft_ix ix[];   /* tensor entries hold a reference to a metadata-free alias */
} ix_saved;

static void ix_saved_free(void *p) {
    ix_saved *s = p;
    for (int i = 0; i < s->n; i++)
        if (s->ix[i].kind == GRAFT_IX_TENSOR) graft_tensor_release(s->ix[i].tensor);
    free(s);
}

/* Stores a copy of the n entries in n->extra. */
static graft_status ix_save_entries(ag_node *node, const graft_ix *ix, int n) {
    ix_saved *s = calloc(1, sizeof *s + sizeof(graft_ix) * (size_t)(n > 0 ? n : 1));
    if (!s) return graft_error(GRAFT_ENOMEM, "autograd: out of memory");
    s->n = 0;
    for (int i = 0; i < n; i++) {
        s->ix[i] = ix[i];
        if (ix[i].kind == GRAFT_IX_TENSOR) {
            graft_tensor *t = ix[i].tensor, *alias;
            graft_status st = graft_tensor_view_of(&alias, t, t->ndim, t->shape, t->stride, t->offset);
            if (st) {
                ix_saved_free(s);
                return st;
            }
            s->ix[i].tensor = alias;
        }
        s->n = i + 1;
    }
    node->extra = s;
    node->extra_free = ix_saved_free;
    return GRAFT_OK;
}

static bool ix_has_tensor(const graft_ix *ix, int n) {
    for (int i = 0; i < n; i++)
        if (ix[i].kind == GRAFT_IX_TENSOR) return true;
    return false;
}

/* Pooled helpers over core calls that fill an existing tensor. */
static graft_tensor *ix_index(graft_tensor *t, const ix_saved *s) {
    if (!t) return NULL;
    graft_tensor *r = NULL;
    graft_status st = graft_index(&r, t, s->ix, s->n);
    return st ? ag_fail(st) : ag_pool(r);
}

/* int64 positions 0..numel-1 in the shape of input i, on its device (built on the host) */
static graft_tensor *ix_positions(ag_node *n, int i) {
    const ag_input *in = &n->in[i];
    graft_tensor *r = ag_zeros_on(in->ndim, in->shape, GRAFT_I64, graft_cpu);
    if (!r) return NULL;
    int64_t *p = graft_tensor_data(r), k = graft_tensor_numel(r);
    for (int64_t j = 0; j < k; j++) p[j] = j;
    return ag_to_dev(r, in->device);
}

static graft_tensor *ix_flat(graft_tensor *t) {
    int64_t m1 = -1;
    return ag_reshape(ag_contig(t), 1, &m1);
}

/* z.index_add_(dim, index, src) on a pooled z; returns z */
static graft_tensor *ix_index_add(graft_tensor *z, int dim, graft_tensor *index, graft_tensor *src) {
    if (!z || !index || !src) return NULL;
    graft_ix_value one = {true, 1, 1.0};
    graft_status st = graft_index_add_(z, dim, index, src, one);
    return st ? ag_fail(st) : z;
}

/* ---- t[{...}] ---- */

/* ia[0]: advanced (index tensors present) */
static graft_status ix_index_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    const ix_saved *s = n->extra;
    if (!n->ia[0]) {
        graft_tensor *z = ag_zeros_in(n, 0, g->dtype);
        if (ag_copy_into(ix_index(z, s), g)) gin[0] = ag_keep(z);
        return GRAFT_OK;
    }
    const ag_input *in = &n->in[0];
    int64_t numel = 1;
    for (int d = 0; d < in->ndim; d++) numel *= in->shape[d];
    graft_tensor *from = ix_flat(ix_index(ix_positions(n, 0), s));
    graft_tensor *z = ag_zeros(1, &numel, g->dtype);
    gin[0] = ag_keep(ag_reshape_in(ix_index_add(z, 0, from, ix_flat(g)), n, 0));
    return GRAFT_OK;
}

static const ag_kind k_index_basic = {"SliceBackward0", ix_index_apply};
static const ag_kind k_index_adv = {"IndexBackward0", ix_index_apply};

graft_status graft_ag_index(graft_tensor **out, graft_tensor *t, const graft_ix *ix, int n) {
    graft_status st;
    AG_NOGRAD(st = graft_index(out, t, ix, n));
    if (st || !ag_should_record(*out, &t, 1)) return st;
    bool adv = ix_has_tensor(ix, n);
    ag_node *node = ag_node_new(adv ? &k_index_adv : &k_index_basic, 1, &t);
    if (node) {
        node->ia[0] = adv;
        st = ix_save_entries(node, ix, n);
    }
    return ag_finish(st, node, out, adv ? NULL : t);
}

/* t[{...}] = value: t's old value gets g outside the written positions, value gets g at
 * them. */
static graft_status ix_put_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    const ix_saved *s = n->extra;
    if (ag_needs(n, 0)) {
        int64_t none[1] = {0};
        graft_tensor *z = ag_clone(g), *zero = ag_zeros(0, none, g->dtype);
        if (z && zero) {
            graft_status st = graft_index_put_(z, s->ix, s->n, zero);
            if (st) return st;
            gin[0] = ag_keep(z);
        }
    }
    if (ag_needs(n, 1)) gin[1] = ag_keep(ix_index(g, s));
    return GRAFT_OK;
}

static const ag_kind k_index_put = {"IndexPutBackward0", ix_put_apply};

graft_status graft_ag_index_put_(graft_tensor *t, const graft_ix *ix, int n, graft_tensor *value) {
    graft_tensor *ins[2] = {t, value};
    bool rec;
    graft_status st = ag_inplace_begin(t, ins, 2, "index_put_", &rec);
    if (st) return st;
    AG_NOGRAD(st = graft_index_put_(t, ix, n, value));
    if (st || !rec) return st;
    ag_node *node = ag_node_new(&k_index_put, 2, ins);
    if (node && (st = ix_save_entries(node, ix, n))) {
        graft_node_release(node);
        return st;
    }
    return ag_inplace_end(node, t);
}

/* ---- index_select, gather, scatter, index_add ---- */

typedef enum { IX_SELECT, IX_GATHER, IX_SCATTER, IX_SCATTER_VALUE, IX_SCATTER_ADD, IX_INDEX_ADD } ix_op;

/* ia[0] op, ia[1] dim; fa[0] alpha (index_add); saved: 1 the index */
static graft_status ix_dim_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    int dim = (int)n->ia[1];
    graft_tensor *index = ag_saved_get(n, 1);
    graft_status st = GRAFT_OK;
    switch ((ix_op)n->ia[0]) {
    case IX_SELECT:
        gin[0] = ag_keep(ix_index_add(ag_zeros_in(n, 0, g->dtype), dim, index, ag_contig(g)));
        break;
    case IX_GATHER: {
        graft_tensor *z = ag_zeros_in(n, 0, g->dtype), *gc = ag_contig(g);
        if (!z || !index || !gc) break;
        if ((st = graft_scatter_add_(z, dim, index, gc))) break;
        gin[0] = ag_keep(z);
        break;
    }
    case IX_SCATTER: case IX_SCATTER_VALUE: case IX_SCATTER_ADD: case IX_INDEX_ADD: {
        bool add = n->ia[0] == IX_SCATTER_ADD || n->ia[0] == IX_INDEX_ADD;
        if (ag_needs(n, 0)) {
            if (add) {
                gin[0] = ag_keep(g);
            } else {
                graft_tensor *z = ag_clone(g);
                graft_ix_value zero = {true, 0, 0};
                if (z && index && (st = graft_scatter_value_(z, dim, index, zero))) break;
                gin[0] = ag_keep(z);
            }
        }
        if (n->n_in > 1 && ag_needs(n, 1) && index) {
            graft_tensor *r = NULL;
            if (n->ia[0] == IX_INDEX_ADD) {
                st = graft_index_select(&r, g, dim, index);
                ag_pool(r);
                if (!st && n->fa[0] != 1.0) r = ag_muls(r, n->fa[0]);
            } else {
                /* src may be larger than index: its other elements get 0 */
                graft_tensor *gath = NULL;
                st = graft_gather(&gath, g, dim, index);
                ag_pool(gath);
                if (!st) {
                    const ag_input *src = &n->in[1];
                    bool same = src->ndim == gath->ndim;
                    for (int d = 0; same && d < src->ndim; d++) same = src->shape[d] == gath->shape[d];
                    if (same) {
                        r = gath;
                    } else {
                        graft_tensor *z = ag_zeros_in(n, 1, g->dtype), *v = NULL;
                        if (z) {
                            graft_tensor *cur = z;
                            for (int d = 0; d < gath->ndim && cur; d++) cur = ag_narrow(cur, d, 0, gath->shape[d]);
                            v = cur;
                            if (ag_copy_into(v, gath)) r = z;
                        }
                    }
                }
            }
            if (st) break;
            gin[1] = ag_keep(r);
        }
        break;
    }
    }
    return st;
}

static const ag_kind k_index_select = {"IndexSelectBackward0", ix_dim_apply};
static const ag_kind k_gather = {"GatherBackward0", ix_dim_apply};
static const ag_kind k_scatter = {"ScatterBackward0", ix_dim_apply};
static const ag_kind k_scatter_value = {"ScatterBackward1", ix_dim_apply};
static const ag_kind k_scatter_add = {"ScatterAddBackward0", ix_dim_apply};
static const ag_kind k_index_add = {"IndexAddBackward0", ix_dim_apply};

static ag_node *ix_dim_node(const ag_kind *k, ix_op op, int nin, graft_tensor *const *ins, int dim,
                            graft_tensor *index, double alpha) {
    ag_node *n = ag_node_new(k, nin, ins);
    if (!n) return NULL;
    n->ia[0] = op;
    n->ia[1] = dim;
    n->fa[0] = alpha;
    if (ag_save(n, 1, index, false)) {
        graft_node_release(n);
        return NULL;
    }
    return n;
}

graft_status graft_ag_index_select(graft_tensor **out, graft_tensor *t, int dim, graft_tensor *index) {
    graft_status st;
    AG_NOGRAD(st = graft_index_select(out, t, dim, index));
    if (st || !ag_should_record(*out, &t, 1)) return st;
    return ag_finish(GRAFT_OK, ix_dim_node(&k_index_select, IX_SELECT, 1, &t, dim, index, 1), out, NULL);
}

graft_status graft_ag_gather(graft_tensor **out, graft_tensor *t, int dim, graft_tensor *index) {
    graft_status st;
    AG_NOGRAD(st = graft_gather(out, t, dim, index));
    if (st || !ag_should_record(*out, &t, 1)) return st;
    return ag_finish(GRAFT_OK, ix_dim_node(&k_gather, IX_GATHER, 1, &t, dim, index, 1), out, NULL);
}

graft_status graft_ag_scatter_(graft_tensor *t, int dim, graft_tensor *index, graft_tensor *src,
                               const graft_ix_value *v, int mode) {
    graft_tensor *ins[2] = {t, mode == 1 ? NULL : src};
    bool rec;
    const char *name = mode == 2 ? "scatter_add_" : "scatter_";
    graft_status st = ag_inplace_begin(t, ins, 2, name, &rec);
    if (st) return st;
    AG_NOGRAD(st = mode == 0   ? graft_scatter_(t, dim, index, src)
                   : mode == 1 ? graft_scatter_value_(t, dim, index, *v)
                               : graft_scatter_add_(t, dim, index, src));
    if (st || !rec) return st;
    const ag_kind *k = mode == 0 ? &k_scatter : mode == 1 ? &k_scatter_value : &k_scatter_add;
    ix_op op = mode == 0 ? IX_SCATTER : mode == 1 ? IX_SCATTER_VALUE : IX_SCATTER_ADD;
    ag_node *n = ix_dim_node(k, op, mode == 1 ? 1 : 2, ins, dim, index, 1);
    return n ? ag_inplace_end(n, t) : GRAFT_ENOMEM;
}

graft_status graft_ag_index_add_(graft_tensor *t, int dim, graft_tensor *index, graft_tensor *src,
                                 graft_ix_value alpha) {
    graft_tensor *ins[2] = {t, src};
    bool rec;
    graft_status st = ag_inplace_begin(t, ins, 2, "index_add_", &rec);
    if (st) return st;
    AG_NOGRAD(st = graft_index_add_(t, dim, index, src, alpha));
    if (st || !rec) return st;
    ag_node *n = ix_dim_node(&k_index_add, IX_INDEX_ADD, 2, ins, dim, index, alpha.is_int ? (double)alpha.i : alpha.d);
    return n ? ag_inplace_end(n, t) : GRAFT_ENOMEM;
}

/* ---- masks, take ---- */

/* ia[0]: 0 masked_fill, 1 masked_select, 2 take; saved: 1 the mask or index */
static graft_status ix_mask_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_tensor *m = ag_saved_get(n, 1);
    if (!m) return GRAFT_OK;
    graft_status st = GRAFT_OK;
    if (n->ia[0] == 0) {
        gin[0] = ag_keep(ag_where0_not(m, g));
    } else if (n->ia[0] == 1) {
        int nd = (int)n->ia[1];
        int64_t shape[GRAFT_MAX_DIMS];
        for (int d = 0; d < nd; d++) shape[d] = n->ia[2 + d];
        graft_tensor *z = ag_zeros(nd, shape, g->dtype), *me = ag_expand(m, nd, shape);
        if (!z || !me) return GRAFT_OK;
        graft_ix e = {.kind = GRAFT_IX_TENSOR, .tensor = me};
        if ((st = graft_index_put_(z, &e, 1, g))) return st;
        gin[0] = ag_keep(z);
    } else {
        const ag_input *in = &n->in[0];
        int64_t numel = 1;
        for (int d = 0; d < in->ndim; d++) numel *= in->shape[d];
        graft_tensor *neg = ag_bins(GRAFT_EW_LT, m, 0.0);
        graft_tensor *wrapped = ag_where(neg, ag_bins(GRAFT_EW_ADD, m, (double)numel), m);
        wrapped = ag_to(wrapped, GRAFT_I64);
        graft_tensor *z = ag_zeros(1, &numel, g->dtype);
        gin[0] = ag_keep(ag_reshape_in(ix_index_add(z, 0, ix_flat(wrapped), ix_flat(g)), n, 0));
    }
    return st;
}

static const ag_kind k_masked_fill = {"MaskedFillBackward0", ix_mask_apply};
static const ag_kind k_masked_select = {"MaskedSelectBackward0", ix_mask_apply};
static const ag_kind k_take = {"TakeBackward0", ix_mask_apply};

static ag_node *ix_mask_node(const ag_kind *k, int op, graft_tensor *t, graft_tensor *m) {
    ag_node *n = ag_node_new(k, 1, &t);
    if (!n) return NULL;
    n->ia[0] = op;
    if (ag_save(n, 1, m, false)) {
        graft_node_release(n);
        return NULL;
    }
    return n;
}

graft_status graft_ag_masked_fill_(graft_tensor *t, graft_tensor *mask, graft_ix_value v) {
    bool rec;
    graft_status st = ag_inplace_begin(t, &t, 1, "masked_fill_", &rec);
    if (st) return st;
    AG_NOGRAD(st = graft_masked_fill_(t, mask, v));
    if (st || !rec) return st;
    ag_node *n = ix_mask_node(&k_masked_fill, 0, t, mask);
    return n ? ag_inplace_end(n, t) : GRAFT_ENOMEM;
}

graft_status graft_ag_masked_fill(graft_tensor **out, graft_tensor *t, graft_tensor *mask, graft_ix_value v) {
    graft_status st;
    AG_NOGRAD(st = graft_masked_fill(out, t, mask, v));
    if (st || !ag_should_record(*out, &t, 1)) return st;
    return ag_finish(GRAFT_OK, ix_mask_node(&k_masked_fill, 0, t, mask), out, NULL);
}

graft_status graft_ag_masked_select(graft_tensor **out, graft_tensor *t, graft_tensor *mask) {
    graft_status st;
    AG_NOGRAD(st = graft_masked_select(out, t, mask));
    if (st || !ag_should_record(*out, &t, 1)) return st;
    int nd;
    int64_t shape[GRAFT_MAX_DIMS];
    if ((st = graft_broadcast_shapes(&nd, shape, t->ndim, t->shape, mask->ndim, mask->shape, "masked_select")))
        return ag_finish(st, NULL, out, NULL);
    ag_node *n = ix_mask_node(&k_masked_select, 1, t, mask);
    if (n) {
        n->ia[1] = nd;
        for (int d = 0; d < nd; d++) n->ia[2 + d] = shape[d];
    }
    return ag_finish(GRAFT_OK, n, out, NULL);
}

graft_status graft_ag_take(graft_tensor **out, graft_tensor *t, graft_tensor *index) {
    graft_status st;
    AG_NOGRAD(st = graft_take(out, t, index));
    if (st || !ag_should_record(*out, &t, 1)) return st;
    return ag_finish(GRAFT_OK, ix_mask_node(&k_take, 2, t, index), out, NULL);
}

/* ---- cat, stack ---- */

/* ia[0] dim (of the output), ia[1] stack */
static graft_status ix_cat_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    int dim = (int)n->ia[0];
    int64_t off = 0;
    for (int i = 0; i < n->n_in; i++) {
        const ag_input *in = &n->in[i];
        if (n->ia[1]) {
            if (!ag_needs(n, i)) continue;
            graft_tensor *v = NULL;
            graft_status st = graft_tensor_select(&v, g, dim, i);
            if (st) return st;
            gin[i] = v;
            continue;
        }
        bool skipped = in->ndim == 1 && in->shape[0] == 0 && g->ndim != 1;
        int64_t len = skipped ? 0 : in->shape[dim];
        if (ag_needs(n, i))
            gin[i] = ag_keep(skipped ? ag_zeros_in(n, i, g->dtype) : ag_narrow(g, dim, off, len));
        off += len;
    }
    return GRAFT_OK;
}

static const ag_kind k_cat = {"CatBackward0", ix_cat_apply};
static const ag_kind k_stack = {"StackBackward0", ix_cat_apply};

graft_status graft_ag_cat(graft_tensor **out, graft_tensor *const *ts, int n, int dim, bool stack) {
    graft_status st;
    AG_NOGRAD(st = (stack ? graft_stack : graft_cat)(out, ts, n, dim));
    if (st || !ag_should_record(*out, ts, n)) return st;
    int d = dim < 0 ? dim + (*out)->ndim : dim;
    ag_node *node = ag_node_new(stack ? &k_stack : &k_cat, n, ts);
    if (node) {
        node->ia[0] = d;
        node->ia[1] = stack;
    }
    return ag_finish(GRAFT_OK, node, out, NULL);
}

/* ---- flip, roll, repeat, tril/triu, diag ---- */

typedef enum { JN_FLIP, JN_ROLL, JN_REPEAT, JN_TRIL, JN_TRIU, JN_DIAG } jn_op;

/* ia[0] op; flip: ia[1] n, dims from ia[2]; roll: ia[1] n_dims, ia[2] n_shifts, shifts
 * from ia[3], dims after them; repeat: ia[1] n, reps from ia[2]; tril/triu/diag: ia[1] k */
static graft_status jn_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    const int64_t *a = n->ia + 1;
    const ag_input *in = &n->in[0];
    graft_tensor *r = NULL;
    graft_status st = GRAFT_OK;
    switch ((jn_op)n->ia[0]) {
    case JN_FLIP: {
        int dims[GRAFT_MAX_DIMS];
        for (int i = 0; i < a[0]; i++) dims[i] = (int)a[1 + i];
        st = graft_flip(&r, g, dims, (int)a[0]);
        ag_pool(r);
        break;
    }
    case JN_ROLL: {
        int nd = (int)a[0], ns = (int)a[1], dims[GRAFT_MAX_DIMS];
        int64_t shifts[GRAFT_MAX_DIMS];
        for (int i = 0; i < ns; i++) shifts[i] = -a[2 + i];
        for (int i = 0; i < nd; i++) dims[i] = (int)a[2 + ns + i];
        st = graft_roll(&r, g, shifts, ns, dims, nd);
        ag_pool(r);
        break;
    }
    case JN_REPEAT: {
        int nr = (int)a[0], m = 0, sd[GRAFT_MAX_DIMS], ns = 0;
        int64_t shape[GRAFT_MAX_DIMS] = {0};
        for (int i = 0; i < nr; i++) {
            int td = i - (nr - in->ndim);
            int64_t size = td >= 0 ? in->shape[td] : 1, rep = a[1 + i];
            if (rep != 1) {
                sd[ns++] = m;
                shape[m++] = rep;
            }
            shape[m++] = size;
        }
        graft_tensor *v = ag_reshape(g, m, shape);
        r = ns ? ag_sum(v, sd, ns, false) : v;
        r = ag_reshape_in(r, n, 0);
        break;
    }
    case JN_TRIL: case JN_TRIU:
        st = (n->ia[0] == JN_TRIL ? graft_tril : graft_triu)(&r, g, a[0]);
        ag_pool(r);
        break;
    case JN_DIAG:
        if (in->ndim == 1) {
            st = graft_diagonal(&r, g, a[0], 0, 1);
            ag_pool(r);
        } else {
            graft_tensor *z = ag_zeros_in(n, 0, g->dtype), *v = NULL;
            if (!z) break;
            if ((st = graft_diagonal(&v, z, a[0], 0, 1))) break;
            ag_pool(v);
            if (ag_copy_into(v, g)) r = z;
        }
        break;
    }
    if (st) return st;
    gin[0] = ag_keep(r);
    return GRAFT_OK;
}

static const ag_kind k_flip = {"FlipBackward0", jn_apply};
static const ag_kind k_roll = {"RollBackward0", jn_apply};
static const ag_kind k_repeat = {"RepeatBackward0", jn_apply};
static const ag_kind k_tril = {"TrilBackward0", jn_apply};
static const ag_kind k_triu = {"TriuBackward0", jn_apply};
static const ag_kind k_diag = {"DiagBackward0", jn_apply};

static graft_status jn_record(graft_status st, graft_tensor **out, graft_tensor *t, const ag_kind *k, jn_op op,
                              const int64_t *args, int nargs) {
    if (st || !ag_should_record(*out, &t, 1)) return st;
    ag_node *n = ag_node_new(k, 1, &t);
    if (n) {
        n->ia[0] = op;
        for (int i = 0; i < nargs; i++) n->ia[1 + i] = args[i];
    }
    return ag_finish(GRAFT_OK, n, out, NULL);
}

graft_status graft_ag_flip(graft_tensor **out, graft_tensor *t, const int *dims, int n) {
    graft_status st;
    AG_NOGRAD(st = graft_flip(out, t, dims, n));
    int64_t args[GRAFT_MAX_DIMS + 1];
    args[0] = n;
    for (int i = 0; i < n && i < GRAFT_MAX_DIMS; i++) args[1 + i] = dims[i];
    return jn_record(st, out, t, &k_flip, JN_FLIP, args, n + 1);
}

graft_status graft_ag_roll(graft_tensor **out, graft_tensor *t, const int64_t *shifts, int n_shifts,
                           const int *dims, int n_dims) {
    graft_status st;
    AG_NOGRAD(st = graft_roll(out, t, shifts, n_shifts, dims, n_dims));
    int64_t args[2 * GRAFT_MAX_DIMS + 2];
    int k = 0;
    args[k++] = n_dims;
    args[k++] = n_shifts;
    for (int i = 0; i < n_shifts && i < GRAFT_MAX_DIMS; i++) args[k++] = shifts[i];
    for (int i = 0; i < n_dims && i < GRAFT_MAX_DIMS; i++) args[k++] = dims[i];
    return jn_record(st, out, t, &k_roll, JN_ROLL, args, k);
}

graft_status graft_ag_repeat(graft_tensor **out, graft_tensor *t, const int64_t *reps, int n, bool tile) {
    graft_status st;
    AG_NOGRAD(st = (tile ? graft_tile : graft_repeat)(out, t, reps, n));
    int64_t args[GRAFT_MAX_DIMS + 1];
    int k = 0;
    if (tile && n < t->ndim) {
        args[k++] = t->ndim;
        for (int i = 0; i < t->ndim - n; i++) args[k++] = 1;
    } else {
        args[k++] = n;
    }
    for (int i = 0; i < n && k <= GRAFT_MAX_DIMS; i++) args[k++] = reps[i];
    return jn_record(st, out, t, &k_repeat, JN_REPEAT, args, k);
}

graft_status graft_ag_tri(graft_tensor **out, graft_tensor *t, int64_t k, bool lower) {
    graft_status st;
    AG_NOGRAD(st = (lower ? graft_tril : graft_triu)(out, t, k));
    return jn_record(st, out, t, lower ? &k_tril : &k_triu, lower ? JN_TRIL : JN_TRIU, &k, 1);
}

graft_status graft_ag_tri_(graft_tensor *t, int64_t k, bool lower) {
    bool rec;
    graft_status st = ag_inplace_begin(t, &t, 1, lower ? "tril_" : "triu_", &rec);
    if (st) return st;
    AG_NOGRAD(st = (lower ? graft_tril_ : graft_triu_)(t, k));
    if (st || !rec) return st;
    ag_node *n = ag_node_new(lower ? &k_tril : &k_triu, 1, &t);
    if (n) {
        n->ia[0] = lower ? JN_TRIL : JN_TRIU;
        n->ia[1] = k;
    }
    return ag_inplace_end(n, t);
}

graft_status graft_ag_diag(graft_tensor **out, graft_tensor *t, int64_t k) {
    graft_status st;
    AG_NOGRAD(st = graft_diag(out, t, k));
    return jn_record(st, out, t, &k_diag, JN_DIAG, &k, 1);
}
