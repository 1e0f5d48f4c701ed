-- Training UX on a real terminal: scripts run by build/graft (or $GRAFT_BIN) in a
-- detached tmux session (a private server, -L, killed after each check), typed at with
-- send-keys and read with capture-pane, each wait bounded to a few seconds. Covers the
-- progress bar's redraws and the pause REPL on Ctrl-C. Skipped, saying so, without tmux.
local BIN = os.getenv("GRAFT_BIN") or "build/graft"
local HAVE_TMUX = os.execute("command -v tmux > /dev/null 2>&1")
if not HAVE_TMUX then
  io.stderr:write("\nterminal_spec: SKIPPED: tmux is not installed, so the terminal checks cannot run\n")
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local Term = {}
Term.__index = Term

-- Runs `graft script` in a new 120x40 terminal, under bash, which prints "[exit N]"
-- when it ends (more promptly than tmux notices a dead pane) and then waits.
function Term.start(script_text)
  local self = setmetatable({
    sock = ("graft_ux_spec_%d_%d"):format(os.time(), math.random(1, 1000000000)),
    hist = os.tmpname(),
    script = os.tmpname(),
  }, Term)
  os.remove(self.hist)
  local f = assert(io.open(self.script, "w"))
  f:write(script_text)
  f:close()
  local cmd = "GRAFT_HISTORY=" .. q(self.hist) .. " LANG=C.UTF-8 " .. q(BIN) .. " " .. q(self.script) ..
    '; echo "[exit $?]"; sleep 60'
  assert(self:tmux("new-session -d -x 120 -y 40 " .. q("exec bash -c " .. q(cmd))), "tmux new-session failed")
  local f = io.popen("tmux -L " .. self.sock .. " display-message -p '#{socket_path}' 2>/dev/null")
  self.socket_path = f:read("l")
  f:close()
  return self
end

function Term:tmux(args)
  return os.execute("tmux -L " .. self.sock .. " " .. args .. " > /dev/null 2>&1")
end

function Term:type(text) self:tmux("send-keys -l " .. q(text)) end
function Term:keys(keys) self:tmux("send-keys " .. keys) end
function Term:line(text)
  self:type(text)
  self:keys("Enter")
end

function Term:screen()
  local f = io.popen("tmux -L " .. self.sock .. " capture-pane -p -S -1000 2>/dev/null")
  local s = f:read("a")
  f:close()
  return s
end

-- Polls the screen until it contains `text` (plain; a Lua pattern when `pattern` is
-- true) `times` times (default 1), for at most 6 seconds.
function Term:wait(text, pattern, times)
  local s
  for _ = 1, 120 do
    s = self:screen()
    local n, init = 0, 1
    while true do
      local a, b = s:find(text, init, not pattern)
      if not a then break end
      n, init = n + 1, b + 1
    end
    if n >= (times or 1) then return s end
    os.execute("sleep 0.05")
  end
  error(("timed out waiting for %q; the screen shows:\n%s"):format(text, s), 2)
end

function Term:close()
  self:tmux("kill-server")
  if self.socket_path and self.socket_path:find(self.sock, 1, true) then os.remove(self.socket_path) end
  os.remove(self.hist)
  os.remove(self.script)
end

local function count(s, text)
  local n, init = 0, 1
  while true do
    local _, b = s:find(text, init, true)
    if not b then return n end
    n, init = n + 1, b + 1
  end
end

-- A training loop of up to 3000 steps of ~2 ms that polls for pauses each step and
-- prints the lr of group 2 every 25 steps.
local TRAIN = [[
local graft = require("graft")
local pause = require("graft.pause")
assert(pause.install())
local opt = {param_groups = {{lr = 0.5}, {lr = 0.01}}}
for step = 1, 3000 do
  local t = graft.clock() while graft.clock() - t < 0.002 do end
  local how = pause.check({opt = opt, step = step})
  if how == "stop" then print("stopped at step " .. step) break end
  if step % 25 == 0 then print(("step %d lr %g"):format(step, opt.param_groups[2].lr)) end
end
print("saved")
]]

