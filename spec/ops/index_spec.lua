-- Indexing: t[{...}] / t:index / t:index_put_, index_select, gather, scatter(_add),
-- index_add, masked_fill, masked_select, take, nonzero. Values against PyTorch 1.13
-- (spec/fixtures/gen_index.py); other dtypes are checked against the float32 result
-- converted (these ops only move elements). Lua positions are 1-based, index values
-- inside index tensors 0-based.
local graft = require("graft")
local H = require("spec.helpers")
local F = H.fixture("index")

local DTYPES = { "float32", "float64", "int64", "bool", "float16" }

local function exact(actual, expected, dtype)
  local e = H.T(expected)
  if dtype then e = e:to(dtype) end
  assert.tensor_near(actual, e, { rtol = 0, atol = 0 })
end
local function I(t) return graft.tensor(t, { dtype = "int64" }) end

-- Lua key for each fixture in F.index; `on` picks the input (x by default).
local KEYS = {
  int_range = function() return { 2, { 2, 3 }, -1 } end,
  step = function() return { ":", ":", { 1, -1, 2 } } end,
  step_from = function() return { {}, { 2, nil, 2 } } end,
  ellipsis = function() return { "...", 2 } end,
  ellipsis_mid = function() return { 1, "...", { 2 } } end,
  newaxis = function() return { "none", 2, ":", graft.newaxis } end,
  neg_range = function() return { ":", { -2 } } end,
  clamped = function() return { ":", { 2, 10 } } end,
  empty_range = function() return { ":", { 3, 1 } } end,
  adv1 = function() return { I({ 1, 0 }) } end,
  adv_neg = function() return { ":", I({ -1, 0, -1 }) } end,
  adv_pair = function() return { I({ 1, 0 }), "...", I({ 0, 3 }) } end,
  adv_split = function() return { I({ 0, 1 }), ":", I({ 1, 2 }) } end,
  adv_int_between = function() return { I({ 0, 1 }), 1, I({ 1, 2 }) } end,
  adv_2d = function() return { I({ { 0, 1 }, { 1, 0 } }) } end,
  adv_bcast = function() return { I({ { 0 }, { 1 } }), ":", I({ 1, 2, 3 }) } end,
  adv_mid = function() return { ":", I({ 2, 0 }), { 2, 3 } } end,
  adv_none = function() return { "none", I({ 1, 0 }) } end,
  mask_full = function() return { H.T(F.index_in.gt0) } end,
  mask_dim = function() return { ":", H.T(F.index_in.m3) } end,
  mask_2d = function() return { 2, H.T(F.m34) } end,
  mask_and_int = function() return { 2, H.T(F.index_in.m3), 3 } end,
  mask_uint8 = function() return { ":", H.T(F.index_in.m3):to("uint8") } end,
  empty_idx = function() return { graft.zeros(0, { dtype = "int64" }) } end,
  noncontig_adv = function() return { I({ 3, 0 }), { 2 } }, "xt" end,
  noncontig_mask = function() return { ":", ":", graft.tensor({ false, true }) }, "xt" end,
  mask_0d = function() return { graft.tensor(true) }, "y" end,
}
local BASIC = { int_range = true, step = true, step_from = true, ellipsis = true, ellipsis_mid = true,
  newaxis = true, neg_range = true, clamped = true, empty_range = true }

