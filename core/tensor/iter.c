/* graft core: the strided N-d iterator (see iter.h) and the thread-count switch.
 * Dims are stored innermost first so the hot loop reads shape[0] and strides[0]. */
#include "iter.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

graft_status graft_iter_init(graft_iter *it, int nops, graft_tensor *const *ops, int ndim,
                             const int64_t *shape) {
    if (nops > GRAFT_ITER_MAX_OPS) return graft_error(GRAFT_EINTERNAL, "iter: too many operands");
    memset(it, 0, sizeof *it);
    it->nops = nops;
    it->numel = 1;
    for (int d = 0; d < ndim; d++) it->numel *= shape[d];
    /* Reverse into innermost-first order, computing byte strides with broadcasting. */
    for (int d = 0; d < ndim; d++) {
        int src = ndim - 1 - d;
        it->shape[d] = shape[src];
        for (int k = 0; k < nops; k++) {
            const graft_tensor *t = ops[k];
            int tdim = t->ndim - 1 - d;
            int64_t st = 0;
            if (tdim >= 0) {
                if (t->shape[tdim] == shape[src]) st = t->stride[tdim];
                else if (t->shape[tdim] != 1)
                    return graft_error(GRAFT_ESHAPE, "iter: operand %d does not broadcast", k);
            }
            it->strides[d][k] = st * (int64_t)graft_dtype_size(t->dtype);
        }
    }
    for (int k = 0; k < nops; k++) {
        if (ops[k]->ndim > ndim) return graft_error(GRAFT_ESHAPE, "iter: operand %d has too many dims", k);
        it->data[k] = graft_tensor_data(ops[k]);
    }
    if (ndim == 0) {
        it->ndim = 1;
        it->shape[0] = 1;
        return GRAFT_OK;
    }
    /* Drop size-1 dims, then coalesce dim d+1 into d when contiguous for every operand. */
    int n = 0;
    for (int d = 0; d < ndim; d++) {
        if (it->shape[d] == 1 && ndim > 1) continue;
        if (n != d) {
            it->shape[n] = it->shape[d];
            for (int k = 0; k < nops; k++) it->strides[n][k] = it->strides[d][k];
        }
        n++;
    }
    if (n == 0) {
        n = 1;
        it->shape[0] = 1;
        for (int k = 0; k < nops; k++) it->strides[0][k] = 0;
    }
    int m = 0;
    for (int d = 1; d < n; d++) {
        bool ok = true;
        for (int k = 0; k < nops; k++)
            if (it->strides[d][k] != it->strides[m][k] * it->shape[m]) { ok = false; break; }
        if (ok) {
            it->shape[m] *= it->shape[d];
        } else {
            m++;
            it->shape[m] = it->shape[d];
            for (int k = 0; k < nops; k++) it->strides[m][k] = it->strides[d][k];
        }
    }
    it->ndim = m + 1;
    return GRAFT_OK;
}

/* Runs elements [begin, end) of the flattened iteration through fn, or through rfn
 * (told each run's position in its innermost row) when fn is NULL. */
static void iter_range(const graft_iter *it, int64_t begin, int64_t end, graft_loop_fn fn, graft_row_loop_fn rfn,
                       void *ctx) {
    int64_t idx[GRAFT_MAX_DIMS];
    char *ptr[GRAFT_ITER_MAX_OPS];
    int64_t rem = begin;
    for (int d = 0; d < it->ndim; d++) {
        idx[d] = rem % it->shape[d];
        rem /= it->shape[d];
    }
    for (int k = 0; k < it->nops; k++) {
        ptr[k] = it->data[k];
        for (int d = 0; d < it->ndim; d++) ptr[k] += idx[d] * it->strides[d][k];
    }
    int64_t inner[GRAFT_ITER_MAX_OPS];
    for (int k = 0; k < it->nops; k++) inner[k] = it->strides[0][k];
    int64_t pos = begin;
    while (pos < end) {
        int64_t count = it->shape[0] - idx[0];
        if (count > end - pos) count = end - pos;
        if (fn) fn(ptr, inner, count, ctx);
        else rfn(ptr, inner, count, idx[0], ctx);
        pos += count;
        if (pos >= end) break;
        /* advance: inner dim wraps to 0, carry into outer dims */
        for (int k = 0; k < it->nops; k++) ptr[k] += count * inner[k];
        idx[0] += count;
        for (int d = 0; d < it->ndim - 1 && idx[d] == it->shape[d]; d++) {
            idx[d] = 0;
            idx[d + 1]++;
            for (int k = 0; k < it->nops; k++)
                ptr[k] += it->strides[d + 1][k] - it->shape[d] * it->strides[d][k];
        }
    }
}

void graft_iter_run_serial(const graft_iter *it, graft_loop_fn fn, void *ctx) {
    if (it->numel > 0) iter_range(it, 0, it->numel, fn, NULL, ctx);
}

static void iter_run(const graft_iter *it, graft_loop_fn fn, graft_row_loop_fn rfn, void *ctx) {
    if (it->numel <= 0) return;
#ifdef _OPENMP
    if (graft_should_parallelize(it->numel)) {
        int nt = omp_get_max_threads();
        #pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), T = omp_get_num_threads();
            /* chunks aligned to 16 elements so threads do not share cache lines often */
            int64_t chunk = ((it->numel + T - 1) / T + 15) & ~(int64_t)15;
            int64_t b = (int64_t)t * chunk, e = b + chunk;
            if (e > it->numel) e = it->numel;
            if (b < e) iter_range(it, b, e, fn, rfn, ctx);
        }
        return;
    }
#endif
    iter_range(it, 0, it->numel, fn, rfn, ctx);
}

void graft_iter_run(const graft_iter *it, graft_loop_fn fn, void *ctx) { iter_run(it, fn, NULL, ctx); }

void graft_iter_run_rows(const graft_iter *it, graft_row_loop_fn fn, void *ctx) { iter_run(it, NULL, fn, ctx); }

/* OpenBLAS built for OpenMP (libopenblas0-openmp) follows omp_set_num_threads; the
 * explicit call covers the pthreads build too. */
extern void openblas_set_num_threads(int) __attribute__((weak));

void graft_set_num_threads(int n) {
    if (n < 1) n = 1;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    if (openblas_set_num_threads) openblas_set_num_threads(n);
}

int graft_get_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

bool graft_should_parallelize(int64_t n) {
#ifdef _OPENMP
    return n >= GRAFT_PARALLEL_GRAIN && omp_get_max_threads() > 1 && !omp_in_parallel();
#else
    (void)n;
    return false;
#endif
}
