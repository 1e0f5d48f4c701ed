-- Tensor:register_hook (PyTorch 1.13's Tensor.register_hook): hooks on leaves and on
-- computed tensors, replacement, order (with retain_grad), removal, in-place ops and
-- views, errors in hooks (backward aborts cleanly, nothing leaks, the graph stays
-- usable), and the lifetime of the Lua functions. Expected values are closed forms or
-- PyTorch's (spec/fixtures/hooks/expected.lua, written by spec/fixtures/hooks/gen.py).
local graft = require("graft")
local H = require("spec.helpers")

local P = H.fixture("hooks/expected")
local D64 = { dtype = "float64" }
local function E(v) return graft.tensor(v, D64) end
local function X() return graft.tensor({ 1.0, 2.0, 3.0 }, { dtype = "float64", requires_grad = true }) end

-- Whether the Lua function registered by register(f) is collected once `drop()` ran.
local function collected(register, drop)
  local weak = setmetatable({}, { __mode = "k" })
  do
    local f = function() end
    weak[f] = true
    register(f)
  end
  if drop then drop() end
  collectgarbage(); collectgarbage()
  return next(weak) == nil
end

describe("Tensor:register_hook on a leaf", function()
  it("sees the new gradient before it is added to .grad, and its result is what is added", function()
    local x = X()
    x.grad = graft.ones(3, D64)
    local seen
    x:register_hook(function(g)
      seen = g:clone()
      return g * 3
    end)
    ;(x * x):sum():backward()
    assert.tensor_near(seen, E(P.leaf.seen))          -- 2x
    assert.tensor_near(x.grad, E(P.leaf.x_grad))      -- 1 + 3 * 2x
  end)

  it("returning nil keeps the gradient; several hooks run in order on each other's results", function()
    local x = X()
    local calls = {}
    x:register_hook(function(g) calls[#calls + 1] = "a"; return g + 1 end)
    x:register_hook(function(g) calls[#calls + 1] = "b"; assert.tensor_near(g, E({ 3.0, 5.0, 7.0 })) end)
    x:register_hook(function(g) calls[#calls + 1] = "c"; return g * -1 end)
    ;(x * x):sum():backward()
    assert.are.same({ "a", "b", "c" }, calls)
    assert.tensor_near(x.grad, E({ -3.0, -5.0, -7.0 }))    -- -(2x + 1)
  end)

  it("runs when the leaf itself is the root of backward", function()
    local x = X()
    x:register_hook(function(g) return g * 2 end)
    x:backward(E({ 1.0, 10.0, 100.0 }))
    assert.tensor_near(x.grad, E({ 2.0, 20.0, 200.0 }))
  end)

  it("runs with grad mode off, and a hook result with history is stored detached", function()
    local x = X()
    local w = graft.tensor({ 5.0, 5.0, 5.0 }, { dtype = "float64", requires_grad = true })
    local mode
    x:register_hook(function(g)
      mode = graft.is_grad_enabled()
      return graft.enable_grad(function() return g * w end)
    end)
    ;(x * 1):sum():backward()
    assert.is_false(mode)
    assert.tensor_near(x.grad, E({ 5.0, 5.0, 5.0 }))
    assert.is_false(x.grad.requires_grad)
    assert.is_nil(w.grad)
  end)
end)

describe("Tensor:register_hook on a computed tensor", function()
  it("changes the gradient before it flows into the tensor's grad_fn (gradient reversal)", function()
    local x = X()
    local y = x * x
    y:register_hook(function(g) return -g end)
    y:sum():backward()
    assert.tensor_near(x.grad, E({ -2.0, -4.0, -6.0 }))    -- -2x
  end)

  it("chains hooks in registration order (PyTorch's values)", function()
    local x = X()
    local y = x * x
    local seen = {}
    y:register_hook(function(g) return g * 2 end)
    y:register_hook(function(g) seen[#seen + 1] = g:clone(); return g + 1 end)
    y:register_hook(function(g) seen[#seen + 1] = g:clone() end)
    ;(y * E({ 1.0, -1.0, 0.5 })):sum():backward()
    assert.tensor_near(seen[1], E(P.chain.seen2))
    assert.tensor_near(seen[2], E(P.chain.seen3))
    assert.tensor_near(x.grad, E(P.chain.x_grad))
  end)

  it("stores retain_grad's .grad at its place among the hooks, as PyTorch 1.13", function()
    local x = X()
    local y = x * 2
    y:retain_grad()
    y:register_hook(function(g) return g * 10 end)
    ;(y * y):sum():backward()
    assert.tensor_near(y.grad, E(P.retain_then_hook.y_grad))   -- before the hook: 2y
    assert.tensor_near(x.grad, E(P.retain_then_hook.x_grad))

    x = X()
    y = x * 2
    y:register_hook(function(g) return g * 10 end)
    y:retain_grad()
    y:retain_grad() -- a second call does not move it
    ;(y * y):sum():backward()
    assert.tensor_near(y.grad, E(P.hook_then_retain.y_grad))   -- after the hook: 20y
    assert.tensor_near(x.grad, E(P.hook_then_retain.x_grad))
  end)

  it("is called once with the summed gradient of a tensor used twice", function()
    local x = X()
    local y = x * 2
    local seen = {}
    y:register_hook(function(g) seen[#seen + 1] = g:clone() end)
    ;(y * y + y):sum():backward()
    assert.are.equal(P.used_twice.calls, #seen)
    assert.tensor_near(seen[1], E(P.used_twice.seen))          -- 2y + 1
  end)

  it("receives the seed gradient when the tensor is the root", function()
    local x = X()
    local y = x * 3
    local seen
    y:register_hook(function(g) seen = g:clone(); return g * 0.5 end)
    y:backward(E({ 2.0, 4.0, 6.0 }))
    assert.tensor_near(seen, E({ 2.0, 4.0, 6.0 }))
    assert.tensor_near(x.grad, E({ 3.0, 6.0, 9.0 }))
  end)

  it("stays with the grad_fn it was registered on: after an in-place op it sees the old value's gradient", function()
    local x = X()
    local y = x * 2
    local seen
    y:register_hook(function(g) seen = g:clone() end)
    y:mul_(5)
    ;(y * y):sum():backward()
    assert.tensor_near(seen, E(P.inplace.seen))
    assert.tensor_near(x.grad, E(P.inplace.x_grad))
  end)

  it("belongs to one tensor: a view's hooks run before its base's, and a detached copy has none", function()
    local x = X()
    local y = x * 2
    local v = y:view(3)
    local order = {}
    y:register_hook(function() order[#order + 1] = "y" end)
    v:register_hook(function() order[#order + 1] = "v" end)
    ;(v * v):sum():backward()
    assert.are.same(P.view_order, order)

    order = {}
    local z = x * 2
    z:register_hook(function() order[#order + 1] = "z" end)
    local zv = z:view(3)
    zv:register_hook(function() order[#order + 1] = "zv" end)
    z:sum():backward() -- the view is not on this path
    assert.are.same({ "z" }, order)
    assert.is_false(z:detach().requires_grad)
  end)

  it("is not called for a tensor that no gradient reaches", function()
    local x = X()
    local a, b = x * 2, x * 3
    local called = false
    b:register_hook(function() called = true end)
    a:sum():backward()
    assert.is_false(called)
    assert.tensor_near(x.grad, E({ 2.0, 2.0, 2.0 }))
  end)
end)

describe("register_hook handles", function()
  it("remove() stops the hook and is idempotent; dropping a handle keeps the hook", function()
    local x = X()
    local n = 0
    local h = x:register_hook(function(g) n = n + 1; return g * 2 end)
    assert.are.equal("RemovableHandle(active)", tostring(h))
    do
      local kept = 0
      x:register_hook(function() kept = kept + 1 end) -- handle dropped at once
      collectgarbage(); collectgarbage()
      ;(x * 1):sum():backward()
      assert.are.equal(1, kept)
    end
    assert.are.equal(1, n)
    assert.tensor_near(x.grad, E({ 2.0, 2.0, 2.0 }))
    h:remove()
    h:remove()
    assert.are.equal("RemovableHandle(removed)", tostring(h))
    x.grad = nil
    ;(x * 1):sum():backward()
    assert.are.equal(1, n)
    assert.tensor_near(x.grad, E({ 1.0, 1.0, 1.0 }))
  end)

  it("removes the hook at the end of a <close> block", function()
    local x = X()
    local n = 0
    do
      local h <close> = x:register_hook(function() n = n + 1 end)
      ;(x * 1):sum():backward()
    end
    ;(x * 1):sum():backward()
    assert.are.equal(1, n)
  end)

  it("a hook removed by an earlier hook of the same backward is not called", function()
    local x = X()
    local y = x * 2
    local called, h2 = false, nil
    y:register_hook(function() h2:remove() end)
    h2 = y:register_hook(function() called = true end)
    y:sum():backward()
    assert.is_false(called)
  end)

  it("a hook may remove itself while it runs (its Lua function is released after the call)", function()
    local x = X()
    local n, h = 0, nil
    h = x:register_hook(function(g) n = n + 1; h:remove(); return g * 2 end)
    ;(x * 1):sum():backward()
    ;(x * 1):sum():backward()
    assert.are.equal(1, n)
    assert.tensor_near(x.grad, E({ 3.0, 3.0, 3.0 }))
  end)

  it("releases the Lua function on remove(), or when the tensor (leaf) or its graph (non-leaf) dies", function()
    local keep = X()
    local h
    assert.is_true(collected(function(f) h = keep:register_hook(f) end, function() h:remove() end))
    assert.is_true(collected(function(f) X():register_hook(f) end))
    assert.is_true(collected(function(f) (X() * 2):register_hook(f) end))
    -- a non-leaf whose graph is still referenced from a result keeps its hook alive
    local out
    assert.is_false(collected(function(f)
      local y = X() * 2
      y:register_hook(f)
      out = y + 1
    end))
    out = nil
    collectgarbage(); collectgarbage()
  end)
end)

describe("register_hook errors", function()
  it("refuses a tensor that doesn't require gradient and a value that is not callable", function()
    H.raises("register_hook: cannot register a hook on a tensor that doesn't require gradient",
      function() graft.ones(3):register_hook(function() end) end)
    H.raises("register_hook: cannot register a hook on a tensor that doesn't require gradient",
      function() (X() * 2):detach():register_hook(function() end) end)
    H.raises("register_hook: expected a function, got number", function() X():register_hook(3) end)
    local callable = setmetatable({}, { __call = function(_, g) return g * 4 end })
    local x = X()
    x:register_hook(callable)
    ;(x * 1):sum():backward()
    assert.tensor_near(x.grad, E({ 4.0, 4.0, 4.0 }))
  end)

  it("reports a replacement of the wrong shape, dtype or type, leaking nothing", function()
    local x = X()
    local h = x:register_hook(function() return graft.ones(2, D64) end)
    H.raises("register_hook: the hook returned a gradient of shape [2] for a tensor of shape [3]",
      function() (x * x):sum():backward() end)
    h:remove()
    h = x:register_hook(function(g) return g:to("float32") end)
    H.raises("register_hook: the hook returned a gradient of dtype float32 for a tensor of dtype float64",
      function() (x * x):sum():backward() end)
    h:remove()
    h = x:register_hook(function() return 3 end)
    H.raises("the hook returned a number (expected a tensor or nil)", function() (x * x):sum():backward() end)
    h:remove()
    assert.is_nil(x.grad)
  end)

  it("turns an error in a hook into a backward error with its message; the graph stays usable", function()
    collectgarbage(); collectgarbage()
    local counters = graft._autograd_counters()
    local x = X()
    local y = x * x
    local z = y * 3
    local h = y:register_hook(function() error("boom in hook") end)
    H.raises("backward: error in a gradient hook: ", function() z:sum():backward({ retain_graph = true }) end)
    local ok, err = pcall(function() z:sum():backward({ retain_graph = true }) end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("boom in hook", 1, true))
    assert.is_nil(x.grad)
    h:remove()
    z:sum():backward({ retain_graph = true })
    assert.tensor_near(x.grad, E({ 6.0, 12.0, 18.0 }))    -- 6x
    z:sum():backward()
    assert.tensor_near(x.grad, E({ 12.0, 24.0, 36.0 }))
    -- an error object that is not a string
    local x2 = X()
    x2:register_hook(function() error({ code = 1 }) end)
    H.raises("(error object is a table value)", function() (x2 * 1):sum():backward() end)
    -- a failure in a leaf hook, with other leaves already accumulated
    local a, b = X(), X()
    b:register_hook(function() error("leaf hook failed") end)
    H.raises("leaf hook failed", function() (a * b):sum():backward() end)
    z, y = nil, nil
    collectgarbage(); collectgarbage()
    assert.are.equal(counters.nodes_live, graft._autograd_counters().nodes_live)
  end)

  it("frees every node and tensor of an aborted backward", function()
    H.no_leak(function()
      local x = X()
      local y = (x * x):exp()
      y:register_hook(function() error("stop") end)
      local ok = pcall(function() (y * 2):sum():backward() end)
      assert.is_false(ok)
    end)
    local before = graft._autograd_counters().nodes_live
    do
      local x = X()
      local y = (x * x):exp()
      y:register_hook(function() error("stop") end)
      pcall(function() (y * 2):sum():backward() end)
    end
    collectgarbage(); collectgarbage()
    assert.are.equal(before, graft._autograd_counters().nodes_live)
  end)
end)
