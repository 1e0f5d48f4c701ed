/* graft nn: 2-D pooling (max_pool2d with indices, avg_pool2d, adaptive_avg_pool2d,
 * adaptive_max_pool2d) with PyTorch 1.13's output sizes, NaN handling and indices
 * (int64, 0-based, flat within each H x W plane), and their gradients.
 *
 *     graft_pool_opts o = graft_pool_defaults(2, 2);    // kernel 2x2, stride = kernel
 *     graft_tensor *y, *idx;
 *     graft_nn_max_pool2d(&y, &idx, x, &o);             // idx may be NULL: not wanted
 *
 * Inputs are [N, C, H, W] or unbatched [C, H, W], floating point, any layout. Direct
 * loops, parallel over the N*C planes. Outputs are +1 references, fresh, contiguous.
 */
#ifndef GRAFT_NN_POOL_H
#define GRAFT_NN_POOL_H

#include "tensor/tensor.h"

typedef struct {
    int64_t kernel[2], stride[2], padding[2], dilation[2];
    bool ceil_mode;
    bool count_include_pad;         /* avg_pool2d (default true) */
    int64_t divisor_override;       /* avg_pool2d; 0 = none */
} graft_pool_opts;

/* kernel kh x kw, stride = kernel, no padding, dilation 1, count_include_pad. */
graft_pool_opts graft_pool_defaults(int64_t kh, int64_t kw);

/* +1 out and, when indices is not NULL, +1 indices (int64, out's shape). */
graft_status graft_nn_max_pool2d(graft_tensor **out, graft_tensor **indices, graft_tensor *input,
                                 const graft_pool_opts *o);
graft_status graft_nn_avg_pool2d(graft_tensor **out, graft_tensor *input, const graft_pool_opts *o);
/* osize: the output's H and W (positive). */
graft_status graft_nn_adaptive_avg_pool2d(graft_tensor **out, graft_tensor *input, const int64_t osize[2]);
graft_status graft_nn_adaptive_max_pool2d(graft_tensor **out, graft_tensor **indices, graft_tensor *input,
                                          const int64_t osize[2]);

/* ---- gradients (never record) ---- */
/* Scatters grad to the positions in indices (max_pool2d, with its options o, and
 * adaptive_max_pool2d, o NULL). indices must be the forward's. */
graft_status graft_nn_max_pool2d_backward(graft_tensor **gin, graft_tensor *grad, graft_tensor *indices, int in_ndim,
                                          const int64_t *in_shape, const graft_pool_opts *o, const char *op);
graft_status graft_nn_avg_pool2d_backward(graft_tensor **gin, graft_tensor *grad, int in_ndim, const int64_t *in_shape,
                                          const graft_pool_opts *o);
graft_status graft_nn_adaptive_avg_pool2d_backward(graft_tensor **gin, graft_tensor *grad, int in_ndim,
                                                   const int64_t *in_shape);

#endif
