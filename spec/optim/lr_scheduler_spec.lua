-- graft.optim.lr_scheduler against PyTorch 1.13 (spec/fixtures/sched.lua, written by
-- gen_sched.py): lr (and momentum) trajectories to 1e-12 relative, state-dict keys and
-- round trips (graft's own and PyTorch's), step(epoch), warnings, groups added late,
-- preview, and every misuse. Runs on a stand-in optimizer {param_groups = {...}}, and on
-- graft.optim's SGD when that module loads.
local H = require("spec.helpers")
local graft = require("graft")
local S = require("graft.optim.lr_scheduler")

local F = H.fixture("sched")

-- The fixture's named functions (gen_sched.py LAMBDAS / SCALE_FNS).
local LAMBDAS = {
  half_pow = function(e) return 0.5 ^ e end,
  warmup4 = function(e) return math.min(1.0, (e + 1) / 4) end,
  pow095 = function(e) return 0.95 ^ e end,
  const09 = function() return 0.9 end,
  alt = function(e) return e % 2 == 1 and 0.95 or 1.0 end,
  inv_sqrt = function(e) return 1.0 / math.sqrt(e + 1) end,
}
local SCALE_FNS = {
  half_cycle = function(x) return 1 / (2.0 ^ (x - 1)) end,
  decay_iter = function(x) return 0.99 ^ x end,
  inv_cycle = function(x) return 1.0 / x end,
}

local function deepcopy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = deepcopy(x) end
  return out
end

-- A stand-in optimizer with the case's groups (SGD-like, or Adam-like with betas).
local function stand_in(case)
  local groups = deepcopy(case.groups)
  local defaults = case.opt == "Adam" and { lr = 0.1, betas = { 0.9, 0.999 } } or { lr = 0.1, momentum = 0.9 }
  return { param_groups = groups, defaults = defaults }
end

local function build(opt, spec)
  local args = {}
  for k, v in pairs(spec.args or {}) do
    if k == "lr_lambda" then
      if type(v) == "table" then
        local l = {}
        for i, n in ipairs(v) do l[i] = LAMBDAS[n] end
        v = l
      else
        v = LAMBDAS[v]
      end
    elseif k == "scale_fn" then
      v = SCALE_FNS[v]
    elseif k == "schedulers" then
      local l = {}
      for i, s in ipairs(v) do l[i] = build(opt, s) end
      v = l
    end
    args[k] = v
  end
  return S[spec.sched](opt, args)
end

