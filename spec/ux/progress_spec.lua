-- graft.progress: bars drawn into a fake file with a fake clock (terminal mode: \r
-- redraws, throttling, rate, ETA, averaged metrics; plain mode: one line per bar), the
-- iterator wrappers, and the executable's output when stdout is a file. The terminal
-- itself (isatty) is checked through tmux in terminal_spec.lua.
local graft = require("graft")
local progress = require("graft.progress")

local BIN = os.getenv("GRAFT_BIN") or "build/graft"

-- A file-like sink that keeps what is written.
local function sink()
  local s = { buf = {} }
  function s:write(...)
    for _, v in ipairs({ ... }) do self.buf[#self.buf + 1] = tostring(v) end
    return self
  end
  function s:flush() return self end
  function s:text() return table.concat(self.buf) end
  return s
end

-- A clock the test moves by hand.
local function fake_clock()
  local c = { t = 1000 }
  return function() return c.t end, c
end

local function count(s, pat)
  local n = 0
  for _ in s:gmatch(pat) do n = n + 1 end
  return n
end

-- The last redraw of a terminal bar (what is on screen).
local function last_line(text)
  local line
  for l in text:gmatch("\r([^\r\n]*)") do line = l end
  return (line or ""):gsub("\27%[K$", "")
end

describe("graft.progress when output is not a terminal", function()
  it("prints one summary line at close and nothing per step", function()
    local out, clock, c = sink(), fake_clock()
    local bar = progress(100, { desc = "epoch 3/10", unit = "batch", tty = false, file = out, clock = clock })
    for i = 1, 100 do
      c.t = c.t + 0.05
      bar:update(1, { loss = i <= 50 and 1.0 or 0.5, acc = 0.75 })
    end
    assert.are.equal("", out:text())
    bar:close()
    local text = out:text()
    assert.are.equal(1, count(text, "\n"))
    assert.falsy(text:find("\r", 1, true))
    assert.are.equal("epoch 3/10: 100 batch in 5.0s (20.0 batch/s) loss=0.75 acc=0.75\n", text)
  end)

  it("says how far a bar closed early got", function()
    local out, clock, c = sink(), fake_clock()
    local bar = progress(100, { desc = "eval", tty = false, file = out, clock = clock })
    bar:update(42)
    c.t = c.t + 2
    bar:close()
    bar:close() -- twice is harmless
    assert.are.equal("eval: 42/100 it in 2.0s (21.0 it/s)\n", out:text())
  end)

  it("prints one line per bar from the executable when stdout is a file", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
      local progress = require("graft.progress")
      for epoch = 1, 3 do
        local bar = progress(50, {desc = ("epoch %d/3"):format(epoch), unit = "batch"})
        for i = 1, 50 do bar:update(1, {loss = 1 / epoch}) end
        bar:close()
      end
    ]])
    f:close()
    local p = io.popen(BIN .. " " .. script .. " 2>&1")
    local text = p:read("a")
    p:close()
    os.remove(script)
    assert.falsy(text:find("\r", 1, true), text)
    local lines = {}
    for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(3, #lines, text)
    for e = 1, 3 do
      assert.truthy(lines[e]:find(("^epoch %d/3: 50 batch in %%d+%%.%%ds %%(.- batch/s%%) loss=%s$")
        :format(e, ("%.4g"):format(1 / e):gsub("%.", "%%."))), lines[e])
    end
  end)

  it("prints nothing with GRAFT_PROGRESS=off", function()
    local p = io.popen("GRAFT_PROGRESS=off " .. BIN ..
      [[ -e 'local b = require("graft.progress")(3, {desc = "x"}) b:update(3) b:close() io.write("end")' 2>&1]])
    local text = p:read("a")
    p:close()
    assert.are.equal("end", text)
  end)
end)

