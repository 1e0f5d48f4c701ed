-- Optimizers on CUDA parameters: the fused list updates (one launch per group and device)
-- give the CPU's bits for every optimizer, option, dtype (float16 and bfloat16 included:
-- the CPU's 16-bit op sequence, vector-body and tail elements alike) and numerics mode,
-- and PyTorch 1.13's bits on its own trajectories (float32, and the 16-bit ones of
-- spec/fixtures/optim_half); state lives on the parameter's device while
-- `step` stays a CPU tensor; state dicts cross devices; errors name the op and the
-- parameter. The gradients are computed on the CPU and copied over, so these specs need
-- only transfers; gradient clipping needs the device reductions and elementwise ops.
local graft = require("graft")
local optim = require("graft.optim")
local H = require("spec.helpers")
local C = require("spec.helpers.cuda")
local P = require("spec.optim.problem")

local fx = P.fx
local K = graft._optim

-- Dead device tensors and cached blocks go between tests: the emulator's cost per
-- launch grows with the number of device allocations alive.
after_each(function()
  collectgarbage()
  collectgarbage()
  if C.available then graft.cuda.empty_cache() end
end)

-- A CUDA leaf holding t's values (or a view made by shape_fn of a device copy).
local function dev_param(t, view)
  local d = graft.no_grad(function() return t:detach():cuda() end)
  if view then d = view(d) end
  d.requires_grad = true
  return d
end

local function host(t) return graft.no_grad(function() return t:detach():cpu():contiguous() end) end

local function same_bits(d, c, what)
  local a, b = host(d), c:detach():contiguous()
  assert.are.equal(b:dtype(), a:dtype(), what .. ": dtype")
  if a:tobytes() ~= b:tobytes() then
    local x, y = H.flat(a), H.flat(b)
    for i = 1, #y do
      if x[i] ~= y[i] and not (x[i] ~= x[i] and y[i] ~= y[i]) then
        error(("%s: element %d is %.17g on the device, %.17g on the CPU"):format(what, i, x[i], y[i]), 2)
      end
    end
  end
end

