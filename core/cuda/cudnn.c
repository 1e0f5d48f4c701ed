/* graft CUDA backend: the cuDNN loader and the three convolutions through it (see
 * cudnn.h). libcudnn is dlopen'ed at first use; in the emulated build the table comes
 * from emu/emu_cudnn.cpp. Descriptors and the heuristic's algorithm list are built once
 * per shape and kept in a hash table, so a training loop pays for them once (PyTorch's
 * torch.backends.cudnn.benchmark = False). Host-side C: device pointers are passed to
 * cuDNN, never dereferenced. */
#define GRAFT_CUDNN_INTERNAL
#include "cuda/cudnn.h"
#include "cuda/internal.h"
#include "ops/elementwise.h"
#include "ops/view.h"

#include <cuda_runtime_api.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef GRAFT_CUDA_EMU
#include <dlfcn.h>
#endif

cudaStream_t graft_cuda_stream(void);

#define CD_MAX_DEVICES 16
#define CD_MAX_ALGOS 8
#define CD_MAX_PLANS 4096 /* beyond this many shapes the cache starts over */

enum { CD_FWD = 0, CD_BWD_DATA = 1, CD_BWD_FILTER = 2 };

static graft_cudnn_api cd_api;
static int cd_state;                 /* 0 not tried, 1 loaded, -1 unavailable */
static char cd_why[1024];            /* why it is unavailable */
static cudnnHandle_t cd_handles[CD_MAX_DEVICES];
static graft_cudnn_stats cd_stats = {.last_algo = {-1, -1, -1}};

/* ---- loading ---- */

#ifndef GRAFT_CUDA_EMU
/* The library from the loader's path, then $CUDA_HOME/lib64, then GRAFT_CUDNN_PATH. */
static void *cd_open(void) {
    static const char *const names[] = {"libcudnn.so.9", NULL};
    return gk_dlopen(names, "GRAFT_CUDNN_PATH", cd_why, sizeof cd_why);
}

/* One symbol into *slot; false (and cd_why set) when a required one is missing. */
static bool cd_sym(void *h, void **slot, const char *name, bool required) {
    *slot = dlsym(h, name);
    if (*slot || !required) return true;
    snprintf(cd_why, sizeof cd_why, "libcudnn has no %s (cuDNN 9 is needed)", name);
    return false;
}

static bool cd_resolve(void *h) {
    graft_cudnn_api *a = &cd_api;
    return cd_sym(h, (void **)&a->get_version, "cudnnGetVersion", true) &&
           cd_sym(h, (void **)&a->get_error_string, "cudnnGetErrorString", true) &&
           cd_sym(h, (void **)&a->get_last_error_string, "cudnnGetLastErrorString", false) &&
           cd_sym(h, (void **)&a->create, "cudnnCreate", true) &&
           cd_sym(h, (void **)&a->destroy, "cudnnDestroy", true) &&
           cd_sym(h, (void **)&a->set_stream, "cudnnSetStream", true) &&
           cd_sym(h, (void **)&a->create_tensor, "cudnnCreateTensorDescriptor", true) &&
           cd_sym(h, (void **)&a->destroy_tensor, "cudnnDestroyTensorDescriptor", true) &&
           cd_sym(h, (void **)&a->set_tensor_nd, "cudnnSetTensorNdDescriptor", true) &&
           cd_sym(h, (void **)&a->create_filter, "cudnnCreateFilterDescriptor", true) &&
           cd_sym(h, (void **)&a->destroy_filter, "cudnnDestroyFilterDescriptor", true) &&
           cd_sym(h, (void **)&a->set_filter_nd, "cudnnSetFilterNdDescriptor", true) &&
           cd_sym(h, (void **)&a->create_conv, "cudnnCreateConvolutionDescriptor", true) &&
           cd_sym(h, (void **)&a->destroy_conv, "cudnnDestroyConvolutionDescriptor", true) &&
           cd_sym(h, (void **)&a->set_conv_nd, "cudnnSetConvolutionNdDescriptor", true) &&
           cd_sym(h, (void **)&a->set_group_count, "cudnnSetConvolutionGroupCount", true) &&
           cd_sym(h, (void **)&a->set_math_type, "cudnnSetConvolutionMathType", true) &&
           cd_sym(h, (void **)&a->fwd_algos, "cudnnGetConvolutionForwardAlgorithm_v7", true) &&
           cd_sym(h, (void **)&a->bwd_data_algos, "cudnnGetConvolutionBackwardDataAlgorithm_v7", true) &&
           cd_sym(h, (void **)&a->bwd_filter_algos, "cudnnGetConvolutionBackwardFilterAlgorithm_v7", true) &&
           cd_sym(h, (void **)&a->fwd_find, "cudnnFindConvolutionForwardAlgorithm", true) &&
           cd_sym(h, (void **)&a->bwd_data_find, "cudnnFindConvolutionBackwardDataAlgorithm", true) &&
           cd_sym(h, (void **)&a->bwd_filter_find, "cudnnFindConvolutionBackwardFilterAlgorithm", true) &&
           cd_sym(h, (void **)&a->fwd_workspace, "cudnnGetConvolutionForwardWorkspaceSize", true) &&
           cd_sym(h, (void **)&a->bwd_data_workspace, "cudnnGetConvolutionBackwardDataWorkspaceSize", true) &&
           cd_sym(h, (void **)&a->bwd_filter_workspace, "cudnnGetConvolutionBackwardFilterWorkspaceSize", true) &&
           cd_sym(h, (void **)&a->forward, "cudnnConvolutionForward", true) &&
           cd_sym(h, (void **)&a->backward_data, "cudnnConvolutionBackwardData", true) &&
           cd_sym(h, (void **)&a->backward_filter, "cudnnConvolutionBackwardFilter", true) &&
           cd_sym(h, (void **)&a->add_tensor, "cudnnAddTensor", true);
}
#endif

