/* graft autograd: per-tensor metadata, nodes and saved tensors, gradient hooks, the
 * backward engine (dependency counts, then a ready stack: no recursion over graph depth),
 * in-place recording (history rebase and CopySlices), detach, and the counters. */
#include "autograd/internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHAPE_BUF (GRAFT_MAX_DIMS * 24 + 3)

static _Thread_local graft_ag_counters ag_counters;
static atomic_llong ag_nodes_live;

void graft_ag_get_counters(graft_ag_counters *c) {
    *c = ag_counters;
    c->nodes_live = atomic_load(&ag_nodes_live);
}

void graft_ag_reset_counters(void) { memset(&ag_counters, 0, sizeof ag_counters); }

static void ag_hooks_clear(ag_hook_list *l);
static uint64_t ag_hook_next_id(void);

/* ---- metadata ---- */

/* The metadata dies with its tensor: its references go, and a node that would retain
 * its gradient forgets it. */
static void ag_meta_free(void *p) {
    ag_meta *m = p;
    if (m->grad_fn && m->grad_fn->retain == m) m->grad_fn->retain = NULL;
    graft_node_release(m->grad_fn);
    graft_tensor_release(m->grad);
    graft_tensor_release(m->base);
    ag_hooks_clear(&m->hooks);
    free(m);
}

ag_meta *ag_meta_ensure(graft_tensor *t) {
    if (t->autograd) return t->autograd;
    ag_meta *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    t->autograd = m;
    t->autograd_free = ag_meta_free;
    return m;
}

bool ag_requires(const graft_tensor *t) {
    const ag_meta *m = ag_meta_of(t);
    return m && (m->grad_fn || m->requires_grad);
}

bool graft_requires_grad(const graft_tensor *t) { return ag_requires(t); }

bool graft_is_leaf(const graft_tensor *t) {
    const ag_meta *m = ag_meta_of(t);
    return !m || !m->grad_fn;
}

graft_status graft_set_requires_grad(graft_tensor *t, bool on) {
    ag_meta *m = ag_meta_of(t);
    if (m && m->grad_fn) {
        if (on) return GRAFT_OK;
        return graft_error(GRAFT_EINVAL,
                           "requires_grad: you can only change requires_grad flags of leaf variables. If you want to "
                           "use a computed variable in a subgraph that doesn't require differentiation use "
                           "var_no_grad = var:detach()");
    }
    if (on && !graft_dtype_is_float(t->dtype))
        return graft_error(GRAFT_ETYPE, "requires_grad: only tensors of floating point dtype can require gradients, "
                                        "got %s", graft_dtype_name(t->dtype));
    if (!m && !on) return GRAFT_OK;
    if (!(m = ag_meta_ensure(t))) return graft_error(GRAFT_ENOMEM, "requires_grad: out of memory");
    m->requires_grad = on;
    return GRAFT_OK;
}

graft_tensor *graft_grad(const graft_tensor *t) {
    const ag_meta *m = ag_meta_of(t);
    return m ? m->grad : NULL;
}

graft_status graft_set_grad(graft_tensor *t, graft_tensor *g) {
    ag_meta *m = ag_meta_of(t);
    if (!g) {
        if (m) {
            graft_tensor_release(m->grad);
            m->grad = NULL;
        }
        return GRAFT_OK;
    }
    char a[SHAPE_BUF], b[SHAPE_BUF];
    bool same = g->ndim == t->ndim;
    for (int i = 0; same && i < t->ndim; i++) same = g->shape[i] == t->shape[i];
    if (!same)
        return graft_error(GRAFT_ESHAPE, "grad: assigned grad has data of a different size (%s, the tensor is %s)",
                           graft_shape_str(g->ndim, g->shape, a, sizeof a), graft_shape_str(t->ndim, t->shape, b, sizeof b));
    if (g->dtype != t->dtype)
        return graft_error(GRAFT_ETYPE, "grad: assigned grad has data of a different type (%s, the tensor is %s)",
                           graft_dtype_name(g->dtype), graft_dtype_name(t->dtype));
    if (!graft_device_eq(graft_tensor_device(g), graft_tensor_device(t)))
        return graft_error(GRAFT_EDEVICE, "grad: assigned grad is on a different device");
    if (!(m = ag_meta_ensure(t))) return graft_error(GRAFT_ENOMEM, "grad: out of memory");
    graft_tensor *keep = g;
    if (g->autograd) {
        /* stored detached: a .grad with history could close a reference cycle */
        graft_status st = graft_detach(&keep, g);
        if (st) return st;
    } else {
        graft_tensor_retain(g);
    }
    graft_tensor_release(m->grad);
    m->grad = keep;
    return GRAFT_OK;
}

graft_status graft_retain_grad(graft_tensor *t) {
    ag_meta *m = ag_meta_of(t);
    if (!m || !ag_requires(t))
        return graft_error(GRAFT_EINVAL, "retain_grad: can't retain_grad on a tensor that has requires_grad=false");
    if (!m->grad_fn) return GRAFT_OK;
    /* the hooks registered so far change the retained gradient, later ones do not */
    if (!m->retains_grad || m->grad_fn->retain != m) m->grad_fn->retain_before = ag_hook_next_id();
    m->retains_grad = true;
    m->grad_fn->retain = m;
    return GRAFT_OK;
}

