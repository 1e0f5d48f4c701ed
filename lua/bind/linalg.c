/* graft bindings: linalg ops (placeholder until the linalg bindings land). */
#include "bind.h"

void graft_bind_linalg(lua_State *L) { (void)L; }
