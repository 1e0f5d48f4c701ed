/* graft ops: indexing (see index.h). Basic table entries become views (select, slice,
 * unsqueeze); index tensors go through one "block plan": the output is walked as
 * (pre dims, index positions, post dims) and each post block is one memcpy (or one
 * strided run), so every op here is a linear copy loop. Indices are validated before
 * anything is written. CUDA tensors take the same plans and iterators to the kernels of
 * core/cuda/index.cu, which check index values on the device. */
#include "index.h"
#include "view.h"

#include "autograd/record.h"
#include "cuda/index.h"
#include "tensor/iter.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define SHAPE_BUF (GRAFT_MAX_DIMS * 24 + 3)

void graft_ix_value_store(void *p, graft_dtype d, graft_ix_value v) {
    if (v.is_int) graft_store_i64(p, d, v.i);
    else graft_store_f64(p, d, v.d);
}

/* One element of esz bytes: fixed-size memcpy the compiler turns into a move. */
static inline void ix_move(char *dst, const char *src, size_t esz) {
    switch (esz) {
    case 1: *dst = *src; break;
    case 2: memcpy(dst, src, 2); break;
    case 4: memcpy(dst, src, 4); break;
    default: memcpy(dst, src, 8); break;
    }
}

static bool ix_is_mask_dtype(graft_dtype d) { return d == GRAFT_BOOL || d == GRAFT_U8; }

static bool ix_on_cuda(const graft_tensor *t) { return graft_tensor_device(t).type == GRAFT_CUDA; }

/* Every tensor of a gather/scatter-style op lives on t's device (PyTorch's message). */
static graft_status ix_same_device(const char *op, const graft_tensor *t, const graft_tensor *other) {
    graft_device a = graft_tensor_device(t), b = graft_tensor_device(other);
    if (graft_device_eq(a, b)) return GRAFT_OK;
    char sa[16], sb[16];
    return graft_error(GRAFT_EDEVICE, "%s: expected all tensors to be on the same device, but found %s and %s", op,
                       graft_device_str(a, sa), graft_device_str(b, sb));
}

/* ---- index validation ---- */

typedef struct {
    int64_t lo, hi;       /* valid values are lo <= v < hi */
    graft_dtype dtype;    /* int64 or int32 */
    int bad;              /* set once (atomically) by the first bad value seen */
    int64_t badval;
} ix_check_ctx;