bool graft_retains_grad(const graft_tensor *t) {
    const ag_meta *m = ag_meta_of(t);
    return m && m->retains_grad;
}

graft_node *graft_grad_fn(const graft_tensor *t) {
    const ag_meta *m = ag_meta_of(t);
    return m ? m->grad_fn : NULL;
}

graft_status graft_detach(graft_tensor **out, graft_tensor *t) {
    return graft_tensor_view_of(out, t, t->ndim, t->shape, t->stride, t->offset);
}

graft_status graft_detach_(graft_tensor *t) {
    ag_meta *m = ag_meta_of(t);
    if (!m) return GRAFT_OK;
    if (m->base && m->grad_fn)
        return graft_error(GRAFT_EINVAL, "detach_: can't detach views in-place. Use detach() instead");
    if (m->grad_fn && m->grad_fn->retain == m) m->grad_fn->retain = NULL;
    graft_node_release(m->grad_fn);
    m->grad_fn = NULL;
    m->requires_grad = false;
    ag_hooks_clear(&m->hooks);
    m->retains_grad = false;
    graft_tensor_release(m->base);
    m->base = NULL;
    return GRAFT_OK;
}

/* ---- gradient hooks ---- */

static atomic_ullong ag_hook_ids = 1;

/* The id the next hook will get (ids only grow, so they order registrations). */
static uint64_t ag_hook_next_id(void) { return atomic_load(&ag_hook_ids); }

static void ag_hook_free_ctx(graft_hook *h) {
    void (*f)(void *) = h->free_ctx;
    void *ctx = h->ctx;
    h->free_ctx = NULL;
    h->ctx = NULL;
    if (f) f(ctx);
}

void graft_hook_release(graft_hook *h) {
    if (!h || --h->refcount > 0) return;
    ag_hook_free_ctx(h);
    free(h);
}

void graft_hook_remove(graft_hook *h) {
    if (!h || h->removed) return;
    h->removed = true;
    ag_hook_free_ctx(h);
}

bool graft_hook_removed(const graft_hook *h) { return h->removed; }

/* Drops the list's references (a hook that is not also held by a handle dies now). */
static void ag_hooks_clear(ag_hook_list *l) {
    graft_hook **v = l->v;
    int n = l->n;
    l->v = NULL;
    l->n = l->cap = 0;
    for (int i = 0; i < n; i++) graft_hook_release(v[i]);
    free(v);
}

/* Appends h (taking a reference), first dropping removed hooks so that registering and
 * removing in a loop does not grow the list. */
static bool ag_hooks_add(ag_hook_list *l, graft_hook *h) {
    int k = 0;
    for (int i = 0; i < l->n; i++) {
        if (l->v[i]->removed) graft_hook_release(l->v[i]);
        else l->v[k++] = l->v[i];
    }
    l->n = k;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 4;
        graft_hook **v = realloc(l->v, sizeof *v * (size_t)cap);
        if (!v) return false;
        l->v = v;
        l->cap = cap;
    }
    h->refcount++;
    l->v[l->n++] = h;
    return true;
}

graft_status graft_register_hook(graft_hook **out, graft_tensor *t, graft_hook_fn fn, void *ctx,
                                 void (*free_ctx)(void *)) {
    *out = NULL;
    ag_meta *m = ag_meta_of(t);
    if (!ag_requires(t))
        return graft_error(GRAFT_EINVAL,
                           "register_hook: cannot register a hook on a tensor that doesn't require gradient");
    graft_hook *h = calloc(1, sizeof *h);
    if (!h) return graft_error(GRAFT_ENOMEM, "register_hook: out of memory");
    h->refcount = 1;
    h->fn = fn;
    h->id = atomic_fetch_add(&ag_hook_ids, 1);
    if (!ag_hooks_add(m->grad_fn ? &m->grad_fn->hooks : &m->hooks, h)) {
        free(h);
        return graft_error(GRAFT_ENOMEM, "register_hook: out of memory");
    }
    h->ctx = ctx;
    h->free_ctx = free_ctx;
    *out = h;
    return GRAFT_OK;
}

/* ---- nodes ---- */

static _Thread_local ag_node *ag_free_list;
static _Thread_local bool ag_freeing;

static ag_node *ag_node_alloc(const ag_kind *k, int n_in) {
    ag_node *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    if (n_in > 0 && !(n->in = calloc((size_t)n_in, sizeof *n->in))) {
        free(n);
        return NULL;
    }
    n->refcount = 1;
    n->kind = k;
    n->n_in = n_in;
    atomic_fetch_add(&ag_nodes_live, 1);
    return n;
}

static void ag_release_saved(ag_node *n) {
    for (int i = 0; i < AG_MAX_SAVED; i++) {
        graft_tensor_release(n->saved[i].t);
        n->saved[i].t = NULL;
    }
    n->released = true;
    if (n->inner) ag_release_saved(n->inner);
}

