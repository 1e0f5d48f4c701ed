/* graft autograd: recording and gradient rules of the functional nn ops. Every rule is
 * one fused backward kernel from core/nn (softmax, activations, dropout, the three
 * norms, embedding, the class losses and the pointwise losses) that computes only the
 * gradients whose inputs need one: a frozen weight costs no weight-gradient pass, a
 * frozen input no dx pass. Forward statistics (batch mean and inverse std, row mean and
 * rstd, log-sum-exp) are saved so backward never recomputes them. */
#include "autograd/internal.h"
#include "autograd/record_nn.h"

/* A saved slot, or NULL (the version error is recorded in the pool). */
#define RN_SAVED(n, i) ag_saved_get(n, i)

/* ---- softmax / log_softmax ---- */

/* ia[0] dim, ia[1] log; saved: 0 the output */
static graft_status rn_softmax_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_tensor *y = RN_SAVED(n, 0);
    if (!y || !ag_needs(n, 0)) return GRAFT_OK;
    return graft_nn_softmax_backward(&gin[0], g, y, (int)n->ia[0], n->ia[1] != 0);
}

static const ag_kind k_softmax = {"SoftmaxBackward0", rn_softmax_apply};
static const ag_kind k_log_softmax = {"LogSoftmaxBackward0", rn_softmax_apply};

graft_status graft_ag_nn_softmax(graft_tensor **out, graft_tensor *x, int dim, bool log) {
    int d;
    graft_status st = graft_wrap_dim(&d, dim, x->ndim ? x->ndim : 1, log ? "log_softmax" : "softmax");
    if (st) return st;
    AG_NOGRAD(st = graft_nn_softmax_forward(out, x, d, log));
    if (st || !ag_should_record(*out, &x, 1)) return st;
    ag_node *n = ag_node_new(log ? &k_log_softmax : &k_softmax, 1, &x);
    if (n) {
        n->ia[0] = d;
        n->ia[1] = log;
        st = ag_save(n, 0, *out, true);
    }
    return ag_finish(st, n, out, NULL);
}

/* ---- activations ---- */

/* ia[0] act; fa[0] param; saved: 0 x (relu: the output, as PyTorch) */
static graft_status rn_act_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_tensor *x = RN_SAVED(n, 0);
    if (!x || !ag_needs(n, 0)) return GRAFT_OK;
    return graft_nn_activation_backward(&gin[0], (graft_nn_act)n->ia[0], g, x, n->fa[0]);
}

static const ag_kind k_relu = {"ReluBackward0", rn_act_apply};
static const ag_kind k_leaky = {"LeakyReluBackward0", rn_act_apply};
static const ag_kind k_elu = {"EluBackward0", rn_act_apply};
static const ag_kind k_gelu = {"GeluBackward0", rn_act_apply};
static const ag_kind k_silu = {"SiluBackward0", rn_act_apply};

graft_status graft_ag_nn_activation(graft_tensor **out, graft_nn_act act, graft_tensor *x, double param) {
    graft_status st;
    AG_NOGRAD(st = graft_nn_activation_forward(out, act, x, param));
    if (st || !ag_should_record(*out, &x, 1)) return st;
    const ag_kind *k = act == GRAFT_NN_RELU         ? &k_relu
                       : act == GRAFT_NN_LEAKY_RELU ? &k_leaky
                       : act == GRAFT_NN_ELU        ? &k_elu
                       : act == GRAFT_NN_SILU       ? &k_silu
                                                    : &k_gelu;
    ag_node *n = ag_node_new(k, 1, &x);
    if (n) {
        n->ia[0] = act;
        n->fa[0] = param;
        st = act == GRAFT_NN_RELU ? ag_save(n, 0, *out, true) : ag_save(n, 0, x, false);
    }
    return ag_finish(st, n, out, NULL);
}

/* ---- dropout ---- */

/* fa[0] scale; saved: 0 the mask */
static graft_status rn_dropout_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_tensor *m = RN_SAVED(n, 0);
    if (!m || !ag_needs(n, 0)) return GRAFT_OK;
    return graft_nn_dropout_backward(&gin[0], g, m, n->fa[0]);
}

static const ag_kind k_dropout = {"NativeDropoutBackward0", rn_dropout_apply};

