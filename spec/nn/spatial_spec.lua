-- graft.F's spatial functions against PyTorch 1.13 (spec/fixtures/gen_spatial.py):
-- conv1d, conv2d, conv_transpose1d/2d, max_pool2d, avg_pool2d, adaptive pools,
-- interpolate and pad. Forward values and the gradients of every input, each option,
-- non-contiguous inputs, float64 gradchecks, errors (naming op and shapes, leaking
-- nothing), and frozen weights costing no gradient work.
local graft = require("graft")
local H = require("spec.helpers")
local F = graft.F
local fx = H.fixture("spatial")

-- A fixture input given as a formula: s * sin(a * i + b) (or cos) over the flat index.
local function ramp(spec)
  local n = 1
  for _, d in ipairs(spec.shape) do n = n * d end
  local t = graft.arange(n, { dtype = "float64" }) * spec.a + spec.b
  t = spec.cos and t:cos() or t:sin()
  return (t * spec.s):to(spec.dtype):reshape(spec.shape)
end

local function leaf(spec)
  if spec == nil then return nil end
  local t = graft.is_tensor(spec) and spec or (spec.a and ramp(spec) or H.T(spec))
  t.requires_grad = true
  return t
end

local function tol(c)
  if c.out.dtype == "float64" then return { rtol = 1e-9, atol = 1e-10 } end
  return { rtol = 1e-4, atol = 1e-4 }
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end

-- Calls the case's function with x (and w, b), as the generator did.
local function call(c, x, w, b)
  if c.fn == "pad" then return F.pad(x, c.pad, c.opts) end
  if c.w then return F[c.fn](x, w, b, c.opts) end
  if c.pos and c.pos[1] ~= nil then return F[c.fn](x, c.pos[1], c.opts) end
  return F[c.fn](x, c.opts)
end

-- Runs a case (optionally with x laid out differently) and checks every result.
local function check_case(c, relayout)
  local x, w, b = leaf(c.x), leaf(c.w), leaf(c.b)
  if relayout then
    x = relayout(x:detach()):requires_grad_()
  end
  local y, idx = call(c, x, w, b)
  assert.tensor_near(y, c.out, tol(c))
  if c.idx then assert.tensor_near(idx, c.idx) end
  y:backward(ramp(c.g))
  assert.tensor_near(x.grad, c.gx, tol(c))
  if c.gw then assert.tensor_near(w.grad, c.gw, tol(c)) end
  if c.gb then assert.tensor_near(b.grad, c.gb, tol(c)) end
  return y
end

-- PyTorch's node names, where graft's differ for a documented reason: unbatched inputs
-- are handled inside graft's ops (PyTorch unsqueezes and squeezes around them).
local own_grad_fn = { unbatched = true, max_unbatched = true, adaptive_avg_unbatched = true,
  reflect_2d_unbatched = false }

for _, group in ipairs({ "conv", "pool", "interp", "pad" }) do
  describe("F (" .. group .. ") against PyTorch", function()
    for _, name in ipairs(sorted_keys(fx[group])) do
      local c = fx[group][name]
      it(name .. ": values and gradients match", function()
        local y = check_case(c)
        if not own_grad_fn[name] then assert.are.equal(c.grad_fn, tostring(y.grad_fn)) end
      end)
    end
  end)
end

describe("F with non-contiguous inputs", function()
  local channels_last = function(t) return t:permute(1, 3, 4, 2):contiguous():permute(1, 4, 2, 3) end
  local transposed = function(t) return t:transpose(-1, -2):contiguous():transpose(-1, -2) end
  for _, case in ipairs({ { "conv", "stride_pad" }, { "conv", "groups" }, { "conv", "t2d" }, { "pool", "max_k3s2p1" },
    { "pool", "avg_pad" }, { "interp", "bilinear" }, { "pad", "reflect_2d" } }) do
    it(case[2] .. " takes a permuted (channels-last) and a transposed input", function()
      local c = fx[case[1]][case[2]]
      check_case(c, channels_last)
      check_case(c, transposed)
    end)
  end

  it("conv2d takes a transposed weight and a strided bias", function()
    local c = fx.conv.basic
    local x, w = ramp(c.x), ramp(c.w)
    local wt = w:transpose(3, 4):contiguous():transpose(3, 4)
    local b2 = graft.zeros(2 * c.b.shape[1])
    b2[{ { 1, -1, 2 } }] = ramp(c.b)
    assert.tensor_near(F.conv2d(x, wt, b2[{ { 1, -1, 2 } }]), c.out, tol(c))
  end)
end)

