-- graft.models against torchvision 0.14 (spec/fixtures/nn_models.lua, written by
-- spec/fixtures/gen_nn.py): state-dict keys, shapes and dtypes of every model,
-- printing, the load error of a mismatched head, and resnet18 / mobilenet_v2 forward
-- and gradients for weights set by a formula both sides compute.
local graft = require("graft")
local nn = require("graft.nn")
local models = require("graft.models")
local H = require("spec.helpers")

local fx = H.fixture("nn_models")

local function key_lines(sd)
  local lines = {}
  for k, v in pairs(sd) do
    lines[#lines + 1] = k .. " " .. table.concat(v:shape(), ",") .. " " .. v:dtype()
  end
  return table.concat(lines, "\n")
end

-- The first differing line of two texts, for a readable failure.
local function first_diff(a, b)
  local la, lb = {}, {}
  for l in (a .. "\n"):gmatch("(.-)\n") do la[#la + 1] = l end
  for l in (b .. "\n"):gmatch("(.-)\n") do lb[#lb + 1] = l end
  for i = 1, math.max(#la, #lb) do
    if la[i] ~= lb[i] then return ("line %d: %s ~= expected %s"):format(i, tostring(la[i]), tostring(lb[i])) end
  end
  return "identical"
end

-- Every state-dict entry from the formula of gen_nn.py's formula_state.
local function formula_state(model)
  graft.no_grad(function()
    local i = 0
    for k, v in pairs(model:state_dict()) do
      i = i + 1
      if k:find("num_batches_tracked$") then
        v:zero_()
      else
        local n = v:numel()
        local s = (graft.arange(n, { dtype = "float64" }) * 12.9898 + i * 78.233):sin() * 43758.5453
        local u = s - s:floor() - 0.5
        local val
        if v:dim() >= 2 then
          val = u * math.sqrt(24.0 / (n // v:size(1)))
        elseif k:find("running_mean$") then
          val = u * 0.2
        elseif k:find("running_var$") then
          val = u * 0.5 + 1.0
        elseif k:find("weight$") then
          val = u * 0.4 + 1.0
        else
          val = u * 0.2
        end
        v:copy_(val:view(v:shape()))
      end
    end
  end)
end

describe("graft.models: torchvision state-dict keys", function()
  for _, name in ipairs({ "resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2", "vgg11_bn" }) do
    it(name .. " has torchvision's keys, order, shapes and dtypes", function()
      local m = models[name]({ init = false })
      local got = key_lines(m:state_dict())
      assert.are.equal(fx.keys[name], got, first_diff(got, fx.keys[name]))
      assert.are.equal(fx.keys[name .. "_n_params"], m:num_parameters())
    end)
  end

  it("num_classes changes the head only", function()
    local m = models.resnet18({ num_classes = 10, init = false })
    local sd = m:state_dict()
    local head = graft.OrderedDict()
    head["fc.weight"] = sd["fc.weight"]
    head["fc.bias"] = sd["fc.bias"]
    assert.are.equal(fx.keys.resnet18_10, key_lines(head))
  end)

  for _, name in ipairs({ "resnet18", "mobilenet_v2", "vgg11_bn" }) do
    it(name .. " prints as torchvision's", function()
      local got = tostring(models[name]({ init = false }))
      assert.are.equal(fx.reprs[name], got, first_diff(got, fx.reprs[name]))
    end)
  end
end)

describe("graft.models: loading", function()
  it("reports a missing head key and a size mismatch in PyTorch's words", function()
    local big = models.resnet18({ init = false }):state_dict()
    big["fc.bias"] = nil
    local ok, err = pcall(function() models.resnet18({ num_classes = 10, init = false }):load_state_dict(big) end)
    assert.is_false(ok)
    assert.are.equal(fx.load_error, (tostring(err):gsub("^[^\n]-:%d+: ", "")))
  end)

  it("loads its own state dict with strict = true, also from a file and through {weights =}", function()
    local src = models.mobilenet_v2({ num_classes = 5, init = false })
    formula_state(src)
    local m = models.mobilenet_v2({ num_classes = 5, weights = src:state_dict() })
    local a, b = src:state_dict(), m:state_dict()
    for k, v in pairs(a) do assert.tensor_near(b[k], v, { rtol = 0, atol = 0 }) end
    local cnn = models.small_cnn()
    local base = os.tmpname()
    local path = base .. ".safetensors"
    graft.save(cnn:state_dict(), path)
    local c2 = models.small_cnn({ weights = path })
    os.remove(path)
    os.remove(base)
    assert.tensor_near(c2[10].bias, cnn[10].bias:detach(), { rtol = 0, atol = 0 })
  end)

  it("replacing the head keeps the backbone keys", function()
    local m = models.resnet18({ init = false })
    m.fc = nn.Linear(512, 10)
    local keys = m:state_dict():keys()
    assert.are.equal("fc.bias", keys[#keys])
    assert.are.equal("fc.weight", keys[#keys - 1])
    assert.are.same({ 10, 512 }, m.fc.weight:shape())
  end)

  it("replacing the stem takes other channel counts (grey-scale resnet18, vgg11_bn, mobilenet_v2)", function()
    local sd = models.resnet18({ num_classes = 10 }):state_dict()
    local net = models.resnet18({ num_classes = 10, init = false })
    net.conv1 = nn.Conv2d(1, 64, 7, { stride = 2, padding = 3, bias = false })
    local report = net:load_pretrained(sd, { on_mismatch = { ["conv1.weight"] = graft.adapt.input_channels(1) } })
    assert.is_truthy(report)
    -- adapt.input_channels(1) sums the RGB filters: a grey image x gives what the RGB
    -- net gives for the image repeated on three channels
    local rgb = models.resnet18({ num_classes = 10, init = false })
    rgb:load_state_dict(sd)
    net:eval()
    rgb:eval()
    local x = graft.randn(2, 1, 32, 32)
    assert.tensor_near(net(x), rgb(x:expand(2, 3, 32, 32)), { rtol = 1e-4, atol = 1e-5 })
    local vgg = models.vgg11_bn({ num_classes = 4, init = false })
    vgg.features[1] = nn.Conv2d(1, 64, 3, { padding = 1 })
    assert.are.same({ 1, 4 }, vgg:eval()(graft.randn(1, 1, 32, 32)):shape())
    local mb = models.mobilenet_v2({ num_classes = 4, init = false })
    mb.features[1][1] = nn.Conv2d(2, 32, 3, { stride = 2, padding = 1, bias = false })
    assert.are.same({ 1, 4 }, mb:eval()(graft.randn(1, 2, 32, 32)):shape())
    -- a wrong channel count is the stem's error, with its path
    H.raises("in conv1 (nn.Conv2d): Conv2d(1, 64): expected input with 1 channels, got [2, 3, 32, 32]", net,
      graft.randn(2, 3, 32, 32))
    H.raises("ResNet: expected images [N, C, H, W], got [3, 32, 32]", net, graft.randn(3, 32, 32))
  end)

  it("refuses options it does not know, instead of building a random model", function()
    H.raises('resnet18: unknown option "pretrained" (graft downloads nothing: weights = "resnet18.pth" loads',
      models.resnet18, { num_classes = 10, pretrained = true })
    H.raises('resnet50: unknown option "in_channels"; the options are num_classes, zero_init_residual, dtype, init, '
      .. "weights, strict", models.resnet50, { in_channels = 1 })
    H.raises('vgg11_bn: unknown option "num_class"', models.vgg11_bn, { num_class = 10 })
    H.raises('mobilenet_v2: unknown option "widthmult"', models.mobilenet_v2, { widthmult = 0.5 })
    H.raises('mlp: unknown option "activations"', models.mlp, { 4, 2 }, { activations = nn.Tanh })
    H.raises('small_cnn: unknown option "channels"', models.small_cnn, { channels = 3 })
    H.raises('transformer_classifier: unknown option "heads"', models.transformer_classifier,
      { vocab_size = 10, heads = 2 })
    assert.are.same({ 2, 3 }, models.small_cnn({ in_channels = 3, num_classes = 3 })(graft.randn(2, 3, 28, 28)):shape())
  end)
end)

-- Tolerances: rtol 1e-4 relative to the largest magnitude of the compared values.
local function close(a, e, rtol, scale)
  return math.abs(a - e) <= rtol * math.max(math.abs(e), scale or 0)
end

-- mode: the fixture entry to compare with; dtype: the model's (default: the entry's).
local function check_parity(name, mode, rtol_logits, rtol_grads, dtype)
  local P = fx.parity[name]
  local exp = P[mode]
  dtype = dtype or exp.dtype
  local m = models[name]({ num_classes = 10, init = false })
  if dtype == "float64" then m:double() end
  formula_state(m)
  m:train(exp.train)
  if name == "mobilenet_v2" then m.classifier[1]:eval() end
  local x = (graft.arange(2 * 3 * 64 * 64, { dtype = "float64" }) * 0.05):cos():view(2, 3, 64, 64)
  if dtype ~= "float64" then x = x:float() end
  local logits = m(x)
  local loss = graft.F.cross_entropy(logits, H.T(P.target))
  loss:backward()
  local el = H.T(exp.logits)
  local lmax = el:abs():max():item()
  assert.tensor_near(logits, exp.logits, { rtol = rtol_logits, atol = rtol_logits * lmax, dtype = false })
  assert.is_true(close(loss:item(), exp.loss, rtol_logits), ("loss %.8g ~= %.8g"):format(loss:item(), exp.loss))
  local gmax = 0
  for _, v in pairs(exp.grad_norms) do gmax = math.max(gmax, v) end
  local n = 0
  for pname, p in m:named_parameters() do
    n = n + 1
    local g = p.grad:double():norm():item()
    local e = exp.grad_norms[pname]
    assert.is_true(close(g, e, rtol_grads, 1e-3 * gmax), ("%s: grad norm %.8g ~= %.8g"):format(pname, g, e))
    local head = H.T(exp.grad_heads[pname])
    local hmax = math.max(head:abs():max():item(), 1e-3 * gmax / math.sqrt(p:numel()))
    assert.tensor_near(p.grad:reshape(-1):narrow(1, 1, head:numel()):double(), head:double(),
      { rtol = rtol_grads, atol = rtol_grads * hmax * 10 })
  end
  assert.are.equal(n, #m:parameters())
  for k, v in pairs(m:state_dict()) do
    local e = exp.stats[k]
    if k:find("num_batches_tracked$") then
      assert.are.equal(e, v:item(), k)
    elseif e then
      assert.is_true(close(v:double():norm():item(), e, 1e-5), k)
    end
  end
end

describe("graft.models: forward and gradients against torchvision", function()
  it("resnet18 in eval mode", function() check_parity("resnet18", "eval", 1e-4, 1e-4) end)
  it("resnet18 in train mode (batch statistics, running-stat update)", function()
    check_parity("resnet18", "train", 1e-4, 1e-4)
  end)
  it("mobilenet_v2 in eval mode", function() check_parity("mobilenet_v2", "eval", 1e-4, 1e-4) end)
  it("mobilenet_v2 in train mode, float64", function() check_parity("mobilenet_v2", "train64", 1e-8, 1e-7) end)
  it("mobilenet_v2 in train mode, float32: as close to the float64 result as PyTorch's float32", function()
    -- on this input PyTorch's own float32 gradients are up to 5e-3 away from its float64
    -- ones (and its logits 2e-4): the two float32 results are compared with the float64
    -- reference rather than with each other
    check_parity("mobilenet_v2", "train64", 3e-4, 1e-2, "float32")
  end)
end)

describe("graft.models: demo models", function()
  it("small_cnn: the Fashion-MNIST CNN", function()
    local m = models.small_cnn()
    assert.are.same({ "0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias" },
      m:state_dict():keys())
    assert.are.same({ 128, 1600 }, m[8].weight:shape())
    local y = m(graft.randn(4, 1, 28, 28))
    assert.are.same({ 4, 10 }, y:shape())
  end)

  it("mlp({784, 256, 10})", function()
    local m = models.mlp({ 784, 256, 10 })
    assert.are.equal("Sequential(\n  (0): Linear(in_features=784, out_features=256, bias=True)\n  (1): ReLU()\n" ..
      "  (2): Linear(in_features=256, out_features=10, bias=True)\n)", tostring(m))
    assert.are.same({ 3, 10 }, m(graft.randn(3, 784)):shape())
    H.raises("mlp: expected a list of at least two layer sizes", models.mlp, { 3 })
  end)

  it("transformer_classifier: token ids to logits, padding ignored", function()
    graft.manual_seed(2)
    local m = models.transformer_classifier({ vocab_size = 50, num_classes = 3, d_model = 16, nhead = 2,
      num_layers = 2, padding_idx = 0, max_len = 12 })
    m:eval()
    local tokens = graft.tensor({ { 5, 6, 7, 0, 0 }, { 1, 2, 3, 4, 9 } })
    local y = m(tokens)
    assert.are.same({ 2, 3 }, y:shape())
    -- padding positions do not change the first sequence's logits
    local y2 = m(graft.tensor({ { 5, 6, 7, 0, 0, 0, 0 }, { 1, 2, 3, 4, 9, 9, 9 } }))
    assert.tensor_near(y2[1], y[1], { rtol = 1e-4, atol = 1e-5 })
    local loss = graft.F.cross_entropy(m(tokens), graft.tensor({ 0, 2 }))
    loss:backward()
    assert.is_not_nil(m.encoder.layers[1].self_attn.in_proj_weight.grad)
    assert.is_not_nil(m.pos.grad)
    H.raises("sequence length 13 exceeds max_len 12", function() m(graft.zeros(1, 13, { dtype = "int64" })) end)
  end)

  it("frozen backbone: only the new head gets gradients", function()
    local m = models.resnet18({ num_classes = 4, init = false })
    formula_state(m)
    m:freeze("^fc%.")
    m:unfreeze("^fc%.")
    m:freeze(function(name) return not name:find("^fc%.") end, { bn_eval = true })
    m:train()
    assert.is_false(m.bn1.training)
    assert.is_true(m.fc.training)
    local loss = graft.F.cross_entropy(m(graft.randn(2, 3, 32, 32)), graft.tensor({ 1, 3 }))
    loss:backward()
    assert.is_nil(m.conv1.weight.grad)
    assert.is_nil(m.layer4[2].bn2.weight.grad)
    assert.is_not_nil(m.fc.weight.grad)
    assert.are.equal(0, m.bn1.num_batches_tracked:item())
  end)
end)