local function decode(list) -- run-length decoding: {value, count} is a run
  local out = {}
  for _, x in ipairs(list) do
    if type(x) == "table" then
      for _ = 1, x[2] do out[#out + 1] = x[1] end
    else
      out[#out + 1] = x
    end
  end
  return out
end

local function mom_of(g) return g.betas and g.betas[1] or g.momentum end

local function close(a, e)
  if a == e then return true end
  return math.abs(a - e) <= 1e-12 * math.abs(e)
end

local function assert_curve(what, got, want)
  assert.are.equal(#want, #got, what .. ": length")
  for k = 1, #want do
    if not close(got[k], want[k]) then
      error(("%s: value %d is %.17g, PyTorch %.17g"):format(what, k, got[k], want[k]), 2)
    end
  end
end

-- Runs a case's ops, recording every group's lr and momentum after each step call.
local function run_case(case, opt, sched, from_op)
  local groups = opt.param_groups
  local lrs, mom = {}, {}
  for i, g in ipairs(groups) do lrs[i], mom[i] = { g.lr }, { mom_of(g) } end
  local function record()
    for i, g in ipairs(groups) do
      lrs[i][#lrs[i] + 1] = g.lr
      mom[i][#mom[i] + 1] = mom_of(g)
    end
  end
  for _, op in ipairs(case.ops or { { "steps", 100 } }) do
    if op[1] == "steps" then
      for _ = 1, op[2] do sched:step() record() end
    elseif op[1] == "epoch" then
      sched:step(op[2]) record()
    elseif op[1] == "frac" then
      for e = 0, op[2] - 1 do
        for i = 0, op[3] - 1 do sched:step(e + i / op[3]) record() end
      end
    elseif op[1] == "scale" then
      for _, g in ipairs(groups) do g.lr = g.lr * op[2] end
    elseif op[1] == "metrics" then
      for k = op[2], op[3] do sched:step(F.metrics[k]) record() end
    end
  end
  return lrs, mom
end

local function quiet(fn) -- runs fn with warnings captured (and returns them)
  local seen, saved_warn, saved = {}, S.warn, S._warned
  S.warn = function(m) seen[#seen + 1] = m end
  S._warned = {}
  local ok, err = pcall(fn)
  S.warn, S._warned = saved_warn, saved
  if not ok then error(err, 0) end
  return seen
end

describe("lr_scheduler parity with PyTorch 1.13", function()
  for _, case in ipairs(F.cases) do
    it(case.name, function()
      quiet(function()
        local opt = stand_in(case)
        local lrs, mom
        if case.sched == "pair" then
          local subs = {}
          for i, s in ipairs(case.args.schedulers) do subs[i] = build(opt, s) end
          lrs = {}
          for i, g in ipairs(opt.param_groups) do lrs[i] = { g.lr } end
          for _ = 1, 100 do
            for _, s in ipairs(subs) do s:step() end
            for i, g in ipairs(opt.param_groups) do lrs[i][#lrs[i] + 1] = g.lr end
          end
          assert.are.equal(case.last_epoch, subs[1].last_epoch)
        else
          local sched = build(opt, case)
          lrs, mom = run_case(case, opt, sched)
          assert.are.equal(case.last_epoch, sched.last_epoch)
          local last = sched:get_last_lr()
          for i, g in ipairs(opt.param_groups) do assert.are.equal(g.lr, last[i]) end
        end
        for g = 1, #case.lrs do assert_curve("group " .. g .. " lr", lrs[g], decode(case.lrs[g])) end
        if case.mom then
          for g = 1, #case.mom do assert_curve("group " .. g .. " momentum", mom[g], decode(case.mom[g])) end
        end
      end)
    end)
  end

  it("is bit-exact, not only within 1e-12 (same libm, same order of operations)", function()
    local n, exact = 0, 0
    quiet(function()
      for _, case in ipairs(F.cases) do
        if case.sched ~= "pair" then
          local opt = stand_in(case)
          local lrs = run_case(case, opt, build(opt, case))
          for g = 1, #case.lrs do
            local want = decode(case.lrs[g])
            for k = 1, #want do
              n = n + 1
              if lrs[g][k] == want[k] then exact = exact + 1 end
            end
          end
        end
      end
    end)
    assert.is_true(n > 7000)
    assert.are.equal(n, exact)
  end)

  it("reproduces the documented tables (pytorch-semantics.md 6.3/6.4)", function()
    local curve = S.preview(function(o) return S.ExponentialLR(o, { gamma = 0.9 }) end, 5)
    assert.are.same({ 0.1, 0.09000000000000001, 0.08100000000000002, 0.07290000000000002,
      0.06561000000000002 }, curve)
    curve = S.preview(function(o) return S.LinearLR(o) end, 6)
    assert.are.same({ 0.03333333333333333, 0.04666666666666667, 0.060000000000000005,
      0.07333333333333335, 0.08666666666666668, 0.1 }, curve)
    curve = S.preview(function(o) return S.OneCycleLR(o, { max_lr = 1, total_steps = 10 }) end, 1)
    assert.are.equal(0.040000000000000036, curve[1])
    local opt = { param_groups = { { lr = 0.1 } } }
    quiet(function()
      local s = S.StepLR(opt, { step_size = 3, gamma = 0.1 })
      s:step(7)
    end)
    assert.are.equal(0.0010000000000000002, opt.param_groups[1].lr)
  end)
end)

describe("lr_scheduler state_dict", function()
  -- graft's keys are PyTorch's, except where PyTorch stores a function: OneCycleLR keeps
  -- the strategy's name (_anneal_func_type, as PyTorch 2.x) instead of anneal_func,
  -- CyclicLR drops the weak method _scale_fn_ref and adds use_beta1 (2.x), and
  -- ReduceLROnPlateau has _last_lr from the start (2.x).
  local ctor = {
    StepLR = { step_size = 3 }, MultiStepLR = { milestones = { 2 } }, ExponentialLR = { gamma = 0.9 },
    CosineAnnealingLR = { T_max = 5 }, CosineAnnealingWarmRestarts = { T_0 = 3 }, LinearLR = {},
    ConstantLR = {}, LambdaLR = { lr_lambda = LAMBDAS.half_pow }, MultiplicativeLR = { lr_lambda = LAMBDAS.const09 },
    PolynomialLR = {}, OneCycleLR = { max_lr = 1.0, total_steps = 10 }, ReduceLROnPlateau = {},
    CyclicLR = { base_lr = 0.1, max_lr = 1.0 },
  }
  local renamed = {
    OneCycleLR = { add = { "_anneal_func_type" }, drop = { "anneal_func" } },
    CyclicLR = { add = { "use_beta1" }, drop = { "_scale_fn_ref" } },
    ReduceLROnPlateau = { add = { "_last_lr" }, drop = {} },
  }
  local function expected_keys(name)
    local keys = {}
    for _, k in ipairs(F.keys[name]) do keys[k] = true end
    local r = renamed[name]
    if r then
      for _, k in ipairs(r.drop) do keys[k] = nil end
      for _, k in ipairs(r.add) do keys[k] = true end
    end
    local out = {}
    for k in pairs(keys) do out[#out + 1] = k end
    table.sort(out)
    return out
  end
  local function keys_of(sd)
    local out = {}
    for k in pairs(sd) do out[#out + 1] = k end
    table.sort(out)
    return out
  end

  for name, args in pairs(ctor) do
    it("has PyTorch's keys: " .. name, function()
      local opt = { param_groups = { { lr = 0.1, momentum = 0.9 }, { lr = 0.01, momentum = 0.9 } } }
      local s = S[name](opt, args)
      assert.are.same(expected_keys(name), keys_of(s:state_dict()))
    end)
  end

  it("has PyTorch's keys: SequentialLR and ChainedScheduler", function()
    local opt = { param_groups = { { lr = 0.1 } } }
    local seq = S.SequentialLR(opt, { schedulers = { S.ConstantLR(opt), S.ExponentialLR(opt, { gamma = 0.9 }) },
      milestones = { 2 } })
    assert.are.same(F.keys.SequentialLR, keys_of(seq:state_dict()))
    local ch = S.ChainedScheduler(opt, { schedulers = { S.ConstantLR(opt), S.ExponentialLR(opt, { gamma = 0.9 }) } })
    assert.are.same(F.keys.ChainedScheduler, keys_of(ch:state_dict()))
    assert.are.equal(2, #ch:state_dict()._schedulers)
  end)

  it("saves no functions; lambdas are None as in PyTorch, callable tables save their fields", function()
    local opt = { param_groups = { { lr = 0.1 }, { lr = 0.2 } } }
    local counter = setmetatable({ scale = 0.5 }, { __call = function(self, e) return self.scale ^ e end })
    local s = S.LambdaLR(opt, { lr_lambda = { LAMBDAS.half_pow, counter } })
    local sd = s:state_dict()
    assert.are.equal(graft.None, sd.lr_lambdas[1])
    assert.are.same({ scale = 0.5 }, sd.lr_lambdas[2])
    sd.lr_lambdas[2].scale = 0.25
    local opt2 = { param_groups = { { lr = 0.1 }, { lr = 0.2 } } }
    local counter2 = setmetatable({ scale = 0.5 }, getmetatable(counter))
    local s2 = S.LambdaLR(opt2, { lr_lambda = { LAMBDAS.half_pow, counter2 } })
    s2:load_state_dict(sd)
    assert.are.equal(0.25, counter2.scale)
    assert.are.equal(LAMBDAS.half_pow, s2.lr_lambdas[1])
    s2:step()
    assert.are.equal(0.2 * 0.25 ^ 1, opt2.param_groups[2].lr)
  end)

  -- Resuming in PyTorch's order: build optimizer and scheduler (the construction step
  -- changes the lr), restore the optimizer (its groups: lr, initial_lr, momentum, ...),
  -- then the scheduler's state; continuing gives the uninterrupted numbers.
  local function resumable(case)
    if case.sched == "pair" or case.args.last_epoch then return false end
    local n = case.ops == nil and 100 or 0
    for _, op in ipairs(case.ops or {}) do
      if op[1] == "steps" then n = n + op[2]
      elseif op[1] == "metrics" then n = n + op[3] - op[2] + 1
      else return false end
    end
    return n > 40
  end

  local function resume_check(case, save_load)
    quiet(function()
      local opt = stand_in(case)
      local sched = build(opt, case)
      local plateau = case.sched == "ReduceLROnPlateau"
      for k = 1, 40 do
        if plateau then sched:step(F.metrics[k]) else sched:step() end
      end
      local saved_groups, sd = deepcopy(opt.param_groups), sched:state_dict()
      if save_load then sd, saved_groups = save_load(sd, saved_groups) end
      -- a fresh run: optimizer, scheduler, optimizer state, scheduler state
      local opt2 = stand_in(case)
      local sched2 = build(opt2, case)
      for i, g in ipairs(saved_groups) do
        for k, v in pairs(g) do opt2.param_groups[i][k] = deepcopy(v) end
      end
      sched2:load_state_dict(sd)
      assert.are.equal(40, sched2.last_epoch or 40)
      local lrs, mom = {}, {}
      for i in ipairs(opt2.param_groups) do lrs[i], mom[i] = {}, {} end
      local n = plateau and case.ops[1][3] or 100
      for k = 41, n do
        if plateau then sched2:step(F.metrics[k]) else sched2:step() end
        for i, g in ipairs(opt2.param_groups) do
          lrs[i][#lrs[i] + 1] = g.lr
          mom[i][#mom[i] + 1] = mom_of(g)
        end
      end
      for g = 1, #case.lrs do
        local want = decode(case.lrs[g])
        assert_curve("group " .. g .. " lr after resuming", lrs[g], { table.unpack(want, 42, n + 1) })
      end
      if case.mom then
        for g = 1, #case.mom do
          local want = decode(case.mom[g])
          assert_curve("group " .. g .. " momentum after resuming", mom[g], { table.unpack(want, 42, n + 1) })
        end
      end
    end)
  end

  for _, case in ipairs(F.cases) do
    if resumable(case) then
      it("round-trips mid-run (save at 40, restore, continue): " .. case.name, function()
        resume_check(case)
      end)
    end
  end

  it("round-trips through graft.save / graft.load (.pth) inside a checkpoint", function()
    local path = os.tmpname() .. ".pth"
    local names = { ["MultiStepLR([2,5,5], 0.1)"] = true, ["OneCycleLR(Adam betas)"] = true,
      ["CyclicLR(scale_fn cycle)"] = true, ["ReduceLROnPlateau(patience 0, cooldown 1)"] = true,
      ["SequentialLR(Linear, Step, Cosine)"] = true, ["ChainedScheduler(Linear, Cosine)"] = true,
      ["LambdaLR([warmup4, pow095])"] = true, ["CosineAnnealingWarmRestarts(10, 2, 1e-4)"] = true }
    local done = 0
    for _, case in ipairs(F.cases) do
      if names[case.name] then
        resume_check(case, function(sd, groups)
          graft.save({ scheduler = sd, param_groups = groups, epoch = 40 }, path)
          local ck = graft.load(path)
          return ck.scheduler, ck.param_groups
        end)
        done = done + 1
      end
    end
    os.remove(path)
    assert.are.equal(8, done)
  end)

  for name, st in pairs(F.torch_states) do
    it("loads PyTorch's own state_dict after 40 steps and continues: " .. name, function()
      local case
      for _, c in ipairs(F.cases) do if c.name == name then case = c end end
      quiet(function()
        local opt = stand_in(case)
        local sched = build(opt, case)
        for i, g in ipairs(st.param_groups) do
          for k, v in pairs(g) do opt.param_groups[i][k] = deepcopy(v) end
        end
        sched:load_state_dict(st.state)
        local plateau = case.sched == "ReduceLROnPlateau"
        local n = plateau and case.ops[1][3] or 100
        local lrs = {}
        for i in ipairs(opt.param_groups) do lrs[i] = {} end
        for k = 41, n do
          if plateau then sched:step(F.metrics[k]) else sched:step() end
          for i, g in ipairs(opt.param_groups) do lrs[i][#lrs[i] + 1] = g.lr end
        end
        for g = 1, #case.lrs do
          assert_curve("group " .. g, lrs[g], { table.unpack(decode(case.lrs[g]), 42, n + 1) })
        end
      end)
    end)
  end

  it("does not touch the optimizer's lr when loading (PyTorch's resume order matters)", function()
    -- optimizer -> optimizer state -> scheduler -> scheduler state: the new scheduler's
    -- initial step scales the restored lr again (the documented wrong order)
    local opt = { param_groups = { { lr = 0.1 } } }
    local s = S.LinearLR(opt)
    for _ = 1, 3 do s:step() end
    local sd, lr = s:state_dict(), opt.param_groups[1].lr
    local opt2 = { param_groups = { { lr = lr, initial_lr = 0.1 } } }
    local s2 = S.LinearLR(opt2)
    s2:load_state_dict(sd)
    assert.are.equal(lr / 3, opt2.param_groups[1].lr)
  end)

  it("load_state_dict checks its argument and the number of sub-schedulers", function()
    local opt = { param_groups = { { lr = 0.1 } } }
    local s = S.StepLR(opt, { step_size = 2 })
    H.raises("StepLR: load_state_dict: expected a table", function() s:load_state_dict(3) end)
    local ch = S.ChainedScheduler(opt, { schedulers = { S.ConstantLR(opt), S.ExponentialLR(opt, { gamma = 0.9 }) } })
    local sd = ch:state_dict()
    sd._schedulers[3] = sd._schedulers[1]
    H.raises("ChainedScheduler: load_state_dict: the state has 3 schedulers, this one 2",
      function() ch:load_state_dict(sd) end)
  end)
end)

describe("lr_scheduler step(epoch), resuming and warnings", function()
  local function sgd_like(lr)
    local opt = { param_groups = { { lr = lr or 0.1, momentum = 0.9 } }, steps = 0 }
    function opt.step(self) self.steps = self.steps + 1 end
    return opt
  end

  it("warns once when step(epoch) is used, not for CosineAnnealingWarmRestarts", function()
    local seen = quiet(function()
      local s = S.StepLR({ param_groups = { { lr = 0.1 } } }, { step_size = 3 })
      s:step(4)
      s:step(5)
    end)
    assert.are.same({ S.WARNINGS.W3 }, seen)
    seen = quiet(function()
      local s = S.CosineAnnealingWarmRestarts({ param_groups = { { lr = 0.1 } } }, { T_0 = 3 })
      s:step(1.5)
    end)
    assert.are.same({}, seen)
  end)

  it("warns when the scheduler steps before the optimizer (W2), not in the right order", function()
    local seen = quiet(function()
      local opt = sgd_like()
      local s = S.ExponentialLR(opt, { gamma = 0.5 })
      s:step()
      s:step()
    end)
    assert.are.same({ S.WARNINGS.W2 }, seen)
    seen = quiet(function()
      local opt = sgd_like()
      local s = S.ExponentialLR(opt, { gamma = 0.5 })
      for _ = 1, 3 do
        opt:step()
        s:step()
      end
      assert.are.equal(3, opt.steps) -- the counting wrapper still calls the real step
      assert.are.equal(0.1 * 0.5 ^ 3, opt.param_groups[1].lr)
    end)
    assert.are.same({}, seen)
  end)

  it("warns when optimizer.step was replaced after construction (W1)", function()
    local seen = quiet(function()
      local opt = sgd_like()
      local s = S.StepLR(opt, { step_size = 2 })
      opt.step = function() end
      opt:step()
      s:step()
    end)
    assert.are.same({ S.WARNINGS.W1 }, seen)
  end)

  it("warns when get_lr() is called from user code (W4)", function()
    local got
    local seen = quiet(function()
      local s = S.ExponentialLR({ param_groups = { { lr = 0.1 } } }, { gamma = 0.5 })
      got = s:get_lr()
    end)
    assert.are.same({ S.WARNINGS.W4 }, seen)
    assert.are.same({ 0.1 }, got) -- the rule at epoch 0, not a new lr
  end)

  it("SequentialLR's internal step(0) does not warn", function()
    local seen = quiet(function()
      local opt = { param_groups = { { lr = 0.1 } } }
      local s = S.SequentialLR(opt, { schedulers = { S.ConstantLR(opt), S.ExponentialLR(opt, { gamma = 0.9 }) },
        milestones = { 2 } })
      for _ = 1, 5 do s:step() end
    end)
    assert.are.same({}, seen)
  end)

  it("needs initial_lr in every group when resuming with last_epoch", function()
    H.raises("ExponentialLR: param 'initial_lr' is not specified in param_groups[2] when resuming an optimizer",
      function()
        S.ExponentialLR({ param_groups = { { lr = 0.1, initial_lr = 0.1 }, { lr = 0.1 } } },
          { gamma = 0.9, last_epoch = 3 })
      end)
    H.raises("StepLR: last_epoch must be an integer >= -1, got -2", function()
      S.StepLR({ param_groups = { { lr = 0.1 } } }, { step_size = 2, last_epoch = -2 })
    end)
  end)

  it("keeps the first scheduler's initial_lr for a second scheduler on the same optimizer", function()
    local opt = { param_groups = { { lr = 0.1 } } }
    S.LinearLR(opt, { start_factor = 0.5 })
    local s2 = S.StepLR(opt, { step_size = 2 })
    assert.are.same({ 0.1 }, s2.base_lrs)
    assert.are.equal(0.05, opt.param_groups[1].lr)
  end)

  it("OneCycleLR tolerates exactly total_steps steps", function()
    local opt = { param_groups = { { lr = 0.1, momentum = 0.9 } } }
    local s = S.OneCycleLR(opt, { max_lr = 1, total_steps = 10 })
    for _ = 1, 10 do s:step() end
    H.raises("OneCycleLR: Tried to step 12 times. The specified number of total steps is 10",
      function() s:step() end)
  end)

  it("ReduceLROnPlateau: does not set initial_lr or change lr; accepts a one-element tensor", function()
    local opt = { param_groups = { { lr = 0.1 } } }
    local s = S.ReduceLROnPlateau(opt, { patience = 0 })
    assert.is_nil(opt.param_groups[1].initial_lr)
    assert.are.same({ 0.1 }, s:get_last_lr())
    s:step(graft.tensor({ 1.0 }))
    s:step(graft.tensor(2.0):reshape({}))
    assert.are.equal(0.1 * 0.1, opt.param_groups[1].lr)
    assert.are.equal(2, s.last_epoch)
    local seen = quiet(function() s:step(3.0, 7) end)
    assert.are.same({ S.WARNINGS.W3 }, seen)
    assert.are.equal(7, s.last_epoch)
  end)

  it("ChainedScheduler also takes the options table alone (PyTorch 1.13's signature)", function()
    local opt = { param_groups = { { lr = 0.1 } } }
    local ch = S.ChainedScheduler({ schedulers = { S.ConstantLR(opt, { factor = 0.1, total_iters = 3 }),
      S.ExponentialLR(opt, { gamma = 0.9 }) } })
    assert.are.equal(opt, ch.optimizer)
    assert.is_true(math.abs(ch:get_last_lr()[1] - 0.01) < 1e-17)
    ch:step()
    assert.is_true(math.abs(ch:get_last_lr()[1] - 0.009) < 1e-17)
  end)
end)

describe("lr_scheduler with param groups added later", function()
  it("a chainable scheduler adopts the group: its lr is the base lr, the rule applies", function()
    local opt = { param_groups = { { lr = 0.1 } } }
    local s = S.ExponentialLR(opt, { gamma = 0.5 })
    s:step()
    s:step()
    opt.param_groups[2] = { lr = 0.8 }
    s:step()
    assert.are.equal(0.8, opt.param_groups[2].initial_lr)
    assert.are.same({ 0.1, 0.8 }, s.base_lrs)
    assert.are.same({ 0.1 * 0.5 * 0.5 * 0.5, 0.8 * 0.5 }, s:get_last_lr())
    s:step(1) -- the closed form uses the new base lr
    assert.are.same({ 0.1 * 0.5, 0.8 * 0.5 }, { opt.param_groups[1].lr, opt.param_groups[2].lr })
  end)

  it("LambdaLR scales the new group's lr by lambda(epoch); a per-group list is an error", function()
    local opt = { param_groups = { { lr = 0.1 } } }
    local s = S.LambdaLR(opt, { lr_lambda = LAMBDAS.half_pow })
    s:step()
    table.insert(opt.param_groups, { lr = 0.4, initial_lr = 0.2 }) -- initial_lr is kept
    s:step()
    assert.are.same({ 0.1 * 0.25, 0.2 * 0.25 }, s:get_last_lr())
    local opt2 = { param_groups = { { lr = 0.1 } } }
    local s2 = S.LambdaLR(opt2, { lr_lambda = { LAMBDAS.half_pow } })
    opt2.param_groups[2] = { lr = 0.1 }
    H.raises("LambdaLR: param group 2 was added after the scheduler was built, but lr_lambda is a list",
      function() s2:step() end)
  end)

  it("OneCycleLR and CyclicLR give the new group the scalar bounds", function()
    local opt = { param_groups = { { lr = 0.1, momentum = 0.9 } } }
    local s = S.OneCycleLR(opt, { max_lr = 1, total_steps = 10 })
    opt.param_groups[2] = { lr = 0.5, momentum = 0.5 }
    s:step()
    local g1, g2 = opt.param_groups[1], opt.param_groups[2]
    assert.are.equal(g1.lr, g2.lr)
    assert.are.equal(g1.momentum, g2.momentum)
    assert.are.equal(0.04, g2.initial_lr)
    local opt2 = { param_groups = { { lr = 0.1, momentum = 0.9 } } }
    local c = S.CyclicLR(opt2, { base_lr = 0.1, max_lr = 1, step_size_up = 2 })
    opt2.param_groups[2] = { lr = 7, momentum = 0.1 }
    c:step()
    assert.are.same({ 0.55, 0.55 }, c:get_last_lr())
    assert.are.equal(opt2.param_groups[1].momentum, opt2.param_groups[2].momentum)
    local opt3 = { param_groups = { { lr = 0.1, momentum = 0.9 } } }
    local c3 = S.CyclicLR(opt3, { base_lr = { 0.1 }, max_lr = 1 })
    opt3.param_groups[2] = { lr = 7, momentum = 0.1 }
    H.raises("CyclicLR: param group 2 was added after the scheduler was built, but base_lr or max_lr was given per group",
      function() c3:step() end)
  end)

  it("ReduceLROnPlateau extends min_lrs; composites hand the group to their schedulers", function()
    local opt = { param_groups = { { lr = 0.1 } } }
    local s = S.ReduceLROnPlateau(opt, { patience = 0, min_lr = 0.015 })
    s:step(1)
    opt.param_groups[2] = { lr = 0.2 }
    s:step(2)
    assert.are.same({ 0.015, 0.015 }, s.min_lrs)
    assert.are.same({ 0.015, 0.2 * 0.1 }, s:get_last_lr())
    local opt2 = { param_groups = { { lr = 0.1 } } }
    local seq = S.SequentialLR(opt2, { schedulers = { S.ConstantLR(opt2, { factor = 0.5, total_iters = 2 }),
      S.ExponentialLR(opt2, { gamma = 0.5 }) }, milestones = { 3 } })
    opt2.param_groups[2] = { lr = 0.4 }
    seq:step() -- e = 1: ConstantLR keeps the lr
    seq:step() -- e = 2: ConstantLR undoes its factor
    assert.are.same({ 0.1, 0.8 }, seq:get_last_lr())
    seq:step() -- e = 3: ExponentialLR's closed form at 0 restarts from the base lrs
    assert.are.same({ 0.1, 0.4 }, seq:get_last_lr())
    seq:step()
    assert.are.same({ 0.05, 0.2 }, seq:get_last_lr())
  end)

  it("removing a group is an error", function()
    local opt = { param_groups = { { lr = 0.1 }, { lr = 0.2 } } }
    local s = S.StepLR(opt, { step_size = 2 })
    opt.param_groups[2] = nil
    H.raises("StepLR: the optimizer has 1 param groups, but the scheduler was built for 2", function() s:step() end)
  end)
end)

describe("lr_scheduler preview", function()
  local function case_named(name)
    for _, c in ipairs(F.cases) do if c.name == name then return c end end
  end

  it("returns the lr of every step, one flat list for one group", function()
    local curve = S.preview(function(o) return S.CosineAnnealingLR(o, { T_max = 5 }) end, 101)
    assert.are.equal(101, #curve)
    assert_curve("preview", curve, decode(case_named("CosineAnnealingLR(5)").lrs[1]))
  end)

  it("returns one list per group, and the momenta", function()
    local c = case_named("OneCycleLR(per group, epochs)")
    local curve, moms = S.preview(function(o) return build(o, c) end, 101, { lrs = { 0.1, 0.01 } })
    assert.are.equal(2, #curve)
    for g = 1, 2 do
      assert_curve("lr", curve[g], decode(c.lrs[g]))
      assert_curve("momentum", moms[g], decode(c.mom[g]))
    end
  end)

  it("ends within OneCycleLR's total_steps; one more is PyTorch's error", function()
    local mk = function(o) return S.OneCycleLR(o, { max_lr = 0.1, total_steps = 50 }) end
    assert.are.equal(50, #S.preview(mk, 50))
    H.raises("Tried to step 52 times", function() S.preview(mk, 52) end)
  end)

  it("runs ReduceLROnPlateau on given metrics (list or function), betas for Adam-like groups", function()
    local c = case_named("ReduceLROnPlateau(patience 2, factor 0.5)")
    local curve = S.preview(function(o) return build(o, c) end, 101, { lrs = { 0.1, 0.01 }, metrics = F.metrics })
    assert_curve("lr", curve[1], decode(c.lrs[1]))
    local curve2 = S.preview(function(o) return build(o, c) end, 101,
      { lrs = { 0.1, 0.01 }, metrics = function(k) return F.metrics[k] end })
    assert.are.same(curve, curve2)
    local a = case_named("OneCycleLR(Adam betas)")
    local lr, moms = S.preview(function(o) return build(o, a) end, 101, { lrs = { 0.1 }, betas = { 0.9, 0.999 } })
    assert_curve("lr", lr, decode(a.lrs[1]))
    assert_curve("beta1", moms, decode(a.mom[1]))
  end)

  it("checks its arguments", function()
    H.raises("preview: make_sched must be a function", function() S.preview(3, 10) end)
    H.raises("preview: make_sched must return a scheduler", function() S.preview(function() return {} end, 10) end)
    H.raises("preview: ReduceLROnPlateau needs opts.metrics",
      function() S.preview(function(o) return S.ReduceLROnPlateau(o) end, 10) end)
    H.raises("preview: steps must be a non-negative integer", function()
      S.preview(function(o) return S.StepLR(o, { step_size = 1 }) end, -1)
    end)
    H.raises("preview: the scheduler must be built on the optimizer passed to make_sched", function()
      S.preview(function() return S.StepLR({ param_groups = { { lr = 1 } } }, { step_size = 1 }) end, 3)
    end)
  end)
end)

describe("lr_scheduler errors", function()
  local function opt1() return { param_groups = { { lr = 0.1, momentum = 0.9 } } } end
  local cases = {
    { "StepLR: expected an optimizer", function() S.StepLR(3, { step_size = 1 }) end },
    { "StepLR: expected an optimizer with param_groups", function() S.StepLR({}, { step_size = 1 }) end },
    { "StepLR: param_groups[1] has no numeric lr", function() S.StepLR({ param_groups = { {} } }, { step_size = 1 }) end },
    { "StepLR: step_size is required", function() S.StepLR(opt1(), {}) end },
    { "StepLR: step_size must be a positive integer, got 0", function() S.StepLR(opt1(), { step_size = 0 }) end },
    { "StepLR: unknown option 'gama'", function() S.StepLR(opt1(), { step_size = 1, gama = 0.5 }) end },
    { "StepLR: gamma must be a number", function() S.StepLR(opt1(), { step_size = 1, gamma = "x" }) end },
    { "StepLR: options must be a table", function() S.StepLR(opt1(), 3) end },
    { "StepLR: step: epoch must be a number", function() S.StepLR(opt1(), { step_size = 1 }):step("x") end },
    { "MultiStepLR: milestones is required", function() S.MultiStepLR(opt1()) end },
    { "MultiStepLR: milestones must be increasing, got 10 after 30",
      function() S.MultiStepLR(opt1(), { milestones = { 30, 10 } }) end },
    { "MultiStepLR: milestones[1] must be a non-negative integer, got 1.5",
      function() S.MultiStepLR(opt1(), { milestones = { 1.5 } }) end },
    { "MultiStepLR: milestones must be a list of integers", function() S.MultiStepLR(opt1(), { milestones = 3 }) end },
    { "ExponentialLR: gamma is required", function() S.ExponentialLR(opt1()) end },
    { "ConstantLR: factor: Constant multiplicative factor expected to be between 0 and 1, got 2",
      function() S.ConstantLR(opt1(), { factor = 2 }) end },
    { "ConstantLR: total_iters must be a non-negative integer", function() S.ConstantLR(opt1(), { total_iters = -1 }) end },
    { "LinearLR: start_factor: Starting multiplicative factor expected to be greater than 0 and less or equal to 1, got 0.0",
      function() S.LinearLR(opt1(), { start_factor = 0.0 }) end },
    { "LinearLR: end_factor: Ending multiplicative factor expected to be between 0 and 1, got 1.5",
      function() S.LinearLR(opt1(), { end_factor = 1.5 }) end },
    { "LinearLR: total_iters must be a positive integer, got 0", function() S.LinearLR(opt1(), { total_iters = 0 }) end },
    { "PolynomialLR: total_iters must be a positive integer", function() S.PolynomialLR(opt1(), { total_iters = 2.5 }) end },
    { "CosineAnnealingLR: T_max is required", function() S.CosineAnnealingLR(opt1()) end },
    { "CosineAnnealingLR: T_max must be positive, got 0", function() S.CosineAnnealingLR(opt1(), { T_max = 0 }) end },
    { "CosineAnnealingWarmRestarts: Expected positive integer T_0, but got 0",
      function() S.CosineAnnealingWarmRestarts(opt1(), { T_0 = 0 }) end },
    { "CosineAnnealingWarmRestarts: Expected positive integer T_0, but got 2.5",
      function() S.CosineAnnealingWarmRestarts(opt1(), { T_0 = 2.5 }) end },
    { "CosineAnnealingWarmRestarts: Expected integer T_mult >= 1, but got 0",
      function() S.CosineAnnealingWarmRestarts(opt1(), { T_0 = 2, T_mult = 0 }) end },
    { "CosineAnnealingWarmRestarts: Expected non-negative epoch, but got -1",
      function() S.CosineAnnealingWarmRestarts(opt1(), { T_0 = 2 }):step(-1) end },
    { "LambdaLR: lr_lambda is required", function() S.LambdaLR(opt1()) end },
    { "LambdaLR: lr_lambda must be a function, got 3", function() S.LambdaLR(opt1(), { lr_lambda = 3 }) end },
    { "LambdaLR: Expected 1 lr_lambdas, but got 2",
      function() S.LambdaLR(opt1(), { lr_lambda = { LAMBDAS.half_pow, LAMBDAS.half_pow } }) end },
    { "LambdaLR: lr_lambda for group 1 returned \"x\" at epoch 0, expected a number",
      function() S.LambdaLR(opt1(), { lr_lambda = function() return "x" end }) end },
    { "MultiplicativeLR: Expected 1 lr_lambdas, but got 0", function() S.MultiplicativeLR(opt1(), { lr_lambda = {} }) end },
    { "OneCycleLR: max_lr is required", function() S.OneCycleLR(opt1(), { total_steps = 10 }) end },
    { "OneCycleLR: You must define either total_steps OR (epochs AND steps_per_epoch)",
      function() S.OneCycleLR(opt1(), { max_lr = 1 }) end },
    { "OneCycleLR: total_steps must be a positive integer, got 0",
      function() S.OneCycleLR(opt1(), { max_lr = 1, total_steps = 0 }) end },
    { "OneCycleLR: epochs must be a positive integer, got nil",
      function() S.OneCycleLR(opt1(), { max_lr = 1, steps_per_epoch = 10 }) end },
    { "OneCycleLR: steps_per_epoch must be a positive integer, got -3",
      function() S.OneCycleLR(opt1(), { max_lr = 1, epochs = 2, steps_per_epoch = -3 }) end },
    { "OneCycleLR: pct_start must be a number between 0 and 1, got 1.5",
      function() S.OneCycleLR(opt1(), { max_lr = 1, total_steps = 10, pct_start = 1.5 }) end },
    { "OneCycleLR: anneal_strategy must be one of 'cos' or 'linear', instead got \"exp\"",
      function() S.OneCycleLR(opt1(), { max_lr = 1, total_steps = 10, anneal_strategy = "exp" }) end },
    { "OneCycleLR: expected 1 values for max_lr, got 2",
      function() S.OneCycleLR(opt1(), { max_lr = { 1, 2 }, total_steps = 10 }) end },
    { "OneCycleLR: optimizer must support momentum with `cycle_momentum` option enabled",
      function() S.OneCycleLR({ param_groups = { { lr = 0.1 } } }, { max_lr = 1, total_steps = 10 }) end },
    { "OneCycleLR: param 'initial_lr' is not specified in param_groups[1]",
      function() S.OneCycleLR(opt1(), { max_lr = 1, total_steps = 10, last_epoch = 3 }) end },
    { "CyclicLR: base_lr is required", function() S.CyclicLR(opt1(), { max_lr = 1 }) end },
    { "CyclicLR: max_lr is required", function() S.CyclicLR(opt1(), { base_lr = 1 }) end },
    { "CyclicLR: mode is invalid and scale_fn is nil",
      function() S.CyclicLR(opt1(), { base_lr = 0.1, max_lr = 1, mode = "square" }) end },
    { "CyclicLR: step_size_up must be positive, got 0",
      function() S.CyclicLR(opt1(), { base_lr = 0.1, max_lr = 1, step_size_up = 0 }) end },
    { "CyclicLR: scale_mode must be one of cycle, iterations, got \"epoch\"",
      function() S.CyclicLR(opt1(), { base_lr = 0.1, max_lr = 1, scale_fn = LAMBDAS.const09, scale_mode = "epoch" }) end },
    { "CyclicLR: optimizer must support momentum with `cycle_momentum` option enabled",
      function() S.CyclicLR({ param_groups = { { lr = 0.1 } } }, { base_lr = 0.1, max_lr = 1 }) end },
    { "ReduceLROnPlateau: Factor should be < 1.0, got 1", function() S.ReduceLROnPlateau(opt1(), { factor = 1 }) end },
    { "ReduceLROnPlateau: expected 1 min_lrs, got 2", function() S.ReduceLROnPlateau(opt1(), { min_lr = { 0, 0 } }) end },
    { "ReduceLROnPlateau: mode \"up\" is unknown!", function() S.ReduceLROnPlateau(opt1(), { mode = "up" }) end },
    { "ReduceLROnPlateau: threshold mode \"pct\" is unknown!",
      function() S.ReduceLROnPlateau(opt1(), { threshold_mode = "pct" }) end },
    { "ReduceLROnPlateau: patience must be a non-negative integer", function() S.ReduceLROnPlateau(opt1(), { patience = -1 }) end },
    { "ReduceLROnPlateau: step: expected the metric (a number), got nothing",
      function() S.ReduceLROnPlateau(opt1()):step() end },
    { "SequentialLR: schedulers is required", function() S.SequentialLR(opt1(), { milestones = {} }) end },
    { "SequentialLR: Sequential Schedulers expects number of schedulers provided to be one more than the number of milestone points, but got number of schedulers 2 and the number of milestones to be equal to 2",
      function()
        local o = opt1()
        S.SequentialLR(o, { schedulers = { S.ConstantLR(o), S.ConstantLR(o) }, milestones = { 1, 2 } })
      end },
    { "SequentialLR: expects all schedulers to belong to the same optimizer",
      function()
        local o = opt1()
        S.SequentialLR(o, { schedulers = { S.ConstantLR(o), S.ConstantLR(opt1()) }, milestones = { 1 } })
      end },
    { "SequentialLR: milestones must be increasing, got 3 after 5",
      function()
        local o = opt1()
        S.SequentialLR(o, { schedulers = { S.ConstantLR(o), S.ConstantLR(o), S.ConstantLR(o) }, milestones = { 5, 3 } })
      end },
    { "SequentialLR: schedulers[2] is a ReduceLROnPlateau",
      function()
        local o = opt1()
        S.SequentialLR(o, { schedulers = { S.ConstantLR(o), S.ReduceLROnPlateau(o) }, milestones = { 1 } })
      end },
    { "SequentialLR: schedulers[1] is not a scheduler", function() S.SequentialLR(opt1(), { schedulers = { 3 }, milestones = {} }) end },
    { "ChainedScheduler: schedulers must be a non-empty list", function() S.ChainedScheduler(opt1(), { schedulers = {} }) end },
    { "ChainedScheduler: expects all schedulers to belong to the same optimizer, but got schedulers at index 1 and 2",
      function() S.ChainedScheduler({ schedulers = { S.ConstantLR(opt1()), S.ConstantLR(opt1()) } }) end },
    { "ChainedScheduler: step takes no epoch",
      function()
        local o = opt1()
        S.ChainedScheduler(o, { schedulers = { S.ConstantLR(o) } }):step(3)
      end },
  }
  for _, c in ipairs(cases) do
    it(c[1], function()
      quiet(function() H.raises(c[1], c[2]) end)
    end)
  end

  it("points the error at the caller's line", function()
    local ok, err = pcall(S.StepLR, { param_groups = { { lr = 1 } } }, {})
    assert.is_false(ok)
    assert.are.equal("StepLR: step_size is required", err) -- called from pcall (C): no position
    local function user()
      local s = S.StepLR({ param_groups = { { lr = 1 } } }, {})
      return s
    end
    ok, err = pcall(user)
    assert.is_truthy(err:find("lr_scheduler_spec.lua:%d+: StepLR: step_size is required"))
  end)
end)

describe("lr_scheduler on graft.optim", function()
  local optim = require("graft.optim")
  it("drives a real SGD's groups (StepLR, OneCycleLR with momentum)", function()
    local w1 = graft.zeros(2)
    w1.requires_grad = true
    local w2 = graft.zeros(2)
    w2.requires_grad = true
    local opt = optim.SGD({ { params = { w1 }, lr = 0.1 }, { params = { w2 }, lr = 0.01 } }, { lr = 0.1, momentum = 0.9 })
    if optim.lr_scheduler ~= nil then assert.are.equal(S, optim.lr_scheduler) end
    local seen = quiet(function()
      local s = S.StepLR(opt, { step_size = 3, gamma = 0.1 })
      for _ = 1, 6 do
        opt:step()
        s:step()
      end
      local case = F.cases[1] -- StepLR(3, 0.1) on lrs 0.1 and 0.01
      assert.are.equal("StepLR(3, 0.1)", case.name)
      assert.are.equal(decode(case.lrs[1])[7], opt.param_groups[1].lr)
      assert.are.equal(decode(case.lrs[2])[7], opt.param_groups[2].lr)
      local opt2 = optim.SGD({ w1 }, { lr = 0.1, momentum = 0.9 })
      local oc = S.OneCycleLR(opt2, { max_lr = 1, total_steps = 10 })
      opt2:step()
      oc:step()
      local want
      for _, c in ipairs(F.cases) do if c.name == "OneCycleLR(1, 10)" then want = c end end
      assert.are.equal(decode(want.lrs[1])[2], opt2.param_groups[1].lr)
      assert.are.equal(decode(want.mom[1])[2], opt2.param_groups[1].momentum)
    end)
    assert.are.same({}, seen)
  end)
end)
