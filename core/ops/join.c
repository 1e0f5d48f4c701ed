/* graft ops: cat, stack, split/chunk sizes, flip, roll, repeat/tile, tril/triu, diag and
 * diagonal (see join.h). cat of contiguous same-dtype inputs is one memcpy per input per
 * outer index; everything else goes through the strided, dtype-converting copy_, which
 * runs on CUDA too (tril/triu have their own kernel there, core/cuda/index.cu). */
#include "join.h"
#include "view.h"

#include "autograd/record.h"
#include "cuda/index.h"
#include "tensor/iter.h"

#include <stdlib.h>
#include <string.h>

#define SHAPE_BUF (GRAFT_MAX_DIMS * 24 + 3)

/* ---- cat, stack ---- */

/* PyTorch still skips 1-D tensors of size 0 in cat (legacy behaviour). */
static bool join_legacy_empty(const graft_tensor *t) { return t->ndim == 1 && t->shape[0] == 0; }

/* Checks, allocates and copies; `op` names cat or stack in messages. */
static graft_status join_cat(const char *op, graft_tensor **out, graft_tensor *const *ts, int n, int dim_in) {
    graft_status st;
    *out = NULL;
    if (n <= 0) return graft_error(GRAFT_EINVAL, "%s: expected a non-empty list of tensors", op);
    graft_dtype dt = ts[0]->dtype;
    int ref = -1;
    for (int i = 0; i < n; i++) {
        if (!graft_device_eq(graft_tensor_device(ts[i]), graft_tensor_device(ts[0]))) {
            char a[16], b[16];
            return graft_error(GRAFT_EDEVICE, "%s: expected all tensors to be on the same device, but found %s and %s "
                               "(entries 1 and %d)", op, graft_device_str(graft_tensor_device(ts[0]), a),
                               graft_device_str(graft_tensor_device(ts[i]), b), i + 1);
        }
        dt = graft_dtype_promote(dt, ts[i]->dtype);
        if (ts[i]->ndim == 0)
            return graft_error(GRAFT_ESHAPE, "%s: a 0-dim tensor (entry %d) cannot be concatenated", op, i + 1);
        if (ref < 0 && !join_legacy_empty(ts[i])) ref = i;
    }
    if (ref < 0) {
        int64_t zero = 0;
        return graft_tensor_empty(out, 1, &zero, dt, graft_tensor_device(ts[0]));
    }
    const graft_tensor *R = ts[ref];
    int dim;
    if ((st = graft_wrap_dim(&dim, dim_in, R->ndim, op))) return st;
    int64_t total = 0;
    bool fast = graft_tensor_device(R).type == GRAFT_CPU; /* host memcpy; devices use copy_ */
    for (int i = 0; i < n; i++) {
        const graft_tensor *x = ts[i];
        if (join_legacy_empty(x) && i != ref) continue;
        if (x->ndim != R->ndim)
            return graft_error(GRAFT_ESHAPE, "%s: tensors must have the same number of dims, got %d and %d", op,
                               R->ndim, x->ndim);
        for (int d = 0; d < R->ndim; d++)
            if (d != dim && x->shape[d] != R->shape[d])
                return graft_error(GRAFT_ESHAPE, "%s: sizes of tensors must match except in dim %d: got %lld and %lld in dim %d",
                                   op, dim + 1, (long long)R->shape[d], (long long)x->shape[d], d + 1);
        total += x->shape[dim];
        fast = fast && x->dtype == dt && graft_tensor_is_contiguous(x);
    }
    int64_t shape[GRAFT_MAX_DIMS];
    memcpy(shape, R->shape, sizeof(int64_t) * (size_t)R->ndim);
    shape[dim] = total;
    if ((st = graft_tensor_empty(out, R->ndim, shape, dt, graft_tensor_device(R)))) return st;
    if (graft_tensor_numel(*out) == 0) return GRAFT_OK;

    if (fast) {
        /* out viewed as [outer, total * inner]: each input contributes one run per row */
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < dim; d++) outer *= shape[d];
        for (int d = dim + 1; d < R->ndim; d++) inner *= shape[d];
        size_t esz = graft_dtype_size(dt), row = (size_t)(total * inner) * esz;
        char *base = graft_tensor_data(*out);
        #pragma omp parallel for if (outer > 1 && graft_should_parallelize(outer * total * inner))
        for (int64_t o = 0; o < outer; o++) {
            char *dst = base + (size_t)o * row;
            for (int i = 0; i < n; i++) {
                const graft_tensor *x = ts[i];
                if (join_legacy_empty(x)) continue;
                size_t run = (size_t)(x->shape[dim] * inner) * esz;
                memcpy(dst, (const char *)graft_tensor_data(x) + (size_t)o * run, run);
                dst += run;
            }
        }
        return GRAFT_OK;
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        graft_tensor *x = ts[i], *v;
        if (join_legacy_empty(x) && i != ref) continue;
        if ((st = graft_narrow(&v, *out, dim, off, x->shape[dim]))) goto fail;
        st = graft_tensor_copy_(v, x);
        graft_tensor_release(v);
        if (st) goto fail;
        off += x->shape[dim];
    }
    return GRAFT_OK;
