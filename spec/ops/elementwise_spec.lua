-- Elementwise ops: binary (broadcasting, scalars on either side, every dtype), the
-- promotion grid, unary math, clamp, where, in-place variants, aliasing and errors.
-- Values against PyTorch 1.13 (spec/fixtures/gen_elementwise.py). Ops PyTorch rounds
-- exactly are compared exactly; transcendental ones within a few ulp of their dtype.
local graft = require("graft")
local H = require("spec.helpers")
local F = H.fixture("elementwise")

local EXACT = {}
for _, op in ipairs(F.exact) do EXACT[op] = true end

-- Tolerance for op's results in dtype: exact where PyTorch's result is correctly
-- rounded, else a few ulp (float16/bfloat16 within one ulp of theirs).
local function tol(op, dtype)
  if EXACT[op] then return { rtol = 0, atol = 0 } end
  if dtype == "float32" then return { rtol = 2e-6, atol = 1e-7 } end
  if dtype == "float64" then return { rtol = 1e-12, atol = 1e-14 } end
  if dtype == "float16" then return { rtol = 1e-3, atol = 1e-5 } end
  if dtype == "bfloat16" then return { rtol = 8e-3, atol = 1e-5 } end
  return { rtol = 0, atol = 0 }
end

local function input(dtype, which) return H.T(F.inputs[dtype][which]) end

-- The fixture ops as graft calls.
local BINARY = {
  div_trunc = function(a, b) return graft.div(a, b, { rounding_mode = "trunc" }) end,
  div_floor = function(a, b) return graft.div(a, b, { rounding_mode = "floor" }) end,
}
local function binary(op) return BINARY[op] or graft[op] end
local INPLACE = {
  div_trunc = function(a, b) return a:div_(b, { rounding_mode = "trunc" }) end,
  div_floor = function(a, b) return a:div_(b, { rounding_mode = "floor" }) end,
}
local function binary_(op) return INPLACE[op] or function(a, b) return a[op .. "_"](a, b) end end

-- Python's operators, as Lua metamethods (and functions where Lua has no operator).
local OPS = {
  add = function(a, b) return a + b end, sub = function(a, b) return a - b end,
  mul = function(a, b) return a * b end, div = function(a, b) return a / b end,
  pow = function(a, b) return a ^ b end, floor_divide = function(a, b) return a // b end,
  remainder = function(a, b) return a % b end, eq = graft.eq, lt = graft.lt,
  fmod = graft.fmod,
}

-- A non-contiguous view holding t's values (every other element of a wider tensor).
local function strided(t)
  local s = graft.stack({ t, t }, -1):select(-1, 1)
  assert.is_false(s:is_contiguous())
  return s
end

