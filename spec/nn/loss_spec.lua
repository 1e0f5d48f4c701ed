-- The losses of graft.F against PyTorch 1.13 (spec/fixtures/functional_loss.lua):
-- cross_entropy with class indices and probabilities, weights, ignore_index and label
-- smoothing under each reduction, nll_loss, mse/l1/smooth_l1, binary cross-entropy with
-- and without logits; the weighted mean's divisor; gradients skipped when not needed.
local graft = require("graft")
local H = require("spec.helpers")
local FX = require("spec.nn.fixture_cases")
local F = graft.F

describe("graft.F losses against PyTorch (outputs and gradients)", function()
  FX.run_cases(H.fixture("functional_loss"), it)
end)

describe("F.cross_entropy", function()
  local I = function(t) return graft.tensor(t, { dtype = "int64" }) end

  it("divides the weighted mean by the weights of the targets that count", function()
    local x = graft.randn(4, 3, { dtype = "float64" })
    local t = I({ 0, 2, -100, 2 })
    local w = graft.tensor({ 0.5, 1.0, 3.0 }, { dtype = "float64" })
    local lp = F.log_softmax(x, 2)
    local want = -(lp[1][1]:item() * 0.5 + lp[2][3]:item() * 3 + lp[4][3]:item() * 3) / (0.5 + 3 + 3)
    assert.is_true(math.abs(F.cross_entropy(x, t, { weight = w }):item() - want) < 1e-12)
  end)

  it("is NaN when every target is ignored (mean), as PyTorch", function()
    local v = F.cross_entropy(graft.randn(2, 3), I({ -100, -100 })):item()
    assert.is_true(v ~= v)
  end)

  it("accepts int32 class indices and a 0-dim target for an unbatched input", function()
    local x = graft.randn(3, 5)
    local a = F.cross_entropy(x, graft.tensor({ 1, 4, 0 }, { dtype = "int32" }))
    local b = F.cross_entropy(x, I({ 1, 4, 0 }))
    assert.tensor_near(a, b, { rtol = 0, atol = 0 })
    assert.are.same({}, F.cross_entropy(x[1], graft.tensor(1, { dtype = "int64" }), { reduction = "none" }):shape())
  end)

  it("gives the target a gradient when it holds probabilities", function()
    local x = graft.randn(3, 4, { dtype = "float64", requires_grad = true })
    local p = F.softmax(graft.randn(3, 4, { dtype = "float64" }), 2):requires_grad_()
    F.cross_entropy(x, p):backward()
    assert.is_not_nil(p.grad)
    assert.is_not_nil(x.grad)
  end)

  it("computes no input gradient for a target-only graph", function()
    local x = graft.randn(3, 4, { dtype = "float64" })
    local p = F.softmax(graft.randn(3, 4, { dtype = "float64" }), 2):requires_grad_()
    graft._autograd_reset_counters()
    F.cross_entropy(x, p):backward()
    local c = graft._autograd_counters()
    assert.are.equal(0, c.grads_unused)
  end)
end)

describe("loss errors", function()
  local I = function(t) return graft.tensor(t, { dtype = "int64" }) end
  local x = graft.randn(8, 10, 2)

  it("name the op and the shapes", function()
    H.raises("cross_entropy: target [8] does not match input [8, 10, 2]", F.cross_entropy, x, graft.zeros(8, { dtype = "int64" }))
    H.raises("nll_loss: target 12 is out of bounds for 10 classes", F.nll_loss, graft.randn(3, 10), I({ 1, 12, 0 }))
    H.raises("cross_entropy: target -3 is out of bounds for 10 classes", F.cross_entropy, graft.randn(3, 10), I({ 1, -3, 0 }))
    H.raises("cross_entropy: weight should have one element per class (10), got shape [5]", F.cross_entropy,
      graft.randn(3, 10), I({ 1, 2, 0 }), { weight = graft.ones(5) })
    H.raises("cross_entropy: label_smoothing must be between 0.0 and 1.0, got 1.5", F.cross_entropy,
      graft.randn(3, 10), I({ 1, 2, 0 }), { label_smoothing = 1.5 })
    H.raises("cross_entropy: reduction must be \"none\", \"mean\" or \"sum\", got avg", F.cross_entropy,
      graft.randn(3, 10), I({ 1, 2, 0 }), { reduction = "avg" })
    H.raises("nll_loss: expected class indices (an integer target), got float32", F.nll_loss, graft.randn(3, 4),
      graft.randn(3, 4))
    H.raises("cross_entropy: expected a float32 or float64 input, got int64", F.cross_entropy, I({ { 1, 2 } }), I({ 0 }))
    H.raises("binary_cross_entropy: target size [4] must be the same as input size [4, 1]",
      F.binary_cross_entropy, graft.rand(4, 1), graft.rand(4))
    H.raises("binary_cross_entropy_with_logits: target size [4] must be the same as input size [4, 1]",
      F.binary_cross_entropy_with_logits, graft.rand(4, 1), graft.rand(4))
    H.raises("binary_cross_entropy: all elements of input should be between 0 and 1", F.binary_cross_entropy,
      graft.tensor({ 0.5, 1.5 }), graft.tensor({ 0.0, 1.0 }))
    H.raises("mse_loss: shapes [3] and [4] cannot broadcast", F.mse_loss, graft.randn(3), graft.randn(4))
    H.raises("smooth_l1_loss: beta must be non-negative, got -1", F.smooth_l1_loss, graft.randn(3), graft.randn(3),
      { beta = -1 })
  end)

  it("leak nothing when raised with requires_grad inputs", function()
    local xr = graft.randn(3, 10, { requires_grad = true })
    H.raises("nll_loss: target 12 is out of bounds for 10 classes", F.nll_loss, xr, I({ 1, 12, 0 }))
    H.raises("cross_entropy: target [8] does not match input [3, 10]", F.cross_entropy, xr, I({ 1, 2, 3, 4, 5, 6, 7, 8 }))
  end)

  it("says the dtype is wrong when float labels are shaped like class indices", function()
    H.raises("cross_entropy: class-index targets must be integers (int64), got float32 of shape [4] (probability "
      .. "targets have the input's shape [4, 3]; convert labels with :long())", F.cross_entropy, graft.randn(4, 3),
      graft.tensor({ 0, 1, 2, 1 }, { dtype = "float32" }))
    -- probabilities of the wrong shape keep the shape message
    H.raises("cross_entropy: target [4, 2] does not match input [4, 3]", F.cross_entropy, graft.randn(4, 3),
      graft.rand(4, 2))
  end)
end)
