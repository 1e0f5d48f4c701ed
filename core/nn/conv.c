/* graft nn: the convolution front ends. They check arguments, shapes and devices with
 * PyTorch's rules (messages name the op and the shapes), describe the problem as one
 * geometry (core/cpu/conv_cpu.h: a "big" and a "small" side), bring operands to
 * contiguous float32/float64 (on CUDA: contiguous in their own dtype, 16-bit included)
 * and call the CPU kernels or the CUDA ones: cuDNN (core/cuda/cudnn.c) when
 * graft.backends.cudnn.enabled and it takes the shape, else im2col + cuBLAS
 * (core/cuda/conv.cu). A transposed
 * convolution is the adjoint of a convolution: its forward is a convolution's input
 * gradient and the other way round. Under autocast the forward casts its inputs first.
 */
#include "nn/conv.h"

#include <stdio.h>
#include <string.h>

#include "cpu/conv_cpu.h"
#include "cuda/conv.h"
#include "cuda/cudnn.h"
#include "nn/kernels.h"
#include "nn/spatial_record.h"
#include "ops/autocast.h"

/* torch.backends.cudnn.allow_tf32. Off by default, unlike PyTorch (on): float32
 * convolutions on CUDA stay float32-exact, like graft's CPU and float32 matmul, unless
 * asked; training benchmarks against PyTorch switch it on to compare like with like. */
static bool cv_tf32 = false;

void graft_conv_set_allow_tf32(bool on) { cv_tf32 = on; }
bool graft_conv_allow_tf32(void) { return cv_tf32; }

/* torch.backends.cudnn.enabled (on, as PyTorch), .deterministic (off, as PyTorch:
 * cuDNN may pick algorithms that sum with atomics; im2col never does) and .benchmark
 * (off, as PyTorch: the heuristic's choice, no timing runs). */
static bool cv_cudnn = true, cv_det = false, cv_bench = false;

void graft_conv_set_cudnn_enabled(bool on) { cv_cudnn = on; }
bool graft_conv_cudnn_enabled(void) { return cv_cudnn; }
void graft_conv_set_cudnn_deterministic(bool on) { cv_det = on; }
bool graft_conv_cudnn_deterministic(void) { return cv_det; }
void graft_conv_set_cudnn_benchmark(bool on) { cv_bench = on; }
bool graft_conv_cudnn_benchmark(void) { return cv_bench; }

#define SHAPE_BUF (GRAFT_MAX_DIMS * 24 + 3)

graft_conv_opts graft_conv_defaults(int spatial, bool transposed) {
    graft_conv_opts o;
    memset(&o, 0, sizeof o);
    o.spatial = spatial;
    o.transposed = transposed;
    for (int i = 0; i < 2; i++) o.stride[i] = o.dilation[i] = 1;
    o.groups = 1;
    return o;
}

const char *graft_conv_name(const graft_conv_opts *o) {
    if (o->transposed) return o->spatial == 1 ? "conv_transpose1d" : "conv_transpose2d";
    return o->spatial == 1 ? "conv1d" : "conv2d";
}

/* "[a, b]" of the first n values. */
static const char *cv_list(const int64_t *v, int n, char *buf) {
    return graft_shape_str(n, v, buf, SHAPE_BUF);
}

/* Everything the kernels need, checked: the geometry, the output shape, and whether the
 * input is batched. */
typedef struct {
    graft_conv_geom g;
    int out_ndim;
    int64_t out_shape[4];
    int64_t cout;               /* channels of the output */
} cv_shape;

