/* graft CPU convolution kernels: the engine behind core/nn/conv.c (internal header).
 *
 * One geometry describes a convolution between a "big" side (the conv input, or the
 * output of a transposed conv) and a "small" side (the conv output, or the input of a
 * transposed conv), with a weight [O, C/G, kh, kw]. Three primitives cover conv2d,
 * conv1d and conv_transpose2d with all their gradients:
 *
 *     small = conv(big, W)        im2col + GEMM    conv forward, conv_transpose dinput
 *     big   = conv^T(small, W)    GEMM + col2im    conv dinput, conv_transpose forward
 *     dW    = sum small x col(big)^T               both weight gradients
 *
 * Columns are processed in blocks whose im2col buffer stays near the L2 cache size;
 * blocks are spread over the OpenMP threads (BLAS single-threaded inside each), so no
 * per-call workspace grows with the batch. Operands are contiguous and of one dtype,
 * float32 or float64.
 */
#ifndef GRAFT_CONV_CPU_H
#define GRAFT_CONV_CPU_H

#include "tensor/tensor.h"

typedef struct {
    graft_dtype dtype;          /* GRAFT_F32 or GRAFT_F64 */
    int64_t N, G;               /* batch, groups */
    int64_t C, H, W;            /* big side: [N, C, H, W] */
    int64_t O, OH, OW;          /* small side: [N, O, OH, OW] */
    int64_t kh, kw;             /* kernel */
    int64_t sh, sw;             /* stride */
    int64_t ph, pw;             /* padding before the first row / column */
    int64_t dh, dw;             /* dilation */
} graft_conv_geom;

/* small <- conv(big, w) (+ bias[O] when bias is not NULL). */
graft_status graft_cpu_conv_small(const graft_conv_geom *g, const void *big, const void *w, const void *bias,
                                  void *small, const char *op);
/* big <- conv^T(small, w) (+ bias[C] when bias is not NULL); every element written. */
graft_status graft_cpu_conv_big(const graft_conv_geom *g, const void *small, const void *w, const void *bias,
                                void *big, const char *op);
/* dw [O, C/G, kh, kw] <- sum over the batch of small x im2col(big)^T. */
graft_status graft_cpu_conv_weight(const graft_conv_geom *g, const void *small, const void *big, void *dw,
                                   const char *op);
/* Both of a convolution's gradients from its output gradient (small): dbig (when not
 * NULL) as graft_cpu_conv_big without bias, dw (when not NULL) as graft_cpu_conv_weight
 * of big. One pass where the kernels share work (Winograd), else the two calls. */
graft_status graft_cpu_conv_backward(const graft_conv_geom *g, const void *small, const void *big, const void *w,
                                     void *dbig, void *dw, const char *op);
/* Winograd F(2x2, 3x3) versions of the three primitives (conv_winograd.c), for float32
 * 3x3 convolutions with stride 1 and dilation 1 and at least 8 channels per group on
 * each side, when the CPU has AVX-512: graft_cpu_winograd_ok says whether they apply.
 * The three primitives above dispatch to them by themselves. */
bool graft_cpu_winograd_ok(const graft_conv_geom *g);
graft_status graft_cpu_winograd_small(const graft_conv_geom *g, const void *big, const void *w, const void *bias,
                                      void *small, const char *op);
graft_status graft_cpu_winograd_big(const graft_conv_geom *g, const void *small, const void *w, const void *bias,
                                    void *big, const char *op);
graft_status graft_cpu_winograd_weight(const graft_conv_geom *g, const void *small, const void *big, void *dw,
                                       const char *op);
graft_status graft_cpu_winograd_backward(const graft_conv_geom *g, const void *small, const void *big, const void *w,
                                         const void *bias, void *dbig, void *dw, const char *op);

/* db[c] <- sum over n and p of x[n, c, p] (x contiguous [N, C, P]). */
void graft_cpu_conv_bias_grad(graft_dtype dt, int64_t N, int64_t C, int64_t P, const void *x, void *db);

#endif
