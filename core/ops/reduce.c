/* graft ops: reduction front ends. Each one checks dims and dtypes with PyTorch's
 * rules, then on the CPU picks a compute dtype the engine has kernels for (float32,
 * float64, int64, bool), converts the input when needed, runs core/cpu/reduce_cpu.c and
 * converts the result to the dtype PyTorch returns. CUDA tensors go to
 * core/cuda/reduce.cu, which reads every dtype as it is. */
#include "ops/reduce.h"

#include <math.h>
#include <string.h>

#include "autograd/record.h"
#include "cpu/reduce_cpu.h"
#include "cuda/reduce.h"

/* ---- dims, shapes, dtypes ---- */

/* The set of dims to reduce as a bit mask; every dim when ndims == 0 (as PyTorch's
 * sum(dim=[])). A 0-dim tensor accepts dim 0 and -1 and reduces nothing. */
static graft_status red_mask(uint32_t *mask, const graft_tensor *t, const int *dims, int ndims, const char *op) {
    *mask = 0;
    if (ndims == 0 || !dims) {
        *mask = t->ndim ? (uint32_t)((1ull << t->ndim) - 1) : 0;
        return GRAFT_OK;
    }
    for (int i = 0; i < ndims; i++) {
        int d;
        graft_status st = graft_wrap_dim(&d, dims[i], t->ndim, op);
        if (st) return st;
        if (t->ndim == 0) continue;
        if (*mask & (1u << d))
            return graft_error(GRAFT_EINVAL, "%s: dim %d appears multiple times in the list of dims", op, d + 1);
        *mask |= 1u << d;
    }
    return GRAFT_OK;
}

static int red_out_shape(const graft_tensor *t, uint32_t mask, bool keepdim, int64_t *shape) {
    int n = 0;
    for (int d = 0; d < t->ndim; d++) {
        if (!((mask >> d) & 1u)) shape[n++] = t->shape[d];
        else if (keepdim) shape[n++] = 1;
    }
    return n;
}

/* The dtype the engine computes in for values of dtype d. */
static graft_dtype red_compute(graft_dtype d) {
    if (d == GRAFT_F64) return GRAFT_F64;
    if (graft_dtype_is_float(d)) return GRAFT_F32;
    return GRAFT_I64;
}

static bool red_is_intlike(graft_dtype d) { return graft_dtype_is_int(d) || d == GRAFT_BOOL; }

static bool red_on_cuda(const graft_tensor *t) { return graft_tensor_device(t).type == GRAFT_CUDA; }

/* max/min/argmax of nothing is undefined: PyTorch rejects an empty reduced dim, and a
 * reduction over everything of an empty tensor. */
static graft_status red_check_nonempty(const graft_tensor *t, uint32_t mask, bool all, const char *op) {
    if (all && graft_tensor_numel(t) == 0)
        return graft_error(GRAFT_EINVAL,
                           "%s: cannot reduce an empty tensor over all dims (numel() == 0); specify the reduction dim",
                           op);
    for (int d = 0; d < t->ndim; d++)
        if (((mask >> d) & 1u) && t->shape[d] == 0)
            return graft_error(GRAFT_EINVAL, "%s: expected reduction dim %d to have non-zero size", op, d + 1);
    return GRAFT_OK;
}

/* ---- the common runner ---- */

/* Reduces the mask dims of t into fresh outputs of shape (ondim, oshape): values (*out,
 * in odt) and/or indices (*idx_out, int64). On the CPU t is converted to cdt and reduced
 * in it (aux: LSE's per-output shift as doubles, or NULL). CUDA kernels read t in its
 * own dtype (any/all on bool, converted first as on the CPU) and write the dtype
 * graft_cuda_reduce_dtype names (aux_dev: LSE's shift on the device, or NULL); the
 * values are converted to odt where that differs. */
