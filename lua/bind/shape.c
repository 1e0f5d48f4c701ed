/* graft bindings: indexing (t[{...}] through `index` / `index_put_`, index_select,
 * gather, scatter, masks, take, nonzero) and joining (cat, stack, split, chunk, unbind,
 * flip, roll, repeat/tile, tril/triu, diag, diagonal). Lua positions and dims are
 * 1-based here and become 0-based before the core sees them; index VALUES inside index
 * tensors are 0-based throughout, as in PyTorch. */
#include "bind.h"

#include "autograd/autograd.h"

#include <string.h>

#include "ops/index.h"
#include "ops/join.h"
#include "ops/view.h"

#define SH_MAX_ENTRIES 64

/* ---- argument helpers ---- */

/* A number, boolean or 0-dim tensor at idx as a core scalar. */
static graft_ix_value sh_check_value(lua_State *L, int idx, const char *op) {
    graft_ix_value v = {false, 0, 0};
    graft_tensor *t = lg_test(L, idx);
    if (t) {
        if (t->ndim != 0)
            luaL_error(L, "%s: the value must be a number or a 0-dim tensor, got a tensor with %d dims", op, t->ndim);
        int top = lua_gettop(L);
        t = lg_on_host(L, t);
        if (graft_dtype_is_float(t->dtype)) v.d = graft_load_f64(graft_tensor_data(t), t->dtype);
        else { v.is_int = true; v.i = graft_load_i64(graft_tensor_data(t), t->dtype); }
        lua_settop(L, top);
    } else if (lua_isboolean(L, idx)) {
        v.is_int = true;
        v.i = lua_toboolean(L, idx);
    } else if (lua_isinteger(L, idx)) {
        v.is_int = true;
        v.i = lua_tointeger(L, idx);
    } else if (lua_type(L, idx) == LUA_TNUMBER) {
        v.d = lua_tonumber(L, idx);
    } else {
        luaL_error(L, "%s: expected a number, a boolean or a 0-dim tensor as the value, got a %s", op, luaL_typename(L, idx));
    }
    return v;
}

/* A Lua dim for ops that wrap dims themselves (cat, stack): 1-based becomes 0-based,
 * negative stays negative. */
static int sh_raw_dim(lua_State *L, int idx, const char *op) {
    lua_Integer d = luaL_optinteger(L, idx, 1);
    if (d == 0) return luaL_error(L, "%s: dim 0 is invalid (dims are 1-based; -1 is the last)", op);
    if (d > GRAFT_MAX_DIMS + 1 || d < -(GRAFT_MAX_DIMS + 1))
        return luaL_error(L, "%s: dim %d is out of range", op, (int)d);
    return d > 0 ? (int)d - 1 : (int)d;
}

/* Integers from `first` to the top (stopping at an options table), or one sequence table
 * at `first`. Returns how many. */
static int sh_int_list(lua_State *L, int first, int64_t *out, int max, const char *op) {
    int n = 0;
    if (lua_type(L, first) == LUA_TTABLE && !lg_test(L, first)) {
        lua_Integer len = (lua_Integer)lua_rawlen(L, first);
        if (len > max) return luaL_error(L, "%s: at most %d values, got %d", op, max, (int)len);
        for (lua_Integer i = 1; i <= len; i++) {
            int ok;
            lua_rawgeti(L, first, i);
            out[n++] = lua_tointegerx(L, -1, &ok);
            lua_pop(L, 1);
            if (!ok) return luaL_error(L, "%s: entry %d is not an integer", op, (int)i);
        }
        return n;
    }
    for (int i = first; i <= lua_gettop(L) && lua_type(L, i) != LUA_TTABLE; i++) {
        if (n >= max) return luaL_error(L, "%s: at most %d values", op, max);
        out[n++] = luaL_checkinteger(L, i);
    }
    return n;
}

/* The tensors of the list at idx, borrowed (the list keeps them alive), in an array
 * owned by a userdata left on the stack. */