static void ix_check_loop(char **data, const int64_t *strides, int64_t n, void *vctx) {
    ix_check_ctx *c = vctx;
    int64_t lo = c->lo, hi = c->hi;
    for (int64_t k = 0; k < n; k++) {
        const char *p = data[0] + k * strides[0];
        int64_t v = c->dtype == GRAFT_I64 ? *(const int64_t *)p : *(const int32_t *)p;
        if (v < lo || v >= hi) {
            int expected = 0;
            if (__atomic_compare_exchange_n(&c->bad, &expected, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
                c->badval = v;
            return;
        }
    }
}

/* Checks every value of index lies in [lo, hi); on failure *bad is set and *badval holds
 * one offending value. Runs in parallel for large indices; on the device for CUDA ones
 * (one small copy back). */
static graft_status ix_validate(graft_tensor *index, int64_t lo, int64_t hi, bool *bad, int64_t *badval) {
    ix_check_ctx c = {lo, hi, index->dtype, 0, 0};
    graft_iter it;
    graft_tensor *ops[1] = {index};
    *bad = false;
    if (ix_on_cuda(index)) return graft_cuda_ix_check(index, lo, hi, bad, badval);
    graft_status st = graft_iter_init(&it, 1, ops, index->ndim, index->shape);
    if (st) return st;
    graft_iter_run(&it, ix_check_loop, &c);
    if (__atomic_load_n(&c.bad, __ATOMIC_ACQUIRE)) {
        *bad = true;
        *badval = c.badval;
    }
    return GRAFT_OK;
}

static graft_status ix_range_error(const char *op, int64_t v, int dim, int64_t size) {
    return graft_error(GRAFT_EINDEX, "%s: index %lld is out of range for dim %d of size %lld", op, (long long)v,
                       dim + 1, (long long)size);
}

/* +1: index (1-D or 0-D, int64 or int32) as a contiguous int64 tensor. */
static graft_status ix_vector_i64(graft_tensor **out, graft_tensor *index, const char *op) {
    *out = NULL;
    if (index->dtype != GRAFT_I64 && index->dtype != GRAFT_I32)
        return graft_error(GRAFT_ETYPE, "%s: expected an int64 or int32 index, got %s", op, graft_dtype_name(index->dtype));
    if (index->ndim > 1)
        return graft_error(GRAFT_ESHAPE, "%s: index must be 1-D or 0-D, got %d dims", op, index->ndim);
    graft_tensor *c;
    graft_status st = graft_tensor_to_dtype(&c, index, GRAFT_I64);
    if (st) return st;
    st = graft_tensor_contiguous(out, c);
    graft_tensor_release(c);
    return st;
}

/* ---- the block plan ---- */

/* Output (or value) element q * post_numel + r comes from
 * base + pre_off(q / nb) + offs[q % nb] + post_off(r), in elements of the view. The
 * struct is shared with the CUDA launcher (cuda/index.h). */
typedef graft_ix_plan ix_plan;

static int64_t ix_pre_off(const ix_plan *p, int64_t q) {
    int64_t off = 0;
    for (int d = p->pre_n - 1; d >= 0; d--) {
        off += (q % p->pre_shape[d]) * p->pre_stride[d];
        q /= p->pre_shape[d];
    }
    return off;
}

static void ix_plan_finish(ix_plan *p) {
    p->pre_numel = 1;
    for (int d = 0; d < p->pre_n; d++) p->pre_numel *= p->pre_shape[d];
    p->post_numel = 1;
    int64_t s = 1;
    p->post_dense = true;
    for (int d = p->post_n - 1; d >= 0; d--) {
        p->post_numel *= p->post_shape[d];
        if (p->post_shape[d] != 1 && p->post_stride[d] != s) p->post_dense = false;
        s *= p->post_shape[d];
    }
}

/* Moves one post block between the dense buffer and the strided view (odometer over the
 * post dims, innermost run as a plain loop). */
static void ix_post_copy(const ix_plan *p, char *dense, char *strided, bool put) {
    size_t esz = p->esz;
    if (p->post_dense) {
        if (put) memcpy(strided, dense, (size_t)p->post_numel * esz);
        else memcpy(dense, strided, (size_t)p->post_numel * esz);
        return;
    }
    int n = p->post_n;
    int64_t idx[GRAFT_MAX_DIMS] = {0};
    int64_t inner = p->post_shape[n - 1], is = p->post_stride[n - 1] * (int64_t)esz;
    for (;;) {
        if (put) for (int64_t k = 0; k < inner; k++) ix_move(strided + k * is, dense + (size_t)k * esz, esz);
        else for (int64_t k = 0; k < inner; k++) ix_move(dense + (size_t)k * esz, strided + k * is, esz);
        dense += (size_t)inner * esz;
        int d = n - 2;
        for (; d >= 0; d--) {
            strided += p->post_stride[d] * (int64_t)esz;
            if (++idx[d] < p->post_shape[d]) break;
            strided -= p->post_shape[d] * p->post_stride[d] * (int64_t)esz;
            idx[d] = 0;
        }
        if (d < 0) return;
    }
}

static void ix_plan_range(const ix_plan *p, char *dense, bool put, int64_t q0, int64_t q1) {
    if (q0 >= q1) return;
    size_t esz = p->esz, block = (size_t)p->post_numel * esz;
    int64_t pi = q0 / p->nb, b = q0 % p->nb;
    int64_t pre = ix_pre_off(p, pi);
    for (int64_t q = q0; q < q1; q++) {
        char *s = p->base + (pre + p->offs[b]) * (int64_t)esz;
        char *d = dense + (size_t)q * block;
        if (p->post_numel == 1) {
            if (put) ix_move(s, d, esz);
            else ix_move(d, s, esz);
        } else {
            ix_post_copy(p, d, s, put);
        }
        if (++b == p->nb) {
            b = 0;
            pi++;
            if (q + 1 < q1) pre = ix_pre_off(p, pi);
        }
    }
}

/* Gathers (put = false: dense <- view) or scatters (put = true: view <- dense). Gathers
 * split across threads when large; scatters stay serial so that a position named twice
 * ends with the later value, as PyTorch's CPU kernels do. CUDA plans run on the device
 * (a position named twice gets one of its values there, as in PyTorch). */
static graft_status ix_plan_run(const ix_plan *p, graft_tensor *dense_t, bool put) {
    if (ix_on_cuda(dense_t)) return graft_cuda_ix_plan_run(p, dense_t, put);
    char *dense = graft_tensor_data(dense_t);
    int64_t nblocks = p->pre_numel * p->nb;
    if (nblocks == 0 || p->post_numel == 0) return GRAFT_OK;
#ifdef _OPENMP
    if (!put && graft_should_parallelize(nblocks * p->post_numel) && nblocks > 1) {
        #pragma omp parallel
        {
            int64_t T = omp_get_num_threads(), t = omp_get_thread_num();
            int64_t chunk = (nblocks + T - 1) / T, q0 = t * chunk, q1 = q0 + chunk;
            if (q1 > nblocks) q1 = nblocks;
            ix_plan_range(p, dense, put, q0, q1);
        }
        return GRAFT_OK;
    }
#endif
    ix_plan_range(p, dense, put, 0, nblocks);
    return GRAFT_OK;
}

/* ---- table indexing: resolving the entries ---- */

typedef struct {
    graft_tensor *view;                 /* +1: t after the basic entries */
    int nadv;
    int adv_dim[GRAFT_MAX_DIMS];        /* dims of view */
    int adv_orig[GRAFT_MAX_DIMS];       /* dims of t, for messages */
    graft_tensor *adv[GRAFT_MAX_DIMS];  /* +1 each: int64 index tensors */
} ix_resolved;

static void ix_resolved_free(ix_resolved *r) {
    graft_tensor_release(r->view);
    for (int k = 0; k < r->nadv; k++) graft_tensor_release(r->adv[k]);
    r->view = NULL;
    r->nadv = 0;
}

/* Replaces r->view by *nv (taking its reference). */
static void ix_swap_view(ix_resolved *r, graft_tensor *nv) {
    graft_tensor_release(r->view);
    r->view = nv;
}

static graft_status ix_add_adv(ix_resolved *r, graft_tensor *idx, int dim, int orig) {
    if (r->nadv >= GRAFT_MAX_DIMS) {
        graft_tensor_release(idx);
        return graft_error(GRAFT_EINVAL, "index: at most %d index tensors", GRAFT_MAX_DIMS);
    }
    r->adv[r->nadv] = idx;
    r->adv_dim[r->nadv] = dim;
    r->adv_orig[r->nadv] = orig;
    r->nadv++;
    return GRAFT_OK;
}

/* A bool mask over view dims [d, d + k): the k columns of its nonzero() become k index
 * tensors. A 0-dim mask adds a dim of size 1 indexed by [0] (true) or [] (false). */
static graft_status ix_resolve_mask(ix_resolved *r, graft_tensor *mask, int *d, int *orig) {
    graft_status st;
    int k = mask->ndim;
    if (k == 0) {
        graft_tensor *nv, *idx;
        if ((st = graft_unsqueeze(&nv, r->view, *d))) return st;
        ix_swap_view(r, nv);
        uint8_t byte = 0;
        if (ix_on_cuda(mask)) {
            if ((st = graft_cuda_memcpy_d2h(&byte, graft_tensor_data(mask), 1))) return st;
        } else {
            byte = *(const uint8_t *)graft_tensor_data(mask);
        }
        int64_t n = byte ? 1 : 0;
        if ((st = graft_tensor_empty(&idx, 1, &n, GRAFT_I64, graft_tensor_device(mask)))) return st;
        if (n && (st = graft_tensor_fill_int_(idx, 0))) {
            graft_tensor_release(idx);
            return st;
        }
        if ((st = ix_add_adv(r, idx, *d, *orig))) return st;
        (*d)++;
        return GRAFT_OK;
    }
    for (int j = 0; j < k; j++) {
        if (mask->shape[j] != r->view->shape[*d + j]) {
            char a[SHAPE_BUF], b[SHAPE_BUF];
            return graft_error(GRAFT_ESHAPE, "index: mask of shape %s does not match the indexed dims %d..%d of shape %s",
                               graft_shape_str(mask->ndim, mask->shape, a, sizeof a), *orig + 1, *orig + k,
                               graft_shape_str(k, r->view->shape + *d, b, sizeof b));
        }
    }
    graft_tensor *nz;
    if ((st = graft_nonzero(&nz, mask))) return st;
    for (int j = 0; j < k; j++) {
        graft_tensor *col;
        if ((st = graft_tensor_select(&col, nz, 1, j)) || (st = ix_add_adv(r, col, *d + j, *orig + j))) {
            graft_tensor_release(nz);
            return st;
        }
    }
    graft_tensor_release(nz);
    *d += k;
    *orig += k;
    return GRAFT_OK;
}

/* +1: index tensor x where t's kernels can read it: x itself on t's device; a CPU index
 * of a CUDA tensor is copied over, as PyTorch accepts it; anything else is an error. */
static graft_status ix_index_on(graft_tensor **out, graft_tensor *x, graft_tensor *t) {
    graft_device xd = graft_tensor_device(x), td = graft_tensor_device(t);
    *out = NULL;
    if (graft_device_eq(xd, td)) {
        graft_tensor_retain(x);
        *out = x;
        return GRAFT_OK;
    }
    char a[16], b[16];
    if (xd.type != GRAFT_CPU)
        return graft_error(GRAFT_EDEVICE, "index: indices should be either on cpu or on the same device as the "
                           "indexed tensor (%s), got %s", graft_device_str(td, a), graft_device_str(xd, b));
    graft_status st = graft_tensor_empty(out, x->ndim, x->shape, x->dtype, td);
    if (!st && (st = graft_tensor_copy_(*out, x))) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

/* Applies the basic entries to a view of t and collects the index tensors, each tagged
 * with the view dim it indexes. Select removes its dim before adjacency is judged, as
 * PyTorch does (x[idx, 0, idx] keeps the index dims together). */
static graft_status ix_resolve(ix_resolved *r, graft_tensor *t, const graft_ix *ix, int n) {
    graft_status st;
    int consumed = 0, ellipses = 0;
    memset(r, 0, sizeof *r);
    for (int i = 0; i < n; i++) {
        switch (ix[i].kind) {
        case GRAFT_IX_INT: case GRAFT_IX_RANGE: case GRAFT_IX_ALL: consumed++; break;
        case GRAFT_IX_ELLIPSIS: ellipses++; break;
        case GRAFT_IX_NEWAXIS: break;
        case GRAFT_IX_TENSOR:
            if (!ix[i].tensor) return graft_error(GRAFT_EINVAL, "index: missing index tensor");
            consumed += ix_is_mask_dtype(ix[i].tensor->dtype) ? ix[i].tensor->ndim : 1;
            break;
        default: return graft_error(GRAFT_EINVAL, "index: bad entry kind %d", (int)ix[i].kind);
        }
    }
    if (ellipses > 1) return graft_error(GRAFT_EINVAL, "index: an index can only have a single ellipsis (\"...\")");
    if (consumed > t->ndim)
        return graft_error(GRAFT_EINDEX, "index: too many indices for a tensor with %d dims (got %d)", t->ndim, consumed);
    graft_tensor_retain(t);
    r->view = t;
    int d = 0, orig = 0;
    for (int i = 0; i < n; i++) {
        const graft_ix *e = &ix[i];
        graft_tensor *nv;
        switch (e->kind) {
        case GRAFT_IX_INT: {
            int64_t size = r->view->shape[d], v = e->start < 0 ? e->start + size : e->start;
            if (v < 0 || v >= size) {
                st = graft_error(GRAFT_EINDEX, "index: position %lld is out of range for dim %d of size %lld",
                                 (long long)(e->start >= 0 ? e->start + 1 : e->start), orig + 1, (long long)size);
                goto fail;
            }
            if ((st = graft_tensor_select(&nv, r->view, d, v))) goto fail;
            ix_swap_view(r, nv);
            orig++;
            break;
        }
        case GRAFT_IX_RANGE: {
            int64_t size = r->view->shape[d];
            if (e->step <= 0) {
                st = graft_error(GRAFT_EINVAL, "index: step must be positive, got %lld", (long long)e->step);
                goto fail;
            }
            int64_t s = e->has_start ? (e->start < 0 ? e->start + size : e->start) : 0;
            int64_t l = e->has_last ? (e->last < 0 ? e->last + size : e->last) : size - 1;
            if (s < 0) s = 0;
            if (s > size) s = size;
            if (l < -1) l = -1;
            if (l > size - 1) l = size - 1;
            int64_t stop = l + 1 < s ? s : l + 1;
            if ((st = graft_slice(&nv, r->view, d, s, stop, e->step))) goto fail;
            ix_swap_view(r, nv);
            d++;
            orig++;
            break;
        }
        case GRAFT_IX_ALL: d++; orig++; break;
        case GRAFT_IX_ELLIPSIS: d += t->ndim - consumed; orig += t->ndim - consumed; break;
        case GRAFT_IX_NEWAXIS:
            if ((st = graft_unsqueeze(&nv, r->view, d))) goto fail;
            ix_swap_view(r, nv);
            d++;
            break;
        case GRAFT_IX_TENSOR: {
            graft_tensor *x = e->tensor;
            if (x->dtype != GRAFT_I64 && !ix_is_mask_dtype(x->dtype)) {
                st = graft_error(GRAFT_ETYPE, "index: tensors used as indices must be int64, bool or uint8, got %s",
                                 graft_dtype_name(x->dtype));
                goto fail;
            }
            if ((st = ix_index_on(&x, e->tensor, t))) goto fail;
            if (x->dtype == GRAFT_I64) {
                if ((st = ix_add_adv(r, x, d, orig))) goto fail;
                d++;
                orig++;
            } else {
                st = ix_resolve_mask(r, x, &d, &orig);
                graft_tensor_release(x);
                if (st) goto fail;
            }
            break;
        }
        }
    }
    return GRAFT_OK;
fail:
    ix_resolved_free(r);
    return st;
}

/* Builds the plan for the resolved advanced indices: broadcasts the index tensors to one
 * shape B, checks and wraps their values, and lays the result out as PyTorch does
 * (B in place of adjacent index dims, else B first). Writes the result shape. */
static graft_status ix_plan_adv(ix_plan *p, graft_tensor **offs_out, int *ondim, int64_t *oshape,
                                ix_resolved *r, const char *op) {
    graft_status st;
    graft_tensor *v = r->view;
    int bn = r->adv[0]->ndim;
    int64_t bshape[GRAFT_MAX_DIMS];
    memcpy(bshape, r->adv[0]->shape, sizeof(int64_t) * (size_t)bn);
    for (int k = 1; k < r->nadv; k++) {
        int64_t tmp[GRAFT_MAX_DIMS];
        int tn;
        if ((st = graft_broadcast_shapes(&tn, tmp, bn, bshape, r->adv[k]->ndim, r->adv[k]->shape, op))) return st;
        bn = tn;
        memcpy(bshape, tmp, sizeof(int64_t) * (size_t)bn);
    }
    int64_t nb = 1;
    for (int i = 0; i < bn; i++) nb *= bshape[i];

    bool adjacent = true;
    for (int k = 1; k < r->nadv; k++) adjacent = adjacent && r->adv_dim[k] == r->adv_dim[0] + k;
    bool is_adv[GRAFT_MAX_DIMS] = {false};
    for (int k = 0; k < r->nadv; k++) is_adv[r->adv_dim[k]] = true;

    memset(p, 0, sizeof *p);
    p->base = graft_tensor_data(v);
    p->esz = graft_dtype_size(v->dtype);
    p->nb = nb;
    int first = r->adv_dim[0];
    for (int d = 0; d < v->ndim; d++) {
        if (is_adv[d]) continue;
        if (adjacent && d < first) {
            p->pre_shape[p->pre_n] = v->shape[d];
            p->pre_stride[p->pre_n++] = v->stride[d];
        } else {
            p->post_shape[p->post_n] = v->shape[d];
            p->post_stride[p->post_n++] = v->stride[d];
        }
    }
    if (p->pre_n + bn + p->post_n > GRAFT_MAX_DIMS)
        return graft_error(GRAFT_EINVAL, "%s: the result would have more than %d dims", op, GRAFT_MAX_DIMS);
    *ondim = 0;
    for (int i = 0; i < p->pre_n; i++) oshape[(*ondim)++] = p->pre_shape[i];
    for (int i = 0; i < bn; i++) oshape[(*ondim)++] = bshape[i];
    for (int i = 0; i < p->post_n; i++) oshape[(*ondim)++] = p->post_shape[i];
    ix_plan_finish(p);

    /* offs[b] = sum_k idx_k[b] * stride(adv_dim_k), each index broadcast to B */
    graft_tensor *offs_t;
    if ((st = graft_tensor_empty(&offs_t, bn, bshape, GRAFT_I64, graft_tensor_device(v)))) return st;
    if (ix_on_cuda(v)) {
        if ((st = graft_tensor_fill_int_(offs_t, 0))) goto fail;
        for (int k = 0; k < r->nadv; k++) {
            int64_t size = v->shape[r->adv_dim[k]], badval = 0;
            bool bad = false;
            if ((st = graft_cuda_ix_offsets(offs_t, r->adv[k], size, v->stride[r->adv_dim[k]], true, &bad, &badval)))
                goto fail;
            if (bad) {
                st = ix_range_error(op, badval, r->adv_orig[k], size);
                goto fail;
            }
        }
        p->offs = graft_tensor_data(offs_t);
        *offs_out = offs_t;
        return GRAFT_OK;
    }
    int64_t *offs = graft_tensor_data(offs_t);
    memset(offs, 0, (size_t)nb * sizeof(int64_t));
    for (int k = 0; k < r->nadv; k++) {
        graft_tensor *buf;
        if ((st = graft_tensor_empty(&buf, bn, bshape, GRAFT_I64, graft_tensor_device(v)))) goto fail;
        if ((st = graft_tensor_copy_(buf, r->adv[k]))) { graft_tensor_release(buf); goto fail; }
        const int64_t *iv = graft_tensor_data(buf);
        int64_t size = v->shape[r->adv_dim[k]], stride = v->stride[r->adv_dim[k]];
        for (int64_t b = 0; b < nb; b++) {
            int64_t x = iv[b] < 0 ? iv[b] + size : iv[b];
            if (x < 0 || x >= size) {
                st = ix_range_error(op, iv[b], r->adv_orig[k], size);
                graft_tensor_release(buf);
                goto fail;
            }
            offs[b] += x * stride;
        }
        graft_tensor_release(buf);
    }
    p->offs = offs;
    *offs_out = offs_t;
    return GRAFT_OK;
fail:
    graft_tensor_release(offs_t);
    return st;
}

graft_status graft_index(graft_tensor **out, graft_tensor *t, const graft_ix *ix, int n) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_index(out, t, ix, n);
    ix_resolved r;
    *out = NULL;
    graft_status st = ix_resolve(&r, t, ix, n);
    if (st) return st;
    if (r.nadv == 0) {
        *out = r.view;
        return GRAFT_OK;
    }
    ix_plan p;
    graft_tensor *offs = NULL;
    int64_t oshape[GRAFT_MAX_DIMS];
    int ondim;
    if ((st = ix_plan_adv(&p, &offs, &ondim, oshape, &r, "index"))) goto done;
    if ((st = graft_tensor_empty(out, ondim, oshape, t->dtype, graft_tensor_device(t)))) goto done;
    if ((st = ix_plan_run(&p, *out, false))) {
        graft_tensor_release(*out);
        *out = NULL;
    }
done:
    graft_tensor_release(offs);
    ix_resolved_free(&r);
    return st;
}

/* value must broadcast to (ndim, shape); op names the caller. */
static graft_status ix_check_value_shape(graft_tensor *value, int ndim, const int64_t *shape, const char *op) {
    bool ok = value->ndim <= ndim;
    for (int i = 0; ok && i < value->ndim; i++) {
        int64_t vs = value->shape[value->ndim - 1 - i], ts = shape[ndim - 1 - i];
        ok = vs == ts || vs == 1;
    }
    if (ok) return GRAFT_OK;
    char a[SHAPE_BUF], b[SHAPE_BUF];
    return graft_error(GRAFT_ESHAPE, "%s: value of shape %s cannot be broadcast to the indexed shape %s", op,
                       graft_shape_str(value->ndim, value->shape, a, sizeof a), graft_shape_str(ndim, shape, b, sizeof b));
}

graft_status graft_index_put_(graft_tensor *t, const graft_ix *ix, int n, graft_tensor *value) {
    if (GRAFT_AG_ACTIVE(t->autograd || value->autograd)) return graft_ag_index_put_(t, ix, n, value);
    ix_resolved r;
    graft_status st = ix_resolve(&r, t, ix, n);
    if (st) return st;
    ix_plan p;
    int64_t oshape[GRAFT_MAX_DIMS];
    int ondim;
    graft_tensor *dense = NULL, *offs = NULL;
    if (r.nadv == 0) {
        if (!(st = ix_check_value_shape(value, r.view->ndim, r.view->shape, "index_put_")))
            st = graft_tensor_copy_(r.view, value);
        goto done;
    }
    if ((st = ix_plan_adv(&p, &offs, &ondim, oshape, &r, "index_put_"))) goto done;
    if ((st = ix_check_value_shape(value, ondim, oshape, "index_put_"))) goto done;
    /* a dense copy first: the value may alias t */
    if ((st = graft_tensor_empty(&dense, ondim, oshape, t->dtype, graft_tensor_device(t)))) goto done;
    if ((st = graft_tensor_copy_(dense, value))) goto done;
    if ((st = ix_plan_run(&p, dense, true))) goto done;
    graft_tensor_bump(t);
done:
    graft_tensor_release(dense);
    graft_tensor_release(offs);
    ix_resolved_free(&r);
    return st;
}

/* ---- index_select ---- */

graft_status graft_index_select(graft_tensor **out, graft_tensor *t, int dim, graft_tensor *index) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_index_select(out, t, dim, index);
    graft_status st;
    graft_tensor *idx = NULL, *offs_t = NULL;
    *out = NULL;
    if ((st = ix_same_device("index_select", t, index))) return st;
    if ((st = ix_vector_i64(&idx, index, "index_select"))) return st;
    int64_t n = graft_tensor_numel(idx), size = t->ndim ? t->shape[dim] : 1;
    int64_t stride = t->ndim ? t->stride[dim] : 0;
    if (t->ndim == 0 && n != 1) {
        st = graft_error(GRAFT_ESHAPE, "index_select: a 0-dim tensor takes exactly one index, got %lld", (long long)n);
        goto done;
    }
    if ((st = graft_tensor_empty(&offs_t, 1, &n, GRAFT_I64, graft_tensor_device(t)))) goto done;
    int64_t *offs = graft_tensor_data(offs_t);
    if (ix_on_cuda(t)) {
        bool bad = false;
        int64_t badval = 0;
        if ((st = graft_tensor_fill_int_(offs_t, 0)) ||
            (st = graft_cuda_ix_offsets(offs_t, idx, size, stride, false, &bad, &badval)))
            goto done;
        if (bad) { st = ix_range_error("index_select", badval, dim, size); goto done; }
    } else {
        const int64_t *iv = graft_tensor_data(idx);
        for (int64_t i = 0; i < n; i++) {
            if (iv[i] < 0 || iv[i] >= size) { st = ix_range_error("index_select", iv[i], dim, size); goto done; }
            offs[i] = iv[i] * stride;
        }
    }
    ix_plan p;
    memset(&p, 0, sizeof p);
    p.base = graft_tensor_data(t);
    p.esz = graft_dtype_size(t->dtype);
    p.nb = n;
    p.offs = offs;
    for (int d = 0; d < t->ndim; d++) {
        if (d < dim) { p.pre_shape[p.pre_n] = t->shape[d]; p.pre_stride[p.pre_n++] = t->stride[d]; }
        if (d > dim) { p.post_shape[p.post_n] = t->shape[d]; p.post_stride[p.post_n++] = t->stride[d]; }
    }
    ix_plan_finish(&p);
    int64_t oshape[GRAFT_MAX_DIMS];
    memcpy(oshape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    if (t->ndim) oshape[dim] = n;
    if ((st = graft_tensor_empty(out, t->ndim, oshape, t->dtype, graft_tensor_device(t)))) goto done;
    if ((st = ix_plan_run(&p, *out, false))) {
        graft_tensor_release(*out);
        *out = NULL;
    }
done:
    graft_tensor_release(offs_t);
    graft_tensor_release(idx);
    return st;
}

/* ---- gather / scatter ---- */

/* Checks what gather and scatter share: an int64 index with t's ndim, no larger than t
 * outside dim (and no larger than src anywhere), every value inside t's dim. */
static graft_status ix_check_scatter_args(const char *op, graft_tensor *t, int dim, graft_tensor *index, graft_tensor *src) {
    char a[SHAPE_BUF], b[SHAPE_BUF], c[SHAPE_BUF];
    graft_status st;
    if ((st = ix_same_device(op, t, index)) || (src && (st = ix_same_device(op, t, src)))) return st;
    if (index->dtype != GRAFT_I64)
        return graft_error(GRAFT_ETYPE, "%s: expected an int64 index, got %s", op, graft_dtype_name(index->dtype));
    if (index->ndim != t->ndim)
        return graft_error(GRAFT_ESHAPE, "%s: index has %d dims but the tensor has %d (they must match)", op,
                           index->ndim, t->ndim);
    if (src && src->ndim != t->ndim)
        return graft_error(GRAFT_ESHAPE, "%s: src has %d dims but the tensor has %d (they must match)", op,
                           src->ndim, t->ndim);
    if (src && src->dtype != t->dtype)
        return graft_error(GRAFT_ETYPE, "%s: src has dtype %s but the tensor has %s (they must match)", op,
                           graft_dtype_name(src->dtype), graft_dtype_name(t->dtype));
    for (int d = 0; d < t->ndim; d++) {
        if ((d != dim && index->shape[d] > t->shape[d]) || (src && index->shape[d] > src->shape[d])) {
            if (src)
                return graft_error(GRAFT_ESHAPE, "%s: index %s must be no larger than the tensor %s outside dim %d, "
                                   "and no larger than src %s (dim %d differs)", op,
                                   graft_shape_str(index->ndim, index->shape, a, sizeof a),
                                   graft_shape_str(t->ndim, t->shape, b, sizeof b), dim + 1,
                                   graft_shape_str(src->ndim, src->shape, c, sizeof c), d + 1);
            return graft_error(GRAFT_ESHAPE, "%s: index %s must be no larger than the tensor %s outside dim %d (dim %d differs)",
                               op, graft_shape_str(index->ndim, index->shape, a, sizeof a),
                               graft_shape_str(t->ndim, t->shape, b, sizeof b), dim + 1, d + 1);
        }
    }
    int64_t size = t->ndim ? t->shape[dim] : 1;
    bool bad = false;
    int64_t badval = 0;
    if ((st = ix_validate(index, 0, size, &bad, &badval))) return st;
    if (bad) return ix_range_error(op, badval, dim, size);
    return GRAFT_OK;
}

/* +1: a view of base with index's shape and base's strides, except a stride of 0 along
 * dim (when zero_dim): what the iterator walks beside the index. */
static graft_status ix_restride(graft_tensor **out, graft_tensor *base, graft_tensor *index, int dim, bool zero_dim) {
    int64_t stride[GRAFT_MAX_DIMS];
    memcpy(stride, base->stride, sizeof(int64_t) * (size_t)base->ndim);
    if (zero_dim && base->ndim) stride[dim] = 0;
    return graft_tensor_view_of(out, base, index->ndim, index->shape, stride, base->offset);
}

typedef struct {
    int64_t dim_stride;  /* bytes between neighbours along dim in the indexed tensor */
    size_t esz;
    graft_dtype dtype;
    _Alignas(8) unsigned char value[8];
} ix_scatter_ctx;

/* ops: out, index, self (dim stride 0) */
static void ix_gather_loop(char **data, const int64_t *s, int64_t n, void *vctx) {
    const ix_scatter_ctx *c = vctx;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = *(const int64_t *)(data[1] + k * s[1]);
        ix_move(data[0] + k * s[0], data[2] + k * s[2] + i * c->dim_stride, c->esz);
    }
}

/* ops: self (dim stride 0), index, src */
static void ix_scatter_loop(char **data, const int64_t *s, int64_t n, void *vctx) {
    const ix_scatter_ctx *c = vctx;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = *(const int64_t *)(data[1] + k * s[1]);
        ix_move(data[0] + k * s[0] + i * c->dim_stride, data[2] + k * s[2], c->esz);
    }
}