static void ag_node_destroy(ag_node *n) {
    for (int i = 0; i < n->n_in; i++) graft_node_release(n->in[i].next);
    for (int i = 0; i < AG_MAX_SAVED; i++) graft_tensor_release(n->saved[i].t);
    if (n->extra_free) n->extra_free(n->extra);
    graft_node_release(n->inner);
    graft_tensor_release(n->buf);
    ag_hooks_clear(&n->hooks);
    if (n->leaf) {
        ag_meta *m = ag_meta_of(n->leaf);
        if (m && m->acc == n) m->acc = NULL;
        graft_tensor_release(n->leaf);
    }
    free(n->in);
    free(n);
    atomic_fetch_sub(&ag_nodes_live, 1);
}

void graft_node_retain(graft_node *n) {
    if (n) n->refcount++;
}

/* Iterative: a node freed while freeing another is queued, so releasing the head of a
 * long chain never recurses through it. */
void graft_node_release(graft_node *n) {
    if (!n || --n->refcount > 0) return;
    n->free_next = ag_free_list;
    ag_free_list = n;
    if (ag_freeing) return;
    ag_freeing = true;
    while (ag_free_list) {
        ag_node *m = ag_free_list;
        ag_free_list = m->free_next;
        ag_node_destroy(m);
    }
    ag_freeing = false;
}

const char *graft_node_name(const graft_node *n) { return n->kind->name; }
int graft_node_num_inputs(const graft_node *n) { return n->n_in; }
graft_node *graft_node_next(const graft_node *n, int i) {
    return i >= 0 && i < n->n_in ? n->in[i].next : NULL;
}

static const ag_kind ag_acc_kind = {"AccumulateGrad", NULL};

/* +1: the leaf's AccumulateGrad node (one per leaf, held weakly by the leaf). */
static ag_node *ag_acc_get(graft_tensor *leaf) {
    ag_meta *m = ag_meta_of(leaf);
    if (m->acc) {
        m->acc->refcount++;
        return m->acc;
    }
    ag_node *n = ag_node_alloc(&ag_acc_kind, 0);
    if (!n) return NULL;
    graft_tensor_retain(leaf);
    n->leaf = leaf;
    m->acc = n;
    return n;
}

/* +1: where the gradient of t goes (its grad_fn, or a leaf's AccumulateGrad). */
static ag_node *ag_edge_of(graft_tensor *t) {
    ag_meta *m = ag_meta_of(t);
    if (m->grad_fn) {
        m->grad_fn->refcount++;
        return m->grad_fn;
    }
    return ag_acc_get(t);
}

