/* graft bindings: the tensor userdata (metatable, __index/__newindex, lifetime), the
 * shared binding helpers of bind.h, creation functions, conversions and the RNG. */
#include "bind.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/autograd.h"
#include "cuda/cuda.h"
#include "tensor/alloc.h"
#include "tensor/iter.h"
#include "tensor/rng.h"

/* Registry keys for the method table and the property getter/setter tables. */
#define LG_METHODS "graft.methods"
#define LG_GETTERS "graft.getters"
#define LG_SETTERS "graft.setters"

/* ---- helpers (bind.h) ---- */

/* The metatable is also kept under this light-userdata key: luaL_testudata and
 * luaL_setmetatable look it up by name (a string hash and compare) on every call; a
 * pointer-keyed get is cheaper, and per state. */
static const char lg_mt_key = 0;

static graft_tensor **lg_toudata(lua_State *L, int idx) {
    void *p = lua_touserdata(L, idx);
    if (!p || !lua_getmetatable(L, idx)) return NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &lg_mt_key);
    int ok = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return ok ? p : NULL;
}

graft_tensor *lg_test(lua_State *L, int idx) {
    graft_tensor **p = lg_toudata(L, idx);
    return p ? *p : NULL;
}

graft_tensor *lg_check(lua_State *L, int idx) {
    graft_tensor **p = lg_toudata(L, idx);
    if (!p) luaL_typeerror(L, idx, "tensor");
    if (!*p) luaL_argerror(L, idx, "tensor is closed");
    return *p;
}

/* Lua sees a tensor as a small userdata, so its collector does not feel the bytes
 * behind it. When live tensor bytes grow by max(16 MiB, live/8) since the last full
 * collection, collect now: dead intermediates of a training step are freed promptly
 * (measured: a frozen-backbone resnet18 step's peak memory fell 5x against doubling). */
static size_t gc_threshold = (size_t)16 << 20;

static void lg_gc_pressure(lua_State *L) {
    size_t live = graft_alloc_live_bytes();
    if (live <= gc_threshold) return;
    lua_gc(L, LUA_GCCOLLECT);
    live = graft_alloc_live_bytes();
    size_t slack = live / 8 > ((size_t)16 << 20) ? live / 8 : ((size_t)16 << 20);
    gc_threshold = live + slack;
}

graft_tensor **lg_shell(lua_State *L) {
    lg_gc_pressure(L);
    graft_tensor **p = lua_newuserdatauv(L, sizeof(graft_tensor *), 0);
    *p = NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &lg_mt_key);
    lua_setmetatable(L, -2);
    return p;
}

/* Pushing may fail with a Lua memory error: guard t with a protected call so the
 * reference is not lost. Allocation failure here is rare, so a direct path is used and
 * the reference released in the __gc of a pre-made shell instead. */
void lg_push(lua_State *L, graft_tensor *t) {
    lg_gc_pressure(L);
    graft_tensor **p = lua_newuserdatauv(L, sizeof(graft_tensor *), 0);
    *p = t;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &lg_mt_key);
    lua_setmetatable(L, -2);
}

int lg_errorf(lua_State *L, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    lua_pushstring(L, buf);
    return lua_error(L);
}

int lg_raise(lua_State *L) {
    lua_pushstring(L, graft_last_error());
    return lua_error(L);
}

int lg_dim(lua_State *L, lua_Integer d, int ndim, const char *op) {
    int n = ndim > 0 ? ndim : 1;
    if (d == 0 || d > n || d < -n)
        return luaL_error(L, "%s: dim %d is out of range for a tensor with %d dims (expected 1..%d, or -%d..-1)",
                          op, (int)d, ndim, n, n);
    return d > 0 ? (int)d - 1 : (int)d + n;
}

int lg_check_dim(lua_State *L, int idx, int ndim, const char *op) {
    return lg_dim(L, luaL_checkinteger(L, idx), ndim, op);
}

int64_t lg_index(lua_State *L, lua_Integer i, int64_t size, const char *op) {
    if (i == 0 || i > size || i < -size)
        return lg_errorf(L, "%s: index %lld is out of range for a dim of size %lld%s", op, (long long)i,
                          (long long)size, i == 0 ? " (positions are 1-based; -1 is the last)" : "");
    return i > 0 ? i - 1 : i + size;
}

int lg_check_shape(lua_State *L, int first, int *ndim, int64_t *shape, const char *op) {
    int n = 0;
    if (lua_type(L, first) == LUA_TTABLE && !lg_test(L, first)) {
        lua_Integer len = (lua_Integer)lua_rawlen(L, first);
        if (len == 0 && lua_getfield(L, first, "dtype") != LUA_TNIL) {
            lua_pop(L, 1);
            *ndim = 0;
            return first; /* an options table: empty shape */
        }
        if (len == 0) lua_pop(L, 1);
        if (len > GRAFT_MAX_DIMS) return luaL_error(L, "%s: at most %d dims, got %d", op, GRAFT_MAX_DIMS, (int)len);
        for (lua_Integer i = 1; i <= len; i++) {
            lua_rawgeti(L, first, i);
            int isnum;
            lua_Integer v = lua_tointegerx(L, -1, &isnum);
            lua_pop(L, 1);
            if (!isnum) return luaL_error(L, "%s: shape entry %d is not an integer", op, (int)i);
            if (v < 0) return lg_errorf(L, "%s: negative dimension %lld in shape", op, (long long)v);
            shape[n++] = v;
        }
        *ndim = n;
        return first + 1;
    }
    int i = first;
    while (lua_type(L, i) == LUA_TNUMBER) {
        if (n >= GRAFT_MAX_DIMS) return luaL_error(L, "%s: at most %d dims", op, GRAFT_MAX_DIMS);
        int isnum;
        lua_Integer v = lua_tointegerx(L, i, &isnum);
        if (!isnum) return luaL_error(L, "%s: size %s is not an integer", op, lua_tostring(L, i));
        if (v < 0) return lg_errorf(L, "%s: negative dimension %lld in shape", op, (long long)v);
        shape[n++] = v;
        i++;
    }
    *ndim = n;
    return i;
}

int lg_opts_index(lua_State *L, int first) {
    int top = lua_gettop(L);
    for (int i = first; i <= top; i++) {
        if (lua_type(L, i) == LUA_TTABLE && !lg_test(L, i)) {
            if (lua_rawgeti(L, i, 1) == LUA_TNIL) {
                lua_pop(L, 1);
                return i;
            }
            lua_pop(L, 1);
        }
    }
    return 0;
}

graft_dtype lg_check_dtype(lua_State *L, int idx) {
    const char *name = luaL_checkstring(L, idx);
    int d = graft_dtype_from_name(name);
    if (d < 0) return (graft_dtype)luaL_error(L, "unknown dtype \"%s\"", name);
    return (graft_dtype)d;
}