graft_status graft_ag_nn_dropout(graft_tensor **out, graft_tensor *x, double p) {
    graft_tensor *mask = NULL;
    graft_status st;
    AG_NOGRAD(st = graft_nn_dropout_forward(out, &mask, x, p));
    if (st || !ag_should_record(*out, &x, 1)) {
        graft_tensor_release(mask);
        return st;
    }
    ag_node *n = ag_node_new(&k_dropout, 1, &x);
    if (n) {
        n->fa[0] = p < 1 ? 1.0 / (1.0 - p) : 0.0;
        st = ag_save(n, 0, mask, false);
    }
    graft_tensor_release(mask);
    return ag_finish(st, n, out, NULL);
}

/* ---- batch_norm ---- */

/* ia[0] training; inputs x, weight, bias; saved: 0 x, 1 weight, 2 mean, 3 invstd */
static graft_status rn_bn_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_tensor *x = RN_SAVED(n, 0), *w = n->saved[1].t ? RN_SAVED(n, 1) : NULL;
    graft_tensor *mean = RN_SAVED(n, 2), *invstd = RN_SAVED(n, 3);
    if (!x || !mean || !invstd || (n->saved[1].t && !w)) return GRAFT_OK;
    return graft_nn_batch_norm_backward(ag_needs(n, 0) ? &gin[0] : NULL, ag_needs(n, 1) ? &gin[1] : NULL,
                                        ag_needs(n, 2) ? &gin[2] : NULL, g, x, w, mean, invstd, n->ia[0] != 0);
}

static const ag_kind k_bn = {"NativeBatchNormBackward0", rn_bn_apply};

graft_status graft_ag_nn_batch_norm(graft_tensor **out, graft_tensor *x, graft_tensor *running_mean,
                                    graft_tensor *running_var, graft_tensor *weight, graft_tensor *bias,
                                    graft_tensor *num_batches_tracked, bool training, double momentum, double eps) {
    graft_tensor *mean = NULL, *invstd = NULL;
    graft_status st;
    AG_NOGRAD(st = graft_nn_batch_norm_forward(out, &mean, &invstd, x, running_mean, running_var, weight, bias,
                                               num_batches_tracked, training, momentum, eps));
    graft_tensor *ins[3] = {x, weight, bias};
    ag_node *n = NULL;
    if (st || !ag_should_record(*out, ins, 3)) goto done;
    n = ag_node_new(&k_bn, 3, ins);
    if (n) {
        n->ia[0] = training;
        if (!(st = ag_save(n, 0, x, false)) && weight) st = ag_save(n, 1, weight, false);
        if (!st) st = ag_save(n, 2, mean, false);
        if (!st) st = ag_save(n, 3, invstd, false);
    }
    st = ag_finish(st, n, out, NULL);
done:
    graft_tensor_release(mean);
    graft_tensor_release(invstd);
    return st;
}

/* ---- layer_norm, group_norm ---- */

/* ia[0] nshape (layer) or groups (group); inputs x, weight, bias; saved: 0 x, 1 weight,
 * 2 mean, 3 rstd */
static graft_status rn_norm_apply(ag_node *n, graft_tensor *g, graft_tensor **gin, bool layer) {
    graft_tensor *x = RN_SAVED(n, 0), *w = n->saved[1].t ? RN_SAVED(n, 1) : NULL;
    graft_tensor *mean = RN_SAVED(n, 2), *rstd = RN_SAVED(n, 3);
    if (!x || !mean || !rstd || (n->saved[1].t && !w)) return GRAFT_OK;
    graft_tensor **dx = ag_needs(n, 0) ? &gin[0] : NULL, **dw = ag_needs(n, 1) ? &gin[1] : NULL,
                 **db = ag_needs(n, 2) ? &gin[2] : NULL;
    if (layer) return graft_nn_layer_norm_backward(dx, dw, db, g, x, (int)n->ia[0], w, mean, rstd);
    return graft_nn_group_norm_backward(dx, dw, db, g, x, n->ia[0], w, mean, rstd);
}

static graft_status rn_ln_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) { return rn_norm_apply(n, g, gin, true); }
static graft_status rn_gn_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) { return rn_norm_apply(n, g, gin, false); }

static const ag_kind k_ln = {"NativeLayerNormBackward0", rn_ln_apply};
static const ag_kind k_gn = {"NativeGroupNormBackward0", rn_gn_apply};

