-- graft.data's dataset protocol and the generic datasets: Dataset (the base class),
-- TensorDataset, Subset, and Generator (a private random stream).
--
-- A dataset has a length and items: `#ds`, `ds:get(i)` -> x, y, ... (1-based position,
-- negative from the end), `ds[i]` -> {x, y, ...}. `ds:get_batch(idx)` (idx: int64 tensor
-- of 0-based positions, as PyTorch) -> X, Y, ... stacked along a new first dim: datasets
-- backed by one big tensor override `_batch` and answer with one index_select per tensor,
-- never per-item Lua work; the others are collated item by item (M.collate). Labels
-- stored in tensors are 0-based class indices, as PyTorch.
local graft = require("graft")

local M = {}

-- ---- classes ----

-- A class whose instances index by position (`ds[i]` -> {x, y, ...}) and by name (methods).
local function class(name, parent)
  local cls = {}
  cls.__name = "graft.data." .. name
  cls._class_name = name
  -- ds[i] checks the position here so a bad one is reported at the caller's line, not
  -- inside this metamethod.
  cls.__index = function(self, k)
    if type(k) == "number" then
      return { self:_item(M.position(self, k, 3)) }
    end
    return cls[k]
  end
  cls.__len = function(self) return self:len() end
  cls.__tostring = function(self) return self:_describe() end
  if parent then setmetatable(cls, { __index = parent }) end
  return cls
end
M.class = class

-- ---- Generator: a private random stream ----

-- graft has one global Philox generator; a Generator keeps its own (seed, offset) and swaps
-- it in around each use, so a seeded loader or transform draws the same numbers whatever
-- else the script draws (model initialisation, dropout), as torch.Generator does.
local Generator = {}
Generator.__index = Generator
Generator.__name = "graft.data.Generator"

function M.Generator(seed)
  if math.type(seed) ~= "integer" then error("Generator: seed must be an integer, got " .. tostring(seed), 2) end
  local saved = graft.get_rng_state()
  graft.manual_seed(seed)
  local state = graft.get_rng_state()
  graft.set_rng_state(saved)
  return setmetatable({ seed = seed, state = state }, Generator)
end

-- Runs fn(...) with this generator as graft's global one; returns fn's results.
function Generator:run(fn, ...)
  local saved = graft.get_rng_state()
  graft.set_rng_state(self.state)
  local r = table.pack(pcall(fn, ...))
  self.state = graft.get_rng_state()
  graft.set_rng_state(saved)
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

function Generator:get_state() return self.state:clone() end
function Generator:set_state(s) self.state = s:clone() end

-- Runs fn under gen when there is one, else on the global generator.
function M.with_generator(gen, fn, ...)
  if gen then return gen:run(fn, ...) end
  return fn(...)
end

-- ---- transforms and batching helpers ----

-- A transform is a function or a callable object; it may offer apply_batch(self, X) for a
-- whole batch [B, ...] at once.
function M.apply(transform, x)
  if transform == nil then return x end
  return transform(x)
end

function M.can_batch(transform)
  return transform == nil or (type(transform) == "table" and transform.apply_batch ~= nil)
end

-- Applies a transform to a batch: its apply_batch, or item by item, restacked.
function M.apply_batch(transform, X)
  if transform == nil then return X end
  if type(transform) == "table" and transform.apply_batch then return transform:apply_batch(X) end
  local items = X:unbind(1)
  for i = 1, #items do items[i] = transform(items[i]) end
  return graft.stack(items, 1)
end

