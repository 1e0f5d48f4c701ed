-- scripts/common.lua: what the recipes share, kept out of them so each reads as a
-- tutorial: command-line options (`--epochs 3 --lr 0.01 --quick`), the Fashion-MNIST
-- splits, accuracy and the evaluation loop, one training epoch with a progress bar and
-- pause-and-inspect, and small file helpers. A recipe loads it with
--   local R = dofile((arg[0]:match("^(.*)/") or ".") .. "/common.lua")
local graft = graft or require("graft")
local data = require("graft.data")
local progress = require("graft.progress")
local pause = require("graft.pause")
local F = graft.nn.functional

local R = {}

---------------------------------------------------------------------------------------
-- Options

-- R.options(argv, spec) -> args. spec: {usage = "...", {name, default, help [, quick =
-- value]}, ...}. The default's type gives the option's: numbers (`--lr 0.01`,
-- `--lr=0.01`), strings, booleans (`--resume`, `--no-resume`). `--quick` takes every
-- option's quick value that the command line does not set; `--help` prints the options.
-- Names use dashes on the command line and underscores in args (`--freeze-epochs` ->
-- args.freeze_epochs). A mistake prints the usage and exits with status 2.
function R.options(argv, spec)
  local byname, args, given = {}, {}, {}
  local all = { { "quick", false, "a small, fast configuration (seconds; for tests)" } }
  for _, o in ipairs(spec) do all[#all + 1] = o end
  for _, o in ipairs(all) do
    byname[o[1]:gsub("_", "-")] = o
    args[o[1]] = o[2]
  end
  local function usage(msg)
    local lines = { msg and ("error: " .. msg) or nil, "usage: " .. (spec.usage or "graft SCRIPT [options]"), "options:" }
    if not msg then table.remove(lines, 1) end
    for _, o in ipairs(all) do
      local flag = "--" .. o[1]:gsub("_", "-")
      if type(o[2]) ~= "boolean" then flag = flag .. " " .. (type(o[2]) == "number" and "N" or "S") end
      local extra = ""
      if o[2] == true then
        extra = (" (on; --no-%s turns it off)"):format(o[1]:gsub("_", "-"))
      elseif o[2] ~= false and o[2] ~= "" then
        extra = " (default " .. tostring(o[2]) .. (o.quick ~= nil and (", quick " .. tostring(o.quick)) or "") .. ")"
      end
      lines[#lines + 1] = ("  %-22s %s%s"):format(flag, o[3] or "", extra)
    end
    local text = table.concat(lines, "\n") .. "\n"
    if msg then
      io.stderr:write(text)
      os.exit(2)
    end
    io.stdout:write(text)
    os.exit(0)
  end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local name, value = a:match("^%-%-([%w%-_]+)=(.*)$")
    name = name or a:match("^%-%-([%w%-_]+)$")
    if a == "-h" or name == "help" then usage() end
    if not name then usage(("unexpected argument %q"):format(a)) end
    name = name:gsub("_", "-")
    local negated = false
    local o = byname[name]
    if not o and name:sub(1, 3) == "no-" and byname[name:sub(4)] and type(byname[name:sub(4)][2]) == "boolean" then
      o, negated = byname[name:sub(4)], true
    end
    if not o then usage(("unknown option --%s"):format(name)) end
    local key, default = o[1], o[2]
    if type(default) == "boolean" then
      if value ~= nil then usage(("--%s takes no value"):format(name)) end
      args[key] = not negated
    else
      if value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then usage(("--%s needs a value"):format(name)) end
      end
      if type(default) == "number" then
        local v = tonumber(value)
        if v == nil then usage(("--%s expects a number, got %q"):format(name, value)) end
        if math.type(default) == "integer" then
          v = math.tointeger(v)
          if v == nil then usage(("--%s expects an integer, got %q"):format(name, value)) end
        end
        args[key] = v
      else
        args[key] = value
      end
    end
    given[key] = true
    i = i + 1
  end
  if args.quick then
    for _, o in ipairs(all) do
      if o.quick ~= nil and not given[o[1]] then args[o[1]] = o.quick end
    end
  end
  return args
end

---------------------------------------------------------------------------------------
-- Data

-- R.fashion{classes = {5, 6, 7, 8, 9}, train = n, val = n, test = n, seed = 0}
-- -> train, val, test: Fashion-MNIST (Debian's dataset-fashion-mnist) restricted to the
-- classes, labels renumbered 0..K-1 in the list's order. train and val are disjoint
-- random subsets of the training images (train = 0: every image not in val); test is
-- the official test set (its first `test` images when given).
function R.fashion(o)
  local full = data.FashionMNIST({ train = true, classes = o.classes, relabel = true })
  local nval = o.val or 0
  local ntrain = (o.train and o.train > 0) and o.train or #full - nval
  if ntrain + nval > #full then
    error(("fashion: %d training + %d validation images asked, %d available"):format(ntrain, nval, #full), 2)
  end
  local perm = data.Generator(o.seed or 0):run(graft.randperm, #full)
  local train = full:subset({ indices = perm:narrow(1, 1, ntrain) })
  local val = nval > 0 and full:subset({ indices = perm:narrow(1, ntrain + 1, nval) }) or nil
  local test = data.FashionMNIST({ train = false, classes = o.classes, relabel = true })
  if o.test and o.test > 0 and o.test < #test then test = test:subset({ indices = graft.arange(o.test) }) end
  return train, val, test
end

---------------------------------------------------------------------------------------
-- Training and evaluation

-- The fraction of rows of logits [N, K] whose argmax is the label (0-based, int64 [N]).
function R.accuracy(logits, labels)
  return logits:argmax(2):eq(labels):sum():item() / labels:size(1)
end

-- R.evaluate(net, ds [, {batch_size = 500}]) -> accuracy, mean cross-entropy: the model
-- in eval mode, without autograd; its mode is restored afterwards.
function R.evaluate(net, ds, o)
  local was_training = net.training
  net:eval()
  local correct, loss, n = 0, 0, 0
  graft.no_grad(function()
    for x, y in data.DataLoader(ds, { batch_size = (o and o.batch_size) or 500 }):iter() do
      local out = net(x)
      loss = loss + F.cross_entropy(out, y, { reduction = "sum" }):item()
      correct = correct + out:argmax(2):eq(y):sum():item()
      n = n + y:size(1)
    end
  end)
  net:train(was_training)
  return correct / n, loss / n
end

-- R.train_epoch(net, loader, opt, o) -> mean loss, accuracy, stopped: one pass over the
-- loader with a progress bar (o.desc), a batch transform (o.augment), a scheduler
-- stepped after every optimizer step (o.scheduler; per-epoch schedulers are the caller's)
-- and pause-and-inspect at every step (o.scope: what the pause REPL sees). stopped is
-- true when stop() was called in a pause.
function R.train_epoch(net, loader, opt, o)
  o = o or {}
  net:train()
  local loss_sum, correct, n = 0, 0, 0
  local bar = progress(#loader, { desc = o.desc, unit = "batch" })
  for _, x, y in bar:wrap(loader) do
    if o.augment then x = o.augment:apply_batch(x) end
    local out = net(x)
    local loss = F.cross_entropy(out, y)
    opt:zero_grad()
    loss:backward()
    opt:step()
    if o.scheduler then o.scheduler:step() end
    local l, b = loss:item(), y:size(1)
    local c = out:detach():argmax(2):eq(y):sum():item()
    loss_sum, correct, n = loss_sum + l * b, correct + c, n + b
    bar:log({ loss = l, acc = c / b })
    if pause.check(o.scope or { model = net, opt = opt }) == "stop" then
      bar:close()
      return loss_sum / n, correct / n, true
    end
  end
  return loss_sum / n, correct / n, false
end

-- The learning rate of every param group, as metrics: {lr = ...} for one group, else
-- {lr_1 = ..., lr_2 = ...} or the names given ({"lr_head", "lr_backbone"}).
function R.lrs(opt, names)
  local out = {}
  for i, g in ipairs(opt.param_groups) do
    local k = names and names[i] or (#opt.param_groups == 1 and "lr" or ("lr_" .. i))
    out[k] = g.lr
  end
  return out
end

---------------------------------------------------------------------------------------
-- Files and reporting

function R.makedirs(path) data.makedirs(path) return path end

function R.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- A stopwatch: R.stopwatch() -> fn() returning the seconds since it was made.
function R.stopwatch()
  local t0 = graft.clock()
  return function() return graft.clock() - t0 end
end

-- Whether /usr/bin/python3 imports torch: true, or false and the reason.
function R.have_torch()
  if not R.exists("/usr/bin/python3") then return false, "/usr/bin/python3 is not installed" end
  local ok = os.execute("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1")
  if not ok then return false, "/usr/bin/python3 cannot import torch (Debian package python3-torch)" end
  return true
end

-- Runs a command and returns its output (stdout and stderr) and whether it succeeded.
function R.run(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return out, ok == true
end

-- Shell quoting for R.run.
function R.quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

return R
