-- graft.nn layers against PyTorch 1.13 (spec/fixtures/nn.lua, written by
-- spec/fixtures/gen_nn.py): printing, state-dict keys and versions, forward outputs and
-- the gradients of sum(out * g) for fixed weights and inputs, BatchNorm running
-- statistics; default initialisation distributions; layer error messages.
local graft = require("graft")
local nn = require("graft.nn")
local H = require("spec.helpers")

local fx = H.fixture("nn")
local F = graft.F

local function T(x) return H.T(x) end

-- A fixture dict (a Lua table of fixture tensors) as a state dict.
local function state(t)
  local sd = {}
  for k, v in pairs(t) do sd[k] = T(v) end
  return sd
end

local function keys_of(sd) return sd:keys() end

-- graft constructors for the repr cases (PyTorch's dims become 1-based ones).
local repr_ctors = {
  linear = function() return nn.Linear(4, 3) end,
  linear_nobias = function() return nn.Linear(4, 3, { bias = false }) end,
  bilinear = function() return nn.Bilinear(2, 3, 4) end,
  conv1d = function() return nn.Conv1d(2, 4, 3) end,
  conv2d_resnet = function() return nn.Conv2d(3, 64, 7, { stride = 2, padding = 3, bias = false }) end,
  conv2d_full = function() return nn.Conv2d(3, 8, { 3, 5 }, { stride = { 2, 1 }, padding = { 1, 2 }, dilation = 2 }) end,
  conv2d_same_dw = function() return nn.Conv2d(4, 4, 3, { padding = "same", groups = 4 }) end,
  conv2d_reflect = function() return nn.Conv2d(4, 4, 3, { padding = 1, padding_mode = "reflect" }) end,
  conv_transpose2d = function() return nn.ConvTranspose2d(4, 2, 3, { stride = 2, padding = 1, output_padding = 1 }) end,
  batchnorm1d = function() return nn.BatchNorm1d(5) end,
  batchnorm2d_opts = function()
    return nn.BatchNorm2d(5, { eps = 1e-3, momentum = false, affine = false, track_running_stats = false })
  end,
  layernorm = function() return nn.LayerNorm(5) end,
  layernorm_2d = function() return nn.LayerNorm({ 2, 5 }, { elementwise_affine = false }) end,
  groupnorm = function() return nn.GroupNorm(2, 4) end,
  embedding = function() return nn.Embedding(10, 3) end,
  embedding_pad = function() return nn.Embedding(10, 3, { padding_idx = 0 }) end,
  dropout = function() return nn.Dropout() end,
  dropout_opts = function() return nn.Dropout(0.2, { inplace = true }) end,
  relu = function() return nn.ReLU() end,
  relu_inplace = function() return nn.ReLU(true) end,
  relu6 = function() return nn.ReLU6() end,
  leaky_relu = function() return nn.LeakyReLU() end,
  leaky_relu_02 = function() return nn.LeakyReLU(0.2) end,
  elu = function() return nn.ELU() end,
  gelu = function() return nn.GELU() end,
  gelu_tanh = function() return nn.GELU("tanh") end,
  silu = function() return nn.SiLU() end,
  sigmoid = function() return nn.Sigmoid() end,
  tanh = function() return nn.Tanh() end,
  softmax_last = function() return nn.Softmax(-1) end,
  softmax_none = function() return nn.Softmax() end,
  log_softmax_last = function() return nn.LogSoftmax(-1) end,
  maxpool = function() return nn.MaxPool2d(3, { stride = 2, padding = 1 }) end,
  maxpool_2 = function() return nn.MaxPool2d(2) end,
  avgpool = function() return nn.AvgPool2d(2) end,
  avgpool_opts = function()
    return nn.AvgPool2d(3, { stride = 2, padding = 1, ceil_mode = true, count_include_pad = false })
  end,
  adaptive_11 = function() return nn.AdaptiveAvgPool2d({ 1, 1 }) end,
  adaptive_7 = function() return nn.AdaptiveAvgPool2d(7) end,
  identity = function() return nn.Identity() end,
  cross_entropy = function() return nn.CrossEntropyLoss() end,
  nll = function() return nn.NLLLoss() end,
  mse = function() return nn.MSELoss() end,
  l1 = function() return nn.L1Loss() end,
  smooth_l1 = function() return nn.SmoothL1Loss() end,
  bce_logits = function() return nn.BCEWithLogitsLoss() end,
  mha = function() return nn.MultiheadAttention(8, 2) end,
  encoder_layer = function() return nn.TransformerEncoderLayer(8, 2, { dim_feedforward = 16 }) end,
  encoder = function()
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, { dim_feedforward = 16 }), 2,
      { norm = nn.LayerNorm(8) })
  end,
  module_list = function() return nn.ModuleList({ nn.Linear(1, 2), nn.ReLU() }) end,
  module_dict = function() return nn.ModuleDict({ a = nn.ReLU() }) end,
  empty_sequential = function() return nn.Sequential() end,
  empty_module = function() return nn.Module() end,
  flatten = function() return nn.Flatten() end,
}

