/* graft bindings: pth (placeholder until the pth bindings land). */
#include "bind.h"

void graft_bind_pth(lua_State *L) { (void)L; }
