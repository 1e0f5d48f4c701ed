-- Gradients of the elementwise ops against finite differences (float64), with
-- broadcasting, scalars, non-contiguous inputs and each option.
local graft = require("graft")
local H = require("spec.helpers")

local F64 = { dtype = "float64", requires_grad = true }
local function R(...) return graft.randn({ ... }, F64) end
-- positive values, away from 0
local function P(...) return (graft.rand({ ... }, { dtype = "float64" }) + 0.5):requires_grad_() end
-- a transposed leaf (non-contiguous)
local function RT(a, b) return graft.randn(b, a, { dtype = "float64" }):t():requires_grad_() end
-- a narrowed leaf (offset and strides of a bigger storage)
local function RN(a, b) return graft.randn(a, b + 3, { dtype = "float64" }):narrow(2, 2, b):requires_grad_() end

describe("autograd of binary ops", function()
  before_each(function() graft.manual_seed(1) end)

  it("add and sub, with alpha, broadcasting and scalars", function()
    assert.gradcheck(function(a, b) return a + b end, { R(3, 4), R(4) })
    assert.gradcheck(function(a, b) return a - b end, { R(2, 1, 3), R(4, 1) })
    assert.gradcheck(function(a, b) return graft.add(a, b, { alpha = 2.5 }) end, { R(3, 4), R(3, 1) })
    assert.gradcheck(function(a, b) return graft.sub(a, b, { alpha = -0.5 }) end, { RT(3, 4), R(4) })
    assert.gradcheck(function(a) return 3 - a + 1.5 end, { RN(2, 3) })
  end)

  it("mul and div, with broadcasting, scalars and strided inputs", function()
    assert.gradcheck(function(a, b) return a * b end, { R(3, 4), RT(3, 4) })
    assert.gradcheck(function(a, b) return a * b end, { R(2, 3, 1), R(4) })
    assert.gradcheck(function(a) return a * 2.5 end, { RN(3, 2) })
    assert.gradcheck(function(a, b) return a / b end, { R(3, 4), P(4) })
    assert.gradcheck(function(a, b) return a / b end, { RT(3, 4), P(3, 1) })
    assert.gradcheck(function(a) return 2 / a end, { P(3) })
    assert.gradcheck(function(a) return a / 4 end, { R(3) })
  end)

  it("pow with tensor and scalar exponents and bases", function()
    assert.gradcheck(function(a) return a ^ 3 end, { R(3, 2) })
    assert.gradcheck(function(a) return a:pow(2.5) end, { P(4) })
    assert.gradcheck(function(a) return a:pow(-1.5) end, { P(4) })
    assert.gradcheck(function(a, b) return a:pow(b) end, { P(3, 4), R(4) })
    assert.gradcheck(function(b) return graft.pow(2.0, b) end, { R(5) })
  end)

  it("pow's gradients at zero follow PyTorch", function()
    local x = graft.tensor({ 0.0, 1.0 }, F64)
    x:pow(0):sum():backward()
    assert.tensor_near(x.grad, graft.tensor({ 0.0, 0.0 }, { dtype = "float64" }))
    local b = graft.tensor({ 0.0, 2.0 }, { dtype = "float64" })
    local e = graft.tensor({ 1.0, 2.0 }, F64)
    b:pow(e):sum():backward()
    assert.tensor_near(e.grad, graft.tensor({ 0.0, 4 * math.log(2) }, { dtype = "float64" }))
  end)

  it("maximum and minimum split ties evenly", function()
    assert.gradcheck(function(a, b) return graft.maximum(a, b) end, { R(3, 4), R(4) })
    assert.gradcheck(function(a, b) return graft.minimum(a, b) end, { RT(3, 4), R(3, 4) })
    local a = graft.tensor({ 1.0, 2.0, 3.0 }, F64)
    local b = graft.tensor({ 1.0, 5.0, 0.0 }, F64)
    graft.maximum(a, b):sum():backward()
    assert.tensor_near(a.grad, graft.tensor({ 0.5, 0, 1 }, { dtype = "float64" }))
    assert.tensor_near(b.grad, graft.tensor({ 0.5, 1, 0 }, { dtype = "float64" }))
    local c = graft.tensor({ 2.0, 2.0 }, F64)
    c:max(graft.tensor({ 2.0, 1.0 }, { dtype = "float64" })):sum():backward()
    assert.tensor_near(c.grad, graft.tensor({ 0.5, 1 }, { dtype = "float64" }))
  end)

  it("remainder and fmod", function()
    local b = (graft.rand({ 4 }, { dtype = "float64" }) + 1.2):requires_grad_()
    assert.gradcheck(function(x, y) return x % y end, { R(3, 4), b })
    assert.gradcheck(function(x, y) return graft.fmod(x, y) end, { R(3, 4), b })
  end)

  it("rounding divisions give zero gradients", function()
    local a, b = R(3), P(3)
    graft.div(a, b, { rounding_mode = "floor" }):sum():backward()
    assert.tensor_near(a.grad, graft.zeros(3, { dtype = "float64" }))
    assert.tensor_near(b.grad, graft.zeros(3, { dtype = "float64" }))
  end)

  it("comparisons do not record", function()
    local a = R(3)
    local c = a:gt(0)
    assert.is_false(c.requires_grad)
    assert.is_nil(c.grad_fn)
  end)
end)