describe("t[{...}] indexing", function()
  local inputs
  before_each(function()
    local x = H.T(F.x)
    inputs = { x = x, xt = x:transpose(1, 3), y = H.T(F.y) }
  end)

  it("matches PyTorch for integers, ranges, steps, ellipsis, newaxis, index and mask tensors", function()
    for name, key in pairs(KEYS) do
      local k, on = key()
      local t = inputs[on or "x"]
      local ok, why = H.compare(t[k], F.index[name], { rtol = 0, atol = 0 })
      assert(ok, name .. ": " .. tostring(why))
      ok, why = H.compare(t:index(k), F.index[name], { rtol = 0, atol = 0 })
      assert(ok, name .. " (index method): " .. tostring(why))
    end
  end)

  it("returns views for basic entries and copies for index or mask tensors", function()
    for name, key in pairs(KEYS) do
      local k, on = key()
      local t = inputs[on or "x"]
      assert.are.equal(BASIC[name] == true, t[k]:is_set_to(t), name)
    end
    assert.is_true(inputs.x[{}]:is_set_to(inputs.x))
    assert.is_true(inputs.x[{ "..." }]:is_set_to(inputs.x))
  end)

  it("works for every dtype", function()
    for _, d in ipairs(DTYPES) do
      for name, key in pairs(KEYS) do
        local k, on = key()
        local t = inputs[on or "x"]:to(d)
        local ok, why = H.compare(t[k], H.T(F.index[name]):to(d), { rtol = 0, atol = 0 })
        assert(ok, d .. " " .. name .. ": " .. tostring(why))
      end
    end
  end)

  it("accepts a single index or mask tensor as the key of index()", function()
    local x = inputs.x
    exact(x:index(H.T(F.index_in.gt0)), F.index.mask_full)
    exact(x:index(I({ 1, 0 })), F.index.adv1)
    exact(graft.index(x, { I({ 1, 0 }) }), F.index.adv1)
  end)

  it("index_put_ writes through basic entries, index tensors and masks", function()
    local P, x = F.index_put, inputs.x
    local z = x:clone()
    assert.are.equal(z, z:index_put_({ H.T(F.index_in.gt0) }, 0))
    exact(z, P.mask_scalar)
    z = x:clone():index_put_({ I({ 0, 1 }), ":", I({ 1, 2 }) }, graft.tensor({ { 10.0 }, { 20.0 } }))
    exact(z, P.adv_tensor)
    z = x:clone():index_put_({ ":", H.T(F.index_in.m3) }, graft.tensor({ 1.0, 2.0, 3.0, 4.0 }))
    exact(z, P.mask_dim_tensor)
    z = x:clone():index_put_({ ":", { 2 }, 1 }, graft.tensor({ 7.0, 8.0 }))
    exact(z, P.basic_tensor)
    -- t[{...}] = v assigns through basic views
    z = x:clone()
    z[{ ":", { 2 }, 1 }] = graft.tensor({ 7.0, 8.0 })
    exact(z, P.basic_tensor)
    z = x:clone()
    z[{ 2, { 1, 2 } }] = 9
    exact(z, P.basic_scalar)
    -- into a non-contiguous tensor, and from an int64 value into float16
    local base = graft.zeros(4, 2, { dtype = "float16" })
    base:t():index_put_({ ":", I({ 3, 0 }) }, graft.tensor({ 5, 6 })) -- [2, 2] <- [5, 6] per row
    assert.are.same({ { 6, 6 }, { 0, 0 }, { 0, 0 }, { 5, 5 } }, base:tolist())
  end)

  it("t[{mask}] = v and t[{index}] = v write through index_put_", function()
    local z = H.T(F.x)
    z[{ H.T(F.index_in.gt0) }] = 0
    exact(z, F.index_put.mask_scalar)
    z = H.T(F.x)
    z[H.T(F.index_in.gt0)] = 0 -- a bare mask key, as PyTorch's x[mask] = 0
    exact(z, F.index_put.mask_scalar)
    z = H.T(F.x)
    z[{ I({ 0, 1 }), ":", I({ 1, 2 }) }] = graft.tensor({ { 10.0 }, { 20.0 } })
    exact(z, F.index_put.adv_tensor)
  end)

  it("handles empty tensors", function()
    local e = graft.zeros(0, 3)
    assert.are.same({ 0, 2 }, e[{ ":", { 2 } }]:shape())
    assert.are.same({ 0, 3 }, e[{ graft.zeros(0, { dtype = "bool" }) }]:shape())
    assert.are.same({ 0 }, inputs.x[{ graft.zeros(2, 3, 4, { dtype = "bool" }) }]:shape())
    assert.are.same({}, graft.tensor(5)[{ "..." }]:shape())
  end)

  it("raises errors naming the problem, and leaks nothing", function()
    local x = inputs.x
    H.raises("index: position 4 is out of range for dim 2 of size 3", function() return x[{ 1, 4 }] end)
    H.raises("index: position -3 is out of range for dim 1 of size 2", function() return x[{ -3 }] end)
    H.raises("position 0 in entry 1 is invalid", function() return x[{ 0 }] end)
    H.raises("position 0 in entry 1 is invalid", function() return x[{ { 0, 2 } }] end)
    H.raises("index: too many indices for a tensor with 3 dims (got 4)", function() return x[{ 1, 1, 1, 1 }] end)
    H.raises("too many indices for a tensor with 0 dims", function() return graft.tensor(1)[{ 1 }] end)
    H.raises("single ellipsis", function() return x[{ "...", "..." }] end)
    H.raises("unknown entry \"x\"", function() return x[{ "x" }] end)
    H.raises("entry 1 must be an integer", function() return x[{ 1.5 }] end)
    H.raises("step of entry 1 must be a positive integer", function() return x[{ { 1, 2, 0 } }] end)
    H.raises("must be int64, bool or uint8, got float32", function() return x[{ graft.tensor({ 1.0 }) }] end)
    H.raises("must be int64, bool or uint8, got int32", function() return x[{ graft.tensor({ 1 }, { dtype = "int32" }) }] end)
    H.raises("index: index 2 is out of range for dim 1 of size 2", function() return x[{ I({ 0, 2 }) }] end)
    H.raises("index: index -4 is out of range for dim 2 of size 3", function() return x[{ ":", I({ -4 }) }] end)
    H.raises("index: shapes [2] and [3] cannot broadcast", function() return x[{ I({ 0, 1 }), I({ 0, 1, 2 }) }] end)
    H.raises("index: mask of shape [2] does not match", function() return x[{ ":", graft.tensor({ true, false }) }] end)
    H.raises("entry 2 is a boolean", function() return x[{ 1, true }] end)
    H.raises("index_put_: value of shape [2] cannot be broadcast to the indexed shape [2, 3]",
      function() return x:clone():index_put_({ I({ 0, 1 }), ":", I({ 1, 2 }) }, graft.ones(2)) end)
    H.raises("index_put_: value of shape [5] cannot be broadcast", function() return x:clone():index_put_({ 1 }, graft.ones(5)) end)
    -- a failed put writes nothing
    local z = x:clone()
    pcall(z.index_put_, z, { I({ 0, 5 }) }, 0)
    exact(z, F.x)
  end)
end)

