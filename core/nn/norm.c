/* graft nn: batch, layer and group normalisation. Forward kernels take statistics in
 * double (a pass for the mean, one for the centred squares), then apply one
 * x * scale + shift per channel or (x - mean) * rstd * w + b per row. Backward kernels
 * are fused: one pass for the sums of g and g x per channel, row or group, one pass for
 * dx = s g + b x + c with coefficients from those sums. Channels, rows or groups are
 * split across the OpenMP pool when the input is large. CUDA tensors go to
 * core/cuda/norm.cu after the same checks (all tensors on the input's device). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/record_nn.h"
#include "cuda/norm.h"
#include "nn/kernels.h"
#include "nn/span.h"
#include "ops/autocast.h"
#include "tensor/iter.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define SHAPE_BUF GRAFT_NN_SHAPE_BUF

static const nn_span_ops *nm_ops(const graft_tensor *t) { return t->dtype == GRAFT_F64 ? &nn_span_f64 : &nn_span_f32; }

static int nm_threads(int64_t work) {
#ifdef _OPENMP
    return graft_should_parallelize(work) ? omp_get_max_threads() : 1;
#else
    (void)work;
    return 1;
#endif
}

/* Element i of a 1-D tensor of any float dtype and stride. */
static double nm_load(const graft_tensor *t, int64_t i) {
    return graft_load_f64((const char *)graft_tensor_data(t) + i * t->stride[0] * (int64_t)graft_dtype_size(t->dtype),
                          t->dtype);
}

static void nm_store(graft_tensor *t, int64_t i, double v) {
    graft_store_f64((char *)graft_tensor_data(t) + i * t->stride[0] * (int64_t)graft_dtype_size(t->dtype), t->dtype,
                    v);
}

/* +1: a fresh [n] tensor of dtype d holding v[0..n) (doubles). */
static graft_status nm_vector(graft_tensor **out, const double *v, int ndim, const int64_t *shape, graft_dtype d) {
    graft_status st = graft_tensor_empty(out, ndim, shape, d, graft_cpu);
    if (st) return st;
    int64_t n = graft_tensor_numel(*out);
    if (d == GRAFT_F64) memcpy(graft_tensor_data(*out), v, sizeof(double) * (size_t)n);
    else
        for (int64_t i = 0; i < n; i++) ((float *)graft_tensor_data(*out))[i] = (float)v[i];
    return GRAFT_OK;
}

/* Stores v as element i of a raw array of x's float type. */
static inline void nm_put(void *arr, size_t esz, int64_t i, double v) {
    if (esz == sizeof(double)) ((double *)arr)[i] = v;
    else ((float *)arr)[i] = (float)v;
}

/* Checks a per-channel vector: 1-D with C elements. */
static graft_status nm_check_vec(const graft_tensor *t, int64_t C, const char *op, const char *name) {
    if (!t) return GRAFT_OK;
    char s[SHAPE_BUF];
    if (t->ndim != 1 || t->shape[0] != C)
        return graft_error(GRAFT_ESHAPE, "%s: %s should contain %lld elements, got shape %s", op, name, (long long)C,
                           graft_shape_str(t->ndim, t->shape, s, sizeof s));
    if (!graft_dtype_is_float(t->dtype))
        return graft_error(GRAFT_ETYPE, "%s: %s must be floating point, got %s", op, name, graft_dtype_name(t->dtype));
    return GRAFT_OK;
}

static bool nm_on_cuda(const graft_tensor *x) { return graft_tensor_device(x).type == GRAFT_CUDA; }

