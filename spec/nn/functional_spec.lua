-- graft.F against PyTorch 1.13: outputs and gradients of linear, bilinear, the norms,
-- embedding, the activations, softmax and attention, in float64 and float32, from
-- spec/fixtures/functional.lua (the losses are in loss_spec.lua); BatchNorm running
-- statistics over several training steps; dropout's determinism and scaling; one_hot.
local graft = require("graft")
local H = require("spec.helpers")
local FX = require("spec.nn.fixture_cases")
local F = graft.F

local fx = H.fixture("functional")

describe("graft.F against PyTorch (outputs and gradients)", function()
  FX.run_cases(fx, it)
end)

describe("F.batch_norm running statistics", function()
  local function steps_of(run)
    local rm, rv = graft.zeros(3), graft.ones(3)
    local nbt = graft.tensor(0, { dtype = "int64" })
    local w, b = graft.tensor({ 1.0, 0.5, 2.0 }), graft.tensor({ 0.0, 0.1, -0.2 })
    local momentum = run.momentum == "None" and graft.None or run.momentum
    return rm, rv, nbt, w, b, momentum
  end

  for _, tag in ipairs({ "momentum", "momentum_03", "cumulative" }) do
    it(("match PyTorch after three training steps (%s)"):format(tag), function()
      local run = fx.bn_runs[tag]
      local rm, rv, nbt, w, b, momentum = steps_of(run)
      for i, st in ipairs(run.steps) do
        local x = H.T(fx.bn_inputs[i]):float()
        local y = F.batch_norm(x, rm, rv, { weight = w, bias = b, training = true, momentum = momentum,
          num_batches_tracked = nbt })
        assert.tensor_near(y, st.out, { rtol = 1e-5, atol = 1e-6 })
        assert.tensor_near(rm, st.running_mean, { rtol = 1e-6, atol = 1e-7 })
        assert.tensor_near(rv, st.running_var, { rtol = 1e-6, atol = 1e-7 })
        assert.are.equal(st.num_batches_tracked, nbt:item())
      end
      local ev = F.batch_norm(H.T(fx.bn_inputs[1]):float(), rm, rv, { weight = w, bias = b })
      assert.tensor_near(ev, run.eval_out, { rtol = 1e-5, atol = 1e-6 })
      assert.are.equal(3, nbt:item()) -- eval leaves it alone
    end)
  end

  it("cumulative = true is momentum = graft.None", function()
    local run = fx.bn_runs.cumulative
    local rm, rv, nbt, w, b = steps_of(run)
    for i, st in ipairs(run.steps) do
      F.batch_norm(H.T(fx.bn_inputs[i]):float(), rm, rv, { weight = w, bias = b, training = true, cumulative = true,
        num_batches_tracked = nbt })
      assert.tensor_near(rm, st.running_mean, { rtol = 1e-6, atol = 1e-7 })
      assert.tensor_near(rv, st.running_var, { rtol = 1e-6, atol = 1e-7 })
    end
  end)

  it("updates [N, C] statistics as BatchNorm1d (unbiased running_var)", function()
    local run = fx.bn_runs.bn1d
    local rm, rv = graft.zeros(4), graft.ones(4)
    for i, st in ipairs(run.steps) do
      F.batch_norm(H.T(run.inputs[i]):float(), rm, rv, { training = true })
      assert.tensor_near(rm, st.running_mean, { rtol = 1e-6, atol = 1e-7 })
      assert.tensor_near(rv, st.running_var, { rtol = 1e-6, atol = 1e-7 })
    end
  end)

  it("never records the running buffers and updates them even when the weight is frozen", function()
    local x = graft.randn(4, 3, 2, { requires_grad = true })
    local w = graft.ones(3)
    local rm, rv = graft.zeros(3), graft.ones(3)
    local y = F.batch_norm(x, rm, rv, { weight = w, training = true })
    assert.is_false(rm.requires_grad)
    assert.is_nil(rm.grad_fn)
    assert.are.equal("NativeBatchNormBackward0", tostring(y.grad_fn))
    assert.is_true(rm:abs():sum():item() > 0)
    y:sum():backward()
    assert.is_nil(w.grad)
  end)

  it("works under no_grad and in eval mode without touching the statistics", function()
    local rm, rv = graft.randn(3), graft.rand(3) + 0.5
    local rm0, rv0 = rm:clone(), rv:clone()
    local x = graft.randn(2, 3, 4)
    local y = graft.no_grad(function() return F.batch_norm(x, rm, rv) end)
    local want = (x - rm:view(1, 3, 1)) / (rv:view(1, 3, 1) + 1e-5):sqrt()
    assert.tensor_near(y, want, { rtol = 1e-5, atol = 1e-6 })
    assert.tensor_near(rm, rm0, { rtol = 0, atol = 0 })
    assert.tensor_near(rv, rv0, { rtol = 0, atol = 0 })
  end)
end)