describe("F.conv2d at sizes that exercise the blocking and threading", function()
  local function det(shape, a, b, s, cos)
    return ramp({ shape = shape, a = a, b = b or 0, s = s or 1, cos = cos, dtype = "float32" })
  end
  for _, name in ipairs(sorted_keys(fx.det)) do
    local c = fx.det[name]
    it(name .. " (" .. table.concat(c.xs, "x") .. ")", function()
      local x = det(c.xs, 0.37):requires_grad_()
      local w = det(c.ws, 0.11, 0, 0.1, true):requires_grad_()
      local cout = #c.out_sum.data
      local b = c.bias and (graft.arange(cout) * 0.05):requires_grad_() or nil
      local y = F[c.fn](x, w, b, c.opts)
      local t = { rtol = 2e-4, atol = 2e-3 }
      assert.are.same(c.out_shape, y:shape())
      assert.tensor_near(y:sum({ 1, 3, 4 }), c.out_sum, { rtol = 1e-4, atol = 1e-2 })
      local function sample(v) return v[{ { 1, 1 }, { 1, 2 }, { 1, -1, 9 }, { 1, -1, 7 } }] end
      assert.tensor_near(sample(y), c.out_s, t)
      y:backward(det(y:shape(), 0.23, 1.0))
      assert.tensor_near(x.grad:sum({ 1, 3, 4 }), c.gx_sum, { rtol = 1e-4, atol = 1e-2 })
      assert.tensor_near(sample(x.grad), c.gx_s, t)
      assert.tensor_near(w.grad:sum({ 2, 3, 4 }), c.gw_sum, { rtol = 1e-4, atol = 1e-2 })
      assert.tensor_near(w.grad:reshape(-1)[{ { 1, -1, 29 } }], c.gw_s, { rtol = 2e-4, atol = 1e-2 })
      if c.gb then assert.tensor_near(b.grad, c.gb, { rtol = 1e-4, atol = 1e-2 }) end
    end)
  end

  -- float32 3x3 stride-1 convolutions with 8+ channels run the Winograd kernels (when the
  -- CPU has AVX-512), float64 the im2col ones: both must agree to float32 rounding.
  it("3x3 stride-1 float32 convolutions match float64 in value and both gradients", function()
    graft.manual_seed(3)
    local cases = {
      { { 2, 16, 9, 7 }, { 8, 16, 3, 3 }, { padding = 1 } },
      { { 1, 16, 9, 7 }, { 8, 16, 3, 3 }, {} },
      { { 3, 8, 5, 6 }, { 16, 8, 3, 3 }, { padding = 2 } },
      { { 4, 16, 12, 12 }, { 32, 8, 3, 3 }, { padding = 1, groups = 2 } },
      { { 1, 32, 30, 33 }, { 24, 32, 3, 3 }, { padding = 1 } },
      { { 5, 16, 4, 4 }, { 16, 16, 3, 3 }, { padding = 1 } },
    }
    local function near(a, ref)
      local scale = ref:abs():max():item()
      assert.tensor_near(a, ref:float(), { rtol = 1e-5, atol = 2e-6 * scale })
    end
    for _, c in ipairs(cases) do
      local x, w, b = graft.randn(c[1]), graft.randn(c[2]), graft.randn(c[2][1])
      local xd, wd, bd = x:double():requires_grad_(), w:double():requires_grad_(), b:double():requires_grad_()
      x.requires_grad, w.requires_grad, b.requires_grad = true, true, true
      local y, yd = F.conv2d(x, w, b, c[3]), F.conv2d(xd, wd, bd, c[3])
      local g = graft.randn(y:shape())
      y:backward(g)
      yd:backward(g:double())
      near(y, yd)
      near(x.grad, xd.grad)
      near(w.grad, wd.grad)
      near(b.grad, bd.grad)
    end
    local x, w = graft.randn({ 2, 16, 8, 8 }, { requires_grad = true }), graft.randn({ 16, 12, 3, 3 }, { requires_grad = true })
    local xd, wd = x:detach():double():requires_grad_(), w:detach():double():requires_grad_()
    local y, yd = F.conv_transpose2d(x, w, nil, { padding = 1 }), F.conv_transpose2d(xd, wd, nil, { padding = 1 })
    local g = graft.randn(y:shape())
    y:backward(g)
    yd:backward(g:double())
    near(y, yd)
    near(x.grad, xd.grad)
    near(w.grad, wd.grad)
  end)

  it("gives the same result on one thread and on two", function()
    local x = graft.randn(3, 8, 20, 20)
    local w = graft.randn(16, 8, 3, 3)
    local n = graft.get_num_threads()
    graft.set_num_threads(1)
    local y1 = F.conv2d(x, w, nil, { padding = 1 })
    graft.set_num_threads(n)
    local y2 = F.conv2d(x, w, nil, { padding = 1 })
    assert.tensor_near(y2, y1, { rtol = 1e-5, atol = 1e-5 })
  end)
end)