/* ops: self (dim stride 0), index */
static void ix_scatter_value_loop(char **data, const int64_t *s, int64_t n, void *vctx) {
    const ix_scatter_ctx *c = vctx;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = *(const int64_t *)(data[1] + k * s[1]);
        ix_move(data[0] + k * s[0] + i * c->dim_stride, (const char *)c->value, c->esz);
    }
}

/* dst += alpha * src for one element of dtype dt (bool: logical or). Floats add in their
 * own precision (half types through float), integers wrap as PyTorch's do. */
static inline void ix_add1(char *dst, const char *src, graft_dtype dt, double fa, int64_t ia) {
    switch (dt) {
    case GRAFT_F32: *(float *)dst += (float)fa * *(const float *)src; break;
    case GRAFT_F64: *(double *)dst += fa * *(const double *)src; break;
    case GRAFT_F16:
        *(uint16_t *)dst = graft_f32_to_f16(graft_f16_to_f32(*(uint16_t *)dst) +
                                            (float)fa * graft_f16_to_f32(*(const uint16_t *)src));
        break;
    case GRAFT_BF16:
        *(uint16_t *)dst = graft_f32_to_bf16(graft_bf16_to_f32(*(uint16_t *)dst) +
                                             (float)fa * graft_bf16_to_f32(*(const uint16_t *)src));
        break;
    case GRAFT_I64: *(int64_t *)dst = (int64_t)((uint64_t)*(int64_t *)dst + (uint64_t)ia * (uint64_t)*(const int64_t *)src); break;
    case GRAFT_I32: *(int32_t *)dst = (int32_t)((uint32_t)*(int32_t *)dst + (uint32_t)ia * (uint32_t)*(const int32_t *)src); break;
    case GRAFT_I16: *(int16_t *)dst = (int16_t)(uint16_t)((uint32_t)*(int16_t *)dst + (uint32_t)ia * (uint32_t)*(const int16_t *)src); break;
    case GRAFT_I8: *(int8_t *)dst = (int8_t)(uint8_t)((uint32_t)*(int8_t *)dst + (uint32_t)ia * (uint32_t)*(const int8_t *)src); break;
    case GRAFT_U8: *(uint8_t *)dst = (uint8_t)((uint32_t)*(uint8_t *)dst + (uint32_t)ia * (uint32_t)*(const uint8_t *)src); break;
    case GRAFT_BOOL: *(uint8_t *)dst = (*(uint8_t *)dst || *(const uint8_t *)src); break;
    default: break;
    }
}