describe("F.dropout", function()
  it("draws its mask from graft's generator: a seed reproduces it", function()
    local x = graft.randn(50, 40)
    graft.manual_seed(7)
    local a = F.dropout(x, { p = 0.3 })
    graft.manual_seed(7)
    local b = F.dropout(x, 0.3)
    assert.tensor_near(a, b, { rtol = 0, atol = 0 })
    local c = F.dropout(x, { p = 0.3 })
    assert.is_true(c:ne(b):any():item())
  end)

  it("zeroes about p of the elements and scales the others by 1 / (1 - p)", function()
    graft.manual_seed(11)
    local x = graft.ones(100, 100, { dtype = "float64" })
    local y = F.dropout(x, { p = 0.25 })
    local zeros = y:eq(0):sum():item() / 10000
    assert.is_true(math.abs(zeros - 0.25) < 0.03, "fraction dropped " .. zeros)
    local kept = y[y:ne(0)]
    assert.tensor_near(kept, graft.full({ kept:numel() }, 1 / 0.75, { dtype = "float64" }), { rtol = 1e-12 })
    assert.tensor_near(y:mean(), graft.tensor(1.0, { dtype = "float64" }), { atol = 0.05 })
  end)

  it("is the identity when not training, all zeros at p = 1", function()
    local x = graft.randn(3, 4)
    assert.tensor_near(F.dropout(x, { p = 0.5, training = false }), x, { rtol = 0, atol = 0 })
    assert.tensor_near(F.dropout(x, { p = 1 }), graft.zeros(3, 4), { rtol = 0, atol = 0 })
    assert.tensor_near(F.dropout(x, { p = 0 }), x, { rtol = 0, atol = 0 })
  end)

  it("sends the gradient through the kept elements, scaled", function()
    graft.manual_seed(3)
    local x = graft.randn(20, 10, { dtype = "float64", requires_grad = true })
    local y = F.dropout(x, { p = 0.4 })
    assert.are.equal("NativeDropoutBackward0", tostring(y.grad_fn))
    y:sum():backward()
    local want = y:detach():ne(0):double() / 0.6
    assert.tensor_near(x.grad, want, { rtol = 1e-12 })
  end)

  it("works on non-contiguous inputs", function()
    graft.manual_seed(9)
    local x = graft.randn(6, 8):t()
    local y = F.dropout(x, { p = 0.5 })
    local m = y:ne(0)
    assert.tensor_near(y[m], x[m] * 2, { rtol = 1e-6 })
  end)

  it("takes float16 and bfloat16 (autocast outputs): the float32 mask, values rounded once", function()
    local x = graft.randn(8, 16)
    graft.manual_seed(5)
    local want = F.dropout(x, { p = 0.3 })
    for _, dt in ipairs({ "float16", "bfloat16" }) do
      local h = x:to(dt)
      h.requires_grad = true
      graft.manual_seed(5)
      local y = F.dropout(h, { p = 0.3 })
      assert.are.equal(dt, y:dtype())
      assert.tensor_near(y:float(), (h:detach():float() / 0.7 * want:ne(0):float()):to(dt):float(),
        { rtol = 0, atol = 0, dtype = false })
      y:float():sum():backward()
      assert.are.equal(dt, h.grad:dtype())
      assert.tensor_near(h.grad:float(), (want:ne(0):float() / 0.7):to(dt):float(), { rtol = 0, atol = 0 })
    end
    H.raises("dropout: expected a floating point input, got int64", F.dropout, graft.zeros(3, { dtype = "int64" }), 0.5)
  end)

  it("moves the random stream past every word its mask read (the next draw shares none)", function()
    -- n elements read Philox blocks 0 .. min(n, 64) - 1 of each 256-element chunk, and a
    -- float32 uniform reads one word per element (4 per block): after a dropout the next
    -- draw must come from the block after the last one the mask used.
    for _, case in ipairs({ { n = 100, blocks = 64 }, { n = 10, blocks = 10 }, { n = 300, blocks = 108 },
                            { n = 512, blocks = 128 } }) do
      graft.manual_seed(11)
      F.dropout(graft.ones(case.n), { p = 0.5 })
      local after = graft.rand(8)
      graft.manual_seed(11)
      graft.rand(4 * case.blocks)
      assert.tensor_near(after, graft.rand(8), { rtol = 0, atol = 0 })
    end
  end)

  it("trains a transformer layer under bfloat16 autocast (dropout after 16-bit products)", function()
    local layer = graft.nn.TransformerEncoderLayer(16, 2, { dim_feedforward = 32, dropout = 0.1, batch_first = true })
    layer:train()
    local y = graft.autocast(function() return layer(graft.randn(2, 5, 16)) end, { dtype = "bfloat16" })
    local loss = (y:float() * graft.randn(2, 5, 16)):sum() -- a plain sum of a layer norm has no gradient
    loss:backward()
    assert.are.equal("float32", layer.linear1.weight.grad:dtype())
    assert.is_true(layer.linear1.weight.grad:abs():sum():item() > 0)
  end)
end)