/* Releases the outputs of a failed backward. */
static void nm_drop3(graft_tensor **a, graft_tensor **b, graft_tensor **c) {
    graft_tensor **o[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        if (o[i]) {
            graft_tensor_release(*o[i]);
            *o[i] = NULL;
        }
}

/* The tensors of a layer_norm or group_norm forward, shared by the CPU and CUDA paths:
 * x contiguous, w and b contiguous in x's dtype (NULL when absent), and the statistics
 * mean, rstd [R] in x's dtype on x's device; *y like x. nm_fwd_end hands out what was
 * asked for and releases the rest (all of it, *y too, after an error). */
typedef struct { graft_tensor *x, *w, *b, *mean, *rstd; } nm_fwd;

static graft_status nm_fwd_begin(nm_fwd *f, graft_tensor **y, graft_tensor *x, graft_tensor *w, graft_tensor *b,
                                 int64_t R) {
    graft_device dev = graft_tensor_device(x);
    *f = (nm_fwd){0};
    graft_status st;
    if ((st = graft_tensor_contiguous(&f->x, x)) || (st = graft_nn_contig_as(&f->w, w, x->dtype)) ||
        (st = graft_nn_contig_as(&f->b, b, x->dtype)) ||
        (st = graft_tensor_empty(y, x->ndim, x->shape, x->dtype, dev)) ||
        (st = graft_tensor_empty(&f->mean, 1, &R, x->dtype, dev)) ||
        (st = graft_tensor_empty(&f->rstd, 1, &R, x->dtype, dev)))
        return st;
    return GRAFT_OK;
}

static graft_status nm_fwd_end(nm_fwd *f, graft_status st, graft_tensor **y, graft_tensor **mean_out,
                               graft_tensor **rstd_out) {
    if (st) {
        graft_tensor_release(*y);
        *y = NULL;
    } else {
        if (mean_out) { *mean_out = f->mean; f->mean = NULL; }
        if (rstd_out) { *rstd_out = f->rstd; f->rstd = NULL; }
    }
    graft_tensor_release(f->x);
    graft_tensor_release(f->w);
    graft_tensor_release(f->b);
    graft_tensor_release(f->mean);
    graft_tensor_release(f->rstd);
    return st;
}

/* The operands of a CUDA backward: g, x and the forward's mean and rstd contiguous in
 * x's dtype, w too when w_as_x (batch_norm's kernel reads w in any layout and dtype: it
 * is only retained then), and the requested gradients on x's device (dx like x, dw and
 * db of shape pshape). nm_bwd_end releases the operands, and the gradients after an
 * error. */
typedef struct { graft_tensor *g, *x, *w, *mean, *rstd; } nm_bwd;

static graft_status nm_bwd_begin(nm_bwd *o, graft_tensor **dx, graft_tensor **dw, graft_tensor **db, graft_tensor *g,
                                 graft_tensor *x, graft_tensor *w, graft_tensor *mean_t, graft_tensor *rstd_t,
                                 int pndim, const int64_t *pshape, bool w_as_x, const char *op) {
    graft_device dev = graft_tensor_device(x);
    graft_status st;
    *o = (nm_bwd){0};
    if (dx) *dx = NULL;
    if (dw) *dw = NULL;
    if (db) *db = NULL;
    if ((st = graft_nn_same_device(op, 3, (graft_tensor *[]){x, g, w})) ||
        (st = graft_nn_contig_as(&o->g, g, x->dtype)) || (st = graft_tensor_contiguous(&o->x, x)) ||
        (st = graft_nn_contig_as(&o->mean, mean_t, x->dtype)) || (st = graft_nn_contig_as(&o->rstd, rstd_t, x->dtype)))
        return st;
    if (w_as_x) {
        if ((st = graft_nn_contig_as(&o->w, w, x->dtype))) return st;
    } else if (w) {
        graft_tensor_retain(o->w = w);
    }
    if ((dx && (st = graft_tensor_empty(dx, x->ndim, x->shape, x->dtype, dev))) ||
        (dw && (st = graft_tensor_empty(dw, pndim, pshape, x->dtype, dev))) ||
        (db && (st = graft_tensor_empty(db, pndim, pshape, x->dtype, dev))))
        return st;
    return GRAFT_OK;
}

static graft_status nm_bwd_end(nm_bwd *o, graft_status st, graft_tensor **dx, graft_tensor **dw, graft_tensor **db) {
    if (st) nm_drop3(dx, dw, db);
    graft_tensor_release(o->g);
    graft_tensor_release(o->x);
    graft_tensor_release(o->w);
    graft_tensor_release(o->mean);
    graft_tensor_release(o->rstd);
    return st;
}

/* A gradient argument for the kernels: the tensor, or NULL when not requested. */
#define NM_OUT(p) ((p) ? *(p) : NULL)

/* ======================================================================== */
/* batch_norm                                                                */
/* ======================================================================== */

/* Per-channel mean and biased variance of x [N, C, L] (contiguous). */
static void bn_stats(const nn_span_ops *ops, const char *x, int64_t N, int64_t C, int64_t L, double *mean,
                     double *var) {
    int64_t M = N * L;
    size_t esz = ops->esz;
    int nt = nm_threads(N * C * L);
    if (L == 1) {
        /* rows of C channels: each thread owns a band of columns */
        memset(mean, 0, sizeof(double) * (size_t)C);
        memset(var, 0, sizeof(double) * (size_t)C);
        #pragma omp parallel num_threads(nt) if (nt > 1)
        {
            int t = 0, T = 1;
#ifdef _OPENMP
            t = omp_get_thread_num();
            T = omp_get_num_threads();
#endif
            int64_t c0 = C * t / T, c1 = C * (t + 1) / T;
            if (c1 > c0) {
                for (int64_t n = 0; n < N; n++) ops->col_sum(mean + c0, x + (n * C + c0) * esz, c1 - c0);
                for (int64_t c = c0; c < c1; c++) mean[c] /= (double)M;
                for (int64_t n = 0; n < N; n++) ops->col_sqdev(var + c0, x + (n * C + c0) * esz, mean + c0, c1 - c0);
                for (int64_t c = c0; c < c1; c++) var[c] /= (double)M;
            }
        }
        return;
    }
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t c = 0; c < C; c++) {
        double s = 0, q = 0;
        for (int64_t n = 0; n < N; n++) s += ops->sum(x + (n * C + c) * L * esz, L);
        double m = s / (double)M;
        for (int64_t n = 0; n < N; n++) q += ops->sqdev(x + (n * C + c) * L * esz, L, m);
        mean[c] = m;
        var[c] = q / (double)M;
    }
}

/* y = x * scale[c] + shift[c] over x [N, C, L] (scale, shift in x's type). */
static void bn_apply(const nn_span_ops *ops, char *y, const char *x, int64_t N, int64_t C, int64_t L,
                     const char *scale, const char *shift) {
    size_t esz = ops->esz;
    int nt = nm_threads(N * C * L);
    if (L == 1) {
        #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
        for (int64_t n = 0; n < N; n++) ops->col_affine(y + n * C * esz, x + n * C * esz, scale, shift, C);
        return;
    }
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t p = 0; p < N * C; p++) {
        int64_t c = p % C;
        double a = esz == sizeof(double) ? ((const double *)scale)[c] : ((const float *)scale)[c];
        double b = esz == sizeof(double) ? ((const double *)shift)[c] : ((const float *)shift)[c];
        ops->affine(y + p * L * esz, x + p * L * esz, L, a, b);
    }
}