fail:
    graft_tensor_release(*out);
    *out = NULL;
    return st;
}

graft_status graft_cat(graft_tensor **out, graft_tensor *const *ts, int n, int dim) {
    if (GRAFT_AG_ACTIVE(n > 0 && graft_ag_any(ts, n))) return graft_ag_cat(out, ts, n, dim, false);
    return join_cat("cat", out, ts, n, dim);
}

graft_status graft_stack(graft_tensor **out, graft_tensor *const *ts, int n, int dim_in) {
    if (GRAFT_AG_ACTIVE(n > 0 && graft_ag_any(ts, n))) return graft_ag_cat(out, ts, n, dim_in, true);
    char a[SHAPE_BUF], b[SHAPE_BUF];
    graft_status st;
    *out = NULL;
    if (n <= 0) return graft_error(GRAFT_EINVAL, "stack: expected a non-empty list of tensors");
    const graft_tensor *R = ts[0];
    for (int i = 1; i < n; i++) {
        bool same = ts[i]->ndim == R->ndim;
        for (int d = 0; same && d < R->ndim; d++) same = ts[i]->shape[d] == R->shape[d];
        if (!same)
            return graft_error(GRAFT_ESHAPE, "stack: expected each tensor to be equal size, but got %s at entry 1 and %s at entry %d",
                               graft_shape_str(R->ndim, R->shape, a, sizeof a),
                               graft_shape_str(ts[i]->ndim, ts[i]->shape, b, sizeof b), i + 1);
    }
    int dim;
    if ((st = graft_wrap_dim(&dim, dim_in, R->ndim + 1, "stack"))) return st;
    graft_tensor **views = calloc((size_t)n, sizeof *views);
    if (!views) return graft_error(GRAFT_ENOMEM, "stack: out of memory");
    for (int i = 0; i < n; i++)
        if ((st = graft_unsqueeze(&views[i], ts[i], dim))) goto done;
    st = join_cat("stack", out, views, n, dim);
done:
    for (int i = 0; i < n; i++) graft_tensor_release(views[i]);
    free(views);
    return st;
}

/* ---- split, chunk ---- */

graft_status graft_split_count(int64_t *count, const graft_tensor *t, int dim, int64_t split_size) {
    if (t->ndim == 0) return graft_error(GRAFT_ESHAPE, "split: cannot split a 0-dim tensor");
    int64_t size = t->shape[dim];
    if (split_size < 0) return graft_error(GRAFT_EINVAL, "split: split_size must be non-negative, got %lld", (long long)split_size);
    if (split_size == 0 && size != 0)
        return graft_error(GRAFT_EINVAL, "split: split_size can only be 0 if the dim's size is 0, but dim %d has size %lld",
                           dim + 1, (long long)size);
    *count = size == 0 ? 1 : (size + split_size - 1) / split_size;
    return GRAFT_OK;
}

