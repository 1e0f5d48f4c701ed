-- Indexing on CUDA against the CPU: t[{...}] with index tensors, masks and slices,
-- index_put_, index_select, gather, scatter/scatter_add, index_add, masked_fill,
-- masked_select, take and nonzero, in every dtype they move, contiguous or not; index
-- bounds raise clean errors naming the op (checked on the device); tensors on two
-- devices are refused (CPU index tensors are accepted by t[{...}] only, as in PyTorch).
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")

local I, as, exact = C.I, C.as, C.check_exact

C.describe("t[{...}] on cuda", function()
  local x, xt
  before_each(function()
    graft.manual_seed(1)
    x = graft.randn(3, 4, 5)
    xt = x:transpose(1, 3) -- [5, 4, 3], not contiguous
  end)

  local KEYS = {
    adv1 = function() return { I({ 1, 0, 2, 0 }) } end,
    adv_neg = function() return { ":", I({ -1, 0, -1 }) } end,
    adv_pair = function() return { I({ 1, 0 }), "...", I({ 0, 2 }) } end,
    adv_split = function() return { I({ 0, 1 }), ":", I({ 1, 2 }) } end,
    adv_int_between = function() return { I({ 0, 1 }), 1, I({ 1, 2 }) } end,
    adv_2d = function() return { I({ { 0, 1 }, { 1, 0 } }) } end,
    adv_bcast = function() return { I({ { 0 }, { 1 } }), ":", I({ 1, 2, 0 }) } end,
    adv_mid = function() return { ":", I({ 2, 0 }), { 2, 3 } } end,
    adv_none = function() return { "none", I({ 1, 0 }) } end,
    adv_step = function() return { { 1, -1, 2 }, I({ 3, 1 }) } end,
    mask_dim = function() return { ":", graft.tensor({ true, false, true, true }) } end,
    mask_2d = function(t) return { 2, t[1]:gt(0) } end,
    mask_full = function(t) return { t:lt(0.5) } end,
    mask_uint8 = function() return { ":", graft.tensor({ 1, 0, 0, 1 }, { dtype = "uint8" }) } end,
    mask_0d = function() return { graft.tensor(true) } end,
    mask_0d_false = function() return { graft.tensor(false) } end,
    empty_idx = function() return { graft.zeros(0, { dtype = "int64" }) } end,
    basic = function() return { 2, { 2, 3 }, -1 } end,
  }

  it("gathers like the CPU for index tensors, masks, broadcasting and slices", function()
    for name, key in pairs(KEYS) do
      for _, t in ipairs({ x, xt }) do
        local ok, err = pcall(exact, function(a, k) return a:index(k) end, { t, key(t) })
        assert(ok, name .. ": " .. tostring(err))
      end
    end
  end)

  it("indexes a mask over the whole tensor, and through the __index syntax", function()
    exact(function(a, m) return a[m] end, { x, x:gt(0.3) })
    exact(function(a, m) return a[{ m }] end, { xt, xt:lt(0) })
  end)

  it("moves every dtype", function()
    for _, dt in ipairs(C.DTYPES) do
      exact(function(a, k) return a:index(k) end, { as(x, dt), { I({ 2, 0 }), ":", I({ 4, 1 }) } })
      exact(function(a, k) return a:index(k) end, { as(xt, dt), { ":", graft.tensor({ true, false, true, false }) } })
    end
  end)

  it("accepts CPU index tensors and masks for CUDA data", function()
    local d = x:cuda()
    C.assert_match(d[{ I({ 2, 0 }), ":", I({ 4, 1 }) }], x[{ I({ 2, 0 }), ":", I({ 4, 1 }) }])
    local m = graft.tensor({ true, false, true, false })
    C.assert_match(d[{ ":", m }], x[{ ":", m }])
    C.assert_match(d[x:gt(0)], x[x:gt(0)])
  end)

  it("handles larger gathers (embedding-style rows, many blocks)", function()
    local w = graft.randn(500, 16)
    local idx = graft.randint(0, 500, { 3000 }, { dtype = "int64" })
    exact(function(a, i) return a[{ i }] end, { w, idx })
    exact(function(a, i) return a[{ ":", i:narrow(1, 1, 40):remainder(16) }] end, { w, idx })
  end)

  it("index_put_ writes through index tensors, masks and slices", function()
    local function put(key, v)
      return function(a, k, val)
        local c = a:clone()
        c:index_put_(k, val)
        return c
      end, { x, key, v }
    end
    local cases = {
      { { I({ 2, 0 }) }, graft.randn(2, 4, 5) },
      { { ":", I({ 3, 1 }), I({ 0, 4 }) }, graft.randn(3, 2) },
      { { ":", I({ 3, 1 }), I({ 0, 4 }) }, graft.tensor(2.5) },      -- broadcast value
      { { I({ -1 }), ":", { 2, 3 } }, graft.randn(4, 2) },
      { { ":", graft.tensor({ true, false, true, false }) }, graft.randn(5) },
      { { x:gt(0) }, graft.tensor(0.0) },
      { { 1, { 2, 3 } }, graft.randn(2, 5) },                         -- basic: a copy
    }
    for _, c in ipairs(cases) do exact(put(c[1], c[2])) end
    for _, dt in ipairs(C.DTYPES) do
      exact(function(a, k, v)
        local c = a:clone()
        c:index_put_(k, v)
        return c
      end, { as(xt, dt), { I({ 4, 0 }), I({ 1, 2 }) }, as(graft.randn(2, 3), dt) })
    end
    -- numbers and the assignment syntax
    local d = x:cuda()
    d[{ ":", I({ 0, 2 }) }] = 7
    d[d:lt(-1)] = -1
    local e = x:clone()
    e[{ ":", I({ 0, 2 }) }] = 7
    e[e:lt(-1)] = -1
    C.assert_match(d, e, C.EXACT)
  end)

  it("raises on out-of-range indices, naming the op and the index, and leaves t alone", function()
    local d = x:cuda()
    H.raises("index: index 3 is out of range for dim 1 of size 3", function() return d[{ I({ 0, 3 }):cuda() }] end)
    H.raises("index: index -6 is out of range for dim 3 of size 5", function() return d[{ ":", ":", I({ -6 }) }] end)
    H.raises("index_put_: index 4 is out of range for dim 2 of size 4", function()
      d:index_put_({ ":", I({ 4 }):cuda() }, 1)
    end)
    C.assert_match(d, x, C.EXACT)
  end)

  it("refuses CUDA index tensors for CPU data", function()
    H.raises("index: indices should be either on cpu or on the same device as the indexed tensor (cpu)", function()
      return x[{ I({ 0 }):cuda() }]
    end)
  end)
end)

