-- Convolutions on CUDA against the CPU: conv1d, conv2d and conv_transpose2d with stride,
-- padding, dilation and groups (depthwise too), in every floating dtype, forward and
-- every gradient, and errors. They run through cuDNN (graft.backends.cudnn.enabled, the
-- default; the emulated cuDNN over the emulator), except the batch chunks, a feature of
-- the im2col / col2im + cuBLAS path (cuDNN off there). spec/cuda/cudnn_spec.lua runs
-- every case both ways and checks which path ran.
-- TF32 is kept off here (graft.backends.cudnn.allow_tf32, off by default; PyTorch's
-- default is on) so that float32 results match the CPU to float32 precision.
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")

local F = graft.F

C.describe("conv2d on cuda", function()
  C.without_tf32()

  it("matches the CPU with stride, padding, dilation and bias", function()
    local x, w, b = graft.randn(2, 3, 9, 8), graft.randn(4, 3, 3, 3), graft.randn(4)
    C.check(F.conv2d, { x, w, b })
    C.check(function(a, k, c) return F.conv2d(a, k, c, { stride = 2, padding = 1 }) end, { x, w, b })
    C.check(function(a, k) return F.conv2d(a, k, nil, { stride = { 2, 1 }, padding = { 0, 2 }, dilation = { 2, 1 } }) end,
      { x, w })
    C.check(function(a, k, c) return F.conv2d(a, k, c, { padding = "same", dilation = 2 }) end, { x, w, b })
    C.check(function(a, k) return F.conv2d(a, k, nil, { padding = "valid" }) end, { x, graft.randn(2, 3, 2, 4) })
  end)

  it("runs every floating dtype", function()
    for _, dt in ipairs(C.FLOATS) do
      C.check(function(a, k, c) return F.conv2d(a, k, c, { padding = 1 }) end,
        { graft.randn(2, 3, 6, 5):to(dt), graft.randn(4, 3, 3, 3):to(dt), graft.randn(4):to(dt) })
    end
  end)

  it("handles groups, depthwise and pointwise (1x1) kernels, unbatched input", function()
    C.check(function(a, k, c) return F.conv2d(a, k, c, { groups = 2, padding = 1 }) end,
      { graft.randn(2, 4, 5, 5), graft.randn(6, 2, 3, 3), graft.randn(6) })
    C.check(function(a, k) return F.conv2d(a, k, nil, { groups = 4, stride = 2, padding = 1 }) end,
      { graft.randn(3, 4, 7, 7), graft.randn(4, 1, 3, 3) })
    C.check(F.conv2d, { graft.randn(3, 5, 4, 6), graft.randn(7, 5, 1, 1), graft.randn(7) })
    C.check(F.conv2d, { graft.randn(3, 5, 4, 6):half(), graft.randn(7, 5, 1, 1):half() })
    C.check(function(a, k) return F.conv2d(a, k, nil, { stride = 2 }) end, { graft.randn(2, 5, 6, 6), graft.randn(3, 5, 1, 1) })
    C.check(F.conv2d, { graft.randn(3, 6, 5), graft.randn(2, 3, 2, 2), graft.randn(2) })
  end)

  it("reads non-contiguous inputs", function()
    C.check(function(a, k) return F.conv2d(a:transpose(3, 4), k:transpose(3, 4), nil, { padding = 1 }) end,
      { graft.randn(2, 3, 6, 7), graft.randn(4, 3, 3, 2) })
  end)

  it("differentiates input, weight and bias like the CPU", function()
    C.check(function(a, k, c) return F.conv2d(a, k, c, { stride = 2, padding = 1 }) end,
      { C.leaf(2, 3, 7, 6), C.leaf(4, 3, 3, 3), C.leaf(4) }, { grad = true })
    C.check(function(a, k, c) return F.conv2d(a, k, c, { groups = 2, dilation = 2, padding = 2 }) end,
      { C.leaf(2, 4, 6, 6), C.leaf(4, 2, 3, 3), C.leaf(4) }, { grad = true })
    C.check(function(a, k, c) return F.conv2d(a, k, c) end, { C.leaf(3, 4, 3, 5), C.leaf(2, 4, 1, 1), C.leaf(2) },
      { grad = true })
    C.check(function(a, k) return F.conv2d(a, k, nil, { padding = 1 }) end,
      { C.leaf(2, 2, 4, 4, { dtype = "float64" }), C.leaf(3, 2, 3, 3, { dtype = "float64" }) }, { grad = true })
  end)

  it("differentiates 16-bit convolutions", function()
    local x, w, b = graft.randn(2, 3, 5, 5):bfloat16(), graft.randn(4, 3, 3, 3):bfloat16(), graft.randn(4):bfloat16()
    for _, t in ipairs({ x, w, b }) do t.requires_grad = true end
    C.check(function(a, k, c) return F.conv2d(a, k, c, { padding = 1 }) end, { x, w, b },
      { grad = true, rtol = 5e-2, atol = 5e-2 })
  end)

  it("gives only the gradients asked for (a frozen weight)", function()
    local x, w = C.leaf(2, 3, 5, 5), graft.randn(4, 3, 3, 3)
    C.check(function(a, k) return F.conv2d(a, k) end, { x, w }, { grad = true })
  end)

  it("names the op on device mismatch and bad dtypes", function()
    local x, w = graft.randn(1, 3, 5, 5), graft.randn(2, 3, 3, 3)
    H.raises("conv2d: expected all tensors to be on the same device, but found cuda:0 and cpu", F.conv2d, x:cuda(), w)
    H.raises("conv2d: expected all tensors to be on the same device, but found cuda:0 and cpu", F.conv2d, x:cuda(),
      w:cuda(), graft.zeros(2))
    H.raises("conv2d: input is float32 but weight is float64", F.conv2d, x:cuda(), w:double():cuda())
    H.raises("conv2d: expected input with 3 channels", F.conv2d, graft.randn(1, 4, 5, 5):cuda(), w:cuda())
  end)
end)

