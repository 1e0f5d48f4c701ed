/* graft autograd: recording and gradient rules of the spatial nn ops (conv, pooling,
 * interpolate, pad). Each rule hands the output gradient to the op's backward in
 * core/nn, asking only for the gradients whose inputs need one: a conv whose weight
 * is frozen runs no weight-gradient GEMM, one whose input needs no gradient (the first
 * layer, a frozen backbone's inputs) no col2im. Op arguments travel in the node's ia
 * (integers) and fa (scale factors); max pooling saves its indices.
 */
#include "autograd/internal.h"
#include "nn/spatial_record.h"

/* ---- conv ---- */

/* ia: 0 spatial, 1 transposed, 2-3 stride, 4-5 padding, 6-7 dilation, 8-9 output_padding,
 * 10 groups, 11 pad mode; saved: 0 input (for the weight gradient), 1 weight (for the
 * input gradient) */
static void sp_conv_pack(ag_node *n, const graft_conv_opts *o) {
    n->ia[0] = o->spatial;
    n->ia[1] = o->transposed;
    for (int d = 0; d < 2; d++) {
        n->ia[2 + d] = o->stride[d];
        n->ia[4 + d] = o->padding[d];
        n->ia[6 + d] = o->dilation[d];
        n->ia[8 + d] = o->output_padding[d];
    }
    n->ia[10] = o->groups;
    n->ia[11] = o->pad_mode;
}

static graft_conv_opts sp_conv_unpack(const ag_node *n) {
    graft_conv_opts o = graft_conv_defaults((int)n->ia[0], n->ia[1] != 0);
    for (int d = 0; d < 2; d++) {
        o.stride[d] = n->ia[2 + d];
        o.padding[d] = n->ia[4 + d];
        o.dilation[d] = n->ia[6 + d];
        o.output_padding[d] = n->ia[8 + d];
    }
    o.groups = n->ia[10];
    o.pad_mode = (graft_conv_pad_mode)n->ia[11];
    return o;
}

static graft_status sp_conv_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_conv_opts o = sp_conv_unpack(n);
    bool ni = ag_needs(n, 0), nw = ag_needs(n, 1), nb = ag_needs(n, 2);
    graft_tensor *x = nw ? ag_saved_get(n, 0) : NULL, *w = ni ? ag_saved_get(n, 1) : NULL;
    if ((nw && !x) || (ni && !w)) return GRAFT_OK; /* the error is in the pool */
    return graft_nn_conv_backward(ni ? &gin[0] : NULL, nw ? &gin[1] : NULL, nb ? &gin[2] : NULL, g, x, w,
                                  n->in[0].ndim, n->in[0].shape, n->in[1].shape, &o);
}

static const ag_kind k_conv = {"ConvolutionBackward0", sp_conv_apply};

graft_status graft_ag_conv(graft_tensor **out, graft_tensor *input, graft_tensor *weight, graft_tensor *bias,
                           const graft_conv_opts *o) {
    graft_status st;
    AG_NOGRAD(st = graft_nn_conv(out, input, weight, bias, o));
    graft_tensor *ins[3] = {input, weight, bias};
    if (st || !ag_should_record(*out, ins, 3)) return st;
    ag_node *n = ag_node_new(&k_conv, 3, ins);
    if (n) {
        sp_conv_pack(n, o);
        if (ag_needs(n, 1)) st = ag_save(n, 0, input, false);
        if (!st && ag_needs(n, 0)) st = ag_save(n, 1, weight, false);
    }
    return ag_finish(st, n, out, NULL);
}

/* ---- pooling ---- */

/* ia: 0-1 kernel, 2-3 stride, 4-5 padding, 6-7 dilation, 8 ceil_mode, 9 count_include_pad,
 * 10 divisor_override */
static void sp_pool_pack(ag_node *n, const graft_pool_opts *o) {
    for (int d = 0; d < 2; d++) {
        n->ia[0 + d] = o->kernel[d];
        n->ia[2 + d] = o->stride[d];
        n->ia[4 + d] = o->padding[d];
        n->ia[6 + d] = o->dilation[d];
    }
    n->ia[8] = o->ceil_mode;
    n->ia[9] = o->count_include_pad;
    n->ia[10] = o->divisor_override;
}

static graft_pool_opts sp_pool_unpack(const ag_node *n) {
    graft_pool_opts o = graft_pool_defaults(n->ia[0], n->ia[1]);
    for (int d = 0; d < 2; d++) {
        o.stride[d] = n->ia[2 + d];
        o.padding[d] = n->ia[4 + d];
        o.dilation[d] = n->ia[6 + d];
    }
    o.ceil_mode = n->ia[8] != 0;
    o.count_include_pad = n->ia[9] != 0;
    o.divisor_override = n->ia[10];
    return o;
}

