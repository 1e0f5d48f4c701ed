/* graft CUDA: the indexing kernels behind core/ops/index.c and core/ops/join.c. Index
 * bounds are checked on the device: a kernel raises a flag (and keeps one bad value),
 * the launcher reads both back with one 16-byte copy and the front end names the op.
 * Order-sensitive results (masked_select, nonzero) come from an ordered compaction:
 * per-chunk counts, one scan, then ordered writes, with the count read back once.
 * Launchers run on the legacy default stream, like every graft kernel. */
#ifndef GRAFT_CUDA_INDEX_H
#define GRAFT_CUDA_INDEX_H

#include "cuda/cuda.h"
#include "tensor/iter.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The block plan of ops/index.c (advanced indexing, index_select): dense element
 * q * post_numel + r lives at base + pre_off(q / nb) + offs[q % nb] + post_off(r) of the
 * strided side, in elements; pre and post dims are listed outermost first. offs lives on
 * the plan's device (nb values). */
typedef struct {
    char *base;
    size_t esz;
    int pre_n, post_n;
    int64_t pre_shape[GRAFT_MAX_DIMS], pre_stride[GRAFT_MAX_DIMS];
    int64_t post_shape[GRAFT_MAX_DIMS], post_stride[GRAFT_MAX_DIMS];
    int64_t pre_numel, post_numel, nb;
    const int64_t *offs;
    bool post_dense; /* post_off(r) == r */
} graft_ix_plan;

/* What graft_cuda_ix_scatter does with its iterator's operands:
 * GATHER        {out, index, self}:  out = self[index * dim_stride]
 * SCATTER       {self, index, src}:  self[index * dim_stride] = src
 * SCATTER_VALUE {self, index}:       self[index * dim_stride] = value
 * SCATTER_ADD   {self, index, src}:  self[index * dim_stride] += alpha * src (atomics) */
typedef enum { GRAFT_IX_GATHER, GRAFT_IX_SCATTER, GRAFT_IX_SCATTER_VALUE, GRAFT_IX_SCATTER_ADD } graft_ix_mode;

/* Checks that every value of index (int64 or int32, any layout, on the device) lies in
 * [lo, hi); *bad and one offending *badval come back to the host. */
GRAFT_CUDA_API(graft_cuda_ix_check, (graft_tensor *index, int64_t lo, int64_t hi, bool *bad, int64_t *badval))
/* offs (int64, contiguous, on the device) += x * stride where x is index broadcast to
 * offs' shape (negative values counted from size when wrap); values outside the dim
 * set *bad / *badval instead. */
GRAFT_CUDA_API(graft_cuda_ix_offsets, (graft_tensor *offs, graft_tensor *index, int64_t size, int64_t stride,
                                       bool wrap, bool *bad, int64_t *badval))
/* Runs the plan: dense (contiguous, the plan's dtype) <- strided side, or the reverse
 * when put (positions named twice get one of their values). */
GRAFT_CUDA_API(graft_cuda_ix_plan_run, (const graft_ix_plan *p, graft_tensor *dense, bool put))
/* The gather/scatter family over an iterator of device operands (index int64, already
 * checked); dim_stride in bytes; value: one element of dtype (SCATTER_VALUE); alpha as
 * fa (float dtypes) or ia (integers) for SCATTER_ADD. */
GRAFT_CUDA_API(graft_cuda_ix_scatter, (const graft_iter *it, graft_ix_mode mode, int64_t dim_stride, graft_dtype dtype,
                                       const void *value, double fa, int64_t ia))
/* Iterator {t, mask (bool/uint8)}: t = value (esz bytes) where mask is set. */
GRAFT_CUDA_API(graft_cuda_masked_fill, (const graft_iter *it, size_t esz, const void *value))
/* Iterator {out, index (int64, checked in [-numel, numel))}: out = base[index]. */
GRAFT_CUDA_API(graft_cuda_take, (const graft_iter *it, const void *base, int64_t numel, size_t esz))
/* +1: 1-D, t's elements where mask is set, both broadcast to (ndim, shape), row-major. */
GRAFT_CUDA_API(graft_cuda_masked_select, (graft_tensor **out, graft_tensor *t, graft_tensor *mask, int ndim,
                                          const int64_t *shape))
/* +1: int64 [n, t->ndim], the coordinates of t's nonzero elements, row-major. */
GRAFT_CUDA_API(graft_cuda_nonzero, (graft_tensor **out, graft_tensor *t))
/* Zeroes what tril (lower) or triu keeps out of every matrix of t's last two dims. */
GRAFT_CUDA_API(graft_cuda_tri_, (graft_tensor *t, int64_t k, bool lower))

#ifdef __cplusplus
}
#endif
#endif