static graft_status bn_check(graft_tensor *x, graft_tensor *rm, graft_tensor *rv, graft_tensor *w, graft_tensor *b,
                             graft_tensor *nbt, bool training, double momentum, int64_t *N, int64_t *C, int64_t *L) {
    char s[SHAPE_BUF];
    graft_status st = graft_nn_check_float(x, "batch_norm", "input");
    if (st) return st;
    if (x->ndim < 2)
        return graft_error(GRAFT_ESHAPE, "batch_norm: expected an input of shape [N, C, *], got %s",
                           graft_shape_str(x->ndim, x->shape, s, sizeof s));
    *N = x->shape[0];
    *C = x->shape[1];
    *L = 1;
    for (int d = 2; d < x->ndim; d++) *L *= x->shape[d];
    if ((st = nm_check_vec(rm, *C, "batch_norm", "running_mean")) || (st = nm_check_vec(rv, *C, "batch_norm", "running_var")) ||
        (st = nm_check_vec(w, *C, "batch_norm", "weight")) || (st = nm_check_vec(b, *C, "batch_norm", "bias")))
        return st;
    /* num_batches_tracked, a counter, may also stay on the CPU beside a CUDA input */
    graft_tensor *nbt_dev = nbt && graft_tensor_device(nbt).type != GRAFT_CPU ? nbt : NULL;
    if ((st = graft_nn_same_device("batch_norm", 6, (graft_tensor *[]){x, rm, rv, w, b, nbt_dev}))) return st;
    if (!rm != !rv) return graft_error(GRAFT_EINVAL, "batch_norm: running_mean and running_var go together (one is missing)");
    if (training && *N * *L <= 1)
        return graft_error(GRAFT_EINVAL, "batch_norm: expected more than 1 value per channel when training, got input size %s",
                           graft_shape_str(x->ndim, x->shape, s, sizeof s));
    if (!training && !rm)
        return graft_error(GRAFT_EINVAL, "batch_norm: running_mean and running_var are needed when not training");
    if (nbt && (graft_tensor_numel(nbt) != 1 || graft_dtype_is_float(nbt->dtype)))
        return graft_error(GRAFT_EINVAL, "batch_norm: num_batches_tracked must be an integer tensor with one element");
    if (training && rm && momentum == GRAFT_NN_CUMULATIVE && !nbt)
        return graft_error(GRAFT_EINVAL, "batch_norm: momentum = None (a cumulative average) needs num_batches_tracked");
    if (momentum != GRAFT_NN_CUMULATIVE && !(momentum >= 0 && momentum <= 1))
        return graft_error(GRAFT_EINVAL, "batch_norm: momentum must be in [0, 1] (or None), got %g", momentum);
    return GRAFT_OK;
}

/* The running statistics after one training batch of M values per channel (no_grad:
 * an in-place write that is never recorded). */
static void bn_update_running(graft_tensor *rm, graft_tensor *rv, graft_tensor *nbt, const double *mean,
                              const double *var, int64_t C, int64_t M, double momentum) {
    double f = momentum;
    if (nbt) {
        int64_t k = graft_load_i64(graft_tensor_data(nbt), nbt->dtype) + 1;
        graft_store_i64(graft_tensor_data(nbt), nbt->dtype, k);
        graft_tensor_bump(nbt);
        if (momentum == GRAFT_NN_CUMULATIVE) f = 1.0 / (double)k;
    }
    double unbias = (double)M / (double)(M - 1);
    for (int64_t c = 0; c < C; c++) {
        nm_store(rm, c, (1 - f) * nm_load(rm, c) + f * mean[c]);
        nm_store(rv, c, (1 - f) * nm_load(rv, c) + f * var[c] * unbias);
    }
    graft_tensor_bump(rm);
    graft_tensor_bump(rv);
}

/* The CUDA forward: statistics, running-stat update and the affine pass run on the
 * device; a num_batches_tracked kept on the CPU is counted here, one on the device by
 * the kernels (no synchronisation either way). */
static graft_status bn_forward_cuda(graft_tensor **y, graft_tensor **save_mean, graft_tensor **save_invstd,
                                    graft_tensor *x, graft_tensor *rm, graft_tensor *rv, graft_tensor *w,
                                    graft_tensor *b, graft_tensor *nbt, bool training, double momentum, double eps) {
    graft_device dev = graft_tensor_device(x);
    int64_t C = x->shape[1];
    bool update = training && rm, cumulative = momentum == GRAFT_NN_CUMULATIVE;
    double f = momentum;
    graft_tensor *xc = NULL, *sm = NULL, *si = NULL, *dnbt = NULL;
    graft_status st;
    if ((st = graft_tensor_contiguous(&xc, x)) || (st = graft_tensor_empty(y, x->ndim, x->shape, x->dtype, dev)) ||
        (st = graft_tensor_empty(&sm, 1, &C, x->dtype, dev)) || (st = graft_tensor_empty(&si, 1, &C, x->dtype, dev)))
        goto done;
    if (update && nbt) {
        if (graft_tensor_device(nbt).type == GRAFT_CPU) {
            int64_t k = graft_load_i64(graft_tensor_data(nbt), nbt->dtype) + 1;
            graft_store_i64(graft_tensor_data(nbt), nbt->dtype, k);
            if (cumulative) f = 1.0 / (double)k;
            cumulative = false;
        } else {
            dnbt = nbt;
        }
        graft_tensor_bump(nbt);
    }
    if ((st = graft_cuda_batch_norm_forward(*y, sm, si, xc, rm, rv, w, b, dnbt, training, f, cumulative, eps))) goto done;
    if (update) {
        graft_tensor_bump(rm);
        graft_tensor_bump(rv);
    }
    if (save_mean) { *save_mean = sm; sm = NULL; }
    if (save_invstd) { *save_invstd = si; si = NULL; }
done:
    if (st) {
        graft_tensor_release(*y);
        *y = NULL;
    }
    graft_tensor_release(xc);
    graft_tensor_release(sm);
    graft_tensor_release(si);
    return st;
}

