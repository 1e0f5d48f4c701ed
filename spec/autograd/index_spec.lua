-- Gradients of indexing and joining against finite differences (float64): t[{...}]
-- (basic and advanced), index_put_, index_select, gather, scatter, scatter_add,
-- index_add, masked_fill, masked_select, take, cat, stack, flip, roll, repeat, tile,
-- tril/triu, diag. Index values are 0-based, as in PyTorch.
local graft = require("graft")
local H = require("spec.helpers")

local F64 = { dtype = "float64", requires_grad = true }
local D64 = { dtype = "float64" }
local function R(...) return graft.randn({ ... }, F64) end
local function RT(a, b) return graft.randn(b, a, D64):t():requires_grad_() end
local function I(t) return graft.tensor(t, { dtype = "int64" }) end

describe("autograd of table indexing", function()
  before_each(function() graft.manual_seed(41) end)

  it("basic entries (a view)", function()
    assert.gradcheck(function(a) return a[{ 2, { 1, 3 } }] end, { R(3, 4) })
    assert.gradcheck(function(a) return a[{ "...", -1 }] end, { RT(3, 4) })
    assert.gradcheck(function(a) return a[{ ":", "none", { 1, -1, 2 } }] end, { R(2, 5) })
  end)

  it("index tensors and masks, repeated indices accumulating", function()
    assert.gradcheck(function(a) return a[{ I({ 0, 2, 0 }) }] end, { R(3, 4) })
    assert.gradcheck(function(a) return a[{ ":", I({ 3, 1, 1 }) }] end, { RT(3, 4) })
    assert.gradcheck(function(a) return a[{ I({ 0, 1 }), I({ 2, 2 }) }] end, { R(3, 4) })
    local mask = graft.tensor({ { true, false, true, false }, { false, false, true, true }, { true, true, false, false } })
    assert.gradcheck(function(a) return a[mask] end, { R(3, 4) })
    local x = R(4)
    x[{ I({ 1, 1, 3 }) }]:sum():backward()
    assert.tensor_near(x.grad, graft.tensor({ 0, 2, 0, 1 }, D64))
  end)

  it("index_put_ and t[i] = v on tensors with history", function()
    assert.gradcheck(function(a, v)
      local y = a * 1
      y[{ ":", 2 }] = v
      return y
    end, { R(3, 4), R(3) })
    assert.gradcheck(function(a, v)
      local y = a * 1
      y[{ I({ 0, 2 }) }] = v
      return y
    end, { R(3, 4), R(4) })
    assert.gradcheck(function(a, v)
      local y = a * 1
      y[2] = v
      return y
    end, { R(3, 2), R(2) })
    assert.gradcheck(function(v)
      local buf = graft.zeros(3, 2, D64)
      buf[{ 2 }] = v
      return buf
    end, { R(2) })
  end)
end)

describe("autograd of gather and scatter", function()
  before_each(function() graft.manual_seed(42) end)

  it("index_select and gather", function()
    assert.gradcheck(function(a) return a:index_select(1, I({ 2, 0, 2 })) end, { R(3, 4) })
    assert.gradcheck(function(a) return a:index_select(2, I({ 1, 1 })) end, { RT(3, 4) })
    assert.gradcheck(function(a) return a:gather(2, I({ { 0, 0 }, { 1, 3 }, { 2, 2 } })) end, { R(3, 4) })
  end)

  it("scatter (src and value), scatter_add and index_add", function()
    local idx = I({ { 0, 1 }, { 2, 0 } })
    assert.gradcheck(function(a, s) return a:scatter(2, idx, s) end, { R(2, 4), R(2, 2) })
    assert.gradcheck(function(a, s) return a:scatter(2, idx, s) end, { R(2, 4), R(2, 3) })
    assert.gradcheck(function(a) return a:scatter(2, idx, 0.5) end, { R(2, 4) })
    assert.gradcheck(function(a, s) return a:scatter_add(1, I({ { 0, 1, 0 } }), s) end, { R(2, 3), R(1, 3) })
    assert.gradcheck(function(a, s) return a:index_add(1, I({ 2, 0, 2 }), s) end, { R(3, 2), R(3, 2) })
    assert.gradcheck(function(a, s) return a:index_add(2, I({ 1 }), s, { alpha = 2 }) end, { R(3, 2), R(3, 1) })
  end)

  it("in-place scatter_ on a tensor with history", function()
    assert.gradcheck(function(a, s)
      local y = a * 2
      y:scatter_(2, I({ { 1 }, { 0 } }), s)
      return y
    end, { R(2, 3), R(2, 1) })
  end)
end)