static void ag_input_set_geometry(ag_input *in, const graft_tensor *t) {
    in->ndim = t->ndim;
    in->dtype = t->dtype;
    in->device = graft_tensor_device(t);
    memcpy(in->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
}

ag_node *ag_node_new(const ag_kind *k, int n_in, graft_tensor *const *inputs) {
    ag_node *n = ag_node_alloc(k, n_in);
    if (!n) {
        graft_error(GRAFT_ENOMEM, "autograd: out of memory recording %s", k->name);
        return NULL;
    }
    for (int i = 0; i < n_in; i++) {
        graft_tensor *t = inputs[i];
        if (!t) continue;
        ag_input_set_geometry(&n->in[i], t);
        if (ag_requires(t) && !(n->in[i].next = ag_edge_of(t))) {
            graft_node_release(n);
            graft_error(GRAFT_ENOMEM, "autograd: out of memory recording %s", k->name);
            return NULL;
        }
    }
    return n;
}

graft_status ag_save(ag_node *n, int i, graft_tensor *t, bool is_output) {
    graft_tensor *alias;
    graft_status st = graft_tensor_view_of(&alias, t, t->ndim, t->shape, t->stride, t->offset);
    if (st) return st;
    const ag_meta *m = ag_meta_of(t);
    graft_tensor_release(n->saved[i].t);
    n->saved[i].t = alias;
    n->saved[i].version = t->storage->version;
    n->saved[i].is_output = is_output;
    n->saved[i].producer = is_output ? n->kind->name : m && m->grad_fn ? m->grad_fn->kind->name : NULL;
    return GRAFT_OK;
}

graft_tensor *ag_saved_get(ag_node *n, int i) {
    ag_saved *s = &n->saved[i];
    if (n->released && !s->t)
        return ag_fail(graft_error(
            GRAFT_EINVAL,
            "backward: trying to backward through the graph a second time (or to use saved tensors after they have "
            "already been freed): saved values of the graph are freed by backward(); pass {retain_graph = true} to "
            "the first backward to keep them (at %s)", n->kind->name));
    if (!s->t) return ag_fail(graft_error(GRAFT_EINTERNAL, "autograd: %s has no saved tensor %d", n->kind->name, i));
    uint64_t v = s->t->storage->version;
    if (v != s->version) {
        char shape[SHAPE_BUF], which[128] = "";
        if (s->producer) snprintf(which, sizeof which, ", which is output 0 of %s,", s->producer);
        return ag_fail(graft_error(
            GRAFT_EINVAL,
            "backward: one of the variables needed for gradient computation has been modified by an inplace "
            "operation: [%s %s]%s is at version %llu; expected version %llu instead (needed by %s)",
            graft_dtype_name(s->t->dtype), graft_shape_str(s->t->ndim, s->t->shape, shape, sizeof shape), which,
            (unsigned long long)v, (unsigned long long)s->version, n->kind->name));
    }
    return s->t;
}

graft_status ag_set_output(ag_node *n, graft_tensor *out, graft_tensor *view_of) {
    ag_meta *m = ag_meta_ensure(out);
    if (!m) {
        graft_node_release(n);
        return graft_error(GRAFT_ENOMEM, "autograd: out of memory recording %s", n->kind->name);
    }
    if (view_of) {
        const ag_meta *vm = ag_meta_of(view_of);
        graft_tensor *base = vm && vm->base ? vm->base : view_of;
        graft_tensor_retain(base);
        graft_tensor_release(m->base);
        m->base = base;
    }
    graft_node_release(m->grad_fn);
    m->grad_fn = n;
    return GRAFT_OK;
}

graft_status ag_finish(graft_status st, ag_node *n, graft_tensor **out, graft_tensor *view_of) {
    if (!st && !n) st = GRAFT_ENOMEM; /* ag_node_new set the message */
    if (!st) st = ag_set_output(n, *out, view_of);
    else graft_node_release(n);
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

bool ag_should_record(graft_tensor *out, graft_tensor *const *ins, int n) {
    if (!out || !graft_dtype_is_float(out->dtype)) return false;
    bool any = false;
    for (int i = 0; i < n; i++) {
        if (!ins[i]) continue;
        if (ins[i] == out) return false;
        any = any || ag_requires(ins[i]);
    }
    return any;
}

/* ---- in-place recording ---- */

static bool ag_is_grad_leaf(const graft_tensor *t) {
    const ag_meta *m = ag_meta_of(t);
    return m && !m->grad_fn && m->requires_grad;
}

graft_status graft_ag_check_inplace(graft_tensor *t, const char *op) {
    if (!graft_grad_enabled()) return GRAFT_OK;
    const ag_meta *m = ag_meta_of(t);
    if (!m) return GRAFT_OK;
    if (ag_is_grad_leaf(t))
        return graft_error(GRAFT_EINVAL, "%s: a leaf Variable that requires grad is being used in an in-place operation.",
                           op);
    if (m->base && m->grad_fn && ag_is_grad_leaf(m->base))
        return graft_error(GRAFT_EINVAL,
                           "%s: a view of a leaf Variable that requires grad is being used in an in-place operation.", op);
    return GRAFT_OK;
}

/* Whether t covers its whole storage (else it is a view of something). */
static bool ag_spans_storage(const graft_tensor *t) {
    return t->offset == 0 && graft_tensor_is_contiguous(t) &&
           (size_t)graft_tensor_numel(t) * graft_dtype_size(t->dtype) == t->storage->nbytes;
}

graft_status ag_inplace_begin(graft_tensor *self, graft_tensor *const *ins, int n, const char *op, bool *rec) {
    *rec = false;
    bool any = false;
    for (int i = 0; i < n; i++) any = any || ag_requires(ins[i]);
    if (!any) return GRAFT_OK;
    graft_status st = graft_ag_check_inplace(self, op);
    if (st) return st;
    /* a view made while nothing required grad: its base would never see the gradient */
    if (!ag_requires(self) && !ag_spans_storage(self))
        return graft_error(GRAFT_EINVAL,
                           "%s: writing a tensor that requires grad into a view of a tensor that does not is not "
                           "supported (the base would not get the history); write through the base instead "
                           "(t[{...}] = value) or clone() the view", op);
    if (!graft_dtype_is_float(self->dtype)) return GRAFT_OK;
    *rec = true;
    return GRAFT_OK;
}

/* The geometry of a view within its base, for CopySlices and AsStridedBackward0: both
 * are rebuilt over one fresh storage of the base's extent at backward time. */
typedef struct {
    int vndim, bndim;
    int64_t vshape[GRAFT_MAX_DIMS], vstride[GRAFT_MAX_DIMS], voffset;
    int64_t bshape[GRAFT_MAX_DIMS], bstride[GRAFT_MAX_DIMS], boffset;
    int64_t extent;      /* elements: 1 + the highest element either reaches */
    graft_dtype dtype;
    graft_device device;
} ag_region_geom;

static int64_t ag_reach(int ndim, const int64_t *shape, const int64_t *stride, int64_t offset) {
    int64_t hi = offset;
    for (int i = 0; i < ndim; i++)
        if (shape[i] > 0) hi += (shape[i] - 1) * stride[i];
    return hi;
}

static ag_region_geom *ag_region_new(const graft_tensor *view, const graft_tensor *base) {
    ag_region_geom *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->vndim = view->ndim;
    r->bndim = base->ndim;
    memcpy(r->vshape, view->shape, sizeof(int64_t) * (size_t)view->ndim);
    memcpy(r->vstride, view->stride, sizeof(int64_t) * (size_t)view->ndim);
    memcpy(r->bshape, base->shape, sizeof(int64_t) * (size_t)base->ndim);
    memcpy(r->bstride, base->stride, sizeof(int64_t) * (size_t)base->ndim);
    r->voffset = view->offset;
    r->boffset = base->offset;
    int64_t a = ag_reach(view->ndim, view->shape, view->stride, view->offset);
    int64_t b = ag_reach(base->ndim, base->shape, base->stride, base->offset);
    r->extent = (a > b ? a : b) + 1;
    r->dtype = base->dtype;
    r->device = graft_tensor_device(base);
    return r;
}

/* *full: zeros with the base's geometry; *region: the view's elements within it. Both
 * pooled. */
static bool ag_region_make(const ag_region_geom *r, graft_tensor **full, graft_tensor **region) {
    graft_storage *s;
    graft_status st = graft_storage_new(&s, (size_t)r->extent * graft_dtype_size(r->dtype), r->device);
    if (st) return ag_fail(st), false;
    graft_tensor *f = NULL, *v = NULL;
    st = graft_tensor_from_storage(&f, s, r->dtype, r->bndim, r->bshape, r->bstride, r->boffset);
    if (!st) st = graft_tensor_from_storage(&v, s, r->dtype, r->vndim, r->vshape, r->vstride, r->voffset);
    graft_storage_release(s);
    ag_pool(f);
    ag_pool(v);
    if (!st) st = graft_tensor_fill_int_(f, 0);
    if (st) return ag_fail(st), false;
    *full = f;
    *region = v;
    return true;
}

/* CopySlices: the base's gradient with the view's region replaced by the in-place
 * op's gradient for the view's old value; the op's other inputs get theirs. */
static graft_status ag_copyslices_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    const ag_region_geom *r = n->extra;
    ag_node *inner = n->inner;
    graft_tensor *full, *region;
    if (!ag_region_make(r, &full, &region)) return GRAFT_OK;
    if (!ag_copy_into(full, g)) return GRAFT_OK;
    graft_tensor *gr = ag_clone(region);
    if (!gr) return GRAFT_OK;
    graft_tensor *igin_stack[8] = {NULL}, **igin = igin_stack;
    if (inner->n_in > 8 && !(igin = calloc((size_t)inner->n_in, sizeof *igin)))
        return graft_error(GRAFT_ENOMEM, "backward: out of memory");
    ag_device = graft_tensor_device(gr);
    graft_status st = inner->kind->apply(inner, gr, igin);
    if (!st && !ag_pool_failed()) {
        graft_tensor *g0 = igin[0] ? ag_pool(igin[0]) : NULL;
        igin[0] = NULL;
        if (g0) g0 = ag_sum_to(g0, r->vndim, r->vshape);
        if (g0) st = graft_tensor_copy_(region, g0);
        else if (!ag_pool_failed()) st = graft_tensor_fill_int_(region, 0);
        if (!st) gin[0] = ag_keep(full);
        for (int i = 1; i < inner->n_in && !st; i++) {
            gin[i] = igin[i];
            igin[i] = NULL;
        }
    }
    for (int i = 0; i < inner->n_in; i++) graft_tensor_release(igin[i]);
    if (igin != igin_stack) free(igin);
    return st;
}

/* The history of a view rewritten in place: zeros of the base's shape, g in the region. */
static graft_status ag_as_strided_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_tensor *full, *region;
    if (!ag_region_make(n->extra, &full, &region)) return GRAFT_OK;
    if (ag_copy_into(region, g)) gin[0] = ag_keep(full);
    return GRAFT_OK;
}

