-- graft.data.transforms: image transforms in the spirit of torchvision.transforms, on
-- float tensors [C, H, W] (one item) and, through apply_batch, [B, C, H, W] (a whole
-- batch at once, which the loaders prefer: one op per batch instead of one per image).
--
--   local T = data.transforms
--   local train_tf = T.Compose({T.RandomCrop(28, {padding = 2}), T.RandomHorizontalFlip(),
--                               T.Normalize(0.2860, 0.3530)})
--
-- Random transforms draw from graft's generator (graft.manual_seed reproduces them), or
-- from their own with {seed = n}.
local graft = require("graft")
local D = require("graft.data.dataset")

local T = {}

local function transform_class(name)
  local cls = { __name = "graft.data.transforms." .. name, _name = name }
  cls.__index = cls
  cls.__call = function(self, x) return self:apply(x) end
  cls.__tostring = function(self) return self:_describe() end
  cls._describe = function() return name .. "()" end
  return cls
end

local function generator(opts)
  if opts and opts.seed ~= nil then return D.Generator(opts.seed) end
  return nil
end

-- {h, w} from a number or a list of one or two numbers.
local function size2(size, op)
  if type(size) == "number" then return math.tointeger(size), math.tointeger(size) end
  if type(size) == "table" and (#size == 1 or #size == 2) then
    return math.tointeger(size[1]), math.tointeger(size[#size])
  end
  error(("%s: size must be a number or {h, w}, got %s"):format(op, tostring(size)), 3)
end

local function check_image(x, op, batch)
  if not graft.is_tensor(x) then error(op .. ": expected a tensor", 3) end
  local want = batch and 4 or 3
  if x:dim() ~= want and not (not batch and x:dim() == 2) then
    error(("%s: expected %s, got a tensor of shape [%s]"):format(op, batch and "[B, C, H, W]" or "[C, H, W]",
      table.concat(x:shape(), ", ")), 3)
  end
end

-- ---- Compose ----

local Compose = transform_class("Compose")
-- Compose({t1, t2, ...}): applies each in order. It offers apply_batch when every
-- member does.
function T.Compose(list)
  if type(list) ~= "table" then error("Compose: expected a list of transforms", 2) end
  local self = setmetatable({ transforms = list }, Compose)
  local all = true
  for i, t in ipairs(list) do
    if type(t) ~= "function" and not (type(t) == "table" and getmetatable(t) and getmetatable(t).__call) then
      error(("Compose: entry %d is not a transform (a function or a callable object)"):format(i), 2)
    end
    all = all and type(t) == "table" and t.apply_batch ~= nil
  end
  if all then self.apply_batch = Compose._apply_batch end
  return self
end
function Compose:apply(x)
  for _, t in ipairs(self.transforms) do x = t(x) end
  return x
end
function Compose:_apply_batch(X)
  for _, t in ipairs(self.transforms) do X = t:apply_batch(X) end
  return X
end
function Compose:_describe()
  local parts = {}
  for i, t in ipairs(self.transforms) do parts[i] = "  " .. tostring(t) end
  return "Compose(\n" .. table.concat(parts, "\n") .. "\n)"
end

-- ---- Lambda ----

local Lambda = transform_class("Lambda")
-- Lambda(fn [, batch_fn]): fn per item; batch_fn (if given) per batch.
function T.Lambda(fn, batch_fn)
  local self = setmetatable({ fn = fn }, Lambda)
  if batch_fn then self.apply_batch = function(_, X) return batch_fn(X) end end
  return self
end
function Lambda:apply(x) return self.fn(x) end

-- ---- ToFloat ----

local ToFloat = transform_class("ToFloat")
-- ToFloat(): uint8 images to float32 in [0, 1] (x / 255); floating tensors pass through.
function T.ToFloat() return setmetatable({}, ToFloat) end
function ToFloat:apply(x)
  if x:dtype() == "uint8" then return x:float():div_(255) end
  if x:dtype() == "float32" or x:dtype() == "float64" then return x end
  return x:float()
end
ToFloat.apply_batch = ToFloat.apply

-- ---- Normalize ----

local Normalize = transform_class("Normalize")
-- Normalize(mean, std): (x - mean[c]) / std[c] per channel; mean and std numbers (every
-- channel) or lists (one per channel).
function T.Normalize(mean, std)
  local function vec(v, what)
    if type(v) == "number" then return v end
    if type(v) == "table" and #v > 0 then
      for _, e in ipairs(v) do
        if type(e) ~= "number" then error("Normalize: " .. what .. " must hold numbers", 3) end
      end
      return graft.tensor(v, { dtype = "float32" }):view(#v, 1, 1)
    end
    error("Normalize: " .. what .. " must be a number or a list of numbers", 3)
  end
  if type(std) == "number" and std == 0 then error("Normalize: std is 0", 2) end
  if type(std) == "table" then
    for _, s in ipairs(std) do if s == 0 then error("Normalize: std holds a 0", 2) end end
  end
  return setmetatable({ mean = vec(mean, "mean"), std = vec(std, "std"), mean_list = mean, std_list = std }, Normalize)
end
function Normalize:apply(x)
  if not graft.is_tensor(x) or not x:is_floating_point() then
    error("Normalize: expected a floating tensor (apply ToFloat first)", 2)
  end
  local m, s = self.mean, self.std
  if graft.is_tensor(m) and m:dtype() ~= x:dtype() then m = m:to(x:dtype()) end
  if graft.is_tensor(s) and s:dtype() ~= x:dtype() then s = s:to(x:dtype()) end
  return (x - m) / s
end
Normalize.apply_batch = Normalize.apply
function Normalize:_describe()
  local function show(v) return type(v) == "table" and "{" .. table.concat(v, ", ") .. "}" or tostring(v) end
  return ("Normalize(mean=%s, std=%s)"):format(show(self.mean_list), show(self.std_list))
end

-- ---- RandomHorizontalFlip ----

local RandomHorizontalFlip = transform_class("RandomHorizontalFlip")
-- RandomHorizontalFlip([p = 0.5] [, {seed = n}]): mirrors the last dim with probability p.
function T.RandomHorizontalFlip(p, opts)
  if type(p) == "table" then p, opts = nil, p end
  p = p or 0.5
  if type(p) ~= "number" or p < 0 or p > 1 then error("RandomHorizontalFlip: p must be in [0, 1]", 2) end
  return setmetatable({ p = p, generator = generator(opts) }, RandomHorizontalFlip)
end
function RandomHorizontalFlip:apply(x)
  local u = D.with_generator(self.generator, function() return graft.rand(1):item() end)
  if u < self.p then return x:flip(x:dim()) end
  return x
end
-- One draw per image: a [B] mask chooses between X and X flipped.
function RandomHorizontalFlip:apply_batch(X)
  check_image(X, "RandomHorizontalFlip", true)
  local B = X:size(1)
  local u = D.with_generator(self.generator, function() return graft.rand(B) end)
  local mask = u:lt(self.p):view(B, 1, 1, 1)
  return graft.where(mask, X:flip(4), X)
end
function RandomHorizontalFlip:_describe() return ("RandomHorizontalFlip(p=%g)"):format(self.p) end

-- ---- RandomCrop ----

local RandomCrop = transform_class("RandomCrop")
-- RandomCrop(size [, {padding = 0, fill = 0, seed = n}]): pads every side by `padding`
-- (a number, or {left/right, top/bottom}, or {left, top, right, bottom}, as torchvision)
-- with `fill`, then cuts a size (h, w) window at a uniformly random place.
function T.RandomCrop(size, opts)
  opts = opts or {}
  local h, w = size2(size, "RandomCrop")
  if not h or not w or h < 1 or w < 1 then error("RandomCrop: size must be positive integers", 2) end
  local p = opts.padding or 0
  local pad -- {left, right, top, bottom}, F.pad's order for the last two dims
  if type(p) == "number" then pad = { p, p, p, p }
  elseif type(p) == "table" and #p == 2 then pad = { p[1], p[1], p[2], p[2] }
  elseif type(p) == "table" and #p == 4 then pad = { p[1], p[3], p[2], p[4] }
  else error("RandomCrop: padding must be a number or a list of 2 or 4 numbers", 2) end
  for _, v in ipairs(pad) do
    if math.type(v) ~= "integer" or v < 0 then error("RandomCrop: padding must be non-negative integers", 2) end
  end
  return setmetatable({ h = h, w = w, pad = pad, fill = opts.fill or 0, generator = generator(opts),
    padding = p }, RandomCrop)
end

local function padded(self, x)
  local pd = self.pad
  if pd[1] + pd[2] + pd[3] + pd[4] == 0 then return x end
  return graft.F.pad(x, pd, { mode = "constant", value = self.fill })
end

local function crop_limits(self, H, W)
  local dy, dx = H - self.h, W - self.w
  if dy < 0 or dx < 0 then
    error(("RandomCrop: crop size %dx%d is larger than the (padded) image %dx%d"):format(self.h, self.w, H, W), 4)
  end
  return dy, dx
end

function RandomCrop:apply(x)
  check_image(x, "RandomCrop", false)
  local xp = padded(self, x)
  local H, W = xp:size(-2), xp:size(-1)
  local dy, dx = crop_limits(self, H, W)
  local oy, ox = D.with_generator(self.generator, function()
    return graft.randint(0, dy + 1, { 1 }):item(), graft.randint(0, dx + 1, { 1 }):item()
  end)
  return xp:narrow(-2, oy + 1, self.h):narrow(-1, ox + 1, self.w):contiguous()
end

-- One gather for the whole batch: each image's window is a set of flat positions
-- (oy + i) * W + (ox + j) in its padded [H * W] plane.
function RandomCrop:apply_batch(X)
  check_image(X, "RandomCrop", true)
  local xp = padded(self, X):contiguous()
  local B, C, H, W = xp:size(1), xp:size(2), xp:size(3), xp:size(4)
  local dy, dx = crop_limits(self, H, W)
  local oy, ox = D.with_generator(self.generator, function()
    return graft.randint(0, dy + 1, { B, 1, 1 }), graft.randint(0, dx + 1, { B, 1, 1 })
  end)
  local i = graft.arange(self.h):view(1, self.h, 1)
  local j = graft.arange(self.w):view(1, 1, self.w)
  local pos = ((oy + i) * W + (ox + j)):view(B, 1, self.h * self.w):expand(B, C, self.h * self.w)
  return xp:view(B, C, H * W):gather(3, pos):view(B, C, self.h, self.w)
end
function RandomCrop:_describe()
  return ("RandomCrop(size=(%d, %d), padding=%s)"):format(self.h, self.w,
    type(self.padding) == "table" and "{" .. table.concat(self.padding, ", ") .. "}" or tostring(self.padding))
end

-- ---- CenterCrop ----

local CenterCrop = transform_class("CenterCrop")
-- CenterCrop(size): the middle (h, w) window (torchvision's rounding of the offsets).
function T.CenterCrop(size)
  local h, w = size2(size, "CenterCrop")
  if not h or not w or h < 1 or w < 1 then error("CenterCrop: size must be positive integers", 2) end
  return setmetatable({ h = h, w = w }, CenterCrop)
end
function CenterCrop:apply(x)
  local H, W = x:size(-2), x:size(-1)
  if self.h > H or self.w > W then
    error(("CenterCrop: crop size %dx%d is larger than the image %dx%d"):format(self.h, self.w, H, W), 2)
  end
  local top = math.floor((H - self.h) / 2 + 0.5)
  local left = math.floor((W - self.w) / 2 + 0.5)
  return x:narrow(-2, top + 1, self.h):narrow(-1, left + 1, self.w):contiguous()
end
CenterCrop.apply_batch = CenterCrop.apply
function CenterCrop:_describe() return ("CenterCrop(size=(%d, %d))"):format(self.h, self.w) end

-- ---- Resize ----

local Resize = transform_class("Resize")
-- Resize({h, w}) or Resize(n) (the shorter side becomes n, the aspect ratio kept, as
-- torchvision): bilinear through graft.F.interpolate (align_corners = false, no
-- antialiasing, as torchvision on tensors). uint8 images stay uint8 (rounded).
function T.Resize(size)
  if type(size) == "number" then
    local n = math.tointeger(size)
    if not n or n < 1 then error("Resize: size must be a positive integer", 2) end
    return setmetatable({ short = n }, Resize)
  end
  local h, w = size2(size, "Resize")
  if not h or not w or h < 1 or w < 1 then error("Resize: size must be positive integers", 2) end
  return setmetatable({ h = h, w = w }, Resize)
end

local function resize_target(self, H, W)
  if self.h then return self.h, self.w end
  local n = self.short
  if H <= W then return n, math.floor(n * W / H) end
  return math.floor(n * H / W), n
end

local function resize4(self, X)
  local h, w = resize_target(self, X:size(3), X:size(4))
  if h == X:size(3) and w == X:size(4) then return X end
  local dt = X:dtype()
  local Xf = X:is_floating_point() and X or X:float()
  local Y = graft.F.interpolate(Xf, { size = { h, w }, mode = "bilinear", align_corners = false })
  if dt == "uint8" then return Y:round():clamp(0, 255):byte() end
  if not X:is_floating_point() then return Y:to(dt) end
  return Y
end

function Resize:apply(x)
  check_image(x, "Resize", false)
  if x:dim() == 2 then return resize4(self, x:view(1, 1, x:size(1), x:size(2)))[1][1] end
  return resize4(self, x:unsqueeze(1))[1]
end
function Resize:apply_batch(X)
  check_image(X, "Resize", true)
  return resize4(self, X)
end
function Resize:_describe()
  if self.h then return ("Resize(size=(%d, %d))"):format(self.h, self.w) end
  return ("Resize(size=%d)"):format(self.short)
end

return T
