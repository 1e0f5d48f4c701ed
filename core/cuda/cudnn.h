/* graft CUDA backend: convolutions through cuDNN, loaded at first use.
 *
 * graft links no cuDNN: the first convolution on a GPU dlopens libcudnn ("libcudnn.so.9",
 * then $CUDA_HOME/lib64, then the folders or files listed in GRAFT_CUDNN_PATH, colon-
 * separated) and fills a table with the legacy (v7-style) calls graft makes. The three
 * primitives of cpu/conv_cpu.h map onto cuDNN's three convolutions, with the "big" side
 * as cuDNN's x, the "small" side as y and the weight as the filter:
 *
 *     small = conv(big, W)       cudnnConvolutionForward       (conv, conv_transpose dinput)
 *     big   = conv^T(small, W)   cudnnConvolutionBackwardData  (conv dinput, conv_transpose)
 *     dW    = small x big        cudnnConvolutionBackwardFilter
 *
 * Each returns *ran = false (and GRAFT_OK) when cuDNN cannot take the call: the library
 * is missing, a geometry it cannot express (asymmetric padding, an output_padding not
 * below the stride, an empty or >2^31-element tensor), or a descriptor or algorithm
 * it refuses (CUDNN_STATUS_NOT_SUPPORTED*: cached per shape); the caller then runs
 * im2col + cuBLAS (cuda/conv.h). Other cuDNN failures are errors:
 * "conv2d: cudnnConvolutionForward: CUDNN_STATUS_... (reason)". The algorithm is cuDNN's
 * heuristic choice (cudnnGet*Algorithm_v7: PyTorch's benchmark = False) or, with
 * opts.benchmark, the fastest of every algorithm timed (cudnnFind*Algorithm: PyTorch's
 * benchmark = True); either is made once per shape and cached with its descriptors.
 *
 *     graft_cudnn_opts o = {.tf32 = false};
 *     bool ran;
 *     if (graft_cudnn_conv_small(&g, x, w, b, y, &o, &ran, "conv2d") == GRAFT_OK && !ran) ...im2col
 *
 * The public part names no CUDA type (core C files include it freely). The table below
 * GRAFT_CUDNN_INTERNAL is for cudnn.c and emu/emu_cudnn.cpp, the emulated build's
 * cuDNN (the same calls on the host), used when GRAFT_CUDA_EMU is defined.
 */
#ifndef GRAFT_CUDA_CUDNN_H
#define GRAFT_CUDA_CUDNN_H

#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "cpu/conv_cpu.h"
#include "cuda/cuda.h"

/* ---- the convolutions ----
 * Operands contiguous, of g->dtype (float32, float64, float16, bfloat16), on one CUDA
 * device; bias [O] (small) or [C] (big) may be NULL; dw may be g->dtype or float32 under
 * 16-bit operands (cuDNN writes a g->dtype buffer, converted). */
typedef struct {
    bool tf32;          /* float32 may use TF32 tensor cores (CUDNN_DEFAULT_MATH, not CUDNN_FMA_MATH) */
    bool deterministic; /* only algorithms cuDNN reports deterministic (none: *ran = false) */
    bool benchmark;     /* choose by timing every algorithm once per shape (cudnnFind*), not the heuristic */
} graft_cudnn_opts;

GRAFT_CUDA_API(graft_cudnn_conv_small, (const graft_conv_geom *g, graft_tensor *big, graft_tensor *w,
                                        graft_tensor *bias, graft_tensor *small, const graft_cudnn_opts *o, bool *ran,
                                        const char *op))
GRAFT_CUDA_API(graft_cudnn_conv_big, (const graft_conv_geom *g, graft_tensor *small, graft_tensor *w,
                                      graft_tensor *bias, graft_tensor *big, const graft_cudnn_opts *o, bool *ran,
                                      const char *op))
GRAFT_CUDA_API(graft_cudnn_conv_weight, (const graft_conv_geom *g, graft_tensor *small, graft_tensor *big,
                                         graft_tensor *dw, const graft_cudnn_opts *o, bool *ran, const char *op))

/* ---- the library and its counters ---- */
typedef struct {
    uint64_t runs[3];       /* calls cuDNN ran: forward, backward data, backward filter */
    uint64_t fallbacks;     /* calls handed back to im2col (library missing, refused, geometry) */
    uint64_t plans;         /* descriptor sets built (cache misses) */
    uint64_t algo_queries;  /* cudnnGet*Algorithm_v7 (or, benchmarking, cudnnFind*Algorithm) calls */
    uint64_t refusals;      /* shapes cuDNN refused (cached) */
    int last_algo[3];       /* the algorithm of the last run of each kind, -1 before */
} graft_cudnn_stats;