describe("binary elementwise ops", function()
  for op, per in pairs(F.binary) do
    it(op .. " matches PyTorch on every dtype, broadcast and strided", function()
      local fn = binary(op)
      for dtype, expected in pairs(per) do
        local a, b = input(dtype, "a"), input(dtype, "b")
        if expected == "error" then
          H.raises("", fn, a, b)
        else
          local t = tol(op, dtype)
          assert.tensor_near(fn(a, b), expected, t)
          local at = a:t():contiguous():t()
          assert.is_false(at:is_contiguous())
          assert.tensor_near(fn(at, b:expand(2, 4)), expected, t)
          assert.tensor_near(fn(strided(a), strided(b)), expected, t)
        end
      end
    end)
  end

  it("are methods too", function()
    local a, b = input("float32", "a"), input("float32", "b")
    assert.tensor_near(a:add(b), F.binary.add.float32, { rtol = 0 })
    assert.tensor_near(a:pow(b), F.binary.pow.float32, tol("pow", "float32"))
    assert.tensor_near(a:lt(b), F.binary.lt.float32)
    assert.tensor_near(a:subtract(b), F.binary.sub.float32, { rtol = 0 })
    assert.tensor_near(graft.true_divide(a, b), F.binary.div.float32, { rtol = 0 })
  end)

  it("take alpha for add and sub", function()
    local a, b = input("float32", "a"), input("float32", "b")
    local ai, bi = input("int64", "a"), input("int64", "b")
    assert.tensor_near(graft.add(a, b, { alpha = 2.5 }), F.alpha.add_f, { rtol = 0 })
    assert.tensor_near(a:sub(b, { alpha = 0.5 }), F.alpha.sub_f, { rtol = 0 })
    assert.tensor_near(graft.add(ai, bi, { alpha = 3 }), F.alpha.add_i, { rtol = 0 })
    assert.tensor_near(ai:sub(bi, { alpha = -2 }), F.alpha.sub_i, { rtol = 0 })
    assert.tensor_near(a:half():add(b:half(), { alpha = 2 }), F.alpha.add_h, { rtol = 0 })
    local c = a:clone()
    c:add_(b, { alpha = 2.5 })
    assert.tensor_near(c, F.alpha.add_f, { rtol = 0 })
  end)

  it("take Lua numbers and booleans on either side, as Python's operators", function()
    for _, c in ipairs(F.scalar) do
      local a = H.T(c.x or F.inputs[c.dtype].a)
      local fn = OPS[c.op]
      local x, y = a, c.s
      if c.side == "left" then x, y = c.s, a end
      if c.out == "error" then
        H.raises("", fn, x, y)
      else
        local ok, r = pcall(fn, x, y)
        assert(ok, ("%s %s %s %s: %s"):format(c.dtype, c.op, tostring(c.s), c.side, tostring(r)))
        local t = tol(c.op, c.out.dtype)
        local good, why = H.compare(r, c.out, t)
        assert(good, ("%s %s %s (%s): %s"):format(c.dtype, c.op, tostring(c.s), c.side, tostring(why)))
      end
    end
  end)

  it("wrap around at integer limits", function()
    for _, c in ipairs(F.wrap) do
      local x = H.T(c.x)
      local r = c.y and graft[c.op](x, H.T(c.y)) or graft[c.op](x)
      local good, why = H.compare(r, c.out, { rtol = 0, atol = 0 })
      assert(good, c.op .. " " .. c.x.dtype .. ": " .. tostring(why))
    end
  end)

  it("divide integers by zero with an error, floats to inf and nan", function()
    local i = graft.tensor({ 1, 2 })
    H.raises("floor_divide: ZeroDivisionError", graft.floor_divide, i, 0)
    H.raises("remainder: ZeroDivisionError", function() return i % graft.tensor({ 1, 0 }) end)
    H.raises("fmod_: ZeroDivisionError", function() return i:clone():fmod_(0) end)
    local q = i / 0
    assert.are.equal("float32", q:dtype())
    assert.are.same({ math.huge, math.huge }, q:tolist())
  end)
end)

describe("type promotion", function()
  it("follows torch.result_type for every pair of dtypes and dimension kinds", function()
    for _, g in ipairs(F.grid) do
      local x = graft.tensor({ 1, 0 }):to(g.a)
      local y = graft.tensor({ 1, 1 }):to(g.b)
      local y0 = graft.tensor(1):to(g.b)
      local x0 = graft.tensor(1):to(g.a)
      local what = g.a .. " with " .. g.b
      assert.are.equal(g.tt, graft.result_type(x, y), what)
      assert.are.equal(g.tz, graft.result_type(x, y0), what .. " (0-dim)")
      assert.are.equal(g.tz, graft.result_type(y0, x), what .. " (0-dim first)")
      assert.are.equal(g.zz, graft.result_type(x0, y0), what .. " (both 0-dim)")
      -- [1, 0] + [1, 1] is [2, 1] in the result type (true, true for bool)
      assert.tensor_near(x + y, graft.tensor({ 2, 1 }):to(g.tt), { rtol = 0 })
      assert.tensor_near(x + y0, graft.tensor({ 2, 1 }):to(g.tz), { rtol = 0 })
    end
  end)

  it("ranks Lua numbers below every tensor", function()
    for _, g in ipairs(F.sgrid) do
      local x = graft.tensor({ 1, 0 }):to(g.a)
      local x0 = graft.tensor(1):to(g.a)
      local what = g.a .. " with " .. tostring(g.s)
      assert.are.equal(g.t, graft.result_type(x, g.s), what)
      assert.are.equal(g.z, graft.result_type(x0, g.s), what .. " (0-dim)")
      assert.are.equal(g.t, graft.add(x, g.s):dtype(), what)
    end
  end)

  it("knows which casts in-place ops may make", function()
    assert.is_true(graft.can_cast("int64", "float16"))
    assert.is_false(graft.can_cast("float32", "int64"))
    assert.is_false(graft.can_cast("int8", "bool"))
    assert.is_true(graft.can_cast("bool", "uint8"))
  end)
end)

