-- Float64 gradient checks (finite differences) of every differentiable graft.F function
-- and option, with strided inputs; frozen inputs cost no gradient work; errors name the
-- op and the shapes and leak nothing.
local graft = require("graft")
local H = require("spec.helpers")
local F = graft.F

local F64 = { dtype = "float64", requires_grad = true }
local function R(...) return graft.randn({ ... }, F64) end
local function D(...) return graft.randn({ ... }, { dtype = "float64" }) end
-- a transposed leaf (non-contiguous)
local function RT(a, b) return graft.randn(b, a, { dtype = "float64" }):t():requires_grad_() end
local function I(t) return graft.tensor(t, { dtype = "int64" }) end

describe("gradcheck: linear maps", function()
  before_each(function() graft.manual_seed(31) end)
  it("linear", function()
    assert.gradcheck(function(x, w, b) return F.linear(x, w, b) end, { R(2, 3, 4), RT(5, 4), R(5) })
    assert.gradcheck(function(x, w) return F.linear(x, w) end, { R(4), R(3, 4) })
  end)
  it("bilinear", function()
    assert.gradcheck(function(a, b, w, bias) return F.bilinear(a, b, w, bias) end, { R(3, 2), R(3, 3), R(2, 2, 3), R(2) })
  end)
end)

describe("gradcheck: normalisation", function()
  before_each(function() graft.manual_seed(32) end)
  it("batch_norm in training, [N, C], [N, C, L] and [N, C, H, W]", function()
    for _, shape in ipairs({ { 4, 3 }, { 3, 2, 3 }, { 2, 2, 2, 2 } }) do
      assert.gradcheck(function(x, w, b) return F.batch_norm(x, nil, nil, { weight = w, bias = b, training = true }) end,
        { graft.randn(shape, F64), R(shape[2]), R(shape[2]) })
    end
    assert.gradcheck(function(x) return F.batch_norm(x, nil, nil, { training = true, eps = 0.1 }) end, { RT(3, 4) })
  end)
  it("batch_norm in eval mode", function()
    local rm, rv = D(3), graft.rand(3, { dtype = "float64" }) + 0.5
    assert.gradcheck(function(x, w, b) return F.batch_norm(x, rm, rv, { weight = w, bias = b }) end,
      { R(2, 3, 2), R(3), R(3) })
  end)
  it("layer_norm over one and two dims", function()
    assert.gradcheck(function(x, w, b) return F.layer_norm(x, { 4 }, w, b) end, { R(3, 4), R(4), R(4) })
    assert.gradcheck(function(x, w, b) return F.layer_norm(x, { 2, 3 }, { weight = w, bias = b, eps = 1e-3 }) end,
      { R(2, 2, 3), R(2, 3), R(2, 3) })
    assert.gradcheck(function(x) return F.layer_norm(x, 3) end, { RT(4, 3) })
  end)
  it("group_norm", function()
    assert.gradcheck(function(x, w, b) return F.group_norm(x, 2, w, b) end, { R(2, 4, 3), R(4), R(4) })
    assert.gradcheck(function(x) return F.group_norm(x, 3) end, { R(2, 3, 2, 2) })
  end)
end)

describe("gradcheck: embedding, dropout, activations, softmax", function()
  before_each(function() graft.manual_seed(33) end)
  it("embedding, with padding_idx", function()
    local idx = I({ { 0, 3 }, { 3, 1 } })
    assert.gradcheck(function(w) return F.embedding(idx, w) end, { R(4, 3) })
    -- the padding row still takes part in the forward (as PyTorch) but gets no gradient
    assert.gradcheck(function(w) return F.embedding(idx, w, { padding_idx = 2 }) end, { R(4, 3) })
    local w = R(4, 3)
    F.embedding(idx, w, { padding_idx = 3 }):sum():backward()
    assert.tensor_near(w.grad[4], graft.zeros(3, { dtype = "float64" }), { rtol = 0, atol = 0 })
  end)
  it("dropout (reseeded: the same mask each call)", function()
    assert.gradcheck(function(x) graft.manual_seed(5); return F.dropout(x, { p = 0.4 }) end, { R(4, 5) })
  end)
  it("activations", function()
    local fns = {
      function(x) return F.relu(x) end, function(x) return F.sigmoid(x) end, function(x) return F.tanh(x) end,
      function(x) return F.leaky_relu(x, { negative_slope = 0.1 }) end, function(x) return F.elu(x, { alpha = 0.7 }) end,
      function(x) return F.gelu(x) end, function(x) return F.gelu(x, { approximate = "tanh" }) end,
      function(x) return F.silu(x) end,
    }
    for _, fn in ipairs(fns) do assert.gradcheck(fn, { RT(3, 4) }) end
  end)
  it("softmax and log_softmax along each dim", function()
    for dim = 1, 3 do
      assert.gradcheck(function(x) return F.softmax(x, dim) end, { R(2, 3, 2) })
      assert.gradcheck(function(x) return F.log_softmax(x, dim) end, { R(2, 3, 2) })
    end
    assert.gradcheck(function(x) return F.log_softmax(x, -1) end, { RT(3, 4) })
    assert.gradcheck(function(x) return F.softmax(x, 1, { dtype = "float64" }) end, { R(3, 2) })
  end)
end)