C.describe("conv1d and conv_transpose on cuda", function()
  C.without_tf32()

  it("conv1d matches the CPU, forward and backward", function()
    C.check(function(a, k, c) return F.conv1d(a, k, c, { stride = 2, padding = 2, dilation = 2 }) end,
      { C.leaf(2, 3, 11), C.leaf(5, 3, 3), C.leaf(5) }, { grad = true })
    C.check(function(a, k) return F.conv1d(a, k, nil, { groups = 3 }) end, { C.leaf(2, 3, 8), C.leaf(6, 1, 2) },
      { grad = true })
    C.check(F.conv1d, { graft.randn(3, 9):half(), graft.randn(2, 3, 4):half() })
  end)

  it("conv_transpose2d matches the CPU, forward and backward", function()
    C.check(function(a, k, c) return F.conv_transpose2d(a, k, c, { stride = 2, padding = 1, output_padding = 1 }) end,
      { C.leaf(2, 4, 3, 4), C.leaf(4, 3, 3, 3), C.leaf(3) }, { grad = true })
    C.check(function(a, k, c) return F.conv_transpose2d(a, k, c, { groups = 2, dilation = 2 }) end,
      { C.leaf(2, 4, 3, 3), C.leaf(4, 1, 2, 2), C.leaf(2) }, { grad = true })
    C.check(F.conv_transpose2d, { C.leaf(2, 3, 4, 4), C.leaf(3, 5, 1, 1), C.leaf(5) }, { grad = true })
    for _, dt in ipairs(C.FLOATS) do
      C.check(function(a, k) return F.conv_transpose2d(a, k, nil, { stride = 2 }) end,
        { graft.randn(2, 3, 3, 3):to(dt), graft.randn(3, 2, 3, 3):to(dt) })
    end
  end)

  it("conv_transpose1d matches the CPU", function()
    C.check(function(a, k, c) return F.conv_transpose1d(a, k, c, { stride = 3, padding = 1 }) end,
      { C.leaf(2, 3, 5), C.leaf(3, 2, 4), C.leaf(2) }, { grad = true })
  end)
end)

C.describe("nn.Conv2d on cuda", function()
  C.without_tf32()

  it("trains like the CPU for one step", function()
    graft.manual_seed(3)
    local cpu = graft.nn.Conv2d(3, 4, 3, { padding = 1 })
    local x = graft.randn(2, 3, 6, 6)
    local dev = graft.nn.Conv2d(3, 4, 3, { padding = 1 })
    dev:load_state_dict(cpu:state_dict())
    dev:to("cuda")
    local yc, yd = cpu(x), dev(x:cuda())
    C.assert_match(yd, yc)
    yc:sum():backward()
    yd:sum():backward()
    C.assert_match(dev.weight.grad, cpu.weight.grad)
    C.assert_match(dev.bias.grad, cpu.bias.grad)
  end)
end)

C.describe("convolutions on cuda in batch chunks (im2col)", function()
  C.without_tf32()
  local saved
  before_each(function()
    saved = graft.backends.cudnn.enabled
    graft.backends.cudnn.enabled = false
  end)
  after_each(function()
    graft._conv_workspace(0)
    graft.backends.cudnn.enabled = saved
  end)

  it("match the CPU one image per chunk and in uneven chunks", function()
    for _, bytes in ipairs({ 1, 3 * 1024, 6 * 1024 }) do
      graft._conv_workspace(bytes)
      C.check(function(a, k, c) return F.conv2d(a, k, c, { padding = 1, stride = 2 }) end,
        { C.leaf(5, 3, 6, 6), C.leaf(4, 3, 3, 3), C.leaf(4) }, { grad = true })
      C.check(function(a, k, c) return F.conv_transpose2d(a, k, c, { stride = 2 }) end,
        { C.leaf(5, 4, 3, 3), C.leaf(4, 3, 3, 3), C.leaf(3) }, { grad = true })
      C.check(function(a, k) return F.conv2d(a, k, nil, { groups = 2 }) end,
        { graft.randn(5, 4, 4, 4):bfloat16(), graft.randn(6, 2, 2, 2):bfloat16() }, { rtol = 3e-2, atol = 3e-2 })
    end
  end)
end)

C.describe("large convolutions on cuda", function()
  C.without_tf32()

  it("match the CPU on a ResNet-like block shape", function()
    C.check(function(a, k, c) return F.conv2d(a, k, c, { stride = 2, padding = 3 }) end,
      { graft.randn(2, 3, 20, 20), graft.randn(8, 3, 7, 7), graft.randn(8) }, { rtol = 1e-4, atol = 1e-4 })
  end)
end)