static graft_tensor **sh_tensor_list(lua_State *L, int idx, int *n, const char *op) {
    if (lg_test(L, idx)) luaL_error(L, "%s: expected a list of tensors, got a tensor", op);
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    if (len > 1 << 20) luaL_error(L, "%s: too many tensors (%lld)", op, (long long)len);
    graft_tensor **arr = lua_newuserdatauv(L, sizeof(graft_tensor *) * (size_t)(len > 0 ? len : 1), 0);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, idx, i);
        arr[i - 1] = lg_test(L, -1);
        if (!arr[i - 1])
            luaL_error(L, "%s: entry %d of the list is a %s, not a tensor", op, (int)i, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    *n = (int)len;
    return arr;
}

/* Pushes a list of views of t along dim: pieces of the given sizes. */
static int sh_push_pieces(lua_State *L, graft_tensor *t, int dim, const int64_t *sizes, int64_t n, int64_t each) {
    lua_createtable(L, (int)(n < 1 << 20 ? n : 0), 0);
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t len = sizes ? sizes[i] : (off + each > t->shape[dim] ? t->shape[dim] - off : each);
        graft_tensor **out = lg_shell(L);
        if (graft_narrow(out, t, dim, off, len)) return lg_raise(L);
        lua_rawseti(L, -2, i + 1);
        off += len;
    }
    return 1;
}

/* ---- t[{...}] ---- */

static bool sh_is_none(lua_State *L, int idx) {
    if (luaL_getmetafield(L, idx, "__name") == LUA_TNIL) return false;
    bool r = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "graft.None") == 0;
    lua_pop(L, 1);
    return r;
}

/* A 1-based Lua position (negative from the end) as the core's 0-based one. */
static int64_t sh_position(lua_State *L, int idx, const char *what, int entry) {
    int ok;
    lua_Integer v = lua_tointegerx(L, idx, &ok);
    if (!ok) return luaL_error(L, "index: %s of entry %d must be an integer, got a %s", what, entry, luaL_typename(L, idx));
    if (v == 0) return luaL_error(L, "index: position 0 in entry %d is invalid (positions are 1-based; -1 is the last)", entry);
    return v > 0 ? v - 1 : v;
}

/* One entry of an index table (the value on top of the stack). */
static void sh_parse_entry(lua_State *L, graft_ix *e, int entry) {
    int top = lua_gettop(L);
    memset(e, 0, sizeof *e);
    graft_tensor *x = lg_test(L, top);
    if (x) {
        e->kind = GRAFT_IX_TENSOR;
        e->tensor = x;
        return;
    }
    switch (lua_type(L, top)) {
    case LUA_TNUMBER:
        if (!lua_isinteger(L, top))
            luaL_error(L, "index: entry %d must be an integer, got %s", entry, lua_tostring(L, top));
        e->kind = GRAFT_IX_INT;
        e->start = sh_position(L, top, "the position", entry);
        return;
    case LUA_TSTRING: {
        const char *s = lua_tostring(L, top);
        if (strcmp(s, ":") == 0) e->kind = GRAFT_IX_ALL;
        else if (strcmp(s, "...") == 0) e->kind = GRAFT_IX_ELLIPSIS;
        else if (strcmp(s, "none") == 0 || strcmp(s, "newaxis") == 0) e->kind = GRAFT_IX_NEWAXIS;
        else luaL_error(L, "index: unknown entry \"%s\" (expected \":\", \"...\" or \"none\")", s);
        return;
    }
    case LUA_TTABLE:
        if (sh_is_none(L, top)) {
            e->kind = GRAFT_IX_NEWAXIS;
            return;
        }
        /* {first, last, step}: any of them may be nil */
        e->kind = GRAFT_IX_RANGE;
        e->step = 1;
        if (lua_geti(L, top, 1) != LUA_TNIL) { e->start = sh_position(L, -1, "first", entry); e->has_start = true; }
        if (lua_geti(L, top, 2) != LUA_TNIL) { e->last = sh_position(L, -1, "last", entry); e->has_last = true; }
        if (lua_geti(L, top, 3) != LUA_TNIL) {
            int ok;
            e->step = lua_tointegerx(L, -1, &ok);
            if (!ok || e->step <= 0) luaL_error(L, "index: the step of entry %d must be a positive integer", entry);
        }
        lua_settop(L, top);
        if (!e->has_start && !e->has_last) e->kind = GRAFT_IX_ALL;
        return;
    default:
        luaL_error(L, "index: entry %d is a %s (expected an integer, a {first, last[, step]} range, \":\", \"...\", "
                      "\"none\" or a tensor)", entry, luaL_typename(L, top));
    }
}