int lg_opt_dtype(lua_State *L, int opts, int def) {
    if (!opts) return def;
    int r = def;
    if (lua_getfield(L, opts, "dtype") != LUA_TNIL) r = (int)lg_check_dtype(L, -1);
    lua_pop(L, 1);
    return r;
}

graft_device lg_opt_device(lua_State *L, int opts, graft_device def) {
    if (!opts) return def;
    graft_device d = def;
    if (lua_getfield(L, opts, "device") != LUA_TNIL) {
        if (graft_device_parse(&d, luaL_checkstring(L, -1))) lg_raise(L);
    }
    lua_pop(L, 1);
    return d;
}

int lg_opt_bool(lua_State *L, int opts, const char *key, int def) {
    if (!opts) return def;
    int r = def;
    if (lua_getfield(L, opts, key) != LUA_TNIL) r = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return r;
}

lua_Number lg_opt_number(lua_State *L, int opts, const char *key, lua_Number def) {
    if (!opts) return def;
    lua_Number r = def;
    if (lua_getfield(L, opts, key) != LUA_TNIL) {
        int ok;
        r = lua_tonumberx(L, -1, &ok);
        if (!ok) return luaL_error(L, "option '%s' must be a number", key);
    }
    lua_pop(L, 1);
    return r;
}

lua_Integer lg_opt_integer(lua_State *L, int opts, const char *key, lua_Integer def) {
    if (!opts) return def;
    lua_Integer r = def;
    if (lua_getfield(L, opts, key) != LUA_TNIL) {
        int ok;
        r = lua_tointegerx(L, -1, &ok);
        if (!ok) return luaL_error(L, "option '%s' must be an integer", key);
    }
    lua_pop(L, 1);
    return r;
}

static void lg_register_into(lua_State *L, const char *regkey, const luaL_Reg *regs) {
    lua_getfield(L, LUA_REGISTRYINDEX, regkey);
    luaL_setfuncs(L, regs, 0);
    lua_pop(L, 1);
}

void lg_register_methods(lua_State *L, const luaL_Reg *regs) { lg_register_into(L, LG_METHODS, regs); }
void lg_register_meta(lua_State *L, const luaL_Reg *regs) { lg_register_into(L, LG_TENSOR_MT, regs); }
void lg_register_functions(lua_State *L, const luaL_Reg *regs) { luaL_setfuncs(L, regs, 0); }

/* ---- lifetime ---- */

/* __gc and __close share one idempotent function. */
static int t_gc(lua_State *L) {
    graft_tensor **p = lg_toudata(L, 1);
    if (!p) return luaL_typeerror(L, 1, "tensor");
    graft_tensor_release(*p);
    *p = NULL;
    return 0;
}

/* ---- __index / __newindex ---- */

static int t_select_first(lua_State *L, graft_tensor *t, lua_Integer i) {
    if (t->ndim == 0) return luaL_error(L, "select: cannot index a 0-dim tensor");
    int64_t idx = lg_index(L, i, t->shape[0], "select");
    graft_tensor **out = lg_shell(L);
    if (graft_ag_select(out, t, 0, idx)) return lg_raise(L);
    return 1;
}

/* t.name: a method, then a property getter; t[i]: select along dim 1; t[{...}]: the
 * `index` method (slicing, from the shape bindings). */
static int t_index(lua_State *L) {
    int kt = lua_type(L, 2);
    if (kt == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
        lua_pop(L, 1);
        lua_pushvalue(L, 2);
        if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL) {
            lua_pushvalue(L, 1);
            lua_call(L, 1, 1);
            return 1;
        }
        return 0; /* nil, as for any missing field */
    }
    graft_tensor *t = lg_check(L, 1);
    if (kt == LUA_TNUMBER) {
        int isint;
        lua_Integer i = lua_tointegerx(L, 2, &isint);
        if (!isint) return luaL_error(L, "select: index %s is not an integer", lua_tostring(L, 2));
        return t_select_first(L, t, i);
    }
    if (kt == LUA_TTABLE || lg_test(L, 2)) {
        lua_pushliteral(L, "index");
        if (lua_rawget(L, lua_upvalueindex(1)) == LUA_TNIL)
            return luaL_error(L, "indexing with a table is not available");
        lua_pushvalue(L, 1);
        lua_pushvalue(L, 2);
        lua_call(L, 2, 1);
        return 1;
    }
    return luaL_error(L, "cannot index a tensor with a %s", luaL_typename(L, 2));
}

/* t[i] = v and t[{...}] = v copy or fill into the selected view; t.name = v runs a
 * property setter. */
static int t_newindex(lua_State *L) {
    int kt = lua_type(L, 2);
    if (kt == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL) {
            lua_pushvalue(L, 1);
            lua_pushvalue(L, 3);
            lua_call(L, 2, 0);
            return 0;
        }
        return luaL_error(L, "cannot set field '%s' of a tensor", lua_tostring(L, 2));
    }
    graft_tensor *self = lg_check(L, 1);
    /* t[i] = v with grad in play: index_put_ records it (and refuses leaves that
     * require grad); a plain copy into the selected view would not. */
    if (kt == LUA_TNUMBER && graft_grad_enabled()) {
        graft_tensor *v = lg_test(L, 3);
        if (self->autograd || (v && v->autograd)) {
            lua_pushliteral(L, "index_put_");
            if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) {
                lua_pushvalue(L, 1);
                lua_createtable(L, 1, 0);
                lua_pushvalue(L, 2);
                lua_rawseti(L, -2, 1);
                lua_pushvalue(L, 3);
                lua_call(L, 3, 0);
                return 0;
            }
            lua_pop(L, 1);
        }
    }
    /* t[{...}] = v and t[mask] = v: index_put_ writes through advanced indexing too */
    if (kt == LUA_TTABLE || lg_test(L, 2)) {
        lua_pushliteral(L, "index_put_");
        if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) {
            lua_pushvalue(L, 1);
            lua_pushvalue(L, 2);
            lua_pushvalue(L, 3);
            lua_call(L, 3, 0);
            return 0;
        }
        lua_pop(L, 1);
    }
    /* view = t[key] through __index */
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__index");
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_call(L, 2, 1);
    graft_tensor *view = lg_check(L, -1);
    graft_tensor *src = lg_test(L, 3);
    graft_status st;
    if (src) st = graft_tensor_copy_(view, src);
    else if (lua_isinteger(L, 3)) st = graft_tensor_fill_int_(view, lua_tointeger(L, 3));
    else if (lua_type(L, 3) == LUA_TNUMBER) st = graft_tensor_fill_(view, lua_tonumber(L, 3));
    else if (lua_isboolean(L, 3)) st = graft_tensor_fill_int_(view, lua_toboolean(L, 3));
    else return luaL_error(L, "cannot assign a %s into a tensor", luaL_typename(L, 3));
    if (st) return lg_raise(L);
    return 0;
}

