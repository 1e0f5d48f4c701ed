-- Transformer encoder layer benchmark: graft against PyTorch 1.13 on the CPU, same
-- thread count. The layer is PyTorch's nn.TransformerEncoderLayer (d_model 256, 4 heads,
-- feed-forward 1024, dropout 0.1, relu, post-norm, batch_first) written with graft.F
-- (linear, scaled_dot_product_attention, dropout, layer_norm), in training mode, batch
-- 8, sequence 128: forward alone, and forward + backward + an SGD step. Runs
-- transformer.py for PyTorch's side (as shipped and with OMP_WAIT_POLICY=passive,
-- keeping the better time) and prints the ratio torch / graft (above 1: graft is faster).
--   build/graft scripts/bench/transformer.lua        (from the repo root, after make)
local graft = require("graft")
local F = graft.F
local threads = tonumber(os.getenv("BENCH_THREADS") or "2")
local reps = tonumber(os.getenv("BENCH_REPS") or "20")
graft.set_num_threads(threads)
local B, T, D, H, FF = 8, 128, 256, 4, 1024
local DH = D // H

local timing = dofile((arg[0]:match("^(.*)/") or ".") .. "/timing.lua")
local function best_of(n, fn) return timing.best_of(n, fn, { warm = true }) end

graft.manual_seed(0)
local function param(...)
  local shape = { ... }
  local fan_in = shape[#shape]
  return (graft.rand(shape) * 2 - 1):mul_(1 / math.sqrt(fan_in)):requires_grad_()
end
local P = {
  in_w = param(3 * D, D), in_b = param(3 * D),
  out_w = param(D, D), out_b = param(D),
  l1_w = param(FF, D), l1_b = param(FF),
  l2_w = param(D, FF), l2_b = param(D),
  n1_w = graft.ones(D, { requires_grad = true }), n1_b = graft.zeros(D, { requires_grad = true }),
  n2_w = graft.ones(D, { requires_grad = true }), n2_b = graft.zeros(D, { requires_grad = true }),
}
local params = {}
for _, p in pairs(P) do params[#params + 1] = p end

-- [B, T, D] -> [B, H, T, DH]
local function heads(t) return t:reshape(B, T, H, DH):transpose(2, 3) end

local function layer(x)
  local qkv = F.linear(x, P.in_w, P.in_b):chunk(3, -1)
  local a = F.scaled_dot_product_attention(heads(qkv[1]), heads(qkv[2]), heads(qkv[3]), { dropout_p = 0.1 })
  a = F.linear(a:transpose(2, 3):reshape(B, T, D), P.out_w, P.out_b)
  x = F.layer_norm(x + F.dropout(a, 0.1), D, P.n1_w, P.n1_b)
  local f = F.linear(F.dropout(F.relu(F.linear(x, P.l1_w, P.l1_b)), 0.1), P.l2_w, P.l2_b)
  return F.layer_norm(x + F.dropout(f, 0.1), D, P.n2_w, P.n2_b)
end

local x = graft.randn(B, T, D)
local g = graft.randn(B, T, D)
local g_times, order = {}, {}
local function report(name, s)
  g_times[name] = s
  order[#order + 1] = name
end

report("encoder_fwd", best_of(reps, function() graft.no_grad(function() layer(x) end) end))
report("encoder_step", best_of(reps, function()
  for _, p in ipairs(params) do p.grad = nil end
  layer(x):backward(g)
  graft.no_grad(function()
    for _, p in ipairs(params) do p:add_(p.grad, { alpha = -1e-3 }) end
  end)
end))

-- PyTorch's side, best of its two thread configurations
local t_times = {}
local script = (arg and arg[0] or "scripts/bench/transformer.lua"):gsub("transformer%.lua$", "transformer.py")
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
print(("transformer encoder layer: graft vs PyTorch (CPU, %d threads; PyTorch best of default and OMP_WAIT_POLICY=passive)")
  :format(threads))
print(("%-24s %12s %12s %9s"):format("case", "graft", "pytorch", "speedup"))
for _, name in ipairs(order) do
  local gt, pt = g_times[name], t_times[name]
  print(("%-24s %12s %12s %9s"):format(name, ms(gt), ms(pt), (gt and pt) and ("%.2fx"):format(pt / gt) or "-"))
end