static graft_status rn_norm_record(graft_status st, const ag_kind *k, int64_t arg, graft_tensor **out, graft_tensor *x,
                                   graft_tensor *weight, graft_tensor *bias, graft_tensor *mean, graft_tensor *rstd) {
    graft_tensor *ins[3] = {x, weight, bias};
    ag_node *n = NULL;
    if (!st && ag_should_record(*out, ins, 3)) {
        n = ag_node_new(k, 3, ins);
        if (n) {
            n->ia[0] = arg;
            if (!(st = ag_save(n, 0, x, false)) && weight) st = ag_save(n, 1, weight, false);
            if (!st) st = ag_save(n, 2, mean, false);
            if (!st) st = ag_save(n, 3, rstd, false);
        }
        st = ag_finish(st, n, out, NULL);
    }
    graft_tensor_release(mean);
    graft_tensor_release(rstd);
    return st;
}

graft_status graft_ag_nn_layer_norm(graft_tensor **out, graft_tensor *x, int nshape, const int64_t *normalized_shape,
                                    graft_tensor *weight, graft_tensor *bias, double eps) {
    graft_tensor *mean = NULL, *rstd = NULL;
    graft_status st;
    AG_NOGRAD(st = graft_nn_layer_norm_forward(out, &mean, &rstd, x, nshape, normalized_shape, weight, bias, eps));
    return rn_norm_record(st, &k_ln, nshape, out, x, weight, bias, mean, rstd);
}

graft_status graft_ag_nn_group_norm(graft_tensor **out, graft_tensor *x, int64_t num_groups, graft_tensor *weight,
                                    graft_tensor *bias, double eps) {
    graft_tensor *mean = NULL, *rstd = NULL;
    graft_status st;
    AG_NOGRAD(st = graft_nn_group_norm_forward(out, &mean, &rstd, x, num_groups, weight, bias, eps));
    return rn_norm_record(st, &k_gn, num_groups, out, x, weight, bias, mean, rstd);
}

/* ---- embedding ---- */

/* ia[0] num_embeddings, ia[1] padding_idx; input: weight; saved: 0 the index */
static graft_status rn_embedding_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_tensor *idx = RN_SAVED(n, 0);
    if (!idx || !ag_needs(n, 0)) return GRAFT_OK;
    return graft_nn_embedding_backward(&gin[0], g, idx, n->ia[0], n->ia[1]);
}

static const ag_kind k_embedding = {"EmbeddingBackward0", rn_embedding_apply};

graft_status graft_ag_nn_embedding(graft_tensor **out, graft_tensor *index, graft_tensor *weight,
                                   int64_t padding_idx) {
    graft_status st;
    AG_NOGRAD(st = graft_nn_embedding_forward(out, index, weight, padding_idx));
    if (st || !ag_should_record(*out, &weight, 1)) return st;
    ag_node *n = ag_node_new(&k_embedding, 1, &weight);
    if (n) {
        n->ia[0] = weight->shape[0];
        n->ia[1] = padding_idx;
        st = ag_save(n, 0, index, false);
    }
    return ag_finish(st, n, out, NULL);
}

/* ---- cross_entropy, nll_loss ---- */

/* ia: 0 logits, 1 probs, 2 ignore_index, 3 reduction; fa: 0 label_smoothing, 1 the
 * mean's divisor; inputs x, target; saved: 0 x (contiguous), 1 target, 2 weight, 3 lse */
static graft_status rn_class_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    graft_nn_class_loss a = {n->ia[0] != 0, n->ia[1] != 0, n->ia[2], (graft_reduction)n->ia[3], n->fa[0],
                             n->ia[0] ? "cross_entropy" : "nll_loss"};
    bool need_t = a.probs && ag_needs(n, 1);
    if (!ag_needs(n, 0) && !need_t) return GRAFT_OK;
    graft_tensor *x = RN_SAVED(n, 0), *t = RN_SAVED(n, 1);
    graft_tensor *w = n->saved[2].t ? RN_SAVED(n, 2) : NULL, *lse = n->saved[3].t ? RN_SAVED(n, 3) : NULL;
    if (!x || !t || (n->saved[2].t && !w) || (n->saved[3].t && !lse)) return GRAFT_OK;
    return graft_nn_class_loss_backward(ag_needs(n, 0) ? &gin[0] : NULL, need_t ? &gin[1] : NULL, &a, g, x, t, w, lse,
                                        n->fa[1]);
}

static const ag_kind k_cross_entropy = {"CrossEntropyLossBackward0", rn_class_apply};
static const ag_kind k_nll = {"NllLossBackward0", rn_class_apply};

