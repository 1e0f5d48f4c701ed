/* graft autograd: the hooks the op front ends call. Each front end starts with
 *
 *     if (GRAFT_AG_ACTIVE(a->autograd || b->autograd)) return graft_ag_xxx(out, a, b);
 *
 * so a call whose inputs carry no autograd metadata pays one predictable branch. A
 * wrapper runs the same front end with grad mode off (so it takes the plain path) and
 * records a node when an input requires grad and the output is floating point. Every
 * wrapper has the contract of the front end it stands for (see the headers in core/ops).
 */
#ifndef GRAFT_AUTOGRAD_RECORD_H
#define GRAFT_AUTOGRAD_RECORD_H

#include "autograd/autograd.h"
#include "ops/elementwise.h"
#include "ops/index.h"

#define GRAFT_AG_ACTIVE(cond) (__builtin_expect(!!(cond), 0) && graft_grad_enabled())
#define GRAFT_AG_T(t) ((t) && (t)->autograd)

/* ---- elementwise (rules_elementwise.c) ---- */
graft_status graft_ag_binary(graft_tensor **out, graft_binary_op op, graft_operand a, graft_operand b,
                             const graft_scalar *alpha);
graft_status graft_ag_binary_(graft_tensor *self, graft_binary_op op, graft_operand b, const graft_scalar *alpha);
graft_status graft_ag_unary(graft_tensor **out, graft_unary_op op, graft_tensor *a);
graft_status graft_ag_unary_(graft_tensor *self, graft_unary_op op);
graft_status graft_ag_clamp(graft_tensor **out, graft_tensor *a, const graft_operand *lo, const graft_operand *hi);
graft_status graft_ag_clamp_(graft_tensor *self, const graft_operand *lo, const graft_operand *hi);
graft_status graft_ag_where(graft_tensor **out, graft_tensor *cond, graft_operand a, graft_operand b);

/* ---- reductions (rules_reduce.c) ---- */
/* kind: which reduction (the front end's own entry point, named for the record) */
typedef enum {
    GRAFT_AG_SUM, GRAFT_AG_MEAN, GRAFT_AG_PROD, GRAFT_AG_AMAX, GRAFT_AG_AMIN, GRAFT_AG_MAX_ALL,
    GRAFT_AG_MIN_ALL, GRAFT_AG_VAR, GRAFT_AG_STD, GRAFT_AG_NORM, GRAFT_AG_LOGSUMEXP
} graft_ag_reduce_kind;
/* dtype (sum, mean, prod), correction (var, std), p (norm) as the front ends take them. */
graft_status graft_ag_reduce(graft_tensor **out, graft_ag_reduce_kind kind, graft_tensor *t, const int *dims,
                             int ndims, bool keepdim, int dtype, double param);
graft_status graft_ag_reduce_dim(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int dim,
                                 bool keepdim, bool is_max);
graft_status graft_ag_scan(graft_tensor **out, graft_tensor *t, int dim, int dtype, bool prod);
/* sort and topk (core/ops/sort.c): values differentiable, scattered back at indices */
graft_status graft_ag_sort(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int dim,
                           bool descending, bool stable);
graft_status graft_ag_topk(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int64_t k, int dim,
                           bool largest, bool sorted);

/* ---- linear algebra (rules_linalg.c) ---- */
typedef enum { GRAFT_AG_MATMUL, GRAFT_AG_MM, GRAFT_AG_BMM, GRAFT_AG_MV, GRAFT_AG_DOT, GRAFT_AG_OUTER } graft_ag_product;
graft_status graft_ag_product2(graft_tensor **out, graft_ag_product kind, graft_tensor *a, graft_tensor *b);
graft_status graft_ag_addprod(graft_tensor **out, bool batched, graft_tensor *input, graft_tensor *m1,
                              graft_tensor *m2, double beta, double alpha);

/* ---- views (rules_view.c) ---- */
graft_status graft_ag_view(graft_tensor **out, graft_tensor *t, int ndim, const int64_t *shape, bool reshape);
graft_status graft_ag_flatten(graft_tensor **out, graft_tensor *t, int start, int end);
graft_status graft_ag_squeeze(graft_tensor **out, graft_tensor *t, int dim);
graft_status graft_ag_unsqueeze(graft_tensor **out, graft_tensor *t, int dim);
graft_status graft_ag_transpose(graft_tensor **out, graft_tensor *t, int d0, int d1);
graft_status graft_ag_permute(graft_tensor **out, graft_tensor *t, const int *perm, int n);
graft_status graft_ag_expand(graft_tensor **out, graft_tensor *t, int ndim, const int64_t *sizes);
graft_status graft_ag_narrow(graft_tensor **out, graft_tensor *t, int dim, int64_t start, int64_t length);
graft_status graft_ag_slice(graft_tensor **out, graft_tensor *t, int dim, int64_t start, int64_t stop,
                            int64_t step);
graft_status graft_ag_diagonal(graft_tensor **out, graft_tensor *t, int64_t offset, int d1, int d2);

/* ---- indexing and joining (rules_index.c) ---- */
graft_status graft_ag_index(graft_tensor **out, graft_tensor *t, const graft_ix *ix, int n);
graft_status graft_ag_index_put_(graft_tensor *t, const graft_ix *ix, int n, graft_tensor *value);
graft_status graft_ag_index_select(graft_tensor **out, graft_tensor *t, int dim, graft_tensor *index);
graft_status graft_ag_gather(graft_tensor **out, graft_tensor *t, int dim, graft_tensor *index);
/* mode: 0 scatter_ (src), 1 scatter_ (value), 2 scatter_add_ */
graft_status graft_ag_scatter_(graft_tensor *t, int dim, graft_tensor *index, graft_tensor *src,
                               const graft_ix_value *v, int mode);
graft_status graft_ag_index_add_(graft_tensor *t, int dim, graft_tensor *index, graft_tensor *src,
                                 graft_ix_value alpha);
graft_status graft_ag_masked_fill_(graft_tensor *t, graft_tensor *mask, graft_ix_value v);
graft_status graft_ag_masked_fill(graft_tensor **out, graft_tensor *t, graft_tensor *mask, graft_ix_value v);
graft_status graft_ag_masked_select(graft_tensor **out, graft_tensor *t, graft_tensor *mask);
graft_status graft_ag_take(graft_tensor **out, graft_tensor *t, graft_tensor *index);
graft_status graft_ag_cat(graft_tensor **out, graft_tensor *const *ts, int n, int dim, bool stack);
graft_status graft_ag_flip(graft_tensor **out, graft_tensor *t, const int *dims, int n);
graft_status graft_ag_roll(graft_tensor **out, graft_tensor *t, const int64_t *shifts, int n_shifts,
                           const int *dims, int n_dims);
graft_status graft_ag_repeat(graft_tensor **out, graft_tensor *t, const int64_t *reps, int n, bool tile);
graft_status graft_ag_tri(graft_tensor **out, graft_tensor *t, int64_t k, bool lower);
graft_status graft_ag_tri_(graft_tensor *t, int64_t k, bool lower);
graft_status graft_ag_diag(graft_tensor **out, graft_tensor *t, int64_t k);

/* True when any of the n tensors (NULLs skipped) carries autograd metadata. */
static inline bool graft_ag_any(graft_tensor *const *ts, int n) {
    for (int i = 0; i < n; i++)
        if (ts[i] && ts[i]->autograd) return true;
    return false;
}

#endif
