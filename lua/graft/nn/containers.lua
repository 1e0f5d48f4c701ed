-- graft.nn containers: Sequential, ModuleList, ModuleDict. Children of Sequential and
-- ModuleList are named "0", "1", ... as in PyTorch, so checkpoint keys interoperate
-- ("features.0.weight"), while Lua positions are 1-based: seq[1] is the child named
-- "0", seq[-1] the last, #seq the count, and ipairs(seq) walks them in order.
-- Slices: Lua has no seq[0:2], so seq:slice(i [, j]) takes positions i..j inclusive
-- (1-based, negatives from the end, j = -1 by default; j < i gives an empty container):
-- PyTorch's seq[0:2] is seq:slice(1, 2), seq[-2:] is seq:slice(-2). The result is a new
-- container of the same module objects; as PyTorch 1.13 does, a Sequential slice keeps
-- the children's names (seq:slice(2)'s keys start at "1.") and a ModuleList slice
-- renumbers them from "0".
local base = require("graft.nn.module")
local OrderedDict = require("graft.odict")

local Module, is_module = base.Module, base.is_module

local C = {}

-- The position (1-based; negative from the end) of i among n children, or an error.
local function position(self, i, n)
  if math.type(i) ~= "integer" then
    error(("%s: index must be an integer, got %s"):format(self:_get_name(), tostring(i)), 3)
  end
  if i == 0 then
    error(("%s: positions are 1-based (seq[1] is the child named \"0\"); 0 is not a position"):format(
      self:_get_name()), 3)
  end
  local p = i < 0 and n + 1 + i or i
  if p < 1 or p > n then
    error(("%s: index %d is out of range (%d modules)"):format(self:_get_name(), i, n), 3)
  end
  return p
end

local function nth(self, i)
  local keys = self._modules.keys
  if math.type(i) == "integer" and i ~= 0 then
    local p = i < 0 and #keys + 1 + i or i
    if p < 1 or p > #keys then return nil end
    return self._modules.vals[keys[p]] or nil
  end
  return nil
end

