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


-- ---- tensor methods composed of core ops (PyTorch 1.13 names, arguments, defaults) ----
-- Each is a method (t:isclose(u)) and, where PyTorch has torch.<name>, graft.<name>.
do
  local M = graft._methods

  local function is_opts(v) return type(v) == "table" and not graft.is_tensor(v) and v[1] == nil end

  -- t:isclose(other [, rtol=1e-05 [, atol=1e-08 [, equal_nan=false]]] [, {rtol =, atol =, equal_nan =}]):
  -- |t - other| <= atol + rtol * |other| elementwise (bool), equal infinities close,
  -- NaN close to NaN only with equal_nan; both tensors of one dtype.
  local function isclose(self, other, rtol, atol, equal_nan)
    local op = "isclose"
    local opts = is_opts(rtol) and rtol or is_opts(atol) and atol or is_opts(equal_nan) and equal_nan or nil
    if opts == rtol then rtol = nil end
    if opts == atol then atol = nil end
    if opts == equal_nan then equal_nan = nil end
    opts = opts or {}
    rtol = opts.rtol or rtol or 1e-05
    atol = opts.atol or atol or 1e-08
    if opts.equal_nan ~= nil then equal_nan = opts.equal_nan end
    if not graft.is_tensor(other) then error(op .. ": other must be a tensor, got a " .. type(other), 2) end
    if self:dtype() ~= other:dtype() then
      error(("%s: expected both tensors to have the same dtype, got %s and %s"):format(op, self:dtype(),
        other:dtype()), 2)
    end
    if type(rtol) ~= "number" or rtol < 0 then
      error(op .. ": rtol must be greater than or equal to zero, but got " .. tostring(rtol), 2)
    end
    if type(atol) ~= "number" or atol < 0 then
      error(op .. ": atol must be greater than or equal to zero, but got " .. tostring(atol), 2)
    end
    local close = self:eq(other)
    if equal_nan and self:is_floating_point() then close = close:logical_or(self:isnan():logical_and(other:isnan())) end
    if rtol == 0 and atol == 0 then return close end
    local a, b = self, other
    if a:dtype() == "bool" then a, b = a:float(), b:float() end
    -- as PyTorch: the tolerance in the floating type of rtol * other, the error as is
    local allowed = b:mul(rtol):abs():add(atol)
    local actual = a:sub(b):abs()
    return close:logical_or(actual:isfinite():logical_and(actual:le(allowed)))
  end
  M.isclose, graft.isclose = isclose, isclose

  -- t:allclose(other, ...): isclose(...) everywhere, as a Lua boolean.
  local function allclose(self, other, rtol, atol, equal_nan)
    local ok, r = pcall(isclose, self, other, rtol, atol, equal_nan)
    if not ok then error((tostring(r):gsub("^isclose:", "allclose:")), 2) end
    return r:all():item()
  end
  M.allclose, graft.allclose = allclose, allclose

  -- t:equal(other): true when both have the same shape and equal values (NaN is never
  -- equal), as torch.equal.
  local function equal(self, other)
    if not graft.is_tensor(other) then error("equal: other must be a tensor, got a " .. type(other), 2) end
    local a, b = self:shape(), other:shape()
    if #a ~= #b then return false end
    for i = 1, #a do if a[i] ~= b[i] then return false end end
    return graft.no_grad(function() return self:eq(other):all():item() end)
  end
  M.equal, graft.equal = equal, equal

  -- The new_* constructors: self's dtype and device unless the options say otherwise.
  -- The size is a table ({2, 3}) or integers (2, 3), then an optional options table.
  local function size_and_opts(op, ...)
    local n = select("#", ...)
    local first = ...
    if type(first) == "table" and not graft.is_tensor(first) then
      local opts = select(2, ...)
      return first, opts
    end
    local size = {}
    for i = 1, n do
      local v = select(i, ...)
      if type(v) == "number" then
        size[#size + 1] = v
      elseif is_opts(v) and i == n then
        return size, v
      else
        error(("%s: size must be a table or integers, got a %s"):format(op, graft.is_tensor(v) and "tensor" or type(v)), 3)
      end
    end
    return size, nil
  end

  local function like_opts(self, opts)
    opts = opts or {}
    return { dtype = opts.dtype or self:dtype(), device = opts.device or self:device(),
      requires_grad = opts.requires_grad }
  end

  function M.new_zeros(self, ...)
    local size, opts = size_and_opts("new_zeros", ...)
    return graft.zeros(size, like_opts(self, opts))
  end
  function M.new_ones(self, ...)
    local size, opts = size_and_opts("new_ones", ...)
    return graft.ones(size, like_opts(self, opts))
  end
  function M.new_empty(self, ...)
    local size, opts = size_and_opts("new_empty", ...)
    return graft.empty(size, like_opts(self, opts))
  end
  -- t:new_full(size, fill_value [, opts]) (size a table or one integer)
  function M.new_full(self, size, value, opts)
    if type(size) == "number" then size = { size } end
    if type(size) ~= "table" or graft.is_tensor(size) then error("new_full: size must be a table of integers", 2) end
    if type(value) ~= "number" and type(value) ~= "boolean" then
      error("new_full: fill_value must be a number or boolean, got a " .. type(value), 2)
    end
    local o = like_opts(self, opts)
    local t = graft.full(size, value, { dtype = o.dtype, device = o.device })
    if o.requires_grad then t.requires_grad = true end
    return t
  end
  -- t:new_tensor(data [, opts]): a copy of data (nested tables, a number or a tensor,
  -- without history) in self's dtype and on self's device.
  function M.new_tensor(self, data, opts)
    local o = like_opts(self, opts)
    local t = graft.no_grad(function()
      local src = graft.is_tensor(data) and data:detach() or data
      local c = graft.tensor(src, { dtype = o.dtype })
      if c:device() ~= o.device then c = c:to(o.device) end
      return c
    end)
    if o.requires_grad then t.requires_grad = true end
    return t
  end
  -- t:type_as(other): t in other's dtype (and on its device), as PyTorch.
  function M.type_as(self, other)
    if not graft.is_tensor(other) then error("type_as: other must be a tensor, got a " .. type(other), 2) end
    return self:to(other)
  end

  -- softmax and log_softmax as methods and graft.<name>: graft.F's.
  local F = graft.F
  local function softmax(self, dim, opts) return F.softmax(self, dim, opts) end
  local function log_softmax(self, dim, opts) return F.log_softmax(self, dim, opts) end
  M.softmax, graft.softmax = softmax, softmax
  M.log_softmax, graft.log_softmax = log_softmax, log_softmax

  -- t:lerp(end, weight): t + weight * (end - t) with PyTorch's two-sided formula
  -- (end - (end - t) * (1 - weight) for |weight| >= 0.5), a number or a tensor weight.
  local function lerp(self, end_, weight)
    if not graft.is_tensor(end_) then error("lerp: end must be a tensor, got a " .. type(end_), 2) end
    local diff = end_ - self
    if type(weight) == "number" then
      if math.abs(weight) < 0.5 then return self + diff * weight end
      return end_ - diff * (1 - weight)
    end
    if not graft.is_tensor(weight) then error("lerp: weight must be a number or a tensor, got a " .. type(weight), 2) end
    return graft.where(weight:abs():lt(0.5), self + diff * weight, end_ - diff * (1 - weight))
  end
  M.lerp, graft.lerp = lerp, lerp
  function M.lerp_(self, end_, weight) return self:copy_(lerp(self, end_, weight)) end

  -- t:addcmul(t1, t2 [, value=1 | {value =}]): t + value * t1 * t2; addcdiv: t + value * t1 / t2.
  local function value_of(op, v)
    if is_opts(v) then v = v.value end
    if v == nil then return 1 end
    if type(v) ~= "number" then error(op .. ": value must be a number, got a " .. type(v), 3) end
    return v
  end
  local function addcmul(self, t1, t2, value)
    value = value_of("addcmul", value)
    local p = value == 1 and t1 or t1 * value
    return self + p * t2
  end
  local function addcdiv(self, t1, t2, value)
    value = value_of("addcdiv", value)
    if graft.is_tensor(t1) and graft.is_tensor(t2) and not t1:is_floating_point() and not t2:is_floating_point() then
      error("addcdiv: integer division with addcdiv is no longer supported; use (input + value * tensor1 / tensor2)",
        2)
    end
    local p = value == 1 and t1 or t1 * value
    return self + p / t2
  end
  M.addcmul, graft.addcmul = addcmul, addcmul
  M.addcdiv, graft.addcdiv = addcdiv, addcdiv
  function M.addcmul_(self, t1, t2, value) return self:copy_(addcmul(self, t1, t2, value)) end
  function M.addcdiv_(self, t1, t2, value) return self:copy_(addcdiv(self, t1, t2, value)) end
end

return graft
