-- The tensor core seen from Lua: creation, dtypes and conversions, views of storage,
-- copy/fill, printing, the generator, and errors. Golden values from PyTorch 1.13
-- (spec/fixtures/gen_tensor.py).
local graft = require("graft")
local H = require("spec.helpers")
local F = H.fixture("tensor")

local DTYPES = { "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool" }

describe("tensor creation", function()
  it("zeros, ones, full and empty take a shape as integers or a table, and a dtype", function()
    local z = graft.zeros(2, 3)
    assert.are.same({ 2, 3 }, z:shape())
    assert.are.equal("float32", z:dtype())
    assert.are.same({ { 0, 0, 0 }, { 0, 0, 0 } }, z:tolist())
    assert.are.same({ { 1, 1 } }, graft.ones({ 1, 2 }, { dtype = "int64" }):tolist())
    assert.are.equal("int64", graft.ones({ 1, 2 }, { dtype = "int64" }):dtype())
    assert.are.same({ 7, 7 }, graft.full({ 2 }, 7):tolist())
    assert.are.same({ 2, 0, 4 }, graft.empty(2, 0, 4):shape())
    assert.are.same({}, graft.zeros({}):shape())
    assert.are.equal(0, graft.zeros({}):item())
  end)

  it("full infers its dtype from the fill value as PyTorch does", function()
    assert.are.equal(F.full_int:gsub("torch.", ""), graft.full({ 2 }, 7):dtype())
    assert.are.equal(F.full_float:gsub("torch.", ""), graft.full({ 2 }, 7.5):dtype())
    assert.are.equal("bool", graft.full({ 2 }, true):dtype())
  end)

  it("creates every dtype, with the right element size", function()
    local sizes = { float32 = 4, float64 = 8, float16 = 2, bfloat16 = 2, int64 = 8, int32 = 4, int16 = 2,
      int8 = 1, uint8 = 1, bool = 1 }
    for _, d in ipairs(DTYPES) do
      local t = graft.ones(3, { dtype = d })
      assert.are.equal(d, t:dtype())
      assert.are.equal(sizes[d], t:element_size())
      local one = d == "bool" and true or 1
      assert.are.same({ one, one, one }, t:tolist())
    end
  end)

  it("accepts PyTorch's dtype aliases", function()
    assert.are.equal("float32", graft.zeros(1, { dtype = "float" }):dtype())
    assert.are.equal("float64", graft.zeros(1, { dtype = "double" }):dtype())
    assert.are.equal("float16", graft.zeros(1, { dtype = "half" }):dtype())
    assert.are.equal("int64", graft.zeros(1, { dtype = "long" }):dtype())
    assert.are.equal("int32", graft.zeros(1, { dtype = "int" }):dtype())
  end)

  it("arange, linspace and eye match PyTorch", function()
    assert.tensor_near(graft.arange(5), F.arange_5, { rtol = 0 })
    assert.tensor_near(graft.arange(1, 2, 0.25), F["arange_1_2_0.25"], { rtol = 0 })
    assert.tensor_near(graft.arange(10, 0, -3), F["arange_10_0_-3"], { rtol = 0 })
    assert.tensor_near(graft.linspace(0, 1, 7), F.linspace_0_1_7, { rtol = 0 })
    assert.tensor_near(graft.linspace(-3, 5, 4), F["linspace_-3_5_4"], { rtol = 0 })
    assert.tensor_near(graft.eye(2, 3), F.eye_2_3, { rtol = 0 })
  end)

  it("builds tensors from nested tables, inferring bool, int64 or float32", function()
    assert.are.equal("int64", graft.tensor({ 1, 2 }):dtype())
    assert.are.equal("float32", graft.tensor({ 1, 2.5 }):dtype())
    assert.are.equal("bool", graft.tensor({ true, false }):dtype())
    assert.are.equal("float32", graft.tensor({}):dtype())
    assert.are.same({ 2, 2, 1 }, graft.tensor({ { { 1 }, { 2 } }, { { 3 }, { 4 } } }):shape())
    assert.are.same({}, graft.tensor(5):shape())
    assert.are.same({ { 1.5, 2 } }, graft.tensor({ { 1.5, 2 } }, { dtype = "float64" }):tolist())
  end)

  it("the *_like forms keep shape and dtype unless told otherwise", function()
    local t = graft.ones(2, 3, { dtype = "float64" })
    for _, f in ipairs({ "zeros_like", "ones_like", "empty_like", "rand_like", "randn_like" }) do
      local u = graft[f](t)
      assert.are.same({ 2, 3 }, u:shape())
      assert.are.equal("float64", u:dtype())
    end
    assert.are.equal("int32", graft.zeros_like(t, { dtype = "int32" }):dtype())
    assert.are.same({ { 4, 4, 4 }, { 4, 4, 4 } }, graft.full_like(t, 4):tolist())
    local r = graft.randint_like(t, 3, 5):tolist()
    for _, row in ipairs(r) do for _, v in ipairs(row) do assert.is_true(v >= 3 and v < 5) end end
  end)

  it("copies a Lua string's bytes with frombuffer and back with tobytes", function()
    local t = graft.frombuffer(string.pack("<fff", 1.5, -2, 3), { dtype = "float32" })
    assert.are.same({ 1.5, -2, 3 }, t:tolist())
    assert.are.equal(string.pack("<fff", 1.5, -2, 3), t:tobytes())
    H.raises("frombuffer: 5 bytes is not a multiple of the float32 element size 4", graft.frombuffer, "abcde")
  end)
end)

