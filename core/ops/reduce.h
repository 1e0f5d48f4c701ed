/* graft ops: reductions with PyTorch 1.13 semantics (sum, mean, prod, max/min, argmax,
 * var/std, norm, any/all, logsumexp, amax/amin) and cumulative sum/product.
 *
 * Dims are 0-based here (negative counts from the end); `dims` lists the dims to reduce
 * and ndims == 0 means every dim. keepdim keeps reduced dims as size 1. Every result is
 * a fresh contiguous tensor (+1 reference for the caller).
 *
 *     graft_tensor *s;
 *     int dims[1] = {1};
 *     if (graft_reduce_sum(&s, x, dims, 1, false, -1)) puts(graft_last_error());
 *
 * Float32 sums accumulate in double; int and bool sums and products give int64.
 * CUDA tensors reduce on their device (core/cuda/reduce.cu): float32 and 16-bit floats
 * accumulate in float there (as PyTorch on CUDA), float64 in double, ints in int64, and
 * every result is deterministic (fixed launch shapes, no atomics).
 */
#ifndef GRAFT_REDUCE_H
#define GRAFT_REDUCE_H

#include "tensor/tensor.h"

/* ---- sums and products ---- */
/* dtype: -1 for PyTorch's default (int64 for int and bool inputs), else the input is
 * converted to dtype first, as torch.sum(x, dtype=...). */
graft_status graft_reduce_sum(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim,
                              int dtype);
/* Floating inputs only (or a floating dtype); the mean of nothing is NaN. */
graft_status graft_reduce_mean(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim,
                               int dtype);
graft_status graft_reduce_prod(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim,
                               int dtype);

/* ---- extremes ---- */
/* Values in t's dtype; NaN propagates; an empty reduced dim is an error. */
graft_status graft_reduce_amax(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim);
graft_status graft_reduce_amin(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim);
/* Over every element: a 0-dim tensor (t:max()). */
graft_status graft_reduce_max_all(graft_tensor **out, graft_tensor *t);
graft_status graft_reduce_min_all(graft_tensor **out, graft_tensor *t);
/* Along one dim: values (t's dtype) and 0-based int64 indices of the first occurrence
 * (the first NaN, if any). Both +1. */
graft_status graft_reduce_max_dim(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int dim,
                                  bool keepdim);
graft_status graft_reduce_min_dim(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int dim,
                                  bool keepdim);
/* 0-based int64 indices along *dim, or into the flattened tensor when dim is NULL (then
 * keepdim gives a tensor of t->ndim ones). */
graft_status graft_reduce_argmax(graft_tensor **out, graft_tensor *t, const int *dim, bool keepdim);
graft_status graft_reduce_argmin(graft_tensor **out, graft_tensor *t, const int *dim, bool keepdim);

/* ---- statistics ---- */
/* Floating inputs only. Divisor max(0, N - correction): correction 1 is unbiased (the
 * default of PyTorch 1.13), 0 the population variance. */
graft_status graft_reduce_var(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, double correction,
                              bool keepdim);
graft_status graft_reduce_std(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, double correction,
                              bool keepdim);
/* Vector p-norm over dims (floating inputs): (sum |x|^p)^(1/p); p = INFINITY gives
 * max |x|, -INFINITY min |x|, 0 the count of nonzeros. 'fro' is p = 2. */
graft_status graft_reduce_norm(graft_tensor **out, graft_tensor *t, double p, const int *dims, int ndims,
                               bool keepdim);
/* log(sum(exp(x))) computed stably; int and bool inputs give float32. */
graft_status graft_reduce_logsumexp(graft_tensor **out, graft_tensor *t, const int *dims, int ndims,
                                    bool keepdim);

/* ---- logic ---- */
/* bool results (uint8 for uint8 inputs, as PyTorch 1.13). */
graft_status graft_reduce_any(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim);
graft_status graft_reduce_all(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim);

/* ---- scans ---- */
/* Same shape as t; dtype as sum (int and bool give int64 unless dtype >= 0). */
graft_status graft_reduce_cumsum(graft_tensor **out, graft_tensor *t, int dim, int dtype);
graft_status graft_reduce_cumprod(graft_tensor **out, graft_tensor *t, int dim, int dtype);

#endif
