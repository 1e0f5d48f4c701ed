-- graft._pth_load / graft._pth_save: PyTorch's .pth files read without Python (files
-- written by real PyTorch 1.13: spec/fixtures/ckpt/gen_pth.py) and written so that
-- PyTorch reads them back (checked with /usr/bin/python3 when torch is installed).
local graft = require("graft")
local H = require("spec.helpers")

local DIR = "spec/fixtures/ckpt/"
local expected = H.fixture("ckpt/pth")

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. d))
  return d
end

local function at(obj, path)
  local v = obj
  for _, k in ipairs(path) do
    assert.is_not_nil(v, "missing " .. table.concat(path, "/"))
    v = v[k]
  end
  return v
end

local function pathname(path)
  local parts = {}
  for i, k in ipairs(path) do parts[i] = tostring(k) end
  return "/" .. table.concat(parts, "/")
end

local function bytes_of(s)
  return { s:byte(1, -1) }
end

local function check_tensor(t, e, where)
  assert.is_true(graft.is_tensor(t), where .. " is not a tensor")
  assert.are.same(e.shape, t:shape(), where .. " shape")
  assert.are.equal(e.dtype, t:dtype(), where .. " dtype")
  if e.stride then assert.are.same(e.stride, t:stride(), where .. " stride") end
  if e.offset then assert.are.equal(e.offset, t:storage_offset(), where .. " offset") end
  local sum = t:numel() > 0 and t:double():sum():item() or 0
  assert.is_true(math.abs(sum - e.sum) <= 1e-6 * math.max(1, math.abs(e.sum)),
    ("%s sum %.10g ~= %.10g"):format(where, sum, e.sum))
  if e.first then
    local flat = t:numel() > 0 and H.flat(t:reshape({ -1 })) or {}
    for i, v in ipairs(e.first) do
      if type(v) == "boolean" then
        assert.are.equal(v, flat[i], where .. " value " .. i)
      else
        assert.is_true(math.abs(flat[i] - v) <= 1e-6 * math.max(1, math.abs(v)),
          ("%s value %d: %s ~= %s"):format(where, i, tostring(flat[i]), tostring(v)))
      end
    end
  end
end

