/* graft ops: indexing. Table slicing (`t[{...}]`: basic entries make views, index and
 * mask tensors make copies, as PyTorch), index_select, gather, scatter, index_add,
 * masked_fill, masked_select, take and nonzero. Dims are 0-based here; index VALUES in
 * index tensors are 0-based as in PyTorch. Every index is bounds-checked before any
 * element moves; a bad one is an error naming the op, the value and the size (on CUDA
 * the check runs on the device and one flag comes back). Every tensor of an op lives on
 * one device ("expected all tensors to be on the same device"), except that table
 * indexing copies CPU index tensors to a CUDA tensor's device, as PyTorch does.
 *
 *     graft_ix key[2] = {{.kind = GRAFT_IX_ALL}, {.kind = GRAFT_IX_INT, .start = -1}};
 *     graft_index(&col, t, key, 2);   // t[{":", -1}]: the last column, a view
 */
#ifndef GRAFT_OPS_INDEX_H
#define GRAFT_OPS_INDEX_H

#include "tensor/tensor.h"

/* ---- a scalar from Lua (integers stay exact) ---- */
typedef struct {
    bool is_int;
    int64_t i;
    double d;
} graft_ix_value;

/* Stores v into one element of dtype d at p. */
void graft_ix_value_store(void *p, graft_dtype d, graft_ix_value v);

/* ---- table indexing ---- */
typedef enum {
    GRAFT_IX_INT,      /* select `start` (0-based, negative from the end); removes the dim */
    GRAFT_IX_RANGE,    /* elements start..last inclusive (0-based, negative from the end,
                        * clamped as Python slices), every `step`-th; a view */
    GRAFT_IX_ALL,      /* the whole dim */
    GRAFT_IX_ELLIPSIS, /* as many whole dims as the other entries leave */
    GRAFT_IX_NEWAXIS,  /* a new dim of size 1 */
    GRAFT_IX_TENSOR    /* int64 indices along this dim, or a bool/uint8 mask over the
                        * next mask->ndim dims (advanced indexing: the result is a copy) */
} graft_ix_kind;

typedef struct {
    graft_ix_kind kind;
    int64_t start, last, step;   /* INT uses start; RANGE uses all three */
    bool has_start, has_last;    /* RANGE: an omitted end means the dim's edge */
    graft_tensor *tensor;        /* TENSOR: borrowed */
} graft_ix;

/* +1: t indexed by the n entries (one per leading dim, PyTorch's rules for where the
 * advanced-index dims go). A view of t when no entry is a tensor, else a fresh tensor. */
graft_status graft_index(graft_tensor **out, graft_tensor *t, const graft_ix *ix, int n);
/* t[ix] = value: value broadcast to the indexed shape and converted to t's dtype; with
 * index tensors, duplicate positions get one of the values (the last, on the CPU; any
 * one on CUDA). */
graft_status graft_index_put_(graft_tensor *t, const graft_ix *ix, int n, graft_tensor *value);

/* ---- gather / scatter family ---- */
/* +1: t's slices along dim at `index` (1-D or 0-D, int64 or int32). */
graft_status graft_index_select(graft_tensor **out, graft_tensor *t, int dim, graft_tensor *index);
/* +1: out[i][j] = t[index[i][j]][j] (dim 0; likewise for others); index int64, same
 * ndim as t, no larger than t except along dim. Shape of index. */
graft_status graft_gather(graft_tensor **out, graft_tensor *t, int dim, graft_tensor *index);
/* t[index[i][j]][j] = src[i][j] (dim 0); src has t's dtype; index no larger than src, nor
 * than t except along dim. Positions written twice keep the later value (on CUDA, one
 * of them, as PyTorch's kernel). */
graft_status graft_scatter_(graft_tensor *t, int dim, graft_tensor *index, graft_tensor *src);
/* As scatter_, writing one value everywhere index points. */
graft_status graft_scatter_value_(graft_tensor *t, int dim, graft_tensor *index, graft_ix_value v);
/* t[index[i][j]][j] += src[i][j] (dim 0). CUDA adds with atomics: float sums of
 * duplicates come in no fixed order (bitwise nondeterministic, as in PyTorch). */
graft_status graft_scatter_add_(graft_tensor *t, int dim, graft_tensor *index, graft_tensor *src);
/* t.select(dim, index[i]) += alpha * src.select(dim, i); index 1-D (int64 or int32).
 * CUDA: a scatter_add, with its atomics. */
graft_status graft_index_add_(graft_tensor *t, int dim, graft_tensor *index, graft_tensor *src,
                              graft_ix_value alpha);

/* ---- masks ---- */
/* t[mask] = v where mask (bool or uint8) broadcasts to t's shape. */
graft_status graft_masked_fill_(graft_tensor *t, graft_tensor *mask, graft_ix_value v);
/* +1: t and mask broadcast together, then masked_fill_ on a copy. */
graft_status graft_masked_fill(graft_tensor **out, graft_tensor *t, graft_tensor *mask, graft_ix_value v);
/* +1: 1-D, the elements of t (broadcast with mask) where mask is set, in row-major order. */
graft_status graft_masked_select(graft_tensor **out, graft_tensor *t, graft_tensor *mask);
/* +1: t flattened, indexed by index (int64, any shape; negative counts from the end). */
graft_status graft_take(graft_tensor **out, graft_tensor *t, graft_tensor *index);
/* +1: int64 [n, ndim], the 0-based coordinates of the nonzero elements (row-major). */
graft_status graft_nonzero(graft_tensor **out, graft_tensor *t);

#endif