static void cd_load(void) {
#ifdef GRAFT_CUDA_EMU
    graft_emu_cudnn_fill(&cd_api);
    cd_state = 1;
#else
    void *h = cd_open();
    if (!h) {
        char tmp[sizeof cd_why];
        memcpy(tmp, cd_why, sizeof tmp);
        snprintf(cd_why, sizeof cd_why,
                 "cannot load libcudnn (%.800s); install cuDNN 9 or point GRAFT_CUDNN_PATH at the folder holding "
                 "libcudnn.so.9",
                 tmp);
        cd_state = -1;
        return;
    }
    if (!cd_resolve(h)) {
        cd_state = -1;
        return;
    }
    size_t v = cd_api.get_version();
    if (v / 10000 != 9) {
        snprintf(cd_why, sizeof cd_why, "libcudnn reports version %zu; graft uses cuDNN 9", v);
        cd_state = -1;
        return;
    }
    cd_why[0] = '\0';
    cd_state = 1;
#endif
}

bool graft_cudnn_is_available(void) {
    if (cd_state == 0) cd_load();
    return cd_state > 0;
}

long graft_cudnn_version(void) { return graft_cudnn_is_available() ? (long)cd_api.get_version() : 0; }

const char *graft_cudnn_why(void) { return graft_cudnn_is_available() ? "" : cd_why; }

void graft_cudnn_get_stats(graft_cudnn_stats *out) { *out = cd_stats; }

bool graft_cudnn_emu_refuse(int stage) {
#ifdef GRAFT_CUDA_EMU
    graft_emu_cudnn_refuse(stage);
    return true;
#else
    (void)stage;
    return false;
#endif
}

/* ---- statuses ---- */

#define CD_NAME(s) {s, #s}
static const struct { int code; const char *name; } cd_names[] = {
    CD_NAME(CUDNN_STATUS_SUCCESS), CD_NAME(CUDNN_STATUS_NOT_INITIALIZED),
    CD_NAME(CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH), CD_NAME(CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH),
    CD_NAME(CUDNN_STATUS_DEPRECATED), CD_NAME(CUDNN_STATUS_LICENSE_ERROR), CD_NAME(CUDNN_STATUS_RUNTIME_IN_PROGRESS),
    CD_NAME(CUDNN_STATUS_RUNTIME_FP_OVERFLOW), CD_NAME(CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED),
    CD_NAME(CUDNN_STATUS_BAD_PARAM), {2001, "CUDNN_STATUS_INVALID_VALUE"}, CD_NAME(CUDNN_STATUS_BAD_PARAM_NULL_POINTER),
    CD_NAME(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER), CD_NAME(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED),
    CD_NAME(CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND), CD_NAME(CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT),
    CD_NAME(CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH), CD_NAME(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH),
    CD_NAME(CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES), CD_NAME(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE),
    CD_NAME(CUDNN_STATUS_BAD_PARAM_CUDA_GRAPH_MISMATCH), CD_NAME(CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE),
    CD_NAME(CUDNN_STATUS_NOT_SUPPORTED), CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN),
    CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_SHAPE), CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE),
    CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT), CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER),
    CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART), CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH),
    CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING),
    CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE),
    CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT), CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_PADDING),
    CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM), CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_CUDA_GRAPH_NATIVE_API),
    CD_NAME(CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE), CD_NAME(CUDNN_STATUS_INTERNAL_ERROR),
    CD_NAME(CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED), CD_NAME(CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE),
    CD_NAME(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED),
    CD_NAME(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED),
    CD_NAME(CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM), CD_NAME(CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED),
    CD_NAME(CUDNN_STATUS_EXECUTION_FAILED), CD_NAME(CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER),
    CD_NAME(CUDNN_STATUS_EXECUTION_FAILED_CUBLAS), CD_NAME(CUDNN_STATUS_EXECUTION_FAILED_CUDART),
    CD_NAME(CUDNN_STATUS_EXECUTION_FAILED_CURAND),
};

