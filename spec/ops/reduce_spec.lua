-- Reductions against PyTorch 1.13 (spec/fixtures/gen_reduce.py): every op and option,
-- dtypes, non-contiguous views, ties, NaN, empty tensors, the parallel paths on a
-- large tensor, and the errors.
local graft = require("graft")
local H = require("spec.helpers")
local show = H.show

local fx = H.fixture("reduce")

local apply_view = require("spec.helpers.views")

-- Tolerance by the dtype of the result (and of the input, for float16 math).
local function tol(c, out_dtype)
  local in_dtype = fx.inputs[c.x].dtype
  if out_dtype == "float16" or in_dtype == "float16" then return { rtol = 2e-3, atol = 1e-3 } end
  if out_dtype == "bfloat16" or in_dtype == "bfloat16" then return { rtol = 1e-2, atol = 1e-2 } end
  if out_dtype == "float64" and in_dtype == "float64" then return { rtol = 1e-10, atol = 1e-12 } end
  if out_dtype == "float32" or out_dtype == "float64" then return { rtol = 2e-6, atol = 1e-6 } end
  return { rtol = 0, atol = 0 }
end

local function run_case(c)
  local x = apply_view(H.T(fx.inputs[c.x]), c.view)
  if c.op == "norm" then return x:norm(nil, c.dims, c.opts) end
  return x[c.op](x, c.dims, c.opts)
end

describe("reductions match PyTorch", function()
  for k, c in ipairs(fx.cases) do
    local label = ("%d: %s of %s%s dims=%s opts=%s"):format(k, c.op, c.x, c.view and (" " .. show(c.view)) or "",
      show(c.dims), show(c.opts))
    it(label, function()
      local out, idx = run_case(c)
      assert.tensor_near(out, c.out, tol(c, c.out.dtype))
      if c.idx then
        assert.tensor_near(idx, c.idx, { rtol = 0, atol = 0 })
      end
    end)
  end
end)

describe("reductions of a large tensor (parallel and accumulation paths)", function()
  local vals = {}
  for k = 0, 160 * 240 - 1 do vals[k + 1] = ((k * 7919) % 1000 - 500) / 37 end
  local big = graft.tensor(vals, { dtype = "float32" }):reshape(160, 240)
  local shifted = {}
  for k, v in ipairs(big:reshape(-1):tolist()) do shifted[k] = v + 1000 end
  local big1000 = graft.tensor(shifted, { dtype = "float32" }):reshape(160, 240)
  local R = fx.big
  local f32 = { rtol = 1e-6, atol = 1e-5 }

  it("sums over everything, the inner dim and the outer dim", function()
    assert.tensor_near(big:sum(), R.sum_all, f32)
    assert.tensor_near(big:sum(1), R.sum0, f32)
    assert.tensor_near(big:sum(2), R.sum1, f32)
    local m = big:mean(2):tolist()
    for i, s in ipairs(R.sum1.data) do assert(math.abs(m[i] - s / 240) <= 1e-6 * (1 + math.abs(s / 240))) end
  end)

  it("sums a transposed view the same way", function()
    assert.tensor_near(big:t():sum(2), R.sum0, f32)
    assert.tensor_near(big:t():sum(1), R.sum1, f32)
  end)

  it("keeps variance accurate when the mean dwarfs the spread", function()
    assert.tensor_near(big1000:var(1), R.var0, { rtol = 1e-5, atol = 1e-5 })
    assert.tensor_near(big1000:std(), R.std_all, { rtol = 1e-5 })
  end)

  it("finds extremes and their first indices", function()
    local v, i = big:max(2)
    assert.tensor_near(v, R.amax1, f32)
    assert.tensor_near(i, R.max1_i)
    assert.tensor_near(big:argmin(1), R.argmin0)
    assert.tensor_near(big:argmax(), R.argmax_all)
    assert.tensor_near(big:amax(2), R.amax1, f32)
  end)

  it("computes norm and logsumexp", function()
    assert.tensor_near(big:norm(), R.norm_all, f32)
    assert.tensor_near(big:logsumexp(2), R.lse1, f32)
  end)

  it("reduces a middle dim with many outputs (lane tiles in parallel)", function()
    local x3 = big:reshape(16, 10, 240)
    local got = x3:sum(2):tolist()
    local flat = big:reshape(-1):tolist()
    for a = 1, 16 do
      for c = 1, 240 do
        local s = 0
        for b = 1, 10 do s = s + flat[((a - 1) * 10 + (b - 1)) * 240 + c] end
        assert(math.abs(got[a][c] - s) <= 1e-5 + 1e-6 * math.abs(s), ("[%d][%d]: %g vs %g"):format(a, c, got[a][c], s))
      end
    end
  end)

  it("gives the same answer on one thread", function()
    local n = graft.get_num_threads()
    graft.set_num_threads(1)
    local ok, err = pcall(function()
      assert.tensor_near(big:sum(), R.sum_all, f32)
      assert.tensor_near(big:sum(1), R.sum0, f32)
      assert.tensor_near(big1000:var(1), R.var0, { rtol = 1e-5, atol = 1e-5 })
      assert.tensor_near(big:argmax(), R.argmax_all)
    end)
    graft.set_num_threads(n)
    assert(ok, err)
  end)

  it("accumulates float32 sums in double (a million times 0.1)", function()
    local x = graft.full({ 1000000 }, 0.1)
    local f = graft.tensor({ 0.1 }, { dtype = "float32" }):tolist()[1]
    assert.is_true(math.abs(x:sum():item() - 1e6 * f) <= 1e-6 * 1e5)
    assert.is_true(math.abs(x:mean():item() - f) <= 1e-7)
  end)
end)