/* The key at idx (a table of entries, or one index/mask tensor) into ix; returns n. */
static int sh_parse_key(lua_State *L, int idx, graft_ix *ix) {
    if (lg_test(L, idx)) {
        lua_pushvalue(L, idx);
        sh_parse_entry(L, &ix[0], 1);
        lua_pop(L, 1);
        return 1;
    }
    if (lua_type(L, idx) != LUA_TTABLE)
        return luaL_error(L, "index: expected a table of entries or a tensor as the key, got a %s", luaL_typename(L, idx));
    lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
    if (len > SH_MAX_ENTRIES) return luaL_error(L, "index: at most %d entries, got %d", SH_MAX_ENTRIES, (int)len);
    for (lua_Integer i = 1; i <= len; i++) {
        if (lua_rawgeti(L, idx, i) == LUA_TNIL) return luaL_error(L, "index: entry %d is nil", (int)i);
        sh_parse_entry(L, &ix[i - 1], (int)i);
        lua_pop(L, 1);
    }
    return (int)len;
}

/* t:index(key): views for integers, ranges, ":", "...", "none"; copies with tensors. */
static int sh_index(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    graft_ix ix[SH_MAX_ENTRIES];
    int n = sh_parse_key(L, 2, ix);
    graft_tensor **out = lg_shell(L);
    if (graft_index(out, t, ix, n)) return lg_raise(L);
    return 1;
}

/* t:index_put_(key, value): t[key] = value (a tensor broadcast to the indexed shape, or
 * a number); writes through index and mask tensors too. Returns t. */
static int sh_index_put_(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    graft_ix ix[SH_MAX_ENTRIES];
    int n = sh_parse_key(L, 2, ix);
    graft_tensor *value = lg_test(L, 3);
    if (!value) {
        graft_ix_value v = sh_check_value(L, 3, "index_put_");
        int64_t none[1] = {0};
        graft_tensor **tmp = lg_shell(L);
        if (graft_tensor_empty(tmp, 0, none, t->dtype, graft_cpu)) return lg_raise(L);
        graft_ix_value_store(graft_tensor_data(*tmp), t->dtype, v);
        value = *tmp;
        if (graft_tensor_device(t).type != GRAFT_CPU) value = lg_on_device(L, value, graft_tensor_device(t));
    }
    if (graft_index_put_(t, ix, n, value)) return lg_raise(L);
    lua_settop(L, 1);
    return 1;
}

/* ---- gather / scatter family ---- */

static int sh_index_select(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int dim = lg_check_dim(L, 2, t->ndim, "index_select");
    graft_tensor *index = lg_check(L, 3);
    graft_tensor **out = lg_shell(L);
    if (graft_index_select(out, t, dim, index)) return lg_raise(L);
    return 1;
}

static int sh_gather(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int dim = lg_check_dim(L, 2, t->ndim, "gather");
    graft_tensor *index = lg_check(L, 3);
    graft_tensor **out = lg_shell(L);
    if (graft_gather(out, t, dim, index)) return lg_raise(L);
    return 1;
}

/* scatter into `dst` from a src tensor or a value at 4; add selects scatter_add. */
static graft_status sh_scatter_into(lua_State *L, graft_tensor *dst, int dim, graft_tensor *index, bool add,
                                    const char *op) {
    graft_tensor *src = lg_test(L, 4);
    if (add) {
        if (!src) return (graft_status)luaL_error(L, "%s: expected a src tensor", op);
        return graft_scatter_add_(dst, dim, index, src);
    }
    if (src && src->ndim > 0) return graft_scatter_(dst, dim, index, src);
    return graft_scatter_value_(dst, dim, index, sh_check_value(L, 4, op));
}

static int sh_scatter_impl(lua_State *L, bool inplace, bool add, const char *op) {
    graft_tensor *t = lg_check(L, 1);
    int dim = lg_check_dim(L, 2, t->ndim, op);
    graft_tensor *index = lg_check(L, 3);
    if (lua_isnoneornil(L, 4)) return luaL_error(L, "%s: expected a src tensor or a value", op);
    if (!add && !lg_test(L, 4)) sh_check_value(L, 4, op); /* type errors before any shell */
    if (inplace) {
        if (sh_scatter_into(L, t, dim, index, add, op)) return lg_raise(L);
        lua_settop(L, 1);
        return 1;
    }
    graft_tensor **out = lg_shell(L);
    if (graft_tensor_clone(out, t) || sh_scatter_into(L, *out, dim, index, add, op)) return lg_raise(L);
    return 1;
}

