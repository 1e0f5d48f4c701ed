-- nn.Module:register_full_backward_hook (PyTorch 1.13): grad_input and grad_output of a
-- Linear against closed forms and PyTorch's values (spec/fixtures/hooks/expected.lua,
-- written by spec/fixtures/hooks/gen.py), replacement of grad_input, several hooks,
-- several inputs and outputs, inputs that need no grad, removal, errors, containers.
local graft = require("graft")
local nn = require("graft.nn")
local H = require("spec.helpers")

local P = H.fixture("hooks/expected")
local D64 = { dtype = "float64" }
local function E(v) return graft.tensor(v, D64) end

-- Linear(3, 2) with PyTorch's weights; x and the upstream gradient u as in the fixture.
local function linear()
  local m = nn.Linear(3, 2, D64)
  graft.no_grad(function()
    m.weight:copy_(E(P.linear.W))
    m.bias:copy_(E(P.linear.B))
  end)
  return m
end
local function xin() return graft.tensor(P.linear.X, { dtype = "float64", requires_grad = true }) end
local U = E(P.linear.U)

describe("nn.Module:register_full_backward_hook", function()
  it("gives a Linear's grad_output (the upstream gradient) and grad_input (u @ W)", function()
    local m = linear()
    local calls = {}
    m:register_full_backward_hook(function(mod, grad_input, grad_output)
      calls[#calls + 1] = { mod = mod, gi = grad_input, go = grad_output }
    end)
    local x = xin()
    ;(m(x) * U):sum():backward()
    assert.are.equal(1, #calls)
    local c = calls[1]
    assert.are.equal(m, c.mod)
    assert.are.equal(P.linear.n_in, c.gi.n)
    assert.are.equal(P.linear.n_out, c.go.n)
    assert.tensor_near(c.go[1], U)
    assert.tensor_near(c.go[1], E(P.linear.grad_output))
    assert.tensor_near(c.gi[1], U:matmul(E(P.linear.W)))    -- closed form: dL/dx = u W
    assert.tensor_near(c.gi[1], E(P.linear.grad_input))
    assert.tensor_near(x.grad, E(P.linear.x_grad))
    assert.tensor_near(m.weight.grad, E(P.linear.w_grad))   -- u^T x: untouched by the hook
  end)

  it("replaces the input gradient with the hook's table; the weight gradient is unchanged", function()
    local m = linear()
    m:register_full_backward_hook(function(_, gi) return { gi[1] * -2 } end)
    local x = xin()
    ;(m(x) * U):sum():backward()
    assert.tensor_near(x.grad, E(P.linear_replaced.x_grad))
    assert.tensor_near(m.weight.grad, E(P.linear_replaced.w_grad))
  end)

  it("runs several hooks in order, each seeing the previous one's grad_input", function()
    local m = linear()
    local seen
    m:register_full_backward_hook(function(_, gi) return { gi[1] * 2 } end)
    m:register_full_backward_hook(function(_, gi) seen = gi[1]:clone() end)
    local x = xin()
    ;(m(x) * U):sum():backward()
    assert.tensor_near(seen, E(P.linear.x_grad) * 2)
    assert.tensor_near(x.grad, E(P.linear.x_grad) * 2)
  end)

  it("stops when its handle is removed (idempotent)", function()
    local m = linear()
    local n = 0
    local h = m:register_full_backward_hook(function(_, gi) n = n + 1; return { gi[1] * 0 } end)
    local x = xin()
    ;(m(x) * U):sum():backward()
    assert.are.equal(1, n)
    assert.tensor_near(x.grad, E({ { 0, 0, 0 }, { 0, 0, 0 } }))
    h:remove()
    h:remove()
    x.grad = nil
    ;(m(x) * U):sum():backward()
    assert.are.equal(1, n)
    assert.tensor_near(x.grad, E(P.linear.x_grad))
    assert.is_false(rawget(m, "_hooks"))
  end)

  it("passes nil for an input that needs no grad, and is called once grad_output is known", function()
    local m = linear()
    local calls = {}
    m:register_full_backward_hook(function(_, gi, go) calls[#calls + 1] = { gi = gi, go = go } end)
    ;(m(E(P.linear.X)) * U):sum():backward()
    assert.are.equal(1, #calls)
    assert.is_true(P.linear_no_input_grad.grad_input_is_none)
    assert.are.equal(1, calls[1].gi.n)
    assert.is_nil(calls[1].gi[1])
    assert.tensor_near(calls[1].go[1], E(P.linear_no_input_grad.grad_output))
    assert.tensor_near(m.weight.grad, E(P.linear.w_grad))
  end)

  it("handles several inputs and outputs: nil for non-tensors, frozen inputs and unused outputs", function()
    local Two = nn.Module:extend("Two")
    function Two:forward(a, b, c, k) return a * b * k, a + c end
    local t = Two()
    local call
    t:register_full_backward_hook(function(_, gi, go)
      call = { gi = gi, go = go }
      return { gi[1] * 10, gi[2] * 100, nil, nil, n = 4 }
    end)
    local a = graft.tensor({ 1.0, 2.0 }, { dtype = "float64", requires_grad = true })
    local b = graft.tensor({ 3.0, 4.0 }, { dtype = "float64", requires_grad = true })
    local o1, o2 = t(a, b, E({ 1.0, 1.0 }), 2)
    assert.is_true(o2.requires_grad)
    ;(o1:sum() * 2):backward()
    assert.are.equal(4, call.gi.n)
    assert.are.equal(2, call.go.n)
    assert.tensor_near(call.go[1], E({ 2.0, 2.0 }))
    assert.is_nil(call.go[2])                     -- o2 got no gradient
    assert.tensor_near(call.gi[1], E({ 12.0, 16.0 }))  -- 2 * k * b
    assert.tensor_near(call.gi[2], E({ 4.0, 8.0 }))    -- 2 * k * a
    assert.is_nil(call.gi[3])
    assert.is_nil(call.gi[4])
    assert.tensor_near(a.grad, E({ 120.0, 160.0 }))
    assert.tensor_near(b.grad, E({ 400.0, 800.0 }))
  end)

  it("works inside containers, next to forward hooks, and survives clone()", function()
    local inner = linear()
    local net = nn.Sequential(inner, nn.Tanh())
    local fwd_out, go
    inner:register_forward_hook(function(_, _, out) fwd_out = out end)
    inner:register_full_backward_hook(function(_, _, g) go = g[1] end)
    local x = xin()
    local y = net(x)
    ;y:sum():backward()
    -- d sum(tanh(z)) / dz = 1 - tanh(z)^2
    local z = fwd_out:detach()
    assert.tensor_near(go, 1 - z:tanh() * z:tanh())
    local c = inner:clone()
    local n = 0
    c:register_full_backward_hook(function() n = n + 1 end)
    c(xin()):sum():backward()
    assert.are.equal(1, n)
  end)

  it("sets nothing up under no_grad", function()
    local m = linear()
    local n = 0
    m:register_full_backward_hook(function() n = n + 1 end)
    local y = graft.no_grad(function() return m(xin()) end)
    assert.is_false(y.requires_grad)
    assert.are.equal(0, n)
  end)

  it("reports errors: a wrong number of gradients, a failing hook, no input requiring grad", function()
    local m = linear()
    m(xin()):sum():backward() -- .grad exists: a failed backward adds to it in place, allocating nothing
    local h = m:register_full_backward_hook(function(_, gi) return { gi[1], gi[1] } end)
    H.raises("full backward hook of (nn.Linear): the hook returned an invalid number of grad_input, got 2, " ..
      "but expected 1", function() m(xin()):sum():backward() end)
    h:remove()
    h = m:register_full_backward_hook(function() error("bad hook") end)
    H.raises("full backward hook of (nn.Linear): ", function() m(xin()):sum():backward() end)
    local ok, err = pcall(function() m(xin()):sum():backward() end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("bad hook", 1, true))
    h:remove()
    h = m:register_full_backward_hook(function() return { E({ { 1, 2, 3 } }) } end)
    H.raises("Backward hook for Modules where no input requires gradient should always return None",
      function() m(E(P.linear.X)):sum():backward() end)
    h:remove()
    H.raises("register_full_backward_hook: expected a function, got number",
      function() m:register_full_backward_hook(1) end)
    H.raises("register_backward_hook: not supported", function() m:register_backward_hook(function() end) end)
  end)

  it("releases its hooks with the graph", function()
    local weak = setmetatable({}, { __mode = "k" })
    local m = linear()
    local h = m:register_full_backward_hook(function() end)
    do
      local y = m(xin())
      weak[y] = true
      y:sum():backward()
    end
    h:remove()
    collectgarbage(); collectgarbage()
    assert.is_nil(next(weak))
  end)
end)
