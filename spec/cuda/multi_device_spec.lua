-- Ops on a second device: as in PyTorch, an op runs on its tensors' device whatever the
-- current device is. With cuda:0 current, tensors on cuda:1 go through every kind of
-- launcher (elementwise, reductions, cuBLAS, cuDNN and im2col convolutions, softmax and
-- losses, normalisation, indexing, joining, random fills, dropout, optimizers, gradient
-- clipping, a model's forward and backward) and must give the CPU's results, on cuda:1.
-- The emulator (GRAFT_EMU_DEVICES=2, as `make test` runs it) aborts when a kernel
-- touches memory of another device than the one current at its launch. Allocating an
-- output selects its device, so in-place ops are the ones at risk: cur0() makes cuda:0
-- current again (set_device selects it in the runtime) right before each of them.
local graft = require("graft")
local nn = require("graft.nn")
local optim = require("graft.optim")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")
local F = graft.nn.functional
local busted = require("busted")

local D1 = "cuda:1"

local function cur0() graft.cuda.set_device(0) end

-- describe(name, fn) with two devices; else one pending test saying why.
local function describe2(name, fn)
  if C.available and graft.cuda.device_count() >= 2 then return busted.describe(name, fn) end
  busted.describe(name, function()
    busted.pending("skipped: " .. (C.reason or "one CUDA device (set GRAFT_EMU_DEVICES=2 over the emulator)"))
  end)
end

-- x on cuda:1 (tensors copied, leaves keep requires_grad; tables mapped).
local function on1(x) return C.dev(x, D1) end
local tensors_of = C.tensors_of

-- d on cuda:1 with c's shape, dtype and values (float32 tolerances unless opts say).
local function match1(d, c, opts, what)
  opts = opts or {}
  what = what or "result"
  assert.is_true(graft.is_tensor(d), what .. " is not a tensor")
  assert.are.equal(D1, d:device(), what .. " is not on cuda:1")
  local base = C.TOL[c:dtype()] or C.EXACT
  local ok, why = H.compare(d:cpu(), c, { rtol = opts.rtol or base.rtol, atol = opts.atol or base.atol })
  assert(ok, what .. ": " .. tostring(why))
end

-- fn on the CPU inputs and on their cuda:1 copies (cuda:0 current): every tensor result,
-- and with opts.grad every input gradient, on cuda:1 and equal to the CPU's; cuda:0
-- stays the current device.
local function check1(fn, inputs, opts)
  opts = opts or {}
  local n = inputs.n or #inputs
  local dinputs = on1(inputs)
  local cout = table.pack(fn(table.unpack(inputs, 1, n)))
  cur0()
  local dout = table.pack(fn(table.unpack(dinputs, 1, n)))
  assert.are.equal(0, graft.cuda.current_device(), "the op changed the current device")
  local cts, dts = tensors_of({ table.unpack(cout, 1, cout.n) }), tensors_of({ table.unpack(dout, 1, dout.n) })
  assert.are.equal(#cts, #dts, "different numbers of tensor results")
  for k = 1, #cts do match1(dts[k], cts[k], opts, "result " .. k) end
  if opts.grad then
    local closs, dloss
    for k = 1, #cts do
      if cts[k].requires_grad then
        local w = graft.rand(cts[k]:shape(), { dtype = cts[k]:dtype() }):add(0.5)
        local cl, dl = (cts[k] * w):sum(), (dts[k] * on1(w)):sum()
        closs = closs and closs + cl or cl
        dloss = dloss and dloss + dl or dl
      end
    end
    closs:backward()
    cur0()
    dloss:backward()
    local ci, di = tensors_of(inputs), tensors_of(dinputs)
    for k = 1, #ci do
      if ci[k].requires_grad then
        assert(di[k].grad, ("input %d: no gradient on cuda:1"):format(k))
        match1(di[k].grad, ci[k].grad, opts, ("gradient of input %d"):format(k))
      end
    end
  end
  return table.unpack(dout, 1, dout.n)
end

local function leaf(...)
  local t = graft.randn(...)
  t.requires_grad = true
  return t
end

describe2("ops on cuda:1 while cuda:0 is current", function()
  before_each(function() graft.cuda.set_device(0) end)
  after_each(function()
    graft.cuda.set_device(0)
    collectgarbage()
    collectgarbage()
  end)

  it("elementwise, out of place and in place", function()
    local a, b = graft.randn(5, 7), graft.randn(7)
    check1(function(x, y) return x + y, x * y, x:div(y), graft.where(x:gt(0), x, y), x:exp(), x:clamp(-0.5, 0.5) end,
      { a, b })
    check1(function(x, y)
      local z, w = x:clone(), x:clone()
      cur0()
      z:add_(y)
      cur0()
      z:mul_(y)
      cur0()
      z:clamp_(-1, 1)
      cur0()
      z:sub_(0.25)
      cur0()
      z:t():mul_(2) -- a non-contiguous view written in place
      cur0()
      z:exp_()
      cur0()
      w:fill_(3)
      cur0()
      w:zero_()
      return z, w
    end, { a, b })
    -- integers and a 0-dim CPU scalar combined with a cuda:1 tensor
    local i = graft.tensor({ { 1, -2, 3 }, { 4, 5, -6 } }, { dtype = "int64" })
    check1(function(x) return x * 3, x:abs(), x:gt(1) end, { i })
    local s = graft.tensor(2.5)
    local r = graft.randn(3, 4):to(D1) * s
    match1(r, graft.no_grad(function() return r:cpu() end), nil, "cuda:1 x 0-dim cpu")
  end)

  it("reductions", function()
    local x = graft.randn(6, 33)
    check1(function(t)
      local mx, am = t:max(2)
      return t:sum(), t:mean(1), t:sum(2, { keepdim = true }), t:var(2), mx, am, t:argmin(), t:cumsum(2),
          t:norm(), t:amax(1)
    end, { x })
  end)

  it("matmul, linear and batched products (cuBLAS)", function()
    local a, b = leaf(5, 8), leaf(8, 3)
    check1(function(x, y) return x:matmul(y), x:t():t():matmul(y:t():contiguous():t()) end, { a, b }, { grad = true })
    check1(function(x, y) return graft.bmm(x, y) end, { graft.randn(2, 3, 4), graft.randn(2, 4, 5) })
    local w, bias = leaf(4, 8), leaf(4)
    check1(function(x, ww, bb) return F.linear(x, ww, bb) end, { leaf(3, 8), w, bias }, { grad = true })
  end)

  for _, on in ipairs({ true, false }) do
    it(("conv2d, cuDNN %s"):format(on and "on" or "off"), function()
      local saved, tf32 = graft.backends.cudnn.enabled, graft.backends.cudnn.allow_tf32
      graft.backends.cudnn.enabled = on
      graft.backends.cudnn.allow_tf32 = false
      local ok, err = pcall(function()
        local x, w, b = leaf(2, 3, 7, 6), leaf(4, 3, 3, 3), leaf(4)
        check1(function(xx, ww, bb) return F.conv2d(xx, ww, bb, { stride = 2, padding = 1 }) end, { x, w, b },
          { grad = true })
      end)
      graft.backends.cudnn.enabled, graft.backends.cudnn.allow_tf32 = saved, tf32
      assert(ok, err)
    end)
  end

  it("softmax, log_softmax and cross_entropy with gradients", function()
    local x, y = leaf(6, 5), graft.tensor({ 0, 4, 2, 1, 3, 0 }, { dtype = "int64" })
    check1(function(t, target)
      return F.softmax(t, 2), F.log_softmax(t, 1), F.cross_entropy(t, target, { label_smoothing = 0.1 })
    end, { x, y }, { grad = true })
    check1(function(t, target) return F.mse_loss(t, target) end, { leaf(3, 4), graft.randn(3, 4) }, { grad = true })
  end)

  it("batch_norm (training, running statistics) and layer_norm", function()
    local x, w, b = leaf(4, 3, 5), leaf(3), leaf(3)
    local rm, rv = graft.zeros(3), graft.ones(3)
    local drm, drv = on1(rm), on1(rv)
    local y = F.batch_norm(x, rm, rv, w, b, { training = true, momentum = 0.3 })
    local dx, dw, db = on1(x), on1(w), on1(b)
    cur0() -- the running statistics are updated in place
    local dy = F.batch_norm(dx, drm, drv, dw, db, { training = true, momentum = 0.3 })
    match1(dy, y, nil, "batch_norm")
    match1(drm, rm, nil, "running_mean")
    match1(drv, rv, nil, "running_var")
    y:sum():backward()
    local s1 = dy:sum()
    cur0()
    s1:backward()
    match1(dx.grad, x.grad, nil, "dx")
    match1(dw.grad, w.grad, nil, "dw")
    match1(db.grad, b.grad, nil, "db")
    check1(function(t, ww, bb) return F.layer_norm(t, { 5 }, ww, bb) end, { leaf(3, 4, 5), leaf(5), leaf(5) },
      { grad = true })
  end)

  it("index_select, gather, scatter_add_, index_put_ and masks", function()
    local x = graft.randn(5, 6)
    local idx = graft.tensor({ 4, 0, 2 }, { dtype = "int64" })
    local gi = graft.tensor({ { 0, 5 }, { 1, 1 }, { 2, 0 }, { 3, 3 }, { 5, 4 } }, { dtype = "int64" })
    check1(function(t, i, g)
      local z, p, q, r, m = t:clone(), t:clone(), t:clone(), t:clone(), t:gt(0.5)
      local ones, src = graft.ones(5, 2, { device = t:device() }), graft.ones(3, 6, { device = t:device() })
      cur0()
      z:scatter_add_(2, g, ones)
      cur0()
      z:scatter_(2, g, 0.5)
      cur0()
      p:index_put_({ i }, 7)
      cur0()
      q:masked_fill_(m, -1)
      cur0()
      r:index_add_(1, i, src)
      return t:index_select(1, i), t:gather(2, g), z, p, q, r, t:masked_select(t:gt(0)), t:take(i), t:gt(0):nonzero()
    end, { x, idx, gi })
  end)

  it("cat and stack", function()
    check1(function(a, b) return graft.cat({ a, b }, 1), graft.cat({ a:t(), b:t() }, 2), graft.stack({ a, a }) end,
      { graft.randn(2, 3), graft.randn(4, 3) })
  end)

  it("random fills and dropout give the CPU's numbers for the same seed", function()
    graft.manual_seed(11)
    local c1, c2 = graft.empty(4, 9):uniform_(-2, 3), graft.empty(17):normal_(1.5, 0.25)
    local x = graft.randn(5, 40)
    local cd = F.dropout(x, 0.3)
    graft.manual_seed(11)
    local e1, e2 = graft.empty(4, 9, { device = D1 }), graft.empty(17, { device = D1 })
    cur0()
    local d1 = e1:uniform_(-2, 3)
    cur0()
    local d2 = e2:normal_(1.5, 0.25)
    graft.randn(5, 40) -- the CPU draw of x above, so the streams stay in step
    local x1 = x:to(D1)
    cur0()
    local dd = F.dropout(x1, 0.3)
    match1(d1, c1, C.EXACT, "uniform_")
    match1(d2, c2, nil, "normal_")
    match1(dd, cd, C.EXACT, "dropout")
    match1(graft.rand(3, { device = D1 }):mul(0), graft.zeros(3), C.EXACT, "rand")
  end)

  it("SGD and AdamW steps and clip_grad_norm_", function()
    for _, make in ipairs({
      function(ps) return optim.SGD(ps, { lr = 0.1, momentum = 0.9, weight_decay = 1e-3 }) end,
      function(ps) return optim.AdamW(ps, { lr = 1e-2, weight_decay = 0.01 }) end,
    }) do
      -- the third parameter is a transposed view: a strided launch that allocates nothing
      local p1, p2, p3 = graft.randn(4, 3), graft.randn(5), graft.randn(3, 4)
      local g1, g2, g3 = graft.randn(4, 3), graft.randn(5), graft.randn(4, 3)
      local cps, dps = { p1:clone(), p2:clone(), p3:clone():t() }, { on1(p1), on1(p2), on1(p3):t() }
      for i = 1, 3 do
        cps[i].requires_grad = true
        dps[i].requires_grad = true
      end
      local co, dopt = make(cps), make(dps)
      for _ = 1, 2 do
        cps[1].grad, cps[2].grad = g1:clone(), g2:clone()
        cps[3].grad = g3:clone()
        dps[1].grad, dps[2].grad, dps[3].grad = on1(g1), on1(g2), on1(g3)
        local ct = nn.utils.clip_grad_norm_(cps, 1.0)
        cur0()
        local dt = nn.utils.clip_grad_norm_(dps, 1.0)
        match1(dt, ct, nil, "total norm")
        co:step()
        cur0()
        dopt:step()
      end
      assert.are.equal(0, graft.cuda.current_device())
      match1(dps[1], cps[1], nil, "parameter 1")
      match1(dps[2], cps[2], nil, "parameter 2")
      match1(dps[3], cps[3], nil, "parameter 3 (a transposed view)")
    end
  end)

  it("a model moved with net:to('cuda:1') trains like the CPU's", function()
    graft.manual_seed(3)
    local function build() return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)) end
    local a, b = build(), build()
    b:load_state_dict(a:state_dict())
    b:to(D1)
    for _, p in ipairs(b:parameters()) do assert.are.equal(D1, p:device()) end
    local x, y = graft.randn(5, 6), graft.tensor({ 0, 2, 1, 1, 0 }, { dtype = "int64" })
    local oa, ob = optim.SGD(a:parameters(), { lr = 0.1 }), optim.SGD(b:parameters(), { lr = 0.1 })
    for step = 1, 2 do
      oa:zero_grad()
      cur0()
      ob:zero_grad()
      local xd, yd = x:to(D1), y:to(D1)
      cur0()
      local la, lb = F.cross_entropy(a(x), y), F.cross_entropy(b(xd), yd)
      match1(lb, la, nil, "loss at step " .. step)
      la:backward()
      cur0()
      lb:backward()
      oa:step()
      cur0()
      ob:step()
    end
    local sd = a:state_dict()
    for name, t in pairs(b:state_dict()) do match1(t, sd[name], nil, name) end
    assert.are.equal(0, graft.cuda.current_device())
  end)

  it("copies between cuda:0 and cuda:1", function()
    local x = graft.randn(3, 5)
    local a = x:to("cuda:0")
    local b = a:to(D1)
    match1(b, x, C.EXACT, "cuda:0 -> cuda:1")
    local c = b:t():to("cuda:0")
    assert.are.equal("cuda:0", c:device())
    assert.tensor_near(c:cpu(), x:t(), C.EXACT)
    local d = graft.zeros(5, 3, { device = D1 })
    d:copy_(c)
    match1(d, x:t(), C.EXACT, "copy_ from cuda:0")
  end)

  -- Copies of 1 MiB or more stream through pinned buffers; their events belong to a
  -- device (recording one on another fails, on a GPU as in the emulator).
  it("copies 1 MiB or more from the host to cuda:0 and then cuda:1", function()
    local x = graft.randn(300000)
    match1(x:to("cuda:0"):to(D1), x, C.EXACT, "via cuda:0")
    match1(x:to(D1), x, C.EXACT, "direct")
  end)

  it("refuses to combine tensors of cuda:0 and cuda:1", function()
    local a, b = graft.randn(3, { device = "cuda:0" }), graft.randn(3, { device = D1 })
    H.raises("expected all tensors to be on the same device, but found cuda:0 and cuda:1", function() return a + b end)
    H.raises("expected all tensors to be on the same device", function() return a:matmul(b) end)
    H.raises("expected all tensors to be on the same device", function() return graft.cat({ a, b }) end)
    H.raises("expected all tensors to be on the same device", function()
      return a:index_select(1, graft.tensor({ 0 }, { dtype = "int64", device = D1 }))
    end)
  end)
end)