/* ops: self (dim stride 0), index, src */
static void ix_scatter_add_loop(char **data, const int64_t *s, int64_t n, void *vctx) {
    const ix_scatter_ctx *c = vctx;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = *(const int64_t *)(data[1] + k * s[1]);
        ix_add1(data[0] + k * s[0] + i * c->dim_stride, data[2] + k * s[2], c->dtype, 1.0, 1);
    }
}

graft_status graft_gather(graft_tensor **out, graft_tensor *t, int dim, graft_tensor *index) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_gather(out, t, dim, index);
    graft_status st;
    graft_tensor *self_r = NULL;
    *out = NULL;
    if ((st = ix_check_scatter_args("gather", t, dim, index, NULL))) return st;
    if ((st = graft_tensor_empty(out, index->ndim, index->shape, t->dtype, graft_tensor_device(t)))) return st;
    if ((st = ix_restride(&self_r, t, index, dim, true))) goto done;
    ix_scatter_ctx c = {t->ndim ? t->stride[dim] * (int64_t)graft_dtype_size(t->dtype) : 0,
                        graft_dtype_size(t->dtype), t->dtype, {0}};
    graft_iter it;
    graft_tensor *ops[3] = {*out, index, self_r};
    if ((st = graft_iter_init(&it, 3, ops, index->ndim, index->shape))) goto done;
    if (ix_on_cuda(t)) st = graft_cuda_ix_scatter(&it, GRAFT_IX_GATHER, c.dim_stride, t->dtype, NULL, 0, 0);
    else graft_iter_run(&it, ix_gather_loop, &c);