-- Module arguments: m1, m2, ... or one list {m1, m2}, or named children as an
-- OrderedDict or a list of {name, module} pairs.
local function add_all(self, name, ...)
  local n = select("#", ...)
  local first = ...
  if n == 1 and type(first) == "table" and not is_module(first) then
    if OrderedDict.is(first) then
      for k, m in pairs(first) do self:add_module(k, m) end
      return
    end
    for i, item in ipairs(first) do
      if type(item) == "table" and not is_module(item) and type(item[1]) == "string" then
        self:add_module(item[1], item[2])
      elseif is_module(item) then
        self:add_module(tostring(#self._modules.keys), item)
      else
        error(("%s: entry %d is a %s, not a module"):format(name, i, base.typename(item)), 4)
      end
    end
    return
  end
  for i = 1, n do
    local m = select(i, ...)
    if not is_module(m) then
      error(("%s: argument %d is a %s, not a module"):format(name, i, base.typename(m)), 4)
    end
    self:add_module(tostring(i - 1), m)
  end
end

-- The children at positions i..j (see the header), as a list of {name, module}.
local function slice_items(self, i, j, op)
  local keys, vals = self._modules.keys, self._modules.vals
  local n = #keys
  local function pos(v, what)
    if math.type(v) ~= "integer" then
      error(("%s: %s must be an integer, got %s"):format(op, what, base.typename(v)), 4)
    end
    if v == 0 then
      error(("%s: positions are 1-based (slice(1, 2) is PyTorch's [0:2]); 0 is not a position"):format(op), 4)
    end
    local p = v < 0 and n + 1 + v or v
    if p < 1 or p > n then
      error(("%s: %s %d is out of range (%d modules)"):format(op, what, v, n), 4)
    end
    return p
  end
  local a = pos(i, "start")
  local b = pos(j == nil and -1 or j, "end")
  local items = {}
  for p = a, b do items[#items + 1] = { keys[p], vals[keys[p]] or nil } end
  return items
end

-- A new container of cls (self's class, or base when a subclass has its own __init,
-- whose arguments we cannot know) holding the given children.
local function new_like(self, base_cls)
  local cls = getmetatable(self).__class
  if cls.__init ~= base_cls.__init then cls = base_cls end
  return cls()
end

---------------------------------------------------------------------------------------
-- Sequential

local Sequential = Module:extend("Sequential", { typename = "nn.Sequential" })
C.Sequential = Sequential

-- nn.Sequential(m1, m2, ...), nn.Sequential({m1, m2}), or named:
-- nn.Sequential({{"conv", nn.Conv2d(1, 8, 3)}, {"relu", nn.ReLU()}})
function Sequential:__init(...) add_all(self, "Sequential", ...) end

Sequential.__getitem = nth
function Sequential.__setitem(self, i, m)
  local keys = self._modules.keys
  local p = position(self, i, #keys)
  if not is_module(m) then error(("Sequential: cannot assign a %s as a module"):format(base.typename(m)), 2) end
  self[keys[p]] = m
end
function Sequential.__len(self) return #self._modules.keys end

function Sequential:append(m)
  self:add_module(tostring(#self._modules.keys), m)
  return self
end

-- seq:extend({m1, m2}) appends modules; on the class, Sequential:extend("Name") makes
-- a subclass as Module:extend does.
function Sequential:extend(list, ...)
  if not is_module(self) then return Module.extend(self, list, ...) end
  for _, m in ipairs(list) do self:append(m) end
  return self
end

-- insert(pos, m): m at 1-based position pos (children after it are renamed, as
-- PyTorch 2.x's Sequential.insert).
function Sequential:insert(pos, m)
  if not is_module(m) then error(("module should be of type: %s"):format("nn.Module"), 2) end
  local keys, vals = self._modules.keys, self._modules.vals
  local n = #keys
  if pos < 0 then pos = n + 2 + pos end
  if pos < 1 or pos > n + 1 then error(("Index out of range: %d"):format(pos), 2) end
  local list = {}
  for i, k in ipairs(keys) do list[i] = vals[k] end
  table.insert(list, pos, m)
  self._modules.keys, self._modules.vals = {}, {}
  for i, c in ipairs(list) do self:add_module(tostring(i - 1), c or nil) end
  return self
end

-- slice(i [, j]) -> a Sequential of the children at positions i..j, names kept.
function Sequential:slice(i, j)
  local out = new_like(self, Sequential)
  for _, item in ipairs(slice_items(self, i, j, "Sequential.slice")) do out:add_module(item[1], item[2]) end
  return out
end

function Sequential:forward(x)
  local keys, vals = self._modules.keys, self._modules.vals
  for i = 1, #keys do
    local m = vals[keys[i]]
    if m then x = m(x) end
  end
  return x
end

---------------------------------------------------------------------------------------
-- ModuleList

local ModuleList = Module:extend("ModuleList", { typename = "nn.ModuleList" })
C.ModuleList = ModuleList

-- nn.ModuleList({m1, m2, ...})
function ModuleList:__init(list)
  if list ~= nil then
    if type(list) ~= "table" or is_module(list) then
      error("ModuleList: expected a list of modules", 3)
    end
    for i, m in ipairs(list) do
      if not is_module(m) then
        error(("ModuleList: entry %d is a %s, not a module"):format(i, base.typename(m)), 3)
      end
      self:add_module(tostring(i - 1), m)
    end
  end
end

ModuleList.__getitem = nth
ModuleList.__setitem = Sequential.__setitem
ModuleList.__len = Sequential.__len
ModuleList.append = Sequential.append
ModuleList.extend = Sequential.extend
ModuleList.insert = Sequential.insert

-- slice(i [, j]) -> a ModuleList of the children at positions i..j, named "0", "1", ...
function ModuleList:slice(i, j)
  local out = new_like(self, ModuleList)
  for k, item in ipairs(slice_items(self, i, j, "ModuleList.slice")) do out:add_module(tostring(k - 1), item[2]) end
  return out
end

function ModuleList:forward()
  error('Module [ModuleList] is missing the required "forward" function', 0)
end

---------------------------------------------------------------------------------------
-- ModuleDict

local ModuleDict = Module:extend("ModuleDict", { typename = "nn.ModuleDict" })
C.ModuleDict = ModuleDict

-- nn.ModuleDict(modules): an OrderedDict, a list of {name, module} pairs, or a plain
-- table (its keys sorted, since a Lua table has no order).
function ModuleDict:__init(modules)
  if modules ~= nil then self:update(modules) end
end

function ModuleDict:update(modules)
  if type(modules) ~= "table" or is_module(modules) then
    error("ModuleDict.update: expected a table of modules", 2)
  end
  if OrderedDict.is(modules) then
    for k, m in pairs(modules) do self:add_module(k, m) end
  elseif #modules > 0 then
    for _, item in ipairs(modules) do self:add_module(item[1], item[2]) end
  else
    local keys = {}
    for k in pairs(modules) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do self:add_module(k, modules[k]) end
  end
  return self
end

function ModuleDict:keys()
  local out = {}
  for i, k in ipairs(self._modules.keys) do out[i] = k end
  return out
end

function ModuleDict:values()
  local out = {}
  for i, k in ipairs(self._modules.keys) do out[i] = self._modules.vals[k] or nil end
  return out
end

function ModuleDict:items() return pairs(self) end

function ModuleDict:pop(key)
  local m = self._modules.vals[key]
  self:delattr(key)
  return m or nil
end

function ModuleDict:contains(key) return self._modules.vals[key] ~= nil end

ModuleDict.__len = Sequential.__len

function ModuleDict:forward()
  error('Module [ModuleDict] is missing the required "forward" function', 0)
end

return C