describe("nn layers: printing", function()
  it("prints every layer as PyTorch does", function()
    local n = 0
    for name, expected in pairs(fx.reprs) do
      local ctor = repr_ctors[name]
      assert.is_not_nil(ctor, "no constructor for repr case " .. name)
      assert.are.equal(expected, tostring(ctor()), name)
      n = n + 1
    end
    assert.is_true(n >= 50)
  end)
end)

describe("nn layers: state-dict keys and versions", function()
  local k = fx.layer_keys
  it("MultiheadAttention registers in_proj_weight/bias and out_proj, or the separate projections", function()
    assert.are.same(k.mha, keys_of(nn.MultiheadAttention(8, 2):state_dict()))
    assert.are.same(k.mha_kdim, keys_of(nn.MultiheadAttention(8, 2, { kdim = 4, vdim = 6, bias = false }):state_dict()))
    assert.are.same(k.mha_bias_kv, keys_of(nn.MultiheadAttention(8, 2, { add_bias_kv = true }):state_dict()))
  end)
  it("TransformerEncoder names its copies layers.0, layers.1 and keeps the final norm", function()
    local enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, { dim_feedforward = 16 }), 2,
      { norm = nn.LayerNorm(8) })
    assert.are.same(k.encoder, keys_of(enc:state_dict()))
  end)
  it("BatchNorm without affine or running statistics has fewer keys", function()
    assert.are.same(k.bn_no_affine, keys_of(nn.BatchNorm2d(2, { affine = false }):state_dict()))
    assert.are.same({}, keys_of(nn.BatchNorm2d(2, { affine = false, track_running_stats = false }):state_dict()))
    assert.are.same(k.bn_no_stats, {})
  end)
  it("loss weights are buffers in the state dict", function()
    assert.are.same(k.ce_weight, keys_of(nn.CrossEntropyLoss({ weight = graft.ones(3) }):state_dict()))
    assert.are.same(k.bce_pos_weight, keys_of(nn.BCEWithLogitsLoss({ pos_weight = graft.ones(3) }):state_dict()))
    assert.are.same({}, keys_of(nn.CrossEntropyLoss():state_dict()))
  end)
  it("gives version 2 to BatchNorm and 1 to LayerNorm and GroupNorm", function()
    for _, c in ipairs({ { "layernorm_meta", nn.LayerNorm(3) }, { "groupnorm_meta", nn.GroupNorm(1, 3) },
      { "bn1d_meta", nn.BatchNorm1d(3) } }) do
      local meta = c[2]:state_dict():metadata()
      for _, kv in ipairs(k[c[1]]) do assert.are.equal(kv[2], meta[kv[1]].version, c[1]) end
    end
  end)
end)

