-- Reductions and scans on CUDA: every PyTorch case of spec/fixtures/reduce.lua run on the
-- device (views taken on the device), then each kernel path against the CPU: rows
-- (short, one warp, several warps), columns, reduced dims that are not adjacent, long
-- reductions split in chunks, block scans (chunked too), every dtype, ties and NaN,
-- gradients, and errors.
local graft = require("graft")
local H = require("spec.helpers")
local show = H.show
local C = require("spec.helpers.cuda")
local apply_view = require("spec.helpers.views")

local fx = H.fixture("reduce")

-- PyTorch's CPU accumulates float32 in a cascade, the device in float in another order.
local function tol(c, out_dtype)
  local in_dtype = fx.inputs[c.x].dtype
  if out_dtype == "float16" or in_dtype == "float16" then return { rtol = 2e-3, atol = 1e-3 } end
  if out_dtype == "bfloat16" or in_dtype == "bfloat16" then return { rtol = 1e-2, atol = 1e-2 } end
  if out_dtype == "float64" and in_dtype == "float64" then return { rtol = 1e-10, atol = 1e-12 } end
  if out_dtype == "float32" or out_dtype == "float64" then return { rtol = 1e-5, atol = 1e-5 } end
  return C.EXACT
end

local function run_case(x, c)
  if c.op == "norm" then return x:norm(nil, c.dims, c.opts) end
  return x[c.op](x, c.dims, c.opts)
end

-- Deterministic values in [-5, 5) (no RNG: the same on every run and device).
local function det(n, seed)
  local t = {}
  for k = 1, n do t[k] = (((k + (seed or 0)) * 7919) % 1000 - 500) / 100 end
  return t
end
local function dt(shape, dtype, seed)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return graft.tensor(det(n, seed)):reshape(shape):to(dtype or "float32")
end

C.describe("reductions on cuda match PyTorch (every fixture case)", function()
  for k, c in ipairs(fx.cases) do
    local label = ("%d: %s of %s%s dims=%s opts=%s"):format(k, c.op, c.x, c.view and (" " .. show(c.view)) or "",
      show(c.dims), show(c.opts))
    it(label, function()
      local x = apply_view(H.T(fx.inputs[c.x]):cuda(), c.view)
      local out, idx = run_case(x, c)
      assert.are.equal("cuda:0", out:device())
      assert.tensor_near(out:cpu(), c.out, tol(c, c.out.dtype))
      if c.idx then
        assert.are.equal("cuda:0", idx:device())
        assert.tensor_near(idx:cpu(), c.idx, C.EXACT)
      end
    end)
  end
end)

