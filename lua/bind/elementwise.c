/* graft bindings: elementwise ops (placeholder until the elementwise bindings land). */
#include "bind.h"

void graft_bind_elementwise(lua_State *L) { (void)L; }