-- Compares a loaded object with the generator's description of the PyTorch object.
local function check_file(obj, name)
  local exp = expected[name]
  if exp.tensors then
    local keys = obj:keys()
    assert.are.equal(#exp.tensors, #keys, name .. " key count")
    for i, row in ipairs(exp.tensors) do
      assert.are.equal(row[1], keys[i], name .. " key " .. i)
      check_tensor(obj[row[1]], { dtype = row[2], shape = row[3], sum = row[4], first = row[5] }, name .. ":" .. row[1])
    end
  end
  for _, e in ipairs(exp.entries or {}) do
    local where = name .. ":" .. pathname(e.path)
    local v = at(obj, e.path)
    if e.kind == "tensor" then
      check_tensor(v, e, where)
    elseif e.kind == "dict" then
      assert.is_true(graft.OrderedDict.is(v), where .. " is not an OrderedDict")
      assert.are.same(e.keys, v:keys(), where .. " keys")
    elseif e.kind == "list" then
      assert.are.equal("table", type(v), where)
      assert.are.equal(e.len, #v, where .. " length")
    elseif e.kind == "none" then
      assert.are.equal(graft.None, v, where)
    elseif e.kind == "bool" then
      assert.are.equal(e.value, v, where)
    elseif e.kind == "int" then
      assert.are.equal("integer", math.type(v), where .. " is not an integer")
      assert.are.equal(e.value, v, where)
    elseif e.kind == "float" then
      assert.are.equal("float", math.type(v), where .. " is not a float")
      assert.are.equal(e.value, v, where)
    elseif e.kind == "string" then
      assert.are.same(e.bytes, bytes_of(v), where)
    end
  end
  for _, pair in ipairs(exp.shares) do
    local a, b = pair[1], pair[2]
    a = type(a) == "table" and a or { a }
    b = type(b) == "table" and b or { b }
    assert.is_true(at(obj, a):is_set_to(at(obj, b)), name .. ": " .. pathname(a) .. " and " .. pathname(b) .. " share a storage")
  end
  if exp.metadata then assert.are.same(exp.metadata, obj:metadata()) end
end

local READABLE = { "resnet18_expand.pth", "shufflenet_half.pth", "dataparallel.pth", "train_ckpt.pth", "dtypes.pth",
  "views.pth", "legacy.pth", "legacy_ckpt.pth", "misc.pth", "protocol4.pth", "protocol5.pth", "deflated.pth",
  "bigendian.pth" }

describe("graft._pth_load", function()
  for _, name in ipairs(READABLE) do
    it("reads " .. name .. " as PyTorch wrote it (keys, order, dtypes, shapes, strides, values, sharing)", function()
      H.no_leak(function()
        check_file(graft._pth_load(DIR .. name), name)
      end)
    end)
  end

  it("keeps resnet18's keys, metadata and BatchNorm version 2", function()
    local sd = graft._pth_load(DIR .. "resnet18_expand.pth")
    assert.are.equal(122, #sd)
    assert.are.equal("conv1.weight", sd:keys()[1])
    assert.are.equal("fc.bias", sd:keys()[122])
    assert.are.equal(2, sd:metadata()["layer1.0.bn1"].version)
    assert.are.same({ 0, 0, 0, 0 }, sd["conv1.weight"]:stride()) -- the expand's zero strides survive
    assert.are.equal(0, sd["bn1.num_batches_tracked"]:dim())
  end)

  it("reads a training checkpoint's nested values with ints and floats kept apart", function()
    local ck = graft._pth_load(DIR .. "train_ckpt.pth")
    assert.are.equal(7, ck.epoch)
    assert.are.equal(0.05, ck.optimizer.param_groups[1].lr)
    assert.are.equal("float", math.type(ck.optimizer.param_groups[1].weight_decay))
    assert.are.equal("integer", math.type(ck.optimizer.param_groups[1].dampening))
    assert.are.equal(graft.None, ck.optimizer.param_groups[1].foreach)
    assert.are.same({ 0, 1, 2, 3, 4, 5 }, ck.optimizer.param_groups[1].params)
    assert.are.same({ 0, 1, 2, 3, 4, 5 }, ck.optimizer.state:keys())
    assert.are.same({ 4, 3, 3, 3 }, ck.optimizer.state[0].momentum_buffer:shape())
    assert.are.equal(math.huge, ck.best)
    assert.are.equal("net", ck.args.arch)
  end)

  it("maps stored storages (no copy) and copies deflated ones", function()
    local dir = tmpdir()
    local big = graft.arange(1 << 18, { dtype = "float32" }) -- 1 MiB
    graft._pth_save({ w = big }, dir .. "/big.pth")
    collectgarbage(); collectgarbage()
    local before = graft.memory_stats().allocated
    local sd = graft._pth_load(dir .. "/big.pth")
    assert.is_true(graft.memory_stats().allocated - before < (1 << 20), "a stored storage was copied")
    assert.are.equal((1 << 18) * ((1 << 18) - 1) / 2, sd.w:double():sum():item())
    -- writes to a loaded tensor never reach the file
    local f = io.open(dir .. "/big.pth", "rb")
    local bytes = f:read("a")
    f:close()
    sd.w:fill_(7)
    local again = graft._pth_load(dir .. "/big.pth")
    assert.are.equal(0, again.w[1]:item())
    f = io.open(dir .. "/big.pth", "rb")
    assert.is_true(f:read("a") == bytes, "the file changed")
    f:close()
    sd, again = nil, nil
    os.execute("rm -rf " .. dir)
  end)

  it("keeps a tensor referenced twice as one tensor, and a saved storage as a 1-D tensor", function()
    local m = graft._pth_load(DIR .. "misc.pth")
    assert.are.equal(m.tied[1], m.tied[2])
    assert.are.same({ 0, 1, 2, 3 }, m.storage:tolist())
    assert.are.equal("int32", m.storage:dtype())
    assert.are.same({ 2, 3 }, m.size)
    assert.are.equal("float16", m.dtype)
    assert.are.equal("cuda:0", m.device)
    assert.are.equal("ab\0\255", m.bytes)
  end)

  it("refuses a whole pickled model, saying what to do", function()
    -- the class named is the outermost module (the first torch.nn global is a child's)
    H.raises("it is a whole model saved with torch.save(model) (class torch.nn.modules.container.Sequential)",
      graft._pth_load, DIR .. "whole_model.pth")
    H.raises("save model.state_dict()", graft._pth_load, DIR .. "whole_model.pth")
    H.raises("graft.state.extract(obj)", graft._pth_load, DIR .. "whole_model.pth")
  end)

  it("loads a whole model as inert placeholders with allow_unknown", function()
    local m = graft._pth_load(DIR .. "whole_model.pth", { allow_unknown = true })
    assert.is_true(graft.is_placeholder(m))
    assert.are.equal("torch.nn.modules.container.Sequential", m.__class)
    local lin = m.__state._modules["0"]
    assert.are.equal("torch.nn.modules.linear.Linear", lin.__class)
    assert.are.same({ 4, 3 }, lin.__state._parameters.weight:shape())
    check_tensor(m.__state._modules["2"].__state._parameters.bias, {
      shape = { 2 }, dtype = "float32",
      sum = expected["whole_model.pth"].entries[5].sum }, "2.bias")
  end)

  it("refuses unknown classes by default and keeps them as placeholders with allow_unknown", function()
    H.raises('refusing to load "' .. DIR .. 'namespace.pth": it calls argparse.Namespace, which is not a tensor or container',
      graft._pth_load, DIR .. "namespace.pth")
    local ck = graft._pth_load(DIR .. "namespace.pth", { allow_unknown = true })
    assert.are.equal(1, ck.epoch)
    assert.is_true(graft.is_placeholder(ck.args))
    assert.are.equal("argparse.Namespace", ck.args.__class)
    assert.are.same({}, ck.args.__args)
    assert.are.equal(0.1, ck.args.__state.lr)
    assert.are.equal("x", ck.args.__state.arch)
  end)

  it("refuses TorchScript archives", function()
    H.raises("TorchScript archive", graft._pth_load, DIR .. "torchscript.pt")
  end)

  it("accepts map_location cpu and refuses other devices clearly", function()
    assert.are.equal(7, graft._pth_load(DIR .. "train_ckpt.pth", { map_location = "cpu" }).epoch)
    if not graft.cuda.is_available() then
      H.raises('map_location "cuda": graft has no CUDA device', graft._pth_load, DIR .. "train_ckpt.pth",
        { map_location = "cuda" })
    end
    H.raises('unknown map_location "tpu"', graft._pth_load, DIR .. "train_ckpt.pth", { map_location = "tpu" })
  end)

  it("names the file when it cannot be opened", function()
    H.raises('cannot load "' .. DIR .. 'nope.pth"', graft._pth_load, DIR .. "nope.pth")
  end)
end)

describe("graft._pth_save", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  for _, name in ipairs(READABLE) do
    it("writes " .. name .. "'s object so that graft reads back the same", function()
      local obj = graft._pth_load(DIR .. name)
      graft._pth_save(obj, dir .. "/out.pth")
      check_file(graft._pth_load(dir .. "/out.pth"), name)
    end)
  end

  it("writes torch.save's layout: archive named after the file, aligned stored records, version 3", function()
    graft._pth_save(graft._pth_load(DIR .. "views.pth"), dir .. "/my.model.pth")
    local f = io.open(dir .. "/my.model.pth", "rb")
    local data = f:read("a")
    f:close()
    assert.are.equal("PK\3\4", data:sub(1, 4))
    local names = {}
    local pos = 1
    while data:sub(pos, pos + 3) == "PK\3\4" do
      local nlen, xlen = string.unpack("<I2I2", data, pos + 26)
      local name = data:sub(pos + 30, pos + 29 + nlen)
      local start = pos + 30 + nlen + xlen -- 1-based: file offset start - 1
      assert.are.equal(0, (start - 1) % 64, name .. " data is not 64-byte aligned")
      names[#names + 1] = name
      local size
      local cpos = data:find("PK\1\2", 1, true)
      while cpos do -- the central directory has the size
        local cn = string.unpack("<I2", data, cpos + 28)
        if data:sub(cpos + 46, cpos + 45 + cn) == name then size = string.unpack("<I4", data, cpos + 24) break end
        cpos = data:find("PK\1\2", cpos + 46, true)
      end
      if name == "my.model/version" then assert.are.equal("3\n", data:sub(start, start + 1)) end
      pos = start + size + 16 -- data descriptor
    end
    assert.are.same({ "my.model/data.pkl", "my.model/byteorder", "my.model/data/0", "my.model/data/1",
      "my.model/data/2", "my.model/version" }, names)
  end)

  it("writes shared storages once and keeps offsets and strides", function()
    local base = graft.arange(12, { dtype = "float32" })
    local obj = graft.OrderedDict()
    obj.base = base
    obj.t = base:reshape(3, 4):t()
    obj.slice = base:narrow(1, 3, 4)
    graft._pth_save(obj, dir .. "/v.pth")
    local back = graft._pth_load(dir .. "/v.pth")
    assert.are.same({ "base", "t", "slice" }, back:keys())
    assert.is_true(back.base:is_set_to(back.t))
    assert.is_true(back.base:is_set_to(back.slice))
    assert.are.same({ 1, 4 }, back.t:stride())
    assert.are.equal(2, back.slice:storage_offset())
    assert.tensor_near(back.t, obj.t)
  end)

  it("writes plain tables with sorted keys, sequences as lists, and metadata back", function()
    local sd = graft.OrderedDict.from_pairs({ "b.weight", "a.weight" }, { graft.ones(2), graft.zeros(1) })
    sd:set_metadata({ [""] = { version = 1 }, b = { version = 2 } })
    graft._pth_save({ z = 1, a = { 3, 2.5, "x", true, graft.None }, m = sd, [2] = {}, e = graft.OrderedDict() },
      dir .. "/t.pth")
    local back = graft._pth_load(dir .. "/t.pth")
    assert.are.same({ 2, "a", "e", "m", "z" }, back:keys())
    assert.are.same({ 3, 2.5, "x", true, graft.None }, back.a)
    assert.are.same({ "b.weight", "a.weight" }, back.m:keys())
    assert.are.same({ [""] = { version = 1 }, b = { version = 2 } }, back.m:metadata())
    assert.are.same({}, back[2])
    assert.are.equal(0, #back.e)
  end)

  it("overwrites the file a loaded object still maps", function()
    os.execute("cp " .. DIR .. "views.pth " .. dir .. "/v.pth")
    local v = graft._pth_load(dir .. "/v.pth")
    v.base:add_(1)
    graft._pth_save(v, dir .. "/v.pth")
    assert.are.equal(12, v.base[12]:item()) -- the old mapping is still readable
    local back = graft._pth_load(dir .. "/v.pth")
    assert.are.same({ 3, 4, 5, 6 }, back.slice:tolist())
    assert.is_true(back.base:is_set_to(back.slice))
  end)

  it("writes zip64 records when asked (the >4 GiB path) that it reads back", function()
    graft._pth_save(graft._pth_load(DIR .. "dtypes.pth"), dir .. "/z.pth", { _zip64 = true })
    check_file(graft._pth_load(dir .. "/z.pth"), "dtypes.pth")
  end)

  it("refuses values it cannot write, naming where they are, and leaves the old file", function()
    graft._pth_save({ a = 1 }, dir .. "/keep.pth")
    H.raises("save: cannot save a function at x.y[2]", graft._pth_save, { x = { y = { 1, print } } }, dir .. "/keep.pth")
    H.raises("save: a dict key must be a string or a number", graft._pth_save, { [true] = 1 }, dir .. "/keep.pth")
    local ph = graft._pth_load(DIR .. "namespace.pth", { allow_unknown = true })
    H.raises("cannot save a placeholder of argparse.Namespace", graft._pth_save, ph, dir .. "/keep.pth")
    local loop = {}
    loop[1] = loop
    H.raises("nesting deeper than", graft._pth_save, loop, dir .. "/keep.pth")
    local t = graft.zeros(2)
    H.raises("save: nothing to save", graft._pth_save, nil, dir .. "/keep.pth")
    assert.are.equal(1, graft._pth_load(dir .. "/keep.pth").a)
    local p = io.popen("ls -A " .. dir)
    assert.are.equal("keep.pth\n", p:read("a"))
    p:close()
    H.raises("cannot create a temporary file", graft._pth_save, { t = t }, dir .. "/missing/x.pth")
  end)

  it("writes a tensor and its view as one storage record", function()
    local a = graft.zeros(4)
    graft._pth_save({ a = a, b = a:narrow(1, 2, 2) }, dir .. "/ok.pth")
    local back = graft._pth_load(dir .. "/ok.pth")
    assert.is_true(back.a:is_set_to(back.b))
  end)
end)

-- graft writes, PyTorch reads: runs where /usr/bin/python3 has torch.
local PY = "/usr/bin/python3"
local has_torch = os.execute(PY .. " -c 'import torch' >/dev/null 2>&1")

describe("graft._pth_save read by PyTorch", function()
  if not has_torch then
    it("is skipped: " .. PY .. " cannot import torch here", function()
      print("pth_spec: skipping the PyTorch round trip (" .. PY .. " -c 'import torch' failed)")
    end)
    return
  end

  it("gives torch.load the same keys, order, dtypes, shapes, strides, values and sharing", function()
    local dir = tmpdir()
    local script = dir .. "/check.py"
    local f = assert(io.open(script, "w"))
    f:write([[
import collections, sys, torch

def norm(x):
    if isinstance(x, bytes):  # graft strings are bytes: valid UTF-8 is written as str
        try:
            return x.decode("utf-8")
        except UnicodeDecodeError:
            return x
    if isinstance(x, torch.nn.Parameter):
        return x.data
    if isinstance(x, torch.storage.TypedStorage):
        return torch.tensor([], dtype=x.dtype).set_(x)
    if isinstance(x, (torch.dtype, torch.device)):
        return str(x).replace("torch.", "")
    if isinstance(x, torch.Size) or isinstance(x, tuple):
        return [norm(v) for v in x]
    if isinstance(x, (set, frozenset)):
        return sorted(norm(v) for v in x)
    if isinstance(x, list):
        return [norm(v) for v in x]
    if isinstance(x, dict):
        return [(k, norm(v)) for k, v in x.items()]
    return x

def same(a, b, where):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, (where, a.dtype, b.dtype, a.shape, b.shape)
        assert a.stride() == b.stride() and a.storage_offset() == b.storage_offset(), where
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())), where
        return
    assert type(a) == type(b), (where, type(a), type(b))
    if isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            if isinstance(x, tuple):
                assert x[0] == y[0], (where, x[0], y[0])
                same(x[1], y[1], where + "/" + str(x[0]))
            else:
                same(x, y, where + "/" + str(i))
        return
    assert a == b or (a != a and b != b), (where, a, b)

def check(src, out, weights_only):
    a = torch.load(src)
    b = torch.load(out, weights_only=weights_only)
    same(norm(a), norm(b), "")
    if hasattr(a, "_metadata"):
        assert dict(b._metadata) == dict(a._metadata), "metadata"
    # storage sharing survives: tensors that shared a storage still do
    ta, tb = tensors(a, []), tensors(b, [])
    for i in range(len(ta)):
        for j in range(len(ta)):
            sa = ta[i].storage().data_ptr() == ta[j].storage().data_ptr()
            sb = tb[i].storage().data_ptr() == tb[j].storage().data_ptr()
            assert sa == sb, ("sharing", i, j)

def tensors(x, acc):
    if isinstance(x, torch.Tensor): acc.append(x)
    elif isinstance(x, dict): [tensors(v, acc) for v in x.values()]
    elif isinstance(x, (list, tuple)): [tensors(v, acc) for v in x]
    return acc

for i in range(1, len(sys.argv), 3):
    try:
        check(sys.argv[i], sys.argv[i + 1], sys.argv[i + 2] == "1")
    except Exception as e:
        print(sys.argv[i], repr(e))
print("ok")
]])
    f:close()
    -- files without floats load with weights_only=True (torch 1.13's restricted loader lacks BINFLOAT)
    local weights_only = { ["resnet18_expand.pth"] = true, ["shufflenet_half.pth"] = true, ["dataparallel.pth"] = true,
      ["dtypes.pth"] = true, ["views.pth"] = true, ["legacy.pth"] = true, ["bigendian.pth"] = true }
    local args = {}
    for _, name in ipairs(READABLE) do
      local out = dir .. "/" .. name
      graft._pth_save(graft._pth_load(DIR .. name), out)
      local src = name == "bigendian.pth" and DIR .. "dtypes.pth" or DIR .. name
      args[#args + 1] = ("%s %s %s"):format(src, out, weights_only[name] and "1" or "0")
    end
    graft._pth_save(graft._pth_load(DIR .. "dtypes.pth"), dir .. "/zip64.pth", { _zip64 = true })
    args[#args + 1] = ("%s %s 1"):format(DIR .. "dtypes.pth", dir .. "/zip64.pth")
    local p = io.popen(("%s %s %s 2>&1"):format(PY, script, table.concat(args, " ")))
    local res = p:read("a")
    p:close()
    assert.are.equal("ok\n", res)
    os.execute("rm -rf " .. dir)
  end)
end)