static int t_len(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (t->ndim == 0) return luaL_error(L, "len() of a 0-dim tensor");
    lua_pushinteger(L, t->shape[0]);
    return 1;
}

/* ---- properties and simple queries ---- */

static int t_shape(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int t_size(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (lua_isnoneornil(L, 2)) return t_shape(L);
    int d = lg_check_dim(L, 2, t->ndim, "size");
    lua_pushinteger(L, t->ndim ? t->shape[d] : 1);
    return 1;
}

static int t_stride(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        int d = lg_check_dim(L, 2, t->ndim, "stride");
        lua_pushinteger(L, t->ndim ? t->stride[d] : 1);
        return 1;
    }
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->stride[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int t_dim(lua_State *L) { lua_pushinteger(L, lg_check(L, 1)->ndim); return 1; }
static int t_numel(lua_State *L) { lua_pushinteger(L, graft_tensor_numel(lg_check(L, 1))); return 1; }
static int t_dtype(lua_State *L) { lua_pushstring(L, graft_dtype_name(lg_check(L, 1)->dtype)); return 1; }
static int t_element_size(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)graft_dtype_size(lg_check(L, 1)->dtype));
    return 1;
}
static int t_storage_offset(lua_State *L) { lua_pushinteger(L, lg_check(L, 1)->offset); return 1; }
static int t_device(lua_State *L) {
    char buf[16];
    lua_pushstring(L, graft_device_str(graft_tensor_device(lg_check(L, 1)), buf));
    return 1;
}
static int t_is_contiguous(lua_State *L) {
    lua_pushboolean(L, graft_tensor_is_contiguous(lg_check(L, 1)));
    return 1;
}
static int t_is_floating_point(lua_State *L) {
    lua_pushboolean(L, graft_dtype_is_float(lg_check(L, 1)->dtype));
    return 1;
}
static int t_data_ptr(lua_State *L) {
    lua_pushlightuserdata(L, graft_tensor_data(lg_check(L, 1)));
    return 1;
}
/* Two tensors share storage (views of one another). */
static int t_is_set_to(lua_State *L) {
    lua_pushboolean(L, lg_check(L, 1)->storage == lg_check(L, 2)->storage);
    return 1;
}

/* ---- copies and conversions ---- */

static int t_contiguous(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (graft_tensor_is_contiguous(t)) { lua_settop(L, 1); return 1; }
    graft_tensor **out = lg_shell(L);
    if (graft_ag_contiguous(out, t)) return lg_raise(L);
    return 1;
}

static int t_clone(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    graft_tensor **out = lg_shell(L);
    if (graft_ag_clone(out, t)) return lg_raise(L);
    return 1;
}

static int t_copy_(lua_State *L) {
    graft_tensor *dst = lg_check(L, 1), *src = lg_check(L, 2);
    if (graft_ag_copy_(dst, src)) return lg_raise(L);
    lua_settop(L, 1);
    return 1;
}

static int t_fill_(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    graft_status st;
    if (lua_isboolean(L, 2)) st = graft_tensor_fill_int_(t, lua_toboolean(L, 2));
    else if (lua_isinteger(L, 2)) st = graft_tensor_fill_int_(t, lua_tointeger(L, 2));
    else st = graft_tensor_fill_(t, luaL_checknumber(L, 2));
    if (st) return lg_raise(L);
    lua_settop(L, 1);
    return 1;
}

static int t_zero_(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (graft_tensor_fill_int_(t, 0)) return lg_raise(L);
    lua_settop(L, 1);
    return 1;
}

static int t_to_dtype_impl(lua_State *L, graft_tensor *t, graft_dtype d) {
    if (t->dtype == d) { lua_settop(L, 1); return 1; }
    graft_tensor **out = lg_shell(L);
    if (graft_ag_to_dtype(out, t, d)) return lg_raise(L);
    return 1;
}

/* t:to("float16"), t:to("cpu"), t:to({dtype = ..., device = ...}), t:to(other_tensor) */
static int t_to(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    graft_dtype d = t->dtype;
    graft_device dev = graft_tensor_device(t);
    graft_tensor *other = lg_test(L, 2);
    if (other) {
        d = other->dtype;
        dev = graft_tensor_device(other);
    } else if (lua_type(L, 2) == LUA_TSTRING) {
        const char *s = lua_tostring(L, 2);
        int dt = graft_dtype_from_name(s);
        if (dt >= 0) d = (graft_dtype)dt;
        else if (graft_device_parse(&dev, s)) return luaL_error(L, "to: \"%s\" is neither a dtype nor a device", s);
        if (lua_type(L, 3) == LUA_TSTRING) d = lg_check_dtype(L, 3);
    } else if (lua_type(L, 2) == LUA_TTABLE) {
        d = (graft_dtype)lg_opt_dtype(L, 2, d);
        dev = lg_opt_device(L, 2, dev);
    } else {
        return luaL_argerror(L, 2, "expected a dtype, a device, a tensor or an options table");
    }
    if (!graft_device_eq(dev, graft_tensor_device(t))) return lg_to_device(L, t, dev, d);
    lua_settop(L, 1);
    return t_to_dtype_impl(L, t, d);
}

/* A copy of t on dev (as dtype d): the transfer goes through graft_tensor_copy_, which
 * stages host-to-device copies through pinned memory. Differentiable: the gradient
 * goes back to t's device. */
int lg_to_device(lua_State *L, graft_tensor *t, graft_device dev, graft_dtype d) {
    if (dev.type == GRAFT_CUDA && graft_cuda_check_device(dev, "to")) return lg_raise(L);
    graft_tensor **out = lg_shell(L);
    if (graft_ag_to_device(out, t, dev, d)) return lg_raise(L);
    return 1;
}

/* t:cuda([index]) and t:cpu(): t itself when already there. */
static int t_cuda(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    graft_device dev = {GRAFT_CUDA, (int8_t)(lua_isnoneornil(L, 2) ? graft_cuda_current_device() : luaL_checkinteger(L, 2))};
    if (graft_device_eq(dev, graft_tensor_device(t))) { lua_settop(L, 1); return 1; }
    return lg_to_device(L, t, dev, t->dtype);
}

static int t_cpu(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (graft_tensor_device(t).type == GRAFT_CPU) { lua_settop(L, 1); return 1; }
    return lg_to_device(L, t, graft_cpu, t->dtype);
}

