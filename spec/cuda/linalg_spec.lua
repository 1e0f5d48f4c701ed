-- Matrix products on CUDA (cuBLAS; the emulator's host cuBLAS under `make test`):
-- every product of the matmul family against the CPU, in every floating dtype, with
-- transposed, strided and broadcast operands, gradients, TF32 switches and errors.
local graft = require("graft")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")

local function rnd(...)
  return graft.randn(...)
end

C.describe("matmul on cuda", function()
  it("matches the CPU for every rank combination", function()
    local cases = {
      { { 7 }, { 7 } },                 -- dot
      { { 3, 7 }, { 7 } },              -- matrix-vector
      { { 7 }, { 7, 4 } },              -- vector-matrix
      { { 3, 7 }, { 7, 4 } },           -- mm
      { { 2, 3, 7 }, { 7, 4 } },        -- batched x 2-D (folded into one product)
      { { 7 }, { 2, 7, 4 } },           -- vector x batched
      { { 2, 3, 7 }, { 7 } },           -- batched x vector
      { { 2, 1, 3, 7 }, { 5, 7, 4 } },  -- broadcast batch dims
      { { 3, 7 }, { 2, 7, 4 } },        -- 2-D x batched (a broadcast over the batch)
    }
    for _, c in ipairs(cases) do
      C.check(graft.matmul, { rnd(table.unpack(c[1])), rnd(table.unpack(c[2])) })
    end
  end)

  it("runs every floating dtype (16-bit accumulated in float32)", function()
    for _, dt in ipairs(C.FLOATS) do
      C.check(graft.matmul, { rnd(2, 5, 9):to(dt), rnd(9, 6):to(dt) })
      C.check(graft.matmul, { rnd(3, 4, 9):to(dt), rnd(3, 9, 2):to(dt) })
    end
  end)

  it("reads transposed, strided and expanded operands", function()
    local a, b = rnd(6, 5), rnd(4, 6)
    C.check(function(x, y) return graft.matmul(x:t(), y:t()) end, { a, b })          -- both transposed
    local big = rnd(8, 10)
    C.check(function(x) return graft.matmul(x:narrow(2, 2, 6), x:narrow(1, 1, 6):narrow(2, 3, 4)) end, { big }) -- row strides
    C.check(function(x) return graft.matmul(x:narrow(2, 1, 5):t(), x:narrow(2, 6, 5)) end, { big })
    local s = rnd(5, 12)
    C.check(function(x, y) return graft.matmul(x[{ {}, { 1, 12, 2 } }], y) end, { s, rnd(6, 3) }) -- column step 2
    C.check(function(x, y) return graft.matmul(x:expand(3, 4, 5), y) end, { rnd(1, 4, 5), rnd(3, 5, 2) })
    C.check(function(x, y) return graft.matmul(x, y:expand(2, 3, 5, 4)) end, { rnd(2, 3, 6, 5), rnd(3, 5, 4) })
    C.check(function(x, y) return graft.matmul(x:transpose(2, 3), y:transpose(1, 2)) end, { rnd(2, 5, 3), rnd(4, 5) })
  end)

  it("gives the empty product for an inner size of 0", function()
    C.check(graft.matmul, { graft.zeros(3, 0), graft.zeros(0, 4) })
    C.check(graft.matmul, { graft.zeros(2, 3, 0), graft.zeros(2, 0, 4) })
    C.check(graft.matmul, { graft.zeros(0, 3), rnd(3, 4) })
  end)

  it("differentiates like the CPU", function()
    C.check(graft.matmul, { C.leaf(3, 5), C.leaf(5, 4) }, { grad = true })
    C.check(graft.matmul, { C.leaf(2, 3, 5), C.leaf(5, 4) }, { grad = true })
    C.check(graft.matmul, { C.leaf(2, 1, 3, 5), C.leaf(4, 5, 2) }, { grad = true })
    C.check(graft.matmul, { C.leaf(5), C.leaf(5, 4) }, { grad = true })
    C.check(graft.matmul, { C.leaf(5), C.leaf(5) }, { grad = true })
  end)

  it("refuses integer products and mixed devices, naming the op", function()
    local a = graft.ones(2, 2, { dtype = "int64" }):cuda()
    H.raises("matmul: not implemented for int64 tensors on CUDA", graft.matmul, a, a)
    H.raises("mm: expected all tensors to be on the same device, but found cuda:0 and cpu", graft.mm,
      rnd(2, 2):cuda(), rnd(2, 2))
    H.raises("matmul: expected all tensors to be on the same device, but found cpu and cuda:0", graft.matmul,
      rnd(2, 2), rnd(2, 2):cuda())
    H.raises("addmm: expected all tensors to be on the same device", graft.addmm, rnd(2), rnd(2, 2):cuda(),
      rnd(2, 2):cuda())
    H.raises("matmul: expected scalar type float32 but found float64", graft.matmul, rnd(2, 2):cuda(),
      rnd(2, 2):double():cuda())
    H.raises("inner dimensions 3 and 4 differ", graft.matmul, rnd(2, 3):cuda(), rnd(4, 2):cuda())
  end)
end)

C.describe("mm, bmm, mv, dot, outer on cuda", function()
  it("match the CPU in every floating dtype", function()
    for _, dt in ipairs(C.FLOATS) do
      C.check(graft.mm, { rnd(4, 6):to(dt), rnd(6, 3):to(dt) })
      C.check(graft.bmm, { rnd(3, 4, 6):to(dt), rnd(3, 6, 2):to(dt) })
      C.check(graft.mv, { rnd(4, 6):to(dt), rnd(6):to(dt) })
      C.check(graft.dot, { rnd(9):to(dt), rnd(9):to(dt) })
      C.check(graft.outer, { rnd(4):to(dt), rnd(5):to(dt) })
    end
  end)

  it("read non-contiguous operands", function()
    C.check(function(x, y) return graft.bmm(x:transpose(2, 3), y) end, { rnd(3, 6, 4), rnd(3, 6, 2) })
    C.check(function(x, y) return graft.bmm(x, y:transpose(1, 2):transpose(2, 3)) end, { rnd(4, 2, 5), rnd(3, 4, 5) })
    C.check(function(x, y) return graft.mv(x:t(), y:narrow(1, 2, 4)) end, { rnd(4, 3), rnd(6) })
    C.check(function(x, y) return graft.dot(x[{ { 1, 10, 3 } }], y:narrow(1, 1, 4)) end, { rnd(10), rnd(5) })
    C.check(function(x, y) return graft.outer(x[{ { 1, 6, 2 } }], y:expand(4)) end, { rnd(6), rnd(1) })
    C.check(function(x, y) return graft.bmm(x:expand(3, 2, 4), y) end, { rnd(1, 2, 4), rnd(3, 4, 5) })
  end)

  it("promote outer's dtypes as the CPU", function()
    C.check(graft.outer, { rnd(3), rnd(4):double() })
    C.check(graft.outer, { rnd(3):half(), rnd(4) })
  end)

  it("differentiate like the CPU", function()
    C.check(graft.mm, { C.leaf(3, 5), C.leaf(5, 4) }, { grad = true })
    C.check(function(a, w) return graft.mm(a, w:t()) end, { C.leaf(3, 5), C.leaf(4, 5) }, { grad = true })
    C.check(graft.bmm, { C.leaf(2, 3, 5), C.leaf(2, 5, 4) }, { grad = true })
    C.check(graft.mv, { C.leaf(3, 5), C.leaf(5) }, { grad = true })
    C.check(graft.dot, { C.leaf(5), C.leaf(5) }, { grad = true })
    C.check(graft.outer, { C.leaf(3), C.leaf(4) }, { grad = true })
  end)

  it("check shapes and devices with the op's name", function()
    H.raises("bmm: batch sizes 2 and 3 differ", graft.bmm, rnd(2, 2, 2):cuda(), rnd(3, 2, 2):cuda())
    H.raises("outer: expected all tensors to be on the same device", graft.outer, rnd(2):cuda(), rnd(2))
    H.raises("dot: expected all tensors to be on the same device", graft.dot, rnd(2):cuda(), rnd(2))
    H.raises("mv: expected all tensors to be on the same device", graft.mv, rnd(2, 2):cuda(), rnd(2))
    H.raises("bmm: not implemented for int32 tensors on CUDA", graft.bmm, graft.ones(1, 2, 2, { dtype = "int32" }):cuda(),
      graft.ones(1, 2, 2, { dtype = "int32" }):cuda())
  end)
end)

C.describe("addmm and baddbmm on cuda", function()
  it("match the CPU with beta, alpha and a broadcast input", function()
    for _, dt in ipairs(C.FLOATS) do
      C.check(function(i, a, b) return graft.addmm(i, a, b, { beta = 0.5, alpha = 2 }) end,
        { rnd(3):to(dt), rnd(4, 5):to(dt), rnd(5, 3):to(dt) })
      C.check(function(i, a, b) return graft.baddbmm(i, a, b, { beta = -1, alpha = 0.25 }) end,
        { rnd(4, 1):to(dt), rnd(2, 4, 5):to(dt), rnd(2, 5, 3):to(dt) })
    end
    C.check(graft.addmm, { rnd(4, 3), rnd(5, 4):t(), rnd(3, 5):t() })
  end)

  it("ignore the input entirely when beta is 0 (NaN included)", function()
    local nan = graft.full({ 2, 3 }, 0 / 0)
    C.check(function(i, a, b) return graft.addmm(i, a, b, { beta = 0 }) end, { nan, rnd(2, 4), rnd(4, 3) })
  end)

  it("scale the input for an empty inner size", function()
    C.check(function(i, a, b) return graft.addmm(i, a, b, { beta = 3 }) end, { rnd(2, 3), graft.zeros(2, 0), graft.zeros(0, 3) })
    C.check(function(i, a, b) return graft.baddbmm(i, a, b, { beta = 0 }) end,
      { graft.full({ 2, 2, 3 }, 0 / 0), graft.zeros(2, 2, 0), graft.zeros(2, 0, 3) })
    C.check(function(i, a, b) return graft.addmm(i, a, b, { beta = -2 }) end,
      { rnd(2, 3):bfloat16(), graft.zeros(2, 0):bfloat16(), graft.zeros(0, 3):bfloat16() })
  end)

  it("differentiate like the CPU", function()
    C.check(function(i, a, b) return graft.addmm(i, a, b, { beta = 0.5, alpha = 2 }) end,
      { C.leaf(3), C.leaf(4, 5), C.leaf(5, 3) }, { grad = true })
    C.check(function(i, a, b) return graft.baddbmm(i, a, b, { alpha = 3 }) end,
      { C.leaf(2, 4, 3), C.leaf(2, 4, 5), C.leaf(2, 5, 3) }, { grad = true })
  end)
end)

C.describe("linear, bilinear and attention on cuda", function()
  local F = graft.F
  it("linear matches the CPU for 1-D, 2-D and batched inputs, with and without bias", function()
    for _, dt in ipairs(C.FLOATS) do
      C.check(F.linear, { rnd(4, 6):to(dt), rnd(3, 6):to(dt), rnd(3):to(dt) })
      C.check(F.linear, { rnd(2, 5, 6):to(dt), rnd(3, 6):to(dt) })
    end
    C.check(F.linear, { rnd(6), rnd(3, 6), rnd(3) })
    C.check(function(x, w, b) return F.linear(x:transpose(1, 2), w, b) end, { rnd(6, 4), rnd(3, 6), rnd(3) })
  end)

  it("linear differentiates like the CPU", function()
    C.check(F.linear, { C.leaf(4, 6), C.leaf(3, 6), C.leaf(3) }, { grad = true })
    C.check(F.linear, { C.leaf(2, 4, 6), C.leaf(3, 6), C.leaf(3) }, { grad = true })
  end)

  it("bilinear matches the CPU", function()
    C.check(F.bilinear, { C.leaf(4, 3), C.leaf(4, 5), C.leaf(2, 3, 5), C.leaf(2) }, { grad = true })
  end)

  it("scaled_dot_product_attention matches the CPU (masks, causal, 16-bit)", function()
    local q, k, v = rnd(2, 3, 5, 4), rnd(2, 3, 6, 4), rnd(2, 3, 6, 7)
    C.check(F.scaled_dot_product_attention, { q, k, v })
    C.check(function(a, b, c) return F.scaled_dot_product_attention(a, b, c, { is_causal = true }) end,
      { rnd(2, 5, 4), rnd(2, 5, 4), rnd(2, 5, 3) })
    local mask = graft.rand(5, 6):gt(0.3)
    mask[{ {}, 1 }] = true
    C.check(function(a, b, c, m) return F.scaled_dot_product_attention(a, b, c, { attn_mask = m }) end, { q, k, v, mask })
    C.check(function(a, b, c, m) return F.scaled_dot_product_attention(a, b, c, { attn_mask = m }) end,
      { q, k, v, rnd(5, 6) })
    C.check(F.scaled_dot_product_attention, { q:bfloat16(), k:bfloat16(), v:bfloat16() })
  end)

  it("scaled_dot_product_attention differentiates like the CPU", function()
    C.check(function(a, b, c) return F.scaled_dot_product_attention(a, b, c, { is_causal = true }) end,
      { C.leaf(2, 4, 3), C.leaf(2, 4, 3), C.leaf(2, 4, 5) }, { grad = true })
  end)

  it("name the op when devices differ", function()
    H.raises("linear: expected all tensors to be on the same device", F.linear, rnd(2, 3):cuda(), rnd(4, 3))
    H.raises("scaled_dot_product_attention: expected all tensors to be on the same device",
      F.scaled_dot_product_attention, rnd(2, 3):cuda(), rnd(2, 3), rnd(2, 3))
  end)
end)

C.describe("TF32 switches", function()
  it("default off for matmul (as PyTorch) and for convolutions (PyTorch: on)", function()
    assert.is_false(graft.backends.cuda.matmul.allow_tf32)
    assert.is_false(graft.backends.cudnn.allow_tf32)
    assert.are.equal("highest", graft.get_float32_matmul_precision())
  end)

  it("switch float32 products to TF32 and back", function()
    local a, b = rnd(16, 32), rnd(32, 8)
    graft.backends.cuda.matmul.allow_tf32 = true
    assert.is_true(graft.backends.cuda.matmul.allow_tf32)
    assert.are.equal("high", graft.get_float32_matmul_precision())
    -- TF32 keeps 10 mantissa bits: 5e-3 fails ~1% of random draws on a GPU
    local ok, err = pcall(C.check, graft.matmul, { a, b }, { rtol = 1e-2, atol = 1e-2 })
    graft.backends.cuda.matmul.allow_tf32 = false
    assert(ok, err)
    graft.set_float32_matmul_precision("medium")
    assert.is_true(graft.backends.cuda.matmul.allow_tf32)
    graft.set_float32_matmul_precision("highest")
    assert.is_false(graft.backends.cuda.matmul.allow_tf32)
    H.raises("invalid option 'low'", graft.set_float32_matmul_precision, "low")
    H.raises("boolean expected", function() graft.backends.cuda.matmul.allow_tf32 = 1 end)
  end)

  it("switch float32 convolutions to TF32 and back", function()
    graft.backends.cudnn.allow_tf32 = true
    assert.is_true(graft.backends.cudnn.allow_tf32)
    local ok, err = pcall(C.check, function(x, w) return graft.F.conv2d(x, w, nil, { padding = 1 }) end,
      { rnd(2, 3, 6, 6), rnd(4, 3, 3, 3) }, { rtol = 1e-2, atol = 1e-2 })
    graft.backends.cudnn.allow_tf32 = false
    assert(ok, err)
  end)
end)

C.describe("large products on cuda", function()
  it("match the CPU beyond a single tile", function()
    C.check(graft.matmul, { rnd(70, 130), rnd(130, 90) }, { rtol = 1e-4, atol = 1e-4 })
    C.check(graft.matmul, { rnd(3, 40, 70):half(), rnd(70, 33):half() }, { rtol = 2e-2, atol = 2e-2 })
  end)
end)
