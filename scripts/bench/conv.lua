-- conv2d micro-benchmark: graft against PyTorch 1.13 on the CPU, same thread count,
-- at the Fashion-MNIST CNN's sizes (batch 64) and resnet18's (batch 4 at 224x224; one
-- layer4 conv at batch 8 for 64x64 inputs). Runs conv.py for PyTorch's side (as shipped
-- and with OMP_WAIT_POLICY=passive, keeping the better time per case) and prints the
-- ratio torch / graft (above 1: graft is faster).
--   build/graft scripts/bench/conv.lua        (from the repo root, after make), or
--   lua5.4 -e 'package.cpath="build/?.so;"..package.cpath' scripts/bench/conv.lua
-- GRAFT_CONV_WINOGRAD=0 runs 3x3 convolutions through im2col too, BENCH_THREADS=1 on one
-- thread. The machines are shared: compare runs made while they are otherwise idle.
local graft = require("graft")
local F = graft.F
local threads = tonumber(os.getenv("BENCH_THREADS") or "2")
local reps = tonumber(os.getenv("BENCH_REPS") or "20")
graft.set_num_threads(threads)

local timing = dofile((arg[0]:match("^(.*)/") or ".") .. "/timing.lua")
local function best_of(n, fn) return timing.best_of(n, fn, { warm = true }) end

-- name, input, weight, options, bias, input needs grad (keep in sync with conv.py)
local CASES = {
  { "cnn_conv1", { 64, 1, 28, 28 }, { 32, 1, 3, 3 }, {}, true, false },
  { "cnn_conv2", { 64, 32, 13, 13 }, { 64, 32, 3, 3 }, {}, true, true },
  { "r18_conv1", { 4, 3, 224, 224 }, { 64, 3, 7, 7 }, { stride = 2, padding = 3 }, false, false },
  { "r18_layer1", { 4, 64, 56, 56 }, { 64, 64, 3, 3 }, { padding = 1 }, false, true },
  { "r18_layer3", { 4, 256, 14, 14 }, { 256, 256, 3, 3 }, { padding = 1 }, false, true },
  { "r18_down1x1", { 4, 128, 28, 28 }, { 256, 128, 1, 1 }, { stride = 2 }, false, true },
  { "r18_64_layer4", { 8, 512, 2, 2 }, { 512, 512, 3, 3 }, { padding = 1 }, false, true },
}

local g_times, order = {}, {}
local function report(name, s)
  g_times[name] = s
  order[#order + 1] = name
end

for _, c in ipairs(CASES) do
  local name, xs, ws, opts, bias, xg = table.unpack(c)
  local x = graft.randn(xs, { requires_grad = xg })
  local w = graft.randn(ws, { requires_grad = true })
  local b = bias and graft.randn({ ws[1] }, { requires_grad = true }) or nil
  report(name .. "_fwd", best_of(reps, function()
    graft.no_grad(function() F.conv2d(x, w, b, opts):close() end)
  end))
  local g = graft.ones(F.conv2d(x:detach(), w:detach(), b and b:detach(), opts):shape())
  report(name .. "_fwdbwd", best_of(reps, function()
    x.grad, w.grad = nil, nil
    if b then b.grad = nil end
    F.conv2d(x, w, b, opts):backward(g)
  end))
end

do
  local x = graft.randn({ 64, 32, 26, 26 }, { requires_grad = true })
  local g = graft.ones(64, 32, 13, 13)
  report("cnn_maxpool_fwdbwd", best_of(reps, function()
    x.grad = nil
    F.max_pool2d(x, 2):backward(g)
  end))
end

-- PyTorch's side, best of its two thread configurations
local t_times = {}
local script = (arg and arg[0] or "scripts/bench/conv.lua"):gsub("conv%.lua$", "conv.py")
for _, env in ipairs({ "", "OMP_WAIT_POLICY=passive " }) do
  local p = io.popen(("%sBENCH_THREADS=%d BENCH_REPS=%d /usr/bin/python3 %s"):format(env, threads, reps, script))
  for line in p:lines() do
    local name, v = line:match("^(%S+)\t(%S+)$")
    if name then
      v = tonumber(v)
      if not t_times[name] or v < t_times[name] then t_times[name] = v end
    end
  end
  p:close()
end

local function ms(s) return s and ("%.2f ms"):format(s * 1e3) or "-" end
print(("conv2d: graft vs PyTorch (CPU, %d threads; PyTorch best of default and OMP_WAIT_POLICY=passive)"):format(threads))
print(("%-24s %12s %12s %9s"):format("case", "graft", "pytorch", "speedup"))
for _, name in ipairs(order) do
  local gt, pt = g_times[name], t_times[name]
  print(("%-24s %12s %12s %9s"):format(name, ms(gt), ms(pt), (gt and pt) and ("%.2fx"):format(pt / gt) or "-"))
end
