-- graft.adapt: adapters for net:load_pretrained's on_mismatch policy. Each constructor
-- returns a function(name, model_tensor, ckpt_tensor) -> tensor that turns a checkpoint
-- tensor of another shape into one of the model tensor's shape (it never changes
-- either argument); load_pretrained then copies the result into the model.
--
--   net:load_pretrained("resnet18.pth", {on_mismatch = {
--     ["conv1.weight"] = graft.adapt.input_channels(1),          -- grey-scale input
--     {"^fc%.", graft.adapt.head(10, {keep = {0, 1, 2}})},        -- 10 classes, 3 kept
--     default = "skip"}})
local graft = require("graft")

local A = {}

local FLOAT = { float32 = true, float64 = true }

local function shape_str(s)
  if graft.is_tensor(s) then s = s:shape() end
  return "[" .. table.concat(s, ", ") .. "]"
end

local function fail(op, name, fmt, ...)
  error(("%s (for %q): " .. fmt):format(op, tostring(name), ...), 0)
end

local function check_tensors(op, name, model_t, ckpt_t)
  if not graft.is_tensor(model_t) then fail(op, name, "the model's value is a %s, not a tensor", type(model_t)) end
  if not graft.is_tensor(ckpt_t) then fail(op, name, "the checkpoint's value is a %s, not a tensor", type(ckpt_t)) end
end

-- x in a floating dtype to compute in (float32 unless it is float64).
local function compute_dtype(x)
  return FLOAT[x:dtype()] and x or x:to("float32")
end

local function check_count(op, n, what)
  if n ~= nil and (math.type(n) ~= "integer" or n < 1) then
    error(("%s: %s must be a positive integer, got %s"):format(op, what, tostring(n)), 3)
  end
end

