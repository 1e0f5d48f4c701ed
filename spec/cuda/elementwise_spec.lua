-- Elementwise ops on CUDA against the CPU: every binary and unary op in every dtype
-- the CPU accepts (and the same errors where it refuses), strided, transposed, narrowed
-- and broadcast operands, scalars and 0-dim CPU tensors, alpha, in-place forms, clamp,
-- where, gradients, and device-mismatch errors that name the op.
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")

local BINARY = { "add", "sub", "mul", "div", "floor_divide", "pow", "maximum", "minimum", "remainder", "fmod",
  "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor" }
local UNARY = { "neg", "abs", "sign", "exp", "log", "log1p", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid",
  "reciprocal", "square", "floor", "ceil", "round", "trunc", "expm1", "log2", "log10", "relu", "isnan", "isinf",
  "isfinite", "logical_not" }

local function is_float(dt) return dt:find("float") ~= nil end

-- Operands of dtype dt and shape: a spread of values; `divisor` avoids zero, `exponent`
-- keeps integer powers small.
local function data(dt, shape, kind)
  if dt == "bool" then return graft.randint(0, 2, shape):to("bool") end
  if is_float(dt) then
    local x = graft.randn(shape) * 3
    if kind == "divisor" then x = graft.where(x:abs():lt(0.25), x:sign() + 0.5, x) end
    if kind == "exponent" then x = x:clamp(-2.5, 2.5) end
    if kind == "base" then x = x:abs() + 0.1 end
    return x:to(dt)
  end
  local lo, hi = -30, 30
  if dt == "uint8" then lo = 0 end
  if dt == "int8" then lo, hi = -128, 128 end
  if kind == "exponent" then lo, hi = 0, 4 end
  local x = graft.randint(lo, hi, shape)
  if kind == "divisor" then x = graft.where(x:eq(0), 3, x) end
  return x:to(dt)
end

-- fn on the CPU and on the device: the same results, or the same error.
local function match(fn, inputs, opts)
  local n = inputs.n or #inputs
  local ok, err = pcall(fn, table.unpack(inputs, 1, n))
  if ok then return C.check(fn, inputs, opts) end
  local dinputs = C.dev(inputs)
  local dok, derr = pcall(fn, table.unpack(dinputs, 1, n))
  assert.is_false(dok, "the CPU raised but the device did not: " .. tostring(err))
  assert.are.equal(tostring(err), tostring(derr))
end

local function binary_fn(op)
  return function(a, b) return a[op](a, b) end
end