static graft_status cv_check_opts(const graft_conv_opts *o, const char *op) {
    int S = o->spatial;
    char a[SHAPE_BUF], b[SHAPE_BUF], c[SHAPE_BUF];
    if (S != 1 && S != 2) return graft_error(GRAFT_EINTERNAL, "%s: %d spatial dims", op, S);
    if (o->groups < 1) return graft_error(GRAFT_EINVAL, "%s: groups must be positive, got %lld", op, (long long)o->groups);
    for (int d = 0; d < S; d++) {
        if (o->stride[d] < 1)
            return graft_error(GRAFT_EINVAL, "%s: stride must be positive, got %s", op, cv_list(o->stride, S, a));
        if (o->dilation[d] < 1)
            return graft_error(GRAFT_EINVAL, "%s: dilation must be positive, got %s", op, cv_list(o->dilation, S, a));
        if (o->pad_mode == GRAFT_CONV_PAD_EXPLICIT && o->padding[d] < 0)
            return graft_error(GRAFT_EINVAL, "%s: negative padding is not supported, got %s", op,
                               cv_list(o->padding, S, a));
    }
    if (o->transposed) {
        if (o->pad_mode != GRAFT_CONV_PAD_EXPLICIT)
            return graft_error(GRAFT_EINVAL, "%s: padding must be numbers (\"same\" and \"valid\" are for conv)", op);
        for (int d = 0; d < S; d++) {
            if (o->output_padding[d] < 0)
                return graft_error(GRAFT_EINVAL, "%s: negative output_padding is not supported, got %s", op,
                                   cv_list(o->output_padding, S, a));
            if (o->output_padding[d] >= o->stride[d] && o->output_padding[d] >= o->dilation[d])
                return graft_error(GRAFT_EINVAL, "%s: output_padding %s must be smaller than either stride %s or dilation %s",
                                   op, cv_list(o->output_padding, S, a), cv_list(o->stride, S, b),
                                   cv_list(o->dilation, S, c));
        }
    } else if (o->pad_mode == GRAFT_CONV_PAD_SAME) {
        for (int d = 0; d < S; d++)
            if (o->stride[d] != 1)
                return graft_error(GRAFT_EINVAL, "%s: padding='same' is not supported for strided convolutions", op);
    }
    return GRAFT_OK;
}