static graft_status red_run(graft_tensor **out, graft_tensor **idx_out, graft_tensor *t, uint32_t mask, int ondim,
                            const int64_t *oshape, graft_dtype cdt, graft_dtype odt, const graft_reduce_cfg *cfg,
                            const double *aux, graft_tensor *aux_dev, const char *name) {
    graft_tensor *x = NULL, *o = NULL, *idx = NULL;
    graft_status st;
    bool cuda = red_on_cuda(t), logic = cfg->op == GRAFT_RED_ANY || cfg->op == GRAFT_RED_ALL;
    graft_device dev = graft_tensor_device(t);
    if (out) *out = NULL;
    if (idx_out) *idx_out = NULL;
    if ((st = graft_tensor_to_dtype(&x, t, !cuda ? cdt : logic ? GRAFT_BOOL : t->dtype))) goto done;
    graft_dtype ndt = cuda ? graft_cuda_reduce_dtype(cfg->op, x->dtype) : cdt;
    if (out && (st = graft_tensor_empty(&o, ondim, oshape, ndt, dev))) goto done;
    if (idx_out && (st = graft_tensor_empty(&idx, ondim, oshape, GRAFT_I64, dev))) goto done;
    st = cuda ? graft_cuda_reduce(o, idx, x, mask, cfg, aux_dev, name) : graft_cpu_reduce(o, idx, x, mask, cfg, aux);
    if (st || (out && (st = graft_tensor_to_dtype(out, o, odt)))) goto done;
    if (idx_out) {
        *idx_out = idx;
        idx = NULL;
    }
done:
    graft_tensor_release(x);
    graft_tensor_release(o);
    graft_tensor_release(idx);
    if (st && out && *out) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

/* A reduction over dims with the default output shape. */
static graft_status red_simple(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim,
                               graft_dtype cdt, graft_dtype odt, const graft_reduce_cfg *cfg, const char *op) {
    uint32_t mask;
    int64_t shape[GRAFT_MAX_DIMS];
    *out = NULL;
    graft_status st = red_mask(&mask, t, dims, ndims, op);
    if (st) return st;
    int n = red_out_shape(t, mask, keepdim, shape);
    return red_run(out, NULL, t, mask, n, shape, cdt, odt, cfg, NULL, NULL, op);
}

/* ---- sums and products ---- */

/* sum, mean and prod. With an explicit dtype the input is converted first, as PyTorch
 * does; otherwise int and bool inputs give int64. */
static graft_status red_sumlike(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim,
                                int dtype, graft_red_op op, bool mean, const char *name) {
    *out = NULL;
    if (dtype >= GRAFT_NDTYPES) return graft_error(GRAFT_ETYPE, "%s: unknown dtype %d", name, dtype);
    if (mean) {
        if (dtype >= 0 && !graft_dtype_is_float((graft_dtype)dtype))
            return graft_error(GRAFT_ETYPE,
                               "%s: could not infer output dtype. Optional dtype must be either a floating point "
                               "or complex dtype. Got: %s",
                               name, graft_dtype_name((graft_dtype)dtype));
        if (dtype < 0 && !graft_dtype_is_float(t->dtype))
            return graft_error(GRAFT_ETYPE,
                               "%s: could not infer output dtype. Input dtype must be either a floating point or "
                               "complex dtype. Got: %s",
                               name, graft_dtype_name(t->dtype));
    }
    graft_tensor *src = NULL;
    graft_status st;
    if (dtype >= 0) {
        if ((st = graft_tensor_to_dtype(&src, t, (graft_dtype)dtype))) return st;
    } else {
        graft_tensor_retain(t);
        src = t;
    }
    graft_dtype odt = dtype >= 0 ? (graft_dtype)dtype : red_is_intlike(t->dtype) ? GRAFT_I64 : t->dtype;
    graft_reduce_cfg cfg = {.op = op, .mean = mean};
    st = red_simple(out, src, dims, ndims, keepdim, red_compute(src->dtype), odt, &cfg, name);
    graft_tensor_release(src);
    return st;
}

graft_status graft_reduce_sum(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim,
                              int dtype) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_reduce(out, GRAFT_AG_SUM, t, dims, ndims, keepdim, dtype, 0);
    return red_sumlike(out, t, dims, ndims, keepdim, dtype, GRAFT_RED_SUM, false, "sum");
}

graft_status graft_reduce_mean(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim,
                               int dtype) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_reduce(out, GRAFT_AG_MEAN, t, dims, ndims, keepdim, dtype, 0);
    return red_sumlike(out, t, dims, ndims, keepdim, dtype, GRAFT_RED_SUM, true, "mean");
}

graft_status graft_reduce_prod(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim,
                               int dtype) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_reduce(out, GRAFT_AG_PROD, t, dims, ndims, keepdim, dtype, 0);
    return red_sumlike(out, t, dims, ndims, keepdim, dtype, GRAFT_RED_PROD, false, "prod");
}

/* ---- extremes ---- */

