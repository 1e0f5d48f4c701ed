/* graft bindings: reductions (t:sum(2, {keepdim = true}), t:max(2) -> values, indices,
 * t:var({unbiased = false}), t:norm(1, {1, 2}), t:cumsum(1), ...), as methods and as
 * graft.<name>(t, ...) functions. Dims are 1-based or negative here and 0-based in the
 * core; index results are 0-based, as PyTorch. */
#include "bind.h"

#include <math.h>
#include <string.h>

#include "ops/reduce.h"
#include "ops/sort.h"

/* ---- argument parsing ---- */

/* What follows the tensor: [dims] [bool] [bool] [options]. */
typedef struct {
    int ndims;               /* 0: every dim */
    int dims[GRAFT_MAX_DIMS];
    bool has_dims;
    int nbools;              /* positional booleans after the dims */
    bool bools[2];
    int opts;                /* stack index of the options table, or 0 */
} rb_args;

/* Reads a dim (integer) or a sequence of dims at idx into a (1-based -> 0-based). */
static void rb_read_dims(lua_State *L, int idx, const graft_tensor *t, rb_args *a, const char *op) {
    a->has_dims = true;
    a->ndims = 0;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        int isint;
        lua_Integer d = lua_tointegerx(L, idx, &isint);
        if (!isint) luaL_error(L, "%s: dim must be an integer", op);
        a->dims[a->ndims++] = lg_dim(L, d, t->ndim, op);
        return;
    }
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    if (len > GRAFT_MAX_DIMS) luaL_error(L, "%s: at most %d dims, got %d", op, GRAFT_MAX_DIMS, (int)len);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, idx, i);
        int isint;
        lua_Integer d = lua_tointegerx(L, -1, &isint);
        lua_pop(L, 1);
        if (!isint) luaL_error(L, "%s: dim %d in the list is not an integer", op, (int)i);
        a->dims[a->ndims++] = lg_dim(L, d, t->ndim, op);
    }
}

static bool rb_is_dims(lua_State *L, int idx, int opts) {
    int ty = lua_type(L, idx);
    return ty == LUA_TNUMBER || (ty == LUA_TTABLE && idx != opts && !lg_test(L, idx));
}

/* Parses dims, positional booleans and the options table starting at `first`; the
 * options' `dim` (a dim or a list) counts as the dims. */
static void rb_parse(lua_State *L, int first, const graft_tensor *t, rb_args *a, const char *op) {
    memset(a, 0, sizeof *a);
    a->opts = lg_opts_index(L, first);
    int i = first;
    if (rb_is_dims(L, i, a->opts)) rb_read_dims(L, i++, t, a, op);
    while (a->nbools < 2 && lua_isboolean(L, i)) a->bools[a->nbools++] = lua_toboolean(L, i++);
    if (a->opts) {
        if (lua_getfield(L, a->opts, "dim") != LUA_TNIL) {
            if (a->has_dims) luaL_error(L, "%s: dims given twice (argument and option 'dim')", op);
            rb_read_dims(L, lua_gettop(L), t, a, op);
        }
        lua_pop(L, 1);
    }
    int top = lua_gettop(L);
    for (int k = i; k <= top; k++)
        if (k != a->opts && !lua_isnil(L, k))
            luaL_error(L, "%s: unexpected argument #%d (a %s)", op, k, luaL_typename(L, k));
}

static bool rb_keepdim(lua_State *L, const rb_args *a, int pos) {
    bool k = a->nbools > pos ? a->bools[pos] : false;
    return lg_opt_bool(L, a->opts, "keepdim", k);
}

/* The one dim of max(dim)/argmax(dim) style calls; -1 in *has when there is none. */
static int rb_one_dim(lua_State *L, const rb_args *a, const char *op) {
    if (a->has_dims && a->ndims != 1) luaL_error(L, "%s: expected a single dim, got %d", op, a->ndims);
    return a->dims[0];
}

/* ---- sum, mean, prod ---- */