-- graft constructors for the parity cases.
local layer_ctors = {
  linear = function() return nn.Linear(5, 3) end,
  linear_3d = function() return nn.Linear(5, 3, { bias = false }) end,
  bilinear = function() return nn.Bilinear(3, 4, 2) end,
  conv1d = function() return nn.Conv1d(2, 4, 3, { stride = 2, padding = 1 }) end,
  conv2d = function() return nn.Conv2d(3, 4, 3, { padding = 1 }) end,
  conv2d_strided = function()
    return nn.Conv2d(4, 4, { 3, 2 }, { stride = { 2, 1 }, padding = { 1, 0 }, dilation = { 1, 2 }, groups = 2, bias = false })
  end,
  conv2d_depthwise_same = function() return nn.Conv2d(3, 3, 3, { padding = "same", groups = 3 }) end,
  conv_transpose2d = function() return nn.ConvTranspose2d(3, 2, 3, { stride = 2, padding = 1, output_padding = 1 }) end,
  batchnorm2d_train = function() return nn.BatchNorm2d(3) end,
  batchnorm2d_eval = function() return nn.BatchNorm2d(3) end,
  batchnorm1d_train = function() return nn.BatchNorm1d(4) end,
  batchnorm1d_3d = function() return nn.BatchNorm1d(4, { affine = false }) end,
  layernorm = function() return nn.LayerNorm(5) end,
  groupnorm = function() return nn.GroupNorm(2, 4) end,
  embedding = function() return nn.Embedding(6, 3, { padding_idx = 1 }) end,
  relu = function() return nn.ReLU() end,
  relu6 = function() return nn.ReLU6() end,
  leaky_relu = function() return nn.LeakyReLU(0.2) end,
  elu = function() return nn.ELU(0.5) end,
  gelu = function() return nn.GELU() end,
  gelu_tanh = function() return nn.GELU("tanh") end,
  silu = function() return nn.SiLU() end,
  sigmoid = function() return nn.Sigmoid() end,
  tanh = function() return nn.Tanh() end,
  softmax = function() return nn.Softmax(2) end,
  log_softmax = function() return nn.LogSoftmax(-1) end,
  maxpool = function() return nn.MaxPool2d(3, { stride = 2, padding = 1 }) end,
  avgpool = function() return nn.AvgPool2d(3, { stride = 2, padding = 1, count_include_pad = false }) end,
  adaptive_avgpool = function() return nn.AdaptiveAvgPool2d({ 2, 3 }) end,
  flatten = function() return nn.Flatten() end,
  mha = function() return nn.MultiheadAttention(8, 2) end,
  mha_cross_batch_first = function() return nn.MultiheadAttention(4, 2, { batch_first = true, kdim = 3, vdim = 5 }) end,
  mha_weights = function() return nn.MultiheadAttention(4, 2) end,
  mha_masks = function() return nn.MultiheadAttention(4, 2) end,
  encoder_layer = function() return nn.TransformerEncoderLayer(4, 2, { dim_feedforward = 8 }) end,
  encoder_layer_norm_first_gelu = function()
    return nn.TransformerEncoderLayer(4, 2, { dim_feedforward = 8, activation = "gelu", norm_first = true,
      batch_first = true })
  end,
  encoder = function()
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, { dim_feedforward = 8 }), 2,
      { norm = nn.LayerNorm(4) })
  end,
  cross_entropy = function() return nn.CrossEntropyLoss({ label_smoothing = 0.1 }) end,
  cross_entropy_weight = function() return nn.CrossEntropyLoss({ weight = graft.tensor({ 1.0, 2.0, 0.5 }) }) end,
  nll = function() return nn.NLLLoss({ reduction = "sum" }) end,
  mse = function() return nn.MSELoss() end,
  l1 = function() return nn.L1Loss({ reduction = "sum" }) end,
  smooth_l1 = function() return nn.SmoothL1Loss({ beta = 0.5 }) end,
  bce_logits = function() return nn.BCEWithLogitsLoss({ pos_weight = graft.tensor({ 1.0, 2.0, 3.0, 0.5 }) }) end,
}

local TOL = { rtol = 1e-4, atol = 1e-5 }