/* cuDNN 9's name of a status (of its category when the code is newer than graft). */
static const char *cd_status_name(cudnnStatus_t s) {
    for (size_t i = 0; i < sizeof cd_names / sizeof cd_names[0]; i++)
        if (cd_names[i].code == (int)s) return cd_names[i].name;
    switch (CUDNN_STATUS_CATEGORY((int)s)) {
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    default: return "CUDNN_STATUS_UNKNOWN";
    }
}

/* The CUDNN_STATUS_NOT_SUPPORTED family: cuDNN cannot take this problem (graft falls back). */
static bool cd_refused(cudnnStatus_t s) { return CUDNN_STATUS_CATEGORY((int)s) == CUDNN_STATUS_NOT_SUPPORTED; }

/* "op: call: CUDNN_STATUS_... (reason)" for a failed call; the reason is cuDNN's last
 * error message when it has one, else cudnnGetErrorString. GRAFT_OK on success. */
static graft_status cd_check(cudnnStatus_t s, const char *call, const char *op) {
    if (s == CUDNN_STATUS_SUCCESS) return GRAFT_OK;
    char why[512] = "";
    if (cd_api.get_last_error_string) cd_api.get_last_error_string(why, sizeof why);
    why[sizeof why - 1] = '\0';
    if (!why[0] && cd_api.get_error_string) {
        const char *e = cd_api.get_error_string(s);
        snprintf(why, sizeof why, "%s", e ? e : "");
    }
    if (!why[0]) snprintf(why, sizeof why, "status %d", (int)s);
    bool oom = s == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ||
               s == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED;
    return graft_error(oom ? GRAFT_ENOMEM : GRAFT_EDEVICE, "%s: %s: %s (%s)", op, call, cd_status_name(s), why);
}

/* Marks the library unusable (a handle that cannot be created: a missing sublibrary, a
 * driver too old); later calls fall back and is_available() says false. */
static void cd_disable(cudnnStatus_t s, const char *call) {
    char why[512] = "";
    if (cd_api.get_last_error_string) cd_api.get_last_error_string(why, sizeof why);
    why[sizeof why - 1] = '\0';
    snprintf(cd_why, sizeof cd_why, "%s: %s%s%.500s%s", call, cd_status_name(s), why[0] ? " (" : "", why,
             why[0] ? ")" : "");
    cd_state = -1;
}

/* The handle of `device` (made current), created on first use and bound to graft's
 * stream; NULL when cuDNN cannot create one (then it is disabled). */
static graft_status cd_handle(cudnnHandle_t *out, int device, const char *op) {
    *out = NULL;
    if (device < 0 || device >= CD_MAX_DEVICES) return graft_error(GRAFT_EDEVICE, "%s: no CUDA device %d", op, device);
    graft_status st = gk_use_device(device);
    if (st) return st;
    if (!cd_handles[device]) {
        cudnnHandle_t h = NULL;
        cudnnStatus_t s = cd_api.create(&h);
        if (s != CUDNN_STATUS_SUCCESS) {
            cd_disable(s, "cudnnCreate");
            return GRAFT_OK;
        }
        if ((s = cd_api.set_stream(h, graft_cuda_stream())) != CUDNN_STATUS_SUCCESS) {
            cd_disable(s, "cudnnSetStream");
            cd_api.destroy(h);
            return GRAFT_OK;
        }
        cd_handles[device] = h;
    }
    *out = cd_handles[device];
    return GRAFT_OK;
}

/* ---- plans: descriptors and algorithm lists per shape ---- */

/* The shape key: dtype, device, TF32, benchmark, then the geometry. */
enum { CD_KEY = 20 };

typedef struct {
    int state;                  /* 0 not queried, 1 ready, -1 refused */
    int n;                      /* candidates, in the heuristic's order */
    int algo[CD_MAX_ALGOS];
    size_t ws[CD_MAX_ALGOS];    /* workspace bytes */
    bool det[CD_MAX_ALGOS];     /* reported deterministic */
} cd_algos;

typedef struct {
    int64_t key[CD_KEY];
    bool refused;               /* a descriptor was refused: always im2col */
    bool bias_graft[2];         /* cudnnAddTensor refused the bias of the small [0] / big [1] side */
    cudnnTensorDescriptor_t big, small, bias_big, bias_small;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cd_algos kind[3];
} cd_plan;

static cd_plan **cd_table;      /* open addressing, linear probing; NULL: empty */
static size_t cd_cap, cd_count;

static void cd_key_of(int64_t *k, const graft_conv_geom *g, const graft_cudnn_opts *o, int device) {
    int64_t v[CD_KEY] = {g->dtype, device, o->tf32 && g->dtype == GRAFT_F32, o->benchmark, g->N, g->G, g->C,
                         g->H,     g->W,   g->O,  g->OH, g->OW, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw};
    memcpy(k, v, sizeof v);
}