static int t_is_cuda(lua_State *L) {
    lua_pushboolean(L, graft_tensor_device(lg_check(L, 1)).type == GRAFT_CUDA);
    return 1;
}

#define CONVERT_METHOD(fname, D) \
    static int fname(lua_State *L) { return t_to_dtype_impl(L, lg_check(L, 1), D); }
CONVERT_METHOD(t_float, GRAFT_F32)
CONVERT_METHOD(t_double, GRAFT_F64)
CONVERT_METHOD(t_half, GRAFT_F16)
CONVERT_METHOD(t_bfloat16, GRAFT_BF16)
CONVERT_METHOD(t_long, GRAFT_I64)
CONVERT_METHOD(t_int, GRAFT_I32)
CONVERT_METHOD(t_short, GRAFT_I16)
CONVERT_METHOD(t_char, GRAFT_I8)
CONVERT_METHOD(t_byte, GRAFT_U8)
CONVERT_METHOD(t_bool, GRAFT_BOOL)


/* ---- reading values out ---- */

static void push_elem(lua_State *L, const char *p, graft_dtype d) {
    if (d == GRAFT_BOOL) lua_pushboolean(L, *(const uint8_t *)p != 0);
    else if (graft_dtype_is_float(d)) lua_pushnumber(L, graft_load_f64(p, d));
    else lua_pushinteger(L, graft_load_i64(p, d));
}

static void tolist_rec(lua_State *L, const graft_tensor *t, int dim, const char *p) {
    size_t esz = graft_dtype_size(t->dtype);
    luaL_checkstack(L, 4, "tolist: nesting too deep");
    lua_createtable(L, (int)t->shape[dim], 0);
    for (int64_t i = 0; i < t->shape[dim]; i++) {
        const char *q = p + i * t->stride[dim] * (int64_t)esz;
        if (dim == t->ndim - 1) push_elem(L, q, t->dtype);
        else tolist_rec(L, t, dim + 1, q);
        lua_rawseti(L, -2, i + 1);
    }
}

/* t itself when on the CPU; else a CPU copy, pushed (the stack grows by one). */
graft_tensor *lg_on_host(lua_State *L, graft_tensor *t) {
    if (graft_tensor_device(t).type == GRAFT_CPU) return t;
    graft_tensor **out = lg_shell(L);
    if (graft_tensor_empty(out, t->ndim, t->shape, t->dtype, graft_cpu) || graft_tensor_copy_(*out, t)) lg_raise(L);
    return *out;
}

graft_tensor *lg_on_device(lua_State *L, graft_tensor *t, graft_device dev) {
    if (graft_device_eq(graft_tensor_device(t), dev)) return t;
    if (dev.type == GRAFT_CUDA && graft_cuda_check_device(dev, "to")) lg_raise(L);
    graft_tensor **out = lg_shell(L);
    if (graft_tensor_empty(out, t->ndim, t->shape, t->dtype, dev) || graft_tensor_copy_(*out, t)) lg_raise(L);
    return *out;
}

static int t_tolist(lua_State *L) {
    graft_tensor *t = lg_on_host(L, lg_check(L, 1));
    if (t->ndim == 0) push_elem(L, graft_tensor_data(t), t->dtype);
    else tolist_rec(L, t, 0, graft_tensor_data(t));
    return 1;
}

static int t_item(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int64_t n = graft_tensor_numel(t);
    if (n != 1)
        return lg_errorf(L, "item: a tensor with %lld elements cannot be converted to a number", (long long)n);
    t = lg_on_host(L, t);
    push_elem(L, graft_tensor_data(t), t->dtype);
    return 1;
}

/* ---- random fills (in place) ---- */

static int t_uniform_(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (graft_rng_uniform_(t, luaL_optnumber(L, 2, 0), luaL_optnumber(L, 3, 1))) return lg_raise(L);
    lua_settop(L, 1);
    return 1;
}

static int t_normal_(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (graft_rng_normal_(t, luaL_optnumber(L, 2, 0), luaL_optnumber(L, 3, 1))) return lg_raise(L);
    lua_settop(L, 1);
    return 1;
}

/* t:random_(low, high): integers in [low, high) (high exclusive, as PyTorch). */
static int t_random_(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    lua_Integer lo = 0, hi;
    if (lua_isnoneornil(L, 3)) hi = luaL_checkinteger(L, 2);
    else { lo = luaL_checkinteger(L, 2); hi = luaL_checkinteger(L, 3); }
    if (graft_rng_randint_(t, lo, hi)) return lg_raise(L);
    lua_settop(L, 1);
    return 1;
}

/* ---- creation ---- */

/* Parses a shape then the options table after it; pushes an empty tensor. */
static graft_tensor *new_from_shape(lua_State *L, int first, const char *op, graft_dtype def, int *opts_out) {
    int ndim;
    int64_t shape[GRAFT_MAX_DIMS];
    int next = lg_check_shape(L, first, &ndim, shape, op);
    int opts = lg_opts_index(L, next);
    if (opts_out) *opts_out = opts;
    graft_dtype d = (graft_dtype)lg_opt_dtype(L, opts, def);
    graft_device dev = lg_opt_device(L, opts, graft_cpu);
    graft_tensor **out = lg_shell(L);
    if (graft_tensor_empty(out, ndim, shape, d, dev)) lg_raise(L);
    return *out;
}

static int l_empty(lua_State *L) { new_from_shape(L, 1, "empty", GRAFT_F32, NULL); return 1; }
static int l_zeros(lua_State *L) {
    graft_tensor *t = new_from_shape(L, 1, "zeros", GRAFT_F32, NULL);
    if (graft_tensor_fill_int_(t, 0)) return lg_raise(L);
    return 1;
}
static int l_ones(lua_State *L) {
    graft_tensor *t = new_from_shape(L, 1, "ones", GRAFT_F32, NULL);
    if (graft_tensor_fill_int_(t, 1)) return lg_raise(L);
    return 1;
}

/* The dtype PyTorch infers from a Lua scalar: bool, int64 or float32. */
static graft_dtype scalar_dtype(lua_State *L, int idx) {
    if (lua_isboolean(L, idx)) return GRAFT_BOOL;
    if (lua_isinteger(L, idx)) return GRAFT_I64;
    return GRAFT_F32;
}

static graft_status fill_scalar(graft_tensor *t, lua_State *L, int idx) {
    if (lua_isboolean(L, idx)) return graft_tensor_fill_int_(t, lua_toboolean(L, idx));
    if (lua_isinteger(L, idx)) return graft_tensor_fill_int_(t, lua_tointeger(L, idx));
    return graft_tensor_fill_(t, lua_tonumber(L, idx));
}

static void check_scalar(lua_State *L, int idx, const char *op) {
    if (lua_type(L, idx) != LUA_TNUMBER && !lua_isboolean(L, idx))
        luaL_error(L, "%s: fill value must be a number or boolean, got %s", op, luaL_typename(L, idx));
}

