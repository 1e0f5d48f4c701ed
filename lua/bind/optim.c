/* graft bindings: the fused optimizer updates (core/optim) as graft._optim.{sgd, adam,
 * rmsprop, adagrad} (one parameter) and their *_multi forms (a list: one kernel launch
 * on CUDA). Internal: lua/graft/optim checks the hyperparameters, keeps the state and
 * names the parameter in errors; these take positional arguments so one update costs
 * one call. Step counters are CPU tensors (PyTorch's non-capturable `step`), read and
 * written on the host here. */
#include "bind.h"

#include "optim/optim.h"

static graft_tensor *opt_opt_tensor(lua_State *L, int idx) { return lua_isnil(L, idx) ? NULL : lg_check(L, idx); }

/* step_t += 1 in its own dtype (PyTorch's `state['step'] += 1` on a float32 tensor, which
 * stops counting at 2^24); returns the new value and the old one in *old. */
static void opt_step_check(lua_State *L, graft_tensor *t) {
    if (graft_tensor_numel(t) != 1)
        lg_errorf(L, "optimizer: the step counter must hold one value, got %lld", (long long)graft_tensor_numel(t));
    if (graft_tensor_device(t).type != GRAFT_CPU) {
        char d[32];
        lg_errorf(L, "optimizer: the step counter is on %s; it must be a CPU tensor (as PyTorch keeps it)",
                  graft_device_str(graft_tensor_device(t), d));
    }
}

static double opt_step_inc(lua_State *L, graft_tensor *t, double *old) {
    opt_step_check(L, t);
    void *p = graft_tensor_data(t);
    *old = graft_load_f64(p, t->dtype);
    graft_store_f64(p, t->dtype, *old + 1);
    graft_tensor_bump(t);
    return graft_load_f64(p, t->dtype);
}

static void opt_step_restore(graft_tensor *t, double old) {
    graft_store_f64(graft_tensor_data(t), t->dtype, old);
}

/* sgd(p, grad, buf|nil, lr, momentum, dampening, weight_decay, nesterov, maximize)
 * -> the momentum buffer (a new one on the first step with momentum), or nil. */
static int l_sgd(lua_State *L) {
    graft_tensor *p = lg_check(L, 1), *g = lg_check(L, 2), *buf = opt_opt_tensor(L, 3);
    graft_optim_sgd_args a = {.lr = luaL_checknumber(L, 4), .momentum = luaL_checknumber(L, 5),
                              .dampening = luaL_checknumber(L, 6), .weight_decay = luaL_checknumber(L, 7),
                              .nesterov = lua_toboolean(L, 8), .maximize = lua_toboolean(L, 9)};
    bool first = false;
    if (a.momentum != 0 && !buf) {
        graft_tensor **slot = lg_shell(L);
        if (graft_tensor_empty(slot, p->ndim, p->shape, p->dtype, graft_tensor_device(p))) return lg_raise(L);
        buf = *slot;
        first = true;
    } else if (a.momentum != 0) {
        lua_pushvalue(L, 3);
    } else {
        lua_pushnil(L);
    }
    if (graft_optim_sgd(p, g, buf, first, &a)) return lg_raise(L);
    return 1;
}

/* adam(p, grad, step_t, m, v, vmax|nil, lr, beta1, beta2, eps, weight_decay, amsgrad,
 * maximize, decoupled, lerp) -> the step count after the increment. */
static int l_adam(lua_State *L) {
    graft_tensor *p = lg_check(L, 1), *g = lg_check(L, 2), *step = lg_check(L, 3);
    graft_tensor *m = lg_check(L, 4), *v = lg_check(L, 5), *vmax = opt_opt_tensor(L, 6);
    graft_optim_adam_args a = {.lr = luaL_checknumber(L, 7), .beta1 = luaL_checknumber(L, 8),
                               .beta2 = luaL_checknumber(L, 9), .eps = luaL_checknumber(L, 10),
                               .weight_decay = luaL_checknumber(L, 11), .amsgrad = lua_toboolean(L, 12),
                               .maximize = lua_toboolean(L, 13), .decoupled = lua_toboolean(L, 14),
                               .lerp = lua_toboolean(L, 15)};
    double old;
    a.step = opt_step_inc(L, step, &old);
    if (graft_optim_adam(p, g, m, v, vmax, &a)) {
        opt_step_restore(step, old);
        return lg_raise(L);
    }
    lua_pushnumber(L, a.step);
    return 1;
}

/* rmsprop(p, grad, square_avg, grad_avg|nil, buf|nil, lr, alpha, eps, weight_decay,
 * momentum, centered, maximize, lerp) */
