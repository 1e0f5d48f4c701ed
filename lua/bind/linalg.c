/* graft bindings: matrix products. Lua has no `@`, so a:matmul(b) (or graft.matmul(a,
 * b)) is the general product; mm, bmm, mv, dot, outer, addmm and baddbmm follow
 * PyTorch, with beta and alpha in a trailing options table. Also the precision
 * switches of the products (graft.backends.cuda.matmul.allow_tf32,
 * graft.backends.cudnn.allow_tf32 / enabled / deterministic / benchmark / is_available(),
 * graft.set_float32_matmul_precision) and
 * graft.autocast(fn, {dtype = "bfloat16"}), the mixed-precision region. */
#include "bind.h"

#include <dlfcn.h>
#include <string.h>

#include "cuda/conv.h"
#include "cuda/cudnn.h"
#include "nn/conv.h"
#include "ops/autocast.h"
#include "ops/linalg.h"

typedef graft_status (*lb_binary_fn)(graft_tensor **, graft_tensor *, graft_tensor *);

static int lb_binary(lua_State *L, lb_binary_fn fn) {
    graft_tensor *a = lg_check(L, 1), *b = lg_check(L, 2);
    graft_tensor **out = lg_shell(L);
    if (fn(out, a, b)) return lg_raise(L);
    return 1;
}

static int l_matmul(lua_State *L) { return lb_binary(L, graft_linalg_matmul); }
static int l_mm(lua_State *L) { return lb_binary(L, graft_linalg_mm); }
static int l_bmm(lua_State *L) { return lb_binary(L, graft_linalg_bmm); }
static int l_mv(lua_State *L) { return lb_binary(L, graft_linalg_mv); }
static int l_dot(lua_State *L) { return lb_binary(L, graft_linalg_dot); }
static int l_outer(lua_State *L) { return lb_binary(L, graft_linalg_outer); }

typedef graft_status (*lb_add_fn)(graft_tensor **, graft_tensor *, graft_tensor *, graft_tensor *, double, double);

/* input:addmm(m1, m2 [, {beta = 1, alpha = 1}]) */
static int lb_addprod(lua_State *L, lb_add_fn fn) {
    graft_tensor *input = lg_check(L, 1), *m1 = lg_check(L, 2), *m2 = lg_check(L, 3);
    int opts = lg_opts_index(L, 4);
    double beta = lg_opt_number(L, opts, "beta", 1.0), alpha = lg_opt_number(L, opts, "alpha", 1.0);
    graft_tensor **out = lg_shell(L);
    if (fn(out, input, m1, m2, beta, alpha)) return lg_raise(L);
    return 1;
}

static int l_addmm(lua_State *L) { return lb_addprod(L, graft_linalg_addmm); }
static int l_baddbmm(lua_State *L) { return lb_addprod(L, graft_linalg_baddbmm); }

/* ---- precision switches ---- */

/* graft.set_float32_matmul_precision("highest" | "high" | "medium"): "high" and
 * "medium" allow TF32 in float32 products on CUDA, as PyTorch. */
static int l_set_precision(lua_State *L) {
    static const char *const names[] = {"highest", "high", "medium", NULL};
    int i = luaL_checkoption(L, 1, NULL, names);
    graft_linalg_set_allow_tf32(i > 0);
    return 0;
}

static int l_get_precision(lua_State *L) {
    lua_pushstring(L, graft_linalg_allow_tf32() ? "high" : "highest");
    return 1;
}

/* The switches of the tables: allow_tf32 in both (0 matmul, 1 convolutions), enabled,
 * deterministic and benchmark in graft.backends.cudnn. */
typedef struct {
    int which;
    const char *key;
    bool (*get)(void);
    void (*set)(bool);
} lb_switch;

static const lb_switch lb_switches[] = {
    {0, "allow_tf32", graft_linalg_allow_tf32, graft_linalg_set_allow_tf32},
    {1, "allow_tf32", graft_conv_allow_tf32, graft_conv_set_allow_tf32},
    {1, "enabled", graft_conv_cudnn_enabled, graft_conv_set_cudnn_enabled},
    {1, "deterministic", graft_conv_cudnn_deterministic, graft_conv_set_cudnn_deterministic},
    {1, "benchmark", graft_conv_cudnn_benchmark, graft_conv_set_cudnn_benchmark},
};

static const lb_switch *lb_switch_find(lua_State *L) {
    int which = (int)lua_tointeger(L, lua_upvalueindex(1));
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
    for (size_t i = 0; k && i < sizeof lb_switches / sizeof lb_switches[0]; i++)
        if (lb_switches[i].which == which && strcmp(k, lb_switches[i].key) == 0) return &lb_switches[i];
    return NULL;
}