static graft_status red_extreme(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim,
                                graft_red_op op, const char *name) {
    uint32_t mask;
    int64_t shape[GRAFT_MAX_DIMS];
    *out = NULL;
    graft_status st = red_mask(&mask, t, dims, ndims, name);
    if (st) return st;
    if ((st = red_check_nonempty(t, mask, ndims == 0, name))) return st;
    int n = red_out_shape(t, mask, keepdim, shape);
    graft_reduce_cfg cfg = {.op = op};
    return red_run(out, NULL, t, mask, n, shape, red_compute(t->dtype), t->dtype, &cfg, NULL, NULL, name);
}

graft_status graft_reduce_amax(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_reduce(out, GRAFT_AG_AMAX, t, dims, ndims, keepdim, -1, 0);
    return red_extreme(out, t, dims, ndims, keepdim, GRAFT_RED_MAX, "amax");
}
graft_status graft_reduce_amin(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_reduce(out, GRAFT_AG_AMIN, t, dims, ndims, keepdim, -1, 0);
    return red_extreme(out, t, dims, ndims, keepdim, GRAFT_RED_MIN, "amin");
}
graft_status graft_reduce_max_all(graft_tensor **out, graft_tensor *t) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_reduce(out, GRAFT_AG_MAX_ALL, t, NULL, 0, false, -1, 0);
    return red_extreme(out, t, NULL, 0, false, GRAFT_RED_MAX, "max");
}
graft_status graft_reduce_min_all(graft_tensor **out, graft_tensor *t) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_reduce(out, GRAFT_AG_MIN_ALL, t, NULL, 0, false, -1, 0);
    return red_extreme(out, t, NULL, 0, false, GRAFT_RED_MIN, "min");
}

/* max/min along a dim: values and indices from one argmax pass. */
static graft_status red_extreme_dim(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int dim,
                                    bool keepdim, graft_red_op op, const char *name) {
    uint32_t mask;
    int64_t shape[GRAFT_MAX_DIMS];
    *values = NULL;
    *indices = NULL;
    graft_status st = red_mask(&mask, t, &dim, 1, name);
    if (st) return st;
    if ((st = red_check_nonempty(t, mask, false, name))) return st;
    int n = red_out_shape(t, mask, keepdim, shape);
    graft_reduce_cfg cfg = {.op = op};
    return red_run(values, indices, t, mask, n, shape, red_compute(t->dtype), t->dtype, &cfg, NULL, NULL, name);
}

graft_status graft_reduce_max_dim(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int dim,
                                  bool keepdim) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_reduce_dim(values, indices, t, dim, keepdim, true);
    return red_extreme_dim(values, indices, t, dim, keepdim, GRAFT_RED_ARGMAX, "max");
}
graft_status graft_reduce_min_dim(graft_tensor **values, graft_tensor **indices, graft_tensor *t, int dim,
                                  bool keepdim) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_reduce_dim(values, indices, t, dim, keepdim, false);
    return red_extreme_dim(values, indices, t, dim, keepdim, GRAFT_RED_ARGMIN, "min");
}

/* argmax/argmin. Without a dim the index is into the flattened tensor: the engine runs
 * on a contiguous 1-d view, so its one reduced dim is the flat index. */
static graft_status red_arg(graft_tensor **out, graft_tensor *t, const int *dim, bool keepdim, graft_red_op op,
                            const char *name) {
    *out = NULL;
    graft_status st;
    if (t->dtype == GRAFT_BOOL) return graft_error(GRAFT_ETYPE, "%s: not implemented for bool tensors", name);
    graft_reduce_cfg cfg = {.op = op};
    graft_dtype cdt = red_compute(t->dtype);
    if (dim) {
        uint32_t mask;
        int64_t shape[GRAFT_MAX_DIMS];
        if ((st = red_mask(&mask, t, dim, 1, name))) return st;
        if ((st = red_check_nonempty(t, mask, false, name))) return st;
        int n = red_out_shape(t, mask, keepdim, shape);
        return red_run(NULL, out, t, mask, n, shape, cdt, cdt, &cfg, NULL, NULL, name);
    }
    if ((st = red_check_nonempty(t, 0, true, name))) return st;
    graft_tensor *c = NULL, *flat = NULL;
    int64_t shape[GRAFT_MAX_DIMS], n = graft_tensor_numel(t), one = 1;
    int ondim = keepdim ? t->ndim : 0;
    for (int d = 0; d < ondim; d++) shape[d] = 1;
    if (!(st = graft_tensor_contiguous(&c, t)) && !(st = graft_tensor_view_of(&flat, c, 1, &n, &one, c->offset)))
        st = red_run(NULL, out, flat, 1u, ondim, shape, cdt, cdt, &cfg, NULL, NULL, name);
    graft_tensor_release(flat);
    graft_tensor_release(c);
    return st;
}