describe("index_select", function()
  local x, xt
  before_each(function()
    x = H.T(F.x)
    xt = x:transpose(1, 3)
  end)

  it("matches PyTorch along any dim, with int64, int32 and 0-dim indices, on every dtype", function()
    local S = F.index_select
    for _, d in ipairs(DTYPES) do
      exact(x:to(d):index_select(-1, I({ 3, 0, 3 })), S.last, d)
      exact(xt:to(d):index_select(2, I({ 2, 0 })), S.noncontig, d)
      exact(x:to(d):index_select(1, I(1)), S.first_0d, d)
      exact(x:to(d):index_select(2, graft.tensor({ 2, 2 }, { dtype = "int32" })), S.int32, d)
      exact(graft.index_select(x:to(d), 3, graft.zeros(0, { dtype = "int64" })), S.empty, d)
    end
  end)

  it("copies large inputs correctly on the parallel path", function()
    local n = 50000
    local big = graft.arange(4 * n):reshape(n, 4)
    local r = big:index_select(1, graft.arange(n - 1, -1, -1))
    assert.are.same({ n, 4 }, r:shape())
    assert.are.same({ 4 * n - 4, 4 * n - 3, 4 * n - 2, 4 * n - 1 }, r[1]:tolist())
    assert.are.same({ 0, 1, 2, 3 }, r[n]:tolist())
    local c = big:index_select(2, I({ 3, 0 }))
    assert.are.same({ 4 * n - 1, 4 * n - 4 }, c[n]:tolist())
  end)

  it("raises for out-of-range values, wrong dtypes and shapes, and leaks nothing", function()
    local v = graft.zeros(5)
    H.raises("index_select: index 7 is out of range for dim 1 of size 5", function() return v:index_select(1, I({ 1, 7 })) end)
    H.raises("index_select: index -1 is out of range for dim 1 of size 5", function() return v:index_select(1, I({ -1 })) end)
    H.raises("index_select: expected an int64 or int32 index, got float32",
      function() return v:index_select(1, graft.tensor({ 1.0 })) end)
    H.raises("index_select: index must be 1-D or 0-D, got 2 dims", function() return v:index_select(1, I({ { 1 } })) end)
    H.raises("index_select: dim 2 is out of range", function() return v:index_select(2, I({ 1 })) end)
    H.raises("tensor expected", function() return v:index_select(1, { 1 }) end)
  end)
end)