static graft_status cv_shape_of(cv_shape *s, int in_ndim, const int64_t *in, const int64_t *w, int w_ndim,
                                const graft_conv_opts *o, const char *op) {
    char a[SHAPE_BUF], b[SHAPE_BUF];
    int S = o->spatial;
    graft_status st = cv_check_opts(o, op);
    if (st) return st;
    if (in_ndim != S + 1 && in_ndim != S + 2)
        return graft_error(GRAFT_ESHAPE, "%s: expected a %d-D (unbatched) or %d-D (batched) input, got %s", op, S + 1,
                           S + 2, graft_shape_str(in_ndim, in, a, sizeof a));
    if (w_ndim != S + 2)
        return graft_error(GRAFT_ESHAPE, "%s: expected a %d-D weight, got %s", op, S + 2,
                           graft_shape_str(w_ndim, w, a, sizeof a));
    for (int d = 1; d < w_ndim; d++)
        if (w[d] == 0)
            return graft_error(GRAFT_ESHAPE, "%s: weight %s has an empty dim", op, graft_shape_str(w_ndim, w, a, sizeof a));
    bool batched = in_ndim == S + 2;
    int64_t N = batched ? in[0] : 1, C = in[batched ? 1 : 0], G = o->groups;
    const int64_t *sp = in + (batched ? 2 : 1), *ks = w + 2;
    graft_conv_geom *g = &s->g;
    memset(s, 0, sizeof *s);
    /* channels */
    int64_t want = o->transposed ? w[0] : w[1] * G;
    if (C != want)
        return graft_error(GRAFT_ESHAPE, "%s: expected input with %lld channels (weight %s, groups %lld), got %s", op,
                           (long long)want, graft_shape_str(w_ndim, w, a, sizeof a), (long long)G,
                           graft_shape_str(in_ndim, in, b, sizeof b));
    if (w[0] % G != 0)
        return graft_error(GRAFT_ESHAPE, "%s: weight %s: its first dim %lld is not divisible by groups %lld", op,
                           graft_shape_str(w_ndim, w, a, sizeof a), (long long)w[0], (long long)G);
    s->cout = o->transposed ? w[1] * G : w[0];
    /* spatial sizes: osp is the output's, plo the padding before */
    int64_t osp[2], plo[2], eff[2], padded[2];
    for (int d = 0; d < S; d++) {
        eff[d] = o->dilation[d] * (ks[d] - 1) + 1;
        if (o->transposed) {
            plo[d] = o->padding[d];
            osp[d] = (sp[d] - 1) * o->stride[d] - 2 * o->padding[d] + eff[d] + o->output_padding[d];
            continue;
        }
        int64_t lo = 0, hi = 0;
        if (o->pad_mode == GRAFT_CONV_PAD_EXPLICIT) lo = hi = o->padding[d];
        else if (o->pad_mode == GRAFT_CONV_PAD_SAME) {
            lo = (eff[d] - 1) / 2;
            hi = eff[d] - 1 - lo;
        }
        plo[d] = lo;
        padded[d] = sp[d] + lo + hi;
        osp[d] = padded[d] >= eff[d] ? (padded[d] - eff[d]) / o->stride[d] + 1 : 0;
    }
    for (int d = 0; d < S; d++) {
        if (!o->transposed && padded[d] < eff[d])
            return graft_error(GRAFT_ESHAPE, "%s: kernel %s (dilated) is larger than the padded input %s", op,
                               cv_list(eff, S, a), cv_list(padded, S, b));
        if (o->transposed && osp[d] < 1)
            return graft_error(GRAFT_ESHAPE, "%s: output size %s is too small (input %s)", op, cv_list(osp, S, a),
                               cv_list(sp, S, b));
    }
    /* the geometry: 1-D is 2-D with a height of 1 */
    g->N = N;
    g->G = G;
    int64_t big_c = o->transposed ? s->cout : C, small_c = o->transposed ? C : s->cout;
    const int64_t *big_sp = o->transposed ? osp : sp, *small_sp = o->transposed ? sp : osp;
    g->C = big_c;
    g->O = small_c;
    g->kh = S == 2 ? ks[0] : 1;
    g->kw = ks[S - 1];
    g->sh = S == 2 ? o->stride[0] : 1;
    g->sw = o->stride[S - 1];
    g->ph = S == 2 ? plo[0] : 0;
    g->pw = plo[S - 1];
    g->dh = S == 2 ? o->dilation[0] : 1;
    g->dw = o->dilation[S - 1];
    g->H = S == 2 ? big_sp[0] : 1;
    g->W = big_sp[S - 1];
    g->OH = S == 2 ? small_sp[0] : 1;
    g->OW = small_sp[S - 1];
    /* the output */
    int k = 0;
    if (batched) s->out_shape[k++] = N;
    s->out_shape[k++] = s->cout;
    for (int d = 0; d < S; d++) s->out_shape[k++] = osp[d];
    s->out_ndim = k;
    return GRAFT_OK;
}

/* The dtype the kernels compute in: the CPU's are float32/float64; the CUDA ones take
 * 16-bit operands as they are (cuBLAS accumulates in float32). */
static graft_dtype cv_compute_on(graft_dtype d, graft_device dev) {
    if (dev.type == GRAFT_CUDA) return d;
    return d == GRAFT_F64 ? GRAFT_F64 : GRAFT_F32;
}
/* The dtype gradients of the weight and bias accumulate in. */
static graft_dtype cv_compute(graft_dtype d) { return d == GRAFT_F64 ? GRAFT_F64 : GRAFT_F32; }

/* +1: t in dtype d, contiguous. */
static graft_status cv_ready(graft_tensor **out, graft_tensor *t, graft_dtype d) {
    *out = NULL;
    if (t->dtype != d) return graft_tensor_to_dtype(out, t, d);
    return graft_tensor_contiguous(out, t);
}

/* Converts *t (+1, compute dtype) to dtype d in place of the reference. */
static graft_status cv_back_to(graft_tensor **t, graft_dtype d) {
    if (!*t || (*t)->dtype == d) return GRAFT_OK;
    graft_tensor *c;
    graft_status st = graft_tensor_to_dtype(&c, *t, d);
    graft_tensor_release(*t);
    *t = st ? NULL : c;
    return st;
}

