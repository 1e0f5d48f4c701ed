-- graft.nn.init: PyTorch's initialisation functions (torch.nn.init), each filling a
-- tensor in place under no_grad and returning it. The distributions are PyTorch's;
-- the numbers come from graft's generator (graft.manual_seed), not PyTorch's.
--
--   nn.init.kaiming_normal_(conv.weight, {mode = "fan_out", nonlinearity = "relu"})
--   nn.init.zeros_(fc.bias);  nn.init.trunc_normal_(w, {std = 0.02})
local graft = require("graft")

local init = {}

local function check_tensor(t, op)
  if not graft.is_tensor(t) then
    error(("%s: expected a tensor, got %s"):format(op, type(t)), 3)
  end
end

local function nograd(fn) return graft.no_grad(fn) end

-- calculate_gain(nonlinearity [, param]): the recommended gain for a nonlinearity.
function init.calculate_gain(nonlinearity, param)
  local linear = {
    linear = true, conv1d = true, conv2d = true, conv3d = true, conv_transpose1d = true,
    conv_transpose2d = true, conv_transpose3d = true, sigmoid = true,
  }
  if linear[nonlinearity] then return 1 end
  if nonlinearity == "tanh" then return 5.0 / 3 end
  if nonlinearity == "relu" then return math.sqrt(2.0) end
  if nonlinearity == "leaky_relu" then
    local slope
    if param == nil then
      slope = 0.01
    elseif type(param) == "number" then
      slope = param
    else
      error(("negative_slope %s not a valid number"):format(tostring(param)), 2)
    end
    return math.sqrt(2.0 / (1 + slope ^ 2))
  end
  if nonlinearity == "selu" then return 3.0 / 4 end
  error(("Unsupported nonlinearity %s"):format(tostring(nonlinearity)), 2)
end

-- fan_in, fan_out of a weight (dims >= 2): [out, in, k...] -> in*k, out*k.
function init.calculate_fan_in_and_fan_out(t)
  local d = t:dim()
  if d < 2 then
    error("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions", 2)
  end
  local shape = t:shape()
  local rf = 1
  for i = 3, d do rf = rf * shape[i] end
  return shape[2] * rf, shape[1] * rf
end

local function correct_fan(t, mode)
  mode = (mode or "fan_in"):lower()
  if mode ~= "fan_in" and mode ~= "fan_out" then
    error(("Mode %s not supported, please use one of fan_in, fan_out"):format(mode), 3)
  end
  local fi, fo = init.calculate_fan_in_and_fan_out(t)
  return mode == "fan_in" and fi or fo
end

local function has_zero_dim(t)
  for _, s in ipairs(t:shape()) do
    if s == 0 then return true end
  end
  return false
end

function init.uniform_(t, a, b)
  check_tensor(t, "uniform_")
  return nograd(function() return t:uniform_(a or 0.0, b or 1.0) end)
end

function init.normal_(t, mean, std)
  check_tensor(t, "normal_")
  return nograd(function() return t:normal_(mean or 0.0, std or 1.0) end)
end

function init.constant_(t, val)
  check_tensor(t, "constant_")
  return nograd(function() return t:fill_(val) end)
end

function init.ones_(t) return init.constant_(t, 1) end
function init.zeros_(t)
  check_tensor(t, "zeros_")
  return nograd(function() return t:zero_() end)
end

-- eye_(t): the identity matrix in a 2-D tensor.
function init.eye_(t)
  check_tensor(t, "eye_")
  if t:dim() ~= 2 then error("Only tensors with 2 dimensions are supported", 2) end
  return nograd(function()
    local s = t:shape()
    return t:copy_(graft.eye(s[1], s[2], { dtype = t:dtype() }))
  end)
end

-- Options come in a trailing table ({a =, mode =, nonlinearity =}); a bare number is a.
local function kaiming_std(t, opts, op)
  if type(opts) == "number" then opts = { a = opts } end
  opts = opts or {}
  local fan = correct_fan(t, opts.mode)
  local gain = init.calculate_gain(opts.nonlinearity or "leaky_relu", opts.a or 0)
  return gain / math.sqrt(fan)
end

function init.kaiming_uniform_(t, opts)
  check_tensor(t, "kaiming_uniform_")
  if has_zero_dim(t) then return t end
  local bound = math.sqrt(3.0) * kaiming_std(t, opts, "kaiming_uniform_")
  return nograd(function() return t:uniform_(-bound, bound) end)
end

function init.kaiming_normal_(t, opts)
  check_tensor(t, "kaiming_normal_")
  if has_zero_dim(t) then return t end
  local std = kaiming_std(t, opts, "kaiming_normal_")
  return nograd(function() return t:normal_(0, std) end)
end

local function xavier_std(t, gain)
  local fi, fo = init.calculate_fan_in_and_fan_out(t)
  if type(gain) == "table" then gain = gain.gain end
  return (gain or 1.0) * math.sqrt(2.0 / (fi + fo))
end

