/* graft bindings: view ops (view, reshape, flatten, squeeze, unsqueeze, transpose,
 * permute, t, expand, narrow, select, slice). Dims and positions are 1-based here. */
#include "bind.h"

#include "autograd/autograd.h"
#include "ops/view.h"

/* A shape that may hold -1: integers from `first`, or one table at `first`. */
static int view_shape(lua_State *L, int first, int64_t *shape, const char *op) {
    int n = 0;
    if (lua_type(L, first) == LUA_TTABLE && !lg_test(L, first)) {
        lua_Integer len = (lua_Integer)lua_rawlen(L, first);
        if (len > GRAFT_MAX_DIMS) return luaL_error(L, "%s: at most %d dims", op, GRAFT_MAX_DIMS);
        for (lua_Integer i = 1; i <= len; i++) {
            lua_rawgeti(L, first, i);
            int ok;
            shape[n++] = lua_tointegerx(L, -1, &ok);
            lua_pop(L, 1);
            if (!ok) return luaL_error(L, "%s: shape entry %d is not an integer", op, (int)i);
        }
        return n;
    }
    int top = lua_gettop(L);
    for (int i = first; i <= top; i++) {
        if (n >= GRAFT_MAX_DIMS) return luaL_error(L, "%s: at most %d dims", op, GRAFT_MAX_DIMS);
        shape[n++] = luaL_checkinteger(L, i);
    }
    return n;
}

static int v_view(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int64_t shape[GRAFT_MAX_DIMS];
    int n = view_shape(L, 2, shape, "view");
    graft_tensor **out = lg_shell(L);
    if (graft_view(out, t, n, shape)) return lg_raise(L);
    return 1;
}

static int v_reshape(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int64_t shape[GRAFT_MAX_DIMS];
    int n = view_shape(L, 2, shape, "reshape");
    graft_tensor **out = lg_shell(L);
    if (graft_reshape(out, t, n, shape)) return lg_raise(L);
    return 1;
}

static int v_view_as(lua_State *L) {
    graft_tensor *t = lg_check(L, 1), *o = lg_check(L, 2);
    graft_tensor **out = lg_shell(L);
    if (graft_view(out, t, o->ndim, o->shape)) return lg_raise(L);
    return 1;
}

static int v_reshape_as(lua_State *L) {
    graft_tensor *t = lg_check(L, 1), *o = lg_check(L, 2);
    graft_tensor **out = lg_shell(L);
    if (graft_reshape(out, t, o->ndim, o->shape)) return lg_raise(L);
    return 1;
}

/* flatten([start_dim = 1 [, end_dim = -1]]) */
static int v_flatten(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int start = 0, end = t->ndim ? t->ndim - 1 : 0;
    if (!lua_isnoneornil(L, 2)) start = lg_check_dim(L, 2, t->ndim, "flatten");
    if (!lua_isnoneornil(L, 3)) end = lg_check_dim(L, 3, t->ndim, "flatten");
    graft_tensor **out = lg_shell(L);
    if (graft_flatten(out, t, start, end)) return lg_raise(L);
    return 1;
}

static int v_squeeze(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int dim = lua_isnoneornil(L, 2) ? -1 : lg_check_dim(L, 2, t->ndim, "squeeze");
    graft_tensor **out = lg_shell(L);
    if (graft_squeeze(out, t, dim)) return lg_raise(L);
    return 1;
}

static int v_unsqueeze(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int dim = lg_check_dim(L, 2, t->ndim + 1, "unsqueeze");
    graft_tensor **out = lg_shell(L);
    if (graft_unsqueeze(out, t, dim)) return lg_raise(L);
    return 1;
}

static int v_transpose(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int d0 = lg_check_dim(L, 2, t->ndim, "transpose"), d1 = lg_check_dim(L, 3, t->ndim, "transpose");
    graft_tensor **out = lg_shell(L);
    if (graft_transpose(out, t, d0, d1)) return lg_raise(L);
    return 1;
}

