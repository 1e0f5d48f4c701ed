/* graft bindings: the fused optimizer updates (core/optim) as graft._optim.{sgd, adam,
 * rmsprop, adagrad}. Internal: lua/graft/optim checks the hyperparameters, keeps the
 * state and names the parameter in errors; these take positional arguments so one
 * update costs one call. */
#include "bind.h"

#include "optim/optim.h"

static graft_tensor *opt_opt_tensor(lua_State *L, int idx) { return lua_isnil(L, idx) ? NULL : lg_check(L, idx); }

/* step_t += 1 in its own dtype (PyTorch's `state['step'] += 1` on a float32 tensor, which
 * stops counting at 2^24); returns the new value and the old one in *old. */
static double opt_step_inc(lua_State *L, graft_tensor *t, double *old) {
    if (graft_tensor_numel(t) != 1) {
        lg_errorf(L, "optimizer: the step counter must hold one value, got %lld", (long long)graft_tensor_numel(t));
        return 0;
    }
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

void graft_bind_optim(lua_State *L) {
    int module = lua_gettop(L);
    static const luaL_Reg fns[] = {{"sgd", l_sgd}, {"adam", l_adam}, {"rmsprop", l_rmsprop},
                                   {"adagrad", l_adagrad}, {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_setfield(L, module, "_optim");
}
