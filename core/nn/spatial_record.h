/* graft autograd: the recording wrappers of the spatial nn ops (conv, pooling,
 * interpolate, pad), defined in core/autograd/rules_spatial.c. Each front end in
 * core/nn starts with
 *
 *     if (GRAFT_AG_ACTIVE(input->autograd || ...)) return graft_ag_xxx(out, input, ...);
 *
 * and each wrapper has the contract of the front end it stands for.
 */
#ifndef GRAFT_NN_SPATIAL_RECORD_H
#define GRAFT_NN_SPATIAL_RECORD_H

#include "autograd/record.h"
#include "nn/conv.h"
#include "nn/pool.h"
#include "nn/resize.h"

graft_status graft_ag_conv(graft_tensor **out, graft_tensor *input, graft_tensor *weight, graft_tensor *bias,
                           const graft_conv_opts *o);
graft_status graft_ag_max_pool2d(graft_tensor **out, graft_tensor **indices, graft_tensor *input,
                                 const graft_pool_opts *o);
graft_status graft_ag_avg_pool2d(graft_tensor **out, graft_tensor *input, const graft_pool_opts *o);
graft_status graft_ag_adaptive_avg_pool2d(graft_tensor **out, graft_tensor *input, const int64_t osize[2]);
graft_status graft_ag_adaptive_max_pool2d(graft_tensor **out, graft_tensor **indices, graft_tensor *input,
                                          const int64_t osize[2]);
graft_status graft_ag_interpolate(graft_tensor **out, graft_tensor *input, const graft_interp_opts *o);
graft_status graft_ag_pad(graft_tensor **out, graft_tensor *input, const int64_t *pad, int npad, graft_pad_mode mode,
                          double value);

#endif