describe("autograd of unary ops", function()
  before_each(function() graft.manual_seed(2) end)

  local any = { "neg", "abs", "exp", "sin", "cos", "tanh", "sigmoid", "square", "expm1", "relu" }
  for _, name in ipairs(any) do
    it(name .. " on contiguous and strided inputs", function()
      assert.gradcheck(function(a) return a[name](a) end, { R(3, 4) })
      assert.gradcheck(function(a) return a[name](a) end, { RT(3, 2) })
    end)
  end

  local positive = { "log", "log1p", "sqrt", "rsqrt", "reciprocal", "log2", "log10" }
  for _, name in ipairs(positive) do
    it(name .. " on positive inputs", function()
      assert.gradcheck(function(a) return a[name](a) end, { P(3, 4) })
      assert.gradcheck(function(a) return graft[name](a:t()) end, { P(2, 3) })
    end)
  end

  it("sign, floor, ceil, round and trunc give zero gradients", function()
    for _, name in ipairs({ "sign", "floor", "ceil", "round", "trunc" }) do
      local x = R(4)
      local y = x[name](x)
      assert.is_truthy(y.grad_fn)
      y:sum():backward()
      assert.tensor_near(x.grad, graft.zeros(4, { dtype = "float64" }))
    end
  end)

  it("relu passes nothing at 0, abs has gradient 0 at 0", function()
    local x = graft.tensor({ -1.0, 0.0, 2.0 }, F64)
    x:relu():sum():backward()
    assert.tensor_near(x.grad, graft.tensor({ 0, 0, 1 }, { dtype = "float64" }))
    local y = graft.tensor({ -1.0, 0.0, 2.0 }, F64)
    y:abs():sum():backward()
    assert.tensor_near(y.grad, graft.tensor({ -1, 0, 1 }, { dtype = "float64" }))
  end)
end)