static graft_status cv_check_tensor(const graft_tensor *t, graft_dtype d, const char *what, const char *op) {
    if (!graft_dtype_is_float(t->dtype))
        return graft_error(GRAFT_ETYPE, "%s: %s must be floating point, got %s", op, what, graft_dtype_name(t->dtype));
    if (t->dtype != d)
        return graft_error(GRAFT_ETYPE, "%s: input is %s but %s is %s (they must have one dtype)", op,
                           graft_dtype_name(d), what, graft_dtype_name(t->dtype));
    return GRAFT_OK;
}

/* ---- CUDA: cuDNN first, im2col + cuBLAS when it is off or declines ---- */

static graft_cudnn_opts cv_cudnn_opts(void) { return (graft_cudnn_opts){cv_tf32, cv_det, cv_bench}; }

/* small <- conv(big, w) (+ bias). */
static graft_status cv_cuda_small(const graft_conv_geom *g, graft_tensor *big, graft_tensor *w, graft_tensor *b,
                                  graft_tensor *small, const char *op) {
    graft_cudnn_opts o = cv_cudnn_opts();
    bool ran = false;
    graft_status st;
    if (cv_cudnn && (st = graft_cudnn_conv_small(g, big, w, b, small, &o, &ran, op))) return st;
    return ran ? GRAFT_OK : graft_cuda_conv_small(g, big, w, b, small, cv_tf32, op);
}

/* big <- conv^T(small, w) (+ bias). */
static graft_status cv_cuda_big(const graft_conv_geom *g, graft_tensor *small, graft_tensor *w, graft_tensor *b,
                                graft_tensor *big, const char *op) {
    graft_cudnn_opts o = cv_cudnn_opts();
    bool ran = false;
    graft_status st;
    if (cv_cudnn && (st = graft_cudnn_conv_big(g, small, w, b, big, &o, &ran, op))) return st;
    return ran ? GRAFT_OK : graft_cuda_conv_big(g, small, w, b, big, cv_tf32, op);
}

/* +1: the weight gradient [w_shape] from small and big. cuDNN writes it in the operands'
 * dtype (accumulating in float32, as PyTorch); im2col accumulates 16-bit operands'
 * gradient in a float32 tensor (the caller converts it back). */
static graft_status cv_cuda_weight(graft_tensor **out, const graft_conv_geom *g, graft_tensor *small,
                                   graft_tensor *big, int w_ndim, const int64_t *w_shape, const char *op) {
    graft_dtype dt = g->dtype, adt = cv_compute(dt);
    graft_device dev = graft_tensor_device(big);
    graft_tensor *gw = NULL;
    graft_cudnn_opts o = cv_cudnn_opts();
    graft_status st = GRAFT_OK;
    bool ran = false;
    *out = NULL;
    if (cv_cudnn) {
        if ((st = graft_tensor_empty(&gw, w_ndim, w_shape, dt, dev))) return st;
        if ((st = graft_cudnn_conv_weight(g, small, big, gw, &o, &ran, op)) || ran) goto done;
        if (dt != adt) {
            graft_tensor_release(gw);
            gw = NULL;
        }
    }
    if (!gw && (st = graft_tensor_empty(&gw, w_ndim, w_shape, adt, dev))) goto done;
    st = graft_cuda_conv_weight(g, small, big, gw, cv_tf32, op);
done:
    if (st) graft_tensor_release(gw);
    else *out = gw;
    return st;
}