/* saved: 0 the indices */
static graft_status sp_maxpool_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_tensor *ix = ag_saved_get(n, 0);
    if (!ix) return GRAFT_OK;
    if (n->ia[11]) return graft_nn_max_pool2d_backward(&gin[0], g, ix, n->in[0].ndim, n->in[0].shape, NULL,
                                                       "adaptive_max_pool2d");
    graft_pool_opts o = sp_pool_unpack(n);
    return graft_nn_max_pool2d_backward(&gin[0], g, ix, n->in[0].ndim, n->in[0].shape, &o, "max_pool2d");
}

static const ag_kind k_maxpool = {"MaxPool2DWithIndicesBackward0", sp_maxpool_apply};
static const ag_kind k_adaptive_max = {"AdaptiveMaxPool2DBackward0", sp_maxpool_apply};

/* Records a max pooling (plain or adaptive) whose forward gave out and ix (both +1). */
static graft_status sp_record_max(graft_tensor **out, graft_tensor **indices, graft_tensor *ix, graft_tensor *input,
                                  const ag_kind *k, const graft_pool_opts *o) {
    graft_status st = GRAFT_OK;
    graft_tensor *ins[1] = {input};
    if (ag_should_record(*out, ins, 1)) {
        ag_node *n = ag_node_new(k, 1, ins);
        if (n) {
            if (o) sp_pool_pack(n, o);
            n->ia[11] = o == NULL;
            st = ag_save(n, 0, ix, false);
        }
        st = ag_finish(st, n, out, NULL);
    }
    if (st || !indices) graft_tensor_release(ix);
    else *indices = ix;
    return st;
}

graft_status graft_ag_max_pool2d(graft_tensor **out, graft_tensor **indices, graft_tensor *input,
                                 const graft_pool_opts *o) {
    graft_status st;
    graft_tensor *ix = NULL;
    if (indices) *indices = NULL;
    AG_NOGRAD(st = graft_nn_max_pool2d(out, &ix, input, o));
    if (st) return st;
    return sp_record_max(out, indices, ix, input, &k_maxpool, o);
}

graft_status graft_ag_adaptive_max_pool2d(graft_tensor **out, graft_tensor **indices, graft_tensor *input,
                                          const int64_t osize[2]) {
    graft_status st;
    graft_tensor *ix = NULL;
    if (indices) *indices = NULL;
    AG_NOGRAD(st = graft_nn_adaptive_max_pool2d(out, &ix, input, osize));
    if (st) return st;
    return sp_record_max(out, indices, ix, input, &k_adaptive_max, NULL);
}

static graft_status sp_avgpool_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_pool_opts o = sp_pool_unpack(n);
    return graft_nn_avg_pool2d_backward(&gin[0], g, n->in[0].ndim, n->in[0].shape, &o);
}

static const ag_kind k_avgpool = {"AvgPool2DBackward0", sp_avgpool_apply};

graft_status graft_ag_avg_pool2d(graft_tensor **out, graft_tensor *input, const graft_pool_opts *o) {
    graft_status st;
    AG_NOGRAD(st = graft_nn_avg_pool2d(out, input, o));
    graft_tensor *ins[1] = {input};
    if (st || !ag_should_record(*out, ins, 1)) return st;
    ag_node *n = ag_node_new(&k_avgpool, 1, ins);
    if (n) sp_pool_pack(n, o);
    return ag_finish(st, n, out, NULL);
}

static graft_status sp_adaptive_avg_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    return graft_nn_adaptive_avg_pool2d_backward(&gin[0], g, n->in[0].ndim, n->in[0].shape);
}

static const ag_kind k_adaptive_avg = {"AdaptiveAvgPool2DBackward0", sp_adaptive_avg_apply};
static const ag_kind k_adaptive_mean = {"MeanBackward1", sp_adaptive_avg_apply}; /* PyTorch's 1x1 output */

graft_status graft_ag_adaptive_avg_pool2d(graft_tensor **out, graft_tensor *input, const int64_t osize[2]) {
    graft_status st;
    AG_NOGRAD(st = graft_nn_adaptive_avg_pool2d(out, input, osize));
    graft_tensor *ins[1] = {input};
    if (st || !ag_should_record(*out, ins, 1)) return st;
    ag_node *n = ag_node_new(osize[0] == 1 && osize[1] == 1 ? &k_adaptive_mean : &k_adaptive_avg, 1, ins);
    return ag_finish(st, n, out, NULL);
}

