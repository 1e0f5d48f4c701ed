/* graft ops: views. Each returns +1 reference to a tensor sharing t's storage (reshape
 * copies only when no view is possible). Dims are 0-based here; the bindings convert
 * from Lua's 1-based dims. Shapes may hold one -1 (inferred) where noted. */
#ifndef GRAFT_OPS_VIEW_H
#define GRAFT_OPS_VIEW_H

#include "tensor/tensor.h"

/* view: new shape (one -1 allowed) over the same storage; fails when the strides do not
 * allow it ("use reshape"). */
graft_status graft_view(graft_tensor **out, graft_tensor *t, int ndim, const int64_t *shape);
/* reshape: a view when possible, else a contiguous copy reshaped. */
graft_status graft_reshape(graft_tensor **out, graft_tensor *t, int ndim, const int64_t *shape);
/* Resolves a shape with one -1 against numel; `op` names the caller in errors. */
graft_status graft_infer_shape(int64_t *shape, int ndim, int64_t numel, const char *op);
graft_status graft_flatten(graft_tensor **out, graft_tensor *t, int start, int end);
/* squeeze: dim < 0 removes every size-1 dim. */
graft_status graft_squeeze(graft_tensor **out, graft_tensor *t, int dim);
/* unsqueeze: dim in [0, ndim]. */
graft_status graft_unsqueeze(graft_tensor **out, graft_tensor *t, int dim);
graft_status graft_transpose(graft_tensor **out, graft_tensor *t, int d0, int d1);
/* permute: perm is a permutation of 0..ndim-1. */
graft_status graft_permute(graft_tensor **out, graft_tensor *t, const int *perm, int n);
/* expand: sizes right-aligned with t's, -1 keeps a dim; new leading dims allowed. */
graft_status graft_expand(graft_tensor **out, graft_tensor *t, int ndim, const int64_t *sizes);
graft_status graft_narrow(graft_tensor **out, graft_tensor *t, int dim, int64_t start, int64_t length);
/* slice: elements start, start+step, ... < stop along dim (0-based, stop exclusive). */
graft_status graft_slice(graft_tensor **out, graft_tensor *t, int dim, int64_t start, int64_t stop, int64_t step);

#endif
