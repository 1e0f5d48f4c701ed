-- graft.OrderedDict: a table that remembers insertion order, as Python's OrderedDict.
-- State dicts and the dicts inside checkpoints are OrderedDicts, so iteration follows
-- the file (and PyTorch's) order:
--
--   local sd = graft.OrderedDict()
--   sd["fc.weight"] = w; sd["fc.bias"] = b
--   for name, t in pairs(sd) do ... end      -- in insertion order
--   sd:keys()  --> {"fc.weight", "fc.bias"};  #sd --> 2;  sd.epoch / sd["fc.bias"]
--   sd["fc.bias"] = nil                       -- removes the key (and its place)
--
-- Values live in a hidden table, so keys never clash with the methods; a key that
-- shares a method's name (say "keys") still reads as the value, and the methods stay
-- reachable as graft.OrderedDict.keys(sd). `sd:metadata()` carries PyTorch's
-- per-module `_metadata` ({[module path] = {version = n}}) when a checkpoint had one.
local DATA, ORDER, META = {}, {}, {}

local OrderedDict = {}
local methods = {}

local mt = {
  __name = "graft.OrderedDict",
  __index = function(self, k)
    local v = rawget(self, DATA)[k]
    if v ~= nil then return v end
    return methods[k]
  end,
  __newindex = function(self, k, v)
    local data, order = rawget(self, DATA), rawget(self, ORDER)
    if k == nil then error("OrderedDict: key is nil", 2) end
    if data[k] == nil then
      if v == nil then return end
      order[#order + 1] = k
    elseif v == nil then
      for i = 1, #order do
        if order[i] == k then table.remove(order, i) break end
      end
    end
    data[k] = v
  end,
  __len = function(self) return #rawget(self, ORDER) end,
  __pairs = function(self)
    local data, order, i = rawget(self, DATA), rawget(self, ORDER), 0
    return function()
      i = i + 1
      local k = order[i]
      if k ~= nil then return k, data[k] end
    end, self, nil
  end,
  __tostring = function(self)
    local order, parts = rawget(self, ORDER), {}
    for i = 1, math.min(#order, 8) do parts[i] = string.format("%q", tostring(order[i])) end
    if #order > 8 then parts[#parts + 1] = ("... (%d more)"):format(#order - 8) end
    return "OrderedDict(" .. #order .. " keys: " .. table.concat(parts, ", ") .. ")"
  end,
}

-- OrderedDict() or OrderedDict(keys, values): keys a list, values a table keyed by them
-- (or a list aligned with keys when `values` is a sequence of the same length and the
-- keys are not integers).
local function new(keys, values, aligned)
  local self = setmetatable({ [DATA] = {}, [ORDER] = {} }, mt)
  if keys then
    for i, k in ipairs(keys) do
      local v
      if aligned then v = values[i] else v = values[k] end
      self[k] = v
    end
  end
  return self
end

function OrderedDict.new(keys, values) return new(keys, values, false) end
-- keys[i] maps to values[i]
function OrderedDict.from_pairs(keys, values) return new(keys, values, true) end
-- A plain table's entries, keys sorted (a stable order for tables without one).
function OrderedDict.from_table(t)
  if OrderedDict.is(t) then return t end
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) then return a < b end
    return type(a) == "number"
  end)
  return new(keys, t, false)
end
function OrderedDict.is(x) return getmetatable(x) == mt end

function methods.keys(self)
  local out = {}
  for i, k in ipairs(rawget(self, ORDER)) do out[i] = k end
  return out
end
function methods.values(self)
  local out, data = {}, rawget(self, DATA)
  for i, k in ipairs(rawget(self, ORDER)) do out[i] = data[k] end
  return out
end
function methods.len(self) return #rawget(self, ORDER) end
function methods.get(self, k, default)
  local v = rawget(self, DATA)[k]
  if v == nil then return default end
  return v
end
function methods.has(self, k) return rawget(self, DATA)[k] ~= nil end
function methods.copy(self)
  local c = new(rawget(self, ORDER), rawget(self, DATA), false)
  rawset(c, META, rawget(self, META))
  return c
end
function methods.metadata(self) return rawget(self, META) end
function methods.set_metadata(self, m) rawset(self, META, m) return self end
methods.items = function(self) return pairs(self) end

for k, f in pairs(methods) do OrderedDict[k] = f end

return setmetatable(OrderedDict, { __call = function(_, keys, values) return new(keys, values, false) end })