typedef graft_status (*rb_sum_fn)(graft_tensor **, graft_tensor *, const int *, int, bool, int);

static int rb_sumlike(lua_State *L, rb_sum_fn fn, const char *op) {
    graft_tensor *t = lg_check(L, 1);
    rb_args a;
    rb_parse(L, 2, t, &a, op);
    bool keepdim = rb_keepdim(L, &a, 0);
    int dtype = lg_opt_dtype(L, a.opts, -1);
    graft_tensor **out = lg_shell(L);
    if (fn(out, t, a.dims, a.ndims, keepdim, dtype)) return lg_raise(L);
    return 1;
}

static int l_sum(lua_State *L) { return rb_sumlike(L, graft_reduce_sum, "sum"); }
static int l_mean(lua_State *L) { return rb_sumlike(L, graft_reduce_mean, "mean"); }
static int l_prod(lua_State *L) { return rb_sumlike(L, graft_reduce_prod, "prod"); }

/* ---- extremes ---- */

typedef graft_status (*rb_dims_fn)(graft_tensor **, graft_tensor *, const int *, int, bool);

static int rb_dimsop(lua_State *L, rb_dims_fn fn, const char *op) {
    graft_tensor *t = lg_check(L, 1);
    rb_args a;
    rb_parse(L, 2, t, &a, op);
    bool keepdim = rb_keepdim(L, &a, 0);
    graft_tensor **out = lg_shell(L);
    if (fn(out, t, a.dims, a.ndims, keepdim)) return lg_raise(L);
    return 1;
}

static int l_amax(lua_State *L) { return rb_dimsop(L, graft_reduce_amax, "amax"); }
static int l_amin(lua_State *L) { return rb_dimsop(L, graft_reduce_amin, "amin"); }
static int l_any(lua_State *L) { return rb_dimsop(L, graft_reduce_any, "any"); }
static int l_all(lua_State *L) { return rb_dimsop(L, graft_reduce_all, "all"); }
static int l_logsumexp(lua_State *L) { return rb_dimsop(L, graft_reduce_logsumexp, "logsumexp"); }

/* t:max() -> 0-dim; t:max(dim [, keepdim]) -> values, indices; t:max(other) -> the
 * elementwise maximum (delegated to t:maximum, as torch.max(a, b)). */
static int rb_extreme(lua_State *L, bool is_max) {
    const char *op = is_max ? "max" : "min";
    graft_tensor *t = lg_check(L, 1);
    if (lg_test(L, 2)) {
        const char *other = is_max ? "maximum" : "minimum";
        if (lua_getfield(L, 1, other) == LUA_TNIL)
            return luaL_error(L, "%s: the elementwise %s of two tensors is not available", op, other);
        lua_pushvalue(L, 1);
        lua_pushvalue(L, 2);
        lua_call(L, 2, 1);
        return 1;
    }
    rb_args a;
    rb_parse(L, 2, t, &a, op);
    if (!a.has_dims) {
        if (a.nbools || lg_opt_bool(L, a.opts, "keepdim", 0))
            return luaL_error(L, "%s: keepdim needs a dim", op);
        graft_tensor **out = lg_shell(L);
        if ((is_max ? graft_reduce_max_all : graft_reduce_min_all)(out, t)) return lg_raise(L);
        return 1;
    }
    int dim = rb_one_dim(L, &a, op);
    bool keepdim = rb_keepdim(L, &a, 0);
    graft_tensor **values = lg_shell(L);
    graft_tensor **indices = lg_shell(L);
    if ((is_max ? graft_reduce_max_dim : graft_reduce_min_dim)(values, indices, t, dim, keepdim)) return lg_raise(L);
    return 2;
}

static int l_max(lua_State *L) { return rb_extreme(L, true); }
static int l_min(lua_State *L) { return rb_extreme(L, false); }

