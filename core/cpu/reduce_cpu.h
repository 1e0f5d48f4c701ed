/* graft CPU reductions: the engine behind core/ops/reduce.c (internal header).
 *
 * graft_cpu_reduce folds the dims of `in` named by a bit mask into a contiguous output
 * in one of a few compute dtypes (float32, float64, int64, and bool for any/all); the
 * front end converts other dtypes before and after. graft_cpu_scan runs cumsum and
 * cumprod. Both parallelise large work over the OpenMP pool.
 */
#ifndef GRAFT_REDUCE_CPU_H
#define GRAFT_REDUCE_CPU_H

#include "tensor/tensor.h"

typedef enum {
    GRAFT_RED_SUM,      /* f32 (double accumulator), f64, i64 */
    GRAFT_RED_PROD,     /* f32 (double accumulator), f64, i64 */
    GRAFT_RED_MAX,      /* f32, f64, i64: NaN propagates */
    GRAFT_RED_MIN,
    GRAFT_RED_ARGMAX,   /* f32, f64, i64: first index of the max (a NaN counts as the max) */
    GRAFT_RED_ARGMIN,
    GRAFT_RED_VAR,      /* f32, f64: Welford/Chan in double */
    GRAFT_RED_NORM,     /* f32, f64 */
    GRAFT_RED_ANY,      /* bool */
    GRAFT_RED_ALL,      /* bool */
    GRAFT_RED_LSE       /* f32, f64: log(sum(exp(x - aux))) + aux, aux the per-output shift */
} graft_red_op;

typedef struct {
    graft_red_op op;
    bool mean;          /* SUM: divide by the number of reduced elements */
    bool take_sqrt;     /* VAR: standard deviation */
    double correction;  /* VAR: divisor is max(0, N - correction) */
    double p;           /* NORM: the order (INFINITY, -INFINITY, 0, or any other) */
} graft_reduce_cfg;

/* Reduces `in` over the dims set in rmask (bit d = dim d, 0-based). `out` (dtype of in,
 * contiguous, numel = product of the kept dims) receives the values and may be NULL for
 * ARGMAX/ARGMIN; `idx` (int64, same numel) receives the indices along the one reduced
 * dim for ARGMAX/ARGMIN and is NULL otherwise. `aux` is the per-output shift for LSE
 * (NULL = 0). An empty reduction writes the identity (the front end rejects max/min). */
graft_status graft_cpu_reduce(graft_tensor *out, graft_tensor *idx, graft_tensor *in, uint32_t rmask,
                              const graft_reduce_cfg *cfg, const double *aux);

/* out <- cumulative sum (prod = false) or product (prod = true) of in along dim.
 * in and out: same shape and dtype (f32 with a double accumulator, f64, i64), out
 * contiguous. */
graft_status graft_cpu_scan(graft_tensor *out, graft_tensor *in, int dim, bool prod);

#endif
