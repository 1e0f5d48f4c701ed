/* graft nn: resizing and padding: interpolate (nearest, linear, bilinear, with
 * align_corners and scale factors as PyTorch 1.13 computes them) and pad (constant,
 * reflect, replicate, circular, with PyTorch's pad-list order: last dim first), and
 * their gradients.
 *
 *     graft_interp_opts io = {.mode = GRAFT_INTERP_BILINEAR, .scale_factor = {2, 2}};
 *     graft_nn_interpolate(&y, x, &io);             // x [N, C, H, W] -> [N, C, 2H, 2W]
 *     int64_t pads[4] = {1, 1, 2, 2};               // W by 1 each side, H by 2
 *     graft_nn_pad(&z, x, pads, 4, GRAFT_PAD_REFLECT, 0);
 *
 * Results are +1 references to fresh contiguous tensors; inputs may have any layout.
 */
#ifndef GRAFT_NN_RESIZE_H
#define GRAFT_NN_RESIZE_H

#include "tensor/tensor.h"

/* ---- interpolate ---- */
typedef enum {
    GRAFT_INTERP_NEAREST = 0,   /* 3-D or 4-D input */
    GRAFT_INTERP_LINEAR,        /* 3-D input */
    GRAFT_INTERP_BILINEAR       /* 4-D input */
} graft_interp_mode;

typedef struct {
    graft_interp_mode mode;
    int64_t size[2];            /* output size per spatial dim ([0] only for 3-D); 0 = use scale_factor */
    double scale_factor[2];     /* used when size is 0 */
    bool align_corners;         /* linear modes */
    bool recompute_scale_factor;/* map coordinates by the sizes' ratio, not by 1/scale_factor */
} graft_interp_opts;

const char *graft_interp_name(graft_interp_mode m);   /* "nearest", "linear", "bilinear" */
graft_status graft_nn_interpolate(graft_tensor **out, graft_tensor *input, const graft_interp_opts *o);
/* The gradient of interpolate (never records). */
graft_status graft_nn_interpolate_backward(graft_tensor **gin, graft_tensor *grad, int in_ndim, const int64_t *in_shape,
                                           const graft_interp_opts *o);

/* ---- pad ---- */
typedef enum { GRAFT_PAD_CONSTANT = 0, GRAFT_PAD_REFLECT, GRAFT_PAD_REPLICATE, GRAFT_PAD_CIRCULAR } graft_pad_mode;

const char *graft_pad_mode_name(graft_pad_mode m);   /* "constant", ... */
/* pad holds npad numbers: (before, after) for the last dim, then the one before, ...
 * Constant mode takes any dtype, negative padding (cropping) and value; the other
 * modes pad the last 1, 2 or 3 dims of a 2-D to 5-D input. */
graft_status graft_nn_pad(graft_tensor **out, graft_tensor *input, const int64_t *pad, int npad, graft_pad_mode mode,
                          double value);
graft_status graft_nn_pad_backward(graft_tensor **gin, graft_tensor *grad, int in_ndim, const int64_t *in_shape,
                                   const int64_t *pad, int npad, graft_pad_mode mode);

#endif