C.describe("index_select, gather, scatter, index_add on cuda", function()
  local x
  before_each(function()
    graft.manual_seed(2)
    x = graft.randn(4, 5, 6)
  end)

  it("index_select matches along every dim, for every dtype, int32 and 0-dim indices", function()
    for dim = 1, 3 do
      exact(function(a, i) return a:index_select(dim, i) end, { x, I({ 3, 0, 3, 1 }) })
      exact(function(a, i) return a:index_select(dim, i) end, { x:transpose(1, 3), I({ 2, 0 }) })
    end
    for _, dt in ipairs(C.DTYPES) do
      exact(function(a, i) return a:index_select(2, i) end, { as(x, dt), I({ 4, 4, 0 }) })
    end
    exact(function(a, i) return a:index_select(-1, i) end, { x, graft.tensor({ 5, 1 }, { dtype = "int32" }) })
    exact(function(a, i) return a:index_select(1, i) end, { x, graft.tensor(2, { dtype = "int64" }) })
    exact(function(a, i) return a:index_select(1, i) end, { x, graft.zeros(0, { dtype = "int64" }) })
    exact(function(a, i) return a:index_select(1, i) end, { graft.tensor(3.5), I({ 0 }) })
  end)

  it("gather matches along every dim, non-contiguous and every dtype", function()
    graft.manual_seed(3)
    for dim = 1, 3 do
      local shape = { 4, 5, 6 }
      shape[dim] = 7
      local idx = graft.randint(0, x:size(dim), shape, { dtype = "int64" })
      shape[dim] = x:size(dim)
      exact(function(a, i) return a:gather(dim, i) end, { x, idx })
    end
    local idx = graft.randint(0, 4, { 3, 5, 2 }, { dtype = "int64" })
    exact(function(a, i) return a:gather(1, i) end, { x:narrow(3, 2, 4), idx })
    exact(function(a, i) return a:gather(2, i) end, { x:transpose(1, 2), graft.randint(0, 4, { 5, 4, 6 }, { dtype = "int64" }) })
    for _, dt in ipairs(C.DTYPES) do exact(function(a, i) return a:gather(1, i) end, { as(x, dt), idx }) end
  end)

  it("scatter_ and scatter with a tensor or a value match (no duplicate positions)", function()
    -- each column of idx is a permutation, so every position is written once
    local idx = graft.stack({ I({ 2, 0, 3, 1 }), I({ 0, 1, 2, 3 }), I({ 3, 2, 1, 0 }) }, 2):unsqueeze(3):expand(4, 3, 6)
    idx = idx:contiguous()
    local src = graft.randn(4, 3, 6)
    for _, dt in ipairs(C.DTYPES) do
      exact(function(a, i, s) return a:scatter(1, i, s) end, { as(x:narrow(2, 1, 3), dt), idx, as(src, dt) })
    end
    exact(function(a, i, s)
      local c = a:clone()
      c:transpose(2, 3):scatter_(1, i:transpose(2, 3), s:transpose(2, 3))
      return c
    end, { x:narrow(2, 1, 3):contiguous(), idx, src })
    exact(function(a, i) return a:scatter(1, i, 2.5) end, { x:narrow(2, 1, 3), idx })
    exact(function(a, i) return a:scatter(1, i, 3) end, { as(x:narrow(2, 1, 3), "int32"), idx })
    exact(function(a, i) return a:scatter(1, i, graft.tensor(-1.5)) end, { x:narrow(2, 1, 3), idx })
  end)

  it("scatter_add sums duplicates (atomics) in every dtype", function()
    graft.manual_seed(4)
    local idx = graft.randint(0, 4, { 9, 5, 6 }, { dtype = "int64" })
    local src = graft.randn(9, 5, 6)
    for _, dt in ipairs(C.DTYPES) do
      local tol = ({ float16 = { rtol = 1e-2, atol = 2e-2 }, bfloat16 = { rtol = 2e-2, atol = 1e-1 } })[dt]
        or { rtol = 1e-5, atol = 1e-5 }
      C.check(function(a, i, s) return a:scatter_add(1, i, s) end, { as(x, dt), idx, as(src, dt) }, tol)
    end
    C.check(function(a, i, s) return a:scatter_add(3, i, s) end,
      { x, graft.randint(0, 6, { 4, 5, 20 }, { dtype = "int64" }), graft.randn(4, 5, 20) })
    -- many threads hitting one element
    C.check(function(a, i, s) return a:scatter_add(1, i, s) end,
      { graft.zeros(1, 3), graft.zeros(2000, 3, { dtype = "int64" }), graft.ones(2000, 3) })
  end)

  it("index_add_ matches with alpha, along every dim, with duplicates, int32 indices", function()
    for dim = 1, 3 do
      local n = ({ 7, 3, 9 })[dim]
      local shape = { 4, 5, 6 }
      shape[dim] = n
      local idx = graft.randint(0, x:size(dim), { n }, { dtype = "int64" })
      C.check(function(a, i, s) return a:index_add(dim, i, s) end, { x, idx, graft.randn(table.unpack(shape)) })
      C.check(function(a, i, s) return a:index_add(dim, i, s, { alpha = -0.5 }) end,
        { x:transpose(1, 3):contiguous():transpose(1, 3), idx, graft.randn(table.unpack(shape)) })
    end
    C.check(function(a, i, s)
      local c = a:clone()
      c:index_add_(2, i, s, { alpha = 3 })
      return c
    end, { as(x, "int64"), graft.tensor({ 1, 1, 0 }, { dtype = "int32" }), as(graft.randn(4, 3, 6), "int64") },
      C.EXACT)
    for _, dt in ipairs({ "float16", "bfloat16", "int8", "uint8", "bool", "float64" }) do
      C.check(function(a, i, s) return a:index_add(1, i, s) end, { as(x, dt), I({ 0, 2, 0 }), as(graft.randn(3, 5, 6), dt) },
        { rtol = 2e-2, atol = 1e-1 })
    end
  end)

  it("raises on out-of-range indices naming the op, before writing anything", function()
    local d = x:cuda()
    H.raises("index_select: index 4 is out of range for dim 1 of size 4", function()
      return d:index_select(1, I({ 0, 4 }):cuda())
    end)
    H.raises("index_select: index -1 is out of range for dim 2 of size 5", function()
      return d:index_select(2, I({ -1 }):cuda())
    end)
    H.raises("gather: index 6 is out of range for dim 3 of size 6", function()
      return d:gather(3, graft.full({ 4, 5, 1 }, 6, { dtype = "int64" }):cuda())
    end)
    H.raises("scatter: index 9 is out of range for dim 1 of size 4", function()
      d:scatter_(1, graft.full({ 1, 5, 6 }, 9, { dtype = "int64" }):cuda(), graft.ones(1, 5, 6):cuda())
    end)
    H.raises("scatter_add: index -2 is out of range for dim 1 of size 4", function()
      d:scatter_add_(1, graft.full({ 1, 5, 6 }, -2, { dtype = "int64" }):cuda(), graft.ones(1, 5, 6):cuda())
    end)
    H.raises("index_add_: index 5 is out of range for dim 2 of size 5", function()
      d:index_add_(2, I({ 5 }):cuda(), graft.ones(4, 1, 6):cuda())
    end)
    C.assert_match(d, x, C.EXACT)
  end)

  it("refuses tensors on two devices", function()
    local d = x:cuda()
    local same = "expected all tensors to be on the same device, but found cuda:0 and cpu"
    H.raises("index_select: " .. same, function() return d:index_select(1, I({ 0 })) end)
    H.raises("gather: " .. same, function() return d:gather(1, graft.zeros(1, 5, 6, { dtype = "int64" })) end)
    H.raises("scatter: " .. same, function()
      d:scatter_(1, graft.zeros(1, 5, 6, { dtype = "int64" }):cuda(), graft.ones(1, 5, 6))
    end)
    H.raises("scatter_add: " .. same, function()
      d:scatter_add_(1, graft.zeros(1, 5, 6, { dtype = "int64" }), graft.ones(1, 5, 6):cuda())
    end)
    H.raises("index_add_: " .. same, function() d:index_add_(1, I({ 0 }), graft.ones(1, 5, 6):cuda()) end)
    H.raises("index_select: expected all tensors to be on the same device, but found cpu and cuda:0", function()
      return x:index_select(1, I({ 0 }):cuda())
    end)
  end)
end)