describe("unary elementwise ops", function()
  for op, per in pairs(F.unary) do
    it(op .. " matches PyTorch on every dtype", function()
      for dtype, expected in pairs(per) do
        local u = input(dtype, "u")
        if expected == "error" then
          H.raises("", graft[op], u)
          if u[op .. "_"] then H.raises("", u[op .. "_"], u:clone()) end
        else
          local t = tol(op, expected.dtype)
          assert.tensor_near(graft[op](u), expected, t)
          assert.tensor_near(u[op](u), expected, t)
          assert.tensor_near(graft[op](strided(u)), expected, t)
          local inplace = u[op .. "_"]
          if inplace then
            local c = u:clone()
            if graft.can_cast(expected.dtype, dtype) then
              assert.are.equal(c, inplace(c))
              assert.tensor_near(c, H.T(expected):to(dtype), t)
            else
              H.raises("can't be cast to the desired output type", inplace, c)
            end
          end
        end
      end
    end)
  end

  it("keep float32 accuracy on random values", function()
    local R = F.random
    local x, xp = H.T(R.x), H.T(R.xp)
    for _, op in ipairs({ "exp", "tanh", "sigmoid", "sin", "cos", "expm1" }) do
      assert.tensor_near(graft[op](x), R[op], { rtol = 2e-6, atol = 1e-7 })
    end
    for _, op in ipairs({ "log1p", "log", "log2", "log10", "sqrt", "rsqrt" }) do
      assert.tensor_near(graft[op](xp), R[op], { rtol = 2e-6, atol = 1e-7 })
    end
    assert.tensor_near(H.T(R.xe):exp(), R.exp_edges, { rtol = 2e-6, atol = 1e-44 })
    for _, e in ipairs({ 2, 3, 0.5, -0.5, -1, -2, 1.7 }) do
      assert.tensor_near(xp ^ e, R["pow_" .. tostring(e)], { rtol = 2e-6 })
    end
    assert.tensor_near(graft.pow(xp, x), R.pow_t, { rtol = 2e-6 })
  end)

  it("exp and tanh stay exact on large vectors (the vectorised paths)", function()
    local x = graft.linspace(-20, 20, 100003)
    local e = x:exp()
    local d = x:double():exp()
    assert.tensor_near(e, d:float(), { rtol = 3e-7, atol = 0 })
    assert.tensor_near(x:tanh(), x:double():tanh():float(), { rtol = 3e-7, atol = 1e-30 })
    assert.tensor_near(x:sigmoid(), x:double():sigmoid():float(), { rtol = 5e-7, atol = 1e-30 })
  end)
end)

describe("clamp", function()
  for dtype, c in pairs(F.clamp) do
    if dtype ~= "tensor" then
      it("clamps " .. dtype .. " like PyTorch (bounds promote, nil bounds, min > max)", function()
        local a = input(dtype, "a")
        local calls = {
          both = function() return graft.clamp(a, -1, 5) end,
          min = function() return a:clamp({ min = 2 }) end,
          max = function() return a:clamp(nil, 2) end,
          minf = function() return graft.clamp_min(a, 0.5) end,
          swap = function() return a:clip(5, -1) end,
          relu = function() return a:relu() end,
        }
        for k, fn in pairs(calls) do
          if c[k] == "error" then H.raises("", fn)
          else assert.tensor_near(fn(), c[k], { rtol = 0, atol = 0 }) end
        end
        if c.max ~= "error" then assert.tensor_near(graft.clamp_max(a, 2), c.max, { rtol = 0 }) end
        if c.both ~= "error" and graft.can_cast(c.both.dtype, dtype) then
          local x = a:clone()
          assert.are.equal(x, x:clamp_(-1, 5))
          assert.tensor_near(x, c.both, { rtol = 0 })
        end
      end)
    end
  end

  it("takes tensor bounds, broadcast", function()
    local a = input("float32", "a")
    local T = F.clamp.tensor
    assert.tensor_near(graft.clamp(a, H.T(T.lo), H.T(T.hi)), T.both, { rtol = 0 })
    assert.tensor_near(a:clamp({ min = input("float32", "b") }), T.min, { rtol = 0 })
    local x = a:clone()
    x:clamp_(H.T(T.lo), H.T(T.hi))
    assert.tensor_near(x, T.both, { rtol = 0 })
  end)
end)

