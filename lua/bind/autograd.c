/* graft bindings: autograd. Tensor properties (requires_grad, grad, grad_fn, is_leaf),
 * backward/detach/retain_grad, gradient hooks (register_hook and its handle), grad mode
 * (no_grad, enable_grad), the grad_fn object,
 * {requires_grad = true} on the creation functions, and differentiable versions of the
 * methods that live in tensor.c (clone, contiguous, to, copy_, select, t, unbind, the
 * fills, t[i]); registered after every other binding, so these replace them. */
#include "bind.h"

#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"

#define AG_NODE_MT "graft.Node"
#define AG_HOOK_MT "graft.HookHandle"
#define AG_HOOK_THREAD "graft.hook_thread"

/* ---- grad_fn objects ---- */

static void ag_push_node(lua_State *L, graft_node *n) {
    if (!n) {
        lua_pushnil(L);
        return;
    }
    graft_node **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = NULL;
    luaL_setmetatable(L, AG_NODE_MT);
    graft_node_retain(n);
    *p = n;
}

static graft_node *ag_check_node(lua_State *L, int idx) {
    graft_node **p = luaL_checkudata(L, idx, AG_NODE_MT);
    if (!*p) luaL_argerror(L, idx, "node is released");
    return *p;
}

static int node_gc(lua_State *L) {
    graft_node **p = luaL_checkudata(L, 1, AG_NODE_MT);
    graft_node_release(*p);
    *p = NULL;
    return 0;
}

static int node_tostring(lua_State *L) {
    lua_pushstring(L, graft_node_name(ag_check_node(L, 1)));
    return 1;
}

static int node_concat(lua_State *L) {
    luaL_tolstring(L, 1, NULL);
    luaL_tolstring(L, 2, NULL);
    lua_concat(L, 2);
    return 1;
}

static int node_eq(lua_State *L) {
    graft_node **a = luaL_testudata(L, 1, AG_NODE_MT), **b = luaL_testudata(L, 2, AG_NODE_MT);
    lua_pushboolean(L, a && b && *a == *b);
    return 1;
}

static int node_name(lua_State *L) { return node_tostring(L); }

/* next_functions: {{node or nil, 0}, ...} per input, as PyTorch's tuple of pairs. */
static int node_next_functions(lua_State *L) {
    graft_node *n = ag_check_node(L, 1);
    int k = graft_node_num_inputs(n);
    lua_createtable(L, k, 0);
    for (int i = 0; i < k; i++) {
        lua_createtable(L, 2, 0);
        ag_push_node(L, graft_node_next(n, i));
        lua_rawseti(L, -2, 1);
        lua_pushinteger(L, 0);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int node_index(lua_State *L) {
    ag_check_node(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "name") == 0) lua_pushcfunction(L, node_name);
    else if (strcmp(k, "next_functions") == 0) return node_next_functions(L);
    else lua_pushnil(L);
    return 1;
}

/* ---- gradient hooks ----
 * The core calls a C function; a Lua hook is a registry reference to the Lua callable,
 * called by a trampoline on the Lua thread that is running backward (ag_hook_L, set by
 * t:backward()) under lua_pcall: a Lua error becomes a status, so nothing jumps over the
 * engine's C frames, and the engine frees what it holds and returns it. The reference is
 * dropped when the hook is removed or when its tensor's metadata or grad_fn dies; that
 * can happen in any __gc, so the unref goes through a private thread whose stack is
 * never in use (AG_HOOK_THREAD, anchored in the registry). */

static _Thread_local lua_State *ag_hook_L;

typedef struct {
    lua_State *aux;      /* the private thread of the Lua state that owns ref */
    int ref;             /* LUA_REGISTRYINDEX reference to the callable */
} ag_lua_hook;

static void ag_lua_hook_free(void *p) {
    ag_lua_hook *h = p;
    luaL_unref(h->aux, LUA_REGISTRYINDEX, h->ref);
    free(h);
}

typedef struct {
    ag_lua_hook *hook;
    graft_tensor *grad;  /* borrowed */
    graft_tensor *out;   /* +1 on success when the hook returned a tensor */
} ag_hook_call;

/* Under lua_pcall: fn(grad); nil keeps grad, a tensor replaces it. */
static int ag_hook_protected(lua_State *L) {
    ag_hook_call *c = lua_touserdata(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, AG_HOOK_THREAD);
    if (lua_tothread(L, -1) != c->hook->aux) return luaL_error(L, "the hook was registered in another Lua state");
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->hook->ref);
    graft_tensor_retain(c->grad);
    lg_push(L, c->grad);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) return 0;
    graft_tensor *r = lg_test(L, -1);
    if (!r) return luaL_error(L, "the hook returned a %s (expected a tensor or nil)", luaL_typename(L, -1));
    graft_tensor_retain(r);
    c->out = r;
    return 0;
}