describe("autograd of clamp and where", function()
  before_each(function() graft.manual_seed(3) end)

  it("clamp with scalar bounds passes the gradient inside, ends included", function()
    assert.gradcheck(function(a) return a:clamp(-0.5, 0.5) end, { R(3, 4) })
    assert.gradcheck(function(a) return a:clamp_min(0.1) end, { RT(3, 4) })
    assert.gradcheck(function(a) return a:clamp_max(0.1) end, { R(5) })
    assert.gradcheck(function(a) return a:clamp({ min = -0.2 }) end, { R(5) })
    local x = graft.tensor({ -1.0, 0.0, 0.5, 1.0, 2.0 }, F64)
    x:clamp(0, 1):sum():backward()
    assert.tensor_near(x.grad, graft.tensor({ 0, 1, 1, 1, 0 }, { dtype = "float64" }))
  end)

  it("clamp with tensor bounds gives the bounds their gradients", function()
    local lo, hi = R(4) * 0.3 - 0.5, R(3, 1) * 0.3 + 0.5
    lo, hi = lo:detach():requires_grad_(), hi:detach():requires_grad_()
    assert.gradcheck(function(a, l, h) return a:clamp(l, h) end, { R(3, 4), lo, hi })
    assert.gradcheck(function(a, l) return a:clamp_min(l) end, { R(3, 4), lo })
  end)

  it("where routes the gradient by the condition, with broadcasting", function()
    local cond = graft.tensor({ true, false, true, false })
    assert.gradcheck(function(a, b) return graft.where(cond, a, b) end, { R(3, 4), R(3, 1) })
    assert.gradcheck(function(a) return graft.where(cond, a, 0.5) end, { RT(2, 4) })
    assert.gradcheck(function(a, b) return a:where(cond, b) end, { R(4), R(1) })
  end)
end)

describe("autograd of in-place elementwise ops", function()
  before_each(function() graft.manual_seed(4) end)

  it("records in-place ops on non-leaves", function()
    assert.gradcheck(function(a, b) local y = a * 1; y:mul_(b); return y end, { R(3, 4), R(4) })
    assert.gradcheck(function(a, b) local y = a:sin(); y:add_(b, { alpha = 2 }); return y end, { R(3, 4), R(3, 4) })
    assert.gradcheck(function(a) local y = a + 0; y:sigmoid_(); return y end, { R(5) })
    assert.gradcheck(function(a) local y = a + 0; y:sin_(); return y end, { R(5) })
    assert.gradcheck(function(a) local y = a + 0; y:clamp_(-0.3, 0.3); return y end, { R(5) })
    assert.gradcheck(function(a, b) local y = a / 1; y:div_(b); return y end, { R(2, 3), P(3) })
    assert.gradcheck(function(a) local y = a * 1; y:pow_(2); return y end, { R(4) })
  end)

  it("in-place ops give their grad_fn to the tensor", function()
    local y = R(3) * 2
    y:exp_()
    assert.are.equal("ExpBackward0", tostring(y.grad_fn))
  end)

  it("a tensor without history gets one when an input requires grad", function()
    local buf = graft.zeros(3, { dtype = "float64" })
    local w = R(3)
    buf:add_(w)
    assert.is_true(buf.requires_grad)
    buf:sum():backward()
    assert.tensor_near(w.grad, graft.ones(3, { dtype = "float64" }))
  end)
end)

describe("autograd dtypes", function()
  it("gives each input a gradient of its own dtype", function()
    local a = graft.randn({ 3 }, { requires_grad = true })
    local b = graft.randn({ 3 }, { dtype = "float64", requires_grad = true })
    local y = a * b
    assert.are.equal("float64", y:dtype())
    y:sum():backward()
    assert.are.equal("float32", a.grad:dtype())
    assert.are.equal("float64", b.grad:dtype())
    assert.tensor_near(a.grad, b:detach():float(), { rtol = 1e-6 })
  end)

  it("works in float32 and half", function()
    local x = graft.tensor({ 1.0, 2.0 }, { requires_grad = true })
    local y = x * x
    y:sum():backward()
    assert.tensor_near(x.grad, graft.tensor({ 2.0, 4.0 }))
    local h = graft.tensor({ 1.0, 2.0 }, { dtype = "float16", requires_grad = true })
    h:exp():sum():backward()
    assert.are.equal("float16", h.grad:dtype())
    assert.tensor_near(h.grad:float(), graft.tensor({ math.exp(1), math.exp(2) }), { rtol = 2e-3 })
  end)
end)

describe("autograd leaks", function()
  it("frees graphs and gradients", function()
    H.no_leak(function()
      local a, b = R(3, 4), R(4)
      local y = ((a * b):exp() + a:sin()):clamp(-1, 2)
      y:sum():backward()
      y = nil
    end)
    H.no_leak(function()
      local a = R(3)
      pcall(function() return (a / graft.tensor({ 1, 2 })):sum() end)
    end)
  end)
end)
