-- softmax, log_softmax and the fused activations (relu, leaky_relu, elu, gelu exact and
-- tanh, silu) on CUDA: the PyTorch fixture cases run on the device, then each kernel
-- path against the CPU (a warp per row, a block per long row, a thread per column when
-- the dim is not the innermost), non-contiguous and expanded inputs, both dtypes,
-- gradients, and errors.
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")
local F = graft.F

C.describe("softmax and activations on cuda match PyTorch (fixture cases)", function()
  C.fixture_cases(H.fixture("functional"),
    { softmax = true, log_softmax = true, relu = true, leaky_relu = true, elu = true, gelu = true, silu = true })
end)

C.describe("F.softmax / F.log_softmax on cuda", function()
  for _, name in ipairs({ "softmax", "log_softmax" }) do
    local f = F[name]
    for _, dtype in ipairs({ "float32", "float64" }) do
      it(name .. " runs a warp per short row, forward and backward (" .. dtype .. ")", function()
        local x = C.leaf(37, 19, { dtype = dtype })
        C.check(function(a) return f(a, 2) end, { x }, { grad = true })
        C.check(function(a) return f(a, -1) end, { C.leaf(3, 4, 1000, { dtype = dtype }) }, { grad = true })
      end)

      it(name .. " runs a block per row beyond 1024 elements (" .. dtype .. ")", function()
        C.check(function(a) return f(a, 2) end, { C.leaf(3, 2500, { dtype = dtype }) }, { grad = true })
      end)

      it(name .. " runs a thread per column along an outer dim (" .. dtype .. ")", function()
        C.check(function(a) return f(a, 1) end, { C.leaf(4, 6, 5, { dtype = dtype }) }, { grad = true })
        C.check(function(a) return f(a, 2) end, { C.leaf(4, 6, 5, { dtype = dtype }) }, { grad = true })
      end)
    end

    it(name .. " takes transposed, narrowed and expanded inputs", function()
      C.check(function(a) return f(a:t(), 2) end, { C.leaf(6, 8) }, { grad = true })
      C.check(function(a) return f(a:narrow(2, 2, 5), 1) end, { C.leaf(6, 8) }, { grad = true })
      C.check(function(a) return f(a:expand(3, 6, 8), 3) end, { C.leaf(6, 8) }, { grad = true })
    end)

    it(name .. " handles a 0-dim input, an empty one and the dtype option", function()
      C.check(function(a) return f(a, 1) end, { graft.tensor(1.5) })
      C.check(function(a) return f(a, 2) end, { graft.randn(0, 4) })
      C.check(function(a) return f(a, 2, { dtype = "float64" }) end, { C.leaf(3, 4) }, { grad = true })
    end)

    it(name .. " keeps -inf entries and matches the CPU on large logits", function()
      local x = graft.tensor({ { -math.huge, 0, 1 }, { 1000, 1001, 999 }, { -50, -51, -math.huge } })
      C.check(function(a) return f(a, 2) end, { x })
    end)
  end

  it("names the op when the input is not floating point", function()
    local i = graft.tensor({ 1, 2 }, { dtype = "int64" }):cuda()
    H.raises("softmax: expected a float32 or float64 input, got int64", F.softmax, i, 1)
    H.raises("log_softmax: expected a float32 or float64 input, got int64", F.log_softmax, i, 1)
  end)
end)

C.describe("fused activations on cuda", function()
  local acts = {
    relu = function(a) return F.relu(a) end,
    leaky_relu = function(a) return F.leaky_relu(a, 0.2) end,
    elu = function(a) return F.elu(a, { alpha = 1.5 }) end,
    gelu = function(a) return F.gelu(a) end,
    gelu_tanh = function(a) return F.gelu(a, { approximate = "tanh" }) end,
    silu = function(a) return F.silu(a) end,
  }
  local names = {}
  for k in pairs(acts) do names[#names + 1] = k end
  table.sort(names)
  for _, name in ipairs(names) do
    local f = acts[name]
    for _, dtype in ipairs({ "float32", "float64" }) do
      it(name .. " matches the CPU forward and backward (" .. dtype .. ")", function()
        C.check(f, { C.leaf(7, 33, { dtype = dtype }) }, { grad = true })
      end)
    end
    it(name .. " takes transposed, narrowed and expanded inputs", function()
      C.check(function(a) return f(a:t()) end, { C.leaf(5, 6) }, { grad = true })
      C.check(function(a) return f(a:narrow(2, 2, 3)) end, { C.leaf(5, 6) }, { grad = true })
      C.check(function(a) return f(a[2]:expand(4, 6)) end, { C.leaf(5, 6) }, { grad = true })
      C.check(f, { graft.tensor(-0.5) })
      C.check(f, { graft.empty(0, 3) })
    end)
  end

  it("take float16 and bfloat16 (computed in float32, rounded once), forward and backward", function()
    for _, dt in ipairs({ "float16", "bfloat16" }) do
      for _, name in ipairs(names) do
        if name ~= "relu" then -- F.relu of a 16-bit tensor is the core relu
          C.check(acts[name], { C.leaf(6, 9):to(dt):detach() }, {})
          local x = C.leaf(6, 9):to(dt):detach()
          x.requires_grad = true
          C.check(acts[name], { x }, { grad = true })
        end
      end
    end
  end)

  it("relu keeps NaN and zeroes negatives exactly", function()
    local x = graft.tensor({ -1, 0, 2, 0 / 0, -math.huge, math.huge })
    local y = F.relu(x:cuda()):cpu()
    local v = y:tolist()
    assert.are.same({ 0, 0, 2 }, { v[1], v[2], v[3] })
    assert.is_true(v[4] ~= v[4])
    assert.are.same({ 0, math.huge }, { v[5], v[6] })
  end)

  it("names the op for an integer input and for a gradient on another device", function()
    H.raises("gelu: expected a floating point input, got int32", F.gelu, graft.tensor({ 1 }, { dtype = "int32" }):cuda())
    local x = C.leaf(3)
    local y = F.silu(C.dev(x))
    H.raises("silu backward: expected all tensors to be on the same device", function() y:backward(graft.ones(3)) end)
  end)
end)

C.describe("softmax and the losses under autocast on cuda", function()
  it("compute float16 inputs in float32, as PyTorch's float32 list, with float32 gradients", function()
    local x = graft.randn(4, 6)
    x.requires_grad = true
    local dx = C.dev(x)
    local y = graft.autocast(function() return F.softmax(dx:half(), 2) end, { dtype = "float16" })
    assert.are.equal("float32", y:dtype())
    C.assert_match(y, F.softmax(x:half():float(), 2), { rtol = 1e-3, atol = 1e-3 })
    local t = graft.tensor({ 0, 5, 2, 1 }, { dtype = "int64" }):cuda()
    local l = graft.autocast(function() return F.cross_entropy(dx:half(), t) end, { dtype = "float16" })
    assert.are.equal("float32", l:dtype())
    l:backward()
    assert.are.equal("float32", dx.grad:dtype())
    local m = graft.autocast(function() return F.mse_loss(dx:half(), dx:half() * 0.5) end, { dtype = "float16" })
    assert.are.equal("float32", m:dtype())
    local g = graft.autocast(function() return F.gelu(dx:half()) end, { dtype = "float16" })
    assert.are.equal("float16", g:dtype())
  end)
end)
