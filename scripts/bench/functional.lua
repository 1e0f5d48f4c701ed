-- Fused functional kernels micro-benchmark: graft against PyTorch 1.13 on the CPU, same
-- thread count. Forward + backward of softmax, log_softmax, layer_norm, batch_norm,
-- cross_entropy, gelu, relu and dropout at transformer and CNN sizes. Runs
-- functional.py for PyTorch's side (as shipped and with OMP_WAIT_POLICY=passive, keeping
-- the better time per case) and prints the ratio torch / graft (above 1: graft is faster).
--   build/graft scripts/bench/functional.lua        (from the repo root, after make)
local graft = require("graft")
local F = graft.F
local threads = tonumber(os.getenv("BENCH_THREADS") or "2")
local reps = tonumber(os.getenv("BENCH_REPS") or "20")
graft.set_num_threads(threads)

local timing = dofile((arg[0]:match("^(.*)/") or ".") .. "/timing.lua")
local function best_of(n, fn) return timing.best_of(n, fn, { warm = true }) end

local g_times, order = {}, {}
-- forward + backward of fn over the leaves with a random upstream gradient
local function case(name, fn, leaves)
  local g = graft.randn(fn(table.unpack(leaves)):shape())
  g_times[name] = best_of(reps, function()
    for _, t in ipairs(leaves) do t.grad = nil end
    fn(table.unpack(leaves)):backward(g)
  end)
  order[#order + 1] = name
end

local function R(...) return graft.randn({ ... }, { requires_grad = true }) end

-- keep in sync with functional.py
case("softmax_attn", function(x) return F.softmax(x, -1) end, { R(8, 4, 128, 128) })
case("log_softmax_vocab", function(x) return F.log_softmax(x, -1) end, { R(256, 8192) })
case("layer_norm_1024x256", function(x, w, b) return F.layer_norm(x, 256, w, b) end, { R(1024, 256), R(256), R(256) })
case("batch_norm_cnn", function(x, w, b) return F.batch_norm(x, nil, nil, { weight = w, bias = b, training = true }) end,
  { R(64, 32, 26, 26), R(32), R(32) })
case("batch_norm_mlp", function(x, w, b) return F.batch_norm(x, nil, nil, { weight = w, bias = b, training = true }) end,
  { R(512, 256), R(256), R(256) })
local t10 = graft.randint(0, 10, { 512 }, { dtype = "int64" })
case("cross_entropy_512x10", function(x) return F.cross_entropy(x, t10) end, { R(512, 10) })
local t1k = graft.randint(0, 1000, { 512 }, { dtype = "int64" })
case("cross_entropy_512x1000", function(x) return F.cross_entropy(x, t1k, { label_smoothing = 0.1 }) end, { R(512, 1000) })
case("gelu_1M", function(x) return F.gelu(x) end, { R(1024, 1024) })
case("relu_1M", function(x) return F.relu(x) end, { R(1024, 1024) })
case("dropout_1M", function(x) return F.dropout(x, 0.1) end, { R(1024, 1024) })

-- PyTorch's side, best of its two thread configurations
local t_times = {}
local script = (arg and arg[0] or "scripts/bench/functional.lua"):gsub("functional%.lua$", "functional.py")
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

local function ms(s) return s and ("%.3f ms"):format(s * 1e3) or "-" end
print(("graft.F fused kernels, forward + backward: graft vs PyTorch (CPU, %d threads; PyTorch best of default and "
  .. "OMP_WAIT_POLICY=passive)"):format(threads))
print(("%-24s %12s %12s %9s"):format("case", "graft", "pytorch", "speedup"))
for _, name in ipairs(order) do
  local gt, pt = g_times[name], t_times[name]
  print(("%-24s %12s %12s %9s"):format(name, ms(gt), ms(pt), (gt and pt) and ("%.2fx"):format(pt / gt) or "-"))
end
