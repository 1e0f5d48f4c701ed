/* graft ops: sort, argsort and topk. The front end moves dim last and copies the keys
 * contiguous (float64 keys for floating dtypes, int64 for the rest: both exact), the
 * CPU kernel writes the first k positions of every sorted row (a stable merge sort, or
 * an insertion buffer for a small k), and the values come from a gather of t at those
 * positions. CUDA tensors go through the CPU (see srt_run). */
#include "ops/sort.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/record.h"
#include "ops/index.h"

/* ---- the kernel ---- */

/* "a goes before b" in PyTorch's order: NaN is larger than every number, so it comes
 * last ascending and first descending; equal keys (NaN with NaN) are left to the
 * stable algorithm, which keeps their original order. */
#define SRT_BEFORE_F(a, b, desc) \
    ((desc) ? ((isnan(a) && !isnan(b)) || (a) > (b)) : ((!isnan(a) && isnan(b)) || (a) < (b)))
#define SRT_BEFORE_I(a, b, desc) ((desc) ? (a) > (b) : (a) < (b))

/* k up to this size selects with an insertion buffer (O(K k) worst, ~O(K) typical:
 * the top-5 of a row of logits); larger k sorts the whole row (O(K log K)). */
#define SRT_SELECT_MAX 32
#define SRT_RUN 16

/* Per key type: srt_msort_X sorts the positions a[0..n) of one row by key (stable:
 * insertion-sorted runs of SRT_RUN, then bottom-up merges between a and tmp, taking
 * from the left run on ties); srt_select_X writes the first k positions of the sorted
 * row into buf (a later element enters only when strictly before the current last, so
 * ties keep the earlier positions, as the stable sort would). */
#define SRT_DEFINE(SUF, T, BEFORE)                                                                       \
    static void srt_msort_##SUF(const T *key, int64_t *a, int64_t *tmp, int64_t n, bool desc) {          \
        for (int64_t lo = 0; lo < n; lo += SRT_RUN) {                                                    \
            int64_t hi = lo + SRT_RUN < n ? lo + SRT_RUN : n;                                            \
            for (int64_t i = lo + 1; i < hi; i++) {                                                      \
                int64_t x = a[i], j = i;                                                                 \
                while (j > lo && BEFORE(key[x], key[a[j - 1]], desc)) {                                  \
                    a[j] = a[j - 1];                                                                     \
                    j--;                                                                                 \
                }                                                                                        \
                a[j] = x;                                                                                \
            }                                                                                            \
        }                                                                                                \
        int64_t *src = a, *dst = tmp;                                                                    \
        for (int64_t w = SRT_RUN; w < n; w *= 2) {                                                       \
            for (int64_t lo = 0; lo < n; lo += 2 * w) {                                                  \
                int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;             \
                int64_t i = lo, j = mid, o = lo;                                                         \
                while (i < mid && j < hi) dst[o++] = BEFORE(key[src[j]], key[src[i]], desc) ? src[j++] : src[i++]; \
                while (i < mid) dst[o++] = src[i++];                                                     \
                while (j < hi) dst[o++] = src[j++];                                                      \
            }                                                                                            \
            int64_t *s = src;                                                                            \
            src = dst;                                                                                   \
            dst = s;                                                                                     \
        }                                                                                                \
        if (src != a) memcpy(a, src, (size_t)n * sizeof *a);                                             \
    }                                                                                                    \
    static void srt_select_##SUF(const T *key, int64_t K, int64_t k, int64_t *buf, bool desc) {          \
        int64_t cnt = 0;                                                                                 \
        for (int64_t j = 0; j < K; j++) {                                                                \
            if (cnt == k) {                                                                              \
                if (!BEFORE(key[j], key[buf[k - 1]], desc)) continue;                                    \
                cnt--;                                                                                   \
            }                                                                                            \
            int64_t p = cnt;                                                                             \
            while (p > 0 && BEFORE(key[j], key[buf[p - 1]], desc)) {                                     \
                buf[p] = buf[p - 1];                                                                     \
                p--;                                                                                     \
            }                                                                                            \
            buf[p] = j;                                                                                  \
            cnt++;                                                                                       \
        }                                                                                                \
    }

