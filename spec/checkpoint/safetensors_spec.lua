-- safetensors: reading the fixtures written by spec/fixtures/ckpt_st/gen_st.py (a
-- hand-written writer, as the reference one), every hostile file, graft's own writer,
-- and the files graft writes read back by the generator's independent reader.
local graft = require("graft")
require("graft.checkpoint")
local H = require("spec.helpers")

local DIR = "spec/fixtures/ckpt_st/"
local E = H.fixture("ckpt_st/expected")

local function tmpfile(ext)
  local p = os.tmpname()
  os.remove(p)
  return p .. (ext or ".safetensors")
end

local function read_bytes(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write_bytes(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function check_valid(name)
  local exp = E.valid[name]
  local sd, info = graft.load(DIR .. name .. ".safetensors")
  assert.are.same(exp.names, sd:keys())
  for _, k in ipairs(exp.names) do
    assert.tensor_near(sd[k], exp.tensors[k], { rtol = 0, atol = 0 })
  end
  assert.are.equal("safetensors", info.format)
  if exp.metadata then
    for k, v in pairs(exp.metadata) do assert.are.equal(v, info.metadata[k]) end
    assert.are.equal(#info.metadata, (function()
      local n = 0
      for _ in pairs(exp.metadata) do n = n + 1 end
      return n
    end)())
  else
    assert.are.equal(0, #info.metadata)
  end
  return sd, info
end

describe("safetensors reading", function()
  it("reads every dtype, 0-dim, empty and special values, in the header's order, with metadata", function()
    local sd, info = check_valid("all_dtypes")
    assert.are.same({}, sd.scalar:shape())
    assert.are.same({ 0, 3 }, sd.empty:shape())
    assert.are.equal(42, sd.count:item())
    assert.are.equal(math.tointeger(2 ^ 62), sd["i.i64"][4]:item())
    -- every non-empty tensor is mapped (the reference layout is aligned)
    assert.are.equal(13, info.mapped)
  end)

  it("copies tensors whose bytes are not aligned for their dtype", function()
    local sd, info = check_valid("unaligned")
    assert.are.equal(1, info.mapped) -- only the uint8 tensor
    assert.is_true(sd.a:is_contiguous())
  end)

  it("decodes escaped names, skips unknown fields and accepts null metadata", function()
    check_valid("escapes")
  end)

  it("reads a file with no tensors", function()
    local sd = check_valid("empty")
    assert.are.equal(0, #sd)
  end)

  it("maps privately: changing a loaded tensor never changes the file", function()
    local path = tmpfile()
    graft.save({ w = graft.arange(8, { dtype = "float32" }) }, path)
    local before = read_bytes(path)
    local sd = graft.load(path)
    sd.w:fill_(7)
    assert.are.equal(7, sd.w[3]:item())
    assert.are.equal(before, read_bytes(path))
    local again = graft.load(path)
    assert.tensor_near(again.w, graft.arange(8, { dtype = "float32" }))
    os.remove(path)
  end)

  it("keeps the mapping alive while any tensor of the file lives", function()
    local path = tmpfile()
    graft.save({ a = graft.ones(1000), b = graft.full({ 10 }, 3) }, path)
    local b
    do
      local sd = graft.load(path)
      b = sd.b
    end
    collectgarbage()
    collectgarbage()
    os.remove(path) -- the mapping outlives the name
    assert.are.equal(30, b:sum():item())
  end)

  describe("refuses hostile files with a clear error naming the file, and leaks nothing:", function()
    local names = {}
    for k in pairs(E.hostile) do names[#names + 1] = k end
    table.sort(names)
    for _, name in ipairs(names) do
      it(name, function()
        local path = DIR .. "hostile/" .. name .. ".safetensors"
        H.raises(E.hostile[name], graft._st_load, path)
        H.raises('"' .. path .. '"', graft.load, path)
      end)
    end
  end)

  it("errors on a missing file", function()
    H.raises('cannot open "' .. DIR .. 'nope.safetensors"', graft.load, DIR .. "nope.safetensors")
  end)
end)

describe("safetensors writing", function()
  local DTYPES = { "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool" }

  it("round-trips every dtype, 0-dim and empty tensors, in the state dict's order", function()
    local sd = graft.OrderedDict()
    for i, d in ipairs(DTYPES) do
      local t
      if d == "bool" then
        t = graft.tensor({ { true, false, true }, { false, false, true } })
      else
        t = (graft.arange(6) * (i % 2 == 0 and 1 or -1)):to(d):view(2, 3)
      end
      sd["t." .. d] = t
    end
    sd.zero_dim = graft.tensor(2.5)
    sd.empty = graft.zeros(0, 4, { dtype = "int16" })
    local path = tmpfile()
    graft.save(sd, path)
    local back = graft.load(path)
    assert.are.same(sd:keys(), back:keys())
    for k, v in pairs(sd) do assert.tensor_near(back[k], v, { rtol = 0, atol = 0 }) end
    -- header padded to 8 bytes, data aligned: every tensor maps
    local bytes = read_bytes(path)
    assert.are.equal(0, string.unpack("<i8", bytes) % 8)
    local _, info = graft.load(path)
    assert.are.equal(11, info.mapped)
    os.remove(path)
  end)

  it("sorts a plain table's keys and writes string metadata", function()
    local path = tmpfile()
    graft.save({ zeta = graft.ones(2), alpha = graft.zeros(3) }, path, { metadata = { format = "pt", b = "2" } })
    local sd, info = graft.load(path)
    assert.are.same({ "alpha", "zeta" }, sd:keys())
    assert.are.same({ "b", "format" }, info.metadata:keys())
    assert.are.equal("pt", info.metadata.format)
    os.remove(path)
  end)

  it("writes non-contiguous tensors contiguous, and views sharing a storage each in full", function()
    local base = graft.arange(12, { dtype = "float32" }):view(3, 4)
    local sd = graft.OrderedDict()
    sd.t = base:t()
    sd.row = base[2]
    sd.col = base[{ {}, 2 }]
    sd.base = base
    local path = tmpfile()
    graft.save(sd, path)
    local back = graft.load(path)
    for k, v in pairs(sd) do assert.tensor_near(back[k], v, { rtol = 0, atol = 0 }) end
    assert.is_true(back.t:is_contiguous())
    back.base:fill_(0) -- no sharing after the round trip
    assert.are.equal(4, back.row[1]:item())
    os.remove(path)
  end)

  it("refuses what safetensors cannot hold, naming it", function()
    local path = tmpfile()
    H.raises('"epoch" is a number', graft.save, { w = graft.ones(1), epoch = 3 }, path)
    H.raises("names are strings", graft.save, { graft.ones(1) }, path)
    H.raises('cannot be named "__metadata__"', graft.save, { __metadata__ = graft.ones(1) }, path)
    H.raises("metadata must map strings to strings", graft.save, { w = graft.ones(1) }, path, { metadata = { n = 1 } })
    H.raises('the name "a" is given twice', graft._st_save, path, { "a", "a" }, { graft.ones(1), graft.ones(1) })
    H.raises("not valid UTF-8", graft.save, { ["bad\xff"] = graft.ones(1) }, path)
    assert.is_nil(io.open(path, "rb"))
  end)

  it("is atomic: a failed save leaves the previous file, and no temporary", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local path = dir .. "/m.safetensors"
    graft.save({ w = graft.ones(3) }, path)
    local before = read_bytes(path)
    H.raises("safetensors holds only tensors", graft.save, { w = graft.zeros(3), x = "y" }, path)
    assert.are.equal(before, read_bytes(path))
    H.raises('"' .. dir .. '/no/such/dir/m.safetensors"', graft.save, { w = graft.ones(1) }, dir .. "/no/such/dir/m.safetensors")
    local p = io.popen("ls -A " .. dir)
    local listing = p:read("a")
    p:close()
    assert.are.equal("m.safetensors\n", listing)
    os.execute("rm -rf " .. dir)
  end)

  it("escapes names in the JSON header", function()
    local names = { 'q"uote', "back\\slash", "new\nline", "tab\t", "caf\u{e9}", "ctl\1" }
    local sd = graft.OrderedDict()
    for i, n in ipairs(names) do sd[n] = graft.full({ 1 }, i) end
    local path = tmpfile()
    graft.save(sd, path)
    local back = graft.load(path)
    assert.are.same(names, back:keys())
    os.remove(path)
  end)
end)

-- The generator's reader checks the rules independently (and graft's conventions:
-- 8-byte padding, aligned data) and prints what it read as a Lua fixture.
local function python_torch()
  local ok = os.execute("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1")
  return ok == true or ok == 0
end

describe("safetensors written by graft, read by the Python reference reader", function()
  if not python_torch() then
    it("is skipped: /usr/bin/python3 with torch is not available", function()
      print("skipped: /usr/bin/python3 with torch is not available")
    end)
    return
  end

  it("gives the same names, order, dtypes, shapes, values and metadata", function()
    local sd = graft.OrderedDict()
    sd["layer.0.weight"] = graft.randn(3, 4)
    sd["layer.0.bias"] = graft.randn(3):double()
    sd["emb"] = graft.randn(5, 2):half()
    sd["bf"] = graft.randn(7):bfloat16()
    sd["steps"] = graft.tensor(12345678901)
    sd["mask"] = graft.tensor({ true, false })
    sd["i8"] = graft.tensor({ -3, 4 }, { dtype = "int8" })
    sd["u8"] = graft.tensor({ 250, 4, 3 }, { dtype = "uint8" })
    sd["i16"] = graft.tensor({ -3, 4 }, { dtype = "int16" })
    sd["i32"] = graft.tensor({ -3, 4 }, { dtype = "int32" })
    sd["empty"] = graft.zeros(0)
    sd["scalar"] = graft.tensor(1.25)
    local path = tmpfile()
    graft.save(sd, path, { metadata = { format = "pt", who = "graft" } })
    local p = io.popen("/usr/bin/python3 spec/fixtures/ckpt_st/gen_st.py --read " .. path .. " 2>&1")
    local src = p:read("a")
    p:close()
    local chunk = load(src)
    assert(chunk, "reader output: " .. src)
    local back = chunk()
    assert.are.same(sd:keys(), back.names)
    for k, v in pairs(sd) do assert.tensor_near(v, back.tensors[k], { rtol = 0, atol = 0 }) end
    assert.are.same({ format = "pt", who = "graft" }, back.metadata)
    os.remove(path)
  end)
end)