#ifdef GRAFT_WITH_CUDA
/* Loads the library (first call) and says whether it is usable. */
bool graft_cudnn_is_available(void);
/* cudnnGetVersion() (e.g. 91900), 0 when unavailable. */
long graft_cudnn_version(void);
/* Why the library is unavailable ("" when it is). Borrowed. */
const char *graft_cudnn_why(void);
void graft_cudnn_get_stats(graft_cudnn_stats *out);
/* Forgets every cached plan, refusal and algorithm choice (descriptors destroyed). */
void graft_cudnn_clear_cache(void);
/* Emulated build only: the emulated cuDNN refuses from now on at `stage` (0 nothing, 1
 * tensor descriptors, 2 algorithm queries, 3 the convolution calls with NOT_SUPPORTED,
 * 4 the convolution calls with EXECUTION_FAILED, 5 cudnnAddTensor with NOT_SUPPORTED).
 * False in a real build. */
bool graft_cudnn_emu_refuse(int stage);
#else
static inline bool graft_cudnn_is_available(void) { return false; }
static inline long graft_cudnn_version(void) { return 0; }
static inline const char *graft_cudnn_why(void) { return "graft was built without CUDA"; }
static inline void graft_cudnn_get_stats(graft_cudnn_stats *out) { memset(out, 0, sizeof *out); }
static inline void graft_cudnn_clear_cache(void) {}
static inline bool graft_cudnn_emu_refuse(int stage) { (void)stage; return false; }
#endif

#ifdef __cplusplus
}
#endif

#ifdef GRAFT_CUDNN_INTERNAL
#include <cudnn.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The cuDNN calls graft uses, with their signatures from cudnn_graph.h, cudnn_ops.h and
 * cudnn_cnn.h (cuDNN 9; the legacy API). */
