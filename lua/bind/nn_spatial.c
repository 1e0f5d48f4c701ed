/* graft bindings: nn_spatial (placeholder until the nn_spatial bindings land). */
#include "bind.h"

void graft_bind_nn_spatial(lua_State *L) { (void)L; }