describe("F gradients against finite differences (float64)", function()
  before_each(function() graft.manual_seed(7) end)
  local function R(...) return graft.randn({ ... }, { dtype = "float64", requires_grad = true }) end

  it("conv2d with stride, padding, dilation, groups and bias", function()
    assert.gradcheck(function(x, w, b) return F.conv2d(x, w, b, { stride = { 2, 1 }, padding = { 1, 2 }, dilation = { 1, 2 } }) end,
      { R(2, 2, 5, 5), R(3, 2, 3, 2), R(3) })
    assert.gradcheck(function(x, w) return F.conv2d(x, w, nil, { groups = 2, padding = 1 }) end,
      { R(1, 4, 4, 4), R(4, 2, 3, 3) })
    assert.gradcheck(function(x, w, b) return F.conv2d(x, w, b, { groups = 3, padding = "same" }) end,
      { R(2, 3, 4, 4), R(6, 1, 2, 3), R(6) })
    assert.gradcheck(function(x, w) return F.conv2d(x, w) end, { R(3, 4, 3, 3), R(2, 4, 1, 1) })
    -- depthwise (one channel in and out per group: the direct kernels)
    assert.gradcheck(function(x, w, b) return F.conv2d(x, w, b, { groups = 3, stride = 2, padding = 1, dilation = { 1, 2 } }) end,
      { R(2, 3, 6, 7), R(3, 1, 3, 3), R(3) })
    assert.gradcheck(function(x, w, b) return F.conv_transpose2d(x, w, b, { groups = 3, stride = 2, padding = 1 }) end,
      { R(1, 3, 3, 4), R(3, 1, 3, 3), R(3) })
  end)

  it("conv1d, conv_transpose1d and conv_transpose2d", function()
    assert.gradcheck(function(x, w, b) return F.conv1d(x, w, b, { stride = 2, padding = 1 }) end,
      { R(2, 2, 7), R(3, 2, 3), R(3) })
    assert.gradcheck(function(x, w, b)
      return F.conv_transpose2d(x, w, b, { stride = 2, padding = 1, output_padding = 1, groups = 2 })
    end, { R(1, 4, 3, 3), R(4, 1, 3, 3), R(2) })
    assert.gradcheck(function(x, w) return F.conv_transpose2d(x, w, nil, { dilation = 2, stride = { 1, 2 } }) end,
      { R(2, 2, 3, 2), R(2, 3, 2, 2) })
    assert.gradcheck(function(x, w) return F.conv_transpose1d(x, w, nil, { stride = 3, padding = 1 }) end,
      { R(2, 2, 4), R(2, 2, 4) })
  end)

  it("pooling", function()
    assert.gradcheck(function(x) return F.max_pool2d(x, 3, { stride = 2, padding = 1, ceil_mode = true }) end,
      { R(2, 2, 6, 7) })
    assert.gradcheck(function(x) return F.max_pool2d(x, { 2, 3 }, { dilation = 2, stride = 1 }) end, { R(1, 2, 6, 7) })
    assert.gradcheck(function(x) return F.avg_pool2d(x, 3, { stride = 2, padding = 1, count_include_pad = false, ceil_mode = true }) end,
      { R(1, 2, 6, 7) })
    assert.gradcheck(function(x) return F.avg_pool2d(x, 2, { divisor_override = 3 }) end, { R(1, 2, 4, 5) })
    assert.gradcheck(function(x) return F.adaptive_avg_pool2d(x, { 3, 2 }) end, { R(2, 2, 7, 5) })
    assert.gradcheck(function(x) return F.adaptive_max_pool2d(x, { 3, 4 }) end, { R(1, 2, 5, 7) })
  end)

  it("interpolate and pad", function()
    assert.gradcheck(function(x) return F.interpolate(x, { size = { 5, 7 }, mode = "bilinear" }) end, { R(1, 2, 3, 4) })
    assert.gradcheck(function(x) return F.interpolate(x, { scale_factor = 1.5, mode = "bilinear", align_corners = true }) end,
      { R(1, 2, 3, 4) })
    assert.gradcheck(function(x) return F.interpolate(x, { size = { 2, 3 }, mode = "bilinear" }) end, { R(1, 1, 5, 6) })
    assert.gradcheck(function(x) return F.interpolate(x, { scale_factor = 1.7 }) end, { R(1, 2, 3, 4) })
    assert.gradcheck(function(x) return F.interpolate(x, { size = 7, mode = "linear" }) end, { R(2, 2, 4) })
    assert.gradcheck(function(x) return F.pad(x, { 1, 2, 2, 1 }, "reflect") end, { R(1, 2, 3, 4) })
    assert.gradcheck(function(x) return F.pad(x, { 2, 1 }, "replicate") end, { R(2, 3, 4) })
    assert.gradcheck(function(x) return F.pad(x, { 1, 1, 2, 0 }, "circular") end, { R(1, 1, 3, 3) })
    assert.gradcheck(function(x) return F.pad(x, { -1, 2, 1, 0 }, { value = 3 }) end, { R(2, 3, 4) })
  end)
end)