describe("gradcheck: losses", function()
  before_each(function() graft.manual_seed(34) end)
  local t = I({ 2, 0, -100, 1 })
  local w = graft.rand(3, { dtype = "float64" }) + 0.5
  it("cross_entropy with indices, weights, ignore_index and label smoothing", function()
    for _, red in ipairs({ "mean", "sum", "none" }) do
      assert.gradcheck(function(x) return F.cross_entropy(x, t, { weight = w, reduction = red, label_smoothing = 0.1 }) end,
        { R(4, 3) })
    end
    assert.gradcheck(function(x) return F.cross_entropy(x, I({ { 0, 2 }, { 1, 1 } }), { ignore_index = 1 }) end,
      { R(2, 3, 2) })
    assert.gradcheck(function(x) return F.cross_entropy(x, t) end, { RT(4, 3) })
  end)
  it("cross_entropy with probabilities (input and target)", function()
    local p = F.softmax(D(4, 3), 2):requires_grad_()
    assert.gradcheck(function(x, y) return F.cross_entropy(x, y, { weight = w, label_smoothing = 0.2 }) end, { R(4, 3), p })
  end)
  it("nll_loss", function()
    assert.gradcheck(function(x) return F.nll_loss(x, t, { weight = w, reduction = "sum" }) end, { R(4, 3) })
  end)
  it("mse, l1, smooth_l1 (input and target, broadcast)", function()
    assert.gradcheck(function(x, y) return F.mse_loss(x, y) end, { R(3, 4), R(4) })
    assert.gradcheck(function(x, y) return F.l1_loss(x, y, { reduction = "sum" }) end, { R(3, 4), R(3, 4) })
    assert.gradcheck(function(x, y) return F.smooth_l1_loss(x, y, { beta = 0.7, reduction = "none" }) end,
      { R(3, 4), R(3, 4) })
  end)
  it("binary_cross_entropy and binary_cross_entropy_with_logits", function()
    local x = (graft.rand(3, 4, { dtype = "float64" }) * 0.8 + 0.1):requires_grad_()
    local y = graft.rand(3, 4, F64)
    local bw = D(4):abs()
    assert.gradcheck(function(a, b) return F.binary_cross_entropy(a, b, { weight = bw }) end, { x, y })
    local pw = graft.rand(4, { dtype = "float64" }) + 0.5
    assert.gradcheck(function(a, b) return F.binary_cross_entropy_with_logits(a, b, { pos_weight = pw, weight = w[1] }) end,
      { R(3, 4), y })
  end)
end)

describe("gradcheck: scaled_dot_product_attention", function()
  before_each(function() graft.manual_seed(35) end)
  it("plain, with bool and float masks, causal", function()
    local q, k, v = R(2, 3, 2), R(2, 4, 2), R(2, 4, 3)
    assert.gradcheck(function(a, b, c) return F.scaled_dot_product_attention(a, b, c) end, { q, k, v })
    local m = graft.tensor({ { true, false, true, true }, { true, true, false, false }, { false, true, true, true } })
    assert.gradcheck(function(a, b, c) return F.scaled_dot_product_attention(a, b, c, { attn_mask = m }) end, { q, k, v })
    local fm = D(3, 4)
    assert.gradcheck(function(a, b, c) return F.scaled_dot_product_attention(a, b, c, { attn_mask = fm }) end,
      { q, k, v })
    assert.gradcheck(function(a, b, c) return F.scaled_dot_product_attention(a, b, c, { is_causal = true }) end,
      { R(3, 2), R(3, 2), R(3, 2) })
  end)
end)

