-- `graft plot METRICS [-o OUT.png] [--x COL] [--y A,B,...]`: training curves from a
-- metrics file (graft.metrics: CSV or JSON lines) drawn by gnuplot into a PNG: one panel
-- for the losses, one for the accuracies, one for other values and one for the learning
-- rates, stacked over a shared x axis (step, epoch or the row number).
local metrics = require("graft.metrics")
local U = require("graft.cli.inspect").util

local USAGE = "usage: graft plot METRICS.csv|.jsonl [-o OUT.png] [--x COLUMN] [--y A,B,...] [--title T] [--size WxH]"
local HELP = [[
Draws the columns of a metrics file (as graft.metrics writes it) against the x column
with gnuplot (Debian package gnuplot-nox; $GRAFT_GNUPLOT names another program), into
a PNG: losses, accuracies, other values and learning rates each in their own panel
(a column's panel comes from its name: *loss*, *acc*, lr / *_lr / learning_rate).
Rows that share an x value (several per epoch with --x epoch) are averaged; empty
cells are skipped.

  -o, --output OUT  the PNG to write (default: METRICS with .png for its extension)
  --x COLUMN        the x axis: default step, else epoch, else the row number
  --y A,B,...       the columns to draw (default: every numeric column but the counters
                    epoch, step, iter, batch, time, run)
  --title T         the title (default: the metrics file's name)
  --size WxH        the image size in pixels (default 900 wide, 260 per panel)
]]

local COUNTERS = { epoch = true, step = true, iter = true, batch = true, time = true, run = true }
local PANELS = {
  { kind = "loss", label = "loss" },
  { kind = "acc", label = "accuracy" },
  { kind = "other", label = "value" },
  { kind = "lr", label = "learning rate" },
}

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function gq(s) return "'" .. tostring(s):gsub("'", "''") .. "'" end

local function finite(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end

local function has_numbers(rows, col)
  for _, r in ipairs(rows) do if finite(r[col]) then return true end end
  return false
end

-- The gnuplot program, or an error that says what to install.
local function find_gnuplot()
  local prog = os.getenv("GRAFT_GNUPLOT")
  if prog == nil or prog == "" then prog = "gnuplot" end
  if not os.execute("command -v " .. q(prog) .. " > /dev/null 2>&1") then
    error(("gnuplot is not installed (no '%s' on PATH): install Debian's gnuplot-nox " ..
      "(sudo apt-get install gnuplot-nox), or set GRAFT_GNUPLOT to a gnuplot program"):format(prog), 0)
  end
  return prog
end

-- (x, y) points of column col against x (nil x: the row number), averaged over rows
-- that share an x value, in the order the x values first appear.
local function series(rows, x, col)
  local xs, sums, counts = {}, {}, {}
  for i, r in ipairs(rows) do
    local xv = x and r[x] or i
    local yv = r[col]
    if finite(xv) and finite(yv) then
      if not sums[xv] then
        xs[#xs + 1] = xv
        sums[xv], counts[xv] = 0, 0
      end
      sums[xv] = sums[xv] + yv
      counts[xv] = counts[xv] + 1
    end
  end
  local pts = {}
  for i, xv in ipairs(xs) do pts[i] = { xv, sums[xv] / counts[xv] } end
  return pts
end

local function read_text(path)
  local f, err = io.open(path, "rb")
  if not f then error(("cannot open %s: %s"):format(path, (tostring(err):gsub("^[^:]*: ", ""))), 0) end
  local text = f:read("a")
  f:close()
  return text
end

local function run_gnuplot(prog, script_path, err_path)
  local ok = os.execute(q(prog) .. " " .. q(script_path) .. " > /dev/null 2> " .. q(err_path))
  local f = io.open(err_path, "rb")
  local err = f and f:read("a") or ""
  if f then f:close() end
  return ok, err
end

-- Draws the metrics file at path into a PNG; returns the PNG's path, the columns drawn
-- (a list), the x column (nil: the row number) and the row count. opts: output, x, y (a
-- list or "a,b"), title, width, height. Errors are raised as plain messages.
local function draw(path, opts)
  opts = opts or {}
  local out = opts.output or (path:gsub("%.[^./]*$", "") .. ".png")
  if out == path then out = path .. ".png" end
  local width, height = opts.width, opts.height
  local yspec = type(opts.y) == "table" and table.concat(opts.y, ",") or opts.y

  local prog = find_gnuplot()
  local text = read_text(path)
  if not text:match("%S") then error(("%s is empty: no metrics to plot"):format(path), 0) end
  local data = metrics.read(path)
  if #data.rows == 0 then error(("%s has no rows (only a header): no metrics to plot"):format(path), 0) end
  local known = {}
  for _, c in ipairs(data.columns) do known[c] = true end
  local columns_text = table.concat(data.columns, ", ")

  -- The x axis.
  local x = opts.x
  if x then
    if x ~= "row" and not known[x] then
      error(("no column '%s' in %s (columns: %s)"):format(x, path, columns_text), 0)
    end
    if x == "row" and not known[x] then x = nil end
    if x and not has_numbers(data.rows, x) then error(("column '%s' of %s has no numbers"):format(x, path), 0) end
  else
    for _, c in ipairs({ "step", "epoch" }) do
      if known[c] and has_numbers(data.rows, c) then
        x = c
        break
      end
    end
  end

  -- The y columns.
  local ys = {}
  if yspec then
    for c in yspec:gmatch("[^,]+") do
      c = c:match("^%s*(.-)%s*$")
      if not known[c] then error(("no column '%s' in %s (columns: %s)"):format(c, path, columns_text), 0) end
      if not has_numbers(data.rows, c) then error(("column '%s' of %s has no numbers"):format(c, path), 0) end
      ys[#ys + 1] = c
    end
    if #ys == 0 then error("--y needs column names, e.g. --y loss,acc", 0) end
  else
    for _, c in ipairs(data.columns) do
      if c ~= x and not COUNTERS[c] and has_numbers(data.rows, c) then ys[#ys + 1] = c end
    end
    if #ys == 0 then error(("%s has no metric columns to plot (columns: %s)"):format(path, columns_text), 0) end
  end

  -- The data file: one block per series (gnuplot's `index`), and the panels.
  local data_path, script_path, err_path = os.tmpname(), os.tmpname(), os.tmpname()
  local function cleanup()
    os.remove(data_path)
    os.remove(script_path)
    os.remove(err_path)
  end
  local blocks, panels, npoints = {}, {}, 0
  for _, spec in ipairs(PANELS) do
    local panel = { label = spec.label, kind = spec.kind, series = {} }
    for _, c in ipairs(ys) do
      if metrics.kind(c) == spec.kind then
        local pts = series(data.rows, x, c)
        if #pts > 0 then
          local lines = {}
          for i, p in ipairs(pts) do lines[i] = ("%.17g %.17g"):format(p[1], p[2]) end
          blocks[#blocks + 1] = table.concat(lines, "\n")
          panel.series[#panel.series + 1] = { name = c, index = #blocks - 1, n = #pts, pts = pts }
          npoints = npoints + #pts
        end
      end
    end
    if #panel.series > 0 then panels[#panels + 1] = panel end
  end
  local f = assert(io.open(data_path, "wb"))
  f:write(table.concat(blocks, "\n\n\n"), "\n")
  f:close()

  width = width or 900
  height = height or (60 + 260 * #panels)
  local title = opts.title or path:match("[^/]*$")
  local function script(terminal)
    local s = {
      ("set terminal %s size %d,%d noenhanced font ',10'"):format(terminal, width, height),
      "set output " .. gq(out),
      "set datafile separator whitespace",
      ("set multiplot layout %d,1 title %s"):format(#panels, gq(title)),
      "set grid",
      "set xlabel " .. gq(x or "row"),
    }
    for _, panel in ipairs(panels) do
      s[#s + 1] = "set ylabel " .. gq(panel.label)
      -- Accuracies rise and losses fall: keep the key out of the curves' way.
      s[#s + 1] = panel.kind == "acc" and "set key bottom right opaque" or "set key top right opaque"
      local lo, hi = math.huge, -math.huge
      for _, sr in ipairs(panel.series) do
        for _, p in ipairs(sr.pts) do lo, hi = math.min(lo, p[2]), math.max(hi, p[2]) end
      end
      if panel.kind == "lr" and lo > 0 and hi / lo > 20 then s[#s + 1] = "set logscale y"
      else s[#s + 1] = "unset logscale y" end
      local items = {}
      for _, sr in ipairs(panel.series) do
        local style = sr.n <= 40 and "linespoints pt 7 ps 0.6" or "lines"
        items[#items + 1] = ("%s index %d using 1:2 with %s lw 2 title %s"):format(gq(data_path), sr.index, style,
          gq(sr.name))
      end
      s[#s + 1] = "plot " .. table.concat(items, ", \\\n     ")
    end
    s[#s + 1] = "unset multiplot"
    s[#s + 1] = "set output"
    return table.concat(s, "\n") .. "\n"
  end

  local ok, err
  for _, terminal in ipairs({ "pngcairo", "png" }) do
    os.remove(out)
    f = assert(io.open(script_path, "wb"))
    f:write(script(terminal))
    f:close()
    ok, err = run_gnuplot(prog, script_path, err_path)
    if ok then break end
    if not err:find("unknown or ambiguous terminal", 1, true) then break end
  end
  cleanup()
  local png = io.open(out, "rb")
  local size = png and png:seek("end") or 0
  if png then png:close() end
  if not ok or size == 0 then
    error(("gnuplot failed to draw %s:\n%s"):format(out, err ~= "" and err or "(no message)"), 0)
  end
  local names = {}
  for _, panel in ipairs(panels) do
    for _, sr in ipairs(panel.series) do names[#names + 1] = sr.name end
  end
  return out, names, x, #data.rows
end

local function plot(args)
  local pos, opts = U.parse_args(args, {
    ["-o"] = "value", ["--output"] = "value", ["--x"] = "value", ["--y"] = "value",
    ["--title"] = "value", ["--size"] = "value",
  })
  if #pos ~= 1 then U.usage_error(#pos == 0 and "a metrics file is needed" or "too many arguments") end
  local width, height
  if opts.size then
    width, height = opts.size:match("^(%d+)[xX](%d+)$")
    width, height = tonumber(width), tonumber(height)
    if not width or width < 100 or height < 100 then
      U.usage_error(("--size must be WxH in pixels (at least 100x100), not '%s'"):format(opts.size))
    end
  end
  local out, names, x, nrows = draw(pos[1], { output = opts.o or opts.output, x = opts.x, y = opts.y,
    title = opts.title, width = width, height = height })
  io.stdout:write(("wrote %s: %s against %s (%d rows)\n"):format(out, table.concat(names, ", "), x or "row", nrows))
  return 0
end

return {
  main = function(...) return U.run("plot", USAGE, HELP, plot, ...) end,
  draw = draw,
}
