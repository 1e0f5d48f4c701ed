-- Random numbers and dropout on CUDA: generated on the device from graft's Philox
-- stream, the same values as the CPU for the same seed (float64 normals to the last
-- ulp: the device's log and cos may round differently), in every layout and dtype, with
-- the stream position shared between devices.
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")
local F = graft.nn.functional

-- fn() under seed on the CPU, then under the same seed with device = "cuda".
local function both(seed, fn)
  graft.manual_seed(seed)
  local c = fn("cpu")
  graft.manual_seed(seed)
  local d = fn("cuda")
  return c, d
end

C.describe("random fills on cuda", function()
  it("give the CPU's numbers for the same seed, in every float dtype", function()
    for _, dt in ipairs(C.FLOATS) do
      local tol = dt == "float64" and { rtol = 1e-14, atol = 1e-15 } or C.EXACT
      graft.manual_seed(5)
      local c1, c2, c3, c4 = graft.rand(37, { dtype = dt }), graft.randn(3, 13, { dtype = dt }),
          graft.empty(2, 9, { dtype = dt }):uniform_(-2, 3), graft.empty(17, { dtype = dt }):normal_(1.5, 0.25)
      graft.manual_seed(5)
      local o = { dtype = dt, device = "cuda" }
      local d1, d2, d3, d4 = graft.rand(37, o), graft.randn(3, 13, o), graft.empty(2, 9, o):uniform_(-2, 3),
          graft.empty(17, o):normal_(1.5, 0.25)
      C.assert_match(d1, c1, C.EXACT, dt .. " rand")
      C.assert_match(d2, c2, tol, dt .. " randn")
      C.assert_match(d3, c3, C.EXACT, dt .. " uniform_")
      C.assert_match(d4, c4, tol, dt .. " normal_")
    end
  end)

  it("give the CPU's integers for randint and random_ in any dtype", function()
    graft.manual_seed(3)
    local c = { graft.randint(-5, 100, { 41 }), graft.randint(7, { 3, 3 }, { dtype = "int8" }),
      graft.empty(4, 5, { dtype = "float32" }):random_(-3, 3), graft.empty(6, { dtype = "int32" }):random_(10),
      graft.randint(0, 2 ^ 40, { 5 }) }
    graft.manual_seed(3)
    local o = { device = "cuda" }
    local d = { graft.randint(-5, 100, { 41 }, o), graft.randint(7, { 3, 3 }, { dtype = "int8", device = "cuda" }),
      graft.empty(4, 5, { dtype = "float32", device = "cuda" }):random_(-3, 3),
      graft.empty(6, { dtype = "int32", device = "cuda" }):random_(10), graft.randint(0, 2 ^ 40, { 5 }, o) }
    for k = 1, #c do C.assert_match(d[k], c[k], C.EXACT, "randint " .. k) end
  end)

  it("fill strided views with the values a contiguous fill would put there", function()
    for _, dt in ipairs({ "float32", "float64", "float16", "int64", "int16" }) do
      local c, d = both(11, function(dev)
        local t = graft.zeros(6, 5, { dtype = dt, device = dev })
        local v = t:t():narrow(1, 2, 3)
        if dt:find("float") then v:uniform_(-1, 1); t:narrow(1, 1, 2):normal_() else v:random_(-50, 50) end
        return t
      end)
      C.assert_match(d, c, dt == "float64" and { rtol = 1e-14, atol = 1e-15 } or C.EXACT, dt)
    end
  end)

  it("share the stream position with the CPU", function()
    graft.manual_seed(1)
    graft.rand(10, { device = "cuda" })
    graft.randn(7, { device = "cuda", dtype = "float64" })
    local after_cuda = graft.rand(5)
    graft.manual_seed(1)
    graft.rand(10)
    graft.randn(7, { dtype = "float64" })
    assert.tensor_near(after_cuda, graft.rand(5), C.EXACT)
    -- and repeat exactly under the same seed
    graft.manual_seed(42)
    local a = graft.randn(100, { device = "cuda" }):cpu()
    graft.manual_seed(42)
    assert.tensor_near(graft.randn(100, { device = "cuda" }):cpu(), a, C.EXACT)
  end)

  it("keep the *_like forms on the device", function()
    local d = graft.zeros(3, 4, { device = "cuda", dtype = "float16" })
    for _, r in ipairs({ graft.rand_like(d), graft.randn_like(d), graft.randint_like(d, 0, 9) }) do
      assert.are.equal("cuda:0", r:device())
      assert.are.equal("float16", r:dtype())
    end
  end)

  it("have the right distributions", function()
    graft.manual_seed(8)
    local u = graft.rand(20000, { device = "cuda" }):cpu()
    local n = graft.randn(20000, { device = "cuda" }):cpu()
    local i = graft.randint(3, 9, { 20000 }, { device = "cuda" }):cpu()
    assert.is_true(u:min():item() >= 0 and u:max():item() < 1)
    assert.is_true(math.abs(u:mean():item() - 0.5) < 0.01)
    assert.is_true(math.abs(n:mean():item()) < 0.03 and math.abs(n:std():item() - 1) < 0.03)
    assert.are.equal(3, i:min():item())
    assert.are.equal(8, i:max():item())
  end)

  it("draw randperm on the host and move it", function()
    local c, d = both(2, function(dev) return graft.randperm(50, { device = dev }) end)
    C.assert_match(d, c, C.EXACT)
    local seen = {}
    for _, v in ipairs(d:tolist()) do seen[v] = true end
    for k = 0, 49 do assert.is_true(seen[k], "missing " .. k) end
    assert.are.equal("float32", graft.randperm(5, { device = "cuda", dtype = "float32" }):dtype())
  end)

  it("refuse what the CPU refuses", function()
    local i = graft.zeros(3, { dtype = "int64", device = "cuda" })
    H.raises("uniform_: expected a floating dtype, got int64", function() return i:uniform_() end)
    H.raises("normal_: expected std >= 0", function() return graft.zeros(3, { device = "cuda" }):normal_(0, -1) end)
    H.raises("randint: expected low < high", function() return graft.randint(5, 5, { 3 }, { device = "cuda" }) end)
  end)
end)

C.describe("dropout on cuda", function()
  it("drops the CPU's elements for the same seed and scales the rest", function()
    for _, dt in ipairs({ "float32", "float64" }) do
      for _, p in ipairs({ 0.3, 0.5, 0.9 }) do
        local x = graft.randn(5, 301, { dtype = dt }) -- 1505: chunks of 256 and a ragged end
        local c, d = both(9, function(dev) return F.dropout(dev == "cuda" and x:cuda() or x, p) end)
        C.assert_match(d, c, C.EXACT, dt .. " p=" .. p)
      end
    end
    -- a non-contiguous input, and the same mask on every run
    local x = graft.randn(40, 30)
    local c, d = both(4, function(dev) return F.dropout(dev == "cuda" and x:cuda():t() or x:t(), 0.25) end)
    C.assert_match(d, c, C.EXACT)
    graft.manual_seed(4)
    C.assert_match(F.dropout(x:cuda():t(), 0.25), c, C.EXACT)
  end)

  it("keeps everything at p = 0, nothing at p = 1, and is the identity in eval", function()
    local d = graft.randn(7, 9, { device = "cuda" })
    assert.tensor_near(F.dropout(d, 0):cpu(), d:cpu(), C.EXACT)
    assert.tensor_near(F.dropout(d, 1):cpu(), graft.zeros(7, 9), C.EXACT)
    assert.tensor_near(F.dropout(d, { p = 0.5, training = false }):cpu(), d:cpu(), C.EXACT)
    local kept = F.dropout(graft.ones(100000, { device = "cuda" }), 0.2):cpu():ne(0):float():mean():item()
    assert.is_true(math.abs(kept - 0.8) < 0.01, "kept " .. kept)
  end)

  it("differentiates with the forward's mask", function()
    for _, dt in ipairs({ "float32", "float64" }) do
      local x = graft.randn(6, 50, { dtype = dt })
      x.requires_grad = true
      C.check(function(t) graft.manual_seed(21); return F.dropout(t, 0.4), F.dropout(t:t(), 0.6) end, { x },
        { grad = true })
    end
  end)

  it("takes float16 and bfloat16 with the float32 mask", function()
    for _, dt in ipairs({ "float16", "bfloat16" }) do
      local x = graft.randn(6, 50, { dtype = dt })
      x.requires_grad = true
      C.check(function(t) graft.manual_seed(22); return F.dropout(t, 0.4) end, { x }, { grad = true })
    end
  end)

  it("refuses integer input as the CPU does", function()
    H.raises("dropout: expected a floating point input, got int64",
      function() return F.dropout(graft.zeros(3, { dtype = "int64", device = "cuda" }), 0.5) end)
  end)
end)
