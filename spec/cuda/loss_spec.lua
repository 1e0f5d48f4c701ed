-- The losses, embedding and one_hot on CUDA: the PyTorch fixture cases run on the
-- device, then each path against the CPU: cross_entropy / nll_loss with a warp per row,
-- a block per long row and a thread per row of spatial inputs, every reduction, class
-- weights, ignore_index, label smoothing and probability targets; the pointwise losses
-- with broadcasting and strided inputs; deterministic means; gradients; and the errors
-- (out-of-range classes and indices read back from the device, mixed devices).
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")
local F = graft.F

C.describe("losses on cuda match PyTorch (fixture cases)", function()
  C.fixture_cases(H.fixture("functional_loss"))
  C.fixture_cases(H.fixture("functional"), { embedding = true })
end)

C.describe("F.cross_entropy / F.nll_loss on cuda", function()
  local reductions = { "mean", "sum", "none" }

  for _, dtype in ipairs({ "float32", "float64" }) do
    for _, red in ipairs(reductions) do
      it(("class indices, weights, ignore_index and smoothing: %s, %s"):format(red, dtype), function()
        local t = C.I({ 0, 4, 2, -100, 1, 3, 4, 0 })
        local w = graft.rand(5, { dtype = dtype }):add(0.5)
        for _, ls in ipairs({ 0, 0.25 }) do
          C.check(function(x, tt, ww)
            return F.cross_entropy(x, tt, { weight = ww, reduction = red, label_smoothing = ls })
          end, { C.leaf(8, 5, { dtype = dtype }), t, w }, { grad = true })
          C.check(function(x, tt)
            return F.cross_entropy(x, tt, { reduction = red, label_smoothing = ls, ignore_index = 4 })
          end, { C.leaf(8, 5, { dtype = dtype }), C.I({ 0, 4, 2, 3, 1, 3, 4, 0 }) }, { grad = true })
        end
        C.check(function(x, tt, ww) return F.nll_loss(x, tt, { weight = ww, reduction = red }) end,
          { C.leaf(8, 5, { dtype = dtype }), t, w }, { grad = true })
      end)

      it(("a block per row beyond 1024 classes: %s, %s"):format(red, dtype), function()
        local t = C.I({ 0, 2999, 1500 })
        C.check(function(x, tt) return F.cross_entropy(x, tt, { reduction = red, label_smoothing = 0.1 }) end,
          { C.leaf(3, 3000, { dtype = dtype }), t }, { grad = true })
        local p = F.softmax(graft.randn(3, 3000, { dtype = dtype }), 2)
        C.check(function(x, pp) return F.cross_entropy(x, pp, { reduction = red }) end,
          { C.leaf(3, 3000, { dtype = dtype }), C.leaf(p) }, { grad = true })
      end)

      it(("a thread per row for [N, C, H, W] inputs: %s, %s"):format(red, dtype), function()
        local t = graft.randint(0, 4, { 2, 3, 5 })
        t[1][2][3] = -100
        local w = graft.rand(4, { dtype = dtype }):add(0.5)
        C.check(function(x, tt, ww)
          return F.cross_entropy(x, tt, { weight = ww, reduction = red, label_smoothing = 0.1 })
        end, { C.leaf(2, 4, 3, 5, { dtype = dtype }), t, w }, { grad = true })
        C.check(function(x, tt) return F.nll_loss(x, tt, { reduction = red }) end,
          { C.leaf(2, 4, 3, 5, { dtype = dtype }), t }, { grad = true })
        local p = F.softmax(graft.randn(2, 4, 3, 5, { dtype = dtype }), 2)
        C.check(function(x, pp, ww) return F.cross_entropy(x, pp, { weight = ww, reduction = red, label_smoothing = 0.2 }) end,
          { C.leaf(2, 4, 3, 5, { dtype = dtype }), C.leaf(p), w }, { grad = true })
      end)

      it(("class probabilities with weights and smoothing, target gradients: %s, %s"):format(red, dtype), function()
        local p = F.softmax(graft.randn(6, 7, { dtype = dtype }), 2)
        local w = graft.rand(7, { dtype = dtype }):add(0.5)
        C.check(function(x, pp, ww) return F.cross_entropy(x, pp, { weight = ww, reduction = red, label_smoothing = 0.3 }) end,
          { C.leaf(6, 7, { dtype = dtype }), C.leaf(p), w }, { grad = true })
      end)
    end
  end

  it("takes transposed logits, int32 targets on the device and an unbatched input", function()
    C.check(function(x, tt) return F.cross_entropy(x:t(), tt) end,
      { C.leaf(5, 6), C.I({ 0, 1, 2, 3, 4, 0 }, "int32") }, { grad = true })
    C.check(function(x, tt) return F.cross_entropy(x, tt, { reduction = "none" }) end,
      { C.leaf(5), graft.tensor(3, { dtype = "int64" }) }, { grad = true })
    C.check(function(x, tt) return F.nll_loss(x:narrow(2, 2, 4), tt) end,
      { C.leaf(3, 6), C.I({ 0, 3, 1 }) }, { grad = true })
  end)

  it("is NaN when every target is ignored, and handles an empty batch", function()
    local v = F.cross_entropy(graft.randn(2, 3):cuda(), C.I({ -100, -100 }):cuda()):item()
    assert.is_true(v ~= v)
    C.check(function(x, tt) return F.cross_entropy(x, tt, { reduction = "sum" }) end, { graft.randn(0, 3), C.I({}) })
    C.check(function(x, tt) return F.cross_entropy(x, tt, { reduction = "none" }) end, { graft.randn(0, 3), C.I({}) })
  end)

  it("reduces in the same order on every call (bitwise equal means)", function()
    local x = graft.randn(3000, 7):cuda()
    local t = graft.randint(0, 7, { 3000 }):cuda()
    local a = F.cross_entropy(x, t):item()
    for _ = 1, 3 do assert.are.equal(a, F.cross_entropy(x, t):item()) end
    C.check(function(xx, tt) return F.cross_entropy(xx, tt) end, { x:cpu(), t:cpu() })
  end)

  it("names the op for a class out of range, read back from the device, and leaks nothing", function()
    local x = graft.randn(4, 5):cuda()
    H.raises("cross_entropy: target 5 is out of bounds for 5 classes", F.cross_entropy, x, C.I({ 0, 5, 1, 2 }):cuda())
    H.raises("cross_entropy: target -3 is out of bounds for 5 classes", F.cross_entropy, x, C.I({ 0, -3, 1, 2 }):cuda(),
      { reduction = "none" })
    H.raises("nll_loss: target 7 is out of bounds for 5 classes", F.nll_loss, x, C.I({ 7, 0, 1, 2 }):cuda())
    local xg = C.leaf(4, 5):cuda()
    H.raises("cross_entropy: target 9 is out of bounds for 5 classes", F.cross_entropy, xg, C.I({ 0, 9, 1, 2 }):cuda())
  end)

  it("refuses tensors on different devices with PyTorch's message", function()
    local x = graft.randn(4, 5):cuda()
    H.raises("cross_entropy: expected all tensors to be on the same device, but found cuda:0 and cpu",
      F.cross_entropy, x, C.I({ 0, 1, 2, 3 }))
    H.raises("nll_loss: expected all tensors to be on the same device, but found cuda:0 and cpu",
      F.nll_loss, x, C.I({ 0, 1, 2, 3 }):cuda(), { weight = graft.ones(5) })
    H.raises("cross_entropy: expected a float32 or float64 input, got int64", F.cross_entropy,
      C.I({ { 1, 2 } }):cuda(), C.I({ 0 }):cuda())
  end)
end)

