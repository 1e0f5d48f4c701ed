/* graft nn: the functional neural-network ops that are not spatial (graft.F): linear
 * layers, normalisation, embedding, dropout, activations, softmax, losses and
 * attention, with PyTorch 1.13's semantics and argument names.
 *
 * Every function hands out +1 reference to a fresh contiguous output; arguments are
 * borrowed and NULL stands for an absent optional tensor. Each one is differentiable:
 * when an input requires grad (and grad mode is on) the front end records a node with
 * a fused backward kernel that computes only the gradients its inputs need. Dims are
 * 0-based here; index values inside tensors (class labels, embedding indices) are
 * 0-based as in PyTorch.
 *
 *     graft_tensor *logits, *loss;
 *     graft_nn_linear(&logits, x, w, b);                                    // [N, 10]
 *     graft_nn_cross_entropy(&loss, logits, labels, NULL, -100, GRAFT_REDUCTION_MEAN, 0);
 *     graft_backward(loss, NULL, false);
 *
 * Fused kernels take float32 and float64 inputs (other dtypes are an error naming the
 * op); large inputs run on the OpenMP pool.
 */
#ifndef GRAFT_NN_FUNCTIONAL_H
#define GRAFT_NN_FUNCTIONAL_H

#include "tensor/tensor.h"

/* ---- linear maps ---- */
/* y = x w^T + b: x [*, in], w [out, in], b [out] or NULL. */
graft_status graft_nn_linear(graft_tensor **out, graft_tensor *x, graft_tensor *w, graft_tensor *b);
/* y[., o] = x1^T W[o] x2 + b[o]: x1 [*, in1], x2 [*, in2], w [out, in1, in2], b [out]. */
graft_status graft_nn_bilinear(graft_tensor **out, graft_tensor *x1, graft_tensor *x2, graft_tensor *w,
                               graft_tensor *b);

/* ---- normalisation ---- */
/* momentum for a cumulative average (PyTorch's momentum = None): 1 / num_batches_tracked */
#define GRAFT_NN_CUMULATIVE (-1.0)
/* x [N, C, *]. Training: normalise with the batch mean and biased variance; when the
 * running buffers are given, update them in place (never recorded): running_mean =
 * (1 - f) running_mean + f mean, running_var likewise with the unbiased variance,
 * f = momentum, or 1 / num_batches_tracked after incrementing it when momentum is
 * GRAFT_NN_CUMULATIVE (num_batches_tracked, an int64 scalar tensor, is incremented
 * whenever it is given in training). Eval: normalise with the running statistics
 * (which must be given). weight, bias [C] or NULL. */
graft_status graft_nn_batch_norm(graft_tensor **out, graft_tensor *x, graft_tensor *running_mean,
                                 graft_tensor *running_var, graft_tensor *weight, graft_tensor *bias,
                                 graft_tensor *num_batches_tracked, bool training, double momentum, double eps);
/* Normalises over the last nshape dims, which must equal normalized_shape; weight and
 * bias have that shape (or are NULL). */
graft_status graft_nn_layer_norm(graft_tensor **out, graft_tensor *x, int nshape, const int64_t *normalized_shape,
                                 graft_tensor *weight, graft_tensor *bias, double eps);
/* x [N, C, *] normalised over each of num_groups groups of C / num_groups channels;
 * weight, bias [C] or NULL. */
graft_status graft_nn_group_norm(graft_tensor **out, graft_tensor *x, int64_t num_groups, graft_tensor *weight,
                                 graft_tensor *bias, double eps);

/* ---- lookup, masks, encodings ---- */
/* out[i..., :] = weight[index[i...], :]; index any integer dtype, weight [num, dim].
 * padding_idx (0-based, or -1 for none) gets no gradient. */
graft_status graft_nn_embedding(graft_tensor **out, graft_tensor *index, graft_tensor *weight, int64_t padding_idx);
/* int64 [*, num_classes]; num_classes -1 means max(index) + 1. index must be int64. */
graft_status graft_nn_one_hot(graft_tensor **out, graft_tensor *index, int64_t num_classes);
/* Zeroes each element with probability p and scales the others by 1 / (1 - p), drawing
 * from graft's generator (graft_rng); without training, the input itself (retained). */