static graft_status ag_hook_trampoline(void *ctx, graft_tensor *grad, graft_tensor **out) {
    ag_lua_hook *h = ctx;
    lua_State *L = ag_hook_L;
    if (!L) return graft_error(GRAFT_EINVAL, "backward: a Lua gradient hook can only run in a backward started "
                                             "from Lua");
    if (!lua_checkstack(L, 4)) return graft_error(GRAFT_ENOMEM, "backward: Lua stack overflow calling a hook");
    /* nothing here may raise: the pushes below do not allocate */
    ag_hook_call c = {h, grad, NULL};
    lua_pushcfunction(L, ag_hook_protected);
    lua_pushlightuserdata(L, &c);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        graft_status st = msg ? graft_error(GRAFT_EINVAL, "backward: error in a gradient hook: %s", msg)
                              : graft_error(GRAFT_EINVAL, "backward: error in a gradient hook: (error object is a %s "
                                                          "value)", luaL_typename(L, -1));
        lua_pop(L, 1);
        return st;
    }
    *out = c.out;
    return GRAFT_OK;
}

static graft_hook *ag_check_hook(lua_State *L, int idx) {
    graft_hook **p = luaL_checkudata(L, idx, AG_HOOK_MT);
    if (!*p) luaL_argerror(L, idx, "hook handle is empty");
    return *p;
}

/* handle:remove(): idempotent; the Lua function is released now. */
static int hook_remove(lua_State *L) {
    graft_hook_remove(ag_check_hook(L, 1));
    return 0;
}

/* Dropping the handle keeps the hook (as PyTorch's RemovableHandle). */
static int hook_gc(lua_State *L) {
    graft_hook **p = luaL_checkudata(L, 1, AG_HOOK_MT);
    graft_hook_release(*p);
    *p = NULL;
    return 0;
}

static int hook_tostring(lua_State *L) {
    graft_hook *h = ag_check_hook(L, 1);
    lua_pushfstring(L, "RemovableHandle(%s)", graft_hook_removed(h) ? "removed" : "active");
    return 1;
}

static int hook_index(lua_State *L) {
    ag_check_hook(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "remove") == 0) lua_pushcfunction(L, hook_remove);
    else lua_pushnil(L);
    return 1;
}

/* t:register_hook(fn) -> handle: fn(grad) in backward; a returned tensor replaces grad. */
static int m_register_hook(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int tp = lua_type(L, 2);
    bool callable = tp == LUA_TFUNCTION;
    if (!callable && (tp == LUA_TTABLE || tp == LUA_TUSERDATA) && luaL_getmetafield(L, 2, "__call") != LUA_TNIL) {
        callable = true;
        lua_pop(L, 1);
    }
    if (!callable) return luaL_error(L, "register_hook: expected a function, got %s", luaL_typename(L, 2));
    if (lua_getfield(L, LUA_REGISTRYINDEX, AG_HOOK_THREAD) != LUA_TTHREAD)
        return luaL_error(L, "register_hook: graft's autograd bindings are not initialised");
    lua_State *aux = lua_tothread(L, -1);
    lua_pop(L, 1);
    graft_hook **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = NULL;
    luaL_setmetatable(L, AG_HOOK_MT);
    int shell = lua_gettop(L);
    lua_pushvalue(L, 2);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ag_lua_hook *h = malloc(sizeof *h);
    if (!h) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return luaL_error(L, "register_hook: out of memory");
    }
    h->aux = aux;
    h->ref = ref;
    if (graft_register_hook(p, t, ag_hook_trampoline, h, ag_lua_hook_free)) {
        ag_lua_hook_free(h);
        return lg_raise(L);
    }
    lua_settop(L, shell);
    return 1;
}

/* ---- properties ---- */

static int p_requires_grad(lua_State *L) {
    lua_pushboolean(L, graft_requires_grad(lg_check(L, 1)));
    return 1;
}