C.describe("masks, take and nonzero on cuda", function()
  local x
  before_each(function()
    graft.manual_seed(5)
    x = graft.randn(3, 4, 5)
  end)

  it("masked_fill and masked_fill_ match with broadcast, uint8 and non-contiguous masks", function()
    for _, dt in ipairs(C.DTYPES) do
      exact(function(a, m) return a:masked_fill(m, 1) end, { as(x, dt), x:gt(0.5) })
    end
    exact(function(a, m) return a:masked_fill(m, -2.5) end, { x, graft.tensor({ true, false, false, true, true }) })
    exact(function(a, m) return a:masked_fill(m, 3) end, { x:transpose(1, 3), x:lt(0):transpose(1, 3) })
    exact(function(a, m) return a:masked_fill(m, 0) end, { x, x:gt(0):to("uint8") })
    exact(function(a, m) return a:masked_fill(m, graft.tensor(4.0):cuda()) end, { x, x:gt(1) })
    exact(function(a, m) return a:masked_fill(m, 9) end, { graft.randn(4, 1), graft.tensor({ { true, false, true } }) })
    exact(function(a, m)
      local c = a:clone()
      c:narrow(3, 2, 3):masked_fill_(m, 7)
      return c
    end, { x, graft.tensor({ true, false, true }) })
  end)

  it("masked_select keeps row-major order, broadcasting, over many chunks", function()
    for _, dt in ipairs(C.DTYPES) do exact(function(a, m) return a:masked_select(m) end, { as(x, dt), x:gt(0) }) end
    exact(function(a, m) return a:masked_select(m) end, { x:transpose(1, 2), graft.tensor({ true, false, true, true, false }) })
    exact(function(a, m) return a:masked_select(m) end, { graft.randn(5, 1), graft.tensor({ { true, false, true, true } }) })
    exact(function(a, m) return a:masked_select(m) end, { x, x:gt(100) })
    exact(function(a, m) return a:masked_select(m) end, { x, x:gt(-100) })
    exact(function(a, m) return a:masked_select(m) end, { graft.zeros(0, 3), graft.zeros(0, 3, { dtype = "bool" }) })
    local big = graft.randn(7000) -- 4 chunks of 2048
    exact(function(a, m) return a:masked_select(m) end, { big, big:gt(0.2) })
    exact(function(a, m) return a:masked_select(m) end, { big:reshape(70, 100):t(), big:reshape(70, 100):t():lt(0) })
  end)

  it("take matches with negative indices, any index shape and non-contiguous data", function()
    local idx = graft.tensor({ { 0, -1, 59 }, { -60, 7, 7 } }, { dtype = "int64" })
    for _, dt in ipairs(C.DTYPES) do exact(function(a, i) return a:take(i) end, { as(x, dt), idx }) end
    exact(function(a, i) return a:take(i) end, { x:transpose(1, 3), idx })
    exact(function(a, i) return a:take(i) end, { x, idx:t() })
    exact(function(a, i) return a:take(i) end, { x, graft.zeros(0, { dtype = "int64" }) })
  end)

  it("nonzero lists coordinates in row-major order for every dtype, -0.0 and NaN included", function()
    for _, dt in ipairs(C.DTYPES) do
      exact(function(a) return a:nonzero() end, { as(x:mul(2):round():clamp(-1, 1), dt) })
    end
    exact(function(a) return a:nonzero() end, { graft.tensor({ 0.0, -0.0, 0 / 0, 1, 0 }) })
    exact(function(a) return a:nonzero() end, { graft.tensor({ 0.0, -0.0, 2, 0 }):to("float16") })
    exact(function(a) return a:nonzero() end, { graft.tensor({ 0.0, -0.0, 2, 0 }):to("bfloat16") })
    exact(function(a) return a:nonzero() end, { x:transpose(1, 3):gt(0) })
    exact(function(a) return a:nonzero() end, { graft.tensor(3.0) })
    exact(function(a) return a:nonzero() end, { graft.tensor(0.0) })
    exact(function(a) return a:nonzero() end, { graft.zeros(2, 0, 3) })
    exact(function(a) return a:nonzero() end, { graft.zeros(4, 5) })
    local big = graft.randn(9000):gt(0.5):reshape(30, 300)
    exact(function(a) return a:nonzero() end, { big })
  end)

  it("raises on bad take indices and refuses masks on another device", function()
    local d = x:cuda()
    H.raises("take: index 60 is out of range for a tensor of 60 elements", function()
      return d:take(I({ 1, 60 }):cuda())
    end)
    H.raises("take: index -61 is out of range", function() return d:take(I({ -61 }):cuda()) end)
    local same = "expected all tensors to be on the same device, but found cuda:0 and cpu"
    H.raises("take: " .. same, function() return d:take(I({ 1 })) end)
    H.raises("masked_fill: " .. same, function() return d:masked_fill(x:gt(0), 1) end)
    H.raises("masked_fill_: " .. same, function() d:masked_fill_(x:gt(0), 1) end)
    H.raises("masked_select: " .. same, function() return d:masked_select(x:gt(0)) end)
    C.assert_match(d, x, C.EXACT)
  end)
end)

