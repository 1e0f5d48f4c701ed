/* graft bindings: shape ops (placeholder until the shape bindings land). */
#include "bind.h"

void graft_bind_shape(lua_State *L) { (void)L; }
