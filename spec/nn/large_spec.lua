-- graft.F on inputs large enough for the OpenMP paths (split rows, channel bands,
-- per-thread partial sums), forward and backward, against the same functions written
-- with primitive graft ops (whose autograd is checked elsewhere), in float64.
local graft = require("graft")
local F = graft.F
require("spec.helpers") -- assert.tensor_near

local TOL = { rtol = 1e-9, atol = 1e-10 }
local function R(...) return graft.randn({ ... }, { dtype = "float64", requires_grad = true }) end

-- Forward and gradients of f and ref agree on the same leaves (weighted sum loss).
local function agree(f, ref, leaves)
  local function run(fn)
    for _, l in ipairs(leaves) do l.grad = nil end
    local y = fn(table.unpack(leaves))
    graft.manual_seed(77)
    local w = graft.randn(y:shape(), { dtype = "float64" })
    local loss = (y * w):sum()
    loss:backward()
    local gs = {}
    for i, l in ipairs(leaves) do gs[i] = l.grad end
    return y:detach(), gs
  end
  local y1, g1 = run(f)
  local y2, g2 = run(ref)
  assert.tensor_near(y1, y2, TOL)
  for i = 1, #leaves do assert.tensor_near(g1[i], g2[i], TOL) end
end

local function normalise(x, dims, eps)
  local m = x:mean(dims, { keepdim = true })
  local v = x:var(dims, { keepdim = true, unbiased = false })
  return (x - m) / (v + eps):sqrt()
end

describe("large inputs (parallel kernels)", function()
  before_each(function() graft.manual_seed(41) end)

  it("softmax and log_softmax, last and middle dims", function()
    local x = R(128, 300)
    agree(function(a) return F.softmax(a, 2) end, function(a)
      local e = (a - a:amax(2, { keepdim = true })):exp()
      return e / e:sum(2, { keepdim = true })
    end, { x })
    local y = R(16, 40, 60)
    agree(function(a) return F.log_softmax(a, 2) end, function(a) return a - a:logsumexp(2, { keepdim = true }) end, { y })
  end)

  it("layer_norm with weight and bias", function()
    agree(function(x, w, b) return F.layer_norm(x, 256, w, b) end,
      function(x, w, b) return normalise(x, 2, 1e-5) * w + b end, { R(200, 256), R(256), R(256) })
  end)

  it("batch_norm in training, [N, C] and [N, C, H, W]", function()
    agree(function(x, w, b) return F.batch_norm(x, nil, nil, { weight = w, bias = b, training = true }) end,
      function(x, w, b) return normalise(x, 1, 1e-5) * w + b end, { R(512, 96), R(96), R(96) })
    agree(function(x, w, b) return F.batch_norm(x, nil, nil, { weight = w, bias = b, training = true }) end,
      function(x, w, b) return normalise(x, { 1, 3, 4 }, 1e-5) * w:view(1, 16, 1, 1) + b:view(1, 16, 1, 1) end,
      { R(32, 16, 10, 10), R(16), R(16) })
  end)

  it("group_norm", function()
    agree(function(x, w, b) return F.group_norm(x, 4, w, b) end, function(x, w, b)
      local y = normalise(x:view(8, 4, -1), 3, 1e-5):view(8, 16, 20, 20)
      return y * w:view(1, 16, 1, 1) + b:view(1, 16, 1, 1)
    end, { R(8, 16, 20, 20), R(16), R(16) })
  end)

  it("cross_entropy with weights and label smoothing", function()
    local t = graft.randint(0, 10, { 5000 }, { dtype = "int64" })
    local w = graft.rand(10, { dtype = "float64" }) + 0.5
    agree(function(x) return F.cross_entropy(x, t, { weight = w, reduction = "sum", label_smoothing = 0.1 }) end,
      function(x)
        local lp = F.log_softmax(x, 2)
        local nll = -(lp:gather(2, t:view(-1, 1)):view(-1) * w:index_select(1, t)):sum()
        local smooth = -(lp * w):sum()
        return nll * 0.9 + smooth * (0.1 / 10)
      end, { R(5000, 10) })
  end)

  it("activations", function()
    local x = R(300, 200)
    agree(function(a) return F.silu(a) end, function(a) return a * a:sigmoid() end, { x })
    agree(function(a) return F.gelu(a, { approximate = "tanh" }) end,
      function(a) return a * 0.5 * (((a + a ^ 3 * 0.044715) * math.sqrt(2 / math.pi)):tanh() + 1) end, { x })
  end)

  it("embedding backward with repeated indices", function()
    local idx = graft.randint(0, 50, { 40, 30 }, { dtype = "int64" })
    agree(function(w) return F.embedding(idx, w) end, function(w) return w:index_select(1, idx:view(-1)):view(40, 30, 64) end,
      { R(50, 64) })
  end)

  it("dropout keeps its statistics", function()
    local y = F.dropout(graft.ones(400, 400), { p = 0.2 })
    local kept = y:ne(0):double():mean():item()
    assert.is_true(math.abs(kept - 0.8) < 0.01, "kept " .. kept)
  end)
end)
