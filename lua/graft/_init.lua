-- The pure-Lua half of the graft module: run once by luaopen_graft, with the module
-- table (built by the C bindings) already in package.loaded.graft.
local graft = require("graft")
local print_mod = require("graft.print")

graft._Tensor.__tostring = print_mod.tensor_tostring

graft.OrderedDict = require("graft.odict")

-- graft.None: the sentinel for "no value" where position matters (checkpoints).
graft.None = setmetatable({}, { __tostring = function() return "None" end, __name = "graft.None" })

-- Placeholders: objects of a checkpoint's pickle that are not tensors or containers
-- (loaded only with {allow_unknown = true}); inert tables, nothing is ever called:
-- {__class = "module.QualName", __args = {...}, __state = <BUILD state or nil>}.
graft._Placeholder = {
  __name = "graft.Placeholder",
  __tostring = function(p) return "<placeholder " .. tostring(rawget(p, "__class")) .. ">" end,
}
function graft.is_placeholder(x) return getmetatable(x) == graft._Placeholder end

require("graft.checkpoint") -- installs graft.load, graft.save and graft.state

-- graft._lazy(t, modules): t[k] requires modules[k] on first use and keeps it (for
-- graft itself and for namespaces such as graft.amp).
function graft._lazy(t, modules)
  return setmetatable(t, {
    __index = function(self, k)
      local name = modules[k]
      if name then
        local m = require(name)
        rawset(self, k, m)
        return m
      end
    end,
  })
end

-- graft.nn, graft.models and graft.optim load on first use: start-up stays fast for
-- scripts that only use tensors (graft.nn alone costs ~2.4 ms to load).
graft._lazy(graft, {
  nn = "graft.nn", models = "graft.models", optim = "graft.optim", adapt = "graft.adapt",
  progress = "graft.progress", metrics = "graft.metrics", pause = "graft.pause",
  data = "graft.data", amp = "graft.amp",
})

return graft