static size_t cd_hash(const int64_t *k) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < CD_KEY; i++) {
        h ^= (uint64_t)k[i];
        h *= 1099511628211ull;
        h ^= h >> 29;
    }
    return (size_t)h;
}

/* Destroys the plan's descriptors (a refused plan keeps none). */
static void cd_plan_drop(cd_plan *p) {
    if (p->big) cd_api.destroy_tensor(p->big);
    if (p->small) cd_api.destroy_tensor(p->small);
    if (p->bias_big) cd_api.destroy_tensor(p->bias_big);
    if (p->bias_small) cd_api.destroy_tensor(p->bias_small);
    if (p->w) cd_api.destroy_filter(p->w);
    if (p->conv) cd_api.destroy_conv(p->conv);
    p->big = p->small = p->bias_big = p->bias_small = NULL;
    p->w = NULL;
    p->conv = NULL;
}

static void cd_plan_free(cd_plan *p) {
    if (!p) return;
    cd_plan_drop(p);
    free(p);
}

void graft_cudnn_clear_cache(void) {
    for (size_t i = 0; i < cd_cap; i++) cd_plan_free(cd_table[i]);
    free(cd_table);
    cd_table = NULL;
    cd_cap = cd_count = 0;
}

/* Inserts p (its key absent); false when out of memory (p not kept). */
static bool cd_insert(cd_plan *p) {
    if (cd_count >= CD_MAX_PLANS) graft_cudnn_clear_cache();
    if ((cd_count + 1) * 2 > cd_cap) {
        size_t cap = cd_cap ? cd_cap * 2 : 64;
        cd_plan **t = calloc(cap, sizeof *t);
        if (!t) return false;
        for (size_t i = 0; i < cd_cap; i++) {
            if (!cd_table[i]) continue;
            size_t j = cd_hash(cd_table[i]->key) & (cap - 1);
            while (t[j]) j = (j + 1) & (cap - 1);
            t[j] = cd_table[i];
        }
        free(cd_table);
        cd_table = t;
        cd_cap = cap;
    }
    size_t j = cd_hash(p->key) & (cd_cap - 1);
    while (cd_table[j]) j = (j + 1) & (cd_cap - 1);
    cd_table[j] = p;
    cd_count++;
    return true;
}

static cd_plan *cd_find(const int64_t *key) {
    if (!cd_cap) return NULL;
    for (size_t j = cd_hash(key) & (cd_cap - 1); cd_table[j]; j = (j + 1) & (cd_cap - 1))
        if (memcmp(cd_table[j]->key, key, sizeof cd_table[j]->key) == 0) return cd_table[j];
    return NULL;
}

static cudnnDataType_t cd_dtype(graft_dtype d) {
    switch (d) {
    case GRAFT_F64: return CUDNN_DATA_DOUBLE;
    case GRAFT_F16: return CUDNN_DATA_HALF;
    case GRAFT_BF16: return CUDNN_DATA_BFLOAT16;
    default: return CUDNN_DATA_FLOAT;
    }
}

/* A packed NCHW 4-d descriptor [n, c, h, w]. */
static cudnnStatus_t cd_tensor(cudnnTensorDescriptor_t *d, cudnnDataType_t dt, int64_t n, int64_t c, int64_t h,
                               int64_t w) {
    cudnnStatus_t s = cd_api.create_tensor(d);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    int dims[4] = {(int)n, (int)c, (int)h, (int)w};
    int strides[4] = {(int)(c * h * w), (int)(h * w), (int)w, 1};
    return cd_api.set_tensor_nd(*d, dt, 4, dims, strides);
}

/* The descriptors of a geometry, as PyTorch sets them: cross-correlation; float32
 * compute for 16-bit data (float64 for float64); tensor-op math for 16-bit, FMA math
 * for float32 unless TF32 is allowed (CUDNN_DEFAULT_MATH lets cuDNN use TF32). A call
 * refused (NOT_SUPPORTED) marks the plan refused; other failures are errors. */