graft_status graft_nn_batch_norm_forward(graft_tensor **y, graft_tensor **save_mean, graft_tensor **save_invstd,
                                         graft_tensor *x, graft_tensor *rm, graft_tensor *rv, graft_tensor *w,
                                         graft_tensor *b, graft_tensor *nbt, bool training, double momentum,
                                         double eps) {
    int64_t N = 0, C = 0, L = 0;
    *y = NULL;
    if (save_mean) *save_mean = NULL;
    if (save_invstd) *save_invstd = NULL;
    graft_status st = bn_check(x, rm, rv, w, b, nbt, training, momentum, &N, &C, &L);
    if (st) return st;
    if (nm_on_cuda(x)) return bn_forward_cuda(y, save_mean, save_invstd, x, rm, rv, w, b, nbt, training, momentum, eps);
    const nn_span_ops *ops = nm_ops(x);
    size_t esz = ops->esz;
    graft_tensor *xc = NULL;
    double *mean = malloc(sizeof(double) * (size_t)(2 * C + 1)), *var = mean ? mean + C : NULL;
    char *coef = malloc(esz * (size_t)(2 * C + 1));
    if (!mean || !coef) {
        st = graft_error(GRAFT_ENOMEM, "batch_norm: out of memory");
        goto done;
    }
    if ((st = graft_tensor_contiguous(&xc, x))) goto done;
    if (training) {
        bn_stats(ops, graft_tensor_data(xc), N, C, L, mean, var);
        if (rm) bn_update_running(rm, rv, nbt, mean, var, C, N * L, momentum);
    } else {
        for (int64_t c = 0; c < C; c++) {
            mean[c] = nm_load(rm, c);
            var[c] = nm_load(rv, c);
        }
    }
    /* var becomes invstd; scale = invstd w, shift = b - mean scale */
    for (int64_t c = 0; c < C; c++) {
        var[c] = 1.0 / sqrt(var[c] + eps);
        double sc = var[c] * (w ? nm_load(w, c) : 1.0);
        nm_put(coef, esz, c, sc);
        nm_put(coef + C * esz, esz, c, (b ? nm_load(b, c) : 0.0) - mean[c] * sc);
    }
    if ((st = graft_tensor_empty(y, x->ndim, x->shape, x->dtype, graft_cpu))) goto done;
    bn_apply(ops, graft_tensor_data(*y), graft_tensor_data(xc), N, C, L, coef, coef + C * esz);
    if (save_mean && (st = nm_vector(save_mean, mean, 1, &C, x->dtype))) goto done;
    if (save_invstd && (st = nm_vector(save_invstd, var, 1, &C, x->dtype))) goto done;
done:
    if (st) {
        graft_tensor_release(*y);
        *y = NULL;
        if (save_mean) {
            graft_tensor_release(*save_mean);
            *save_mean = NULL;
        }
    }
    graft_tensor_release(xc);
    free(mean);
    free(coef);
    return st;
}

/* Sums of g and g x per channel of [N, C, L] (contiguous). */
static void bn_sums(const nn_span_ops *ops, const char *g, const char *x, int64_t N, int64_t C, int64_t L, double *sg,
                    double *sgx) {
    size_t esz = ops->esz;
    int nt = nm_threads(N * C * L);
    if (L == 1) {
        memset(sg, 0, sizeof(double) * (size_t)C);
        memset(sgx, 0, sizeof(double) * (size_t)C);
        #pragma omp parallel num_threads(nt) if (nt > 1)
        {
            int t = 0, T = 1;
#ifdef _OPENMP
            t = omp_get_thread_num();
            T = omp_get_num_threads();
#endif
            int64_t c0 = C * t / T, c1 = C * (t + 1) / T;
            for (int64_t n = 0; n < N && c1 > c0; n++)
                ops->col_dot(sg + c0, sgx + c0, g + (n * C + c0) * esz, x + (n * C + c0) * esz, c1 - c0);
        }
        return;
    }
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t c = 0; c < C; c++) {
        double a = 0, b = 0;
        for (int64_t n = 0; n < N; n++) {
            double pa, pb;
            ops->dot(g + (n * C + c) * L * esz, x + (n * C + c) * L * esz, NULL, L, &pa, &pb);
            a += pa;
            b += pb;
        }
        sg[c] = a;
        sgx[c] = b;
    }
}

/* Training (statistics of the batch):
 *   dx = w invstd (g - mean(g) - xhat mean(g xhat)),  xhat = (x - mean) invstd
 * eval (constant statistics): dx = w invstd g. In both, dw = sum(g xhat), db = sum(g). */
graft_status graft_nn_batch_norm_backward(graft_tensor **dx, graft_tensor **dw, graft_tensor **db, graft_tensor *g,
                                          graft_tensor *x, graft_tensor *w, graft_tensor *mean_t,
                                          graft_tensor *invstd_t, bool training) {
    int64_t N = x->shape[0], C = x->shape[1], L = 1, M;
    if (nm_on_cuda(x)) {
        nm_bwd o;
        graft_status st = nm_bwd_begin(&o, dx, dw, db, g, x, w, mean_t, invstd_t, 1, &C, false, "batch_norm backward");
        if (!st) st = graft_cuda_batch_norm_backward(NM_OUT(dx), NM_OUT(dw), NM_OUT(db), o.g, o.x, o.w, o.mean, o.rstd,
                                                     training);
        return nm_bwd_end(&o, st, dx, dw, db);
    }
    for (int d = 2; d < x->ndim; d++) L *= x->shape[d];
    M = N * L;
    const nn_span_ops *ops = nm_ops(x);
    size_t esz = ops->esz;
    graft_tensor *gc = NULL, *xc = NULL;
    double *sg = malloc(sizeof(double) * (size_t)(2 * C + 1)), *sgx = sg ? sg + C : NULL;
    char *coef = malloc(esz * (size_t)(3 * C + 1));
    graft_status st = GRAFT_OK;
    if (dx) *dx = NULL;
    if (dw) *dw = NULL;
    if (db) *db = NULL;
    if (!sg || !coef) {
        st = graft_error(GRAFT_ENOMEM, "batch_norm backward: out of memory");
        goto done;
    }
    if ((st = graft_nn_contig_as(&gc, g, x->dtype)) || (st = graft_tensor_contiguous(&xc, x))) goto done;
    bool need_sums = dw || db || (dx && training);
    if (need_sums) bn_sums(ops, graft_tensor_data(gc), graft_tensor_data(xc), N, C, L, sg, sgx);
    /* sgx becomes sum(g (x - mean)) */
    for (int64_t c = 0; c < C && need_sums; c++) sgx[c] -= nm_load(mean_t, c) * sg[c];
    if (dw || db) {
        double *v = malloc(sizeof(double) * (size_t)(C + 1));
        if (!v) {
            st = graft_error(GRAFT_ENOMEM, "batch_norm backward: out of memory");
            goto done;
        }
        for (int64_t c = 0; c < C; c++) v[c] = sgx[c] * nm_load(invstd_t, c);
        if (dw) st = nm_vector(dw, v, 1, &C, x->dtype);
        if (!st && db) st = nm_vector(db, sg, 1, &C, x->dtype);
        free(v);
        if (st) goto done;
    }
    if (dx) {
        char *s = coef, *b = coef + C * esz, *cc = coef + 2 * C * esz;
        for (int64_t c = 0; c < C; c++) {
            double is = nm_load(invstd_t, c), k = is * (w ? nm_load(w, c) : 1.0);
            double bc = training ? -k * is * is * sgx[c] / (double)M : 0.0;
            double c0 = training ? -k * sg[c] / (double)M - bc * nm_load(mean_t, c) : 0.0;
            nm_put(s, esz, c, k);
            nm_put(b, esz, c, bc);
            nm_put(cc, esz, c, c0);
        }
        if ((st = graft_tensor_empty(dx, x->ndim, x->shape, x->dtype, graft_cpu))) goto done;
        char *o = graft_tensor_data(*dx);
        const char *gp = graft_tensor_data(gc), *xp = graft_tensor_data(xc);
        int nt = nm_threads(N * C * L);
        if (L == 1) {
            #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
            for (int64_t n = 0; n < N; n++)
                ops->col_dx(o + n * C * esz, gp + n * C * esz, xp + n * C * esz, s, b, cc, C);
        } else {
            #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
            for (int64_t p = 0; p < N * C; p++) {
                int64_t c = p % C;
                double vs, vb, vc;
                if (esz == sizeof(double)) {
                    vs = ((double *)s)[c]; vb = ((double *)b)[c]; vc = ((double *)cc)[c];
                } else {
                    vs = ((float *)s)[c]; vb = ((float *)b)[c]; vc = ((float *)cc)[c];
                }
                ops->dx(o + p * L * esz, gp + p * L * esz, xp + p * L * esz, NULL, L, vs, vb, vc);
            }
        }
    }
done:
    if (st) nm_drop3(dx, dw, db);
    graft_tensor_release(gc);
    graft_tensor_release(xc);
    free(sg);
    free(coef);
    return st;
}

