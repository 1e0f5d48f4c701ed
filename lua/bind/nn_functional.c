/* graft bindings: nn_functional (placeholder until the nn_functional bindings land). */
#include "bind.h"

void graft_bind_nn_functional(lua_State *L) { (void)L; }
