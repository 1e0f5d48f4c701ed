-- graft.data: datasets, loaders and transforms (in the spirit of torch.utils.data and
-- torchvision), and the file readers under them: IDX (MNIST's format, gzip or plain),
-- PNG and JPEG images, CSV of numbers.
--
--   local data = graft.data
--   local train = data.FashionMNIST({train = true, classes = {0, 1, 2, 3, 4}})
--   local loader = data.DataLoader(train, {batch_size = 64, shuffle = true, seed = 0})
--   for x, y in loader:iter() do ... end      -- x float32 [64, 1, 28, 28], y int64 [64]
--
-- Positions (ds:get(i), Subset lists) are 1-based; labels and index tensors are 0-based,
-- as PyTorch's.
local graft = require("graft")
local C = graft._data
local D = require("graft.data.dataset")
local datasets = require("graft.data.datasets")

local data = {}

-- ---- readers ----

-- idx(path) -> the tensor an IDX file holds (its dtype and dims: uint8 [N, 28, 28] for
-- MNIST images, uint8 [N] for labels); gzip-compressed or plain.
data.idx = C.idx

-- read_image(path [, {channels = 1|3}]) -> uint8 [H, W, C]: PNG or JPEG (by content);
-- channels converts (RGB to gray with PIL's luma; gray to RGB by repetition).
function data.read_image(path, opts)
  return C.read_image(path, opts and opts.channels or 0)
end

-- decode_image(bytes [, {channels =, name =}]) -> uint8 [H, W, C] from a string.
function data.decode_image(bytes, opts)
  opts = opts or {}
  return C.decode_image(bytes, opts.channels or 0, opts.name)
end

-- save_png(t, path): uint8 [H, W], [H, W, C] (C = 1..4), or floating [C, H, W] / [H, W]
-- in [0, 1] (scaled by 255, rounded and clamped, as torchvision's save_image).
function data.save_png(t, path)
  if not graft.is_tensor(t) then error("save_png: expected a tensor", 2) end
  if type(path) ~= "string" then error("save_png: expected a path", 2) end
  if t:is_floating_point() then
    if t:dim() ~= 2 and t:dim() ~= 3 then
      error(("save_png: expected a floating tensor [C, H, W] or [H, W], got [%s]"):format(table.concat(t:shape(), ", ")), 2)
    end
    local u = (t * 255 + 0.5):clamp(0, 255):byte()
    if t:dim() == 3 then u = u:permute(2, 3, 1) end
    t = u
  end
  C.write_png(t, path)
end

-- read_csv(path [, {header = "auto"|true|false, delimiter = ",", dtype = "float32"}])
-- -> values [rows, cols], names (the header's cells) or nil.
data.read_csv = C.read_csv

-- makedirs(path): creates a folder and its parents (mkdir -p).
data.makedirs = C.makedirs

-- listdir(path) -> the sorted names of a folder's entries.
function data.listdir(path)
  local names = C.listdir(path)
  table.sort(names)
  return names
end

-- ---- datasets and loaders ----

data.Dataset = D.Dataset
data.Generator = D.Generator
data.TensorDataset = D.TensorDataset
data.Subset = D.Subset
data.random_split = D.random_split
data.WeightedRandomSampler = D.WeightedRandomSampler
-- default_collate(samples) -> the batch, field by field: what DataLoader does without a
-- collate_fn, for a collate_fn to build on (samples: a list of {x, y, ...}).
function data.default_collate(samples)
  if type(samples) ~= "table" or #samples == 0 then
    error("default_collate: expected a non-empty list of samples", 2)
  end
  local width = 0
  for _, s in ipairs(samples) do width = math.max(width, s.n or #s) end
  local out = {}
  for f = 1, width do
    local column = {}
    for k, s in ipairs(samples) do column[k] = s[f] end
    out[f] = D.collate(column, #samples)
  end
  return table.unpack(out, 1, width)
end
data.MNIST = datasets.MNIST
data.FashionMNIST = datasets.FashionMNIST
data.ImageFolder = datasets.ImageFolder
data.CSV = datasets.CSV
data.DataLoader = require("graft.data.loader")
data.transforms = require("graft.data.transforms")

-- dataset(spec): a dataset from Lua functions, for quick custom data:
--   data.dataset({len = function() return n end, get = function(i) return x, y end})
-- get(i) gets a valid 1-based position and returns the item's values (any number of
-- them); the loader collates each value across a batch (default_collate) unless it has a
-- collate_fn.
local Custom = D.class("Dataset", D.Dataset)
function data.dataset(spec)
  if type(spec) ~= "table" or type(spec.len) ~= "function" or type(spec.get) ~= "function" then
    error("dataset: expected {len = function() ... end, get = function(i) ... end}", 2)
  end
  return setmetatable({ spec = spec }, Custom)
end
function Custom:len() return self.spec.len() end
function Custom:_item(i) return self.spec.get(i) end

return data
