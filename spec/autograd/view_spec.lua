-- Gradients of the views and conversions against finite differences (float64): view,
-- reshape, flatten, squeeze, unsqueeze, transpose, permute, t, expand, narrow, select,
-- slice, diagonal; clone, contiguous, to(dtype), copy_.
local graft = require("graft")
local H = require("spec.helpers")

local F64 = { dtype = "float64", requires_grad = true }
local D64 = { dtype = "float64" }
local function R(...) return graft.randn({ ... }, F64) end
local function RT(a, b) return graft.randn(b, a, D64):t():requires_grad_() end

describe("autograd of views", function()
  before_each(function() graft.manual_seed(31) end)

  it("view, reshape (view or copy) and flatten", function()
    assert.gradcheck(function(a) return a:view(4, 3) end, { R(3, 4) })
    assert.gradcheck(function(a) return a:view(-1) * 2 end, { R(2, 3) })
    assert.gradcheck(function(a) return a:reshape(2, 6) end, { RT(3, 4) }) -- copies
    assert.gradcheck(function(a) return a:flatten() end, { R(2, 3, 2) })
    assert.gradcheck(function(a) return a:flatten(2) end, { R(2, 3, 2) })
    local x = R(2, 3)
    assert.are.equal("ViewBackward0", tostring(x:view(6).grad_fn))
    assert.are.equal("UnsafeViewBackward0", tostring(x:t():reshape(6).grad_fn))
  end)

  it("squeeze and unsqueeze", function()
    assert.gradcheck(function(a) return a:squeeze() end, { R(3, 1, 2, 1) })
    assert.gradcheck(function(a) return a:squeeze(2) end, { R(3, 1, 2) })
    assert.gradcheck(function(a) return a:unsqueeze(1) end, { RT(2, 3) })
    assert.gradcheck(function(a) return a:unsqueeze(-1) end, { R(2, 3) })
  end)

  it("transpose, permute and t", function()
    assert.gradcheck(function(a) return a:transpose(1, 3) end, { R(2, 3, 4) })
    assert.gradcheck(function(a) return a:permute(3, 1, 2) end, { R(2, 3, 4) })
    assert.gradcheck(function(a) return a:t() end, { RT(2, 3) })
    assert.gradcheck(function(a) return a:t() * 3 end, { R(3) })
  end)

  it("expand sums the gradient over expanded dims", function()
    assert.gradcheck(function(a) return a:expand(3, 4) end, { R(3, 1) })
    assert.gradcheck(function(a) return a:expand(2, 3, 4) end, { R(4) })
    assert.gradcheck(function(a) return a:expand_as(graft.zeros(2, 4, 3)) * 2 end, { R(4, 1) })
    -- an expanded operand of an elementwise op
    assert.gradcheck(function(a, b) return a:expand(3, 4) * b end, { R(1, 4), R(3, 4) })
  end)

  it("narrow, select, slice and diagonal", function()
    assert.gradcheck(function(a) return a:narrow(2, 2, 2) end, { R(3, 4) })
    assert.gradcheck(function(a) return a:select(1, -1) end, { RT(3, 4) })
    assert.gradcheck(function(a) return a:slice(2, 1, 4, 2) end, { R(3, 5) })
    assert.gradcheck(function(a) return a:diagonal() end, { R(3, 4) })
    assert.gradcheck(function(a) return a:diagonal(1, 2, 3) end, { R(2, 3, 4) })
    assert.gradcheck(function(a) return a:diagonal(-1) end, { RT(3, 3) })
    assert.gradcheck(function(a) return a[2] end, { R(3, 4) })
    assert.gradcheck(function(a) return a[{ ":", { 2, 3 } }] end, { R(3, 4) })
  end)

  it("split, chunk and unbind pieces", function()
    assert.gradcheck(function(a)
      local p = a:split(2, 2)
      return { p[1] * 2, p[2] * 3 }
    end, { R(3, 4) })
    assert.gradcheck(function(a) return a:chunk(3)[2] end, { R(6, 2) })
    assert.gradcheck(function(a)
      local u = a:unbind(2)
      return u[1] * u[3]
    end, { R(2, 3) })
  end)

  it("records views as views of their base", function()
    local x = R(3, 4)
    local v = x:narrow(1, 1, 2)
    assert.are.equal("SliceBackward0", tostring(v.grad_fn))
    assert.is_true(v:is_set_to(x))
  end)
end)

describe("autograd of conversions", function()
  before_each(function() graft.manual_seed(32) end)

  it("clone and contiguous", function()
    assert.gradcheck(function(a) return a:clone() end, { R(3, 4) })
    assert.gradcheck(function(a) return a:contiguous() end, { RT(3, 4) })
    local x = R(2, 2)
    assert.are.equal("CloneBackward0", tostring(x:clone().grad_fn))
    assert.are.equal("CloneBackward0", tostring(x:t():contiguous().grad_fn))
  end)

  it("to(dtype) converts the gradient back", function()
    local x = graft.randn({ 3 }, { requires_grad = true })
    local y = x:double()
    assert.are.equal("ToCopyBackward0", tostring(y.grad_fn))
    local s = (y * y):sum()
    s:backward()
    assert.are.equal("float32", x.grad:dtype())
    assert.tensor_near(x.grad, x:detach() * 2, { rtol = 1e-6 })
    assert.gradcheck(function(a) return a:to("float32"):double() * 2 end, { R(3) }, { eps = 1e-2, atol = 1e-3 })
    assert.gradcheck(function(a) return a:to({ dtype = "float32" }) end, { R(2) }, { eps = 1e-2, atol = 1e-3 })
    -- integer results do not require grad
    assert.is_false(R(3):long().requires_grad)
  end)

  it("copy_ sends the gradient to the source (summed over broadcast dims)", function()
    assert.gradcheck(function(a)
      local y = graft.zeros(3, 4, D64)
      y:copy_(a)
      return y
    end, { R(4) })
    assert.gradcheck(function(a, b)
      local y = a * 1
      y:narrow(2, 1, 2):copy_(b)
      return y
    end, { R(3, 4), R(3, 2) })
  end)
end)

describe("view leaks", function()
  it("leaks nothing", function()
    H.no_leak(function()
      local x = R(3, 4)
      local y = x:t():reshape(2, 6):narrow(1, 1, 1):expand(4, 6):sum()
      y:backward()
    end)
  end)
end)
