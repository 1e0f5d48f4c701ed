-- graft.pause: pause-and-inspect for training loops. In a recipe run from a terminal by
-- the graft executable, Ctrl-C pauses at the next step boundary and opens the REPL with
-- the recipe's objects in scope: look at anything, change a learning rate, freeze or
-- unfreeze, save; then continue() (or Ctrl-D) resumes training, stop() ends it cleanly.
--
--   graft.pause.install()                    -- Ctrl-C now pauses (terminals only)
--   for step = 1, steps do
--     ...
--     if graft.pause.check({model = net, opt = opt, sched = sched}) == "stop" then break end
--   end
--   save(net)                                 -- also after stop()
--
-- check() costs one C call when nothing happened. Without install() (or off a
-- terminal) Ctrl-C keeps its usual meaning; graft.pause.request() asks for a pause at
-- the next check() from code, as Ctrl-C does.
local graft = require("graft")

local M = {}

local installed = false -- Ctrl-C raises the pause flag
local pending = false   -- a pause was requested from code
local stopped = false   -- stop() was called: every later check() says "stop"

local PROMPT = "paused> "

local function isatty(fd)
  if graft._isatty then return graft._isatty(fd) end
  return os.execute(("test -t %d"):format(fd)) == true
end

-- Installs the Ctrl-C handling: returns true, or false and the reason it cannot (not
-- the graft executable, or stdin/stdout not terminals). opts.quiet: no hint line.
function M.install(opts)
  opts = opts or {}
  if not graft._pause_sigint then
    return false, "pause: Ctrl-C pausing needs the graft executable (build/graft), not stock lua5.4"
  end
  if not (opts.force or (isatty(0) and isatty(1))) then
    return false, "pause: stdin and stdout are not both terminals; Ctrl-C keeps its usual meaning"
  end
  graft._pause_sigint(true)
  installed = true
  if not opts.quiet then
    io.stdout:write("(Ctrl-C pauses training at the next step: inspect and change, then continue() or stop())\n")
    io.stdout:flush()
  end
  return true
end

-- Ctrl-C back to interrupting the script.
function M.uninstall()
  if installed and graft._pause_sigint then graft._pause_sigint(false) end
  installed = false
end

function M.installed() return installed end

-- Asks for a pause at the next check(), as Ctrl-C does.
function M.request() pending = true end

-- Whether stop() was called in a pause.
function M.stopped() return stopped end

-- Forgets a stop() and a pending request (for a new run in the same program).
function M.reset()
  stopped, pending = false, false
end

-- A REPL for programs without graft._repl (stock lua5.4): plain lines from stdin.
local function lua_repl(env, prompt)
  local leave
  env.continue = function() leave = "continue" end
  env.stop = function() leave = "stop" end
  local buf
  while not leave do
    io.stdout:write(buf and ">> " or prompt)
    io.stdout:flush()
    local line = io.stdin:read("l")
    if line == nil then break end
    buf = buf and buf .. "\n" .. line or line
    local fn, err = load("return " .. buf, "=stdin", "t", env)
    if not fn then fn, err = load(buf, "=stdin", "t", env) end
    if fn then
      buf = nil
      local r = table.pack(xpcall(fn, debug.traceback))
      if not r[1] then
        io.stderr:write(tostring(r[2]), "\n")
      elseif r.n > 1 then
        local out = {}
        for i = 2, r.n do out[#out + 1] = tostring(r[i]) end
        io.stdout:write(table.concat(out, "\t"), "\n")
      end
    elseif not err:find("<eof>$") then
      buf = nil
      io.stderr:write(err, "\n")
    end
  end
  return leave or "continue"
end

local function describe(v)
  local mt = getmetatable(v)
  local name = type(mt) == "table" and rawget(mt, "__name")
  if type(v) == "table" and type(v._get_name) == "function" then
    local ok, n = pcall(v._get_name, v)
    if ok and n then return n end
  end
  if graft.is_tensor(v) then return "tensor" end
  return type(name) == "string" and name or type(v)
end

-- Opens the pause REPL now with scope's entries (and the globals) in scope. Returns
-- "continue" or "stop". Time spent paused is left out of open progress bars.
function M.open(scope, opts)
  scope = scope or {}
  opts = opts or {}
  local progress = package.loaded["graft.progress"]
  if progress then progress._break_line() end
  local env = setmetatable({}, { __index = _G })
  local names = {}
  for k, v in pairs(scope) do
    env[k] = v
    if type(k) == "string" then names[#names + 1] = k end
  end
  table.sort(names)
  local listed = {}
  for _, k in ipairs(names) do listed[#listed + 1] = ("%s (%s)"):format(k, describe(scope[k])) end
  io.stdout:write(("-- paused%s. In scope: %s, and the globals.\n"):format(opts.where and " " .. opts.where or "",
    #listed > 0 and table.concat(listed, ", ") or "nothing"))
  io.stdout:write("-- Any Lua: opt.param_groups[1].lr = 1e-4, model:freeze(...), graft.save(...).\n")
  io.stdout:write("-- continue() (or Ctrl-D) resumes training; stop() ends it cleanly.\n")
  io.stdout:flush()
  local t0 = graft.clock()
  local how = graft._repl and graft._repl(env, PROMPT) or lua_repl(env, PROMPT)
  if progress then progress._shift(graft.clock() - t0) end
  if how == "stop" then stopped = true end
  io.stdout:write(how == "stop" and "-- stopping\n" or "-- continuing\n")
  io.stdout:flush()
  return how
end

-- Once per training step: nil when no pause was asked for; otherwise opens the pause
-- REPL with scope's entries in scope and returns "continue" or "stop". After a stop()
-- every check() returns "stop", so outer loops end too.
function M.check(scope, opts)
  if stopped then return "stop" end
  if not pending and not (installed and graft._interrupted()) then return nil end
  pending = false
  return M.open(scope, opts)
end

return M
