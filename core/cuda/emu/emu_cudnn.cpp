/* graft CUDA emulator: the cuDNN calls graft makes, on the host.
 *
 * cudnn.c fills its table from here in the emulated build (GRAFT_CUDA_EMU) instead of
 * dlopen'ing libcudnn. The semantics are cuDNN's legacy API: Nd tensor descriptors with
 * explicit strides, packed NCHW filters [K, C/groups, kh, kw], convolution descriptors
 * with padding, stride, dilation, mode, compute type, group count and math type; the
 * same argument checks and status families (BAD_PARAM for inconsistent shapes,
 * NOT_SUPPORTED for what is not implemented), heuristics and "timed" searches that return
 * several algorithms with workspace sizes and determinism flags, workspaces checked and
 * written, and
 * out = alpha * op(...) + beta * out with out unread when beta is 0 (alpha and beta are
 * double for double data, float otherwise). 2-d convolutions only (4-d tensors): the
 * only ones graft makes. The work runs as a one-thread "kernel" (emu_launch), so that
 * device memory is readable meanwhile; operands are widened to float (double for
 * double data), computed by direct loops, rounded once into the output.
 */
#define GRAFT_CUDNN_INTERNAL
#include "cuda/cudnn.h"
#include "cuda/emu/emu.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

struct cudnnContext {
    cudaStream_t stream;
};
struct cudnnTensorStruct {
    bool set;
    cudnnDataType_t dt;
    int nb;
    int dims[CUDNN_DIM_MAX], strides[CUDNN_DIM_MAX];
};
struct cudnnFilterStruct {
    bool set;
    cudnnDataType_t dt;
    cudnnTensorFormat_t format;
    int nb;
    int dims[CUDNN_DIM_MAX];
};
struct cudnnConvolutionStruct {
    bool set;
    int n;
    int pad[CUDNN_DIM_MAX], stride[CUDNN_DIM_MAX], dil[CUDNN_DIM_MAX];
    cudnnConvolutionMode_t mode;
    cudnnDataType_t compute;
    int groups;
    cudnnMathType_t math;
};

namespace {

int ec_refuse_stage;   /* graft_emu_cudnn_refuse */
char ec_last[512];     /* cudnnGetLastErrorString */

/* Records why a call failed (cudnnGetLastErrorString) and returns s. */
cudnnStatus_t ec_fail(cudnnStatus_t s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ec_last, sizeof ec_last, fmt, ap);
    va_end(ap);
    return s;
}

size_t ec_size(cudnnDataType_t t) {
    switch (t) {
    case CUDNN_DATA_DOUBLE: return 8;
    case CUDNN_DATA_FLOAT: return 4;
    case CUDNN_DATA_HALF:
    case CUDNN_DATA_BFLOAT16: return 2;
    default: return 0;
    }
}

double ec_load(const void *p, int64_t i, cudnnDataType_t t) {
    switch (t) {
    case CUDNN_DATA_DOUBLE: return ((const double *)p)[i];
    case CUDNN_DATA_FLOAT: return ((const float *)p)[i];
    case CUDNN_DATA_HALF: return graft_f16_to_f32(((const uint16_t *)p)[i]);
    default: return graft_bf16_to_f32(((const uint16_t *)p)[i]);
    }
}

/* Stores v rounded once to t (16-bit types through float, as cuDNN's float compute). */
void ec_store(void *p, int64_t i, cudnnDataType_t t, double v) {
    switch (t) {
    case CUDNN_DATA_DOUBLE: ((double *)p)[i] = v; break;
    case CUDNN_DATA_FLOAT: ((float *)p)[i] = (float)v; break;
    case CUDNN_DATA_HALF: ((uint16_t *)p)[i] = graft_f32_to_f16((float)v); break;
    default: ((uint16_t *)p)[i] = graft_f32_to_bf16((float)v); break;
    }
}

/* ---- handle and descriptors ---- */

cudnnStatus_t ec_create(cudnnHandle_t *h) {
    if (!h) return ec_fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnCreate: handle is NULL");
    *h = (cudnnHandle_t)calloc(1, sizeof(cudnnContext));
    return *h ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
}