describe("nn layers: forward and backward against PyTorch", function()
  for name, case in pairs(fx.layers) do
    it("matches PyTorch for " .. name, function()
      local ctor = assert(layer_ctors[name], "no constructor for " .. name)
      local layer = ctor()
      layer:load_state_dict(state(case.state))
      layer:train(name:find("_train$") ~= nil or name == "batchnorm1d_3d")
      local xs = {}
      for i, x in ipairs(case.inputs) do
        local t = T(x)
        if t:is_floating_point() then t.requires_grad = true end
        xs[i] = t
      end
      local args = xs
      if case.self_attention then args = { xs[1], xs[1], xs[1] } end
      local out, weights
      if name == "mha_masks" then
        out = layer(xs[1], xs[1], xs[1], { key_padding_mask = T(case.key_padding_mask), attn_mask = T(case.attn_mask) })
      else
        out, weights = layer(table.unpack(args))
      end
      if name == "mha_weights" then out = weights end
      assert.tensor_near(out, case.out, TOL)
      local loss = (out * T(case.g)):sum()
      loss:backward()
      for i, g in ipairs(case.input_grads) do
        if g then assert.tensor_near(xs[i].grad, g, TOL) else assert.is_nil(xs[i].grad) end
      end
      local grads = {}
      for n, p in layer:named_parameters() do grads[n] = p.grad end
      for n, g in pairs(case.param_grads) do assert.tensor_near(grads[n], g, TOL) end
      if case.state_after then
        local sd = layer:state_dict()
        for k, v in pairs(case.state_after) do
          assert.tensor_near(sd[k], v, { rtol = 1e-5, atol = 1e-6 })
        end
      end
    end)
  end
end)

describe("nn.BatchNorm2d running statistics", function()
  for name, case in pairs(fx.batchnorm) do
    it("match PyTorch after three train-mode steps (" .. name .. ")", function()
      local momentum = 0.1
      if name == "cumulative" then momentum = false end -- PyTorch's momentum=None
      local bn = nn.BatchNorm2d(3, { momentum = momentum })
      for _, x in ipairs(case.inputs) do bn(T(x)) end
      local sd = bn:state_dict()
      for k, v in pairs(case.state) do assert.tensor_near(sd[k], v, { rtol = 1e-5, atol = 1e-6 }) end
      assert.are.equal(3, sd.num_batches_tracked:item())
    end)
  end

  it("uses the running statistics in eval mode and leaves them alone", function()
    local bn = nn.BatchNorm2d(2)
    bn:eval()
    local x = graft.randn(3, 2, 2, 2)
    local y = bn(x)
    assert.tensor_near(y, x / math.sqrt(1 + 1e-5), { rtol = 1e-6 })
    assert.are.equal(0, bn.num_batches_tracked:item())
  end)

  it("refuses one value per channel in training", function()
    local bn = nn.BatchNorm1d(2)
    H.raises("BatchNorm1d(2): Expected more than 1 value per channel when training, got input size [1, 2]",
      function() bn(graft.randn(1, 2)) end)
    bn:eval()
    assert.are.same({ 1, 2 }, bn(graft.randn(1, 2)):shape())
  end)
end)