describe("training UX on a terminal", function()
  local term

  after_each(function()
    if term then term:close() end
    term = nil
  end)

  local function check(name, fn)
    it(name, function()
      if not HAVE_TMUX then return pending("tmux is not installed") end
      assert(io.open(BIN, "rb"), BIN .. " is missing: run `make build/graft` first"):close()
      fn()
    end)
  end

  check("a progress bar redraws one line with the ETA while it runs, then ends it", function()
    term = Term.start([[
      local graft = require("graft")
      local bar = require("graft.progress")(60, {desc = "train", unit = "batch"})
      for i = 1, 60 do
        local t = graft.clock() while graft.clock() - t < 0.02 do end
        bar:update(1, {loss = 1 / i})
      end
      bar:close()
      print("done")
    ]])
    local mid = term:wait("train |[^\n]* (%d+)/60 +%d+%% [%d.]+ batch/s 00:0%d eta 00:0%d loss=", true)
    local n = tonumber(mid:match("(%d+)/60"))
    assert.is_true(n < 60, mid)
    local s = term:wait("\ndone\n")
    assert.are.equal(1, count(s, "train |"), s) -- redrawn in place: one line on screen
    assert.truthy(s:find("train |██████████████████████████████| 60/60 100%", 1, true), s)
    assert.truthy(s:find("eta 00:00 loss=0.07", 1, true), s)
  end)

  check("Ctrl-C pauses at a step; a change made at the prompt applies after continue(); stop() ends cleanly", function()
    term = Term.start(TRAIN)
    term:wait("step 25 lr 0.01\n")
    term:keys("C-c")
    term:wait("[graft] pausing at the next step (Ctrl-C again to interrupt)")
    term:wait("\npaused>")
    term:line("step > 0, opt.param_groups[2].lr")
    term:wait("\ntrue +0.01\n", true)
    term:line("opt.param_groups[2].lr = 0.25")
    term:line("continue()")
    term:wait("-- continuing\n")
    term:wait(" lr 0.25\n") -- the script's later output shows the change
    term:keys("C-c")
    term:wait("\npaused>", false, 2)
    term:type("half a statement")
    term:wait("paused> half a statement")
    term:keys("C-c") -- at the prompt: clears the line, stays paused
    term:wait("\npaused>", false, 3) -- a fresh prompt (keys typed before it would race the signal)
    term:line("stop()")
    local s = term:wait("\n[exit 0]\n")
    assert.truthy(s:find("-- stopping\nstopped at step %d+\nsaved\n"), s)
    assert.falsy(s:find("syntax error", 1, true), s)
    assert.falsy(s:find("interrupted!", 1, true), s)
  end)

  check("Ctrl-D at the pause prompt continues training", function()
    term = Term.start(TRAIN)
    term:wait("step 25 lr")
    term:keys("C-c")
    term:wait("\npaused>")
    term:keys("C-d")
    term:wait("-- continuing\n")
    term:keys("C-c")
    term:wait("\npaused>", false, 2)
    term:line("stop()")
    term:wait("\n[exit 0]\n")
  end)

  check("a second Ctrl-C before the next step interrupts a script stuck between checks", function()
    term = Term.start([[
      assert(require("graft.pause").install({quiet = true}))
      print("spinning")
      while true do end
    ]])
    term:wait("spinning\n")
    term:keys("C-c")
    term:wait("pausing at the next step")
    term:keys("C-c")
    local s = term:wait("\n[exit 1]\n")
    assert.truthy(s:find("interrupted!", 1, true), s)
  end)

  check("without install(), Ctrl-C interrupts the script as usual", function()
    term = Term.start([[
      print("spinning")
      while true do require("graft.pause").check({}) end
    ]])
    term:wait("spinning\n")
    term:keys("C-c")
    local s = term:wait("\n[exit 1]\n")
    assert.truthy(s:find("interrupted!", 1, true), s)
    assert.falsy(s:find("paused>", 1, true), s)
  end)
end)