static int sh_scatter(lua_State *L) { return sh_scatter_impl(L, false, false, "scatter"); }
static int sh_scatter_(lua_State *L) { return sh_scatter_impl(L, true, false, "scatter_"); }
static int sh_scatter_add(lua_State *L) { return sh_scatter_impl(L, false, true, "scatter_add"); }
static int sh_scatter_add_(lua_State *L) { return sh_scatter_impl(L, true, true, "scatter_add_"); }

/* index_add_(dim, index, src [, {alpha = a}]) */
static int sh_index_add_impl(lua_State *L, bool inplace) {
    const char *op = inplace ? "index_add_" : "index_add";
    graft_tensor *t = lg_check(L, 1);
    int dim = lg_check_dim(L, 2, t->ndim, op);
    graft_tensor *index = lg_check(L, 3), *src = lg_check(L, 4);
    int opts = lg_opts_index(L, 5);
    graft_ix_value alpha = {true, 1, 1.0};
    if (opts) {
        if (lua_getfield(L, opts, "alpha") != LUA_TNIL) alpha = sh_check_value(L, -1, op);
        lua_pop(L, 1);
    }
    if (inplace) {
        if (graft_index_add_(t, dim, index, src, alpha)) return lg_raise(L);
        lua_settop(L, 1);
        return 1;
    }
    graft_tensor **out = lg_shell(L);
    if (graft_tensor_clone(out, t) || graft_index_add_(*out, dim, index, src, alpha)) return lg_raise(L);
    return 1;
}

static int sh_index_add_(lua_State *L) { return sh_index_add_impl(L, true); }
static int sh_index_add(lua_State *L) { return sh_index_add_impl(L, false); }

static int sh_masked_fill(lua_State *L) {
    graft_tensor *t = lg_check(L, 1), *mask = lg_check(L, 2);
    graft_ix_value v = sh_check_value(L, 3, "masked_fill");
    graft_tensor **out = lg_shell(L);
    if (graft_masked_fill(out, t, mask, v)) return lg_raise(L);
    return 1;
}

static int sh_masked_fill_(lua_State *L) {
    graft_tensor *t = lg_check(L, 1), *mask = lg_check(L, 2);
    graft_ix_value v = sh_check_value(L, 3, "masked_fill_");
    if (graft_masked_fill_(t, mask, v)) return lg_raise(L);
    lua_settop(L, 1);
    return 1;
}

static int sh_masked_select(lua_State *L) {
    graft_tensor *t = lg_check(L, 1), *mask = lg_check(L, 2);
    graft_tensor **out = lg_shell(L);
    if (graft_masked_select(out, t, mask)) return lg_raise(L);
    return 1;
}

static int sh_take(lua_State *L) {
    graft_tensor *t = lg_check(L, 1), *index = lg_check(L, 2);
    graft_tensor **out = lg_shell(L);
    if (graft_take(out, t, index)) return lg_raise(L);
    return 1;
}

static int sh_nonzero(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    graft_tensor **out = lg_shell(L);
    if (graft_nonzero(out, t)) return lg_raise(L);
    return 1;
}

/* ---- joining ---- */

/* graft.cat(list [, dim = 1]) */
static int sh_cat(lua_State *L) {
    int n;
    int dim = sh_raw_dim(L, 2, "cat");
    graft_tensor **ts = sh_tensor_list(L, 1, &n, "cat");
    graft_tensor **out = lg_shell(L);
    if (graft_cat(out, ts, n, dim)) return lg_raise(L);
    return 1;
}

/* graft.stack(list [, dim = 1]) */
static int sh_stack(lua_State *L) {
    int n;
    int dim = sh_raw_dim(L, 2, "stack");
    graft_tensor **ts = sh_tensor_list(L, 1, &n, "stack");
    graft_tensor **out = lg_shell(L);
    if (graft_stack(out, ts, n, dim)) return lg_raise(L);
    return 1;
}

