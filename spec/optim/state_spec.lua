-- Optimizer state dicts: PyTorch's layout, round trips through .pth, loading states that
-- PyTorch 1.13 saved (spec/fixtures/optim/*.pth, from spec/fixtures/gen_optim.py),
-- PyTorch loading graft's (when /usr/bin/python3 has torch), the load checks, and
-- restoring by parameter name.
local graft = require("graft")
local optim = require("graft.optim")
local H = require("spec.helpers")
local P = require("spec.optim.problem")

local fx = P.fx

local function tmpfile(ext)
  local p = os.tmpname()
  os.remove(p)
  return p .. ext
end

local function named(ps) return { { "w1", ps.w1 }, { "b1", ps.b1 }, { "w2", ps.w2 }, { "fz", ps.fz } } end

describe("Optimizer:state_dict", function()
  it("has PyTorch's layout: state by 0-based index across groups, groups with index lists and names", function()
    local cfg = fx.configs.adam_amsgrad
    local ps = P.params()
    local opt = P.build(cfg, ps)
    P.run(opt, ps, 1, 3)
    local sd = opt:state_dict()
    assert.is_true(graft.OrderedDict.is(sd.state))
    assert.are.same({ 0, 1, 2 }, sd.state:keys()) -- fz (index 3) never had a grad
    assert.are.same({ 0, 1 }, sd.param_groups[1].params)
    assert.are.same({ 2, 3 }, sd.param_groups[2].params)
    assert.are.same({ "w1", "b1" }, sd.param_groups[1].param_names)
    assert.are.same({ "w2", "fz" }, sd.param_groups[2].param_names)
    assert.are.equal(0.02, sd.param_groups[2].lr)
    assert.are.same({ 0.9, 0.999 }, sd.param_groups[1].betas)
    assert.is_true(sd.param_groups[1].amsgrad)
    local st = sd.state[0]
    assert.are.equal(opt.state[ps.w1].exp_avg, st.exp_avg) -- references, as PyTorch
    assert.are.equal(3, st.step:item())
    assert.are.equal("float32", st.step:dtype())
    assert.are.equal(0, st.step:dim())
    assert.are.equal(1, sd.state[2].step:item())
    assert.is_not_nil(st.max_exp_avg_sq)
  end)

  it("stores no SGD state without momentum (PyTorch 2.x) and a buffer with it", function()
    local ps = P.params()
    local opt = P.build(fx.configs.sgd, ps)
    P.run(opt, ps, 1, 2)
    assert.are.equal(0, #opt:state_dict().state)
    ps = P.params()
    opt = P.build(fx.configs.sgd_momentum_wd, ps)
    P.run(opt, ps, 1, 2)
    local sd = opt:state_dict()
    assert.are.same({ 0, 1 }, sd.state:keys())
    assert.is_true(graft.is_tensor(sd.state[0].momentum_buffer))
  end)
end)

describe("Optimizer:load_state_dict", function()
  for _, name in ipairs({ "sgd_momentum_wd", "adam_amsgrad", "adamw", "rmsprop_centered_momentum_wd", "adagrad_decay_wd" }) do
    it(name .. ": a .pth round trip resumes bit-identically", function()
      local cfg = fx.configs[name]
      -- the run without a stop
      local ps = P.params()
      local opt = P.build(cfg, ps, { numerics = "1.13" })
      P.run(opt, ps, 1, 12)
      -- stopped after 7 steps, saved, loaded into fresh parameters and a fresh optimizer
      local qs = P.params()
      local o1 = P.build(cfg, qs, { numerics = "1.13" })
      P.run(o1, qs, 1, 7)
      local path = tmpfile(".pth")
      graft.save({ params = { w1 = qs.w1, b1 = qs.b1, w2 = qs.w2, fz = qs.fz }, optimizer = o1:state_dict() }, path)
      local ck = graft.load(path)
      os.remove(path)
      local rs = P.params()
      graft.no_grad(function()
        for n, t in pairs(ck.params) do rs[n]:copy_(t) end
      end)
      local o2 = P.build(cfg, rs, { numerics = "1.13" })
      o2.param_groups[1].lr = 123.0 -- overwritten by the checkpoint's
      local report = o2:load_state_dict(ck.optimizer)
      assert.are.equal(4, #report.restored)
      assert.are.equal(cfg.defaults.lr or 1e-3, o2.param_groups[1].lr)
      P.run(o2, rs, 8, 12)
      for _, n in ipairs({ "w1", "b1", "w2", "fz" }) do
        assert.is_nil(P.bits_differ(rs[n], ps[n]), n)
      end
    end)
  end

  for name, saved in pairs(fx.saved) do
    it(name .. ": loads the state PyTorch 1.13 saved and continues as PyTorch did", function()
      local cfg = fx.configs[name]
      local ck = graft.load("spec/fixtures/optim/" .. name .. ".pth")
      local ps = P.params()
      graft.no_grad(function()
        for n, t in pairs(ck.params) do ps[n]:copy_(t) end
      end)
      local opt = P.build(cfg, ps, { numerics = "1.13" })
      opt:load_state_dict(ck.optimizer)
      P.run(opt, ps, 6, 8)
      for n, e in pairs(saved.after8) do
        assert.is_nil(P.bits_differ(ps[n], e), n)
      end
    end)
  end

  it("takes the checkpoint's hyperparameters, keeps unknown group keys and fills missing defaults", function()
    local ps = P.params()
    local opt = P.build(fx.configs.sgd_momentum_wd, ps)
    P.run(opt, ps, 1, 2)
    local sd = opt:state_dict()
    sd.param_groups[1].initial_lr = 0.1
    sd.param_groups[1].lr = 0.07
    sd.param_groups[2].nesterov = nil
    sd.param_groups[2].foreach = nil
    local ps2 = P.params()
    local opt2 = P.build(fx.configs.sgd_momentum_wd, ps2)
    local g1 = opt2.param_groups[1]
    opt2:load_state_dict(sd)
    assert.are.equal(g1, opt2.param_groups[1], "groups are updated in place")
    assert.are.equal(0.07, g1.lr)
    assert.are.equal(0.1, g1.initial_lr)
    assert.is_false(opt2.param_groups[2].nesterov)
    assert.are.equal(graft.None, opt2.param_groups[2].foreach)
    assert.are.same({ ps2.w1, ps2.b1 }, g1.params)
    -- the loaded state is a copy: stepping one optimizer leaves the other alone
    local before = opt.state[ps.w1].momentum_buffer:clone()
    P.run(opt2, ps2, 3, 3)
    assert.is_true(before:eq(opt.state[ps.w1].momentum_buffer):all():item())
  end)

  it("casts floating state to the parameter's dtype, except step", function()
    local ps = P.params("float32")
    local opt = P.build(fx.configs.adam, ps)
    P.run(opt, ps, 1, 3)
    local ps64 = P.params("float64")
    local opt64 = P.build(fx.configs.adam, ps64)
    opt64:load_state_dict(opt:state_dict())
    assert.are.equal("float64", opt64.state[ps64.w1].exp_avg:dtype())
    assert.are.equal("float32", opt64.state[ps64.w1].step:dtype())
    P.run(opt64, ps64, 4, 4)
    assert.are.equal(4, opt64.state[ps64.w1].step:item())
  end)

  it("names what differs when groups do not match", function()
    local ps = P.params()
    local opt = P.build(fx.configs.sgd_momentum_wd, ps)
    P.run(opt, ps, 1, 3)
    local sd = opt:state_dict()
    local one = optim.SGD(named(P.params()), { lr = 0.1 })
    H.raises("SGD: loaded state dict has a different number of parameter groups (the optimizer has 1, the state dict 2)",
      function() one:load_state_dict(sd) end)
    local qs = P.params()
    local other = optim.SGD({ { params = { { "w1", qs.w1 } } }, { params = { { "b1", qs.b1 }, { "w2", qs.w2 }, { "fz", qs.fz } } } })
    H.raises("loaded state dict contains a parameter group that doesn't match the size of optimizer's group: "
      .. "param group 1 has 1 parameters here and 2 in the state dict; param group 2 has 3 parameters here and 2 in the state dict",
      function() other:load_state_dict(sd) end)
    local rs = P.params()
    local swapped = optim.SGD({ { params = { { "b1", rs.b1 }, { "w1", rs.w1 } } }, { params = { { "w2", rs.w2 }, { "fz", rs.fz } } } })
    H.raises('the parameter names differ from the state dict\'s, so matching by position would give parameters the state of others (pass {match = "name"} to restore by name): param group 1 position 1: "b1" here, "w1" in the state dict',
      function() swapped:load_state_dict(sd) end)
  end)

  it("refuses state that does not fit a parameter's shape, naming it, and changes nothing", function()
    local ps = P.params()
    local opt = P.build(fx.configs.adam, ps)
    P.run(opt, ps, 1, 3)
    local sd = opt:state_dict()
    sd.state[1] = { step = graft.tensor(3.0), exp_avg = graft.zeros(5), exp_avg_sq = graft.zeros(2) }
    local qs = P.params()
    local o2 = P.build(fx.configs.adam, qs)
    H.raises('Adam: load_state_dict: the saved state does not fit parameter "b1" (index 1): exp_avg is [5], the parameter is [2]',
      function() o2:load_state_dict(sd) end)
    assert.is_nil(o2.state[qs.w1])
    assert.are.equal(0.01, o2.param_groups[1].lr)
  end)

  it("rejects things that are not state dicts and bad saved hyperparameters", function()
    local opt = optim.SGD({ P.params().w1 })
    H.raises("load_state_dict: expected a state dict (a table with 'state' and 'param_groups'), got torch.FloatTensor",
      function() opt:load_state_dict(graft.zeros(2)) end)
    H.raises("the state dict has no 'param_groups' list", function() opt:load_state_dict({ state = {} }) end)
    H.raises("the state dict has no 'state' dict", function() opt:load_state_dict({ param_groups = {} }) end)
    H.raises("saved param group 1 has no 'params' list", function() opt:load_state_dict({ state = {}, param_groups = { {} } }) end)
    H.raises('match must be "position" or "name"', function() opt:load_state_dict(opt:state_dict(), { match = "id" }) end)
    local sd = opt:state_dict()
    sd.param_groups[1].lr = -1
    H.raises("SGD: Invalid learning rate: -1 (saved param group for param group 1)", function() opt:load_state_dict(sd) end)
  end)
end)

describe("Optimizer:load_state_dict{match = \"name\"}", function()
  it("restores by name after the model changed, and reports what was reset and unused", function()
    local ps = P.params()
    local opt = P.build(fx.configs.adam_amsgrad, ps)
    P.run(opt, ps, 1, 4)
    local sd = opt:state_dict()
    -- the new model: b1 gone, w1 first in group 2, w2 reshaped, a new parameter "extra"
    local w1, w2, extra, fz = ps.w1:detach():clone(), graft.zeros(1, 3), graft.zeros(4), ps.fz:clone()
    for _, t in ipairs({ w1, w2, extra }) do t.requires_grad = true end
    local o2 = optim.Adam({ { params = { { "extra", extra } }, lr = 0.5 }, { params = { { "w1", w1 }, { "w2", w2 }, { "fz", fz } } } })
    local report = o2:load_state_dict(sd, { match = "name" })
    assert.are.same({ "w1", "fz" }, report.restored) -- fz matched; it had no state to take
    assert.is_nil(o2.state[fz])
    assert.are.same({ "b1" }, report.unused)
    local reset = {}
    for _, e in ipairs(report.reset) do reset[e.name] = e.reason end
    assert.are.equal("not in the state dict", reset.extra)
    assert.are.equal("exp_avg is [3], the parameter is [1, 3]", reset.w2)
    assert.is_true(opt.state[ps.w1].exp_avg:eq(o2.state[w1].exp_avg):all():item())
    assert.are.equal(4, o2.state[w1].step:item())
    assert.is_nil(o2.state[w2])
    assert.is_nil(o2.state[extra])
    -- group 2 took the hyperparameters of w1's saved group (group 1: lr 0.01); group 1 kept its own
    assert.are.equal(0.01, o2.param_groups[2].lr)
    assert.are.equal(0.5, o2.param_groups[1].lr)
    assert.is_truthy(tostring(report):find("reset 2", 1, true))
    w1.grad = graft.ones(3, 2)
    o2:step()
    assert.are.equal(5, o2.state[w1].step:item())
  end)

  it("needs names in the state dict", function()
    local ps = P.params()
    local opt = optim.SGD({ ps.w1, ps.b1 }, { momentum = 0.9 })
    local o2 = optim.SGD(named(P.params()), { momentum = 0.9 })
    H.raises('{match = "name"} needs parameter names, and saved param group 1 has none',
      function() o2:load_state_dict(opt:state_dict(), { match = "name" }) end)
  end)
end)

-- PyTorch loading graft's state: runs /usr/bin/python3 when it has torch.
local PY = "/usr/bin/python3"
local function torch_available()
  local f = io.open(PY, "rb")
  if not f then return false, PY .. " not found" end
  f:close()
  local ok = os.execute(PY .. " -c 'import torch' > /dev/null 2>&1")
  if not ok then return false, "torch does not import in " .. PY end
  return true
end

local PY_SCRIPT = [==[
import sys, struct, torch
path, cls = sys.argv[1], sys.argv[2]
ck = torch.load(path)
ps = {n: t.clone().requires_grad_(n != "fz") for n, t in ck["params"].items()}
opt = getattr(torch.optim, cls)([{"params": [ps["w1"], ps["b1"]]}, {"params": [ps["w2"], ps["fz"]]}], lr=1.0)
opt.load_state_dict(ck["optimizer"])
pb = ck["problem"]
for s in range(ck["next_step"], ck["last_step"] + 1):
    for n, p in ps.items():
        if n == "fz":
            continue
        with torch.no_grad():
            p.grad = (p - pb["target"][n]) * pb["scale"][n] + pb["noise"][(s - 1) % 4][n]
    opt.step()
for n in ["w1", "b1", "w2", "fz"]:
    print(n, " ".join("%08x" % struct.unpack("<I", struct.pack("<f", v))[0] for v in ps[n].detach().reshape(-1).tolist()))
]==]

describe("PyTorch loading graft's optimizer state", function()
  local ok, why = torch_available()
  for _, name in ipairs({ "sgd_momentum_wd", "adam_amsgrad", "adamw", "rmsprop_centered_momentum_wd", "adagrad_decay_wd" }) do
    it(name .. ": torch.optim loads graft's .pth and continues bit-identically", function()
      if not ok then
        print(("\nskipped (PyTorch round trip): %s"):format(why))
        return
      end
      local cfg = fx.configs[name]
      local ps = P.params()
      local opt = P.build(cfg, ps, { numerics = "1.13" })
      P.run(opt, ps, 3, 6) -- w2 has grads from the start here
      local prob = fx.problem
      local problem = { target = {}, scale = {}, noise = {} }
      for _, n in ipairs(prob.names) do
        problem.target[n] = graft.tensor(prob.target[n])
        problem.scale[n] = graft.tensor(prob.scale[n])
      end
      for i = 1, 4 do
        problem.noise[i] = {}
        for _, n in ipairs(prob.names) do problem.noise[i][n] = graft.tensor(prob.noise[i][n]) end
      end
      local path = tmpfile(".pth")
      local script = tmpfile(".py")
      graft.save({ params = { w1 = ps.w1, b1 = ps.b1, w2 = ps.w2, fz = ps.fz }, optimizer = opt:state_dict(),
        problem = problem, next_step = 7, last_step = 9 }, path)
      local f = assert(io.open(script, "w"))
      f:write(PY_SCRIPT)
      f:close()
      local pipe = assert(io.popen(("%s %s %s %s 2>&1"):format(PY, script, path, cfg.class)))
      local out = pipe:read("a")
      pipe:close()
      os.remove(path)
      os.remove(script)
      P.run(opt, ps, 7, 9)
      for _, n in ipairs(prob.names) do
        local hex = {}
        for _, v in ipairs(H.flat(ps[n])) do hex[#hex + 1] = ("%08x"):format(string.unpack("<I4", string.pack("<f", v))) end
        local line = n .. " " .. table.concat(hex, " ")
        assert.is_truthy(out:find(line, 1, true), ("PyTorch printed:\n%s\ngraft has: %s"):format(out, line))
      end
    end)
  end
end)