graft_status graft_split_sizes_check(const graft_tensor *t, int dim, const int64_t *sizes, int64_t n) {
    if (t->ndim == 0) return graft_error(GRAFT_ESHAPE, "split: cannot split a 0-dim tensor");
    int64_t sum = 0;
    for (int64_t i = 0; i < n; i++) {
        if (sizes[i] < 0)
            return graft_error(GRAFT_EINVAL, "split: split sizes must be non-negative, got %lld", (long long)sizes[i]);
        sum += sizes[i];
    }
    if (sum != t->shape[dim])
        return graft_error(GRAFT_ESHAPE, "split: split sizes must sum to %lld (the size of dim %d), but they sum to %lld",
                           (long long)t->shape[dim], dim + 1, (long long)sum);
    return GRAFT_OK;
}

graft_status graft_chunk_size(int64_t *piece, int64_t *count, const graft_tensor *t, int dim, int64_t chunks) {
    if (t->ndim == 0) return graft_error(GRAFT_ESHAPE, "chunk: cannot chunk a 0-dim tensor");
    if (chunks <= 0) return graft_error(GRAFT_EINVAL, "chunk: chunks must be positive, got %lld", (long long)chunks);
    int64_t size = t->shape[dim];
    if (size == 0) {
        *piece = 0;
        *count = chunks;
        return GRAFT_OK;
    }
    *piece = (size + chunks - 1) / chunks;
    *count = (size + *piece - 1) / *piece;
    return GRAFT_OK;
}

/* ---- flip, roll ---- */

/* A view walking the flipped dims backwards (negative strides; it never escapes this
 * function), copied by the strided copy into a fresh tensor. */
graft_status graft_flip(graft_tensor **out, graft_tensor *t, const int *dims, int n) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_flip(out, t, dims, n);
    bool seen[GRAFT_MAX_DIMS] = {false};
    *out = NULL;
    int64_t stride[GRAFT_MAX_DIMS], offset = t->offset;
    memcpy(stride, t->stride, sizeof(int64_t) * (size_t)t->ndim);
    for (int i = 0; i < n; i++) {
        int d = dims[i];
        if (d < 0 || d >= t->ndim)
            return graft_error(GRAFT_EINDEX, "flip: dim %d is out of range for a tensor with %d dims", d + 1, t->ndim);
        if (seen[d]) return graft_error(GRAFT_EINVAL, "flip: dim %d appears more than once", d + 1);
        seen[d] = true;
    }
    if (graft_tensor_numel(t) == 0) return graft_tensor_clone(out, t);
    for (int d = 0; d < t->ndim; d++) {
        if (!seen[d]) continue;
        offset += (t->shape[d] - 1) * t->stride[d];
        stride[d] = -t->stride[d];
    }
    graft_tensor *v;
    graft_status st = graft_tensor_view_of(&v, t, t->ndim, t->shape, stride, offset);
    if (st) return st;
    st = graft_tensor_clone(out, v);
    graft_tensor_release(v);
    return st;
}