graft_status graft_nn_batch_norm(graft_tensor **out, graft_tensor *x, graft_tensor *running_mean,
                                 graft_tensor *running_var, graft_tensor *weight, graft_tensor *bias,
                                 graft_tensor *num_batches_tracked, bool training, double momentum, double eps) {
    /* not on PyTorch's float32 list (cuDNN takes half inputs), but graft's kernels take
     * float32/float64: a 16-bit activation under autocast is normalised in float32 */
    GRAFT_AUTOCAST_FP32(x, graft_nn_batch_norm(out, x, running_mean, running_var, weight, bias, num_batches_tracked,
                                               training, momentum, eps));
    if (graft_nn_is_half(x)) { /* a 16-bit model: in float32, statistics written back */
        graft_tensor *t[3] = {x, weight, bias}, *h[3] = {NULL, NULL, NULL}, *rm = NULL, *rv = NULL, *r = NULL;
        graft_status st = graft_nn_half_up(t, 3, h);
        if (!st && graft_nn_is_half(running_mean)) st = graft_tensor_to_dtype(&rm, running_mean, GRAFT_F32);
        if (!st && graft_nn_is_half(running_var)) st = graft_tensor_to_dtype(&rv, running_var, GRAFT_F32);
        if (!st)
            st = graft_nn_batch_norm(&r, t[0], rm ? rm : running_mean, rv ? rv : running_var, t[1], t[2],
                                     num_batches_tracked, training, momentum, eps);
        if (!st && training && rm) st = graft_tensor_copy_(running_mean, rm);
        if (!st && training && rv) st = graft_tensor_copy_(running_var, rv);
        graft_tensor_release(rm);
        graft_tensor_release(rv);
        graft_nn_half_release(h, 3);
        if (st) {
            graft_tensor_release(r);
            return st;
        }
        return graft_nn_half_back(out, r, x->dtype);
    }
    if (GRAFT_AG_ACTIVE(x->autograd || GRAFT_AG_T(weight) || GRAFT_AG_T(bias)))
        return graft_ag_nn_batch_norm(out, x, running_mean, running_var, weight, bias, num_batches_tracked, training,
                                      momentum, eps);
    return graft_nn_batch_norm_forward(out, NULL, NULL, x, running_mean, running_var, weight, bias,
                                       num_batches_tracked, training, momentum, eps);
}

/* ======================================================================== */
/* layer_norm                                                                */
/* ======================================================================== */

static graft_status ln_check(graft_tensor *x, int nshape, const int64_t *ns, graft_tensor *w, graft_tensor *b,
                             int64_t *rows, int64_t *D) {
    char s1[SHAPE_BUF], s2[SHAPE_BUF], s3[SHAPE_BUF];
    graft_status st = graft_nn_check_float(x, "layer_norm", "input");
    if (st) return st;
    bool ok = nshape >= 1 && nshape <= x->ndim;
    for (int i = 0; ok && i < nshape; i++) ok = x->shape[x->ndim - nshape + i] == ns[i];
    if (!ok)
        return graft_error(GRAFT_ESHAPE, "layer_norm: given normalized_shape %s, expected an input of shape [*, %s, got %s",
                           graft_shape_str(nshape, ns, s1, sizeof s1),
                           nshape > 0 ? graft_shape_str(nshape, ns, s2, sizeof s2) + 1 : "]",
                           graft_shape_str(x->ndim, x->shape, s3, sizeof s3));
    graft_tensor *ps[2] = {w, b};
    const char *names[2] = {"weight", "bias"};
    for (int k = 0; k < 2; k++) {
        graft_tensor *p = ps[k];
        if (!p) continue;
        bool same = p->ndim == nshape;
        for (int i = 0; same && i < nshape; i++) same = p->shape[i] == ns[i];
        if (!same)
            return graft_error(GRAFT_ESHAPE, "layer_norm: %s has shape %s, expected normalized_shape %s", names[k],
                               graft_shape_str(p->ndim, p->shape, s1, sizeof s1), graft_shape_str(nshape, ns, s2, sizeof s2));
        if (!graft_dtype_is_float(p->dtype))
            return graft_error(GRAFT_ETYPE, "layer_norm: %s must be floating point, got %s", names[k],
                               graft_dtype_name(p->dtype));
        if ((st = graft_nn_same_device("layer_norm", 2, (graft_tensor *[]){x, p}))) return st;
    }
    *D = 1;
    for (int i = 0; i < nshape; i++) *D *= ns[i];
    *rows = *D ? graft_tensor_numel(x) / *D : 0;
    return GRAFT_OK;
}

