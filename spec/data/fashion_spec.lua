-- graft.data.FashionMNIST on Debian's dataset-fashion-mnist (skipped, saying so, where
-- it is not installed): shapes, dtypes, label counts, pixels checked against Python's
-- gzip module (spec/fixtures/gen_data.py), class subsets, and the loader's speed.
-- The files are read once.
local graft = require("graft")
local H = require("spec.helpers")
local data = require("graft.data")

local ROOT = "/usr/share/datasets/fashion-mnist"
-- dataset-fashion-mnist is one of the packages `make` installs (Makefile DEB_PACKAGES)
local FIX = H.fixture("data").fashion

local train = data.FashionMNIST({ train = true })
local test = data.FashionMNIST({ root = ROOT, train = false })

describe("data.FashionMNIST", function()
  it("holds 60000 training and 10000 test images, uint8 [N, 28, 28], int64 labels", function()
    assert.equal(60000, #train)
    assert.equal(10000, #test)
    assert.are.same({ 60000, 28, 28 }, train.data:shape())
    assert.equal("uint8", train.data:dtype())
    assert.equal("int64", train.targets:dtype())
    assert.equal("Ankle boot", train.classes[10])
    assert.equal(9, train.class_to_idx["Ankle boot"])
  end)

  it("has the pixels and labels Python's gzip reads", function()
    assert.equal(FIX.train_first_image_sum, train.data[1]:long():sum():item())
    assert.tensor_near(train.data[1][14], FIX.train_first_image_row14, { rtol = 0, atol = 0 })
    assert.equal(FIX.train_pixel_sum, train.data:sum():item())
    assert.equal(FIX.test_first_image_sum, test.data[1]:long():sum():item())
    assert.are.same(FIX.train_labels_first, train.targets:narrow(1, 1, 20):tolist())
    assert.are.same(FIX.test_labels_first, test.targets:narrow(1, 1, 20):tolist())
  end)

  it("has 6000 training and 1000 test images per class", function()
    local counts_tr, counts_te = {}, {}
    for c = 0, 9 do
      counts_tr[c + 1] = train.targets:eq(c):sum():item()
      counts_te[c + 1] = test.targets:eq(c):sum():item()
    end
    assert.are.same(FIX.train_counts, counts_tr)
    assert.are.same(FIX.test_counts, counts_te)
    for c = 1, 10 do
      assert.equal(6000, counts_tr[c])
      assert.equal(1000, counts_te[c])
    end
  end)

  it("gives items as float32 [1, 28, 28] in [0, 1] and a 0-based label", function()
    local x, y = train:get(1)
    assert.are.same({ 1, 28, 28 }, x:shape())
    assert.equal("float32", x:dtype())
    assert.equal(FIX.train_labels_first[1], y)
    assert.is_true(math.abs(x:sum():item() - FIX.train_first_image_sum / 255) < 1e-3)
    assert.is_true(x:max():item() <= 1 and x:min():item() >= 0)
  end)

  it("keeps a subset of classes, optionally renumbered 0..K-1", function()
    local sub = data.FashionMNIST({ train = false, classes = { 5, 6, 7, 8, 9 } })
    assert.equal(5000, #sub)
    assert.equal(5, sub.targets:min():item())
    local re = data.FashionMNIST({ train = false, classes = { 7, 5 }, relabel = true })
    assert.equal(2000, #re)
    assert.are.same({ "Sneaker", "Sandal" }, re.classes)
    assert.equal(1000, re.targets:eq(0):sum():item())
    assert.equal(1, re.targets:max():item())
    -- the same images as ds:subset on the full test set
    local s = test:subset({ labels = { 7, 5 }, relabel = true })
    local X1, Y1 = re:get_batch(graft.arange(50))
    local X2, Y2 = s:get_batch(graft.arange(50))
    assert.tensor_near(X1, X2)
    assert.are.same(Y1:tolist(), Y2:tolist())
  end)

  it("batches [B, 1, 28, 28] and runs an epoch of 60000 in well under a second", function()
    local loader = data.DataLoader(train, { batch_size = 64, shuffle = true, seed = 0 })
    assert.equal(938, #loader)
    -- timed on one thread: on a machine shared with other processes, OpenMP regions can
    -- wait milliseconds for a descheduled thread, which would time the neighbours
    local threads = graft.get_num_threads()
    graft.set_num_threads(1)
    local t0 = graft.clock()
    local n, labels = 0, 0
    for x, y in loader:iter() do
      n = n + x:size(1)
      labels = labels + y:sum():item()
      assert.equal(4, x:dim())
    end
    local dt = graft.clock() - t0
    graft.set_num_threads(threads)
    assert.equal(60000, n)
    assert.equal(60000 * 4.5, labels)
    assert.is_true(dt < 1.0, ("an epoch took %.2f s"):format(dt))
  end)

  it("finds the files under root/FashionMNIST/raw too, and says what is missing", function()
    H.raises("FashionMNIST: train-images-idx3-ubyte not found under /nonexistent", data.FashionMNIST,
      { root = "/nonexistent" })
    H.raises("give the folder of the IDX files as {root = ...}", data.MNIST, {})
  end)
end)
