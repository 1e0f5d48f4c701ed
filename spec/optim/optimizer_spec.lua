-- graft.optim: update rules against PyTorch 1.13 (spec/fixtures/optim.lua, written by
-- spec/fixtures/gen_optim.py), construction and groups, the step rules (skipping
-- parameters without a grad, zero_grad), names, param_groups / layer_decay / describe,
-- every misuse, and graft.nn.utils' gradient clipping.
local graft = require("graft")
local optim = require("graft.optim")
local H = require("spec.helpers")
local P = require("spec.optim.problem")

local fx = P.fx
local has_nn, nn = pcall(require, "graft.nn")

-- A stand-in model: named_parameters over a fixed list (used where graft.nn is not needed).
local function fake_model(list)
  return {
    named_parameters = function()
      local i = 0
      return function()
        i = i + 1
        local e = list[i]
        if e then return e[1], e[2] end
      end
    end,
  }
end

local function param(...)
  local t = graft.randn(...)
  t.requires_grad = true
  return t
end

-- The tensors of a list of {name, p} as plain values, for "did it change" checks.
local function snapshot(t) return t:clone():tobytes() end

describe("graft.optim against PyTorch 1.13 trajectories", function()
  for _, name in ipairs(fx.order) do
    local cfg = fx.configs[name]
    it(name .. ": float32, 20 steps, bit-identical with numerics = \"1.13\"", function()
      local ps = P.params("float32")
      local opt = P.build(cfg, ps, { numerics = "1.13" })
      local fz0 = snapshot(ps.fz)
      P.run(opt, ps, 1, fx.problem.steps, function(s)
        local want = cfg.float32.params[s]
        if want then
          for n, e in pairs(want) do
            local why = P.bits_differ(ps[n], e)
            assert(why == nil, ("%s after step %d: %s"):format(n, s, tostring(why)))
          end
        end
      end)
      assert.are.equal(fz0, snapshot(ps.fz))
      if cfg.class == "Adagrad" then
        assert.are.equal(0, opt.state[ps.fz].step:item()) -- built with the optimizer, never stepped
      else
        assert.is_nil(opt.state[ps.fz])
      end
      for n, count in pairs(cfg.float32.steps) do
        assert.are.equal(count, opt.state[ps[n]].step:item(), n .. " step count")
      end
    end)

    -- The default numerics follow PyTorch 2.x (a lerp for the first moment), which parts
    -- from 1.13 in the last bits from step 2 on; centered RMSprop amplifies that through
    -- sqrt(s - a^2), hence 1e-5 rather than 1e-6 against 1.13's trajectories.
    it(name .. ": float32 with the default (PyTorch 2.x lerp) numerics, within 1e-5", function()
      local ps = P.params("float32")
      local opt = P.build(cfg, ps)
      P.run(opt, ps, 1, fx.problem.steps, function(s)
        local want = cfg.float32.params[s]
        if want then
          for n, e in pairs(want) do assert.tensor_near(ps[n], e, { rtol = 1e-5, atol = 1e-7 }) end
        end
      end)
    end)

    if cfg.float64 then
      it(name .. ": float64 parameters", function()
        local ps = P.params("float64")
        local opt = P.build(cfg, ps, { numerics = "1.13" })
        P.run(opt, ps, 1, fx.problem.steps)
        for n, e in pairs(cfg.float64.params[20]) do assert.tensor_near(ps[n], e, { rtol = 1e-12, atol = 1e-14 }) end
      end)
    end
  end
end)

