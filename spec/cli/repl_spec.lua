-- The REPL on a pseudo-terminal: each check runs build/graft (or $GRAFT_BIN) in its own
-- detached tmux session (a private server, -L), types with send-keys and reads the
-- screen with capture-pane, polling for at most a few seconds. Skipped, saying so, when
-- tmux is missing.
local BIN = os.getenv("GRAFT_BIN") or "build/graft"
local HAVE_TMUX = os.execute("command -v tmux > /dev/null 2>&1")
if not HAVE_TMUX then
  io.stderr:write("\nrepl_spec: SKIPPED: tmux is not installed, so the REPL checks cannot run\n")
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local Term = {}
Term.__index = Term

function Term.start()
  local self = setmetatable({
    sock = ("graft_repl_spec_%d_%d"):format(os.time(), math.random(1, 1000000000)),
    hist = os.tmpname(),
  }, Term)
  os.remove(self.hist)
  local cmd = "GRAFT_HISTORY=" .. q(self.hist) .. " exec " .. q(BIN)
  assert(self:tmux("new-session -d -x 120 -y 40 " .. q(cmd)), "tmux new-session failed")
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
  local f = io.popen("tmux -L " .. self.sock .. " capture-pane -p -S -200 2>/dev/null")
  local s = f:read("a")
  f:close()
  return s
end

-- Polls the screen until it contains `text` (plain; a Lua pattern when `pattern` is
-- true), for at most 5 seconds. The screen has tabs expanded and trailing spaces cut.
function Term:wait(text, pattern)
  local s
  for _ = 1, 100 do
    s = self:screen()
    if s:find(text, 1, not pattern) then return s end
    os.execute("sleep 0.05")
  end
  error(("timed out waiting for %q; the screen shows:\n%s"):format(text, s), 2)
end

function Term:close()
  self:tmux("kill-server")
  os.remove(self.hist)
end

describe("the REPL on a terminal", function()
  local term

  before_each(function()
    if not HAVE_TMUX then return end
    assert(io.open(BIN, "rb"), BIN .. " is missing: run `make build/graft` first"):close()
    term = Term.start()
    term:wait("help() for help")
  end)

  after_each(function()
    if term then term:close() end
    term = nil
  end)

  local function check(name, fn)
    it(name, function()
      if not HAVE_TMUX then return pending("tmux is not installed") end
      fn()
    end)
  end

  check("prints a banner with the version and a hint", function()
    local s = term:wait("\n>\n")
    assert.truthy(s:find("graft 0.1.0 (Lua 5.4) \u{2014} Ctrl-D to exit, help() for help", 1, true), s)
  end)

  check("prints expressions without = or return, tensors and tables pretty-printed", function()
    term:line("6 * 7")
    term:wait("> 6 * 7\n42\n")
    term:line("graft.ones(2, 2)")
    term:wait("tensor([[1., 1.],\n        [1., 1.]])")
    term:line("{b = 2, a = {1, 2}, 'x'}")
    term:wait('{"x", a = {1, 2}, b = 2}')
    term:line("1, nil, 'three'")
    term:wait("\n1 +nil +three\n", true)
  end)

  check("reads a multi-line function definition", function()
    term:line("function twice(a)")
    term:wait("\n>>\n")
    term:line("  return a * 2")
    term:line("end")
    term:line("twice(21)")
    term:wait("> twice(21)\n42\n")
  end)

  check("prints an error with a traceback and goes on", function()
    term:line("error('oops')")
    term:wait("stack traceback:")
    term:line("print('still ' .. 'alive')")
    local s = term:wait("\nstill alive\n")
    assert.truthy(s:find("stdin:1: oops", 1, true), s)
  end)

  check("completes graft.zer to graft.zeros with Tab", function()
    term:type("graft.zer")
    term:keys("Tab")
    term:wait("> graft.zeros")
    term:line("(3)")
    term:wait("tensor([0., 0., 0.])")
  end)

  check("completes a tensor's methods after `:`", function()
    term:line("t = graft.ones(2)")
    term:type("t:fil")
    term:keys("Tab")
    term:wait("> t:fill_")
    term:line("(5)")
    term:wait("tensor([5., 5.])")
  end)

  check("interrupts `while true do end` on Ctrl-C and goes on", function()
    term:line("print('spinning') while true do end")
    term:wait("\nspinning\n")
    term:keys("C-c")
    term:wait("interrupted!")
    term:line("1 + 1000")
    term:wait("\n1001\n")
  end)

  check("clears the line on Ctrl-C at the prompt", function()
    term:type("this is not lua")
    term:wait("this is not lua")
    term:keys("C-c")
    -- let readline take the signal and draw a fresh prompt before typing again
    os.execute("sleep 0.3")
    term:line("2 + 3000")
    local s = term:wait("\n3002\n")
    assert.falsy(s:find("syntax error", 1, true) or s:find("near", 1, true), s)
  end)

  check("exits on Ctrl-D and keeps the history in $GRAFT_HISTORY", function()
    term:line("history_marker = 1")
    term:wait("> history_marker = 1\n>\n")
    term:keys("C-d")
    local alive = true
    for _ = 1, 100 do
      alive = term:tmux("has-session")
      if not alive then break end
      os.execute("sleep 0.05")
    end
    assert.falsy(alive, "the REPL did not exit on Ctrl-D")
    local f = assert(io.open(term.hist, "rb"))
    local hist = f:read("a")
    f:close()
    assert.truthy(hist:find("history_marker = 1", 1, true), hist)
  end)
end)
