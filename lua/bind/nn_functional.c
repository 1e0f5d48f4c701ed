/* graft bindings: the non-spatial functions of graft.F (graft.nn.functional): linear
 * layers, norms, embedding, dropout, activations, softmax, losses and attention, with
 * PyTorch's names. Tensors come positionally, options in a trailing table:
 *   F.cross_entropy(logits, target, {weight = w, ignore_index = -100, reduction = "mean"})
 * Dims are 1-based (softmax(x, -1)); index values (targets, padding_idx, ignore_index)
 * are 0-based as in PyTorch. graft.None stands for PyTorch's None where nil cannot
 * (batch_norm's momentum = None: a cumulative average). */
#include "bind.h"

#include <string.h>

#include "nn/functional.h"
#include "ops/elementwise.h"

/* ---- argument helpers ---- */

static bool nf_is_none(lua_State *L, int idx) {
    if (lua_type(L, idx) != LUA_TTABLE || luaL_getmetafield(L, idx, "__name") == LUA_TNIL) return false;
    bool r = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "graft.None") == 0;
    lua_pop(L, 1);
    return r;
}

static bool nf_absent(lua_State *L, int idx) { return lua_isnoneornil(L, idx) || nf_is_none(L, idx); }

/* An optional tensor argument at idx: nil, graft.None or a tensor. */
static graft_tensor *nf_opt_arg(lua_State *L, int idx, const char *op, const char *name) {
    if (nf_absent(L, idx)) return NULL;
    graft_tensor *t = lg_test(L, idx);
    if (!t) luaL_error(L, "%s: %s must be a tensor, got a %s", op, name, luaL_typename(L, idx));
    return t;
}

