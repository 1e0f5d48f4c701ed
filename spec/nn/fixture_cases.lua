-- Runs the cases of a functional fixture (spec/fixtures/gen_functional.py): builds each
-- graft.F call from its named inputs and options, compares the output with PyTorch's,
-- backpropagates the fixture's upstream gradient and compares every input gradient;
-- once in float64 (tight) and once in float32.
--   local FX = require("spec.nn.fixture_cases")
--   describe("...", function() FX.run_cases(H.fixture("functional"), it) end)
local graft = require("graft")
local H = require("spec.helpers")
local F = graft.F
local assert = require("luassert")

local FX = {}

local TOL = {
  float64 = { rtol = 2e-6, atol = 1e-7, dtype = false },
  float32 = { rtol = 1e-4, atol = 2e-5, dtype = false },
}

local function input(fx, name, dtype, grad)
  local t = H.T(fx.inputs[name])
  if t:is_floating_point() then t = t:to(dtype) end
  if grad then t.requires_grad = true end
  return t
end

-- The args and the options table of case c in dtype (gradients requested as the fixture has them).
function FX.build(fx, c, dtype)
  local grads = c.grads or {}
  local args = {}
  for i, name in ipairs(c.args) do args[i] = input(fx, name, dtype, grads[i] ~= nil) end
  local opts = {}
  for k, v in pairs(c.opts) do opts[k] = v end
  for k, name in pairs(c.topts) do opts[k] = input(fx, name, dtype, grads[k] ~= nil) end
  return args, opts
end

-- Calls graft.F for case c; the positional conventions of softmax (dim), layer_norm
-- (normalized_shape), group_norm (num_groups) and batch_norm (running stats) apply.
function FX.call(c, args, opts)
  local fn = F[c.fn]
  if c.fn == "softmax" or c.fn == "log_softmax" then
    local dim = opts.dim
    opts.dim = nil
    return fn(args[1], dim, opts)
  elseif c.fn == "layer_norm" then
    local shape = opts.normalized_shape
    opts.normalized_shape = nil
    return fn(args[1], shape, opts)
  elseif c.fn == "group_norm" then
    local g = opts.num_groups
    opts.num_groups = nil
    return fn(args[1], g, opts)
  elseif c.fn == "batch_norm" then
    return fn(args[1], args[2], args[3], opts)
  end
  local n = #args
  args[n + 1] = opts
  return fn(table.unpack(args, 1, n + 1))
end

function FX.run_cases(fx, it)
  local names = {}
  for name in pairs(fx.cases) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local c = fx.cases[name]
    for _, dtype in ipairs({ "float64", "float32" }) do
      it(("%s (%s): %s"):format(c.fn, name, dtype), function()
        local tol = TOL[dtype]
        local args, opts = FX.build(fx, c, dtype)
        local keep = {}
        for i, a in ipairs(args) do keep[i] = a end
        local topts = {}
        for k, v in pairs(opts) do topts[k] = v end
        local out = FX.call(c, args, opts)
        assert.tensor_near(out, c.out, tol)
        if c.grads then
          out:backward(H.T(c.gy):to(dtype))
          for key, want in pairs(c.grads) do
            local x = type(key) == "number" and keep[key] or topts[key]
            assert.is_not_nil(x.grad, "no gradient for " .. tostring(key))
            local ok, why = H.compare(x.grad, want, tol)
            assert(ok, ("gradient of %s: %s"):format(tostring(key), tostring(why)))
          end
        end
      end)
    end
  end
end

return FX
