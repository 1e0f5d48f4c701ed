-- The CPU kernels for skinny matrix products (core/cpu/gemm_small.c): one of m, n, k at
-- most 16 and the others large, as a classifier head's forward (n small), input gradient
-- (k small) and weight gradient (m small) are. Every result is compared with a float64
-- reference computed through BLAS on operands zero-padded so that no side is 16 or less
-- (so the kernels under test never compute it), elementwise within
-- rtol * sqrt(k) * (|A| |B|)[i, j] (rtol 1e-5 for float32, 1e-12 for float64): the size of
-- a summation-order difference. Sizes keep m * n * k at 2^20 or more (2^21 when k is the
-- small side), where the kernels run both on one thread and across the pool; below that
-- BLAS may keep the product.
local graft = require("graft")
require("spec.helpers")

local WORK = { m = 1 << 20, n = 1 << 20, k = 1 << 21 }
local RTOL = { float32 = 1e-5, float64 = 1e-12 }

-- x as a rows x cols float64 matrix, zero-padded.
local function padded(x, rows, cols)
  local p = graft.zeros(rows, cols, { dtype = "float64" })
  p:narrow(1, 1, x:size(1)):narrow(2, 1, x:size(2)):copy_(x:double())
  return p
end

-- a @ b in float64 through BLAS, every side padded past 16.
local function reference(a, b)
  local m, k, n = a:size(1), a:size(2), b:size(2)
  local M, K, N = math.max(m, 17), math.max(k, 17), math.max(n, 17)
  return graft.mm(padded(a, M, K), padded(b, K, N)):narrow(1, 1, m):narrow(2, 1, n)
end

-- Asserts |got - want| <= rtol sqrt(k) bound elementwise (bound: the sum of the absolute
-- terms) and that got holds no NaN.
local function check(got, want, bound, k, what)
  assert.are.same(want:shape(), got:shape(), what)
  local lim = bound * (RTOL[got:dtype()] * math.sqrt(math.max(k, 1))) + 1e-300
  local worst = ((got:double() - want):abs() / lim):max():item()
  assert.is_false(got:isnan():any():item(), what .. ": NaN in the result")
  assert.is_true(worst <= 1, ("%s: the error is %.3g times the bound"):format(what, worst))
end

-- The same rows x cols values under another layout: "c" contiguous, "t" the transpose of
-- a contiguous matrix, "n" a narrow of a wider matrix (rows further apart than cols),
-- "nt" the transpose of such a narrow.
local function layout(x, how)
  local rows, cols = x:size(1), x:size(2)
  if how == "c" then return x:contiguous() end
  if how == "t" then return x:t():contiguous():t() end
  if how == "n" then
    local wide = graft.zeros(rows, cols + 7, { dtype = x:dtype() })
    wide:narrow(2, 4, cols):copy_(x)
    return wide:narrow(2, 4, cols)
  end
  local wide = graft.zeros(cols, rows + 5, { dtype = x:dtype() })
  wide:narrow(2, 2, rows):copy_(x:t())
  return wide:narrow(2, 2, rows):t()
end
local LAYOUTS = { "c", "t", "n", "nt" }

-- The smallest odd number at least work / (x * y): the third side of a product of x, y.
local function third(work, x, y)
  local z = math.ceil(work / (x * y))
  return z % 2 == 1 and z or z + 1
end

-- {m, n, k} for small side s in the given role, the other two odd and large-ish.
local function shape_of(role, s, other)
  local big = third(WORK[role], s, other)
  if role == "n" then return { other, s, big } end
  if role == "k" then return { other, big, s } end
  return { s, other, big }
end

local function randn(rows, cols, dtype) return graft.randn(rows, cols, { dtype = dtype }) end

