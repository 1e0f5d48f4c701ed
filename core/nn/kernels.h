/* graft nn internals: the fused forward kernels with the statistics they keep for
 * backward, and the fused backward kernels, shared by the core/nn sources (the front ends) and
 * core/autograd/rules_nn.c (the recording wrappers and rules). Not a public header.
 *
 * None of these record autograd history. Outputs are +1 references; an output pointer
 * passed as NULL is not computed (a backward skips the gradients nobody needs). Inputs
 * may have any layout unless a comment says otherwise.
 */
#ifndef GRAFT_NN_KERNELS_H
#define GRAFT_NN_KERNELS_H

#include "nn/functional.h"

/* Errors unless t is float32 or float64 ("op: expected a float32 or float64 input, got int64"). */
graft_status graft_nn_check_float(const graft_tensor *t, const char *op, const char *what);
/* +1: t as a contiguous tensor of dtype d (t itself, retained, when it already is);
 * NULL in gives NULL out. */
graft_status graft_nn_contig_as(graft_tensor **out, graft_tensor *t, graft_dtype d);
/* float16 / bfloat16 inputs of the kernels that take float32/float64 (softmax, the
 * norms, the losses), outside autocast: as PyTorch's 16-bit kernels accumulate in
 * float, the op runs on float32 copies and its result is rounded back once.
 *   graft_nn_half_up: each 16-bit entry of ts[0..n) (NULLs skipped) is replaced by a
 *     float32 copy, recorded for autograd and held in held[] (zeroed by the caller);
 *   graft_nn_half_release: drops them;
 *   graft_nn_half_back: *out <- r as dtype d (recorded), releasing r. */
static inline bool graft_nn_is_half(const graft_tensor *t) {
    return t && (t->dtype == GRAFT_F16 || t->dtype == GRAFT_BF16);
}
graft_status graft_nn_half_up(graft_tensor **ts, int n, graft_tensor **held);
void graft_nn_half_release(graft_tensor **held, int n);
graft_status graft_nn_half_back(graft_tensor **out, graft_tensor *r, graft_dtype d);
/* Shape text for messages, as graft_shape_str. */
#define GRAFT_NN_SHAPE_BUF (GRAFT_MAX_DIMS * 24 + 3)
/* GRAFT_EDEVICE unless the n tensors of ts (NULLs skipped) share one device, worded as
 * PyTorch: "cross_entropy: expected all tensors to be on the same device, but found
 * cuda:0 and cpu". */
static inline graft_status graft_nn_same_device(const char *op, int n, graft_tensor *const *ts) {
    const graft_tensor *first = NULL;
    for (int i = 0; i < n; i++) {
        if (!ts[i]) continue;
        if (!first) {
            first = ts[i];
        } else if (!graft_device_eq(graft_tensor_device(first), graft_tensor_device(ts[i]))) {
            char b1[16], b2[16];
            return graft_error(GRAFT_EDEVICE, "%s: expected all tensors to be on the same device, but found %s and %s", op,
                               graft_device_str(graft_tensor_device(first), b1),
                               graft_device_str(graft_tensor_device(ts[i]), b2));
        }
    }
    return GRAFT_OK;
}

/* ---- softmax (activation.c) ---- */
graft_status graft_nn_softmax_forward(graft_tensor **y, graft_tensor *x, int dim, bool log);
/* softmax: dx = y (g - sum(g y)); log_softmax: dx = g - exp(y) sum(g). */
graft_status graft_nn_softmax_backward(graft_tensor **dx, graft_tensor *g, graft_tensor *y, int dim, bool log);

/* ---- activations (activation.c) ---- */
graft_status graft_nn_activation_forward(graft_tensor **y, graft_nn_act act, graft_tensor *x, double param);
/* dx = g * act'(x) */
graft_status graft_nn_activation_backward(graft_tensor **dx, graft_nn_act act, graft_tensor *g, graft_tensor *x,
                                          double param);

/* ---- dropout (activation.c) ---- */
/* y = x * mask / (1 - p); *mask: uint8 of x's shape (1 = kept). */
graft_status graft_nn_dropout_forward(graft_tensor **y, graft_tensor **mask, graft_tensor *x, double p);
/* dx = g * mask * scale */
graft_status graft_nn_dropout_backward(graft_tensor **dx, graft_tensor *g, graft_tensor *mask, double scale);

/* ---- normalisation (norm.c) ---- */
/* batch_norm with *save_mean and *save_invstd [C] (x's dtype): the statistics used. */
graft_status graft_nn_batch_norm_forward(graft_tensor **y, graft_tensor **save_mean, graft_tensor **save_invstd,
                                         graft_tensor *x, graft_tensor *running_mean, graft_tensor *running_var,
                                         graft_tensor *weight, graft_tensor *bias,
                                         graft_tensor *num_batches_tracked, bool training, double momentum,
                                         double eps);
