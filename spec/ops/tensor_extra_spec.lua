-- median, unique, inference_mode and t.data: median and unique against PyTorch 1.13
-- (spec/fixtures/einsum/gen.py writes spec/fixtures/einsum/extra.lua), the rest
-- against closed forms.
local graft = require("graft")
local H = require("spec.helpers")
local show = H.show

local fx = H.fixture("einsum/extra")
local EXACT = { rtol = 0, atol = 0 }

describe("median matches PyTorch", function()
  for n, c in ipairs(fx.median) do
    it(("%d: %s dim=%s keepdim=%s"):format(n, c.x, tostring(c.dim), tostring(c.keepdim)), function()
      local x = H.T(fx.median_inputs[c.x])
      if c.dim == nil then
        assert.tensor_near(x:median(), c.values, EXACT)
        assert.tensor_near(graft.median(x), c.values, EXACT)
        return
      end
      local v, i = x:median(c.dim, c.keepdim)
      assert.tensor_near(v, c.values, EXACT)
      assert.are.equal("int64", i:dtype())
      if c.idx then
        assert.tensor_near(i, c.idx, EXACT)
      else
        -- ties: any index of an equal value will do; it must point at the median
        local d = c.dim < 0 and c.dim + x:dim() + 1 or c.dim
        local ii = c.keepdim and i or i:unsqueeze(d)
        local vv = c.keepdim and v or v:unsqueeze(d)
        assert.tensor_near(x:gather(d, ii), vv, EXACT)
      end
      local v2 = graft.median(x, { dim = c.dim, keepdim = c.keepdim })
      assert.tensor_near(v2, c.values, EXACT)
    end)
  end
end)

describe("median", function()
  it("is the lower median of an even count, NaN when any element is NaN", function()
    assert.are.equal(2, graft.tensor({ 4, 1, 3, 2 }):median():item())
    assert.are.equal(2.0, graft.tensor({ 4.0, 1, 3, 2 }):median():item())
    local m = graft.tensor({ 1.0, 0 / 0, 3 }):median():item()
    assert.is_true(m ~= m)
    assert.is_true(graft.zeros(0):median():isnan():item())
  end)

  it("sends the gradient to the median element only", function()
    local x = graft.tensor({ { 3.0, 1, 2 }, { 0, 5, 4 } }, { dtype = "float64", requires_grad = true })
    local v = x:median(2)
    v:sum():backward()
    assert.tensor_near(x.grad, graft.tensor({ { 0.0, 0, 1 }, { 0, 0, 1 } }, { dtype = "float64" }), EXACT)
    x.grad = nil
    x:median():backward()
    assert.tensor_near(x.grad, graft.tensor({ { 0.0, 0, 1 }, { 0, 0, 0 } }, { dtype = "float64" }), EXACT)
    assert.gradcheck(function(a) return (a:median(1)) end,
      { graft.tensor({ { 0.3, 1.7 }, { -2.0, 0.9 }, { 1.1, -0.4 } }, { dtype = "float64", requires_grad = true }) })
  end)

  it("raises for a bad dim or an empty reduction", function()
    H.raises("median: dim 3 is out of range for a tensor with 2 dims", function() return graft.zeros(2, 2):median(3) end)
    H.raises("median: expected reduction dim 2 to have non-zero size", function() return graft.zeros(2, 0):median(2) end)
  end)
end)

describe("unique matches PyTorch", function()
  for n, c in ipairs(fx.unique) do
    it(("%d: %s"):format(n, c.x), function()
      local x = H.T(fx.unique_inputs[c.x])
      assert.tensor_near(graft.unique(x), c.values, EXACT)
      local v, inv, cnt = x:unique({ return_inverse = true, return_counts = true })
      assert.tensor_near(v, c.values, EXACT)
      if c.inverse then
        assert.tensor_near(inv, c.inverse, EXACT)
        assert.tensor_near(cnt, c.counts, EXACT)
      else
        -- NaN: each NaN its own value; inverse and counts consistent with values
        assert.tensor_near(v:index_select(1, inv:reshape({ -1 })):reshape(x:shape()), x, EXACT)
        assert.are.equal(x:numel(), cnt:sum():item())
        assert.tensor_near(cnt, graft.tensor({ 2, 1, 1, 1 }), EXACT) -- the one NaN case: {1, nan, 2, 1, nan}
      end
    end)
  end
end)