static int v_t(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (t->ndim > 2) return luaL_error(L, "t: expects a tensor with at most 2 dims, got %d (use transpose)", t->ndim);
    graft_tensor **out = lg_shell(L);
    if (graft_ag_t(out, t)) return lg_raise(L);
    return 1;
}

/* permute(d1, d2, ...) or permute({d1, d2, ...}) */
static int v_permute(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int64_t dims[GRAFT_MAX_DIMS];
    int n = view_shape(L, 2, dims, "permute");
    int perm[GRAFT_MAX_DIMS];
    for (int i = 0; i < n; i++) perm[i] = lg_dim(L, dims[i], t->ndim, "permute");
    graft_tensor **out = lg_shell(L);
    if (graft_permute(out, t, perm, n)) return lg_raise(L);
    return 1;
}

static int v_expand(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int64_t sizes[GRAFT_MAX_DIMS];
    int n = view_shape(L, 2, sizes, "expand");
    graft_tensor **out = lg_shell(L);
    if (graft_expand(out, t, n, sizes)) return lg_raise(L);
    return 1;
}

static int v_expand_as(lua_State *L) {
    graft_tensor *t = lg_check(L, 1), *o = lg_check(L, 2);
    graft_tensor **out = lg_shell(L);
    if (graft_expand(out, t, o->ndim, o->shape)) return lg_raise(L);
    return 1;
}

/* narrow(dim, start, length): start is 1-based (negative counts from the end). */
static int v_narrow(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int dim = lg_check_dim(L, 2, t->ndim, "narrow");
    lua_Integer start = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
    int64_t size = t->ndim ? t->shape[dim] : 1;
    int64_t s0 = (start == size + 1 && len == 0) ? size : lg_index(L, start, size, "narrow");
    graft_tensor **out = lg_shell(L);
    if (graft_narrow(out, t, dim, s0, len)) return lg_raise(L);
    return 1;
}

/* select(dim, index): index 1-based (negative from the end); the dim is removed. */
static int v_select(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (t->ndim == 0) return luaL_error(L, "select: cannot select from a 0-dim tensor");
    int dim = lg_check_dim(L, 2, t->ndim, "select");
    int64_t idx = lg_index(L, luaL_checkinteger(L, 3), t->shape[dim], "select");
    graft_tensor **out = lg_shell(L);
    if (graft_ag_select(out, t, dim, idx)) return lg_raise(L);
    return 1;
}

/* slice(dim, first, last [, step]): elements first..last inclusive (1-based, negative
 * from the end), every step-th, as Torch7's sub with a step. */
static int v_slice(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int dim = lg_check_dim(L, 2, t->ndim, "slice");
    int64_t size = t->ndim ? t->shape[dim] : 1;
    lua_Integer first = luaL_optinteger(L, 3, 1), last = luaL_optinteger(L, 4, -1);
    lua_Integer step = luaL_optinteger(L, 5, 1);
    if (first < 0) first += size + 1;
    if (last < 0) last += size + 1;
    if (first < 1 || first > size + 1 || last > size || last < 0)
        return lg_errorf(L, "slice: range %lld..%lld is out of bounds for a dim of size %lld", (long long)first,
                          (long long)last, (long long)size);
    graft_tensor **out = lg_shell(L);
    if (graft_slice(out, t, dim, first - 1, last, step)) return lg_raise(L);
    return 1;
}

static const luaL_Reg view_funcs[] = {
    {"view", v_view}, {"reshape", v_reshape}, {"view_as", v_view_as}, {"reshape_as", v_reshape_as},
    {"flatten", v_flatten}, {"squeeze", v_squeeze}, {"unsqueeze", v_unsqueeze},
    {"transpose", v_transpose}, {"t", v_t}, {"permute", v_permute}, {"expand", v_expand},
    {"expand_as", v_expand_as}, {"narrow", v_narrow}, {"select", v_select}, {"slice", v_slice},
    {NULL, NULL}};

void graft_bind_view(lua_State *L) {
    lg_register_methods(L, view_funcs);
    lg_register_functions(L, view_funcs);
}