done:
    graft_tensor_release(self_r);
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

/* The three scatters: src (a tensor), or value, written or added where index points.
 * Serial, so that duplicates resolve in row-major order (the later one wins). On CUDA,
 * one thread per index element: duplicates of scatter_ keep one of their values and
 * scatter_add sums with atomics, as PyTorch's kernels do. */
static graft_status ix_scatter_common(const char *op, graft_tensor *t, int dim, graft_tensor *index,
                                      graft_tensor *src, const graft_ix_value *value, bool add) {
    graft_status st;
    graft_tensor *self_r = NULL, *src_r = NULL;
    if ((st = ix_check_scatter_args(op, t, dim, index, src))) return st;
    ix_scatter_ctx c = {t->ndim ? t->stride[dim] * (int64_t)graft_dtype_size(t->dtype) : 0,
                        graft_dtype_size(t->dtype), t->dtype, {0}};
    if (value) graft_ix_value_store(c.value, t->dtype, *value);
    if ((st = ix_restride(&self_r, t, index, dim, true))) goto done;
    if (src && (st = ix_restride(&src_r, src, index, dim, false))) goto done;
    graft_iter it;
    graft_tensor *ops[3] = {self_r, index, src_r};
    if ((st = graft_iter_init(&it, src ? 3 : 2, ops, index->ndim, index->shape))) goto done;
    if (ix_on_cuda(t)) {
        graft_ix_mode mode = add ? GRAFT_IX_SCATTER_ADD : src ? GRAFT_IX_SCATTER : GRAFT_IX_SCATTER_VALUE;
        if ((st = graft_cuda_ix_scatter(&it, mode, c.dim_stride, t->dtype, c.value, 1.0, 1))) goto done;
    } else {
        graft_iter_run_serial(&it, add ? ix_scatter_add_loop : src ? ix_scatter_loop : ix_scatter_value_loop, &c);
    }
    graft_tensor_bump(t);
done:
    graft_tensor_release(self_r);
    graft_tensor_release(src_r);
    return st;
}

