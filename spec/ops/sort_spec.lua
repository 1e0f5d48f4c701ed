-- sort, argsort and topk against PyTorch 1.13 (spec/fixtures/sort/gen.py): float32,
-- float64, ints, bool, half, ties (in the stable order), NaN (the largest value),
-- infinities and signed zeros, non-contiguous views, empty and 0-dim tensors, both
-- topk paths (selection for a small k, a full sort beyond), gradients and errors.
local graft = require("graft")
local H = require("spec.helpers")
local show = H.show
local apply_view = require("spec.helpers.views")

local fx = H.fixture("sort/sort")
local EXACT = { rtol = 0, atol = 0 }

local function run_case(c)
  local x = apply_view(H.T(fx.inputs[c.x]), c.view)
  if c.op == "topk" then return x:topk(c.k, c.dim, c.opts) end
  if c.op == "argsort" then return nil, x:argsort(c.dim, c.opts) end
  return x:sort(c.dim, c.opts)
end

describe("sort, argsort and topk match PyTorch", function()
  for n, c in ipairs(fx.cases) do
    local label = ("%d: %s of %s%s dim=%s k=%s opts=%s"):format(n, c.op, c.x, c.view and (" " .. show(c.view)) or "",
      tostring(c.dim), tostring(c.k), show(c.opts))
    it(label, function()
      local v, i = run_case(c)
      if c.op ~= "argsort" then assert.tensor_near(v, c.values, EXACT) end
      assert.tensor_near(i, c.idx, EXACT)
      assert.are.equal("int64", i:dtype())
    end)
  end
end)

describe("sort", function()
  it("defaults to the last dim, ascending; descending is the second argument", function()
    local x = graft.tensor({ { 3, 1, 2 }, { 0, 5, 4 } })
    local v, i = x:sort()
    assert.tensor_near(v, graft.tensor({ { 1, 2, 3 }, { 0, 4, 5 } }), EXACT)
    assert.tensor_near(i, graft.tensor({ { 1, 2, 0 }, { 0, 2, 1 } }), EXACT)
    v, i = graft.sort(x, 1, true)
    assert.tensor_near(v, graft.tensor({ { 3, 5, 4 }, { 0, 1, 2 } }), EXACT)
    assert.tensor_near(i, graft.tensor({ { 0, 1, 1 }, { 1, 0, 0 } }), EXACT)
    v = x:sort({ dim = 1, descending = true })
    assert.tensor_near(v, graft.tensor({ { 3, 5, 4 }, { 0, 1, 2 } }), EXACT)
    assert.tensor_near(graft.argsort(x, -1, true), graft.tensor({ { 0, 2, 1 }, { 1, 2, 0 } }), EXACT)
  end)

  it("gathers back to its values and leaves the input untouched", function()
    graft.manual_seed(3)
    local x = graft.randn(6, 40)
    local before = x:clone()
    local v, i = x:sort(2, true)
    assert.tensor_near(x:gather(2, i), v, EXACT)
    assert.tensor_near(x, before, EXACT)
    assert.is_true(v:is_contiguous() and i:is_contiguous())
  end)

  it("sorts many rows on several threads like on one", function()
    graft.manual_seed(5)
    local x = graft.randn(257, 300)
    local v, i = x:sort(2)
    local threads = graft.get_num_threads()
    graft.set_num_threads(1)
    local v1, i1 = x:sort(2)
    graft.set_num_threads(threads)
    assert.tensor_near(v, v1, EXACT)
    assert.tensor_near(i, i1, EXACT)
    -- rows ascend
    local d = v:narrow(2, 2, 299) - v:narrow(2, 1, 299)
    assert.is_true(d:ge(0):all():item())
  end)

  it("raises on a bad dim or argument", function()
    local x = graft.randn(2, 3)
    H.raises("sort: dim 3 is out of range", x.sort, x, 3)
    H.raises("argsort: dim -3 is out of range", x.argsort, x, -3)
    H.raises("sort: expected (dim, descending)", x.sort, x, 1, true, true)
  end)
end)

