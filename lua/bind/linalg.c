/* graft bindings: matrix products. Lua has no `@`, so a:matmul(b) (or graft.matmul(a,
 * b)) is the general product; mm, bmm, mv, dot, outer, addmm and baddbmm follow
 * PyTorch, with beta and alpha in a trailing options table. */
#include "bind.h"

#include <dlfcn.h>

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
}