static graft_status cd_plan_build(cd_plan *p, const graft_conv_geom *g, bool tf32, const char *op) {
    cudnnDataType_t dt = cd_dtype(g->dtype);
    cudnnStatus_t s;
    const char *call = "cudnnSetTensorNdDescriptor";
    if ((s = cd_tensor(&p->big, dt, g->N, g->C, g->H, g->W)) || (s = cd_tensor(&p->small, dt, g->N, g->O, g->OH, g->OW)))
        goto failed;
    call = "cudnnSetFilterNdDescriptor";
    if ((s = cd_api.create_filter(&p->w))) goto failed;
    int fdims[4] = {(int)g->O, (int)(g->C / g->G), (int)g->kh, (int)g->kw};
    if ((s = cd_api.set_filter_nd(p->w, dt, CUDNN_TENSOR_NCHW, 4, fdims))) goto failed;
    call = "cudnnSetConvolutionNdDescriptor";
    if ((s = cd_api.create_conv(&p->conv))) goto failed;
    int pad[2] = {(int)g->ph, (int)g->pw}, stride[2] = {(int)g->sh, (int)g->sw}, dil[2] = {(int)g->dh, (int)g->dw};
    cudnnDataType_t compute = g->dtype == GRAFT_F64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    if ((s = cd_api.set_conv_nd(p->conv, 2, pad, stride, dil, CUDNN_CROSS_CORRELATION, compute))) goto failed;
    call = "cudnnSetConvolutionGroupCount";
    if ((s = cd_api.set_group_count(p->conv, (int)g->G))) goto failed;
    call = "cudnnSetConvolutionMathType";
    cudnnMathType_t math = CUDNN_DEFAULT_MATH;
    if (g->dtype == GRAFT_F16 || g->dtype == GRAFT_BF16) math = CUDNN_TENSOR_OP_MATH;
    else if (g->dtype == GRAFT_F32 && !tf32) math = CUDNN_FMA_MATH;
    if ((s = cd_api.set_math_type(p->conv, math))) goto failed;
    return GRAFT_OK;
failed:
    if (cd_refused(s)) {
        p->refused = true;
        return GRAFT_OK;
    }
    return cd_check(s, call, op);
}

/* The plan of a shape, built on first use; NULL with GRAFT_OK when out of memory for
 * the cache (the call falls back). */
static graft_status cd_plan_get(cd_plan **out, const graft_conv_geom *g, const graft_cudnn_opts *o, int device,
                                const char *op) {
    int64_t key[CD_KEY];
    cd_key_of(key, g, o, device);
    *out = cd_find(key);
    if (*out) return GRAFT_OK;
    cd_plan *p = calloc(1, sizeof *p);
    if (!p) return GRAFT_OK;
    memcpy(p->key, key, sizeof key);
    cd_stats.plans++;
    graft_status st = cd_plan_build(p, g, o->tf32, op);
    if (st) {
        cd_plan_free(p);
        return st;
    }
    if (p->refused) {
        cd_stats.refusals++;
        cd_plan_drop(p);
    }
    if (!cd_insert(p)) {
        cd_plan_free(p);
        return GRAFT_OK;
    }
    *out = p;
    return GRAFT_OK;
}

/* The candidates for one kind, best first, each with its workspace size: the
 * heuristic's (cudnnGet*Algorithm_v7) or, benchmarking, every algorithm timed
 * (cudnnFind*Algorithm, which allocates its buffers with cudaMalloc: graft's cached
 * blocks are given back first). Those cuDNN reports failed or unsupported are dropped;
 * no candidate: the kind is refused for this shape. */
#define CD_COLLECT(PERF, COUNT, QUERY, QUERY_NAME, WS, WS_NAME, WS_ARGS, ALGO_T)                            \
    do {                                                                                                    \
        PERF perf[CD_MAX_ALGOS];                                                                            \
        int got = 0;                                                                                        \
        cd_stats.algo_queries++;                                                                            \
        cudnnStatus_t s = QUERY;                                                                            \
        if (cd_refused(s)) break;                                                                           \
        if ((st = cd_check(s, QUERY_NAME, op))) return st;                                                  \
        for (int i = 0; i < got && i < (COUNT) && a->n < CD_MAX_ALGOS; i++) {                               \
            if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;                                          \
            size_t bytes = 0;                                                                               \
            ALGO_T algo = perf[i].algo;                                                                     \
            s = WS WS_ARGS;                                                                                 \
            if (cd_refused(s)) continue;                                                                    \
            if ((st = cd_check(s, WS_NAME, op))) return st;                                                 \
            a->algo[a->n] = (int)algo;                                                                      \
            a->ws[a->n] = bytes;                                                                            \
            a->det[a->n] = perf[i].determinism == CUDNN_DETERMINISTIC;                                      \
            a->n++;                                                                                         \
        }                                                                                                   \
    } while (0)

