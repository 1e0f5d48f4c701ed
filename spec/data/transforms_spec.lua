-- graft.data.transforms: values per item and per batch (apply_batch), seeded randomness,
-- Resize against PyTorch's bilinear interpolate, and their use inside datasets.
local graft = require("graft")
local H = require("spec.helpers")
local data = require("graft.data")
local T = data.transforms

local FIX = H.fixture("data")

describe("transforms.Normalize", function()
  it("subtracts the mean and divides by the std per channel, item or batch", function()
    local x = graft.rand(3, 4, 5)
    local n = T.Normalize({ 0.1, 0.2, 0.3 }, { 0.5, 1, 2 })
    local want = (x - graft.tensor({ 0.1, 0.2, 0.3 }):view(3, 1, 1)) / graft.tensor({ 0.5, 1, 2 }):view(3, 1, 1)
    assert.tensor_near(n(x), want)
    assert.tensor_near(n:apply_batch(x:unsqueeze(1)), want:unsqueeze(1))
    assert.tensor_near(T.Normalize(0.5, 0.25)(x), (x - 0.5) / 0.25)
    assert.equal("float64", n(x:double()):dtype())
  end)

  it("refuses integer images and a zero std", function()
    H.raises("expected a floating tensor (apply ToFloat first)", T.Normalize(0, 1), graft.zeros(1, 2, 2, { dtype = "uint8" }))
    H.raises("std is 0", T.Normalize, 0, 0)
  end)
end)

describe("transforms.ToFloat", function()
  it("scales uint8 by 1/255 and passes floats through", function()
    local u = graft.tensor({ 0, 51, 255 }, { dtype = "uint8" })
    assert.tensor_near(T.ToFloat()(u), graft.tensor({ 0, 0.2, 1 }))
    local f = graft.rand(2)
    assert.equal(f, T.ToFloat()(f))
  end)
end)

describe("transforms.RandomHorizontalFlip", function()
  local x = graft.arange(2 * 3 * 4):float():view(2, 3, 4)
  it("flips always with p = 1 and never with p = 0", function()
    assert.tensor_near(T.RandomHorizontalFlip(1)(x), x:flip(3))
    assert.tensor_near(T.RandomHorizontalFlip(0)(x), x)
    local X = x:unsqueeze(1):expand(6, 2, 3, 4):contiguous()
    assert.tensor_near(T.RandomHorizontalFlip(1):apply_batch(X), X:flip(4))
  end)

  it("flips each image of a batch on its own draw, reproducibly with a seed", function()
    local X = x:unsqueeze(1):expand(64, 2, 3, 4):contiguous()
    local out = T.RandomHorizontalFlip({ seed = 3 }):apply_batch(X)
    local flipped = 0
    for b = 1, 64 do
      local o = out[b]
      if H.compare(o, x:flip(3)) then flipped = flipped + 1
      else assert.tensor_near(o, x) end
    end
    assert.is_true(flipped > 10 and flipped < 54, "flipped " .. flipped)
    assert.tensor_near(T.RandomHorizontalFlip({ seed = 3 }):apply_batch(X), out)
  end)
end)