/* training: the statistics depend on x (full formula); else they are constants. */
graft_status graft_nn_batch_norm_backward(graft_tensor **dx, graft_tensor **dw, graft_tensor **db, graft_tensor *g,
                                          graft_tensor *x, graft_tensor *weight, graft_tensor *mean,
                                          graft_tensor *invstd, bool training);
/* layer_norm over the trailing D elements of each row; *mean, *rstd [rows]. */
graft_status graft_nn_layer_norm_forward(graft_tensor **y, graft_tensor **mean, graft_tensor **rstd, graft_tensor *x,
                                         int nshape, const int64_t *normalized_shape, graft_tensor *weight,
                                         graft_tensor *bias, double eps);
graft_status graft_nn_layer_norm_backward(graft_tensor **dx, graft_tensor **dw, graft_tensor **db, graft_tensor *g,
                                          graft_tensor *x, int nshape, graft_tensor *weight, graft_tensor *mean,
                                          graft_tensor *rstd);
/* group_norm; *mean, *rstd [N * G]. */
graft_status graft_nn_group_norm_forward(graft_tensor **y, graft_tensor **mean, graft_tensor **rstd, graft_tensor *x,
                                         int64_t groups, graft_tensor *weight, graft_tensor *bias, double eps);
graft_status graft_nn_group_norm_backward(graft_tensor **dx, graft_tensor **dw, graft_tensor **db, graft_tensor *g,
                                          graft_tensor *x, int64_t groups, graft_tensor *weight, graft_tensor *mean,
                                          graft_tensor *rstd);

/* ---- embedding (functional.c) ---- */
/* the checks and the row copies, never recorded */
graft_status graft_nn_embedding_forward(graft_tensor **out, graft_tensor *index, graft_tensor *weight,
                                        int64_t padding_idx);
/* dW [num, dim] (zeros, then each row of g added to its index's row; padding_idx skipped) */
graft_status graft_nn_embedding_backward(graft_tensor **dw, graft_tensor *g, graft_tensor *index, int64_t num,
                                         int64_t padding_idx);

/* ---- class losses (loss.c) ---- */
/* What the cross-entropy family was asked for; shared by forward and backward. */
typedef struct {
    bool logits;             /* cross_entropy (softmax of x) or nll_loss (x are log-probs) */
    bool probs;              /* target holds class probabilities */
    int64_t ignore_index;
    graft_reduction reduction;
    double label_smoothing;
    const char *op;          /* "cross_entropy" or "nll_loss", for messages */
} graft_nn_class_loss;
/* *lse [rows] (x's dtype; logits only; NULL to skip), *total_weight: the mean's
 * divisor (summed target weights, or rows for probabilities). x is contiguous on the
 * backward side: pass the forward's x. weight already has x's dtype. */
graft_status graft_nn_class_loss_forward(graft_tensor **out, graft_tensor **lse, double *total_weight,
                                         const graft_nn_class_loss *a, graft_tensor *x, graft_tensor *target,
                                         graft_tensor *weight);
/* dx (x's shape) and, for probabilities, dtarget. */
graft_status graft_nn_class_loss_backward(graft_tensor **dx, graft_tensor **dtarget, const graft_nn_class_loss *a,
                                          graft_tensor *g, graft_tensor *x, graft_tensor *target, graft_tensor *weight,
                                          graft_tensor *lse, double total_weight);
/* Checks shapes and dtypes and converts: *xc contiguous x, *tc target (int64
 * contiguous, or x's dtype for probabilities), *wc weight in x's dtype (or NULL). */
graft_status graft_nn_class_loss_prepare(graft_nn_class_loss *a, graft_tensor *x, graft_tensor *target,
                                         graft_tensor *weight, graft_tensor **xc, graft_tensor **tc,
                                         graft_tensor **wc);

/* ---- pointwise losses (loss.c) ---- */
graft_status graft_nn_pointwise_loss_forward(graft_tensor **out, graft_nn_loss kind, graft_tensor *x,
                                             graft_tensor *y, graft_tensor *weight, graft_tensor *pos_weight,
                                             graft_reduction reduction, double beta);
/* dx (and dy when asked) in the broadcast shape of x and y; the engine sums them down. */
graft_status graft_nn_pointwise_loss_backward(graft_tensor **dx, graft_tensor **dy, graft_nn_loss kind,
                                              graft_tensor *g, graft_tensor *x, graft_tensor *y,
                                              graft_tensor *weight, graft_tensor *pos_weight,
                                              graft_reduction reduction, double beta);

#endif