describe("unique", function()
  it("returns values, then inverse and counts only when asked", function()
    local x = graft.tensor({ 3, 1, 3 })
    local v, c, extra = graft.unique(x, { return_counts = true })
    assert.tensor_near(v, graft.tensor({ 1, 3 }), EXACT)
    assert.tensor_near(c, graft.tensor({ 1, 2 }), EXACT)
    assert.is_nil(extra)
    local v2, inv = x:unique(true, true)
    assert.tensor_near(v2, graft.tensor({ 1, 3 }), EXACT)
    assert.tensor_near(inv, graft.tensor({ 1, 0, 1 }), EXACT)
    assert.is_false(graft.unique(graft.randn(3, { requires_grad = true })).requires_grad)
  end)

  it("raises for dim", function()
    H.raises("unique: dim is not supported", graft.unique, graft.zeros(2, 2), { dim = 1 })
  end)
end)

describe("inference_mode", function()
  it("runs fn with grad off, returns its results and restores the mode", function()
    local w = graft.randn(3, { requires_grad = true })
    local y, k = graft.inference_mode(function(a, b) return (w * a):sum(), b end, 2, "k")
    assert.is_false(y.requires_grad)
    assert.are.equal("k", k)
    assert.is_true(graft.is_grad_enabled())
    local ok, err = pcall(graft.inference_mode, function() error("boom") end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("boom", 1, true))
    assert.is_true(graft.is_grad_enabled())
    -- nested inside no_grad it stays off and restores off
    graft.no_grad(function()
      graft.inference_mode(function() assert.is_false(graft.is_grad_enabled()) end)
      assert.is_false(graft.is_grad_enabled())
    end)
    H.raises("inference_mode: expected a function, got a number", graft.inference_mode, 3)
  end)
end)

describe("t.data", function()
  it("reads as a detached tensor sharing storage", function()
    local p = graft.randn(2, 3, { requires_grad = true })
    local d = p.data
    assert.is_false(d.requires_grad)
    assert.is_true(d.is_leaf)
    assert.are.equal(p:data_ptr(), d:data_ptr())
    d:fill_(7)
    assert.tensor_near(p:detach(), graft.full({ 2, 3 }, 7.0), EXACT)
  end)

  it("assigns by copying in place, without recording grad", function()
    local p = graft.zeros(2, 2, { requires_grad = true })
    local ptr = p:data_ptr()
    p.data = graft.tensor({ { 1.0, 2 }, { 3, 4 } })
    assert.tensor_near(p:detach(), graft.tensor({ { 1.0, 2 }, { 3, 4 } }), EXACT)
    assert.are.equal(ptr, p:data_ptr())
    assert.is_true(p.requires_grad)
    assert.is_true(p.is_leaf)
    assert.is_nil(p.grad_fn)
    local g = graft.randn(2, 2, { requires_grad = true })
    p.data = g * 2 -- a tensor with history: only its values are taken
    assert.is_nil(p.grad_fn)
    assert.tensor_near(p:detach(), (g * 2):detach(), EXACT)
  end)

  it("refuses another shape, dtype or device, naming the workaround", function()
    local p = graft.zeros(2)
    H.raises("data: assigning a tensor of shape [3] to a tensor of shape [2] is not supported; use p:copy_(x) or "
      .. "replace the parameter", function() p.data = graft.zeros(3) end)
    H.raises("data: assigning a float64 tensor to a float32 tensor is not supported", function()
      p.data = graft.zeros(2, { dtype = "float64" })
    end)
    H.raises("data: expected a tensor, got a number", function() p.data = 3 end)
  end)
end)