static int p_set_requires_grad(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    luaL_argexpected(L, lua_isboolean(L, 2), 2, "boolean");
    if (graft_set_requires_grad(t, lua_toboolean(L, 2))) return lg_raise(L);
    return 0;
}

/* PyTorch warns when .grad of a non-leaf is read (backward does not keep it); so does
 * graft, once per process, on stderr. */
static void ag_warn_nonleaf_grad(void) {
    static _Atomic int warned;
    if (warned++) return;
    fputs("graft: warning: the .grad of a tensor that is not a leaf is not kept by backward (it reads nil); "
          "call t:retain_grad() before backward to keep it, or read .grad of the leaf you meant\n", stderr);
}

static int p_grad(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    graft_tensor *g = graft_grad(t);
    if (!g && t->autograd && !graft_is_leaf(t) && !graft_retains_grad(t)) ag_warn_nonleaf_grad();
    if (!g) return lua_pushnil(L), 1;
    graft_tensor_retain(g);
    lg_push(L, g);
    return 1;
}

static int p_set_grad(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    graft_tensor *g = lua_isnil(L, 2) ? NULL : lg_test(L, 2);
    if (!g && !lua_isnil(L, 2)) return luaL_error(L, "grad: expected a tensor or nil, got %s", luaL_typename(L, 2));
    if (graft_set_grad(t, g)) return lg_raise(L);
    return 0;
}

static int p_grad_fn(lua_State *L) {
    ag_push_node(L, graft_grad_fn(lg_check(L, 1)));
    return 1;
}

static int p_is_leaf(lua_State *L) {
    lua_pushboolean(L, graft_is_leaf(lg_check(L, 1)));
    return 1;
}

static int p_retains_grad(lua_State *L) {
    lua_pushboolean(L, graft_retains_grad(lg_check(L, 1)));
    return 1;
}

static int p_version(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)lg_check(L, 1)->storage->version);
    return 1;
}

/* ---- methods ---- */

/* t:backward([grad] [, {retain_graph = false}]) */
static int m_backward(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    graft_tensor *grad = lg_test(L, 2);
    if (!grad && !lua_isnoneornil(L, 2) && lua_type(L, 2) != LUA_TTABLE)
        return luaL_error(L, "backward: expected a gradient tensor or an options table, got %s", luaL_typename(L, 2));
    int opts = lg_opts_index(L, 2);
    bool retain = lg_opt_bool(L, opts, "retain_graph", 0);
    if (lg_opt_bool(L, opts, "create_graph", 0))
        return luaL_error(L, "backward: create_graph is not supported (no higher-order gradients)");
    /* A young collection first: forward intermediates held only by dead userdata die
     * now, so backward's release of saved tensors really frees them (no Lua code runs
     * during backward to collect them). ~5-10 us; lowers a step's peak memory. */
    lua_gc(L, LUA_GCSTEP, 0);
    lua_State *prev = ag_hook_L;
    ag_hook_L = L;
    graft_status st = graft_backward(t, grad, retain);
    ag_hook_L = prev;
    if (st) return lg_raise(L);
    return 0;
}

static int m_detach(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    graft_tensor **out = lg_shell(L);
    if (graft_detach(out, t)) return lg_raise(L);
    return 1;
}

static int m_detach_(lua_State *L) {
    if (graft_detach_(lg_check(L, 1))) return lg_raise(L);
    lua_settop(L, 1);
    return 1;
}

static int m_requires_grad_(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    bool on = lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2);
    if (graft_set_requires_grad(t, on)) return lg_raise(L);
    lua_settop(L, 1);
    return 1;
}

static int m_retain_grad(lua_State *L) {
    if (graft_retain_grad(lg_check(L, 1))) return lg_raise(L);
    return 0;
}

/* ---- wrappers around methods of other bindings (the original is upvalue 1) ---- */

/* In-place fills: refuse leaves that require grad, run the original, then give a
 * tensor with history a zero-gradient node. Upvalue 2: the node's name. */
static int w_fill(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    const char *node = lua_tostring(L, lua_upvalueindex(2));
    if (graft_ag_fill_begin(t, node)) return lg_raise(L);
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, 1);
    if (graft_ag_fill_end(t, node)) return lg_raise(L);
    return 1;
}

/* Out-of-place scatter/scatter_add/index_add: the binding clones without recording, so
 * with grad in play this is a recorded clone then the in-place method (upvalue 2). */