describe("graft.optim bit-exactness on 1003 elements (vector body and tail)", function()
  local ex = fx.exact
  local function run_case(c, p, t, a, reshape)
    local opt = optim[c.class]({ p }, (function()
      local o = { numerics = "1.13" }
      for k, v in pairs(c.opts) do o[k] = v end
      return o
    end)())
    for s = 1, ex.steps do
      graft.no_grad(function()
        local e = P.exact_noise(ex.n, s)
        if reshape then e = reshape(e) end
        p.grad = (p - t) * a + e
      end)
      opt:step()
    end
  end
  for _, name in ipairs(ex.order) do
    local c = ex.cases[name]
    it(name .. ": contiguous parameter matches PyTorch's bits", function()
      local p0, t, a = P.exact_inputs(ex.n)
      local p = p0:clone()
      p.requires_grad = true
      run_case(c, p, t, a)
      local samples = graft.no_grad(function() return p[{ { 1, ex.n, ex.sample_every } }]:contiguous() end)
      assert.is_nil(P.bits_differ(samples, c.samples))
      assert.are.equal(c.fnv, P.fnv(p))
    end)
    it(name .. ": a transposed (strided) parameter gives the same bits", function()
      local p0, t, a = P.exact_inputs(ex.n)
      local function tr(x) return x:view(17, 59):t() end
      local p = p0:clone():view(17, 59):t()
      p.requires_grad = true
      assert.is_false(p:is_contiguous())
      run_case(c, p, tr(t), tr(a), tr)
      assert.are.equal(c.fnv, P.fnv(p:t():contiguous():view(-1)))
    end)
  end
end)

