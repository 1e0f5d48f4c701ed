-- Shared by the graft.models constructors: options checking, building without
-- initialisation ({init = false}) and loading weights ({weights = path or state dict}).
local graft = require("graft")
local nn = require("graft.nn")

local U = {}

-- build(ctor, opts, name): ctor(opts) under nn.skip_init when opts.init == false or
-- weights are given; then the weights loaded with strict = true.
function U.build(ctor, o, name)
  if o ~= nil and type(o) ~= "table" then
    error(("%s: options must be a table, got %s"):format(name, type(o)), 3)
  end
  o = o or {}
  local model
  if o.init == false or o.weights ~= nil then
    model = nn.skip_init(ctor, o)
  else
    model = ctor(o)
  end
  if o.weights ~= nil then
    local sd = o.weights
    if type(sd) == "string" then sd = graft.load(sd) end
    model:load_state_dict(sd, { strict = o.strict ~= false })
  end
  return model
end

-- torchvision's _make_divisible: v rounded to a multiple of divisor, never below 90%.
function U.make_divisible(v, divisor, min_value)
  min_value = min_value or divisor
  local new_v = math.max(min_value, math.floor(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v then new_v = new_v + divisor end
  return math.tointeger(new_v) or new_v
end

return U
