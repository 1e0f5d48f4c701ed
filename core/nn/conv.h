/* graft nn: convolutions (conv1d, conv2d, conv_transpose1d, conv_transpose2d) with
 * PyTorch 1.13's arguments, checks and output shapes, and their gradients.
 *
 *     graft_conv_opts o = graft_conv_defaults(2, false);
 *     o.stride[0] = o.stride[1] = 2;
 *     graft_tensor *y;   // x [8, 3, 32, 32], w [16, 3, 3, 3], b [16] (b may be NULL)
 *     if (graft_nn_conv(&y, x, w, b, &o)) fprintf(stderr, "%s\n", graft_last_error());
 *
 * Inputs are batched [N, C, (H,) W] or unbatched [C, (H,) W]; any layout (copied to
 * contiguous when needed); float32/float64 (float16/bfloat16 computed in float32), on
 * the CPU or on one CUDA device (cuDNN when enabled and loaded, core/cuda/cudnn.c; else
 * or when cuDNN declines the shape, im2col + cuBLAS, core/cuda/conv.cu).
 * Results are +1 references to fresh contiguous tensors. The kernels live in
 * core/cpu/conv_cpu.c; the autograd rule in core/autograd/rules_spatial.c.
 */
#ifndef GRAFT_NN_CONV_H
#define GRAFT_NN_CONV_H

#include "tensor/tensor.h"

typedef enum { GRAFT_CONV_PAD_EXPLICIT = 0, GRAFT_CONV_PAD_SAME, GRAFT_CONV_PAD_VALID } graft_conv_pad_mode;

typedef struct {
    int spatial;                    /* 1 (conv1d) or 2 (conv2d): dims after N and C */
    bool transposed;                /* conv_transpose */
    int64_t stride[2];              /* per spatial dim ([0] only for 1-D) */
    int64_t padding[2];             /* explicit padding (pad_mode EXPLICIT) */
    int64_t dilation[2];
    int64_t output_padding[2];      /* transposed only */
    int64_t groups;
    graft_conv_pad_mode pad_mode;   /* "same" / "valid" strings of PyTorch */
} graft_conv_opts;

/* Stride 1, padding 0, dilation 1, groups 1. */
graft_conv_opts graft_conv_defaults(int spatial, bool transposed);
/* "conv2d", "conv_transpose1d", ...: static. */
const char *graft_conv_name(const graft_conv_opts *o);

/* PyTorch's torch.backends.cudnn.allow_tf32: float32 convolutions on CUDA may use
 * TF32 tensor cores. Off by default (PyTorch: on), so results match the CPU's. */
void graft_conv_set_allow_tf32(bool on);
bool graft_conv_allow_tf32(void);
/* torch.backends.cudnn.enabled: CUDA convolutions go through cuDNN when it loads (on by
 * default, as PyTorch); off: im2col + cuBLAS always. */
void graft_conv_set_cudnn_enabled(bool on);
bool graft_conv_cudnn_enabled(void);
/* torch.backends.cudnn.deterministic: only algorithms cuDNN reports deterministic (off by
 * default, as PyTorch; with none for a shape, im2col runs it). */
void graft_conv_set_cudnn_deterministic(bool on);
bool graft_conv_cudnn_deterministic(void);
/* torch.backends.cudnn.benchmark: each new shape times every cuDNN algorithm once and
 * keeps the fastest (off by default, as PyTorch: cuDNN's heuristic chooses). */
void graft_conv_set_cudnn_benchmark(bool on);
bool graft_conv_cudnn_benchmark(void);

/* +1: the convolution. bias may be NULL. Records for autograd when an input requires
 * grad (ConvolutionBackward0). */
graft_status graft_nn_conv(graft_tensor **out, graft_tensor *input, graft_tensor *weight, graft_tensor *bias,
                           const graft_conv_opts *o);

/* Gradients of a convolution given grad (the gradient of its output). Each of
 * ginput, gweight, gbias may be NULL (that gradient is skipped: a frozen weight costs
 * no GEMM); input is needed only for gweight, weight only for ginput. in_shape and
 * w_shape give the input's and weight's shapes. Never records. */
graft_status graft_nn_conv_backward(graft_tensor **ginput, graft_tensor **gweight, graft_tensor **gbias,
                                    graft_tensor *grad, graft_tensor *input, graft_tensor *weight, int in_ndim,
                                    const int64_t *in_shape, const int64_t *w_shape, const graft_conv_opts *o);

#endif
