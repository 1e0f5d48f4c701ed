-- scripts/finetune.lua in --quick mode, on the checkpoint of pretrain.lua --quick: the
-- load report, learning (above chance, a falling loss), freezing then unfreezing, the
-- schedules' rates, the best checkpoint, --scratch, and --resume equal bit for bit to a
-- run that was never interrupted.
local graft = require("graft")
local H = require("spec.recipes.helper")

describe("scripts/finetune.lua --quick", function()
  local ckpt, dir, out, err, code
  setup(function()
    assert(H.have_bin(), H.BIN .. " is missing: run `make build/graft` first")
    local pre = H.tmpdir()
    local _, e, c = H.run("pretrain", "--quick", "--out", pre)
    assert(c == 0, e)
    ckpt = pre .. "/small_cnn.pth"
    dir = H.tmpdir()
    out, err, code = H.run("finetune", "--quick", "--ckpt", ckpt, "--out", dir)
  end)
  teardown(H.cleanup)

  it("loads the pretrained checkpoint through load_pretrained and prints the report", function()
    assert.are.equal(0, code, err)
    assert.truthy(out:find('load_pretrained "' .. ckpt .. '": 8 of 8 model tensors loaded', 1, true), out)
    assert.truthy(out:find('8 tensors under "model"', 1, true), out)
  end)

  it("learns: validation and test accuracy above chance, the loss falls", function()
    local rows = H.metrics(dir .. "/metrics.csv")
    assert.are.equal(3, #rows)
    assert.is_true(rows[3].train_loss < rows[1].train_loss, ("loss %g -> %g"):format(rows[1].train_loss, rows[3].train_loss))
    assert.is_true(rows[3].val_acc > 0.4, "val accuracy " .. rows[3].val_acc)
    local acc = tonumber(out:match("test accuracy ([%d.]+)"))
    assert.is_true(acc > 0.4, out)
  end)

  it("gives the head and the backbone their own rates, MultiStepLR dividing both by 10", function()
    local rows = H.metrics(dir .. "/metrics.csv")
    -- 3 epochs: milestones ceil(3 * 2/3) = 2 and ceil(3 * 5/6) = 3
    assert.are.same({ 0.1, 0.1 }, { rows[1].lr_head, rows[2].lr_head })
    assert.are.same({ 0.05, 0.05 }, { rows[1].lr_backbone, rows[2].lr_backbone })
    assert.near(0.01, rows[3].lr_head, 1e-12)
    assert.near(0.005, rows[3].lr_backbone, 1e-12)
    assert.truthy(out:find("frozen (in a group, requires_grad off", 1, true), out)
    assert.truthy(out:find("epoch 2: the feature extractor is unfrozen", 1, true), out)
  end)

  it("keeps the best epoch's weights (chosen on validation) and a resumable last state", function()
    local rows = H.metrics(dir .. "/metrics.csv")
    local best = graft.load(dir .. "/best.pth")
    local top = 1
    for i, r in ipairs(rows) do
      if r.val_acc > rows[top].val_acc then top = i end
    end
    assert.are.equal(top, best.epoch)
    assert.are.equal(rows[top].val_acc, best.val_acc)
    local last = graft.load(dir .. "/last.pth")
    assert.are.equal(3, last.epoch)
    for _, k in ipairs({ "model", "optimizer", "scheduler", "rng", "loader", "frozen", "best" }) do
      assert.is_not_nil(last[k], k)
    end
  end)

  it("freezes the feature extractor for the first epochs: only the head moves", function()
    local d = H.tmpdir()
    local _, e, c = H.run("finetune", "--quick", "--ckpt", ckpt, "--out", d, "--freeze-epochs", "2", "--stop-after", "1")
    assert.are.equal(0, c, e)
    local pre = graft.load(ckpt).model
    local after = graft.load(d .. "/last.pth")
    for _, k in ipairs({ "0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias" }) do
      assert.are.equal(pre[k]:tobytes(), after.model[k]:tobytes(), k)
    end
    assert.are_not.equal(pre["9.weight"]:tobytes(), after.model["9.weight"]:tobytes())
    assert.are.same({ "0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias" }, after.frozen)
  end)

  it("--resume after a stop equals an uninterrupted run, bit for bit", function()
    local a, b = H.tmpdir(), H.tmpdir()
    local common = { "--quick", "--ckpt", ckpt, "--freeze-epochs", "2", "--epochs", "4" }
    local function run(d, ...)
      local args = { table.unpack(common) }
      for _, x in ipairs({ "--out", d, ... }) do args[#args + 1] = x end
      local o, e, c = H.run("finetune", table.unpack(args))
      assert.are.equal(0, c, e)
      return o
    end
    local whole = run(a)
    local first = run(b, "--stop-after", "1")
    assert.truthy(first:find("stopping after epoch 1 as asked", 1, true), first)
    assert.is_nil(first:find("test accuracy", 1, true))
    local rest = run(b, "--resume")
    assert.truthy(rest:find("resuming after epoch 1", 1, true), rest)
    assert.truthy(rest:find("epoch 3: the feature extractor is unfrozen", 1, true), rest)
    -- the final states
    local sa, sb = graft.load(a .. "/last.pth"), graft.load(b .. "/last.pth")
    assert.is_true(H.same_tensors(sa.model, sb.model))
    assert.are.equal(sa.rng:tobytes(), sb.rng:tobytes())
    assert.are.equal(sa.loader.generator:tobytes(), sb.loader.generator:tobytes())
    assert.are.equal(#sa.optimizer.state, #sb.optimizer.state)
    for i, st in pairs(sa.optimizer.state) do
      assert.are.equal(st.momentum_buffer:tobytes(), sb.optimizer.state[i].momentum_buffer:tobytes())
    end
    assert.are.same(sa.optimizer.param_groups[1].lr, sb.optimizer.param_groups[1].lr)
    assert.are.same(sa.scheduler.last_epoch, sb.scheduler.last_epoch)
    assert.is_true(H.same_tensors(graft.load(a .. "/best.pth").model, graft.load(b .. "/best.pth").model))
    -- the same metrics file, row for row, and the same last word
    assert.are.equal(H.read(a .. "/metrics.csv"), H.read(b .. "/metrics.csv"))
    assert.are.equal(whole:match("test accuracy [%d.]+"), rest:match("test accuracy [%d.]+"))
  end)

  it("--resume without a saved state says so", function()
    local _, e, c = H.run("finetune", "--quick", "--ckpt", ckpt, "--out", H.tmpdir(), "--resume")
    assert.are.equal(1, c)
    assert.truthy(e:find("--resume: .*last.pth does not exist"), e)
  end)

  it("--schedule cosine: a linear warmup, then cosine annealing (SequentialLR)", function()
    local d = H.tmpdir()
    local _, e, c = H.run("finetune", "--quick", "--ckpt", ckpt, "--out", d, "--schedule", "cosine", "--warmup", "1")
    assert.are.equal(0, c, e)
    local lr = H.column(H.metrics(d .. "/metrics.csv"), "lr_head")
    -- LinearLR from 0.1 x 0.1 for 1 epoch, then CosineAnnealingLR(T_max = 2) from 0.1
    assert.near(0.01, lr[1], 1e-12)
    assert.near(0.1, lr[2], 1e-12)
    assert.near(0.05, lr[3], 1e-12)
  end)

  it("--scratch: the same network from random weights, nothing loaded or frozen", function()
    local d = H.tmpdir()
    local o, e, c = H.run("finetune", "--quick", "--scratch", "--out", d)
    assert.are.equal(0, c, e)
    assert.is_nil(o:find("load_pretrained", 1, true))
    assert.is_nil(o:find("unfrozen", 1, true))
    assert.truthy(o:find("from scratch", 1, true), o)
    local rows = H.metrics(d .. "/metrics.csv")
    assert.are.equal(rows[1].lr_head, rows[1].lr_backbone)
  end)

  it("refuses a checkpoint that loads nothing", function()
    local d = H.tmpdir()
    graft.save({ ["fc.weight"] = graft.zeros(2, 2) }, d .. "/other.pth")
    local _, e, c = H.run("finetune", "--quick", "--ckpt", d .. "/other.pth", "--out", d)
    assert.are.equal(1, c)
    assert.truthy(e:find("load_pretrained", 1, true), e)
  end)

  it("says how to make the checkpoint when there is none", function()
    local d = H.tmpdir()
    local _, e, c = H.run("finetune", "--quick", "--ckpt", d .. "/missing.pth", "--out", d)
    assert.are.equal(2, c)
    assert.truthy(e:find("finetune: no checkpoint at " .. d .. "/missing.pth: run `build/graft scripts/pretrain.lua` first",
      1, true), e)
  end)
end)