describe("dtype conversion", function()
  it("rounds float32 to float16 and bfloat16 to nearest even, exactly as PyTorch", function()
    local src = H.T(F.f32)
    assert.tensor_near(src:half():float(), F.to_f16, { rtol = 0, atol = 0 })
    assert.tensor_near(src:bfloat16():float(), F.to_bf16, { rtol = 0, atol = 0 })
    assert.tensor_near(src:to("float16"):float(), F.to_f16, { rtol = 0, atol = 0 })
    assert.tensor_near(src:to({ dtype = "bfloat16" }):float(), F.to_bf16, { rtol = 0, atol = 0 })
  end)

  it("stores the exact float16 and bfloat16 bit patterns", function()
    local src = H.T(F.f32)
    local bits16 = { string.unpack(string.rep("<I2", src:numel()), src:half():tobytes()) }
    local bitsb = { string.unpack(string.rep("<I2", src:numel()), src:bfloat16():tobytes()) }
    for i = 1, src:numel() do
      assert.are.equal(F.f16_bits.data[i], bits16[i], "float16 bits of element " .. i)
      assert.are.equal(F.bf16_bits.data[i], bitsb[i], "bfloat16 bits of element " .. i)
    end
  end)

  it("truncates floats toward zero and wraps integers as PyTorch", function()
    local fl = H.T(F.float_src)
    for _, d in ipairs({ "int64", "int32", "int16", "int8" }) do
      assert.tensor_near(fl:to(d):long(), F["float_to_" .. d], { rtol = 0 })
    end
    local big = H.T(F.int_src)
    for _, d in ipairs({ "int32", "int16", "int8", "uint8" }) do
      assert.tensor_near(big:to(d):long(), F["int_to_" .. d], { rtol = 0 })
    end
    assert.tensor_near(graft.tensor({ 0.0, -0.0, 0.5, 0 / 0, -3.0 }):bool(), F.to_bool)
  end)

  it("converts between every pair of dtypes", function()
    local base = graft.tensor({ 0, 1, 2, 100 })
    for _, a in ipairs(DTYPES) do
      for _, b in ipairs(DTYPES) do
        local t = base:to(a):to(b)
        assert.are.equal(b, t:dtype())
        local want = a == "bool" or b == "bool" and { 0, 1, 1, 1 } or { 0, 1, 2, 100 }
        if a == "bool" then want = { 0, 1, 1, 1 } end
        assert.are.same(want, t:long():tolist(), a .. " -> " .. b)
      end
    end
  end)

  it("promotes dtype pairs with PyTorch's table", function()
    for key, want in pairs(F.promote) do
      local a, b = key:match("([^,]+),([^,]+)")
      assert.are.equal(want, graft.promote_types(a, b), key)
    end
  end)

  it("names an unknown dtype", function()
    H.raises('unknown dtype "float17"', graft.zeros, 2, { dtype = "float17" })
    H.raises('to: "bogus" is neither a dtype nor a device', graft.zeros(2).to, graft.zeros(2), "bogus")
  end)
end)