C.describe("gradients of indexing on cuda", function()
  local function leaf(...) return C.leaf(graft.randn(...):double()) end

  it("flow through basic slices, index_select, gather, masks and take", function()
    graft.manual_seed(6)
    C.check(function(a) return a[{ 2, { 1, 3 } }] end, { leaf(3, 4) }, { grad = true })
    C.check(function(a, i) return a:index_select(1, i) end, { leaf(3, 4), I({ 2, 0, 2 }) }, { grad = true })
    C.check(function(a, i) return a:gather(2, i) end, { leaf(3, 4), I({ { 0, 0 }, { 3, 1 }, { 2, 2 } }) }, { grad = true })
    C.check(function(a, m) return a:masked_fill(m, 0) end, { leaf(3, 4), graft.randn(3, 4):gt(0) }, { grad = true })
    C.check(function(a, m) return a:masked_select(m) end, { leaf(3, 4), graft.randn(4):gt(0) }, { grad = true })
    C.check(function(a, i) return a:take(i) end, { leaf(3, 4), I({ -1, 0, 5, 5 }) }, { grad = true })
  end)

  it("flow through scatter, scatter_add and index_add", function()
    graft.manual_seed(7)
    local perm = I({ { 2, 0, 1 }, { 0, 1, 2 } })
    C.check(function(a, i, s) return a:scatter(1, i, s) end, { leaf(3, 3), perm, leaf(2, 3) }, { grad = true })
    C.check(function(a, i, s) return a:scatter_add(1, i, s) end, { leaf(3, 3), I({ { 2, 2, 2 }, { 2, 0, 0 } }), leaf(2, 3) },
      { grad = true })
    C.check(function(a, i, s) return a:index_add(2, i, s, { alpha = 2 }) end, { leaf(3, 4), I({ 3, 3 }), leaf(3, 2) },
      { grad = true })
  end)

  it("flow through index_put_ with index tensors and masks", function()
    graft.manual_seed(8)
    C.check(function(a, k, v)
      local c = a * 1
      c:index_put_(k, v)
      return c
    end, { leaf(3, 4), { I({ 2, 0 }), ":" }, leaf(2, 4) }, { grad = true })
    C.check(function(a, m, v)
      local c = a * 1
      c[m] = v
      return c
    end, { leaf(3, 4), graft.randn(3, 4):gt(0), leaf() }, { grad = true })
  end)

  it("flow through advanced indexing", function()
    graft.manual_seed(9)
    C.check(function(a, k) return a[k] end, { leaf(3, 4), { I({ 2, 0, 2 }), ":" } }, { grad = true })
    C.check(function(a, m) return a[m] end, { leaf(3, 4), graft.randn(3, 4):gt(0) }, { grad = true })
  end)
end)
