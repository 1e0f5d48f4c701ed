-- Gradients of composite expressions against PyTorch 1.13 (spec/fixtures/autograd.lua,
-- written by spec/fixtures/gen_autograd.py): each expression is rebuilt here from the
-- same float64 inputs; the loss and every input's gradient must match.
local graft = require("graft")
local H = require("spec.helpers")

local cases = H.fixture("autograd")

local function softmax(x, dim)
  local e = (x - x:amax(dim, true)):exp()
  return e / e:sum(dim, true)
end

local exprs = {
  mlp = function(x, w1, b1, w2) return ((x:matmul(w1) + b1):relu():matmul(w2)):logsumexp(2):mean() end,
  softmax = function(x) return (softmax(x, 2) * H.T(cases.softmax.target)):sum() end,
  norm = function(x, w)
    local z = (x - x:mean(1)) / (x:var(1, { unbiased = false }) + 1e-5):sqrt()
    return (z * w):tanh():sum()
  end,
  attention = function(q, k, v)
    return softmax(q:matmul(k:transpose(-1, -2)) / 2.0, -1):matmul(v):pow(2):sum()
  end,
  gather = function(x)
    local index = H.T(cases.gather.index)
    local joined = graft.cat({ x[{ ":", { 1, 2 } }], x:flip(2) }, 2)
    local w = graft.arange(6, { dtype = "float64" }):view(3, 2)
    return (joined:gather(2, index) * w):sum() + x[graft.tensor({ 0, 2, 2 })]:sigmoid():sum()
  end,
  reduce = function(x)
    return x:norm(2, 2):sum() + x:abs():cumsum(1):prod(2):mean() + (x:max(2)):sum() + x:std(1):sum()
        + x:clamp(-0.5, 0.5):pow(3):sum()
  end,
  broadcast = function(f32, d2) return (f32 * d2 + d2:exp() / (1.5 + f32:double() ^ 2)):sum() end,
}

describe("autograd against PyTorch", function()
  for name, fn in pairs(exprs) do
    it("matches the gradients of the '" .. name .. "' expression", function()
      local c = cases[name]
      local inputs = {}
      for i, x in ipairs(c.inputs) do inputs[i] = H.T(x):requires_grad_() end
      local loss = fn(table.unpack(inputs))
      local tol = { rtol = 1e-9, atol = 1e-12 }
      if name == "broadcast" then tol = { rtol = 1e-5, atol = 1e-6 } end
      assert.tensor_near(loss:detach(), c.loss, tol)
      loss:backward()
      for i, g in ipairs(c.grads) do assert.tensor_near(inputs[i].grad, g, tol) end
    end)
  end
end)
