-- `graft inspect`, `graft convert`, `graft diff` from outside: spawns build/graft (or
-- $GRAFT_BIN) and checks the output and the exit status (0 done, 1 a bad or missing
-- file, 2 bad usage).
local graft = require("graft")
require("graft.checkpoint")

local BIN = os.getenv("GRAFT_BIN") or "build/graft"
local DIR = "spec/fixtures/ckpt_st/"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local temps = {}
local function tmp(ext)
  local p = os.tmpname()
  temps[#temps + 1] = p
  if ext then
    temps[#temps + 1] = p .. ext
    return p .. ext
  end
  return p
end

-- Runs `graft <args>`; returns stdout, stderr, exit status.
local function run(args)
  local out, err = tmp(), tmp()
  local _, _, code = os.execute(("%s %s < /dev/null > %s 2> %s"):format(q(BIN), args, q(out), q(err)))
  return read(out), read(err), code
end

local function has(s, fragment)
  assert.is_truthy(s:find(fragment, 1, true), ("%q\ndoes not contain\n%q"):format(s, fragment))
end

local HAVE_PTH = (function()
  local out = run("-e 'io.write(tostring(graft._pth_load ~= nil))'")
  return out == "true"
end)()

teardown(function()
  for _, p in ipairs(temps) do os.remove(p) end
end)

describe("graft inspect", function()
  it("prints a table of the tensors, totals per dtype and the metadata", function()
    local out, err, code = run("inspect " .. DIR .. "all_dtypes.safetensors")
    assert.are.equal(0, code, err)
    has(out, DIR .. "all_dtypes.safetensors: safetensors, 1.1 KiB\n")
    has(out, "name     dtype     shape   size\n")
    has(out, "w.f32    float32   [2, 3]  24 B\n")
    has(out, "scalar   float32   []       4 B\n")
    has(out, "empty    float32   [0, 3]   0 B\n")
    has(out, "total: 14 tensors, 44 parameters, 157 B\n")
    has(out, "  float32   4 tensors, 11 parameters, 44 B\n")
    has(out, "  bool      1 tensor, 3 parameters, 3 B\n")
    has(out, 'metadata:\n  format = "pt"\n  note = "caf\u{e9} \\"quoted\\" \\\\ back\\nslash"\n')
  end)

  it("adds min, max, mean, std and NaN/Inf counts with --stats", function()
    local out, _, code = run("inspect --stats " .. DIR .. "all_dtypes.safetensors")
    assert.are.equal(0, code)
    assert.is_truthy(out:find("\nname +dtype +shape +size +min +max +mean +std +nan +inf\n"), out)
    assert.is_truthy(out:find("\ni%.i64 +int64 +%[4%] +32 B +%-1099511627776 +4611686018427387904 +"), out)
    assert.is_truthy(out:find("\nspecial +float32 +%[4%] +16 B +%-0 +%-0 +0 +nan +1 +2\n"), out)
    assert.is_truthy(out:find("\ni%.i16 +int16 +%[3%] +6 B +%-32768 +32767 +0 +32767%.5 +0 +0\n"), out)
    assert.is_truthy(out:find("\nempty +float32 +%[0, 3%] +0 B +%- +%- +%- +%- +0 +0\n"), out)
  end)

  it("prints the same as JSON with --json", function()
    local out, _, code = run("inspect --json --stats " .. DIR .. "escapes.safetensors")
    assert.are.equal(0, code)
    has(out, '"format": "safetensors"')
    has(out, '"name": "q\\"u\\\\o/te"')
    has(out, '"shape": [2]')
    has(out, '"std": "nan"')
    has(out, '"totals": {\n    "tensors": 3,\n    "parameters": 4,\n    "bytes": 13,')
    local ok = os.execute("/usr/bin/python3 -c 'import json' 2>/dev/null")
    if ok == true or ok == 0 then
      local path = tmp(".json")
      local f = assert(io.open(path, "wb"))
      f:write(out)
      f:close()
      local p = io.popen("/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d[\"tensors\"]), d[\"tensors\"][0][\"name\"])' " .. path)
      assert.are.equal("3 caf\u{e9}.w\n", p:read("a"))
      p:close()
    end
  end)

  it("shows the entries of a training checkpoint and the state dict of a whole model", function()
    if not HAVE_PTH then
      print("skipped: the .pth reader is not in this build")
      return
    end
    local out, _, code = run("inspect " .. DIR .. "train_ckpt.pth")
    assert.are.equal(0, code)
    has(out, "state_dict.module.body.1.num_batches_tracked  int64    []       8 B\n")
    has(out, "optimizer.state.1.momentum_buffer             float32  [3, 4]  48 B\n")
    has(out, 'other entries:\n  epoch = 3\n  arch = "tiny"\n  best_acc = 0.75\n  optimizer.param_groups.1.lr = 0.1\n')
    has(out, "  optimizer.param_groups.1.params = [0, 1, 2, 3, 4, 5, 6]\n")
    out, _, code = run("inspect " .. DIR .. "model_whole.pth")
    assert.are.equal(0, code)
    has(out, "\ngain ")
    has(out, "\nbody.1.num_batches_tracked ")
    has(out, "total: 11 tensors, 38 parameters, 156 B\n")
  end)

  it("exits 2 with the usage line on bad usage, 1 on a bad file, 0 on --help", function()
    local out, err, code = run("inspect")
    assert.are.equal(2, code)
    assert.are.equal("graft inspect: no FILE given\nusage: graft inspect FILE [--json] [--stats]\n", err)
    _, err, code = run("inspect --color x")
    assert.are.equal(2, code)
    has(err, "unknown option '--color'")
    _, err, code = run("inspect nope.safetensors")
    assert.are.equal(1, code)
    assert.are.equal('graft inspect: load: cannot open "nope.safetensors": No such file or directory\n', err)
    _, err, code = run("inspect " .. DIR .. "hostile/overlap.safetensors")
    assert.are.equal(1, code)
    has(err, 'overlaps tensor "a", which ends at byte 8\n')
    out, _, code = run("inspect --help")
    assert.are.equal(0, code)
    has(out, "usage: graft inspect FILE [--json] [--stats]\n")
  end)
end)

describe("graft convert", function()
  it("converts safetensors to safetensors with a cast and a prefix stripped", function()
    local dst = tmp(".safetensors")
    local out, err, code = run(("convert %s %s --dtype bfloat16 --strip-prefix body."):format(DIR .. "tiny.safetensors", dst))
    assert.are.equal(0, code, err)
    has(out, "stripped 'body.' from 7 keys\ncast 10 tensors to bfloat16\nwrote " .. dst .. ": 11 tensors")
    local sd = graft.load(dst)
    assert.are.equal("bfloat16", sd["0.weight"]:dtype())
    assert.are.equal("int64", sd["1.num_batches_tracked"]:dtype())
  end)

  it("exits 2 on bad usage and 1 on an unwritable output", function()
    local _, err, code = run("convert " .. DIR .. "tiny.safetensors")
    assert.are.equal(2, code)
    has(err, "graft convert: IN and OUT are needed\nusage: graft convert IN OUT")
    _, err, code = run("convert a b --format onnx")
    assert.are.equal(2, code)
    _, err, code = run("convert " .. DIR .. "tiny.safetensors /nonexistent/dir/x.safetensors")
    assert.are.equal(1, code)
    has(err, '"/nonexistent/dir/x.safetensors"')
    _, err, code = run("convert " .. DIR .. "tiny.safetensors " .. tmp(".onnx"))
    assert.are.equal(1, code)
    has(err, "cannot tell the format")
  end)

  it("converts a training checkpoint (.pth) to safetensors with --unwrap, and back", function()
    if not HAVE_PTH then
      print("skipped: the .pth reader is not in this build")
      return
    end
    local st, pt = tmp(".safetensors"), tmp(".pth")
    local _, err, code = run(("convert %s %s"):format(DIR .. "train_ckpt.pth", st))
    assert.are.equal(1, code)
    has(err, "add --unwrap")
    local out
    out, err, code = run(("convert %s %s --unwrap --strip-prefix module."):format(DIR .. "train_ckpt.pth", st))
    assert.are.equal(0, code, err)
    has(out, "unwrapped 'state_dict' (the checkpoint also held: epoch, arch, best_acc, optimizer)\n")
    out, err, code = run(("convert %s %s"):format(st, pt))
    assert.are.equal(0, code, err)
    local a, b = graft.load(DIR .. "tiny.safetensors"), graft.load(pt)
    assert.are.same(a:keys(), b:keys())
    for k, v in pairs(a) do assert.are.equal(0, (v:double() - b[k]:double()):abs():max():item()) end
    -- a whole pickled model
    out, err, code = run(("convert %s %s --unwrap"):format(DIR .. "model_whole.pth", st))
    assert.are.equal(0, code, err)
    has(out, "extracted the state dict of the pickled model\n")
    assert.are.same(a:keys(), graft.load(st):keys())
  end)
end)

describe("graft diff", function()
  it("lists keys only in A or B, shape or dtype changes and the largest differences", function()
    local out, err, code = run(("diff %s %s"):format(DIR .. "tiny.safetensors", DIR .. "tiny_changed.safetensors"))
    assert.are.equal(0, code, err)
    assert.are.equal(table.concat({
      "A: " .. DIR .. "tiny.safetensors (safetensors, 11 tensors)",
      "B: " .. DIR .. "tiny_changed.safetensors (safetensors, 11 tensors)",
      "only in A (1):",
      "  scale",
      "only in B (1):",
      "  extra",
      "shape or dtype differs (1):",
      "  gain: A float32 [1], B float64 [1]",
      "values differ (2 tensors), largest max|A - B| first:",
      "  name         max|A - B|",
      "  head.weight         0.5",
      "  body.0.bias       0.125",
      "identical: 8 tensors",
      "",
    }, "\n"), out)
  end)

  it("caps the list with --top", function()
    local out, _, code = run(("diff --top 1 %s %s"):format(DIR .. "tiny.safetensors", DIR .. "tiny_changed.safetensors"))
    assert.are.equal(0, code)
    has(out, "  head.weight         0.5\n  ... and 1 more (--top 0 lists all)\n")
    local _, err
    _, err, code = run("diff --top x a b")
    assert.are.equal(2, code)
    has(err, "--top must be a count")
    -- every list is capped, the shape changes too
    local a, b = tmp(".safetensors"), tmp(".safetensors")
    graft.save({ w1 = graft.zeros(2), w2 = graft.zeros(2), w3 = graft.zeros(2) }, a)
    graft.save({ w1 = graft.zeros(3), w2 = graft.zeros(4), w3 = graft.zeros(5) }, b)
    out, _, code = run(("diff --top 1 %s %s"):format(a, b))
    assert.are.equal(0, code)
    has(out, "shape or dtype differs (3):\n  w1: A float32 [2], B float32 [3]\n  ... and 2 more (--top 0 lists all)\n")
    out = run(("diff --top 0 %s %s"):format(a, b))
    has(out, "  w3: A float32 [2], B float32 [5]\n")
  end)

  it("compares training checkpoints with --unwrap and --strip-prefix, and other entries", function()
    if not HAVE_PTH then
      print("skipped: the .pth reader is not in this build")
      return
    end
    local out, err, code = run(("diff %s %s --unwrap --strip-prefix module."):format(DIR .. "train_ckpt.pth",
      DIR .. "tiny.safetensors"))
    assert.are.equal(0, code, err)
    has(out, "identical: 11 tensors\n")
    out, err, code = run(("diff %s %s"):format(DIR .. "train_ckpt.pth", DIR .. "train_legacy.pth"))
    assert.are.equal(0, code, err)
    has(out, "only in A (0)\nonly in B (0)\nshape or dtype differs (0)\nvalues differ (0 tensors)\nidentical: 18 tensors\n")
  end)

  it("exits 2 on bad usage, 1 on a missing file", function()
    local _, err, code = run("diff " .. DIR .. "tiny.safetensors")
    assert.are.equal(2, code)
    has(err, "usage: graft diff A B")
    _, err, code = run("diff " .. DIR .. "tiny.safetensors missing.pth")
    assert.are.equal(1, code)
    has(err, 'graft diff: load: cannot open "missing.pth"')
  end)
end)
