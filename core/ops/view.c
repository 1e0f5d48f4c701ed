/* graft ops: views (view, reshape, flatten, squeeze, unsqueeze, transpose, permute,
 * expand, narrow, slice). They only compute sizes and strides; no element moves, except
 * reshape of a layout no view can express. */
#include "view.h"

#include <string.h>

#include "autograd/record.h"

#define SHAPE_BUF (GRAFT_MAX_DIMS * 24 + 3)

graft_status graft_infer_shape(int64_t *shape, int ndim, int64_t numel, const char *op) {
    int infer = -1;
    int64_t prod = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == -1) {
            if (infer >= 0) return graft_error(GRAFT_EINVAL, "%s: only one dimension can be inferred", op);
            infer = i;
        } else if (shape[i] < 0) {
            return graft_error(GRAFT_EINVAL, "%s: invalid shape dimension %lld", op, (long long)shape[i]);
        } else {
            prod *= shape[i];
        }
    }
    if (infer >= 0 && prod != 0 && numel % prod == 0) shape[infer] = numel / prod;
    else if (infer < 0 && prod == numel) return GRAFT_OK;
    else {
        char buf[SHAPE_BUF];
        return graft_error(GRAFT_ESHAPE, "%s: shape %s is invalid for %lld elements", op,
                           graft_shape_str(ndim, shape, buf, sizeof buf), (long long)numel);
    }
    return GRAFT_OK;
}

/* PyTorch's stride computation for a view: walks the old dims from the innermost,
 * grouping them into chunks that are contiguous among themselves, and maps each chunk
 * onto a run of new dims with the same element count. Returns false when a new dim
 * would span two chunks. */
static bool view_strides(const graft_tensor *t, int ndim, const int64_t *shape, int64_t *stride) {
    int64_t oshape[GRAFT_MAX_DIMS], ostride[GRAFT_MAX_DIMS];
    int on = t->ndim;
    memcpy(oshape, t->shape, sizeof(int64_t) * (size_t)on);
    memcpy(ostride, t->stride, sizeof(int64_t) * (size_t)on);
    if (on == 0) { on = 1; oshape[0] = 1; ostride[0] = 1; }
    int64_t numel = 1;
    for (int i = 0; i < on; i++) numel *= oshape[i];
    if (numel == 0) {
        /* any geometry works for no elements: contiguous strides */
        int64_t s = 1;
        for (int i = ndim - 1; i >= 0; i--) { stride[i] = s; s *= shape[i] > 0 ? shape[i] : 1; }
        return true;
    }
    int view_d = ndim - 1;
    int64_t chunk_base = ostride[on - 1], tensor_numel = 1, view_numel = 1;
    for (int td = on - 1; td >= 0; td--) {
        tensor_numel *= oshape[td];
        if (td == 0 || (oshape[td - 1] != 1 && ostride[td - 1] != tensor_numel * chunk_base)) {
            while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
                stride[view_d] = view_numel * chunk_base;
                view_numel *= shape[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel) return false;
            if (td > 0) {
                chunk_base = ostride[td - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1;
}

graft_status graft_view(graft_tensor **out, graft_tensor *t, int ndim, const int64_t *shape_in) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_view(out, t, ndim, shape_in, false);
    int64_t shape[GRAFT_MAX_DIMS], stride[GRAFT_MAX_DIMS];
    *out = NULL;
    if (ndim > GRAFT_MAX_DIMS) return graft_error(GRAFT_EINVAL, "view: at most %d dims", GRAFT_MAX_DIMS);
    memcpy(shape, shape_in, sizeof(int64_t) * (size_t)ndim);
    graft_status st = graft_infer_shape(shape, ndim, graft_tensor_numel(t), "view");
    if (st) return st;
    if (!view_strides(t, ndim, shape, stride))
        return graft_error(GRAFT_ESHAPE, "view: size is not compatible with the input's size and stride "
                                         "(a dimension spans two non-contiguous blocks); use reshape instead");
    return graft_tensor_view_of(out, t, ndim, shape, stride, t->offset);
}

graft_status graft_reshape(graft_tensor **out, graft_tensor *t, int ndim, const int64_t *shape_in) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_view(out, t, ndim, shape_in, true);
    int64_t shape[GRAFT_MAX_DIMS], stride[GRAFT_MAX_DIMS];
    *out = NULL;
    if (ndim > GRAFT_MAX_DIMS) return graft_error(GRAFT_EINVAL, "reshape: at most %d dims", GRAFT_MAX_DIMS);
    memcpy(shape, shape_in, sizeof(int64_t) * (size_t)ndim);
    graft_status st = graft_infer_shape(shape, ndim, graft_tensor_numel(t), "reshape");
    if (st) return st;
    if (view_strides(t, ndim, shape, stride))
        return graft_tensor_view_of(out, t, ndim, shape, stride, t->offset);
    graft_tensor *c;
    st = graft_tensor_clone(&c, t);
    if (st) return st;
    st = graft_view(out, c, ndim, shape);
    graft_tensor_release(c);
    return st;
}

graft_status graft_flatten(graft_tensor **out, graft_tensor *t, int start, int end) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_flatten(out, t, start, end);
    *out = NULL;
    if (t->ndim == 0) return graft_reshape(out, t, 1, (int64_t[]){1});
    if (start > end) return graft_error(GRAFT_EINVAL, "flatten: start_dim %d comes after end_dim %d", start + 1, end + 1);
    int64_t shape[GRAFT_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < start; i++) shape[n++] = t->shape[i];
    int64_t m = 1;
    for (int i = start; i <= end; i++) m *= t->shape[i];
    shape[n++] = m;
    for (int i = end + 1; i < t->ndim; i++) shape[n++] = t->shape[i];
    return graft_reshape(out, t, n, shape);
}

graft_status graft_squeeze(graft_tensor **out, graft_tensor *t, int dim) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_squeeze(out, t, dim);
    int64_t shape[GRAFT_MAX_DIMS], stride[GRAFT_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < t->ndim; i++) {
        bool drop = t->shape[i] == 1 && (dim < 0 || dim == i);
        if (drop) continue;
        shape[n] = t->shape[i];
        stride[n++] = t->stride[i];
    }
    return graft_tensor_view_of(out, t, n, shape, stride, t->offset);
}

