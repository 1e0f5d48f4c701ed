-- Matrix products against PyTorch 1.13 (spec/fixtures/gen_linalg.py): matmul's 1-D,
-- 2-D, batched and broadcast cases, transposed and strided operands, dtypes, empty
-- operands, mm/bmm/mv/dot/outer/addmm/baddbmm, the batched paths, and the errors.
local graft = require("graft")
local H = require("spec.helpers")

local fx = H.fixture("linalg")

local apply_view = require("spec.helpers.views")

local function tol(dtype)
  if dtype == "float16" then return { rtol = 2e-3, atol = 2e-3 } end
  if dtype == "bfloat16" then return { rtol = 1e-2, atol = 1e-2 } end
  if dtype == "float64" then return { rtol = 1e-12, atol = 1e-12 } end
  if dtype == "float32" then return { rtol = 1e-5, atol = 1e-5 } end
  return { rtol = 0, atol = 0 }
end

describe("matrix products match PyTorch", function()
  for k, c in ipairs(fx.cases) do
    local parts = {}
    for i, name in ipairs(c.args) do
      local v = c.views and c.views[i]
      local steps = {}
      for _, s in ipairs(v or {}) do steps[#steps + 1] = s[1] end
      parts[#parts + 1] = name .. (#steps > 0 and ("." .. table.concat(steps, ".")) or "")
    end
    it(("%d: %s(%s)"):format(k, c.op, table.concat(parts, ", ")), function()
      local args = {}
      for i, name in ipairs(c.args) do
        args[i] = apply_view(H.T(fx.inputs[name]), c.views and c.views[i])
      end
      if c.opts then args[#args + 1] = c.opts end
      local out = graft[c.op](table.unpack(args))
      assert.tensor_near(out, c.out, tol(c.out.dtype))
      -- the method form gives the same result
      local m = args[1][c.op](table.unpack(args))
      assert.tensor_near(m, out, { rtol = 0, atol = 0 })
    end)
  end
end)

describe("batched products", function()
  local function per_batch(a, b)
    local outs = {}
    for i = 1, a:size(1) do outs[i] = a[i]:mm(b[i]):tolist() end
    return outs
  end

  it("runs many small products in parallel and matches one mm per batch", function()
    graft.manual_seed(7)
    local a, b = graft.randn(64, 24, 16), graft.randn(64, 16, 20)
    assert.tensor_near(a:bmm(b), graft.tensor(per_batch(a, b), { dtype = "float32" }), { rtol = 1e-5, atol = 1e-5 })
    assert.tensor_near(graft.matmul(a, b), a:bmm(b), { rtol = 0, atol = 0 })
  end)

  it("folds [B, n, m] x [m, p] into one product, and broadcasts a matrix over batches", function()
    graft.manual_seed(8)
    local a, w = graft.randn(8, 12, 16), graft.randn(16, 10)
    local want = graft.tensor(per_batch(a, w:expand(8, 16, 10)), { dtype = "float32" })
    assert.tensor_near(a:matmul(w), want, { rtol = 1e-5, atol = 1e-5 })
    assert.tensor_near(a:transpose(1, 2):transpose(1, 2):matmul(w), want, { rtol = 1e-5, atol = 1e-5 })
    local x = graft.randn(10, 12)
    local want2 = graft.tensor(per_batch(x:expand(8, 10, 12), a), { dtype = "float32" })
    assert.tensor_near(x:matmul(a), want2, { rtol = 1e-5, atol = 1e-5 })
  end)

  it("multiplies large matrices through BLAS with transposed operands", function()
    graft.manual_seed(9)
    local a, b = graft.randn(300, 200), graft.randn(200, 250)
    local c = a:mm(b)
    assert.tensor_near(a:t():contiguous():t():mm(b), c, { rtol = 1e-5, atol = 1e-4 })
    assert.tensor_near(b:t():mm(a:t()):t(), c, { rtol = 1e-5, atol = 1e-4 })
    -- one entry checked by hand
    local al, bl = a[17]:tolist(), b:t()[33]:tolist()
    local s = 0
    for i = 1, 200 do s = s + al[i] * bl[i] end
    assert.is_true(math.abs(c[17][33]:item() - s) < 1e-3)
  end)

  it("computes int64 products exactly, wrapping on overflow like PyTorch", function()
    local a = graft.tensor({ { math.maxinteger, 1 } })
    local b = graft.tensor({ { 2 }, { 3 } })
    assert.are.same({ { math.maxinteger * 2 + 3 } }, a:mm(b):tolist())
  end)
end)

describe("matrix product errors", function()
  local a = graft.zeros(2, 3)
  local b = graft.zeros(4, 5)

  it("names the op and the shapes", function()
    H.raises("mm: a is [2, 3], b is [4, 5]: inner dimensions 3 and 4 differ", graft.mm, a, b)
    H.raises("matmul: a is [2, 3], b is [4, 5]: inner dimensions 3 and 4 differ", a.matmul, a, b)
    H.raises("bmm: expected 3-D tensors, got [2, 3] and [4, 5]", graft.bmm, a, b)
    H.raises("bmm: batch sizes 2 and 3 differ", graft.bmm, graft.zeros(2, 2, 3), graft.zeros(3, 3, 5))
    H.raises("mm: expected 2-D tensors, got [3] and [3, 4]", graft.mm, graft.zeros(3), graft.zeros(3, 4))
    H.raises("mv: expected a 2-D matrix and a 1-D vector, got [3] and [3]", graft.mv, graft.zeros(3), graft.zeros(3))
    H.raises("dot: sizes 3 and 4 differ", graft.dot, graft.zeros(3), graft.zeros(4))
    H.raises("matmul: both arguments need to be at least 1-D, got 0-D and 1-D", graft.matmul,
      graft.tensor(1.0), graft.zeros(4))
    H.raises("matmul (batch dims): shapes [2] and [3] cannot broadcast", graft.matmul,
      graft.zeros(2, 2, 3), graft.zeros(3, 3, 5))
    H.raises("addmm: input of shape [2, 3] cannot be broadcast to [2, 2]", graft.addmm, graft.zeros(2, 3),
      graft.zeros(2, 3), graft.zeros(3, 2))
    H.raises("outer: expected 1-D tensors", graft.outer, a, a)
  end)

  it("refuses mixed dtypes and bool, as PyTorch", function()
    H.raises("matmul: expected scalar type float32 but found float64", graft.matmul, graft.zeros(2, 3),
      graft.zeros(3, 2, { dtype = "float64" }))
    H.raises("mm: expected scalar type int64 but found float32", graft.mm, graft.zeros(2, 3, { dtype = "int64" }),
      graft.zeros(3, 2))
    H.raises("dot: expected both vectors to have the same dtype, got float32 and float64", graft.dot,
      graft.zeros(3), graft.zeros(3, { dtype = "float64" }))
    H.raises("addmm: expected scalar type float32 but found float64 (input must match", graft.addmm,
      graft.zeros(2, 2, { dtype = "float64" }), graft.zeros(2, 3), graft.zeros(3, 2))
    H.raises("matmul: not implemented for bool", graft.matmul, graft.zeros(2, 2, { dtype = "bool" }),
      graft.zeros(2, 2, { dtype = "bool" }))
  end)

  it("checks its arguments before allocating anything", function()
    H.raises("bad argument #2", graft.matmul, a, 3)
  end)
end)