cudnnStatus_t ec_destroy(cudnnHandle_t h) {
    free(h);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t ec_set_stream(cudnnHandle_t h, cudaStream_t s) {
    if (!h) return ec_fail(CUDNN_STATUS_NOT_INITIALIZED, "cudnnSetStream: handle is NULL");
    h->stream = s;
    return CUDNN_STATUS_SUCCESS;
}

template <class T> cudnnStatus_t ec_create_desc(T **d, const char *fn) {
    if (!d) return ec_fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: descriptor pointer is NULL", fn);
    *d = (T *)calloc(1, sizeof(T));
    return *d ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
}

cudnnStatus_t ec_create_tensor(cudnnTensorDescriptor_t *d) { return ec_create_desc(d, "cudnnCreateTensorDescriptor"); }
cudnnStatus_t ec_create_filter(cudnnFilterDescriptor_t *d) { return ec_create_desc(d, "cudnnCreateFilterDescriptor"); }
cudnnStatus_t ec_create_conv(cudnnConvolutionDescriptor_t *d) {
    return ec_create_desc(d, "cudnnCreateConvolutionDescriptor");
}
cudnnStatus_t ec_destroy_tensor(cudnnTensorDescriptor_t d) { free(d); return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t ec_destroy_filter(cudnnFilterDescriptor_t d) { free(d); return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t ec_destroy_conv(cudnnConvolutionDescriptor_t d) { free(d); return CUDNN_STATUS_SUCCESS; }

/* cudnnSetTensorNdDescriptor: BAD_PARAM for a non-positive size or stride or an unknown
 * type; NOT_SUPPORTED for nbDims outside [4, 8], a type the emulator lacks, or more
 * than 2^31 elements. */
cudnnStatus_t ec_set_tensor_nd(cudnnTensorDescriptor_t d, cudnnDataType_t dt, int nb, const int dims[],
                               const int strides[]) {
    const char *fn = "cudnnSetTensorNdDescriptor";
    if (!d || !dims || !strides) return ec_fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: NULL argument", fn);
    if (ec_refuse_stage == 1)
        return ec_fail(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE, "%s: refused (emulator refusal stage 1)", fn);
    if (nb < 4 || nb > CUDNN_DIM_MAX)
        return ec_fail(CUDNN_STATUS_NOT_SUPPORTED, "%s: nbDims %d is outside [4, %d]", fn, nb, CUDNN_DIM_MAX);
    if (!ec_size(dt)) return ec_fail(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE, "%s: data type %d", fn, (int)dt);
    int64_t numel = 1;
    for (int i = 0; i < nb; i++) {
        if (dims[i] <= 0 || strides[i] <= 0)
            return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: dim %d is %d with stride %d", fn, i, dims[i], strides[i]);
        numel *= dims[i];
    }
    if (numel > INT32_MAX) return ec_fail(CUDNN_STATUS_NOT_SUPPORTED_SHAPE, "%s: more than 2^31 elements", fn);
    d->set = true;
    d->dt = dt;
    d->nb = nb;
    for (int i = 0; i < nb; i++) d->dims[i] = dims[i], d->strides[i] = strides[i];
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t ec_set_filter_nd(cudnnFilterDescriptor_t d, cudnnDataType_t dt, cudnnTensorFormat_t format, int nb,
                               const int dims[]) {
    const char *fn = "cudnnSetFilterNdDescriptor";
    if (!d || !dims) return ec_fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: NULL argument", fn);
    if (nb < 3 || nb > CUDNN_DIM_MAX) return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: nbDims %d", fn, nb);
    if (!ec_size(dt)) return ec_fail(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE, "%s: data type %d", fn, (int)dt);
    if (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC)
        return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: format %d", fn, (int)format);
    for (int i = 0; i < nb; i++)
        if (dims[i] <= 0) return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: dim %d is %d", fn, i, dims[i]);
    d->set = true;
    d->dt = dt;
    d->format = format;
    d->nb = nb;
    for (int i = 0; i < nb; i++) d->dims[i] = dims[i];
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t ec_set_conv_nd(cudnnConvolutionDescriptor_t d, int n, const int pad[], const int stride[],
                             const int dil[], cudnnConvolutionMode_t mode, cudnnDataType_t compute) {
    const char *fn = "cudnnSetConvolutionNdDescriptor";
    if (!d || !pad || !stride || !dil) return ec_fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: NULL argument", fn);
    if (n < 1 || n > CUDNN_DIM_MAX - 2) return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: arrayLength %d", fn, n);
    if (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION)
        return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: mode %d", fn, (int)mode);
    if (!ec_size(compute)) return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: compute type %d", fn, (int)compute);
    for (int i = 0; i < n; i++)
        if (pad[i] < 0 || stride[i] <= 0 || dil[i] <= 0)
            return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: pad %d, stride %d, dilation %d in dim %d", fn, pad[i],
                           stride[i], dil[i], i);
    d->set = true;
    d->n = n;
    for (int i = 0; i < n; i++) d->pad[i] = pad[i], d->stride[i] = stride[i], d->dil[i] = dil[i];
    d->mode = mode;
    d->compute = compute;
    if (!d->groups) d->groups = 1;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t ec_set_group_count(cudnnConvolutionDescriptor_t d, int groups) {
    if (!d) return ec_fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnSetConvolutionGroupCount: NULL descriptor");
    if (groups < 1) return ec_fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolutionGroupCount: groupCount %d", groups);
    d->groups = groups;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t ec_set_math_type(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
    if (!d) return ec_fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnSetConvolutionMathType: NULL descriptor");
    if (m != CUDNN_DEFAULT_MATH && m != CUDNN_TENSOR_OP_MATH && m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION &&
        m != CUDNN_FMA_MATH)
        return ec_fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolutionMathType: mathType %d", (int)m);
    d->math = m;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- one convolution problem: x [N, C, H, W], w [K, C/groups, kh, kw], y [N, K, OH, OW] ---- */

struct ec_problem {
    const cudnnTensorStruct *x, *y;
    const cudnnFilterStruct *w;
    const cudnnConvolutionStruct *c;
    int N, C, H, W, K, Cg, Kg, kh, kw, OH, OW, G;
};

/* cuDNN's consistency checks of (x, w, conv, y), in the order it reports them. */
cudnnStatus_t ec_check(ec_problem &p, const char *fn) {
    if (!p.x || !p.y || !p.w || !p.c) return ec_fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: NULL descriptor", fn);
    if (!p.x->set || !p.y->set || !p.w->set || !p.c->set)
        return ec_fail(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "%s: a descriptor was never set", fn);
    if (p.x->nb != p.c->n + 2 || p.y->nb != p.c->n + 2 || p.w->nb != p.c->n + 2)
        return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: x, w, y have %d, %d, %d dims for a %d-d convolution", fn, p.x->nb,
                       p.w->nb, p.y->nb, p.c->n);
    if (p.c->n != 2) return ec_fail(CUDNN_STATUS_NOT_SUPPORTED_SHAPE, "%s: the emulator implements 2-d only", fn);
    if (p.x->dt != p.w->dt || p.x->dt != p.y->dt)
        return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: x, w, y data types %d, %d, %d differ", fn, (int)p.x->dt,
                       (int)p.w->dt, (int)p.y->dt);
    cudnnDataType_t dt = p.x->dt, ct = p.c->compute;
    bool types_ok = (dt == CUDNN_DATA_FLOAT && ct == CUDNN_DATA_FLOAT) ||
                    (dt == CUDNN_DATA_DOUBLE && ct == CUDNN_DATA_DOUBLE) ||
                    (dt == CUDNN_DATA_HALF && (ct == CUDNN_DATA_HALF || ct == CUDNN_DATA_FLOAT)) ||
                    (dt == CUDNN_DATA_BFLOAT16 && ct == CUDNN_DATA_FLOAT);
    if (!types_ok)
        return ec_fail(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE, "%s: data type %d with compute type %d", fn, (int)dt,
                       (int)ct);
    if (p.w->format != CUDNN_TENSOR_NCHW)
        return ec_fail(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT, "%s: the emulator implements NCHW filters only", fn);
    p.G = p.c->groups;
    p.N = p.x->dims[0], p.C = p.x->dims[1], p.H = p.x->dims[2], p.W = p.x->dims[3];
    p.K = p.w->dims[0], p.Cg = p.w->dims[1], p.kh = p.w->dims[2], p.kw = p.w->dims[3];
    if (p.C != p.Cg * p.G || p.K % p.G)
        return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: x has %d channels, w is [%d, %d, ...] with %d groups", fn, p.C,
                       p.K, p.Cg, p.G);
    p.Kg = p.K / p.G;
    int oh = 0, ow = 0;
    int nh = p.H + 2 * p.c->pad[0] - (p.c->dil[0] * (p.kh - 1) + 1);
    int nw = p.W + 2 * p.c->pad[1] - (p.c->dil[1] * (p.kw - 1) + 1);
    if (nh >= 0 && nw >= 0) oh = nh / p.c->stride[0] + 1, ow = nw / p.c->stride[1] + 1;
    if (!oh || !ow || p.y->dims[0] != p.N || p.y->dims[1] != p.K || p.y->dims[2] != oh || p.y->dims[3] != ow)
        return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: y is [%d, %d, %d, %d], the convolution gives [%d, %d, %d, %d]", fn,
                       p.y->dims[0], p.y->dims[1], p.y->dims[2], p.y->dims[3], p.N, p.K, oh, ow);
    p.OH = oh, p.OW = ow;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- heuristics: a fixed preference order per kind; the others NOT_SUPPORTED ---- */

enum { EC_FWD, EC_DATA, EC_FILTER };

struct ec_algo { int algo; bool det; };
const ec_algo ec_fwd_algos[] = {{CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, true},
                                {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, true},
                                {CUDNN_CONVOLUTION_FWD_ALGO_GEMM, true}};
const ec_algo ec_data_algos[] = {{CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, false}, {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, true}};
const ec_algo ec_filter_algos[] = {{CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, false},
                                   {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, false},
                                   {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, true}};

const ec_algo *ec_algos(int kind, int *n) {
    switch (kind) {
    case EC_FWD: *n = 3; return ec_fwd_algos;
    case EC_DATA: *n = 2; return ec_data_algos;
    default: *n = 3; return ec_filter_algos;
    }
}

int ec_algo_count(int kind) {
    return kind == EC_FWD ? (int)CUDNN_CONVOLUTION_FWD_ALGO_COUNT
           : kind == EC_DATA ? (int)CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT
                             : (int)CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
}

/* Workspace bytes of an implemented algorithm (some need none), or NOT_SUPPORTED. */
cudnnStatus_t ec_workspace(const ec_problem &p, int kind, int algo, size_t *bytes, const char *fn) {
    int n;
    const ec_algo *list = ec_algos(kind, &n);
    size_t esz = ec_size(p.x->dt), K = (size_t)p.Cg * p.kh * p.kw, P = (size_t)p.OH * p.OW;
    if (algo < 0 || algo >= ec_algo_count(kind)) return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: algo %d", fn, algo);
    for (int i = 0; i < n; i++) {
        if (list[i].algo != algo) continue;
        if (kind == EC_FWD)
            *bytes = algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ? 0
                     : algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ? K * sizeof(int)
                                                                               : K * P * (size_t)p.G * esz;
        else if (kind == EC_DATA) *bytes = algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 ? 0 : 256;
        else *bytes = algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 ? 0
                      : algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3 ? K * (size_t)p.K * esz
                                                                    : 512;
        return CUDNN_STATUS_SUCCESS;
    }
    return ec_fail(CUDNN_STATUS_NOT_SUPPORTED, "%s: algo %d is not implemented by the emulator", fn, algo);
}

/* The _v7 heuristics: every algorithm of the kind, the implemented ones first (with
 * their workspace and determinism), the rest with status NOT_SUPPORTED. timed: the
 * cudnnFind*Algorithm form, with "measured" times; the emulator's fastest is the
 * heuristic's last choice, so specs can tell which selection ran. */
template <class PERF>
cudnnStatus_t ec_heuristic(cudnnHandle_t h, ec_problem &p, int kind, int requested, int *returned, PERF *perf,
                           const char *fn, bool timed = false) {
    if (!h) return ec_fail(CUDNN_STATUS_NOT_INITIALIZED, "%s: handle is NULL", fn);
    if (!returned || !perf) return ec_fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: NULL argument", fn);
    if (requested < 1) return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: requestedAlgoCount %d", fn, requested);
    cudnnStatus_t s = ec_check(p, fn);
    if (s) return s;
    int n, total = ec_algo_count(kind), k = 0;
    const ec_algo *list = ec_algos(kind, &n);
    std::vector<bool> listed((size_t)total, false);
    for (int i = 0; i < n && k < requested; i++, k++) {
        const ec_algo &e = list[timed ? n - 1 - i : i];
        memset(&perf[k], 0, sizeof perf[k]);
        perf[k].algo = (decltype(perf[k].algo))e.algo;
        perf[k].status = ec_refuse_stage == 2 ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_SUCCESS;
        perf[k].time = timed ? 0.25f * (float)(k + 1) : -1.0f;
        ec_workspace(p, kind, e.algo, &perf[k].memory, fn);
        perf[k].determinism = e.det ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
        perf[k].mathType = p.c->math;
        listed[(size_t)e.algo] = true;
    }
    for (int a = 0; a < total && k < requested; a++) {
        if (listed[(size_t)a]) continue;
        memset(&perf[k], 0, sizeof perf[k]);
        perf[k].algo = (decltype(perf[k].algo))a;
        perf[k].status = CUDNN_STATUS_NOT_SUPPORTED;
        perf[k].time = -1.0f;
        perf[k].mathType = p.c->math;
        k++;
    }
    *returned = k;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t ec_fwd_algos_v7(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                              cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t y, int requested, int *returned,
                              cudnnConvolutionFwdAlgoPerf_t *perf) {
    ec_problem p = {x, y, w, c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    return ec_heuristic(h, p, EC_FWD, requested, returned, perf, "cudnnGetConvolutionForwardAlgorithm_v7");
}

cudnnStatus_t ec_data_algos_v7(cudnnHandle_t h, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
                               cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t dx, int requested,
                               int *returned, cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    ec_problem p = {dx, dy, w, c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    return ec_heuristic(h, p, EC_DATA, requested, returned, perf, "cudnnGetConvolutionBackwardDataAlgorithm_v7");
}

cudnnStatus_t ec_filter_algos_v7(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
                                 cudnnConvolutionDescriptor_t c, cudnnFilterDescriptor_t dw, int requested,
                                 int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    ec_problem p = {x, dy, dw, c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    return ec_heuristic(h, p, EC_FILTER, requested, returned, perf, "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
}

cudnnStatus_t ec_fwd_find(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                          cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t y, int requested, int *returned,
                          cudnnConvolutionFwdAlgoPerf_t *perf) {
    ec_problem p = {x, y, w, c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    return ec_heuristic(h, p, EC_FWD, requested, returned, perf, "cudnnFindConvolutionForwardAlgorithm", true);
}

cudnnStatus_t ec_data_find(cudnnHandle_t h, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
                           cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t dx, int requested, int *returned,
                           cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    ec_problem p = {dx, dy, w, c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    return ec_heuristic(h, p, EC_DATA, requested, returned, perf, "cudnnFindConvolutionBackwardDataAlgorithm", true);
}

cudnnStatus_t ec_filter_find(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
                             cudnnConvolutionDescriptor_t c, cudnnFilterDescriptor_t dw, int requested, int *returned,
                             cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    ec_problem p = {x, dy, dw, c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    return ec_heuristic(h, p, EC_FILTER, requested, returned, perf, "cudnnFindConvolutionBackwardFilterAlgorithm",
                        true);
}

cudnnStatus_t ec_ws_query(cudnnHandle_t h, ec_problem &p, int kind, int algo, size_t *bytes, const char *fn) {
    if (!h) return ec_fail(CUDNN_STATUS_NOT_INITIALIZED, "%s: handle is NULL", fn);
    if (!bytes) return ec_fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: sizeInBytes is NULL", fn);
    cudnnStatus_t s = ec_check(p, fn);
    return s ? s : ec_workspace(p, kind, algo, bytes, fn);
}

cudnnStatus_t ec_fwd_workspace(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                               cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t y,
                               cudnnConvolutionFwdAlgo_t algo, size_t *bytes) {
    ec_problem p = {x, y, w, c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    return ec_ws_query(h, p, EC_FWD, (int)algo, bytes, "cudnnGetConvolutionForwardWorkspaceSize");
}

cudnnStatus_t ec_data_workspace(cudnnHandle_t h, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
                                cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t dx,
                                cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes) {
    ec_problem p = {dx, dy, w, c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    return ec_ws_query(h, p, EC_DATA, (int)algo, bytes, "cudnnGetConvolutionBackwardDataWorkspaceSize");
}

cudnnStatus_t ec_filter_workspace(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
                                  cudnnConvolutionDescriptor_t c, cudnnFilterDescriptor_t dw,
                                  cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes) {
    ec_problem p = {x, dy, dw, c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    return ec_ws_query(h, p, EC_FILTER, (int)algo, bytes, "cudnnGetConvolutionBackwardFilterWorkspaceSize");
}

/* ---- the convolutions ---- */

struct ec_job {
    ec_problem p;
    int kind;
    double alpha, beta;
    const void *x, *w, *y; /* operands (the output among them is `out`) */
    void *out;
    void *ws;
    size_t ws_bytes;
};

/* t[n][c][h][w] of a 4-d descriptor, widened into a dense [N, C, H, W] vector. */
std::vector<double> ec_widen(const cudnnTensorStruct *d, const void *data) {
    const int *s = d->strides;
    std::vector<double> v((size_t)d->dims[0] * d->dims[1] * d->dims[2] * d->dims[3]);
    size_t k = 0;
    for (int n = 0; n < d->dims[0]; n++)
        for (int c = 0; c < d->dims[1]; c++)
            for (int h = 0; h < d->dims[2]; h++)
                for (int w = 0; w < d->dims[3]; w++)
                    v[k++] = ec_load(data, (int64_t)n * s[0] + (int64_t)c * s[1] + (int64_t)h * s[2] + (int64_t)w * s[3],
                                     d->dt);
    return v;
}

/* out = alpha * r + beta * out (out unread when beta is 0), r dense in out's shape. */
void ec_blend_tensor(const cudnnTensorStruct *d, void *out, const std::vector<double> &r, double alpha, double beta) {
    const int *s = d->strides;
    size_t k = 0;
    for (int n = 0; n < d->dims[0]; n++)
        for (int c = 0; c < d->dims[1]; c++)
            for (int h = 0; h < d->dims[2]; h++)
                for (int w = 0; w < d->dims[3]; w++) {
                    int64_t i = (int64_t)n * s[0] + (int64_t)c * s[1] + (int64_t)h * s[2] + (int64_t)w * s[3];
                    double v = alpha * r[k++];
                    if (beta != 0.0) v += beta * ec_load(out, i, d->dt);
                    ec_store(out, i, d->dt, v);
                }
}

/* Accumulates in Acc (float for float compute, double for double), as cuDNN does. */
template <class Acc> void ec_compute(ec_job &j) {
    const ec_problem &p = j.p;
    const cudnnConvolutionStruct *c = p.c;
    int sh = c->stride[0], sw = c->stride[1], ph = c->pad[0], pw = c->pad[1], dh = c->dil[0], dw = c->dil[1];
    bool flip = c->mode == CUDNN_CONVOLUTION;
    size_t nw = (size_t)p.K * p.Cg * p.kh * p.kw;
    /* the filter, dense [K, Cg, kh, kw] (packed NCHW) */
    std::vector<double> w;
    if (j.kind != EC_FILTER) {
        w.resize(nw);
        for (size_t i = 0; i < nw; i++) w[i] = ec_load(j.w, (int64_t)i, p.w->dt);
    }
    auto W_at = [&](int k, int cg, int i, int jj) -> size_t {
        if (flip) i = p.kh - 1 - i, jj = p.kw - 1 - jj;
        return (((size_t)k * p.Cg + cg) * p.kh + i) * p.kw + jj;
    };
    if (j.kind == EC_FWD) {
        std::vector<double> x = ec_widen(p.x, j.x), r((size_t)p.N * p.K * p.OH * p.OW);
        size_t k = 0;
        for (int n = 0; n < p.N; n++)
            for (int o = 0; o < p.K; o++) {
                int g = o / p.Kg;
                for (int oh = 0; oh < p.OH; oh++)
                    for (int ow = 0; ow < p.OW; ow++) {
                        Acc acc = 0;
                        for (int cg = 0; cg < p.Cg; cg++) {
                            const double *xc = &x[(((size_t)n * p.C + g * p.Cg + cg) * p.H) * p.W];
                            for (int i = 0; i < p.kh; i++) {
                                int h = oh * sh - ph + i * dh;
                                if (h < 0 || h >= p.H) continue;
                                for (int jj = 0; jj < p.kw; jj++) {
                                    int ww = ow * sw - pw + jj * dw;
                                    if (ww < 0 || ww >= p.W) continue;
                                    acc += (Acc)xc[(size_t)h * p.W + ww] * (Acc)w[W_at(o, cg, i, jj)];
                                }
                            }
                        }
                        r[k++] = (double)acc;
                    }
            }
        ec_blend_tensor(p.y, j.out, r, j.alpha, j.beta);
    } else if (j.kind == EC_DATA) {
        std::vector<double> dy = ec_widen(p.y, j.y), r((size_t)p.N * p.C * p.H * p.W);
        size_t k = 0;
        for (int n = 0; n < p.N; n++)
            for (int ch = 0; ch < p.C; ch++) {
                int g = ch / p.Cg, cg = ch % p.Cg;
                for (int h = 0; h < p.H; h++)
                    for (int ww = 0; ww < p.W; ww++) {
                        Acc acc = 0;
                        for (int o = g * p.Kg; o < (g + 1) * p.Kg; o++) {
                            const double *dyo = &dy[(((size_t)n * p.K + o) * p.OH) * p.OW];
                            for (int i = 0; i < p.kh; i++) {
                                int t = h + ph - i * dh;
                                if (t < 0 || t % sh) continue;
                                int oh = t / sh;
                                if (oh >= p.OH) continue;
                                for (int jj = 0; jj < p.kw; jj++) {
                                    int u = ww + pw - jj * dw;
                                    if (u < 0 || u % sw) continue;
                                    int ow = u / sw;
                                    if (ow >= p.OW) continue;
                                    acc += (Acc)dyo[(size_t)oh * p.OW + ow] * (Acc)w[W_at(o, cg, i, jj)];
                                }
                            }
                        }
                        r[k++] = (double)acc;
                    }
            }
        ec_blend_tensor(p.x, j.out, r, j.alpha, j.beta);
    } else {
        std::vector<double> x = ec_widen(p.x, j.x), dy = ec_widen(p.y, j.y), r(nw);
        for (int o = 0; o < p.K; o++) {
            int g = o / p.Kg;
            for (int cg = 0; cg < p.Cg; cg++)
                for (int i = 0; i < p.kh; i++)
                    for (int jj = 0; jj < p.kw; jj++) {
                        Acc acc = 0;
                        for (int n = 0; n < p.N; n++) {
                            const double *xc = &x[(((size_t)n * p.C + g * p.Cg + cg) * p.H) * p.W];
                            const double *dyo = &dy[(((size_t)n * p.K + o) * p.OH) * p.OW];
                            for (int oh = 0; oh < p.OH; oh++) {
                                int h = oh * sh - ph + i * dh;
                                if (h < 0 || h >= p.H) continue;
                                for (int ow = 0; ow < p.OW; ow++) {
                                    int ww = ow * sw - pw + jj * dw;
                                    if (ww < 0 || ww >= p.W) continue;
                                    acc += (Acc)dyo[(size_t)oh * p.OW + ow] * (Acc)xc[(size_t)h * p.W + ww];
                                }
                            }
                        }
                        r[W_at(o, cg, i, jj)] = (double)acc;
                    }
        }
        /* the filter is packed: blend element by element */
        for (size_t i = 0; i < nw; i++) {
            double v = j.alpha * r[i];
            if (j.beta != 0.0) v += j.beta * ec_load(j.out, (int64_t)i, p.w->dt);
            ec_store(j.out, (int64_t)i, p.w->dt, v);
        }
    }
}

void ec_kernel(void *ctx) {
    ec_job &j = *(ec_job *)ctx;
    if (j.ws_bytes) memset(j.ws, 0xA5, j.ws_bytes); /* the workspace must be device memory of that size */
    if (j.p.x->dt == CUDNN_DATA_DOUBLE) ec_compute<double>(j);
    else ec_compute<float>(j);
}

/* The checks every convolution call makes, then the job on the "device". */
cudnnStatus_t ec_run(cudnnHandle_t h, ec_job &j, int algo, const void *alpha, const void *beta, const char *fn) {
    if (!h) return ec_fail(CUDNN_STATUS_NOT_INITIALIZED, "%s: handle is NULL", fn);
    if (!alpha || !beta || !j.x || !j.w || !j.y)
        return ec_fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: NULL argument", fn);
    cudnnStatus_t s = ec_check(j.p, fn);
    if (s) return s;
    size_t need = 0;
    if ((s = ec_workspace(j.p, j.kind, algo, &need, fn))) return s;
    if (j.ws_bytes < need)
        return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: workspace of %zu bytes, algo %d needs %zu", fn, j.ws_bytes, algo,
                       need);
    if (need && !j.ws) return ec_fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: workspace is NULL", fn);
    if (ec_refuse_stage == 3) return ec_fail(CUDNN_STATUS_NOT_SUPPORTED, "%s: refused (emulator refusal stage 3)", fn);
    if (ec_refuse_stage == 4)
        return ec_fail(CUDNN_STATUS_EXECUTION_FAILED, "%s: failed (emulator refusal stage 4)", fn);
    bool dbl = j.p.x->dt == CUDNN_DATA_DOUBLE;
    j.alpha = dbl ? *(const double *)alpha : *(const float *)alpha;
    j.beta = dbl ? *(const double *)beta : *(const float *)beta;
    j.ws_bytes = need;
    emu_launch(fn, dim3(1), dim3(1), 0, 1, ec_kernel, &j);
    if (cudaGetLastError() != cudaSuccess) return ec_fail(CUDNN_STATUS_EXECUTION_FAILED, "%s: launch failed", fn);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t ec_forward(cudnnHandle_t h, const void *alpha, cudnnTensorDescriptor_t xd, const void *x,
                         cudnnFilterDescriptor_t wd, const void *w, cudnnConvolutionDescriptor_t c,
                         cudnnConvolutionFwdAlgo_t algo, void *ws, size_t ws_bytes, const void *beta,
                         cudnnTensorDescriptor_t yd, void *y) {
    ec_job j = {{xd, yd, wd, c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, EC_FWD, 0, 0, x, w, y, y, ws, ws_bytes};
    return ec_run(h, j, (int)algo, alpha, beta, "cudnnConvolutionForward");
}

cudnnStatus_t ec_backward_data(cudnnHandle_t h, const void *alpha, cudnnFilterDescriptor_t wd, const void *w,
                               cudnnTensorDescriptor_t dyd, const void *dy, cudnnConvolutionDescriptor_t c,
                               cudnnConvolutionBwdDataAlgo_t algo, void *ws, size_t ws_bytes, const void *beta,
                               cudnnTensorDescriptor_t dxd, void *dx) {
    ec_job j = {{dxd, dyd, wd, c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, EC_DATA, 0, 0, dx, w, dy, dx, ws, ws_bytes};
    return ec_run(h, j, (int)algo, alpha, beta, "cudnnConvolutionBackwardData");
}

cudnnStatus_t ec_backward_filter(cudnnHandle_t h, const void *alpha, cudnnTensorDescriptor_t xd, const void *x,
                                 cudnnTensorDescriptor_t dyd, const void *dy, cudnnConvolutionDescriptor_t c,
                                 cudnnConvolutionBwdFilterAlgo_t algo, void *ws, size_t ws_bytes, const void *beta,
                                 cudnnFilterDescriptor_t dwd, void *dw) {
    ec_job j = {{xd, dyd, dwd, c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, EC_FILTER, 0, 0, x, dw, dy, dw, ws, ws_bytes};
    return ec_run(h, j, (int)algo, alpha, beta, "cudnnConvolutionBackwardFilter");
}

/* ---- cudnnAddTensor: C = alpha A + beta C, A broadcast along its dims of size 1 ---- */

struct ec_add {
    const cudnnTensorStruct *a, *c;
    const void *A;
    void *C;
    double alpha, beta;
};

void ec_add_kernel(void *ctx) {
    ec_add &e = *(ec_add *)ctx;
    int nb = e.c->nb;
    int64_t total = 1;
    for (int d = 0; d < nb; d++) total *= e.c->dims[d];
    bool dbl = e.c->dt == CUDNN_DATA_DOUBLE;
    for (int64_t lin = 0; lin < total; lin++) {
        int64_t rem = lin, ia = 0, ic = 0;
        for (int d = nb - 1; d >= 0; d--) {
            int64_t i = rem % e.c->dims[d];
            rem /= e.c->dims[d];
            ic += i * e.c->strides[d];
            if (e.a->dims[d] != 1) ia += i * e.a->strides[d];
        }
        double v;
        if (dbl) v = e.alpha * ec_load(e.A, ia, e.a->dt) + (e.beta != 0.0 ? e.beta * ec_load(e.C, ic, e.c->dt) : 0.0);
        else
            v = (double)((float)e.alpha * (float)ec_load(e.A, ia, e.a->dt) +
                         (e.beta != 0.0 ? (float)e.beta * (float)ec_load(e.C, ic, e.c->dt) : 0.0f));
        ec_store(e.C, ic, e.c->dt, v);
    }
}

cudnnStatus_t ec_add_tensor(cudnnHandle_t h, const void *alpha, cudnnTensorDescriptor_t ad, const void *A,
                            const void *beta, cudnnTensorDescriptor_t cd, void *C) {
    const char *fn = "cudnnAddTensor";
    if (!h) return ec_fail(CUDNN_STATUS_NOT_INITIALIZED, "%s: handle is NULL", fn);
    if (!alpha || !beta || !ad || !cd || !A || !C)
        return ec_fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "%s: NULL argument", fn);
    if (!ad->set || !cd->set) return ec_fail(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "%s: descriptor never set", fn);
    if (ec_refuse_stage == 5) return ec_fail(CUDNN_STATUS_NOT_SUPPORTED, "%s: refused (emulator refusal stage 5)", fn);
    if (ad->nb != cd->nb || ad->dt != cd->dt)
        return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: A and C differ in dims or type", fn);
    for (int d = 0; d < cd->nb; d++)
        if (ad->dims[d] != 1 && ad->dims[d] != cd->dims[d])
            return ec_fail(CUDNN_STATUS_BAD_PARAM, "%s: A's dim %d is %d, C's is %d", fn, d, ad->dims[d], cd->dims[d]);
    bool dbl = cd->dt == CUDNN_DATA_DOUBLE;
    ec_add e = {ad, cd, A, C, dbl ? *(const double *)alpha : *(const float *)alpha,
                dbl ? *(const double *)beta : *(const float *)beta};
    emu_launch(fn, dim3(1), dim3(1), 0, 1, ec_add_kernel, &e);
    if (cudaGetLastError() != cudaSuccess) return ec_fail(CUDNN_STATUS_EXECUTION_FAILED, "%s: launch failed", fn);
    return CUDNN_STATUS_SUCCESS;
}

/* ---- version and errors ---- */

size_t ec_get_version(void) { return CUDNN_VERSION; }

const char *ec_error_string(cudnnStatus_t s) {
    switch (CUDNN_STATUS_CATEGORY((int)s)) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    default: return "CUDNN_STATUS_EXECUTION_FAILED";
    }
}

/* The last failure's message, then forgotten (so it never explains a later status). */
void ec_last_error_string(char *message, size_t max_size) {
    if (!message || !max_size) return;
    snprintf(message, max_size, "%s", ec_last);
    ec_last[0] = '\0';
}

} // namespace

extern "C" void graft_emu_cudnn_refuse(int stage) { ec_refuse_stage = stage; }

extern "C" void graft_emu_cudnn_fill(graft_cudnn_api *api) {
    api->get_version = ec_get_version;
    api->get_error_string = ec_error_string;
    api->get_last_error_string = ec_last_error_string;
    api->create = ec_create;
    api->destroy = ec_destroy;
    api->set_stream = ec_set_stream;
    api->create_tensor = ec_create_tensor;
    api->destroy_tensor = ec_destroy_tensor;
    api->set_tensor_nd = ec_set_tensor_nd;
    api->create_filter = ec_create_filter;
    api->destroy_filter = ec_destroy_filter;
    api->set_filter_nd = ec_set_filter_nd;
    api->create_conv = ec_create_conv;
    api->destroy_conv = ec_destroy_conv;
    api->set_conv_nd = ec_set_conv_nd;
    api->set_group_count = ec_set_group_count;
    api->set_math_type = ec_set_math_type;
    api->fwd_algos = ec_fwd_algos_v7;
    api->bwd_data_algos = ec_data_algos_v7;
    api->bwd_filter_algos = ec_filter_algos_v7;
    api->fwd_find = ec_fwd_find;
    api->bwd_data_find = ec_data_find;
    api->bwd_filter_find = ec_filter_find;
    api->fwd_workspace = ec_fwd_workspace;
    api->bwd_data_workspace = ec_data_workspace;
    api->bwd_filter_workspace = ec_filter_workspace;
    api->forward = ec_forward;
    api->backward_data = ec_backward_data;
    api->backward_filter = ec_backward_filter;
    api->add_tensor = ec_add_tensor;
}
