-- graft.nn.Module: registration, iteration, state_dict / load_state_dict (keys, order,
-- metadata and every error text against PyTorch 1.13: spec/fixtures/nn.lua), modes,
-- conversion, freezing, containers, printing, the error path of nested calls.
local graft = require("graft")
local nn = require("graft.nn")
local H = require("spec.helpers")

local fx = H.fixture("nn")

-- The message of the error fn raises, without a "file:line: " prefix.
local function errmsg(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return (tostring(err):gsub("^[^\n]-:%d+: ", ""))
end

local function names(iter_fn)
  local out = {}
  for n in iter_fn do out[#out + 1] = n end
  return out
end

-- The module of pytorch-semantics.md section 1.2.
local Head = nn.Module:extend("Head")
function Head:__init()
  self:register_buffer("b_np", graft.zeros(2), { persistent = false })
  self.lin = nn.Linear(2, 2)
  self:register_buffer("b_p", graft.ones(2))
  self.scale = nn.Parameter(graft.ones(1))
  self:register_parameter("nothing", nil)
  self:register_buffer("nobuf", nil)
end

local Root = nn.Module:extend("Root")
function Root:__init()
  self.body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
  self.head = Head()
  self.w = nn.Parameter(graft.zeros(3))
  self.emb = nn.Embedding(10, 3)
  self.out = nn.Linear(3, 10, { bias = false })
  self.out.weight = self.emb.weight
end

describe("nn.Module registration and state_dict", function()
  local m = fx.mechanics

  it("orders keys as PyTorch: own parameters, then buffers, then children, depth first", function()
    local root = Root()
    local sd = root:state_dict()
    assert.are.same(m.state_dict_keys, sd:keys())
    assert.are.same(m.named_parameters, names(root:named_parameters()))
    assert.are.same(m.named_buffers, names(root:named_buffers()))
    assert.are.same(m.named_modules, names(root:named_modules()))
    assert.are.same(m.named_children, names(root:named_children()))
    assert.are.equal(m.num_parameters, #root:parameters())
    assert.are.equal(m.repr, tostring(root))
  end)

  it("records _metadata versions per module path", function()
    local meta = Root():state_dict():metadata()
    local n = 0
    for _, kv in ipairs(m.metadata) do
      assert.are.equal(kv[2], meta[kv[1]].version, kv[1])
      n = n + 1
    end
    for _ in pairs(meta) do n = n - 1 end
    assert.are.equal(0, n)
  end)

  it("keeps a reassigned name in place and moves a deleted one to the end", function()
    local mod = nn.Module()
    mod.a = nn.Linear(1, 1)
    mod.b = nn.ReLU()
    mod.c = nn.Parameter(graft.zeros(1))
    mod.a = nn.Linear(1, 2)
    mod:delattr("b")
    mod.b = nn.Tanh()
    assert.are.same(m.reassign_children, names(mod:named_children()))
    assert.are.same(m.reassign_keys, mod:state_dict():keys())
    assert.are.equal(2, mod.a.out_features)
  end)

  it("returns detached aliases: writing a state-dict tensor writes the model", function()
    local l = nn.Linear(2, 2)
    local sd = l:state_dict()
    assert.is_false(sd.weight.requires_grad)
    sd.weight:fill_(3)
    assert.are.same({ { 3, 3 }, { 3, 3 } }, l.weight:tolist())
    assert.are.equal(l.weight, l:state_dict({ keep_vars = true }).weight)
    assert.are.same({ "p.weight", "p.bias" }, l:state_dict({ prefix = "p." }):keys())
  end)

  it("lists tied tensors under every name in state_dict but once in parameters()", function()
    local root = Root()
    local sd = root:state_dict({ keep_vars = true })
    assert.are.equal(sd["emb.weight"], sd["out.weight"])
    local count = 0
    for _, p in ipairs(root:parameters()) do
      if p == root.emb.weight then count = count + 1 end
    end
    assert.are.equal(1, count)
    assert.are.equal(#root:parameters() + 1, #names(root:named_parameters({ remove_duplicate = false })))
  end)

  it("visits a shared child once in named_modules but under both names in state_dict", function()
    local shared = nn.Linear(1, 1)
    local s = nn.Sequential(shared, shared)
    assert.are.same({ "", "0" }, names(s:named_modules()))
    assert.are.same({ "0.weight", "0.bias", "1.weight", "1.bias" }, s:state_dict():keys())
  end)

  it("routes assignments: parameters, modules, buffers, plain attributes", function()
    local mod = nn.Module()
    mod.scale = 2
    mod.t = graft.zeros(2) -- a plain tensor is an attribute, not a buffer
    mod:register_buffer("buf", graft.zeros(1))
    mod.buf = graft.ones(1) -- replaces the buffer in place
    assert.are.same({}, names(mod:named_parameters()))
    assert.are.same({ "buf" }, names(mod:named_buffers()))
    assert.are.same({ 1 }, mod.buf:tolist())
    assert.are.equal(2, mod.scale)
    -- a parameter replaces an attribute of the same name
    mod.scale = nn.Parameter(graft.ones(1))
    assert.are.same({ "scale" }, names(mod:named_parameters()))
    -- nil keeps a registered name as PyTorch's None: invisible, still registered
    mod.scale = nil
    assert.are.same({}, names(mod:named_parameters()))
    assert.is_nil(mod.scale)
    assert.are.same({ "buf" }, mod:state_dict():keys())
  end)

  it("raises PyTorch's registration errors", function()
    local r = fx.register
    assert.are.equal(r.param_dot, errmsg(function() nn.Module():register_parameter("a.b", nil) end))
    assert.are.equal(r.param_empty, errmsg(function() nn.Module():register_parameter("", nil) end))
    assert.are.equal(r.buffer_dot, errmsg(function() nn.Module():register_buffer("a.b", nil) end))
    assert.are.equal(r.buffer_empty, errmsg(function() nn.Module():register_buffer("", nil) end))
    assert.are.equal(r.module_dot, errmsg(function() nn.Module():add_module("a.b", nil) end))
    assert.are.equal(r.module_empty, errmsg(function() nn.Module():add_module("", nil) end))
    assert.are.equal(r.param_exists, errmsg(function() nn.Linear(1, 1):register_parameter("in_features", nil) end))
    assert.are.equal(r.param_tensor, errmsg(function() nn.Module():register_parameter("w", graft.zeros(1)) end))
    assert.are.equal(r.param_assign_tensor, errmsg(function() nn.Linear(1, 1).weight = graft.zeros(1) end))
    assert.are.equal(r.child_assign_tensor, errmsg(function() nn.Sequential(nn.ReLU())["0"] = graft.zeros(1) end))
    assert.are.equal("attribute 'train' already exists", errmsg(function() nn.Module():add_module("train", nn.ReLU()) end))
    assert.are.equal("attribute 'eval' already exists", errmsg(function() nn.Module().eval = nn.ReLU() end))
    assert.are.equal("number is not a Module subclass", errmsg(function() nn.Module():add_module("x", 3) end))
  end)

  it("nn.Parameter marks a leaf that requires grad", function()
    local t = graft.randn(2) * 2 -- not a leaf once it requires grad below
    local p = nn.Parameter(t)
    assert.is_true(p.requires_grad and p.is_leaf and nn.is_parameter(p))
    local frozen = nn.Parameter(graft.zeros(2), false)
    assert.is_false(frozen.requires_grad)
    assert.is_true(nn.is_parameter(frozen))
    local x = graft.randn(2, { requires_grad = true }) * 3
    local q = nn.Parameter(x)
    assert.is_true(q.is_leaf)
    assert.is_false(nn.is_parameter(graft.zeros(1)))
    H.raises("only tensors of floating point dtype can require gradients", nn.Parameter, graft.zeros(2, { dtype = "int64" }))
  end)
end)

describe("nn.Module:load_state_dict", function()
  local L = fx.load

  local function seq()
    return nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
  end

  local function bad_dict(with_size_error)
    local s = seq():state_dict()
    local bad = graft.OrderedDict()
    bad["0.weight"] = with_size_error and graft.zeros(4, 2) or s["0.weight"]
    bad["0.bias"] = s["0.bias"]
    bad["1.weight"] = s["1.weight"]
    bad["2.weight"] = graft.zeros(1)
    bad["extra"] = graft.zeros(1)
    return bad
  end

  it("gathers missing, unexpected and size errors in PyTorch's message", function()
    assert.are.equal(L.strict, errmsg(function() seq():load_state_dict(bad_dict(true)) end))
    assert.are.equal(L.not_strict, errmsg(function() seq():load_state_dict(bad_dict(true), { strict = false }) end))
    assert.are.equal(L.missing_only, errmsg(function()
      local sd = seq():state_dict()
      sd["0.bias"] = nil
      seq():load_state_dict(sd)
    end))
  end)

  it("returns the missing and unexpected keys when not strict", function()
    local r = seq():load_state_dict(bad_dict(false), { strict = false })
    assert.are.same(L.returned.missing, r.missing_keys)
    assert.are.same(L.returned.unexpected, r.unexpected_keys)
    assert.are.equal(L.returned.repr, tostring(r))
    assert.are.equal(L.all_ok, tostring(seq():load_state_dict(seq():state_dict())))
  end)

  it("reports values that are not tensors", function()
    local sd = seq():state_dict()
    sd["0.bias"] = { 1.0, 2.0, 3.0 }
    assert.are.equal(L.non_tensor, errmsg(function() seq():load_state_dict(sd) end))
  end)

  it("orders keys across nested modules as PyTorch", function()
    local Net = nn.Module:extend("Net")
    function Net:__init()
      self.conv = nn.Conv2d(1, 2, 3)
      self.bn = nn.BatchNorm2d(2)
      self.block = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
      self.fc = nn.Linear(2, 1)
    end
    local ref = Net():state_dict()
    local extra = { zzz = graft.zeros(1), ["bn.extra"] = graft.zeros(1), ["block.1.weight"] = graft.zeros(1),
      ["block.5.weight"] = graft.zeros(1), ["fc.weight"] = graft.zeros(3, 2) }
    local function build(skip)
      local sd = graft.OrderedDict()
      for _, k in ipairs(L.nested_order) do
        if k ~= skip then sd[k] = extra[k] or ref[k] end
      end
      return sd
    end
    assert.are.equal(L.nested, errmsg(function() Net():load_state_dict(build()) end))
    local r = Net():load_state_dict(build("fc.weight"), { strict = false })
    assert.are.same(L.nested_returned.missing, r.missing_keys)
    assert.are.same(L.nested_returned.unexpected, r.unexpected_keys)
  end)

  it("copies into the existing tensors: identity, dtype and requires_grad kept", function()
    local l = nn.Linear(2, 2)
    l.bias.requires_grad = false
    local w, b = l.weight, l.bias
    local sd = graft.OrderedDict()
    sd.weight = graft.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = "float64" }) / 3
    sd.bias = graft.tensor({ 5, 6 }, { dtype = "int64" })
    l:load_state_dict(sd)
    assert.are.equal(w, l.weight)
    assert.are.equal(b, l.bias)
    assert.are.equal("float32", l.weight:dtype())
    assert.tensor_near(l.weight, sd.weight:float(), { rtol = 0, atol = 0 })
    assert.are.same({ 5, 6 }, l.bias:tolist())
    assert.is_true(l.weight.requires_grad)
    assert.is_false(l.bias.requires_grad)
    assert.is_nil(l.weight.grad_fn)
  end)

  it("accepts a plain table and a state dict loaded with graft.load", function()
    local src, dst = nn.Linear(3, 2), nn.Linear(3, 2)
    dst:load_state_dict({ weight = src.weight:detach(), bias = src.bias:detach() })
    assert.tensor_near(dst.weight, src.weight:detach(), { rtol = 0, atol = 0 })
    local base = os.tmpname()
    local path = base .. ".pth"
    graft.save(src:state_dict(), path)
    local sd = graft.load(path)
    os.remove(path)
    os.remove(base)
    local fresh = nn.Linear(3, 2)
    fresh:load_state_dict(sd)
    assert.tensor_near(fresh.bias, src.bias:detach(), { rtol = 0, atol = 0 })
    H.raises("Expected state_dict to be dict-like, got number.", function() fresh:load_state_dict(3) end)
  end)

  it("treats num_batches_tracked as PyTorch: version 2 requires it, older or unknown versions do not", function()
    local bn = nn.BatchNorm2d(3)
    local sd = bn:state_dict()
    assert.are.same(L.bn_v2_metadata, { { "", sd:metadata()[""].version } })
    sd.num_batches_tracked = nil
    assert.are.equal(L.bn_v2_missing, errmsg(function() nn.BatchNorm2d(3):load_state_dict(sd) end))
    -- without metadata (a plain table, safetensors): not missing, the counter unchanged
    local fresh = nn.BatchNorm2d(3)
    graft.no_grad(function() fresh.num_batches_tracked:fill_(5) end)
    local plain = {}
    for k, v in pairs(sd) do plain[k] = v end
    fresh:load_state_dict(plain)
    assert.are.equal(5, fresh.num_batches_tracked:item())
    -- a 1-dim value loads into the 0-dim counter
    plain.num_batches_tracked = graft.tensor({ 7 })
    fresh:load_state_dict(plain)
    assert.are.equal(7, fresh.num_batches_tracked:item())
    assert.are.equal(0, fresh.num_batches_tracked:dim())
  end)

  it("follows PyTorch 2.x for dotted keys under a parameter: unexpected", function()
    local r = nn.Linear(1, 1):load_state_dict({ weight = graft.zeros(1, 1), bias = graft.zeros(1),
      ["weight.foo"] = graft.zeros(1) }, { strict = false })
    assert.are.same({ "weight.foo" }, r.unexpected_keys)
  end)

  it("writes tied weights from both keys, the later one winning", function()
    local root = Root()
    local sd = root:state_dict()
    sd["emb.weight"] = graft.zeros(10, 3)
    sd["out.weight"] = graft.ones(10, 3)
    root:load_state_dict(sd)
    assert.are.equal(30, root.emb.weight:sum():item())
  end)

  it("leaves non-persistent buffers, modes and frozen flags alone", function()
    local h = Head()
    graft.no_grad(function() h.b_np:fill_(9) end)
    h:eval()
    h.lin.weight.requires_grad = false
    h:load_state_dict(Head():state_dict())
    assert.are.same({ 9, 9 }, h.b_np:tolist())
    assert.is_false(h.training)
    assert.is_false(h.lin.weight.requires_grad)
  end)
end)

describe("nn.Module modes, apply, to, zero_grad, clone", function()
  it("train() and eval() set every module's flag", function()
    local root = Root()
    assert.is_true(root.training)
    root:eval()
    for _, mod in ipairs(root:modules()) do assert.is_false(mod.training) end
    assert.are.equal(root, root:train())
    assert.is_true(root.body[2].training)
    H.raises("training mode is expected to be boolean", function() root:train("yes") end)
  end)

  it("apply visits children before their parent", function()
    local seen = {}
    nn.Sequential(nn.ReLU(), nn.Sequential(nn.Tanh())):apply(function(mod) seen[#seen + 1] = mod:_get_name() end)
    assert.are.same({ "ReLU", "Tanh", "Sequential", "Sequential" }, seen)
  end)

  it("to(dtype) converts floating parameters and buffers, keeps flags and ties", function()
    local root = Root()
    root.head.lin.weight.requires_grad = false
    root:to("float64")
    for _, p in ipairs(root:parameters()) do assert.are.equal("float64", p:dtype()) end
    assert.is_true(nn.is_parameter(root.w))
    assert.are.equal("float64", root.body[2].running_mean:dtype())
    assert.are.equal("int64", root.body[2].num_batches_tracked:dtype())
    assert.is_false(root.head.lin.weight.requires_grad)
    assert.is_true(root.w.requires_grad)
    assert.are.equal(root.emb.weight, root.out.weight)
    root:float()
    assert.are.equal("float32", root.w:dtype())
    H.raises("nn.Module.to only accepts floating point dtypes", function() root:to("int64") end)
  end)

  it("zero_grad sets grads to nil, or zeros with {set_to_none = false}", function()
    local l = nn.Linear(2, 1)
    l(graft.randn(3, 2)):sum():backward()
    assert.is_not_nil(l.weight.grad)
    l:zero_grad({ set_to_none = false })
    assert.are.same({ { 0, 0 } }, l.weight.grad:tolist())
    l:zero_grad()
    assert.is_nil(l.weight.grad)
  end)

  it("clone makes an independent deep copy that keeps ties", function()
    local root = Root()
    local c = root:clone()
    assert.are_not.equal(root.w, c.w)
    assert.are.equal(c.emb.weight, c.out.weight)
    graft.no_grad(function() c.w:fill_(1) end)
    assert.are.same({ 0, 0, 0 }, root.w:tolist())
    assert.are.same(root:state_dict():keys(), c:state_dict():keys())
    assert.is_true(c.w.requires_grad)
  end)

  it("get_submodule, get_parameter, get_buffer", function()
    local root = Root()
    assert.are.equal(root.head.lin, root:get_submodule("head.lin"))
    assert.are.equal(root.body[2].running_mean, root:get_buffer("body.1.running_mean"))
    assert.are.equal(root.head.lin.bias, root:get_parameter("head.lin.bias"))
    H.raises("Head has no attribute `nope`", function() root:get_submodule("head.nope") end)
    H.raises("`scale` is not an nn.Module", function() root:get_submodule("head.scale") end)
    H.raises("`b_p` is not an nn.Parameter", function() root:get_parameter("head.b_p") end)
  end)
end)

describe("nn.Module calls and errors", function()
  it("net(x) calls forward and passes several results through", function()
    local mha = nn.MultiheadAttention(4, 2)
    local x = graft.randn(3, 1, 4)
    local out, w = mha(x, x, x)
    assert.are.same({ 3, 1, 4 }, out:shape())
    assert.are.same({ 1, 3, 3 }, w:shape())
  end)

  it("rethrows a child's error with its path", function()
    local Block = nn.Module:extend("Block")
    function Block:__init() self.conv1 = nn.Conv2d(3, 64, 3) end
    function Block:forward(x) return self.conv1(x) end
    local Net = nn.Module:extend("Net")
    function Net:__init() self.layer1 = nn.Sequential(Block()) end
    function Net:forward(x) return self.layer1(x) end
    local net = Net()
    assert.are.equal("in layer1.0.conv1 (nn.Conv2d): Conv2d(3, 64): expected input with 3 channels, got [8, 1, 28, 28]",
      errmsg(net, graft.randn(8, 1, 28, 28)))
    -- the innermost module called directly: no path
    assert.are.equal("Conv2d(3, 64): expected input with 3 channels, got [8, 1, 28, 28]",
      errmsg(net.layer1[1].conv1, graft.randn(8, 1, 28, 28)))
    -- a later successful call is unaffected
    assert.are.same({ 1, 64, 2, 2 }, net(graft.randn(1, 3, 4, 4)):shape())
  end)

  it("names the module whose own code failed", function()
    local Bad = nn.Module:extend("Bad")
    function Bad:forward() error("boom", 0) end
    local s = nn.Sequential(nn.ReLU(), Bad())
    assert.are.equal("in 1 (Bad): boom", errmsg(s, graft.zeros(1)))
  end)

  it("says when forward is missing", function()
    local NoFwd = nn.Module:extend("NoFwd")
    assert.are.equal('Module [NoFwd] is missing the required "forward" function', errmsg(NoFwd(), 1))
    assert.are.equal('Module [ModuleList] is missing the required "forward" function', errmsg(nn.ModuleList(), 1))
  end)

  it("subclasses inherit and isinstance sees the chain", function()
    local MyLinear = nn.Linear:extend("MyLinear")
    function MyLinear:forward(x) return nn.Linear.forward(self, x) * 2 end
    local l = MyLinear(2, 1)
    assert.is_true(nn.isinstance(l, nn.Linear))
    assert.is_true(nn.isinstance(l, nn.Module))
    assert.is_false(nn.isinstance(l, nn.Conv2d))
    assert.are.equal("MyLinear(in_features=2, out_features=1, bias=True)", tostring(l))
    assert.are.same({ "weight", "bias" }, l:state_dict():keys())
  end)

  it("exposes graft.F as nn.functional", function()
    assert.are.equal(graft.F, nn.functional)
  end)
end)

describe("nn containers", function()
  it("Sequential: children named 0, 1, ...; 1-based positions in Lua", function()
    local a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    local s = nn.Sequential(a, b, c)
    assert.are.equal(a, s[1])
    assert.are.equal(a, s["0"])
    assert.are.equal(c, s[-1])
    assert.is_nil(s[4])
    assert.are.equal(3, #s)
    local seen = {}
    for i, mod in ipairs(s) do seen[i] = mod end
    assert.are.same({ a, b, c }, seen)
    s[2] = nn.Tanh()
    assert.are.equal("Tanh", s[2]:_get_name())
    assert.are.same({ "0.weight", "0.bias", "2.weight", "2.bias" }, s:state_dict():keys())
    s:append(nn.Sigmoid())
    assert.are.equal(4, #s)
    s:insert(1, nn.Identity())
    assert.are.same({ "", "0", "1", "2", "3", "4" }, names(s:named_modules()))
    assert.are.equal("Identity", s[1]:_get_name())
    H.raises("positions are 1-based", function() s[0] = nn.ReLU() end)
  end)

  it("Sequential with names, from a list or pairs", function()
    local s = nn.Sequential({ { "conv", nn.Conv2d(1, 2, 3) }, { "act", nn.ReLU() } })
    assert.are.same({ "conv.weight", "conv.bias" }, s:state_dict():keys())
    assert.are.equal(s.conv, s[1])
    local l = nn.Sequential({ nn.Linear(1, 1), nn.ReLU() })
    assert.are.same({ "0.weight", "0.bias" }, l:state_dict():keys())
    local y = l(graft.ones(2, 1))
    assert.are.same({ 2, 1 }, y:shape())
  end)

  it("ModuleList: append, extend, insert renumber; ipairs walks in order", function()
    local ml = nn.ModuleList({ nn.Linear(1, 1) })
    ml:append(nn.Linear(1, 2))
    ml:extend({ nn.Linear(1, 3) })
    ml:insert(1, nn.Linear(1, 4))
    local outs = {}
    for i, mod in ipairs(ml) do outs[i] = mod.out_features end
    assert.are.same({ 4, 1, 2, 3 }, outs)
    assert.are.same({ "0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias", "3.weight", "3.bias" },
      ml:state_dict():keys())
    assert.are.equal(4, #ml)
  end)

  it("ModuleDict: keys in order, pairs, access by name", function()
    local md = nn.ModuleDict(graft.OrderedDict.from_pairs({ "b", "a" }, { nn.ReLU(), nn.Tanh() }))
    assert.are.same({ "b", "a" }, md:keys())
    assert.are.equal("Tanh", md.a:_get_name())
    local ks = {}
    for k in pairs(md) do ks[#ks + 1] = k end
    assert.are.same({ "b", "a" }, ks)
    md:update({ { "c", nn.Linear(1, 1) } })
    assert.are.same({ "c.weight", "c.bias" }, md:state_dict():keys())
    assert.are.equal(3, #md)
    assert.are.equal("ReLU", md:pop("b"):_get_name())
    assert.are.same({ "a", "c" }, md:keys())
    local sorted = nn.ModuleDict({ z = nn.ReLU(), y = nn.ReLU() })
    assert.are.same({ "y", "z" }, sorted:keys())
  end)
end)

describe("freezing", function()
  local function net()
    graft.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
  end

  it("freeze/unfreeze by pattern, list, type, function, or everything", function()
    local n = net()
    assert.are.same({ "0.weight", "0.bias" }, n:freeze("^0%."))
    assert.is_false(n[1].weight.requires_grad)
    assert.is_true(n[2].weight.requires_grad)
    n:unfreeze()
    assert.are.same({ "1.weight", "4.weight" }, n:freeze({ "^1%.weight", "^4%.weight" }))
    n:unfreeze()
    assert.are.same({ "1.weight", "1.bias" }, n:freeze({ type = nn.BatchNorm2d }))
    n:unfreeze()
    assert.are.same({ "4.bias" }, n:freeze(function(name, p) return p:dim() == 1 and name:find("^4") ~= nil end))
    assert.are.equal(6, #n:freeze())
    for _, p in ipairs(n:parameters()) do assert.is_false(p.requires_grad) end
    n:requires_grad_(true)
    for _, p in ipairs(n:parameters()) do assert.is_true(p.requires_grad) end
    n[5]:requires_grad_(false)
    assert.is_false(n[5].bias.requires_grad)
    H.raises('freeze: no parameter matches the selector "^nope"', function() n:freeze("^nope") end)
    H.raises("freeze: a selector is a Lua pattern", function() n:freeze(42) end)
  end)

  it("a frozen parameter gets no grad and stays bit-identical through training", function()
    local n = net()
    n:freeze("^0%.")
    local before = n[1].weight:clone()
    local lr = 0.1
    for _ = 1, 3 do
      n:zero_grad()
      local x = graft.randn(2, 1, 6, 6)
      local loss = graft.F.cross_entropy(n(x), graft.tensor({ 0, 2 }))
      loss:backward()
      assert.is_nil(n[1].weight.grad)
      assert.is_nil(n[1].bias.grad)
      assert.is_not_nil(n[5].weight.grad)
      graft.no_grad(function()
        for _, p in ipairs(n:parameters()) do
          if p.grad then p:sub_(p.grad * lr) end
        end
      end)
    end
    assert.tensor_near(n[1].weight, before, { rtol = 0, atol = 0 })
  end)

  it("{bn_eval = true} keeps frozen BatchNorm layers in eval mode across train() until unfrozen", function()
    local n = net()
    n:freeze({ type = nn.BatchNorm2d }, { bn_eval = true })
    assert.is_false(n[2].training)
    n:train()
    assert.is_false(n[2].training)
    assert.is_true(n[1].training)
    local mean = n[2].running_mean:clone()
    n(graft.randn(2, 1, 6, 6))
    assert.tensor_near(n[2].running_mean, mean, { rtol = 0, atol = 0 })
    assert.are.equal(0, n[2].num_batches_tracked:item())
    n:unfreeze({ type = nn.BatchNorm2d })
    assert.is_true(n[2].training)
    n:eval()
    n:train()
    assert.is_true(n[2].training)
    -- without bn_eval, a frozen BatchNorm still updates its statistics in train mode (PyTorch)
    n:freeze("^1%.")
    n(graft.randn(2, 1, 6, 6))
    assert.are.equal(1, n[2].num_batches_tracked:item())
  end)

  it("bn_eval by pattern applies to BatchNorm layers whose parameters are all frozen", function()
    local n = net()
    n:freeze("^1%.weight", { bn_eval = true })
    assert.is_true(n[2].training) -- its bias still trains
    n:freeze("^1%.", { bn_eval = true })
    assert.is_false(n[2].training)
    n:unfreeze("^1%.bias")
    assert.is_true(n[2].training)
  end)
end)

describe("printing and summary", function()
  it("prints an empty module and None children as PyTorch", function()
    local mod = nn.Module()
    mod:add_module("gone", nil)
    mod.fc = nn.Linear(1, 1)
    assert.are.equal("Module(\n  (gone): None\n  (fc): Linear(in_features=1, out_features=1, bias=True)\n)", tostring(mod))
  end)

  it("summary lists modules with parameter counts, frozen state and totals", function()
    local s = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))
    s:freeze("^0%.")
    local text = s:summary({ print = false })
    assert.is_truthy(text:find("Total params: 67", 1, true))
    assert.is_truthy(text:find("Trainable params: 12", 1, true))
    assert.is_truthy(text:find("Frozen params: 55", 1, true))
    assert.is_truthy(text:find("0%s+Linear%s+55%s+0%s+frozen"))
    assert.is_truthy(text:find("2%s+Linear%s+12%s+12"))
    local r = nn.Sequential(nn.Linear(100000, 10, { init = false }))
    assert.is_truthy(r:summary({ print = false }):find("1,000,010", 1, true))
  end)
end)

describe("skipping initialisation", function()
  it("{init = false} and nn.skip_init allocate parameters without drawing random numbers", function()
    graft.manual_seed(3)
    local state = graft.get_rng_state()
    local l = nn.Linear(64, 32, { init = false })
    local c = nn.skip_init(function() return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(8, 2)) end)
    assert.are.same(state:tolist(), graft.get_rng_state():tolist())
    assert.are.same({ 32, 64 }, l.weight:shape())
    assert.is_true(l.weight.requires_grad)
    c:load_state_dict(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(8, 2)):state_dict())
    -- afterwards initialisation is back on
    nn.Linear(4, 4)
    assert.are_not.same(state:tolist(), graft.get_rng_state():tolist())
  end)

  it("skip_init restores initialisation when its function errors", function()
    assert.is_false(pcall(nn.skip_init, function() error("x") end))
    graft.manual_seed(3)
    local state = graft.get_rng_state()
    nn.Linear(4, 4)
    assert.are_not.same(state:tolist(), graft.get_rng_state():tolist())
  end)
end)