static graft_status cd_algos_query(cd_plan *p, int kind, cudnnHandle_t h, bool bench, const char *op) {
    cd_algos *a = &p->kind[kind];
    graft_status st = GRAFT_OK;
    a->n = 0;
    if (bench && (st = graft_cuda_empty_cache())) return st;
    if (kind == CD_FWD)
        CD_COLLECT(cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                   (bench ? cd_api.fwd_find : cd_api.fwd_algos)(h, p->big, p->w, p->conv, p->small,
                                                                CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf),
                   bench ? "cudnnFindConvolutionForwardAlgorithm" : "cudnnGetConvolutionForwardAlgorithm_v7",
                   cd_api.fwd_workspace, "cudnnGetConvolutionForwardWorkspaceSize",
                   (h, p->big, p->w, p->conv, p->small, algo, &bytes),
                   cudnnConvolutionFwdAlgo_t);
    else if (kind == CD_BWD_DATA)
        CD_COLLECT(cudnnConvolutionBwdDataAlgoPerf_t, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                   (bench ? cd_api.bwd_data_find : cd_api.bwd_data_algos)(
                       h, p->w, p->small, p->conv, p->big, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, perf),
                   bench ? "cudnnFindConvolutionBackwardDataAlgorithm" : "cudnnGetConvolutionBackwardDataAlgorithm_v7",
                   cd_api.bwd_data_workspace, "cudnnGetConvolutionBackwardDataWorkspaceSize",
                   (h, p->w, p->small, p->conv, p->big, algo, &bytes),
                   cudnnConvolutionBwdDataAlgo_t);
    else
        CD_COLLECT(cudnnConvolutionBwdFilterAlgoPerf_t, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                   (bench ? cd_api.bwd_filter_find : cd_api.bwd_filter_algos)(
                       h, p->big, p->small, p->conv, p->w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, perf),
                   bench ? "cudnnFindConvolutionBackwardFilterAlgorithm"
                         : "cudnnGetConvolutionBackwardFilterAlgorithm_v7",
                   cd_api.bwd_filter_workspace, "cudnnGetConvolutionBackwardFilterWorkspaceSize",
                   (h, p->big, p->small, p->conv, p->w, algo, &bytes),
                   cudnnConvolutionBwdFilterAlgo_t);
    a->state = a->n ? 1 : -1;
    if (a->state < 0) cd_stats.refusals++;
    return st;
}

/* Whether cuDNN's descriptors express g: every size positive and within int, each
 * tensor under 2^31 elements, and symmetric padding giving g's small side (graft pads
 * "same" with even kernels asymmetrically, and a transposed convolution's
 * output_padding may reach the stride: im2col handles those). */
static bool cd_expressible(const graft_conv_geom *g) {
    if (g->dtype != GRAFT_F32 && g->dtype != GRAFT_F64 && g->dtype != GRAFT_F16 && g->dtype != GRAFT_BF16)
        return false;
    const int64_t v[] = {g->N, g->G, g->C, g->H, g->W, g->O, g->OH, g->OW, g->kh, g->kw, g->sh, g->sw, g->dh, g->dw};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (v[i] < 1 || v[i] > INT_MAX) return false;
    if (g->ph < 0 || g->pw < 0 || g->ph > INT_MAX || g->pw > INT_MAX || g->C % g->G || g->O % g->G) return false;
    /* each product checked before the next factor (no overflow: every factor <= 2^31) */
    const int64_t lim = (int64_t)1 << 31;
    if (g->N * g->C > lim || g->N * g->C * g->H > lim || g->N * g->C * g->H * g->W >= lim) return false;
    if (g->N * g->O > lim || g->N * g->O * g->OH > lim || g->N * g->O * g->OH * g->OW >= lim) return false;
    if (g->O * (g->C / g->G) > lim || g->O * (g->C / g->G) * g->kh > lim ||
        g->O * (g->C / g->G) * g->kh * g->kw >= lim)
        return false;
    int64_t eh = g->dh * (g->kh - 1) + 1, ew = g->dw * (g->kw - 1) + 1;
    int64_t nh = g->H + 2 * g->ph - eh, nw = g->W + 2 * g->pw - ew;
    return nh >= 0 && nw >= 0 && nh / g->sh + 1 == g->OH && nw / g->sw + 1 == g->OW;
}

/* Operands as cuDNN takes them: contiguous, of g->dtype, on out's device. */
static graft_status cd_operands(const graft_conv_geom *g, graft_tensor *const *ts, int n, graft_tensor *out,
                                const char *op) {
    graft_device dev = graft_tensor_device(out);
    for (int i = 0; i < n; i++) {
        if (!ts[i]) continue;
        if (ts[i]->dtype != g->dtype || !graft_tensor_is_contiguous(ts[i]) ||
            !graft_device_eq(graft_tensor_device(ts[i]), dev) || dev.type != GRAFT_CUDA)
            return graft_error(GRAFT_EINTERNAL, "%s: cuDNN operands must be contiguous %s on one CUDA device", op,
                               graft_dtype_name(g->dtype));
    }
    if (!graft_tensor_is_contiguous(out) || !(out->dtype == g->dtype || out->dtype == GRAFT_F32))
        return graft_error(GRAFT_EINTERNAL, "%s: cuDNN output must be contiguous", op);
    return GRAFT_OK;
}

/* +1: t itself when its data is 16-byte aligned (cuDNN's vectorised kernels want it),
 * else an aligned copy (a fresh block of the caching allocator). */
static graft_status cd_aligned(graft_tensor **out, graft_tensor *t) {
    *out = NULL;
    if (!t) return GRAFT_OK;
    if (((uintptr_t)graft_tensor_data(t) & 15) == 0) {
        graft_tensor_retain(t);
        *out = t;
        return GRAFT_OK;
    }
    graft_status st = graft_tensor_empty(out, t->ndim, t->shape, t->dtype, graft_tensor_device(t));
    if (!st) st = graft_tensor_copy_(*out, t);
    if (st) {
        graft_tensor_release(*out);
        *out = NULL;
    }
    return st;
}