describe("where", function()
  it("selects with broadcasting and promotes its two values", function()
    local W = F.where
    local c = H.T(W.c)
    local a, b = input("float32", "a"), input("float32", "b")
    local ai, bi = input("int64", "a"), input("int64", "b")
    assert.tensor_near(graft.where(c, a, b), W.ab, { rtol = 0 })
    assert.tensor_near(graft.where(c, a, 0), W.a0, { rtol = 0 })
    assert.tensor_near(graft.where(c, 1, 0), W.i10, { rtol = 0 })
    assert.tensor_near(graft.where(c, 1.0, 0), W.f10, { rtol = 0 })
    assert.tensor_near(graft.where(c, ai, 2.5), W["if"], { rtol = 0 })
    assert.tensor_near(graft.where(c, ai, bi), W.ib, { rtol = 0 })
    assert.tensor_near(graft.where(c, a, bi), W.fi, { rtol = 0 })
    assert.tensor_near(graft.where(c, a:half(), b:half()), W.h, { rtol = 0 })
    assert.tensor_near(a:where(c, b), W.ab, { rtol = 0 })
    assert.tensor_near(graft.where(strided(c:reshape(8)):reshape(2, 4), a, b), W.ab, { rtol = 0 })
  end)
end)

describe("in-place ops", function()
  it("give the out-of-place result cast back, or refuse the cast like PyTorch", function()
    for op, per in pairs(F.binary) do
      local fn = binary_(op)
      for dtype, expected in pairs(per) do
        local a, b = input(dtype, "a"), input(dtype, "b")
        local x = a:clone()
        if expected == "error" then
          H.raises("", fn, x, b)
        elseif graft.can_cast(expected.dtype, dtype) then
          assert.are.equal(x, fn(x, b))
          assert.tensor_near(x, H.T(expected):to(dtype), tol(op, dtype))
        else
          H.raises("can't be cast to the desired output type", fn, x, b)
        end
      end
    end
  end)

  it("write into strided tensors and mixed dtypes", function()
    local P = F.inplace
    local a, b = input("float32", "a"), input("float32", "b")
    local ai, bi = input("int64", "a"), input("int64", "b")
    local x = a:t():contiguous():t()
    x:add_(bi)
    assert.tensor_near(x, P.f_add_i, { rtol = 0 })
    x = input("int32", "a")
    x:add_(bi)
    assert.tensor_near(x, P.i32_add_i64, { rtol = 0 })
    x = a:half()
    x:mul_(b)
    assert.tensor_near(x, P.h_mul_f, { rtol = 0 })
    x = a:clone()
    x:lt_(b)
    assert.tensor_near(x, P.f_lt, { rtol = 0 })
    x = ai:clone()
    x:eq_(bi)
    assert.tensor_near(x, P.i_eq, { rtol = 0 })
    x = ai:clone()
    x:div_(bi, { rounding_mode = "floor" })
    assert.tensor_near(x, P.i_div_floor, { rtol = 0 })
    x = a:clone()
    x:logical_not_()
    assert.tensor_near(x, P.f_logical_not, { rtol = 0 })
  end)

  it("handle the output aliasing an input", function()
    local P = F.inplace
    local x = H.T(P.sq)
    x:add_(x)
    assert.tensor_near(x, P.sq_alias, { rtol = 0 })
    x = H.T(P.sq)
    x:mul_(x)
    assert.tensor_near(x, P.sq_pow, { rtol = 0 })
    x = H.T(P.sq)
    x:add_(x:t()) -- overlapping, not identical: read as if copied first
    assert.tensor_near(x, P.sq_t, { rtol = 0 })
    x = H.T(P.sq)
    local y = x:t()
    y:add_(y)
    assert.tensor_near(x, P.sq_alias, { rtol = 0 })
  end)

  it("bump the version counter and return self", function()
    local x = graft.ones(3)
    local y = x:exp_()
    assert.are.equal(x, y)
    assert.are.equal(x, x:neg_():add_(1):clamp_(0, 1))
  end)
end)