-- Stacks per-item values (default_collate's rules): tensors with graft.stack, Lua integers
-- into int64, other numbers into float32 (graft's default dtype, where PyTorch makes
-- float64), booleans into bool, strings into a Lua list; Lua tables recurse: a list
-- collates position by position into a list, other tables key by key. nil stays nil.
function M.collate(values, n)
  local first = values[1]
  if first == nil then return nil end
  for i = 2, n do
    local v = values[i]
    if type(v) ~= type(first) or graft.is_tensor(v) ~= graft.is_tensor(first) then
      error(("collate: item 1 holds a %s but item %d a %s"):format(graft.is_tensor(first) and "tensor" or type(first),
        i, graft.is_tensor(v) and "tensor" or type(v)), 3)
    end
  end
  if graft.is_tensor(first) then
    local s1 = table.concat(first:shape(), ", ")
    for i = 2, n do
      local si = table.concat(values[i]:shape(), ", ")
      if si ~= s1 then
        error(("collate: the items of a batch differ in shape ([%s] and [%s])"):format(s1, si), 3)
      end
    end
    return graft.stack(values, 1)
  end
  if type(first) == "number" then
    local all_int = true
    for i = 1, n do all_int = all_int and math.type(values[i]) == "integer" end
    return graft.tensor(values, { dtype = all_int and "int64" or "float32" })
  end
  if type(first) == "boolean" then return graft.tensor(values, { dtype = "bool" }) end
  if type(first) == "string" then return { table.unpack(values, 1, n) } end
  if type(first) == "table" and getmetatable(first) == nil then
    local out = {}
    for k in pairs(first) do
      local column = {}
      for i = 1, n do column[i] = values[i][k] end
      out[k] = M.collate(column, n)
    end
    return out
  end
  error(("collate: cannot batch items of type %s"):format(type(first)), 3)
end

-- An int64 1-D tensor of 0-based positions from a Lua list of 1-based positions (negatives
-- from the end) or an int64 tensor of 0-based ones (checked against n).
function M.indices(spec, n, op)
  local idx
  if graft.is_tensor(spec) then
    if spec:dtype() ~= "int64" and spec:dtype() ~= "int32" then
      error(("%s: index tensor must be int64 (0-based positions), got %s"):format(op, spec:dtype()), 3)
    end
    idx = spec:reshape({ -1 }):long()
  elseif type(spec) == "table" then
    local list = {}
    for i, v in ipairs(spec) do
      if math.type(v) ~= "integer" then error(("%s: position %d is %s, not an integer"):format(op, i, tostring(v)), 3) end
      if v == 0 or v > n or v < -n then
        error(("%s: position %d is out of range for a dataset of %d items (positions are 1-based)"):format(op, v, n), 3)
      end
      list[i] = v > 0 and v - 1 or n + v
    end
    idx = graft.tensor(list, { dtype = "int64" })
    if #list == 0 then idx = graft.empty(0, { dtype = "int64" }) end
  else
    error(("%s: expected a list of positions or an int64 tensor, got %s"):format(op, type(spec)), 3)
  end
  if idx:numel() > 0 then
    local lo, hi = idx:min():item(), idx:max():item()
    if lo < 0 or hi >= n then
      error(("%s: index %d is out of range for a dataset of %d items (tensor indices are 0-based)")
        :format(op, lo < 0 and lo or hi, n), 3)
    end
  end
  return idx
end

-- ---- Dataset: the base class ----

local Dataset = class("Dataset")
M.Dataset = Dataset

-- Subclasses implement len() and _item(i) (i 1-based and valid); they may implement
-- _batch(idx) (idx int64 0-based, valid) and get_targets().
function Dataset:len() error(self._class_name .. ": len is not implemented", 2) end
function Dataset:_item() error(self._class_name .. ": _item is not implemented", 2) end

-- The checked 1-based position of i (negative from the end) in ds; a bad one raises at
-- `level` (counted from position's caller, as error's level).
function M.position(ds, i, level)
  local n = ds:len()
  if math.type(i) ~= "integer" then
    error(("%s: position must be an integer, got %s"):format(ds._class_name, tostring(i)), level)
  end
  if i == 0 or i > n or i < -n then
    error(("%s: position %d is out of range for a dataset of %d items (positions are 1-based)")
      :format(ds._class_name, i, n), level)
  end
  return i > 0 and i or n + 1 + i
end

function Dataset:get(i)
  return self:_item(M.position(self, i, 3))
end

-- X, Y, ... for the 0-based positions in idx (int64 1-D tensor): every value an item
-- returns, collated field by field.
function Dataset:get_batch(idx)
  if self._batch then return self:_batch(idx) end
  local list = idx:tolist()
  local fields, width = {}, 0
  for k, p in ipairs(list) do
    local item = table.pack(self:_item(p + 1))
    if item.n > width then
      for f = width + 1, item.n do fields[f] = {} end
      width = item.n
    end
    for f = 1, item.n do fields[f][k] = item[f] end
  end
  local out = {}
  for f = 1, width do out[f] = M.collate(fields[f], #list) end
  return table.unpack(out, 1, width)
end

-- int64 [N]: every item's label (0-based class index). Tensor-backed datasets hold them;
-- the default reads every item.
function Dataset:get_targets()
  if graft.is_tensor(rawget(self, "targets")) then return self.targets end
  local n = self:len()
  local ys = {}
  for i = 1, n do
    local _, y = self:_item(i)
    if y == nil then error(self._class_name .. ": the items have no labels", 2) end
    ys[i] = graft.is_tensor(y) and y:item() or y
  end
  return graft.tensor(ys, { dtype = "int64" })
end

-- ds:subset({indices = {...}}) (1-based list, or an int64 tensor of 0-based indices) or
-- ds:subset({labels = {...}, relabel = false}): the items whose label is listed, in order;
-- with relabel = true their labels become 0..K-1 in the order of the list.
function Dataset:subset(spec)
  if type(spec) ~= "table" or graft.is_tensor(spec) then
    error("subset: expected {indices = ...} or {labels = ...}", 2)
  end
  if spec[1] ~= nil then return M.Subset(self, spec) end
  if spec.indices ~= nil and spec.labels ~= nil then error("subset: give indices or labels, not both", 2) end
  if spec.indices ~= nil then return M.Subset(self, spec.indices) end
  if spec.labels == nil then error("subset: expected {indices = ...} or {labels = ...}", 2) end
  local idx, lut = M.select_labels(self:get_targets(), spec.labels, spec.relabel, "subset")
  return M.Subset(self, idx, { label_map = lut })
end

-- The 0-based positions of targets whose value is in labels, and (with relabel) a lookup
-- table int64 [max+1] mapping each listed label to its position in the list (others -1).
function M.select_labels(targets, labels, relabel, op)
  if type(labels) ~= "table" or #labels == 0 then error(op .. ": labels must be a non-empty list", 3) end
  local mask
  local maxl = 0
  for i, l in ipairs(labels) do
    if math.type(l) ~= "integer" or l < 0 then
      error(("%s: label %s is not a class index (0-based integers)"):format(op, tostring(l)), 3)
    end
    local m = targets:eq(l)
    mask = mask and mask:logical_or(m) or m
    if l > maxl then maxl = l end
    for j = 1, i - 1 do
      if labels[j] == l then error(("%s: label %d is listed twice"):format(op, l), 3) end
    end
  end
  local idx = mask:nonzero():reshape({ -1 })
  local lut
  if relabel then
    lut = graft.full({ maxl + 1 }, -1, { dtype = "int64" })
    for k, l in ipairs(labels) do lut[l + 1] = k - 1 end
  end
  return idx, lut
end

function Dataset:_describe()
  return ("%s(%d items)"):format(self._class_name, self:len())
end

-- ---- TensorDataset ----

local TensorDataset = class("TensorDataset", Dataset)
M.TensorDataset_class = TensorDataset

-- TensorDataset(x, y, ... [, {transform = fn}]): item i is (x[i], y[i], ...), views of the
-- tensors; the transform (if any) applies to the first.
function M.TensorDataset(...)
  local args = table.pack(...)
  local opts = {}
  if args.n > 0 and type(args[args.n]) == "table" and not graft.is_tensor(args[args.n]) then
    opts = args[args.n]
    args.n = args.n - 1
  end
  if args.n == 0 then error("TensorDataset: expected at least one tensor", 2) end
  local tensors = {}
  for i = 1, args.n do
    local t = args[i]
    if not graft.is_tensor(t) then error(("TensorDataset: argument %d is not a tensor"):format(i), 2) end
    if t:dim() == 0 then error(("TensorDataset: tensor %d is 0-dim (items run along the first dim)"):format(i), 2) end
    if t:size(1) ~= args[1]:size(1) then
      error(("TensorDataset: size mismatch between tensors: %d and %d along the first dim")
        :format(args[1]:size(1), t:size(1)), 2)
    end
    tensors[i] = t
  end
  return setmetatable({ tensors = tensors, transform = opts.transform, targets = tensors[2] }, TensorDataset)
end

function TensorDataset:len() return self.tensors[1]:size(1) end

function TensorDataset:_item(i)
  local out = {}
  for k, t in ipairs(self.tensors) do out[k] = t[i] end
  out[1] = M.apply(self.transform, out[1])
  return table.unpack(out, 1, #self.tensors)
end

function TensorDataset:_batch(idx)
  local out = {}
  for k, t in ipairs(self.tensors) do out[k] = t:index_select(1, idx) end
  out[1] = M.apply_batch(self.transform, out[1])
  return table.unpack(out, 1, #self.tensors)
end

function TensorDataset:get_targets()
  local y = self.tensors[2]
  if not y then error("TensorDataset: no label tensor (the second tensor holds the labels)", 2) end
  return y:dim() == 1 and y:long() or y
end

-- ---- Subset ----

local Subset = class("Subset", Dataset)

-- Subset(ds, indices [, {label_map = lut}]): indices a Lua list of 1-based positions or an
-- int64 tensor of 0-based ones (as torch.utils.data.Subset).
function M.Subset(ds, indices, opts)
  if type(ds) ~= "table" or not ds.get then error("Subset: expected a dataset", 2) end
  local idx = M.indices(indices, #ds, "Subset")
  return setmetatable({ dataset = ds, indices = idx, label_map = opts and opts.label_map }, Subset)
end

function Subset:len() return self.indices:size(1) end

local function map_label(lut, y)
  if lut == nil or y == nil then return y end
  if graft.is_tensor(y) then return lut:index_select(1, y:long():reshape({ -1 })):reshape(y:shape()) end
  return lut[y + 1]:item()
end

function Subset:_item(i)
  local x, y = self.dataset:get(self.indices[i]:item() + 1)
  return x, map_label(self.label_map, y)
end

function Subset:_batch(idx)
  local X, Y = self.dataset:get_batch(self.indices:index_select(1, idx))
  return X, map_label(self.label_map, Y)
end

function Subset:get_targets()
  local y = self.dataset:get_targets():index_select(1, self.indices)
  return map_label(self.label_map, y)
end

function Subset:_describe()
  return ("Subset(%d of %s)"):format(self:len(), tostring(self.dataset))
end

-- ---- random_split ----

-- random_split(ds, lengths [, {seed = n | generator = g}]) -> a list of Subsets that
-- partition ds at random (torch.utils.data.random_split). lengths are counts summing to
-- #ds, or fractions summing to 1: each split gets floor(#ds * fraction) items, then the
-- remainder one at a time round-robin from the first split (PyTorch's rule, which also
-- reads counts summing to exactly 1 as fractions). The order is graft.randperm(#ds) on
-- the seed's own generator, or on graft's global one.
function M.random_split(ds, lengths, opts)
  if type(ds) ~= "table" or not ds.get then error("random_split: expected a dataset", 2) end
  if type(lengths) ~= "table" or #lengths == 0 then error("random_split: lengths must be a non-empty list", 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("random_split: expected an options table", 2) end
  for k in pairs(opts) do
    if k ~= "seed" and k ~= "generator" then
      error(("random_split: unknown option '%s' (options: seed, generator)"):format(tostring(k)), 2)
    end
  end
  local gen = opts.generator
  if opts.seed ~= nil then
    if math.type(opts.seed) ~= "integer" then error("random_split: seed must be an integer", 2) end
    gen = M.Generator(opts.seed)
  end
  local n = #ds
  local sum = 0
  for i, l in ipairs(lengths) do
    if type(l) ~= "number" or l ~= l or l < 0 then
      error(("random_split: length %d is %s, not a non-negative number"):format(i, tostring(l)), 2)
    end
    sum = sum + l
  end
  local counts = {}
  if math.abs(sum - 1) <= 1e-9 and sum <= 1 then -- math.isclose(sum, 1) and sum <= 1
    local given = 0
    for i, frac in ipairs(lengths) do
      if frac > 1 then error(("random_split: fraction at index %d is not between 0 and 1"):format(i), 2) end
      counts[i] = math.floor(n * frac)
      given = given + counts[i]
    end
    for r = 0, n - given - 1 do
      local k = r % #counts + 1
      counts[k] = counts[k] + 1
    end
  else
    if sum ~= n then
      error(("random_split: Sum of input lengths does not equal the length of the input dataset! (%s, not %d)")
        :format(tostring(sum), n), 2)
    end
    for i, l in ipairs(lengths) do
      counts[i] = math.tointeger(l)
      if not counts[i] then
        error(("random_split: length %d is %s: give whole counts, or fractions summing to 1"):format(i, tostring(l)), 2)
      end
    end
  end
  local perm = M.with_generator(gen, graft.randperm, n)
  local out, offset = {}, 0
  for i, c in ipairs(counts) do
    out[i] = M.Subset(ds, perm:narrow(1, offset + 1, c):clone())
    offset = offset + c
  end
  return out
end

-- ---- WeightedRandomSampler ----

local WeightedRandomSampler = {}
WeightedRandomSampler.__name = "graft.data.WeightedRandomSampler"
WeightedRandomSampler.__index = WeightedRandomSampler

-- WeightedRandomSampler(weights, num_samples [, {replacement = true, seed = n}]) -> a
-- sampler for DataLoader's `sampler` option (torch.utils.data.WeightedRandomSampler):
-- called once per epoch, it draws num_samples 0-based indices i with probability
-- weights[i + 1] / sum(weights) (weights a Lua list or a 1-D tensor, not normalised):
-- with replacement by inverse CDF over graft.rand, without by weighted keys
-- log(u) / w (Efraimidis-Spirakis: the same law as drawing one at a time and removing
-- it). With a seed it draws on its own generator; otherwise on the loader's (seed) or
-- graft's global one. #sampler is num_samples.
function M.WeightedRandomSampler(weights, num_samples, opts)
  local op = "WeightedRandomSampler"
  opts = opts or {}
  if type(opts) ~= "table" then error(op .. ": expected an options table", 2) end
  for k in pairs(opts) do
    if k ~= "replacement" and k ~= "seed" and k ~= "generator" then
      error(("%s: unknown option '%s' (options: replacement, seed, generator)"):format(op, tostring(k)), 2)
    end
  end
  if math.type(num_samples) ~= "integer" or num_samples <= 0 then
    error(("%s: num_samples should be a positive integer value, but got num_samples=%s"):format(op,
      tostring(num_samples)), 2)
  end
  local replacement = opts.replacement
  if replacement == nil then replacement = true end
  if type(replacement) ~= "boolean" then
    error(("%s: replacement should be a boolean value, but got replacement=%s"):format(op, tostring(replacement)), 2)
  end
  local w
  if graft.is_tensor(weights) then
    if weights:dim() ~= 1 then
      error(("%s: weights should be a 1d sequence but given weights have shape [%s]"):format(op,
        table.concat(weights:shape(), ", ")), 2)
    end
    w = weights:double():tolist()
  elseif type(weights) == "table" then
    w = {}
    for i, v in ipairs(weights) do
      if type(v) ~= "number" then error(("%s: weight %d is %s, not a number"):format(op, i, tostring(v)), 2) end
      w[i] = v + 0.0
    end
  else
    error(op .. ": weights must be a list of numbers or a 1-D tensor", 2)
  end
  local total, positive = 0.0, 0
  for _, v in ipairs(w) do
    if v ~= v or v < 0 or v == math.huge then
      error(op .. ": invalid multinomial distribution (encountering probability entry < 0, inf or nan)", 2)
    end
    total = total + v
    if v > 0 then positive = positive + 1 end
  end
  if total <= 0 then error(op .. ": invalid multinomial distribution (sum of probabilities <= 0)", 2) end
  if not replacement and num_samples > positive then
    error(("%s: cannot draw %d samples without replacement from %d nonzero weights"):format(op, num_samples,
      positive), 2)
  end
  local cdf, acc = {}, 0.0
  for i, v in ipairs(w) do
    acc = acc + v
    cdf[i] = acc
  end
  local gen = opts.generator
  if opts.seed ~= nil then
    if math.type(opts.seed) ~= "integer" then error(op .. ": seed must be an integer", 2) end
    gen = M.Generator(opts.seed)
  end
  return setmetatable({ weights = w, cdf = cdf, total = total, num_samples = num_samples,
    replacement = replacement, generator = gen }, WeightedRandomSampler)
end

function WeightedRandomSampler:__len() return self.num_samples end

-- The next draw: int64 [num_samples] of 0-based indices.
function WeightedRandomSampler:__call()
  local w, n = self.weights, #self.weights
  local out = {}
  if self.replacement then
    local u = M.with_generator(self.generator, graft.rand, self.num_samples, { dtype = "float64" }):tolist()
    local cdf = self.cdf
    for k, uk in ipairs(u) do
      -- the first i with cdf[i] > u * total (never a zero-weight entry)
      local target = uk * self.total
      local lo, hi = 1, n
      while lo < hi do
        local mid = (lo + hi) // 2
        if cdf[mid] > target then hi = mid else lo = mid + 1 end
      end
      while w[lo] == 0 and lo > 1 do lo = lo - 1 end -- u * total rounding onto a flat end
      out[k] = lo - 1
    end
  else
    local u = M.with_generator(self.generator, graft.rand, n, { dtype = "float64" }):tolist()
    local keys, order = {}, {}
    for i = 1, n do
      keys[i] = w[i] > 0 and math.log(u[i]) / w[i] or -math.huge
      order[i] = i
    end
    table.sort(order, function(a, b) return keys[a] > keys[b] end)
    for k = 1, self.num_samples do out[k] = order[k] - 1 end
  end
  return graft.tensor(out, { dtype = "int64" })
end

function WeightedRandomSampler:__tostring()
  return ("WeightedRandomSampler(%d weights, num_samples=%d, replacement=%s)"):format(#self.weights,
    self.num_samples, tostring(self.replacement))
end

return M
