/* graft: the embedding API (placeholder: the full API lands with the executable). */
#ifndef GRAFT_H
#define GRAFT_H

#include <lua.h>

#define GRAFT_VERSION "0.1.0"

/* Opens the graft module in L and leaves it on the stack (require "graft"). */
int luaopen_graft(lua_State *L);

#endif