describe("metamethods", function()
  it("cover + - * / ^ // % and unary minus, not comparisons", function()
    local a, b = input("float32", "a"), input("float32", "b")
    assert.tensor_near(a + b, F.binary.add.float32, { rtol = 0 })
    assert.tensor_near(a - b, F.binary.sub.float32, { rtol = 0 })
    assert.tensor_near(a * b, F.binary.mul.float32, { rtol = 0 })
    assert.tensor_near(a / b, F.binary.div.float32, { rtol = 0 })
    assert.tensor_near(a // b, F.binary.floor_divide.float32, { rtol = 0 })
    assert.tensor_near(a % b, F.binary.remainder.float32, { rtol = 0 })
    assert.tensor_near(a ^ b, F.binary.pow.float32, tol("pow", "float32"))
    assert.tensor_near(-a, F.unary.neg.float32 and graft.neg(a), { rtol = 0 })
    local mt = getmetatable(a)
    assert.is_nil(rawget(mt, "__eq"))
    assert.is_nil(rawget(mt, "__lt"))
    assert.is_nil(rawget(mt, "__le"))
  end)
end)

describe("elementwise errors", function()
  local a = graft.zeros(2, 3)
  it("name the op and the problem, and leak nothing", function()
    H.raises("add: shapes [2, 3] and [4] cannot broadcast", graft.add, a, graft.zeros(4))
    H.raises("mul: shapes [2, 3] and [4] cannot broadcast", function() return a * graft.zeros(4) end)
    H.raises("add: expected a tensor or a number, got string", graft.add, a, "x")
    H.raises("add: expected a tensor or a number, got table", function() return a + {} end)
    H.raises("exp: expected a tensor, got number", graft.exp, 1)
    H.raises("add: expected at least one tensor", graft.add, 1, 2)
    H.raises("div_: result type Float can't be cast to the desired output type Long", function()
      return graft.tensor({ 1, 2 }):div_(2)
    end)
    H.raises("exp_: result type Float can't be cast to the desired output type Long", function()
      return graft.tensor({ 1, 2 }):exp_()
    end)
    H.raises("add_: output with shape [3] doesn't match the broadcast shape [2, 3]", function()
      return graft.zeros(3):add_(a)
    end)
    H.raises("more than one element of the written-to tensor", function()
      return graft.zeros(1):expand(3):add_(1)
    end)
    local bt = graft.tensor({ true, false })
    H.raises("sub: subtraction, the `-` operator, with two bool tensors is not supported", function()
      return bt - bt
    end)
    H.raises("sub: subtraction, the `-` operator, with a bool tensor is not supported", function()
      return 1 - bt
    end)
    H.raises("neg: negation, the `-` operator, on a bool tensor is not supported", function() return -bt end)
    H.raises("abs: not supported for bool", graft.abs, bt)
    H.raises("pow: not supported for bool", graft.pow, bt, bt)
    H.raises("relu: not supported for bool", graft.relu, bt)
    H.raises("pow: integers to negative integer powers are not allowed", graft.pow, graft.tensor({ 2 }), -1)
    H.raises("add: for integral input tensors, argument alpha must not be a floating point number",
      graft.add, graft.tensor({ 1 }), graft.tensor({ 1 }), { alpha = 0.5 })
    H.raises("add: boolean alpha only supported for boolean results",
      graft.add, graft.tensor({ 1 }), graft.tensor({ 1 }), { alpha = true })
    H.raises("where: expected condition to be a boolean tensor, but got a tensor with dtype float32",
      graft.where, a, a, a)
    H.raises("where: shapes", graft.where, graft.zeros(2, 3):lt(1), a, graft.zeros(4))
    H.raises("clamp: at least one of min or max must be given", graft.clamp, a)
    H.raises("div: rounding_mode must be", graft.div, a, a, { rounding_mode = "up" })
    H.raises("clamp_: result type Float can't be cast", function() return graft.tensor({ 1 }):clamp_(0.5, 2) end)
    local c = graft.ones(2)
    c:close()
    H.raises("add: tensor is closed", graft.add, c, 1)
  end)
end)

describe("large tensors", function()
  it("run in parallel with the same results as small ones", function()
    local n = 100000
    local x = graft.linspace(-3, 3, n)
    local y = graft.linspace(2, 5, n)
    local s = x + y
    local first = s:narrow(1, 1, 5)
    assert.tensor_near(first, x:narrow(1, 1, 5) + y:narrow(1, 1, 5), { rtol = 0 })
    local z = x:clone()
    z:mul_(y)
    assert.tensor_near(z, x * y, { rtol = 0 })
    assert.tensor_near(graft.maximum(x, y:narrow(1, 1, 1)), x:clamp_min(2), { rtol = 0 })
  end)
end)
