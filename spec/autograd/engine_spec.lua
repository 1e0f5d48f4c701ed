-- The autograd engine and its Lua face: requires_grad, grad, grad_fn, is_leaf,
-- backward (accumulation, retain_graph, explicit gradients), grad mode, detach,
-- retain_grad, in-place rules (leaves, version counter, rebase, CopySlices), frozen
-- inputs, deep graphs, printing, errors and leaks.
local graft = require("graft")
local H = require("spec.helpers")

local F64 = { dtype = "float64", requires_grad = true }
local D64 = { dtype = "float64" }
local function R(...) return graft.randn({ ... }, F64) end

describe("requires_grad", function()
  it("is false by default, set by the creation functions and settable on leaves", function()
    local x = graft.randn(2, 3)
    assert.is_false(x.requires_grad)
    x.requires_grad = true
    assert.is_true(x.requires_grad)
    x.requires_grad = false
    assert.is_false(x.requires_grad)
    for _, t in ipairs({ graft.zeros({ 2 }, { requires_grad = true }), graft.ones(2, { requires_grad = true }),
      graft.rand({ 2 }, { requires_grad = true }), graft.randn(2, { requires_grad = true }),
      graft.tensor({ 1.5 }, { requires_grad = true }), graft.full({ 2 }, 3.0, { requires_grad = true }),
      graft.empty(2, { requires_grad = true }), graft.arange(0, 1, 0.5, { requires_grad = true }),
      graft.linspace(0, 1, 3, { requires_grad = true }), graft.eye(2, { requires_grad = true }),
      graft.zeros_like(x, { requires_grad = true }), graft.ones({ 2 }, { dtype = "float64", requires_grad = true }) }) do
      assert.is_true(t.requires_grad)
      assert.is_true(t.is_leaf)
    end
    assert.is_false(graft.zeros({ 2 }, { requires_grad = false }).requires_grad)
    assert.are.equal(x, x:requires_grad_())
    assert.is_true(x.requires_grad)
    x:requires_grad_(false)
    assert.is_false(x.requires_grad)
  end)

  it("only floating point tensors can require grad", function()
    H.raises("only tensors of floating point dtype can require gradients",
      function() graft.tensor({ 1, 2 }, { requires_grad = true }) end)
    H.raises("only tensors of floating point dtype can require gradients",
      function() graft.arange(3):requires_grad_() end)
  end)

  it("cannot be changed on non-leaves, except to true", function()
    local y = R(2) * 2
    assert.is_true(y.requires_grad)
    assert.is_false(y.is_leaf)
    y.requires_grad = true
    H.raises("you can only change requires_grad flags of leaf variables", function() y.requires_grad = false end)
    H.raises("boolean expected", function() y.requires_grad = 1 end)
  end)

  it("is inherited: results of ops on tensors that require grad require grad", function()
    local x, c = R(3), graft.randn(3, D64)
    assert.is_true((x + c).requires_grad)
    assert.is_false((c * 2).requires_grad)
    assert.is_nil((c * 2).grad_fn)
  end)
end)

