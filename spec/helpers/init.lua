-- Shared spec helpers: fixtures made by PyTorch, tensor comparison, leak checks.
--   local H = require("spec.helpers")
--   local case = H.fixture("elementwise")        -- spec/fixtures/elementwise.lua
--   local x = H.T(case.add.a)                     -- a fixture tensor as a graft tensor
--   assert.tensor_near(graft.add(x, y), case.add.out, {rtol = 1e-6})
--   H.no_leak(function() pcall(graft.add, a, b) end)
local graft = require("graft")
local assert = require("luassert")
local say = require("say")

local H = {}

local cache = {}
function H.fixture(name)
  if not cache[name] then cache[name] = dofile("spec/fixtures/" .. name .. ".lua") end
  return cache[name]
end

-- A fixture tensor {shape, dtype, data} (or a graft tensor, or nested tables) as a tensor.
function H.T(x, dtype)
  if graft.is_tensor(x) then return x end
  if type(x) == "table" and x.shape and x.data then
    local t = graft.tensor(#x.data > 0 and x.data or {}, { dtype = x.dtype })
    if #x.shape == 0 then return t:reshape({}) end
    return t:reshape(x.shape)
  end
  return graft.tensor(x, dtype and { dtype = dtype } or nil)
end

local function flat(t)
  local out = {}
  local function walk(v)
    if type(v) == "table" then for _, x in ipairs(v) do walk(x) end else out[#out + 1] = v end
  end
  walk(t:tolist())
  return out
end

-- Compares shape, dtype (when opts.dtype ~= false) and values elementwise:
-- |a - e| <= atol + rtol * |e|, NaN equal to NaN, infinities equal by sign.
function H.compare(actual, expected, opts)
  opts = opts or {}
  local rtol, atol = opts.rtol or 1e-5, opts.atol or 1e-8
  if not graft.is_tensor(actual) then return false, "actual value is a " .. type(actual) .. ", not a tensor" end
  local e = H.T(expected)
  local as, es = table.concat(actual:shape(), ", "), table.concat(e:shape(), ", ")
  if as ~= es then return false, ("shape [%s] ~= expected [%s]"):format(as, es) end
  if opts.dtype ~= false then
    local want = type(opts.dtype) == "string" and opts.dtype or e:dtype()
    if actual:dtype() ~= want then
      return false, ("dtype %s ~= expected %s"):format(actual:dtype(), want)
    end
  end
  local a, x = flat(actual), flat(e)
  for i = 1, #x do
    local u, v = a[i], x[i]
    if type(u) == "boolean" or type(v) == "boolean" then
      if u ~= v then return false, ("element %d: %s ~= expected %s"):format(i, tostring(u), tostring(v)) end
    elseif v ~= v then
      if u == u then return false, ("element %d: %s ~= expected nan"):format(i, tostring(u)) end
    elseif v == math.huge or v == -math.huge then
      if u ~= v then return false, ("element %d: %s ~= expected %s"):format(i, tostring(u), tostring(v)) end
    elseif not (math.abs(u - v) <= atol + rtol * math.abs(v)) then
      return false, ("element %d: %.10g ~= expected %.10g (rtol %g, atol %g)"):format(i, u, v, rtol, atol)
    end
  end
  return true
end

local function tensor_near(state, args)
  local ok, why = H.compare(args[1], args[2], args[3])
  state.failure_message = why
  return ok
end
say:set("assertion.tensor_near.positive", "Expected tensors to match")
say:set("assertion.tensor_near.negative", "Expected tensors to differ")
assert:register("assertion", "tensor_near", tensor_near, "assertion.tensor_near.positive",
  "assertion.tensor_near.negative")

-- Runs fn (which may raise) and asserts that the live tensor count is unchanged after
-- garbage collection: an error raised from C leaked nothing.
function H.no_leak(fn)
  collectgarbage(); collectgarbage()
  local before = graft._live_tensors()
  fn()
  collectgarbage(); collectgarbage()
  local after = graft._live_tensors()
  assert.are.equal(before, after, ("live tensors: %d before, %d after"):format(before, after))
end

-- Asserts that fn raises an error whose message contains `fragment` (plain text),
-- and that nothing leaked.
function H.raises(fragment, fn, ...)
  local args = table.pack(...)
  H.no_leak(function()
    local ok, err = pcall(fn, table.unpack(args, 1, args.n))
    assert.is_false(ok, "expected an error containing: " .. fragment)
    assert.is_truthy(tostring(err):find(fragment, 1, true),
      ("error %q does not contain %q"):format(tostring(err), fragment))
  end)
end

-- assert.gradcheck(fn, inputs [, opts]): analytic gradients match finite differences
-- (spec/helpers/gradcheck.lua).
-- Writes s to path (binary) and returns path.
function H.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  return path
end

-- A case's arguments as a short, stable string for test titles: {1, dim=2, {3, 4}}.
function H.show(v)
  if type(v) ~= "table" then return tostring(v) end
  local parts = {}
  for k, x in pairs(v) do
    parts[#parts + 1] = (type(k) == "number" and "" or (k .. "=")) .. H.show(x)
  end
  table.sort(parts)
  return "{" .. table.concat(parts, ", ") .. "}"
end

H.gradcheck = require("spec.helpers.gradcheck")
local function gradcheck_assertion(state, args)
  local ok, why = H.gradcheck(args[1], args[2], args[3])
  state.failure_message = why
  return ok
end
say:set("assertion.gradcheck.positive", "Expected gradients to match finite differences")
say:set("assertion.gradcheck.negative", "Expected gradients to differ from finite differences")
assert:register("assertion", "gradcheck", gradcheck_assertion, "assertion.gradcheck.positive",
  "assertion.gradcheck.negative")

H.flat = flat
return H
