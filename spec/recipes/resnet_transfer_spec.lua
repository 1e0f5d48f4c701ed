-- scripts/resnet_transfer.lua in --quick mode (32x32 images): the image folder it
-- writes, the load report, BatchNorm frozen in eval for the whole run, layer-wise rates,
-- and learning (above chance, a falling loss).
local graft = require("graft")
local data = require("graft.data")
local H = require("spec.recipes.helper")

describe("scripts/resnet_transfer.lua --quick", function()
  local dir, out, err, code
  setup(function()
    assert(H.have_bin(), H.BIN .. " is missing: run `make build/graft` first")
    dir = H.tmpdir()
    out, err, code = H.run("resnet_transfer", "--quick", "--out", dir)
  end)
  teardown(H.cleanup)

  it("writes an ImageFolder tree of RGB PNGs, one folder per class", function()
    assert.are.equal(0, code, err)
    local root = dir .. "/images32"
    assert.are.same({ "ankle_boot", "bag", "sandal", "shirt", "sneaker" }, data.listdir(root .. "/train"))
    assert.are.equal(20, #data.listdir(root .. "/train/bag"))
    assert.are.equal(10, #data.listdir(root .. "/val/bag"))
    assert.are.same({ "coat", "dress", "pullover", "trouser", "tshirt" }, data.listdir(root .. "/pretrain"))
    assert.are.same({ 32, 32, 3 }, data.read_image(root .. "/train/bag/0001.png"):shape())
    assert.truthy(out:find("ImageFolder(" .. root .. "/train, 100 images, 5 classes)", 1, true), out)
  end)

  it("loads every pretrained tensor but the old head", function()
    assert.truthy(out:find("120 of 122 model tensors loaded", 1, true), out)
    assert.truthy(out:find("skipped        2  fc.weight, fc.bias (include/exclude)", 1, true), out)
  end)

  it("keeps BatchNorm frozen in eval mode: its parameters and running statistics stay the pretrained ones", function()
    local pre = graft.load(dir .. "/resnet18_0-4_32.pth").model
    local after = graft.load(dir .. "/resnet18_transfer.pth")
    local bn, moved = 0, 0
    for k, v in pairs(after) do
      if k:find("bn%d?%.") or k:find("downsample%.1%.") then
        bn = bn + 1
        assert.are.equal(pre[k]:tobytes(), v:tobytes(), k)
      elseif k:find("conv%d%.weight$") and pre[k]:tobytes() ~= v:tobytes() then
        moved = moved + 1
      end
    end
    assert.are.equal(100, bn) -- 20 BatchNorm layers x (weight, bias, mean, var, count)
    assert.is_true(moved > 10, "the convolutions learn once unfrozen (" .. moved .. " moved)")
    assert.truthy(out:find("epoch 2: the backbone's convolutions are unfrozen", 1, true), out)
  end)

  it("gives each block half the rate of the next one (optim.layer_decay)", function()
    local row = H.metrics(dir .. "/metrics.csv")[1]
    -- 6 blocks (stem, layer1-4, fc), each split into a decayed and a no-decay group
    assert.near(0.01, row.lr_11, 1e-12)
    assert.near(0.005, row.lr_9, 1e-12)
    assert.near(0.01 / 32, row.lr_1, 1e-12)
    assert.truthy(out:find("SGD: 12 param groups", 1, true), out)
  end)

  it("learns: validation accuracy above chance (0.2), the loss falls", function()
    local rows = H.metrics(dir .. "/metrics.csv")
    assert.are.equal(3, #rows)
    -- a 100-image quick run is noisy from epoch to epoch (and differs between builds'
    -- kernels): the loss must fall below the first epoch's at some later epoch
    assert.is_true(math.min(rows[2].train_loss, rows[3].train_loss) < rows[1].train_loss)
    assert.is_true(rows[3].val_acc > 0.3, "val accuracy " .. rows[3].val_acc)
  end)
end)