C.describe("cuda reduction kernels against the CPU", function()
  -- op = {fn, prep}: prep (on the CPU) shapes the input, so only reductions run on the device
  local function scaled(x) return x / 4 end
  local function big(x) return x:gt(4.9) end
  local function notsmall(x) return x:gt(-4.9) end
  local ops = {
    sum = { function(x, d) return x:sum(d) end },
    mean = { function(x, d) return x:mean(d) end },
    prod = { function(x, d) return x:prod(d) end, scaled },
    amax = { function(x, d) return x:amax(d) end },
    amin = { function(x, d) return x:amin(d) end },
    var = { function(x, d) return x:var(d) end },
    std = { function(x, d) return x:std(d, { correction = 0 }) end },
    norm = { function(x, d) return x:norm(2, d) end },
    norm1 = { function(x, d) return x:norm(1, d) end },
    norm3 = { function(x, d) return x:norm(3, d) end },
    norminf = { function(x, d) return x:norm(math.huge, d) end },
    normninf = { function(x, d) return x:norm(-math.huge, d) end },
    norm0 = { function(x, d) return x:norm(0, d) end, function(x) return x:gt(2) end },
    lse = { function(x, d) return x:logsumexp(d) end },
    any = { function(x, d) return x:any(d) end, big },
    all = { function(x, d) return x:all(d) end, notsmall },
  }
  local names = {}
  for k in pairs(ops) do names[#names + 1] = k end
  table.sort(names)

  -- shape, dims: rows of 1..8 lanes, one warp, several warps (shared-memory merge),
  -- columns narrow and wide, dims apart (reduced after a permuted copy), everything.
  local layouts = {
    { { 37, 5 }, 2 }, { { 9, 30 }, 2 }, { { 5, 300 }, 2 }, { { 40, 7 }, 1 }, { { 6, 33, 70 }, 2 },
    { { 4, 5, 6, 3 }, { 1, 3 } }, { { 3, 4, 5 }, { 1, 2, 3 } }, { { 3, 4, 5 } }, { { 2, 1, 3 }, 2 },
    { { 1, 5, 7 }, { 1, 3 } }, { { 5, 1, 7 }, { 1, 2 } }, { { 0, 4 }, 2 },
  }
  for _, name in ipairs(names) do
    it(name .. " over rows, columns, split and all dims", function()
      local fn, prep = ops[name][1], ops[name][2]
      for li, l in ipairs(layouts) do
        local x = dt(l[1], "float32", li)
        if prep then x = prep(x) end
        if name == "norm0" then x = x:float() end
        local ok, err = pcall(C.check, function(t) return fn(t, l[2]) end, { x }, { rtol = 2e-4, atol = 1e-4 })
        assert(ok, ("layout %d: %s"):format(li, tostring(err)))
      end
    end)
  end

  it("reduces non-contiguous and broadcast views", function()
    local x = dt({ 6, 8, 10 })
    C.check(function(t) return t:transpose(1, 3):sum(2) end, { x })
    C.check(function(t) return t:narrow(3, 2, 5):amax({ 1, 3 }) end, { x })
    C.check(function(t) return t:permute({ 3, 1, 2 }):var(3) end, { x })
    C.check(function(t) return t:narrow(1, 1, 1):expand(4, 8, 10):mean(1) end, { x })
    C.check(function(t) return t:transpose(2, 3):argmax(2) end, { x })
  end)

  it("keeps dims with keepdim", function()
    local x = dt({ 4, 5, 6 })
    C.check(function(t) return t:sum({ 1, 3 }, true) end, { x })
    C.check(function(t) return t:max(2, { keepdim = true }) end, { x })
    C.check(function(t) return t:argmin({ keepdim = true }) end, { x })
    C.check(function(t) return t:logsumexp(3, true) end, { x })
  end)

  it("splits long reductions into chunks and merges them in order", function()
    local row = dt({ 40000 }, "float32", 3)
    C.check(function(t) return t:sum(), t:mean(), t:amax(), t:argmin(), t:var(), t:norm(), t:logsumexp(1) end,
      { row }, { rtol = 1e-4, atol = 1e-3 })
    local cols = dt({ 20000, 3 }, "float32", 5)
    C.check(function(t) return t:sum(1), t:amin(1), t:argmax(1), t:std(1), t:norm(1, 1) end, { cols },
      { rtol = 1e-4, atol = 1e-3 })
    local f64 = dt({ 3, 30000 }, "float64", 7)
    C.check(function(t) return t:sum(2), t:var(2), t:prod(2) end, { f64 / 1000 + 1 }, { rtol = 1e-9 })
  end)

  it("keeps float32 variance accurate when the mean dwarfs the spread", function()
    local x = dt({ 4, 9000 }) + 1000
    C.check(function(t) return t:var(2), t:std(), t:var(1) end, { x }, { rtol = 1e-4, atol = 1e-4 })
  end)

  it("finds the first index of ties and the first NaN, across lanes and chunks", function()
    local z = graft.zeros(30000)
    z[5001] = 2
    z[25001] = 2
    z[100] = -1
    z[29000] = -1
    local d = z:cuda()
    assert.are.equal(5000, d:argmax():item())
    assert.are.equal(99, d:argmin():item())
    z[20000] = 0 / 0
    z[27000] = 0 / 0
    d = z:cuda()
    assert.are.equal(19999, d:argmax():item())
    assert.are.equal(19999, d:argmin():item())
    assert.is_true(d:amax():item() ~= d:amax():item())
    local ties = graft.tensor({ { 1, 3, 3, 0 }, { 2, 2, 2, 2 }, { 0 / 0, 1, 0 / 0, 5 } })
    C.check(function(t) return t:max(2) end, { ties })
    C.check(function(t) return t:min(2) end, { ties })
    C.check(function(t) return t:t():argmax(1), t:t():argmin(1) end, { ties })
    local cols = graft.zeros(3000, 4)
    cols[1500][2] = 1
    cols[2500][2] = 1
    C.check(function(t) return t:argmax(1), t:max(1) end, { cols })
  end)

  it("propagates NaN and infinities as the CPU does", function()
    local x = graft.tensor({ { 1, 0 / 0, 3 }, { -math.huge, -math.huge, -math.huge }, { math.huge, 1, 2 },
      { -1, 2, math.huge } })
    for _, f in ipairs({ "sum", "mean", "amax", "amin", "var", "logsumexp", "norm", "prod" }) do
      C.check(function(t) return t[f](t, 2) end, { x })
    end
    C.check(function(t) return t:norm(math.huge, 2), t:norm(-math.huge, 2), t:norm(0, 2) end, { x })
  end)

  it("reduces empty tensors to the identity", function()
    local e = graft.zeros(0, 3)
    C.check(function(t) return t:sum(1), t:prod(1), t:mean(1), t:var(1), t:norm(2, 1), t:logsumexp(1) end, { e })
    C.check(function(t) return t:any(1), t:all(1), t:sum(), t:norm(-math.huge, 1) end, { e })
    C.check(function(t) return t:sum(2), t:amax(2) end, { e })
  end)

  it("handles every dtype with the CPU's result dtypes", function()
    for _, dtn in ipairs({ "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool" }) do
      local x = (dt({ 5, 40 }, "float32", 11) * 3):to(dtn)
      local ok, err = pcall(C.check, function(t)
        return t:sum(2), t:sum(), t:prod(1), t:amax(2), t:amin(1), t:max(2), t:min(1), t:any(2), t:all(1),
            t:sum({ dtype = "float64" }), t:cumsum(2), t:cumprod(1)
      end, { x })
      assert(ok, dtn .. ": " .. tostring(err))
      if dtn ~= "bool" then
        ok, err = pcall(C.check, function(t) return t:argmax(2), t:argmin(), t:logsumexp(2) end, { x })
        assert(ok, dtn .. ": " .. tostring(err))
      end
      if dtn:find("float") then
        ok, err = pcall(C.check, function(t)
          return t:mean(2), t:var(1), t:std(2), t:norm(), t:norm(3, 1), t:mean({ dtype = "float64" })
        end, { x })
        assert(ok, dtn .. ": " .. tostring(err))
      end
    end
  end)

  it("wraps int64 sums and products as the CPU does", function()
    local big = graft.tensor({ 2 ^ 62, 2 ^ 62, 3, 2 ^ 40 }, { dtype = "int64" })
    C.check(function(t) return t:sum(), t:prod(), t:cumsum(1), t:cumprod(1) end, { big })
    local u8 = graft.tensor({ 200, 100, 7 }, { dtype = "uint8" })
    C.check(function(t) return t:sum(), t:sum({ dtype = "uint8" }), t:cumsum(1, { dtype = "int32" }) end, { u8 })
  end)
end)

C.describe("cuda scans against the CPU", function()
  it("scans short rows, long rows in blocks and columns", function()
    for _, shape in ipairs({ { 7, 20 }, { 5, 100 }, { 3, 700 }, { 2, 3, 40 } }) do
      local x = dt(shape, "float32", #shape) / 5
      C.check(function(t) return t:cumsum(-1), t:cumprod(-1), t:cumsum(1), t:cumprod(1) end, { x },
        { rtol = 1e-4, atol = 1e-4 })
    end
  end)

  it("scans very long rows in chunks and few long columns through a transposed copy", function()
    local x = dt({ 2, 20000 }, "float64", 2) / 100
    C.check(function(t) return t:cumsum(2) end, { x }, { rtol = 1e-9, atol = 1e-9 })
    local p = (dt({ 1, 12000 }, "float32", 3) / 50000 + 1)
    C.check(function(t) return t:cumprod(2) end, { p }, { rtol = 1e-4 })
    local c = dt({ 300, 3, 2 }, "float32", 4)
    C.check(function(t) return t:cumsum(1), t:cumprod(1) end, { c / 4 }, { rtol = 1e-3, atol = 1e-3 })
    local i = dt({ 20000 }, "int64", 5)
    C.check(function(t) return t:cumsum(1) end, { i })
  end)

  it("scans non-contiguous views, 0-dim tensors and empty tensors", function()
    local x = dt({ 6, 50 }) / 10
    C.check(function(t) return t:t():cumsum(2), t:narrow(2, 3, 40):cumprod(2), t:t():cumsum(1) end, { x },
      { rtol = 1e-4, atol = 1e-4 })
    C.check(function(t) return t:cumsum(1), t:cumprod(-1) end, { graft.tensor(2.5):reshape({}) })
    C.check(function(t) return t:cumsum(1), t:cumsum(2) end, { graft.zeros(0, 4) })
  end)
end)

C.describe("cuda reduction gradients", function()
  local function check(fn, x, opts)
    opts = opts or {}
    opts.grad = true
    local leaf = x:clone()
    leaf.requires_grad = true
    C.check(fn, { leaf }, opts)
  end
  local x = dt({ 4, 6 }) / 3

  it("match the CPU for sums, means, products and extremes", function()
    check(function(t) return t:sum(2) end, x)
    check(function(t) return t:sum() end, x)
    check(function(t) return t:mean(1, true) end, x)
    check(function(t) return t:prod(2) end, x)
    check(function(t) return t:prod() end, x)
    check(function(t) return t:amax(2) end, x)
    check(function(t) return t:amin() end, x)
    check(function(t) return t:max(1) end, x)
    check(function(t) return t:max() end, x)
  end)

  it("match the CPU for var, std, norm, logsumexp and cumsum", function()
    check(function(t) return t:var(2) end, x)
    check(function(t) return t:std() end, x)
    check(function(t) return t:norm() end, x)
    check(function(t) return t:norm(1, 2) end, x)
    check(function(t) return t:norm(3, 1) end, x)
    check(function(t) return t:logsumexp(2) end, x)
    check(function(t) return t:cumsum(2) end, x)
  end)

  it("match the CPU for cumprod (its backward runs its recurrence on the host)", function()
    check(function(t) return t:cumprod(2) end, x)
    check(function(t) return t:cumprod(1) end, x)
  end)
end)

C.describe("cuda reduction errors", function()
  it("name the op and leak nothing", function()
    local e = graft.zeros(0, 3, { device = "cuda" })
    H.raises("max: cannot reduce an empty tensor over all dims", e.max, e)
    H.raises("amax: expected reduction dim 1 to have non-zero size", e.amax, e, 1)
    H.raises("argmin: expected reduction dim 1 to have non-zero size", e.argmin, e, 1)
    local i = graft.zeros(2, 3, { dtype = "int64", device = "cuda" })
    H.raises("mean: could not infer output dtype", i.mean, i)
    H.raises("var: std and var only support floating point dtypes, got int64", i.var, i)
    H.raises("norm: input dtype should be floating point", i.norm, i)
    local b = graft.zeros(3, { dtype = "bool", device = "cuda" })
    H.raises("argmax: not implemented for bool", b.argmax, b)
    local x = graft.zeros(2, 3, { device = "cuda" })
    H.raises("sum: dim 3 is out of range", x.sum, x, 3)
    H.raises("cumsum: dim 3 is out of range", x.cumsum, x, 3)
  end)

  it("leave no device memory behind", function()
    local x = dt({ 3, 40000 }):cuda()
    collectgarbage(); collectgarbage()
    local before = graft.cuda.memory_allocated()
    H.no_leak(function()
      for _ = 1, 3 do
        local _ = x:sum(2), x:argmax(2), x:cumsum(2), x:var(), x:sum({ 1, 2 })
      end
    end)
    collectgarbage(); collectgarbage()
    assert.are.equal(before, graft.cuda.memory_allocated())
  end)
end)