C.describe("pointwise losses on cuda", function()
  local kinds = {
    mse_loss = function(x, y, red) return F.mse_loss(x, y, { reduction = red }) end,
    l1_loss = function(x, y, red) return F.l1_loss(x, y, { reduction = red }) end,
    smooth_l1_loss = function(x, y, red) return F.smooth_l1_loss(x, y, { reduction = red, beta = 0.5 }) end,
  }
  local names = { "l1_loss", "mse_loss", "smooth_l1_loss" }
  for _, name in ipairs(names) do
    for _, dtype in ipairs({ "float32", "float64" }) do
      for _, red in ipairs({ "mean", "sum", "none" }) do
        it(("%s broadcasts and takes strided inputs: %s, %s"):format(name, red, dtype), function()
          local f = kinds[name]
          C.check(function(x, y) return f(x, y, red) end,
            { C.leaf(4, 6, { dtype = dtype }), C.leaf(4, 6, { dtype = dtype }) }, { grad = true })
          C.check(function(x, y) return f(x:t(), y, red) end,
            { C.leaf(6, 4, { dtype = dtype }), C.leaf(6, { dtype = dtype }) }, { grad = true })
          C.check(function(x, y) return f(x, y:expand(3, 5), red) end,
            { C.leaf(3, 5, { dtype = dtype }), C.leaf(1, 5, { dtype = dtype }) }, { grad = true })
        end)
      end
    end
  end

  for _, dtype in ipairs({ "float32", "float64" }) do
    for _, red in ipairs({ "mean", "sum", "none" }) do
      it(("binary cross-entropy with and without logits, weights, pos_weight: %s, %s"):format(red, dtype), function()
        local p = graft.rand(5, 4, { dtype = dtype }):mul(0.9):add(0.05)
        local y = graft.rand(5, 4, { dtype = dtype })
        local w = graft.rand(4, { dtype = dtype }):add(0.5)
        C.check(function(a, b, ww) return F.binary_cross_entropy(a, b, { weight = ww, reduction = red }) end,
          { C.leaf(p), C.leaf(y), w }, { grad = true })
        C.check(function(a, b, ww, pw)
          return F.binary_cross_entropy_with_logits(a, b, { weight = ww, pos_weight = pw, reduction = red })
        end, { C.leaf(5, 4, { dtype = dtype }), C.leaf(graft.rand(5, 4, { dtype = dtype })), w,
          graft.rand(4, { dtype = dtype }):add(0.5) }, { grad = true })
        C.check(function(a, b) return F.binary_cross_entropy_with_logits(a:t(), b, { reduction = red }) end,
          { C.leaf(graft.randn(4, 5, { dtype = dtype }):mul(30)), graft.rand(5, 4, { dtype = dtype }) },
          { grad = true })
      end)
    end
  end

  it("sums many blocks in a fixed order (bitwise equal, matching the CPU)", function()
    local x, y = graft.randn(20000), graft.randn(20000)
    local dx, dy = x:cuda(), y:cuda()
    local a = F.mse_loss(dx, dy):item()
    for _ = 1, 3 do assert.are.equal(a, F.mse_loss(dx, dy):item()) end
    C.check(function(u, v) return F.mse_loss(u, v) end, { x, y })
    C.check(function(u, v) return F.l1_loss(u, v, { reduction = "sum" }) end, { x, y }, { rtol = 1e-4, atol = 1e-3 })
    C.check(function(u, v) return F.mse_loss(u, v) end, { graft.randn(0), graft.randn(0) })
  end)

  it("raises for probabilities outside [0, 1] and for tensors on different devices", function()
    H.raises("binary_cross_entropy: all elements of input should be between 0 and 1", F.binary_cross_entropy,
      graft.tensor({ 0.5, 1.5 }):cuda(), graft.tensor({ 1.0, 0.0 }):cuda())
    H.raises("binary_cross_entropy: all elements of input should be between 0 and 1", F.binary_cross_entropy,
      graft.tensor({ 0.5, -0.5 }):cuda(), graft.tensor({ 1.0, 0.0 }):cuda(), { reduction = "none" })
    H.raises("mse_loss: expected all tensors to be on the same device, but found cuda:0 and cpu", F.mse_loss,
      graft.randn(3):cuda(), graft.randn(3))
    H.raises("binary_cross_entropy_with_logits: expected all tensors to be on the same device", function()
      return F.binary_cross_entropy_with_logits(graft.randn(3):cuda(), graft.rand(3):cuda(), { pos_weight = graft.ones(3) })
    end)
  end)
end)

