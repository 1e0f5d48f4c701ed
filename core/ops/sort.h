/* graft ops: sorting along a dim with PyTorch 1.13 semantics: sort, argsort and topk.
 *
 * Dims are 0-based here (negative counts from the end). Values keep t's dtype; indices
 * are 0-based int64 positions along dim. Both results are fresh contiguous tensors
 * (+1 reference each for the caller), on t's device.
 *
 *     graft_tensor *v, *i;
 *     if (graft_topk(&v, &i, logits, 5, -1, true, true)) puts(graft_last_error());
 *
 * Order: NaN is larger than every number (last ascending, first descending). Equal
 * values keep their original order (the sort is always stable, which is one valid
 * answer for stable = false too); topk picks, among equal values, the earlier ones.
 * The CPU kernel runs a merge sort per row, rows in parallel; CUDA tensors are sorted
 * through the CPU (a fallback: correct, not fast).
 */
#ifndef GRAFT_OPS_SORT_H
#define GRAFT_OPS_SORT_H

#include "tensor/tensor.h"

/* values (t's dtype) and indices (int64), both t's shape. Differentiable in values
 * (SortBackward0). stable is accepted for PyTorch's signature: the sort is stable. */
graft_status graft_sort(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int dim, bool descending,
                        bool stable);
/* The indices of graft_sort alone. */
graft_status graft_argsort(graft_tensor **indices, graft_tensor *t, int dim, bool descending, bool stable);
/* The k largest (largest = true) or smallest elements along dim: shape of t with dim
 * of size k; best first (sorted = false gives the same order). 0 <= k <= size of dim.
 * Differentiable in values (TopkBackward0). Bool tensors are refused, as PyTorch. */
graft_status graft_topk(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int64_t k, int dim,
                        bool largest, bool sorted);

#endif