/* +1: t rolled along one dim: two narrowed copies. */
static graft_status join_roll1(graft_tensor **out, graft_tensor *t, int64_t shift, int dim) {
    graft_status st;
    graft_tensor *a = NULL, *b = NULL;
    if ((st = graft_tensor_empty(out, t->ndim, t->shape, t->dtype, graft_tensor_device(t)))) return st;
    int64_t size = t->shape[dim];
    if (size == 0) return GRAFT_OK;
    int64_t s = ((shift % size) + size) % size;
    /* out[s:] = t[:size - s]; out[:s] = t[size - s:] */
    if ((st = graft_narrow(&a, *out, dim, s, size - s)) || (st = graft_narrow(&b, t, dim, 0, size - s)) ||
        (st = graft_tensor_copy_(a, b)))
        goto done;
    graft_tensor_release(a);
    graft_tensor_release(b);
    a = b = NULL;
    if ((st = graft_narrow(&a, *out, dim, 0, s)) || (st = graft_narrow(&b, t, dim, size - s, s)) ||
        (st = graft_tensor_copy_(a, b)))
        goto done;
done:
    graft_tensor_release(a);
    graft_tensor_release(b);
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

graft_status graft_roll(graft_tensor **out, graft_tensor *t, const int64_t *shifts, int n_shifts,
                        const int *dims, int n_dims) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_roll(out, t, shifts, n_shifts, dims, n_dims);
    graft_status st;
    *out = NULL;
    if (n_dims == 0) {
        if (n_shifts != 1)
            return graft_error(GRAFT_EINVAL, "roll: expected one shift when no dims are given, got %d", n_shifts);
        graft_tensor *c, *flat, *r;
        int64_t numel = graft_tensor_numel(t), one = 1;
        if ((st = graft_tensor_contiguous(&c, t))) return st;
        st = graft_tensor_view_of(&flat, c, 1, &numel, &one, c->offset);
        graft_tensor_release(c);
        if (st) return st;
        st = join_roll1(&r, flat, shifts[0], 0);
        graft_tensor_release(flat);
        if (st) return st;
        st = graft_view(out, r, t->ndim, t->shape);
        graft_tensor_release(r);
        return st;
    }
    if (n_shifts != n_dims)
        return graft_error(GRAFT_EINVAL, "roll: shifts and dims must have the same length, got %d and %d", n_shifts, n_dims);
    for (int i = 0; i < n_dims; i++)
        if (dims[i] < 0 || dims[i] >= t->ndim)
            return graft_error(GRAFT_EINDEX, "roll: dim %d is out of range for a tensor with %d dims", dims[i] + 1, t->ndim);
    graft_tensor *cur = t;
    graft_tensor_retain(cur);
    for (int i = 0; i < n_dims; i++) {
        graft_tensor *next;
        st = join_roll1(&next, cur, shifts[i], dims[i]);
        graft_tensor_release(cur);
        if (st) return st;
        cur = next;
    }
    *out = cur;
    return GRAFT_OK;
}

/* ---- repeat, tile ---- */

/* The input seen as [r0, s0, r1, s1, ...] with stride 0 on each repeat dim (dims with
 * r = 1 left out), copied into the output seen with the same shape. */
graft_status graft_repeat(graft_tensor **out, graft_tensor *t, const int64_t *reps, int n) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_repeat(out, t, reps, n, false);
    graft_status st;
    *out = NULL;
    if (n < t->ndim)
        return graft_error(GRAFT_EINVAL, "repeat: got %d repeat counts for a tensor with %d dims (need at least %d)",
                           n, t->ndim, t->ndim);
    if (n > GRAFT_MAX_DIMS) return graft_error(GRAFT_EINVAL, "repeat: at most %d repeat counts", GRAFT_MAX_DIMS);
    int64_t ishape[GRAFT_MAX_DIMS], istride[GRAFT_MAX_DIMS], oshape[GRAFT_MAX_DIMS];
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (reps[i] < 0)
            return graft_error(GRAFT_EINVAL, "repeat: repeat counts must be non-negative, got %lld", (long long)reps[i]);
        int td = i - (n - t->ndim);
        int64_t size = td >= 0 ? t->shape[td] : 1, stride = td >= 0 ? t->stride[td] : 0;
        oshape[i] = reps[i] * size;
        if (m + (reps[i] != 1) + 1 > GRAFT_MAX_DIMS)
            return graft_error(GRAFT_EINVAL, "repeat: too many dims to repeat at once (at most %d repeated dims plus dims)",
                               GRAFT_MAX_DIMS);
        if (reps[i] != 1) { ishape[m] = reps[i]; istride[m++] = 0; }
        ishape[m] = size;
        istride[m++] = stride;
    }
    if ((st = graft_tensor_empty(out, n, oshape, t->dtype, graft_tensor_device(t)))) return st;
    if (graft_tensor_numel(*out) == 0) return GRAFT_OK;
    int64_t ostride[GRAFT_MAX_DIMS], s = 1;
    for (int i = m - 1; i >= 0; i--) { ostride[i] = s; s *= ishape[i]; }
    graft_tensor *in = NULL, *ov = NULL;
    if (!(st = graft_tensor_view_of(&in, t, m, ishape, istride, t->offset)) &&
        !(st = graft_tensor_view_of(&ov, *out, m, ishape, ostride, 0)))
        st = graft_tensor_copy_(ov, in);
    graft_tensor_release(in);
    graft_tensor_release(ov);
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