describe("transforms.RandomCrop", function()
  it("cuts a window of the zero-padded image, item and batch", function()
    local x = graft.rand(2, 6, 7)
    local crop = T.RandomCrop({ 6, 7 }, { padding = 2, seed = 1 })
    local padded = graft.F.pad(x, { 2, 2, 2, 2 })
    local function find(o)
      for dy = 0, 4 do
        for dx = 0, 4 do
          if H.compare(o, padded:narrow(2, dy + 1, 6):narrow(3, dx + 1, 7), { rtol = 0, atol = 0 }) then return dy, dx end
        end
      end
    end
    for _ = 1, 5 do assert.is_not_nil(find(crop(x))) end
    local X = x:unsqueeze(1):expand(40, 2, 6, 7):contiguous()
    local out = crop:apply_batch(X)
    assert.are.same({ 40, 2, 6, 7 }, out:shape())
    local offsets = {}
    for b = 1, 40 do
      local dy, dx = find(out[b])
      assert.is_not_nil(dy, "batch item " .. b .. " is not a window")
      offsets[dy * 5 + dx] = true
    end
    local distinct = 0
    for _ in pairs(offsets) do distinct = distinct + 1 end
    assert.is_true(distinct > 5, "only " .. distinct .. " distinct windows in 40 draws")
  end)

  it("is the identity without padding at full size, and reproducible with a seed", function()
    local X = graft.rand(4, 1, 5, 5)
    assert.tensor_near(T.RandomCrop(5):apply_batch(X), X)
    local a = T.RandomCrop(3, { padding = 1, seed = 9 }):apply_batch(X)
    local b = T.RandomCrop(3, { padding = 1, seed = 9 }):apply_batch(X)
    assert.tensor_near(a, b)
    assert.are.same({ 4, 1, 3, 3 }, a:shape())
  end)

  it("refuses a window larger than the padded image", function()
    H.raises("crop size 9x9 is larger than the (padded) image 7x7", T.RandomCrop(9, { padding = 1 }), graft.rand(1, 5, 5))
    H.raises("padding must be non-negative integers", T.RandomCrop, 3, { padding = -1 })
  end)
end)

describe("transforms.Resize and CenterCrop", function()
  it("resizes bilinearly as PyTorch's interpolate (align_corners = false)", function()
    local x = H.T(FIX.resize.x)
    assert.tensor_near(T.Resize({ 3, 4 })(x), FIX.resize.out, { atol = 1e-6 })
    assert.tensor_near(T.Resize({ 8, 9 }):apply_batch(x:unsqueeze(1)), H.T(FIX.resize.up):unsqueeze(1), { atol = 1e-6 })
  end)

  it("resizes the shorter side to n keeping the aspect ratio, and keeps uint8 as uint8", function()
    assert.are.same({ 1, 10, 20 }, T.Resize(10)(graft.rand(1, 5, 10)):shape())
    assert.are.same({ 1, 20, 10 }, T.Resize(10)(graft.rand(1, 40, 20)):shape())
    local u = graft.full({ 3, 4, 4 }, 200, { dtype = "uint8" })
    local r = T.Resize({ 2, 2 })(u)
    assert.equal("uint8", r:dtype())
    assert.are.same({ 200, 200 }, r[1][1]:tolist())
  end)

  it("crops the center", function()
    local x = graft.arange(25):float():view(1, 5, 5)
    assert.tensor_near(T.CenterCrop(3)(x), x:narrow(2, 2, 3):narrow(3, 2, 3))
    H.raises("crop size 6x6 is larger than the image 5x5", T.CenterCrop(6), x)
  end)
end)

describe("transforms.Compose", function()
  it("chains per item, and per batch when every member can", function()
    local c = T.Compose({ T.Normalize(0.5, 0.5), T.RandomHorizontalFlip(1) })
    local x = graft.rand(1, 3, 3)
    assert.tensor_near(c(x), ((x - 0.5) / 0.5):flip(3))
    assert.is_function(c.apply_batch)
    assert.tensor_near(c:apply_batch(x:unsqueeze(1)), ((x - 0.5) / 0.5):flip(3):unsqueeze(1))
    local f = T.Compose({ T.Normalize(0, 1), function(t) return t * 2 end })
    assert.is_nil(f.apply_batch)
    assert.tensor_near(f(x), x * 2)
    H.raises("entry 2 is not a transform", T.Compose, { T.ToFloat(), 3 })
  end)

  it("applies inside a dataset: batch transforms once per batch, functions item by item", function()
    local x = graft.rand(8, 1, 4, 4)
    local y = graft.arange(8)
    local ds = data.TensorDataset(x, y, { transform = T.Normalize(0.5, 2) })
    local X = data.DataLoader(ds, { batch_size = 8 }):iter()()
    assert.tensor_near(X, (x - 0.5) / 2)
    local calls = 0
    local fds = data.TensorDataset(x, y, { transform = function(t) calls = calls + 1 return t + 1 end })
    local F = data.DataLoader(fds, { batch_size = 8 }):iter()()
    assert.tensor_near(F, x + 1)
    assert.equal(8, calls)
  end)
end)