graft_status graft_nn_dropout(graft_tensor **out, graft_tensor *x, double p, bool training);

/* ---- activations (float32 / float64) ---- */
typedef enum {
    GRAFT_NN_RELU,         /* max(x, 0), NaN kept; backward from the output */
    GRAFT_NN_LEAKY_RELU,   /* param: negative_slope */
    GRAFT_NN_ELU,          /* param: alpha */
    GRAFT_NN_GELU,         /* exact: x Phi(x) with erf */
    GRAFT_NN_GELU_TANH,    /* approximate = "tanh" */
    GRAFT_NN_SILU          /* x sigmoid(x) */
} graft_nn_act;
graft_status graft_nn_activation(graft_tensor **out, graft_nn_act act, graft_tensor *x, double param);
/* softmax / log_softmax along dim (numerically stable). dtype >= 0 converts the input
 * first, as PyTorch's dtype argument. */
graft_status graft_nn_softmax(graft_tensor **out, graft_tensor *x, int dim, int dtype);
graft_status graft_nn_log_softmax(graft_tensor **out, graft_tensor *x, int dim, int dtype);

/* ---- losses ---- */
typedef enum { GRAFT_REDUCTION_NONE, GRAFT_REDUCTION_MEAN, GRAFT_REDUCTION_SUM } graft_reduction;
/* "none", "mean", "sum"; -1 if unknown. */
int graft_reduction_from_name(const char *name);

/* x: logits [N, C, d...] or [C]. target: 0-based class indices [N, d...] (or a 0-dim
 * one), any integer dtype, or class probabilities of x's shape (floating). weight [C]
 * or NULL. Mean with indices divides by the summed weight of the targets that are not
 * ignore_index (PyTorch's rule); with probabilities, by the number of rows. */
graft_status graft_nn_cross_entropy(graft_tensor **out, graft_tensor *x, graft_tensor *target, graft_tensor *weight,
                                    int64_t ignore_index, graft_reduction reduction, double label_smoothing);
/* x: log-probabilities [N, C, d...] or [C]; target: class indices. */
graft_status graft_nn_nll_loss(graft_tensor **out, graft_tensor *x, graft_tensor *target, graft_tensor *weight,
                               int64_t ignore_index, graft_reduction reduction);

typedef enum {
    GRAFT_NN_MSE,        /* (x - y)^2 */
    GRAFT_NN_L1,         /* |x - y| */
    GRAFT_NN_SMOOTH_L1,  /* 0.5 d^2 / beta if |d| < beta, else |d| - 0.5 beta */
    GRAFT_NN_BCE,        /* -w (y log x + (1 - y) log(1 - x)), logs clamped at -100 */
    GRAFT_NN_BCE_LOGITS  /* -w (pw y log s(x) + (1 - y) log(1 - s(x))), computed stably */
} graft_nn_loss;
/* x and y broadcast (MSE, L1, smooth L1) or have one shape (BCE); weight and
 * pos_weight (BCE_LOGITS only) broadcast to x's shape, NULL when absent. beta: smooth
 * L1 only. */
graft_status graft_nn_pointwise_loss(graft_tensor **out, graft_nn_loss kind, graft_tensor *x, graft_tensor *y,
                                     graft_tensor *weight, graft_tensor *pos_weight, graft_reduction reduction,
                                     double beta);

/* ---- attention ---- */
/* softmax(q k^T / sqrt(E) + mask) v with q [*, L, E], k [*, S, E], v [*, S, Ev]. A bool
 * attn_mask marks the positions that take part (false: masked out); a float one is
 * added to the scores; is_causal masks j > i (and excludes attn_mask). dropout_p > 0
 * drops attention weights (graft's generator). Built from matmul and softmax. */
graft_status graft_nn_scaled_dot_product_attention(graft_tensor **out, graft_tensor *q, graft_tensor *k,
                                                   graft_tensor *v, graft_tensor *attn_mask, double dropout_p,
                                                   bool is_causal);

#endif
