-- graft.optim on float16 / bfloat16 parameters: PyTorch 1.13's bits on its own runs
-- (spec/fixtures/optim_half, written by spec/fixtures/optim_half/gen.py) under
-- numerics = "1.13" for every bfloat16 optimizer and float16 SGD; every optimizer, option,
-- dtype, layout and numerics mode against a Lua reference that repeats PyTorch's 16-bit
-- op sequence in float64 with each op rounded to float and then to 16 bits; state kept in
-- the parameter's dtype through state dicts and .pth files; gradient clipping; the
-- errors that remain; a bfloat16 MLP that trains.
local graft = require("graft")
local optim = require("graft.optim")
local H = require("spec.helpers")
local P = require("spec.optim.problem")

local fx = H.fixture("optim_half/trajectories")
local F = graft.F

local function copy(t)
  local out = {}
  for k, v in pairs(t or {}) do out[k] = v end
  return out
end

---------------------------------------------------------------------------------------
-- Bits: float32 and 16-bit values as Lua doubles

local function f32(x) return (string.unpack("<f", string.pack("<f", x))) end
local function f32_bits(x) return (string.unpack("<I4", string.pack("<f", x))) end
local function f32_of_bits(u) return (string.unpack("<f", string.pack("<I4", u))) end

-- The value of a 16-bit pattern.
local function h16_value(u, dt)
  if dt == "bfloat16" then return f32_of_bits(u << 16) end
  local sign = (u & 0x8000) ~= 0 and -1.0 or 1.0
  local e, m = (u >> 10) & 0x1f, u & 0x3ff
  if e == 0 then return sign * (m * 2.0 ^ -24) end
  if e == 31 then return m == 0 and sign * math.huge or 0 / 0 end
  return sign * (1 + m / 1024) * 2.0 ^ (e - 15)
end

-- A fixture tensor: four hex digits per element, row-major.
local function from_hex(hex, dt, shape)
  local vals = {}
  for i = 1, #hex, 4 do vals[#vals + 1] = h16_value(tonumber(hex:sub(i, i + 3), 16), dt) end
  return graft.tensor(vals, { dtype = dt }):reshape(shape)
end

local function hex_of(t)
  local b = t:contiguous():tobytes()
  local out = {}
  for i = 1, #b, 2 do out[#out + 1] = ("%04x"):format((string.unpack("<I2", b, i))) end
  return table.concat(out)
end

-- Asserts t's 16-bit patterns are `hex`, naming the first element that differs.
local function same_hex(t, hex, dt, what)
  assert.are.equal(dt, t:dtype(), what .. ": dtype")
  local got = hex_of(t)
  if got ~= hex then
    for i = 1, #hex, 4 do
      if got:sub(i, i + 3) ~= hex:sub(i, i + 3) then
        local u, v = tonumber(got:sub(i, i + 3), 16), tonumber(hex:sub(i, i + 3), 16)
        error(("%s: element %d is %.9g (0x%04x), PyTorch has %.9g (0x%04x)"):format(what, (i + 3) // 4,
          h16_value(u, dt), u, h16_value(v, dt), v), 2)
      end
    end
  end
end

---------------------------------------------------------------------------------------
-- The reference: PyTorch's 16-bit arithmetic, one element at a time, in float64

-- y to the nearest integer, ties to even (|y| < 2^52 with at most 25 significant bits,
-- so y + 0.5 is exact).
local function rne(y)
  local r = math.floor(y + 0.5)
  if r - y == 0.5 and r % 2 == 1 then r = r - 1 end
  return r
end

-- R: a float32 value rounded to bfloat16 (bf) or float16, nearest even.
local function r16(x, bf)
  if x ~= x or x == 0 or x == math.huge or x == -math.huge then return x end
  local ax = math.abs(x)
  local e = math.max(((f32_bits(ax) >> 23) & 0xff) - 127, -126)
  local q
  if bf then
    q = e - 7
  else
    q = math.max(e, -14) - 10
  end
  local r = rne(ax / 2.0 ^ q) * 2.0 ^ q
  if (bf and r >= 2.0 ^ 128) or (not bf and r > 65504) then r = math.huge end
  return x < 0 and -r or r
end