describe("gather, scatter, scatter_add and index_add", function()
  local x, xt
  before_each(function()
    x = H.T(F.x)
    xt = x:transpose(1, 3)
  end)

  it("gather matches PyTorch along any dim and on non-contiguous inputs, for every dtype", function()
    local G = F.gather
    for _, d in ipairs(DTYPES) do
      exact(x:to(d):gather(-1, H.T(G.gi)), G.last, d)
      exact(x:to(d):gather(1, H.T(G.g0)), G.first, d)
      exact(graft.gather(xt:to(d), 2, H.T(G.noncontig_idx)), G.noncontig, d)
      exact(x:to(d):gather(3, graft.zeros(2, 0, 4, { dtype = "int64" })), graft.zeros(2, 0, 4), d)
    end
    -- a non-contiguous index
    exact(x:gather(-1, H.T(G.gi):transpose(1, 2):contiguous():transpose(1, 2)), G.last)
  end)

  it("scatter and scatter_ write src or a value where index points, for every dtype", function()
    local S = F.scatter
    local idx, src = H.T(S.idx), H.T(S.src)
    for _, d in ipairs(DTYPES) do
      local z = graft.zeros(3, 4, { dtype = d })
      exact(z:scatter(1, idx, src:to(d)), S.src_dim1, d)
      exact(z, graft.zeros(3, 4), d) -- out of place: z untouched
      assert.are.equal(z, z:scatter_(1, idx, src:to(d)))
      exact(z, S.src_dim1, d)
      exact(graft.zeros(2, 4, { dtype = d }):scatter(-1, I({ { 2 }, { 1 } }), 1.25), S.value_dim2, d)
      exact(graft.zeros(3, 4, { dtype = d }):scatter(2, I({ { 3, 0 } }), src:to(d)), S.small_src, d)
    end
    -- into a non-contiguous target; a 0-dim tensor counts as a value
    local base = graft.zeros(4, 3)
    base:t():scatter_(1, idx, src)
    exact(base:t(), S.src_dim1)
    exact(graft.zeros(2, 4):scatter(2, I({ { 2 }, { 1 } }), graft.tensor(1.25)), S.value_dim2)
  end)

  it("scatter_add and index_add accumulate duplicates", function()
    local S, A = F.scatter, F.index_add
    exact(graft.zeros(3, 5):scatter_add(1, H.T(S.add_idx), graft.arange(10.0):reshape(2, 5)), S.add)
    local z = graft.zeros(3, 5, { dtype = "int64" })
    z:scatter_add_(1, H.T(S.add_idx), graft.arange(10):reshape(2, 5))
    exact(z, S.add, "int64")
    local src = H.T(A.src)
    exact(graft.zeros(5, 3):index_add(1, I({ 0, 4, 2, 0 }), src, { alpha = 2 }), A.dim1)
    exact(graft.ones(3, 4):index_add(2, I({ 3, 1, 3 }), src:narrow(1, 1, 3)), A.dim2)
    local w = graft.ones(3, 4, { dtype = "float64" })
    assert.are.equal(w, w:index_add_(-1, graft.tensor({ 3, 1, 3 }, { dtype = "int32" }), src:narrow(1, 1, 3):double()))
    exact(w, A.dim2, "float64")
    -- non-contiguous target and source
    local base = graft.ones(4, 3)
    base:t():index_add_(2, I({ 3, 1, 3 }), src:narrow(1, 1, 3):t():contiguous():t())
    exact(base:t(), A.dim2)
    local h = graft.zeros(5, 3, { dtype = "float16" })
    h:index_add_(1, I({ 0, 4, 2, 0 }), src:half(), { alpha = 2 })
    exact(h, A.dim1, "float16")
  end)

  it("raises for bad indices, dtypes and shapes before writing anything, and leaks nothing", function()
    local v = graft.zeros(5)
    H.raises("gather: expected an int64 index, got int32", function() return v:gather(1, graft.tensor({ 1 }, { dtype = "int32" })) end)
    H.raises("gather: index -1 is out of range for dim 1 of size 5", function() return v:gather(1, I({ -1 })) end)
    H.raises("gather: index has 2 dims but the tensor has 1", function() return v:gather(1, I({ { 1 } })) end)
    H.raises("gather: index [3, 4] must be no larger than the tensor [2, 3] outside dim 1",
      function() return graft.zeros(2, 3):gather(1, graft.zeros(3, 4, { dtype = "int64" })) end)
    H.raises("scatter: index 7 is out of range for dim 1 of size 5", function() return v:scatter(1, I({ 1, 7 }), 1.0) end)
    pcall(v.scatter_, v, 1, I({ 1, 7 }), graft.ones(2))
    exact(v, graft.zeros(5))
    H.raises("scatter: src has dtype float64 but the tensor has float32",
      function() return v:scatter(1, I({ 1 }), graft.ones(1, { dtype = "float64" })) end)
    H.raises("scatter: expected an int64 index", function() return v:scatter(1, graft.tensor({ 1.0 }), 1) end)
    H.raises("must be no larger than the tensor [2, 3] outside dim 1, and no larger than src [1, 3]",
      function() return graft.zeros(2, 3):scatter(1, graft.zeros(2, 3, { dtype = "int64" }), graft.ones(1, 3)) end)
    H.raises("scatter_: expected a number", function() return v:scatter_(1, I({ 1 }), "x") end)
    H.raises("scatter_add: expected a src tensor", function() return v:scatter_add(1, I({ 1 }), 1) end)
    H.raises("scatter_add: index 5 is out of range", function() return v:scatter_add_(1, I({ 5 }), graft.ones(1)) end)
    H.raises("index_add_: src has dtype float64 but the tensor has float32",
      function() return v:index_add_(1, I({ 1 }), graft.ones(1, { dtype = "float64" })) end)
    H.raises("index_add_: 1 indices but src has size 2 in dim 1",
      function() return graft.zeros(5, 2):index_add_(1, I({ 1 }), graft.ones(2, 2)) end)
    H.raises("index_add_: src [2, 3] must match the tensor [5, 2] outside dim 1",
      function() return graft.zeros(5, 2):index_add_(1, I({ 1, 2 }), graft.ones(2, 3)) end)
    H.raises("index_add_: index 7 is out of range for dim 1 of size 5", function() return v:index_add_(1, I({ 7 }), graft.ones(1)) end)
    H.raises("index_add_: alpha must be an integer for int64 tensors",
      function() return graft.zeros(2, { dtype = "int64" }):index_add_(1, I({ 1 }), I({ 1 }), { alpha = 0.5 }) end)
    exact(v, graft.zeros(5))
  end)
end)

