-- Joining and rearranging on CUDA against the CPU: cat (dtype promotion, legacy empty
-- inputs), stack, split/chunk/unbind, flip, roll, repeat/tile, tril/triu (and in place),
-- diag, diagonal, and the reshapes that must copy; contiguous or not, every dtype;
-- gradients; tensors on two devices are refused.
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")

local as, exact = C.as, C.check_exact

C.describe("cat, stack and splitting on cuda", function()
  local x
  before_each(function()
    graft.manual_seed(11)
    x = graft.randn(3, 4, 5)
  end)

  it("cat joins along every dim, contiguous or not, every dtype", function()
    for dim = 1, 3 do
      exact(function(a, b) return graft.cat({ a, b, a }, dim) end, { x, x:mul(2) })
      exact(function(a, b) return graft.cat({ a, b }, dim) end, { x:transpose(1, 3):transpose(1, 3), x:flip(dim) })
    end
    exact(function(a, b) return graft.cat({ a, b }, -1) end, { x, graft.randn(3, 4, 2) })
    exact(function(a, b) return graft.cat({ a, b }, 2) end, { x:transpose(2, 3), graft.randn(3, 1, 4) })
    for _, dt in ipairs(C.DTYPES) do
      exact(function(a, b) return graft.cat({ a, b }, 2) end, { as(x, dt), as(x:neg(), dt) })
    end
  end)

  it("cat promotes dtypes and skips legacy 1-D empty inputs", function()
    exact(function(a, b, c) return graft.cat({ a, b, c }, 1) end,
      { as(x, "int32"), x:double(), as(x, "bool") })
    exact(function(a, b) return graft.cat({ a, b }, 1) end, { as(x, "float16"), as(x, "bfloat16") })
    exact(function(a, e) return graft.cat({ e, a, e }, 2) end, { x, graft.zeros(0) })
    exact(function(e) return graft.cat({ e, e }) end, { graft.zeros(0) })
    exact(function(a, b) return graft.cat({ a, b }, 1) end, { graft.zeros(0, 5), graft.randn(2, 5) })
  end)

  it("stack adds a dim at every position", function()
    for dim = 1, 4 do
      exact(function(a, b) return graft.stack({ a, b }, dim) end, { x, x:transpose(2, 3):transpose(2, 3):mul(3) })
    end
    exact(function(a, b) return graft.stack({ a, b }, -1) end, { as(x, "int8"), as(x:neg(), "int8") })
  end)

  it("split, chunk and unbind give views of the device tensor", function()
    local d = x:cuda()
    for _, pieces in ipairs({ d:split(2, 2), d:split({ 1, 3 }, 2), d:chunk(3, 3), d:unbind(2) }) do
      for _, p in ipairs(pieces) do assert.are.equal("cuda:0", p:device()) end
    end
    exact(function(a) return table.unpack(a:split(2, 2)) end, { x })
    exact(function(a) return table.unpack(a:split({ 1, 3, 1 }, 3)) end, { x })
    exact(function(a) return table.unpack(a:chunk(2, 1)) end, { x:transpose(1, 3) })
    exact(function(a) return table.unpack(a:unbind(3)) end, { x })
  end)

  it("refuses tensors on two devices", function()
    local same = "expected all tensors to be on the same device, but found cuda:0 and cpu"
    H.raises("cat: " .. same, function() return graft.cat({ x:cuda(), x }) end)
    H.raises("stack: " .. same, function() return graft.stack({ x:cuda(), x }) end)
  end)
end)

