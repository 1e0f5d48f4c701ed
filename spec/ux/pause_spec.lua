-- graft.pause without a terminal: a script run by the executable asks for pauses with
-- graft.pause.request() (what Ctrl-C does on a terminal) and the pause REPL reads its
-- statements from a pipe. Ctrl-C itself is driven through tmux in terminal_spec.lua.
local BIN = os.getenv("GRAFT_BIN") or "build/graft"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local temps = {}
local function tmp(contents)
  local p = os.tmpname()
  temps[#temps + 1] = p
  if contents then
    local f = assert(io.open(p, "wb"))
    f:write(contents)
    f:close()
  end
  return p
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Runs a Lua script with the executable, input on stdin; returns stdout, stderr, code.
local function run(script, input, args)
  local out, err = tmp(), tmp()
  local _, _, code = os.execute(("%s %s %s < %s > %s 2> %s"):format(q(BIN), q(tmp(script)), args or "", q(tmp(input)),
    q(out), q(err)))
  return read(out), read(err), code
end

teardown(function()
  for _, p in ipairs(temps) do os.remove(p) end
end)

-- A tiny training loop: w moves toward 3 by SGD on (w - 3)^2 with the lr of group 2;
-- pauses are requested at the steps listed in arg.
local TRAIN = [[
local graft = require("graft")
local pause = require("graft.pause")
local at = {}
for _, s in ipairs(arg) do at[tonumber(s)] = true end
local opt = {param_groups = {{lr = 0.5}, {lr = 0.01}}}
local w = graft.tensor({0.0}, {requires_grad = true})
local last = 0
for step = 1, 60 do
  local loss = ((w - 3) ^ 2):sum()
  loss:backward()
  graft.no_grad(function() w:sub_(w.grad * opt.param_groups[2].lr) end)
  w.grad = nil
  last = step
  if at[step] then pause.request() end
  local how = pause.check({opt = opt, w = w, step = step})
  if how == "stop" then print("stopped at step " .. step) break end
  if how then print("resumed at step " .. step) end
  if step % 10 == 0 then print(("step %d lr %g w %.4f"):format(step, opt.param_groups[2].lr, w:item())) end
end
print(("saved after step %d, stopped=%s"):format(last, tostring(pause.stopped())))
]]

describe("graft.pause", function()
  it("runs the pause REPL with the scope's names, applies changes and continues", function()
    local input = table.concat({
      "step",
      "opt.param_groups[2].lr",
      "opt.param_groups[2].lr = 0.25",
      "w2 = w:item() * 2",
      "print('w2', w2 > 0)",
      "continue()",
      "print('never run')",
    }, "\n") .. "\n"
    local out, err, code = run(TRAIN, input, "15")
    assert.are.equal(0, code, err)
    assert.truthy(out:find("%-%- paused%. In scope: opt %(table%), step %(number%), w %(tensor%), and the globals%."), out)
    assert.truthy(out:find("\n15\n0.01\nw2\ttrue\n", 1, true), out)
    assert.truthy(out:find("-- continuing\nresumed at step 15\n", 1, true), out)
    assert.truthy(out:find("step 10 lr 0.01 ", 1, true), out)
    assert.truthy(out:find("step 20 lr 0.25 ", 1, true), out) -- the change is in effect
    assert.truthy(out:find("step 60 lr 0.25 w 3.0000", 1, true), out)
    assert.falsy(out:find("never run", 1, true))
    assert.truthy(out:find("saved after step 60, stopped=false", 1, true), out)
  end)

  it("makes check() return \"stop\" after stop(), so the script saves and ends cleanly", function()
    local out, err, code = run(TRAIN, "opt.param_groups[2].lr = 0\nstop()\n", "7 20")
    assert.are.equal(0, code, err)
    assert.truthy(out:find("-- stopping\nstopped at step 7\nsaved after step 7, stopped=true\n", 1, true), out)
  end)

  it("continues at end of input (Ctrl-D), and reports errors without leaving the pause", function()
    local out, err, code = run(TRAIN, "error('oops')\nnil + 1\n", "5")
    assert.are.equal(0, code, err)
    assert.truthy(err:find("stdin:1: oops", 1, true), err)
    assert.truthy(err:find("attempt to perform arithmetic on a nil value", 1, true), err)
    assert.truthy(out:find("-- continuing\nresumed at step 5\n", 1, true), out)
    assert.truthy(out:find("saved after step 60, stopped=false", 1, true), out)
  end)

  it("keeps statements' globals in the pause scope, away from the script's globals", function()
    local script = [[
      local pause = require("graft.pause")
      pause.request()
      pause.check({a = 1})
      print("leaked:", rawget(_G, "made_here"))
    ]]
    local out, err, code = run(script, "made_here = a + 1\nprint(made_here)\n")
    assert.are.equal(0, code, err)
    assert.truthy(out:find("\n2\n", 1, true), out)
    assert.truthy(out:find("leaked:\tnil", 1, true), out)
  end)

  it("does not install Ctrl-C pausing off a terminal, and says why", function()
    local out, err, code = run([[print(require("graft.pause").install())]], "")
    assert.are.equal(0, code, err)
    assert.are.equal("false\tpause: stdin and stdout are not both terminals; Ctrl-C keeps its usual meaning\n", out)
  end)

  it("costs nothing visible when no pause was asked for", function()
    local pause = require("graft.pause")
    for _ = 1, 1000 do assert.is_nil(pause.check({})) end
  end)
end)
