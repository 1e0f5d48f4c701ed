-- scripts/pretrain.lua in --quick mode: trains, learns (above chance, a falling loss),
-- writes the checkpoint finetune.lua loads and the metrics CSV.
local graft = require("graft")
local H = require("spec.recipes.helper")

describe("scripts/pretrain.lua --quick", function()
  local dir, out, err, code
  setup(function()
    assert(H.have_bin(), H.BIN .. " is missing: run `make build/graft` first")
    dir = H.tmpdir()
    out, err, code = H.run("pretrain", "--quick", "--out", dir)
  end)
  teardown(H.cleanup)

  it("runs in seconds and saves a checkpoint of the small CNN", function()
    assert.are.equal(0, code, err)
    local ckpt = graft.load(dir .. "/small_cnn.pth")
    assert.are.equal("small_cnn", ckpt.arch)
    assert.are.same({ "0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias" },
      ckpt.model:keys())
    assert.are.same({ 5, 128 }, ckpt.model["9.weight"]:shape())
    assert.truthy(out:find("saved " .. dir .. "/small_cnn.pth", 1, true), out)
  end)

  it("learns: accuracy above chance (0.2 for 5 classes), the loss falls", function()
    local rows = H.metrics(dir .. "/metrics.csv")
    assert.are.equal(2, #rows)
    assert.is_true(rows[2].train_loss < rows[1].train_loss, "loss " .. rows[1].train_loss .. " -> " .. rows[2].train_loss)
    assert.is_true(rows[2].test_acc > 0.4, "test accuracy " .. rows[2].test_acc)
    assert.is_true(graft.load(dir .. "/small_cnn.pth").test_acc > 0.4)
  end)

  it("prints one line per epoch when output is not a terminal", function()
    assert.truthy(out:find("pretrain 1/2: 10 batch in", 1, true), out)
    assert.truthy(out:find("\nepoch 2: train loss", 1, true), out)
  end)

  it("rejects bad options with the usage", function()
    local _, e, c = H.run("pretrain", "--epochs", "two")
    assert.are.equal(2, c)
    assert.truthy(e:find("--epochs expects a number", 1, true), e)
    assert.truthy(e:find("usage: graft scripts/pretrain.lua", 1, true), e)
    _, e, c = H.run("pretrain", "--bogus")
    assert.are.equal(2, c)
    assert.truthy(e:find("unknown option --bogus", 1, true), e)
    local o
    o, _, c = H.run("pretrain", "--help")
    assert.are.equal(0, c)
    assert.truthy(o:find("--train-size N", 1, true), o)
  end)
end)