function init.xavier_uniform_(t, gain)
  check_tensor(t, "xavier_uniform_")
  local a = math.sqrt(3.0) * xavier_std(t, gain)
  return nograd(function() return t:uniform_(-a, a) end)
end

function init.xavier_normal_(t, gain)
  check_tensor(t, "xavier_normal_")
  local std = xavier_std(t, gain)
  return nograd(function() return t:normal_(0, std) end)
end

-- erfinv(y): Giles' single-precision approximation (relative error ~1e-7, enough
-- for float32 weights); used only by the tail fallback of trunc_normal_.
local function erfinv(y)
  if y <= -1 then return -math.huge elseif y >= 1 then return math.huge end
  local w = -math.log((1 - y) * (1 + y))
  local p
  if w < 5 then
    w = w - 2.5
    p = 2.81022636e-08
    p = 3.43273939e-07 + p * w; p = -3.5233877e-06 + p * w; p = -4.39150654e-06 + p * w
    p = 0.00021858087 + p * w; p = -0.00125372503 + p * w; p = -0.00417768164 + p * w
    p = 0.246640727 + p * w; p = 1.50140941 + p * w
  else
    w = math.sqrt(w) - 3
    p = -0.000200214257
    p = 0.000100950558 + p * w; p = 0.00134934322 + p * w; p = -0.00367342844 + p * w
    p = 0.00573950773 + p * w; p = -0.0076224613 + p * w; p = 0.00943887047 + p * w
    p = 1.00167406 + p * w; p = 2.83297682 + p * w
  end
  return p * y
end

-- erf(z) from Numerical Recipes' erfc Chebyshev fit (error < 1.2e-7).
local function erf(z)
  local s = z < 0 and -1 or 1
  z = math.abs(z)
  local t = 1 / (1 + 0.5 * z)
  local r = t * math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 +
    t * 0.17087277)))))))))
  return s * (1 - r)
end

local function norm_cdf(x) return (1 + erf(x / math.sqrt(2))) / 2 end

-- trunc_normal_(t [, {mean = 0, std = 1, a = -2, b = 2}]): normal values redrawn until
-- they fall in [a, b] (the exact truncated distribution); when the interval is so far
-- in a tail that redrawing stalls, the rest come from the inverse CDF.
function init.trunc_normal_(t, opts, std, a, b)
  check_tensor(t, "trunc_normal_")
  local mean
  if type(opts) == "table" then
    mean, std, a, b = opts.mean, opts.std, opts.a, opts.b
  else
    mean = opts
  end
  mean, std, a, b = mean or 0.0, std or 1.0, a or -2.0, b or 2.0
  return nograd(function()
    if t:numel() == 0 then return t end
    local x = graft.randn(t:shape(), { dtype = "float64" }) * std + mean
    for _ = 1, 50 do
      local bad = x:lt(a):logical_or(x:gt(b))
      if not bad:any():item() then return t:copy_(x) end
      x = graft.where(bad, graft.randn(t:shape(), { dtype = "float64" }) * std + mean, x)
    end
    -- tail fallback: inverse-CDF sampling for what is still out of range
    local l, u = norm_cdf((a - mean) / std), norm_cdf((b - mean) / std)
    local flat = x:reshape({ -1 }):tolist()
    for i, v in ipairs(flat) do
      if v < a or v > b then
        local p = 2 * (l + math.random() * (u - l)) - 1
        local y = erfinv(p) * std * math.sqrt(2) + mean
        flat[i] = math.min(math.max(y, a), b)
      end
    end
    return t:copy_(graft.tensor(flat, { dtype = "float64" }):reshape(t:shape()))
  end)
end

-- orthogonal_(t [, gain]): a (semi-)orthogonal matrix from the QR decomposition of a
-- normal matrix, with R's diagonal made positive (so Q is unique), as PyTorch.
-- Gram-Schmidt, reorthogonalised once, in float64 tensor ops.
function init.orthogonal_(t, gain)
  check_tensor(t, "orthogonal_")
  if type(gain) == "table" then gain = gain.gain end
  gain = gain or 1
  if t:dim() < 2 then error("Only tensors with 2 or more dimensions are supported", 2) end
  if t:numel() == 0 then return t end
  return nograd(function()
    local rows = t:size(1)
    local cols = t:numel() // rows
    local a = graft.randn(rows, cols, { dtype = "float64" })
    local transposed = rows < cols
    if transposed then a = a:t():contiguous() end
    local m, n = a:size(1), a:size(2) -- m >= n: orthonormalise the n columns
    local q = graft.zeros(m, n, { dtype = "float64" })
    for j = 1, n do
      local v = a:select(2, j):clone()
      if j > 1 then
        local qj = q:narrow(2, 1, j - 1)
        for _ = 1, 2 do v = v - qj:mv(qj:t():mv(v)) end
      end
      q:select(2, j):copy_(v / v:norm())
    end
    if transposed then q = q:t() end
    return t:copy_(q:reshape(t:shape()) * gain)
  end)
end

init._erfinv = erfinv
return init
