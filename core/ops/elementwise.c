/* graft ops: the elementwise front ends. Each one checks devices and dtypes, works out
 * the result and compute dtypes (PyTorch 1.13's result_type), casts inputs that need
 * it, allocates the output and runs a CPU loop from core/cpu/elementwise_*.c: directly
 * for small contiguous operands (the per-call cost matters for tiny tensors), through
 * graft_iter (broadcasting, strides, threads) otherwise. On CUDA the same plan runs the
 * kernels of core/cuda/elementwise.cu; 0-dim CPU tensors join CUDA ones as scalars. */
#include "ops/elementwise.h"

#include <stdio.h>
#include <string.h>

#include "autograd/record.h"
#include "cpu/elementwise_kernels.h"
#include "cuda/elementwise.h"
#include "tensor/iter.h"

#define EW_NAME(E, name) name,
#define EW_NAME_(E, name) name "_",
static const char *const binary_names[GRAFT_EW_NBINARY] = {GRAFT_BINARY_OPS(EW_NAME)};
static const char *const unary_names[GRAFT_EW_NUNARY] = {GRAFT_UNARY_OPS(EW_NAME)};
static const char *const binary_names_[GRAFT_EW_NBINARY] = {GRAFT_BINARY_OPS(EW_NAME_)};
static const char *const unary_names_[GRAFT_EW_NUNARY] = {GRAFT_UNARY_OPS(EW_NAME_)};
#undef EW_NAME
#undef EW_NAME_

const char *graft_binary_name(graft_binary_op op) {
    return (unsigned)op < GRAFT_EW_NBINARY ? binary_names[op] : "?";
}
const char *graft_unary_name(graft_unary_op op) {
    return (unsigned)op < GRAFT_EW_NUNARY ? unary_names[op] : "?";
}

/* ---- type promotion ---- */

static int ew_promote(int a, graft_dtype b) { return a < 0 ? (int)b : (int)graft_dtype_promote((graft_dtype)a, b); }

/* PyTorch's combine_categories: the higher-priority result wins unless the lower one
 * brings a higher category (or the higher one is bool). -1 is "undefined". */
static int ew_combine(int higher, int lower) {
    if (higher < 0) return lower;
    if (lower < 0 || graft_dtype_is_float((graft_dtype)higher)) return higher;
    if (higher == GRAFT_BOOL || graft_dtype_is_float((graft_dtype)lower)) return ew_promote(higher, (graft_dtype)lower);
    return higher;
}

graft_dtype graft_result_type(int n, const graft_operand *ops) {
    int dim = -1, zero = -1, wrapped = -1;
    for (int i = 0; i < n; i++) {
        const graft_tensor *t = ops[i].t;
        if (t && t->ndim > 0) dim = ew_promote(dim, t->dtype);
        else if (t) zero = ew_promote(zero, t->dtype);
        else wrapped = ew_promote(wrapped, ops[i].s.dtype == GRAFT_F64 ? GRAFT_F32 : ops[i].s.dtype);
    }
    int r = ew_combine(dim, ew_combine(zero, wrapped));
    return r < 0 ? GRAFT_F32 : (graft_dtype)r;
}

bool graft_can_cast(graft_dtype from, graft_dtype to) {
    if (graft_dtype_is_float(from) && !graft_dtype_is_float(to)) return false;
    if (from != GRAFT_BOOL && to == GRAFT_BOOL) return false;
    return true;
}

const char *graft_dtype_torch_name(graft_dtype d) {
    static const char *const names[GRAFT_NDTYPES] = {
        [GRAFT_F32] = "Float", [GRAFT_F64] = "Double", [GRAFT_F16] = "Half", [GRAFT_BF16] = "BFloat16",
        [GRAFT_I64] = "Long",  [GRAFT_I32] = "Int",    [GRAFT_I16] = "Short", [GRAFT_I8] = "Char",
        [GRAFT_U8] = "Byte",   [GRAFT_BOOL] = "Bool"};
    return (unsigned)d < GRAFT_NDTYPES ? names[d] : "?";
}

/* ---- shared machinery ---- */

/* A scalar operand as a 0-dim tensor on the stack (never retained or released), so
 * the iterator sees it as a stride-0 operand. */
typedef struct {
    graft_storage storage;
    graft_tensor t;
    uint64_t buf;
} ew_scalar_tensor;

static void ew_scalar_store(void *buf, graft_dtype d, const graft_scalar *s) {
    if (s->dtype == GRAFT_F64) graft_store_f64(buf, d, s->f);
    else graft_store_i64(buf, d, s->i);
}

static graft_tensor *ew_scalar_tensor_init(ew_scalar_tensor *st, graft_dtype d, const graft_scalar *s,
                                           graft_device dev) {
    memset(&st->storage, 0, sizeof st->storage);
    st->storage.refcount = 1;
    st->storage.data = &st->buf;
    st->storage.nbytes = sizeof st->buf;
    st->storage.device = dev;
    st->storage.kind = GRAFT_STORAGE_BORROWED;
    st->t.refcount = 1;
    st->t.storage = &st->storage;
    st->t.offset = 0;
    st->t.ndim = 0;
    st->t.dtype = d;
    st->t.autograd = NULL;
    st->t.autograd_free = NULL;
    st->buf = 0;
    ew_scalar_store(&st->buf, d, s);
    return &st->t;
}