static int w_outofplace(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    graft_tensor *src = lg_test(L, 4);
    int n = lua_gettop(L);
    if (!graft_grad_enabled() || !(graft_requires_grad(t) || (src && graft_requires_grad(src)))) {
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_insert(L, 1);
        lua_call(L, n, 1);
        return 1;
    }
    graft_tensor **c = lg_shell(L);
    if (graft_ag_clone(c, t)) return lg_raise(L);
    lua_replace(L, 1); /* the clone takes t's place */
    lua_settop(L, n);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_insert(L, 1);
    lua_call(L, n, 1);
    return 1;
}

/* norm(..., {dtype = d}): the binding converts the input without recording, so with grad
 * in play the conversion is done here, recorded, and norm sees the dtype it asks for. */
static int w_norm(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    int n = lua_gettop(L);
    int opts = lg_opts_index(L, 2);
    int d = lg_opt_dtype(L, opts, -1);
    if (d >= 0 && d != (int)t->dtype && graft_grad_enabled() && graft_requires_grad(t)) {
        graft_tensor **c = lg_shell(L);
        if (graft_ag_to_dtype(c, t, (graft_dtype)d)) return lg_raise(L);
        lua_replace(L, 1);
        lua_settop(L, n);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, 1);
    return 1;
}

/* Creation functions with {requires_grad = true} in a trailing options table. */
static int w_creation(lua_State *L) {
    int n = lua_gettop(L);
    bool rg = false;
    if (n > 0 && lua_type(L, n) == LUA_TTABLE && !lg_test(L, n)) {
        lua_getfield(L, n, "requires_grad");
        rg = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, 1);
    if (rg) {
        graft_tensor *t = lg_check(L, -1);
        if (graft_set_requires_grad(t, true)) return lg_raise(L);
    }
    return 1;
}

/* ---- grad mode ---- */

/* Runs fn(...) (at 1..top) with grad mode `on`, restoring the mode even when fn errors;
 * returns fn's results. */
static int ag_with_mode(lua_State *L, bool on) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int base = lua_gettop(L);
    bool prev = graft_set_grad_enabled(on);
    int st = lua_pcall(L, base - 1, LUA_MULTRET, 0);
    graft_set_grad_enabled(prev);
    if (st != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

static int l_no_grad(lua_State *L) { return ag_with_mode(L, false); }
static int l_enable_grad(lua_State *L) { return ag_with_mode(L, true); }

static int l_is_grad_enabled(lua_State *L) {
    lua_pushboolean(L, graft_grad_enabled());
    return 1;
}

static int l_set_grad_enabled(lua_State *L) {
    luaL_argexpected(L, lua_isboolean(L, 1), 1, "boolean");
    lua_pushboolean(L, graft_set_grad_enabled(lua_toboolean(L, 1)));
    return 1;
}

static int l_counters(lua_State *L) {
    graft_ag_counters c;
    graft_ag_get_counters(&c);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, c.nodes_run); lua_setfield(L, -2, "nodes_run");
    lua_pushinteger(L, c.grads_computed); lua_setfield(L, -2, "grads_computed");
    lua_pushinteger(L, c.grads_unused); lua_setfield(L, -2, "grads_unused");
    lua_pushinteger(L, c.nodes_live); lua_setfield(L, -2, "nodes_live");
    return 1;
}

static int l_reset_counters(lua_State *L) {
    (void)L;
    graft_ag_reset_counters();
    return 0;
}

/* ---- registration ---- */

static const luaL_Reg ag_methods[] = {
    {"backward", m_backward}, {"detach", m_detach}, {"detach_", m_detach_},
    {"requires_grad_", m_requires_grad_}, {"retain_grad", m_retain_grad}, {"register_hook", m_register_hook},
    {NULL, NULL}};

/* Module functions that are also methods (graft.select(t, ...), graft.clone(t)...). */
static const luaL_Reg ag_both[] = {
    {"detach", m_detach}, {NULL, NULL}};

static const luaL_Reg ag_functions[] = {
    {"no_grad", l_no_grad}, {"enable_grad", l_enable_grad}, {"is_grad_enabled", l_is_grad_enabled},
    {"set_grad_enabled", l_set_grad_enabled}, {"_autograd_counters", l_counters},
    {"_autograd_reset_counters", l_reset_counters}, {NULL, NULL}};

static const luaL_Reg hook_meta[] = {
    {"__gc", hook_gc}, {"__close", hook_remove}, {"__tostring", hook_tostring}, {"__index", hook_index},
    {NULL, NULL}};

