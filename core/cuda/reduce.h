/* graft CUDA backend: reductions and scans (kernels in core/cuda/reduce.cu).
 *
 * core/ops/reduce.c checks dims and dtypes, allocates the outputs on the input's device
 * in the dtype graft_cuda_reduce_dtype names, and calls these; it converts to the dtype
 * PyTorch returns afterwards when they differ (sum(x, dtype=int32) and the like). The
 * input is read in its own dtype (16-bit floats as bits, computed in float).
 */
#ifndef GRAFT_CUDA_REDUCE_H
#define GRAFT_CUDA_REDUCE_H

#include "cuda/cuda.h"

#ifdef __cplusplus
extern "C" {
#endif
#include "cpu/reduce_cpu.h"

/* The dtype graft_cuda_reduce writes for op on an input of dtype d: sums and products
 * of ints and bool give int64, any/all give bool, everything else keeps d. ANY/ALL take
 * bool inputs only (the front end converts, as the CPU path does). */
static inline graft_dtype graft_cuda_reduce_dtype(graft_red_op op, graft_dtype d) {
    switch (op) {
    case GRAFT_RED_SUM:
    case GRAFT_RED_PROD: return graft_dtype_is_float(d) ? d : GRAFT_I64;
    case GRAFT_RED_ANY:
    case GRAFT_RED_ALL: return GRAFT_BOOL;
    default: return d;
    }
}

/* Reduces `in` (a CUDA tensor, any layout) over the dims in rmask into `out` (contiguous,
 * dtype graft_cuda_reduce_dtype(cfg->op, in->dtype), numel = product of the kept dims,
 * kept dims in order) and, for ARGMAX/ARGMIN, `idx` (int64, indices along the one
 * reduced dim; out may then be NULL). VAR, NORM and LSE take floating inputs; `aux`
 * (LSE only, may be NULL) holds the per-output shift in in's dtype, contiguous, and an
 * infinite shift counts as 0. The op's name for errors is `name`. */
GRAFT_CUDA_API(graft_cuda_reduce, (graft_tensor *out, graft_tensor *idx, graft_tensor *in, uint32_t rmask,
                                   const graft_reduce_cfg *cfg, graft_tensor *aux, const char *name))
/* out (contiguous, same shape and dtype as in) <- the cumulative sum (prod = false) or
 * product of in (any layout) along dim (0-based). Accumulates in float for 16-bit and
 * float32, double for float64, wrapping int64 for integers. */
GRAFT_CUDA_API(graft_cuda_scan, (graft_tensor *out, graft_tensor *in, int dim, bool prod, const char *name))

#ifdef __cplusplus
}
#endif
#endif