describe("autograd of masks and take", function()
  before_each(function() graft.manual_seed(43) end)

  it("masked_fill (broadcast mask), masked_select and take", function()
    local mask = graft.tensor({ true, false, false, true })
    assert.gradcheck(function(a) return a:masked_fill(mask, 0.5) end, { R(3, 4) })
    assert.gradcheck(function(a) return a:masked_select(mask) end, { R(3, 4) })
    assert.gradcheck(function(a) return a:masked_select(graft.tensor({ { true }, { false } })) end, { R(2, 3) })
    assert.gradcheck(function(a) return a:take(I({ { 0, 5 }, { -1, 5 } })) end, { RT(2, 3) })
    assert.gradcheck(function(a)
      local y = a + 0
      y:masked_fill_(mask, -1)
      return y
    end, { R(2, 4) })
  end)
end)

describe("autograd of joining", function()
  before_each(function() graft.manual_seed(44) end)

  it("cat and stack, with mixed dtypes and skipped empty tensors", function()
    assert.gradcheck(function(a, b) return graft.cat({ a, b }, 2) end, { R(2, 3), RT(2, 2) })
    assert.gradcheck(function(a, b) return graft.cat({ a, graft.zeros(1, 3, D64), b }) end, { R(2, 3), R(1, 3) })
    assert.gradcheck(function(a, b) return graft.cat({ a, graft.tensor({}, D64), b }) end, { R(2, 3), R(1, 3) })
    assert.gradcheck(function(a, b) return graft.stack({ a, b }, -1) end, { R(2, 3), R(2, 3) })
    local f = graft.randn({ 2 }, { requires_grad = true })
    local d = R(2)
    graft.cat({ f, d }):sum():backward()
    assert.are.equal("float32", f.grad:dtype())
    assert.tensor_near(f.grad, graft.ones(2))
  end)

  it("flip, roll, repeat and tile", function()
    assert.gradcheck(function(a) return a:flip(1, 2) end, { R(2, 3) })
    assert.gradcheck(function(a) return a:roll(1, 2) end, { R(2, 3) })
    assert.gradcheck(function(a) return a:roll({ 1, -1 }, { 1, 2 }) end, { RT(2, 3) })
    assert.gradcheck(function(a) return a:roll(2) end, { R(2, 3) })
    assert.gradcheck(function(a) return a:repeats(2, 1, 3) end, { R(2, 3) })
    assert.gradcheck(function(a) return a:tile(2) end, { R(2, 3) })
  end)

  it("tril, triu (and in place) and diag", function()
    assert.gradcheck(function(a) return a:tril() end, { R(3, 4) })
    assert.gradcheck(function(a) return a:triu(1) end, { RT(3, 3) })
    assert.gradcheck(function(a) local y = a * 1; y:tril_(-1); return y end, { R(3, 3) })
    assert.gradcheck(function(a) return a:diag() end, { R(3) })
    assert.gradcheck(function(a) return a:diag(1) end, { R(3, 4) })
  end)

  it("leaks nothing", function()
    H.no_leak(function()
      local a = R(3, 4)
      local y = graft.cat({ a[{ I({ 0, 2 }) }], a:gather(2, I({ { 0 }, { 1 }, { 2 } })):expand(3, 4) })
      y:roll(1):sum():backward()
    end)
  end)
end)
