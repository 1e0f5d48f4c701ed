/* graft bindings: luaopen_graft, the one entry point shared by the executable, stock
 * lua5.4 (`require "graft"`) and host applications. It builds the module table from the
 * per-area bindings, preloads the embedded pure-Lua library and runs graft._init. */
#include "bind.h"

#include <lualib.h>

#include "graft.h"

struct graft_lua_source { const char *name, *chunkname, *src; size_t len; };
extern const struct graft_lua_source graft_lua_sources[];

/* package.preload loader for embedded source number upvalue(1). */
static int module_load_embedded(lua_State *L) {
    const struct graft_lua_source *s = &graft_lua_sources[lua_tointeger(L, lua_upvalueindex(1))];
    if (luaL_loadbufferx(L, s->src, s->len, s->chunkname, "t") != LUA_OK) return lua_error(L);
    lua_pushvalue(L, 1); /* the module name, as require passes it */
    lua_call(L, 1, 1);
    return 1;
}

int luaopen_graft(lua_State *L) {
    lua_newtable(L);
    int module = lua_gettop(L);
    graft_bind_tensor(L);
    lua_settop(L, module);
    graft_bind_view(L);
    lua_settop(L, module);
    graft_bind_elementwise(L);
    lua_settop(L, module);
    graft_bind_reduce(L);
    lua_settop(L, module);
    graft_bind_shape(L);
    lua_settop(L, module);
    graft_bind_linalg(L);
    lua_settop(L, module);
    lua_newtable(L); /* graft.F: the functional neural-network ops */
    lua_pushvalue(L, -1);
    lua_setfield(L, module, "F");
    graft_bind_nn_spatial(L);
    lua_settop(L, module + 1);
    graft_bind_nn_functional(L);
    lua_settop(L, module);
    graft_bind_autograd(L); /* after the op bindings: it may wrap their methods */
    lua_settop(L, module);
    graft_bind_optim(L);
    lua_settop(L, module);
    graft_bind_data(L);
    lua_settop(L, module);
    graft_bind_pth(L);
    lua_settop(L, module);
    graft_bind_safetensors(L);
    lua_settop(L, module);
    graft_bind_cuda(L);
    lua_settop(L, module);
    lua_pushliteral(L, GRAFT_VERSION);
    lua_setfield(L, module, "version");

    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (int i = 0; graft_lua_sources[i].name; i++) {
        lua_pushinteger(L, i);
        lua_pushcclosure(L, module_load_embedded, 1);
        lua_setfield(L, -2, graft_lua_sources[i].name);
    }
    lua_pop(L, 1);

    /* graft is "loaded" before its Lua half runs, so that half can require("graft"). */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, module);
    lua_setfield(L, -2, "graft");
    lua_pop(L, 1);

    lua_getglobal(L, "require");
    lua_pushliteral(L, "graft._init");
    lua_call(L, 1, 0);
    lua_settop(L, module);
    return 1;
}