/* ---- interpolate ---- */

/* ia: 0 mode, 1-2 size, 3 align_corners, 4 recompute_scale_factor; fa: 0-1 scale_factor */
static graft_status sp_interp_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_interp_opts o = {.mode = (graft_interp_mode)n->ia[0], .size = {n->ia[1], n->ia[2]},
                           .scale_factor = {n->fa[0], n->fa[1]}, .align_corners = n->ia[3] != 0,
                           .recompute_scale_factor = n->ia[4] != 0};
    return graft_nn_interpolate_backward(&gin[0], g, n->in[0].ndim, n->in[0].shape, &o);
}

static const ag_kind k_nearest1d = {"UpsampleNearest1DBackward1", sp_interp_apply};
static const ag_kind k_nearest2d = {"UpsampleNearest2DBackward1", sp_interp_apply};
static const ag_kind k_linear1d = {"UpsampleLinear1DBackward1", sp_interp_apply};
static const ag_kind k_bilinear2d = {"UpsampleBilinear2DBackward1", sp_interp_apply};

graft_status graft_ag_interpolate(graft_tensor **out, graft_tensor *input, const graft_interp_opts *o) {
    graft_status st;
    AG_NOGRAD(st = graft_nn_interpolate(out, input, o));
    graft_tensor *ins[1] = {input};
    if (st || !ag_should_record(*out, ins, 1)) return st;
    const ag_kind *k = o->mode == GRAFT_INTERP_LINEAR     ? &k_linear1d
                       : o->mode == GRAFT_INTERP_BILINEAR ? &k_bilinear2d
                       : input->ndim == 3                 ? &k_nearest1d
                                                          : &k_nearest2d;
    ag_node *n = ag_node_new(k, 1, ins);
    if (n) {
        n->ia[0] = o->mode;
        n->ia[1] = o->size[0];
        n->ia[2] = o->size[1];
        n->ia[3] = o->align_corners;
        n->ia[4] = o->recompute_scale_factor;
        n->fa[0] = o->scale_factor[0];
        n->fa[1] = o->scale_factor[1];
    }
    return ag_finish(st, n, out, NULL);
}

/* ---- pad ---- */

/* ia: 0 mode, 1 npad, 2.. the padding list */
static graft_status sp_pad_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    return graft_nn_pad_backward(&gin[0], g, n->in[0].ndim, n->in[0].shape, &n->ia[2], (int)n->ia[1],
                                 (graft_pad_mode)n->ia[0]);
}

static const ag_kind k_pad_constant = {"ConstantPadNdBackward0", sp_pad_apply};
static const ag_kind k_pad_circular = {"CopySlices", sp_pad_apply};
static const ag_kind k_pad_reflect[3] = {{"ReflectionPad1DBackward0", sp_pad_apply},
                                         {"ReflectionPad2DBackward0", sp_pad_apply},
                                         {"ReflectionPad3DBackward0", sp_pad_apply}};
static const ag_kind k_pad_replicate[3] = {{"ReplicationPad1DBackward0", sp_pad_apply},
                                           {"ReplicationPad2DBackward0", sp_pad_apply},
                                           {"ReplicationPad3DBackward0", sp_pad_apply}};

graft_status graft_ag_pad(graft_tensor **out, graft_tensor *input, const int64_t *pad, int npad, graft_pad_mode mode,
                          double value) {
    graft_status st;
    AG_NOGRAD(st = graft_nn_pad(out, input, pad, npad, mode, value));
    graft_tensor *ins[1] = {input};
    if (st || !ag_should_record(*out, ins, 1)) return st;
    if (npad > 2 * GRAFT_MAX_DIMS) npad = 2 * GRAFT_MAX_DIMS; /* the forward checked npad / 2 <= ndim */
    int k = npad / 2 >= 1 && npad / 2 <= 3 ? npad / 2 - 1 : 0;
    const ag_kind *kind = mode == GRAFT_PAD_REFLECT     ? &k_pad_reflect[k]
                          : mode == GRAFT_PAD_REPLICATE ? &k_pad_replicate[k]
                          : mode == GRAFT_PAD_CIRCULAR  ? &k_pad_circular
                                                        : &k_pad_constant;
    ag_node *n = ag_node_new(kind, 1, ins);
    if (n) {
        n->ia[0] = mode;
        n->ia[1] = npad;
        for (int i = 0; i < npad; i++) n->ia[2 + i] = pad[i];
    }
    return ag_finish(st, n, out, NULL);
}
