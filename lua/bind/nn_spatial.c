/* graft bindings: the spatial functions of graft.F (graft.nn.functional): conv1d,
 * conv2d, conv_transpose1d/2d, max_pool2d, avg_pool2d, adaptive_avg_pool2d,
 * adaptive_max_pool2d, interpolate and pad. PyTorch's keyword arguments go in a
 * trailing options table; an int option takes a number or a list {h, w}:
 *
 *     local y = F.conv2d(x, w, b, {stride = 2, padding = "same"})   -- b may be nil
 *     local p, idx = F.max_pool2d(y, 2, {return_indices = true})
 */
#include "bind.h"

#include <string.h>

#include "nn/conv.h"
#include "nn/pool.h"
#include "nn/resize.h"

/* ---- argument helpers ---- */

/* The integer or list of n integers at stack index idx into out[0..n). */
static void sp_ints_at(lua_State *L, int idx, int n, int64_t *out, const char *what, const char *op) {
    int ok = 0;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Integer v = lua_tointegerx(L, idx, &ok);
        if (ok) {
            for (int i = 0; i < n; i++) out[i] = v;
            return;
        }
    } else if (lua_type(L, idx) == LUA_TTABLE && !lg_test(L, idx) && lua_rawlen(L, idx) == (size_t)n) {
        ok = 1;
        for (int i = 0; i < n && ok; i++) {
            lua_rawgeti(L, idx, i + 1);
            out[i] = lua_tointegerx(L, -1, &ok);
            lua_pop(L, 1);
        }
        if (ok) return;
    }
    if (n == 1) lg_errorf(L, "%s: %s must be an integer", op, what);
    lg_errorf(L, "%s: %s must be an integer or a list of %d integers", op, what, n);
}

