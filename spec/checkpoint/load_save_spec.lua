-- graft.load / graft.save: format detection from the bytes, options, the dtype cast
-- report, the output format from the extension, and the .pth paths (through the .pth
-- reader and writer, graft._pth_load / graft._pth_save, when this build has them).
local graft = require("graft")
require("graft.checkpoint")
local H = require("spec.helpers")

local DIR = "spec/fixtures/ckpt_st/"
local E = H.fixture("ckpt_st/expected")

local function tmpfile(ext)
  local p = os.tmpname()
  os.remove(p)
  return p .. ext
end

local function write_bytes(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  return path
end

local function copy(src, dst)
  local f = assert(io.open(src, "rb"))
  local s = f:read("a")
  f:close()
  return write_bytes(dst, s)
end

describe("graft.load", function()
  it("tells the format from the bytes, not the name", function()
    local p = copy(DIR .. "tiny.safetensors", tmpfile(".pth"))
    local sd, info = graft.load(p)
    assert.are.equal("safetensors", info.format)
    assert.are.same(E.tiny.keys, sd:keys())
    os.remove(p)
  end)

  it("says what it found in a file that is no checkpoint", function()
    local p = write_bytes(tmpfile(".pth"), "\x7fELF\2\1\1\0garbage garbage")
    H.raises("is not a PyTorch checkpoint or a safetensors file (23 bytes, starting with 7f 45 4c 46 02 01 01 00)",
      graft.load, p)
    write_bytes(p, "")
    H.raises("is empty: not a checkpoint", graft.load, p)
    write_bytes(p, "PYTORCH1")
    H.raises("preview-era PyTorch archive", graft.load, p)
    os.remove(p)
    H.raises("cannot read", graft.load, "spec/fixtures")
    H.raises('cannot open "nope/x.pth": No such file or directory', graft.load, "nope/x.pth")
  end)

  it("checks its options", function()
    local p = DIR .. "tiny.safetensors"
    if not graft.cuda.is_available() then -- spec/cuda/checkpoint_spec.lua loads to a device
      H.raises('map_location "cuda": CUDA is not available', graft.load, p, { map_location = "cuda" })
      H.raises('map_location "cuda:1": CUDA is not available', graft.load, p, { map_location = "cuda:1" })
    end
    H.raises('map_location "tpu" is not a device', graft.load, p, { map_location = "tpu" })
    H.raises('unknown option "mmap"', graft.load, p, { mmap = true })
    H.raises('dtype "int64" is not a floating dtype', graft.load, p, { dtype = "long" })
    H.raises('unknown dtype "float17"', graft.load, p, { dtype = "float17" })
    H.raises("path must be a string", graft.load, 3)
    local sd = graft.load(p, { map_location = "cpu" })
    assert.are.equal(11, #sd)
  end)

  it("casts floating tensors with {dtype =} and reports each cast", function()
    local sd, info = graft.load(DIR .. "all_dtypes.safetensors", { dtype = "half" })
    assert.are.equal("float16", sd["w.f32"]:dtype())
    assert.are.equal("float16", sd["w.bf16"]:dtype())
    assert.are.equal("int64", sd["i.i64"]:dtype())
    assert.are.equal("bool", sd["b.bool"]:dtype())
    assert.are.same({ "w.f32", "w.f64", "w.bf16", "scalar", "empty", "special" }, info.cast:keys())
    assert.are.same({ from = "float32", to = "float16" }, info.cast["w.f32"])
    assert.tensor_near(sd["w.f32"], E.valid.all_dtypes.tensors["w.f32"], { dtype = false, rtol = 1e-3 })
  end)

  it("returns safetensors metadata in info.metadata, in file order", function()
    local _, info = graft.load(DIR .. "all_dtypes.safetensors")
    assert.are.same({ "format", "note" }, info.metadata:keys())
    assert.is_nil(graft.load(DIR .. "all_dtypes.safetensors"):metadata())
  end)
end)

describe("graft.save", function()
  it("picks the format from the extension, or {format =}", function()
    local sd = graft.OrderedDict()
    sd.w = graft.ones(2, 2)
    local p = tmpfile(".weights")
    H.raises("cannot tell the format from the name", graft.save, sd, p)
    graft.save(sd, p, { format = "safetensors" })
    local back, info = graft.load(p)
    assert.are.equal("safetensors", info.format)
    assert.tensor_near(back.w, sd.w)
    H.raises('unknown format "onnx"', graft.save, sd, p, { format = "onnx" })
    H.raises('unknown option "compress"', graft.save, sd, p, { compress = true })
    H.raises("metadata is a safetensors option", graft.save, sd, tmpfile(".pth"), { metadata = { a = "b" } })
    os.remove(p)
  end)

  it("refuses a tensor or a non-table for safetensors", function()
    H.raises("safetensors holds a state dict", graft.save, graft.ones(1), tmpfile(".safetensors"))
  end)
end)

describe(".pth through graft.load / graft.save", function()
  local function check_train(ckpt)
    assert.are.equal(3, ckpt.epoch)
    assert.are.equal("tiny", ckpt.arch)
    assert.are.equal(0.75, ckpt.best_acc)
    local sd = ckpt.state_dict
    assert.are.equal(#E.tiny.keys, #sd)
    for _, k in ipairs(E.tiny.keys) do
      assert.tensor_near(sd["module." .. k], E.tiny.state_dict[k], { rtol = 0, atol = 0 })
    end
    assert.are.equal(0.1, ckpt.optimizer.param_groups[1].lr)
  end

  it("reads a training checkpoint (zip format) with its entries", function()
    local ckpt, info = graft.load(DIR .. "train_ckpt.pth")
    assert.are.equal("pth", info.format)
    check_train(ckpt)
  end)

  it("reads the legacy format", function()
    local ckpt, info = graft.load(DIR .. "train_legacy.pth")
    assert.are.equal("pth_legacy", info.format)
    check_train(ckpt)
  end)

  it("casts the tensors nested anywhere in a checkpoint, naming them with dots", function()
    local ckpt, info = graft.load(DIR .. "train_ckpt.pth", { dtype = "bfloat16" })
    assert.are.equal("bfloat16", ckpt.state_dict["module.head.weight"]:dtype())
    assert.are.equal("int64", ckpt.state_dict["module.body.1.num_batches_tracked"]:dtype())
    assert.are.same({ from = "float32", to = "bfloat16" }, info.cast["state_dict.module.head.weight"])
    local n = 0
    for k in pairs(info.cast) do
      if k:find("^optimizer%.state%.") then n = n + 1 end
    end
    assert.are.equal(#E.tiny.momentum_keys, n) -- the momentum buffers
  end)

  it("refuses a whole pickled model by default, and reads it with allow_unknown", function()
    H.raises("model_whole.pth", graft.load, DIR .. "model_whole.pth")
    local obj = graft.load(DIR .. "model_whole.pth", { allow_unknown = true })
    assert.is_true(graft.is_placeholder(obj))
  end)

  it("round-trips a checkpoint: graft.save .pth, graft.load", function()
    local ckpt = graft.load(DIR .. "train_ckpt.pth")
    local p = tmpfile(".pt")
    graft.save(ckpt, p)
    check_train(graft.load(p))
    local sd = graft.state.unwrap(ckpt)
    graft.save(sd, p)
    local back = graft.load(p)
    assert.are.same(sd:keys(), back:keys())
    os.remove(p)
  end)

  it("converts .pth -> .safetensors -> .pth with the same tensors", function()
    local sd = graft.state.strip_prefix((graft.state.unwrap(graft.load(DIR .. "train_ckpt.pth"))), "module.")
    local st, pt = tmpfile(".safetensors"), tmpfile(".bin")
    graft.save(sd, st)
    graft.save(graft.load(st), pt)
    local back = graft.load(pt)
    assert.are.same(E.tiny.keys, back:keys())
    for _, k in ipairs(E.tiny.keys) do assert.tensor_near(back[k], E.tiny.state_dict[k], { rtol = 0, atol = 0 }) end
    os.remove(st)
    os.remove(pt)
  end)

  it("saves a plain table of tensors with its keys sorted", function()
    local p = tmpfile(".pth")
    graft.save({ b = graft.ones(1), a = graft.zeros(2) }, p)
    assert.are.same({ "a", "b" }, graft.load(p):keys())
    os.remove(p)
  end)
end)