SRT_DEFINE(f64, double, SRT_BEFORE_F)
SRT_DEFINE(i64, int64_t, SRT_BEFORE_I)

/* out (rows, k) <- the first k positions of each sorted row of keys (rows, K), both
 * contiguous; keys are doubles (is_float) or int64. Rows run in parallel, each thread
 * with its own scratch of 2K positions. */
static graft_status srt_rows(int64_t *out, const void *keys, bool is_float, int64_t rows, int64_t K, int64_t k,
                             bool desc, const char *op) {
    if (rows == 0 || k == 0) return GRAFT_OK;
    bool select = k <= SRT_SELECT_MAX && k < K;
    int nthreads = rows > 1 && rows * K >= 16384 ? omp_get_max_threads() : 1;
    int64_t *scratch = NULL;
    if (!select) {
        scratch = malloc((size_t)nthreads * 2 * (size_t)K * sizeof *scratch);
        if (!scratch) return graft_error(GRAFT_ENOMEM, "%s: out of memory for %d rows of %lld positions", op,
                                         nthreads, (long long)K);
    }
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t r = 0; r < rows; r++) {
        int64_t *o = out + r * k;
        const double *kf = is_float ? (const double *)keys + r * K : NULL;
        const int64_t *ki = is_float ? NULL : (const int64_t *)keys + r * K;
        if (select) {
            if (is_float) srt_select_f64(kf, K, k, o, desc);
            else srt_select_i64(ki, K, k, o, desc);
            continue;
        }
        int64_t *a = scratch + (size_t)omp_get_thread_num() * 2 * (size_t)K, *tmp = a + K;
        for (int64_t j = 0; j < K; j++) a[j] = j;
        if (is_float) srt_msort_f64(kf, a, tmp, K, desc);
        else srt_msort_i64(ki, a, tmp, K, desc);
        memcpy(o, a, (size_t)k * sizeof *o);
    }
    free(scratch);
    return GRAFT_OK;
}

/* ---- the front end ---- */

