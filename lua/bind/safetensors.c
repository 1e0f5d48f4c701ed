/* graft bindings: safetensors (placeholder until the safetensors bindings land). */
#include "bind.h"

void graft_bind_safetensors(lua_State *L) { (void)L; }