static int l_rmsprop(lua_State *L) {
    graft_tensor *p = lg_check(L, 1), *g = lg_check(L, 2), *s = lg_check(L, 3);
    graft_tensor *ga = opt_opt_tensor(L, 4), *buf = opt_opt_tensor(L, 5);
    graft_optim_rmsprop_args a = {.lr = luaL_checknumber(L, 6), .alpha = luaL_checknumber(L, 7),
                                  .eps = luaL_checknumber(L, 8), .weight_decay = luaL_checknumber(L, 9),
                                  .momentum = luaL_checknumber(L, 10), .centered = lua_toboolean(L, 11),
                                  .maximize = lua_toboolean(L, 12), .lerp = lua_toboolean(L, 13)};
    if (graft_optim_rmsprop(p, g, s, ga, buf, &a)) return lg_raise(L);
    return 0;
}

/* adagrad(p, grad, step_t, sum, lr, lr_decay, eps, weight_decay, maximize) -> the step count */
static int l_adagrad(lua_State *L) {
    graft_tensor *p = lg_check(L, 1), *g = lg_check(L, 2), *step = lg_check(L, 3), *sum = lg_check(L, 4);
    graft_optim_adagrad_args a = {.lr = luaL_checknumber(L, 5), .lr_decay = luaL_checknumber(L, 6),
                                  .eps = luaL_checknumber(L, 7), .weight_decay = luaL_checknumber(L, 8),
                                  .maximize = lua_toboolean(L, 9)};
    double old;
    a.step = opt_step_inc(L, step, &old);
    if (graft_optim_adagrad(p, g, sum, &a)) {
        opt_step_restore(step, old);
        return lg_raise(L);
    }
    lua_pushnumber(L, a.step);
    return 1;
}

/* ---- lists ---- */

/* The n tensors of the Lua list at idx as a C array in GC-managed memory (pushed);
 * NULL when the list is nil and optional. Raises on a short list or a non-tensor. */
static graft_tensor **opt_list(lua_State *L, int idx, int n, const char *what, bool optional) {
    if (optional && lua_isnoneornil(L, idx)) return NULL;
    luaL_checktype(L, idx, LUA_TTABLE);
    graft_tensor **out = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *out, 0);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        out[i] = lg_test(L, -1);
        if (!out[i]) lg_errorf(L, "optimizer: %s[%d] is a %s, not a tensor", what, i + 1, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    return out;
}

/* The step counters of a list, checked, then each incremented; t[i] and old[i] kept for
 * opt_steps_restore. Arrays in GC-managed memory (pushed). */
static double *opt_steps_inc(lua_State *L, graft_tensor **t, int n, double **old) {
    double *now = lua_newuserdatauv(L, (size_t)(2 * (n > 0 ? n : 1)) * sizeof *now, 0);
    *old = now + n;
    for (int i = 0; i < n; i++) opt_step_check(L, t[i]);
    for (int i = 0; i < n; i++) now[i] = opt_step_inc(L, t[i], &(*old)[i]);
    return now;
}

static void opt_steps_restore(graft_tensor **t, int n, const double *old) {
    for (int i = 0; i < n; i++) opt_step_restore(t[i], old[i]);
}

/* An error of a list update as (index of the parameter at fault or 0, message). */
static int opt_list_error(lua_State *L, int bad) {
    lua_pushinteger(L, bad + 1);
    lua_pushstring(L, graft_last_error());
    return 2;
}

static int opt_list_len(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    if (n > 0x7fffffff) luaL_error(L, "optimizer: too many parameters in one list");
    return (int)n;
}

/* sgd_multi(params, grads, bufs|nil, firsts|nil, lr, momentum, dampening, weight_decay,
 * nesterov, maximize) -> nothing, or (index, message) on an error. bufs: every
 * parameter's momentum buffer (when momentum is not 0); firsts[i]: bufs[i] was just
 * created (empty) and is written, not read. */
static int l_sgd_multi(lua_State *L) {
    int n = opt_list_len(L);
    graft_optim_sgd_args a = {.lr = luaL_checknumber(L, 5), .momentum = luaL_checknumber(L, 6),
                              .dampening = luaL_checknumber(L, 7), .weight_decay = luaL_checknumber(L, 8),
                              .nesterov = lua_toboolean(L, 9), .maximize = lua_toboolean(L, 10)};
    graft_tensor **p = opt_list(L, 1, n, "params", false), **g = opt_list(L, 2, n, "grads", false);
    graft_tensor **buf = opt_list(L, 3, n, "momentum_buffers", a.momentum == 0);
    if (a.momentum != 0 && !buf) return luaL_error(L, "sgd: momentum buffers are missing");
    bool *first = NULL;
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        first = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *first, 0);
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, 4, i + 1);
            first[i] = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
    }
    int bad;
    if (graft_optim_sgd_multi(n, p, g, buf, first, &a, &bad)) return opt_list_error(L, bad);
    return 0;
}