graft_status graft_tile(graft_tensor **out, graft_tensor *t, const int64_t *reps, int n) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_repeat(out, t, reps, n, true);
    if (n >= t->ndim) return graft_repeat(out, t, reps, n);
    int64_t padded[GRAFT_MAX_DIMS];
    int pad = t->ndim - n;
    for (int i = 0; i < pad; i++) padded[i] = 1;
    for (int i = 0; i < n; i++) padded[pad + i] = reps[i];
    return graft_repeat(out, t, padded, t->ndim);
}

/* ---- tril, triu, diag, diagonal ---- */

/* Zeroes, in every matrix of the last two dims, the columns outside the kept triangle:
 * tril keeps j <= i + k, triu keeps j >= i + k. Zero bits are zero in every dtype. */
static graft_status join_tri_(graft_tensor *t, int64_t k, bool lower, const char *op) {
    if (t->ndim < 2) return graft_error(GRAFT_ESHAPE, "%s: expected a tensor with at least 2 dims, got %d", op, t->ndim);
    int nb = t->ndim - 2;
    int64_t rows = t->shape[nb], cols = t->shape[nb + 1], rs = t->stride[nb], cs = t->stride[nb + 1];
    int64_t batch = 1, idx[GRAFT_MAX_DIMS] = {0};
    for (int d = 0; d < nb; d++) batch *= t->shape[d];
    size_t esz = graft_dtype_size(t->dtype);
    char *base = graft_tensor_data(t);
    if (rows == 0 || cols == 0) return GRAFT_OK;
    if (graft_tensor_device(t).type == GRAFT_CUDA) {
        graft_status st = graft_cuda_tri_(t, k, lower);
        if (!st) graft_tensor_bump(t);
        return st;
    }
    for (int64_t b = 0; b < batch; b++) {
        int64_t off = 0;
        for (int d = 0; d < nb; d++) off += idx[d] * t->stride[d];
        for (int64_t i = 0; i < rows; i++) {
            int64_t j0, j1; /* zero [j0, j1) */
            if (lower) { j0 = i + k + 1; j1 = cols; }
            else { j0 = 0; j1 = i + k; }
            if (j0 < 0) j0 = 0;
            if (j1 > cols) j1 = cols;
            if (j0 >= j1) continue;
            char *row = base + (off + i * rs) * (int64_t)esz;
            if (cs == 1) memset(row + j0 * (int64_t)esz, 0, (size_t)(j1 - j0) * esz);
            else for (int64_t j = j0; j < j1; j++) memset(row + j * cs * (int64_t)esz, 0, esz);
        }
        for (int d = nb - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
    graft_tensor_bump(t);
    return GRAFT_OK;
}

graft_status graft_tril_(graft_tensor *t, int64_t k) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_tri_(t, k, true);
    return join_tri_(t, k, true, "tril_");
}
graft_status graft_triu_(graft_tensor *t, int64_t k) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_tri_(t, k, false);
    return join_tri_(t, k, false, "triu_");
}