-- fma in float32 (a, b, c float32 values): a·b is exact in a double; the double sum s
-- has the exact error e (TwoSum); rounding s to float32 is right unless s sits exactly
-- halfway between two floats, where e decides.
local function fma32(a, b, c)
  local p = a * b
  local s = p + c
  local bb = s - p
  local e = (p - (s - bb)) + (c - bb)
  local r = f32(s)
  if e ~= 0 and r ~= s then
    local u = f32_bits(r)
    local up = (s > r) == (r > 0 or (r == 0 and s > 0))
    local other = f32_of_bits(up and u + 1 or u - 1)
    if r == 0 then other = (s > 0 and 1 or -1) * f32_of_bits(1) end
    if s == (r + other) / 2 and (e > 0) == (other > r) then r = other end
  end
  return r
end

-- The ops of PyTorch's 16-bit kernels (see core/optim/optim.c): R after each; scalars of
-- mul_/div_/add_ and add_'s alpha are 16-bit (rounded by the caller with hs), addcmul's
-- and addcdiv's values float32; vec: the element is in the bfloat16 vector body.
local function ops(bf)
  local function R(x) return r16(x, bf) end
  local o = {}
  function o.hs(v) return R(f32(v)) end
  function o.add(x, y, a, vec)
    if vec then return R(fma32(a, y, x)) end
    return R(f32(R(f32(a * y)) + x))
  end
  function o.mul(x, s) return R(f32(x * s)) end
  function o.div(x, s) return R(f32(x / s)) end
  function o.adds(x, s) return R(f32(x + s)) end
  function o.sqrt(x) return R(f32(math.sqrt(x))) end
  function o.addcmul(x, t1, t2, c) return R(fma32(f32(f32(c) * t1), t2, x)) end
  function o.addcdiv(x, t1, t2, c) return R(f32(x + f32(f32(f32(c) * t1) / t2))) end
  function o.lerp(m, g, w)
    local w32, d = f32(w), f32(g - m)
    if math.abs(w32) < 0.5 then return R(fma32(w32, d, m)) end
    return R(fma32(f32(w32 - 1), d, g))
  end
  function o.max(a, b)
    if a ~= a then return a end
    return a > b and a or b
  end
  return o
end

local DEFAULTS = {
  SGD = { momentum = 0, dampening = 0, weight_decay = 0, nesterov = false, maximize = false },
  Adam = { lr = 1e-3, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 0, amsgrad = false, maximize = false },
  AdamW = { lr = 1e-3, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 1e-2, amsgrad = false, maximize = false },
  RMSprop = { lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0, momentum = 0, centered = false, maximize = false },
  Adagrad = { lr = 1e-2, lr_decay = 0, eps = 1e-10, weight_decay = 0, initial_accumulator_value = 0, maximize = false },
}

