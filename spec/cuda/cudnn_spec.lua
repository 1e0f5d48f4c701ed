-- Convolutions on CUDA through cuDNN (graft.backends.cudnn.enabled, the default) and
-- through im2col + cuBLAS (enabled = false), both against the CPU: every case of
-- conv_spec (strides, padding incl. "same", dilation, groups incl. depthwise, 1x1,
-- conv1d, conv_transpose, non-contiguous and misaligned inputs, each floating dtype,
-- gradients of input, weight and bias), with cuDNN's counters proving which path ran;
-- the switches; the fallback rules (disabled, a geometry cuDNN cannot express, a shape
-- it refuses: cached); cuDNN errors naming the op. Over the emulator the cuDNN calls run
-- on the host (core/cuda/emu/emu_cudnn.cpp), with its refusal stages for the fallbacks.
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")

local F = graft.F
local cudnn = graft.backends.cudnn
local emulated = C.backend == "emulator"
local defaults = { enabled = cudnn.enabled, deterministic = cudnn.deterministic, benchmark = cudnn.benchmark }

local function stats() return cudnn._stats() end

-- The counters' change over fn(): runs per kind, fallbacks, plans, algo_queries, refusals.
local function delta(fn)
  local a = stats()
  fn()
  local b = stats()
  return {
    forward = b.runs.forward - a.runs.forward,
    backward_data = b.runs.backward_data - a.runs.backward_data,
    backward_filter = b.runs.backward_filter - a.runs.backward_filter,
    fallbacks = b.fallbacks - a.fallbacks,
    plans = b.plans - a.plans,
    algo_queries = b.algo_queries - a.algo_queries,
    refusals = b.refusals - a.refusals,
    last_algo = b.last_algo,
  }
end

local function runs(d) return d.forward + d.backward_data + d.backward_filter end

-- Inside a describe: cuDNN switched `on` (deterministic and benchmark off) around each
-- test, the switches restored after.
local function with_cudnn(on)
  local saved
  before_each(function()
    saved = { cudnn.enabled, cudnn.deterministic, cudnn.benchmark }
    cudnn.enabled = on
    cudnn.deterministic = false
    cudnn.benchmark = false
  end)
  after_each(function()
    cudnn.enabled, cudnn.deterministic, cudnn.benchmark = saved[1], saved[2], saved[3]
    cudnn._emu_refuse(nil)
  end)
end

-- x on its own device and dtype as a contiguous view 4 bytes into a fresh block (data
-- not 16-byte aligned): cuDNN gets an aligned copy.
local function misaligned(x)
  local pad = graft.zeros(1, { dtype = x:dtype(), device = x:device() })
  return graft.cat({ pad, x:reshape(-1) }, 1):narrow(1, 2, x:numel()):view(x:shape())
end

-- The cases: fn, inputs, check options, the cuDNN kinds that run when enabled (nil:
-- cuDNN cannot express the geometry and im2col runs it), and `core` for cases cuDNN
-- takes on every GPU (strict counters on a real device too; the emulator is always strict).
local FWD, FWD_GRAD, T_FWD, T_GRAD = { "forward" }, { "forward", "backward_data", "backward_filter" },
  { "backward_data" }, { "backward_data", "forward", "backward_filter" }
