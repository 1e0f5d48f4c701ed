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

-- Default tolerances per dtype: the device sums in other orders than the CPU.
C.TOL = {
  float64 = { rtol = 1e-10, atol = 1e-12 },
  float32 = { rtol = 1e-4, atol = 1e-5 },
  float16 = { rtol = 1e-2, atol = 1e-3 },
  bfloat16 = { rtol = 2e-2, atol = 1e-2 },
}

-- x on the device: tensors are copied (leaves keep requires_grad, as new leaves), tables
-- are mapped, other values pass through.
function C.dev(x)
  if graft.is_tensor(x) then
    local y = graft.no_grad(function() return x:to("cuda") end)
    if x.requires_grad then y.requires_grad = true end
    return y
  elseif type(x) == "table" and getmetatable(x) == nil then
    local out = {}
    for k, v in pairs(x) do out[k] = C.dev(v) end
    return out
  end
  return x
end

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
  local base = C.TOL[t:dtype()] or { rtol = 0, atol = 0 }
  return { rtol = opts.rtol or base.rtol, atol = opts.atol or base.atol }
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
-- and these must match too. opts.rtol/atol override the per-dtype tolerances.
function C.check(fn, inputs, opts)
  opts = opts or {}
  local n = inputs.n or #inputs
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

return C