describe("nn layers: default initialisation", function()
  before_each(function() graft.manual_seed(7) end)

  it("Linear and Conv2d: kaiming_uniform(a = sqrt(5)) weights, bias in +-1/sqrt(fan_in)", function()
    local l = nn.Linear(400, 300)
    local bound = 1 / math.sqrt(400)
    assert.is_true(l.weight:abs():max():item() <= bound)
    assert.is_true(l.weight:abs():max():item() > 0.99 * bound)
    -- uniform(-b, b) has standard deviation b / sqrt(3)
    assert.is_true(math.abs(l.weight:std():item() - bound / math.sqrt(3)) < 0.01 * bound)
    assert.is_true(l.bias:abs():max():item() <= bound)
    local c = nn.Conv2d(16, 32, 3)
    local cb = 1 / math.sqrt(16 * 9)
    assert.is_true(c.weight:abs():max():item() <= cb and c.weight:abs():max():item() > 0.95 * cb)
    assert.is_true(c.bias:abs():max():item() <= cb)
    local t = nn.ConvTranspose2d(16, 8, 3)
    local tb = 1 / math.sqrt(8 * 9) -- fan_in of [in, out, k, k] weights is out * k * k
    assert.is_true(t.weight:abs():max():item() <= tb and t.weight:abs():max():item() > 0.95 * tb)
  end)

  it("BatchNorm, LayerNorm, GroupNorm: weight 1, bias 0, running stats 0 and 1", function()
    local bn = nn.BatchNorm2d(4)
    assert.are.same({ 1, 1, 1, 1 }, bn.weight:tolist())
    assert.are.same({ 0, 0, 0, 0 }, bn.bias:tolist())
    assert.are.same({ 0, 0, 0, 0 }, bn.running_mean:tolist())
    assert.are.same({ 1, 1, 1, 1 }, bn.running_var:tolist())
    assert.are.equal("int64", bn.num_batches_tracked:dtype())
    assert.are.equal(0, bn.num_batches_tracked:dim())
    assert.are.same({ 1, 1, 1 }, nn.LayerNorm(3).weight:tolist())
    assert.are.same({ 0, 0 }, nn.GroupNorm(1, 2).bias:tolist())
  end)

  it("Embedding: N(0, 1) with the padding row zero", function()
    local e = nn.Embedding(200, 50, { padding_idx = 3 })
    assert.is_true(math.abs(e.weight:std():item() - 1) < 0.05)
    assert.are.same({ 0, 0, 0 }, e.weight[4]:narrow(1, 1, 3):tolist())
  end)

  it("MultiheadAttention: xavier_uniform in_proj_weight, zero biases", function()
    local m = nn.MultiheadAttention(64, 4)
    local b = math.sqrt(6 / (64 + 192))
    assert.is_true(m.in_proj_weight:abs():max():item() <= b)
    assert.are.equal(0, m.in_proj_bias:abs():sum():item())
    assert.are.equal(0, m.out_proj.bias:abs():sum():item())
  end)

  it("parameters require grad and are leaves", function()
    local l = nn.Linear(2, 2)
    assert.is_true(l.weight.requires_grad and l.weight.is_leaf)
    assert.is_true(nn.is_parameter(l.bias))
  end)

  it("{dtype = 'float64'} builds float64 parameters and buffers", function()
    local bn = nn.BatchNorm1d(3, { dtype = "float64" })
    assert.are.equal("float64", bn.weight:dtype())
    assert.are.equal("float64", bn.running_var:dtype())
    assert.are.equal("int64", bn.num_batches_tracked:dtype())
    assert.are.equal("float64", nn.Conv2d(1, 1, 1, { dtype = "float64" }).bias:dtype())
  end)
end)

