-- graft.data after a user review: ImageFolder batches of mixed image sizes, DataLoader's
-- option checks, sampler and collate_fn, WeightedRandomSampler, random_split, clean
-- errors for ds[0], CSV label columns by name, custom datasets through the loader.
local graft = require("graft")
local H = require("spec.helpers")
local data = require("graft.data")
local T = data.transforms

local write = H.write

-- x [n, 1] whose row i holds i (0-based), y [n] = i % 3
local function toy(n)
  n = n or 10
  return data.TensorDataset(graft.arange(n):float():view(n, 1), graft.arange(n) % 3)
end
local function ids(X) return X:reshape({ -1 }):long():tolist() end
local function sorted(t)
  local c = { table.unpack(t) }
  table.sort(c)
  return c
end
local function range(a, b)
  local out = {}
  for i = a, b do out[#out + 1] = i end
  return out
end

-- ---- ImageFolder with images of different sizes ----

-- class "a": a.png 20x30 and b.png 24x32 (random RGB), class "b": c.png 20x30 constant 51
-- and d.png 20x30 (random RGB), e.png 18x18 gray (random).
local ROOT = os.tmpname() .. ".mixed"
local SRC = {} -- path -> uint8 [H, W, C] written

setup(function()
  data.makedirs(ROOT .. "/a")
  data.makedirs(ROOT .. "/b")
  graft.manual_seed(11)
  local function png(name, t)
    data.save_png(t, ROOT .. "/" .. name)
    SRC[#SRC + 1] = t:dim() == 3 and t:size(3) == 1 and t:expand(t:size(1), t:size(2), 3) or t
  end
  png("a/a.png", graft.randint(0, 256, { 20, 30, 3 }):byte())
  png("a/b.png", graft.randint(0, 256, { 24, 32, 3 }):byte())
  png("b/c.png", graft.full({ 20, 30, 3 }, 51, { dtype = "uint8" }))
  png("b/d.png", graft.randint(0, 256, { 20, 30, 3 }):byte())
  png("b/e.png", graft.randint(0, 256, { 18, 18, 1 }):byte())
end)

teardown(function() os.execute("rm -rf '" .. ROOT .. "'") end)

-- image k as ImageFolder decodes it: float32 [3, H, W] in [0, 1]
local function alone(k) return SRC[k]:permute(3, 1, 2):float():div_(255) end

local function whole_batch(ds)
  return ds:get_batch(graft.arange(#ds))
end

describe("data.ImageFolder with images of different sizes", function()
  it("resizes each image alone, then stacks: the values of each image resized by itself", function()
    local ds = data.ImageFolder(ROOT, { transform = T.Resize({ 10, 15 }) })
    local X, Y = whole_batch(ds)
    assert.are.same({ 5, 3, 10, 15 }, X:shape())
    assert.are.same({ 0, 0, 1, 1, 1 }, Y:tolist())
    for k = 1, 5 do
      assert.tensor_near(X[k], T.Resize({ 10, 15 })(alone(k)), { atol = 1e-6 })
      assert.tensor_near(X[k], ds:get(k), { atol = 1e-6 })
    end
    -- closed forms: halving 20x30 bilinearly (align_corners = false) averages 2x2 blocks;
    -- a constant image stays constant
    local a = alone(1):view(3, 10, 2, 15, 2):mean(5):mean(3)
    assert.tensor_near(X[1], a, { atol = 1e-6 })
    assert.tensor_near(X[3], graft.full({ 3, 10, 15 }, 51 / 255), { atol = 1e-6 })
  end)

  it("center-crops each image alone: the middle window of its pixels", function()
    local ds = data.ImageFolder(ROOT, { transform = T.CenterCrop({ 10, 12 }) })
    local X = whole_batch(ds)
    assert.are.same({ 5, 3, 10, 12 }, X:shape())
    for k = 1, 5 do
      local src = SRC[k]
      local top = math.floor((src:size(1) - 10) / 2 + 0.5)
      local left = math.floor((src:size(2) - 12) / 2 + 0.5)
      local want = src:narrow(1, top + 1, 10):narrow(2, left + 1, 12):permute(3, 1, 2):double() / 255
      assert.tensor_near(X[k]:double(), want, { atol = 1e-6 })
    end
  end)

  it("runs Compose({Resize, Normalize}) per image through a shuffled loader", function()
    local tf = T.Compose({ T.Resize({ 8, 8 }), T.Normalize({ 0.5, 0.4, 0.3 }, { 0.2, 0.25, 0.5 }) })
    local ds = data.ImageFolder(ROOT, { transform = tf })
    local mean = graft.tensor({ 0.5, 0.4, 0.3 }):view(3, 1, 1)
    local std = graft.tensor({ 0.2, 0.25, 0.5 }):view(3, 1, 1)
    local want = {}
    for k = 1, 5 do want[k] = (T.Resize({ 8, 8 })(alone(k)) - mean) / std end
    local seen = 0
    local loader = data.DataLoader(data.Subset(ds, graft.arange(5)), { batch_size = 2, shuffle = true, seed = 3 })
    for X, Y in loader do
      assert.are.same({ 3, 8, 8 }, { X:size(2), X:size(3), X:size(4) })
      for r = 1, X:size(1) do
        -- find the image by its values (each differs), then check its label
        local hit
        for k = 1, 5 do
          if H.compare(X[r], want[k], { atol = 1e-5 }) then hit = k end
        end
        assert.is_not_nil(hit)
        assert.equal(hit <= 2 and 0 or 1, Y[r]:item())
        seen = seen + 1
      end
    end
    assert.equal(5, seen)
  end)

  it("keeps the one-op batch path when a batch's images share a size", function()
    local per_item, per_batch = 0, 0
    local tf = T.Lambda(function(x) per_item = per_item + 1 return x * 2 end,
      function(X) per_batch = per_batch + 1 return X * 2 end)
    local ds = data.ImageFolder(ROOT, { transform = tf })
    local X = ds:get_batch(graft.tensor({ 0, 2, 3 })) -- a.png, c.png, d.png: all 20x30
    assert.are.same({ 1, 0 }, { per_batch, per_item })
    assert.tensor_near(X[2], graft.full({ 3, 20, 30 }, 2 * 51 / 255), { atol = 1e-6 })
    assert.tensor_near(X[3], alone(4) * 2, { atol = 1e-6 })
  end)

  it("says which sizes differ when nothing evens them out", function()
    local ds = data.ImageFolder(ROOT)
    H.raises("ImageFolder: the images of a batch differ in size (3x20x30 and 3x24x32): add a Resize or CenterCrop",
      ds.get_batch, ds, graft.tensor({ 0, 1 }))
    local norm = data.ImageFolder(ROOT, { transform = T.Normalize(0.5, 0.5) })
    H.raises("ImageFolder: after the transform, the images of a batch differ in size (3x20x30 and 3x24x32): "
      .. "add a Resize or CenterCrop", norm.get_batch, norm, graft.tensor({ 0, 1 }))
    H.raises("differ in size (3x20x30 and 3x24x32)", function()
      for _ in data.DataLoader(ds, { batch_size = 5 }) do end
    end)
  end)
end)

-- ---- DataLoader options ----

describe("data.DataLoader options", function()
  local ds = toy(10)

  it("refuses unknown options, naming the known ones", function()
    H.raises("DataLoader: unknown option 'batchsize' (options: batch_size, shuffle, drop_last, seed, generator, "
      .. "sampler, collate_fn, num_workers, pin_memory, persistent_workers, prefetch_factor)",
      data.DataLoader, ds, { batchsize = 2 })
    H.raises("DataLoader: shuffle must be a boolean, got 1", data.DataLoader, ds, { shuffle = 1 })
    H.raises("DataLoader: shuffle must be a boolean, got yes", data.DataLoader, ds, { shuffle = "yes" })
    H.raises("DataLoader: drop_last must be a boolean", data.DataLoader, ds, { drop_last = 0 })
    H.raises("collate_fn must be a function, got number", data.DataLoader, ds, { collate_fn = 3 })
    H.raises("generator must be a data.Generator", data.DataLoader, ds, { generator = 5 })
  end)

  it("accepts PyTorch's worker options and loads the same batches in this thread", function()
    local plain = data.DataLoader(ds, { batch_size = 4 })
    local workers = data.DataLoader(ds, { batch_size = 4, num_workers = 4, pin_memory = true,
      persistent_workers = true, prefetch_factor = 2 })
    assert.equal(#plain, #workers)
    local a, b = {}, {}
    for x in plain do a[#a + 1] = ids(x) end
    for x in workers do b[#b + 1] = ids(x) end
    assert.are.same({ { 0, 1, 2, 3 }, { 4, 5, 6, 7 }, { 8, 9 } }, b)
    assert.are.same(a, b)
    H.raises("num_workers option should be non-negative", data.DataLoader, ds, { num_workers = -1 })
    H.raises("pin_memory must be a boolean", data.DataLoader, ds, { pin_memory = 1 })
  end)

  it("reports errors at the caller's line", function()
    local ok, err = pcall(function() local l = data.DataLoader(ds, { batchsize = 2 }) return l end)
    assert.is_false(ok)
    assert.is_truthy(err:find("review_spec.lua:%d+: DataLoader: unknown option"), err)
  end)
end)

describe("data.DataLoader sampler", function()
  local ds = toy(10)

  local function epoch(loader)
    local out = {}
    for x in loader:iter() do for _, v in ipairs(ids(x)) do out[#out + 1] = v end end
    return out
  end

  it("takes a list of 1-based positions or an int64 tensor of 0-based indices; #loader follows it", function()
    local l = data.DataLoader(ds, { batch_size = 2, sampler = { 10, 1, 5, -2 } })
    assert.equal(2, #l)
    assert.are.same({ 9, 0, 4, 8 }, epoch(l))
    assert.are.same({ 9, 0, 4, 8 }, epoch(l)) -- a fixed sampler: the same every epoch
    local t = data.DataLoader(ds, { batch_size = 2, sampler = graft.tensor({ 3, 3, 7 }), drop_last = true })
    assert.equal(1, #t)
    assert.are.same({ 3, 3 }, epoch(t))
    H.raises("sampler: position 11 is out of range for a dataset of 10 items", data.DataLoader, ds,
      { sampler = { 1, 11 } })
    H.raises("index 10 is out of range for a dataset of 10 items (tensor indices are 0-based)", data.DataLoader,
      ds, { sampler = graft.tensor({ 10 }) })
  end)

  it("calls a sampler function once per epoch with the epoch number", function()
    local calls = {}
    local function sampler(e)
      calls[#calls + 1] = e
      return range(1, e + 2) -- epoch e: the first e + 2 items
    end
    local l = data.DataLoader(ds, { batch_size = 1, sampler = sampler })
    assert.equal(3, #l) -- the first epoch's order, drawn ahead and kept for it
    assert.are.same({ 0, 1, 2 }, epoch(l))
    assert.equal(4, #l)
    assert.equal(4, #l)
    assert.are.same({ 0, 1, 2, 3 }, epoch(l))
    assert.are.same({ 0, 1, 2, 3, 4 }, epoch(l))
    assert.are.same({ 1, 2, 3 }, calls)
    local t = data.DataLoader(ds, { sampler = function() return graft.tensor({ 4, 2 }) end })
    assert.are.same({ 4, 2 }, epoch(t))
    local bad = data.DataLoader(ds, { sampler = function() return { 0 } end })
    H.raises("DataLoader: sampler: position 0 is out of range", bad.iter, bad)
  end)

  it("runs a sampler function on the loader's seeded generator", function()
    local function sampler() return graft.randperm(10) end
    local a = data.DataLoader(ds, { batch_size = 3, sampler = sampler, seed = 9 })
    local b = data.DataLoader(ds, { batch_size = 3, sampler = sampler, seed = 9 })
    local e1 = epoch(a)
    graft.rand(50)
    assert.are.same(e1, epoch(b))
    assert.are.same(range(0, 9), sorted(e1))
    local gen = data.Generator(9)
    assert.are.same(gen:run(graft.randperm, 10):tolist(), e1)
    -- state_dict after #loader drew the next order ahead still resumes at that order
    local n = #a
    assert.equal(4, n)
    local sd = a:state_dict()
    local want = epoch(a)
    local c = data.DataLoader(ds, { batch_size = 3, sampler = sampler, seed = 9 })
    c:load_state_dict(sd)
    assert.are.same(want, epoch(c))
    assert.are_not.same(e1, want)
  end)

  it("is exclusive with shuffle, as PyTorch", function()
    H.raises("DataLoader: sampler option is mutually exclusive with shuffle", data.DataLoader, ds,
      { sampler = { 1 }, shuffle = true })
    assert.equal(1, #data.DataLoader(ds, { sampler = { 1 }, shuffle = false }))
  end)
end)

describe("data.DataLoader collate_fn", function()
  it("gets a list of the items as {x, y} tables and returns the batch", function()
    local ds = toy(5)
    local got = {}
    local function collate(samples)
      got[#got + 1] = #samples
      local xs, ys = {}, {}
      for k, s in ipairs(samples) do
        assert.equal(2, #s)
        xs[k] = s[1]:item()
        ys[k] = s[2]:item()
      end
      return xs, ys, "extra"
    end
    local out = {}
    for xs, ys, extra in data.DataLoader(ds, { batch_size = 2, collate_fn = collate, sampler = { 5, 4, 3, 2, 1 } }) do
      out[#out + 1] = { xs, ys, extra }
    end
    assert.are.same({ 2, 2, 1 }, got)
    assert.are.same({ { { 4, 3 }, { 1, 0 }, "extra" }, { { 2, 1 }, { 2, 1 }, "extra" }, { { 0 }, { 0 }, "extra" } },
      out)
  end)

  it("can build on data.default_collate", function()
    local ds = toy(4)
    local loader = data.DataLoader(ds, { batch_size = 4, collate_fn = function(samples)
      local X, Y = data.default_collate(samples)
      return X * 10, Y
    end })
    local X, Y = loader:iter()()
    assert.tensor_near(X, graft.tensor({ { 0 }, { 10 }, { 20 }, { 30 } }):float())
    assert.are.same({ 0, 1, 2, 0 }, Y:tolist())
  end)
end)

describe("data.WeightedRandomSampler", function()
  it("draws with replacement by inverse CDF: the indices of graft.rand against the weights' CDF", function()
    local w = { 0, 1, 0, 3, 0.5 }
    local s = data.WeightedRandomSampler(w, 200, { seed = 4 })
    assert.equal(200, #s)
    local got = s()
    assert.equal("int64", got:dtype())
    -- the same uniforms from the same seed; the 0-based index of the first CDF entry above
    -- u * total is the number of entries at or below it
    local u = data.Generator(4):run(graft.rand, 200, { dtype = "float64" })
    local cdf = graft.tensor({ 0, 1, 1, 4, 4.5 }, { dtype = "float64" })
    local want = (u:view(200, 1) * 4.5):ge(cdf:view(1, 5)):long():sum(2)
    assert.are.same(want:tolist(), got:tolist())
    local counts = { [0] = 0, 0, 0, 0, 0 }
    for _, v in ipairs(got:tolist()) do counts[v] = counts[v] + 1 end
    assert.equal(0, counts[0] + counts[2])
    assert.is_true(counts[3] > counts[1] and counts[1] > counts[4] / 2)
    assert.are_not.same(got:tolist(), s():tolist()) -- a new draw each call (epoch)
  end)

  it("draws without replacement only among positive weights, and feeds a DataLoader", function()
    local s = data.WeightedRandomSampler(graft.tensor({ 0, 2, 0, 5 }), 2, { replacement = false, seed = 1 })
    for _ = 1, 5 do assert.are.same({ 1, 3 }, sorted(s():tolist())) end
    local ds = toy(10)
    local loader = data.DataLoader(ds, { batch_size = 4, sampler = data.WeightedRandomSampler(
      { 1, 0, 0, 0, 0, 0, 0, 0, 0, 1 }, 6, { seed = 2 }) })
    assert.equal(2, #loader)
    local n = 0
    for x in loader do
      for _, v in ipairs(ids(x)) do
        assert.is_true(v == 0 or v == 9)
        n = n + 1
      end
    end
    assert.equal(6, n)
  end)

  it("checks its arguments", function()
    H.raises("num_samples should be a positive integer value, but got num_samples=0", data.WeightedRandomSampler,
      { 1 }, 0)
    H.raises("replacement should be a boolean value", data.WeightedRandomSampler, { 1 }, 1, { replacement = 1 })
    H.raises("sum of probabilities <= 0", data.WeightedRandomSampler, { 0, 0 }, 1)
    H.raises("encountering probability entry < 0", data.WeightedRandomSampler, { 1, -1 }, 1)
    H.raises("cannot draw 2 samples without replacement from 1 nonzero weights", data.WeightedRandomSampler,
      { 0, 1 }, 2, { replacement = false })
    H.raises("weights should be a 1d sequence", data.WeightedRandomSampler, graft.ones(2, 2), 1)
  end)
end)

-- ---- random_split ----

describe("data.random_split", function()
  local ds = toy(10)

  local function members(s) return s.indices:tolist() end

  it("splits by counts: a permutation from graft.randperm on the seed's generator", function()
    local parts = data.random_split(ds, { 3, 7 }, { seed = 5 })
    assert.equal(2, #parts)
    assert.are.same({ 3, 7 }, { #parts[1], #parts[2] })
    local perm = data.Generator(5):run(graft.randperm, 10):tolist()
    assert.are.same({ perm[1], perm[2], perm[3] }, members(parts[1]))
    assert.are.same({ table.unpack(perm, 4, 10) }, members(parts[2]))
    -- the items are the dataset's
    local x = parts[2]:get(1)
    assert.equal(perm[4], x:item())
    assert.are.same(members(parts[1]), members(data.random_split(ds, { 3, 7 }, { seed = 5 })[1]))
  end)

  it("splits by fractions as PyTorch 1.13: floors, then the remainder round-robin", function()
    -- 10 * {0.33, 0.33, 0.34} floors to {3, 3, 3}; the 1 left goes to the first
    local a = data.random_split(ds, { 0.33, 0.33, 0.34 }, { seed = 1 })
    assert.are.same({ 4, 3, 3 }, { #a[1], #a[2], #a[3] })
    -- 10 * {0.25, 0.25, 0.25, 0.25} floors to {2, 2, 2, 2}; 2 left: the first two
    local b = data.random_split(ds, { 0.25, 0.25, 0.25, 0.25 }, { seed = 1 })
    assert.are.same({ 3, 3, 2, 2 }, { #b[1], #b[2], #b[3], #b[4] })
    local all = {}
    for _, s in ipairs(b) do for _, v in ipairs(members(s)) do all[#all + 1] = v end end
    assert.are.same(range(0, 9), sorted(all))
    local c = data.random_split(ds, { 0.5, 0.5 })
    assert.are.same({ 5, 5 }, { #c[1], #c[2] })
  end)

  it("refuses lengths that do not add up", function()
    H.raises("Sum of input lengths does not equal the length of the input dataset!", data.random_split, ds, { 3, 3 })
    H.raises("Sum of input lengths does not equal the length of the input dataset!", data.random_split, ds,
      { 0.5, 0.6 })
    H.raises("random_split: unknown option 'sed'", data.random_split, ds, { 5, 5 }, { sed = 1 })
    H.raises("length 2 is -1", data.random_split, ds, { 11, -1 })
  end)
end)

-- ---- ds[0] ----

describe("ds[i] errors", function()
  it("are reported at the caller's line, not inside graft.data", function()
    local ds = toy(3)
    local ok, err = pcall(function() local item = ds[0] return item end)
    assert.is_false(ok)
    assert.is_nil(err:find("graft/data", 1, true), err)
    assert.is_truthy(err:find(
      "^[^:]*review_spec.lua:%d+: TensorDataset: position 0 is out of range for a dataset of 3 items"), err)
    local ok2, err2 = pcall(function() local item = ds:get(4) return item end)
    assert.is_false(ok2)
    assert.is_truthy(err2:find("^[^:]*review_spec.lua:%d+: TensorDataset: position 4 is out of range"), err2)
    local ok3, err3 = pcall(function() local item = ds[1.5] return item end)
    assert.is_false(ok3)
    assert.is_truthy(err3:find("^[^:]*review_spec.lua:%d+: TensorDataset: position must be an integer"), err3)
    assert.are.same({ 2 }, { ds[-1][1]:item() })
  end)
end)

-- ---- CSV label_column by name ----

describe("data.CSV label_column by header name", function()
  local TMP = os.tmpname()
  teardown(function() os.remove(TMP) end)

  it("takes the column named in the header", function()
    write(TMP, "f1,label,f2\n1,2,3\n4,0,6\n7,1,9\n")
    local ds = data.CSV(TMP, { label_column = "label" })
    assert.are.same({ "f1", "f2" }, ds.columns)
    assert.equal("label", ds.label_name)
    assert.are.same({ 2, 0, 1 }, ds:get_targets():tolist())
    local x, y = ds:get(2)
    assert.tensor_near(x, graft.tensor({ 4, 6 }):float())
    assert.equal(0, y)
    local by_pos = data.CSV(TMP, { label_column = 2 })
    assert.tensor_near(by_pos.features, ds.features)
    assert.are.same({ 3, 6, 9 }, data.CSV(TMP, { label_column = "f2" }).targets:tolist())
  end)

  it("names the columns when the name is absent, and needs a header", function()
    write(TMP, "f1,label,f2\n1,2,3\n")
    H.raises('CSV: no column named "labels" (columns: f1, label, f2)', data.CSV, TMP, { label_column = "labels" })
    write(TMP, "1,2,3\n4,5,6\n")
    H.raises('label_column "label" is a column name, but', data.CSV, TMP, { label_column = "label" })
    H.raises("has no header row", data.CSV, TMP, { label_column = "label" })
    write(TMP, "a,a,b\n1,2,3\n")
    H.raises('label_column "a" names columns 1 and 2', data.CSV, TMP, { label_column = "a" })
  end)
end)

-- ---- custom datasets ----

describe("data.dataset through the DataLoader", function()
  it("collates every value an item returns: tensors, numbers, strings, tables", function()
    local ds = data.dataset({
      len = function() return 5 end,
      get = function(i)
        return graft.full({ 2 }, i, { dtype = "float32" }), i - 1, ("item%d"):format(i),
          { w = i / 2, mask = graft.ones(1) * i }, i % 2 == 0
      end,
    })
    assert.equal(5, #ds)
    assert.equal("item2", ds[2][3])
    local batches = {}
    for x, y, name, extra, even in data.DataLoader(ds, { batch_size = 3 }) do
      batches[#batches + 1] = { x = x, y = y, name = name, extra = extra, even = even }
    end
    assert.equal(2, #batches)
    local b = batches[1]
    assert.tensor_near(b.x, graft.tensor({ { 1, 1 }, { 2, 2 }, { 3, 3 } }):float())
    assert.are.same({ 0, 1, 2 }, b.y:tolist())
    assert.equal("int64", b.y:dtype())
    assert.are.same({ "item1", "item2", "item3" }, b.name)
    assert.tensor_near(b.extra.w, graft.tensor({ 0.5, 1, 1.5 }))
    assert.tensor_near(b.extra.mask, graft.tensor({ { 1 }, { 2 }, { 3 } }):float())
    assert.are.same({ false, true, false }, b.even:tolist())
    assert.are.same({ "item4", "item5" }, batches[2].name)
  end)

  it("shuffles, samples and splits like any dataset", function()
    local ds = data.dataset({ len = function() return 6 end, get = function(i) return i * 10, i - 1 end })
    local seen = {}
    for x, y in data.DataLoader(ds, { batch_size = 4, shuffle = true, seed = 0 }) do
      for k, v in ipairs(x:tolist()) do
        assert.equal(v // 10 - 1, y[k]:item())
        seen[#seen + 1] = v
      end
    end
    assert.are.same({ 10, 20, 30, 40, 50, 60 }, sorted(seen))
    local parts = data.random_split(ds, { 4, 2 }, { seed = 1 })
    local X = data.DataLoader(parts[2], { batch_size = 2 }):iter()()
    local want = {}
    for k, p in ipairs(parts[2].indices:tolist()) do want[k] = (p + 1) * 10 end
    assert.are.same(want, X:tolist())
    H.raises("collate: the items of a batch differ in shape ([1] and [2])", function()
      local bad = data.dataset({ len = function() return 2 end, get = function(i) return graft.zeros(i) end })
      return bad:get_batch(graft.arange(2))
    end)
  end)
end)