graft_status graft_reduce_argmax(graft_tensor **out, graft_tensor *t, const int *dim, bool keepdim) {
    return red_arg(out, t, dim, keepdim, GRAFT_RED_ARGMAX, "argmax");
}
graft_status graft_reduce_argmin(graft_tensor **out, graft_tensor *t, const int *dim, bool keepdim) {
    return red_arg(out, t, dim, keepdim, GRAFT_RED_ARGMIN, "argmin");
}

/* ---- statistics ---- */

static graft_status red_var(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, double correction,
                            bool keepdim, bool take_sqrt, const char *name) {
    *out = NULL;
    if (!graft_dtype_is_float(t->dtype))
        return graft_error(GRAFT_ETYPE, "%s: std and var only support floating point dtypes, got %s", name,
                           graft_dtype_name(t->dtype));
    graft_reduce_cfg cfg = {.op = GRAFT_RED_VAR, .take_sqrt = take_sqrt, .correction = correction};
    return red_simple(out, t, dims, ndims, keepdim, red_compute(t->dtype), t->dtype, &cfg, name);
}

graft_status graft_reduce_var(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, double correction,
                              bool keepdim) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_reduce(out, GRAFT_AG_VAR, t, dims, ndims, keepdim, -1, correction);
    return red_var(out, t, dims, ndims, correction, keepdim, false, "var");
}
graft_status graft_reduce_std(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, double correction,
                              bool keepdim) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_reduce(out, GRAFT_AG_STD, t, dims, ndims, keepdim, -1, correction);
    return red_var(out, t, dims, ndims, correction, keepdim, true, "std");
}

graft_status graft_reduce_norm(graft_tensor **out, graft_tensor *t, double p, const int *dims, int ndims,
                               bool keepdim) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_reduce(out, GRAFT_AG_NORM, t, dims, ndims, keepdim, -1, p);
    *out = NULL;
    if (!graft_dtype_is_float(t->dtype))
        return graft_error(GRAFT_ETYPE, "norm: input dtype should be floating point, got %s",
                           graft_dtype_name(t->dtype));
    if (p != p) return graft_error(GRAFT_EINVAL, "norm: p must not be NaN");
    graft_reduce_cfg cfg = {.op = GRAFT_RED_NORM, .p = p};
    return red_simple(out, t, dims, ndims, keepdim, red_compute(t->dtype), t->dtype, &cfg, "norm");
}

/* PyTorch's formula: m = amax(x) (0 where m is infinite), then log(sum(exp(x - m))) + m. */
graft_status graft_reduce_logsumexp(graft_tensor **out, graft_tensor *t, const int *dims, int ndims,
                                    bool keepdim) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_reduce(out, GRAFT_AG_LOGSUMEXP, t, dims, ndims, keepdim, -1, 0);
    uint32_t mask;
    int64_t shape[GRAFT_MAX_DIMS];
    *out = NULL;
    graft_status st = red_mask(&mask, t, dims, ndims, "logsumexp");
    if (st) return st;
    graft_dtype cdt = t->dtype == GRAFT_F64 ? GRAFT_F64 : GRAFT_F32;
    graft_dtype odt = graft_dtype_is_float(t->dtype) ? t->dtype : GRAFT_F32;
    int n = red_out_shape(t, mask, keepdim, shape);
    graft_reduce_cfg cfg = {.op = GRAFT_RED_LSE};
    graft_reduce_cfg mcfg = {.op = GRAFT_RED_MAX};
    graft_tensor *m = NULL, *m64 = NULL;
    if (red_on_cuda(t)) { /* the kernel reads the shift m in x's dtype (a max of x is exact) */
        graft_tensor *x = NULL;
        if ((st = graft_tensor_to_dtype(&x, t, odt))) return st;
        if (graft_tensor_numel(x) == 0)
            st = red_run(out, NULL, x, mask, n, shape, odt, odt, &cfg, NULL, NULL, "logsumexp");
        else if (!(st = red_run(&m, NULL, x, mask, n, shape, odt, odt, &mcfg, NULL, NULL, "logsumexp")))
            st = red_run(out, NULL, x, mask, n, shape, odt, odt, &cfg, NULL, m, "logsumexp");
        graft_tensor_release(m);
        graft_tensor_release(x);
        return st;
    }
    if (graft_tensor_numel(t) == 0)
        return red_run(out, NULL, t, mask, n, shape, cdt, odt, &cfg, NULL, NULL, "logsumexp");
    if (!(st = red_run(&m, NULL, t, mask, n, shape, cdt, cdt, &mcfg, NULL, NULL, "logsumexp")) &&
        !(st = graft_tensor_to_dtype(&m64, m, GRAFT_F64))) {
        double *a = graft_tensor_data(m64);
        int64_t k = graft_tensor_numel(m64);
        /* m64 may be m itself (float64 input): it is ours either way, and only the shift */
        for (int64_t i = 0; i < k; i++)
            if (isinf(a[i])) a[i] = 0;
        st = red_run(out, NULL, t, mask, n, shape, cdt, odt, &cfg, a, NULL, "logsumexp");
    }
    graft_tensor_release(m64);
    graft_tensor_release(m);
    return st;
}

