-- Resumable training: N steps, graft.save of optim.training_state (model, freeze state,
-- optimizer, scheduler when graft.optim.lr_scheduler exists, epoch, generator), then a
-- NEW process (build/graft or $GRAFT_BIN running a script) restores it and trains M more
-- steps: its parameters must be bitwise those of N + M steps without a stop.
local graft = require("graft")

local N, M = 4, 3

-- The training code both processes run (written to a file, dofile'd by each): a small
-- model (graft.nn when present, else one built from tensors), AdamW with a no-decay
-- group, StepLR when the scheduler module is there, data and dropout drawn from the
-- generator each step, one bias frozen after step 2.
local COMMON = [==[
local graft = require("graft")
local optim = require("graft.optim")
local has_nn, nn = pcall(require, "graft.nn")
local has_sched, S = pcall(require, "graft.optim.lr_scheduler")
local C = { has_sched = has_sched }

local function tensor_model()
  graft.manual_seed(11)
  local ps = { { "fc1.weight", graft.randn(16, 6) * 0.3 }, { "fc1.bias", graft.zeros(16) },
               { "fc2.weight", graft.randn(3, 16) * 0.3 }, { "fc2.bias", graft.zeros(3) } }
  local by = {}
  for _, e in ipairs(ps) do e[2].requires_grad = true; by[e[1]] = e[2] end
  local m = {}
  function m:named_parameters()
    local i = 0
    return function() i = i + 1; local e = ps[i]; if e then return e[1], e[2] end end
  end
  function m:state_dict()
    local sd = graft.OrderedDict()
    for _, e in ipairs(ps) do sd[e[1]] = e[2]:detach() end
    return sd
  end
  function m:load_state_dict(sd)
    graft.no_grad(function() for k, v in pairs(sd) do by[k]:copy_(v) end end)
  end
  function m:forward(x)
    local h = (x:matmul(by["fc1.weight"]:t()) + by["fc1.bias"]):tanh()
    local keep = graft.rand(h:shape()):ge(0.1):float() / 0.9 -- dropout from the generator
    return (h * keep):matmul(by["fc2.weight"]:t()) + by["fc2.bias"]
  end
  return m, function(x) return m:forward(x) end, "fc1.bias"
end

local function nn_model()
  graft.manual_seed(11)
  local net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 3))
  return net, function(x) return net(x) end, "0.bias"
end

function C.build()
  local net, forward, freeze = (has_nn and nn_model or tensor_model)()
  local opt = optim.AdamW(net, { lr = 0.01, weight_decay = 0.1, no_decay = "bias_and_norm" })
  local sched = has_sched and S.StepLR(opt, { step_size = 2, gamma = 0.5 }) or nil
  return { net = net, forward = forward, opt = opt, sched = sched, freeze = freeze }
end

function C.step(m, s)
  if s == 3 then
    for name, p in m.net:named_parameters() do
      if name == m.freeze then p.requires_grad = false end
    end
  end
  local x, y = graft.randn(8, 6), graft.randn(8, 3)
  m.opt:zero_grad()
  local loss = ((m.forward(x) - y) ^ 2):mean()
  loss:backward()
  m.opt:step()
  if m.sched then m.sched:step() end
end

function C.state(m, epoch)
  return optim.training_state({ model = m.net, optimizer = m.opt, scheduler = m.sched, epoch = epoch })
end

function C.restore(m, st)
  optim.load_training_state(st, { model = m.net, optimizer = m.opt, scheduler = m.sched })
  return st.epoch
end

return C
]==]

local CHILD = [==[
local common, ckpt, out, M = arg[1], arg[2], arg[3], tonumber(arg[4])
local graft = require("graft")
if not graft._optim then error("this graft executable predates graft.optim: rebuild it (make)") end
local C = dofile(common)
local m = C.build()
graft.manual_seed(999) -- the restore must bring the generator back
local epoch = C.restore(m, graft.load(ckpt))
local frozen = {}
for name, p in m.net:named_parameters() do
  if not p.requires_grad then frozen[#frozen + 1] = name end
end
for s = epoch + 1, epoch + M do C.step(m, s) end
graft.save({ params = m.net:state_dict(), frozen = frozen, lr = m.opt.param_groups[1].lr }, out)
]==]

local function tmp(ext)
  local p = os.tmpname()
  os.remove(p)
  return p .. ext
end

local function write(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- The command that starts a new graft process: $GRAFT_BIN, build/graft, or stock lua5.4
-- with the module when no executable was built.
local function graft_command()
  local bin = os.getenv("GRAFT_BIN")
  if bin and bin ~= "" then return bin end
  local f = io.open("build/graft", "rb")
  if f then
    f:close()
    return "build/graft"
  end
  return "lua5.4 -e 'package.cpath=\"build/?.so;\"..package.cpath'"
end

describe("resumable training", function()
  it(("N = %d steps, save, restore in a new process, M = %d more: bitwise the run without a stop"):format(N, M), function()
    local common, child, ckpt, out, err = tmp(".lua"), tmp(".lua"), tmp(".pth"), tmp(".pth"), tmp(".txt")
    write(common, COMMON)
    write(child, CHILD)
    local C = dofile(common)

    -- the run without a stop
    local full = C.build()
    graft.manual_seed(5)
    for s = 1, N + M do C.step(full, s) end

    -- the run that stops after N steps
    local part = C.build()
    graft.manual_seed(5)
    for s = 1, N do C.step(part, s) end
    graft.save(C.state(part, N), ckpt)

    local cmd = ("%s %s %s %s %s %d 2> %s"):format(graft_command(), child, common, ckpt, out, M, err)
    local ok = os.execute(cmd)
    local errors = read(err)
    for _, p in ipairs({ common, child, ckpt, err }) do os.remove(p) end
    assert.is_true(ok == true, ("the resumed process failed (%s):\n%s"):format(cmd, errors))
    local res = graft.load(out)
    os.remove(out)

    local n = 0
    for name, p in full.net:named_parameters() do
      local got = res.params[name]
      assert.is_not_nil(got, name)
      assert.are.equal(p:detach():contiguous():tobytes(), got:contiguous():tobytes(), name .. " differs")
      n = n + 1
    end
    assert.is_true(n >= 4)
    assert.are.same({ full.freeze }, res.frozen)
    assert.are.equal(full.opt.param_groups[1].lr, res.lr)
    if not C.has_sched then print("\nnote: graft.optim.lr_scheduler is not there; resumed without a scheduler") end
  end)

  it("training_state records the frozen parameters, the generator and the epoch", function()
    local path = tmp(".lua")
    write(path, COMMON)
    local C = dofile(path)
    os.remove(path)
    local m = C.build()
    for s = 1, 3 do C.step(m, s) end
    local st = C.state(m, 3)
    assert.are.same({ m.freeze }, st.frozen)
    assert.are.equal(3, st.epoch)
    assert.is_true(graft.is_tensor(st.rng))
    assert.is_not_nil(st.optimizer.state)
    local m2 = C.build()
    C.restore(m2, st)
    for name, p in m2.net:named_parameters() do
      assert.are.equal(name ~= m.freeze, p.requires_grad, name)
    end
  end)
end)