describe("F.conv2d with frozen parameters", function()
  it("computes no weight gradient for a frozen weight", function()
    local x = graft.randn({ 2, 3, 6, 6 }, { requires_grad = true })
    local w = graft.randn({ 4, 3, 3, 3 }, { requires_grad = true })
    w.requires_grad = false
    local b = graft.randn({ 4 }, { requires_grad = true })
    graft._autograd_reset_counters()
    F.conv2d(x, w, b, { padding = 1 }):sum():backward()
    local c = graft._autograd_counters()
    assert.are.equal(2, c.nodes_run)       -- SumBackward0, ConvolutionBackward0
    assert.are.equal(3, c.grads_computed)  -- sum -> conv; conv -> x, b (not w)
    assert.are.equal(0, c.grads_unused)
    assert.is_nil(w.grad)
    assert.tensor_near(b.grad, graft.full({ 4 }, 72.0))
  end)

  it("computes no input gradient for an input that needs none (a first layer)", function()
    local x = graft.randn(2, 3, 6, 6)
    local w = graft.randn({ 4, 3, 3, 3 }, { requires_grad = true })
    graft._autograd_reset_counters()
    F.conv2d(x, w):sum():backward()
    local c = graft._autograd_counters()
    assert.are.equal(2, c.grads_computed)  -- sum -> conv; conv -> w
    assert.are.equal(0, c.grads_unused)
    assert.are.same({ 4, 3, 3, 3 }, w.grad:shape())
  end)

  it("records nothing when no input requires grad (a frozen backbone)", function()
    local x = graft.randn(2, 3, 6, 6)
    local w = graft.randn({ 4, 3, 3, 3 }, { requires_grad = true })
    w:requires_grad_(false)
    local y = F.conv2d(x, w)
    assert.is_false(y.requires_grad)
    assert.is_nil(y.grad_fn)
  end)

  it("keeps the weight bit-identical when it is frozen", function()
    local w = graft.randn({ 4, 3, 3, 3 }, { requires_grad = true })
    w.requires_grad = false
    local before = w:clone()
    local x = graft.randn({ 2, 3, 6, 6 }, { requires_grad = true })
    F.max_pool2d(F.conv2d(x, w), 2):sum():backward()
    assert.tensor_near(w, before, { rtol = 0, atol = 0 })
  end)
end)