static graft_status join_tri(graft_tensor **out, graft_tensor *t, int64_t k, bool lower, const char *op) {
    *out = NULL;
    if (t->ndim < 2) return graft_error(GRAFT_ESHAPE, "%s: expected a tensor with at least 2 dims, got %d", op, t->ndim);
    graft_status st = graft_tensor_clone(out, t);
    if (st) return st;
    if ((st = join_tri_(*out, k, lower, op))) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

graft_status graft_tril(graft_tensor **out, graft_tensor *t, int64_t k) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_tri(out, t, k, true);
    return join_tri(out, t, k, true, "tril");
}
graft_status graft_triu(graft_tensor **out, graft_tensor *t, int64_t k) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_tri(out, t, k, false);
    return join_tri(out, t, k, false, "triu");
}

graft_status graft_diagonal(graft_tensor **out, graft_tensor *t, int64_t offset, int d1, int d2) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_diagonal(out, t, offset, d1, d2);
    *out = NULL;
    if (t->ndim < 2) return graft_error(GRAFT_ESHAPE, "diagonal: expected a tensor with at least 2 dims, got %d", t->ndim);
    if (d1 < 0 || d1 >= t->ndim || d2 < 0 || d2 >= t->ndim)
        return graft_error(GRAFT_EINDEX, "diagonal: dims %d and %d are out of range for a tensor with %d dims", d1 + 1, d2 + 1, t->ndim);
    if (d1 == d2) return graft_error(GRAFT_EINVAL, "diagonal: the two dims must differ, both are %d", d1 + 1);
    int64_t len, start = t->offset;
    if (offset >= 0) {
        len = t->shape[d2] - offset < t->shape[d1] ? t->shape[d2] - offset : t->shape[d1];
        if (len > 0) start += offset * t->stride[d2];
    } else {
        len = t->shape[d1] + offset < t->shape[d2] ? t->shape[d1] + offset : t->shape[d2];
        if (len > 0) start -= offset * t->stride[d1];
    }
    if (len < 0) len = 0;
    int64_t shape[GRAFT_MAX_DIMS], stride[GRAFT_MAX_DIMS];
    int n = 0;
    for (int d = 0; d < t->ndim; d++) {
        if (d == d1 || d == d2) continue;
        shape[n] = t->shape[d];
        stride[n++] = t->stride[d];
    }
    shape[n] = len;
    stride[n++] = t->stride[d1] + t->stride[d2];
    return graft_tensor_view_of(out, t, n, shape, stride, start);
}

graft_status graft_diag(graft_tensor **out, graft_tensor *t, int64_t k) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_diag(out, t, k);
    graft_status st;
    *out = NULL;
    if (t->ndim == 2) {
        graft_tensor *v;
        if ((st = graft_diagonal(&v, t, k, 0, 1))) return st;
        st = graft_tensor_clone(out, v);
        graft_tensor_release(v);
        return st;
    }
    if (t->ndim != 1) return graft_error(GRAFT_ESHAPE, "diag: expected a 1-D or 2-D tensor, got %d dims", t->ndim);
    int64_t n = t->shape[0], ak = k < 0 ? -k : k, m = n + ak;
    int64_t shape[2] = {m, m};
    if ((st = graft_tensor_empty(out, 2, shape, t->dtype, graft_tensor_device(t)))) return st;
    if (graft_tensor_device(t).type != GRAFT_CPU) {
        /* zeros, then t copied into the diagonal view (device kernels, no host access) */
        graft_tensor *d = NULL;
        if (!(st = graft_tensor_fill_int_(*out, 0)) && !(st = graft_diagonal(&d, *out, k, 0, 1)))
            st = graft_tensor_copy_(d, t);
        graft_tensor_release(d);
        if (st) {
            graft_tensor_release(*out);
            *out = NULL;
        }
        return st;
    }
    size_t esz = graft_dtype_size(t->dtype);
    char *o = graft_tensor_data(*out);
    const char *s = graft_tensor_data(t);
    memset(o, 0, (size_t)(m * m) * esz);
    int64_t r0 = k < 0 ? ak : 0, c0 = k > 0 ? ak : 0;
    for (int64_t i = 0; i < n; i++)
        memcpy(o + (size_t)((r0 + i) * m + c0 + i) * esz, s + i * t->stride[0] * (int64_t)esz, esz);
    return GRAFT_OK;
}