graft_status graft_scatter_(graft_tensor *t, int dim, graft_tensor *index, graft_tensor *src) {
    if (GRAFT_AG_ACTIVE(t->autograd || src->autograd)) return graft_ag_scatter_(t, dim, index, src, NULL, 0);
    return ix_scatter_common("scatter", t, dim, index, src, NULL, false);
}

graft_status graft_scatter_value_(graft_tensor *t, int dim, graft_tensor *index, graft_ix_value v) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_scatter_(t, dim, index, NULL, &v, 1);
    return ix_scatter_common("scatter", t, dim, index, NULL, &v, false);
}

graft_status graft_scatter_add_(graft_tensor *t, int dim, graft_tensor *index, graft_tensor *src) {
    if (GRAFT_AG_ACTIVE(t->autograd || src->autograd)) return graft_ag_scatter_(t, dim, index, src, NULL, 2);
    return ix_scatter_common("scatter_add", t, dim, index, src, NULL, true);
}

/* ---- index_add_ ---- */

/* index_add_ on the device as a scatter_add over src's shape: t seen with src's shape
 * (stride 0 along dim) and the index seen along dim of src (stride 0 elsewhere). idx is
 * contiguous int64, src's shape already checked. */
static graft_status ix_index_add_cuda(graft_tensor *t, int dim, graft_tensor *idx, graft_tensor *src,
                                      graft_ix_value alpha, int64_t size) {
    graft_status st;
    bool bad = false;
    int64_t badval = 0;
    if ((st = ix_validate(idx, 0, size, &bad, &badval))) return st;
    if (bad) return ix_range_error("index_add_", badval, dim, size);
    graft_tensor *self_r = NULL, *idx_r = NULL;
    int64_t tstride[GRAFT_MAX_DIMS], istride[GRAFT_MAX_DIMS];
    for (int d = 0; d < src->ndim; d++) {
        tstride[d] = d == dim ? 0 : t->stride[d];
        istride[d] = d == dim ? 1 : 0;
    }
    if (!(st = graft_tensor_view_of(&self_r, t, src->ndim, src->shape, tstride, t->offset)) &&
        !(st = graft_tensor_view_of(&idx_r, idx, src->ndim, src->shape, istride, idx->offset))) {
        graft_iter it;
        graft_tensor *ops[3] = {self_r, idx_r, src};
        int64_t ds = t->ndim ? t->stride[dim] * (int64_t)graft_dtype_size(t->dtype) : 0;
        double fa = alpha.is_int ? (double)alpha.i : alpha.d;
        int64_t ia = alpha.is_int ? alpha.i : (int64_t)alpha.d;
        if (!(st = graft_iter_init(&it, 3, ops, src->ndim, src->shape)))
            st = graft_cuda_ix_scatter(&it, GRAFT_IX_SCATTER_ADD, ds, t->dtype, NULL, fa, ia);
    }
    graft_tensor_release(self_r);
    graft_tensor_release(idx_r);
    if (!st) graft_tensor_bump(t);
    return st;
}

