-- graft._pth_load on damaged and hostile files: every one gets a clear Lua error that
-- names the file and the problem, with no crash, no hang, no leak, and no allocation
-- sized by the file before it is checked. The files are made here: a small pickle and
-- zip writer in Lua builds them byte by byte.
local graft = require("graft")
local H = require("spec.helpers")

local DIR = "spec/fixtures/ckpt/"
local TMP = os.tmpname()

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write(bytes)
  local f = assert(io.open(TMP, "wb"))
  f:write(bytes)
  f:close()
  return TMP
end

-- ---- pickles ----
local P = {}
function P.str(s) return "X" .. string.pack("<I4", #s) .. s end
function P.int(i)
  if i >= 0 and i < 256 then return "K" .. string.char(i) end
  if i >= -(1 << 31) and i < (1 << 31) then return "J" .. string.pack("<i4", i) end
  return "\x8a\x08" .. string.pack("<i8", i)
end
function P.global(m, n) return "c" .. m .. "\n" .. n .. "\n" end
function P.ints(list)
  local parts = { "(" }
  for _, v in ipairs(list) do parts[#parts + 1] = P.int(v) end
  return table.concat(parts) .. "t"
end
function P.storage(cls, key, numel)
  return "(" .. P.str("storage") .. P.global("torch", cls) .. P.str(key) .. P.str("cpu") .. P.int(numel) .. "tQ"
end
function P.tensor(o)
  return P.global("torch._utils", "_rebuild_tensor_v2") .. "(" ..
    P.storage(o.cls or "FloatStorage", o.key or "0", o.numel or 3) ..
    P.int(o.offset or 0) .. P.ints(o.size or { 3 }) .. P.ints(o.stride or { 1 }) ..
    "\x89" .. P.global("collections", "OrderedDict") .. ")R" .. "tR"
end
-- {name = value pickle} as a one-key dict, protocol 2
function P.dict1(key, value) return "\x80\x02}" .. P.str(key) .. value .. "s." end

-- ---- zips: stored entries, CRC 0 ("not computed"), sizes in the local header ----
local function zip(entries, o)
  o = o or {}
  local out, cd, offsets, pos = {}, {}, {}, 0
  for i, e in ipairs(entries) do
    local name, data = e[1], e[2]
    local lh = string.pack("<I4I2I2I2I2I2I4I4I4I2I2", 0x04034b50, 20, 0, e.method or 0, 0, 0, 0,
      e.csize or #data, e.usize or #data, #name, 0) .. name
    offsets[i] = pos
    out[#out + 1] = lh .. data
    pos = pos + #lh + #data
  end
  for i, e in ipairs(entries) do
    local name, data = e[1], e[2]
    cd[#cd + 1] = string.pack("<I4I2I2I2I2I2I2I4I4I4I2I2I2I2I2I4I4", 0x02014b50, 20, 20, 0, e.method or 0, 0, 0,
      0, e.csize or #data, e.usize or #data, e.nlen or #name, 0, 0, 0, 0, 0, e.offset or offsets[i]) .. name
  end
  local cds = table.concat(cd)
  return table.concat(out) .. cds .. string.pack("<I4I2I2I2I2I4I4I2", 0x06054b50, 0, 0, o.count or #entries,
    o.count or #entries, o.cdsize or #cds, o.cdoff or pos, 0)
end

local FLOATS3 = string.pack("<fff", 1.5, 2.5, 3.5)

-- a checkpoint: data.pkl, data/0 (three floats unless given), version
local function ckpt(pkl, storage, extra)
  local entries = { { "a/data.pkl", pkl }, { "a/data/0", storage or FLOATS3 }, { "a/version", "3\n" } }
  for _, e in ipairs(extra or {}) do entries[#entries + 1] = e end
  return zip(entries)
end

local function load(bytes, opts) return graft._pth_load(write(bytes), opts) end

-- Asserts a clean error naming the file and containing each fragment.
local function refuses(bytes, fragments, opts)
  if type(fragments) == "string" then fragments = { fragments } end
  H.no_leak(function()
    local ok, err = pcall(load, bytes, opts)
    assert.is_false(ok, "expected an error: " .. fragments[1])
    err = tostring(err)
    assert.is_truthy(err:find('"' .. TMP .. '"', 1, true), "the error does not name the file: " .. err)
    for _, f in ipairs(fragments) do
      assert.is_truthy(err:find(f, 1, true), ("error %q does not contain %q"):format(err, f))
    end
  end)
end

describe("graft._pth_load on hostile files", function()
  teardown(function() os.remove(TMP) end)

  it("loads the well-formed baseline these cases damage", function()
    local sd = load(ckpt(P.dict1("w", P.tensor {})))
    assert.are.same({ 1.5, 2.5, 3.5 }, sd.w:tolist())
  end)

  it("refuses truncated files at every cut point", function()
    for _, name in ipairs({ "views.pth", "legacy.pth", "misc.pth" }) do
      local full = read(DIR .. name)
      H.no_leak(function()
        for cut = 0, #full - 1 do
          local ok, err = pcall(load, full:sub(1, cut))
          assert.is_false(ok, name .. " cut at " .. cut .. " loaded")
          assert.is_truthy(tostring(err):find(TMP, 1, true), err)
        end
      end)
    end
  end)

  it("survives every single-byte corruption of real files (loads or errors, never crashes)", function()
    for _, name in ipairs({ "views.pth", "legacy.pth" }) do
      local full = read(DIR .. name)
      H.no_leak(function()
        for i = 1, #full do
          local bad = full:sub(1, i - 1) .. string.char(full:byte(i) ~ 0x5A) .. full:sub(i + 1)
          local ok, err = pcall(load, bad)
          if not ok then assert.is_truthy(tostring(err):find(TMP, 1, true), err) end
        end
      end)
    end
  end)

  it("refuses wrong magic and other formats", function()
    refuses("hello world, not a checkpoint", "not a PyTorch checkpoint")
    refuses("", "the file is empty")
    refuses("\x80\x02}q\x00.", "Invalid magic number")
    refuses(string.pack("<I8", 2) .. "{}", "looks like a safetensors file")
    refuses("PYTORCH1" .. ("\0"):rep(64), "PYTORCH1")
    refuses(("\0"):rep(257) .. "ustar" .. ("\0"):rep(300), "tar archive")
  end)

  it("refuses a damaged zip central directory", function()
    local entries = { { "a/data.pkl", P.dict1("w", P.tensor {}) }, { "a/data/0", FLOATS3 } }
    refuses(zip(entries, { cdoff = 1 << 30 }), "lies outside the file")
    refuses(zip(entries, { cdsize = 1 << 30 }), "lies outside the file")
    refuses(zip(entries, { count = 60000 }), "claims 60000 entries")
    refuses(zip(entries, { count = 3 }), "the directory claims 3 entries")
    local z2 = zip(entries)
    refuses(z2:sub(1, 1) .. "X" .. z2:sub(3), "not a PyTorch checkpoint")
    entries[2].nlen = 5000
    refuses(zip(entries), "runs past the directory")
    entries[2].nlen = nil
    entries[2].offset = 1 << 30
    refuses(zip(entries), "points outside the file")
    entries[2].offset = 3
    refuses(zip(entries), "local header of a/data/0 is missing")
    entries[2].offset = nil
    local z = zip(entries)
    refuses(z:sub(1, -23) .. "PK\5\6" .. z:sub(-18, -1):sub(1, 4) .. ("\0"):rep(14), "the zip archive is empty")
    refuses(z:sub(1, -23), "no end-of-central-directory record")
    refuses(zip({ { "data.pkl", "x" } }), "not in a subdirectory")
    refuses(zip({ { "a/x", "x" } }), "no a/data.pkl record")
    refuses(zip({}), "empty zip archive")
  end)

  it("refuses entries whose sizes point outside the file", function()
    local z = zip({ { "a/data.pkl", P.dict1("w", P.tensor {}) }, { "a/data/0", FLOATS3, csize = 1 << 20, usize = 1 << 20 },
      { "a/version", "3\n" } })
    refuses(z, "entry 1 points outside the file")
    z = zip({ { "a/data.pkl", P.dict1("w", P.tensor { numel = 75 }) }, { "a/data/0", FLOATS3, csize = 300, usize = 300 },
      { "a/version", "3\n" } })
    refuses(z, "the data of a/data/0 (300 bytes at offset")
    z = zip({ { "a/data.pkl", P.dict1("w", P.tensor { numel = 1 << 28 }) }, { "a/data/0", FLOATS3, usize = 1 << 30, method = 8 } })
    refuses(z, "claims 1073741824 bytes from 12 compressed")
    z = zip({ { "a/data.pkl", P.dict1("w", P.tensor {}) }, { "a/data/0", FLOATS3, method = 8 } })
    refuses(z, "is corrupt")
    z = zip({ { "a/data.pkl", P.dict1("w", P.tensor {}) }, { "a/data/0", FLOATS3, method = 12 } })
    refuses(z, "compression method 12")
  end)

  it("refuses versions it does not know and bad byte orders", function()
    local pk = P.dict1("w", P.tensor {})
    refuses(zip({ { "a/data.pkl", pk }, { "a/data/0", FLOATS3 }, { "a/version", "9\n" } }), "version \"9\n\" is not one")
    refuses(zip({ { "a/data.pkl", pk }, { "a/data/0", FLOATS3 }, { "a/byteorder", "middle" } }), 'unknown byteorder "middle"')
  end)

  it("refuses unknown opcodes and the protocol-0 and code-running opcodes", function()
    refuses(ckpt("\x80\x02\xff."), "opcode 0xff is not allowed")
    refuses(ckpt("\x80\x02i__builtin__\neval\n."), "opcode 'i' (0x69) is not allowed")
    refuses(ckpt("\x80\x02I1\n."), "opcode 'I'")
    refuses(ckpt("\x80\x02(o."), "opcode 'o'")
    refuses(ckpt("\x80\x02\x92."), "opcode 0x92")
    refuses(ckpt("\x80\x06N."), "pickle protocol 6 is not supported")
    refuses(ckpt("\x80\x02P1\n."), "opcode 'P'")
  end)

  it("refuses globals off the allowlist, naming them", function()
    local call = function(m, n) return "\x80\x02" .. P.global(m, n) .. "(" .. P.str("echo hi") .. "tR." end
    refuses(ckpt(call("posix", "system")), "it calls posix.system, which is not a tensor or container")
    refuses(ckpt(call("os", "system")), "it calls os.system")
    refuses(ckpt(call("__builtin__", "eval")), "it calls builtins.eval")
    refuses(ckpt(call("builtins", "exec")), "it calls builtins.exec")
    refuses(ckpt(call("subprocess", "Popen")), "it calls subprocess.Popen")
    refuses(ckpt(call("torch.storage", "_load_from_bytes")), "it calls torch.storage._load_from_bytes")
    -- refused even with allow_unknown: these can run code
    refuses(ckpt(call("posix", "system")), "refused even with allow_unknown", { allow_unknown = true })
    -- STACK_GLOBAL (protocol 4) goes through the same check
    refuses(ckpt("\x80\x04" .. P.str("os") .. P.str("system") .. "\x93" .. "(" .. P.str("x") .. "tR."), "it calls os.system")
    -- an unknown but harmless class: refused by default, a placeholder with allow_unknown
    refuses(ckpt(call("mylib", "Thing")), { "it calls mylib.Thing", "allow_unknown" })
    local sl = load(ckpt(call("__builtin__", "slice")), { allow_unknown = true })
    assert.are.equal("builtins.slice", sl.__class)
    local ph = load(ckpt(call("mylib", "Thing")), { allow_unknown = true })
    assert.is_true(graft.is_placeholder(ph))
    assert.are.same({ "echo hi" }, ph.__args)
  end)

  it("refuses REDUCE of allowlisted names that are not constructors, and bad arguments", function()
    refuses(ckpt("\x80\x02" .. P.global("torch", "FloatStorage") .. ")R."), "REDUCE of torch.FloatStorage, which is not a constructor")
    refuses(ckpt("\x80\x02" .. P.str("x") .. ")R."), "REDUCE of a str, which is not a callable global")
    refuses(ckpt("\x80\x02" .. P.global("torch._utils", "_rebuild_tensor_v2") .. ")R."), "_rebuild_tensor_v2 takes 6 to 7 arguments, got 0")
    refuses(ckpt("\x80\x02" .. P.global("collections", "OrderedDict") .. "(K\x01K\x02tR."), "OrderedDict takes 0 to 1 arguments")
    refuses(ckpt("\x80\x02" .. P.global("_codecs", "encode") .. "(" .. P.str("\xe2\x98\x83") .. P.str("latin1") .. "tR."),
      "text is not latin-1")
  end)

  it("refuses BUILD, APPEND and SETITEM on the wrong objects", function()
    refuses(ckpt("\x80\x02]}b."), "BUILD of a list")
    refuses(ckpt("\x80\x02}K\x01a."), "APPEND onto a dict")
    refuses(ckpt("\x80\x02]K\x01K\x02s."), "SETITEM onto a list")
    refuses(ckpt("\x80\x02}]K\x01s."), "SETITEM with a list key")
  end)

  it("limits nesting depth", function()
    local n = 5000
    refuses(ckpt("\x80\x02" .. ("]"):rep(n) .. ("a"):rep(n - 1) .. "."), "nested deeper than 1000 levels")
    -- a list that contains itself
    refuses(ckpt("\x80\x02]q\x00h\x00a."), "contains itself")
  end)

  it("refuses memo indices out of range and unset", function()
    refuses(ckpt("\x80\x02h\x05."), "memo index 5 is read before it is set")
    refuses(ckpt("\x80\x02Nr\xff\xff\xff\xff."), "memo index 4294967295 is out of range")
    refuses(ckpt("\x80\x02j\x00\x00\x00\x10."), "memo index 268435456 is read before it is set")
    refuses(ckpt("\x80\x02q\x00."), "memo PUT with an empty stack")
  end)

  it("refuses stack underflow and unbalanced marks", function()
    refuses(ckpt("\x80\x02a."), "APPEND needs 2 values on the stack, found 0 (stack underflow)")
    refuses(ckpt("\x80\x02t."), "TUPLE without a MARK")
    refuses(ckpt("\x80\x02."), "STOP with 0 values")
    refuses(ckpt("\x80\x02NN."), "STOP with 2 values")
    refuses(ckpt("\x80\x02(N."), "STOP with 1 values and 1 marks")
    refuses(ckpt("\x80\x02(R."), "REDUCE needs 2 values")
    refuses(ckpt("\x80\x020."), "POP of an empty stack")
    refuses(ckpt("\x80\x02N"), "truncated")
    refuses(ckpt("\x80\x02X\xff\xff\xff\x7f."), "truncated")
    refuses(ckpt("\x80\x02\x8a\x09" .. ("\0"):rep(9) .. "."), "does not fit in 64 bits")
  end)

  it("refuses storages whose claimed size does not match their record", function()
    refuses(ckpt(P.dict1("w", P.tensor { numel = 1000000000000, size = { 3 } })),
      "storage 0 claims 1000000000000 elements of float32 (4000000000000 bytes) but its data holds 12 bytes")
    refuses(ckpt(P.dict1("w", P.tensor { numel = 2 })), "reaches element 2 of storage 0, which holds 2")
    refuses(ckpt(P.dict1("w", P.tensor { numel = (1 << 62) })), "claims 4611686018427387904 elements")
    refuses(ckpt(P.dict1("w", P.tensor { key = "7" })), "storage 7 has no record a/data/7")
    refuses(ckpt(P.dict1("w", P.tensor { numel = -1 })), "the storage size is not a count")
    refuses(ckpt(P.dict1("w", P.tensor { cls = "ComplexFloatStorage" })), "ComplexFloatStorage tensors are not supported")
    refuses(ckpt(P.dict1("w", P.tensor { cls = "QInt8Storage" })), "QInt8Storage tensors are not supported")
    refuses(ckpt(P.dict1("w", P.tensor { key = "a/b" })), "holds '/'")
  end)

  it("refuses tensor views outside their storage", function()
    refuses(ckpt(P.dict1("w", P.tensor { offset = 100 })), "at offset 100 reaches element 102 of storage 0")
    refuses(ckpt(P.dict1("w", P.tensor { size = { 2, 2 }, stride = { 2, 1 } })), "reaches element 3 of storage 0, which holds 3")
    refuses(ckpt(P.dict1("w", P.tensor { size = { 3 }, stride = { -1 } })), "negative stride")
    refuses(ckpt(P.dict1("w", P.tensor { size = { -3 } })), "negative size")
    refuses(ckpt(P.dict1("w", P.tensor { offset = -1 })), "negative storage offset")
    refuses(ckpt(P.dict1("w", P.tensor { size = { 3 }, stride = { 1, 1 } })), "size has 1 dims but stride has 2")
  end)

  it("refuses huge dims without allocating", function()
    refuses(ckpt(P.dict1("w", P.tensor { size = { 1 << 40, 1 << 40 }, stride = { 0, 0 } })), "too many elements")
    refuses(ckpt(P.dict1("w", P.tensor { size = { 1 << 30, 1 << 30 }, stride = { 1 << 40, 1 << 40 } })),
      "too many elements")
    local dims = {}
    for i = 1, 17 do dims[i] = 1 end
    refuses(ckpt(P.dict1("w", P.tensor { size = dims, stride = dims })), "a tensor with 17 dims (graft supports at most 16)")
    -- zero-size dims make an empty tensor whatever the others claim
    local sd = load(ckpt(P.dict1("w", P.tensor { size = { 0, 1 << 40 }, stride = { 1, 1 } })))
    assert.are.same({ 0, 1 << 40 }, sd.w:shape())
  end)

  it("refuses persistent ids that are not storages, and mismatched storage declarations", function()
    refuses(ckpt("\x80\x02" .. "(" .. P.str("module") .. "NNNtQ."), "unknown persistent id kind \"module\"")
    refuses(ckpt("\x80\x02" .. "(" .. P.str("storage") .. "tQ."), "a storage id has 1 fields, expected 5")
    refuses(ckpt("\x80\x02" .. P.str("x") .. "Q."), "the persistent id is a str")
    local two = "\x80\x02(" .. P.tensor {} .. P.tensor { cls = "IntStorage" } .. "t."
    refuses(ckpt(two), "storage 0 appears with different types or sizes")
    local hooks = P.global("torch._utils", "_rebuild_tensor_v2") .. "(" .. P.storage("FloatStorage", "0", 3) ..
      P.int(0) .. P.ints({ 3 }) .. P.ints({ 1 }) .. "\x89" .. "}" .. P.str("h") .. "Ns" .. "tR"
    refuses(ckpt("\x80\x02" .. hooks .. "."), "backward hooks cannot be restored")
  end)

  it("refuses a whole model and names its class", function()
    local model = "\x80\x02" .. P.global("__main__", "Net") .. ")\x81" .. "}" .. P.str("_modules") ..
      P.global("collections", "OrderedDict") .. ")R" .. "sb."
    refuses(ckpt(model), { "whole model saved with torch.save(model) (class __main__.Net)", "model.state_dict()" })
    -- a model whose own class is not torch.nn's but whose children are: the outermost
    -- module is named, not the first torch.nn class met
    local od = P.global("collections", "OrderedDict") .. ")R"
    local nested = "\x80\x02" .. P.global("torchvision.models.resnet", "ResNet") .. ")\x81" .. "}" .. P.str("_modules") ..
      od .. P.str("fc") .. P.global("torch.nn.modules.linear", "Linear") .. ")\x81" .. "}" .. P.str("_modules") ..
      od .. "sb" .. "s" .. "sb."
    refuses(ckpt(nested), "whole model saved with torch.save(model) (class torchvision.models.resnet.ResNet)")
    local m = load(ckpt(model), { allow_unknown = true })
    assert.are.equal("__main__.Net", m.__class)
    assert.are.same({}, m.__state._modules:keys())
  end)

  it("refuses legacy files with a bad protocol or missing storages", function()
    local magic = "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e"
    local sys = "\x80\x02}" .. P.str("little_endian") .. "\x88s."
    local pid6 = function(key, numel, view)
      return "(" .. P.str("storage") .. P.global("torch", "FloatStorage") .. P.str(key) .. P.str("cpu") ..
        P.int(numel) .. (view or "N") .. "tQ"
    end
    local tensor6 = function(key, numel, view, off, size)
      return P.global("torch._utils", "_rebuild_tensor_v2") .. "(" .. pid6(key, numel, view) .. P.int(off or 0) ..
        P.ints(size or { numel }) .. P.ints({ 1 }) .. "\x89" .. P.global("collections", "OrderedDict") .. ")R" .. "tR"
    end
    local keys = "\x80\x02(" .. P.str("9") .. "l."
    keys = "\x80\x02]" .. P.str("9") .. "a."
    local data = string.pack("<i8", 3) .. FLOATS3
    local good = magic .. "\x80\x02M\xe9\x03." .. sys .. P.dict1("w", tensor6("9", 3)) .. keys .. data
    assert.are.same({ 1.5, 2.5, 3.5 }, load(good).w:tolist())
    refuses(magic .. "\x80\x02M\xea\x03." .. sys, "Invalid protocol version")
    refuses(magic .. "\x80\x02M\xe9\x03." .. sys .. P.dict1("w", tensor6("9", 3)) .. keys, "is missing (truncated)")
    refuses(magic .. "\x80\x02M\xe9\x03." .. sys .. P.dict1("w", tensor6("9", 3)) .. keys .. string.pack("<i8", 4) .. FLOATS3,
      "holds 4 elements in the file but the pickle says 3")
    refuses(magic .. "\x80\x02M\xe9\x03." .. sys .. P.dict1("w", tensor6("9", 3)) .. "\x80\x02]" .. P.str("8") .. "a." .. data,
      "storage key 8 is not a storage of the pickle")
    -- old storage views (view_key, offset, size) of a root storage
    local view = "(" .. P.str("v") .. P.int(1) .. P.int(2) .. "t"
    local viewed = magic .. "\x80\x02M\xe9\x03." .. sys .. P.dict1("w", tensor6("9", 3, view, 0, { 2 })) .. keys .. data
    assert.are.same({ 2.5, 3.5 }, load(viewed).w:tolist())
    view = "(" .. P.str("v") .. P.int(2) .. P.int(2) .. "t"
    refuses(magic .. "\x80\x02M\xe9\x03." .. sys .. P.dict1("w", tensor6("9", 3, view, 0, { 2 })) .. keys .. data,
      "lies outside storage 9")
    -- a pickled module class in a legacy file: a whole model
    local modpid = "(" .. P.str("module") .. P.global("__main__", "Net") .. P.str("x.py") .. P.str("src") .. "tQ"
    refuses(magic .. "\x80\x02M\xe9\x03." .. sys .. "\x80\x02" .. modpid .. ")\x81." .. "\x80\x02]." , "whole model")
  end)

  it("caps the memory a pickle may use: copies of a big list are refused", function()
    local parts = { "\x80\x02", P.global("__builtin__", "set"), "q\x00", "](" }
    for _ = 1, 100000 do parts[#parts + 1] = "N" end
    parts[#parts + 1] = "eq\x01"
    for _ = 1, 10000 do parts[#parts + 1] = "h\x00h\x01\x85R0" end -- set(list), popped: 8 bytes, 800 KB
    parts[#parts + 1] = "."
    local t0 = os.clock()
    refuses(ckpt(table.concat(parts)), "needs more memory than its size allows")
    assert.is_true(os.clock() - t0 < 5)
  end)

  it("never allocates by a claimed size: a 2^62-element claim fails fast", function()
    local t0 = os.clock()
    refuses(ckpt(P.dict1("w", P.tensor { numel = (1 << 60), size = { 1 << 20 } })), "claims")
    assert.is_true(os.clock() - t0 < 1)
  end)
end)