/* An input in the compute dtype: the tensor itself, a converted copy (owned), or a
 * stack scalar. */
typedef struct {
    graft_tensor *t;
    graft_tensor *owned;
    ew_scalar_tensor sc;
} ew_input;

static graft_status ew_input_prepare(ew_input *in, const graft_operand *op, graft_dtype cd, graft_device dev) {
    in->owned = NULL;
    if (!op->t) {
        in->t = ew_scalar_tensor_init(&in->sc, cd, &op->s, dev);
        return GRAFT_OK;
    }
    if (op->t->dtype == cd) {
        in->t = op->t;
        return GRAFT_OK;
    }
    graft_status st = graft_tensor_to_dtype(&in->owned, op->t, cd);
    in->t = in->owned;
    return st;
}

static bool ew_same_shape(const graft_tensor *a, const graft_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

/* Runs fn over ops[0]'s shape. Small iterations whose operands are all contiguous with
 * the output's shape (or single elements, read with stride 0) call the loop directly:
 * building an iterator costs more than adding four floats. */
static graft_status ew_run(graft_tensor *const *ops, int nops, graft_loop_fn fn, void *ctx) {
    graft_tensor *out = ops[0];
    int64_t n = graft_tensor_numel(out);
    if (n < GRAFT_PARALLEL_GRAIN && graft_tensor_is_contiguous(out)) {
        char *d[GRAFT_ITER_MAX_OPS];
        int64_t s[GRAFT_ITER_MAX_OPS];
        bool direct = true;
        for (int k = 0; k < nops && direct; k++) {
            graft_tensor *t = ops[k];
            d[k] = graft_tensor_data(t);
            if (k > 0 && graft_tensor_numel(t) == 1) s[k] = 0;
            else if (k == 0 || (ew_same_shape(t, out) && graft_tensor_is_contiguous(t)))
                s[k] = (int64_t)graft_dtype_size(t->dtype);
            else direct = false;
        }
        if (direct) {
            if (n > 0) fn(d, s, n, ctx);
            return GRAFT_OK;
        }
    }
    graft_iter it;
    graft_status st = graft_iter_init(&it, nops, ops, out->ndim, out->shape);
    if (st) return st;
    graft_iter_run(&it, fn, ctx);
    return GRAFT_OK;
}

/* A 0-dim CPU tensor: PyTorch lets it join tensors of another device, as a scalar. */
static bool ew_cpu_scalar(const graft_tensor *t) {
    return t->ndim == 0 && graft_tensor_device(t).type == GRAFT_CPU;
}

/* The device an op runs on: the one device of its tensors, 0-dim CPU tensors aside
 * (those may join CUDA tensors); the first nfixed tensors (written ones) always count.
 * All-CPU-scalar operands run on the CPU. */
static graft_status ew_check_devices(const char *name, graft_tensor *const *ts, int n, int nfixed, graft_device *dev) {
    int first = -1, any = -1;
    for (int i = 0; i < n; i++) {
        if (!ts[i]) continue;
        any = i;
        if (i >= nfixed && ew_cpu_scalar(ts[i])) continue;
        if (first < 0) {
            first = i;
            *dev = graft_tensor_device(ts[i]);
        } else if (!graft_device_eq(*dev, graft_tensor_device(ts[i]))) {
            char b1[16], b2[16];
            return graft_error(GRAFT_EDEVICE, "%s: expected all tensors to be on the same device, but found %s and %s",
                               name, graft_device_str(*dev, b1), graft_device_str(graft_tensor_device(ts[i]), b2));
        }
    }
    if (any < 0) return graft_error(GRAFT_EINVAL, "%s: expected at least one tensor", name);
    if (first < 0) *dev = graft_cpu;
    return GRAFT_OK;
}

/* ---- the CUDA side ---- */

/* The value of a 0-dim CPU tensor as a scalar of its category. */
static graft_scalar ew_scalar_of(const graft_tensor *t) {
    const void *p = graft_tensor_data(t);
    if (graft_dtype_is_float(t->dtype)) return graft_scalar_float(graft_load_f64(p, t->dtype));
    if (t->dtype == GRAFT_BOOL) return graft_scalar_bool(graft_load_i64(p, t->dtype) != 0);
    return graft_scalar_int(graft_load_i64(p, t->dtype));
}

/* An operand for a CUDA launcher: a device tensor in the compute dtype cd (*owned when
 * converted), or a scalar (a number or a 0-dim CPU tensor) rounded to cd as the CPU
 * rounds it (stored in cd, read back). */
static graft_status ew_cuda_operand(graft_cuda_operand *o, graft_tensor **owned, const graft_operand *op,
                                    graft_dtype cd) {
    *owned = NULL;
    o->t = NULL;
    o->f = 0;
    o->i = 0;
    if (op->t && !ew_cpu_scalar(op->t)) {
        if (op->t->dtype == cd) {
            o->t = op->t;
            return GRAFT_OK;
        }
        graft_status st = graft_tensor_to_dtype(owned, op->t, cd);
        o->t = *owned;
        return st;
    }
    graft_scalar s = op->t ? ew_scalar_of(op->t) : op->s;
    uint64_t buf = 0;
    ew_scalar_store(&buf, cd, &s);
    if (graft_dtype_is_float(cd)) o->f = graft_load_f64(&buf, cd);
    else o->i = graft_load_i64(&buf, cd);
    return GRAFT_OK;
}

/* Writing into self is refused when two of its elements share memory (an expanded
 * tensor), as PyTorch does. */
static graft_status ew_check_writable(const graft_tensor *self, const char *name) {
    for (int i = 0; i < self->ndim; i++)
        if (self->stride[i] == 0 && self->shape[i] > 1)
            return graft_error(GRAFT_EINVAL,
                               "%s: unsupported operation: more than one element of the written-to tensor "
                               "refers to a single memory location. Please clone() the tensor first",
                               name);
    return GRAFT_OK;
}

static graft_status ew_check_cast(graft_dtype result, const graft_tensor *self, const char *name) {
    if (!graft_can_cast(result, self->dtype))
        return graft_error(GRAFT_ETYPE, "%s: result type %s can't be cast to the desired output type %s", name,
                           graft_dtype_torch_name(result), graft_dtype_torch_name(self->dtype));
    return GRAFT_OK;
}

/* An in-place result of shape (ndim, shape) must have self's shape exactly. */
static graft_status ew_check_inplace_shape(const graft_tensor *self, int ndim, const int64_t *shape,
                                           const char *name) {
    bool same = ndim == self->ndim;
    for (int i = 0; same && i < ndim; i++) same = shape[i] == self->shape[i];
    if (same) return GRAFT_OK;
    char b1[GRAFT_MAX_DIMS * 24 + 3], b2[GRAFT_MAX_DIMS * 24 + 3];
    return graft_error(GRAFT_ESHAPE, "%s: output with shape %s doesn't match the broadcast shape %s", name,
                       graft_shape_str(self->ndim, self->shape, b1, sizeof b1), graft_shape_str(ndim, shape, b2, sizeof b2));
}

/* b, when it overlaps self without being the very same view, is read from a copy so
 * every element is read before it is written. */
static graft_status ew_unalias(graft_operand *b, graft_tensor *self, graft_tensor **owned) {
    *owned = NULL;
    graft_tensor *t = b->t;
    if (!t || t->storage != self->storage) return GRAFT_OK;
    bool same = t->offset == self->offset && t->dtype == self->dtype && ew_same_shape(t, self);
    for (int i = 0; same && i < t->ndim; i++) same = t->stride[i] == self->stride[i] || t->shape[i] == 1;
    if (same) return GRAFT_OK;
    graft_status st = graft_tensor_clone(owned, t);
    if (st == GRAFT_OK) b->t = *owned;
    return st;
}

/* ---- binary ---- */

static bool ew_is_pred(graft_binary_op op) { return op >= GRAFT_EW_EQ; }

static graft_dtype ew_operand_dtype(const graft_operand *o) { return o->t ? o->t->dtype : o->s.dtype; }

typedef struct {
    graft_dtype cd, od;  /* compute and output dtypes */
    graft_loop_fn fn;
    graft_ew_ctx ctx;
    graft_device dev;
} ew_plan;

/* Decides dtypes and the loop, and rejects what PyTorch rejects. */
static graft_status ew_binary_plan(ew_plan *p, graft_binary_op op, const graft_operand *a, const graft_operand *b,
                                   const graft_scalar *alpha, const char *name, int nfixed) {
    graft_tensor *ts[2] = {a->t, b->t};
    graft_status st = ew_check_devices(name, ts, 2, nfixed, &p->dev);
    if (st) return st;
    graft_operand ops[2] = {*a, *b};
    graft_dtype rt = graft_result_type(2, ops);
    graft_dtype da = ew_operand_dtype(a), db = ew_operand_dtype(b);
    if (op == GRAFT_EW_SUB && da == GRAFT_BOOL && db == GRAFT_BOOL)
        return graft_error(GRAFT_ETYPE, "%s: subtraction, the `-` operator, with two bool tensors is not supported. "
                                        "Use the `^` or `logical_xor()` operator instead", name);
    if (op == GRAFT_EW_SUB && (da == GRAFT_BOOL || db == GRAFT_BOOL))
        return graft_error(GRAFT_ETYPE, "%s: subtraction, the `-` operator, with a bool tensor is not supported. "
                                        "If you are trying to invert a mask, use the `~` or `logical_not()` operator instead",
                           name);
    p->cd = rt;
    if (op == GRAFT_EW_DIV && !graft_dtype_is_float(rt)) p->cd = GRAFT_F32;
    p->od = ew_is_pred(op) ? GRAFT_BOOL : p->cd;
    p->fn = graft_cpu_binary_loops[op][p->cd];
    if (!p->fn) return graft_error(GRAFT_ETYPE, "%s: not supported for %s", name, graft_dtype_name(p->cd));
    if (op == GRAFT_EW_POW && !b->t && b->s.dtype == GRAFT_I64 && b->s.i < 0 && !graft_dtype_is_float(p->cd))
        return graft_error(GRAFT_EINVAL, "%s: integers to negative integer powers are not allowed", name);
    memset(&p->ctx, 0, sizeof p->ctx);
    p->ctx.alpha_f = 1;
    p->ctx.alpha_i = 1;
    if (op == GRAFT_EW_ADD || op == GRAFT_EW_SUB) {
        if (alpha) {
            if (!graft_dtype_is_float(p->cd) && alpha->dtype == GRAFT_F64)
                return graft_error(GRAFT_EINVAL, "%s: for integral input tensors, argument alpha must not be a "
                                                 "floating point number", name);
            if (p->cd != GRAFT_BOOL && alpha->dtype == GRAFT_BOOL)
                return graft_error(GRAFT_EINVAL, "%s: boolean alpha only supported for boolean results", name);
            /* alpha is rounded to the compute dtype first, as PyTorch's alpha.to<scalar_t>() */
            if (graft_dtype_is_float(p->cd)) {
                uint64_t buf = 0;
                ew_scalar_store(&buf, p->cd, alpha);
                p->ctx.alpha_f = graft_load_f64(&buf, p->cd);
            }
            p->ctx.alpha_i = alpha->i;
        }
        if (op == GRAFT_EW_SUB) {
            p->ctx.alpha_f = -p->ctx.alpha_f;
            p->ctx.alpha_i = (int64_t)(0 - (uint64_t)p->ctx.alpha_i);
        }
        if (p->cd == GRAFT_BOOL) p->ctx.alpha_i = p->ctx.alpha_i != 0;
    }
    return GRAFT_OK;
}

static graft_status ew_zero_div(const char *name) {
    return graft_error(GRAFT_EINVAL, "%s: ZeroDivisionError (integer division by zero)", name);
}

/* out <- a op b on CUDA (out: the fresh result, or self with a = self). Integer
 * divisions by a scalar zero fail before the launch; by a tensor holding a zero, after
 * it (the kernel raises a flag, which costs a wait for the device). */
static graft_status ew_cuda_binary(graft_tensor *out, graft_binary_op op, const graft_operand *a,
                                   const graft_operand *b, const ew_plan *p, const char *name) {
    graft_cuda_operand ca, cb;
    graft_tensor *oa = NULL, *ob = NULL;
    int zd = 0;
    bool intdiv = !graft_dtype_is_float(p->cd) && (op == GRAFT_EW_DIV_TRUNC || op == GRAFT_EW_FLOOR_DIVIDE ||
                                                   op == GRAFT_EW_REMAINDER || op == GRAFT_EW_FMOD);
    graft_status st;
    if ((st = ew_cuda_operand(&ca, &oa, a, p->cd)) || (st = ew_cuda_operand(&cb, &ob, b, p->cd))) goto done;
    if (intdiv && !cb.t && cb.i == 0) {
        if (graft_tensor_numel(out) > 0) st = ew_zero_div(name);
        goto done;
    }
    st = graft_cuda_binary(out, (int)op, p->cd, &ca, &cb, p->ctx.alpha_f, p->ctx.alpha_i, intdiv ? &zd : NULL);
    if (!st && zd) st = ew_zero_div(name);
done:
    graft_tensor_release(oa);
    graft_tensor_release(ob);
    return st;
}

/* Broadcast shape of two operands (scalars are 0-dim). */
static graft_status ew_broadcast2(int *ndim, int64_t *shape, const graft_operand *a, const graft_operand *b,
                                 const char *name) {
    static const int64_t none[1] = {1};
    return graft_broadcast_shapes(ndim, shape, a->t ? a->t->ndim : 0, a->t ? a->t->shape : none,
                                  b->t ? b->t->ndim : 0, b->t ? b->t->shape : none, name);
}

/* ---- the fast lane ----
 * Tiny ops from Lua are dominated by fixed costs, so the commonest case skips the
 * general planning: one tensor dtype, one shape, all contiguous, on the CPU, small, and
 * any scalar of a category that does not promote (t * 2, t + u). Anything else, errors
 * included, takes the general path, which reaches the same result more slowly. */
typedef struct {
    graft_loop_fn fn;
    graft_dtype cd;
    const graft_tensor *like;  /* the tensor giving shape and dtype */
    int64_t n;
    char *d[3];
    int64_t s[3];
    uint64_t sbuf;
    graft_ew_ctx ctx;
} ew_fast;

static int ew_category(graft_dtype d) { return d == GRAFT_BOOL ? 0 : graft_dtype_is_float(d) ? 2 : 1; }

static bool ew_fast_plan(ew_fast *f, graft_binary_op op, const graft_operand *a, const graft_operand *b,
                         const graft_scalar *alpha) {
    const graft_tensor *t = a->t ? a->t : b->t;
    if (alpha || !t || t->storage->device.type != GRAFT_CPU || !graft_tensor_is_contiguous(t)) return false;
    graft_dtype d = t->dtype;
    int64_t n = graft_tensor_numel(t);
    if (n >= GRAFT_PARALLEL_GRAIN) return false;
    int64_t esz = (int64_t)graft_dtype_size(d);
    const graft_operand *o[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        const graft_tensor *u = o[k]->t;
        if (u) {
            if (u != t && (u->dtype != d || u->storage->device.type != GRAFT_CPU || !ew_same_shape(u, t) ||
                           !graft_tensor_is_contiguous(u)))
                return false;
            f->d[k + 1] = graft_tensor_data(u);
            f->s[k + 1] = esz;
        } else {
            graft_dtype sd = o[k]->s.dtype;
            if (ew_category(sd) > ew_category(d) || (op == GRAFT_EW_SUB && sd == GRAFT_BOOL)) return false;
            if (op == GRAFT_EW_POW && sd == GRAFT_I64 && o[k]->s.i < 0 && !graft_dtype_is_float(d)) return false;
            f->sbuf = 0;
            ew_scalar_store(&f->sbuf, d, &o[k]->s);
            f->d[k + 1] = (char *)&f->sbuf;
            f->s[k + 1] = 0;
        }
    }
    if ((op == GRAFT_EW_SUB && d == GRAFT_BOOL) || (op == GRAFT_EW_DIV && !graft_dtype_is_float(d))) return false;
    f->fn = graft_cpu_binary_loops[op][d];
    if (!f->fn) return false;
    f->cd = d;
    f->like = t;
    f->n = n;
    memset(&f->ctx, 0, sizeof f->ctx);
    f->ctx.alpha_f = op == GRAFT_EW_SUB ? -1 : 1;
    f->ctx.alpha_i = op == GRAFT_EW_SUB ? -1 : 1;
    return true;
}

graft_status graft_binary(graft_tensor **out, graft_binary_op op, graft_operand a, graft_operand b,
                          const graft_scalar *alpha) {
    if (GRAFT_AG_ACTIVE(GRAFT_AG_T(a.t) || GRAFT_AG_T(b.t))) return graft_ag_binary(out, op, a, b, alpha);
    *out = NULL;
    if ((unsigned)op >= GRAFT_EW_NBINARY) return graft_error(GRAFT_EINVAL, "binary: unknown op %d", (int)op);
    const char *name = binary_names[op];
    ew_fast f;
    if (ew_fast_plan(&f, op, &a, &b, alpha)) {
        graft_tensor *res;
        graft_status st = graft_tensor_empty(&res, f.like->ndim, f.like->shape, ew_is_pred(op) ? GRAFT_BOOL : f.cd,
                                             graft_cpu);
        if (st) return st;
        f.d[0] = graft_tensor_data(res);
        f.s[0] = (int64_t)graft_dtype_size(res->dtype);
        if (f.n > 0) f.fn(f.d, f.s, f.n, &f.ctx);
        if (f.ctx.zero_div) {
            graft_tensor_release(res);
            return ew_zero_div(name);
        }
        *out = res;
        return GRAFT_OK;
    }
    ew_plan p;
    graft_status st = ew_binary_plan(&p, op, &a, &b, alpha, name, 0);
    if (st) return st;
    int ndim;
    int64_t shape[GRAFT_MAX_DIMS];
    st = ew_broadcast2(&ndim, shape, &a, &b, name);
    if (st) return st;
    ew_input ia, ib;
    ib.owned = NULL;
    graft_tensor *res = NULL;
    if (p.dev.type == GRAFT_CUDA) {
        if ((st = graft_tensor_empty(&res, ndim, shape, p.od, p.dev))) return st;
        if ((st = ew_cuda_binary(res, op, &a, &b, &p, name))) graft_tensor_release(res);
        else *out = res;
        return st;
    }
    if ((st = ew_input_prepare(&ia, &a, p.cd, p.dev)) || (st = ew_input_prepare(&ib, &b, p.cd, p.dev)) ||
        (st = graft_tensor_empty(&res, ndim, shape, p.od, p.dev)))
        goto done;
    graft_tensor *ops[3] = {res, ia.t, ib.t};
    if ((st = ew_run(ops, 3, p.fn, &p.ctx))) goto done;
    if (p.ctx.zero_div) st = ew_zero_div(name);
done:
    graft_tensor_release(ia.owned);
    graft_tensor_release(ib.owned);
    if (st) graft_tensor_release(res);
    else *out = res;
    return st;
}

graft_status graft_binary_(graft_tensor *self, graft_binary_op op, graft_operand b, const graft_scalar *alpha) {
    if (GRAFT_AG_ACTIVE(self->autograd || GRAFT_AG_T(b.t))) return graft_ag_binary_(self, op, b, alpha);
    if ((unsigned)op >= GRAFT_EW_NBINARY) return graft_error(GRAFT_EINVAL, "binary: unknown op %d", (int)op);
    const char *name = binary_names_[op];
    graft_operand a = graft_operand_tensor(self);
    ew_fast f;
    if (!ew_is_pred(op) && (!b.t || b.t->storage != self->storage || b.t->offset == self->offset) &&
        ew_fast_plan(&f, op, &a, &b, alpha)) {
        f.d[0] = f.d[1];
        f.s[0] = f.s[1];
        if (f.n > 0) f.fn(f.d, f.s, f.n, &f.ctx);
        graft_tensor_bump(self);
        return f.ctx.zero_div ? ew_zero_div(name) : GRAFT_OK;
    }
    ew_plan p;
    graft_status st = ew_binary_plan(&p, op, &a, &b, alpha, name, 1);
    if (st) return st;
    if ((st = ew_check_cast(p.od, self, name))) return st;
    int ndim;
    int64_t shape[GRAFT_MAX_DIMS];
    if ((st = ew_broadcast2(&ndim, shape, &a, &b, name))) return st;
    if ((st = ew_check_inplace_shape(self, ndim, shape, name))) return st;
    if ((st = ew_check_writable(self, name))) return st;
    graft_tensor *copy = NULL, *tmp = NULL;
    ew_input ib;
    ib.owned = NULL;
    if ((st = ew_unalias(&b, self, &copy))) goto done;
    if (p.cd == self->dtype && p.od == self->dtype && p.dev.type == GRAFT_CUDA) {
        st = ew_cuda_binary(self, op, &a, &b, &p, name);
        graft_tensor_bump(self);
    } else if (p.cd == self->dtype && p.od == self->dtype) {
        /* the common case: compute straight into self */
        if ((st = ew_input_prepare(&ib, &b, p.cd, p.dev))) goto done;
        graft_tensor *ops[3] = {self, self, ib.t};
        if ((st = ew_run(ops, 3, p.fn, &p.ctx))) goto done;
        if (p.ctx.zero_div) st = ew_zero_div(name);
        graft_tensor_bump(self);
    } else {
        /* a wider compute dtype: compute, then cast into self */
        if ((st = graft_binary(&tmp, op, a, b, alpha))) goto done;
        st = graft_tensor_copy_(self, tmp);
    }
done:
    graft_tensor_release(ib.owned);
    graft_tensor_release(copy);
    graft_tensor_release(tmp);
    return st;
}

/* ---- unary ---- */

static bool ew_unary_is_float_op(graft_unary_op op) {
    switch (op) {
    case GRAFT_EW_EXP: case GRAFT_EW_LOG: case GRAFT_EW_LOG1P: case GRAFT_EW_SQRT: case GRAFT_EW_RSQRT:
    case GRAFT_EW_SIN: case GRAFT_EW_COS: case GRAFT_EW_TANH: case GRAFT_EW_SIGMOID:
    case GRAFT_EW_RECIPROCAL: case GRAFT_EW_EXPM1: case GRAFT_EW_LOG2: case GRAFT_EW_LOG10:
    case GRAFT_EW_ERF: case GRAFT_EW_ERFC:
        return true;
    default:
        return false;
    }
}

static bool ew_unary_is_pred(graft_unary_op op) {
    return op == GRAFT_EW_ISNAN || op == GRAFT_EW_ISINF || op == GRAFT_EW_ISFINITE || op == GRAFT_EW_LOGICAL_NOT;
}

static graft_status ew_unary_plan(ew_plan *p, graft_unary_op op, graft_tensor *a, const char *name) {
    graft_status st = ew_check_devices(name, &a, 1, 1, &p->dev);
    if (st) return st;
    graft_dtype d = a->dtype;
    if (op == GRAFT_EW_NEG && d == GRAFT_BOOL)
        return graft_error(GRAFT_ETYPE, "%s: negation, the `-` operator, on a bool tensor is not supported. "
                                        "If you are trying to invert a mask, use the `~` or `logical_not()` operator instead",
                           name);
    p->cd = d;
    if (ew_unary_is_float_op(op) && !graft_dtype_is_float(d)) p->cd = GRAFT_F32;
    if (op == GRAFT_EW_SQUARE && d == GRAFT_BOOL) p->cd = GRAFT_I64;
    p->od = ew_unary_is_pred(op) ? GRAFT_BOOL : p->cd;
    p->fn = graft_cpu_unary_loops[op][p->cd];
    if (!p->fn) return graft_error(GRAFT_ETYPE, "%s: not supported for %s", name, graft_dtype_name(p->cd));
    memset(&p->ctx, 0, sizeof p->ctx);
    return GRAFT_OK;
}

graft_status graft_unary(graft_tensor **out, graft_unary_op op, graft_tensor *a) {
    if (GRAFT_AG_ACTIVE(a->autograd)) return graft_ag_unary(out, op, a);
    *out = NULL;
    if ((unsigned)op >= GRAFT_EW_NUNARY) return graft_error(GRAFT_EINVAL, "unary: unknown op %d", (int)op);
    const char *name = unary_names[op];
    ew_plan p;
    graft_status st = ew_unary_plan(&p, op, a, name);
    if (st) return st;
    ew_input ia;
    graft_operand oa = graft_operand_tensor(a);
    graft_tensor *res = NULL;
    if ((st = ew_input_prepare(&ia, &oa, p.cd, p.dev))) return st;
    if ((st = graft_tensor_empty(&res, a->ndim, a->shape, p.od, p.dev))) goto done;
    if (p.dev.type == GRAFT_CUDA) {
        st = graft_cuda_unary(res, (int)op, ia.t);
        goto done;
    }
    graft_tensor *ops[2] = {res, ia.t};
    st = ew_run(ops, 2, p.fn, &p.ctx);
done:
    graft_tensor_release(ia.owned);
    if (st) graft_tensor_release(res);
    else *out = res;
    return st;
}

graft_status graft_unary_(graft_tensor *self, graft_unary_op op) {
    if (GRAFT_AG_ACTIVE(self->autograd)) return graft_ag_unary_(self, op);
    if ((unsigned)op >= GRAFT_EW_NUNARY) return graft_error(GRAFT_EINVAL, "unary: unknown op %d", (int)op);
    const char *name = unary_names_[op];
    ew_plan p;
    graft_status st = ew_unary_plan(&p, op, self, name);
    if (st) return st;
    if ((st = ew_check_cast(p.od, self, name)) || (st = ew_check_writable(self, name))) return st;
    if (p.cd == self->dtype && p.od == self->dtype) {
        graft_tensor *ops[2] = {self, self};
        st = p.dev.type == GRAFT_CUDA ? graft_cuda_unary(self, (int)op, self) : ew_run(ops, 2, p.fn, &p.ctx);
        graft_tensor_bump(self);
        return st;
    }
    graft_tensor *tmp;
    if ((st = graft_unary(&tmp, op, self))) return st;
    st = graft_tensor_copy_(self, tmp);
    graft_tensor_release(tmp);
    return st;
}

/* ---- clamp ---- */

static graft_status ew_clamp_plan(graft_dtype *rt, graft_device *dev, graft_tensor *a, const graft_operand *lo,
                                  const graft_operand *hi, const char *name, int nfixed) {
    if (!lo && !hi) return graft_error(GRAFT_EINVAL, "%s: at least one of min or max must be given", name);
    graft_tensor *ts[3] = {a, lo ? lo->t : NULL, hi ? hi->t : NULL};
    graft_status st = ew_check_devices(name, ts, 3, nfixed, dev);
    if (st) return st;
    graft_operand ops[3];
    int n = 0;
    ops[n++] = graft_operand_tensor(a);
    if (lo) ops[n++] = *lo;
    if (hi) ops[n++] = *hi;
    *rt = graft_result_type(n, ops);
    if (*rt == GRAFT_BOOL) return graft_error(GRAFT_ETYPE, "%s: not supported for bool", name);
    return GRAFT_OK;
}

/* Scalar bounds on CUDA: a already holds out's dtype. */
static graft_status ew_cuda_clamp(graft_tensor *out, graft_tensor *a, const graft_operand *lo, const graft_operand *hi) {
    graft_cuda_operand cl, ch;
    graft_tensor *unused = NULL;
    if (lo) ew_cuda_operand(&cl, &unused, lo, out->dtype);
    if (hi) ew_cuda_operand(&ch, &unused, hi, out->dtype);
    return graft_cuda_clamp(out, a, lo ? &cl : NULL, hi ? &ch : NULL);
}

/* Tensor bounds: cast a to the result type, then maximum and minimum (both propagate
 * NaN, as PyTorch's clamp does for NaN bounds). */
static graft_status ew_clamp_tensors(graft_tensor **out, graft_tensor *a, const graft_operand *lo,
                                     const graft_operand *hi, graft_dtype rt) {
    graft_tensor *x = NULL, *y = NULL;
    graft_status st = graft_tensor_to_dtype(&x, a, rt);
    if (st) return st;
    if (lo) {
        st = graft_binary(&y, GRAFT_EW_MAXIMUM, graft_operand_tensor(x), *lo, NULL);
        graft_tensor_release(x);
        if (st) return st;
        x = y;
    }
    if (hi) {
        st = graft_binary(&y, GRAFT_EW_MINIMUM, graft_operand_tensor(x), *hi, NULL);
        graft_tensor_release(x);
        if (st) return st;
        x = y;
    }
    *out = x;
    return GRAFT_OK;
}

graft_status graft_clamp(graft_tensor **out, graft_tensor *a, const graft_operand *lo, const graft_operand *hi) {
    if (GRAFT_AG_ACTIVE(a->autograd || (lo && GRAFT_AG_T(lo->t)) || (hi && GRAFT_AG_T(hi->t))))
        return graft_ag_clamp(out, a, lo, hi);
    *out = NULL;
    graft_dtype rt;
    graft_device dev;
    graft_status st = ew_clamp_plan(&rt, &dev, a, lo, hi, "clamp", 0);
    if (st) return st;
    if ((lo && lo->t) || (hi && hi->t)) return ew_clamp_tensors(out, a, lo, hi, rt);
    uint64_t lobuf = 0, hibuf = 0;
    graft_ew_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    if (lo) { ew_scalar_store(&lobuf, rt, &lo->s); ctx.lo = &lobuf; }
    if (hi) { ew_scalar_store(&hibuf, rt, &hi->s); ctx.hi = &hibuf; }
    ew_input ia;
    graft_operand oa = graft_operand_tensor(a);
    graft_tensor *res = NULL;
    if ((st = ew_input_prepare(&ia, &oa, rt, dev))) return st;
    if ((st = graft_tensor_empty(&res, a->ndim, a->shape, rt, dev))) goto done;
    if (dev.type == GRAFT_CUDA) {
        st = ew_cuda_clamp(res, ia.t, lo, hi);
        goto done;
    }
    graft_tensor *ops[2] = {res, ia.t};
    st = ew_run(ops, 2, graft_cpu_clamp_loops[rt], &ctx);
done:
    graft_tensor_release(ia.owned);
    if (st) graft_tensor_release(res);
    else *out = res;
    return st;
}

graft_status graft_clamp_(graft_tensor *self, const graft_operand *lo, const graft_operand *hi) {
    if (GRAFT_AG_ACTIVE(self->autograd || (lo && GRAFT_AG_T(lo->t)) || (hi && GRAFT_AG_T(hi->t))))
        return graft_ag_clamp_(self, lo, hi);
    graft_dtype rt;
    graft_device dev;
    graft_status st = ew_clamp_plan(&rt, &dev, self, lo, hi, "clamp_", 1);
    if (st) return st;
    if ((st = ew_check_cast(rt, self, "clamp_")) || (st = ew_check_writable(self, "clamp_"))) return st;
    if (rt == self->dtype && !(lo && lo->t) && !(hi && hi->t)) {
        uint64_t lobuf = 0, hibuf = 0;
        graft_ew_ctx ctx;
        memset(&ctx, 0, sizeof ctx);
        if (lo) { ew_scalar_store(&lobuf, rt, &lo->s); ctx.lo = &lobuf; }
        if (hi) { ew_scalar_store(&hibuf, rt, &hi->s); ctx.hi = &hibuf; }
        graft_tensor *ops[2] = {self, self};
        st = dev.type == GRAFT_CUDA ? ew_cuda_clamp(self, self, lo, hi) : ew_run(ops, 2, graft_cpu_clamp_loops[rt], &ctx);
        graft_tensor_bump(self);
        return st;
    }
    graft_tensor *tmp;
    if ((st = graft_clamp(&tmp, self, lo, hi))) return st;
    st = ew_check_inplace_shape(self, tmp->ndim, tmp->shape, "clamp_");
    if (!st) st = graft_tensor_copy_(self, tmp);
    graft_tensor_release(tmp);
    return st;
}

/* ---- where ---- */

/* where on CUDA: cond a device tensor or a 0-dim CPU one (a scalar), like a and b. */
static graft_status ew_cuda_where(graft_tensor **out, graft_tensor *cond, const graft_operand *a,
                                  const graft_operand *b, graft_dtype rt, int ndim, const int64_t *shape,
                                  graft_device dev) {
    graft_cuda_operand cc = {NULL, 0, 0}, ca, cb;
    graft_tensor *oa = NULL, *ob = NULL, *res = NULL;
    graft_status st;
    if (ew_cpu_scalar(cond)) cc.i = graft_load_i64(graft_tensor_data(cond), cond->dtype) != 0;
    else cc.t = cond;
    if ((st = ew_cuda_operand(&ca, &oa, a, rt)) || (st = ew_cuda_operand(&cb, &ob, b, rt)) ||
        (st = graft_tensor_empty(&res, ndim, shape, rt, dev)))
        goto done;
    st = graft_cuda_where(res, &cc, &ca, &cb);
done:
    graft_tensor_release(oa);
    graft_tensor_release(ob);
    if (st) graft_tensor_release(res);
    else *out = res;
    return st;
}

graft_status graft_where(graft_tensor **out, graft_tensor *cond, graft_operand a, graft_operand b) {
    if (GRAFT_AG_ACTIVE(GRAFT_AG_T(a.t) || GRAFT_AG_T(b.t))) return graft_ag_where(out, cond, a, b);
    *out = NULL;
    graft_device dev;
    graft_tensor *ts[3] = {cond, a.t, b.t};
    graft_status st = ew_check_devices("where", ts, 3, 0, &dev);
    if (st) return st;
    if (cond->dtype != GRAFT_BOOL && cond->dtype != GRAFT_U8)
        return graft_error(GRAFT_ETYPE, "where: expected condition to be a boolean tensor, but got a tensor with dtype %s",
                           graft_dtype_name(cond->dtype));
    graft_operand ops[2] = {a, b};
    graft_dtype rt = graft_result_type(2, ops);
    int n1, ndim;
    int64_t s1[GRAFT_MAX_DIMS], shape[GRAFT_MAX_DIMS];
    if ((st = ew_broadcast2(&n1, s1, &a, &b, "where"))) return st;
    if ((st = graft_broadcast_shapes(&ndim, shape, cond->ndim, cond->shape, n1, s1, "where"))) return st;
    ew_input ia, ib;
    ib.owned = NULL;
    graft_tensor *res = NULL;
    graft_ew_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.esz = graft_dtype_size(rt);
    if (dev.type == GRAFT_CUDA) return ew_cuda_where(out, cond, &a, &b, rt, ndim, shape, dev);
    if ((st = ew_input_prepare(&ia, &a, rt, dev)) || (st = ew_input_prepare(&ib, &b, rt, dev)) ||
        (st = graft_tensor_empty(&res, ndim, shape, rt, dev)))
        goto done;
    graft_tensor *rops[4] = {res, cond, ia.t, ib.t};
    st = ew_run(rops, 4, graft_cpu_where_loop, &ctx);
done:
    graft_tensor_release(ia.owned);
    graft_tensor_release(ib.owned);
    if (st) graft_tensor_release(res);
    else *out = res;
    return st;
}
