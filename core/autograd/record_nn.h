/* graft autograd: the recording wrappers of the functional nn ops (core/nn), defined in
 * rules_nn.c. A front end in core/nn starts with
 *
 *     if (GRAFT_AG_ACTIVE(x->autograd)) return graft_ag_nn_softmax(out, x, dim, false);
 *
 * and each wrapper has the contract of the front end it stands for: it runs the fused
 * forward kernel (which keeps the statistics backward needs) and records one node
 * whose rule is a fused backward kernel computing only the gradients that are needed.
 * Composite ops (linear, bilinear, attention) record through the ops they are made of.
 */
#ifndef GRAFT_AUTOGRAD_RECORD_NN_H
#define GRAFT_AUTOGRAD_RECORD_NN_H

#include "autograd/record.h"
#include "nn/kernels.h"

graft_status graft_ag_nn_softmax(graft_tensor **out, graft_tensor *x, int dim, bool log);
graft_status graft_ag_nn_activation(graft_tensor **out, graft_nn_act act, graft_tensor *x, double param);
graft_status graft_ag_nn_dropout(graft_tensor **out, graft_tensor *x, double p);
graft_status graft_ag_nn_batch_norm(graft_tensor **out, graft_tensor *x, graft_tensor *running_mean,
                                    graft_tensor *running_var, graft_tensor *weight, graft_tensor *bias,
                                    graft_tensor *num_batches_tracked, bool training, double momentum, double eps);
graft_status graft_ag_nn_layer_norm(graft_tensor **out, graft_tensor *x, int nshape, const int64_t *normalized_shape,
                                    graft_tensor *weight, graft_tensor *bias, double eps);
graft_status graft_ag_nn_group_norm(graft_tensor **out, graft_tensor *x, int64_t num_groups, graft_tensor *weight,
                                    graft_tensor *bias, double eps);
graft_status graft_ag_nn_embedding(graft_tensor **out, graft_tensor *index, graft_tensor *weight,
                                   int64_t padding_idx);
/* cross_entropy and nll_loss, after graft_nn_class_loss_prepare's checks */
graft_status graft_ag_nn_class_loss(graft_tensor **out, const graft_nn_class_loss *a, graft_tensor *x,
                                    graft_tensor *target, graft_tensor *weight);
graft_status graft_ag_nn_pointwise_loss(graft_tensor **out, graft_nn_loss kind, graft_tensor *x, graft_tensor *y,
                                        graft_tensor *weight, graft_tensor *pos_weight, graft_reduction reduction,
                                        double beta);

#endif
