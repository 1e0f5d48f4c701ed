-- graft.progress: progress bars for training loops. On a terminal a bar redraws one line
-- (at most ~10 times a second): description, step/total, percent, bar, rate, elapsed
-- and ETA, and the running averages of the metrics; when stdout is not a terminal it
-- prints one summary line per bar when the bar closes, and nothing per step.
--
--   local bar = graft.progress(#loader, {desc = "epoch 3/10", unit = "batch"})
--   for i, x, y in bar:wrap(loader) do ... bar:log({loss = l, acc = a}) end
--   -- or by hand: bar:update(1, {loss = l}) per step, then bar:close()
--   for i, x, y in graft.progress.wrap(loader, {desc = "eval"}) do ... end
--
-- GRAFT_PROGRESS=off|plain|tty in the environment forces a mode (opts.tty too).
local graft = require("graft")

local M = {}

local Bar = {}
Bar.__index = Bar
Bar.__name = "graft.progress.Bar"
M.Bar = Bar

local DEFAULT_INTERVAL = 0.1 -- seconds between redraws
local live = setmetatable({}, { __mode = "k" }) -- open bars, for graft.pause

---------------------------------------------------------------------------------------
-- Terminal queries: the executable's C helpers, else the shell.

local tty_cache = {}
local function isatty(fd)
  if graft._isatty then return graft._isatty(fd) end
  if tty_cache[fd] == nil then tty_cache[fd] = os.execute(("test -t %d"):format(fd)) == true end
  return tty_cache[fd]
end
M._isatty = isatty

local function term_width()
  local w = graft._term_width and graft._term_width(1)
  return w or tonumber(os.getenv("COLUMNS") or "") or 80
end

local function utf8_locale()
  local loc = os.getenv("LC_ALL") or os.getenv("LC_CTYPE") or os.getenv("LANG") or ""
  return loc:lower():find("utf%-?8") ~= nil
end

---------------------------------------------------------------------------------------
-- Formatting.

-- Seconds as MM:SS, or H:MM:SS from an hour.
local function fmt_time(s)
  if s ~= s or s == math.huge or s < 0 then return "--:--" end
  s = math.floor(s + 0.5)
  local h, m = s // 3600, (s % 3600) // 60
  if h > 0 then return ("%d:%02d:%02d"):format(h, m, s % 60) end
  return ("%02d:%02d"):format(m, s % 60)
end
M._fmt_time = fmt_time

local function fmt_value(v)
  if math.type(v) == "integer" then return tostring(v) end
  if type(v) == "number" then return ("%.4g"):format(v) end
  return tostring(v)
end

local function fmt_rate(n, elapsed, unit)
  if n <= 0 or elapsed <= 0 then return "? " .. unit .. "/s" end
  local r = n / elapsed
  if r < 1 then return ("%.2f s/%s"):format(1 / r, unit) end
  local fmt = r >= 100 and "%.0f %s/s" or r >= 10 and "%.1f %s/s" or "%.2f %s/s"
  return fmt:format(r, unit)
end

local PARTS = { "", "▏", "▎", "▍", "▌", "▋", "▊", "▉" }

-- The bar itself, `width` cells wide, filled to fraction f.
local function draw_bar(f, width, unicode)
  f = math.max(0, math.min(1, f))
  if not unicode then
    local full = math.floor(f * width)
    return "[" .. ("#"):rep(full) .. ("."):rep(width - full) .. "]"
  end
  local eighths = math.floor(f * width * 8)
  local full, part = eighths // 8, eighths % 8
  local s = ("█"):rep(full)
  if full < width then s = s .. PARTS[part + 1] .. (" "):rep(width - full - (part > 0 and 1 or 0)) end
  return "|" .. s .. "|"
end

---------------------------------------------------------------------------------------
-- Bars.

-- A metric value as a number: numbers, or one-element tensors (through item()).
local function metric_number(k, v, level)
  if type(v) == "number" then return v end
  if graft.is_tensor(v) then return v:item() end
  error(("progress: metric '%s' is a %s, expected a number or a one-element tensor"):format(tostring(k), type(v)),
    level + 1)
end

-- Decides the output mode: "tty", "plain" or "off".
local function mode_of(opts)
  local env = os.getenv("GRAFT_PROGRESS")
  if opts.tty ~= nil then return opts.tty and "tty" or "plain" end
  if env == "off" or env == "0" or env == "none" then return "off" end
  if env == "plain" or env == "tty" then return env end
  if opts.file and opts.file ~= io.stdout then return "plain" end
  return isatty(1) and "tty" or "plain"
end

-- graft.progress(total, opts) / graft.progress.new: a bar over `total` steps (nil: unknown).
-- opts: desc, unit ("it"), tty (force a mode), file (default io.stdout), interval (seconds
-- between redraws, 0.1), width (columns), clock (a function returning seconds).
function M.new(total, opts)
  if total ~= nil and (type(total) ~= "number" or total < 0) then
    error(("progress: total must be a non-negative number or nil, got %s"):format(tostring(total)), 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then error("progress: options must be a table", 2) end
  local clock = opts.clock or graft.clock
  local self = setmetatable({
    total = total and math.floor(total) or nil,
    n = 0,
    desc = opts.desc and tostring(opts.desc) or nil,
    unit = opts.unit or "it",
    mode = mode_of(opts),
    file = opts.file or io.stdout,
    interval = opts.interval or DEFAULT_INTERVAL,
    width = opts.width,
    clock = clock,
    unicode = opts.unicode == nil and utf8_locale() or opts.unicode,
    sums = {}, weights = {}, keys = {}, fixed = {},
    closed = false,
    drawn = false, -- a tty line is on screen, unfinished
  }, Bar)
  self.start = clock()
  self.last_draw = -math.huge
  live[self] = true
  if self.mode == "tty" then self:_draw() end
  return self
end

setmetatable(M, { __call = function(_, total, opts) return M.new(total, opts) end })

local function add_key(self, k)
  if self.sums[k] == nil and self.fixed[k] == nil then self.keys[#self.keys + 1] = k end
end

-- Adds metrics to the running averages, each weighted by w.
local function accumulate(self, metrics, w)
  if metrics == nil then return end
  if type(metrics) ~= "table" then error("progress: metrics must be a table", 3) end
  local ks = {}
  for k in pairs(metrics) do ks[#ks + 1] = tostring(k) end
  require("graft.metrics")._sort_keys(ks) -- a stable order: losses, accuracies, ..., lr
  for _, k in ipairs(ks) do
    local v = metric_number(k, metrics[k], 4)
    add_key(self, k)
    self.fixed[k] = nil
    self.sums[k] = (self.sums[k] or 0) + v * w
    self.weights[k] = (self.weights[k] or 0) + w
  end
end

-- Advances the bar by n steps (default 1) and adds metrics to the running averages
-- (weighted by n: per-sample averages when n counts samples).
function Bar:update(n, metrics)
  if type(n) == "table" and metrics == nil then n, metrics = 1, n end
  n = n or 1
  if type(n) ~= "number" or n < 0 then error("progress: update expects a non-negative step count", 2) end
  if self.closed then error("progress: update on a closed bar", 2) end
  self.n = self.n + n
  accumulate(self, metrics, n > 0 and n or 1)
  if self.mode == "tty" then
    local now = self.clock()
    if now - self.last_draw >= self.interval or (self.total and self.n >= self.total) then self:_draw(now) end
  end
  return self
end

-- Adds metrics to the running averages (weight 1) without advancing.
function Bar:log(metrics)
  if self.closed then error("progress: log on a closed bar", 2) end
  accumulate(self, metrics, 1)
  return self
end

-- Shows values as they are, not averaged (a learning rate, a best score).
function Bar:set(values)
  if type(values) ~= "table" then error("progress: set expects a table", 2) end
  local ks = {}
  for k in pairs(values) do ks[#ks + 1] = tostring(k) end
  require("graft.metrics")._sort_keys(ks)
  for _, k in ipairs(ks) do
    local v = values[k]
    add_key(self, k)
    self.sums[k], self.weights[k] = nil, nil
    self.fixed[k] = (type(v) == "number" or type(v) == "string") and v or metric_number(k, v, 3)
  end
  return self
end

-- The running averages (and set values), as a table.
function Bar:averages()
  local out = {}
  for _, k in ipairs(self.keys) do
    if self.fixed[k] ~= nil then out[k] = self.fixed[k]
    elseif self.weights[k] and self.weights[k] > 0 then out[k] = self.sums[k] / self.weights[k] end
  end
  return out
end

function Bar:elapsed() return self.clock() - self.start end

local function metrics_text(self)
  local avg, parts = self:averages(), {}
  for _, k in ipairs(self.keys) do
    if avg[k] ~= nil then parts[#parts + 1] = k .. "=" .. fmt_value(avg[k]) end
  end
  return table.concat(parts, " ")
end

-- The terminal line: desc, bar, n/total, percent, rate, elapsed, ETA, metrics.
function Bar:_line(now)
  local elapsed = (now or self.clock()) - self.start
  local head, tail = {}, {}
  if self.desc then head[#head + 1] = self.desc end
  local count = self.total and ("%d/%d"):format(self.n, self.total) or tostring(self.n)
  local rate = fmt_rate(self.n, elapsed, self.unit)
  if self.total and self.total > 0 then
    local f = self.n / self.total
    tail[#tail + 1] = count
    tail[#tail + 1] = ("%3d%%"):format(math.floor(f * 100))
    tail[#tail + 1] = rate
    local eta = self.n > 0 and elapsed * (self.total - self.n) / self.n or math.huge
    tail[#tail + 1] = fmt_time(elapsed) .. " eta " .. fmt_time(eta)
  else
    tail[#tail + 1] = count .. " " .. self.unit
    tail[#tail + 1] = rate
    tail[#tail + 1] = fmt_time(elapsed)
  end
  local m = metrics_text(self)
  if m ~= "" then tail[#tail + 1] = m end
  local left, right = table.concat(head, " "), table.concat(tail, " ")
  local cols = self.width or term_width()
  if self.total and self.total > 0 then
    -- The bar takes what is left of the line, between 10 and 30 cells.
    local room = cols - 1 - utf8.len(left) - utf8.len(right) - 4
    local w = math.max(10, math.min(30, room))
    left = (left ~= "" and left .. " " or "") .. draw_bar(self.n / self.total, w, self.unicode)
  end
  local line = left ~= "" and left .. " " .. right or right
  if utf8.len(line) > cols - 1 then -- never wrap: a wrapped line cannot be redrawn with \r
    line = line:sub(1, utf8.offset(line, cols) - 1)
  end
  return line
end

function Bar:_draw(now)
  now = now or self.clock()
  self.last_draw = now
  self.file:write("\r", self:_line(now), "\27[K")
  self.file:flush()
  self.drawn = true
end

-- The one line a bar prints when output is not a terminal.
function Bar:summary()
  local elapsed = self.clock() - self.start
  local count = self.total and self.n ~= self.total and ("%d/%d"):format(self.n, self.total) or tostring(self.n)
  local s = ("%s%s %s in %.1fs (%s)"):format(self.desc and self.desc .. ": " or "", count, self.unit, elapsed,
    fmt_rate(self.n, elapsed, self.unit))
  local m = metrics_text(self)
  if m ~= "" then s = s .. " " .. m end
  return s
end

-- Prints a line of text without breaking the bar: on a terminal the bar's line is
-- cleared, the text printed and the bar redrawn under it.
function Bar:print(...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  local text = table.concat(parts, "\t", 1, parts.n)
  if self.mode == "tty" and not self.closed then
    self.file:write("\r\27[K", text, "\n")
    self:_draw()
  elseif self.mode ~= "off" then
    self.file:write(text, "\n")
    self.file:flush()
  end
end

function Bar:__tostring()
  local s = ("progress bar%s: %s"):format(self.desc and " '" .. self.desc .. "'" or "",
    self.total and ("%d/%d %s"):format(self.n, self.total, self.unit) or ("%d %s"):format(self.n, self.unit))
  local m = metrics_text(self)
  if m ~= "" then s = s .. ", " .. m end
  return s .. (self.closed and " (closed)" or "")
end

-- Finishes the bar: the last redraw and a newline on a terminal, the summary line
-- otherwise. Closing twice does nothing.
function Bar:close()
  if self.closed then return self end
  self.closed = true
  live[self] = nil
  if self.mode == "tty" then
    self:_draw()
    self.file:write("\n")
  elseif self.mode == "plain" then
    self.file:write(self:summary(), "\n")
  end
  self.file:flush()
  self.drawn = false
  return self
end
Bar.__close = function(self) self:close() end

-- The iterator triple of something to loop over: an iterator function, an object with
-- an iter() method or a __call metamethod (a data loader), or an array.
local function iterate(it)
  if type(it) == "function" then return it end
  local mt = getmetatable(it)
  if type(it) == "table" or type(it) == "userdata" then
    local ok, iter = pcall(function() return it.iter end)
    if ok and type(iter) == "function" then return iter(it) end
    if mt and mt.__call then return it() end
    if type(it) == "table" then
      return function(t, i)
        i = i + 1
        if t[i] ~= nil then return i, t[i] end
      end, it, 0, "array"
    end
  end
  error(("progress: cannot iterate over a %s"):format(type(it)), 3)
end

local function length_of(it)
  if type(it) ~= "table" and type(it) ~= "userdata" then return nil end
  local ok, n = pcall(function() return #it end)
  if ok and type(n) == "number" then return n end
  ok, n = pcall(function() return it:len() end)
  if ok and type(n) == "number" then return n end
end

-- for i, ... in bar:wrap(loader): the step number then what the loader yields (an array
-- yields its items); the bar advances as each step ends and closes at the end (or on
-- break: the bar is the loop's closing value).
function Bar:wrap(it)
  local f, s, ctl, kind = iterate(it)
  local i, bar = 0, self
  return function()
    if i > 0 then bar:update(1) end
    local r = table.pack(f(s, ctl))
    if r[1] == nil then
      bar:close()
      return nil
    end
    ctl = r[1]
    i = i + 1
    if kind == "array" then return i, r[2] end
    return i, table.unpack(r, 1, r.n)
  end, nil, nil, bar
end

-- graft.progress.wrap(loader, opts): a bar over the loader (total = #loader or
-- opts.total) and its iteration, as Bar:wrap.
function M.wrap(it, opts)
  opts = opts or {}
  local total = opts.total or length_of(it)
  local bar = M.new(total, opts)
  return bar:wrap(it)
end

---------------------------------------------------------------------------------------
-- For graft.pause: end a bar's unfinished line before other output, and leave paused
-- time out of the bars' rates and ETAs.

function M._break_line()
  for bar in pairs(live) do
    if bar.drawn and bar.mode == "tty" then
      bar.file:write("\n")
      bar.file:flush()
      bar.drawn = false
    end
  end
end

function M._shift(dt)
  for bar in pairs(live) do
    bar.start = bar.start + dt
    bar.last_draw = -math.huge
  end
end

return M
