-- GPU benchmark, graft side (issue 7): prints "case<TAB>value<TAB>unit" lines; the
-- PyTorch side is gpu.py and scripts/gpu/check.sh prints the two side by side.
--   sgemm_N / bf16gemm_N   matmul of two N x N matrices (TFLOP/s), TF32 off for sgemm
--   resnet18               training step, batch 64 x 3 x 224 x 224, SGD momentum,
--                          TF32 allowed and cudnn.benchmark on, on both sides: convolutions
--                          through cuDNN with timed algorithm choices (images/s;
--                          GPU_BENCH_CUDNN_BENCHMARK=0: cuDNN's heuristic choices instead)
--   resnet18_im2col        the same with graft.backends.cudnn.enabled = false: im2col +
--                          cuBLAS convolutions (graft only; compare with resnet18)
--   adamw_100m             one AdamW step over 100.8M float32 parameters (ms)
-- GPU_BENCH_QUICK=1 shrinks every case (a smoke test, e.g. over the CUDA emulator).
local graft = require("graft")
local quick = os.getenv("GPU_BENCH_QUICK") == "1"
local cudnn_benchmark = os.getenv("GPU_BENCH_CUDNN_BENCHMARK") ~= "0"
local only = arg[1]
local sync, clock = graft.cuda.synchronize, graft.clock

local function timed(iters, fn)
  for _ = 1, quick and 1 or 3 do fn() end
  sync()
  local t0 = clock()
  for _ = 1, iters do fn() end
  sync()
  return (clock() - t0) / iters
end

local function report(name, value, unit)
  io.write(("%s\t%.6g\t%s\n"):format(name, value, unit))
  io.flush()
end

local function want(name) return not only or name:find(only, 1, true) end

graft.manual_seed(0)
for _, n in ipairs(quick and { 64 } or { 4096, 8192 }) do
  for _, dt in ipairs({ "float32", "bfloat16" }) do
    local name = (dt == "float32" and "sgemm_" or "bf16gemm_") .. n
    if want(name) then
      graft.backends.cuda.matmul.allow_tf32 = false
      local a = graft.randn(n, n, { device = "cuda" }):to(dt)
      local b = graft.randn(n, n, { device = "cuda" }):to(dt)
      local s = timed(quick and 1 or 20, function() return graft.matmul(a, b) end)
      report(name, 2 * n ^ 3 / s / 1e12, "TFLOP/s")
      a, b = nil, nil
      collectgarbage()
    end
  end
end

-- One ResNet-18 training step per iteration, reported as `name`; cudnn: whether the
-- convolutions go through cuDNN (else im2col + cuBLAS).
local function resnet18(name, cudnn)
  local models, optim, F = require("graft.models"), require("graft.optim"), graft.F
  graft.backends.cuda.matmul.allow_tf32 = true
  graft.backends.cudnn.allow_tf32 = true -- convolutions: PyTorch's default
  graft.backends.cudnn.enabled = cudnn
  graft.backends.cudnn.benchmark = cudnn_benchmark -- gpu.py: torch.backends.cudnn.benchmark = True
  graft.cuda.reset_peak_memory_stats()
  local batch, size = quick and 2 or 64, quick and 32 or 224
  local net = models.resnet18({ num_classes = 1000 }):to("cuda")
  net:train()
  local opt = optim.SGD(net:parameters(), { lr = 0.01, momentum = 0.9 })
  local x = graft.randn(batch, 3, size, size, { device = "cuda" })
  local y = graft.randint(0, 1000, { batch }, { device = "cuda" })
  local s = timed(quick and 1 or 10, function()
    opt:zero_grad()
    local loss = F.cross_entropy(net(x), y)
    loss:backward()
    opt:step()
  end)
  report(name, batch / s, "images/s")
  report(name .. "_peak_mem", graft.cuda.max_memory_allocated() / 2 ^ 20, "MiB")
  graft.backends.cuda.matmul.allow_tf32 = false
  graft.backends.cudnn.allow_tf32 = false
  graft.backends.cudnn.enabled = true
  graft.backends.cudnn.benchmark = false
  net, opt, x, y = nil, nil, nil, nil
  collectgarbage()
  graft.cuda.empty_cache()
end

if want("resnet18") then resnet18("resnet18", true) end
if want("resnet18_im2col") then resnet18("resnet18_im2col", false) end

if want("adamw") then
  local optim = require("graft.optim")
  local layers, d = quick and 2 or 96, quick and 64 or 1024
  local params = {}
  for _ = 1, layers do
    for _, shape in ipairs({ { d, d }, { d } }) do
      local p = (graft.randn(shape, { device = "cuda" }) * 0.02):detach()
      p.requires_grad = true
      p.grad = graft.randn(shape, { device = "cuda" }) * 0.01
      params[#params + 1] = p
    end
  end
  local opt = optim.AdamW(params, { lr = 1e-3, weight_decay = 0.01 })
  local s = timed(quick and 1 or 20, function() opt:step() end)
  report("adamw_100m", s * 1e3, "ms")
end