C.describe("elementwise binary ops on cuda", function()
  before_each(function() graft.manual_seed(17) end)

  it("match the CPU for every op and dtype, or fail with the CPU's error", function()
    for _, dt in ipairs(C.DTYPES) do
      for _, op in ipairs(BINARY) do
        local kind = (op == "pow") and "exponent" or
            ((op == "div" or op == "floor_divide" or op == "remainder" or op == "fmod") and "divisor" or nil)
        local a = (op == "pow" and is_float(dt)) and data(dt, { 7, 9 }, "base") or data(dt, { 7, 9 })
        match(binary_fn(op), { a, data(dt, { 7, 9 }, kind) })
      end
    end
  end)

  it("round division by trunc and floor as the CPU", function()
    for _, dt in ipairs({ "float32", "float64", "float16", "int64", "int32", "int8" }) do
      local a, b = data(dt, { 5, 11 }), data(dt, { 5, 11 }, "divisor")
      match(function(x, y) return x:div(y, { rounding_mode = "trunc" }) end, { a, b })
      match(function(x, y) return x:div(y, { rounding_mode = "floor" }) end, { a, b })
    end
  end)

  it("take transposed, narrowed, expanded and broadcast operands", function()
    for _, dt in ipairs({ "float32", "float16", "int64", "bool" }) do
      local a, b = data(dt, { 6, 8 }), data(dt, { 8, 6 })
      local row, col = data(dt, { 8 }), data(dt, { 6, 1 })
      for _, op in ipairs({ "add", "mul", "maximum", "lt", "logical_xor" }) do
        match(function(x, y) return x[op](x, y:t()) end, { a, b })
        match(function(x, y) return x:narrow(2, 2, 5)[op](x:narrow(2, 3, 5), y:narrow(1, 1, 5):t()) end, { a, b })
        match(function(x, r) return x[op](x, r) end, { a, row })
        match(function(c, r) return c[op](c, r) end, { col, row })         -- [6, 1] with [8]
        match(function(r, x) return r:expand(6, 8)[op](r:expand(6, 8), x) end, { row, a })
      end
    end
  end)

  it("broadcast over four dims as batch norm does, with permuted operands", function()
    for _, dt in ipairs({ "float32", "float64", "int32" }) do
      local x, w = data(dt, { 2, 3, 4, 5 }), data(dt, { 1, 3, 1, 1 }, "divisor")
      local y = data(dt, { 5, 4, 3, 2 })
      match(function(a, c) return (a - c) * c, a:div(c), a:gt(c), c:expand(2, 3, 4, 5):maximum(a) end, { x, w })
      match(function(a, c) return a + c:reshape(3, 1, 1), a * c:reshape(3, 1, 1):narrow(1, 1, 1) end, { x, w })
      match(function(a, b) return a:permute(4, 3, 2, 1) + b, a:permute(2, 1, 4, 3):mul(b:permute(3, 4, 1, 2)) end, { y, x })
    end
  end)

  it("run long contiguous tensors through the vector path, aligned or not", function()
    for _, dt in ipairs({ "float32", "float16", "bfloat16", "float64", "int8", "int64" }) do
      local a, b = data(dt, { 2053 }), data(dt, { 2053 }, "divisor")
      match(function(x, y) return x + y, x:mul(y), x:gt(y) end, { a, b })
      -- one element in: misaligned for 16-byte vectors
      match(function(x, y) return x:narrow(1, 2, 2000) + y:narrow(1, 3, 2000) end, { a, b })
      match(function(x, y) return x:narrow(1, 2, 2000):eq(y:narrow(1, 2, 2000)) end, { a, b })
    end
  end)

  it("combine with Lua numbers and booleans, promoting as PyTorch", function()
    local f, i, h, bo = data("float32", { 4, 5 }), data("int64", { 4, 5 }), data("float16", { 4, 5 }), data("bool", { 4, 5 })
    local cases = {
      function(x) return x + 2, 2 - x, x * 2.5, x / 4, x // 3, x % 2.5, x ^ 2 end,
      function(x) return x:pow(0.5), x:pow(-1), x:pow(3), x:pow(-2), x:pow(-0.5), x:pow(1.7) end,
      function(x) return x:gt(0.5), x:eq(1), x:maximum(0), x:minimum(1.5), x:fmod(1.5), x:remainder(-2) end,
      function(x) return 3 / x, x:add(true), x:logical_and(1), x:ne(false) end,
    }
    for _, fn in ipairs(cases) do
      match(fn, { f:abs() + 0.5 })
      match(fn, { i })
      match(fn, { h:abs() + 0.5 })
      match(fn, { bo })
    end
    -- int tensor with a float scalar is float32; with an int scalar stays int64
    local d = C.dev(i)
    assert.are.equal("float32", (d * 1.5):dtype())
    assert.are.equal("int64", (d * 2):dtype())
    assert.are.equal("float16", (C.dev(h) + 1e-3):dtype())
  end)

  it("scale b by alpha in add and sub", function()
    local a, b = data("float32", { 3, 7 }), data("float32", { 3, 7 })
    match(function(x, y) return x:add(y, { alpha = 2.5 }), x:sub(y, { alpha = -0.75 }) end, { a, b })
    match(function(x, y) return x:add(y, { alpha = 3 }), x:sub(y, { alpha = 2 }) end,
      { data("int32", { 3, 7 }), data("int32", { 3, 7 }) })
    match(function(x, y) return x:add(y, { alpha = 0.1 }) end, { data("float16", { 3, 7 }), data("float16", { 3, 7 }) })
    match(function(x, y) return x:add(y, { alpha = 1.5 }) end, { data("int64", { 3 }), data("int64", { 3 }) })
    match(function(x, y) return x:add(y, { alpha = false }) end, { data("bool", { 9 }), data("bool", { 9 }) })
  end)

  it("treat a 0-dim CPU tensor as a scalar next to a CUDA tensor", function()
    local d = C.dev(data("float32", { 3, 4 }))
    local r = d + graft.tensor(2.5)
    assert.are.equal("cuda:0", r:device())
    assert.tensor_near(r:cpu(), d:cpu() + 2.5, C.EXACT)
    r = graft.tensor(2):mul(d)
    assert.are.equal("cuda:0", r:device())
    assert.tensor_near(r:cpu(), d:cpu() * 2, C.EXACT)
    -- a 0-dim tensor ranks above a number but below a dimensioned tensor
    local di = C.dev(data("int32", { 5 }))
    assert.are.equal("float64", (di + graft.tensor(1.5, { dtype = "float64" })):dtype()) -- a higher category
    assert.are.equal("int32", (di + graft.tensor(7)):dtype())
    assert.are.equal("float16", (C.dev(data("float16", { 5 })) * graft.tensor(3.0, { dtype = "float64" })):dtype())
    match(function(x, s) return x:sub(s), s:div(x), x:lt(s), x:maximum(s) end, { data("float64", { 6 }), graft.tensor(0.25) })
    -- in place into the CUDA tensor
    local e = d:clone()
    e:add_(graft.tensor(1))
    assert.tensor_near(e:cpu(), d:cpu() + 1, C.EXACT)
    -- two 0-dim tensors, one on each device
    local z = graft.tensor(3.0):cuda() + graft.tensor(4.0)
    assert.are.equal("cuda:0", z:device())
    assert.are.equal(7, z:item())
  end)

  it("write in place, into strided views too, as the CPU does", function()
    for _, dt in ipairs({ "float32", "float64", "float16", "int64", "int16" }) do
      local a, b = data(dt, { 5, 6 }), data(dt, { 6, 5 }, "divisor")
      match(function(x, y) local z = x:clone(); z:add_(y:t()); return z end, { a, b })
      match(function(x, y) local z = x:clone(); z:t():mul_(y); return z end, { a, b })
      match(function(x, y) local z = x:clone(); z:narrow(2, 2, 3):sub_(y:t():narrow(2, 1, 3), { alpha = 2 }); return z end,
        { a, b })
      match(function(x, y) local z = x:clone(); z:maximum_(y:t()); z:remainder_(3); return z end, { a, b })
      match(function(x) local z = x:clone(); z:mul_(z); z:add_(z:t():t()); return z end, { a })
    end
    -- a float result into an int tensor is refused; an int result widens into float
    match(function(x) local z = x:clone(); z:add_(1.5); return z end, { data("int64", { 4 }) })
    match(function(x, y) local z = x:clone(); z:add_(y); return z end, { data("float32", { 4 }), data("int64", { 4 }) })
    match(function(x, y) local z = x:clone(); z:div_(y); return z end, { data("float16", { 4 }), data("float32", { 4 }, "divisor") })
    match(function(x) local z = x:clone(); z:eq_(1); return z end, { data("int32", { 8 }) })
  end)

  it("raise ZeroDivisionError for integer division by zero", function()
    local i = C.dev(graft.tensor({ 4, -7, 9 }))
    for _, op in ipairs({ "floor_divide", "remainder", "fmod" }) do
      H.raises(op .. ": ZeroDivisionError", function() return i[op](i, 0) end)
      H.raises(op .. ": ZeroDivisionError", function() return i[op](i, C.dev(graft.tensor({ 1, 0, 2 }))) end)
    end
    H.raises("div: ZeroDivisionError", function() return i:div(C.dev(graft.tensor({ 1, 0, 2 })), { rounding_mode = "trunc" }) end)
    H.raises("floor_divide_: ZeroDivisionError", function() return i:clone():floor_divide_(0) end)
    -- float division by zero is inf, as on the CPU
    match(function(x) return x / 0, x // 0.0 end, { graft.tensor({ 1.0, -1.0, 0.0 }) })
  end)

  it("refuse tensors on different devices, naming the op", function()
    local d, c = C.dev(graft.ones(3)), graft.ones(3)
    H.raises("add: expected all tensors to be on the same device, but found cuda:0 and cpu", function() return d + c end)
    H.raises("mul: expected all tensors to be on the same device, but found cpu and cuda:0", function() return c * d end)
    H.raises("eq: expected all tensors to be on the same device", function() return d:eq(c) end)
    H.raises("add_: expected all tensors to be on the same device", function() return d:add_(c) end)
    -- a 0-dim CPU tensor written in place is not a scalar
    H.raises("add_: expected all tensors to be on the same device, but found cpu and cuda:0",
      function() return graft.tensor(1.0):add_(d) end)
    H.raises("where: expected all tensors to be on the same device", function() return graft.where(c:gt(0), d, d) end)
    H.raises("clamp: expected all tensors to be on the same device", function() return d:clamp(c, 2) end)
    H.raises("sub: subtraction, the `-` operator, with two bool tensors", function()
      local b = C.dev(graft.tensor({ true }))
      return b - b
    end)
  end)

  it("differentiate through the device", function()
    local a0, b0, row0 = data("float32", { 4, 5 }), data("float32", { 4, 5 }, "divisor"), data("float32", { 5 })
    -- fresh leaves per check: gradients accumulate
    local function leaf(t) return C.leaf(t:clone()) end
    C.check(function(x, y) return x * y + x / y - y end, { leaf(a0), leaf(b0) }, { grad = true })
    C.check(function(x, r) return (x + r) * r end, { leaf(a0), leaf(row0) }, { grad = true }) -- the row's gradient sums
    C.check(function(x, y) return x:maximum(y), x:minimum(y:t():t()) end, { leaf(a0), leaf(b0) }, { grad = true })
    C.check(function(x) return x:abs():add(0.5):pow(1.5), x:pow(2) end, { leaf(a0) }, { grad = true })
    C.check(function(x) return x:exp(), x:tanh(), x:sigmoid(), x:sin() end, { leaf(a0) }, { grad = true })
    C.check(function(x) return x:abs():add(0.1):log(), x:abs():add(0.1):sqrt(), x:relu() end, { leaf(a0) }, { grad = true })
  end)
end)

C.describe("elementwise unary ops on cuda", function()
  before_each(function() graft.manual_seed(23) end)

  local specials = graft.tensor({ 0.0, -0.0, 0.5, 1.5, 2.5, -2.5, -0.5, 0 / 0, math.huge, -math.huge, 1e-3, -7.25,
    3.75, 11, -30, 0.999 })

  it("match the CPU for every op and dtype, or fail with the CPU's error", function()
    for _, dt in ipairs(C.DTYPES) do
      local x = data(dt, { 6, 7 })
      if is_float(dt) then x = graft.cat({ x:reshape(-1), specials:to(dt) }) end
      for _, op in ipairs(UNARY) do
        match(function(t) return t[op](t) end, { x })
      end
    end
  end)

  it("take strided inputs and write in place", function()
    for _, dt in ipairs({ "float32", "float64", "bfloat16", "int32", "uint8", "bool" }) do
      local x = data(dt, { 5, 8 })
      for _, op in ipairs({ "neg", "abs", "exp", "floor", "relu", "isnan", "logical_not", "sign", "square" }) do
        match(function(t) return t:t()[op](t:t()), t:narrow(2, 2, 5)[op](t:narrow(2, 2, 5)) end, { x })
        if pcall(function() local c = x:clone(); return c[op .. "_"] and c[op .. "_"](c) end) then
          match(function(t) local c = t:clone(); c:t()[op .. "_"](c:t()); return c end, { x })
        end
      end
    end
    match(function(t) local c = t:clone(); c:exp_(); return c end, { data("int64", { 4 }) }) -- Float into Long: refused
  end)
end)

C.describe("clamp and where on cuda", function()
  before_each(function() graft.manual_seed(29) end)

  it("clamp with number bounds in every numeric dtype, NaN kept", function()
    for _, dt in ipairs({ "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8" }) do
      local x = data(dt, { 6, 7 })
      if is_float(dt) then x = graft.cat({ x:reshape(-1), graft.tensor({ 0 / 0, math.huge, -math.huge }):to(dt) }) end
      match(function(t) return t:clamp(-2, 5), t:clamp_min(1), t:clamp_max(3), t:clamp({ min = 0 }) end, { x })
      match(function(t) return t:t():clamp(-1.5, 2.5) end, { data(dt, { 4, 3 }) })   -- int with float bounds: float32
      match(function(t) local c = t:clone(); c:clamp_(0, 4); c:t():clamp_max_(2); return c end, { data(dt, { 4, 3 }) })
    end
    match(function(t) local c = t:clone(); c:clamp_(0.5); return c end, { data("int32", { 3 }) })  -- refused
    match(function(t) return t:clamp(true, false) end, { data("bool", { 3 }) })                   -- refused
  end)

  it("clamp with tensor bounds, broadcast, and 0-dim CPU bounds", function()
    local x, lo, hi = data("float32", { 4, 6 }), data("float32", { 6 }) - 1, data("float32", { 4, 1 }) + 1
    match(function(t, l, h) return t:clamp(l, h), t:clamp_min(l), t:clamp_max(h) end, { x, lo, hi })
    local d = C.dev(x)
    local r = d:clamp(graft.tensor(-0.5), graft.tensor(0.5))
    assert.are.equal("cuda:0", r:device())
    assert.tensor_near(r:cpu(), x:clamp(-0.5, 0.5), C.EXACT)
  end)

  it("where in every dtype, with tensors, numbers and broadcasting", function()
    for _, dt in ipairs(C.DTYPES) do
      local c, a, b = data("bool", { 5, 1 }), data(dt, { 1, 7 }), data(dt, { 5, 7 })
      match(function(m, x, y) return graft.where(m, x, y), graft.where(m:t():t(), y:t():t(), x) end, { c, a, b })
      match(function(m, x) return graft.where(m, x, 0), graft.where(m, 1, x), x:where(m, 2) end, { c, a })
      match(function(m, x, y) return graft.where(m:to("uint8"), x, y) end, { c, a, b })
    end
    -- mixed dtypes promote; a 0-dim CPU condition is a scalar
    match(function(m, x, y) return graft.where(m, x, y) end, { data("bool", { 6 }), data("int32", { 6 }), data("float16", { 6 }) })
    local d = C.dev(data("float32", { 6 }))
    local r = graft.where(graft.tensor(true), d, 0)
    assert.are.equal("cuda:0", r:device())
    assert.tensor_near(r:cpu(), d:cpu(), C.EXACT)
    H.raises("where: expected condition to be a boolean tensor", function() return graft.where(d, d, d) end)
  end)

  it("differentiate clamp and where", function()
    local x0, y0 = data("float64", { 5, 4 }), data("float64", { 4 })
    local function leaf(t) return C.leaf(t:clone()) end
    C.check(function(t) return t:clamp(-1, 1), t:clamp_min(0.5) end, { leaf(x0) }, { grad = true })
    C.check(function(t, u) return graft.where(t:gt(0), t, u), graft.where(t:lt(0), 0.5, t * u) end,
      { leaf(x0), leaf(y0) }, { grad = true })
  end)
end)
