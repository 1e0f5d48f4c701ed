/* graft nn: interpolate and pad front ends and their CPU loops. Coordinates are
 * computed once per output row and column (index and weight tables, in the precision
 * PyTorch 1.13 uses: float for nearest, the input's float type for linear modes); the
 * loops then run over H x W planes in parallel. Non-constant padding maps each output
 * coordinate to an input coordinate (reflect, replicate, circular) the same way. CUDA
 * tensors run core/cuda/resize.cu with tables built here by the same code.
 */
#include "nn/resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/resize.h"
#include "nn/spatial_record.h"
#include "ops/view.h"
#include "tensor/iter.h"

#define SHAPE_BUF (GRAFT_MAX_DIMS * 24 + 3)

const char *graft_interp_name(graft_interp_mode m) {
    switch (m) {
    case GRAFT_INTERP_NEAREST: return "nearest";
    case GRAFT_INTERP_LINEAR: return "linear";
    case GRAFT_INTERP_BILINEAR: return "bilinear";
    }
    return "?";
}

const char *graft_pad_mode_name(graft_pad_mode m) {
    switch (m) {
    case GRAFT_PAD_CONSTANT: return "constant";
    case GRAFT_PAD_REFLECT: return "reflect";
    case GRAFT_PAD_REPLICATE: return "replicate";
    case GRAFT_PAD_CIRCULAR: return "circular";
    }
    return "?";
}

static graft_dtype rz_compute(graft_dtype d) { return d == GRAFT_F64 ? GRAFT_F64 : GRAFT_F32; }

/* +1: t in dtype d, contiguous. */
static graft_status rz_ready(graft_tensor **out, graft_tensor *t, graft_dtype d) {
    if (t->dtype != d) return graft_tensor_to_dtype(out, t, d);
    return graft_tensor_contiguous(out, t);
}

/* Converts *t (+1) to dtype d in place of the reference. */
static graft_status rz_back_to(graft_tensor **t, graft_dtype d) {
    if ((*t)->dtype == d) return GRAFT_OK;
    graft_tensor *c;
    graft_status st = graft_tensor_to_dtype(&c, *t, d);
    graft_tensor_release(*t);
    *t = st ? NULL : c;
    return st;
}

/* +1: a copy on dev of the host array v of n elements of dtype d. */
static graft_status rz_upload(graft_tensor **out, const void *v, int64_t n, graft_dtype d, graft_device dev) {
    graft_tensor *h = NULL;
    *out = NULL;
    graft_status st = graft_tensor_empty(&h, 1, &n, d, graft_cpu);
    if (st) return st;
    memcpy(graft_tensor_data(h), v, (size_t)n * graft_dtype_size(d));
    if (!(st = graft_tensor_empty(out, 1, &n, d, dev)) && (st = graft_tensor_copy_(*out, h))) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    graft_tensor_release(h);
    return st;
}

static bool rz_on_cuda(const graft_tensor *t) { return graft_tensor_device(t).type == GRAFT_CUDA; }

/* ================= interpolate ================= */

typedef struct {
    int64_t planes, H, W, OH, OW;
    double sh, sw;                  /* coordinate scales (the scale factors); 0: from sizes */
    int out_ndim;
    int64_t out_shape[4];
} ip_geom;

static graft_status ip_geom_make(ip_geom *g, int ndim, const int64_t *shape, const graft_interp_opts *o) {
    char a[SHAPE_BUF];
    const char *op = "interpolate";
    memset(g, 0, sizeof *g);
    int want = o->mode == GRAFT_INTERP_LINEAR ? 3 : o->mode == GRAFT_INTERP_BILINEAR ? 4 : 0;
    if ((want && ndim != want) || (!want && ndim != 3 && ndim != 4))
        return graft_error(GRAFT_ESHAPE, "%s: mode \"%s\" expects a %s input (batched, with channels), got %s", op,
                           graft_interp_name(o->mode), want == 3 ? "3-D" : want == 4 ? "4-D" : "3-D or 4-D",
                           graft_shape_str(ndim, shape, a, sizeof a));
    int S = ndim - 2;
    int64_t in[2] = {1, 1}, out[2] = {1, 1};
    double sc[2] = {0, 0};
    for (int d = 0; d < S; d++) {
        int k = 2 - S + d; /* 1-D maps onto W */
        in[k] = shape[2 + d];
        if (o->size[d] > 0) {
            out[k] = o->size[d];
        } else {
            double f = o->scale_factor[d];
            if (!(f > 0) || !isfinite(f))
                return graft_error(GRAFT_EINVAL, "%s: scale_factor must be positive, got %g", op, f);
            out[k] = (int64_t)((double)in[k] * f);
            if (!o->recompute_scale_factor) sc[k] = f;
        }
    }
    if (in[0] < 1 || in[1] < 1 || out[0] < 1 || out[1] < 1) {
        char b[SHAPE_BUF];
        int64_t os[2] = {out[2 - S], out[1]};
        return graft_error(GRAFT_ESHAPE, "%s: input and output sizes must be positive, got input %s and output size %s",
                           op, graft_shape_str(ndim, shape, a, sizeof a), graft_shape_str(S, os, b, sizeof b));
    }
    g->planes = shape[0] * shape[1];
    g->H = in[0];
    g->W = in[1];
    g->OH = out[0];
    g->OW = out[1];
    g->sh = sc[0];
    g->sw = sc[1];
    g->out_ndim = ndim;
    g->out_shape[0] = shape[0];
    g->out_shape[1] = shape[1];
    if (S == 2) {
        g->out_shape[2] = out[0];
        g->out_shape[3] = out[1];
    } else {
        g->out_shape[2] = out[1];
    }
    return GRAFT_OK;
}

