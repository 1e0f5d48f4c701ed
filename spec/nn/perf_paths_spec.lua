-- The fast paths that the training benchmark (scripts/bench/train.sh) led to give the
-- same results as the general ones: linear's weight gradient computed in the weight's
-- layout, the vectorised max pooling against the float64 loop, the weight-gradient
-- partial sums of two threads, ReLU(true) working in place as PyTorch's, and the
-- optimizer step freeing the last step's tensors.
local graft = require("graft")
local H = require("spec.helpers")
local nn = require("graft.nn")
local optim = require("graft.optim")
local F = graft.F

describe("linear: the weight gradient in the weight's layout", function()
  before_each(function() graft.manual_seed(7) end)
  it("is contiguous and equals g^T x for F.linear, addmm, mm and matmul with w:t()", function()
    local x = graft.randn(6, 5)
    local g = graft.randn(6, 4)
    local expect = g:t():matmul(x)
    local b = graft.randn(4)
    for _, f in ipairs({
      function(w) return F.linear(x, w, b) end,
      function(w) return F.linear(x, w) end,
      function(w) return graft.addmm(b, x, w:t()) end,
      function(w) return x:mm(w:t()) end,
      function(w) return x:matmul(w:t()) end,
    }) do
      local w = graft.randn(4, 5, { requires_grad = true })
      f(w):backward(g)
      assert.is_true(w.grad:is_contiguous())
      assert.tensor_near(w.grad, expect, { rtol = 1e-5, atol = 1e-6 })
    end
  end)
  it("over a 3-D input, with the input gradient too", function()
    local x = graft.randn(2, 3, 5, { requires_grad = true })
    local w = graft.randn(4, 5, { requires_grad = true })
    local g = graft.randn(2, 3, 4)
    F.linear(x, w):backward(g)
    assert.tensor_near(w.grad, g:reshape(6, 4):t():matmul(x:detach():reshape(6, 5)), { rtol = 1e-5, atol = 1e-6 })
    assert.tensor_near(x.grad, g:matmul(w:detach()), { rtol = 1e-5, atol = 1e-6 })
  end)
end)

describe("max_pool2d: the vectorised float32 path", function()
  it("gives the float64 loop's values and indices (padding, strides 1 and 2, ceil_mode, NaN, -inf, ties)", function()
    graft.manual_seed(11)
    math.randomseed(11)
    for trial = 1, 120 do
      local kh, kw = math.random(1, 5), math.random(1, 5)
      local s = math.random(1, 2)
      local ph, pw = math.random(0, kh // 2), math.random(0, kw // 2)
      local h, w = math.random(kh, 12), math.random(math.max(kw, 8 * s), 40)
      local x = trial % 2 == 0 and graft.randn(2, 3, h, w) or graft.randint(-2, 3, { 2, 3, h, w }):float()
      if trial % 4 == 0 then
        x[1][1][1][1] = 0 / 0
        x[2][3][h][w] = -math.huge
      end
      local o = { stride = s, padding = { ph, pw }, ceil_mode = trial % 3 == 0, return_indices = true }
      local y, i = F.max_pool2d(x, { kh, kw }, o)
      local y64, i64 = F.max_pool2d(x:double(), { kh, kw }, o)
      assert.is_true(i:eq(i64):all():item())
      local yd = y:double()
      assert.is_true((yd:eq(y64) + yd:isnan() * y64:isnan()):gt(0):all():item())
    end
  end)
end)

describe("conv2d: the weight gradient summed over threads", function()
  after_each(function() graft.set_num_threads(2) end)
  it("is the same with one and two threads (im2col and Winograd kernels)", function()
    graft.manual_seed(5)
    for _, c in ipairs({ { 64, 32, 6, 1, 16 }, { 16, 16, 12, 2, 4 }, { 32, 32, 10, 1, 8 } }) do
      local cin, cout, hw, stride, n = table.unpack(c)
      local x, w = graft.randn(n, cin, hw, hw), graft.randn(cout, cin, 3, 3)
      local grads = {}
      for _, t in ipairs({ 1, 2 }) do
        graft.set_num_threads(t)
        local wr = w:clone():requires_grad_()
        local y = F.conv2d(x, wr, nil, { stride = stride, padding = 1 })
        y:backward(graft.ones(y:shape()))
        grads[t] = wr.grad
      end
      assert.tensor_near(grads[2], grads[1], { rtol = 1e-5, atol = 1e-4 })
    end
  end)
end)

describe("nn.ReLU(true)", function()
  it("works in place and returns its input, as PyTorch's", function()
    local x = graft.tensor({ -1, 2, -3 })
    local y = nn.ReLU(true)(x)
    assert.are.equal(x, y)
    assert.tensor_near(x, graft.tensor({ 0, 2, 0 }))
    local a = graft.randn(3, 4, { requires_grad = true })
    local h = a * 2
    nn.ReLU(true)(h):sum():backward()
    assert.tensor_near(a.grad, (a:detach():gt(0)):float() * 2)
    assert.are.equal("ReLU(inplace=True)", tostring(nn.ReLU(true)))
  end)
  it("raises PyTorch's error on a leaf that requires grad", function()
    local x = graft.randn(2, 3, { requires_grad = true })
    H.raises("a leaf Variable that requires grad is being used in an in-place operation", function()
      nn.ReLU(true)(x)
    end)
  end)
end)

describe("optimizer step and memory", function()
  it("frees the last step's activations and gradients (the allocator stays bounded)", function()
    graft.manual_seed(3)
    local net = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    local x, y = graft.randn(128, 256), graft.randint(0, 10, { 128 }, { dtype = "int64" })
    local opt = optim.SGD(net:parameters(), { lr = 0.01, momentum = 0.9 })
    local function step()
      opt:zero_grad()
      F.cross_entropy(net(x), y):backward()
      opt:step()
    end
    for _ = 1, 3 do step() end
    collectgarbage()
    local base = graft.memory_stats().allocated
    for _ = 1, 40 do step() end
    -- one step's tensors are well under 2 MiB; 40 uncollected steps would be ~40 MiB
    assert.is_true(graft.memory_stats().allocated - base < 4 * 2 ^ 20)
  end)
end)