C.describe("F.embedding and F.one_hot on cuda", function()
  it("looks up rows of any weight dtype with any integer index dtype", function()
    local idx = C.I({ { 1, 9, 3 }, { 0, 3, 3 } })
    for _, dt in ipairs({ "float32", "float64", "float16", "bfloat16", "int64", "int8" }) do
      C.check(function(i, w) return F.embedding(i, w) end, { idx, graft.randn(10, 5):mul(10):to(dt) })
    end
    C.check(function(i, w) return F.embedding(i, w) end, { C.I({ 2, 0 }, "int32"), graft.randn(4, 3) })
    C.check(function(i, w) return F.embedding(i, w:t()) end, { C.I({ 2, 0, 1 }), graft.randn(3, 4) })
    C.check(function(i, w) return F.embedding(i, w) end, { C.I({}), graft.randn(4, 3) })
  end)

  for _, dtype in ipairs({ "float32", "float64" }) do
    it("adds the gradient rows of repeated indices and skips padding_idx (" .. dtype .. ")", function()
      local idx = C.I({ { 1, 2, 1, 4 }, { 0, 1, 2, 2 } })
      C.check(function(i, w) return F.embedding(i, w) end, { idx, C.leaf(5, 40, { dtype = dtype }) },
        { grad = true })
      C.check(function(i, w) return F.embedding(i, w, { padding_idx = 1 }) end,
        { idx, C.leaf(5, 3, { dtype = dtype }) }, { grad = true })
      C.check(function(i, w) return F.embedding(i, w, { padding_idx = -1 }) end,
        { idx, C.leaf(5, 70, { dtype = dtype }) }, { grad = true })
    end)
  end

  it("names the op for an index out of range, read back from the device, and leaks nothing", function()
    local w = graft.randn(10, 4):cuda()
    H.raises("embedding: index 10 is out of range for 10 embeddings", F.embedding, C.I({ 1, 10 }):cuda(), w)
    H.raises("embedding: index -1 is out of range for 10 embeddings", F.embedding, C.I({ -1 }):cuda(), w)
    local wg = C.leaf(10, 4):cuda()
    H.raises("embedding: index 12 is out of range for 10 embeddings", F.embedding, C.I({ 12 }):cuda(), wg)
    H.raises("embedding: expected all tensors to be on the same device, but found cuda:0 and cpu", F.embedding,
      C.I({ 1 }), w)
  end)

  it("one_hot writes ones on the device and checks the classes there", function()
    local idx = C.I({ { 0, 3 }, { 2, 2 } })
    C.check(function(i) return F.one_hot(i) end, { idx })
    C.check(function(i) return F.one_hot(i, 6) end, { idx })
    C.check(function(i) return F.one_hot(i, 3) end, { C.I({}) })
    H.raises("one_hot: class values must be non-negative, got -2", F.one_hot, C.I({ 1, -2, 0 }):cuda())
    H.raises("one_hot: class values must be smaller than num_classes (got 3 for 3 classes)", F.one_hot,
      C.I({ 3, 0 }):cuda(), 3)
    H.raises("one_hot: can not infer the total number of classes from an empty tensor", F.one_hot, C.I({}):cuda())
  end)
end)
