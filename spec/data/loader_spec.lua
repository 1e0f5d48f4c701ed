-- graft.data's datasets and DataLoader: TensorDataset, Subset and ds:subset, custom
-- datasets, the CSV dataset; batching (one index_select per tensor, or items stacked),
-- batch counts with and without drop_last, shuffling reproducible under a seed.
local graft = require("graft")
local H = require("spec.helpers")
local data = require("graft.data")

local TMP = os.tmpname()
local write = H.write

-- x [10, 3] whose row i holds i (0-based) everywhere; y [10] = i % 3
local function toy(n)
  n = n or 10
  local x = graft.arange(n):float():view(n, 1):expand(n, 3):contiguous()
  local y = graft.arange(n) % 3
  return x, y
end

-- the rows of a batch X as the 0-based item numbers they hold
local function ids(X) return X:select(2, 1):long():tolist() end

describe("data.TensorDataset", function()
  it("has a length and 1-based items (views), negative from the end", function()
    local x, y = toy()
    local ds = data.TensorDataset(x, y)
    assert.equal(10, #ds)
    local xi, yi = ds:get(3)
    assert.tensor_near(xi, graft.tensor({ 2, 2, 2 }):float())
    assert.equal(2, yi:item())
    local last = ds[-1]
    assert.equal(9, last[1][1]:item())
    assert.equal(0, last[2]:item())
    H.raises("position 11 is out of range for a dataset of 10 items (positions are 1-based)", ds.get, ds, 11)
    H.raises("position 0 is out of range", ds.get, ds, 0)
  end)

  it("batches with index_select on 0-based positions", function()
    local x, y = toy()
    local ds = data.TensorDataset(x, y)
    local X, Y = ds:get_batch(graft.tensor({ 4, 0, 9 }))
    assert.are.same({ 3, 3 }, X:shape())
    assert.are.same({ 4, 0, 9 }, ids(X))
    assert.are.same({ 1, 0, 0 }, Y:tolist())
  end)

  it("checks its tensors", function()
    H.raises("size mismatch between tensors: 10 and 4", data.TensorDataset, graft.zeros(10, 2), graft.zeros(4))
    H.raises("argument 2 is not a tensor", data.TensorDataset, graft.zeros(3), 5)
    H.raises("expected at least one tensor", data.TensorDataset)
  end)
end)

describe("data.Subset and ds:subset", function()
  it("takes 1-based Lua positions or an int64 tensor of 0-based indices", function()
    local ds = data.TensorDataset(toy())
    local a = data.Subset(ds, { 2, 4, -1 })
    assert.equal(3, #a)
    assert.are.same({ 1, 3, 9 }, ids((a:get_batch(graft.arange(3)))))
    local b = data.Subset(ds, graft.tensor({ 1, 3, 9 }))
    assert.are.same({ 1, 3, 9 }, ids((b:get_batch(graft.arange(3)))))
    assert.equal(3, b:get(2):select(1, 1):item())
    H.raises("position 11 is out of range", data.Subset, ds, { 1, 11 })
    H.raises("index 10 is out of range for a dataset of 10 items (tensor indices are 0-based)", data.Subset, ds,
      graft.tensor({ 10 }))
  end)

  it("selects by labels, keeping the order, and can relabel to 0..K-1", function()
    local ds = data.TensorDataset(toy())
    local s = ds:subset({ labels = { 2, 0 } })
    assert.equal(7, #s)
    assert.are.same({ 0, 2, 3, 5, 6, 8, 9 }, ids((s:get_batch(graft.arange(7)))))
    assert.are.same({ 0, 2, 0, 2, 0, 2, 0 }, s:get_targets():tolist())
    local r = ds:subset({ labels = { 2, 0 }, relabel = true })
    assert.are.same({ 1, 0, 1, 0, 1, 0, 1 }, r:get_targets():tolist())
    local _, Y = r:get_batch(graft.tensor({ 1, 0 }))
    assert.are.same({ 0, 1 }, Y:tolist())
    local _, y1 = r:get(1)
    assert.equal(1, y1:item())
    local t = ds:subset({ indices = { 1, 2 } })
    assert.equal(2, #t)
    H.raises("labels must be a non-empty list", ds.subset, ds, { labels = {} })
    H.raises("label 1 is listed twice", ds.subset, ds, { labels = { 1, 1 } })
    H.raises("expected {indices = ...} or {labels = ...}", ds.subset, ds, {})
  end)

  it("nests: a subset of a subset batches through both", function()
    local ds = data.TensorDataset(toy())
    local s = ds:subset({ indices = { 10, 9, 8, 7 } }):subset({ indices = { 2, 4 } })
    assert.are.same({ 8, 6 }, ids((s:get_batch(graft.arange(2)))))
  end)
end)

describe("data.dataset (custom items)", function()
  it("stacks tensor items and turns integer labels into int64", function()
    local ds = data.dataset({
      len = function() return 5 end,
      get = function(i) return graft.full({ 2, 2 }, i + 0.5), i - 1 end,
    })
    assert.equal(5, #ds)
    local loader = data.DataLoader(ds, { batch_size = 2 })
    local seen = {}
    for x, y in loader:iter() do
      assert.equal("float32", x:dtype())
      assert.equal("int64", y:dtype())
      seen[#seen + 1] = table.concat(y:tolist(), ",")
    end
    assert.are.same({ "0,1", "2,3", "4" }, seen)
    local pair = ds[2]
    assert.equal(1, pair[2])
  end)
end)

describe("data.DataLoader", function()
  local ds = data.TensorDataset(toy(10))

  it("counts batches: ceil(N / B), or floor with drop_last", function()
    for _, c in ipairs({ { 3, false, 4 }, { 3, true, 3 }, { 5, false, 2 }, { 5, true, 2 }, { 20, false, 1 },
      { 20, true, 0 }, { 1, true, 10 } }) do
      local loader = data.DataLoader(ds, { batch_size = c[1], drop_last = c[2] })
      assert.equal(c[3], #loader)
      local n, sizes = 0, {}
      for x in loader:iter() do
        n = n + 1
        sizes[#sizes + 1] = x:size(1)
      end
      assert.equal(c[3], n)
      if c[3] > 0 and not c[2] then assert.equal(10 - c[1] * (c[3] - 1), sizes[#sizes]) end
      if c[2] then for _, s in ipairs(sizes) do assert.equal(c[1], s) end end
    end
  end)

  it("keeps the order without shuffle", function()
    local out = {}
    for x, y in data.DataLoader(ds, { batch_size = 4 }):iter() do
      for _, v in ipairs(ids(x)) do out[#out + 1] = v end
      assert.equal("int64", y:dtype())
    end
    assert.are.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, out)
  end)

  local function epoch(loader)
    local out = {}
    for x in loader:iter() do for _, v in ipairs(ids(x)) do out[#out + 1] = v end end
    return out
  end

  it("shuffles into a permutation, the same one for the same seed whatever else draws", function()
    local a = data.DataLoader(ds, { batch_size = 3, shuffle = true, seed = 42 })
    local b = data.DataLoader(ds, { batch_size = 3, shuffle = true, seed = 42 })
    local e1 = epoch(a)
    graft.rand(100) -- the global generator moves; the loader's does not care
    assert.are.same(e1, epoch(b))
    local sorted = { table.unpack(e1) }
    table.sort(sorted)
    assert.are.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, sorted)
    local e2 = epoch(a)
    assert.are_not.same(e1, e2) -- a new order every epoch (10! orders: equal by chance ~never)
    assert.are.same(e2, epoch(b))
    local c = data.DataLoader(ds, { batch_size = 3, shuffle = true, seed = 7 })
    assert.are_not.same(e1, epoch(c))
  end)

  it("without a seed, shuffles from the global generator (graft.manual_seed reproduces it)", function()
    local loader = data.DataLoader(ds, { batch_size = 4, shuffle = true })
    graft.manual_seed(5)
    local e1 = epoch(loader)
    graft.manual_seed(5)
    assert.are.same(e1, epoch(loader))
  end)

  it("resumes the order from state_dict", function()
    local a = data.DataLoader(ds, { batch_size = 3, shuffle = true, seed = 1 })
    epoch(a)
    local sd = a:state_dict()
    assert.equal(1, sd.epoch)
    local want = epoch(a)
    local b = data.DataLoader(ds, { batch_size = 3, shuffle = true, seed = 1 })
    b:load_state_dict(sd)
    assert.are.same(want, epoch(b))
    assert.equal(2, b.epoch)
  end)

  it("iterates with `for x, y in loader do`, each loop a new epoch, break included", function()
    local loader = data.DataLoader(ds, { batch_size = 4 })
    local n = 0
    for x, y in loader do
      n = n + 1
      assert.are.same({ 4 * (n - 1) }, { ids(x)[1] })
      assert.is_true(graft.is_tensor(y))
      if n == 2 then break end
    end
    local first
    for x in loader do
      first = first or ids(x)[1]
    end
    assert.equal(0, first)
  end)

  it("batches a 1-tensor dataset as X alone", function()
    local loader = data.DataLoader(data.TensorDataset(graft.arange(5)), { batch_size = 2 })
    local X, Y = loader:iter()()
    assert.are.same({ 0, 1 }, X:tolist())
    assert.is_nil(Y)
  end)

  it("checks its options", function()
    H.raises("batch_size must be a positive integer, got 0", data.DataLoader, ds, { batch_size = 0 })
    H.raises("expected a dataset", data.DataLoader, {}, {})
    H.raises("seed must be an integer", data.DataLoader, ds, { seed = 1.5 })
  end)

  it("prints what it is", function()
    local s = tostring(data.DataLoader(ds, { batch_size = 4 }))
    assert.is_truthy(s:find("DataLoader(TensorDataset(10 items), batch_size=4", 1, true))
  end)
end)

describe("data.CSV", function()
  it("splits a label column (int64) from float32 features", function()
    write(TMP, "f1,f2,label,f3\n1,2,0,3\n4,5,2,6\n7,8,1,9\n")
    local ds = data.CSV(TMP, { label_column = 3 })
    assert.equal(3, #ds)
    assert.are.same({ "f1", "f2", "f3" }, ds.columns)
    assert.equal("label", ds.label_name)
    local x, y = ds:get(2)
    assert.tensor_near(x, graft.tensor({ 4, 5, 6 }):float())
    assert.equal(2, y)
    local X, Y = data.DataLoader(ds, { batch_size = 3 }):iter()()
    assert.are.same({ 3, 3 }, X:shape())
    assert.equal("float32", X:dtype())
    assert.are.same({ 0, 2, 1 }, Y:tolist())
    assert.are.same({ 0, 2, 1 }, ds:get_targets():tolist())
    local last = data.CSV(TMP, { label_column = -1, dtype = "float64" })
    assert.equal("float64", last.features:dtype())
    assert.are.same({ 3, 6, 9 }, last.targets:tolist())
  end)

  it("gives features alone without a label column", function()
    write(TMP, "1;2\n3;4\n")
    local ds = data.CSV(TMP, { delimiter = ";", header = false })
    local x, y = ds:get(1)
    assert.are.same({ 2 }, x:shape())
    assert.is_nil(y)
  end)

  it("refuses non-integer labels and a column out of range, naming them", function()
    write(TMP, "a,b\n1,0\n2,1.5\n")
    H.raises("label column 2 holds 1.5 in data row 2", data.CSV, TMP, { label_column = 2 })
    H.raises("label_column 3 is out of range for 2 columns", data.CSV, TMP, { label_column = 3 })
    local ds = data.CSV(TMP, { label_column = 2, label_dtype = "float32" })
    assert.equal("float32", ds.targets:dtype())
    write(TMP, "a,b\n1,0\n2,x\n")
    H.raises("line 3, column 2: \"x\" is not a number", data.CSV, TMP, { label_column = 2 })
  end)
end)

os.remove(TMP)