describe("skinny matrix products", function()
  local threads = graft.get_num_threads()
  after_each(function() graft.set_num_threads(threads) end)

  for _, dtype in ipairs({ "float32", "float64" }) do
    for _, role in ipairs({ "n", "k", "m" }) do
      for _, s in ipairs({ 1, 2, 3, 7, 10, 13, 16 }) do
        for variant, other in ipairs({ 37, 601 }) do
          local m, n, k = table.unpack(shape_of(role, s, other))
          -- with the pool: every layout pair on the first variant, layouts in step on the
          -- second; on one thread: layouts in step on the first, one pair on the second
          local runs = { { threads, {} } }
          if threads > 1 then runs[2] = { 1, {} } end
          for i, la in ipairs(LAYOUTS) do
            for j, lb in ipairs(LAYOUTS) do
              if variant == 1 or i == j then table.insert(runs[1][2], { la, lb }) end
              if runs[2] and (variant == 1 and i == j or variant == 2 and i == 1 and j == 4) then
                table.insert(runs[2][2], { la, lb })
              end
            end
          end
          it(("%s, %s small: [%d x %d] @ [%d x %d], operand layouts"):format(dtype, role, m, k, k, n), function()
            graft.manual_seed(1000 * s + m + n + k)
            local a, b = randn(m, k, dtype), randn(k, n, dtype)
            local want, bound = reference(a, b), reference(a:abs(), b:abs())
            for _, run in ipairs(runs) do
              local nt = run[1]
              graft.set_num_threads(nt)
              for _, p in ipairs(run[2]) do
                local got = graft.mm(layout(a, p[1]), layout(b, p[2]))
                check(got, want, bound, k, ("layouts %s, %s, %d threads"):format(p[1], p[2], nt))
              end
            end
          end)
        end
      end
    end
  end

  it("agrees with a plain Lua triple loop (the reference itself)", function()
    graft.manual_seed(3)
    local a, b = randn(41, 3, "float32"), randn(3, 29, "float32")
    local al, bl = a:tolist(), b:tolist()
    local want = {}
    for i = 1, 41 do
      want[i] = {}
      for j = 1, 29 do
        local s = 0
        for p = 1, 3 do s = s + al[i][p] * bl[p][j] end
        want[i][j] = s
      end
    end
    want = graft.tensor(want, { dtype = "float64" })
    local got = reference(a, b)
    assert.is_true((got - want):abs():max():item() <= 1e-12)
    -- and one product large enough for the kernels, element (7, 5) by hand
    local x, y = randn(601, 10, "float32"), randn(10, 401, "float32")
    local c, xl, yl, s = graft.mm(x, y), x[7]:tolist(), y:t()[5]:tolist(), 0
    for p = 1, 10 do s = s + xl[p] * yl[p] end
    assert.is_true(math.abs(c[7][5]:item() - s) <= 1e-5 * (1 + math.abs(s)))
  end)

  for _, dtype in ipairs({ "float32", "float64" }) do
    it(dtype .. ": addmm with beta 0 never reads the output, even when it holds NaN", function()
      graft.manual_seed(5)
      -- outputs of 64 KiB or more come from the allocator's arena, which hands a freed
      -- block out again: a NaN tensor freed first leaves NaN in the next output's memory
      for _, mnk in ipairs({ { 4099, 10, 257 }, { 601, 357, 10 }, { 10, 4099, 257 } }) do
        local m, n, k = table.unpack(mnk)
        local a, b = randn(m, k, dtype), randn(k, n, dtype)
        local want, bound = reference(a, b), reference(a:abs(), b:abs())
        local function nan_blocks()
          for _ = 1, 2 do graft.full({ m, n }, 0 / 0, { dtype = dtype }) end
          collectgarbage()
        end
        for _, nt in ipairs({ 1, threads }) do
          graft.set_num_threads(nt)
          nan_blocks()
          local got = graft.addmm(graft.full({ m, n }, 0 / 0, { dtype = dtype }), a, b, { beta = 0 })
          check(got, want, bound, k, ("[%d, %d, %d], %d threads"):format(m, n, k, nt))
          nan_blocks()
          local half = graft.addmm(graft.full({ n }, 0 / 0, { dtype = dtype }), a, b, { beta = 0, alpha = 0.5 })
          check(half, want * 0.5, bound * 0.5, k, ("alpha 0.5, [%d, %d, %d], %d threads"):format(m, n, k, nt))
        end
      end
    end)

    it(dtype .. ": addmm scales by alpha and adds beta times the input (full or broadcast)", function()
      graft.manual_seed(6)
      for _, mnk in ipairs({ { 601, 13, 257 }, { 1201, 601, 3 }, { 5, 301, 1001 } }) do
        local m, n, k = table.unpack(mnk)
        local a, b = randn(m, k, dtype), randn(k, n, dtype)
        local ab, abs_ab = reference(a, b), reference(a:abs(), b:abs())
        for _, coef in ipairs({ { 1, 1 }, { -1.5, 0.25 }, { 0.5, 2 } }) do
          local alpha, beta = coef[1], coef[2]
          for _, input in ipairs({ randn(m, n, dtype), randn(1, n, dtype):reshape({ n }) }) do
            local c0 = input:double():expand(m, n)
            local want = ab * alpha + c0 * beta
            local bound = abs_ab * math.abs(alpha) + c0:abs() * math.abs(beta)
            for _, nt in ipairs({ 1, threads }) do
              graft.set_num_threads(nt)
              local got = graft.addmm(input, layout(a, "t"), b, { alpha = alpha, beta = beta })
              check(got, want, bound, k, ("alpha %g beta %g, input %s, %d threads"):format(alpha, beta,
                table.concat(input:shape(), "x"), nt))
            end
          end
        end
      end
    end)

    it(dtype .. ": batched products (bmm, baddbmm) run the kernels per batch", function()
      graft.manual_seed(7)
      for _, mnk in ipairs({ { 601, 10, 257 }, { 601, 357, 10 }, { 10, 257, 601 } }) do
        local m, n, k = table.unpack(mnk)
        for _, nb in ipairs({ 2, 3 }) do
          local a, b = graft.randn(nb, m, k, { dtype = dtype }), graft.randn(nb, k, n, { dtype = dtype })
          local c0 = graft.randn(nb, m, n, { dtype = dtype })
          for _, nt in ipairs({ 1, threads }) do
            graft.set_num_threads(nt)
            local got = graft.bmm(a, b:transpose(2, 3):contiguous():transpose(2, 3))
            local added = graft.baddbmm(c0, a, b, { alpha = 2, beta = 0.5 })
            for i = 1, nb do
              local want, bound = reference(a[i], b[i]), reference(a[i]:abs(), b[i]:abs())
              local what = ("batch %d of %d, [%d, %d, %d], %d threads"):format(i, nb, m, n, k, nt)
              check(got[i], want, bound, k, what)
              check(added[i], want * 2 + c0[i]:double() * 0.5, bound * 2 + c0[i]:double():abs() * 0.5, k,
                "baddbmm " .. what)
            end
          end
        end
      end
    end)
  end

  it("gives a Linear(256, 10) head the gradients of the float64 computation", function()
    graft.manual_seed(8)
    local lin = graft.nn.Linear(256, 10)
    local x = graft.randn(512, 256):requires_grad_()
    local r = graft.randn(512, 10)
    local y = lin(x)
    local loss = (y * r):sum()
    loss:backward()
    -- loss = sum(r * (x W^T + b)): dW = r^T x, db = sum(r, 1), dx = r W
    local w = lin.weight:detach()
    local wt = w:t()
    check(y:detach(), reference(x:detach(), wt) + lin.bias:detach():double(),
      reference(x:detach():abs(), wt:abs()) + lin.bias:detach():double():abs(), 256, "forward")
    check(lin.weight.grad, reference(r:t(), x:detach()), reference(r:t():abs(), x:detach():abs()), 512, "weight grad")
    check(x.grad, reference(r, w), reference(r:abs(), w:abs()), 10, "input grad")
    check(lin.bias.grad, r:double():sum(1), r:double():abs():sum(1), 512, "bias grad")
  end)
end)