describe("graft.progress on a terminal", function()
  local function tty_bar(total, opts)
    local out, clock, c = sink(), fake_clock()
    opts = opts or {}
    opts.tty, opts.file, opts.clock, opts.width = true, out, clock, opts.width or 100
    opts.unicode = opts.unicode or false
    return progress(total, opts), out, c
  end

  it("redraws one line with \\r: desc, bar, step/total, percent, rate, elapsed, ETA and metrics", function()
    local bar, out, c = tty_bar(100, { desc = "epoch 1/2", unit = "step" })
    for i = 1, 25 do
      c.t = c.t + 0.2
      bar:update(1, { loss = 2.0, acc = 0.5 })
    end
    local line = last_line(out:text())
    assert.are.equal("epoch 1/2 [#######.......................] 25/100  25% 5.00 step/s 00:05 eta 00:15 loss=2 acc=0.5",
      line)
    assert.falsy(out:text():find("\n", 1, true))
    bar:close()
    assert.truthy(out:text():find("100/100", 1, true) == nil) -- closed at 25: it says 25/100
    assert.truthy(last_line(out:text()):find("25/100", 1, true))
    assert.are.equal("\n", out:text():sub(-1))
  end)

  it("draws at most ten times a second, and at the end", function()
    local bar, out, c = tty_bar(1000)
    for _ = 1, 1000 do
      c.t = c.t + 0.001 -- 1000 steps in one second
      bar:update(1)
    end
    local draws = count(out:text(), "\r")
    assert.is_true(draws >= 10 and draws <= 13, "draws: " .. draws)
    assert.truthy(last_line(out:text()):find("1000/1000 100%", 1, true))
  end)

  it("averages metrics weighted by the step count; set() shows values as they are", function()
    local bar = tty_bar(10)
    bar:update(1, { loss = 1 })
    bar:update(3, { loss = 3 })
    bar:log({ acc = 0.5 })
    bar:log({ acc = graft.tensor(1.0) })
    bar:set({ lr = 0.01 })
    bar:set({ lr = 0.001 })
    local avg = bar:averages()
    assert.are.equal(2.5, avg.loss)
    assert.are.equal(0.75, avg.acc)
    assert.are.equal(0.001, avg.lr)
    assert.truthy(tostring(bar):find("4/10 it, loss=2.5 acc=0.75 lr=0.001", 1, true), tostring(bar))
  end)

  it("shows the count, rate and elapsed time when the total is unknown", function()
    local bar, out, c = tty_bar(nil, { unit = "batch" })
    c.t = c.t + 2
    bar:update(8)
    bar:close()
    assert.are.equal("8 batch 4.00 batch/s 00:02", last_line(out:text()))
  end)

  it("shows seconds per step below one step a second, and H:MM:SS ETAs", function()
    local bar, out, c = tty_bar(10000)
    c.t = c.t + 4
    bar:update(2)
    local line = last_line(out:text())
    assert.truthy(line:find("2.00 s/it", 1, true), line)
    assert.truthy(line:find("eta 5:33:16", 1, true), line)
  end)

  it("never draws a line wider than the terminal", function()
    local bar, out = tty_bar(100, { desc = ("a very long description "):rep(5), width = 60 })
    bar:update(1, { loss = 1, accuracy = 0.5, other_metric = 3 })
    bar:close()
    for line in out:text():gmatch("\r([^\r\n]*)") do
      assert.is_true(utf8.len((line:gsub("\27%[K$", ""))) <= 59, line)
    end
  end)

  it("draws the bar with block characters in a UTF-8 locale", function()
    local bar, out = tty_bar(8, { unicode = true })
    bar:update(3)
    bar:close()
    local line = last_line(out:text())
    assert.truthy(line:find("|███████████▎", 1, true), line)
  end)

  it("prints text above the bar with bar:print", function()
    local bar, out = tty_bar(10, { desc = "d" })
    bar:update(5)
    bar:print("val_acc", 0.9)
    local text = out:text()
    assert.truthy(text:find("\r\27[Kval_acc\t0.9\n\rd ", 1, true), text)
  end)
end)

describe("graft.progress.wrap", function()
  local function opts(extra)
    local out, clock = sink(), fake_clock()
    local o = { tty = false, file = out, clock = clock }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o, out
  end

  it("yields the step number and the items of an array, and closes the bar", function()
    local o, out = opts({ desc = "eval" })
    local seen = {}
    for i, x in progress.wrap({ "a", "b", "c" }, o) do seen[#seen + 1] = i .. x end
    assert.are.same({ "1a", "2b", "3c" }, seen)
    assert.truthy(out:text():find("^eval: 3 it in"), out:text())
  end)

  it("yields what a loader's iter() yields, after the step number, with #loader as the total", function()
    local loader = setmetatable({ n = 4 }, {
      __len = function(self) return self.n end,
      __index = {
        iter = function(self)
          local k = 0
          return function()
            k = k + 1
            if k <= self.n then return "x" .. k, k * 10 end
          end
        end,
      },
    })
    local o, out = opts({ desc = "train" })
    local got = {}
    for i, x, y in progress.wrap(loader, o) do got[#got + 1] = ("%d %s %d"):format(i, x, y) end
    assert.are.same({ "1 x1 10", "2 x2 20", "3 x3 30", "4 x4 40" }, got)
    assert.truthy(out:text():find("^train: 4 it"), out:text())
  end)

  it("counts steps and closes the bar on break (the bar is the loop's closing value)", function()
    local o, out = opts({ total = 10 })
    local bar = progress.new(10, o)
    for i in bar:wrap(function(_, k) k = (k or 0) + 1 return k end) do
      bar:log({ loss = i })
      if i == 4 then break end
    end
    assert.is_true(bar.closed)
    assert.are.equal(3, bar.n) -- the fourth step did not end
    assert.truthy(out:text():find("3/10 it", 1, true), out:text())
  end)

  it("calls a loader with __call for its iterator", function()
    local loader = setmetatable({}, {
      __call = function() return ipairs({ 5, 6 }) end,
    })
    local o = opts()
    local got = {}
    for i, k, v in progress.wrap(loader, o) do got[#got + 1] = i * 100 + k * 10 + v end
    assert.are.same({ 115, 226 }, got)
  end)
end)

describe("graft.progress errors", function()
  it("names the problem", function()
    assert.has_error(function() progress(-1) end, "progress: total must be a non-negative number or nil, got -1")
    local bar = progress(3, { tty = false, file = sink() })
    local ok, err = pcall(bar.update, bar, 1, { loss = "low" })
    assert.is_false(ok)
    assert.truthy(err:find("progress: metric 'loss' is a string, expected a number or a one-element tensor", 1, true), err)
    bar:close()
    ok, err = pcall(bar.update, bar, 1)
    assert.truthy(err:find("progress: update on a closed bar", 1, true), err)
    ok, err = pcall(progress.wrap, 42)
    assert.truthy(err:find("progress: cannot iterate over a number", 1, true), err)
  end)

  it("formats times as MM:SS and H:MM:SS", function()
    assert.are.equal("00:59", progress._fmt_time(59.4))
    assert.are.equal("01:00", progress._fmt_time(59.6))
    assert.are.equal("1:00:00", progress._fmt_time(3600))
    assert.are.equal("--:--", progress._fmt_time(math.huge))
  end)
end)
