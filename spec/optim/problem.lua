-- The fixed problem of spec/fixtures/gen_optim.py, shared by the optimizer specs: four
-- parameters in two groups, gradients g = (p - t) * a + n[step] computed with the same
-- float32 operations as the generator (so the replay is exact), w2 without a gradient on
-- steps 1-2, fz never with one, group 1's lr halved before step 11.
local graft = require("graft")
local optim = require("graft.optim")
local H = require("spec.helpers")

local P = {}
P.fx = H.fixture("optim")
local prob = P.fx.problem

-- A fresh set of parameters {w1 =, b1 =, w2 =, fz =} (fz frozen).
function P.params(dtype)
  dtype = dtype or "float32"
  local ps = {}
  for _, n in ipairs(prob.names) do
    local t = graft.tensor(prob.init[n], { dtype = dtype })
    if n ~= "fz" then t.requires_grad = true end
    ps[n] = t
  end
  return ps
end

-- A test title for a config {name, options}: "Adam{amsgrad=true lr=0.1}" (keys sorted).
function P.describe(cfg)
  local keys = {}
  for k, v in pairs(cfg[2]) do
    keys[#keys + 1] = k .. "=" .. (type(v) == "table" and ("{" .. table.concat(v, ",") .. "}") or tostring(v))
  end
  table.sort(keys)
  return cfg[1] .. "{" .. table.concat(keys, " ") .. "}"
end

-- Sets each parameter's grad for step s (1-based), as the generator does.
function P.set_grads(ps, s)
  local noise = prob.noise[(s - 1) % 4 + 1]
  graft.no_grad(function()
    for _, n in ipairs(prob.names) do
      local p = ps[n]
      if n == "fz" or (n == "w2" and s < prob.w2_from) then
        p.grad = nil
      else
        local dt = { dtype = p:dtype() }
        local t, a, e = graft.tensor(prob.target[n], dt), graft.tensor(prob.scale[n], dt), graft.tensor(noise[n], dt)
        p.grad = (p - t) * a + e
      end
    end
  end)
end

local function copy(t)
  local out = {}
  for k, v in pairs(t or {}) do out[k] = v end
  return out
end

-- The optimizer of a fixture config over ps: {w1, b1} with g1's overrides, {w2, fz} with
-- g2's; extra (e.g. {numerics = "1.13"}) joins the defaults. Parameters carry names.
function P.build(cfg, ps, extra)
  local defaults = copy(cfg.defaults)
  for k, v in pairs(extra or {}) do defaults[k] = v end
  local g1, g2 = copy(cfg.g1), copy(cfg.g2)
  g1.params = { { "w1", ps.w1 }, { "b1", ps.b1 } }
  g2.params = { { "w2", ps.w2 }, { "fz", ps.fz } }
  return optim[cfg.class]({ g1, g2 }, defaults)
end

-- Steps from `first` to `last` (inclusive); on_step(s) after each step.
function P.run(opt, ps, first, last, on_step)
  for s = first, last do
    if s == prob.lr_halved_before then opt.param_groups[1].lr = opt.param_groups[1].lr * 0.5 end
    P.set_grads(ps, s)
    opt:step()
    if on_step then on_step(s) end
  end
end

-- Bitwise equality of a tensor with a fixture tensor (same dtype); nil or a message.
function P.bits_differ(t, expected)
  local e = H.T(expected)
  if t:dtype() ~= e:dtype() then return ("dtype %s ~= %s"):format(t:dtype(), e:dtype()) end
  if t:contiguous():tobytes() ~= e:tobytes() then
    local a, b = H.flat(t), H.flat(e)
    for i = 1, #b do
      if a[i] ~= b[i] then return ("element %d: %.9g ~= expected %.9g"):format(i, a[i], b[i]) end
    end
    return "bytes differ"
  end
  return nil
end

-- FNV-1a over the float32 bit patterns (the generator's digest).
function P.fnv(t)
  local bytes = t:contiguous():tobytes()
  local h = 2166136261
  for i = 1, #bytes, 4 do
    local u = string.unpack("<I4", bytes, i)
    h = ((h ~ u) * 16777619) & 0xFFFFFFFF
  end
  return h
end

-- The 1003-element problem of the exact cases: p0, t, a and the noise of step s.
function P.exact_inputs(n)
  local p0, t, a = {}, {}, {}
  for i = 0, n - 1 do
    p0[i + 1] = ((i * 29) % 61 - 30) / 32
    t[i + 1] = ((i * 37) % 101 - 50) / 64
    a[i + 1] = ((i * 13) % 17 + 1) / 16
  end
  return graft.tensor(p0), graft.tensor(t), graft.tensor(a)
end

function P.exact_noise(n, s)
  local e = {}
  for i = 0, n - 1 do e[i + 1] = (((i * 7 + s * 11) % 23) - 11) / 128 end
  return graft.tensor(e)
end

return P