C.describe("flip, roll, repeat, tile, triangles and diagonals on cuda", function()
  local x
  before_each(function()
    graft.manual_seed(12)
    x = graft.randn(3, 4, 5)
  end)

  it("flip and roll match, with negative and large shifts", function()
    exact(function(a) return a:flip(1, 3) end, { x })
    exact(function(a) return a:flip(-1) end, { x:transpose(1, 2) })
    exact(function(a) return a:roll(2, 3) end, { x })
    exact(function(a) return a:roll({ -1, 7 }, { 1, 2 }) end, { x:transpose(2, 3) })
    exact(function(a) return a:roll(4) end, { x })
    exact(function(a) return a:roll(-13) end, { x:transpose(1, 3) })
    for _, dt in ipairs(C.DTYPES) do
      exact(function(a) return a:flip(2) end, { as(x, dt) })
      exact(function(a) return a:roll(1, 1) end, { as(x, dt) })
    end
  end)

  it("repeat and tile match, adding dims", function()
    exact(function(a) return a:repeats(2, 1, 3) end, { x })
    exact(function(a) return a:repeats(2, 1, 1, 2) end, { x:transpose(1, 3) })
    exact(function(a) return a:tile(2) end, { x })
    exact(function(a) return a:tile({ 2, 2 }) end, { x:narrow(3, 2, 2) })
    exact(function(a) return a:repeats(1, 0, 1) end, { x })
    for _, dt in ipairs(C.DTYPES) do exact(function(a) return a:repeats(1, 2, 2) end, { as(x, dt) }) end
  end)

  it("tril and triu match for every k, batched, non-contiguous and in place", function()
    for _, k in ipairs({ 0, 1, -1, 3, -4, 10 }) do
      exact(function(a) return a:tril(k) end, { x })
      exact(function(a) return a:triu(k) end, { x:transpose(2, 3) })
    end
    exact(function(a)
      local c = a:clone()
      c:tril_(1)
      return c
    end, { graft.randn(6, 4) })
    exact(function(a)
      local c = a:clone()
      c:transpose(1, 2):triu_(-1)
      return c
    end, { graft.randn(2, 5, 3) })
    for _, dt in ipairs(C.DTYPES) do
      exact(function(a) return a:tril(-1) end, { as(x, dt) })
      exact(function(a) return a:triu(2) end, { as(x, dt) })
    end
    exact(function(a) return a:tril() end, { graft.zeros(0, 3) })
    H.raises("tril: expected a tensor with at least 2 dims, got 1", function() return graft.ones(3):cuda():tril() end)
  end)

  it("diag and diagonal match for both directions and offsets", function()
    for _, k in ipairs({ 0, 2, -1, -3 }) do
      exact(function(a) return a:diag(k) end, { graft.randn(4) })
      exact(function(a) return a:diag(k) end, { x[1] })
      exact(function(a) return a:diag(k) end, { x[2]:t() })
    end
    exact(function(a) return a:diag() end, { graft.randn(5):narrow(1, 2, 3) })
    for _, dt in ipairs(C.DTYPES) do exact(function(a) return a:diag(1) end, { as(graft.randn(3), dt) }) end
    exact(function(a) return a:diagonal() end, { x })
    exact(function(a) return a:diagonal(1, 2, 3) end, { x })
    exact(function(a) return a:diagonal(-1, 3, 1) end, { x:transpose(1, 2) })
  end)

  it("reshape and flatten copy non-viewable device tensors on the device", function()
    local d = x:cuda():transpose(1, 3)
    local r = d:reshape(5, 12)
    assert.are.equal("cuda:0", r:device())
    C.assert_match(r, x:transpose(1, 3):reshape(5, 12), C.EXACT)
    exact(function(a) return a:flatten() end, { x:transpose(1, 2) })
    exact(function(a) return a:reshape(-1, 3) end, { x:narrow(3, 1, 3) })
    exact(function(a) return a:contiguous():view(4, 3, 5) end, { x:transpose(1, 2) })
    exact(function(a) return a:expand(2, 3, 4, 5):reshape(6, 20) end, { x })
  end)
end)

C.describe("gradients of joining on cuda", function()
  local function leaf(...) return C.leaf(graft.randn(...):double()) end

  it("flow through cat, stack, flip, roll, repeat, tril/triu, diag and reshape", function()
    graft.manual_seed(13)
    C.check(function(a, b) return graft.cat({ a, b }, 2) end, { leaf(2, 3), leaf(2, 4) }, { grad = true })
    C.check(function(a, b) return graft.stack({ a, b }, 1) end, { leaf(2, 3), leaf(2, 3) }, { grad = true })
    C.check(function(a) return a:flip(1) end, { leaf(3, 4) }, { grad = true })
    C.check(function(a) return a:roll({ 1, -2 }, { 1, 2 }) end, { leaf(3, 4) }, { grad = true })
    C.check(function(a) return a:repeats(2, 3) end, { leaf(3, 4) }, { grad = true })
    C.check(function(a) return a:tril(-1) end, { leaf(4, 4) }, { grad = true })
    C.check(function(a) return a:triu(1) end, { leaf(2, 4, 3) }, { grad = true })
    C.check(function(a) return a:diag(1) end, { leaf(3) }, { grad = true })
    C.check(function(a) return a:diag(-1) end, { leaf(4, 4) }, { grad = true })
    C.check(function(a) return a:t():reshape(12) end, { leaf(3, 4) }, { grad = true })
  end)
end)