/* ---- logic ---- */

static graft_status red_logic(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim,
                              graft_red_op op, const char *name) {
    graft_reduce_cfg cfg = {.op = op};
    graft_dtype odt = t->dtype == GRAFT_U8 ? GRAFT_U8 : GRAFT_BOOL;
    return red_simple(out, t, dims, ndims, keepdim, GRAFT_BOOL, odt, &cfg, name);
}

graft_status graft_reduce_any(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim) {
    return red_logic(out, t, dims, ndims, keepdim, GRAFT_RED_ANY, "any");
}
graft_status graft_reduce_all(graft_tensor **out, graft_tensor *t, const int *dims, int ndims, bool keepdim) {
    return red_logic(out, t, dims, ndims, keepdim, GRAFT_RED_ALL, "all");
}

/* ---- scans ---- */

static graft_status red_scan(graft_tensor **out, graft_tensor *t, int dim, int dtype, bool prod, const char *name) {
    *out = NULL;
    int d;
    graft_status st = graft_wrap_dim(&d, dim, t->ndim, name);
    if (st) return st;
    if (dtype >= GRAFT_NDTYPES) return graft_error(GRAFT_ETYPE, "%s: unknown dtype %d", name, dtype);
    graft_tensor *src = NULL, *x = NULL, *xc = NULL, *y = NULL;
    graft_dtype odt = dtype >= 0 ? (graft_dtype)dtype : red_is_intlike(t->dtype) ? GRAFT_I64 : t->dtype;
    if ((st = graft_tensor_to_dtype(&src, t, odt))) goto done;
    if (red_on_cuda(t)) { /* the kernels accumulate in float/double/int64 themselves */
        if ((st = graft_tensor_empty(&y, t->ndim, t->shape, odt, graft_tensor_device(t)))) goto done;
        if ((st = graft_cuda_scan(y, src, d, prod, name))) goto done;
        *out = y;
        y = NULL;
        goto done;
    }
    graft_dtype cdt = red_compute(odt);
    if ((st = graft_tensor_to_dtype(&x, src, cdt))) goto done;
    if ((st = graft_tensor_contiguous(&xc, x))) goto done;
    if ((st = graft_tensor_empty(&y, t->ndim, t->shape, cdt, graft_tensor_device(t)))) goto done;
    if ((st = graft_cpu_scan(y, xc, d, prod))) goto done;
    st = graft_tensor_to_dtype(out, y, odt);
done:
    graft_tensor_release(src);
    graft_tensor_release(x);
    graft_tensor_release(xc);
    graft_tensor_release(y);
    return st;
}

graft_status graft_reduce_cumsum(graft_tensor **out, graft_tensor *t, int dim, int dtype) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_scan(out, t, dim, dtype, false);
    return red_scan(out, t, dim, dtype, false, "cumsum");
}
graft_status graft_reduce_cumprod(graft_tensor **out, graft_tensor *t, int dim, int dtype) {
    if (GRAFT_AG_ACTIVE(t->autograd)) return graft_ag_scan(out, t, dim, dtype, true);
    return red_scan(out, t, dim, dtype, true, "cumprod");
}