graft_status graft_ag_nn_class_loss(graft_tensor **out, const graft_nn_class_loss *args, graft_tensor *x,
                                    graft_tensor *target, graft_tensor *weight) {
    graft_nn_class_loss a = *args;
    graft_tensor *xc = NULL, *tc = NULL, *wc = NULL, *lse = NULL;
    double total = 0;
    graft_status st = graft_nn_class_loss_prepare(&a, x, target, weight, &xc, &tc, &wc);
    if (st) return st;
    AG_NOGRAD(st = graft_nn_class_loss_forward(out, &lse, &total, &a, xc, tc, wc));
    graft_tensor *ins[2] = {x, target};
    if (!st && ag_should_record(*out, ins, 2)) {
        ag_node *n = ag_node_new(a.logits ? &k_cross_entropy : &k_nll, 2, ins);
        if (n) {
            n->ia[0] = a.logits;
            n->ia[1] = a.probs;
            n->ia[2] = a.ignore_index;
            n->ia[3] = a.reduction;
            n->fa[0] = a.label_smoothing;
            n->fa[1] = total;
            if (!(st = ag_save(n, 0, xc, false))) st = ag_save(n, 1, tc, false);
            if (!st && wc) st = ag_save(n, 2, wc, false);
            if (!st && lse) st = ag_save(n, 3, lse, false);
        }
        st = ag_finish(st, n, out, NULL);
    }
    graft_tensor_release(xc);
    graft_tensor_release(tc);
    graft_tensor_release(wc);
    graft_tensor_release(lse);
    return st;
}

/* ---- pointwise losses ---- */

/* ia[0] kind, ia[1] reduction; fa[0] beta; inputs x, y; saved: 0 x, 1 y, 2 weight, 3 pos_weight */
static graft_status rn_pointwise_apply(ag_node *n, graft_tensor *g, graft_tensor **gin) {
    if (!ag_needs(n, 0) && !ag_needs(n, 1)) return GRAFT_OK;
    graft_tensor *x = RN_SAVED(n, 0), *y = RN_SAVED(n, 1);
    graft_tensor *w = n->saved[2].t ? RN_SAVED(n, 2) : NULL, *pw = n->saved[3].t ? RN_SAVED(n, 3) : NULL;
    if (!x || !y || (n->saved[2].t && !w) || (n->saved[3].t && !pw)) return GRAFT_OK;
    return graft_nn_pointwise_loss_backward(ag_needs(n, 0) ? &gin[0] : NULL, ag_needs(n, 1) ? &gin[1] : NULL,
                                            (graft_nn_loss)n->ia[0], g, x, y, w, pw, (graft_reduction)n->ia[1],
                                            n->fa[0]);
}

static const ag_kind k_mse = {"MseLossBackward0", rn_pointwise_apply};
static const ag_kind k_l1 = {"L1LossBackward0", rn_pointwise_apply};
static const ag_kind k_smooth_l1 = {"SmoothL1LossBackward0", rn_pointwise_apply};
static const ag_kind k_bce = {"BinaryCrossEntropyBackward0", rn_pointwise_apply};
static const ag_kind k_bce_logits = {"BinaryCrossEntropyWithLogitsBackward0", rn_pointwise_apply};

graft_status graft_ag_nn_pointwise_loss(graft_tensor **out, graft_nn_loss kind, graft_tensor *x, graft_tensor *y,
                                        graft_tensor *weight, graft_tensor *pos_weight, graft_reduction reduction,
                                        double beta) {
    graft_status st;
    AG_NOGRAD(st = graft_nn_pointwise_loss_forward(out, kind, x, y, weight, pos_weight, reduction, beta));
    graft_tensor *ins[2] = {x, y};
    if (st || !ag_should_record(*out, ins, 2)) return st;
    static const ag_kind *const kinds[] = {&k_mse, &k_l1, &k_smooth_l1, &k_bce, &k_bce_logits};
    ag_node *n = ag_node_new(kinds[kind], 2, ins);
    if (n) {
        n->ia[0] = kind;
        n->ia[1] = reduction;
        n->fa[0] = beta;
        if (!(st = ag_save(n, 0, x, false))) st = ag_save(n, 1, y, false);
        if (!st && weight) st = ag_save(n, 2, weight, false);
        if (!st && pos_weight) st = ag_save(n, 3, pos_weight, false);
    }
    return ag_finish(st, n, out, NULL);
}