graft_status graft_index_add_(graft_tensor *t, int dim, graft_tensor *index, graft_tensor *src, graft_ix_value alpha) {
    if (GRAFT_AG_ACTIVE(t->autograd || src->autograd)) return graft_ag_index_add_(t, dim, index, src, alpha);
    char a[SHAPE_BUF], b[SHAPE_BUF];
    graft_status st;
    graft_tensor *idx = NULL;
    if ((st = ix_same_device("index_add_", t, index)) || (st = ix_same_device("index_add_", t, src))) return st;
    if (src->dtype != t->dtype)
        return graft_error(GRAFT_ETYPE, "index_add_: src has dtype %s but the tensor has %s (they must match)",
                           graft_dtype_name(src->dtype), graft_dtype_name(t->dtype));
    if (!alpha.is_int && !graft_dtype_is_float(t->dtype))
        return graft_error(GRAFT_ETYPE, "index_add_: alpha must be an integer for %s tensors", graft_dtype_name(t->dtype));
    if ((st = ix_vector_i64(&idx, index, "index_add_"))) return st;
    int64_t n = graft_tensor_numel(idx), size = t->ndim ? t->shape[dim] : 1;
    bool shape_ok = src->ndim == t->ndim;
    for (int d = 0; shape_ok && d < t->ndim; d++) shape_ok = d == dim || src->shape[d] == t->shape[d];
    if (!shape_ok) {
        st = graft_error(GRAFT_ESHAPE, "index_add_: src %s must match the tensor %s outside dim %d",
                         graft_shape_str(src->ndim, src->shape, a, sizeof a), graft_shape_str(t->ndim, t->shape, b, sizeof b),
                         dim + 1);
        goto done;
    }
    if ((src->ndim ? src->shape[dim] : 1) != n) {
        st = graft_error(GRAFT_ESHAPE, "index_add_: %lld indices but src has size %lld in dim %d (they must match)",
                         (long long)n, (long long)(src->ndim ? src->shape[dim] : 1), dim + 1);
        goto done;
    }
    if (ix_on_cuda(t)) {
        st = ix_index_add_cuda(t, dim, idx, src, alpha, size);
        goto done;
    }
    const int64_t *iv = graft_tensor_data(idx);
    for (int64_t i = 0; i < n; i++)
        if (iv[i] < 0 || iv[i] >= size) { st = ix_range_error("index_add_", iv[i], dim, size); goto done; }

    /* walk (pre, i, post) with both tensors' strides; the post odometer moves both */
    size_t esz = graft_dtype_size(t->dtype);
    double fa = alpha.is_int ? (double)alpha.i : alpha.d;
    int64_t ia = alpha.is_int ? alpha.i : (int64_t)alpha.d;
    int64_t pre_numel = 1, post_numel = 1;
    for (int d = 0; d < dim; d++) pre_numel *= t->shape[d];
    for (int d = dim + 1; d < t->ndim; d++) post_numel *= t->shape[d];
    int64_t tds = t->ndim ? t->stride[dim] : 0, sds = src->ndim ? src->stride[dim] : 0;
    char *tb = graft_tensor_data(t);
    const char *sb = graft_tensor_data(src);
    for (int64_t pi = 0; pi < pre_numel && post_numel > 0; pi++) {
        int64_t toff = 0, soff = 0, q = pi;
        for (int d = dim - 1; d >= 0; d--) {
            toff += (q % t->shape[d]) * t->stride[d];
            soff += (q % t->shape[d]) * src->stride[d];
            q /= t->shape[d];
        }
        for (int64_t i = 0; i < n; i++) {
            int64_t to = toff + iv[i] * tds, so = soff + i * sds;
            int64_t pidx[GRAFT_MAX_DIMS] = {0};
            for (int64_t r = 0; r < post_numel; r++) {
                ix_add1(tb + to * (int64_t)esz, sb + so * (int64_t)esz, t->dtype, fa, ia);
                for (int d = t->ndim - 1; d > dim; d--) {
                    to += t->stride[d];
                    so += src->stride[d];
                    if (++pidx[d] < t->shape[d]) break;
                    to -= t->shape[d] * t->stride[d];
                    so -= t->shape[d] * src->stride[d];
                    pidx[d] = 0;
                }
            }
        }
    }
    graft_tensor_bump(t);
done:
    graft_tensor_release(idx);
    return st;
}

/* ---- masks ---- */

typedef struct {
    size_t esz;
    _Alignas(8) unsigned char value[8];
} ix_fill_ctx;

/* ops: t, mask */
static void ix_masked_fill_loop(char **data, const int64_t *s, int64_t n, void *vctx) {
    const ix_fill_ctx *c = vctx;
    for (int64_t k = 0; k < n; k++)
        if (*(const uint8_t *)(data[1] + k * s[1])) ix_move(data[0] + k * s[0], (const char *)c->value, c->esz);
}

static graft_status ix_check_mask(graft_tensor *mask, const char *op) {
    if (!ix_is_mask_dtype(mask->dtype))
        return graft_error(GRAFT_ETYPE, "%s: expected a bool mask, got %s", op, graft_dtype_name(mask->dtype));
    return GRAFT_OK;
}

graft_status graft_masked_fill_(graft_tensor *t, graft_tensor *mask, graft_ix_value v) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_masked_fill_(t, mask, v);
    graft_status st;
    if ((st = ix_same_device("masked_fill_", t, mask)) || (st = ix_check_mask(mask, "masked_fill_"))) return st;
    bool ok = mask->ndim <= t->ndim;
    for (int i = 0; ok && i < mask->ndim; i++) {
        int64_t ms = mask->shape[mask->ndim - 1 - i], ts = t->shape[t->ndim - 1 - i];
        ok = ms == ts || ms == 1;
    }
    if (!ok) {
        char a[SHAPE_BUF], b[SHAPE_BUF];
        return graft_error(GRAFT_ESHAPE, "masked_fill_: mask of shape %s cannot be broadcast to the tensor's shape %s",
                           graft_shape_str(mask->ndim, mask->shape, a, sizeof a), graft_shape_str(t->ndim, t->shape, b, sizeof b));
    }
    ix_fill_ctx c = {graft_dtype_size(t->dtype), {0}};
    graft_ix_value_store(c.value, t->dtype, v);
    graft_iter it;
    graft_tensor *ops[2] = {t, mask};
    if ((st = graft_iter_init(&it, 2, ops, t->ndim, t->shape))) return st;
    if (ix_on_cuda(t)) {
        if ((st = graft_cuda_masked_fill(&it, c.esz, c.value))) return st;
    } else {
        graft_iter_run(&it, ix_masked_fill_loop, &c);
    }
    graft_tensor_bump(t);
    return GRAFT_OK;
}