/* One convolution call of `kind` with algorithm `algo` and workspace ws. */
static cudnnStatus_t cd_call(int kind, cudnnHandle_t h, cd_plan *p, int algo, void *ws, size_t wsb, const void *one,
                             const void *zero, graft_tensor *big, graft_tensor *w, graft_tensor *small,
                             graft_tensor *dw) {
    if (kind == CD_FWD)
        return cd_api.forward(h, one, p->big, graft_tensor_data(big), p->w, graft_tensor_data(w), p->conv,
                              (cudnnConvolutionFwdAlgo_t)algo, ws, wsb, zero, p->small, graft_tensor_data(small));
    if (kind == CD_BWD_DATA)
        return cd_api.backward_data(h, one, p->w, graft_tensor_data(w), p->small, graft_tensor_data(small), p->conv,
                                    (cudnnConvolutionBwdDataAlgo_t)algo, ws, wsb, zero, p->big,
                                    graft_tensor_data(big));
    return cd_api.backward_filter(h, one, p->big, graft_tensor_data(big), p->small, graft_tensor_data(small), p->conv,
                                  (cudnnConvolutionBwdFilterAlgo_t)algo, ws, wsb, zero, p->w, graft_tensor_data(dw));
}

static const char *const cd_call_names[3] = {"cudnnConvolutionForward", "cudnnConvolutionBackwardData",
                                             "cudnnConvolutionBackwardFilter"};

/* out [N, C, H, W] += bias [C], the side of `kind`'s output: cudnnAddTensor with the
 * bias as [1, C, 1, 1]; where cuDNN refuses that (remembered in the plan), graft's own
 * broadcast add on the same views. */
static graft_status cd_add_bias(cudnnHandle_t h, cd_plan *p, int kind, const graft_conv_geom *g, graft_tensor *bias,
                                graft_tensor *out, const void *one, const char *op) {
    int side = kind == CD_FWD ? 0 : 1;
    if (!p->bias_graft[side]) {
        cudnnTensorDescriptor_t *bd = side ? &p->bias_big : &p->bias_small;
        const char *call = "cudnnSetTensorNdDescriptor";
        cudnnStatus_t s = CUDNN_STATUS_SUCCESS;
        if (!*bd && (s = cd_tensor(bd, cd_dtype(bias->dtype), 1, bias->shape[0], 1, 1))) {
            if (*bd) cd_api.destroy_tensor(*bd);
            *bd = NULL;
        }
        if (s == CUDNN_STATUS_SUCCESS) {
            call = "cudnnAddTensor";
            s = cd_api.add_tensor(h, one, *bd, graft_tensor_data(bias), one, side ? p->big : p->small,
                                  graft_tensor_data(out));
        }
        if (!cd_refused(s)) return cd_check(s, call, op);
        p->bias_graft[side] = true;
    }
    int64_t c = side ? g->C : g->O;
    int64_t oshape[4] = {g->N, c, side ? g->H : g->OH, side ? g->W : g->OW}, bshape[4] = {1, c, 1, 1};
    graft_tensor *ov = NULL, *bv = NULL;
    graft_status st = graft_view(&ov, out, 4, oshape);
    if (!st) st = graft_view(&bv, bias, 4, bshape);
    if (!st) st = graft_add_scaled_(ov, bv, 1.0);
    graft_tensor_release(ov);
    graft_tensor_release(bv);
    return st;
}

/* The three convolutions: the plan of g's shape, then its candidates in the
 * heuristic's order (deterministic ones only when asked): the first whose workspace
 * can be allocated and that cuDNN runs. A candidate cuDNN refuses at run time is
 * dropped; none left: the kind is refused for the shape (cached) and *ran stays false.
 * big, w, small: the operands (the output among them is replaced by `out`'s buffer). */
