-- Gradient checks: analytic gradients (backward of sum(fn(...) * w) for fixed random
-- weights w) against central finite differences, for every input that requires grad.
--   local gradcheck = require("spec.helpers.gradcheck")
--   local x = graft.randn(3, 4, {dtype = "float64", requires_grad = true})
--   assert(gradcheck(function(a) return a:exp():sum(2) end, {x}))
--   assert.gradcheck(function(a) return a:exp() end, {x})   -- the same, as an assertion
-- Inputs should be float64 (any layout: transposed and narrowed leaves are fine; an
-- expanded leaf is not, its elements share memory); non-tensor inputs pass through.
-- fn returns a tensor or a list of tensors (each weighted). Returns true, or false and
-- a message naming the input, the element and both values.
local graft = require("graft")

local function shape_str(t) return "[" .. table.concat(t:shape(), ", ") .. "]" end

-- The multi-index (a 1-based Lua table) of flat position k (0-based) in shape.
local function unflatten(k, shape)
  local idx = {}
  for d = #shape, 1, -1 do
    idx[d] = k % shape[d] + 1
    k = k // shape[d]
  end
  return idx
end

local function outputs_of(r)
  if graft.is_tensor(r) then return { r } end
  assert(type(r) == "table", "gradcheck: fn must return a tensor or a list of tensors")
  return r
end

-- sum over outputs of sum(out * w) as a Lua number (no_grad) or a 0-dim tensor.
local function weighted(outs, ws)
  local total
  for i, o in ipairs(outs) do
    if o:is_floating_point() then
      local s = (o:double() * ws[i]):sum()
      total = total and total + s or s
    end
  end
  return total
end

local function get(x, idx)
  if #idx == 0 then return x:item() end
  return x[idx]:item()
end

local function set(x, idx, v)
  if #idx == 0 then x:fill_(v) else x[idx] = v end
end

local function gradcheck(fn, inputs, opts)
  opts = opts or {}
  local eps, atol, rtol = opts.eps or 1e-6, opts.atol or 1e-5, opts.rtol or 1e-3
  local n = inputs.n or #inputs
  local function run() return outputs_of(fn(table.unpack(inputs, 1, n))) end

  -- analytic
  for i = 1, n do
    local x = inputs[i]
    if graft.is_tensor(x) and x.requires_grad then x.grad = nil end
  end
  local outs = run()
  local ws = {}
  for i, o in ipairs(outs) do ws[i] = graft.randn(o:shape(), { dtype = "float64" }) end
  local loss = weighted(outs, ws)
  if not loss or not loss.requires_grad then return false, "gradcheck: no output requires grad" end
  loss:backward()
  local analytic = {}
  for i = 1, n do
    local x = inputs[i]
    if graft.is_tensor(x) and x.requires_grad then
      local g = x.grad
      if g then
        if shape_str(g) ~= shape_str(x) or g:dtype() ~= x:dtype() then
          return false, ("input %d: grad is %s %s, the input %s %s"):format(i, g:dtype(), shape_str(g), x:dtype(),
            shape_str(x))
        end
      end
      analytic[i] = g and g:clone() or graft.zeros(x:shape(), { dtype = x:dtype() })
    end
  end

  -- numeric, central differences
  return graft.no_grad(function()
    for i = 1, n do
      local x = inputs[i]
      if analytic[i] then
        local shape, a = x:shape(), analytic[i]
        for k = 0, x:numel() - 1 do
          local idx = unflatten(k, shape)
          local orig = get(x, idx)
          set(x, idx, orig + eps)
          local fp = weighted(run(), ws):item()
          set(x, idx, orig - eps)
          local fm = weighted(run(), ws):item()
          set(x, idx, orig)
          local num, ana = (fp - fm) / (2 * eps), get(a, idx)
          if not (math.abs(ana - num) <= atol + rtol * math.abs(num)) then
            return false, ("input %d, element {%s}: analytic %.10g, numeric %.10g"):format(i,
              table.concat(idx, ", "), ana, num)
          end
        end
      end
    end
    return true
  end)
end

return gradcheck