describe("F spatial functions in float16 and bfloat16", function()
  it("compute in float32 and round", function()
    local x, w = graft.randn(2, 3, 6, 6), graft.randn(4, 3, 3, 3)
    for _, dt in ipairs({ "float16", "bfloat16" }) do
      local y = F.conv2d(x:to(dt), w:to(dt), nil, { padding = 1 })
      assert.are.equal(dt, y:dtype())
      local ref = F.conv2d(x:to(dt):float(), w:to(dt):float(), nil, { padding = 1 }):to(dt)
      assert.tensor_near(y, ref, { rtol = 1e-2, atol = 1e-2 })
      assert.are.equal(dt, F.max_pool2d(x:to(dt), 2):dtype())
      assert.are.equal(dt, F.interpolate(x:to(dt), { scale_factor = 2, mode = "bilinear" }):dtype())
      assert.are.equal(dt, F.pad(x:to(dt), { 1, 1, 1, 1 }, "reflect"):dtype())
    end
  end)
end)

describe("F spatial errors", function()
  local x4 = graft.zeros(8, 1, 28, 28)

  it("conv2d names the op and the shapes", function()
    H.raises("conv2d: expected input with 3 channels (weight [64, 3, 7, 7], groups 1), got [8, 1, 28, 28]",
      F.conv2d, x4, graft.zeros(64, 3, 7, 7))
    H.raises("conv2d: expected a 3-D (unbatched) or 4-D (batched) input, got [28, 28]", F.conv2d, graft.zeros(28, 28),
      graft.zeros(4, 1, 3, 3))
    H.raises("conv2d: expected a 4-D weight, got [4, 1, 3]", F.conv2d, x4, graft.zeros(4, 1, 3))
    H.raises("conv2d: expected bias of shape [4], got [3]", F.conv2d, x4, graft.zeros(4, 1, 3, 3), graft.zeros(3))
    H.raises("conv2d: kernel [5, 5] (dilated) is larger than the padded input [4, 4]", F.conv2d, graft.zeros(1, 1, 2, 2),
      graft.zeros(1, 1, 3, 3), nil, { padding = 1, dilation = 2 })
    H.raises("conv2d: stride must be positive, got [0, 1]", F.conv2d, x4, graft.zeros(4, 1, 3, 3), nil, { stride = { 0, 1 } })
    H.raises("conv2d: negative padding is not supported", F.conv2d, x4, graft.zeros(4, 1, 3, 3), nil, { padding = -1 })
    H.raises("conv2d: padding='same' is not supported for strided convolutions", F.conv2d, x4, graft.zeros(4, 1, 3, 3), nil,
      { padding = "same", stride = 2 })
    H.raises("conv2d: padding must be \"same\", \"valid\" or integers", F.conv2d, x4, graft.zeros(4, 1, 3, 3), nil,
      { padding = "full" })
    H.raises("conv2d: weight [3, 2, 3, 3]: its first dim 3 is not divisible by groups 2", F.conv2d,
      graft.zeros(1, 4, 5, 5), graft.zeros(3, 2, 3, 3), nil, { groups = 2 })
    H.raises("conv2d: input is float32 but weight is float64", F.conv2d, x4, graft.zeros(4, 1, 3, 3, { dtype = "float64" }))
    H.raises("conv2d: input must be floating point, got int64", F.conv2d, x4:long(), graft.zeros(4, 1, 3, 3))
    H.raises("conv2d: stride must be an integer or a list of 2 integers", F.conv2d, x4, graft.zeros(4, 1, 3, 3), nil,
      { stride = { 1, 2, 3 } })
    H.raises("conv2d: bias must be a tensor or nil, got number", F.conv2d, x4, graft.zeros(4, 1, 3, 3), 3)
    H.raises("conv2d: options go in a table after the arguments", F.conv2d, x4, graft.zeros(4, 1, 3, 3), nil, 2)
    H.raises("max_pool2d: options go in a table after the arguments", F.max_pool2d, x4, 2, 2)
    H.raises("conv1d: expected input with 2 channels (weight [4, 2, 3], groups 1), got [1, 3, 5]", F.conv1d,
      graft.zeros(1, 3, 5), graft.zeros(4, 2, 3))
  end)

  it("conv_transpose2d checks output_padding and its input channels", function()
    H.raises("conv_transpose2d: output_padding [2, 2] must be smaller than either stride [2, 2] or dilation [1, 1]",
      F.conv_transpose2d, graft.zeros(1, 2, 3, 3), graft.zeros(2, 3, 3, 3), nil, { stride = 2, output_padding = 2 })
    H.raises("conv_transpose2d: expected input with 2 channels (weight [2, 3, 3, 3], groups 1), got [1, 3, 3, 3]",
      F.conv_transpose2d, graft.zeros(1, 3, 3, 3), graft.zeros(2, 3, 3, 3))
    H.raises("conv_transpose2d: output size [-1, -1] is too small", F.conv_transpose2d, graft.zeros(1, 2, 1, 1),
      graft.zeros(2, 3, 1, 1), nil, { padding = 1 })
    H.raises("conv2d: output_padding is an option of conv_transpose2d", F.conv2d, x4, graft.zeros(4, 1, 3, 3), nil,
      { output_padding = 1 })
  end)

  it("pooling names the op and the sizes", function()
    H.raises("max_pool2d: kernel 3 is larger than the padded input 2", F.max_pool2d, graft.zeros(1, 1, 2, 2), 3)
    H.raises("max_pool2d: padding [2, 2] should be at most half of the kernel [3, 3]", F.max_pool2d,
      graft.zeros(1, 1, 8, 8), 3, { padding = 2 })
    H.raises("max_pool2d: expected a 3-D (unbatched) or 4-D (batched) input", F.max_pool2d, graft.zeros(4, 4), 2)
    H.raises("max_pool2d: kernel_size must be positive, got [0, 0]", F.max_pool2d, x4, 0)
    H.raises("max_pool2d: kernel_size is required", F.max_pool2d, x4)
    H.raises("avg_pool2d: stride must be positive, got [0, 0]", F.avg_pool2d, x4, 2, { stride = 0 })
    H.raises("avg_pool2d: divisor_override must be positive, got 0", F.avg_pool2d, x4, 2, { divisor_override = 0 })
    H.raises("avg_pool2d: expected a floating point input, got int64", F.avg_pool2d, x4:long(), 2)
    H.raises("adaptive_avg_pool2d: output_size must be positive, got [0, 0]", F.adaptive_avg_pool2d, x4, 0)
    H.raises("adaptive_max_pool2d: output_size must be an integer or a list {h, w}", F.adaptive_max_pool2d, x4, "x")
  end)

  it("interpolate and pad name the op and the problem", function()
    H.raises("interpolate: either size or scale_factor must be given", F.interpolate, x4, { mode = "bilinear" })
    H.raises("interpolate: only one of size and scale_factor may be given", F.interpolate, x4, { size = 3, scale_factor = 2 })
    H.raises("interpolate: mode \"bicubic\" is not supported", F.interpolate, x4, { size = 3, mode = "bicubic" })
    H.raises("interpolate: mode \"bilinear\" expects a 4-D input (batched, with channels), got [1, 2, 5]", F.interpolate,
      graft.zeros(1, 2, 5), { size = 3, mode = "bilinear" })
    H.raises("interpolate: align_corners can only be set with the interpolating modes", F.interpolate, x4,
      { size = 3, align_corners = true })
    H.raises("interpolate: size must be an integer or a list of 2 integers", F.interpolate, x4, { size = { 1, 2, 3 } })
    H.raises("pad: the padding list must have an even length, got 3", F.pad, x4, { 1, 1, 1 })
    H.raises("pad: reflect padding (2, 2) must be smaller than the size 2 of dim -1 of the input [1, 2, 2]", F.pad,
      graft.zeros(1, 2, 2), { 2, 2 }, "reflect")
    H.raises("pad: mode \"reflect\" pads the last 1, 2 or 3 dims", F.pad, graft.zeros(5), { 1, 1 }, "reflect")
    H.raises("pad: mode \"wrap\" is not supported", F.pad, x4, { 1, 1 }, "wrap")
    H.raises("pad: mode \"replicate\" takes no value", F.pad, x4, { 1, 1 }, { mode = "replicate", value = 1 })
    H.raises("pad: the size 2 of dim -1 of the input [2, 2] plus padding (-3, 0) is negative", F.pad, graft.zeros(2, 2),
      { -3, 0 })
  end)

  it("errors inside a recorded op leak nothing", function()
    local w = graft.zeros({ 64, 3, 7, 7 }, { requires_grad = true })
    H.raises("conv2d: expected input with 3 channels", F.conv2d, x4, w)
    H.raises("max_pool2d: kernel 3 is larger", F.max_pool2d, graft.zeros({ 1, 1, 2, 2 }, { requires_grad = true }), 3)
  end)
end)

