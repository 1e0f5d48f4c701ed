-- float16 / bfloat16 through the ops whose kernels take float32/float64 (softmax, the
-- norms, the losses): outside autocast they compute in float32 and round the result
-- back once, as PyTorch's 16-bit kernels accumulate in float; gradients reach 16-bit
-- leaves in their dtype; a model converted with net:to("bfloat16") runs end to end.
local graft = require("graft")
local H = require("spec.helpers")
local F = graft.F

-- fn on 16-bit inputs must equal fn on their float32 values, rounded to dt.
local function same_as_float32(dt, fn, ...)
  local ins = table.pack(...)
  local h, f = {}, {}
  for i = 1, ins.n do
    local v = ins[i]
    if graft.is_tensor(v) and v:is_floating_point() then
      h[i] = v:to(dt)
      f[i] = h[i]:float()
    else
      h[i], f[i] = v, v
    end
  end
  local got = fn(table.unpack(h, 1, ins.n))
  local want = fn(table.unpack(f, 1, ins.n))
  assert.are.equal(dt, got:dtype())
  assert.tensor_near(got, want:to(dt), { rtol = 0, atol = 0 })
end

describe("16-bit inputs of the float32 kernels", function()
  for _, dt in ipairs({ "float16", "bfloat16" }) do
    it("softmax and log_softmax (" .. dt .. ")", function()
      local x = graft.randn(3, 7)
      same_as_float32(dt, function(t) return F.softmax(t, 2) end, x)
      same_as_float32(dt, function(t) return F.log_softmax(t, 1) end, x)
    end)

    it("layer_norm and group_norm with 16-bit weights (" .. dt .. ")", function()
      local x, w, b = graft.randn(4, 6), graft.randn(6), graft.randn(6)
      same_as_float32(dt, function(t, ww, bb) return F.layer_norm(t, { 6 }, ww, bb) end, x, w, b)
      same_as_float32(dt, function(t, ww, bb) return F.group_norm(t:reshape(2, 6, 2), 3, ww, bb) end, x, w, b)
    end)

    it("batch_norm in eval and training, running statistics kept in " .. dt, function()
      local x = graft.randn(4, 3, 5)
      local rm, rv = graft.zeros(3):to(dt), graft.ones(3):to(dt)
      local y = F.batch_norm(x:to(dt), rm, rv, { training = true, momentum = 0.5 })
      local frm, frv = graft.zeros(3), graft.ones(3)
      local fy = F.batch_norm(x:to(dt):float(), frm, frv, { training = true, momentum = 0.5 })
      assert.are.equal(dt, y:dtype())
      assert.tensor_near(y, fy:to(dt), { rtol = 0, atol = 0 })
      assert.tensor_near(rm, frm:to(dt), { rtol = 0, atol = 0 })
      assert.tensor_near(rv, frv:to(dt), { rtol = 0, atol = 0 })
      same_as_float32(dt, function(t, m, v) return F.batch_norm(t, m, v) end, x, graft.randn(3), graft.rand(3):add(0.5))
    end)

    it("cross_entropy, nll_loss and the pointwise losses (" .. dt .. ")", function()
      local x, y = graft.randn(5, 4), graft.tensor({ 0, 3, 1, 2, 3 })
      same_as_float32(dt, function(t) return F.cross_entropy(t, y) end, x)
      same_as_float32(dt, function(t, w) return F.cross_entropy(t, y, { weight = w, label_smoothing = 0.1 }) end,
        x, graft.rand(4))
      same_as_float32(dt, function(t) return F.nll_loss(F.log_softmax(t, 2), y) end, x)
      same_as_float32(dt, function(a, b) return F.mse_loss(a, b) end, x, graft.randn(5, 4))
      same_as_float32(dt, function(a, b) return F.smooth_l1_loss(a, b, { reduction = "none" }) end, x, graft.randn(5, 4))
      same_as_float32(dt, function(a, b) return F.binary_cross_entropy_with_logits(a, b) end, x, graft.rand(5, 4))
    end)

    it("sends gradients to 16-bit leaves in their dtype (" .. dt .. ")", function()
      local x = graft.randn(4, 6):to(dt)
      x.requires_grad = true
      local w = graft.randn(6):to(dt)
      w.requires_grad = true
      local loss = F.cross_entropy(F.layer_norm(x, { 6 }, w), graft.tensor({ 0, 1, 2, 5 }))
      loss:backward()
      assert.are.equal(dt, x.grad:dtype())
      assert.are.equal(dt, w.grad:dtype())
      local xf, wf = x:detach():float(), w:detach():float()
      xf.requires_grad, wf.requires_grad = true, true
      F.cross_entropy(F.layer_norm(xf, { 6 }, wf), graft.tensor({ 0, 1, 2, 5 })):backward()
      assert.tensor_near(x.grad:float(), xf.grad, { rtol = 2e-2, atol = 2e-2 })
      assert.tensor_near(w.grad:float(), wf.grad, { rtol = 2e-2, atol = 2e-2 })
    end)
  end

  -- (a converted model runs forward and backward; spec/optim/half_spec.lua trains one)
  it("a resnet18 converted to bfloat16 runs forward and backward in train mode", function()
    local models = require("graft.models")
    graft.manual_seed(0)
    local net = models.resnet18({ num_classes = 10 }):to("bfloat16")
    local loss = F.cross_entropy(net(graft.randn(2, 3, 32, 32):bfloat16()), graft.tensor({ 1, 7 }))
    assert.are.equal("bfloat16", loss:dtype())
    loss:backward()
    assert.are.equal("bfloat16", net.conv1.weight.grad:dtype())
    assert.are.equal("bfloat16", net.bn1.weight.grad:dtype())
    assert.is_true(net.conv1.weight.grad:float():abs():sum():item() > 0)
    assert.is_true(net.bn1.running_var:float():sub(1):abs():sum():item() > 0)
    net:eval()
    assert.are.equal("bfloat16", net(graft.randn(1, 3, 32, 32):bfloat16()):dtype())
  end)

  it("still refuses integer inputs", function()
    H.raises("softmax: expected a float32 or float64 input, got int64", F.softmax, graft.zeros(3, { dtype = "int64" }), 1)
  end)
end)
