-- scripts/finetune.lua on a terminal: Ctrl-C pauses at the next step with the recipe's
-- objects in scope; a rate changed there is the one training goes on with (the metrics
-- CSV shows it), and stop() saves and ends the run. Driven through a detached tmux
-- session (a private server, killed afterwards); skipped, saying so, without tmux.
local H = require("spec.recipes.helper")

local HAVE_TMUX = os.execute("command -v tmux > /dev/null 2>&1")
if not HAVE_TMUX then
  io.stderr:write("\nrecipes/pause_spec: SKIPPED: tmux is not installed, so the terminal checks cannot run\n")
end

local Term = {}
Term.__index = Term

-- `cmd` in a new 120x40 terminal under bash, which prints "[exit N]" when it ends.
function Term.start(cmd)
  local self = setmetatable({ sock = ("graft_recipe_spec_%d_%d"):format(os.time(), math.random(1, 1000000000)) }, Term)
  local full = "LANG=C.UTF-8 " .. cmd .. '; echo "[exit $?]"; sleep 120'
  assert(self:tmux("new-session -d -x 120 -y 40 " .. H.q("exec bash -c " .. H.q(full))), "tmux new-session failed")
  return self
end

function Term:tmux(args) return os.execute("tmux -L " .. self.sock .. " " .. args .. " > /dev/null 2>&1") end
function Term:line(text)
  self:tmux("send-keys -l " .. H.q(text))
  self:tmux("send-keys Enter")
end
function Term:screen()
  local f = io.popen("tmux -L " .. self.sock .. " capture-pane -p -J -S -2000 2>/dev/null")
  local s = f:read("a")
  f:close()
  return s
end

-- Polls the screen until it shows `text` (a Lua pattern), for at most 30 seconds.
function Term:wait(text)
  local s
  for _ = 1, 300 do
    s = self:screen()
    if s:find(text) then return s end
    os.execute("sleep 0.1")
  end
  error(("timed out waiting for %q; the screen shows:\n%s"):format(text, s), 2)
end

function Term:close() self:tmux("kill-server") end

describe("scripts/finetune.lua on a terminal", function()
  local term
  teardown(function()
    if term then term:close() end
    H.cleanup()
  end)

  it("Ctrl-C pauses with model, opt and sched in scope; changes stick; stop() saves and ends", function()
    if not HAVE_TMUX then return pending("tmux is not installed") end
    assert(H.have_bin(), H.BIN .. " is missing: run `make build/graft` first")
    local dir = H.tmpdir()
    local _, e, c = H.run("pretrain", "--quick", "--out", dir .. "/pre")
    assert.are.equal(0, c, e)
    term = Term.start(("%s scripts/finetune.lua --quick --epochs 300 --ckpt %s --out %s"):format(H.q(H.BIN),
      H.q(dir .. "/pre/small_cnn.pth"), H.q(dir)))
    term:wait("Ctrl%-C pauses training")
    term:wait("\nepoch 2: train loss")
    term:tmux("send-keys C-c")
    local s = term:wait("paused> %s*$")
    assert.truthy(s:find("In scope: epoch %(number%), model %(Sequential%), opt %([%w._]+%), sched %([%w._]+%)"), s)
    term:line("opt.param_groups[1].lr = 0.123")
    term:line("print(('groups=%d head_lr=%g tensors=%d'):format(#opt.param_groups, opt.param_groups[1].lr, #model:parameters()))")
    term:wait("groups=2 head_lr=0.123 tensors=8")
    term:line("continue()")
    term:wait("%-%- continuing")
    -- a second pause, then stop(): the run ends cleanly, saving what it has
    term:wait("%-%- continuing.-\nepoch %d+: train loss.-\nepoch %d+: train loss")
    term:tmux("send-keys C-c")
    term:wait("paused> %s*$")
    term:line("stop()")
    s = term:wait("%[exit %d+%]")
    assert.truthy(s:find("[exit 0]", 1, true), s)
    assert.truthy(s:find("stopped in epoch %d+: weights in"), s)
    assert.is_true(H.exists(dir .. "/stopped.pth"))
    -- the rate set in the pause is the one the epochs after it ran with
    local lr = H.column(H.metrics(dir .. "/metrics.csv"), "lr_head")
    assert.are.equal(0.1, lr[1])
    assert.are.equal(0.123, lr[#lr])
  end)
end)
