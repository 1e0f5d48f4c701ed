/* graft CPU kernels: the elementwise loop tables behind core/ops/elementwise.c.
 *
 * Every loop is a graft_loop_fn over (out, inputs...) whose inputs already hold the
 * compute dtype (the front end casts; scalars arrive as stride-0 operands). Loops are
 * indexed by compute dtype; NULL means the op does not accept that dtype. Each loop has
 * a contiguous path the compiler vectorises, a tensor-with-scalar path and a strided one.
 */
#ifndef GRAFT_CPU_ELEMENTWISE_KERNELS_H
#define GRAFT_CPU_ELEMENTWISE_KERNELS_H

#include "ops/elementwise.h"
#include "tensor/iter.h"

/* Per-call state shared by the loops of one op (read-only but for zero_div). */
typedef struct {
    double alpha_f;       /* add: out = a + alpha * b (floating compute dtypes) */
    int64_t alpha_i;      /* the same for integer and bool compute dtypes */
    int zero_div;         /* set (relaxed atomic) by integer division by zero */
    const void *lo, *hi;  /* clamp bounds in the compute dtype; NULL = none */
    size_t esz;           /* where: element size */
} graft_ew_ctx;

/* Binary loops: data = {out, a, b}; out is bool for comparisons and logical ops, else
 * the compute dtype. SUB runs the ADD loop with alpha negated. */
extern const graft_loop_fn graft_cpu_binary_loops[GRAFT_EW_NBINARY][GRAFT_NDTYPES];
/* Unary loops: data = {out, a}; out is bool for ISNAN ISINF ISFINITE LOGICAL_NOT. */
extern const graft_loop_fn graft_cpu_unary_loops[GRAFT_EW_NUNARY][GRAFT_NDTYPES];
/* Clamp loops: data = {out, a}, bounds in ctx. */
extern const graft_loop_fn graft_cpu_clamp_loops[GRAFT_NDTYPES];
/* where: data = {out, cond, a, b}, ctx->esz bytes per element, cond bool or uint8. */
void graft_cpu_where_loop(char **data, const int64_t *strides, int64_t n, void *ctx);

/* A float32 e^x that vectorises (max error about 1 ulp); exact for NaN and +-inf. */
float graft_cpu_expf(float x);

#endif
