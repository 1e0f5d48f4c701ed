/* graft core: the strided N-d iterator every elementwise kernel runs on.
 *
 * Operands share one iteration shape; an operand whose own shape is smaller is
 * broadcast (stride 0). Adjacent dims are coalesced when every operand allows it,
 * so contiguous operands become one flat loop the compiler can vectorise. Large
 * iterations are split across the OpenMP pool (the one OpenBLAS shares).
 *
 *     graft_iter it;
 *     graft_tensor *ops[3] = {out, a, b};
 *     graft_iter_init(&it, 3, ops, out->ndim, out->shape);
 *     graft_iter_run(&it, add_f32_loop, NULL);
 *
 * A loop function gets one pointer per operand, each operand's byte stride for the
 * inner dimension, and the count: it must handle any strides (0 included) and is
 * expected to have a fast path for the all-contiguous case.
 */
#ifndef GRAFT_ITER_H
#define GRAFT_ITER_H

#include "tensor.h"

#define GRAFT_ITER_MAX_OPS 6
/* Iterations with fewer elements than this run on one thread. */
#define GRAFT_PARALLEL_GRAIN 32768

typedef void (*graft_loop_fn)(char **data, const int64_t *strides, int64_t n, void *ctx);

typedef struct {
    int nops;
    int ndim;                                        /* after coalescing, >= 1 */
    int64_t numel;
    int64_t shape[GRAFT_MAX_DIMS];                   /* dim 0 is the innermost */
    int64_t strides[GRAFT_MAX_DIMS][GRAFT_ITER_MAX_OPS]; /* bytes */
    char *data[GRAFT_ITER_MAX_OPS];
} graft_iter;

/* Sets up iteration of `nops` tensors over shape (ndim dims). Each operand must be
 * broadcastable to shape (checked; right-aligned like PyTorch). */
graft_status graft_iter_init(graft_iter *it, int nops, graft_tensor *const *ops, int ndim,
                             const int64_t *shape);
/* Runs fn over every element, in parallel when the iteration is large. */
void graft_iter_run(const graft_iter *it, graft_loop_fn fn, void *ctx);
/* Runs fn over every element on this thread (for loops with side effects such as RNG). */
void graft_iter_run_serial(const graft_iter *it, graft_loop_fn fn, void *ctx);
/* A loop that also learns where its run starts in the innermost row (0 .. shape[0] - 1),
 * for arithmetic that depends on the position (the 16-bit optimizers mirror PyTorch's
 * vector body and scalar tail). */
typedef void (*graft_row_loop_fn)(char **data, const int64_t *strides, int64_t n, int64_t row_pos, void *ctx);
/* graft_iter_run for such loops: the same split across threads. */
void graft_iter_run_rows(const graft_iter *it, graft_row_loop_fn fn, void *ctx);

/* Threads: the OpenMP pool size, applied to OpenBLAS too. */
void graft_set_num_threads(int n);
int graft_get_num_threads(void);
/* True when a loop of n items should use the pool. */
bool graft_should_parallelize(int64_t n);

#endif