---------------------------------------------------------------------------------------
-- input_channels([n]): a convolution weight [out, c, k...] for c input channels (3 for
-- RGB) made into one for n channels: summed over the channels for n = 1 (grey-scale
-- images), otherwise the channels repeated cyclically to n and scaled by c / n so the
-- response to an input of equal channels is unchanged (timm's adapt_input_conv). n
-- defaults to the model tensor's channel count.
function A.input_channels(n)
  check_count("input_channels", n, "the channel count")
  return function(name, model_t, ckpt_t)
    local op = "input_channels"
    check_tensors(op, name, model_t, ckpt_t)
    if ckpt_t:dim() < 3 or ckpt_t:dim() ~= model_t:dim() then
      fail(op, name, "expected convolution weights [out, in, kernel...], got model %s and checkpoint %s",
        shape_str(model_t), shape_str(ckpt_t))
    end
    local ms, cs = model_t:shape(), ckpt_t:shape()
    for d = 1, #ms do
      if d ~= 2 and ms[d] ~= cs[d] then
        fail(op, name, "model %s and checkpoint %s differ in more than the input channels (dim 2)",
          shape_str(ms), shape_str(cs))
      end
    end
    local want = n or ms[2]
    if ms[2] ~= want then
      fail(op, name, "asked for %d input channels, but the model's weight %s has %d", want, shape_str(ms), ms[2])
    end
    local c = cs[2]
    if want == c then return ckpt_t end
    local w = compute_dtype(ckpt_t)
    if want == 1 then return w:sum(2, { keepdim = true }) end
    local reps = {}
    for d = 1, #cs do reps[d] = 1 end
    reps[2] = (want + c - 1) // c
    return w:repeats(table.unpack(reps)):narrow(2, 1, want) * (c / want)
  end
end

---------------------------------------------------------------------------------------
-- head([n] [, {keep = indices}]): a classifier's weight [C, ...] or bias [C] for C
-- classes made into one for n classes. keep lists, in the new class order, the 0-based
-- class index in the checkpoint of each new class (-1: a class the checkpoint does not
-- have); the rows of kept classes come from the checkpoint, every other row is the
-- model tensor's row as initialised. keep may be shorter than n (the rest are new) and
-- may be an integer tensor. n defaults to the model tensor's row count.
local function keep_list(keep)
  if keep == nil then return {} end
  if graft.is_tensor(keep) then
    if keep:dim() ~= 1 or keep:dtype():find("float") or keep:dtype() == "bool" then
      error("head: keep must be a 1-D integer tensor or a list of 0-based class indices", 3)
    end
    keep = keep:tolist()
  end
  if type(keep) ~= "table" then
    error("head: keep must be a list of 0-based class indices of the checkpoint, got " .. type(keep), 3)
  end
  local out = {}
  for i, k in ipairs(keep) do
    if math.type(k) ~= "integer" or k < -1 then
      error(("head: keep[%d] = %s is not a 0-based class index (or -1 for a new class)"):format(i, tostring(k)), 3)
    end
    out[i] = k
  end
  return out
end

function A.head(n, opts)
  if type(n) == "table" and opts == nil and not graft.is_tensor(n) then n, opts = nil, n end
  check_count("head", n, "the class count")
  if opts ~= nil and type(opts) ~= "table" then error("head: options must be a table, got " .. type(opts), 2) end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "keep" then error(("head: unknown option %q (options: keep)"):format(tostring(k)), 2) end
  end
  local keep = keep_list(opts.keep)
  if n and #keep > n then error(("head: keep lists %d classes for a head of %d"):format(#keep, n), 2) end
  return function(name, model_t, ckpt_t)
    local op = "head"
    check_tensors(op, name, model_t, ckpt_t)
    local ms, cs = model_t:shape(), ckpt_t:shape()
    if #ms == 0 or #ms ~= #cs then
      fail(op, name, "expected a classifier weight or bias, got model %s and checkpoint %s", shape_str(ms), shape_str(cs))
    end
    for d = 2, #ms do
      if ms[d] ~= cs[d] then
        fail(op, name, "model %s and checkpoint %s differ in more than the class count (dim 1)", shape_str(ms), shape_str(cs))
      end
    end
    local rows = n or ms[1]
    if ms[1] ~= rows then fail(op, name, "asked for %d classes, but the model's tensor %s has %d", rows, shape_str(ms), ms[1]) end
    if #keep > rows then fail(op, name, "keep lists %d classes for a head of %d", #keep, rows) end
    local C = cs[1]
    local idx = {}
    for i = 1, rows do
      local k = keep[i]
      if k ~= nil and k >= C then
        fail(op, name, "keep[%d] = %d is out of range for the checkpoint's %d classes", i, k, C)
      end
      idx[i] = (k ~= nil and k >= 0) and k or C + i - 1
    end
    local both = graft.cat({ ckpt_t:to(model_t:dtype()), model_t }, 1)
    return both:index_select(1, graft.tensor(idx, { dtype = "int64" }))
  end
end

---------------------------------------------------------------------------------------
-- resize([shape] [, {prefix_tokens =, from_grid = {h, w}, grid = {h, w}, align_corners =
-- false}]): a grid-shaped tensor interpolated (bilinear) to the model's grid.
-- - a token table [N, D] or [B, N, D] (a position embedding): the first prefix_tokens
--   rows (class/distillation tokens) are kept, the other N - prefix rows form a grid
--   (square unless from_grid / grid say otherwise) that is resized to the model's.
--   prefix_tokens defaults to 0 when both token counts are squares, else 1 when both
--   less one are.
-- - a 4-D tensor [B, C, H, W]: its last two dims are resized.
-- shape, when given, must be the model tensor's shape (a check); the target is always
-- the model tensor's shape.
local function isqrt(n)
  if n < 1 then return nil end
  local r = math.floor(math.sqrt(n) + 0.5)
  if r * r == n then return r end
  return nil
end

local function grid_opt(g, what)
  if g == nil then return nil end
  if type(g) ~= "table" or #g ~= 2 or math.type(g[1]) ~= "integer" or math.type(g[2]) ~= "integer"
      or g[1] < 1 or g[2] < 1 then
    error(("resize: %s must be {h, w} (positive integers)"):format(what), 3)
  end
  return g
end

-- Interpolation weights [n_out, n_in] of 1-D linear resampling (PyTorch's rule for
-- size-given interpolate): a fallback for builds without graft.F.interpolate.
local function lerp_matrix(n_in, n_out, align, dtype)
  local rows = {}
  for i = 0, n_out - 1 do
    local row = {}
    for j = 1, n_in do row[j] = 0 end
    local src
    if align then
      src = n_out > 1 and i * (n_in - 1) / (n_out - 1) or 0
    else
      src = math.max((i + 0.5) * n_in / n_out - 0.5, 0)
    end
    local i0 = math.min(math.floor(src), n_in - 1)
    local i1 = math.min(i0 + 1, n_in - 1)
    local l = src - i0
    row[i0 + 1] = row[i0 + 1] + (1 - l)
    row[i1 + 1] = row[i1 + 1] + l
    rows[i + 1] = row
  end
  return graft.tensor(rows, { dtype = dtype })
end

-- x [B, C, h, w] resized to [B, C, H, W], bilinear.
local function bilinear(x, H, W, align)
  local F = graft.F
  if F and F.interpolate then
    local o = { size = { H, W }, mode = "bilinear" }
    if align then o.align_corners = true end
    return F.interpolate(x, o)
  end
  local h, w = x:size(3), x:size(4)
  local ah, aw = lerp_matrix(h, H, align, x:dtype()), lerp_matrix(w, W, align, x:dtype())
  return ah:matmul(x):matmul(aw:t())
end
A._bilinear = bilinear
A._lerp_matrix = lerp_matrix

function A.resize(shape, opts)
  if type(shape) == "table" and opts == nil and not graft.is_tensor(shape) and #shape == 0 then
    shape, opts = nil, shape
  end
  if shape ~= nil and type(shape) ~= "table" then error("resize: shape must be a list of sizes, got " .. type(shape), 2) end
  if opts ~= nil and type(opts) ~= "table" then error("resize: options must be a table, got " .. type(opts), 2) end
  opts = opts or {}
  local allowed = { prefix_tokens = true, from_grid = true, grid = true, align_corners = true }
  for k in pairs(opts) do
    if not allowed[k] then
      error(("resize: unknown option %q (options: align_corners, from_grid, grid, prefix_tokens)"):format(tostring(k)), 2)
    end
  end
  local prefix_opt = opts.prefix_tokens
  if prefix_opt ~= nil and (math.type(prefix_opt) ~= "integer" or prefix_opt < 0) then
    error("resize: prefix_tokens must be a non-negative integer", 2)
  end
  local from_grid, to_grid = grid_opt(opts.from_grid, "from_grid"), grid_opt(opts.grid, "grid")
  local align = opts.align_corners and true or false
  return function(name, model_t, ckpt_t)
    local op = "resize"
    check_tensors(op, name, model_t, ckpt_t)
    local ms, cs = model_t:shape(), ckpt_t:shape()
    if shape and shape_str(shape) ~= shape_str(ms) then
      fail(op, name, "asked for %s, but the model's tensor is %s", shape_str(shape), shape_str(ms))
    end
    if #ms ~= #cs then fail(op, name, "model %s and checkpoint %s have different ranks", shape_str(ms), shape_str(cs)) end
    local x = compute_dtype(ckpt_t)
    if #ms == 4 then
      if ms[1] ~= cs[1] or ms[2] ~= cs[2] then
        fail(op, name, "model %s and checkpoint %s differ in more than the grid (dims 3, 4)", shape_str(ms), shape_str(cs))
      end
      return bilinear(x, ms[3], ms[4], align)
    end
    if #ms ~= 2 and #ms ~= 3 then
      fail(op, name, "expected a token table [N, D] or [B, N, D], or a 4-D grid [B, C, H, W], got %s", shape_str(cs))
    end
    local squeeze = #ms == 2
    if squeeze then x = x:unsqueeze(1) end
    local B, N, D = x:size(1), x:size(2), x:size(3)
    local Bm, Nm, Dm = squeeze and 1 or ms[1], ms[#ms - 1], ms[#ms]
    if B ~= Bm or D ~= Dm then
      fail(op, name, "model %s and checkpoint %s differ in more than the token count", shape_str(ms), shape_str(cs))
    end
    local p = prefix_opt
    if p == nil then
      if from_grid or to_grid then
        p = from_grid and N - from_grid[1] * from_grid[2] or Nm - to_grid[1] * to_grid[2]
      elseif isqrt(N) and isqrt(Nm) then
        p = 0
      elseif isqrt(N - 1) and isqrt(Nm - 1) then
        p = 1
      else
        fail(op, name, "cannot tell the grid of %s -> %s (not square, with 0 or 1 prefix tokens): " ..
          "pass {prefix_tokens =, from_grid = {h, w}, grid = {h, w}}", shape_str(cs), shape_str(ms))
      end
    end
    local function grid(n, given, what)
      if given then
        if given[1] * given[2] ~= n - p then
          fail(op, name, "%s {%d, %d} does not hold the %d grid tokens of %s", what, given[1], given[2], n - p,
            what == "from_grid" and shape_str(cs) or shape_str(ms))
        end
        return given[1], given[2]
      end
      local r = isqrt(n - p)
      if not r then
        fail(op, name, "%d tokens less %d prefix tokens is not a square grid: pass {%s = {h, w}}", n, p, what)
      end
      return r, r
    end
    if p < 0 or p > N or p > Nm then fail(op, name, "%d prefix tokens do not fit %s and %s", p, shape_str(cs), shape_str(ms)) end
    local h, w = grid(N, from_grid, "from_grid")
    local H, W = grid(Nm, to_grid, "grid")
    local body = x:narrow(2, p + 1, N - p):reshape(B, h, w, D):permute(1, 4, 2, 3)
    body = bilinear(body:contiguous(), H, W, align):permute(1, 3, 4, 2):reshape(B, H * W, D)
    local out = p > 0 and graft.cat({ x:narrow(2, 1, p), body }, 2) or body
    if squeeze then out = out:squeeze(1) end
    return out:contiguous()
  end
end

return A
