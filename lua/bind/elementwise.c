/* graft bindings: elementwise ops as tensor methods (a:add(b)), module functions
 * (graft.add(a, b)), in-place methods (a:add_(b)) and the arithmetic metamethods
 * (a + b, 2 - t, -t, a // b, a % b, a ^ 2). Comparisons are methods only: Lua turns
 * __eq/__lt/__le results into booleans. */
#include "bind.h"

#include <string.h>

#include "ops/elementwise.h"

/* ---- arguments ---- */

/* The tensor metatable, also kept under a light-userdata key: luaL_testudata finds it
 * by name (a string lookup with a strcmp) on every call, this is one pointer-keyed get,
 * which keeps `a + b` cheap. Per state, so hosts with several states stay safe. */
static const char ew_mt_key = 0;

static graft_tensor **ew_toudata(lua_State *L, int idx) {
    void *p = lua_touserdata(L, idx);
    if (!p || !lua_getmetatable(L, idx)) return NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &ew_mt_key);
    bool ok = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return ok ? p : NULL;
}

/* The operand at idx: a tensor, or a Lua integer, float or boolean (a scalar). */
static void ew_operand(lua_State *L, int idx, graft_operand *o, const char *name) {
    switch (lua_type(L, idx)) {
    case LUA_TUSERDATA: {
        graft_tensor **p = ew_toudata(L, idx);
        if (!p) break;
        if (!*p) luaL_error(L, "%s: tensor is closed", name);
        o->t = *p;
        return;
    }
    case LUA_TNUMBER:
        o->t = NULL;
        if (lua_isinteger(L, idx)) o->s = graft_scalar_int(lua_tointeger(L, idx));
        else o->s = graft_scalar_float(lua_tonumber(L, idx));
        return;
    case LUA_TBOOLEAN:
        o->t = NULL;
        o->s = graft_scalar_bool(lua_toboolean(L, idx));
        return;
    default:
        break;
    }
    luaL_error(L, "%s: expected a tensor or a number, got %s", name, luaL_typename(L, idx));
}

static graft_tensor *ew_tensor(lua_State *L, int idx, const char *name) {
    graft_operand o;
    ew_operand(L, idx, &o, name);
    if (!o.t) luaL_error(L, "%s: expected a tensor, got %s", name, luaL_typename(L, idx));
    return o.t;
}