static const ag_kind ag_copyslices_kind = {"CopySlices", ag_copyslices_apply};
static const ag_kind ag_as_strided_kind = {"AsStridedBackward0", ag_as_strided_apply};

/* Moves a retain_grad request from t's old grad_fn to its new one. */
static void ag_rebase(ag_meta *m, ag_node *n) {
    if (m->grad_fn && m->grad_fn->retain == m) m->grad_fn->retain = NULL;
    graft_node_release(m->grad_fn);
    m->grad_fn = n;
    if (m->retains_grad) n->retain = m;
}

graft_status ag_inplace_end(ag_node *n, graft_tensor *self) {
    if (!n) return GRAFT_ENOMEM;
    ag_meta *m = ag_meta_ensure(self);
    if (!m) {
        graft_node_release(n);
        return graft_error(GRAFT_ENOMEM, "autograd: out of memory");
    }
    graft_tensor *base = m->base;
    if (!base || !m->grad_fn || !ag_requires(base)) {
        ag_rebase(m, n);
        return GRAFT_OK;
    }
    /* a view of a tensor with history: CopySlices on the base, then self becomes a view
     * of the base's new value */
    ag_node *c = ag_node_alloc(&ag_copyslices_kind, n->n_in);
    ag_region_geom *r = ag_region_new(self, base);
    if (!c || !r) {
        free(r);
        graft_node_release(c);
        graft_node_release(n);
        return graft_error(GRAFT_ENOMEM, "autograd: out of memory");
    }
    c->extra = r;
    c->extra_free = free;
    ag_input_set_geometry(&c->in[0], base);
    c->in[0].next = ag_edge_of(base);
    for (int i = 1; i < n->n_in; i++) {
        c->in[i] = n->in[i];
        graft_node_retain(c->in[i].next);
    }
    c->inner = n;
    graft_status st = GRAFT_OK;
    if (!c->in[0].next) st = graft_error(GRAFT_ENOMEM, "autograd: out of memory");
    ag_node *v = NULL;
    if (!st) {
        ag_meta *bm = ag_meta_of(base);
        ag_rebase(bm, c);
        c = NULL;
        v = ag_node_new(&ag_as_strided_kind, 1, &base);
        ag_region_geom *r2 = v ? ag_region_new(self, base) : NULL;
        if (!r2) {
            graft_node_release(v);
            return graft_error(GRAFT_ENOMEM, "autograd: out of memory");
        }
        v->extra = r2;
        v->extra_free = free;
        ag_rebase(m, v);
    }
    graft_node_release(c);
    return st;
}