describe("graft.nn.init", function()
  local init = nn.init
  before_each(function() graft.manual_seed(11) end)

  it("calculate_gain matches PyTorch", function()
    assert.are.equal(1, init.calculate_gain("linear"))
    assert.are.equal(1, init.calculate_gain("conv2d"))
    assert.are.equal(1, init.calculate_gain("sigmoid"))
    assert.near(5 / 3, init.calculate_gain("tanh"), 1e-12)
    assert.near(math.sqrt(2), init.calculate_gain("relu"), 1e-12)
    assert.near(math.sqrt(2 / (1 + 0.01 ^ 2)), init.calculate_gain("leaky_relu"), 1e-12)
    assert.near(math.sqrt(2 / 1.04), init.calculate_gain("leaky_relu", 0.2), 1e-12)
    assert.near(0.75, init.calculate_gain("selu"), 1e-12)
    H.raises("Unsupported nonlinearity softplus", init.calculate_gain, "softplus")
    H.raises("negative_slope true not a valid number", init.calculate_gain, "leaky_relu", true)
  end)

  it("computes fans as PyTorch", function()
    local fi, fo = init.calculate_fan_in_and_fan_out(graft.empty(8, 4, 3, 3))
    assert.are.same({ 36, 72 }, { fi, fo })
    H.raises("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions",
      init.calculate_fan_in_and_fan_out, graft.empty(5))
    H.raises("Mode fan_avg not supported, please use one of fan_in, fan_out",
      init.kaiming_uniform_, graft.empty(3, 3), { mode = "fan_avg" })
  end)

  it("draws from the documented distributions", function()
    local w = graft.empty(256, 512)
    init.kaiming_normal_(w, { mode = "fan_out", nonlinearity = "relu" })
    assert.near(math.sqrt(2 / 256), w:std():item(), 0.02 * math.sqrt(2 / 256))
    init.kaiming_uniform_(w)
    local b = math.sqrt(3) * math.sqrt(2) / math.sqrt(512)
    assert.is_true(w:abs():max():item() <= b and w:abs():max():item() > 0.99 * b)
    init.xavier_uniform_(w, 2)
    local xb = 2 * math.sqrt(6 / (256 + 512))
    assert.is_true(w:abs():max():item() <= xb and w:abs():max():item() > 0.99 * xb)
    init.xavier_normal_(w)
    assert.near(math.sqrt(2 / 768), w:std():item(), 0.02 * math.sqrt(2 / 768))
    init.uniform_(w, -3, -2)
    assert.is_true(w:min():item() >= -3 and w:max():item() <= -2)
    init.normal_(w, 5, 0.5)
    assert.near(5, w:mean():item(), 0.01)
    assert.near(0.5, w:std():item(), 0.01)
    init.constant_(w, 0.25)
    assert.are.equal(0.25, w:min():item())
    init.ones_(w)
    assert.are.equal(1, w:max():item())
    init.zeros_(w)
    assert.are.equal(0, w:abs():max():item())
  end)

  it("trunc_normal_ stays within [a, b], also deep in a tail", function()
    local t = graft.empty(20000)
    init.trunc_normal_(t, { std = 0.02 })
    assert.near(0.02, t:std():item(), 0.001)
    init.trunc_normal_(t, { mean = 0, std = 1, a = -0.5, b = 0.5 })
    assert.is_true(t:min():item() >= -0.5 and t:max():item() <= 0.5)
    init.trunc_normal_(t, { mean = 0, std = 1, a = 5, b = 6 })
    assert.is_true(t:min():item() >= 5 and t:max():item() <= 6)
    -- the mean of N(0, 1) truncated to [5, 6] is about 5.18
    assert.near(5.18, t:mean():item(), 0.03)
  end)

  it("orthogonal_ gives orthonormal rows or columns", function()
    local w = graft.empty(30, 12)
    init.orthogonal_(w)
    assert.tensor_near(w:t():matmul(w), graft.eye(12), { atol = 1e-5, rtol = 0 })
    local v = graft.empty(6, 2, 5) -- rows 6, cols 10: orthonormal rows
    init.orthogonal_(v, 3)
    local m = v:reshape(6, 10)
    assert.tensor_near(m:matmul(m:t()), graft.eye(6) * 9, { atol = 1e-4, rtol = 0 })
    H.raises("Only tensors with 2 or more dimensions are supported", init.orthogonal_, graft.empty(3))
  end)

  it("works on parameters that require grad (under no_grad) and returns the tensor", function()
    local l = nn.Linear(3, 3)
    assert.are.equal(l.weight, init.zeros_(l.weight))
    assert.is_true(l.weight.requires_grad and l.weight.is_leaf)
    assert.is_nil(l.weight.grad_fn)
  end)
end)

describe("nn layers: errors name the layer and the shapes", function()
  it("Conv2d with the wrong channels", function()
    local c = nn.Conv2d(3, 64, 3)
    H.raises("Conv2d(3, 64): expected input with 3 channels, got [8, 1, 28, 28]", function() c(graft.randn(8, 1, 28, 28)) end)
    H.raises("Conv2d(3, 64): expected 3D (unbatched) or 4D (batched) input, got [28, 28]", function() c(graft.randn(28, 28)) end)
  end)

  it("Linear, BatchNorm2d, LayerNorm, Embedding", function()
    H.raises("Linear(4, 3): expected input with 4 features in the last dim, got [2, 5]",
      function() nn.Linear(4, 3)(graft.randn(2, 5)) end)
    H.raises("BatchNorm2d(4): expected 4D input (got 2D input)", function() nn.BatchNorm2d(4)(graft.randn(2, 4)) end)
    H.raises("BatchNorm2d(4): expected input with 4 channels, got [2, 3, 1, 1]",
      function() nn.BatchNorm2d(4)(graft.randn(2, 3, 1, 1)) end)
    H.raises("LayerNorm((5,)): expected input with shape [*, 5], got [2, 4]", function() nn.LayerNorm(5)(graft.randn(2, 4)) end)
    H.raises("Embedding(4, 2): expected an integer index tensor, got float32 [3]",
      function() nn.Embedding(4, 2)(graft.randn(3)) end)
    H.raises("MultiheadAttention(8, 2): expected query with embed_dim 8, got [3, 1, 4]",
      function() nn.MultiheadAttention(8, 2)(graft.randn(3, 1, 4)) end)
  end)

  it("constructor misuse", function()
    H.raises("Conv2d: in_channels must be divisible by groups", nn.Conv2d, 3, 6, 3, { groups = 2 })
    H.raises("padding='same' is not supported for strided convolutions", nn.Conv2d, 3, 6, 3,
      { padding = "same", stride = 2 })
    H.raises("Conv2d: Invalid padding string 'full'", nn.Conv2d, 3, 6, 3, { padding = "full" })
    H.raises("dropout probability has to be between 0 and 1, but got 1.5", nn.Dropout, 1.5)
    H.raises("MultiheadAttention: embed_dim must be divisible by num_heads", nn.MultiheadAttention, 10, 3)
    H.raises("GroupNorm: num_channels must be divisible by num_groups", nn.GroupNorm, 3, 4)
    H.raises("Embedding: Padding_idx must be within num_embeddings", nn.Embedding, 4, 2, { padding_idx = 4 })
    H.raises("Softmax: dims are 1-based", nn.Softmax, 0)
  end)
end)