describe("masked_fill, masked_select, take and nonzero", function()
  local x, xt, m34
  before_each(function()
    x = H.T(F.x)
    xt = x:transpose(1, 3)
    m34 = H.T(F.m34)
  end)

  it("masked_fill broadcasts the mask (and, out of place, the tensor), for every dtype", function()
    local M = F.masks
    for _, d in ipairs(DTYPES) do
      exact(x:to(d):masked_fill(m34, -1.5), M.fill, d)
      local z = x:to(d)
      assert.are.equal(z, z:masked_fill_(m34, -1.5))
      exact(z, M.fill, d)
      exact(x:to(d):masked_fill(m34:to("uint8"), graft.tensor(-1.5)), M.fill, d)
    end
    exact(graft.zeros(3):masked_fill(graft.tensor({ { true }, { false } }), 1), M.fill_bcast)
    local base = x:clone()
    base:transpose(2, 3):masked_fill_(m34:t(), -1.5)
    exact(base, M.fill)
  end)

  it("masked_select, take and nonzero match PyTorch", function()
    local M = F.masks
    for _, d in ipairs(DTYPES) do
      exact(x:to(d):masked_select(m34), M.select, d)
      exact(graft.masked_select(xt:to(d), graft.tensor({ true, false })), M.select_t, d)
      exact(x:to(d):take(I({ { 0, -1 }, { 5, 23 } })), M.take, d)
      exact(xt:to(d):take(graft.zeros(0, 2, { dtype = "int64" })), graft.zeros(0, 2), d)
    end
    for _, d in ipairs({ "float32", "float64", "float16" }) do
      exact(x:to(d):nonzero(), M.nonzero)
      exact(xt:to(d):nonzero(), M.nonzero_t)
    end
    exact(H.T(F.index_in.y_gt1):nonzero(), M.nonzero_y)
    exact(graft.tensor({ 0 / 0, -0.0, 1.0, 0.0 }):nonzero(), M.nonzero_special)
    exact(graft.tensor({ 0 / 0, -0.0, 1.0, 0.0 }):half():nonzero(), M.nonzero_special)
    assert.are.same({ 0, 3 }, graft.zeros(2, 2, 2):nonzero():shape())
    assert.are.same({ 1, 0 }, graft.tensor(3):nonzero():shape())
    assert.are.same({ 0 }, x:masked_select(graft.zeros(3, 4, { dtype = "bool" })):shape())
  end)

  it("raises for bad masks, values and indices, and leaks nothing", function()
    H.raises("masked_fill: expected a bool mask, got float32", function() return x:masked_fill(graft.ones(3, 4), 1) end)
    H.raises("masked_fill_: mask of shape [2, 3] cannot be broadcast to the tensor's shape [3]",
      function() return graft.zeros(3):masked_fill_(graft.ones(2, 3, { dtype = "bool" }), 1) end)
    H.raises("masked_fill: shapes [2, 3, 4] and [5] cannot broadcast",
      function() return x:masked_fill(graft.ones(5, { dtype = "bool" }), 1) end)
    H.raises("masked_fill: the value must be a number or a 0-dim tensor, got a tensor with 1 dims",
      function() return x:masked_fill(m34, graft.ones(1)) end)
    H.raises("masked_fill: expected a number", function() return x:masked_fill(m34, "a") end)
    H.raises("masked_select: expected a bool mask, got int64", function() return x:masked_select(I({ 1 })) end)
    H.raises("take: index 24 is out of range for a tensor of 24 elements", function() return x:take(I({ 24 })) end)
    H.raises("take: index -25 is out of range", function() return x:take(I({ -25 })) end)
    H.raises("take: expected an int64 index, got int32", function() return x:take(graft.tensor({ 1 }, { dtype = "int32" })) end)
  end)
end)