/* PyTorch's nearest_idx: the source index of each output index (float arithmetic). */
static void ip_nearest_table(int64_t *idx, int64_t in, int64_t out, double scale) {
    float s = scale > 0 ? (float)(1.0 / scale) : (float)in / (float)out;
    for (int64_t i = 0; i < out; i++) {
        if (out == in) idx[i] = i;
        else if (out == 2 * in) idx[i] = i >> 1;
        else {
            int64_t j = (int64_t)floorf((float)i * s);
            idx[i] = j < in - 1 ? j : in - 1;
        }
    }
}

static bool ip_par(const ip_geom *g) { return g->planes > 1 && graft_should_parallelize(g->planes * g->OH * g->OW * 4); }

#define IP_LOOPS(SUF, T)                                                                            \
    /* PyTorch's compute_source_index_and_lambda over one dim */                                    \
    static void ip_linear_table_##SUF(int64_t *i0, int64_t *i1, T *l0, T *l1, int64_t in, int64_t out, \
                                      bool align, double scale) {                                   \
        T ratio;                                                                                    \
        if (align) ratio = out > 1 ? (T)(in - 1) / (T)(out - 1) : (T)0;                             \
        else ratio = scale > 0 ? (T)(1.0 / scale) : (T)in / (T)out;                                 \
        for (int64_t i = 0; i < out; i++) {                                                         \
            if (out == in) {                                                                        \
                i0[i] = i1[i] = i;                                                                  \
                l0[i] = 1;                                                                          \
                l1[i] = 0;                                                                          \
                continue;                                                                           \
            }                                                                                       \
            T real = align ? ratio * (T)i : ratio * ((T)i + (T)0.5) - (T)0.5;                       \
            if (!align && real < 0) real = 0;                                                       \
            int64_t a = (int64_t)real;                                                              \
            i0[i] = a;                                                                              \
            i1[i] = a + (a < in - 1 ? 1 : 0);                                                       \
            T lam = real - (T)a;                                                                    \
            lam = lam < 0 ? 0 : lam > 1 ? 1 : lam;                                                  \
            l1[i] = lam;                                                                            \
            l0[i] = (T)1 - lam;                                                                     \
        }                                                                                           \
    }                                                                                               \
    static void ip_nearest_##SUF(const ip_geom *g, const int64_t *nh, const int64_t *nw, const T *x, T *y, \
                                 bool backward) {                                                   \
        bool par = ip_par(g);                                                                       \
        (void)par;                                                                                  \
        _Pragma("omp parallel for schedule(static) if(par)")                                        \
        for (int64_t pc = 0; pc < g->planes; pc++) {                                                \
            const int64_t HW = g->H * g->W, OP = g->OH * g->OW;                                     \
            if (!backward) {                                                                        \
                const T *xp = x + pc * HW;                                                          \
                T *yp = y + pc * OP;                                                                \
                for (int64_t oh = 0; oh < g->OH; oh++) {                                            \
                    const T *row = xp + nh[oh] * g->W;                                              \
                    for (int64_t ow = 0; ow < g->OW; ow++) yp[oh * g->OW + ow] = row[nw[ow]];       \
                }                                                                                   \
            } else { /* x: the output gradient, y: the input gradient */                            \
                const T *gp = x + pc * OP;                                                          \
                T *xp = y + pc * HW;                                                                \
                memset(xp, 0, sizeof(T) * (size_t)HW);                                              \
                for (int64_t oh = 0; oh < g->OH; oh++) {                                            \
                    T *row = xp + nh[oh] * g->W;                                                    \
                    for (int64_t ow = 0; ow < g->OW; ow++) row[nw[ow]] += gp[oh * g->OW + ow];      \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    static graft_status ip_linear_##SUF(const ip_geom *g, bool align, const T *x, T *y, bool backward) { \
        size_t n = (size_t)(g->OH + g->OW);                                                         \
        int64_t *ix = malloc(sizeof(int64_t) * 2 * n);                                              \
        T *lw = malloc(sizeof(T) * 2 * n);                                                          \
        if (!ix || !lw) {                                                                           \
            free(ix);                                                                               \
            free(lw);                                                                               \
            return graft_error(GRAFT_ENOMEM, "interpolate: out of memory");                         \
        }                                                                                           \
        int64_t *h0 = ix, *h1 = ix + g->OH, *w0 = ix + 2 * g->OH, *w1 = w0 + g->OW;                 \
        T *a0 = lw, *a1 = lw + g->OH, *b0 = lw + 2 * g->OH, *b1 = b0 + g->OW;                       \
        ip_linear_table_##SUF(h0, h1, a0, a1, g->H, g->OH, align, g->sh);                           \
        ip_linear_table_##SUF(w0, w1, b0, b1, g->W, g->OW, align, g->sw);                           \
        bool par = ip_par(g);                                                                       \
        (void)par;                                                                                  \
        _Pragma("omp parallel for schedule(static) if(par)")                                        \
        for (int64_t pc = 0; pc < g->planes; pc++) {                                                \
            const int64_t HW = g->H * g->W, OP = g->OH * g->OW, W = g->W;                           \
            if (!backward) {                                                                        \
                const T *xp = x + pc * HW;                                                          \
                T *yp = y + pc * OP;                                                                \
                for (int64_t oh = 0; oh < g->OH; oh++) {                                            \
                    const T *r0 = xp + h0[oh] * W, *r1 = xp + h1[oh] * W;                           \
                    for (int64_t ow = 0; ow < g->OW; ow++) {                                        \
                        T t0 = r0[w0[ow]] * b0[ow] + r0[w1[ow]] * b1[ow];                           \
                        T t1 = r1[w0[ow]] * b0[ow] + r1[w1[ow]] * b1[ow];                           \
                        yp[oh * g->OW + ow] = t0 * a0[oh] + t1 * a1[oh];                            \
                    }                                                                               \
                }                                                                                   \
            } else {                                                                                \
                const T *gp = x + pc * OP;                                                          \
                T *xp = y + pc * HW;                                                                \
                memset(xp, 0, sizeof(T) * (size_t)HW);                                              \
                for (int64_t oh = 0; oh < g->OH; oh++) {                                            \
                    T *r0 = xp + h0[oh] * W, *r1 = xp + h1[oh] * W;                                 \
                    for (int64_t ow = 0; ow < g->OW; ow++) {                                        \
                        T v = gp[oh * g->OW + ow];                                                  \
                        r0[w0[ow]] += a0[oh] * b0[ow] * v;                                          \
                        r0[w1[ow]] += a0[oh] * b1[ow] * v;                                          \
                        r1[w0[ow]] += a1[oh] * b0[ow] * v;                                          \
                        r1[w1[ow]] += a1[oh] * b1[ow] * v;                                          \
                    }                                                                               \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
        free(ix);                                                                                   \
        free(lw);                                                                                   \
        return GRAFT_OK;                                                                            \
    }

IP_LOOPS(f32, float)
IP_LOOPS(f64, double)

/* The device tables of an interpolation (see core/cuda/resize.h), each +1: *idx the
 * sources, *lam the linear weights (cdt), *rng (when asked) the outputs reading each
 * input row and column. Built by the CPU's table code, so the device reads the same
 * sources with the same weights. */
static graft_status ip_tables_cuda(graft_tensor **idx, graft_tensor **lam, graft_tensor **rng, const ip_geom *g,
                                   const graft_interp_opts *o, graft_dtype cdt, graft_device dev) {
    bool linear = o->mode != GRAFT_INTERP_NEAREST;
    int64_t nout = linear ? 2 * (g->OH + g->OW) : g->OH + g->OW, nin = 2 * (g->H + g->W);
    int64_t *ix = malloc(sizeof(int64_t) * (size_t)(nout + nin));
    void *lw = malloc(sizeof(double) * (size_t)nout);
    graft_status st = GRAFT_OK;
    *idx = *lam = NULL;
    if (rng) *rng = NULL;
    if (!ix || !lw) {
        st = graft_error(GRAFT_ENOMEM, "interpolate: out of memory");
        goto done;
    }
    /* i0 and i1 per output row, then per output column (nearest: i0 = i1) */
    int64_t *i0h, *i1h, *i0w, *i1w;
    if (linear) {
        i0h = ix;
        i1h = ix + g->OH;
        i0w = ix + 2 * g->OH;
        i1w = i0w + g->OW;
        if (cdt == GRAFT_F64) {
            double *l = lw;
            ip_linear_table_f64(i0h, i1h, l, l + g->OH, g->H, g->OH, o->align_corners, g->sh);
            ip_linear_table_f64(i0w, i1w, l + 2 * g->OH, l + 2 * g->OH + g->OW, g->W, g->OW, o->align_corners, g->sw);
        } else {
            float *l = lw;
            ip_linear_table_f32(i0h, i1h, l, l + g->OH, g->H, g->OH, o->align_corners, g->sh);
            ip_linear_table_f32(i0w, i1w, l + 2 * g->OH, l + 2 * g->OH + g->OW, g->W, g->OW, o->align_corners, g->sw);
        }
    } else {
        i0h = i1h = ix;
        i0w = i1w = ix + g->OH;
        ip_nearest_table(i0h, g->H, g->OH, g->sh);
        ip_nearest_table(i0w, g->W, g->OW, g->sw);
    }
    if ((st = rz_upload(idx, ix, nout, GRAFT_I64, dev))) goto done;
    if (linear && (st = rz_upload(lam, lw, nout, cdt, dev))) goto done;
    if (rng) {
        /* input i is read by the outputs o with i0[o] <= i <= i1[o]: a contiguous run */
        int64_t *r = ix + nout;
        int64_t ins[2] = {g->H, g->W}, outs[2] = {g->OH, g->OW};
        int64_t *a0[2] = {i0h, i0w}, *a1[2] = {i1h, i1w};
        for (int k = 0; k < 2; k++) {
            int64_t *lo = r, *hi = r + ins[k];
            for (int64_t i = 0; i < ins[k]; i++) {
                lo[i] = outs[k];
                hi[i] = 0;
            }
            for (int64_t q = 0; q < outs[k]; q++)
                for (int64_t i = a0[k][q]; i <= a1[k][q]; i++) {
                    if (q < lo[i]) lo[i] = q;
                    if (q + 1 > hi[i]) hi[i] = q + 1;
                }
            r += 2 * ins[k];
        }
        st = rz_upload(rng, ix + nout, nin, GRAFT_I64, dev);
    }
done:
    if (st) {
        graft_tensor_release(*idx);
        graft_tensor_release(*lam);
        *idx = *lam = NULL;
    }
    free(ix);
    free(lw);
    return st;
}

/* The device geometry of an interpolation. */
static graft_cuda_interp_geom ip_cuda_geom(const ip_geom *g) {
    graft_cuda_interp_geom c = {g->planes, g->H, g->W, g->OH, g->OW};
    return c;
}

/* Runs the interpolation loops from src (contiguous, compute dtype) into dst. */
static graft_status ip_run(const ip_geom *g, const graft_interp_opts *o, graft_tensor *src, graft_tensor *dst,
                           bool backward) {
    bool f = src->dtype == GRAFT_F32;
    if (o->mode == GRAFT_INTERP_NEAREST) {
        int64_t *t = malloc(sizeof(int64_t) * (size_t)(g->OH + g->OW));
        if (!t) return graft_error(GRAFT_ENOMEM, "interpolate: out of memory");
        ip_nearest_table(t, g->H, g->OH, g->sh);
        ip_nearest_table(t + g->OH, g->W, g->OW, g->sw);
        if (f) ip_nearest_f32(g, t, t + g->OH, graft_tensor_data(src), graft_tensor_data(dst), backward);
        else ip_nearest_f64(g, t, t + g->OH, graft_tensor_data(src), graft_tensor_data(dst), backward);
        free(t);
        return GRAFT_OK;
    }
    if (f) return ip_linear_f32(g, o->align_corners, graft_tensor_data(src), graft_tensor_data(dst), backward);
    return ip_linear_f64(g, o->align_corners, graft_tensor_data(src), graft_tensor_data(dst), backward);
}

graft_status graft_nn_interpolate(graft_tensor **out, graft_tensor *input, const graft_interp_opts *o) {
    if (GRAFT_AG_ACTIVE(input->autograd)) return graft_ag_interpolate(out, input, o);
    *out = NULL;
    if (!graft_dtype_is_float(input->dtype))
        return graft_error(GRAFT_ETYPE, "interpolate: expected a floating point input, got %s",
                           graft_dtype_name(input->dtype));
    ip_geom g;
    graft_status st = ip_geom_make(&g, input->ndim, input->shape, o);
    if (st) return st;
    graft_dtype cdt = rz_compute(input->dtype);
    if (rz_on_cuda(input)) {
        /* float16/bfloat16 are read and written as they are, computed in float */
        graft_device dev = graft_tensor_device(input);
        graft_tensor *x = NULL, *y = NULL, *idx = NULL, *lam = NULL;
        graft_cuda_interp_geom cg = ip_cuda_geom(&g);
        if ((st = graft_tensor_contiguous(&x, input)) ||
            (st = graft_tensor_empty(&y, g.out_ndim, g.out_shape, input->dtype, dev)) ||
            (st = ip_tables_cuda(&idx, &lam, NULL, &g, o, cdt, dev)) ||
            (st = graft_cuda_interp_forward(y, x, &cg, o->mode != GRAFT_INTERP_NEAREST, idx, lam))) {
            graft_tensor_release(y);
            y = NULL;
        }
        graft_tensor_release(x);
        graft_tensor_release(idx);
        graft_tensor_release(lam);
        *out = y;
        return st;
    }
    graft_tensor *x = NULL, *y = NULL;
    if ((st = rz_ready(&x, input, cdt)) || (st = graft_tensor_empty(&y, g.out_ndim, g.out_shape, cdt, graft_cpu)) ||
        (st = ip_run(&g, o, x, y, false)) || (st = rz_back_to(&y, input->dtype))) {
        graft_tensor_release(x);
        graft_tensor_release(y);
        return st;
    }
    graft_tensor_release(x);
    *out = y;
    return GRAFT_OK;
}

graft_status graft_nn_interpolate_backward(graft_tensor **gin, graft_tensor *grad, int in_ndim, const int64_t *in_shape,
                                           const graft_interp_opts *o) {
    char a[SHAPE_BUF], b[SHAPE_BUF];
    *gin = NULL;
    ip_geom g;
    graft_status st = ip_geom_make(&g, in_ndim, in_shape, o);
    if (st) return st;
    bool same = grad->ndim == g.out_ndim;
    for (int d = 0; same && d < g.out_ndim; d++) same = grad->shape[d] == g.out_shape[d];
    if (!same)
        return graft_error(GRAFT_ESHAPE, "interpolate backward: expected a gradient of shape %s, got %s",
                           graft_shape_str(g.out_ndim, g.out_shape, a, sizeof a),
                           graft_shape_str(grad->ndim, grad->shape, b, sizeof b));
    graft_dtype cdt = rz_compute(grad->dtype);
    graft_device dev = graft_tensor_device(grad);
    graft_tensor *gy = NULL, *gx = NULL;
    if (!(st = rz_ready(&gy, grad, cdt)) && !(st = graft_tensor_empty(&gx, in_ndim, in_shape, cdt, dev))) {
        if (rz_on_cuda(grad)) {
            graft_tensor *idx = NULL, *lam = NULL, *rng = NULL;
            graft_cuda_interp_geom cg = ip_cuda_geom(&g);
            if (!(st = ip_tables_cuda(&idx, &lam, &rng, &g, o, cdt, dev)))
                st = graft_cuda_interp_backward(gx, gy, &cg, o->mode != GRAFT_INTERP_NEAREST, idx, lam, rng);
            graft_tensor_release(idx);
            graft_tensor_release(lam);
            graft_tensor_release(rng);
        } else {
            st = ip_run(&g, o, gy, gx, true);
        }
    }
    graft_tensor_release(gy);
    if (st) {
        graft_tensor_release(gx);
        return st;
    }
    *gin = gx;
    return GRAFT_OK;
}

/* ================= pad ================= */

/* The padded output shape; checks the pad list against the mode and input. */
static graft_status pd_shape(int64_t *oshape, int ndim, const int64_t *shape, const int64_t *pad, int npad,
                             graft_pad_mode mode) {
    char a[SHAPE_BUF];
    const char *op = "pad";
    if (npad % 2 != 0) return graft_error(GRAFT_EINVAL, "%s: the padding list must have an even length, got %d", op, npad);
    if (npad / 2 > ndim)
        return graft_error(GRAFT_EINVAL, "%s: %d padding values pad %d dims, but the input %s has %d", op, npad,
                           npad / 2, graft_shape_str(ndim, shape, a, sizeof a), ndim);
    int k = npad / 2;
    if (mode != GRAFT_PAD_CONSTANT) {
        if (k < 1 || k > 3 || ndim < k + 1 || ndim > k + 2)
            return graft_error(GRAFT_EINVAL,
                               "%s: mode \"%s\" pads the last 1, 2 or 3 dims of a 2-D to 5-D input (2, 4 or 6 padding "
                               "values for a 2-3, 3-4 or 4-5 dim input), got %d values for %s",
                               op, graft_pad_mode_name(mode), npad, graft_shape_str(ndim, shape, a, sizeof a));
    }
    for (int d = 0; d < ndim; d++) oshape[d] = shape[d];
    for (int i = 0; i < k; i++) {
        int d = ndim - 1 - i;
        int64_t lo = pad[2 * i], hi = pad[2 * i + 1], n = shape[d];
        if (mode != GRAFT_PAD_CONSTANT) {
            if (lo < 0 || hi < 0)
                return graft_error(GRAFT_EINVAL, "%s: negative padding (%lld, %lld) is only supported in constant mode",
                                   op, (long long)lo, (long long)hi);
            if (mode == GRAFT_PAD_REFLECT && (lo >= n || hi >= n))
                return graft_error(GRAFT_EINVAL,
                                   "%s: reflect padding (%lld, %lld) must be smaller than the size %lld of dim %d of the "
                                   "input %s",
                                   op, (long long)lo, (long long)hi, (long long)n, d - ndim,
                                   graft_shape_str(ndim, shape, a, sizeof a));
            if (mode == GRAFT_PAD_REPLICATE && n < 1)
                return graft_error(GRAFT_EINVAL, "%s: replicate padding of the empty dim %d of the input %s", op,
                                   d - ndim, graft_shape_str(ndim, shape, a, sizeof a));
            if (mode == GRAFT_PAD_CIRCULAR && (lo > n || hi > n))
                return graft_error(GRAFT_EINVAL,
                                   "%s: circular padding (%lld, %lld) wraps around more than once (size %lld of dim %d "
                                   "of the input %s)",
                                   op, (long long)lo, (long long)hi, (long long)n, d - ndim,
                                   graft_shape_str(ndim, shape, a, sizeof a));
        }
        oshape[d] = n + lo + hi;
        if (oshape[d] < 0)
            return graft_error(GRAFT_ESHAPE, "%s: the size %lld of dim %d of the input %s plus padding (%lld, %lld) is negative",
                               op, (long long)n, d - ndim, graft_shape_str(ndim, shape, a, sizeof a), (long long)lo,
                               (long long)hi);
    }
    return GRAFT_OK;
}

/* Views of the part an input and its constant-padded output share: *vin of in,
 * *vout of out (+1 each), or both NULL when they share nothing. */
static graft_status pd_overlap(graft_tensor **vin, graft_tensor **vout, graft_tensor *in, graft_tensor *out,
                               const int64_t *pad, int npad) {
    *vin = *vout = NULL;
    int ndim = in->ndim, k = npad / 2;
    int64_t is[GRAFT_MAX_DIMS], os[GRAFT_MAX_DIMS], len[GRAFT_MAX_DIMS];
    for (int d = 0; d < ndim; d++) {
        is[d] = os[d] = 0;
        len[d] = in->shape[d];
    }
    for (int i = 0; i < k; i++) {
        int d = ndim - 1 - i;
        int64_t lo = pad[2 * i];
        is[d] = lo < 0 ? -lo : 0;
        os[d] = lo > 0 ? lo : 0;
        int64_t l = in->shape[d] - is[d];
        if (out->shape[d] - os[d] < l) l = out->shape[d] - os[d];
        if (l <= 0) return GRAFT_OK;
        len[d] = l;
    }
    int64_t ioff = in->offset, ooff = out->offset;
    for (int d = 0; d < ndim; d++) {
        if (len[d] == 0) return GRAFT_OK;
        ioff += is[d] * in->stride[d];
        ooff += os[d] * out->stride[d];
    }
    graft_status st = graft_tensor_view_of(vin, in, ndim, len, in->stride, ioff);
    if (!st) st = graft_tensor_view_of(vout, out, ndim, len, out->stride, ooff);
    if (st) {
        graft_tensor_release(*vin);
        *vin = NULL;
    }
    return st;
}

/* Non-constant padding as [planes, D, H, W] -> [planes, OD, OH, OW] with one
 * coordinate map per padded dim (unpadded dims have the identity map of size 1). */
typedef struct {
    int64_t planes, in[3], out[3];
    int64_t *map[3];
} pd_geom;

static int64_t pd_map(int64_t i, int64_t lo, int64_t n, graft_pad_mode mode) {
    int64_t j = i - lo;
    switch (mode) {
    case GRAFT_PAD_REFLECT:
        if (j < 0) j = -j;
        if (j >= n) j = 2 * (n - 1) - j;
        return j;
    case GRAFT_PAD_REPLICATE: return j < 0 ? 0 : j >= n ? n - 1 : j;
    case GRAFT_PAD_CIRCULAR: return ((j % n) + n) % n;
    default: return j;
    }
}

static graft_status pd_geom_make(pd_geom *g, int ndim, const int64_t *shape, const int64_t *oshape, const int64_t *pad,
                                 int npad, graft_pad_mode mode) {
    int k = npad / 2;
    memset(g, 0, sizeof *g);
    g->planes = 1;
    for (int d = 0; d < ndim - k; d++) g->planes *= shape[d];
    size_t total = 0;
    for (int j = 0; j < 3; j++) {
        int i = 2 - j; /* j: 0 = D, 1 = H, 2 = W; i: position in the pad list */
        if (i < k) {
            g->in[j] = shape[ndim - 1 - i];
            g->out[j] = oshape[ndim - 1 - i];
        } else {
            g->in[j] = g->out[j] = 1;
        }
        total += (size_t)g->out[j];
    }
    int64_t *m = malloc(sizeof(int64_t) * (total ? total : 1));
    if (!m) return graft_error(GRAFT_ENOMEM, "pad: out of memory");
    for (int j = 0; j < 3; j++) {
        int i = 2 - j;
        g->map[j] = m;
        for (int64_t o = 0; o < g->out[j]; o++)
            m[o] = i < k ? pd_map(o, pad[2 * i], g->in[j], mode) : o;
        m += g->out[j];
    }
    return GRAFT_OK;
}

/* The device geometry of a non-constant padding (pd_geom without the maps). */
static graft_cuda_pad_geom pd_cuda_geom(int ndim, const int64_t *shape, const int64_t *oshape, const int64_t *pad,
                                        int npad, graft_pad_mode mode) {
    int k = npad / 2;
    graft_cuda_pad_geom c;
    memset(&c, 0, sizeof c);
    c.planes = 1;
    for (int d = 0; d < ndim - k; d++) c.planes *= shape[d];
    for (int j = 0; j < 3; j++) {
        int i = 2 - j;
        c.in[j] = i < k ? shape[ndim - 1 - i] : 1;
        c.out[j] = i < k ? oshape[ndim - 1 - i] : 1;
        c.lo[j] = i < k ? pad[2 * i] : 0;
    }
    c.mode = (int)mode;
    return c;
}

/* +1: the inverse maps of g on dev, per dim j at base[j]: in + 1 offsets, then the
 * outputs whose source is each input, ascending (see core/cuda/resize.h). */
static graft_status pd_inverse_cuda(graft_tensor **out, int64_t base[3], const pd_geom *g, graft_device dev) {
    int64_t total = 0;
    for (int j = 0; j < 3; j++) {
        base[j] = total;
        total += g->in[j] + 1 + g->out[j];
    }
    int64_t *v = calloc((size_t)total, sizeof(int64_t));
    if (!v) return graft_error(GRAFT_ENOMEM, "pad backward: out of memory");
    for (int j = 0; j < 3; j++) {
        int64_t *off = v + base[j], *list = off + g->in[j] + 1, n = g->in[j];
        for (int64_t o = 0; o < g->out[j]; o++) off[g->map[j][o] + 1]++;
        for (int64_t i = 0; i < n; i++) off[i + 1] += off[i];
        for (int64_t o = 0; o < g->out[j]; o++) list[off[g->map[j][o]]++] = o;
        for (int64_t i = n; i > 0; i--) off[i] = off[i - 1]; /* the fill advanced each start: shift back */
        off[0] = 0;
    }
    graft_status st = rz_upload(out, v, total, GRAFT_I64, dev);
    free(v);
    return st;
}

#define PD_GATHER(SUF, T)                                                                           \
    static void pd_gather_##SUF(const pd_geom *g, const T *x, T *y) {                               \
        int64_t rows = g->planes * g->out[0] * g->out[1], OW = g->out[2];                           \
        bool par = graft_should_parallelize(rows * OW);                                             \
        (void)par;                                                                                  \
        _Pragma("omp parallel for schedule(static) if(par)")                                        \
        for (int64_t r = 0; r < rows; r++) {                                                        \
            int64_t h = r % g->out[1], d = (r / g->out[1]) % g->out[0], pc = r / (g->out[1] * g->out[0]); \
            const T *src = x + ((pc * g->in[0] + g->map[0][d]) * g->in[1] + g->map[1][h]) * g->in[2]; \
            T *dst = y + r * OW;                                                                    \
            const int64_t *mw = g->map[2];                                                          \
            for (int64_t w = 0; w < OW; w++) dst[w] = src[mw[w]];                                   \
        }                                                                                           \
    }

PD_GATHER(u8, uint8_t)
PD_GATHER(u16, uint16_t)
PD_GATHER(u32, uint32_t)
PD_GATHER(u64, uint64_t)

#define PD_SCATTER(SUF, T)                                                                          \
    static void pd_scatter_##SUF(const pd_geom *g, const T *gy, T *gx) {                            \
        int64_t plane_in = g->in[0] * g->in[1] * g->in[2], plane_out = g->out[0] * g->out[1] * g->out[2]; \
        bool par = g->planes > 1 && graft_should_parallelize(g->planes * plane_out);                \
        (void)par;                                                                                  \
        _Pragma("omp parallel for schedule(static) if(par)")                                        \
        for (int64_t pc = 0; pc < g->planes; pc++) {                                                \
            T *xp = gx + pc * plane_in;                                                             \
            const T *yp = gy + pc * plane_out;                                                      \
            memset(xp, 0, sizeof(T) * (size_t)plane_in);                                            \
            for (int64_t d = 0; d < g->out[0]; d++)                                                 \
                for (int64_t h = 0; h < g->out[1]; h++) {                                           \
                    T *dst = xp + (g->map[0][d] * g->in[1] + g->map[1][h]) * g->in[2];              \
                    const T *src = yp + (d * g->out[1] + h) * g->out[2];                            \
                    for (int64_t w = 0; w < g->out[2]; w++) dst[g->map[2][w]] += src[w];            \
                }                                                                                   \
        }                                                                                           \
    }

PD_SCATTER(f32, float)
PD_SCATTER(f64, double)

graft_status graft_nn_pad(graft_tensor **out, graft_tensor *input, const int64_t *pad, int npad, graft_pad_mode mode,
                          double value) {
    if (GRAFT_AG_ACTIVE(input->autograd)) return graft_ag_pad(out, input, pad, npad, mode, value);
    *out = NULL;
    if (mode != GRAFT_PAD_CONSTANT && value != 0)
        return graft_error(GRAFT_EINVAL, "pad: mode \"%s\" takes no value", graft_pad_mode_name(mode));
    int64_t oshape[GRAFT_MAX_DIMS];
    graft_status st = pd_shape(oshape, input->ndim, input->shape, pad, npad, mode);
    if (st) return st;
    graft_tensor *y = NULL, *x = NULL, *vi = NULL, *vo = NULL;
    if ((st = graft_tensor_empty(&y, input->ndim, oshape, input->dtype, graft_tensor_device(input)))) return st;
    if (mode == GRAFT_PAD_CONSTANT) {
        /* a fill and a copy: both run on the tensors' device */
        if (!(st = graft_tensor_fill_(y, value)) && !(st = pd_overlap(&vi, &vo, input, y, pad, npad)) && vi)
            st = graft_tensor_copy_(vo, vi);
    } else if (graft_tensor_numel(y) > 0 && rz_on_cuda(input)) {
        graft_cuda_pad_geom cg = pd_cuda_geom(input->ndim, input->shape, oshape, pad, npad, mode);
        if (!(st = graft_tensor_contiguous(&x, input))) st = graft_cuda_pad_forward(y, x, &cg);
    } else if (graft_tensor_numel(y) > 0) {
        pd_geom g;
        if (!(st = graft_tensor_contiguous(&x, input)) &&
            !(st = pd_geom_make(&g, input->ndim, input->shape, oshape, pad, npad, mode))) {
            const void *xd = graft_tensor_data(x);
            void *yd = graft_tensor_data(y);
            switch (graft_dtype_size(input->dtype)) {
            case 1: pd_gather_u8(&g, xd, yd); break;
            case 2: pd_gather_u16(&g, xd, yd); break;
            case 4: pd_gather_u32(&g, xd, yd); break;
            default: pd_gather_u64(&g, xd, yd); break;
            }
            free(g.map[0]);
        }
    }
    graft_tensor_release(x);
    graft_tensor_release(vi);
    graft_tensor_release(vo);
    if (st) graft_tensor_release(y);
    else *out = y;
    return st;
}

graft_status graft_nn_pad_backward(graft_tensor **gin, graft_tensor *grad, int in_ndim, const int64_t *in_shape,
                                   const int64_t *pad, int npad, graft_pad_mode mode) {
    char a[SHAPE_BUF], b[SHAPE_BUF];
    *gin = NULL;
    int64_t oshape[GRAFT_MAX_DIMS];
    graft_status st = pd_shape(oshape, in_ndim, in_shape, pad, npad, mode);
    if (st) return st;
    bool same = grad->ndim == in_ndim;
    for (int d = 0; same && d < in_ndim; d++) same = grad->shape[d] == oshape[d];
    if (!same)
        return graft_error(GRAFT_ESHAPE, "pad backward: expected a gradient of shape %s, got %s",
                           graft_shape_str(in_ndim, oshape, a, sizeof a), graft_shape_str(grad->ndim, grad->shape, b, sizeof b));
    graft_tensor *gx = NULL, *gy = NULL, *vi = NULL, *vo = NULL;
    graft_device dev = graft_tensor_device(grad);
    if (mode == GRAFT_PAD_CONSTANT) {
        /* the gradient is the output gradient's part over the input, zero elsewhere */
        if (!(st = graft_tensor_empty(&gx, in_ndim, in_shape, grad->dtype, dev)) &&
            !(st = graft_tensor_fill_(gx, 0)) && !(st = pd_overlap(&vi, &vo, gx, grad, pad, npad)) && vi)
            st = graft_tensor_copy_(vi, vo);
    } else {
        graft_dtype cdt = rz_compute(grad->dtype);
        pd_geom g;
        if (!(st = rz_ready(&gy, grad, cdt)) && !(st = graft_tensor_empty(&gx, in_ndim, in_shape, cdt, dev)) &&
            graft_tensor_numel(gx) > 0 && !(st = pd_geom_make(&g, in_ndim, in_shape, oshape, pad, npad, mode))) {
            if (dev.type == GRAFT_CUDA) {
                /* gather through the inverse maps: deterministic, in the CPU's order */
                graft_cuda_pad_geom cg = pd_cuda_geom(in_ndim, in_shape, oshape, pad, npad, mode);
                graft_tensor *inv = NULL;
                int64_t base[3];
                if (!(st = pd_inverse_cuda(&inv, base, &g, dev))) st = graft_cuda_pad_backward(gx, gy, &cg, inv, base);
                graft_tensor_release(inv);
            } else if (cdt == GRAFT_F32) {
                pd_scatter_f32(&g, graft_tensor_data(gy), graft_tensor_data(gx));
            } else {
                pd_scatter_f64(&g, graft_tensor_data(gy), graft_tensor_data(gx));
            }
            free(g.map[0]);
        }
    }
    graft_tensor_release(gy);
    graft_tensor_release(vi);
    graft_tensor_release(vo);
    if (st) graft_tensor_release(gx);
    else *gin = gx;
    return st;
}