describe("optimizer construction", function()
  it("fills every group with PyTorch's defaults and keeps per-group overrides", function()
    local a, b = param(2), param(3)
    local opt = optim.SGD({ { params = { a }, lr = 0.5 }, { params = b } }, { lr = 0.1, momentum = 0.9, weight_decay = 1e-4 })
    local g1, g2 = opt.param_groups[1], opt.param_groups[2]
    assert.are.equal(0.5, g1.lr)
    assert.are.equal(0.1, g2.lr)
    for _, g in ipairs({ g1, g2 }) do
      assert.are.equal(0.9, g.momentum)
      assert.are.equal(0, g.dampening)
      assert.are.equal(1e-4, g.weight_decay)
      assert.is_false(g.nesterov)
      assert.is_false(g.maximize)
      assert.are.equal(graft.None, g.foreach)
      assert.is_false(g.differentiable)
    end
    assert.are.same({ a }, g1.params)
  end)

  it("has PyTorch's default hyperparameters for every optimizer", function()
    local p = param(2)
    local adam = optim.Adam({ p }).param_groups[1]
    assert.are.same({ 0.9, 0.999 }, adam.betas)
    assert.are.equal(1e-3, adam.lr)
    assert.are.equal(1e-8, adam.eps)
    assert.are.equal(0, adam.weight_decay)
    assert.is_false(adam.amsgrad)
    assert.is_false(adam.fused)
    assert.are.equal(1e-2, optim.AdamW({ p }).param_groups[1].weight_decay)
    local rms = optim.RMSprop({ p }).param_groups[1]
    assert.are.equal(1e-2, rms.lr)
    assert.are.equal(0.99, rms.alpha)
    assert.is_false(rms.centered)
    local ada = optim.Adagrad({ p }).param_groups[1]
    assert.are.equal(1e-10, ada.eps)
    assert.are.equal(0, ada.initial_accumulator_value)
    assert.are.equal(1e-3, optim.SGD({ p }).param_groups[1].lr)
  end)

  it("reads and writes hyperparameters between steps", function()
    local p = graft.tensor({ 1.0, 2.0 })
    p.requires_grad = true
    local opt = optim.SGD({ p }, { lr = 0.1 })
    p.grad = graft.tensor({ 1.0, 1.0 })
    opt:step()
    assert.tensor_near(p, { 0.9, 1.9 })
    opt.param_groups[1].lr = 1.0
    opt:step()
    assert.tensor_near(p, { -0.1, 0.9 }, { rtol = 1e-6 })
  end)

  it("adds a group after construction, filled from the defaults", function()
    local a, b = param(2), param(2)
    local opt = optim.Adam({ a }, { lr = 0.01, betas = { 0.8, 0.9 } })
    opt:add_param_group({ params = b, eps = 1e-6 })
    assert.are.equal(2, #opt.param_groups)
    local g = opt.param_groups[2]
    assert.are.equal(0.01, g.lr)
    assert.are.same({ 0.8, 0.9 }, g.betas)
    assert.are.equal(1e-6, g.eps)
    b.grad = graft.ones(2)
    opt:step()
    assert.are.equal(1, opt.state[b].step:item())
    assert.is_nil(opt.state[a])
  end)

  it("takes a model, net:named_parameters(), {name, tensor} pairs or a dict, and records names", function()
    local w, b = param(2, 2), param(2)
    local model = fake_model({ { "fc.weight", w }, { "fc.bias", b } })
    for _, src in ipairs({ model, model:named_parameters(), { { "fc.weight", w }, { "fc.bias", b } },
      graft.OrderedDict.from_pairs({ "fc.weight", "fc.bias" }, { w, b }) }) do
      local opt = optim.SGD(src, { lr = 0.1 })
      assert.are.same({ "fc.weight", "fc.bias" }, opt.param_groups[1].param_names)
      assert.are.same({ w, b }, opt.param_groups[1].params)
    end
    assert.is_nil(optim.SGD({ w, b }).param_groups[1].param_names)
  end)

  it("resolves lr_mult and wd_mult of a group against the defaults", function()
    local a, b = param(2), param(2)
    local opt = optim.SGD({ { params = a, lr_mult = 0.1 }, { params = b, wd_mult = 0 } }, { lr = 0.5, weight_decay = 0.2 })
    assert.are.equal(0.05, opt.param_groups[1].lr)
    assert.is_nil(opt.param_groups[1].lr_mult)
    assert.are.equal(0, opt.param_groups[2].weight_decay)
  end)

  it("prints like PyTorch", function()
    local s = tostring(optim.SGD({ param(2) }, { lr = 0.1 }))
    assert.is_truthy(s:find("SGD (\nParameter Group 0\n    dampening: 0\n    differentiable: False\n", 1, true), s)
    assert.is_truthy(s:find("    lr: 0.1\n", 1, true))
  end)
end)

describe("optimizer construction errors", function()
  local p = param(2)
  it("names PyTorch's misuse errors", function()
    H.raises("params argument given to the optimizer should be an iterable of Tensors or dicts, but got torch.FloatTensor",
      optim.SGD, p, { lr = 0.1 })
    H.raises("params argument given to the optimizer should be an iterable of Tensors or dicts, but got torch.DoubleTensor",
      optim.Adam, graft.zeros(2, { dtype = "float64" }))
    H.raises("SGD: optimizer got an empty parameter list", optim.SGD, {}, { lr = 0.1 })
    H.raises("optimizer got an empty parameter list", optim.SGD, fake_model({}))
    H.raises("optimizer can only optimize Tensors, but one of the params is string", optim.SGD, { p, "x" })
    H.raises("can't optimize a non-leaf Tensor", optim.SGD, { p * 2 })
    H.raises("param group must be a dict", function() optim.SGD({ p }):add_param_group(p) end)
    H.raises("param group 2 has no 'params'", function() optim.SGD({ p }):add_param_group({ lr = 1 }) end)
  end)

  it("rejects empty groups", function()
    H.raises("SGD: param group 2 is empty", optim.SGD, { { params = { p } }, { params = {} } })
    H.raises("param group 2 is empty", function() optim.Adam({ p }):add_param_group({ params = {} }) end)
  end)

  it("names a parameter found in two groups, and both groups", function()
    local w, b = param(2), param(2)
    local model = fake_model({ { "fc.weight", w }, { "fc.bias", b } })
    local opt = optim.SGD(model, { lr = 0.1 })
    H.raises('some parameters appear in more than one parameter group: "fc.weight" is in param group 1 and param group 2',
      function() opt:add_param_group({ params = { w } }) end)
    H.raises('some parameters appear in more than one parameter group: "b" is in param group 1 and param group 2',
      optim.SGD, { { params = { { "a", w }, { "b", b } } }, { params = { { "b", b } } } })
    H.raises("param group 1 contains \"x\" twice", optim.SGD, { { "x", w }, { "x", w } })
    H.raises("more than one parameter group: a parameter (position 1) is in param group 1 and param group 2",
      optim.SGD, { { params = { w } }, { params = { w } } })
  end)

  it("validates hyperparameters with PyTorch's messages", function()
    H.raises("SGD: Invalid learning rate: -0.1", optim.SGD, { p }, { lr = -0.1 })
    H.raises("Invalid momentum value: -1", optim.SGD, { p }, { momentum = -1 })
    H.raises("Invalid weight_decay value: -0.5", optim.SGD, { p }, { weight_decay = -0.5 })
    H.raises("Nesterov momentum requires a momentum and zero dampening", optim.SGD, { p }, { nesterov = true })
    H.raises("Nesterov momentum requires a momentum and zero dampening", optim.SGD, { p },
      { nesterov = true, momentum = 0.9, dampening = 0.1 })
    H.raises("Invalid epsilon value: -1e-08", optim.Adam, { p }, { eps = -1e-8 })
    H.raises("Invalid beta parameter at index 0: 1.0", optim.Adam, { p }, { betas = { 1.0, 0.999 } })
    H.raises("Invalid beta parameter at index 1: -0.1", optim.AdamW, { p }, { betas = { 0.9, -0.1 } })
    H.raises("Invalid alpha value: -0.5", optim.RMSprop, { p }, { alpha = -0.5 })
    H.raises("Invalid lr_decay value: -1", optim.Adagrad, { p }, { lr_decay = -1 })
    H.raises("Invalid initial_accumulator_value value: -1", optim.Adagrad, { p }, { initial_accumulator_value = -1 })
    H.raises("Adam: betas must be two numbers {beta1, beta2}, got number", optim.Adam, { p }, { betas = 0.9 })
    H.raises("SGD: lr must be a number, got string", optim.SGD, { p }, { lr = "0.1" })
    H.raises("Invalid learning rate: -1 (param group 2)", optim.SGD, { { params = param(2) }, { params = { p }, lr = -1 } })
  end)

  it("rejects unknown options and bad option values", function()
    H.raises("SGD: unknown option 'momentun'", optim.SGD, { p }, { momentun = 0.9 })
    H.raises('numerics must be "2.x" or "1.13"', optim.Adam, { p }, { numerics = "1.12" })
    H.raises("lr_mult and wd_mult belong in param groups", optim.SGD, { p }, { lr_mult = 2 })
    H.raises("param group 1 gives both lr and lr_mult", optim.SGD, { { params = p, lr = 1, lr_mult = 2 } })
    H.raises("options must be a table", optim.SGD, { p }, 0.1)
  end)

  it("refuses parameters it cannot update (integers; every float dtype is taken)", function()
    local ints = graft.zeros(2, { dtype = "int64" })
    H.raises('SGD: "h" of param group 1 is int64: graft\'s optimizers update floating-point parameters '
      .. "(float32, float64, float16, bfloat16)", optim.SGD, { { "h", ints } })
    for _, dt in ipairs({ "float16", "bfloat16" }) do
      local half = graft.zeros(2, { dtype = dt })
      half.requires_grad = true
      assert.are.equal(dt, optim.SGD({ half }, { lr = 0.1 }).param_groups[1].params[1]:dtype())
    end
  end)
end)

describe("optimizer step", function()
  it("skips a parameter without a grad entirely: no state, no weight decay, no momentum", function()
    local frozen = graft.tensor({ 1.0, -1.0 })
    local live = graft.tensor({ 1.0, -1.0 })
    live.requires_grad = true
    for _, make in ipairs({
      function() return optim.SGD({ frozen, live }, { lr = 0.1, momentum = 0.9, weight_decay = 0.1 }) end,
      function() return optim.AdamW({ frozen, live }, { lr = 0.1, weight_decay = 0.1 }) end,
      function() return optim.RMSprop({ frozen, live }, { weight_decay = 0.1, momentum = 0.5 }) end,
    }) do
      local opt = make()
      local before = snapshot(frozen)
      for _ = 1, 3 do
        live.grad = graft.ones(2)
        opt:step()
      end
      assert.are.equal(before, snapshot(frozen))
      assert.is_nil(opt.state[frozen])
      assert.is_not_nil(opt.state[live])
    end
  end)

  it("zero_grad sets grads to nil by default; {set_to_none = false} zeroes them, and a zero grad still decays", function()
    local p = graft.tensor({ 1.0, 2.0 })
    p.requires_grad = true
    local opt = optim.SGD({ p }, { lr = 0.1, weight_decay = 0.5 })
    p.grad = graft.ones(2)
    opt:zero_grad()
    assert.is_nil(p.grad)
    p.grad = graft.ones(2)
    opt:zero_grad({ set_to_none = false })
    assert.tensor_near(p.grad, { 0.0, 0.0 })
    opt:step()
    assert.tensor_near(p, { 0.95, 1.9 }, { rtol = 1e-6 })
  end)

  it("calls the closure with grad enabled and returns its value", function()
    local p = graft.tensor({ 1.0 })
    p.requires_grad = true
    local opt = optim.SGD({ p }, { lr = 0.5 })
    local loss = graft.no_grad(function()
      return opt:step(function()
        opt:zero_grad()
        local l = (p * p):sum()
        l:backward()
        return l
      end)
    end)
    assert.are.equal(1.0, loss:item())
    assert.tensor_near(p, { 0.0 })
    H.raises("step: closure must be a function", function() opt:step(42) end)
  end)

  it("keeps the parameter identity and bumps its version (autograd sees the change)", function()
    local p = graft.tensor({ 1.0, 2.0 })
    p.requires_grad = true
    local y = (p * p):sum()
    local opt = optim.SGD({ p }, { lr = 0.1 })
    p.grad = graft.ones(2)
    opt:step()
    H.raises("is at version", function() y:backward() end)
  end)

  it("names the parameter when its state does not fit", function()
    local w = param(2, 3)
    local opt = optim.Adam(fake_model({ { "fc.weight", w } }))
    w.grad = graft.ones(2, 3)
    opt:step()
    assert.are.equal(1, opt.state[w].step:item())
    opt.state[w].exp_avg = graft.zeros(6)
    H.raises('Adam: parameter "fc.weight": adam: exp_avg is [6], the parameter is [2, 3]', function() opt:step() end)
    opt.state[w].exp_avg = graft.zeros(2, 3, { dtype = "float64" })
    H.raises("adam: exp_avg is float64, the parameter is float32", function() opt:step() end)
    assert.are.equal(1, opt.state[w].step:item(), "a failed step leaves the step count alone")
    opt.state[w].exp_avg = graft.zeros(2, 3)
    opt.param_groups[1].lr = "fast"
    H.raises("Adam: param_groups[1].lr must be a number, got string", function() opt:step() end)
  end)

  it("Adagrad creates its state when built, as PyTorch", function()
    local p = param(3)
    local opt = optim.Adagrad({ p }, { initial_accumulator_value = 0.5 })
    assert.tensor_near(opt.state[p].sum, { 0.5, 0.5, 0.5 })
    assert.are.equal(0, opt.state[p].step:item())
  end)
end)

describe("groups from a model", function()
  -- a model shaped like a small transformer, as (name, tensor) pairs
  local function named_list()
    local list = {}
    for _, n in ipairs({ "embed.weight", "blocks.0.norm.weight", "blocks.0.norm.bias", "blocks.0.fc.weight",
      "blocks.0.fc.bias", "blocks.1.norm.weight", "blocks.1.norm.bias", "blocks.1.fc.weight", "blocks.1.fc.bias",
      "head.weight", "head.bias" }) do
      local dims = n:find("norm") and { 4 } or (n:find("bias") and { 4 } or { 4, 4 })
      list[#list + 1] = { n, param(table.unpack(dims)) }
    end
    return list
  end

  it("no_decay = \"bias_and_norm\" puts biases and 1-d weights (no module known) in a weight_decay 0 group", function()
    local list = named_list()
    local opt = optim.AdamW(fake_model(list), { lr = 1e-3, weight_decay = 0.05, no_decay = "bias_and_norm" })
    assert.are.equal(2, #opt.param_groups)
    assert.are.same({ "embed.weight", "blocks.0.fc.weight", "blocks.1.fc.weight", "head.weight" },
      opt.param_groups[1].param_names)
    assert.are.equal(0.05, opt.param_groups[1].weight_decay)
    assert.are.equal(0, opt.param_groups[2].weight_decay)
    assert.are.equal(7, #opt.param_groups[2].params)
  end)

  it("no_decay takes a pattern or a list of patterns", function()
    local opt = optim.SGD(fake_model(named_list()), { weight_decay = 0.1, no_decay = "^embed" })
    assert.are.same({ "embed.weight" }, opt.param_groups[2].param_names)
    opt = optim.SGD(fake_model(named_list()), { weight_decay = 0.1, no_decay = { "^head", "norm" } })
    assert.are.equal(6, #opt.param_groups[2].params)
    H.raises('no_decay must be "bias_and_norm", a pattern, a list of patterns or a function', optim.SGD,
      fake_model(named_list()), { no_decay = 3 })
  end)

  it("param_groups: first match wins, overrides and multipliers, frozen parameters kept in their group", function()
    local list = named_list()
    list[1][2].requires_grad = false -- embed frozen
    local groups = optim.param_groups(fake_model(list), {
      { "^head%.", lr_mult = 10 },
      { { "norm", "bias$" }, weight_decay = 0 },
      { function(name) return name:find("^blocks%.1") ~= nil end, lr = 5e-4, momentum = 0.5 },
      { true },
    }, { lr = 1e-3, weight_decay = 0.1, momentum = 0.9 })
    assert.are.equal(4, #groups)
    assert.are.same({ "head.weight", "head.bias" }, groups[1].param_names)
    assert.are.equal(1e-3 * 10, groups[1].lr)
    assert.are.same({ "blocks.0.norm.weight", "blocks.0.norm.bias", "blocks.0.fc.bias", "blocks.1.norm.weight",
      "blocks.1.norm.bias", "blocks.1.fc.bias" }, groups[2].param_names)
    assert.are.equal(0, groups[2].weight_decay)
    assert.are.same({ "blocks.1.fc.weight" }, groups[3].param_names)
    assert.are.equal(0.5, groups[3].momentum)
    -- the frozen embedding is in the catch-all's group, as in a PyTorch list of tensors
    assert.are.same({ "embed.weight", "blocks.0.fc.weight" }, groups[4].param_names)
    local opt = optim.SGD(groups)
    assert.are.equal(0.9, opt.param_groups[4].momentum)
    assert.are.equal(0.1, opt.param_groups[4].weight_decay)
    local text = opt:describe({ print = false })
    assert.is_falsy(text:find("left out", 1, true), text)
    assert.is_truthy(text:find("blocks.*.norm.weight (2)", 1, true), text)
    -- a frozen parameter no rule matches stays out (and describe says so); a trainable
    -- one is an error
    groups = optim.param_groups(fake_model(list), { { "^blocks" }, { "^head" } })
    assert.are.equal(2, #groups)
    text = optim.SGD(groups):describe({ print = false })
    assert.is_truthy(text:find("left out (frozen when the groups were built): 1 tensors, 16 parameters: embed.weight", 1, true), text)
    list[1][2].requires_grad = true
    H.raises('param_groups: 1 trainable parameters match no rule: "embed.weight"', optim.param_groups,
      fake_model(list), { { "^blocks" }, { "^head" } })
  end)

  it("param_groups built while the backbone is frozen: group positions stay, unfreezing trains it", function()
    local nn = require("graft.nn")
    local net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    net:freeze("^0%.")
    local opt = optim.SGD(optim.param_groups(net, { { "^2%.", lr = 0.1 }, { "^0%.", lr = 0.05 } }), { momentum = 0.9 })
    assert.are.equal(2, #opt.param_groups)
    assert.are.same({ "0.weight", "0.bias" }, opt.param_groups[2].param_names)
    local x = graft.randn(5, 3)
    local function step()
      opt:zero_grad()
      net(x):pow(2):sum():backward()
      opt:step()
    end
    local w0 = net[1].weight:clone()
    step()
    assert.tensor_near(net[1].weight, w0, { rtol = 0, atol = 0 }) -- frozen: no grad, skipped
    net:unfreeze("^0%.")
    step()
    -- the first step with a grad: momentum buffer = grad, w = w0 - 0.05 grad
    local g = net[1].weight.grad
    assert.tensor_near(net[1].weight, w0 - g * 0.05, { rtol = 1e-6, atol = 1e-7 })
  end)

  it("param_groups resolves multipliers against the optimizer's defaults when it has no base", function()
    local list = named_list()
    local groups = optim.param_groups(fake_model(list), { { "^head", lr_mult = 2 }, { ".*" } })
    local opt = optim.Adam(groups, { lr = 0.01 })
    assert.are.equal(0.02, opt.param_groups[1].lr)
    assert.are.equal(0.01, opt.param_groups[2].lr)
  end)

  it("param_groups lists the parameters no rule matches", function()
    H.raises('param_groups: 9 trainable parameters match no rule: "embed.weight", "blocks.0.norm.weight"',
      optim.param_groups, fake_model(named_list()), { { "^head" } })
    H.raises("rule 1 has no selector", optim.param_groups, fake_model(named_list()), { { lr = 1 } })
    H.raises("a selector is a Lua pattern, a list of patterns, a module class", optim.param_groups,
      fake_model(named_list()), { { 42 } })
    H.raises("rules must be a list of rule tables", optim.param_groups, fake_model(named_list()), "x")
  end)

  it("param_groups splits each rule's parameters with no_decay", function()
    local groups = optim.param_groups(fake_model(named_list()), { { "^blocks" }, { true, lr_mult = 0.1 } },
      { lr = 1.0, weight_decay = 0.3, no_decay = "bias_and_norm" })
    assert.are.equal(4, #groups)
    assert.are.same({ 0.3, 0, 0.3, 0 }, { groups[1].weight_decay, groups[2].weight_decay, groups[3].weight_decay,
      groups[4].weight_decay })
    assert.are.same({ "head.bias" }, groups[4].param_names)
    assert.are.equal(0.1, groups[4].lr)
  end)

  it("layer_decay gives block i of n base_lr * decay^(n - i)", function()
    local groups = optim.layer_decay(fake_model(named_list()), { "^embed", "^blocks%.0%.", "^blocks%.1%.", "^head" },
      { base_lr = 1e-3, decay = 0.5, weight_decay = 0.05 })
    assert.are.equal(4, #groups)
    local lrs = {}
    for i, g in ipairs(groups) do lrs[i] = g.lr end
    assert.are.same({ 1e-3 * 0.125, 1e-3 * 0.25, 1e-3 * 0.5, 1e-3 }, lrs)
    assert.are.equal(0.05, groups[1].weight_decay)
    H.raises("2 trainable parameters match no block: \"head.weight\", \"head.bias\" (add them to a block)",
      optim.layer_decay, fake_model(named_list()), { "^embed", "^blocks" }, { base_lr = 1, decay = 0.9 })
    H.raises("decay must be a number in (0, 1]", optim.layer_decay, fake_model(named_list()), { "." }, { base_lr = 1, decay = 2 })
    H.raises("blocks must be a non-empty list", optim.layer_decay, fake_model(named_list()), {}, { base_lr = 1, decay = 0.5 })
  end)

  it("describe prints each group's count, names, lr and weight decay, and frozen members", function()
    local list = named_list()
    list[11][2].requires_grad = false
    local opt = optim.SGD(fake_model(list), { lr = 0.1, momentum = 0.9, weight_decay = 1e-4, no_decay = "bias_and_norm" })
    local text = opt:describe({ print = false })
    assert.is_truthy(text:find("SGD: 2 param groups, 11 tensors, 92 parameters", 1, true), text)
    assert.is_truthy(text:find("momentum=0.9", 1, true), text)
    assert.is_truthy(text:find("0.0001", 1, true), text)
    assert.is_truthy(text:find("frozen (in a group, requires_grad off, skipped while they have no grad): head.bias", 1, true), text)
  end)

  if has_nn then
    it("with graft.nn: module-type rules, bias_and_norm by module, names from named_parameters", function()
      local net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2))
      local opt = optim.AdamW(net, { no_decay = "bias_and_norm" })
      assert.are.same({ "0.weight", "3.weight" }, opt.param_groups[1].param_names)
      assert.are.same({ "0.bias", "1.weight", "1.bias", "3.bias" }, opt.param_groups[2].param_names)
      local groups = optim.param_groups(net, { { type = nn.LayerNorm, lr = 0.5 }, { nn.Linear } })
      assert.are.same({ "1.weight", "1.bias" }, groups[1].param_names)
      assert.are.same({ "0.weight", "0.bias", "3.weight", "3.bias" }, groups[2].param_names)
      local x = graft.randn(5, 4)
      local w = net:get_parameter("0.weight")
      local before = w:clone()
      local loss = net(x):pow(2):mean()
      loss:backward()
      opt:step()
      assert.is_false(before:eq(w):all():item())
    end)
  end
end)

describe("graft.nn.utils clipping against PyTorch", function()
  local utils = require("graft.nn.utils")
  local clip = fx.clip
  local function params_with_grads()
    local ps = {}
    for i, g in ipairs(clip.grads) do
      local t = graft.zeros_like(H.T(g))
      ps[i] = t
      t.requires_grad = true
      t.grad = H.T(g):clone()
    end
    return ps
  end
  for i, c in ipairs(clip.norm) do
    it(("clip_grad_norm_ case %d (max_norm %g, norm_type %g) returns the total norm and scales the grads"):format(
      i, c.max_norm, c.norm_type), function()
      local ps = params_with_grads()
      local total = utils.clip_grad_norm_(ps, c.max_norm, { norm_type = c.norm_type })
      assert.tensor_near(total, c.total, { rtol = 1e-6 })
      for j, g in ipairs(c.grads) do assert.tensor_near(ps[j].grad, g, { rtol = 1e-6, atol = 1e-7 }) end
    end)
  end
  it("clip_grad_value_ clamps every grad", function()
    local ps = params_with_grads()
    utils.clip_grad_value_(ps, clip.value.clip_value)
    for j, g in ipairs(clip.value.grads) do assert.tensor_near(ps[j].grad, g) end
  end)
  it("ignores parameters without grads, takes a single tensor or a model", function()
    local p = graft.tensor({ 3.0, 4.0 })
    p.requires_grad = true
    assert.are.equal(0, utils.clip_grad_norm_({ p }, 1.0):item())
    p.grad = graft.tensor({ 3.0, 4.0 })
    assert.are.equal(5, utils.clip_grad_norm_(p, 1.0):item())
    assert.tensor_near(p.grad, { 0.6, 0.8 }, { rtol = 1e-5 })
    p.grad = graft.tensor({ 3.0, 4.0 })
    utils.clip_grad_norm_(fake_model({ { "p", p } }), 10.0)
    assert.tensor_near(p.grad, { 3.0, 4.0 })
  end)
  it("raises on misuse and, when asked, on a non-finite norm", function()
    local p = graft.tensor({ 1.0 })
    p.requires_grad = true
    p.grad = graft.tensor({ math.huge })
    H.raises("The total norm of order 2.0 for gradients from `parameters` is non-finite", utils.clip_grad_norm_, { p }, 1.0,
      { error_if_nonfinite = true })
    H.raises("clip_grad_norm_: max_norm must be a number", utils.clip_grad_norm_, { p }, "1")
    H.raises("clip_grad_norm_: parameters[2] is a string, not a tensor", utils.clip_grad_norm_, { p, "x" }, 1)
    H.raises("clip_grad_value_: clip_value must be a number", utils.clip_grad_value_, { p })
  end)
end)
