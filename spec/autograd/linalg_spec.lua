-- Gradients of the matrix products against finite differences (float64): matmul in all
-- its shapes (1-D operands, batched and broadcast), mm, bmm, mv, dot, outer, addmm,
-- baddbmm; transposed operands; frozen operands cost no gradient product.
local graft = require("graft")
local H = require("spec.helpers")

local F64 = { dtype = "float64", requires_grad = true }
local function R(...) return graft.randn({ ... }, F64) end
local function RT(a, b) return graft.randn(b, a, { dtype = "float64" }):t():requires_grad_() end

describe("autograd of matmul", function()
  before_each(function() graft.manual_seed(21) end)

  local shapes = {
    { { 3 }, { 3 } },            -- dot
    { { 2, 3 }, { 3 } },         -- matrix-vector
    { { 3 }, { 3, 4 } },         -- vector-matrix
    { { 2, 3 }, { 3, 4 } },      -- matrix-matrix
    { { 2, 2, 3 }, { 3, 4 } },   -- batched x matrix
    { { 2, 3 }, { 2, 3, 4 } },   -- matrix x batched
    { { 3 }, { 2, 3, 4 } },      -- vector x batched
    { { 2, 2, 3 }, { 3 } },      -- batched x vector
    { { 2, 1, 2, 3 }, { 3, 3, 2 } }, -- broadcast batch dims
  }
  for _, s in ipairs(shapes) do
    local a, b = s[1], s[2]
    it(("[%s] x [%s]"):format(table.concat(a, ", "), table.concat(b, ", ")), function()
      assert.gradcheck(function(x, y) return x:matmul(y) end, { R(table.unpack(a)), R(table.unpack(b)) })
    end)
  end

  it("takes transposed operands", function()
    assert.gradcheck(function(x, y) return graft.matmul(x, y) end, { RT(2, 3), RT(3, 4) })
    assert.gradcheck(function(x, y) return x:matmul(y:transpose(-1, -2)) end, { R(2, 2, 3), R(4, 3) })
  end)

  it("names its nodes as PyTorch", function()
    assert.are.equal("MmBackward0", tostring(R(2, 3):matmul(R(3, 4)).grad_fn))
    assert.are.equal("DotBackward0", tostring(R(3):matmul(R(3)).grad_fn))
    assert.are.equal("MvBackward0", tostring(R(2, 3):matmul(R(3)).grad_fn))
  end)
end)

describe("autograd of mm, bmm, mv, dot, outer, addmm, baddbmm", function()
  before_each(function() graft.manual_seed(22) end)

  it("mm, bmm, mv, dot, outer", function()
    assert.gradcheck(function(x, y) return x:mm(y) end, { R(2, 3), RT(3, 4) })
    assert.gradcheck(function(x, y) return x:bmm(y) end, { R(2, 2, 3), R(2, 3, 4) })
    assert.gradcheck(function(x, y) return x:mv(y) end, { RT(2, 3), R(3) })
    assert.gradcheck(function(x, y) return x:dot(y) end, { R(4), R(4) })
    assert.gradcheck(function(x, y) return graft.outer(x, y) end, { R(3), R(4) })
  end)

  it("addmm and baddbmm with beta and alpha", function()
    assert.gradcheck(function(i, x, y) return i:addmm(x, y) end, { R(2, 4), R(2, 3), R(3, 4) })
    assert.gradcheck(function(i, x, y) return i:addmm(x, y, { beta = 0.5, alpha = -2 }) end, { R(4), RT(2, 3), R(3, 4) })
    assert.gradcheck(function(i, x, y) return i:baddbmm(x, y, { beta = 2, alpha = 0.5 }) end,
      { R(2, 1, 4), R(2, 2, 3), R(2, 3, 4) })
  end)
end)

describe("frozen operands", function()
  it("get no gradient, and no gradient product is computed for them", function()
    local x = graft.randn({ 4, 3 }, { requires_grad = true })
    local w = graft.randn(3, 5)                     -- frozen (never required grad)
    local w2 = graft.randn({ 3, 5 }, { requires_grad = true })
    w2.requires_grad = false                         -- frozen after creation
    graft._autograd_reset_counters()
    x:matmul(w):sum():backward()
    local c = graft._autograd_counters()
    assert.are.equal(2, c.nodes_run)                 -- SumBackward0, MmBackward0
    assert.are.equal(2, c.grads_computed)            -- sum -> mm, mm -> x only
    assert.are.equal(0, c.grads_unused)
    assert.is_nil(w.grad)
    graft._autograd_reset_counters()
    graft.addmm(graft.zeros(5), x, w2):sum():backward()
    c = graft._autograd_counters()
    assert.are.equal(2, c.grads_computed)            -- no bias, no weight gradient
    assert.are.equal(0, c.grads_unused)
    assert.is_nil(w2.grad)
  end)

  it("a frozen input computes nothing when only the other needs a gradient", function()
    local x = graft.randn(4, 3)
    local w = graft.randn({ 3, 5 }, { requires_grad = true })
    graft._autograd_reset_counters()
    x:matmul(w):sum():backward()
    local c = graft._autograd_counters()
    assert.are.equal(2, c.grads_computed)
    assert.are.equal(0, c.grads_unused)
    assert.is_not_nil(w.grad)
  end)

  it("leaks nothing", function()
    H.no_leak(function()
      local a, b = R(2, 2, 3), R(3, 4)
      a:matmul(b):sum():backward()
      R(3):dot(R(3)):backward()
    end)
  end)
end)
