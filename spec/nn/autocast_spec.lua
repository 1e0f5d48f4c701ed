-- graft.autocast on the CPU (bfloat16, as PyTorch's CPU autocast): which ops cast, what
-- they return, that gradients reach the float32 leaves in float32, the cast cache, the
-- mode's scoping (nesting, errors), and PyTorch's own values under torch.autocast("cpu")
-- (spec/fixtures/autocast.lua, written by spec/fixtures/gen_autocast.py).
local graft = require("graft")
local H = require("spec.helpers")
local F = graft.F

local function bf16(fn) return graft.autocast(fn, { dtype = "bfloat16" }) end

describe("graft.autocast", function()
  it("runs the lower-precision ops in the autocast dtype", function()
    local a, b, bias = graft.randn(3, 4), graft.randn(4, 5), graft.randn(5)
    local r = bf16(function()
      return {
        matmul = graft.matmul(a, b), mm = graft.mm(a, b), mv = graft.mv(a, b[{ {}, 1 }]),
        bmm = graft.bmm(a:unsqueeze(1), b:unsqueeze(1)), addmm = graft.addmm(graft.randn(5), a, b),
        baddbmm = graft.baddbmm(graft.randn(1, 3, 5), a:unsqueeze(1), b:unsqueeze(1)),
        linear = F.linear(a, b:t(), bias),
        conv = F.conv2d(graft.randn(1, 2, 5, 5), graft.randn(3, 2, 3, 3)),
        sdpa = F.scaled_dot_product_attention(graft.randn(2, 3, 4), graft.randn(2, 5, 4), graft.randn(2, 5, 6)),
      }
    end)
    for name, t in pairs(r) do assert.are.equal("bfloat16", t:dtype(), name) end
    assert.tensor_near(r.matmul, graft.matmul(a:bfloat16(), b:bfloat16()), { rtol = 0, atol = 0 })
    assert.tensor_near(r.linear:float(), a:mm(b) + bias, { rtol = 3e-2, atol = 0.15, dtype = false })
  end)

  it("casts float16 to the autocast dtype and leaves float64 and integer inputs alone", function()
    local h = graft.randn(2, 3):half()
    assert.are.equal("bfloat16", bf16(function() return graft.mm(h, graft.randn(3, 2)) end):dtype())
    local d = graft.randn(2, 3):double()
    assert.are.equal("float64", bf16(function() return graft.mm(d, d:t()) end):dtype())
    local i = graft.ones(2, 2, { dtype = "int64" })
    assert.are.equal("int64", bf16(function() return graft.mm(i, i) end):dtype())
    H.raises("expected scalar type float64 but found bfloat16", bf16, function() return graft.mm(d, graft.randn(3, 2)) end)
  end)

  it("leaves other ops alone and promotes dot and bilinear to the widest dtype", function()
    local a = graft.randn(4)
    local r = bf16(function() return { add = a + a, dot = graft.dot(a, a), outer = graft.outer(a, a) } end)
    assert.are.equal("float32", r.add:dtype())
    assert.are.equal("float32", r.dot:dtype())
    assert.are.equal("float32", r.outer:dtype())
    local mixed = bf16(function() return graft.dot(a:half(), a) end)
    assert.are.equal("float32", mixed:dtype())
    local bl = bf16(function() return F.bilinear(graft.randn(2, 3):half(), graft.randn(2, 4), graft.randn(5, 3, 4)) end)
    assert.are.equal("float32", bl:dtype())
  end)

  it("returns float32 gradients to float32 leaves", function()
    local x, w, b = graft.randn(4, 6), graft.randn(3, 6), graft.randn(3)
    w.requires_grad, b.requires_grad = true, true
    local y = bf16(function() return F.linear(x, w, b) end)
    assert.are.equal("bfloat16", y:dtype())
    y:float():sum():backward()
    assert.are.equal("float32", w.grad:dtype())
    assert.are.equal("float32", b.grad:dtype())
    -- the same as an explicit cast
    local w2, b2 = w:detach():clone(), b:detach():clone()
    w2.requires_grad, b2.requires_grad = true, true
    F.linear(x:bfloat16(), w2:bfloat16(), b2:bfloat16()):float():sum():backward()
    assert.tensor_near(w.grad, w2.grad, { rtol = 0, atol = 0 })
    assert.tensor_near(b.grad, b2.grad, { rtol = 0, atol = 0 })
  end)

  it("casts a weight used twice once and accumulates both gradients", function()
    local x, w = graft.randn(2, 4), graft.randn(4, 4)
    w.requires_grad = true
    local y = bf16(function() return F.linear(F.linear(x, w), w) end)
    y:float():sum():backward()
    local w2 = w:detach():clone()
    w2.requires_grad = true
    local wb = w2:bfloat16()
    F.linear(F.linear(x:bfloat16(), wb), wb):float():sum():backward()
    assert.tensor_near(w.grad, w2.grad, { rtol = 0, atol = 0 })
  end)

  it("does not serve a stale cast after an in-place update of the weight", function()
    local x, w = graft.randn(2, 4), graft.randn(3, 4)
    w.requires_grad = true
    bf16(function()
      local y1 = F.linear(x, w)
      graft.no_grad(function() w:add_(1) end)
      local y2 = F.linear(x, w)
      assert.tensor_near(y2, F.linear(x:bfloat16(), w:detach():bfloat16()), { rtol = 0, atol = 0 })
      assert.is_false(H.compare(y1, y2, { rtol = 0, atol = 0 }))
    end)
  end)

  it("restores the mode after the region, when nested, and when fn raises", function()
    assert.is_false(graft.is_autocast_enabled())
    bf16(function()
      assert.is_true(graft.is_autocast_enabled())
      assert.are.equal("bfloat16", graft.get_autocast_dtype())
      graft.autocast(function()
        assert.is_false(graft.is_autocast_enabled())
        assert.are.equal("float32", graft.mm(graft.randn(2, 2), graft.randn(2, 2)):dtype())
      end, { enabled = false })
      graft.autocast(function() assert.are.equal("float16", graft.get_autocast_dtype()) end, { dtype = "float16" })
      assert.are.equal("bfloat16", graft.get_autocast_dtype())
    end)
    assert.is_false(graft.is_autocast_enabled())
    local ok, err = pcall(bf16, function() error("boom") end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("boom", 1, true))
    assert.is_false(graft.is_autocast_enabled())
  end)

  it("returns every result of fn", function()
    local a, b, c = graft.autocast(function() return 1, "two", nil end)
    assert.are.equal(1, a)
    assert.are.equal("two", b)
    assert.is_nil(c)
  end)

  it("covers only the tensors of device_type when it is given", function()
    local a = graft.randn(2, 2)
    local r = graft.autocast(function() return graft.mm(a, a) end, { device_type = "cuda" })
    assert.are.equal("float32", r:dtype())
    assert.are.equal("bfloat16", graft.autocast(function() return graft.mm(a, a) end, { device_type = "cpu" }):dtype())
  end)

  it("rejects dtypes other than float16 and bfloat16", function()
    H.raises("autocast: dtype must be float16 or bfloat16, got float64", graft.autocast, function() end,
      { dtype = "float64" })
    H.raises("bad argument", graft.autocast, function() end, { device_type = "tpu" })
    assert.is_false(graft.is_autocast_enabled())
  end)

  it("keeps no tensor alive after the region (the cast cache is emptied)", function()
    local x, w = graft.randn(2, 4), graft.randn(3, 4)
    w.requires_grad = true
    H.no_leak(function()
      local y = bf16(function() return F.linear(x, w) end)
      y = nil
    end)
  end)

  it("trains a small model with a loss computed outside the region", function()
    graft.manual_seed(0)
    local model = graft.nn.Sequential(graft.nn.Conv2d(1, 4, 3, { padding = 1 }), graft.nn.ReLU(),
      graft.nn.Flatten(), graft.nn.Linear(4 * 6 * 6, 3))
    local opt = graft.optim.SGD(model:parameters(), { lr = 0.05 })
    local x, y = graft.randn(8, 1, 6, 6), graft.tensor({ 0, 1, 2, 0, 1, 2, 0, 1 }, { dtype = "int64" })
    local first, last
    for step = 1, 5 do
      opt:zero_grad()
      local logits = bf16(function() return model(x) end)
      assert.are.equal("bfloat16", logits:dtype())
      local loss = F.cross_entropy(logits:float(), y)
      loss:backward()
      opt:step()
      first = first or loss:item()
      last = loss:item()
      for _, p in ipairs(model:parameters()) do assert.are.equal("float32", p.grad:dtype()) end
    end
    assert.is_true(last < first)
  end)
end)

describe("graft.autocast against PyTorch's CPU autocast (bfloat16)", function()
  local fx = H.fixture("autocast") -- spec/fixtures/gen_autocast.py
  it("gives PyTorch's dtypes, values and float32 gradients", function()
    for name, case in pairs(fx) do
      local ins = {}
      for i, t in ipairs(case.inputs) do
        ins[i] = H.T(t)
        if case.grad then ins[i].requires_grad = true end
      end
      local fn = ({
        linear = function(x, w, b) return F.linear(x, w, b) end,
        matmul = function(a, b) return graft.matmul(a, b) end,
        conv2d = function(x, w, b) return F.conv2d(x, w, b, { padding = 1 }) end,
        bmm = function(a, b) return graft.bmm(a, b) end,
      })[case.op]
      local out = bf16(function() return fn(table.unpack(ins)) end)
      assert.are.equal(case.out.dtype, out:dtype(), name)
      assert.tensor_near(out:float(), H.T(case.out):float(), { rtol = 2e-2, atol = 2e-2, dtype = false })
      if case.grad then
        out:float():sum():backward()
        for i, g in ipairs(case.grads) do
          assert.tensor_near(ins[i].grad, g, { rtol = 3e-2, atol = 3e-2 })
        end
      end
    end
  end)
end)

describe("graft.amp", function()
  it("exposes autocast and loads GradScaler on first use", function()
    local amp = require("graft.amp")
    assert.are.equal(graft.autocast, amp.autocast)
    assert.is_false(amp.is_autocast_enabled())
    assert.is_not_nil(amp.GradScaler)
    assert.are.equal(require("graft.grad_scaler"), amp.GradScaler)
  end)
end)

describe("graft.autocast's float32 list", function()
  -- softmax, log_softmax, the losses and layer/group norm compute in float32 under
  -- autocast (GRAFT_AUTOCAST_FP32 in their front ends).
  local x = graft.randn(4, 6):bfloat16()
  it("casts 16-bit inputs up to float32", function()
    local y = graft.tensor({ 0, 1, 2, 3 }, { dtype = "int64" })
    local r = bf16(function()
      return {
        softmax = F.softmax(x, -1), log_softmax = F.log_softmax(x, 2),
        cross_entropy = F.cross_entropy(x, y), nll_loss = F.nll_loss(x, y),
        mse = F.mse_loss(x, graft.randn(4, 6)), layer_norm = F.layer_norm(x, { 6 }),
        group_norm = F.group_norm(graft.randn(2, 4, 3):bfloat16(), 2),
      }
    end)
    for name, t in pairs(r) do assert.are.equal("float32", t:dtype(), name) end
    assert.tensor_near(r.softmax, F.softmax(x:float(), -1), { rtol = 0, atol = 0 })
  end)
end)