describe("reduction calling conventions", function()
  local x = graft.tensor({ { 1, 2, 3 }, { 4, 5, 6 } }, { dtype = "float32" })
  local function F(t) return H.T(t, "float32") end

  it("takes keepdim positionally or in options, and dims in options", function()
    assert.tensor_near(x:sum(2, true), F({ { 6 }, { 15 } }))
    assert.tensor_near(x:sum({ dim = 2, keepdim = true }), F({ { 6 }, { 15 } }))
    assert.tensor_near(x:sum({ dim = { 1, 2 } }), H.T(21, "float32"):reshape({}))
    assert.tensor_near(graft.sum(x, -1), F({ 6, 15 }))
  end)

  it("returns values and int64 indices from max and min along a dim", function()
    local v, i = x:max(2)
    assert.tensor_near(v, F({ 3, 6 }))
    assert.are.equal("int64", i:dtype())
    assert.are.same({ 2, 2 }, i:tolist())
    local mv, mi = graft.min(x, 1, { keepdim = true })
    assert.tensor_near(mv, F({ { 1, 2, 3 } }))
    assert.are.same({ { 0, 0, 0 } }, mi:tolist())
    assert.are.equal(0, x:max():dim())
  end)

  it("keeps one-sized dims for argmax over everything with keepdim", function()
    local i = x:argmax({ keepdim = true })
    assert.are.same({ 1, 1 }, i:shape())
    assert.are.same({ { 5 } }, i:tolist())
  end)

  it("takes unbiased positionally, in options, or as a correction", function()
    assert.tensor_near(x:var(2, false), x:var(2, { unbiased = false }))
    assert.tensor_near(x:var(2, { correction = 0 }), F({ 2 / 3, 2 / 3 }))
    assert.tensor_near(x:std(), H.T(math.sqrt(3.5), "float32"):reshape({}))
  end)

  it("takes p positionally or in options, with 'fro' and math.huge", function()
    assert.tensor_near(x:norm(1), H.T(21, "float32"):reshape({}))
    assert.tensor_near(x:norm(math.huge, 2), F({ 3, 6 }))
    assert.tensor_near(x:norm({ p = -math.huge, dim = 1 }), F({ 1, 2, 3 }))
    assert.tensor_near(x:norm("fro", { 1, 2 }), x:norm())
  end)

  it("delegates max(a, b) to the elementwise maximum when it exists", function()
    if not graft._methods.maximum then return end
    local y = graft.tensor({ { 3, 1, 3 }, { 7, 0, 9 } }, { dtype = "float32" })
    assert.tensor_near(x:max(y), F({ { 3, 2, 3 }, { 7, 5, 9 } }))
  end)

  it("sums int tensors into int64 and honours dtype", function()
    local i = graft.tensor({ 1, 2, 3 }, { dtype = "int32" })
    assert.are.equal("int64", i:sum():dtype())
    assert.are.equal("float64", i:sum({ dtype = "float64" }):dtype())
    assert.are.equal("uint8", graft.tensor({ 1, 0 }, { dtype = "uint8" }):any():dtype())
    assert.are.equal("bool", graft.tensor({ 1, 0 }, { dtype = "int32" }):all():dtype())
  end)
end)

describe("reduction errors", function()
  local x = graft.zeros(2, 3, 4)

  it("rejects bad dims", function()
    H.raises("sum: dim 4 is out of range for a tensor with 3 dims", x.sum, x, 4)
    H.raises("sum: dim 0 is out of range", x.sum, x, 0)
    H.raises("sum: dim 1 appears multiple times in the list of dims", x.sum, x, { 1, -3 })
    H.raises("max: expected a single dim, got 2", x.max, x, { 1, 2 })
    H.raises("cumsum: expected a dim", x.cumsum, x)
    H.raises("sum: unexpected argument #3", x.sum, x, 1, "x")
    H.raises("amax: dim -4 is out of range", x.amax, x, -4)
  end)

  it("rejects dtypes PyTorch rejects", function()
    local i = graft.zeros(2, 3, { dtype = "int64" })
    H.raises("mean: could not infer output dtype. Input dtype must be either a floating point", i.mean, i)
    H.raises("mean: could not infer output dtype. Optional dtype must be", x.mean, x, { dtype = "int32" })
    H.raises("var: std and var only support floating point dtypes, got int64", i.var, i)
    H.raises("std: std and var only support floating point dtypes", i.std, i, 1)
    H.raises("norm: input dtype should be floating point, got int64", i.norm, i)
    local b = graft.zeros(3, { dtype = "bool" })
    H.raises("argmax: not implemented for bool", b.argmax, b)
    H.raises("norm: p must be a number or 'fro', got 'nuc'", x.norm, x, "nuc")
  end)

  it("rejects max, min and argmax of nothing, naming the op", function()
    local e = graft.zeros(0, 3)
    H.raises("max: cannot reduce an empty tensor over all dims", e.max, e)
    H.raises("min: expected reduction dim 1 to have non-zero size", e.min, e, 1)
    H.raises("amax: expected reduction dim 1 to have non-zero size", e.amax, e, 1)
    H.raises("argmax: cannot reduce an empty tensor over all dims", e.argmax, e)
    H.raises("argmin: expected reduction dim 1 to have non-zero size", e.argmin, e, 1)
    H.raises("amin: cannot reduce an empty tensor", e.amin, e)
  end)

  it("leaks nothing when a reduction fails halfway through its arguments", function()
    H.no_leak(function()
      for _ = 1, 10 do
        pcall(x.max, x, { 1, 2 })
        pcall(x.var, x, 9)
        pcall(x.norm, x, "nuc")
      end
    end)
  end)
end)