describe("topk", function()
  it("gives the top-5 classes of logits, best first", function()
    local logits = graft.tensor({ { 0.1, 2.0, -1.0, 3.5, 0.0, 1.5, 2.5 }, { 9, 8, 7, 6, 5, 4, 3 } })
    local v, i = logits:topk(5)
    assert.tensor_near(i, graft.tensor({ { 3, 6, 1, 5, 0 }, { 0, 1, 2, 3, 4 } }), EXACT)
    assert.tensor_near(v, graft.tensor({ { 3.5, 2.5, 2.0, 1.5, 0.1 }, { 9, 8, 7, 6, 5 } }), EXACT)
    -- top-5 accuracy
    local target = graft.tensor({ 2, 2 })
    local hit = i:eq(target:unsqueeze(2)):any(2)
    assert.are.same({ false, true }, hit:tolist())
  end)

  it("takes largest and sorted positionally and as options", function()
    local x = graft.tensor({ 4.0, 1.0, 3.0, 2.0 })
    local v, i = x:topk(2, 1, false, true)
    assert.tensor_near(v, graft.tensor({ 1.0, 2.0 }), EXACT)
    assert.tensor_near(i, graft.tensor({ 1, 3 }), EXACT)
    v, i = graft.topk(x, 2, { largest = false, sorted = false })
    assert.tensor_near(v, graft.tensor({ 1.0, 2.0 }), EXACT)
    v = x:topk(3, { dim = 1 })
    assert.tensor_near(v, graft.tensor({ 4.0, 3.0, 2.0 }), EXACT)
  end)

  it("raises for a k out of range, a bad dim and bool tensors", function()
    local x = graft.randn(3, 5)
    H.raises("topk: k (7) is larger than the size of dim 2 (5)", x.topk, x, 7)
    H.raises("topk: k (4) is larger than the size of dim 1 (3)", x.topk, x, 4, 1)
    H.raises("topk: k (-1) must not be negative", x.topk, x, -1)
    H.raises("topk: k must be an integer", x.topk, x, 1.5)
    H.raises("topk: dim 3 is out of range", x.topk, x, 1, 3)
    local b = graft.tensor({ true, false })
    H.raises("topk: not implemented for bool tensors", b.topk, b, 1)
  end)
end)

describe("autograd of sort and topk", function()
  local F64 = { dtype = "float64" }
  before_each(function() graft.manual_seed(17) end)

  it("scatters the gradient of the values back to the input positions", function()
    local x = graft.randn({ 3, 6 }, { dtype = "float64", requires_grad = true })
    assert.gradcheck(function(a) return (a:sort(2)) end, { x })
    assert.gradcheck(function(a) return (a:sort(1, true)) end, { x })
    assert.gradcheck(function(a) return (a:topk(2)) end, { x })
    assert.gradcheck(function(a) return (a:topk(2, 1, false)) end, { x })
    assert.gradcheck(function(a) return (a:topk(4, -1, true, false)) end, { x })
  end)

  it("on non-contiguous inputs and 3-d tensors", function()
    local xt = graft.randn(5, 4, F64):t():requires_grad_()
    assert.gradcheck(function(a) return (a:sort(1, true)) end, { xt })
    assert.gradcheck(function(a) return (a:topk(40, 2)) end, { graft.randn({ 2, 40 }, F64):requires_grad_() })
    local x3 = graft.randn({ 2, 3, 4 }, F64):requires_grad_()
    assert.gradcheck(function(a) return (a:sort(2)) end, { x3 })
    assert.gradcheck(function(a) return (a:topk(2, 3)) end, { x3 })
  end)

  it("names its nodes as PyTorch and leaves the indices without history", function()
    local x = graft.randn({ 2, 3 }, { requires_grad = true })
    local v, i = x:sort()
    assert.are.equal("SortBackward0", v.grad_fn:name())
    assert.is_false(i.requires_grad)
    v, i = x:topk(1)
    assert.are.equal("TopkBackward0", v.grad_fn:name())
    assert.is_false(i.requires_grad)
    -- a gradient lands at the max of each row only
    v:sum():backward()
    local expect = graft.zeros(2, 3)
    expect:scatter_(2, i, graft.ones(2, 1))
    assert.tensor_near(x.grad, expect, EXACT)
  end)
end)
