-- Modules on the device: net:to("cuda") / net:cuda() / net:cpu() move every parameter,
-- buffer and gradient (parameters stay parameters, tied ones stay tied), state dicts of a
-- CUDA model hold device tensors and load across devices, and an optimizer built after
-- net:to("cuda") trains on the device as on the CPU. The training and forward specs need
-- the nn ops on CUDA (other areas of the CUDA backend).
local graft = require("graft")
local nn = require("graft.nn")
local optim = require("graft.optim")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")

local function mlp()
  graft.manual_seed(4)
  return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
end

C.describe_no_device("Module:cuda without a device", function()
  it("raises the reason and leaves the module on the CPU", function()
    local net = mlp()
    H.raises("CUDA is not available", function() net:cuda() end)
    H.raises("CUDA is not available", function() net:to("cuda") end)
    assert.are.equal("cpu", net[1].weight:device())
  end)
end)

C.describe("Module:to on cuda", function()
  it("moves parameters, buffers and grads; keeps requires_grad, dtypes and ties", function()
    local net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4))
    net[3].weight = net[1].weight -- tied
    net[1].bias.grad = graft.ones(4)
    net[3].bias.requires_grad = false
    local before = {}
    for k, v in pairs(net:state_dict()) do before[k] = v:clone() end
    assert.are.equal(net, net:to("cuda"))
    for name, p in net:named_parameters() do
      assert.are.equal("cuda:0", p:device(), name)
    end
    for name, b in net:named_buffers() do
      assert.are.equal("cuda:0", b:device(), name)
    end
    assert.are.equal("int64", net[2].num_batches_tracked:dtype())
    assert.is_true(net[1].weight.requires_grad)
    assert.is_false(net[3].bias.requires_grad)
    assert.are.equal(net[1].weight, net[3].weight)
    assert.are.equal("cuda:0", net[1].bias.grad:device())
    C.assert_exact(net[1].bias.grad, graft.ones(4))
    local sd = net:state_dict()
    for k, v in pairs(before) do
      assert.are.equal("cuda:0", sd[k]:device(), k)
      C.assert_exact(sd[k], v)
    end
    net:cpu()
    for k, v in pairs(before) do C.assert_exact(net:state_dict()[k], v) end
    assert.are.equal("cpu", net[1].weight:device())
  end)

  it("cuda(), cuda(0), to{device =, dtype =}, and no-ops on the same device", function()
    local net = mlp()
    local w = net[1].weight
    net:cuda()
    assert.are.equal("cuda:0", net[1].weight:device())
    assert.are_not.equal(w, net[1].weight) -- new objects: build optimizers after moving
    local dw = net[1].weight
    net:cuda(0)
    net:to("cuda:0")
    assert.are.equal(dw, net[1].weight)
    net:to({ device = "cuda", dtype = "float64" })
    assert.are.equal("float64", net[1].weight:dtype())
    assert.are.equal("cuda:0", net[1].weight:device())
    H.raises("cuda:3 does not exist", function() net:to("cuda:3") end)
    H.raises("device index must be an integer", function() net:cuda("0") end)
  end)

  it("state_dict of a CUDA model: device tensors; load_state_dict across devices", function()
    local cpu_net, dev_net = mlp(), mlp():cuda()
    graft.manual_seed(9)
    local src = mlp()
    dev_net:load_state_dict(src:state_dict()) -- CPU values into device parameters
    for k, v in pairs(src:state_dict()) do
      local d = dev_net:state_dict()[k]
      assert.are.equal("cuda:0", d:device())
      C.assert_exact(d, v)
    end
    cpu_net:load_state_dict(dev_net:state_dict()) -- device values into CPU parameters
    for k, v in pairs(src:state_dict()) do C.assert_exact(cpu_net:state_dict()[k]:cuda(), v) end
    local bad = src:state_dict()
    bad["0.weight"] = graft.zeros(2, 2)
    H.raises("size mismatch for 0.weight", function() dev_net:load_state_dict(bad) end)
  end)

  it("a checkpoint of a CUDA model loads into a CPU model and back onto the device", function()
    local net = mlp():cuda()
    local path = os.tmpname() .. ".pth"
    graft.save(net:state_dict(), path)
    local cpu_net = mlp()
    cpu_net:load_state_dict(graft.load(path))
    local dev2 = mlp():cuda()
    dev2:load_state_dict(graft.load(path, { map_location = "cuda" }))
    os.remove(path)
    for k, v in pairs(net:state_dict()) do
      C.assert_exact(v, cpu_net:state_dict()[k])
      C.assert_exact(dev2:state_dict()[k], cpu_net:state_dict()[k])
    end
  end)
end)

-- Needs Linear, ReLU, mse_loss and their backward on CUDA.
C.describe("training on cuda", function()
  local function train(net, opt, x, y, steps)
    for _ = 1, steps do
      opt:zero_grad()
      local loss = nn.functional.mse_loss(net(x), y)
      loss:backward()
      opt:step()
    end
  end

  for _, make in ipairs({
    { "SGD", function(ps) return optim.SGD(ps, { lr = 0.1, momentum = 0.9, nesterov = true }) end },
    { "AdamW", function(ps) return optim.AdamW(ps, { lr = 0.01 }) end },
    { "RMSprop", function(ps) return optim.RMSprop(ps, { lr = 0.01, centered = true }) end },
  }) do
    it(make[1] .. ": an optimizer built after net:to(\"cuda\") follows the CPU run", function()
      graft.manual_seed(21)
      local x, y = graft.randn(16, 5), graft.randn(16, 3)
      local cpu_net, dev_net = mlp(), mlp():to("cuda")
      local oc, od = make[2](cpu_net:parameters()), make[2](dev_net:parameters())
      train(cpu_net, oc, x, y, 5)
      train(dev_net, od, x:cuda(), y:cuda(), 5)
      for k, v in pairs(cpu_net:state_dict()) do
        assert.tensor_near(dev_net:state_dict()[k]:cpu(), v, { rtol = 1e-4, atol = 1e-5 })
      end
      local st = od.state[dev_net[1].weight]
      for key, t in pairs(st) do
        if graft.is_tensor(t) then assert.are.equal(key == "step" and "cpu" or "cuda:0", t:device(), key) end
      end
    end)
  end

  it("resumes from a checkpoint saved on the device", function()
    graft.manual_seed(22)
    local x, y = graft.randn(8, 5):cuda(), graft.randn(8, 3):cuda()
    local net = mlp():cuda()
    local opt = optim.Adam(net:parameters(), { lr = 0.01 })
    train(net, opt, x, y, 3)
    local path = os.tmpname() .. ".pth"
    graft.save({ model = net:state_dict(), optimizer = opt:state_dict() }, path)
    train(net, opt, x, y, 2)
    local ck = graft.load(path) -- on the CPU: the optimizer moves its state onto the device
    os.remove(path)
    local net2 = mlp():cuda()
    net2:load_state_dict(ck.model)
    local opt2 = optim.Adam(net2:parameters(), { lr = 0.01 })
    opt2:load_state_dict(ck.optimizer)
    train(net2, opt2, x, y, 2)
    for k, v in pairs(net:state_dict()) do C.assert_exact(net2:state_dict()[k], v:cpu()) end
  end)
end)
