-- Joining, splitting and rearranging: cat, stack, split, chunk, unbind, flip, roll,
-- repeat/tile, tril/triu, diag, diagonal. Values against PyTorch 1.13
-- (spec/fixtures/gen_index.py); other dtypes are checked against the float32 result
-- converted (these ops only move elements).
local graft = require("graft")
local H = require("spec.helpers")
local F = H.fixture("index")
local J = F.join

local DTYPES = { "float32", "float64", "int64", "bool", "float16" }

local function exact(actual, expected, dtype)
  local e = H.T(expected)
  if dtype then e = e:to(dtype) end
  assert.tensor_near(actual, e, { rtol = 0, atol = 0 })
end
local function exact_list(actual, expected, dtype)
  assert.are.equal(#expected, #actual)
  for i = 1, #expected do exact(actual[i], expected[i], dtype) end
end

describe("cat and stack", function()
  local a, b, c, a2
  before_each(function()
    a, b, c, a2 = H.T(J.a), H.T(J.b), H.T(J.c), H.T(J.a2)
  end)

  it("cat joins along any dim, for every dtype, contiguous or not", function()
    for _, d in ipairs(DTYPES) do
      local ad, bd, cd = a:to(d), b:to(d), c:to(d)
      exact(graft.cat({ ad, bd, cd }, 2), J.cat_2, d)
      exact(graft.cat({ ad, bd, cd }, -1), J.cat_2, d)
      exact(graft.cat({ ad, graft.full({ 1, 3 }, 1.5):to(d) }), J.cat_1, d)
      exact(graft.cat({ ad:t(), cd:t() }, 1), J.cat_t, d)
      exact(graft.cat({ ad, bd, cd:t():contiguous():t() }, 2), J.cat_2, d)
    end
    exact(graft.concat({ a, b, c }, 2), J.cat_2)
  end)

  it("cat promotes dtypes across inputs and skips 1-D empty tensors, as PyTorch", function()
    exact(graft.cat({ graft.tensor({ 1, 2 }), graft.tensor({ 0.5, 1.5 }, { dtype = "float16" }), graft.tensor({ true }) }),
      J.cat_promote_f16)
    exact(graft.cat({ graft.tensor({ -1, 2 }, { dtype = "int8" }), graft.tensor({ 200 }, { dtype = "uint8" }) }),
      J.cat_promote_i16)
    exact(graft.cat({ a, graft.zeros(0) }), J.cat_legacy_empty)
    exact(graft.cat({ graft.zeros(0, 3), a }), J.cat_empty_rows)
    assert.are.same({ 0 }, graft.cat({ graft.zeros(0), graft.zeros(0, { dtype = "int64" }) }):shape())
    assert.are.same({ 2, 0 }, graft.cat({ graft.zeros(2, 0), graft.zeros(2, 0) }, 2):shape())
    assert.is_false(graft.cat({ a }):is_set_to(a))
  end)

  it("cat copies large contiguous inputs on the parallel path", function()
    local n = 50000
    local big = graft.arange(4 * n):reshape(n, 4)
    local r = graft.cat({ big, big:narrow(2, 1, 2) }, 2)
    assert.are.same({ n, 6 }, r:shape())
    assert.are.same({ 4 * n - 4, 4 * n - 3, 4 * n - 2, 4 * n - 1, 4 * n - 4, 4 * n - 3 }, r[n]:tolist())
    local s = graft.cat({ big, big }, 2)
    assert.are.same({ 4, 5, 6, 7, 4, 5, 6, 7 }, s[2]:tolist())
  end)

  it("stack adds a dim at any position, for every dtype", function()
    for _, d in ipairs(DTYPES) do
      local ad, a2d = a:to(d), a2:to(d)
      exact(graft.stack({ ad, a2d }), J.stack_1, d)
      exact(graft.stack({ ad, a2d }, 2), J.stack_2, d)
      exact(graft.stack({ ad, a2d }, 3), J.stack_3, d)
      exact(graft.stack({ ad, a2d:t():contiguous():t() }, -1), J.stack_3, d)
    end
    assert.are.same({ 1, 2 }, graft.stack({ graft.tensor(1), graft.tensor(2) }):tolist())
    assert.are.equal("float32", graft.stack({ graft.zeros(2), graft.zeros(2, { dtype = "int64" }) }):dtype())
  end)

  it("raise errors naming the op, and leak nothing", function()
    H.raises("cat: tensors must have the same number of dims, got 2 and 3",
      function() return graft.cat({ graft.zeros(2, 3), graft.zeros(2, 3, 1) }) end)
    H.raises("cat: sizes of tensors must match except in dim 1: got 3 and 4 in dim 2",
      function() return graft.cat({ graft.zeros(2, 3), graft.zeros(2, 4) }) end)
    H.raises("cat: sizes of tensors must match except in dim 2: got 2 and 3 in dim 1",
      function() return graft.cat({ graft.zeros(2, 3), graft.zeros(3, 4) }, 2) end)
    H.raises("cat: expected a non-empty list of tensors", function() return graft.cat({}) end)
    H.raises("cat: a 0-dim tensor (entry 2) cannot be concatenated", function() return graft.cat({ a, graft.tensor(1) }) end)
    H.raises("cat: dim 3 is out of range for a tensor with 2 dims", function() return graft.cat({ a, a }, 3) end)
    H.raises("cat: dim 0 is invalid", function() return graft.cat({ a, a }, 0) end)
    H.raises("cat: entry 2 of the list is a number, not a tensor", function() return graft.cat({ a, 5 }) end)
    H.raises("cat: expected a list of tensors, got a tensor", function() return graft.cat(a) end)
    H.raises("stack: expected each tensor to be equal size, but got [2, 3] at entry 1 and [2, 4] at entry 2",
      function() return graft.stack({ graft.zeros(2, 3), graft.zeros(2, 4) }) end)
    H.raises("stack: expected a non-empty list of tensors", function() return graft.stack({}) end)
    H.raises("stack: dim 4 is out of range", function() return graft.stack({ a, a }, 4) end)
  end)
end)

describe("split, chunk and unbind", function()
  local x
  before_each(function() x = H.T(F.x) end)

  it("return lists of views matching PyTorch", function()
    for _, d in ipairs(DTYPES) do
      local xd = x:to(d)
      exact_list(xd:split(3, -1), J.split_2, d)
      exact_list(xd:split({ 1, 2 }, 2), J.split_list, d)
      exact_list(xd:unbind(2), J.unbind_2, d)
    end
    exact_list(graft.arange(5):chunk(3), J.chunk_5_3)
    exact_list(graft.arange(6):chunk(4), J.chunk_6_4)
    exact_list(graft.split(x, 3, 3), J.split_2)
    for _, p in ipairs(x:split(3, -1)) do assert.is_true(p:is_set_to(x)) end
    for _, p in ipairs(x:chunk(2, 2)) do assert.is_true(p:is_set_to(x)) end
    for _, p in ipairs(x:unbind()) do assert.is_true(p:is_set_to(x)) end
    -- writes through a piece reach the base
    local z = graft.zeros(4)
    z:split(2)[2]:fill_(1)
    assert.are.same({ 0, 0, 1, 1 }, z:tolist())
  end)

  it("handle empty dims as PyTorch", function()
    assert.are.equal(1, #graft.zeros(0):split(2))
    assert.are.equal(1, #graft.zeros(0):split(0))
    assert.are.equal(3, #graft.zeros(0):chunk(3))
    assert.are.equal(5, #graft.zeros(5):chunk(7))
    assert.are.equal(0, #graft.zeros(0, 2):unbind())
    assert.are.same({ 0, 2 }, graft.zeros(5, 2):split({ 5, 0 })[2]:shape())
  end)

  it("raise errors naming the op, and leak nothing", function()
    H.raises("split: split sizes must sum to 3 (the size of dim 2), but they sum to 2", function() return x:split({ 1, 1 }, 2) end)
    H.raises("split: split_size can only be 0 if the dim's size is 0", function() return x:split(0) end)
    H.raises("split: split sizes must be non-negative", function() return x:split({ 4, -1 }, 2) end)
    H.raises("split: cannot split a 0-dim tensor", function() return graft.tensor(1):split(1) end)
    H.raises("chunk: chunks must be positive, got 0", function() return x:chunk(0) end)
    H.raises("chunk: dim 4 is out of range", function() return x:chunk(2, 4) end)
    H.raises("unbind: cannot unbind a 0-dim tensor", function() return graft.tensor(1):unbind() end)
  end)
end)

describe("flip, roll, repeat and tile", function()
  local x, y
  before_each(function() x, y = H.T(F.x), H.T(F.y) end)

  it("match PyTorch for every dtype and on non-contiguous inputs", function()
    for _, d in ipairs(DTYPES) do
      local xd = x:to(d)
      exact(xd:flip(1, 3), J.flip_13, d)
      exact(xd:flip({ -1, 1 }), J.flip_13, d)
      exact(xd:transpose(1, 3):flip(-1), J.flip_neg, d)
      exact(xd:roll(5), J.roll_flat, d)
      exact(xd:roll(-1, 2), J.roll_2, d)
      exact(xd:roll({ 1, 3 }, { 1, 3 }), J.roll_multi, d)
      exact(xd:transpose(1, 2):roll(-1, 1):transpose(1, 2), J.roll_2, d)
      exact(xd:repeats(2, 1, 1, 2), J["repeat"], d)
      exact(xd["repeat"](xd, { 2, 1, 1, 2 }), J["repeat"], d)
      exact(xd:tile(2), J.tile, d)
      exact(y:to(d):tile(2, 1, 1), J.tile_more, d)
    end
    exact(graft.tensor({ 1, 2, 3 }):repeats(2, 2), J.repeat_1d)
    exact(graft.flip(x, 1, 3), J.flip_13)
    assert.are.same({ 0, 3 }, graft.zeros(0, 3):roll(1, 1):shape())
    assert.are.same({ 0, 3 }, graft.zeros(0, 3):flip(1):shape())
    assert.are.same({ 2, 0 }, graft.zeros(1, 3):repeats(2, 0):shape())
    assert.are.same({ 2, 2 }, graft.tensor(7):repeats(2, 2):shape())
    assert.is_false(x:flip(1):is_set_to(x))
  end)

  it("raise errors naming the op, and leak nothing", function()
    H.raises("flip: dim 1 appears more than once", function() return x:flip(1, -3) end)
    H.raises("flip: dim 4 is out of range", function() return x:flip(4) end)
    H.raises("roll: shifts and dims must have the same length, got 2 and 1", function() return x:roll({ 1, 1 }, { 1 }) end)
    H.raises("roll: expected one shift when no dims are given, got 2", function() return x:roll({ 1, 2 }) end)
    H.raises("repeat: got 1 repeat counts for a tensor with 3 dims", function() return x:repeats(2) end)
    H.raises("repeat: repeat counts must be non-negative, got -1", function() return x:repeats(2, -1, 1) end)
  end)
end)

describe("tril, triu, diag and diagonal", function()
  local x, y
  before_each(function() x, y = H.T(F.x), H.T(F.y) end)

  it("tril and triu keep a triangle from diagonal k, batched, for every dtype", function()
    for _, d in ipairs(DTYPES) do
      local yd = y:to(d)
      exact(yd:tril(), J.tril, d)
      exact(yd:tril(-1), J.tril_neg, d)
      exact(yd:triu(2), J.triu_2, d)
      exact(x:to(d):tril(1), J.tril_batch, d)
      exact(yd:t():triu(), J.triu_t, d)
    end
    local z = y:clone()
    assert.are.equal(z, z:tril_(-1))
    exact(z, J.tril_neg)
    local base = y:t():contiguous() -- [5, 4]; base:t() is y, not contiguous
    base:t():triu_()
    exact(base:t(), graft.triu(y))
    assert.are.same({ 0, 3 }, graft.zeros(0, 3):tril():shape())
  end)

  it("diag builds or reads diagonals; diagonal is a view", function()
    for _, d in ipairs(DTYPES) do
      exact(graft.tensor({ 1.0, 2.0, 3.0 }):to(d):diag(), J.diag_vec, d)
      exact(graft.tensor({ 1.0, 2.0, 3.0 }):to(d):diag(-1), J.diag_vec_neg, d)
      exact(y:to(d):diag(1), J.diag_mat, d)
      exact(y:to(d):diag(-2), J.diag_mat_neg, d)
    end
    exact(x:diagonal(), J.diagonal)
    exact(x:diagonal(1, 1, 3), J.diagonal_off)
    assert.is_true(x:diagonal():is_set_to(x))
    assert.are.same({ 0 }, y:diag(9):shape())
    local z = graft.zeros(3, 3)
    z:diagonal():fill_(1)
    assert.are.same({ { 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, 1 } }, z:tolist())
  end)

  it("raise errors naming the op, and leak nothing", function()
    H.raises("tril: expected a tensor with at least 2 dims, got 1", function() return graft.zeros(3):tril() end)
    H.raises("triu_: expected a tensor with at least 2 dims, got 0", function() return graft.tensor(1):triu_() end)
    H.raises("diag: expected a 1-D or 2-D tensor, got 3 dims", function() return x:diag() end)
    H.raises("diagonal: the two dims must differ, both are 2", function() return x:diagonal(0, 2, -2) end)
    H.raises("diagonal: expected a tensor with at least 2 dims", function() return graft.zeros(3):diagonal() end)
  end)
end)
