-- graft.nn module hooks (PyTorch 1.13's register_forward_pre_hook / register_forward_hook:
-- replacement rules, order, removal, errors with the module path, not state) and the
-- containers' slice(i, j) (PyTorch's seq[a:b] with 1-based inclusive positions).
local graft = require("graft")
local nn = require("graft.nn")
local H = require("spec.helpers")

local EXACT = { rtol = 0, atol = 0 }

-- A float32 (or dtype) tensor from a nested list (integer literals would make int64).
local function F(x, dtype) return graft.tensor(x, { dtype = dtype or "float32" }) end

-- A Linear(2, 2) with weight [[1, 2], [3, 4]] and bias [10, 20]: y = (x1 + 2 x2 + 10, 3 x1 + 4 x2 + 20).
local function lin()
  local m = nn.Linear(2, 2)
  graft.no_grad(function()
    m.weight:copy_(F({ { 1, 2 }, { 3, 4 } }))
    m.bias:copy_(F({ 10, 20 }))
  end)
  return m
end

-- forward(a, b, c) -> a - b (+ c when given), and a second result a + b.
local Two = nn.Module:extend("Two")
function Two:forward(a, b, c)
  local d = a - b
  if c ~= nil then d = d + c end
  return d, a + b
end

local Net = nn.Module:extend("Net")
function Net:__init()
  self.body = nn.Sequential(lin(), nn.ReLU())
  self.head = lin()
end
function Net:forward(x) return self.head(self.body(x)) end

