/* graft bindings: autograd (placeholder until the autograd bindings land). */
#include "bind.h"

void graft_bind_autograd(lua_State *L) { (void)L; }