/* full(shape, value [, opts]): shape is a table (or a single size). */
static int l_full(lua_State *L) {
    int ndim;
    int64_t shape[GRAFT_MAX_DIMS];
    if (lua_type(L, 1) == LUA_TNUMBER) {
        ndim = 1;
        shape[0] = luaL_checkinteger(L, 1);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lg_check_shape(L, 1, &ndim, shape, "full");
    }
    check_scalar(L, 2, "full");
    int opts = lg_opts_index(L, 3);
    graft_dtype d = (graft_dtype)lg_opt_dtype(L, opts, scalar_dtype(L, 2));
    graft_device dev = lg_opt_device(L, opts, graft_cpu);
    graft_tensor **out = lg_shell(L);
    if (graft_tensor_empty(out, ndim, shape, d, dev)) return lg_raise(L);
    if (fill_scalar(*out, L, 2)) return lg_raise(L);
    return 1;
}

/* The *_like forms: the shape, dtype and device of t, overridable by options. */
static graft_tensor *new_like(lua_State *L, int opts) {
    graft_tensor *t = lg_check(L, 1);
    graft_dtype d = (graft_dtype)lg_opt_dtype(L, opts, t->dtype);
    graft_device dev = lg_opt_device(L, opts, graft_tensor_device(t));
    graft_tensor **out = lg_shell(L);
    if (graft_tensor_empty(out, t->ndim, t->shape, d, dev)) lg_raise(L);
    return *out;
}

static int l_empty_like(lua_State *L) { new_like(L, lg_opts_index(L, 2)); return 1; }
static int l_zeros_like(lua_State *L) {
    if (graft_tensor_fill_int_(new_like(L, lg_opts_index(L, 2)), 0)) return lg_raise(L);
    return 1;
}
static int l_ones_like(lua_State *L) {
    if (graft_tensor_fill_int_(new_like(L, lg_opts_index(L, 2)), 1)) return lg_raise(L);
    return 1;
}
static int l_full_like(lua_State *L) {
    check_scalar(L, 2, "full_like");
    if (fill_scalar(new_like(L, lg_opts_index(L, 3)), L, 2)) return lg_raise(L);
    return 1;
}
static int l_rand_like(lua_State *L) {
    if (graft_rng_uniform_(new_like(L, lg_opts_index(L, 2)), 0, 1)) return lg_raise(L);
    return 1;
}
static int l_randn_like(lua_State *L) {
    if (graft_rng_normal_(new_like(L, lg_opts_index(L, 2)), 0, 1)) return lg_raise(L);
    return 1;
}
static int l_randint_like(lua_State *L) {
    lua_Integer lo = 0, hi;
    int next;
    if (lua_type(L, 3) == LUA_TNUMBER) { lo = luaL_checkinteger(L, 2); hi = luaL_checkinteger(L, 3); next = 4; }
    else { hi = luaL_checkinteger(L, 2); next = 3; }
    if (graft_rng_randint_(new_like(L, lg_opts_index(L, next)), lo, hi)) return lg_raise(L);
    return 1;
}

static int l_rand(lua_State *L) {
    int opts;
    graft_tensor *t = new_from_shape(L, 1, "rand", GRAFT_F32, &opts);
    if (graft_rng_uniform_(t, 0, 1)) return lg_raise(L);
    return 1;
}

static int l_randn(lua_State *L) {
    graft_tensor *t = new_from_shape(L, 1, "randn", GRAFT_F32, NULL);
    if (graft_rng_normal_(t, 0, 1)) return lg_raise(L);
    return 1;
}

/* randint(high, shape [, opts]) or randint(low, high, shape [, opts]); int64 default. */
static int l_randint(lua_State *L) {
    lua_Integer lo = 0, hi;
    int first;
    if (lua_type(L, 2) == LUA_TNUMBER && lua_type(L, 3) == LUA_TTABLE) {
        lo = luaL_checkinteger(L, 1); hi = luaL_checkinteger(L, 2); first = 3;
    } else {
        hi = luaL_checkinteger(L, 1); first = 2;
    }
    if (lua_type(L, first) != LUA_TTABLE) return luaL_error(L, "randint: expected a shape table after the bounds");
    graft_tensor *t = new_from_shape(L, first, "randint", GRAFT_I64, NULL);
    if (graft_rng_randint_(t, lo, hi)) return lg_raise(L);
    return 1;
}

static int l_randperm(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 0) return lg_errorf(L, "randperm: n must be non-negative, got %lld", (long long)n);
    int opts = lg_opts_index(L, 2);
    graft_dtype d = (graft_dtype)lg_opt_dtype(L, opts, GRAFT_I64);
    graft_device dev = lg_opt_device(L, opts, graft_cpu);
    int64_t shape[1] = {n};
    graft_tensor *tmp = NULL;
    graft_tensor **out = lg_shell(L);
    /* drawn on the host (Fisher-Yates), then converted and moved in one copy */
    if (graft_tensor_empty(&tmp, 1, shape, GRAFT_I64, graft_cpu) || graft_rng_randperm_(tmp) ||
        graft_tensor_empty(out, 1, shape, d, dev) || graft_tensor_copy_(*out, tmp)) {
        graft_tensor_release(tmp);
        return lg_raise(L);
    }
    graft_tensor_release(tmp);
    return 1;
}

/* arange(end) / arange(start, end [, step]) [, opts]: int64 when every bound is an
 * integer, float32 otherwise; ceil((end - start) / step) elements. */
static int l_arange(lua_State *L) {
    int nargs = 0;
    while (nargs < 3 && lua_type(L, nargs + 1) == LUA_TNUMBER) nargs++;
    if (nargs == 0) return luaL_error(L, "arange: expected end, or start, end [, step]");
    bool all_int = true;
    for (int i = 1; i <= nargs; i++) all_int = all_int && lua_isinteger(L, i);
    double start = 0, end, step = 1;
    if (nargs == 1) end = lua_tonumber(L, 1);
    else { start = lua_tonumber(L, 1); end = lua_tonumber(L, 2); if (nargs == 3) step = lua_tonumber(L, 3); }
    if (step == 0) return luaL_error(L, "arange: step must be nonzero");
    if ((step > 0 && end < start) || (step < 0 && end > start))
        return luaL_error(L, "arange: upper bound and larger bound inconsistent with step sign");
    double count = ceil((end - start) / step);
    if (!(count < 1e15)) return luaL_error(L, "arange: too many elements");
    int opts = lg_opts_index(L, nargs + 1);
    graft_dtype d = (graft_dtype)lg_opt_dtype(L, opts, all_int ? GRAFT_I64 : GRAFT_F32);
    int64_t n = (int64_t)count;
    graft_tensor **out = lg_shell(L);
    if (graft_tensor_empty(out, 1, &n, d, graft_cpu)) return lg_raise(L);
    char *p = graft_tensor_data(*out);
    size_t esz = graft_dtype_size(d);
    if (all_int && !graft_dtype_is_float(d)) {
        int64_t s0 = (int64_t)start, st = (int64_t)step;
        for (int64_t i = 0; i < n; i++) graft_store_i64(p + (size_t)i * esz, d, s0 + i * st);
    } else {
        for (int64_t i = 0; i < n; i++) graft_store_f64(p + (size_t)i * esz, d, start + (double)i * step);
    }
    return 1;
}