/* Each row: mean and rstd in double, then y = (x - mean) rstd w + b. */
static void ln_forward_cpu(const nm_fwd *f, graft_tensor *y, int64_t R, int64_t D, double eps) {
    const nn_span_ops *ops = nm_ops(f->x);
    size_t esz = ops->esz;
    const char *xp = graft_tensor_data(f->x);
    const void *wp = f->w ? graft_tensor_data(f->w) : NULL, *bp = f->b ? graft_tensor_data(f->b) : NULL;
    char *yp = graft_tensor_data(y), *mp = graft_tensor_data(f->mean), *rp = graft_tensor_data(f->rstd);
    int nt = nm_threads(R * D);
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t r = 0; r < R; r++) {
        const char *row = xp + r * D * esz;
        double m = ops->sum(row, D) / (double)D;
        double v = ops->sqdev(row, D, m) / (double)D;
        double rs = 1.0 / sqrt(v + eps);
        ops->affine_w(yp + r * D * esz, row, wp, bp, D, m, rs);
        nm_put(mp, esz, r, m);
        nm_put(rp, esz, r, rs);
    }
}

graft_status graft_nn_layer_norm_forward(graft_tensor **y, graft_tensor **mean_out, graft_tensor **rstd_out,
                                         graft_tensor *x, int nshape, const int64_t *ns, graft_tensor *w,
                                         graft_tensor *b, double eps) {
    int64_t R = 0, D = 0;
    *y = NULL;
    if (mean_out) *mean_out = NULL;
    if (rstd_out) *rstd_out = NULL;
    graft_status st = ln_check(x, nshape, ns, w, b, &R, &D);
    if (st) return st;
    nm_fwd f;
    if (!(st = nm_fwd_begin(&f, y, x, w, b, R))) {
        if (nm_on_cuda(x)) st = graft_cuda_layer_norm_forward(*y, f.mean, f.rstd, f.x, f.w, f.b, R, D, eps);
        else ln_forward_cpu(&f, *y, R, D, eps);
    }
    return nm_fwd_end(&f, st, y, mean_out, rstd_out);
}

/* Per row, with xhat = (x - mean) rstd and gw = g w:
 *   dx = rstd (gw - mean(gw) - xhat mean(gw xhat));  dw = sum_rows g xhat, db = sum_rows g
 * dw and db accumulate in per-thread double rows, summed at the end. */
graft_status graft_nn_layer_norm_backward(graft_tensor **dx, graft_tensor **dw, graft_tensor **db, graft_tensor *g,
                                          graft_tensor *x, int nshape, graft_tensor *w, graft_tensor *mean_t,
                                          graft_tensor *rstd_t) {
    int64_t D = 1;
    for (int i = 0; i < nshape; i++) D *= x->shape[x->ndim - nshape + i];
    int64_t R = D ? graft_tensor_numel(x) / D : 0;
    if (nm_on_cuda(x)) {
        nm_bwd o;
        graft_status st = nm_bwd_begin(&o, dx, dw, db, g, x, w, mean_t, rstd_t, nshape, x->shape + x->ndim - nshape,
                                       true, "layer_norm backward");
        if (!st)
            st = graft_cuda_layer_norm_backward(NM_OUT(dx), NM_OUT(dw), NM_OUT(db), o.g, o.x, o.w, o.mean, o.rstd, R,
                                                D);
        return nm_bwd_end(&o, st, dx, dw, db);
    }
    const nn_span_ops *ops = nm_ops(x);
    size_t esz = ops->esz;
    graft_tensor *gc = NULL, *xc = NULL, *wc = NULL;
    double *part = NULL;
    graft_status st = GRAFT_OK;
    if (dx) *dx = NULL;
    if (dw) *dw = NULL;
    if (db) *db = NULL;
    int nt = nm_threads(R * D);
    if ((st = graft_nn_same_device("layer_norm backward", 2, (graft_tensor *[]){x, g})) ||
        (st = graft_nn_contig_as(&gc, g, x->dtype)) ||
        (st = graft_tensor_contiguous(&xc, x)) || (st = graft_nn_contig_as(&wc, w, x->dtype)))
        goto done;
    if (dx && (st = graft_tensor_empty(dx, x->ndim, x->shape, x->dtype, graft_cpu))) goto done;
    bool acc = dw || db;
    if (acc && !(part = calloc((size_t)nt * 2 * (size_t)D + 1, sizeof(double)))) {
        st = graft_error(GRAFT_ENOMEM, "layer_norm backward: out of memory");
        goto done;
    }
    const char *gp = graft_tensor_data(gc), *xp = graft_tensor_data(xc), *mp = graft_tensor_data(mean_t),
               *rp = graft_tensor_data(rstd_t);
    const void *wp = wc ? graft_tensor_data(wc) : NULL;
    char *op = dx ? graft_tensor_data(*dx) : NULL;
    bool f64 = esz == sizeof(double);
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        double *pw = part ? part + (size_t)t * 2 * (size_t)D : NULL, *pb = pw ? pw + D : NULL;
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < R; r++) {
            const char *gr = gp + r * D * esz, *xr = xp + r * D * esz;
            double m = f64 ? ((const double *)mp)[r] : ((const float *)mp)[r];
            double rs = f64 ? ((const double *)rp)[r] : ((const float *)rp)[r];
            if (acc) ops->accum(dw ? pw : NULL, db ? pb : NULL, gr, xr, D, m, rs);
            if (op) {
                double sgw, sgwx;
                ops->dot(gr, xr, wp, D, &sgw, &sgwx);
                double a = rs * (sgwx - m * sgw); /* sum(g w xhat) */
                double bc = -rs * rs * a / (double)D;
                double c0 = -rs * sgw / (double)D - bc * m;
                ops->dx(op + r * D * esz, gr, xr, wp, D, rs, bc, c0);
            }
        }
    }
    if (acc) {
        for (int t = 1; t < nt; t++)
            for (int64_t i = 0; i < 2 * D; i++) part[i] += part[(size_t)t * 2 * (size_t)D + (size_t)i];
        const int64_t *ns = x->shape + x->ndim - nshape;
        if (dw && (st = nm_vector(dw, part, nshape, ns, x->dtype))) goto done;
        if (db && (st = nm_vector(db, part + D, nshape, ns, x->dtype))) goto done;
    }