/* opts[key] as n integers; def when absent (opts 0 or the field nil). Returns whether present. */
static bool sp_ints_opt(lua_State *L, int opts, const char *key, int n, int64_t *out, int64_t def, const char *op) {
    for (int i = 0; i < n; i++) out[i] = def;
    if (!opts) return false;
    if (lua_getfield(L, opts, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return false;
    }
    sp_ints_at(L, lua_gettop(L), n, out, key, op);
    lua_pop(L, 1);
    return true;
}

/* The optional tensor at idx (nil, absent or an options table: NULL). */
static graft_tensor *sp_opt_tensor(lua_State *L, int idx, const char *what, const char *op) {
    int t = lua_type(L, idx);
    if (t == LUA_TNONE || t == LUA_TNIL) return NULL;
    graft_tensor *x = lg_test(L, idx);
    if (x) return x;
    if (t == LUA_TTABLE) return NULL;
    lg_errorf(L, "%s: %s must be a tensor or nil, got %s", op, what, luaL_typename(L, idx));
    return NULL;
}

/* Refuses arguments after `last` other than the options table (PyTorch's positional
 * stride, padding, ... would otherwise be ignored). */
static void sp_no_extra(lua_State *L, int last, int opts, const char *op, const char *example) {
    for (int i = last + 1; i <= lua_gettop(L); i++)
        if (i != opts && !lua_isnil(L, i))
            lg_errorf(L, "%s: options go in a table after the arguments, as in %s (argument %d is a %s)", op, example, i,
                      luaL_typename(L, i));
}

static bool sp_opt_bool(lua_State *L, int opts, const char *key, bool def) {
    return lg_opt_bool(L, opts, key, def) != 0;
}

/* ---- convolutions ---- */

/* F.conv{1,2}d(input, weight [, bias] [, {stride, padding, dilation, groups}]) and
 * F.conv_transpose{1,2}d(input, weight [, bias] [, {stride, padding, output_padding,
 * groups, dilation}]) */
static int sp_conv(lua_State *L, int spatial, bool transposed) {
    graft_conv_opts o = graft_conv_defaults(spatial, transposed);
    const char *op = graft_conv_name(&o);
    graft_tensor *x = lg_check(L, 1), *w = lg_check(L, 2), *b = sp_opt_tensor(L, 3, "bias", op);
    int opts = lg_opts_index(L, 3);
    sp_no_extra(L, 3, opts, op, transposed ? "F.conv_transpose2d(x, w, b, {stride = 2, output_padding = 1})"
                                           : "F.conv2d(x, w, b, {stride = 2, padding = 1})");
    sp_ints_opt(L, opts, "stride", spatial, o.stride, 1, op);
    sp_ints_opt(L, opts, "dilation", spatial, o.dilation, 1, op);
    if (opts) {
        if (lua_getfield(L, opts, "padding") == LUA_TSTRING) {
            const char *p = lua_tostring(L, -1);
            if (transposed) lg_errorf(L, "%s: padding must be an integer or a list of %d integers", op, spatial);
            if (strcmp(p, "same") == 0) o.pad_mode = GRAFT_CONV_PAD_SAME;
            else if (strcmp(p, "valid") == 0) o.pad_mode = GRAFT_CONV_PAD_VALID;
            else lg_errorf(L, "%s: padding must be \"same\", \"valid\" or integers, got \"%s\"", op, p);
        } else if (!lua_isnil(L, -1)) {
            sp_ints_at(L, lua_gettop(L), spatial, o.padding, "padding", op);
        }
        lua_pop(L, 1);
        lua_Integer groups = lg_opt_integer(L, opts, "groups", 1);
        o.groups = groups;
        if (transposed) sp_ints_opt(L, opts, "output_padding", spatial, o.output_padding, 0, op);
        else if (lua_getfield(L, opts, "output_padding") != LUA_TNIL)
            lg_errorf(L, "%s: output_padding is an option of conv_transpose%dd", op, spatial);
        else lua_pop(L, 1);
    }
    graft_tensor **out = lg_shell(L);
    if (graft_nn_conv(out, x, w, b, &o)) return lg_raise(L);
    return 1;
}

static int l_conv1d(lua_State *L) { return sp_conv(L, 1, false); }
static int l_conv2d(lua_State *L) { return sp_conv(L, 2, false); }
static int l_conv_transpose1d(lua_State *L) { return sp_conv(L, 1, true); }
static int l_conv_transpose2d(lua_State *L) { return sp_conv(L, 2, true); }

/* ---- pooling ---- */

/* The kernel_size at index 2 (or opts.kernel_size) and the window options. */
static void sp_pool_opts(lua_State *L, graft_pool_opts *o, int *opts_out, bool dilated, const char *op) {
    int64_t k[2];
    int opts = lg_opts_index(L, 2);
    if (lua_type(L, 2) == LUA_TNUMBER || (lua_type(L, 2) == LUA_TTABLE && opts != 2)) sp_ints_at(L, 2, 2, k, "kernel_size", op);
    else if (!sp_ints_opt(L, opts, "kernel_size", 2, k, 0, op)) lg_errorf(L, "%s: kernel_size is required", op);
    *o = graft_pool_defaults(k[0], k[1]);
    sp_no_extra(L, 2, opts, op, dilated ? "F.max_pool2d(x, 3, {stride = 2, padding = 1})" : "F.avg_pool2d(x, 3, {stride = 2})");
    if (opts) {
        /* stride: default (nil, or PyTorch's empty list) is the kernel size */
        lua_getfield(L, opts, "stride");
        int t = lua_type(L, -1);
        bool empty = t == LUA_TTABLE && !lg_test(L, -1) && lua_rawlen(L, -1) == 0;
        if (t != LUA_TNIL && !empty) sp_ints_at(L, lua_gettop(L), 2, o->stride, "stride", op);
        lua_pop(L, 1);
        sp_ints_opt(L, opts, "padding", 2, o->padding, 0, op);
        if (dilated) sp_ints_opt(L, opts, "dilation", 2, o->dilation, 1, op);
        o->ceil_mode = sp_opt_bool(L, opts, "ceil_mode", false);
    }
    *opts_out = opts;
}

/* F.max_pool2d(input, kernel_size [, {stride, padding, dilation, ceil_mode,
 * return_indices}]) -> out [, indices] */
static int l_max_pool2d(lua_State *L) {
    graft_tensor *x = lg_check(L, 1);
    graft_pool_opts o;
    int opts;
    sp_pool_opts(L, &o, &opts, true, "max_pool2d");
    bool ri = sp_opt_bool(L, opts, "return_indices", false);
    graft_tensor **out = lg_shell(L), **idx = ri ? lg_shell(L) : NULL;
    if (graft_nn_max_pool2d(out, idx, x, &o)) return lg_raise(L);
    return ri ? 2 : 1;
}

/* F.avg_pool2d(input, kernel_size [, {stride, padding, ceil_mode, count_include_pad,
 * divisor_override}]) */
static int l_avg_pool2d(lua_State *L) {
    graft_tensor *x = lg_check(L, 1);
    graft_pool_opts o;
    int opts;
    sp_pool_opts(L, &o, &opts, false, "avg_pool2d");
    o.count_include_pad = sp_opt_bool(L, opts, "count_include_pad", true);
    lua_Integer div = lg_opt_integer(L, opts, "divisor_override", 0);
    if (opts) {
        lua_getfield(L, opts, "divisor_override");
        bool given = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (given && div <= 0) lg_errorf(L, "avg_pool2d: divisor_override must be positive, got %lld", (long long)div);
    }
    o.divisor_override = div;
    graft_tensor **out = lg_shell(L);
    if (graft_nn_avg_pool2d(out, x, &o)) return lg_raise(L);
    return 1;
}

/* output_size at index 2: a number or {h, w} where nil/false keeps the input's size. */
static void sp_output_size(lua_State *L, graft_tensor *x, int64_t osize[2], const char *op) {
    int t = lua_type(L, 2);
    if (t == LUA_TNUMBER) {
        sp_ints_at(L, 2, 2, osize, "output_size", op);
        return;
    }
    if (t != LUA_TTABLE || lg_test(L, 2)) lg_errorf(L, "%s: output_size must be an integer or a list {h, w}", op);
    for (int i = 0; i < 2; i++) {
        int vt = lua_rawgeti(L, 2, i + 1), ok = 0;
        if (vt == LUA_TNIL || (vt == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
            osize[i] = x->ndim >= 2 ? x->shape[x->ndim - 2 + i] : 0;
            ok = 1;
        } else {
            osize[i] = lua_tointegerx(L, -1, &ok);
        }
        lua_pop(L, 1);
        if (!ok) lg_errorf(L, "%s: output_size must be an integer or a list {h, w}", op);
    }
}

/* F.adaptive_avg_pool2d(input, output_size) */
static int l_adaptive_avg_pool2d(lua_State *L) {
    graft_tensor *x = lg_check(L, 1);
    int64_t os[2];
    sp_output_size(L, x, os, "adaptive_avg_pool2d");
    graft_tensor **out = lg_shell(L);
    if (graft_nn_adaptive_avg_pool2d(out, x, os)) return lg_raise(L);
    return 1;
}

/* F.adaptive_max_pool2d(input, output_size [, {return_indices}]) -> out [, indices] */
static int l_adaptive_max_pool2d(lua_State *L) {
    graft_tensor *x = lg_check(L, 1);
    int64_t os[2];
    sp_output_size(L, x, os, "adaptive_max_pool2d");
    int opts = lg_opts_index(L, 3);
    bool ri = sp_opt_bool(L, opts, "return_indices", false);
    graft_tensor **out = lg_shell(L), **idx = ri ? lg_shell(L) : NULL;
    if (graft_nn_adaptive_max_pool2d(out, idx, x, os)) return lg_raise(L);
    return ri ? 2 : 1;
}

/* ---- interpolate ---- */

/* A number or a list of n numbers at idx into out. */
static void sp_numbers_at(lua_State *L, int idx, int n, double *out, const char *what) {
    if (lua_type(L, idx) == LUA_TNUMBER) {
        for (int i = 0; i < n; i++) out[i] = lua_tonumber(L, idx);
        return;
    }
    if (lua_type(L, idx) == LUA_TTABLE && lua_rawlen(L, idx) == (size_t)n) {
        int ok = 1;
        for (int i = 0; i < n && ok; i++) {
            lua_rawgeti(L, idx, i + 1);
            out[i] = lua_tonumberx(L, -1, &ok);
            lua_pop(L, 1);
        }
        if (ok) return;
    }
    lg_errorf(L, "interpolate: %s must be a number or a list of %d numbers (one per spatial dim)", what, n);
}

/* F.interpolate(input [, size] [, {size, scale_factor, mode = "nearest", align_corners,
 * recompute_scale_factor}]) */
static int l_interpolate(lua_State *L) {
    const char *op = "interpolate";
    graft_tensor *x = lg_check(L, 1);
    int S = x->ndim - 2;
    if (S < 1 || S > 2)
        return lg_errorf(L, "%s: expected a 3-D or 4-D input (batch, channels, spatial dims), got %d dims", op, x->ndim);
    graft_interp_opts o;
    memset(&o, 0, sizeof o);
    int opts = lg_opts_index(L, 2);
    bool has_size = false, has_scale = false;
    if (lua_type(L, 2) == LUA_TNUMBER || (lua_type(L, 2) == LUA_TTABLE && opts != 2 && !lg_test(L, 2))) {
        sp_ints_at(L, 2, S, o.size, "size", op);
        has_size = true;
    }
    if (opts) {
        if (lua_getfield(L, opts, "size") != LUA_TNIL) {
            if (has_size) lg_errorf(L, "%s: size is given twice", op);
            sp_ints_at(L, lua_gettop(L), S, o.size, "size", op);
            has_size = true;
        }
        lua_pop(L, 1);
        if (lua_getfield(L, opts, "scale_factor") != LUA_TNIL) {
            sp_numbers_at(L, lua_gettop(L), S, o.scale_factor, "scale_factor");
            has_scale = true;
        }
        lua_pop(L, 1);
        const char *mode = "nearest";
        if (lua_getfield(L, opts, "mode") != LUA_TNIL) {
            if (!lua_isstring(L, -1)) lg_errorf(L, "%s: mode must be a string", op);
            mode = lua_tostring(L, -1);
        }
        if (strcmp(mode, "nearest") == 0) o.mode = GRAFT_INTERP_NEAREST;
        else if (strcmp(mode, "linear") == 0) o.mode = GRAFT_INTERP_LINEAR;
        else if (strcmp(mode, "bilinear") == 0) o.mode = GRAFT_INTERP_BILINEAR;
        else lg_errorf(L, "%s: mode \"%s\" is not supported (nearest, linear, bilinear)", op, mode);
        lua_pop(L, 1);
        if (lua_getfield(L, opts, "align_corners") != LUA_TNIL) {
            if (o.mode == GRAFT_INTERP_NEAREST)
                lg_errorf(L, "%s: align_corners can only be set with the interpolating modes (linear, bilinear)", op);
            o.align_corners = lua_toboolean(L, -1);
        }
        lua_pop(L, 1);
        o.recompute_scale_factor = sp_opt_bool(L, opts, "recompute_scale_factor", false);
    }
    if (has_size && has_scale) lg_errorf(L, "%s: only one of size and scale_factor may be given", op);
    if (!has_size && !has_scale) lg_errorf(L, "%s: either size or scale_factor must be given", op);
    if (has_size) {
        for (int i = 0; i < S; i++)
            if (o.size[i] < 1) lg_errorf(L, "%s: size must be positive, got %lld", op, (long long)o.size[i]);
    }
    graft_tensor **out = lg_shell(L);
    if (graft_nn_interpolate(out, x, &o)) return lg_raise(L);
    return 1;
}

/* ---- pad ---- */

/* F.pad(input, pad [, mode [, value]]) or F.pad(input, pad, {mode = "constant", value = 0}) */
static int l_pad(lua_State *L) {
    const char *op = "pad";
    graft_tensor *x = lg_check(L, 1);
    if (lua_type(L, 2) != LUA_TTABLE || lg_test(L, 2)) return lg_errorf(L, "%s: pad must be a list of integers", op);
    int npad = (int)lua_rawlen(L, 2);
    if (npad > 2 * GRAFT_MAX_DIMS) return lg_errorf(L, "%s: %d padding values are too many", op, npad);
    int64_t pad[2 * GRAFT_MAX_DIMS];
    for (int i = 0; i < npad; i++) {
        int ok;
        lua_rawgeti(L, 2, i + 1);
        pad[i] = lua_tointegerx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok) return lg_errorf(L, "%s: pad must be a list of integers (element %d is not)", op, i + 1);
    }
    const char *mode = "constant";
    double value = 0;
    int opts = lg_opts_index(L, 3);
    if (lua_type(L, 3) == LUA_TSTRING) {
        mode = lua_tostring(L, 3);
        if (!lua_isnoneornil(L, 4) && lua_type(L, 4) != LUA_TTABLE) value = luaL_checknumber(L, 4);
    } else if (opts) {
        if (lua_getfield(L, opts, "mode") != LUA_TNIL) {
            if (!lua_isstring(L, -1)) lg_errorf(L, "%s: mode must be a string", op);
            mode = lua_tostring(L, -1);
        }
        lua_pop(L, 1);
        value = lg_opt_number(L, opts, "value", 0);
    }
    graft_pad_mode m;
    if (strcmp(mode, "constant") == 0) m = GRAFT_PAD_CONSTANT;
    else if (strcmp(mode, "reflect") == 0) m = GRAFT_PAD_REFLECT;
    else if (strcmp(mode, "replicate") == 0) m = GRAFT_PAD_REPLICATE;
    else if (strcmp(mode, "circular") == 0) m = GRAFT_PAD_CIRCULAR;
    else return lg_errorf(L, "%s: mode \"%s\" is not supported (constant, reflect, replicate, circular)", op, mode);
    graft_tensor **out = lg_shell(L);
    if (graft_nn_pad(out, x, pad, npad, m, value)) return lg_raise(L);
    return 1;
}

static const luaL_Reg spatial_funcs[] = {
    {"conv1d", l_conv1d}, {"conv2d", l_conv2d}, {"conv_transpose1d", l_conv_transpose1d},
    {"conv_transpose2d", l_conv_transpose2d}, {"max_pool2d", l_max_pool2d}, {"avg_pool2d", l_avg_pool2d},
    {"adaptive_avg_pool2d", l_adaptive_avg_pool2d}, {"adaptive_max_pool2d", l_adaptive_max_pool2d},
    {"interpolate", l_interpolate}, {"pad", l_pad}, {NULL, NULL}};

/* Called with graft.F on top of the stack. */
void graft_bind_nn_spatial(lua_State *L) { luaL_setfuncs(L, spatial_funcs, 0); }