/* linspace(start, end, steps): PyTorch fills the first half from start and the second
 * half from end, so both ends are exact. */
static int l_linspace(lua_State *L) {
    double start = luaL_checknumber(L, 1), end = luaL_checknumber(L, 2);
    lua_Integer steps = luaL_checkinteger(L, 3);
    if (steps < 0) return luaL_error(L, "linspace: number of steps must be non-negative");
    int opts = lg_opts_index(L, 4);
    graft_dtype d = (graft_dtype)lg_opt_dtype(L, opts, GRAFT_F32);
    int64_t n = steps;
    graft_tensor **out = lg_shell(L);
    if (graft_tensor_empty(out, 1, &n, d, graft_cpu)) return lg_raise(L);
    char *p = graft_tensor_data(*out);
    size_t esz = graft_dtype_size(d);
    int64_t half = n / 2;
    if (d == GRAFT_F64 || !graft_dtype_is_float(d)) {
        double step = n > 1 ? (end - start) / (double)(n - 1) : 0;
        for (int64_t i = 0; i < n; i++) {
            double v = i < half ? start + step * (double)i : end - step * (double)(n - 1 - i);
            graft_store_f64(p + (size_t)i * esz, d, v);
        }
    } else { /* float32 arithmetic for float32 and narrower, as PyTorch */
        float fs = (float)start, fe = (float)end;
        float step = n > 1 ? (fe - fs) / (float)(n - 1) : 0;
        for (int64_t i = 0; i < n; i++) {
            float v = i < half ? fs + step * (float)i : fe - step * (float)(n - 1 - i);
            graft_store_f64(p + (size_t)i * esz, d, v);
        }
    }
    return 1;
}

static int l_eye(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    lua_Integer m = lua_type(L, 2) == LUA_TNUMBER ? luaL_checkinteger(L, 2) : n;
    if (n < 0 || m < 0) return luaL_error(L, "eye: sizes must be non-negative");
    int opts = lg_opts_index(L, 2);
    graft_dtype d = (graft_dtype)lg_opt_dtype(L, opts, GRAFT_F32);
    int64_t shape[2] = {n, m};
    graft_tensor **out = lg_shell(L);
    if (graft_tensor_empty(out, 2, shape, d, graft_cpu) || graft_tensor_fill_int_(*out, 0)) return lg_raise(L);
    char *p = graft_tensor_data(*out);
    size_t esz = graft_dtype_size(d);
    for (int64_t i = 0; i < (n < m ? n : m); i++) graft_store_i64(p + (size_t)(i * m + i) * esz, d, 1);
    return 1;
}

/* graft.tensor(nested tables [, opts]): shape from the nesting, dtype inferred as
 * PyTorch does (bool if all booleans, int64 if all integers, float32 otherwise). */
typedef struct { int ndim; int64_t shape[GRAFT_MAX_DIMS]; int kind; /* 0 bool 1 int 2 float */ } nest_info;

static void nest_scan(lua_State *L, int idx, int depth, nest_info *ni) {
    int t = lua_type(L, idx);
    if (t == LUA_TTABLE && !lg_test(L, idx)) {
        if (depth >= GRAFT_MAX_DIMS) luaL_error(L, "tensor: nesting deeper than %d", GRAFT_MAX_DIMS);
        int64_t len = (int64_t)lua_rawlen(L, idx);
        if (depth == ni->ndim) {
            ni->shape[depth] = len;
            ni->ndim = depth + 1;
        } else if (depth > ni->ndim || ni->shape[depth] != len) {
            lg_errorf(L, "tensor: ragged nested tables (length %lld at depth %d, expected %lld)", (long long)len,
                       depth + 1, (long long)(depth < ni->ndim ? ni->shape[depth] : 0));
        }
        luaL_checkstack(L, 2, "tensor: nesting");
        for (int64_t i = 1; i <= len; i++) {
            lua_rawgeti(L, idx, i);
            nest_scan(L, lua_gettop(L), depth + 1, ni);
            lua_pop(L, 1);
        }
        return;
    }
    if (depth != ni->ndim) luaL_error(L, "tensor: ragged nested tables (a number at depth %d)", depth + 1);
    if (t == LUA_TBOOLEAN) return;
    if (t == LUA_TNUMBER) {
        int k = lua_isinteger(L, idx) ? 1 : 2;
        if (k > ni->kind) ni->kind = k;
        return;
    }
    if (lg_test(L, idx) && graft_tensor_numel(lg_test(L, idx)) == 1) {
        graft_tensor *x = lg_test(L, idx);
        int k = x->dtype == GRAFT_BOOL ? 0 : graft_dtype_is_float(x->dtype) ? 2 : 1;
        if (k > ni->kind) ni->kind = k;
        return;
    }
    luaL_error(L, "tensor: cannot make a tensor from a %s", luaL_typename(L, idx));
}

static char *nest_fill(lua_State *L, int idx, int depth, const nest_info *ni, char *p, graft_dtype d) {
    size_t esz = graft_dtype_size(d);
    if (depth < ni->ndim) {
        for (int64_t i = 1; i <= ni->shape[depth]; i++) {
            lua_rawgeti(L, idx, i);
            p = nest_fill(L, lua_gettop(L), depth + 1, ni, p, d);
            lua_pop(L, 1);
        }
        return p;
    }
    graft_tensor *x = lg_test(L, idx);
    if (x) {
        const char *q = graft_tensor_data(x);
        if (graft_dtype_is_float(x->dtype)) graft_store_f64(p, d, graft_load_f64(q, x->dtype));
        else graft_store_i64(p, d, graft_load_i64(q, x->dtype));
    } else if (lua_isboolean(L, idx)) graft_store_i64(p, d, lua_toboolean(L, idx));
    else if (lua_isinteger(L, idx)) graft_store_i64(p, d, lua_tointeger(L, idx));
    else graft_store_f64(p, d, lua_tonumber(L, idx));
    return p + esz;
}

