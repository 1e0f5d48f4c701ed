/* graft bindings: the helpers every binding file uses. The only place that sees both
 * the core and Lua.
 *
 * A binding follows "check, shell, call, raise":
 *
 *     static int l_neg(lua_State *L) {
 *         graft_tensor *a = lg_check(L, 1);          // checks first: nothing held yet
 *         graft_tensor **out = lg_shell(L);          // the result userdata, empty
 *         if (graft_neg(out, a)) return lg_raise(L); // the core fills *out or fails
 *         return 1;                                  // the shell is the result
 *     }
 *
 * A shell whose slot stays NULL is harmless: __gc accepts it. Lua's 1-based dims and
 * indices become 0-based here (lg_check_dim, lg_check_index) and only here.
 */
#ifndef GRAFT_BIND_H
#define GRAFT_BIND_H

#include <lauxlib.h>
#include <lua.h>

#include "tensor/tensor.h"

#define LG_TENSOR_MT "graft.Tensor"

/* The tensor at idx, or a Lua error "bad argument #idx to 'fn' (tensor expected, got X)". */
graft_tensor *lg_check(lua_State *L, int idx);
/* The tensor at idx, or NULL when the value is not a tensor. */
graft_tensor *lg_test(lua_State *L, int idx);
/* Pushes an empty tensor userdata (slot NULL) with the tensor metatable; returns the
 * slot for the core to fill. */
graft_tensor **lg_shell(lua_State *L);
/* Pushes a userdata holding t, taking over the caller's reference. On failure to
 * allocate the userdata the reference is released first (so nothing leaks). */
void lg_push(lua_State *L, graft_tensor *t);
/* Raises a formatted Lua error with the C library's printf (lld, zu, g...), which
 * luaL_error's lua_pushfstring does not understand. Never returns. */
int lg_errorf(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Raises graft_last_error() as a Lua error. Never returns. */
int lg_raise(lua_State *L);

/* A 1-based (or negative) Lua dim at idx, as a 0-based dim of a tensor with ndim dims.
 * `op` names the caller in the error. Dim 0 is an error. */
int lg_check_dim(lua_State *L, int idx, int ndim, const char *op);
/* Converts a Lua dim value (1-based or negative) to 0-based; raises on 0 or out of range. */
int lg_dim(lua_State *L, lua_Integer d, int ndim, const char *op);
/* A 1-based (or negative) Lua index into a dim of `size`, as 0-based. */
int64_t lg_index(lua_State *L, lua_Integer i, int64_t size, const char *op);

/* A shape given either as integers from index `first` up to the first non-number, or as
 * one sequence table at `first`. Returns the index after the shape arguments. */
int lg_check_shape(lua_State *L, int first, int *ndim, int64_t *shape, const char *op);

/* Options in a trailing table: returns the index of an options table (a table with no
 * [1]) at or after `first`, or 0 when there is none. */
int lg_opts_index(lua_State *L, int first);
int lg_opt_dtype(lua_State *L, int opts, int def);                 /* opts.dtype */
graft_device lg_opt_device(lua_State *L, int opts, graft_device def); /* opts.device */
int lg_opt_bool(lua_State *L, int opts, const char *key, int def);
lua_Number lg_opt_number(lua_State *L, int opts, const char *key, lua_Number def);
lua_Integer lg_opt_integer(lua_State *L, int opts, const char *key, lua_Integer def);
/* A dtype name at idx ("float32", "float", ...); raises `unknown dtype "x"`. */
graft_dtype lg_check_dtype(lua_State *L, int idx);

/* Registration. Methods go on every tensor (t:name()); functions on the graft module
 * table (graft.name()); metamethods on the tensor metatable. The module table must be
 * on top of the stack when a graft_bind_* function is called. */
void lg_register_methods(lua_State *L, const luaL_Reg *regs);
void lg_register_functions(lua_State *L, const luaL_Reg *regs);
void lg_register_meta(lua_State *L, const luaL_Reg *regs);

/* Per-area registration, called in order by luaopen_graft. */
void graft_bind_tensor(lua_State *L);
void graft_bind_elementwise(lua_State *L);
void graft_bind_reduce(lua_State *L);
void graft_bind_view(lua_State *L);
void graft_bind_shape(lua_State *L);
void graft_bind_linalg(lua_State *L);
void graft_bind_autograd(lua_State *L);
void graft_bind_pth(lua_State *L);
void graft_bind_safetensors(lua_State *L);
void graft_bind_optim(lua_State *L);
void graft_bind_data(lua_State *L);
void graft_bind_cuda(lua_State *L);
/* t moved to dev as dtype d, pushed (autograd records it); raises on failure. */
int lg_to_device(lua_State *L, graft_tensor *t, graft_device dev, graft_dtype d);
/* t itself when on the CPU, else a CPU copy pushed on the stack (which grows by one):
 * for bindings that read elements (item, tolist, scalar arguments). Raises on failure. */
graft_tensor *lg_on_host(lua_State *L, graft_tensor *t);
/* t itself when on dev, else a copy on dev pushed on the stack (grows by one). */
graft_tensor *lg_on_device(lua_State *L, graft_tensor *t, graft_device dev);
/* The neural-network functions go into graft.F (graft.nn.functional): these two are
 * called with the F table on top of the stack (the module table below it). */
void graft_bind_nn_spatial(lua_State *L);
void graft_bind_nn_functional(lua_State *L);

#endif