/* A scalar option (alpha): integer, float or boolean. */
static bool ew_opt_scalar(lua_State *L, int opts, const char *key, graft_scalar *s, const char *name) {
    if (!opts) return false;
    bool found = true;
    switch (lua_getfield(L, opts, key)) {
    case LUA_TNIL: found = false; break;
    case LUA_TBOOLEAN: *s = graft_scalar_bool(lua_toboolean(L, -1)); break;
    case LUA_TNUMBER:
        *s = lua_isinteger(L, -1) ? graft_scalar_int(lua_tointeger(L, -1)) : graft_scalar_float(lua_tonumber(L, -1));
        break;
    default: return luaL_error(L, "%s: option '%s' must be a number, got %s", name, key, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return found;
}

/* ---- binary ---- */

/* (a, b [, {alpha = x}]): either side may be a number; the result is a fresh tensor. */
static int ew_binary(lua_State *L, graft_binary_op op) {
    const char *name = graft_binary_name(op);
    graft_operand a, b;
    ew_operand(L, 1, &a, name);
    ew_operand(L, 2, &b, name);
    graft_scalar alpha;
    const graft_scalar *pa = NULL;
    if (lua_gettop(L) >= 3 && (op == GRAFT_EW_ADD || op == GRAFT_EW_SUB) &&
        ew_opt_scalar(L, lg_opts_index(L, 3), "alpha", &alpha, name))
        pa = &alpha;
    graft_tensor **out = lg_shell(L);
    if (graft_binary(out, op, a, b, pa)) return lg_raise(L);
    return 1;
}

/* self:op_(b [, opts]): writes into self and returns it. */
static int ew_binary_(lua_State *L, graft_binary_op op) {
    const char *name = graft_binary_name(op);
    graft_tensor *self = ew_tensor(L, 1, name);
    graft_operand b;
    ew_operand(L, 2, &b, name);
    graft_scalar alpha;
    const graft_scalar *pa = NULL;
    if (lua_gettop(L) >= 3 && (op == GRAFT_EW_ADD || op == GRAFT_EW_SUB) &&
        ew_opt_scalar(L, lg_opts_index(L, 3), "alpha", &alpha, name))
        pa = &alpha;
    if (graft_binary_(self, op, b, pa)) return lg_raise(L);
    lua_settop(L, 1);
    return 1;
}

/* div's {rounding_mode = "trunc" | "floor"}; nil is true division. */
static graft_binary_op ew_div_mode(lua_State *L, int first) {
    int opts = lua_gettop(L) >= first ? lg_opts_index(L, first) : 0;
    if (!opts) return GRAFT_EW_DIV;
    graft_binary_op op = GRAFT_EW_DIV;
    if (lua_getfield(L, opts, "rounding_mode") != LUA_TNIL) {
        const char *m = lua_tostring(L, -1);
        if (m && strcmp(m, "trunc") == 0) op = GRAFT_EW_DIV_TRUNC;
        else if (m && strcmp(m, "floor") == 0) op = GRAFT_EW_FLOOR_DIVIDE;
        else luaL_error(L, "div: rounding_mode must be nil, \"trunc\" or \"floor\", got %s",
                        m ? m : luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return op;
}

static int lf_div(lua_State *L) { return ew_binary(L, ew_div_mode(L, 3)); }
static int lf_div_(lua_State *L) { return ew_binary_(L, ew_div_mode(L, 3)); }

#define EW_BIN_FNS(E, lname)                                                \
    static int lf_##lname(lua_State *L) { return ew_binary(L, GRAFT_EW_##E); } \
    static int lf_##lname##_(lua_State *L) { return ew_binary_(L, GRAFT_EW_##E); }
EW_BIN_FNS(ADD, add)
EW_BIN_FNS(SUB, sub)
EW_BIN_FNS(MUL, mul)
EW_BIN_FNS(FLOOR_DIVIDE, floor_divide)
EW_BIN_FNS(POW, pow)
EW_BIN_FNS(MAXIMUM, maximum)
EW_BIN_FNS(MINIMUM, minimum)
EW_BIN_FNS(REMAINDER, remainder)
EW_BIN_FNS(FMOD, fmod)
EW_BIN_FNS(EQ, eq)
EW_BIN_FNS(NE, ne)
EW_BIN_FNS(LT, lt)
EW_BIN_FNS(LE, le)
EW_BIN_FNS(GT, gt)
EW_BIN_FNS(GE, ge)
EW_BIN_FNS(LOGICAL_AND, logical_and)
EW_BIN_FNS(LOGICAL_OR, logical_or)
EW_BIN_FNS(LOGICAL_XOR, logical_xor)

/* `s / t` is t:reciprocal() * s, as Python's Tensor.__rtruediv__ (so results match
 * PyTorch's bit for bit); `t / x` is true division. */
static int m_div(lua_State *L) {
    if (lua_type(L, 1) != LUA_TNUMBER && lua_type(L, 1) != LUA_TBOOLEAN) return ew_binary(L, GRAFT_EW_DIV);
    graft_operand s;
    ew_operand(L, 1, &s, "div");
    graft_tensor *t = ew_tensor(L, 2, "div");
    graft_tensor **out = lg_shell(L);
    graft_tensor *r;
    if (graft_unary(&r, GRAFT_EW_RECIPROCAL, t)) return lg_raise(L);
    graft_status st = graft_binary(out, GRAFT_EW_MUL, graft_operand_tensor(r), s, NULL);
    graft_tensor_release(r);
    if (st) return lg_raise(L);
    return 1;
}

/* ---- unary ---- */

static int ew_unary(lua_State *L, graft_unary_op op) {
    graft_tensor *a = ew_tensor(L, 1, graft_unary_name(op));
    graft_tensor **out = lg_shell(L);
    if (graft_unary(out, op, a)) return lg_raise(L);
    return 1;
}

static int ew_unary_(lua_State *L, graft_unary_op op) {
    graft_tensor *a = ew_tensor(L, 1, graft_unary_name(op));
    if (graft_unary_(a, op)) return lg_raise(L);
    lua_settop(L, 1);
    return 1;
}

#define EW_UN_FN(E, lname) static int lf_##lname(lua_State *L) { return ew_unary(L, GRAFT_EW_##E); }
#define EW_UN_FNS(E, lname) \
    EW_UN_FN(E, lname) static int lf_##lname##_(lua_State *L) { return ew_unary_(L, GRAFT_EW_##E); }
EW_UN_FNS(NEG, neg)
EW_UN_FNS(ABS, abs)
EW_UN_FNS(SIGN, sign)
EW_UN_FNS(EXP, exp)
EW_UN_FNS(LOG, log)
EW_UN_FNS(LOG1P, log1p)
EW_UN_FNS(SQRT, sqrt)
EW_UN_FNS(RSQRT, rsqrt)
EW_UN_FNS(SIN, sin)
EW_UN_FNS(COS, cos)
EW_UN_FNS(TANH, tanh)
EW_UN_FNS(SIGMOID, sigmoid)
EW_UN_FNS(RECIPROCAL, reciprocal)
EW_UN_FNS(SQUARE, square)
EW_UN_FNS(FLOOR, floor)
EW_UN_FNS(CEIL, ceil)
EW_UN_FNS(ROUND, round)
EW_UN_FNS(TRUNC, trunc)
EW_UN_FNS(EXPM1, expm1)
EW_UN_FNS(LOG2, log2)
EW_UN_FNS(LOG10, log10)
EW_UN_FNS(RELU, relu)
EW_UN_FNS(ERF, erf)
EW_UN_FNS(ERFC, erfc)
EW_UN_FN(ISNAN, isnan)
EW_UN_FN(ISINF, isinf)
EW_UN_FN(ISFINITE, isfinite)
EW_UN_FNS(LOGICAL_NOT, logical_not)

/* ---- clamp ---- */

/* A bound at idx (nil = none); fills *o and returns it, or NULL. */
static const graft_operand *ew_bound(lua_State *L, int idx, graft_operand *o) {
    if (lua_isnoneornil(L, idx)) return NULL;
    ew_operand(L, idx, o, "clamp");
    return o;
}

/* clamp(t, min, max) or clamp(t, {min = ..., max = ...}); mode 1 = clamp_min, 2 = clamp_max. */
static int ew_clamp(lua_State *L, int mode, bool inplace) {
    graft_tensor *a = ew_tensor(L, 1, "clamp");
    graft_operand lo, hi;
    const graft_operand *plo = NULL, *phi = NULL;
    if (mode == 1) plo = ew_bound(L, 2, &lo);
    else if (mode == 2) phi = ew_bound(L, 2, &hi);
    else {
        int opts = lg_opts_index(L, 2);
        if (opts) {
            lua_getfield(L, opts, "min");
            lua_getfield(L, opts, "max");
            plo = ew_bound(L, -2, &lo);
            phi = ew_bound(L, -1, &hi);
        } else {
            plo = ew_bound(L, 2, &lo);
            phi = ew_bound(L, 3, &hi);
        }
    }
    if (mode && !plo && !phi) return luaL_error(L, "clamp: expected a bound, got nil");
    if (inplace) {
        if (graft_clamp_(a, plo, phi)) return lg_raise(L);
        lua_settop(L, 1);
        return 1;
    }
    graft_tensor **out = lg_shell(L);
    if (graft_clamp(out, a, plo, phi)) return lg_raise(L);
    return 1;
}

static int lf_clamp(lua_State *L) { return ew_clamp(L, 0, false); }
static int lf_clamp_(lua_State *L) { return ew_clamp(L, 0, true); }
static int lf_clamp_min(lua_State *L) { return ew_clamp(L, 1, false); }
static int lf_clamp_min_(lua_State *L) { return ew_clamp(L, 1, true); }
static int lf_clamp_max(lua_State *L) { return ew_clamp(L, 2, false); }
static int lf_clamp_max_(lua_State *L) { return ew_clamp(L, 2, true); }

/* ---- where ---- */

/* graft.where(cond, a, b): a where cond, else b. */
static int lf_where(lua_State *L) {
    graft_tensor *cond = ew_tensor(L, 1, "where");
    graft_operand a, b;
    ew_operand(L, 2, &a, "where");
    ew_operand(L, 3, &b, "where");
    graft_tensor **out = lg_shell(L);
    if (graft_where(out, cond, a, b)) return lg_raise(L);
    return 1;
}

/* x:where(cond, y): x where cond, else y (PyTorch's Tensor.where). */
static int t_where(lua_State *L) {
    graft_operand a, b;
    ew_operand(L, 1, &a, "where");
    graft_tensor *cond = ew_tensor(L, 2, "where");
    ew_operand(L, 3, &b, "where");
    graft_tensor **out = lg_shell(L);
    if (graft_where(out, cond, a, b)) return lg_raise(L);
    return 1;
}

/* ---- promotion queries ---- */

/* graft.result_type(a, b, ...): the dtype an elementwise op on these would produce. */
static int lf_result_type(lua_State *L) {
    int n = lua_gettop(L);
    if (n < 1 || n > 8) return luaL_error(L, "result_type: expected 1 to 8 operands, got %d", n);
    graft_operand ops[8];
    for (int i = 0; i < n; i++) ew_operand(L, i + 1, &ops[i], "result_type");
    lua_pushstring(L, graft_dtype_name(graft_result_type(n, ops)));
    return 1;
}

static int lf_can_cast(lua_State *L) {
    lua_pushboolean(L, graft_can_cast(lg_check_dtype(L, 1), lg_check_dtype(L, 2)));
    return 1;
}

/* ---- registration ---- */

#define EW_BOTH(lname) {#lname, lf_##lname}, {#lname "_", lf_##lname##_}
/* Names that are both methods and module functions. */
static const luaL_Reg ew_functions[] = {
    EW_BOTH(add), EW_BOTH(sub), EW_BOTH(mul), EW_BOTH(div), EW_BOTH(floor_divide), EW_BOTH(pow),
    EW_BOTH(maximum), EW_BOTH(minimum), EW_BOTH(remainder), EW_BOTH(fmod), EW_BOTH(eq), EW_BOTH(ne),
    EW_BOTH(lt), EW_BOTH(le), EW_BOTH(gt), EW_BOTH(ge), EW_BOTH(logical_and), EW_BOTH(logical_or),
    EW_BOTH(logical_xor), EW_BOTH(logical_not),
    {"subtract", lf_sub}, {"multiply", lf_mul}, {"divide", lf_div}, {"true_divide", lf_div},
    {"greater", lf_gt}, {"greater_equal", lf_ge}, {"less", lf_lt}, {"less_equal", lf_le},
    {"not_equal", lf_ne},
    EW_BOTH(neg), EW_BOTH(abs), EW_BOTH(sign), EW_BOTH(exp), EW_BOTH(log), EW_BOTH(log1p),
    EW_BOTH(sqrt), EW_BOTH(rsqrt), EW_BOTH(sin), EW_BOTH(cos), EW_BOTH(tanh), EW_BOTH(sigmoid),
    EW_BOTH(reciprocal), EW_BOTH(square), EW_BOTH(floor), EW_BOTH(ceil), EW_BOTH(round),
    EW_BOTH(trunc), EW_BOTH(expm1), EW_BOTH(log2), EW_BOTH(log10), EW_BOTH(relu),
    EW_BOTH(erf), EW_BOTH(erfc),
    {"negative", lf_neg}, {"absolute", lf_abs},
    {"isnan", lf_isnan}, {"isinf", lf_isinf}, {"isfinite", lf_isfinite},
    EW_BOTH(clamp), EW_BOTH(clamp_min), EW_BOTH(clamp_max), {"clip", lf_clamp}, {"clip_", lf_clamp_},
    {NULL, NULL}};

static const luaL_Reg ew_module_only[] = {
    {"where", lf_where}, {"result_type", lf_result_type}, {"can_cast", lf_can_cast}, {NULL, NULL}};

static const luaL_Reg ew_methods_only[] = {{"where", t_where}, {NULL, NULL}};

/* No __eq/__lt/__le: Lua would coerce their tensor results to one boolean. */
static const luaL_Reg ew_meta[] = {
    {"__add", lf_add}, {"__sub", lf_sub}, {"__mul", lf_mul}, {"__div", m_div}, {"__pow", lf_pow},
    {"__unm", lf_neg}, {"__idiv", lf_floor_divide}, {"__mod", lf_remainder}, {NULL, NULL}};

void graft_bind_elementwise(lua_State *L) {
    int module = lua_gettop(L);
    lg_register_methods(L, ew_functions);
    lg_register_methods(L, ew_methods_only);
    lg_register_meta(L, ew_meta);
    luaL_getmetatable(L, LG_TENSOR_MT);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ew_mt_key);
    lua_settop(L, module);
    lg_register_functions(L, ew_functions);
    lg_register_functions(L, ew_module_only);
}
