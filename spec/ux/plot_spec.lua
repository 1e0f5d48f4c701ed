-- `graft plot`: a PNG from a metrics file through gnuplot (the PNG's signature, its
-- IHDR size and its weight are checked), the options, and the errors: gnuplot missing,
-- an empty file, a missing column. Skipped, saying so, where gnuplot is not installed.
local metrics = require("graft.metrics")

local BIN = os.getenv("GRAFT_BIN") or "build/graft"
local HAVE_GNUPLOT = os.execute("command -v gnuplot > /dev/null 2>&1")
if not HAVE_GNUPLOT then
  io.stderr:write("\nplot_spec: SKIPPED the drawing checks: gnuplot is not installed (Debian: gnuplot-nox)\n")
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local temps = {}
local function tmp(ext)
  local p = os.tmpname()
  os.remove(p)
  p = p .. (ext or "")
  temps[#temps + 1] = p
  return p
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  return path
end

-- Runs `graft plot ARGS` (env: a prefix of VAR=value words); returns stdout, stderr, code.
local function plot(args, env)
  local out, err = tmp(), tmp()
  local _, _, code = os.execute(("%s%s plot %s > %s 2> %s"):format(env or "", q(BIN), args, q(out), q(err)))
  return read(out) or "", read(err) or "", code
end

-- The width and height of a PNG (from its IHDR chunk), or nil when it is not a PNG.
local function png_size(data)
  if not data or #data < 24 or data:sub(1, 8) ~= "\137PNG\r\n\26\n" or data:sub(13, 16) ~= "IHDR" then return nil end
  return (">I4"):unpack(data, 17), (">I4"):unpack(data, 21)
end

-- A run's metrics: 120 steps in 4 epochs, a validation row per epoch.
local function run_csv(ext)
  local path = tmp(ext or ".csv")
  local m = metrics.open(path)
  local step = 0
  for epoch = 1, 4 do
    for _ = 1, 30 do
      step = step + 1
      local loss = 2 * math.exp(-step / 40) + 0.1
      m:log({ epoch = epoch, step = step, loss = loss, acc = 1 - loss / 2.2, lr = epoch <= 2 and 0.1 or 0.01 })
    end
    m:log({ epoch = epoch, step = step, val_loss = 2 * math.exp(-step / 50) + 0.2, val_acc = 0.5 + epoch / 10 })
  end
  m:close()
  return path
end

teardown(function()
  for _, p in ipairs(temps) do os.remove(p) end
end)

describe("graft plot", function()
  local function check(name, fn)
    it(name, function()
      if not HAVE_GNUPLOT then return pending("gnuplot is not installed (Debian: gnuplot-nox)") end
      fn()
    end)
  end

  check("draws loss, accuracy and lr panels into a PNG", function()
    local csv, png = run_csv(), tmp(".png")
    local out, err, code = plot(q(csv) .. " -o " .. q(png))
    assert.are.equal(0, code, err)
    assert.are.equal(("wrote %s: loss, val_loss, acc, val_acc, lr against step (124 rows)\n"):format(png), out)
    local data = read(png)
    local w, h = png_size(data)
    assert.are.equal(900, w)
    assert.are.equal(60 + 3 * 260, h) -- three panels
    assert.is_true(#data > 10000, "a PNG of " .. #data .. " bytes")
  end)

  check("takes --x, --y, --size and --title, and reads JSON lines", function()
    local jsonl, png = run_csv(".jsonl"), tmp(".png")
    local out, err, code = plot(q(jsonl) .. " --x epoch --y loss,val_acc --size 640x480 --title 'my run' -o " .. q(png))
    assert.are.equal(0, code, err)
    assert.truthy(out:find("loss, val_acc against epoch", 1, true), out)
    local w, h = png_size(read(png))
    assert.are.equal(640, w)
    assert.are.equal(480, h)
  end)

  check("names the PNG after the metrics file by default", function()
    local csv = run_csv()
    local png = csv:gsub("%.csv$", ".png")
    temps[#temps + 1] = png
    local _, err, code = plot(q(csv))
    assert.are.equal(0, code, err)
    assert.truthy(png_size(read(png)))
  end)

  it("says which package to install when gnuplot is missing", function()
    local csv = run_csv()
    local _, err, code = plot(q(csv) .. " -o " .. q(tmp(".png")), "GRAFT_GNUPLOT=/nonexistent/gnuplot ")
    assert.are.equal(1, code)
    assert.truthy(err:find("graft plot: gnuplot is not installed", 1, true), err)
    assert.truthy(err:find("install Debian's gnuplot-nox", 1, true), err)
  end)

  check("says when the file is empty or has no rows", function()
    local empty = write(tmp(".csv"), "")
    local _, err, code = plot(q(empty) .. " -o " .. q(tmp(".png")))
    assert.are.equal(1, code)
    assert.are.equal(("graft plot: %s is empty: no metrics to plot\n"):format(empty), err)
    local header = write(tmp(".csv"), "step,loss\n")
    _, err, code = plot(q(header) .. " -o " .. q(tmp(".png")))
    assert.are.equal(1, code)
    assert.are.equal(("graft plot: %s has no rows (only a header): no metrics to plot\n"):format(header), err)
    _, err, code = plot(q("/nonexistent/m.csv"))
    assert.are.equal(1, code)
    assert.truthy(err:find("graft plot: cannot open /nonexistent/m.csv", 1, true), err)
  end)

  check("says when a column is missing or not numeric", function()
    local csv = run_csv()
    local _, err, code = plot(q(csv) .. " --y loss,accuracy -o " .. q(tmp(".png")))
    assert.are.equal(1, code)
    assert.are.equal(("graft plot: no column 'accuracy' in %s (columns: epoch, step, loss, acc, lr, val_loss, val_acc)\n")
      :format(csv), err)
    _, err, code = plot(q(csv) .. " --x time -o " .. q(tmp(".png")))
    assert.are.equal(1, code)
    assert.truthy(err:find("no column 'time'", 1, true), err)
    local words = write(tmp(".csv"), "step,note\n1,hello\n")
    _, err, code = plot(q(words) .. " -o " .. q(tmp(".png")))
    assert.are.equal(1, code)
    assert.truthy(err:find("has no metric columns to plot (columns: step, note)", 1, true), err)
  end)

  check("is graft.metrics.plot in scripts, raising errors", function()
    local csv, png = run_csv(), tmp(".png")
    assert.are.equal(png, metrics.plot(csv, { output = png, y = { "loss", "lr" }, width = 500, height = 400 }))
    local w, h = png_size(read(png))
    assert.are.equal(500, w)
    assert.are.equal(400, h)
    local ok, err = pcall(metrics.plot, csv, { y = { "nope" } })
    assert.is_false(ok)
    assert.truthy(err:find("metrics.plot: no column 'nope' in", 1, true), err)
  end)

  it("rejects bad usage with exit status 2", function()
    local _, err, code = plot("")
    assert.are.equal(2, code)
    assert.truthy(err:find("graft plot: a metrics file is needed", 1, true), err)
    _, err, code = plot("m.csv --size big")
    assert.are.equal(2, code)
    assert.truthy(err:find("--size must be WxH", 1, true), err)
    local out
    out, _, code = plot("--help")
    assert.are.equal(0, code)
    assert.truthy(out:find("gnuplot-nox", 1, true))
  end)
end)