graft_status graft_nn_conv(graft_tensor **out, graft_tensor *input, graft_tensor *weight, graft_tensor *bias,
                           const graft_conv_opts *o) {
    if (GRAFT_AUTOCAST_ACTIVE()) {
        graft_autocast_scope sc;
        graft_tensor *ts[3] = {input, weight, bias};
        graft_status st = graft_autocast_begin(&sc, ts, 3, GRAFT_AUTOCAST_LOWER);
        if (st) {
            *out = NULL;
            return st;
        }
        st = graft_nn_conv(out, ts[0], ts[1], ts[2], o);
        graft_autocast_end(&sc);
        return st;
    }
    if (GRAFT_AG_ACTIVE(input->autograd || weight->autograd || GRAFT_AG_T(bias)))
        return graft_ag_conv(out, input, weight, bias, o);
    *out = NULL;
    const char *op = graft_conv_name(o);
    char a[SHAPE_BUF];
    graft_status st;
    if ((st = graft_nn_same_device(op, 3, (graft_tensor *[]){input, weight, bias}))) return st;
    if ((st = cv_check_tensor(input, input->dtype, "input", op)) ||
        (st = cv_check_tensor(weight, input->dtype, "weight", op)) ||
        (bias && (st = cv_check_tensor(bias, input->dtype, "bias", op))))
        return st;
    cv_shape s;
    if ((st = cv_shape_of(&s, input->ndim, input->shape, weight->shape, weight->ndim, o, op))) return st;
    if (bias && (bias->ndim != 1 || bias->shape[0] != s.cout))
        return graft_error(GRAFT_ESHAPE, "%s: expected bias of shape [%lld], got %s", op, (long long)s.cout,
                           graft_shape_str(bias->ndim, bias->shape, a, sizeof a));
    graft_device dev = graft_tensor_device(input);
    graft_dtype cdt = cv_compute_on(input->dtype, dev);
    graft_tensor *x = NULL, *w = NULL, *b = NULL, *y = NULL;
    if ((st = cv_ready(&x, input, cdt)) || (st = cv_ready(&w, weight, cdt)) || (bias && (st = cv_ready(&b, bias, cdt))))
        goto done;
    if ((st = graft_tensor_empty(&y, s.out_ndim, s.out_shape, cdt, dev))) goto done;
    s.g.dtype = cdt;
    if (dev.type == GRAFT_CUDA) {
        if (o->transposed) st = cv_cuda_big(&s.g, x, w, b, y, op);
        else st = cv_cuda_small(&s.g, x, w, b, y, op);
        goto done;
    }
    const void *bd = b ? graft_tensor_data(b) : NULL;
    if (o->transposed)
        st = graft_cpu_conv_big(&s.g, graft_tensor_data(x), graft_tensor_data(w), bd, graft_tensor_data(y), op);
    else
        st = graft_cpu_conv_small(&s.g, graft_tensor_data(x), graft_tensor_data(w), bd, graft_tensor_data(y), op);
    if (!st) st = cv_back_to(&y, input->dtype);
done:
    graft_tensor_release(x);
    graft_tensor_release(w);
    graft_tensor_release(b);
    if (st) graft_tensor_release(y);
    else *out = y;
    return st;
}