/* opts[key] as an optional tensor (borrowed: the options table keeps it alive). */
static graft_tensor *nf_opt_tensor(lua_State *L, int opts, const char *key, const char *op) {
    if (!opts) return NULL;
    lua_getfield(L, opts, key);
    graft_tensor *t = NULL;
    if (!nf_absent(L, -1)) {
        t = lg_test(L, -1);
        if (!t) luaL_error(L, "%s: option '%s' must be a tensor, got a %s", op, key, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return t;
}

/* A tensor given either at position idx or as opts[key] (not both). */
static graft_tensor *nf_tensor_pos_or_opt(lua_State *L, int idx, int opts, const char *key, const char *op) {
    graft_tensor *p = idx != opts ? nf_opt_arg(L, idx, op, key) : NULL;
    graft_tensor *o = nf_opt_tensor(L, opts, key, op);
    if (p && o) luaL_error(L, "%s: %s given both positionally and as an option", op, key);
    return p ? p : o;
}

static graft_reduction nf_opt_reduction(lua_State *L, int opts, const char *op) {
    if (!opts) return GRAFT_REDUCTION_MEAN;
    graft_reduction r = GRAFT_REDUCTION_MEAN;
    if (lua_getfield(L, opts, "reduction") != LUA_TNIL) {
        const char *s = lua_tostring(L, -1);
        int v = s ? graft_reduction_from_name(s) : -1;
        if (v < 0) luaL_error(L, "%s: reduction must be \"none\", \"mean\" or \"sum\", got %s", op, s ? s : luaL_typename(L, -1));
        r = (graft_reduction)v;
    }
    lua_pop(L, 1);
    return r;
}

/* A number at position idx when there is one there, else opts[key], else def. */
static double nf_number_pos_or_opt(lua_State *L, int idx, int opts, const char *key, double def) {
    if (lua_type(L, idx) == LUA_TNUMBER) return lua_tonumber(L, idx);
    return lg_opt_number(L, opts, key, def);
}

/* ---- linear maps ---- */

/* F.linear(x, weight [, bias] [, {bias}]) */
static int l_linear(lua_State *L) {
    graft_tensor *x = lg_check(L, 1), *w = lg_check(L, 2);
    graft_tensor *b = nf_tensor_pos_or_opt(L, 3, lg_opts_index(L, 3), "bias", "linear");
    graft_tensor **out = lg_shell(L);
    if (graft_nn_linear(out, x, w, b)) return lg_raise(L);
    return 1;
}

/* F.bilinear(x1, x2, weight [, bias] [, {bias}]) */
static int l_bilinear(lua_State *L) {
    graft_tensor *x1 = lg_check(L, 1), *x2 = lg_check(L, 2), *w = lg_check(L, 3);
    graft_tensor *b = nf_tensor_pos_or_opt(L, 4, lg_opts_index(L, 4), "bias", "bilinear");
    graft_tensor **out = lg_shell(L);
    if (graft_nn_bilinear(out, x1, x2, w, b)) return lg_raise(L);
    return 1;
}

/* ---- normalisation ---- */

/* F.batch_norm(x, running_mean, running_var [, weight [, bias]] [, {weight, bias,
 * training = false, momentum = 0.1 | graft.None, cumulative = false, eps = 1e-5,
 * num_batches_tracked}]) */
static int l_batch_norm(lua_State *L) {
    const char *op = "batch_norm";
    graft_tensor *x = lg_check(L, 1);
    int opts = lg_opts_index(L, 4);
    graft_tensor *rm = nf_opt_arg(L, 2, op, "running_mean"), *rv = nf_opt_arg(L, 3, op, "running_var");
    graft_tensor *w = nf_tensor_pos_or_opt(L, 4, opts, "weight", op);
    graft_tensor *b = nf_tensor_pos_or_opt(L, 5, opts, "bias", op);
    graft_tensor *nbt = nf_opt_tensor(L, opts, "num_batches_tracked", op);
    bool training = lg_opt_bool(L, opts, "training", 0);
    double eps = lg_opt_number(L, opts, "eps", 1e-5), momentum = 0.1;
    if (opts) {
        lua_getfield(L, opts, "momentum");
        if (nf_is_none(L, -1)) momentum = GRAFT_NN_CUMULATIVE;
        else if (!lua_isnil(L, -1)) {
            if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "batch_norm: momentum must be a number or graft.None");
            momentum = lua_tonumber(L, -1);
        }
        lua_pop(L, 1);
        if (lg_opt_bool(L, opts, "cumulative", 0)) momentum = GRAFT_NN_CUMULATIVE;
    }
    graft_tensor **out = lg_shell(L);
    if (graft_nn_batch_norm(out, x, rm, rv, w, b, nbt, training, momentum, eps)) return lg_raise(L);
    return 1;
}

/* normalized_shape at idx: an integer or a list of integers. */
static int nf_check_shape(lua_State *L, int idx, int64_t *shape, const char *op) {
    if (lua_type(L, idx) == LUA_TNUMBER) {
        shape[0] = luaL_checkinteger(L, idx);
        return 1;
    }
    if (lua_type(L, idx) != LUA_TTABLE || lg_test(L, idx))
        return luaL_error(L, "%s: normalized_shape must be an integer or a list of integers", op);
    int n = (int)lua_rawlen(L, idx);
    if (n < 1 || n > GRAFT_MAX_DIMS) return luaL_error(L, "%s: normalized_shape must have 1 to %d sizes", op, GRAFT_MAX_DIMS);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        int ok;
        shape[i] = lua_tointegerx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok) return luaL_error(L, "%s: normalized_shape must be a list of integers", op);
    }
    return n;
}

/* F.layer_norm(x, normalized_shape [, weight [, bias]] [, {weight, bias, eps = 1e-5}]) */
static int l_layer_norm(lua_State *L) {
    const char *op = "layer_norm";
    graft_tensor *x = lg_check(L, 1);
    int64_t shape[GRAFT_MAX_DIMS];
    int n = nf_check_shape(L, 2, shape, op);
    int opts = lg_opts_index(L, 3);
    graft_tensor *w = nf_tensor_pos_or_opt(L, 3, opts, "weight", op);
    graft_tensor *b = nf_tensor_pos_or_opt(L, 4, opts, "bias", op);
    double eps = lg_opt_number(L, opts, "eps", 1e-5);
    graft_tensor **out = lg_shell(L);
    if (graft_nn_layer_norm(out, x, n, shape, w, b, eps)) return lg_raise(L);
    return 1;
}

