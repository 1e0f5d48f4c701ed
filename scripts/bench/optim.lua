-- Optimizer benchmark, graft side: one step over a model of ~100M float32 parameters
-- (96 weights of 1024 x 1024 and 96 biases of 1024), SGD with momentum and AdamW.
-- Prints "name<TAB>seconds per step" lines; scripts/bench/optim.sh runs the PyTorch side
-- (optim.py) in the same run and prints ratios.
local graft = require("graft")
local optim = require("graft.optim")
local threads = tonumber(os.getenv("BENCH_THREADS") or "2")
graft.set_num_threads(threads)

local LAYERS, D = 96, 1024
graft.manual_seed(0)
local params = {}
for i = 1, LAYERS do
  for _, shape in ipairs({ { D, D }, { D } }) do
    local p = graft.randn(table.unpack(shape)) * 0.02
    p.requires_grad = true
    p.grad = graft.randn(table.unpack(shape)) * 0.01
    params[#params + 1] = { ("layers.%d.%s"):format(i - 1, #shape == 2 and "weight" or "bias"), p }
  end
end
local numel = 0
for _, e in ipairs(params) do numel = numel + e[2]:numel() end

local timing = dofile((arg[0]:match("^(.*)/") or ".") .. "/timing.lua")
local best_of, report = timing.best_of, timing.report

report("numel", numel)
for _, case in ipairs({
  { "sgd_momentum", function() return optim.SGD(params, { lr = 1e-3, momentum = 0.9, weight_decay = 1e-4 }) end },
  { "adamw", function() return optim.AdamW(params, { lr = 1e-3, weight_decay = 0.01 }) end },
}) do
  local opt = case[2]()
  opt:step() -- creates the state
  opt:step()
  report(case[1], best_of(5, function() opt:step() end))
  opt = nil
  collectgarbage()
  collectgarbage()
end