static graft_status cd_conv(int kind, const graft_conv_geom *g, graft_tensor *big, graft_tensor *w,
                            graft_tensor *small, graft_tensor *dw, graft_tensor *bias, const graft_cudnn_opts *o,
                            bool *ran, const char *op) {
    graft_tensor *out = kind == CD_FWD ? small : kind == CD_BWD_DATA ? big : dw;
    graft_tensor *in1 = kind == CD_FWD ? big : small, *in2 = kind == CD_BWD_FILTER ? big : w;
    graft_tensor *a1 = NULL, *a2 = NULL, *a_bias = NULL, *target = NULL, *ws = NULL;
    cudnnHandle_t h = NULL;
    cd_plan *p = NULL;
    graft_status st;
    *ran = false;
    if ((st = cd_operands(g, (graft_tensor *[]){in1, in2, kind == CD_BWD_FILTER ? NULL : bias}, 3, out, op)))
        return st;
    if (kind != CD_BWD_FILTER && out->dtype != g->dtype)
        return graft_error(GRAFT_EINTERNAL, "%s: cuDNN output dtype", op);
    graft_device dev = graft_tensor_device(out);
    if (!cd_expressible(g) || !graft_cudnn_is_available()) goto done;
    if ((st = cd_handle(&h, dev.index, op)) || !h) goto done;
    if ((st = cd_plan_get(&p, g, o, dev.index, op)) || !p || p->refused) goto done;
    if (p->kind[kind].state == 0 && (st = cd_algos_query(p, kind, h, o->benchmark, op))) goto done;
    if (p->kind[kind].state < 0) goto done;

    /* aligned inputs; the output in g->dtype (dw may be float32 under 16-bit), aligned */
    if ((st = cd_aligned(&a1, in1)) || (st = cd_aligned(&a2, in2)) ||
        (kind != CD_BWD_FILTER && (st = cd_aligned(&a_bias, bias))))
        goto done;
    if (out->dtype != g->dtype || ((uintptr_t)graft_tensor_data(out) & 15)) {
        if ((st = graft_tensor_empty(&target, out->ndim, out->shape, g->dtype, dev))) goto done;
    } else {
        graft_tensor_retain(out);
        target = out;
    }
    graft_tensor *xb = kind == CD_FWD ? a1 : kind == CD_BWD_DATA ? target : a2;
    graft_tensor *ys = kind == CD_FWD ? target : a1;
    double one_d = 1.0, zero_d = 0.0;
    float one_f = 1.0f, zero_f = 0.0f;
    const void *one = g->dtype == GRAFT_F64 ? (const void *)&one_d : (const void *)&one_f;
    const void *zero = g->dtype == GRAFT_F64 ? (const void *)&zero_d : (const void *)&zero_f;
    cd_algos *a = &p->kind[kind];
    for (int i = 0; i < a->n && !*ran; i++) {
        if (o->deterministic && !a->det[i]) continue;
        if (a->ws[i]) {
            int64_t n = (int64_t)a->ws[i];
            st = graft_tensor_empty(&ws, 1, &n, GRAFT_U8, dev);
            if (st == GRAFT_ENOMEM && i + 1 < a->n) continue; /* a later candidate may need less */
            if (st) goto done;
        }
        cudnnStatus_t s = cd_call(kind, h, p, a->algo[i], ws ? graft_tensor_data(ws) : NULL, a->ws[i], one, zero,
                                  xb, kind == CD_BWD_FILTER ? NULL : a2, ys, target);
        graft_tensor_release(ws);
        ws = NULL;
        if (s == CUDNN_STATUS_SUCCESS) {
            *ran = true;
            cd_stats.runs[kind]++;
            cd_stats.last_algo[kind] = a->algo[i];
        } else if (cd_refused(s)) {
            /* this algorithm cannot take the shape after all: forget it */
            for (int j = i; j + 1 < a->n; j++) {
                a->algo[j] = a->algo[j + 1];
                a->ws[j] = a->ws[j + 1];
                a->det[j] = a->det[j + 1];
            }
            a->n--;
            i--;
        } else {
            st = cd_check(s, cd_call_names[kind], op);
            goto done;
        }
    }
    st = GRAFT_OK;
    if (!*ran) {
        if (a->n == 0) {
            a->state = -1;
            cd_stats.refusals++;
        }
        goto done;
    }
    if (a_bias) st = cd_add_bias(h, p, kind, g, a_bias, target, one, op);
    if (!st && target != out) st = graft_tensor_copy_(out, target);
done:
    graft_tensor_release(a1);
    graft_tensor_release(a2);
    graft_tensor_release(a_bias);
    graft_tensor_release(target);
    if (st) *ran = false;
    else if (!*ran) cd_stats.fallbacks++;
    return st;
}

graft_status graft_cudnn_conv_small(const graft_conv_geom *g, graft_tensor *big, graft_tensor *w, graft_tensor *bias,
                                    graft_tensor *small, const graft_cudnn_opts *o, bool *ran, const char *op) {
    return cd_conv(CD_FWD, g, big, w, small, NULL, bias, o, ran, op);
}

graft_status graft_cudnn_conv_big(const graft_conv_geom *g, graft_tensor *small, graft_tensor *w, graft_tensor *bias,
                                  graft_tensor *big, const graft_cudnn_opts *o, bool *ran, const char *op) {
    return cd_conv(CD_BWD_DATA, g, big, w, small, NULL, bias, o, ran, op);
}

graft_status graft_cudnn_conv_weight(const graft_conv_geom *g, graft_tensor *small, graft_tensor *big,
                                     graft_tensor *dw, const graft_cudnn_opts *o, bool *ran, const char *op) {
    return cd_conv(CD_BWD_FILTER, g, big, NULL, small, dw, NULL, o, ran, op);
}
