-- Training on the device end to end: the same model, data and optimizer on the CPU and
-- on "cuda" give the same losses step by step and the same weights after the steps
-- (forward, backward through every layer type, optimizer updates, BatchNorm statistics).
local graft = require("graft")
local nn = require("graft.nn")
local models = require("graft.models")
local optim = require("graft.optim")
local F = graft.F
local C = require("spec.helpers.cuda")

-- twin(build): a model and an identical copy moved to the device.
local function twin(build)
  graft.manual_seed(7)
  local a = build()
  local b = build()
  b:load_state_dict(a:state_dict())
  return a, b:to("cuda")
end

local function check_weights(cpu_net, dev_net, tol)
  local sd = cpu_net:state_dict()
  for name, t in pairs(dev_net:state_dict()) do
    C.assert_match(t, sd[name], tol, name)
  end
end

-- Runs `steps` training steps on both sides; returns nothing, asserts as it goes.
local function train_both(build, x, y, make_opt, steps, lossfn, tol)
  local a, b = twin(build)
  a:train()
  b:train()
  local oa, ob = make_opt(a), make_opt(b)
  local xd, yd = C.dev(x), C.dev(y)
  for step = 1, steps do
    oa:zero_grad()
    ob:zero_grad()
    local la, lb = lossfn(a(x), y), lossfn(b(xd), yd)
    C.assert_match(lb, la, tol, "loss at step " .. step)
    la:backward()
    lb:backward()
    oa:step()
    ob:step()
  end
  check_weights(a, b, tol)
  return a, b
end

C.describe("training on cuda", function()
  it("an MLP with SGD momentum and weight decay", function()
    local x, y = graft.randn(16, 20), graft.randint(0, 5, { 16 })
    train_both(function() return models.mlp({ 20, 32, 5 }) end, x, y,
      function(n) return optim.SGD(n:parameters(), { lr = 0.1, momentum = 0.9, weight_decay = 1e-4 }) end,
      3, F.cross_entropy)
  end)

  it("an MLP with AdamW", function()
    local x, y = graft.randn(16, 20), graft.randint(0, 5, { 16 })
    train_both(function() return models.mlp({ 20, 32, 5 }) end, x, y,
      function(n) return optim.AdamW(n:parameters(), { lr = 1e-2, weight_decay = 0.01 }) end,
      3, F.cross_entropy)
  end)

  it("the small CNN (conv, relu, max pool, linear)", function()
    local x, y = graft.randn(2, 1, 28, 28), graft.randint(0, 10, { 2 })
    train_both(function() return models.small_cnn() end, x, y,
      function(n) return optim.SGD(n:parameters(), { lr = 0.05, momentum = 0.9 }) end,
      2, F.cross_entropy, { rtol = 1e-3, atol = 1e-4 })
  end)

  it("resnet18 in train mode (batch norm statistics, residual adds, adaptive pooling)", function()
    -- batch 8: layer4's batch norm sees 8 values per channel (at batch 2 it
    -- normalises two, which amplifies float rounding beyond any tolerance)
    local x, y = graft.randn(8, 3, 32, 32), graft.randint(0, 10, { 8 })
    local a, b = train_both(function() return models.resnet18({ num_classes = 10 }) end, x, y,
      function(n) return optim.SGD(n:parameters(), { lr = 0.01, momentum = 0.9 }) end,
      1, F.cross_entropy, { rtol = 2e-3, atol = 1e-4 })
    a:eval()
    b:eval()
    C.assert_match(b(C.dev(x)), a(x), { rtol = 2e-3, atol = 1e-4 }, "eval forward")
  end)

  -- SGD: Adam would turn float noise in a near-zero gradient into a full-size step
  it("a transformer encoder classifier (embedding, attention, layer norm, gelu)", function()
    local tokens = graft.randint(1, 50, { 2, 8 })
    local y = graft.randint(0, 2, { 2 })
    train_both(function()
      return models.transformer_classifier({ vocab_size = 50, d_model = 32, nhead = 4, num_layers = 1, dropout = 0 })
    end, tokens, y, function(n) return optim.SGD(n:parameters(), { lr = 0.05, momentum = 0.9 }) end,
      2, F.cross_entropy, { rtol = 1e-3, atol = 1e-4 })
  end)

  it("a frozen backbone gets no gradient and stays bit-identical on the device", function()
    local a, b = twin(function() return models.small_cnn() end)
    b:freeze("^[03]%.")                         -- both convolutions
    local before = b:state_dict()["0.weight"]:cpu()
    local opt = optim.SGD(b:parameters(), { lr = 0.1 })
    local loss = F.cross_entropy(b(graft.randn(2, 1, 28, 28):cuda()), graft.tensor({ 1, 2 }):cuda())
    loss:backward()
    opt:step()
    assert.is_nil(b[1].weight.grad)
    assert.tensor_near(b:state_dict()["0.weight"]:cpu(), before, C.EXACT)
    assert.are.equal("cuda:0", b[8].weight.grad:device())
  end)
end)
