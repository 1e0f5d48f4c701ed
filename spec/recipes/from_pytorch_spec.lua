-- scripts/from_pytorch.lua in --quick mode: fine-tunes from the checkpoint PyTorch
-- trained (scripts/fixtures/small_cnn_torch.pth) and saves a .pth that PyTorch loads and
-- evaluates to the same accuracy (checked where /usr/bin/python3 imports torch).
local graft = require("graft")
local H = require("spec.recipes.helper")

local function have_torch()
  if not H.exists("/usr/bin/python3") then return false, "/usr/bin/python3 is not installed" end
  if not os.execute("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") then
    return false, "/usr/bin/python3 cannot import torch (Debian package python3-torch)"
  end
  return true
end

describe("scripts/from_pytorch.lua --quick", function()
  local dir, out, err, code
  setup(function()
    assert(H.have_bin(), H.BIN .. " is missing: run `make build/graft` first")
    dir = H.tmpdir()
    out, err, code = H.run("from_pytorch", "--quick", "--out", dir)
  end)
  teardown(H.cleanup)

  it("loads PyTorch's training checkpoint: unwrapped, 'module.' stripped, float16 cast", function()
    assert.are.equal(0, code, err)
    assert.truthy(out:find("arch small_cnn, epoch 3", 1, true), out)
    assert.truthy(out:find("8 of 8 model tensors loaded", 1, true), out)
    assert.truthy(out:find('8 tensors under "state_dict", stripped "module." from 8 keys (auto)', 1, true), out)
    assert.truthy(out:find("(float16 -> float32)", 1, true), out)
  end)

  it("learns: accuracy above chance, the loss falls", function()
    local rows = H.metrics(dir .. "/metrics.csv")
    assert.are.equal(3, #rows)
    assert.is_true(rows[3].train_loss < rows[1].train_loss)
    assert.is_true(rows[3].val_acc > 0.5, "val accuracy " .. rows[3].val_acc)
    assert.is_true(tonumber(out:match("graft:   accuracy ([%d.]+)")) > 0.5, out)
  end)

  it("saves a plain state dict with PyTorch's keys, float32", function()
    local sd = graft.load(dir .. "/small_cnn_5-9.pth")
    assert.are.same({ "0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias" }, sd:keys())
    assert.are.equal("float32", sd["7.weight"]:dtype())
    assert.are.same({ 5, 128 }, sd["9.weight"]:shape())
  end)

  local ok, why = have_torch()
  if ok then
    it("PyTorch evaluates the saved file to the same accuracy, image for image", function()
      local g = out:match("graft:   accuracy [%d.]+ %((%d+ of %d+)%)")
      local t = out:match("pytorch: accuracy [%d.]+ %((%d+ of %d+)%)")
      assert.is_not_nil(g, out)
      assert.are.equal(g, t, out)
      assert.truthy(out:find("same accuracy in graft and PyTorch", 1, true), out)
    end)
  else
    it("PyTorch's check is skipped: " .. why, function()
      print("\nfrom_pytorch_spec: PyTorch's evaluation not checked: " .. why)
      assert.truthy(out:find("pytorch: not checked", 1, true), out)
    end)
  end
end)