describe("nn.Module:register_forward_hook", function()
  it("extracts resnet18's layer3 features, equal to running the layers by hand", function()
    graft.manual_seed(7)
    local net = graft.models.resnet18({ num_classes = 10 }):eval()
    local x = graft.randn(2, 3, 64, 64)
    local plain = net(x)
    local feats, inputs = {}, {}
    local h = net.layer3:register_forward_hook(function(m, input, output)
      assert.are.equal(net.layer3, m)
      inputs[#inputs + 1] = input
      feats[#feats + 1] = output
    end)
    local y = net(x)
    h:remove()
    assert.are.equal(1, #feats)
    assert.are.same({ 2, 256, 4, 4 }, feats[1]:shape())
    assert.are.equal(1, inputs[1].n)
    local l2 = net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))
    assert.tensor_near(inputs[1][1], l2, EXACT)
    assert.tensor_near(feats[1], net.layer3(l2), EXACT)
    assert.are.equal(1, #feats, "a removed hook is not called")
    assert.tensor_near(y, plain, EXACT)
  end)

  it("replaces the output with a non-nil return and keeps it on nil", function()
    local m = lin()
    local x = F({ { 1, 1 } })                       -- forward: (13, 27)
    m:register_forward_hook(function() return nil end)
    m:register_forward_hook(function(_, _, out) return out * 2 end)
    assert.tensor_near(m(x), F({ { 26, 54 } }), EXACT)
  end)

  it("chains hooks in registration order, each seeing the previous one's result", function()
    local m, log = lin(), {}
    m:register_forward_pre_hook(function() log[#log + 1] = "pre1" end)
    m:register_forward_hook(function(_, _, out)
      log[#log + 1] = "fwd1"
      return out + 1
    end)
    m:register_forward_pre_hook(function() log[#log + 1] = "pre2" end)
    m:register_forward_hook(function(_, _, out)
      log[#log + 1] = "fwd2"
      return out * 10
    end)
    local y = m(F({ { 1, 1 } }))                      -- ((13, 27) + 1) * 10
    assert.are.same({ "pre1", "pre2", "fwd1", "fwd2" }, log)
    assert.tensor_near(y, F({ { 140, 280 } }), EXACT)
  end)

  it("passes every result of a module with several and replaces them all", function()
    local m = Two()
    local seen
    m:register_forward_hook(function(_, _, d, s)
      seen = { d:item(), s:item() }
      return s, d
    end)
    local a, b = m(graft.tensor(5.0), graft.tensor(3.0))
    assert.are.same({ 2, 8 }, seen)
    assert.are.same({ 8, 2 }, { a:item(), b:item() })
  end)

  it("fires for children inside a Sequential, each as its call returns", function()
    local seq = nn.Sequential(lin(), nn.Sequential(nn.ReLU(), lin()), nn.Tanh())
    local order = {}
    for name, m in seq:named_modules() do
      m:register_forward_hook(function() order[#order + 1] = name == "" and "(root)" or name end)
    end
    seq[2][2]:register_forward_hook(function(_, _, out) return out * 0 end)
    local y = seq(F({ { 1, -1 } }))
    assert.are.same({ "0", "1.0", "1.1", "1", "2", "(root)" }, order)
    assert.tensor_near(y, graft.zeros(1, 2), EXACT)                -- tanh(0): the replacement went on
  end)

  it("gives the output's gradient through retain_grad in a forward hook", function()
    local m = lin()
    local out
    m:register_forward_hook(function(_, _, o)
      o:retain_grad()
      out = o
    end)
    local x = F({ { 1, 2 } })
    local y = m(x)
    ;(y * F({ { 3, 5 } })):sum():backward()
    assert.tensor_near(out.grad, F({ { 3, 5 } }), EXACT)
    -- the old, deprecated form stays refused (register_full_backward_hook replaces it)
    H.raises("register_backward_hook: not supported", function() m:register_backward_hook(function() end) end)
  end)

  it("rejects a hook that is not callable", function()
    H.raises("register_forward_hook: expected a function, got number", function() lin():register_forward_hook(3) end)
    H.raises("register_forward_pre_hook: expected a function, got None", function()
      lin():register_forward_pre_hook(nil)
    end)
    local callable = setmetatable({}, { __call = function(_, _, _, out) return out + 1 end })
    local m = lin()
    m:register_forward_hook(callable)
    assert.tensor_near(m(F({ { 0, 0 } })), F({ { 11, 21 } }), EXACT)
  end)
end)

describe("nn.Module:register_forward_pre_hook", function()
  it("replaces the input by a single returned value (PyTorch wraps a non-tuple)", function()
    local m = lin()
    local seen
    m:register_forward_pre_hook(function(_, args) return args[1] * 2 end)
    m:register_forward_hook(function(_, args) seen = args[1] end)
    local y = m(F({ { 1, 1 } }))                      -- forward sees (2, 2): (16, 34)
    assert.tensor_near(y, F({ { 16, 34 } }), EXACT)
    assert.tensor_near(seen, F({ { 2, 2 } }), EXACT, "the forward hook sees the replaced input")
  end)

  it("replaces the argument list by a returned plain table, nils kept", function()
    local m = Two()
    local got
    m:register_forward_pre_hook(function(_, args)
      got = { n = args.n, a = args[1]:item(), b = args[2], c = args[3]:item() }
      return { args[3], args[1], n = 2 }                        -- forward(c, a)
    end)
    local d, s = m(graft.tensor(5.0), nil, graft.tensor(1.0))
    assert.are.same({ n = 3, a = 5, c = 1 }, got)
    assert.are.same({ -4, 6 }, { d:item(), s:item() })
  end)

  it("sees each previous pre-hook's replacement", function()
    local m = lin()
    m:register_forward_pre_hook(function(_, args) return { args[1] + 1 } end)
    m:register_forward_pre_hook(function(_, args) return args[1] * 3 end)
    assert.tensor_near(m(F({ { 0, 1 } })), F({ { 25, 53 } }), EXACT)  -- x = (3, 6)
  end)
end)

describe("hook handles", function()
  it("remove the hook; a second remove does nothing", function()
    local m, calls = lin(), 0
    local h1 = m:register_forward_hook(function() calls = calls + 1 end)
    local h2 = m:register_forward_hook(function(_, _, out) return out * 0 end)
    assert.is_true(h2.id > h1.id)
    m(graft.zeros(1, 2))
    h2:remove()
    h2:remove()
    local y = m(graft.zeros(1, 2))
    assert.are.equal(2, calls)
    assert.tensor_near(y, F({ { 10, 20 } }), EXACT)
    h1:remove()
    m(graft.zeros(1, 2))
    assert.are.equal(2, calls)
    assert.are.equal(false, rawget(m, "_hooks"), "no hooks left: back on the plain call path")
  end)

  it("remove themselves at the end of a block with <close>", function()
    local m, calls = lin(), 0
    do
      local h <close> = m:register_forward_pre_hook(function() calls = calls + 1 end)
      m(graft.zeros(1, 2))
    end
    m(graft.zeros(1, 2))
    assert.are.equal(1, calls)
  end)

  it("leave the current call's hook list alone when a hook adds or removes hooks", function()
    local m, log = lin(), {}
    local h1
    h1 = m:register_forward_hook(function()
      log[#log + 1] = "h1"
      h1:remove()
      m:register_forward_hook(function() log[#log + 1] = "late" end)
    end)
    m:register_forward_hook(function() log[#log + 1] = "h2" end)
    m(graft.zeros(1, 2))
    assert.are.same({ "h1", "h2" }, log)
    m(graft.zeros(1, 2))
    assert.are.same({ "h1", "h2", "h2", "late" }, log)
  end)
end)

describe("hook errors", function()
  it("name the module path and the hook's kind", function()
    local net = Net()
    local h = net.body[1]:register_forward_hook(function() error("boom") end)
    H.raises("in body.0 (nn.Linear): forward hook: ", net, graft.zeros(1, 2))
    H.raises("boom", net, graft.zeros(1, 2))
    h:remove()
    net.head:register_forward_pre_hook(function() error("bad input", 0) end)
    H.raises("in head (nn.Linear): forward pre-hook: bad input", net, graft.zeros(1, 2))
  end)

  it("keep a nested module's own path when the hook calls it", function()
    local net = Net()
    net:register_forward_hook(function(m) return m.head(graft.zeros(1, 5)) end)
    local ok, err = pcall(net, graft.zeros(1, 2))
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("^in head %(nn.Linear%): "), tostring(err))
  end)

  it("are not prefixed on the module called at the top, and leave later calls working", function()
    local m = lin()
    local h = m:register_forward_hook(function() error("top", 0) end)
    local ok, err = pcall(m, graft.zeros(1, 2))
    assert.is_false(ok)
    assert.are.equal("forward hook: top", tostring(err))
    h:remove()
    assert.tensor_near(m(graft.zeros(1, 2)), F({ { 10, 20 } }), EXACT)
    local net = Net()
    net.head:register_forward_hook(function() error("again", 0) end)
    H.raises("in head (nn.Linear): forward hook: again", net, graft.zeros(1, 2))
  end)
end)

describe("hooks and module state", function()
  it("are not in state_dict and survive to(), train(), eval() and load_state_dict", function()
    local net, calls = Net(), 0
    local keys = net:state_dict():keys()
    net.body[1]:register_forward_pre_hook(function() calls = calls + 1 end)
    net.head:register_forward_hook(function(_, _, out) return out + 1 end)
    assert.are.same(keys, net:state_dict():keys())
    net:to("float64"):eval():train()
    net:load_state_dict(Net():double():state_dict())
    local y = net(F({ { 1, 1 } }, "float64"))
    -- body: relu(13, 27); head: (13 + 54 + 10, 39 + 108 + 20) + 1
    assert.tensor_near(y, F({ { 78, 168 } }, "float64"), EXACT)
    assert.are.equal(1, calls)
  end)

  it("are copied by clone(), as copy.deepcopy copies them; removal is per module", function()
    local m, calls = lin(), 0
    local h = m:register_forward_hook(function() calls = calls + 1 end)
    local c = m:clone()
    c(graft.zeros(1, 2))
    assert.are.equal(1, calls)
    h:remove()
    m(graft.zeros(1, 2))
    c(graft.zeros(1, 2))
    assert.are.equal(2, calls)
  end)
end)

describe("Sequential:slice", function()
  local a, b, c = lin(), nn.ReLU(), nn.Tanh()
  local seq = nn.Sequential(a, b, c)

  it("returns a new Sequential of the same module objects (PyTorch's seq[0:2])", function()
    local s = seq:slice(1, 2)
    assert.is_true(nn.isinstance(s, nn.Sequential))
    assert.are_not.equal(seq, s)
    assert.are.equal(2, #s)
    assert.are.equal(a, s[1])
    assert.are.equal(b, s[2])
    assert.are.same({ "0.weight", "0.bias" }, s:state_dict():keys())
    local x = F({ { 1, -2 } })
    assert.tensor_near(s(x), b(a(x)), EXACT)
  end)

  it("keeps the children's names, as PyTorch 1.13 (Sequential(...)[1:] has keys '1.weight')", function()
    local s = nn.Sequential(nn.ReLU(), lin(), nn.Tanh()):slice(2)
    local names = {}
    for n in s:named_children() do names[#names + 1] = n end
    assert.are.same({ "1", "2" }, names)
    assert.are.same({ "1.weight", "1.bias" }, s:state_dict():keys())
  end)

  it("counts negative positions from the end; j < i is empty", function()
    local s = seq:slice(-2)
    assert.are.same({ b, c }, { s[1], s[2] })
    s = seq:slice(-3, -2)
    assert.are.same({ a, b }, { s[1], s[2] })
    s = seq:slice(2, 2)
    assert.are.equal(1, #s)
    assert.are.equal(b, s[1])
    assert.are.equal(0, #seq:slice(3, 2))
  end)

  it("raises on positions out of range, 0 and non-integers", function()
    H.raises("Sequential.slice: start 4 is out of range (3 modules)", function() seq:slice(4) end)
    H.raises("Sequential.slice: end 5 is out of range (3 modules)", function() seq:slice(1, 5) end)
    H.raises("Sequential.slice: start -4 is out of range (3 modules)", function() seq:slice(-4) end)
    H.raises("0 is not a position", function() seq:slice(0, 2) end)
    H.raises("Sequential.slice: start must be an integer, got number", function() seq:slice(1.5) end)
    H.raises("Sequential.slice: end must be an integer, got string", function() seq:slice(1, "2") end)
  end)

  it("runs the shared children's hooks", function()
    local s = nn.Sequential(lin(), nn.ReLU())
    local part = s:slice(1, 1)
    s[1]:register_forward_hook(function(_, _, out) return -out end)
    assert.tensor_near(part(F({ { 0, 0 } })), F({ { -10, -20 } }), EXACT)
  end)

  it("keeps a subclass without its own constructor, else gives a Sequential", function()
    local Plain = nn.Sequential:extend("Plain")
    local s = Plain(lin(), nn.ReLU()):slice(1, 1)
    assert.are.equal("Plain", s:_get_name())
    local Own = nn.Sequential:extend("Own")
    function Own:__init(n) nn.Sequential.__init(self, lin(), nn.ReLU()); self.n = n end
    s = Own(3):slice(2)
    assert.are.equal("Sequential", s:_get_name())
    assert.are.same({ "1" }, (function() local o = {} for k in s:named_children() do o[#o + 1] = k end return o end)())
  end)
end)

describe("ModuleList:slice", function()
  it("returns a ModuleList of the same modules, renumbered from '0' (PyTorch's list[1:])", function()
    local a, b, c = lin(), nn.ReLU(), lin()
    local l = nn.ModuleList({ a, b, c }):slice(2)
    assert.is_true(nn.isinstance(l, nn.ModuleList))
    assert.are.same({ b, c }, { l[1], l[2] })
    assert.are.same({ "1.weight", "1.bias" }, l:state_dict():keys())
    local names = {}
    for n in l:named_children() do names[#names + 1] = n end
    assert.are.same({ "0", "1" }, names)
    assert.are.equal(a, nn.ModuleList({ a, b, c }):slice(-3, 1)[1])
    H.raises("ModuleList.slice: end 4 is out of range (3 modules)", function()
      nn.ModuleList({ a, b, c }):slice(1, 4)
    end)
  end)
end)