/* The switch tables: t.<switch> reads and writes the C setting (the table named by
 * upvalue 1); other keys are plain fields. */
static int lb_switch_index(lua_State *L) {
    const lb_switch *sw = lb_switch_find(L);
    if (sw) lua_pushboolean(L, sw->get());
    else lua_pushnil(L);
    return 1;
}

static int lb_switch_newindex(lua_State *L) {
    const lb_switch *sw = lb_switch_find(L);
    if (sw) {
        luaL_argexpected(L, lua_isboolean(L, 3), 3, "boolean");
        sw->set(lua_toboolean(L, 3));
        return 0;
    }
    lua_rawset(L, 1);
    return 0;
}

/* graft.backends.cudnn.is_available(): whether libcudnn loaded (it is tried now). */
static int l_cudnn_is_available(lua_State *L) {
    lua_pushboolean(L, graft_cudnn_is_available());
    return 1;
}

/* graft.backends.cudnn.version(): cudnnGetVersion() (91900 for 9.19.0), or nil. */
static int l_cudnn_version(lua_State *L) {
    long v = graft_cudnn_version();
    if (v) lua_pushinteger(L, v);
    else lua_pushnil(L);
    return 1;
}

/* graft.backends.cudnn._why(): why the library is unavailable ("" when it is). */
static int l_cudnn_why(lua_State *L) {
    lua_pushstring(L, graft_cudnn_why());
    return 1;
}

/* graft.backends.cudnn._stats(): counters for specs and benchmarks: runs (forward,
 * backward_data, backward_filter), fallbacks, plans, algo_queries, refusals, and
 * last_algo (the algorithm numbers of the last runs, -1 before any). */
static int l_cudnn_stats(lua_State *L) {
    graft_cudnn_stats s;
    graft_cudnn_get_stats(&s);
    static const char *const kinds[3] = {"forward", "backward_data", "backward_filter"};
    lua_createtable(L, 0, 8);
    lua_createtable(L, 0, 3);
    for (int i = 0; i < 3; i++) {
        lua_pushinteger(L, (lua_Integer)s.runs[i]);
        lua_setfield(L, -2, kinds[i]);
    }
    lua_setfield(L, -2, "runs");
    lua_createtable(L, 0, 3);
    for (int i = 0; i < 3; i++) {
        lua_pushinteger(L, s.last_algo[i]);
        lua_setfield(L, -2, kinds[i]);
    }
    lua_setfield(L, -2, "last_algo");
    lua_pushinteger(L, (lua_Integer)s.fallbacks);
    lua_setfield(L, -2, "fallbacks");
    lua_pushinteger(L, (lua_Integer)s.plans);
    lua_setfield(L, -2, "plans");
    lua_pushinteger(L, (lua_Integer)s.algo_queries);
    lua_setfield(L, -2, "algo_queries");
    lua_pushinteger(L, (lua_Integer)s.refusals);
    lua_setfield(L, -2, "refusals");
    return 1;
}

/* graft.backends.cudnn._clear_cache(): forgets every plan, refusal and algorithm. */
static int l_cudnn_clear_cache(lua_State *L) {
    (void)L;
    graft_cudnn_clear_cache();
    return 0;
}

/* graft.backends.cudnn._emu_refuse(stage): the emulated cuDNN refuses from now on at
 * "descriptor", "algorithm", "run", "bias" (cudnnAddTensor) with NOT_SUPPORTED, or
 * fails at "fail" (EXECUTION_FAILED); nil or "none" stops. Returns false outside the
 * emulator. */
static int l_cudnn_emu_refuse(lua_State *L) {
    static const char *const stages[] = {"none", "descriptor", "algorithm", "run", "fail", "bias", NULL};
    int stage = lua_isnoneornil(L, 1) ? 0 : luaL_checkoption(L, 1, NULL, stages);
    lua_pushboolean(L, graft_cudnn_emu_refuse(stage));
    return 1;
}

static const luaL_Reg cudnn_funcs[] = {
    {"is_available", l_cudnn_is_available}, {"version", l_cudnn_version}, {"_why", l_cudnn_why},
    {"_stats", l_cudnn_stats}, {"_clear_cache", l_cudnn_clear_cache}, {"_emu_refuse", l_cudnn_emu_refuse},
    {NULL, NULL}};

/* Pushes a switch table for setting `which`. */
static void lb_push_switch(lua_State *L, int which) {
    lua_newtable(L);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, which);
    lua_pushcclosure(L, lb_switch_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushinteger(L, which);
    lua_pushcclosure(L, lb_switch_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, -2);
}