/* ---- fills ---- */

static graft_status ag_zero_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    if (ag_needs(n, 0)) gin[0] = ag_keep(ag_zeros_in(n, 0, g->dtype));
    return GRAFT_OK;
}

static const ag_kind ag_fill_kind = {"FillBackward0", ag_zero_apply};
static const ag_kind ag_zero_kind = {"ZeroBackward0", ag_zero_apply};
static const ag_kind ag_random_kind = {"RandomBackward0", ag_zero_apply};
static const ag_kind ag_uniform_kind = {"UniformBackward0", ag_zero_apply};
static const ag_kind ag_normal_kind = {"NormalBackward0", ag_zero_apply};

graft_status graft_ag_fill_begin(graft_tensor *t, const char *op) { return graft_ag_check_inplace(t, op); }

graft_status graft_ag_fill_end(graft_tensor *t, const char *node_name) {
    if (!graft_grad_enabled() || !ag_requires(t)) return GRAFT_OK;
    static const ag_kind *const kinds[] = {&ag_zero_kind, &ag_fill_kind, &ag_uniform_kind, &ag_normal_kind};
    const ag_kind *k = &ag_random_kind;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(node_name, kinds[i]->name) == 0) k = kinds[i];
    return ag_inplace_end(ag_node_new(k, 1, &t), t);
}

/* ---- the engine ---- */

typedef struct {
    ag_node **v;
    int64_t n, cap;
} ag_vec;