/* split(split_size | {sizes...} [, dim = 1]): a list of views. */
static int sh_split(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (t->ndim == 0) return luaL_error(L, "split: cannot split a 0-dim tensor");
    int dim = lua_isnoneornil(L, 3) ? 0 : lg_check_dim(L, 3, t->ndim, "split");
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_Integer len = (lua_Integer)lua_rawlen(L, 2);
        if (len > 1 << 24) return luaL_error(L, "split: too many split sizes");
        int64_t *sizes = lua_newuserdatauv(L, sizeof(int64_t) * (size_t)(len > 0 ? len : 1), 0);
        for (lua_Integer i = 1; i <= len; i++) {
            int ok;
            lua_rawgeti(L, 2, i);
            sizes[i - 1] = lua_tointegerx(L, -1, &ok);
            lua_pop(L, 1);
            if (!ok) return luaL_error(L, "split: split size %d is not an integer", (int)i);
        }
        if (graft_split_sizes_check(t, dim, sizes, len)) return lg_raise(L);
        return sh_push_pieces(L, t, dim, sizes, len, 0);
    }
    lua_Integer size = luaL_checkinteger(L, 2);
    int64_t count;
    if (graft_split_count(&count, t, dim, size)) return lg_raise(L);
    return sh_push_pieces(L, t, dim, NULL, count, size);
}

/* chunk(chunks [, dim = 1]): a list of views. */
static int sh_chunk(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (t->ndim == 0) return luaL_error(L, "chunk: cannot chunk a 0-dim tensor");
    lua_Integer chunks = luaL_checkinteger(L, 2);
    int dim = lua_isnoneornil(L, 3) ? 0 : lg_check_dim(L, 3, t->ndim, "chunk");
    int64_t piece, count;
    if (graft_chunk_size(&piece, &count, t, dim, chunks)) return lg_raise(L);
    return sh_push_pieces(L, t, dim, NULL, count, piece);
}