-- Deterministic gradient of step s for a tensor of n elements: (p - t) * a + noise
-- (16-bit parameters: computed in float32, then rounded to the parameter's dtype).
local function grad_for(p_host, s, k)
  local dt = p_host:dtype()
  local half = dt == "float16" or dt == "bfloat16"
  local cdt = half and "float32" or dt
  if half then p_host = p_host:float() end
  local n = p_host:numel()
  local t = graft.arange(n, { dtype = cdt }):mul(0.37):add(k):sin():reshape(p_host:shape())
  local a = graft.arange(n, { dtype = cdt }):mul(0.11):add(s):cos():add(1.5):reshape(p_host:shape())
  local e = graft.arange(n, { dtype = cdt }):mul(1.3 + s):add(k):sin():mul(0.05):reshape(p_host:shape())
  local g = (p_host - t) * a + e
  return half and g:to(dt) or g
end

-- The parameters of the comparison: several sizes (one element, chunk boundaries of
-- the list kernel, an empty one), a transposed (non-contiguous) one, and rows of 40
-- contiguous elements inside a wider tensor (strided, but each row has bfloat16's
-- vector body and tail).
local SIZES = { { 3, 5 }, { 1 }, { 16385 }, { 0 }, { 40 } }

local function make_params(dtype)
  local cpu, cuda = {}, {}
  graft.manual_seed(11)
  for i, shape in ipairs(SIZES) do
    local t = graft.randn(shape, { dtype = dtype })
    cpu[i] = t:clone()
    cpu[i].requires_grad = true
    cuda[i] = dev_param(t)
  end
  local base = graft.randn(3, 7, { dtype = dtype })
  local c = base:clone():t()
  c.requires_grad = true
  cpu[#cpu + 1] = c
  cuda[#cuda + 1] = dev_param(base, function(d) return d:t() end)
  local wide = graft.randn(3, 45, { dtype = dtype })
  local r = wide:clone():narrow(2, 1, 40)
  r.requires_grad = true
  cpu[#cpu + 1] = r
  cuda[#cuda + 1] = dev_param(wide, function(d) return d:narrow(2, 1, 40) end)
  return cpu, cuda
end

local CONFIGS = {
  { "SGD", { lr = 0.1 } },
  { "SGD", { lr = 0.1, momentum = 0.9 } },
  { "SGD", { lr = 0.1, momentum = 0.9, dampening = 0.5, weight_decay = 0.01 } },
  { "SGD", { lr = 0.1, momentum = 0.9, nesterov = true, maximize = true } },
  { "Adam", { lr = 0.01 } },
  { "Adam", { lr = 0.01, weight_decay = 0.1, betas = { 0.3, 0.9 } } },
  { "Adam", { lr = 0.01, amsgrad = true, maximize = true } },
  { "AdamW", { lr = 0.01, weight_decay = 0.1 } },
  { "AdamW", { lr = 0.01, weight_decay = 0.1, amsgrad = true, betas = { 0.5, 0.9 } } },
  { "RMSprop", { lr = 0.01 } },
  { "RMSprop", { lr = 0.01, alpha = 0.3, centered = true } },
  { "RMSprop", { lr = 0.01, momentum = 0.9, centered = true, weight_decay = 0.1, maximize = true } },
  { "Adagrad", { lr = 0.1, lr_decay = 0.01, weight_decay = 0.1, initial_accumulator_value = 0.1 } },
  { "Adagrad", { lr = 0.1, maximize = true } },
}

local function opts_with(base, extra)
  local o = {}
  for k, v in pairs(base) do o[k] = v end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

C.describe("optimizers on cuda match the CPU bit for bit", function()
  for _, cfg in ipairs(CONFIGS) do
    for _, dtype in ipairs(C.FLOATS) do
      for _, numerics in ipairs({ "2.x", "1.13" }) do
        it(("%s, %s, numerics %s"):format(P.describe(cfg), dtype, numerics), function()
          local cpu, cuda = make_params(dtype)
          local oc = optim[cfg[1]](cpu, opts_with(cfg[2], { numerics = numerics }))
          local od = optim[cfg[1]](cuda, opts_with(cfg[2], { numerics = numerics }))
          for s = 1, 4 do
            for k = 1, #cpu do
              local g = grad_for(cpu[k]:detach(), s, k)
              cpu[k].grad = g
              cuda[k].grad = graft.no_grad(function() return g:cuda() end)
            end
            if s == 3 then -- a parameter without a grad is skipped on both sides
              cpu[2].grad, cuda[2].grad = nil, nil
            end
            oc:step()
            od:step()
            for k = 1, #cpu do same_bits(cuda[k], cpu[k], ("step %d, parameter %d"):format(s, k)) end
          end
          for k = 1, #cpu do
            local sc, sd = oc.state[cpu[k]], od.state[cuda[k]]
            assert.are.equal(sc == nil, sd == nil)
            for key, v in pairs(sc or {}) do
              if graft.is_tensor(v) then
                if key == "step" then
                  assert.are.equal("cpu", sd[key]:device())
                  assert.are.equal("float32", sd[key]:dtype())
                  assert.are.equal(v:item(), sd[key]:item())
                else
                  assert.are.equal("cuda:0", sd[key]:device(), key .. " is on the device")
                  assert.are.equal(dtype, sd[key]:dtype(), key .. " in the parameter's dtype")
                  same_bits(sd[key], v, ("state %s of parameter %d"):format(key, k))
                end
              end
            end
          end
        end)
      end
    end
  end
end)

C.describe("optimizers on cuda against PyTorch 1.13", function()
  -- The 1003-element exact cases: same FNV digest of the float32 bits as PyTorch.
  for _, name in ipairs(fx.exact.order) do
    local case = fx.exact.cases[name]
    it(name .. ": 6 steps, the digest of PyTorch's bits", function()
      local n = fx.exact.n
      local p0, t, a = P.exact_inputs(n)
      local p = dev_param(p0)
      local opts = {}
      for k, v in pairs(case.opts) do opts[k] = v end
      opts.numerics = "1.13"
      local opt = optim[case.class]({ p }, opts)
      for s = 1, fx.exact.steps do
        local g = (host(p) - t) * a + P.exact_noise(n, s)
        p.grad = g:cuda()
        opt:step()
      end
      assert.are.equal(case.fnv, P.fnv(host(p)))
    end)
  end

  -- The two-group trajectories (lr halved at step 11, w2 without a grad on steps 1-2).
  for _, name in ipairs(fx.order) do
    local cfg = fx.configs[name]
    it(name .. ": the float32 trajectory, bit-identical", function()
      local cps = P.params("float32")
      local ps = {}
      for n, t in pairs(cps) do
        ps[n] = graft.no_grad(function() return t:detach():cuda() end)
        if n ~= "fz" then ps[n].requires_grad = true end
      end
      local opt = P.build(cfg, ps, { numerics = "1.13" })
      local prob = fx.problem
      for s = 1, prob.steps do
        if s == prob.lr_halved_before then opt.param_groups[1].lr = opt.param_groups[1].lr * 0.5 end
        local shadow = {}
        for n, p in pairs(ps) do
          shadow[n] = host(p)
          if n ~= "fz" then shadow[n].requires_grad = true end
        end
        P.set_grads(shadow, s)
        for n, p in pairs(ps) do
          p.grad = shadow[n].grad and shadow[n].grad:cuda() or nil
        end
        opt:step()
        local want = cfg.float32.params[s]
        if want then
          for n, e in pairs(want) do
            local why = P.bits_differ(host(ps[n]), e)
            assert(why == nil, ("%s after step %d: %s"):format(n, s, tostring(why)))
          end
        end
      end
    end)
  end
end)

C.describe("16-bit optimizers on cuda against PyTorch 1.13", function()
  local hx = H.fixture("optim_half/trajectories")
  local function decode(hex, dt)
    local vals = {}
    for i = 1, #hex, 4 do
      local u = tonumber(hex:sub(i, i + 3), 16)
      if dt == "bfloat16" then
        vals[#vals + 1] = string.unpack("<f", string.pack("<I4", u << 16))
      else
        local sign, e, m = (u & 0x8000) ~= 0 and -1.0 or 1.0, (u >> 10) & 0x1f, u & 0x3ff
        vals[#vals + 1] = e == 0 and sign * (m * 2.0 ^ -24) or sign * (1 + m / 1024) * 2.0 ^ (e - 15)
      end
    end
    return graft.tensor(vals, { dtype = dt }):reshape(hx.shape)
  end

  for _, name in ipairs(hx.order) do
    local cfg = hx.configs[name]
    it(("%s (%s): every step bit-identical with numerics = \"1.13\""):format(name, cfg.dtype), function()
      local inp = hx.inputs[cfg.dtype]
      local p = dev_param(decode(inp.p0, cfg.dtype))
      local opts = opts_with(cfg.opts, { numerics = "1.13" })
      local opt = optim[cfg.class]({ p }, opts)
      for s = 1, hx.steps do
        p.grad = decode(inp.grads[s], cfg.dtype):cuda()
        opt:step()
        local want = decode(cfg.params[s], cfg.dtype)
        same_bits(p, want, ("%s after step %d"):format(name, s))
      end
    end)
  end
end)

C.describe("optimizer state on cuda", function()
  local function pair()
    graft.manual_seed(3)
    local w, b = graft.randn(4, 3), graft.randn(3)
    local cw, cb = w:clone(), b:clone()
    cw.requires_grad, cb.requires_grad = true, true
    return { cw, cb }, { dev_param(w), dev_param(b) }
  end
  local function grads(cpu, cuda, s)
    for k = 1, #cpu do
      local g = grad_for(cpu[k]:detach(), s, k)
      cpu[k].grad, cuda[k].grad = g, g:cuda()
    end
  end

  it("state_dict holds device tensors and a CPU step; saving and loading crosses devices", function()
    local cpu, cuda = pair()
    local oc, od = optim.AdamW(cpu, { lr = 0.01, amsgrad = true }), optim.AdamW(cuda, { lr = 0.01, amsgrad = true })
    for s = 1, 3 do
      grads(cpu, cuda, s)
      oc:step()
      od:step()
    end
    local sd = od:state_dict()
    assert.are.equal("cuda:0", sd.state[0].exp_avg:device())
    assert.are.equal("cuda:0", sd.state[1].max_exp_avg_sq:device())
    assert.are.equal("cpu", sd.state[0].step:device())
    -- a CPU state dict into an optimizer over CUDA parameters: the state moves over
    local cpu2, cuda2 = pair()
    for k = 1, 2 do
      graft.no_grad(function()
        cuda2[k]:copy_(cpu[k])
        cpu2[k]:copy_(cpu[k])
      end)
    end
    local od2 = optim.AdamW(cuda2, { lr = 0.01, amsgrad = true })
    od2:load_state_dict(oc:state_dict())
    local oc2 = optim.AdamW(cpu2, { lr = 0.01, amsgrad = true })
    oc2:load_state_dict(oc:state_dict())
    assert.are.equal("cuda:0", od2.state[cuda2[1]].exp_avg:device())
    assert.are.equal("cpu", od2.state[cuda2[1]].step:device())
    -- and a CUDA state dict into a CPU optimizer
    local oc3 = optim.AdamW(pair(), { lr = 0.01, amsgrad = true })
    oc3:load_state_dict(od:state_dict())
    assert.are.equal("cpu", oc3.state[oc3.param_groups[1].params[1]].exp_avg:device())
    for s = 4, 6 do
      grads(cpu2, cuda2, s)
      oc2:step()
      od2:step()
    end
    for k = 1, 2 do same_bits(cuda2[k], cpu2[k], "parameter " .. k .. " after resuming") end
  end)

  it("a step counter loaded onto the device comes back to the CPU", function()
    local _, cuda = pair()
    local od = optim.Adam(cuda, { lr = 0.01 })
    local sd = {
      state = { [0] = { step = graft.tensor(5.0):cuda(), exp_avg = graft.zeros(4, 3), exp_avg_sq = graft.zeros(4, 3) } },
      param_groups = { { lr = 0.01, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 0, amsgrad = false,
        maximize = false, params = { 0, 1 } } },
    }
    od:load_state_dict(sd)
    local st = od.state[cuda[1]]
    assert.are.equal("cpu", st.step:device())
    assert.are.equal("cuda:0", st.exp_avg:device())
    cuda[1].grad = graft.ones(4, 3):cuda()
    od:step()
    assert.are.equal(6, st.step:item())
  end)
end)

C.describe("the list kernels (graft._optim.*_multi)", function()
  it("update a list of tensors of mixed sizes in one call", function()
    graft.manual_seed(5)
    local ps, gs, ms, vs, steps = {}, {}, {}, {}, {}
    local cps, cms, cvs = {}, {}, {}
    for k, n in ipairs({ 1, 7, 16384, 16385, 33000 }) do
      local p, g = graft.randn(n), graft.randn(n)
      cps[k], cms[k], cvs[k] = p:clone(), graft.zeros(n), graft.zeros(n)
      ps[k], gs[k], ms[k], vs[k] = p:cuda(), g:cuda(), graft.zeros(n):cuda(), graft.zeros(n):cuda()
      steps[k] = graft.tensor(0.0)
      for s = 1, 2 do K.adam(cps[k], g, graft.tensor(s - 1.0), cms[k], cvs[k], nil, 0.01, 0.9, 0.999, 1e-8, 0, false, false, false, true) end
    end
    for _ = 1, 2 do
      assert.is_nil(K.adam_multi(ps, gs, steps, ms, vs, nil, 0.01, 0.9, 0.999, 1e-8, 0, false, false, false, true))
    end
    for k = 1, #ps do
      same_bits(ps[k], cps[k], "parameter " .. k)
      same_bits(ms[k], cms[k], "exp_avg " .. k)
      assert.are.equal(2, steps[k]:item())
    end
  end)

  it("update a list of 16-bit tensors of mixed sizes in one call, chunk boundaries included", function()
    for _, dt in ipairs({ "bfloat16", "float16" }) do
      graft.manual_seed(6)
      local ps, gs, ms, vs, steps = {}, {}, {}, {}, {}
      local cps, cms, cvs = {}, {}, {}
      for k, n in ipairs({ 1, 7, 33, 16384, 16385, 33000 }) do
        local p, g = graft.randn(n):to(dt), graft.randn(n):mul(0.1):to(dt)
        cps[k], cms[k], cvs[k] = p:clone(), graft.zeros(n, { dtype = dt }), graft.zeros(n, { dtype = dt })
        ps[k], gs[k] = p:cuda(), g:cuda()
        ms[k], vs[k] = graft.zeros(n, { dtype = dt }):cuda(), graft.zeros(n, { dtype = dt }):cuda()
        steps[k] = graft.tensor(0.0)
        for s = 1, 2 do
          K.adam(cps[k], g, graft.tensor(s - 1.0), cms[k], cvs[k], nil, 0.01, 0.9, 0.999, 1e-3, 0.1, false, false, false,
            false)
        end
      end
      for _ = 1, 2 do
        assert.is_nil(K.adam_multi(ps, gs, steps, ms, vs, nil, 0.01, 0.9, 0.999, 1e-3, 0.1, false, false, false, false))
      end
      for k = 1, #ps do
        same_bits(ps[k], cps[k], dt .. " parameter " .. k)
        same_bits(ms[k], cms[k], dt .. " exp_avg " .. k)
        same_bits(vs[k], cvs[k], dt .. " exp_avg_sq " .. k)
      end
    end
  end)

  it("report the parameter at fault and restore the step counters", function()
    local ps = { graft.zeros(3):cuda(), graft.zeros(3):cuda() }
    local gs = { graft.ones(3):cuda(), graft.ones(3) }
    local steps = { graft.tensor(0.0), graft.tensor(0.0) }
    local ms, vs = { graft.zeros(3):cuda(), graft.zeros(3):cuda() }, { graft.zeros(3):cuda(), graft.zeros(3):cuda() }
    H.no_leak(function()
      local bad, msg = K.adam_multi(ps, gs, steps, ms, vs, nil, 0.01, 0.9, 0.999, 1e-8, 0, false, false, false, true)
      assert.are.equal(2, bad)
      assert.is_truthy(msg:find("adam: expected all tensors to be on the same device, but found cuda:0 and cpu", 1, true), msg)
    end)
    assert.are.equal(0, steps[1]:item())
    assert.are.equal(0, steps[2]:item())
    assert.are.equal(0, host(ps[1]):sum():item()) -- nothing was written
    local bad, msg = K.sgd_multi({ graft.zeros(2):cuda(), graft.zeros(2) }, { graft.zeros(2):cuda(), graft.zeros(2) },
      nil, nil, 0.1, 0, 0, 0, false, false)
    assert.are.equal(2, bad)
    assert.is_truthy(msg:find("sgd: expected all tensors to be on the same device", 1, true), msg)
  end)

  it("refuse a step counter on the device", function()
    H.raises("must be a CPU tensor", function()
      K.adam(graft.zeros(2):cuda(), graft.zeros(2):cuda(), graft.tensor(0.0):cuda(), graft.zeros(2):cuda(),
        graft.zeros(2):cuda(), nil, 0.01, 0.9, 0.999, 1e-8, 0, false, false, false, true)
    end)
    H.raises("must be a CPU tensor", function()
      K.adagrad_multi({ graft.zeros(2):cuda() }, { graft.zeros(2):cuda() }, { graft.tensor(0.0):cuda() },
        { graft.zeros(2):cuda() }, 0.1, 0, 1e-10, 0, false)
    end)
  end)
end)

C.describe("optimizer errors on cuda", function()
  it("name the op, the parameter and both devices", function()
    local w = dev_param(graft.zeros(2, 2))
    local opt = optim.SGD({ { "fc.weight", w } }, { lr = 0.1, momentum = 0.9 })
    H.raises("grad: assigned grad is on a different device", function() w.grad = graft.ones(2, 2) end)
    w.grad = graft.ones(2, 2):cuda()
    opt.state[w] = { momentum_buffer = graft.zeros(2, 2) } -- a buffer left on the CPU
    H.raises('SGD: parameter "fc.weight": sgd: expected all tensors to be on the same device, but found cuda:0 and cpu',
      function() opt:step() end)
    opt.state[w] = nil
    local m = optim.Adam({ { "fc.weight", w } }, { lr = 0.1 })
    m.state[w] = { step = graft.tensor(0.0), exp_avg = graft.zeros(2, 2):cuda(), exp_avg_sq = graft.zeros(2, 2, { dtype = "float64" }):cuda() }
    H.raises('Adam: parameter "fc.weight": adam: exp_avg_sq is float64, the parameter is float32', function() m:step() end)
    assert.are.equal(0, m.state[w].step:item()) -- the failed step did not count
    m.state[w] = { step = graft.tensor(0.0), exp_avg = graft.zeros(3):cuda(), exp_avg_sq = graft.zeros(2, 2):cuda() }
    H.raises("adam: exp_avg is [3], the parameter is [2, 2]", function() m:step() end)
    m.state[w] = { step = graft.tensor(0.0):cuda(), exp_avg = graft.zeros(2, 2):cuda(), exp_avg_sq = graft.zeros(2, 2):cuda() }
    H.raises("the step counter is on cuda:0; it must be a CPU tensor", function() m:step() end)
    local sgd = optim.SGD({ { "fc.weight", w } }, { lr = 0.1, momentum = 0.9 })
    H.raises('sgd: grad is float64, the parameter is float32', function()
      K.sgd(w, graft.ones(2, 2, { dtype = "float64" }):cuda(), nil, 0.1, 0.9, 0, 0, false, false)
    end)
    sgd:step()
    assert.are.equal("cuda:0", sgd.state[w].momentum_buffer:device())
  end)

  it("update CPU and CUDA parameters of one group each on their device", function()
    local a, b = graft.ones(3), graft.ones(3)
    a.requires_grad = true
    local d = dev_param(b)
    local opt = optim.Adam({ a, d }, { lr = 0.1 })
    a.grad, d.grad = graft.ones(3), graft.ones(3):cuda()
    opt:step()
    same_bits(d, a, "the CUDA parameter")
    assert.are.equal("cuda:0", opt.state[d].exp_avg:device())
    assert.are.equal("cpu", opt.state[a].exp_avg:device())
  end)
end)

-- Needs the device reductions (norm, max) and elementwise ops (mul_, clamp_) of the
-- other CUDA areas.
C.describe("gradient clipping on cuda", function()
  local nn_utils = require("graft.nn.utils")
  local function params(G, on_device)
    local ps = {}
    for i, g in ipairs(G) do
      local p = graft.zeros_like(H.T(g))
      if on_device then p = p:cuda() end
      p.requires_grad = true
      p.grad = on_device and H.T(g):cuda() or H.T(g)
      ps[i] = p
    end
    return ps
  end

  for i, case in ipairs(fx.clip.norm) do
    it(("clip_grad_norm_ %d (max_norm %s, norm_type %s) matches PyTorch"):format(i, case.max_norm, case.norm_type), function()
      local ps = params(fx.clip.grads, true)
      local total = nn_utils.clip_grad_norm_(ps, case.max_norm, { norm_type = case.norm_type })
      assert.are.equal("cuda:0", total:device())
      assert.tensor_near(total:cpu(), H.T(case.total), { rtol = 1e-5, atol = 1e-6 })
      for k, p in ipairs(ps) do
        assert.are.equal("cuda:0", p.grad:device())
        assert.tensor_near(p.grad:cpu(), H.T(case.grads[k]), { rtol = 1e-5, atol = 1e-6 })
      end
    end)
  end

  it("clip_grad_value_ matches PyTorch", function()
    local ps = params(fx.clip.grads, true)
    nn_utils.clip_grad_value_(ps, fx.clip.value.clip_value)
    for k, p in ipairs(ps) do
      assert.tensor_near(p.grad:cpu(), H.T(fx.clip.value.grads[k]), C.EXACT)
    end
  end)

  it("error_if_nonfinite reads the total norm once", function()
    local ps = params(fx.clip.grads, true)
    ps[1].grad = graft.full({ 3, 4 }, math.huge):cuda()
    H.raises("is non-finite", function()
      nn_utils.clip_grad_norm_(ps, 1.0, { error_if_nonfinite = true })
    end)
  end)
end)

-- Needs isfinite/all/logical ops and mul on the device.
C.describe("GradScaler on cuda", function()
  local GradScaler = require("graft.grad_scaler").GradScaler

  it("unscales and steps as on the CPU, and skips the step with an inf or NaN gradient", function()
    graft.manual_seed(8)
    local w = graft.randn(6, 4)
    local cw, dw = w:clone(), dev_param(w)
    cw.requires_grad = true
    local oc, od = optim.AdamW({ cw }, { lr = 0.01 }), optim.AdamW({ dw }, { lr = 0.01 })
    local sc, sd = GradScaler({ init_scale = 2.0 ^ 10, growth_interval = 2 }), GradScaler({ init_scale = 2.0 ^ 10, growth_interval = 2 })
    for s = 1, 6 do
      local g = grad_for(cw:detach(), s, 1)
      if s == 3 then g[{ 2, 3 }] = math.huge end
      if s == 5 then g[{ 1, 1 }] = 0 / 0 end
      cw.grad, dw.grad = sc:scale(g), sd:scale(g:cuda())
      local before = host(dw)
      sc:step(oc)
      sd:step(od)
      sc:update()
      sd:update()
      if s == 3 or s == 5 then
        same_bits(dw, before, "skipped step " .. s)
      end
      same_bits(dw, cw, "step " .. s)
      same_bits(dw.grad, cw.grad, "unscaled grad " .. s)
      assert.are.equal(sc:get_scale(), sd:get_scale())
    end
    assert.are.equal(2.0 ^ 9, sd:get_scale()) -- two backoffs, one growth
  end)

  it("scales a float16 loss on the device", function()
    local s = GradScaler({ init_scale = 256 })
    local l = s:scale(graft.tensor(0.5):half():cuda())
    assert.are.equal("float16", l:dtype())
    assert.are.equal("cuda:0", l:device())
    assert.are.equal(128, l:item())
  end)
end)