/* +1: a contiguous copy of t on dev (t itself, retained, when already there). */
static graft_status srt_to_device(graft_tensor **out, graft_tensor *t, graft_device dev) {
    *out = NULL;
    if (graft_device_eq(graft_tensor_device(t), dev)) {
        graft_tensor_retain(t);
        *out = t;
        return GRAFT_OK;
    }
    graft_status st = graft_tensor_empty(out, t->ndim, t->shape, t->dtype, dev);
    if (!st && (st = graft_tensor_copy_(*out, t))) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

/* +1: a view of t with dims a and b swapped. */
static graft_status srt_swap(graft_tensor **out, graft_tensor *t, int a, int b) {
    int64_t shape[GRAFT_MAX_DIMS], stride[GRAFT_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    memcpy(stride, t->stride, sizeof stride);
    int64_t s = shape[a], st = stride[a];
    shape[a] = shape[b], stride[a] = stride[b];
    shape[b] = s, stride[b] = st;
    return graft_tensor_view_of(out, t, t->ndim, shape, stride, t->offset);
}

/* The first k positions (0-based int64) of every sorted row of t along dim d, and with
 * values the elements there. A 0-dim t is sorted as one element. CUDA tensors: a
 * fallback through the host (copy to the CPU, sort, copy both results back to t's
 * device); a device sort (segmented radix or bitonic) would replace it. */
static graft_status srt_run(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int d, int64_t k,
                            bool desc, const char *op) {
    graft_device dev = graft_tensor_device(t);
    graft_tensor *h = NULL, *h1 = NULL, *keys = NULL, *kv = NULL, *kc = NULL, *it = NULL, *iv = NULL, *ic = NULL,
                 *idx = NULL, *val = NULL;
    graft_status st;
    bool is_float = graft_dtype_is_float(t->dtype);
    if ((st = srt_to_device(&h, t, graft_cpu))) goto done;
    /* a 0-dim tensor is sorted as a 1-d one of one element */
    int64_t one = 1;
    if (h->ndim == 0) {
        if ((st = graft_tensor_view_of(&h1, h, 1, &one, &one, h->offset))) goto done;
    } else {
        graft_tensor_retain(h);
        h1 = h;
    }
    int nd = h1->ndim, last = nd - 1;
    int64_t K = h1->shape[d];
    if ((st = graft_tensor_to_dtype(&keys, h1, is_float ? GRAFT_F64 : GRAFT_I64))) goto done;
    if ((st = srt_swap(&kv, keys, d, last))) goto done;
    if ((st = graft_tensor_contiguous(&kc, kv))) goto done;
    int64_t ishape[GRAFT_MAX_DIMS];
    memcpy(ishape, kc->shape, sizeof ishape);
    ishape[last] = k;
    if ((st = graft_tensor_empty(&it, nd, ishape, GRAFT_I64, graft_cpu))) goto done;
    int64_t rows = K ? graft_tensor_numel(kc) / K : 0;
    if (K == 0) { /* no elements per row: rows = the product of the other dims */
        rows = 1;
        for (int i = 0; i < last; i++) rows *= kc->shape[i];
    }
    if ((st = srt_rows(graft_tensor_data(it), graft_tensor_data(kc), is_float, rows, K, k, desc, op))) goto done;
    if ((st = srt_swap(&iv, it, d, last))) goto done;
    if ((st = graft_tensor_contiguous(&ic, iv))) goto done;
    if (t->ndim == 0 && k == 1) {
        if ((st = graft_tensor_view_of(&idx, ic, 0, NULL, NULL, ic->offset))) goto done;
    } else {
        graft_tensor_retain(ic);
        idx = ic;
    }
    if (values) {
        graft_tensor *g = NULL;
        if ((st = graft_gather(&g, h1, d, ic))) goto done;
        if (t->ndim == 0 && k == 1) {
            st = graft_tensor_view_of(&val, g, 0, NULL, NULL, g->offset);
            graft_tensor_release(g);
            if (st) goto done;
        } else {
            val = g;
        }
        if ((st = srt_to_device(values, val, dev))) goto done;
    }
    st = srt_to_device(indices, idx, dev);
done:
    graft_tensor_release(h);
    graft_tensor_release(h1);
    graft_tensor_release(keys);
    graft_tensor_release(kv);
    graft_tensor_release(kc);
    graft_tensor_release(it);
    graft_tensor_release(iv);
    graft_tensor_release(ic);
    graft_tensor_release(idx);
    graft_tensor_release(val);
    if (st && values && *values) {
        graft_tensor_release(*values);
        *values = NULL;
    }
    return st;
}

graft_status graft_sort(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int dim, bool descending,
                        bool stable) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_sort(values, indices, t, dim, descending, stable);
    *values = NULL;
    *indices = NULL;
    int d;
    graft_status st = graft_wrap_dim(&d, dim, t->ndim, "sort");
    if (st) return st;
    int64_t K = t->ndim ? t->shape[d] : 1;
    return srt_run(values, indices, t, d, K, descending, "sort");
}

graft_status graft_argsort(graft_tensor **indices, graft_tensor *t, int dim, bool descending, bool stable) {
    *indices = NULL;
    int d;
    graft_status st = graft_wrap_dim(&d, dim, t->ndim, "argsort");
    if (st) return st;
    int64_t K = t->ndim ? t->shape[d] : 1;
    return srt_run(NULL, indices, t, d, K, descending, "argsort");
}

graft_status graft_topk(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int64_t k, int dim,
                        bool largest, bool sorted) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_topk(values, indices, t, k, dim, largest, sorted);
    *values = NULL;
    *indices = NULL;
    int d;
    graft_status st = graft_wrap_dim(&d, dim, t->ndim, "topk");
    if (st) return st;
    if (t->dtype == GRAFT_BOOL) return graft_error(GRAFT_ETYPE, "topk: not implemented for bool tensors");
    int64_t K = t->ndim ? t->shape[d] : 1;
    if (k < 0) return graft_error(GRAFT_EINVAL, "topk: k (%lld) must not be negative", (long long)k);
    if (k > K)
        return graft_error(GRAFT_EINVAL, "topk: k (%lld) is larger than the size of dim %d (%lld)", (long long)k,
                           d + 1, (long long)K);
    return srt_run(values, indices, t, d, k, largest, "topk");
}