static int l_tensor(lua_State *L) {
    graft_tensor *src = lg_test(L, 1);
    int opts = lg_opts_index(L, 2);
    if (src) {
        graft_dtype d = (graft_dtype)lg_opt_dtype(L, opts, src->dtype);
        graft_tensor **out = lg_shell(L);
        if (graft_tensor_empty(out, src->ndim, src->shape, d, graft_tensor_device(src)) ||
            graft_tensor_copy_(*out, src))
            return lg_raise(L);
        return 1;
    }
    if (lua_type(L, 1) != LUA_TTABLE && lua_type(L, 1) != LUA_TNUMBER && !lua_isboolean(L, 1))
        return luaL_typeerror(L, 1, "table, number or boolean");
    nest_info ni = {0, {0}, 0};
    nest_scan(L, 1, 0, &ni);
    graft_dtype def = ni.kind == 0 ? GRAFT_BOOL : ni.kind == 1 ? GRAFT_I64 : GRAFT_F32;
    /* an empty table is float32, as torch.tensor([]) */
    if (ni.ndim > 0 && ni.shape[ni.ndim - 1] == 0) def = GRAFT_F32;
    graft_dtype d = (graft_dtype)lg_opt_dtype(L, opts, def);
    graft_tensor **out = lg_shell(L);
    int shell = lua_gettop(L);
    if (graft_tensor_empty(out, ni.ndim, ni.shape, d, graft_cpu)) return lg_raise(L);
    nest_fill(L, 1, 0, &ni, graft_tensor_data(*out), d);
    lua_settop(L, shell);
    return 1;
}

/* graft.frombuffer(bytes, {dtype = ...} [, shape]): a copy of a Lua string's bytes. */
static int l_frombuffer(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int opts = lg_opts_index(L, 2);
    graft_dtype d = (graft_dtype)lg_opt_dtype(L, opts, GRAFT_F32);
    size_t esz = graft_dtype_size(d);
    if (len % esz)
        return lg_errorf(L, "frombuffer: %zu bytes is not a multiple of the %s element size %zu", len,
                          graft_dtype_name(d), esz);
    int64_t n = (int64_t)(len / esz);
    graft_tensor **out = lg_shell(L);
    if (graft_tensor_empty(out, 1, &n, d, graft_cpu)) return lg_raise(L);
    memcpy(graft_tensor_data(*out), s, len);
    return 1;
}

static void unmap_release(void *ctx, void *data, size_t nbytes) {
    (void)ctx;
    munmap(data, nbytes);
}

/* graft.from_file(path, {dtype = ..., offset = bytes, count = n, shape = {...}}): the
 * file's bytes mapped as a tensor (private copy-on-write: writing to the tensor never
 * changes the file). Pages are read only when touched. */
static int l_from_file(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int opts = lg_opts_index(L, 2);
    graft_dtype d = (graft_dtype)lg_opt_dtype(L, opts, GRAFT_F32);
    lua_Integer offset = lg_opt_integer(L, opts, "offset", 0);
    lua_Integer count = lg_opt_integer(L, opts, "count", -1);
    size_t esz = graft_dtype_size(d);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lg_errorf(L, "from_file: cannot open \"%s\": %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return lg_errorf(L, "from_file: cannot stat \"%s\": %s", path, strerror(errno));
    }
    size_t fsize = (size_t)sb.st_size;
    if (offset < 0 || (size_t)offset > fsize) {
        close(fd);
        return lg_errorf(L, "from_file: offset %lld is beyond the end of \"%s\" (%zu bytes)", (long long)offset, path, fsize);
    }
    size_t avail = (fsize - (size_t)offset) / esz;
    if (count < 0) count = (lua_Integer)avail;
    if ((size_t)count > avail) {
        close(fd);
        return lg_errorf(L, "from_file: \"%s\" holds %zu %s elements after offset %lld, asked for %lld", path, avail,
                         graft_dtype_name(d), (long long)offset, (long long)count);
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t map_off = (size_t)offset / page * page, lead = (size_t)offset - map_off;
    size_t map_len = lead + (size_t)count * esz;
    void *base = NULL;
    if (map_len > 0) {
        base = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, (off_t)map_off);
        if (base == MAP_FAILED) {
            close(fd);
            return lg_errorf(L, "from_file: cannot map \"%s\": %s", path, strerror(errno));
        }
    }
    close(fd);
    graft_tensor **out = lg_shell(L);
    graft_storage *s;
    if (graft_storage_wrap(&s, base, map_len, graft_cpu, GRAFT_STORAGE_MAPPED, map_len ? unmap_release : NULL, NULL)) {
        if (map_len) munmap(base, map_len);
        return lg_raise(L);
    }
    int64_t n = count;
    if (lead % esz) {
        /* unaligned element offset: copy (mapping cannot express it) */
        graft_status st = graft_tensor_empty(out, 1, &n, d, graft_cpu);
        if (!st) memcpy(graft_tensor_data(*out), (char *)base + lead, (size_t)count * esz);
        graft_storage_release(s);
        if (st) return lg_raise(L);
    } else {
        int64_t stride = 1;
        graft_status st = graft_tensor_from_storage(out, s, d, 1, &n, &stride, (int64_t)(lead / esz));
        graft_storage_release(s);
        if (st) return lg_raise(L);
    }
    return 1;
}

/* t:tobytes(): the elements as a Lua string (contiguous order). */
static int t_tobytes(lua_State *L) {
    graft_tensor *t = lg_on_host(L, lg_check(L, 1));
    graft_tensor *c;
    if (graft_tensor_contiguous(&c, t)) return lg_raise(L);
    lua_pushlstring(L, graft_tensor_data(c), (size_t)graft_tensor_numel(c) * graft_dtype_size(c->dtype));
    graft_tensor_release(c);
    return 1;
}

/* ---- generator, threads, memory ---- */

static int l_manual_seed(lua_State *L) {
    graft_rng_manual_seed((uint64_t)luaL_checkinteger(L, 1));
    return 0;
}
static int l_initial_seed(lua_State *L) { lua_pushinteger(L, (lua_Integer)graft_rng_initial_seed()); return 1; }

/* The state is a 16-byte uint8 tensor (seed, offset), as PyTorch's ByteTensor. */
static int l_get_rng_state(lua_State *L) {
    graft_rng_state st;
    graft_rng_get_state(&st);
    int64_t n = 16;
    graft_tensor **out = lg_shell(L);
    if (graft_tensor_empty(out, 1, &n, GRAFT_U8, graft_cpu)) return lg_raise(L);
    memcpy(graft_tensor_data(*out), &st, 16);
    return 1;
}