describe("gradients not needed are not computed", function()
  it("a frozen weight and bias cost nothing in the norms", function()
    local x = graft.randn(4, 3, 2, { requires_grad = true })
    local w, b = graft.ones(3), graft.zeros(3)
    for _, fn in ipairs({
      function() return F.batch_norm(x, nil, nil, { weight = w, bias = b, training = true }) end,
      function() return F.group_norm(x, 3, w, b) end,
      function() return F.layer_norm(x:transpose(2, 3), 3, w, b) end,
    }) do
      local y = fn()
      graft._autograd_reset_counters()
      y:sum():backward()
      assert.are.equal(0, graft._autograd_counters().grads_unused)
    end
  end)
  it("a frozen input costs no dx (the weight still gets its gradient)", function()
    local x = graft.randn(4, 3)
    local w, b = graft.ones(3, { requires_grad = true }), graft.zeros(3, { requires_grad = true })
    local y = F.layer_norm(x, 3, w, b)
    graft._autograd_reset_counters()
    y:sum():backward()
    local c = graft._autograd_counters()
    assert.are.equal(0, c.grads_unused)
    assert.are.equal(3, c.grads_computed) -- sum -> y, then weight and bias
    assert.is_not_nil(w.grad)
  end)
end)

describe("errors", function()
  it("name the op and the shapes", function()
    H.raises("batch_norm: expected more than 1 value per channel when training, got input size [1, 2]",
      F.batch_norm, graft.randn(1, 2), nil, nil, { training = true })
    H.raises("batch_norm: running_mean should contain 3 elements, got shape [4]", F.batch_norm, graft.randn(2, 3),
      graft.zeros(4), graft.ones(4))
    H.raises("batch_norm: momentum = None (a cumulative average) needs num_batches_tracked", F.batch_norm,
      graft.randn(2, 3), graft.zeros(3), graft.ones(3), { training = true, momentum = graft.None })
    H.raises("batch_norm: running_mean and running_var are needed when not training", F.batch_norm, graft.randn(2, 3))
    H.raises("layer_norm: given normalized_shape [4], expected an input of shape [*, 4], got [2, 3]",
      F.layer_norm, graft.randn(2, 3), { 4 })
    H.raises("layer_norm: weight has shape [3], expected normalized_shape [4]", F.layer_norm, graft.randn(2, 4), 4,
      graft.ones(3))
    H.raises("group_norm: expected the number of channels of the input to be divisible by num_groups, got input of shape [2, 6, 4] and num_groups = 4",
      F.group_norm, graft.randn(2, 6, 4), 4)
    H.raises("embedding: index 10 is out of range for 10 embeddings", F.embedding, I({ 1, 10 }), graft.randn(10, 3))
    H.raises("embedding: padding_idx 10 must be within num_embeddings (10)", F.embedding, I({ 1 }), graft.randn(10, 3),
      { padding_idx = 10 })
    H.raises("embedding: expected an integer index tensor, got float32", F.embedding, graft.randn(2), graft.randn(10, 3))
    H.raises("dropout: probability has to be between 0 and 1, but got 1.5", F.dropout, graft.randn(3), { p = 1.5 })
    H.raises("softmax: dim is required", F.softmax, graft.randn(3))
    H.raises("softmax: dim 3 is out of range", F.softmax, graft.randn(3, 2), 3)
    H.raises("log_softmax: expected a float32 or float64 input, got int64", F.log_softmax, I({ 1, 2 }), 1)
    H.raises("gelu: approximate must be \"none\" or \"tanh\", got \"erf\"", F.gelu, graft.randn(3), { approximate = "erf" })
    H.raises("linear: input [2, 3] does not match weight [4, 5] (expected an input of shape [*, 5])", F.linear,
      graft.randn(2, 3), graft.randn(4, 5))
    H.raises("linear: bias [3] does not match weight [4, 5] (expected [4])", F.linear, graft.randn(2, 5),
      graft.randn(4, 5), graft.randn(3))
    H.raises("bilinear: input1 [3, 2] and input2 [3, 3] do not match weight [2, 3, 3]", F.bilinear, graft.randn(3, 2),
      graft.randn(3, 3), graft.randn(2, 3, 3))
    H.raises("scaled_dot_product_attention: attn_mask must not be given together with is_causal = true",
      F.scaled_dot_product_attention, graft.randn(2, 3), graft.randn(2, 3), graft.randn(2, 3),
      { attn_mask = graft.zeros(2, 2), is_causal = true })
    H.raises("scaled_dot_product_attention: query [2, 3], key [2, 4] and value [2, 3] do not fit",
      F.scaled_dot_product_attention, graft.randn(2, 3), graft.randn(2, 4), graft.randn(2, 3))
  end)

  it("leak nothing with inputs that require grad", function()
    local x = graft.randn(1, 2, { requires_grad = true })
    H.raises("batch_norm: expected more than 1 value per channel", F.batch_norm, x, nil, nil, { training = true })
    H.raises("layer_norm: given normalized_shape [3]", F.layer_norm, x, 3)
    H.raises("embedding: index 5 is out of range", F.embedding, I({ 5 }), graft.randn(2, 2, { requires_grad = true }))
  end)
end)
