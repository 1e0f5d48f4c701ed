-- Foundation benchmark, graft side: prints "name<TAB>seconds per call" lines.
-- Run through scripts/bench/run.sh, which runs the PyTorch side (ops.py) in the same
-- run and prints ratios.
local graft = require("graft")
local threads = tonumber(os.getenv("BENCH_THREADS") or "2")
graft.set_num_threads(threads)

local timing = dofile((arg[0]:match("^(.*)/") or ".") .. "/timing.lua")
local best_of, report = timing.best_of, timing.report

-- (1) one small op from the scripting language
do
  local a, b = graft.ones(4), graft.ones(4)
  local n = 1000000
  local s = best_of(3, function()
    for _ = 1, n do local _ = a + b end
  end)
  report("small_add_4", s / n)
end

-- (2) large elementwise ops over 16M float32
do
  local N = 16 * 1024 * 1024
  local a, b = graft.rand(N), graft.rand(N)
  local reps = 10
  report("add_16M_fresh", best_of(reps, function() local c = a + b; c:close() end))
  report("mul_16M_fresh", best_of(reps, function() local c = a * b; c:close() end))
  report("exp_16M_fresh", best_of(reps, function() local c = a:exp(); c:close() end))
  local c = a:clone()
  report("add_16M_inplace", best_of(reps, function() c:add_(b) end))
  report("mul_16M_inplace", best_of(reps, function() c:mul_(b) end))
  report("exp_16M_inplace", best_of(reps, function() c:copy_(a); c:exp_() end) )
end

-- (3) matmul
for _, n in ipairs({ 256, 512, 1024, 2048 }) do
  local a, b = graft.randn(n, n), graft.randn(n, n)
  local reps = n <= 512 and 20 or 5
  report("matmul_" .. n, best_of(reps, function() local c = a:matmul(b); c:close() end))
end
