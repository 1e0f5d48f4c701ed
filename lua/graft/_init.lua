-- The pure-Lua half of the graft module: run once by luaopen_graft, with the module
-- table (built by the C bindings) already in package.loaded.graft.
local graft = require("graft")
local print_mod = require("graft.print")

graft._Tensor.__tostring = print_mod.tensor_tostring

graft.OrderedDict = require("graft.odict")

-- graft.None: the sentinel for "no value" where position matters (checkpoints).
graft.None = setmetatable({}, { __tostring = function() return "None" end, __name = "graft.None" })

return graft