static int rb_arg(lua_State *L, bool is_max) {
    const char *op = is_max ? "argmax" : "argmin";
    graft_tensor *t = lg_check(L, 1);
    rb_args a;
    rb_parse(L, 2, t, &a, op);
    int dim = a.has_dims ? rb_one_dim(L, &a, op) : 0;
    bool keepdim = rb_keepdim(L, &a, 0);
    graft_tensor **out = lg_shell(L);
    if ((is_max ? graft_reduce_argmax : graft_reduce_argmin)(out, t, a.has_dims ? &dim : NULL, keepdim))
        return lg_raise(L);
    return 1;
}

static int l_argmax(lua_State *L) { return rb_arg(L, true); }
static int l_argmin(lua_State *L) { return rb_arg(L, false); }

/* ---- statistics ---- */

/* t:var([dims] [, unbiased [, keepdim]] [, {unbiased =, correction =, keepdim =, dim =}]) */
static int rb_var(lua_State *L, bool take_sqrt) {
    const char *op = take_sqrt ? "std" : "var";
    graft_tensor *t = lg_check(L, 1);
    rb_args a;
    rb_parse(L, 2, t, &a, op);
    bool unbiased = a.nbools > 0 ? a.bools[0] : true;
    unbiased = lg_opt_bool(L, a.opts, "unbiased", unbiased);
    double correction = lg_opt_number(L, a.opts, "correction", unbiased ? 1.0 : 0.0);
    bool keepdim = rb_keepdim(L, &a, 1);
    graft_tensor **out = lg_shell(L);
    if ((take_sqrt ? graft_reduce_std : graft_reduce_var)(out, t, a.dims, a.ndims, correction, keepdim))
        return lg_raise(L);
    return 1;
}

static int l_var(lua_State *L) { return rb_var(L, false); }
static int l_std(lua_State *L) { return rb_var(L, true); }

/* p as a number (math.huge and -math.huge for the inf-norms) or "fro". */
static double rb_norm_p(lua_State *L, int idx) {
    if (lua_type(L, idx) == LUA_TNUMBER) return lua_tonumber(L, idx);
    const char *s = lua_tostring(L, idx);
    if (strcmp(s, "fro") == 0) return 2;
    if (strcmp(s, "inf") == 0) return INFINITY;
    if (strcmp(s, "-inf") == 0) return -INFINITY;
    return luaL_error(L, "norm: p must be a number or 'fro', got '%s'", s);
}

/* t:norm([p [, dims [, keepdim]]] [, {p =, dim =, keepdim =, dtype =}]) */
static int l_norm(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    double p = 2;
    int first = 2;
    int ty = lua_type(L, 2);
    if (ty == LUA_TNUMBER || ty == LUA_TSTRING) {
        p = rb_norm_p(L, 2);
        first = 3;
    } else if (ty == LUA_TNIL && lua_gettop(L) >= 2) {
        first = 3;
    }
    rb_args a;
    rb_parse(L, first, t, &a, "norm");
    if (a.opts) {
        if (lua_getfield(L, a.opts, "p") != LUA_TNIL) p = rb_norm_p(L, lua_gettop(L));
        lua_pop(L, 1);
    }
    bool keepdim = rb_keepdim(L, &a, 0);
    int dtype = lg_opt_dtype(L, a.opts, -1);
    graft_tensor **out = lg_shell(L);
    if (dtype >= 0 && dtype != (int)t->dtype) {
        graft_tensor *c = NULL;
        if (graft_tensor_to_dtype(&c, t, (graft_dtype)dtype)) return lg_raise(L);
        graft_status st = graft_reduce_norm(out, c, p, a.dims, a.ndims, keepdim);
        graft_tensor_release(c);
        if (st) return lg_raise(L);
        return 1;
    }
    if (graft_reduce_norm(out, t, p, a.dims, a.ndims, keepdim)) return lg_raise(L);
    return 1;
}

/* ---- scans ---- */