graft_status graft_nn_conv_backward(graft_tensor **ginput, graft_tensor **gweight, graft_tensor **gbias,
                                    graft_tensor *grad, graft_tensor *input, graft_tensor *weight, int in_ndim,
                                    const int64_t *in_shape, const int64_t *w_shape, const graft_conv_opts *o) {
    const char *op = graft_conv_name(o);
    char a[SHAPE_BUF], b[SHAPE_BUF];
    if (ginput) *ginput = NULL;
    if (gweight) *gweight = NULL;
    if (gbias) *gbias = NULL;
    cv_shape s;
    graft_status st = cv_shape_of(&s, in_ndim, in_shape, w_shape, o->spatial + 2, o, op);
    if (st) return st;
    bool same = grad->ndim == s.out_ndim;
    for (int d = 0; same && d < s.out_ndim; d++) same = grad->shape[d] == s.out_shape[d];
    if (!same)
        return graft_error(GRAFT_ESHAPE, "%s backward: expected a gradient of shape %s, got %s", op,
                           graft_shape_str(s.out_ndim, s.out_shape, a, sizeof a),
                           graft_shape_str(grad->ndim, grad->shape, b, sizeof b));
    if ((ginput && !weight) || (gweight && !input))
        return graft_error(GRAFT_EINTERNAL, "%s backward: a saved operand is missing", op);
    if ((st = graft_nn_same_device(op, 3, (graft_tensor *[]){grad, ginput ? weight : NULL, gweight ? input : NULL})))
        return st;
    graft_dtype dt = input ? input->dtype : weight ? weight->dtype : grad->dtype;
    graft_device dev = graft_tensor_device(grad);
    bool cuda = dev.type == GRAFT_CUDA;
    /* the CPU computes in float32 (float64); CUDA in dt, accumulating the weight and bias
     * gradients in float32 (float64); both convert the gradients back to dt */
    graft_dtype cdt = cuda ? dt : cv_compute(dt), adt = cv_compute(dt);
    s.g.dtype = cdt;
    graft_tensor *g = NULL, *x = NULL, *w = NULL, *gi = NULL, *gw = NULL, *gb = NULL;
    if ((st = cv_ready(&g, grad, cdt))) goto done;
    if (ginput && ((st = cv_ready(&w, weight, cdt)) || (st = graft_tensor_empty(&gi, in_ndim, in_shape, cdt, dev))))
        goto done;
    if (gweight && ((st = cv_ready(&x, input, cdt)) ||
                    (!cuda && (st = graft_tensor_empty(&gw, o->spatial + 2, w_shape, adt, dev)))))
        goto done;
    if (cuda) {
        /* conv: the input (big side) gradient is conv^T of grad; transposed: a conv of grad */
        if (gi)
            st = o->transposed ? cv_cuda_small(&s.g, g, w, NULL, gi, op) : cv_cuda_big(&s.g, g, w, NULL, gi, op);
        if (!st && gweight)
            st = o->transposed ? cv_cuda_weight(&gw, &s.g, x, g, o->spatial + 2, w_shape, op)
                               : cv_cuda_weight(&gw, &s.g, g, x, o->spatial + 2, w_shape, op);
    } else {
        void *gid = gi ? graft_tensor_data(gi) : NULL, *gwd = gw ? graft_tensor_data(gw) : NULL;
        if (!o->transposed) {
            /* both from the output gradient in one call (the kernels may share work) */
            st = graft_cpu_conv_backward(&s.g, graft_tensor_data(g), x ? graft_tensor_data(x) : NULL,
                                         w ? graft_tensor_data(w) : NULL, gid, gwd, op);
        } else {
            /* the transposed conv's input is the small side: its gradient is a conv of grad */
            if (gi) st = graft_cpu_conv_small(&s.g, graft_tensor_data(g), graft_tensor_data(w), NULL, gid, op);
            if (!st && gw) st = graft_cpu_conv_weight(&s.g, graft_tensor_data(x), graft_tensor_data(g), gwd, op);
        }
    }
    if (st || (gi && (st = cv_back_to(&gi, dt))) || (gw && (st = cv_back_to(&gw, dt)))) goto done;
    if (gbias) {
        int64_t P = o->transposed ? s.g.H * s.g.W : s.g.OH * s.g.OW;
        if ((st = graft_tensor_empty(&gb, 1, &s.cout, adt, dev))) goto done;
        if (cuda) st = graft_cuda_conv_bias_grad(g, s.g.N, s.cout, P, gb, op);
        else graft_cpu_conv_bias_grad(adt, s.g.N, s.cout, P, graft_tensor_data(g), graft_tensor_data(gb));
        if (st || (st = cv_back_to(&gb, dt))) goto done;
    }
done:
    graft_tensor_release(g);
    graft_tensor_release(x);
    graft_tensor_release(w);
    if (st) {
        graft_tensor_release(gi);
        graft_tensor_release(gw);
        graft_tensor_release(gb);
        return st;
    }
    if (ginput) *ginput = gi;
    if (gweight) *gweight = gw;
    if (gbias) *gbias = gb;
    return GRAFT_OK;
}