graft_status graft_masked_fill(graft_tensor **out, graft_tensor *t, graft_tensor *mask, graft_ix_value v) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_masked_fill(out, t, mask, v);
    graft_status st;
    int n;
    int64_t shape[GRAFT_MAX_DIMS];
    *out = NULL;
    if ((st = ix_same_device("masked_fill", t, mask)) || (st = ix_check_mask(mask, "masked_fill"))) return st;
    if ((st = graft_broadcast_shapes(&n, shape, t->ndim, t->shape, mask->ndim, mask->shape, "masked_fill"))) return st;
    if ((st = graft_tensor_empty(out, n, shape, t->dtype, graft_tensor_device(t)))) return st;
    if ((st = graft_tensor_copy_(*out, t)) || (st = graft_masked_fill_(*out, mask, v))) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

typedef struct {
    int64_t count;
    char *dst;
    size_t esz;
} ix_select_ctx;

/* ops: mask */
static void ix_count_loop(char **data, const int64_t *s, int64_t n, void *vctx) {
    ix_select_ctx *c = vctx;
    int64_t cnt = 0;
    for (int64_t k = 0; k < n; k++) cnt += *(const uint8_t *)(data[0] + k * s[0]) != 0;
    c->count += cnt;
}

/* ops: t, mask (serial: appends in order) */
static void ix_select_loop(char **data, const int64_t *s, int64_t n, void *vctx) {
    ix_select_ctx *c = vctx;
    for (int64_t k = 0; k < n; k++) {
        if (*(const uint8_t *)(data[1] + k * s[1])) {
            ix_move(c->dst, data[0] + k * s[0], c->esz);
            c->dst += c->esz;
        }
    }
}

graft_status graft_masked_select(graft_tensor **out, graft_tensor *t, graft_tensor *mask) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_masked_select(out, t, mask);
    graft_status st;
    int n;
    int64_t shape[GRAFT_MAX_DIMS];
    *out = NULL;
    if ((st = ix_same_device("masked_select", t, mask)) || (st = ix_check_mask(mask, "masked_select"))) return st;
    if ((st = graft_broadcast_shapes(&n, shape, t->ndim, t->shape, mask->ndim, mask->shape, "masked_select"))) return st;
    if (ix_on_cuda(t)) return graft_cuda_masked_select(out, t, mask, n, shape);
    graft_iter it;
    graft_tensor *ops[2] = {t, mask};
    ix_select_ctx c = {0, NULL, graft_dtype_size(t->dtype)};
    if ((st = graft_iter_init(&it, 1, ops + 1, n, shape))) return st;
    graft_iter_run_serial(&it, ix_count_loop, &c);
    int64_t cnt = c.count;
    if ((st = graft_tensor_empty(out, 1, &cnt, t->dtype, graft_tensor_device(t)))) return st;
    if ((st = graft_iter_init(&it, 2, ops, n, shape))) {
        graft_tensor_release(*out);
        *out = NULL;
        return st;
    }
    c.dst = graft_tensor_data(*out);
    graft_iter_run_serial(&it, ix_select_loop, &c);
    return GRAFT_OK;
}

/* ---- take, nonzero ---- */

typedef struct {
    const char *base;
    int64_t numel;
    size_t esz;
} ix_take_ctx;

/* ops: out, index (validated: -numel <= v < numel) */
static void ix_take_loop(char **data, const int64_t *s, int64_t n, void *vctx) {
    const ix_take_ctx *c = vctx;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = *(const int64_t *)(data[1] + k * s[1]);
        if (i < 0) i += c->numel;
        ix_move(data[0] + k * s[0], c->base + (size_t)i * c->esz, c->esz);
    }
}

graft_status graft_take(graft_tensor **out, graft_tensor *t, graft_tensor *index) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_take(out, t, index);
    graft_status st;
    graft_tensor *c = NULL;
    *out = NULL;
    if ((st = ix_same_device("take", t, index))) return st;
    if (index->dtype != GRAFT_I64)
        return graft_error(GRAFT_ETYPE, "take: expected an int64 index, got %s", graft_dtype_name(index->dtype));
    int64_t numel = graft_tensor_numel(t);
    bool bad = false;
    int64_t badval = 0;
    if ((st = ix_validate(index, -numel, numel, &bad, &badval))) return st;
    if (bad)
        return graft_error(GRAFT_EINDEX, "take: index %lld is out of range for a tensor of %lld elements",
                           (long long)badval, (long long)numel);
    if ((st = graft_tensor_contiguous(&c, t))) return st;
    if ((st = graft_tensor_empty(out, index->ndim, index->shape, t->dtype, graft_tensor_device(t)))) goto done;
    ix_take_ctx ctx = {graft_tensor_data(c), numel, graft_dtype_size(t->dtype)};
    graft_iter it;
    graft_tensor *ops[2] = {*out, index};
    if ((st = graft_iter_init(&it, 2, ops, index->ndim, index->shape))) goto done;
    if (ix_on_cuda(t)) st = graft_cuda_take(&it, ctx.base, numel, ctx.esz);
    else graft_iter_run(&it, ix_take_loop, &ctx);
done:
    graft_tensor_release(c);
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

/* Nonzero as PyTorch counts it: -0.0 is zero, NaN is not. */
static inline bool ix_nonzero_at(const char *p, graft_dtype d) {
    switch (d) {
    case GRAFT_F32: return *(const float *)p != 0;
    case GRAFT_F64: return *(const double *)p != 0;
    case GRAFT_F16: case GRAFT_BF16: return (*(const uint16_t *)p & 0x7fffu) != 0;
    case GRAFT_I64: return *(const int64_t *)p != 0;
    case GRAFT_I32: return *(const int32_t *)p != 0;
    case GRAFT_I16: return *(const int16_t *)p != 0;
    default: return *(const uint8_t *)p != 0;
    }
}

graft_status graft_nonzero(graft_tensor **out, graft_tensor *t) {
    graft_status st;
    graft_tensor *c;
    *out = NULL;
    if ((st = graft_tensor_contiguous(&c, t))) return st;
    if (ix_on_cuda(c)) {
        st = graft_cuda_nonzero(out, c);
        graft_tensor_release(c);
        return st;
    }
    int64_t numel = graft_tensor_numel(c), cnt = 0;
    size_t esz = graft_dtype_size(c->dtype);
    const char *p = graft_tensor_data(c);
    for (int64_t i = 0; i < numel; i++) cnt += ix_nonzero_at(p + (size_t)i * esz, c->dtype);
    int64_t oshape[2] = {cnt, t->ndim};
    if ((st = graft_tensor_empty(out, 2, oshape, GRAFT_I64, graft_tensor_device(t)))) goto done;
    int64_t *o = graft_tensor_data(*out), coord[GRAFT_MAX_DIMS] = {0};
    int nd = t->ndim;
    for (int64_t i = 0; i < numel; i++) {
        if (ix_nonzero_at(p + (size_t)i * esz, c->dtype)) {
            memcpy(o, coord, sizeof(int64_t) * (size_t)nd);
            o += nd;
        }
        for (int d = nd - 1; d >= 0; d--) {
            if (++coord[d] < t->shape[d]) break;
            coord[d] = 0;
        }
    }
done:
    graft_tensor_release(c);
    return st;
}