static const luaL_Reg node_meta[] = {
    {"__gc", node_gc}, {"__tostring", node_tostring}, {"__eq", node_eq}, {"__index", node_index},
    {"__concat", node_concat}, {NULL, NULL}};

/* Registers name = fn in the table at idx. */
static void ag_set(lua_State *L, int idx, const char *name, lua_CFunction fn) {
    lua_pushcfunction(L, fn);
    lua_setfield(L, idx, name);
}

/* Replaces table[name] by a closure of fn over the original (and up to one more value
 * already pushed, or none when extra is NULL). */
static void ag_wrap(lua_State *L, int tbl, const char *name, lua_CFunction fn, const char *extra) {
    if (lua_getfield(L, tbl, name) == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    int nup = 1;
    if (extra) {
        lua_pushstring(L, extra);
        nup = 2;
    }
    lua_pushcclosure(L, fn, nup);
    lua_setfield(L, tbl, name);
}

void graft_bind_autograd(lua_State *L) {
    int module = lua_gettop(L);
    luaL_newmetatable(L, AG_NODE_MT);
    luaL_setfuncs(L, node_meta, 0);
    lua_pushliteral(L, AG_NODE_MT);
    lua_setfield(L, -2, "__name");
    luaL_newmetatable(L, AG_HOOK_MT);
    luaL_setfuncs(L, hook_meta, 0);
    lua_settop(L, module);
    if (lua_getfield(L, LUA_REGISTRYINDEX, AG_HOOK_THREAD) != LUA_TTHREAD) {
        lua_newthread(L);
        lua_setfield(L, LUA_REGISTRYINDEX, AG_HOOK_THREAD);
    }
    lua_settop(L, module);

    lg_register_methods(L, ag_methods);
    lua_settop(L, module);
    lg_register_functions(L, ag_both);
    lg_register_functions(L, ag_functions);

    lua_getfield(L, module, "_getters");
    int getters = lua_gettop(L);
    ag_set(L, getters, "requires_grad", p_requires_grad);
    ag_set(L, getters, "grad", p_grad);
    ag_set(L, getters, "grad_fn", p_grad_fn);
    ag_set(L, getters, "is_leaf", p_is_leaf);
    ag_set(L, getters, "retains_grad", p_retains_grad);
    ag_set(L, getters, "_version", p_version);
    lua_getfield(L, module, "_setters");
    int setters = lua_gettop(L);
    ag_set(L, setters, "requires_grad", p_set_requires_grad);
    ag_set(L, setters, "grad", p_set_grad);

    /* fills */
    lua_getfield(L, module, "_methods");
    int methods = lua_gettop(L);
    ag_wrap(L, methods, "fill_", w_fill, "FillBackward0");
    ag_wrap(L, methods, "zero_", w_fill, "ZeroBackward0");
    ag_wrap(L, methods, "uniform_", w_fill, "UniformBackward0");
    ag_wrap(L, methods, "normal_", w_fill, "NormalBackward0");
    ag_wrap(L, methods, "random_", w_fill, "RandomBackward0");

    ag_wrap(L, methods, "norm", w_norm, NULL);
    ag_wrap(L, module, "norm", w_norm, NULL);

    /* out-of-place scatter family: upvalue 2 is the in-place method */
    static const char *const oop[][2] = {{"scatter", "scatter_"}, {"scatter_add", "scatter_add_"},
                                         {"index_add", "index_add_"}};
    for (int i = 0; i < 3; i++) {
        for (int where = 0; where < 2; where++) {
            int tbl = where ? module : methods;
            if (lua_getfield(L, tbl, oop[i][0]) == LUA_TNIL) {
                lua_pop(L, 1);
                continue;
            }
            lua_getfield(L, methods, oop[i][1]);
            lua_pushcclosure(L, w_outofplace, 2);
            lua_setfield(L, tbl, oop[i][0]);
        }
    }

    /* creation functions */
    static const char *const creators[] = {"empty", "zeros", "ones", "full", "empty_like", "zeros_like",
                                           "ones_like", "full_like", "rand_like", "randn_like", "rand", "randn",
                                           "arange", "linspace", "eye", "tensor", "randint", "randint_like",
                                           "randperm", "frombuffer", NULL};
    for (int i = 0; creators[i]; i++) ag_wrap(L, module, creators[i], w_creation, NULL);

    lua_settop(L, module);
}