static bool ag_vec_push(ag_vec *v, ag_node *x) {
    if (v->n == v->cap) {
        int64_t cap = v->cap ? v->cap * 2 : 64;
        ag_node **p = realloc(v->v, sizeof *p * (size_t)cap);
        if (!p) return false;
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = x;
    return true;
}

static _Thread_local uint64_t ag_epoch;

/* Exclusively owned: nobody else can see a write into it. */
static bool ag_exclusive(const graft_tensor *t) {
    return t->refcount == 1 && t->storage->refcount == 1 && !t->autograd && graft_tensor_is_contiguous(t) &&
           (size_t)graft_tensor_numel(t) * graft_dtype_size(t->dtype) == t->storage->nbytes;
}

/* *slot += g (taking over g): the first gradient is kept as it is, later ones are added
 * in place when *slot is exclusively ours. */
static graft_status ag_accumulate(graft_tensor **slot, graft_tensor *g) {
    if (!*slot) {
        *slot = g;
        return GRAFT_OK;
    }
    graft_status st;
    if (ag_exclusive(*slot)) {
        st = graft_binary_(*slot, GRAFT_EW_ADD, graft_operand_tensor(g), NULL);
    } else {
        graft_tensor *sum;
        st = graft_add(&sum, *slot, g);
        if (!st) {
            graft_tensor_release(*slot);
            *slot = sum;
        }
    }
    graft_tensor_release(g);
    return st;
}

/* A leaf's (or retained) .grad: stored as a private tensor the first time (the engine's
 * buffers may be views or shared), added in place afterwards, as PyTorch. */
static graft_status ag_accumulate_grad(ag_meta *m, graft_tensor *g, bool in_place) {
    graft_status st;
    if (!m->grad) {
        if (ag_exclusive(g)) {
            graft_tensor_retain(g);
            m->grad = g;
            return GRAFT_OK;
        }
        return graft_tensor_clone(&m->grad, g);
    }
    if (in_place && graft_tensor_is_contiguous(m->grad))
        return graft_binary_(m->grad, GRAFT_EW_ADD, graft_operand_tensor(g), NULL);
    graft_tensor *sum;
    if ((st = graft_add(&sum, m->grad, g))) return st;
    graft_tensor_release(m->grad);
    m->grad = sum;
    return GRAFT_OK;
}

/* A hook's replacement r for g: same shape, dtype and device (PyTorch checks the same). */
static graft_status ag_hook_check(const graft_tensor *r, const graft_tensor *g) {
    char a[SHAPE_BUF], b[SHAPE_BUF];
    bool same = r->ndim == g->ndim;
    for (int d = 0; same && d < g->ndim; d++) same = r->shape[d] == g->shape[d];
    if (!same)
        return graft_error(GRAFT_ESHAPE, "register_hook: the hook returned a gradient of shape %s for a tensor of "
                                         "shape %s",
                           graft_shape_str(r->ndim, r->shape, a, sizeof a), graft_shape_str(g->ndim, g->shape, b, sizeof b));
    if (r->dtype != g->dtype)
        return graft_error(GRAFT_ETYPE, "register_hook: the hook returned a gradient of dtype %s for a tensor of "
                                        "dtype %s",
                           graft_dtype_name(r->dtype), graft_dtype_name(g->dtype));
    if (!graft_device_eq(graft_tensor_device(r), graft_tensor_device(g)))
        return graft_error(GRAFT_EDEVICE, "register_hook: the hook returned a gradient on another device than the "
                                          "tensor's");
    return GRAFT_OK;
}

/* Runs the hooks of l in order on g (borrowed), each on the previous one's result. With
 * rn (a node whose output retains its grad), the retained .grad is stored at its place
 * in the order. *out: +1, the gradient that goes on. The hooks are walked from a copy of
 * the list, so a hook that registers or removes hooks does not disturb this walk (a
 * removed one is skipped). */
static graft_status ag_hooks_apply(ag_hook_list *l, graft_tensor *g, ag_node *rn, graft_tensor **out) {
    graft_hook *snap_stack[8], **snap = snap_stack;
    int k = l->n;
    *out = NULL;
    if (k > 8 && !(snap = malloc(sizeof *snap * (size_t)k))) return graft_error(GRAFT_ENOMEM, "backward: out of memory");
    for (int i = 0; i < k; i++) {
        snap[i] = l->v[i];
        snap[i]->refcount++;
    }
    graft_status st = GRAFT_OK;
    graft_tensor *cur = g;
    graft_tensor_retain(cur);
    bool retained = !rn;
    for (int i = 0; i < k && !st; i++) {
        graft_hook *h = snap[i];
        if (h->removed) continue;
        if (!retained && h->id >= rn->retain_before) {
            retained = true;
            if (rn->retain && (st = ag_accumulate_grad(rn->retain, cur, false))) break;
        }
        graft_tensor *r = NULL;
        st = h->fn(h->ctx, cur, &r);
        if (!st && r) st = ag_hook_check(r, cur);
        if (!st && r && r->autograd) {
            /* stored and passed on detached: a gradient with history could close a cycle */
            graft_tensor *d;
            st = graft_detach(&d, r);
            graft_tensor_release(r);
            r = st ? NULL : d;
        }
        if (st || !r) {
            graft_tensor_release(r);
            continue;
        }
        graft_tensor_release(cur);
        cur = r;
    }
    if (!st && !retained && rn->retain) st = ag_accumulate_grad(rn->retain, cur, false);
    for (int i = 0; i < k; i++) graft_hook_release(snap[i]);
    if (snap != snap_stack) free(snap);
    if (st) graft_tensor_release(cur);
    else *out = cur;
    return st;
}

/* Brings a rule's gradient for input i to the input's shape and dtype. */
static graft_status ag_fix_grad(ag_node *n, int i, graft_tensor **gp) {
    const ag_input *in = &n->in[i];
    graft_tensor *g = *gp;
    bool same = g->ndim == in->ndim;
    for (int d = 0; same && d < in->ndim; d++) same = g->shape[d] == in->shape[d];
    if (!same) {
        int mark = ag_pool_mark();
        graft_tensor *r = ag_keep(ag_sum_to(g, in->ndim, in->shape));
        graft_status st = ag_pool_unwind(mark);
        if (!r) {
            char a[SHAPE_BUF], b[SHAPE_BUF];
            if (!st)
                st = graft_error(GRAFT_EINTERNAL, "autograd: %s gave a gradient of shape %s for input %d of shape %s",
                                 n->kind->name, graft_shape_str(g->ndim, g->shape, a, sizeof a), i + 1,
                                 graft_shape_str(in->ndim, in->shape, b, sizeof b));
            return st;
        }
        graft_tensor_release(g);
        *gp = g = r;
    }
    if (g->dtype != in->dtype) {
        graft_tensor *c;
        graft_status st = graft_tensor_to_dtype(&c, g, in->dtype);
        if (st) return st;
        graft_tensor_release(g);
        *gp = c;
    }
    return GRAFT_OK;
}

/* Runs one node on its summed gradient g (NULL when none arrived): hooks, the rule,
 * then hands each input gradient to the next node, pushing those now ready. */
static graft_status ag_run_node(ag_node *n, graft_tensor *g, bool retain_graph, ag_vec *ready) {
    graft_status st = GRAFT_OK;
    graft_tensor *hooked = NULL; /* +1: g after the hooks, when there are hooks */
    if (n->leaf) {
        ag_meta *m = ag_meta_of(n->leaf);
        if (g && m && m->hooks.n) {
            st = ag_hooks_apply(&m->hooks, g, NULL, &hooked);
            g = hooked;
        }
        if (g && !st && m && m->requires_grad) st = ag_accumulate_grad(m, g, true);
        graft_tensor_release(hooked);
        return st;
    }
    if (g && n->hooks.n) {
        st = ag_hooks_apply(&n->hooks, g, n, &hooked);
        g = hooked;
    } else if (g && n->retain) {
        st = ag_accumulate_grad(n->retain, g, false);
    }
    graft_tensor *gin_stack[4] = {NULL}, **gin = gin_stack;
    if (n->n_in > 4 && !(gin = calloc((size_t)n->n_in, sizeof *gin))) {
        graft_tensor_release(hooked);
        return graft_error(GRAFT_ENOMEM, "backward: out of memory");
    }
    if (g && !st) {
        int mark = ag_pool_mark();
        ag_device = graft_tensor_device(g);
        st = n->kind->apply(n, g, gin);
        graft_status pst = ag_pool_unwind(mark);
        if (!st) st = pst;
        ag_counters.nodes_run++;
    }
    if (!retain_graph && !st) ag_release_saved(n);
    for (int i = 0; i < n->n_in; i++) {
        graft_tensor *gi = gin[i];
        gin[i] = NULL;
        ag_node *e = n->in[i].next;
        if (gi && !e) {
            ag_counters.grads_unused++;
            graft_tensor_release(gi);
            gi = NULL;
        }
        if (gi && !st) {
            ag_counters.grads_computed++;
            st = ag_fix_grad(n, i, &gi);
            if (!st) {
                st = ag_accumulate(&e->buf, gi);
                gi = NULL;
            }
        }
        graft_tensor_release(gi);
        if (e && !st && --e->deps == 0 && !ag_vec_push(ready, e))
            st = graft_error(GRAFT_ENOMEM, "backward: out of memory");
    }
    if (gin != gin_stack) free(gin);
    graft_tensor_release(hooked);
    return st;
}

/* Backward from root with gradient g (taken over). */
static graft_status ag_run(ag_node *root, graft_tensor *g, bool retain_graph) {
    uint64_t ep = ++ag_epoch;
    ag_vec all = {0}, stack = {0};
    graft_status st = GRAFT_OK;
    root->epoch = ep;
    root->deps = 0;
    if (!ag_vec_push(&stack, root)) st = graft_error(GRAFT_ENOMEM, "backward: out of memory");
    /* 1: every node reachable from the root, with the number of edges into each */
    while (!st && stack.n) {
        ag_node *n = stack.v[--stack.n];
        if (!ag_vec_push(&all, n)) {
            st = graft_error(GRAFT_ENOMEM, "backward: out of memory");
            break;
        }
        graft_tensor_release(n->buf);
        n->buf = NULL;
        for (int i = 0; i < n->n_in; i++) {
            ag_node *e = n->in[i].next;
            if (!e) continue;
            if (e->epoch != ep) {
                e->epoch = ep;
                e->deps = 0;
                if (!ag_vec_push(&stack, e)) {
                    st = graft_error(GRAFT_ENOMEM, "backward: out of memory");
                    break;
                }
            }
            e->deps++;
        }
    }
    /* 2: run nodes as their last gradient arrives */
    stack.n = 0;
    if (!st) {
        root->buf = g;
        g = NULL;
        ag_vec_push(&stack, root);
    }
    while (!st && stack.n) {
        ag_node *n = stack.v[--stack.n];
        graft_tensor *gn = n->buf;
        n->buf = NULL;
        st = ag_run_node(n, gn, retain_graph, &stack);
        graft_tensor_release(gn);
    }
    for (int64_t i = 0; i < all.n; i++) {
        graft_tensor_release(all.v[i]->buf);
        all.v[i]->buf = NULL;
    }
    graft_tensor_release(g);
    free(all.v);
    free(stack.v);
    return st;
}

graft_status graft_backward(graft_tensor *t, graft_tensor *grad, bool retain_graph) {
    char a[SHAPE_BUF], b[SHAPE_BUF];
    if (!ag_requires(t))
        return graft_error(GRAFT_EINVAL, "backward: element 0 of tensors does not require grad and does not have a "
                                         "grad_fn");
    graft_tensor *g = NULL;
    graft_status st;
    bool prev = graft_set_grad_enabled(false);
    if (grad) {
        bool same = grad->ndim == t->ndim;
        for (int i = 0; same && i < t->ndim; i++) same = grad->shape[i] == t->shape[i];
        if (!same) {
            graft_set_grad_enabled(prev);
            return graft_error(GRAFT_ESHAPE, "backward: mismatch in shape: grad has a shape of %s and the tensor has "
                                             "a shape of %s",
                               graft_shape_str(grad->ndim, grad->shape, a, sizeof a),
                               graft_shape_str(t->ndim, t->shape, b, sizeof b));
        }
        if (!graft_dtype_is_float(grad->dtype)) {
            graft_set_grad_enabled(prev);
            return graft_error(GRAFT_ETYPE, "backward: grad must be floating point, got %s", graft_dtype_name(grad->dtype));
        }
        st = graft_tensor_to_dtype(&g, grad, t->dtype);
    } else {
        if (graft_tensor_numel(t) != 1) {
            graft_set_grad_enabled(prev);
            return graft_error(GRAFT_EINVAL, "backward: grad can be implicitly created only for scalar outputs "
                                             "(the tensor has shape %s)",
                               graft_shape_str(t->ndim, t->shape, a, sizeof a));
        }
        st = graft_tensor_empty(&g, t->ndim, t->shape, t->dtype, graft_tensor_device(t));
        if (!st) st = graft_tensor_fill_int_(g, 1);
    }
    ag_node *root = NULL;
    if (!st && !(root = ag_edge_of(t))) st = graft_error(GRAFT_ENOMEM, "backward: out of memory");
    if (!st) {
        st = ag_run(root, g, retain_graph);
        g = NULL;
    }
    graft_node_release(root);
    graft_tensor_release(g);
    graft_set_grad_enabled(prev);
    return st;
}
