-- graft.data.ImageFolder on a small folder written here with save_png (plus a committed
-- JPEG): classes from the sorted folder names, nested files, extension filter, items
-- and batches, Resize for mixed sizes, and errors.
local graft = require("graft")
local H = require("spec.helpers")
local data = require("graft.data")
local T = data.transforms

local ROOT = os.tmpname() .. ".imgs"
local function copy(src, dst)
  local f = assert(io.open(src, "rb"))
  local s = f:read("a")
  f:close()
  f = assert(io.open(dst, "wb"))
  f:write(s)
  f:close()
end

-- class "cat" (index 1): 3 PNGs of value 10, 20, 30 (one in a nested folder); class "ant"
-- (index 0): 2 PNGs; class "dog" (2): the committed JPEG (12 x 16) and a text file.
local images = {}
setup(function()
  data.makedirs(ROOT .. "/cat/more")
  data.makedirs(ROOT .. "/ant")
  data.makedirs(ROOT .. "/dog")
  local function png(path, v, c)
    local t = graft.full({ 12, 16, c or 3 }, v, { dtype = "uint8" })
    t[{ 1, 1 }] = 255 -- the top-left pixel marks orientation
    data.save_png(t, path)
    images[path] = t
  end
  png(ROOT .. "/cat/b.png", 20)
  png(ROOT .. "/cat/a.PNG", 10)
  png(ROOT .. "/cat/more/c.png", 30, 1)
  png(ROOT .. "/ant/x.png", 40)
  png(ROOT .. "/ant/y.png", 50)
  copy("spec/fixtures/data/rgb.jpg", ROOT .. "/dog/photo.jpg")
  local f = assert(io.open(ROOT .. "/dog/notes.txt", "w"))
  f:write("not an image")
  f:close()
  local g = assert(io.open(ROOT .. "/README", "w")) -- a file at the top is not a class
  g:write("x")
  g:close()
end)

teardown(function() os.execute("rm -rf '" .. ROOT .. "'") end)

describe("data.ImageFolder", function()
  it("numbers classes by sorted folder names and lists their images in order", function()
    local ds = data.ImageFolder(ROOT)
    assert.are.same({ "ant", "cat", "dog" }, ds.classes)
    assert.equal(1, ds.class_to_idx.cat)
    assert.equal(6, #ds)
    assert.are.same({ 0, 0, 1, 1, 1, 2 }, ds.targets:tolist())
    assert.is_truthy(ds.samples[3]:find("cat/a.PNG", 1, true))
    assert.is_truthy(ds.samples[5]:find("cat/more/c.png", 1, true))
  end)

  it("gives float32 [C, H, W] in [0, 1] items (gray expanded to RGB) with 0-based labels", function()
    local ds = data.ImageFolder(ROOT)
    local x, y = ds:get(3)
    assert.are.same({ 3, 12, 16 }, x:shape())
    assert.equal(1, y)
    assert.is_true(math.abs(x[1][2][2]:item() - 10 / 255) < 1e-7)
    assert.equal(1, x[1][1][1]:item())
    local g = ds:get(5) -- the 1-channel PNG
    assert.are.same({ 3, 12, 16 }, g:shape())
    assert.tensor_near(g[1], g[3])
    local gray = data.ImageFolder(ROOT, { channels = 1 })
    assert.are.same({ 1, 12, 16 }, gray:get(1):shape())
  end)

  it("batches images of one size, and resizes mixed ones with a transform", function()
    local ds = data.ImageFolder(ROOT, { extensions = { "png" } })
    assert.equal(5, #ds)
    local X, Y = data.DataLoader(ds, { batch_size = 5 }):iter()()
    assert.are.same({ 5, 3, 12, 16 }, X:shape())
    assert.are.same({ 0, 0, 1, 1, 1 }, Y:tolist())
    local small = data.ImageFolder(ROOT, { transform = T.Compose({ T.Resize({ 8, 8 }), T.Normalize(0.5, 0.5) }) })
    local n = 0
    for x, y in data.DataLoader(small, { batch_size = 4, shuffle = true, seed = 1 }):iter() do
      assert.are.same({ 8, 8 }, { x:size(3), x:size(4) })
      assert.equal(x:size(1), y:size(1))
      n = n + x:size(1)
    end
    assert.equal(6, n)
  end)

  it("subsets by labels through the stored targets", function()
    local ds = data.ImageFolder(ROOT):subset({ labels = { 2, 0 }, relabel = true })
    assert.equal(3, #ds)
    assert.are.same({ 1, 1, 0 }, ds:get_targets():tolist())
  end)

  it("says what is wrong with a folder", function()
    H.raises("ImageFolder: cannot open folder", data.ImageFolder, ROOT .. "/nope")
    H.raises("no class folders in " .. ROOT .. "/dog", data.ImageFolder, ROOT .. "/dog")
    H.raises("no image files (.bmp)", data.ImageFolder, ROOT, { extensions = { ".bmp" } })
    local f = assert(io.open(ROOT .. "/ant/broken.png", "wb"))
    f:write("\137PNG\r\n\26\n\0\0\0\13IHDR")
    f:close()
    local ds = data.ImageFolder(ROOT)
    H.raises("broken.png\": corrupt PNG", ds.get, ds, 1)
    os.remove(ROOT .. "/ant/broken.png")
  end)
end)
