-- graft demo (the foundation's main job): tensors on real data.
--
-- Reads Debian's Fashion-MNIST (dataset-fashion-mnist), maps the pixels as a uint8
-- tensor without copying, and builds a nearest-centroid classifier with nothing but
-- tensor ops: one-hot labels by broadcasting, class means by one matmul, squared
-- distances by the |x|^2 - 2 x.c + |c|^2 expansion, predictions by argmin.
-- Fine-tuning recipes (pretrain, finetune, resume) replace this script as they land.
--
--   build/graft scripts/demo.lua [--data DIR]
local graft = graft or require("graft")

local data_dir = "/usr/share/datasets/fashion-mnist"
for i = 1, #arg do
  if arg[i] == "--data" then data_dir = arg[i + 1] end
end
local cache = os.getenv("GRAFT_CACHE") or "build/data"
local CLASSES = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
  "Bag", "Ankle boot" }

-- The IDX files ship gzip-compressed; unpack once into the cache (graft.data's zlib
-- reader arrives with the recipes), then map them.
local function idx_file(name)
  local out = cache .. "/" .. name
  local f = io.open(out, "rb")
  if f then f:close() return out end
  assert(os.execute("mkdir -p '" .. cache .. "'"))
  local src = data_dir .. "/" .. name .. ".gz"
  if not io.open(src, "rb") then
    error("demo: " .. src .. " not found (apt-get install dataset-fashion-mnist)")
  end
  assert(os.execute(("gzip -dc '%s' > '%s.tmp' && mv '%s.tmp' '%s'"):format(src, out, out, out)))
  return out
end

-- IDX: a big-endian header (magic, then one 32-bit size per dim), then uint8 data.
local function load_idx(name)
  local path = idx_file(name)
  local f = assert(io.open(path, "rb"))
  local head = f:read(4)
  local ndim = head:byte(4)
  local dims = { string.unpack(">" .. string.rep("I4", ndim), f:read(4 * ndim)) }
  dims[#dims] = nil -- string.unpack's trailing position
  f:close()
  local t = graft.from_file(path, { dtype = "uint8", offset = 4 + 4 * ndim })
  return t:view(dims)
end

local t0 = graft.clock()
local train_x = load_idx("train-images-idx3-ubyte"):flatten(2):float() / 255   -- (60000, 784)
local train_y = load_idx("train-labels-idx1-ubyte"):long()                      -- (60000)
local test_x = load_idx("t10k-images-idx3-ubyte"):flatten(2):float() / 255     -- (10000, 784)
local test_y = load_idx("t10k-labels-idx1-ubyte"):long()                        -- (10000)
print(("loaded Fashion-MNIST: train %s, test %s (%.2f s)"):format(
  table.concat(train_x:shape(), "x"), table.concat(test_x:shape(), "x"), graft.clock() - t0))

-- one-hot labels by broadcasting (60000, 1) against (1, 10)
local classes = graft.arange(10):view(1, 10)
local onehot = train_y:view(-1, 1):eq(classes):float()                          -- (60000, 10)
local counts = onehot:sum(1)                                                    -- (10)
print("images per class:", counts:long())

-- class means: (10, 60000) @ (60000, 784) / counts
local t1 = graft.clock()
local centroids = onehot:t():matmul(train_x) / counts:view(10, 1)               -- (10, 784)

-- squared distances of every test image to every centroid
local d2 = test_x:pow(2):sum(2, { keepdim = true })                             -- (10000, 1)
  - 2 * test_x:matmul(centroids:t())                                            -- (10000, 10)
  + centroids:pow(2):sum(2):view(1, 10)                                         -- (1, 10)
local pred = d2:argmin(2)                                                       -- (10000)
local correct = pred:eq(test_y)
local accuracy = correct:float():mean():item()
print(("nearest-centroid classifier built and evaluated in %.3f s"):format(graft.clock() - t1))

-- per-class accuracy, as a small table
print(("%-12s %8s"):format("class", "accuracy"))
for c = 0, 9 do
  local mask = test_y:eq(c)
  local acc = (correct:logical_and(mask)):sum():item() / mask:sum():item()
  print(("%-12s %8.3f"):format(CLASSES[c + 1], acc))
end
print("a few distances (first 3 test images x 10 classes):")
print(d2:narrow(1, 1, 3))
print(("test accuracy: %.4f (10 classes, nearest centroid, no training)"):format(accuracy))
