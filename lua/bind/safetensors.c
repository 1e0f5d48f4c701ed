/* graft bindings: safetensors. graft._st_load and graft._st_save are the C half of
 * graft.load / graft.save (lua/graft/checkpoint.lua builds the OrderedDict and picks
 * the format); they take and return plain lists so the C side stays small. A device
 * given to _st_load gets each tensor copied from the file mapping (pinned staging);
 * CUDA tensors are saved from host copies. */
#include "bind.h"

#include <stdlib.h>
#include <string.h>

#include "checkpoint/safetensors.h"
#include "cuda/cuda.h"

#define ST_BOX_MT "graft.safetensors_index"

/* The index lives in a userdata while its tensors are handed to Lua, so an error
 * (a memory error while pushing) frees what was not handed over yet. */
typedef struct {
    graft_safetensors *st;
} st_box;

static int st_box_gc(lua_State *L) {
    st_box *b = luaL_checkudata(L, 1, ST_BOX_MT);
    graft_safetensors_free(b->st);
    b->st = NULL;
    return 0;
}

/* graft._st_load(path [, device]) -> names, tensors, meta_keys, meta_values, mapped: the
 * file's tensors in header order (lists aligned by position), its __metadata__ pairs in
 * header order, and how many tensors point into the file mapping (0 on a device). */
static int l_st_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    graft_device dev = graft_cpu;
    if (!lua_isnoneornil(L, 2)) {
        const char *loc = luaL_checkstring(L, 2);
        if (graft_device_parse(&dev, loc))
            return luaL_error(L, "load: unknown map_location \"%s\" (use \"cpu\", \"cuda\" or \"cuda:N\")", loc);
        if (dev.type == GRAFT_CUDA && graft_cuda_check_device(dev, "load"))
            return lg_errorf(L, "load: map_location \"%s\": graft has no CUDA device to load to (%s)", loc,
                             graft_last_error());
    }
    lua_settop(L, 1);
    st_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->st = NULL;
    luaL_setmetatable(L, ST_BOX_MT);
    if (graft_safetensors_load(&b->st, path)) return lg_raise(L);
    graft_safetensors *st = b->st;
    lua_createtable(L, (int)st->n, 0);
    lua_createtable(L, (int)st->n, 0);
    int names = lua_gettop(L) - 1, tensors = names + 1;
    for (int64_t i = 0; i < st->n; i++) {
        graft_st_entry *e = &st->entries[i];
        lua_pushlstring(L, e->name, e->name_len);
        lua_rawseti(L, names, (lua_Integer)i + 1);
        graft_tensor **slot = lg_shell(L);
        if (dev.type == GRAFT_CPU) {
            *slot = e->tensor; /* the userdata owns it from here */
            e->tensor = NULL;
        } else {
            graft_tensor *h = e->tensor;
            if (graft_tensor_empty(slot, h->ndim, h->shape, h->dtype, dev) || graft_tensor_copy_(*slot, h))
                return lg_raise(L);
            e->tensor = NULL;
            graft_tensor_release(h); /* its pages of the mapping can go now */
        }
        lua_rawseti(L, tensors, (lua_Integer)i + 1);
    }
    lua_createtable(L, (int)st->nmeta, 0);
    lua_createtable(L, (int)st->nmeta, 0);
    for (int64_t i = 0; i < st->nmeta; i++) {
        lua_pushlstring(L, st->meta[i].key, st->meta[i].key_len);
        lua_rawseti(L, -3, (lua_Integer)i + 1);
        lua_pushlstring(L, st->meta[i].value, st->meta[i].value_len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushinteger(L, dev.type == GRAFT_CPU ? (lua_Integer)st->mapped : 0);
    graft_safetensors_free(st);
    b->st = NULL;
    return 5;
}

/* A list at idx of n strings (no NUL bytes) as a C array in GC-managed memory. */
static const char **st_check_strings(lua_State *L, int idx, lua_Integer n, const char *what) {
    const char **out = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *out, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, idx, i) != LUA_TSTRING) {
            luaL_error(L, "save: %s %d is a %s, not a string", what, (int)i, luaL_typename(L, -1));
            return NULL;
        }
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        if (strlen(s) != len) {
            luaL_error(L, "save: %s \"%s\" holds a NUL byte", what, s);
            return NULL;
        }
        out[i - 1] = s; /* kept alive by the list */
        lua_pop(L, 1);
    }
    return out;
}

/* graft._st_save(path, names, tensors [, meta_keys, meta_values]): writes the tensors
 * (lists aligned by position) as a safetensors file, atomically. */
static int l_st_save(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2), nmeta = 0;
    if ((lua_Integer)lua_rawlen(L, 3) != n) return luaL_error(L, "save: %d names but %d tensors", (int)n, (int)lua_rawlen(L, 3));
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        luaL_checktype(L, 5, LUA_TTABLE);
        nmeta = (lua_Integer)lua_rawlen(L, 4);
        if ((lua_Integer)lua_rawlen(L, 5) != nmeta) return luaL_error(L, "save: metadata keys and values differ in number");
    }
    lua_settop(L, 5);
    const char **names = st_check_strings(L, 2, n, "tensor name");
    graft_tensor **tensors = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *tensors, 0);
    lua_newtable(L); /* host copies of device tensors, kept alive until the file is written */
    int host = lua_gettop(L);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 3, i);
        graft_tensor *t = lg_test(L, -1);
        if (!t) return luaL_error(L, "save: \"%s\" is a %s, not a tensor", names[i - 1], luaL_typename(L, -1));
        if (graft_tensor_device(t).type != GRAFT_CPU) {
            t = lg_on_host(L, t); /* pushed */
            lua_rawseti(L, host, i);
        }
        tensors[i - 1] = t; /* borrowed: the list (or the host table) keeps it alive */
        lua_pop(L, 1);
    }
    const char **mk = NULL, **mv = NULL;
    if (nmeta > 0) {
        mk = st_check_strings(L, 4, nmeta, "metadata key");
        mv = st_check_strings(L, 5, nmeta, "metadata value");
    }
    if (graft_safetensors_save(path, (int64_t)n, names, (graft_tensor *const *)tensors, (int64_t)nmeta, mk, mv))
        return lg_raise(L);
    return 0;
}

void graft_bind_safetensors(lua_State *L) {
    if (luaL_newmetatable(L, ST_BOX_MT)) {
        lua_pushcfunction(L, st_box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {{"_st_load", l_st_load}, {"_st_save", l_st_save}, {NULL, NULL}};
    lg_register_functions(L, fns);
}