done:
    if (st) nm_drop3(dx, dw, db);
    free(part);
    graft_tensor_release(gc);
    graft_tensor_release(xc);
    graft_tensor_release(wc);
    return st;
}

graft_status graft_nn_layer_norm(graft_tensor **out, graft_tensor *x, int nshape, const int64_t *normalized_shape,
                                 graft_tensor *weight, graft_tensor *bias, double eps) {
    GRAFT_AUTOCAST_FP32(x, graft_nn_layer_norm(out, x, nshape, normalized_shape, weight, bias, eps));
    if (graft_nn_is_half(x)) { /* in float32, rounded back once */
        graft_tensor *t[3] = {x, weight, bias}, *h[3] = {NULL, NULL, NULL}, *r = NULL;
        graft_status st = graft_nn_half_up(t, 3, h);
        if (!st) st = graft_nn_layer_norm(&r, t[0], nshape, normalized_shape, t[1], t[2], eps);
        graft_nn_half_release(h, 3);
        return st ? st : graft_nn_half_back(out, r, x->dtype);
    }
    if (GRAFT_AG_ACTIVE(x->autograd || GRAFT_AG_T(weight) || GRAFT_AG_T(bias)))
        return graft_ag_nn_layer_norm(out, x, nshape, normalized_shape, weight, bias, eps);
    return graft_nn_layer_norm_forward(out, NULL, NULL, x, nshape, normalized_shape, weight, bias, eps);
}

/* ======================================================================== */
/* group_norm                                                                */
/* ======================================================================== */

static graft_status gn_check(graft_tensor *x, int64_t G, graft_tensor *w, graft_tensor *b, int64_t *N, int64_t *C,
                             int64_t *L) {
    char s[SHAPE_BUF];
    graft_status st = graft_nn_check_float(x, "group_norm", "input");
    if (st) return st;
    if (x->ndim < 2)
        return graft_error(GRAFT_ESHAPE, "group_norm: expected an input of shape [N, C, *], got %s",
                           graft_shape_str(x->ndim, x->shape, s, sizeof s));
    *N = x->shape[0];
    *C = x->shape[1];
    *L = 1;
    for (int d = 2; d < x->ndim; d++) *L *= x->shape[d];
    if (G <= 0 || *C % G != 0)
        return graft_error(GRAFT_EINVAL,
                           "group_norm: expected the number of channels of the input to be divisible by num_groups, "
                           "got input of shape %s and num_groups = %lld",
                           graft_shape_str(x->ndim, x->shape, s, sizeof s), (long long)G);
    if ((st = nm_check_vec(w, *C, "group_norm", "weight")) || (st = nm_check_vec(b, *C, "group_norm", "bias")) ||
        (st = graft_nn_same_device("group_norm", 3, (graft_tensor *[]){x, w, b})))
        return st;
    return GRAFT_OK;
}

/* Each (n, group): mean and rstd in double over its C/G * L values, then per channel
 * y = x scale + shift. w and b are read as given (any float dtype). */
static graft_status gn_forward_cpu(const nm_fwd *f, graft_tensor *y, graft_tensor *w, graft_tensor *b, int64_t N,
                                   int64_t C, int64_t L, int64_t G, double eps) {
    const nn_span_ops *ops = nm_ops(f->x);
    size_t esz = ops->esz;
    int64_t Cg = C / G, D = Cg * L, NG = N * G;
    double *wv = malloc(sizeof(double) * (size_t)(2 * C + 1)), *bv = wv ? wv + C : NULL;
    if (!wv) return graft_error(GRAFT_ENOMEM, "group_norm: out of memory");
    for (int64_t c = 0; c < C; c++) {
        wv[c] = w ? nm_load(w, c) : 1.0;
        bv[c] = b ? nm_load(b, c) : 0.0;
    }
    const char *xp = graft_tensor_data(f->x);
    char *yp = graft_tensor_data(y), *mp = graft_tensor_data(f->mean), *rp = graft_tensor_data(f->rstd);
    int nt = nm_threads(N * C * L);
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t ng = 0; ng < NG; ng++) {
        int64_t c0 = (ng % G) * Cg;
        const char *span = xp + ng * D * esz; /* (n * C + g * Cg) * L == ng * D */
        double m = D ? ops->sum(span, D) / (double)D : 0.0;
        double v = D ? ops->sqdev(span, D, m) / (double)D : 0.0;
        double rs = 1.0 / sqrt(v + eps);
        for (int64_t j = 0; j < Cg; j++) {
            double sc = rs * wv[c0 + j];
            ops->affine(yp + (ng * D + j * L) * esz, span + j * L * esz, L, sc, bv[c0 + j] - m * sc);
        }
        nm_put(mp, esz, ng, m);
        nm_put(rp, esz, ng, rs);
    }
    free(wv);
    return GRAFT_OK;
}

graft_status graft_nn_group_norm_forward(graft_tensor **y, graft_tensor **mean_out, graft_tensor **rstd_out,
                                         graft_tensor *x, int64_t G, graft_tensor *w, graft_tensor *b, double eps) {
    int64_t N = 0, C = 0, L = 0;
    *y = NULL;
    if (mean_out) *mean_out = NULL;
    if (rstd_out) *rstd_out = NULL;
    graft_status st = gn_check(x, G, w, b, &N, &C, &L);
    if (st) return st;
    nm_fwd f;
    if (!(st = nm_fwd_begin(&f, y, x, w, b, N * G))) {
        if (nm_on_cuda(x)) st = graft_cuda_group_norm_forward(*y, f.mean, f.rstd, f.x, f.w, f.b, N, C, L, G, eps);
        else st = gn_forward_cpu(&f, *y, w, b, N, C, L, G, eps);
    }
    return nm_fwd_end(&f, st, y, mean_out, rstd_out);
}