/* F.group_norm(x, num_groups [, weight [, bias]] [, {weight, bias, eps = 1e-5}]) */
static int l_group_norm(lua_State *L) {
    const char *op = "group_norm";
    graft_tensor *x = lg_check(L, 1);
    lua_Integer groups = luaL_checkinteger(L, 2);
    int opts = lg_opts_index(L, 3);
    graft_tensor *w = nf_tensor_pos_or_opt(L, 3, opts, "weight", op);
    graft_tensor *b = nf_tensor_pos_or_opt(L, 4, opts, "bias", op);
    double eps = lg_opt_number(L, opts, "eps", 1e-5);
    graft_tensor **out = lg_shell(L);
    if (graft_nn_group_norm(out, x, groups, w, b, eps)) return lg_raise(L);
    return 1;
}

/* ---- embedding, one_hot, dropout ---- */

/* F.embedding(index, weight [, {padding_idx}]): padding_idx is 0-based (a value of the
 * index tensor), negative counts from the end as in PyTorch. */
static int l_embedding(lua_State *L) {
    graft_tensor *index = lg_check(L, 1), *w = lg_check(L, 2);
    int opts = lg_opts_index(L, 3);
    int64_t pad = -1;
    if (opts) {
        lua_getfield(L, opts, "padding_idx");
        if (!nf_absent(L, -1)) {
            int ok;
            lua_Integer p = lua_tointegerx(L, -1, &ok);
            int64_t num = w->ndim > 0 ? w->shape[0] : 0;
            if (!ok) luaL_error(L, "embedding: padding_idx must be an integer");
            if (p >= num || p < -num)
                lg_errorf(L, "embedding: padding_idx %lld must be within num_embeddings (%lld)", (long long)p, (long long)num);
            pad = p < 0 ? p + num : p;
        }
        lua_pop(L, 1);
        if (lg_opt_number(L, opts, "max_norm", 0) != 0) luaL_error(L, "embedding: max_norm is not supported");
    }
    graft_tensor **out = lg_shell(L);
    if (graft_nn_embedding(out, index, w, pad)) return lg_raise(L);
    return 1;
}

/* F.one_hot(index [, num_classes | {num_classes = -1}]) */
static int l_one_hot(lua_State *L) {
    graft_tensor *index = lg_check(L, 1);
    int opts = lg_opts_index(L, 2);
    lua_Integer nc = lua_type(L, 2) == LUA_TNUMBER ? luaL_checkinteger(L, 2) : lg_opt_integer(L, opts, "num_classes", -1);
    graft_tensor **out = lg_shell(L);
    if (graft_nn_one_hot(out, index, nc)) return lg_raise(L);
    return 1;
}

/* F.dropout(x [, p] [, {p = 0.5, training = true}]) */
static int l_dropout(lua_State *L) {
    graft_tensor *x = lg_check(L, 1);
    int opts = lg_opts_index(L, 2);
    double p = nf_number_pos_or_opt(L, 2, opts, "p", 0.5);
    bool training = lg_opt_bool(L, opts, "training", 1);
    graft_tensor **out = lg_shell(L);
    if (graft_nn_dropout(out, x, p, training)) return lg_raise(L);
    return 1;
}

/* ---- activations ---- */

static int nf_unary(lua_State *L, graft_unary_op op) {
    graft_tensor *x = lg_check(L, 1);
    graft_tensor **out = lg_shell(L);
    if (graft_unary(out, op, x)) return lg_raise(L);
    return 1;
}

static int l_sigmoid(lua_State *L) { return nf_unary(L, GRAFT_EW_SIGMOID); }
static int l_tanh(lua_State *L) { return nf_unary(L, GRAFT_EW_TANH); }

static int nf_act(lua_State *L, graft_nn_act act, double param) {
    graft_tensor *x = lg_check(L, 1);
    graft_tensor **out = lg_shell(L);
    if (graft_nn_activation(out, act, x, param)) return lg_raise(L);
    return 1;
}

/* F.relu(x): the fused kernel for float32/float64 (ReluBackward0 from the output), the
 * core's relu for other dtypes. */
static int l_relu(lua_State *L) {
    graft_tensor *x = lg_check(L, 1);
    if (x->dtype != GRAFT_F32 && x->dtype != GRAFT_F64) return nf_unary(L, GRAFT_EW_RELU);
    return nf_act(L, GRAFT_NN_RELU, 0);
}