describe("F spatial details", function()
  it("max_pool2d returns PyTorch's indices and accepts options for kernel_size", function()
    local x = graft.tensor({ { { { 1, 5, 2, 0 }, { 3, 4, 8, 7 } } } }):float()
    local y, i = F.max_pool2d(x, { kernel_size = 2, return_indices = true })
    assert.tensor_near(y, graft.tensor({ { { { 5, 8 } } } }):float())
    assert.are.equal("int64", i:dtype())
    assert.are.same({ 1, 6 }, H.flat(i))
  end)

  it("keeps the input's dtype on every output and handles empty batches", function()
    local y = F.conv2d(graft.zeros(0, 3, 5, 5), graft.zeros(2, 3, 3, 3))
    assert.are.same({ 0, 2, 3, 3 }, y:shape())
    local x = graft.randn({ 0, 3, 5, 5 }, { requires_grad = true })
    local w = graft.randn({ 2, 3, 3, 3 }, { requires_grad = true })
    F.conv2d(x, w):sum():backward()
    assert.tensor_near(w.grad, graft.zeros(2, 3, 3, 3))
  end)

  it("pad accepts a mode and a value positionally and an integer tensor in constant mode", function()
    local x = graft.tensor({ { 1, 2 }, { 3, 4 } })
    assert.tensor_near(F.pad(x, { 1, 0 }, "constant", 9), graft.tensor({ { 9, 1, 2 }, { 9, 3, 4 } }))
    assert.tensor_near(F.pad(x:float():reshape(1, 2, 2), { 1, 1 }, "replicate"),
      graft.tensor({ { { 1, 1, 2, 2 }, { 3, 3, 4, 4 } } }):float())
  end)

  it("interpolate takes the size positionally", function()
    local x = graft.randn(1, 2, 3, 3)
    assert.are.same({ 1, 2, 6, 5 }, F.interpolate(x, { 6, 5 }):shape())
    assert.are.same({ 1, 2, 4, 4 }, F.interpolate(x, 4, { mode = "bilinear" }):shape())
  end)
end)
