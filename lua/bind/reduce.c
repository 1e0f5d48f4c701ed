/* graft bindings: reduce ops (placeholder until the reduce bindings land). */
#include "bind.h"

void graft_bind_reduce(lua_State *L) { (void)L; }
