-- net:load_pretrained(path_or_ckpt, opts): every stage of the pipeline (open, unwrap,
-- strip_prefix incl. "auto", rename, include/exclude, match, policies, copy), every
-- report field and its printing, the zero-loaded error, dry runs (bitwise unchanged),
-- checkpoints made by graft.save and by PyTorch (spec/fixtures/ckpt/*.pth: a
-- DataParallel state dict, {epoch, state_dict, optimizer}, torchvision resnet18's keys).
local graft = require("graft")
local nn = require("graft.nn")
local adapt = require("graft.adapt")
local H = require("spec.helpers")

local CKPT = "spec/fixtures/ckpt/"

-- The message of the error fn raises.
local function errmsg(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

-- The layout of gen_pth.py's Net: conv 3->4 3x3, bn 4, fc 4->2.
local Net = nn.Module:extend("Net")
function Net:__init(o)
  o = o or {}
  self.conv = nn.Conv2d(o.in_channels or 3, 4, 3)
  self.bn = nn.BatchNorm2d(4)
  self.fc = nn.Linear(4, o.classes or 2, { dtype = o.dtype })
end
function Net:forward(x) return self.fc(self.bn(self.conv(x)):relu():mean({ 3, 4 })) end

local Wrapper = nn.Module:extend("Wrapper")
function Wrapper:__init() self.model = Net() end

-- A Net whose every tensor holds distinct values (seeded), as a source of weights.
local function source_net(seed, o)
  graft.manual_seed(seed or 1)
  local net = Net(o)
  graft.no_grad(function()
    for _, t in pairs(net:state_dict()) do
      if t:dtype() == "int64" then t:fill_(42) else t:copy_(graft.randn(table.unpack(t:shape()))) end
    end
  end)
  return net
end

local function snapshot(net)
  local s = {}
  for k, t in pairs(net:state_dict()) do s[k] = t:dtype() .. ":" .. t:contiguous():tobytes() end
  return s
end

local function assert_same_tensor(a, b, what)
  assert.are.equal(a:dtype(), b:dtype(), what)
  assert.are.same(a:shape(), b:shape(), what)
  assert.is_true(a:contiguous():tobytes() == b:contiguous():tobytes(), what or "tensors differ")
end

local tmpfiles = {}
local function tmp(ext)
  local p = os.tmpname() .. ext
  tmpfiles[#tmpfiles + 1] = p
  return p
end

-- Runs fn with io.stderr captured; returns what was written and fn's results.
local function capture_stderr(fn)
  local buf, real = {}, io.stderr
  io.stderr = { write = function(_, ...) for _, s in ipairs({ ... }) do buf[#buf + 1] = s end end }
  local r = table.pack(pcall(fn))
  io.stderr = real
  if not r[1] then error(r[2], 0) end
  return table.concat(buf), table.unpack(r, 2, r.n)
end

local function capture_print(fn)
  local buf, real = {}, _G.print
  _G.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring(select(i, ...)) end
    buf[#buf + 1] = table.concat(parts, "\t")
  end
  local r = table.pack(pcall(fn))
  _G.print = real
  if not r[1] then error(r[2], 0) end
  return table.concat(buf, "\n"), table.unpack(r, 2, r.n)
end

teardown(function()
  for _, p in ipairs(tmpfiles) do os.remove(p) end
end)

describe("load_pretrained: a checkpoint of the same model", function()
  it("copies every tensor in place (identity, requires_grad, BatchNorm buffers kept)", function()
    local src = source_net(1)
    local path = tmp(".pth")
    graft.save(src:state_dict(), path)
    local net = Net()
    local w, rm = net.conv.weight, net.bn.running_mean
    net.fc.bias.requires_grad = false
    local r = net:load_pretrained(path)
    assert.are.equal(9, r.counts.loaded)
    assert.are.same({ "conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
      "bn.num_batches_tracked", "fc.weight", "fc.bias" }, r.loaded)
    for k, t in pairs(src:state_dict()) do assert_same_tensor(net:state_dict()[k], t, k) end
    assert.are.equal(42, net.bn.num_batches_tracked:item())
    assert.is_true(rawequal(w, net.conv.weight))
    assert.is_true(rawequal(rm, net.bn.running_mean))
    assert.is_true(net.conv.weight.requires_grad)
    assert.is_false(net.fc.bias.requires_grad)
    assert.is_true(net.conv.weight.is_leaf)
    assert.is_nil(net.conv.weight.grad_fn)
    assert.are.equal(0, r.counts.missing + r.counts.unexpected + r.counts.mismatched + r.counts.skipped + r.counts.cast)
    assert.are.equal("pth", r.format)
    assert.are.equal(path, r.path)
    assert.are.equal(9, r.model_keys)
    assert.are.equal(9, r.checkpoint_keys)
    assert.is_false(r.dry_run)
  end)

  it("takes a loaded checkpoint, a plain table, a safetensors file and another model", function()
    local src = source_net(2)
    local sd = src:state_dict()
    local plain = {}
    for k, v in pairs(sd) do plain[k] = v end
    local st = tmp(".safetensors")
    graft.save(sd, st)
    for _, from in ipairs({ sd, plain, st, src }) do
      local net = Net()
      local r = net:load_pretrained(from)
      assert.are.equal(9, r.counts.loaded)
      assert_same_tensor(net.fc.weight, src.fc.weight)
    end
    local r = Net():load_pretrained(src)
    assert.are.equal("the model Net", r.source)
    assert.are.equal("safetensors", Net():load_pretrained(st).format)
  end)

  it("converts dtypes and lists the casts", function()
    local src = source_net(3)
    local sd64 = graft.state.cast(src:state_dict(), "float64")
    local net = Net()
    local r = net:load_pretrained(sd64)
    assert.are.equal(8, r.counts.cast) -- every float tensor; num_batches_tracked stays int64
    assert.are.same({ key = "conv.weight", from = "float64", to = "float32" }, r.cast[1])
    assert.are.equal("float32", net.conv.weight:dtype())
    assert_same_tensor(net.conv.weight, src.conv.weight)
    assert.is_truthy(tostring(r):find("(float64 -> float32)", 1, true))
  end)
end)

describe("load_pretrained: picking the weights and transforming keys", function()
  it("unwraps a {epoch, state_dict, optimizer} checkpoint made by graft", function()
    local src = source_net(4)
    local path = tmp(".pth")
    graft.save({ epoch = 3, state_dict = src:state_dict(), optimizer = { param_groups = { { lr = 0.1 } } } }, path)
    local net = Net()
    local r = net:load_pretrained(path)
    assert.are.equal("state_dict", r.unwrapped)
    assert.are.equal(9, r.counts.loaded)
    assert.are.same({ "epoch", "optimizer" }, (function()
      local o = {}
      for i, k in ipairs(r.other_entries) do o[i] = k end
      table.sort(o)
      return o
    end)())
    assert_same_tensor(net.fc.weight, src.fc.weight)
  end)

  it("strips a DataParallel 'module.' prefix given or detected, and says so otherwise", function()
    local src = source_net(5)
    local path = tmp(".pth")
    graft.save(graft.state.add_prefix(src:state_dict(), "module."), path)
    local msg = errmsg(Net().load_pretrained, Net(), path)
    assert.is_truthy(msg:find(('load_pretrained: no tensor of "%s" matches the model (0 of 9 keys): '):format(path), 1, true), msg)
    assert.is_truthy(msg:find('pass {strip_prefix = "module."} (or "auto")', 1, true), msg)
    local net = Net()
    local r = net:load_pretrained(path, { strip_prefix = "module." })
    assert.are.equal(9, r.counts.loaded)
    assert.are.same({ { prefix = "module.", count = 9 } }, r.prefixes)
    net = Net()
    r = net:load_pretrained(path, { strip_prefix = "auto" })
    assert.are.equal(9, r.counts.loaded)
    assert.are.same({ { prefix = "module.", count = 9, auto = true } }, r.prefixes)
    assert_same_tensor(net.bn.running_var, src.bn.running_var)
    assert.is_truthy(tostring(r):find('stripped "module." from 9 keys (auto)', 1, true))
  end)

  it("loads PyTorch's DataParallel and training checkpoints (gen_pth.py)", function()
    local fx = H.fixture("ckpt/pth")
    local dp = Net()
    local r = dp:load_pretrained(CKPT .. "dataparallel.pth", { strip_prefix = "auto", missing = "error", unexpected = "error" })
    assert.are.equal(9, r.counts.loaded)
    local raw = graft.load(CKPT .. "dataparallel.pth")
    assert_same_tensor(dp.conv.weight, raw["module.conv.weight"])
    assert.are.equal(raw["module.bn.num_batches_tracked"]:item(), dp.bn.num_batches_tracked:item())
    assert.is_truthy(fx["dataparallel.pth"])

    local tr = Net()
    r = tr:load_pretrained(CKPT .. "train_ckpt.pth", { missing = "error", unexpected = "error" })
    assert.are.equal("state_dict", r.unwrapped)
    assert.are.equal(9, r.counts.loaded)
    local ck = graft.load(CKPT .. "train_ckpt.pth")
    assert_same_tensor(tr.fc.weight, ck.state_dict["fc.weight"])
    -- the legacy (pre-1.6) format of the same object
    local lg = Net()
    lg:load_pretrained(CKPT .. "legacy_ckpt.pth")
    assert_same_tensor(lg.fc.weight, ck.state_dict["fc.weight"])
  end)

  it('"auto" strips combined prefixes, and a prefix only when more keys match', function()
    local src = source_net(6)
    local sd = graft.state.add_prefix(graft.state.add_prefix(src:state_dict(), "module."), "_orig_mod.")
    local net = Net()
    local r = net:load_pretrained(sd, { strip_prefix = "auto" })
    assert.are.equal(9, r.counts.loaded)
    assert.are.same({ { prefix = "_orig_mod.module.", count = 9, auto = true } }, r.prefixes)
    -- "model." stripped when that matches the model ...
    r = Net():load_pretrained(graft.state.add_prefix(src:state_dict(), "model."), { strip_prefix = "auto" })
    assert.are.equal(9, r.counts.loaded)
    -- ... and kept when the model's own keys start with it
    local w = Wrapper()
    r = w:load_pretrained(graft.state.add_prefix(src:state_dict(), "model."), { strip_prefix = "auto" })
    assert.are.equal(9, r.counts.loaded)
    assert.are.same({}, r.prefixes)
    assert_same_tensor(w.model.fc.weight, src.fc.weight)
    -- nothing to strip: nothing stripped
    r = Net():load_pretrained(src:state_dict(), { strip_prefix = "auto" })
    assert.are.same({}, r.prefixes)
  end)

  it("strips a list of prefixes in order", function()
    local src = source_net(7)
    local sd = graft.state.add_prefix(graft.state.add_prefix(src:state_dict(), "net."), "ema.")
    local r = Net():load_pretrained(sd, { strip_prefix = { "ema.", "net." } })
    assert.are.equal(9, r.counts.loaded)
    assert.are.same({ { prefix = "ema.", count = 9 }, { prefix = "net.", count = 9 } }, r.prefixes)
  end)

  it("applies ordered rename rules, each to the previous result", function()
    local src = source_net(8)
    local sd = graft.state.rename(src:state_dict(), { { "^conv%.", "features.0." }, { "^bn%.", "features.1." },
      { "^fc%.", "classifier." } })
    local net = Net()
    local r = net:load_pretrained(sd, { rename = {
      { "^features%.0%.", "stem." }, -- stem. is not a model name, the next rule fixes it
      { "^stem%.", "conv." },
      { "^features%.1%.", "bn." },
      { "^classifier%.", "fc." },
    } })
    assert.are.equal(9, r.counts.loaded)
    assert.are.same({ from = "features.0.weight", to = "conv.weight" }, r.renamed[1])
    assert.are.equal(9, #r.renamed)
    assert_same_tensor(net.bn.weight, src.bn.weight)
    -- one rule on its own
    r = Net():load_pretrained(graft.state.rename(src:state_dict(), { { "^fc%.", "head." } }), { rename = { "^head%.", "fc." } })
    assert.are.equal(9, r.counts.loaded)
    assert.is_truthy(tostring(r):find("2 renamed", 1, true))
  end)

  it("include / exclude drop keys by rule: listed as skipped, not missing", function()
    local src = source_net(9)
    local net = Net()
    local before = snapshot(net)
    local r = net:load_pretrained(src:state_dict(), { exclude = "^fc%.", missing = "error" })
    assert.are.same({ "fc.weight", "fc.bias" }, r.skipped)
    assert.are.equal(7, r.counts.loaded)
    assert.are.equal(0, r.counts.missing)
    assert.are.equal(before["fc.weight"], snapshot(net)["fc.weight"])
    assert_same_tensor(net.conv.weight, src.conv.weight)
    r = Net():load_pretrained(src:state_dict(), { include = { "^conv%.", "^bn%." }, missing = "error" })
    assert.are.equal(7, r.counts.loaded)
    assert.are.equal(2, r.counts.skipped)
    r = Net():load_pretrained(src:state_dict(), { include = "weight$", exclude = { "^bn" } })
    assert.are.same({ "conv.weight", "fc.weight" }, r.loaded)
    assert.are.equal(7, r.counts.skipped)
    r = Net():load_pretrained(src:state_dict(), { exclude = function(k, v) return v:dim() == 1 end })
    assert.are.same({ "conv.weight", "bn.num_batches_tracked", "fc.weight" }, r.loaded)
    assert.is_truthy(tostring(r):find("(include/exclude)", 1, true))
  end)
end)

describe("load_pretrained: policies", function()
  local src, sd3
  before_each(function()
    src = source_net(10, { classes = 3 }) -- fc [3, 4], [3] where the model has [2, 4], [2]
    sd3 = src:state_dict()
  end)

  it('on_mismatch = "error" (the default) names every key and both shapes', function()
    local net = Net()
    local before = snapshot(net)
    local msg = errmsg(net.load_pretrained, net, sd3)
    assert.is_truthy(msg:find("load_pretrained: 2 tensors of the checkpoint have another shape: fc.weight (model [2, 4], " ..
      "checkpoint [3, 4]), fc.bias (model [2], checkpoint [3])", 1, true), msg)
    assert.is_truthy(msg:find('on_mismatch = "skip"', 1, true))
    assert.are.same(before, snapshot(net)) -- nothing copied when the load fails
  end)

  it('on_mismatch = "skip" keeps the model\'s tensors and reports them', function()
    local net = Net()
    local before = snapshot(net)
    local r = net:load_pretrained(sd3, { on_mismatch = "skip" })
    assert.are.equal(7, r.counts.loaded)
    assert.are.equal(2, r.counts.mismatched)
    assert.are.same({ key = "fc.weight", model = { 2, 4 }, checkpoint = { 3, 4 }, action = "skipped" }, r.mismatched[1])
    assert.are.equal(before["fc.weight"], snapshot(net)["fc.weight"])
    assert.are.equal(0, r.counts.missing)
    assert.is_truthy(tostring(r):find("fc.weight (model [2, 4], checkpoint [3, 4]): skipped", 1, true))
  end)

  it("an adapter function returns the tensor to use", function()
    local net = Net()
    local seen = {}
    local r = net:load_pretrained(sd3, { on_mismatch = function(name, model_t, ckpt_t)
      seen[#seen + 1] = name
      assert.is_false(graft.is_grad_enabled())
      assert.are.same(model_t:shape()[1] + 1, ckpt_t:shape()[1])
      return ckpt_t:narrow(1, 2, 2)
    end })
    assert.are.same({ "fc.weight", "fc.bias" }, seen)
    assert.are.equal(9, r.counts.loaded)
    assert.are.same({ "fc.weight", "fc.bias" }, r.adapted)
    assert.are.equal("adapted", r.mismatched[1].action)
    assert.are.same({ 2, 4 }, r.mismatched[1].shape)
    assert_same_tensor(net.fc.weight, src.fc.weight:narrow(1, 2, 2):contiguous())
    assert.is_true(net.fc.weight.requires_grad)
    assert.is_truthy(tostring(r):find(": adapted", 1, true))
  end)

  it("an adapter may decline with \"skip\"; a wrong shape, a non-tensor or an error names the key", function()
    local r = Net():load_pretrained(sd3, { on_mismatch = function() return "skip" end })
    assert.are.equal("skipped", r.mismatched[1].action)
    H.raises('load_pretrained: the adapter for "fc.weight" returned [3, 4]; the model\'s tensor is [2, 4]', function()
      Net():load_pretrained(sd3, { on_mismatch = function(_, _, c) return c end })
    end)
    H.raises('load_pretrained: the adapter for "fc.weight" returned a nil', function()
      Net():load_pretrained(sd3, { on_mismatch = function() end })
    end)
    H.raises('load_pretrained: the adapter for "fc.weight" failed: boom', function()
      Net():load_pretrained(sd3, { on_mismatch = function() error("boom") end })
    end)
    H.raises('load_pretrained: the adapter for "fc.weight" failed: head (for "fc.weight"): keep[1] = 5 is out of range', function()
      Net():load_pretrained(sd3, { on_mismatch = adapt.head(2, { keep = { 5 } }) })
    end)
  end)

  it("a per-key table: exact names, ordered {pattern, policy} rules, a default", function()
    local net = Net()
    local r = net:load_pretrained(sd3, { on_mismatch = {
      ["fc.weight"] = adapt.head(2, { keep = { 2, 0 } }),
      default = "skip",
    } })
    assert.are.same({ "fc.weight" }, r.adapted)
    assert.are.equal("skipped", r.mismatched[2].action)
    assert_same_tensor(net.fc.weight[1], src.fc.weight[3])
    assert_same_tensor(net.fc.weight[2], src.fc.weight[1])
    -- rules by pattern, in order; the first that matches wins
    net = Net()
    r = net:load_pretrained(sd3, { on_mismatch = {
      { "bias$", "skip" },
      { "^fc%.", adapt.head({ keep = { 1, 2 } }) },
    } })
    assert.are.same({ "fc.weight" }, r.adapted)
    assert_same_tensor(net.fc.weight, src.fc.weight:narrow(1, 2, 2):contiguous())
    -- an exact name beats the rules; the default is "error"
    local msg = errmsg(Net().load_pretrained, Net(), sd3, { on_mismatch = { ["fc.weight"] = "skip" } })
    assert.is_truthy(msg:find("1 tensor of the checkpoint has another shape: fc.bias", 1, true), msg)
    r = Net():load_pretrained(sd3, { on_mismatch = { ["fc.bias"] = "skip", { "^fc", adapt.head() } } })
    assert.are.same({ "fc.weight" }, r.adapted)
  end)

  it("missing: error, warn (stderr and report.warnings) or ignore", function()
    local sd = graft.state.filter(src:state_dict(), "^conv")
    local msg = errmsg(Net().load_pretrained, Net(), sd, { missing = "error" })
    assert.is_truthy(msg:find("load_pretrained: 7 model tensors are not in the checkpoint (left as initialised): " ..
      "bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked, fc.weight, fc.bias", 1, true), msg)
    local err, r = capture_stderr(function() return Net():load_pretrained(sd) end)
    assert.are.equal("load_pretrained: warning: 7 model tensors are not in the checkpoint (left as initialised): " ..
      "bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked, fc.weight, fc.bias\n", err)
    assert.are.equal(1, #r.warnings)
    assert.are.equal(7, r.counts.missing)
    err, r = capture_stderr(function() return Net():load_pretrained(sd, { missing = "ignore" }) end)
    assert.are.equal("", err)
    assert.are.equal(0, #r.warnings)
    assert.are.equal(7, r.counts.missing)
  end)

  it("unexpected: error, warn or ignore, separately from missing", function()
    local sd = src:state_dict()
    sd["aux.weight"] = graft.ones(3)
    sd["fc.weight"], sd["fc.bias"] = nil, nil
    local msg = errmsg(Net().load_pretrained, Net(), sd, { unexpected = "error", missing = "ignore" })
    assert.is_truthy(msg:find("load_pretrained: 1 checkpoint tensor is not in the model (unused): aux.weight", 1, true), msg)
    local err, r = capture_stderr(function() return Net():load_pretrained(sd, { missing = "ignore" }) end)
    assert.are.equal("load_pretrained: warning: 1 checkpoint tensor is not in the model (unused): aux.weight\n", err)
    assert.are.same({ "aux.weight" }, r.unexpected)
    err, r = capture_stderr(function() return Net():load_pretrained(sd, { unexpected = "ignore" }) end)
    assert.is_nil(err:find("unused", 1, true))
    assert.is_truthy(err:find("2 model tensors are not", 1, true))
    -- both errors at once, in one message
    msg = errmsg(Net().load_pretrained, Net(), sd, { unexpected = "error", missing = "error" })
    assert.is_truthy(msg:find("not in the checkpoint", 1, true) and msg:find("not in the model", 1, true), msg)
  end)

  it("hints at a prefix when some keys differ only by one", function()
    local src = source_net(17)
    local sd = graft.state.rename(src:state_dict(), { { "^fc%.", "head.fc." } })
    local _, r = capture_stderr(function() return Net():load_pretrained(sd) end)
    assert.are.same({ "fc.weight", "fc.bias" }, r.missing)
    assert.is_truthy(r.hint and r.hint:find('prefix "head."', 1, true), r.hint)
    assert.is_truthy(tostring(r):find("\n  hint: ", 1, true))
  end)

  it("keeps num_batches_tracked of an old BatchNorm checkpoint (PyTorch's version rule)", function()
    local sd = source_net(11):state_dict()
    sd["bn.num_batches_tracked"] = nil
    sd:set_metadata({ bn = { version = 1 } })
    local net = Net()
    local r = net:load_pretrained(sd, { missing = "error" })
    assert.are.same({ "bn.num_batches_tracked" }, r.defaulted)
    assert.are.equal(0, r.counts.missing)
    assert.are.equal(8, r.counts.loaded)
    sd:set_metadata({ bn = { version = 2 } }) -- a new-format checkpoint without it: missing
    r = Net():load_pretrained(sd, { missing = "ignore" })
    assert.are.same({ "bn.num_batches_tracked" }, r.missing)
  end)
end)

describe("load_pretrained: nothing loaded", function()
  it("is an error naming the file, the key count and a hint", function()
    local path = tmp(".pth")
    graft.save({ ["encoder.weight"] = graft.ones(2, 2) }, path)
    H.raises(('load_pretrained: no tensor of "%s" matches the model (0 of 9 keys): '):format(path), function()
      Net():load_pretrained(path)
    end)
    H.raises("load_pretrained: no tensor of the checkpoint matches the model (0 of 9 keys): the model's keys look like",
      function() Net():load_pretrained({ ["encoder.weight"] = graft.ones(2, 2) }) end)
    -- everything dropped by a rule, or every shape different and skipped
    local sd = source_net(12):state_dict()
    H.raises("include/exclude dropped 9 checkpoint keys", function()
      Net():load_pretrained(sd, { include = "^nothing" })
    end)
    local big = Net({ in_channels = 5, classes = 3 })
    local msg = errmsg(Net().load_pretrained, Net(), graft.state.filter(big:state_dict(),
      function(k) return k == "conv.weight" or k:find("^fc") ~= nil end), { on_mismatch = "skip" })
    assert.is_truthy(msg:find("(0 of 9 keys)", 1, true), msg)
  end)

  it("is allowed with {allow_empty = true}", function()
    local net = Net()
    local before = snapshot(net)
    local r = net:load_pretrained({ ["encoder.weight"] = graft.ones(2) }, { allow_empty = true, missing = "ignore",
      unexpected = "ignore" })
    assert.are.equal(0, r.counts.loaded)
    assert.are.equal(9, r.counts.missing)
    assert.are.same(before, snapshot(net))
  end)
end)

describe("load_pretrained: dry runs", function()
  it("compute the report and change nothing (bitwise)", function()
    local src = source_net(13, { classes = 3 })
    local net = Net()
    local before = snapshot(net)
    local err, out, r = capture_stderr(function()
      return capture_print(function()
        return net:load_pretrained(src:state_dict(), { dry_run = true, on_mismatch = "skip" })
      end)
    end)
    assert.are.same(before, snapshot(net))
    assert.is_true(r.dry_run)
    assert.are.equal(7, r.counts.loaded)
    assert.are.equal(2, r.counts.mismatched)
    assert.are.equal("", err)
    assert.are.equal(tostring(r), out) -- a dry run prints its report unless verbose = false
    assert.is_truthy(out:find("(dry run, nothing copied): 7 of 9 model tensors would load", 1, true), out)
    out = capture_print(function()
      net:load_pretrained(src:state_dict(), { dry_run = true, on_mismatch = "skip", verbose = false })
    end)
    assert.are.equal("", out)
  end)

  it("report what would fail instead of raising, adapters included", function()
    local src = source_net(14, { classes = 3 })
    local net = Net()
    local before = snapshot(net)
    local _, r = capture_print(function()
      return net:load_pretrained(src:state_dict(), { dry_run = true, missing = "error",
        on_mismatch = { ["fc.bias"] = function() return graft.ones(5) end } })
    end)
    assert.are.same(before, snapshot(net))
    assert.are.equal(2, #r.errors)
    assert.is_truthy(r.errors[1]:find('the adapter for "fc.bias" returned [5]', 1, true))
    assert.is_truthy(r.errors[2]:find("1 tensor of the checkpoint has another shape: fc.weight", 1, true))
    assert.is_truthy(tostring(r):find("\n  error: ", 1, true))
    _, r = capture_print(function() return net:load_pretrained({ x = graft.ones(1) }, { dry_run = true }) end)
    assert.is_truthy(r.errors[1]:find("no tensor of the checkpoint matches the model (0 of 9 keys)", 1, true))
    assert.are.same(before, snapshot(net))
  end)

  it("verbose prints the report of a real load too", function()
    local src = source_net(15)
    local out, r = capture_print(function() return Net():load_pretrained(src:state_dict(), { verbose = true }) end)
    assert.are.equal(tostring(r), out)
  end)
end)

describe("load_pretrained: the report", function()
  it("prints counts, then up to 8 names per category", function()
    local net = graft.models.resnet18({ num_classes = 10, init = false })
    local r = net:load_pretrained(CKPT .. "resnet18_expand.pth", { on_mismatch = "skip", dry_run = true, verbose = false })
    local s = tostring(r)
    local lines = {}
    for l in s:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(('load_pretrained "%sresnet18_expand.pth" (dry run, nothing copied): 120 of 122 model tensors would load')
      :format(CKPT), lines[1])
    assert.are.equal("  checkpoint  122 tensors", lines[2])
    assert.are.equal("  loaded       120  conv1.weight, bn1.weight, bn1.bias, bn1.running_mean, bn1.running_var, " ..
      "bn1.num_batches_tracked, layer1.0.conv1.weight, layer1.0.bn1.weight, ... and 112 more", lines[3])
    assert.are.equal("  mismatched     2  fc.weight (model [10, 512], checkpoint [1000, 512]): skipped, " ..
      "fc.bias (model [10], checkpoint [1000]): skipped", lines[4])
    assert.are.equal("  missing        0", lines[5])
    assert.are.equal("  unexpected     0", lines[6])
    assert.are.equal("  skipped        0", lines[7])
    assert.are.equal("  cast           0", lines[8])
    assert.are.equal(8, #lines)
    assert.are.same({ loaded = 120, skipped = 0, missing = 0, unexpected = 0, mismatched = 2, adapted = 0, cast = 0,
      defaulted = 0 }, r.counts)
  end)
end)

describe("load_pretrained: torchvision resnet18 keys (resnet18_expand.pth)", function()
  it("loads into models.resnet18({num_classes = 10}) with the head skipped", function()
    local net = graft.models.resnet18({ num_classes = 10 })
    local fc = snapshot(net)["fc.weight"]
    local r = net:load_pretrained(CKPT .. "resnet18_expand.pth", { on_mismatch = "skip", missing = "error",
      unexpected = "error" })
    assert.are.equal(120, r.counts.loaded)
    assert.are.same({ "fc.weight", "fc.bias" }, { r.mismatched[1].key, r.mismatched[2].key })
    assert.are.equal(fc, snapshot(net)["fc.weight"])
    -- gen_pth.py: value ((i % 7) + 1) * 0.125 for the i-th float tensor, i for integer ones
    assert.are.equal(0.125, net.conv1.weight:min():item())
    assert.are.equal(0.125, net.conv1.weight:max():item())
    assert.are.equal(5, net.bn1.num_batches_tracked:item())
    assert.are.equal(0.5, net.bn1.running_mean:mean():item())
    assert.is_true(net.conv1.weight:is_contiguous())
  end)

  it("adapts the first conv of a real resnet to one input channel", function()
    local net = graft.models.resnet18({ num_classes = 10 })
    net.conv1 = nn.Conv2d(1, 64, 7, { stride = 2, padding = 3, bias = false })
    local r = net:load_pretrained(CKPT .. "resnet18_expand.pth", { on_mismatch = {
      ["conv1.weight"] = adapt.input_channels(1), default = "skip" } })
    assert.are.same({ "conv1.weight" }, r.adapted)
    assert.are.same({ 64, 1, 7, 7 }, net.conv1.weight:shape())
    assert.are.equal(0.375, net.conv1.weight:min():item()) -- 3 channels of 0.125 summed
    assert.are.equal(0.375, net.conv1.weight:max():item())
    local y = net.conv1(graft.randn(1, 1, 32, 32))
    assert.are.same({ 1, 64, 16, 16 }, y:shape())
  end)
end)

describe("load_pretrained: misuse", function()
  it("raises clear errors and leaks nothing", function()
    local net = Net()
    local sd = source_net(16):state_dict()
    H.raises('load_pretrained: unknown option "strict" (options: allow_empty,', function() net:load_pretrained(sd, { strict = false }) end)
    H.raises('load_pretrained: missing must be "error", "warn" or "ignore", got "skip"', function()
      net:load_pretrained(sd, { missing = "skip" })
    end)
    H.raises('load_pretrained: unexpected must be "error", "warn" or "ignore", got boolean', function()
      net:load_pretrained(sd, { unexpected = false })
    end)
    H.raises('load_pretrained: on_mismatch must be "error", "skip" or an adapter', function()
      net:load_pretrained(sd, { on_mismatch = "adapt" })
    end)
    H.raises('load_pretrained: on_mismatch["fc.weight"] must be "error", "skip" or an adapter', function()
      net:load_pretrained(sd, { on_mismatch = { ["fc.weight"] = 3 } })
    end)
    H.raises("load_pretrained: on_mismatch[1] must be a rule {pattern, policy}", function()
      net:load_pretrained(sd, { on_mismatch = { "skip" } })
    end)
    H.raises('load_pretrained: strip_prefix must be a prefix, a list of prefixes or "auto"', function()
      net:load_pretrained(sd, { strip_prefix = true })
    end)
    H.raises("load_pretrained: include must be a Lua pattern, a list of patterns or a function", function()
      net:load_pretrained(sd, { include = 5 })
    end)
    H.raises("load_pretrained: rename: rule 1 must be {pattern, replacement}", function()
      net:load_pretrained(sd, { rename = { { 1, 2 } } })
    end)
    H.raises('load_pretrained: rename: "conv.weight" and "conv.bias" both become "x"', function()
      net:load_pretrained(sd, { rename = { { "^conv%..*", "x" } } })
    end)
    H.raises("load_pretrained: load: cannot open", function() net:load_pretrained("/nonexistent/x.pth") end)
    H.raises("load_pretrained: expected a checkpoint path, a loaded checkpoint (a table) or a model, got a tensor",
      function() net:load_pretrained(graft.ones(2)) end)
    H.raises("load_pretrained: unwrap: no tensors found in the checkpoint", function() net:load_pretrained({ epoch = 1 }) end)
    H.raises("load_pretrained: expected a model (an nn.Module) to load into, got table", function()
      require("graft.pretrained").load({}, sd)
    end)
    H.raises("load_pretrained: options must be a table, got string", function() net:load_pretrained(sd, "strict") end)
  end)
end)
