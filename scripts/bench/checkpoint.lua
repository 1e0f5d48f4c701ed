-- Checkpoint benchmark, graft side (run through scripts/bench/checkpoint.sh, which runs
-- the PyTorch side, checkpoint.py, in the same run and prints the ratios). Prints
-- "name<TAB>value" lines.
--   graft checkpoint.lua save DIR    a 1 GiB state dict (256 x 1M float32) saved as
--                                    DIR/graft.safetensors and DIR/graft.pth: seconds
--   graft checkpoint.lua load FILE   graft.load to a usable state dict, then the sum of
--                                    every tensor (every byte read): seconds, peak RSS
local graft = require("graft")
require("graft.checkpoint")
graft.set_num_threads(tonumber(os.getenv("BENCH_THREADS") or "2"))
local wall = graft.clock

local N_TENSORS, N_FLOATS = 256, 1024 * 1024

local function report(name, v) io.write(("%s\t%.9g\n"):format(name, v)) end

-- kB fields of /proc/self/status as bytes
local function status(field)
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  return (tonumber(s:match(field .. ":%s*(%d+)")) or 0) * 1024
end

local mode, path = arg[1], arg[2]
if mode == "save" then
  local sd = graft.OrderedDict()
  for i = 1, N_TENSORS do sd[("layer%03d.weight"):format(i)] = graft.randn(N_FLOATS) end
  local bytes = N_TENSORS * N_FLOATS * 4
  for _, ext in ipairs({ "safetensors", "pth" }) do
    if ext == "safetensors" or graft._pth_save then
      local file = path .. "/graft." .. ext
      local t0 = wall()
      graft.save(sd, file)
      local dt = wall() - t0
      report("save_" .. ext .. "_s", dt)
      report("save_" .. ext .. "_GBps", bytes / dt / 1e9)
    end
  end
elseif mode == "load" then
  collectgarbage()
  local rss0 = status("VmRSS")
  local t0 = wall()
  local sd = graft.load(path)
  local t1 = wall()
  local total, n = 0.0, 0
  for _, t in pairs(sd) do
    total = total + t:sum():item()
    n = n + 1
  end
  local t2 = wall()
  assert(n == N_TENSORS, "expected " .. N_TENSORS .. " tensors, got " .. n)
  report("load_s", t1 - t0)
  report("read_s", t2 - t1)
  report("load_read_s", t2 - t0)
  report("peak_rss_delta_bytes", status("VmHWM") - rss0)
  report("rss_anon_bytes", status("RssAnon"))
  report("checksum", total)
else
  io.stderr:write("usage: graft scripts/bench/checkpoint.lua save DIR | load FILE\n")
  os.exit(2)
end