static int rb_scan(lua_State *L, bool prod) {
    const char *op = prod ? "cumprod" : "cumsum";
    graft_tensor *t = lg_check(L, 1);
    rb_args a;
    rb_parse(L, 2, t, &a, op);
    if (!a.has_dims) return luaL_error(L, "%s: expected a dim", op);
    int dim = rb_one_dim(L, &a, op);
    int dtype = lg_opt_dtype(L, a.opts, -1);
    graft_tensor **out = lg_shell(L);
    if ((prod ? graft_reduce_cumprod : graft_reduce_cumsum)(out, t, dim, dtype)) return lg_raise(L);
    return 1;
}

static int l_cumsum(lua_State *L) { return rb_scan(L, false); }
static int l_cumprod(lua_State *L) { return rb_scan(L, true); }

/* ---- sorting (core/ops/sort.c) ---- */

/* The dim (default -1) and the positional booleans of sort/argsort/topk. */
static int rb_sort_dim(lua_State *L, const rb_args *a, const char *op) {
    return a->has_dims ? rb_one_dim(L, a, op) : -1;
}

/* t:sort([dim=-1] [, descending=false] [, {dim =, descending =, stable =}]) -> values,
 * indices (0-based int64); t:argsort(...) -> indices. */
static int rb_sort(lua_State *L, bool values_too) {
    const char *op = values_too ? "sort" : "argsort";
    graft_tensor *t = lg_check(L, 1);
    rb_args a;
    rb_parse(L, 2, t, &a, op);
    if (a.nbools > 1) return luaL_error(L, "%s: expected (dim, descending); give stable as {stable = true}", op);
    int dim = rb_sort_dim(L, &a, op);
    bool descending = lg_opt_bool(L, a.opts, "descending", a.nbools ? a.bools[0] : false);
    bool stable = lg_opt_bool(L, a.opts, "stable", false);
    if (!values_too) {
        graft_tensor **indices = lg_shell(L);
        if (graft_argsort(indices, t, dim, descending, stable)) return lg_raise(L);
        return 1;
    }
    graft_tensor **values = lg_shell(L);
    graft_tensor **indices = lg_shell(L);
    if (graft_sort(values, indices, t, dim, descending, stable)) return lg_raise(L);
    return 2;
}

static int l_sort(lua_State *L) { return rb_sort(L, true); }
static int l_argsort(lua_State *L) { return rb_sort(L, false); }

/* t:topk(k [, dim=-1] [, largest=true [, sorted=true]] [, {dim =, largest =, sorted =}])
 * -> values, indices (0-based int64). */
static int l_topk(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int isint;
    lua_Integer k = lua_tointegerx(L, 2, &isint);
    if (!isint) return luaL_error(L, "topk: k must be an integer, got a %s", luaL_typename(L, 2));
    rb_args a;
    rb_parse(L, 3, t, &a, "topk");
    int dim = rb_sort_dim(L, &a, "topk");
    bool largest = lg_opt_bool(L, a.opts, "largest", a.nbools > 0 ? a.bools[0] : true);
    bool sorted = lg_opt_bool(L, a.opts, "sorted", a.nbools > 1 ? a.bools[1] : true);
    graft_tensor **values = lg_shell(L);
    graft_tensor **indices = lg_shell(L);
    if (graft_topk(values, indices, t, (int64_t)k, dim, largest, sorted)) return lg_raise(L);
    return 2;
}

static const luaL_Reg reduce_funcs[] = {
    {"sum", l_sum}, {"mean", l_mean}, {"prod", l_prod}, {"max", l_max}, {"min", l_min},
    {"amax", l_amax}, {"amin", l_amin}, {"argmax", l_argmax}, {"argmin", l_argmin},
    {"var", l_var}, {"std", l_std}, {"norm", l_norm}, {"any", l_any}, {"all", l_all},
    {"logsumexp", l_logsumexp}, {"cumsum", l_cumsum}, {"cumprod", l_cumprod},
    {"sort", l_sort}, {"argsort", l_argsort}, {"topk", l_topk},
    {NULL, NULL}};

void graft_bind_reduce(lua_State *L) {
    lg_register_methods(L, reduce_funcs);
    lg_register_functions(L, reduce_funcs);
}