/* adam_multi(params, grads, steps, exp_avgs, exp_avg_sqs, max_exp_avg_sqs|nil, lr, beta1,
 * beta2, eps, weight_decay, amsgrad, maximize, decoupled, lerp) -> nothing, or (index,
 * message) with every step counter restored. */
static int l_adam_multi(lua_State *L) {
    int n = opt_list_len(L);
    graft_optim_adam_args a = {.lr = luaL_checknumber(L, 7), .beta1 = luaL_checknumber(L, 8),
                               .beta2 = luaL_checknumber(L, 9), .eps = luaL_checknumber(L, 10),
                               .weight_decay = luaL_checknumber(L, 11), .amsgrad = lua_toboolean(L, 12),
                               .maximize = lua_toboolean(L, 13), .decoupled = lua_toboolean(L, 14),
                               .lerp = lua_toboolean(L, 15)};
    graft_tensor **p = opt_list(L, 1, n, "params", false), **g = opt_list(L, 2, n, "grads", false);
    graft_tensor **steps = opt_list(L, 3, n, "steps", false);
    graft_tensor **m = opt_list(L, 4, n, "exp_avgs", false), **v = opt_list(L, 5, n, "exp_avg_sqs", false);
    graft_tensor **vmax = opt_list(L, 6, n, "max_exp_avg_sqs", !a.amsgrad);
    double *old, *now = opt_steps_inc(L, steps, n, &old);
    int bad;
    if (graft_optim_adam_multi(n, p, g, m, v, vmax, now, &a, &bad)) {
        opt_steps_restore(steps, n, old);
        return opt_list_error(L, bad);
    }
    return 0;
}

/* rmsprop_multi(params, grads, steps|nil, square_avgs, grad_avgs|nil, bufs|nil, lr, alpha,
 * eps, weight_decay, momentum, centered, maximize, lerp) -> nothing, or (index, message).
 * The step counters are incremented after the update (they only count). */
static int l_rmsprop_multi(lua_State *L) {
    int n = opt_list_len(L);
    graft_optim_rmsprop_args a = {.lr = luaL_checknumber(L, 7), .alpha = luaL_checknumber(L, 8),
                                  .eps = luaL_checknumber(L, 9), .weight_decay = luaL_checknumber(L, 10),
                                  .momentum = luaL_checknumber(L, 11), .centered = lua_toboolean(L, 12),
                                  .maximize = lua_toboolean(L, 13), .lerp = lua_toboolean(L, 14)};
    graft_tensor **p = opt_list(L, 1, n, "params", false), **g = opt_list(L, 2, n, "grads", false);
    graft_tensor **steps = opt_list(L, 3, n, "steps", true);
    graft_tensor **s = opt_list(L, 4, n, "square_avgs", false);
    graft_tensor **ga = opt_list(L, 5, n, "grad_avgs", !a.centered);
    graft_tensor **buf = opt_list(L, 6, n, "momentum_buffers", !(a.momentum > 0));
    if (steps)
        for (int i = 0; i < n; i++) opt_step_check(L, steps[i]);
    int bad;
    if (graft_optim_rmsprop_multi(n, p, g, s, ga, buf, &a, &bad)) return opt_list_error(L, bad);
    if (steps) {
        double old;
        for (int i = 0; i < n; i++) opt_step_inc(L, steps[i], &old);
    }
    return 0;
}

/* adagrad_multi(params, grads, steps, sums, lr, lr_decay, eps, weight_decay, maximize)
 * -> nothing, or (index, message) with every step counter restored. */
static int l_adagrad_multi(lua_State *L) {
    int n = opt_list_len(L);
    graft_optim_adagrad_args a = {.lr = luaL_checknumber(L, 5), .lr_decay = luaL_checknumber(L, 6),
                                  .eps = luaL_checknumber(L, 7), .weight_decay = luaL_checknumber(L, 8),
                                  .maximize = lua_toboolean(L, 9)};
    graft_tensor **p = opt_list(L, 1, n, "params", false), **g = opt_list(L, 2, n, "grads", false);
    graft_tensor **steps = opt_list(L, 3, n, "steps", false), **sum = opt_list(L, 4, n, "sums", false);
    double *old, *now = opt_steps_inc(L, steps, n, &old);
    int bad;
    if (graft_optim_adagrad_multi(n, p, g, sum, now, &a, &bad)) {
        opt_steps_restore(steps, n, old);
        return opt_list_error(L, bad);
    }
    return 0;
}

void graft_bind_optim(lua_State *L) {
    int module = lua_gettop(L);
    static const luaL_Reg fns[] = {{"sgd", l_sgd}, {"adam", l_adam}, {"rmsprop", l_rmsprop},
                                   {"adagrad", l_adagrad}, {"sgd_multi", l_sgd_multi},
                                   {"adam_multi", l_adam_multi}, {"rmsprop_multi", l_rmsprop_multi},
                                   {"adagrad_multi", l_adagrad_multi}, {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_setfield(L, module, "_optim");
}