/* F.leaky_relu(x [, negative_slope] [, {negative_slope = 0.01}]) */
static int l_leaky_relu(lua_State *L) {
    lg_check(L, 1);
    int opts = lg_opts_index(L, 2);
    return nf_act(L, GRAFT_NN_LEAKY_RELU, nf_number_pos_or_opt(L, 2, opts, "negative_slope", 0.01));
}

/* F.elu(x [, alpha] [, {alpha = 1}]) */
static int l_elu(lua_State *L) {
    lg_check(L, 1);
    int opts = lg_opts_index(L, 2);
    return nf_act(L, GRAFT_NN_ELU, nf_number_pos_or_opt(L, 2, opts, "alpha", 1.0));
}

/* F.gelu(x [, {approximate = "none" | "tanh"}]) */
static int l_gelu(lua_State *L) {
    lg_check(L, 1);
    int opts = lg_opts_index(L, 2);
    graft_nn_act act = GRAFT_NN_GELU;
    const char *ap = NULL;
    if (lua_type(L, 2) == LUA_TSTRING) ap = lua_tostring(L, 2);
    else if (opts && lua_getfield(L, opts, "approximate") != LUA_TNIL) ap = lua_tostring(L, -1);
    if (ap && strcmp(ap, "tanh") == 0) act = GRAFT_NN_GELU_TANH;
    else if (ap && strcmp(ap, "none") != 0) return luaL_error(L, "gelu: approximate must be \"none\" or \"tanh\", got \"%s\"", ap);
    lua_settop(L, 1);
    return nf_act(L, act, 0);
}

static int l_silu(lua_State *L) {
    lg_check(L, 1);
    return nf_act(L, GRAFT_NN_SILU, 0);
}

/* F.softmax(x, dim [, {dtype}]), F.log_softmax(x, dim [, {dtype}]) */
static int nf_softmax(lua_State *L, bool log) {
    const char *op = log ? "log_softmax" : "softmax";
    graft_tensor *x = lg_check(L, 1);
    if (lua_type(L, 2) != LUA_TNUMBER)
        return luaL_error(L, "%s: dim is required (1-based; -1 is the last)", op);
    int dim = lg_check_dim(L, 2, x->ndim, op);
    int opts = lg_opts_index(L, 3);
    int dtype = lg_opt_dtype(L, opts, -1);
    graft_tensor **out = lg_shell(L);
    if ((log ? graft_nn_log_softmax : graft_nn_softmax)(out, x, dim, dtype)) return lg_raise(L);
    return 1;
}

static int l_softmax(lua_State *L) { return nf_softmax(L, false); }
static int l_log_softmax(lua_State *L) { return nf_softmax(L, true); }

/* ---- losses ---- */

/* F.cross_entropy(input, target [, {weight, ignore_index = -100, reduction = "mean",
 * label_smoothing = 0}]) */
static int l_cross_entropy(lua_State *L) {
    const char *op = "cross_entropy";
    graft_tensor *x = lg_check(L, 1), *t = lg_check(L, 2);
    int opts = lg_opts_index(L, 3);
    graft_tensor *w = nf_tensor_pos_or_opt(L, 3, opts, "weight", op);
    lua_Integer ignore = lg_opt_integer(L, opts, "ignore_index", -100);
    graft_reduction red = nf_opt_reduction(L, opts, op);
    double ls = lg_opt_number(L, opts, "label_smoothing", 0.0);
    graft_tensor **out = lg_shell(L);
    if (graft_nn_cross_entropy(out, x, t, w, ignore, red, ls)) return lg_raise(L);
    return 1;
}

/* F.nll_loss(input, target [, {weight, ignore_index = -100, reduction = "mean"}]) */
static int l_nll_loss(lua_State *L) {
    const char *op = "nll_loss";
    graft_tensor *x = lg_check(L, 1), *t = lg_check(L, 2);
    int opts = lg_opts_index(L, 3);
    graft_tensor *w = nf_tensor_pos_or_opt(L, 3, opts, "weight", op);
    lua_Integer ignore = lg_opt_integer(L, opts, "ignore_index", -100);
    graft_reduction red = nf_opt_reduction(L, opts, op);
    graft_tensor **out = lg_shell(L);
    if (graft_nn_nll_loss(out, x, t, w, ignore, red)) return lg_raise(L);
    return 1;
}