describe("grad_fn", function()
  it("is nil for leaves and names the node for computed tensors", function()
    local x = R(2, 3)
    assert.is_nil(x.grad_fn)
    local y = (x * 2 + 1):sum()
    assert.are.equal("SumBackward0", tostring(y.grad_fn))
    assert.are.equal("SumBackward0", y.grad_fn:name())
    assert.are.equal("fn: SumBackward0", "fn: " .. y.grad_fn)
    assert.are.equal(y.grad_fn, y.grad_fn)
    local names = {
      { x + 1, "AddBackward0" }, { x - 1, "SubBackward0" }, { x * x, "MulBackward0" }, { x / 2, "DivBackward0" },
      { x:exp(), "ExpBackward0" }, { x:sum(1), "SumBackward1" }, { x:mean(), "MeanBackward0" },
      { x:view(6), "ViewBackward0" }, { x:reshape(6), "ReshapeAliasBackward0" }, { x:t(), "TBackward0" }, { x:transpose(1, 2), "TransposeBackward0" }, { x:unsqueeze(1), "UnsqueezeBackward0" },
      { x:matmul(x:t()), "MmBackward0" }, { x:relu(), "ReluBackward0" }, { x[1], "SelectBackward0" },
      { graft.cat({ x, x }), "CatBackward0" }, { x:clone(), "CloneBackward0" }, { x:tanh(), "TanhBackward0" },
    }
    for _, c in ipairs(names) do assert.are.equal(c[2], tostring(c[1].grad_fn)) end
  end)

  it("lists the next functions, AccumulateGrad for leaves", function()
    local a, b = R(2), graft.randn(2, D64)
    local y = a * b
    local nf = y.grad_fn.next_functions
    assert.are.equal(2, #nf)
    assert.are.equal("AccumulateGrad", tostring(nf[1][1]))
    assert.are.equal(0, nf[1][2])
    assert.is_nil(nf[2][1])
    local z = (y + 1):exp()
    assert.are.equal("AddBackward0", tostring(z.grad_fn.next_functions[1][1]))
  end)
end)

describe("backward", function()
  it("fills .grad of leaves, nil until a backward reaches them", function()
    local x, w = R(3), R(3)
    assert.is_nil(x.grad)
    local y = (x * w):sum()
    y:backward()
    assert.tensor_near(x.grad, w:detach())
    assert.tensor_near(w.grad, x:detach())
    assert.is_nil(y.grad) -- non-leaf: not retained
    assert.is_false(x.grad.requires_grad)
  end)

  it("accumulates into .grad over backward calls", function()
    local x = R(3)
    local y1 = (x * 2):sum()
    y1:backward()
    local y2 = (x * 3):sum()
    y2:backward()
    assert.tensor_near(x.grad, graft.full({ 3 }, 5.0, D64))
    x.grad = nil
    local y3 = (x * 4):sum()
    y3:backward()
    assert.tensor_near(x.grad, graft.full({ 3 }, 4.0, D64))
  end)

  it("sums the gradient of a tensor used several times", function()
    local x = R(3)
    local y = x * x + x:sin() + x
    y:sum():backward()
    assert.tensor_near(x.grad, x:detach() * 2 + x:detach():cos() + 1, { rtol = 1e-12 })
  end)

  it("frees the graph unless retain_graph is set", function()
    local x = R(3)
    local y = (x * x):sum()
    y:backward({ retain_graph = true })
    y:backward()
    assert.tensor_near(x.grad, x:detach() * 4)
    H.raises("trying to backward through the graph a second time", function() y:backward() end)
    -- nodes that saved nothing run again, as in PyTorch
    local z = (x + 1):sum()
    z:backward()
    z:backward()
  end)

  it("takes a gradient for non-scalar outputs and requires one", function()
    local x = R(2, 3)
    local y = x * 2
    H.raises("grad can be implicitly created only for scalar outputs", function() y:backward() end)
    y:backward(graft.ones(2, 3, D64))
    assert.tensor_near(x.grad, graft.full({ 2, 3 }, 2.0, D64))
    H.raises("mismatch in shape", function() (x * 2):backward(graft.ones(3, D64)) end)
    -- a gradient of another float dtype is converted
    x.grad = nil
    local y2 = x * 3
    y2:backward(graft.ones(2, 3), { retain_graph = true })
    assert.tensor_near(x.grad, graft.full({ 2, 3 }, 3.0, D64))
  end)

  it("accepts one-element tensors of any shape, and leaves themselves", function()
    local x = R(1, 1)
    local y = x * 3
    y:backward()
    assert.tensor_near(x.grad, graft.full({ 1, 1 }, 3.0, D64))
    local l = R(2)
    l:backward(graft.ones(2, D64))
    assert.tensor_near(l.grad, graft.ones(2, D64))
  end)

  it("refuses tensors that do not require grad and create_graph", function()
    H.raises("does not require grad and does not have a grad_fn", function() graft.ones(1):backward() end)
    H.raises("create_graph is not supported", function() (R(1) * 2):backward({ create_graph = true }) end)
  end)

  it("handles a 100000-long chain without deep recursion", function()
    local x = graft.tensor({ 1.0 }, F64)
    local y = x
    for _ = 1, 100000 do y = y * 1.0 end
    y:backward()
    assert.tensor_near(x.grad, graft.ones(1, D64))
    y = nil
    collectgarbage()
    collectgarbage()
  end)
end)

describe(".grad assignment", function()
  it("checks shape and dtype, and accepts nil", function()
    local x = R(2, 3)
    x.grad = graft.ones(2, 3, D64)
    assert.tensor_near(x.grad, graft.ones(2, 3, D64))
    H.raises("assigned grad has data of a different size", function() x.grad = graft.ones(3, D64) end)
    H.raises("assigned grad has data of a different type", function() x.grad = graft.ones(2, 3) end)
    H.raises("expected a tensor or nil", function() x.grad = 3 end)
    x.grad = nil
    assert.is_nil(x.grad)
  end)

  it("stores a tensor with history detached", function()
    local x, w = R(2), R(2)
    x.grad = w * 2
    assert.is_false(x.grad.requires_grad)
  end)
end)

describe("grad mode", function()
  it("no_grad returns fn's results and records nothing", function()
    local x = R(2)
    local a, b = graft.no_grad(function(u, v) return u * v, "ok" end, x, 3)
    assert.is_false(a.requires_grad)
    assert.are.equal("ok", b)
    assert.is_true(graft.is_grad_enabled())
  end)

  it("no_grad restores the mode after an error", function()
    local ok, err = pcall(graft.no_grad, function() error("boom") end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("boom", 1, true))
    assert.is_true(graft.is_grad_enabled())
    graft.set_grad_enabled(false)
    pcall(graft.enable_grad, function() assert(graft.is_grad_enabled()); error("x") end)
    assert.is_false(graft.is_grad_enabled())
    graft.set_grad_enabled(true)
  end)

  it("enable_grad records inside no_grad; set_grad_enabled returns the previous mode", function()
    local x = R(2)
    local y = graft.no_grad(function() return graft.enable_grad(function() return x * 2 end) end)
    assert.is_true(y.requires_grad)
    assert.is_true(graft.set_grad_enabled(false))
    assert.is_false(graft.is_grad_enabled())
    assert.is_false((x * 2).requires_grad)
    assert.is_false(graft.set_grad_enabled(true))
  end)

  it("lets no_grad update leaves in place", function()
    local w = R(3)
    local before = w:detach():clone()
    graft.no_grad(function() w:add_(1); w:mul_(2); w[1] = 0 end)
    assert.tensor_near(w:detach()[{ { 2, 3 } }], (before[{ { 2, 3 } }] + 1) * 2)
    assert.is_true(w.is_leaf)
  end)
end)

describe("in-place rules", function()
  it("refuses in-place ops on leaves that require grad", function()
    local msg = "a leaf Variable that requires grad is being used in an in-place operation."
    local x = R(3)
    H.raises(msg, function() x:add_(1) end)
    H.raises(msg, function() x:exp_() end)
    H.raises(msg, function() x:fill_(0) end)
    H.raises(msg, function() x:zero_() end)
    H.raises(msg, function() x:uniform_() end)
    H.raises(msg, function() x:copy_(graft.ones(3, D64)) end)
    H.raises(msg, function() x[1] = 2 end)
    H.raises(msg, function() x[{ { 1, 2 } }] = 2 end)
    H.raises(msg, function() x:clamp_(0, 1) end)
    H.raises(msg, function() x:masked_fill_(graft.tensor({ true, false, true }), 0) end)
    H.raises("a view of a leaf Variable that requires grad is being used in an in-place operation.",
      function() x:narrow(1, 1, 2):mul_(2) end)
  end)

  it("detects a saved tensor changed in place (the version counter)", function()
    local x = R(3)
    local y = x:exp()
    local z = y:sum()
    y:add_(1)
    assert.are.equal(1, y._version)
    H.raises("one of the variables needed for gradient computation has been modified by an inplace operation: "
      .. "[float64 [3]], which is output 0 of ExpBackward0, is at version 1; expected version 0 instead",
      function() z:backward() end)
    local a, b = R(3), graft.tensor({ 1.0, 2.0, 3.0 }, D64)
    local c = (a * b):sum()
    b:mul_(2)
    H.raises("[float64 [3]] is at version 1; expected version 0 instead", function() c:backward() end)
  end)

  it("saves an input that aliases the written tensor with its old version", function()
    local x = R(3)
    local y = x * 2
    y:mul_(y)
    H.raises("which is output 0 of MulBackward0, is at version 1; expected version 0 instead",
      function() y:sum():backward() end)
  end)

  it("rebases the history of a non-leaf", function()
    local x = R(3)
    local y = x * 2
    y:add_(x)
    assert.are.equal("AddBackward0", tostring(y.grad_fn))
    y:sum():backward()
    assert.tensor_near(x.grad, graft.full({ 3 }, 3.0, D64))
  end)

  it("records in-place ops on views of non-leaves on their base (CopySlices)", function()
    assert.gradcheck(function(a, b)
      local y = a * 1
      y:narrow(2, 2, 2):mul_(b)
      return y
    end, { R(3, 4), R(3, 2) })
    assert.gradcheck(function(a)
      local y = a:sin()
      local row = y[2]
      row:sigmoid_()
      return { y, row }
    end, { R(3, 2) })
    local x = R(2, 3)
    local y = x * 1
    local col = y:t():select(1, 1)
    col:zero_()
    assert.are.equal("CopySlices", tostring(y.grad_fn))
    assert.are.equal("AsStridedBackward0", tostring(col.grad_fn))
    y:sum():backward()
    assert.tensor_near(x.grad, graft.tensor({ { 0, 1, 1 }, { 0, 1, 1 } }, D64))
  end)

  it("refuses to write a tensor that requires grad into an untracked view", function()
    local buf = graft.zeros(3, 4, D64)
    local w = R(2)
    H.raises("writing a tensor that requires grad into a view of a tensor that does not is not supported",
      function() buf[1]:narrow(1, 1, 2):copy_(w) end)
    buf[{ 1, { 1, 2 } }] = w -- through the base: recorded
    assert.is_true(buf.requires_grad)
  end)

  it("fills of tensors with history have zero gradients", function()
    local x = R(3)
    local y = x * 2
    y:fill_(1)
    assert.are.equal("FillBackward0", tostring(y.grad_fn))
    local z = (y * x):sum()
    z:backward()
    assert.tensor_near(x.grad, graft.ones(3, D64))
  end)
end)

describe("frozen inputs", function()
  it("get no gradient and stay bit-identical", function()
    local w = graft.randn({ 3, 2 }, F64)
    local b = graft.randn({ 2 }, F64)
    w.requires_grad = false
    local before = w:clone()
    local x = R(4, 3)
    local y = (x:matmul(w) + b):sum()
    y:backward()
    assert.is_nil(w.grad)
    assert.is_not_nil(b.grad)
    assert.is_not_nil(x.grad)
    assert.tensor_near(w, before, { rtol = 0, atol = 0 })
  end)
end)

describe("detach and retain_grad", function()
  it("detach shares storage and has no history", function()
    local x = R(3)
    local y = x * 2
    local d = y:detach()
    assert.is_false(d.requires_grad)
    assert.is_true(d.is_leaf)
    assert.is_true(d:is_set_to(y))
    d[1] = 7
    assert.are.equal(7, y[1]:item())
  end)

  it("detach_ makes a leaf; views cannot be detached in place", function()
    local x = R(3)
    local y = x * 2
    y:detach_()
    assert.is_true(y.is_leaf)
    assert.is_false(y.requires_grad)
    H.raises("can't detach views in-place", function() (x * 2):narrow(1, 1, 2):detach_() end)
  end)

  it("retain_grad keeps a non-leaf's gradient, accumulating", function()
    local x = R(3)
    local y = x * 2
    y:retain_grad()
    assert.is_true(y.retains_grad)
    local z = (y * y):sum()
    z:backward({ retain_graph = true })
    assert.tensor_near(y.grad, y:detach() * 2)
    z:backward()
    assert.tensor_near(y.grad, y:detach() * 4)
    H.raises("can't retain_grad on a tensor that has requires_grad=false", function() graft.ones(2):retain_grad() end)
  end)
end)

describe("printing", function()
  it("shows requires_grad and grad_fn as PyTorch", function()
    local x = graft.tensor({ 1.0, 2.0 }, { requires_grad = true })
    assert.are.equal("tensor([1., 2.], requires_grad=True)", tostring(x))
    assert.are.equal("tensor(3., grad_fn=<SumBackward0>)", tostring(x:sum()))
    local d = graft.tensor({ 1.0 }, { dtype = "float64", requires_grad = true })
    assert.are.equal("tensor([2.], dtype=float64, grad_fn=<MulBackward0>)", tostring(d * 2))
    assert.is_nil(x.grad_fn) -- printing recorded nothing
  end)
end)

describe("memory", function()
  it("frees graphs dropped without backward, and after errors", function()
    H.no_leak(function()
      local x = R(3, 4)
      local y = (x:exp() * x):sum(2):view(3, 1):expand(3, 4)
      y = nil
      x = nil
    end)
    H.no_leak(function()
      local x = R(3)
      local y = x:exp()
      local z = y:sum()
      y:add_(1)
      pcall(z.backward, z)
    end)
    H.no_leak(function()
      pcall(function() (R(2) * 2):backward() end)
      pcall(function() R(2):add_(1) end)
    end)
  end)

  it("forms no reference cycles through in-place rebases and retained grads", function()
    collectgarbage()
    collectgarbage()
    local live = graft._autograd_counters().nodes_live
    H.no_leak(function()
      local w = R(3)
      local t = graft.zeros(3, D64)
      local y = t * w          -- saves t
      t:add_(y)                -- t's history now reaches the node that saved t
      local v = t:narrow(1, 1, 2)
      v:mul_(2)                -- CopySlices on t
      local u = w * 3
      u:retain_grad()
      local s = u:sin()
      s[{ { 1, 2 } }]:mul_(2)
      s:sum():backward()
      w.grad = w * 2
    end)
    collectgarbage()
    collectgarbage()
    assert.are.equal(live, graft._autograd_counters().nodes_live)
  end)
end)

describe("reading .grad of a non-leaf", function()
  it("reads nil and warns once per process on stderr, as PyTorch warns", function()
    local bin = os.getenv("GRAFT_BIN") or "build/graft"
    local script = "local x = graft.randn(3, {requires_grad = true}); local y = x * 2; y:sum():backward(); "
      .. "print(y.grad, y.grad, x.grad ~= nil); local z = x * 3; z:retain_grad(); z:sum():backward(); "
      .. "print(z.grad ~= nil)"
    local p = assert(io.popen(("%s -e '%s' 2>&1"):format(bin, script)))
    local out = p:read("a")
    p:close()
    local _, warnings = out:gsub("the .grad of a tensor that is not a leaf is not kept by backward", "")
    assert.are.equal(1, warnings, out)
    assert.truthy(out:find("nil\tnil\ttrue\ntrue\n", 1, true), out)
  end)
end)