describe("nn layers: behaviour", function()
  it("Dropout is the identity in eval mode and scales by 1/(1-p) in training", function()
    graft.manual_seed(3)
    local d = nn.Dropout(0.25)
    local x = graft.ones(1000)
    local y = d(x)
    local kept = y:ne(0):sum():item()
    assert.is_true(kept > 650 and kept < 850)
    assert.near(1 / 0.75, y:max():item(), 1e-6)
    d:eval()
    assert.are.equal(x, d(x))
  end)

  it("Flatten keeps the batch dim by default (1-based start_dim = 2)", function()
    assert.are.same({ 2, 12 }, nn.Flatten()(graft.randn(2, 3, 4)):shape())
    assert.are.same({ 24 }, nn.Flatten(1)(graft.randn(2, 3, 4)):shape())
  end)

  it("MaxPool2d returns indices when asked", function()
    local p = nn.MaxPool2d(2, { return_indices = true })
    local y, idx = p(graft.arange(16, { dtype = "float32" }):view(1, 1, 4, 4))
    assert.are.same({ { { { 5, 7 }, { 13, 15 } } } }, y:tolist())
    assert.are.same({ { { { 5, 7 }, { 13, 15 } } } }, idx:tolist())
  end)

  it("Softmax() without a dim follows PyTorch's legacy choice", function()
    local x = graft.randn(2, 3)
    assert.tensor_near(nn.Softmax()(x), F.softmax(x, 2))
    local v = graft.randn(4)
    assert.tensor_near(nn.Softmax()(v), F.softmax(v, 1))
  end)

  it("Conv2d with padding_mode = 'reflect' pads explicitly", function()
    local c = nn.Conv2d(1, 1, 3, { padding = 1, padding_mode = "reflect", bias = false })
    local x = graft.randn(1, 1, 5, 5)
    local ref = F.conv2d(F.pad(x, { 1, 1, 1, 1 }, { mode = "reflect" }), c.weight)
    assert.tensor_near(c(x), ref)
  end)

  it("Embedding.from_pretrained freezes by default", function()
    local w = graft.randn(5, 2)
    local e = nn.Embedding.from_pretrained(w)
    assert.is_false(e.weight.requires_grad)
    assert.tensor_near(e(graft.tensor({ 4, 0 })), graft.stack({ w[5], w[1] }))
    assert.is_true(nn.Embedding.from_pretrained(w, { freeze = false }).weight.requires_grad)
  end)

  it("gradchecks a small conv + batch norm + linear stack in float64", function()
    graft.manual_seed(5)
    local net = nn.Sequential(nn.Conv2d(2, 3, 3, { padding = 1, dtype = "float64" }),
      nn.BatchNorm2d(3, { dtype = "float64" }), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2, { dtype = "float64" }))
    local x = graft.randn(2, 2, 4, 4, { dtype = "float64", requires_grad = true })
    net:eval()
    assert.gradcheck(function(a) return net(a) end, { x })
  end)
end)