static int nf_pointwise(lua_State *L, graft_nn_loss kind, const char *op) {
    graft_tensor *x = lg_check(L, 1), *y = lg_check(L, 2);
    int opts = lg_opts_index(L, 3);
    graft_tensor *w = NULL, *pw = NULL;
    if (kind == GRAFT_NN_BCE || kind == GRAFT_NN_BCE_LOGITS) w = nf_tensor_pos_or_opt(L, 3, opts, "weight", op);
    if (kind == GRAFT_NN_BCE_LOGITS) pw = nf_opt_tensor(L, opts, "pos_weight", op);
    graft_reduction red = nf_opt_reduction(L, opts, op);
    double beta = lg_opt_number(L, opts, "beta", 1.0);
    graft_tensor **out = lg_shell(L);
    if (graft_nn_pointwise_loss(out, kind, x, y, w, pw, red, beta)) return lg_raise(L);
    return 1;
}

static int l_mse_loss(lua_State *L) { return nf_pointwise(L, GRAFT_NN_MSE, "mse_loss"); }
static int l_l1_loss(lua_State *L) { return nf_pointwise(L, GRAFT_NN_L1, "l1_loss"); }
static int l_smooth_l1_loss(lua_State *L) { return nf_pointwise(L, GRAFT_NN_SMOOTH_L1, "smooth_l1_loss"); }
static int l_bce(lua_State *L) { return nf_pointwise(L, GRAFT_NN_BCE, "binary_cross_entropy"); }
static int l_bce_logits(lua_State *L) {
    return nf_pointwise(L, GRAFT_NN_BCE_LOGITS, "binary_cross_entropy_with_logits");
}

/* ---- attention ---- */

/* F.scaled_dot_product_attention(q, k, v [, attn_mask] [, {attn_mask, dropout_p = 0,
 * is_causal = false}]) */
static int l_sdpa(lua_State *L) {
    const char *op = "scaled_dot_product_attention";
    graft_tensor *q = lg_check(L, 1), *k = lg_check(L, 2), *v = lg_check(L, 3);
    int opts = lg_opts_index(L, 4);
    graft_tensor *mask = nf_tensor_pos_or_opt(L, 4, opts, "attn_mask", op);
    double p = lg_opt_number(L, opts, "dropout_p", 0.0);
    bool causal = lg_opt_bool(L, opts, "is_causal", 0);
    graft_tensor **out = lg_shell(L);
    if (graft_nn_scaled_dot_product_attention(out, q, k, v, mask, p, causal)) return lg_raise(L);
    return 1;
}

static const luaL_Reg nn_functional_funcs[] = {
    {"linear", l_linear},
    {"bilinear", l_bilinear},
    {"batch_norm", l_batch_norm},
    {"layer_norm", l_layer_norm},
    {"group_norm", l_group_norm},
    {"embedding", l_embedding},
    {"one_hot", l_one_hot},
    {"dropout", l_dropout},
    {"relu", l_relu},
    {"sigmoid", l_sigmoid},
    {"tanh", l_tanh},
    {"leaky_relu", l_leaky_relu},
    {"elu", l_elu},
    {"gelu", l_gelu},
    {"silu", l_silu},
    {"softmax", l_softmax},
    {"log_softmax", l_log_softmax},
    {"cross_entropy", l_cross_entropy},
    {"nll_loss", l_nll_loss},
    {"mse_loss", l_mse_loss},
    {"l1_loss", l_l1_loss},
    {"smooth_l1_loss", l_smooth_l1_loss},
    {"binary_cross_entropy", l_bce},
    {"binary_cross_entropy_with_logits", l_bce_logits},
    {"scaled_dot_product_attention", l_sdpa},
    {NULL, NULL}};

void graft_bind_nn_functional(lua_State *L) { luaL_setfuncs(L, nn_functional_funcs, 0); }
