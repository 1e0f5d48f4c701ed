-- graft.data's file datasets: MNIST and FashionMNIST (IDX files, gzip or plain),
-- ImageFolder (one folder of PNG/JPEG images per class) and CSV (rows of numbers).
-- MNIST-style and CSV datasets hold one big tensor and batch with one index_select;
-- ImageFolder decodes its files item by item.
local graft = require("graft")
local D = require("graft.data.dataset")
local C = graft._data

local M = {}

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- ---- MNIST / FashionMNIST ----

local FASHION_CLASSES = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
  "Bag", "Ankle boot" }
local MNIST_CLASSES = { "0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
  "7 - seven", "8 - eight", "9 - nine" }

local MNISTLike = D.class("MNIST", D.Dataset)

-- Finds NAME or NAME.gz in root, or in root/<Dataset>/raw (torchvision's layout).
local function find_idx(root, sub, name, op)
  local tried = {}
  for _, dir in ipairs({ root, root .. "/" .. sub .. "/raw" }) do
    for _, ext in ipairs({ "", ".gz" }) do
      local p = dir .. "/" .. name .. ext
      if file_exists(p) then return p end
      tried[#tried + 1] = p
    end
  end
  error(("%s: %s not found under %s (looked for %s)"):format(op, name, root, table.concat(tried, ", ")), 4)
end

local function mnist_like(name, default_root, class_names, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error(name .. ": expected an options table", 3) end
  local root = opts.root or default_root
  if not root then error(name .. ": give the folder of the IDX files as {root = ...}", 3) end
  local train = opts.train ~= false
  local prefix = train and "train" or "t10k"
  local images = C.idx(find_idx(root, name, prefix .. "-images-idx3-ubyte", name))
  local labels = C.idx(find_idx(root, name, prefix .. "-labels-idx1-ubyte", name))
  if images:dim() ~= 3 then
    error(("%s: the image file holds %d dims, expected 3 ([N, H, W])"):format(name, images:dim()), 3)
  end
  if labels:dim() ~= 1 or labels:size(1) ~= images:size(1) then
    error(("%s: %d images but labels of shape [%s]"):format(name, images:size(1),
      table.concat(labels:shape(), ", ")), 3)
  end
  if images:dtype() ~= "uint8" then images = images:byte() end
  local targets = labels:long()
  local classes = class_names
  if opts.classes then
    local idx, lut = D.select_labels(targets, opts.classes, opts.relabel, name)
    images = images:index_select(1, idx)
    targets = targets:index_select(1, idx)
    if lut then
      targets = lut:index_select(1, targets)
      classes = {}
      for k, l in ipairs(opts.classes) do classes[k] = class_names[l + 1] or tostring(l) end
    end
  end
  local class_to_idx = {}
  for i, c in ipairs(classes) do class_to_idx[c] = i - 1 end
  local ds = setmetatable({ data = images, targets = targets, transform = opts.transform, train = train,
    classes = classes, class_to_idx = class_to_idx, root = root }, MNISTLike)
  ds._class_name = name
  return ds
end

-- MNIST({root =, train = true, classes = {...}, relabel = false, transform = fn}): items
-- (float32 [1, 28, 28] in [0, 1], label 0-based integer). `classes` keeps the listed
-- labels only; `relabel = true` renumbers them 0..K-1 in the list's order.
function M.MNIST(opts) return mnist_like("MNIST", nil, MNIST_CLASSES, opts) end

-- FashionMNIST(...): as MNIST; root defaults to Debian's dataset-fashion-mnist.
function M.FashionMNIST(opts)
  return mnist_like("FashionMNIST", "/usr/share/datasets/fashion-mnist", FASHION_CLASSES, opts)
end

function MNISTLike:len() return self.data:size(1) end

function MNISTLike:_item(i)
  local x = self.data[i]:unsqueeze(1):float():div_(255) -- (1, 28, 28)
  return D.apply(self.transform, x), self.targets[i]:item()
end

function MNISTLike:_batch(idx)
  local X = self.data:index_select(1, idx):unsqueeze(2):float():div_(255) -- (B, 1, 28, 28)
  return D.apply_batch(self.transform, X), self.targets:index_select(1, idx)
end

function MNISTLike:get_targets() return self.targets end

function MNISTLike:_describe()
  return ("%s(%s, %d images of [%s], %d classes)"):format(self._class_name, self.train and "train" or "test",
    self:len(), table.concat(self.data:shape(), ", ", 2), #self.classes)
end

-- ---- ImageFolder ----

local ImageFolder = D.class("ImageFolder", D.Dataset)

local function sorted_entries(path)
  local names, kinds = C.listdir(path)
  local order = {}
  for i = 1, #names do order[i] = i end
  table.sort(order, function(a, b) return names[a] < names[b] end)
  local out = {}
  for k, i in ipairs(order) do out[k] = { name = names[i], kind = kinds[i] } end
  return out
end

local function has_extension(name, exts)
  local lower = name:lower()
  for _, e in ipairs(exts) do
    if lower:sub(-#e) == e then return true end
  end
  return false
end

-- Files under dir (recursively, sorted at each level, as torchvision's os.walk).
local function walk(dir, exts, out, depth)
  if depth > 32 then error("ImageFolder: folders nested deeper than 32 levels under " .. dir, 0) end
  for _, e in ipairs(sorted_entries(dir)) do
    local p = dir .. "/" .. e.name
    if e.kind == "dir" then walk(p, exts, out, depth + 1)
    elseif e.kind == "file" and has_extension(e.name, exts) then out[#out + 1] = p end
  end
end

-- ImageFolder(root [, {transform =, extensions = {".png", ".jpg", ".jpeg"}, channels = 3}]):
-- one subfolder per class; class indices follow the sorted folder names (0..K-1, as
-- torchvision). Items: (float32 [C, H, W] in [0, 1], label 0-based integer).
function M.ImageFolder(root, opts)
  if type(root) ~= "string" then error("ImageFolder: expected a folder path", 2) end
  opts = opts or {}
  local exts = {}
  for i, e in ipairs(opts.extensions or { ".png", ".jpg", ".jpeg" }) do
    exts[i] = (e:sub(1, 1) == "." and e or "." .. e):lower()
  end
  local channels = opts.channels or 3
  if channels ~= 1 and channels ~= 3 then error("ImageFolder: channels must be 1 or 3", 2) end
  local ok, entries = pcall(sorted_entries, root)
  if not ok then error("ImageFolder: " .. tostring(entries), 2) end
  local classes, samples, labels = {}, {}, {}
  for _, e in ipairs(entries) do
    if e.kind == "dir" then
      classes[#classes + 1] = e.name
      local files = {}
      walk(root .. "/" .. e.name, exts, files, 1)
      for _, f in ipairs(files) do
        samples[#samples + 1] = f
        labels[#labels + 1] = #classes - 1
      end
    end
  end
  if #classes == 0 then error(("ImageFolder: no class folders in %s"):format(root), 2) end
  if #samples == 0 then
    error(("ImageFolder: no image files (%s) in the class folders of %s"):format(table.concat(exts, ", "), root), 2)
  end
  local class_to_idx = {}
  for i, c in ipairs(classes) do class_to_idx[c] = i - 1 end
  return setmetatable({ root = root, classes = classes, class_to_idx = class_to_idx, samples = samples,
    targets = graft.tensor(labels, { dtype = "int64" }), transform = opts.transform, channels = channels },
    ImageFolder)
end

function ImageFolder:len() return #self.samples end

function ImageFolder:_item(i)
  local img = C.read_image(self.samples[i], self.channels)           -- uint8 (H, W, C)
  local x = img:permute(3, 1, 2):float():div_(255)                   -- (C, H, W)
  return D.apply(self.transform, x), self.targets[i]:item()
end

local function size_of(x) return table.concat(x:shape(), "x") end

-- Decodes the batch's images. When they share a size and the transform has apply_batch:
-- stacks them, then applies it once to the batch. Otherwise: applies the transform to each
-- image alone (a Resize or CenterCrop evens mixed sizes out), then stacks.
function ImageFolder:_batch(idx)
  local list = idx:tolist()
  local xs = {}
  local same = true
  for k, p in ipairs(list) do
    xs[k] = C.read_image(self.samples[p + 1], self.channels):permute(3, 1, 2):float():div_(255) -- (C, H, W)
    same = same and size_of(xs[k]) == size_of(xs[1])
  end
  local Y = self.targets:index_select(1, idx)
  if same and D.can_batch(self.transform) then return D.apply_batch(self.transform, graft.stack(xs, 1)), Y end
  for k = 1, #xs do xs[k] = D.apply(self.transform, xs[k]) end
  for k = 2, #xs do
    if not graft.is_tensor(xs[k]) or size_of(xs[k]) ~= size_of(xs[1]) then
      error(("ImageFolder: %sthe images of a batch differ in size (%s and %s): add a Resize or CenterCrop%s")
        :format(self.transform and "after the transform, " or "", size_of(xs[1]), size_of(xs[k]),
          self.transform and "" or " transform"), 0)
    end
  end
  return graft.stack(xs, 1), Y
end

function ImageFolder:get_targets() return self.targets end

function ImageFolder:_describe()
  return ("ImageFolder(%s, %d images, %d classes)"):format(self.root, self:len(), #self.classes)
end

-- ---- CSV ----

local CSVDataset = D.class("CSV", D.Dataset)

-- CSV(path [, {header = "auto", delimiter = ",", label_column = k, dtype = "float32",
-- label_dtype = "int64", transform = fn}]): rows of numbers. label_column (a 1-based
-- position, negative from the end, or a header name) holds the labels (integers for int64
-- labels); the other columns are the features. Without label_column the items are
-- features only.
function M.CSV(path, opts)
  opts = opts or {}
  local values, names = C.read_csv(path, { header = opts.header, delimiter = opts.delimiter, dtype = "float64" })
  local ncols = values:size(2)
  local features, targets, label_name = values, nil, nil
  local lc = opts.label_column
  if type(lc) == "string" then
    if not names then
      error(("CSV: label_column \"%s\" is a column name, but \"%s\" has no header row (give a 1-based position)")
        :format(lc, path), 2)
    end
    local found
    for j, name in ipairs(names) do
      if name == lc then
        if found then error(("CSV: label_column \"%s\" names columns %d and %d"):format(lc, found, j), 2) end
        found = j
      end
    end
    if not found then
      error(("CSV: no column named \"%s\" (columns: %s)"):format(lc, table.concat(names, ", ")), 2)
    end
    lc = found
  end
  if lc ~= nil then
    if math.type(lc) ~= "integer" or lc == 0 or lc > ncols or lc < -ncols then
      error(("CSV: label_column %s is out of range for %d columns (1-based)"):format(tostring(lc), ncols), 2)
    end
    local col = lc > 0 and lc or ncols + 1 + lc
    local keep = {}
    for j = 1, ncols do if j ~= col then keep[#keep + 1] = j - 1 end end
    local y = values:select(2, col)
    local ldtype = opts.label_dtype or "int64"
    if ldtype == "int64" or ldtype == "long" then
      local bad = y:ne(y:floor()):logical_or(y:isnan())
      if bad:any():item() then
        local row = bad:nonzero()[1][1]:item() + 1
        error(("CSV: \"%s\": label column %d holds %s in data row %d (int64 labels must be whole numbers)")
          :format(path, col, tostring(y[row]:item()), row), 2)
      end
    end
    targets = y:to(ldtype)
    features = #keep > 0 and values:index_select(2, graft.tensor(keep, { dtype = "int64" }))
      or graft.empty(values:size(1), 0, { dtype = "float64" })
    label_name = names and names[col]
    if names then
      local fn = {}
      for _, j in ipairs(keep) do fn[#fn + 1] = names[j + 1] end
      names = fn
    end
  end
  features = features:to(opts.dtype or "float32"):contiguous()
  return setmetatable({ path = path, features = features, targets = targets, columns = names,
    label_name = label_name, transform = opts.transform }, CSVDataset)
end

function CSVDataset:len() return self.features:size(1) end

function CSVDataset:_item(i)
  local x = D.apply(self.transform, self.features[i])
  if not self.targets then return x end
  local y = self.targets[i]:item()
  return x, y
end

function CSVDataset:_batch(idx)
  local X = D.apply_batch(self.transform, self.features:index_select(1, idx))
  if not self.targets then return X end
  return X, self.targets:index_select(1, idx)
end

function CSVDataset:get_targets()
  if not self.targets then error("CSV: no label_column was given", 2) end
  return self.targets
end

function CSVDataset:_describe()
  return ("CSV(%s, %d rows, %d features%s)"):format(self.path, self:len(), self.features:size(2),
    self.targets and ", labels" or "")
end

return M
