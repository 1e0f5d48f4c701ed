/* graft ops: joining, splitting and rearranging. cat/stack copy (with PyTorch's dtype
 * promotion across inputs), split/chunk only compute piece sizes (the bindings narrow),
 * diagonal is a view, the rest (flip, roll, repeat, tril/triu, diag) make fresh tensors.
 * Dims are 0-based; cat and stack take dims in [-ndim, ndim) and wrap them themselves,
 * since the reference tensor is theirs to choose.
 *
 *     graft_tensor *parts[2] = {a, b}, *ab;
 *     graft_cat(&ab, parts, 2, 0);   // [2, 3] and [4, 3] -> [6, 3]
 */
#ifndef GRAFT_OPS_JOIN_H
#define GRAFT_OPS_JOIN_H

#include "tensor/tensor.h"

/* +1: the tensors joined along dim (-ndim..ndim-1). 1-D empty tensors are skipped, as in
 * PyTorch; the dtype is the promotion of every input's. */
graft_status graft_cat(graft_tensor **out, graft_tensor *const *ts, int n, int dim);
/* +1: equal-shaped tensors stacked along a new dim (-(ndim+1)..ndim). */
graft_status graft_stack(graft_tensor **out, graft_tensor *const *ts, int n, int dim);

/* Pieces of split(split_size) along dim: *count pieces of split_size, the last smaller. */
graft_status graft_split_count(int64_t *count, const graft_tensor *t, int dim, int64_t split_size);
/* Checks that split sizes are non-negative and sum to t's size along dim. */
graft_status graft_split_sizes_check(const graft_tensor *t, int dim, const int64_t *sizes, int64_t n);
/* chunk(chunks): pieces of ceil(size / chunks) (the last smaller); *count may be less
 * than chunks, as in PyTorch. */
graft_status graft_chunk_size(int64_t *piece, int64_t *count, const graft_tensor *t, int dim, int64_t chunks);

/* +1: t reversed along each of the n dims (distinct). */
graft_status graft_flip(graft_tensor **out, graft_tensor *t, const int *dims, int n);
/* +1: t rolled by shifts[i] along dims[i]; n_dims = 0 rolls the flattened tensor by
 * shifts[0] (n_shifts must then be 1). */
graft_status graft_roll(graft_tensor **out, graft_tensor *t, const int64_t *shifts, int n_shifts,
                        const int *dims, int n_dims);
/* +1: PyTorch's repeat: n >= ndim repeat counts (leading ones add dims). */
graft_status graft_repeat(graft_tensor **out, graft_tensor *t, const int64_t *reps, int n);
/* +1: PyTorch's tile: as repeat, padding reps with leading ones when n < ndim. */
graft_status graft_tile(graft_tensor **out, graft_tensor *t, const int64_t *reps, int n);

/* Lower (tril) or upper (triu) triangle of the last two dims, from diagonal k (0 the
 * main diagonal, k > 0 above it); the rest zeroed. */
graft_status graft_tril(graft_tensor **out, graft_tensor *t, int64_t k);
graft_status graft_triu(graft_tensor **out, graft_tensor *t, int64_t k);
graft_status graft_tril_(graft_tensor *t, int64_t k);
graft_status graft_triu_(graft_tensor *t, int64_t k);
/* +1: 1-D t -> square matrix with t on diagonal k; 2-D t -> a copy of its diagonal k. */
graft_status graft_diag(graft_tensor **out, graft_tensor *t, int64_t k);
/* +1, a view: diagonal `offset` of dims d1 and d2 (0-based, distinct), appended last. */
graft_status graft_diagonal(graft_tensor **out, graft_tensor *t, int64_t offset, int d1, int d2);

#endif
