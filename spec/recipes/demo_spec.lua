-- scripts/demo.lua --quick: pretrain then fine-tune then the baseline, ending with the
-- one line `fine-tuned accuracy: A (from scratch, same budget: B)`.
local H = require("spec.recipes.helper")

describe("scripts/demo.lua --quick", function()
  teardown(H.cleanup)

  it("runs the three steps and ends with the one line", function()
    assert(H.have_bin(), H.BIN .. " is missing: run `make build/graft` first")
    local out, err, code = H.run("demo", "--quick", "--out", H.tmpdir())
    assert.are.equal(0, code, err)
    for _, s in ipairs({ "== 1/3 pretraining", "== 2/3 fine-tuning", "== 3/3 the same network from scratch", "timings: " }) do
      assert.truthy(out:find(s, 1, true), s)
    end
    local a, b = out:match("\nfine%-tuned accuracy: ([%d.]+) %(from scratch, same budget: ([%d.]+)%)\n$")
    assert.is_not_nil(a, out:sub(-300))
    assert.is_true(tonumber(a) > 0.2 and tonumber(b) > 0.2)
  end)
end)