typedef struct {
    size_t (*get_version)(void);                                                     /* cudnnGetVersion */
    const char *(*get_error_string)(cudnnStatus_t status);                           /* cudnnGetErrorString */
    void (*get_last_error_string)(char *message, size_t max_size);  /* cudnnGetLastErrorString (optional) */
    cudnnStatus_t (*create)(cudnnHandle_t *handle);                                  /* cudnnCreate */
    cudnnStatus_t (*destroy)(cudnnHandle_t handle);                                  /* cudnnDestroy */
    cudnnStatus_t (*set_stream)(cudnnHandle_t handle, cudaStream_t stream);          /* cudnnSetStream */
    cudnnStatus_t (*create_tensor)(cudnnTensorDescriptor_t *desc);          /* cudnnCreateTensorDescriptor */
    cudnnStatus_t (*destroy_tensor)(cudnnTensorDescriptor_t desc);          /* cudnnDestroyTensorDescriptor */
    cudnnStatus_t (*set_tensor_nd)(cudnnTensorDescriptor_t desc, cudnnDataType_t dt, int nb, const int dims[],
                                   const int strides[]);                    /* cudnnSetTensorNdDescriptor */
    cudnnStatus_t (*create_filter)(cudnnFilterDescriptor_t *desc);          /* cudnnCreateFilterDescriptor */
    cudnnStatus_t (*destroy_filter)(cudnnFilterDescriptor_t desc);          /* cudnnDestroyFilterDescriptor */
    cudnnStatus_t (*set_filter_nd)(cudnnFilterDescriptor_t desc, cudnnDataType_t dt, cudnnTensorFormat_t format,
                                   int nb, const int dims[]);               /* cudnnSetFilterNdDescriptor */
    cudnnStatus_t (*create_conv)(cudnnConvolutionDescriptor_t *desc);       /* cudnnCreateConvolutionDescriptor */
    cudnnStatus_t (*destroy_conv)(cudnnConvolutionDescriptor_t desc);      /* cudnnDestroyConvolutionDescriptor */
    cudnnStatus_t (*set_conv_nd)(cudnnConvolutionDescriptor_t desc, int n, const int pad[], const int stride[],
                                 const int dilation[], cudnnConvolutionMode_t mode,
                                 cudnnDataType_t compute);                  /* cudnnSetConvolutionNdDescriptor */
    cudnnStatus_t (*set_group_count)(cudnnConvolutionDescriptor_t desc, int groups); /* cudnnSetConvolutionGroupCount */
    cudnnStatus_t (*set_math_type)(cudnnConvolutionDescriptor_t desc, cudnnMathType_t m); /* cudnnSetConvolutionMathType */
    cudnnStatus_t (*fwd_algos)(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                               cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t y, int requested,
                               int *returned,
                               cudnnConvolutionFwdAlgoPerf_t *perf); /* cudnnGetConvolutionForwardAlgorithm_v7 */
    cudnnStatus_t (*bwd_data_algos)(cudnnHandle_t h, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
                                    cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t dx, int requested,
                                    int *returned,
                                    cudnnConvolutionBwdDataAlgoPerf_t *perf); /* ...BackwardDataAlgorithm_v7 */
    cudnnStatus_t (*bwd_filter_algos)(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
                                      cudnnConvolutionDescriptor_t c, cudnnFilterDescriptor_t dw, int requested,
                                      int *returned,
                                      cudnnConvolutionBwdFilterAlgoPerf_t *perf); /* ...BackwardFilterAlgorithm_v7 */
    /* cudnnFindConvolution{Forward,BackwardData,BackwardFilter}Algorithm: the same
     * signatures; every algorithm run and timed, fastest first */
    cudnnStatus_t (*fwd_find)(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                              cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t y, int requested, int *returned,
                              cudnnConvolutionFwdAlgoPerf_t *perf);
    cudnnStatus_t (*bwd_data_find)(cudnnHandle_t h, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
                                   cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t dx, int requested,
                                   int *returned, cudnnConvolutionBwdDataAlgoPerf_t *perf);
    cudnnStatus_t (*bwd_filter_find)(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
                                     cudnnConvolutionDescriptor_t c, cudnnFilterDescriptor_t dw, int requested,
                                     int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *perf);
    cudnnStatus_t (*fwd_workspace)(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                                   cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t y,
                                   cudnnConvolutionFwdAlgo_t algo,
                                   size_t *bytes); /* cudnnGetConvolutionForwardWorkspaceSize */
    cudnnStatus_t (*bwd_data_workspace)(cudnnHandle_t h, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
                                        cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t dx,
                                        cudnnConvolutionBwdDataAlgo_t algo,
                                        size_t *bytes); /* cudnnGetConvolutionBackwardDataWorkspaceSize */
    cudnnStatus_t (*bwd_filter_workspace)(cudnnHandle_t h, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
                                          cudnnConvolutionDescriptor_t c, cudnnFilterDescriptor_t dw,
                                          cudnnConvolutionBwdFilterAlgo_t algo,
                                          size_t *bytes); /* cudnnGetConvolutionBackwardFilterWorkspaceSize */
    cudnnStatus_t (*forward)(cudnnHandle_t h, const void *alpha, cudnnTensorDescriptor_t xd, const void *x,
                             cudnnFilterDescriptor_t wd, const void *w, cudnnConvolutionDescriptor_t c,
                             cudnnConvolutionFwdAlgo_t algo, void *ws, size_t ws_bytes, const void *beta,
                             cudnnTensorDescriptor_t yd, void *y); /* cudnnConvolutionForward */
    cudnnStatus_t (*backward_data)(cudnnHandle_t h, const void *alpha, cudnnFilterDescriptor_t wd, const void *w,
                                   cudnnTensorDescriptor_t dyd, const void *dy, cudnnConvolutionDescriptor_t c,
                                   cudnnConvolutionBwdDataAlgo_t algo, void *ws, size_t ws_bytes, const void *beta,
                                   cudnnTensorDescriptor_t dxd, void *dx); /* cudnnConvolutionBackwardData */
    cudnnStatus_t (*backward_filter)(cudnnHandle_t h, const void *alpha, cudnnTensorDescriptor_t xd, const void *x,
                                     cudnnTensorDescriptor_t dyd, const void *dy, cudnnConvolutionDescriptor_t c,
                                     cudnnConvolutionBwdFilterAlgo_t algo, void *ws, size_t ws_bytes,
                                     const void *beta, cudnnFilterDescriptor_t dwd,
                                     void *dw); /* cudnnConvolutionBackwardFilter */
    cudnnStatus_t (*add_tensor)(cudnnHandle_t h, const void *alpha, cudnnTensorDescriptor_t ad, const void *a,
                                const void *beta, cudnnTensorDescriptor_t cd, void *c); /* cudnnAddTensor */
} graft_cudnn_api;

#ifdef GRAFT_CUDA_EMU
/* emu_cudnn.cpp: fills the table with the host implementations; sets the refusal stage
 * (see graft_cudnn_emu_refuse). */
void graft_emu_cudnn_fill(graft_cudnn_api *api);
void graft_emu_cudnn_refuse(int stage);
#endif

#ifdef __cplusplus
}
#endif
#endif /* GRAFT_CUDNN_INTERNAL */
#endif