-- One reference step of optimizer `cls` over the flat values p (updated in place) with
-- gradient g; st: the state (arrays, created here), vec[i]: element i is in the vector
-- body; lerp: PyTorch 2.x numerics.
local function ref_step(cls, opts, bf, lerp, p, g, vec, st)
  local h = copy(DEFAULTS[cls])
  for k, v in pairs(opts) do h[k] = v end
  local o = ops(bf)
  local n = #p
  local function zeros()
    local z = {}
    for i = 1, n do z[i] = 0.0 end
    return z
  end
  if cls == "SGD" then
    local wd, mu, omd, nlr = o.hs(h.weight_decay), o.hs(h.momentum), o.hs(1 - h.dampening), o.hs(-h.lr)
    local first = st.momentum_buffer == nil
    if h.momentum ~= 0 and first then st.momentum_buffer = zeros() end
    for i = 1, n do
      local d = h.maximize and -g[i] or g[i]
      if h.weight_decay ~= 0 then d = o.add(d, p[i], wd, vec[i]) end
      if h.momentum ~= 0 then
        local b = d
        if not first then b = o.add(o.mul(st.momentum_buffer[i], mu), d, omd, vec[i]) end
        st.momentum_buffer[i] = b
        d = h.nesterov and o.add(d, b, mu, vec[i]) or b
      end
      p[i] = o.add(p[i], d, nlr, vec[i])
    end
  elseif cls == "Adam" or cls == "AdamW" then
    if st.exp_avg == nil then
      st.step, st.exp_avg, st.exp_avg_sq = 0, zeros(), zeros()
      if h.amsgrad then st.max_exp_avg_sq = zeros() end
    end
    st.step = st.step + 1
    local b1, b2 = h.betas[1], h.betas[2]
    local step_size, bc2 = h.lr / (1 - b1 ^ st.step), math.sqrt(1 - b2 ^ st.step)
    local wd, hb1, omb1, hb2, hbc2, eps = o.hs(h.weight_decay), o.hs(b1), o.hs(1 - b1), o.hs(b2), o.hs(bc2), o.hs(h.eps)
    local decay = 1 - h.lr * h.weight_decay
    for i = 1, n do
      local gi = h.maximize and -g[i] or g[i]
      local pi = p[i]
      if cls == "AdamW" then
        if decay ~= 1 then pi = o.mul(pi, o.hs(decay)) end
      elseif h.weight_decay ~= 0 then
        gi = o.add(gi, pi, wd, vec[i])
      end
      local m = lerp and o.lerp(st.exp_avg[i], gi, 1 - b1) or o.add(o.mul(st.exp_avg[i], hb1), gi, omb1, vec[i])
      local v = o.addcmul(o.mul(st.exp_avg_sq[i], hb2), gi, gi, 1 - b2)
      local vv = v
      if h.amsgrad then
        vv = o.max(st.max_exp_avg_sq[i], v)
        st.max_exp_avg_sq[i] = vv
      end
      local den = o.adds(o.div(o.sqrt(vv), hbc2), eps)
      p[i] = o.addcdiv(pi, m, den, -step_size)
      st.exp_avg[i], st.exp_avg_sq[i] = m, v
    end
  elseif cls == "RMSprop" then
    if st.square_avg == nil then
      st.square_avg = zeros()
      if h.centered then st.grad_avg = zeros() end
      if h.momentum > 0 then st.momentum_buffer = zeros() end
    end
    local wd, al, oma, eps, mu, nlr = o.hs(h.weight_decay), o.hs(h.alpha), o.hs(1 - h.alpha), o.hs(h.eps),
        o.hs(h.momentum), o.hs(-h.lr)
    for i = 1, n do
      local gi = h.maximize and -g[i] or g[i]
      if h.weight_decay ~= 0 then gi = o.add(gi, p[i], wd, vec[i]) end
      local s = o.addcmul(o.mul(st.square_avg[i], al), gi, gi, 1 - h.alpha)
      st.square_avg[i] = s
      local avg
      if h.centered then
        local a = lerp and o.lerp(st.grad_avg[i], gi, 1 - h.alpha) or o.add(o.mul(st.grad_avg[i], al), gi, oma, vec[i])
        st.grad_avg[i] = a
        avg = o.sqrt(o.addcmul(s, a, a, -1))
      else
        avg = o.sqrt(s)
      end
      avg = o.adds(avg, eps)
      if h.momentum > 0 then
        local b = o.addcdiv(o.mul(st.momentum_buffer[i], mu), gi, avg, 1)
        st.momentum_buffer[i] = b
        p[i] = o.add(p[i], b, nlr, vec[i])
      else
        p[i] = o.addcdiv(p[i], gi, avg, -h.lr)
      end
    end
  elseif cls == "Adagrad" then
    if st.sum == nil then
      st.step, st.sum = 0, {}
      for i = 1, n do st.sum[i] = o.hs(h.initial_accumulator_value) end
    end
    st.step = st.step + 1
    local clr = h.lr / (1 + (st.step - 1) * h.lr_decay)
    local wd, eps = o.hs(h.weight_decay), o.hs(h.eps)
    for i = 1, n do
      local gi = h.maximize and -g[i] or g[i]
      if h.weight_decay ~= 0 then gi = o.add(gi, p[i], wd, vec[i]) end
      local s = o.addcmul(st.sum[i], gi, gi, 1)
      st.sum[i] = s
      p[i] = o.addcdiv(p[i], gi, o.adds(o.sqrt(s), eps), -clr)
    end
  end
end