graft_status graft_unsqueeze(graft_tensor **out, graft_tensor *t, int dim) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_unsqueeze(out, t, dim);
    *out = NULL;
    if (t->ndim >= GRAFT_MAX_DIMS) return graft_error(GRAFT_EINVAL, "unsqueeze: at most %d dims", GRAFT_MAX_DIMS);
    if (dim < 0 || dim > t->ndim)
        return graft_error(GRAFT_EINDEX, "unsqueeze: dim %d is out of range for a tensor with %d dims", dim + 1, t->ndim);
    int64_t shape[GRAFT_MAX_DIMS], stride[GRAFT_MAX_DIMS];
    int n = 0;
    for (int i = 0; i <= t->ndim; i++) {
        if (i == dim) {
            shape[n] = 1;
            stride[n++] = i < t->ndim ? t->shape[i] * t->stride[i] : 1;
        }
        if (i < t->ndim) {
            shape[n] = t->shape[i];
            stride[n++] = t->stride[i];
        }
    }
    return graft_tensor_view_of(out, t, n, shape, stride, t->offset);
}

graft_status graft_transpose(graft_tensor **out, graft_tensor *t, int d0, int d1) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_transpose(out, t, d0, d1);
    int64_t shape[GRAFT_MAX_DIMS], stride[GRAFT_MAX_DIMS];
    *out = NULL;
    if (t->ndim == 0 && d0 == 0 && d1 == 0) return graft_tensor_view_of(out, t, 0, t->shape, t->stride, t->offset);
    if (d0 < 0 || d0 >= t->ndim || d1 < 0 || d1 >= t->ndim)
        return graft_error(GRAFT_EINDEX, "transpose: dims %d and %d are out of range for a tensor with %d dims",
                           d0 + 1, d1 + 1, t->ndim);
    memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    memcpy(stride, t->stride, sizeof(int64_t) * (size_t)t->ndim);
    shape[d0] = t->shape[d1]; shape[d1] = t->shape[d0];
    stride[d0] = t->stride[d1]; stride[d1] = t->stride[d0];
    return graft_tensor_view_of(out, t, t->ndim, shape, stride, t->offset);
}

