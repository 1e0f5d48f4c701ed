-- graft.autocast on CUDA tensors (float16, PyTorch's CUDA default, and bfloat16): the
-- lower-precision ops give the same results and float32 gradients as the same region
-- run on the CPU; device_type scoping; a training step of a small model.
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")

local F = graft.F

-- fn run inside an autocast region of dtype dt (a function of the inputs, for C.check).
local function under(dt, fn)
  return function(...)
    local args = table.pack(...)
    return graft.autocast(function() return fn(table.unpack(args, 1, args.n)) end, { dtype = dt })
  end
end

C.describe("graft.autocast on cuda", function()
  C.without_tf32()

  it("runs the products in float16 and bfloat16 like the CPU", function()
    for _, dt in ipairs({ "float16", "bfloat16" }) do
      local out = C.check(under(dt, graft.matmul), { graft.randn(2, 3, 8), graft.randn(8, 5) })
      assert.are.equal(dt, out[1]:dtype())
      C.check(under(dt, graft.bmm), { graft.randn(2, 3, 8), graft.randn(2, 8, 5) })
      C.check(under(dt, function(i, a, b) return graft.addmm(i, a, b, { beta = 0.5 }) end),
        { graft.randn(5), graft.randn(3, 8), graft.randn(8, 5) })
      C.check(under(dt, graft.mv), { graft.randn(3, 8), graft.randn(8) })
    end
  end)

  it("casts linear, conv2d and attention, with float32 gradients for float32 leaves", function()
    for _, dt in ipairs({ "float16", "bfloat16" }) do
      local tol = { grad = true, rtol = 3e-2, atol = 3e-2 }
      local out = C.check(under(dt, F.linear), { C.leaf(4, 6), C.leaf(3, 6), C.leaf(3) }, tol)
      assert.are.equal(dt, out[1]:dtype())
      C.check(under(dt, function(x, w, b) return F.conv2d(x, w, b, { padding = 1 }) end),
        { C.leaf(2, 3, 5, 5), C.leaf(4, 3, 3, 3), C.leaf(4) }, tol)
      C.check(under(dt, function(q, k, v) return F.scaled_dot_product_attention(q, k, v, { is_causal = true }) end),
        { C.leaf(2, 4, 8), C.leaf(2, 4, 8), C.leaf(2, 4, 6) }, tol)
    end
  end)

  it("computes the float32-list ops (softmax, losses, norms) in float32", function()
    local x = graft.randn(4, 6):half()
    local y = graft.tensor({ 0, 1, 2, 3 }, { dtype = "int64" })
    for _, dt in ipairs({ "float16", "bfloat16" }) do
      local out = C.check(under(dt, function(a, t)
        return F.softmax(a, -1), F.log_softmax(a, 1), F.cross_entropy(a, t), F.layer_norm(a, { 6 }),
          F.mse_loss(a, graft.zeros(4, 6):to(a:device()))
      end), { x:to(dt), y })
      for k = 1, #out do assert.are.equal("float32", out[k]:dtype(), "result " .. k) end
    end
  end)

  it("gives float32 gradients on the device", function()
    local x, w = graft.randn(4, 6):cuda(), graft.randn(3, 6):cuda()
    w.requires_grad = true
    local y = graft.autocast(function() return F.linear(x, w) end, { dtype = "float16" })
    assert.are.equal("float16", y:dtype())
    assert.are.equal("cuda:0", y:device())
    y:float():sum():backward()
    assert.are.equal("float32", w.grad:dtype())
    assert.are.equal("cuda:0", w.grad:device())
  end)

  it("defaults to float16 for device_type cuda and leaves CPU tensors alone there", function()
    local a = graft.randn(3, 3)
    local d, c = graft.autocast(function() return graft.mm(a:cuda(), a:cuda()), graft.mm(a, a) end, { device_type = "cuda" })
    assert.are.equal("float16", d:dtype())
    assert.are.equal("float32", c:dtype())
    local d2 = graft.autocast(function() return graft.mm(a:cuda(), a:cuda()) end, { device_type = "cpu" })
    assert.are.equal("float32", d2:dtype())
  end)

  it("trains a small conv net on the device like the same net on the CPU", function()
    graft.manual_seed(1)
    local function net()
      return graft.nn.Sequential(graft.nn.Conv2d(2, 4, 3, { padding = 1 }), graft.nn.ReLU(), graft.nn.Flatten(),
        graft.nn.Linear(4 * 5 * 5, 3))
    end
    local cpu, dev = net(), net()
    dev:load_state_dict(cpu:state_dict())
    dev:to("cuda")
    local x, y = graft.randn(6, 2, 5, 5), graft.tensor({ 0, 1, 2, 0, 1, 2 }, { dtype = "int64" })
    local function loss_of(m, xi, yi)
      local logits = graft.autocast(function() return m(xi) end, { dtype = "bfloat16" })
      return F.cross_entropy(logits:float(), yi)
    end
    local lc, ld = loss_of(cpu, x, y), loss_of(dev, x:cuda(), y:cuda())
    C.assert_match(ld, lc, { rtol = 2e-2, atol = 2e-2 })
    lc:backward()
    ld:backward()
    local pc, pd = cpu:parameters(), dev:parameters()
    for i = 1, #pc do
      C.assert_match(pd[i].grad, pc[i].grad, { rtol = 5e-2, atol = 5e-2 }, "gradient " .. i)
    end
  end)

  it("keeps nothing alive after the region", function()
    local x, w = graft.randn(2, 4):cuda(), graft.randn(3, 4):cuda()
    w.requires_grad = true
    H.no_leak(function()
      local y = graft.autocast(function() return F.linear(x, w) end, { dtype = "float16" })
      y = nil
    end)
  end)
end)