-- Asserts the tensor t holds the reference values (NaN equal to NaN, zeros by sign).
local function same_values(t, want, what)
  local got = H.flat(t)
  assert.are.equal(#want, #got, what .. ": size")
  for i = 1, #want do
    local a, b = got[i], want[i]
    local same = (a == b and (a ~= 0 or 1 / a == 1 / b)) or (a ~= a and b ~= b)
    if not same then
      error(("%s: element %d is %.9g, the reference has %.9g"):format(what, i, a, b), 2)
    end
  end
end

---------------------------------------------------------------------------------------
-- PyTorch 1.13's own runs

describe("16-bit optimizers against PyTorch 1.13 (numerics = \"1.13\")", function()
  it("the fixture covers every optimizer, and float16 SGD", function()
    local seen = {}
    for _, name in ipairs(fx.order) do seen[fx.configs[name].class .. "/" .. fx.configs[name].dtype] = true end
    for _, cls in ipairs({ "SGD", "Adam", "AdamW", "RMSprop", "Adagrad" }) do
      assert.is_true(seen[cls .. "/bfloat16"], cls)
    end
    assert.is_true(seen["SGD/float16"])
  end)

  for _, name in ipairs(fx.order) do
    local cfg = fx.configs[name]
    it(("%s (%s): every step bit-identical, state in %s"):format(name, cfg.dtype, cfg.dtype), function()
      local dt, inp = cfg.dtype, fx.inputs[cfg.dtype]
      local p = from_hex(inp.p0, dt, fx.shape)
      p.requires_grad = true
      local opts = copy(cfg.opts)
      opts.numerics = "1.13"
      local opt = optim[cfg.class]({ p }, opts)
      for s = 1, fx.steps do
        p.grad = from_hex(inp.grads[s], dt, fx.shape)
        opt:step()
        same_hex(p, cfg.params[s], dt, ("%s after step %d"):format(name, s))
      end
      local st = opt.state[p]
      for k, v in pairs(cfg.state) do
        if k == "step" then
          assert.are.equal("float32", st.step:dtype())
          assert.are.equal(v, st.step:item())
        else
          same_hex(st[k], v, dt, ("%s: state %s after step %d"):format(name, k, fx.steps))
        end
      end
    end)
  end
end)

---------------------------------------------------------------------------------------
-- Every option, dtype, layout and numerics mode against the reference

-- The layouts of the reference runs: a contiguous parameter (two 32-element vector blocks
-- and a tail of 5), rows of 40 contiguous elements inside a wider tensor (each row its
-- own body and tail of 8), a transposed one (no contiguous row: all scalar tail) and a
-- single element. vec(i) for row-major element i (1-based) on bfloat16.
local LAYOUTS = {
  { name = "contiguous [3, 23]", make = function(t) return t end, shape = { 3, 23 },
    vec = function(i) return i <= 64 end },
  { name = "rows of 40 in [5, 45]", shape = { 5, 40 },
    make = function(t)
      local wide = graft.zeros({ 5, 45 }, { dtype = t:dtype() })
      local v = wide:narrow(2, 1, 40)
      v:copy_(t)
      return v
    end,
    vec = function(i) return (i - 1) % 40 < 32 end },
  { name = "transposed [6, 7]", shape = { 6, 7 },
    make = function(t) return t:t():contiguous():t() end, vec = function() return false end },
  { name = "one element", make = function(t) return t end, shape = { 1 }, vec = function() return false end },
}

local REF_CONFIGS = {
  { "SGD", { lr = 0.1 } },
  { "SGD", { lr = 0.1, momentum = 0.9, dampening = 0.3, weight_decay = 0.01 } },
  { "SGD", { lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 0.1, maximize = true } },
  { "Adam", { lr = 0.01 } },
  { "Adam", { lr = 0.01, weight_decay = 0.1, betas = { 0.3, 0.9 }, amsgrad = true, maximize = true, eps = 1e-4 } },
  { "AdamW", { lr = 0.01, weight_decay = 0.1 } },
  { "AdamW", { lr = 0.05, weight_decay = 0.5, amsgrad = true, betas = { 0.5, 0.9 } } },
  { "RMSprop", { lr = 0.01 } },
  { "RMSprop", { lr = 0.01, alpha = 0.3, centered = true, momentum = 0.9, weight_decay = 0.1, maximize = true } },
  { "RMSprop", { lr = 0.01, centered = true, eps = 1e-4 } },
  { "Adagrad", { lr = 0.1 } },
  { "Adagrad", { lr = 0.1, lr_decay = 0.01, weight_decay = 0.1, initial_accumulator_value = 0.1, eps = 1e-8,
    maximize = true } },
}

-- Gradient of step s for a parameter of `shape`: normal values with every seventh one
-- tiny (float16 products then fall among the subnormals), in dt.
local function grad_of(shape, dt, s, k)
  graft.manual_seed(100 * s + k)
  local g = graft.randn(shape):mul(0.5)
  local flat = g:reshape(-1)
  for i = 1, flat:numel(), 7 do flat[i] = flat[i]:item() * 1e-3 end
  return g:to(dt)
end

describe("16-bit optimizers against the reference arithmetic", function()
  for _, dt in ipairs({ "bfloat16", "float16" }) do
    for _, numerics in ipairs({ "2.x", "1.13" }) do
      for _, cfg in ipairs(REF_CONFIGS) do
        it(("%s, %s, numerics %s: 5 steps, every layout, bit-identical"):format(P.describe(cfg), dt, numerics),
          function()
            local bf = dt == "bfloat16"
            local ps, refs, vecs = {}, {}, {}
            graft.manual_seed(7)
            for k, lay in ipairs(LAYOUTS) do
              local p0 = graft.randn(lay.shape):to(dt)
              ps[k] = lay.make(p0:clone())
              ps[k].requires_grad = true
              refs[k] = { p = H.flat(p0), st = {} }
              vecs[k] = {}
              for i = 1, #refs[k].p do vecs[k][i] = bf and lay.vec(i) end
            end
            local opts = copy(cfg[2])
            opts.numerics = numerics
            local opt = optim[cfg[1]](ps, opts)
            for s = 1, 5 do
              for k, lay in ipairs(LAYOUTS) do
                local g = grad_of(lay.shape, dt, s, k)
                ps[k].grad = g
                ref_step(cfg[1], cfg[2], bf, numerics == "2.x", refs[k].p, H.flat(g), vecs[k], refs[k].st)
              end
              opt:step()
              for k, lay in ipairs(LAYOUTS) do
                local where = ("%s, step %d"):format(lay.name, s)
                same_values(ps[k], refs[k].p, where)
                local st = opt.state[ps[k]]
                for key, want in pairs(refs[k].st) do
                  if key == "step" then
                    assert.are.equal(want, st.step:item(), where .. ": step")
                  else
                    assert.are.equal(dt, st[key]:dtype(), where .. ": dtype of " .. key)
                    same_values(st[key], want, where .. ": " .. key)
                  end
                end
              end
            end
          end)
      end
    end
  end

  it("a bfloat16 parameter of 40000 elements gives the same bits on 1 thread and on several", function()
    local n0 = graft.get_num_threads()
    local function run(threads)
      graft.set_num_threads(threads)
      graft.manual_seed(3)
      local p = graft.randn(40000):to("bfloat16")
      p.requires_grad = true
      local opt = optim.AdamW({ p }, { lr = 0.01, weight_decay = 0.5, amsgrad = true })
      for s = 1, 3 do
        p.grad = grad_of({ 40000 }, "bfloat16", s, 1)
        opt:step()
      end
      return p:tobytes(), opt.state[p].exp_avg:tobytes()
    end
    local ok, a1, m1 = pcall(run, 1)
    local b1, b2
    if ok then ok, b1, b2 = pcall(run, math.max(n0, 4)) end
    graft.set_num_threads(n0)
    assert(ok, a1)
    assert.is_true(a1 == b1, "the parameter differs")
    assert.is_true(m1 == b2, "exp_avg differs")
  end)
end)

---------------------------------------------------------------------------------------
-- State, checkpoints, clipping, errors

describe("16-bit optimizer state", function()
  local function pair(dt)
    graft.manual_seed(21)
    local w, b = graft.randn(4, 3):to(dt), graft.randn(3):to(dt)
    w.requires_grad, b.requires_grad = true, true
    return { w, b }
  end
  local function grads(ps, s)
    for k, p in ipairs(ps) do p.grad = grad_of(p:shape(), p:dtype(), s, k) end
  end

  it("is created in the parameter's dtype (zeros_like(p)); step stays a float32 CPU tensor", function()
    for _, dt in ipairs({ "bfloat16", "float16" }) do
      for _, make in ipairs({
        function(ps) return optim.SGD(ps, { lr = 0.1, momentum = 0.9 }) end,
        function(ps) return optim.AdamW(ps, { lr = 0.01, amsgrad = true }) end,
        function(ps) return optim.RMSprop(ps, { momentum = 0.5, centered = true }) end,
        function(ps) return optim.Adagrad(ps, { initial_accumulator_value = 0.1 }) end,
      }) do
        local ps = pair(dt)
        local opt = make(ps)
        grads(ps, 1)
        opt:step()
        local n = 0
        for key, v in pairs(opt.state[ps[1]]) do
          if key == "step" then
            assert.are.equal("float32", v:dtype())
          else
            assert.are.equal(dt, v:dtype(), key)
            n = n + 1
          end
        end
        assert.is_true(n > 0)
      end
    end
  end)

  it("Adagrad's initial sum is initial_accumulator_value rounded to the dtype", function()
    local p = graft.zeros(3, { dtype = "bfloat16" })
    p.requires_grad = true
    local opt = optim.Adagrad({ p }, { initial_accumulator_value = 0.1 })
    assert.are.equal("bfloat16", opt.state[p].sum:dtype())
    assert.are.equal(0.10009765625, opt.state[p].sum[1]:item())
  end)

  it("saves to .pth with bfloat16 state and resumes with the bits of an uninterrupted run", function()
    local path = os.tmpname() .. ".pth"
    local a = pair("bfloat16")
    local oa = optim.AdamW(a, { lr = 0.01, amsgrad = true })
    for s = 1, 3 do
      grads(a, s)
      oa:step()
    end
    graft.save({ params = { a[1], a[2] }, optimizer = oa:state_dict() }, path)
    for s = 4, 6 do
      grads(a, s)
      oa:step()
    end
    local ck = graft.load(path)
    os.remove(path)
    local st = ck.optimizer.state[0]
    assert.are.equal("bfloat16", st.exp_avg:dtype())
    assert.are.equal("bfloat16", st.max_exp_avg_sq:dtype())
    assert.are.equal("float32", st.step:dtype())
    local b = pair("bfloat16")
    graft.no_grad(function()
      b[1]:copy_(ck.params[1])
      b[2]:copy_(ck.params[2])
    end)
    local ob = optim.AdamW(b, { lr = 0.01, amsgrad = true })
    ob:load_state_dict(ck.optimizer)
    assert.are.equal("bfloat16", ob.state[b[1]].exp_avg_sq:dtype())
    for s = 4, 6 do
      grads(b, s)
      ob:step()
    end
    for k = 1, 2 do
      assert.are.equal(a[k]:tobytes(), b[k]:tobytes(), "parameter " .. k)
      assert.are.equal(oa.state[a[k]].exp_avg:tobytes(), ob.state[b[k]].exp_avg:tobytes(), "exp_avg " .. k)
    end
  end)

  it("loads a float32 state dict into bfloat16 parameters by casting the state", function()
    local f = pair("float32")
    local of = optim.SGD(f, { lr = 0.1, momentum = 0.9 })
    grads(f, 1)
    of:step()
    local h = pair("bfloat16")
    local oh = optim.SGD(h, { lr = 0.1, momentum = 0.9 })
    oh:load_state_dict(of:state_dict())
    local buf = oh.state[h[1]].momentum_buffer
    assert.are.equal("bfloat16", buf:dtype())
    assert.are.equal(hex_of(of.state[f[1]].momentum_buffer:to("bfloat16")), hex_of(buf))
    grads(h, 2)
    oh:step()
  end)
end)

describe("gradient clipping with 16-bit gradients", function()
  local nn_utils = require("graft.nn.utils")
  it("clip_grad_norm_ and clip_grad_value_ keep the dtype and follow the float64 values", function()
    for _, dt in ipairs({ "bfloat16", "float16" }) do
      graft.manual_seed(5)
      local ps, ref = {}, {}
      for k, shape in ipairs({ { 4, 3 }, { 5 } }) do
        local p = graft.zeros(shape, { dtype = dt })
        p.requires_grad = true
        p.grad = graft.randn(shape):mul(3):to(dt)
        ps[k], ref[k] = p, p.grad:double()
      end
      local total = nn_utils.clip_grad_norm_(ps, 1.0)
      local want = graft.stack({ ref[1]:norm(), ref[2]:norm() }):norm()
      assert.are.equal(dt, total:dtype())
      assert.tensor_near(total:double(), want, { rtol = 1e-2, atol = 0 })
      for k = 1, 2 do
        assert.are.equal(dt, ps[k].grad:dtype())
        assert.tensor_near(ps[k].grad:double(), ref[k] / want:item(), { rtol = 2e-2, atol = 1e-3 })
      end
      nn_utils.clip_grad_value_(ps, 0.1)
      for k = 1, 2 do
        assert.are.equal(dt, ps[k].grad:dtype())
        assert.is_true(ps[k].grad:double():abs():max():item() <= 0.1 + 1e-3)
      end
      local opt = optim.SGD(ps, { lr = 1 })
      opt:step()
      assert.tensor_near(ps[1]:double(), -ps[1].grad:double(), { rtol = 0, atol = 0 })
    end
  end)
end)

describe("16-bit optimizer errors", function()
  it("refuse integer parameters, naming the parameter and the dtypes that work", function()
    local i = graft.zeros(2, { dtype = "int64" })
    H.raises('SGD: "idx" of param group 1 is int64: graft\'s optimizers update floating-point parameters '
      .. "(float32, float64, float16, bfloat16)", optim.SGD, { { "idx", i } }, { lr = 0.1 })
    H.raises("sgd: parameters of dtype int32 are not supported (float32, float64, float16 and bfloat16 are)",
      graft._optim.sgd, graft.zeros(2, { dtype = "int32" }), graft.zeros(2, { dtype = "int32" }), nil, 0.1, 0, 0, 0,
      false, false)
  end)

  it("refuse a gradient or state tensor of another dtype than the parameter", function()
    local p = graft.zeros(2, 2, { dtype = "bfloat16" })
    p.requires_grad = true
    local opt = optim.Adam({ { "fc.weight", p } }, { lr = 0.1 })
    p.grad = graft.ones(2, 2, { dtype = "bfloat16" })
    opt.state[p] = { step = graft.tensor(0.0), exp_avg = graft.zeros(2, 2),
      exp_avg_sq = graft.zeros(2, 2, { dtype = "bfloat16" }) }
    H.raises('Adam: parameter "fc.weight": adam: exp_avg is float32, the parameter is bfloat16',
      function() opt:step() end)
    assert.are.equal(0, opt.state[p].step:item()) -- the failed step did not count
    H.raises("assigned grad has data of a different type (float32, the tensor is bfloat16)",
      function() p.grad = graft.ones(2, 2) end)
    local h = graft.zeros(2, { dtype = "float16" })
    H.raises("sgd: grad is float32, the parameter is float16", graft._optim.sgd, h, graft.zeros(2), nil, 0.1, 0, 0, 0,
      false, false)
    local b = graft.zeros(2, { dtype = "bfloat16" })
    H.raises("rmsprop: square_avg is float16, the parameter is bfloat16", graft._optim.rmsprop, b, b:clone(),
      graft.zeros(2, { dtype = "float16" }), nil, nil, 0.01, 0.99, 1e-8, 0, 0, false, false, true)
  end)
end)

---------------------------------------------------------------------------------------
-- End to end

describe("a bfloat16 MLP", function()
  local ok_nn, nn = pcall(require, "graft.nn")
  for _, make in ipairs({
    { "SGD", function(net) return optim.SGD(net, { lr = 0.1, momentum = 0.9 }) end },
    { "AdamW", function(net) return optim.AdamW(net, { lr = 0.01, weight_decay = 0.01 }) end },
  }) do
    it("trains with " .. make[1] .. " on the CPU: the loss goes down, weights and state stay bfloat16", function()
      assert(ok_nn, nn)
      graft.manual_seed(0)
      local net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4)):to("bfloat16")
      local x = graft.randn(64, 8):to("bfloat16")
      local y = graft.randn(64, 8):narrow(2, 1, 4):mul(0.5):add(x:float():narrow(2, 1, 4)):to("bfloat16")
      local opt = make[2](net)
      local losses = {}
      for s = 1, 30 do
        opt:zero_grad()
        local loss = F.mse_loss(net(x), y)
        assert.are.equal("bfloat16", loss:dtype())
        loss:backward()
        opt:step()
        losses[s] = loss:float():item()
      end
      assert.is_true(losses[30] < 0.7 * losses[1], ("loss %.4f -> %.4f"):format(losses[1], losses[30]))
      for _, p in ipairs(net:parameters()) do
        assert.are.equal("bfloat16", p:dtype())
        for key, v in pairs(opt.state[p]) do
          if key ~= "step" then assert.are.equal("bfloat16", v:dtype(), key) end
        end
      end
    end)
  end
end)