graft_status graft_permute(graft_tensor **out, graft_tensor *t, const int *perm, int n) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_permute(out, t, perm, n);
    int64_t shape[GRAFT_MAX_DIMS], stride[GRAFT_MAX_DIMS];
    bool seen[GRAFT_MAX_DIMS] = {false};
    *out = NULL;
    if (n != t->ndim)
        return graft_error(GRAFT_EINVAL, "permute: got %d dims for a tensor with %d dims", n, t->ndim);
    for (int i = 0; i < n; i++) {
        if (perm[i] < 0 || perm[i] >= n || seen[perm[i]])
            return graft_error(GRAFT_EINVAL, "permute: dims must be a permutation of 1..%d (dim %d repeated or out of range)",
                               n, perm[i] + 1);
        seen[perm[i]] = true;
        shape[i] = t->shape[perm[i]];
        stride[i] = t->stride[perm[i]];
    }
    return graft_tensor_view_of(out, t, n, shape, stride, t->offset);
}

graft_status graft_expand(graft_tensor **out, graft_tensor *t, int ndim, const int64_t *sizes) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_expand(out, t, ndim, sizes);
    int64_t shape[GRAFT_MAX_DIMS], stride[GRAFT_MAX_DIMS];
    char a[SHAPE_BUF], b[SHAPE_BUF];
    *out = NULL;
    if (ndim < t->ndim || ndim > GRAFT_MAX_DIMS)
        return graft_error(GRAFT_ESHAPE, "expand: the number of sizes (%d) must be at least the number of dims (%d)",
                           ndim, t->ndim);
    for (int i = ndim - 1; i >= 0; i--) {
        int td = i - (ndim - t->ndim);
        int64_t want = sizes[i];
        if (td < 0) {
            if (want < 0) return graft_error(GRAFT_ESHAPE, "expand: -1 is not allowed for a new leading dim");
            shape[i] = want;
            stride[i] = 0;
            continue;
        }
        int64_t have = t->shape[td];
        if (want == -1 || want == have) {
            shape[i] = have;
            stride[i] = t->stride[td];
        } else if (have == 1 && want >= 0) {
            shape[i] = want;
            stride[i] = 0;
        } else {
            return graft_error(GRAFT_ESHAPE, "expand: the size of tensor %s cannot be expanded to %s (dim %d: %lld to %lld)",
                               graft_shape_str(t->ndim, t->shape, a, sizeof a),
                               graft_shape_str(ndim, sizes, b, sizeof b), i + 1, (long long)have, (long long)want);
        }
    }
    return graft_tensor_view_of(out, t, ndim, shape, stride, t->offset);
}

graft_status graft_narrow(graft_tensor **out, graft_tensor *t, int dim, int64_t start, int64_t length) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_narrow(out, t, dim, start, length);
    *out = NULL;
    if (dim < 0 || dim >= t->ndim)
        return graft_error(GRAFT_EINDEX, "narrow: dim %d is out of range for a tensor with %d dims", dim + 1, t->ndim);
    if (start < 0 || length < 0 || start + length > t->shape[dim])
        return graft_error(GRAFT_EINDEX, "narrow: start %lld + length %lld exceeds dim %d of size %lld",
                           (long long)(start + 1), (long long)length, dim + 1, (long long)t->shape[dim]);
    int64_t shape[GRAFT_MAX_DIMS];
    memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    shape[dim] = length;
    return graft_tensor_view_of(out, t, t->ndim, shape, t->stride, t->offset + start * t->stride[dim]);
}

graft_status graft_slice(graft_tensor **out, graft_tensor *t, int dim, int64_t start, int64_t stop, int64_t step) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_slice(out, t, dim, start, stop, step);
    *out = NULL;
    if (dim < 0 || dim >= t->ndim)
        return graft_error(GRAFT_EINDEX, "slice: dim %d is out of range for a tensor with %d dims", dim + 1, t->ndim);
    if (step <= 0) return graft_error(GRAFT_EINVAL, "slice: step must be positive, got %lld", (long long)step);
    int64_t size = t->shape[dim];
    if (start < 0) start = 0;
    if (stop > size) stop = size;
    int64_t len = stop > start ? (stop - start + step - 1) / step : 0;
    int64_t shape[GRAFT_MAX_DIMS], stride[GRAFT_MAX_DIMS];
    memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    memcpy(stride, t->stride, sizeof(int64_t) * (size_t)t->ndim);
    shape[dim] = len;
    stride[dim] = t->stride[dim] * step;
    return graft_tensor_view_of(out, t, t->ndim, shape, stride, t->offset + (len ? start * t->stride[dim] : 0));
}
