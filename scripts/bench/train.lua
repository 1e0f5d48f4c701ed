-- Training-step benchmark, graft side (issue 4): forward + backward + SGD step
-- (momentum 0.9), float32, CPU, for one case per process so that the peak resident
-- memory (VmHWM) is the case's own. Prints "key<TAB>value" lines that train.sh reads:
-- step_ms (median of the timed steps), fwd_ms (frozen cases: a no_grad forward),
-- step_mflop, gemm_mflop and gemm_ms (MLP cases: multiply-adds per step, and the
-- step's largest product timed alone), rss_start_kb (before the model is built), rss_ready_kb (model, data and optimizer
-- built), peak_kb (VmHWM at the end).
--   build/graft scripts/bench/train.lua --case cnn [--steps 20] [--warmup 3]
-- Cases: mlp64 mlp512 cnn resnet64 resnet224 frozen64 frozen224 transformer.
local graft = require("graft")
local nn = require("graft.nn")
local models = require("graft.models")
local optim = require("graft.optim")
local F = graft.F

local function status_kb(key)
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match(key .. ":%s*(%d+)")) or 0
end

local args = {}
do
  local i = 1
  while arg[i] do
    local k = arg[i]:match("^%-%-(.+)$")
    if not k then error("train.lua: unexpected argument " .. arg[i], 0) end
    args[k] = arg[i + 1]
    i = i + 2
  end
end
local case = args.case or error("train.lua: --case NAME is required", 0)
local threads = tonumber(os.getenv("BENCH_THREADS") or "2")
graft.set_num_threads(threads)
graft.manual_seed(0)
local rss_start = status_kb("VmRSS")

-- Each case: a model, an input, a target, and whether the backbone is frozen.
local function classifier(net, x, classes, frozen)
  return { net = net, x = x, y = graft.randint(0, classes, { x:size(1) }, { dtype = "int64" }), frozen = frozen }
end

local function resnet(n, side, frozen)
  local net = models.resnet18({ num_classes = 10 })
  if frozen then
    net:freeze(function(name) return not name:find("^fc%.") end, { bn_eval = true })
  end
  net:train()
  return classifier(net, graft.randn(n, 3, side, side), 10, frozen)
end

local CASES = {
  mlp64 = function() return classifier(models.mlp({ 784, 256, 10 }), graft.randn(64, 784), 10) end,
  mlp512 = function() return classifier(models.mlp({ 784, 256, 10 }), graft.randn(512, 784), 10) end,
  cnn = function() return classifier(models.small_cnn(), graft.randn(64, 1, 28, 28), 10) end,
  resnet64 = function() return resnet(8, 64, false) end,
  resnet224 = function() return resnet(4, 224, false) end,
  frozen64 = function() return resnet(8, 64, true) end,
  frozen224 = function() return resnet(4, 224, true) end,
  transformer = function()
    -- PyTorch's nn.TransformerEncoderLayer defaults (relu, post-norm, dropout 0.1),
    -- batch_first, training mode; the loss is <output, g> (a fixed upstream gradient).
    local net = nn.TransformerEncoderLayer(256, 4, { dim_feedforward = 1024, dropout = 0.1, batch_first = true })
    net:train()
    return { net = net, x = graft.randn(8, 128, 256), g = graft.randn(8, 128, 256) }
  end,
}
local make = CASES[case] or error("train.lua: unknown case " .. case, 0)
local c = make()
local params = {}
for _, p in ipairs(c.net:parameters()) do
  if p.requires_grad then params[#params + 1] = p end
end
local opt = optim.SGD(params, { lr = 0.01, momentum = 0.9 })
local net, x, y, g = c.net, c.x, c.y, c.g

local function step()
  opt:zero_grad()
  local out = net(x)
  if g then
    out:backward(g)
  else
    F.cross_entropy(out, y):backward()
  end
  opt:step()
end

local function forward() graft.no_grad(function() return net(x) end) end

local function median(t)
  table.sort(t)
  local m = #t // 2
  return #t % 2 == 1 and t[m + 1] or (t[m] + t[m + 1]) / 2
end

-- Median wall and process CPU time (every thread's) of a step, in ms.
local function median_ms(fn, warmup, steps)
  for _ = 1, warmup do fn() end
  local t, c = {}, {}
  for i = 1, steps do
    local t0, c0 = graft.clock(), os.clock()
    fn()
    t[i], c[i] = (graft.clock() - t0) * 1e3, (os.clock() - c0) * 1e3
  end
  return median(t), median(c)
end

local heavy = case:find("224") ~= nil
local warmup = tonumber(args.warmup or (heavy and 2 or 5))
local steps = tonumber(args.steps or (heavy and 7 or (case:find("^mlp") and 200 or 15)))
local rss_ready = status_kb("VmRSS")
local out = {}
local step_ms, step_cpu = median_ms(step, warmup, steps)
out[#out + 1] = ("step_ms\t%.4f"):format(step_ms)
out[#out + 1] = ("step_cpu_ms\t%.4f"):format(step_cpu)
if c.frozen then
  local fwd_ms, fwd_cpu = median_ms(forward, warmup, steps)
  out[#out + 1] = ("fwd_ms\t%.4f"):format(fwd_ms)
  out[#out + 1] = ("fwd_cpu_ms\t%.4f"):format(fwd_cpu)
end
out[#out + 1] = ("rss_start_kb\t%d"):format(rss_start)
out[#out + 1] = ("rss_ready_kb\t%d"):format(rss_ready)
out[#out + 1] = ("peak_kb\t%d"):format(status_kb("VmHWM"))
if case:find("^mlp") then
  -- The roofline inputs, after the peak is read (the products below are garbage until
  -- collected): multiply-adds per step (forward, then the weight and input gradients;
  -- the input itself needs none) and the rate of the step's largest product alone
  -- (x W1^T, the forward of the first layer) through graft.mm.
  local flops, widths, rows = 0, { 784, 256, 10 }, x:size(1)
  for i = 1, #widths - 1 do
    local mn = rows * widths[i] * widths[i + 1]
    flops = flops + 2 * mn * (i == 1 and 2 or 3)
  end
  local w1 = net:state_dict()["0.weight"]
  local gemm_ms = median_ms(function() return graft.mm(x, w1:t()) end, warmup, steps)
  out[#out + 1] = ("step_mflop\t%.3f"):format(flops / 1e6)
  out[#out + 1] = ("gemm_mflop\t%.3f"):format(2 * rows * widths[1] * widths[2] / 1e6)
  out[#out + 1] = ("gemm_ms\t%.4f"):format(gemm_ms)
end
io.write(table.concat(out, "\n"), "\n")