static int l_set_rng_state(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (t->dtype != GRAFT_U8 || graft_tensor_numel(t) != 16 || !graft_tensor_is_contiguous(t))
        return luaL_error(L, "set_rng_state: expected a uint8 tensor of 16 elements from get_rng_state");
    graft_rng_state st;
    memcpy(&st, graft_tensor_data(t), 16);
    graft_rng_set_state(&st);
    return 0;
}

static int l_set_num_threads(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 1) return lg_errorf(L, "set_num_threads: expected a positive count, got %lld", (long long)n);
    graft_set_num_threads((int)n);
    return 0;
}
static int l_get_num_threads(lua_State *L) { lua_pushinteger(L, graft_get_num_threads()); return 1; }
static int l_is_tensor(lua_State *L) { lua_pushboolean(L, lg_test(L, 1) != NULL); return 1; }
static int l_live_tensors(lua_State *L) { lua_pushinteger(L, graft_tensor_live()); return 1; }

static int l_memory_stats(lua_State *L) {
    graft_alloc_stats s;
    graft_alloc_get_stats(&s);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)s.allocated); lua_setfield(L, -2, "allocated");
    lua_pushinteger(L, (lua_Integer)s.cached); lua_setfield(L, -2, "cached");
    lua_pushinteger(L, (lua_Integer)s.peak); lua_setfield(L, -2, "peak");
    lua_pushinteger(L, (lua_Integer)s.hits); lua_setfield(L, -2, "hits");
    lua_pushinteger(L, (lua_Integer)s.misses); lua_setfield(L, -2, "misses");
    return 1;
}
/* graft.clock(): seconds on the monotonic wall clock (os.clock is CPU time, which
 * counts every thread of a parallel op). */
static int l_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

static int l_empty_cache(lua_State *L) { (void)L; graft_alloc_empty_cache(); return 0; }

static int l_dtype_info(lua_State *L) {
    graft_dtype d = lg_check_dtype(L, 1);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, graft_dtype_name(d)); lua_setfield(L, -2, "name");
    lua_pushinteger(L, (lua_Integer)graft_dtype_size(d)); lua_setfield(L, -2, "size");
    lua_pushboolean(L, graft_dtype_is_float(d)); lua_setfield(L, -2, "is_floating_point");
    return 1;
}

static int l_promote_types(lua_State *L) {
    lua_pushstring(L, graft_dtype_name(graft_dtype_promote(lg_check_dtype(L, 1), lg_check_dtype(L, 2))));
    return 1;
}

static const luaL_Reg tensor_methods[] = {
    {"shape", t_shape}, {"size", t_size}, {"stride", t_stride}, {"dim", t_dim}, {"ndim", t_dim},
    {"numel", t_numel}, {"nelement", t_numel}, {"dtype", t_dtype}, {"element_size", t_element_size},
    {"storage_offset", t_storage_offset}, {"device", t_device}, {"cuda", t_cuda}, {"cpu", t_cpu}, {"is_cuda", t_is_cuda}, {"is_contiguous", t_is_contiguous},
    {"is_floating_point", t_is_floating_point}, {"data_ptr", t_data_ptr}, {"is_set_to", t_is_set_to},
    {"contiguous", t_contiguous}, {"clone", t_clone}, {"copy_", t_copy_}, {"fill_", t_fill_},
    {"zero_", t_zero_}, {"to", t_to}, {"type", t_to}, {"float", t_float}, {"double", t_double},
    {"half", t_half}, {"bfloat16", t_bfloat16}, {"long", t_long}, {"int", t_int}, {"short", t_short},
    {"char", t_char}, {"byte", t_byte}, {"bool", t_bool}, {"tolist", t_tolist},
    {"item", t_item}, {"uniform_", t_uniform_}, {"normal_", t_normal_}, {"random_", t_random_},
    {"tobytes", t_tobytes}, {"close", t_gc},
    {NULL, NULL}};

static const luaL_Reg module_functions[] = {
    {"empty", l_empty}, {"zeros", l_zeros}, {"ones", l_ones}, {"full", l_full},
    {"empty_like", l_empty_like}, {"zeros_like", l_zeros_like}, {"ones_like", l_ones_like},
    {"full_like", l_full_like}, {"rand_like", l_rand_like}, {"randn_like", l_randn_like},
    {"randint_like", l_randint_like}, {"rand", l_rand}, {"randn", l_randn}, {"randint", l_randint},
    {"randperm", l_randperm}, {"arange", l_arange}, {"linspace", l_linspace}, {"eye", l_eye},
    {"tensor", l_tensor}, {"frombuffer", l_frombuffer}, {"clone", t_clone}, {"from_file", l_from_file}, {"manual_seed", l_manual_seed},
    {"initial_seed", l_initial_seed}, {"get_rng_state", l_get_rng_state},
    {"set_rng_state", l_set_rng_state}, {"set_num_threads", l_set_num_threads},
    {"get_num_threads", l_get_num_threads}, {"is_tensor", l_is_tensor},
    {"_live_tensors", l_live_tensors}, {"memory_stats", l_memory_stats},
    {"empty_cache", l_empty_cache}, {"clock", l_clock}, {"dtype_info", l_dtype_info}, {"promote_types", l_promote_types},
    {NULL, NULL}};

/* Creates the metatable, the method and property tables, and the module's creation
 * functions. The module table is on top of the stack. */
void graft_bind_tensor(lua_State *L) {
    int module = lua_gettop(L);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, LG_METHODS);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, LG_GETTERS);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, LG_SETTERS);

    luaL_newmetatable(L, LG_TENSOR_MT);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &lg_mt_key);
    lua_getfield(L, LUA_REGISTRYINDEX, LG_METHODS);
    lua_getfield(L, LUA_REGISTRYINDEX, LG_GETTERS);
    lua_pushcclosure(L, t_index, 2);
    lua_setfield(L, -2, "__index");
    lua_getfield(L, LUA_REGISTRYINDEX, LG_METHODS);
    lua_getfield(L, LUA_REGISTRYINDEX, LG_SETTERS);
    lua_pushcclosure(L, t_newindex, 2);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, t_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, t_gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, t_len);
    lua_setfield(L, -2, "__len");
    lua_pushliteral(L, "graft.Tensor");
    lua_setfield(L, -2, "__name");
    lua_setfield(L, module, "_Tensor"); /* the metatable, for the Lua library */

    lg_register_methods(L, tensor_methods);
    lua_settop(L, module);
    lg_register_functions(L, module_functions);
    lua_getfield(L, LUA_REGISTRYINDEX, LG_METHODS);
    lua_setfield(L, module, "_methods");
    lua_getfield(L, LUA_REGISTRYINDEX, LG_GETTERS);
    lua_setfield(L, module, "_getters");
    lua_getfield(L, LUA_REGISTRYINDEX, LG_SETTERS);
    lua_setfield(L, module, "_setters");
}