local cases = {}
local function case(name, fn, inputs, opts, kinds, core)
  cases[#cases + 1] = { name = name, fn = fn, inputs = inputs, opts = opts or {}, kinds = kinds, core = core }
end

local function conv2d_with(o) return function(a, k, c) return F.conv2d(a, k, c, o) end end

-- conv2d forward
case("conv2d", F.conv2d, function() return { graft.randn(2, 3, 9, 8), graft.randn(4, 3, 3, 3), graft.randn(4) } end,
  nil, FWD, true)
case("conv2d stride 2 padding 1", conv2d_with({ stride = 2, padding = 1 }),
  function() return { graft.randn(2, 3, 9, 8), graft.randn(4, 3, 3, 3), graft.randn(4) } end, nil, FWD, true)
case("conv2d per-dim stride, padding, dilation", conv2d_with({ stride = { 2, 1 }, padding = { 0, 2 }, dilation = { 2, 1 } }),
  function() return { graft.randn(2, 3, 9, 8), graft.randn(4, 3, 3, 3) } end, nil, FWD, true)
case("conv2d padding 'same' with dilation", conv2d_with({ padding = "same", dilation = 2 }),
  function() return { graft.randn(2, 3, 9, 8), graft.randn(4, 3, 3, 3), graft.randn(4) } end, nil, FWD, true)
case("conv2d padding 'same' with an even kernel (asymmetric: im2col)", conv2d_with({ padding = "same" }),
  function() return { C.leaf(2, 3, 6, 5), C.leaf(4, 3, 2, 4), C.leaf(4) } end, { grad = true }, nil)
case("conv2d padding 'valid'", conv2d_with({ padding = "valid" }),
  function() return { graft.randn(2, 3, 9, 8), graft.randn(2, 3, 2, 4) } end, nil, FWD, true)
for _, dt in ipairs(C.FLOATS) do
  case("conv2d in " .. dt, conv2d_with({ padding = 1 }),
    function() return { graft.randn(2, 3, 6, 5):to(dt), graft.randn(4, 3, 3, 3):to(dt), graft.randn(4):to(dt) } end,
    nil, FWD, dt ~= "float64")
end
case("conv2d groups 2", conv2d_with({ groups = 2, padding = 1 }),
  function() return { graft.randn(2, 4, 5, 5), graft.randn(6, 2, 3, 3), graft.randn(6) } end, nil, FWD, true)
case("conv2d depthwise, strided", conv2d_with({ groups = 4, stride = 2, padding = 1 }),
  function() return { graft.randn(3, 4, 7, 7), graft.randn(4, 1, 3, 3) } end, nil, FWD, true)
case("conv2d pointwise (1x1)", F.conv2d,
  function() return { graft.randn(3, 5, 4, 6), graft.randn(7, 5, 1, 1), graft.randn(7) } end, nil, FWD, true)
case("conv2d pointwise in float16", F.conv2d,
  function() return { graft.randn(3, 5, 4, 6):half(), graft.randn(7, 5, 1, 1):half() } end, nil, FWD, true)
case("conv2d 1x1 strided", conv2d_with({ stride = 2 }),
  function() return { graft.randn(2, 5, 6, 6), graft.randn(3, 5, 1, 1) } end, nil, FWD, true)
case("conv2d unbatched", F.conv2d, function() return { graft.randn(3, 6, 5), graft.randn(2, 3, 2, 2), graft.randn(2) } end,
  nil, FWD, true)
case("conv2d non-contiguous input and weight",
  function(a, k) return F.conv2d(a:transpose(3, 4), k:transpose(3, 4), nil, { padding = 1 }) end,
  function() return { graft.randn(2, 3, 6, 7), graft.randn(4, 3, 3, 2) } end, nil, FWD, true)
case("conv2d misaligned input, weight and bias",
  function(a, k, c) return F.conv2d(misaligned(a), misaligned(k), misaligned(c), { padding = 1 }) end,
  function() return { C.leaf(2, 3, 5, 6), C.leaf(4, 3, 3, 3), C.leaf(4) } end, { grad = true }, FWD_GRAD, true)
case("conv2d empty batch (im2col)", conv2d_with({ padding = 1 }),
  function() return { graft.randn(0, 3, 5, 5), graft.randn(4, 3, 3, 3), graft.randn(4) } end, nil, nil)

-- conv2d gradients
case("conv2d gradients, strided", conv2d_with({ stride = 2, padding = 1 }),
  function() return { C.leaf(2, 3, 7, 6), C.leaf(4, 3, 3, 3), C.leaf(4) } end, { grad = true }, FWD_GRAD, true)
case("conv2d gradients, groups and dilation", conv2d_with({ groups = 2, dilation = 2, padding = 2 }),
  function() return { C.leaf(2, 4, 6, 6), C.leaf(4, 2, 3, 3), C.leaf(4) } end, { grad = true }, FWD_GRAD, true)
case("conv2d gradients, depthwise", conv2d_with({ groups = 3, padding = 1 }),
  function() return { C.leaf(2, 3, 5, 5), C.leaf(6, 1, 3, 3), C.leaf(6) } end, { grad = true }, FWD_GRAD, true)
case("conv2d gradients, 1x1", F.conv2d,
  function() return { C.leaf(3, 4, 3, 5), C.leaf(2, 4, 1, 1), C.leaf(2) } end, { grad = true }, FWD_GRAD, true)
case("conv2d gradients in float64", conv2d_with({ padding = 1 }),
  function() return { C.leaf(2, 2, 4, 4, { dtype = "float64" }), C.leaf(3, 2, 3, 3, { dtype = "float64" }) } end,
  { grad = true }, FWD_GRAD)
for _, dt in ipairs({ "bfloat16", "float16" }) do
  case("conv2d gradients in " .. dt, conv2d_with({ padding = 1 }), function()
    return { C.leaf(graft.randn(2, 3, 5, 5):to(dt)), C.leaf(graft.randn(4, 3, 3, 3):to(dt)),
      C.leaf(graft.randn(4):to(dt)) }
  end, { grad = true, rtol = 5e-2, atol = 5e-2 }, FWD_GRAD, true)
end
case("conv2d gradient of the input only (a frozen weight)", F.conv2d,
  function() return { C.leaf(2, 3, 5, 5), graft.randn(4, 3, 3, 3) } end, { grad = true }, { "forward", "backward_data" },
  true)
case("conv2d gradient of the weight only (a frozen input)", conv2d_with({ padding = 1 }),
  function() return { graft.randn(2, 3, 5, 5), C.leaf(4, 3, 3, 3) } end, { grad = true },
  { "forward", "backward_filter" }, true)

-- conv1d
case("conv1d gradients, stride, padding, dilation",
  function(a, k, c) return F.conv1d(a, k, c, { stride = 2, padding = 2, dilation = 2 }) end,
  function() return { C.leaf(2, 3, 11), C.leaf(5, 3, 3), C.leaf(5) } end, { grad = true }, FWD_GRAD, true)
case("conv1d gradients, groups", function(a, k) return F.conv1d(a, k, nil, { groups = 3 }) end,
  function() return { C.leaf(2, 3, 8), C.leaf(6, 1, 2) } end, { grad = true }, FWD_GRAD, true)
case("conv1d in float16, unbatched", F.conv1d, function() return { graft.randn(3, 9):half(), graft.randn(2, 3, 4):half() } end,
  nil, FWD, true)
case("conv1d padding 'same'", function(a, k) return F.conv1d(a, k, nil, { padding = "same" }) end,
  function() return { graft.randn(2, 3, 9), graft.randn(4, 3, 5) } end, nil, FWD, true)

-- conv_transpose
case("conv_transpose2d gradients, stride, padding, output_padding",
  function(a, k, c) return F.conv_transpose2d(a, k, c, { stride = 2, padding = 1, output_padding = 1 }) end,
  function() return { C.leaf(2, 4, 3, 4), C.leaf(4, 3, 3, 3), C.leaf(3) } end, { grad = true }, T_GRAD, true)
case("conv_transpose2d gradients, groups and dilation",
  function(a, k, c) return F.conv_transpose2d(a, k, c, { groups = 2, dilation = 2 }) end,
  function() return { C.leaf(2, 4, 3, 3), C.leaf(4, 1, 2, 2), C.leaf(2) } end, { grad = true }, T_GRAD, true)
case("conv_transpose2d gradients, 1x1", F.conv_transpose2d,
  function() return { C.leaf(2, 3, 4, 4), C.leaf(3, 5, 1, 1), C.leaf(5) } end, { grad = true }, T_GRAD, true)
for _, dt in ipairs(C.FLOATS) do
  case("conv_transpose2d in " .. dt, function(a, k) return F.conv_transpose2d(a, k, nil, { stride = 2 }) end,
    function() return { graft.randn(2, 3, 3, 3):to(dt), graft.randn(3, 2, 3, 3):to(dt) } end, nil, T_FWD,
    dt ~= "float64")
end
case("conv_transpose2d output_padding not below the stride (im2col)",
  function(a, k) return F.conv_transpose2d(a, k, nil, { dilation = 2, output_padding = 1 }) end,
  function() return { C.leaf(2, 4, 3, 3), C.leaf(4, 3, 3, 3) } end, { grad = true }, nil)
case("conv_transpose1d gradients", function(a, k, c) return F.conv_transpose1d(a, k, c, { stride = 3, padding = 1 }) end,
  function() return { C.leaf(2, 3, 5), C.leaf(3, 2, 4), C.leaf(2) } end, { grad = true }, T_GRAD, true)

for _, on in ipairs({ true, false }) do
  C.describe(("convolutions on cuda, cudnn %s"):format(on and "enabled" or "disabled"), function()
    C.without_tf32()
    with_cudnn(on)

    for _, c in ipairs(cases) do
      it(("%s matches the CPU%s"):format(c.name, on and (c.kinds and " through cuDNN" or " through im2col") or ""),
        function()
          local d = delta(function() C.check(c.fn, c.inputs(), c.opts) end)
          if not on then
            assert.are.equal(0, runs(d), "cuDNN ran while disabled")
            assert.are.equal(0, d.fallbacks, "cuDNN was consulted while disabled")
          elseif not c.kinds then
            assert.are.equal(0, runs(d), "cuDNN ran a geometry it cannot express")
            assert.is_true(d.fallbacks > 0, "no fallback counted")
          elseif emulated or c.core then
            for _, kind in ipairs(c.kinds) do assert.is_true(d[kind] > 0, kind .. " did not run through cuDNN") end
            assert.are.equal(0, d.fallbacks, "fell back to im2col")
          else
            assert.is_true(runs(d) + d.fallbacks > 0, "cuDNN was not consulted")
          end
        end)
    end

    it("trains nn.Conv2d like the CPU for one step", function()
      graft.manual_seed(3)
      local cpu = graft.nn.Conv2d(3, 4, 3, { padding = 1 })
      local x = graft.randn(2, 3, 6, 6)
      local dev = graft.nn.Conv2d(3, 4, 3, { padding = 1 })
      dev:load_state_dict(cpu:state_dict())
      dev:to("cuda")
      local d = delta(function()
        local yc, yd = cpu(x), dev(x:cuda())
        C.assert_match(yd, yc)
        yc:sum():backward()
        yd:sum():backward()
      end)
      C.assert_match(dev.weight.grad, cpu.weight.grad)
      C.assert_match(dev.bias.grad, cpu.bias.grad)
      assert.are.equal(on and 2 or 0, d.forward + d.backward_filter)
    end)

    it("leaks nothing, forward and backward", function()
      local x, w, b = C.leaf(2, 3, 5, 5):cuda():detach(), graft.randn(4, 3, 3, 3):cuda(), graft.randn(4):cuda()
      x.requires_grad = true
      w.requires_grad = true
      H.no_leak(function()
        local y = F.conv2d(x, w, b, { padding = 1 })
        y:sum():backward()
        x.grad, w.grad = nil, nil
      end)
    end)
  end)
end

C.describe("graft.backends.cudnn", function()
  C.without_tf32()
  with_cudnn(true)

  it("is enabled by default, as PyTorch, with deterministic and benchmark off", function()
    assert.is_true(defaults.enabled)
    assert.is_false(defaults.deterministic)
    assert.is_false(defaults.benchmark)
  end)

  it("reports whether the library loaded, and its version", function()
    assert.is_boolean(cudnn.is_available())
    if cudnn.is_available() then
      assert.is_true(cudnn.version() >= 90000 and cudnn.version() < 100000)
      assert.are.equal("", cudnn._why())
    else
      assert.is_nil(cudnn.version())
      assert.is_true(#cudnn._why() > 0)
    end
    if emulated then assert.is_true(cudnn.is_available()) end
  end)

  it("switches take booleans only and read back", function()
    cudnn.enabled = false
    assert.is_false(cudnn.enabled)
    cudnn.enabled = true
    assert.is_true(cudnn.enabled)
    cudnn.deterministic = true
    assert.is_true(cudnn.deterministic)
    cudnn.benchmark = true
    assert.is_true(cudnn.benchmark)
    assert.has_error(function() cudnn.enabled = 1 end)
    assert.has_error(function() cudnn.benchmark = nil end)
    assert.has_error(function() cudnn.deterministic = "yes" end)
    assert.is_nil(graft.backends.cuda.matmul.enabled) -- a cudnn switch only
  end)

  it("builds descriptors and queries the heuristic once per shape", function()
    cudnn._clear_cache()
    local x, w = graft.randn(2, 3, 7, 7):cuda(), graft.randn(5, 3, 3, 3):cuda()
    local first = delta(function() F.conv2d(x, w, nil, { padding = 1 }) end)
    local again = delta(function() F.conv2d(x, w, nil, { padding = 1 }) end)
    assert.are.equal(1, first.plans)
    assert.are.equal(1, first.algo_queries)
    assert.are.equal(0, again.plans)
    assert.are.equal(0, again.algo_queries)
    assert.are.equal(1, again.forward)
    -- another shape, and TF32 (a different math type), are other plans
    local other = delta(function() F.conv2d(x, w, nil, { padding = 2 }) end)
    assert.are.equal(1, other.plans)
    graft.backends.cudnn.allow_tf32 = true
    local tf32 = delta(function() F.conv2d(x, w, nil, { padding = 1 }) end)
    assert.are.equal(1, tf32.plans)
  end)

  it("times every algorithm once per shape with benchmark on, and keeps the fastest", function()
    cudnn._clear_cache()
    local x, w, b = C.leaf(2, 3, 6, 6), C.leaf(4, 3, 3, 3), C.leaf(4)
    local fn = function(a, k, c) return F.conv2d(a, k, c, { padding = 1 }) end
    local heur = delta(function() C.check(fn, { x, w, b }, { grad = true }) end)
    cudnn.benchmark = true
    local first = delta(function() C.check(fn, { x, w, b }, { grad = true }) end)
    local again = delta(function() C.check(fn, { x, w, b }, { grad = true }) end)
    assert.are.equal(1, first.plans) -- benchmarked choices are a plan of their own
    assert.are.equal(3, first.algo_queries)
    assert.are.equal(0, again.plans + again.algo_queries)
    assert.are.equal(3, runs(again))
    if emulated then
      -- the emulator "measures" the heuristic's last choice fastest
      assert.are.same({ forward = 1, backward_data = 0, backward_filter = 0 }, heur.last_algo)
      assert.are.same({ forward = 2, backward_data = 1, backward_filter = 1 }, first.last_algo)
    end
  end)

  it("picks only deterministic algorithms when asked", function()
    local x, w = C.leaf(2, 3, 6, 6), C.leaf(4, 3, 3, 3)
    local fn = function(a, k) return F.conv2d(a, k, nil, { padding = 1 }) end
    local d = delta(function() C.check(fn, { x, w }, { grad = true }) end)
    assert.are.equal(1, d.backward_filter)
    cudnn.deterministic = true
    local dd = delta(function() C.check(fn, { x, w }, { grad = true }) end)
    assert.is_true(dd.backward_filter + dd.fallbacks > 0)
    if emulated then
      -- the emulated heuristic lists non-deterministic algorithms first (as cuDNN's often does)
      assert.are.equal(0, d.last_algo.backward_filter)
      assert.are.equal(1, dd.last_algo.backward_filter)
      assert.are.equal(1, dd.last_algo.backward_data)
    end
  end)
end)

C.describe("cuDNN refusals and failures (emulator)", function()
  C.without_tf32()
  with_cudnn(true)

  -- false on a real device (the refusal stages are the emulator's: the test passes empty)
  local function refuse(stage) return emulated and cudnn._emu_refuse(stage) end

  local function conv(x, w) return F.conv2d(x, w, nil, { padding = 1 }) end

  it("falls back to im2col for a shape whose descriptors cuDNN refuses, and remembers", function()
    if not refuse(nil) then return end
    cudnn._clear_cache()
    local x, w = graft.randn(2, 3, 5, 5), graft.randn(4, 3, 3, 3)
    cudnn._emu_refuse("descriptor")
    local d = delta(function() C.check(conv, { x, w }) end)
    assert.are.equal(0, runs(d))
    assert.are.equal(1, d.fallbacks)
    assert.are.equal(1, d.refusals)
    cudnn._emu_refuse(nil)
    -- the refusal is cached for the shape: no new plan, still im2col
    d = delta(function() C.check(conv, { x, w }) end)
    assert.are.equal(0, runs(d))
    assert.are.equal(0, d.plans)
    assert.are.equal(1, d.fallbacks)
    -- another shape goes through cuDNN
    d = delta(function() C.check(conv, { graft.randn(1, 3, 5, 5), w }) end)
    assert.are.equal(1, d.forward)
    -- forgetting the cache asks again
    cudnn._clear_cache()
    d = delta(function() C.check(conv, { x, w }) end)
    assert.are.equal(1, d.forward)
    assert.are.equal(1, d.plans)
  end)

  it("falls back when the heuristic offers no algorithm, per kind", function()
    if not refuse(nil) then return end
    cudnn._clear_cache()
    local x, w = C.leaf(2, 3, 5, 5), C.leaf(4, 3, 3, 3)
    local d = delta(function() C.check(conv, { x, w }) end) -- the forward plan is ready
    assert.are.equal(1, d.forward)
    cudnn._emu_refuse("algorithm")
    d = delta(function() C.check(conv, { x, w }, { grad = true }) end)
    assert.are.equal(1, d.forward) -- its algorithms were listed before
    assert.are.equal(0, d.backward_data + d.backward_filter)
    assert.are.equal(2, d.fallbacks)
    assert.are.equal(2, d.refusals)
  end)

  it("falls back when every algorithm is refused at run time", function()
    if not refuse(nil) then return end
    cudnn._clear_cache()
    cudnn._emu_refuse("run")
    local d = delta(function()
      C.check(function(a, k, c) return F.conv_transpose2d(a, k, c, { stride = 2 }) end,
        { C.leaf(2, 4, 3, 3), C.leaf(4, 3, 3, 3), C.leaf(3) }, { grad = true })
    end)
    assert.are.equal(0, runs(d))
    assert.are.equal(3, d.fallbacks)
    assert.are.equal(3, d.refusals)
  end)

  it("adds the bias with graft's own op where cuDNN refuses cudnnAddTensor", function()
    if not refuse(nil) then return end
    cudnn._clear_cache()
    cudnn._emu_refuse("bias")
    local d = delta(function()
      C.check(function(a, k, c) return F.conv2d(a, k, c, { padding = 1 }) end,
        { graft.randn(2, 3, 5, 5), graft.randn(4, 3, 3, 3), graft.randn(4) })
      C.check(function(a, k, c) return F.conv1d(a, k, c, { stride = 2 }) end,
        { graft.randn(2, 3, 9), graft.randn(4, 3, 3), graft.randn(4) })
      C.check(function(a, k, c) return F.conv_transpose2d(a, k, c, { stride = 2 }) end,
        { graft.randn(4, 3, 3), graft.randn(4, 2, 3, 3), graft.randn(2) })
    end)
    assert.are.equal(2, d.forward)
    assert.are.equal(1, d.backward_data)
    assert.are.equal(0, d.fallbacks)
  end)

  it("raises a cuDNN failure naming the op, the call and the status, leaking nothing", function()
    if not refuse(nil) then return end
    cudnn._clear_cache()
    local x, w = graft.randn(2, 3, 5, 5):cuda(), graft.randn(4, 3, 3, 3):cuda()
    cudnn._emu_refuse("fail")
    H.raises("conv2d: cudnnConvolutionForward: CUDNN_STATUS_EXECUTION_FAILED (", conv, x, w)
    H.raises("conv_transpose2d: cudnnConvolutionBackwardData: CUDNN_STATUS_EXECUTION_FAILED (",
      F.conv_transpose2d, x, graft.randn(3, 2, 3, 3):cuda())
    cudnn._emu_refuse(nil)
    C.check(conv, { graft.randn(2, 3, 5, 5), graft.randn(4, 3, 3, 3) })
  end)

  it("a real build has no refusal stages", function()
    if emulated then
      assert.is_true(cudnn._emu_refuse(nil))
    else
      assert.is_false(cudnn._emu_refuse(nil))
    end
    assert.has_error(function() cudnn._emu_refuse("sometimes") end)
  end)
end)

C.describe("convolution errors with cudnn enabled", function()
  with_cudnn(true)

  it("name the op on device mismatch and bad dtypes", function()
    local x, w = graft.randn(1, 3, 5, 5), graft.randn(2, 3, 3, 3)
    H.raises("conv2d: expected all tensors to be on the same device, but found cuda:0 and cpu", F.conv2d, x:cuda(), w)
    H.raises("conv2d: input is float32 but weight is float64", F.conv2d, x:cuda(), w:double():cuda())
    H.raises("conv_transpose2d: expected input with 2 channels", F.conv_transpose2d, x:cuda(), w:cuda())
  end)
end)