describe("F.one_hot", function()
  it("gives int64 rows with one 1 at each class index (0-based)", function()
    local t = graft.tensor({ { 0, 2 }, { 1, 0 } }, { dtype = "int64" })
    local o = F.one_hot(t, 3)
    assert.are.equal("int64", o:dtype())
    assert.are.same({ { { 1, 0, 0 }, { 0, 0, 1 } }, { { 0, 1, 0 }, { 1, 0, 0 } } }, o:tolist())
    assert.are.same({ 2, 2, 3 }, F.one_hot(t):shape())
    assert.are.same({ 2, 2, 5 }, F.one_hot(t, { num_classes = 5 }):shape())
  end)

  it("rejects bad classes", function()
    H.raises("one_hot: class values must be non-negative", F.one_hot, graft.tensor({ -1, 0 }, { dtype = "int64" }))
    H.raises("one_hot: class values must be smaller than num_classes", F.one_hot, graft.tensor({ 3 }, { dtype = "int64" }), 3)
    H.raises("one_hot: expected an int64 index tensor, got float32", F.one_hot, graft.tensor({ 1.0 }))
  end)
end)

describe("F.scaled_dot_product_attention", function()
  it("drops attention weights with dropout_p (seeded) and keeps their scale", function()
    local q, k, v = graft.randn(2, 4, 3), graft.randn(2, 4, 3), graft.randn(2, 4, 5)
    graft.manual_seed(4)
    local a = F.scaled_dot_product_attention(q, k, v, { dropout_p = 0.5 })
    graft.manual_seed(4)
    local b = F.scaled_dot_product_attention(q, k, v, { dropout_p = 0.5 })
    assert.tensor_near(a, b, { rtol = 0, atol = 0 })
    local c = F.scaled_dot_product_attention(q, k, v)
    assert.is_true(a:ne(c):any():item())
  end)

  it("takes the mask positionally too", function()
    local q, k, v = graft.randn(3, 4), graft.randn(5, 4), graft.randn(5, 2)
    local m = graft.randn(3, 5)
    assert.tensor_near(F.scaled_dot_product_attention(q, k, v, m),
      F.scaled_dot_product_attention(q, k, v, { attn_mask = m }), { rtol = 0, atol = 0 })
  end)
end)

describe("graft.F node names", function()
  local x = graft.randn(3, 4, { requires_grad = true })
  local cases = {
    { "SoftmaxBackward0", function() return F.softmax(x, 2) end },
    { "LogSoftmaxBackward0", function() return F.log_softmax(x, 1) end },
    { "GeluBackward0", function() return F.gelu(x) end },
    { "SiluBackward0", function() return F.silu(x) end },
    { "EluBackward0", function() return F.elu(x) end },
    { "LeakyReluBackward0", function() return F.leaky_relu(x) end },
    { "NativeLayerNormBackward0", function() return F.layer_norm(x, 4) end },
    { "NativeGroupNormBackward0", function() return F.group_norm(x, 2) end },
    { "AddmmBackward0", function() return F.linear(x, graft.randn(2, 4), graft.randn(2)) end },
    { "MmBackward0", function() return F.linear(x, graft.randn(2, 4)) end },
    { "EmbeddingBackward0", function() return F.embedding(graft.tensor({ 1, 2 }, { dtype = "int64" }), x) end },
  }
  for _, c in ipairs(cases) do
    it(c[1], function() assert.are.equal(c[1], tostring(c[2]().grad_fn)) end)
  end
end)