/* Per (n, group), with xhat = (x - mean) rstd over the group's D = C/G * L values:
 *   dx = rstd (g w - mean(g w) - xhat mean(g w xhat));  dw[c] = sum g xhat, db[c] = sum g
 * from the sums sg, sgx of g and g x over each (n, c) plane. */
graft_status graft_nn_group_norm_backward(graft_tensor **dx, graft_tensor **dw, graft_tensor **db, graft_tensor *g,
                                          graft_tensor *x, int64_t G, graft_tensor *w, graft_tensor *mean_t,
                                          graft_tensor *rstd_t) {
    int64_t N = x->shape[0], C = x->shape[1], L = 1;
    for (int d = 2; d < x->ndim; d++) L *= x->shape[d];
    int64_t Cg = C / G, D = Cg * L;
    const nn_span_ops *ops = nm_ops(x);
    size_t esz = ops->esz;
    bool f64 = esz == sizeof(double);
    graft_tensor *gc = NULL, *xc = NULL;
    graft_status st = GRAFT_OK;
    if (dx) *dx = NULL;
    if (dw) *dw = NULL;
    if (db) *db = NULL;
    if (nm_on_cuda(x)) {
        nm_bwd o;
        st = nm_bwd_begin(&o, dx, dw, db, g, x, w, mean_t, rstd_t, 1, &C, true, "group_norm backward");
        if (!st)
            st = graft_cuda_group_norm_backward(NM_OUT(dx), NM_OUT(dw), NM_OUT(db), o.g, o.x, o.w, o.mean, o.rstd, N, C,
                                                L, G);
        return nm_bwd_end(&o, st, dx, dw, db);
    }
    double *sg = malloc(sizeof(double) * (size_t)(4 * N * C + 2 * C + 1));
    if (!sg) return graft_error(GRAFT_ENOMEM, "group_norm backward: out of memory");
    double *sgx = sg + N * C, *wv = sgx + N * C, *vw = wv + C, *vb = vw + C;
    for (int64_t c = 0; c < C; c++) wv[c] = w ? nm_load(w, c) : 1.0;
    if ((st = graft_nn_contig_as(&gc, g, x->dtype)) || (st = graft_tensor_contiguous(&xc, x))) goto done;
    const char *gp = graft_tensor_data(gc), *xp = graft_tensor_data(xc);
    const char *mp = graft_tensor_data(mean_t), *rp = graft_tensor_data(rstd_t);
    int nt = nm_threads(N * C * L);
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t p = 0; p < N * C; p++) ops->dot(gp + p * L * esz, xp + p * L * esz, NULL, L, &sg[p], &sgx[p]);
    #define GN_STAT(arr, i) (f64 ? ((const double *)(arr))[i] : (double)((const float *)(arr))[i])
    if (dw || db) {
        for (int64_t c = 0; c < C; c++) {
            double a = 0, s = 0;
            for (int64_t n = 0; n < N; n++) {
                int64_t ng = n * G + c / Cg;
                a += (sgx[n * C + c] - GN_STAT(mp, ng) * sg[n * C + c]) * GN_STAT(rp, ng);
                s += sg[n * C + c];
            }
            vw[c] = a;
            vb[c] = s;
        }
        if (dw && (st = nm_vector(dw, vw, 1, &C, x->dtype))) goto done;
        if (db && (st = nm_vector(db, vb, 1, &C, x->dtype))) goto done;
    }
    if (dx) {
        if ((st = graft_tensor_empty(dx, x->ndim, x->shape, x->dtype, graft_cpu))) goto done;
        char *op = graft_tensor_data(*dx);
        #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
        for (int64_t ng = 0; ng < N * G; ng++) {
            int64_t n = ng / G, c0 = (ng % G) * Cg;
            double m = GN_STAT(mp, ng), rs = GN_STAT(rp, ng), A = 0, B = 0;
            for (int64_t j = 0; j < Cg; j++) {
                int64_t p = n * C + c0 + j;
                A += wv[c0 + j] * sg[p];
                B += wv[c0 + j] * (sgx[p] - m * sg[p]);
            }
            B *= rs; /* sum(g w xhat) */
            double bc = D ? -rs * rs * B / (double)D : 0.0, c1 = D ? -rs * A / (double)D - bc * m : 0.0;
            for (int64_t j = 0; j < Cg; j++) {
                int64_t off = (ng * D + j * L) * (int64_t)esz;
                ops->dx(op + off, gp + off, xp + off, NULL, L, rs * wv[c0 + j], bc, c1);
            }
        }
    }
    #undef GN_STAT
done:
    if (st) nm_drop3(dx, dw, db);
    free(sg);
    graft_tensor_release(gc);
    graft_tensor_release(xc);
    return st;
}

graft_status graft_nn_group_norm(graft_tensor **out, graft_tensor *x, int64_t num_groups, graft_tensor *weight,
                                 graft_tensor *bias, double eps) {
    GRAFT_AUTOCAST_FP32(x, graft_nn_group_norm(out, x, num_groups, weight, bias, eps));
    if (graft_nn_is_half(x)) { /* in float32, rounded back once */
        graft_tensor *t[3] = {x, weight, bias}, *h[3] = {NULL, NULL, NULL}, *r = NULL;
        graft_status st = graft_nn_half_up(t, 3, h);
        if (!st) st = graft_nn_group_norm(&r, t[0], num_groups, t[1], t[2], eps);
        graft_nn_half_release(h, 3);
        return st ? st : graft_nn_half_back(out, r, x->dtype);
    }
    if (GRAFT_AG_ACTIVE(x->autograd || GRAFT_AG_T(weight) || GRAFT_AG_T(bias)))
        return graft_ag_nn_group_norm(out, x, num_groups, weight, bias, eps);
    return graft_nn_group_norm_forward(out, NULL, NULL, x, num_groups, weight, bias, eps);
}