/* unbind([dim = 1]): a list of the slices along dim (views). */
static int sh_unbind(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    if (t->ndim == 0) return luaL_error(L, "unbind: cannot unbind a 0-dim tensor");
    int dim = lua_isnoneornil(L, 2) ? 0 : lg_check_dim(L, 2, t->ndim, "unbind");
    int64_t n = t->shape[dim];
    lua_createtable(L, (int)(n < 1 << 20 ? n : 0), 0);
    for (int64_t i = 0; i < n; i++) {
        graft_tensor **out = lg_shell(L);
        if (graft_ag_select(out, t, dim, i)) return lg_raise(L);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* flip(d1, d2, ...) or flip({d1, d2, ...}) */
static int sh_flip(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int64_t raw[GRAFT_MAX_DIMS];
    int n = sh_int_list(L, 2, raw, GRAFT_MAX_DIMS, "flip");
    int dims[GRAFT_MAX_DIMS];
    for (int i = 0; i < n; i++) dims[i] = lg_dim(L, raw[i], t->ndim, "flip");
    graft_tensor **out = lg_shell(L);
    if (graft_flip(out, t, dims, n)) return lg_raise(L);
    return 1;
}

/* roll(shift [, dim]) or roll({shifts...}, {dims...}); no dims rolls the flattened tensor. */
static int sh_roll(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int64_t shifts[GRAFT_MAX_DIMS], raw[GRAFT_MAX_DIMS];
    int ns, nd = 0;
    if (lua_type(L, 2) == LUA_TTABLE) ns = sh_int_list(L, 2, shifts, GRAFT_MAX_DIMS, "roll");
    else { shifts[0] = luaL_checkinteger(L, 2); ns = 1; }
    if (lua_type(L, 3) == LUA_TTABLE) nd = sh_int_list(L, 3, raw, GRAFT_MAX_DIMS, "roll");
    else if (!lua_isnoneornil(L, 3)) { raw[0] = luaL_checkinteger(L, 3); nd = 1; }
    int dims[GRAFT_MAX_DIMS];
    for (int i = 0; i < nd; i++) dims[i] = lg_dim(L, raw[i], t->ndim, "roll");
    graft_tensor **out = lg_shell(L);
    if (graft_roll(out, t, shifts, ns, dims, nd)) return lg_raise(L);
    return 1;
}

/* repeats(r1, r2, ...) / repeat: PyTorch's Tensor.repeat (at least ndim counts). */
static int sh_repeats(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int64_t reps[GRAFT_MAX_DIMS];
    int n = sh_int_list(L, 2, reps, GRAFT_MAX_DIMS, "repeat");
    graft_tensor **out = lg_shell(L);
    if (graft_repeat(out, t, reps, n)) return lg_raise(L);
    return 1;
}

/* tile(r1, r2, ...): PyTorch's tile (fewer counts than dims repeat the trailing dims). */
static int sh_tile(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int64_t reps[GRAFT_MAX_DIMS];
    int n = sh_int_list(L, 2, reps, GRAFT_MAX_DIMS, "tile");
    graft_tensor **out = lg_shell(L);
    if (graft_tile(out, t, reps, n)) return lg_raise(L);
    return 1;
}

#define TRI_BINDING(name, fn)                                                      \
    static int name(lua_State *L) {                                                \
        graft_tensor *t = lg_check(L, 1);                                          \
        lua_Integer k = luaL_optinteger(L, 2, 0);                                  \
        graft_tensor **out = lg_shell(L);                                          \
        if (fn(out, t, k)) return lg_raise(L);                                     \
        return 1;                                                                  \
    }
TRI_BINDING(sh_tril, graft_tril)
TRI_BINDING(sh_triu, graft_triu)
TRI_BINDING(sh_diag, graft_diag)

#define TRI_BINDING_(name, fn)                                                     \
    static int name(lua_State *L) {                                                \
        graft_tensor *t = lg_check(L, 1);                                          \
        if (fn(t, luaL_optinteger(L, 2, 0))) return lg_raise(L);                   \
        lua_settop(L, 1);                                                          \
        return 1;                                                                  \
    }
TRI_BINDING_(sh_tril_, graft_tril_)
TRI_BINDING_(sh_triu_, graft_triu_)

/* diagonal([offset = 0 [, dim1 = 1 [, dim2 = 2]]]): a view. */
static int sh_diagonal(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    lua_Integer off = luaL_optinteger(L, 2, 0);
    if (t->ndim < 2) return luaL_error(L, "diagonal: expected a tensor with at least 2 dims, got %d", t->ndim);
    int d1 = lua_isnoneornil(L, 3) ? 0 : lg_check_dim(L, 3, t->ndim, "diagonal");
    int d2 = lua_isnoneornil(L, 4) ? 1 : lg_check_dim(L, 4, t->ndim, "diagonal");
    graft_tensor **out = lg_shell(L);
    if (graft_diagonal(out, t, off, d1, d2)) return lg_raise(L);
    return 1;
}

/* Methods (t:name(...)) that are also module functions (graft.name(t, ...)). */
static const luaL_Reg shape_methods[] = {
    {"index", sh_index}, {"index_put_", sh_index_put_}, {"index_select", sh_index_select},
    {"gather", sh_gather}, {"scatter", sh_scatter}, {"scatter_", sh_scatter_},
    {"scatter_add", sh_scatter_add}, {"scatter_add_", sh_scatter_add_}, {"index_add", sh_index_add},
    {"index_add_", sh_index_add_}, {"masked_fill", sh_masked_fill}, {"masked_fill_", sh_masked_fill_},
    {"masked_select", sh_masked_select}, {"take", sh_take}, {"nonzero", sh_nonzero},
    {"split", sh_split}, {"chunk", sh_chunk}, {"unbind", sh_unbind}, {"flip", sh_flip}, {"roll", sh_roll},
    {"repeats", sh_repeats}, {"repeat", sh_repeats}, {"tile", sh_tile}, {"tril", sh_tril}, {"triu", sh_triu},
    {"tril_", sh_tril_}, {"triu_", sh_triu_}, {"diag", sh_diag}, {"diagonal", sh_diagonal},
    {NULL, NULL}};

/* Module functions only: they take a list first. */
static const luaL_Reg shape_functions[] = {{"cat", sh_cat}, {"concat", sh_cat}, {"stack", sh_stack}, {NULL, NULL}};

void graft_bind_shape(lua_State *L) {
    int module = lua_gettop(L);
    lg_register_methods(L, shape_methods);
    lua_settop(L, module);
    lg_register_functions(L, shape_methods);
    lg_register_functions(L, shape_functions);
    lua_pushliteral(L, "none");
    lua_setfield(L, module, "newaxis");
}
