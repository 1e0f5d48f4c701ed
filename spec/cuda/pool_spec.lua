-- Pooling, interpolate and pad on CUDA against the CPU: max_pool2d (indices, padding,
-- dilation, ceil_mode, NaN), avg_pool2d (count_include_pad, ceil_mode,
-- divisor_override), the adaptive pools, interpolate (nearest, linear, bilinear,
-- align_corners, scale factors), pad (constant, reflect, replicate, circular), half
-- precision forwards, non-contiguous inputs, gradients (exactly the CPU's where the
-- device gathers in the CPU's order) and errors.
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")
local F = graft.F

-- Each case: a function of x and the shape of x.
local function each_dtype_check(cases, exact)
  for _, dt in ipairs({ "float32", "float64" }) do
    for _, c in ipairs(cases) do
      local x = C.leaf(graft.randn(c[2]):to(dt))
      C.check(c[1], { x }, { grad = true, rtol = exact and 0 or nil, atol = exact and 0 or nil })
    end
  end
end

C.describe("max_pool2d on cuda", function()
  local cases = {
    { function(x) return F.max_pool2d(x, 2) end, { 2, 3, 8, 10 } },
    { function(x) return F.max_pool2d(x, 3, { stride = 1 }) end, { 2, 2, 6, 7 } },
    { function(x) return F.max_pool2d(x, 3, { stride = 2, padding = 1, ceil_mode = true }) end, { 1, 3, 7, 9 } },
    { function(x) return F.max_pool2d(x, { 2, 3 }, { dilation = 2, stride = 1 }) end, { 2, 2, 6, 7 } },
    { function(x) return F.max_pool2d(x, { 3, 2 }, { stride = { 2, 1 }, padding = { 1, 0 } }) end, { 3, 5, 6 } },
    { function(x) return F.adaptive_max_pool2d(x, { 3, 4 }) end, { 2, 2, 5, 7 } },
    { function(x) return F.adaptive_max_pool2d(x, 2) end, { 3, 9, 4 } },
  }

  it("gives the CPU's values, indices and gradients exactly", function()
    each_dtype_check(cases, true)
    local x = graft.randn(2, 3, 7, 9)
    for _, f in ipairs({
      function(t) return F.max_pool2d(t, 3, { stride = 2, padding = 1, return_indices = true }) end,
      function(t) return F.max_pool2d(t, 2, { dilation = 2, ceil_mode = true, return_indices = true }) end,
      function(t) return F.adaptive_max_pool2d(t, { 4, 5 }, { return_indices = true }) end,
    }) do
      local y, i = f(x)
      local dy, di = f(x:cuda())
      C.assert_match(dy, y, C.EXACT)
      assert.are.equal("int64", di:dtype())
      C.assert_match(di, i, C.EXACT, "indices")
    end
  end)

  it("lets NaN win and handles ties and -inf as the CPU", function()
    local x = graft.tensor({ { { { 1, 0 / 0, 3, 3 }, { -1 / 0, -1 / 0, 2, 3 }, { 5, 5, 5, 5 }, { 0 / 0, 1, 0 / 0, 2 } } } })
    for _, f in ipairs({
      function(t) return F.max_pool2d(t, 2, { return_indices = true }) end,
      function(t) return F.max_pool2d(t, 2, { stride = 1, return_indices = true }) end,
      function(t) return F.adaptive_max_pool2d(t, 3, { return_indices = true }) end,
    }) do
      local y, i = f(x)
      local dy, di = f(x:cuda())
      C.assert_match(dy, y, C.EXACT)
      C.assert_match(di, i, C.EXACT, "indices")
    end
  end)

  it("pools float16 and bfloat16 inputs and non-contiguous views", function()
    local x = graft.randn(2, 3, 6, 8)
    for _, dt in ipairs({ "float16", "bfloat16" }) do
      C.check(function(t) return F.max_pool2d(t, 3, { stride = 2, padding = 1 }) end, { x:to(dt) }, C.EXACT)
      C.check(function(t) return F.adaptive_max_pool2d(t, { 4, 3 }) end, { x:to(dt) }, C.EXACT)
    end
    local xh = C.leaf(x:half())
    C.check(function(t) return F.max_pool2d(t, 3, { stride = 1 }) end, { xh }, { grad = true })
    local xl = C.leaf(2, 3, 6, 8)
    C.check(function(t) return F.max_pool2d(t:transpose(3, 4), 2) end, { xl }, { grad = true, rtol = 0, atol = 0 })
    C.check(function(t) return F.max_pool2d(t:narrow(4, 2, 5), 2, { ceil_mode = true }) end, { xl },
      { grad = true, rtol = 0, atol = 0 })
  end)

  it("names the op and the problem, leaking nothing", function()
    local x = graft.zeros(1, 1, 2, 2, { device = "cuda" })
    H.raises("max_pool2d: kernel 3 is larger than the padded input 2", F.max_pool2d, x, 3)
    H.raises("max_pool2d: expected a floating point input, got int64", F.max_pool2d,
      graft.zeros(1, 1, 4, 4, { dtype = "int64", device = "cuda" }), 2)
    H.raises("adaptive_max_pool2d: expected a 3-D (unbatched) or 4-D (batched) input", F.adaptive_max_pool2d,
      graft.zeros(4, 4, { device = "cuda" }), 2)
  end)
end)

C.describe("avg_pool2d and adaptive_avg_pool2d on cuda", function()
  local cases = {
    { function(x) return F.avg_pool2d(x, 2) end, { 2, 3, 8, 10 } },
    { function(x) return F.avg_pool2d(x, 3, { stride = 2, padding = 1 }) end, { 2, 2, 7, 8 } },
    { function(x) return F.avg_pool2d(x, 3, { stride = 2, padding = 1, count_include_pad = false }) end, { 2, 2, 7, 8 } },
    { function(x) return F.avg_pool2d(x, 3, { stride = 2, padding = 1, ceil_mode = true }) end, { 1, 2, 6, 8 } },
    { function(x) return F.avg_pool2d(x, { 2, 3 }, { stride = 1, divisor_override = 4 }) end, { 2, 5, 6 } },
    { function(x) return F.avg_pool2d(x, 3, { stride = 2, ceil_mode = true, count_include_pad = false }) end,
      { 1, 2, 6, 6 } },
    { function(x) return F.adaptive_avg_pool2d(x, { 3, 4 }) end, { 2, 2, 5, 7 } },
    { function(x) return F.adaptive_avg_pool2d(x, 1) end, { 2, 3, 4, 5 } },
    { function(x) return F.adaptive_avg_pool2d(x, { 7, 9 }) end, { 1, 2, 4, 5 } },
  }

  it("gives the CPU's values and gradients exactly", function()
    each_dtype_check(cases, true)
  end)

  it("averages float16 and bfloat16 inputs in float and non-contiguous views", function()
    local x = graft.randn(2, 3, 6, 8)
    for _, dt in ipairs({ "float16", "bfloat16" }) do
      C.check(function(t) return F.avg_pool2d(t, 3, { stride = 2, padding = 1 }) end, { x:to(dt) }, C.EXACT)
      C.check(function(t) return F.adaptive_avg_pool2d(t, { 4, 3 }) end, { x:to(dt) }, C.EXACT)
    end
    local xh = C.leaf(x:bfloat16())
    C.check(function(t) return F.avg_pool2d(t, 3, { stride = 1, padding = 1 }) end, { xh }, { grad = true })
    C.check(function(t) return F.adaptive_avg_pool2d(t, { 4, 5 }) end, { xh }, { grad = true })
    local xl = C.leaf(2, 3, 6, 8, { dtype = "float64" })
    C.check(function(t) return F.avg_pool2d(t:transpose(3, 4), 2, { stride = 1 }) end, { xl }, { grad = true })
    C.check(function(t) return F.adaptive_avg_pool2d(t:narrow(3, 2, 4), { 3, 5 }) end, { xl }, { grad = true })
  end)
end)

C.describe("F.interpolate on cuda", function()
  local cases = {
    { function(x) return F.interpolate(x, { scale_factor = 2 }) end, { 2, 3, 4, 5 } },
    { function(x) return F.interpolate(x, { scale_factor = 1.7 }) end, { 1, 2, 3, 4 } },
    { function(x) return F.interpolate(x, { size = { 2, 3 } }) end, { 1, 2, 5, 7 } },
    { function(x) return F.interpolate(x, { size = 9 }) end, { 2, 3, 4 } },
    { function(x) return F.interpolate(x, { size = { 5, 7 }, mode = "bilinear" }) end, { 1, 2, 3, 4 } },
    { function(x) return F.interpolate(x, { scale_factor = 2, mode = "bilinear" }) end, { 2, 2, 4, 3 } },
    { function(x) return F.interpolate(x, { scale_factor = 1.5, mode = "bilinear", align_corners = true }) end,
      { 1, 2, 4, 5 } },
    { function(x) return F.interpolate(x, { size = { 2, 3 }, mode = "bilinear" }) end, { 1, 1, 5, 6 } },
    { function(x) return F.interpolate(x, { scale_factor = { 0.6, 1.3 }, mode = "bilinear",
        recompute_scale_factor = true }) end, { 1, 2, 5, 6 } },
    { function(x) return F.interpolate(x, { size = 7, mode = "linear" }) end, { 2, 2, 4 } },
    { function(x) return F.interpolate(x, { size = 3, mode = "linear", align_corners = true }) end, { 2, 2, 8 } },
    { function(x) return F.interpolate(x, { size = { 4, 5 }, mode = "bilinear" }) end, { 1, 2, 4, 5 } },
  }

  it("matches the CPU forward and gradients", function()
    each_dtype_check(cases, false)
  end)

  it("gives nearest-mode gradients exactly (same sums in the same order)", function()
    local x = C.leaf(2, 3, 5, 4)
    C.check(function(t) return F.interpolate(t, { scale_factor = 2.5 }) end, { x }, { grad = true, rtol = 0, atol = 0 })
    C.check(function(t) return F.interpolate(t, { size = { 3, 2 } }) end, { x }, { grad = true, rtol = 0, atol = 0 })
  end)

  it("resizes float16 and bfloat16 inputs and non-contiguous views", function()
    local x = graft.randn(2, 3, 4, 6)
    for _, dt in ipairs({ "float16", "bfloat16" }) do
      C.check(function(t) return F.interpolate(t, { scale_factor = 2, mode = "bilinear" }) end, { x:to(dt) })
      C.check(function(t) return F.interpolate(t, { size = { 7, 5 } }) end, { x:to(dt) }, C.EXACT)
    end
    local xh = C.leaf(x:half())
    C.check(function(t) return F.interpolate(t, { scale_factor = 1.5, mode = "bilinear" }) end, { xh }, { grad = true })
    C.check(function(t) return F.interpolate(t, { scale_factor = 2 }) end, { xh }, { grad = true })
    local xl = C.leaf(2, 3, 4, 6, { dtype = "float64" })
    C.check(function(t) return F.interpolate(t:transpose(3, 4), { scale_factor = 2, mode = "bilinear" }) end, { xl },
      { grad = true })
    C.check(function(t) return F.interpolate(t:select(3, 2), { size = 10, mode = "linear" }) end, { xl },
      { grad = true })
  end)

  it("names the op and the problem", function()
    local x = graft.zeros(1, 1, 2, 2, { device = "cuda" })
    H.raises("interpolate: mode \"linear\" expects a 3-D input", F.interpolate, x, { size = 3, mode = "linear" })
    H.raises("interpolate: expected a floating point input, got int64", F.interpolate,
      graft.zeros(1, 1, 2, 2, { dtype = "int64", device = "cuda" }), { scale_factor = 2 })
  end)
end)

C.describe("F.pad on cuda", function()
  local cases = {
    { function(x) return F.pad(x, { 1, 2, 2, 1 }, "reflect") end, { 1, 2, 3, 4 } },
    { function(x) return F.pad(x, { 3, 3 }, "reflect") end, { 2, 3, 4 } },
    { function(x) return F.pad(x, { 2, 1 }, "replicate") end, { 2, 3, 4 } },
    { function(x) return F.pad(x, { 3, 0, 1, 4 }, "replicate") end, { 2, 3, 4 } },
    { function(x) return F.pad(x, { 1, 1, 2, 0 }, "circular") end, { 1, 1, 3, 3 } },
    { function(x) return F.pad(x, { 3, 3, 1, 2 }, "circular") end, { 2, 3, 3 } },
    { function(x) return F.pad(x, { 1, 2, 0, 1, 2, 1 }, "reflect") end, { 1, 2, 3, 4, 5 } },
    { function(x) return F.pad(x, { 1, 0, 2, 1, 1, 1 }, "replicate") end, { 2, 3, 4, 3 } },
    { function(x) return F.pad(x, { 1, 1, 1, 1, 1, 1 }, "circular") end, { 1, 1, 2, 3, 4 } },
    { function(x) return F.pad(x, { -1, 2, 1, 0 }, { value = 3 }) end, { 2, 3, 4 } },
    { function(x) return F.pad(x, { 2, 2, 1, 1, 1, 0 }) end, { 2, 3, 4 } },
  }

  it("gives the CPU's values and gradients exactly", function()
    each_dtype_check(cases, true)
  end)

  it("pads any dtype and non-contiguous views", function()
    local x = graft.arange(24):reshape(2, 3, 4)
    for _, dt in ipairs({ "int64", "int32", "uint8", "bool", "float16", "bfloat16" }) do
      C.check(function(t) return F.pad(t, { 2, 1, 1, 2 }, "reflect") end, { x:to(dt) }, C.EXACT)
      C.check(function(t) return F.pad(t, { 1, 3 }, "circular") end, { x:to(dt) }, C.EXACT)
      C.check(function(t) return F.pad(t, { 1, -1, 2, 0 }, { value = 1 }) end, { x:to(dt) }, C.EXACT)
    end
    local xh = C.leaf(graft.randn(2, 4, 5):half())
    C.check(function(t) return F.pad(t, { 2, 2, 1, 1 }, "reflect") end, { xh }, { grad = true })
    local xl = C.leaf(2, 4, 5)
    C.check(function(t) return F.pad(t:transpose(2, 3), { 2, 2, 1, 1 }, "reflect") end, { xl },
      { grad = true, rtol = 0, atol = 0 })
    C.check(function(t) return F.pad(t:narrow(3, 2, 3), { 1, 1 }, "replicate") end, { xl },
      { grad = true, rtol = 0, atol = 0 })
  end)

  it("names the op and the problem", function()
    local x = graft.zeros(1, 2, 3, { device = "cuda" })
    H.raises("pad: reflect padding (3, 0) must be smaller than the size 3", F.pad, x, { 3, 0 }, "reflect")
    H.raises("pad: negative padding (-1, 0) is only supported in constant mode", F.pad, x, { -1, 0 }, "replicate")
  end)
end)
