-- What a GPU sees and the emulator does not, checked where it can be: the kernels'
-- vector paths on views that start off their 16-byte boundary (in-place outputs, unary
-- inputs, 1-byte and 16-bit dtypes), cuBLAS on 2-byte-aligned operands, 16-bit products
-- that must reduce in float32 (exact sums whose 16-bit partials would round), and, on a
-- real GPU only, tensors past 2^31 elements (64-bit index paths, chunked reductions,
-- the ordered compaction), compared with closed-form answers rather than the CPU.
local graft = require("graft")
local C = require("spec.helpers.cuda")

local function free()
  collectgarbage()
  collectgarbage()
  if C.available then graft.cuda.empty_cache() end
end

-- x of dtype dt, shape: small distinct values (bool from the sign, ints scaled).
local function data(dt, ...)
  return C.as(graft.randn(...), dt)
end

C.describe("vector paths on misaligned views (cuda)", function()
  before_each(function() graft.manual_seed(23) end)

  it("write in place through a view one element past the boundary", function()
    for _, dt in ipairs({ "float32", "float64", "float16", "bfloat16", "int8", "uint8", "int64" }) do
      local a, b = data(dt, 1031), data(dt, 1031)
      C.check_exact(function(x, y)
        local o = x:clone()
        o:narrow(1, 2, 1027):add_(y:narrow(1, 1, 1027)) -- output misaligned, input aligned
        o:narrow(1, 1, 1029):mul_(2)                    -- aligned in place
        return o
      end, { a, b })
    end
  end)

  it("read misaligned inputs in unary ops and predicates", function()
    for _, dt in ipairs({ "float32", "float16", "bfloat16", "float64" }) do
      local a = graft.randn(1029):to(dt)
      C.check(function(x) return x:narrow(1, 2, 1025):neg(), x:narrow(1, 3, 1025):abs(), x:narrow(1, 4, 1025):exp() end,
        { a })
      C.check_exact(function(x) return x:narrow(1, 2, 1025):gt(0), x:narrow(1, 5, 1024):isfinite() end, { a })
    end
    for _, dt in ipairs({ "int8", "uint8", "bool" }) do
      local a, b = data(dt, 1043), data(dt, 1043)
      C.check_exact(function(x, y)
        return x:narrow(1, 2, 1033):logical_not(), x:narrow(1, 3, 1033):ne(y:narrow(1, 4, 1033)),
            x:narrow(1, 5, 1033):maximum(y:narrow(1, 5, 1033))
      end, { a, b })
    end
  end)

  it("copy, clamp and select where on offset views", function()
    for _, dt in ipairs({ "float16", "float32", "int8" }) do
      local a, b = data(dt, 517), data(dt, 517)
      C.check_exact(function(x, y)
        local o = x:clone()
        o:narrow(1, 2, 511):copy_(y:narrow(1, 7, 511))
        return o, x:narrow(1, 3, 500):clamp(-1, 1), graft.where(x:narrow(1, 2, 500):gt(0), x:narrow(1, 2, 500),
          y:narrow(1, 3, 500))
      end, { a, b })
    end
  end)
end)

C.describe("cuBLAS on offset operands and 16-bit reductions (cuda)", function()
  it("multiplies 16-bit matrices whose data starts one element in", function()
    for _, dt in ipairs(C.FLOATS) do
      local big = graft.randn(9, 17):to(dt)
      C.check(function(x) return graft.matmul(x:narrow(2, 2, 8), x:narrow(1, 2, 8):narrow(2, 3, 5)) end, { big })
      C.check(function(x) return graft.matmul(x:narrow(1, 2, 8):narrow(2, 2, 6):t(), x:narrow(1, 1, 8):narrow(2, 9, 5)) end,
        { big })
    end
  end)

  it("sums long 16-bit products in float32: exact where every float32 partial is exact", function()
    -- b's column: v then -v (v_i in [1, 2) with low mantissa bits set), the last entry
    -- raised by one unit, so the product is exactly one unit while partial sums over
    -- any split of k are large and not representable in 16 bits; a reduction that
    -- rounded partials to the output type would miss the unit
    for _, c in ipairs({ { "float16", 1 / 1024 }, { "bfloat16", 1 / 128 } }) do
      local dt, unit = c[1], c[2]
      local k = 2048
      local v = graft.arange(k // 2):remainder(7):add(1):mul(unit):add(1)
      local col = graft.cat({ v, -v })
      col[k] = col[k]:item() + unit
      local b = graft.stack({ col, col, -col }, 2):to(dt) -- [k, 3]
      local a = graft.ones(2, k, { dtype = dt })
      local d = C.check_exact(graft.matmul, { a, b })[1]
      C.assert_exact(d, graft.tensor({ { unit, unit, -unit }, { unit, unit, -unit } }, { dtype = dt }))
    end
  end)
end)

-- Past 2^31 elements: a real GPU only (gigabytes; the emulator runs a few million
-- thread steps per second). Values are checked against closed forms on the device,
-- reading back a handful of elements.
if C.available and C.backend ~= "cuda" then
  describe("tensors past 2^31 elements (cuda)", function()
    pending("needs a real GPU: gigabytes of device memory, too slow for the emulator")
  end)
else
  C.describe("tensors past 2^31 elements (cuda)", function()
    after_each(free)
    local N = (1 << 31) + 37 -- int8: 2 GiB

    it("add, sum and argmax over 2^31 + 37 int8 elements", function()
      local x = graft.ones(N, { dtype = "int8", device = "cuda" })
      x:narrow(1, N - 1, 2):fill_(3)
      assert.are.equal(N + 4, x:sum():item())
      assert.are.equal(N - 2, x:argmax():item()) -- 0-based: the first 3
      local y = x + x
      assert.are.same({ 2, 6, 6 }, y:narrow(1, N - 2, 3):cpu():tolist())
      assert.are.equal(2 * N + 8, y:sum():item())
      local h = graft.zeros(N, { dtype = "float16", device = "cuda" })
      h:narrow(1, N, 1):fill_(1.5)
      assert.are.equal(N - 1, h:argmax():item())
      assert.are.equal(3.0, (h * 2):sum():item())
    end)

    it("copies transposed, reduces along each dim and finds a nonzero in 2^31+ elements", function()
      local R, K = 65537, 32769 -- 2147581953 elements
      local z = graft.zeros(R, K, { dtype = "int8", device = "cuda" })
      z:narrow(1, R, 1):narrow(2, K, 1):fill_(5)
      local t = z:t():contiguous()
      assert.are.equal(5, t:narrow(1, K, 1):narrow(2, R, 1):item())
      assert.are.equal(0, t:narrow(1, K, 1):narrow(2, R - 1, 1):item())
      t = nil
      assert.are.equal(5, z:sum():item())
      assert.are.equal(5, z:sum(1):narrow(1, K, 1):item())
      assert.are.equal(5, z:sum(2):narrow(1, R, 1):item())
      assert.are.same({ { R - 1, K - 1 } }, z:nonzero():cpu():tolist())
    end)
  end)
end
