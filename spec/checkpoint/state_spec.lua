-- graft.state: each tool returns a new state dict, never modifies its input, and
-- reports what it did; check_keys' report and error; extract on placeholder modules
-- (built here, and from a real whole-model pickle when the .pth reader is in the build).
local graft = require("graft")
require("graft.checkpoint")
local H = require("spec.helpers")
local S = graft.state
local OrderedDict = graft.OrderedDict

local DIR = "spec/fixtures/ckpt_st/"
local E = H.fixture("ckpt_st/expected")

local function od(pairs_list)
  local d = OrderedDict()
  for _, kv in ipairs(pairs_list) do d[kv[1]] = kv[2] end
  return d
end

-- A state dict of a small model, with module metadata as PyTorch carries it.
local function model_sd(prefix)
  prefix = prefix or ""
  local d = od({
    { prefix .. "conv.weight", graft.ones(4, 3) },
    { prefix .. "conv.bias", graft.zeros(4) },
    { prefix .. "bn.running_mean", graft.zeros(4) },
    { prefix .. "bn.num_batches_tracked", graft.tensor(0) },
    { prefix .. "fc.weight", graft.ones(10, 4) },
    { prefix .. "fc.bias", graft.zeros(10) },
  })
  d:set_metadata({ [""] = { version = 1 }, [prefix .. "bn"] = { version = 2 } })
  return d
end

