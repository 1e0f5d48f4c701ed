-- Shared by the graft.models constructors: options checking, building without
-- initialisation ({init = false}) and loading weights ({weights = path or state dict}).
local graft = require("graft")
local nn = require("graft.nn")

local U = {}

-- Options every constructor takes.
local COMMON = { "dtype", "init", "weights", "strict" }

-- An unknown option is an error, not a silently random model: `pretrained = true`
-- (torchvision's old spelling) would otherwise build one.
local function check_options(o, name, known)
  local ok = {}
  for _, k in ipairs(COMMON) do ok[k] = true end
  for _, k in ipairs(known) do ok[k] = true end
  for k in pairs(o) do
    if not ok[k] then
      local names = {}
      for _, n in ipairs(known) do names[#names + 1] = n end
      for _, n in ipairs(COMMON) do names[#names + 1] = n end
      local hint = ""
      if k == "pretrained" or k == "progress" then
        hint = " (graft downloads nothing: weights = \"resnet18.pth\" loads a checkpoint file or a state dict)"
      end
      error(("%s: unknown option %q%s; the options are %s"):format(name, tostring(k), hint,
        table.concat(names, ", ")), 4)
    end
  end
end

-- build(ctor, opts, name, known): ctor(opts) under nn.skip_init when opts.init == false
-- or weights are given; then the weights loaded with strict = true. known: the option
-- names the model takes besides dtype, init, weights and strict.
function U.build(ctor, o, name, known)
  if o ~= nil and type(o) ~= "table" then
    error(("%s: options must be a table, got %s"):format(name, type(o)), 3)
  end
  o = o or {}
  check_options(o, name, known or {})
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
