-- CUDA spec helpers: every op runs on the CPU and on "cuda" and the results must agree
-- (the CPU is the reference, as ggml's backend tests do). Without a device the specs
-- are skipped with the reason printed; `make test` also runs spec/cuda over the CUDA
-- emulator (build/emu/graft.so), where the same kernels run on the host.
--   local C = require("spec.helpers.cuda")
--   C.describe("graft.add on cuda", function()
--     it("matches the CPU", function() C.check(graft.add, {a, b}) end)
--   end)
local graft = require("graft")
local H = require("spec.helpers")
local assert = require("luassert")
local busted = require("busted")

local C = {}
C.available = graft.cuda.is_available()
C.backend = graft.cuda.backend()
if C.backend == "none" then
  C.reason = "graft was built without CUDA"
elseif not C.available then
  C.reason = "no CUDA device (no NVIDIA driver or GPU); `make test` runs spec/cuda over the emulator"
end

-- describe(name, fn) when a device is there; else one pending test saying why (and the
-- reason printed once per run: the registry outlives busted's per-file insulation).
function C.describe(name, fn)
  if C.available then return busted.describe(name, fn) end
  local reg = debug.getregistry()
  if not reg.graft_cuda_skip_announced then
    io.stderr:write(("spec/cuda skipped: %s\n"):format(C.reason))
    reg.graft_cuda_skip_announced = true
  end
  busted.describe(name, function() busted.pending("skipped: " .. C.reason) end)
end

-- describe(name, fn) for the behaviour without a device (graft built without CUDA, or no
-- GPU): fn runs only then; with a device one passing test says the device specs cover it.
function C.describe_no_device(name, fn)
  busted.describe(name, function()
    if C.available then
      busted.it("is covered by the device specs", function() end)
    else
      fn()
    end
  end)
end

-- Dtype lists, in one order: the floating dtypes, the integer ones, then bool.
C.FLOATS = { "float32", "float64", "float16", "bfloat16" }
C.INTS = { "int64", "int32", "int16", "int8", "uint8" }
C.DTYPES = { "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool" }

-- Tolerances that ask for the same bits.
C.EXACT = { rtol = 0, atol = 0 }

-- Default tolerances per dtype: the device sums in other orders than the CPU.
C.TOL = {
  float64 = { rtol = 1e-10, atol = 1e-12 },
  float32 = { rtol = 1e-4, atol = 1e-5 },
  float16 = { rtol = 1e-2, atol = 1e-3 },
  bfloat16 = { rtol = 2e-2, atol = 1e-2 },
}

-- x on the device (device: "cuda" unless given): tensors are copied (leaves keep
-- requires_grad, as new leaves), tables are mapped, other values pass through.
function C.dev(x, device)
  if graft.is_tensor(x) then
    local y = graft.no_grad(function() return x:to(device or "cuda") end)
    if x.requires_grad then y.requires_grad = true end
    return y
  elseif type(x) == "table" and getmetatable(x) == nil then
    local out = {}
    for k, v in pairs(x) do out[k] = C.dev(v, device) end
    return out
  end
  return x
end

-- The tensors of v (a tensor or a nested list), in order.
local function tensors_of(v, out)
  out = out or {}
  if graft.is_tensor(v) then
    out[#out + 1] = v
  elseif type(v) == "table" then
    for _, x in ipairs(v) do tensors_of(x, out) end
  end
  return out
end

local function tol_for(t, opts)
  local base = C.TOL[t:dtype()] or C.EXACT
  return { rtol = opts.rtol or base.rtol, atol = opts.atol or base.atol }
end

-- A leaf that requires grad: x itself when it is a tensor, else graft.randn(...).
function C.leaf(x, ...)
  local t = graft.is_tensor(x) and x or graft.randn(x, ...)
  t.requires_grad = true
  return t
end

-- An int64 tensor of indices or classes (0-based values, as PyTorch), or of dtype.
function C.I(values, dtype) return graft.tensor(values, { dtype = dtype or "int64" }) end

-- x converted to dtype dt with distinct small values: integers scaled by 10 (uint8 from
-- |x|), bool from the sign.
function C.as(x, dt)
  if dt == "bool" then return x:gt(0) end
  if dt == "uint8" then return x:abs():mul(10):to(dt) end
  if dt:find("int") then return x:mul(10):to(dt) end
  return x:to(dt)
end

-- A fresh empty directory (for files written by a spec).
function C.tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. d))
  return d
end

-- Inside a describe: TF32 off (graft.backends.cudnn.allow_tf32) around each test, so
-- float32 convolutions match the CPU to float32 precision; the setting is restored after.
function C.without_tf32()
  local saved
  busted.before_each(function()
    saved = graft.backends.cudnn.allow_tf32
    graft.backends.cudnn.allow_tf32 = false
  end)
  busted.after_each(function() graft.backends.cudnn.allow_tf32 = saved end)
end

-- Asserts that t (on either device) holds exactly expected's values, shape and dtype.
function C.assert_exact(t, expected, what)
  local ok, why = H.compare(t:cpu(), expected, C.EXACT)
  assert(ok, (what and (what .. ": ") or "") .. tostring(why))
end

-- Asserts that the device tensor d matches the CPU tensor c: device, shape, dtype, values.
function C.assert_match(d, c, opts, what)
  opts = opts or {}
  assert.is_true(graft.is_tensor(d), (what or "result") .. " is not a tensor")
  assert.are.equal("cuda:0", d:device(), (what or "result") .. " is not on cuda:0")
  local ok, why = H.compare(d, c, tol_for(c, opts))
  assert(ok, (what or "result") .. ": " .. tostring(why))
end

-- C.check(fn, inputs [, opts]): fn(table.unpack(inputs)) on the CPU and on copies of the
-- inputs on the device; every tensor result must match. opts.grad: inputs with
-- requires_grad get gradients from backward of sum(result_k * weight_k) (fixed weights)
-- and these must match too (the CPU leaves' old gradients are cleared first, so inputs
-- can be reused across checks). opts.rtol/atol override the per-dtype tolerances.
function C.check(fn, inputs, opts)
  opts = opts or {}
  local n = inputs.n or #inputs
  if opts.grad then
    for _, t in ipairs(tensors_of(inputs)) do
      if t.requires_grad and t.is_leaf then t.grad = nil end
    end
  end
  local dinputs = C.dev(inputs)
  local cout = table.pack(fn(table.unpack(inputs, 1, n)))
  local dout = table.pack(fn(table.unpack(dinputs, 1, n)))
  local cts, dts = tensors_of({ table.unpack(cout, 1, cout.n) }), tensors_of({ table.unpack(dout, 1, dout.n) })
  assert.are.equal(#cts, #dts, "different numbers of tensor results")
  for k = 1, #cts do C.assert_match(dts[k], cts[k], opts, "result " .. k) end
  if opts.grad then
    local closs, dloss
    for k = 1, #cts do
      if cts[k].requires_grad then
        local w = graft.rand(cts[k]:shape(), { dtype = cts[k]:dtype() }):add(0.5)
        local cl, dl = (cts[k] * w):sum(), (dts[k] * C.dev(w)):sum()
        closs = closs and closs + cl or cl
        dloss = dloss and dloss + dl or dl
      end
    end
    assert(closs, "check: no result requires grad")
    closs:backward()
    dloss:backward()
    local ci, di = tensors_of(inputs), tensors_of(dinputs)
    for k = 1, #ci do
      if ci[k].requires_grad then
        assert(di[k].grad, ("input %d: no gradient on the device"):format(k))
        C.assert_match(di[k].grad, ci[k].grad, opts, ("gradient of input %d"):format(k))
      end
    end
  end
  return dout
end

-- C.check with the exact tolerances: the device must give the CPU's bits.
function C.check_exact(fn, inputs) return C.check(fn, inputs, C.EXACT) end

-- The cases of a functional fixture (spec/nn/fixture_cases.lua's format) for the
-- functions named in fns (all when nil), each in float64 and float32 with its inputs on
-- the device: output and input gradients on the device, against PyTorch's values.
local FIXTURE_TOL = {
  float64 = { rtol = 2e-6, atol = 1e-7, dtype = false },
  float32 = { rtol = 1e-4, atol = 2e-5, dtype = false },
}
function C.fixture_cases(fx, fns)
  local FX = require("spec.nn.fixture_cases")
  local names = {}
  for name, c in pairs(fx.cases) do
    if fns == nil or fns[c.fn] then names[#names + 1] = name end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local c = fx.cases[name]
    for _, dtype in ipairs({ "float64", "float32" }) do
      local tol = FIXTURE_TOL[dtype]
      busted.it(("%s (%s): %s"):format(c.fn, name, dtype), function()
        local args, opts = FX.build(fx, c, dtype)
        local dargs, dopts = C.dev(args), C.dev(opts)
        local keep, topts = {}, {}
        for i, a in ipairs(dargs) do keep[i] = a end
        for k, v in pairs(dopts) do topts[k] = v end
        local out = FX.call(c, dargs, dopts)
        assert.are.equal("cuda:0", out:device())
        assert.tensor_near(out:cpu(), c.out, tol)
        if c.grads then
          out:backward(H.T(c.gy):to(dtype):cuda())
          for key, want in pairs(c.grads) do
            local x = type(key) == "number" and keep[key] or topts[key]
            assert.is_not_nil(x.grad, "no gradient for " .. tostring(key))
            assert.are.equal("cuda:0", x.grad:device())
            local ok, why = H.compare(x.grad:cpu(), want, tol)
            assert(ok, ("gradient of %s: %s"):format(tostring(key), tostring(why)))
          end
        end
      end)
    end
  end
end

C.tensors_of = tensors_of

return C