local function snapshot(d)
  local s = {}
  for k, v in pairs(d) do s[#s + 1] = { k, v } end
  return s
end

-- Captures what print writes while fn runs.
local function captured(fn, ...)
  local lines, old = {}, print
  _G.print = function(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    lines[#lines + 1] = table.concat(parts, "\t")
  end
  local ok, r = pcall(fn, ...)
  _G.print = old
  if not ok then error(r, 0) end
  return r, table.concat(lines, "\n")
end

describe("graft.state.unwrap", function()
  it("finds the weights under state_dict and says what else the checkpoint held", function()
    local sd = model_sd()
    local ckpt = od({ { "epoch", 3 }, { "state_dict", sd }, { "optimizer", { state = {} } }, { "arch", "r18" } })
    local before = snapshot(ckpt)
    local out, info = S.unwrap(ckpt)
    assert.are_not.equal(sd, out)
    assert.are.same(sd:keys(), out:keys())
    assert.are.equal(sd["fc.weight"], out["fc.weight"]) -- shared tensors, a new dict
    assert.are.equal(sd:metadata(), out:metadata())
    assert.are.equal("state_dict", info.key)
    assert.are.same({ "epoch", "optimizer", "arch" }, info.other_keys)
    assert.are.equal(3, info.entries.epoch)
    assert.are.equal("r18", info.entries.arch)
    assert.are.same(before, snapshot(ckpt))
  end)

  it("tries the keys in order: state_dict, model, model_state_dict, state_dict_ema, module", function()
    local a, b = model_sd("a."), model_sd("b.")
    local _, info = S.unwrap({ model = a, state_dict_ema = b })
    assert.are.equal("model", info.key)
    local out
    out, info = S.unwrap({ state_dict_ema = b, module = a })
    assert.are.equal("state_dict_ema", info.key)
    assert.are.equal("b.conv.weight", out:keys()[1])
    out, info = S.unwrap({ model_state_dict = a, epoch = 1 })
    assert.are.equal("model_state_dict", info.key)
  end)

  it("descends through nested wrappers", function()
    local _, info = S.unwrap({ model = { state_dict = model_sd() } })
    assert.are.equal("model.state_dict", info.key)
  end)

  it("returns the checkpoint itself when it is the state dict", function()
    local sd = model_sd()
    local out, info = S.unwrap(sd)
    assert.is_nil(info.key)
    assert.are.same(sd:keys(), out:keys())
    assert.are_not.equal(sd, out)
  end)

  it("raises when there are no tensors", function()
    H.raises("unwrap: no tensors found in the checkpoint (keys: epoch, lr)", S.unwrap, { epoch = 1, lr = 0.1 })
    H.raises("unwrap: expected a checkpoint", S.unwrap, graft.ones(1))
  end)
end)

describe("graft.state prefixes", function()
  it("strip_prefix removes the prefix from the keys that start with it only", function()
    local sd = model_sd("module.")
    sd.other = graft.ones(1)
    local out, n = S.strip_prefix(sd, "module.")
    assert.are.same({ "conv.weight", "conv.bias", "bn.running_mean", "bn.num_batches_tracked", "fc.weight", "fc.bias", "other" },
      out:keys())
    assert.are.equal(6, n)
    assert.are.equal("module.conv.weight", sd:keys()[1]) -- input untouched
    assert.are.same({ version = 2 }, out:metadata()["bn"])
  end)

  it("strip_prefix raises when two keys collide", function()
    H.raises('strip_prefix: "module.a" and "a" both become "a"', S.strip_prefix,
      od({ { "module.a", graft.ones(1) }, { "a", graft.ones(1) } }), "module.")
  end)

  it("add_prefix prefixes every key (and the module metadata)", function()
    local out = S.add_prefix(model_sd(), "backbone.")
    assert.are.equal("backbone.conv.weight", out:keys()[1])
    assert.are.same({ version = 2 }, out:metadata()["backbone.bn"])
    assert.are.same({ version = 1 }, out:metadata()["backbone"])
  end)
end)

describe("graft.state.filter", function()
  it("keeps the keys a Lua pattern finds, and lists the dropped", function()
    local sd = model_sd()
    local out, dropped = S.filter(sd, "^fc%.")
    assert.are.same({ "fc.weight", "fc.bias" }, out:keys())
    assert.are.same({ "conv.weight", "conv.bias", "bn.running_mean", "bn.num_batches_tracked" }, dropped)
    assert.are.equal(6, #sd)
  end)

  it("takes a function of key and tensor", function()
    local out = S.filter(model_sd(), function(k, t) return t:dim() == 1 and not k:find("bn") end)
    assert.are.same({ "conv.bias", "fc.bias" }, out:keys())
  end)

  it("raises on anything else", function()
    H.raises("filter: expected a Lua pattern or a function", S.filter, model_sd(), 3)
  end)
end)

describe("graft.state.rename", function()
  it("applies every rule in order, each to the result of the one before", function()
    local out, renamed = S.rename(model_sd(), { { "^fc%.", "head." }, { "^head%.(%w+)$", "classifier.%1" }, { "bn", "norm" } })
    assert.are.same({ "conv.weight", "conv.bias", "norm.running_mean", "norm.num_batches_tracked", "classifier.weight",
      "classifier.bias" }, out:keys())
    assert.are.same({ "fc.weight", "classifier.weight" }, renamed[3])
    assert.are.equal(4, #renamed)
  end)

  it("raises when two keys end up equal, or on a bad rule", function()
    H.raises('rename: "conv.weight" and "fc.weight" both become "x.weight"', S.rename, model_sd(),
      { { "^%w+%.weight$", "x.weight" } })
    H.raises("rename: rule 1 must be {pattern, replacement}", S.rename, model_sd(), { "fc" })
  end)
end)

describe("graft.state.select_matching", function()
  it("keeps the keys present in both with equal shapes and says why the others were dropped", function()
    local target = model_sd()
    target["fc.weight"] = graft.ones(2, 4)
    target["fc.bias"] = graft.zeros(2)
    local sd = model_sd()
    sd["extra"] = graft.ones(1)
    local out, dropped = S.select_matching(target, sd)
    assert.are.same({ "conv.weight", "conv.bias", "bn.running_mean", "bn.num_batches_tracked" }, out:keys())
    assert.are.same({ key = "fc.weight", reason = "shape mismatch", expected = { 2, 4 }, got = { 10, 4 } }, dropped[1])
    assert.are.same({ key = "fc.bias", reason = "shape mismatch", expected = { 2 }, got = { 10 } }, dropped[2])
    assert.are.same({ key = "extra", reason = "missing in target", got = { 1 } }, dropped[3])
    assert.are.equal(7, #sd)
  end)

  it("accepts a model (anything with a state_dict method) as the target", function()
    local model = { state_dict = function() return model_sd() end }
    local out = S.select_matching(model, model_sd())
    assert.are.equal(6, #out)
  end)
end)

describe("graft.state.cast", function()
  it("casts floating tensors only, and reports each", function()
    local sd = model_sd()
    local out, report = S.cast(sd, "bfloat16")
    assert.are.equal("bfloat16", out["conv.weight"]:dtype())
    assert.are.equal("int64", out["bn.num_batches_tracked"]:dtype())
    assert.are.equal(sd["bn.num_batches_tracked"], out["bn.num_batches_tracked"])
    assert.are.equal("float32", sd["conv.weight"]:dtype())
    assert.are.equal(5, #report)
    assert.are.same({ from = "float32", to = "bfloat16" }, report["fc.bias"])
  end)

  it("refuses a non-floating dtype", function()
    H.raises('cast: dtype "int32" is not a floating dtype', S.cast, model_sd(), "int")
    H.raises('cast: unknown dtype "f33"', S.cast, model_sd(), "f33")
  end)
end)

describe("graft.state.check_keys", function()
  it("returns used, missing, unused, mismatched and prints counts then names", function()
    local target = model_sd()
    target["head.weight"] = graft.ones(2)
    local sd = model_sd()
    sd["fc.weight"] = graft.ones(1000, 4)
    sd["aux.weight"] = graft.ones(3)
    sd["conv.bias"] = nil
    local r, out = captured(S.check_keys, target, sd)
    assert.are.same({ "conv.weight", "bn.running_mean", "bn.num_batches_tracked", "fc.bias" }, r.used)
    assert.are.same({ "conv.bias", "head.weight" }, r.missing)
    assert.are.same({ "aux.weight" }, r.unused)
    assert.are.same({ expected = { 10, 4 }, got = { 1000, 4 } }, r.mismatched["fc.weight"])
    assert.are.same({ "fc.weight" }, r.mismatched_keys)
    assert.are.equal(table.concat({
      "check_keys: 4 of 7 model keys loaded; 2 missing, 1 shape mismatch, 1 unused in the checkpoint",
      "  missing (2): conv.bias, head.weight",
      "  shape mismatch (1): fc.weight (model [10, 4], checkpoint [1000, 4])",
      "  unused (1): aux.weight",
    }, "\n"), out)
  end)

  it("caps each list at 10 names, and is silent with {quiet = true}", function()
    local target, sd = OrderedDict(), OrderedDict()
    target.w = graft.ones(1)
    sd.w = graft.ones(1)
    for i = 1, 25 do sd["u" .. i] = graft.ones(1) end
    local _, out = captured(S.check_keys, target, sd)
    assert.is_truthy(out:find("unused (25): u1, u2, u3, u4, u5, u6, u7, u8, u9, u10, ... and 15 more", 1, true))
    local r, quiet = captured(S.check_keys, target, sd, { quiet = true })
    assert.are.equal("", quiet)
    assert.are.equal(25, #r.unused)
  end)

  it("raises when nothing would be used, with the prefix to strip", function()
    H.raises('check_keys: no key of the checkpoint matches the model (0 of 6 used): the checkpoint\'s keys carry the prefix "module." (6 would match once stripped, e.g. "module.conv.weight"): use graft.state.strip_prefix(sd, "module.")',
      S.check_keys, model_sd(), model_sd("module."))
  end)

  it("counts the keys found with other shapes in the error", function()
    local sd = model_sd()
    for _, k in ipairs(sd:keys()) do sd[k] = graft.ones(7, 7) end
    H.raises('(0 of 6 used and 6 with other shapes): every key has another shape in the checkpoint (e.g. "conv.weight": model [4, 3], checkpoint [7, 7])',
      S.check_keys, model_sd(), sd)
  end)

  it("raises with the prefix to add, or the checkpoint to unwrap", function()
    H.raises('the model\'s keys carry the prefix "backbone."', S.check_keys, model_sd("backbone."), model_sd())
    H.raises('the checkpoint holds "state_dict": take the weights out first (graft.state.unwrap)', S.check_keys,
      model_sd(), od({ { "state_dict", model_sd() }, { "epoch", 1 } }))
    H.raises("the model's keys look like \"conv.weight\", \"conv.bias\"; the checkpoint's like \"x\"", S.check_keys,
      model_sd(), od({ { "x", graft.ones(1) } }))
  end)

  it("prints the prefix hint when part of the keys match", function()
    local sd = model_sd("module.")
    sd["conv.weight"] = graft.ones(4, 3)
    local r, out = captured(S.check_keys, model_sd(), sd)
    assert.are.equal(1, #r.used)
    assert.is_truthy(out:find('hint: the checkpoint\'s keys carry the prefix "module."', 1, true))
  end)
end)

-- A placeholder as the .pth reader makes them with {allow_unknown = true}.
local function placeholder(class, state)
  return setmetatable({ __class = class, __args = {}, __state = state }, graft._Placeholder)
end

local function module(params, buffers, children, np)
  local st = OrderedDict()
  st.training = true
  st._parameters = od(params or {})
  st._buffers = od(buffers or {})
  st._non_persistent_buffers_set = np or placeholder("builtins.set", nil)
  st._modules = od(children or {})
  return placeholder("torch.nn.modules.module.Module", st)
end

describe("graft.state.extract", function()
  it("walks placeholder modules: parameters, persistent buffers, then children, depth first", function()
    local w, b, rm, cache, scale = graft.ones(3, 2), graft.zeros(3), graft.zeros(3), graft.zeros(2), graft.ones(1)
    local lin = module({ { "weight", w }, { "bias", b } })
    local bn = module({ { "weight", graft.ones(3) }, { "bias", graft.None } }, { { "running_mean", rm } })
    local set = setmetatable({ __class = "builtins.set", __args = { { "cache" } } }, graft._Placeholder)
    local root = module({ { "gain", graft.ones(1) } }, { { "cache", cache }, { "scale", scale } },
      { { "body", module({}, {}, { { "0", lin }, { "1", bn }, { "2", graft.None } }) }, { "head", lin } }, set)
    local sd = S.extract(root)
    assert.are.same({ "gain", "scale", "body.0.weight", "body.0.bias", "body.1.weight", "body.1.running_mean",
      "head.weight", "head.bias" }, sd:keys())
    assert.are.equal(w, sd["head.weight"])
    assert.are.equal(w, sd["body.0.weight"])
  end)

  it("is what unwrap uses for a model saved inside a checkpoint", function()
    local root = module({ { "w", graft.ones(2) } })
    local sd, info = S.unwrap({ model = root, epoch = 2 })
    assert.are.equal("model", info.key)
    assert.is_true(info.extracted)
    assert.are.same({ "w" }, sd:keys())
  end)

  it("raises on anything that is not a module", function()
    H.raises("extract: expected a pickled model", S.extract, 3)
    H.raises("extract: expected a pickled model", S.extract, placeholder("x.Y", nil))
  end)
end)

describe("graft.state.flatten", function()
  it("walks nested dicts and lists with dotted names, 1-based list positions", function()
    local ckpt = od({ { "epoch", 3 }, { "sd", od({ { "w", graft.ones(1) } }) },
      { "opt", { param_groups = { { lr = 0.1, params = { 0, 1 } } } } }, { "none", graft.None } })
    local flat = S.flatten(ckpt)
    assert.are.same({ "epoch", "sd.w", "opt.param_groups.1.lr", "opt.param_groups.1.params.1",
      "opt.param_groups.1.params.2", "none" }, flat:keys())
    assert.are.equal(0.1, flat["opt.param_groups.1.lr"])
  end)
end)

describe("graft.state on real checkpoints", function()
  it("unwraps a training checkpoint and strips DataParallel's prefix", function()
    local ckpt = graft.load(DIR .. "train_ckpt.pth")
    local sd, info = S.unwrap(ckpt)
    assert.are.equal("state_dict", info.key)
    assert.are.same({ "epoch", "arch", "best_acc", "optimizer" }, info.other_keys)
    sd = S.strip_prefix(sd, "module.")
    assert.are.same(E.tiny.keys, sd:keys())
    local r = S.check_keys(graft.load(DIR .. "tiny.safetensors"), sd, { quiet = true })
    assert.are.equal(#E.tiny.keys, #r.used)
  end)

  it("extracts the state dict of a whole pickled model, with PyTorch's keys and order", function()
    local obj = graft.load(DIR .. "model_whole.pth", { allow_unknown = true })
    local sd = S.extract(obj)
    assert.are.same(E.tiny.keys, sd:keys())
    for _, k in ipairs(E.tiny.keys) do assert.tensor_near(sd[k], E.tiny.state_dict[k], { rtol = 0, atol = 0 }) end
  end)
end)