describe("storage, views and copies", function()
  it("views share storage and writes through them are seen by the base", function()
    local t = graft.zeros(3, 4)
    local row = t[2]
    assert.is_true(row:is_set_to(t))
    row:fill_(5)
    assert.are.same({ 0, 5, 0 }, graft.tensor({ t[1][1]:item(), t[2][3]:item(), t[3][4]:item() }):tolist())
    t[3][2] = 9
    assert.are.equal(9, t[3][2]:item())
    t[1] = graft.tensor({ 1, 2, 3, 4 })
    assert.are.same({ 1, 2, 3, 4 }, t[1]:tolist())
  end)

  it("clone copies; contiguous copies only when needed", function()
    local t = graft.arange(6):view(2, 3)
    local c = t:clone()
    assert.is_false(c:is_set_to(t))
    assert.is_true(t:contiguous():is_set_to(t))
    local tt = t:t()
    assert.is_false(tt:is_contiguous())
    local ct = tt:contiguous()
    assert.is_true(ct:is_contiguous())
    assert.are.same({ { 0, 3 }, { 1, 4 }, { 2, 5 } }, ct:tolist())
    assert.are.same({ 2, 1 }, ct:stride())
  end)

  it("copy_ converts dtypes, follows strides and broadcasts the source", function()
    local dst = graft.zeros(3, 2, { dtype = "float64" })
    dst:copy_(graft.arange(6):view(2, 3):t())
    assert.are.same({ { 0, 3 }, { 1, 4 }, { 2, 5 } }, dst:tolist())
    dst:copy_(graft.tensor({ 7, 8 }))
    assert.are.same({ { 7, 8 }, { 7, 8 }, { 7, 8 } }, dst:tolist())
    local tgt = graft.zeros(2, 3):t()
    tgt:copy_(graft.arange(6):view(3, 2))
    assert.are.same({ { 0, 2, 4 }, { 1, 3, 5 } }, tgt:t():tolist())
    H.raises("copy_: source of shape [4] cannot be broadcast to [3, 2]", dst.copy_, dst, graft.zeros(4))
  end)

  it("copies large strided tensors in parallel with the same result", function()
    local n = 300
    local a = graft.arange(n * n):view(n, n)
    local b = a:t():contiguous()
    assert.are.equal(a[7][123]:item(), b[123][7]:item())
    assert.are.equal(a[299][1]:item(), b[1][299]:item())
  end)

  it("reports sizes, strides, dims and numel", function()
    local t = graft.zeros(2, 3, 4)
    assert.are.equal(3, t:dim())
    assert.are.equal(24, t:numel())
    assert.are.equal(2, #t)
    assert.are.equal(4, t:size(-1))
    assert.are.equal(3, t:size(2))
    assert.are.same({ 12, 4, 1 }, t:stride())
    assert.are.equal("cpu", t:device())
    H.raises("size: dim 4 is out of range for a tensor with 3 dims", t.size, t, 4)
    H.raises("size: dim 0 is out of range", t.size, t, 0)
  end)

  it("item and tolist read values in their Lua types", function()
    assert.are.equal(math.type(graft.tensor(3):item()), "integer")
    assert.are.equal(math.type(graft.tensor(3.5):item()), "float")
    assert.are.equal(true, graft.tensor(true):item())
    H.raises("item: a tensor with 2 elements cannot be converted to a number", graft.zeros(2).item, graft.zeros(2))
  end)

  it("select errors name the index and the size", function()
    local t = graft.zeros(3)
    H.raises("select: index 4 is out of range for a dim of size 3", function() return t[4] end)
    H.raises("select: index 0 is out of range for a dim of size 3 (positions are 1-based; -1 is the last)",
      function() return t[0] end)
    H.raises("narrow: index 0 is out of range for a dim of size 3 (positions are 1-based", t.narrow, t, 1, 0, 2)
    assert.are.equal(0, t[-3]:item())
  end)

  it("__close releases the tensor at the end of the scope", function()
    H.no_leak(function()
      do
        local x <close> = graft.ones(4)
        assert.are.equal(4, x:numel())
      end
    end)
  end)
end)

describe("the generator", function()
  it("manual_seed makes random results reproducible", function()
    graft.manual_seed(42)
    local a, b = graft.rand(5):tolist(), graft.randn(3, { dtype = "float64" }):tolist()
    graft.manual_seed(42)
    assert.are.same(a, graft.rand(5):tolist())
    assert.are.same(b, graft.randn(3, { dtype = "float64" }):tolist())
    assert.are.equal(42, graft.initial_seed())
  end)

  it("get_rng_state and set_rng_state resume the stream", function()
    graft.manual_seed(1)
    graft.rand(3)
    local st = graft.get_rng_state()
    local a = graft.rand(4):tolist()
    graft.set_rng_state(st)
    assert.are.same(a, graft.rand(4):tolist())
  end)

  it("draws uniforms in [0, 1) with the right moments", function()
    graft.manual_seed(7)
    local u = graft.rand(20000):tolist()
    local s, s2, lo, hi = 0, 0, 1, 0
    for _, v in ipairs(u) do
      s = s + v; s2 = s2 + v * v
      lo = math.min(lo, v); hi = math.max(hi, v)
    end
    local mean = s / #u
    assert.is_true(lo >= 0 and hi < 1)
    assert.is_true(math.abs(mean - 0.5) < 0.01, "mean " .. mean)
    assert.is_true(math.abs(s2 / #u - mean * mean - 1 / 12) < 0.005)
  end)

  it("draws normals with mean 0 and variance 1", function()
    graft.manual_seed(8)
    local z = graft.randn(20000, { dtype = "float64" }):tolist()
    local s, s2 = 0, 0
    for _, v in ipairs(z) do s = s + v; s2 = s2 + v * v end
    local mean = s / #z
    assert.is_true(math.abs(mean) < 0.03, "mean " .. mean)
    assert.is_true(math.abs(s2 / #z - mean * mean - 1) < 0.05)
  end)

  it("randint stays in [low, high) and randperm is a permutation", function()
    graft.manual_seed(3)
    local r = graft.randint(2, 6, { 1000 }):tolist()
    local seen = {}
    for _, v in ipairs(r) do
      assert.is_true(v >= 2 and v < 6)
      seen[v] = true
    end
    assert.is_true(seen[2] and seen[3] and seen[4] and seen[5])
    local p = graft.randperm(50):tolist()
    table.sort(p)
    for i = 1, 50 do assert.are.equal(i - 1, p[i]) end
    H.raises("randint: expected low < high", graft.randint, 5, 5, { 3 })
  end)
end)

describe("printing", function()
  it("prints like PyTorch", function()
    for _, case in ipairs(F.prints) do
      local t = load("local graft = ...; return " .. case.lua)(graft)
      assert.are.equal(case.str, tostring(t), case.lua)
    end
  end)
end)

describe("threads and memory", function()
  it("sets and reads the thread count", function()
    local n = graft.get_num_threads()
    graft.set_num_threads(1)
    assert.are.equal(1, graft.get_num_threads())
    graft.set_num_threads(n)
    H.raises("set_num_threads: expected a positive count", graft.set_num_threads, 0)
  end)

  it("reuses freed large blocks from the cache", function()
    collectgarbage()
    local before = graft.memory_stats().hits
    for _ = 1, 5 do
      local t = graft.empty(1 << 20)
      t:close()
    end
    assert.is_true(graft.memory_stats().hits >= before + 4)
  end)
end)

describe("storage owners", function()
  it("maps a file's bytes as a tensor, copy-on-write", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(string.pack("<i8dddd", 0, 1.5, 2.5, 3.5, 4.5))
    f:close()
    local t = graft.from_file(path, { dtype = "float64", offset = 8 })
    assert.are.same({ 1.5, 2.5, 3.5, 4.5 }, t:tolist())
    t[1] = 100
    assert.are.equal(100, t[1]:item())
    -- the file is unchanged: a private mapping
    assert.are.same({ 1.5, 2.5 }, graft.from_file(path, { dtype = "float64", offset = 8, count = 2 }):tolist())
    -- an offset that is not a multiple of the element size still reads the right bytes
    local g = assert(io.open(path, "wb"))
    g:write(string.pack("<Bff", 7, 1.25, -2))
    g:close()
    assert.are.same({ 1.25, -2 }, graft.from_file(path, { offset = 1 }):tolist())
    H.raises("asked for 9", graft.from_file, path, { count = 9 })
    H.raises("offset 99 is beyond the end", graft.from_file, path, { offset = 99 })
    os.remove(path)
    H.raises("from_file: cannot open", graft.from_file, path)
  end)

  it("frees dead tensors when their C bytes pile up, without waiting for Lua's collector", function()
    collectgarbage()
    local base = graft.memory_stats().allocated
    for _ = 1, 60 do
      local _ = graft.empty(4 * 1024 * 1024) -- 16 MiB each, never closed
    end
    -- 60 x 16 MiB = 960 MiB were created; the pressure collection keeps far less alive
    assert.is_true(graft.memory_stats().allocated - base < 400 * 1024 * 1024)
  end)
end)
