/* graft bindings: graft.cuda, the device queries and the caching allocator's
 * counters, as torch.cuda names them. Every function answers on a build without CUDA
 * or a machine without a GPU: is_available() is false, device_count() 0, the memory
 * counters 0, and what needs a device raises an error saying why. */
#include "bind.h"

#include "cuda/cuda.h"

/* The allocator's out-of-memory hook: one full collection frees dead tensors. */
static void cuda_oom_collect(void *ctx) { lua_gc((lua_State *)ctx, LUA_GCCOLLECT); }

static int cuda_is_available(lua_State *L) {
    lua_pushboolean(L, graft_cuda_device_count() > 0);
    return 1;
}

static int cuda_device_count(lua_State *L) {
    lua_pushinteger(L, graft_cuda_device_count());
    return 1;
}

/* "cuda" with a GPU, "emulator" for the CUDA=emu build, "none" without CUDA. */
static int cuda_backend(lua_State *L) {
    lua_pushstring(L, graft_cuda_backend());
    return 1;
}

static int cuda_current_device(lua_State *L) {
    lua_pushinteger(L, graft_cuda_current_device());
    return 1;
}

/* Devices are numbered from 0 as in "cuda:0" (a device name, not a Lua position). */
static int cuda_device_arg(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return graft_cuda_current_device();
    if (lua_type(L, idx) == LUA_TSTRING) {
        graft_device d;
        if (graft_device_parse(&d, lua_tostring(L, idx)) || d.type != GRAFT_CUDA)
            return luaL_error(L, "cuda: \"%s\" is not a CUDA device name", lua_tostring(L, idx));
        return d.index;
    }
    return (int)luaL_checkinteger(L, idx);
}

static int cuda_set_device(lua_State *L) {
    if (graft_cuda_set_device(cuda_device_arg(L, 1))) return lg_raise(L);
    return 0;
}

static int cuda_synchronize(lua_State *L) {
    if (graft_cuda_synchronize()) return lg_raise(L);
    return 0;
}

static int cuda_get_device_name(lua_State *L) {
    int d = cuda_device_arg(L, 1);
    if (graft_cuda_check_device((graft_device){GRAFT_CUDA, (int8_t)d}, "get_device_name")) return lg_raise(L);
    lua_pushstring(L, graft_cuda_device_name(d));
    return 1;
}

static int cuda_get_device_capability(lua_State *L) {
    int d = cuda_device_arg(L, 1);
    if (graft_cuda_check_device((graft_device){GRAFT_CUDA, (int8_t)d}, "get_device_capability")) return lg_raise(L);
    int c = graft_cuda_capability(d);
    lua_pushinteger(L, c / 10);
    lua_pushinteger(L, c % 10);
    return 2;
}

static graft_cuda_memory_stats cuda_stats(lua_State *L, int idx) {
    graft_cuda_memory_stats s = {0};
    if (GRAFT_CUDA_BUILT) graft_cuda_memory_get_stats(cuda_device_arg(L, idx), &s);
    return s;
}

#define STAT_FN(fname, field)                                 \
    static int fname(lua_State *L) {                          \
        lua_pushinteger(L, (lua_Integer)cuda_stats(L, 1).field); \
        return 1;                                             \
    }
STAT_FN(cuda_memory_allocated, allocated)
STAT_FN(cuda_max_memory_allocated, peak_allocated)
STAT_FN(cuda_memory_reserved, reserved)
STAT_FN(cuda_max_memory_reserved, peak_reserved)

static int cuda_memory_stats(lua_State *L) {
    graft_cuda_memory_stats s = cuda_stats(L, 1);
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, (lua_Integer)s.allocated); lua_setfield(L, -2, "allocated_bytes");
    lua_pushinteger(L, (lua_Integer)s.peak_allocated); lua_setfield(L, -2, "allocated_bytes_peak");
    lua_pushinteger(L, (lua_Integer)s.reserved); lua_setfield(L, -2, "reserved_bytes");
    lua_pushinteger(L, (lua_Integer)s.peak_reserved); lua_setfield(L, -2, "reserved_bytes_peak");
    lua_pushinteger(L, (lua_Integer)s.allocs); lua_setfield(L, -2, "num_allocs");
    lua_pushinteger(L, (lua_Integer)s.cache_hits); lua_setfield(L, -2, "num_cache_hits");
    lua_pushinteger(L, (lua_Integer)s.frees); lua_setfield(L, -2, "num_frees");
    lua_pushinteger(L, (lua_Integer)s.oom_retries); lua_setfield(L, -2, "num_oom_retries");
    return 1;
}

static int cuda_reset_peak(lua_State *L) {
    if (GRAFT_CUDA_BUILT && graft_cuda_reset_peak(cuda_device_arg(L, 1))) return lg_raise(L);
    return 0;
}

static int cuda_empty_cache(lua_State *L) {
    if (GRAFT_CUDA_BUILT) graft_cuda_empty_cache();
    return 0;
}

void graft_bind_cuda(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"is_available", cuda_is_available},
        {"device_count", cuda_device_count},
        {"backend", cuda_backend},
        {"current_device", cuda_current_device},
        {"set_device", cuda_set_device},
        {"synchronize", cuda_synchronize},
        {"get_device_name", cuda_get_device_name},
        {"get_device_capability", cuda_get_device_capability},
        {"memory_allocated", cuda_memory_allocated},
        {"max_memory_allocated", cuda_max_memory_allocated},
        {"memory_reserved", cuda_memory_reserved},
        {"max_memory_reserved", cuda_max_memory_reserved},
        {"memory_stats", cuda_memory_stats},
        {"reset_peak_memory_stats", cuda_reset_peak},
        {"empty_cache", cuda_empty_cache},
        {NULL, NULL},
    };
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    lua_setfield(L, -2, "cuda");
    lua_State *main = L;
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD) == LUA_TTHREAD) main = lua_tothread(L, -1);
    lua_pop(L, 1);
    graft_cuda_set_oom_hook(cuda_oom_collect, main);
}