/* t[name] as a table (created when absent), pushed. */
static void lb_subtable(lua_State *L, int t, const char *name) {
    if (lua_getfield(L, t, name) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, t, name);
    }
}

/* graft.backends.cuda.matmul and graft.backends.cudnn (the module table on top). */
static void lb_backends(lua_State *L) {
    int mod = lua_gettop(L);
    lb_subtable(L, mod, "backends");
    int be = lua_gettop(L);
    lb_subtable(L, be, "cuda");
    lb_push_switch(L, 0);
    lua_setfield(L, -2, "matmul");
    lua_pop(L, 1);
    lb_push_switch(L, 1);
    for (const luaL_Reg *r = cudnn_funcs; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name); /* not a switch: __newindex stores it raw */
    }
    lua_setfield(L, be, "cudnn");
    lua_settop(L, mod);
}

/* ---- autocast ---- */

static int lb_autocast_depth;

/* graft.autocast(fn [, {dtype =, enabled = true, device_type = "cuda" | "cpu"}]): runs
 * fn() with autocast on (or off, enabled = false), restoring the mode even when fn
 * errors; returns fn's results. dtype defaults to float16 for device_type "cuda" and
 * to bfloat16 otherwise; without device_type tensors on every device are cast. */
static int l_autocast(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int opts = lg_opts_index(L, 2);
    graft_autocast_mode m = {true, GRAFT_BF16, -1};
    if (opts) {
        if (lua_getfield(L, opts, "device_type") != LUA_TNIL) {
            static const char *const devs[] = {"cpu", "cuda", NULL};
            m.device_type = luaL_checkoption(L, -1, NULL, devs) == 0 ? GRAFT_CPU : GRAFT_CUDA;
        }
        lua_pop(L, 1);
    }
    if (m.device_type == GRAFT_CUDA) m.dtype = GRAFT_F16;
    m.dtype = (graft_dtype)lg_opt_dtype(L, opts, (int)m.dtype);
    m.enabled = lg_opt_bool(L, opts, "enabled", 1);
    graft_autocast_mode prev;
    if (graft_autocast_set(m, &prev)) return lg_raise(L);
    lua_settop(L, 1);
    lb_autocast_depth++;
    int st = lua_pcall(L, 0, LUA_MULTRET, 0);
    lb_autocast_depth--;
    graft_autocast_set(prev, NULL);
    if (lb_autocast_depth == 0) graft_autocast_clear_cache();
    if (st != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

static int l_is_autocast_enabled(lua_State *L) {
    lua_pushboolean(L, graft_autocast_get().enabled);
    return 1;
}

static int l_get_autocast_dtype(lua_State *L) {
    lua_pushstring(L, graft_dtype_name(graft_autocast_get().dtype));
    return 1;
}

/* graft._conv_workspace(bytes): the CUDA convolutions' workspace cap (0: the default),
 * for specs of the batch chunking. No-op without CUDA. */
static int l_conv_workspace(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0, 1, "must be >= 0");
    (void)graft_cuda_conv_set_workspace((size_t)n);
    return 0;
}

static const luaL_Reg linalg_module_funcs[] = {
    {"_conv_workspace", l_conv_workspace},
    {"set_float32_matmul_precision", l_set_precision}, {"get_float32_matmul_precision", l_get_precision},
    {"autocast", l_autocast}, {"is_autocast_enabled", l_is_autocast_enabled},
    {"get_autocast_dtype", l_get_autocast_dtype}, {NULL, NULL}};

static const luaL_Reg linalg_funcs[] = {
    {"matmul", l_matmul}, {"mm", l_mm}, {"bmm", l_bmm}, {"mv", l_mv}, {"dot", l_dot},
    {"outer", l_outer}, {"ger", l_outer}, {"addmm", l_addmm}, {"baddbmm", l_baddbmm},
    {NULL, NULL}};

/* OpenMP workers (ours and OpenBLAS's) keep spinning in libgomp for a moment after a
 * parallel region. When stock lua5.4 exits it dlcloses graft.so, which would unmap
 * libgomp under those threads (a segfault at exit): pin libgomp for the process. */
static void lb_pin_openmp(void) {
    void *h = dlopen("libgomp.so.1", RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    (void)h; /* deliberately never closed */
}

void graft_bind_linalg(lua_State *L) {
    lb_pin_openmp();
    lg_register_methods(L, linalg_funcs);
    lg_register_functions(L, linalg_funcs);
    lg_register_functions(L, linalg_module_funcs);
    lb_backends(L);
}
